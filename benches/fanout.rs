//! Fan-out load generator: the release server, a minimal agent, N authenticated
//! and attached clients, and a sender driving prompts at a rate or with a window.
//!
//! Run with `cargo bench --bench fanout -- --clients 1000 --rate 50 --duration 10`
//! (or `--window 64`; `--server-bin PATH` drives another build of `ccrelay`;
//! `--also-bin PATH`, repeatable, drives the same load against more builds in the
//! same run, e.g. one from before a change; `--preset standard` is the load of
//! interest: 1,000 clients, 50 prompts/s, `--journal-fsync always`). After the
//! relay(s) the same load drives a baseline hub ([`baseline_hub`]: axum and a
//! broadcast channel, no auth, no journal; `--no-baseline` skips it), and a table
//! puts their latency and throughput side by side. Under `cargo test` (no
//! `--bench`) it is a one-second smoke run with 20 clients.
//!
//! What it does, bounded in count and time and on loopback only:
//! - starts `ccrelay serve` with this very executable as the agent (the environment
//!   variable [`AGENT_ENV`] makes it a minimal agent: it answers control requests
//!   and answers each prompt with one `assistant` line stamped with the wall-clock
//!   time it was written, then a `result`);
//! - connects N clients from several loopback source addresses (127.0.0.2 and up),
//!   at most 16 handshakes in flight per address (the server's pre-auth cap); each
//!   signs its challenge in-process (ed25519 SSHSIG) and attaches to `default`;
//! - one more owner connection sends prompts; every client checks it sees every
//!   event exactly once, in seq order, and records how long each agent line took
//!   from the agent's write to its socket;
//! - prints connect time and handshakes/s, p50/p99/max delivery latency,
//!   deliveries/s, the server's RSS per connection idle and after the traffic,
//!   and the server's CPU time per delivery (from /proc/<pid>/stat).

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use ssh_key::{Algorithm, PrivateKey};
use tokio::net::TcpSocket;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[path = "../tests/it/common/any_cert.rs"]
mod any_cert;
use any_cert::tls_client_config;
mod baseline_hub;
#[path = "support/child.rs"]
mod child;

/// Set (to anything) in the agent's environment: this executable acts as the agent.
const AGENT_ENV: &str = "CCRELAY_FANOUT_AGENT";
/// Handshakes in flight per source address (the server's per-address pre-auth cap).
const PER_ADDRESS_HANDSHAKES: usize = 16;
/// How long everything after the traffic may take to arrive before it counts as lost.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound on connecting and attaching everyone.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);

/// The options, for `--help` and an unknown argument.
const USAGE: &str = "use --clients N, --rate R | --window W, --duration S, \
     --server-bin PATH, --also-bin PATH (repeatable), --no-baseline, \
     --fsync always|interval|never, --preset standard (1000 clients, 50 prompts/s, \
     fsync always), --addresses N, --server-arg ARG, --tls";

#[derive(Debug, Clone)]
struct Args {
    clients: usize,
    rate: Option<f64>,
    window: Option<usize>,
    duration: Duration,
    server_bin: PathBuf,
    /// More relay builds driven with the same load, one after the other.
    also_bins: Vec<PathBuf>,
    /// Whether the baseline hub is driven too.
    baseline: bool,
    addresses: usize,
    server_args: Vec<String>,
    /// Serve TLS (`--tls-self-signed`) and connect with `wss://`.
    tls: bool,
}

