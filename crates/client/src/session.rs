//! The attached session as the client sees it: which events it has (since
//! tracking across reconnects), who is attached, pending permission prompts, the
//! turn of a `--prompt` job and the prompts waiting for their `ok`.
//!
//! Owns: every decision about what to send and when to exit. Pure: it takes
//! frames and user actions and returns [`Effect`]s; `mod.rs` performs them.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use serde_json::Value;

use ccrelay_protocol::{
    ClientMsg, ErrorCode, PermissionAnswer, RelayEvent, RequestId, Role, ServerMsg,
    SettingsRequest, TurnPhase, parse_server_frame,
};

use super::connect::AuthOk;
use super::controls;
use super::input::{Ask, AskKind, Decision};
use super::render::{Renderer, tool_summary};

/// Exit codes of `ccrelay attach` (see `--help`).
pub mod exit {
    /// The turn succeeded, or an interactive session ended normally.
    pub const OK: u8 = 0;
    /// The `--prompt` turn failed or was aborted.
    pub const TURN_FAILED: u8 = 1;
    /// Usage, connection or authentication error.
    pub const ERROR: u8 = 2;
    /// A permission prompt arrived and no `--allow` / `--deny` was given.
    pub const NEEDS_PERMISSION: u8 = 3;
    /// Quit with Ctrl-C while the `--prompt` turn was still running.
    pub const INTERRUPTED: u8 = 130;
}

/// Something for `mod.rs` to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send this request on the current connection.
    Send(ClientMsg),
    /// Rendered session text (stdout).
    Out(String),
    /// A human message (stderr when stdout is a JSON stream or piped).
    Msg(String),
    /// One frame, verbatim, as a JSON line (`--json`).
    Json(String),
    /// Long text (a diff) for `$PAGER` on a terminal; printed as it is otherwise.
    Page(String),
    /// Quit with this code.
    Exit(u8),
}

/// Which events the client has, across reconnects.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The highest seq shown (0: none).
    pub last: u64,
}

/// What an `attached` reply means for the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachNote {
    Complete,
    /// Events after our `since` are gone: some history is missing.
    Gap,
    /// The server has fewer events than we saw (its data was lost): start over.
    Rebuilt,
}

impl Cursor {
    /// Take an `attached` reply: (since we sent, head, replay_from, truncated).
    pub fn on_attached(
        &mut self,
        since: Option<u64>,
        head: u64,
        replay_from: u64,
        truncated: bool,
    ) -> AttachNote {
        let first_new = replay_from.saturating_sub(1);
        if since.is_some_and(|s| s > head) {
            // The server's log restarted below what we saw: accept its seqs again.
            self.last = first_new;
            return AttachNote::Rebuilt;
        }
        // Events before replay_from will not come (tail attach, or truncated).
        self.last = self.last.max(first_new);
        if truncated {
            AttachNote::Gap
        } else {
            AttachNote::Complete
        }
    }

    /// True when `seq` is new; duplicates (at or below the last seen) are dropped.
    pub fn accept(&mut self, seq: u64) -> bool {
        if seq <= self.last {
            return false;
        }
        self.last = seq;
        true
    }
}

/// How a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEnd {
    Succeeded,
    Failed,
    Aborted,
}

/// What `--allow` / `--deny` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Allow,
    Deny,
}

/// The one prompt of `--prompt` mode.
#[derive(Debug, Clone)]
pub struct PromptJob {
    pub text: String,
    /// Generated once per invocation: a resend after a reconnect is recognized
    /// by the server and never runs twice.
    pub key: String,
    pub policy: Option<Policy>,
    prompt_id: Option<String>,
    /// `ok` (or our `relay.prompt`) seen: never send it again.
    accepted: bool,
}

impl PromptJob {
    pub fn new(text: String, policy: Option<Policy>) -> PromptJob {
        PromptJob {
            text,
            key: format!("attach-{}", uuid::Uuid::new_v4().simple()),
            policy,
            prompt_id: None,
            accepted: false,
        }
    }
}

/// A device pairing request shown to this owner; strings already terminal-safe.
#[derive(Debug, Clone)]
struct PairRequest {
    pair_id: String,
    device: String,
    code: String,
    fingerprint: String,
}

/// A peer-controlled string made safe for one terminal line (see
/// [`ccrelay_server::escape`]: controls, bidi and invisible characters shown escaped),
/// cut at `max` characters.
fn terminal_safe(text: &str, max: usize) -> String {
    let cut: String = text.chars().take(max).collect();
    ccrelay_server::escape::line(&cut).into_owned()
}

/// An interactive prompt waiting for its `ok` (resent with its key after a reconnect).
#[derive(Debug, Clone)]
struct Outgoing {
    id: String,
    key: String,
    text: String,
    /// A scheduled prompt's time (RFC 3339), sent again with it after a reconnect.
    at: Option<String>,
}

/// Request id of the `--prompt` job's prompt.
const JOB_ID: &str = "prompt";
const ATTACH_ID: &str = "attach";
/// The attach of a `:switch` (a refusal goes back to the session before it).
const SWITCH_ID: &str = "switch";
const DETACH_ID: &str = "detach";
const SESSIONS_ID: &str = "sessions";
/// `session.catalog` and `session.usage` asked by this client.
const CATALOG_ID: &str = "catalog";
const USAGE_ID: &str = "usage";
const STATUS_ID: &str = "changes";
const DIFF_ID: &str = "diff";

/// A session switched away from: what is needed to come back to it seeing
/// every event once.
#[derive(Debug, Clone)]
struct Parked {
    uid: Option<String>,
    /// The last seq shown: the attach on return replays from the one after.
    last: u64,
}

/// A line typed in the interactive editor that is a command, not a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `:sessions`: list the relay's sessions.
    Sessions,
    /// `:switch NAME`: attach to NAME instead.
    Switch(String),
    /// `:mode NAME`: `session.set` of the permission mode.
    Mode(String),
    /// `:model NAME`: `session.set` of the model.
    Model(String),
    /// `:changes`: `files.status`.
    Changes,
    /// `:diff [PATH]` (`None`: every changed file) and `:diff turn`.
    Diff(DiffOf),
    /// `:at WHEN TEXT`: TEXT as a prompt scheduled for WHEN (docs/protocol.md §10),
    /// WHEN already turned into an RFC 3339 time.
    At { at: String, text: String },
    /// A command used wrongly: say how it is used.
    Usage(&'static str),
}

impl Command {
    /// The command a typed line is, if it is one: `:sessions` or `:switch NAME`
    /// alone on the line. Every other line is a prompt.
    pub fn parse(line: &str) -> Option<Command> {
        let mut words = line.split_whitespace();
        let first = words.next()?;
        let rest: Vec<&str> = words.collect();
        match (first, rest.as_slice()) {
            (":sessions", []) => Some(Command::Sessions),
            (":switch", [name]) => Some(Command::Switch(name.to_string())),
            (":switch", _) => Some(Command::Usage(
                ":switch NAME attaches to session NAME (:sessions lists them)",
            )),
            (":mode", [name]) => Some(Command::Mode(name.to_string())),
            (":mode", _) => Some(Command::Usage(
                ":mode NAME sets the permission mode (default, acceptEdits, plan, ...)",
            )),
            (":model", [name]) => Some(Command::Model(name.to_string())),
            (":model", _) => Some(Command::Usage(":model NAME sets the model (e.g. sonnet)")),
            (":changes", []) => Some(Command::Changes),
            (":diff", []) => Some(Command::Diff(DiffOf::All)),
            (":diff", ["turn"]) => Some(Command::Diff(DiffOf::LastTurn)),
            (":diff", [path]) => Some(Command::Diff(DiffOf::Path(path.to_string()))),
            (":diff", _) => Some(Command::Usage(
                ":diff shows every change, :diff PATH one file, :diff turn the last turn's",
            )),
            (":changes", _) => Some(Command::Usage(":changes lists the changed files")),
            (":at", [when, _, ..]) => match scheduled_time(when, SystemTime::now()) {
                Some(at) => {
                    // The prompt is the rest of the line as typed, after WHEN.
                    let rest = line.trim_start();
                    let rest = rest.strip_prefix(":at").unwrap_or(rest).trim_start();
                    let text = rest.strip_prefix(when).unwrap_or(rest).trim().to_string();
                    Some(Command::At { at, text })
                }
                None => Some(Command::Usage(AT_USAGE)),
            },
            (":at", _) => Some(Command::Usage(AT_USAGE)),
            _ => None,
        }
    }
}

const AT_USAGE: &str = ":at WHEN TEXT schedules TEXT: WHEN is +30m, +2h, +1h30m or an RFC 3339 time such as 2026-12-08T07:30:00Z";

/// `:at`'s WHEN as an RFC 3339 time: `+` and a duration of hours, minutes and
/// seconds (`+90s`, `+30m`, `+1h30m`) from `now`, or an RFC 3339 time as is.
fn scheduled_time(when: &str, now: SystemTime) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    if let Some(span) = when.strip_prefix('+') {
        let mut total: u64 = 0;
        let mut number = String::new();
        for c in span.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let unit = match c {
                'h' => 3600,
                'm' => 60,
                's' => 1,
                _ => return None,
            };
            let n: u64 = number.parse().ok()?;
            number.clear();
            total = total.checked_add(n.checked_mul(unit)?)?;
        }
        if !number.is_empty() || total == 0 {
            return None;
        }
        let at = now.checked_add(std::time::Duration::from_secs(total))?;
        let at = time::OffsetDateTime::from(at).replace_nanosecond(0).ok()?;
        return at.format(&Rfc3339).ok();
    }
    time::OffsetDateTime::parse(when, &Rfc3339).ok()?;
    Some(when.to_string())
}

/// What `:diff` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffOf {
    All,
    Path(String),
    /// The changes of the last turn that changed files (`base` `turn:<prompt_id>`).
    LastTurn,
}

