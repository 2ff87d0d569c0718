//! Session settings and the agent's controls (docs/protocol.md §10) end to end:
//! the REAL Claude Code CLI under `ccrelay serve`, offline against the mock
//! Anthropic API, driven by authenticated WebSocket clients.
//!
//! One CLI at a time (`LOCK`). Without the CLI they print the SKIPPED line and
//! pass, unless `CCRELAY_REQUIRE_ALL=1`.
//! Run: `cargo test --test it session_controls:: -- --test-threads=1`.

use crate::common;

use std::path::PathBuf;

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use common::mock_anthropic::MockAnthropic;
use common::real_cli::{offline_env, require_real_cli};
use common::{Fixture, KeyPair, ServerOptions, TestClient, TestServer, audit_log_when};

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The text plan mode adds to the model's messages (docs/protocol.md §10.1).
const PLAN_MODE_TEXT: &str = "Plan mode is active";

struct World {
    fx: Fixture,
    api: MockAnthropic,
    bin: PathBuf,
}

impl World {
    async fn new(bin: PathBuf) -> World {
        World {
            fx: Fixture::new(),
            api: MockAnthropic::start().await.expect("mock API starts"),
            bin,
        }
    }

    fn start(&self, args: &[&str], env: &[(&str, &str)]) -> TestServer {
        let mut opts = ServerOptions {
            agent_cmd: Some(self.bin.display().to_string()),
            ..ServerOptions::default()
        }
        .args(args);
        opts.env = offline_env(&self.fx.path().join("home"), &self.api.base_url);
        for (k, v) in env {
            opts.env.push((k.to_string(), v.to_string()));
        }
        self.fx.start(opts)
    }

    /// Whether the last request the mock API received holds `text` anywhere.
    fn last_request_has(&self, text: &str) -> bool {
        self.api
            .requests()
            .last()
            .is_some_and(|r| r.to_string().contains(text))
    }
}

/// An authenticated client attached to `default`, once the session is idle.
async fn idle_client(server: &TestServer, key: &KeyPair, device: &str) -> TestClient {
    let mut c = server.client(key, Some(device)).await;
    let attached = c.attach("default", None).await;
    if attached["state"] != "idle" {
        wait_state(&mut c, "idle").await;
    }
    c
}

async fn wait_state(c: &mut TestClient, state: &str) {
    c.recv_until(&format!("relay.state {state}"), |v| {
        v["type"] == "event" && v["event"]["type"] == "relay.state" && v["event"]["state"] == state
    })
    .await;
}

async fn run_turn(c: &mut TestClient, text: &str) {
    let ok = c.prompt(text).await;
    let prompt_id = ok["prompt_id"].as_str().expect("prompt_id").to_string();
    let (turn, _) = c.wait_turn(&prompt_id, &["ended", "aborted"]).await;
    assert_eq!(turn["event"]["phase"], "ended", "{turn}");
}

async fn healthz_agent_pid(server: &TestServer) -> i32 {
    let (status, _, body) = server.http_get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    let h: Value = serde_json::from_str(&body).expect("healthz JSON");
    h["sessions"]["default"]["agent_pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no agent_pid in {h}")) as i32
}

fn set(mode: &str) -> Value {
    json!({"type": "session.set", "session": "default", "settings": {"permission_mode": mode}})
}

