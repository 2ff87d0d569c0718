//! The Claude Code CLI's own controls over stream-json (docs/protocol.md §10.1):
//! the REAL pinned CLI, offline against the mock Anthropic API, driven directly
//! on pipes with the relay's flags (no relay involved).
//!
//! Every scenario is a function that drives one CLI and checks what it sees;
//! the tests below run them. The same scenarios also record the transcripts in
//! `tests/fixtures/cli-controls/` (the lines sent and received, and a summary of
//! each request the mock API got) that the unit tests of
//! `ccrelay_server::agent::controls` parse. Re-record after a CLI upgrade with
//!
//! ```text
//! cargo test --test it cli_controls::record_transcripts -- --ignored --test-threads=1
//! ```
//!
//! (ignored: it takes minutes, and an ordinary run must not rewrite fixtures).
//! Each CLI is a ~200 MB process: the tests take turns (`LOCK`). Without the CLI
//! they print the SKIPPED line and pass, unless `CCRELAY_REQUIRE_ALL=1`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

use common::mock_anthropic::{
    LONG_TOOL_SECS, MockAnthropic, PLAN_TEXT, QUESTION_COLOR, QUESTION_TOPPINGS,
    USAGE_LIMIT_SOON_SECS,
};
use common::real_cli::{
    AgentChild, STREAM_JSON_FLAGS, gateway_env, kinds, offline_env, require_real_cli,
};

static LOCK: Mutex<()> = Mutex::new(());

/// Per turn or control answer, generous: a cold CLI on a busy 2-core machine.
const TURN: Duration = Duration::from_secs(45);
const EXIT: Duration = Duration::from_secs(20);
/// Where the transcripts live (relative to the repository).
const FIXTURES: &str = "tests/fixtures/cli-controls";
/// The home the transcripts show instead of each run's temporary directory.
const SHOWN_HOME: &str = "/home/dev";

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// One scenario's world: a runtime hosting the mock API and a throwaway home.
struct World {
    api: MockAnthropic,
    home: tempfile::TempDir,
    bin: PathBuf,
    /// Everything sent and received, in the transcript format.
    log: Vec<Value>,
    started: Instant,
    /// How many of the mock's requests are already summarized in `log`.
    api_seen: usize,
    /// Run the CLI as an LLM gateway's client ([`gateway_env`]) instead of with an API key.
    gateway: bool,
    // Last, so the mock API is dropped while its runtime still exists.
    _rt: tokio::runtime::Runtime,
}

/// One CLI process of a [`World`].
struct Cli {
    agent: AgentChild,
}

