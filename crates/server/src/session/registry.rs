//! The sessions of the server: the configured ones and those clients created
//! (docs/protocol.md §4.10), by name, with what `session.list` shows of each.
//!
//! One owner ([`Registry`]) behind one small lock, never held across an await:
//! lookups, name reservations for creates in progress, create keys, and the
//! connections told about changes (`session.changed`). A created session's
//! record is `<data-dir>/created/<uid>/session.json` (its journal and
//! `meta.json` beside it), written atomically and fsynced before a create is
//! answered; closed records are swept after `--closed-retention`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{SessionError, SessionHandle, SessionSettings, SessionShared, SessionStatus};
use crate::session::outbox::Outbox;
use ccrelay_protocol::{
    FrameType, Role, ServerMsg, SessionDetails, SessionSettingsJson, SessionSummary, WorktreeInfo,
};

/// A create key answers with the first create for this long (docs/protocol.md §4.10).
pub const CREATE_KEY_TTL: Duration = Duration::from_secs(600);
/// The record file in a created session's directory.
const RECORD_FILE: &str = "session.json";
/// A configured session's uid file in its directory.
const UID_FILE: &str = "uid";
/// How often closed sessions past their retention are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// `state`/`pending` changes of one session are announced at most this often.
const CHANGE_GAP: Duration = Duration::from_secs(1);

/// How a session came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CreatedBy {
    Config,
    Client,
}

impl CreatedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            CreatedBy::Config => "config",
            CreatedBy::Client => "client",
        }
    }
}

/// A git worktree the server made for a session (recorded as `path`, `branch`,
/// `repository`).
pub use crate::workdirs::worktree::Worktree;

/// The create key of a created session: who used it, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateKey {
    pub fingerprint: String,
    pub key: String,
    pub at_ms: u64,
}

/// What is recorded of a created session (`<data-dir>/created/<uid>/session.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub uid: String,
    pub name: String,
    /// The agent's working directory (the worktree's path for a worktree session).
    pub workdir: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<Worktree>,
    #[serde(default)]
    pub settings: SessionSettingsJson,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
    #[serde(default)]
    pub fork: bool,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<CreateKey>,
    /// The first line of the first prompt (a title fallback), recorded at turn end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_prompt: Option<String>,
    /// The CLI's own title for the conversation, as last read at a turn's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cli_title: Option<String>,
    /// The conversation's cost so far (docs/protocol.md §4.10), recorded at turn end.
    #[serde(default)]
    pub cost_usd: f64,
    /// The key that created it (docs/protocol.md §10: an `auto_continue` asked for
    /// at creation runs only while that key is usable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<crate::session::scheduled::ScheduledBy>,
}

/// A session's line in the registry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub handle: SessionHandle,
    pub uid: Arc<str>,
    pub created: CreatedBy,
    pub created_at: SystemTime,
    pub title: Option<String>,
    pub workdir: PathBuf,
    pub worktree: Option<Worktree>,
    pub settings: SessionSettingsJson,
    /// Its directory in the data dir (journal, meta.json, the record).
    pub dir: PathBuf,
    /// A close is under way (a second one is refused).
    pub closing: bool,
    /// The record, for created sessions (rewritten on rename, at turn ends and on close).
    pub record: Option<SessionRecord>,
    /// The cost recorded before this server start (the actor counts from 0).
    pub cost_before: f64,
    /// The first prompt's line as recorded before this server start.
    pub first_prompt: Option<String>,
    /// The CLI's own title for the conversation (read at turn ends).
    pub cli_title: Option<String>,
}

impl Entry {
    pub fn name(&self) -> &str {
        &self.handle.name
    }

