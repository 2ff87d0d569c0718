//! Accepting TCP connections and serving HTTP on each, with what a connection
//! may cost before it authenticates.
//!
//! Owns: the accept loop (over the server's `GuardedListener`, which keeps its
//! accept-error back-off), TCP_NODELAY, the optional TLS handshake (through the
//! [`stream::TlsAcceptor`] hook), the request-head deadline ([`HEAD_TIMEOUT`] from
//! the TCP accept, TLS handshake included), and what each connection holds from
//! its accept on: a `--max-connections` slot and a per-address "not yet
//! authenticated" token ([`preauth`]). A connection without them is still served
//! HTTP (health, metrics) but its upgrade is refused when its head arrives
//! (PROTOCOL.md §1). The handler takes both over when it upgrades; the connection
//! releases the token when it authenticates.
//! Must not: decide admission rules beyond the two counts (server), or parse
//! WebSocket frames (ws, connection).

pub mod fdlimit;
pub mod preauth;
pub mod proxy;
pub mod stream;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::metrics::ReasonLabel;
use crate::server::Shared;
use preauth::PreAuthToken;
use stream::ConnStream;

/// The HTTP request head (and a TLS handshake before it) must arrive within this
/// long of the TCP accept (PROTOCOL.md §1).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an accepted upgrade may take to hand over its connection.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest HTTP request head (hyper's read buffer cap before an upgrade).
const MAX_HEAD_BYTES: usize = 32 * 1024;
/// How long in-flight HTTP requests get once the listener stops.
const HTTP_DRAIN: Duration = Duration::from_secs(1);

/// What a connection holds from its accept on, until the upgrade takes it over.
#[derive(Debug, Default)]
pub struct Held {
    /// Its `--max-connections` slot (none: the limit was reached at accept).
    pub slot: Option<OwnedSemaphorePermit>,
    /// Its place in its address's unauthenticated count (none: over the cap, or
    /// from a trusted proxy, where the count is taken per forwarded address).
    pub preauth: Option<PreAuthToken>,
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
}

impl ConnCtx {
    /// Take what the connection holds (the first upgrade does).
    pub fn take(&self) -> Held {
        self.held
            .lock()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default()
    }
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
    shared: Arc<Shared>,
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
            Counting::Counted => admit(&shared, peer),
            Counting::Uncounted => Held::default(),
        };
        conns.spawn(serve_one(
            tcp,
            peer,
            held,
            app.clone(),
            shared.clone(),
            stop.clone(),
        ));
    }
    conns.close();
    let _ = tokio::time::timeout(HTTP_DRAIN, conns.wait()).await;
}

/// What a new connection from `peer` gets: its address's token, then a slot.
/// Over the address cap it gets neither and holds only its socket.
fn admit(shared: &Arc<Shared>, peer: SocketAddr) -> Held {
    if proxy::is_trusted(peer.ip(), &shared.config.trusted_proxies) {
        // Behind a proxy the address is known only from the request head.
        return Held {
            slot: shared.slots.clone().try_acquire_owned().ok(),
            preauth: None,
        };
    }
    match shared.preauth.try_take(peer.ip()) {
        Some(token) => Held {
            slot: shared.slots.clone().try_acquire_owned().ok(),
            preauth: Some(token),
        },
        None => Held::default(),
    }
}

async fn serve_one(
    tcp: TcpStream,
    peer: SocketAddr,
    held: Held,
    app: Router,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
    // An unspecified address (never expected) matches none of the names.
    let local = tcp
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (stream, channel_binding) = match shared.tls.clone() {
        None => (ConnStream::Tcp(tcp), None),
        Some(tls) => match tokio::time::timeout_at(deadline, tls.accept(tcp)).await {
            Ok(Ok(secured)) => (secured.stream, secured.channel_binding),
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %peer, "TLS handshake not finished by the head deadline");
                count_refused(&shared, "head_timeout");
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
    });
    let svc_ctx = ctx.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        svc_ctx.head_seen.store(true, Ordering::Relaxed);
        req.extensions_mut().insert(svc_ctx.clone());
        let mut app = app.clone();
        async move { app.call(req).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .max_buf_size(MAX_HEAD_BYTES);
    let conn = builder
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let head_deadline = tokio::time::sleep_until(deadline);
    tokio::pin!(head_deadline);
    let mut deadline_passed = false;
    let mut stopping = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    if e.is_timeout() {
                        tracing::debug!(peer = %peer, "no request head within the deadline: closed");
                        count_refused(&shared, "head_timeout");
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
                    count_refused(&shared, "head_timeout");
                    break;
                }
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

fn count_refused(shared: &Shared, reason: &'static str) {
    shared
        .metrics
        .connections_refused
        .get_or_create(&ReasonLabel { reason })
        .inc();
}
