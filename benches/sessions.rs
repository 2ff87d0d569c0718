//! Sessions created by clients (docs/protocol.md §4.10, §4.11): what a session
//! costs asleep and awake, and how long a new one takes to answer.
//!
//! Run with `cargo bench --bench sessions` (options: `--sessions N` (30),
//! `--trials N` (5), `--real-cli PATH` to time the real Claude Code CLI offline
//! against the mock Anthropic API too (the pinned one in `tools/claude-cli` is
//! used when it exists), `--server-bin PATH`). It prints figures and asserts
//! nothing about time. Under `cargo test` (no `--bench`) it is a smoke run with
//! three sessions and one trial.
//!
//! What it does, bounded in count and time and on loopback only:
//! - starts the release `ccrelay serve` with `--session-root` a temporary
//!   directory and `--max-agents` as large as `--sessions`;
//! - time to first answer: `session.create` → `session.created`, then `attach` and
//!   a prompt, until the agent's first `assistant` event; per trial a new session;
//! - memory: N created sessions asleep (the server's RSS; no agent runs), then all
//!   N woken by a prompt each (the server's RSS and the sum of its agent
//!   processes' RSS, from `/proc`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use ssh_key::{Algorithm, PrivateKey};
use tokio_tungstenite::tungstenite::Message;

#[path = "support/child.rs"]
mod child;
#[path = "../tests/it/common/mock_anthropic.rs"]
#[allow(dead_code)]
mod mock_anthropic;

/// How long any one step may take before the run gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

struct Args {
    sessions: usize,
    trials: usize,
    server_bin: PathBuf,
    real_cli: Option<PathBuf>,
}

fn parse_args() -> Args {
    let bench = std::env::args().any(|a| a == "--bench");
    let pinned =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/claude-cli/node_modules/.bin/claude");
    let mut args = Args {
        sessions: if bench { 30 } else { 3 },
        trials: if bench { 5 } else { 1 },
        server_bin: PathBuf::from(env!("CARGO_BIN_EXE_ccrelay")),
        real_cli: (bench && pinned.exists()).then_some(pinned),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| panic!("{a} needs a value"))
                .to_string()
        };
        match a.as_str() {
            "--sessions" => args.sessions = value().parse().expect("--sessions N"),
            "--trials" => args.trials = value().parse().expect("--trials N"),
            "--server-bin" => args.server_bin = PathBuf::from(value()),
            "--real-cli" => args.real_cli = Some(PathBuf::from(value())),
            "--no-real-cli" => args.real_cli = None,
            _ => {}
        }
    }
    args.sessions = args.sessions.clamp(1, 200);
    args.trials = args.trials.clamp(1, 50);
    args
}

struct Server {
    child: Child,
    addr: SocketAddr,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(
        args: &Args,
        key: &PrivateKey,
        agent: &Path,
        env: &[(String, String)],
        max_agents: usize,
    ) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("authorized_keys");
        let public = key.public_key().to_openssh().expect("public key encodes");
        std::fs::write(&keys, format!("{public}\n")).expect("keys written");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).expect("root");
        let mut cmd = Command::new(&args.server_bin);
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--authorized-keys")
            .arg(&keys)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--workdir")
            .arg(&root)
            .arg("--session-root")
            .arg(&root)
            .arg("--agent-cmd")
            .arg(agent)
            .args(["--max-agents", &max_agents.to_string()])
            .args([
                "--max-sessions",
                &(args.sessions + args.trials + 8).to_string(),
            ])
            .args(["--max-frames-per-sec", "100000"])
            .args(["--log-level", "warn"])
            .envs(env.iter().map(|(k, v)| (k, v)))
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
            .and_then(|r| r.strip_suffix("/v1/ws"))
            .unwrap_or_else(|| panic!("unexpected listening line {line:?}"))
            .parse()
            .expect("address");
        Server {
            child,
            addr,
            root,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        child::stop(&mut self.child, Duration::from_secs(10));
    }
}

