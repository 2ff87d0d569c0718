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
    wait_idle(&mut owner).await;
    let ok = owner
        .request(
            json!({"type": "prompt", "session": "api", "content": "hello from api"}),
            "p1",
        )
        .await;
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
    wait_idle(&mut owner).await;
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
