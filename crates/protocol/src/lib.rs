//! Wire messages of docs/protocol.md as serde types, and the one place where an
//! inbound frame is classified into a request or a typed protocol error.
//!
//! Owns: message shapes, error codes, close codes, request validation that needs
//! no session state (field types, id rules, `since`/`tail` exclusivity, `respond`
//! answer shapes). Must not: know about sockets, sessions or the agent.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

#[macro_use]
mod label_enum;
pub mod catalog;

/// Protocol version announced in `auth.challenge`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest string `id`, `key` or `device` a client may send (characters).
pub const MAX_SHORT_STRING_CHARS: usize = 64;
/// Largest integer `id` (2^53 − 1, the largest integer every JSON peer represents exactly).
pub const MAX_INTEGER_ID: u64 = (1 << 53) - 1;

/// WebSocket close codes the server uses (docs/protocol.md §2.3).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const SHED: u16 = 1013;
    pub const LAGGING: u16 = 4008;
}

/// The SSHSIG namespace every ccrelay signature must carry (§3).
pub const NAMESPACE: &str = "ccrelay-auth";

/// Prefix of the challenge's `sign` text: `ccrelay-auth-v1:<server_id>:<nonce>`.
pub const SIGN_PREFIX: &str = "ccrelay-auth-v1";

/// The one channel binding type ccrelay offers (RFC 9266).
pub const CHANNEL_BINDING_TLS_EXPORTER: &str = "tls-exporter";

/// The exact text an `auth.response` or `pair.request` signs (docs/protocol.md §3,
/// "Origin binding"): the challenge's `sign`, then `:origin:<origin>` when the
/// response declares an origin, then `:tls-exporter:<exporter>` (base64url without
/// padding) when it binds the TLS exporter. Both the server (to verify) and every
/// client (to sign) build it here, so the two can never disagree.
pub fn bound_text(sign: &str, origin: Option<&str>, exporter_base64url: Option<&str>) -> String {
    let mut text = sign.to_string();
    if let Some(origin) = origin {
        text.push_str(":origin:");
        text.push_str(origin);
    }
    if let Some(exporter) = exporter_base64url {
        text.push(':');
        text.push_str(CHANNEL_BINDING_TLS_EXPORTER);
        text.push(':');
        text.push_str(exporter);
    }
    text
}

/// What a challenge offers in its `bindings` field: `origin`, and `tls-exporter`
/// when the connection has an exporter.
pub fn offered_bindings(exporter: bool) -> Vec<Cow<'static, str>> {
    let mut bindings = vec![Cow::Borrowed("origin")];
    if exporter {
        bindings.push(Cow::Borrowed(CHANNEL_BINDING_TLS_EXPORTER));
    }
    bindings
}

/// Error codes of the `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadJson,
    BadMessage,
    UnknownType,
    NotAuthenticated,
    AuthFailed,
    AuthTimeout,
    Forbidden,
    NoSuchSession,
    NotAttached,
    NotPending,
    RateLimited,
    TooLarge,
    AgentUnavailable,
    Overloaded,
    Internal,
    /// Sessions, the CLI's controls and the workspace view (§4, §10, §11).
    OutsideRoots,
    SessionExists,
    GitFailed,
    NoSuchConversation,
    ConversationInUse,
    NotARepository,
    NotFound,
    /// A code this build does not know, read from a newer server (clients only:
    /// the server never sends it).
    #[serde(other)]
    Unrecognized,
}

/// How [`ErrorCode::Unrecognized`] is named in logs and messages.
const UNRECOGNIZED_CODE: &str = "unrecognized";

impl ErrorCode {
    /// Every code the server sends, in declaration order: the `code` label
    /// values of `ccrelay_errors_sent_total` (not [`ErrorCode::Unrecognized`],
    /// which only a client reads).
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadJson,
        ErrorCode::BadMessage,
        ErrorCode::UnknownType,
        ErrorCode::NotAuthenticated,
        ErrorCode::AuthFailed,
        ErrorCode::AuthTimeout,
        ErrorCode::Forbidden,
        ErrorCode::NoSuchSession,
        ErrorCode::NotAttached,
        ErrorCode::NotPending,
        ErrorCode::RateLimited,
        ErrorCode::TooLarge,
        ErrorCode::AgentUnavailable,
        ErrorCode::Overloaded,
        ErrorCode::Internal,
        ErrorCode::OutsideRoots,
        ErrorCode::SessionExists,
        ErrorCode::GitFailed,
        ErrorCode::NoSuchConversation,
        ErrorCode::ConversationInUse,
        ErrorCode::NotARepository,
        ErrorCode::NotFound,
    ];

    /// The wire spelling, also used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::AuthTimeout => "auth_timeout",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NoSuchSession => "no_such_session",
            ErrorCode::NotAttached => "not_attached",
            ErrorCode::NotPending => "not_pending",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::AgentUnavailable => "agent_unavailable",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Internal => "internal",
            ErrorCode::OutsideRoots => "outside_roots",
            ErrorCode::SessionExists => "session_exists",
            ErrorCode::GitFailed => "git_failed",
            ErrorCode::NoSuchConversation => "no_such_conversation",
            ErrorCode::ConversationInUse => "conversation_in_use",
            ErrorCode::NotARepository => "not_a_repository",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unrecognized => UNRECOGNIZED_CODE,
        }
    }
}

/// A request id as the client sent it; echoed unchanged in the direct reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    Text(String),
    Number(u64),
}

/// A protocol error answering a frame: code, human text, and the request id when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
    pub id: Option<RequestId>,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
            id: None,
        }
    }

    pub fn with_id(mut self, id: Option<RequestId>) -> Self {
        self.id = id;
        self
    }

    /// The `error` frame for this error.
    pub fn to_frame(&self) -> String {
        ServerMsg::Error {
            id: self.id.clone(),
            code: self.code,
            message: self.message.clone(),
        }
        .to_json()
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ProtocolError {}

/// What a key may do: owners drive the session, viewers only watch
/// (docs/protocol.md, Overview).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Listed in the authorized keys file.
    Owner,
    /// Listed only in the viewer keys file.
    Viewer,
}

impl Role {
    /// The wire name (`"owner"` / `"viewer"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Viewer => "viewer",
        }
    }
}

/// The browser's `PushSubscription.toJSON()` as the client sends it (§9). Other
/// members (`expirationTime`) are ignored.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct PushSubscriptionJson {
    pub endpoint: String,
    pub keys: PushKeysJson,
}

/// The subscription's keys: base64url, padding optional.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct PushKeysJson {
    pub p256dh: String,
    pub auth: String,
}

/// Where an attach replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStart {
    /// Replay everything after this seq (0: the whole retained log).
    Since(u64),
    /// Replay only the last N events.
    Tail(u64),
}

/// Prompt content: a string or an array of content blocks, kept as the client's JSON.
#[derive(Debug, Clone)]
pub struct PromptContent(pub Box<RawValue>);

/// Longest path a client may name, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest branch or base name of a worktree request, in bytes.
pub const MAX_REF_BYTES: usize = 255;
/// Longest session name (§4).
pub const MAX_SESSION_NAME_CHARS: usize = 64;
/// Longest session title (§4).
pub const MAX_SESSION_TITLE_CHARS: usize = 80;
/// `conversations.list`'s default and largest `limit` (§4).
pub const CONVERSATIONS_DEFAULT_LIMIT: u64 = 50;
pub const CONVERSATIONS_MAX_LIMIT: u64 = 200;

/// A `session.create` request (§4): what the owner asked for, with field types
/// and name rules checked; roots, uniqueness and git are the server's checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionCreate {
    pub workdir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<WorktreeRequest>,
    /// A conversation of `conversations.list` for that workdir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fork: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<SettingsRequest>,
    /// The client's retry key: a repeat within 10 minutes creates nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `session.create`'s `worktree`: a new branch (default `ccrelay/<name>`) from
/// `base` (default `HEAD`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorktreeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

/// Session settings as a request gives them (§10): any subset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_continue: Option<bool>,
}

/// A session's settings in effect (§10): every key present, `null` when unset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSettingsJson {
    pub permission_mode: String,
    pub model: Option<String>,
    pub effort: Option<String>,
    pub thinking: Option<u64>,
    pub auto_continue: bool,
}

impl Default for SessionSettingsJson {
    fn default() -> Self {
        SessionSettingsJson {
            permission_mode: "default".into(),
            model: None,
            effort: None,
            thinking: None,
            auto_continue: false,
        }
    }
}

/// A worktree the server made for a session (§4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorktreeInfo {
    pub path: String,
    pub branch: String,
    pub repository: String,
}

/// `files.read`'s default `max_bytes` (§11).
pub const FILES_READ_DEFAULT_BYTES: u64 = 256 * 1024;
/// `files.read`'s largest `max_bytes`; a larger one is clamped to it (§11).
pub const FILES_READ_MAX_BYTES: u64 = 1024 * 1024;

/// `files.diff`'s `base` (§11): the last commit, or one turn's changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffBase {
    Head,
    /// `turn:<prompt_id>`.
    Turn(String),
}

impl DiffBase {
    /// Reads `HEAD` or `turn:<prompt_id>` (a prompt id of 1 to 64 characters).
    pub fn parse(text: &str) -> Option<DiffBase> {
        if text == "HEAD" {
            return Some(DiffBase::Head);
        }
        let id = text.strip_prefix("turn:")?;
        let ok = !id.is_empty()
            && id.chars().count() <= MAX_SHORT_STRING_CHARS
            && !id.chars().any(char::is_control);
        ok.then(|| DiffBase::Turn(id.to_owned()))
    }

    /// The wire form.
    pub fn as_wire(&self) -> String {
        match self {
            DiffBase::Head => "HEAD".to_owned(),
            DiffBase::Turn(id) => format!("turn:{id}"),
        }
    }
}

/// What happened to a file (§11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    Modified,
    Added,
    Deleted,
    Renamed,
    Untracked,
    Conflicted,
}

/// One changed file of `files.status` and `relay.changes` (§11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    pub path: String,
    pub status: FileStatus,
    /// The old path of a `renamed` file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub insertions: u64,
    pub deletions: u64,
    /// Binary content (or an untracked file over 1 MiB): no line counts.
    #[serde(default)]
    pub binary: bool,
}

/// The branch `files.status`'s branch tracks, and how far apart they are (§11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    pub name: String,
    pub ahead: u64,
    pub behind: u64,
}

/// What a `files.list` entry is (§11): a symlink is listed as itself, never followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    /// A socket, FIFO or device.
    Other,
}

/// One entry of `files.list` (§11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    /// RFC 3339, UTC.
    pub mtime: String,
}

/// How `files.read`'s `data` is written (§11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadEncoding {
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "base64")]
    Base64,
}

/// Check a session name (§4): 1 to 64 of `A-Z a-z 0-9 - _ .`, not starting with `.`.
pub fn valid_session_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_SESSION_NAME_CHARS {
        return Err("must be 1 to 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("may hold only A-Z a-z 0-9 - _ .");
    }
    if name.starts_with('.') {
        return Err("must not start with `.`");
    }
    Ok(())
}

/// Check a session title (§4): 1 to 80 characters, no control, format or bidi characters.
pub fn valid_session_title(title: &str) -> Result<(), &'static str> {
    let count = title.chars().count();
    if count == 0 {
        return Err("must not be empty");
    }
    if count > MAX_SESSION_TITLE_CHARS {
        return Err("must be at most 80 characters");
    }
    if title.chars().any(|c| c.is_control() || is_format_char(c)) {
        return Err("must not contain control, format or bidi characters");
    }
    Ok(())
}

/// A permission answer (`respond`), validated against the request kind by the session.
#[derive(Debug, Clone)]
pub struct RespondBody(pub Value);

/// A request from an authenticated (or authenticating) client.
#[derive(Debug, Clone)]
pub enum ClientRequest {
    AuthResponse {
        signature: String,
        public_key: Option<String>,
        device: Option<String>,
        /// `"tls-exporter"` when the signature covers the connection's TLS exporter (§3).
        channel_binding: Option<String>,
        /// The origin the client dialed, which its signature covers (docs/protocol.md,
        /// "Origin binding").
        origin: Option<String>,
    },
    /// A device whose key is in no keys file asks to be paired (§3).
    PairRequest {
        signature: String,
        public_key: String,
        /// Validated: 1-64 scalar values, no control, format or bidi characters.
        device: String,
        channel_binding: Option<String>,
        /// As in `AuthResponse`.
        origin: Option<String>,
        /// A pairing invite's token: allowed at once when it is valid.
        invite: Option<String>,
    },
    /// An owner's answer to a pair request.
    PairRespond {
        pair_id: String,
        allow: bool,
        role: Role,
        /// With a denial: refuse that address's pair requests for an hour.
        block: bool,
    },
    /// An owner opens a pairing invite (default role owner, default and
    /// longest lifetime 10 minutes).
    PairInvite {
        role: Role,
        expires_in_ms: Option<u64>,
    },
    SessionList,
    Attach {
        session: String,
        start: ReplayStart,
        /// The session's `uid` the client expects (§4): another session that
        /// reused the name answers `no_such_session`.
        uid: Option<String>,
    },
    Detach {
        session: String,
    },
    /// An owner starts a session (§4 "Creating and closing sessions").
    SessionCreate(Box<SessionCreate>),
    /// An owner closes a created session.
    SessionClose {
        session: String,
        remove_worktree: bool,
    },
    /// An owner sets a session's title (validated: see [`valid_session_title`]).
    SessionRename {
        session: String,
        title: String,
    },
    /// The Claude Code conversations recorded for a directory (owners).
    ConversationsList {
        workdir: String,
        /// 1..=[`CONVERSATIONS_MAX_LIMIT`]; [`CONVERSATIONS_DEFAULT_LIMIT`] when absent.
        limit: u64,
        /// Only conversations updated before this RFC 3339 time (the previous page's last `updated_at`).
        before: Option<String>,
    },
    /// Subdirectories under the session roots, for a directory picker (owners).
    /// `None`: the roots themselves.
    DirsList {
        path: Option<String>,
    },
    Prompt {
        session: String,
        content: PromptContent,
        key: Option<String>,
        /// Fold into the running turn (§10).
        steer: bool,
        /// A scheduled prompt's time as the client wrote it (RFC 3339, at most 64
        /// characters; the server parses it, §10).
        at: Option<String>,
    },
    Respond {
        session: String,
        request_id: String,
        response: RespondBody,
    },
    Interrupt {
        session: String,
    },
    SessionRestart {
        session: String,
    },
    /// An owner changes a session's settings (§10): any subset, field types and
    /// value syntax checked by the server.
    SessionSet {
        session: String,
        settings: SettingsRequest,
    },
    /// What the session's agent offers (§10; viewers too).
    SessionCatalog {
        session: String,
    },
    /// The session's context, cost and rate limit (§10; viewers too).
    SessionUsage {
        session: String,
    },
    /// An owner withdraws a prompt that has not reached the agent (§10).
    PromptCancel {
        session: String,
        prompt_id: String,
    },
    /// An owner puts a file into the session's workdir (§10); `data` is base64,
    /// checked by the server.
    FileUpload {
        session: String,
        name: String,
        data: String,
    },
    Ping,
    /// Older events of a session, seq in `[max(1, before − limit), before)` (§4).
    History {
        session: String,
        before: u64,
        limit: u64,
    },
    /// Extension "Devices": every key the server accepts (owners only).
    KeysList,
    /// Extension "Devices": set a paired key's device name (owners only).
    KeysRename {
        fingerprint: String,
        /// Validated like `pair.request`'s `device`, blanks at either end trimmed.
        device: String,
    },
    /// Extension "Devices": remove a paired key (owners only).
    KeysRevoke {
        fingerprint: String,
    },
    /// The page is visible or hidden (§9): a visible, attached device is not pushed to.
    ClientVisible {
        visible: bool,
    },
    /// Register a browser push subscription for this key and device (owners only, §9).
    PushSubscribe {
        subscription: PushSubscriptionJson,
    },
    /// The workdir's changed files (§11). Paths of the `files.*` requests are
    /// checked only for length here: NUL, `..` and the rest are `forbidden`, the
    /// server's check.
    FilesStatus {
        session: String,
    },
    /// A unified diff of one file (`path`) or of every changed file (§11).
    FilesDiff {
        session: String,
        path: Option<String>,
        base: DiffBase,
    },
    /// A directory's entries (§11); `""` is the workdir.
    FilesList {
        session: String,
        path: String,
    },
    /// A file's content from `offset`, at most `max_bytes` (already clamped, §11).
    FilesRead {
        session: String,
        path: String,
        offset: u64,
        max_bytes: u64,
    },
    /// Remove this key's push subscription with that endpoint (§9).
    PushUnsubscribe {
        endpoint: String,
    },
}

