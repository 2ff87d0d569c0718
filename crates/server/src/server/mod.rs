//! The HTTP side of the relay and its lifecycle.
//!
//! Owns: binding listeners, the listening line on stdout, admission before the
//! WebSocket upgrade (auth-failure throttle → connection limit → Origin), the
//! health, readiness and metrics endpoints, accept errors (back off and retry on
//! resource exhaustion; a listener that can no longer accept is a fatal fault),
//! the memory guard's shedder, signals, and the shutdown order:
//! stop accepting → close every client (1001, or 1011 after a fatal fault) →
//! stop agents → flush journals → exit. Must not: parse frames (connection) or
//! hold session state (session).

mod push_respond;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthThrottle, KeyStore};
use crate::config::Config;
use crate::connection;
use crate::guard::MemoryGuard;
use crate::listen::preauth::PRE_AUTH_PER_ADDRESS;
use crate::listen::stream::TlsAcceptor;
use crate::listen::{self, ConnCtx, Counting, proxy};
use crate::metrics::{self, Metrics, RefusedReason};
use crate::session::registry::RegistryConfig;
use crate::session::{AuditLog, FatalSignal, Registry, SessionShared, SessionState};

/// Why `serve` could not run or stopped badly; maps to the exit code.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is unusable (exit 2, nothing started).
    #[error("invalid value for --{setting}: {message}")]
    Config {
        setting: &'static str,
        message: String,
    },
    /// A fault while starting or running (exit 1).
    #[error(transparent)]
    Fatal(#[from] anyhow::Error),
}

impl ServeError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ServeError::Config { .. } => 2,
            ServeError::Fatal(_) => 1,
        }
    }
}

/// A fault while starting: logged here, once, with its cause chain (exit 1).
fn startup_fault(e: anyhow::Error) -> ServeError {
    tracing::error!(error = format!("{e:#}"), "cannot start");
    ServeError::Fatal(e)
}

fn config_error(setting: &'static str, message: impl Into<String>) -> ServeError {
    ServeError::Config {
        setting,
        message: message.into(),
    }
}

/// `Retry-After` of a refusal under memory pressure.
const MEMORY_RETRY_AFTER_SECS: u64 = 5;
/// The HTTP handlers' state: the connection layer's services, the accept
/// loop's services, and what only the server itself tracks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) services: Arc<connection::Services>,
    pub(crate) accept: Arc<listen::AcceptServices>,
    /// Every WebSocket connection's task, waited for at shutdown.
    connections: TaskTracker,
    started: Instant,
}

impl Shared {
    /// TCP connections holding a `--max-connections` slot.
    fn slots_in_use(&self) -> usize {
        self.accept.admission.slots_in_use()
    }
}

/// Run `ccrelay serve` until `shutdown` is cancelled (or a fatal fault), then stop
/// everything in order. Returns Ok after a clean shutdown.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServeError> {
    run_with(config, shutdown, Announce::Stdout).await
}

/// How the server tells the world it is listening.
#[derive(Debug)]
pub enum Announce {
    /// The `ccrelay listening on ws://ADDR/v1/ws` line on stdout (docs/protocol.md §8).
    Stdout,
    /// Hand the bound address to the caller (the demo, which owns the terminal).
    Channel(tokio::sync::oneshot::Sender<SocketAddr>),
}

