//! The agent's life as the session sees it: start, what it says, how it ended and
//! what happens next (restart policy), liveness probes and other timers.

use super::*;
use crate::metrics::RestartCause;

impl Actor {
    pub(super) fn start_agent(&mut self) {
        self.generation += 1;
        self.restart_at = None;
        let spec = SpawnSpec {
            session: self.name.to_string(),
            workdir: self.settings.workdir.clone(),
            resume: self.conversation.clone(),
            // Only the first start forks; the fork's own id is resumed after that.
            fork: self.fork_pending && self.conversation == self.settings.resume,
            generation: self.generation,
            settings_flags: self.settings_flags(),
        };
        self.conversation_missing = false;
        self.stopping = None;
        self.stop_deadline = None;
        self.probe = None;
        match AgentProcess::spawn(&spec, &self.settings.agent, self.agent_tx.clone()) {
            Ok(agent) => {
                let init_id = format!("req_init_{}", self.generation);
                if agent.send(wire::initialize(&init_id)).is_err() {
                    tracing::warn!(session = %self.name, "agent stdin closed at once");
                }
                tracing::info!(
                    session = %self.name, pid = agent.pid, generation = self.generation,
                    resume = spec.resume.as_deref().unwrap_or("-"), "agent started"
                );
                agent_process::record_pid(&self.settings.dir, agent.pid);
                let timeout = STARTUP_TIMEOUT.max(self.settings.agent.probe_timeout);
                self.phase = Phase::Starting {
                    init_id,
                    deadline: Instant::now() + timeout,
                };
                self.agent_started = Some((Instant::now(), SystemTime::now()));
                self.last_output = Instant::now();
                self.agent = Some(agent);
                self.shared
                    .metrics
                    .agent_up
                    .get_or_create(&self.metrics_label)
                    .set(1);
                self.shared.metrics.agents_running.inc();
            }
            Err(e) => {
                tracing::error!(session = %self.name, cmd = %self.settings.agent.cmd.display(), error = %e, "cannot start the agent");
                self.phase = Phase::Down;
                let why = format!("cannot start {}: {e}", self.settings.agent.cmd.display());
                if let Err(e) = self.after_failed_spawn(&why) {
                    self.journal_failure = Some(e);
                }
            }
        }
    }

    pub(super) fn on_agent_output(&mut self, tagged: Tagged) -> Step {
        if tagged.generation != self.generation {
            return Ok(());
        }
        match tagged.output {
            AgentOutput::Line(line) => {
                self.last_output = Instant::now();
                self.on_agent_line(&line)
            }
            AgentOutput::Dropped { bytes, was_result } => {
                self.last_output = Instant::now();
                tracing::warn!(session = %self.name, bytes, was_result, "agent line over the size limit dropped");
                self.emit_relay(json!({"type": "relay.dropped", "bytes": bytes}))?;
                if was_result {
                    self.on_result(None)?;
                }
                Ok(())
            }
            AgentOutput::ConversationNotFound => {
                self.conversation_missing = true;
                Ok(())
            }
            AgentOutput::Exited(info) => self.on_agent_exit(info),
        }
    }

