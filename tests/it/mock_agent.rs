//! The mock agent binary over real pipes: the protocol behaviours the relay relies on.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::Value;

use common::real_cli::{
    AgentChild, STREAM_JSON_FLAGS, allow, deny, initialize, interrupt, kind, kinds, user_prompt,
};

/// Generous: the machine is shared with other builders.
const TURN: Duration = Duration::from_secs(30);
const EXIT: Duration = Duration::from_secs(10);

/// A fresh mock agent in `dir` (also its state dir), with the relay's flags plus `extra`.
fn mock(dir: &Path, extra: &[&str]) -> anyhow::Result<AgentChild> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ccrelay-mock-agent"));
    cmd.args(STREAM_JSON_FLAGS)
        .args(extra)
        .current_dir(dir)
        .env("CCRELAY_MOCK_STATE_DIR", dir.join("state"));
    AgentChild::spawn(cmd)
}

fn find<'a>(lines: &'a [Value], k: &str) -> anyhow::Result<&'a Value> {
    lines
        .iter()
        .find(|v| kind(v) == k)
        .with_context(|| format!("no {k} in {:?}", kinds(lines)))
}

fn last_assistant_text(lines: &[Value]) -> String {
    lines
        .iter()
        .rev()
        .find(|v| v["type"] == "assistant")
        .and_then(|v| v["message"]["content"][0]["text"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Sends a prompt and reads up to its can_use_tool request.
fn until_permission(agent: &mut AgentChild, prompt: &str) -> anyhow::Result<(Vec<Value>, Value)> {
    agent.send(&user_prompt(prompt, None))?;
    let lines = agent.read_until(TURN, |v| v["request"]["subtype"] == "can_use_tool")?;
    let req = lines.last().cloned().context("no lines")?;
    Ok((lines, req))
}

#[test]
fn initialize_reply_shape_and_silence_before_input() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut agent = mock(dir.path(), &[])?;
    ensure!(
        agent.quiet_for(Duration::from_millis(300))?,
        "wrote before any input"
    );
    agent.send(&initialize("req_init1"))?;
    let line = agent.next_line(TURN)?.context("eof")?;
    ensure!(!line.contains(": "), "not compact: {line}");
    let v: Value = serde_json::from_str(&line)?;
    let r = &v["response"];
    ensure!(
        v["type"] == "control_response" && r["subtype"] == "success",
        "{v}"
    );
    ensure!(r["request_id"] == "req_init1");
    ensure!(r["pending_permission_requests"] == serde_json::json!([]));
    ensure!(r["pending_user_dialog_requests"] == serde_json::json!([]));
    ensure!(
        r["response"]["pid"] == agent.pid(),
        "pid: {}",
        r["response"]["pid"]
    );
    ensure!(r["response"]["session_state"] == "idle");
    ensure!(r["response"]["commands"].is_array());
    // An unknown control subtype gets the unsupported_request error.
    agent.send(&serde_json::json!({"type":"control_request","request_id":"req_x","request":{"subtype":"no_such_subtype"}}))?;
    let v = agent.next_json(TURN)?;
    ensure!(
        v["response"]["subtype"] == "error" && v["response"]["error_code"] == "unsupported_request",
        "{v}"
    );
    // Ignored: keep_alive, unknown types, empty lines, stray responses, interrupt while idle only answered.
    agent.send_raw("")?;
    agent.send_raw(r#"{"type":"keep_alive"}"#)?;
    agent.send_raw(r#"{"type":"no_such_type","foo":1}"#)?;
    agent.send(&allow("no-such-request", &serde_json::json!({})))?;
    agent.send(&interrupt("req_idle"))?;
    let v = agent.next_json(TURN)?;
    ensure!(
        v["response"]["request_id"] == "req_idle"
            && v["response"]["response"]["still_queued"] == serde_json::json!([]),
        "{v}"
    );
    ensure!(
        agent.quiet_for(Duration::from_millis(300))?,
        "extra output: {:?}",
        agent.transcript.last()
    );
    agent.close_stdin();
    let status = agent.wait(EXIT)?;
    ensure!(status.code() == Some(0), "exit {status:?}");
    Ok(())
}

#[test]
fn eof_without_input_exits_silently() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut agent = mock(dir.path(), &[])?;
    agent.close_stdin();
    ensure!(agent.next_line(EXIT)?.is_none(), "wrote something");
    ensure!(agent.wait(EXIT)?.code() == Some(0));
    Ok(())
}

/// The same mock agent is reached three ways: its own binary (above), the
/// `ccrelay mock-agent` subcommand, and `ccrelay` started under the mock agent's
/// name (the demo's symlink). Each answers `initialize` and exits 0 at EOF; each
/// refuses a non-stream-json format with exit 1 naming it.
#[test]
fn the_subcommand_and_the_demo_symlink_are_the_same_agent() -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::process::Stdio;
    let dir = tempfile::tempdir()?;
    let link = dir.path().join("ccrelay-mock-agent");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ccrelay"), &link)?;
    let ways: [(&str, Command); 2] = [
        ("ccrelay mock-agent", {
            let mut c = Command::new(env!("CARGO_BIN_EXE_ccrelay"));
            c.arg("mock-agent");
            c
        }),
        ("ccrelay as ccrelay-mock-agent", Command::new(&link)),
    ];
    for (name, mut cmd) in ways {
        let mut refused = Command::new(cmd.get_program());
        refused
            .args(cmd.get_args())
            .args(["--output-format", "text"]);
        let out = refused
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(1),
            "{name}: {:?} {stderr}",
            out.status
        );
        ensure!(stderr.contains("stream-json"), "{name}: {stderr}");

        let mut child = cmd
            .args(STREAM_JSON_FLAGS)
            .current_dir(dir.path())
            .env("CCRELAY_MOCK_STATE_DIR", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut stdin = child.stdin.take().context("stdin")?;
        writeln!(stdin, "{}", initialize("init-1"))?;
        drop(stdin);
        let out = child.wait_with_output()?;
        ensure!(out.status.code() == Some(0), "{name}: {:?}", out.status);
        let reply: Value = serde_json::from_slice(
            out.stdout
                .split(|b| *b == b'\n')
                .next()
                .context("no output")?,
        )?;
        ensure!(
            reply["type"] == "control_response" && reply["response"]["request_id"] == "init-1",
            "{name}: {reply}"
        );
    }
    Ok(())
}

#[test]
fn hello_turn_line_order_and_uuid() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut agent = mock(dir.path(), &[])?;
    let uuid = "6f1c3f43-5b7e-4a55-9a4e-0d4f6e1d2a10";
    agent.send(&user_prompt("hello there", Some(uuid)))?;
    let lines = agent.read_turn(TURN)?;
    let order: Vec<String> = kinds(&lines)
        .into_iter()
        .filter(|k| k != "command_lifecycle")
        .collect();
    let deltas = order
        .iter()
        .filter(|k| *k == "stream_event/content_block_delta")
        .count();
    ensure!(deltas >= 2, "deltas: {order:?}");
    let mut expected = vec![
        "system/init",
        "system/status",
        "stream_event/message_start",
        "stream_event/content_block_start",
    ];
    expected.extend(std::iter::repeat_n(
        "stream_event/content_block_delta",
        deltas,
    ));
    expected.extend([
        "assistant",
        "stream_event/content_block_stop",
        "stream_event/message_delta",
        "stream_event/message_stop",
        "result",
    ]);
    ensure!(order == expected, "order: {order:?}");
    let init = find(&lines, "system/init")?;
    let result = lines.last().context("no result")?;
    ensure!(init["user_message_uuids"][0] == uuid, "{init}");
    ensure!(result["user_message_uuid"] == uuid, "{result}");
    ensure!(result["subtype"] == "success" && result["is_error"] == false);
    ensure!(
        result["result"] == "You said: hello there",
        "{}",
        result["result"]
    );
    ensure!(result["session_id"] == init["session_id"]);
    let assistant = find(&lines, "assistant")?;
    ensure!(assistant["message"]["content"][0]["text"] == "You said: hello there");
    // The result line keeps `type` in the middle, like the real CLI.
    let raw = agent
        .transcript
        .iter()
        .rfind(|l| l.contains("\"type\":\"result\""))
        .context("raw result")?;
    ensure!(raw.starts_with("{\"duration_api_ms\""), "{raw}");
    // A second turn keeps the session id and again starts with system/init.
    agent.send(&user_prompt("again", None))?;
    let lines = agent.read_turn(TURN)?;
    // The first turn's command_lifecycle `completed` follows its result.
    ensure!(
        kind(&lines[0]) == "command_lifecycle" && lines[0]["state"] == "completed",
        "{}",
        lines[0]
    );
    ensure!(kind(&lines[1]) == "system/init" && lines[1]["session_id"] == init["session_id"]);
    agent.exits_cleanly_on_eof(EXIT)?;
    Ok(())
}

#[test]
fn permission_allow_runs_the_command() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let marker = dir.path().join("ran.txt");
    let mut agent = mock(dir.path(), &[])?;
    let prompt = format!("run-bash touch {} && echo made-it", marker.display());
    let (lines, req) = until_permission(&mut agent, &prompt)?;
    let r = &req["request"];
    ensure!(
        r["tool_name"] == "Bash" && r["display_name"] == "Bash",
        "{req}"
    );
    ensure!(
        uuid::Uuid::parse_str(req["request_id"].as_str().unwrap_or("")).is_ok(),
        "{req}"
    );
    ensure!(r["permission_suggestions"][0]["type"] == "addRules");
    let tool_use = lines
        .iter()
        .find(|v| v["message"]["content"][0]["type"] == "tool_use")
        .context("no tool_use assistant line")?;
    ensure!(tool_use["message"]["content"][0]["id"] == r["tool_use_id"]);
    ensure!(!marker.exists(), "ran before the answer");
    let request_id = req["request_id"].as_str().context("request_id")?;
    agent.send(&allow(request_id, &r["input"]))?;
    let lines = agent.read_turn(TURN)?;
    let tool_result = lines
        .iter()
        .find(|v| v["type"] == "user")
        .context("no tool_result")?;
    let block = &tool_result["message"]["content"][0];
    ensure!(
        block["type"] == "tool_result" && block["is_error"] == false,
        "{tool_result}"
    );
    ensure!(block["content"] == "made-it", "{block}");
    ensure!(tool_result["tool_use_result"]["stdout"] == "made-it");
    ensure!(marker.exists(), "the command did not run");
    ensure!(last_assistant_text(&lines).contains("made-it"));
    let result = lines.last().context("result")?;
    ensure!(
        result["subtype"] == "success" && result["num_turns"] == 2,
        "{result}"
    );
    Ok(())
}

