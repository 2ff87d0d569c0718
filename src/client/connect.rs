//! Reaching the relay: URL normalization, the WebSocket (event frames up to
//! 64 MiB, PROTOCOL.md §5) and the challenge-response of §3, one key per
//! connection, trying the candidates in order until one is accepted, as ssh does.
//!
//! Owns: everything up to `auth.ok`. Must not: know about sessions or rendering.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::keys::Candidate;
use crate::auth::SignError;

/// Largest frame or message accepted from the server (PROTOCOL.md §5).
pub const MAX_FRAME_BYTES: usize = 64 << 20;
/// `ccrelay serve`'s default port, used when the address names none.
pub const DEFAULT_PORT: u16 = 7878;
/// The WebSocket path of protocol version 1.
pub const WS_PATH: &str = "/v1/ws";
/// TCP connect + WebSocket upgrade.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Each frame of the authentication exchange (the server's own limit is 10 s).
const AUTH_FRAME_TIMEOUT: Duration = Duration::from_secs(20);

/// The WebSocket as `attach` uses it.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An address `attach` cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// TLS is not implemented by the relay yet.
    #[error("{0}: wss:// is not supported yet (the relay does not serve TLS); use ws://")]
    Tls(String),
    /// Some other scheme.
    #[error("{0}: unsupported scheme; use ws://HOST:PORT/v1/ws or HOST:PORT")]
    Scheme(String),
    /// No host part, a bad port, or a bare IPv6 address.
    #[error("{0}: not an address; use ws://HOST:PORT/v1/ws or HOST:PORT")]
    Address(String),
}

/// `ws://HOST:PORT/v1/ws`, `ws://HOST:PORT`, `HOST:PORT` or `HOST` → the full
/// WebSocket URL (path `/v1/ws` and port 7878 added when missing).
pub fn normalize_url(input: &str) -> Result<String, UrlError> {
    let text = input.trim();
    let (scheme, rest) = match text.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("ws".to_string(), text),
    };
    match scheme.as_str() {
        // http:// is what people paste from /healthz; it is the same listener.
        "ws" | "http" => {}
        "wss" | "https" => return Err(UrlError::Tls(input.to_string())),
        _ => return Err(UrlError::Scheme(input.to_string())),
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let bad = || UrlError::Address(input.to_string());
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (format!("[{h}]"), port)
    } else {
        match authority.rsplit_once(':') {
            // A second colon: an IPv6 address without brackets, ambiguous with a port.
            Some((h, _)) if h.contains(':') => return Err(bad()),
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" || host.contains('@') {
        return Err(bad());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
    };
    let path = match path {
        "" | "/" => WS_PATH,
        p => p,
    };
    Ok(format!("ws://{host}:{port}{path}"))
}

/// Why a connection attempt did not end in `auth.ok`.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP or the upgrade failed.
    #[error("cannot connect to {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// HTTP refusal before the upgrade (429 throttled, 503 overloaded, 403 origin...).
    #[error("{url} refused the connection: HTTP {status}{}{}", detail_suffix(.detail), retry_suffix(.retry_after))]
    Http {
        url: String,
        status: u16,
        retry_after: Option<Duration>,
        detail: String,
    },
    /// Every key was tried and refused.
    #[error("no authorized key: tried {}", .tried.join(", "))]
    NoAuthorizedKey { tried: Vec<String> },
    /// The server broke the protocol or closed during authentication.
    #[error("protocol error from {url}: {reason}")]
    Protocol { url: String, reason: String },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

fn retry_suffix(retry: &Option<Duration>) -> String {
    match retry {
        Some(d) => format!("; retry after {} s", d.as_secs_f64()),
        None => String::new(),
    }
}

impl ConnectError {
    /// Worth trying again later (after a connection already worked once).
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Unreachable { .. } | ConnectError::Protocol { .. } => true,
            ConnectError::Http { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            ConnectError::NoAuthorizedKey { .. } => false,
        }
    }

    /// How long the server asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ConnectError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What `auth.ok` told us.
#[derive(Debug, Clone)]
pub struct AuthOk {
    pub client_id: String,
    pub role: String,
    /// The frame as received (printed in `--json` mode).
    pub frame: String,
}

/// One accepted connection.
pub struct Connected {
    pub ws: Ws,
    pub auth: AuthOk,
    /// Which key was accepted (for the user and the logs).
    pub key_label: String,
}

/// Opens authenticated connections, remembering which key worked so a reconnect
/// tries it first.
pub struct Connector {
    url: String,
    device: Option<String>,
    keys: Vec<Candidate>,
    accepted: Option<usize>,
    /// Passphrases may be asked for (false once the line editor owns the terminal).
    may_prompt: bool,
}

