//! Creating, closing and renaming sessions over the wire (docs/protocol.md §4.10),
//! with the real binary and the mock agent: the close's event order, the
//! checks of session.create, uids, create keys, session.changed, and records
//! that survive SIGTERM and kill -9.

use crate::common;

use std::time::Duration;

use common::{Fixture, ServerOptions, TestClient, TestServer};
use serde_json::{Value, json};

/// A fixture whose `projects` directory (inside the `default` workdir, the
/// default root) holds `api` and `web`.
fn fixture() -> Fixture {
    let fx = Fixture::new();
    for d in ["api", "web"] {
        std::fs::create_dir_all(fx.workdir().join("projects").join(d)).unwrap();
    }
    fx
}

fn project(fx: &Fixture, name: &str) -> String {
    fx.workdir()
        .join("projects")
        .join(name)
        .display()
        .to_string()
}

async fn create(c: &mut TestClient, body: Value, id: &str) -> Value {
    let mut req = body;
    req["type"] = Value::from("session.create");
    c.request(req, id).await
}

async fn wait_idle(c: &mut TestClient) {
    c.recv_until("idle", |v| {
        v["type"] == "event" && v["event"]["type"] == "relay.state" && v["event"]["state"] == "idle"
    })
    .await;
}

async fn attach_uid(c: &mut TestClient, session: &str, uid: &str, id: &str) -> Value {
    c.request(
        json!({"type": "attach", "session": session, "uid": uid}),
        id,
    )
    .await
}

fn listed<'a>(list: &'a Value, session: &str) -> Option<&'a Value> {
    list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session"] == session)
}

#[tokio::test]
async fn create_prompt_close_orders_closed_then_detached_then_ok() {
    let fx = fixture();
    let server = fx.start(ServerOptions::default());
    let mut owner = server.client(&fx.owner, Some("laptop")).await;
    let created = create(
        &mut owner,
        json!({"workdir": project(&fx, "api"), "name": "api", "settings": {"permission_mode": "plan"}}),
        "c1",
    )
    .await;
    assert_eq!(created["type"], "session.created", "{created}");
    assert_eq!(created["session"], "api");
    let uid = created["uid"].as_str().unwrap().to_string();
    assert_eq!(uid.len(), 32);
    assert!(
        created["workdir"]
            .as_str()
            .unwrap()
            .ends_with("projects/api"),
        "{created}"
    );

    let attached = attach_uid(&mut owner, "api", &uid, "a1").await;
    assert_eq!(attached["type"], "attached", "{attached}");
    // A created session sleeps until its first prompt (docs/protocol.md §4.11).
    assert_eq!(attached["state"], "asleep", "{attached}");
    let ok = owner
        .request(
            json!({"type": "prompt", "session": "api", "content": "hello from api"}),
            "p1",
        )
        .await;
    assert_eq!(ok["queued"], true, "a prompt wakes the session: {ok}");
    let prompt_id = ok["prompt_id"].as_str().unwrap().to_string();
    let (init, _) = owner
        .recv_until("system/init", |v| {
            v["type"] == "event"
                && v["event"]["type"] == "system"
                && v["event"]["subtype"] == "init"
        })
        .await;
    // The agent runs in the created workdir with the asked permission mode.
    assert!(
        init["event"]["cwd"]
            .as_str()
            .unwrap()
            .ends_with("projects/api"),
        "{init}"
    );
    assert_eq!(init["event"]["permissionMode"], "plan", "{init}");
    owner.wait_turn(&prompt_id, &["ended"]).await;

    let list = owner.request(json!({"type": "session.list"}), "l1").await;
    let entry = listed(&list, "api").expect("api listed");
    assert_eq!(entry["uid"], uid.as_str());
    assert_eq!(entry["created"], "client");
    assert_eq!(entry["closable"], true);
    assert_eq!(entry["title"], "hello from api");
    assert_eq!(entry["settings"]["permission_mode"], "plan");
    assert!(entry["conversation"].is_string(), "{entry}");
    assert_eq!(listed(&list, "default").unwrap()["closable"], false);

    owner
        .send(json!({"type": "session.close", "session": "api", "id": "x1"}))
        .await;
    let (ok, before) = owner.recv_until("close ok", |v| v["id"] == "x1").await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let closed_at = before
        .iter()
        .position(|v| v["type"] == "event" && v["event"]["type"] == "relay.closed")
        .expect("relay.closed before ok");
    assert_eq!(before[closed_at]["event"]["device"], "laptop");
    let exit_at = before
        .iter()
        .position(|v| v["type"] == "event" && v["event"]["type"] == "relay.agent_exit")
        .expect("agent_exit");
    assert_eq!(before[exit_at]["event"]["cause"], "stopped");
    assert!(exit_at < closed_at);
    let detached_at = before
        .iter()
        .position(|v| v["type"] == "detached" && v["session"] == "api")
        .expect("detached before ok");
    assert!(closed_at < detached_at, "{before:#?}");
    // Nothing of the session after relay.closed.
    assert!(
        before[closed_at + 1..]
            .iter()
            .all(|v| v["type"] != "event" || v["session"] != "api")
    );

    let list = owner.request(json!({"type": "session.list"}), "l2").await;
    assert!(listed(&list, "api").is_none(), "{list}");
    let gone = owner
        .request(
            json!({"type": "history", "session": "api", "before": 5}),
            "h1",
        )
        .await;
    assert_eq!(gone["code"], "no_such_session", "{gone}");

    // The name is free again, with a new uid; the old uid does not attach to it.
    let again = create(
        &mut owner,
        json!({"workdir": project(&fx, "web"), "name": "api"}),
        "c2",
    )
    .await;
    assert_eq!(again["type"], "session.created", "{again}");
    assert_ne!(again["uid"], uid.as_str());
    let refused = attach_uid(&mut owner, "api", &uid, "a2").await;
    assert_eq!(refused["code"], "no_such_session", "{refused}");
    let audit = common::audit_log_when(&fx.data_dir(), |t| t.contains("session_closed"));
    assert!(audit.contains("session_created"), "{audit}");
}

