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
//! Memory of an idle authenticated plaintext connection (issue 11). Measured
//! with heaptrack on the release server (`cargo bench --bench fanout -- --clients
//! 100`, the server killed while the clients sat attached; live allocations
//! divided by 100) and with the bench's RSS figure at N = 10,000 (README).
//! glibc's arenas are not the gap: `malloc_stats()` at N = 3,000 showed 105 MB
//! in use of 106 MB taken from the system, and `MALLOC_ARENA_MAX=2` changed
//! nothing (31.9 KiB either way). The gap was live allocations:
//! - tungstenite's out-buffer keeps the capacity of the largest frame or batch
//!   it ever wrote; the `attached` reply (up to 100 client entries) alone is
//!   ~14 KiB, so every connection kept 14–20 KiB. Now text frames are formatted
//!   into the [`gate`]'s shared buffer, written on flush and then freed: 0 idle;
//! - the spawned connection future was ~10 KiB: `serve` moved `run`'s future
//!   into `instrument`, and the async fn reserved room for both. Boxed once now.
//!
//! What remains, per connection (heaptrack, live heap ≈ 14 KiB in all):
//! - the connection's futures: ~4.4 KiB (`run`'s state: `Connection` 1.1 KiB of
//!   which the auth phase 0.5 KiB, the select's timers and waiters, the split
//!   stream), boxed; the task that awaited the upgrade, 1.2 KiB (tokio task
//!   header, the upgrade timeout's timer entry, a pointer);
//! - the writer task, 1.9 KiB (its future and task header);
//! - the codec's read buffer, [`READ_CHUNK_BYTES`] (1 KiB: an `auth.response`
//!   fits one read; it keeps the size of the largest frame received);
//! - the outbound queue (`session::outbox`, no slots preallocated), 0.5 KiB;
//! - the split lock, the urgent-close watch, the flush `Notify`, the gate's
//!   shared limit and write buffer handle: ~0.9 KiB;
//! - the last seq per session (the 4008 reason), ~0.45 KiB once an event went out;
//! - tokio's I/O registration 0.25 KiB, identity, client info, challenge and
//!   fingerprint strings ~0.4 KiB, the session's per-client entry (small);
//! - glibc's chunk headers and rounding on top of these (not measured apart).
//!
//! The next steps toward 8 KiB, not done: fold the writer into the connection
//! task (one task, one select over reading, the outbox and the timers: −1.9 KiB
//! and the split lock, the watch and the `Notify`), and move the auth phase and
//! rarely used state behind a box that is dropped after authentication.
//!
//! What TLS adds (not measured: the bench has no TLS mode; from rustls 0.23's
//! buffers): the `ServerConnection` state (~1–2 KiB with its key schedule), its
//! deframer buffer, which keeps the size of the largest TLS record received
//! (~1 KiB after an `auth.response`, up to ~16.7 KiB after a large prompt), and
//! the boxed `TlsStream` around the socket; sent records are freed once written.
//! So roughly 3–4 KiB more per idle connection, up to ~18 KiB after large input.

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
