//! Builders for every stdout line the mock agent writes, shaped (key names and
//! key order) like the lines the real Claude Code CLI 2.1.330 wrote in the
//! recorded transcripts. Scenario code only calls these; no JSON is spelled
//! anywhere else.

use super::json::{Obj, array, to_json};

/// The model name the mock reports.
pub const MODEL: &str = "claude-mock";
/// The version the mock reports as `claude_code_version`.
pub const VERSION: &str = "2.1.330-mock";

const TOOLS: &[&str] = &[
    "Task", "Bash", "Edit", "Glob", "Grep", "Read", "WebFetch", "Write",
];
const SLASH_COMMANDS: &[&str] = &["compact", "context", "init", "review"];
const AGENTS: &[&str] = &["claude", "Explore", "general-purpose", "Plan"];
const INIT_CAPABILITIES: &[&str] = &[
    "interrupt_receipt_v1",
    "interrupt_cancel_queued_v1",
    "msg_lifecycle_v1",
];

/// Per-process facts every line carries.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Stable for the process (and kept across `--resume`).
    pub session_id: String,
    /// The working directory reported in system/init.
    pub cwd: String,
    /// `--include-partial-messages`: emit stream_event and system/status lines.
    pub partial: bool,
    /// `--replay-user-messages`: echo prompts with `isReplay`.
    pub replay: bool,
}

/// A fresh UUID v4 string.
pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An id like the mock Anthropic API's: `<prefix>` + 20 hex digits.
pub fn mock_id(prefix: &str) -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &hex[..20])
}

/// The current UTC time as `2026-11-21T21:13:56.453Z`.
pub fn timestamp() -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_string())
}

fn strs(items: &[&str]) -> String {
    to_json(items)
}

fn usage(input_tokens: u64, output_tokens: u64) -> Obj {
    Obj::new()
        .val("input_tokens", &input_tokens)
        .val("output_tokens", &output_tokens)
        .val("cache_creation_input_tokens", &0)
        .val("cache_read_input_tokens", &0)
}

// ---------------------------------------------------------------- control

/// `control_response` success wrapping an already built inner `response` object.
pub fn control_success(request_id: &str, response: Obj) -> String {
    Obj::new()
        .str("type", "control_response")
        .obj(
            "response",
            Obj::new()
                .str("subtype", "success")
                .str("request_id", request_id)
                .obj("response", response),
        )
        .finish()
}

/// `control_response` error, e.g. for an unsupported subtype.
pub fn control_error(request_id: &str, error: &str, error_code: Option<&str>) -> String {
    Obj::new()
        .str("type", "control_response")
        .obj(
            "response",
            Obj::new()
                .str("subtype", "error")
                .str("request_id", request_id)
                .str("error", error)
                .opt_str("error_code", error_code),
        )
        .finish()
}

/// The reply to `initialize` (also used as a liveness probe by the relay).
/// `pending` holds the complete can_use_tool lines still waiting for an answer.
pub fn initialize_response(request_id: &str, pending: &[String], permission_mode: &str) -> String {
    let session_state = if pending.is_empty() {
        "idle"
    } else {
        "requires_action"
    };
    let commands = array(SLASH_COMMANDS.iter().map(|name| {
        Obj::new()
            .str("name", name)
            .str("description", &format!("The /{name} command (mock)"))
            .str("argumentHint", "")
            .val("builtin", &true)
    }));
    let agents = array(AGENTS.iter().map(|name| {
        Obj::new()
            .str("name", name)
            .str("description", &format!("The {name} agent (mock)"))
    }));
    let models = array([Obj::new()
        .str("value", "default")
        .str("resolvedModel", MODEL)
        .str("displayName", "Default (recommended)")
        .str("description", "The mock agent's only model")
        .val("supportsEffort", &false)]);
    let response = Obj::new()
        .raw("commands", &commands)
        .raw("agents", &agents)
        .str("output_style", "default")
        .raw("available_output_styles", &strs(&["default"]))
        .raw("models", &models)
        .obj(
            "account",
            Obj::new()
                .str("tokenSource", "none")
                .str("apiKeySource", "none")
                .str("apiProvider", "firstParty"),
        )
        .val("pid", &std::process::id())
        .str("claude_code_version", VERSION)
        .str("current_permission_mode", permission_mode)
        .val("analytics_disabled", &true)
        .str("fast_mode_state", "off")
        .str("session_state", session_state)
        .raw("capabilities", &strs(&[]));
    let pending_json = format!("[{}]", pending.join(","));
    Obj::new()
        .str("type", "control_response")
        .obj(
            "response",
            Obj::new()
                .str("subtype", "success")
                .str("request_id", request_id)
                .obj("response", response)
                .raw("pending_permission_requests", &pending_json)
                .raw("pending_user_dialog_requests", "[]"),
        )
        .finish()
}

