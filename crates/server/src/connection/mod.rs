//! One WebSocket connection: the only place that knows WebSocket frames.
//!
//! Owns: frame size
//! limits, the inbound rate limit, heartbeat and idle detection (healthy → stale →
//! closing), key revocation, turning frames into typed requests and session
//! commands, and mapping every failure to its error code or close code. Writing
//! is done by [`writer::Writer`], fed through the connection's outbox. Must not:
//! hold session state — sessions own it and push frames back. The authentication
//! phase (challenge, response, pairing, its deadline) lives in [`auth_phase`];
//! the `keys.*` requests in [`devices`]; `push.subscribe`/`push.unsubscribe` in [`push`].

mod auth_phase;
mod controls;
mod devices;
mod lifecycle;
mod push;
mod workspace;
pub mod writer;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use governor::clock::QuantaClock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::Instrument;

use crate::auth::{self, Identity};
use crate::listen::preauth::AddressToken;
use crate::metrics::{
    AuthLabels, AuthResult, ClosedLabel, ClosedReason, ConnectionState, FrameIn, StateLabel,
};
use crate::session::{ClientHandle, Outbound, Outbox, SessionCmd};
use crate::ws::gate::{self, Gate, GateLimit, PRE_AUTH_MAX_FRAME_BYTES};
use crate::ws::{self as wslayer, WsStream};
use ccrelay_protocol::{
    ClientRequest, ErrorCode, FrameType, Inbound, ProtocolError, RequestId, ServerMsg,
    SessionSummary, close_code, parse_request,
};
use writer::{CloseRequest, Writer, WriterEnd};

/// What a WebSocket connection needs from the rest of the server. Built once by
/// the server at start and shared by every connection; the connection layer
/// owns the shape, the server only fills it.
#[derive(Debug)]
pub struct Services {
    pub config: Arc<crate::config::Config>,
    /// Every session, configured and created (docs/protocol.md §4.10).
    pub sessions: Arc<crate::session::Registry>,
    /// Where clients may create sessions and list directories.
    pub roots: Arc<crate::workdirs::Roots>,
    /// The workspace view's limits and private places (docs/protocol.md §11).
    pub workspace: Arc<crate::workspace::Workspace>,
    /// The audit log (creating, closing and renaming sessions are audit lines).
    pub audit: Arc<crate::session::AuditLog>,
    pub keys: auth::KeyStore,
    pub throttle: auth::AuthThrottle,
    /// Where signature verifications run (off the async workers, bounded).
    pub verifier: auth::Verifier,
    /// Pending device pairing requests and the owners told about them.
    pub pairing: Arc<crate::pairing::Pairing>,
    /// Web Push: the VAPID key, the subscriptions, delivery (docs/protocol.md §9.1).
    pub push: crate::notify::webpush::WebPush,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub server_id: String,
    /// Cancelled to close every connection (shutdown or fatal fault).
    pub conn_shutdown: tokio_util::sync::CancellationToken,
    pub fatal: crate::fatal::FatalSignal,
    /// Bytes buffered in client queues and event tails, against `--memory-limit`.
    pub memory: Arc<crate::guard::MemoryGuard>,
    /// Notifications (§9): `client.visible`, tokens, `POST /v1/push/respond`.
    pub notify: crate::notify::Notifier,
    /// This server's names (origin binding), fixed at start.
    pub names: crate::names::ServerNames,
    /// Open WebSocket connections (a subset of the slots in use, which also
    /// count connections still before or in their HTTP request).
    pub websockets: std::sync::atomic::AtomicUsize,
    pub next_conn: std::sync::atomic::AtomicU64,
}

impl Services {
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// The close frame connections get when the server stops.
    pub fn shutdown_close(&self) -> CloseRequest {
        match self.fatal.cause() {
            Some(cause) => CloseRequest {
                code: close_code::INTERNAL,
                reason: truncate_reason(&format!("server fault: {cause}")),
            },
            None => CloseRequest {
                code: close_code::GOING_AWAY,
                reason: "server shutting down".into(),
            },
        }
    }

