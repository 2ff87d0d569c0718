//! End to end: the REAL Claude Code CLI supervised by the real `ccrelay serve`,
//! offline against the mock Anthropic API, driven by authenticated WebSocket
//! clients exactly as outside clients would (docs/protocol.md §4–§6).
//!
//! Each CLI is a ~200 MB process on a small machine, so the tests take turns
//! (`LOCK`); each one starts its own mock API and server. Without the CLI they
//! print the SKIPPED line and pass, unless `CCRELAY_REQUIRE_ALL=1`.
//! Run: `cargo test --test real_cli_relay -- --test-threads=1`.

use crate::common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use common::mock_anthropic::{HELLO, MockAnthropic};
use common::real_cli::{offline_env, require_real_cli};
use common::{
    Fixture, KeyPair, Received, ServerOptions, TestClient, TestServer, eventually,
    processes_in_group, seq_of,
};

/// One real CLI at a time (and one test at a time even without `--test-threads=1`).
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ------------------------------------------------------------------ world

/// One test's world: keys and data dir, the mock API, the CLI's throwaway home.
struct World {
    fx: Fixture,
    api: MockAnthropic,
    bin: PathBuf,
}

impl World {
    async fn new(bin: PathBuf) -> World {
        let api = MockAnthropic::start().await.expect("mock API starts");
        World {
            fx: Fixture::new(),
            api,
            bin,
        }
    }

    /// The CLI's HOME / CLAUDE_CONFIG_DIR: the same for every server of the test, so
    /// a new server can `--resume` the conversation of the old one.
    fn home(&self) -> PathBuf {
        self.fx.path().join("home")
    }

    fn options(&self) -> ServerOptions {
        let mut opts = ServerOptions {
            agent_cmd: Some(self.bin.display().to_string()),
            ..ServerOptions::default()
        };
        opts.env = offline_env(&self.home(), &self.api.base_url);
        opts
    }

    fn start(&self) -> TestServer {
        self.fx.start(self.options())
    }

    /// A client, authenticated and attached (whole log replayed), that has seen the
    /// session `idle` (the CLI started and answered `initialize`).
    async fn idle_client(&self, server: &TestServer, key: &KeyPair, device: &str) -> Conn {
        let mut c = Conn::new(server.client(key, Some(device)).await);
        c.attach(None).await;
        c.wait_idle().await;
        c
    }

    /// Every user prompt text the mock API received, per request (see [`user_prompts`]).
    fn prompts_per_request(&self) -> Vec<Vec<String>> {
        self.api.requests().iter().map(user_prompts).collect()
    }
}

// ------------------------------------------------------------------ client

/// A client that keeps every frame it received, so tests can look back and check
/// order and sequence numbers.
struct Conn {
    c: TestClient,
    log: Vec<Value>,
    /// Index into `log` of the `attached` reply of the last attach.
    attached_at: usize,
    next_id: u64,
}

impl Conn {
    fn new(c: TestClient) -> Conn {
        Conn {
            c,
            log: Vec::new(),
            attached_at: 0,
            next_id: 0,
        }
    }

    fn client_id(&self) -> String {
        self.c.client_id.clone()
    }

