//! Client requests a session serves: attach (replay + registration in one step),
//! prompts and the turn queue, answers to agent requests, interrupt, restart.

use super::*;
use crate::agent::controls::PermissionMode;
use crate::session::scheduled::{self, MAX_SCHEDULED, Scheduled, ScheduledBy};
use ccrelay_protocol::{ClientEntry, FrameType};

impl Actor {
    /// `prompt`, `respond` and `interrupt` need an attached connection; answers
    /// `not_attached` and returns false otherwise.
    pub(super) fn require_attached(&self, client: &ClientHandle, id: &Option<RequestId>) -> bool {
        if self.is_attached(client) {
            return true;
        }
        self.reply_error(
            client,
            id.clone(),
            ErrorCode::NotAttached,
            format!("attach to session {} first", self.name),
        );
        false
    }

    pub(super) fn is_attached(&self, client: &ClientHandle) -> bool {
        self.clients.contains_key(&client.info.conn_id)
    }

    pub(super) fn reply_error(
        &self,
        client: &ClientHandle,
        id: Option<RequestId>,
        code: ErrorCode,
        msg: impl Into<String>,
    ) {
        self.shared.metrics.error_sent(code);
        let _ = client.outbox.frame(
            FrameType::Error,
            ProtocolError::new(code, msg).with_id(id).to_frame(),
        );
    }

    pub(super) fn attach(
        &mut self,
        client: ClientHandle,
        id: Option<RequestId>,
        start: ReplayStart,
    ) -> Step {
        // A second attach on the same connection starts over with a fresh replay
        // and changes no presence (§7).
        let was_attached = self.is_attached(&client);

        let head = self.log.head;
        let first = self.log.first_retained();
        let (wanted_from, mut truncated) = match start {
            ReplayStart::Since(since) if since > head => (first, true),
            ReplayStart::Since(since) => (since + 1, false),
            ReplayStart::Tail(n) => ((head + 1).saturating_sub(n).max(1), false),
        };
        if wanted_from < first && wanted_from <= head {
            truncated = true;
        }
        let replay_from = wanted_from.max(first).min(head + 1);
        let tail_first = self.log.tail_first();
        let journal_part = (replay_from < tail_first).then(|| JournalReplay {
            reader: self.log.reader.clone(),
            from: replay_from,
            to: tail_first - 1,
        });
        // The tail is ordered by seq: skip to the first wanted one without a scan.
        let skip = replay_from.saturating_sub(tail_first) as usize;
        let tail_part: Vec<(u64, FrameText)> = self
            .log
            .tail
            .iter()
            .skip(skip)
            .filter(|(seq, _)| *seq >= replay_from)
            .map(|(seq, t)| (*seq, t.clone()))
            .collect();

        self.clients.insert(client.info.conn_id, client.clone());
        self.listed.changed(client.info.conn_id);
        let count = self.clients.len();
        // At most ATTACHED_LIST_MAX entries: the oldest others, then the newcomer.
        let listed = self.listed.for_newcomer(&self.clients, &client);
        let reply = ServerMsg::Attached {
            id,
            session: self.name.to_string(),
            state: self.state.as_str().into(),
            head,
            replay_from,
            truncated,
            pending: self.pending.iter().map(|p| p.raw.clone()).collect(),
            clients: listed,
            clients_total: Some(count),
        };
        let pushed = client.outbox.push(Outbound::Attach {
            session: self.name.clone(),
            reply: FrameText::from(reply.to_json()),
            journal: journal_part,
            tail: tail_part,
        });
        self.shared.metrics.replays.inc();
        if truncated {
            self.shared.metrics.replays_truncated.inc();
        }
        tracing::debug!(session = %self.name, client_id = %client.info.client_id, head, replay_from, truncated, "client attached");
        if pushed.is_err() {
            // Lagging or gone: it is not attached (and leaves if it was; a
            // newcomer nobody heard of is simply forgotten).
            if was_attached {
                self.drop_clients(&[client.info.conn_id]);
            } else {
                self.clients.remove(&client.info.conn_id);
                self.listed.changed(client.info.conn_id);
            }
            return Ok(());
        }
        let now = Instant::now();
        let entry = client.info.entry();
        if !was_attached {
            self.presence.joined(&entry, count, now);
            self.set_attached_gauge();
        }
        // Its `attached` list is a view the next combined frame must correct.
        self.presence.snapshot_taken(client.info.conn_id);
        // The newcomer's own presence frame, right after its replay: never delayed
        // or combined. Everyone else hears of it in the next (combined) frame.
        let full: Vec<ClientEntry> = if count <= presence::FULL_LIST_MAX {
            self.clients.values().map(|c| c.info.entry()).collect()
        } else {
            Vec::new()
        };
        // A re-attach is no change: its frame lists nobody as joined.
        let joined = (!was_attached).then_some(&entry);
        let own = presence::frame(&self.name, joined, [], count, &full);
        if client.outbox.frame(FrameType::Presence, own).is_err() {
            self.drop_clients(&[client.info.conn_id]);
        }
        Ok(())
    }

