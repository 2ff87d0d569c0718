//! A mock Anthropic Messages API for running the REAL Claude Code CLI offline
//! (`ANTHROPIC_BASE_URL=http://127.0.0.1:<port>`), answering in the
//! shape the real API uses: `POST /v1/messages` (any query, e.g.
//! `?beta=true`) gets a streamed SSE answer (`text/event-stream`: message_start,
//! content_block_start / _delta… / _stop per block, message_delta with the
//! stop_reason, message_stop).
//!
//! The answer is picked from the LAST user message of the request
//! (`role:"system"` entries and `<system-reminder>` text blocks are ignored):
//! - a `tool_result` → "Tool finished. Output was: <content>" (or
//!   "Tool was denied: <content>" when `is_error`);
//! - `run-bash` → "I will run a command." + Bash tool_use `sh -c 'echo relay-ok'`;
//! - `write-file [PATH]` → "Writing the file." + Write tool_use of PATH
//!   (default: relay-test.txt in the CLI's working directory);
//! - `slow` → 20 text deltas 250 ms apart (stops when the client goes away);
//! - `recall` → quotes every earlier user prompt found in `messages`;
//! - `order-N` → "ack order-N";
//! - `plan-mode-exit` → "Here is my plan." + a Write of [`PLAN_TEXT`] to the plan
//!   file the CLI named in plan mode's instructions ("create your plan at …";
//!   left out when the request names none) + an `ExitPlanMode` tool_use (the CLI
//!   drops its `plan` input and reads the plan file; it asks the host with
//!   `can_use_tool`);
//! - `ask-question` → an `AskUserQuestion` tool_use with two questions
//!   ([`QUESTION_COLOR`], single-select Red/Blue; [`QUESTION_TOPPINGS`],
//!   multi-select Cheese/Olives/Basil);
//! - `long-tool` → "Running a long command." + a Bash tool_use of
//!   [`LONG_COMMAND`] (sleeps [`LONG_TOOL_SECS`] s, so a test can steer the
//!   turn while the tool runs);
//! - `usage-limit` → HTTP 429 `rate_limit_error` with the headers Anthropic sends
//!   when an account's usage limit is reached (`anthropic-ratelimit-unified-status:
//!   rejected`, `-unified-reset` / `-unified-5h-reset` in Unix seconds
//!   [`USAGE_LIMIT_RESET_SECS`] from now, `-unified-representative-claim:
//!   five_hour`, `retry-after`, and the API-key `anthropic-ratelimit-requests-*`
//!   headers with an RFC 3339 reset);
//! - `usage-limit-soon` → the same, but the limit resets
//!   [`USAGE_LIMIT_SOON_SECS`] from now (`retry-after` still an hour), and
//!   `usage-limit-far` [`USAGE_LIMIT_FAR_SECS`] from now; all look
//!   at the newest text block only, so a `continue` sent after the refusal (in
//!   the same user message) is answered;
//! - `change-three` → a turn of two rounds in the CLI's working directory: a Read
//!   of [`EDIT_FILE`] (the CLI edits only files it read), then in one message a
//!   Write of [`ADDED_FILES`] (each [`WRITE_CONTENT`]) and an Edit of [`EDIT_FILE`]
//!   replacing [`EDIT_OLD`] with [`EDIT_NEW`]; then "Changed three files.";
//! - anything else (`hello`) → "Hello from the mock Anthropic API!".
//!
//! A request without `"stream":true` (the CLI checks a model this way after
//! `set_model`) gets the same answer as one JSON message; a model whose id
//! starts with `no-such-model` gets HTTP 404 `not_found_error`, as the API
//! answers an unknown model.
//!
//! A last user message holding a `tool_result` AND text of the user's own (a
//! prompt the CLI folded into the running turn, e.g. one sent with
//! `priority:"next"`) gets "Tool finished. Output was: <content> Also read: <text>".
//!
//! [`MockAnthropic::requests`] returns every request body (system prompt, tools,
//! messages, model, thinking), so a test can see what the CLI sent.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The text of the default answer.
pub const HELLO: &str = "Hello from the mock Anthropic API!";
/// The Bash command of `run-bash`.
pub const BASH_COMMAND: &str = "sh -c 'echo relay-ok'";
/// The files `change-three` writes, in the CLI's working directory.
pub const ADDED_FILES: [&str; 2] = ["added-one.txt", "added-two.txt"];
/// The file `change-three` reads, then edits (it must exist in the working directory).
pub const EDIT_FILE: &str = "edit-me.txt";
/// What `change-three`'s Edit replaces in [`EDIT_FILE`], and with what.
pub const EDIT_OLD: &str = "line two";
pub const EDIT_NEW: &str = "line 2\nline three";

