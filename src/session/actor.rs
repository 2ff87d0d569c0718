//! The session actor: one task that owns everything about one session and
//! processes, in order, what connections ask, what the agent says, and timers.
//!
//! Ordering rules it upholds (PROTOCOL.md §2, §5):
//! - every event is appended to the journal (and committed per the fsync policy)
//!   before it is pushed to any client;
//! - a direct reply is pushed before the events its request causes, except the
//!   `ok` of `interrupt` and `session.restart`, pushed after the events of their effect;
//! - an attach's replay and its registration happen in the same step, so the
//!   replay ends exactly where live events begin.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::recovery::{self, PROMPT_KEY_TTL_MS};
use super::{
    ClientHandle, Outbound, SessionCmd, SessionError, SessionHandle, SessionSettings,
    SessionShared, SessionState, SessionStatus,
};
use crate::agent::process::{self as agent_process, AgentOutput, AgentProcess, SpawnSpec, Tagged};
use crate::agent::restart::{RestartPolicy, Verdict};
use crate::agent::wire::{self, AgentLine, ResponseEnvelope};
use crate::journal::{self, Journal, JournalError};
use crate::metrics::Metrics;
use crate::protocol::{
    ErrorCode, FrameText, PromptContent, ProtocolError, ReplayStart, RequestId, ServerMsg,
    event_frame, permission_result,
};
use crate::session::outbox::JournalReplay;

/// Agent lines handled per step before the actor commits and looks at commands.
const AGENT_BATCH: usize = 256;
/// Agent output waiting for the actor (bounded: a flooding agent waits on its pipe).
const AGENT_OUTPUT_QUEUE: usize = 4096;
/// A fresh agent must answer `initialize` within this long (or the probe timeout, if longer).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long after SIGKILL a process may take to be reaped before we stop waiting.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// Start the actor of one session: recover its journal, end a survivor agent, spawn the task.
pub fn spawn(
    settings: SessionSettings,
    shared: SessionShared,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Result<SessionHandle, SessionError> {
    std::fs::create_dir_all(&settings.dir).map_err(|source| SessionError::Io {
        session: settings.name.clone(),
        source,
    })?;
    if let Some(pid) = agent_process::end_survivor(&settings.dir) {
        tracing::warn!(session = %settings.name, pid, "ended an agent left running by a previous relay");
    }
    let opened = Journal::open(&settings.dir.join("journal"), settings.journal)?;
    if opened.repaired_bytes > 0 {
        tracing::warn!(session = %settings.name, bytes = opened.repaired_bytes, "dropped a torn record at the end of the journal");
    }
    let journal = opened.journal;
    let recovered = recovery::recover(
        &journal,
        settings.tail_events,
        settings.tail_bytes,
        journal::now_ms(),
    )?;
    let conversation = read_meta(&settings.dir).or(recovered.conversation.clone());
    tracing::info!(
        session = %settings.name,
        head = recovered.head,
        open_prompts = recovered.open_prompts.len(),
        pending = recovered.pending.len(),
        conversation = conversation.as_deref().unwrap_or("-"),
        "session opened"
    );

    let name: Arc<str> = Arc::from(settings.name.as_str());
    let (cmd_tx, cmd_rx) = super::command_channel();
    let (agent_tx, agent_rx) = mpsc::channel(AGENT_OUTPUT_QUEUE);
    let status = SessionStatus {
        state: SessionState::Starting,
        detail: String::new(),
        head: recovered.head,
        clients: 0,
        agent_pid: None,
        agent_started: None,
        restarts: 0,
        pending: recovered.pending.len(),
        queued: 0,
    };
    let (status_tx, status_rx) = watch::channel(status);
    let now = Instant::now();
    let tail_account = shared.memory.tail();
    let actor = Actor {
        name_json: serde_json::to_string(&*name).unwrap_or_else(|_| "\"default\"".into()),
        name: name.clone(),
        metrics_label: Metrics::session_label(&name),
        restart: RestartPolicy::new(settings.agent.max_restarts, settings.agent.restart_window),
        log: EventLog {
            head: recovered.head,
            tail: recovered.tail,
            tail_bytes: recovered.tail_bytes,
            journal,
            max_events: settings.tail_events,
            max_bytes: settings.tail_bytes,
        },
        shared,
        clients: Vec::new(),
        state: SessionState::Starting,
        state_detail: String::new(),
        next_detail: None,
        agent: None,
        generation: 0,
        agent_tx,
        phase: Phase::Down,
        stopping: None,
        agent_started: None,
        ever_ready: false,
        shutting_down: false,
        queue: VecDeque::new(),
        turn: None,
        pending: recovered
            .pending
            .into_iter()
            .map(|p| Pending {
                request_id: p.request_id,
                subtype: p.subtype,
                input: p.input,
                raw: p.raw,
                deadline: None,
            })
            .collect(),
        prompt_keys: recovered.prompt_keys,
        conversation,
        fresh_start_used: false,
        conversation_missing: false,
        failed_until: None,
        restart_at: None,
        stop_deadline: None,
        probe: None,
        probe_counter: 0,
        last_output: now,
        interrupt_counter: 0,
        interrupts: Vec::new(),
        restart_waiters: Vec::new(),
        deferred: Vec::new(),
        uncommitted: Vec::new(),
        restarts_total: 0,
        journal_failure: None,
        tail_account,
        status_tx,
        settings,
    };
    let open_prompts = recovered.open_prompts;
    let span = tracing::info_span!("session", session = %name);
    tracker.spawn(tracing::Instrument::instrument(
        actor.run(cmd_rx, agent_rx, shutdown, open_prompts),
        span,
    ));
    Ok(SessionHandle {
        name,
        tx: cmd_tx,
        status: status_rx,
    })
}

/// The log: seq assignment, journal, and the in-memory tail used for replays.
struct EventLog {
    head: u64,
    tail: VecDeque<(u64, FrameText)>,
    tail_bytes: usize,
    journal: Journal,
    max_events: usize,
    max_bytes: usize,
}

impl EventLog {
    fn first_retained(&self) -> u64 {
        let tail_first = self.tail.front().map(|(s, _)| *s).unwrap_or(self.head + 1);
        tail_first.min(self.journal.first_seq()).max(1)
    }

    fn tail_first(&self) -> u64 {
        self.tail.front().map(|(s, _)| *s).unwrap_or(self.head + 1)
    }
}

/// Where the agent is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// No process.
    Down,
    /// Spawned; waiting for the reply to `initialize`.
    Starting { init_id: String, deadline: Instant },
    /// Answering; prompts may be written.
    Ready,
}

