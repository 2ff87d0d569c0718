//! The bounded outbound queue of one connection: sessions and the connection's
//! own request handling push into it, the connection's writer drains it.
//!
//! Pushing never waits: a full queue marks the client as lagging (it is then
//! closed with 4008 and must reconnect and resume), so a slow client can never
//! slow a session or the other clients.
//!
//! The queue is a `VecDeque` behind a mutex, not a channel with preallocated
//! slots: an idle connection's queue holds no allocation at all, it grows with
//! what is queued and gives its memory back once drained (a connection costs
//! what is in flight for it, not its capacity).
//!
//! Every queued item carries a [`Charge`] on the connection's
//! [`QueueAccount`](crate::guard::QueueAccount): its bytes count toward
//! `--memory-limit` until the writer takes it (or the queue is dropped).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::guard::{Charge, MemoryGuard, QueueAccount};
use crate::journal::JournalReader;
use crate::ws::FrameText;
use ccrelay_protocol::FrameType;

/// Something to write to the client, in queue order.
#[derive(Debug)]
pub enum Outbound {
    /// A reply, presence or error frame. `kind` is its `type` (for metrics).
    Frame { kind: FrameType, text: FrameText },
    /// One event of a session.
    Event {
        session: Arc<str>,
        seq: u64,
        text: FrameText,
        /// When the agent line behind it was read (for the fan-out latency metric).
        read_at: Option<Instant>,
    },
    /// An `attached` reply followed by its replay: first from the journal, then
    /// from the in-memory tail. Live events queued behind it continue the seqs.
    Attach {
        session: Arc<str>,
        reply: FrameText,
        journal: Option<JournalReplay>,
        tail: Vec<(u64, FrameText)>,
    },
    /// Close the connection after everything queued before this.
    Close { code: u16, reason: String },
}

impl Outbound {
    /// Bytes this item is charged while queued. A journal replay is read lazily
    /// (not counted); an attach's tail replay shares its frames with the session's
    /// tail, which is already counted, so only its entries are (a reconnect storm
    /// must not look like N copies of the tail). Event frames are counted in full:
    /// a slow client keeps them alive after the tail moved on.
    pub fn held_bytes(&self) -> u64 {
        let bytes = match self {
            Outbound::Frame { text, .. } | Outbound::Event { text, .. } => text.len(),
            Outbound::Attach { reply, tail, .. } => {
                reply.len() + tail.len() * std::mem::size_of::<(u64, FrameText)>()
            }
            Outbound::Close { reason, .. } => reason.len(),
        };
        bytes as u64
    }
}

/// An item in a connection's queue with its memory charge.
#[derive(Debug)]
pub struct Queued {
    item: Outbound,
    _charge: Charge,
}

impl Queued {
    /// The item; its bytes stop counting as queued.
    pub fn take(self) -> Outbound {
        self.item
    }
}

/// Events `from..=to` to be read back from a session journal.
#[derive(Debug)]
pub struct JournalReplay {
    pub reader: JournalReader,
    pub from: u64,
    pub to: u64,
}

/// Why a push did not enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue was full: the client is now marked lagging (or it was shed).
    Lagging,
    /// The connection is gone.
    Closed,
}

/// Slots a drained queue keeps while the connection is active (512 bytes):
/// freeing them after every batch made each delivery pay an allocation (~10 %
/// fewer deliveries/s at window 64, fanout bench). An idle connection gives them
/// back at its next ping ([`OutboxReceiver::release_idle_slots`]).
const KEEP_SLOTS: usize = 4;

/// The queue shared by a connection's outboxes and its writer.
#[derive(Debug)]
struct Chan {
    queue: Mutex<VecDeque<Queued>>,
    capacity: usize,
    /// Wakes the writer (a stored permit covers a push made before it waits).
    ready: Notify,
    /// The writer closed the queue or is gone.
    rx_closed: AtomicBool,
    /// Every outbox is gone.
    tx_closed: AtomicBool,
}