/// The content `write-file` asks to write.
pub const WRITE_CONTENT: &str = "written by the mock model\n";
/// The plan text of `plan-mode-exit`'s ExitPlanMode call.
pub const PLAN_TEXT: &str = "# Plan\n\n1. Read the code.\n2. Fix the bug.\n3. Run the tests.";
/// The first (single-select) question of `ask-question`.
pub const QUESTION_COLOR: &str = "Which color should the button be?";
/// The second (multi-select) question of `ask-question`.
pub const QUESTION_TOPPINGS: &str = "Which toppings do you want?";
/// How long `long-tool`'s command runs.
pub const LONG_TOOL_SECS: u64 = 4;
/// The Bash command of `long-tool` (prompts for permission: not read-only).
pub const LONG_COMMAND: &str = "sh -c 'sleep 4; echo long-done'";
/// When `usage-limit`'s limit resets, in seconds from the request.
pub const USAGE_LIMIT_RESET_SECS: u64 = 3600;
/// When `usage-limit-soon`'s limit resets (its `retry-after` says an hour, so the
/// CLI gives up at once rather than retrying; docs/protocol.md §10.1).
pub const USAGE_LIMIT_SOON_SECS: u64 = 5;
/// When `usage-limit-far`'s limit resets: 60 days, beyond any schedule's bound.
pub const USAGE_LIMIT_FAR_SECS: u64 = 60 * 24 * 3600;
/// Pause between the deltas of `slow`.
const SLOW_PAUSE: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Value>>,
    aborted_streams: AtomicUsize,
}

/// A running mock API; shut down on drop.
pub struct MockAnthropic {
    /// `http://127.0.0.1:<port>`, for `ANTHROPIC_BASE_URL`.
    pub base_url: String,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl MockAnthropic {
    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    pub async fn start() -> anyhow::Result<MockAnthropic> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .fallback(not_found)
            .with_state(Arc::clone(&shared));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                eprintln!("mock anthropic: server error: {e}");
            }
        });
        Ok(MockAnthropic {
            base_url: format!("http://{addr}"),
            shared,
            shutdown,
            task,
        })
    }

    /// Every request body received, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// How many streamed answers the client closed before their end (e.g. an interrupt during `slow`).
    pub fn aborted_streams(&self) -> usize {
        self.shared.aborted_streams.load(Ordering::SeqCst)
    }
}

impl Drop for MockAnthropic {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found_error",
        "mock: only POST /v1/messages",
    )
}

fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"type":"error","error":{"type":kind,"message":message}});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// One block of a planned answer.
enum Block {
    Text(Vec<String>),
    ToolUse { name: &'static str, input: Value },
}

/// A planned answer: its blocks and the pause between text deltas.
struct Plan {
    blocks: Vec<Block>,
    pause: Duration,
}

async fn messages(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("mock: body is not JSON: {e}"),
            );
        }
    };
    if let Ok(mut r) = shared.requests.lock() {
        r.push(request.clone());
    }
    let last = newest_prompt_text(&request).to_ascii_lowercase();
    if last.contains("usage-limit-far") {
        return usage_limit_response(USAGE_LIMIT_FAR_SECS, USAGE_LIMIT_RESET_SECS);
    }
    if last.contains("usage-limit-soon") {
        return usage_limit_response(USAGE_LIMIT_SOON_SECS, USAGE_LIMIT_RESET_SECS);
    }
    if last.contains("usage-limit") {
        return usage_limit_response(USAGE_LIMIT_RESET_SECS, USAGE_LIMIT_RESET_SECS);
    }
    let plan = plan(&request);
    let model = request["model"]
        .as_str()
        .unwrap_or("claude-mock")
        .to_string();
    if model.starts_with("no-such-model") {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found_error",
            &format!("model: {model}"),
        );
    }
    if request["stream"] != true {
        return whole_answer(&model, plan);
    }
    let request_id = format!("req_mock{}", short_id());
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        if !stream_answer(&tx, &model, plan).await {
            shared.aborted_streams.fetch_add(1, Ordering::SeqCst);
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("request-id", request_id)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..20].to_string()
}

