//! The Claude Code CLI's own controls over stream-json (docs/protocol.md §10.1):
//! the control requests the relay writes to change or query the running agent,
//! and typed parsers for the CLI's answers and for the lines that report its
//! catalog, mode, model and limits.
//!
//! Every shape here was recorded from the pinned CLI (tests/fixtures/cli-controls,
//! re-recorded by the `cli_controls` integration tests); the unit tests below
//! parse every line of those recordings. Unknown fields are ignored, so a newer
//! CLI that adds fields still parses; a missing required field is an error the
//! caller reports, never a panic.

use ccrelay_protocol::catalog::{CatalogCommand, CatalogModel, ContextUsage, RateLimit};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A permission mode, in the CLI's spelling (`set_permission_mode`, `--permission-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PermissionMode {
    Default,
    AcceptEdits,
    Plan,
    BypassPermissions,
    DontAsk,
    Auto,
}

impl PermissionMode {
    /// Every mode the pinned CLI accepts (its refusal text lists the same six).
    pub const ALL: [PermissionMode; 6] = [
        PermissionMode::Default,
        PermissionMode::AcceptEdits,
        PermissionMode::Plan,
        PermissionMode::BypassPermissions,
        PermissionMode::DontAsk,
        PermissionMode::Auto,
    ];

    /// The CLI's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            PermissionMode::Default => "default",
            PermissionMode::AcceptEdits => "acceptEdits",
            PermissionMode::Plan => "plan",
            PermissionMode::BypassPermissions => "bypassPermissions",
            PermissionMode::DontAsk => "dontAsk",
            PermissionMode::Auto => "auto",
        }
    }

    /// The mode named `name`, if the CLI knows it.
    pub fn parse(name: &str) -> Option<PermissionMode> {
        PermissionMode::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Modes that let tools run without a person's answer (docs/protocol.md §10
    /// gates them behind `--allow-bypass-permissions`). The CLI itself refuses
    /// `bypassPermissions` unless launched with the dangerous flag, but accepts
    /// `auto` from any host.
    pub fn runs_tools_unasked(self) -> bool {
        matches!(
            self,
            PermissionMode::BypassPermissions | PermissionMode::Auto
        )
    }
}

/// How much detail `get_context_usage` computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextDetail {
    /// From the last response's usage and local estimates (no extra API calls).
    Summary,
    /// Counts each category with the token-count API (the CLI's default).
    Full,
}

/// The settings `apply_flag_settings` merges into the CLI's flag layer; the relay
/// uses it only for the effort level (the CLI has no `set_effort`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlagSettings {
    #[serde(rename = "effortLevel")]
    pub effort_level: String,
}

/// A control request the relay sends to the agent (the `request` object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "subtype", rename_all = "snake_case")]
pub enum HostControl {
    /// Answered `{"mode":"<mode now in effect>"}`, or refused (`invalid_mode`,
    /// `bypass_not_launched`); the CLI then emits `system/status` with `permissionMode`.
    SetPermissionMode { mode: PermissionMode },
    /// Any string (alias or id); null resets to the session default. The CLI checks
    /// an unknown id with a one-token API call: answered `{"model":"<resolved id>"}`,
    /// or refused (`not_found`, `check_failed`) naming the model still in effect.
    SetModel { model: Option<String> },
    /// A budget, or null for the session default; answered with no payload.
    SetMaxThinkingTokens { max_thinking_tokens: Option<u64> },
    /// The effort level (`low` … `max`); answered with no payload; the next API
    /// request carries `output_config.effort`.
    ApplyFlagSettings { settings: FlagSettings },
    /// Answered with [`ContextUsageAnswer`].
    GetContextUsage {
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<ContextDetail>,
    },
    /// Answered with [`PlanAnswer`].
    GetPlan,
    /// Answered `{"still_queued":[…]}`.
    Interrupt,
}

#[derive(Serialize)]
struct ControlRequestLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    request_id: &'a str,
    request: &'a HostControl,
}