impl World {
    fn new(bin: PathBuf) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let api = rt.block_on(MockAnthropic::start())?;
        Ok(World {
            api,
            home: tempfile::tempdir()?,
            bin,
            log: Vec::new(),
            started: Instant::now(),
            api_seen: 0,
            gateway: false,
            _rt: rt,
        })
    }

    fn workdir(&self) -> anyhow::Result<PathBuf> {
        let dir = self.home.path().join("project");
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn record(&mut self, dir: &str, msg: Value) {
        let t_ms = (self.started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
        self.log.push(json!({"t_ms": t_ms, "dir": dir, "msg": msg}));
    }

    /// A note in the transcript (what the scenario does next, and why).
    fn note(&mut self, text: &str) {
        self.record("note", json!({"note": text}));
    }

    /// Spawns the CLI with the relay's flags plus `extra`, and initializes it.
    fn spawn(&mut self, extra: &[&str]) -> anyhow::Result<(Cli, Value)> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(STREAM_JSON_FLAGS)
            .args(extra)
            .current_dir(self.workdir()?)
            .env_remove("ANTHROPIC_AUTH_TOKEN")
            .env_remove("CLAUDE_CODE_ENTRYPOINT")
            .envs(if self.gateway {
                gateway_env(self.home.path(), &self.api.base_url)
            } else {
                offline_env(self.home.path(), &self.api.base_url)
            });
        let mut spawn: Vec<&str> = vec!["claude"];
        spawn.extend(STREAM_JSON_FLAGS);
        spawn.extend(extra);
        self.record(
            "note",
            json!({"spawn": spawn, "cwd": format!("{SHOWN_HOME}/project")}),
        );
        let mut cli = Cli {
            agent: AgentChild::spawn(cmd)?,
        };
        let init = self.control(
            &mut cli,
            "req_init",
            json!({"subtype":"initialize","hooks":null}),
        )?;
        ensure!(init["subtype"] == "success", "initialize: {init}");
        Ok((cli, init))
    }

    fn send(&mut self, cli: &mut Cli, v: &Value) -> anyhow::Result<()> {
        self.record("stdin", v.clone());
        cli.agent.send(v)
    }

    fn next(&mut self, cli: &mut Cli, timeout: Duration) -> anyhow::Result<Value> {
        let v = cli.agent.next_json(timeout)?;
        self.record("stdout", v.clone());
        Ok(v)
    }

    /// Reads lines until one matches `pred` (within `timeout`); every line read, the match last.
    fn until(
        &mut self,
        cli: &mut Cli,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .next(cli, left)
                .with_context(|| format!("waiting; kinds so far: {:?}", kinds(&seen)))?;
            let hit = pred(&v);
            seen.push(v);
            if hit {
                return Ok(seen);
            }
        }
    }

    /// Reads every line that arrives within `wait` (stops at the first quiet `wait`).
    fn drain(&mut self, cli: &mut Cli, wait: Duration) -> Vec<Value> {
        let mut seen = Vec::new();
        for _ in 0..10_000 {
            match cli.agent.next_json(wait) {
                Ok(v) => {
                    self.record("stdout", v.clone());
                    seen.push(v);
                }
                Err(_) => break,
            }
        }
        seen
    }

    /// Sends a control request and returns the `response` envelope of its answer
    /// (`subtype` success/error, `response` or `error`); the lines read meanwhile are logged.
    fn control(
        &mut self,
        cli: &mut Cli,
        request_id: &str,
        request: Value,
    ) -> anyhow::Result<Value> {
        let line = json!({"type":"control_request","request_id":request_id,"request":request});
        self.send(cli, &line)?;
        let lines = self.until(cli, TURN, |v| {
            v["type"] == "control_response" && v["response"]["request_id"] == request_id
        })?;
        Ok(lines.last().context("answer")?["response"].clone())
    }

    /// Sends a prompt and reads until its `result`.
    fn turn(&mut self, cli: &mut Cli, prompt: Value) -> anyhow::Result<Vec<Value>> {
        self.send(cli, &prompt)?;
        self.until(cli, TURN, |v| v["type"] == "result")
    }

    /// Closes stdin and waits for the exit.
    fn close(&mut self, mut cli: Cli) -> anyhow::Result<()> {
        cli.agent.close_stdin();
        let status = cli.agent.wait(EXIT)?;
        self.record("note", json!({"exit": status.code()}));
        Ok(())
    }

    /// Requests the mock API got since the last call, also summarized in the log.
    fn new_requests(&mut self) -> Vec<Value> {
        let all = self.api.requests();
        let fresh: Vec<Value> = all.iter().skip(self.api_seen).cloned().collect();
        self.api_seen = all.len();
        for r in &fresh {
            let summary = request_summary(r);
            self.record("api", summary);
        }
        fresh
    }

    /// Writes the transcript to `tests/fixtures/cli-controls/<name>.jsonl`.
    fn save(&mut self, name: &str) -> anyhow::Result<()> {
        self.new_requests();
        let home = self.home.path().display().to_string();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURES);
        std::fs::create_dir_all(&dir)?;
        let mut text = String::new();
        for entry in &self.log {
            text.push_str(&entry.to_string().replace(&home, SHOWN_HOME));
            text.push('\n');
        }
        std::fs::write(dir.join(format!("{name}.jsonl")), text)?;
        Ok(())
    }
}

/// A prompt line; `uuid` and `priority` when given.
fn prompt(content: Value, uuid: Option<&str>, priority: Option<&str>) -> Value {
    let mut v = json!({"type":"user","message":{"role":"user","content":content},
        "parent_tool_use_id":null,"session_id":""});
    if let Some(u) = uuid {
        v["uuid"] = json!(u);
    }
    if let Some(p) = priority {
        v["priority"] = json!(p);
    }
    v
}

fn text_prompt(text: &str) -> Value {
    prompt(json!(text), None, None)
}