/// `plan` as one JSON message (a request without `"stream":true`).
fn whole_answer(model: &str, plan: Plan) -> Response {
    let mut stop_reason = "end_turn";
    let content: Vec<Value> = plan
        .blocks
        .iter()
        .map(|block| match block {
            Block::Text(chunks) => json!({"type":"text","text":chunks.concat()}),
            Block::ToolUse { name, input } => {
                stop_reason = "tool_use";
                json!({"type":"tool_use","id":format!("toolu_mock{}", short_id()),"name":name,"input":input})
            }
        })
        .collect();
    let body = json!({"id":format!("msg_mock{}", short_id()),"type":"message","role":"assistant",
        "model":model,"content":content,"stop_reason":stop_reason,"stop_sequence":null,
        "usage":{"input_tokens":100,"output_tokens":5,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}});
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Sends the SSE events of `plan`; false when the client went away first.
async fn stream_answer(tx: &mpsc::Sender<Bytes>, model: &str, plan: Plan) -> bool {
    let msg_id = format!("msg_mock{}", short_id());
    let send = |name: &str, data: Value| {
        let frame = format!("event: {name}\ndata: {data}\n\n");
        let tx = tx.clone();
        async move { tx.send(Bytes::from(frame)).await.is_ok() }
    };
    let start = json!({"type":"message_start","message":{"id":msg_id,"type":"message","role":"assistant",
        "model":model,"content":[],"stop_reason":null,"stop_sequence":null,
        "usage":{"input_tokens":100,"output_tokens":1,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}});
    if !send("message_start", start).await || !send("ping", json!({"type":"ping"})).await {
        return false;
    }
    let mut stop_reason = "end_turn";
    let mut output_tokens = 1;
    for (index, block) in plan.blocks.iter().enumerate() {
        match block {
            Block::Text(chunks) => {
                let start = json!({"type":"content_block_start","index":index,"content_block":{"type":"text","text":""}});
                if !send("content_block_start", start).await {
                    return false;
                }
                for (i, chunk) in chunks.iter().enumerate() {
                    if i > 0 && !plan.pause.is_zero() {
                        tokio::time::sleep(plan.pause).await;
                    }
                    let delta = json!({"type":"content_block_delta","index":index,"delta":{"type":"text_delta","text":chunk}});
                    if !send("content_block_delta", delta).await {
                        return false;
                    }
                    output_tokens += 1;
                }
            }
            Block::ToolUse { name, input } => {
                stop_reason = "tool_use";
                let id = format!("toolu_mock{}", short_id());
                let start = json!({"type":"content_block_start","index":index,
                    "content_block":{"type":"tool_use","id":id,"name":name,"input":{}}});
                if !send("content_block_start", start).await {
                    return false;
                }
                for piece in split_in(&input.to_string(), 3) {
                    let delta = json!({"type":"content_block_delta","index":index,
                        "delta":{"type":"input_json_delta","partial_json":piece}});
                    if !send("content_block_delta", delta).await {
                        return false;
                    }
                }
                output_tokens += 5;
            }
        }
        if !send(
            "content_block_stop",
            json!({"type":"content_block_stop","index":index}),
        )
        .await
        {
            return false;
        }
    }
    let delta = json!({"type":"message_delta","delta":{"stop_reason":stop_reason,"stop_sequence":null},
        "usage":{"output_tokens":output_tokens}});
    send("message_delta", delta).await && send("message_stop", json!({"type":"message_stop"})).await
}

/// Picks the answer from the last user message.
fn plan(request: &Value) -> Plan {
    let empty = Vec::new();
    let messages = request["messages"].as_array().unwrap_or(&empty);
    let users: Vec<&Value> = messages.iter().filter(|m| m["role"] == "user").collect();
    let Some((last, earlier)) = users.split_last() else {
        return text_plan(HELLO);
    };
    let blocks = content_blocks(&last["content"]);
    if let Some(plan) = change_three(request, &users) {
        return plan;
    }
    if let Some(tr) = blocks.iter().find(|b| b["type"] == "tool_result") {
        let content = text_of(&tr["content"]);
        let mut text = if tr["is_error"] == true {
            format!("Tool was denied: {content}")
        } else {
            format!("Tool finished. Output was: {content}")
        };
        let folded = prompt_text(&blocks);
        if !folded.is_empty() {
            text.push_str(&format!(" Also read: {folded}"));
        }
        return text_plan(&text);
    }
    let prompt = prompt_text(&blocks);
    let lower = prompt.to_ascii_lowercase();
    if lower.contains("plan-mode-exit") {
        let mut blocks = vec![Block::Text(vec!["Here is my plan.".to_string()])];
        if let Some(path) = plan_file_path(request) {
            blocks.push(Block::ToolUse {
                name: "Write",
                input: json!({"file_path": path, "content": PLAN_TEXT}),
            });
        }
        blocks.push(Block::ToolUse {
            name: "ExitPlanMode",
            input: json!({"plan": PLAN_TEXT}),
        });
        return Plan {
            blocks,
            pause: Duration::ZERO,
        };
    }
    if lower.contains("ask-question") {
        return Plan {
            blocks: vec![Block::ToolUse {
                name: "AskUserQuestion",
                input: ask_question_input(),
            }],
            pause: Duration::ZERO,
        };
    }
    if lower.contains("long-tool") {
        return Plan {
            blocks: vec![
                Block::Text(vec!["Running a long command.".to_string()]),
                Block::ToolUse {
                    name: "Bash",
                    input: json!({"command": LONG_COMMAND, "description": "Sleep, then print long-done"}),
                },
            ],
            pause: Duration::ZERO,
        };
    }
    if lower.contains("run-bash") {
        return Plan {
            blocks: vec![
                Block::Text(split_in("I will run a command.", 2)),
                Block::ToolUse {
                    name: "Bash",
                    input: json!({"command": BASH_COMMAND, "description": "Print relay-ok"}),
                },
            ],
            pause: Duration::ZERO,
        };
    }
    if let Some(at) = lower.find("write-file") {
        let path = prompt[at + "write-file".len()..]
            .split_whitespace()
            .next()
            .map(str::to_string)
            .unwrap_or_else(|| default_write_path(request));
        return Plan {
            blocks: vec![
                Block::Text(vec!["Writing the file.".to_string()]),
                Block::ToolUse {
                    name: "Write",
                    input: json!({"file_path": path, "content": WRITE_CONTENT}),
                },
            ],
            pause: Duration::ZERO,
        };
    }
    if lower.contains("slow") {
        return Plan {
            blocks: vec![Block::Text((0..20).map(|i| format!("slow-{i} ")).collect())],
            pause: SLOW_PAUSE,
        };
    }
    if lower.contains("recall") {
        let quoted: Vec<String> = earlier
            .iter()
            .map(|m| prompt_text(&content_blocks(&m["content"])))
            .filter(|t| !t.is_empty())
            .map(|t| format!("\"{t}\""))
            .collect();
        let text = if quoted.is_empty() {
            "I saw no earlier prompts in this conversation.".to_string()
        } else {
            format!(
                "I saw {} earlier prompt(s) in this conversation: {}",
                quoted.len(),
                quoted.join(", ")
            )
        };
        return text_plan(&text);
    }
    let orders = order_tags(&lower);
    if !orders.is_empty() {
        let acks: Vec<String> = orders.iter().map(|o| format!("ack {o}")).collect();
        return text_plan(&acks.join(" "));
    }
    text_plan(HELLO)
}

/// The input of `ask-question`'s AskUserQuestion call (the tool's own schema:
/// `questions[]` of `question`, `header`, `options[]` of `label`/`description`, `multiSelect`).
pub fn ask_question_input() -> Value {
    json!({"questions": [
        {"question": QUESTION_COLOR, "header": "Color", "multiSelect": false, "options": [
            {"label": "Red", "description": "A warm red"},
            {"label": "Blue", "description": "A calm blue"}]},
        {"question": QUESTION_TOPPINGS, "header": "Toppings", "multiSelect": true, "options": [
            {"label": "Cheese", "description": "Grated cheese"},
            {"label": "Olives", "description": "Black olives"},
            {"label": "Basil", "description": "Fresh basil"}]}
    ]})
}

/// The newest of the user's own text blocks in the last user message of
/// `request` ("" when none). The CLI sends a prompt that follows one the API
/// refused in the same user message (no answer came between them): the usage
/// limit is hit by what was asked last, not by all the message holds.
fn newest_prompt_text(request: &Value) -> String {
    request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| content_blocks(&m["content"]))
        .and_then(|blocks| {
            blocks
                .iter()
                .rev()
                .map(|b| prompt_text(std::slice::from_ref(b)))
                .find(|t| !t.is_empty())
        })
        .unwrap_or_default()
}

/// HTTP 429 as Anthropic answers when an account's usage limit is reached: the
/// limit resets in `reset_secs`; `retry-after` says `retry_after_secs`.
fn usage_limit_response(reset_secs: u64, retry_after_secs: u64) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let reset = now + reset_secs;
    let reset_rfc3339 = time::OffsetDateTime::from_unix_timestamp(reset as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let body = json!({"type":"error","error":{"type":"rate_limit_error",
        "message":"This request would exceed your account's rate limit. Please try again later."}});
    let reset_s = reset.to_string();
    Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header(header::CONTENT_TYPE, "application/json")
        .header("request-id", format!("req_mock{}", short_id()))
        .header("retry-after", retry_after_secs.to_string())
        .header("anthropic-ratelimit-unified-status", "rejected")
        .header("anthropic-ratelimit-unified-reset", reset_s.as_str())
        .header("anthropic-ratelimit-unified-5h-status", "rejected")
        .header("anthropic-ratelimit-unified-5h-reset", reset_s.as_str())
        .header("anthropic-ratelimit-unified-5h-utilization", "1.0")
        .header(
            "anthropic-ratelimit-unified-representative-claim",
            "five_hour",
        )
        .header("anthropic-ratelimit-unified-fallback-percentage", "0.5")
        .header("anthropic-ratelimit-requests-limit", "50")
        .header("anthropic-ratelimit-requests-remaining", "0")
        .header("anthropic-ratelimit-requests-reset", reset_rfc3339)
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn text_plan(text: &str) -> Plan {
    let pieces = text.chars().count().div_ceil(6).max(1);
    Plan {
        blocks: vec![Block::Text(split_in(text, pieces))],
        pause: Duration::ZERO,
    }
}

/// A message's content as blocks (a string becomes one text block).
fn content_blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::String(s) => vec![json!({"type":"text","text":s})],
        Value::Array(blocks) => blocks.clone(),
        _ => Vec::new(),
    }
}