#[test]
fn permission_deny_does_not_run_the_command() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let marker = dir.path().join("ran.txt");
    let mut agent = mock(dir.path(), &[])?;
    let (_, req) = until_permission(&mut agent, &format!("run-bash touch {}", marker.display()))?;
    let request_id = req["request_id"].as_str().context("request_id")?;
    agent.send(&deny(request_id, "Denied by the test"))?;
    let lines = agent.read_turn(TURN)?;
    let tool_result = lines
        .iter()
        .find(|v| v["type"] == "user")
        .context("no tool_result")?;
    let block = &tool_result["message"]["content"][0];
    ensure!(
        block["is_error"] == true && block["content"] == "Denied by the test",
        "{block}"
    );
    ensure!(last_assistant_text(&lines).contains("denied"));
    let result = lines.last().context("result")?;
    ensure!(result["subtype"] == "success", "{result}");
    ensure!(result["permission_denials"].as_array().map(Vec::len) == Some(1));
    ensure!(!marker.exists(), "the denied command ran");
    Ok(())
}

#[test]
fn write_file_allowed_writes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut agent = mock(dir.path(), &[])?;
    let (_, req) = until_permission(&mut agent, "write-file out/note.txt")?;
    ensure!(req["request"]["tool_name"] == "Write", "{req}");
    let request_id = req["request_id"].as_str().context("request_id")?;
    agent.send(&allow(request_id, &req["request"]["input"]))?;
    let lines = agent.read_turn(TURN)?;
    ensure!(lines.last().context("result")?["subtype"] == "success");
    let written = std::fs::read_to_string(dir.path().join("out/note.txt"))?;
    ensure!(written == "written by the mock agent\n");
    Ok(())
}