impl Connector {
    pub fn new(url: String, device: Option<String>, keys: Vec<Candidate>) -> Connector {
        Connector {
            url,
            device,
            keys,
            accepted: None,
            may_prompt: true,
        }
    }

    /// From now on, skip key files that would need a passphrase prompt.
    pub fn stop_prompting(&mut self) {
        self.may_prompt = false;
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Try the keys in order (the accepted one first), one connection each.
    pub async fn connect(&mut self) -> Result<Connected, ConnectError> {
        let mut order: Vec<usize> = (0..self.keys.len()).collect();
        if let Some(i) = self.accepted {
            order.retain(|&j| j != i);
            order.insert(0, i);
        }
        let mut tried = Vec::new();
        for i in order {
            // Unlock before connecting: a passphrase prompt must not eat the
            // challenge's 10 s.
            let candidate = &mut self.keys[i];
            let may_prompt = self.may_prompt;
            let signer = match tokio::task::block_in_place(|| candidate.unlock(may_prompt)) {
                Ok(s) => s,
                Err(e) => {
                    tried.push(format!("{} ({})", candidate.label, short_sign_error(&e)));
                    continue;
                }
            };
            let label = candidate.label.clone();
            let mut ws = open(&self.url).await?;
            match authenticate(&mut ws, &self.url, &signer, self.device.as_deref()).await? {
                AuthOutcome::Accepted(auth) => {
                    self.accepted = Some(i);
                    return Ok(Connected {
                        ws,
                        auth,
                        key_label: label,
                    });
                }
                AuthOutcome::Refused => tried.push(label),
                AuthOutcome::SignFailed(e) => {
                    tried.push(format!("{label} ({})", short_sign_error(&e)))
                }
            }
        }
        Err(ConnectError::NoAuthorizedKey { tried })
    }
}

fn short_sign_error(e: &SignError) -> String {
    match e {
        SignError::WrongPassphrase => "wrong passphrase".into(),
        SignError::Encrypted => "encrypted, no passphrase given".into(),
        other => other.to_string(),
    }
}

/// TCP connect and WebSocket upgrade with the 64 MiB limits.
async fn open(url: &str) -> Result<Ws, ConnectError> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let attempt = tokio_tungstenite::connect_async_with_config(url, Some(config), false);
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Err(_) => Err(ConnectError::Unreachable {
            url: url.to_string(),
            reason: "timed out".into(),
        }),
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(e)) => Err(upgrade_error(url, e)),
    }
}

fn upgrade_error(url: &str, e: tungstenite::Error) -> ConnectError {
    match e {
        tungstenite::Error::Io(io) => ConnectError::Unreachable {
            url: url.to_string(),
            reason: io_reason(&io),
        },
        tungstenite::Error::Http(response) => {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64);
            // The body is JSON like {"error":"overloaded",...}; show its `error`.
            let detail = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            ConnectError::Http {
                url: url.to_string(),
                status: response.status().as_u16(),
                retry_after,
                detail,
            }
        }
        other => ConnectError::Unreachable {
            url: url.to_string(),
            reason: other.to_string(),
        },
    }
}

/// "connection refused" rather than "Connection refused (os error 111)".
fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        TimedOut => "timed out".into(),
        HostUnreachable => "host unreachable".into(),
        NetworkUnreachable => "network unreachable".into(),
        _ => e.to_string(),
    }
}

enum AuthOutcome {
    Accepted(AuthOk),
    /// `auth_failed`: try the next key.
    Refused,
    /// This key could not sign (agent refused, ssh-keygen failed): try the next key.
    SignFailed(SignError),
}