    /// The session's `session.list` entry for a connection of `role`
    /// (docs/protocol.md §4.1): `workdir`, `worktree` and `conversation` for owners only.
    pub fn summary(&self, role: Role) -> SessionSummary {
        let status = self.handle.status();
        // docs/protocol.md §4.10: a rename, else the CLI's title, else the first
        // prompt's line, else the workdir's base name.
        let title = self
            .title
            .clone()
            .or_else(|| self.cli_title.clone())
            .or_else(|| status.first_prompt.as_deref().map(str::to_string))
            .or_else(|| self.first_prompt.clone())
            .unwrap_or_else(|| base_name(&self.workdir));
        let owner = role == Role::Owner;
        SessionSummary {
            session: self.name().to_string(),
            state: status.state.as_str().into(),
            head: Some(status.head),
            clients: Some(status.clients),
            details: Some(Box::new(SessionDetails {
                uid: self.uid.to_string(),
                title,
                created: self.created.as_str().into(),
                created_at: rfc3339(self.created_at),
                last_activity: rfc3339(status.last_activity),
                cost_usd: self.cost_before + status.cost_usd,
                settings: (*status.settings).clone(),
                closable: self.created == CreatedBy::Client,
                pending: status.pending_list.to_vec(),
                workdir: owner.then(|| self.workdir.display().to_string()),
                worktree: self.worktree.as_ref().filter(|_| owner).map(worktree_info),
                conversation: status
                    .conversation
                    .as_deref()
                    .filter(|_| owner)
                    .map(str::to_string),
            })),
        }
    }
}

/// A worktree as the wire shows it.
pub fn worktree_info(worktree: &Worktree) -> WorktreeInfo {
    WorktreeInfo {
        path: worktree.path.display().to_string(),
        branch: worktree.branch.clone(),
        repository: worktree.repository.display().to_string(),
    }
}

/// Why a name cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    #[error("a session named {0:?} exists (names are compared ignoring case)")]
    Exists(String),
    #[error("{0} sessions are open; that is --max-sessions")]
    Full(usize),
}

/// A create key already used.
#[derive(Debug, Clone)]
pub enum KeyUse {
    /// A create with this key is still running.
    InProgress,
    /// Answered: the first create's `session.created` (without `id`).
    Done(ServerMsg),
}

/// A name held for a create in progress; dropping it frees the name.
#[derive(Debug)]
pub struct Reservation {
    registry: Arc<Registry>,
    pub name: String,
    key: Option<(String, String)>,
    finished: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut inner = self.registry.lock();
        inner
            .reserved
            .retain(|n| !n.eq_ignore_ascii_case(&self.name));
        if let Some(k) = &self.key
            && matches!(inner.keys.get(k), Some((KeyUse::InProgress, _)))
        {
            inner.keys.remove(k);
        }
    }
}

/// A connection told about session changes, and its role.
#[derive(Debug)]
struct Watcher {
    role: Role,
    outbox: Outbox,
}

#[derive(Debug, Default)]
struct Inner {
    /// Open sessions, oldest first.
    entries: Vec<Entry>,
    /// Names held by creates in progress.
    reserved: Vec<String>,
    /// Create keys by (fingerprint, key), with when they were used.
    keys: HashMap<(String, String), (KeyUse, SystemTime)>,
    watchers: HashMap<u64, Watcher>,
}

/// What created sessions start with besides their own name, workdir and settings.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub data_dir: PathBuf,
    pub max_sessions: usize,
    pub closed_retention: Duration,
    /// The settings of a created session before its own (the `default` session's).
    pub template: SessionSettings,
    /// The Claude Code configuration directory (`$CLAUDE_CONFIG_DIR`, else
    /// `~/.claude`): where the CLI's transcripts are (docs/protocol.md §4.10).
    pub claude_config_dir: Option<PathBuf>,
}

/// Every session of the server.
#[derive(Debug)]
pub struct Registry {
    config: RegistryConfig,
    shared: SessionShared,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    inner: Mutex<Inner>,
    /// Held while a record is written at a turn's end or a close, so a late
    /// turn-end write never undoes a close (never taken while `inner` is held).
    record_writes: Mutex<()>,
}

