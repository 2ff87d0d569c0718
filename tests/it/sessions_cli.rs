//! `ccrelay sessions` and `ccrelay attach --new` end to end: the real binary as
//! client against the real `ccrelay serve` (mock agent, `--session-root` a temp
//! dir), over plaintext and over TLS (`--tls-self-signed`, trusted on first use
//! with `--accept-new-server`). The interactive `:sessions` / `:switch` commands
//! run on a real terminal (tmux).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::tmux::Tmux;
use common::{Fixture, ServerOptions, TestServer, ccrelay_bin};
use serde_json::Value;

/// How long one client run may take (the machine is shared and loaded).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A finished client run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code,
            Some(code),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// A server whose sessions may be created under `<fixture>/roots`, and the
/// directories it has there.
fn start(fx: &Fixture, tls: bool) -> (TestServer, PathBuf) {
    let roots = fx.path().join("roots");
    std::fs::create_dir_all(roots.join("api")).expect("roots/api");
    let mut opts = ServerOptions::default()
        .arg("--session-root")
        .arg(roots.to_str().expect("utf-8 path"));
    if tls {
        opts = opts.arg("--tls-self-signed");
    }
    (fx.start(opts), roots)
}

/// The client's environment: no ssh-agent, no askpass, a HOME of the fixture's
/// own (its known_servers), no colours.
fn client_env(fx: &Fixture) -> (PathBuf, PathBuf) {
    let home = fx.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let known = fx.path().join("known_servers");
    (home, known)
}