/// Resident set size of a process in bytes (0 when it is gone).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Every process descended from `root` (children, grandchildren, …).
fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found.remove(0);
    found
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An authenticated owner connection.
struct Client {
    ws: Ws,
    next_id: u64,
}

impl Client {
    async fn connect(addr: SocketAddr, key: &PrivateKey) -> Client {
        let url = format!("ws://{addr}/v1/ws");
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("connects");
        let challenge = next_json(&mut ws).await;
        let sign = challenge["sign"].as_str().expect("a challenge").to_string();
        let origin = format!("ws://{addr}");
        let bound = format!("{sign}:origin:{origin}");
        let signature = ccrelay::auth::sign_with_private_key(key, bound.as_bytes()).expect("signs");
        let mut c = Client { ws, next_id: 0 };
        c.send(json!({"type": "auth.response", "signature": signature, "origin": origin}))
            .await;
        let ok = next_json(&mut c.ws).await;
        assert_eq!(ok["type"], "auth.ok", "{ok}");
        c
    }

    async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("sends");
    }

    /// Send with a fresh id and return the frame answering it.
    async fn request(&mut self, mut v: Value) -> Value {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        v["id"] = json!(id);
        self.send(v).await;
        self.until(|f| f["id"] == id.as_str()).await
    }

    async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "timed out");
            let v = next_json(&mut self.ws).await;
            if pred(&v) {
                return v;
            }
        }
    }
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(STEP_TIMEOUT, ws.next()).await {
            Err(_) => panic!("no frame within {STEP_TIMEOUT:?}"),
            Ok(None) => panic!("the server closed the connection"),
            Ok(Some(Err(e))) => panic!("websocket: {e}"),
            Ok(Some(Ok(Message::Text(t)))) => {
                return serde_json::from_str(&t).expect("JSON frame");
            }
            Ok(Some(Ok(Message::Close(c)))) => panic!("closed: {c:?}"),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Create session `name` in a new directory under the root; returns its uid.
async fn create(c: &mut Client, root: &Path, name: &str) -> String {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("session dir");
    let created = c
        .request(
            json!({"type": "session.create", "workdir": dir.display().to_string(), "name": name}),
        )
        .await;
    assert_eq!(created["type"], "session.created", "{created}");
    created["uid"].as_str().expect("uid").to_string()
}

/// Attach `name` and prompt it; returns when the agent's first `assistant` event arrives.
async fn first_answer(c: &mut Client, name: &str, uid: &str) {
    let attached = c
        .request(json!({"type": "attach", "session": name, "uid": uid, "tail": 0}))
        .await;
    assert_eq!(attached["type"], "attached", "{attached}");
    let ok = c
        .request(json!({"type": "prompt", "session": name, "content": "hello"}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    c.until(|f| f["type"] == "event" && f["session"] == name && f["event"]["type"] == "assistant")
        .await;
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(label: &str, mut values: Vec<f64>) {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    let max = values[values.len() - 1];
    let min = values[0];
    println!("  {label:<44} median {median:>8.1} ms   min {min:>8.1} ms   max {max:>8.1} ms");
}

async fn time_to_first_answer(
    args: &Args,
    key: &PrivateKey,
    agent_label: &str,
    agent: &Path,
    env: &[(String, String)],
) {
    let server = Server::start(args, key, agent, env, args.trials + 2);
    let mut c = Client::connect(server.addr, key).await;
    let mut to_created = Vec::new();
    let mut to_answer = Vec::new();
    for trial in 0..args.trials {
        let name = format!("t{trial}");
        let started = Instant::now();
        let uid = create(&mut c, &server.root, &name).await;
        to_created.push(millis(started.elapsed()));
        first_answer(&mut c, &name, &uid).await;
        to_answer.push(millis(started.elapsed()));
    }
    println!(
        "time to first answer, {agent_label} ({} trials):",
        args.trials
    );
    summary("session.create -> session.created", to_created);
    summary("session.create -> first assistant event", to_answer);
}

async fn memory(args: &Args, key: &PrivateKey, agent: &Path) {
    let n = args.sessions;
    // One slot more than sessions: the `default` session keeps its agent too.
    let server = Server::start(args, key, agent, &[], n + 1);
    let mut c = Client::connect(server.addr, key).await;
    let idle_rss = rss(server.pid());
    let mut sessions = Vec::new();
    for i in 0..n {
        let name = format!("s{i}");
        let uid = create(&mut c, &server.root, &name).await;
        sessions.push((name, uid));
    }
    let asleep_rss = rss(server.pid());
    let asleep_agents = descendants(server.pid()).len();
    for (name, uid) in &sessions {
        first_answer(&mut c, name, uid).await;
    }
    let awake_rss = rss(server.pid());
    let agents = descendants(server.pid());
    let agents_rss: u64 = agents.iter().map(|p| rss(*p)).sum();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!("memory, {n} created sessions (mock agent):");
    println!(
        "  server RSS before any session            {:>8.1} MiB",
        mib(idle_rss)
    );
    println!(
        "  {n} asleep: server RSS                    {:>8.1} MiB  ({:.0} KiB per session; {asleep_agents} agent processes)",
        mib(asleep_rss),
        (asleep_rss.saturating_sub(idle_rss)) as f64 / 1024.0 / n as f64
    );
    println!(
        "  {n} awake:  server RSS                    {:>8.1} MiB  + {} agent processes {:>8.1} MiB = {:>8.1} MiB",
        mib(awake_rss),
        agents.len(),
        mib(agents_rss),
        mib(awake_rss + agents_rss)
    );
}

/// The real CLI's cost awake: one session woken, its process tree's RSS.
async fn real_cli_memory(args: &Args, key: &PrivateKey, cli: &Path, env: &[(String, String)]) {
    let server = Server::start(args, key, cli, env, 2);
    let mut c = Client::connect(server.addr, key).await;
    let uid = create(&mut c, &server.root, "one").await;
    let asleep_rss = rss(server.pid());
    first_answer(&mut c, "one", &uid).await;
    let agents = descendants(server.pid());
    let agents_rss: u64 = agents.iter().map(|p| rss(*p)).sum();
    println!(
        "memory, real CLI: one awake session's agent processes {:>8.1} MiB (server {:.1} MiB asleep); 30 awake would hold about {:.1} GiB",
        agents_rss as f64 / (1024.0 * 1024.0),
        asleep_rss as f64 / (1024.0 * 1024.0),
        30.0 * agents_rss as f64 / (1024.0 * 1024.0 * 1024.0)
    );
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let key = PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519).expect("key");
    let mock_agent = PathBuf::from(env!("CARGO_BIN_EXE_ccrelay-mock-agent"));
    runtime.block_on(async {
        time_to_first_answer(&args, &key, "mock agent", &mock_agent, &[]).await;
        memory(&args, &key, &mock_agent).await;
        if let Some(cli) = &args.real_cli {
            let api = mock_anthropic::MockAnthropic::start()
                .await
                .expect("mock API starts");
            let home = tempfile::tempdir().expect("home");
            let env = offline_env(home.path(), &api.base_url);
            time_to_first_answer(&args, &key, "real CLI + mock API", cli, &env).await;
            real_cli_memory(&args, &key, cli, &env).await;
        } else {
            println!("real CLI: not timed (no --real-cli PATH and no tools/claude-cli install)");
        }
    });
}

/// The environment that runs the real CLI offline against the mock API, with all
/// its state in `home` (as the integration tests do).
fn offline_env(home: &Path, base_url: &str) -> Vec<(String, String)> {
    let config = home.join(".claude");
    let tmp = home.join("tmp");
    std::fs::create_dir_all(&config).expect("config dir");
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    [
        ("ANTHROPIC_BASE_URL", base_url.to_string()),
        ("ANTHROPIC_API_KEY", "test".to_string()),
        ("HOME", home.display().to_string()),
        ("CLAUDE_CONFIG_DIR", config.display().to_string()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_string()),
        ("DISABLE_TELEMETRY", "1".to_string()),
        ("DISABLE_AUTOUPDATER", "1".to_string()),
        ("DISABLE_ERROR_REPORTING", "1".to_string()),
        ("TMPDIR", tmp.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