/// Why the relay is ending the current process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopCause {
    Stopped,
    Hung,
}

/// What happens after the agent process ended.
#[derive(Debug, Clone, Copy)]
enum ExitPlan {
    StayDown,
    RestartNow,
    RestartAfter(Duration),
    Fail(Instant),
}

struct Pending {
    request_id: String,
    subtype: String,
    input: Option<Value>,
    raw: Box<RawValue>,
    deadline: Option<Instant>,
}

struct QueuedPrompt {
    prompt_id: String,
    content: PromptContent,
}

struct InterruptWaiter {
    client: ClientHandle,
    id: Option<RequestId>,
    request_id: String,
    /// The turn it was sent for.
    prompt_id: String,
}

struct Actor {
    name: Arc<str>,
    name_json: String,
    metrics_label: crate::metrics::SessionLabel,
    settings: SessionSettings,
    shared: SessionShared,
    log: EventLog,
    restart: RestartPolicy,
    clients: Vec<ClientHandle>,
    state: SessionState,
    state_detail: String,
    next_detail: Option<String>,
    agent: Option<AgentProcess>,
    generation: u64,
    agent_tx: mpsc::Sender<Tagged>,
    phase: Phase,
    stopping: Option<StopCause>,
    agent_started: Option<(Instant, SystemTime)>,
    ever_ready: bool,
    shutting_down: bool,
    queue: VecDeque<QueuedPrompt>,
    turn: Option<String>,
    pending: Vec<Pending>,
    prompt_keys: HashMap<(String, String), (String, u64)>,
    conversation: Option<String>,
    fresh_start_used: bool,
    conversation_missing: bool,
    failed_until: Option<Instant>,
    restart_at: Option<Instant>,
    stop_deadline: Option<Instant>,
    probe: Option<(String, Instant)>,
    probe_counter: u64,
    last_output: Instant,
    interrupt_counter: u64,
    interrupts: Vec<InterruptWaiter>,
    restart_waiters: Vec<(ClientHandle, Option<RequestId>)>,
    /// Replies that confirm an effect: pushed after the step's events are committed.
    deferred: Vec<(ClientHandle, String)>,
    /// Events appended this step, not yet sent: (seq, frame, agent read time).
    uncommitted: Vec<(u64, FrameText, Option<Instant>)>,
    restarts_total: u64,
    /// A journal error hit where it could not be returned (start_agent); raised at step end.
    journal_failure: Option<JournalError>,
    /// The tail's bytes, reported to the memory guard at every step.
    tail_account: crate::guard::TailAccount,
    status_tx: watch::Sender<SessionStatus>,
}

