//! The WebSocket layer: the server side of the upgrade handshake and the
//! per-connection codec configuration.
//!
//! Owns: validating an upgrade request (RFC 6455 §4.2.1) and building its `101`
//! answer, turning the upgraded I/O into a tungstenite stream with small buffers,
//! and the [`gate`] under it that enforces the per-phase message limit before a
//! payload is buffered. Must not: know the protocol's messages (connection) or
//! admission rules (server, listen).
//!
//! Why tungstenite with a gate rather than axum's `WebSocketUpgrade`: axum hides
//! the I/O, so no limit can be changed after authentication and nothing can watch
//! frame headers; tungstenite checks `max_frame_size` against a header but its
//! config is fixed for a live stream. The gate gives both phases their limit.
//!
//! Memory of an idle authenticated plaintext connection: 7.6 KiB of
//! server RSS at N = 10,000 (the fanout bench; it was 31.8 KiB, then 12.6).
//! Measured with heaptrack on the release server (`--clients 1000`, the server
//! killed while the clients sat attached; live allocations per connection) and
//! `-Zprint-type-sizes` for the futures. glibc's arenas are not the gap
//! (`malloc_stats()` showed the memory in use; `MALLOC_ARENA_MAX=2` changed
//! nothing). What was removed:
//! - tungstenite's out-buffer kept the capacity of the largest frame it ever
//!   wrote (the `attached` reply alone is up to ~14 KiB): text frames are now
//!   formatted into the [`gate`]'s shared buffer, written on flush and freed;
//! - the connection's future was 4.2 KiB and stored twice: an async fn keeps its
//!   arguments, and every local borrowed across an await, in each suspended
//!   state. Setup now runs in its own boxed future (`connection::open`) that is
//!   freed once the connection runs;
//! - the writer's future carried a batch's write state, a close and a replay
//!   (1,424 bytes; 904 now): those are boxed while they run;
//! - a drained outbound queue kept up to 16 slots of 128 bytes: it now keeps 4
//!   while active and frees them at the next ping once idle;
//! - a pair request's state, the answered challenge's text and two B-tree nodes
//!   (attachments, last seq per session) were carried for the connection's life.
//!
//! What remains, per connection (heaptrack, live heap ≈ 5.3 KiB; glibc's chunk
//! headers, rounding and free lists make up the rest of the RSS):
//! - the codec's read buffer, 1 KiB ([`READ_CHUNK_BYTES`]: an `auth.response`
//!   fits one read; it keeps the size of the largest frame received, which
//!   tungstenite gives no way to shrink);
//! - the writer task, 1.1 KiB (its future, waiting on the queue, the urgent-close
//!   watch, the lag and shed tokens, the flush `Notify` and the ping timer, plus
//!   tokio's task header, 128-byte aligned);
//! - the connection's state (`Running`: `Connection` with its rate limiter,
//!   identity and auth phase, the writer's handle, the heartbeat): 0.9 KiB;
//! - the run loop's future (the select's waits): 0.8 KiB;
//! - the split lock holding the WebSocket stream both halves share: 0.45 KiB;
//! - the outbound queue's shared state and its lag token: 0.35 KiB, plus its 4
//!   kept slots (0.5 KiB) until the first ping after the connection went idle;
//! - the task that awaited the upgrade and now awaits the run loop: 0.25 KiB;
//! - tokio's I/O registration, three small zeroed blocks (~0.27 KiB together),
//!   client id and info strings (~0.1 KiB), the session's per-client entry.
//!
//! Left alone: folding the writer into the connection task would save its task
//! header and the split lock (~0.6 KiB) at the price of one select polling both
//! reading and writing; not needed for the 8 KiB target.
//!
//! What TLS adds, measured (`cargo bench --bench fanout -- --tls`, N = 10,000):
//! 15.1 KiB per idle connection instead of 7.6, so ~7.5 KiB. Heaptrack at
//! N = 1,000 shows where: rustls 0.23's record reader keeps a 4 KiB buffer for
//! the connection's life (it grows it to `used + 4 KiB` before every read and
//! only shrinks it back to 4 KiB when empty), its `ServerConnection` and the
//! `TlsStream` around the socket are 1.2 KiB (key schedule, record layer), and
//! its plaintext and outgoing queues ~0.2 KiB; glibc's overhead on top. Going
//! lower would mean rustls's unbuffered API with buffers of our own (the read
//! buffer freed while idle), which was not done.

