//! Reaching the relay: URL normalization, TCP or TLS (`wss://`; a bare
//! `HOST:PORT` tries TLS first and falls back to plaintext when the server does not
//! speak it), the WebSocket (event frames up to 64 MiB, docs/protocol.md §1.3) and the
//! challenge-response of §3, one key per connection, trying the candidates in
//! order until one is accepted, as ssh does. Before signing, `trust::decide`
//! judges the certificate, the `server_id` and channel binding against
//! known_servers; new servers are asked about on a terminal.
//!
//! Owns: everything up to `auth.ok`. Must not: know about sessions or rendering.

use std::time::Duration;

use std::io::IsTerminal as _;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;

use ccrelay_protocol::{ClientMsg, ErrorCode, RequestId, Role, ServerMsg, parse_server_frame};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::either::Either;

use super::keys::Candidate;
use super::known::{Entry, KnownServers};
use super::trust::{self, Roots, Seen, Verdict};
use ccrelay_server::auth::SignError;

/// Largest frame or message accepted from the server (docs/protocol.md §1.3).
pub const MAX_FRAME_BYTES: usize = 64 << 20;
/// `ccrelay serve`'s default port, used when the address names none.
pub const DEFAULT_PORT: u16 = 7878;
/// The WebSocket path of protocol version 1.
pub const WS_PATH: &str = "/v1/ws";
/// TCP connect + WebSocket upgrade.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Each frame of the authentication exchange (the server's own limit is 10 s).
const AUTH_FRAME_TIMEOUT: Duration = Duration::from_secs(20);

/// The byte stream under the WebSocket: plain TCP or TLS.
pub type Stream = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;
/// The WebSocket as `attach` uses it.
pub type Ws = WebSocketStream<Stream>;

/// An address `attach` cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Some other scheme.
    #[error(
        "{0}: unsupported scheme; use wss://HOST:PORT/v1/ws, ws://HOST:PORT/v1/ws or HOST:PORT"
    )]
    Scheme(String),
    /// No host part, a bad port, or a bare IPv6 address.
    #[error("{0}: not an address; use wss://HOST:PORT/v1/ws, ws://HOST:PORT/v1/ws or HOST:PORT")]
    Address(String),
}

/// How to reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Ws,
    Wss,
    /// A bare `HOST:PORT`: TLS when the server speaks it, else plaintext.
    Auto,
}

/// A normalized relay address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    /// As in a URL: IPv6 in brackets.
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Target {
    /// The WebSocket URL (`wss://` for [`Scheme::Auto`] until it is resolved).
    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Ws => "ws",
            Scheme::Wss | Scheme::Auto => "wss",
        };
        format!("{scheme}://{}:{}{}", self.host, self.port, self.path)
    }

    /// The URL as known_servers keys it for a given scheme.
    fn url_as(&self, scheme: Scheme) -> String {
        Target {
            scheme,
            ..self.clone()
        }
        .url()
    }

    /// The web page's origin on this server, as a browser serializes it: `https`
    /// for `wss`, `http` for `ws`, the port left out when it is the scheme's default.
    pub fn page_origin(&self) -> String {
        let (scheme, default_port) = match self.scheme {
            Scheme::Ws => ("http", 80),
            Scheme::Wss | Scheme::Auto => ("https", 443),
        };
        let host = self.host.to_ascii_lowercase();
        if self.port == default_port {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{}", self.port)
        }
    }

    /// The host without IPv6 brackets.
    pub fn bare_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }

    /// `localhost` or a loopback IP address (127.0.0.0/8, ::1): plaintext is fine there.
    pub fn is_loopback(&self) -> bool {
        let host = self.bare_host();
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// `wss://HOST:PORT/v1/ws`, `ws://HOST:PORT`, `HOST:PORT` or `HOST` → the full
/// address (path `/v1/ws` and port 7878 added when missing).
pub fn normalize_url(input: &str) -> Result<Target, UrlError> {
    let text = input.trim();
    let (scheme, rest) = match text.split_once("://") {
        Some((s, r)) => (Some(s.to_ascii_lowercase()), r),
        None => (None, text),
    };
    let scheme = match scheme.as_deref() {
        None => Scheme::Auto,
        // http(s):// is what people paste from /healthz; it is the same listener.
        Some("ws" | "http") => Scheme::Ws,
        Some("wss" | "https") => Scheme::Wss,
        Some(_) => return Err(UrlError::Scheme(input.to_string())),
    };
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
    Ok(Target {
        scheme,
        host,
        port,
        path: path.to_string(),
    })
}

/// The origin of `target` reached with `scheme` (browser serialization).
pub fn origin_of(target: &Target, scheme: Scheme) -> Result<String, String> {
    let wire = match scheme {
        Scheme::Ws => ccrelay_server::names::Scheme::Ws,
        Scheme::Wss | Scheme::Auto => ccrelay_server::names::Scheme::Wss,
    };
    ccrelay_server::names::Origin::of(wire, &target.host, target.port)
        .map(|o| o.to_string())
        .map_err(|e| {
            format!(
                "{}: cannot name its origin ({e}); nothing was signed",
                target.url()
            )
        })
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
    #[error(
        "no authorized key: tried {} (a server also refuses every key when the address dialed is not one of its names, e.g. through a port forward or proxy: its log then says \"origin ... refused\" and which --server-name would admit it)",
        .tried.join(", ")
    )]
    NoAuthorizedKey { tried: Vec<String> },
    /// The server broke the protocol or closed during authentication.
    #[error("protocol error from {url}: {reason}")]
    Protocol { url: String, reason: String },
    /// Not signed: the server's identity, certificate or challenge is not
    /// acceptable (docs/protocol.md §3.8, §3.11). Final; exit 2.
    #[error("{0}")]
    Refused(String),
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
            ConnectError::NoAuthorizedKey { .. } | ConnectError::Refused(_) => false,
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

