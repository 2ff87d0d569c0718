//! The inbound frame gate: a byte-level watch on what a client sends, below the
//! WebSocket codec.
//!
//! Owns: enforcing the connection's current message size limit the moment a frame
//! header (or a header continuing a fragmented message) announces more than the
//! limit — before tungstenite reserves or reads the payload — and reporting the bytes
//! of the message being received to the memory guard. The limit is a per-phase
//! value the connection changes once it authenticates (16 KiB before, then
//! `--max-frame-bytes`); tungstenite's own `WebSocketConfig` cannot be changed on a
//! live `WebSocketStream`, which is why this sits under it.
//! Must not: interpret frames beyond their headers (tungstenite parses them), or
//! buffer anything it reads: it only looks at the bytes read into the codec's buffer.
//!
//! Writes: text frames are formatted here ([`OutBuf::push_text`], called by the
//! connection's writer), not by tungstenite, into one buffer the gate shares
//! with the writer; tungstenite's own frames (pings, pongs, close) are appended
//! to the same buffer in order. A batch is written in one syscall on flush (or
//! once [`WRITE_THROUGH_BYTES`] are buffered) and the buffer is then *released*:
//! an idle connection keeps no write buffer. Why: tungstenite's out-buffer
//! keeps the capacity of the largest frame or batch it ever wrote and cannot be
//! shrunk from outside; the `attached` reply alone (up to 100 client entries) is
//! ~14 KiB, so every attached connection kept ~14–20 KiB (heaptrack).
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::guard::{Charge, QueueAccount};

/// Frames before authentication may be at most this large (docs/protocol.md §1.3: ≤ 16 KiB).
pub const PRE_AUTH_MAX_FRAME_BYTES: usize = 16 * 1024;

/// Bytes coalesced before they are written through (one syscall per batch).
pub const WRITE_THROUGH_BYTES: usize = 8 * 1024;

/// The error a gated read returns when a message is announced over the limit.
#[derive(Debug, thiserror::Error)]
#[error("a message of at least {announced} bytes was announced; the limit is {limit}")]
pub struct Oversize {
    pub announced: u64,
    pub limit: usize,
}

/// Whether an I/O error (as tungstenite passes it on) is the gate's refusal.
pub fn is_oversize(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Oversize>())
}

/// The bytes written to a connection and not yet on its socket, shared by the
/// gate (which writes them out) and the connection's writer (which formats its
/// text frames into it). Empty and unallocated between batches.
#[derive(Debug, Default)]
pub struct OutBuf(Mutex<OutState>);

#[derive(Debug, Default)]
struct OutState {
    buf: Vec<u8>,
    /// The codec wrote a close frame (its own reply to the peer's close, or
    /// ours): no data frame may follow it (RFC 6455 §5.5.1).
    closed: bool,
}

/// A text frame was offered after the close frame went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the connection is closing: no data frame may follow a close frame")]
pub struct AfterClose;

impl OutBuf {
    pub fn new() -> Arc<OutBuf> {
        Arc::new(OutBuf::default())
    }