type Step = Result<(), JournalError>;

impl Actor {
    async fn run(
        mut self,
        mut cmd_rx: mpsc::Receiver<SessionCmd>,
        mut agent_rx: mpsc::Receiver<Tagged>,
        shutdown: CancellationToken,
        open_prompts: Vec<recovery::OpenPrompt>,
    ) {
        let result = self
            .main_loop(&mut cmd_rx, &mut agent_rx, &shutdown, open_prompts)
            .await;
        if let Err(e) = &result {
            // Logged once, by the server, when it acts on the fault.
            self.shared
                .fatal
                .raise(format!("session {}: {e}", self.name));
        }
        self.stop_for_shutdown(&mut agent_rx).await;
        // Stop accepting commands; connections get `SessionGone`.
        cmd_rx.close();
    }

    async fn main_loop(
        &mut self,
        cmd_rx: &mut mpsc::Receiver<SessionCmd>,
        agent_rx: &mut mpsc::Receiver<Tagged>,
        shutdown: &CancellationToken,
        open_prompts: Vec<recovery::OpenPrompt>,
    ) -> Step {
        for open in open_prompts {
            // A prompt that never reached the agent was queued when the server stopped;
            // one that had started was running when the server died without cleanup
            // (a clean stop aborts running turns itself).
            let detail = if open.started {
                "server_crashed"
            } else {
                "server_stopped"
            };
            self.emit_relay(json!({
                "type": "relay.turn", "prompt_id": open.prompt_id, "phase": "aborted", "detail": detail,
            }))?;
        }
        self.start_agent();
        self.finish_step()?;
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                Some(first) = agent_rx.recv() => {
                    self.on_agent_output(first)?;
                    for _ in 1..AGENT_BATCH {
                        match agent_rx.try_recv() {
                            Ok(more) => self.on_agent_output(more)?,
                            Err(_) => break,
                        }
                    }
                }
                Some(cmd) = cmd_rx.recv() => self.on_command(cmd)?,
                _ = sleep_until(deadline.into()) => self.on_timer()?,
            }
            self.finish_step()?;
        }
    }

    /// End of every step: announce a state change, commit and send events, then
    /// send replies that confirm an effect, then publish the status snapshot.
    fn finish_step(&mut self) -> Step {
        if let Some(e) = self.journal_failure.take() {
            return Err(e);
        }
        self.sync_state()?;
        self.commit()?;
        for (client, text) in std::mem::take(&mut self.deferred) {
            let _ = client.outbox.frame("ok", text);
        }
        self.publish_status();
        Ok(())
    }

    // ---------------------------------------------------------------- events

    /// Append one event (raw JSON object bytes) to the log; it is sent at commit.
    fn emit(&mut self, raw: &[u8], read_at: Option<Instant>) -> Step {
        let seq = self.log.head + 1;
        let frame = event_frame(&self.name_json, seq, raw);
        self.log
            .journal
            .append(seq, journal::now_ms(), frame.as_bytes())?;
        self.log.head = seq;
        let text = FrameText::from(frame);
        self.log.tail_bytes += text.len();
        self.log.tail.push_back((seq, text.clone()));
        while self.log.tail.len() > self.log.max_events
            || (self.log.tail_bytes > self.log.max_bytes && self.log.tail.len() > 1)
        {
            if let Some((_, old)) = self.log.tail.pop_front() {
                self.log.tail_bytes -= old.len();
            }
        }
        self.uncommitted.push((seq, text, read_at));
        self.shared
            .metrics
            .events_appended
            .get_or_create(&self.metrics_label)
            .inc();
        Ok(())
    }

    fn emit_relay(&mut self, event: Value) -> Step {
        self.emit(event.to_string().as_bytes(), None)
    }

    /// Make this step's events durable, then push them to every attached client.
    fn commit(&mut self) -> Step {
        if self.uncommitted.is_empty() {
            return Ok(());
        }
        self.log.journal.check_alive()?;
        if let Some(fsync) = self.log.journal.commit()? {
            self.shared
                .metrics
                .journal_fsync_seconds
                .observe(fsync.as_secs_f64());
        }
        self.shared
            .metrics
            .journal_bytes
            .get_or_create(&self.metrics_label)
            .set(self.log.journal.bytes() as i64);
        let events = std::mem::take(&mut self.uncommitted);
        let mut lagged = Vec::new();
        for client in &self.clients {
            for (seq, text, read_at) in &events {
                let pushed = client.outbox.push(Outbound::Event {
                    session: self.name.clone(),
                    seq: *seq,
                    text: text.clone(),
                    read_at: *read_at,
                });
                if pushed.is_err() {
                    lagged.push(client.info.conn_id);
                    break;
                }
            }
        }
        if !lagged.is_empty() {
            self.drop_clients(&lagged);
        }
        Ok(())
    }

    /// Forget clients that lagged or went away, and tell the others.
    fn drop_clients(&mut self, conn_ids: &[u64]) {
        let before = self.clients.len();
        self.clients.retain(|c| !conn_ids.contains(&c.info.conn_id));
        if self.clients.len() != before {
            self.broadcast_presence();
        }
    }

    fn broadcast_presence(&mut self) {
        // Pushing presence may itself reveal more lagging clients; repeat until stable.
        loop {
            let text = FrameText::from(
                ServerMsg::Presence {
                    session: self.name.to_string(),
                    clients: self.clients.iter().map(|c| c.info.entry()).collect(),
                }
                .to_json(),
            );
            let gone: Vec<u64> = self
                .clients
                .iter()
                .filter(|c| c.outbox.frame("presence", text.clone()).is_err())
                .map(|c| c.info.conn_id)
                .collect();
            if gone.is_empty() {
                break;
            }
            self.clients.retain(|c| !gone.contains(&c.info.conn_id));
        }
        self.shared
            .metrics
            .clients_attached
            .get_or_create(&self.metrics_label)
            .set(self.clients.len() as i64);
    }

    // -------------------------------------------------------------- commands

    fn on_command(&mut self, cmd: SessionCmd) -> Step {
        match cmd {
            SessionCmd::Attach { client, id, start } => self.attach(client, id, start),
            SessionCmd::Detach { client, id } => {
                let msg = ServerMsg::Detached {
                    id,
                    session: self.name.to_string(),
                };
                let _ = client.outbox.frame("detached", msg.to_json());
                self.drop_clients(&[client.info.conn_id]);
                Ok(())
            }
            SessionCmd::Leave { conn_id } => {
                self.drop_clients(&[conn_id]);
                Ok(())
            }
            SessionCmd::Prompt {
                client,
                id,
                content,
                key,
            } => self.prompt(client, id, content, key),
            SessionCmd::Respond {
                client,
                id,
                request_id,
                response,
            } => self.respond(client, id, request_id, response),
            SessionCmd::Interrupt { client, id } => self.interrupt(client, id),
            SessionCmd::Restart { client, id } => self.restart_requested(client, id),
        }
    }

    fn is_attached(&self, client: &ClientHandle) -> bool {
        self.clients
            .iter()
            .any(|c| c.info.conn_id == client.info.conn_id)
    }

    fn reply_error(
        &self,
        client: &ClientHandle,
        id: Option<RequestId>,
        code: ErrorCode,
        msg: impl Into<String>,
    ) {
        self.shared.metrics.error_sent(code);
        let _ = client.outbox.frame(
            "error",
            ProtocolError::new(code, msg).with_id(id).to_frame(),
        );
    }

    fn attach(&mut self, client: ClientHandle, id: Option<RequestId>, start: ReplayStart) -> Step {
        // A second attach on the same connection starts over with a fresh replay.
        let was_attached = self.is_attached(&client);
        self.clients
            .retain(|c| c.info.conn_id != client.info.conn_id);

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
            reader: self.log.journal.reader(),
            from: replay_from,
            to: tail_first - 1,
        });
        let tail_part: Vec<(u64, FrameText)> = self
            .log
            .tail
            .iter()
            .filter(|(seq, _)| *seq >= replay_from)
            .map(|(seq, t)| (*seq, t.clone()))
            .collect();

        self.clients.push(client.clone());
        let reply = ServerMsg::Attached {
            id,
            session: self.name.to_string(),
            state: self.state.as_str(),
            head,
            replay_from,
            truncated,
            pending: self.pending.iter().map(|p| p.raw.clone()).collect(),
            clients: self.clients.iter().map(|c| c.info.entry()).collect(),
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
        if pushed.is_err() {
            self.clients
                .retain(|c| c.info.conn_id != client.info.conn_id);
        }
        tracing::debug!(session = %self.name, client_id = %client.info.client_id, head, replay_from, truncated, "client attached");
        if pushed.is_ok() || was_attached {
            self.broadcast_presence();
        }
        Ok(())
    }

    fn prompt(
        &mut self,
        client: ClientHandle,
        id: Option<RequestId>,
        content: PromptContent,
        key: Option<String>,
    ) -> Step {
        if !self.is_attached(&client) {
            self.reply_error(
                &client,
                id,
                ErrorCode::NotAttached,
                format!("attach to session {} first", self.name),
            );
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
                };
                let _ = client.outbox.frame("ok", msg.to_json());
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
        if self.queue.len() >= self.settings.prompt_queue {
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
        let queued = !(self.can_start_turn() && self.queue.is_empty());
        let reply = ServerMsg::Ok {
            id,
            prompt_id: Some(prompt_id.clone()),
            queued: Some(queued),
            duplicate: None,
        };
        let _ = client.outbox.frame("ok", reply.to_json());

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
        self.queue.push_back(QueuedPrompt { prompt_id, content });
        self.maybe_start_turn()
    }

    fn prune_prompt_keys(&mut self) {
        if self.prompt_keys.len() > 4096 {
            let now = journal::now_ms();
            self.prompt_keys
                .retain(|_, (_, at)| now.saturating_sub(*at) < PROMPT_KEY_TTL_MS);
        }
    }

    /// Whether a prompt could be written to the agent right now: it answers, no
    /// turn is running, and it is not being stopped.
    fn can_start_turn(&self) -> bool {
        self.phase == Phase::Ready && self.turn.is_none() && self.stopping.is_none()
    }

    /// Write the next queued prompt to the agent when it can take one.
    fn maybe_start_turn(&mut self) -> Step {
        if !self.can_start_turn() {
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
        Ok(())
    }

    fn respond(
        &mut self,
        client: ClientHandle,
        id: Option<RequestId>,
        request_id: String,
        response: Value,
    ) -> Step {
        if !self.is_attached(&client) {
            self.reply_error(
                &client,
                id,
                ErrorCode::NotAttached,
                format!("attach to session {} first", self.name),
            );
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
        self.resolve(index, &answer);
        let _ = client.outbox.frame("ok", ServerMsg::ok(id).to_json());
        // The `ok` is already queued; now the event, so the reply comes first.
        self.announce_resolved(
            &request_id,
            &answer,
            &client.info.client_id,
            Some(&client.info),
        )
    }

    /// Write the answer to the agent and forget the request.
    fn resolve(&mut self, index: usize, answer: &Value) {
        let pending = self.pending.remove(index);
        if let Some(agent) = &self.agent
            && agent
                .send(wire::control_success(&pending.request_id, answer))
                .is_err()
        {
            tracing::warn!(session = %self.name, request_id = %pending.request_id, "agent stdin is gone; the answer was not delivered");
        }
    }

    fn announce_resolved(
        &mut self,
        request_id: &str,
        answer: &Value,
        client_id: &str,
        info: Option<&super::ClientInfo>,
    ) -> Step {
        self.emit_relay(json!({
            "type": "relay.resolved", "request_id": request_id, "client_id": client_id, "response": answer,
        }))?;
        self.shared.audit.record(
            "resolved",
            &self.name,
            json!({
                "request_id": request_id,
                "client_id": client_id,
                "fingerprint": info.map(|i| i.fingerprint.clone()),
                "device": info.and_then(|i| i.device.clone()),
                "decision": answer.get("behavior").cloned().unwrap_or(Value::from("answered")),
                "response": answer,
            }),
        );
        Ok(())
    }

    fn interrupt(&mut self, client: ClientHandle, id: Option<RequestId>) -> Step {
        if !self.is_attached(&client) {
            self.reply_error(
                &client,
                id,
                ErrorCode::NotAttached,
                format!("attach to session {} first", self.name),
            );
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
    fn settle_interrupts(&mut self) {
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

    fn restart_requested(&mut self, client: ClientHandle, id: Option<RequestId>) -> Step {
        self.restart_waiters.push((client, id));
        self.restart.reset();
        self.failed_until = None;
        self.restart_at = None;
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
                self.start_agent();
            }
        }
        Ok(())
    }

    // ----------------------------------------------------------------- agent

    fn start_agent(&mut self) {
        self.generation += 1;
        self.restart_at = None;
        let spec = SpawnSpec {
            session: self.name.to_string(),
            workdir: self.settings.workdir.clone(),
            resume: self.conversation.clone(),
            generation: self.generation,
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

    fn on_agent_output(&mut self, tagged: Tagged) -> Step {
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
                    self.on_result()?;
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

    fn on_agent_line(&mut self, line: &[u8]) -> Step {
        let read_at = Some(Instant::now());
        match wire::classify(line) {
            AgentLine::NotJson => {
                let preview: String = String::from_utf8_lossy(&line[..line.len().min(200)]).into();
                tracing::warn!(session = %self.name, line = %preview, "agent wrote a line that is not a JSON object; skipped");
                Ok(())
            }
            AgentLine::KeepAlive => Ok(()),
            AgentLine::ControlResponse(env) => self.on_control_response(env),
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
                    let deadline = (subtype == "can_use_tool")
                        .then_some(self.settings.permission_timeout)
                        .flatten()
                        .map(|t| Instant::now() + t);
                    self.pending.retain(|p| p.request_id != request_id);
                    self.pending.push(Pending {
                        request_id,
                        subtype,
                        input,
                        raw,
                        deadline,
                    });
                }
                Ok(())
            }
            AgentLine::ControlCancel { request_id } => {
                self.emit(line, read_at)?;
                self.pending.retain(|p| p.request_id != request_id);
                Ok(())
            }
            AgentLine::SystemInit { session_id } => {
                self.emit(line, read_at)?;
                if let Some(id) = session_id
                    && self.conversation.as_deref() != Some(id.as_str())
                {
                    tracing::info!(session = %self.name, conversation = %id, "agent conversation id");
                    write_meta(&self.settings.dir, &id);
                    self.conversation = Some(id);
                }
                Ok(())
            }
            AgentLine::Result => {
                self.emit(line, read_at)?;
                self.on_result()
            }
            AgentLine::Other => self.emit(line, read_at),
        }
    }

    /// The running turn's `result` was seen: the turn ended; the next prompt may go.
    fn on_result(&mut self) -> Step {
        if let Some(prompt_id) = self.turn.take() {
            self.emit_relay(
                json!({"type": "relay.turn", "prompt_id": prompt_id, "phase": "ended"}),
            )?;
            self.settle_interrupts();
            self.maybe_start_turn()?;
        }
        Ok(())
    }

    fn on_control_response(&mut self, env: ResponseEnvelope) -> Step {
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
    fn on_ready(&mut self, env: ResponseEnvelope) -> Step {
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
            self.emit_relay(json!({"type": "relay.cancelled", "request_id": request_id, "reason": "agent_restarted"}))?;
        }
        for (client, id) in std::mem::take(&mut self.restart_waiters) {
            self.deferred.push((client, ServerMsg::ok(id).to_json()));
        }
        self.maybe_start_turn()
    }

    fn on_agent_exit(&mut self, info: agent_process::ExitInfo) -> Step {
        let cause = match self.stopping {
            Some(StopCause::Stopped) => "stopped",
            Some(StopCause::Hung) => "hung",
            None => "crashed",
        };
        let was_starting = matches!(self.phase, Phase::Starting { .. });
        let uptime = self
            .agent_started
            .map(|(t, _)| t.elapsed())
            .unwrap_or_default();
        let pid = self.agent.as_ref().map(|a| a.pid).unwrap_or(0);
        self.agent = None;
        self.phase = Phase::Down;
        self.probe = None;
        self.stop_deadline = None;
        self.agent_started = None;
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
                cause,
            })
            .inc();
        tracing::warn!(session = %self.name, pid, cause, code = ?info.code, signal = ?info.signal, "agent exited");

        let resume_failed = was_starting
            && self.conversation_missing
            && self.conversation.is_some()
            && !self.fresh_start_used
            && cause == "crashed";
        let plan = if self.shutting_down {
            ExitPlan::StayDown
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
        if let Some(prompt_id) = self.turn.take() {
            // The cause (`stopped` at shutdown); `server_stopped` is reserved for
            // prompts that were still queued and never reached the agent.
            self.emit_relay(json!({"type": "relay.turn", "prompt_id": prompt_id, "phase": "aborted", "detail": cause}))?;
        }
        self.settle_interrupts();
        self.stopping = None;
        let why = format!("agent {cause} ({})", describe_exit(&info));
        match plan {
            ExitPlan::StayDown => {}
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

    fn schedule_restart(&mut self, delay: Duration, why: &str) {
        self.restart_at = Some(Instant::now() + delay);
        self.next_detail = Some(format!("{why}; restarting in {:.1} s", delay.as_secs_f64()));
    }

    /// Too many unexpected exits: stay down until `until` or an owner's restart.
    fn fail(&mut self, until: Instant, why: &str) -> Step {
        self.failed_until = Some(until);
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
    fn after_failed_spawn(&mut self, why: &str) -> Step {
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

    fn cancel_all_pending(&mut self, reason: &str) -> Step {
        for p in std::mem::take(&mut self.pending) {
            self.emit_relay(
                json!({"type": "relay.cancelled", "request_id": p.request_id, "reason": reason}),
            )?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- timers

    fn next_deadline(&self) -> Instant {
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
        if self.phase == Phase::Ready && self.stopping.is_none() {
            match &self.probe {
                Some((_, deadline)) => consider(Some(*deadline)),
                None => consider(Some(self.last_output + self.settings.agent.probe_interval)),
            }
        }
        consider(self.stop_deadline);
        consider(self.restart_at);
        consider(self.failed_until);
        for p in &self.pending {
            consider(p.deadline);
        }
        consider(self.log.journal.next_interval_sync());
        next
    }

    fn on_timer(&mut self) -> Step {
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
            self.start_agent();
        }
        if self.failed_until.is_some_and(|t| now >= t) && self.agent.is_none() {
            self.failed_until = None;
            self.restart.reset();
            self.next_detail = Some("restart window passed; trying again".into());
            self.start_agent();
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
        if self.log.journal.needs_interval_sync() {
            let took = self.log.journal.sync()?;
            self.shared
                .metrics
                .journal_fsync_seconds
                .observe(took.as_secs_f64());
        }
        Ok(())
    }

    fn kill_hung(&mut self) {
        if let Some(agent) = &self.agent {
            self.stopping = Some(StopCause::Hung);
            agent.signal_group(Signal::SIGKILL);
        }
    }

    // ----------------------------------------------------------------- state

    fn derive_state(&self) -> SessionState {
        if self.shutting_down && self.agent.is_none() {
            return SessionState::Stopped;
        }
        if self.failed_until.is_some() && self.agent.is_none() {
            return SessionState::Failed;
        }
        match self.phase {
            Phase::Down | Phase::Starting { .. } => {
                if self.ever_ready {
                    SessionState::Restarting
                } else {
                    SessionState::Starting
                }
            }
            Phase::Ready if self.stopping.is_some() => SessionState::Restarting,
            Phase::Ready => match &self.turn {
                None => SessionState::Idle,
                Some(_) if self.pending.iter().any(|p| p.subtype == "can_use_tool") => {
                    SessionState::AwaitingPermission
                }
                Some(_) => SessionState::Busy,
            },
        }
    }

    /// Announce the derived state when it changed, or when it stayed the same but
    /// there is news about it (a second restart attempt, say).
    fn sync_state(&mut self) -> Step {
        let state = self.derive_state();
        let news = self
            .next_detail
            .as_ref()
            .is_some_and(|d| *d != self.state_detail);
        if state == self.state && !news {
            self.next_detail = None;
            return Ok(());
        }
        let detail = self.next_detail.take().unwrap_or_default();
        self.state = state;
        self.state_detail = detail.clone();
        let mut event = json!({"type": "relay.state", "state": state.as_str()});
        if !detail.is_empty() {
            event["detail"] = Value::from(detail);
        }
        tracing::info!(session = %self.name, state = state.as_str(), detail = %self.state_detail, "session state");
        self.emit_relay(event)
    }

    fn publish_status(&mut self) {
        self.tail_account.set(self.log.tail_bytes);
        let status = SessionStatus {
            state: self.state,
            detail: self.state_detail.clone(),
            head: self.log.head,
            clients: self.clients.len(),
            agent_pid: self.agent.as_ref().map(|a| a.pid),
            agent_started: self.agent_started.map(|(_, t)| t),
            restarts: self.restarts_total,
            pending: self.pending.len(),
            queued: self.queue.len(),
        };
        self.shared
            .metrics
            .pending_requests
            .get_or_create(&self.metrics_label)
            .set(self.pending.len() as i64);
        self.shared
            .metrics
            .queued_prompts
            .get_or_create(&self.metrics_label)
            .set(self.queue.len() as i64);
        self.status_tx.send_replace(status);
    }

    // -------------------------------------------------------------- shutdown

    /// Stop the agent (SIGTERM to its group, SIGKILL after the grace period),
    /// record what happened, and make the journal durable.
    async fn stop_for_shutdown(&mut self, agent_rx: &mut mpsc::Receiver<Tagged>) {
        self.shutting_down = true;
        self.restart_at = None;
        if let Some(agent) = &self.agent {
            tracing::info!(session = %self.name, pid = agent.pid, "stopping the agent");
            self.stopping = Some(StopCause::Stopped);
            agent.signal_group(Signal::SIGTERM);
            let grace = tokio::time::Instant::now() + self.settings.agent.stop_grace;
            let mut killed = false;
            while self.agent.is_some() {
                let deadline = if killed { grace + REAP_TIMEOUT } else { grace };
                match tokio::time::timeout_at(deadline, agent_rx.recv()).await {
                    Ok(Some(out)) => {
                        if let Err(e) = self.on_agent_output(out) {
                            tracing::error!(session = %self.name, error = %e, "journal failed while stopping");
                        }
                    }
                    Ok(None) => break,
                    Err(_) if !killed => {
                        if let Some(agent) = &self.agent {
                            tracing::warn!(session = %self.name, pid = agent.pid, "agent ignored SIGTERM: sending SIGKILL");
                            agent.signal_group(Signal::SIGKILL);
                        }
                        killed = true;
                    }
                    Err(_) => break,
                }
            }
        }
        let _ = self.sync_state();
        if let Err(e) = self.commit() {
            tracing::error!(session = %self.name, error = %e, "journal failed while stopping");
        }
        if let Err(e) = self.log.journal.sync() {
            tracing::error!(session = %self.name, error = %e, "journal fsync failed while stopping");
        }
        self.publish_status();
        tracing::info!(session = %self.name, head = self.log.head, "session stopped");
    }
}

fn describe_exit(info: &agent_process::ExitInfo) -> String {
    match (&info.code, &info.signal) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by {sig}"),
        (None, None) => "exit status unknown".into(),
    }
}

fn format_secs(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{}", secs as u64)
    } else {
        format!("{secs}")
    }
}

fn meta_path(dir: &std::path::Path) -> PathBuf {
    dir.join("meta.json")
}

fn read_meta(dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(meta_path(dir)).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.get("conversation_id")?.as_str().map(str::to_string)
}

/// Remember the conversation to resume (atomically: temp file, then rename).
fn write_meta(dir: &std::path::Path, conversation: &str) {
    let tmp = dir.join("meta.json.tmp");
    let body = json!({"conversation_id": conversation}).to_string();
    let result = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, meta_path(dir)));
    if let Err(e) = result {
        tracing::error!(dir = %dir.display(), error = %e, "cannot record the conversation id");
    }
}

fn clear_meta(dir: &std::path::Path) {
    let _ = std::fs::remove_file(meta_path(dir));
}
