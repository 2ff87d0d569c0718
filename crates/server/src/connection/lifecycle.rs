//! Creating, closing and renaming sessions, and the directory picker
//! (docs/protocol.md §4.10): checking what an owner asked for, the blocking
//! file-system work off the network threads, and the replies and announcements.
//! The registry (`session::registry`) holds the sessions; `workdirs` says which
//! directories a client may name.

use super::Connection;
use crate::session::SessionCmd;
use crate::session::registry::{self, CloseRefused, KeyUse, ReserveError, SessionRecord, Worktree};
use crate::session::scheduled::ScheduledBy;
use crate::workdirs::{WorkdirError, git, worktree};
use ccrelay_protocol::{
    ConversationEntry, DirEntry, ErrorCode, FrameType, RequestId, ServerMsg, SessionCreate,
    SessionSettingsJson, SettingsRequest, WorktreeRequest,
};
use std::path::Path;

/// `dirs.list` answers at most this many directories (docs/protocol.md §4.10).
const MAX_DIRS: usize = 2000;
/// Longest `model` a session may ask for (the CLI takes any string).
const MAX_MODEL_CHARS: usize = 128;
/// Largest `thinking` budget accepted.
const MAX_THINKING_TOKENS: u64 = 1_000_000;
/// Permission modes a created session may start in; the modes that let tools
/// run without a person's answer are refused (`forbidden`, docs/protocol.md §10).
const MODES: &[&str] = &["default", "acceptEdits", "plan"];
const UNATTENDED_MODES: &[&str] = &["bypassPermissions", "auto", "dontAsk"];

