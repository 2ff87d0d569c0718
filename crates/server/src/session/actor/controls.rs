//! Session settings and the agent's own controls (docs/protocol.md §10): the
//! settings in effect and their record in the session's directory, `session.set`
//! applied through the CLI's control requests one at a time, modes the agent
//! changes by itself, the catalog and `session.usage`.
//!
//! The relay's control requests carry ids `req_ctl_<generation>_<n>`; their
//! answers are taken here and never become events (§5).

use super::*;
use crate::agent::controls::{
    self as ctl, AgentReport, Catalog, ContextDetail, FlagSettings, HostControl, InitializeAnswer,
    PermissionMode, RateLimitInfo,
};
use ccrelay_protocol::catalog::{CatalogCommand, CatalogModel};
use ccrelay_protocol::{SessionSettingsJson, SettingsRequest};

/// How long the agent may take to answer one of the relay's control requests.
/// `set_model` of an unknown id makes a one-token API call, hence not shorter.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// The settings in effect, in the session's directory (every start passes them).
const SETTINGS_FILE: &str = "settings.json";
/// The last catalog the agent gave, for `session.catalog` while asleep.
const CATALOG_FILE: &str = "catalog.json";

/// One `session.set` waiting or being applied.
pub(super) struct SetRequest {
    client: ClientHandle,
    id: Option<RequestId>,
    asked: SettingsRequest,
}

/// A setting and the control request that applies it to the running agent.
struct SetStep {
    field: &'static str,
    control: HostControl,
}

/// The `session.set` being applied.
struct SetRun {
    request: SetRequest,
    /// What is in effect so far: the old settings plus every step answered.
    target: SessionSettingsJson,
    changed: Vec<&'static str>,
    steps: VecDeque<SetStep>,
    /// The step sent: its request id, field, and answer deadline.
    sent: Option<(String, &'static str, Instant)>,
}

/// A `session.usage` waiting for `get_context_usage`.
struct UsageWaiter {
    client: ClientHandle,
    id: Option<RequestId>,
    request_id: String,
    deadline: Instant,
}

/// The catalog as stored for a sleeping session.
#[derive(serde::Serialize, serde::Deserialize, Default, Clone)]
struct StoredCatalog {
    commands: Vec<CatalogCommand>,
    models: Vec<CatalogModel>,
}

/// The controls' part of the actor's state.
pub(super) struct Controls {
    settings: Arc<SessionSettingsJson>,
    /// The live catalog of the running agent (none while no agent answered).
    catalog: Option<Catalog>,
    /// The last catalog seen (also after the agent stopped), as stored.
    stored: Option<StoredCatalog>,
    /// `claude_code_version` from `initialize` or `system/init`.
    version: Option<String>,
    model_in_effect: Option<String>,
    rate_limit: Option<RateLimitInfo>,
    counter: u64,
    waiting: VecDeque<SetRequest>,
    running: Option<SetRun>,
    usage: Vec<UsageWaiter>,
    /// Requests whose answers are only logged (settings applied at start).
    quiet: Vec<String>,
    /// `get_plan` requests in flight: (its id, the ExitPlanMode request it is for).
    plans: Vec<(String, String)>,
}

impl Controls {
    /// The settings recorded in `dir`, else `initial`; the last stored catalog.
    pub(super) fn load(dir: &std::path::Path, initial: &SessionSettingsJson) -> Controls {
        let settings = std::fs::read_to_string(dir.join(SETTINGS_FILE))
            .ok()
            .and_then(|t| serde_json::from_str::<SessionSettingsJson>(&t).ok())
            .filter(|s| PermissionMode::parse(&s.permission_mode).is_some())
            .unwrap_or_else(|| initial.clone());
        let stored = std::fs::read_to_string(dir.join(CATALOG_FILE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        Controls {
            settings: Arc::new(settings),
            catalog: None,
            stored,
            version: None,
            model_in_effect: None,
            rate_limit: None,
            counter: 0,
            waiting: VecDeque::new(),
            running: None,
            usage: Vec::new(),
            quiet: Vec::new(),
            plans: Vec::new(),
        }
    }

    pub(super) fn settings(&self) -> Arc<SessionSettingsJson> {
        self.settings.clone()
    }

    /// The earliest answer deadline of the relay's control requests.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let set = self
            .running
            .as_ref()
            .and_then(|r| r.sent.as_ref())
            .map(|s| s.2);
        let usage = self.usage.iter().map(|w| w.deadline).min();
        [set, usage].into_iter().flatten().min()
    }
}

/// The fields of `asked` that differ from `now`, as `relay.settings` names them.
fn differing(asked: &SettingsRequest, now: &SessionSettingsJson) -> Vec<&'static str> {
    let mut out = Vec::new();
    if asked
        .permission_mode
        .as_ref()
        .is_some_and(|m| *m != now.permission_mode)
    {
        out.push("permission_mode");
    }
    if asked.model.is_some() && asked.model != now.model {
        out.push("model");
    }
    if asked.effort.is_some() && asked.effort != now.effort {
        out.push("effort");
    }
    if asked.thinking.is_some() && asked.thinking != now.thinking {
        out.push("thinking");
    }
    if asked.auto_continue.is_some_and(|a| a != now.auto_continue) {
        out.push("auto_continue");
    }
    out
}

/// `asked`'s value of `field` written into `settings`.
fn apply_field(settings: &mut SessionSettingsJson, asked: &SettingsRequest, field: &str) {
    match field {
        "permission_mode" => {
            if let Some(m) = &asked.permission_mode {
                settings.permission_mode = m.clone();
            }
        }
        "model" => settings.model = asked.model.clone(),
        "effort" => settings.effort = asked.effort.clone(),
        "thinking" => settings.thinking = asked.thinking,
        "auto_continue" => settings.auto_continue = asked.auto_continue.unwrap_or(false),
        _ => {}
    }
}

/// Whether the CLI's refusal says it does not know the request at all (an older
/// CLI): the code `unsupported_request` the CLI gives it, or, from CLIs that send
/// no code, a text saying the subtype is unknown.
fn unknown_subtype(refusal: &ctl::Refusal) -> bool {
    match refusal.code.as_deref() {
        Some(code) => code == "unsupported_request",
        None => {
            let text = refusal.error.to_ascii_lowercase();
            text.contains("subtype") && (text.contains("unknown") || text.contains("unsupported"))
        }
    }
}

impl Actor {
    /// The flags of the settings in effect, for the next start.
    pub(super) fn settings_flags(&self) -> Vec<String> {
        crate::session::registry::agent_flags(&self.controls.settings)
    }