impl Registry {
    /// Open every configured session, then restore the created sessions recorded
    /// in the data dir and sweep closed ones past their retention (blocking I/O:
    /// run it off the async workers).
    pub fn start(
        configured: Vec<SessionSettings>,
        config: RegistryConfig,
        shared: SessionShared,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Arc<Registry>, SessionError> {
        let registry = Arc::new(Registry {
            config,
            shared,
            shutdown,
            tracker: tracker.clone(),
            inner: Mutex::new(Inner::default()),
            record_writes: Mutex::new(()),
        });
        for settings in configured {
            let uid = configured_uid(&settings.dir).map_err(|source| SessionError::Io {
                session: settings.name.clone(),
                source,
            })?;
            let title = std::fs::read_to_string(settings.dir.join("title"))
                .ok()
                .filter(|t| ccrelay_protocol::valid_session_title(t).is_ok());
            let entry = Entry {
                uid: Arc::from(uid),
                created: CreatedBy::Config,
                created_at: SystemTime::now(),
                title,
                workdir: settings.workdir.clone(),
                worktree: None,
                settings: SessionSettingsJson::default(),
                dir: settings.dir.clone(),
                closing: false,
                record: None,
                cost_before: 0.0,
                first_prompt: None,
                cli_title: None,
                handle: registry.spawn_actor(settings)?,
            };
            registry.lock().entries.push(entry);
        }
        registry.sweep();
        for record in registry.recorded() {
            if let Err(e) = registry.restore(record) {
                tracing::error!(error = %e, "cannot restore a created session");
            }
        }
        Ok(registry)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn_actor(
        self: &Arc<Self>,
        settings: SessionSettings,
    ) -> Result<SessionHandle, SessionError> {
        let handle = super::actor::spawn(
            settings,
            self.shared.clone(),
            self.shutdown.clone(),
            &self.tracker,
        )?;
        self.tracker
            .spawn(watch_changes(self.clone(), handle.clone()));
        Ok(handle)
    }

    /// `<data-dir>/created`.
    fn created_dir(&self) -> PathBuf {
        self.config.data_dir.join("created")
    }

    pub fn get(&self, name: &str) -> Option<SessionHandle> {
        self.lock()
            .entries
            .iter()
            .find(|e| e.name() == name)
            .map(|e| e.handle.clone())
    }

    pub fn entry(&self, name: &str) -> Option<Entry> {
        self.lock()
            .entries
            .iter()
            .find(|e| e.name() == name)
            .cloned()
    }

    /// Every open session, oldest first.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().entries.clone()
    }

    /// Whether the open session `name` has this uid.
    pub fn has_uid(&self, name: &str, uid: &str) -> bool {
        self.lock()
            .entries
            .iter()
            .any(|e| e.name() == name && &*e.uid == uid)
    }

    /// The configured sessions (readiness judges by them only, docs/protocol.md §4).
    pub fn configured(&self) -> Vec<SessionHandle> {
        self.lock()
            .entries
            .iter()
            .filter(|e| e.created == CreatedBy::Config)
            .map(|e| e.handle.clone())
            .collect()
    }

    /// The open session running `conversation`, if any.
    pub fn conversation_in_use(&self, conversation: &str) -> Option<String> {
        self.lock()
            .entries
            .iter()
            .find(|e| {
                e.handle.status().conversation.as_deref() == Some(conversation)
                    || e.record.as_ref().and_then(|r| r.resume.as_deref()) == Some(conversation)
                        && e.handle.status().conversation.is_none()
            })
            .map(|e| e.name().to_string())
    }

    /// The create key's earlier use by `fingerprint` within [`CREATE_KEY_TTL`].
    pub fn key_used(&self, fingerprint: &str, key: &str) -> Option<KeyUse> {
        let mut inner = self.lock();
        let now = SystemTime::now();
        inner
            .keys
            .retain(|_, (_, at)| now.duration_since(*at).unwrap_or_default() < CREATE_KEY_TTL);
        inner
            .keys
            .get(&(fingerprint.to_string(), key.to_string()))
            .map(|(u, _)| u.clone())
    }

    /// Hold `name` (or, without one, a name made from `base`) for a create:
    /// unique ignoring case among open sessions and creates in progress, within
    /// `--max-sessions`.
    pub fn reserve(
        self: &Arc<Self>,
        name: Option<&str>,
        base: &str,
        key: Option<(String, String)>,
    ) -> Result<Reservation, ReserveError> {
        let mut inner = self.lock();
        if inner.entries.len() + inner.reserved.len() >= self.config.max_sessions {
            return Err(ReserveError::Full(self.config.max_sessions));
        }
        let taken = |inner: &Inner, n: &str| {
            inner
                .entries
                .iter()
                .any(|e| e.name().eq_ignore_ascii_case(n))
                || inner.reserved.iter().any(|r| r.eq_ignore_ascii_case(n))
        };
        let name = match name {
            Some(n) if taken(&inner, n) => return Err(ReserveError::Exists(n.to_string())),
            Some(n) => n.to_string(),
            None => {
                let stem = name_from(base);
                let mut candidate = stem.clone();
                let mut n = 2u32;
                while taken(&inner, &candidate) {
                    let suffix = format!("-{n}");
                    let keep = 64 - suffix.len();
                    candidate = format!("{}{suffix}", truncate_ascii(&stem, keep));
                    n += 1;
                }
                candidate
            }
        };
        inner.reserved.push(name.clone());
        if let Some(k) = &key {
            inner
                .keys
                .insert(k.clone(), (KeyUse::InProgress, SystemTime::now()));
        }
        Ok(Reservation {
            registry: self.clone(),
            name,
            key,
            finished: false,
        })
    }

    /// Record a created session (durably) and start it. Blocking I/O: call it
    /// from `spawn_blocking`. `created` is the `session.created` body remembered
    /// for a retry with the same key.
    pub fn create(
        self: &Arc<Self>,
        mut reservation: Reservation,
        record: SessionRecord,
        created: ServerMsg,
    ) -> Result<Entry, SessionError> {
        let dir = self.created_dir().join(&record.uid);
        let io = |source| SessionError::Io {
            session: record.name.clone(),
            source,
        };
        crate::datadir::create_dir_all(&dir).map_err(io)?;
        write_record(&dir, &record).map_err(io)?;
        let entry = self.open(record, dir)?;
        let mut inner = self.lock();
        inner
            .reserved
            .retain(|n| !n.eq_ignore_ascii_case(&reservation.name));
        if let Some(k) = reservation.key.take() {
            inner
                .keys
                .insert(k, (KeyUse::Done(created), SystemTime::now()));
        }
        reservation.finished = true;
        inner.entries.push(entry.clone());
        Ok(entry)
    }

    /// The settings and actor of a recorded session.
    fn open(self: &Arc<Self>, record: SessionRecord, dir: PathBuf) -> Result<Entry, SessionError> {
        let mut settings = self.config.template.clone();
        settings.name = record.name.clone();
        settings.workdir = record.workdir.clone();
        settings.dir = dir.clone();
        settings.resume = record.resume.clone();
        settings.fork = record.fork;
        // Created sessions sleep until their first prompt, after a create and after
        // a restart (docs/protocol.md §4.11).
        settings.start_agent = false;
        // The actor passes them as flags at every start (and keeps later changes).
        settings.initial_settings = record.settings.clone();
        settings.created_by = record.created_by.clone();
        let handle = self.spawn_actor(settings)?;
        Ok(Entry {
            handle,
            uid: Arc::from(record.uid.as_str()),
            created: CreatedBy::Client,
            created_at: from_ms(record.created_at_ms),
            title: record.title.clone(),
            workdir: record.workdir.clone(),
            worktree: record.worktree.clone(),
            settings: record.settings.clone(),
            dir,
            closing: false,
            cost_before: record.cost_usd,
            first_prompt: record.first_prompt.clone(),
            cli_title: record.cli_title.clone(),
            record: Some(record),
        })
    }

    /// Restore one recorded open session at start (its name made unique if a
    /// configured session took it meanwhile).
    fn restore(self: &Arc<Self>, mut record: SessionRecord) -> Result<(), SessionError> {
        let dir = self.created_dir().join(&record.uid);
        if let Some(key) = &record.key {
            let created = ServerMsg::SessionCreated {
                id: None,
                session: record.name.clone(),
                uid: record.uid.clone(),
                workdir: record.workdir.display().to_string(),
                worktree: record.worktree.as_ref().map(worktree_info),
                duplicate: None,
            };
            self.lock().keys.insert(
                (key.fingerprint.clone(), key.key.clone()),
                (KeyUse::Done(created), from_ms(key.at_ms)),
            );
        }
        if record.closed_at_ms.is_some() {
            return Ok(());
        }
        let clash = self
            .lock()
            .entries
            .iter()
            .any(|e| e.name().eq_ignore_ascii_case(&record.name));
        if clash {
            let old = record.name.clone();
            let reservation = match self.reserve(None, &old, None) {
                Ok(r) => r,
                Err(_) => {
                    tracing::error!(session = %old, "no free name to restore a created session under");
                    return Ok(());
                }
            };
            record.name = reservation.name.clone();
            tracing::warn!(from = %old, to = %record.name, "a created session's name is taken by a configured one: renamed");
            if let Err(e) = write_record(&dir, &record) {
                tracing::warn!(error = %e, "cannot record the new name");
            }
        }
        let name = record.name.clone();
        let entry = self.open(record, dir)?;
        let mut inner = self.lock();
        inner.reserved.retain(|n| !n.eq_ignore_ascii_case(&name));
        inner.entries.push(entry);
        tracing::info!(session = %name, "restored a created session");
        Ok(())
    }

    /// Every readable record under `<data-dir>/created`, oldest first.
    fn recorded(&self) -> Vec<SessionRecord> {
        let Ok(dirs) = std::fs::read_dir(self.created_dir()) else {
            return Vec::new();
        };
        let mut records: Vec<SessionRecord> = dirs
            .flatten()
            .filter_map(|d| {
                let path = d.path().join(RECORD_FILE);
                let text = std::fs::read_to_string(&path).ok()?;
                match serde_json::from_str::<SessionRecord>(&text) {
                    Ok(r) if d.file_name().to_str() == Some(r.uid.as_str()) => Some(r),
                    Ok(_) | Err(_) => {
                        tracing::warn!(path = %path.display(), "not a session record; ignored");
                        None
                    }
                }
            })
            .collect();
        records.sort_by_key(|r| r.created_at_ms);
        records
    }

    /// Mark `name` as closing; its entry, or why not.
    pub fn begin_close(&self, name: &str) -> Result<Entry, CloseRefused> {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.iter_mut().find(|e| e.name() == name) else {
            return Err(CloseRefused::NoSuchSession);
        };
        if entry.created == CreatedBy::Config {
            return Err(CloseRefused::Configured);
        }
        if entry.closing {
            return Err(CloseRefused::Closing);
        }
        entry.closing = true;
        Ok(entry.clone())
    }

    /// A close that was refused before the actor was asked: open again.
    pub fn abandon_close(&self, uid: &str) {
        if let Some(e) = self.lock().entries.iter_mut().find(|e| &*e.uid == uid) {
            e.closing = false;
        }
    }

    /// The actor has closed: record it (blocking I/O) and free the name. Returns
    /// the final entry (for `session.changed`).
    pub fn finish_close(&self, uid: &str) -> Option<Entry> {
        let _writing = self.record_writes.lock().unwrap_or_else(|e| e.into_inner());
        let entry = {
            let mut inner = self.lock();
            let at = inner.entries.iter().position(|e| &*e.uid == uid)?;
            inner.entries.remove(at)
        };
        if let Some(mut record) = entry.record.clone() {
            record.closed_at_ms = Some(to_ms(SystemTime::now()));
            if let Err(e) = write_record(&entry.dir, &record) {
                tracing::error!(session = %entry.name(), error = %e, "cannot record that the session was closed");
            }
        }
        Some(entry)
    }

    /// Set a session's title (persisted for created sessions; blocking I/O).
    pub fn rename(&self, name: &str, title: &str) -> Option<Entry> {
        let (entry, record) = {
            let mut inner = self.lock();
            let entry = inner.entries.iter_mut().find(|e| e.name() == name)?;
            entry.title = Some(title.to_string());
            if let Some(r) = &mut entry.record {
                r.title = Some(title.to_string());
            }
            (entry.clone(), entry.record.clone())
        };
        if let Some(record) = record
            && let Err(e) = write_record(&entry.dir, &record)
        {
            tracing::error!(session = %name, error = %e, "cannot record the title");
        }
        if entry.created == CreatedBy::Config
            && let Err(e) = crate::datadir::write_atomic(&entry.dir.join("title"), title)
        {
            tracing::error!(session = %name, error = %e, "cannot record the title");
        }
        Some(entry)
    }

    /// A session's settings changed (docs/protocol.md §10): kept in its entry and,
    /// for a created session, in its record (blocking I/O). The entry to announce.
    fn settings_changed(&self, name: &str, settings: &SessionSettingsJson) -> Option<Entry> {
        let (entry, record) = {
            let mut inner = self.lock();
            let entry = inner
                .entries
                .iter_mut()
                .find(|e| e.name() == name && !e.closing)?;
            entry.settings = settings.clone();
            if let Some(r) = &mut entry.record {
                r.settings = settings.clone();
            }
            (entry.clone(), entry.record.is_some())
        };
        if record {
            let _writing = self.record_writes.lock().unwrap_or_else(|e| e.into_inner());
            // The record as it is now; none when the session was closed meanwhile
            // (the close's record stands).
            let current = self.entry_by_uid(&entry.uid).and_then(|e| e.record);
            if let Some(record) = current
                && let Err(e) = write_record(&entry.dir, &record)
            {
                tracing::error!(session = %name, error = %e, "cannot record the settings");
            }
        }
        Some(entry)
    }

    /// Remove closed sessions' directories past `--closed-retention` (blocking I/O).
    pub fn sweep(&self) {
        let now = to_ms(SystemTime::now());
        let keep_ms = self.config.closed_retention.as_millis() as u64;
        for record in self.recorded() {
            let Some(closed) = record.closed_at_ms else {
                continue;
            };
            if now.saturating_sub(closed) < keep_ms {
                continue;
            }
            let dir = self.created_dir().join(&record.uid);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(session = %record.name, uid = %record.uid, "removed a closed session's journal")
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a closed session")
                }
            }
        }
    }

    /// Sweep every [`SWEEP_EVERY`] until shutdown.
    pub async fn sweep_periodically(self: Arc<Self>) {
        let mut every = tokio::time::interval(
            SWEEP_EVERY.min(self.config.closed_retention.max(Duration::from_secs(60))),
        );
        every.tick().await;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let registry = self.clone();
            let _ = tokio::task::spawn_blocking(move || registry.sweep()).await;
        }
    }

    /// Tell `conn_id` about session changes until [`Registry::unwatch`].
    pub fn watch(&self, conn_id: u64, role: Role, outbox: Outbox) {
        self.lock()
            .watchers
            .insert(conn_id, Watcher { role, outbox });
    }

    pub fn unwatch(&self, conn_id: u64) {
        self.lock().watchers.remove(&conn_id);
    }

    /// Send `session.changed` for `entry` to every watching connection: the
    /// frame is serialized once per role and shared; a full outbox drops that
    /// connection's copy (it is being closed as lagging).
    pub fn announce(&self, entry: &Entry, change: &str) {
        let frame = |role| {
            crate::ws::FrameText::from(
                ServerMsg::SessionChanged {
                    session: entry.name().to_string(),
                    uid: entry.uid.to_string(),
                    change: change.to_string().into(),
                    entry: entry.summary(role),
                }
                .to_json(),
            )
        };
        let owner = frame(Role::Owner);
        let viewer = frame(Role::Viewer);
        let inner = self.lock();
        for w in inner.watchers.values() {
            let text = if w.role == Role::Owner {
                &owner
            } else {
                &viewer
            };
            let _ = w.outbox.frame(FrameType::SessionChanged, text.clone());
        }
    }

    /// The entry of the session with this uid, if open.
    fn entry_by_uid(&self, uid: &str) -> Option<Entry> {
        self.lock().entries.iter().find(|e| &*e.uid == uid).cloned()
    }
}

