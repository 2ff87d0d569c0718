//! Shared test harness: the real `ccrelay` binary on 127.0.0.1 port 0, real SSH
//! keys from `ssh-keygen`, and a typed WebSocket client that authenticates the way
//! any outside client would.
#![allow(dead_code)]

pub mod any_cert;
pub mod forwarder;
pub mod mock_anthropic;
pub mod mock_push;
pub mod real_cli;
pub mod require;
pub mod seed;
pub mod tmux;

pub use any_cert::tls_client_config;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ccrelay::protocol::ClientMsg;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for one expected frame before failing.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(20);

/// `timeout` times `CCRELAY_TEST_TIME_SCALE` (a whole number, default 1), for the
/// harness's waits for something that must happen (a listening line, a log line,
/// an exit, a close, a condition) — never for waits that expect nothing to come.
/// scripts/coverage sets it: under ptrace every exec of the instrumented binary
/// costs seconds before its first line runs. A longer wait changes no verdict.
pub fn scaled(timeout: Duration) -> Duration {
    let scale = std::env::var("CCRELAY_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .clamp(1, 100);
    timeout * scale
}

pub fn ccrelay_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ccrelay")
}

pub fn mock_agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ccrelay-mock-agent")
}

/// An SSH key pair made by the real ssh-keygen.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub private: PathBuf,
    pub public_line: String,
    pub fingerprint: String,
}

/// Make a key with `ssh-keygen -t <kind>` (extra args such as `-b 3072`).
pub fn keygen(dir: &Path, name: &str, kind: &str, extra: &[&str]) -> KeyPair {
    let private = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            kind,
            "-N",
            "",
            "-C",
            &format!("{name}@test"),
            "-f",
        ])
        .arg(&private)
        .args(extra)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success(), "ssh-keygen -t {kind} failed");
    let public_line = std::fs::read_to_string(private.with_extension("pub"))
        .or_else(|_| std::fs::read_to_string(format!("{}.pub", private.display())))
        .expect("public key written");
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(format!("{}.pub", private.display()))
        .output()
        .expect("ssh-keygen -l runs");
    let listing = String::from_utf8_lossy(&out.stdout);
    let fingerprint = listing
        .split_whitespace()
        .nth(1)
        .expect("fingerprint in ssh-keygen -l output")
        .to_string();
    KeyPair {
        private,
        public_line: public_line.trim().to_string(),
        fingerprint,
    }
}

/// Sign a challenge's `sign` text with a key file, as a client would.
pub fn sign(key: &KeyPair, text: &str) -> String {
    let private = ccrelay::auth::load_private_key(&key.private).expect("key loads");
    ccrelay::auth::sign_with_private_key(&private, text.as_bytes()).expect("key signs")
}

/// The text a client signs for a challenge's `sign`, bound to the origin it dialed
/// (docs/protocol.md, "Origin binding"): `<sign>:origin:<origin>`. Sign it with
/// [`sign`] or [`ssh_keygen_sign`] and send `"origin": origin` with the response.
pub fn bound_text(sign: &str, origin: &str) -> String {
    format!("{sign}:origin:{origin}")
}

/// The origin of a WebSocket URL as a browser serializes it (`ws://127.0.0.1:7878`,
/// `wss://relay.example`): what a client dialing `url` binds its signature to.
pub fn origin_of_url(url: &str) -> String {
    let parsed = url::Url::parse(url).expect("a ws:// or wss:// URL");
    let scheme = match parsed.scheme() {
        "ws" | "http" => ccrelay::names::Scheme::Ws,
        _ => ccrelay::names::Scheme::Wss,
    };
    let port = parsed.port_or_known_default().expect("a port");
    ccrelay::names::Origin::of(scheme, parsed.host_str().expect("a host"), port)
        .expect("an origin")
        .to_string()
}

/// The origin of a socket the test dialed by address.
pub fn origin_of_addr(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "wss" } else { "ws" };
    origin_of_url(&format!("{scheme}://{addr}/"))
}

/// `printf '%s' "$TEXT" | ssh-keygen -Y sign -n ccrelay-auth -f KEY`.
pub fn ssh_keygen_sign(key: &KeyPair, text: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "ccrelay-auth", "-f"])
        .arg(&key.private)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh-keygen runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen -Y sign: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Options for one server run.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `None`: the mock agent.
    pub agent_cmd: Option<String>,
    pub agent_args: Vec<String>,
    /// `--listen` address; `None`: 127.0.0.1:0 (a restart on the same port passes
    /// the first run's address).
    pub listen: Option<String>,
    /// Limit the server's open files (RLIMIT_NOFILE, soft and hard), set in the child before exec.
    pub nofile: Option<u64>,
}

