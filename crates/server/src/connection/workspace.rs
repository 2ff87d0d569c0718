//! The workspace requests (docs/protocol.md §11): `files.status`, `files.diff`,
//! `files.list`, `files.read`. Owners, and viewers when the server runs with
//! `--viewer-files`. The work is [`crate::workspace`]'s: git jobs queue there (one
//! per workdir, a few server-wide, identical ones answered once), file system
//! reads run on blocking threads; a `files.read` is an audit line.

use std::path::PathBuf;

use super::Connection;
use crate::auth;
use crate::workspace::{WorkspaceError, browse, confine, gitview};
use ccrelay_protocol::{DiffBase, ErrorCode, FrameType, RequestId, ServerMsg};

/// What a request needs of its session.
struct Target {
    workdir: PathBuf,
    /// `<session dir>/workspace`: the session's snapshots.
    store: gitview::SnapshotStore,
}

impl Connection {
    /// Whether this connection may use the workspace requests; answers
    /// `forbidden` when not.
    fn may_view_files(&self, id: &Option<RequestId>, what: &str) -> bool {
        match &self.identity {
            Some((identity, _))
                if identity.role == auth::Role::Owner || self.shared.config.viewer_files =>
            {
                true
            }
            _ => {
                self.error(
                    id.clone(),
                    ErrorCode::Forbidden,
                    format!("viewer keys may not send {what} (the server does not run with --viewer-files)"),
                );
                false
            }
        }
    }

    /// The session's canonical workdir, or the error already answered.
    async fn target(&self, id: &Option<RequestId>, session: &str) -> Option<Target> {
        let Some(entry) = self.shared.sessions.entry(session) else {
            self.error(
                id.clone(),
                ErrorCode::NoSuchSession,
                format!("no session named {}", crate::escape::quoted(session)),
            );
            return None;
        };
        let workdir = entry.workdir.clone();
        match tokio::task::spawn_blocking(move || std::fs::canonicalize(workdir)).await {
            Ok(Ok(workdir)) => Some(Target {
                workdir,
                store: gitview::SnapshotStore {
                    dir: entry.dir.join("workspace"),
                },
            }),
            _ => {
                self.error(
                    id.clone(),
                    ErrorCode::NotFound,
                    "the session's workdir no longer exists",
                );
                None
            }
        }
    }

    /// `path` confined to the workdir (blocking checks off the network threads).
    async fn confined(
        &self,
        id: &Option<RequestId>,
        target: &Target,
        path: &str,
    ) -> Option<confine::Confined> {
        let (workdir, path, deny) = (
            target.workdir.clone(),
            path.to_owned(),
            self.shared.workspace.forbidden().to_vec(),
        );
        let resolved =
            tokio::task::spawn_blocking(move || confine::resolve(&workdir, &path, &deny)).await;
        match resolved {
            Ok(Ok(confined)) => Some(confined),
            Ok(Err(e)) => {
                self.workspace_error(id.clone(), e);
                None
            }
            Err(e) => {
                self.workspace_error(id.clone(), WorkspaceError::Internal(e.to_string()));
                None
            }
        }
    }

    fn workspace_error(&self, id: Option<RequestId>, e: WorkspaceError) {
        if let WorkspaceError::Internal(why) = &e {
            tracing::error!(error = %why, "a workspace request failed");
            return self.error(
                id,
                ErrorCode::Internal,
                "the request failed inside the relay",
            );
        }
        self.error(id, e.code(), e.to_string());
    }

    pub(super) async fn on_files_status(&mut self, id: Option<RequestId>, session: String) {
        if !self.may_view_files(&id, "files.status") {
            return;
        }
        let Some(target) = self.target(&id, &session).await else {
            return;
        };
        let ws = self.shared.workspace.clone();
        let key = format!("status\0{}", target.workdir.display());
        let job = gitview::status(ws.clone(), target.workdir.clone());
        match ws.run(&target.workdir, Some(key), job).await {
            Ok(view) => self.reply(
                FrameType::FilesStatus,
                ServerMsg::FilesStatus {
                    id,
                    session,
                    git: view.git,
                    branch: view.branch.clone(),
                    head: view.head.clone(),
                    upstream: view.upstream.clone(),
                    files: view.files.clone(),
                    truncated: view.truncated,
                },
            ),
            Err(e) => self.workspace_error(id, e),
        }
    }

