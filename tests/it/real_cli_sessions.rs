//! Sessions created, resumed and closed by clients, with the REAL Claude Code CLI
//! offline against the mock Anthropic API (docs/protocol.md §4.10): the create and
//! close flow and every refusal around it, and resuming a conversation the CLI
//! recorded in its own transcript files.
//!
//! Each CLI is a ~200 MB process on a small machine, so these tests take turns
//! with each other (`LOCK`). Without the CLI they print the SKIPPED line and
//! pass, unless `CCRELAY_REQUIRE_ALL=1`.

use crate::common;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use common::mock_anthropic::{HELLO, MockAnthropic};
use common::real_cli::{offline_env, require_real_cli};
use common::{Fixture, ServerOptions, TestClient, TestServer};

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A server whose session root is the whole fixture directory, so that the data
/// dir, the CLI's configuration directory and `~/.ssh` all lie inside a root and
/// must still be refused.
struct World {
    fx: Fixture,
    api: MockAnthropic,
    server: TestServer,
}

impl World {
    async fn start(bin: &Path) -> World {
        let fx = Fixture::new();
        let api = MockAnthropic::start().await.expect("mock API starts");
        let home = fx.path().join("home");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::create_dir_all(fx.path().join("root")).unwrap();
        let mut opts = ServerOptions {
            agent_cmd: Some(bin.display().to_string()),
            ..ServerOptions::default()
        }
        .args(&["--session-root", &fx.path().display().to_string()]);
        opts.env = offline_env(&home, &api.base_url);
        let server = fx.start(opts);
        World { fx, api, server }
    }

    fn root(&self) -> PathBuf {
        self.fx.path().join("root")
    }

    fn home(&self) -> PathBuf {
        self.fx.path().join("home")
    }

    /// A new directory under the root.
    fn project(&self, name: &str) -> PathBuf {
        let dir = self.root().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    async fn owner(&self, device: &str) -> TestClient {
        self.server.client(&self.fx.owner, Some(device)).await
    }
}

async fn request(c: &mut TestClient, req: Value, id: &str) -> Value {
    c.request(req, id).await
}

fn assert_error(reply: &Value, code: &str) {
    assert_eq!(reply["type"], "error", "expected {code}: {reply}");
    assert_eq!(reply["code"], code, "{reply}");
}

/// Create a session and return its `session.created` reply.
async fn create(c: &mut TestClient, req: Value, id: &str) -> Value {
    let mut req = req;
    req["type"] = json!("session.create");
    let reply = request(c, req, id).await;
    assert_eq!(reply["type"], "session.created", "{reply}");
    reply
}

/// Attach to `session` (whole log), then prompt it and wait for the turn's
/// `result`; returns that `result` event.
async fn attach_and_run(c: &mut TestClient, session: &str, uid: &str, text: &str) -> Value {
    let attached = request(
        c,
        json!({"type": "attach", "session": session, "uid": uid}),
        &format!("attach-{session}"),
    )
    .await;
    assert_eq!(attached["type"], "attached", "{attached}");
    run_turn(c, session, text).await
}

async fn run_turn(c: &mut TestClient, session: &str, text: &str) -> Value {
    let ok = request(
        c,
        json!({"type": "prompt", "session": session, "content": text}),
        &format!("prompt-{session}-{text}"),
    )
    .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let pid = ok["prompt_id"].as_str().expect("prompt_id").to_string();
    let (result, _) = c
        .recv_until(&format!("the result of {text:?} in {session}"), |v| {
            v["type"] == "event"
                && v["session"] == session
                && v["event"]["type"] == "result"
                && v["event"]["user_message_uuid"] == pid.as_str()
        })
        .await;
    result["event"].clone()
}

async fn list_entry(c: &mut TestClient, session: &str) -> Option<Value> {
    let list = request(c, json!({"type": "session.list"}), "list").await;
    list["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["session"] == session)
        .cloned()
}

/// The whole flow with the real CLI: create `api` under the root, prompt it,
/// close it (`relay.closed`, then `detached`, then `ok`); every refusal of
/// `session.create`; and a re-created `api` that an old `uid` does not reach.
#[tokio::test]
async fn create_prompt_close_and_refusals_with_the_real_cli() {
    let Some(bin) = require_real_cli() else {
        return;
    };
    let _turn = LOCK.lock().await;
    let w = World::start(&bin).await;
    let api_dir = w.project("api");
    let mut owner = w.owner("laptop").await;
    let mut watcher = w.owner("tablet").await;

    let created = create(
        &mut owner,
        json!({"workdir": api_dir.display().to_string(), "name": "api"}),
        "create-api",
    )
    .await;
    assert_eq!(created["session"], "api");
    let uid = created["uid"].as_str().expect("uid").to_string();
    let canonical = std::fs::canonicalize(&api_dir).unwrap();
    assert_eq!(created["workdir"], canonical.display().to_string());
    // Every other connection hears of it.
    let (changed, _) = watcher
        .recv_until("session.changed created", |v| {
            v["type"] == "session.changed" && v["change"] == "created" && v["session"] == "api"
        })
        .await;
    assert_eq!(changed["uid"], uid.as_str());

    let result = attach_and_run(&mut owner, "api", &uid, "hello").await;
    assert_eq!(result["subtype"], "success", "{result}");
    assert!(
        result["result"].as_str().unwrap_or("").contains(HELLO),
        "{result}"
    );
    // The agent ran in the session's directory: the mock API saw it in the
    // CLI's environment description.
    let requests = w.api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.to_string().contains(&canonical.display().to_string())),
        "no request of the CLI names {}",
        canonical.display()
    );