    pub(super) fn prompt(
        &mut self,
        client: ClientHandle,
        id: Option<RequestId>,
        content: PromptContent,
        key: Option<String>,
        steer: bool,
        at: Option<SystemTime>,
    ) -> Step {
        if !self.require_attached(&client, &id) {
            return Ok(());
        }
        if let Some(key) = &key {
            let now = journal::now_ms();
            let lookup = (client.info.fingerprint.clone(), key.clone());
            if let Some((prompt_id, at)) = self.prompt_keys.get(&lookup)
                && now.saturating_sub(*at) < PROMPT_KEY_TTL_MS
            {
                let msg = ServerMsg::Ok {
                    id,
                    prompt_id: Some(prompt_id.clone()),
                    queued: None,
                    duplicate: Some(true),
                    settings: None,
                    pending_start: None,
                    path: None,
                };
                let _ = client.outbox.frame(FrameType::Ok, msg.to_json());
                return Ok(());
            }
        }
        match self.state {
            SessionState::Failed => {
                let detail = format!(
                    "session {} has failed: {}; send session.restart",
                    self.name, self.state_detail
                );
                self.reply_error(&client, id, ErrorCode::AgentUnavailable, detail);
                return Ok(());
            }
            SessionState::Stopped => {
                self.reply_error(
                    &client,
                    id,
                    ErrorCode::AgentUnavailable,
                    "the session is stopping",
                );
                return Ok(());
            }
            _ => {}
        }
        // A time already past is an ordinary prompt (docs/protocol.md §10).
        let scheduled_at = at.filter(|t| *t > SystemTime::now());
        if scheduled_at.is_some() && self.scheduled.len() >= MAX_SCHEDULED {
            self.reply_error(
                &client,
                id,
                ErrorCode::Overloaded,
                format!("{MAX_SCHEDULED} prompts are already scheduled in this session"),
            );
            return Ok(());
        }
        if scheduled_at.is_none() && self.queue.len() >= self.settings.prompt_queue {
            self.reply_error(
                &client,
                id,
                ErrorCode::AgentUnavailable,
                format!(
                    "the prompt queue is full ({} prompts wait)",
                    self.queue.len()
                ),
            );
            return Ok(());
        }
        let prompt_id = uuid::Uuid::new_v4().to_string();
        if self.first_prompt.is_none() {
            self.first_prompt = first_line_of(&content).map(Arc::from);
        }
        // docs/protocol.md §10: with a turn running, a steering prompt goes to the
        // agent at once; with none it is an ordinary prompt.
        let steer_into = self
            .turn
            .clone()
            .filter(|_| steer && self.phase == Phase::Ready && self.stopping.is_none());
        if let Some(at) = scheduled_at {
            // Recorded before it is announced: an `ok` means it survives a restart.
            let record = Scheduled {
                prompt_id: prompt_id.clone(),
                at,
                by: Some(ScheduledBy::of(&client.info)),
                auto_continue: false,
            };
            if let Err(e) = self.scheduled.add(record, &content.0) {
                tracing::error!(session = %self.name, error = %e, "cannot record a scheduled prompt");
                self.reply_error(
                    &client,
                    id,
                    ErrorCode::Internal,
                    "the server could not record the scheduled prompt",
                );
                return Ok(());
            }
        }
        let queued = scheduled_at.is_some()
            || (steer_into.is_none()
                && !(self.can_start_turn() && self.queue.is_empty() && !self.queue_held()));
        let reply = ServerMsg::Ok {
            id,
            prompt_id: Some(prompt_id.clone()),
            queued: Some(queued),
            duplicate: None,
            settings: None,
            pending_start: None,
            path: None,
        };
        let _ = client.outbox.frame(FrameType::Ok, reply.to_json());

        let info = &client.info;
        let mut event = json!({
            "type": "relay.prompt",
            "prompt_id": prompt_id,
            "client_id": info.client_id,
            "fingerprint": info.fingerprint,
        });
        if let Some(device) = &info.device {
            event["device"] = Value::from(device.clone());
        }
        if let Some(key) = &key {
            event["key"] = Value::from(key.clone());
        }
        if steer_into.is_some() {
            event["steer"] = Value::Bool(true);
        }
        if queued {
            event["queued"] = Value::Bool(true);
        }
        let scheduled_text = scheduled_at.map(scheduled::rfc3339);
        if let Some(text) = &scheduled_text {
            event["scheduled_at"] = Value::from(text.as_str());
        }
        // Insert content last, as raw JSON, so the client's blocks are kept as sent.
        let mut raw = event.to_string();
        raw.pop();
        raw.push_str(",\"content\":");
        raw.push_str(content.0.get());
        raw.push('}');
        self.emit(raw.as_bytes(), None)?;
        self.shared.audit.record(
            "prompt",
            &self.name,
            json!({
                "prompt_id": prompt_id,
                "client_id": info.client_id,
                "fingerprint": info.fingerprint,
                "device": info.device,
                "key": key,
                "scheduled_at": scheduled_text,
            }),
        );
        self.shared
            .metrics
            .prompts
            .get_or_create(&self.metrics_label)
            .inc();
        if let Some(key) = key {
            self.prompt_keys.insert(
                (info.fingerprint.clone(), key),
                (prompt_id.clone(), journal::now_ms()),
            );
            self.prune_prompt_keys();
        }
        if scheduled_at.is_some() {
            return Ok(());
        }
        if let Some(into) = steer_into {
            let line = wire::steering_prompt(&content.0, &prompt_id);
            if let Some(agent) = &self.agent
                && agent.send(line).is_err()
            {
                tracing::warn!(session = %self.name, prompt_id = %prompt_id, "agent stdin is gone; the steering prompt will be aborted with the agent");
            }
            self.steers.push(Steer { prompt_id, into });
            return Ok(());
        }
        self.queue.push_back(QueuedPrompt { prompt_id, content });
        if self.asleep && !self.queue_held() {
            // The prompt wakes the session: it waits in the queue until the new
            // agent (resuming the conversation) is ready (§4.11).
            self.launch_agent();
        }
        self.maybe_start_turn()
    }