/// The stdin line for `request` (one line of JSON, no newline).
pub fn control_request(request_id: &str, request: &HostControl) -> String {
    let line = ControlRequestLine {
        kind: "control_request",
        request_id,
        request,
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// Why an agent line could not be read as the expected answer or report.
#[derive(Debug, thiserror::Error)]
pub enum ControlsError {
    #[error("not a JSON line the CLI sends: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a control_response")]
    NotAnAnswer,
    #[error("the answer has no payload")]
    NoPayload,
}

/// The `response` envelope of a `control_response`.
#[derive(Debug, Clone, Deserialize)]
pub struct ControlAnswer {
    /// `success` or `error`.
    pub subtype: String,
    pub request_id: String,
    /// The payload of a success (absent for requests answered without one).
    #[serde(default)]
    pub response: Option<Value>,
    /// The refusal text of an error.
    #[serde(default)]
    pub error: Option<String>,
    /// The CLI's refusal code (`invalid_mode`, `bypass_not_launched`, `not_found`, …).
    #[serde(default)]
    pub error_code: Option<String>,
    /// On a refused `set_model`: the model still in effect.
    #[serde(default)]
    pub model: Option<String>,
}

/// A control request the CLI refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error: String,
    pub code: Option<String>,
    pub model_in_effect: Option<String>,
}

#[derive(Deserialize)]
struct AnswerLine {
    #[serde(rename = "type")]
    kind: String,
    response: Option<ControlAnswer>,
}

/// Reads a `control_response` line (the answer to one of the relay's requests).
pub fn parse_control_answer(line: &[u8]) -> Result<ControlAnswer, ControlsError> {
    let parsed: AnswerLine = serde_json::from_slice(line)?;
    if parsed.kind != "control_response" {
        return Err(ControlsError::NotAnAnswer);
    }
    parsed.response.ok_or(ControlsError::NotAnAnswer)
}

impl ControlAnswer {
    /// The success payload (`Value::Null` when the CLI sent none), or its refusal.
    pub fn outcome(self) -> Result<Value, Refusal> {
        if self.subtype == "success" {
            return Ok(self.response.unwrap_or(Value::Null));
        }
        Err(Refusal {
            error: self
                .error
                .unwrap_or_else(|| format!("answered {}", self.subtype)),
            code: self.error_code,
            model_in_effect: self.model,
        })
    }

    /// The success payload as `T`.
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, ControlsError> {
        let value = self.response.clone().ok_or(ControlsError::NoPayload)?;
        Ok(serde_json::from_value(value)?)
    }
}

/// `set_permission_mode`'s answer: the mode now in effect.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ModeAnswer {
    pub mode: String,
}

/// `set_model`'s answer: the model id now in effect.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ModelAnswer {
    pub model: String,
}

/// `interrupt`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InterruptAnswer {
    #[serde(default)]
    pub still_queued: Vec<String>,
}

/// `get_plan`'s answer: the plan file of plan mode, when one was written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PlanAnswer {
    pub exists: bool,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
}

/// `get_context_usage`'s answer (the CLI also sends a grid for its own TUI, ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextUsageAnswer {
    pub total_tokens: u64,
    pub max_tokens: u64,
    #[serde(default)]
    pub raw_max_tokens: Option<u64>,
    #[serde(default)]
    pub percentage: Option<f64>,
    #[serde(default)]
    pub categories: Vec<ContextCategory>,
}

/// One category of [`ContextUsageAnswer`] (system prompt, tools, messages, free space, …).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ContextCategory {
    pub name: String,
    pub tokens: u64,
    #[serde(default)]
    pub kind: Option<String>,
}

impl ContextUsageAnswer {
    /// As `session.usage` gives it.
    pub fn to_wire(&self) -> ContextUsage {
        ContextUsage {
            used_tokens: self.total_tokens,
            max_tokens: self.max_tokens,
        }
    }
}

/// A slash command as the CLI lists it (`initialize`, `system/commands_changed`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCommand {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub argument_hint: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// A model as the CLI lists it (`initialize`, `list_models`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentModel {
    pub value: String,
    #[serde(default)]
    pub resolved_model: Option<String>,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub supported_effort_levels: Vec<String>,
}

/// The parts of `initialize`'s answer the catalog needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InitializeAnswer {
    #[serde(default)]
    pub commands: Vec<AgentCommand>,
    #[serde(default)]
    pub models: Vec<AgentModel>,
    #[serde(default)]
    pub current_permission_mode: Option<String>,
    #[serde(default)]
    pub output_style: Option<String>,
    #[serde(default)]
    pub available_output_styles: Vec<String>,
    #[serde(default)]
    pub claude_code_version: Option<String>,
}

/// `system/init`, sent at the start of every turn.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SystemInit {
    pub session_id: String,
    pub model: String,
    #[serde(rename = "permissionMode")]
    pub permission_mode: String,
    #[serde(default)]
    pub slash_commands: Vec<String>,
    /// The CLI's own list of commands bound to a local terminal ("phone/remote
    /// UIs should hide these"); absent when empty.
    #[serde(default)]
    pub terminal_slash_commands: Vec<String>,
    #[serde(default)]
    pub claude_code_version: Option<String>,
}

