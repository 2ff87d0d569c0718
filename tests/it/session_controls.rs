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
    /// Held for the whole test, and let go last: one CLI at a time.
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl World {
    /// The real CLI under a fresh mock API, once no other test here runs one; `None`
    /// (after the SKIPPED line, a failure under `CCRELAY_REQUIRE_ALL`) without the CLI.
    async fn new() -> Option<World> {
        let bin = require_real_cli()?;
        let serial = LOCK.lock().await;
        Some(World {
            fx: Fixture::new(),
            api: MockAnthropic::start().await.expect("mock API starts"),
            bin,
            _serial: serial,
        })
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
    let Some(w) = World::new().await else {
        return;
    };
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
    let Some(w) = World::new().await else {
        return;
    };
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

/// Starts a `slow` turn and sends `text` as a steering prompt while it runs
/// (not queued); the running turn's prompt_id and the steer's.
async fn steer_into_a_slow_turn(a: &mut TestClient, text: &str) -> (String, String) {
    let running = a.prompt("slow").await;
    let running_id = running["prompt_id"]
        .as_str()
        .expect("prompt_id")
        .to_string();
    a.wait_turn(&running_id, &["started"]).await;
    let ok = a
        .request(
            json!({"type": "prompt", "session": "default", "content": text, "steer": true}),
            "steer",
        )
        .await;
    assert_eq!(ok["queued"], false, "{ok}");
    let steer_id = ok["prompt_id"].as_str().expect("prompt_id").to_string();
    (running_id, steer_id)
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

/// `respond` to a `can_use_tool` (docs/protocol.md §10): `updatedPermissions`
/// entries the agent did not suggest are `bad_message`, a `setMode` to
/// `bypassPermissions` without the server flag is `forbidden` (the request stays
/// pending both times), and the request's own suggestions are passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updated_permissions_are_limited_to_the_suggestions() {
    let Some(w) = World::new().await else {
        return;
    };
    let server = w.start(&[], &[]);
    let mut a = idle_client(&server, &w.fx.owner, "laptop").await;
    let target = w.fx.workdir().join("suggested.txt");
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
    let suggestions = request["event"]["request"]["permission_suggestions"].clone();
    assert!(
        suggestions.as_array().is_some_and(|s| !s.is_empty()),
        "the CLI suggested nothing: {request}"
    );
    let respond = |permissions: Value| {
        json!({"type": "respond", "session": "default", "request_id": request_id,
            "response": {"behavior": "allow", "updatedPermissions": permissions}})
    };

    let invented = json!([{"type": "addRules", "rules": [{"toolName": "Bash"}],
        "behavior": "allow", "destination": "userSettings"}]);
    let refused = a.request(respond(invented), "r1").await;
    assert_eq!(refused["code"], "bad_message", "{refused}");
    let bypass =
        json!([{"type": "setMode", "mode": "bypassPermissions", "destination": "session"}]);
    let refused = a.request(respond(bypass), "r2").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let list = a.request(json!({"type": "session.list"}), "r3").await;
    assert!(
        list["sessions"][0]["pending"]
            .to_string()
            .contains(&request_id),
        "no longer pending after refusals: {list}"
    );

    let ok = a.request(respond(suggestions.clone()), "r4").await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let (resolved, _) = a
        .recv_until("relay.resolved", |v| {
            v["type"] == "event"
                && v["event"]["type"] == "relay.resolved"
                && v["event"]["request_id"] == request_id.as_str()
        })
        .await;
    assert_eq!(
        resolved["event"]["response"]["updatedPermissions"], suggestions,
        "{resolved}"
    );
    wait_state(&mut a, "idle").await;
    assert_eq!(
        std::fs::read_to_string(&target).unwrap_or_default(),
        common::mock_anthropic::WRITE_CONTENT,
        "the allowed Write ran"
    );
}

/// The permission request of the running turn for `tool` (other tools' requests
/// on the way are allowed as asked).
async fn tool_request(c: &mut TestClient, tool: &str) -> Value {
    for n in 0..4 {
        let (request, _) = c
            .recv_until("a permission request", |v| {
                v["type"] == "event"
                    && v["event"]["type"] == "control_request"
                    && v["event"]["request"]["subtype"] == "can_use_tool"
            })
            .await;
        if request["event"]["request"]["tool_name"] == tool {
            return request;
        }
        let ok = c
            .request(
                json!({"type": "respond", "session": "default",
                    "request_id": request["event"]["request_id"], "response": {"behavior": "allow"}}),
                &format!("allow-{n}"),
            )
            .await;
        assert_eq!(ok["type"], "ok", "{ok}");
    }
    panic!("no {tool} request came");
}

/// `ExitPlanMode` (docs/protocol.md §10): its request is followed by `relay.plan`
/// with the plan's text; allowing it moves the CLI out of plan mode, tracked as
/// `relay.settings` from `agent`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_plan_mode_shows_the_plan_and_tracks_the_mode() {
    let Some(w) = World::new().await else {
        return;
    };
    let server = w.start(&[], &[]);
    let mut a = idle_client(&server, &w.fx.owner, "laptop").await;
    let ok = a.request(set("plan"), "p1").await;
    assert_eq!(ok["settings"]["permission_mode"], "plan", "{ok}");
    a.prompt("plan-mode-exit").await;
    let request = tool_request(&mut a, "ExitPlanMode").await;
    let request_id = request["event"]["request_id"]
        .as_str()
        .expect("request_id")
        .to_string();
    let (plan, _) = a
        .recv_until("relay.plan", |v| {
            v["type"] == "event" && v["event"]["type"] == "relay.plan"
        })
        .await;
    assert_eq!(plan["event"]["request_id"], request_id.as_str(), "{plan}");
    assert!(
        plan["event"]["plan"]
            .as_str()
            .is_some_and(|p| p.contains(common::mock_anthropic::PLAN_TEXT)),
        "{plan}"
    );
    assert!(plan["seq"].as_u64() > request["seq"].as_u64(), "{plan}");

    let ok = a
        .request(
            json!({"type": "respond", "session": "default", "request_id": request_id,
                "response": {"behavior": "allow"}}),
            "p2",
        )
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let (settings, _) = a
        .recv_until("relay.settings from the agent", |v| {
            v["type"] == "event" && v["event"]["type"] == "relay.settings"
        })
        .await;
    assert_eq!(settings["event"]["client_id"], "agent", "{settings}");
    assert_eq!(
        settings["event"]["settings"]["permission_mode"], "default",
        "{settings}"
    );
    assert_eq!(settings["event"]["changed"], json!(["permission_mode"]));
    wait_state(&mut a, "idle").await;
    let list = a.request(json!({"type": "session.list"}), "p3").await;
    assert_eq!(
        list["sessions"][0]["settings"]["permission_mode"], "default",
        "{list}"
    );
}

/// `AskUserQuestion` (docs/protocol.md §10): `allow` with `updatedInput` holding
/// the input plus `answers` reaches the CLI; the model's next request carries the
/// answers in the tool_result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_user_question_answers_reach_the_model() {
    use common::mock_anthropic::{QUESTION_COLOR, QUESTION_TOPPINGS};
    let Some(w) = World::new().await else {
        return;
    };
    let server = w.start(&[], &[]);
    let mut a = idle_client(&server, &w.fx.owner, "laptop").await;
    a.prompt("ask-question").await;
    let request = tool_request(&mut a, "AskUserQuestion").await;
    let mut input = request["event"]["request"]["input"].clone();
    input["answers"] = json!({QUESTION_COLOR: "Blue", QUESTION_TOPPINGS: "Cheese, Basil"});
    let ok = a
        .request(
            json!({"type": "respond", "session": "default",
                "request_id": request["event"]["request_id"],
                "response": {"behavior": "allow", "updatedInput": input}}),
            "q1",
        )
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    wait_state(&mut a, "idle").await;
    let sent = w.api.requests().pop().expect("a request after the answer");
    let last = sent["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    let tool_result = last["content"]
        .as_array()
        .and_then(|c| c.iter().find(|b| b["type"] == "tool_result"))
        .cloned()
        .unwrap_or_else(|| panic!("no tool_result in {last}"));
    let text = tool_result["content"].to_string();
    assert!(
        text.contains(QUESTION_COLOR) && text.contains("Blue") && text.contains("Cheese, Basil"),
        "the answers are not in the tool_result: {text}"
    );
}

/// `prompt.cancel` (docs/protocol.md §10): a prompt queued behind a running turn
/// is withdrawn (`relay.turn` `aborted`, detail `cancelled`) and never reaches
/// the model, the one behind it still runs; a viewer is `forbidden`, and the
/// running prompt or one cancelled already is `not_pending`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_prompts_can_be_cancelled() {
    let Some(w) = World::new().await else {
        return;
    };
    let server = w.start(&[], &[]);
    let mut a = idle_client(&server, &w.fx.owner, "laptop").await;
    let mut viewer = server.client(&w.fx.viewer, Some("tv")).await;
    let running = a.prompt("run-bash").await;
    let running_id = running["prompt_id"]
        .as_str()
        .expect("prompt_id")
        .to_string();
    let request = tool_request(&mut a, "Bash").await;
    let queued = a.prompt("cancel-me-please").await;
    assert_eq!(queued["queued"], true, "{queued}");
    let queued_id = queued["prompt_id"].as_str().expect("prompt_id").to_string();
    let behind = a.prompt("order-behind").await;
    let behind_id = behind["prompt_id"].as_str().expect("prompt_id").to_string();
    let cancel = |prompt_id: &str| json!({"type": "prompt.cancel", "session": "default", "prompt_id": prompt_id});

    let refused = viewer.request(cancel(&queued_id), "v1").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let refused = a.request(cancel(&running_id), "c0").await;
    assert_eq!(refused["code"], "not_pending", "{refused}");
    let ok = a.request(cancel(&queued_id), "c1").await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let (turn, _) = a
        .wait_turn(&queued_id, &["started", "ended", "aborted"])
        .await;
    assert_eq!(turn["event"]["phase"], "aborted", "{turn}");
    assert_eq!(turn["event"]["detail"], "cancelled", "{turn}");
    let refused = a.request(cancel(&queued_id), "c2").await;
    assert_eq!(refused["code"], "not_pending", "{refused}");

    let ok = a
        .request(
            json!({"type": "respond", "session": "default",
                "request_id": request["event"]["request_id"], "response": {"behavior": "allow"}}),
            "c3",
        )
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let (turn, _) = a.wait_turn(&behind_id, &["ended", "aborted"]).await;
    assert_eq!(turn["event"]["phase"], "ended", "{turn}");
    let requests = w.api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.to_string().contains("order-behind")),
        "the prompt behind never reached the model"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.to_string().contains("cancel-me-please")),
        "the cancelled prompt reached the model"
    );
}