/// `session.set` plan from device A: the `ok` carries the settings, device B gets
/// `relay.settings` (A's client and fingerprint) as the next event, an audit line
/// names A's key, the model's next request is in plan mode, and after the agent
/// is killed the new agent still runs in plan mode. Viewers, unknown modes and
/// bypass without the server flag are refused with nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_plan_from_one_device_reaches_the_model_and_survives_a_crash() {
    let Some(bin) = require_real_cli() else {
        return;
    };
    let _serial = LOCK.lock().await;
    let w = World::new(bin).await;
    let server = w.start(&[], &[]);
    let mut a = idle_client(&server, &w.fx.owner, "laptop").await;
    let mut b = idle_client(&server, &w.fx.owner2, "phone").await;
    let mut viewer = server.client(&w.fx.viewer, Some("tv")).await;

    // Refusals first: nothing changes.
    let refused = viewer.request(set("plan"), "v1").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let refused = a.request(set("bypassPermissions"), "a0").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let refused = a.request(set("sideways"), "a1").await;
    assert_eq!(refused["code"], "bad_message", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("must be one of"),
        "{refused}"
    );

    let list = a.request(json!({"type": "session.list"}), "a-head").await;
    let head = list["sessions"][0]["head"].as_u64().expect("head");
    let ok = a.request(set("plan"), "a2").await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["settings"]["permission_mode"], "plan", "{ok}");
    assert_eq!(ok["pending_start"], json!([]), "{ok}");

    // B: the next event after the head before the set is A's relay.settings.
    let (first, _) = b
        .recv_until("the next event", |v| {
            v["type"] == "event" && v["seq"].as_u64().is_some_and(|s| s > head)
        })
        .await;
    let ev = &first["event"];
    assert_eq!(ev["type"], "relay.settings", "{first}");
    assert_eq!(ev["changed"], json!(["permission_mode"]), "{ev}");
    assert_eq!(ev["settings"]["permission_mode"], "plan", "{ev}");
    assert_eq!(ev["client_id"].as_str(), Some(a.client_id.as_str()), "{ev}");
    assert_eq!(ev["fingerprint"], w.fx.owner.fingerprint.as_str(), "{ev}");
    assert_eq!(ev["device"], "laptop", "{ev}");
    // Every connection hears of it, viewers too.
    let (changed, _) = viewer
        .recv_until("session.changed settings", |v| {
            v["type"] == "session.changed" && v["change"] == "settings"
        })
        .await;
    assert_eq!(
        changed["entry"]["settings"]["permission_mode"], "plan",
        "{changed}"
    );

    let audit = audit_log_when(&w.fx.data_dir(), |t| t.contains("\"settings\""));
    let line = audit
        .lines()
        .find(|l| l.contains("\"settings\"") && l.contains("permission_mode"))
        .unwrap_or_else(|| panic!("no settings audit line in {audit}"));
    assert!(line.contains(&w.fx.owner.fingerprint), "{line}");

    run_turn(&mut a, "hello in plan mode").await;
    assert!(
        w.last_request_has(PLAN_MODE_TEXT),
        "the model was not told about plan mode: {:?}",
        w.api.requests().last()
    );

    // The catalog and usage of the running agent.
    let catalog = viewer
        .request(
            json!({"type": "session.catalog", "session": "default"}),
            "v2",
        )
        .await;
    assert_eq!(catalog["type"], "session.catalog", "{catalog}");
    assert_eq!(catalog["stale"], false, "{catalog}");
    let names: Vec<&str> = catalog["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(names.contains(&"compact"), "{names:?}");
    for terminal_only in ["doctor", "color", "focus"] {
        assert!(
            !names.contains(&terminal_only),
            "{terminal_only} listed: {names:?}"
        );
    }
    assert!(!names.iter().any(|n| n.starts_with("__")), "{names:?}");
    assert!(
        !catalog["permission_modes"]
            .as_array()
            .expect("modes")
            .contains(&json!("bypassPermissions")),
        "{catalog}"
    );
    let usage = viewer
        .request(json!({"type": "session.usage", "session": "default"}), "v3")
        .await;
    assert_eq!(usage["type"], "session.usage", "{usage}");
    let used = usage["context"]["used_tokens"].as_u64().unwrap_or(0);
    let max = usage["context"]["max_tokens"].as_u64().unwrap_or(0);
    assert!(used > 0 && max >= used, "{usage}");
    assert!(usage["cost_usd"].as_f64().is_some(), "{usage}");
    assert_eq!(usage["rate_limit"], Value::Null, "{usage}");

    // The agent dies; the new one starts in plan mode (passed as a flag).
    let pid = healthz_agent_pid(&server).await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).expect("kill");
    a.recv_until("relay.agent_exit", |v| {
        v["type"] == "event" && v["event"]["type"] == "relay.agent_exit"
    })
    .await;
    wait_state(&mut a, "idle").await;
    run_turn(&mut a, "hello again").await;
    assert!(
        w.last_request_has(PLAN_MODE_TEXT),
        "plan mode was lost over the restart: {:?}",
        w.api.requests().last()
    );
    let list = a.request(json!({"type": "session.list"}), "a3").await;
    assert_eq!(
        list["sessions"][0]["settings"]["permission_mode"], "plan",
        "{list}"
    );
}