label_enum! {
    /// The `type` of a client request (for logs and the `type` label of
    /// `ccrelay_frames_in_total`).
    pub enum RequestType {
        AuthResponse => "auth.response",
        SessionList => "session.list",
        Attach => "attach",
        Detach => "detach",
        Prompt => "prompt",
        Respond => "respond",
        Interrupt => "interrupt",
        SessionRestart => "session.restart",
        Ping => "ping",
        PairRequest => "pair.request",
        PairRespond => "pair.respond",
        PairInvite => "pair.invite",
        History => "history",
        KeysList => "keys.list",
        KeysRename => "keys.rename",
        KeysRevoke => "keys.revoke",
        ClientVisible => "client.visible",
        PushSubscribe => "push.subscribe",
        PushUnsubscribe => "push.unsubscribe",
        SessionCreate => "session.create",
        SessionClose => "session.close",
        SessionRename => "session.rename",
        ConversationsList => "conversations.list",
        DirsList => "dirs.list",
        FilesStatus => "files.status",
        FilesDiff => "files.diff",
        FilesList => "files.list",
        FilesRead => "files.read",
        SessionSet => "session.set",
        SessionCatalog => "session.catalog",
        SessionUsage => "session.usage",
        PromptCancel => "prompt.cancel",
        FileUpload => "file.upload",
    }
}

label_enum! {
    /// The `type` of a frame the server sends: every [`ServerMsg`] and the
    /// frames built as text (`event`, `presence`, `history`). The `type` label of
    /// `ccrelay_frames_out_total`.
    pub enum FrameType {
        AuthChallenge => "auth.challenge",
        AuthOk => "auth.ok",
        Error => "error",
        Pong => "pong",
        SessionList => "session.list",
        Attached => "attached",
        Detached => "detached",
        Ok => "ok",
        Presence => "presence",
        Event => "event",
        History => "history",
        KeysList => "keys.list",
        PairPending => "pair.pending",
        PairRequested => "pair.requested",
        PairResolved => "pair.resolved",
        PairInvite => "pair.invite",
        SessionCreated => "session.created",
        SessionChanged => "session.changed",
        ConversationsList => "conversations.list",
        DirsList => "dirs.list",
        FilesStatus => "files.status",
        FilesDiff => "files.diff",
        FilesList => "files.list",
        FilesRead => "files.read",
        SessionCatalog => "session.catalog",
        SessionUsage => "session.usage",
    }
}

impl ClientRequest {
    /// The request's `type`.
    pub fn request_type(&self) -> RequestType {
        match self {
            ClientRequest::AuthResponse { .. } => RequestType::AuthResponse,
            ClientRequest::SessionList => RequestType::SessionList,
            ClientRequest::Attach { .. } => RequestType::Attach,
            ClientRequest::Detach { .. } => RequestType::Detach,
            ClientRequest::Prompt { .. } => RequestType::Prompt,
            ClientRequest::Respond { .. } => RequestType::Respond,
            ClientRequest::Interrupt { .. } => RequestType::Interrupt,
            ClientRequest::SessionRestart { .. } => RequestType::SessionRestart,
            ClientRequest::Ping => RequestType::Ping,
            ClientRequest::PairRequest { .. } => RequestType::PairRequest,
            ClientRequest::PairRespond { .. } => RequestType::PairRespond,
            ClientRequest::PairInvite { .. } => RequestType::PairInvite,
            ClientRequest::History { .. } => RequestType::History,
            ClientRequest::KeysList => RequestType::KeysList,
            ClientRequest::KeysRename { .. } => RequestType::KeysRename,
            ClientRequest::KeysRevoke { .. } => RequestType::KeysRevoke,
            ClientRequest::ClientVisible { .. } => RequestType::ClientVisible,
            ClientRequest::PushSubscribe { .. } => RequestType::PushSubscribe,
            ClientRequest::PushUnsubscribe { .. } => RequestType::PushUnsubscribe,
            ClientRequest::SessionCreate(_) => RequestType::SessionCreate,
            ClientRequest::SessionClose { .. } => RequestType::SessionClose,
            ClientRequest::SessionRename { .. } => RequestType::SessionRename,
            ClientRequest::ConversationsList { .. } => RequestType::ConversationsList,
            ClientRequest::DirsList { .. } => RequestType::DirsList,
            ClientRequest::FilesStatus { .. } => RequestType::FilesStatus,
            ClientRequest::FilesDiff { .. } => RequestType::FilesDiff,
            ClientRequest::FilesList { .. } => RequestType::FilesList,
            ClientRequest::FilesRead { .. } => RequestType::FilesRead,
            ClientRequest::SessionSet { .. } => RequestType::SessionSet,
            ClientRequest::SessionCatalog { .. } => RequestType::SessionCatalog,
            ClientRequest::SessionUsage { .. } => RequestType::SessionUsage,
            ClientRequest::PromptCancel { .. } => RequestType::PromptCancel,
            ClientRequest::FileUpload { .. } => RequestType::FileUpload,
        }
    }

    /// The `type` string, for logs.
    pub fn type_name(&self) -> &'static str {
        self.request_type().as_str()
    }
}

/// A request as a client writes it: what the terminal client, the tests and the
/// web page's fixtures are built from. The server reads frames with
/// [`parse_request`], which also validates and classifies errors (§2); a test
/// below checks that every `ClientMsg` is accepted there as the same type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ClientMsg {
    /// Answer to `auth.challenge` (§3).
    #[serde(rename = "auth.response")]
    AuthResponse {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        signature: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        public_key: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel_binding: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
    },
    /// A device whose key is in no keys file asks to be paired (§3).
    #[serde(rename = "pair.request")]
    PairRequest {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        signature: String,
        public_key: String,
        device: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel_binding: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invite: Option<String>,
    },
    /// An owner's answer to a pair request.
    #[serde(rename = "pair.respond")]
    PairRespond {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        pair_id: String,
        allow: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<Role>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        block: Option<bool>,
    },
    /// An owner opens a pairing invite.
    #[serde(rename = "pair.invite")]
    PairInvite {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<Role>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_in_ms: Option<u64>,
    },
    /// The sessions and their states.
    #[serde(rename = "session.list")]
    SessionList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    /// Attach to a session, replaying from `since` or the last `tail` events (§4).
    #[serde(rename = "attach")]
    Attach {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Absent: the `default` session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tail: Option<u64>,
        /// The `uid` the client knows the session by (§4).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<String>,
    },
    /// Stop receiving a session's events.
    #[serde(rename = "detach")]
    Detach {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Absent: the `default` session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
    },
    /// A prompt for the agent (§4).
    #[serde(rename = "prompt")]
    Prompt {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Absent: the `default` session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        /// A non-empty string or an array of content blocks.
        content: Value,
        /// Makes a resend after a reconnect recognizable (at most 64 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// Fold into the running turn instead of waiting for it (§10).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        steer: bool,
        /// Run it at this time (RFC 3339) instead of now (§10).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<String>,
    },
    /// Answer a pending control request (§6).
    #[serde(rename = "respond")]
    Respond {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Absent: the `default` session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        request_id: String,
        response: PermissionAnswer,
    },
    /// Interrupt the running turn.
    #[serde(rename = "interrupt")]
    Interrupt {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Absent: the `default` session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
    },
    /// Restart the session's agent.
    #[serde(rename = "session.restart")]
    SessionRestart {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Absent: the `default` session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
    },
    /// Liveness check; answered `pong` at any time.
    #[serde(rename = "ping")]
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    /// Older events of a session (§4).
    #[serde(rename = "history")]
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Absent: the `default` session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        before: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
    },
    /// Extension "Devices": every key the server accepts.
    #[serde(rename = "keys.list")]
    KeysList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    /// Extension "Devices": rename a paired key's device.
    #[serde(rename = "keys.rename")]
    KeysRename {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        fingerprint: String,
        device: String,
    },
    /// Extension "Devices": remove a paired key.
    #[serde(rename = "keys.revoke")]
    KeysRevoke {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        fingerprint: String,
    },
    /// The page is visible or hidden (§9).
    #[serde(rename = "client.visible")]
    ClientVisible {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        visible: bool,
    },
    /// Register a browser push subscription (§9).
    #[serde(rename = "push.subscribe")]
    PushSubscribe {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        subscription: PushSubscriptionJson,
    },
    /// Remove a push subscription (§9).
    #[serde(rename = "push.unsubscribe")]
    PushUnsubscribe {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        endpoint: String,
    },
    /// Start a session (owners, §4).
    #[serde(rename = "session.create")]
    SessionCreate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(flatten)]
        create: Box<SessionCreate>,
    },
    /// Close a created session (owners, §4).
    #[serde(rename = "session.close")]
    SessionClose {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        session: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        remove_worktree: bool,
    },
    /// Set a session's title (owners, §4).
    #[serde(rename = "session.rename")]
    SessionRename {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        session: String,
        title: String,
    },
    /// Past conversations of a directory (owners, §4).
    #[serde(rename = "conversations.list")]
    ConversationsList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        workdir: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<String>,
    },
    /// Subdirectories for a directory picker (owners, §4).
    #[serde(rename = "dirs.list")]
    DirsList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// The workdir's changed files (§11).
    #[serde(rename = "files.status")]
    FilesStatus {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Absent: the `default` session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
    },
    /// A file's (or every changed file's) diff (§11).
    #[serde(rename = "files.diff")]
    FilesDiff {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// `HEAD` (the default) or `turn:<prompt_id>`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base: Option<String>,
    },
    /// A directory's entries (§11).
    #[serde(rename = "files.list")]
    FilesList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// A file's content (§11).
    #[serde(rename = "files.read")]
    FilesRead {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_bytes: Option<u64>,
    },
    /// Change a session's settings (owners, §10).
    #[serde(rename = "session.set")]
    SessionSet {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        settings: SettingsRequest,
    },
    /// What the session's agent offers (§10).
    #[serde(rename = "session.catalog")]
    SessionCatalog {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
    },
    /// The session's context, cost and rate limit (§10).
    #[serde(rename = "session.usage")]
    SessionUsage {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
    },
    /// Withdraw a prompt still waiting in the relay's queue (§10).
    #[serde(rename = "prompt.cancel")]
    PromptCancel {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        prompt_id: String,
    },
    /// Put a file under the workdir's `.ccrelay/uploads/` (§10).
    #[serde(rename = "file.upload")]
    FileUpload {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        name: String,
        /// The content, base64.
        data: String,
    },
}

/// Every `type` a [`ClientMsg`] may have (the same set [`parse_request`] accepts).
pub const CLIENT_MSG_TYPES: &[&str] = &[
    "auth.response",
    "pair.request",
    "pair.respond",
    "pair.invite",
    "session.list",
    "attach",
    "detach",
    "prompt",
    "respond",
    "interrupt",
    "session.restart",
    "ping",
    "history",
    "keys.list",
    "keys.rename",
    "keys.revoke",
    "client.visible",
    "push.subscribe",
    "push.unsubscribe",
    "session.create",
    "session.close",
    "session.rename",
    "conversations.list",
    "dirs.list",
    "files.status",
    "files.diff",
    "files.list",
    "files.read",
    "session.set",
    "session.catalog",
    "session.usage",
    "prompt.cancel",
    "file.upload",
];

