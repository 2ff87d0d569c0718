//! The REAL Claude Code CLI, offline against the mock Anthropic API, over pipes
//! with the relay's stream-json flags (no relay involved). Proves that the mock
//! API is good enough for the CLI and pins the CLI behaviours the relay relies on.
//!
//! Each CLI is a ~200 MB process on a small machine, so the tests take turns
//! (`LOCK`). Without the CLI they print the SKIPPED line and pass, unless
//! `CCRELAY_REQUIRE_ALL=1`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::Value;

use common::mock_anthropic::{HELLO, MockAnthropic};
use common::real_cli::{
    AgentChild, STREAM_JSON_FLAGS, allow, deny, initialize, kind, kinds, offline_env,
    require_real_cli, user_prompt,
};

static LOCK: Mutex<()> = Mutex::new(());

/// Per turn, generous: a cold CLI on a busy 2-core machine.
const TURN: Duration = Duration::from_secs(30);
const EXIT: Duration = Duration::from_secs(20);

/// One test's world: a runtime hosting the mock API and a throwaway home.
struct World {
    api: MockAnthropic,
    home: tempfile::TempDir,
    bin: PathBuf,
    // Last, so the mock API is dropped while its runtime still exists.
    _rt: tokio::runtime::Runtime,
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
            _rt: rt,
        })
    }

    fn workdir(&self) -> anyhow::Result<PathBuf> {
        let dir = self.home.path().join("project");
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Spawns the CLI with the relay's flags plus `extra`, and initializes it.
    fn spawn(&self, extra: &[&str]) -> anyhow::Result<AgentChild> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(STREAM_JSON_FLAGS)
            .args(extra)
            .current_dir(self.workdir()?)
            .env_remove("ANTHROPIC_AUTH_TOKEN")
            .env_remove("CLAUDE_CODE_ENTRYPOINT")
            .envs(offline_env(self.home.path(), &self.api.base_url));
        let started = Instant::now();
        let mut agent = AgentChild::spawn(cmd)?;
        agent.send(&initialize("req_init"))?;
        let reply = agent.next_json(TURN)?;
        ensure!(
            reply["response"]["subtype"] == "success",
            "initialize: {reply}"
        );
        eprintln!(
            "timing: CLI spawn -> initialize reply {:?}",
            started.elapsed()
        );
        Ok(agent)
    }
}

/// Runs one turn and reports its duration.
fn turn(agent: &mut AgentChild, prompt: &str, uuid: Option<&str>) -> anyhow::Result<Vec<Value>> {
    let started = Instant::now();
    agent.send(&user_prompt(prompt, uuid))?;
    let lines = agent.read_turn(TURN)?;
    eprintln!(
        "timing: prompt {prompt:?} -> result {:?}",
        started.elapsed()
    );
    Ok(lines)
}