    /// Open WebSocket connections.
    pub fn open_connections(&self) -> usize {
        self.websockets.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Close reasons must fit a control frame (123 bytes).
fn truncate_reason(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() + c.len_utf8() > 120 {
            break;
        }
        out.push(c);
    }
    out
}

/// Sustained abuse: more than this many times the allowed frames refused within
/// [`ABUSE_WINDOW`] closes the connection with 1008 (docs/protocol.md §7.3).
const ABUSE_FACTOR: u32 = 2;
const ABUSE_WINDOW: Duration = Duration::from_secs(10);
/// At most one `rate_limited` error this often (docs/protocol.md §7.3).
const RATE_ERROR_EVERY: Duration = Duration::from_secs(1);
/// How often the heartbeat checks liveness (a fraction of the ping interval).
const HEARTBEAT_CHECKS_PER_PING: u32 = 2;
/// After the close frame went out and the write side is shut down, how long the
/// read side is drained so that a client still sending gets the close frame
/// instead of a reset (which would lose it: an abnormal 1006 on its side).
const CLOSE_DRAIN: Duration = Duration::from_secs(1);

/// One clock for every connection's rate limiter. `QuantaClock::default()`
/// calibrates with CPUID, which a virtual machine traps: made per connection it
/// was 7.7 % of the server's CPU in a connect storm (perf, fanout bench at
/// N = 10,000). Clones share the calibration.
static LIMITER_CLOCK: std::sync::LazyLock<QuantaClock> =
    std::sync::LazyLock::new(QuantaClock::default);

/// What the listener hands a connection along with its upgraded socket.
#[derive(Debug)]
pub struct Transport {
    /// The client's address: the TCP peer, or behind a `--trusted-proxy` the
    /// forwarded address (port 0). Used by the throttle, `from=`, and logs.
    pub peer: SocketAddr,
    /// The local address of the socket (one of this server's names, for origin binding).
    pub local: SocketAddr,
    /// The listener serves TLS (an origin bound here must be `wss`).
    pub tls: bool,
    /// RFC 9266 `tls-exporter` of the connection's TLS 1.3 session, if any.
    pub channel_binding: Option<[u8; 32]>,
    /// The `--max-connections` slot, held until the connection ends.
    pub slot: OwnedSemaphorePermit,
    /// The per-address unauthenticated token, released once authenticated.
    pub preauth: Option<AddressToken>,
}

/// Liveness of a connection, as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// Traffic within the last ping interval.
    Healthy,
    /// Nothing for longer than a ping interval; still within the idle timeout.
    Stale,
    /// Closing.
    Closing,
}

/// Counts a connection in `ccrelay_connections_open{state}` while it lives.
struct OpenGauge {
    shared: Arc<Services>,
    state: ConnectionState,
}

impl OpenGauge {
    fn new(shared: Arc<Services>) -> Self {
        shared
            .websockets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        shared
            .metrics
            .connections_open
            .get_or_create(&StateLabel {
                state: ConnectionState::Unauthenticated,
            })
            .inc();
        OpenGauge {
            shared,
            state: ConnectionState::Unauthenticated,
        }
    }

    fn authenticated(&mut self) {
        let m = &self.shared.metrics.connections_open;
        m.get_or_create(&StateLabel { state: self.state }).dec();
        self.state = ConnectionState::Authenticated;
        m.get_or_create(&StateLabel { state: self.state }).inc();
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.shared
            .websockets
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.shared
            .metrics
            .connections_open
            .get_or_create(&StateLabel { state: self.state })
            .dec();
    }
}

/// What the reader decided after one frame.
enum Flow {
    Continue,
    /// Close with this code after what is queued (errors reach the client first).
    Close(u16, String),
}

struct Connection {
    shared: Arc<Services>,
    conn_id: u64,
    peer: SocketAddr,
    /// The socket's local address and whether it is TLS, for origin binding (§3).
    local: SocketAddr,
    tls: bool,
    /// The TLS 1.3 exporter of this connection (RFC 9266), for channel binding
    /// (§3); None without TLS 1.3. Filled in by the transport.
    channel_binding: Option<[u8; 32]>,
    /// Held until authentication (the per-address pre-auth cap).
    preauth: Option<AddressToken>,
    /// The `--max-connections` slot, held until the connection ends.
    _slot: OwnedSemaphorePermit,
    /// The inbound message limit the gate enforces (raised after authentication).
    gate_limit: Arc<GateLimit>,
    outbox: Outbox,
    urgent: watch::Sender<Option<CloseRequest>>,
    /// Challenge and deadline of the authentication phase (see [`auth_phase`]).
    auth: auth_phase::AuthPhase,
    identity: Option<(Identity, ClientHandle)>,
    /// Sessions this connection is attached to (a few at most: a vector, not a
    /// tree whose first node alone is ~200 bytes).
    attached: Vec<Arc<str>>,
    limiter: DefaultDirectRateLimiter,
    refused_in_window: u32,
    window_started: Instant,
    /// When the last `rate_limited` error was sent (at most one a second, §2).
    last_rate_error: Option<Instant>,
    last_rx: Instant,
    health: Health,
    gauge: OpenGauge,
}

/// The read half of a connection's WebSocket.
type ReadHalf = SplitStream<WsStream>;