/// The §3 exchange on a fresh socket.
async fn authenticate(
    ws: &mut Ws,
    url: &str,
    signer: &super::keys::Signer,
    device: Option<&str>,
) -> Result<AuthOutcome, ConnectError> {
    let protocol = |reason: String| ConnectError::Protocol {
        url: url.to_string(),
        reason,
    };
    let challenge = next_json(ws, url).await?;
    if challenge.get("type").and_then(Value::as_str) != Some("auth.challenge") {
        return Err(protocol(format!(
            "expected auth.challenge, got {challenge}"
        )));
    }
    if let Some(p) = challenge.get("protocol").and_then(Value::as_u64)
        && p != 1
    {
        return Err(protocol(format!("unsupported protocol version {p}")));
    }
    let Some(sign_text) = challenge.get("sign").and_then(Value::as_str) else {
        return Err(protocol("auth.challenge without `sign`".into()));
    };
    let signed = tokio::task::block_in_place(|| signer.sign(sign_text.as_bytes()));
    let (signature, public_key) = match signed {
        Ok(s) => s,
        Err(e) => return Ok(AuthOutcome::SignFailed(e)),
    };
    let mut response = json!({"type": "auth.response", "signature": signature});
    if let Some(pk) = public_key {
        response["public_key"] = Value::from(pk);
    }
    if let Some(d) = device {
        response["device"] = Value::from(d);
    }
    ws.send(Message::Text(response.to_string().into()))
        .await
        .map_err(|e| protocol(format!("sending auth.response: {e}")))?;
    let (answer, frame) = match next_frame(ws, url).await? {
        Some(pair) => pair,
        // Closed without a word: treat as a refusal of this key, as auth_failed is.
        None => return Ok(AuthOutcome::Refused),
    };
    match answer.get("type").and_then(Value::as_str) {
        Some("auth.ok") => {
            let field = |k: &str| {
                answer
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            Ok(AuthOutcome::Accepted(AuthOk {
                client_id: field("client_id"),
                role: field("role"),
                frame,
            }))
        }
        Some("error") if answer.get("code").and_then(Value::as_str) == Some("auth_failed") => {
            Ok(AuthOutcome::Refused)
        }
        _ => Err(protocol(format!(
            "unexpected answer to auth.response: {answer}"
        ))),
    }
}

/// The next text frame as JSON; a close is a protocol error here.
async fn next_json(ws: &mut Ws, url: &str) -> Result<Value, ConnectError> {
    match next_frame(ws, url).await? {
        Some((v, _)) => Ok(v),
        None => Err(ConnectError::Protocol {
            url: url.to_string(),
            reason: "connection closed during authentication".into(),
        }),
    }
}

/// The next text frame (parsed and raw), or `None` when the server closed.
async fn next_frame(ws: &mut Ws, url: &str) -> Result<Option<(Value, String)>, ConnectError> {
    let protocol = |reason: String| ConnectError::Protocol {
        url: url.to_string(),
        reason,
    };
    loop {
        let next = tokio::time::timeout(AUTH_FRAME_TIMEOUT, ws.next())
            .await
            .map_err(|_| protocol("no answer during authentication".into()))?;
        match next {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t)
                    .map_err(|e| protocol(format!("invalid JSON ({e})")))?;
                return Ok(Some((v, t.to_string())));
            }
            Some(Ok(Message::Close(_))) | None => return Ok(None),
            Some(Ok(Message::Binary(_))) => return Err(protocol("binary frame".into())),
            Some(Ok(_)) => continue,
            Some(Err(tungstenite::Error::Io(io))) => {
                return Err(ConnectError::Unreachable {
                    url: url.to_string(),
                    reason: io_reason(&io),
                });
            }
            Some(Err(e)) => return Err(protocol(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_completed() {
        let ok = |s: &str| normalize_url(s).unwrap();
        assert_eq!(ok("ws://127.0.0.1:7878/v1/ws"), "ws://127.0.0.1:7878/v1/ws");
        assert_eq!(ok("ws://127.0.0.1:9000"), "ws://127.0.0.1:9000/v1/ws");
        assert_eq!(ok("ws://127.0.0.1:9000/"), "ws://127.0.0.1:9000/v1/ws");
        assert_eq!(ok("127.0.0.1:9000"), "ws://127.0.0.1:9000/v1/ws");
        assert_eq!(ok("localhost"), "ws://localhost:7878/v1/ws");
        assert_eq!(ok("[::1]:9000"), "ws://[::1]:9000/v1/ws");
        assert_eq!(ok("WS://host:1/custom"), "ws://host:1/custom");
        assert_eq!(ok("http://host:1"), "ws://host:1/v1/ws");
        assert_eq!(ok("  host:1  "), "ws://host:1/v1/ws");
    }

    #[test]
    fn bad_urls_are_refused_clearly() {
        assert!(matches!(normalize_url("wss://h:1"), Err(UrlError::Tls(_))));
        assert!(
            normalize_url("wss://h:1")
                .unwrap_err()
                .to_string()
                .contains("wss:// is not supported yet")
        );
        assert!(matches!(normalize_url("ftp://h"), Err(UrlError::Scheme(_))));
        for bad in [
            "", "ws://", ":80", "h:0", "h:99999", "h:x", "::1", "[::1", "u@h:1",
        ] {
            assert!(normalize_url(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn http_refusal_mentions_retry_after() {
        let e = ConnectError::Http {
            url: "ws://h:1/v1/ws".into(),
            status: 429,
            retry_after: Some(Duration::from_secs(30)),
            detail: "throttled".into(),
        };
        assert_eq!(
            e.to_string(),
            "ws://h:1/v1/ws refused the connection: HTTP 429 (throttled); retry after 30 s"
        );
        assert!(e.is_transient());
    }
}