/// How `attach` decides whom to trust (docs/protocol.md §3.11).
#[derive(Debug, Clone, Default)]
pub struct TrustOptions {
    /// `--ca-file`: more CA certificates besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// `--server-fingerprint`: the certificate must be this one.
    pub pin: Option<String>,
    /// `--accept-new-server`: record a server not seen before without asking.
    pub accept_new: bool,
    /// `--insecure-plaintext`: allow ws:// to a host outside loopback.
    pub insecure_plaintext: bool,
    /// `--known-servers`, else the default location.
    pub known_servers: Option<std::path::PathBuf>,
}

/// A socket with its WebSocket open, before authentication.
struct Opened {
    ws: Ws,
    /// The certificate as seen (TLS only).
    tls: Option<Seen>,
    exporter: Option<[u8; 32]>,
}

/// Opens authenticated connections, remembering which key worked so a reconnect
/// tries it first.
pub struct Connector {
    target: Target,
    device: Option<String>,
    keys: Vec<Candidate>,
    accepted: Option<usize>,
    /// Passphrases and new servers may be asked about (false once the line
    /// editor owns the terminal).
    may_prompt: bool,
    trust: TrustOptions,
    /// Loaded on first use of TLS.
    roots: Option<Roots>,
    known: KnownServers,
}

impl Connector {
    /// Check the address against the options; nothing is opened yet.
    pub fn new(
        target: Target,
        device: Option<String>,
        keys: Vec<Candidate>,
        trust: TrustOptions,
    ) -> Result<Connector, ConnectError> {
        if target.scheme == Scheme::Ws && !target.is_loopback() && !trust.insecure_plaintext {
            return Err(ConnectError::Refused(plaintext_refusal(&target)));
        }
        if let Some(pin) = &trust.pin {
            if target.scheme == Scheme::Ws {
                return Err(ConnectError::Refused(format!(
                    "--server-fingerprint pins a TLS certificate, but {} is plaintext; use wss://",
                    target.url()
                )));
            }
            if !pin.starts_with("SHA256:") || pin.len() != 50 {
                return Err(ConnectError::Refused(format!(
                    "--server-fingerprint: expected SHA256: and 43 base64 characters (as `ccrelay server-info` prints), got {pin:?}"
                )));
            }
        }
        let path = trust
            .known_servers
            .clone()
            .or_else(super::known::default_path);
        let known = KnownServers::load(path).map_err(|e| {
            ConnectError::Refused(format!("cannot read the known servers file {e}"))
        })?;
        Ok(Connector {
            target,
            device,
            keys,
            accepted: None,
            may_prompt: true,
            trust,
            roots: None,
            known,
        })
    }

    /// From now on, skip key files that would need a passphrase prompt, and
    /// refuse new servers rather than asking.
    pub fn stop_prompting(&mut self) {
        self.may_prompt = false;
    }