impl Connection {
    pub(super) async fn on_session_create(
        &mut self,
        id: Option<RequestId>,
        create: Box<SessionCreate>,
    ) {
        if !self.owner_only(&id, "session.create") {
            return;
        }
        let Some((_, client)) = &self.identity else {
            return;
        };
        let client = client.clone();
        let SessionCreate {
            workdir,
            name,
            worktree,
            resume,
            fork,
            settings,
            key,
        } = *create;
        let settings = match check_settings(settings.unwrap_or_default()) {
            Ok(s) => s,
            Err((code, why)) => return self.error(id, code, why),
        };
        if worktree.is_some() && resume.is_some() {
            // Not shown that the CLI finds a conversation from another directory
            // (docs/protocol.md §4.10): refused rather than resumed wrongly.
            return self.error(
                id,
                ErrorCode::BadMessage,
                "`resume` together with `worktree` is not supported: resume in the repository's own directory",
            );
        }
        if let Some(resume) = &resume
            && let Err(e) = crate::workdirs::conversations::validate_conversation_id(resume)
        {
            return self.workdir_error(id, e);
        }
        let registry = self.shared.sessions.clone();
        let fingerprint = client.info.fingerprint.clone();
        if let Some(key) = &key
            && let Some(used) = registry.key_used(&fingerprint, key)
        {
            return match used {
                KeyUse::Done(ServerMsg::SessionCreated {
                    session,
                    uid,
                    workdir,
                    worktree,
                    ..
                }) => self.reply(
                    FrameType::SessionCreated,
                    ServerMsg::SessionCreated {
                        id,
                        session,
                        uid,
                        workdir,
                        worktree,
                        duplicate: Some(true),
                    },
                ),
                KeyUse::Done(_) | KeyUse::InProgress => self.error(
                    id,
                    ErrorCode::Overloaded,
                    "a create with this key is still in progress; retry in a moment",
                ),
            };
        }
        let roots = self.shared.roots.clone();
        let dir = match tokio::task::spawn_blocking(move || roots.resolve_dir(&workdir)).await {
            Ok(Ok(dir)) => dir,
            Ok(Err(e)) => return self.workdir_error(id, e),
            Err(e) => {
                tracing::error!(error = %e, "resolving a workdir failed");
                return self.error(
                    id,
                    ErrorCode::Internal,
                    "the directory could not be checked",
                );
            }
        };
        if let Some(resume) = resume.clone() {
            let config_dir = registry.claude_config_dir().map(Path::to_path_buf);
            let workdir = dir.clone();
            let found = tokio::task::spawn_blocking(move || match config_dir {
                Some(config_dir) => {
                    crate::workdirs::conversations::require(&config_dir, &workdir, &resume)
                }
                None => Err(WorkdirError::NoSuchConversation(resume)),
            })
            .await;
            match found {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return self.workdir_error(id, e),
                Err(e) => {
                    tracing::error!(error = %e, "looking for a conversation failed");
                    return self.error(
                        id,
                        ErrorCode::Internal,
                        "the conversation could not be looked for",
                    );
                }
            }
        }
        if let Some(resume) = &resume
            && !crate::agent::process::valid_conversation_id(resume)
        {
            return self.error(
                id,
                ErrorCode::NoSuchConversation,
                "`resume` is not a conversation id the agent takes (a UUID)",
            );
        }
        if let Some(resume) = &resume
            && let Some(by) = registry.conversation_in_use(resume)
        {
            return self.error(
                id,
                ErrorCode::ConversationInUse,
                format!("session {by} is running that conversation"),
            );
        }
        let base = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let reservation = match registry.reserve(
            name.as_deref(),
            &base,
            key.clone().map(|k| (fingerprint.clone(), k)),
        ) {
            Ok(r) => r,
            Err(e @ ReserveError::Exists(_)) => {
                return self.error(id, ErrorCode::SessionExists, e.to_string());
            }
            Err(e @ ReserveError::Full(_)) => {
                return self.error(id, ErrorCode::Overloaded, e.to_string());
            }
        };
        let (workdir, worktree) = match worktree {
            None => (dir, None),
            Some(asked) => match self.make_worktree(&dir, &reservation.name, asked).await {
                Ok(wt) => (wt.path.clone(), Some(wt)),
                Err(e) => return self.workdir_error(id, e),
            },
        };
        let now = std::time::SystemTime::now();
        let record = SessionRecord {
            uid: registry::new_uid(),
            name: reservation.name.clone(),
            workdir: workdir.clone(),
            worktree: worktree.clone(),
            settings,
            title: None,
            resume,
            fork,
            created_at_ms: registry::to_ms(now),
            closed_at_ms: None,
            key: key.map(|key| registry::CreateKey {
                fingerprint,
                key,
                at_ms: registry::to_ms(now),
            }),
            first_prompt: None,
            cli_title: None,
            cost_usd: 0.0,
            created_by: Some(ScheduledBy::of(&client.info)),
        };
        let created = ServerMsg::SessionCreated {
            id: None,
            session: record.name.clone(),
            uid: record.uid.clone(),
            workdir: workdir.display().to_string(),
            worktree: worktree.as_ref().map(registry::worktree_info),
            duplicate: None,
        };
        let reply = created.clone();
        let opened = {
            let registry = registry.clone();
            tokio::task::spawn_blocking(move || registry.create(reservation, record, created)).await
        };
        let entry = match opened {
            Ok(Ok(entry)) => entry,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot create a session");
                if let Some(wt) = &worktree {
                    crate::workdirs::worktree::discard(wt).await;
                }
                return self.error(id, ErrorCode::Internal, "the session could not be created");
            }
            Err(e) => {
                tracing::error!(error = %e, "creating a session failed");
                if let Some(wt) = &worktree {
                    crate::workdirs::worktree::discard(wt).await;
                }
                return self.error(id, ErrorCode::Internal, "the session could not be created");
            }
        };
        if let ServerMsg::SessionCreated {
            session,
            uid,
            workdir,
            worktree,
            ..
        } = reply
        {
            self.reply(
                FrameType::SessionCreated,
                ServerMsg::SessionCreated {
                    id,
                    session,
                    uid,
                    workdir,
                    worktree,
                    duplicate: None,
                },
            );
        }
        tracing::info!(session = %entry.name(), uid = %entry.uid, workdir = %entry.workdir.display(), "session created");
        self.shared.sessions.announce(&entry, "created");
        self.shared.audit.record(
            "session_created",
            entry.name(),
            serde_json::json!({
                "uid": &*entry.uid,
                "workdir": entry.workdir.display().to_string(),
                "worktree": entry.worktree.as_ref().map(registry::worktree_info),
                "client_id": client.info.client_id,
                "fingerprint": client.info.fingerprint,
                "device": client.info.device,
            }),
        );
    }

    pub(super) async fn on_session_close(
        &mut self,
        id: Option<RequestId>,
        session: String,
        remove_worktree: bool,
    ) {
        if !self.owner_only(&id, "session.close") {
            return;
        }
        let Some((_, client)) = &self.identity else {
            return;
        };
        let by = client.info.clone();
        let registry = self.shared.sessions.clone();
        let entry = match registry.begin_close(&session) {
            Ok(entry) => entry,
            Err(CloseRefused::NoSuchSession) => {
                return self.error(
                    id,
                    ErrorCode::NoSuchSession,
                    format!("no session named {session:?}"),
                );
            }
            Err(CloseRefused::Configured) => {
                return self.error(
                    id,
                    ErrorCode::Forbidden,
                    format!("session {session} is configured; it cannot be closed"),
                );
            }
            Err(CloseRefused::Closing) => {
                return self.error(
                    id,
                    ErrorCode::NoSuchSession,
                    format!("session {session} is being closed"),
                );
            }
        };
        // docs/protocol.md §4.10: the worktree must be clean before anything is
        // stopped; a dirty one leaves the session open.
        let remove = if remove_worktree {
            let Some(wt) = entry.worktree.clone() else {
                registry.abandon_close(&entry.uid);
                return self.error(
                    id,
                    ErrorCode::BadMessage,
                    format!(
                        "session {session} has no worktree the server created; leave out `remove_worktree`"
                    ),
                );
            };
            match worktree::is_clean(&wt.path).await {
                Ok(true) => Some(wt),
                Ok(false) => {
                    registry.abandon_close(&entry.uid);
                    return self
                        .workdir_error(id, WorkdirError::Dirty(wt.path.display().to_string()));
                }
                Err(e) => {
                    registry.abandon_close(&entry.uid);
                    return self.workdir_error(id, e);
                }
            }
        } else {
            None
        };
        let (done, closed) = tokio::sync::oneshot::channel();
        let cmd = SessionCmd::Close {
            by: by.clone(),
            done,
        };
        if entry.handle.send(cmd).await.is_err() {
            registry.abandon_close(&entry.uid);
            return self.error(
                id,
                ErrorCode::AgentUnavailable,
                format!("session {session} has stopped"),
            );
        }
        self.attached.retain(|name| **name != *session);
        // The agent may take its stop grace to end: the connection goes on reading.
        let outbox = self.outbox.clone();
        let audit = self.shared.audit.clone();
        tokio::spawn(async move {
            if closed.await.is_err() {
                // The server is shutting down: the session is restored at the next start.
                return;
            }
            // The branch is kept: the session's commits stay reachable.
            let removed = match &remove {
                Some(wt) => worktree::remove(wt).await,
                None => Ok(()),
            };
            let uid = entry.uid.clone();
            let finished = {
                let registry = registry.clone();
                tokio::task::spawn_blocking(move || registry.finish_close(&uid)).await
            };
            match &removed {
                Ok(()) => {
                    let _ = outbox.frame(FrameType::Ok, ServerMsg::ok(id).to_json());
                }
                Err(e) => {
                    // Changed while the agent stopped: the session is closed, its
                    // worktree kept (never removed by force).
                    tracing::warn!(session = %session, error = %e, "the closed session's worktree was not removed");
                    let err = ccrelay_protocol::ProtocolError::new(
                        e.code(),
                        format!("the session is closed but its worktree was not removed: {e}"),
                    )
                    .with_id(id);
                    let _ = outbox.frame(FrameType::Error, err.to_frame());
                }
            }
            if let Ok(Some(entry)) = finished {
                registry.announce(&entry, "closed");
            }
            tracing::info!(session = %session, uid = %entry.uid, "session closed");
            audit.record(
                "session_closed",
                &session,
                serde_json::json!({
                    "uid": &*entry.uid,
                    "worktree_removed": remove.is_some() && removed.is_ok(),
                    "client_id": by.client_id,
                    "fingerprint": by.fingerprint,
                    "device": by.device,
                }),
            );
        });
    }

    pub(super) async fn on_session_rename(
        &mut self,
        id: Option<RequestId>,
        session: String,
        title: String,
    ) {
        if !self.owner_only(&id, "session.rename") {
            return;
        }
        let Some((_, client)) = &self.identity else {
            return;
        };
        let info = client.info.clone();
        let registry = self.shared.sessions.clone();
        let (name, new_title) = (session.clone(), title.clone());
        let renamed = tokio::task::spawn_blocking(move || registry.rename(&name, &new_title)).await;
        let Ok(Some(entry)) = renamed else {
            return self.error(
                id,
                ErrorCode::NoSuchSession,
                format!("no session named {session:?}"),
            );
        };
        self.reply(FrameType::Ok, ServerMsg::ok(id));
        self.shared.sessions.announce(&entry, "renamed");
        self.shared.audit.record(
            "session_renamed",
            &session,
            serde_json::json!({
                "uid": &*entry.uid,
                "title": title,
                "client_id": info.client_id,
                "fingerprint": info.fingerprint,
                "device": info.device,
            }),
        );
    }

    pub(super) async fn on_dirs_list(&mut self, id: Option<RequestId>, path: Option<String>) {
        if !self.owner_only(&id, "dirs.list") {
            return;
        }
        let roots = self.shared.roots.clone();
        let listed = tokio::task::spawn_blocking(move || {
            crate::workdirs::dirs::list_dirs(&roots, path.as_deref(), MAX_DIRS)
        })
        .await;
        match listed {
            Ok(Ok(listing)) => {
                let path = (!listing.path.as_os_str().is_empty())
                    .then(|| listing.path.display().to_string());
                let dirs = listing
                    .dirs
                    .into_iter()
                    .map(|d| DirEntry {
                        name: d.name,
                        git: d.git,
                    })
                    .collect();
                self.reply(
                    FrameType::DirsList,
                    ServerMsg::DirsList {
                        id,
                        path,
                        dirs,
                        truncated: listing.truncated,
                    },
                );
            }
            Ok(Err(e)) => self.workdir_error(id, e),
            Err(e) => {
                tracing::error!(error = %e, "dirs.list failed");
                self.error(id, ErrorCode::Internal, "the directory could not be listed");
            }
        }
    }

    pub(super) async fn on_conversations_list(
        &mut self,
        id: Option<RequestId>,
        workdir: String,
        limit: u64,
        before: Option<String>,
    ) {
        if !self.owner_only(&id, "conversations.list") {
            return;
        }
        let before = match before
            .as_deref()
            .map(crate::workdirs::conversations::parse_before)
            .transpose()
        {
            Ok(b) => b,
            Err(e) => return self.workdir_error(id, e),
        };
        let roots = self.shared.roots.clone();
        let registry = self.shared.sessions.clone();
        let listed = tokio::task::spawn_blocking(move || {
            let dir = roots.resolve_dir(&workdir)?;
            let page = match registry.claude_config_dir() {
                Some(config_dir) => crate::workdirs::conversations::list(
                    config_dir,
                    &dir,
                    usize::try_from(limit).unwrap_or(usize::MAX),
                    before,
                    &|conversation| registry.conversation_in_use(conversation),
                )?,
                // No home and no $CLAUDE_CONFIG_DIR: the CLI records nothing either.
                None => crate::workdirs::conversations::ConversationPage {
                    conversations: Vec::new(),
                    more: false,
                },
            };
            Ok::<_, WorkdirError>((dir, page))
        })
        .await;
        match listed {
            Ok(Ok((dir, page))) => self.reply(
                FrameType::ConversationsList,
                ServerMsg::ConversationsList {
                    id,
                    workdir: dir.display().to_string(),
                    conversations: page
                        .conversations
                        .into_iter()
                        .map(|c| ConversationEntry {
                            conversation: c.conversation,
                            title: c.title,
                            updated_at: c.updated_at,
                            in_use_by: c.in_use_by,
                        })
                        .collect(),
                    more: page.more,
                },
            ),
            Ok(Err(e)) => self.workdir_error(id, e),
            Err(e) => {
                tracing::error!(error = %e, "conversations.list failed");
                self.error(
                    id,
                    ErrorCode::Internal,
                    "the conversations could not be listed",
                );
            }
        }
    }

    /// The worktree of a `session.create` (docs/protocol.md §4.10): a new branch
    /// (default `ccrelay/<session>`) of the repository holding `dir` (looked for no
    /// higher than its session root), at `<repo parent>/<repo>.worktrees/<session>`.
    /// A failure leaves nothing behind (`worktree::create`).
    async fn make_worktree(
        &self,
        dir: &Path,
        session: &str,
        asked: WorktreeRequest,
    ) -> Result<Worktree, WorkdirError> {
        let branch = asked.branch.unwrap_or_else(|| format!("ccrelay/{session}"));
        worktree::validate_branch(&branch)?;
        let ceiling = self
            .shared
            .roots
            .root_of(dir)
            .and_then(git::ceiling_for_root);
        let repo = worktree::repository_of_within(dir, ceiling.as_deref()).await?;
        let path = {
            let (repo, session) = (repo.clone(), session.to_string());
            tokio::task::spawn_blocking(move || worktree::default_worktree_path(&repo, &session))
                .await
                .map_err(|e| WorkdirError::Io {
                    context: "choosing the worktree's path",
                    source: std::io::Error::other(e),
                })?
        };
        worktree::create(&repo, &branch, asked.base.as_deref(), &path).await
    }

    fn workdir_error(&self, id: Option<RequestId>, e: WorkdirError) {
        if let WorkdirError::Io { source, .. } = &e {
            tracing::error!(error = %source, "{e}");
        }
        self.error(id, e.code(), e.to_string());
    }
}