impl ClientMsg {
    /// The frame's text.
    pub fn to_json(&self) -> String {
        // Strings, numbers, booleans and JSON values only: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A `respond` answer to a `can_use_tool` request, as a client writes it (§6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "behavior", rename_all = "lowercase")]
pub enum PermissionAnswer {
    Allow {
        /// The tool input to run with (absent: the request's own input).
        #[serde(
            rename = "updatedInput",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        updated_input: Option<Map<String, Value>>,
        /// Permission rules to add (the request's `permission_suggestions`).
        #[serde(
            rename = "updatedPermissions",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        updated_permissions: Option<Vec<Value>>,
    },
    Deny {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// Also stop the turn.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interrupt: Option<bool>,
    },
}

/// One parsed inbound frame: the request and its optional id.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub id: Option<RequestId>,
    pub request: ClientRequest,
}

/// Most events one `history` request may ask for (§4).
pub const HISTORY_MAX_LIMIT: u64 = 1000;
/// Events a `history` request without `limit` gets.
pub const HISTORY_DEFAULT_LIMIT: u64 = 100;

/// The name of the session used when a request leaves `session` out.
pub const DEFAULT_SESSION: &str = "default";

/// Parse one text frame into a request, classifying failures as §2 says:
/// not JSON / not an object → `bad_json`; missing or ill-typed fields → `bad_message`;
/// an unknown `type` → `unknown_type`. The error carries the request `id` when the
/// frame had a valid one.
pub fn parse_request(text: &str) -> Result<Inbound, ProtocolError> {
    // Bound what the tree below may cost before building it: a frame's JSON tree
    // takes tens of bytes per value, so a 4 MiB `[{},{},...]` would take hundreds
    // of MB. No request needs this many values.
    let nodes = json_values(text);
    if nodes > MAX_FRAME_JSON_VALUES {
        return Err(ProtocolError::new(
            ErrorCode::TooLarge,
            format!(
                "the frame holds about {nodes} JSON values; at most {MAX_FRAME_JSON_VALUES} are accepted"
            ),
        )
        .with_id(peek_request_id(text)));
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ProtocolError::new(ErrorCode::BadJson, format!("not valid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(ProtocolError::new(
            ErrorCode::BadJson,
            "a frame must be a JSON object",
        ));
    };
    let id = match obj.remove("id") {
        None | Some(Value::Null) => None,
        Some(raw) => Some(parse_id(raw)?),
    };
    let fail = |code: ErrorCode, msg: String| ProtocolError::new(code, msg).with_id(id.clone());
    let type_name = match obj.remove("type") {
        Some(Value::String(t)) => t,
        Some(_) => {
            return Err(fail(
                ErrorCode::BadMessage,
                "`type` must be a string".into(),
            ));
        }
        None => return Err(fail(ErrorCode::BadMessage, "missing `type`".into())),
    };
    let mut fields = Fields {
        obj,
        id: id.clone(),
    };
    let request = match type_name.as_str() {
        "auth.response" => ClientRequest::AuthResponse {
            signature: fields.required_string("signature")?,
            public_key: fields.optional_string("public_key")?,
            // Anything but a short string is ignored, as §3 says.
            device: match fields.obj.remove("device") {
                Some(Value::String(d)) if d.chars().count() <= MAX_SHORT_STRING_CHARS => Some(d),
                _ => None,
            },
            channel_binding: fields.optional_string("channel_binding")?,
            origin: fields.optional_string("origin")?,
        },
        "pair.request" => {
            let signature = fields.required_string("signature")?;
            let public_key = fields.required_string("public_key")?;
            let device = fields.required_string("device")?;
            if let Err(why) = valid_device_name(&device) {
                return Err(fail(ErrorCode::BadMessage, format!("`device` {why}")));
            }
            ClientRequest::PairRequest {
                signature,
                public_key,
                device,
                channel_binding: fields.optional_string("channel_binding")?,
                origin: fields.optional_string("origin")?,
                invite: fields.optional_string("invite")?,
            }
        }
        "pair.respond" => {
            let pair_id = fields.required_string("pair_id")?;
            let allow = match fields.obj.remove("allow") {
                Some(Value::Bool(b)) => b,
                Some(_) => {
                    return Err(fail(
                        ErrorCode::BadMessage,
                        "`allow` must be a boolean".into(),
                    ));
                }
                None => return Err(fail(ErrorCode::BadMessage, "missing `allow`".into())),
            };
            let role = fields.pair_role()?;
            let block = match fields.obj.remove("block") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => b,
                Some(_) => {
                    return Err(fail(
                        ErrorCode::BadMessage,
                        "`block` must be a boolean".into(),
                    ));
                }
            };
            ClientRequest::PairRespond {
                pair_id,
                allow,
                role,
                block,
            }
        }
        "pair.invite" => ClientRequest::PairInvite {
            role: fields.pair_role()?,
            expires_in_ms: fields.optional_u64("expires_in_ms")?,
        },
        "session.list" => ClientRequest::SessionList,
        "attach" => {
            let session = fields.session()?;
            let since = fields.optional_u64("since")?;
            let tail = fields.optional_u64("tail")?;
            let start = match (since, tail) {
                (Some(_), Some(_)) => {
                    return Err(fail(
                        ErrorCode::BadMessage,
                        "give either `since` or `tail`, not both".into(),
                    ));
                }
                (_, Some(n)) => ReplayStart::Tail(n),
                (since, None) => ReplayStart::Since(since.unwrap_or(0)),
            };
            let uid = fields.optional_short_string("uid")?;
            ClientRequest::Attach {
                session,
                start,
                uid,
            }
        }
        "detach" => ClientRequest::Detach {
            session: fields.session()?,
        },
        "prompt" => {
            let session = fields.session()?;
            let key = fields.optional_short_string("key")?;
            let content = fields.prompt_content()?;
            let steer = fields.optional_bool("steer")?.unwrap_or(false);
            let at = fields.optional_short_string("at")?;
            if steer && at.is_some() {
                return Err(
                    fields.bad("a prompt is either `steer` or scheduled `at`, not both".into())
                );
            }
            ClientRequest::Prompt {
                session,
                content,
                key,
                steer,
                at,
            }
        }
        "respond" => {
            let session = fields.session()?;
            let request_id = fields.required_string("request_id")?;
            let response = match fields.obj.remove("response") {
                Some(v @ Value::Object(_)) => RespondBody(v),
                Some(_) => {
                    return Err(fail(
                        ErrorCode::BadMessage,
                        "`response` must be an object".into(),
                    ));
                }
                None => return Err(fail(ErrorCode::BadMessage, "missing `response`".into())),
            };
            ClientRequest::Respond {
                session,
                request_id,
                response,
            }
        }
        "interrupt" => ClientRequest::Interrupt {
            session: fields.session()?,
        },
        "session.restart" => ClientRequest::SessionRestart {
            session: fields.session()?,
        },
        "ping" => ClientRequest::Ping,
        "history" => {
            let session = fields.session()?;
            let before = fields.optional_u64("before")?;
            let limit = fields.optional_u64("limit")?;
            match (before, limit.unwrap_or(HISTORY_DEFAULT_LIMIT)) {
                (None | Some(0), _) => {
                    return Err(fail(
                        ErrorCode::BadMessage,
                        "`before` must be a seq of at least 1".into(),
                    ));
                }
                (_, limit) if limit == 0 || limit > HISTORY_MAX_LIMIT => {
                    return Err(fail(
                        ErrorCode::BadMessage,
                        format!("`limit` must be from 1 to {HISTORY_MAX_LIMIT}"),
                    ));
                }
                (Some(before), limit) => ClientRequest::History {
                    session,
                    before,
                    limit,
                },
            }
        }
        "keys.list" => ClientRequest::KeysList,
        "keys.rename" => {
            let fingerprint = fields.required_string("fingerprint")?;
            let device = fields.required_string("device")?;
            let device = device.trim_matches([' ', '\t']);
            if let Err(why) = valid_device_name(device) {
                return Err(fail(ErrorCode::BadMessage, format!("`device` {why}")));
            }
            ClientRequest::KeysRename {
                fingerprint,
                device: device.to_string(),
            }
        }
        "keys.revoke" => ClientRequest::KeysRevoke {
            fingerprint: fields.required_string("fingerprint")?,
        },
        "client.visible" => match fields.obj.remove("visible") {
            Some(Value::Bool(visible)) => ClientRequest::ClientVisible { visible },
            Some(_) => {
                return Err(fail(
                    ErrorCode::BadMessage,
                    "`visible` must be a boolean".into(),
                ));
            }
            None => return Err(fail(ErrorCode::BadMessage, "missing `visible`".into())),
        },
        "push.subscribe" => {
            let subscription = match fields.obj.remove("subscription") {
                Some(v @ Value::Object(_)) => serde_json::from_value(v).map_err(|e| {
                    fail(
                        ErrorCode::BadMessage,
                        format!(
                            "`subscription` must be a PushSubscription: {{\"endpoint\":\"https://...\",\"keys\":{{\"p256dh\":\"...\",\"auth\":\"...\"}}}} ({})",
                            // serde's text may quote the client's value: bounded.
                            e.to_string().chars().take(160).collect::<String>()
                        ),
                    )
                })?,
                Some(_) => {
                    return Err(fail(
                        ErrorCode::BadMessage,
                        "`subscription` must be an object".into(),
                    ));
                }
                None => {
                    return Err(fail(
                        ErrorCode::BadMessage,
                        "missing `subscription`".into(),
                    ));
                }
            };
            ClientRequest::PushSubscribe { subscription }
        }
        "push.unsubscribe" => ClientRequest::PushUnsubscribe {
            endpoint: fields.required_string("endpoint")?,
        },
        "session.create" => ClientRequest::SessionCreate(Box::new(fields.session_create()?)),
        "session.close" => ClientRequest::SessionClose {
            session: fields.session()?,
            remove_worktree: fields.optional_bool("remove_worktree")?.unwrap_or(false),
        },
        "session.rename" => {
            let session = fields.session()?;
            let title = fields.required_string("title")?;
            let title = title.trim();
            if let Err(why) = valid_session_title(title) {
                return Err(fail(ErrorCode::BadMessage, format!("`title` {why}")));
            }
            ClientRequest::SessionRename {
                session,
                title: title.to_string(),
            }
        }
        "conversations.list" => {
            let workdir = fields.path("workdir")?;
            let limit = match fields.optional_u64("limit")? {
                None => CONVERSATIONS_DEFAULT_LIMIT,
                Some(n) if (1..=CONVERSATIONS_MAX_LIMIT).contains(&n) => n,
                Some(_) => {
                    return Err(fail(
                        ErrorCode::BadMessage,
                        format!("`limit` must be from 1 to {CONVERSATIONS_MAX_LIMIT}"),
                    ));
                }
            };
            ClientRequest::ConversationsList {
                workdir,
                limit,
                before: fields.optional_short_string("before")?,
            }
        }
        "dirs.list" => ClientRequest::DirsList {
            path: fields.optional_path("path")?,
        },
        "files.status" => ClientRequest::FilesStatus {
            session: fields.session()?,
        },
        "files.diff" => {
            let session = fields.session()?;
            let path = fields.workspace_path("path")?;
            let base = match fields.optional_string("base")? {
                None => DiffBase::Head,
                Some(text) => DiffBase::parse(&text).ok_or_else(|| {
                    fail(
                        ErrorCode::BadMessage,
                        "`base` must be \"HEAD\" or \"turn:<prompt_id>\"".into(),
                    )
                })?,
            };
            ClientRequest::FilesDiff {
                session,
                path,
                base,
            }
        }
        "files.list" => ClientRequest::FilesList {
            session: fields.session()?,
            path: fields.workspace_path("path")?.unwrap_or_default(),
        },
        "files.read" => {
            let session = fields.session()?;
            let path = fields
                .workspace_path("path")?
                .ok_or_else(|| fail(ErrorCode::BadMessage, "missing `path`".into()))?;
            let offset = fields.optional_u64("offset")?.unwrap_or(0);
            let max_bytes = match fields.optional_u64("max_bytes")? {
                None => FILES_READ_DEFAULT_BYTES,
                Some(0) => {
                    return Err(fail(
                        ErrorCode::BadMessage,
                        "`max_bytes` must be at least 1".into(),
                    ));
                }
                Some(n) => n.min(FILES_READ_MAX_BYTES),
            };
            ClientRequest::FilesRead {
                session,
                path,
                offset,
                max_bytes,
            }
        }
        "session.set" => {
            let session = fields.session()?;
            match fields.settings()? {
                Some(settings) => ClientRequest::SessionSet { session, settings },
                None => return Err(fail(ErrorCode::BadMessage, "missing `settings`".into())),
            }
        }
        "session.catalog" => ClientRequest::SessionCatalog {
            session: fields.session()?,
        },
        "session.usage" => ClientRequest::SessionUsage {
            session: fields.session()?,
        },
        "prompt.cancel" => ClientRequest::PromptCancel {
            session: fields.session()?,
            prompt_id: fields.required_string("prompt_id")?,
        },
        "file.upload" => ClientRequest::FileUpload {
            session: fields.session()?,
            name: fields.required_string("name")?,
            data: fields.required_string("data")?,
        },
        other => {
            return Err(fail(
                ErrorCode::UnknownType,
                format!("unknown message type `{}`", truncate_for_message(other)),
            ));
        }
    };
    Ok(Inbound { id, request })
}

/// Check a pairing device name (§3): 1 to 64 Unicode scalar values, none of them
/// a control character (Cc), a format character (Cf, which includes every bidi
/// control) or a line/paragraph separator. Err says what is wrong.
pub fn valid_device_name(name: &str) -> Result<(), &'static str> {
    let count = name.chars().count();
    if count == 0 {
        return Err("must not be empty");
    }
    if count > MAX_SHORT_STRING_CHARS {
        return Err("must be at most 64 characters");
    }
    if name.chars().any(|c| c.is_control() || is_format_char(c)) {
        return Err("must not contain control, format or bidi characters");
    }
    Ok(())
}

/// Unicode general category Cf (format characters, Unicode 15), plus the line
/// and paragraph separators (Zl, Zp), which terminals also treat as line breaks:
/// characters that can hide or reorder text a person reads (also in file names
/// the server writes).
pub fn is_format_char(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x2028..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// The valid `id` of a frame, if it has one, without interpreting the rest (used
/// to answer frames that are refused before parsing, e.g. by the rate limit).
/// Nothing but the id is materialized (the rest is only skipped over).
pub fn peek_request_id(text: &str) -> Option<RequestId> {
    #[derive(serde::Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
    }
    let raw = serde_json::from_str::<IdOnly>(text).ok()?.id?;
    // A valid id is short; anything longer is not worth building.
    if raw.get().len() > 4 * MAX_SHORT_STRING_CHARS + 2 {
        return None;
    }
    parse_id(serde_json::from_str(raw.get()).ok()?).ok()
}

/// Most JSON values (objects, arrays, scalars) one frame may hold.
pub const MAX_FRAME_JSON_VALUES: usize = 65_536;

/// An upper bound on the number of JSON values in `text` (one per opening
/// bracket or comma outside strings, plus one), in one pass without allocating.
pub fn json_values(text: &str) -> usize {
    let mut n = 1;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' | b',' => n += 1,
            _ => {}
        }
    }
    n
}

fn parse_id(raw: Value) -> Result<RequestId, ProtocolError> {
    match raw {
        Value::String(s) if s.chars().count() <= MAX_SHORT_STRING_CHARS => Ok(RequestId::Text(s)),
        Value::Number(n) => match n.as_u64() {
            Some(v) if v <= MAX_INTEGER_ID => Ok(RequestId::Number(v)),
            _ => Err(ProtocolError::new(
                ErrorCode::BadMessage,
                "`id` must be a string of at most 64 characters or an integer from 0 to 2^53-1",
            )),
        },
        _ => Err(ProtocolError::new(
            ErrorCode::BadMessage,
            "`id` must be a string of at most 64 characters or an integer from 0 to 2^53-1",
        )),
    }
}