pub struct Session {
    name: String,
    /// Slash commands of the session's catalog: (name, argument hint), terminal-safe.
    commands: Vec<(String, String)>,
    /// Context and cost from the last `session.usage`, for the status line.
    usage: Option<String>,
    /// When a reached usage limit lifts, from the same reply.
    limited_until: Option<time::OffsetDateTime>,
    /// The last turn a `relay.changes` was seen for.
    last_changed_turn: Option<String>,
    /// The session's `uid` once known: sent with every attach, so that a name
    /// now belonging to another session is refused, never replayed
    /// (docs/protocol.md §4).
    uid: Option<String>,
    /// Sessions switched away from, by name.
    parked: HashMap<String, Parked>,
    /// The session a `:switch` in flight left (attached again if it fails).
    previous: Option<String>,
    json: bool,
    /// `--tail N` for the first attach.
    tail: Option<u64>,
    job: Option<PromptJob>,
    cursor: Cursor,
    /// The first attach happened (later ones use `since`).
    attached_once: bool,
    /// The current connection is attached (requests may be sent).
    attached: bool,
    /// `since` of the attach in flight.
    attach_since: Option<u64>,
    state: String,
    /// Prompt id of the turn the agent is running.
    running: Option<String>,
    /// `is_error` of the last `result` seen in the running turn.
    last_result_error: Option<bool>,
    /// Ends of turns seen, by prompt id (the job's may come before we know its id).
    ended: HashMap<String, TurnEnd>,
    /// Pending control requests in arrival order: (request_id, the event).
    pending: Vec<(String, Value)>,
    /// Requests this client answered and whose `relay.resolved` has not come yet.
    answered: HashSet<String>,
    /// Device pairing requests owners are asked about (`pair.requested`), oldest first.
    pairs: Vec<PairRequest>,
    outgoing: Vec<Outgoing>,
    next_id: u64,
    interrupt_sent: bool,
    pub renderer: Renderer,
}

impl Session {
    pub fn new(
        name: String,
        json: bool,
        color: bool,
        tail: Option<u64>,
        job: Option<PromptJob>,
    ) -> Session {
        Session {
            name,
            commands: Vec::new(),
            usage: None,
            limited_until: None,
            last_changed_turn: None,
            uid: None,
            parked: HashMap::new(),
            previous: None,
            json,
            tail,
            job,
            cursor: Cursor::default(),
            attached_once: false,
            attached: false,
            attach_since: None,
            state: String::new(),
            running: None,
            last_result_error: None,
            ended: HashMap::new(),
            pending: Vec::new(),
            answered: HashSet::new(),
            pairs: Vec::new(),
            outgoing: Vec::new(),
            next_id: 0,
            interrupt_sent: false,
            renderer: Renderer::new(color),
        }
    }

    /// The session's `uid`, when known before the first attach (`--new`).
    pub fn with_uid(mut self, uid: Option<String>) -> Session {
        self.uid = uid;
        self
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    fn msg(&mut self, text: &str) -> Effect {
        Effect::Msg(self.renderer.notice(text))
    }

    /// A new connection was authenticated: attach.
    pub fn on_connected(&mut self, auth: &AuthOk, reconnect: bool) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.attached = false;
        // A new connection hears of every pending pair request again.
        self.pairs.clear();
        self.renderer.roster.own_id = auth.client_id.clone();
        self.renderer.roster.reset_presence();
        if self.json {
            fx.push(Effect::Json(one_line_json(&auth.frame)));
        }
        if reconnect {
            fx.push(self.msg("reconnected"));
        }
        let (since, tail) = if !self.attached_once {
            // --prompt shows only its own turn; --tail N a short history.
            let tail = if self.job.is_some() {
                Some(0)
            } else {
                self.tail
            };
            (None, tail)
        } else {
            (Some(self.cursor.last), None)
        };
        self.attach_since = since;
        fx.push(Effect::Send(ClientMsg::Attach {
            id: Some(RequestId::Text(ATTACH_ID.into())),
            session: Some(self.name.clone()),
            since,
            tail,
            uid: self.uid.clone(),
        }));
        fx
    }

    /// The connection dropped; `mod.rs` reconnects.
    pub fn on_disconnected(&mut self, reason: &str) -> Vec<Effect> {
        self.attached = false;
        let text = format!("connection lost ({reason}); reconnecting…");
        let mut fx = Vec::new();
        self.break_line(&mut fx);
        fx.push(self.msg(&text));
        fx
    }

