//! The session actor: one task that owns everything about one session and
//! processes, in order, what connections ask, what the agent says, and timers.
//!
//! Ordering rules it upholds (docs/protocol.md §2.1, §5.4):
//! - every event is appended to the journal (and committed per the fsync policy)
//!   before it is pushed to any client. The writing happens on the journal's own
//!   thread ([`JournalWriter`]): a step hands its events over and the actor goes on
//!   serving; the events (and the replies that confirm them) are pushed when the
//!   writer acknowledges them, in the order they were handed over;
//! - a direct reply is pushed before the events its request causes, except the
//!   `ok` of `interrupt` and `session.restart`, pushed after the events of their effect;
//! - an attach's replay and its registration happen in the same step, so the
//!   replay ends exactly where live events begin.

use std::collections::{BTreeMap, HashMap, VecDeque};
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
use super::scheduled::ScheduledStore;
use super::slots::{Acquired, SlotMember, SlotMsg, SlotPermit};
use super::{
    ClientHandle, Outbound, SessionCmd, SessionError, SessionHandle, SessionSettings,
    SessionShared, SessionState, SessionStatus,
};
use crate::agent::process::{self as agent_process, AgentOutput, AgentProcess, SpawnSpec, Tagged};
use crate::agent::restart::{RestartPolicy, Verdict};
use crate::agent::wire::{self, AgentLine, ResponseEnvelope};
use crate::journal::{
    self, CommitAck, CommitReport, JournalError, JournalReader, JournalWriter, PendingRecord,
};
use crate::metrics::Metrics;
use crate::notify::NotifyEvent;
use crate::session::listed::ListedClients;
use crate::session::outbox::JournalReplay;
use crate::session::presence::{self, Presence};
use crate::ws::FrameText;
use ccrelay_protocol::{
    ErrorCode, FrameType, PromptContent, ProtocolError, ReplayStart, RequestId, ServerMsg,
    event_frame, permission_result,
};

mod changes;
mod controls;
mod history;
mod lifecycle;
mod on_demand;
mod requests;
mod scheduling;

