//! The writer half of a connection: the only code that writes to the socket.
//!
//! It drains the connection's [`Outbox`](crate::session::Outbox) in order, expands
//! attach replays (journal first, then tail), sends WebSocket pings, and closes
//! the socket — in queue order for ordinary closes, at once for urgent ones
//! (shutdown, lagging), giving up after a short grace when the peer does not read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::sync::{Notify, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::journal::ReadCursor;
use crate::metrics::Metrics;
use crate::session::Outbound;
use crate::session::outbox::{JournalReplay, OutboxReceiver};
use crate::session::replay;
use crate::ws::FrameText;
use crate::ws::WsStream;
use crate::ws::gate::{OutBuf, WRITE_THROUGH_BYTES};
use ccrelay_protocol::{FrameType, close_code};

/// The write half of a connection's WebSocket.
pub type Sink = SplitSink<WsStream, Message>;
/// Queued items written before one flush (a batch: several frames, one syscall
/// when they fit the codec's write-through size).
const BATCH_ITEMS: usize = 64;

/// How long a close frame may take to reach a peer that stopped reading.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// An urgent close, taking priority over anything queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    pub code: u16,
    pub reason: String,
}

/// The last seq written per session: a few entries at most, so a vector (no
/// tree node per connection, and no reference count touched per event when the
/// session is already known).
#[derive(Debug, Default)]
pub struct LastSeq(Vec<(Arc<str>, u64)>);

impl LastSeq {
    pub fn record(&mut self, session: &Arc<str>, seq: u64) {
        match self
            .0
            .iter_mut()
            .find(|(name, _)| Arc::ptr_eq(name, session) || name == session)
        {
            Some((_, last)) => *last = seq,
            None => self.0.push((session.clone(), seq)),
        }
    }

    /// `N` for one session (0 before any event), `a:N b:M` sorted by name for several.
    fn reason(&self) -> String {
        match self.0.as_slice() {
            [] => "0".to_string(),
            [(_, seq)] => seq.to_string(),
            several => {
                let mut parts: Vec<(&Arc<str>, u64)> =
                    several.iter().map(|(name, seq)| (name, *seq)).collect();
                parts.sort();
                let parts: Vec<String> =
                    parts.iter().map(|(s, seq)| format!("{s}:{seq}")).collect();
                parts.join(" ")
            }
        }
    }
}

/// One unit of writer work.
enum Work {
    Ping,
    Flush,
    Item(Outbound),
}

/// Why writing failed: the peer is gone or the socket broke.
#[derive(Debug)]
struct WriteFailed;

/// How the writer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterEnd {
    /// A close frame was sent (or attempted) with this code and reason.
    Closed { code: u16, reason: String },
    /// The socket failed or the queue ended.
    Broken,
}

pub struct Writer {
    pub sink: Sink,
    /// Where text frames are formatted (the gate writes it out on flush): not
    /// tungstenite's out-buffer, which would keep its largest size for the
    /// connection's life (see `ws::gate`).
    pub out: Arc<OutBuf>,
    pub rx: OutboxReceiver,
    pub urgent: watch::Receiver<Option<CloseRequest>>,
    pub lagging: tokio_util::sync::CancellationToken,
    /// Cancelled when the memory guard sheds this client (close 1013).
    pub shed: tokio_util::sync::CancellationToken,
    pub flush: Arc<Notify>,
    pub ping_interval: Duration,
    pub metrics: Arc<Metrics>,
    /// Last seq written to the socket, per session (for the 4008 reason).
    pub last_seq: LastSeq,
}

impl Writer {
    /// Write until closed; returns how it ended and the write half (so the
    /// connection can shut the socket down and drain it).
    pub async fn run(mut self) -> (WriterEnd, Sink) {
        let end = self.run_inner().await;
        (end, self.sink)
    }