#[tokio::test]
async fn create_checks_its_fields_roots_names_and_limits() {
    let fx = fixture();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), fx.workdir().join("projects/escape")).unwrap();
    let server = fx.start(ServerOptions::default().args(&["--max-sessions", "3"]));
    let mut owner = server.client(&fx.owner, None).await;
    let mut viewer = server.client(&fx.viewer, None).await;

    let r = create(&mut viewer, json!({"workdir": project(&fx, "api")}), "v").await;
    assert_eq!(r["code"], "forbidden", "{r}");
    let r = create(&mut owner, json!({"workdir": outside.path()}), "o1").await;
    assert_eq!(r["code"], "outside_roots", "{r}");
    let r = create(&mut owner, json!({"workdir": project(&fx, "escape")}), "o2").await;
    assert_eq!(r["code"], "outside_roots", "{r}");
    let r = create(
        &mut owner,
        json!({"workdir": project(&fx, "missing")}),
        "o3",
    )
    .await;
    assert_eq!(r["code"], "not_found", "{r}");
    for (i, bad) in [".", "..", ".x", "a b", ""].iter().enumerate() {
        let r = create(
            &mut owner,
            json!({"workdir": project(&fx, "api"), "name": bad}),
            &format!("n{i}"),
        )
        .await;
        assert_eq!(r["code"], "bad_message", "{bad:?}: {r}");
    }
    let r = create(
        &mut owner,
        json!({"workdir": project(&fx, "api"), "settings": {"permission_mode": "bypassPermissions"}}),
        "s1",
    )
    .await;
    assert_eq!(r["code"], "forbidden", "{r}");

    let r = create(&mut owner, json!({"workdir": project(&fx, "api")}), "d1").await;
    assert_eq!(r["session"], "api", "{r}");
    let r = create(
        &mut owner,
        json!({"workdir": project(&fx, "api"), "name": "API"}),
        "d2",
    )
    .await;
    assert_eq!(r["code"], "session_exists", "{r}");
    let r = create(
        &mut owner,
        json!({"workdir": project(&fx, "api"), "name": "Default"}),
        "d3",
    )
    .await;
    assert_eq!(r["code"], "session_exists", "{r}");
    // The default name is made unique.
    let r = create(&mut owner, json!({"workdir": project(&fx, "api")}), "d4").await;
    assert_eq!(r["session"], "api-2", "{r}");
    // default + api + api-2 = 3 = --max-sessions.
    let r = create(&mut owner, json!({"workdir": project(&fx, "web")}), "m1").await;
    assert_eq!(r["code"], "overloaded", "{r}");
    // Configured sessions cannot be closed.
    let r = owner
        .request(json!({"type": "session.close", "session": "default"}), "x")
        .await;
    assert_eq!(r["code"], "forbidden", "{r}");
}