/// Agent lines handled per step before the actor commits and looks at commands.
const AGENT_BATCH: usize = 256;
/// Commands handled per step (group commit: their events share one journal write
/// and fsync). Attach, detach, leave and history commit what came before them.
const COMMAND_BATCH: usize = 64;
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
    crate::datadir::create_dir_all(&settings.dir).map_err(|source| SessionError::Io {
        session: settings.name.clone(),
        source,
    })?;
    if let Some(pid) = agent_process::end_survivor(&settings.dir) {
        tracing::warn!(session = %settings.name, pid, "ended an agent left running by a previous relay");
    }
    // The writer thread opens the journal (and repairs a torn tail) itself.
    let (writer, opened) = JournalWriter::open(&settings.dir.join("journal"), settings.journal)?;
    if opened.repaired_bytes > 0 {
        tracing::warn!(session = %settings.name, bytes = opened.repaired_bytes, "dropped a torn record at the end of the journal");
    }
    let recovered = recovery::recover(
        opened.head,
        &opened.reader,
        settings.tail_events,
        settings.tail_bytes,
        journal::now_ms(),
    )?;
    let conversation = read_meta(&settings.dir)
        .or(recovered.conversation.clone())
        .or(settings.resume.clone());
    tracing::info!(
        session = %settings.name,
        head = recovered.head,
        open_prompts = recovered.open_prompts.len(),
        pending = recovered.pending.len(),
        conversation = conversation.as_deref().unwrap_or("-"),
        "session opened"
    );

    let name: Arc<str> = Arc::from(settings.name.as_str());
    let (slot_member, slot_rx) = shared.slots.join();
    // A session that opens asleep says so only when its journal does not
    // already end asleep: restarts add no events (§4.11).
    let opens_asleep = !settings.start_agent;
    let initial_state =
        if opens_asleep && recovered.last_state.as_deref() == Some(SessionState::Asleep.as_str()) {
            SessionState::Asleep
        } else {
            SessionState::Starting
        };
    let (cmd_tx, cmd_rx) = super::command_channel();
    let (agent_tx, agent_rx) = mpsc::channel(AGENT_OUTPUT_QUEUE);
    let controls = controls::Controls::load(&settings.dir, &settings.initial_settings);
    // Scheduled prompts wait on: the journal shows them accepted and not ended.
    // A file the journal does not back (written, then the server died before the
    // event was) was never announced and is dropped.
    let mut scheduled = ScheduledStore::open(&settings.dir, &settings.name);
    let mut open_prompts = recovered.open_prompts;
    scheduled.retain(|id| open_prompts.iter().any(|p| p.prompt_id == id && !p.started));
    open_prompts.retain(|p| !scheduled.contains(&p.prompt_id));
    let status = SessionStatus {
        state: initial_state,
        detail: String::new(),
        head: recovered.head,
        clients: 0,
        agent_pid: None,
        agent_started: None,
        restarts: 0,
        pending: recovered.pending.len(),
        queued: 0,
        conversation: conversation.as_deref().map(Arc::from),
        last_activity: SystemTime::now(),
        cost_usd: 0.0,
        first_prompt: None,
        pending_list: Arc::from(Vec::new()),
        settings: controls.settings(),
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
            durable: recovered.head,
            writer,
            reader: opened.reader,
            first_seq: opened.first_seq,
            next_interval_sync: None,
            sync_due: false,
            max_events: settings.tail_events,
            max_bytes: settings.tail_bytes,
        },
        shared,
        clients: BTreeMap::new(),
        presence: Presence::default(),
        listed: ListedClients::default(),
        state: initial_state,
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
        steers: Vec::new(),
        turn_started: None,
        pending: recovered
            .pending
            .into_iter()
            .map(|p| Pending {
                // A restored permission prompt keeps the timeout rule, counted from now.
                deadline: permission_deadline(&p.subtype, settings.permission_timeout),
                request_id: p.request_id,
                subtype: p.subtype,
                input: p.input,
                raw: p.raw,
            })
            .collect(),
        prompt_keys: recovered.prompt_keys,
        fork_pending: settings.fork,
        conversation,
        earlier_cost: 0.0,
        process_cost: None,
        first_prompt: None,
        last_activity: SystemTime::now(),
        pending_list: Arc::from(Vec::new()),
        closing: None,
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
        push_replies: Vec::new(),
        uncommitted: Vec::new(),
        uncommitted_records: Vec::new(),
        in_flight: VecDeque::new(),
        restarts_total: 0,
        journal_failure: None,
        tail_account,
        status_tx,
        slot_member,
        slot: None,
        waiting_slot: false,
        asleep: opens_asleep,
        going_to_sleep: false,
        idle_since: None,
        tasks: std::collections::HashSet::new(),
        changes: Default::default(),
        controls,
        scheduled,
        auto_continue: scheduling::AutoContinue::load(&settings.dir, settings.created_by.as_ref()),
        settings,
    };
    let span = tracing::info_span!("session", session = %name);
    tracker.spawn(tracing::Instrument::instrument(
        actor.run(cmd_rx, agent_rx, slot_rx, shutdown, open_prompts),
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
    /// The last seq the writer acknowledged (written, and fsynced per the policy).
    durable: u64,
    writer: JournalWriter,
    reader: JournalReader,
    /// The journal's first retained seq, as of the last acknowledgement.
    first_seq: u64,
    /// When an `interval` fsync is due, as of the last acknowledgement.
    next_interval_sync: Option<Instant>,
    /// The timer found an `interval` fsync due: queued to the writer at step end.
    sync_due: bool,
    max_events: usize,
    max_bytes: usize,
}

/// Events handed to the journal writer, waiting for its acknowledgement; with the
/// replies that may only go out after them.
struct InFlight {
    ack: CommitAck,
    events: Vec<(u64, FrameText, Option<Instant>)>,
    deferred: Vec<(ClientHandle, String)>,
    push_replies: Vec<(
        tokio::sync::oneshot::Sender<super::PushAnswer>,
        super::PushAnswer,
    )>,
}

/// What woke the actor.
enum Wake {
    Shutdown,
    Agent(Tagged),
    Command(SessionCmd),
    Written(Result<Result<CommitReport, JournalError>, tokio::sync::oneshot::error::RecvError>),
    Timer,
    Slot(SlotMsg),
    /// A turn snapshot answered (docs/protocol.md §11).
    Snapshot(Option<changes::SnapDone>),
    /// The keys in force changed (`false`: their watch ended).
    Keys(bool),
}

/// The acknowledgement of the oldest write in flight (never, when none is).
async fn oldest_ack(
    in_flight: &mut VecDeque<InFlight>,
) -> Result<Result<CommitReport, JournalError>, tokio::sync::oneshot::error::RecvError> {
    match in_flight.front_mut() {
        Some(front) => (&mut front.ack).await,
        None => std::future::pending().await,
    }
}

impl EventLog {
    fn first_retained(&self) -> u64 {
        let tail_first = self.tail.front().map(|(s, _)| *s).unwrap_or(self.head + 1);
        tail_first.min(self.first_seq).max(1)
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
    /// Stopped to sleep (idle, or its slot was wanted): no restart (§4.11).
    Sleep,
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

/// A steering prompt the agent holds: `into` is the turn it was sent into.
struct Steer {
    prompt_id: String,
    into: String,
}

struct QueuedPrompt {
    prompt_id: String,
    content: PromptContent,
}

struct Closing {
    by: Arc<super::ClientInfo>,
    done: Vec<tokio::sync::oneshot::Sender<()>>,
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
    /// Attached clients by connection id (iteration order: oldest connection first).
    clients: BTreeMap<u64, ClientHandle>,
    /// Presence changes not yet announced (§7).
    presence: Presence,
    /// The oldest clients' entries for `attached` replies, serialized once.
    listed: ListedClients,
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
    /// Steering prompts written into a running turn, not yet merged or run
    /// (docs/protocol.md §10).
    steers: Vec<Steer>,
    /// When the running turn was written to the agent (for `turn_ended`, §9).
    turn_started: Option<Instant>,
    pending: Vec<Pending>,
    prompt_keys: HashMap<(String, String), (String, u64)>,
    conversation: Option<String>,
    /// `--fork-session` is still to be passed with the first resume.
    fork_pending: bool,
    /// The last `total_cost_usd` of every earlier agent process.
    earlier_cost: f64,
    /// The current process's last `total_cost_usd`.
    process_cost: Option<f64>,
    /// The first line of the first prompt (a title fallback in `session.list`).
    first_prompt: Option<Arc<str>>,
    last_activity: SystemTime,
    /// The open requests as `session.list` shows them; rebuilt when they change.
    pending_list: Arc<[super::PendingSummary]>,
    /// A `session.close` in progress: who closes, and who waits for the end.
    closing: Option<Closing>,
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
    /// Outcomes of answers from notifications, sent at step end like `deferred`.
    push_replies: Vec<(
        tokio::sync::oneshot::Sender<super::PushAnswer>,
        super::PushAnswer,
    )>,
    /// Events appended this step, not yet sent: (seq, frame, agent read time).
    uncommitted: Vec<(u64, FrameText, Option<Instant>)>,
    /// The journal records of `uncommitted`.
    uncommitted_records: Vec<PendingRecord>,
    /// Writes handed to the journal writer, oldest first.
    in_flight: VecDeque<InFlight>,
    restarts_total: u64,
    /// A journal error hit where it could not be returned (start_agent); raised at step end.
    journal_failure: Option<JournalError>,
    /// The tail's bytes, reported to the memory guard at every step.
    tail_account: crate::guard::TailAccount,
    status_tx: watch::Sender<SessionStatus>,
    /// This session's place in the server-wide agent slots (§4.11).
    slot_member: SlotMember,
    /// The slot held: from spawn until the process is reaped, and across an
    /// unexpected-exit restart.
    slot: Option<SlotPermit>,
    /// Queued for a slot (state `starting`, detail [`on_demand::WAITING_FOR_SLOT`]).
    waiting_slot: bool,
    /// No agent runs and none is wanted until a prompt or a restart.
    asleep: bool,
    /// The agent is being stopped to sleep (idle, or its slot is wanted).
    going_to_sleep: bool,
    /// Since when the agent is idle (as [`Actor::is_idle`] says), as last reported.
    idle_since: Option<Instant>,
    /// The agent's background tasks running now (`system/task_*`).
    tasks: std::collections::HashSet<String>,
    /// Snapshots around turns, for `relay.changes` (docs/protocol.md §11).
    changes: changes::TurnChanges,
    /// Settings, catalog and the relay's control requests (docs/protocol.md §10).
    controls: controls::Controls,
    /// Prompts to be queued later (docs/protocol.md §10).
    scheduled: ScheduledStore,
    auto_continue: scheduling::AutoContinue,
}

type Step = Result<(), JournalError>;

impl Actor {
    async fn run(
        mut self,
        mut cmd_rx: mpsc::Receiver<SessionCmd>,
        mut agent_rx: mpsc::Receiver<Tagged>,
        mut slot_rx: mpsc::UnboundedReceiver<SlotMsg>,
        shutdown: CancellationToken,
        open_prompts: Vec<recovery::OpenPrompt>,
    ) {
        let result = self
            .main_loop(
                &mut cmd_rx,
                &mut agent_rx,
                &mut slot_rx,
                &shutdown,
                open_prompts,
            )
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
        slot_rx: &mut mpsc::UnboundedReceiver<SlotMsg>,
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
        if !self.settings.start_agent {
            // Before the restored requests are notified: asleep, none stays pending.
            self.open_asleep()?;
        }
        // Restored prompts are notified like new ones, counted from now.
        for p in &self.pending {
            self.report_opened(&p.request_id, &p.subtype, &p.raw);
        }
        if self.settings.start_agent {
            self.launch_agent();
        }
        self.finish_step().await?;
        // A scheduled prompt's key is checked again whenever the keys change.
        let mut keys = self.shared.notify.keys_watch();
        keys.borrow_and_update();
        let mut keys_open = true;
        loop {
            if self.closing.is_some() && self.agent.is_none() {
                return self.finish_close().await;
            }
            let deadline = self.next_deadline();
            let writing = !self.in_flight.is_empty();
            let snapping = self.changes.busy();
            let watching_keys = keys_open && !self.scheduled.is_empty();
            let wake = {
                let written = oldest_ack(&mut self.in_flight);
                tokio::select! {
                    _ = shutdown.cancelled() => Wake::Shutdown,
                    Some(first) = agent_rx.recv() => Wake::Agent(first),
                    Some(cmd) = cmd_rx.recv() => Wake::Command(cmd),
                    result = written, if writing => Wake::Written(result),
                    Some(msg) = slot_rx.recv() => Wake::Slot(msg),
                    done = self.changes.wait(), if snapping => Wake::Snapshot(done),
                    changed = keys.changed(), if watching_keys => Wake::Keys(changed.is_ok()),
                    _ = sleep_until(deadline.into()) => Wake::Timer,
                }
            };
            match wake {
                Wake::Shutdown => return Ok(()),
                Wake::Agent(first) => self.on_agent_output(first)?,
                Wake::Command(cmd) => self.command(cmd).await?,
                Wake::Written(result) => {
                    self.on_written(result)?;
                    // A group commit acknowledges several writes at once: send
                    // all of them now, not one per turn of the loop.
                    self.take_ready_acks()?;
                }
                Wake::Timer => self.on_timer()?,
                Wake::Slot(msg) => self.on_slot_msg(msg)?,
                Wake::Snapshot(done) => self.on_snapshot(done)?,
                Wake::Keys(open) => {
                    keys_open = open;
                    keys.borrow_and_update();
                    self.check_scheduled_keys()?;
                }
            }
            // Take whatever else is already waiting into this step, so its events
            // go to the writer together (and share a write and an fsync there).
            self.drain_ready(cmd_rx, agent_rx).await?;
            self.finish_step().await?;
        }
    }

    /// Handle one command. Those that must see every earlier event sent first
    /// ([`commits_first`]) wait, without blocking, for the writes in flight.
    async fn command(&mut self, cmd: SessionCmd) -> Step {
        if commits_first(&cmd) {
            self.finish_step().await?;
            self.settle().await?;
        }
        self.on_command(cmd)
    }

    /// Handle agent output and commands that are already queued, up to a bound.
    async fn drain_ready(
        &mut self,
        cmd_rx: &mut mpsc::Receiver<SessionCmd>,
        agent_rx: &mut mpsc::Receiver<Tagged>,
    ) -> Step {
        let mut lines = 0;
        let mut cmds = 0;
        loop {
            let mut progressed = false;
            while lines < AGENT_BATCH {
                match agent_rx.try_recv() {
                    Ok(more) => {
                        self.on_agent_output(more)?;
                        lines += 1;
                        progressed = true;
                    }
                    Err(_) => break,
                }
            }
            if cmds < COMMAND_BATCH
                && let Ok(cmd) = cmd_rx.try_recv()
            {
                self.command(cmd).await?;
                cmds += 1;
                progressed = true;
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    /// End of every step: announce a state change, hand the events to the journal
    /// writer (with the replies that confirm an effect, sent after them), then
    /// publish the status snapshot.
    async fn finish_step(&mut self) -> Step {
        if let Some(e) = self.journal_failure.take() {
            return Err(e);
        }
        self.sync_state()?;
        self.commit().await?;
        self.flush_presence();
        self.track_idle();
        self.publish_status();
        Ok(())
    }

    // ---------------------------------------------------------------- events

    /// Append one event (raw JSON object bytes) to the log; it is sent at commit.
    fn emit(&mut self, raw: &[u8], read_at: Option<Instant>) -> Step {
        let seq = self.log.head + 1;
        let ts_ms = journal::now_ms();
        let frame = event_frame(&self.name_json, seq, ts_ms, raw);
        self.log.head = seq;
        let text = FrameText::from(frame);
        self.uncommitted_records.push(PendingRecord {
            seq,
            ts_ms,
            frame: bytes::Bytes::from(text.clone()),
        });
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
        self.last_activity = SystemTime::now();
        Ok(())
    }

    fn emit_relay(&mut self, event: Value) -> Step {
        self.emit(event.to_string().as_bytes(), None)
    }

    /// Hand this step's events to the journal writer; they are pushed to the
    /// clients when it acknowledges them ([`Actor::on_written`]). Replies that
    /// confirm an effect go after the events handed over before them.
    async fn commit(&mut self) -> Step {
        let deferred = std::mem::take(&mut self.deferred);
        let push_replies = std::mem::take(&mut self.push_replies);
        if self.uncommitted.is_empty() {
            match self.in_flight.back_mut() {
                Some(last) => {
                    last.deferred.extend(deferred);
                    last.push_replies.extend(push_replies);
                }
                None => send_replies(deferred, push_replies),
            }
        } else {
            let events = std::mem::take(&mut self.uncommitted);
            let records = std::mem::take(&mut self.uncommitted_records);
            let ack = self.log.writer.commit(records).await?;
            self.in_flight.push_back(InFlight {
                ack,
                events,
                deferred,
                push_replies,
            });
        }
        if std::mem::take(&mut self.log.sync_due) {
            let ack = self.log.writer.sync().await?;
            self.in_flight.push_back(InFlight {
                ack,
                events: Vec::new(),
                deferred: Vec::new(),
                push_replies: Vec::new(),
            });
        }
        Ok(())
    }

    /// Wait (without blocking the thread) until every write in flight is
    /// acknowledged and its events are sent.
    async fn settle(&mut self) -> Step {
        while !self.in_flight.is_empty() {
            let result = oldest_ack(&mut self.in_flight).await;
            self.on_written(result)?;
        }
        Ok(())
    }

    /// Every write in flight, oldest first, that is already acknowledged. Stops at
    /// the first still pending (or whose writer is gone: the loop's wait reports that).
    fn take_ready_acks(&mut self) -> Step {
        while let Some(front) = self.in_flight.front_mut() {
            match front.ack.try_recv() {
                Ok(report) => self.on_written(Ok(report))?,
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// The writer acknowledged the oldest write in flight: its events are durable
    /// as the policy says, so push them to every attached client, then the replies
    /// that waited for them. A write error ends the session as it always did.
    fn on_written(
        &mut self,
        result: Result<Result<CommitReport, JournalError>, tokio::sync::oneshot::error::RecvError>,
    ) -> Step {
        let Some(done) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let report = result.map_err(|_| journal::writer_gone())??;
        if let Some(fsync) = report.fsync {
            self.shared
                .metrics
                .journal_fsync_seconds
                .observe(fsync.as_secs_f64());
        }
        self.log.first_seq = report.first_seq;
        self.log.next_interval_sync = report.next_interval_sync;
        self.shared
            .metrics
            .journal_bytes
            .get_or_create(&self.metrics_label)
            .set(report.bytes as i64);
        let InFlight {
            events,
            deferred,
            push_replies,
            ..
        } = done;
        if let Some((seq, _, _)) = events.last() {
            self.log.durable = *seq;
        }
        self.push_events(events);
        send_replies(deferred, push_replies);
        Ok(())
    }

    fn push_events(&mut self, events: Vec<(u64, FrameText, Option<Instant>)>) {
        if events.is_empty() {
            return;
        }
        self.shared
            .metrics
            .events_appended
            .get_or_create(&self.metrics_label)
            .inc_by(events.len() as u64);
        let mut lagged = Vec::new();
        for client in self.clients.values() {
            // Each frame was serialized once; every client gets a reference to it.
            let items = events.iter().map(|(seq, text, read_at)| Outbound::Event {
                session: self.name.clone(),
                seq: *seq,
                text: text.clone(),
                read_at: *read_at,
            });
            if client.outbox.push_all(items).is_err() {
                lagged.push(client.info.conn_id);
            }
        }
        if !lagged.is_empty() {
            self.drop_clients(&lagged);
        }
    }

    /// Forget clients that lagged or went away; the others hear of it in the
    /// next presence frame.
    fn drop_clients(&mut self, conn_ids: &[u64]) {
        let now = Instant::now();
        for conn_id in conn_ids {
            if let Some(gone) = self.clients.remove(conn_id) {
                self.listed.changed(*conn_id);
                self.presence
                    .left(&gone.info.entry(), self.clients.len(), now);
            }
        }
        self.set_attached_gauge();
    }

    fn set_attached_gauge(&self) {
        self.shared
            .metrics
            .clients_attached
            .get_or_create(&self.metrics_label)
            .set(self.clients.len() as i64);
    }

    /// Send the combined presence frame to every attached client when it is due.
    fn flush_presence(&mut self) {
        let now = Instant::now();
        let count = self.clients.len();
        let Some(combined) = self.presence.take_due(count, now) else {
            return;
        };
        if combined.up_to_date.len() >= count {
            return;
        }
        let full: Vec<_> = if count <= presence::FULL_LIST_MAX {
            self.clients.values().map(|c| c.info.entry()).collect()
        } else {
            Vec::new()
        };
        let text = FrameText::from(presence::frame(
            &self.name,
            &combined.joined,
            combined.left.iter().map(String::as_str),
            count,
            &full,
        ));
        let gone: Vec<u64> = self
            .clients
            .values()
            .filter(|c| !combined.up_to_date.contains(&c.info.conn_id))
            .filter(|c| c.outbox.frame(FrameType::Presence, text.clone()).is_err())
            .map(|c| c.info.conn_id)
            .collect();
        if !gone.is_empty() {
            // Announced in a later frame (the combining gap has started again).
            self.drop_clients(&gone);
        }
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
                let _ = client.outbox.frame(FrameType::Detached, msg.to_json());
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
                steer,
                at,
            } => self.prompt(client, id, content, key, steer, at),
            SessionCmd::Respond {
                client,
                id,
                request_id,
                response,
            } => self.respond(client, id, request_id, response),
            SessionCmd::Interrupt { client, id } => self.interrupt(client, id),
            SessionCmd::Restart { client, id } => self.restart_requested(client, id),
            SessionCmd::PushRespond {
                request_id,
                action,
                answerer,
                reply,
            } => {
                let outcome = self.push_respond(&request_id, action, &answerer)?;
                // Answered once `relay.resolved` is committed and sent (step end).
                self.push_replies.push((reply, outcome));
                Ok(())
            }
            SessionCmd::History {
                client,
                id,
                before,
                limit,
            } => {
                self.history(client, id, before, limit);
                Ok(())
            }
            SessionCmd::Close { by, done } => self.begin_close(by, done),
            SessionCmd::SetSettings { client, id, asked } => self.set_settings(client, id, asked),
            SessionCmd::Catalog { client, id } => {
                self.session_catalog(client, id);
                Ok(())
            }
            SessionCmd::Usage { client, id } => {
                self.session_usage(client, id);
                Ok(())
            }
            SessionCmd::CancelPrompt {
                client,
                id,
                prompt_id,
            } => self.cancel_prompt(client, id, &prompt_id),
        }
    }

    // ----------------------------------------------------------------- state

    fn derive_state(&self) -> SessionState {
        if self.closing.is_some() {
            return SessionState::Stopped;
        }
        // Before `stopped`: a sleeping session has nothing to stop at shutdown,
        // and its journal keeps ending `asleep` across restarts.
        if self.asleep && self.agent.is_none() {
            return SessionState::Asleep;
        }
        if self.shutting_down && self.agent.is_none() {
            return SessionState::Stopped;
        }
        if self.failed_until.is_some() && self.agent.is_none() {
            return SessionState::Failed;
        }
        if self.waiting_slot && self.agent.is_none() {
            return SessionState::Starting;
        }
        match self.phase {
            Phase::Down | Phase::Starting { .. } => {
                if self.ever_ready {
                    SessionState::Restarting
                } else {
                    SessionState::Starting
                }
            }
            // Stopped to sleep: it stays `idle` until it is gone, then `asleep`.
            Phase::Ready if self.going_to_sleep => SessionState::Idle,
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
        if state == SessionState::Failed {
            self.shared.notify.report(NotifyEvent::Failed {
                session: self.name.clone(),
                detail: self.state_detail.clone(),
            });
        }
        self.emit_relay(event)
    }

    fn publish_status(&mut self) {
        self.tail_account.set(self.log.tail_bytes);
        let status = SessionStatus {
            state: self.state,
            detail: self.state_detail.clone(),
            head: self.log.durable,
            clients: self.clients.len(),
            agent_pid: self.agent.as_ref().map(|a| a.pid),
            agent_started: self.agent_started.map(|(_, t)| t),
            restarts: self.restarts_total,
            pending: self.pending.len(),
            queued: self.queue.len(),
            conversation: self.conversation.as_deref().map(Arc::from),
            last_activity: self.last_activity,
            cost_usd: self.earlier_cost + self.process_cost.unwrap_or(0.0),
            first_prompt: self.first_prompt.clone(),
            pending_list: self.pending_summaries(),
            settings: self.controls.settings(),
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

    /// The open requests for `session.list`: the last list while it still matches.
    fn pending_summaries(&mut self) -> Arc<[super::PendingSummary]> {
        let same = self.pending_list.len() == self.pending.len()
            && self
                .pending_list
                .iter()
                .zip(&self.pending)
                .all(|(listed, open)| listed.request_id == open.request_id);
        if !same {
            self.pending_list = self.pending.iter().map(pending_summary).collect();
        }
        self.pending_list.clone()
    }

    // ----------------------------------------------------------------- close

    /// `session.close` (docs/protocol.md §4.10): everything waiting is aborted or
    /// cancelled and the agent is stopped; the main loop finishes the close once
    /// the agent is gone.
    fn begin_close(
        &mut self,
        by: Arc<super::ClientInfo>,
        done: tokio::sync::oneshot::Sender<()>,
    ) -> Step {
        if let Some(closing) = &mut self.closing {
            closing.done.push(done);
            return Ok(());
        }
        tracing::info!(session = %self.name, by = %by.client_id, "closing the session");
        self.closing = Some(Closing {
            by,
            done: vec![done],
        });
        self.shutting_down = true;
        self.restart_at = None;
        self.failed_until = None;
        for queued in std::mem::take(&mut self.queue) {
            self.emit_relay(json!({
                "type": "relay.turn", "prompt_id": queued.prompt_id, "phase": "aborted", "detail": "session_closed",
            }))?;
        }
        self.abort_all_scheduled("session_closed")?;
        self.cancel_all_pending("session_closed")?;
        for (client, id) in std::mem::take(&mut self.restart_waiters) {
            self.reply_error(
                &client,
                id,
                ErrorCode::AgentUnavailable,
                "the session was closed",
            );
        }
        if let Some(agent) = &self.agent
            && self.stopping != Some(StopCause::Stopped)
        {
            self.stopping = Some(StopCause::Stopped);
            agent.signal_group(Signal::SIGTERM);
            self.stop_deadline = Some(Instant::now() + self.settings.agent.stop_grace);
        }
        Ok(())
    }

    /// The agent is gone: append `relay.closed` (the last event), wait until it
    /// is durable and sent, detach every client, then tell the closer.
    async fn finish_close(&mut self) -> Step {
        let Some(closing) = self.closing.take() else {
            return Ok(());
        };
        // The last turn's `relay.changes` comes before `relay.closed`.
        while self.changes.busy() {
            let done = self.changes.wait().await;
            self.on_snapshot(done)?;
        }
        let mut event = json!({"type": "relay.closed", "by": closing.by.client_id});
        if let Some(device) = &closing.by.device {
            event["device"] = Value::from(device.as_str());
        }
        self.emit_relay(event)?;
        // Still stopped: no `relay.state` after `relay.closed`.
        self.state = SessionState::Stopped;
        self.commit().await?;
        self.settle().await?;
        for client in std::mem::take(&mut self.clients).into_values() {
            let msg = ServerMsg::Detached {
                id: None,
                session: self.name.to_string(),
            };
            let _ = client.outbox.frame(FrameType::Detached, msg.to_json());
        }
        self.set_attached_gauge();
        self.publish_status();
        for done in closing.done {
            let _ = done.send(());
        }
        tracing::info!(session = %self.name, head = self.log.head, "session closed");
        Ok(())
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
        self.log.sync_due = true;
        if let Err(e) = self.commit().await {
            tracing::error!(session = %self.name, error = %e, "journal failed while stopping");
        }
        if let Err(e) = self.settle().await {
            tracing::error!(session = %self.name, error = %e, "journal failed while stopping");
            // Whatever else was in flight is not sent (it may not be durable).
            self.in_flight.clear();
        }
        // Flushes and fsyncs what is left, then ends the writer thread.
        self.log.writer.close().await;
        self.publish_status();
        tracing::info!(session = %self.name, head = self.log.head, "session stopped");
    }
}

/// Send replies that confirm an effect, once the events before them are sent.
fn send_replies(
    deferred: Vec<(ClientHandle, String)>,
    push_replies: Vec<(
        tokio::sync::oneshot::Sender<super::PushAnswer>,
        super::PushAnswer,
    )>,
) {
    for (client, text) in deferred {
        let _ = client.outbox.frame(FrameType::Ok, text);
    }
    for (reply, outcome) in push_replies {
        let _ = reply.send(outcome);
    }
}

/// Commands that must see every earlier event of the step committed and sent:
/// an attach's replay must end exactly where live events begin, a detached
/// client gets the events before its `detached`, and `history` reads the log.
fn commits_first(cmd: &SessionCmd) -> bool {
    matches!(
        cmd,
        SessionCmd::Attach { .. }
            | SessionCmd::Detach { .. }
            | SessionCmd::Leave { .. }
            | SessionCmd::History { .. }
    )
}

/// How `session.list` shows one open request: the tool and a short summary of
/// its input (`can_use_tool`), else the request's subtype.
fn pending_summary(p: &Pending) -> super::PendingSummary {
    #[derive(serde::Deserialize)]
    struct Line {
        request: Option<Request>,
    }
    #[derive(serde::Deserialize)]
    struct Request {
        tool_name: Option<String>,
    }
    let named = serde_json::from_str::<Line>(p.raw.get())
        .ok()
        .and_then(|l| l.request)
        .and_then(|r| r.tool_name);
    let tool = named.as_deref().unwrap_or(&p.subtype);
    let detail = p
        .input
        .as_ref()
        .and_then(|input| {
            [
                "command",
                "file_path",
                "path",
                "url",
                "pattern",
                "description",
            ]
            .iter()
            .find_map(|k| input.get(*k).and_then(Value::as_str))
        })
        .unwrap_or("");
    super::PendingSummary {
        request_id: p.request_id.clone(),
        tool: clip_chars(tool, 64),
        summary: clip_chars(detail.lines().next().unwrap_or(""), 120),
    }
}

/// At most `max` characters of `s`, control characters dropped.
pub(crate) fn clip_chars(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// When an unanswered request of this kind is denied by the relay (`--permission-timeout`).
fn permission_deadline(subtype: &str, timeout: Option<Duration>) -> Option<Instant> {
    (subtype == "can_use_tool")
        .then_some(timeout)
        .flatten()
        .map(|t| Instant::now() + t)
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
    let id = v.get("conversation_id")?.as_str()?;
    if !agent_process::valid_conversation_id(id) {
        tracing::warn!(dir = %dir.display(), conversation = %id, "meta.json: not a conversation id (a UUID); ignored");
        return None;
    }
    Some(id.to_string())
}

/// Remember the conversation to resume (atomically: temp file, then rename).
fn write_meta(dir: &std::path::Path, conversation: &str) {
    let body = json!({"conversation_id": conversation}).to_string();
    let result = crate::datadir::write_atomic(&meta_path(dir), body);
    if let Err(e) = result {
        tracing::error!(dir = %dir.display(), error = %e, "cannot record the conversation id");
    }
}

fn clear_meta(dir: &std::path::Path) {
    let _ = std::fs::remove_file(meta_path(dir));
}