    /// The URL (its scheme settled after the first connection).
    pub fn url(&self) -> String {
        self.target.url()
    }

    /// The web page's origin on this server (its scheme settled after the first
    /// connection).
    pub fn page_origin(&self) -> String {
        self.target.page_origin()
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
            let label = self.keys[i].label.clone();
            // A server accepted on the terminal is connected to again: the user
            // may have taken longer than the challenge lives.
            let mut outcome = AuthOutcome::Retry;
            for _ in 0..2 {
                let mut opened = self.open().await?;
                outcome = self.authenticate(&mut opened, &signer).await?;
                match outcome {
                    AuthOutcome::Retry => {
                        let _ = opened.ws.close(None).await;
                    }
                    AuthOutcome::Accepted(auth) => {
                        self.accepted = Some(i);
                        return Ok(Connected {
                            ws: opened.ws,
                            auth,
                            key_label: label,
                        });
                    }
                    _ => break,
                }
            }
            match outcome {
                AuthOutcome::SignFailed(e) => {
                    tried.push(format!("{label} ({})", short_sign_error(&e)))
                }
                _ => tried.push(label),
            }
        }
        Err(ConnectError::NoAuthorizedKey { tried })
    }

    fn roots(&mut self) -> Result<Roots, ConnectError> {
        if let Some(r) = &self.roots {
            return Ok(r.clone());
        }
        let ca_file = self.trust.ca_file.clone();
        let roots = tokio::task::block_in_place(|| Roots::load(ca_file.as_deref()))
            .map_err(ConnectError::Refused)?;
        self.roots = Some(roots.clone());
        Ok(roots)
    }

    /// TCP (+ TLS) and the WebSocket upgrade; settles a bare address's scheme.
    async fn open(&mut self) -> Result<Opened, ConnectError> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES));
        let stream = match self.target.scheme {
            Scheme::Ws => None,
            Scheme::Wss => match self.open_tls().await {
                Ok(tls) => Some(tls),
                Err(TlsOpenError::Tcp(e)) => return Err(e),
                Err(TlsOpenError::Handshake(reason)) => {
                    return Err(ConnectError::Unreachable {
                        url: self.target.url(),
                        reason,
                    });
                }
            },
            Scheme::Auto => match self.open_tls().await {
                Ok(tls) => {
                    self.target.scheme = Scheme::Wss;
                    Some(tls)
                }
                Err(TlsOpenError::Tcp(e)) => return Err(e),
                Err(TlsOpenError::Handshake(reason)) => {
                    let wss = self.target.url_as(Scheme::Wss);
                    if let Some(found) = self.known.find(&wss) {
                        return Err(ConnectError::Refused(format!(
                            "{wss} spoke TLS before (line {} of {}) and now does not ({reason}); refusing to fall back to plaintext",
                            found.line,
                            self.known.display_path()
                        )));
                    }
                    if !self.target.is_loopback() && !self.trust.insecure_plaintext {
                        return Err(ConnectError::Refused(format!(
                            "{}:{} does not speak TLS ({reason}). {}",
                            self.target.host,
                            self.target.port,
                            plaintext_refusal(&self.target)
                        )));
                    }
                    if self.trust.pin.is_some() {
                        return Err(ConnectError::Refused(format!(
                            "--server-fingerprint given, but {}:{} does not speak TLS ({reason})",
                            self.target.host, self.target.port
                        )));
                    }
                    self.target.scheme = Scheme::Ws;
                    None
                }
            },
        };
        let url = self.target.url();
        let (stream, tls, exporter) = match stream {
            Some((tls_stream, seen)) => {
                let exporter = ccrelay_server::tls::client_exporter(tls_stream.get_ref().1);
                (Either::Right(tls_stream), Some(seen), exporter)
            }
            None => (Either::Left(self.tcp().await?), None, None),
        };
        let attempt =
            tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config));
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Err(_) => Err(ConnectError::Unreachable {
                url,
                reason: "timed out".into(),
            }),
            Ok(Ok((ws, _response))) => Ok(Opened { ws, tls, exporter }),
            Ok(Err(e)) => Err(upgrade_error(&url, e)),
        }
    }

    async fn tcp(&self) -> Result<TcpStream, ConnectError> {
        let url = self.target.url();
        let addr = format!("{}:{}", self.target.host, self.target.port);
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Err(_) => {
                return Err(ConnectError::Unreachable {
                    url,
                    reason: "timed out".into(),
                });
            }
            Ok(Err(e)) => {
                return Err(ConnectError::Unreachable {
                    url,
                    reason: io_reason(&e),
                });
            }
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    /// TCP and the TLS handshake; the certificate is only recorded here.
    async fn open_tls(
        &mut self,
    ) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, Seen), TlsOpenError> {
        let roots = self.roots().map_err(TlsOpenError::Tcp)?;
        let url = self.target.url_as(Scheme::Wss);
        let name = rustls::pki_types::ServerName::try_from(self.target.bare_host().to_string())
            .map_err(|e| {
                TlsOpenError::Tcp(ConnectError::Unreachable {
                    url: url.clone(),
                    reason: format!("not a TLS server name: {e}"),
                })
            })?;
        let tcp = self.tcp().await.map_err(TlsOpenError::Tcp)?;
        let (config, seen) = roots.client_config();
        let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Err(_) => return Err(TlsOpenError::Handshake("TLS handshake timed out".into())),
            Ok(Err(e)) => {
                return Err(TlsOpenError::Handshake(format!(
                    "TLS handshake failed: {e}"
                )));
            }
            Ok(Ok(s)) => s,
        };
        let seen = match seen.lock() {
            Ok(mut slot) => slot.take(),
            Err(p) => p.into_inner().take(),
        };
        let seen = seen.ok_or_else(|| {
            TlsOpenError::Handshake("TLS handshake without a server certificate".into())
        })?;
        Ok((stream, seen))
    }

    /// The §3 exchange on a fresh socket, after judging the server.
    async fn authenticate(
        &mut self,
        opened: &mut Opened,
        signer: &super::keys::Signer,
    ) -> Result<AuthOutcome, ConnectError> {
        let url = self.target.url();
        let protocol = |reason: String| ConnectError::Protocol {
            url: url.clone(),
            reason,
        };
        let ws = &mut opened.ws;
        let (challenge, text) = next_json(ws, &url).await?;
        let Some(ServerMsg::AuthChallenge {
            protocol: version,
            server_id,
            nonce,
            sign,
            channel_binding,
            ..
        }) = challenge
        else {
            return Err(protocol(format!(
                "expected auth.challenge, got {}",
                ccrelay_server::escape::line(&text.chars().take(200).collect::<String>())
            )));
        };
        if version != ccrelay_protocol::PROTOCOL_VERSION {
            return Err(protocol(format!("unsupported protocol version {version}")));
        }
        let parsed = trust::parse_challenge(&server_id, &nonce, &sign, channel_binding.as_deref())
            .map_err(|e| ConnectError::Refused(format!("{url}: {e}")))?;
        let file = self.known.display_path();
        let found = self.known.find(&url);
        let verdict = trust::decide(&trust::Facts {
            url: &url,
            loopback: self.target.is_loopback(),
            tls: opened.tls.as_ref(),
            exporter: opened.exporter.as_ref(),
            challenge: &parsed,
            known: found.as_ref(),
            pin: self.trust.pin.as_deref(),
            file: &file,
        });
        let bound = match verdict {
            Verdict::Refuse(message) => return Err(ConnectError::Refused(message)),
            Verdict::Sign { bound, record } => {
                if let Some(entry) = record {
                    self.record(entry, found.is_none());
                }
                bound
            }
            Verdict::New { bound, record } => {
                if self.trust.accept_new {
                    self.record(record, true);
                    bound
                } else if self.may_prompt
                    && std::io::stdin().is_terminal()
                    && std::io::stderr().is_terminal()
                {
                    let yes = tokio::task::block_in_place(|| {
                        ask_new_server(&record, opened.tls.as_ref(), &file)
                    });
                    if !yes {
                        return Err(ConnectError::Refused(format!(
                            "{url} was not accepted; nothing was signed"
                        )));
                    }
                    self.record(record, true);
                    return Ok(AuthOutcome::Retry);
                } else {
                    return Err(ConnectError::Refused(trust::new_server_refusal(
                        &record,
                        opened.tls.as_ref(),
                        &file,
                    )));
                }
            }
        };
        let exporter = if bound {
            opened.exporter.as_ref()
        } else {
            None
        };
        // Bound to the origin this connection dialed (docs/protocol.md, "Origin binding").
        let origin = self
            .origin(opened.tls.is_some())
            .map_err(ConnectError::Refused)?;
        let text = trust::text_to_sign(&parsed.sign, &origin, exporter);
        let signed = tokio::task::block_in_place(|| signer.sign(text.as_bytes()));
        let (signature, public_key) = match signed {
            Ok(s) => s,
            Err(e) => return Ok(AuthOutcome::SignFailed(e)),
        };
        let response = ClientMsg::AuthResponse {
            id: None,
            signature,
            public_key,
            device: self.device.clone(),
            channel_binding: exporter.map(|_| trust::TLS_EXPORTER.to_string()),
            origin: Some(origin),
        };
        ws.send(Message::Text(response.to_json().into()))
            .await
            .map_err(|e| protocol(format!("sending auth.response: {e}")))?;
        let (answer, frame) = match next_frame(ws, &url).await? {
            Some(pair) => pair,
            // Closed without a word: treat as a refusal of this key, as auth_failed is.
            None => return Ok(AuthOutcome::Refused),
        };
        match answer {
            Some(ServerMsg::AuthOk {
                client_id, role, ..
            }) => Ok(AuthOutcome::Accepted(AuthOk {
                client_id,
                role: role.as_str().to_string(),
                frame,
            })),
            Some(ServerMsg::Error {
                code: ErrorCode::AuthFailed,
                ..
            }) => Ok(AuthOutcome::Refused),
            _ => Err(protocol(format!(
                "unexpected answer to auth.response: {}",
                ccrelay_server::escape::line(&frame.chars().take(200).collect::<String>())
            ))),
        }
    }

    /// The origin this connection dialed, serialized as a browser does
    /// (`ws://127.0.0.1:7878`, `wss://relay.example`, `wss://[fd7a::1]:8443`).
    fn origin(&self, tls: bool) -> Result<String, String> {
        let scheme = if tls { Scheme::Wss } else { Scheme::Ws };
        origin_of(&self.target, scheme)
    }

    /// Write a known_servers entry; a file that cannot be written is reported
    /// and the connection goes on (the check was made; only the memory is lost).
    fn record(&mut self, entry: Entry, new: bool) {
        if new {
            let mut what = format!("server_id {}", entry.server_id);
            if let Some(fp) = &entry.fingerprint {
                what.push_str(&format!(", certificate {fp}"));
            }
            eprintln!(
                "ccrelay: new server {}: {what}; recorded in {}",
                entry.url,
                self.known.display_path()
            );
        }
        if let Err(e) = self.known.record(entry) {
            eprintln!("ccrelay: cannot update the known servers file {e}");
        }
    }
}