/// What a transcript keeps of one API request: the model, thinking, the tool
/// names, the system prompt's size and the last two messages (images and long texts shortened).
fn request_summary(r: &Value) -> Value {
    let tools: Vec<&str> = r["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    let messages = r["messages"].as_array().cloned().unwrap_or_default();
    let tail: Vec<Value> = messages
        .iter()
        .skip(messages.len().saturating_sub(2))
        .map(shorten_images)
        .collect();
    json!({"model": r["model"], "thinking": r["thinking"], "max_tokens": r["max_tokens"],
        "tools": tools, "system_chars": r["system"].to_string().len(),
        "messages": messages.len(), "last_messages": tail})
}

/// How much of a long text an API request summary keeps (the environment section
/// and plan mode's instructions run to several thousand characters).
const TEXT_KEPT: usize = 1500;

/// A message with image data and long texts shortened, for a request summary.
fn shorten_images(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, val) in map {
                if k == "data" && map.get("type") == Some(&json!("base64")) {
                    let len = val.as_str().map(str::len).unwrap_or(0);
                    out.insert(k.clone(), json!(format!("<{len} base64 chars>")));
                } else if let Some(text) = val.as_str().filter(|t| t.chars().count() > TEXT_KEPT) {
                    let kept: String = text.chars().take(TEXT_KEPT).collect();
                    let len = text.chars().count();
                    out.insert(k.clone(), json!(format!("{kept}… ({len} chars)")));
                } else {
                    out.insert(k.clone(), shorten_images(val));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(shorten_images).collect()),
        other => other.clone(),
    }
}

/// Every text the CLI sent in a request (system prompt and messages), joined.
fn request_text(request: &Value) -> String {
    format!("{}\n{}", request["system"], request["messages"])
}

fn find(lines: &[Value], pred: impl Fn(&Value) -> bool) -> Option<&Value> {
    lines.iter().find(|v| pred(v))
}

fn is_can_use_tool(v: &Value) -> bool {
    v["type"] == "control_request" && v["request"]["subtype"] == "can_use_tool"
}

// ---------------------------------------------------------------------------
// Scenarios. Each drives one world and checks what the CLI does.

/// `initialize`'s answer and `system/init` of a first turn.
fn initialize_and_init(w: &mut World) -> anyhow::Result<()> {
    let (mut cli, init) = w.spawn(&[])?;
    let answer = &init["response"];
    let commands = answer["commands"].as_array().context("commands")?;
    ensure!(
        commands.iter().any(|c| c["name"] == "compact"),
        "no compact in {commands:?}"
    );
    ensure!(answer["models"].as_array().is_some_and(|m| !m.is_empty()));
    ensure!(answer["current_permission_mode"] == "default", "{answer}");
    let lines = w.turn(
        &mut cli,
        prompt(
            json!("hello"),
            Some("11111111-1111-4111-8111-111111111111"),
            None,
        ),
    )?;
    let sys = find(&lines, |v| v["type"] == "system" && v["subtype"] == "init")
        .context("no system/init")?;
    ensure!(sys["permissionMode"] == "default", "{sys}");
    ensure!(
        sys["slash_commands"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == "compact"))
    );
    w.close(cli)
}

