//! Agent slots: at most `--max-agents` agent processes run at once, server-wide
//! (docs/protocol.md §4.11).
//!
//! Owns: who holds a slot, who waits for one (first come, first served) and
//! which holder is asked to sleep to free one (the longest-idle first). Must
//! not: stop agents itself — a holder is only *asked*, through its actor's
//! channel; the actor decides (it declines when it has become busy) and gives
//! the slot back by dropping its [`SlotPermit`] once its process is reaped.
//!
//! One small lock guards the table; nothing is awaited under it, and a permit
//! that could not be delivered is dropped only after the lock is released.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::mpsc;

/// A session's membership number in the slot table (never reused).
pub type MemberKey = u64;

/// What the slot table tells a session's actor.
#[derive(Debug)]
pub enum SlotMsg {
    /// The slot this session waited for: its agent may start.
    Granted(SlotPermit),
    /// Another session waits for a slot: sleep if still idle, else decline.
    Sleep,
}

/// The server-wide agent slots. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct AgentSlots {
    table: Mutex<SlotTable>,
    members: Mutex<BTreeMap<MemberKey, mpsc::UnboundedSender<SlotMsg>>>,
    next_key: std::sync::atomic::AtomicU64,
}

/// One session's handle on the slots; leaving the queue when dropped.
#[derive(Debug)]
pub struct SlotMember {
    slots: Arc<AgentSlots>,
    key: MemberKey,
}

/// A held slot: given back when dropped (after the agent process was reaped).
#[derive(Debug)]
pub struct SlotPermit {
    slots: Arc<AgentSlots>,
    key: MemberKey,
}

/// The answer to [`SlotMember::acquire`].
#[derive(Debug)]
pub enum Acquired {
    Now(SlotPermit),
    /// Queued: a [`SlotMsg::Granted`] comes over the member's channel.
    Waiting,
}