#[test]
fn interrupt_during_slow_aborts_streaming() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut agent = mock(dir.path(), &[])?;
    agent.send(&user_prompt("slow please", None))?;
    let mut deltas = 0;
    agent.read_until(TURN, |v| {
        if kind(v) == "stream_event/content_block_delta" {
            deltas += 1;
        }
        deltas == 2
    })?;
    let sent = Instant::now();
    agent.send(&interrupt("req_int"))?;
    let reply = agent.next_json(TURN)?;
    ensure!(
        sent.elapsed() < Duration::from_secs(2),
        "slow interrupt reply: {:?}",
        sent.elapsed()
    );
    ensure!(
        reply["type"] == "control_response" && reply["response"]["request_id"] == "req_int",
        "{reply}"
    );
    ensure!(reply["response"]["response"]["still_queued"] == serde_json::json!([]));
    let lines = agent.read_turn(TURN)?;
    let assistant = find(&lines, "assistant")?;
    ensure!(assistant["aborted"] == true, "{assistant}");
    let partial = assistant["message"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        partial.starts_with("slow-0 slow-1 ") && !partial.contains("slow-19"),
        "{assistant}"
    );
    let marker = find(&lines, "user")?;
    ensure!(marker["message"]["content"][0]["text"] == "[Request interrupted by user]");
    let result = lines.last().context("result")?;
    ensure!(
        result["subtype"] == "error_during_execution" && result["is_error"] == true,
        "{result}"
    );
    ensure!(result["terminal_reason"] == "aborted_streaming");
    ensure!(result.get("result").is_none(), "{result}");
    ensure!(sent.elapsed() < Duration::from_secs(3), "slow abort");
    // Still usable.
    agent.send(&user_prompt("hello again", None))?;
    let lines = agent.read_turn(TURN)?;
    ensure!(lines.last().context("result")?["subtype"] == "success");
    Ok(())
}