/// The reply to `interrupt`.
pub fn interrupt_response(
    request_id: &str,
    still_queued: &[String],
    cancelled: Option<&[String]>,
) -> String {
    let mut inner = Obj::new().val("still_queued", still_queued);
    if let Some(c) = cancelled {
        inner = inner.val("cancelled", c);
    }
    control_success(request_id, inner)
}

/// `control_cancel_request` withdrawing one of the mock's own requests.
pub fn control_cancel(request_id: &str) -> String {
    Obj::new()
        .str("type", "control_cancel_request")
        .str("request_id", request_id)
        .finish()
}

/// A tool call the mock wants to make.
#[derive(Debug, Clone)]
pub struct ToolCall {
    /// `toolu_mock…`
    pub id: String,
    /// `Bash`, `Write`, `ExitPlanMode` or `AskUserQuestion`.
    pub name: &'static str,
    /// The tool input as ordered JSON text.
    pub input: String,
    /// Human description shown in the prompt.
    pub description: String,
    /// The `permission_suggestions` array as JSON text.
    pub suggestions: String,
    /// Bash only: `decision_reason` fields are present.
    pub with_decision_reason: bool,
    /// A tool only a person can answer (`ExitPlanMode`, `AskUserQuestion`): the
    /// request carries `requires_user_interaction` and neither a description nor
    /// suggestions, as the real CLI's do.
    pub user_interaction: bool,
}

/// The `can_use_tool` control_request asking the host for permission.
pub fn can_use_tool(request_id: &str, tool: &ToolCall) -> String {
    let req = Obj::new()
        .str("subtype", "can_use_tool")
        .str("tool_name", tool.name)
        .str("display_name", tool.name)
        .raw("input", &tool.input);
    if tool.user_interaction {
        let req = req
            .str("tool_use_id", &tool.id)
            .val("requires_user_interaction", &true);
        return Obj::new()
            .str("type", "control_request")
            .str("request_id", request_id)
            .obj("request", req)
            .finish();
    }
    let mut req = req
        .str("description", &tool.description)
        .raw("permission_suggestions", &tool.suggestions);
    if tool.with_decision_reason {
        req = req
            .str("decision_reason", "This command requires approval")
            .str("decision_reason_type", "other");
    }
    req = req.str("tool_use_id", &tool.id);
    Obj::new()
        .str("type", "control_request")
        .str("request_id", request_id)
        .obj("request", req)
        .finish()
}

/// The reply to `set_permission_mode`.
pub fn permission_mode_response(request_id: &str, mode: &str) -> String {
    control_success(request_id, Obj::new().str("mode", mode))
}

// ---------------------------------------------------------------- system

/// `system/init`, emitted at the start of every turn.
pub fn system_init(ctx: &Ctx, permission_mode: &str, user_uuids: &[String]) -> String {
    let mut o = Obj::new()
        .str("type", "system")
        .str("subtype", "init")
        .str("cwd", &ctx.cwd)
        .str("session_id", &ctx.session_id)
        .raw("tools", &strs(TOOLS))
        .raw("mcp_servers", "[]")
        .str("model", MODEL)
        .str("permissionMode", permission_mode)
        .raw("slash_commands", &strs(SLASH_COMMANDS))
        .str("apiKeySource", "none")
        .str("claude_code_version", VERSION)
        .str("output_style", "default")
        .raw("agents", &strs(AGENTS))
        .raw("skills", "[]")
        .raw("plugins", "[]")
        .raw("capabilities", &strs(INIT_CAPABILITIES))
        .val("analytics_disabled", &true)
        .str("uuid", &uuid())
        .str("original_cwd", &ctx.cwd)
        .raw("additional_directories", "[]")
        .str("fast_mode_state", "off");
    if !user_uuids.is_empty() {
        o = o.val("user_message_uuids", user_uuids);
    }
    o.finish()
}