/// Why a session cannot be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseRefused {
    NoSuchSession,
    Configured,
    Closing,
}

/// Announce a session's `state` and `pending` changes: at most one a
/// [`CHANGE_GAP`], the latest always delivered; and when a turn has ended,
/// record what it changed ([`Registry::turn_ended`]). Ends with the actor.
async fn watch_changes(registry: Arc<Registry>, handle: SessionHandle) {
    let mut status = handle.watch();
    let key = |s: &SessionStatus| (s.state, s.pending_list.clone());
    let mut last = key(&status.borrow());
    let mut last_settings = status.borrow().settings.clone();
    let mut uid: Option<Arc<str>> = None;
    let mut recorded = TurnOutcome::of(&status.borrow());
    loop {
        if status.changed().await.is_err() {
            return;
        }
        let snapshot = status.borrow_and_update().clone();
        if !Arc::ptr_eq(&snapshot.settings, &last_settings) {
            last_settings = snapshot.settings.clone();
            let settings = snapshot.settings.clone();
            let name = handle.name.clone();
            let registry = registry.clone();
            // The record is rewritten off the async workers; then announced.
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(entry) = registry.settings_changed(&name, &settings) {
                    registry.announce(&entry, "settings");
                }
            })
            .await;
        }
        if uid.is_none() {
            uid = registry
                .lock()
                .entries
                .iter()
                .find(|e| Arc::ptr_eq(&e.handle.name, &handle.name))
                .map(|e| e.uid.clone());
        }
        let outcome = TurnOutcome::of(&snapshot);
        if let Some(u) = uid.clone()
            && outcome.between_turns
            && outcome != recorded
        {
            let (writer, seen) = (registry.clone(), outcome.clone());
            let renamed = tokio::task::spawn_blocking(move || writer.turn_ended(&u, &seen))
                .await
                .ok()
                .flatten();
            recorded = outcome;
            if let Some(entry) = renamed {
                registry.announce(&entry, "renamed");
            }
        }
        let now = key(&snapshot);
        if now.0 == last.0 && Arc::ptr_eq(&now.1, &last.1) {
            continue;
        }
        let Some(entry) = uid.as_deref().and_then(|u| registry.entry_by_uid(u)) else {
            // Not registered yet (starting) or closed: nothing to announce.
            last = now;
            continue;
        };
        let change = if now.0 != last.0 { "state" } else { "pending" };
        registry.announce(&entry, change);
        last = now;
        // The gap: later changes wait, and the latest is sent after it.
        tokio::select! {
            _ = registry.shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHANGE_GAP) => {}
        }
    }
}