#[test]
fn interrupt_while_permission_pends_cancels_it_first() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let marker = dir.path().join("ran.txt");
    let mut agent = mock(dir.path(), &[])?;
    let (_, req) = until_permission(&mut agent, &format!("run-bash touch {}", marker.display()))?;
    let request_id = req["request_id"]
        .as_str()
        .context("request_id")?
        .to_string();
    // A second initialize (liveness probe) is answered and lists the pending prompt.
    agent.send(&initialize("req_probe"))?;
    let probe = agent.next_json(TURN)?;
    ensure!(probe["response"]["request_id"] == "req_probe", "{probe}");
    ensure!(
        probe["response"]["pending_permission_requests"][0] == req,
        "{probe}"
    );
    ensure!(probe["response"]["response"]["session_state"] == "requires_action");
    agent.send(&interrupt("req_int"))?;
    let cancel = agent.next_json(TURN)?;
    ensure!(
        cancel["type"] == "control_cancel_request" && cancel["request_id"] == request_id.as_str(),
        "{cancel}"
    );
    let reply = agent.next_json(TURN)?;
    ensure!(reply["response"]["request_id"] == "req_int", "{reply}");
    let lines = agent.read_turn(TURN)?;
    ensure!(
        kinds(&lines) == ["user", "user", "result"],
        "{:?}",
        kinds(&lines)
    );
    ensure!(lines[0]["message"]["content"][0]["is_error"] == true);
    ensure!(
        lines[1]["message"]["content"][0]["text"] == "[Request interrupted by user for tool use]"
    );
    ensure!(
        lines[2]["terminal_reason"] == "aborted_tools"
            && lines[2]["subtype"] == "error_during_execution"
    );
    // A late allow is ignored; the process is still usable.
    agent.send(&allow(&request_id, &req["request"]["input"]))?;
    agent.send(&user_prompt("hello", None))?;
    let lines = agent.read_turn(TURN)?;
    ensure!(kind(&lines[0]) == "system/init", "{:?}", kinds(&lines));
    ensure!(lines.last().context("result")?["subtype"] == "success");
    ensure!(!marker.exists(), "the cancelled command ran");
    Ok(())
}

#[test]
fn prompts_back_to_back_give_results_in_order() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut agent = mock(dir.path(), &[])?;
    let (u1, u2) = (
        "00000000-0000-4000-8000-000000000001",
        "00000000-0000-4000-8000-000000000002",
    );
    agent.send(&user_prompt("order-1", Some(u1)))?;
    agent.send(&user_prompt("order-2", Some(u2)))?;
    let first = agent.read_turn(TURN)?;
    let second = agent.read_turn(TURN)?;
    let (r1, r2) = (first.last().context("r1")?, second.last().context("r2")?);
    ensure!(
        r1["user_message_uuid"] == u1 && r1["result"] == "You said: order-1",
        "{r1}"
    );
    ensure!(
        r2["user_message_uuid"] == u2 && r2["result"] == "You said: order-2",
        "{r2}"
    );
    ensure!(r2["result_index"] == 1);
    ensure!(kind(&second[0]) == "system/init" || second.iter().any(|v| kind(v) == "system/init"));
    Ok(())
}