/// Steering (docs/protocol.md §10): a `steer` prompt sent while `long-tool`'s
/// command runs reaches the model in the same turn (the request with the
/// tool_result carries it), is announced with `"steer":true` and ends `merged`
/// into the running turn, never `started`. With no turn running, a `steer`
/// prompt is an ordinary one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steering_prompt_joins_the_running_turn() {
    let Some(w) = World::new().await else {
        return;
    };
    let server = w.start(&[], &[]);
    let mut a = idle_client(&server, &w.fx.owner, "laptop").await;
    let running = a.prompt("long-tool").await;
    let running_id = running["prompt_id"]
        .as_str()
        .expect("prompt_id")
        .to_string();
    let request = tool_request(&mut a, "Bash").await;
    let ok = a
        .request(
            json!({"type": "respond", "session": "default",
                "request_id": request["event"]["request_id"], "response": {"behavior": "allow"}}),
            "s1",
        )
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let steer = |text: &str| json!({"type": "prompt", "session": "default", "content": text, "steer": true});
    let ok = a.request(steer("steer-text-walnut"), "s2").await;
    assert_eq!(ok["queued"], false, "{ok}");
    let steer_id = ok["prompt_id"].as_str().expect("prompt_id").to_string();
    let (announced, _) = a
        .recv_until("the steering relay.prompt", |v| {
            v["type"] == "event"
                && v["event"]["type"] == "relay.prompt"
                && v["event"]["prompt_id"] == steer_id.as_str()
        })
        .await;
    assert_eq!(announced["event"]["steer"], true, "{announced}");
    let (turn, _) = a
        .wait_turn(&steer_id, &["started", "ended", "aborted", "merged"])
        .await;
    assert_eq!(turn["event"]["phase"], "merged", "{turn}");
    assert_eq!(turn["event"]["into"], running_id.as_str(), "{turn}");
    let (ended, _) = a.wait_turn(&running_id, &["ended", "aborted"]).await;
    assert_eq!(ended["event"]["phase"], "ended", "{ended}");
    let with_result = w
        .api
        .requests()
        .into_iter()
        .find(|r| r.to_string().contains("long-done"))
        .expect("a request with the tool's output");
    assert!(
        with_result.to_string().contains("steer-text-walnut"),
        "the steer text is not in the request with the tool_result: {with_result}"
    );

    wait_state(&mut a, "idle").await;
    let ok = a.request(steer("order-plain"), "s3").await;
    let plain_id = ok["prompt_id"].as_str().expect("prompt_id").to_string();
    let (announced, _) = a
        .recv_until("the plain relay.prompt", |v| {
            v["type"] == "event"
                && v["event"]["type"] == "relay.prompt"
                && v["event"]["prompt_id"] == plain_id.as_str()
        })
        .await;
    assert!(announced["event"].get("steer").is_none(), "{announced}");
    let (turn, _) = a.wait_turn(&plain_id, &["started", "merged"]).await;
    assert_eq!(turn["event"]["phase"], "started", "{turn}");
    let (turn, _) = a.wait_turn(&plain_id, &["ended", "aborted"]).await;
    assert_eq!(turn["event"]["phase"], "ended", "{turn}");
}

