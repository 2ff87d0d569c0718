//! Accepting TCP connections and serving HTTP on each, with what a connection
//! may cost before it authenticates or while it stays plain HTTP.
//!
//! Owns: the accept loop (over [`accept::GuardedListener`], which keeps its
//! accept-error back-off), TCP_NODELAY, the optional TLS handshake (through the
//! [`stream::TlsAcceptor`] hook), the request-head deadline ([`HEAD_TIMEOUT`] from
//! the TCP accept, TLS handshake included), and the counts every connection on
//! the main listener is held in from its accept on ([`Admission`], docs/protocol.md
//! "Transport"): a `--max-connections` slot and its address's place among the
//! connections that are not yet authenticated ([`preauth`]). When its first request
//! head shows plain HTTP (anything but `/v1/ws`) it moves to its address's plain
//! HTTP place (`--max-http-per-address`) and to the share of the slots plain HTTP
//! may hold (half); over either it gets `429`/`503` and is closed. A plain
//! connection idle between requests for [`HTTP_IDLE_TIMEOUT`] is closed, and so is
//! one that has not upgraded after [`HTTP_LIFETIME`] or [`HTTP_MAX_REQUESTS`]
//! requests. A socket that gets neither a slot nor its address's place holds one
//! of a few [`Admission`] overflow places while it waits to be refused, or is
//! closed at once when those are taken: descriptors stay bounded. The WebSocket
//! handler takes the slot and the pre-authentication place over when it upgrades;
//! the connection releases the place when it authenticates.
//! Must not: decide admission rules beyond these counts (server), or parse
//! WebSocket frames (ws, connection).

pub mod accept;
pub mod fdlimit;
pub mod preauth;
pub mod proxy;
pub mod stream;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::Listener;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::address::{AddressGrouping, AddressKey};
use crate::metrics::{Metrics, RefusedReason};
use preauth::{AddressCap, AddressToken};
use stream::ConnStream;

/// The HTTP request head (and a TLS handshake before it) must arrive within this
/// long of the TCP accept (docs/protocol.md "Transport").
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an accepted upgrade may take to hand over its connection.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// An HTTP/1.1 connection with no request for this long after its last response is closed.
pub const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that has not upgraded this long after its accept is closed...
pub const HTTP_LIFETIME: Duration = Duration::from_secs(60);
/// ...and so is one that has not upgraded after this many requests (the last
/// response says `Connection: close`).
pub const HTTP_MAX_REQUESTS: u32 = 100;
/// What a response in flight at [`HTTP_LIFETIME`] gets to finish.
const HTTP_LIFETIME_GRACE: Duration = Duration::from_millis(500);
/// `Retry-After` of a plain request over its address's HTTP cap.
const HTTP_CAP_RETRY_AFTER_SECS: u64 = 2;
/// `Retry-After` of a request refused for the connection limit or the plain HTTP share.
const LIMIT_RETRY_AFTER_SECS: u64 = 1;
/// Largest HTTP request head (hyper's read buffer cap before an upgrade).
const MAX_HEAD_BYTES: usize = 32 * 1024;
/// How long in-flight HTTP requests get once the listener stops.
const HTTP_DRAIN: Duration = Duration::from_secs(1);
/// The one path that upgrades; every other request is plain HTTP.
const UPGRADE_PATH: &str = "/v1/ws";

/// The counts connections on the main listener are held in (docs/protocol.md
/// "Transport"), and what "an address" is for them.
#[derive(Debug)]
pub struct Admission {
    /// `--max-connections`, as sized against the open-files limit.
    max_connections: usize,
    slots: Arc<Semaphore>,
    /// Plain HTTP connections together hold at most half the slots, so that
    /// devices can always connect.
    http_share: Arc<Semaphore>,
    /// Sockets held with neither a slot nor their address's place, waiting for
    /// their request head to be refused. Bounded so that refusals cannot exhaust
    /// descriptors; past it a new socket is closed at once.
    overflow: Arc<Semaphore>,
    /// Connections not yet authenticated, per address.
    pub preauth: Arc<AddressCap>,
    /// Plain HTTP connections, per address.
    pub http: Arc<AddressCap>,
    grouping: AddressGrouping,
    trusted_proxies: Vec<IpNet>,
}