#[tokio::test]
async fn the_data_dir_inside_a_root_is_outside_roots() {
    let fx = fixture();
    let root = fx.path().to_path_buf();
    std::fs::create_dir_all(fx.data_dir().join("inner")).unwrap();
    let server =
        fx.start(ServerOptions::default().args(&["--session-root", root.to_str().unwrap()]));
    let mut owner = server.client(&fx.owner, None).await;
    let r = create(
        &mut owner,
        json!({"workdir": fx.data_dir().join("inner")}),
        "o",
    )
    .await;
    assert_eq!(r["code"], "outside_roots", "{r}");
    let r = create(&mut owner, json!({"workdir": project(&fx, "web")}), "ok").await;
    assert_eq!(r["type"], "session.created", "{r}");
}

#[tokio::test]
async fn a_create_key_answers_duplicate_and_changes_reach_everyone() {
    let fx = fixture();
    let server = fx.start(ServerOptions::default());
    let mut owner = server.client(&fx.owner, None).await;
    let mut other = server.client(&fx.owner2, None).await;
    let mut viewer = server.client(&fx.viewer, None).await;
    let body = json!({"workdir": project(&fx, "web"), "name": "web", "key": "k-1"});
    let first = create(&mut owner, body.clone(), "c1").await;
    assert_eq!(first["type"], "session.created", "{first}");
    let again = create(&mut owner, body, "c2").await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["uid"], first["uid"]);
    let list = owner.request(json!({"type": "session.list"}), "l").await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2, "{list}");

    for (c, is_owner) in [(&mut other, true), (&mut viewer, false)] {
        let (changed, _) = c
            .recv_until("session.changed created", |v| {
                v["type"] == "session.changed" && v["change"] == "created"
            })
            .await;
        assert_eq!(changed["session"], "web");
        assert_eq!(changed["uid"], first["uid"]);
        assert_eq!(changed["entry"]["uid"], first["uid"]);
        assert_eq!(
            changed["entry"]["workdir"].is_string(),
            is_owner,
            "{changed}"
        );
    }

    let r = owner
        .request(
            json!({"type": "session.rename", "session": "web", "title": "Login bug"}),
            "r1",
        )
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    let (changed, _) = viewer
        .recv_until("renamed", |v| {
            v["type"] == "session.changed" && v["change"] == "renamed"
        })
        .await;
    assert_eq!(changed["entry"]["title"], "Login bug");
    let r = owner
        .request(
            json!({"type": "session.rename", "session": "web", "title": "a\u{202e}b"}),
            "r2",
        )
        .await;
    assert_eq!(r["code"], "bad_message", "{r}");

    owner
        .request(json!({"type": "session.close", "session": "web"}), "x")
        .await;
    let (changed, _) = viewer
        .recv_until("closed", |v| {
            v["type"] == "session.changed" && v["change"] == "closed"
        })
        .await;
    assert_eq!(changed["uid"], first["uid"]);
}

#[tokio::test]
async fn an_owner_responds_without_attaching() {
    let fx = fixture();
    let server = fx.start(ServerOptions::default());
    let mut watcher = server.client(&fx.owner, None).await;
    watcher.attach("default", None).await;
    wait_idle(&mut watcher).await;
    let ok = watcher
        .request(json!({"type": "prompt", "content": "permission"}), "p")
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let (req, _) = watcher
        .recv_until("can_use_tool", |v| {
            v["type"] == "event" && v["event"]["type"] == "control_request"
        })
        .await;
    let request_id = req["event"]["request_id"].as_str().unwrap().to_string();
    let mut phone = server.client(&fx.owner2, Some("phone")).await;
    let r = phone
        .request(
            json!({"type": "respond", "request_id": request_id,
                   "response": {"behavior": "allow", "updatedInput": {}}}),
            "r",
        )
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    let mut viewer = server.client(&fx.viewer, None).await;
    let r = viewer
        .request(
            json!({"type": "respond", "request_id": "x", "response": {"behavior": "deny", "message": "no"}}),
            "v",
        )
        .await;
    assert_eq!(r["code"], "forbidden", "{r}");
}