fn parse_args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let bench = argv.iter().any(|a| a == "--bench");
    let mut args = Args {
        clients: if bench { 100 } else { 20 },
        rate: None,
        window: None,
        duration: Duration::from_secs(if bench { 10 } else { 1 }),
        server_bin: PathBuf::from(env!("CARGO_BIN_EXE_ccrelay")),
        also_bins: Vec::new(),
        baseline: true,
        addresses: 16,
        server_args: Vec::new(),
        tls: false,
    };
    let mut it = argv.into_iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match a.as_str() {
            "--bench" => {}
            "--clients" | "-n" => args.clients = value(&a).parse().expect("--clients N"),
            "--rate" => args.rate = Some(value(&a).parse().expect("--rate PROMPTS_PER_SEC")),
            "--window" => args.window = Some(value(&a).parse().expect("--window N")),
            "--duration" => {
                args.duration = Duration::from_secs_f64(value(&a).parse().expect("--duration SECS"))
            }
            "--server-bin" => args.server_bin = PathBuf::from(value(&a)),
            "--also-bin" => args.also_bins.push(PathBuf::from(value(&a))),
            "--no-baseline" => args.baseline = false,
            "--fsync" => {
                let policy = value(&a);
                args.server_args
                    .extend(["--journal-fsync".to_string(), policy]);
            }
            "--preset" => match value(&a).as_str() {
                "standard" => {
                    args.clients = 1000;
                    args.rate = Some(50.0);
                    args.window = None;
                    args.server_args
                        .extend(["--journal-fsync".to_string(), "always".to_string()]);
                }
                other => panic!("unknown preset {other}; the one preset is `standard`"),
            },
            "--addresses" => args.addresses = value(&a).parse().expect("--addresses N"),
            "--server-arg" => args.server_args.push(value(&a)),
            "--tls" => args.tls = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}; {USAGE}"),
        }
    }
    assert!(
        args.clients >= 1 && args.clients <= 20_000,
        "--clients 1..=20000"
    );
    assert!(
        args.duration <= Duration::from_secs(120),
        "--duration at most 120 s"
    );
    assert!(
        args.addresses >= 1 && args.addresses <= 250,
        "--addresses 1..=250"
    );
    assert!(args.also_bins.len() <= 8, "--also-bin at most 8 times");
    if args.rate.is_none() && args.window.is_none() {
        args.rate = Some(50.0);
    }
    args
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The minimal agent: answers every control request with success and every prompt
/// with one stamped `assistant` line and a `result`.
fn run_agent() {
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut answered = 0u64;
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let written = match v["type"].as_str() {
            Some("control_request") => {
                let id = v["request_id"].as_str().unwrap_or_default();
                writeln!(
                    out,
                    "{}",
                    json!({"type": "control_response", "response": {"subtype": "success", "request_id": id, "response": {}}})
                )
            }
            Some("user") => {
                answered += 1;
                let uuid = v["uuid"].as_str().unwrap_or_default();
                let assistant = json!({
                    "type": "assistant",
                    "message": {"role": "assistant", "content": [{"type": "text", "text": format!("answer {answered}")}]},
                    "session_id": "fanout-bench",
                    "t_ns": now_ns(),
                });
                let result = json!({
                    "type": "result", "subtype": "success", "is_error": false, "result": "ok",
                    "session_id": "fanout-bench", "user_message_uuid": uuid,
                });
                writeln!(out, "{assistant}").and_then(|()| writeln!(out, "{result}"))
            }
            _ => Ok(()),
        };
        if written.and_then(|()| out.flush()).is_err() {
            break;
        }
    }
}

/// What a run drives.
#[derive(Debug, Clone)]
enum Subject {
    /// A `ccrelay` binary.
    Relay(PathBuf),
    /// The baseline hub (this executable with `baseline_hub::HUB_ENV`).
    Hub,
}

impl Subject {
    fn label(&self) -> String {
        match self {
            Subject::Relay(bin) => bin.display().to_string(),
            Subject::Hub => "baseline hub (axum + broadcast, no auth, no journal)".into(),
        }
    }
}

/// The server process and what /proc says about it.
struct Server {
    child: Child,
    /// Where clients connect, and how.
    target: Target,
    _dir: tempfile::TempDir,
}

/// The server's WebSocket address and, with `--tls`, the client's TLS settings.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The baseline hub: no authentication, no attach request.
    hub: bool,
}

