//! Presence frames (docs/protocol.md §7.1): who is attached to a session, sent as deltas
//! so that one attach or leave costs every client a bounded number of bytes,
//! whatever the number of attached clients.
//!
//! Owns: the pending changes since the last presence frame, when the next frame is
//! due (changes within [`COMBINE`] are combined; above [`DELTA_MAX`] attached only
//! `count`, at most once per [`COUNT_ONLY_INTERVAL`]), and the frames' JSON. Must
//! not: hold the clients themselves or push to outboxes — the session actor does,
//! telling this module what changed and sending what it builds.
//!
//! Correctness of combining: a client's view before a combined frame is either the
//! set at the last frame (clients attached before it) or the set at its own attach
//! (a newcomer, from its `attached` list and own presence frame). For every
//! client that changed within the window the module remembers whether it was
//! present in *every* such view and in *any* of them; the frame then lists in
//! `joined` who is present now but missing from some view, and in `left` who is
//! gone now but was in some view. Applied in that order (`left` after `joined`)
//! every view ends at the current set. A client that joined and left within the
//! window appears in neither list, unless a newcomer's view included it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use ccrelay_protocol::ClientEntry;

/// The full `clients` list is sent only while at most this many are attached.
pub const FULL_LIST_MAX: usize = 32;
/// Above this many attached, presence carries only `count`.
pub const DELTA_MAX: usize = 256;
/// Changes within this long may be combined into one frame.
pub const COMBINE: Duration = Duration::from_millis(250);
/// Count-only frames (above [`DELTA_MAX`]) at most this often.
pub const COUNT_ONLY_INTERVAL: Duration = Duration::from_secs(1);
/// The `attached` reply lists at most this many clients (then `clients_total`).
pub const ATTACHED_LIST_MAX: usize = 100;

/// The wire shape of a presence frame.
#[derive(Debug, Serialize)]
struct PresenceFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    session: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    joined: Option<Vec<&'a ClientEntry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    left: Option<Vec<&'a str>>,
    count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    clients: Option<Vec<&'a ClientEntry>>,
}