    /// The rare, large steps (a close with its grace timer, a journal replay) are
    /// boxed where they are awaited: inline, their state would be part of every
    /// idle connection's writer future (1.2 KiB instead of 0.56, `-Zprint-type-sizes`).
    async fn run_inner(&mut self) -> WriterEnd {
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + self.ping_interval,
            self.ping_interval,
        );
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lagging = self.lagging.clone();
        let shed = self.shed.clone();
        let mut urgent = self.urgent.clone();
        let flush = self.flush.clone();
        loop {
            if let Some(r) = self.pending_close(&urgent) {
                // Nothing queued will be sent: release its memory now, not after the close grace.
                self.rx.close();
                while self.rx.try_recv().is_ok() {}
                return Box::pin(self.close(r.code, r.reason)).await;
            }
            let work = tokio::select! {
                biased;
                changed = urgent.changed() => {
                    if changed.is_err() {
                        return WriterEnd::Broken;
                    }
                    continue;
                }
                _ = lagging.cancelled() => continue,
                _ = shed.cancelled() => continue,
                _ = ping.tick() => Work::Ping,
                _ = flush.notified() => Work::Flush,
                item = self.rx.recv() => match item {
                    Some(queued) => Work::Item(queued.take()),
                    None => return WriterEnd::Broken,
                },
            };
            // Any write may block on a peer that stopped reading: race it against
            // the urgent signals so a stuck socket never delays a close.
            let done = tokio::select! {
                biased;
                _ = urgent.changed() => None,
                _ = lagging.cancelled() => None,
                _ = shed.cancelled() => None,
                // Boxed: a batch's write state (~0.7 KiB) exists only while it is written.
                r = Box::pin(self.perform(work)) => Some(r),
            };
            match done {
                None => continue,
                Some(Ok(Some(end))) => return end,
                Some(Ok(None)) => {}
                Some(Err(WriteFailed)) => return WriterEnd::Broken,
            }
        }
    }

    /// The close to perform now, if an urgent close, a lag or a shed was signalled.
    fn pending_close(
        &self,
        urgent: &watch::Receiver<Option<CloseRequest>>,
    ) -> Option<CloseRequest> {
        if let Some(r) = urgent.borrow().clone() {
            return Some(r);
        }
        if self.shed.is_cancelled() {
            tracing::warn!("shed under memory pressure: closing with 1013");
            return Some(CloseRequest {
                code: close_code::SHED,
                reason: "server under memory pressure; reconnect and resume".into(),
            });
        }
        if self.lagging.is_cancelled() {
            let reason = self.lag_reason();
            self.metrics.clients_lagged.inc();
            tracing::warn!(reason = %reason, "client too slow: closing with 4008");
            return Some(CloseRequest {
                code: close_code::LAGGING,
                reason,
            });
        }
        None
    }

    async fn perform(&mut self, work: Work) -> Result<Option<WriterEnd>, WriteFailed> {
        match work {
            Work::Ping => {
                self.rx.release_idle_slots();
                self.send(Message::Ping(Default::default())).await?
            }
            Work::Flush => self.sink.flush().await.map_err(|_| WriteFailed)?,
            Work::Item(item) => {
                // Feed a batch of what is queued, then flush once.
                if let Some(end) = self.write_item(item).await? {
                    return Ok(Some(end));
                }
                for _ in 1..BATCH_ITEMS {
                    if self.pending_close(&self.urgent).is_some() {
                        break;
                    }
                    let Ok(queued) = self.rx.try_recv() else {
                        break;
                    };
                    if let Some(end) = self.write_item(queued.take()).await? {
                        return Ok(Some(end));
                    }
                }
                self.sink.flush().await.map_err(|_| WriteFailed)?;
            }
        }
        Ok(None)
    }

    fn lag_reason(&self) -> String {
        format!("lagging; last seq {}", self.last_seq.reason())
    }

    async fn write_item(&mut self, item: Outbound) -> Result<Option<WriterEnd>, WriteFailed> {
        self.metrics
            .client_queue_depth
            .observe((self.rx.len() + 1) as f64);
        match item {
            Outbound::Frame { kind, text } => {
                self.feed(kind, text).await?;
            }
            Outbound::Event {
                session,
                seq,
                text,
                read_at,
            } => {
                self.feed(FrameType::Event, text).await?;
                if let Some(t) = read_at {
                    self.metrics
                        .fanout_latency_seconds
                        .observe(t.elapsed().as_secs_f64());
                }
                self.last_seq.record(&session, seq);
            }
            Outbound::Attach {
                session,
                reply,
                journal,
                tail,
            } => {
                self.feed(FrameType::Attached, reply).await?;
                if let Some(replay) = journal {
                    Box::pin(self.replay_journal(&session, replay)).await?;
                }
                for (seq, text) in tail {
                    self.feed(FrameType::Event, text).await?;
                    self.last_seq.record(&session, seq);
                }
            }
            Outbound::Close { code, reason } => {
                return Ok(Some(Box::pin(self.close(code, reason)).await));
            }
        }
        Ok(None)
    }

    /// Stream journal records to the socket, reading them in bounded chunks
    /// (`session::replay`): no blocking thread waits while this socket is full.
    async fn replay_journal(
        &mut self,
        session: &Arc<str>,
        replay: JournalReplay,
    ) -> Result<(), WriteFailed> {
        let JournalReplay { reader, from, to } = replay;
        let mut cursor = ReadCursor::new(from, to);
        loop {
            let chunk = match replay::next_chunk(&reader, &mut cursor).await {
                Ok(chunk) if chunk.is_empty() => break,
                Ok(chunk) => chunk,
                Err(e) => {
                    tracing::error!(error = %e, "journal replay failed; it stops here");
                    break;
                }
            };
            for (seq, text) in chunk {
                self.feed(FrameType::Event, text).await?;
                self.last_seq.record(session, seq);
            }
        }
        Ok(())
    }

    async fn feed(&mut self, kind: FrameType, text: FrameText) -> Result<(), WriteFailed> {
        if self.out.len() >= WRITE_THROUGH_BYTES {
            // A batch's worth is buffered: write it through before taking this frame
            // (waits while the socket is full). Flushing before, not after, the push
            // keeps the Sink contract: cancelled here (an urgent close), this frame
            // was not taken, so `last_seq` (the 4008 reason) stays exact.
            self.sink.flush().await.map_err(|_| WriteFailed)?;
        }
        let len = text.len();
        self.out
            .push_text(text.as_str().as_bytes())
            .map_err(|_| WriteFailed)?;
        self.metrics.bytes_out.inc_by(len as u64);
        self.metrics.frame_out(kind);
        Ok(())
    }

    async fn send(&mut self, msg: Message) -> Result<(), WriteFailed> {
        self.sink.send(msg).await.map_err(|_| WriteFailed)
    }

    /// Send a close frame, waiting at most [`CLOSE_GRACE`] for a peer that does not read.
    async fn close(&mut self, code: u16, reason: String) -> WriterEnd {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.clone().into(),
        };
        let started = Instant::now();
        let sent = tokio::time::timeout(CLOSE_GRACE, async {
            self.sink.send(Message::Close(Some(frame))).await?;
            self.sink.close().await
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::debug!(
                code,
                waited_ms = started.elapsed().as_millis() as u64,
                "close frame not delivered; dropping the connection"
            );
        }
        WriterEnd::Closed { code, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_seq_names_one_session_bare_and_several_sorted() {
        let mut last = LastSeq::default();
        assert_eq!(last.reason(), "0");
        let default: Arc<str> = Arc::from("default");
        last.record(&default, 7);
        last.record(&default, 9);
        assert_eq!(last.reason(), "9");
        // Another Arc with the same name is the same session.
        last.record(&Arc::from("default"), 10);
        last.record(&Arc::from("b"), 3);
        assert_eq!(last.reason(), "b:3 default:10");
        assert_eq!(last.0.len(), 2);
    }
}