/// Why [`Connector::open_tls`] failed: before TLS (unreachable) or during the
/// handshake (the server may not speak TLS).
enum TlsOpenError {
    Tcp(ConnectError),
    Handshake(String),
}

fn plaintext_refusal(target: &Target) -> String {
    format!(
        "refusing plaintext ws:// to {}, which is not a loopback address: anyone on the path could read and inject. Use wss:// (the server needs --tls-cert/--tls-key or --tls-self-signed), or pass --insecure-plaintext on a network you trust (WireGuard, Tailscale)",
        target.host
    )
}

/// Ask on the terminal whether to trust a server not seen before.
fn ask_new_server(record: &Entry, seen: Option<&Seen>, file: &str) -> bool {
    use std::io::Write as _;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "ccrelay: {} is a server not seen before.", record.url);
    let _ = writeln!(err, "  server_id:   {}", record.server_id);
    if let Some(seen) = seen {
        let _ = writeln!(err, "  certificate: {}", seen.fingerprint);
        match &seen.ca {
            Ok(()) => {
                let _ = writeln!(err, "  (vouched for by a trusted CA)");
            }
            Err(reason) => {
                let _ = writeln!(err, "  NOT vouched for by any trusted CA: {reason}");
            }
        }
    }
    let _ = writeln!(
        err,
        "Compare with `ccrelay server-info` on the server. Trust it and record it in {file}? [y/N] "
    );
    let _ = err.flush();
    drop(err);
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

