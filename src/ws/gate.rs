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
//! buffer anything: it only looks at the bytes read into the codec's buffer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::guard::{Charge, QueueAccount};

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
}

impl<S> Gate<S> {
    pub fn new(inner: S, limit: Arc<GateLimit>, account: Arc<QueueAccount>) -> Gate<S> {
        Gate {
            inner,
            scanner: FrameScanner::default(),
            limit,
            account,
            charge: None,
            charged: 0,
            tripped: false,
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

impl<S: AsyncWrite + Unpin> AsyncWrite for Gate<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
}