/// Serve one upgraded HTTP connection as a WebSocket until it closes. The
/// transport's slot is held until then.
///
/// Why the split into [`open`] and [`Running::run`]: an async fn keeps room for
/// its arguments, and for every local that is borrowed across an await, in each
/// of its suspended states, for as long as it lives. Built inline, the codec,
/// the writer's future before its spawn and the transport stayed inside every
/// idle connection's future (4.2 KiB, `-Zprint-type-sizes`). [`open`] builds all
/// of it in its own boxed future, freed once the connection runs; the long-lived
/// future holds a pointer to [`Running`] and the waits of one select.
pub fn serve_upgraded(
    upgraded: hyper::upgrade::Upgraded,
    transport: Transport,
    shared: Arc<Services>,
) -> impl Future<Output = ()> + Send {
    let conn_id = shared.next_conn_id();
    let span = tracing::info_span!(
        "conn",
        conn_id,
        peer = %transport.peer,
        client_id = tracing::field::Empty,
        fingerprint = tracing::field::Empty,
    );
    // Not an async fn: its arguments would stay in the connection's future for
    // its whole life. This block holds a pointer and the span.
    let opening = Box::pin(open(upgraded, transport, shared, conn_id));
    async move {
        let (running, stream) = opening.instrument(span.clone()).await;
        let task = Box::pin(running.run(stream));
        tracing::debug!(
            parent: &span,
            conn_task_bytes = std::mem::size_of_val(&*task),
            "connection task size"
        );
        task.instrument(span).await;
    }
}

/// A connection past its setup: everything its run loop works on but the read
/// half of the socket.
struct Running {
    conn: Connection,
    writer: tokio::task::JoinHandle<(WriterEnd, writer::Sink)>,
    /// Makes the writer flush what tungstenite queued itself (a pong).
    flush: Arc<Notify>,
    keys: watch::Receiver<Arc<auth::KeySet>>,
    heartbeat: tokio::time::Interval,
}

/// Wrap the upgraded I/O in the gate and the codec, start the writer, send the
/// challenge.
async fn open(
    upgraded: hyper::upgrade::Upgraded,
    transport: Transport,
    shared: Arc<Services>,
    conn_id: u64,
) -> (Box<Running>, ReadHalf) {
    let config = shared.config.clone();
    // Every byte of a message being received is counted on this connection's
    // account, like its outbound queue.
    let account = shared.memory.queue();
    let limit = GateLimit::new(PRE_AUTH_MAX_FRAME_BYTES);
    let out = gate::OutBuf::new();
    let io = Gate::new(
        TokioIo::new(upgraded),
        limit.clone(),
        account.clone(),
        out.clone(),
    );
    let codec = wslayer::codec_config(
        config.max_frame_bytes,
        // Outbound frames can be as large as an agent line (32 MiB) plus its envelope.
        crate::agent::process::MAX_LINE_BYTES + 16 * 1024 * 1024,
    );
    let socket = wslayer::server_stream(io, codec).await;
    shared.metrics.connections_accepted.inc();
    tracing::debug!("connection open");
    let Transport {
        peer,
        local,
        tls,
        channel_binding,
        slot,
        preauth,
    } = transport;
    let (sink, stream) = socket.split();
    let (outbox, rx) = Outbox::with_account(config.client_queue, account);
    let (urgent_tx, urgent_rx) = watch::channel(None);
    let flush = Arc::new(Notify::new());
    let writer = Writer {
        sink,
        out,
        rx,
        urgent: urgent_rx,
        lagging: outbox.lagging().clone(),
        shed: outbox.account().shed().clone(),
        flush: flush.clone(),
        ping_interval: config.ping_interval,
        metrics: shared.metrics.clone(),
        last_seq: Default::default(),
    }
    .run();
    // Task sizes are per-connection memory held for the connection's lifetime.
    let writer_task_bytes = std::mem::size_of_val(&writer);
    let writer = tokio::spawn(writer.in_current_span());

    let rate = NonZeroU32::new(config.max_frames_per_sec).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(config.max_frames_per_sec.saturating_mul(2)).unwrap_or(rate);
    let mut conn = Connection {
        auth: auth_phase::AuthPhase::new(&shared.server_id, config.auth_timeout),
        gauge: OpenGauge::new(shared.clone()),
        shared: shared.clone(),
        conn_id,
        peer,
        local,
        tls,
        channel_binding,
        preauth,
        _slot: slot,
        gate_limit: limit,
        outbox,
        urgent: urgent_tx,
        identity: None,
        attached: Vec::new(),
        limiter: RateLimiter::direct_with_clock(
            Quota::per_second(rate).allow_burst(burst),
            LIMITER_CLOCK.clone(),
        ),
        refused_in_window: 0,
        window_started: Instant::now(),
        last_rate_error: None,
        last_rx: Instant::now(),
        health: Health::Healthy,
    };
    tracing::debug!(
        writer_task_bytes,
        connection_bytes = std::mem::size_of::<Connection>(),
        ws_bytes = std::mem::size_of::<WsStream>(),
        auth_bytes = std::mem::size_of::<auth_phase::AuthPhase>(),
        limiter_bytes = std::mem::size_of::<DefaultDirectRateLimiter>(),
        queue_slot_bytes = std::mem::size_of::<crate::session::outbox::Queued>(),
        "writer started"
    );
    conn.send_challenge();

    let check_every = config.ping_interval / HEARTBEAT_CHECKS_PER_PING;
    let mut heartbeat = tokio::time::interval(check_every.max(Duration::from_millis(50)));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let running = Box::new(Running {
        conn,
        writer,
        flush,
        keys: shared.keys.subscribe(),
        heartbeat,
    });
    (running, stream)
}

