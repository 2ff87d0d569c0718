//! Who is attached to the session, as `ccrelay attach` knows it from the
//! server's `attached` list and `presence` frames (docs/protocol.md §7.1).
//!
//! Owns: the set of client ids present, the count, and whether the set is known
//! in full. Presence frames carry deltas (`joined`, then `left`), the full list
//! only while few are attached, and only `count` while many are: the view applies
//! each as it comes and says when it no longer knows everyone. Must not: print —
//! it returns what changed; the renderer words it.

use ccrelay_protocol::{ClientEntry, PresenceFrame};

/// What one frame changed, by client id (in the order the frame listed them).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Change {
    pub joined: Vec<String>,
    pub left: Vec<String>,
    /// The new count, when it changed and the set is not known in full.
    pub count: Option<usize>,
}

/// The client's view of who is attached.
#[derive(Debug, Clone)]
pub struct PresenceView {
    present: Vec<String>,
    count: usize,
    complete: bool,
}

impl Default for PresenceView {
    /// Nobody, known in full (until an `attached` list says otherwise).
    fn default() -> Self {
        PresenceView {
            present: Vec::new(),
            count: 0,
            complete: true,
        }
    }
}

fn ids(list: &[ClientEntry]) -> Vec<String> {
    list.iter().map(|c| c.client_id.clone()).collect()
}

impl PresenceView {
    /// A new connection: nobody known yet.
    pub fn reset(&mut self) {
        *self = PresenceView::default();
    }

    /// Client ids present, as far as known.
    #[cfg(test)]
    pub fn present(&self) -> &[String] {
        &self.present
    }

    pub fn contains(&self, id: &str) -> bool {
        self.present.iter().any(|p| p == id)
    }

    /// How many are attached (from the server's count).
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether `present` is everyone (false while many are attached).
    #[cfg(test)]
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// Replace the set with a full list (`attached.clients`, `presence.clients`).
    /// `total` is `clients_total` when the list may be cut short.
    pub fn replace(&mut self, clients: &[ClientEntry], total: Option<usize>) -> Change {
        let now = ids(clients);
        let change = Change {
            joined: now
                .iter()
                .filter(|id| !self.contains(id))
                .cloned()
                .collect(),
            left: self
                .present
                .iter()
                .filter(|id| !now.contains(id))
                .cloned()
                .collect(),
            count: None,
        };
        self.count = total.unwrap_or(now.len()).max(now.len());
        self.complete = self.count == now.len();
        self.present = now;
        change
    }

    /// Apply one `presence` frame.
    pub fn apply(&mut self, frame: &PresenceFrame) -> Change {
        if let Some(list) = &frame.clients {
            // The full list is the truth; report it as the difference to what we had.
            return self.replace(list, Some(frame.count));
        }
        let has_deltas = frame.joined.is_some() || frame.left.is_some();
        let mut change = Change::default();
        // `left` applies after `joined`.
        for id in ids(frame.joined.as_deref().unwrap_or_default()) {
            if !self.contains(&id) {
                self.present.push(id.clone());
                change.joined.push(id);
            }
        }
        for id in frame.left.iter().flatten().cloned() {
            if let Some(i) = self.present.iter().position(|p| *p == id) {
                self.present.remove(i);
                change.left.push(id);
            }
        }
        let old = self.count;
        self.count = frame.count;
        if !has_deltas || self.count != self.present.len() {
            // Only a count (many attached), or deltas on top of a set we never
            // knew in full: names are no longer everyone.
            self.complete = false;
        }
        if !self.complete && self.count != old {
            change.count = Some(self.count);
        }
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccrelay_protocol::Role;
    use serde_json::{Value, json};

    fn c(id: &str) -> ClientEntry {
        ClientEntry {
            client_id: id.into(),
            fingerprint: "SHA256:x".into(),
            comment: String::new(),
            device: None,
            role: Role::Owner,
        }
    }

    /// A presence frame as the client reads it.
    fn pf(mut frame: Value) -> PresenceFrame {
        frame["session"] = json!("default");
        serde_json::from_value(frame).unwrap()
    }

    #[test]
    fn full_lists_and_deltas_keep_the_same_set() {
        let mut v = PresenceView::default();
        v.replace(&[c("a"), c("me")], Some(2));
        assert!(v.complete());
        // Own frame after attach, with the full list.
        let ch = v.apply(&pf(json!({"type":"presence","joined":[c("me")],"left":[],"count":2,"clients":[c("a"),c("me")]})));
        assert_eq!(ch, Change::default());
        // A combined delta: b and d joined, a left (no full list: more than 32).
        let ch = v.apply(&pf(
            json!({"type":"presence","joined":[c("b"),c("d")],"left":["a"],"count":3}),
        ));
        assert_eq!(ch.joined, vec!["b", "d"]);
        assert_eq!(ch.left, vec!["a"]);
        assert_eq!(v.present(), ["me", "b", "d"]);
        assert!(v.complete());
        // Joined and left in one frame: left applies after joined.
        let ch = v.apply(&pf(
            json!({"type":"presence","joined":[c("x")],"left":["x","b"],"count":2}),
        ));
        assert_eq!(ch.joined, vec!["x"]);
        assert_eq!(ch.left, vec!["x", "b"]);
        assert_eq!(v.present(), ["me", "d"]);
        // A repeated join (a newcomer's own join shown again) changes nothing.
        let ch = v.apply(&pf(
            json!({"type":"presence","joined":[c("me")],"left":[],"count":2}),
        ));
        assert_eq!(ch, Change::default());
    }

    #[test]
    fn count_only_frames_make_the_view_incomplete_until_a_full_list() {
        let mut v = PresenceView::default();
        let first: Vec<ClientEntry> = (0..100).map(|i| c(&format!("c{i}"))).collect();
        v.replace(&first, Some(300));
        assert!(!v.complete());
        assert_eq!(v.count(), 300);
        let ch = v.apply(&pf(json!({"type":"presence","count":301})));
        assert_eq!(ch.count, Some(301));
        assert!(!v.complete());
        let ch = v.apply(&pf(json!({"type":"presence","count":301})));
        assert_eq!(ch, Change::default());
        // Down to few again: the full list makes it complete.
        v.apply(&pf(
            json!({"type":"presence","joined":[],"left":[],"count":2,"clients":[c("c0"),c("me")]}),
        ));
        assert!(v.complete());
        assert_eq!(v.present(), ["c0", "me"]);
    }
}