    /// Read until a frame matches `pred` (at most 60 s); every frame read is logged.
    async fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let (hit, skipped) = self.c.recv_until(what, pred).await;
        self.log.extend(skipped);
        self.log.push(hit.clone());
        hit
    }

    /// The first frame at or after `from` in the log matching `pred`, else the next
    /// one read that does.
    async fn expect(&mut self, from: usize, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.log[from.min(self.log.len())..]
            .iter()
            .find(|v| pred(v))
        {
            return v.clone();
        }
        self.until(what, pred).await
    }

    /// Wait for an event (relay or agent) whose inner object matches `pred`.
    async fn event(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.until(what, |v| v["type"] == "event" && pred(&v["event"]))
            .await
    }

    /// Like [`Conn::event`] but also looks in the log from `from`.
    async fn expect_event(
        &mut self,
        from: usize,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.expect(from, what, |v| v["type"] == "event" && pred(&v["event"]))
            .await
    }

    fn fresh_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    /// Send a request with a fresh id (no waiting).
    async fn send(&mut self, mut req: Value, prefix: &str) -> String {
        let id = self.fresh_id(prefix);
        req["id"] = Value::from(id.clone());
        self.c.send(req).await;
        id
    }

    /// The direct reply to request `id` (from the log or the socket).
    async fn reply(&mut self, id: &str) -> Value {
        let id = id.to_string();
        self.expect(0, &format!("reply to {id}"), |v| v["id"] == id.as_str())
            .await
    }

    async fn request(&mut self, req: Value, prefix: &str) -> Value {
        let id = self.send(req, prefix).await;
        self.reply(&id).await
    }

    async fn attach(&mut self, since: Option<u64>) -> Value {
        let mut req = json!({"type": "attach", "session": "default"});
        if let Some(s) = since {
            req["since"] = Value::from(s);
        }
        let reply = self.request(req, "attach").await;
        assert_eq!(reply["type"], "attached", "{reply}");
        self.attached_at = self.log.len() - 1;
        reply
    }

    /// Wait until the session is `idle`: the `attached` reply said so and no later
    /// state change was seen, or a `relay.state idle` arrived after the attach.
    async fn wait_idle(&mut self) {
        let from = self.attached_at;
        let attached_idle = self.log[from]["state"] == "idle";
        let head = self.log[from]["head"].as_u64().unwrap_or(0);
        let last_state = self.log[from..]
            .iter()
            .rev()
            .find(|v| {
                v["type"] == "event" && seq_of(v) > head && v["event"]["type"] == "relay.state"
            })
            .map(|v| v["event"]["state"].clone());
        match last_state {
            Some(s) if s == "idle" => return,
            None if attached_idle => return,
            _ => {}
        }
        let len = self.log.len();
        self.expect_event(len, "relay.state idle", |e| {
            e["type"] == "relay.state" && e["state"] == "idle"
        })
        .await;
    }

    /// Send a prompt; returns the `ok` reply.
    async fn prompt(&mut self, text: &str) -> Value {
        let reply = self
            .request(json!({"type": "prompt", "content": text}), "prompt")
            .await;
        assert_eq!(reply["type"], "ok", "prompt {text:?}: {reply}");
        assert!(reply["prompt_id"].is_string(), "{reply}");
        reply
    }

    /// Wait for this prompt's turn to end or abort; returns the `relay.turn` event.
    async fn turn_over(&mut self, prompt_id: &str) -> Value {
        let pid = prompt_id.to_string();
        self.expect_event(0, &format!("end of turn {pid}"), |e| {
            e["type"] == "relay.turn"
                && e["prompt_id"] == pid.as_str()
                && (e["phase"] == "ended" || e["phase"] == "aborted")
        })
        .await["event"]
            .clone()
    }

    /// A prompt run to its end; returns (prompt_id, its `result` event).
    async fn run_turn(&mut self, text: &str) -> (String, Value) {
        let from = self.log.len();
        let pid = self.prompt(text).await["prompt_id"]
            .as_str()
            .unwrap()
            .to_string();
        let end = self.turn_over(&pid).await;
        assert_eq!(end["phase"], "ended", "turn {text:?}: {end}");
        let result = self.result_for(from, &pid);
        (pid, result)
    }

    /// The `result` event of prompt `pid` in the log from `from` (exactly one).
    fn result_for(&self, from: usize, pid: &str) -> Value {
        let results: Vec<Value> = self
            .events_from(from)
            .into_iter()
            .filter(|e| e["type"] == "result" && e["user_message_uuid"] == pid)
            .collect();
        assert_eq!(
            results.len(),
            1,
            "exactly one result for {pid}: {results:#?}\nall: {:?}",
            kinds(&self.events_from(from))
        );
        results[0].clone()
    }

    /// Event frames in the log from index `from`.
    fn event_frames_from(&self, from: usize) -> Vec<Value> {
        self.log[from.min(self.log.len())..]
            .iter()
            .filter(|v| v["type"] == "event")
            .cloned()
            .collect()
    }

    /// Inner events in the log from index `from`.
    fn events_from(&self, from: usize) -> Vec<Value> {
        self.event_frames_from(from)
            .into_iter()
            .map(|v| v["event"].clone())
            .collect()
    }

    /// The highest seq received so far.
    fn last_seq(&self) -> u64 {
        self.log
            .iter()
            .filter(|v| v["type"] == "event")
            .map(seq_of)
            .max()
            .unwrap_or(0)
    }

    /// Read whatever arrives until the connection closes (or `timeout`).
    async fn drain_until_closed(&mut self, timeout: Duration) -> Option<(u16, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.c.recv_frame(left).await {
                Some(Received::Frame(v)) => self.log.push(v),
                Some(Received::Closed(c)) => return c,
                None => panic!("connection not closed within {timeout:?}"),
            }
        }
    }
}

// ------------------------------------------------------------------ helpers

/// `type`, `system/<subtype>` or `stream_event/<event type>` of an inner event.
fn kind(e: &Value) -> String {
    match e["type"].as_str().unwrap_or("?") {
        "system" => format!("system/{}", e["subtype"].as_str().unwrap_or("?")),
        "stream_event" => format!(
            "stream_event/{}",
            e["event"]["type"].as_str().unwrap_or("?")
        ),
        "relay.state" => format!("relay.state/{}", e["state"].as_str().unwrap_or("?")),
        "relay.turn" => format!("relay.turn/{}", e["phase"].as_str().unwrap_or("?")),
        t => t.to_string(),
    }
}

fn kinds(events: &[Value]) -> Vec<String> {
    events.iter().map(kind).collect()
}