    fn next_control_id(&mut self) -> String {
        self.controls.counter += 1;
        format!("req_ctl_{}_{}", self.generation, self.controls.counter)
    }

    /// Write one of the relay's control requests; its id.
    fn send_control(&mut self, control: &HostControl) -> Option<String> {
        let request_id = self.next_control_id();
        let agent = self.agent.as_ref()?;
        agent
            .send(ctl::control_request(&request_id, control))
            .ok()?;
        Some(request_id)
    }

    fn cli_name(&self) -> String {
        match &self.controls.version {
            Some(v) => format!("Claude Code {v}"),
            None => "the agent".into(),
        }
    }

    // ------------------------------------------------------------ relay.plan

    /// A `can_use_tool` just logged: for `ExitPlanMode`, the plan behind it
    /// follows as `relay.plan` (docs/protocol.md §10), from the request's input,
    /// else from the agent's `get_plan` answer.
    pub(super) fn on_permission_request(&mut self, request_id: &str, raw: &RawValue) -> Step {
        let Ok(line) = serde_json::from_str::<Value>(raw.get()) else {
            return Ok(());
        };
        let request = &line["request"];
        if request["subtype"] != "can_use_tool" || request["tool_name"] != "ExitPlanMode" {
            return Ok(());
        }
        if let Some(plan) = request["input"]["plan"].as_str().filter(|p| !p.is_empty()) {
            return self.emit_plan(request_id, plan);
        }
        match self.send_control(&HostControl::GetPlan) {
            Some(id) => {
                self.controls.plans.push((id, request_id.to_string()));
                Ok(())
            }
            None => self.emit_plan(request_id, ""),
        }
    }

    /// `relay.plan` for a request still pending (one answered meanwhile needs none).
    fn emit_plan(&mut self, request_id: &str, plan: &str) -> Step {
        if !self.pending.iter().any(|p| p.request_id == request_id) {
            return Ok(());
        }
        self.emit_relay(json!({"type": "relay.plan", "request_id": request_id, "plan": plan}))
    }