    /// `prompt.cancel` (docs/protocol.md §10): a prompt still in the relay's
    /// queue, or scheduled, is dropped and ends as `aborted` (`cancelled`); one
    /// already written to the agent (or unknown) is `not_pending`.
    pub(super) fn cancel_prompt(
        &mut self,
        client: ClientHandle,
        id: Option<RequestId>,
        prompt_id: &str,
    ) -> Step {
        let queued = self.queue.iter().position(|q| q.prompt_id == prompt_id);
        let scheduled = queued.is_none() && self.scheduled.remove(prompt_id).is_some();
        if let Some(index) = queued {
            self.queue.remove(index);
        } else if !scheduled {
            self.reply_error(
                &client,
                id,
                ErrorCode::NotPending,
                format!("prompt {prompt_id} is not waiting (unknown, or it reached the agent)"),
            );
            return Ok(());
        }
        let _ = client
            .outbox
            .frame(FrameType::Ok, ServerMsg::ok(id).to_json());
        self.emit_relay(json!({
            "type": "relay.turn", "prompt_id": prompt_id, "phase": "aborted", "detail": "cancelled",
        }))?;
        let info = &client.info;
        self.shared.audit.record(
            "prompt_cancel",
            &self.name,
            json!({
                "prompt_id": prompt_id,
                "client_id": info.client_id,
                "fingerprint": info.fingerprint,
                "device": info.device,
            }),
        );
        // The prompt behind it may now be the one to start (or, a `continue` the
        // queue waited for gone, the queue may run).
        self.queue_released()
    }