impl Target {
    fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}/v1/ws", self.addr)
    }

    /// The origin a client dialing [`Self::url`] binds its signature to
    /// (docs/protocol.md, "Origin binding").
    fn origin(&self) -> String {
        let scheme = if self.tls.is_some() {
            ccrelay::names::Scheme::Wss
        } else {
            ccrelay::names::Scheme::Ws
        };
        ccrelay::names::Origin::of(scheme, &self.addr.ip().to_string(), self.addr.port())
            .map(|o| o.to_string())
            .unwrap_or_default()
    }
}

impl Server {
    fn start(args: &Args, key: &PrivateKey, subject: &Subject) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("authorized_keys");
        let public = key.public_key().to_openssh().expect("public key encodes");
        std::fs::write(&keys, format!("{public}\n")).expect("keys written");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).expect("workdir");
        let me = std::env::current_exe().expect("own path");
        let hub = matches!(subject, Subject::Hub);
        let mut cmd = match subject {
            Subject::Relay(bin) => Command::new(bin),
            Subject::Hub => {
                let mut hub = Command::new(&me);
                hub.env(baseline_hub::HUB_ENV, "1");
                hub
            }
        };
        let tls = args.tls && !hub;
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--authorized-keys")
            .arg(&keys)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--workdir")
            .arg(&work)
            .arg("--agent-cmd")
            .arg(&me)
            .args(["--max-connections", &(args.clients + 64).to_string()])
            .args(["--max-frames-per-sec", "1000000"])
            .args(["--log-level", "warn"])
            .args(&args.server_args)
            .args(tls.then_some("--tls-self-signed"))
            .env(AGENT_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("server starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("listening line");
        let addr: SocketAddr = line
            .trim()
            .strip_prefix("ccrelay listening on ws://")
            .or_else(|| line.trim().strip_prefix("ccrelay listening on wss://"))
            .and_then(|r| r.strip_suffix("/v1/ws"))
            .unwrap_or_else(|| panic!("unexpected listening line {line:?}"))
            .parse()
            .expect("address");
        Server {
            child,
            target: Target {
                addr,
                tls: tls.then(tls_client_config),
                hub,
            },
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in bytes.
    fn rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }

    /// User + system CPU time so far.
    fn cpu(&self) -> Duration {
        cpu_of(&format!("/proc/{}/stat", self.pid()))
    }
}

/// User + system CPU time of a process, from its `/proc/<pid>/stat`.
fn cpu_of(stat_path: &str) -> Duration {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    // Fields after the command: state is #3 overall, utime #14, stime #15.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz.max(1))
}

impl Drop for Server {
    fn drop(&mut self) {
        child::stop(&mut self.child, Duration::from_secs(5));
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Why a client could not join.
#[derive(Debug)]
enum JoinError {
    Connect(String),
    Refused(String),
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinError::Connect(e) => write!(f, "connect: {e}"),
            JoinError::Refused(e) => write!(f, "refused: {e}"),
        }
    }
}

/// Connect from `source`, authenticate and attach; returns the socket and the head at attach.
async fn join(
    target: &Target,
    source: IpAddr,
    key: &PrivateKey,
    gate: &Semaphore,
) -> Result<(Ws, u64), JoinError> {
    let permit = gate
        .acquire()
        .await
        .map_err(|e| JoinError::Connect(e.to_string()))?;
    let socket = TcpSocket::new_v4().map_err(|e| JoinError::Connect(e.to_string()))?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| JoinError::Connect(format!("bind {source}: {e}")))?;
    let stream = socket
        .connect(target.addr)
        .await
        .map_err(|e| JoinError::Connect(e.to_string()))?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(64 << 20));
    let connector = match &target.tls {
        Some(tls) => tokio_tungstenite::Connector::Rustls(tls.clone()),
        None => tokio_tungstenite::Connector::Plain,
    };
    let (mut ws, _) = tokio_tungstenite::client_async_tls_with_config(
        target.url(),
        stream,
        Some(config),
        Some(connector),
    )
    .await
    .map_err(|e| JoinError::Refused(e.to_string()))?;
    if target.hub {
        // The hub announces its head at once; there is nothing to sign or attach.
        drop(permit);
        let attached = next_json(&mut ws).await?;
        return Ok((ws, attached["head"].as_u64().unwrap_or(0)));
    }
    let challenge = next_json(&mut ws).await?;
    let sign = challenge["sign"]
        .as_str()
        .ok_or_else(|| JoinError::Refused(format!("no challenge: {challenge}")))?;
    let origin = target.origin();
    let bound = format!("{sign}:origin:{origin}");
    let signature = ccrelay::auth::sign_with_private_key(key, bound.as_bytes())
        .map_err(|e| JoinError::Connect(e.to_string()))?;
    send(
        &mut ws,
        json!({"type": "auth.response", "signature": signature, "origin": origin}),
    )
    .await?;
    let ok = next_json(&mut ws).await?;
    if ok["type"] != "auth.ok" {
        return Err(JoinError::Refused(ok.to_string()));
    }
    drop(permit);
    send(
        &mut ws,
        json!({"type": "attach", "session": "default", "tail": 0}),
    )
    .await?;
    let attached = next_json(&mut ws).await?;
    if attached["type"] != "attached" {
        return Err(JoinError::Refused(attached.to_string()));
    }
    Ok((ws, attached["head"].as_u64().unwrap_or(0)))
}