fn truncate_for_message(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Field extraction with errors that carry the request id.
struct Fields {
    obj: Map<String, Value>,
    id: Option<RequestId>,
}

impl Fields {
    fn bad(&self, msg: String) -> ProtocolError {
        ProtocolError::new(ErrorCode::BadMessage, msg).with_id(self.id.clone())
    }

    fn required_string(&mut self, name: &str) -> Result<String, ProtocolError> {
        match self.obj.remove(name) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(self.bad(format!("`{name}` must be a string"))),
            None => Err(self.bad(format!("missing `{name}`"))),
        }
    }

    fn optional_string(&mut self, name: &str) -> Result<Option<String>, ProtocolError> {
        match self.obj.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.bad(format!("`{name}` must be a string"))),
        }
    }

    fn optional_short_string(&mut self, name: &str) -> Result<Option<String>, ProtocolError> {
        let value = self.optional_string(name)?;
        if let Some(s) = &value
            && s.chars().count() > MAX_SHORT_STRING_CHARS
        {
            return Err(self.bad(format!("`{name}` must be at most 64 characters")));
        }
        Ok(value)
    }

    fn optional_u64(&mut self, name: &str) -> Result<Option<u64>, ProtocolError> {
        match self.obj.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) => Ok(Some(v)),
                None => Err(self.bad(format!("`{name}` must be an integer >= 0"))),
            },
            Some(_) => Err(self.bad(format!("`{name}` must be an integer >= 0"))),
        }
    }

    fn optional_bool(&mut self, name: &str) -> Result<Option<bool>, ProtocolError> {
        match self.obj.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(self.bad(format!("`{name}` must be a boolean"))),
        }
    }

    /// A directory a client names (§4): a non-empty string of at most
    /// [`MAX_PATH_BYTES`] bytes without NUL. Whether it is absolute or `~/`-relative,
    /// exists and lies inside the roots is the server's check.
    fn optional_path(&mut self, name: &str) -> Result<Option<String>, ProtocolError> {
        let Some(path) = self.optional_string(name)? else {
            return Ok(None);
        };
        if path.is_empty() || path.len() > MAX_PATH_BYTES || path.contains('\0') {
            return Err(self.bad(format!(
                "`{name}` must be a path of 1 to {MAX_PATH_BYTES} bytes without NUL"
            )));
        }
        Ok(Some(path))
    }

    /// A path inside a session's workdir (§11): a string of at most
    /// [`MAX_PATH_BYTES`] bytes. Everything else (NUL, `..`, absolute) is the
    /// server's check, answered `forbidden`.
    fn workspace_path(&mut self, name: &str) -> Result<Option<String>, ProtocolError> {
        let path = self.optional_string(name)?;
        if path.as_ref().is_some_and(|p| p.len() > MAX_PATH_BYTES) {
            return Err(self.bad(format!("`{name}` must be at most {MAX_PATH_BYTES} bytes")));
        }
        Ok(path)
    }

    fn path(&mut self, name: &str) -> Result<String, ProtocolError> {
        self.optional_path(name)?
            .ok_or_else(|| self.bad(format!("missing `{name}`")))
    }

    fn session_create(&mut self) -> Result<SessionCreate, ProtocolError> {
        let workdir = self.path("workdir")?;
        let name = self.optional_string("name")?;
        if let Some(name) = &name
            && let Err(why) = valid_session_name(name)
        {
            return Err(self.bad(format!("`name` {why}")));
        }
        let worktree = match self.obj.remove("worktree") {
            None | Some(Value::Null) => None,
            Some(Value::Object(mut w)) => {
                let mut branch_base = |key: &str| match w.remove(key) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_REF_BYTES => {
                        Ok(Some(s))
                    }
                    Some(_) => Err(self.bad(format!(
                        "`worktree.{key}` must be a string of 1 to {MAX_REF_BYTES} bytes"
                    ))),
                };
                let branch = branch_base("branch")?;
                let base = branch_base("base")?;
                Some(WorktreeRequest { branch, base })
            }
            Some(_) => return Err(self.bad("`worktree` must be an object".into())),
        };
        let resume = self.optional_short_string("resume")?;
        let fork = self.optional_bool("fork")?.unwrap_or(false);
        if fork && resume.is_none() {
            return Err(self.bad("`fork` needs `resume`".into()));
        }
        let settings = self.settings()?;
        let key = self.optional_short_string("key")?;
        Ok(SessionCreate {
            workdir,
            name,
            worktree,
            resume,
            fork,
            settings,
            key,
        })
    }

    /// `settings` of `session.create` and `session.set` (§10): any subset, each
    /// field of its type; unknown fields refused.
    fn settings(&mut self) -> Result<Option<SettingsRequest>, ProtocolError> {
        match self.obj.remove("settings") {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::Object(_)) => Ok(Some(serde_json::from_value(v).map_err(|e| {
                self.bad(format!(
                    "`settings` must be {{\"permission_mode\":\"…\",\"model\":\"…\",\"effort\":\"…\",\"thinking\":N,\"auto_continue\":false}} ({})",
                    e.to_string().chars().take(160).collect::<String>()
                ))
            })?)),
            Some(_) => Err(self.bad("`settings` must be an object".into())),
        }
    }

    /// `role` of `pair.respond` and `pair.invite`: `owner` (the default) or `viewer`.
    fn pair_role(&mut self) -> Result<Role, ProtocolError> {
        match self.optional_string("role")?.as_deref() {
            None | Some("owner") => Ok(Role::Owner),
            Some("viewer") => Ok(Role::Viewer),
            Some(_) => Err(self.bad("`role` must be \"owner\" or \"viewer\"".into())),
        }
    }

    fn session(&mut self) -> Result<String, ProtocolError> {
        Ok(self
            .optional_string("session")?
            .unwrap_or_else(|| DEFAULT_SESSION.to_string()))
    }

    /// `content`: a non-empty string, or a non-empty array of content-block objects
    /// each with a string `type`. Kept as JSON text so it reaches the agent as sent.
    fn prompt_content(&mut self) -> Result<PromptContent, ProtocolError> {
        let content = match self.obj.remove("content") {
            None => return Err(self.bad("missing `content`".into())),
            Some(c) => c,
        };
        let valid = match &content {
            Value::String(s) => !s.is_empty(),
            Value::Array(blocks) => {
                !blocks.is_empty()
                    && blocks.iter().all(|b| {
                        b.as_object()
                            .and_then(|o| o.get("type"))
                            .is_some_and(Value::is_string)
                    })
            }
            _ => false,
        };
        if !valid {
            return Err(self.bad(
                "`content` must be a non-empty string or an array of content blocks (objects with a string `type`)"
                    .into(),
            ));
        }
        let raw = serde_json::value::to_raw_value(&content)
            .map_err(|e| self.bad(format!("`content` cannot be encoded: {e}")))?;
        Ok(PromptContent(raw))
    }
}

/// Validate a `respond` answer for a `can_use_tool` request (docs/protocol.md §4.5, §6.1) and
/// return the permission result to send to the agent. `original_input` fills an
/// `allow` without `updatedInput`; `denier` names who denied when no message is given.
pub fn permission_result(
    response: &Value,
    original_input: Option<&Value>,
    denier: &str,
) -> Result<Value, String> {
    let obj = response
        .as_object()
        .ok_or_else(|| "`response` must be an object".to_string())?;
    let behavior = obj.get("behavior").and_then(Value::as_str);
    let allowed_keys: &[&str] = match behavior {
        Some("allow") => &["behavior", "updatedInput", "updatedPermissions"],
        Some("deny") => &["behavior", "message", "interrupt"],
        _ => &["behavior"],
    };
    if let Some(unknown) = obj.keys().find(|k| !allowed_keys.contains(&k.as_str())) {
        return Err(format!("unexpected field `{unknown}` in `response`"));
    }
    match behavior {
        Some("allow") => {
            let mut out = Map::new();
            out.insert("behavior".into(), Value::from("allow"));
            match obj.get("updatedInput") {
                None | Some(Value::Null) => {
                    out.insert(
                        "updatedInput".into(),
                        original_input
                            .cloned()
                            .unwrap_or_else(|| Value::Object(Map::new())),
                    );
                }
                Some(v @ Value::Object(_)) => {
                    out.insert("updatedInput".into(), v.clone());
                }
                Some(_) => return Err("`updatedInput` must be an object".into()),
            }
            match obj.get("updatedPermissions") {
                None | Some(Value::Null) => {}
                Some(v @ Value::Array(items)) if items.iter().all(Value::is_object) => {
                    out.insert("updatedPermissions".into(), v.clone());
                }
                Some(_) => return Err("`updatedPermissions` must be an array of objects".into()),
            }
            Ok(Value::Object(out))
        }
        Some("deny") => {
            let mut out = Map::new();
            out.insert("behavior".into(), Value::from("deny"));
            let message = match obj.get("message") {
                None | Some(Value::Null) => format!("denied by {denier}"),
                Some(Value::String(m)) => m.clone(),
                Some(_) => return Err("`message` must be a string".into()),
            };
            out.insert("message".into(), Value::from(message));
            match obj.get("interrupt") {
                None | Some(Value::Null) => {}
                Some(Value::Bool(b)) => {
                    out.insert("interrupt".into(), Value::Bool(*b));
                }
                Some(_) => return Err("`interrupt` must be a boolean".into()),
            }
            Ok(Value::Object(out))
        }
        _ => Err("`response.behavior` must be \"allow\" or \"deny\"".into()),
    }
}

/// The size limits `auth.ok` announces (docs/protocol.md §10), in bytes: a whole
/// frame, a prompt's content, a `file.upload`'s decoded data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_frame_bytes: u64,
    pub max_prompt_bytes: u64,
    pub max_upload_bytes: u64,
}

/// A session as listed in `auth.ok` and `session.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub session: String,
    pub state: Cow<'static, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<usize>,
    /// The fields §4 added with created sessions; absent from older servers.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Box<SessionDetails>>,
}

/// A `session.list` entry's fields beyond name, state, head and clients (§4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionDetails {
    pub uid: String,
    pub title: String,
    /// `config` or `client`.
    pub created: Cow<'static, str>,
    pub created_at: String,
    pub last_activity: String,
    pub cost_usd: f64,
    pub settings: SessionSettingsJson,
    pub closable: bool,
    pub pending: Vec<PendingSummary>,
    /// Owners only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Owners only, for a worktree session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<WorktreeInfo>,
    /// Owners only: the agent's conversation (session id) once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
}

// `f64` has no `Eq`; costs compare as their bits (NaN is never sent).
impl Eq for SessionDetails {}

/// A request open in a session, as `session.list` lists it (§4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSummary {
    pub request_id: String,
    pub tool: String,
    /// At most 120 characters.
    pub summary: String,
}

/// One past conversation of `conversations.list` (§4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationEntry {
    pub conversation: String,
    pub title: String,
    pub updated_at: String,
    /// The open session running it.
    pub in_use_by: Option<String>,
}

/// One subdirectory of `dirs.list` (§4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub git: bool,
}

/// A client as shown in `clients` lists and `presence` frames.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientEntry {
    pub client_id: String,
    pub fingerprint: String,
    pub comment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub role: Role,
}

/// An `attached` reply's `clients`: entries serialized once and shared between
/// replies (`session::listed`), written as a JSON array.
#[derive(Debug, Clone)]
pub struct ClientList(pub Vec<std::sync::Arc<RawValue>>);

impl ClientList {
    /// One entry in its wire form.
    pub fn entry_json(entry: &ClientEntry) -> std::sync::Arc<RawValue> {
        // A ClientEntry (strings and an enum) always serializes; `null` is never used.
        serde_json::value::to_raw_value(entry)
            .map(std::sync::Arc::from)
            .unwrap_or_else(|_| std::sync::Arc::from(RawValue::NULL.to_owned()))
    }
}

impl Serialize for ClientList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for entry in &self.0 {
            seq.serialize_element(&**entry)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for ClientList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = raw_json::many(deserializer)?;
        Ok(ClientList(
            entries.into_iter().map(std::sync::Arc::from).collect(),
        ))
    }
}

impl ClientList {
    /// The entries as typed values (a client reading an `attached` reply);
    /// an entry that is not a [`ClientEntry`] is left out.
    pub fn entries(&self) -> Vec<ClientEntry> {
        self.0
            .iter()
            .filter_map(|raw| serde_json::from_str(raw.get()).ok())
            .collect()
    }
}

/// One key the server accepts, from one file (extension "Devices", `keys.list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceKey {
    pub fingerprint: String,
    pub key_type: String,
    /// The key's comment in its file ("" if none).
    pub comment: String,
    pub role: Role,
    /// Which file: `authorized_keys`, `viewer_keys`, `paired_keys` or `paired_viewers`.
    pub source: Cow<'static, str>,
    /// For a line of the paired form: the device name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// For a line of the paired form: `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paired: Option<String>,
    /// For a line of the paired form: who approved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paired_by: Option<String>,
    /// Can `keys.rename` / `keys.revoke` change it (it is in a paired file).
    pub editable: bool,
}

/// Frames the server sends. The server builds `event`, `presence` and `history`
/// frames as text (once per event from the agent's raw bytes, see
/// [`event_frame`]; once per presence change; spliced from stored event frames),
/// so those three variants are what clients read them into; every other variant
/// is also how the server writes its frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerMsg {
    #[serde(rename = "auth.challenge")]
    AuthChallenge {
        protocol: u32,
        server_id: String,
        nonce: String,
        namespace: Cow<'static, str>,
        expires_in_ms: u64,
        sign: String,
        /// `"tls-exporter"` over TLS 1.3 (§3); absent otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel_binding: Option<Cow<'static, str>>,
        /// What a response may bind its signature to: `origin`, and `tls-exporter`
        /// when offered (docs/protocol.md, "Origin binding"). Absent from servers
        /// made before origin binding.
        #[serde(default)]
        bindings: Vec<Cow<'static, str>>,
    },
    #[serde(rename = "auth.ok")]
    AuthOk {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        client_id: String,
        fingerprint: String,
        role: Role,
        sessions: Vec<SessionSummary>,
        /// The server's size limits (docs/protocol.md §10), so clients can size what
        /// they send. Absent from servers made before it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limits: Option<Limits>,
    },
    #[serde(rename = "error")]
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        code: ErrorCode,
        message: String,
    },
    #[serde(rename = "session.list")]
    SessionList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        sessions: Vec<SessionSummary>,
    },
    #[serde(rename = "attached")]
    Attached {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        session: String,
        state: Cow<'static, str>,
        head: u64,
        replay_from: u64,
        truncated: bool,
        #[serde(deserialize_with = "raw_json::many")]
        pending: Vec<Box<RawValue>>,
        clients: ClientList,
        /// How many are attached (`clients` holds at most 100 of them, §7).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clients_total: Option<usize>,
    },
    #[serde(rename = "detached")]
    Detached {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        session: String,
    },
    #[serde(rename = "ok")]
    Ok {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queued: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duplicate: Option<bool>,
        /// `session.set`: the settings now in effect (§10).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        settings: Option<SessionSettingsJson>,
        /// `session.set`: the settings that apply only from the agent's next start.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pending_start: Option<Vec<String>>,
        /// `file.upload`: where the file was written, relative to the workdir (§10).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    #[serde(rename = "pong")]
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    /// The direct reply to `pair.request` (§3).
    #[serde(rename = "pair.pending")]
    PairPending {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        pair_id: String,
        code: String,
        expires_in_ms: u64,
    },
    /// To every owner: a device asks to be paired.
    #[serde(rename = "pair.requested")]
    PairRequested {
        pair_id: String,
        fingerprint: String,
        key_type: String,
        device: String,
        code: String,
        peer: String,
        expires_in_ms: u64,
        /// An owner denied a request from this address less than an hour ago.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        denied_recently: Option<bool>,
    },
    /// The reply to `pair.invite`: the token a device pairs with.
    #[serde(rename = "pair.invite")]
    PairInvite {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        invite: String,
        expires_in_ms: u64,
    },
    /// Extension "Devices": the reply to `keys.list`.
    #[serde(rename = "keys.list")]
    KeysList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        keys: Vec<DeviceKey>,
    },
    /// To every owner: a pair request was answered, expired or withdrawn.
    #[serde(rename = "pair.resolved")]
    PairResolved {
        pair_id: String,
        allow: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<Role>,
        by: String,
    },
    /// One event of a session's log (docs/protocol.md §5), built by [`event_frame`].
    #[serde(rename = "event")]
    Event(EventFrame),
    /// Who is attached to a session changed (§7); built by the session's presence
    /// module. Above the delta limit only `count` is written.
    #[serde(rename = "presence")]
    Presence(PresenceFrame),
    /// The reply to `history` (§4): stored `event` frames, spliced in as they are.
    #[serde(rename = "history")]
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        session: String,
        #[serde(deserialize_with = "raw_json::many")]
        events: Vec<Box<RawValue>>,
        truncated: bool,
    },
    /// The reply to `session.create` (§4).
    #[serde(rename = "session.created")]
    SessionCreated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        session: String,
        uid: String,
        /// The agent's working directory (the worktree's path for a worktree session).
        workdir: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worktree: Option<WorktreeInfo>,
        /// A retry of an earlier create with the same `key`: nothing new was made.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duplicate: Option<bool>,
    },
    /// To every authenticated connection: a session was created, closed or
    /// renamed, or its settings, state or pending requests changed (§4).
    #[serde(rename = "session.changed")]
    SessionChanged {
        session: String,
        uid: String,
        change: Cow<'static, str>,
        entry: SessionSummary,
    },
    /// The reply to `conversations.list` (§4).
    #[serde(rename = "conversations.list")]
    ConversationsList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        workdir: String,
        conversations: Vec<ConversationEntry>,
        more: bool,
    },
    /// The reply to `dirs.list` (§4). `path` is absent when the roots are listed.
    #[serde(rename = "dirs.list")]
    DirsList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        dirs: Vec<DirEntry>,
        truncated: bool,
    },
    /// The reply to `files.status` (§11). Outside a repository `git` is false and
    /// `files` empty.
    #[serde(rename = "files.status")]
    FilesStatus {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        session: String,
        git: bool,
        /// Absent when HEAD is detached (or not a repository).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
        /// Absent before the first commit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        head: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upstream: Option<Upstream>,
        files: Vec<FileChange>,
        truncated: bool,
    },
    /// The reply to `files.diff` (§11).
    #[serde(rename = "files.diff")]
    FilesDiff {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        session: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        base: String,
        diff: String,
        binary: bool,
        truncated: bool,
    },
    /// The reply to `files.list` (§11).
    #[serde(rename = "files.list")]
    FilesList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        session: String,
        path: String,
        entries: Vec<FileEntry>,
        truncated: bool,
    },
    /// The reply to `files.read` (§11).
    #[serde(rename = "files.read")]
    FilesRead {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        session: String,
        path: String,
        /// The whole file's size.
        size: u64,
        /// Where `data` starts in the file.
        #[serde(default)]
        offset: u64,
        encoding: ReadEncoding,
        data: String,
        /// More of the file remains after what was sent.
        truncated: bool,
        mime: String,
    },
    /// The reply to `session.catalog`, and (without `id`) a change pushed to
    /// attached clients (§10).
    #[serde(rename = "session.catalog")]
    SessionCatalog {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        session: String,
        commands: Vec<catalog::CatalogCommand>,
        models: Vec<catalog::CatalogModel>,
        permission_modes: Vec<String>,
        /// The session is asleep: this is the last catalog its agent gave.
        stale: bool,
    },
    /// The reply to `session.usage` (§10).
    #[serde(rename = "session.usage")]
    SessionUsage {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        session: String,
        /// Null while asleep or when the agent cannot tell.
        context: Option<catalog::ContextUsage>,
        cost_usd: f64,
        rate_limit: Option<catalog::RateLimit>,
    },
}