/// The user's own words: text blocks that are not system reminders or interrupt markers.
fn prompt_text(blocks: &[Value]) -> String {
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
}

/// The text of a string or of an array of text blocks.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Every `order-<digits>` in the text, in order.
fn order_tags(lower: &str) -> Vec<String> {
    let mut tags = Vec::new();
    let mut rest = lower;
    while let Some(at) = rest.find("order-") {
        let after = &rest[at + "order-".len()..];
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() {
            tags.push(format!("order-{digits}"));
        }
        rest = after;
    }
    tags
}

/// The plan file plan mode's instructions name ("create your plan at <path> using …").
fn plan_file_path(request: &Value) -> Option<String> {
    let text = request["messages"].to_string();
    let marker = "create your plan at ";
    let at = text.find(marker)? + marker.len();
    let path: String = text[at..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '\\')
        .collect();
    let path = path.trim_end_matches('.');
    (path.starts_with('/') && path.ends_with(".md")).then(|| path.to_string())
}

/// relay-test.txt in the CLI's working directory, read from its environment
/// section ("Primary working directory: …", sent in a `role:"system"` message).
/// The rounds of `change-three` (see the module doc), or None when the turn's
/// prompt is another one. `users`: the request's user messages, in order.
fn change_three(request: &Value, users: &[&Value]) -> Option<Plan> {
    let prompt_at = users.iter().rposition(|m| {
        let blocks = content_blocks(&m["content"]);
        !prompt_text(&blocks).is_empty() && !blocks.iter().any(|b| b["type"] == "tool_result")
    })?;
    if !prompt_text(&content_blocks(&users[prompt_at]["content"]))
        .to_ascii_lowercase()
        .contains("change-three")
    {
        return None;
    }
    let dir = cwd_of(request).unwrap_or_else(|| "/tmp".to_string());
    let rounds_done = users.len() - 1 - prompt_at;
    let blocks = match rounds_done {
        0 => vec![
            Block::Text(vec!["Reading the file first.".to_string()]),
            Block::ToolUse {
                name: "Read",
                input: json!({"file_path": format!("{dir}/{EDIT_FILE}")}),
            },
        ],
        1 => {
            let mut blocks = vec![Block::Text(vec!["Changing three files.".to_string()])];
            for name in ADDED_FILES {
                blocks.push(Block::ToolUse {
                    name: "Write",
                    input: json!({"file_path": format!("{dir}/{name}"), "content": WRITE_CONTENT}),
                });
            }
            blocks.push(Block::ToolUse {
                name: "Edit",
                input: json!({"file_path": format!("{dir}/{EDIT_FILE}"), "old_string": EDIT_OLD, "new_string": EDIT_NEW}),
            });
            blocks
        }
        _ => vec![Block::Text(vec!["Changed three files.".to_string()])],
    };
    Some(Plan {
        blocks,
        pause: Duration::ZERO,
    })
}

