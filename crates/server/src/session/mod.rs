//! Sessions: one agent process and its ordered event log, shared by every client
//! attached to it.
//!
//! Owns: sequence numbers, the in-memory tail, the journal writer, fan-out to
//! attached clients, the prompt queue and turns, pending agent requests and who
//! answered them, the agent's lifecycle (through `agent`), and the audit records.
//! All of a session's state is owned by one task (the actor in `actor/mod.rs`);
//! everything else talks to it through [`SessionHandle`]. Must not: know about
//! WebSocket frames or sockets — it pushes finished frames into each client's
//! [`Outbox`].

mod actor;
pub mod audit;
pub mod listed;
pub mod outbox;
pub mod presence;
mod recovery;
pub mod registry;
pub mod replay;
pub mod scheduled;
pub mod slots;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};

use crate::agent::AgentConfig;
use crate::journal::JournalConfig;
use crate::metrics::Metrics;
pub use ccrelay_protocol::PendingSummary;
use ccrelay_protocol::{ClientEntry, PromptContent, ReplayStart, RequestId, Role};

pub use audit::AuditLog;
pub use outbox::{Outbound, Outbox, PushError};
pub use registry::Registry;

/// Requests waiting for a session's actor; connections wait when it is full.
const COMMAND_QUEUE: usize = 1024;

/// A session's lifecycle state, as `relay.state` announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Starting,
    Idle,
    Busy,
    AwaitingPermission,
    Restarting,
    Failed,
    Stopped,
    /// No agent process runs; the next prompt starts one (docs/protocol.md §4.11).
    Asleep,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Starting => "starting",
            SessionState::Idle => "idle",
            SessionState::Busy => "busy",
            SessionState::AwaitingPermission => "awaiting_permission",
            SessionState::Restarting => "restarting",
            SessionState::Failed => "failed",
            SessionState::Stopped => "stopped",
            SessionState::Asleep => "asleep",
        }
    }
}

/// A snapshot of a session for health endpoints and `session.list`.
#[derive(Debug, Clone)]
pub struct SessionStatus {
    pub state: SessionState,
    pub detail: String,
    pub head: u64,
    pub clients: usize,
    pub agent_pid: Option<u32>,
    pub agent_started: Option<SystemTime>,
    pub restarts: u64,
    pub pending: usize,
    pub queued: usize,
    /// The agent's conversation (session) id once known.
    pub conversation: Option<Arc<str>>,
    /// When the last event was appended (RFC 3339 in `session.list`).
    pub last_activity: SystemTime,
    /// The conversation's cost so far: over the agent processes of this server's
    /// life, the sum of each one's last `total_cost_usd` (cumulative per process).
    pub cost_usd: f64,
    /// The first line of the first prompt seen (at most 80 characters).
    pub first_prompt: Option<Arc<str>>,
    /// The open requests, summarized for `session.list` (changes only when they do).
    pub pending_list: Arc<[PendingSummary]>,
    /// The settings in effect (§10); a new `Arc` only when they change.
    pub settings: Arc<ccrelay_protocol::SessionSettingsJson>,
}

/// Who a connection is, once authenticated.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Process-unique connection number (for logs and registrations).
    pub conn_id: u64,
    pub client_id: String,
    pub fingerprint: String,
    pub comment: String,
    pub device: Option<String>,
    pub role: Role,
    /// The peer's address (after `--trusted-proxy`): what a key's `from=` is checked
    /// against when the key's later use is judged (a scheduled prompt, §10).
    pub address: Option<std::net::IpAddr>,
}

impl ClientInfo {
    /// The entry shown in `clients` lists.
    pub fn entry(&self) -> ClientEntry {
        ClientEntry {
            client_id: self.client_id.clone(),
            fingerprint: self.fingerprint.clone(),
            comment: self.comment.clone(),
            device: self.device.clone(),
            role: self.role,
        }
    }

    /// How this client is named in messages such as "denied by …".
    pub fn display_name(&self) -> &str {
        self.device.as_deref().unwrap_or(&self.fingerprint)
    }
}

/// A connection as a session sees it: who it is and where its frames go.
#[derive(Debug, Clone)]
pub struct ClientHandle {
    pub info: Arc<ClientInfo>,
    pub outbox: Outbox,
}