    pub(super) fn on_agent_line(&mut self, line: &[u8]) -> Step {
        let read_at = Some(Instant::now());
        match wire::classify(line) {
            AgentLine::NotJson => {
                let preview: String = String::from_utf8_lossy(&line[..line.len().min(200)]).into();
                tracing::warn!(session = %self.name, line = %preview, "agent wrote a line that is not a JSON object; skipped");
                Ok(())
            }
            AgentLine::KeepAlive => Ok(()),
            AgentLine::ControlResponse(env) => {
                if self.observe_controls(line)? {
                    return Ok(());
                }
                self.on_control_response(env)
            }
            AgentLine::ControlRequest {
                request_id,
                subtype,
                input,
            } => {
                self.emit(line, read_at)?;
                let raw = std::str::from_utf8(line)
                    .ok()
                    .and_then(|s| RawValue::from_string(s.to_string()).ok());
                if let Some(raw) = raw {
                    let deadline = permission_deadline(&subtype, self.settings.permission_timeout);
                    self.pending.retain(|p| p.request_id != request_id);
                    self.report_opened(&request_id, &subtype, &raw);
                    self.pending.push(Pending {
                        request_id: request_id.clone(),
                        subtype,
                        input,
                        raw: raw.clone(),
                        deadline,
                    });
                    self.on_permission_request(&request_id, &raw)?;
                }
                Ok(())
            }
            AgentLine::ControlCancel { request_id } => {
                self.emit(line, read_at)?;
                if self.pending.iter().any(|p| p.request_id == request_id) {
                    self.pending.retain(|p| p.request_id != request_id);
                    self.report_closed(&request_id, None);
                }
                Ok(())
            }
            AgentLine::SystemInit { session_id } => {
                self.emit(line, read_at)?;
                self.observe_controls(line)?;
                if let Some(id) = session_id
                    && self.conversation.as_deref() != Some(id.as_str())
                {
                    tracing::info!(session = %self.name, conversation = %id, "agent conversation id");
                    write_meta(&self.settings.dir, &id);
                    self.conversation = Some(id);
                    self.fork_pending = false;
                }
                Ok(())
            }
            AgentLine::Result { cost_usd } => {
                self.emit(line, read_at)?;
                if cost_usd.is_some() {
                    self.process_cost = cost_usd;
                }
                self.merge_steers_in_result(line)?;
                self.on_result(cost_usd)
            }
            AgentLine::Task { task_id, running } => {
                self.emit(line, read_at)?;
                if running {
                    self.tasks.insert(task_id);
                } else {
                    self.tasks.remove(&task_id);
                }
                Ok(())
            }
            AgentLine::Other => {
                self.emit(line, read_at)?;
                self.observe_controls(line)?;
                self.observe_steer(line)
            }
        }
    }