/// The sizes of the counts in [`Admission`].
#[derive(Debug, Clone)]
pub struct AdmissionLimits {
    pub max_connections: usize,
    /// Sockets that may wait for a refusal beyond the slots.
    pub overflow: usize,
    pub preauth_per_address: u32,
    pub http_per_address: u32,
    pub grouping: AddressGrouping,
    pub trusted_proxies: Vec<IpNet>,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Admission {
        let max_connections = limits.max_connections.max(1);
        Admission {
            max_connections,
            slots: Arc::new(Semaphore::new(max_connections)),
            http_share: Arc::new(Semaphore::new((max_connections / 2).max(1))),
            overflow: Arc::new(Semaphore::new(limits.overflow.max(1))),
            preauth: AddressCap::new(limits.preauth_per_address),
            http: AddressCap::new(limits.http_per_address),
            grouping: limits.grouping,
            trusted_proxies: limits.trusted_proxies,
        }
    }

    /// `--max-connections` in force.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// TCP connections holding a slot.
    pub fn slots_in_use(&self) -> usize {
        self.max_connections - self.slots.available_permits()
    }

    /// Plain HTTP connections holding their share.
    pub fn http_in_use(&self) -> usize {
        (self.max_connections / 2).max(1) - self.http_share.available_permits()
    }

    /// The key per-address rules count `ip` under.
    pub fn key(&self, ip: IpAddr) -> AddressKey {
        self.grouping.key(ip)
    }

    /// Whether `ip` is a `--trusted-proxy` (not capped per address: the proxy
    /// limits its own clients).
    pub fn via_proxy(&self, ip: IpAddr) -> bool {
        proxy::is_trusted(ip, &self.trusted_proxies)
    }

    /// A slot, if one is free.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// What a new connection from `peer` holds: its address's place, then a
    /// slot; without both, an overflow place. `None`: close it at once.
    fn on_accept(&self, peer: SocketAddr) -> Option<Held> {
        let via_proxy = self.via_proxy(peer.ip());
        // Behind a proxy the address is known only from the request head.
        let preauth = if via_proxy {
            None
        } else {
            self.preauth.try_take(self.key(peer.ip()))
        };
        // Over its address's cap a socket holds no slot: one address cannot take them all.
        let slot = if via_proxy || preauth.is_some() {
            self.try_slot()
        } else {
            None
        };
        let overflow = match slot {
            Some(_) => None,
            None => Some(self.overflow.clone().try_acquire_owned().ok()?),
        };
        Some(Held {
            slot,
            preauth,
            http: None,
            _overflow: overflow,
        })
    }
}

/// What a connection holds from its accept on, until the upgrade takes it over.
#[derive(Debug, Default)]
pub struct Held {
    /// Its `--max-connections` slot (none: the limit was reached, or its
    /// address was over its cap at accept).
    pub slot: Option<OwnedSemaphorePermit>,
    /// Its place in its address's unauthenticated count (none: over the cap, or
    /// from a trusted proxy, where the count is taken per forwarded address).
    pub preauth: Option<AddressToken>,
    /// Once it is plain HTTP: its share and its address's plain HTTP place.
    http: Option<HttpPlace>,
    /// Held instead of a slot while the connection waits to be refused.
    _overflow: Option<OwnedSemaphorePermit>,
}

#[derive(Debug)]
struct HttpPlace {
    _share: OwnedSemaphorePermit,
    /// None from a trusted proxy.
    _address: Option<AddressToken>,
}

/// Why a plain HTTP request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlainRefusal {
    /// Its address holds `--max-http-per-address` plain connections (429).
    AddressCap,
    /// No `--max-connections` slot (503).
    Limit,
    /// Plain HTTP holds half the slots already (503).
    Share,
}

/// One accepted connection, as request handlers see it (a request extension).
#[derive(Debug)]
pub struct ConnCtx {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The socket's local address (one of this server's names, docs/protocol.md).
    pub local: SocketAddr,
    /// RFC 9266 exporter of the TLS 1.3 session, when there is one.
    pub channel_binding: Option<[u8; 32]>,
    held: Mutex<Held>,
    head_seen: AtomicBool,
    /// Requests seen on this connection.
    requests: AtomicU32,
    /// Requests whose response is not yet written out.
    in_flight: AtomicU32,
    /// When the last response was written out (milliseconds after `born`).
    last_done_ms: AtomicU64,
    born: Instant,
}

impl ConnCtx {
    /// Take what the connection holds (the first upgrade does).
    pub fn take(&self) -> Held {
        self.held
            .lock()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default()
    }