impl ServerOptions {
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    pub fn args(mut self, a: &[&str]) -> Self {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }

    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = Some(addr.to_string());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    /// Run the server with at most `n` open file descriptors.
    pub fn nofile(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }
}

/// A directory with an owner key, a viewer key and a data dir; servers can be
/// restarted on it.
pub struct Fixture {
    pub dir: TempDir,
    pub owner: KeyPair,
    pub owner2: KeyPair,
    pub viewer: KeyPair,
    pub stranger: KeyPair,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let owner = keygen(dir.path(), "owner", "ed25519", &[]);
        let owner2 = keygen(dir.path(), "owner2", "ed25519", &[]);
        let viewer = keygen(dir.path(), "viewer", "ed25519", &[]);
        let stranger = keygen(dir.path(), "stranger", "ed25519", &[]);
        std::fs::write(
            dir.path().join("authorized_keys"),
            format!("{}\n{}\n", owner.public_line, owner2.public_line),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("viewer_keys"),
            format!("{}\n", viewer.public_line),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        std::fs::create_dir_all(dir.path().join("mock-state")).unwrap();
        Fixture {
            dir,
            owner,
            owner2,
            viewer,
            stranger,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn authorized_keys(&self) -> PathBuf {
        self.path().join("authorized_keys")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    pub fn workdir(&self) -> PathBuf {
        self.path().join("work")
    }

    /// `ccrelay serve` on 127.0.0.1:0 with this fixture's owner keys, data dir and
    /// workdir, stdin closed and stdout/stderr piped, for a test that needs the
    /// process itself (an exit code, a refusal at start) rather than a
    /// [`TestServer`]. The caller adds the agent (`--agent-cmd`) and the rest.
    pub fn serve_command(&self) -> Command {
        let mut cmd = Command::new(ccrelay_bin());
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--authorized-keys")
            .arg(self.authorized_keys())
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--workdir")
            .arg(self.workdir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Start `ccrelay serve` on 127.0.0.1:0 with this fixture's keys and data dir.
    /// With `CCRELAY_TEST_TLS=1` it serves TLS (`--tls-self-signed`) unless the
    /// test chose its own TLS options, so a whole suite can run over `wss://`.
    pub fn start(&self, opts: ServerOptions) -> TestServer {
        let mut opts = opts;
        if std::env::var_os("CCRELAY_TEST_TLS").is_some_and(|v| v == "1")
            && !opts.args.iter().any(|a| a.starts_with("--tls"))
        {
            opts.args.push("--tls-self-signed".into());
        }
        let mut cmd = Command::new(ccrelay_bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg(opts.listen.as_deref().unwrap_or("127.0.0.1:0"))
            .arg("--authorized-keys")
            .arg(self.authorized_keys())
            .arg("--viewer-keys")
            .arg(self.path().join("viewer_keys"))
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--workdir")
            .arg(self.workdir())
            .args(["--log-format", "json"])
            // A test may ask for another level (a flood logged at debug is slow).
            .args(if opts.args.iter().any(|a| a == "--log-level") {
                &[][..]
            } else {
                &["--log-level", "debug"][..]
            })
            .arg("--agent-cmd")
            .arg(
                opts.agent_cmd
                    .clone()
                    .unwrap_or_else(|| mock_agent_bin().to_string()),
            )
            .args(&opts.args)
            .env("CCRELAY_MOCK_STATE_DIR", self.path().join("mock-state"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        if !opts.agent_args.is_empty() {
            cmd.arg("--").args(&opts.agent_args);
        }
        if let Some(n) = opts.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
                        .map_err(std::io::Error::from)
                });
            }
        }
        TestServer::spawn(cmd)
    }
}

/// A running `ccrelay serve`. Killed on drop.
pub struct TestServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub url: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    /// Spawn and wait for the listening line.
    pub fn spawn(mut cmd: Command) -> TestServer {
        let mut child = cmd.spawn().expect("ccrelay starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr piped");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("CCRELAY_TEST_ECHO_LOGS").is_some() {
                    eprintln!("[server] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Anything more on stdout is a contract violation; keep it for the asserts.
            for line in lines.map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = match rx.recv_timeout(scaled(Duration::from_secs(30))) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not print its listening line; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        // `wss://` when the server serves TLS (--tls-cert/--tls-key, --tls-self-signed).
        let tls = line.starts_with("ccrelay listening on wss://");
        let addr: SocketAddr = line
            .strip_prefix("ccrelay listening on ws://")
            .or_else(|| line.strip_prefix("ccrelay listening on wss://"))
            .and_then(|r| r.strip_suffix("/v1/ws"))
            .unwrap_or_else(|| panic!("unexpected listening line {line:?}"))
            .parse()
            .expect("listening address parses");
        assert_ne!(addr.port(), 0, "the real port is printed");
        TestServer {
            child,
            addr,
            url: format!("{}://{addr}/v1/ws", if tls { "wss" } else { "ws" }),
            logs,
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Log lines parsed as JSON (the harness runs the server with --log-format json).
    pub fn log_json(&self) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait until a log line contains `needle`.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + scaled(timeout);
        while Instant::now() < deadline {
            if self.logs.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig)
            .expect("signal delivered");
    }

    /// Wait for the process to exit (polling), at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + scaled(timeout);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// GET a path over HTTP/1.1 (over TLS when the server serves TLS): (status, headers, body).
    pub async fn http_get(&self, path: &str) -> (u16, String, String) {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        if self.url.starts_with("wss://") {
            let tcp = TcpStream::connect(self.addr).await.expect("connects");
            let tls = tokio_rustls::TlsConnector::from(tls_client_config())
                .connect("localhost".try_into().expect("name"), tcp)
                .await
                .expect("TLS handshake");
            return http_exchange(tls, &request).await;
        }
        http_request(self.addr, &request).await
    }

    /// Connect a WebSocket (raw: the challenge is the first frame waiting).
    pub async fn connect(&self) -> TestClient {
        TestClient::connect(&self.url).await
    }

    /// Connect and authenticate with `key`.
    pub async fn client(&self, key: &KeyPair, device: Option<&str>) -> TestClient {
        let mut c = self.connect().await;
        let ok = c.authenticate(key, device).await;
        assert_eq!(ok["type"], "auth.ok", "authentication failed: {ok}");
        c
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send a raw HTTP request; returns (status, raw headers, body). Reads until the
/// body is complete (Content-Length), the headers of a 101, or EOF.
pub async fn http_request(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let stream = TcpStream::connect(addr).await.expect("connects");
    http_exchange(stream, request).await
}

/// [`http_request`] over any connected stream (plain or TLS).
pub async fn http_exchange<S>(mut stream: S, request: &str) -> (u16, String, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request written");
    let mut raw = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            let body = &raw[end + 4..];
            if status == 101 || length.is_some_and(|n| body.len() >= n) {
                return (status, head, String::from_utf8_lossy(body).to_string());
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client speaking the protocol, with helpers that fail loudly.
pub struct TestClient {
    pub ws: Ws,
    /// The origin this socket dialed, which its signatures are bound to.
    pub origin: String,
    pub challenge: Option<Value>,
    pub client_id: String,
    /// When set, the raw text of every frame received is kept in `raw`.
    pub keep_raw: bool,
    pub raw: Vec<String>,
    /// Frames skipped while waiting for a direct reply; later reads see them first.
    backlog: std::collections::VecDeque<Value>,
}

/// What `recv_frame` saw.
#[derive(Debug)]
pub enum Received {
    Frame(Value),
    Closed(Option<(u16, String)>),
}

impl TestClient {
    pub async fn connect(url: &str) -> TestClient {
        TestClient::try_connect(url)
            .await
            .expect("websocket connects")
    }

    /// [`TestClient::connect`] for tests where a refusal (429, 503) is an answer too.
    pub async fn try_connect(
        url: &str,
    ) -> Result<TestClient, tokio_tungstenite::tungstenite::Error> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(64 << 20))
            .max_frame_size(Some(64 << 20));
        // wss:// (a server with --tls-self-signed): any certificate is accepted;
        // tests/it/tls.rs checks certificates itself.
        let tls = tokio_tungstenite::Connector::Rustls(tls_client_config());
        let (ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, Some(config), false, Some(tls))
                .await?;
        Ok(TestClient::from_ws(ws))
    }

    /// Wrap a WebSocket the test opened itself (e.g. from another local address);
    /// its origin is the address it dialed.
    pub fn from_ws(ws: Ws) -> TestClient {
        let (peer, tls) = match ws.get_ref() {
            MaybeTlsStream::Plain(tcp) => (tcp.peer_addr(), false),
            MaybeTlsStream::Rustls(tls) => (tls.get_ref().0.peer_addr(), true),
            _ => panic!("an unexpected stream kind"),
        };
        let origin = origin_of_addr(peer.expect("a connected socket"), tls);
        TestClient {
            ws,
            origin,
            challenge: None,
            client_id: String::new(),
            keep_raw: false,
            raw: Vec::new(),
            backlog: Default::default(),
        }
    }

    /// Read the challenge and answer it; returns the server's answer (auth.ok or error).
    pub async fn authenticate(&mut self, key: &KeyPair, device: Option<&str>) -> Value {
        let challenge = self.recv().await;
        assert_eq!(challenge["type"], "auth.challenge", "{challenge}");
        let sign_text = challenge["sign"].as_str().expect("sign text").to_string();
        self.challenge = Some(challenge);
        let signature = sign(key, &bound_text(&sign_text, &self.origin));
        let response = ClientMsg::AuthResponse {
            id: None,
            signature,
            public_key: Some(key.public_line.clone()),
            device: device.map(str::to_string),
            channel_binding: None,
            origin: Some(self.origin.clone()),
        };
        self.send_msg(&response).await;
        let answer = self.recv().await;
        if answer["type"] == "auth.ok" {
            self.client_id = answer["client_id"].as_str().unwrap_or_default().to_string();
        }
        answer
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("frame sent");
    }

    /// Send a typed request.
    pub async fn send_msg(&mut self, msg: &ClientMsg) {
        self.send_text(&msg.to_json()).await;
    }

    /// Send a typed request with this id and return the direct reply (as
    /// [`TestClient::request`]).
    pub async fn request_msg(&mut self, msg: &ClientMsg, id: &str) -> Value {
        let req = serde_json::to_value(msg).expect("a request is JSON");
        self.request(req, id).await
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_string().into()))
            .await
            .expect("frame sent");
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("frame sent");
    }

    /// The next text frame or the close, within `timeout`.
    pub async fn recv_frame(&mut self, timeout: Duration) -> Option<Received> {
        if let Some(v) = self.backlog.pop_front() {
            return Some(Received::Frame(v));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match next {
                Some(Ok(Message::Text(t))) => {
                    if self.keep_raw {
                        self.raw.push(t.to_string());
                    }
                    return Some(Received::Frame(
                        serde_json::from_str(&t)
                            .unwrap_or_else(|e| panic!("server sent invalid JSON ({e}): {t}")),
                    ));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Some(Received::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    ));
                }
                Some(Ok(Message::Binary(_))) => panic!("server sent a binary frame"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    if std::env::var_os("CCRELAY_TEST_DEBUG").is_some() {
                        eprintln!("websocket read error: {e}");
                    }
                    return Some(Received::Closed(None));
                }
                None => return Some(Received::Closed(None)),
            }
        }
    }

    /// Forget frames that arrived before the last direct reply.
    pub fn discard_backlog(&mut self) {
        self.backlog.clear();
    }

    /// The next frame; panics on close or timeout.
    /// The next frame, passing over `session.changed` announcements: every
    /// authenticated connection gets them when any session's state changes
    /// (docs/protocol.md §4.10), at moments no test controls. A test that wants
    /// them reads them with [`TestClient::recv_until`] or `recv_frame`.
    pub async fn recv(&mut self) -> Value {
        let deadline = Instant::now() + scaled(FRAME_TIMEOUT);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_frame(left).await {
                Some(Received::Frame(v)) if v["type"] == "session.changed" => continue,
                Some(Received::Frame(v)) => return v,
                Some(Received::Closed(c)) => {
                    panic!("connection closed while a frame was expected: {c:?}")
                }
                None => panic!("no frame within {FRAME_TIMEOUT:?}"),
            }
        }
    }

    /// Skip frames until one satisfies `pred`; returns it and what was skipped.
    pub async fn recv_until(
        &mut self,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> (Value, Vec<Value>) {
        let mut skipped = Vec::new();
        let deadline = Instant::now() + scaled(FRAME_TIMEOUT * 3);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_frame(left).await {
                Some(Received::Frame(v)) if pred(&v) => return (v, skipped),
                Some(Received::Frame(v)) => skipped.push(v),
                Some(Received::Closed(c)) => {
                    panic!("closed ({c:?}) while waiting for {what}; saw {skipped:#?}")
                }
                None => panic!(
                    "timed out waiting for {what}; saw {} frames, last: {:?}",
                    skipped.len(),
                    skipped.last()
                ),
            }
        }
    }

    /// The next event frame whose inner event has `type` == `kind`.
    pub async fn recv_event(&mut self, kind: &str) -> (Value, Vec<Value>) {
        self.recv_until(kind, |v| v["type"] == "event" && v["event"]["type"] == kind)
            .await
    }

    /// Expect the connection to close (skipping frames); returns the close code and reason.
    pub async fn expect_close(&mut self, timeout: Duration) -> (Option<u16>, String, Vec<Value>) {
        let mut frames = Vec::new();
        let deadline = Instant::now() + scaled(timeout);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_frame(left).await {
                Some(Received::Frame(v)) => frames.push(v),
                Some(Received::Closed(Some((code, reason)))) => {
                    return (Some(code), reason, frames);
                }
                Some(Received::Closed(None)) => return (None, String::new(), frames),
                None => panic!("connection not closed within {timeout:?}; frames: {frames:?}"),
            }
        }
    }

    /// Send a request with an id and return the direct reply (skipping other frames).
    pub async fn request(&mut self, mut req: Value, id: &str) -> Value {
        req["id"] = Value::from(id);
        self.send(req).await;
        // Frames that arrive before the reply stay queued for later reads, after any
        // backlog that was already waiting.
        let earlier: Vec<Value> = self.backlog.drain(..).collect();
        let (reply, skipped) = self
            .recv_until(&format!("reply to {id}"), |v| v["id"] == id)
            .await;
        self.backlog.extend(earlier);
        self.backlog.extend(skipped);
        reply
    }

    /// Attach and return the `attached` reply (replayed events follow).
    pub async fn attach(&mut self, session: &str, since: Option<u64>) -> Value {
        let req = ClientMsg::Attach {
            id: None,
            session: Some(session.to_string()),
            since,
            tail: None,
            uid: None,
        };
        let reply = self.request_msg(&req, "attach").await;
        assert_eq!(reply["type"], "attached", "{reply}");
        reply
    }

    /// Send a prompt and return the `ok` reply.
    pub async fn prompt(&mut self, text: &str) -> Value {
        let reply = self
            .request_msg(
                &ClientMsg::Prompt {
                    id: None,
                    session: None,
                    content: Value::from(text),
                    key: None,
                    steer: false,
                    at: None,
                },
                "prompt",
            )
            .await;
        assert_eq!(reply["type"], "ok", "{reply}");
        reply
    }

    /// Wait for `relay.turn` with this phase for this prompt.
    pub async fn wait_turn(&mut self, prompt_id: &str, phases: &[&str]) -> (Value, Vec<Value>) {
        self.recv_until("relay.turn end", |v| {
            v["type"] == "event"
                && v["event"]["type"] == "relay.turn"
                && v["event"]["prompt_id"] == prompt_id
                && phases.iter().any(|p| v["event"]["phase"] == *p)
        })
        .await
    }
}

/// The seq of an event frame.
pub fn seq_of(v: &Value) -> u64 {
    v["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {v}"))
}

/// Wait until `f` returns true, polling; false on timeout.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + scaled(timeout);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// RSS of a process in KiB (from /proc).
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Processes whose process group is `pgid` (from /proc).
pub fn processes_in_group(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // state is fields[0]; pgrp is fields[2]. Zombies count as gone.
            if fields.get(2).and_then(|p| p.parse::<i32>().ok()) == Some(pgid)
                && fields.first() != Some(&"Z")
            {
                out.push(pid);
            }
        }
    }
    out
}

/// An ssh-agent of the test's own (`ssh-agent -D -a SOCK`), killed on drop.
pub struct SshAgent {
    child: Child,
    pub socket: PathBuf,
}

impl SshAgent {
    pub fn start(dir: &Path) -> SshAgent {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent starts");
        let agent = SshAgent { child, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !agent.socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent socket did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    /// `ssh-add KEY` into this agent.
    pub fn add(&self, key: &KeyPair) {
        let status = Command::new("ssh-add")
            .arg("-q")
            .arg(&key.private)
            .env("SSH_AUTH_SOCK", &self.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("ssh-add runs");
        assert!(status.success(), "ssh-add {} failed", key.private.display());
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The audit log (`audit.jsonl` in `data_dir`) once `ready` holds for its text.
/// The server writes it on a writer thread of its own, shortly after the event
/// a test saw: poll until it is there, for at most 10 s, then return what the
/// file holds (the test's assertions say what was missing).
pub fn audit_log_when(data_dir: &std::path::Path, ready: impl Fn(&str) -> bool) -> String {
    let path = data_dir.join("audit.jsonl");
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if ready(&text) || Instant::now() >= deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