/// The CLI's working directory, from its environment description.
fn cwd_of(request: &Value) -> Option<String> {
    let mut texts = vec![text_of(&request["system"])];
    if let Value::String(s) = &request["system"] {
        texts.push(s.clone());
    }
    let empty = Vec::new();
    for m in request["messages"].as_array().unwrap_or(&empty) {
        if m["role"] == "system" {
            texts.push(text_of(&m["content"]));
        }
    }
    texts
        .iter()
        .flat_map(|t| t.lines())
        .find_map(|line| {
            line.trim()
                .trim_start_matches("- ")
                .strip_prefix("Primary working directory:")
                .map(|d| d.trim().to_string())
        })
        .filter(|d| d.starts_with('/'))
}

fn default_write_path(request: &Value) -> String {
    let mut texts = vec![text_of(&request["system"])];
    if let Value::String(s) = &request["system"] {
        texts.push(s.clone());
    }
    let empty = Vec::new();
    for m in request["messages"].as_array().unwrap_or(&empty) {
        if m["role"] == "system" {
            texts.push(text_of(&m["content"]));
        }
    }
    let cwd = texts.iter().flat_map(|t| t.lines()).find_map(|line| {
        line.trim()
            .trim_start_matches("- ")
            .strip_prefix("Primary working directory:")
            .map(|d| d.trim().to_string())
    });
    match cwd {
        Some(dir) if dir.starts_with('/') => format!("{dir}/relay-test.txt"),
        _ => "/tmp/relay-test.txt".to_string(),
    }
}

/// Splits `text` into about `n` pieces on char boundaries.
fn split_in(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    let size = chars.len().div_ceil(n.max(1));
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}