    /// Move the connection to the plain HTTP counts (once; later requests hold them already).
    fn admit_plain(&self, admission: &Admission) -> Result<(), PlainRefusal> {
        let Ok(mut held) = self.held.lock() else {
            return Err(PlainRefusal::Limit);
        };
        if held.http.is_some() {
            return Ok(());
        }
        let address = if admission.via_proxy(self.peer.ip()) {
            None
        } else {
            Some(
                admission
                    .http
                    .try_take(admission.key(self.peer.ip()))
                    .ok_or(PlainRefusal::AddressCap)?,
            )
        };
        let slot = match held.slot.take() {
            Some(slot) => slot,
            None => admission.try_slot().ok_or(PlainRefusal::Limit)?,
        };
        let share = admission
            .http_share
            .clone()
            .try_acquire_owned()
            .map_err(|_| PlainRefusal::Share)?;
        *held = Held {
            slot: Some(slot),
            // It counts toward its address's plain HTTP cap instead now.
            preauth: None,
            http: Some(HttpPlace {
                _share: share,
                _address: address,
            }),
            _overflow: None,
        };
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// A request head arrived; returns how many this connection has seen.
    fn begin_request(self: &Arc<Self>) -> (u32, InFlight) {
        self.head_seen.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        (n, InFlight(self.clone()))
    }

    /// How long the connection has been idle between requests (`None`: before
    /// its first request, or while one is in flight).
    fn idle_for(&self) -> Option<Duration> {
        if !self.head_seen.load(Ordering::Relaxed) || self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self
            .now_ms()
            .saturating_sub(self.last_done_ms.load(Ordering::Relaxed));
        Some(Duration::from_millis(since))
    }
}

/// A request in flight until its response body is dropped (written out, or the
/// connection gone).
#[derive(Debug)]
struct InFlight(Arc<ConnCtx>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .last_done_ms
            .store(self.0.now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that marks its request done when hyper drops it.
struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What the accept loop needs from the rest of the server, and nothing more:
/// the counts connections are held in, the TLS hook, and the refusal counter.
#[derive(Debug)]
pub struct AcceptServices {
    /// `--max-connections` slots and per-address caps (docs/protocol.md §1.5).
    pub admission: Admission,
    /// Server TLS: `None` serves plain TCP. The handshake runs under the
    /// request-head deadline.
    pub tls: Option<Arc<dyn stream::TlsAcceptor>>,
    pub metrics: Arc<Metrics>,
}

/// Whether connections on a listener are counted (the main listener) or not
/// (a separate metrics listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    Counted,
    Uncounted,
}

/// Accept and serve until `stop`; then give in-flight requests a moment.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    accept: Arc<AcceptServices>,
    counting: Counting,
    stop: CancellationToken,
) where
    L: Listener<Io = TcpStream, Addr = SocketAddr>,
{
    let conns = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let held = match counting {
            Counting::Counted => match accept.admission.on_accept(peer) {
                Some(held) => held,
                None => {
                    // Neither a slot nor an overflow place: the socket is dropped
                    // unanswered, which is all the server can afford now.
                    tracing::debug!(peer = %peer, "no place to wait for a refusal: closed at accept");
                    count_refused(&accept, RefusedReason::Overflow);
                    continue;
                }
            },
            Counting::Uncounted => Held::default(),
        };
        conns.spawn(serve_one(
            tcp,
            peer,
            held,
            app.clone(),
            accept.clone(),
            counting,
            stop.clone(),
        ));
    }
    conns.close();
    let _ = tokio::time::timeout(HTTP_DRAIN, conns.wait()).await;
}