impl Chan {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Queued>> {
        // A panic while holding this lock cannot leave the deque inconsistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Marks the queue closed for the writer once the last outbox is dropped.
#[derive(Debug)]
struct SenderAlive(Arc<Chan>);

impl Drop for SenderAlive {
    fn drop(&mut self) {
        self.0.tx_closed.store(true, Ordering::Release);
        self.0.ready.notify_one();
    }
}

/// The sending side of a connection's queue.
#[derive(Debug, Clone)]
pub struct Outbox {
    chan: Arc<Chan>,
    _alive: Arc<SenderAlive>,
    lagging: CancellationToken,
    account: Arc<QueueAccount>,
}

/// The writer's side of a connection's queue.
#[derive(Debug)]
pub struct OutboxReceiver {
    chan: Arc<Chan>,
}

/// The queue is empty (`try_recv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Empty;

impl OutboxReceiver {
    /// The next item; `None` once every outbox is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<Queued> {
        loop {
            if let Ok(item) = self.try_recv() {
                return Some(item);
            }
            if self.chan.tx_closed.load(Ordering::Acquire) {
                return self.try_recv().ok();
            }
            self.chan.ready.notified().await;
        }
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Result<Queued, Empty> {
        let mut queue = self.chan.lock();
        let item = queue.pop_front().ok_or(Empty)?;
        if queue.is_empty() && queue.capacity() > KEEP_SLOTS {
            queue.shrink_to(KEEP_SLOTS);
        }
        Ok(item)
    }

    /// Give the queue's slots back if nothing is queued: the writer calls this
    /// at each ping, so a connection that stays idle holds no queue memory.
    pub fn release_idle_slots(&mut self) {
        let mut queue = self.chan.lock();
        if queue.is_empty() && queue.capacity() > 0 {
            *queue = VecDeque::new();
        }
    }

    /// Refuse further pushes (they fail with [`PushError::Closed`]).
    pub fn close(&mut self) {
        self.chan.rx_closed.store(true, Ordering::Release);
    }

    pub fn is_empty(&self) -> bool {
        self.chan.lock().is_empty()
    }

    pub fn len(&self) -> usize {
        self.chan.lock().len()
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        self.chan.rx_closed.store(true, Ordering::Release);
        // Release the queued items (and their memory charges) now.
        let drained = std::mem::take(&mut *self.chan.lock());
        drop(drained);
    }
}

impl Outbox {
    /// A queue holding at most `capacity` items, not bounded in bytes.
    pub fn new(capacity: usize) -> (Outbox, OutboxReceiver) {
        Self::with_account(capacity, MemoryGuard::unlimited().queue())
    }

    /// A queue holding at most `capacity` items whose bytes count on `account`.
    /// Nothing is allocated for the items until they are pushed.
    pub fn with_account(capacity: usize, account: Arc<QueueAccount>) -> (Outbox, OutboxReceiver) {
        let chan = Arc::new(Chan {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            ready: Notify::new(),
            rx_closed: AtomicBool::new(false),
            tx_closed: AtomicBool::new(false),
        });
        (
            Outbox {
                _alive: Arc::new(SenderAlive(chan.clone())),
                chan: chan.clone(),
                lagging: CancellationToken::new(),
                account,
            },
            OutboxReceiver { chan },
        )
    }

    /// Enqueue without waiting. A full queue marks the client lagging; a shed
    /// client takes nothing more.
    pub fn push(&self, item: Outbound) -> Result<(), PushError> {
        if self.lagging.is_cancelled() || self.account.shed().is_cancelled() {
            return Err(PushError::Lagging);
        }
        if self.chan.rx_closed.load(Ordering::Acquire) {
            return Err(PushError::Closed);
        }
        {
            let mut queue = self.chan.lock();
            if queue.len() >= self.chan.capacity {
                drop(queue);
                self.lagging.cancel();
                return Err(PushError::Lagging);
            }
            queue.push_back(Queued {
                _charge: self.account.charge(item.held_bytes()),
                item,
            });
        }
        self.chan.ready.notify_one();
        Ok(())
    }