    // Refusals while `api` is open.
    let mut viewer = w.server.client(&w.fx.viewer, Some("viewer")).await;
    let r = request(
        &mut viewer,
        json!({"type": "session.create", "workdir": api_dir.display().to_string(), "name": "v"}),
        "viewer-create",
    )
    .await;
    assert_error(&r, "forbidden");
    for (name, id) in [("api", "dup-lower"), ("API", "dup-upper")] {
        let r = request(
            &mut owner,
            json!({"type": "session.create", "workdir": api_dir.display().to_string(), "name": name}),
            id,
        )
        .await;
        assert_error(&r, "session_exists");
    }
    for (name, id) in [
        (".", "name-dot"),
        ("..", "name-dotdot"),
        (".x", "name-dotx"),
    ] {
        let r = request(
            &mut owner,
            json!({"type": "session.create", "workdir": api_dir.display().to_string(), "name": name}),
            id,
        )
        .await;
        assert_error(&r, "bad_message");
    }
    let outside = tempfile::tempdir().unwrap();
    let link = w.root().join("escape");
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();
    std::fs::create_dir_all(w.fx.data_dir()).unwrap();
    let refused: Vec<(String, &str)> = vec![
        (outside.path().display().to_string(), "outside"),
        (link.display().to_string(), "symlink-out"),
        (w.fx.data_dir().display().to_string(), "data-dir"),
        (w.home().join(".claude").display().to_string(), "cli-config"),
        (w.home().join(".ssh").display().to_string(), "ssh-dir"),
        (format!("{}/../..", w.root().display()), "dotdot"),
    ];
    for (dir, id) in &refused {
        let r = request(
            &mut owner,
            json!({"type": "session.create", "workdir": dir}),
            id,
        )
        .await;
        assert_error(&r, "outside_roots");
    }
    let sessions = request(
        &mut owner,
        json!({"type": "session.list"}),
        "after-refusals",
    )
    .await;
    let names: Vec<&str> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["session"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "only default and api exist: {names:?}");

    // Close: the session's last event, then `detached`, then the `ok`.
    let ok_id = "close-api";
    owner
        .send(json!({"type": "session.close", "session": "api", "id": ok_id}))
        .await;
    let (closed, _) = owner
        .recv_until("relay.closed", |v| {
            v["type"] == "event" && v["session"] == "api" && v["event"]["type"] == "relay.closed"
        })
        .await;
    assert_eq!(closed["event"]["by"], owner.client_id.as_str());
    assert_eq!(closed["event"]["device"], "laptop");
    let (detached, skipped) = owner
        .recv_until("detached", |v| {
            v["type"] == "detached" && v["session"] == "api"
        })
        .await;
    assert!(
        skipped.iter().all(|v| v["id"] != ok_id),
        "the ok came before detached: {skipped:?}"
    );
    assert_eq!(detached["session"], "api");
    let (ok, skipped) = owner.recv_until("close ok", |v| v["id"] == ok_id).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert!(
        skipped
            .iter()
            .all(|v| !(v["type"] == "event" && v["session"] == "api")),
        "events of api after its close: {skipped:?}"
    );
    assert!(list_entry(&mut owner, "api").await.is_none());

