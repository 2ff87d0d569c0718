//! The listening socket's accept loop side: [`GuardedListener`] survives accept
//! errors (out of descriptors, buffers or memory: logged once per episode, counted,
//! retried with back-off while existing connections are served); a listening
//! socket that is broken raises the fatal signal.
//!
//! Owns: accept-error classification and back-off, TCP_NODELAY. Must not: decide
//! admission (the rest of `listen`) or know what is served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::fatal::FatalSignal;
use crate::metrics::{AcceptErrorLabel, AcceptErrorReason, Metrics};

/// First pause after an accept error caused by resource exhaustion (doubles each time).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between accept attempts while resources are exhausted.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one accept-exhaustion warning this often.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(30);

/// A TCP listener that survives accept errors: resource exhaustion (out of file
/// descriptors, buffers or memory) is logged once per episode, counted, and
/// retried with an exponential back-off while existing connections keep being
/// served; transient per-connection errors are skipped; an error that means the
/// listening socket itself is broken raises a fatal fault.
pub struct GuardedListener {
    inner: TcpListener,
    name: &'static str,
    metrics: Arc<Metrics>,
    fatal: FatalSignal,
    /// Failures of the current episode and when it began.
    failing: Option<(u64, Instant)>,
    backoff: Duration,
    /// When an episode was last logged at warn level (episodes can flap as single
    /// descriptors free up; at most one warning per [`ACCEPT_WARN_EVERY`]).
    warned: Option<Instant>,
}

impl GuardedListener {
    /// `name` labels the log lines (`listen`, `metrics-listen`); a listening
    /// socket that can no longer accept raises `fatal`.
    pub fn new(
        inner: TcpListener,
        name: &'static str,
        metrics: Arc<Metrics>,
        fatal: FatalSignal,
    ) -> Self {
        GuardedListener {
            inner,
            name,
            metrics,
            fatal,
            failing: None,
            backoff: ACCEPT_BACKOFF_MIN,
            warned: None,
        }
    }
}

/// How an accept error is handled.
#[derive(Debug, PartialEq, Eq)]
enum AcceptError {
    /// One incoming connection failed; try the next at once.
    Connection,
    /// Out of descriptors, buffers or memory: back off and retry.
    Resources,
    /// The listening socket is unusable.
    Fatal,
}

fn classify_accept_error(e: &std::io::Error) -> AcceptError {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => AcceptError::Resources,
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EFAULT | libc::EOPNOTSUPP) => {
            AcceptError::Fatal
        }
        // ECONNABORTED, EPROTO, EPERM and the network errors Linux passes on from
        // the new socket: that connection is lost, the listener is fine.
        _ => AcceptError::Connection,
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let err = match self.inner.accept().await {
                Ok(accepted) => {
                    if let Some((failures, since)) = self.failing.take() {
                        let after_ms = since.elapsed().as_millis() as u64;
                        if self.warned.is_some_and(|w| w >= since) {
                            tracing::info!(
                                listener = self.name,
                                failures,
                                after_ms,
                                "accepting connections again"
                            );
                        } else {
                            tracing::debug!(
                                listener = self.name,
                                failures,
                                after_ms,
                                "accepting connections again"
                            );
                        }
                    }
                    self.backoff = ACCEPT_BACKOFF_MIN;
                    // Event frames are small and latency matters more than packet count.
                    let _ = accepted.0.set_nodelay(true);
                    return accepted;
                }
                Err(e) => e,
            };
            let kind = classify_accept_error(&err);
            self.metrics
                .accept_errors
                .get_or_create(&AcceptErrorLabel {
                    reason: match kind {
                        AcceptError::Connection => AcceptErrorReason::Connection,
                        AcceptError::Resources => AcceptErrorReason::Resources,
                        AcceptError::Fatal => AcceptErrorReason::Fatal,
                    },
                })
                .inc();
            match kind {
                AcceptError::Connection => {
                    tracing::debug!(listener = self.name, error = %err, "accept failed for one connection");
                }
                AcceptError::Resources => {
                    match &mut self.failing {
                        Some((failures, _)) => *failures += 1,
                        None => {
                            let now = Instant::now();
                            if self.warned.is_none_or(|w| w.elapsed() >= ACCEPT_WARN_EVERY) {
                                tracing::warn!(
                                    listener = self.name,
                                    error = %err,
                                    "cannot accept connections (out of resources); retrying with back-off, existing connections are served"
                                );
                                self.warned = Some(now);
                            } else {
                                tracing::debug!(listener = self.name, error = %err, "cannot accept connections (out of resources)");
                            }
                            self.failing = Some((1, now));
                        }
                    }
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
                AcceptError::Fatal => {
                    self.fatal
                        .raise(format!("listener {} failed: {err}", self.name));
                    // The shutdown stops this future; accept nothing more.
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