/// [`run`], announcing the listening address as `announce` says.
pub async fn run_with(
    config: Config,
    shutdown: CancellationToken,
    announce: Announce,
) -> Result<(), ServeError> {
    let config = Arc::new(config);
    let (max_connections, overflow) = size_connections(config.max_connections);
    // Everything that can be wrong with the configuration is found before anything starts.
    let keys = KeyStore::load_files(config.key_paths().files())
        .map_err(|e| config_error(e.setting(), e.to_string()))?;
    // An agent that would refuse its own flags must not crash-loop (docs/protocol.md §10).
    if config.agent.allow_bypass {
        let agent = config.agent.clone();
        tokio::task::spawn_blocking(move || crate::agent::process::check_allow_bypass(&agent))
            .await
            .map_err(|e| ServeError::Fatal(anyhow::anyhow!("checking the agent: {e}")))?
            .map_err(|message| config_error("allow-bypass-permissions", message))?;
    }
    // Owner-only, or refused (exit 2): journals hold whole transcripts.
    crate::datadir::prepare(&config.data_dir)
        .map_err(|e| config_error("data-dir", e.to_string()))?;
    let server_id = match &config.server_id {
        Some(id) => id.clone(),
        None => load_or_create_server_id(&config.data_dir).map_err(|e| {
            config_error(
                "data-dir",
                format!(
                    "cannot keep the server id in {}: {e}",
                    config.data_dir.display()
                ),
            )
        })?,
    };
    // The certificate is loaded (or made) before anything listens: a bad pair is a
    // configuration error naming its option (exit 2).
    let tls = match &config.tls {
        Some(source) => Some(Arc::new(
            crate::tls::TlsServer::new(source.clone(), &config.data_dir)
                .map_err(|e| config_error(e.setting(), e.to_string()))?,
        )),
        None => None,
    };
    let listener = bind_listener(config.listen)
        .map_err(|e| config_error("listen", format!("cannot listen on {}: {e}", config.listen)))?;
    let metrics_listener = match config.metrics_listen {
        // Port 0 means "any free port": a separate listener even if --listen is also :0.
        Some(addr) if addr != config.listen || addr.port() == 0 => {
            Some(bind_listener(addr).map_err(|e| {
                config_error("metrics-listen", format!("cannot listen on {addr}: {e}"))
            })?)
        }
        _ => None,
    };
    let metrics_local = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let local = listener
        .local_addr()
        .map_err(|e| startup_fault(anyhow::anyhow!("listener address: {e}")))?;

    let names = server_names(&config, tls.as_deref(), &listener, local);

    let metrics = Arc::new(Metrics::new().with_process_collector());
    metrics.init_series(config.sessions.iter().map(|s| s.name.as_str()));
    metrics
        .memory_limit
        .set(i64::try_from(config.memory_limit).unwrap_or(i64::MAX));
    let memory = MemoryGuard::new(config.memory_limit);
    // The VAPID key is made once and must stay: a key file that cannot be read
    // is a data-dir error (exit 2), never silently replaced.
    let mut push_config = crate::notify::webpush::WebPushConfig::new(
        &config.data_dir,
        config.push_allow_insecure_endpoints,
    );
    push_config.subject = config.push_subject.clone();
    let push = crate::notify::webpush::WebPush::open(&push_config, metrics.clone())
        .map_err(|e| config_error("data-dir", format!("Web Push: {e}")))?;
    let audit = Arc::new(
        AuditLog::open(&config.data_dir)
            .map_err(|e| config_error("data-dir", format!("cannot open the audit log: {e}")))?,
    );
    let fatal = FatalSignal::default();
    // Before the sessions, which report to it.
    let notify_stop = CancellationToken::new();
    let notify = crate::notify::Notifier::start(
        config.notify.clone(),
        &config.data_dir,
        Some(Arc::new(push.clone())),
        keys.subscribe(),
        metrics.clone(),
        notify_stop.clone(),
    )
    .map_err(|e| startup_fault(anyhow::Error::new(e)))?;
    let session_stop = CancellationToken::new();
    let session_tasks = TaskTracker::new();
    let claude_config_dir = crate::workdirs::claude_config_dir(
        std::env::var_os("CLAUDE_CONFIG_DIR"),
        crate::datadir::home_dir().as_deref(),
    );
    let roots = {
        let (given, data_dir) = (config.session_roots.clone(), config.data_dir.clone());
        let claude = claude_config_dir.clone();
        tokio::task::spawn_blocking(move || {
            let home = crate::datadir::home_dir();
            let excluded = std::iter::once(data_dir).chain(claude).collect();
            crate::workdirs::Roots::new(given, excluded, home)
        })
        .await
        .map_err(|e| startup_fault(anyhow::anyhow!("resolving the session roots panicked: {e}")))?
        .map_err(|e| config_error(crate::config::settings::SESSION_ROOT.name, e.to_string()))?
    };
    let workspace = {
        let (roots, data_dir) = (config.session_roots.clone(), config.data_dir.clone());
        tokio::task::spawn_blocking(move || crate::workspace::Workspace::new(&data_dir, &roots))
            .await
            .map(Arc::new)
            .map_err(|e| {
                startup_fault(anyhow::anyhow!(
                    "preparing the workspace view panicked: {e}"
                ))
            })?
    };
    let session_shared = SessionShared {
        workspace: workspace.clone(),
        metrics: metrics.clone(),
        audit: audit.clone(),
        fatal: fatal.clone(),
        memory: memory.clone(),
        notify: notify.clone(),
        slots: crate::session::slots::AgentSlots::new(config.max_agents),
    };
    // Opening a journal reads it and may repair a torn tail on disk (set_len, fsync):
    // done on a blocking thread, never on the async workers. The actors it spawns
    // run on the runtime as usual.
    let sessions = {
        let settings = config.session_settings();
        let registry_config = RegistryConfig {
            data_dir: config.data_dir.clone(),
            max_sessions: config.max_sessions,
            closed_retention: config.closed_retention,
            // Created sessions start like the `default` session, in their own workdir.
            template: settings[0].clone(),
            claude_config_dir,
        };
        let (stop, tasks) = (session_stop.clone(), session_tasks.clone());
        tokio::task::spawn_blocking(move || {
            Registry::start(settings, registry_config, session_shared, stop, &tasks)
        })
        .await
        .map_err(|e| startup_fault(anyhow::anyhow!("opening the sessions panicked: {e}")))?
    }
    .map_err(|e| startup_fault(anyhow::Error::new(e).context("cannot open the sessions")))?;
    session_tasks.close();
    tokio::spawn(sessions.clone().sweep_periodically());

    let watcher_stop = CancellationToken::new();
    let watcher = keys.spawn_watcher(watcher_stop.clone());
    // Subscriptions follow the owner keys: a key gone from the keys files takes
    // its push subscriptions with it.
    let push_keys = push.watch_keys(&keys, watcher_stop.clone());
    let accept = Arc::new(listen::AcceptServices {
        admission: listen::Admission::new(listen::AdmissionLimits {
            max_connections,
            overflow,
            preauth_per_address: PRE_AUTH_PER_ADDRESS,
            http_per_address: config.max_http_per_address,
            grouping: config.address_grouping,
            trusted_proxies: config.trusted_proxies.clone(),
        }),
        tls: tls.clone().map(|t| t as Arc<dyn TlsAcceptor>),
        metrics: metrics.clone(),
    });
    let services = Arc::new(connection::Services {
        websockets: Default::default(),
        throttle: AuthThrottle::new(config.auth_failures_per_min)
            .with_grouping(config.address_grouping),
        verifier: crate::auth::Verifier::for_this_machine(),
        pairing: crate::pairing::Pairing::with_grouping(metrics.clone(), config.address_grouping),
        push,
        config: config.clone(),
        sessions,
        roots: Arc::new(roots),
        workspace,
        audit,
        keys,
        metrics,
        server_id,
        conn_shutdown: CancellationToken::new(),
        fatal: fatal.clone(),
        memory: memory.clone(),
        notify,
        next_conn: AtomicU64::new(0),
        names,
    });
    let shared = Arc::new(Shared {
        services,
        accept: accept.clone(),
        connections: TaskTracker::new(),
        started: Instant::now(),
    });

    let mut app = Router::new()
        .route("/v1/ws", get(ws_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/origin", get(origin_check))
        .route("/v1/push/key", get(push_key))
        .route(
            "/v1/push/respond",
            axum::routing::post(push_respond::handler),
        );
    if metrics_listener.is_none() {
        app = app.route("/metrics", get(metrics_handler));
    }
    let app = app.merge(crate::web::router()).with_state(shared.clone());
    let accept_stop = CancellationToken::new();
    let shedder = tokio::spawn(
        memory
            .clone()
            .run(shared.services.metrics.clone(), accept_stop.clone()),
    );
    let tls_stop = CancellationToken::new();
    let tls_watcher = tls.as_ref().map(|t| t.spawn_watcher(tls_stop.clone()));
    if let Some(tls) = &tls {
        tracing::info!(server_id = %shared.services.server_id, tls_fingerprint = %tls.fingerprint(), "serving TLS only (wss://, https://)");
    }
    // A separate metrics listener shares the TLS setting; without TLS it may be
    // outside loopback, in plaintext (§1), but it is worth a warning.
    if tls.is_none()
        && let Some(addr) = metrics_local
        && !addr.ip().is_loopback()
    {
        tracing::warn!(addr = %addr, "/metrics is served in plaintext outside loopback");
    }
    // Our own accept loop (`listen`): head deadline, slots and per-address
    // tokens from the TCP accept on. A broken listener raises the fatal signal
    // from inside `GuardedListener`.
    let http = tokio::spawn(listen::serve(
        listen::accept::GuardedListener::new(
            listener,
            "listen",
            shared.services.metrics.clone(),
            fatal.clone(),
        ),
        app,
        accept.clone(),
        Counting::Counted,
        accept_stop.clone(),
    ));
    let metrics_http = metrics_listener.map(|l| {
        let app = Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/healthz", get(healthz))
            .with_state(shared.clone());
        let l = listen::accept::GuardedListener::new(
            l,
            "metrics-listen",
            shared.services.metrics.clone(),
            fatal.clone(),
        );
        tokio::spawn(listen::serve(
            l,
            app,
            accept.clone(),
            Counting::Uncounted,
            accept_stop.clone(),
        ))
    });

    match announce {
        // The one line on stdout scripts rely on.
        Announce::Stdout => {
            let mut out = std::io::stdout().lock();
            let scheme = if tls.is_some() { "wss" } else { "ws" };
            let _ = writeln!(out, "ccrelay listening on {scheme}://{local}/v1/ws");
            let _ = out.flush();
            let self_signed = matches!(config.tls, Some(crate::tls::TlsSource::SelfSigned { .. }));
            let fingerprint = tls.as_ref().map(|t| t.fingerprint());
            crate::web::announce_page(
                local,
                tls.is_some(),
                fingerprint.as_deref().filter(|_| self_signed),
            );
        }
        Announce::Channel(tx) => {
            let _ = tx.send(local);
        }
    }
    tracing::info!(
        addr = %local,
        metrics_addr = %metrics_local.unwrap_or(local),
        server_id = %shared.services.server_id,
        tls_fingerprint = tls.as_ref().map(|t| t.fingerprint()),
        sessions = config.sessions.len(),
        "listening"
    );

    tokio::select! {
        _ = shutdown.cancelled() => tracing::info!("shutting down"),
        _ = fatal.token().cancelled() => {
            tracing::error!(cause = fatal.cause().unwrap_or_default(), "fatal fault: shutting down");
        }
    }

    // 1. Stop accepting.
    accept_stop.cancel();
    // 2. Close every client (each connection sends 1001, or 1011 after a fault).
    shared.services.conn_shutdown.cancel();
    shared.connections.close();
    let grace = config.shutdown_grace;
    if tokio::time::timeout(grace, shared.connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = shared.services.open_connections(),
            "connections still open after the shutdown grace; dropping them"
        );
    }
    // 3. Stop agents and flush journals.
    session_stop.cancel();
    let agent_grace = config.agent.stop_grace + Duration::from_secs(5);
    if tokio::time::timeout(agent_grace, session_tasks.wait())
        .await
        .is_err()
    {
        tracing::error!("sessions did not stop in time");
    }
    watcher_stop.cancel();
    notify_stop.cancel();
    tls_stop.cancel();
    if let Some(w) = tls_watcher {
        let _ = w.await;
    }
    let _ = watcher.await;
    let _ = push_keys.await;
    let _ = tokio::time::timeout(Duration::from_secs(1), http).await;
    let _ = shedder.await;
    if let Some(h) = metrics_http {
        let _ = tokio::time::timeout(Duration::from_secs(1), h).await;
    }
    match fatal.cause() {
        Some(cause) => Err(ServeError::Fatal(anyhow::anyhow!(cause))),
        None => {
            tracing::info!("stopped cleanly");
            Ok(())
        }
    }
}

/// `GET /v1/push/key` (docs/protocol.md §9.1.1): the VAPID public key a browser subscribes with.
async fn push_key(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(json!({"vapid_public_key": shared.services.push.public_key()})).into_response()
}

/// A stable server id, generated once and kept in the data dir.
fn load_or_create_server_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("server_id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    let mut bytes = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    crate::datadir::write_atomic(&path, format!("{id}\n"))?;
    Ok(id)
}

/// Whole seconds for Retry-After, rounded up so a client that obeys it is not refused again.
fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_millis().div_ceil(1000).max(1) as u64
}