impl Running {
    /// Read and act until the connection closes, then let the writer finish.
    /// Fields are used in place: moving them into locals would give this
    /// long-lived future a second copy of them.
    async fn run(mut self: Box<Self>, mut stream: ReadHalf) {
        let this = &mut *self;
        let shared = this.conn.shared.clone();
        let shutdown = shared.conn_shutdown.clone();
        let mut writer_done = None;
        let close_reason = loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    let r = shared.shutdown_close();
                    this.conn.urgent_close(r.code, &r.reason);
                    break ClosedReason::Shutdown;
                }
                end = &mut this.writer => {
                    this.conn.health = Health::Closing;
                    let reason = match &end {
                        Ok((WriterEnd::Closed { code: close_code::LAGGING, .. }, _)) => ClosedReason::Lagging,
                        Ok((WriterEnd::Closed { code: close_code::SHED, .. }, _)) => ClosedReason::Shed,
                        Ok((WriterEnd::Closed { .. }, _)) => ClosedReason::Closed,
                        _ => ClosedReason::Broken,
                    };
                    writer_done = Some(end);
                    break reason;
                }
                wake = this.conn.auth.wait(), if this.conn.identity.is_none() => {
                    let end = this.conn.on_auth_wake(wake);
                    // An allowed pair request authenticates here.
                    this.conn.after_auth_step();
                    if let Some(reason) = end {
                        break reason;
                    }
                }
                changed = this.keys.changed(), if this.conn.identity.is_some() => {
                    if changed.is_ok() && !this.conn.still_authorized() {
                        this.conn.error(None, ErrorCode::Forbidden, "your key is no longer authorized");
                        this.conn.ordered_close(close_code::POLICY, "key revoked");
                        break ClosedReason::Revoked;
                    }
                }
                _ = this.heartbeat.tick() => {
                    if let Some(reason) = this.conn.heartbeat() {
                        this.conn.urgent_close(close_code::NORMAL, reason);
                        break ClosedReason::Idle;
                    }
                    if this.conn.identity.is_some() && !this.conn.still_authorized() {
                        this.conn.error(None, ErrorCode::Forbidden, "your key is no longer authorized");
                        this.conn.ordered_close(close_code::POLICY, "key expired");
                        break ClosedReason::Revoked;
                    }
                }
                msg = stream.next() => {
                    this.conn.last_rx = Instant::now();
                    // Boxed: the frame handling's state (requests, session commands)
                    // exists only while a frame is handled, not in every idle task.
                    let flow = Box::pin(this.conn.on_message(msg, &this.flush)).await;
                    this.conn.after_auth_step();
                    match flow {
                        Flow::Continue => {}
                        Flow::Close(code, reason) => {
                            this.conn.ordered_close(code, &reason);
                            // A normal close here is the client's (close frame, EOF or read error).
                            break if code == close_code::NORMAL { ClosedReason::Client } else { ClosedReason::Protocol };
                        }
                    }
                }
            }
        };
        this.conn.health = Health::Closing;
        tracing::debug!(reason = close_reason.as_str(), health = ?this.conn.health, "connection closing");
        // Give the writer the close grace (plus a little) to deliver what is queued.
        let ended = match writer_done {
            Some(end) => Some(end),
            None => Box::pin(this.writer_grace()).await,
        };
        this.conn.leave_sessions();
        // The close frame is out: end the write side, then read (and drop) what the
        // client still sends for a moment, so the close is not lost to a reset.
        if let Some(Ok((WriterEnd::Closed { .. }, sink))) = ended
            && let Ok(ws) = sink.reunite(stream)
        {
            Box::pin(drain(ws.into_inner())).await;
        }
        shared
            .metrics
            .connections_closed
            .get_or_create(&ClosedLabel {
                reason: close_reason,
            })
            .inc();
        tracing::info!(reason = close_reason.as_str(), "connection closed");
    }

    /// Wait for the writer's end for at most its close grace (plus a little).
    async fn writer_grace(
        &mut self,
    ) -> Option<Result<(WriterEnd, writer::Sink), tokio::task::JoinError>> {
        let grace = writer::CLOSE_GRACE + Duration::from_millis(500);
        match tokio::time::timeout(grace, &mut self.writer).await {
            Ok(end) => Some(end),
            Err(_) => {
                self.writer.abort();
                None
            }
        }
    }
}