    /// docs/protocol.md §10.1: the CLI reports `command_lifecycle` `completed`
    /// for a steering message it took into the running turn (no `result` of its
    /// own follows): that prompt is `merged` into the turn.
    fn observe_steer(&mut self, line: &[u8]) -> Step {
        #[derive(serde::Deserialize)]
        struct Lifecycle<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            command_uuid: Option<&'a str>,
            state: Option<&'a str>,
        }
        if self.steers.is_empty() {
            return Ok(());
        }
        let Ok(seen) = serde_json::from_slice::<Lifecycle>(line) else {
            return Ok(());
        };
        if seen.kind != "command_lifecycle" || seen.state != Some("completed") {
            return Ok(());
        }
        let Some(index) = self.steers.iter().position(|s| {
            Some(s.prompt_id.as_str()) == seen.command_uuid && self.turn.as_ref() == Some(&s.into)
        }) else {
            return Ok(());
        };
        let steer = self.steers.remove(index);
        self.emit_relay(json!({
            "type": "relay.turn", "prompt_id": steer.prompt_id, "phase": "merged", "into": steer.into,
        }))
    }

    /// docs/protocol.md §10.1: the running turn's `result` lists in
    /// `user_message_uuids` the user messages the turn took in; a steer listed
    /// there and not yet announced is `merged` into it (before its `ended`).
    fn merge_steers_in_result(&mut self, line: &[u8]) -> Step {
        #[derive(serde::Deserialize)]
        struct Consumed<'a> {
            #[serde(borrow, default)]
            user_message_uuids: Vec<std::borrow::Cow<'a, str>>,
        }
        let Some(turn) = self.turn.clone() else {
            return Ok(());
        };
        if !self.steers.iter().any(|s| s.into == turn) {
            return Ok(());
        }
        let Ok(consumed) = serde_json::from_slice::<Consumed>(line) else {
            return Ok(());
        };
        let (merged, rest): (Vec<Steer>, Vec<Steer>) =
            std::mem::take(&mut self.steers).into_iter().partition(|s| {
                s.into == turn
                    && consumed
                        .user_message_uuids
                        .iter()
                        .any(|u| *u == s.prompt_id)
            });
        self.steers = rest;
        for steer in merged {
            self.emit_relay(json!({
                "type": "relay.turn", "prompt_id": steer.prompt_id, "phase": "merged", "into": steer.into,
            }))?;
        }
        Ok(())
    }

    /// docs/protocol.md §10.1: a steering message the turn `ended` did not take
    /// in (it ended before a tool boundary) is started by the CLI right after as
    /// a turn of its own; so it is now the running turn, with `started`. Any
    /// other steer for the same turn now waits on that one.
    fn run_unmerged_steer(&mut self, ended: &str) -> Step {
        let Some(first) = self.steers.iter().position(|s| s.into == ended) else {
            return Ok(());
        };
        let steer = self.steers.remove(first);
        for other in self.steers.iter_mut().filter(|s| s.into == ended) {
            other.into = steer.prompt_id.clone();
        }
        self.emit_relay(
            json!({"type": "relay.turn", "prompt_id": steer.prompt_id, "phase": "started"}),
        )?;
        self.turn = Some(steer.prompt_id);
        self.turn_started = Some(Instant::now());
        Ok(())
    }

    /// The running turn's `result` was seen: the turn ended; the next prompt may go.
    pub(super) fn on_result(&mut self, cost_usd: Option<f64>) -> Step {
        if let Some(prompt_id) = self.turn.take() {
            self.emit_relay(
                json!({"type": "relay.turn", "prompt_id": prompt_id, "phase": "ended"}),
            )?;
            self.snapshot_after(&prompt_id);
            self.auto_continue_after_turn()?;
            let ended = prompt_id.clone();
            if let Some(started) = self.turn_started.take() {
                self.shared.notify.report(NotifyEvent::TurnEnded {
                    session: self.name.clone(),
                    prompt_id,
                    duration: started.elapsed(),
                    cost_usd,
                });
            }
            self.run_unmerged_steer(&ended)?;
            self.settle_interrupts();
            self.maybe_start_turn()?;
        }
        Ok(())
    }

    pub(super) fn on_control_response(&mut self, env: ResponseEnvelope) -> Step {
        let Some(request_id) = env.request_id.clone() else {
            return Ok(());
        };
        if let Phase::Starting { init_id, .. } = &self.phase
            && *init_id == request_id
        {
            return self.on_ready(env);
        }
        if self.probe.as_ref().is_some_and(|(id, _)| *id == request_id) {
            self.probe = None;
            return Ok(());
        }
        if self.interrupts.iter().any(|w| w.request_id == request_id) {
            // Acknowledged; the `ok` goes out once the interrupted turn's result is in.
            tracing::debug!(session = %self.name, request_id, "interrupt acknowledged");
            return Ok(());
        }
        tracing::debug!(session = %self.name, request_id, "control response for no open request");
        Ok(())
    }

    /// The new process answered `initialize`: it is ready for prompts.
    pub(super) fn on_ready(&mut self, env: ResponseEnvelope) -> Step {
        if env.subtype.as_deref() == Some("error") {
            tracing::warn!(session = %self.name, error = env.error.as_deref().unwrap_or(""), "agent refused initialize; carrying on");
        }
        self.phase = Phase::Ready;
        self.ever_ready = true;
        let listed: Vec<String> = env
            .pending_permission_requests
            .into_iter()
            .filter_map(|p| p.request_id)
            .collect();
        let gone: Vec<String> = self
            .pending
            .iter()
            .filter(|p| !listed.contains(&p.request_id))
            .map(|p| p.request_id.clone())
            .collect();
        for request_id in gone {
            self.pending.retain(|p| p.request_id != request_id);
            self.report_closed(&request_id, None);
            self.emit_relay(json!({"type": "relay.cancelled", "request_id": request_id, "reason": "agent_restarted"}))?;
        }
        for (client, id) in std::mem::take(&mut self.restart_waiters) {
            self.deferred.push((client, ServerMsg::ok(id).to_json()));
        }
        self.controls_ready()?;
        self.maybe_start_turn()
    }

    pub(super) fn on_agent_exit(&mut self, info: agent_process::ExitInfo) -> Step {
        let restart_cause = match self.stopping {
            Some(StopCause::Stopped) => RestartCause::Stopped,
            Some(StopCause::Hung) => RestartCause::Hung,
            None => RestartCause::Crashed,
        };
        let cause = restart_cause.as_str();
        let was_starting = matches!(self.phase, Phase::Starting { .. });
        let uptime = self
            .agent_started
            .map(|(t, _)| t.elapsed())
            .unwrap_or_default();
        let pid = self.agent.as_ref().map(|a| a.pid).unwrap_or(0);
        if self.agent.take().is_some() {
            self.shared.metrics.agents_running.dec();
        }
        // `total_cost_usd` starts again with the next process.
        self.earlier_cost += self.process_cost.take().unwrap_or(0.0);
        self.phase = Phase::Down;
        self.probe = None;
        self.stop_deadline = None;
        self.agent_started = None;
        self.controls_agent_gone()?;
        // Its background tasks ended with it.
        self.tasks.clear();
        agent_process::clear_pid(&self.settings.dir);
        self.shared
            .metrics
            .agent_up
            .get_or_create(&self.metrics_label)
            .set(0);
        self.shared
            .metrics
            .agent_restarts
            .get_or_create(&crate::metrics::SessionCauseLabels {
                session: self.name.to_string(),
                cause: restart_cause,
            })
            .inc();
        tracing::warn!(session = %self.name, pid, cause, code = ?info.code, signal = ?info.signal, "agent exited");

        let resume_failed = was_starting
            && self.conversation_missing
            && self.conversation.is_some()
            && !self.fresh_start_used
            && cause == "crashed";
        let going_to_sleep = std::mem::take(&mut self.going_to_sleep);
        let plan = if self.shutting_down {
            ExitPlan::StayDown
        } else if going_to_sleep && cause == "stopped" {
            ExitPlan::Sleep
        } else if resume_failed || cause == "stopped" {
            ExitPlan::RestartNow
        } else {
            self.restarts_total += 1;
            match self.restart.on_unexpected_exit(Instant::now(), uptime) {
                Verdict::RestartAfter(delay) => ExitPlan::RestartAfter(delay),
                Verdict::Failed { until } => ExitPlan::Fail(until),
            }
        };
        self.emit_relay(json!({
            "type": "relay.agent_exit", "cause": cause, "code": info.code, "signal": info.signal,
            "restarting": matches!(plan, ExitPlan::RestartNow | ExitPlan::RestartAfter(_)),
        }))?;
        self.turn_started = None;
        // A limit the dead turn hit schedules nothing: no `result` ended that turn.
        self.auto_continue.limit_reset = None;
        if let Some(prompt_id) = self.turn.take() {
            // The cause (`stopped` at shutdown); `server_stopped` is reserved for
            // prompts that were still queued and never reached the agent.
            self.emit_relay(json!({"type": "relay.turn", "prompt_id": prompt_id, "phase": "aborted", "detail": cause}))?;
            self.snapshot_after(&prompt_id);
        }
        // Steering prompts the agent held died with it, like its turn.
        for steer in std::mem::take(&mut self.steers) {
            self.emit_relay(json!({"type": "relay.turn", "prompt_id": steer.prompt_id, "phase": "aborted", "detail": cause}))?;
        }
        self.settle_interrupts();
        self.stopping = None;
        let why = format!("agent {cause} ({})", describe_exit(&info));
        match plan {
            // The process is reaped: its slot goes to the next session (§4.11).
            ExitPlan::StayDown => self.slot = None,
            ExitPlan::Sleep => self.fall_asleep()?,
            ExitPlan::RestartNow if resume_failed => {
                let old = self.conversation.take().unwrap_or_default();
                self.fresh_start_used = true;
                clear_meta(&self.settings.dir);
                tracing::warn!(session = %self.name, conversation = %old, "resume failed: starting a new conversation");
                self.next_detail = Some(format!(
                    "conversation {old} was not found; started a new conversation"
                ));
                self.start_agent();
            }
            ExitPlan::RestartNow => {
                self.next_detail = Some("restarted on request".into());
                self.start_agent();
            }
            ExitPlan::RestartAfter(delay) => self.schedule_restart(delay, &why),
            ExitPlan::Fail(until) => self.fail(until, &why)?,
        }
        Ok(())
    }

    pub(super) fn schedule_restart(&mut self, delay: Duration, why: &str) {
        self.restart_at = Some(Instant::now() + delay);
        self.next_detail = Some(format!("{why}; restarting in {:.1} s", delay.as_secs_f64()));
    }

    /// Too many unexpected exits: stay down until `until` or an owner's restart.
    pub(super) fn fail(&mut self, until: Instant, why: &str) -> Step {
        self.failed_until = Some(until);
        // A failed session runs no process: its slot goes to another session.
        self.slot = None;
        self.next_detail = Some(format!(
            "{why}; more than {} unexpected exits within {} s",
            self.settings.agent.max_restarts,
            self.settings.agent.restart_window.as_secs_f64()
        ));
        for (client, id) in std::mem::take(&mut self.restart_waiters) {
            self.reply_error(
                &client,
                id,
                ErrorCode::AgentUnavailable,
                "the agent failed to start again",
            );
        }
        self.cancel_all_pending("agent_failed")
    }

    /// Apply the restart policy after an agent could not even be spawned.
    pub(super) fn after_failed_spawn(&mut self, why: &str) -> Step {
        self.restarts_total += 1;
        match self
            .restart
            .on_unexpected_exit(Instant::now(), Duration::ZERO)
        {
            Verdict::RestartAfter(delay) => {
                self.schedule_restart(delay, why);
                Ok(())
            }
            Verdict::Failed { until } => self.fail(until, why),
        }
    }

    pub(super) fn cancel_all_pending(&mut self, reason: &str) -> Step {
        for p in std::mem::take(&mut self.pending) {
            self.report_closed(&p.request_id, None);
            self.emit_relay(
                json!({"type": "relay.cancelled", "request_id": p.request_id, "reason": reason}),
            )?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- timers

    pub(super) fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut next = far;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t
                && t < next
            {
                next = t;
            }
        };
        if let Phase::Starting { deadline, .. } = &self.phase {
            consider(Some(*deadline));
        }
        consider(self.scheduled_deadline());
        if self.phase == Phase::Ready && self.stopping.is_none() {
            match &self.probe {
                Some((_, deadline)) => consider(Some(*deadline)),
                None => consider(Some(self.last_output + self.settings.agent.probe_interval)),
            }
        }
        consider(self.stop_deadline);
        consider(self.restart_at);
        consider(self.idle_stop_due());
        consider(self.failed_until);
        for p in &self.pending {
            consider(p.deadline);
        }
        consider(self.log.next_interval_sync);
        consider(self.presence.due());
        consider(self.controls.next_deadline());
        next
    }

    pub(super) fn on_timer(&mut self) -> Step {
        self.controls_on_timer()?;
        self.fire_scheduled()?;
        let now = Instant::now();
        if let Phase::Starting { deadline, .. } = &self.phase
            && now >= *deadline
            && self.stopping.is_none()
        {
            tracing::warn!(session = %self.name, "agent did not answer initialize in time: killing it");
            self.kill_hung();
        }
        if self.phase == Phase::Ready && self.stopping.is_none() {
            match &self.probe {
                Some((_, deadline)) if now >= *deadline => {
                    tracing::warn!(session = %self.name, timeout_s = self.settings.agent.probe_timeout.as_secs_f64(), "agent did not answer the liveness probe: killing it");
                    self.kill_hung();
                }
                None if now >= self.last_output + self.settings.agent.probe_interval => {
                    self.probe_counter += 1;
                    let id = format!("req_probe_{}_{}", self.generation, self.probe_counter);
                    if let Some(agent) = &self.agent {
                        let _ = agent.send(wire::initialize(&id));
                    }
                    self.probe = Some((id, now + self.settings.agent.probe_timeout));
                }
                _ => {}
            }
        }
        if let Some(deadline) = self.stop_deadline
            && now >= deadline
        {
            self.stop_deadline = None;
            if let Some(agent) = &self.agent {
                tracing::warn!(session = %self.name, pid = agent.pid, "agent ignored SIGTERM: sending SIGKILL");
                agent.signal_group(Signal::SIGKILL);
            }
        }
        if self.restart_at.is_some_and(|t| now >= t) && self.agent.is_none() {
            self.restart_at = None;
            self.launch_agent();
        }
        if self.failed_until.is_some_and(|t| now >= t) && self.agent.is_none() {
            self.failed_until = None;
            self.restart.reset();
            self.next_detail = Some("restart window passed; trying again".into());
            self.launch_agent();
        }
        if self.idle_stop_due().is_some_and(|t| now >= t) && self.is_idle() {
            let idle_for = self
                .settings
                .agent
                .idle_stop
                .map(format_secs)
                .unwrap_or_default();
            self.sleep_agent(&format!("idle for {idle_for} s"));
        }
        let expired: Vec<usize> = self
            .pending
            .iter()
            .enumerate()
            .filter(|(_, p)| p.deadline.is_some_and(|d| now >= d))
            .map(|(i, _)| i)
            .collect();
        if !expired.is_empty() && self.phase == Phase::Ready {
            let secs = self
                .settings
                .permission_timeout
                .map(format_secs)
                .unwrap_or_default();
            for index in expired.into_iter().rev() {
                let request_id = self.pending[index].request_id.clone();
                let answer =
                    json!({"behavior": "deny", "message": format!("no answer within {secs} s")});
                tracing::info!(session = %self.name, request_id, "permission prompt timed out: denied");
                self.resolve(index, &answer);
                self.announce_resolved(&request_id, &answer, "relay", None)?;
            }
        }
        if self.log.next_interval_sync.is_some_and(|due| now >= due) {
            // Queued to the writer at step end; the next due time comes with its ack.
            self.log.next_interval_sync = None;
            self.log.sync_due = true;
        }
        Ok(())
    }

    pub(super) fn kill_hung(&mut self) {
        if let Some(agent) = &self.agent {
            self.stopping = Some(StopCause::Hung);
            agent.signal_group(Signal::SIGKILL);
        }
    }
}
