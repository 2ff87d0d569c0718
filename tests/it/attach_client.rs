//! `ccrelay attach` end to end: the real binary as client (a child process) against
//! the real `ccrelay serve` with the mock agent. Covers the scriptable modes and
//! exit codes, key selection (ssh-agent, refused keys, askpass), reconnection
//! across a server restart without duplicates, and two interactive terminals
//! (tmux) sharing one permission prompt.

use crate::common;

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::tmux::Tmux;
use common::{Fixture, KeyPair, ServerOptions, ccrelay_bin, keygen};
use serde_json::Value;

/// How long one client run may take (the machine is shared and loaded).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A finished client run.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!(
                        "stdout line is not JSON ({e}): {l:?}\nstdout:\n{}\nstderr:\n{}",
                        self.stdout, self.stderr
                    )
                })
            })
            .collect()
    }
}

/// `ccrelay attach ARGS` with a clean key environment: no agent, no askpass, a
/// HOME without keys, no colours, stdin closed.
fn attach_cmd(fx: &Fixture, args: &[&str]) -> Command {
    let home = fx.path().join("home");
    std::fs::create_dir_all(&home).expect("home dir");
    let mut cmd = Command::new(ccrelay_bin());
    cmd.arg("attach")
        .args(args)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("SSH_ASKPASS")
        .env_remove("SSH_ASKPASS_REQUIRE")
        // known_servers lives under HOME (per fixture), not a shared config dir.
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", &home)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn key_arg(k: &KeyPair) -> String {
    k.private.display().to_string()
}

