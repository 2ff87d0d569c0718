//! Turning session events into terminal text.
//!
//! Owns: what each event kind looks like (compact, one line per fact, streamed
//! text as it arrives), colours, and who is who (client id → device). Pure: it
//! returns strings; `screen` decides where they go. Text that comes from the
//! agent or other clients is stripped of control characters, so a tool's output
//! cannot move the cursor or recolour the terminal.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use ccrelay_protocol::{ClientEntry, PresenceFrame, RelayEvent, TurnPhase};

/// Longest tool input summary and tool result excerpt, in characters.
const SUMMARY_CHARS: usize = 160;
/// Lines of a tool result shown.
const RESULT_LINES: usize = 4;
/// Message ids remembered as streamed; older ones are forgotten (their `assistant`
/// lines came long ago).
const STREAMED_MEMORY: usize = 256;

/// SGR styles used by the renderer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Dim,
    Bold,
    Red,
    Green,
    Yellow,
    Cyan,
    Magenta,
}

impl Tone {
    fn sgr(self) -> &'static str {
        match self {
            Tone::Dim => "2",
            Tone::Bold => "1",
            Tone::Red => "31",
            Tone::Green => "32",
            Tone::Yellow => "33",
            Tone::Cyan => "36",
            Tone::Magenta => "35",
        }
    }
}

/// Who is attached, by client id. Entries are kept after a client leaves, so a
/// late `relay.resolved` still names its device.
#[derive(Debug, Default, Clone)]
pub struct Roster {
    labels: HashMap<String, String>,
    view: super::presence::PresenceView,
    /// Our own client id on the current connection.
    pub own_id: String,
}

impl Roster {
    /// Replace the attached list from `attached` (`total`: its `clients_total`).
    pub fn update(&mut self, clients: &[ClientEntry], total: Option<usize>) {
        self.learn(clients);
        self.view.replace(clients, total);
    }

    /// Apply a `presence` frame; returns (joined, left) labels, not counting
    /// ourselves, and the new count when names are no longer everyone.
    pub fn apply(&mut self, frame: &PresenceFrame) -> (Vec<String>, Vec<String>, Option<usize>) {
        for list in [&frame.joined, &frame.clients].into_iter().flatten() {
            self.learn(list);
        }
        let change = self.view.apply(frame);
        let label = |ids: Vec<String>| -> Vec<String> {
            ids.into_iter()
                .filter(|id| *id != self.own_id)
                .map(|id| self.label(&id))
                .collect()
        };
        (label(change.joined), label(change.left), change.count)
    }

    fn learn(&mut self, clients: &[ClientEntry]) {
        for c in clients {
            let label = client_label(c.device.as_deref(), Some(&c.fingerprint));
            self.labels.insert(c.client_id.clone(), label);
        }
    }

    /// Who is attached, as far as known.
    #[cfg(test)]
    pub fn view(&self) -> &super::presence::PresenceView {
        &self.view
    }

    /// Forget who was present (a new connection starts a new list).
    pub fn reset_presence(&mut self) {
        self.view.reset();
    }

    /// Device name, else short fingerprint, else the id itself.
    pub fn label(&self, client_id: &str) -> String {
        if client_id == "relay" {
            return "the relay (timeout)".into();
        }
        let base = self
            .labels
            .get(client_id)
            .cloned()
            .unwrap_or_else(|| client_id.to_string());
        if !self.own_id.is_empty() && client_id == self.own_id {
            format!("{base} (you)")
        } else {
            base
        }
    }
}

/// `device`, else the fingerprint shortened to `SHA256:abcdefgh`.
fn client_label(device: Option<&str>, fingerprint: Option<&str>) -> String {
    if let Some(d) = device.filter(|d| !d.is_empty()) {
        // One line, escaped visibly: a device name is chosen by its peer.
        return ccrelay_server::escape::line(d).into_owned();
    }
    match fingerprint {
        Some(fp) => ccrelay_server::escape::line(&short_fingerprint(fp)).into_owned(),
        None => "someone".into(),
    }
}

fn short_fingerprint(fp: &str) -> String {
    match fp.split_once(':') {
        Some((alg, rest)) => format!("{alg}:{}", rest.chars().take(8).collect::<String>()),
        None => fp.chars().take(16).collect(),
    }
}

pub use super::controls::clean;