    /// One text frame from the server. Types this build does not know (a newer
    /// server's) are ignored, as docs/protocol.md §2 lets clients do.
    pub fn on_frame(&mut self, text: &str) -> Vec<Effect> {
        let frame = match parse_server_frame(text) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                return if self.json {
                    vec![Effect::Json(one_line_json(text))]
                } else {
                    Vec::new()
                };
            }
            Err(e) => {
                let text = format!(
                    "protocol error: the server sent a frame this client cannot read ({e})"
                );
                return vec![self.msg(&text)];
            }
        };
        let mut fx = Vec::new();
        if let ServerMsg::Event(event) = frame {
            if event.session != self.name || !self.cursor.accept(event.seq) {
                return fx;
            }
            if self.json {
                fx.push(Effect::Json(one_line_json(text)));
            }
            self.on_event(event.event.get(), &mut fx);
            return fx;
        }
        if self.json {
            fx.push(Effect::Json(one_line_json(text)));
        }
        match frame {
            ServerMsg::Attached {
                id: Some(RequestId::Text(id)),
                session,
                state,
                head,
                replay_from,
                truncated,
                pending,
                clients,
                clients_total,
                ..
            } if (id == ATTACH_ID || id == SWITCH_ID) && session == self.name => {
                if self.uid.is_none() {
                    self.uid = attached_uid(text);
                }
                if id == SWITCH_ID {
                    self.previous = None;
                    // Announced here, not as a first attach.
                    self.attached_once = true;
                    let text = format!(
                        "switched to session {} (state {}, {head} events)",
                        terminal_safe(&self.name, 64),
                        terminal_safe(&state, 32)
                    );
                    fx.push(Effect::Msg(self.renderer.info(&text)));
                }
                let pending = pending
                    .iter()
                    .filter_map(|p| serde_json::from_str::<Value>(p.get()).ok())
                    .collect();
                self.on_attached(
                    Attached {
                        state: state.into_owned(),
                        head,
                        replay_from,
                        truncated,
                        pending,
                        clients: clients.entries(),
                        clients_total,
                    },
                    &mut fx,
                );
            }
            // Not an answer of ours: the session was closed (docs/protocol.md §4).
            ServerMsg::Detached { id: None, session } if session == self.name => {
                self.break_line(&mut fx);
                let text = format!("session {} was closed", terminal_safe(&session, 64));
                fx.push(Effect::Msg(self.renderer.info(&text)));
                fx.push(Effect::Exit(exit::OK));
            }
            ServerMsg::SessionList {
                id: Some(RequestId::Text(id)),
                sessions,
            } if id == SESSIONS_ID => {
                self.break_line(&mut fx);
                let table = super::table::sessions(&sessions, time::OffsetDateTime::now_utc());
                let text = format!(
                    "{table}(you are on {}; :switch NAME to change)\n",
                    terminal_safe(&self.name, 64)
                );
                fx.push(Effect::Msg(text));
            }
            ServerMsg::SessionCatalog {
                session, commands, ..
            } if session == self.name => {
                self.commands = commands
                    .iter()
                    .map(|c| {
                        (
                            controls::one_line(&c.name, 64),
                            controls::one_line(&c.argument_hint, 80),
                        )
                    })
                    .collect();
            }
            ServerMsg::SessionUsage {
                session,
                context,
                cost_usd,
                rate_limit,
                ..
            } if session == self.name => {
                self.usage = Some(controls::usage(context.as_ref(), cost_usd));
                self.limited_until = controls::limited_until(rate_limit.as_ref());
            }
            ServerMsg::FilesStatus {
                id: Some(RequestId::Text(id)),
                git,
                branch,
                files,
                truncated,
                ..
            } if id == STATUS_ID => {
                self.break_line(&mut fx);
                let color = self.renderer.color();
                let text = controls::status(git, branch.as_deref(), &files, truncated, color);
                fx.push(Effect::Msg(text));
            }
            ServerMsg::FilesDiff {
                id: Some(RequestId::Text(id)),
                diff,
                binary,
                truncated,
                ..
            } if id == DIFF_ID => {
                self.break_line(&mut fx);
                let color = self.renderer.color();
                fx.push(Effect::Page(controls::diff(
                    &diff, binary, truncated, color,
                )));
            }
            ServerMsg::Ok {
                id: Some(RequestId::Text(id)),
                pending_start: Some(later),
                ..
            } if id.starts_with("set-") && !later.is_empty() => {
                let text = format!(
                    "{} will apply from the agent's next start",
                    controls::one_line(&later.join(", "), 100)
                );
                fx.push(self.msg(&text));
            }
            ServerMsg::Presence(presence) if presence.session == self.name => {
                let text = self.renderer.presence(&presence);
                self.out(&mut fx, text);
            }
            ServerMsg::Ok {
                id,
                prompt_id,
                queued,
                ..
            } => self.on_ok(&text_id(id), prompt_id, queued == Some(true), &mut fx),
            ServerMsg::PairRequested {
                pair_id,
                fingerprint,
                key_type,
                device,
                code,
                peer,
                ..
            } => {
                let request = PairRequest {
                    pair_id,
                    device: terminal_safe(&device, 64),
                    code: terminal_safe(&code, 6),
                    fingerprint: terminal_safe(&fingerprint, 64),
                };
                let from = (terminal_safe(&key_type, 40), terminal_safe(&peer, 45));
                self.on_pair_requested(request, from, &mut fx);
            }
            ServerMsg::PairResolved {
                pair_id,
                allow,
                role,
                by,
            } => self.on_pair_resolved(&pair_id, allow, role, &by, &mut fx),
            ServerMsg::Error { id, code, message } => self.on_error(
                &text_id(id),
                code,
                error_code_text(code, text),
                &message,
                &mut fx,
            ),
            // Replies we do not need (pong, detached, session.list, ...).
            _ => {}
        }
        fx
    }

    /// End an open streamed line before a message (never in `--json` mode).
    fn break_line(&mut self, fx: &mut Vec<Effect>) {
        let text = self.renderer.break_line();
        self.out(fx, text);
    }

    fn out(&self, fx: &mut Vec<Effect>, text: String) {
        if !self.json && !text.is_empty() {
            fx.push(Effect::Out(text));
        }
    }

    fn on_attached(&mut self, frame: Attached, fx: &mut Vec<Effect>) {
        let note = self.cursor.on_attached(
            self.attach_since,
            frame.head,
            frame.replay_from,
            frame.truncated,
        );
        match note {
            AttachNote::Complete => {}
            AttachNote::Gap => fx.push(self.msg("some history is missing: the server no longer has those events")),
            AttachNote::Rebuilt => fx.push(self.msg(
                "the server has fewer events than this client saw (its data was reset); showing what it has",
            )),
        }
        self.state = frame.state;
        self.renderer
            .roster
            .update(&frame.clients, frame.clients_total);
        self.pending = frame
            .pending
            .into_iter()
            .filter_map(|p| Some((p.get("request_id")?.as_str()?.to_string(), p)))
            .collect();
        self.answered.clear();
        self.attached = true;
        let first = !self.attached_once;
        self.attached_once = true;
        if first && !self.json && self.job.is_none() {
            let head = frame.head;
            let text = format!(
                "attached to session {} (state {}, {head} events)",
                self.name, self.state
            );
            fx.push(Effect::Msg(self.renderer.info(&text)));
        }
        // Prompts that may not have reached the server: send (again) with their key.
        if let Some(job) = &self.job
            && !job.accepted
        {
            fx.push(Effect::Send(self.prompt(JOB_ID, &job.text, &job.key, None)));
        }
        for o in &self.outgoing {
            fx.push(Effect::Send(self.prompt(
                &o.id,
                &o.text,
                &o.key,
                o.at.as_deref(),
            )));
        }
        if self.job.is_none() && !self.json {
            fx.push(Effect::Send(ClientMsg::SessionCatalog {
                id: Some(RequestId::Text(CATALOG_ID.into())),
                session: Some(self.name.clone()),
            }));
            fx.push(self.ask_usage());
        }
        // Permission prompts of our turn that are still open (after a reconnect).
        let pending: Vec<Value> = self.pending.iter().map(|(_, v)| v.clone()).collect();
        for p in pending {
            self.apply_policy(&p, fx);
        }
    }

    /// A `prompt` request of this client, resent with the same key after a reconnect.
    fn prompt(&self, id: &str, text: &str, key: &str, at: Option<&str>) -> ClientMsg {
        ClientMsg::Prompt {
            id: Some(RequestId::Text(id.into())),
            session: Some(self.name.clone()),
            content: Value::from(text),
            key: Some(key.into()),
            steer: false,
            at: at.map(String::from),
        }
    }

    fn on_ok(&mut self, id: &str, prompt_id: Option<String>, queued: bool, fx: &mut Vec<Effect>) {
        if id == JOB_ID {
            if let Some(job) = &mut self.job {
                job.accepted = true;
                if job.prompt_id.is_none() {
                    job.prompt_id = prompt_id;
                }
            }
            if queued {
                fx.push(self.msg("the prompt is queued behind a running turn"));
            }
            self.check_job_end(fx);
        } else if id.starts_with("p-") {
            self.outgoing.retain(|o| o.id != id);
        }
    }

    fn on_error(
        &mut self,
        id: &str,
        code: ErrorCode,
        code_text: String,
        message: &str,
        fx: &mut Vec<Effect>,
    ) {
        if id == DETACH_ID {
            // Leaving a session that had gone already: nothing to tell.
            return;
        }
        let text = self.renderer.server_error(&code_text, message);
        // In --json mode the frame itself was printed; people still read stderr.
        fx.push(Effect::Msg(text));
        if id == ATTACH_ID && code == ErrorCode::NoSuchSession && self.uid.is_some() {
            let text = format!(
                "session {} is gone (closed; a session now using its name is another one)",
                terminal_safe(&self.name, 64)
            );
            fx.push(self.msg(&text));
        }
        if id == SWITCH_ID {
            match self.previous.take() {
                Some(back) => {
                    let text = format!("back to session {}", terminal_safe(&back, 64));
                    fx.push(self.msg(&text));
                    self.enter(back, SWITCH_ID, fx);
                }
                None => fx.push(Effect::Exit(exit::ERROR)),
            }
        } else if id == ATTACH_ID || (id == JOB_ID && self.job.is_some()) {
            // No session to show, or our prompt was refused: nothing more will come.
            fx.push(Effect::Exit(exit::ERROR));
        } else if id.starts_with("p-") {
            self.outgoing.retain(|o| o.id != id);
        } else if id.starts_with("r-") && code == ErrorCode::NotPending {
            fx.push(self.msg("that request was already answered"));
        }
    }

    /// One event of the session: a relay event (typed) or the agent's own
    /// stream-json, which the relay does not type and this client reads as JSON.
    fn on_event(&mut self, raw: &str, fx: &mut Vec<Effect>) {
        match RelayEvent::parse(raw) {
            Ok(Some(relay)) => return self.on_relay_event(relay, fx),
            Ok(None) => {}
            Err(e) => {
                let text = format!("protocol error: an unreadable relay event ({e})");
                fx.push(self.msg(&text));
                return;
            }
        }
        let ev: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
        let kind = ev.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "result" => {
                self.last_result_error = ev.get("is_error").and_then(Value::as_bool);
            }
            "control_request" => {
                if let Some(rid) = ev.get("request_id").and_then(Value::as_str)
                    && !self.pending.iter().any(|(id, _)| id == rid)
                {
                    self.pending.push((rid.to_string(), ev.clone()));
                }
            }
            "control_cancel_request" => {
                let rid = ev
                    .get("request_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let req = self.take_pending(rid);
                self.answered.remove(rid);
                let text = self
                    .renderer
                    .cancelled("withdrawn by the agent", req.as_ref());
                self.out(fx, text);
                return;
            }
            _ => {}
        }
        if !self.json {
            let text = self.renderer.event(&ev);
            self.out(fx, text);
        }
        if kind == "control_request" {
            self.apply_policy(&ev, fx);
        }
    }

    fn on_relay_event(&mut self, ev: RelayEvent, fx: &mut Vec<Effect>) {
        match &ev {
            RelayEvent::Prompt { prompt_id, key, .. } => {
                if let Some(job) = &mut self.job
                    && key.as_deref() == Some(job.key.as_str())
                {
                    job.accepted = true;
                    job.prompt_id = Some(prompt_id.clone());
                }
                if let Some(k) = key {
                    self.outgoing.retain(|o| o.key != *k);
                }
            }
            RelayEvent::Turn {
                prompt_id, phase, ..
            } => match phase {
                TurnPhase::Started => {
                    self.running = Some(prompt_id.clone());
                    self.last_result_error = None;
                    self.interrupt_sent = false;
                }
                TurnPhase::Ended | TurnPhase::Aborted => {
                    let end = if *phase == TurnPhase::Aborted {
                        TurnEnd::Aborted
                    } else if self.last_result_error == Some(true) {
                        TurnEnd::Failed
                    } else {
                        TurnEnd::Succeeded
                    };
                    if self.running.as_ref() == Some(prompt_id) {
                        self.running = None;
                    }
                    self.interrupt_sent = false;
                    self.ended.insert(prompt_id.clone(), end);
                    if self.job.is_none() && !self.json && self.attached {
                        fx.push(self.ask_usage());
                    }
                }
                // A steering prompt taken into the running turn: it ends with that turn.
                TurnPhase::Merged => {}
            },
            RelayEvent::State { state, .. } => {
                self.state = state.clone();
            }
            RelayEvent::Resolved {
                request_id,
                client_id,
                response,
                ..
            } => {
                let req = self.take_pending(request_id);
                self.answered.remove(request_id);
                let text = self.renderer.resolved(client_id, response, req.as_ref());
                self.out(fx, text);
                return;
            }
            RelayEvent::Cancelled { request_id, reason } => {
                let req = self.take_pending(request_id);
                self.answered.remove(request_id);
                let text = self.renderer.cancelled(reason, req.as_ref());
                self.out(fx, text);
                return;
            }
            RelayEvent::Changes { prompt_id, .. } => {
                self.last_changed_turn = Some(prompt_id.clone());
            }
            RelayEvent::AgentExit { .. }
            | RelayEvent::Dropped { .. }
            | RelayEvent::Closed { .. }
            | RelayEvent::Settings { .. }
            | RelayEvent::Plan { .. } => {}
        }
        if !self.json {
            let text = self.renderer.relay(&ev);
            self.out(fx, text);
        }
        if matches!(ev, RelayEvent::Turn { .. } | RelayEvent::Prompt { .. }) {
            self.check_job_end(fx);
        }
    }

    fn take_pending(&mut self, request_id: &str) -> Option<Value> {
        let i = self.pending.iter().position(|(id, _)| id == request_id)?;
        Some(self.pending.remove(i).1)
    }

    /// `--prompt` mode: answer (or give up on) a control request of our own turn.
    fn apply_policy(&mut self, ev: &Value, fx: &mut Vec<Effect>) {
        let Some(job) = &self.job else { return };
        let ours = job.prompt_id.is_some() && self.running == job.prompt_id;
        if !ours {
            return;
        }
        let Some(rid) = ev.get("request_id").and_then(Value::as_str) else {
            return;
        };
        if self.answered.contains(rid) {
            return;
        }
        let req = ev.get("request").unwrap_or(&Value::Null);
        let is_tool = req.get("subtype").and_then(Value::as_str) == Some("can_use_tool");
        let tool = req
            .get("tool_name")
            .and_then(Value::as_str)
            .unwrap_or("a tool");
        let summary = tool_summary(tool, req.get("input").unwrap_or(&Value::Null));
        let response = match (job.policy, is_tool) {
            (Some(Policy::Allow), true) => allow(None),
            (Some(Policy::Deny), true) => deny(None),
            (_, false) => {
                let sub = req.get("subtype").and_then(Value::as_str).unwrap_or("?");
                let text = format!(
                    "the agent asks for `{sub}`, which --prompt mode cannot answer; answer it from an interactive client"
                );
                fx.push(Effect::Msg(self.renderer.error(&text)));
                fx.push(Effect::Exit(exit::NEEDS_PERMISSION));
                return;
            }
            (None, true) => {
                let text = format!(
                    "permission needed: the agent wants to use {tool} ({summary}); rerun with --allow or --deny, or answer from an interactive client"
                );
                fx.push(Effect::Msg(self.renderer.error(&text)));
                fx.push(Effect::Exit(exit::NEEDS_PERMISSION));
                return;
            }
        };
        self.answered.insert(rid.to_string());
        let id = self.id("r");
        fx.push(Effect::Send(self.respond(id, rid.to_string(), response)));
    }

    /// `--prompt` mode: exit once our turn has ended.
    fn check_job_end(&mut self, fx: &mut Vec<Effect>) {
        let Some(pid) = self.job.as_ref().and_then(|j| j.prompt_id.clone()) else {
            return;
        };
        if let Some(end) = self.ended.get(&pid).copied() {
            self.break_line(fx);
            fx.push(Effect::Exit(match end {
                TurnEnd::Succeeded => exit::OK,
                TurnEnd::Failed | TurnEnd::Aborted => exit::TURN_FAILED,
            }));
        }
    }

    /// A line typed in the interactive editor: a command, else a prompt.
    pub fn typed(&mut self, text: String) -> Vec<Effect> {
        match Command::parse(&text) {
            Some(Command::Sessions) => self.list_sessions(),
            Some(Command::Switch(name)) => self.switch(name),
            Some(Command::Usage(usage)) => vec![self.msg(usage)],
            Some(Command::Mode(mode)) => self.set(SettingsRequest {
                permission_mode: Some(mode),
                ..SettingsRequest::default()
            }),
            Some(Command::Model(model)) => self.set(SettingsRequest {
                model: Some(model),
                ..SettingsRequest::default()
            }),
            Some(Command::Changes) => self.files_status(),
            Some(Command::Diff(of)) => self.diff(of),
            Some(Command::At { at, text }) => self.submit_at(text, Some(at)),
            None => self.submit(text),
        }
    }

    /// Slash commands for Tab completion: (name, argument hint), terminal-safe.
    pub fn commands(&self) -> &[(String, String)] {
        &self.commands
    }

    /// The status line: context and cost as last reported, and a reached usage
    /// limit until it lifts.
    pub fn status_line(&self) -> Option<String> {
        self.status_line_at(time::OffsetDateTime::now_utc())
    }

    fn status_line_at(&self, now: time::OffsetDateTime) -> Option<String> {
        let usage = self.usage.as_deref()?;
        match self
            .limited_until
            .and_then(|t| controls::limit_text(t, now))
        {
            Some(limit) => Some(format!("{limit} · {usage}")),
            None => Some(usage.to_string()),
        }
    }

    fn ask_usage(&self) -> Effect {
        Effect::Send(ClientMsg::SessionUsage {
            id: Some(RequestId::Text(USAGE_ID.into())),
            session: Some(self.name.clone()),
        })
    }

    /// `:mode` / `:model`: a `session.set`; `relay.settings` shows the change and
    /// an `error` reply the refusal.
    fn set(&mut self, settings: SettingsRequest) -> Vec<Effect> {
        if !self.attached {
            return vec![self.msg("not connected; change settings when the connection is back")];
        }
        let id = self.id("set");
        vec![Effect::Send(ClientMsg::SessionSet {
            id: Some(RequestId::Text(id)),
            session: Some(self.name.clone()),
            settings,
        })]
    }

    /// `:changes`: `files.status`.
    fn files_status(&mut self) -> Vec<Effect> {
        if !self.attached {
            return vec![self.msg("not connected; ask again when the connection is back")];
        }
        vec![Effect::Send(ClientMsg::FilesStatus {
            id: Some(RequestId::Text(STATUS_ID.into())),
            session: Some(self.name.clone()),
        })]
    }

    /// `:diff [PATH | turn]`: `files.diff` against `HEAD`, or the last turn's changes.
    fn diff(&mut self, of: DiffOf) -> Vec<Effect> {
        if !self.attached {
            return vec![self.msg("not connected; ask again when the connection is back")];
        }
        let (path, base) = match of {
            DiffOf::All => (None, None),
            DiffOf::Path(path) => (Some(path), None),
            DiffOf::LastTurn => match &self.last_changed_turn {
                Some(turn) => (None, Some(format!("turn:{turn}"))),
                None => return vec![self.msg("no turn has changed files since attaching")],
            },
        };
        vec![Effect::Send(ClientMsg::FilesDiff {
            id: Some(RequestId::Text(DIFF_ID.into())),
            session: Some(self.name.clone()),
            path,
            base,
        })]
    }

    /// `:sessions`: ask for the list; the reply is shown as a table.
    fn list_sessions(&mut self) -> Vec<Effect> {
        if !self.attached {
            return vec![self.msg("not connected; list the sessions when the connection is back")];
        }
        vec![Effect::Send(ClientMsg::SessionList {
            id: Some(RequestId::Text(SESSIONS_ID.into())),
        })]
    }

    /// `:switch NAME`: leave this session (keeping its place) and attach to NAME,
    /// from where this client left it if it was there before.
    fn switch(&mut self, name: String) -> Vec<Effect> {
        let refuse = if name == self.name {
            Some(format!("already on session {}", terminal_safe(&name, 64)))
        } else if !self.attached {
            Some("not connected; switch when the connection is back".into())
        } else if !self.outgoing.is_empty() || self.job.is_some() {
            Some(format!(
                "a prompt is still on its way to session {}; switch once it is accepted",
                terminal_safe(&self.name, 64)
            ))
        } else {
            None
        };
        if let Some(text) = refuse {
            return vec![self.msg(&text)];
        }
        let mut fx = Vec::new();
        self.break_line(&mut fx);
        fx.push(Effect::Send(ClientMsg::Detach {
            id: Some(RequestId::Text(DETACH_ID.into())),
            session: Some(self.name.clone()),
        }));
        self.previous = Some(self.name.clone());
        self.enter(name, SWITCH_ID, &mut fx);
        fx
    }

    /// Make `name` the session shown and attach to it (`id`: the request id),
    /// parking the current one if it was ever attached. Events of other
    /// sessions are dropped from now on; a parked session's are replayed from
    /// its last seq when it is entered again, so none is shown twice or missed.
    fn enter(&mut self, name: String, id: &str, fx: &mut Vec<Effect>) {
        if self.attached_once {
            let parked = Parked {
                uid: self.uid.take(),
                last: self.cursor.last,
            };
            self.parked.insert(self.name.clone(), parked);
        }
        let back = self.parked.remove(&name);
        self.uid = back.as_ref().and_then(|b| b.uid.clone());
        self.cursor = Cursor {
            last: back.as_ref().map_or(0, |b| b.last),
        };
        self.attached_once = back.is_some();
        self.name = name;
        self.attached = false;
        self.state.clear();
        self.running = None;
        self.last_result_error = None;
        self.ended.clear();
        self.pending.clear();
        self.answered.clear();
        self.interrupt_sent = false;
        self.renderer.roster.reset_presence();
        let (since, tail) = if self.attached_once {
            (Some(self.cursor.last), None)
        } else {
            (None, self.tail)
        };
        self.attach_since = since;
        fx.push(Effect::Send(ClientMsg::Attach {
            id: Some(RequestId::Text(id.into())),
            session: Some(self.name.clone()),
            since,
            tail,
            uid: self.uid.clone(),
        }));
    }

    /// A prompt typed (interactive) or read from stdin.
    pub fn submit(&mut self, text: String) -> Vec<Effect> {
        self.submit_at(text, None)
    }

    /// A prompt typed in the editor; `at` schedules it (`:at`).
    fn submit_at(&mut self, text: String, at: Option<String>) -> Vec<Effect> {
        let o = Outgoing {
            id: self.id("p"),
            key: format!("attach-{}", uuid::Uuid::new_v4().simple()),
            text,
            at,
        };
        let mut fx = Vec::new();
        if let Some(at) = &o.at {
            fx.push(self.msg(&format!("scheduled for {at}")));
        }
        if self.attached {
            fx.push(Effect::Send(self.prompt(
                &o.id,
                &o.text,
                &o.key,
                o.at.as_deref(),
            )));
        } else {
            fx.push(self.msg("not connected; the prompt will be sent when the connection is back"));
        }
        self.outgoing.push(o);
        fx
    }

    /// An answer from the permission keys.
    pub fn answer(&mut self, request_id: &str, decision: Decision) -> Vec<Effect> {
        if let Some(i) = self.pairs.iter().position(|p| p.pair_id == request_id) {
            if !self.attached {
                return vec![self.msg("not connected; answer again when the connection is back")];
            }
            // Off the screen now; pair.resolved says how it ended.
            let pair_id = self.pairs[i].pair_id.clone();
            self.answered.insert(pair_id);
            let (allow, role) = match decision {
                Decision::Allow | Decision::AllowAlways => (true, Role::Owner),
                Decision::AllowViewer => (true, Role::Viewer),
                Decision::Deny(_) | Decision::AllowAcceptEdits | Decision::Answers(_) => {
                    (false, Role::Owner)
                }
            };
            let id = self.id("pair");
            return vec![Effect::Send(ClientMsg::PairRespond {
                id: Some(RequestId::Text(id)),
                pair_id: request_id.to_string(),
                allow,
                role: Some(role),
                block: None,
            })];
        }
        let Some((_, ev)) = self.pending.iter().find(|(id, _)| id == request_id) else {
            return Vec::new();
        };
        let mut then = None;
        let response = match decision {
            Decision::Allow | Decision::AllowViewer => allow(None),
            Decision::AllowAcceptEdits => {
                // The CLI leaves plan mode for `default` on approval; the mode
                // asked for follows as its own `session.set` (docs/protocol.md §10).
                then = Some(SettingsRequest {
                    permission_mode: Some("acceptEdits".into()),
                    ..SettingsRequest::default()
                });
                allow(None)
            }
            Decision::Answers(choices) => {
                let input = ev.pointer("/request/input").unwrap_or(&Value::Null);
                let questions = controls::questions(input);
                match controls::answered_input(input, &questions, &choices) {
                    Value::Object(map) => PermissionAnswer::Allow {
                        updated_input: Some(map),
                        updated_permissions: None,
                    },
                    _ => allow(None),
                }
            }
            Decision::AllowAlways => {
                let suggestions = ev
                    .pointer("/request/permission_suggestions")
                    .and_then(Value::as_array)
                    .filter(|a| !a.is_empty());
                allow(suggestions.cloned())
            }
            Decision::Deny(m) => deny(m),
        };
        if !self.attached {
            return vec![self.msg("not connected; answer again when the connection is back")];
        }
        self.answered.insert(request_id.to_string());
        let id = self.id("r");
        let mut fx = vec![Effect::Send(self.respond(
            id,
            request_id.to_string(),
            response,
        ))];
        if let Some(settings) = then {
            fx.extend(self.set(settings));
        }
        fx
    }

    fn respond(&self, id: String, request_id: String, response: PermissionAnswer) -> ClientMsg {
        ClientMsg::Respond {
            id: Some(RequestId::Text(id)),
            session: Some(self.name.clone()),
            request_id,
            response,
        }
    }

    /// A `pair.requested` (strings already terminal-safe; `from`: key type and peer).
    fn on_pair_requested(
        &mut self,
        request: PairRequest,
        (key_type, peer): (String, String),
        fx: &mut Vec<Effect>,
    ) {
        if request.pair_id.is_empty() || self.pairs.iter().any(|p| p.pair_id == request.pair_id) {
            return;
        }
        let text = format!(
            "device \"{}\" ({key_type} {}, from {peer}) asks to be paired; code {} — check it matches the device's screen",
            request.device, request.fingerprint, request.code
        );
        self.pairs.push(request);
        self.break_line(fx);
        fx.push(self.msg(&text));
    }

    fn on_pair_resolved(
        &mut self,
        pair_id: &str,
        allow: bool,
        role: Option<Role>,
        by: &str,
        fx: &mut Vec<Effect>,
    ) {
        let Some(i) = self.pairs.iter().position(|p| p.pair_id == pair_id) else {
            return;
        };
        let request = self.pairs.remove(i);
        self.answered.remove(&request.pair_id);
        let who = if by == self.renderer.roster.own_id {
            "you".to_string()
        } else if by == "relay" {
            "the relay (expired or withdrawn)".to_string()
        } else {
            terminal_safe(by, 64)
        };
        let text = if allow {
            format!(
                "device \"{}\" paired as {} by {who}",
                request.device,
                role.unwrap_or(Role::Owner).as_str()
            )
        } else {
            format!("device \"{}\" not paired (by {who})", request.device)
        };
        self.break_line(fx);
        fx.push(self.msg(&text));
    }

    /// The permission prompt the editor should show: the oldest unanswered one,
    /// else the oldest device pairing request.
    pub fn current_ask(&self) -> Option<Ask> {
        self.permission_ask().or_else(|| {
            let p = self
                .pairs
                .iter()
                .find(|p| !self.answered.contains(&p.pair_id))?;
            Some(Ask {
                request_id: p.pair_id.clone(),
                tool: "pairing".into(),
                can_always: false,
                kind: AskKind::Tool,
                pair: Some(super::input::PairAsk {
                    device: p.device.clone(),
                    code: p.code.clone(),
                    fingerprint: p.fingerprint.clone(),
                }),
            })
        })
    }

    fn permission_ask(&self) -> Option<Ask> {
        self.pending.iter().find_map(|(rid, ev)| {
            let req = ev.get("request")?;
            if req.get("subtype").and_then(Value::as_str) != Some("can_use_tool")
                || self.answered.contains(rid)
            {
                return None;
            }
            let tool_name = req.get("tool_name").and_then(Value::as_str);
            let kind = match tool_name {
                Some("ExitPlanMode") => AskKind::Plan,
                Some("AskUserQuestion") => {
                    let questions = controls::questions(req.get("input").unwrap_or(&Value::Null));
                    if questions.is_empty() {
                        AskKind::Tool
                    } else {
                        AskKind::Questions(questions)
                    }
                }
                _ => AskKind::Tool,
            };
            Some(Ask {
                kind,
                request_id: rid.clone(),
                tool: super::render::clean(tool_name.unwrap_or("tool")),
                can_always: req
                    .get("permission_suggestions")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty()),
                pair: None,
            })
        })
    }

    /// Ctrl-C: interrupt a running turn once; otherwise (or the second time) quit.
    pub fn ctrl_c(&mut self) -> Vec<Effect> {
        let busy =
            self.running.is_some() || matches!(self.state.as_str(), "busy" | "awaiting_permission");
        if busy && !self.interrupt_sent && self.attached {
            self.interrupt_sent = true;
            let id = self.id("i");
            let mut fx = vec![Effect::Send(ClientMsg::Interrupt {
                id: Some(RequestId::Text(id)),
                session: Some(self.name.clone()),
            })];
            self.break_line(&mut fx);
            fx.push(self.msg("interrupting the turn (Ctrl-C again to quit)"));
            return fx;
        }
        let code = if self.job.is_some() {
            exit::INTERRUPTED
        } else {
            exit::OK
        };
        vec![Effect::Exit(code)]
    }
}