impl AgentSlots {
    /// Slots for at most `capacity` agents at once (at least 1).
    pub fn new(capacity: usize) -> Arc<AgentSlots> {
        Arc::new(AgentSlots {
            table: Mutex::new(SlotTable::new(capacity.max(1))),
            members: Mutex::new(BTreeMap::new()),
            next_key: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Register one session; its actor reads the returned channel.
    pub fn join(self: &Arc<Self>) -> (SlotMember, mpsc::UnboundedReceiver<SlotMsg>) {
        let key = self
            .next_key
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.members).insert(key, tx);
        (
            SlotMember {
                slots: self.clone(),
                key,
            },
            rx,
        )
    }

    /// How many slots are held (agents running or being restarted).
    pub fn held(&self) -> usize {
        lock(&self.table).holders.len()
    }

    fn send(&self, key: MemberKey, msg: SlotMsg) -> Result<(), SlotMsg> {
        match lock(&self.members).get(&key) {
            Some(tx) => tx.send(msg).map_err(|e| e.0),
            None => Err(msg),
        }
    }

    /// Ask the holders the table picked to sleep (a member that is gone gives
    /// its slot back through its permit's drop; nothing to do here).
    fn ask(&self, keys: Vec<MemberKey>) {
        for key in keys {
            let _ = self.send(key, SlotMsg::Sleep);
        }
    }

    fn release(self: &Arc<Self>, key: MemberKey) {
        let (granted, asks) = {
            let mut table = lock(&self.table);
            let granted = table.release(key);
            (granted, table.sleep_requests())
        };
        self.ask(asks);
        if let Some(next) = granted {
            let permit = SlotPermit {
                slots: self.clone(),
                key: next,
            };
            // An actor that is gone drops the message, and with it the permit:
            // its drop (outside the lock) hands the slot to the next waiter.
            drop(self.send(next, SlotMsg::Granted(permit)));
        }
    }
}

impl SlotMember {
    /// This member's key (for logs).
    pub fn key(&self) -> MemberKey {
        self.key
    }

    /// A slot now, or a place in the queue (and, if some holder is idle, the
    /// longest-idle one is asked to sleep).
    pub fn acquire(&self) -> Acquired {
        let (granted, asks) = {
            let mut table = lock(&self.slots.table);
            let granted = table.acquire(self.key);
            (granted, table.sleep_requests())
        };
        self.slots.ask(asks);
        if granted {
            Acquired::Now(SlotPermit {
                slots: self.slots.clone(),
                key: self.key,
            })
        } else {
            Acquired::Waiting
        }
    }

    /// Leave the queue (the session no longer needs to start an agent).
    pub fn cancel_wait(&self) {
        lock(&self.slots.table).leave_queue(self.key);
    }

    /// Report whether this member's agent is idle, and since when.
    pub fn set_idle(&self, since: Option<Instant>) {
        let asks = {
            let mut table = lock(&self.slots.table);
            table.set_idle(self.key, since);
            table.sleep_requests()
        };
        self.slots.ask(asks);
    }

    /// This member was asked to sleep but is busy again: ask the next candidate.
    pub fn decline(&self) {
        let asks = {
            let mut table = lock(&self.slots.table);
            table.decline(self.key);
            table.sleep_requests()
        };
        self.slots.ask(asks);
    }
}

impl Drop for SlotMember {
    fn drop(&mut self) {
        lock(&self.slots.table).leave_queue(self.key);
        lock(&self.slots.members).remove(&self.key);
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        self.slots.release(self.key);
    }
}

/// A poisoned lock only means a panic elsewhere; the table stays consistent
/// (every update is a few plain assignments), so go on with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One slot holder as the table sees it.
#[derive(Debug, Clone, Copy, Default)]
struct Holder {
    /// Since when its agent is idle (none: busy, starting or stopping).
    idle_since: Option<Instant>,
    /// Asked to sleep and not declined yet.
    asked: bool,
}

/// The pure bookkeeping: holders, the FIFO queue, and whom to ask to sleep.
#[derive(Debug)]
struct SlotTable {
    capacity: usize,
    holders: BTreeMap<MemberKey, Holder>,
    waiters: VecDeque<MemberKey>,
}

impl SlotTable {
    fn new(capacity: usize) -> Self {
        SlotTable {
            capacity,
            holders: BTreeMap::new(),
            waiters: VecDeque::new(),
        }
    }

    /// Take a slot if one is free and nobody waits ahead; else queue (once).
    fn acquire(&mut self, key: MemberKey) -> bool {
        if self.holders.contains_key(&key) {
            return true;
        }
        if self.holders.len() < self.capacity && self.waiters.is_empty() {
            self.holders.insert(key, Holder::default());
            return true;
        }
        if !self.waiters.contains(&key) {
            self.waiters.push_back(key);
        }
        false
    }

    /// `key` gives its slot back; the first waiter (if any) gets it.
    fn release(&mut self, key: MemberKey) -> Option<MemberKey> {
        self.holders.remove(&key)?;
        if self.holders.len() >= self.capacity {
            return None;
        }
        let next = self.waiters.pop_front()?;
        self.holders.insert(next, Holder::default());
        Some(next)
    }

    fn leave_queue(&mut self, key: MemberKey) {
        self.waiters.retain(|k| *k != key);
    }

    fn set_idle(&mut self, key: MemberKey, since: Option<Instant>) {
        if let Some(h) = self.holders.get_mut(&key) {
            h.idle_since = since;
        }
    }

    fn decline(&mut self, key: MemberKey) {
        if let Some(h) = self.holders.get_mut(&key) {
            h.asked = false;
            // It declined because it is busy; it reports idle again when it is.
            h.idle_since = None;
        }
    }

    /// Holders to ask to sleep now: one per waiter not yet covered by an
    /// earlier request, longest idle first; each is marked as asked.
    fn sleep_requests(&mut self) -> Vec<MemberKey> {
        let asked = self.holders.values().filter(|h| h.asked).count();
        let needed = self.waiters.len().saturating_sub(asked);
        if needed == 0 {
            return Vec::new();
        }
        let mut idle: Vec<(Instant, MemberKey)> = self
            .holders
            .iter()
            .filter(|(_, h)| !h.asked)
            .filter_map(|(k, h)| h.idle_since.map(|t| (t, *k)))
            .collect();
        idle.sort();
        let picked: Vec<MemberKey> = idle.into_iter().take(needed).map(|(_, k)| k).collect();
        for key in &picked {
            if let Some(h) = self.holders.get_mut(key) {
                h.asked = true;
            }
        }
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn longest_idle_is_asked_first_and_waiters_are_served_in_order() {
        let mut t = SlotTable::new(3);
        assert!(t.acquire(1) && t.acquire(2) && t.acquire(3));
        let t0 = Instant::now();
        t.set_idle(1, Some(t0 + Duration::from_secs(5)));
        t.set_idle(2, Some(t0));
        // Nobody waits: nobody is asked.
        assert!(t.sleep_requests().is_empty());
        assert!(!t.acquire(4));
        assert!(!t.acquire(5));
        assert!(!t.acquire(4), "queued once");
        // Two waiters, two idle holders: the longest idle (2) first, then 1.
        assert_eq!(t.sleep_requests(), vec![2, 1]);
        assert!(t.sleep_requests().is_empty(), "each asked once");
        // 1 became busy and declined; 3 is the only other candidate but not idle.
        t.decline(1);
        assert!(t.sleep_requests().is_empty());
        t.set_idle(3, Some(t0 + Duration::from_secs(9)));
        assert_eq!(t.sleep_requests(), vec![3]);
        // Slots go to the waiters first come, first served.
        assert_eq!(t.release(2), Some(4));
        assert_eq!(t.release(3), Some(5));
        assert_eq!(t.release(1), None);
        assert_eq!(t.holders.len(), 2);
        // A free slot with nobody waiting is taken at once.
        assert!(t.acquire(6));
        assert!(!t.acquire(7));
        t.leave_queue(7);
        assert_eq!(t.release(6), None);
    }

    #[test]
    fn a_newcomer_does_not_overtake_the_queue() {
        let mut t = SlotTable::new(1);
        assert!(t.acquire(1));
        assert!(!t.acquire(2));
        // 1 gives its slot back: 2 gets it, and 3 (arriving later) waits.
        assert_eq!(t.release(1), Some(2));
        assert!(!t.acquire(3));
        // Releasing a slot one does not hold changes nothing.
        assert_eq!(t.release(9), None);
        assert_eq!(t.release(2), Some(3));
    }

    #[tokio::test]
    async fn permits_are_handed_over_through_the_channel() {
        let slots = AgentSlots::new(1);
        let (a, mut a_rx) = slots.join();
        let (b, mut b_rx) = slots.join();
        let Acquired::Now(permit) = a.acquire() else {
            panic!("a free slot")
        };
        a.set_idle(Some(Instant::now()));
        assert!(matches!(b.acquire(), Acquired::Waiting));
        assert!(matches!(a_rx.try_recv(), Ok(SlotMsg::Sleep)));
        drop(permit);
        let Ok(SlotMsg::Granted(permit_b)) = b_rx.try_recv() else {
            panic!("b is granted the slot")
        };
        assert_eq!(slots.held(), 1);
        // A waiter whose actor is gone: the slot goes back (and on).
        let (c, c_rx) = slots.join();
        assert!(matches!(c.acquire(), Acquired::Waiting));
        drop(c_rx);
        drop(permit_b);
        assert_eq!(slots.held(), 0);
        drop(c);
    }
}