/// `system/status`: the request phase, and after a mode change the mode in effect.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SystemStatus {
    /// `requesting`, `compacting`, or null.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, rename = "permissionMode")]
    pub permission_mode: Option<String>,
    /// After `/compact`: `success` or the failure.
    #[serde(default)]
    pub compact_result: Option<String>,
}

/// `system/commands_changed`: the full new command list (replaces the old one).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CommandsChanged {
    pub commands: Vec<AgentCommand>,
}

/// `rate_limit_event`'s `rate_limit_info` (the pinned CLI sends it for
/// subscription logins and gateway clients, not for an API key's 429;
/// docs/protocol.md §10.1).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitInfo {
    /// `allowed`, `allowed_warning` or `rejected`.
    pub status: String,
    /// Unix seconds.
    #[serde(default)]
    pub resets_at: Option<i64>,
    /// `five_hour`, `seven_day`, …
    #[serde(default)]
    pub rate_limit_type: Option<String>,
    #[serde(default)]
    pub utilization: Option<f64>,
}

#[derive(Deserialize)]
struct RateLimitLine {
    rate_limit_info: RateLimitInfo,
}

impl RateLimitInfo {
    /// As `session.usage` gives it (`resets_at` in RFC 3339).
    pub fn to_wire(&self) -> RateLimit {
        let resets_at = self.resets_at.and_then(|secs| {
            time::OffsetDateTime::from_unix_timestamp(secs)
                .ok()?
                .format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
        RateLimit {
            resets_at,
            status: Some(self.status.clone()),
        }
    }
}

/// An agent line that reports a catalog, mode, model or limit.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentReport {
    Init(SystemInit),
    Status(SystemStatus),
    CommandsChanged(CommandsChanged),
    RateLimit(RateLimitInfo),
}

#[derive(Deserialize)]
struct ReportHead {
    #[serde(rename = "type")]
    kind: Option<String>,
    subtype: Option<String>,
}

/// Reads `system/init`, `system/status`, `system/commands_changed` and
/// `rate_limit_event`; `None` for every other line (and for non-JSON).
pub fn parse_report(line: &[u8]) -> Option<Result<AgentReport, ControlsError>> {
    let head: ReportHead = serde_json::from_slice(line).ok()?;
    let parsed = match (head.kind.as_deref(), head.subtype.as_deref()) {
        (Some("system"), Some("init")) => serde_json::from_slice(line).map(AgentReport::Init),
        (Some("system"), Some("status")) => serde_json::from_slice(line).map(AgentReport::Status),
        (Some("system"), Some("commands_changed")) => {
            serde_json::from_slice(line).map(AgentReport::CommandsChanged)
        }
        (Some("rate_limit_event"), _) => serde_json::from_slice::<RateLimitLine>(line)
            .map(|l| AgentReport::RateLimit(l.rate_limit_info)),
        _ => return None,
    };
    Some(parsed.map_err(ControlsError::from))
}

/// Commands the CLI lists that are no use to a remote client although the CLI
/// did not tag them terminal-only: its internal ones (a `__` prefix).
fn internal_command(name: &str) -> bool {
    name.starts_with("__")
}

/// What the agent offers, for `session.catalog`: built from `initialize`, kept
/// current by `system/init` (terminal-only names) and `system/commands_changed`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    commands: Vec<AgentCommand>,
    models: Vec<AgentModel>,
    terminal_only: Vec<String>,
    /// The permission mode the agent last reported.
    pub permission_mode: Option<String>,
    /// The model id the agent last reported (`system/init`).
    pub model_in_effect: Option<String>,
}

impl Catalog {
    /// From `initialize`'s success payload.
    pub fn from_initialize(answer: &InitializeAnswer) -> Catalog {
        Catalog {
            commands: answer.commands.clone(),
            models: answer.models.clone(),
            terminal_only: Vec::new(),
            permission_mode: answer.current_permission_mode.clone(),
            model_in_effect: None,
        }
    }