    // The name is free again, with a new uid; the old uid reaches nothing.
    let again = create(
        &mut owner,
        json!({"workdir": api_dir.display().to_string(), "name": "api"}),
        "recreate-api",
    )
    .await;
    assert_ne!(again["uid"], uid.as_str());
    let r = request(
        &mut owner,
        json!({"type": "attach", "session": "api", "uid": uid}),
        "attach-old-uid",
    )
    .await;
    assert_error(&r, "no_such_session");
    let r = request(
        &mut owner,
        json!({"type": "attach", "session": "api", "uid": again["uid"]}),
        "attach-new-uid",
    )
    .await;
    assert_eq!(r["type"], "attached", "{r}");
}

/// A conversation the real CLI recorded (its transcript under the test's
/// `CLAUDE_CONFIG_DIR`) is listed with its first prompt as its title, resumed by a
/// new session (the mock API receives the earlier messages), and refused while in use.
#[tokio::test]
async fn resume_a_conversation_the_cli_recorded() {
    let Some(bin) = require_real_cli() else {
        return;
    };
    let _turn = LOCK.lock().await;
    let w = World::start(&bin).await;
    let proj = w.project("proj");
    let workdir = proj.display().to_string();
    let mut owner = w.owner("laptop").await;

    let first = create(
        &mut owner,
        json!({"workdir": workdir, "name": "first"}),
        "create-first",
    )
    .await;
    let uid = first["uid"].as_str().unwrap().to_string();
    let result = attach_and_run(&mut owner, "first", &uid, "remember-alpha").await;
    let conversation = result["session_id"]
        .as_str()
        .expect("the result names the CLI's session")
        .to_string();
    let entry = list_entry(&mut owner, "first")
        .await
        .expect("first is listed");
    assert_eq!(entry["conversation"], conversation.as_str(), "{entry}");
    assert_eq!(entry["title"], "remember-alpha", "{entry}");

    // While `first` runs it, the conversation is listed as in use.
    let listed = request(
        &mut owner,
        json!({"type": "conversations.list", "workdir": workdir}),
        "list-1",
    )
    .await;
    assert_eq!(listed["type"], "conversations.list", "{listed}");
    let conv = listed["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["conversation"] == conversation.as_str())
        .unwrap_or_else(|| panic!("{conversation} not listed: {listed}"))
        .clone();
    assert_eq!(conv["title"], "remember-alpha", "{conv}");
    assert_eq!(conv["in_use_by"], "first", "{conv}");
    let r = request(
        &mut owner,
        json!({"type": "session.create", "workdir": workdir, "resume": conversation}),
        "resume-in-use",
    )
    .await;
    assert_error(&r, "conversation_in_use");
    let r = request(
        &mut owner,
        json!({"type": "session.create", "workdir": workdir, "resume": "00000000-0000-4000-8000-000000000000"}),
        "resume-unknown",
    )
    .await;
    assert_error(&r, "no_such_conversation");

    let ok = request(
        &mut owner,
        json!({"type": "session.close", "session": "first"}),
        "close-first",
    )
    .await;
    assert_eq!(ok["type"], "ok", "{ok}");

    // Resume it in a new session: the next request to the API carries the
    // earlier prompt.
    let second = create(
        &mut owner,
        json!({"workdir": workdir, "name": "second", "resume": conversation}),
        "create-second",
    )
    .await;
    let before = w.api.requests().len();
    let uid2 = second["uid"].as_str().unwrap().to_string();
    let result = attach_and_run(&mut owner, "second", &uid2, "recall").await;
    assert!(
        result["result"]
            .as_str()
            .unwrap_or("")
            .contains("remember-alpha"),
        "the resumed conversation does not remember: {result}"
    );
    let requests = w.api.requests();
    assert!(
        requests[before..]
            .iter()
            .any(|r| r.to_string().contains("remember-alpha")),
        "no request after the resume carried the earlier prompt"
    );
    let r = request(
        &mut owner,
        json!({"type": "session.create", "workdir": workdir, "resume": conversation}),
        "resume-twice",
    )
    .await;
    assert_error(&r, "conversation_in_use");
}

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// The workspace view with the real CLI (docs/protocol.md §11): a turn in which the
/// CLI writes two files and edits a third yields `relay.changes` with exactly those
/// three paths and their +/− counts, after the turn's `relay.turn` `ended`; and that
/// turn's diff holds only them, although an earlier turn wrote another file.
#[tokio::test]
async fn a_turn_of_the_real_cli_reports_what_it_changed() {
    use common::mock_anthropic::{ADDED_FILES, EDIT_FILE};
    let Some(bin) = require_real_cli() else {
        return;
    };
    let _turn = LOCK.lock().await;
    let w = World::start(&bin).await;
    let repo = w.project("repo");
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join(EDIT_FILE), "line one\nline two\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let mut owner = w.owner("laptop").await;
    let created = create(
        &mut owner,
        json!({"workdir": repo.display().to_string(), "name": "repo",
               "settings": {"permission_mode": "acceptEdits"}}),
        "create-repo",
    )
    .await;
    let uid = created["uid"].as_str().unwrap().to_string();
    let early = repo.join("early.txt");
    attach_and_run(
        &mut owner,
        "repo",
        &uid,
        &format!("write-file {}", early.display()),
    )
    .await;
    assert!(early.exists(), "the earlier turn wrote early.txt");

    let ok = request(
        &mut owner,
        json!({"type": "prompt", "session": "repo", "content": "change-three"}),
        "prompt-change-three",
    )
    .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let pid = ok["prompt_id"].as_str().unwrap().to_string();
    let (ended, _) = owner
        .recv_until("the turn's end", |v| {
            v["type"] == "event"
                && v["event"]["type"] == "relay.turn"
                && v["event"]["prompt_id"] == pid.as_str()
                && v["event"]["phase"] != "started"
        })
        .await;
    assert_eq!(ended["event"]["phase"], "ended", "{ended}");
    let (changes, _) = owner
        .recv_until("relay.changes of the turn", |v| {
            v["type"] == "event"
                && v["event"]["type"] == "relay.changes"
                && v["event"]["prompt_id"] == pid.as_str()
        })
        .await;
    assert!(
        common::seq_of(&changes) > common::seq_of(&ended),
        "relay.changes comes after relay.turn ended"
    );
    let mut files: Vec<(String, String, u64, u64)> = changes["event"]["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap_or("").to_string(),
                f["status"].as_str().unwrap_or("").to_string(),
                f["insertions"].as_u64().unwrap_or(u64::MAX),
                f["deletions"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    files.sort();
    let mut expected: Vec<(String, String, u64, u64)> = ADDED_FILES
        .iter()
        .map(|n| (n.to_string(), "added".to_string(), 1, 0))
        .collect();
    expected.push((EDIT_FILE.to_string(), "modified".to_string(), 2, 1));
    expected.sort();
    assert_eq!(files, expected, "{changes}");
    assert_eq!(
        std::fs::read_to_string(repo.join(EDIT_FILE)).unwrap(),
        "line one\nline 2\nline three\n"
    );

    // That turn's diff: its three files, not the earlier turn's.
    let diff = request(
        &mut owner,
        json!({"type": "files.diff", "session": "repo", "base": format!("turn:{pid}")}),
        "turn-diff",
    )
    .await;
    assert_eq!(diff["type"], "files.diff", "{diff}");
    let text = diff["diff"].as_str().unwrap_or("");
    for name in ADDED_FILES.iter().chain([&EDIT_FILE]) {
        assert!(
            text.contains(&format!("b/{name}")),
            "{name} in the turn's diff:\n{text}"
        );
    }
    assert!(
        !text.contains("early.txt"),
        "the earlier turn's file:\n{text}"
    );
    assert!(text.contains("+line three"), "{text}");
}