/// Shut the write side down and discard input until EOF or [`CLOSE_DRAIN`].
async fn drain(io: wslayer::Io) {
    let mut io: TokioIo<hyper::upgrade::Upgraded> = io.into_inner();
    let _ = tokio::time::timeout(CLOSE_DRAIN, async {
        if io.shutdown().await.is_err() {
            return;
        }
        let mut scratch = [0u8; 1024];
        while let Ok(n) = io.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

impl Connection {
    /// Transport bookkeeping after each frame or auth-phase wake-up: once
    /// authenticated, the per-address pre-auth token is released and the normal
    /// message limit applies.
    fn after_auth_step(&mut self) {
        if self.identity.is_some() && self.preauth.is_some() {
            self.preauth = None;
            self.gate_limit.set(self.shared.config.max_frame_bytes);
        }
    }

    fn error(&self, id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) {
        self.send_error(ProtocolError::new(code, message).with_id(id));
    }

    fn send_error(&self, err: ProtocolError) {
        self.shared.metrics.error_sent(err.code);
        let _ = self.outbox.frame(FrameType::Error, err.to_frame());
    }

    fn reply(&self, kind: FrameType, msg: ServerMsg) {
        let _ = self.outbox.frame(kind, msg.to_json());
    }

    /// Close after everything queued so far.
    fn ordered_close(&self, code: u16, reason: &str) {
        let queued = self.outbox.push(Outbound::Close {
            code,
            reason: reason.to_string(),
        });
        if queued.is_err() {
            self.urgent_close(code, reason);
        }
    }

    /// Close now, skipping whatever is queued.
    fn urgent_close(&self, code: u16, reason: &str) {
        let _ = self.urgent.send(Some(CloseRequest {
            code,
            reason: reason.to_string(),
        }));
    }

    fn count_auth(&self, result: AuthResult, key_type: &str) {
        self.shared
            .metrics
            .auth_attempts
            .get_or_create(&AuthLabels {
                result,
                key_type: key_type.to_string(),
            })
            .inc();
    }

    /// Healthy / stale / closing bookkeeping. Returns a close reason on idle timeout.
    fn heartbeat(&mut self) -> Option<&'static str> {
        let quiet = self.last_rx.elapsed();
        let config = &self.shared.config;
        if quiet >= config.idle_timeout {
            self.health = Health::Closing;
            tracing::info!(
                quiet_ms = quiet.as_millis() as u64,
                "nothing received within the idle timeout: closing"
            );
            return Some("idle timeout");
        }
        let health = if quiet > config.ping_interval {
            Health::Stale
        } else {
            Health::Healthy
        };
        if health != self.health {
            tracing::debug!(from = ?self.health, to = ?health, quiet_ms = quiet.as_millis() as u64, "connection health");
            self.health = health;
        }
        None
    }

    fn still_authorized(&self) -> bool {
        let Some((identity, _)) = &self.identity else {
            return true;
        };
        let keys = self.shared.keys.current();
        match keys.authorize(&identity.public_key, self.peer.ip(), SystemTime::now()) {
            Ok((role, _)) if role == identity.role => true,
            Ok(_) => {
                tracing::warn!("key role changed in the key files: closing");
                false
            }
            Err(e) => {
                tracing::warn!(reason = %e, "key no longer authorized: closing");
                false
            }
        }
    }

    async fn on_message(
        &mut self,
        msg: Option<Result<Message, tungstenite::Error>>,
        flush: &Notify,
    ) -> Flow {
        let authed = self.identity.is_some();
        // Every frame a client sends counts against its rate once authenticated,
        // control and binary frames included (docs/protocol.md §7.3).
        if authed
            && matches!(
                &msg,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_)))
            )
            && !self.admit_frame(None)
        {
            return self.refused_flow();
        }
        let text = match msg {
            None => return Flow::Close(close_code::NORMAL, String::new()),
            Some(Err(e)) => return self.on_read_error(e),
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Frame(_))) => return Flow::Continue,
            Some(Ok(Message::Binary(_))) => {
                self.count_frame(FrameIn::Binary);
                self.error(
                    None,
                    ErrorCode::BadMessage,
                    "binary frames are not part of the protocol; send JSON text frames",
                );
                return if authed {
                    Flow::Continue
                } else {
                    Flow::Close(
                        close_code::POLICY,
                        "binary frame before authentication".into(),
                    )
                };
            }
            Some(Ok(Message::Ping(_))) => {
                // tungstenite queued the pong; make the writer flush it now.
                flush.notify_one();
                return Flow::Continue;
            }
            Some(Ok(Message::Pong(_))) => return Flow::Continue,
            Some(Ok(Message::Close(_))) => return Flow::Close(close_code::NORMAL, String::new()),
        };
        if !authed && text.len() > PRE_AUTH_MAX_FRAME_BYTES {
            self.count_frame(FrameIn::TooLarge);
            tracing::info!(
                bytes = text.len(),
                "frame over the pre-authentication limit"
            );
            self.urgent_close(close_code::TOO_BIG, "frame too large before authentication");
            return Flow::Close(close_code::TOO_BIG, "frame too large".into());
        }
        if authed && !self.admit_frame(Some(&text)) {
            return self.refused_flow();
        }
        let inbound = match parse_request(&text) {
            Ok(inbound) => inbound,
            Err(err) => return self.on_bad_frame(err),
        };
        self.count_frame(FrameIn::Request(inbound.request.request_type()));
        if authed {
            self.on_request(inbound).await;
            Flow::Continue
        } else {
            self.on_auth_phase(inbound).await
        }
    }

    fn count_frame(&self, kind: FrameIn) {
        self.shared.metrics.frame_in(kind);
    }

    /// After a refused frame: keep going, or close when the abuse is sustained.
    fn refused_flow(&self) -> Flow {
        if self.abusive() {
            tracing::warn!("sustained rate-limit abuse: closing");
            Flow::Close(close_code::POLICY, "rate limit abuse".into())
        } else {
            Flow::Continue
        }
    }

    fn on_read_error(&mut self, e: tungstenite::Error) -> Flow {
        let too_big = match &e {
            tungstenite::Error::Capacity(_) => true,
            tungstenite::Error::Io(io) => gate::is_oversize(io),
            _ => false,
        };
        if too_big {
            self.count_frame(FrameIn::TooLarge);
            tracing::info!(error = %e, "frame over the size limit");
            self.urgent_close(close_code::TOO_BIG, "frame too large");
            return Flow::Close(close_code::TOO_BIG, "frame too large".into());
        }
        tracing::debug!(error = %e, "read failed");
        self.urgent_close(close_code::NORMAL, "");
        Flow::Close(close_code::NORMAL, String::new())
    }

    /// A frame that did not parse. Before authentication every such error closes (§1).
    fn on_bad_frame(&mut self, err: ProtocolError) -> Flow {
        self.count_frame(FrameIn::Invalid);
        if self.identity.is_none() {
            // A pre-authentication protocol error costs the address a unit of its budget (§3).
            self.shared.throttle.record_failure(self.peer.ip());
            let err = match err.code {
                ErrorCode::UnknownType => ProtocolError::new(
                    ErrorCode::NotAuthenticated,
                    "authenticate first: answer the challenge with auth.response",
                )
                .with_id(err.id),
                _ => err,
            };
            self.send_error(err);
            return Flow::Close(
                close_code::POLICY,
                "protocol error before authentication".into(),
            );
        }
        if err.code == ErrorCode::UnknownType {
            tracing::warn!(error = %err, "unknown message type");
        } else {
            tracing::debug!(error = %err, "bad frame");
        }
        self.send_error(err);
        Flow::Continue
    }

    /// Count one frame against the rate limit; false when it is refused (the
    /// `rate_limited` error echoes the frame's id when it has a valid one).
    fn admit_frame(&mut self, text: Option<&str>) -> bool {
        if self.limiter.check().is_ok() {
            return true;
        }
        if self.window_started.elapsed() > ABUSE_WINDOW {
            self.window_started = Instant::now();
            self.refused_in_window = 0;
        }
        self.refused_in_window += 1;
        self.shared.metrics.rate_limited.inc();
        if self
            .last_rate_error
            .is_some_and(|t| t.elapsed() < RATE_ERROR_EVERY)
        {
            // Other refused frames are dropped without a reply (§2).
            return false;
        }
        self.last_rate_error = Some(Instant::now());
        self.error(
            text.and_then(ccrelay_protocol::peek_request_id),
            ErrorCode::RateLimited,
            format!(
                "more than {} frames per second; slow down",
                self.shared.config.max_frames_per_sec
            ),
        );
        false
    }

    fn abusive(&self) -> bool {
        let allowed_in_window =
            self.shared.config.max_frames_per_sec as u64 * ABUSE_WINDOW.as_secs();
        self.refused_in_window as u64 > ABUSE_FACTOR as u64 * allowed_in_window
    }

    /// `session.list` (`detailed`, with §4.1's fields for this connection's role)
    /// or `auth.ok`'s short list.
    fn session_summaries(&self, detailed: bool) -> Vec<SessionSummary> {
        let role = match &self.identity {
            Some((identity, _)) => identity.role,
            None => auth::Role::Viewer,
        };
        self.shared
            .sessions
            .entries()
            .iter()
            .map(|e| {
                if detailed {
                    return e.summary(role);
                }
                SessionSummary {
                    session: e.name().to_string(),
                    state: e.handle.status().state.as_str().into(),
                    head: None,
                    clients: None,
                    details: None,
                }
            })
            .collect()
    }

    async fn on_request(&mut self, inbound: Inbound) {
        let Inbound { id, request } = inbound;
        let Some((_, client)) = &self.identity else {
            return;
        };
        let client = client.clone();
        let (session_name, cmd) = match request {
            ClientRequest::AuthResponse { .. } => {
                tracing::warn!("second auth.response on an authenticated connection");
                self.error(id, ErrorCode::AuthFailed, "authentication failed");
                self.ordered_close(close_code::POLICY, "authentication failed");
                return;
            }
            ClientRequest::Ping => {
                self.reply(FrameType::Pong, ServerMsg::Pong { id });
                return;
            }
            ClientRequest::PairRespond {
                pair_id,
                allow,
                role,
                block,
            } => {
                self.on_pair_respond(id, pair_id, allow, role, block).await;
                return;
            }
            ClientRequest::PairInvite {
                role,
                expires_in_ms,
            } => {
                self.on_pair_invite(id, role, expires_in_ms);
                return;
            }
            ClientRequest::PairRequest { .. } => {
                self.error(
                    id,
                    ErrorCode::BadMessage,
                    "this connection is already authenticated",
                );
                return;
            }
            ClientRequest::KeysList => {
                self.on_keys_list(id).await;
                return;
            }
            ClientRequest::KeysRename {
                fingerprint,
                device,
            } => {
                self.on_keys_rename(id, fingerprint, device).await;
                return;
            }
            ClientRequest::KeysRevoke { fingerprint } => {
                self.on_keys_revoke(id, fingerprint).await;
                return;
            }
            ClientRequest::ClientVisible { visible } => {
                // Viewers may report it too; they never have subscriptions.
                self.shared.notify.visibility.report(
                    self.conn_id,
                    &client.info.fingerprint,
                    visible,
                    self.attached.iter().cloned(),
                );
                self.reply(FrameType::Ok, ServerMsg::ok(id));
                return;
            }
            ClientRequest::PushSubscribe { subscription } => {
                self.on_push_subscribe(id, subscription).await;
                return;
            }
            ClientRequest::PushUnsubscribe { endpoint } => {
                self.on_push_unsubscribe(id, endpoint).await;
                return;
            }
            ClientRequest::SessionCreate(create) => {
                self.on_session_create(id, create).await;
                return;
            }
            ClientRequest::SessionClose {
                session,
                remove_worktree,
            } => {
                self.on_session_close(id, session, remove_worktree).await;
                return;
            }
            ClientRequest::SessionRename { session, title } => {
                self.on_session_rename(id, session, title).await;
                return;
            }
            ClientRequest::DirsList { path } => {
                self.on_dirs_list(id, path).await;
                return;
            }
            ClientRequest::ConversationsList {
                workdir,
                limit,
                before,
            } => {
                self.on_conversations_list(id, workdir, limit, before).await;
                return;
            }
            ClientRequest::FilesStatus { session } => {
                self.on_files_status(id, session).await;
                return;
            }
            ClientRequest::FilesDiff {
                session,
                path,
                base,
            } => {
                self.on_files_diff(id, session, path, base).await;
                return;
            }
            ClientRequest::FilesList { session, path } => {
                self.on_files_list(id, session, path).await;
                return;
            }
            ClientRequest::FileUpload {
                session,
                name,
                data,
            } => {
                self.on_file_upload(id, session, name, data).await;
                return;
            }
            ClientRequest::FilesRead {
                session,
                path,
                offset,
                max_bytes,
            } => {
                self.on_files_read(id, session, path, offset, max_bytes)
                    .await;
                return;
            }
            ClientRequest::SessionList => {
                self.reply(
                    FrameType::SessionList,
                    ServerMsg::SessionList {
                        id,
                        sessions: self.session_summaries(true),
                    },
                );
                return;
            }
            ClientRequest::Attach {
                session,
                start,
                uid: Some(uid),
            } if !self.shared.sessions.has_uid(&session, &uid) => {
                // The name now belongs to another session (or none): never
                // replay a different session to this client (docs/protocol.md §4.2).
                self.error(
                    id,
                    ErrorCode::NoSuchSession,
                    format!("no session named {session:?} with uid {uid:?}"),
                );
                let _ = start;
                return;
            }
            ClientRequest::Attach { session, start, .. } => (
                session,
                SessionCmd::Attach {
                    client: client.clone(),
                    id: id.clone(),
                    start,
                },
            ),
            ClientRequest::Detach { session } => (
                session,
                SessionCmd::Detach {
                    client: client.clone(),
                    id: id.clone(),
                },
            ),
            ClientRequest::Prompt {
                session,
                content,
                key,
                steer,
                at,
            } => {
                if !self.owner_only(&id, "prompt") {
                    return;
                }
                let at = match at
                    .map(|text| crate::session::scheduled::parse_at(&text, SystemTime::now()))
                    .transpose()
                {
                    Ok(at) => at,
                    Err(why) => {
                        self.error(id, ErrorCode::BadMessage, why.to_string());
                        return;
                    }
                };
                let bytes = content.0.get().len();
                if bytes > self.shared.config.max_prompt_bytes {
                    self.error(
                        id,
                        ErrorCode::TooLarge,
                        format!(
                            "the prompt is {bytes} bytes; the limit is {}",
                            self.shared.config.max_prompt_bytes
                        ),
                    );
                    return;
                }
                (
                    session,
                    SessionCmd::Prompt {
                        client: client.clone(),
                        id: id.clone(),
                        content,
                        key,
                        steer,
                        at,
                    },
                )
            }
            ClientRequest::Respond {
                session,
                request_id,
                response,
            } => {
                if !self.owner_only(&id, "respond") {
                    return;
                }
                (
                    session,
                    SessionCmd::Respond {
                        client: client.clone(),
                        id: id.clone(),
                        request_id,
                        response: response.0,
                    },
                )
            }
            ClientRequest::Interrupt { session } => {
                if !self.owner_only(&id, "interrupt") {
                    return;
                }
                (
                    session,
                    SessionCmd::Interrupt {
                        client: client.clone(),
                        id: id.clone(),
                    },
                )
            }
            ClientRequest::History {
                session,
                before,
                limit,
            } => (
                session,
                SessionCmd::History {
                    client: client.clone(),
                    id: id.clone(),
                    before,
                    limit,
                },
            ),
            ClientRequest::SessionSet { session, settings } => {
                if !self.owner_only(&id, "session.set") {
                    return;
                }
                let asked = match controls::check_set(settings) {
                    Ok(asked) => asked,
                    Err((code, why)) => return self.error(id, code, why),
                };
                (
                    session,
                    SessionCmd::SetSettings {
                        client: client.clone(),
                        id: id.clone(),
                        asked,
                    },
                )
            }
            ClientRequest::SessionCatalog { session } => (
                session,
                SessionCmd::Catalog {
                    client: client.clone(),
                    id: id.clone(),
                },
            ),
            ClientRequest::SessionUsage { session } => (
                session,
                SessionCmd::Usage {
                    client: client.clone(),
                    id: id.clone(),
                },
            ),
            ClientRequest::PromptCancel { session, prompt_id } => {
                if !self.owner_only(&id, "prompt.cancel") {
                    return;
                }
                (
                    session,
                    SessionCmd::CancelPrompt {
                        client: client.clone(),
                        id: id.clone(),
                        prompt_id,
                    },
                )
            }
            ClientRequest::SessionRestart { session } => {
                if !self.owner_only(&id, "session.restart") {
                    return;
                }
                (
                    session,
                    SessionCmd::Restart {
                        client: client.clone(),
                        id: id.clone(),
                    },
                )
            }
        };
        let Some(handle) = self.shared.sessions.get(&session_name) else {
            self.error(
                id,
                ErrorCode::NoSuchSession,
                format!("no session named {session_name:?}"),
            );
            return;
        };
        let attachments_changed = match &cmd {
            SessionCmd::Attach { .. } => {
                if !self.attached.contains(&handle.name) {
                    self.attached.push(handle.name.clone());
                }
                true
            }
            SessionCmd::Detach { .. } => {
                self.attached.retain(|name| name != &handle.name);
                true
            }
            _ => false,
        };
        if attachments_changed {
            self.shared
                .notify
                .visibility
                .sessions_changed(self.conn_id, self.attached.iter().cloned());
        }
        if handle.send(cmd).await.is_err() {
            self.error(
                id,
                ErrorCode::AgentUnavailable,
                format!("session {session_name} has stopped"),
            );
        }
    }

    fn owner_only(&self, id: &Option<RequestId>, what: &str) -> bool {
        match &self.identity {
            Some((identity, _)) if identity.role == auth::Role::Owner => true,
            _ => {
                self.error(
                    id.clone(),
                    ErrorCode::Forbidden,
                    format!("viewer keys may not send {what}"),
                );
                false
            }
        }
    }

    fn leave_sessions(&self) {
        self.shared.notify.visibility.gone(self.conn_id);
        self.shared.sessions.unwatch(self.conn_id);
        for name in &self.attached {
            if let Some(handle) = self.shared.sessions.get(name) {
                handle.leave(self.conn_id);
            }
        }
    }
}