    fn lock(&self) -> MutexGuard<'_, OutState> {
        // Plain bytes: a panic while holding the lock cannot leave them inconsistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append one unfragmented text frame (RFC 6455 §5.2; server frames are not
    /// masked, §5.1). Returns the bytes now buffered: the caller flushes once
    /// they reach [`WRITE_THROUGH_BYTES`].
    pub fn push_text(&self, payload: &[u8]) -> Result<usize, AfterClose> {
        let mut header = [0u8; 10];
        header[0] = 0x80 | 0x1; // FIN, text
        let header_len = match payload.len() {
            n if n < 126 => {
                header[1] = n as u8;
                2
            }
            n if n <= usize::from(u16::MAX) => {
                header[1] = 126;
                header[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                header[1] = 127;
                header[2..10].copy_from_slice(&(n as u64).to_be_bytes());
                10
            }
        };
        let mut state = self.lock();
        if state.closed {
            return Err(AfterClose);
        }
        let buf = &mut state.buf;
        if buf.capacity() == 0 {
            buf.reserve((header_len + payload.len()).clamp(512, WRITE_THROUGH_BYTES));
        }
        buf.extend_from_slice(&header[..header_len]);
        buf.extend_from_slice(payload);
        Ok(buf.len())
    }

    /// Bytes buffered.
    pub fn len(&self) -> usize {
        self.lock().buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The limit a connection's gate enforces, changed by the connection.
#[derive(Debug)]
pub struct GateLimit(AtomicUsize);

impl GateLimit {
    pub fn new(bytes: usize) -> Arc<GateLimit> {
        Arc::new(GateLimit(AtomicUsize::new(bytes)))
    }

    pub fn set(&self, bytes: usize) {
        self.0.store(bytes, Ordering::Relaxed);
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the scanner saw in a chunk of client bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Nothing over the limit. `in_message` is the payload bytes of the data
    /// message in progress (0 between messages).
    Ok { in_message: u64 },
    /// A header announced a message of this many payload bytes.
    Over(u64),
}

/// Largest WebSocket frame header: 2 + 8 (length) + 4 (mask).
const MAX_HEADER: usize = 14;

/// Incremental parser of client frame headers (RFC 6455 §5.2), skipping payloads.
#[derive(Debug, Default)]
pub struct FrameScanner {
    header: [u8; MAX_HEADER],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    payload_left: u64,
    /// Announced payload bytes of the data message in progress (all its fragments).
    message_len: u64,
    /// Payload bytes of that message seen so far.
    message_seen: u64,
    /// The current frame is a data frame (counts toward the message).
    data_frame: bool,
    /// The current data frame ends its message.
    fin: bool,
}

impl FrameScanner {
    /// Look at the next bytes of the stream.
    pub fn feed(&mut self, mut bytes: &[u8], limit: usize) -> Scan {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = (bytes.len() as u64).min(self.payload_left);
                self.payload_left -= n;
                if self.data_frame {
                    self.message_seen += n;
                }
                bytes = &bytes[n as usize..];
                if self.payload_left == 0 {
                    self.frame_done();
                }
                continue;
            }
            // In a header.
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if self.have < 2 {
                continue;
            }
            let len7 = self.header[1] & 0x7f;
            let masked = self.header[1] & 0x80 != 0;
            let ext = match len7 {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let need = 2 + ext + if masked { 4 } else { 0 };
            if self.have < need {
                continue;
            }
            let len = match ext {
                0 => u64::from(len7),
                2 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                _ => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&self.header[2..10]);
                    u64::from_be_bytes(b)
                }
            };
            let opcode = self.header[0] & 0x0f;
            self.fin = self.header[0] & 0x80 != 0;
            self.have = 0;
            // Control frames (0x8..) may interleave a fragmented message; tungstenite
            // refuses them over 125 bytes, so they are skipped, not counted.
            self.data_frame = opcode < 0x8;
            if self.data_frame {
                if opcode != 0 {
                    // A new message (text or binary) starts.
                    self.message_len = 0;
                    self.message_seen = 0;
                }
                self.message_len = self.message_len.saturating_add(len);
                if self.message_len > limit as u64 {
                    return Scan::Over(self.message_len);
                }
            } else if len > limit as u64 {
                return Scan::Over(len);
            }
            self.payload_left = len;
            if len == 0 {
                self.frame_done();
            }
        }
        Scan::Ok {
            in_message: self.message_seen,
        }
    }

    fn frame_done(&mut self) {
        if self.data_frame && self.fin {
            self.message_len = 0;
            self.message_seen = 0;
        }
    }
}

/// The scanner as the fuzz target (fuzz/fuzz_targets/ws_frame_header.rs) and the
/// corpus replay (tests/it/fuzz_corpus.rs) drive it.
pub mod fuzzing {
    use super::{FrameScanner, Scan};