/// Create `api` with settings and a title, prompt once; returns its uid and head.
async fn populate(fx: &Fixture, server: &TestServer) -> (String, u64) {
    let mut owner = server.client(&fx.owner, None).await;
    let created = create(
        &mut owner,
        json!({"workdir": project(fx, "api"), "name": "api", "key": "persist",
               "settings": {"permission_mode": "acceptEdits", "model": "sonnet"}}),
        "c",
    )
    .await;
    assert_eq!(created["type"], "session.created", "{created}");
    let uid = created["uid"].as_str().unwrap().to_string();
    owner
        .request(
            json!({"type": "session.rename", "session": "api", "title": "Kept title"}),
            "r",
        )
        .await;
    attach_uid(&mut owner, "api", &uid, "a").await;
    let ok = owner
        .request(
            json!({"type": "prompt", "session": "api", "content": "remember me"}),
            "p",
        )
        .await;
    owner
        .wait_turn(ok["prompt_id"].as_str().unwrap(), &["ended"])
        .await;
    let list = owner.request(json!({"type": "session.list"}), "l").await;
    let head = listed(&list, "api").unwrap()["head"].as_u64().unwrap();
    (uid, head)
}

async fn check_restored(fx: &Fixture, server: &TestServer, uid: &str, head: u64) {
    let mut owner = server.client(&fx.owner, None).await;
    let list = owner.request(json!({"type": "session.list"}), "l").await;
    let entry = listed(&list, "api").unwrap_or_else(|| panic!("api restored: {list}"));
    assert_eq!(entry["uid"], uid);
    assert_eq!(entry["state"], "asleep", "restored sessions sleep: {entry}");
    assert_eq!(entry["title"], "Kept title");
    assert_eq!(entry["settings"]["permission_mode"], "acceptEdits");
    assert_eq!(entry["settings"]["model"], "sonnet");
    // Every event is replayed from the journal.
    let attached = attach_uid(&mut owner, "api", uid, "a").await;
    assert_eq!(attached["type"], "attached", "{attached}");
    assert_eq!(attached["replay_from"], 1, "{attached}");
    let mut seqs = Vec::new();
    while seqs.len() < head as usize {
        let (ev, _) = owner
            .recv_until("replayed event", |v| {
                v["type"] == "event" && v["session"] == "api"
            })
            .await;
        seqs.push(common::seq_of(&ev));
    }
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>());
    // A retry of the create after the restart creates nothing.
    let again = create(
        &mut owner,
        json!({"workdir": project(fx, "api"), "name": "api", "key": "persist"}),
        "c",
    )
    .await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["uid"], uid);
}

#[tokio::test]
async fn created_sessions_survive_sigterm() {
    let fx = fixture();
    let mut server = fx.start(ServerOptions::default());
    let (uid, head) = populate(&fx, &server).await;
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(20)).is_some());
    let listen = server.addr.to_string();
    drop(server);
    let server = fx.start(ServerOptions::default().listen(&listen));
    check_restored(&fx, &server, &uid, head).await;
}

#[tokio::test]
async fn created_sessions_survive_kill_9() {
    let fx = fixture();
    let mut server = fx.start(ServerOptions::default());
    let (uid, head) = populate(&fx, &server).await;
    server.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(server.wait_exit(Duration::from_secs(20)).is_some());
    drop(server);
    let server = fx.start(ServerOptions::default());
    check_restored(&fx, &server, &uid, head).await;
}