/// `file.upload` (docs/protocol.md §10): an owner's file lands under
/// `.ccrelay/uploads/` with a sanitized, unique name and a `.gitignore`; a viewer
/// is `forbidden`, too much data `too_large`, bad base64 `bad_message`; with
/// `.ccrelay` a symlink to another directory the upload is refused and nothing
/// is written there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_upload_writes_only_inside_the_uploads_directory() {
    use base64::Engine;
    let Some(w) = World::new().await else {
        return;
    };
    let server = w.start(&["--max-upload-bytes", "64"], &[]);
    let mut a = idle_client(&server, &w.fx.owner, "laptop").await;
    let mut viewer = server.client(&w.fx.viewer, Some("tv")).await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let upload = |name: &str, data: String| json!({"type": "file.upload", "session": "default", "name": name, "data": data});

    let refused = viewer.request(upload("a.txt", b64(b"hi")), "v1").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let refused = a.request(upload("a.txt", b64(&[7u8; 65])), "u0").await;
    assert_eq!(refused["code"], "too_large", "{refused}");
    let refused = a.request(upload("a.txt", "not base64!".into()), "u1").await;
    assert_eq!(refused["code"], "bad_message", "{refused}");

    let workdir = w.fx.workdir();
    let first = a
        .request(upload("../../crash.log", b64(b"first")), "u2")
        .await;
    assert_eq!(first["type"], "ok", "{first}");
    let second = a
        .request(upload("../../crash.log", b64(b"second")), "u3")
        .await;
    let (p1, p2) = (
        first["path"].as_str().expect("path").to_string(),
        second["path"].as_str().expect("path").to_string(),
    );
    assert_ne!(p1, p2);
    for (path, content) in [(&p1, "first"), (&p2, "second")] {
        let rest = path
            .strip_prefix(".ccrelay/uploads/")
            .unwrap_or_else(|| panic!("{path}"));
        assert!(!rest.contains('/') && rest.ends_with(".log"), "{path}");
        assert_eq!(
            std::fs::read_to_string(workdir.join(path)).unwrap_or_default(),
            content
        );
    }
    assert_eq!(
        std::fs::read_to_string(workdir.join(".ccrelay/uploads/.gitignore")).unwrap_or_default(),
        "*\n"
    );

    // A `.ccrelay` that is a symlink elsewhere: refused, nothing written there.
    std::fs::remove_dir_all(workdir.join(".ccrelay")).expect("remove .ccrelay");
    let elsewhere = w.fx.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    std::os::unix::fs::symlink(&elsewhere, workdir.join(".ccrelay")).expect("symlink");
    let refused = a.request(upload("x.txt", b64(b"x")), "u4").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    assert_eq!(
        std::fs::read_dir(&elsewhere).expect("read_dir").count(),
        0,
        "something was written through the symlink"
    );
}