/// A fresh mock agent in `dir` with the relay's flags and the fault variable `env`.
fn mock_with_fault(dir: &Path, env: (&str, &str)) -> anyhow::Result<AgentChild> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ccrelay-mock-agent"));
    cmd.args(STREAM_JSON_FLAGS)
        .current_dir(dir)
        .env("CCRELAY_MOCK_STATE_DIR", dir.join("state"))
        .env(env.0, env.1);
    AgentChild::spawn(cmd)
}

/// `CCRELAY_MOCK_REFUSE_CONTROLS`: the named subtypes get the line the CLI
/// writes for a subtype it does not know; the others are answered as before.
#[test]
fn refused_controls_are_answered_as_unknown_subtypes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut agent = mock_with_fault(
        dir.path(),
        (
            "CCRELAY_MOCK_REFUSE_CONTROLS",
            "set_permission_mode, get_context_usage",
        ),
    )?;
    agent.send(&initialize("req_init"))?;
    let v = agent.next_json(TURN)?;
    ensure!(v["response"]["subtype"] == "success", "{v}");
    agent.send(&serde_json::json!({"type":"control_request","request_id":"x1","request":{"subtype":"set_permission_mode","mode":"plan"}}))?;
    let v = agent.next_json(TURN)?;
    ensure!(
        v == serde_json::json!({"type":"control_response","response":{"subtype":"error","request_id":"x1",
            "error":"Unsupported control request subtype: set_permission_mode","error_code":"unsupported_request"}}),
        "{v}"
    );
    // Nothing else follows (no status line of a mode change).
    ensure!(
        agent.quiet_for(Duration::from_millis(300))?,
        "extra output: {:?}",
        agent.transcript.last()
    );
    agent.exits_cleanly_on_eof(EXIT)?;
    Ok(())
}

/// `CCRELAY_MOCK_MERGE_STEERS`: a steering prompt sent mid-turn has no turn of
/// its own and no lifecycle completion; the running turn's result lists it.
#[test]
fn merged_steers_show_only_in_the_result() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut agent = mock_with_fault(dir.path(), ("CCRELAY_MOCK_MERGE_STEERS", "1"))?;
    let (u1, steer) = (
        "00000000-0000-4000-8000-000000000011",
        "00000000-0000-4000-8000-000000000012",
    );
    agent.send(&user_prompt("slow", Some(u1)))?;
    agent.read_until(TURN, |v| v["type"] == "system" && v["subtype"] == "init")?;
    let mut steering = user_prompt("also this", Some(steer));
    steering["priority"] = serde_json::json!("next");
    agent.send(&steering)?;
    let lines = agent.read_turn(TURN)?;
    let result = lines.last().context("result")?;
    ensure!(
        result["user_message_uuid"] == u1
            && result["user_message_uuids"] == serde_json::json!([u1, steer]),
        "{result}"
    );
    let after = agent.read_until(TURN, |v| v["type"] == "command_lifecycle")?;
    let done = after.last().context("lifecycle")?;
    ensure!(
        done["command_uuid"] == u1 && done["state"] == "completed",
        "{done}"
    );
    ensure!(
        agent.quiet_for(Duration::from_millis(500))?,
        "the steer ran as a turn: {:?}",
        agent.transcript.last()
    );
    let steer_states: Vec<Value> = agent
        .transcript
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "command_lifecycle" && v["command_uuid"] == steer)
        .map(|v| v["state"].clone())
        .collect();
    ensure!(
        steer_states == [serde_json::json!("queued")],
        "{steer_states:?}"
    );
    agent.exits_cleanly_on_eof(EXIT)?;
    Ok(())
}