/// With `--allow-bypass-permissions` (and `IS_SANDBOX=1`, as the CLI wants for
/// root): a Write asked for under `default` stays pending when the mode becomes
/// `acceptEdits` (the CLI asked under the old mode); switching to
/// `bypassPermissions` allows it as `relay`, and the file is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_allows_what_is_pending_and_other_modes_leave_it() {
    let Some(bin) = require_real_cli() else {
        return;
    };
    let _serial = LOCK.lock().await;
    let w = World::new(bin).await;
    let server = w.start(&["--allow-bypass-permissions"], &[("IS_SANDBOX", "1")]);
    let mut a = idle_client(&server, &w.fx.owner, "laptop").await;
    let target = w.fx.workdir().join("bypass.txt");
    a.prompt(&format!("write-file {}", target.display())).await;
    let (request, _) = a
        .recv_until("the Write permission request", |v| {
            v["type"] == "event"
                && v["event"]["type"] == "control_request"
                && v["event"]["request"]["subtype"] == "can_use_tool"
        })
        .await;
    let request_id = request["event"]["request_id"]
        .as_str()
        .expect("request_id")
        .to_string();

    let ok = a.request(set("acceptEdits"), "a1").await;
    assert_eq!(ok["settings"]["permission_mode"], "acceptEdits", "{ok}");
    let list = a.request(json!({"type": "session.list"}), "a2").await;
    let pending = &list["sessions"][0]["pending"];
    assert!(
        pending.to_string().contains(&request_id),
        "still pending after acceptEdits: {list}"
    );

    let ok = a.request(set("bypassPermissions"), "a3").await;
    assert_eq!(
        ok["settings"]["permission_mode"], "bypassPermissions",
        "{ok}"
    );
    let (resolved, _) = a
        .recv_until("relay.resolved by the relay", |v| {
            v["type"] == "event"
                && v["event"]["type"] == "relay.resolved"
                && v["event"]["request_id"] == request_id.as_str()
        })
        .await;
    assert_eq!(resolved["event"]["client_id"], "relay", "{resolved}");
    assert_eq!(
        resolved["event"]["detail"], "mode bypassPermissions",
        "{resolved}"
    );
    assert_eq!(
        resolved["event"]["response"]["behavior"], "allow",
        "{resolved}"
    );
    wait_state(&mut a, "idle").await;
    assert_eq!(
        std::fs::read_to_string(&target).unwrap_or_default(),
        common::mock_anthropic::WRITE_CONTENT,
        "the allowed Write ran"
    );
    let catalog = a
        .request(
            json!({"type": "session.catalog", "session": "default"}),
            "a4",
        )
        .await;
    assert!(
        catalog["permission_modes"]
            .as_array()
            .expect("modes")
            .contains(&json!("bypassPermissions")),
        "{catalog}"
    );
}

/// A session asleep (created, never prompted): `session.set` is recorded and
/// listed in `pending_start`; the catalog answers `stale`; usage has no context.
/// The mock agent is enough here: nothing reaches an agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asleep_settings_wait_for_the_next_start() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let mut a = server.client(&fx.owner, Some("laptop")).await;
    let created = a
        .request(
            json!({"type": "session.create", "workdir": fx.workdir().display().to_string(), "name": "nap"}),
            "c1",
        )
        .await;
    assert_eq!(created["type"], "session.created", "{created}");
    let ok = a
        .request(
            json!({"type": "session.set", "session": "nap", "settings": {"permission_mode": "plan", "effort": "low", "auto_continue": true}}),
            "s1",
        )
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["settings"]["permission_mode"], "plan", "{ok}");
    assert_eq!(ok["settings"]["effort"], "low", "{ok}");
    assert_eq!(ok["settings"]["auto_continue"], true, "{ok}");
    assert_eq!(
        ok["pending_start"],
        json!(["permission_mode", "effort"]),
        "{ok}"
    );
    let catalog = a
        .request(json!({"type": "session.catalog", "session": "nap"}), "s2")
        .await;
    assert_eq!(catalog["stale"], true, "{catalog}");
    let usage = a
        .request(json!({"type": "session.usage", "session": "nap"}), "s3")
        .await;
    assert_eq!(usage["context"], Value::Null, "{usage}");
    // Recorded in the session's record, for the next server start.
    let created_dir = fx.data_dir().join("created");
    let recorded = common::eventually(std::time::Duration::from_secs(10), || {
        std::fs::read_dir(&created_dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|d| {
                std::fs::read_to_string(d.path().join("session.json"))
                    .unwrap_or_default()
                    .contains("\"plan\"")
            })
    })
    .await;
    assert!(recorded, "session.json does not hold the new settings");
}