/// A steering prompt sent while the model only streams text (no tool boundary
/// left) is not merged: the CLI runs it right after as a turn of its own, which
/// the relay reports as `started` after the first turn's `ended`, then `ended`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steer_without_a_tool_boundary_runs_as_the_next_turn() {
    let Some(w) = World::new().await else {
        return;
    };
    let server = w.start(&[], &[]);
    let mut a = idle_client(&server, &w.fx.owner, "laptop").await;
    let (running_id, steer_id) = steer_into_a_slow_turn(&mut a, "order-late").await;
    let (first_end, _) = a.wait_turn(&running_id, &["ended", "aborted"]).await;
    assert_eq!(first_end["event"]["phase"], "ended", "{first_end}");
    let (turn, _) = a
        .wait_turn(&steer_id, &["started", "ended", "aborted", "merged"])
        .await;
    assert_eq!(turn["event"]["phase"], "started", "{turn}");
    assert!(turn["seq"].as_u64() > first_end["seq"].as_u64(), "{turn}");
    let (turn, _) = a.wait_turn(&steer_id, &["ended", "aborted"]).await;
    assert_eq!(turn["event"]["phase"], "ended", "{turn}");
    wait_state(&mut a, "idle").await;
    assert!(
        w.last_request_has("order-late"),
        "the steering prompt never reached the model"
    );
}