/// A running client whose output is collected as it comes.
struct Live {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Live {
    fn spawn(mut cmd: Command) -> Live {
        let mut child = cmd.spawn().expect("ccrelay attach starts");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().expect("stdout piped"), stdout.clone()),
            collect(child.stderr.take().expect("stderr piped"), stderr.clone()),
        ];
        Live {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait for the exit; kill and panic after `timeout`.
    fn wait(mut self, timeout: Duration) -> Run {
        let deadline = Instant::now() + common::scaled(timeout);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // The reader threads end at the pipes' end of file: wait for that
                // (bounded, in case a grandchild still holds a pipe open).
                let drained = Instant::now() + common::scaled(Duration::from_secs(5));
                while Instant::now() < drained && !self.readers.iter().all(|r| r.is_finished()) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return Run {
                    status,
                    stdout: self.stdout(),
                    stderr: self.stderr(),
                };
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "client did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Poll until `pred(stdout)` holds.
    fn wait_stdout(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + common::scaled(timeout);
        while Instant::now() < deadline {
            if pred(&self.stdout()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out waiting for {what}\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Read `pipe` into `sink` until its end of file, on a thread of its own.
fn collect(
    mut pipe: impl Read + Send + 'static,
    sink: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    })
}

fn run(cmd: Command) -> Run {
    Live::spawn(cmd).wait(CLIENT_TIMEOUT)
}

/// The inner events of the event frames in `--json` output.
fn events(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "event")
        .map(|v| &v["event"])
        .collect()
}

#[test]
fn prompt_json_prints_its_turn_and_exits_0() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let out = run(attach_cmd(
        &fx,
        &[
            "--prompt",
            "hello",
            "--json",
            "-i",
            &key_arg(&fx.owner),
            &server.url,
        ],
    ));
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    let lines = out.json_lines();
    let evs = events(&lines);
    let prompt = evs
        .iter()
        .find(|e| e["type"] == "relay.prompt")
        .unwrap_or_else(|| panic!("no relay.prompt in {}", out.stdout));
    assert_eq!(prompt["content"], "hello");
    let prompt_id = prompt["prompt_id"].as_str().expect("prompt_id");
    assert!(
        evs.iter()
            .any(|e| e["type"] == "result" && e["is_error"] == false),
        "no successful result: {}",
        out.stdout
    );
    assert!(
        evs.iter().any(|e| e["type"] == "relay.turn"
            && e["phase"] == "ended"
            && e["prompt_id"] == prompt_id),
        "no relay.turn ended for {prompt_id}"
    );
    // tail 0: nothing from before the prompt was replayed.
    let first_event = evs.first().expect("events");
    assert_eq!(first_event["type"], "relay.prompt");
}

#[test]
fn prompt_permission_allow_runs_the_tool_and_no_policy_exits_3() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let key = key_arg(&fx.owner);
    let allowed = run(attach_cmd(
        &fx,
        &[
            "--prompt",
            "please run-bash",
            "--allow",
            "--json",
            "-i",
            &key,
            &server.url,
        ],
    ));
    assert_eq!(allowed.code(), Some(0), "stderr: {}", allowed.stderr);
    let lines = allowed.json_lines();
    let evs = events(&lines);
    let tool_result = evs
        .iter()
        .filter(|e| e["type"] == "user")
        .flat_map(|e| {
            e["message"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|b| b["type"] == "tool_result")
        .unwrap_or_else(|| panic!("no tool_result: {}", allowed.stdout));
    assert!(
        tool_result["content"].to_string().contains("relay-ok"),
        "{tool_result}"
    );
    assert!(
        evs.iter()
            .any(|e| e["type"] == "relay.resolved" && e["response"]["behavior"] == "allow"),
        "no allow resolution"
    );

    // Human mode shows the same turn readably.
    let denied = run(attach_cmd(
        &fx,
        &[
            "--prompt",
            "please run-bash",
            "--deny",
            "-i",
            &key,
            &server.url,
        ],
    ));
    assert_eq!(denied.code(), Some(0), "stderr: {}", denied.stderr);
    assert!(
        denied.stdout.contains("⚙ Bash sh -c 'echo relay-ok'"),
        "{}",
        denied.stdout
    );
    assert!(
        denied.stdout.contains("Bash denied by"),
        "{}",
        denied.stdout
    );

    // Last on this server: without a policy the prompt stays pending.
    let stuck = run(attach_cmd(
        &fx,
        &["--prompt", "please run-bash", "-i", &key, &server.url],
    ));
    assert_eq!(
        stuck.code(),
        Some(3),
        "stdout: {}\nstderr: {}",
        stuck.stdout,
        stuck.stderr
    );
    assert!(
        stuck.stderr.contains("permission needed")
            && stuck.stderr.contains("Bash")
            && stuck.stderr.contains("--allow"),
        "stderr: {}",
        stuck.stderr
    );
}

#[test]
fn agent_keys_are_tried_one_per_connection_until_one_is_accepted() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let agent = common::SshAgent::start(fx.path());
    agent.add(&fx.stranger);
    agent.add(&fx.owner);
    let mut cmd = attach_cmd(
        &fx,
        &["--prompt", "hello", "--device", "agent-test", &server.url],
    );
    cmd.env("SSH_AUTH_SOCK", &agent.socket);
    let out = run(cmd);
    assert_eq!(
        out.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    let logs = server.logs();
    let failed = logs
        .find("authentication failed")
        .unwrap_or_else(|| panic!("the stranger key was not offered first:\n{logs}"));
    let accepted = logs
        .lines()
        .find(|l| l.contains("authenticated") && l.contains(&fx.owner.fingerprint))
        .unwrap_or_else(|| panic!("the owner key was not accepted:\n{logs}"));
    let accepted_at = logs.find(accepted).expect("line in logs");
    assert!(
        failed < accepted_at,
        "refusal should come before acceptance"
    );
    assert!(accepted.contains("agent-test"), "device sent: {accepted}");
}

#[test]
fn an_unknown_key_is_refused_with_exit_2_naming_its_fingerprint() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let out = run(attach_cmd(
        &fx,
        &[
            "--prompt",
            "hello",
            "-i",
            &key_arg(&fx.stranger),
            &server.url,
        ],
    ));
    assert_eq!(out.code(), Some(2), "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("no authorized key: tried stranger ("),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&fx.stranger.fingerprint),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "stdout: {}", out.stdout);
}

#[test]
fn a_passphrase_key_is_unlocked_through_askpass() {
    let fx = Fixture::new();
    let locked = keygen(fx.path(), "locked", "ed25519", &["-N", "secret"]);
    // ssh-keygen's last -N wins; make sure the key really is encrypted.
    let text = std::fs::read_to_string(&locked.private).expect("key file");
    assert!(
        ccrelay::auth::load_private_key(&locked.private)
            .expect("loads")
            .is_encrypted(),
        "test key is not encrypted: {}",
        text.len()
    );
    let keys = std::fs::read_to_string(fx.authorized_keys()).expect("keys file");
    std::fs::write(
        fx.authorized_keys(),
        format!("{keys}{}\n", locked.public_line),
    )
    .expect("keys written");
    let server = fx.start(ServerOptions::default());
    let askpass = |name: &str, pass: &str| {
        let path = fx.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\nprintf '%s\\n' '{pass}'\n")).expect("script");
        let mut perms = std::fs::metadata(&path).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).expect("chmod");
        path
    };
    let good = askpass("askpass-good", "secret");
    let mut cmd = attach_cmd(
        &fx,
        &["--prompt", "hello", "-i", &key_arg(&locked), &server.url],
    );
    cmd.env("SSH_ASKPASS", &good)
        .env("SSH_ASKPASS_REQUIRE", "force");
    let out = run(cmd);
    assert_eq!(
        out.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains("You said: hello"), "{}", out.stdout);

    let bad = askpass("askpass-bad", "wrong");
    let mut cmd = attach_cmd(
        &fx,
        &["--prompt", "hello", "-i", &key_arg(&locked), &server.url],
    );
    cmd.env("SSH_ASKPASS", &bad)
        .env("SSH_ASKPASS_REQUIRE", "force");
    let out = run(cmd);
    assert_eq!(out.code(), Some(2), "stderr: {}", out.stderr);
    assert!(out.stderr.contains("wrong passphrase"), "{}", out.stderr);
    assert!(out.stderr.contains(&locked.fingerprint), "{}", out.stderr);
}

#[test]
fn connection_and_usage_errors_exit_2_with_a_clear_message() {
    let fx = Fixture::new();
    // A port nobody listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = run(attach_cmd(
        &fx,
        &["--prompt", "x", "-i", &key_arg(&fx.owner), &addr],
    ));
    assert_eq!(out.code(), Some(2));
    assert!(
        // A bare address tries TLS first (wss://), and the socket is refused before that.
        out.stderr.contains(&format!(
            "cannot connect to wss://127.0.0.1:{port}/v1/ws: connection refused"
        )),
        "{}",
        out.stderr
    );
    let out = run(attach_cmd(
        &fx,
        &["-i", &key_arg(&fx.owner), "ws://192.0.2.1:1"],
    ));
    assert_eq!(out.code(), Some(2));
    assert!(
        out.stderr.contains("refusing plaintext ws:// to 192.0.2.1")
            && out.stderr.contains("--insecure-plaintext"),
        "{}",
        out.stderr
    );
    let out = run(attach_cmd(&fx, &["--allow", "127.0.0.1:1"]));
    assert_eq!(out.code(), Some(2), "clap usage error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_server_is_reported_with_its_retry_after() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&["--max-connections", "1"]));
    // Holds the only slot (authenticated, so it stays).
    let _holder = server.client(&fx.owner2, Some("holder")).await;
    let out = tokio::task::spawn_blocking({
        let cmd = attach_cmd(
            &fx,
            &["--prompt", "x", "-i", &key_arg(&fx.owner), &server.url],
        );
        move || run(cmd)
    })
    .await
    .expect("client run");
    assert_eq!(out.code(), Some(2), "stderr: {}", out.stderr);
    assert!(out.stderr.contains("HTTP 503"), "{}", out.stderr);
    assert!(out.stderr.contains("retry after"), "{}", out.stderr);
}

#[test]
fn reconnect_across_a_server_restart_shows_every_event_once() {
    let fx = Fixture::new();
    let mut server = fx.start(ServerOptions::default());
    let addr = server.addr.to_string();
    let key = key_arg(&fx.owner);
    let scripted = Live::spawn(attach_cmd(
        &fx,
        &["--prompt", "slow", "--json", "-i", &key, &server.url],
    ));
    // A human-mode watcher (stdin closed: it only shows the session).
    let watcher = Live::spawn(attach_cmd(
        &fx,
        &["-i", &key, "--device", "watcher", &server.url],
    ));
    scripted.wait_stdout("5 streamed deltas", Duration::from_secs(30), |s| {
        s.matches("text_delta").count() >= 5
    });
    server.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(
        server.wait_exit(Duration::from_secs(10)).is_some(),
        "server killed"
    );
    drop(server);
    let _server = fx.start(ServerOptions::default().listen(&addr));

    let out = scripted.wait(CLIENT_TIMEOUT);
    assert_eq!(
        out.code(),
        Some(1),
        "the killed turn is aborted\nstdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stderr.contains("reconnecting"),
        "stderr: {}",
        out.stderr
    );
    let lines = out.json_lines();
    let seqs: Vec<u64> = lines
        .iter()
        .filter(|v| v["type"] == "event")
        .map(|v| v["seq"].as_u64().expect("seq"))
        .collect();
    let first = *seqs.first().expect("events");
    let expected: Vec<u64> = (first..first + seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "seqs must be contiguous with no duplicates");
    let evs = events(&lines);
    let prompt_id = evs
        .iter()
        .find(|e| e["type"] == "relay.prompt")
        .and_then(|e| e["prompt_id"].as_str())
        .expect("relay.prompt");
    assert!(
        evs.iter().any(|e| e["type"] == "relay.turn"
            && e["phase"] == "aborted"
            && e["prompt_id"] == prompt_id),
        "no aborted turn: {}",
        out.stdout
    );
    let deltas: Vec<String> = evs
        .iter()
        .filter(|e| e["event"]["delta"]["type"] == "text_delta")
        .map(|e| {
            e["event"]["delta"]["text"]
                .as_str()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect();
    let expected: Vec<String> = (0..deltas.len()).map(|i| format!("slow-{i}")).collect();
    assert_eq!(deltas, expected, "every delta once, in order");

    watcher.wait_stdout("the aborted turn", Duration::from_secs(30), |s| {
        s.contains("turn aborted")
    });
    let shown = watcher.stdout();
    for d in &deltas {
        assert_eq!(
            shown.matches(&format!("{d} ")).count(),
            1,
            "{d} shown once in:\n{shown}"
        );
    }
    assert_eq!(
        shown.matches("▶ ").count(),
        1,
        "the prompt shown once:\n{shown}"
    );
    assert!(
        watcher.stderr().contains("reconnected"),
        "{}",
        watcher.stderr()
    );
}

/// The empty editor line (capture-pane drops the trailing space of "> ").
fn is_editor_line(line: &str) -> bool {
    line == ">" || line.starts_with("> ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_terminals_share_a_permission_prompt() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let home = fx.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let tmux = Tmux::new("attach");
    for device in ["laptop", "phone"] {
        let command = format!(
            "env -u SSH_AUTH_SOCK HOME={} NO_COLOR=1 {} attach -i {} --device {device} {}; echo CLIENT-EXITED $?; sleep 600",
            home.display(),
            ccrelay_bin(),
            fx.owner.private.display(),
            server.url
        );
        tmux.tmux(&[
            "new-session",
            "-d",
            "-s",
            device,
            "-x",
            "200",
            "-y",
            "50",
            &command,
        ]);
        // One at a time, so the laptop is attached before the phone joins and sees
        // it arrive (otherwise, under load, the phone may already be listed).
        tmux.wait_for(device, "the editor", |s| {
            s.contains("connected to") && s.lines().any(is_editor_line)
        });
    }
    tmux.wait_for("laptop", "the phone joining", |s| {
        s.contains("phone joined")
    });

    let mut script = server.client(&fx.owner2, Some("script")).await;
    script.attach("default", None).await;
    let reply = script.prompt("please run-bash").await;
    let prompt_id = reply["prompt_id"].as_str().expect("prompt_id").to_string();

    for device in ["laptop", "phone"] {
        let screen = tmux.wait_for(device, "the permission prompt", |s| {
            s.contains("Allow Bash? [y] yes")
        });
        assert!(screen.contains("▶ script: please run-bash"), "{screen}");
        assert!(
            screen.contains("? permission: Bash sh -c 'echo relay-ok'"),
            "{screen}"
        );
    }
    tmux.tmux(&["send-keys", "-t", "laptop", "y"]);

    let phone = tmux.wait_for("phone", "the answer from laptop", |s| {
        s.contains("✓ Bash allowed by laptop") && !s.contains("Allow Bash?")
    });
    assert!(!phone.contains("laptop (you)"), "{phone}");
    let laptop = tmux.wait_for("laptop", "its own answer", |s| {
        s.contains("✓ Bash allowed by laptop (you)") && !s.contains("Allow Bash?")
    });
    assert!(laptop.lines().any(is_editor_line), "editor back:\n{laptop}");
    let (_ended, _) = script.wait_turn(&prompt_id, &["ended"]).await;
    tmux.wait_for("phone", "the tool output", |s| {
        s.contains("relay-ok") && s.contains("✓ done")
    });

    // Ctrl-D on an empty line quits with 0.
    for device in ["laptop", "phone"] {
        tmux.tmux(&["send-keys", "-t", device, "C-d"]);
        tmux.wait_for(device, "the exit", |s| s.contains("CLIENT-EXITED 0"));
    }
}

#[test]
fn lines_on_stdin_are_prompts() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let mut cmd = attach_cmd(&fx, &["--json", "-i", &key_arg(&fx.owner), &server.url]);
    cmd.stdin(Stdio::piped());
    let mut live = Live::spawn(cmd);
    {
        use std::io::Write as _;
        let stdin = live.child.stdin.as_mut().expect("stdin piped");
        stdin.write_all(b"hello from a pipe\n").expect("written");
    }
    live.wait_stdout("the turn's end", Duration::from_secs(30), |s| {
        s.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v["event"]["type"] == "relay.turn" && v["event"]["phase"] == "ended")
    });
    let out = live.stdout();
    assert!(out.contains("You said: hello from a pipe"), "{out}");
    // Every stdout line is JSON; the human messages went to stderr.
    for l in out.lines() {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
}

/// `ccrelay demo`: its own relay (a throwaway key, the built-in mock agent behind
/// the binary's own symlink) and `attach` on this terminal. A line on stdin is a
/// prompt answered by the mock agent; Ctrl-C (SIGINT) on the idle session ends
/// the demo with 0, and the demo's directory (key, data, log) is gone afterwards.
#[test]
fn demo_runs_relay_agent_and_client_then_removes_its_directory() {
    let fx = Fixture::new();
    let tmp = fx.path().join("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let mut cmd = Command::new(ccrelay_bin());
    cmd.arg("demo")
        .env("TMPDIR", &tmp)
        .env("HOME", fx.path())
        .env("NO_COLOR", "1")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("XDG_CONFIG_HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut live = Live::spawn(cmd);
    {
        use std::io::Write as _;
        let stdin = live.child.stdin.as_mut().expect("stdin piped");
        stdin.write_all(b"hello demo\n").expect("written");
    }
    live.wait_stdout("the mock agent's answer", CLIENT_TIMEOUT, |s| {
        s.contains("You said: hello demo")
    });
    let err = live.stderr();
    assert!(err.contains("ccrelay demo"), "{err}");
    assert!(err.contains("relay:   ws://127.0.0.1:"), "{err}");
    assert!(err.contains("ccrelay-mock-agent"), "{err}");
    // The demo's directory exists while it runs, named after its pid.
    let dir = tmp.join(format!("ccrelay-demo-{}", live.child.id()));
    assert!(dir.join("demo_key").is_file(), "{}", dir.display());
    assert!(dir.join("ccrelay.log").is_file());
    // End of input leaves the client watching; Ctrl-C on an idle session ends
    // the demo with 0 and the relay with it.
    drop(live.child.stdin.take());
    live.wait_stdout("the turn's end", CLIENT_TIMEOUT, |s| s.contains("✓ done"));
    let pid = nix::unistd::Pid::from_raw(live.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let out = live.wait(CLIENT_TIMEOUT);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(!dir.exists(), "demo directory left behind");
}

/// `ccrelay demo --listen` on an address already in use: the relay never listens,
/// the demo exits 2 with the cause (and where its log was), and leaves nothing in
/// the temporary directory.
#[test]
fn demo_with_a_listen_address_in_use_exits_2_quoting_the_log() {
    let fx = Fixture::new();
    let tmp = fx.path().join("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let mut cmd = Command::new(ccrelay_bin());
    cmd.args(["demo", "--listen", &addr])
        .env("TMPDIR", &tmp)
        .env("HOME", fx.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run(cmd);
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.starts_with("ccrelay demo: "), "{}", out.stderr);
    // The log is quoted, not pointed at: its directory is gone when the demo exits.
    assert!(out.stderr.contains("log said"), "{}", out.stderr);
    assert!(out.stderr.contains(&addr), "{}", out.stderr);
    let left: Vec<_> = std::fs::read_dir(&tmp).expect("tmp").collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A pseudo-terminal pair: the master end the test reads and types into, the
/// slave end the client gets as stdin, stdout and stderr.
struct Pty {
    master: std::fs::File,
    slave: std::os::fd::OwnedFd,
}

fn open_pty(cols: u16, rows: u16) -> Pty {
    use std::os::fd::FromRawFd as _;
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two new descriptors, which are owned from here on.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and owned by nothing else.
    unsafe {
        Pty {
            master: std::fs::File::from_raw_fd(master),
            slave: std::os::fd::OwnedFd::from_raw_fd(slave),
        }
    }
}

/// Terminal output as text: escape sequences and carriage returns removed, and
/// the editor (its status line and the empty `> `) that streamed text is written around dropped, so
/// a streamed answer reads as one string.
fn plain(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters up to a final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL.
                Some(']') => for _ in chars.by_ref().take_while(|&c| c != '\x07') {},
                _ => {}
            },
            '\r' => {}
            c => out.push(c),
        }
    }
    // The status line drawn with the editor (context and cost) goes with it.
    let mut from = 0;
    while let Some(at) = out[from..].find("\ncontext ").map(|i| from + i) {
        let end = out[at + 1..].find('\n').map_or(out.len(), |i| at + 1 + i);
        if out[at..end].contains(" · $") {
            out.replace_range(at..end, "");
        } else {
            from = at + 1;
        }
    }
    out.replace("\n> ", "")
}

/// Interactive mode on a real pseudo-terminal, the client a direct child of the
/// test (the tmux tests run it under tmux's server): the banner and the editor,
/// a typed prompt sent with Enter and answered, a permission prompt answered with
/// one key (`n`: denied), and Ctrl-D on an empty line exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_on_a_pty_prompts_answers_a_permission_and_exits_on_ctrl_d() {
    use std::io::Write as _;
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let home = fx.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let pty = open_pty(120, 40);
    let mut cmd = Command::new(ccrelay_bin());
    cmd.args([
        "attach",
        "--device",
        "tty",
        "-i",
        &key_arg(&fx.owner),
        &server.url,
    ])
    .env_remove("SSH_AUTH_SOCK")
    .env_remove("XDG_CONFIG_HOME")
    .env("HOME", &home)
    .env("TERM", "xterm")
    .env_remove("NO_COLOR")
    .stdin(Stdio::from(pty.slave.try_clone().expect("dup")))
    .stdout(Stdio::from(pty.slave.try_clone().expect("dup")))
    .stderr(Stdio::from(pty.slave.try_clone().expect("dup")));
    let mut child = cmd.spawn().expect("ccrelay attach starts");
    drop(cmd);
    let Pty { master, slave } = pty;
    // Only the child holds the slave now: reading the master ends (EIO) at its exit.
    drop(slave);
    let screen = Arc::new(Mutex::new(String::new()));
    collect(master.try_clone().expect("dup master"), screen.clone());
    let mut keys = master;
    let wait_for = |what: &str, pred: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + common::scaled(CLIENT_TIMEOUT);
        loop {
            let text = screen.lock().unwrap().clone();
            if pred(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; terminal output:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let text = wait_for("the banner", &|s| plain(s).contains("connected to"));
    assert!(text.contains(&server.url), "{text}");
    // Colour is on for a terminal without NO_COLOR.
    assert!(text.contains("\x1b["), "{text:?}");
    keys.write_all(b"hello from a terminal\r").expect("typed");
    wait_for("the answer", &|s| {
        plain(s).contains("You said: hello from a terminal")
    });

    keys.write_all(b"please run-bash\r").expect("typed");
    wait_for("the permission prompt", &|s| {
        plain(s).contains("Allow Bash?")
    });
    keys.write_all(b"n").expect("typed");
    // The answer is shown as ours, the agent gets the denial as the tool's result,
    // and the turn ends without the tool having run.
    let text = wait_for("the denial and the turn's end", &|s| {
        let p = plain(s);
        p.contains("Bash denied by tty (you)")
            && p.contains("⎿ denied by tty")
            && p.matches("✓ done").count() == 2
    });
    assert!(!plain(&text).contains("⎿ relay-ok"), "{text}");

    keys.write_all(b"\x04").expect("Ctrl-D");
    let deadline = Instant::now() + common::scaled(CLIENT_TIMEOUT);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no exit after Ctrl-D:\n{}", screen.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{}", screen.lock().unwrap());
}

/// A display that cannot keep up (its stdout is not read): `attach` holds at most
/// its inbound queue (64 frames in this test build), then closes its connection as
/// lagging (4008) instead of buffering without limit, reconnects once the display
/// drains, and resumes from the last event it showed: every seq of the flood is
/// printed exactly once, in order.
#[test]
fn a_display_that_falls_behind_is_closed_as_lagging_and_resumes_without_loss() {
    use std::io::Write as _;
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let mut cmd = attach_cmd(&fx, &["--json", "-i", &key_arg(&fx.owner), &server.url]);
    cmd.env("CCRELAY_TEST_ATTACH_QUEUE", "64")
        .stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("ccrelay attach starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let stderr = Arc::new(Mutex::new(String::new()));
    collect(child.stderr.take().expect("stderr piped"), stderr.clone());
    child
        .stdin
        .as_mut()
        .expect("stdin piped")
        .write_all(b"flood 4000\n")
        .expect("prompt written");

    // Nobody reads stdout: the pipe fills, the display stops, the queue fills and
    // the client closes its own connection. The server counts that close.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut closed = false;
    let deadline = Instant::now() + common::scaled(Duration::from_secs(60));
    while Instant::now() < deadline {
        let (_, _, metrics) = rt.block_on(server.http_get("/metrics"));
        if metrics.lines().any(|l| {
            l.starts_with("ccrelay_connections_closed_total{reason=\"client\"}")
                && l.split_whitespace()
                    .last()
                    .and_then(|n| n.parse::<f64>().ok())
                    >= Some(1.0)
        }) {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        closed,
        "the lagging client never closed its connection; stderr: {}\nserver closes: {}",
        stderr.lock().unwrap(),
        server
            .logs()
            .lines()
            .filter(|l| l.contains("connection clos"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Now the display drains: everything arrives, once, in order.
    let out = Arc::new(Mutex::new(String::new()));
    collect(stdout, out.clone());
    let deadline = Instant::now() + common::scaled(Duration::from_secs(60));
    let ended = |s: &str| {
        s.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v["event"]["type"] == "relay.turn" && v["event"]["phase"] == "ended")
    };
    while Instant::now() < deadline && !ended(&out.lock().unwrap()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = out.lock().unwrap().clone();
    assert!(
        ended(&text),
        "the turn never ended on screen; stderr: {}",
        stderr.lock().unwrap()
    );
    let seqs: Vec<u64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "event")
        .filter_map(|v| v["seq"].as_u64())
        .collect();
    assert!(seqs.len() > 4000, "{} events", seqs.len());
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "a gap or a repeat at {pair:?}");
    }
    let err = stderr.lock().unwrap().clone();
    assert!(err.contains("frames behind"), "no lag notice: {err}");
}

/// The page origin the client dialed, as `--invite` prints it: `http` for a
/// `ws://` server, `https` for `wss://`.
fn page_origin(server: &common::TestServer) -> String {
    let scheme = if server.url.starts_with("wss://") {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}", server.addr)
}

/// `ccrelay attach HOST --invite --viewer`: one line on stdout, the page URL
/// with `#invite=<token>` (no QR code: stdout is not a terminal), exit 0; the
/// token pairs a device at once as a viewer, and only once. A viewer key's
/// `--invite` exits 2 saying the server refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_invite_prints_the_page_url_whose_token_pairs_a_device() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let out = tokio::task::block_in_place(|| {
        run(attach_cmd(
            &fx,
            &[
                "--invite",
                "--viewer",
                "-i",
                &key_arg(&fx.owner),
                &server.url,
            ],
        ))
    });
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "only the URL: {}", out.stdout);
    let prefix = format!("{}/#invite=", page_origin(&server));
    let token = lines[0]
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{:?} does not start with {prefix}", lines[0]));
    assert!(
        token.len() >= 22
            && token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "base64url, at least 128 bits: {token}"
    );
    assert!(out.stderr.contains("viewer"), "{}", out.stderr);

    let phone = keygen(fx.path(), "phone", "ed25519", &[]);
    for (attempt, expected) in [(1, "auth.ok"), (2, "error")] {
        let mut c = server.connect().await;
        let challenge = c.recv().await;
        let sign = challenge["sign"].as_str().unwrap().to_string();
        let request = serde_json::json!({"type": "pair.request", "id": "pair",
            "signature": common::ssh_keygen_sign(&phone, &common::bound_text(&sign, &c.origin)),
            "public_key": phone.public_line, "device": format!("phone {attempt}"),
            "origin": c.origin, "invite": token});
        c.send(request).await;
        let answer = c.recv().await;
        assert_eq!(answer["type"], expected, "use {attempt}: {answer}");
        if attempt == 1 {
            assert_eq!(answer["role"], "viewer", "{answer}");
        } else {
            assert_eq!(answer["code"], "auth_failed", "{answer}");
        }
    }

    let refused = tokio::task::block_in_place(|| {
        run(attach_cmd(
            &fx,
            &["--invite", "-i", &key_arg(&fx.viewer), &server.url],
        ))
    });
    assert_eq!(refused.code(), Some(2), "stdout: {}", refused.stdout);
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    assert!(refused.stderr.contains("forbidden"), "{}", refused.stderr);
}

/// On a terminal, `--invite` also draws the URL as a QR code (half blocks).
#[test]
fn attach_invite_on_a_terminal_draws_a_qr_code() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let home = fx.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let pty = open_pty(200, 80);
    let mut cmd = Command::new(ccrelay_bin());
    cmd.args(["attach", "--invite", "-i", &key_arg(&fx.owner), &server.url])
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", &home)
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::from(pty.slave.try_clone().expect("dup")))
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("ccrelay attach starts");
    drop(cmd);
    let stderr = Arc::new(Mutex::new(String::new()));
    collect(child.stderr.take().expect("stderr piped"), stderr.clone());
    let Pty { master, slave } = pty;
    // Only the child holds the slave now: reading the master ends at its exit.
    drop(slave);
    let screen = Arc::new(Mutex::new(String::new()));
    collect(master, screen.clone());
    let deadline = Instant::now() + common::scaled(CLIENT_TIMEOUT);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no exit; stderr: {}", stderr.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "stderr: {}", stderr.lock().unwrap());
    let text = loop {
        let text = screen.lock().unwrap().clone();
        if text.contains('█') && text.contains("#invite=") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no QR code on the terminal:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let url_line = text
        .lines()
        .find(|l| l.contains("#invite="))
        .unwrap()
        .trim();
    assert!(
        url_line.starts_with(&format!("{}/#invite=", page_origin(&server))),
        "{url_line}"
    );
}