/// Build one presence frame. `clients` is the full current list, used only while
/// `count` ≤ [`FULL_LIST_MAX`]; above [`DELTA_MAX`] only `count` is written.
pub fn frame<'a>(
    session: &str,
    joined: impl IntoIterator<Item = &'a ClientEntry>,
    left: impl IntoIterator<Item = &'a str>,
    count: usize,
    clients: impl IntoIterator<Item = &'a ClientEntry>,
) -> String {
    let deltas = count <= DELTA_MAX;
    let frame = PresenceFrame {
        kind: "presence",
        session,
        joined: deltas.then(|| joined.into_iter().collect()),
        left: deltas.then(|| left.into_iter().collect()),
        count,
        clients: (count <= FULL_LIST_MAX).then(|| clients.into_iter().collect()),
    };
    serde_json::to_string(&frame).unwrap_or_else(|_| {
        format!(r#"{{"type":"presence","session":{session:?},"count":{count}}}"#)
    })
}

/// What the module remembers about one client that changed since the last frame.
#[derive(Debug)]
struct Track {
    entry: ClientEntry,
    /// Attached now.
    present: bool,
    /// Present in every view a recipient may hold.
    in_every_view: bool,
    /// Present in at least one such view.
    in_some_view: bool,
}

/// A presence frame ready to send to every attached client.
#[derive(Debug, PartialEq, Eq)]
pub struct Combined {
    pub joined: Vec<ClientEntry>,
    pub left: Vec<String>,
    /// Connections that attached after every change in it (their `attached` list
    /// and own frame already said it all): they are not sent this frame.
    pub up_to_date: HashSet<u64>,
}

/// Pending presence changes of one session and when they are due.
#[derive(Debug, Default)]
pub struct Presence {
    tracks: HashMap<String, Track>,
    /// Order in which clients first changed (frames list them in this order).
    order: Vec<String>,
    /// Count in the last frame sent to everyone.
    last_count: Option<usize>,
    last_sent: Option<Instant>,
    due: Option<Instant>,
    /// Changes recorded so far (a counter).
    changes: u64,
    /// Connections that took a view in this window, with `changes` at that moment.
    views: HashMap<u64, u64>,
}

impl Presence {
    /// A client attached (not a re-attach on the same connection). `count` is the
    /// number attached afterwards.
    pub fn joined(&mut self, entry: &ClientEntry, count: usize, now: Instant) {
        self.change(entry, true, count);
        self.schedule(count, now);
    }

    /// A client detached or went away.
    pub fn left(&mut self, entry: &ClientEntry, count: usize, now: Instant) {
        self.change(entry, false, count);
        self.schedule(count, now);
    }

    /// Connection `conn_id` now holds a view of the current set (its `attached`
    /// list): every tracked client's current presence is part of some view.
    pub fn snapshot_taken(&mut self, conn_id: u64) {
        self.views.insert(conn_id, self.changes);
        for t in self.tracks.values_mut() {
            t.in_every_view &= t.present;
            t.in_some_view |= t.present;
        }
    }

    fn change(&mut self, entry: &ClientEntry, present: bool, count: usize) {
        self.changes += 1;
        if count > DELTA_MAX {
            // Only `count` goes out above the threshold: nothing to remember.
            self.tracks.clear();
            self.order.clear();
            return;
        }
        match self.tracks.get_mut(&entry.client_id) {
            Some(t) => t.present = present,
            None => {
                // Before its first change in this window it was the opposite in every view.
                let before = !present;
                self.order.push(entry.client_id.clone());
                self.tracks.insert(
                    entry.client_id.clone(),
                    Track {
                        entry: entry.clone(),
                        present,
                        in_every_view: before,
                        in_some_view: before,
                    },
                );
            }
        }
    }

    fn schedule(&mut self, count: usize, now: Instant) {
        if self.due.is_some() {
            return;
        }
        let gap = if count > DELTA_MAX {
            COUNT_ONLY_INTERVAL
        } else {
            COMBINE
        };
        // The first change after a quiet spell goes out at once; later ones wait
        // until the gap since the last frame has passed, and are combined.
        self.due = Some(match self.last_sent {
            Some(last) if last + gap > now => last + gap,
            _ => now,
        });
    }

    /// When the next frame is due, if any change is pending.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The frame to send now, if one is due: `Some` when it carries news (a
    /// changed list or count). The pending changes are cleared either way.
    pub fn take_due(&mut self, count: usize, now: Instant) -> Option<Combined> {
        match self.due {
            Some(due) if due <= now => {}
            _ => return None,
        }
        self.due = None;
        let changes = self.changes;
        let mut combined = Combined {
            joined: Vec::new(),
            left: Vec::new(),
            up_to_date: self
                .views
                .drain()
                .filter(|(_, at)| *at == changes)
                .map(|(conn, _)| conn)
                .collect(),
        };
        for id in self.order.drain(..) {
            let Some(t) = self.tracks.remove(&id) else {
                continue;
            };
            if t.present && !t.in_every_view {
                combined.joined.push(t.entry);
            } else if !t.present && t.in_some_view {
                combined.left.push(t.entry.client_id);
            }
        }
        self.tracks.clear();
        let news = !combined.joined.is_empty()
            || !combined.left.is_empty()
            || self.last_count != Some(count);
        if !news {
            return None;
        }
        self.last_count = Some(count);
        self.last_sent = Some(now);
        Some(combined)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccrelay_protocol::Role;

    fn entry(id: &str) -> ClientEntry {
        ClientEntry {
            client_id: id.into(),
            fingerprint: "SHA256:x".into(),
            comment: "c".into(),
            device: None,
            role: Role::Owner,
        }
    }

    /// Apply a combined frame to a view, as a client does.
    fn apply(view: &mut Vec<String>, c: &Combined) {
        for j in &c.joined {
            if !view.contains(&j.client_id) {
                view.push(j.client_id.clone());
            }
        }
        view.retain(|id| !c.left.contains(id));
    }

    #[test]
    fn first_change_is_immediate_then_changes_combine() {
        let mut p = Presence::default();
        let t0 = Instant::now();
        p.joined(&entry("a"), 1, t0);
        assert_eq!(p.due(), Some(t0));
        let c = p.take_due(1, t0).expect("first frame at once");
        assert_eq!(c.joined, vec![entry("a")]);
        p.joined(&entry("b"), 2, t0 + Duration::from_millis(10));
        p.joined(&entry("c"), 3, t0 + Duration::from_millis(20));
        assert_eq!(p.due(), Some(t0 + COMBINE));
        assert!(p.take_due(3, t0 + Duration::from_millis(100)).is_none());
        let c = p.take_due(3, t0 + COMBINE).expect("combined frame");
        assert_eq!(c.joined, vec![entry("b"), entry("c")]);
        assert!(c.left.is_empty());
        assert_eq!(p.due(), None);
    }

    #[test]
    fn a_newcomer_is_not_sent_what_its_attach_already_said() {
        let mut p = Presence::default();
        let t0 = Instant::now();
        p.joined(&entry("a"), 1, t0);
        p.snapshot_taken(1);
        let c = p.take_due(1, t0).unwrap();
        assert!(c.up_to_date.contains(&1));
        p.joined(&entry("b"), 2, t0);
        p.snapshot_taken(2);
        p.joined(&entry("c"), 3, t0);
        p.snapshot_taken(3);
        let c = p.take_due(3, t0 + COMBINE).unwrap();
        // b must hear of c; c knows everything.
        assert_eq!(c.up_to_date, HashSet::from([3]));
    }

    #[test]
    fn joined_and_left_within_a_window_appear_in_neither() {
        let mut p = Presence::default();
        let t0 = Instant::now();
        p.joined(&entry("a"), 1, t0);
        p.take_due(1, t0);
        p.joined(&entry("x"), 2, t0 + Duration::from_millis(1));
        p.left(&entry("x"), 1, t0 + Duration::from_millis(2));
        // Nothing changed for anyone: no frame at all.
        assert!(p.take_due(1, t0 + COMBINE).is_none());
    }

    #[test]
    fn a_newcomer_that_saw_a_short_visitor_is_told_it_left() {
        let mut p = Presence::default();
        let t0 = Instant::now();
        p.joined(&entry("a"), 1, t0);
        p.take_due(1, t0);
        p.joined(&entry("x"), 2, t0);
        p.joined(&entry("n"), 3, t0);
        p.snapshot_taken(3); // n's attached list: a, x, n
        p.left(&entry("x"), 2, t0);
        let c = p.take_due(2, t0 + COMBINE).expect("frame");
        let mut old = vec!["a".to_string()];
        let mut newcomer = vec!["a".to_string(), "x".to_string(), "n".to_string()];
        apply(&mut old, &c);
        apply(&mut newcomer, &c);
        assert_eq!(old, vec!["a", "n"]);
        assert_eq!(newcomer, vec!["a", "n"]);
        assert_eq!(c.left, vec!["x".to_string()]);
    }

    #[test]
    fn leave_then_rejoin_is_right_for_every_view() {
        let mut p = Presence::default();
        let t0 = Instant::now();
        p.joined(&entry("a"), 1, t0);
        p.joined(&entry("x"), 2, t0);
        p.take_due(2, t0);
        p.left(&entry("x"), 1, t0);
        p.joined(&entry("n"), 2, t0);
        p.snapshot_taken(3); // n saw a, n
        p.joined(&entry("x"), 3, t0);
        let c = p.take_due(3, t0 + COMBINE).expect("frame");
        let mut old = vec!["a".to_string(), "x".to_string()];
        let mut newcomer = vec!["a".to_string(), "n".to_string()];
        apply(&mut old, &c);
        apply(&mut newcomer, &c);
        old.sort();
        newcomer.sort();
        assert_eq!(old, vec!["a", "n", "x"]);
        assert_eq!(newcomer, vec!["a", "n", "x"]);
    }

    #[test]
    fn frame_shape_follows_the_thresholds() {
        let a = entry("a");
        let small: serde_json::Value =
            serde_json::from_str(&frame("default", [&a], [], 1, [&a])).unwrap();
        assert_eq!(small["count"], 1);
        assert_eq!(small["joined"][0]["client_id"], "a");
        assert_eq!(small["left"], serde_json::json!([]));
        assert_eq!(small["clients"][0]["client_id"], "a");
        let mid: serde_json::Value =
            serde_json::from_str(&frame("default", [&a], ["b"], 33, [&a])).unwrap();
        assert!(mid.get("clients").is_none());
        assert_eq!(mid["left"][0], "b");
        let big: serde_json::Value =
            serde_json::from_str(&frame("default", [&a], ["b"], 257, [&a])).unwrap();
        assert_eq!(
            big,
            serde_json::json!({"type": "presence", "session": "default", "count": 257})
        );
    }

    #[test]
    fn above_the_threshold_only_count_at_most_once_a_second() {
        let mut p = Presence::default();
        let t0 = Instant::now();
        p.joined(&entry("a"), 300, t0);
        assert!(p.take_due(300, t0).is_some());
        p.joined(&entry("b"), 301, t0 + Duration::from_millis(5));
        assert_eq!(p.due(), Some(t0 + COUNT_ONLY_INTERVAL));
        let c = p.take_due(301, t0 + COUNT_ONLY_INTERVAL).unwrap();
        assert!(c.joined.is_empty() && c.left.is_empty());
        // Back and forth to the same count: nothing to say.
        p.joined(&entry("c"), 302, t0 + Duration::from_secs(3));
        p.left(&entry("c"), 301, t0 + Duration::from_secs(3));
        assert!(p.take_due(301, t0 + Duration::from_secs(3)).is_none());
    }

    #[test]
    fn a_storm_of_attaches_ends_with_everyone_told_the_final_count() {
        let mut p = Presence::default();
        let t0 = Instant::now();
        // conn id -> last count it was told
        let mut told: Vec<usize> = Vec::new();
        let mut t = t0;
        for i in 0..500usize {
            let e = ClientEntry {
                client_id: format!("c{i}"),
                fingerprint: "f".into(),
                comment: String::new(),
                device: None,
                role: Role::Viewer,
            };
            p.joined(&e, i + 1, t);
            p.snapshot_taken(i as u64);
            told.push(i + 1);
            if let Some(c) = p.take_due(i + 1, t) {
                for (conn, last) in told.iter_mut().enumerate() {
                    if !c.up_to_date.contains(&(conn as u64)) {
                        *last = i + 1;
                    }
                }
            }
            t += Duration::from_millis(7);
        }
        let due = p.due().expect("a final frame is due");
        let c = p.take_due(500, due).expect("final frame");
        for (conn, last) in told.iter_mut().enumerate() {
            if !c.up_to_date.contains(&(conn as u64)) {
                *last = 500;
            }
        }
        assert!(
            told.iter().all(|l| *l == 500),
            "{:?}",
            told.iter().filter(|l| **l != 500).count()
        );
    }
}
