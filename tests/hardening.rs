//! Issue 10, hardening: peer strings escaped in logs (acceptance 6), data dir
//! modes (acceptance 7), what the health endpoints say, agent.pid trust.
//! Everything runs the real binary over real sockets and real files.

mod common;

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
    let mut cmd = Command::new(ccrelay_bin());
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--authorized-keys")
        .arg(f.authorized_keys())
        .arg("--data-dir")
        .arg(f.data_dir())
        .arg("--workdir")
        .arg(f.workdir())
        .args(["--log-format", format, "--log-level", "debug"])
        .arg("--agent-cmd")
        .arg(mock_agent_bin())
        .env("CCRELAY_MOCK_STATE_DIR", f.path().join("mock-state"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
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