/// One line, at most `max` characters (an ellipsis marks the cut).
fn one_line(text: &str, max: usize) -> String {
    let flat: String = clean(text).split_whitespace().collect::<Vec<_>>().join(" ");
    truncate(&flat, max)
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// The text of prompt content: a string, or the text blocks of an array.
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") => b
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                Some(other) => format!("[{other}]"),
                None => String::new(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A compact summary of a tool's input: the command, path or pattern when the
/// tool has one, else the JSON.
pub fn tool_summary(name: &str, input: &Value) -> String {
    let field = |k: &str| input.get(k).and_then(Value::as_str);
    let main = match name {
        "Bash" => field("command"),
        "Read" | "Write" | "Edit" | "MultiEdit" | "NotebookEdit" => {
            field("file_path").or(field("notebook_path"))
        }
        "Glob" | "Grep" => field("pattern"),
        "WebFetch" => field("url"),
        "WebSearch" => field("query"),
        "Task" => field("description"),
        _ => None,
    };
    match main {
        Some(s) => one_line(s, SUMMARY_CHARS),
        None if input.as_object().is_some_and(|o| o.is_empty()) => String::new(),
        None => one_line(&input.to_string(), SUMMARY_CHARS),
    }
}

/// How many shown plans are remembered (requests are answered long before).
const MAX_PLANS_SHOWN: usize = 64;

/// Renders events to text, remembering what was streamed so it is not shown twice.
#[derive(Debug)]
pub struct Renderer {
    color: bool,
    /// The last text printed did not end with a newline (streamed text).
    mid_line: bool,
    /// Assistant message whose stream events are arriving.
    current_msg: Option<String>,
    /// Messages whose text or thinking was shown from deltas.
    streamed: HashSet<String>,
    streamed_order: Vec<String>,
    /// tool_use id → tool name, to label results.
    tools: HashMap<String, String>,
    /// ExitPlanMode requests whose plan was shown with the request, so that
    /// their `relay.plan` is not printed twice.
    plans_shown: HashSet<String>,
    pub roster: Roster,
}

impl Renderer {
    pub fn new(color: bool) -> Renderer {
        Renderer {
            color,
            mid_line: false,
            current_msg: None,
            streamed: HashSet::new(),
            streamed_order: Vec::new(),
            tools: HashMap::new(),
            plans_shown: HashSet::new(),
            roster: Roster::default(),
        }
    }

    /// Whether output is coloured.
    pub fn color(&self) -> bool {
        self.color
    }

    fn paint(&self, tone: Tone, text: &str) -> String {
        if self.color && !text.is_empty() {
            format!("\x1b[{}m{text}\x1b[0m", tone.sgr())
        } else {
            text.to_string()
        }
    }

    /// A whole line (newline first if streamed text was left open).
    fn line(&mut self, tone: Option<Tone>, text: &str) -> String {
        let mut out = self.break_line();
        match tone {
            Some(t) => out.push_str(&self.paint(t, text)),
            None => out.push_str(text),
        }
        out.push('\n');
        out
    }

    /// "\n" if streamed text left the cursor mid-line.
    pub fn break_line(&mut self) -> String {
        if self.mid_line {
            self.mid_line = false;
            "\n".into()
        } else {
            String::new()
        }
    }

    /// A status line of the client itself (reconnecting, warnings).
    pub fn notice(&mut self, text: &str) -> String {
        // Notices can carry a server's close reason or message: escape them.
        let text = ccrelay_server::escape::text(text);
        self.line(Some(Tone::Yellow), &format!("ccrelay: {text}"))
    }

    /// A dim informational line of the client itself.
    pub fn info(&mut self, text: &str) -> String {
        let text = ccrelay_server::escape::text(text);
        self.line(Some(Tone::Dim), &format!("ccrelay: {text}"))
    }

    /// An error line.
    pub fn error(&mut self, text: &str) -> String {
        let text = ccrelay_server::escape::text(text);
        self.line(Some(Tone::Red), &format!("ccrelay: {text}"))
    }

    /// Text for one session event (the `event` object of an event frame).
    pub fn event(&mut self, ev: &Value) -> String {
        let kind = ev.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "stream_event" => self.stream_event(ev.get("event").unwrap_or(&Value::Null), ev),
            "assistant" => self.assistant(ev),
            "user" => self.user(ev),
            "result" => self.result(ev),
            "system" => self.system(ev),
            "control_request" => self.control_request(ev),
            "control_cancel_request" => {
                self.line(Some(Tone::Dim), "· the agent withdrew its request")
            }
            // Agent bookkeeping with nothing for a person to read.
            "command_lifecycle" | "keep_alive" | "rate_limit_event" => String::new(),
            other => self.line(Some(Tone::Dim), &format!("· [{}]", clean(other))),
        }
    }

    /// Text for one relay event. `relay.resolved` and `relay.cancelled` need the
    /// request they end: see [`Renderer::resolved`] and [`Renderer::cancelled`].
    pub fn relay(&mut self, ev: &RelayEvent) -> String {
        match ev {
            RelayEvent::Prompt {
                client_id,
                fingerprint,
                device,
                content,
                scheduled_at,
                auto_continue,
                ..
            } => {
                let who = if *auto_continue {
                    "relay (auto-continue)".to_string()
                } else if *client_id == self.roster.own_id {
                    self.roster.label(&self.roster.own_id.clone())
                } else {
                    client_label(device.as_deref(), fingerprint.as_deref())
                };
                let content: Value = serde_json::from_str(content.get()).unwrap_or(Value::Null);
                let text = content_text(&content);
                let head = self.paint(Tone::Bold, &format!("▶ {who}:"));
                let body = clean(&text).replace('\n', "\n  ");
                match scheduled_at {
                    Some(at) => {
                        let when = self.paint(Tone::Dim, &format!("(scheduled for {})", clean(at)));
                        self.line(None, &format!("{head} {body} {when}"))
                    }
                    None => self.line(None, &format!("{head} {body}")),
                }
            }
            RelayEvent::Turn {
                phase: TurnPhase::Aborted,
                detail,
                ..
            } => {
                let detail = match detail.as_deref() {
                    None | Some("") => String::new(),
                    Some(d) => format!(" ({})", clean(d)),
                };
                self.line(Some(Tone::Red), &format!("✗ turn aborted{detail}"))
            }
            RelayEvent::Turn { .. } => String::new(),
            RelayEvent::State { state, detail } => {
                let text = match detail.as_deref() {
                    None | Some("") => format!("· {state}"),
                    Some(d) => format!("· {state} ({})", one_line(d, SUMMARY_CHARS)),
                };
                let tone = match state.as_str() {
                    "failed" => Tone::Red,
                    "restarting" | "stopped" => Tone::Yellow,
                    _ => Tone::Dim,
                };
                self.line(Some(tone), &text)
            }
            RelayEvent::AgentExit {
                cause,
                code,
                signal,
                restarting,
            } => {
                let how = match (code, signal) {
                    (_, Some(sig)) => format!(" by {}", clean(sig)),
                    (Some(code), None) => format!(" with exit code {code}"),
                    (None, None) => String::new(),
                };
                let then = if *restarting { "; restarting" } else { "" };
                let what = match cause.as_str() {
                    "crashed" => "the agent exited",
                    "hung" => "the agent hung and was killed",
                    "stopped" => "the agent was stopped",
                    _ => "the agent ended",
                };
                self.line(Some(Tone::Yellow), &format!("· {what}{how}{then}"))
            }
            RelayEvent::Resolved { .. } | RelayEvent::Cancelled { .. } => String::new(),
            RelayEvent::Dropped { bytes } => self.line(
                Some(Tone::Yellow),
                &format!("· an agent line of {bytes} bytes was too long and was dropped"),
            ),
            RelayEvent::Closed { by, device } => {
                let who = if *by == self.roster.own_id {
                    "you".to_string()
                } else {
                    clean(device.as_deref().unwrap_or(by))
                };
                self.line(Some(Tone::Yellow), &format!("· session closed by {who}"))
            }
            RelayEvent::Changes {
                files, truncated, ..
            } => {
                let mut out = self.break_line();
                out.push_str(&super::controls::changes(files, *truncated, self.color));
                out
            }
            RelayEvent::Settings {
                settings,
                changed,
                client_id,
                fingerprint,
                device,
                ..
            } => {
                let who = if client_id == "agent" {
                    "the agent".to_string()
                } else {
                    client_label(device.as_deref(), fingerprint.as_deref())
                };
                let mode = clean(&settings.permission_mode);
                let what = clean(&changed.join(", "));
                self.line(
                    Some(Tone::Dim),
                    &format!("· settings changed by {who}: {what} (mode {mode})"),
                )
            }
            RelayEvent::Plan { request_id, plan } => {
                // Shown already with its request, or nothing to show.
                if self.plans_shown.contains(request_id) || plan.is_empty() {
                    return String::new();
                }
                let head = self.paint(Tone::Bold, "· the agent's plan:");
                let mut out = self.line(None, &head);
                out.push_str(&super::controls::plan(plan, self.color));
                out
            }
        }
    }

    fn stream_event(&mut self, inner: &Value, wrapper: &Value) -> String {
        match str_of(inner, "type") {
            "message_start" => {
                let id = inner
                    .pointer("/message/id")
                    .and_then(Value::as_str)
                    .or_else(|| wrapper.get("api_message_id").and_then(Value::as_str));
                self.current_msg = id.map(str::to_owned);
                String::new()
            }
            "content_block_delta" => {
                let delta = inner.get("delta").unwrap_or(&Value::Null);
                let (text, tone) = match str_of(delta, "type") {
                    "text_delta" => (str_of(delta, "text"), None),
                    "thinking_delta" => (str_of(delta, "thinking"), Some(Tone::Dim)),
                    _ => return String::new(),
                };
                if text.is_empty() {
                    return String::new();
                }
                if let Some(id) = self.current_msg.clone() {
                    self.remember_streamed(id);
                }
                let text = clean(text);
                self.mid_line = !text.ends_with('\n');
                match tone {
                    Some(t) => self.paint(t, &text),
                    None => text,
                }
            }
            "content_block_stop" | "message_stop" => self.break_line(),
            _ => String::new(),
        }
    }

    fn remember_streamed(&mut self, id: String) {
        if self.streamed.insert(id.clone()) {
            self.streamed_order.push(id);
            if self.streamed_order.len() > STREAMED_MEMORY {
                let old = self.streamed_order.remove(0);
                self.streamed.remove(&old);
            }
        }
    }

    fn assistant(&mut self, ev: &Value) -> String {
        let msg_id = ev.pointer("/message/id").and_then(Value::as_str);
        let streamed = msg_id.is_some_and(|id| self.streamed.contains(id));
        let mut out = String::new();
        for block in blocks(ev.pointer("/message/content")) {
            match str_of(block, "type") {
                "text" if !streamed => {
                    let t = str_of(block, "text");
                    out.push_str(&self.line(None, &clean(t)));
                }
                "thinking" if !streamed => {
                    let t = str_of(block, "thinking");
                    out.push_str(&self.line(Some(Tone::Dim), &clean(t)));
                }
                "tool_use" => {
                    let name = str_of(block, "name");
                    if let Some(id) = block.get("id").and_then(Value::as_str) {
                        self.tools.insert(id.to_string(), name.to_string());
                    }
                    let summary = tool_summary(name, block.get("input").unwrap_or(&Value::Null));
                    let head = self.paint(Tone::Cyan, &format!("⚙ {}", clean(name)));
                    out.push_str(&self.line(None, &format!("{head} {summary}")));
                }
                _ => {}
            }
        }
        out
    }

    fn user(&mut self, ev: &Value) -> String {
        // The relay already showed the prompt (relay.prompt); replays echo it again.
        if ev.get("isReplay").and_then(Value::as_bool) == Some(true) {
            return String::new();
        }
        let content = ev.pointer("/message/content").unwrap_or(&Value::Null);
        if let Value::String(s) = content {
            return self.line(Some(Tone::Dim), &one_line(s, SUMMARY_CHARS));
        }
        let mut out = String::new();
        for block in blocks(Some(content)) {
            match str_of(block, "type") {
                "tool_result" => {
                    let is_error = block.get("is_error").and_then(Value::as_bool) == Some(true);
                    let body = content_text(block.get("content").unwrap_or(&Value::Null));
                    let body = clean(&body);
                    let mut lines: Vec<String> = body
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(|l| truncate(l, SUMMARY_CHARS))
                        .collect();
                    let more = lines.len().saturating_sub(RESULT_LINES);
                    lines.truncate(RESULT_LINES);
                    if more > 0 {
                        lines.push(format!("… {more} more lines"));
                    }
                    if lines.is_empty() {
                        lines.push("(no output)".into());
                    }
                    let tone = if is_error { Tone::Red } else { Tone::Dim };
                    for (i, l) in lines.iter().enumerate() {
                        let lead = if i == 0 { "  ⎿ " } else { "    " };
                        out.push_str(&self.line(Some(tone), &format!("{lead}{l}")));
                    }
                }
                "text" => {
                    let t = one_line(str_of(block, "text"), SUMMARY_CHARS);
                    out.push_str(&self.line(Some(Tone::Dim), &t));
                }
                _ => {}
            }
        }
        out
    }

    fn result(&mut self, ev: &Value) -> String {
        let secs = ev
            .get("duration_ms")
            .and_then(Value::as_u64)
            .map(|ms| format!(" in {:.1} s", ms as f64 / 1000.0))
            .unwrap_or_default();
        if ev.get("is_error").and_then(Value::as_bool) == Some(true) {
            let why = ev
                .get("terminal_reason")
                .or_else(|| ev.get("subtype"))
                .and_then(Value::as_str)
                .unwrap_or("error");
            // An interrupt is not a failure to explain: its `errors` are diagnostics.
            if why.starts_with("aborted") {
                return self.line(
                    Some(Tone::Yellow),
                    &format!("✗ turn interrupted ({}){secs}", clean(why)),
                );
            }
            let errors = ev
                .get("errors")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .filter(|s| !s.is_empty())
                .map(|s| format!(": {}", one_line(&s, SUMMARY_CHARS)))
                .unwrap_or_default();
            self.line(
                Some(Tone::Red),
                &format!("✗ turn failed ({}){secs}{errors}", clean(why)),
            )
        } else {
            self.line(Some(Tone::Green), &format!("✓ done{secs}"))
        }
    }

    fn system(&mut self, ev: &Value) -> String {
        match str_of(ev, "subtype") {
            // Every turn starts with init; status lines are progress chatter.
            "init" | "status" | "hook_started" | "hook_response" => String::new(),
            other => self.line(Some(Tone::Dim), &format!("· [system {}]", clean(other))),
        }
    }

    fn control_request(&mut self, ev: &Value) -> String {
        let req = ev.get("request").unwrap_or(&Value::Null);
        let input = req.get("input").unwrap_or(&Value::Null);
        if str_of(req, "subtype") == "can_use_tool" && str_of(req, "tool_name") == "ExitPlanMode" {
            let head = self.paint(Tone::Magenta, "? the agent's plan, for approval:");
            let mut out = self.line(None, &head);
            match input.get("plan").and_then(Value::as_str) {
                Some(plan) => {
                    if self.plans_shown.len() >= MAX_PLANS_SHOWN {
                        self.plans_shown.clear();
                    }
                    if let Some(id) = ev.get("request_id").and_then(Value::as_str) {
                        self.plans_shown.insert(id.to_string());
                    }
                    out.push_str(&super::controls::plan(plan, self.color));
                }
                None => out.push_str(&self.line(
                    Some(Tone::Dim),
                    "  (the request carries no plan text; the relay sends it if the agent has one)",
                )),
            }
            return out;
        }
        let questions = super::controls::questions(input);
        if str_of(req, "subtype") == "can_use_tool"
            && str_of(req, "tool_name") == "AskUserQuestion"
            && !questions.is_empty()
        {
            let head = self.paint(Tone::Magenta, "? the agent asks:");
            let mut out = self.line(None, &head);
            out.push_str(&super::controls::render_questions(&questions, self.color));
            return out;
        }
        if str_of(req, "subtype") == "can_use_tool" {
            let tool = str_of(req, "tool_name");
            let summary = tool_summary(tool, req.get("input").unwrap_or(&Value::Null));
            let head = self.paint(Tone::Magenta, &format!("? permission: {}", clean(tool)));
            let mut out = self.line(None, &format!("{head} {summary}"));
            let why = req
                .get("description")
                .or_else(|| req.get("decision_reason"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !why.is_empty() {
                out.push_str(&self.line(Some(Tone::Dim), &format!("  {}", one_line(why, 200))));
            }
            out
        } else {
            let sub = clean(str_of(req, "subtype"));
            self.line(Some(Tone::Magenta), &format!("? the agent asks: {sub}"))
        }
    }

    /// `relay.resolved`, given the request it answered (if we still know it).
    pub fn resolved(
        &mut self,
        client_id: &str,
        response: &Value,
        request: Option<&Value>,
    ) -> String {
        let who = self.roster.label(client_id);
        let tool = request
            .and_then(|r| r.pointer("/request/tool_name"))
            .and_then(Value::as_str)
            .map(clean)
            .unwrap_or_else(|| "request".into());
        match str_of(response, "behavior") {
            "allow" => {
                let always = response
                    .get("updatedPermissions")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty());
                let how = if always { "always allowed" } else { "allowed" };
                self.line(Some(Tone::Green), &format!("✓ {tool} {how} by {who}"))
            }
            "deny" => {
                let msg = str_of(response, "message");
                // The relay's default message only repeats who denied it.
                let msg = if msg.is_empty() || msg.starts_with("denied by ") {
                    String::new()
                } else {
                    format!(": {}", one_line(msg, SUMMARY_CHARS))
                };
                self.line(
                    Some(Tone::Yellow),
                    &format!("✗ {tool} denied by {who}{msg}"),
                )
            }
            _ => self.line(Some(Tone::Dim), &format!("· {tool} answered by {who}")),
        }
    }

    /// `relay.cancelled` or the agent's `control_cancel_request`, given the request.
    pub fn cancelled(&mut self, reason: &str, request: Option<&Value>) -> String {
        let tool = request
            .and_then(|r| r.pointer("/request/tool_name"))
            .and_then(Value::as_str)
            .map(clean)
            .unwrap_or_else(|| "request".into());
        let why = if reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", clean(reason))
        };
        self.line(
            Some(Tone::Dim),
            &format!("· {tool} permission request cancelled{why}"),
        )
    }

    /// An `error` frame from the server.
    /// `code` as the frame spelled it (a newer server's code included).
    pub fn server_error(&mut self, code: &str, message: &str) -> String {
        let msg = one_line(message, SUMMARY_CHARS);
        self.line(
            Some(Tone::Red),
            &format!("server error {}: {msg}", clean(code)),
        )
    }

    /// Joins and leaves from a `presence` frame (deltas, a full list, or only
    /// the count while many are attached).
    pub fn presence(&mut self, frame: &PresenceFrame) -> String {
        let (joined, left, count) = self.roster.apply(frame);
        let mut out = String::new();
        for j in joined {
            out.push_str(&self.line(Some(Tone::Dim), &format!("· {j} joined")));
        }
        for l in left {
            out.push_str(&self.line(Some(Tone::Dim), &format!("· {l} left")));
        }
        if let Some(n) = count {
            out.push_str(&self.line(Some(Tone::Dim), &format!("· {n} clients attached")));
        }
        out
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn blocks(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client entry from its JSON, the fields a test leaves out filled in.
    fn entry(v: &Value) -> ClientEntry {
        let mut v = v.clone();
        for (k, d) in [
            ("fingerprint", "SHA256:x"),
            ("comment", ""),
            ("role", "owner"),
        ] {
            if v.get(k).is_none() {
                v[k] = Value::from(d);
            }
        }
        serde_json::from_value(v).unwrap()
    }

    /// A presence frame from its JSON, entries completed as [`entry`] does.
    fn pres(v: Value) -> PresenceFrame {
        let list = |k: &str| {
            v.get(k)
                .and_then(Value::as_array)
                .map(|l| l.iter().map(entry).collect())
        };
        PresenceFrame {
            session: "default".into(),
            joined: list("joined"),
            left: v
                .get("left")
                .map(|l| serde_json::from_value(l.clone()).unwrap()),
            count: v["count"].as_u64().unwrap() as usize,
            clients: list("clients"),
        }
    }

    /// Any event as the session passes it: relay events typed, agent events as JSON.
    fn show(r: &mut Renderer, ev: &Value) -> String {
        match RelayEvent::parse(&ev.to_string()) {
            Ok(Some(relay)) => r.relay(&relay),
            _ => r.event(ev),
        }
    }

    /// `relay.resolved` as the session renders it.
    fn resolved(r: &mut Renderer, ev: &Value, request: Option<&Value>) -> String {
        r.resolved(
            ev["client_id"].as_str().unwrap_or_default(),
            &ev["response"],
            request,
        )
    }
    use serde_json::json;

    fn r() -> Renderer {
        Renderer::new(false)
    }

    fn delta(text: &str) -> Value {
        json!({"type":"stream_event","event":{"type":"content_block_delta","index":0,
            "delta":{"type":"text_delta","text":text}}})
    }

    #[test]
    fn streamed_text_is_not_repeated_by_the_assistant_line() {
        let mut r = r();
        let start = json!({"type":"stream_event","event":{"type":"message_start","message":{"id":"msg_1"}}});
        assert_eq!(show(&mut r, &start), "");
        assert_eq!(show(&mut r, &delta("Hel")), "Hel");
        assert_eq!(show(&mut r, &delta("lo")), "lo");
        let stop = json!({"type":"stream_event","event":{"type":"content_block_stop","index":0}});
        assert_eq!(show(&mut r, &stop), "\n");
        let full = json!({"type":"assistant","message":{"id":"msg_1","content":[{"type":"text","text":"Hello"}]}});
        assert_eq!(show(&mut r, &full), "");
        // Not streamed: shown whole.
        let other = json!({"type":"assistant","message":{"id":"msg_2","content":[{"type":"text","text":"Hi"}]}});
        assert_eq!(show(&mut r, &other), "Hi\n");
    }

    #[test]
    fn a_line_after_streamed_text_starts_on_a_new_line() {
        let mut r = r();
        assert_eq!(show(&mut r, &delta("partial")), "partial");
        let state = json!({"type":"relay.state","state":"idle"});
        assert_eq!(show(&mut r, &state), "\n· idle\n");
    }

    #[test]
    fn tool_use_and_result_are_compact() {
        let mut r = r();
        let call = json!({"type":"assistant","message":{"id":"m","content":[
            {"type":"tool_use","id":"t1","name":"Bash","input":{"command":"sh -c 'echo relay-ok'"}}]}});
        assert_eq!(show(&mut r, &call), "⚙ Bash sh -c 'echo relay-ok'\n");
        let result = json!({"type":"user","message":{"role":"user","content":[
            {"type":"tool_result","tool_use_id":"t1","content":"relay-ok\n","is_error":false}]}});
        assert_eq!(show(&mut r, &result), "  ⎿ relay-ok\n");
        let long = (1..=6)
            .map(|i| format!("line{i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let result = json!({"type":"user","message":{"content":[
            {"type":"tool_result","tool_use_id":"t1","content":long,"is_error":true}]}});
        assert_eq!(
            show(&mut r, &result),
            "  ⎿ line1\n    line2\n    line3\n    line4\n    … 2 more lines\n"
        );
    }

    #[test]
    fn prompts_name_their_sender() {
        let mut r = r();
        r.roster.own_id = "me".into();
        let p = json!({"type":"relay.prompt","prompt_id":"p","client_id":"c2","fingerprint":"SHA256:abcdefghijkl","device":"phone","content":"hello"});
        assert_eq!(show(&mut r, &p), "▶ phone: hello\n");
        let p = json!({"type":"relay.prompt","prompt_id":"p","client_id":"c3","fingerprint":"SHA256:abcdefghijkl","content":[{"type":"text","text":"hi"}]});
        assert_eq!(show(&mut r, &p), "▶ SHA256:abcdefgh: hi\n");
        r.roster
            .update(&[entry(&json!({"client_id":"me","device":"laptop"}))], None);
        let p = json!({"type":"relay.prompt","prompt_id":"p","client_id":"me","device":"laptop","content":"x"});
        assert_eq!(show(&mut r, &p), "▶ laptop (you): x\n");
    }

    #[test]
    fn results_states_exits_and_turns() {
        let mut r = r();
        let ok = json!({"type":"result","is_error":false,"duration_ms":1500});
        assert_eq!(show(&mut r, &ok), "✓ done in 1.5 s\n");
        let bad =
            json!({"type":"result","is_error":true,"subtype":"error_max_turns","errors":["boom"]});
        assert_eq!(
            show(&mut r, &bad),
            "✗ turn failed (error_max_turns): boom\n"
        );
        let int = json!({"type":"result","is_error":true,"terminal_reason":"aborted_streaming","errors":["diag"]});
        assert_eq!(
            show(&mut r, &int),
            "✗ turn interrupted (aborted_streaming)\n"
        );
        let st = json!({"type":"relay.state","state":"restarting","detail":"agent crashed"});
        assert_eq!(show(&mut r, &st), "· restarting (agent crashed)\n");
        let ex = json!({"type":"relay.agent_exit","cause":"crashed","code":3,"signal":null,"restarting":true});
        assert_eq!(
            show(&mut r, &ex),
            "· the agent exited with exit code 3; restarting\n"
        );
        let ex = json!({"type":"relay.agent_exit","cause":"hung","code":null,"signal":"SIGKILL","restarting":false});
        assert_eq!(
            show(&mut r, &ex),
            "· the agent hung and was killed by SIGKILL\n"
        );
        let ab = json!({"type":"relay.turn","prompt_id":"p","phase":"aborted","detail":"server_stopped"});
        assert_eq!(show(&mut r, &ab), "✗ turn aborted (server_stopped)\n");
        let st = json!({"type":"relay.turn","prompt_id":"p","phase":"started"});
        assert_eq!(show(&mut r, &st), "");
        let dr = json!({"type":"relay.dropped","bytes":99});
        assert!(show(&mut r, &dr).contains("99 bytes"));
    }

    #[test]
    fn permission_requests_and_their_answers() {
        let mut r = r();
        r.roster
            .update(&[entry(&json!({"client_id":"c1","device":"laptop"}))], None);
        let req = json!({"type":"control_request","request_id":"r1","request":{
            "subtype":"can_use_tool","tool_name":"Bash","input":{"command":"ls"},"description":"List files"}});
        assert_eq!(show(&mut r, &req), "? permission: Bash ls\n  List files\n");
        let res = json!({"type":"relay.resolved","request_id":"r1","client_id":"c1","response":{"behavior":"allow"}});
        assert_eq!(show(&mut r, &res), "");
        assert_eq!(
            resolved(&mut r, &res, Some(&req)),
            "✓ Bash allowed by laptop\n"
        );
        let res = json!({"type":"relay.resolved","request_id":"r1","client_id":"relay","response":{"behavior":"deny","message":"no answer within 5 s"}});
        assert_eq!(
            resolved(&mut r, &res, Some(&req)),
            "✗ Bash denied by the relay (timeout): no answer within 5 s\n"
        );
        assert_eq!(
            r.cancelled("agent_restarted", Some(&req)),
            "· Bash permission request cancelled (agent_restarted)\n"
        );
    }

    #[test]
    fn plans_and_questions_are_shown_as_text_escaped() {
        let mut r = r();
        let plan = json!({"type":"control_request","request_id":"r1","request":{"subtype":"can_use_tool",
            "tool_name":"ExitPlanMode","input":{"plan":"# Fix\n- step \u{1b}]0;x\u{7}\u{202e}one","planFilePath":"/p"}}});
        let text = show(&mut r, &plan);
        assert_eq!(
            text,
            "? the agent's plan, for approval:\n  Fix\n    • step ]0;xone\n"
        );
        let empty = json!({"type":"control_request","request_id":"r2","request":{"subtype":"can_use_tool",
            "tool_name":"ExitPlanMode","input":{}}});
        assert!(show(&mut r, &empty).contains("carries no plan text"));
        // `relay.plan` repeats a plan shown with its request: not printed twice;
        // the plan of a request that carried none is printed.
        let again = json!({"type":"relay.plan","request_id":"r1","plan":"# Fix"});
        assert_eq!(show(&mut r, &again), "");
        let fetched = json!({"type":"relay.plan","request_id":"r2","plan":"- from the plan file"});
        assert!(show(&mut r, &fetched).contains("• from the plan file"));
        let ask = json!({"type":"control_request","request_id":"r3","request":{"subtype":"can_use_tool",
            "tool_name":"AskUserQuestion","input":{"questions":[{"question":"Pick\u{1b}[2J","header":"H","multiSelect":false,
            "options":[{"label":"A","description":"first"}]}]}}});
        let text = show(&mut r, &ask);
        assert_eq!(
            text,
            "? the agent asks:\n  Q1 [H] Pick\\u{1b}[2J\n    1. A — first\n"
        );
    }

    #[test]
    fn control_characters_are_stripped() {
        let mut r = r();
        assert_eq!(show(&mut r, &delta("a\x1b[2Jb\tc")), "a[2Jb    c");
    }

    #[test]
    fn bidi_controls_are_stripped_from_agent_text() {
        let mut r = r();
        assert_eq!(show(&mut r, &delta("x\u{202e}y\u{2066}z\u{9b}")), "xyz");
    }

    #[test]
    fn peer_chosen_names_and_reasons_are_escaped_on_one_line() {
        let mut r = r();
        let evil = "ph\none\u{1b}[2J\u{202e}";
        let out = r.presence(&pres(
            json!({"joined":[{"client_id":"c9","device": evil}],"left":[],"count":1}),
        ));
        assert_eq!(out, "· ph\\none\\u{1b}[2J\\u{202e} joined\n");
        let p = json!({"type":"relay.prompt","prompt_id":"p","client_id":"c8","device":evil,"content":"hi"});
        let out = show(&mut r, &p);
        assert_eq!(out.matches('\n').count(), 1, "{out:?}");
        assert!(!out.contains('\u{1b}') && !out.contains('\u{202e}'));
        let out = r.notice("the server closed the connection: bye\n\u{1b}]0;pwned\u{7}");
        assert_eq!(
            out,
            "ccrelay: the server closed the connection: bye\n\\u{1b}]0;pwned\\u{7}\n"
        );
    }

    #[test]
    fn presence_reports_joins_and_leaves() {
        let mut r = r();
        r.roster.own_id = "me".into();
        let me = json!({"client_id":"me","device":"laptop"});
        let phone = json!({"client_id":"c2","device":"phone"});
        let tablet = json!({"client_id":"c3","device":"tablet"});
        r.roster.update(&[entry(&me)], Some(1));
        // The own frame after attach (full list).
        assert_eq!(
            r.presence(&pres(
                json!({"joined":[me],"left":[],"count":1,"clients":[me]})
            )),
            ""
        );
        // Full list.
        assert_eq!(
            r.presence(&pres(
                json!({"joined":[phone],"left":[],"count":2,"clients":[me, phone]})
            )),
            "· phone joined\n"
        );
        // Deltas only (as with more than 32 attached).
        assert_eq!(
            r.presence(&pres(json!({"joined":[tablet],"left":["c2"],"count":2}))),
            "· tablet joined\n· phone left\n"
        );
        assert_eq!(r.roster.view().present(), ["me", "c3"]);
        assert_eq!(
            r.presence(&pres(
                json!({"joined":[],"left":[],"count":1,"clients":[me]})
            )),
            "· tablet left\n"
        );
        // Only a count (more than 256 attached).
        assert_eq!(
            r.presence(&pres(json!({"count":300}))),
            "· 300 clients attached\n"
        );
        assert!(!r.roster.view().complete());
    }

    #[test]
    fn colours_only_when_asked() {
        let mut r = Renderer::new(true);
        let ok = json!({"type":"result","is_error":false});
        assert_eq!(show(&mut r, &ok), "\x1b[32m✓ done\x1b[0m\n");
    }

    #[test]
    fn tool_summaries_pick_the_field_that_says_what_the_tool_does() {
        let s = |name: &str, input: Value| tool_summary(name, &input);
        assert_eq!(s("Read", json!({"file_path":"/etc/hosts"})), "/etc/hosts");
        assert_eq!(
            s("NotebookEdit", json!({"notebook_path":"a.ipynb"})),
            "a.ipynb"
        );
        assert_eq!(s("Grep", json!({"pattern":"fn main"})), "fn main");
        assert_eq!(
            s("WebFetch", json!({"url":"https://x.test/"})),
            "https://x.test/"
        );
        assert_eq!(s("WebSearch", json!({"query":"rust"})), "rust");
        assert_eq!(s("Task", json!({"description":"review"})), "review");
        // Unknown tools show their input as JSON; an empty input shows nothing.
        assert_eq!(s("Custom", json!({"n":1})), r#"{"n":1}"#);
        assert_eq!(s("Custom", json!({})), "");
        // Whitespace is folded to one line and a long summary is cut with an ellipsis.
        assert_eq!(s("Bash", json!({"command":"a\n  b\tc"})), "a b c");
        let long = "x".repeat(SUMMARY_CHARS + 10);
        let cut = s("Bash", json!({ "command": long }));
        assert_eq!(cut.chars().count(), SUMMARY_CHARS);
        assert!(cut.ends_with('…'), "{cut}");
    }

    #[test]
    fn prompt_content_text_of_every_shape() {
        assert_eq!(content_text(&json!("plain")), "plain");
        assert_eq!(
            content_text(&json!([{"type":"text","text":"look"},{"type":"image"},{"x":1}])),
            "look [image] "
        );
        assert_eq!(content_text(&Value::Null), "");
        assert_eq!(content_text(&json!(42)), "42");
    }

    #[test]
    fn bookkeeping_is_silent_and_unknown_events_are_named() {
        let mut r = r();
        for kind in ["command_lifecycle", "keep_alive", "rate_limit_event"] {
            assert_eq!(show(&mut r, &json!({ "type": kind })), "", "{kind}");
        }
        for sub in ["init", "status", "hook_started", "hook_response"] {
            assert_eq!(show(&mut r, &json!({"type":"system","subtype":sub})), "");
        }
        assert_eq!(
            show(
                &mut r,
                &json!({"type":"system","subtype":"compact_boundary"})
            ),
            "· [system compact_boundary]\n"
        );
        assert_eq!(
            show(&mut r, &json!({"type":"brand_new\u{1b}"})),
            "· [brand_new]\n",
            "control characters of an unknown type are dropped"
        );
        assert_eq!(
            show(
                &mut r,
                &json!({"type":"control_cancel_request","request_id":"r"})
            ),
            "· the agent withdrew its request\n"
        );
        assert_eq!(
            show(
                &mut r,
                &json!({"type":"control_request","request":{"subtype":"mcp_message"}})
            ),
            "? the agent asks: mcp_message\n"
        );
        let resolved =
            json!({"type":"relay.resolved","request_id":"r","client_id":"c","response":{}});
        assert_eq!(show(&mut r, &resolved), "");
        let cancelled = json!({"type":"relay.cancelled","request_id":"r","reason":"x"});
        assert_eq!(show(&mut r, &cancelled), "");
    }

    #[test]
    fn thinking_is_dim_and_other_deltas_are_silent() {
        let mut r = Renderer::new(true);
        let think = json!({"type":"stream_event","event":{"type":"content_block_delta","index":0,
            "delta":{"type":"thinking_delta","thinking":"hmm"}}});
        assert_eq!(show(&mut r, &think), "\x1b[2mhmm\x1b[0m");
        let json_delta = json!({"type":"stream_event","event":{"type":"content_block_delta","index":1,
            "delta":{"type":"input_json_delta","partial_json":"{"}}});
        assert_eq!(show(&mut r, &json_delta), "");
        assert_eq!(
            show(&mut r, &delta("")),
            "",
            "an empty delta prints nothing"
        );
        let other = json!({"type":"stream_event","event":{"type":"ping"}});
        assert_eq!(show(&mut r, &other), "");
        // A thinking block not streamed is shown whole, dim.
        let mut r = Renderer::new(false);
        let full = json!({"type":"assistant","message":{"id":"m9","content":[{"type":"thinking","thinking":"plan"}]}});
        assert_eq!(show(&mut r, &full), "plan\n");
    }

    #[test]
    fn user_lines_tool_results_and_replays() {
        let mut r = r();
        let replay = json!({"type":"user","isReplay":true,"message":{"content":"again"}});
        assert_eq!(show(&mut r, &replay), "");
        let text = json!({"type":"user","message":{"content":"typed  in\nthe CLI"}});
        assert_eq!(show(&mut r, &text), "typed in the CLI\n");
        let blocks = json!({"type":"user","message":{"content":[
            {"type":"text","text":"note"},
            {"type":"tool_result","tool_use_id":"t","content":"  \n"},
            {"type":"image"}]}});
        assert_eq!(show(&mut r, &blocks), "note\n  ⎿ (no output)\n");
    }

    #[test]
    fn answers_exits_and_server_errors_read_as_sentences() {
        let mut r = r();
        r.roster
            .update(&[entry(&json!({"client_id":"c1","device":"phone"}))], None);
        let req = json!({"type":"control_request","request":{"subtype":"can_use_tool","tool_name":"Edit","input":{"file_path":"a.rs"}}});
        let always = json!({"client_id":"c1","response":{"behavior":"allow","updatedPermissions":[{"type":"addRules"}]}});
        assert_eq!(
            resolved(&mut r, &always, Some(&req)),
            "✓ Edit always allowed by phone\n"
        );
        let with_msg =
            json!({"client_id":"c1","response":{"behavior":"deny","message":"use git mv"}});
        assert_eq!(
            resolved(&mut r, &with_msg, Some(&req)),
            "✗ Edit denied by phone: use git mv\n"
        );
        let odd = json!({"client_id":"c1","response":{"behavior":"ask"}});
        assert_eq!(
            resolved(&mut r, &odd, None),
            "· request answered by phone\n"
        );
        assert_eq!(
            r.cancelled("", None),
            "· request permission request cancelled\n"
        );
        let stopped = json!({"type":"relay.agent_exit","cause":"stopped","code":0,"signal":null,"restarting":false});
        assert_eq!(
            show(&mut r, &stopped),
            "· the agent was stopped with exit code 0\n"
        );
        let other = json!({"type":"relay.agent_exit","cause":"eof","code":null,"signal":null,"restarting":false});
        assert_eq!(show(&mut r, &other), "· the agent ended\n");
        let aborted = json!({"type":"relay.turn","prompt_id":"p","phase":"aborted"});
        assert_eq!(show(&mut r, &aborted), "✗ turn aborted\n");
        let failed = json!({"type":"result","is_error":true});
        assert_eq!(show(&mut r, &failed), "✗ turn failed (error)\n");
        assert_eq!(
            r.server_error("bad_request", "unknown\nfield"),
            "server error bad_request: unknown field\n"
        );
        let st = json!({"type":"relay.state","state":"failed"});
        assert_eq!(show(&mut r, &st), "· failed\n");
    }
}
