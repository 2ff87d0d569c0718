//! The HTTP client that posts push messages.
//!
//! Owns: the client's limits — connect and total timeouts, no redirects, no
//! proxies (a proxy would resolve names itself, past our address rule), HTTP/1.1,
//! rustls with the ring provider and the webpki roots compiled in, HTTPS only
//! unless insecure endpoints are allowed, the guarded DNS resolver — and reading
//! at most [`MAX_RESPONSE_BYTES`] of an answer. Must not: build push requests
//! (mod.rs) or decide what an answer means.

use std::sync::Arc;
use std::time::Duration;

use super::ssrf::{self, Guard};

/// Bytes of a push service's answer read (for the log); the rest is dropped.
pub const MAX_RESPONSE_BYTES: usize = 2048;

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the push HTTP client: {0}")]
pub struct ClientError(String);

/// Build the push client.
pub fn build(
    guard: Guard,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<reqwest::Client, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(!guard.allow_insecure)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .referer(false)
        .http1_only()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(2)
        .dns_resolver(ssrf::resolver(guard))
        .user_agent(concat!("ccrelay/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ClientError(e.to_string()))
}

/// Read at most `cap` bytes of the answer's body (within the client's total
/// timeout), lossily as text and escaped, for the log. The webhook and ntfy
/// sinks (`notify::hooks`) read their error answers the same way.
pub async fn read_capped(mut response: reqwest::Response, cap: usize) -> String {
    let mut body = Vec::new();
    while body.len() < cap {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    crate::escape::line(&String::from_utf8_lossy(&body)).into_owned()
}

/// Does this error (or one it wraps) come from the guarded resolver?
pub fn is_refused_address(e: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<ssrf::RefusedAddress>() {
            return true;
        }
        cur = err.source();
    }
    false
}