    pub(super) fn prune_prompt_keys(&mut self) {
        if self.prompt_keys.len() > 4096 {
            let now = journal::now_ms();
            self.prompt_keys
                .retain(|_, (_, at)| now.saturating_sub(*at) < PROMPT_KEY_TTL_MS);
        }
    }

    /// Whether a prompt could be written to the agent right now: it answers, no
    /// turn is running, and it is not being stopped.
    pub(super) fn can_start_turn(&self) -> bool {
        self.phase == Phase::Ready && self.turn.is_none() && self.stopping.is_none()
    }

    /// Write the next queued prompt to the agent when it can take one.
    pub(super) fn maybe_start_turn(&mut self) -> Step {
        if !self.can_start_turn() || self.queue_held() {
            return Ok(());
        }
        let Some(front) = self.queue.front() else {
            return Ok(());
        };
        // The working tree is snapshotted before the prompt reaches the agent,
        // and the previous turn's changes are told first (docs/protocol.md §11).
        if self.changes.busy() {
            return Ok(());
        }
        if !self.changes.ready_for(&front.prompt_id) {
            let prompt_id = front.prompt_id.clone();
            self.snapshot_before(&prompt_id);
            return Ok(());
        }
        let Some(next) = self.queue.pop_front() else {
            return Ok(());
        };
        self.emit_relay(
            json!({"type": "relay.turn", "prompt_id": next.prompt_id, "phase": "started"}),
        )?;
        let line = wire::user_prompt(&next.content.0, &next.prompt_id);
        if let Some(agent) = &self.agent
            && agent.send(line).is_err()
        {
            tracing::warn!(session = %self.name, prompt_id = %next.prompt_id, "agent stdin is gone; the turn will be aborted with the agent");
        }
        self.turn = Some(next.prompt_id);
        self.turn_started = Some(Instant::now());
        Ok(())
    }

    pub(super) fn respond(
        &mut self,
        client: ClientHandle,
        id: Option<RequestId>,
        request_id: String,
        response: Value,
    ) -> Step {
        // An owner may answer without attaching (a phone's approval sheet for a
        // session it watches, docs/protocol.md §4.10); viewers never reach here.
        if client.info.role != ccrelay_protocol::Role::Owner && !self.require_attached(&client, &id)
        {
            return Ok(());
        }
        let Some(index) = self.pending.iter().position(|p| p.request_id == request_id) else {
            self.reply_error(
                &client,
                id,
                ErrorCode::NotPending,
                format!("request {request_id} is not pending (unknown or already answered)"),
            );
            return Ok(());
        };
        if self.phase != Phase::Ready {
            self.reply_error(
                &client,
                id,
                ErrorCode::AgentUnavailable,
                "the agent is restarting; try again when it is back",
            );
            return Ok(());
        }
        let pending = &self.pending[index];
        let answer = if pending.subtype == "can_use_tool" {
            permission_result(
                &response,
                pending.input.as_ref(),
                client.info.display_name(),
            )
        } else if response.is_object() {
            Ok(response)
        } else {
            Err("`response` must be an object".to_string())
        };
        let answer = match answer {
            Ok(a) => a,
            Err(why) => {
                self.reply_error(&client, id, ErrorCode::BadMessage, why);
                return Ok(());
            }
        };
        if let Err((code, why)) = self.check_permission_updates(&self.pending[index], &answer) {
            self.reply_error(&client, id, code, why);
            return Ok(());
        }
        self.resolve(index, &answer);
        let _ = client
            .outbox
            .frame(FrameType::Ok, ServerMsg::ok(id).to_json());
        // The `ok` is already queued; now the event, so the reply comes first.
        self.announce_resolved(
            &request_id,
            &answer,
            &client.info.client_id,
            Some(&client.info),
        )
    }