fn short_sign_error(e: &SignError) -> String {
    match e {
        SignError::WrongPassphrase => "wrong passphrase".into(),
        SignError::Encrypted => "encrypted, no passphrase given".into(),
        other => other.to_string(),
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
    /// A new server was accepted on the terminal: connect again.
    Retry,
}

/// Frames an authenticated connection may receive before the reply to a
/// request (owner notices, presence, session changes); more means the server is
/// not answering.
const MAX_FRAMES_BEFORE_REPLY: usize = 1000;

/// Why no invite was made.
#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    #[error("{0}")]
    Connect(#[from] ConnectError),
    /// The server answered `error` (`forbidden` for a viewer key, `overloaded`...).
    #[error("the server refused the invite: {code}: {message}")]
    Refused { code: String, message: String },
}

/// Send one request on an authenticated connection and wait for the frame that
/// answers it (the one carrying its `id`, an `error` included), skipping the
/// notices that come in between. The reply is returned read and as received.
pub async fn request(
    ws: &mut Ws,
    url: &str,
    request: &ClientMsg,
) -> Result<(ServerMsg, String), ConnectError> {
    let protocol = |reason: &str| ConnectError::Protocol {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let id = request_id_of(request).ok_or_else(|| protocol("a request without an id"))?;
    ws.send(Message::Text(request.to_json().into()))
        .await
        .map_err(|e| protocol(&e.to_string()))?;
    for _ in 0..MAX_FRAMES_BEFORE_REPLY {
        let Some((reply, text)) = next_frame(ws, url).await? else {
            return Err(protocol("connection closed before the server answered"));
        };
        match reply {
            Some(reply) if reply.id() == Some(&id) => return Ok((reply, text)),
            _ => continue,
        }
    }
    Err(protocol("no answer to the request"))
}

/// The `id` of a request this client sends (every one it waits for carries one).
fn request_id_of(request: &ClientMsg) -> Option<RequestId> {
    let value = serde_json::to_value(request).ok()?;
    serde_json::from_value(value.get("id")?.clone()).ok()
}

/// Ask an authenticated connection for a pairing invite (docs/protocol.md,
/// "Pairing invites"); the token and how long it lives.
pub async fn request_invite(
    ws: &mut Ws,
    url: &str,
    viewer: bool,
) -> Result<(String, Duration), InviteError> {
    let role = if viewer { Role::Viewer } else { Role::Owner };
    let ask = ClientMsg::PairInvite {
        id: Some(RequestId::Text("invite".into())),
        role: Some(role),
        expires_in_ms: None,
    };
    let protocol = |reason: &str| ConnectError::Protocol {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    match request(ws, url, &ask).await?.0 {
        ServerMsg::PairInvite {
            invite,
            expires_in_ms,
            ..
        } if !invite.is_empty() => Ok((invite, Duration::from_millis(expires_in_ms))),
        ServerMsg::PairInvite { .. } => Err(protocol("pair.invite without an invite").into()),
        ServerMsg::Error { code, message, .. } => Err(InviteError::Refused {
            code: code.as_str().to_string(),
            message,
        }),
        _ => Err(protocol("unexpected reply to pair.invite").into()),
    }
}

/// The next text frame, read (`None`: a type this build does not know) and as
/// received; a close is a protocol error here.
async fn next_json(ws: &mut Ws, url: &str) -> Result<(Option<ServerMsg>, String), ConnectError> {
    match next_frame(ws, url).await? {
        Some(pair) => Ok(pair),
        None => Err(ConnectError::Protocol {
            url: url.to_string(),
            reason: "connection closed during authentication".into(),
        }),
    }
}

/// The next text frame (read and raw), or `None` when the server closed. A frame
/// of a type this build does not know reads as `None` (forward compatibility).
#[allow(clippy::type_complexity)]
async fn next_frame(
    ws: &mut Ws,
    url: &str,
) -> Result<Option<(Option<ServerMsg>, String)>, ConnectError> {
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
                let msg = parse_server_frame(&t).map_err(|e| protocol(e.to_string()))?;
                return Ok(Some((msg, t.to_string())));
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
    fn the_origin_is_serialized_as_a_browser_does() {
        let origin = |url: &str, scheme: Scheme| origin_of(&normalize_url(url).unwrap(), scheme);
        assert_eq!(
            origin("127.0.0.1:7878", Scheme::Ws).unwrap(),
            "ws://127.0.0.1:7878"
        );
        assert_eq!(
            origin("wss://Relay.Example:443/v1/ws", Scheme::Wss).unwrap(),
            "wss://relay.example"
        );
        assert_eq!(
            origin("ws://relay.example.:80", Scheme::Ws).unwrap(),
            "ws://relay.example"
        );
        assert_eq!(
            origin("wss://[FD7A:0::1]:8443", Scheme::Wss).unwrap(),
            "wss://[fd7a::1]:8443"
        );
        assert_eq!(
            origin("relay.example", Scheme::Wss).unwrap(),
            "wss://relay.example:7878"
        );
        assert_eq!(
            origin("wss://bücher.example", Scheme::Wss).unwrap(),
            "wss://xn--bcher-kva.example:7878"
        );
    }

    #[test]
    fn urls_are_completed() {
        let ok = |s: &str| {
            let t = normalize_url(s).unwrap();
            (t.scheme, t.url())
        };
        assert_eq!(
            ok("ws://127.0.0.1:7878/v1/ws"),
            (Scheme::Ws, "ws://127.0.0.1:7878/v1/ws".into())
        );
        assert_eq!(
            ok("ws://127.0.0.1:9000"),
            (Scheme::Ws, "ws://127.0.0.1:9000/v1/ws".into())
        );
        assert_eq!(
            ok("ws://127.0.0.1:9000/"),
            (Scheme::Ws, "ws://127.0.0.1:9000/v1/ws".into())
        );
        assert_eq!(
            ok("wss://h.example"),
            (Scheme::Wss, "wss://h.example:7878/v1/ws".into())
        );
        assert_eq!(ok("https://h:1/"), (Scheme::Wss, "wss://h:1/v1/ws".into()));
        assert_eq!(
            ok("127.0.0.1:9000"),
            (Scheme::Auto, "wss://127.0.0.1:9000/v1/ws".into())
        );
        assert_eq!(
            ok("localhost"),
            (Scheme::Auto, "wss://localhost:7878/v1/ws".into())
        );
        assert_eq!(ok("[::1]:9000").1, "wss://[::1]:9000/v1/ws");
        assert_eq!(
            ok("WS://host:1/custom"),
            (Scheme::Ws, "ws://host:1/custom".into())
        );
        assert_eq!(
            ok("http://host:1"),
            (Scheme::Ws, "ws://host:1/v1/ws".into())
        );
        assert_eq!(ok("  host:1  ").1, "wss://host:1/v1/ws");
        let t = normalize_url("[::1]:9000").unwrap();
        assert_eq!(t.bare_host(), "::1");
        assert!(t.is_loopback());
        for (host, loopback) in [
            ("127.0.0.2:1", true),
            ("localhost:1", true),
            ("10.0.0.1:1", false),
            ("example.com:1", false),
        ] {
            assert_eq!(
                normalize_url(host).unwrap().is_loopback(),
                loopback,
                "{host}"
            );
        }
    }

    #[test]
    fn bad_urls_are_refused_clearly() {
        assert!(matches!(normalize_url("ftp://h"), Err(UrlError::Scheme(_))));
        for bad in [
            "", "ws://", ":80", "h:0", "h:99999", "h:x", "::1", "[::1", "u@h:1",
        ] {
            assert!(normalize_url(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn plaintext_outside_loopback_and_bad_pins_are_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let trust = || TrustOptions {
            known_servers: Some(dir.path().join("known_servers")),
            ..TrustOptions::default()
        };
        let new = |url: &str, t: TrustOptions| {
            Connector::new(normalize_url(url).unwrap(), None, Vec::new(), t).map(|_| ())
        };
        let e = new("ws://10.1.2.3:7878", trust()).unwrap_err().to_string();
        assert!(
            e.contains("--insecure-plaintext") && e.contains("10.1.2.3"),
            "{e}"
        );
        assert!(
            new(
                "ws://10.1.2.3:7878",
                TrustOptions {
                    insecure_plaintext: true,
                    ..trust()
                }
            )
            .is_ok()
        );
        assert!(new("ws://127.0.0.1:7878", trust()).is_ok());
        assert!(
            new("10.1.2.3:7878", trust()).is_ok(),
            "bare: tries TLS first"
        );
        let pin = |p: &str| TrustOptions {
            pin: Some(p.into()),
            ..trust()
        };
        let e = new("wss://h:1", pin("SHA256:short"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--server-fingerprint"), "{e}");
        let good = format!("SHA256:{}", "A".repeat(43));
        assert!(new("wss://h:1", pin(&good)).is_ok());
        assert!(new("ws://127.0.0.1:1", pin(&good)).is_err());
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