    /// Enqueue several items at once (one lock, one wake-up: a session's events
    /// of one step), all or none: if they do not all fit, the client is lagging.
    pub fn push_all(
        &self,
        items: impl ExactSizeIterator<Item = Outbound>,
    ) -> Result<(), PushError> {
        if self.lagging.is_cancelled() || self.account.shed().is_cancelled() {
            return Err(PushError::Lagging);
        }
        if self.chan.rx_closed.load(Ordering::Acquire) {
            return Err(PushError::Closed);
        }
        {
            let mut queue = self.chan.lock();
            if queue.len() + items.len() > self.chan.capacity {
                drop(queue);
                self.lagging.cancel();
                return Err(PushError::Lagging);
            }
            for item in items {
                queue.push_back(Queued {
                    _charge: self.account.charge(item.held_bytes()),
                    item,
                });
            }
        }
        self.chan.ready.notify_one();
        Ok(())
    }

    /// Enqueue a reply frame.
    pub fn frame(&self, kind: FrameType, text: impl Into<FrameText>) -> Result<(), PushError> {
        self.push(Outbound::Frame {
            kind,
            text: text.into(),
        })
    }

    /// Cancelled once the client fell behind.
    pub fn lagging(&self) -> &CancellationToken {
        &self.lagging
    }

    /// This queue's memory account (its bytes and its shed signal).
    pub fn account(&self) -> &Arc<QueueAccount> {
        &self.account
    }

    /// Frames currently waiting.
    pub fn depth(&self) -> usize {
        self.chan.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_marks_lagging_and_refuses_more() {
        let (outbox, mut rx) = Outbox::new(2);
        assert!(outbox.frame(FrameType::Pong, "a").is_ok());
        assert!(outbox.frame(FrameType::Pong, "b").is_ok());
        assert_eq!(outbox.depth(), 2);
        assert_eq!(outbox.frame(FrameType::Pong, "c"), Err(PushError::Lagging));
        assert!(outbox.lagging().is_cancelled());
        assert_eq!(outbox.account().bytes(), 2);
        assert!(rx.try_recv().is_ok());
        assert_eq!(outbox.account().bytes(), 1, "a taken item no longer counts");
        // Once lagging, nothing else is sent even if room frees up.
        assert_eq!(outbox.frame(FrameType::Pong, "d"), Err(PushError::Lagging));
        drop(rx);
        assert_eq!(
            outbox.account().bytes(),
            0,
            "dropped items release their bytes"
        );
        let (outbox, rx) = Outbox::new(2);
        drop(rx);
        assert_eq!(outbox.frame(FrameType::Pong, "x"), Err(PushError::Closed));
    }

    #[test]
    fn push_all_is_all_or_nothing() {
        let frames = |n: usize| {
            (0..n).map(|i| Outbound::Frame {
                kind: FrameType::Event,
                text: format!("{i}").into(),
            })
        };
        let (outbox, mut rx) = Outbox::new(3);
        assert!(outbox.push_all(frames(2)).is_ok());
        assert_eq!(outbox.depth(), 2);
        assert_eq!(outbox.push_all(frames(2)), Err(PushError::Lagging));
        assert_eq!(outbox.depth(), 2, "nothing of a batch that does not fit");
        assert!(outbox.lagging().is_cancelled());
        assert!(rx.try_recv().is_ok());
    }

    #[tokio::test]
    async fn an_idle_queue_holds_no_slots_and_gives_memory_back() {
        let (outbox, mut rx) = Outbox::new(10_000);
        assert_eq!(outbox.chan.lock().capacity(), 0, "nothing preallocated");
        for i in 0..1000 {
            outbox.frame(FrameType::Pong, format!("{i}")).unwrap();
        }
        assert!(outbox.chan.lock().capacity() >= 1000);
        for _ in 0..1000 {
            rx.recv().await.unwrap();
        }
        assert!(outbox.chan.lock().capacity() <= KEEP_SLOTS);
        rx.release_idle_slots();
        assert_eq!(
            outbox.chan.lock().capacity(),
            0,
            "an idle queue holds nothing"
        );
        // The writer sees the end once every outbox is gone.
        outbox.frame(FrameType::Pong, "last").unwrap();
        drop(outbox);
        assert!(rx.recv().await.is_some());
        assert!(rx.recv().await.is_none());
    }
}