/// Seqs of event frames: strictly contiguous (+1 each).
fn assert_contiguous(frames: &[Value], what: &str) {
    let seqs: Vec<u64> = frames.iter().map(seq_of).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "{what}: seqs not contiguous: {seqs:?}"
    );
}

/// The position of the first event matching `pred`, with a readable failure.
fn pos(events: &[Value], what: &str, pred: impl Fn(&Value) -> bool) -> usize {
    events
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("{what} missing in {:?}", kinds(events)))
}

/// Text of the assistant events (one content block each).
fn assistant_text(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "assistant")
        .flat_map(|e| {
            e["message"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|b| b["text"].as_str().map(str::to_string))
        .collect::<Vec<_>>()
        .join("")
}

/// The user's own words in each `role:"user"` message of an API request (text blocks
/// that are not system reminders or interrupt markers; tool_result-only messages
/// are left out).
fn user_prompts(request: &Value) -> Vec<String> {
    let empty = Vec::new();
    request["messages"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| {
            let blocks = match &m["content"] {
                Value::String(s) => vec![json!({"type": "text", "text": s})],
                Value::Array(b) => b.clone(),
                _ => Vec::new(),
            };
            blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .map(str::trim)
                .filter(|t| {
                    !t.is_empty()
                        && !t.starts_with("<system-reminder>")
                        && !t.starts_with("[Request interrupted")
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// The tool_result blocks (any message) of an API request with this tool_use_id.
fn tool_results_in(request: &Value, tool_use_id: &str) -> usize {
    let empty = Vec::new();
    request["messages"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .filter(|b| b["type"] == "tool_result" && b["tool_use_id"] == tool_use_id)
        .count()
}

/// The `/healthz` JSON.
async fn healthz(server: &TestServer) -> Value {
    let (status, _, body) = server.http_get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("healthz JSON ({e}): {body}"))
}

/// The `default` session's agent pid, as `/healthz` reports it.
async fn agent_pid(server: &TestServer) -> i32 {
    let h = healthz(server).await;
    h["sessions"]["default"]["agent_pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no agent_pid in {h}")) as i32
}

fn pid_exists(pid: i32) -> bool {
    // Zombies count as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false)
}

async fn wait_deltas(c: &mut Conn, n: usize) {
    for i in 0..n {
        c.event(&format!("text_delta #{i}"), |e| {
            e["type"] == "stream_event" && e["event"]["delta"]["type"] == "text_delta"
        })
        .await;
    }
}

// ------------------------------------------------------------------ tests

/// 1. One `hello` turn: the full event sequence, in order, with seqs contiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_turn_streams_in_order() {
    let Some(bin) = require_real_cli() else {
        return;
    };
    let _serial = LOCK.lock().await;
    let w = World::new(bin).await;
    let server = w.start();
    let mut a = w.idle_client(&server, &w.fx.owner, "laptop").await;

    let from = a.log.len();
    let ok = a.prompt("hello").await;
    assert_eq!(ok["queued"], false, "{ok}");
    let pid = ok["prompt_id"].as_str().unwrap().to_string();
    a.turn_over(&pid).await;
    a.expect_event(from, "relay.state idle after the turn", |e| {
        e["type"] == "relay.state" && e["state"] == "idle"
    })
    .await;

    let frames = a.event_frames_from(from);
    assert_contiguous(&frames, "hello turn");
    let ev = a.events_from(from);
    eprintln!("hello turn: {:?}", kinds(&ev));
    let p_prompt = pos(&ev, "relay.prompt", |e| {
        e["type"] == "relay.prompt" && e["prompt_id"] == pid.as_str()
    });
    assert_eq!(ev[p_prompt]["content"], "hello");
    assert_eq!(ev[p_prompt]["client_id"], a.client_id().as_str());
    assert_eq!(ev[p_prompt]["device"], "laptop");
    let p_started = pos(&ev, "relay.turn started", |e| {
        e["type"] == "relay.turn" && e["phase"] == "started" && e["prompt_id"] == pid.as_str()
    });
    let p_busy = pos(&ev, "relay.state busy", |e| {
        e["type"] == "relay.state" && e["state"] == "busy"
    });
    let p_init = pos(&ev, "system/init", |e| kind(e) == "system/init");
    let p_delta = pos(&ev, "text_delta", |e| {
        e["type"] == "stream_event"
            && e["event"]["type"] == "content_block_delta"
            && e["event"]["delta"]["type"] == "text_delta"
    });
    let p_assistant = pos(&ev, "assistant", |e| e["type"] == "assistant");
    let p_result = pos(&ev, "result", |e| e["type"] == "result");
    let p_ended = pos(&ev, "relay.turn ended", |e| {
        e["type"] == "relay.turn" && e["phase"] == "ended" && e["prompt_id"] == pid.as_str()
    });
    let p_idle = pos(&ev, "relay.state idle", |e| {
        e["type"] == "relay.state" && e["state"] == "idle"
    });
    let order = [
        ("relay.prompt", p_prompt),
        ("relay.turn started", p_started),
        ("system/init", p_init),
        ("text_delta", p_delta),
        ("assistant", p_assistant),
        ("result", p_result),
        ("relay.turn ended", p_ended),
        ("relay.state idle", p_idle),
    ];
    assert!(
        order.windows(2).all(|w| w[0].1 < w[1].1),
        "order {order:?} in {:?}",
        kinds(&ev)
    );
    assert!(
        p_prompt < p_busy && p_busy < p_init,
        "busy at {p_busy}: {:?}",
        kinds(&ev)
    );
    assert_eq!(
        p_ended,
        p_result + 1,
        "relay.turn ended right after the result"
    );
    // Nothing of the agent before the turn started.
    assert!(
        ev[..p_started]
            .iter()
            .all(|e| e["type"].as_str().unwrap_or("").starts_with("relay.")),
        "{:?}",
        kinds(&ev)
    );

    let deltas: String = ev
        .iter()
        .filter(|e| e["type"] == "stream_event" && e["event"]["delta"]["type"] == "text_delta")
        .filter_map(|e| e["event"]["delta"]["text"].as_str())
        .collect();
    assert_eq!(deltas, HELLO, "streamed text");
    assert_eq!(assistant_text(&ev), HELLO);
    let result = &ev[p_result];
    assert_eq!(result["user_message_uuid"], pid.as_str(), "{result}");
    assert_eq!(result["is_error"], false, "{result}");
    assert_eq!(result["result"], HELLO, "{result}");
    assert_eq!(result["session_id"], ev[p_init]["session_id"]);
    let init_uuids = ev[p_init]["user_message_uuids"].to_string();
    assert!(init_uuids.contains(&pid), "system/init: {}", ev[p_init]);
    assert_eq!(w.prompts_per_request().last().unwrap(), &["hello"]);
}

/// 2a. A Bash permission prompt fans out to three clients; the first owner answer
/// wins, later answers are refused, the tool runs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_prompt_first_owner_answer_wins() {
    let Some(bin) = require_real_cli() else {
        return;
    };
    let _serial = LOCK.lock().await;
    let w = World::new(bin).await;
    let server = w.start();
    let mut a = w.idle_client(&server, &w.fx.owner, "laptop").await;
    let mut b = w.idle_client(&server, &w.fx.owner2, "phone").await;
    let mut c = w.idle_client(&server, &w.fx.viewer, "tablet").await;
    let marks = [a.log.len(), b.log.len(), c.log.len()];

    let pid = a.prompt("please run-bash").await["prompt_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut requests = Vec::new();
    for cl in [&mut a, &mut b, &mut c] {
        let req = cl
            .event("can_use_tool", |e| {
                e["type"] == "control_request" && e["request"]["subtype"] == "can_use_tool"
            })
            .await;
        requests.push(req);
    }
    assert!(
        requests.windows(2).all(|r| r[0] == r[1]),
        "the same frame for all: {requests:#?}"
    );
    let request = requests[0]["event"].clone();
    assert_eq!(request["request"]["tool_name"], "Bash", "{request}");
    let rid = request["request_id"].as_str().unwrap().to_string();
    let tool_use_id = request["request"]["tool_use_id"]
        .as_str()
        .unwrap()
        .to_string();
    a.expect_event(marks[0], "relay.state awaiting_permission", |e| {
        e["type"] == "relay.state" && e["state"] == "awaiting_permission"
    })
    .await;

    // A client attaching now sees the request as pending.
    let mut d = Conn::new(server.client(&w.fx.owner, Some("late")).await);
    let attached = d.attach(None).await;
    let pending = attached["pending"].as_array().expect("pending list");
    assert_eq!(
        pending.as_slice(),
        std::slice::from_ref(&request),
        "pending lists the request as the agent sent it"
    );

    // The viewer may not answer.
    let respond = |behavior: &str| json!({"type": "respond", "session": "default", "request_id": rid, "response": {"behavior": behavior}});
    let denied = c.request(respond("deny"), "respond").await;
    assert_eq!(denied["type"], "error", "{denied}");
    assert_eq!(denied["code"], "forbidden", "{denied}");

    // B allows first: ok.
    let ok = b.request(respond("allow"), "respond").await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let b_id = b.client_id();
    for (i, cl) in [&mut a, &mut b, &mut c].into_iter().enumerate() {
        let resolved = cl
            .expect_event(marks[i], "relay.resolved", |e| {
                e["type"] == "relay.resolved" && e["request_id"] == rid.as_str()
            })
            .await;
        assert_eq!(resolved["event"]["client_id"], b_id.as_str(), "{resolved}");
        assert_eq!(resolved["event"]["response"]["behavior"], "allow");
    }
    // A's late answer: not pending any more.
    let late = a.request(respond("deny"), "respond").await;
    assert_eq!(late["type"], "error", "{late}");
    assert_eq!(late["code"], "not_pending", "{late}");

    let end = a.turn_over(&pid).await;
    assert_eq!(end["phase"], "ended", "{end}");
    let ev = a.events_from(marks[0]);
    let text = assistant_text(&ev);
    assert!(text.contains("relay-ok"), "final text: {text:?}");
    let result = a.result_for(marks[0], &pid);
    assert_eq!(result["is_error"], false, "{result}");
    // The tool ran once: one tool_result on the stream, one in the API history.
    let tool_results: Vec<&Value> = ev
        .iter()
        .filter(|e| e["type"] == "user")
        .filter(|e| e["message"]["content"].to_string().contains(&tool_use_id))
        .collect();
    assert_eq!(tool_results.len(), 1, "{tool_results:#?}");
    assert_eq!(
        tool_results[0]["message"]["content"][0]["content"], "relay-ok",
        "{}",
        tool_results[0]
    );
    let api = w.api.requests();
    let with_result: Vec<usize> = api
        .iter()
        .map(|r| tool_results_in(r, &tool_use_id))
        .collect();
    assert_eq!(
        with_result.iter().filter(|n| **n > 0).count(),
        1,
        "one API call after the tool ran: {with_result:?}"
    );
    assert_eq!(with_result.last(), Some(&1), "{with_result:?}");
    // The session goes back to idle, with nothing pending.
    a.expect_event(marks[0], "idle", |e| {
        e["type"] == "relay.state" && e["state"] == "idle"
    })
    .await;
    let h = healthz(&server).await;
    assert_eq!(h["sessions"]["default"]["pending"], 0, "{h}");
}

/// 2b. A Write denied by an owner: the agent carries on, the file is not written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_deny_keeps_the_file_unwritten() {
    let Some(bin) = require_real_cli() else {
        return;
    };
    let _serial = LOCK.lock().await;
    let w = World::new(bin).await;
    let server = w.start();
    let mut a = w.idle_client(&server, &w.fx.owner, "laptop").await;
    let target = w.fx.workdir().join("denied.txt");
    let from = a.log.len();
    let pid = a
        .prompt(&format!("please write-file {}", target.display()))
        .await["prompt_id"]
        .as_str()
        .unwrap()
        .to_string();
    let req = a
        .event("can_use_tool", |e| {
            e["type"] == "control_request" && e["request"]["subtype"] == "can_use_tool"
        })
        .await["event"]
        .clone();
    assert_eq!(req["request"]["tool_name"], "Write", "{req}");
    assert_eq!(
        req["request"]["input"]["file_path"],
        target.display().to_string().as_str()
    );
    let rid = req["request_id"].as_str().unwrap().to_string();
    let ok = a
        .request(
            json!({"type": "respond", "request_id": rid, "response": {"behavior": "deny"}}),
            "respond",
        )
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let end = a.turn_over(&pid).await;
    assert_eq!(end["phase"], "ended", "{end}");
    let ev = a.events_from(from);
    let resolved = &ev[pos(&ev, "relay.resolved", |e| e["type"] == "relay.resolved")];
    assert_eq!(resolved["response"]["behavior"], "deny", "{resolved}");
    assert!(
        resolved["response"]["message"].is_string(),
        "the relay supplies a message: {resolved}"
    );
    let result = a.result_for(from, &pid);
    assert_eq!(
        result["is_error"], false,
        "a plain deny does not fail the turn: {result}"
    );
    let text = assistant_text(&ev);
    assert!(text.contains("Tool was denied"), "text: {text:?}");
    assert!(!target.exists(), "the denied file was written");
}

/// 3. Interrupt during a slow streamed turn: `ok` after the turn's result, then idle,
/// then a normal turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_during_streaming() {
    let Some(bin) = require_real_cli() else {
        return;
    };
    let _serial = LOCK.lock().await;
    let w = World::new(bin).await;
    let server = w.start();
    let mut a = w.idle_client(&server, &w.fx.owner, "laptop").await;
    let from = a.log.len();
    let pid = a.prompt("slow please").await["prompt_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_deltas(&mut a, 2).await;
    let id = a.send(json!({"type": "interrupt"}), "interrupt").await;
    let ok = a.reply(&id).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let at_ok = a.log.iter().position(|v| v["id"] == id.as_str()).unwrap();
    let before_ok = a.events_from(from);
    let before_ok: Vec<Value> = before_ok
        .into_iter()
        .take(
            a.log[from..at_ok]
                .iter()
                .filter(|v| v["type"] == "event")
                .count(),
        )
        .collect();
    let p_result = pos(&before_ok, "result before the interrupt's ok", |e| {
        e["type"] == "result" && e["user_message_uuid"] == pid.as_str()
    });
    let result = &before_ok[p_result];
    assert_eq!(result["is_error"], true, "{result}");
    assert_eq!(result["terminal_reason"], "aborted_streaming", "{result}");
    let p_ended = pos(&before_ok, "relay.turn ended before the ok", |e| {
        e["type"] == "relay.turn" && e["prompt_id"] == pid.as_str() && e["phase"] == "ended"
    });
    assert!(p_result < p_ended);
    // Partial text only: the slow answer has 20 deltas.
    let text = assistant_text(&before_ok);
    assert!(
        text.starts_with("slow-0") && !text.contains("slow-19"),
        "{text:?}"
    );
    a.expect_event(from, "relay.state idle", |e| {
        e["type"] == "relay.state" && e["state"] == "idle"
    })
    .await;
    assert!(
        eventually(Duration::from_secs(10), || w.api.aborted_streams() > 0).await,
        "the CLI closed the API stream"
    );
    let (_, result) = a.run_turn("hello again").await;
    assert_eq!(result["result"], HELLO, "{result}");
    assert_contiguous(&a.event_frames_from(from), "interrupt test");
}

/// 4. SIGKILL of the agent mid-turn: crash reported, turn aborted, restart, and the
/// conversation resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sigkill_restarts_and_resumes() {
    let Some(bin) = require_real_cli() else {
        return;
    };
    let _serial = LOCK.lock().await;
    let w = World::new(bin).await;
    let server = w.start();
    let mut a = w.idle_client(&server, &w.fx.owner, "laptop").await;
    let secret = "my secret word is pineapple";
    let (_, first) = a.run_turn(secret).await;
    let conversation = first["session_id"].as_str().unwrap().to_string();

    let from = a.log.len();
    let slow = a.prompt("slow please").await["prompt_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_deltas(&mut a, 2).await;
    let old_pid = agent_pid(&server).await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old_pid), Signal::SIGKILL)
        .expect("kill -9 the agent");

    let exit = a
        .event("relay.agent_exit", |e| e["type"] == "relay.agent_exit")
        .await["event"]
        .clone();
    assert_eq!(exit["cause"], "crashed", "{exit}");
    assert_eq!(exit["signal"], "SIGKILL", "{exit}");
    assert_eq!(exit["restarting"], true, "{exit}");
    let aborted = a.turn_over(&slow).await;
    assert_eq!(aborted["phase"], "aborted", "{aborted}");
    a.event("relay.state idle after the restart", |e| {
        e["type"] == "relay.state" && e["state"] == "idle"
    })
    .await;
    let ev = a.events_from(from);
    let p_exit = pos(&ev, "agent_exit", |e| e["type"] == "relay.agent_exit");
    let p_aborted = pos(&ev, "turn aborted", |e| {
        e["type"] == "relay.turn" && e["phase"] == "aborted"
    });
    let p_restarting = pos(&ev, "relay.state restarting", |e| {
        e["type"] == "relay.state" && e["state"] == "restarting"
    });
    let p_idle = ev
        .iter()
        .rposition(|e| e["type"] == "relay.state" && e["state"] == "idle")
        .unwrap();
    assert!(
        p_exit < p_aborted && p_exit < p_restarting && p_restarting < p_idle,
        "{:?}",
        kinds(&ev)
    );
    assert!(
        !ev.iter().any(|e| e["type"] == "result"),
        "no result for the killed turn: {:?}",
        kinds(&ev)
    );
    assert!(!pid_exists(old_pid), "the killed agent is gone");
    let new_pid = agent_pid(&server).await;
    assert_ne!(new_pid, old_pid);

    let from = a.log.len();
    let (_, result) = a.run_turn("recall").await;
    assert_eq!(
        result["session_id"],
        conversation.as_str(),
        "same conversation: {result}"
    );
    let answer = result["result"].as_str().unwrap_or_default();
    assert!(answer.contains(secret), "recall answer: {answer:?}");
    let last = w.prompts_per_request().pop().unwrap();
    assert!(
        last.iter().any(|p| p == secret) && last.iter().any(|p| p == "slow please"),
        "history sent after the restart: {last:?}"
    );
    assert_eq!(last.last().map(String::as_str), Some("recall"));
    assert!(
        server.logs().lines().any(|l| l.contains("agent started")
            && l.contains(&conversation)
            && l.contains(&new_pid.to_string())),
        "the new agent was started with --resume {conversation}"
    );
    assert_contiguous(&a.event_frames_from(from), "after restart");
}

/// 5a. Three prompts back to back: one turn each, in order, none merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_prompts_each_get_a_turn() {
    let Some(bin) = require_real_cli() else {
        return;
    };
    let _serial = LOCK.lock().await;
    let w = World::new(bin).await;
    let server = w.start();
    let mut a = w.idle_client(&server, &w.fx.owner, "laptop").await;
    let from = a.log.len();
    let texts = ["order-1", "order-2", "order-3"];
    let mut ids = Vec::new();
    for t in texts {
        ids.push(
            a.send(json!({"type": "prompt", "content": t}), "prompt")
                .await,
        );
    }
    let mut pids = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let ok = a.reply(id).await;
        assert_eq!(ok["type"], "ok", "{ok}");
        assert_eq!(ok["queued"], i > 0, "prompt {}: {ok}", i + 1);
        pids.push(ok["prompt_id"].as_str().unwrap().to_string());
    }
    for pid in &pids {
        let end = a.turn_over(pid).await;
        assert_eq!(end["phase"], "ended", "{end}");
    }
    check_one_turn_each(&a, from, &pids, &texts);
    let api = w.prompts_per_request();
    let lasts: Vec<String> = api.iter().filter_map(|p| p.last().cloned()).collect();
    assert_eq!(lasts, texts, "one API call per prompt, not merged: {api:?}");
    assert_eq!(
        api.last().unwrap(),
        &texts,
        "three separate user messages in the history"
    );
}