    /// Scan `data[2..]` with a limit of `data[0]` × 256 bytes, once whole and once
    /// in reads of `data[1]` bytes (at least one); panics if the two disagree,
    /// since a peer chooses how its bytes are split into reads. Returns the scan.
    pub fn frame_scanner(data: &[u8]) -> Scan {
        let [limit, step, bytes @ ..] = data else {
            return Scan::Ok { in_message: 0 };
        };
        let limit = usize::from(*limit) * 256;
        let whole = FrameScanner::default().feed(bytes, limit);
        let mut scanner = FrameScanner::default();
        let mut split = Scan::Ok { in_message: 0 };
        for chunk in bytes.chunks(usize::from(*step).max(1)) {
            split = scanner.feed(chunk, limit);
            if matches!(split, Scan::Over(_)) {
                break;
            }
        }
        assert_eq!(
            whole, split,
            "the same bytes read in pieces scan differently"
        );
        if let Scan::Over(announced) = whole {
            assert!(announced > limit as u64, "{announced} is not over {limit}");
        }
        whole
    }
}

/// A stream whose reads pass through a [`FrameScanner`].
#[derive(Debug)]
pub struct Gate<S> {
    inner: S,
    scanner: FrameScanner,
    limit: Arc<GateLimit>,
    account: Arc<QueueAccount>,
    /// The bytes of the message being received, as charged to the memory guard.
    charge: Option<Charge>,
    charged: u64,
    /// Set once a message over the limit was announced: nothing more is read.
    tripped: bool,
    /// Frames not yet on the socket (the writer's and the codec's, in order);
    /// released (not just cleared) once written, so an idle connection holds none.
    out: Arc<OutBuf>,
}

impl<S> Gate<S> {
    pub fn new(
        inner: S,
        limit: Arc<GateLimit>,
        account: Arc<QueueAccount>,
        out: Arc<OutBuf>,
    ) -> Gate<S> {
        Gate {
            inner,
            scanner: FrameScanner::default(),
            limit,
            account,
            charge: None,
            charged: 0,
            tripped: false,
            out,
        }
    }

    pub fn into_inner(self) -> S {
        self.inner
    }

    fn recharge(&mut self, in_message: u64) {
        if self.charged == in_message {
            return;
        }
        // A message in progress sits in the codec's buffer until it is complete.
        self.charge = None;
        self.charge = (in_message > 0).then(|| self.account.charge(in_message));
        self.charged = in_message;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Gate<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.tripped {
            return Poll::Ready(Err(io::Error::other(Oversize {
                announced: 0,
                limit: this.limit.get(),
            })));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let limit = this.limit.get();
        match this.scanner.feed(&buf.filled()[before..], limit) {
            Scan::Ok { in_message } => {
                this.recharge(in_message);
                Poll::Ready(Ok(()))
            }
            Scan::Over(announced) => {
                this.tripped = true;
                this.charge = None;
                this.charged = 0;
                // The bytes just read are not handed on: the codec never sees the
                // header, so it reserves nothing for the payload.
                buf.set_filled(before);
                Poll::Ready(Err(io::Error::other(Oversize { announced, limit })))
            }
        }
    }
}

/// Whether `bytes` (whole unmasked server frames, as the codec writes them)
/// hold a close frame. Control frames carry at most 125 bytes (§5.5).
fn contains_close(bytes: &[u8]) -> bool {
    let mut at = 0;
    while at + 2 <= bytes.len() {
        if bytes[at] & 0x0f == 0x8 {
            return true;
        }
        let (ext, len) = match bytes[at + 1] & 0x7f {
            126 => (
                2,
                bytes
                    .get(at + 2..at + 4)
                    .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) as usize),
            ),
            127 => (8, usize::MAX / 2),
            n => (0, usize::from(n)),
        };
        at = at.saturating_add(2 + ext).saturating_add(len);
    }
    false
}