/// `ccrelay SUBCOMMAND ARGS -i owner --known-servers ... --accept-new-server`.
async fn ccrelay(fx: &Fixture, subcommand: &str, args: &[&str]) -> Run {
    let (home, known) = client_env(fx);
    let mut cmd = tokio::process::Command::new(ccrelay_bin());
    cmd.arg(subcommand)
        .args(args)
        .arg("-i")
        .arg(&fx.owner.private)
        .arg("--known-servers")
        .arg(&known)
        .arg("--accept-new-server")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("SSH_ASKPASS")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", &home)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(common::scaled(CLIENT_TIMEOUT), cmd.output())
        .await
        .expect("the client finished in time")
        .expect("the client ran");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `ccrelay sessions URL --json`, read.
async fn listed(fx: &Fixture, url: &str) -> Vec<Value> {
    let run = ccrelay(fx, "sessions", &[url, "--json"]).await;
    run.assert_code(0);
    let doc: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{}", run.stdout));
    doc.as_array().expect("an array of entries").clone()
}

fn names(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .filter_map(|e| e["session"].as_str())
        .collect()
}

fn dir_arg(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Create with `attach --new`, see the prompt's answer, list (table and JSON),
/// rename, close; the server's refusals exit 1 with their code printed.
async fn sessions_from_the_terminal(tls: bool) {
    let fx = Fixture::new();
    let (server, roots) = start(&fx, tls);
    let url = server.url.as_str();

    let run = ccrelay(&fx, "sessions", &[url]).await;
    run.assert_code(0);
    let header = run.stdout.lines().next().unwrap_or_default();
    for column in [
        "NAME", "TITLE", "STATE", "ACTIVITY", "CLIENTS", "COST", "PENDING",
    ] {
        assert!(header.contains(column), "{}", run.stdout);
    }
    assert!(
        run.stdout.lines().any(|l| l.starts_with("default ")),
        "{}",
        run.stdout
    );
    assert_eq!(names(&listed(&fx, url).await), ["default"]);

    // attach --new: created, attached (with the uid), the prompt answered.
    let api = roots.join("api");
    let run = ccrelay(
        &fx,
        "attach",
        &[
            url,
            "--new",
            dir_arg(&api),
            "--name",
            "api",
            "--prompt",
            "hello",
            "--json",
        ],
    )
    .await;
    run.assert_code(0);
    assert!(
        run.stderr.contains("created session api in"),
        "{}",
        run.stderr
    );
    let frames: Vec<Value> = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "session.created" && f["session"] == "api"),
        "{}",
        run.stdout
    );
    let answered = frames.iter().any(|f| {
        f["type"] == "event"
            && f["session"] == "api"
            && f["event"]["type"] == "assistant"
            && f["event"].to_string().contains("You said: hello")
    });
    assert!(answered, "no answer in session api:\n{}", run.stdout);

    let entries = listed(&fx, url).await;
    assert_eq!(names(&entries), ["default", "api"], "{entries:?}");
    let entry = entries.iter().find(|e| e["session"] == "api").expect("api");
    assert!(entry["uid"].as_str().is_some_and(|u| !u.is_empty()));

    ccrelay(&fx, "sessions", &[url, "rename", "api", "Login bug"])
        .await
        .assert_code(0);
    let run = ccrelay(&fx, "sessions", &[url]).await;
    run.assert_code(0);
    let row = run
        .stdout
        .lines()
        .find(|l| l.starts_with("api "))
        .unwrap_or_else(|| panic!("no api row:\n{}", run.stdout));
    assert!(row.contains("Login bug"), "{}", run.stdout);

    // Refusals: exit 1 and the code.
    let run = ccrelay(&fx, "attach", &[url, "--new", "/etc", "--prompt", "hi"]).await;
    run.assert_code(1);
    assert!(run.stderr.contains("outside_roots"), "{}", run.stderr);
    let run = ccrelay(
        &fx,
        "attach",
        &[url, "--new", dir_arg(&api), "--name", "API"],
    )
    .await;
    run.assert_code(1);
    assert!(run.stderr.contains("session_exists"), "{}", run.stderr);
    let run = ccrelay(&fx, "sessions", &[url, "close", "default"]).await;
    run.assert_code(1);
    assert!(run.stderr.contains("forbidden"), "{}", run.stderr);

    ccrelay(&fx, "sessions", &[url, "close", "api"])
        .await
        .assert_code(0);
    assert_eq!(names(&listed(&fx, url).await), ["default"]);
    let run = ccrelay(&fx, "sessions", &[url, "close", "api"]).await;
    run.assert_code(1);
    assert!(run.stderr.contains("no_such_session"), "{}", run.stderr);
    // Usage errors are clap's: exit 2.
    ccrelay(&fx, "sessions", &[url, "close"])
        .await
        .assert_code(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_attach_new_over_plaintext() {
    sessions_from_the_terminal(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_attach_new_over_tls() {
    sessions_from_the_terminal(true).await;
}

/// On a terminal over TLS: `attach --new` creates and attaches, a prompt is
/// answered, `:sessions` lists both sessions, `:switch` moves between them and
/// coming back replays nothing twice; closing the session from elsewhere ends
/// the client with 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_new_session_switch_and_close_over_tls() {
    let fx = Fixture::new();
    let (server, roots) = start(&fx, true);
    let (home, known) = client_env(&fx);
    let tmux = Tmux::new("sessions");
    let command = format!(
        "env -u SSH_AUTH_SOCK HOME={} NO_COLOR=1 {} attach {} -i {} --known-servers {} --accept-new-server --device laptop --new {} --name api; echo CLIENT-EXITED $?; sleep 600",
        home.display(),
        ccrelay_bin(),
        server.url,
        fx.owner.private.display(),
        known.display(),
        roots.join("api").display(),
    );
    tmux.tmux(&[
        "new-session",
        "-d",
        "-s",
        "laptop",
        "-x",
        "200",
        "-y",
        "50",
        &command,
    ]);
    let screen = tmux
        .wait_for_async("laptop", "the editor", |s| {
            s.contains("attached to session api") && s.lines().any(is_editor_line)
        })
        .await;
    assert!(screen.contains("created session api in"), "{screen}");
    tmux.tmux(&["send-keys", "-t", "laptop", "-l", "hello"]);
    tmux.tmux(&["send-keys", "-t", "laptop", "Enter"]);
    tmux.wait_for_async("laptop", "the answer", |s| s.contains("You said: hello"))
        .await;

    tmux.tmux(&["send-keys", "-t", "laptop", "-l", ":sessions"]);
    tmux.tmux(&["send-keys", "-t", "laptop", "Enter"]);
    let screen = tmux
        .wait_for_async("laptop", "the sessions table", |s| {
            s.contains("NAME") && s.contains("(you are on api")
        })
        .await;
    assert!(
        screen.lines().any(|l| l.starts_with("default ")),
        "{screen}"
    );

    tmux.tmux(&["send-keys", "-t", "laptop", "-l", ":switch default"]);
    tmux.tmux(&["send-keys", "-t", "laptop", "Enter"]);
    tmux.wait_for_async("laptop", "the switch", |s| {
        s.contains("switched to session default")
    })
    .await;
    tmux.tmux(&["send-keys", "-t", "laptop", "-l", ":switch api"]);
    tmux.tmux(&["send-keys", "-t", "laptop", "Enter"]);
    let screen = tmux
        .wait_for_async("laptop", "the switch back", |s| {
            s.contains("switched to session api")
        })
        .await;
    // Back on api: its turn is not shown a second time.
    assert_eq!(screen.matches("You said: hello").count(), 1, "{screen}");

    let run = ccrelay(&fx, "sessions", &[&server.url, "close", "api"]).await;
    run.assert_code(0);
    tmux.wait_for_async("laptop", "the exit", |s| {
        s.contains("session api was closed") && s.contains("CLIENT-EXITED 0")
    })
    .await;
}

fn is_editor_line(line: &str) -> bool {
    line == ">" || line.starts_with("> ")
}