/// 5b. `session.restart` immediately followed by two prompts: both run, as separate
/// turns, on the restarted agent, which resumed the conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_sent_during_a_restart_each_get_a_turn() {
    let Some(bin) = require_real_cli() else {
        return;
    };
    let _serial = LOCK.lock().await;
    let w = World::new(bin).await;
    let server = w.start();
    let mut a = w.idle_client(&server, &w.fx.owner, "laptop").await;
    for t in ["order-1", "order-2", "order-3"] {
        a.run_turn(t).await;
    }
    let old_agent = agent_pid(&server).await;
    let from = a.log.len();
    let restart = a.send(json!({"type": "session.restart"}), "restart").await;
    let texts2 = ["order-4", "order-5"];
    let mut ids = Vec::new();
    for t in texts2 {
        ids.push(
            a.send(json!({"type": "prompt", "content": t}), "prompt")
                .await,
        );
    }
    let mut pids2 = Vec::new();
    for id in &ids {
        let ok = a.reply(id).await;
        assert_eq!(ok["type"], "ok", "{ok}");
        pids2.push(ok["prompt_id"].as_str().unwrap().to_string());
    }
    for pid in &pids2 {
        let end = a.turn_over(pid).await;
        assert_eq!(end["phase"], "ended", "{end}");
    }
    let ok = a.reply(&restart).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let ev = a.events_from(from);
    let p_exit = pos(&ev, "agent_exit stopped", |e| {
        e["type"] == "relay.agent_exit" && e["cause"] == "stopped"
    });
    let p_first_start = pos(&ev, "first turn after the restart", |e| {
        e["type"] == "relay.turn" && e["phase"] == "started"
    });
    assert!(p_exit < p_first_start, "{:?}", kinds(&ev));
    assert_ne!(agent_pid(&server).await, old_agent, "a new agent runs");
    assert!(!pid_exists(old_agent), "the old agent is gone");
    check_one_turn_each(&a, from, &pids2, &texts2);
    let api = w.prompts_per_request();
    let lasts: Vec<String> = api.iter().filter_map(|p| p.last().cloned()).collect();
    assert_eq!(
        lasts,
        ["order-1", "order-2", "order-3", "order-4", "order-5"],
        "one API call per prompt, not merged: {api:?}"
    );
    assert_eq!(
        api.last().unwrap(),
        &["order-1", "order-2", "order-3", "order-4", "order-5"],
        "the restarted agent resumed the conversation"
    );
    // docs/protocol.md §4.4: `queued` is true when the prompt waits behind a restarting agent.
    let queued: Vec<Value> = ids
        .iter()
        .map(|id| a.log.iter().find(|v| v["id"] == id.as_str()).unwrap()["queued"].clone())
        .collect();
    assert_eq!(
        queued,
        [true, true],
        "prompts waiting behind a restarting agent are queued (docs/protocol.md §4.4)"
    );
}