/// Write the buffered bytes to `inner`; the buffer is freed once empty.
fn poll_write_out<S: AsyncWrite + Unpin>(
    inner: &mut S,
    buf: &mut Vec<u8>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    let mut written = 0;
    let result = loop {
        if written == buf.len() {
            break Poll::Ready(Ok(()));
        }
        match Pin::new(&mut *inner).poll_write(cx, &buf[written..]) {
            Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => written += n,
            Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
            Poll::Pending => break Poll::Pending,
        }
    };
    if written == buf.len() {
        *buf = Vec::new();
    } else if written > 0 {
        buf.drain(..written);
    }
    result
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gate<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let mut state = this.out.lock();
        // The codec writes only control frames (text goes through `push_text`).
        if contains_close(data) {
            state.closed = true;
        }
        let buf = &mut state.buf;
        if buf.len() + data.len() > WRITE_THROUGH_BYTES {
            // Full: what is buffered goes out first (it was written first).
            match poll_write_out(&mut this.inner, buf, cx) {
                Poll::Ready(Ok(())) => {}
                other => return other.map_ok(|()| 0),
            }
            if data.len() >= WRITE_THROUGH_BYTES {
                return Pin::new(&mut this.inner).poll_write(cx, data);
            }
        }
        if buf.capacity() == 0 {
            buf.reserve(data.len().clamp(512, WRITE_THROUGH_BYTES));
        }
        buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let mut state = this.out.lock();
        match poll_write_out(&mut this.inner, &mut state.buf, cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let mut state = this.out.lock();
        match poll_write_out(&mut this.inner, &mut state.buf, cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame header announcing `len` payload bytes.
    fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
        let mut h = vec![if fin { 0x80 } else { 0 } | opcode];
        if len < 126 {
            h.push(0x80 | len as u8);
        } else if len <= u64::from(u16::MAX) {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    #[test]
    fn refuses_a_large_frame_from_its_header_alone() {
        let mut s = FrameScanner::default();
        let h = header(true, 1, 4 << 20);
        // Byte by byte: nothing is refused before the length is complete.
        for b in &h[..h.len() - 5] {
            assert!(matches!(s.feed(&[*b], 16384), Scan::Ok { .. }));
        }
        assert_eq!(s.feed(&h[h.len() - 5..], 16384), Scan::Over(4 << 20));
    }

    #[test]
    fn small_frames_pass_and_reset_between_messages() {
        let mut s = FrameScanner::default();
        let mut bytes = Vec::new();
        for _ in 0..10 {
            bytes.extend(header(true, 1, 1000));
            bytes.extend(vec![b'x'; 1000]);
        }
        // Pings interleaved are skipped.
        bytes.extend(header(true, 9, 4));
        bytes.extend([0; 4]);
        assert_eq!(s.feed(&bytes, 16384), Scan::Ok { in_message: 0 });
    }

    #[test]
    fn counts_fragments_of_one_message_together() {
        let mut s = FrameScanner::default();
        let mut bytes = header(false, 1, 10_000);
        bytes.extend(vec![0; 10_000]);
        assert_eq!(s.feed(&bytes, 16384), Scan::Ok { in_message: 10_000 });
        // A control frame inside the fragmented message does not reset it.
        let mut ping = header(true, 9, 2);
        ping.extend([0, 0]);
        assert_eq!(s.feed(&ping, 16384), Scan::Ok { in_message: 10_000 });
        assert_eq!(s.feed(&header(true, 0, 10_000), 16384), Scan::Over(20_000));
    }

    #[test]
    fn payload_split_across_reads_is_tracked() {
        let mut s = FrameScanner::default();
        let mut bytes = header(true, 1, 300);
        bytes.extend(vec![0; 300]);
        bytes.extend(header(true, 1, 20_000));
        let (a, b) = bytes.split_at(100);
        assert_eq!(s.feed(a, 16384), Scan::Ok { in_message: 92 });
        assert_eq!(s.feed(b, 16384), Scan::Over(20_000));
        // With a larger limit the same stream passes.
        let mut s = FrameScanner::default();
        assert_eq!(s.feed(&bytes, 1 << 20), Scan::Ok { in_message: 0 });
    }

    #[tokio::test]
    async fn text_frames_go_out_in_order_and_the_buffer_is_released() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (server, mut client) = tokio::io::duplex(1 << 20);
        let out = OutBuf::new();
        let mut gate = Gate::new(
            server,
            GateLimit::new(16384),
            crate::guard::MemoryGuard::unlimited().queue(),
            out.clone(),
        );
        let big = vec![b'x'; 70_000];
        out.push_text(b"hello").unwrap();
        // A control frame written by the codec lands after it.
        gate.write_all(&[0x89, 0]).await.unwrap();
        out.push_text(&[b'y'; 300]).unwrap();
        out.push_text(&big).unwrap();
        gate.flush().await.unwrap();
        assert!(out.is_empty());
        assert_eq!(out.lock().buf.capacity(), 0, "released after the flush");
        let mut want = vec![0x81, 5];
        want.extend_from_slice(b"hello");
        want.extend_from_slice(&[0x89, 0, 0x81, 126, 1, 44]);
        want.extend_from_slice(&[b'y'; 300]);
        want.extend_from_slice(&[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        want.extend_from_slice(&big);
        let mut got = vec![0; want.len()];
        client.read_exact(&mut got).await.unwrap();
        assert!(got == want, "frames as RFC 6455 §5.2 lays them out");
        // Once the codec wrote a close frame, no data frame may follow.
        gate.write_all(&[0x88, 2, 0x03, 0xe8]).await.unwrap();
        assert_eq!(out.push_text(b"late"), Err(AfterClose));
    }
}