async fn send(ws: &mut Ws, v: Value) -> Result<(), JoinError> {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .map_err(|e| JoinError::Connect(e.to_string()))
}

async fn next_json(ws: &mut Ws) -> Result<Value, JoinError> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Err(_) => return Err(JoinError::Connect("timed out".into())),
            Ok(None) => return Err(JoinError::Refused("closed".into())),
            Ok(Some(Err(e))) => return Err(JoinError::Refused(e.to_string())),
            Ok(Some(Ok(Message::Text(t)))) => {
                return serde_json::from_str(&t).map_err(|e| JoinError::Refused(e.to_string()));
            }
            Ok(Some(Ok(Message::Close(c)))) => {
                return Err(JoinError::Refused(format!("closed: {c:?}")));
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// The number after `"key":` in a frame, without parsing the whole frame.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// What one client saw.
#[derive(Debug, Default)]
struct Seen {
    events: u64,
    lost: u64,
    duplicated: u64,
    out_of_order: u64,
    presence_frames: u64,
    presence_bytes: u64,
    latencies_us: Vec<u32>,
    closed: Option<String>,
}

/// Read until the session's head reaches `target` (announced when the traffic ends).
async fn watch_events(mut ws: Ws, head_at_attach: u64, mut target: watch::Receiver<u64>) -> Seen {
    let mut seen = Seen::default();
    let mut last = head_at_attach;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let goal = *target.borrow();
        if goal != 0 && last >= goal {
            break;
        }
        if goal != 0 && deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + DRAIN_TIMEOUT);
        }
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        let next = tokio::select! {
            changed = target.changed() => {
                if changed.is_err() { break; }
                continue;
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => break,
            next = ws.next() => next,
        };
        match next {
            Some(Ok(Message::Text(t))) => {
                let received = now_ns();
                if t.starts_with(r#"{"type":"event""#) {
                    let Some(seq) = number_after(&t, r#""seq":"#) else {
                        continue;
                    };
                    seen.events += 1;
                    if seq <= last {
                        seen.duplicated += 1;
                    } else {
                        if seq != last + 1 {
                            seen.out_of_order += 1;
                            seen.lost += seq - last - 1;
                        }
                        last = seq;
                    }
                    if let Some(t_ns) = number_after(&t, r#""t_ns":"#) {
                        let us = received.saturating_sub(t_ns) / 1000;
                        seen.latencies_us.push(us.min(u32::MAX as u64) as u32);
                    }
                } else if t.starts_with(r#"{"type":"presence""#) {
                    seen.presence_frames += 1;
                    seen.presence_bytes += t.len() as u64;
                }
            }
            Some(Ok(Message::Close(c))) => {
                seen.closed = Some(format!("{c:?}"));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                seen.closed = Some(e.to_string());
                break;
            }
            None => {
                seen.closed = Some("eof".into());
                break;
            }
        }
    }
    let goal = *target.borrow();
    if goal > last {
        seen.lost += goal - last;
    }
    seen
}

