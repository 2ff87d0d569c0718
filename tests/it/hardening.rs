//! Hardening: peer strings escaped in logs, data dir
//! modes, what the health endpoints say, agent.pid trust.
//! Everything runs the real binary over real sockets and real files.

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::Value;

/// A device name and key material with newlines, ESC sequences and a bidi override.
const EVIL_DEVICE: &str = "phone\n2026-01-01T00:00:00Z ERROR forged line\u{1b}[31m\u{202e}red";
const EVIL_COMMENT: &str = "owner\u{1b}]0;title\u{7}\u{2066}x";
const EVIL_TYPE: &str = "ssh-ed25519\n\u{1b}[2Jforged";

/// `authorized_keys` text: the owner's key with `EVIL_COMMENT`, then a line whose
/// key blob names `EVIL_TYPE` (logged as malformed, naming the blob's type).
fn evil_keys(f: &Fixture) -> String {
    let mut parts = f.owner.public_line.split_whitespace();
    let (kind, b64) = (parts.next().unwrap(), parts.next().unwrap());
    let mut blob = Vec::new();
    blob.extend_from_slice(&(EVIL_TYPE.len() as u32).to_be_bytes());
    blob.extend_from_slice(EVIL_TYPE.as_bytes());
    blob.extend_from_slice(&[0, 0, 0, 1, 7]);
    let evil_b64 = base64::engine::general_purpose::STANDARD.encode(&blob);
    format!("{kind} {b64} {EVIL_COMMENT}\nssh-ed25519 {evil_b64} x\n")
}

/// The fixture's server command with `--log-format FORMAT` (the harness always uses json).
fn serve_cmd(f: &Fixture, format: &str) -> Command {
    let mut cmd = f.serve_command();
    cmd.args(["--log-format", format, "--log-level", "debug"])
        .arg("--agent-cmd")
        .arg(mock_agent_bin())
        .env("CCRELAY_MOCK_STATE_DIR", f.path().join("mock-state"));
    cmd
}

async fn log_in_with_evil_device(server: &TestServer, f: &Fixture) {
    let mut c = server.client(&f.owner, Some(EVIL_DEVICE)).await;
    let a = c.attach("default", None).await;
    assert_eq!(a["type"], "attached", "{a}");
    assert!(
        server
            .wait_log("authenticated", Duration::from_secs(10))
            .await,
        "no authenticated line:\n{}",
        server.logs()
    );
}

/// No raw ESC, bidi override/isolate or other dangerous character in any line.
fn assert_no_raw_controls(logs: &str) {
    for line in logs.lines() {
        assert!(
            !line.chars().any(ccrelay::escape::is_dangerous),
            "raw control or bidi character in a log line: {line:?}"
        );
    }
}

#[tokio::test]
async fn peer_strings_are_escaped_in_json_logs() {
    let f = Fixture::new();
    std::fs::write(f.authorized_keys(), evil_keys(&f)).unwrap();
    let server = f.start(ServerOptions::default());
    log_in_with_evil_device(&server, &f).await;
    let logs = server.logs();
    assert_no_raw_controls(&logs);
    // Every line is still exactly one JSON object: nothing was injected.
    for line in logs.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line:?}"));
        assert!(v["level"].is_string(), "{line}");
    }
    let json = server.log_json();
    let auth = json
        .iter()
        .find(|l| l["message"] == "authenticated")
        .expect("authenticated line");
    assert_eq!(
        auth["device"],
        "phone\\n2026-01-01T00:00:00Z ERROR forged line\\u{1b}[31m\\u{202e}red"
    );
    assert_eq!(auth["comment"], "owner\\u{1b}]0;title\\u{7}\\u{2066}x");
    let malformed = json
        .iter()
        .find(|l| l["message"] == "skipping malformed authorized_keys line")
        .expect("malformed key line logged");
    let reason = malformed["reason"].as_str().unwrap();
    assert!(
        reason.contains("ssh-ed25519\\n\\u{1b}[2Jforged"),
        "key type not escaped: {reason}"
    );
}

#[tokio::test]
async fn peer_strings_are_escaped_in_pretty_logs() {
    let f = Fixture::new();
    std::fs::write(f.authorized_keys(), evil_keys(&f)).unwrap();
    let server = TestServer::spawn(serve_cmd(&f, "pretty"));
    log_in_with_evil_device(&server, &f).await;
    let logs = server.logs();
    assert_no_raw_controls(&logs);
    // No line was forged: every line starts with the formatter's timestamp.
    for line in logs.lines() {
        assert!(
            line.len() > 20 && line.as_bytes()[4] == b'-' && line.as_bytes()[10] == b'T',
            "a log line that the formatter did not start: {line:?}"
        );
    }
    let auth = logs
        .lines()
        .find(|l| l.contains("authenticated"))
        .expect("authenticated line");
    assert!(
        auth.contains(
            r#"device="phone\n2026-01-01T00:00:00Z ERROR forged line\u{1b}[31m\u{202e}red""#
        ),
        "{auth}"
    );
    assert!(
        auth.contains(r"comment=owner\u{1b}]0;title\u{7}\u{2066}x"),
        "{auth}"
    );
    assert!(
        logs.contains(r"ssh-ed25519\n\u{1b}[2Jforged"),
        "key type not escaped:\n{logs}"
    );
}