/// The text of one outbound frame: refcounted, so one serialized event is shared by
/// every recipient without copying.
pub use tokio_tungstenite::tungstenite::Utf8Bytes as FrameText;

pub mod gate;

use axum::http::{HeaderMap, HeaderValue, Method, header};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// The upgraded connection as the codec sees it.
pub type Io = gate::Gate<TokioIo<hyper::upgrade::Upgraded>>;
/// A server-side WebSocket over it.
pub type WsStream = WebSocketStream<Io>;

/// Bytes the codec reads from the socket at a time, and its initial read buffer.
/// Small on purpose: an idle connection keeps this buffer for its lifetime
/// (tungstenite allocates it once); a large message is read in several calls into
/// a buffer reserved for exactly its announced length (after the gate allowed it).
pub const READ_CHUNK_BYTES: usize = 1024;
/// Frames the writer batches are written through once this many bytes are
/// coalesced (by the [`gate`], not tungstenite); the writer flushes after a batch.
pub use gate::WRITE_THROUGH_BYTES;

/// The codec configuration of a new connection. Frame and message limits are the
/// post-authentication ones: until then the gate enforces the smaller limit first.
pub fn codec_config(max_frame_bytes: usize, max_write_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_CHUNK_BYTES)
        // Each frame goes straight to the gate, which coalesces a batch and frees
        // its buffer after the flush (tungstenite's buffer keeps its largest size).
        .write_buffer_size(0)
        .max_write_buffer_size(max_write_buffer.max(WRITE_THROUGH_BYTES + 1))
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// Wrap an upgraded connection.
pub async fn server_stream(io: Io, config: WebSocketConfig) -> WsStream {
    WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
}

/// Why an upgrade request is refused (answered `400`, or `426` for a version).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("a WebSocket upgrade must be a GET")]
    Method,
    #[error("missing `Connection: upgrade` and `Upgrade: websocket` headers")]
    NotUpgrade,
    #[error("Sec-WebSocket-Version must be 13")]
    Version,
    #[error("missing or invalid Sec-WebSocket-Key")]
    Key,
}

impl HandshakeError {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::NotUpgrade | HandshakeError::Version => 426,
            HandshakeError::Method | HandshakeError::Key => 400,
        }
    }
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Check an upgrade request; returns the `Sec-WebSocket-Accept` value to answer with.
pub fn accept_key(method: &Method, headers: &HeaderMap) -> Result<HeaderValue, HandshakeError> {
    if method != Method::GET {
        return Err(HandshakeError::Method);
    }
    if !header_has_token(headers, header::CONNECTION, "upgrade")
        || !header_has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(HandshakeError::NotUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(HandshakeError::Version);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(HandshakeError::Key)?;
    // A 16-byte nonce, base64: 24 characters.
    if key.len() != 24 {
        return Err(HandshakeError::Key);
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    HeaderValue::from_str(&accept).map_err(|_| HandshakeError::Key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h
    }

    #[test]
    fn answers_the_rfc_example() {
        let accept = accept_key(&Method::GET, &upgrade_headers()).unwrap();
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn refuses_incomplete_upgrades() {
        assert_eq!(
            accept_key(&Method::POST, &upgrade_headers()),
            Err(HandshakeError::Method)
        );
        let mut h = upgrade_headers();
        h.remove(header::UPGRADE);
        assert_eq!(
            accept_key(&Method::GET, &h),
            Err(HandshakeError::NotUpgrade)
        );
        let mut h = upgrade_headers();
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(accept_key(&Method::GET, &h), Err(HandshakeError::Version));
        let mut h = upgrade_headers();
        h.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("short"));
        assert_eq!(accept_key(&Method::GET, &h), Err(HandshakeError::Key));
    }
}