/// `/compact` as a prompt (docs/protocol.md §10.1) through the relay: after an
/// ordinary turn, the prompt `/compact` runs the CLI's compaction as a turn of
/// its own. Clients see its `relay.prompt`, `relay.turn` `started`, the agent's
/// `system` `compact_boundary`, a `result` with `num_turns` 0 and `relay.turn`
/// `ended`, in that order; the mock API was asked for a summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compact_prompt_compacts_the_conversation() {
    let Some(w) = World::new().await else {
        return;
    };
    let server = w.start(&[], &[]);
    let mut a = idle_client(&server, &w.fx.owner, "laptop").await;
    run_turn(&mut a, "hello").await;
    let asked_before = w.api.requests().len();

    let ok = a.prompt("/compact").await;
    let prompt_id = ok["prompt_id"].as_str().expect("prompt_id").to_string();
    let (ended, mut seen) = a.wait_turn(&prompt_id, &["ended", "aborted"]).await;
    assert_eq!(ended["event"]["phase"], "ended", "{ended}");
    seen.push(ended);
    let position = |what: &str, pred: &dyn Fn(&Value) -> bool| {
        seen.iter()
            .position(|v| v["type"] == "event" && pred(&v["event"]))
            .unwrap_or_else(|| panic!("no {what} in {seen:#?}"))
    };
    let announced = position("relay.prompt", &|e| {
        e["type"] == "relay.prompt" && e["prompt_id"] == prompt_id.as_str()
    });
    assert_eq!(
        seen[announced]["event"]["content"], "/compact",
        "{}",
        seen[announced]
    );
    let started = position("relay.turn started", &|e| {
        e["type"] == "relay.turn" && e["prompt_id"] == prompt_id.as_str() && e["phase"] == "started"
    });
    let boundary = position("compact_boundary", &|e| {
        e["type"] == "system" && e["subtype"] == "compact_boundary"
    });
    assert_eq!(
        seen[boundary]["event"]["compact_metadata"]["trigger"], "manual",
        "{}",
        seen[boundary]
    );
    let result = position("result", &|e| e["type"] == "result");
    assert_eq!(seen[result]["event"]["num_turns"], 0, "{}", seen[result]);
    assert_eq!(seen[result]["event"]["is_error"], false, "{}", seen[result]);
    let ended_at = seen.len() - 1;
    assert!(
        announced < started && started < boundary && boundary < result && result < ended_at,
        "out of order: prompt {announced}, started {started}, boundary {boundary}, result {result}, ended {ended_at}"
    );
    let summarized = w.api.requests()[asked_before..].iter().any(|r| {
        r.to_string()
            .contains("create a detailed summary of the conversation")
    });
    assert!(
        summarized,
        "the mock API was not asked for a summary: {:?}",
        &w.api.requests()[asked_before..]
    );
}