    pub(super) async fn on_files_diff(
        &mut self,
        id: Option<RequestId>,
        session: String,
        path: Option<String>,
        base: DiffBase,
    ) {
        if !self.may_view_files(&id, "files.diff") {
            return;
        }
        let Some(target) = self.target(&id, &session).await else {
            return;
        };
        let whole = path.as_deref().is_none_or(|p| p.is_empty() || p == ".");
        let confined = if whole {
            None
        } else {
            let Some(c) = self
                .confined(&id, &target, path.as_deref().unwrap_or_default())
                .await
            else {
                return;
            };
            Some(c)
        };
        let ws = self.shared.workspace.clone();
        let key = format!(
            "diff\0{}\0{}\0{}",
            target.workdir.display(),
            base.as_wire(),
            confined.as_ref().map(|c| c.shown.as_str()).unwrap_or("")
        );
        let shown = confined.as_ref().map(|c| c.shown.clone());
        let result = match &base {
            DiffBase::Head => {
                let job = gitview::diff_head(ws.clone(), target.workdir.clone(), confined);
                ws.run(&target.workdir, Some(key), job).await
            }
            DiffBase::Turn(prompt_id) => {
                let job = gitview::diff_turn(
                    ws.clone(),
                    target.workdir.clone(),
                    target.store.clone(),
                    prompt_id.clone(),
                    confined,
                );
                ws.run(&target.workdir, Some(key), job).await
            }
        };
        match result {
            Ok(view) => self.reply(
                FrameType::FilesDiff,
                ServerMsg::FilesDiff {
                    id,
                    session,
                    path: shown,
                    base: base.as_wire(),
                    diff: view.diff.clone(),
                    binary: view.binary,
                    truncated: view.truncated,
                },
            ),
            Err(e) => self.workspace_error(id, e),
        }
    }

    pub(super) async fn on_files_list(
        &mut self,
        id: Option<RequestId>,
        session: String,
        path: String,
    ) {
        if !self.may_view_files(&id, "files.list") {
            return;
        }
        let Some(target) = self.target(&id, &session).await else {
            return;
        };
        let Some(confined) = self.confined(&id, &target, &path).await else {
            return;
        };
        let (workdir, deny) = (target.workdir, self.shared.workspace.forbidden().to_vec());
        let listed =
            tokio::task::spawn_blocking(move || browse::list(&workdir, &confined, &deny)).await;
        match listed {
            Ok(Ok(listing)) => self.reply(
                FrameType::FilesList,
                ServerMsg::FilesList {
                    id,
                    session,
                    path: listing.path,
                    entries: listing.entries,
                    truncated: listing.truncated,
                },
            ),
            Ok(Err(e)) => self.workspace_error(id, e),
            Err(e) => self.workspace_error(id, WorkspaceError::Internal(e.to_string())),
        }
    }

    pub(super) async fn on_files_read(
        &mut self,
        id: Option<RequestId>,
        session: String,
        path: String,
        offset: u64,
        max_bytes: u64,
    ) {
        if !self.may_view_files(&id, "files.read") {
            return;
        }
        let Some(target) = self.target(&id, &session).await else {
            return;
        };
        let Some(confined) = self.confined(&id, &target, &path).await else {
            return;
        };
        let (workdir, deny) = (target.workdir, self.shared.workspace.forbidden().to_vec());
        let read = tokio::task::spawn_blocking(move || {
            browse::read(&workdir, &confined, offset, max_bytes, &deny)
        })
        .await;
        match read {
            Ok(Ok(read)) => {
                if let Some((_, client)) = &self.identity {
                    let info = &client.info;
                    self.shared.audit.record(
                        "file_read",
                        &session,
                        serde_json::json!({
                            "path": read.path,
                            "offset": read.offset,
                            "bytes_sent": read.data.len(),
                            "size": read.size,
                            "client_id": info.client_id,
                            "fingerprint": info.fingerprint,
                            "device": info.device,
                            "role": info.role,
                        }),
                    );
                }
                self.reply(
                    FrameType::FilesRead,
                    ServerMsg::FilesRead {
                        id,
                        session,
                        path: read.path,
                        size: read.size,
                        offset: read.offset,
                        encoding: read.encoding,
                        data: read.data,
                        truncated: read.truncated,
                        mime: read.mime,
                    },
                );
            }
            Ok(Err(e)) => self.workspace_error(id, e),
            Err(e) => self.workspace_error(id, WorkspaceError::Internal(e.to_string())),
        }
    }
}