/// Every directory under `root` (and `root`) and every file: (path, mode).
fn modes_under(root: &std::path::Path) -> Vec<(std::path::PathBuf, bool, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue; // removed meanwhile (a temp file renamed)
        };
        out.push((p.clone(), meta.is_dir(), meta.mode() & 0o7777));
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap().flatten() {
                stack.push(e.path());
            }
        }
    }
    out
}

fn assert_owner_only(root: &std::path::Path) -> Vec<String> {
    let mut names = Vec::new();
    for (path, is_dir, mode) in modes_under(root) {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} has mode {mode:04o}", path.display());
        names.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    names
}

/// After a session with prompts, every file in the data dir
/// is 0600 and every directory 0700 — including what an older version left 0644/0755.
#[tokio::test]
async fn data_dir_files_are_owner_only_after_a_session() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    // What an older version left behind: world-readable dir and file.
    let data = f.data_dir();
    std::fs::create_dir_all(data.join("sessions")).unwrap();
    std::fs::write(data.join("audit.jsonl.1"), "{}\n").unwrap();
    for (p, m) in [
        (data.clone(), 0o755),
        (data.join("sessions"), 0o755),
        (data.join("audit.jsonl.1"), 0o644),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    let server = f.start(ServerOptions::default());
    let mut c = server.client(&f.owner, Some("laptop")).await;
    c.attach("default", None).await;
    for text in ["hello", "second prompt"] {
        let ok = c.prompt(text).await;
        let id = ok["prompt_id"].as_str().unwrap().to_string();
        c.wait_turn(&id, &["ended"]).await;
    }
    // While the agent runs (agent.pid, meta.json present) and after a clean stop.
    let names = assert_owner_only(&data);
    for expected in [
        "server_id",
        "audit.jsonl",
        "audit.jsonl.1",
        "agent.pid",
        "meta.json",
        "journal",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing in {names:?}"
        );
    }
    assert!(
        names.iter().any(|n| n.ends_with(".seg")),
        "no journal segment in {names:?}"
    );
    let audit = common::audit_log_when(&data, |text| {
        text.contains("second prompt") || text.lines().count() >= 2
    });
    assert!(
        audit.contains("second prompt") || audit.lines().count() >= 2,
        "{audit}"
    );
    let mut server = server;
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(20)).is_some());
    assert_owner_only(&data);
}

/// Run `ccrelay serve` on the fixture to its exit: (code, stderr).
fn serve_to_exit(f: &Fixture) -> (Option<i32>, String) {
    let out = serve_cmd(f, "json")
        .stdout(Stdio::null())
        .output()
        .expect("ccrelay runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A data dir writable by others (or by group) is refused at start: exit 2, naming `--data-dir`.
#[test]
fn data_dir_writable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    std::fs::create_dir_all(f.data_dir()).unwrap();
    for mode in [0o777, 0o770] {
        std::fs::set_permissions(f.data_dir(), std::fs::Permissions::from_mode(mode)).unwrap();
        let (code, stderr) = serve_to_exit(&f);
        assert_eq!(code, Some(2), "mode {mode:o}: {stderr}");
        assert!(stderr.contains("--data-dir"), "{stderr}");
        assert!(stderr.contains("writable by group or others"), "{stderr}");
        assert!(
            !f.data_dir().join("server_id").exists(),
            "nothing was started"
        );
    }
}

/// A data dir owned by another user is refused (needs root to make one: skipped otherwise).
#[test]
fn data_dir_owned_by_another_user_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot chown a directory to another user; skipped");
        return;
    }
    let f = Fixture::new();
    std::fs::create_dir_all(f.data_dir()).unwrap();
    std::os::unix::fs::chown(f.data_dir(), Some(65534), Some(65534)).unwrap();
    let (code, stderr) = serve_to_exit(&f);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--data-dir"), "{stderr}");
    assert!(stderr.contains("owned by uid 65534"), "{stderr}");
}

/// An `agent.pid` naming a live process that is not the agent we started (a reused
/// pid: same pid and start time, another command line) is never signalled.
#[tokio::test]
async fn agent_pid_naming_another_process_is_not_signalled() {
    use std::os::unix::process::CommandExt;
    let f = Fixture::new();
    let mut bystander = Command::new("sleep")
        .arg("60")
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = bystander.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start: u64 = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let session_dir = f.data_dir().join("sessions/default");
    std::fs::create_dir_all(&session_dir).unwrap();
    let record =
        serde_json::json!({"pid": pid, "start": start, "cmdline": [mock_agent_bin(), "-p"]});
    std::fs::write(session_dir.join("agent.pid"), record.to_string()).unwrap();
    let server = f.start(ServerOptions::default());
    let mut c = server.client(&f.owner, None).await;
    c.attach("default", None).await;
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "a process that is not our agent was signalled"
    );
    drop(server);
    // Same record with the bystander's real command line: now it is "ours" and ended.
    let record = serde_json::json!({"pid": pid, "start": start, "cmdline": ["sleep", "60"]});
    std::fs::write(session_dir.join("agent.pid"), record.to_string()).unwrap();
    let server = f.start(ServerOptions::default());
    let mut c = server.client(&f.owner, None).await;
    c.attach("default", None).await;
    let status = tokio::task::spawn_blocking(move || bystander.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "the recorded survivor was ended");
}