#[tokio::test]
async fn dirs_list_shows_directories_under_the_roots() {
    let fx = fixture();
    let server = fx.start(ServerOptions::default());
    let mut owner = server.client(&fx.owner, None).await;
    let r = owner
        .request(
            json!({"type": "dirs.list", "path": fx.workdir().join("projects")}),
            "d",
        )
        .await;
    assert_eq!(r["type"], "dirs.list", "{r}");
    let names: Vec<&str> = r["dirs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "web"]);
    let r = owner
        .request(json!({"type": "dirs.list", "path": "/"}), "o")
        .await;
    assert_eq!(r["code"], "outside_roots", "{r}");
    let mut viewer = server.client(&fx.viewer, None).await;
    let r = viewer.request(json!({"type": "dirs.list"}), "v").await;
    assert_eq!(r["code"], "forbidden", "{r}");
}

/// Plain git for a test's own setup: no user or system configuration of this machine.
fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A repository at `projects/<name>` with one commit on `main`; its canonical path.
fn repo(fx: &Fixture, name: &str) -> std::path::PathBuf {
    let dir = fx.workdir().join("projects").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("README"), "hello\n").unwrap();
    git(&dir, &["add", "README"]);
    git(&dir, &["commit", "-q", "-m", "first"]);
    std::fs::canonicalize(dir).unwrap()
}

#[tokio::test]
async fn a_worktree_session_runs_in_its_worktree_and_is_removed_only_when_clean() {
    let fx = fixture();
    let repo = repo(&fx, "repo");
    let server = fx.start(ServerOptions::default());
    let mut owner = server.client(&fx.owner, None).await;
    let created = create(
        &mut owner,
        json!({"workdir": repo, "name": "wt", "worktree": {}}),
        "c",
    )
    .await;
    assert_eq!(created["type"], "session.created", "{created}");
    let path = repo.parent().unwrap().join("repo.worktrees").join("wt");
    let shown = path.display().to_string();
    assert_eq!(created["workdir"], shown.as_str(), "{created}");
    assert_eq!(created["worktree"]["path"], shown.as_str(), "{created}");
    assert_eq!(created["worktree"]["branch"], "ccrelay/wt", "{created}");
    assert_eq!(
        created["worktree"]["repository"],
        repo.display().to_string().as_str()
    );
    assert!(!git(&repo, &["branch", "--list", "ccrelay/wt"]).is_empty());
    assert!(git(&repo, &["worktree", "list"]).contains(&shown));
    let list = owner.request(json!({"type": "session.list"}), "l").await;
    let entry = listed(&list, "wt").unwrap();
    assert_eq!(entry["workdir"], shown.as_str(), "{entry}");
    assert_eq!(entry["worktree"]["branch"], "ccrelay/wt", "{entry}");

    // The agent runs in the worktree.
    let uid = created["uid"].as_str().unwrap().to_string();
    attach_uid(&mut owner, "wt", &uid, "a").await;
    let ok = owner
        .request(
            json!({"type": "prompt", "session": "wt", "content": "hi"}),
            "p",
        )
        .await;
    let (init, _) = owner
        .recv_until("system/init", |v| {
            v["type"] == "event"
                && v["event"]["type"] == "system"
                && v["event"]["subtype"] == "init"
        })
        .await;
    assert_eq!(init["event"]["cwd"], shown.as_str(), "{init}");
    owner
        .wait_turn(ok["prompt_id"].as_str().unwrap(), &["ended"])
        .await;

    // An untracked file: refused before anything stops; the session stays open.
    std::fs::write(path.join("notes.txt"), "draft\n").unwrap();
    let r = owner
        .request(
            json!({"type": "session.close", "session": "wt", "remove_worktree": true}),
            "x1",
        )
        .await;
    assert_eq!(r["code"], "git_failed", "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("uncommitted changes"),
        "{r}"
    );
    let list = owner.request(json!({"type": "session.list"}), "l2").await;
    assert!(listed(&list, "wt").is_some(), "still open: {list}");
    assert!(path.join("notes.txt").exists());

    std::fs::remove_file(path.join("notes.txt")).unwrap();
    let r = owner
        .request(
            json!({"type": "session.close", "session": "wt", "remove_worktree": true}),
            "x2",
        )
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    assert!(!path.exists(), "the worktree is removed");
    assert!(!git(&repo, &["worktree", "list"]).contains(&shown));
    // The branch is kept.
    assert!(!git(&repo, &["branch", "--list", "ccrelay/wt"]).is_empty());
}