/// What the sender did.
struct Sent {
    prompts: u64,
    results: u64,
    /// Prompts the server refused (e.g. `agent_unavailable`: its prompt queue was full).
    refused: u64,
    final_head: u64,
    traffic: Duration,
}

/// Send prompts at a rate or keeping a window in flight; wait for every result.
async fn drive(mut ws: Ws, args: &Args) -> Sent {
    let started = Instant::now();
    let mut sent = 0u64;
    let mut results = 0u64;
    let mut refused = 0u64;
    let mut head = 0u64;
    let rated = args.window.is_none();
    let period = Duration::from_secs_f64(1.0 / args.rate.unwrap_or(1.0).max(0.1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let window = args.window.unwrap_or(0) as u64;
    let prompt =
        |n: u64| json!({"type": "prompt", "session": "default", "content": format!("prompt {n}")});
    let hard_stop = Instant::now() + args.duration + DRAIN_TIMEOUT;
    if window > 0 {
        while sent < window {
            sent += 1;
            if send(&mut ws, prompt(sent)).await.is_err() {
                break;
            }
        }
    }
    loop {
        let sending = started.elapsed() < args.duration;
        if !sending && results + refused >= sent {
            break;
        }
        if Instant::now() > hard_stop {
            eprintln!(
                "sender: gave up waiting for {} results",
                sent - results - refused
            );
            break;
        }
        let frame = tokio::select! {
            _ = tick.tick(), if sending && rated => {
                sent += 1;
                if send(&mut ws, prompt(sent)).await.is_err() { break; }
                continue;
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
            f = ws.next() => f,
        };
        let Some(Ok(Message::Text(t))) = frame else {
            if matches!(frame, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) {
                eprintln!("sender: connection ended: {frame:?}");
                break;
            }
            continue;
        };
        if t.starts_with(r#"{"type":"error""#) {
            refused += 1;
            if refused == 1 {
                eprintln!("sender: a prompt was refused: {t}");
            }
            if window > 0 && started.elapsed() < args.duration {
                sent += 1;
                if send(&mut ws, prompt(sent)).await.is_err() {
                    break;
                }
            }
            continue;
        }
        if !t.starts_with(r#"{"type":"event""#) {
            continue;
        }
        if let Some(seq) = number_after(&t, r#""seq":"#) {
            head = head.max(seq);
        }
        if t.contains(r#""event":{"type":"result""#) {
            results += 1;
            if window > 0 && started.elapsed() < args.duration && sent - results - refused < window
            {
                sent += 1;
                if send(&mut ws, prompt(sent)).await.is_err() {
                    break;
                }
            }
        }
    }
    let traffic = started.elapsed();
    // The relay's own events after the last result (turn ended, state idle): wait
    // for a quiet moment so the head every client must reach is the final one.
    while let Ok(Some(Ok(Message::Text(t)))) =
        tokio::time::timeout(Duration::from_millis(300), ws.next()).await
    {
        if let Some(seq) = number_after(&t, r#""seq":"#)
            && t.starts_with(r#"{"type":"event""#)
        {
            head = head.max(seq);
        }
    }
    Sent {
        prompts: sent,
        results,
        refused,
        final_head: head,
        traffic,
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

/// The `/metrics` text (empty if it cannot be read within 5 s), over TLS when
/// the server serves TLS (its metrics then are too).
async fn scrape(server: &Target) -> String {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    async fn get(mut s: impl AsyncRead + AsyncWrite + Unpin, host: SocketAddr) -> String {
        let req = format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        if s.write_all(req.as_bytes()).await.is_err() {
            return String::new();
        }
        let mut body = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut body)).await;
        String::from_utf8_lossy(&body).into_owned()
    }
    let Ok(tcp) = tokio::net::TcpStream::connect(server.addr).await else {
        return String::new();
    };
    match &server.tls {
        None => get(tcp, server.addr).await,
        Some(config) => {
            let name = rustls_pki_types::ServerName::IpAddress(server.addr.ip().into());
            match tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
            {
                Ok(tls) => get(tls, server.addr).await,
                Err(_) => String::new(),
            }
        }
    }
}

/// Sum of the samples of a metric in the server's /metrics (0 when absent).
async fn metric(server: &Target, name: &str) -> f64 {
    scrape(server)
        .await
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn main() {
    // The hub is started with the agent's variable too (like the relay); it
    // hands it on to its own agent child, without the hub's.
    if std::env::var_os(baseline_hub::HUB_ENV).is_some() {
        raise_nofile();
        baseline_hub::run_hub(AGENT_ENV);
        return;
    }
    if std::env::var_os(AGENT_ENV).is_some() {
        run_agent();
        return;
    }
    let args = parse_args();
    raise_nofile();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut subjects = vec![Subject::Relay(args.server_bin.clone())];
    subjects.extend(args.also_bins.iter().cloned().map(Subject::Relay));
    if args.baseline {
        subjects.push(Subject::Hub);
    }
    let mut summaries = Vec::new();
    for subject in &subjects {
        println!();
        if let Some(summary) = runtime.block_on(run(&args, subject)) {
            summaries.push(summary);
        }
    }
    print_table(&summaries);
}

/// One run's headline figures, for the closing table.
struct Summary {
    label: String,
    connected: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    deliveries_per_sec: f64,
    results_per_sec: f64,
    lost: u64,
    duplicated: u64,
    cpu_us_per_delivery: f64,
}

fn print_table(summaries: &[Summary]) {
    println!();
    println!(
        "| server | connected | p50 ms | p99 ms | max ms | deliveries/s | results/s | lost/dup | server CPU µs/delivery |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for s in summaries {
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} | {}/{} | {:.2} |",
            s.label,
            s.connected,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            s.deliveries_per_sec,
            s.results_per_sec,
            s.lost,
            s.duplicated,
            s.cpu_us_per_delivery
        );
    }
}

async fn run(args: &Args, subject: &Subject) -> Option<Summary> {
    let key = PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519).expect("key");
    let key = Arc::new(key);
    let server = Server::start(args, &key, subject);
    let mode = match (args.rate, args.window) {
        (_, Some(w)) => format!("window {w}"),
        (Some(r), None) => format!("{r} prompts/s"),
        _ => unreachable!(),
    };
    println!(
        "fanout: server {} | {} clients | {mode} for {:?} | {} source addresses{}",
        subject.label(),
        args.clients,
        args.duration,
        args.addresses,
        if args.tls { " | TLS (self-signed)" } else { "" }
    );
    // The session is ready once a first client's attach answers; the RSS baseline
    // is taken before anyone connects.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_base = server.rss();

    // --------------------------------------------------------------- connect
    let gates: Vec<Arc<Semaphore>> = (0..args.addresses)
        .map(|_| Arc::new(Semaphore::new(PER_ADDRESS_HANDSHAKES)))
        .collect();
    let (target_tx, target_rx) = watch::channel(0u64);
    let connected = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let ready = Arc::new(tokio::sync::Notify::new());
    let attached_heads = Arc::new(AtomicU64::new(0));
    let connect_started = Instant::now();
    // The load generator shares the machine: its CPU during the connect storm
    // is printed next to the server's.
    let (server_cpu0, own_cpu0) = (server.cpu(), cpu_of("/proc/self/stat"));
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % args.addresses) as u8));
        let gate = gates[i % args.addresses].clone();
        let key = key.clone();
        let server_at = server.target.clone();
        let target = target_rx.clone();
        let connected = connected.clone();
        let failures = failures.clone();
        let first_failure = first_failure.clone();
        let ready = ready.clone();
        let heads = attached_heads.clone();
        let total = args.clients;
        tasks.push(tokio::spawn(async move {
            let joined = join(&server_at, source, &key, &gate).await;
            let done = |ok: bool| {
                let (c, f) = if ok {
                    (
                        connected.fetch_add(1, Ordering::SeqCst) + 1,
                        failures.load(Ordering::SeqCst),
                    )
                } else {
                    (
                        connected.load(Ordering::SeqCst),
                        failures.fetch_add(1, Ordering::SeqCst) + 1,
                    )
                };
                if c + f == total {
                    ready.notify_one();
                }
            };
            match joined {
                Ok((ws, head)) => {
                    heads.fetch_max(head, Ordering::SeqCst);
                    done(true);
                    Some(watch_events(ws, head, target).await)
                }
                Err(e) => {
                    if let Ok(mut f) = first_failure.lock() {
                        f.get_or_insert_with(|| e.to_string());
                    }
                    done(false);
                    None
                }
            }
        }));
    }
    if tokio::time::timeout(CONNECT_TIMEOUT, ready.notified())
        .await
        .is_err()
    {
        println!("connect: timed out after {CONNECT_TIMEOUT:?}");
    }
    let connect_time = connect_started.elapsed();
    let ok = connected.load(Ordering::SeqCst);
    let failed = failures.load(Ordering::SeqCst);
    println!(
        "connect: {ok} of {} authenticated and attached in {:.2} s ({:.0} handshakes/s){}",
        args.clients,
        connect_time.as_secs_f64(),
        ok as f64 / connect_time.as_secs_f64().max(1e-9),
        if failed > 0 {
            format!(
                "; {failed} refused, first: {}",
                first_failure
                    .lock()
                    .ok()
                    .and_then(|f| f.clone())
                    .unwrap_or_default()
            )
        } else {
            String::new()
        }
    );
    let (server_cpu, own_cpu) = (
        server.cpu().saturating_sub(server_cpu0),
        cpu_of("/proc/self/stat").saturating_sub(own_cpu0),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let machine = connect_time.as_secs_f64().max(1e-9) * cores;
    println!(
        "connect CPU: server {:.2} s ({:.0} µs per handshake, {:.0}% of the {cores} cores), \
         load generator {:.2} s ({:.0}% of the cores)",
        server_cpu.as_secs_f64(),
        server_cpu.as_secs_f64() * 1e6 / ok.max(1) as f64,
        server_cpu.as_secs_f64() * 100.0 / machine,
        own_cpu.as_secs_f64(),
        own_cpu.as_secs_f64() * 100.0 / machine,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = server.rss();
    println!(
        "server RSS: {:.1} MiB before connecting, {:.1} MiB with {ok} idle attached clients = {:.1} KiB per connection",
        rss_base as f64 / 1048576.0,
        rss_idle as f64 / 1048576.0,
        rss_idle.saturating_sub(rss_base) as f64 / 1024.0 / ok.max(1) as f64
    );

    // --------------------------------------------------------------- traffic
    let sender = {
        let gate = Semaphore::new(1);
        match join(&server.target, IpAddr::V4(Ipv4Addr::LOCALHOST), &key, &gate).await {
            Ok((ws, _)) => ws,
            Err(e) => {
                println!("sender could not join: {e}");
                return None;
            }
        }
    };
    let cpu_before = server.cpu();
    let fsyncs_before = metric(&server.target, "ccrelay_journal_fsync_seconds_count").await;
    let events_before = metric(&server.target, "ccrelay_events_appended_total").await;
    let fanout_before = histogram(&server.target, "ccrelay_fanout_latency_seconds").await;
    let sent = drive(sender, args).await;
    let cpu_traffic = server.cpu().saturating_sub(cpu_before);
    let fanout_after = histogram(&server.target, "ccrelay_fanout_latency_seconds").await;
    let fsyncs =
        metric(&server.target, "ccrelay_journal_fsync_seconds_count").await - fsyncs_before;
    let appended = metric(&server.target, "ccrelay_events_appended_total").await - events_before;
    let _ = target_tx.send(sent.final_head.max(1));
    let mut all = Seen::default();
    let mut latencies: Vec<u32> = Vec::new();
    let mut closed = 0usize;
    let mut first_close = None;
    for t in tasks {
        if let Ok(Some(seen)) = t.await {
            all.events += seen.events;
            all.lost += seen.lost;
            all.duplicated += seen.duplicated;
            all.out_of_order += seen.out_of_order;
            all.presence_frames += seen.presence_frames;
            all.presence_bytes += seen.presence_bytes;
            latencies.extend_from_slice(&seen.latencies_us);
            if let Some(c) = seen.closed {
                closed += 1;
                first_close.get_or_insert(c);
            }
        }
    }
    let rss_after = server.rss();
    latencies.sort_unstable();
    let deliveries = all.events;
    println!(
        "traffic: {} prompts sent, {} results, {} refused, final head {}, {:.2} s",
        sent.prompts,
        sent.results,
        sent.refused,
        sent.final_head,
        sent.traffic.as_secs_f64()
    );
    println!(
        "delivery latency (agent write -> client read): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        latencies.len()
    );
    println!(
        "deliveries: {deliveries} events to clients, {:.0} deliveries/s during the traffic",
        deliveries as f64 / sent.traffic.as_secs_f64().max(1e-9)
    );
    println!(
        "checks: {} lost, {} duplicated, {} gaps; {} clients closed early{}",
        all.lost,
        all.duplicated,
        all.out_of_order,
        closed,
        first_close
            .map(|c| format!(" (first: {c})"))
            .unwrap_or_default()
    );
    println!(
        "presence: {} frames, {} bytes to the {ok} clients ({:.0} bytes per client)",
        all.presence_frames,
        all.presence_bytes,
        all.presence_bytes as f64 / ok.max(1) as f64
    );
    println!(
        "server RSS after traffic: {:.1} MiB = {:.1} KiB per connection",
        rss_after as f64 / 1048576.0,
        rss_after.saturating_sub(rss_base) as f64 / 1024.0 / ok.max(1) as f64
    );
    println!(
        "server CPU during traffic: {:.2} s = {:.2} µs per delivery",
        cpu_traffic.as_secs_f64(),
        cpu_traffic.as_secs_f64() * 1e6 / deliveries.max(1) as f64
    );
    println!(
        "journal: {appended:.0} events appended with {fsyncs:.0} fsyncs ({:.1} events per fsync)",
        appended / fsyncs.max(1.0)
    );
    let fanout: Vec<(f64, f64)> = fanout_after
        .iter()
        .map(|(le, n)| {
            let before = fanout_before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, n - before)
        })
        .collect();
    println!(
        "server fan-out (agent line read -> frame in a client's write buffer, ccrelay_fanout_latency_seconds): p50 <= {}, p99 <= {}",
        bucket_bound(&fanout, 0.5),
        bucket_bound(&fanout, 0.99)
    );
    drop(server);
    let traffic = sent.traffic.as_secs_f64().max(1e-9);
    Some(Summary {
        label: subject.label(),
        connected: ok,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: percentile(&latencies, 1.0),
        deliveries_per_sec: deliveries as f64 / traffic,
        results_per_sec: sent.results as f64 / traffic,
        lost: all.lost,
        duplicated: all.duplicated,
        cpu_us_per_delivery: cpu_traffic.as_secs_f64() * 1e6 / deliveries.max(1) as f64,
    })
}

/// A histogram's cumulative buckets (`le`, count) from `/metrics`.
async fn histogram(server: &Target, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    scrape(server)
        .await
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The upper bound of the bucket holding quantile `q` of cumulative `buckets`.
fn bucket_bound(buckets: &[(f64, f64)], q: f64) -> String {
    let total = buckets.last().map_or(0.0, |(_, n)| *n);
    if total <= 0.0 {
        return "n/a".into();
    }
    match buckets.iter().find(|(_, n)| *n >= q * total) {
        Some((le, _)) if le.is_finite() => format!("{:.0} µs", le * 1e6),
        _ => "over the largest bucket".into(),
    }
}