/// For each prompt in order: started, exactly one result tagged with it, ended; no
/// interleaving; each answer acks its own order tag.
fn check_one_turn_each(a: &Conn, from: usize, pids: &[String], texts: &[&str]) {
    let ev = a.events_from(from);
    let mut last = 0;
    for (pid, text) in pids.iter().zip(texts) {
        let p = pid.as_str();
        let at = |phase: &str| {
            let hits: Vec<usize> = ev
                .iter()
                .enumerate()
                .filter(|(_, e)| {
                    e["type"] == "relay.turn" && e["prompt_id"] == p && e["phase"] == phase
                })
                .map(|(i, _)| i)
                .collect();
            assert_eq!(hits.len(), 1, "{phase} of {text}: {:?}", kinds(&ev));
            hits[0]
        };
        let started = at("started");
        let ended = at("ended");
        assert!(
            !ev.iter().any(|e| e["type"] == "relay.turn"
                && e["prompt_id"] == p
                && e["phase"] == "aborted"),
            "{text} aborted"
        );
        let results: Vec<usize> = ev
            .iter()
            .enumerate()
            .filter(|(_, e)| e["type"] == "result" && e["user_message_uuid"] == p)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(results.len(), 1, "results of {text}: {:?}", kinds(&ev));
        assert!(
            last <= started && started < results[0] && results[0] + 1 == ended,
            "{text}: started {started} result {} ended {ended} after {last}: {:?}",
            results[0],
            kinds(&ev)
        );
        // No other result within this turn.
        assert!(
            ev[started..ended]
                .iter()
                .filter(|e| e["type"] == "result")
                .count()
                == 1
        );
        assert_eq!(
            ev[results[0]]["result"],
            format!("ack {text}").as_str(),
            "{}",
            ev[results[0]]
        );
        last = ended;
    }
}

