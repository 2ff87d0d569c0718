//! What each turn changed in the workdir (docs/protocol.md §11, `relay.changes`).
//!
//! Before a prompt is written to the agent, the working tree is snapshotted; when
//! its turn ends (or is aborted) it is snapshotted again, the two trees are
//! compared, and `relay.changes` is appended — after that turn's `relay.turn` and
//! before the next turn's `started` (the next prompt waits for it), and before
//! `relay.closed`. The snapshots run as tasks through the workspace's limits
//! ([`crate::workspace::Workspace::run`]), never on the actor; the actor only waits
//! for their answer in its loop. A workdir outside a git repository has no
//! snapshots and no `relay.changes`.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::oneshot;

use super::{Actor, Step};
use crate::workspace::gitview::{self, SnapshotStore};
use crate::workspace::{Workspace, WorkspaceError};
use ccrelay_protocol::FileChange;

/// A snapshot job's answer.
pub(super) enum SnapDone {
    /// The tree before `prompt_id`'s turn (`None`: not a repository, or failed).
    Started {
        prompt_id: String,
        tree: Option<String>,
    },
    /// What the turn changed (`None`: nothing to tell).
    Ended {
        prompt_id: String,
        files: Option<(Vec<FileChange>, bool)>,
    },
}

/// The actor's view of the snapshots.
#[derive(Default)]
pub(super) struct TurnChanges {
    /// The job running now; the next turn waits for it.
    job: Option<oneshot::Receiver<SnapDone>>,
    /// The tree taken before this prompt's turn.
    before: Option<(String, Option<String>)>,
}

impl TurnChanges {
    pub(super) fn busy(&self) -> bool {
        self.job.is_some()
    }

    /// Waits for the running job (forever when none runs: guard with [`Self::busy`]).
    pub(super) async fn wait(&mut self) -> Option<SnapDone> {
        match self.job.as_mut() {
            Some(job) => {
                let done = job.await.ok();
                self.job = None;
                done
            }
            None => std::future::pending().await,
        }
    }

    /// Whether the snapshot before `prompt_id`'s turn is taken.
    pub(super) fn ready_for(&self, prompt_id: &str) -> bool {
        self.before.as_ref().is_some_and(|(id, _)| id == prompt_id)
    }
}

fn spawn_job<F>(future: F) -> oneshot::Receiver<SnapDone>
where
    F: std::future::Future<Output = SnapDone> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = tx.send(future.await);
    });
    rx
}

async fn take_snapshot(
    ws: Arc<Workspace>,
    workdir: PathBuf,
    store: SnapshotStore,
) -> Result<Option<String>, WorkspaceError> {
    let workdir = tokio::fs::canonicalize(&workdir)
        .await
        .map_err(|e| WorkspaceError::io("resolving the workdir", e))?;
    let job = gitview::snapshot(ws.clone(), workdir.clone(), store);
    Ok(ws.run(&workdir, None, job).await?.as_ref().clone())
}

impl Actor {
    fn snapshot_store(&self) -> SnapshotStore {
        SnapshotStore {
            dir: self.settings.dir.join("workspace"),
        }
    }

    /// Starts the snapshot before `prompt_id`'s turn.
    pub(super) fn snapshot_before(&mut self, prompt_id: &str) {
        let ws = self.shared.workspace.clone();
        let (workdir, store) = (self.settings.workdir.clone(), self.snapshot_store());
        let (prompt_id, name) = (prompt_id.to_owned(), self.name.clone());
        self.changes.job = Some(spawn_job(async move {
            let tree = match take_snapshot(ws, workdir, store).await {
                Ok(tree) => tree,
                Err(e) => {
                    tracing::warn!(session = %name, error = %e, "no snapshot before the turn");
                    None
                }
            };
            SnapDone::Started { prompt_id, tree }
        }));
    }

    /// The turn of `prompt_id` ended or was aborted: compare the tree now with the
    /// one before it (when there was one).
    pub(super) fn snapshot_after(&mut self, prompt_id: &str) {
        let Some((before_id, Some(before))) = self.changes.before.take() else {
            return;
        };
        if before_id != prompt_id {
            return;
        }
        let ws = self.shared.workspace.clone();
        let (workdir, store) = (self.settings.workdir.clone(), self.snapshot_store());
        let (prompt_id, name) = (prompt_id.to_owned(), self.name.clone());
        self.changes.job = Some(spawn_job(async move {
            let compared = async {
                let Some(after) = take_snapshot(ws.clone(), workdir.clone(), store.clone()).await?
                else {
                    return Ok(None);
                };
                let record = {
                    let (store, id, b, a) = (
                        store.clone(),
                        prompt_id.clone(),
                        before.clone(),
                        after.clone(),
                    );
                    tokio::task::spawn_blocking(move || store.record_turn(&id, &b, &a))
                };
                if let Ok(Err(e)) = record.await {
                    return Err(WorkspaceError::io("recording the turn's snapshots", e));
                }
                let workdir = tokio::fs::canonicalize(&workdir)
                    .await
                    .map_err(|e| WorkspaceError::io("resolving the workdir", e))?;
                let job = gitview::changes(ws.clone(), workdir.clone(), store, before, after);
                let found = ws.run(&workdir, None, job).await?;
                Ok::<_, WorkspaceError>(Some(found.as_ref().clone()))
            };
            let files = match compared.await {
                Ok(files) => files,
                Err(e) => {
                    tracing::warn!(session = %name, error = %e, "the turn's changes are unknown");
                    None
                }
            };
            SnapDone::Ended { prompt_id, files }
        }));
    }

    /// A snapshot job answered.
    pub(super) fn on_snapshot(&mut self, done: Option<SnapDone>) -> Step {
        match done {
            Some(SnapDone::Started { prompt_id, tree }) => {
                self.changes.before = Some((prompt_id, tree));
            }
            Some(SnapDone::Ended { prompt_id, files }) => {
                if let Some((files, truncated)) = files
                    && !files.is_empty()
                {
                    let mut event =
                        json!({"type": "relay.changes", "prompt_id": prompt_id, "files": files});
                    if truncated {
                        event["truncated"] = json!(true);
                    }
                    self.emit_relay(event)?;
                }
            }
            None => {}
        }
        self.maybe_start_turn()
    }
}