/// `system/status` `requesting`, before each (simulated) API call in partial mode.
pub fn status_requesting(ctx: &Ctx) -> String {
    Obj::new()
        .str("type", "system")
        .str("subtype", "status")
        .str("status", "requesting")
        .str("session_id", &ctx.session_id)
        .str("uuid", &uuid())
        .finish()
}

/// `system/status` after a permission-mode change.
pub fn status_mode(ctx: &Ctx, mode: &str) -> String {
    Obj::new()
        .str("type", "system")
        .str("subtype", "status")
        .null("status")
        .str("permissionMode", mode)
        .str("uuid", &uuid())
        .str("session_id", &ctx.session_id)
        .finish()
}

/// `command_lifecycle` for a prompt that carried a `uuid`.
pub fn command_lifecycle(ctx: &Ctx, command_uuid: &str, state: &str) -> String {
    Obj::new()
        .str("type", "command_lifecycle")
        .str("command_uuid", command_uuid)
        .str("state", state)
        .str("uuid", &uuid())
        .str("session_id", &ctx.session_id)
        .finish()
}

/// The `--replay-user-messages` echo of a prompt.
pub fn user_replay(ctx: &Ctx, content_json: &str, prompt_uuid: &str) -> String {
    Obj::new()
        .str("type", "user")
        .obj(
            "message",
            Obj::new().str("role", "user").raw("content", content_json),
        )
        .str("session_id", &ctx.session_id)
        .null("parent_tool_use_id")
        .str("uuid", prompt_uuid)
        .str("timestamp", &timestamp())
        .val("isReplay", &true)
        .finish()
}

// ---------------------------------------------------------------- stream events

/// One raw Anthropic SSE event, wrapped in a `stream_event` line.
pub fn stream_event(ctx: &Ctx, api_message_id: &str, event: Obj) -> String {
    stream_event_with(ctx, api_message_id, event, |o| o)
}

fn stream_event_with(
    ctx: &Ctx,
    api_message_id: &str,
    event: Obj,
    extra: impl FnOnce(Obj) -> Obj,
) -> String {
    let o = Obj::new()
        .str("type", "stream_event")
        .obj("event", event)
        .str("session_id", &ctx.session_id)
        .null("parent_tool_use_id")
        .str("uuid", &uuid());
    extra(o).str("api_message_id", api_message_id).finish()
}

/// `message_start` (the wrapper also carries `ttft_ms` and `thinking_display`).
pub fn ev_message_start(ctx: &Ctx, msg_id: &str) -> String {
    let event = Obj::new().str("type", "message_start").obj(
        "message",
        Obj::new()
            .str("id", msg_id)
            .str("type", "message")
            .str("role", "assistant")
            .str("model", MODEL)
            .raw("content", "[]")
            .null("stop_reason")
            .null("stop_sequence")
            .obj("usage", usage(100, 1)),
    );
    stream_event_with(ctx, msg_id, event, |o| {
        o.val("ttft_ms", &5).str("thinking_display", "updates")
    })
}

/// `content_block_start` of a text block.
pub fn ev_text_start(index: usize) -> Obj {
    Obj::new()
        .str("type", "content_block_start")
        .val("index", &index)
        .obj(
            "content_block",
            Obj::new().str("type", "text").str("text", ""),
        )
}

/// `content_block_start` of a tool_use block.
pub fn ev_tool_start(index: usize, tool: &ToolCall) -> Obj {
    Obj::new()
        .str("type", "content_block_start")
        .val("index", &index)
        .obj(
            "content_block",
            Obj::new()
                .str("type", "tool_use")
                .str("id", &tool.id)
                .str("name", tool.name)
                .raw("input", "{}"),
        )
}

/// `content_block_delta` with a `text_delta`.
pub fn ev_text_delta(index: usize, text: &str) -> Obj {
    Obj::new()
        .str("type", "content_block_delta")
        .val("index", &index)
        .obj(
            "delta",
            Obj::new().str("type", "text_delta").str("text", text),
        )
}

/// `content_block_delta` with an `input_json_delta`.
pub fn ev_json_delta(index: usize, partial_json: &str) -> Obj {
    Obj::new()
        .str("type", "content_block_delta")
        .val("index", &index)
        .obj(
            "delta",
            Obj::new()
                .str("type", "input_json_delta")
                .str("partial_json", partial_json),
        )
}

/// `content_block_stop`.
pub fn ev_block_stop(index: usize) -> Obj {
    Obj::new()
        .str("type", "content_block_stop")
        .val("index", &index)
}

