//! Which devices are looking at a session right now (`client.visible`, docs/protocol.md §9.2.1):
//! a device (key fingerprint) with a connection that is attached to the session and
//! has reported itself visible is not pushed to.
//!
//! Owns: per connection, its key, its last reported visibility and the sessions it
//! is attached to — only for connections that reported visibility at least once
//! (bounded by `--max-connections`). Must not: decide anything else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
struct Conn {
    fingerprint: String,
    visible: bool,
    sessions: Vec<Arc<str>>,
}

/// Shared by the connections (writers) and the notifier (reader).
#[derive(Debug, Default)]
pub struct Visibility {
    conns: Mutex<HashMap<u64, Conn>>,
}

impl Visibility {
    /// A connection reported `client.visible`.
    pub fn report(
        &self,
        conn_id: u64,
        fingerprint: &str,
        visible: bool,
        sessions: impl IntoIterator<Item = Arc<str>>,
    ) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.insert(
                conn_id,
                Conn {
                    fingerprint: fingerprint.to_string(),
                    visible,
                    sessions: sessions.into_iter().collect(),
                },
            );
        }
    }

    /// The connection attached to or detached from a session (ignored for
    /// connections that never reported visibility: they count as not visible).
    pub fn sessions_changed(&self, conn_id: u64, sessions: impl IntoIterator<Item = Arc<str>>) {
        if let Ok(mut conns) = self.conns.lock()
            && let Some(c) = conns.get_mut(&conn_id)
        {
            c.sessions = sessions.into_iter().collect();
        }
    }

    /// The connection closed.
    pub fn gone(&self, conn_id: u64) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.remove(&conn_id);
        }
    }

    /// The keys with a visible connection attached to `session` (one pass, for
    /// checking many subscriptions at once).
    pub fn watchers(&self, session: &str) -> std::collections::HashSet<String> {
        self.conns
            .lock()
            .map(|conns| {
                conns
                    .values()
                    .filter(|c| c.visible && c.sessions.iter().any(|s| &**s == session))
                    .map(|c| c.fingerprint.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Visibility {
        fn watching(&self, fingerprint: &str, session: &str) -> bool {
            self.watchers(session).contains(fingerprint)
        }

        fn len(&self) -> usize {
            self.conns.lock().map(|c| c.len()).unwrap_or(0)
        }
    }

    #[test]
    fn only_a_visible_attached_connection_of_that_key_counts() {
        let v = Visibility::default();
        let default: Arc<str> = Arc::from("default");
        assert!(!v.watching("fp", "default"));
        v.report(1, "fp", true, []);
        assert!(!v.watching("fp", "default"), "not attached");
        v.sessions_changed(1, [default.clone()]);
        assert!(v.watching("fp", "default"));
        assert!(!v.watching("other", "default"));
        assert!(!v.watching("fp", "work"));
        v.report(1, "fp", false, [default.clone()]);
        assert!(!v.watching("fp", "default"), "hidden");
        v.report(2, "fp", true, [default.clone()]);
        assert!(v.watching("fp", "default"), "another connection of the key");
        assert_eq!(
            v.watchers("default").into_iter().collect::<Vec<_>>(),
            ["fp"]
        );
        assert!(v.watchers("work").is_empty());
        v.gone(2);
        assert!(!v.watching("fp", "default"));
        v.sessions_changed(3, [default]);
        assert_eq!(v.len(), 1, "connections that never reported are not kept");
    }
}