/// What a turn's end may have changed in a session's record.
#[derive(Debug, Clone, PartialEq)]
struct TurnOutcome {
    /// No turn is running (nor starting): the values below are a turn's result.
    between_turns: bool,
    cost_usd: f64,
    first_prompt: Option<Arc<str>>,
    conversation: Option<Arc<str>>,
}

impl TurnOutcome {
    fn of(s: &SessionStatus) -> TurnOutcome {
        use super::SessionState as S;
        TurnOutcome {
            between_turns: matches!(s.state, S::Idle | S::Asleep | S::Failed | S::Stopped),
            cost_usd: s.cost_usd,
            first_prompt: s.first_prompt.clone(),
            conversation: s.conversation.clone(),
        }
    }
}

impl Registry {
    /// The Claude Code configuration directory, if the server has one.
    pub fn claude_config_dir(&self) -> Option<&Path> {
        self.config.claude_config_dir.as_deref()
    }

    /// Blocking I/O. A turn of session `uid` ended with `outcome`: read the CLI's
    /// title for its conversation (bounded) and record the first prompt's line,
    /// the cost and that title for a created session. Returns the entry when the
    /// CLI's title changed (to announce).
    fn turn_ended(&self, uid: &str, outcome: &TurnOutcome) -> Option<Entry> {
        let workdir = self.entry_by_uid(uid)?.workdir;
        let cli_title = match (self.claude_config_dir(), outcome.conversation.as_deref()) {
            (Some(config), Some(conversation)) => {
                crate::workdirs::conversations::cli_title_of(config, &workdir, conversation)
            }
            _ => None,
        };
        let (entry, record, title_changed) = {
            let mut inner = self.lock();
            let entry = inner.entries.iter_mut().find(|e| &*e.uid == uid)?;
            let title_changed = cli_title.is_some() && entry.cli_title != cli_title;
            if cli_title.is_some() {
                entry.cli_title = cli_title.clone();
            }
            let cost = entry.cost_before + outcome.cost_usd;
            let first_prompt = outcome.first_prompt.as_deref().map(str::to_string);
            let record = entry.record.as_mut().and_then(|r| {
                let before = r.clone();
                if r.first_prompt.is_none() {
                    r.first_prompt = first_prompt;
                }
                r.cost_usd = cost;
                if cli_title.is_some() {
                    r.cli_title = cli_title;
                }
                (*r != before).then(|| r.clone())
            });
            (entry.clone(), record, title_changed)
        };
        if record.is_some() {
            let _writing = self.record_writes.lock().unwrap_or_else(|e| e.into_inner());
            // The record as it is now (a rename may have come meanwhile); none when
            // the session was closed meanwhile: the close's record stands.
            let current = self.entry_by_uid(uid).and_then(|e| e.record);
            if let Some(record) = current
                && let Err(e) = write_record(&entry.dir, &record)
            {
                tracing::error!(session = %entry.name(), error = %e, "cannot record the turn's title and cost");
            }
        }
        title_changed.then_some(entry)
    }
}

