//! The bounded outbound queue of one connection: sessions and the connection's
//! own request handling push into it, the connection's writer drains it.
//!
//! Pushing never waits: a full queue marks the client as lagging (it is then
//! closed with 4008 and must reconnect and resume), so a slow client can never
//! slow a session or the other clients.
//!
//! Every queued item carries a [`Charge`] on the connection's
//! [`QueueAccount`](crate::guard::QueueAccount): its bytes count toward
//! `--memory-limit` until the writer takes it (or the queue is dropped).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::guard::{Charge, MemoryGuard, QueueAccount};
use crate::journal::JournalReader;
use crate::protocol::FrameText;

/// Something to write to the client, in queue order.
#[derive(Debug)]
pub enum Outbound {
    /// A reply, presence or error frame. `kind` is its `type` (for metrics).
    Frame { kind: &'static str, text: FrameText },
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

/// The sending side of a connection's queue.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Queued>,
    lagging: CancellationToken,
    account: Arc<QueueAccount>,
}

impl Outbox {
    /// A queue holding at most `capacity` items, not bounded in bytes.
    pub fn new(capacity: usize) -> (Outbox, mpsc::Receiver<Queued>) {
        Self::with_account(capacity, MemoryGuard::unlimited().queue())
    }

    /// A queue holding at most `capacity` items whose bytes count on `account`.
    pub fn with_account(
        capacity: usize,
        account: Arc<QueueAccount>,
    ) -> (Outbox, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Outbox {
                tx,
                lagging: CancellationToken::new(),
                account,
            },
            rx,
        )
    }

    /// Enqueue without waiting. A full queue marks the client lagging; a shed
    /// client takes nothing more.
    pub fn push(&self, item: Outbound) -> Result<(), PushError> {
        if self.lagging.is_cancelled() || self.account.shed().is_cancelled() {
            return Err(PushError::Lagging);
        }
        let queued = Queued {
            _charge: self.account.charge(item.held_bytes()),
            item,
        };
        match self.tx.try_send(queued) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lagging.cancel();
                Err(PushError::Lagging)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(PushError::Closed),
        }
    }

    /// Enqueue a reply frame.
    pub fn frame(&self, kind: &'static str, text: impl Into<FrameText>) -> Result<(), PushError> {
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
        self.tx.max_capacity() - self.tx.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_marks_lagging_and_refuses_more() {
        let (outbox, mut rx) = Outbox::new(2);
        assert!(outbox.frame("pong", "a").is_ok());
        assert!(outbox.frame("pong", "b").is_ok());
        assert_eq!(outbox.depth(), 2);
        assert_eq!(outbox.frame("pong", "c"), Err(PushError::Lagging));
        assert!(outbox.lagging().is_cancelled());
        assert_eq!(outbox.account().bytes(), 2);
        assert!(rx.try_recv().is_ok());
        assert_eq!(outbox.account().bytes(), 1, "a taken item no longer counts");
        // Once lagging, nothing else is sent even if room frees up.
        assert_eq!(outbox.frame("pong", "d"), Err(PushError::Lagging));
        drop(rx);
        assert_eq!(
            outbox.account().bytes(),
            0,
            "dropped items release their bytes"
        );
        let (outbox, rx) = Outbox::new(2);
        drop(rx);
        assert_eq!(outbox.frame("pong", "x"), Err(PushError::Closed));
    }
}