/// `set_permission_mode`: plan (and what the next request shows), a mode the
/// CLI does not know, the bypass modes without the launch flag, back to default.
fn permission_mode(w: &mut World) -> anyhow::Result<()> {
    let (mut cli, _) = w.spawn(&[])?;
    w.turn(&mut cli, text_prompt("hello"))?;
    let before = w.new_requests().pop().context("no request")?;
    w.note("set_permission_mode plan, then a turn: what changes in the API request");
    let ans = w.control(
        &mut cli,
        "req_mode_plan",
        json!({"subtype":"set_permission_mode","mode":"plan"}),
    )?;
    ensure!(ans["subtype"] == "success", "{ans}");
    ensure!(ans["response"]["mode"] == "plan", "{ans}");
    let lines = w.turn(&mut cli, text_prompt("hello in plan mode"))?;
    let sys = find(&lines, |v| v["subtype"] == "init").context("no init")?;
    ensure!(sys["permissionMode"] == "plan", "{sys}");
    let after = w.new_requests().pop().context("no request")?;
    let plan_words = "Plan mode is active";
    ensure!(
        !request_text(&before).contains(plan_words) && request_text(&after).contains(plan_words),
        "plan mode's instructions not found in the request after set_permission_mode"
    );
    w.note("a mode the CLI does not know");
    let bad = w.control(
        &mut cli,
        "req_mode_bogus",
        json!({"subtype":"set_permission_mode","mode":"bogus"}),
    )?;
    ensure!(bad["subtype"] == "error", "{bad}");
    ensure!(
        bad["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{bad}"
    );
    w.note("bypassPermissions and auto without --allow-dangerously-skip-permissions");
    w.control(
        &mut cli,
        "req_mode_bypass",
        json!({"subtype":"set_permission_mode","mode":"bypassPermissions"}),
    )?;
    w.control(
        &mut cli,
        "req_mode_auto",
        json!({"subtype":"set_permission_mode","mode":"auto"}),
    )?;
    w.control(
        &mut cli,
        "req_mode_accept",
        json!({"subtype":"set_permission_mode","mode":"acceptEdits"}),
    )?;
    let back = w.control(
        &mut cli,
        "req_mode_default",
        json!({"subtype":"set_permission_mode","mode":"default"}),
    )?;
    ensure!(back["response"]["mode"] == "default", "{back}");
    w.drain(&mut cli, Duration::from_millis(500));
    w.close(cli)
}

/// `set_model`: an alias, an unknown id, null; where the model in effect shows.
fn model(w: &mut World) -> anyhow::Result<()> {
    let (mut cli, _) = w.spawn(&[])?;
    for (id, model) in [
        ("req_model_sonnet", json!("sonnet")),
        ("req_model_unknown", json!("no-such-model-xyz")),
        ("req_model_null", Value::Null),
    ] {
        let ans = w.control(&mut cli, id, json!({"subtype":"set_model","model":model}))?;
        if model == "no-such-model-xyz" {
            ensure!(
                ans["subtype"] == "error",
                "an unknown model was accepted: {ans}"
            );
        } else {
            ensure!(ans["subtype"] == "success", "{ans}");
        }
        let lines = w.turn(&mut cli, text_prompt("hello"))?;
        let sys = find(&lines, |v| v["subtype"] == "init").context("no init")?;
        let sent = w.new_requests().pop().context("no request")?;
        w.note(&format!(
            "after set_model {model}: system/init model {}, API model {}",
            sys["model"], sent["model"]
        ));
    }
    w.close(cli)
}

/// `set_max_thinking_tokens`: a budget, 0, null; what the API request carries.
fn thinking(w: &mut World) -> anyhow::Result<()> {
    let (mut cli, _) = w.spawn(&[])?;
    for (id, budget) in [
        ("req_think_2048", json!(2048)),
        ("req_think_0", json!(0)),
        ("req_think_null", Value::Null),
    ] {
        let ans = w.control(
            &mut cli,
            id,
            json!({"subtype":"set_max_thinking_tokens","max_thinking_tokens":budget}),
        )?;
        ensure!(ans["subtype"] == "success", "{ans}");
        w.turn(&mut cli, text_prompt("hello"))?;
        let sent = w.new_requests().pop().context("no request")?;
        w.note(&format!(
            "after set_max_thinking_tokens {budget}: API thinking {}",
            sent["thinking"]
        ));
    }
    w.close(cli)
}

/// The read-only queries: context usage, plan, usage, cost, models, settings.
fn queries(w: &mut World) -> anyhow::Result<()> {
    let (mut cli, _) = w.spawn(&[])?;
    let first = w.control(
        &mut cli,
        "req_ctx_summary_0",
        json!({"subtype":"get_context_usage","detail":"summary"}),
    )?;
    w.turn(&mut cli, text_prompt("hello"))?;
    let summary = w.control(
        &mut cli,
        "req_ctx_summary",
        json!({"subtype":"get_context_usage","detail":"summary"}),
    )?;
    for s in [&first, &summary] {
        ensure!(s["subtype"] == "success", "{s}");
        ensure!(
            s["response"]["totalTokens"].is_u64() && s["response"]["maxTokens"].is_u64(),
            "{s}"
        );
    }
    w.control(
        &mut cli,
        "req_ctx_full",
        json!({"subtype":"get_context_usage"}),
    )?;
    w.control(&mut cli, "req_plan", json!({"subtype":"get_plan"}))?;
    w.control(
        &mut cli,
        "req_usage",
        json!({"subtype":"get_usage","skip_behaviors":true}),
    )?;
    w.control(&mut cli, "req_cost", json!({"subtype":"get_session_cost"}))?;
    w.control(&mut cli, "req_models", json!({"subtype":"list_models"}))?;
    w.control(&mut cli, "req_status", json!({"subtype":"get_status"}))?;
    w.control(
        &mut cli,
        "req_effort_flag",
        json!({"subtype":"apply_flag_settings","settings":{"effortLevel":"low"}}),
    )?;
    w.turn(&mut cli, text_prompt("hello after effort"))?;
    w.new_requests();
    w.close(cli)
}

/// A `priority:"next"` prompt sent while `long-tool` runs: folded into the turn.
fn steer(w: &mut World) -> anyhow::Result<()> {
    let (mut cli, _) = w.spawn(&[])?;
    let first = "22222222-2222-4222-8222-222222222222";
    let steer = "33333333-3333-4333-8333-333333333333";
    w.send(
        &mut cli,
        &prompt(json!("please long-tool"), Some(first), None),
    )?;
    let lines = w.until(&mut cli, TURN, is_can_use_tool)?;
    let req = lines.last().context("no prompt")?.clone();
    let request_id = req["request_id"].as_str().context("request_id")?;
    w.send(
        &mut cli,
        &json!({"type":"control_response","response":{"subtype":"success","request_id":request_id,
            "response":{"behavior":"allow","updatedInput":req["request"]["input"]}}}),
    )?;
    w.note(&format!(
        "the tool now runs for {LONG_TOOL_SECS} s: a prompt with priority next"
    ));
    w.send(
        &mut cli,
        &prompt(
            json!("steer-banana: also mention bananas"),
            Some(steer),
            Some("next"),
        ),
    )?;
    let lines = w.until(&mut cli, TURN, |v| v["type"] == "result")?;
    let result = lines.last().context("result")?.clone();
    // A second result would mean the steering prompt ran as a turn of its own.
    let after = w.drain(&mut cli, Duration::from_secs(3));
    ensure!(
        !after.iter().any(|v| v["type"] == "result"),
        "the steering prompt got a turn of its own: {:?}",
        kinds(&after)
    );
    ensure!(
        result["result"]
            .as_str()
            .is_some_and(|r| r.contains("steer-banana")),
        "the model's answer in the same turn does not show the steering text: {result}"
    );
    let completed = lines.iter().chain(after.iter()).any(|v| {
        v["type"] == "command_lifecycle" && v["command_uuid"] == steer && v["state"] == "completed"
    });
    ensure!(
        completed,
        "no command_lifecycle completed for the steering uuid"
    );
    w.new_requests();
    w.close(cli)
}

/// A `priority:"next"` prompt sent while the model streams text (no tool to wait
/// for): how the CLI runs it once the turn's reply ends.
fn steer_without_tool(w: &mut World) -> anyhow::Result<()> {
    let (mut cli, _) = w.spawn(&[])?;
    let first = "44444444-4444-4444-8444-444444444444";
    let steer = "55555555-5555-4555-8555-555555555555";
    w.send(&mut cli, &prompt(json!("slow please"), Some(first), None))?;
    w.until(&mut cli, TURN, |v| {
        v["type"] == "stream_event" && v["event"]["type"] == "content_block_delta"
    })?;
    w.note("the model streams its reply: a prompt with priority next");
    w.send(
        &mut cli,
        &prompt(json!("order-7"), Some(steer), Some("next")),
    )?;
    let mut lines = w.until(&mut cli, TURN, |v| v["type"] == "result")?;
    lines.extend(w.drain(&mut cli, Duration::from_secs(3)));
    if !lines
        .iter()
        .any(|v| v["type"] == "result" && v["user_message_uuid"] == steer)
    {
        lines.extend(w.until(&mut cli, TURN, |v| v["type"] == "result")?);
    }
    let results: Vec<&Value> = lines.iter().filter(|v| v["type"] == "result").collect();
    w.note(&format!("{} result(s)", results.len()));
    ensure!(
        results.len() == 2 && results[1]["user_message_uuid"] == steer,
        "expected the steering prompt to run as a turn of its own after the first: {results:?}"
    );
    ensure!(
        results.iter().any(|r| r["result"]
            .as_str()
            .is_some_and(|t| t.contains("ack order-7"))),
        "the steering prompt never reached the model: {:?}",
        kinds(&lines)
    );
    w.new_requests();
    w.close(cli)
}

/// `ExitPlanMode` in plan mode: the can_use_tool request, allow, the mode after.
fn exit_plan_mode(w: &mut World) -> anyhow::Result<()> {
    let (mut cli, _) = w.spawn(&["--permission-mode", "plan"])?;
    w.send(&mut cli, &text_prompt("plan-mode-exit"))?;
    let mut req = Value::Null;
    // The plan file's Write may ask too (it does not in plan mode); allow it.
    for _ in 0..3 {
        let lines = w.until(&mut cli, TURN, is_can_use_tool)?;
        req = lines.last().context("no prompt")?.clone();
        if req["request"]["tool_name"] != "Write" {
            break;
        }
        let id = req["request_id"].as_str().context("request_id")?;
        w.send(
            &mut cli,
            &json!({"type":"control_response","response":{"subtype":"success","request_id":id,
                "response":{"behavior":"allow","updatedInput":req["request"]["input"]}}}),
        )?;
    }
    ensure!(req["request"]["tool_name"] == "ExitPlanMode", "{req}");
    // The plan travels in the request's input or, when the CLI leaves it out, in `get_plan`.
    let plan = w.control(&mut cli, "req_plan_pending", json!({"subtype":"get_plan"}))?;
    let text = req["request"]["input"]["plan"]
        .as_str()
        .or(plan["response"]["content"].as_str())
        .unwrap_or_default();
    ensure!(
        text.contains(PLAN_TEXT),
        "the plan is neither in the request's input nor in get_plan: {req} {plan}"
    );
    let request_id = req["request_id"].as_str().context("request_id")?;
    w.send(
        &mut cli,
        &json!({"type":"control_response","response":{"subtype":"success","request_id":request_id,
            "response":{"behavior":"allow","updatedInput":req["request"]["input"]}}}),
    )?;
    w.until(&mut cli, TURN, |v| v["type"] == "result")?;
    w.drain(&mut cli, Duration::from_millis(500));
    w.turn(&mut cli, text_prompt("hello after the plan"))?;
    w.new_requests();
    w.close(cli)
}

/// `AskUserQuestion`: the request and the answer shape the CLI takes.
fn ask_question(w: &mut World) -> anyhow::Result<()> {
    let (mut cli, _) = w.spawn(&[])?;
    w.send(&mut cli, &text_prompt("ask-question"))?;
    let lines = w.until(&mut cli, TURN, is_can_use_tool)?;
    let req = lines.last().context("no prompt")?.clone();
    ensure!(req["request"]["tool_name"] == "AskUserQuestion", "{req}");
    let mut input = req["request"]["input"].clone();
    input["answers"] = json!({QUESTION_COLOR: "Blue", QUESTION_TOPPINGS: "Cheese, Basil"});
    let request_id = req["request_id"].as_str().context("request_id")?;
    w.send(
        &mut cli,
        &json!({"type":"control_response","response":{"subtype":"success","request_id":request_id,
            "response":{"behavior":"allow","updatedInput":input}}}),
    )?;
    w.until(&mut cli, TURN, |v| v["type"] == "result")?;
    let sent = w.new_requests().pop().context("no request")?;
    let last = sent["messages"]
        .as_array()
        .and_then(|m| m.last())
        .context("messages")?;
    let tool_result = last["content"]
        .as_array()
        .and_then(|c| c.iter().find(|b| b["type"] == "tool_result"))
        .with_context(|| format!("no tool_result in {last}"))?;
    let text = tool_result["content"].to_string();
    ensure!(
        text.contains("Blue") && text.contains("Cheese, Basil") && text.contains(QUESTION_COLOR),
        "the answers are not in the tool_result: {text}"
    );
    w.close(cli)
}

/// HTTP 429 with usage-limit headers, with an API key.
fn usage_limit(w: &mut World) -> anyhow::Result<()> {
    let (mut cli, _) = w.spawn(&[])?;
    let lines = w.turn(&mut cli, text_prompt("usage-limit"))?;
    let result = lines.last().context("result")?;
    ensure!(result["is_error"] == true, "{result}");
    w.drain(&mut cli, Duration::from_millis(500));
    w.new_requests();
    w.close(cli)
}

/// The same limit for an LLM gateway's client, resetting in a few seconds (a long
/// `retry-after`): the CLI reports it as a `rate_limit_event` with its reset, then
/// ends the turn with an API error (docs/protocol.md §10.1).
fn usage_limit_gateway(w: &mut World) -> anyhow::Result<()> {
    w.gateway = true;
    let (mut cli, _) = w.spawn(&[])?;
    let asked = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let lines = w.turn(&mut cli, text_prompt("usage-limit-soon"))?;
    let limit = lines
        .iter()
        .find(|l| l["type"] == "rate_limit_event")
        .context("a rate_limit_event")?;
    let info = &limit["rate_limit_info"];
    ensure!(info["status"] == "rejected", "{limit}");
    let resets = info["resetsAt"].as_u64().context("resetsAt")?;
    ensure!(
        resets >= asked + USAGE_LIMIT_SOON_SECS && resets <= asked + USAGE_LIMIT_SOON_SECS + 60,
        "resetsAt {resets}, asked at {asked}"
    );
    let result = lines.last().context("result")?;
    ensure!(result["is_error"] == true, "{result}");
    ensure!(result["api_error_status"] == 429, "{result}");
    w.drain(&mut cli, Duration::from_millis(500));
    w.new_requests();
    w.close(cli)
}

/// `/compact` sent as a prompt.
fn compact(w: &mut World) -> anyhow::Result<()> {
    let (mut cli, _) = w.spawn(&[])?;
    w.turn(&mut cli, text_prompt("hello"))?;
    w.turn(&mut cli, text_prompt("/compact"))?;
    w.drain(&mut cli, Duration::from_millis(500));
    w.new_requests();
    w.close(cli)
}

/// A 1×1 PNG (red pixel).
const PNG_1X1: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";

/// An image content block in a prompt.
fn image(w: &mut World) -> anyhow::Result<()> {
    let (mut cli, _) = w.spawn(&[])?;
    let content = json!([
        {"type":"text","text":"what is in this image?"},
        {"type":"image","source":{"type":"base64","media_type":"image/png","data":PNG_1X1}}
    ]);
    let lines = w.turn(&mut cli, prompt(content, None, None))?;
    ensure!(lines.last().context("result")?["is_error"] == false);
    let sent = w.new_requests().pop().context("no request")?;
    ensure!(
        sent["messages"].to_string().contains(PNG_1X1),
        "the image did not reach the API"
    );
    w.close(cli)
}

/// `--permission-mode` and `--model` at start, then `--resume` without them.
fn flags_resume(w: &mut World) -> anyhow::Result<()> {
    let (mut cli, init) = w.spawn(&["--permission-mode", "plan", "--model", "sonnet"])?;
    ensure!(
        init["response"]["current_permission_mode"] == "plan",
        "{init}"
    );
    let lines = w.turn(&mut cli, text_prompt("hello"))?;
    let sys = find(&lines, |v| v["subtype"] == "init").context("no init")?;
    ensure!(sys["permissionMode"] == "plan", "{sys}");
    let session = sys["session_id"]
        .as_str()
        .context("session_id")?
        .to_string();
    w.close(cli)?;
    w.note("resume without --permission-mode: which mode comes back");
    let (mut cli, _) = w.spawn(&["--resume", &session])?;
    w.turn(&mut cli, text_prompt("hello again"))?;
    w.close(cli)?;
    w.note("resume with --permission-mode default");
    let (mut cli, _) = w.spawn(&["--resume", &session, "--permission-mode", "default"])?;
    w.turn(&mut cli, text_prompt("hello a third time"))?;
    w.new_requests();
    w.close(cli)
}

type Scenario = fn(&mut World) -> anyhow::Result<()>;

const SCENARIOS: &[(&str, Scenario)] = &[
    ("initialize", initialize_and_init),
    ("permission_mode", permission_mode),
    ("model", model),
    ("thinking", thinking),
    ("queries", queries),
    ("steer", steer),
    ("steer_without_tool", steer_without_tool),
    ("exit_plan_mode", exit_plan_mode),
    ("ask_question", ask_question),
    ("usage_limit", usage_limit),
    ("usage_limit_gateway", usage_limit_gateway),
    ("compact", compact),
    ("image", image),
    ("flags_resume", flags_resume),
];

/// Runs one scenario with a fresh world; `save` writes its transcript (also on failure).
fn run(name: &str, save: bool) -> anyhow::Result<()> {
    let Some(bin) = require_real_cli() else {
        return Ok(());
    };
    let _turns = lock();
    let (_, scenario) = SCENARIOS
        .iter()
        .find(|(n, _)| *n == name)
        .with_context(|| format!("no scenario {name}"))?;
    let mut world = World::new(bin)?;
    let outcome = scenario(&mut world);
    if save {
        if let Err(e) = &outcome {
            world.note(&format!("scenario failed: {e:#}"));
        }
        world.save(name)?;
    }
    outcome
}

/// Re-records every transcript (see the module doc); reports all failures at the end.
#[test]
#[ignore = "re-records tests/fixtures/cli-controls with the real CLI; run on purpose"]
fn record_transcripts() -> anyhow::Result<()> {
    let only = std::env::var("CCRELAY_RECORD_ONLY").unwrap_or_default();
    let mut failed = Vec::new();
    for (name, _) in SCENARIOS {
        if !only.is_empty() && !only.split(',').any(|o| o == *name) {
            continue;
        }
        eprintln!("recording {name}");
        if let Err(e) = run(name, true) {
            eprintln!("{name}: {e:#}");
            failed.push(*name);
        }
    }
    if !failed.is_empty() {
        bail!("scenarios failed: {failed:?}");
    }
    Ok(())
}

#[test]
fn initialize_lists_commands_models_and_mode() -> anyhow::Result<()> {
    run("initialize", false)
}

/// Plan mode shows in the next API request as plan mode's instructions; a mode
/// the CLI does not know is refused with its reason.
#[test]
fn set_permission_mode_plan_reaches_the_model_and_bad_modes_are_refused() -> anyhow::Result<()> {
    run("permission_mode", false)
}

#[test]
fn set_model_switches_and_refuses_an_unknown_model() -> anyhow::Result<()> {
    run("model", false)
}

#[test]
fn set_max_thinking_tokens_is_accepted() -> anyhow::Result<()> {
    run("thinking", false)
}

/// get_context_usage answers token numbers (also get_plan, get_usage, list_models, …).
#[test]
fn get_context_usage_answers_numbers() -> anyhow::Result<()> {
    run("queries", false)
}

/// A `priority:"next"` prompt sent while a tool runs reaches the model in the same turn.
#[test]
fn steering_prompt_joins_the_running_turn() -> anyhow::Result<()> {
    run("steer", false)
}

/// ExitPlanMode asks with can_use_tool; its input (or get_plan) holds the plan.
#[test]
fn exit_plan_mode_asks_with_the_plan() -> anyhow::Result<()> {
    run("exit_plan_mode", false)
}

/// AskUserQuestion answered with `updatedInput.answers`: the answers reach the model.
#[test]
fn ask_user_question_answers_reach_the_model() -> anyhow::Result<()> {
    run("ask_question", false)
}

#[test]
fn usage_limit_429_ends_the_turn_with_an_api_error() -> anyhow::Result<()> {
    run("usage_limit", false)
}

/// A gateway client's usage limit comes with its reset time.
#[test]
fn a_gateway_clients_usage_limit_reports_its_reset() -> anyhow::Result<()> {
    run("usage_limit_gateway", false)
}

#[test]
fn image_block_reaches_the_model() -> anyhow::Result<()> {
    run("image", false)
}

/// With no tool boundary before the reply ends, a `priority:"next"` prompt runs as
/// a turn of its own (its own `result`) right after the running one.
#[test]
fn steering_prompt_without_a_tool_runs_as_the_next_turn() -> anyhow::Result<()> {
    run("steer_without_tool", false)
}