/// `message_delta` closing a message normally.
pub fn ev_message_delta(stop_reason: &str, output_tokens: u64) -> Obj {
    Obj::new()
        .str("type", "message_delta")
        .obj(
            "delta",
            Obj::new()
                .str("stop_reason", stop_reason)
                .null("stop_sequence"),
        )
        .obj("usage", Obj::new().val("output_tokens", &output_tokens))
}

/// The synthetic `message_delta` the CLI emits after an interrupt.
pub fn ev_message_delta_aborted() -> Obj {
    Obj::new()
        .str("type", "message_delta")
        .null("context_management")
        .obj(
            "delta",
            Obj::new()
                .null("container")
                .null("stop_details")
                .null("stop_reason")
                .null("stop_sequence"),
        )
        .obj("usage", usage(100, 1))
}

/// `message_stop`; after an interrupt it names the abandoned blocks.
pub fn ev_message_stop(abandoned_from: Option<(&str, usize)>) -> Obj {
    let o = Obj::new().str("type", "message_stop");
    match abandoned_from {
        Some((msg_id, from)) => o.obj(
            "abandoned_blocks",
            Obj::new()
                .str("api_message_id", msg_id)
                .val("from_block_index", &from),
        ),
        None => o,
    }
}

// ---------------------------------------------------------------- assistant / user

/// A content block of an assistant line.
pub fn text_block(text: &str) -> Obj {
    Obj::new().str("type", "text").str("text", text)
}

/// A tool_use content block.
pub fn tool_use_block(tool: &ToolCall) -> Obj {
    Obj::new()
        .str("type", "tool_use")
        .str("id", &tool.id)
        .str("name", tool.name)
        .raw("input", &tool.input)
}

/// One `assistant` line: a single content block of message `msg_id`.
pub fn assistant(
    ctx: &Ctx,
    msg_id: &str,
    api_request_id: &str,
    block: Obj,
    user_uuid: Option<&str>,
    aborted: bool,
) -> String {
    let message = Obj::new()
        .str("id", msg_id)
        .str("type", "message")
        .str("role", "assistant")
        .str("model", MODEL)
        .arr("content", [block])
        .null("stop_reason")
        .null("stop_sequence")
        .obj("usage", usage(100, 1))
        .null("context_management");
    let mut o = Obj::new()
        .str("type", "assistant")
        .obj("message", message)
        .null("parent_tool_use_id")
        .str("session_id", &ctx.session_id)
        .str("uuid", &uuid())
        .str("timestamp", &timestamp())
        .str("request_id", api_request_id);
    if let Some(u) = user_uuid {
        o = o
            .str("user_message_uuid", u)
            .val("user_message_uuids", &[u]);
    }
    if aborted {
        o = o.val("aborted", &true);
    }
    o.finish()
}

/// A CLI-emitted `user` line carrying one content block plus optional
/// `tool_use_result` / `tool_result_meta` (both already JSON text).
pub fn user_line(
    ctx: &Ctx,
    block: Obj,
    tool_use_result: Option<&str>,
    meta: Option<&str>,
) -> String {
    let mut o = Obj::new()
        .str("type", "user")
        .obj(
            "message",
            Obj::new().str("role", "user").arr("content", [block]),
        )
        .null("parent_tool_use_id")
        .str("session_id", &ctx.session_id)
        .str("uuid", &uuid())
        .str("timestamp", &timestamp());
    if let Some(r) = tool_use_result {
        o = o.raw("tool_use_result", r);
    }
    if let Some(m) = meta {
        o = o.raw("tool_result_meta", m);
    }
    o.finish()
}

/// A successful tool_result block (key order as the CLI writes it).
pub fn tool_result_ok(tool_use_id: &str, content: &str) -> Obj {
    Obj::new()
        .str("tool_use_id", tool_use_id)
        .str("type", "tool_result")
        .str("content", content)
        .val("is_error", &false)
}

/// A failed or rejected tool_result block.
pub fn tool_result_err(tool_use_id: &str, content: &str) -> Obj {
    Obj::new()
        .str("type", "tool_result")
        .str("content", content)
        .val("is_error", &true)
        .str("tool_use_id", tool_use_id)
}

/// The `[Request interrupted by user…]` marker line.
pub fn user_interrupted(ctx: &Ctx, for_tool_use: bool) -> String {
    let text = if for_tool_use {
        "[Request interrupted by user for tool use]"
    } else {
        "[Request interrupted by user]"
    };
    user_line(ctx, text_block(text), None, None)
}