fn refuse(
    shared: &Shared,
    status: StatusCode,
    reason: RefusedReason,
    body: Value,
    retry_after: Option<u64>,
) -> Response {
    shared.services.metrics.refused(reason);
    let mut response = (status, axum::Json(body)).into_response();
    // What the connection held was given up with this refusal: end it.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    response
}

/// Raise the open-files limit and lower `--max-connections` when the limit
/// cannot hold that many connections (logged once, clearly). Also returns how
/// many sockets may wait for a refusal beyond the connections.
fn size_connections(configured: usize) -> (usize, usize) {
    let Some(nofile) = listen::fdlimit::raise_nofile() else {
        return (configured, listen::fdlimit::MAX_OVERFLOW);
    };
    let sized = listen::fdlimit::size_connections(configured, nofile);
    if sized < configured {
        tracing::warn!(
            max_connections = configured,
            lowered_to = sized,
            open_files_limit = nofile,
            "--max-connections is more than the open-files limit can hold; lowering it (raise `ulimit -n` or the service's LimitNOFILE to keep it)"
        );
    }
    (sized, listen::fdlimit::overflow_for(nofile))
}

/// `Retry-After` of a refusal for too many unauthenticated connections from one address.
const ADDRESS_CAP_RETRY_AFTER_SECS: u64 = 2;