#[tokio::test]
async fn worktree_creates_are_refused_cleanly() {
    let fx = fixture();
    let repo = repo(&fx, "repo");
    let server = fx.start(ServerOptions::default());
    let mut owner = server.client(&fx.owner, None).await;
    let holder = repo.parent().unwrap().join("repo.worktrees");

    let r = create(
        &mut owner,
        json!({"workdir": project(&fx, "api"), "worktree": {}}),
        "n",
    )
    .await;
    assert_eq!(r["code"], "not_a_repository", "{r}");
    let r = create(
        &mut owner,
        json!({"workdir": repo, "worktree": {"branch": "a..b"}}),
        "b",
    )
    .await;
    assert_eq!(r["code"], "bad_message", "{r}");
    let r = create(
        &mut owner,
        json!({"workdir": repo, "name": "dup", "worktree": {"branch": "main"}}),
        "e",
    )
    .await;
    assert_eq!(r["code"], "git_failed", "{r}");
    assert!(!holder.join("dup").exists(), "nothing left behind");
    let r = create(
        &mut owner,
        json!({"workdir": repo, "worktree": {"base": "no-such-base"}}),
        "nb",
    )
    .await;
    assert_eq!(r["code"], "git_failed", "{r}");
    assert!(
        git(&repo, &["branch", "--list", "ccrelay/*"]).is_empty(),
        "no branch left behind"
    );
    let r = create(
        &mut owner,
        json!({"workdir": repo, "worktree": {},
               "resume": "42576fe8-f071-4610-b9ef-e04e21fb4de2"}),
        "r",
    )
    .await;
    assert_eq!(r["code"], "bad_message", "{r}");
    // The names were freed by the refusals; a session without a worktree has none to remove.
    let r = create(&mut owner, json!({"workdir": repo, "name": "dup"}), "ok").await;
    assert_eq!(r["type"], "session.created", "{r}");
    let r = owner
        .request(
            json!({"type": "session.close", "session": "dup", "remove_worktree": true}),
            "x",
        )
        .await;
    assert_eq!(r["code"], "bad_message", "{r}");
}

const CONV_OLD: &str = "42576fe8-f071-4610-b9ef-e04e21fb4de2";
const CONV_NEW: &str = "5d762d31-74e6-4aef-9e38-5d3419304e0c";
const CONV_ELSEWHERE: &str = "feaa62b2-4ded-40a1-8dc1-b3503f06e08d";

/// A transcript as the CLI writes it, for `workdir`, modified at `age_secs` ago.
fn transcript(
    config: &std::path::Path,
    dir_of: &std::path::Path,
    cwd: &std::path::Path,
    id: &str,
    lines: &[Value],
    age_secs: u64,
) {
    let encoded: String = dir_of
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = config.join("projects").join(encoded);
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = String::new();
    for line in lines {
        let mut line = line.clone();
        line["cwd"] = Value::from(cwd.display().to_string());
        line["sessionId"] = Value::from(id);
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let path = dir.join(format!("{id}.jsonl"));
    std::fs::write(&path, text).unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(age_secs))
        .unwrap();
}

fn user(text: &str) -> Value {
    json!({"type": "user", "message": {"role": "user", "content": text}})
}