async fn serve_one(
    tcp: TcpStream,
    peer: SocketAddr,
    held: Held,
    app: Router,
    accept: Arc<AcceptServices>,
    counting: Counting,
    stop: CancellationToken,
) {
    let accepted = Instant::now();
    let deadline = accepted + HEAD_TIMEOUT;
    // An unspecified address (never expected) matches none of the names.
    let local = tcp
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (stream, channel_binding) = match accept.tls.clone() {
        None => (ConnStream::Tcp(tcp), None),
        Some(tls) => match tokio::time::timeout_at(deadline, tls.accept(tcp)).await {
            Ok(Ok(secured)) => (secured.stream, secured.channel_binding),
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %peer, "TLS handshake not finished by the head deadline");
                count_refused(&accept, RefusedReason::HeadTimeout);
                return;
            }
        },
    };
    let ctx = Arc::new(ConnCtx {
        peer,
        local,
        channel_binding,
        held: Mutex::new(held),
        head_seen: AtomicBool::new(false),
        requests: AtomicU32::new(0),
        in_flight: AtomicU32::new(0),
        last_done_ms: AtomicU64::new(0),
        born: accepted,
    });
    let svc_ctx = ctx.clone();
    let svc_gate = accept.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let ctx = svc_ctx.clone();
        let accept = svc_gate.clone();
        let mut app = app.clone();
        async move {
            let (n, in_flight) = ctx.begin_request();
            let plain = req.uri().path() != UPGRADE_PATH;
            let refused = match counting {
                Counting::Counted if plain => ctx.admit_plain(&accept.admission).err(),
                _ => None,
            };
            let mut response = match refused {
                Some(refusal) => refuse_plain(&accept, &ctx, refusal),
                None => {
                    req.extensions_mut().insert(ctx.clone());
                    match app.call(req).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                }
            };
            if n >= HTTP_MAX_REQUESTS {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(deadline.saturating_duration_since(Instant::now()))
        .max_buf_size(MAX_HEAD_BYTES);
    let conn = builder
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let head_deadline = tokio::time::sleep_until(deadline);
    tokio::pin!(head_deadline);
    let idle_check = tokio::time::sleep_until(accepted + HTTP_IDLE_TIMEOUT);
    tokio::pin!(idle_check);
    let lifetime = tokio::time::sleep_until(accepted + HTTP_LIFETIME);
    tokio::pin!(lifetime);
    let mut deadline_passed = false;
    let mut closing = false;
    let mut stopping = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    if e.is_timeout() {
                        tracing::debug!(peer = %peer, "no request head within the deadline: closed");
                        count_refused(&accept, RefusedReason::HeadTimeout);
                    } else {
                        tracing::debug!(peer = %peer, error = %e, "HTTP connection ended with an error");
                    }
                }
                break;
            }
            _ = &mut head_deadline, if !deadline_passed => {
                deadline_passed = true;
                if !ctx.head_seen.load(Ordering::Relaxed) {
                    tracing::debug!(peer = %peer, "no request head within the deadline: closed");
                    count_refused(&accept, RefusedReason::HeadTimeout);
                    break;
                }
            }
            _ = &mut idle_check => {
                match ctx.idle_for() {
                    Some(idle) if idle >= HTTP_IDLE_TIMEOUT => {
                        tracing::debug!(peer = %peer, "idle between requests: closed");
                        break;
                    }
                    Some(idle) => idle_check.as_mut().reset(Instant::now() + (HTTP_IDLE_TIMEOUT - idle)),
                    None => idle_check.as_mut().reset(Instant::now() + HTTP_IDLE_TIMEOUT),
                }
            }
            _ = &mut lifetime => {
                if closing {
                    tracing::debug!(peer = %peer, "response still in flight past the connection's lifetime: closed");
                    break;
                }
                tracing::debug!(peer = %peer, requests = ctx.requests.load(Ordering::Relaxed), "not upgraded within its lifetime: closing");
                closing = true;
                conn.as_mut().graceful_shutdown();
                lifetime.as_mut().reset(Instant::now() + HTTP_LIFETIME_GRACE);
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                if !closing {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The answer to a plain HTTP request over a count; the connection closes after it.
fn refuse_plain(accept: &AcceptServices, ctx: &ConnCtx, refusal: PlainRefusal) -> Response {
    let admission = &accept.admission;
    let (status, reason, body, retry_after) = match refusal {
        PlainRefusal::AddressCap => (
            StatusCode::TOO_MANY_REQUESTS,
            RefusedReason::HttpAddressCap,
            json!({"error": "throttled", "message": "too many plain HTTP connections from this address", "retry_after_s": HTTP_CAP_RETRY_AFTER_SECS}),
            HTTP_CAP_RETRY_AFTER_SECS,
        ),
        PlainRefusal::Limit => (
            StatusCode::SERVICE_UNAVAILABLE,
            RefusedReason::Limit,
            json!({"error": "overloaded", "message": "connection limit reached", "limit": admission.max_connections()}),
            LIMIT_RETRY_AFTER_SECS,
        ),
        PlainRefusal::Share => (
            StatusCode::SERVICE_UNAVAILABLE,
            RefusedReason::HttpShare,
            json!({"error": "overloaded", "message": "plain HTTP connections hold their share of the connection limit; retry later"}),
            LIMIT_RETRY_AFTER_SECS,
        ),
    };
    // Debug, not info: a flood would fill the log; the counter shows it.
    tracing::debug!(peer = %ctx.peer, reason = reason.as_str(), "plain HTTP request refused");
    count_refused(accept, reason);
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

fn count_refused(accept: &AcceptServices, reason: RefusedReason) {
    accept.metrics.refused(reason);
}