/// An `event` frame (§5). `event` stays the exact bytes the agent (or the relay)
/// wrote: the relay never re-serializes an agent line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventFrame {
    pub session: String,
    pub seq: u64,
    /// When the relay logged the event (ms since the Unix epoch); optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<u64>,
    #[serde(deserialize_with = "raw_json::one")]
    pub event: Box<RawValue>,
}

/// A `presence` frame's fields (§7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceFrame {
    pub session: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined: Option<Vec<ClientEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<Vec<String>>,
    pub count: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<Vec<ClientEntry>>,
}

/// Every `type` a [`ServerMsg`] may have. A frame of another type comes from a
/// newer server and is ignored by clients (forward compatibility).
pub const SERVER_MSG_TYPES: &[&str] = &[
    "auth.challenge",
    "auth.ok",
    "error",
    "session.list",
    "attached",
    "detached",
    "ok",
    "pong",
    "pair.pending",
    "pair.requested",
    "pair.invite",
    "keys.list",
    "pair.resolved",
    "event",
    "presence",
    "history",
    "session.created",
    "session.changed",
    "conversations.list",
    "dirs.list",
    "files.status",
    "files.diff",
    "files.list",
    "files.read",
    "session.catalog",
    "session.usage",
];

/// Why a server frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ServerFrameError {
    /// Not a JSON object with a string `type`.
    #[error("not a JSON object with a string `type`: {0}")]
    NotAFrame(serde_json::Error),
    /// A known type whose fields do not match it.
    #[error("a `{kind}` frame that does not match its type: {error}")]
    Malformed {
        kind: String,
        error: serde_json::Error,
    },
}

/// Read one frame from the server as a client does: `Ok(None)` for a type this
/// build does not know (a newer server's; ignored, as docs/protocol.md §2 lets
/// clients do), an error for a frame that is not an object with a `type`, or a
/// known type with ill-typed or missing fields.
pub fn parse_server_frame(text: &str) -> Result<Option<ServerMsg>, ServerFrameError> {
    #[derive(Deserialize)]
    struct TypeOnly<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
    }
    let kind = serde_json::from_str::<TypeOnly>(text)
        .map_err(ServerFrameError::NotAFrame)?
        .kind;
    if !SERVER_MSG_TYPES.contains(&kind.as_ref()) {
        return Ok(None);
    }
    serde_json::from_str(text)
        .map(Some)
        .map_err(|error| ServerFrameError::Malformed {
            kind: kind.chars().take(64).collect(),
            error,
        })
}

/// Relay events (docs/protocol.md §5.2): the events the relay itself writes into a
/// session's log, beside the agent's own stream-json events. The server builds
/// them as JSON objects once and shares the bytes; clients read them with this.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum RelayEvent {
    /// A prompt was accepted into the session (`content` as the client sent it).
    #[serde(rename = "relay.prompt")]
    Prompt {
        prompt_id: String,
        client_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprint: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// A steering prompt (§10).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        steer: bool,
        /// A scheduled prompt: when it is queued (RFC 3339, UTC; §10).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scheduled_at: Option<String>,
        /// Scheduled by the relay itself at a usage limit's reset (§10).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        auto_continue: bool,
        /// It waits in the relay's queue (behind a turn, for the agent to start,
        /// scheduled, or held for a usage limit's reset) instead of going to the
        /// agent now: the `ok`'s `queued` (§5.2, §10).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        queued: bool,
        #[serde(deserialize_with = "raw_json::one")]
        content: Box<RawValue>,
    },
    /// A turn started, ended or was aborted.
    #[serde(rename = "relay.turn")]
    Turn {
        prompt_id: String,
        phase: TurnPhase,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// With `merged`: the running turn's prompt it joined.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        into: Option<String>,
    },
    /// The session's state changed.
    #[serde(rename = "relay.state")]
    State {
        state: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A control request was answered (by a client, or `"relay"` itself).
    #[serde(rename = "relay.resolved")]
    Resolved {
        request_id: String,
        client_id: String,
        /// The permission result sent to the agent (§6), as the relay built it.
        response: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprint: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
    },
    /// A control request was withdrawn without an answer.
    #[serde(rename = "relay.cancelled")]
    Cancelled { request_id: String, reason: String },
    /// The agent process exited (`code` and `signal` are written as `null` when absent).
    #[serde(rename = "relay.agent_exit")]
    AgentExit {
        cause: String,
        code: Option<i64>,
        signal: Option<String>,
        restarting: bool,
    },
    /// The agent wrote a line too long to keep; `bytes` were dropped.
    #[serde(rename = "relay.dropped")]
    Dropped { bytes: u64 },
    /// The session was closed (§4): its last event.
    #[serde(rename = "relay.closed")]
    Closed {
        /// The closer's `client_id`.
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
    },
    /// What a turn changed in the working tree (§11), after its `relay.turn`
    /// `ended` or `aborted`.
    #[serde(rename = "relay.changes")]
    Changes {
        prompt_id: String,
        files: Vec<FileChange>,
        /// More files changed than are listed.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    },
    /// A session setting changed (§10): by a client, or by the agent itself
    /// (`client_id` `agent`).
    #[serde(rename = "relay.settings")]
    Settings {
        settings: SessionSettingsJson,
        changed: Vec<String>,
        client_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprint: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
        /// The model id the agent reports using, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model_in_effect: Option<String>,
    },
    /// The plan behind a pending `ExitPlanMode` request (§10), after the request.
    #[serde(rename = "relay.plan")]
    Plan {
        request_id: String,
        /// Markdown; empty when the agent had none to give.
        plan: String,
    },
}

/// Every `type` a [`RelayEvent`] may have.
pub const RELAY_EVENT_TYPES: &[&str] = &[
    "relay.prompt",
    "relay.turn",
    "relay.state",
    "relay.resolved",
    "relay.cancelled",
    "relay.agent_exit",
    "relay.dropped",
    "relay.closed",
    "relay.changes",
    "relay.settings",
    "relay.plan",
];

/// The phase of a `relay.turn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TurnPhase {
    Started,
    Ended,
    Aborted,
    /// A steering prompt the running turn took in (§10).
    Merged,
}

impl RelayEvent {
    /// Read an event of a session's log: `Ok(None)` when it is not a relay event
    /// (an agent event, or a relay event of a newer server).
    pub fn parse(raw: &str) -> Result<Option<RelayEvent>, ServerFrameError> {
        #[derive(Deserialize)]
        struct TypeOnly<'a> {
            #[serde(rename = "type", borrow)]
            kind: Cow<'a, str>,
        }
        let kind = serde_json::from_str::<TypeOnly>(raw)
            .map_err(ServerFrameError::NotAFrame)?
            .kind;
        if !RELAY_EVENT_TYPES.contains(&kind.as_ref()) {
            return Ok(None);
        }
        serde_json::from_str(raw)
            .map(Some)
            .map_err(|error| ServerFrameError::Malformed {
                kind: kind.chars().take(64).collect(),
                error,
            })
    }
}

impl ServerMsg {
    /// The request id a direct reply echoes (`None` for frames sent on the
    /// server's own initiative).
    pub fn id(&self) -> Option<&RequestId> {
        match self {
            ServerMsg::AuthOk { id, .. }
            | ServerMsg::Error { id, .. }
            | ServerMsg::SessionList { id, .. }
            | ServerMsg::Attached { id, .. }
            | ServerMsg::Detached { id, .. }
            | ServerMsg::Ok { id, .. }
            | ServerMsg::Pong { id }
            | ServerMsg::PairPending { id, .. }
            | ServerMsg::PairInvite { id, .. }
            | ServerMsg::KeysList { id, .. }
            | ServerMsg::History { id, .. }
            | ServerMsg::SessionCreated { id, .. }
            | ServerMsg::ConversationsList { id, .. }
            | ServerMsg::DirsList { id, .. }
            | ServerMsg::FilesStatus { id, .. }
            | ServerMsg::FilesDiff { id, .. }
            | ServerMsg::FilesList { id, .. }
            | ServerMsg::FilesRead { id, .. }
            | ServerMsg::SessionCatalog { id, .. }
            | ServerMsg::SessionUsage { id, .. } => id.as_ref(),
            ServerMsg::AuthChallenge { .. }
            | ServerMsg::PairRequested { .. }
            | ServerMsg::PairResolved { .. }
            | ServerMsg::Event(_)
            | ServerMsg::Presence(_)
            | ServerMsg::SessionChanged { .. } => None,
        }
    }

    /// A plain `ok` reply.
    pub fn ok(id: Option<RequestId>) -> Self {
        ServerMsg::Ok {
            id,
            prompt_id: None,
            queued: None,
            duplicate: None,
            settings: None,
            pending_start: None,
            path: None,
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: no maps with non-string keys, no
        // failing Serialize impls. Fall back to an internal error frame regardless.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"could not encode a reply"}"#.to_string()
        })
    }
}

/// Deserializing the raw (relayed byte for byte) fields. serde reads an internally
/// tagged enum through a buffer that cannot hand out borrowed JSON text, so a
/// [`RawValue`] field is read as a JSON value and encoded again, compactly with
/// its keys in order. Only clients read frames: the server writes these fields
/// from the original bytes and never comes through here.
mod raw_json {
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;
    use serde_json::value::RawValue;

    fn encode<E: serde::de::Error>(value: &Value) -> Result<Box<RawValue>, E> {
        serde_json::value::to_raw_value(value).map_err(E::custom)
    }

    pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<Box<RawValue>, D::Error> {
        encode(&Value::deserialize(d)?)
    }

    pub fn many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Box<RawValue>>, D::Error> {
        Vec::<Value>::deserialize(d)?
            .iter()
            .map(encode::<D::Error>)
            .collect()
    }
}