#[tokio::test]
async fn conversations_list_shows_the_cli_transcripts_newest_first() {
    let fx = fixture();
    let config = fx.path().join("claude-config");
    let api = std::fs::canonicalize(fx.workdir().join("projects/api")).unwrap();
    transcript(
        &config,
        &api,
        &api,
        CONV_OLD,
        &[user("fix the login\nmore words")],
        300,
    );
    transcript(
        &config,
        &api,
        &api,
        CONV_NEW,
        &[
            user("something"),
            json!({"type": "ai-title", "aiTitle": "Cache warming"}),
        ],
        100,
    );
    // Same encoded name, another directory: not listed.
    transcript(
        &config,
        &api,
        std::path::Path::new("/elsewhere/api"),
        CONV_ELSEWHERE,
        &[user("no")],
        50,
    );
    let server =
        fx.start(ServerOptions::default().env("CLAUDE_CONFIG_DIR", config.to_str().unwrap()));
    let mut owner = server.client(&fx.owner, None).await;
    let list = owner
        .request(
            json!({"type": "conversations.list", "workdir": project(&fx, "api")}),
            "l",
        )
        .await;
    assert_eq!(list["type"], "conversations.list", "{list}");
    assert_eq!(list["workdir"], api.display().to_string().as_str());
    let ids: Vec<&str> = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["conversation"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [CONV_NEW, CONV_OLD], "{list}");
    assert_eq!(list["conversations"][0]["title"], "Cache warming");
    assert_eq!(list["conversations"][1]["title"], "fix the login");
    assert_eq!(list["conversations"][0]["in_use_by"], Value::Null);
    assert_eq!(list["more"], false);

    // Pages: limit and before.
    let page = owner
        .request(
            json!({"type": "conversations.list", "workdir": project(&fx, "api"), "limit": 1}),
            "p1",
        )
        .await;
    assert_eq!(page["conversations"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["more"], true, "{page}");
    let before = page["conversations"][0]["updated_at"].clone();
    let page = owner
        .request(
            json!({"type": "conversations.list", "workdir": project(&fx, "api"), "before": before}),
            "p2",
        )
        .await;
    assert_eq!(page["conversations"][0]["conversation"], CONV_OLD, "{page}");
    assert_eq!(page["conversations"].as_array().unwrap().len(), 1, "{page}");
    let r = owner
        .request(json!({"type": "conversations.list", "workdir": project(&fx, "api"), "before": "yesterday"}), "b")
        .await;
    assert_eq!(r["code"], "bad_message", "{r}");
    let r = owner
        .request(json!({"type": "conversations.list", "workdir": "/"}), "o")
        .await;
    assert_eq!(r["code"], "outside_roots", "{r}");
    let mut viewer = server.client(&fx.viewer, None).await;
    let r = viewer
        .request(
            json!({"type": "conversations.list", "workdir": project(&fx, "api")}),
            "v",
        )
        .await;
    assert_eq!(r["code"], "forbidden", "{r}");

    // Resuming: an unknown one, a listed one, and the same one again.
    let r = create(
        &mut owner,
        json!({"workdir": project(&fx, "api"), "resume": CONV_ELSEWHERE}),
        "r0",
    )
    .await;
    assert_eq!(r["code"], "no_such_conversation", "{r}");
    let r = create(
        &mut owner,
        json!({"workdir": project(&fx, "api"), "resume": "not a conversation"}),
        "r1",
    )
    .await;
    assert_eq!(r["code"], "bad_message", "{r}");
    let r = create(
        &mut owner,
        json!({"workdir": project(&fx, "api"), "name": "again", "resume": CONV_OLD}),
        "r2",
    )
    .await;
    assert_eq!(r["type"], "session.created", "{r}");
    let list = owner
        .request(
            json!({"type": "conversations.list", "workdir": project(&fx, "api")}),
            "l2",
        )
        .await;
    assert_eq!(list["conversations"][1]["in_use_by"], "again", "{list}");
    let r = create(
        &mut owner,
        json!({"workdir": project(&fx, "api"), "resume": CONV_OLD}),
        "r3",
    )
    .await;
    assert_eq!(r["code"], "conversation_in_use", "{r}");
}

#[tokio::test]
async fn the_first_prompt_title_is_recorded_and_survives_a_restart() {
    let fx = fixture();
    let mut server = fx.start(ServerOptions::default());
    let mut owner = server.client(&fx.owner, None).await;
    let created = create(&mut owner, json!({"workdir": project(&fx, "web")}), "c").await;
    let uid = created["uid"].as_str().unwrap().to_string();
    attach_uid(&mut owner, "web", &uid, "a").await;
    let ok = owner
        .request(
            json!({"type": "prompt", "session": "web", "content": "Tidy the CSS\nplease"}),
            "p",
        )
        .await;
    owner
        .wait_turn(ok["prompt_id"].as_str().unwrap(), &["ended"])
        .await;
    // Recorded at the turn's end (a bounded wait for the file to say so).
    let record = fx
        .data_dir()
        .join("created")
        .join(&uid)
        .join("session.json");
    let mut recorded = false;
    for _ in 0..200 {
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        if text.contains("Tidy the CSS") {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recorded, "the record holds the first prompt's line");
    server.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(server.wait_exit(Duration::from_secs(20)).is_some());
    drop(server);
    let server = fx.start(ServerOptions::default());
    let mut owner = server.client(&fx.owner, None).await;
    let list = owner.request(json!({"type": "session.list"}), "l").await;
    let entry = listed(&list, "web").unwrap_or_else(|| panic!("restored: {list}"));
    assert_eq!(entry["title"], "Tidy the CSS", "{entry}");
    assert!(entry["cost_usd"].is_number(), "{entry}");
}