/// The JSON text on one line: frames are compact already, but a frame with a raw
/// newline (never sent by ccrelay) is re-serialized rather than split.
fn one_line_json(text: &str) -> String {
    if text.contains('\n') {
        serde_json::from_str::<Value>(text)
            .map(|v| v.to_string())
            .unwrap_or_else(|_| text.replace('\n', " "))
    } else {
        text.to_string()
    }
}

/// An error code as the frame spelled it: a code this build does not know (a
/// newer server's) is still shown by its name.
fn error_code_text(code: ErrorCode, frame: &str) -> String {
    #[derive(serde::Deserialize)]
    struct CodeOnly {
        code: String,
    }
    match code {
        ErrorCode::Unrecognized => serde_json::from_str::<CodeOnly>(frame)
            .map(|c| c.code)
            .unwrap_or_default(),
        known => known.as_str().to_string(),
    }
}

/// The `uid` an `attached` reply carries (docs/protocol.md §4), if any.
fn attached_uid(frame: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct UidOnly {
        uid: Option<String>,
    }
    serde_json::from_str::<UidOnly>(frame).ok()?.uid
}

/// The text of a request id (this client sends only text ids; "" for none).
fn text_id(id: Option<RequestId>) -> String {
    match id {
        Some(RequestId::Text(t)) => t,
        Some(RequestId::Number(n)) => n.to_string(),
        None => String::new(),
    }
}