#[test]
fn resume_keeps_history() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut first = mock(dir.path(), &[])?;
    first.send(&user_prompt("my secret word is pineapple", None))?;
    let lines = first.read_turn(TURN)?;
    let session_id = lines.last().context("result")?["session_id"]
        .as_str()
        .context("session_id")?
        .to_string();
    first.exits_cleanly_on_eof(EXIT)?;

    let mut second = mock(dir.path(), &["--resume", &session_id])?;
    second.send(&user_prompt("recall", None))?;
    let lines = second.read_turn(TURN)?;
    let result = lines.last().context("result")?;
    ensure!(result["session_id"] == session_id.as_str(), "{result}");
    ensure!(find(&lines, "system/init")?["session_id"] == session_id.as_str());
    let text = result["result"].as_str().unwrap_or_default();
    ensure!(text.contains("my secret word is pineapple"), "{text}");
    Ok(())
}

#[test]
fn resume_unknown_id_fails() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let id = "3a49f84c-e5cd-49cf-95db-7afbac1f0dd5";
    let mut agent = mock(dir.path(), &["--resume", id])?;
    agent.send(&initialize("req_1"))?;
    let v = agent.next_json(TURN)?;
    ensure!(
        v["type"] == "result" && v["subtype"] == "error_during_execution",
        "{v}"
    );
    ensure!(v["num_turns"] == 0 && v["session_id"] == id);
    ensure!(agent.next_line(EXIT)?.is_none(), "more output");
    ensure!(agent.wait(EXIT)?.code() == Some(1));
    ensure!(
        agent
            .stderr()
            .contains(&format!("No conversation found with session ID: {id}")),
        "{}",
        agent.stderr()
    );
    Ok(())
}

#[test]
fn malformed_stdin_line_exits_1() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut agent = mock(dir.path(), &[])?;
    agent.send(&initialize("req_1"))?;
    agent.next_json(TURN)?;
    agent.send_raw("this is not json {")?;
    ensure!(agent.wait(EXIT)?.code() == Some(1));
    ensure!(
        agent
            .stderr()
            .contains("Error parsing streaming input line"),
        "{}",
        agent.stderr()
    );

    let mut agent = mock(dir.path(), &[])?;
    agent.send_raw(r#"{"type":"user"}"#)?;
    ensure!(agent.wait(EXIT)?.code() == Some(1));
    ensure!(
        agent.stderr().contains("Expected message role 'user'"),
        "{}",
        agent.stderr()
    );
    Ok(())
}

#[test]
fn bigline_arrives_intact() -> anyhow::Result<()> {
    const SIZE: usize = 10_485_760;
    let dir = tempfile::tempdir()?;
    let mut agent = mock(dir.path(), &[])?;
    agent.send(&user_prompt(&format!("bigline {SIZE}"), None))?;
    let lines = agent.read_turn(Duration::from_secs(60))?;
    let assistant = find(&lines, "assistant")?;
    let text = assistant["message"]["content"][0]["text"]
        .as_str()
        .context("text")?;
    ensure!(text.len() == SIZE, "len {}", text.len());
    ensure!(text.starts_with("0123456789abcdefghijklmnopqrstuvwxyz0123"));
    ensure!(lines.last().context("result")?["subtype"] == "success");
    Ok(())
}

#[test]
fn hang_stops_answering_but_dies_on_sigterm() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut agent = mock(dir.path(), &[])?;
    agent.send(&initialize("req_1"))?;
    agent.next_json(TURN)?;
    agent.send(&user_prompt("hang", None))?;
    agent.read_until(TURN, |v| kind(v) == "system/init")?;
    agent.send(&initialize("req_probe"))?;
    ensure!(
        agent.quiet_for(Duration::from_millis(1500))?,
        "answered while hung: {:?}",
        agent.transcript.last()
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.pid())?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    let status = agent.wait(EXIT)?;
    ensure!(status.code() == Some(143), "{status:?}");
    Ok(())
}

#[test]
fn crash_exits_3_without_result() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut agent = mock(dir.path(), &[])?;
    agent.send(&user_prompt("crash", None))?;
    let mut lines = Vec::new();
    while let Some(line) = agent.next_line(TURN)? {
        lines.push(serde_json::from_str::<Value>(&line)?);
    }
    ensure!(
        lines
            .iter()
            .any(|v| kind(v) == "stream_event/content_block_delta"),
        "{:?}",
        kinds(&lines)
    );
    ensure!(
        !lines.iter().any(|v| v["type"] == "result"),
        "{:?}",
        kinds(&lines)
    );
    ensure!(agent.wait(EXIT)?.code() == Some(3));
    Ok(())
}