/// GET `path` from a socket bound to `source` (port 0): (status, body as JSON).
async fn get_from(
    source: std::net::IpAddr,
    server: std::net::SocketAddr,
    path: &str,
    extra_headers: &str,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(source, 0)).unwrap();
    let mut stream = socket.connect(server).await.expect("connects");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {server}\r\n{extra_headers}Connection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("http answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body: Value = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status, body)
}

/// A local IPv4 address outside loopback (a connection from it to 127.0.0.1 is
/// seen by the server as coming from that address), if the machine has one.
fn non_loopback_local_v4() -> Option<std::net::IpAddr> {
    let out = Command::new("hostname").arg("-I").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
        .find(|a| a.is_ipv4() && !a.is_loopback())
}

fn assert_full_health(h: &Value, r: &Value) {
    assert_eq!(h["status"], "ok", "{h}");
    assert!(h["version"].is_string(), "{h}");
    assert!(h["connections"].is_u64(), "{h}");
    assert!(h["memory"].is_object(), "{h}");
    assert!(h["sessions"]["default"]["agent_pid"].is_u64(), "{h}");
    assert_eq!(r["ready"], true, "{r}");
    assert!(r["sessions"]["default"]["agent_pid"].is_u64(), "{r}");
    assert!(r["sessions"]["default"]["clients"].is_u64(), "{r}");
}

fn assert_minimal_health(h: &Value, r: &Value) {
    assert_eq!(*h, serde_json::json!({"status": "ok"}));
    let state = r["sessions"]["default"]["state"].as_str().expect("state");
    assert_eq!(
        *r,
        serde_json::json!({"ready": true, "sessions": {"default": {"state": state}}})
    );
}

/// From loopback: every detail. From outside loopback (a real connection from the
/// machine's non-loopback address, when it has one) or through a proxy (forwarding
/// headers): `/healthz` only its status, `/readyz` only `ready` and session states.
#[tokio::test]
async fn health_endpoints_say_less_off_loopback() {
    let f = Fixture::new();
    let server = f.start(ServerOptions::default());
    // The agent is up once a client is attached (agent_pid is set).
    let mut c = server.client(&f.owner, None).await;
    c.attach("default", None).await;
    let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let mut ready = false;
    for _ in 0..200 {
        let (_, h) = get_from(local, server.addr, "/healthz", "").await;
        if h["sessions"]["default"]["agent_pid"].is_u64() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "agent never reported a pid");
    let (hs, h) = get_from(local, server.addr, "/healthz", "").await;
    let (rs, r) = get_from(local, server.addr, "/readyz", "").await;
    assert_eq!((hs, rs), (200, 200));
    assert_full_health(&h, &r);

    for proxied in [
        "X-Forwarded-For: 203.0.113.9\r\n",
        "Forwarded: for=203.0.113.9\r\n",
    ] {
        let (hs, h) = get_from(local, server.addr, "/healthz", proxied).await;
        let (rs, r) = get_from(local, server.addr, "/readyz", proxied).await;
        assert_eq!((hs, rs), (200, 200));
        assert_minimal_health(&h, &r);
    }

    match non_loopback_local_v4() {
        Some(outside) => {
            let (hs, h) = get_from(outside, server.addr, "/healthz", "").await;
            let (rs, r) = get_from(outside, server.addr, "/readyz", "").await;
            assert_eq!((hs, rs), (200, 200));
            assert_minimal_health(&h, &r);
            println!("outside-loopback case checked from {outside}");
        }
        None => println!(
            "no non-loopback address on this machine: outside case covered by the proxy headers and the unit test"
        ),
    }
}

/// `/healthz` on a separate `--metrics-listen` listener follows the same rule.
#[tokio::test]
async fn healthz_on_the_metrics_listener_follows_the_same_rule() {
    let f = Fixture::new();
    let server = f.start(ServerOptions::default().args(&["--metrics-listen", "127.0.0.1:0"]));
    assert!(
        server
            .wait_log("metrics_addr", Duration::from_secs(10))
            .await
    );
    let addr_line = server
        .log_json()
        .into_iter()
        .find(|l| l["message"] == "listening")
        .expect("listening line");
    let metrics: std::net::SocketAddr =
        addr_line["metrics_addr"].as_str().unwrap().parse().unwrap();
    assert_ne!(metrics, server.addr);
    let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let (s, h) = get_from(local, metrics, "/healthz", "").await;
    assert_eq!(s, 200);
    assert!(h["version"].is_string() && h["sessions"].is_object(), "{h}");
    let (s, h) = get_from(local, metrics, "/healthz", "X-Real-IP: 203.0.113.9\r\n").await;
    assert_eq!(s, 200);
    assert_eq!(h, serde_json::json!({"status": "ok"}));
}