    /// Applies a report; true when what clients see of the catalog changed.
    pub fn apply(&mut self, report: &AgentReport) -> bool {
        let before = self.clone();
        match report {
            AgentReport::Init(init) => {
                self.terminal_only = init.terminal_slash_commands.clone();
                self.permission_mode = Some(init.permission_mode.clone());
                self.model_in_effect = Some(init.model.clone());
            }
            AgentReport::Status(status) => {
                if let Some(mode) = &status.permission_mode {
                    self.permission_mode = Some(mode.clone());
                }
            }
            AgentReport::CommandsChanged(changed) => self.commands = changed.commands.clone(),
            AgentReport::RateLimit(_) => {}
        }
        self.commands() != before.commands() || self.models() != before.models()
    }

    /// The commands a remote client may offer: the CLI's list without the ones it
    /// tagged terminal-only and without its internal ones.
    pub fn commands(&self) -> Vec<CatalogCommand> {
        self.commands
            .iter()
            .filter(|c| !internal_command(&c.name) && !self.terminal_only.contains(&c.name))
            .map(|c| CatalogCommand {
                name: c.name.clone(),
                description: c.description.clone(),
                argument_hint: c.argument_hint.clone(),
            })
            .collect()
    }

    /// The models, as `session.catalog` gives them.
    pub fn models(&self) -> Vec<CatalogModel> {
        self.models
            .iter()
            .map(|m| CatalogModel {
                value: m.value.clone(),
                display_name: m.display_name.clone(),
                description: m.description.clone(),
                effort_levels: m.supported_effort_levels.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixtures_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/cli-controls")
    }

    /// Every recorded transcript: (file name, entries).
    fn transcripts() -> Vec<(String, Vec<Value>)> {
        let mut out = Vec::new();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
            .expect("tests/fixtures/cli-controls exists")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).expect("readable");
            let entries = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("a transcript line is JSON"))
                .collect();
            out.push((path.display().to_string(), entries));
        }
        assert!(out.len() >= 10, "transcripts missing: {}", out.len());
        out
    }

    fn stdout_lines(entries: &[Value]) -> impl Iterator<Item = (String, &Value)> {
        entries
            .iter()
            .filter(|e| e["dir"] == "stdout")
            .map(|e| (e["msg"].to_string(), &e["msg"]))
    }

    /// The answer to `request_id` in the transcripts.
    fn answer(request_id: &str) -> ControlAnswer {
        for (_, entries) in transcripts() {
            for (line, msg) in stdout_lines(&entries) {
                if msg["type"] == "control_response" && msg["response"]["request_id"] == request_id
                {
                    return parse_control_answer(line.as_bytes()).expect("parses");
                }
            }
        }
        panic!("no answer to {request_id} recorded");
    }

    #[test]
    fn every_recorded_answer_and_report_parses() {
        let (mut answers, mut reports) = (0, 0);
        for (file, entries) in transcripts() {
            for (line, msg) in stdout_lines(&entries) {
                if msg["type"] == "control_response" {
                    parse_control_answer(line.as_bytes())
                        .unwrap_or_else(|e| panic!("{file}: {e}: {line}"));
                    answers += 1;
                }
                match parse_report(line.as_bytes()) {
                    Some(Ok(_)) => reports += 1,
                    Some(Err(e)) => panic!("{file}: {e}: {line}"),
                    None => {}
                }
            }
        }
        assert!(
            answers > 30 && reports > 30,
            "{answers} answers, {reports} reports"
        );
    }

    #[test]
    fn recorded_requests_are_the_lines_this_module_builds() {
        let mut checked = 0;
        for (_, entries) in transcripts() {
            for e in entries.iter().filter(|e| e["dir"] == "stdin") {
                let msg = &e["msg"];
                if msg["type"] != "control_request" {
                    continue;
                }
                let id = msg["request_id"].as_str().expect("request_id");
                let req = &msg["request"];
                let built = match req["subtype"].as_str() {
                    Some("set_permission_mode") => {
                        match PermissionMode::parse(req["mode"].as_str().unwrap_or_default()) {
                            Some(mode) => HostControl::SetPermissionMode { mode },
                            None => continue, // the recorded refusal of a mode the CLI does not know
                        }
                    }
                    Some("set_model") => HostControl::SetModel {
                        model: req["model"].as_str().map(str::to_string),
                    },
                    Some("set_max_thinking_tokens") => HostControl::SetMaxThinkingTokens {
                        max_thinking_tokens: req["max_thinking_tokens"].as_u64(),
                    },
                    Some("get_plan") => HostControl::GetPlan,
                    Some("get_context_usage") => HostControl::GetContextUsage {
                        detail: match req["detail"].as_str() {
                            Some("summary") => Some(ContextDetail::Summary),
                            Some("full") => Some(ContextDetail::Full),
                            _ => None,
                        },
                    },
                    Some("apply_flag_settings") => HostControl::ApplyFlagSettings {
                        settings: FlagSettings {
                            effort_level: req["settings"]["effortLevel"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                        },
                    },
                    _ => continue,
                };
                let line: Value = serde_json::from_str(&control_request(id, &built)).unwrap();
                assert_eq!(&line, msg, "built line differs from the recorded one");
                checked += 1;
            }
        }
        assert!(checked >= 12, "{checked}");
    }

    #[test]
    fn initialize_catalog_lists_compact_and_models_and_filters_terminal_commands() {
        let init = answer("req_init");
        let payload: InitializeAnswer = init.payload().expect("initialize payload");
        let mut catalog = Catalog::from_initialize(&payload);
        assert_eq!(catalog.permission_mode.as_deref(), Some("default"));
        let compact = catalog
            .commands()
            .into_iter()
            .find(|c| c.name == "compact")
            .expect("compact listed");
        assert!(!compact.description.is_empty());
        assert!(!compact.argument_hint.is_empty());
        let sonnet = catalog
            .models()
            .into_iter()
            .find(|m| m.value == "sonnet")
            .expect("sonnet listed");
        assert!(sonnet.effort_levels.iter().any(|l| l == "low"));
        assert!(!catalog.commands().iter().any(|c| c.name.starts_with("__")));

        // system/init of the same recording names the terminal-only commands.
        let (_, entries) = transcripts()
            .into_iter()
            .find(|(f, _)| f.ends_with("initialize.jsonl"))
            .expect("initialize.jsonl");
        let (line, _) = stdout_lines(&entries)
            .find(|(_, m)| m["subtype"] == "init")
            .expect("system/init");
        let Some(Ok(report)) = parse_report(line.as_bytes()) else {
            panic!("system/init does not parse");
        };
        let AgentReport::Init(sys) = &report else {
            panic!("{report:?}");
        };
        assert!(!sys.terminal_slash_commands.is_empty());
        let terminal = sys.terminal_slash_commands[0].clone();
        assert!(catalog.commands().iter().any(|c| c.name == terminal));
        assert!(
            catalog.apply(&report),
            "hiding terminal commands changes the catalog"
        );
        assert!(!catalog.commands().iter().any(|c| c.name == terminal));
        assert!(catalog.commands().iter().any(|c| c.name == "compact"));
        assert_eq!(catalog.model_in_effect.as_deref(), Some("claude-opus-5-5"));
    }

    #[test]
    fn mode_answers_and_refusals() {
        let plan: ModeAnswer = answer("req_mode_plan").payload().unwrap();
        assert_eq!(plan.mode, "plan");
        let bogus = answer("req_mode_bogus").outcome().unwrap_err();
        assert_eq!(bogus.code.as_deref(), Some("invalid_mode"));
        assert!(bogus.error.contains("must be one of"), "{}", bogus.error);
        let bypass = answer("req_mode_bypass").outcome().unwrap_err();
        assert_eq!(bypass.code.as_deref(), Some("bypass_not_launched"));
        let auto: ModeAnswer = answer("req_mode_auto").payload().unwrap();
        assert_eq!(auto.mode, "auto");
        assert!(PermissionMode::Auto.runs_tools_unasked());
        assert!(!PermissionMode::Plan.runs_tools_unasked());
        for mode in PermissionMode::ALL {
            assert_eq!(PermissionMode::parse(mode.as_str()), Some(mode));
            assert!(
                bogus.error.contains(mode.as_str()),
                "{mode:?} not in the CLI's list"
            );
        }
    }

    #[test]
    fn model_answers_name_the_model_in_effect() {
        let sonnet: ModelAnswer = answer("req_model_sonnet").payload().unwrap();
        assert_eq!(sonnet.model, "claude-sonnet-5-5");
        let unknown = answer("req_model_unknown").outcome().unwrap_err();
        assert_eq!(unknown.code.as_deref(), Some("not_found"));
        assert_eq!(
            unknown.model_in_effect.as_deref(),
            Some("claude-sonnet-5-5")
        );
        let reset: ModelAnswer = answer("req_model_null").payload().unwrap();
        assert_eq!(reset.model, "claude-opus-5-5");
    }

    #[test]
    fn thinking_and_effort_answers_carry_no_payload() {
        for id in ["req_think_2048", "req_think_null", "req_effort_flag"] {
            assert_eq!(answer(id).outcome(), Ok(Value::Null), "{id}");
        }
    }

    #[test]
    fn context_usage_and_plan_answers() {
        for id in ["req_ctx_summary_0", "req_ctx_summary", "req_ctx_full"] {
            let usage: ContextUsageAnswer = answer(id).payload().unwrap();
            let wire = usage.to_wire();
            assert!(
                wire.used_tokens > 0 && wire.max_tokens >= wire.used_tokens,
                "{id}: {wire:?}"
            );
            assert!(!usage.categories.is_empty());
        }
        let none: PlanAnswer = answer("req_plan").payload().unwrap();
        assert!(!none.exists && none.content.is_none());
        let pending: PlanAnswer = answer("req_plan_pending").payload().unwrap();
        assert!(pending.exists);
        assert!(pending.content.unwrap_or_default().starts_with("# Plan"));
    }

    #[test]
    fn status_reports_the_mode_after_exit_plan_mode() {
        let (_, entries) = transcripts()
            .into_iter()
            .find(|(f, _)| f.ends_with("exit_plan_mode.jsonl"))
            .expect("exit_plan_mode.jsonl");
        let mut catalog = Catalog::default();
        for (line, _) in stdout_lines(&entries) {
            if let Some(Ok(report)) = parse_report(line.as_bytes()) {
                catalog.apply(&report);
            }
        }
        assert_eq!(catalog.permission_mode.as_deref(), Some("default"));
    }

    #[test]
    fn rate_limit_event_from_the_cli_schema() {
        // The CLI's schema (with `utilization`), and as recorded from a gateway client.
        let line = br#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1767225600,"rateLimitType":"five_hour","utilization":1.0},"uuid":"u","session_id":"s"}"#;
        let Some(Ok(AgentReport::RateLimit(info))) = parse_report(line) else {
            panic!("rate_limit_event does not parse");
        };
        let wire = info.to_wire();
        assert_eq!(wire.resets_at.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(wire.status.as_deref(), Some("rejected"));
        let (_, gateway) = transcripts()
            .into_iter()
            .find(|(name, _)| name.ends_with("usage_limit_gateway.jsonl"))
            .expect("the gateway transcript");
        let recorded = gateway
            .iter()
            .find(|e| e["msg"]["type"] == "rate_limit_event")
            .map(|e| e["msg"].to_string())
            .expect("a recorded rate_limit_event");
        let Some(Ok(AgentReport::RateLimit(info))) = parse_report(recorded.as_bytes()) else {
            panic!("the recorded rate_limit_event does not parse: {recorded}");
        };
        assert_eq!(info.status, "rejected");
        assert!(
            info.resets_at.is_some_and(|t| t > 1_700_000_000),
            "{recorded}"
        );
        let changed = br#"{"type":"system","subtype":"commands_changed","commands":[{"name":"compact","description":"d","argumentHint":"<x>"}],"uuid":"u","session_id":"s"}"#;
        let Some(Ok(report)) = parse_report(changed) else {
            panic!("commands_changed does not parse");
        };
        let mut catalog = Catalog::default();
        assert!(catalog.apply(&report));
        assert_eq!(catalog.commands()[0].argument_hint, "<x>");
        assert!(parse_report(b"not json").is_none());
        assert!(parse_report(br#"{"type":"assistant"}"#).is_none());
        assert!(matches!(
            parse_report(br#"{"type":"system","subtype":"init"}"#),
            Some(Err(_))
        ));
        assert!(matches!(
            parse_control_answer(br#"{"type":"user"}"#),
            Err(ControlsError::NotAnAnswer)
        ));
    }

    #[test]
    fn built_requests() {
        let line = control_request(
            "r1",
            &HostControl::SetPermissionMode {
                mode: PermissionMode::AcceptEdits,
            },
        );
        assert_eq!(
            line,
            r#"{"type":"control_request","request_id":"r1","request":{"subtype":"set_permission_mode","mode":"acceptEdits"}}"#
        );
        let v: Value =
            serde_json::from_str(&control_request("r2", &HostControl::Interrupt)).unwrap();
        assert_eq!(v["request"], serde_json::json!({"subtype":"interrupt"}));
        let v: Value = serde_json::from_str(&control_request(
            "r3",
            &HostControl::SetModel { model: None },
        ))
        .unwrap();
        assert_eq!(
            v["request"],
            serde_json::json!({"subtype":"set_model","model":null})
        );
    }
}