/// 6. kill -9 of the server mid-turn: a new server on the same data dir continues the
/// seqs, aborts the interrupted prompt, resumes the conversation, and no agent of the
/// first server survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sigkill_then_restart_resumes() {
    let Some(bin) = require_real_cli() else {
        return;
    };
    let _serial = LOCK.lock().await;
    let w = World::new(bin).await;
    let mut server = w.start();
    let mut a = w.idle_client(&server, &w.fx.owner, "laptop").await;
    let secret = "my secret word is pineapple";
    let (_, first) = a.run_turn(secret).await;
    let conversation = first["session_id"].as_str().unwrap().to_string();
    let slow = a.prompt("slow please").await["prompt_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_deltas(&mut a, 2).await;
    let old_agent = agent_pid(&server).await;
    server.signal(Signal::SIGKILL);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
    a.drain_until_closed(Duration::from_secs(10)).await;
    let seen = a.last_seq();
    assert_contiguous(&a.event_frames_from(0), "first server");
    assert_eq!(a.event_frames_from(0)[0]["seq"], 1);

    // The orphaned CLI (stdin at EOF) would finish its turn on its own; the new
    // server must end it at startup.
    let orphan_alive = pid_exists(old_agent);
    eprintln!("old agent {old_agent} alive before the new server: {orphan_alive}");
    let server2 = w.start();
    let mut b = Conn::new(server2.client(&w.fx.owner, Some("laptop")).await);
    let attached = b.attach(Some(seen)).await;
    assert_eq!(attached["truncated"], false, "{attached}");
    assert_eq!(attached["replay_from"], seen + 1, "{attached}");
    let aborted = b.turn_over(&slow).await;
    assert_eq!(aborted["phase"], "aborted", "{aborted}");
    assert_eq!(aborted["detail"], "server_crashed", "{aborted}");
    b.wait_idle().await;
    // No agent of the first server is left (the new one is running, so this is not
    // the orphan finishing its turn on its own after a long time).
    assert!(
        eventually(Duration::from_secs(10), || !pid_exists(old_agent)
            && processes_in_group(old_agent).is_empty())
        .await,
        "the first server's agent {old_agent} survives"
    );
    let new_agent = agent_pid(&server2).await;
    assert_ne!(new_agent, old_agent);
    if orphan_alive {
        // The orphan (stdin at EOF) may still exit on its own between the check
        // above and the new server's start: either way the new server must have
        // read the record and said which it found.
        let logs = server2.logs();
        assert!(
            logs.contains("ended an agent left running")
                || logs.contains("left had already exited"),
            "the new server checked the orphan: {logs}"
        );
    }

    let from = b.log.len();
    let (_, result) = b.run_turn("recall").await;
    assert_eq!(result["session_id"], conversation.as_str(), "{result}");
    let answer = result["result"].as_str().unwrap_or_default();
    assert!(answer.contains(secret), "recall answer: {answer:?}");
    let last = w.prompts_per_request().pop().unwrap();
    assert!(last.iter().any(|p| p == secret), "history: {last:?}");
    assert!(
        server2
            .logs()
            .lines()
            .any(|l| l.contains("agent started") && l.contains(&conversation)),
        "the new server resumed {conversation}"
    );
    let frames = b.event_frames_from(0);
    assert_eq!(
        seq_of(&frames[0]),
        seen + 1,
        "seqs continue after the last seen"
    );
    assert_contiguous(&frames, "second server");
    assert!(b.log.len() > from);
}

/// 7. SIGTERM: the server exits 0, clients get 1001, and nothing of the agent's
/// process group survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_agent_group() {
    let Some(bin) = require_real_cli() else {
        return;
    };
    let _serial = LOCK.lock().await;
    let w = World::new(bin).await;
    let mut server = w.start();
    let mut a = w.idle_client(&server, &w.fx.owner, "laptop").await;
    let (_, result) = a.run_turn("hello").await;
    assert_eq!(result["result"], HELLO);
    let agent = agent_pid(&server).await;
    assert!(!processes_in_group(agent).is_empty(), "agent group exists");
    server.signal(Signal::SIGTERM);
    let close = a.drain_until_closed(Duration::from_secs(30)).await;
    assert_eq!(close.map(|c| c.0), Some(1001), "close code");
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the server exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", server.logs());
    let left = processes_in_group(agent);
    assert!(left.is_empty(), "agent group {agent} survives: {left:?}");
    assert!(!pid_exists(agent));
}
