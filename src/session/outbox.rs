//! The bounded outbound queue of one connection: sessions and the connection's
//! own request handling push into it, the connection's writer drains it.
//!
//! Pushing never waits: a full queue marks the client as lagging (it is then
//! closed with 4008 and must reconnect and resume), so a slow client can never
//! slow a session or the other clients.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
    /// The queue was full: the client is now marked lagging.
    Lagging,
    /// The connection is gone.
    Closed,
}

/// The sending side of a connection's queue.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outbound>,
    lagging: CancellationToken,
}

impl Outbox {
    /// A queue holding at most `capacity` items.
    pub fn new(capacity: usize) -> (Outbox, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Outbox {
                tx,
                lagging: CancellationToken::new(),
            },
            rx,
        )
    }

    /// Enqueue without waiting. A full queue marks the client lagging.
    pub fn push(&self, item: Outbound) -> Result<(), PushError> {
        if self.lagging.is_cancelled() {
            return Err(PushError::Lagging);
        }
        match self.tx.try_send(item) {
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
        assert!(rx.try_recv().is_ok());
        // Once lagging, nothing else is sent even if room frees up.
        assert_eq!(outbox.frame("pong", "d"), Err(PushError::Lagging));
        drop(rx);
        let (outbox, rx) = Outbox::new(2);
        drop(rx);
        assert_eq!(outbox.frame("pong", "x"), Err(PushError::Closed));
    }
}