fn allow(updated_permissions: Option<Vec<Value>>) -> PermissionAnswer {
    PermissionAnswer::Allow {
        updated_input: None,
        updated_permissions,
    }
}

fn deny(message: Option<String>) -> PermissionAnswer {
    PermissionAnswer::Deny {
        message,
        interrupt: None,
    }
}

/// The fields of an `attached` reply this client uses, read.
struct Attached {
    state: String,
    head: u64,
    replay_from: u64,
    truncated: bool,
    /// Pending control requests: agent events, read as JSON.
    pending: Vec<Value>,
    clients: Vec<ccrelay_protocol::ClientEntry>,
    clients_total: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn auth() -> AuthOk {
        AuthOk {
            client_id: "me".into(),
            role: "owner".into(),
            frame: r#"{"type":"auth.ok","client_id":"me"}"#.into(),
        }
    }

    fn event(seq: u64, ev: Value) -> String {
        json!({"type":"event","session":"default","seq":seq,"event":ev}).to_string()
    }

    fn sends(fx: &[Effect]) -> Vec<Value> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Send(m) => Some(serde_json::to_value(m).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn exit_of(fx: &[Effect]) -> Option<u8> {
        fx.iter().find_map(|e| match e {
            Effect::Exit(c) => Some(*c),
            _ => None,
        })
    }

    #[test]
    fn cursor_drops_duplicates_and_follows_replay_from() {
        let mut c = Cursor::default();
        assert_eq!(c.on_attached(None, 10, 11, false), AttachNote::Complete);
        assert_eq!(c.last, 10);
        assert!(c.accept(11));
        assert!(!c.accept(11));
        assert!(!c.accept(5));
        assert!(c.accept(12));
        // Reconnect with since=12: the replay starts at 13.
        assert_eq!(c.on_attached(Some(12), 15, 13, false), AttachNote::Complete);
        assert_eq!(c.last, 12);
        assert_eq!(c.on_attached(Some(12), 15, 14, true), AttachNote::Gap);
        assert_eq!(c.last, 13);
        // The server lost its data: since beyond head.
        assert_eq!(c.on_attached(Some(13), 4, 1, true), AttachNote::Rebuilt);
        assert_eq!(c.last, 0);
        assert!(c.accept(1));
    }

    #[test]
    fn reconnect_attaches_since_the_last_seq_and_nothing_repeats() {
        let mut s = Session::new("default".into(), true, false, None, None);
        let fx = s.on_connected(&auth(), false);
        assert_eq!(
            sends(&fx)[0],
            json!({"type":"attach","id":"attach","session":"default"})
        );
        s.on_frame(&json!({"type":"attached","id":"attach","session":"default","state":"idle","head":2,"replay_from":1,"truncated":false,"pending":[],"clients":[]}).to_string());
        let mut printed = Vec::new();
        for seq in 1..=3 {
            for e in s.on_frame(&event(seq, json!({"type":"relay.state","state":"busy"}))) {
                if let Effect::Json(j) = e {
                    printed.push(j);
                }
            }
        }
        s.on_disconnected("reset");
        let fx = s.on_connected(&auth(), true);
        assert_eq!(sends(&fx)[0]["since"], 3);
        s.on_frame(&json!({"type":"attached","id":"attach","session":"default","state":"idle","head":4,"replay_from":4,"truncated":false,"pending":[],"clients":[]}).to_string());
        // A duplicate (e.g. an overlapping replay) is not printed again.
        for seq in [3, 4] {
            for e in s.on_frame(&event(seq, json!({"type":"relay.state","state":"idle"}))) {
                if let Effect::Json(j) = e {
                    printed.push(j);
                }
            }
        }
        let seqs: Vec<u64> = printed
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["seq"].as_u64())
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
    }