/// A create's settings with every key present (docs/protocol.md §10), or why not.
pub(super) fn check_settings(
    asked: SettingsRequest,
) -> Result<SessionSettingsJson, (ErrorCode, String)> {
    let mut settings = SessionSettingsJson::default();
    if let Some(mode) = asked.permission_mode {
        if UNATTENDED_MODES.contains(&mode.as_str()) {
            return Err((
                ErrorCode::Forbidden,
                format!("permission mode {mode} is not allowed on this server"),
            ));
        }
        if !MODES.contains(&mode.as_str()) {
            return Err((
                ErrorCode::BadMessage,
                format!(
                    "`settings.permission_mode` must be one of {}",
                    MODES.join(", ")
                ),
            ));
        }
        settings.permission_mode = mode;
    }
    if let Some(model) = asked.model {
        let ok = (1..=MAX_MODEL_CHARS).contains(&model.chars().count())
            && !model.starts_with('-')
            && model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:/[]@".contains(c));
        if !ok {
            return Err((
                ErrorCode::BadMessage,
                format!(
                    "`settings.model` must be 1 to {MAX_MODEL_CHARS} of A-Z a-z 0-9 - _ . : / [ ] @, not starting with -"
                ),
            ));
        }
        settings.model = Some(model);
    }
    if let Some(effort) = asked.effort {
        let ok = (1..=16).contains(&effort.len()) && effort.bytes().all(|b| b.is_ascii_lowercase());
        if !ok {
            return Err((
                ErrorCode::BadMessage,
                "`settings.effort` must be a level name such as low, medium or high".into(),
            ));
        }
        settings.effort = Some(effort);
    }
    if let Some(thinking) = asked.thinking {
        if thinking > MAX_THINKING_TOKENS {
            return Err((
                ErrorCode::BadMessage,
                format!("`settings.thinking` must be at most {MAX_THINKING_TOKENS}"),
            ));
        }
        settings.thinking = Some(thinking);
    }
    if let Some(auto) = asked.auto_continue {
        settings.auto_continue = auto;
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let ok = check_settings(SettingsRequest {
            permission_mode: Some("plan".into()),
            model: Some("claude-sonnet-4-5[1m]".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.permission_mode, "plan");
        let refused = |r: SettingsRequest| check_settings(r).unwrap_err().0;
        assert_eq!(
            refused(SettingsRequest {
                permission_mode: Some("bypassPermissions".into()),
                ..Default::default()
            }),
            ErrorCode::Forbidden
        );
        assert_eq!(
            refused(SettingsRequest {
                model: Some("--dangerously-skip-permissions".into()),
                ..Default::default()
            }),
            ErrorCode::BadMessage
        );
        assert_eq!(
            refused(SettingsRequest {
                permission_mode: Some("nonsense".into()),
                ..Default::default()
            }),
            ErrorCode::BadMessage
        );
    }
}