async fn ws_handler(
    State(shared): State<Arc<Shared>>,
    Extension(ctx): Extension<Arc<ConnCtx>>,
    mut request: Request,
) -> Response {
    let headers = request.headers();
    let trusted = &shared.services.config.trusted_proxies;
    let via_proxy = shared.accept.admission.via_proxy(ctx.peer.ip());
    let client_ip = proxy::client_address(ctx.peer.ip(), trusted, headers);
    // "The peer" from here on: the forwarded client address behind a trusted
    // proxy (its port is not known: 0), else the TCP peer.
    let peer = if via_proxy {
        SocketAddr::new(client_ip, 0)
    } else {
        ctx.peer
    };
    let mut held = ctx.take();
    if shared.services.conn_shutdown.is_cancelled() {
        return refuse(
            &shared,
            StatusCode::SERVICE_UNAVAILABLE,
            RefusedReason::Shutdown,
            json!({"error": "overloaded", "message": "the server is shutting down"}),
            Some(5),
        );
    }
    if let Err(wait) = shared.services.throttle.check(client_ip) {
        tracing::info!(peer = %peer, retry_after_s = retry_after_secs(wait), "refused: too many failed authentications");
        return refuse(
            &shared,
            StatusCode::TOO_MANY_REQUESTS,
            RefusedReason::Throttle,
            json!({"error": "throttled", "message": "too many failed authentications from this address", "retry_after_s": retry_after_secs(wait)}),
            Some(retry_after_secs(wait)),
        );
    }
    // Behind a trusted proxy the per-address count is taken now, for the
    // forwarded address; otherwise it was taken at the TCP accept (and is taken
    // now if the address was over its cap then, or the connection served plain
    // requests before).
    let preauth = held.preauth.take().or_else(|| {
        shared
            .accept
            .admission
            .preauth
            .try_take(shared.accept.admission.key(client_ip))
    });
    let Some(preauth) = preauth else {
        tracing::info!(peer = %peer, limit = PRE_AUTH_PER_ADDRESS, "refused: too many unauthenticated connections from this address");
        return refuse(
            &shared,
            StatusCode::TOO_MANY_REQUESTS,
            RefusedReason::AddressCap,
            json!({"error": "throttled", "message": "too many connections from this address that have not authenticated yet", "retry_after_s": ADDRESS_CAP_RETRY_AFTER_SECS}),
            Some(ADDRESS_CAP_RETRY_AFTER_SECS),
        );
    };
    if shared.services.memory.refusing() {
        tracing::warn!(peer = %peer, used_bytes = shared.services.memory.used(), limit_bytes = shared.services.memory.limit(), "refused: memory pressure");
        return refuse(
            &shared,
            StatusCode::SERVICE_UNAVAILABLE,
            RefusedReason::Memory,
            json!({"error": "overloaded", "message": "the server is under memory pressure; retry later"}),
            Some(MEMORY_RETRY_AFTER_SECS),
        );
    }
    let Some(slot) = held
        .slot
        .take()
        .or_else(|| shared.accept.admission.try_slot())
    else {
        tracing::warn!(peer = %peer, limit = shared.accept.admission.max_connections(), "refused: connection limit reached");
        return refuse(
            &shared,
            StatusCode::SERVICE_UNAVAILABLE,
            RefusedReason::Limit,
            json!({"error": "overloaded", "message": "connection limit reached", "limit": shared.accept.admission.max_connections()}),
            Some(1),
        );
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
        if !shared
            .services
            .config
            .allowed_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
            && !crate::web::own_origin_allowed(
                origin,
                headers.get(header::HOST).and_then(|h| h.to_str().ok()),
                &shared.services.names,
                &crate::names::Arrival {
                    tls: shared.accept.tls.is_some(),
                    local: ctx.local,
                    peer: client_ip,
                },
            )
        {
            tracing::info!(peer = %peer, origin, "refused: origin not allowed");
            return refuse(
                &shared,
                StatusCode::FORBIDDEN,
                RefusedReason::Origin,
                json!({"error": "forbidden", "message": "this Origin is not allowed; see --allowed-origin"}),
                None,
            );
        }
    }
    let accept = match crate::ws::accept_key(request.method(), headers) {
        Ok(accept) => accept,
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let mut response = refuse(
                &shared,
                status,
                RefusedReason::NotWebsocket,
                json!({"error": "bad_request", "message": e.to_string()}),
                None,
            );
            if status == StatusCode::UPGRADE_REQUIRED {
                response
                    .headers_mut()
                    .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                response.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            return response;
        }
    };
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return refuse(
            &shared,
            StatusCode::UPGRADE_REQUIRED,
            RefusedReason::NotWebsocket,
            json!({"error": "bad_request", "message": "this connection cannot be upgraded"}),
            None,
        );
    };
    let transport = connection::Transport {
        peer,
        local: ctx.local,
        tls: shared.accept.tls.is_some(),
        channel_binding: ctx.channel_binding,
        slot,
        preauth: Some(preauth),
    };
    let tracked = shared.services.clone();
    shared.connections.spawn(async move {
        let upgraded = match tokio::time::timeout(listen::UPGRADE_TIMEOUT, on_upgrade).await {
            Ok(Ok(upgraded)) => upgraded,
            Ok(Err(e)) => {
                tracing::debug!(peer = %transport.peer, error = %e, "websocket upgrade failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %transport.peer, "websocket upgrade not completed in time");
                return;
            }
        };
        // Not boxed: what `serve_upgraded` returns is small (it boxes the rest).
        connection::serve_upgraded(upgraded, transport, tracked).await;
    });
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

fn session_detail(shared: &Shared) -> (bool, serde_json::Map<String, Value>) {
    let mut all_ready = true;
    let mut map = serde_json::Map::new();
    for s in shared.services.sessions.configured() {
        let st = s.status();
        if st.state == SessionState::Failed || st.state == SessionState::Stopped {
            all_ready = false;
        }
        let uptime = st
            .agent_started
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map(|d| d.as_secs_f64());
        let mut entry = json!({
            "state": st.state.as_str(),
            "head": st.head,
            "clients": st.clients,
            "agent_pid": st.agent_pid,
            "agent_uptime_s": uptime,
            "restarts": st.restarts,
            "pending": st.pending,
            "queued": st.queued,
        });
        if !st.detail.is_empty() {
            entry["detail"] = Value::from(st.detail);
        }
        map.insert(s.name.to_string(), entry);
    }
    (all_ready, map)
}

async fn healthz(
    State(shared): State<Arc<Shared>>,
    Extension(ctx): Extension<Arc<ConnCtx>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let peer = proxy::client_address(
        ctx.peer.ip(),
        &shared.services.config.trusted_proxies,
        &headers,
    );
    if !crate::health::full_detail(peer, &headers) {
        return axum::Json(crate::health::healthz_minimal()).into_response();
    }
    let (_, sessions) = session_detail(&shared);
    axum::Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": shared.started.elapsed().as_secs_f64(),
        "connections": shared.services.open_connections(),
        "tcp_connections": shared.slots_in_use(),
        "memory": memory_detail(&shared),
        "sessions": sessions,
    }))
    .into_response()
}