    // ------------------------------------------------------------ session.set

    pub(super) fn set_settings(
        &mut self,
        client: ClientHandle,
        id: Option<RequestId>,
        asked: SettingsRequest,
    ) -> Step {
        if let Some(mode) = asked
            .permission_mode
            .as_deref()
            .and_then(PermissionMode::parse)
            && mode.runs_tools_unasked()
            && !self.settings.agent.allow_bypass
        {
            self.reply_error(
                &client,
                id,
                ErrorCode::Forbidden,
                format!(
                    "permission mode {} is not allowed on this server (it runs without --allow-bypass-permissions)",
                    mode.as_str()
                ),
            );
            return Ok(());
        }
        self.controls
            .waiting
            .push_back(SetRequest { client, id, asked });
        self.next_set()
    }

    /// Start the next waiting `session.set` unless one is being applied or the
    /// agent is starting (it waits for the agent's `initialize` answer).
    fn next_set(&mut self) -> Step {
        while self.controls.running.is_none() {
            if self.agent.is_some() && self.phase != Phase::Ready {
                return Ok(());
            }
            let Some(request) = self.controls.waiting.pop_front() else {
                return Ok(());
            };
            let now = (*self.controls.settings).clone();
            let fields = differing(&request.asked, &now);
            if fields.is_empty() {
                self.reply_set_ok(&request, Vec::new());
                continue;
            }
            if self.phase != Phase::Ready || self.agent.is_none() {
                // Asleep, restarting or failed: recorded now, passed as flags
                // at the next start (docs/protocol.md §10).
                let mut target = now;
                for f in &fields {
                    apply_field(&mut target, &request.asked, f);
                }
                let pending: Vec<&'static str> = fields
                    .iter()
                    .copied()
                    .filter(|f| *f != "auto_continue")
                    .collect();
                self.commit_settings(target, &fields, Some(&request.client.info))?;
                self.reply_set_ok(&request, pending);
                continue;
            }
            let mut steps = VecDeque::new();
            let mut target = now;
            let mut changed = Vec::new();
            for field in &fields {
                let control = match *field {
                    "permission_mode" => request
                        .asked
                        .permission_mode
                        .as_deref()
                        .and_then(PermissionMode::parse)
                        .map(|mode| HostControl::SetPermissionMode { mode }),
                    "model" => Some(HostControl::SetModel {
                        model: request.asked.model.clone(),
                    }),
                    "effort" => request.asked.effort.clone().map(|effort_level| {
                        HostControl::ApplyFlagSettings {
                            settings: FlagSettings { effort_level },
                        }
                    }),
                    "thinking" => Some(HostControl::SetMaxThinkingTokens {
                        max_thinking_tokens: request.asked.thinking,
                    }),
                    // The relay's own setting: nothing to tell the agent.
                    _ => None,
                };
                match control {
                    Some(control) => steps.push_back(SetStep { field, control }),
                    None => {
                        apply_field(&mut target, &request.asked, field);
                        changed.push(*field);
                    }
                }
            }
            self.controls.running = Some(SetRun {
                request,
                target,
                changed,
                steps,
                sent: None,
            });
            self.send_next_step()?;
        }
        Ok(())
    }

    /// Send the running set's next step, or finish it when none is left.
    fn send_next_step(&mut self) -> Step {
        let Some(run) = self.controls.running.as_mut() else {
            return Ok(());
        };
        let Some(step) = run.steps.pop_front() else {
            return self.finish_set(None);
        };
        match self.send_control(&step.control) {
            Some(request_id) => {
                if let Some(run) = self.controls.running.as_mut() {
                    run.sent = Some((request_id, step.field, Instant::now() + CONTROL_TIMEOUT));
                }
                Ok(())
            }
            None => self.finish_set(Some((
                ErrorCode::AgentUnavailable,
                "the agent is not running; try again when it is back".into(),
            ))),
        }
    }