/// One entry of `permission_denials`.
pub fn denial(tool: &ToolCall) -> Obj {
    Obj::new()
        .str("tool_name", tool.name)
        .str("tool_use_id", &tool.id)
        .raw("tool_input", &tool.input)
}

// ---------------------------------------------------------------- result

/// How a turn ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// `subtype:"success"`, with the final text.
    Success(String),
    /// Interrupted while streaming: `terminal_reason:"aborted_streaming"`.
    AbortedStreaming,
    /// Interrupted (or deny+interrupt) during a tool prompt: `aborted_tools`.
    AbortedTools,
}

/// Everything a `result` line reports.
#[derive(Debug, Clone)]
pub struct TurnSummary {
    /// How the turn ended.
    pub outcome: Outcome,
    /// Simulated API calls.
    pub num_turns: u32,
    /// `permission_denials` entries.
    pub denials: Vec<Obj>,
    /// Wall time of the turn.
    pub duration_ms: u64,
    /// The prompt's `uuid`, if it had one.
    pub user_uuid: Option<String>,
    /// Steering prompts taken into this turn, listed after `user_uuid` in
    /// `user_message_uuids`.
    pub merged_uuids: Vec<String>,
    /// Results emitted by this process before this one.
    pub result_index: u64,
    /// Prompts waiting behind this turn.
    pub queued: usize,
}

/// The `result` line ending a turn (`"type":"result"` sits in the middle, like the CLI's).
pub fn result(ctx: &Ctx, s: &TurnSummary) -> String {
    let (stop_reason, terminal, is_error, subtype) = match &s.outcome {
        Outcome::Success(_) => ("\"end_turn\"", "completed", false, "success"),
        Outcome::AbortedStreaming => ("null", "aborted_streaming", true, "error_during_execution"),
        Outcome::AbortedTools => (
            "\"tool_use\"",
            "aborted_tools",
            true,
            "error_during_execution",
        ),
    };
    let api_ms = s.duration_ms.saturating_sub(5);
    let mut o = Obj::new()
        .val("duration_api_ms", &api_ms)
        .raw("stop_reason", stop_reason)
        .str("session_id", &ctx.session_id)
        .val("total_cost_usd", &0)
        .obj("usage", usage(100, 7).str("service_tier", "standard"))
        .obj(
            "modelUsage",
            Obj::new().obj(
                MODEL,
                Obj::new()
                    .val("inputTokens", &100)
                    .val("outputTokens", &7)
                    .val("costUSD", &0),
            ),
        )
        .arr("permission_denials", s.denials.clone())
        .str("terminal_reason", terminal)
        .str("fast_mode_state", "off")
        .val("safety_stops", &0)
        .val("is_error", &is_error)
        .val("num_turns", &s.num_turns)
        .str("subtype", subtype);
    o = match &s.outcome {
        Outcome::Success(text) => o
            .null("api_error_status")
            .str("result", text)
            .val("ttft_ms", &5),
        _ => o.val(
            "errors",
            &[format!(
                "[ede_diagnostic] result_type=user last_content_type=n/a stop_reason={}",
                stop_reason.trim_matches('"')
            )],
        ),
    };
    o = o
        .str("type", "result")
        .val("duration_ms", &s.duration_ms)
        .str("uuid", &uuid());
    if let Some(u) = &s.user_uuid {
        let mut all = vec![u.clone()];
        all.extend(s.merged_uuids.iter().cloned());
        o = o
            .str("user_message_uuid", u)
            .val("user_message_uuids", &all);
    }
    o.val("queued_turn_count", &s.queued)
        .val("result_index", &s.result_index)
        .finish()
}

/// The single `result` line of `--resume <unknown id>`.
pub fn result_unknown_session(session_id: &str) -> String {
    Obj::new()
        .str("type", "result")
        .str("subtype", "error_during_execution")
        .val("duration_ms", &0)
        .val("duration_api_ms", &0)
        .val("is_error", &true)
        .val("num_turns", &0)
        .null("stop_reason")
        .str("session_id", session_id)
        .val("total_cost_usd", &0)
        .obj("usage", usage(0, 0))
        .raw("modelUsage", "{}")
        .raw("permission_denials", "[]")
        .str("uuid", &uuid())
        .val(
            "errors",
            &[format!(
                "No conversation found with session ID: {session_id}"
            )],
        )
        .val("result_index", &0)
        .finish()
}