/// `GET /v1/origin?origin=ORIGIN`: whether a signature bound to that origin would
/// be accepted on this connection (docs/protocol.md, "Origin binding"), so the web
/// page opened under a name the server does not accept can say so before it signs,
/// and which page address would work (`suggest`: the `--public-url`, else the
/// address this request arrived on). Costs what any plain HTTP request costs.
async fn origin_check(
    State(shared): State<Arc<Shared>>,
    Extension(ctx): Extension<Arc<ConnCtx>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: axum::http::HeaderMap,
) -> Response {
    let given = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "origin")
            .map(|(_, v)| v.into_owned())
    });
    let parsed = given
        .as_deref()
        .map(crate::names::Origin::parse)
        .and_then(Result::ok);
    let (Some(given), Some(origin)) = (given, parsed) else {
        let mut response = (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "bad_origin", "message": "expected ?origin=ws://HOST[:PORT] or wss://HOST[:PORT]"})),
        )
            .into_response();
        no_store(&mut response);
        return response;
    };
    let arrival = crate::names::Arrival {
        tls: shared.accept.tls.is_some(),
        local: ctx.local,
        peer: proxy::client_address(
            ctx.peer.ip(),
            &shared.services.config.trusted_proxies,
            &headers,
        ),
    };
    let accepted = shared.services.names.admit(&origin, &arrival).is_ok();
    let mut body = json!({"origin": given, "accepted": accepted});
    if !accepted {
        body["suggest"] = Value::from(match &shared.services.config.notify.public_url {
            Some(url) => format!("{}/", url.as_str().trim_end_matches('/')),
            None => {
                let local =
                    SocketAddr::new(crate::auth::canonical_ip(ctx.local.ip()), ctx.local.port());
                crate::web::page_url(local, shared.accept.tls.is_some())
            }
        });
    }
    let mut response = axum::Json(body).into_response();
    no_store(&mut response);
    response
}

fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn memory_detail(shared: &Shared) -> Value {
    json!({
        "buffered_bytes": shared.services.memory.used(),
        "limit_bytes": shared.services.memory.limit(),
        "pressure": shared.services.memory.pressure().as_str(),
    })
}

async fn readyz(
    State(shared): State<Arc<Shared>>,
    Extension(ctx): Extension<Arc<ConnCtx>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let peer = proxy::client_address(
        ctx.peer.ip(),
        &shared.services.config.trusted_proxies,
        &headers,
    );
    let (sessions_ok, sessions) = session_detail(&shared);
    let shutting_down = shared.services.conn_shutdown.is_cancelled();
    // Under memory pressure new connections are refused: not ready for more.
    let refusing = shared.services.memory.refusing();
    let ready = sessions_ok && !shutting_down && !refusing;
    let mut body = json!({"ready": ready, "sessions": sessions});
    if !ready {
        let reason = if shutting_down {
            "shutting down".to_string()
        } else if refusing {
            "memory pressure: refusing new connections".to_string()
        } else {
            let failed: Vec<String> = shared
                .services
                .sessions
                .configured()
                .into_iter()
                .filter(|s| s.status().state == SessionState::Failed)
                .map(|s| s.name.to_string())
                .collect();
            format!("session(s) failed: {}", failed.join(", "))
        };
        body["reason"] = Value::from(reason);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if !crate::health::full_detail(peer, &headers) {
        let sessions = body["sessions"].as_object().cloned().unwrap_or_default();
        body = crate::health::readyz_minimal(ready, &sessions);
    }
    (status, axum::Json(body)).into_response()
}

async fn metrics_handler(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
) -> Response {
    shared
        .services
        .memory
        .record_metrics(&shared.services.metrics);
    shared
        .services
        .metrics
        .auth_throttle_addresses
        .set(i64::try_from(shared.services.throttle.tracked()).unwrap_or(i64::MAX));
    let format =
        metrics::Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    (
        [
            (header::CONTENT_TYPE, format.content_type()),
            (header::VARY, "Accept"),
        ],
        shared.services.metrics.encode_as(format),
    )
        .into_response()
}

/// This server's names for a listener bound at `local` (docs/protocol.md, "This
/// server's names"): `--public-url`, `--server-name`, the certificate's names with
/// the listen port, and `localhost` when the listener is a dual-stack wildcard
/// (it then holds its port on both 127.0.0.1 and ::1).
fn server_names(
    config: &Config,
    tls: Option<&crate::tls::TlsServer>,
    listener: &TcpListener,
    local: SocketAddr,
) -> crate::names::ServerNames {
    let public_url = config.notify.public_url.as_ref().and_then(|url| {
        Some(crate::names::ServerName {
            host: crate::names::Host::parse(url.host_str()?).ok()?,
            port: Some(url.port_or_known_default()?),
        })
    });
    let dual_stack_wildcard = matches!(local.ip(), std::net::IpAddr::V6(ip) if ip.is_unspecified())
        && socket2::SockRef::from(listener)
            .only_v6()
            .is_ok_and(|v6only| !v6only);
    let names = crate::names::ServerNames::new(
        public_url,
        &config.server_names,
        &config.tls_names,
        tls.map(|t| t.leaf()),
        local,
        dual_stack_wildcard,
    );
    tracing::debug!(?names, "this server's names");
    names
}

/// Connections the kernel may hold complete but not yet accepted (the kernel caps
/// it at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket with a deep accept queue. `TcpListener::bind` listens with
/// a backlog of 128: in a connect storm (256 handshakes in flight from 16
/// addresses, the fanout bench) the queue overflowed whenever the workers were
/// busy verifying signatures, and each dropped connection waited for the
/// client's 1 s SYN retransmission (`TcpExtListenOverflows`; N = 1,000 connected
/// in 0.4 s or, after a drop, 1.05 s).
fn bind_listener(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std and tokio do for listeners: a restart may bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
