//! The `clients` list of `attached` replies (docs/protocol.md §4.2: the oldest attached
//! clients, at most [`ATTACHED_LIST_MAX`] with the newcomer last), kept
//! serialized between attaches.
//!
//! Why: in a connect storm every attach lists the same 99 oldest clients again;
//! building and serializing those entries per attach was 13 % of the server's CPU
//! (perf, fanout bench at N = 10,000), all of it on the session actor.
//!
//! Owns: the serialized entries of the oldest attached clients and when they are
//! stale. Must not: decide who is attached (the actor owns the clients and tells
//! this module of every change).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::ClientHandle;
use super::presence::ATTACHED_LIST_MAX;
use ccrelay_protocol::ClientList;

/// How many of the oldest clients an `attached` reply lists before the newcomer.
const OLDEST: usize = ATTACHED_LIST_MAX - 1;

/// Serialized entries of the [`OLDEST`] oldest attached clients (all of them
/// when fewer are attached), by connection id.
#[derive(Debug, Default)]
pub struct ListedClients {
    oldest: Option<Vec<(u64, Arc<RawValue>)>>,
}

impl ListedClients {
    /// `conn_id` was attached or left: forget the entries if it is (or would be)
    /// among them. Connection ids grow, so once [`OLDEST`] clients are attached a
    /// newcomer is not, and the entries stay valid through a connect storm.
    pub fn changed(&mut self, conn_id: u64) {
        if let Some(oldest) = &self.oldest {
            let full = oldest.len() >= OLDEST;
            if !full || oldest.last().is_some_and(|(last, _)| conn_id <= *last) {
                self.oldest = None;
            }
        }
    }

    /// The list for `newcomer`'s `attached` reply; `attached` includes it.
    pub fn for_newcomer(
        &mut self,
        attached: &BTreeMap<u64, ClientHandle>,
        newcomer: &ClientHandle,
    ) -> ClientList {
        let oldest = self.oldest.get_or_insert_with(|| {
            attached
                .iter()
                .take(OLDEST)
                .map(|(id, c)| (*id, ClientList::entry_json(&c.info.entry())))
                .collect()
        });
        let me = newcomer.info.conn_id;
        let mut list: Vec<Arc<RawValue>> = oldest
            .iter()
            .filter(|(id, _)| *id != me)
            .map(|(_, e)| e.clone())
            .collect();
        if list.len() < oldest.len()
            && let Some(&(last, _)) = oldest.last()
        {
            // The newcomer was among the oldest (a re-attach): the next one takes its place.
            list.extend(
                attached
                    .range(last + 1..)
                    .filter(|(id, _)| **id != me)
                    .take(OLDEST - list.len())
                    .map(|(_, c)| ClientList::entry_json(&c.info.entry())),
            );
        }
        list.push(ClientList::entry_json(&newcomer.info.entry()));
        ClientList(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::ClientInfo;
    use crate::session::outbox::Outbox;
    use ccrelay_protocol::{ClientEntry, Role};

    fn handle(conn_id: u64) -> ClientHandle {
        ClientHandle {
            info: Arc::new(ClientInfo {
                conn_id,
                client_id: format!("c{conn_id}"),
                fingerprint: format!("SHA256:{conn_id}"),
                comment: "a \"quoted\" comment".into(),
                device: (conn_id % 2 == 0).then(|| format!("phone {conn_id}")),
                role: Role::Owner,
                address: None,
            }),
            outbox: Outbox::new(4).0,
        }
    }

    /// What the reply listed before the cache: the oldest others, then the newcomer.
    fn expected(attached: &BTreeMap<u64, ClientHandle>, newcomer: &ClientHandle) -> String {
        let mut list: Vec<ClientEntry> = attached
            .values()
            .filter(|c| c.info.conn_id != newcomer.info.conn_id)
            .take(OLDEST)
            .map(|c| c.info.entry())
            .collect();
        list.push(newcomer.info.entry());
        serde_json::to_string(&list).unwrap()
    }

    #[test]
    fn lists_what_a_fresh_serialization_lists_through_joins_leaves_and_reattaches() {
        let mut listed = ListedClients::default();
        let mut attached = BTreeMap::new();
        let check =
            |attached: &BTreeMap<u64, ClientHandle>, listed: &mut ListedClients, who: u64| {
                let newcomer = attached[&who].clone();
                let got = serde_json::to_string(&listed.for_newcomer(attached, &newcomer)).unwrap();
                assert_eq!(got, expected(attached, &newcomer), "newcomer {who}");
            };
        // Connect ids arrive out of order (a client may attach long after it connected).
        let order: Vec<u64> = (1..=150).map(|i| (i * 37) % 151).collect();
        for &id in &order {
            attached.insert(id, handle(id));
            listed.changed(id);
            check(&attached, &mut listed, id);
        }
        // Re-attaches of old and new clients, which change nothing.
        for id in [order[0], 1, 5, 99, 100, 150] {
            check(&attached, &mut listed, id);
        }
        // Leaves, among the oldest and after them, then more joins.
        for id in [1u64, 2, 120, 140, 3] {
            attached.remove(&id);
            listed.changed(id);
            check(&attached, &mut listed, 150);
        }
        for id in [151u64, 2, 152] {
            attached.insert(id, handle(id));
            listed.changed(id);
            check(&attached, &mut listed, id);
        }
        // Down to a handful.
        let ids: Vec<u64> = attached.keys().copied().collect();
        for id in &ids[..ids.len() - 3] {
            attached.remove(id);
            listed.changed(*id);
        }
        let last = *attached.keys().next_back().unwrap();
        check(&attached, &mut listed, last);
    }

    #[test]
    fn a_storm_of_newcomers_reuses_the_oldest_entries() {
        let mut listed = ListedClients::default();
        let mut attached = BTreeMap::new();
        for id in 1..=OLDEST as u64 {
            attached.insert(id, handle(id));
            listed.changed(id);
        }
        attached.insert(100, handle(100));
        listed.changed(100);
        let first = listed.for_newcomer(&attached, &attached[&100].clone());
        for id in 101..200u64 {
            attached.insert(id, handle(id));
            listed.changed(id);
            let list = listed.for_newcomer(&attached, &attached[&id].clone());
            assert_eq!(list.0.len(), ATTACHED_LIST_MAX);
            // The oldest entries are the ones serialized for the first reply.
            for i in 0..OLDEST {
                assert!(Arc::ptr_eq(&list.0[i], &first.0[i]), "entry {i} for {id}");
            }
        }
    }
}