    fn job_session(policy: Option<Policy>) -> (Session, String) {
        let job = PromptJob::new("please run-bash".into(), policy);
        let key = job.key.clone();
        let mut s = Session::new("default".into(), false, false, None, Some(job));
        let fx = s.on_connected(&auth(), false);
        assert_eq!(sends(&fx)[0]["tail"], 0);
        let fx = s.on_frame(&json!({"type":"attached","id":"attach","session":"default","state":"idle","head":7,"replay_from":8,"truncated":false,"pending":[],"clients":[]}).to_string());
        let sent = sends(&fx);
        assert_eq!(sent[0]["type"], "prompt");
        assert_eq!(sent[0]["key"], key.as_str());
        (s, key)
    }

    fn bash_request() -> Value {
        json!({"type":"control_request","request_id":"r1","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{"command":"ls"},
            "permission_suggestions":[{"type":"addRules"}]}})
    }

    #[test]
    fn prompt_job_allows_and_exits_with_the_turn() {
        let (mut s, key) = job_session(Some(Policy::Allow));
        s.on_frame(&json!({"type":"ok","id":"prompt","prompt_id":"P","queued":false}).to_string());
        s.on_frame(&event(
            8,
            json!({"type":"relay.prompt","prompt_id":"P","client_id":"me","key":key,"content":"x"}),
        ));
        s.on_frame(&event(
            9,
            json!({"type":"relay.turn","prompt_id":"P","phase":"started"}),
        ));
        let fx = s.on_frame(&event(10, bash_request()));
        let sent = sends(&fx);
        assert_eq!(sent[0]["type"], "respond");
        assert_eq!(sent[0]["response"], json!({"behavior":"allow"}));
        assert_eq!(
            exit_of(&s.on_frame(&event(11, json!({"type":"result","is_error":false})))),
            None
        );
        let fx = s.on_frame(&event(
            12,
            json!({"type":"relay.turn","prompt_id":"P","phase":"ended"}),
        ));
        assert_eq!(exit_of(&fx), Some(exit::OK));
    }

    #[test]
    fn prompt_job_without_policy_exits_3_naming_the_tool() {
        let (mut s, _) = job_session(None);
        s.on_frame(&json!({"type":"ok","id":"prompt","prompt_id":"P"}).to_string());
        s.on_frame(&event(
            8,
            json!({"type":"relay.turn","prompt_id":"P","phase":"started"}),
        ));
        let fx = s.on_frame(&event(9, bash_request()));
        assert_eq!(exit_of(&fx), Some(exit::NEEDS_PERMISSION));
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Msg(m) if m.contains("Bash")))
        );
        assert!(sends(&fx).is_empty());
    }

    #[test]
    fn prompt_job_failed_or_aborted_exits_1_and_is_resent_until_acked() {
        let (mut s, key) = job_session(None);
        // Dropped before the ok: the same prompt (same key) goes again after re-attaching.
        s.on_disconnected("reset");
        s.on_connected(&auth(), true);
        let fx = s.on_frame(&json!({"type":"attached","id":"attach","session":"default","state":"idle","head":7,"replay_from":8,"truncated":false,"pending":[],"clients":[]}).to_string());
        assert_eq!(sends(&fx)[0]["key"], key.as_str());
        s.on_frame(
            &json!({"type":"ok","id":"prompt","prompt_id":"P","duplicate":true}).to_string(),
        );
        s.on_frame(&event(
            8,
            json!({"type":"relay.turn","prompt_id":"P","phase":"started"}),
        ));
        s.on_frame(&event(9, json!({"type":"result","is_error":true})));
        let fx = s.on_frame(&event(
            10,
            json!({"type":"relay.turn","prompt_id":"P","phase":"ended"}),
        ));
        assert_eq!(exit_of(&fx), Some(exit::TURN_FAILED));
        // Acked now: a later reconnect does not resend.
        s.on_connected(&auth(), true);
        let fx = s.on_frame(&json!({"type":"attached","id":"attach","session":"default","state":"idle","head":10,"replay_from":11,"truncated":false,"pending":[],"clients":[]}).to_string());
        assert!(sends(&fx).is_empty());
    }

    #[test]
    fn the_turn_outcome_may_arrive_before_the_ok() {
        let (mut s, key) = job_session(None);
        s.on_frame(&event(
            8,
            json!({"type":"relay.prompt","prompt_id":"P","client_id":"me","key":key,"content":"x"}),
        ));
        s.on_frame(&event(
            9,
            json!({"type":"relay.turn","prompt_id":"P","phase":"started"}),
        ));
        let fx = s.on_frame(&event(
            10,
            json!({"type":"relay.turn","prompt_id":"P","phase":"aborted"}),
        ));
        assert_eq!(exit_of(&fx), Some(exit::TURN_FAILED));
    }

    /// A newer server's frame types are ignored (and still printed with
    /// `--json`); a known type with missing fields is reported, not acted on.
    #[test]
    fn future_frame_types_are_ignored_and_malformed_ones_reported() {
        let mut s = Session::new("default".into(), false, false, None, None);
        s.on_connected(&auth(), false);
        assert!(
            s.on_frame(r#"{"type":"future.frame","session":"x"}"#)
                .is_empty()
        );
        let fx = s.on_frame(r#"{"type":"attached","id":"attach"}"#);
        assert!(
            matches!(&fx[..], [Effect::Msg(m)] if m.contains("protocol error")),
            "{fx:?}"
        );
        let mut j = Session::new("default".into(), true, false, None, None);
        j.on_connected(&auth(), false);
        let fx = j.on_frame(r#"{"type":"future.frame","session":"x"}"#);
        assert_eq!(
            fx,
            [Effect::Json(
                r#"{"type":"future.frame","session":"x"}"#.into()
            )]
        );
        let fx = s.on_frame(r#"{"type":"error","code":"session_exists","message":"m"}"#);
        assert!(
            matches!(&fx[..], [Effect::Msg(m)] if m.contains("server error session_exists: m")),
            "{fx:?}"
        );
    }

    #[test]
    fn permission_prompts_are_dismissed_when_someone_else_answers() {
        let mut s = Session::new("default".into(), false, false, None, None);
        s.on_connected(&auth(), false);
        s.on_frame(&json!({"type":"attached","id":"attach","session":"default","state":"idle","head":0,"replay_from":1,"truncated":false,"pending":[],
            "clients":[{"client_id":"me","device":"phone","fingerprint":"SHA256:x","comment":"","role":"owner"},{"client_id":"c2","device":"laptop","fingerprint":"SHA256:x","comment":"","role":"owner"}]}).to_string());
        s.on_frame(&event(1, bash_request()));
        let ask = s.current_ask().expect("asked");
        assert_eq!(ask.tool, "Bash");
        assert!(ask.can_always);
        let fx = s.on_frame(&event(2, json!({"type":"relay.resolved","request_id":"r1","client_id":"c2","response":{"behavior":"allow"}})));
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Out(t) if t.contains("allowed by laptop")))
        );
        assert!(s.current_ask().is_none());
    }

    #[test]
    fn always_allow_sends_the_suggestions_and_deny_a_message() {
        let mut s = Session::new("default".into(), false, false, None, None);
        s.on_connected(&auth(), false);
        s.on_frame(&json!({"type":"attached","id":"attach","session":"default","state":"awaiting_permission","head":1,"replay_from":2,"truncated":false,
            "pending":[bash_request()],"clients":[]}).to_string());
        assert!(s.current_ask().is_some());
        let fx = s.answer("r1", Decision::AllowAlways);
        assert_eq!(
            sends(&fx)[0]["response"],
            json!({"behavior":"allow","updatedPermissions":[{"type":"addRules"}]})
        );
        // Answered: no longer offered while the resolution is on its way.
        assert!(s.current_ask().is_none());
        let fx = s.answer("r1", Decision::Deny(Some("no".into())));
        assert_eq!(
            sends(&fx)[0]["response"],
            json!({"behavior":"deny","message":"no"})
        );
        let fx = s.on_frame(&event(
            2,
            json!({"type":"control_cancel_request","request_id":"r1"}),
        ));
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Out(t) if t.contains("cancelled")))
        );
    }

    #[test]
    fn pair_requests_are_asked_answered_and_escaped() {
        let mut s = Session::new("default".into(), false, false, None, None);
        s.on_connected(&auth(), false);
        s.on_frame(&json!({"type":"attached","id":"attach","session":"default","state":"idle","head":0,"replay_from":1,"truncated":false,"pending":[],"clients":[]}).to_string());
        let fx = s.on_frame(&json!({"type":"pair.requested","pair_id":"p1","fingerprint":"SHA256:abc",
            "key_type":"ssh-ed25519","device":"evil\u{1b}[2J\u{202e}x\n","code":"012345","peer":"127.0.0.1","expires_in_ms":1000}).to_string());
        let shown: String = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Msg(m) | Effect::Out(m) => Some(m.clone()),
                _ => None,
            })
            .collect();
        assert!(shown.contains("012345"), "{shown}");
        assert!(
            !shown.contains('\u{1b}') && !shown.contains('\u{202e}'),
            "{shown:?}"
        );
        assert!(
            shown.contains("\\u{1b}") && shown.contains("\\u{202e}"),
            "{shown}"
        );
        let ask = s.current_ask().expect("asked");
        let pair = ask.pair.expect("a pair ask");
        assert_eq!(pair.code, "012345");
        assert!(!pair.device.contains('\n'));
        let sent = sends(&s.answer(&ask.request_id, Decision::AllowViewer));
        assert_eq!(sent[0]["type"], "pair.respond");
        assert_eq!(sent[0]["pair_id"], "p1");
        assert_eq!(sent[0]["allow"], true);
        assert_eq!(sent[0]["role"], "viewer");
        assert!(s.current_ask().is_none());
        // A resolved request (here: expired) leaves the screen.
        s.on_frame(&json!({"type":"pair.requested","pair_id":"p2","device":"tab","code":"1","fingerprint":"f","key_type":"ssh-ed25519","peer":"127.0.0.1","expires_in_ms":1000}).to_string());
        assert!(s.current_ask().is_some());
        s.on_frame(
            &json!({"type":"pair.resolved","pair_id":"p2","allow":false,"by":"relay"}).to_string(),
        );
        assert!(s.current_ask().is_none());
    }

    #[test]
    fn ctrl_c_interrupts_once_then_quits() {
        let mut s = Session::new("default".into(), false, false, None, None);
        s.on_connected(&auth(), false);
        s.on_frame(&json!({"type":"attached","id":"attach","session":"default","state":"busy","head":0,"replay_from":1,"truncated":false,"pending":[],"clients":[]}).to_string());
        let fx = s.ctrl_c();
        assert_eq!(sends(&fx)[0]["type"], "interrupt");
        assert_eq!(exit_of(&s.ctrl_c()), Some(exit::OK));
    }

    #[test]
    fn prompts_typed_while_disconnected_are_sent_after_attach() {
        let mut s = Session::new("default".into(), false, false, None, None);
        let fx = s.submit("hello".into());
        assert!(sends(&fx).is_empty());
        s.on_connected(&auth(), false);
        let fx = s.on_frame(&json!({"type":"attached","id":"attach","session":"default","state":"idle","head":0,"replay_from":1,"truncated":false,"pending":[],"clients":[]}).to_string());
        let sent = sends(&fx);
        assert_eq!(sent[0]["content"], "hello");
        let id = sent[0]["id"].as_str().unwrap_or_default().to_string();
        s.on_frame(&json!({"type":"ok","id":id,"prompt_id":"P"}).to_string());
        s.on_connected(&auth(), true);
        let fx = s.on_frame(&json!({"type":"attached","id":"attach","session":"default","state":"idle","head":0,"replay_from":1,"truncated":false,"pending":[],"clients":[]}).to_string());
        assert!(!sends(&fx).iter().any(|m| m["type"] == "prompt"), "{fx:?}");
    }

    fn attached(session: &str, id: &str, head: u64, replay_from: u64) -> String {
        json!({"type":"attached","id":id,"session":session,"uid":format!("uid-{session}"),"state":"idle","head":head,
            "replay_from":replay_from,"truncated":false,"pending":[],"clients":[]})
        .to_string()
    }

    fn event_in(session: &str, seq: u64) -> String {
        json!({"type":"event","session":session,"seq":seq,"event":{"type":"relay.state","state":"idle"}})
            .to_string()
    }

    /// Seqs of the events a frame made this (`--json`) session print.
    fn printed(fx: &[Effect]) -> Vec<(String, u64)> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Json(j) => serde_json::from_str::<Value>(j).ok(),
                _ => None,
            })
            .filter(|v| v["type"] == "event")
            .map(|v| {
                (
                    v["session"].as_str().unwrap_or_default().to_string(),
                    v["seq"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    #[test]
    fn commands_are_recognized_only_alone_on_their_line() {
        assert_eq!(Command::parse(":sessions"), Some(Command::Sessions));
        assert_eq!(
            Command::parse("  :switch api "),
            Some(Command::Switch("api".into()))
        );
        assert!(matches!(Command::parse(":switch"), Some(Command::Usage(_))));
        assert!(matches!(
            Command::parse(":switch a b"),
            Some(Command::Usage(_))
        ));
        assert_eq!(Command::parse("please :switch api"), None);
        assert_eq!(Command::parse(":sessions please"), None);
        assert_eq!(Command::parse("hello"), None);
        let mut s = Session::new("default".into(), false, false, None, None);
        s.on_connected(&auth(), false);
        s.on_frame(&attached("default", "attach", 0, 1));
        // A command is not sent as a prompt.
        let sent = sends(&s.typed(":sessions".into()));
        assert_eq!(sent, vec![json!({"type":"session.list","id":"sessions"})]);
        let fx = s.on_frame(
            &json!({"type":"session.list","id":"sessions","sessions":[
            {"session":"default","state":"idle","head":0,"clients":1},
            {"session":"e\u{1b}[2Jvil","state":"busy","head":3,"clients":0}]})
            .to_string(),
        );
        let shown: String = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Msg(m) => Some(m.clone()),
                _ => None,
            })
            .collect();
        assert!(
            shown.contains("NAME") && shown.contains("e\\u{1b}[2Jvil"),
            "{shown}"
        );
        assert!(!shown.contains('\u{1b}'), "{shown:?}");
        assert_eq!(sends(&s.typed("hello".into()))[0]["type"], "prompt");
    }

    /// Switching away and back replays exactly the events not yet shown: none
    /// twice, none missed; each attach carries the session's uid once known.
    #[test]
    fn switching_keeps_each_sessions_place() {
        let mut s = Session::new("default".into(), true, false, None, None);
        let fx = s.on_connected(&auth(), false);
        assert!(sends(&fx)[0].get("uid").is_none());
        s.on_frame(&attached("default", "attach", 2, 1));
        let mut seen = Vec::new();
        for seq in 1..=2 {
            seen.extend(printed(&s.on_frame(&event_in("default", seq))));
        }
        let sent = sends(&s.typed(":switch api".into()));
        assert_eq!(
            sent[0],
            json!({"type":"detach","id":"detach","session":"default"})
        );
        assert_eq!(
            sent[1],
            json!({"type":"attach","id":"switch","session":"api"})
        );
        // Frames of the old session still in flight are not shown (and come back later).
        seen.extend(printed(&s.on_frame(&event_in("default", 3))));
        s.on_frame(&json!({"type":"detached","id":"detach","session":"default"}).to_string());
        s.on_frame(&attached("api", "switch", 1, 1));
        seen.extend(printed(&s.on_frame(&event_in("api", 1))));
        // A reconnect while on api attaches api, since its last seq, with its uid.
        s.on_disconnected("reset");
        let sent = sends(&s.on_connected(&auth(), true));
        assert_eq!(
            sent[0],
            json!({"type":"attach","id":"attach","session":"api","since":1,"uid":"uid-api"})
        );
        s.on_frame(&attached("api", "attach", 1, 2));
        // Back to default: since its last shown seq (2), with its uid.
        let sent = sends(&s.typed(":switch default".into()));
        assert_eq!(
            sent[1],
            json!({"type":"attach","id":"switch","session":"default","since":2,"uid":"uid-default"})
        );
        s.on_frame(&attached("default", "switch", 4, 3));
        for seq in [3, 4, 4] {
            seen.extend(printed(&s.on_frame(&event_in("default", seq))));
        }
        // And to api again: nothing of api is shown twice.
        let sent = sends(&s.typed(":switch api".into()));
        assert_eq!(sent[1]["since"], 1);
        s.on_frame(&attached("api", "switch", 2, 2));
        for seq in [1, 2] {
            seen.extend(printed(&s.on_frame(&event_in("api", seq))));
        }
        let expect: Vec<(String, u64)> = [
            ("default", 1),
            ("default", 2),
            ("api", 1),
            ("default", 3),
            ("default", 4),
            ("api", 2),
        ]
        .iter()
        .map(|(n, q)| (n.to_string(), *q))
        .collect();
        assert_eq!(seen, expect);
    }

    #[test]
    fn a_refused_switch_goes_back_and_a_closed_session_ends_attach() {
        let mut s = Session::new("default".into(), false, false, None, None);
        s.on_connected(&auth(), false);
        s.on_frame(&attached("default", "attach", 5, 6));
        assert!(
            matches!(&s.typed(":switch default".into())[..], [Effect::Msg(m)] if m.contains("already"))
        );
        s.typed(":switch nope".into());
        let fx = s.on_frame(&json!({"type":"error","id":"switch","code":"no_such_session","message":"no session nope"}).to_string());
        assert_eq!(exit_of(&fx), None);
        let sent = sends(&fx);
        assert_eq!(
            sent[0],
            json!({"type":"attach","id":"switch","session":"default","since":5,"uid":"uid-default"})
        );
        s.on_frame(&attached("default", "switch", 5, 6));
        // A prompt on its way pins the session.
        s.submit("hi".into());
        assert!(sends(&s.typed(":switch api".into())).is_empty());
        // Closed by someone else: the client says so and ends.
        let fx = s.on_frame(&json!({"type":"detached","session":"default"}).to_string());
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Msg(m) if m.contains("was closed")))
        );
        assert_eq!(exit_of(&fx), Some(exit::OK));
    }

    #[test]
    fn a_created_session_is_attached_with_its_uid() {
        let mut s =
            Session::new("api".into(), false, false, None, None).with_uid(Some("u1".into()));
        let sent = sends(&s.on_connected(&auth(), false));
        assert_eq!(
            sent[0],
            json!({"type":"attach","id":"attach","session":"api","uid":"u1"})
        );
        // The name now belongs to another session: refused, and the client ends.
        let fx = s.on_frame(
            &json!({"type":"error","id":"attach","code":"no_such_session","message":"m"})
                .to_string(),
        );
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Msg(m) if m.contains("is gone")))
        );
        assert_eq!(exit_of(&fx), Some(exit::ERROR));
    }

    fn interactive() -> Session {
        let mut s = Session::new("default".into(), false, false, None, None);
        s.on_connected(&auth(), false);
        s.on_frame(&attached("default", "attach", 0, 1));
        s
    }

    #[test]
    fn at_schedules_the_rest_of_the_line() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        assert_eq!(
            scheduled_time("+1h30m", now).as_deref(),
            Some("2027-01-15T09:30:00Z")
        );
        assert_eq!(
            scheduled_time("+90s", now).as_deref(),
            Some("2027-01-15T08:01:30Z")
        );
        assert_eq!(
            scheduled_time("2027-02-01T07:00:00+01:00", now).as_deref(),
            Some("2027-02-01T07:00:00+01:00")
        );
        for bad in [
            "+",
            "+0m",
            "+5",
            "+5d",
            "+h",
            "tomorrow",
            "+99999999999999999999h",
        ] {
            assert_eq!(scheduled_time(bad, now), None, "{bad}");
        }
        match Command::parse(":at +2h  +2h is  when the nightly run starts ") {
            Some(Command::At { at, text }) => {
                assert!(at.ends_with('Z'), "{at}");
                assert_eq!(text, "+2h is  when the nightly run starts");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(Command::parse(":at +2h"), Some(Command::Usage(_))));
        assert!(matches!(
            Command::parse(":at soon do it"),
            Some(Command::Usage(_))
        ));

        let mut s = interactive();
        let sent = sends(&s.typed(":at 2027-02-01T07:00:00Z run the nightly checks".into()));
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0]["type"], "prompt");
        assert_eq!(sent[0]["content"], "run the nightly checks");
        assert_eq!(sent[0]["at"], "2027-02-01T07:00:00Z");
        // Sent again, still scheduled, after a reconnect.
        assert!(
            s.outgoing
                .iter()
                .any(|o| o.at.as_deref() == Some("2027-02-01T07:00:00Z"))
        );
    }

    #[test]
    fn control_commands_parse_and_send_their_requests() {
        assert_eq!(
            Command::parse(":mode plan"),
            Some(Command::Mode("plan".into()))
        );
        assert!(matches!(Command::parse(":mode"), Some(Command::Usage(_))));
        assert_eq!(
            Command::parse(":model sonnet"),
            Some(Command::Model("sonnet".into()))
        );
        assert_eq!(Command::parse(":diff"), Some(Command::Diff(DiffOf::All)));
        assert_eq!(
            Command::parse(":diff turn"),
            Some(Command::Diff(DiffOf::LastTurn))
        );
        assert_eq!(
            Command::parse(":diff a.rs"),
            Some(Command::Diff(DiffOf::Path("a.rs".into())))
        );
        assert_eq!(Command::parse(":changes"), Some(Command::Changes));
        let mut s = interactive();
        let sent = sends(&s.typed(":mode plan".into()));
        assert_eq!(sent[0]["type"], "session.set");
        assert_eq!(sent[0]["settings"], json!({"permission_mode":"plan"}));
        let sent = sends(&s.typed(":model opus".into()));
        assert_eq!(sent[0]["settings"], json!({"model":"opus"}));
        let sent = sends(&s.typed(":changes".into()));
        assert_eq!(
            sent,
            vec![json!({"type":"files.status","id":"changes","session":"default"})]
        );
        let sent = sends(&s.typed(":diff src/a.rs".into()));
        assert_eq!(
            sent,
            vec![json!({"type":"files.diff","id":"diff","session":"default","path":"src/a.rs"})]
        );
        // No turn changed anything yet.
        assert!(
            matches!(&s.typed(":diff turn".into())[..], [Effect::Msg(m)] if m.contains("no turn"))
        );
        s.on_frame(&event(1, json!({"type":"relay.changes","prompt_id":"P7","files":[{"path":"a","status":"added","insertions":1,"deletions":0}]})));
        let sent = sends(&s.typed(":diff turn".into()));
        assert_eq!(sent[0]["base"], "turn:P7");
        // A refusal is printed with its message.
        let fx = s.on_frame(&json!({"type":"error","id":"set-1","code":"forbidden","message":"bypass\u{1b}[2J is off"}).to_string());
        assert!(
            matches!(&fx[..], [Effect::Msg(m)] if m.contains("forbidden") && m.contains("bypass[2J is off") && !m.contains('\u{1b}')),
            "{fx:?}"
        );
    }

    #[test]
    fn attach_asks_catalog_and_usage_and_a_turn_end_asks_usage_again() {
        let mut s = Session::new("default".into(), false, false, None, None);
        s.on_connected(&auth(), false);
        let sent = sends(&s.on_frame(&attached("default", "attach", 0, 1)));
        let types: Vec<_> = sent.iter().map(|m| m["type"].clone()).collect();
        assert_eq!(
            types,
            vec![json!("session.catalog"), json!("session.usage")]
        );
        s.on_frame(&json!({"type":"session.catalog","id":"catalog","session":"default","stale":false,"models":[],"permission_modes":[],
            "commands":[{"name":"compact\u{1b}[2J","description":"d","argument_hint":"<x>"}]}).to_string());
        assert_eq!(
            s.commands(),
            &[("compact\\u{1b}[2J".to_string(), "<x>".to_string())]
        );
        s.on_frame(&json!({"type":"session.usage","id":"usage","session":"default","context":{"used_tokens":41000,"max_tokens":200000},"cost_usd":1.93,"rate_limit":null}).to_string());
        assert_eq!(
            s.status_line().as_deref(),
            Some("context 41k/200k (20%) · $1.93")
        );
        // A reached usage limit leads the line until its reset.
        s.on_frame(&json!({"type":"session.usage","id":"usage","session":"default","context":{"used_tokens":41000,"max_tokens":200000},"cost_usd":1.93,
            "rate_limit":{"status":"rejected","resets_at":"2026-12-07T15:00:00Z"}}).to_string());
        let at = |t: &str| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap()
        };
        assert_eq!(
            s.status_line_at(at("2026-12-07T14:30:00Z")).as_deref(),
            Some("usage limit · resets 15:00 UTC (in 30m) · context 41k/200k (20%) · $1.93")
        );
        assert_eq!(
            s.status_line_at(at("2026-12-07T15:00:01Z")).as_deref(),
            Some("context 41k/200k (20%) · $1.93")
        );
        s.on_frame(&event(
            1,
            json!({"type":"relay.turn","prompt_id":"P","phase":"started"}),
        ));
        let sent = sends(&s.on_frame(&event(
            2,
            json!({"type":"relay.turn","prompt_id":"P","phase":"ended"}),
        )));
        assert_eq!(
            sent,
            vec![json!({"type":"session.usage","id":"usage","session":"default"})]
        );
        // --prompt jobs stay quiet.
        let (mut j, _) = job_session(None);
        let sent = sends(&j.on_frame(&event(
            8,
            json!({"type":"relay.turn","prompt_id":"Q","phase":"ended"}),
        )));
        assert!(sent.is_empty());
    }

    #[test]
    fn status_and_diff_replies_are_shown_escaped_and_paged() {
        let mut s = interactive();
        let fx = s.on_frame(&json!({"type":"files.status","id":"changes","session":"default","git":true,"branch":"main",
            "files":[{"path":"e\u{202e}vil","status":"modified","insertions":2,"deletions":1}],"truncated":false}).to_string());
        assert!(
            matches!(&fx[..], [Effect::Msg(m)] if m.contains("  M e\\u{202e}vil +2 −1")),
            "{fx:?}"
        );
        let fx = s.on_frame(
            &json!({"type":"files.diff","id":"diff","session":"default","base":"HEAD",
            "diff":"+x\u{1b}]0;t\u{7}\n","binary":false,"truncated":false})
            .to_string(),
        );
        assert_eq!(fx, vec![Effect::Page("+x]0;t\n".into())]);
    }

    fn plan_request() -> Value {
        json!({"type":"control_request","request_id":"r9","request":{"subtype":"can_use_tool","tool_name":"ExitPlanMode",
            "input":{"plan":"# Plan\n\n1. Read the code.","planFilePath":"/p.md"},"tool_use_id":"t","requires_user_interaction":true}})
    }

    fn question_request() -> Value {
        json!({"type":"control_request","request_id":"r8","request":{"subtype":"can_use_tool","tool_name":"AskUserQuestion",
            "input":{"questions":[{"question":"Which color should the button be?","header":"Color","multiSelect":false,
                "options":[{"label":"Red","description":"A warm red"},{"label":"Blue","description":"A calm blue"}]},
              {"question":"Which toppings do you want?","header":"Toppings","multiSelect":true,
                "options":[{"label":"Cheese","description":""},{"label":"Olives","description":""},{"label":"Basil","description":""}]}]},
            "tool_use_id":"t2","requires_user_interaction":true}})
    }

    #[test]
    fn a_plan_is_approved_with_accept_edits_as_allow_then_session_set() {
        let mut s = interactive();
        let fx = s.on_frame(&event(1, plan_request()));
        let shown: String = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Out(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert!(
            shown.contains("plan, for approval") && shown.contains("  Plan\n"),
            "{shown}"
        );
        let ask = s.current_ask().expect("asked");
        assert_eq!(ask.kind, AskKind::Plan);
        let sent = sends(&s.answer("r9", Decision::AllowAcceptEdits));
        assert_eq!(sent[0]["type"], "respond");
        assert_eq!(sent[0]["response"], json!({"behavior":"allow"}));
        assert_eq!(sent[1]["type"], "session.set");
        assert_eq!(
            sent[1]["settings"],
            json!({"permission_mode":"acceptEdits"})
        );
    }

    #[test]
    fn questions_are_answered_with_the_input_plus_answers() {
        let mut s = interactive();
        s.on_frame(&event(1, question_request()));
        let Some(Ask {
            kind: AskKind::Questions(qs),
            ..
        }) = s.current_ask()
        else {
            panic!("no question prompt");
        };
        assert_eq!(qs.len(), 2);
        let sent = sends(&s.answer(
            "r8",
            Decision::Answers(vec![
                controls::Choice::Options(vec![2]),
                controls::Choice::Options(vec![1, 3]),
            ]),
        ));
        let mut expected = question_request()["request"]["input"].clone();
        expected["answers"] = json!({"Which color should the button be?":"Blue","Which toppings do you want?":"Cheese, Basil"});
        assert_eq!(
            sent[0]["response"],
            json!({"behavior":"allow","updatedInput":expected})
        );
    }
}