/// Requests a connection sends to a session.
#[derive(Debug)]
pub enum SessionCmd {
    Attach {
        client: ClientHandle,
        id: Option<RequestId>,
        start: ReplayStart,
    },
    Detach {
        client: ClientHandle,
        id: Option<RequestId>,
    },
    /// The connection closed: forget it without a reply.
    Leave { conn_id: u64 },
    Prompt {
        client: ClientHandle,
        id: Option<RequestId>,
        content: PromptContent,
        key: Option<String>,
        /// Fold into the running turn (docs/protocol.md §10).
        steer: bool,
        /// A scheduled prompt (§10): queued at this time, not now. Never with `steer`.
        at: Option<std::time::SystemTime>,
    },
    Respond {
        client: ClientHandle,
        id: Option<RequestId>,
        request_id: String,
        response: serde_json::Value,
    },
    Interrupt {
        client: ClientHandle,
        id: Option<RequestId>,
    },
    Restart {
        client: ClientHandle,
        id: Option<RequestId>,
    },
    /// A permission answered from a notification (`POST /v1/push/respond`, §9):
    /// resolved as `client_id:"push"` with the answerer's device; the outcome goes
    /// back over `reply`.
    PushRespond {
        request_id: String,
        action: crate::notify::tokens::Action,
        answerer: PushAnswerer,
        reply: tokio::sync::oneshot::Sender<PushAnswer>,
    },
    /// Close the session for good (docs/protocol.md §4.10): abort its queued
    /// prompts, cancel its pending requests, stop its agent, append `relay.closed`,
    /// detach its clients, then fire `done` and end the actor.
    Close {
        by: Arc<ClientInfo>,
        done: tokio::sync::oneshot::Sender<()>,
    },
    /// `session.set` (docs/protocol.md §10) from an owner; `asked` already checked
    /// for syntax (the bypass gate is the session's, which knows the server's flag).
    SetSettings {
        client: ClientHandle,
        id: Option<RequestId>,
        asked: ccrelay_protocol::SettingsRequest,
    },
    /// `session.catalog` (§10).
    Catalog {
        client: ClientHandle,
        id: Option<RequestId>,
    },
    /// `session.usage` (§10).
    Usage {
        client: ClientHandle,
        id: Option<RequestId>,
    },
    /// `prompt.cancel` (§10): an owner's, checked by the connection.
    CancelPrompt {
        client: ClientHandle,
        id: Option<RequestId>,
        prompt_id: String,
    },
    /// Older events (`history`, §4); `limit` already checked (1..=1000).
    History {
        client: ClientHandle,
        id: Option<RequestId>,
        before: u64,
        limit: u64,
    },
}

/// Who answers through a notification token.
#[derive(Debug, Clone)]
pub struct PushAnswerer {
    /// The subscription's device (its fingerprint when it has no name), or
    /// `webhook` / `ntfy`.
    pub device: String,
    /// The key of the subscription; none for webhook and ntfy.
    pub fingerprint: Option<String>,
}

/// What became of a [`SessionCmd::PushRespond`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushAnswer {
    Resolved,
    /// Answered or cancelled already (or not a permission prompt).
    NotPending,
    /// The agent is restarting: nothing was done.
    Unavailable,
}

/// The session's actor has stopped (the server is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("session {0} has stopped")]
pub struct SessionGone(pub Arc<str>);

/// A cheap, cloneable way to reach one session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub name: Arc<str>,
    tx: mpsc::Sender<SessionCmd>,
    status: watch::Receiver<SessionStatus>,
}

impl SessionHandle {
    /// Hand a request to the session (waits only while its command queue is full).
    pub async fn send(&self, cmd: SessionCmd) -> Result<(), SessionGone> {
        self.tx
            .send(cmd)
            .await
            .map_err(|_| SessionGone(self.name.clone()))
    }

    /// Tell the session a connection is gone, without waiting.
    pub fn leave(&self, conn_id: u64) {
        if self.tx.try_send(SessionCmd::Leave { conn_id }).is_err() {
            // Queue full or actor gone: do it from a task so the caller never blocks.
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(SessionCmd::Leave { conn_id }).await;
            });
        }
    }

    pub fn status(&self) -> SessionStatus {
        self.status.borrow().clone()
    }

    /// The status, to wait for its changes.
    pub fn watch(&self) -> watch::Receiver<SessionStatus> {
        self.status.clone()
    }
}

/// Settings a session needs (`config::Config::session_settings` makes them).
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub name: String,
    pub workdir: PathBuf,
    /// The conversation to resume at the first start when none is recorded yet
    /// (`session.create` with `resume`).
    pub resume: Option<String>,
    /// Pass `--fork-session` with that first resume.
    pub fork: bool,
    /// `<data-dir>/sessions/<name>`.
    pub dir: PathBuf,
    pub agent: AgentConfig,
    pub journal: JournalConfig,
    pub permission_timeout: Option<Duration>,
    pub prompt_queue: usize,
    pub tail_events: usize,
    pub tail_bytes: usize,
    /// Start the agent when the session opens (configured sessions); else the
    /// session opens `asleep` and its first prompt starts one (§4.11).
    pub start_agent: bool,
    /// The settings the session starts with when it has none recorded in `dir`
    /// yet (docs/protocol.md §10: `session.create`'s, else the defaults).
    pub initial_settings: ccrelay_protocol::SessionSettingsJson,
    /// Who created the session (none for configured sessions): the key behind
    /// `initial_settings`' `auto_continue` (docs/protocol.md §10).
    pub created_by: Option<scheduled::ScheduledBy>,
}

/// What every session shares with the server.
#[derive(Debug, Clone)]
pub struct SessionShared {
    pub metrics: Arc<Metrics>,
    pub audit: Arc<AuditLog>,
    /// Cancelled (with the cause logged) when a session hits an unrecoverable fault.
    pub fatal: FatalSignal,
    /// Where the session reports its tail bytes (`--memory-limit`).
    pub memory: Arc<crate::guard::MemoryGuard>,
    /// Where the session reports prompts, answers, turns and failures (§9); never waits.
    pub notify: crate::notify::Notifier,
    /// The server-wide agent slots (`--max-agents`, §4.11): one [`slots::AgentSlots`]
    /// for all sessions, configured and created alike.
    pub slots: Arc<slots::AgentSlots>,
    /// Turn snapshots for `relay.changes` (docs/protocol.md §11).
    pub workspace: Arc<crate::workspace::Workspace>,
}

pub use crate::fatal::FatalSignal;

/// Errors while starting a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("session {session}: {source}")]
    Io {
        session: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn command_channel() -> (mpsc::Sender<SessionCmd>, mpsc::Receiver<SessionCmd>) {
    mpsc::channel(COMMAND_QUEUE)
}