/// The agent flags of a session's settings (docs/protocol.md §10): only values
/// already validated by `session.create`.
pub fn agent_flags(settings: &SessionSettingsJson) -> Vec<String> {
    let mut flags = vec![
        "--permission-mode".to_string(),
        settings.permission_mode.clone(),
    ];
    if let Some(model) = &settings.model {
        flags.extend(["--model".to_string(), model.clone()]);
    }
    if let Some(effort) = &settings.effort {
        flags.extend(["--effort".to_string(), effort.clone()]);
    }
    flags
}

/// Write a record: temp file, fsync, rename, fsync of the directory.
fn write_record(dir: &Path, record: &SessionRecord) -> std::io::Result<()> {
    let body = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    crate::datadir::write_atomic(&dir.join(RECORD_FILE), body)?;
    std::fs::File::open(dir)?.sync_all()
}

/// A configured session's uid: kept in its directory so it survives restarts.
fn configured_uid(dir: &Path) -> std::io::Result<String> {
    crate::datadir::create_dir_all(dir)?;
    let path = dir.join(UID_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let uid = text.trim();
        if valid_uid(uid) {
            return Ok(uid.to_string());
        }
    }
    let uid = new_uid();
    crate::datadir::write_atomic(&path, &uid)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(uid)
}

/// A new session uid: 128 random bits as 32 lowercase hex digits.
pub fn new_uid() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn valid_uid(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// A valid name from a directory's base name: other characters become `-`,
/// leading dots go; `session` when nothing is left.
fn name_from(base: &str) -> String {
    let mapped: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = truncate_ascii(mapped.trim_start_matches('.'), 60);
    if trimmed.is_empty() {
        "session".into()
    } else {
        trimmed.to_string()
    }
}

fn truncate_ascii(s: &str, max: usize) -> &str {
    &s[..s.len().min(max)]
}

fn base_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

pub fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn from_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// RFC 3339 with seconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_valid() {
        assert_eq!(name_from("my project"), "my-project");
        assert_eq!(name_from("..hidden"), "hidden");
        assert_eq!(name_from(""), "session");
        for base in ["é".repeat(80), ".".into(), "..".into(), "x".repeat(200)] {
            let name = name_from(&base);
            assert!(
                ccrelay_protocol::valid_session_name(&name).is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn uids_are_random_hex() {
        let a = new_uid();
        assert!(valid_uid(&a), "{a}");
        assert_ne!(a, new_uid());
    }

    #[test]
    fn flags_come_from_settings() {
        let settings = SessionSettingsJson {
            permission_mode: "plan".into(),
            model: Some("sonnet".into()),
            ..SessionSettingsJson::default()
        };
        assert_eq!(
            agent_flags(&settings),
            ["--permission-mode", "plan", "--model", "sonnet"]
        );
    }
}