    /// The running set is done (or failed): record what changed, announce it,
    /// answer (after the event), and go on with the next one.
    fn finish_set(&mut self, failure: Option<(ErrorCode, String)>) -> Step {
        let Some(run) = self.controls.running.take() else {
            return Ok(());
        };
        if !run.changed.is_empty() {
            let changed = run.changed.clone();
            self.commit_settings(run.target, &changed, Some(&run.request.client.info))?;
            if changed.contains(&"permission_mode")
                && self.controls.settings.permission_mode
                    == PermissionMode::BypassPermissions.as_str()
            {
                self.allow_all_pending()?;
            }
        }
        match failure {
            None => self.reply_set_ok(&run.request, Vec::new()),
            Some((code, why)) => self.reply_error(&run.request.client, run.request.id, code, why),
        }
        self.next_set()
    }

    /// `ok` with the settings in effect, sent after the step's events.
    fn reply_set_ok(&mut self, request: &SetRequest, pending_start: Vec<&'static str>) {
        let msg = ServerMsg::Ok {
            id: request.id.clone(),
            prompt_id: None,
            queued: None,
            duplicate: None,
            settings: Some((*self.controls.settings).clone()),
            pending_start: Some(pending_start.into_iter().map(String::from).collect()),
            path: None,
        };
        self.deferred.push((request.client.clone(), msg.to_json()));
    }