// ------------------------------------------------- an agent without a control

/// The version the mock agent reports as `claude_code_version`.
const MOCK_VERSION: &str = ccrelay::mock_agent::VERSION;

/// An agent that does not know a control request (the mock agent refusing
/// it as the CLI refuses an unknown subtype): `session.set` answers
/// `agent_unavailable` naming the agent's version at once, well before the
/// relay's 30 s control timeout (the reply must come within the client's
/// frame timeout), and nothing changes; `session.usage` still answers, with no
/// context. Later requests are served as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_a_control_answers_agent_unavailable_not_a_hang() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().env(
        "CCRELAY_MOCK_REFUSE_CONTROLS",
        "set_model,set_permission_mode,get_context_usage",
    ));
    let mut a = idle_client(&server, &fx.owner, "laptop").await;
    run_turn(&mut a, "hello").await;

    let before = a.request(json!({"type": "session.list"}), "l0").await;
    let settings = before["sessions"][0]["settings"].clone();
    assert_eq!(settings["model"], Value::Null, "{before}");
    assert_eq!(settings["permission_mode"], "default", "{before}");

    for (i, asked) in [
        json!({"model": "sonnet"}),
        json!({"permission_mode": "plan"}),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("s{i}");
        let refused = a
            .request(
                json!({"type": "session.set", "session": "default", "settings": asked}),
                &id,
            )
            .await;
        assert_eq!(refused["type"], "error", "{refused}");
        assert_eq!(refused["code"], "agent_unavailable", "{refused}");
        let message = refused["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("Claude Code {MOCK_VERSION} does not support")),
            "{refused}"
        );
        let after = a
            .request(json!({"type": "session.list"}), &format!("l{i}"))
            .await;
        assert_eq!(after["sessions"][0]["settings"], settings, "{after}");
    }

    let usage = a
        .request(json!({"type": "session.usage", "session": "default"}), "u1")
        .await;
    assert_eq!(usage["type"], "session.usage", "{usage}");
    assert_eq!(usage["context"], Value::Null, "{usage}");

    // A setting the agent needs no control for still applies, and a turn runs.
    let ok = a
        .request(
            json!({"type": "session.set", "session": "default", "settings": {"auto_continue": true}}),
            "s9",
        )
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["settings"]["auto_continue"], true, "{ok}");
    assert_eq!(ok["settings"]["model"], Value::Null, "{ok}");
    run_turn(&mut a, "still here").await;
}