fn assistant_texts(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|v| v["type"] == "assistant")
        .filter_map(|v| {
            v["message"]["content"][0]["text"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn hello_turn() -> anyhow::Result<()> {
    let Some(bin) = require_real_cli() else {
        return Ok(());
    };
    let _turns = lock();
    let world = World::new(bin)?;
    let mut cli = world.spawn(&[])?;
    let uuid = "5b0e7f1e-2c1d-4d7e-9a51-1f2e3d4c5b6a";
    let lines = turn(&mut cli, "hello", Some(uuid))?;
    let ks = kinds(&lines);
    let init = lines
        .iter()
        .find(|v| kind(v) == "system/init")
        .with_context(|| format!("no system/init: {ks:?}"))?;
    ensure!(init["user_message_uuids"][0] == uuid, "{init}");
    ensure!(
        ks.iter().any(|k| k == "stream_event/content_block_delta"),
        "{ks:?}"
    );
    ensure!(
        assistant_texts(&lines) == [HELLO],
        "{:?}",
        assistant_texts(&lines)
    );
    let result = lines.last().context("result")?;
    ensure!(
        result["subtype"] == "success" && result["is_error"] == false,
        "{result}"
    );
    ensure!(result["user_message_uuid"] == uuid, "{result}");
    ensure!(result["result"] == HELLO);
    ensure!(result["session_id"] == init["session_id"]);
    ensure!(!world.api.requests().is_empty());
    cli.exits_cleanly_on_eof(EXIT)?;
    Ok(())
}

#[test]
fn run_bash_allowed() -> anyhow::Result<()> {
    let Some(bin) = require_real_cli() else {
        return Ok(());
    };
    let _turns = lock();
    let world = World::new(bin)?;
    let mut cli = world.spawn(&[])?;
    cli.send(&user_prompt("please run-bash", None))?;
    let lines = cli.read_until(TURN, |v| v["request"]["subtype"] == "can_use_tool")?;
    let req = lines.last().context("no prompt")?;
    ensure!(req["request"]["tool_name"] == "Bash", "{req}");
    let request_id = req["request_id"].as_str().context("request_id")?;
    cli.send(&allow(request_id, &req["request"]["input"]))?;
    let lines = cli.read_turn(TURN)?;
    let tool_result = lines
        .iter()
        .find(|v| v["type"] == "user" && v["message"]["content"][0]["type"] == "tool_result")
        .with_context(|| format!("no tool_result: {:?}", kinds(&lines)))?;
    ensure!(
        tool_result["message"]["content"][0]["content"] == "relay-ok",
        "{tool_result}"
    );
    ensure!(
        assistant_texts(&lines)
            .iter()
            .any(|t| t.contains("relay-ok")),
        "{:?}",
        assistant_texts(&lines)
    );
    ensure!(lines.last().context("result")?["subtype"] == "success");
    Ok(())
}

#[test]
fn write_file_denied() -> anyhow::Result<()> {
    let Some(bin) = require_real_cli() else {
        return Ok(());
    };
    let _turns = lock();
    let world = World::new(bin)?;
    let target: PathBuf = world.workdir()?.join("denied.txt");
    let mut cli = world.spawn(&[])?;
    cli.send(&user_prompt(
        &format!("please write-file {}", target.display()),
        None,
    ))?;
    let lines = cli.read_until(TURN, |v| v["request"]["subtype"] == "can_use_tool")?;
    let req = lines.last().context("no prompt")?;
    ensure!(req["request"]["tool_name"] == "Write", "{req}");
    ensure!(req["request"]["input"]["file_path"] == target.display().to_string().as_str());
    let request_id = req["request_id"].as_str().context("request_id")?;
    cli.send(&deny(request_id, "Denied by the relay test driver"))?;
    let lines = cli.read_turn(TURN)?;
    let result = lines.last().context("result")?;
    ensure!(result["subtype"] == "success", "{result}");
    ensure!(
        assistant_texts(&lines)
            .iter()
            .any(|t| t.starts_with("Tool was denied")),
        "{:?}",
        assistant_texts(&lines)
    );
    ensure!(!Path::new(&target).exists(), "the denied file was written");
    Ok(())
}

#[test]
fn resume_keeps_history() -> anyhow::Result<()> {
    let Some(bin) = require_real_cli() else {
        return Ok(());
    };
    let _turns = lock();
    let world = World::new(bin)?;
    let secret = "my secret word is pineapple";
    let mut first = world.spawn(&[])?;
    let lines = turn(&mut first, secret, None)?;
    let session_id = lines.last().context("result")?["session_id"]
        .as_str()
        .context("session_id")?
        .to_string();
    first.exits_cleanly_on_eof(EXIT)?;

    let mut second = world.spawn(&["--resume", &session_id])?;
    let lines = turn(&mut second, "recall", None)?;
    let result = lines.last().context("result")?;
    ensure!(result["session_id"] == session_id.as_str(), "{result}");
    let answer = result["result"].as_str().unwrap_or_default();
    ensure!(answer.contains(secret), "answer: {answer}");
    let last_request = world.api.requests().pop().context("no request")?;
    ensure!(
        last_request["messages"].to_string().contains(secret),
        "history not sent"
    );
    second.exits_cleanly_on_eof(EXIT)?;
    Ok(())
}

#[test]
fn slow_interrupted_closes_the_api_stream() -> anyhow::Result<()> {
    let Some(bin) = require_real_cli() else {
        return Ok(());
    };
    let _turns = lock();
    let world = World::new(bin)?;
    let mut cli = world.spawn(&[])?;
    cli.send(&user_prompt("slow please", None))?;
    let mut deltas = 0;
    cli.read_until(TURN, |v| {
        if kind(v) == "stream_event/content_block_delta" {
            deltas += 1;
        }
        deltas == 2
    })?;
    let sent = Instant::now();
    cli.send(&common::real_cli::interrupt("req_int"))?;
    let lines = cli.read_turn(TURN)?;
    eprintln!("timing: interrupt -> result {:?}", sent.elapsed());
    ensure!(
        lines
            .iter()
            .any(|v| v["response"]["request_id"] == "req_int"),
        "no interrupt reply: {:?}",
        kinds(&lines)
    );
    let result = lines.last().context("result")?;
    ensure!(result["terminal_reason"] == "aborted_streaming", "{result}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while world.api.aborted_streams() == 0 {
        ensure!(
            Instant::now() < deadline,
            "the mock API kept streaming after the interrupt"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Still usable.
    let lines = turn(&mut cli, "hello again", None)?;
    ensure!(lines.last().context("result")?["result"] == HELLO);
    Ok(())
}