    /// docs/protocol.md §10: an entry of an allow's `updatedPermissions` that
    /// switches the mode passes the same gate as `session.set` (checked first, so
    /// the refusal says why), and every entry must repeat one the agent itself
    /// suggested for this request: a client cannot invent rules.
    fn check_permission_updates(
        &self,
        pending: &Pending,
        answer: &Value,
    ) -> Result<(), (ErrorCode, String)> {
        let Some(updates) = answer.get("updatedPermissions").and_then(Value::as_array) else {
            return Ok(());
        };
        let request: Value = serde_json::from_str(pending.raw.get()).unwrap_or(Value::Null);
        let suggested = request
            .pointer("/request/permission_suggestions")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (n, update) in updates.iter().enumerate() {
            let sets_mode = update.get("type").and_then(Value::as_str) == Some("setMode");
            if let Some(mode) = update
                .get("mode")
                .and_then(Value::as_str)
                .and_then(PermissionMode::parse)
                && sets_mode
                && mode.runs_tools_unasked()
                && !self.settings.agent.allow_bypass
            {
                return Err((
                    ErrorCode::Forbidden,
                    format!(
                        "permission mode {} is not allowed on this server (it runs without --allow-bypass-permissions)",
                        mode.as_str()
                    ),
                ));
            }
            if !suggested.contains(update) {
                return Err((
                    ErrorCode::BadMessage,
                    format!(
                        "`updatedPermissions[{n}]` is not one of this request's permission_suggestions"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Write the answer to the agent and forget the request.
    pub(super) fn resolve(&mut self, index: usize, answer: &Value) {
        let pending = self.pending.remove(index);
        if let Some(agent) = &self.agent
            && agent
                .send(wire::control_success(&pending.request_id, answer))
                .is_err()
        {
            tracing::warn!(session = %self.name, request_id = %pending.request_id, "agent stdin is gone; the answer was not delivered");
        }
    }

    pub(super) fn announce_resolved(
        &mut self,
        request_id: &str,
        answer: &Value,
        client_id: &str,
        info: Option<&crate::session::ClientInfo>,
    ) -> Step {
        self.announce_resolved_by(
            request_id,
            answer,
            client_id,
            info.map(|i| i.fingerprint.as_str()),
            info.and_then(|i| i.device.as_deref()),
        )
    }

    /// `relay.resolved` + audit record + the notifier's dismiss, for an answer by
    /// `client_id` with this key and device (none of either for the relay's timeout;
    /// no key for webhook and ntfy answers).
    pub(super) fn announce_resolved_by(
        &mut self,
        request_id: &str,
        answer: &Value,
        client_id: &str,
        fingerprint: Option<&str>,
        device: Option<&str>,
    ) -> Step {
        let mut event = json!({
            "type": "relay.resolved", "request_id": request_id, "client_id": client_id, "response": answer,
        });
        // docs/protocol.md §5.2 (`relay.resolved`): who answered, by fingerprint and (when given) device, so that
        // every other client can say so (the web client's `data-by`).
        if let Some(fp) = fingerprint {
            event["fingerprint"] = Value::from(fp);
        }
        if let Some(device) = device {
            event["device"] = Value::from(device);
        }
        self.emit_relay(event)?;
        self.shared.audit.record(
            "resolved",
            &self.name,
            json!({
                "request_id": request_id,
                "client_id": client_id,
                "fingerprint": fingerprint,
                "device": device,
                "decision": answer.get("behavior").cloned().unwrap_or(Value::from("answered")),
                "response": answer,
            }),
        );
        let by = device.or(fingerprint).unwrap_or(client_id);
        self.report_closed(request_id, Some(by.to_string()));
        Ok(())
    }

    /// A permission answered from a notification (§9), as `client_id:"push"` with
    /// the answerer's device. Only `can_use_tool` requests have tokens.
    pub(super) fn push_respond(
        &mut self,
        request_id: &str,
        action: crate::notify::tokens::Action,
        answerer: &crate::session::PushAnswerer,
    ) -> Result<crate::session::PushAnswer, JournalError> {
        use crate::session::PushAnswer;
        let Some(index) = self
            .pending
            .iter()
            .position(|p| p.request_id == request_id && p.subtype == "can_use_tool")
        else {
            return Ok(PushAnswer::NotPending);
        };
        if self.phase != Phase::Ready {
            return Ok(PushAnswer::Unavailable);
        }
        let response = json!({"behavior": action.as_str()});
        let answer = match permission_result(
            &response,
            self.pending[index].input.as_ref(),
            &answerer.device,
        ) {
            Ok(a) => a,
            // Not reachable: both answers are valid for can_use_tool.
            Err(_) => return Ok(PushAnswer::NotPending),
        };
        self.resolve(index, &answer);
        self.announce_resolved_by(
            request_id,
            &answer,
            "push",
            answerer.fingerprint.as_deref(),
            Some(&answerer.device),
        )?;
        Ok(PushAnswer::Resolved)
    }

    /// Tell the notifier a request opened (never waits).
    pub(super) fn report_opened(&self, request_id: &str, subtype: &str, line: &RawValue) {
        self.shared.notify.report(NotifyEvent::Opened {
            session: self.name.clone(),
            request_id: request_id.to_string(),
            subtype: subtype.to_string(),
            line: line.to_owned(),
        });
    }

    /// Tell the notifier a request is no longer pending (never waits).
    pub(super) fn report_closed(&self, request_id: &str, by: Option<String>) {
        self.shared.notify.report(NotifyEvent::Closed {
            session: self.name.clone(),
            request_id: request_id.to_string(),
            by,
        });
    }

    pub(super) fn interrupt(&mut self, client: ClientHandle, id: Option<RequestId>) -> Step {
        if !self.require_attached(&client, &id) {
            return Ok(());
        }
        if self.asleep && self.agent.is_none() {
            // Nothing runs, so nothing to interrupt (§4.11).
            self.deferred.push((client, ServerMsg::ok(id).to_json()));
            return Ok(());
        }
        if self.phase != Phase::Ready || self.stopping.is_some() {
            self.reply_error(
                &client,
                id,
                ErrorCode::AgentUnavailable,
                format!("the agent is {}", self.state.as_str()),
            );
            return Ok(());
        }
        let Some(prompt_id) = self.turn.clone() else {
            // No turn running: nothing to do, and nothing to wait for.
            self.deferred.push((client, ServerMsg::ok(id).to_json()));
            return Ok(());
        };
        self.interrupt_counter += 1;
        let request_id = format!(
            "req_interrupt_{}_{}",
            self.generation, self.interrupt_counter
        );
        if let Some(agent) = &self.agent
            && agent.send(wire::interrupt(&request_id)).is_err()
        {
            self.reply_error(
                &client,
                id,
                ErrorCode::AgentUnavailable,
                "the agent is not accepting input",
            );
            return Ok(());
        }
        self.interrupts.push(InterruptWaiter {
            client,
            id,
            request_id,
            prompt_id,
        });
        Ok(())
    }

    /// Release the `ok` of every interrupt whose effect is complete: the turn it
    /// targeted is over (ended after the interrupt, or aborted with its agent).
    pub(super) fn settle_interrupts(&mut self) {
        let running = self.turn.clone();
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.interrupts)
            .into_iter()
            .partition(|w| running.as_deref() != Some(w.prompt_id.as_str()));
        self.interrupts = waiting;
        for w in done {
            self.deferred
                .push((w.client, ServerMsg::ok(w.id).to_json()));
        }
    }

    pub(super) fn restart_requested(
        &mut self,
        client: ClientHandle,
        id: Option<RequestId>,
    ) -> Step {
        self.restart_waiters.push((client, id));
        self.restart.reset();
        self.failed_until = None;
        self.restart_at = None;
        // A restart wanted while the agent is stopped to sleep: start it again.
        self.going_to_sleep = false;
        match (&self.agent, &self.phase) {
            (Some(agent), _) if self.stopping.is_none() => {
                tracing::info!(session = %self.name, pid = agent.pid, "restart requested: stopping the agent");
                self.stopping = Some(StopCause::Stopped);
                agent.signal_group(Signal::SIGTERM);
                self.stop_deadline = Some(Instant::now() + self.settings.agent.stop_grace);
            }
            (Some(_), _) => {} // already stopping; it restarts when it is gone
            (None, _) => {
                self.next_detail = Some("restart requested".into());
                self.launch_agent();
            }
        }
        Ok(())
    }
}

/// The first non-empty line of a prompt's text (a string, or its first text
/// block), at most 80 characters: a session's title until it has a better one.
fn first_line_of(content: &PromptContent) -> Option<String> {
    let value: Value = serde_json::from_str(content.0.get()).ok()?;
    let text = match &value {
        Value::String(s) => s.as_str(),
        Value::Array(blocks) => blocks.iter().find_map(|b| {
            (b.get("type")?.as_str()? == "text").then(|| b.get("text")?.as_str())?
        })?,
        _ => return None,
    };
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(super::clip_chars(line, 80))
}