/// Steering (docs/protocol.md §10.1) when only the turn's `result` says a
/// steer was taken in (the mock agent with `CCRELAY_MOCK_MERGE_STEERS`: no
/// `command_lifecycle` `completed` for it, its uuid in the result's
/// `user_message_uuids`): the steer is `merged` into the running turn, before
/// that turn's `ended`, and never `started`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steer_listed_in_the_result_is_merged_before_the_turn_ends() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().env("CCRELAY_MOCK_MERGE_STEERS", "1"));
    let mut a = idle_client(&server, &fx.owner, "laptop").await;
    let (running_id, steer_id) = steer_into_a_slow_turn(&mut a, "steer-text-almond").await;
    let (turn, _) = a
        .recv_until("the next relay.turn", |v| {
            v["type"] == "event"
                && v["event"]["type"] == "relay.turn"
                && (v["event"]["prompt_id"] == steer_id.as_str()
                    || v["event"]["prompt_id"] == running_id.as_str())
        })
        .await;
    assert_eq!(turn["event"]["prompt_id"], steer_id.as_str(), "{turn}");
    assert_eq!(turn["event"]["phase"], "merged", "{turn}");
    assert_eq!(turn["event"]["into"], running_id.as_str(), "{turn}");
    let (ended, mut seen) = a.wait_turn(&running_id, &["ended", "aborted"]).await;
    assert_eq!(ended["event"]["phase"], "ended", "{ended}");
    // Nothing more of the steer: the next prompt runs as the next turn, and the
    // steer never had one.
    let after = a.prompt("after").await;
    let after_id = after["prompt_id"].as_str().expect("prompt_id").to_string();
    let (after_ended, skipped) = a.wait_turn(&after_id, &["ended", "aborted"]).await;
    assert_eq!(after_ended["event"]["phase"], "ended", "{after_ended}");
    seen.extend(skipped);
    let steer_turns: Vec<&Value> = seen
        .iter()
        .filter(|v| {
            v["event"]["type"] == "relay.turn" && v["event"]["prompt_id"] == steer_id.as_str()
        })
        .collect();
    assert!(steer_turns.is_empty(), "{steer_turns:?}");
}

/// `--allow-bypass-permissions` starts agents with the CLI's flag that permits
/// the switch. As root the real CLI refuses that flag unless `IS_SANDBOX=1`:
/// `serve` then exits 2 at start with the CLI's reason instead of starting agents
/// that would exit at once, over and over (docs/protocol.md §10). As another user
/// it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_bypass_as_root_without_a_sandbox_exits_2_with_the_clis_reason() {
    let Some(w) = World::new().await else {
        return;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        let server = w.start(&["--allow-bypass-permissions"], &[]);
        let _ = idle_client(&server, &w.fx.owner, "laptop").await;
        return;
    }
    let fx = &w.fx;
    let mut child = fx
        .serve_command()
        .arg("--allow-bypass-permissions")
        .arg("--agent-cmd")
        .arg(&w.bin)
        .env_remove("IS_SANDBOX")
        .envs(offline_env(&fx.path().join("home"), &w.api.base_url))
        .spawn()
        .expect("ccrelay starts");
    let deadline = std::time::Instant::now() + common::scaled(std::time::Duration::from_secs(60));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("serve kept running as root with a flag the CLI refuses");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        pipe.read_to_string(&mut stderr).expect("stderr");
    }
    let mut stdout = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        use std::io::Read;
        pipe.read_to_string(&mut stdout).expect("stdout");
    }
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--allow-dangerously-skip-permissions") && stderr.contains("IS_SANDBOX=1"),
        "the reason names the flag and the way out: {stderr}"
    );
    assert!(!stdout.contains("listening"), "it never listened: {stdout}");
}