/// Build the `event` frame for one event:
/// `{"type":"event","session":..,"seq":..,"ts":..,"event":RAW}`. `session_json` is the
/// session name already encoded as a JSON string; `ts_ms` is when the relay logged
/// the event (milliseconds since the Unix epoch: an optional field beyond the
/// contract, kept in the journal with the frame, so a replay shows the same time);
/// `raw` is the event object exactly as the agent wrote it (or as the relay built it).
pub fn event_frame(session_json: &str, seq: u64, ts_ms: u64, raw: &[u8]) -> String {
    // Agent lines were checked to be UTF-8 JSON objects before they get here.
    let raw = std::str::from_utf8(raw).unwrap_or("{}");
    let mut frame = String::with_capacity(raw.len() + session_json.len() + 64);
    frame.push_str(r#"{"type":"event","session":"#);
    frame.push_str(session_json);
    frame.push_str(r#","seq":"#);
    frame.push_str(&seq.to_string());
    frame.push_str(r#","ts":"#);
    frame.push_str(&ts_ms.to_string());
    frame.push_str(r#","event":"#);
    frame.push_str(raw);
    frame.push('}');
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_requests_parse() {
        let r = parse_request(
            r#"{"type":"push.subscribe","id":1,"subscription":{"endpoint":"https://p.example/x","expirationTime":null,"keys":{"p256dh":"BA","auth":"AA"}}}"#,
        )
        .unwrap();
        let ClientRequest::PushSubscribe { subscription } = r.request else {
            panic!("{r:?}")
        };
        assert_eq!(subscription.endpoint, "https://p.example/x");
        assert_eq!(subscription.keys.p256dh, "BA");
        assert_eq!(subscription.keys.auth, "AA");
        for bad in [
            r#"{"type":"push.subscribe"}"#,
            r#"{"type":"push.subscribe","subscription":"x"}"#,
            r#"{"type":"push.subscribe","subscription":{"endpoint":"https://p"}}"#,
            r#"{"type":"push.subscribe","subscription":{"endpoint":5,"keys":{"p256dh":"a","auth":"b"}}}"#,
            r#"{"type":"push.unsubscribe"}"#,
        ] {
            assert_eq!(code_of(bad), ErrorCode::BadMessage, "{bad}");
        }
        let r = parse_request(r#"{"type":"push.unsubscribe","endpoint":"https://p.example/x"}"#)
            .unwrap();
        assert!(
            matches!(r.request, ClientRequest::PushUnsubscribe { endpoint } if endpoint == "https://p.example/x")
        );
    }

    fn code_of(text: &str) -> ErrorCode {
        parse_request(text).unwrap_err().code
    }

    #[test]
    fn device_names_for_pairing() {
        for ok in ["Pixel 9", "é", "📱 phone", &"x".repeat(64), "日本語"] {
            assert_eq!(valid_device_name(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "",
            &"x".repeat(65),
            "a\nb",
            "esc\u{1b}[31m",
            "rtl\u{202e}gnp",
            "iso\u{2066}x",
            "zw\u{200b}j",
            "bom\u{feff}",
            "line\u{2028}sep",
            "del\u{7f}",
            "c1\u{85}",
        ] {
            assert!(valid_device_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pair_messages_parse() {
        let r = parse_request(
            r#"{"type":"pair.request","id":1,"signature":"s","public_key":"k","device":"Pixel 9"}"#,
        )
        .unwrap();
        assert!(
            matches!(r.request, ClientRequest::PairRequest { ref device, .. } if device == "Pixel 9")
        );
        assert_eq!(
            code_of(r#"{"type":"pair.request","signature":"s","public_key":"k"}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code_of(
                r#"{"type":"pair.request","signature":"s","public_key":"k","device":"a\u001bb"}"#
            ),
            ErrorCode::BadMessage
        );
        let r = parse_request(r#"{"type":"pair.respond","pair_id":"p","allow":true}"#).unwrap();
        assert!(matches!(
            r.request,
            ClientRequest::PairRespond {
                allow: true,
                role: Role::Owner,
                ..
            }
        ));
        let r =
            parse_request(r#"{"type":"pair.respond","pair_id":"p","allow":false,"role":"viewer"}"#)
                .unwrap();
        assert!(matches!(
            r.request,
            ClientRequest::PairRespond {
                allow: false,
                role: Role::Viewer,
                ..
            }
        ));
        assert_eq!(
            code_of(r#"{"type":"pair.respond","pair_id":"p","allow":"yes"}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code_of(r#"{"type":"pair.respond","pair_id":"p","allow":true,"role":"admin"}"#),
            ErrorCode::BadMessage
        );
        let r =
            parse_request(r#"{"type":"pair.respond","pair_id":"p","allow":false,"block":true}"#)
                .unwrap();
        assert!(matches!(
            r.request,
            ClientRequest::PairRespond {
                allow: false,
                block: true,
                ..
            }
        ));
        assert_eq!(
            code_of(r#"{"type":"pair.respond","pair_id":"p","allow":false,"block":"yes"}"#),
            ErrorCode::BadMessage
        );
        let r = parse_request(
            r#"{"type":"pair.request","signature":"s","public_key":"k","device":"d","invite":"tok"}"#,
        )
        .unwrap();
        assert!(
            matches!(r.request, ClientRequest::PairRequest { invite: Some(ref t), .. } if t == "tok")
        );
        let r = parse_request(r#"{"type":"pair.invite","id":2}"#).unwrap();
        assert!(matches!(
            r.request,
            ClientRequest::PairInvite {
                role: Role::Owner,
                expires_in_ms: None
            }
        ));
        let r = parse_request(r#"{"type":"pair.invite","role":"viewer","expires_in_ms":5000}"#)
            .unwrap();
        assert!(matches!(
            r.request,
            ClientRequest::PairInvite {
                role: Role::Viewer,
                expires_in_ms: Some(5000)
            }
        ));
        assert_eq!(
            code_of(r#"{"type":"pair.invite","role":"admin"}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code_of(r#"{"type":"pair.invite","expires_in_ms":-1}"#),
            ErrorCode::BadMessage
        );
    }

    /// `history` (§4) and the Devices extension: the accepted shapes, with the
    /// defaults filled in, and every refusal as `bad_message` carrying the id.
    #[test]
    fn history_and_devices_requests() {
        let r = parse_request(r#"{"type":"history","id":"h","before":10}"#).unwrap();
        assert!(matches!(
            r.request,
            ClientRequest::History { ref session, before: 10, limit: HISTORY_DEFAULT_LIMIT }
                if session == DEFAULT_SESSION
        ));
        assert_eq!(r.request.type_name(), "history");
        let r =
            parse_request(r#"{"type":"history","session":"s","before":5,"limit":1000}"#).unwrap();
        assert!(matches!(
            r.request,
            ClientRequest::History { limit: 1000, .. }
        ));
        for (bad, why) in [
            (
                r#"{"type":"history","id":7}"#,
                "`before` must be a seq of at least 1",
            ),
            (
                r#"{"type":"history","id":7,"before":0}"#,
                "`before` must be a seq of at least 1",
            ),
            (
                r#"{"type":"history","id":7,"before":3,"limit":0}"#,
                "`limit` must be from 1 to 1000",
            ),
            (
                r#"{"type":"history","id":7,"before":3,"limit":1001}"#,
                "`limit` must be from 1 to 1000",
            ),
            (
                r#"{"type":"history","id":7,"before":"3"}"#,
                "`before` must be an integer >= 0",
            ),
            (
                r#"{"type":"keys.rename","id":7,"fingerprint":"SHA256:x","device":" \t"}"#,
                "`device` ",
            ),
            (
                r#"{"type":"keys.rename","id":7,"fingerprint":"SHA256:x"}"#,
                "`device`",
            ),
            (
                r#"{"type":"keys.rename","id":7,"fingerprint":1,"device":"d"}"#,
                "`fingerprint` must be a string",
            ),
            (r#"{"type":"keys.revoke","id":7}"#, "`fingerprint`"),
        ] {
            let e = parse_request(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadMessage, "{bad}");
            assert!(e.message.contains(why), "{bad}: {}", e.message);
            assert_eq!(e.id, Some(RequestId::Number(7)), "{bad}: the id is echoed");
        }
        let r = parse_request(
            r#"{"type":"keys.rename","fingerprint":"SHA256:x","device":"  Pixel 9\t"}"#,
        )
        .unwrap();
        assert!(
            matches!(r.request, ClientRequest::KeysRename { ref device, .. } if device == "Pixel 9"),
            "blanks around the name are trimmed"
        );
        let r = parse_request(r#"{"type":"keys.revoke","fingerprint":"SHA256:x"}"#).unwrap();
        assert_eq!(r.request.type_name(), "keys.revoke");
        assert_eq!(
            parse_request(r#"{"type":"keys.list"}"#)
                .unwrap()
                .request
                .type_name(),
            "keys.list"
        );
    }

    /// Every error code's wire name is the one docs/protocol.md §2.2 lists.
    #[test]
    fn error_codes_have_their_wire_names() {
        use ErrorCode::*;
        let all = [
            (BadJson, "bad_json"),
            (BadMessage, "bad_message"),
            (UnknownType, "unknown_type"),
            (NotAuthenticated, "not_authenticated"),
            (AuthFailed, "auth_failed"),
            (AuthTimeout, "auth_timeout"),
            (Forbidden, "forbidden"),
            (NoSuchSession, "no_such_session"),
            (NotAttached, "not_attached"),
            (NotPending, "not_pending"),
            (RateLimited, "rate_limited"),
            (TooLarge, "too_large"),
            (AgentUnavailable, "agent_unavailable"),
            (Overloaded, "overloaded"),
            (Internal, "internal"),
        ];
        for (code, name) in all {
            assert_eq!(code.as_str(), name);
            assert_eq!(serde_json::to_value(code).unwrap(), name, "serde agrees");
        }
        let e = ProtocolError::new(NotPending, "gone");
        assert_eq!(e.to_string(), "not_pending: gone");
    }

    /// A `respond` answer's shapes (§6): allow fills `updatedInput` from the
    /// request; every ill-typed field is refused with the reason.
    #[test]
    fn permission_answers_are_checked_field_by_field() {
        let input = serde_json::json!({"command":"ls"});
        let allow = permission_result(&serde_json::json!({"behavior":"allow"}), Some(&input), "me")
            .unwrap();
        assert_eq!(
            allow,
            serde_json::json!({"behavior":"allow","updatedInput":{"command":"ls"}})
        );
        let edited = permission_result(
            &serde_json::json!({"behavior":"allow","updatedInput":{"command":"pwd"},
                "updatedPermissions":[{"type":"addRules"}]}),
            Some(&input),
            "me",
        )
        .unwrap();
        assert_eq!(edited["updatedInput"]["command"], "pwd");
        assert_eq!(edited["updatedPermissions"][0]["type"], "addRules");
        let deny = permission_result(
            &serde_json::json!({"behavior":"deny","interrupt":true}),
            None,
            "phone",
        )
        .unwrap();
        assert_eq!(
            deny,
            serde_json::json!({"behavior":"deny","message":"denied by phone","interrupt":true})
        );
        for (bad, why) in [
            (serde_json::json!("allow"), "`response` must be an object"),
            (
                serde_json::json!({"behavior":"allow","updatedInput":[1]}),
                "`updatedInput` must be an object",
            ),
            (
                serde_json::json!({"behavior":"allow","updatedPermissions":[1]}),
                "`updatedPermissions` must be an array of objects",
            ),
            (
                serde_json::json!({"behavior":"deny","message":5}),
                "`message` must be a string",
            ),
            (
                serde_json::json!({"behavior":"deny","interrupt":"yes"}),
                "`interrupt` must be a boolean",
            ),
            (
                serde_json::json!({"behavior":"deny","updatedInput":{}}),
                "unexpected field `updatedInput`",
            ),
        ] {
            let e = permission_result(&bad, Some(&input), "me").unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn classifies_bad_frames() {
        assert_eq!(code_of("not json"), ErrorCode::BadJson);
        assert_eq!(code_of("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code_of(r#""str""#), ErrorCode::BadJson);
        assert_eq!(code_of(r#"{"no_type":1}"#), ErrorCode::BadMessage);
        assert_eq!(code_of(r#"{"type":5}"#), ErrorCode::BadMessage);
        assert_eq!(code_of(r#"{"type":"nope"}"#), ErrorCode::UnknownType);
        assert_eq!(
            code_of(r#"{"type":"attach","since":-1}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code_of(r#"{"type":"attach","since":1,"tail":2}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(code_of(r#"{"type":"prompt"}"#), ErrorCode::BadMessage);
        assert_eq!(
            code_of(r#"{"type":"prompt","content":""}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code_of(r#"{"type":"prompt","content":[1]}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code_of(r#"{"type":"prompt","content":"x","key":7}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code_of(r#"{"type":"respond","request_id":"r","response":1}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(code_of(r#"{"type":"ping","id":-3}"#), ErrorCode::BadMessage);
        assert_eq!(
            code_of(r#"{"type":"ping","id":9007199254740992}"#),
            ErrorCode::BadMessage
        );
        let long = "x".repeat(65);
        assert_eq!(
            code_of(&format!(r#"{{"type":"ping","id":"{long}"}}"#)),
            ErrorCode::BadMessage
        );
    }

    #[test]
    fn bounds_the_json_tree_a_frame_may_cost() {
        let mut flood = String::from(r#"{"type":"ping","id":"big","x":["#);
        for _ in 0..200_000 {
            flood.push_str("{},");
        }
        flood.push_str("{}]}");
        let err = parse_request(&flood).unwrap_err();
        assert_eq!(err.code, ErrorCode::TooLarge);
        assert_eq!(err.id, Some(RequestId::Text("big".into())));
        // Commas and brackets inside strings are not values.
        assert_eq!(json_values(r#"{"a":"[,{,\",]"}"#), 2);
        let text = format!(r#"{{"type":"prompt","content":"{}"}}"#, ",".repeat(100_000));
        assert!(parse_request(&text).is_ok());
        // A huge id is never built into a tree.
        let huge_id = format!(r#"{{"id":[{}1]}}"#, "1,".repeat(10_000));
        assert_eq!(peek_request_id(&huge_id), None);
    }

    #[test]
    fn peeks_ids_without_parsing_the_request() {
        assert_eq!(
            peek_request_id(r#"{"type":"ping","id":"a"}"#),
            Some(RequestId::Text("a".into()))
        );
        assert_eq!(
            peek_request_id(r#"{"type":"x","id":3,"junk":[1,{}]}"#),
            Some(RequestId::Number(3))
        );
        assert_eq!(peek_request_id(r#"{"type":"ping","id":-1}"#), None);
        assert_eq!(peek_request_id("not json"), None);
    }

    #[test]
    fn errors_echo_valid_ids() {
        let err = parse_request(r#"{"type":"nope","id":7}"#).unwrap_err();
        assert_eq!(err.id, Some(RequestId::Number(7)));
        let err = parse_request(r#"{"type":"prompt","id":"a"}"#).unwrap_err();
        assert_eq!(err.id, Some(RequestId::Text("a".into())));
        assert!(err.to_frame().contains(r#""id":"a""#));
    }

    #[test]
    fn parses_requests_with_defaults() {
        let r = parse_request(r#"{"type":"attach","extra":true}"#).unwrap();
        match r.request {
            ClientRequest::Attach { session, start, .. } => {
                assert_eq!(session, "default");
                assert_eq!(start, ReplayStart::Since(0));
            }
            other => panic!("{other:?}"),
        }
        let r = parse_request(r#"{"type":"attach","session":"w","tail":5,"id":9007199254740991}"#)
            .unwrap();
        assert_eq!(r.id, Some(RequestId::Number(MAX_INTEGER_ID)));
        assert!(matches!(
            r.request,
            ClientRequest::Attach {
                start: ReplayStart::Tail(5),
                ..
            }
        ));
        let r = parse_request(
            r#"{"type":"prompt","content":[{"type":"text","text":"hi"}],"key":"k1"}"#,
        )
        .unwrap();
        match r.request {
            ClientRequest::Prompt { content, key, .. } => {
                assert_eq!(content.0.get(), r#"[{"type":"text","text":"hi"}]"#);
                assert_eq!(key.as_deref(), Some("k1"));
            }
            other => panic!("{other:?}"),
        }
        let r = parse_request(r#"{"type":"auth.response","signature":"s","device":5}"#).unwrap();
        assert!(matches!(
            r.request,
            ClientRequest::AuthResponse { device: None, .. }
        ));
    }

    #[test]
    fn permission_results_follow_section_6() {
        let input = serde_json::json!({"command":"ls"});
        let allow =
            permission_result(&serde_json::json!({"behavior":"allow"}), Some(&input), "x").unwrap();
        assert_eq!(
            allow,
            serde_json::json!({"behavior":"allow","updatedInput":{"command":"ls"}})
        );
        let deny = permission_result(
            &serde_json::json!({"behavior":"deny"}),
            Some(&input),
            "phone",
        )
        .unwrap();
        assert_eq!(
            deny,
            serde_json::json!({"behavior":"deny","message":"denied by phone"})
        );
        let deny = permission_result(
            &serde_json::json!({"behavior":"deny","message":"no","interrupt":true}),
            None,
            "x",
        )
        .unwrap();
        assert_eq!(
            deny,
            serde_json::json!({"behavior":"deny","message":"no","interrupt":true})
        );
        assert!(permission_result(&serde_json::json!({"behavior":"maybe"}), None, "x").is_err());
        assert!(
            permission_result(&serde_json::json!({"behavior":"deny","junk":1}), None, "x").is_err()
        );
        assert!(
            permission_result(
                &serde_json::json!({"behavior":"allow","updatedInput":3}),
                None,
                "x"
            )
            .is_err()
        );
        assert!(
            permission_result(
                &serde_json::json!({"behavior":"deny","interrupt":"yes"}),
                None,
                "x"
            )
            .is_err()
        );
    }

    #[test]
    fn event_frames_embed_raw_bytes() {
        let f = event_frame("\"default\"", 58, 1_765_000_000_123, br#"{"b":1,"a":2}"#);
        assert_eq!(
            f,
            r#"{"type":"event","session":"default","seq":58,"ts":1765000000123,"event":{"b":1,"a":2}}"#
        );
    }

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    /// One of every `ServerMsg` variant, with every optional field set.
    fn every_server_msg() -> Vec<ServerMsg> {
        let entry = ClientEntry {
            client_id: "c1".into(),
            fingerprint: "SHA256:x".into(),
            comment: "laptop".into(),
            device: Some("phone".into()),
            role: Role::Viewer,
        };
        let summary = SessionSummary {
            session: "default".into(),
            state: "idle".into(),
            head: Some(4),
            clients: Some(2),
            details: None,
        };
        let worktree = WorktreeInfo {
            path: "/home/u/src/api.worktrees/api".into(),
            branch: "fix-login".into(),
            repository: "/home/u/src/api".into(),
        };
        let detailed = SessionSummary {
            details: Some(Box::new(SessionDetails {
                uid: "u1".into(),
                title: "Login bug".into(),
                created: "client".into(),
                created_at: "2026-12-01T10:00:00Z".into(),
                last_activity: "2026-12-01T10:05:00Z".into(),
                cost_usd: 1.5,
                settings: SessionSettingsJson::default(),
                closable: true,
                pending: vec![PendingSummary {
                    request_id: "r1".into(),
                    tool: "Bash".into(),
                    summary: "ls".into(),
                }],
                workdir: Some(worktree.path.clone()),
                worktree: Some(worktree.clone()),
                conversation: Some("c0ffee".into()),
            })),
            ..summary.clone()
        };
        let id = Some(RequestId::Text("a1".into()));
        vec![
            ServerMsg::AuthChallenge {
                protocol: PROTOCOL_VERSION,
                server_id: "s".into(),
                nonce: "n".into(),
                namespace: NAMESPACE.into(),
                expires_in_ms: 10_000,
                sign: "ccrelay-auth-v1:s:n".into(),
                channel_binding: Some(CHANNEL_BINDING_TLS_EXPORTER.into()),
                bindings: offered_bindings(true),
            },
            ServerMsg::AuthOk {
                id: id.clone(),
                client_id: "c1".into(),
                fingerprint: "SHA256:x".into(),
                role: Role::Owner,
                sessions: vec![summary.clone()],
                limits: Some(Limits {
                    max_frame_bytes: 4_194_304,
                    max_prompt_bytes: 1_048_576,
                    max_upload_bytes: 2_097_152,
                }),
            },
            ServerMsg::Error {
                id: Some(RequestId::Number(7)),
                code: ErrorCode::NotPending,
                message: "gone".into(),
            },
            ServerMsg::SessionList {
                id: id.clone(),
                sessions: vec![summary],
            },
            ServerMsg::Attached {
                id: id.clone(),
                session: "default".into(),
                state: "busy".into(),
                head: 9,
                replay_from: 3,
                truncated: true,
                pending: vec![raw(r#"{"type":"control_request","request_id":"r1"}"#)],
                clients: ClientList(vec![ClientList::entry_json(&entry)]),
                clients_total: Some(1),
            },
            ServerMsg::Detached {
                id: id.clone(),
                session: "default".into(),
            },
            ServerMsg::Ok {
                id: id.clone(),
                prompt_id: Some("p".into()),
                queued: Some(false),
                duplicate: Some(true),
                settings: Some(SessionSettingsJson::default()),
                pending_start: Some(vec!["effort".into()]),
                path: Some(".ccrelay/uploads/x.log".into()),
            },
            ServerMsg::Pong { id: id.clone() },
            ServerMsg::PairPending {
                id: id.clone(),
                pair_id: "p".into(),
                code: "042917".into(),
                expires_in_ms: 120_000,
            },
            ServerMsg::PairRequested {
                pair_id: "p".into(),
                fingerprint: "SHA256:x".into(),
                key_type: "ssh-ed25519".into(),
                device: "Pixel".into(),
                code: "042917".into(),
                peer: "127.0.0.1".into(),
                expires_in_ms: 1,
                denied_recently: Some(true),
            },
            ServerMsg::PairInvite {
                id: id.clone(),
                invite: "tok".into(),
                expires_in_ms: 600_000,
            },
            ServerMsg::KeysList {
                id: id.clone(),
                keys: vec![DeviceKey {
                    fingerprint: "SHA256:x".into(),
                    key_type: "ssh-ed25519".into(),
                    comment: "c".into(),
                    role: Role::Owner,
                    source: "paired_keys".into(),
                    device: Some("d".into()),
                    paired: Some("2026-01-02".into()),
                    paired_by: Some("SHA256:y".into()),
                    editable: true,
                }],
            },
            ServerMsg::PairResolved {
                pair_id: "p".into(),
                allow: true,
                role: Some(Role::Viewer),
                by: "c1".into(),
            },
            ServerMsg::Event(EventFrame {
                session: "default".into(),
                seq: 5,
                ts: Some(1_765_000_000_123),
                event: raw(r#"{"type":"assistant","b":1,"a":2}"#),
            }),
            ServerMsg::Presence(PresenceFrame {
                session: "default".into(),
                joined: Some(vec![entry.clone()]),
                left: Some(vec!["c0".into()]),
                count: 1,
                clients: Some(vec![entry]),
            }),
            ServerMsg::History {
                id: id.clone(),
                session: "default".into(),
                events: vec![raw(
                    r#"{"type":"event","session":"default","seq":1,"event":{"type":"x"}}"#,
                )],
                truncated: false,
            },
            ServerMsg::SessionCreated {
                id: id.clone(),
                session: "api".into(),
                uid: "u1".into(),
                workdir: worktree.path.clone(),
                worktree: Some(worktree),
                duplicate: Some(true),
            },
            ServerMsg::SessionChanged {
                session: "api".into(),
                uid: "u1".into(),
                change: "created".into(),
                entry: detailed,
            },
            ServerMsg::ConversationsList {
                id: id.clone(),
                workdir: "/home/u/src/api".into(),
                conversations: vec![ConversationEntry {
                    conversation: "c0ffee".into(),
                    title: "Fix the login".into(),
                    updated_at: "2026-12-01T10:00:00Z".into(),
                    in_use_by: Some("api".into()),
                }],
                more: false,
            },
            ServerMsg::DirsList {
                id: id.clone(),
                path: Some("/home/u/src".into()),
                dirs: vec![DirEntry {
                    name: "api".into(),
                    git: true,
                }],
                truncated: false,
            },
            ServerMsg::FilesStatus {
                id: id.clone(),
                session: "api".into(),
                git: true,
                branch: Some("fix-login".into()),
                head: Some("0123456789abcdef0123456789abcdef01234567".into()),
                upstream: Some(Upstream {
                    name: "origin/main".into(),
                    ahead: 2,
                    behind: 0,
                }),
                files: vec![FileChange {
                    path: "src/login.rs".into(),
                    status: FileStatus::Renamed,
                    from: Some("src/auth.rs".into()),
                    insertions: 12,
                    deletions: 3,
                    binary: false,
                }],
                truncated: false,
            },
            ServerMsg::FilesDiff {
                id: id.clone(),
                session: "api".into(),
                path: Some("src/login.rs".into()),
                base: "HEAD".into(),
                diff: "diff --git a/x b/x\n".into(),
                binary: false,
                truncated: false,
            },
            ServerMsg::FilesList {
                id: id.clone(),
                session: "api".into(),
                path: "src".into(),
                entries: vec![FileEntry {
                    name: "login.rs".into(),
                    kind: FileKind::File,
                    size: 4210,
                    mtime: "2026-12-01T10:00:00Z".into(),
                }],
                truncated: false,
            },
            ServerMsg::FilesRead {
                id: id.clone(),
                session: "api".into(),
                path: "src/login.rs".into(),
                size: 4210,
                offset: 0,
                encoding: ReadEncoding::Utf8,
                data: "fn main() {}\n".into(),
                truncated: true,
                mime: "text/x-rust".into(),
            },
            ServerMsg::SessionCatalog {
                id: id.clone(),
                session: "api".into(),
                commands: vec![catalog::CatalogCommand {
                    name: "compact".into(),
                    description: "Free up context".into(),
                    argument_hint: "<instructions>".into(),
                }],
                models: vec![catalog::CatalogModel {
                    value: "sonnet".into(),
                    display_name: "Sonnet".into(),
                    description: "d".into(),
                    effort_levels: vec!["low".into()],
                }],
                permission_modes: vec!["default".into(), "plan".into()],
                stale: false,
            },
            ServerMsg::SessionUsage {
                id,
                session: "api".into(),
                context: Some(catalog::ContextUsage {
                    used_tokens: 41000,
                    max_tokens: 200000,
                }),
                cost_usd: 1.5,
                rate_limit: Some(catalog::RateLimit {
                    resets_at: Some("2026-12-06T10:00:00Z".into()),
                    status: Some("rejected".into()),
                }),
            },
        ]
    }

    /// The position of a variant in `every_server_msg` (no wildcard: a new
    /// variant does not compile until it has a sample).
    fn server_variant(m: &ServerMsg) -> usize {
        match m {
            ServerMsg::AuthChallenge { .. } => 0,
            ServerMsg::AuthOk { .. } => 1,
            ServerMsg::Error { .. } => 2,
            ServerMsg::SessionList { .. } => 3,
            ServerMsg::Attached { .. } => 4,
            ServerMsg::Detached { .. } => 5,
            ServerMsg::Ok { .. } => 6,
            ServerMsg::Pong { .. } => 7,
            ServerMsg::PairPending { .. } => 8,
            ServerMsg::PairRequested { .. } => 9,
            ServerMsg::PairInvite { .. } => 10,
            ServerMsg::KeysList { .. } => 11,
            ServerMsg::PairResolved { .. } => 12,
            ServerMsg::Event(_) => 13,
            ServerMsg::Presence(_) => 14,
            ServerMsg::History { .. } => 15,
            ServerMsg::SessionCreated { .. } => 16,
            ServerMsg::SessionChanged { .. } => 17,
            ServerMsg::ConversationsList { .. } => 18,
            ServerMsg::DirsList { .. } => 19,
            ServerMsg::FilesStatus { .. } => 20,
            ServerMsg::FilesDiff { .. } => 21,
            ServerMsg::FilesList { .. } => 22,
            ServerMsg::FilesRead { .. } => 23,
            ServerMsg::SessionCatalog { .. } => 24,
            ServerMsg::SessionUsage { .. } => 25,
        }
    }

    /// Serialize → parse → serialize gives the same text for every server
    /// message (raw fields keep their bytes, key order included), and the type
    /// list clients use to tell known from future types is exactly the enum's.
    #[test]
    fn server_messages_round_trip() {
        let all = every_server_msg();
        let positions: Vec<usize> = all.iter().map(server_variant).collect();
        assert_eq!(positions, (0..SERVER_MSG_TYPES.len()).collect::<Vec<_>>());
        for (msg, kind) in all.iter().zip(SERVER_MSG_TYPES) {
            let text = msg.to_json();
            let back = parse_server_frame(&text)
                .unwrap_or_else(|e| panic!("{text}: {e}"))
                .unwrap_or_else(|| panic!("{text}: not a known type"));
            assert_eq!(server_variant(&back), server_variant(msg), "{text}");
            assert_eq!(back.to_json(), text, "round trip of {kind}");
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(value["type"], *kind);
        }
        let doc_names = doc_coverage::quoted_after(
            doc_coverage::item(doc_coverage::SOURCE, "pub enum ServerMsg {"),
            "rename = ",
        );
        assert_eq!(doc_names, SERVER_MSG_TYPES);
    }

    /// Frames the server builds as text read back into their variants.
    #[test]
    fn hand_built_frames_read_as_server_messages() {
        let text = event_frame("\"w\"", 58, 7, br#"{"type":"relay.state","state":"idle"}"#);
        let Some(ServerMsg::Event(frame)) = parse_server_frame(&text).unwrap() else {
            panic!("{text}")
        };
        assert_eq!(
            (frame.session.as_str(), frame.seq, frame.ts),
            ("w", 58, Some(7))
        );
        assert!(matches!(
            RelayEvent::parse(frame.event.get()).unwrap(),
            Some(RelayEvent::State { ref state, detail: None }) if state == "idle"
        ));
        assert!(
            ProtocolError::new(ErrorCode::Forbidden, "no")
                .to_frame()
                .parse::<String>()
                .is_ok_and(|t| matches!(
                    parse_server_frame(&t),
                    Ok(Some(ServerMsg::Error {
                        code: ErrorCode::Forbidden,
                        ..
                    }))
                ))
        );
    }

    /// An `auth.ok` from a server made before `limits` still reads, with none.
    #[test]
    fn auth_ok_without_limits_reads() {
        let text = r#"{"type":"auth.ok","client_id":"c","fingerprint":"SHA256:x","role":"viewer","sessions":[]}"#;
        assert!(matches!(
            parse_server_frame(text),
            Ok(Some(ServerMsg::AuthOk { limits: None, .. }))
        ));
    }

    /// A newer server's frame type or error code is tolerated; a known type with
    /// a missing field or a frame that is not an object is an error.
    #[test]
    fn clients_tolerate_future_types_only() {
        assert!(matches!(
            parse_server_frame(r#"{"type":"a.frame.from.the.future","session":"x"}"#),
            Ok(None)
        ));
        assert!(matches!(
            parse_server_frame(r#"{"type":"error","code":"a_code_from_the_future","message":"m"}"#),
            Ok(Some(ServerMsg::Error {
                code: ErrorCode::Unrecognized,
                ..
            }))
        ));
        assert!(matches!(
            parse_server_frame(r#"{"type":"attached","session":"x"}"#),
            Err(ServerFrameError::Malformed { .. })
        ));
        for bad in ["[1]", "nope", r#"{"type":5}"#, r#"{"no_type":1}"#] {
            assert!(
                matches!(parse_server_frame(bad), Err(ServerFrameError::NotAFrame(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            RelayEvent::parse(r#"{"type":"assistant","message":{}}"#),
            Ok(None)
        ));
        assert!(RelayEvent::parse(r#"{"type":"relay.turn","phase":"later"}"#).is_err());
    }

    fn every_relay_event() -> Vec<RelayEvent> {
        vec![
            RelayEvent::Prompt {
                prompt_id: "p".into(),
                client_id: "c".into(),
                fingerprint: Some("SHA256:x".into()),
                device: Some("phone".into()),
                key: Some("k".into()),
                steer: true,
                scheduled_at: Some("2026-12-07T10:00:00Z".into()),
                auto_continue: true,
                queued: true,
                content: raw(r#"[{"type":"text","text":"hi"}]"#),
            },
            RelayEvent::Turn {
                prompt_id: "p".into(),
                phase: TurnPhase::Merged,
                detail: Some("crashed".into()),
                into: Some("p0".into()),
            },
            RelayEvent::State {
                state: "restarting".into(),
                detail: Some("agent crashed".into()),
            },
            RelayEvent::Resolved {
                request_id: "r".into(),
                client_id: "c".into(),
                response: serde_json::json!({"behavior":"allow","updatedInput":{}}),
                fingerprint: Some("SHA256:x".into()),
                device: Some("phone".into()),
            },
            RelayEvent::Cancelled {
                request_id: "r".into(),
                reason: "agent_restarted".into(),
            },
            RelayEvent::AgentExit {
                cause: "hung".into(),
                code: None,
                signal: Some("SIGKILL".into()),
                restarting: false,
            },
            RelayEvent::Dropped { bytes: 40 },
            RelayEvent::Closed {
                by: "c1".into(),
                device: Some("phone".into()),
            },
            RelayEvent::Changes {
                prompt_id: "p1".into(),
                files: vec![FileChange {
                    path: "a.txt".into(),
                    status: FileStatus::Added,
                    from: None,
                    insertions: 2,
                    deletions: 0,
                    binary: false,
                }],
                truncated: true,
            },
            RelayEvent::Settings {
                settings: SessionSettingsJson::default(),
                changed: vec!["permission_mode".into()],
                client_id: "agent".into(),
                fingerprint: None,
                device: None,
                model_in_effect: Some("claude-sonnet-5-5".into()),
            },
            RelayEvent::Plan {
                request_id: "r".into(),
                plan: "# Plan".into(),
            },
        ]
    }

    fn relay_variant(e: &RelayEvent) -> usize {
        match e {
            RelayEvent::Prompt { .. } => 0,
            RelayEvent::Turn { .. } => 1,
            RelayEvent::State { .. } => 2,
            RelayEvent::Resolved { .. } => 3,
            RelayEvent::Cancelled { .. } => 4,
            RelayEvent::AgentExit { .. } => 5,
            RelayEvent::Dropped { .. } => 6,
            RelayEvent::Closed { .. } => 7,
            RelayEvent::Changes { .. } => 8,
            RelayEvent::Settings { .. } => 9,
            RelayEvent::Plan { .. } => 10,
        }
    }

    /// Every relay event round-trips, `null` code and signal included, and the
    /// type list is exactly the set of relay events the server builds.
    #[test]
    fn relay_events_round_trip() {
        let all = every_relay_event();
        let positions: Vec<usize> = all.iter().map(relay_variant).collect();
        assert_eq!(positions, (0..RELAY_EVENT_TYPES.len()).collect::<Vec<_>>());
        for (event, kind) in all.iter().zip(RELAY_EVENT_TYPES) {
            let text = serde_json::to_string(event).unwrap();
            let back = RelayEvent::parse(&text).unwrap().unwrap();
            assert_eq!(relay_variant(&back), relay_variant(event));
            assert_eq!(serde_json::to_string(&back).unwrap(), text, "{kind}");
        }
        let exit = serde_json::to_string(&all[5]).unwrap();
        assert!(exit.contains(r#""code":null"#), "{exit}");
        let built: Vec<String> = doc_coverage::relay_event_types().into_iter().collect();
        let mut known: Vec<String> = RELAY_EVENT_TYPES.iter().map(|s| s.to_string()).collect();
        known.sort();
        assert_eq!(built, known, "relay events built under src/ vs RelayEvent");
    }

    /// One of every `ClientMsg` variant, with every optional field set.
    fn every_client_msg() -> Vec<ClientMsg> {
        let id = Some(RequestId::Number(3));
        let session = Some("default".to_string());
        vec![
            ClientMsg::AuthResponse {
                id: id.clone(),
                signature: "sig".into(),
                public_key: Some("ssh-ed25519 AAAA".into()),
                device: Some("laptop".into()),
                channel_binding: Some(CHANNEL_BINDING_TLS_EXPORTER.into()),
                origin: Some("ws://127.0.0.1:1".into()),
            },
            ClientMsg::PairRequest {
                id: id.clone(),
                signature: "sig".into(),
                public_key: "ssh-ed25519 AAAA".into(),
                device: "Pixel".into(),
                channel_binding: Some(CHANNEL_BINDING_TLS_EXPORTER.into()),
                origin: Some("https://relay.example".into()),
                invite: Some("tok".into()),
            },
            ClientMsg::PairRespond {
                id: id.clone(),
                pair_id: "p".into(),
                allow: false,
                role: Some(Role::Viewer),
                block: Some(true),
            },
            ClientMsg::PairInvite {
                id: id.clone(),
                role: Some(Role::Owner),
                expires_in_ms: Some(5000),
            },
            ClientMsg::SessionList { id: id.clone() },
            ClientMsg::Attach {
                id: id.clone(),
                session: session.clone(),
                since: Some(4),
                tail: None,
                uid: Some("u1".into()),
            },
            ClientMsg::Detach {
                id: id.clone(),
                session: session.clone(),
            },
            ClientMsg::Prompt {
                id: id.clone(),
                session: session.clone(),
                content: serde_json::json!([{"type":"text","text":"hi"}]),
                key: Some("k1".into()),
                steer: false,
                at: Some("2026-12-07T10:00:00Z".into()),
            },
            ClientMsg::Respond {
                id: id.clone(),
                session: session.clone(),
                request_id: "r".into(),
                response: PermissionAnswer::Allow {
                    updated_input: Some(Map::new()),
                    updated_permissions: Some(vec![serde_json::json!({"type":"addRules"})]),
                },
            },
            ClientMsg::Interrupt {
                id: id.clone(),
                session: session.clone(),
            },
            ClientMsg::SessionRestart {
                id: id.clone(),
                session: session.clone(),
            },
            ClientMsg::Ping { id: id.clone() },
            ClientMsg::History {
                id: id.clone(),
                session: session.clone(),
                before: 10,
                limit: Some(5),
            },
            ClientMsg::KeysList { id: id.clone() },
            ClientMsg::KeysRename {
                id: id.clone(),
                fingerprint: "SHA256:x".into(),
                device: "Work".into(),
            },
            ClientMsg::KeysRevoke {
                id: id.clone(),
                fingerprint: "SHA256:x".into(),
            },
            ClientMsg::ClientVisible {
                id: id.clone(),
                visible: true,
            },
            ClientMsg::PushSubscribe {
                id: id.clone(),
                subscription: PushSubscriptionJson {
                    endpoint: "https://push.example/x".into(),
                    keys: PushKeysJson {
                        p256dh: "BA".into(),
                        auth: "AA".into(),
                    },
                },
            },
            ClientMsg::PushUnsubscribe {
                id: id.clone(),
                endpoint: "https://push.example/x".into(),
            },
            ClientMsg::SessionCreate {
                id: id.clone(),
                create: Box::new(SessionCreate {
                    workdir: "~/src/api".into(),
                    name: Some("api".into()),
                    worktree: Some(WorktreeRequest {
                        branch: Some("fix-login".into()),
                        base: Some("main".into()),
                    }),
                    resume: Some("c0ffee".into()),
                    fork: true,
                    settings: Some(SettingsRequest {
                        permission_mode: Some("plan".into()),
                        model: Some("sonnet".into()),
                        effort: Some("high".into()),
                        thinking: Some(1024),
                        auto_continue: Some(true),
                    }),
                    key: Some("k2".into()),
                }),
            },
            ClientMsg::SessionClose {
                id: id.clone(),
                session: "api".into(),
                remove_worktree: true,
            },
            ClientMsg::SessionRename {
                id: id.clone(),
                session: "api".into(),
                title: "Login bug".into(),
            },
            ClientMsg::ConversationsList {
                id: id.clone(),
                workdir: "~/src/api".into(),
                limit: Some(20),
                before: Some("2026-12-01T10:00:00Z".into()),
            },
            ClientMsg::DirsList {
                id: id.clone(),
                path: Some("~/src".into()),
            },
            ClientMsg::FilesStatus {
                id: id.clone(),
                session: session.clone(),
            },
            ClientMsg::FilesDiff {
                id: id.clone(),
                session: session.clone(),
                path: Some("src/login.rs".into()),
                base: Some("turn:p1".into()),
            },
            ClientMsg::FilesList {
                id: id.clone(),
                session: session.clone(),
                path: Some("src".into()),
            },
            ClientMsg::FilesRead {
                id: id.clone(),
                session,
                path: "src/login.rs".into(),
                offset: Some(0),
                max_bytes: Some(262_144),
            },
            ClientMsg::SessionSet {
                id: id.clone(),
                session: Some("api".into()),
                settings: SettingsRequest {
                    permission_mode: Some("plan".into()),
                    ..Default::default()
                },
            },
            ClientMsg::SessionCatalog {
                id: id.clone(),
                session: Some("api".into()),
            },
            ClientMsg::SessionUsage {
                id: id.clone(),
                session: Some("api".into()),
            },
            ClientMsg::PromptCancel {
                id: id.clone(),
                session: Some("api".into()),
                prompt_id: "p-1".into(),
            },
            ClientMsg::FileUpload {
                id,
                session: Some("api".into()),
                name: "crash.log".into(),
                data: "aGk=".into(),
            },
        ]
    }

    /// A prompt steers the running turn or is scheduled, never both (§10).
    #[test]
    fn a_prompt_is_steered_or_scheduled() {
        let steer = parse_request(r#"{"type":"prompt","content":"hi","steer":true}"#)
            .expect("a steering prompt");
        assert!(matches!(
            steer.request,
            ClientRequest::Prompt {
                steer: true,
                at: None,
                ..
            }
        ));
        let both = parse_request(
            r#"{"type":"prompt","id":1,"content":"hi","steer":true,"at":"2026-12-07T10:00:00Z"}"#,
        )
        .expect_err("steer and at together are refused");
        assert_eq!(both.code, ErrorCode::BadMessage);
        let long = format!(
            r#"{{"type":"prompt","content":"hi","at":"{}"}}"#,
            "9".repeat(65)
        );
        assert!(parse_request(&long).is_err());
    }

    /// Every `ClientMsg` round-trips, is accepted by the server's own parser as
    /// the same type with the same id, and the variants are exactly the types
    /// `parse_request` accepts.
    #[test]
    fn client_messages_round_trip_and_parse_on_the_server() {
        let all = every_client_msg();
        assert_eq!(all.len(), CLIENT_MSG_TYPES.len());
        for (msg, kind) in all.iter().zip(CLIENT_MSG_TYPES) {
            let text = msg.to_json();
            let back: ClientMsg = serde_json::from_str(&text).unwrap();
            assert_eq!(&back, msg, "{text}");
            let inbound = parse_request(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(inbound.request.type_name(), *kind, "{text}");
            assert_eq!(inbound.id, Some(RequestId::Number(3)), "{text}");
        }
        let deny = ClientMsg::Respond {
            id: None,
            session: None,
            request_id: "r".into(),
            response: PermissionAnswer::Deny {
                message: Some("no".into()),
                interrupt: Some(true),
            },
        };
        assert_eq!(
            deny.to_json(),
            r#"{"type":"respond","request_id":"r","response":{"behavior":"deny","message":"no","interrupt":true}}"#
        );
        assert!(parse_request(&deny.to_json()).is_ok());
        let accepted = doc_coverage::string_arms(doc_coverage::item(
            doc_coverage::SOURCE,
            "pub fn parse_request(",
        ));
        let mut accepted: Vec<&str> = accepted.iter().map(String::as_str).collect();
        let mut declared = CLIENT_MSG_TYPES.to_vec();
        accepted.sort_unstable();
        declared.sort_unstable();
        assert_eq!(accepted, declared, "parse_request's types vs ClientMsg");
        let renamed = doc_coverage::quoted_after(
            doc_coverage::item(doc_coverage::SOURCE, "pub enum ClientMsg {"),
            "rename = ",
        );
        assert_eq!(
            renamed, CLIENT_MSG_TYPES,
            "ClientMsg's renames vs its type list"
        );
    }

    /// The text both sides sign (§3, "Origin binding").
    #[test]
    fn bound_text_composition() {
        assert_eq!(bound_text("S", None, None), "S");
        assert_eq!(
            bound_text("S", Some("wss://r.example"), None),
            "S:origin:wss://r.example"
        );
        assert_eq!(
            bound_text("S", Some("wss://r.example"), Some("AbC")),
            "S:origin:wss://r.example:tls-exporter:AbC"
        );
        assert_eq!(bound_text("S", None, Some("AbC")), "S:tls-exporter:AbC");
        assert_eq!(offered_bindings(false), ["origin"]);
        assert_eq!(offered_bindings(true), ["origin", "tls-exporter"]);
    }

    /// docs/protocol.md, this file's source and the sources that build relay
    /// events, read as text: the test below lists the wire names from the code
    /// itself, so a type added to the code without a word in the doc fails it.
    mod doc_coverage {
        pub const DOC: &str = include_str!("../../../docs/protocol.md");
        pub const SOURCE: &str = include_str!("lib.rs");

        /// The text of the item that starts at `start`, up to the first line
        /// that is a lone `}` at the item's indentation (none of these items is
        /// nested, so that is column 0).
        pub fn item<'a>(source: &'a str, start: &str) -> &'a str {
            let from = source
                .find(start)
                .unwrap_or_else(|| panic!("`{start}` not found in src/protocol.rs"));
            let rest = &source[from..];
            let end = rest
                .find("\n}\n")
                .unwrap_or_else(|| panic!("no end for `{start}`"));
            &rest[..end]
        }

        /// Every `"<name>"` that opens a line and is followed by `=>` (the arms
        /// of a `match` on a string).
        pub fn string_arms(text: &str) -> Vec<String> {
            text.lines()
                .filter_map(|line| {
                    let line = line.trim_start().strip_prefix('"')?;
                    let (name, rest) = line.split_once('"')?;
                    rest.trim_start()
                        .starts_with("=>")
                        .then(|| name.to_string())
                })
                .collect()
        }

        /// Every value of `key = "<value>"` in `text` (e.g. `rename = "..."`).
        pub fn quoted_after(text: &str, key: &str) -> Vec<String> {
            text.match_indices(key)
                .filter_map(|(at, _)| {
                    let rest = text[at + key.len()..].strip_prefix('"')?;
                    Some(rest.split_once('"')?.0.to_string())
                })
                .collect()
        }

        /// Relay event types built anywhere in the workspace (src/, crates/): every `"type": "relay.X"`
        /// (with or without the space) in a `.rs` file.
        pub fn relay_event_types() -> std::collections::BTreeSet<String> {
            let mut found = std::collections::BTreeSet::new();
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let mut dirs = vec![root.join("src"), root.join("crates")];
            while let Some(dir) = dirs.pop() {
                for entry in std::fs::read_dir(&dir).unwrap() {
                    let path = entry.unwrap().path();
                    if path.is_dir() {
                        dirs.push(path);
                    } else if path.extension().is_some_and(|e| e == "rs") {
                        let text = std::fs::read_to_string(&path).unwrap();
                        for (at, _) in text.match_indices("\"type\":") {
                            let rest = text[at + "\"type\":".len()..].trim_start();
                            let Some(rest) = rest.strip_prefix("\"relay.") else {
                                continue;
                            };
                            let name: String = rest
                                .chars()
                                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                                .collect();
                            if rest[name.len()..].starts_with('"') {
                                found.insert(format!("relay.{name}"));
                            }
                        }
                    }
                }
            }
            found
        }
    }

    /// Every wire name the code knows is described in docs/protocol.md: each
    /// request `parse_request` accepts, each `ServerMsg` type and the frames built
    /// by hand (`event`, `presence`, `history`) and each relay event appear in a
    /// JSON example (`"type":"<name>"`); each error code has a row in the table of
    /// §2.2 and each close code a row in the table of §2.3.
    #[test]
    fn every_wire_name_is_in_the_protocol_doc() {
        use doc_coverage::*;
        let mut missing = Vec::new();

        let requests = string_arms(item(SOURCE, "pub fn parse_request("));
        assert!(
            requests.iter().any(|r| r == "auth.response") && requests.iter().any(|r| r == "ping"),
            "the scan of parse_request found {requests:?}"
        );
        let mut server = quoted_after(item(SOURCE, "pub enum ServerMsg {"), "rename = ");
        assert!(
            server.iter().any(|s| s == "auth.challenge"),
            "the scan of ServerMsg found {server:?}"
        );
        // Built as text, not through ServerMsg: `event_frame`, presence.rs, history.rs.
        server.extend(["event", "presence", "history"].map(String::from));
        let relay = relay_event_types();
        assert!(
            relay.contains("relay.turn") && relay.contains("relay.resolved"),
            "the scan of src/ found {relay:?}"
        );
        for name in requests.iter().chain(&server).chain(&relay) {
            if !DOC.contains(&format!("\"type\":\"{name}\"")) {
                missing.push(format!("type {name}"));
            }
        }

        // The error table of §2.2 and the close code table of §2.3.
        let section = |from: &str, to: &str| {
            let start = DOC
                .find(from)
                .unwrap_or_else(|| panic!("no `{from}` in the doc"));
            let len = DOC[start..]
                .find(to)
                .unwrap_or_else(|| panic!("no `{to}` after `{from}`"));
            &DOC[start..start + len]
        };
        let errors = section("### 2.2 error", "### 2.3 ");
        let closes = section("### 2.3 Close codes", "## 3. ");
        for code in ErrorCode::ALL.iter().map(|c| c.as_str()) {
            if !errors.contains(&format!("| `{code}` |")) {
                missing.push(format!("error code {code}"));
            }
        }
        let close_codes: Vec<&str> = item(SOURCE, "pub mod close_code {")
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub const ")?.split_once("= "))
            .map(|(_, v)| v.trim_end_matches(';'))
            .collect();
        assert!(
            close_codes.contains(&"4008"),
            "the scan of close_code found {close_codes:?}"
        );
        for code in &close_codes {
            if !closes.contains(&format!("| {code} |")) {
                missing.push(format!("close code {code}"));
            }
        }
        assert!(missing.is_empty(), "not in docs/protocol.md: {missing:?}");
    }
}