    /// New settings in effect: recorded in the session's directory, published,
    /// `relay.settings` and an audit line (`by` none: the agent changed them).
    fn commit_settings(
        &mut self,
        settings: SessionSettingsJson,
        changed: &[&'static str],
        by: Option<&crate::session::ClientInfo>,
    ) -> Step {
        let auto_continue_was = self.controls.settings.auto_continue;
        self.controls.settings = Arc::new(settings);
        let body = serde_json::to_vec_pretty(&*self.controls.settings).unwrap_or_default();
        if let Err(e) = crate::datadir::write_atomic(&self.settings.dir.join(SETTINGS_FILE), body) {
            tracing::error!(session = %self.name, error = %e, "cannot record the session's settings");
        }
        let client_id = by.map_or("agent", |c| c.client_id.as_str());
        let fingerprint = by.map(|c| c.fingerprint.as_str());
        let device = by.and_then(|c| c.device.as_deref());
        let mut event = json!({
            "type": "relay.settings",
            "settings": &*self.controls.settings,
            "changed": changed,
            "client_id": client_id,
        });
        if let Some(fp) = fingerprint {
            event["fingerprint"] = Value::from(fp);
        }
        if let Some(d) = device {
            event["device"] = Value::from(d);
        }
        if let Some(m) = &self.controls.model_in_effect {
            event["model_in_effect"] = Value::from(m.as_str());
        }
        self.emit_relay(event)?;
        self.shared.audit.record(
            "settings",
            &self.name,
            json!({
                "client_id": client_id,
                "fingerprint": fingerprint,
                "device": device,
                "changed": changed,
                "settings": &*self.controls.settings,
            }),
        );
        tracing::info!(session = %self.name, by = client_id, changed = ?changed, "session settings changed");
        let auto_continue = self.controls.settings.auto_continue;
        if auto_continue != auto_continue_was {
            self.auto_continue_changed(auto_continue, by)?;
        }
        Ok(())
    }

    /// Switching to `bypassPermissions` allows every request already pending
    /// (docs/protocol.md §10); other modes leave them to a person.
    fn allow_all_pending(&mut self) -> Step {
        while let Some(index) = self
            .pending
            .iter()
            .position(|p| p.subtype == "can_use_tool")
        {
            let request_id = self.pending[index].request_id.clone();
            let answer = match permission_result(
                &json!({"behavior": "allow"}),
                self.pending[index].input.as_ref(),
                "relay",
            ) {
                Ok(a) => a,
                Err(_) => json!({"behavior": "allow", "updatedInput": {}}),
            };
            self.resolve(index, &answer);
            self.emit_relay(json!({
                "type": "relay.resolved", "request_id": request_id, "client_id": "relay",
                "detail": "mode bypassPermissions", "response": answer,
            }))?;
            self.shared.audit.record(
                "resolved",
                &self.name,
                json!({
                    "request_id": request_id,
                    "client_id": "relay",
                    "decision": "allow",
                    "detail": "mode bypassPermissions",
                    "response": answer,
                }),
            );
            self.report_closed(&request_id, Some("relay".into()));
        }
        Ok(())
    }

    // ------------------------------------------------------ agent lines seen

    /// Look at an agent line for the controls: answers to the relay's control
    /// requests (true: consumed, not an event), the catalog, mode and limit
    /// reports (still relayed as events).
    pub(super) fn observe_controls(&mut self, line: &[u8]) -> Result<bool, JournalError> {
        if let Ok(answer) = ctl::parse_control_answer(line) {
            return self.on_control_answer(answer);
        }
        let Some(Ok(report)) = ctl::parse_report(line) else {
            return Ok(false);
        };
        let mode = match &report {
            AgentReport::Init(init) => {
                if init.claude_code_version.is_some() {
                    self.controls.version = init.claude_code_version.clone();
                }
                self.controls.model_in_effect = Some(init.model.clone());
                Some(init.permission_mode.clone())
            }
            AgentReport::Status(status) => status.permission_mode.clone(),
            AgentReport::RateLimit(info) => {
                self.controls.rate_limit = Some(info.clone());
                // A refusal during a turn ends it (docs/protocol.md §10: `auto_continue`).
                if info.status == "rejected" && self.turn.is_some() {
                    self.auto_continue.limit_reset = info.resets_at;
                }
                None
            }
            AgentReport::CommandsChanged(_) => None,
        };
        if let Some(catalog) = self.controls.catalog.as_mut()
            && catalog.apply(&report)
        {
            self.catalog_changed(matches!(report, AgentReport::CommandsChanged(_)));
        }
        if let Some(mode) = mode {
            self.agent_mode(&mode)?;
        }
        Ok(false)
    }

    /// A mode the agent reports: tracked when it differs from the one in effect
    /// and no `set_permission_mode` of the relay's is under way.
    fn agent_mode(&mut self, mode: &str) -> Step {
        if mode == self.controls.settings.permission_mode || PermissionMode::parse(mode).is_none() {
            return Ok(());
        }
        let setting_mode = self.controls.running.as_ref().is_some_and(|r| {
            r.sent.as_ref().is_some_and(|s| s.1 == "permission_mode")
                || r.steps.iter().any(|s| s.field == "permission_mode")
        });
        if setting_mode {
            return Ok(());
        }
        let mut settings = (*self.controls.settings).clone();
        settings.permission_mode = mode.to_string();
        self.commit_settings(settings, &["permission_mode"], None)
    }

    fn on_control_answer(&mut self, answer: ctl::ControlAnswer) -> Result<bool, JournalError> {
        let request_id = answer.request_id.clone();
        if let Phase::Starting { init_id, .. } = &self.phase
            && *init_id == request_id
        {
            if let Ok(init) = answer.payload::<InitializeAnswer>() {
                if init.claude_code_version.is_some() {
                    self.controls.version = init.claude_code_version.clone();
                }
                self.controls.catalog = Some(Catalog::from_initialize(&init));
                self.catalog_changed(false);
            }
            // The session's own handling (ready, pending requests) follows.
            return Ok(false);
        }
        if let Some(at) = self.controls.quiet.iter().position(|q| *q == request_id) {
            self.controls.quiet.remove(at);
            if let Err(refusal) = answer.outcome() {
                tracing::warn!(session = %self.name, error = %refusal.error, "the agent refused a start-up setting");
            }
            return Ok(true);
        }
        if let Some(at) = self
            .controls
            .plans
            .iter()
            .position(|(id, _)| *id == request_id)
        {
            let (_, for_request) = self.controls.plans.remove(at);
            let plan = answer
                .payload::<ctl::PlanAnswer>()
                .ok()
                .filter(|p| p.exists)
                .and_then(|p| p.content)
                .unwrap_or_default();
            self.emit_plan(&for_request, &plan)?;
            return Ok(true);
        }
        if let Some(at) = self
            .controls
            .usage
            .iter()
            .position(|w| w.request_id == request_id)
        {
            let waiter = self.controls.usage.remove(at);
            let context = answer
                .payload::<ctl::ContextUsageAnswer>()
                .ok()
                .map(|u| u.to_wire());
            self.reply_usage(&waiter.client, waiter.id, context);
            return Ok(true);
        }
        let sent_field = self
            .controls
            .running
            .as_ref()
            .and_then(|r| r.sent.as_ref())
            .filter(|s| s.0 == request_id)
            .map(|s| s.1);
        let Some(field) = sent_field else {
            return Ok(request_id.starts_with("req_ctl_"));
        };
        let subtype = match field {
            "permission_mode" => "set_permission_mode",
            "model" => "set_model",
            "effort" => "apply_flag_settings",
            _ => "set_max_thinking_tokens",
        };
        match answer.clone().outcome() {
            Ok(_) => {
                let asked_model = answer.payload::<ctl::ModelAnswer>().ok();
                let asked_mode = answer.payload::<ctl::ModeAnswer>().ok();
                if let Some(run) = self.controls.running.as_mut() {
                    run.sent = None;
                    apply_field(&mut run.target, &run.request.asked.clone(), field);
                    if field == "permission_mode"
                        && let Some(m) = asked_mode
                    {
                        run.target.permission_mode = m.mode;
                    }
                    run.changed.push(field);
                }
                if field == "model"
                    && let Some(m) = asked_model
                {
                    self.controls.model_in_effect = Some(m.model);
                }
                self.send_next_step()?;
            }
            Err(refusal) => {
                if let Some(m) = &refusal.model_in_effect {
                    self.controls.model_in_effect = Some(m.clone());
                }
                let failure = if unknown_subtype(&refusal) {
                    (
                        ErrorCode::AgentUnavailable,
                        format!(
                            "{} does not support {subtype}: {}",
                            self.cli_name(),
                            refusal.error
                        ),
                    )
                } else {
                    (ErrorCode::BadMessage, refusal.error.clone())
                };
                self.finish_set(Some(failure))?;
            }
        }
        Ok(true)
    }

    /// The agent answered `initialize`: settings that have no start flag are
    /// applied now, and `session.set`s that waited for it go on.
    pub(super) fn controls_ready(&mut self) -> Step {
        if let Some(thinking) = self.controls.settings.thinking {
            let control = HostControl::SetMaxThinkingTokens {
                max_thinking_tokens: Some(thinking),
            };
            if let Some(id) = self.send_control(&control) {
                self.controls.quiet.push(id);
            }
        }
        self.next_set()
    }

    /// The agent process ended: what waited for its answers is answered now.
    pub(super) fn controls_agent_gone(&mut self) -> Step {
        self.controls.catalog = None;
        self.controls.quiet.clear();
        self.controls.plans.clear();
        for waiter in std::mem::take(&mut self.controls.usage) {
            self.reply_usage(&waiter.client, waiter.id, None);
        }
        if let Some(run) = self.controls.running.as_ref()
            && run.sent.is_some()
        {
            let what = run.sent.as_ref().map_or("", |s| s.1);
            let why = format!("the agent stopped before it applied {what}");
            self.finish_set(Some((ErrorCode::AgentUnavailable, why)))?;
        }
        Ok(())
    }

    /// Answers that did not come in time.
    pub(super) fn controls_on_timer(&mut self) -> Step {
        let now = Instant::now();
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.controls.usage)
            .into_iter()
            .partition(|w| w.deadline <= now);
        self.controls.usage = waiting;
        for waiter in due {
            self.reply_usage(&waiter.client, waiter.id, None);
        }
        let timed_out = self
            .controls
            .running
            .as_ref()
            .and_then(|r| r.sent.as_ref())
            .filter(|s| s.2 <= now)
            .map(|s| s.1);
        if let Some(field) = timed_out {
            let why = format!(
                "{} did not answer the change of {field} within {} s",
                self.cli_name(),
                CONTROL_TIMEOUT.as_secs()
            );
            self.finish_set(Some((ErrorCode::AgentUnavailable, why)))?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- catalog

    /// The catalog changed: store it; with `push`, send it to attached clients.
    fn catalog_changed(&mut self, push: bool) {
        let Some(catalog) = &self.controls.catalog else {
            return;
        };
        let stored = StoredCatalog {
            commands: catalog.commands(),
            models: catalog.models(),
        };
        let body = serde_json::to_vec(&stored).unwrap_or_default();
        if let Err(e) = crate::datadir::write_atomic(&self.settings.dir.join(CATALOG_FILE), body) {
            tracing::warn!(session = %self.name, error = %e, "cannot record the catalog");
        }
        self.controls.stored = Some(stored);
        if push {
            let text = FrameText::from(self.catalog_msg(None).to_json());
            for client in self.clients.values() {
                let _ = client.outbox.frame(FrameType::SessionCatalog, text.clone());
            }
        }
    }

    fn catalog_msg(&self, id: Option<RequestId>) -> ServerMsg {
        let stale = self.controls.catalog.is_none();
        let stored = self.controls.stored.clone().unwrap_or_default();
        let permission_modes = PermissionMode::ALL
            .into_iter()
            .filter(|m| self.settings.agent.allow_bypass || !m.runs_tools_unasked())
            .map(|m| m.as_str().to_string())
            .collect();
        ServerMsg::SessionCatalog {
            id,
            session: self.name.to_string(),
            commands: stored.commands,
            models: stored.models,
            permission_modes,
            stale,
        }
    }

    pub(super) fn session_catalog(&mut self, client: ClientHandle, id: Option<RequestId>) {
        let msg = self.catalog_msg(id);
        let _ = client
            .outbox
            .frame(FrameType::SessionCatalog, msg.to_json());
    }

    // ------------------------------------------------------------------ usage

    pub(super) fn session_usage(&mut self, client: ClientHandle, id: Option<RequestId>) {
        if self.phase == Phase::Ready {
            let control = HostControl::GetContextUsage {
                detail: Some(ContextDetail::Summary),
            };
            if let Some(request_id) = self.send_control(&control) {
                self.controls.usage.push(UsageWaiter {
                    client,
                    id,
                    request_id,
                    deadline: Instant::now() + CONTROL_TIMEOUT,
                });
                return;
            }
        }
        self.reply_usage(&client, id, None);
    }

    fn reply_usage(
        &self,
        client: &ClientHandle,
        id: Option<RequestId>,
        context: Option<ccrelay_protocol::catalog::ContextUsage>,
    ) {
        let msg = ServerMsg::SessionUsage {
            id,
            session: self.name.to_string(),
            context,
            cost_usd: self.earlier_cost + self.process_cost.unwrap_or(0.0),
            rate_limit: self.controls.rate_limit.as_ref().map(|r| r.to_wire()),
        };
        let _ = client.outbox.frame(FrameType::SessionUsage, msg.to_json());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_fields_and_their_values() {
        let now = SessionSettingsJson::default();
        let asked = SettingsRequest {
            permission_mode: Some("default".into()),
            model: Some("sonnet".into()),
            auto_continue: Some(true),
            ..Default::default()
        };
        let fields = differing(&asked, &now);
        assert_eq!(fields, ["model", "auto_continue"]);
        let mut target = now.clone();
        for f in &fields {
            apply_field(&mut target, &asked, f);
        }
        assert_eq!(target.model.as_deref(), Some("sonnet"));
        assert!(target.auto_continue);
        assert_eq!(target.permission_mode, "default");
    }

    #[test]
    fn an_older_cli_is_told_apart_from_a_refusal() {
        let older = ctl::Refusal {
            error: "Unsupported control request subtype: set_model".into(),
            code: None,
            model_in_effect: None,
        };
        assert!(unknown_subtype(&older));
        let refused = ctl::Refusal {
            error: "Cannot set permission mode: must be one of …".into(),
            code: Some("invalid_mode".into()),
            model_in_effect: None,
        };
        assert!(!unknown_subtype(&refused));
    }

    /// The refusal the CLI writes for a subtype it does not know carries a code.
    #[test]
    fn the_clis_unsupported_request_is_an_older_cli() {
        let line = br#"{"type":"control_response","response":{"subtype":"error","request_id":"x1","error":"Unsupported control request subtype: frobnicate","error_code":"unsupported_request"}}"#;
        let refusal = ctl::parse_control_answer(line)
            .expect("a control_response")
            .outcome()
            .expect_err("a refusal");
        assert_eq!(refusal.code.as_deref(), Some("unsupported_request"));
        assert!(unknown_subtype(&refusal));
        // Another code with a similar text is the agent's own refusal.
        let other = ctl::Refusal {
            error: "Unsupported control request subtype in this mode".into(),
            code: Some("invalid_mode".into()),
            model_in_effect: None,
        };
        assert!(!unknown_subtype(&other));
    }
}
