//! The workspace view (docs/protocol.md §11): read-only answers about a session's
//! working directory, and what each turn changed in it.
//!
//! Owns: path confinement ([`confine`]), the git views (`files.status`,
//! `files.diff`, per-turn snapshots and their diffs, in [`gitview`]), directory
//! listings and file reads ([`browse`]), and the limits every request shares
//! ([`Workspace`]: one git job per workdir at a time, a small number server-wide,
//! identical waiting requests answered once).
//!
//! Must not: change the repository in any way — its index, refs, stash, config
//! and object database stay as they were. Every git run goes through
//! [`crate::workdirs::git`] (no program the repository names ever runs), with a
//! private copy of the index (`GIT_INDEX_FILE`) and, for snapshots, an object
//! directory of its own under the data dir (`GIT_OBJECT_DIRECTORY`, with the
//! repository's objects as an alternate). It knows no sessions or frames: callers
//! give it a workdir and a data directory, and turn its answers into replies.

pub mod browse;
pub mod confine;
pub mod gitview;

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio::sync::Semaphore;

use crate::workdirs::WorkdirError;
use ccrelay_protocol::ErrorCode;

/// Git jobs running at once, all sessions together (docs/protocol.md §11).
pub const SERVER_WIDE_JOBS: usize = 2;
/// Entries of `files.status` and `files.list` at most (§11).
pub const MAX_ENTRIES: usize = 2000;
/// Bytes of diff per reply at most (§11).
pub const MAX_DIFF_BYTES: usize = 1024 * 1024;
/// Untracked files larger than this are listed without content (§11).
pub const MAX_UNTRACKED_CONTENT: u64 = 1024 * 1024;

/// Why a workspace request failed; each has its wire code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WorkspaceError {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0} is not in a git repository")]
    NotARepository(String),
    #[error("{0}")]
    Git(String),
    #[error("{0}")]
    Internal(String),
}

impl WorkspaceError {
    pub fn code(&self) -> ErrorCode {
        match self {
            WorkspaceError::Forbidden(_) => ErrorCode::Forbidden,
            WorkspaceError::NotFound(_) => ErrorCode::NotFound,
            WorkspaceError::NotARepository(_) => ErrorCode::NotARepository,
            WorkspaceError::Git(_) => ErrorCode::GitFailed,
            WorkspaceError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub(crate) fn io(what: &str, e: std::io::Error) -> WorkspaceError {
        WorkspaceError::Internal(format!("{what}: {e}"))
    }
}

impl From<WorkdirError> for WorkspaceError {
    fn from(e: WorkdirError) -> Self {
        match e.code() {
            ErrorCode::NotARepository => WorkspaceError::NotARepository(e.to_string()),
            ErrorCode::NotFound => WorkspaceError::NotFound(e.to_string()),
            ErrorCode::GitFailed => WorkspaceError::Git(e.to_string()),
            _ => WorkspaceError::Internal(e.to_string()),
        }
    }
}

type Answer = Result<Arc<dyn Any + Send + Sync>, WorkspaceError>;
type Waiting = Shared<BoxFuture<'static, Answer>>;

/// What every workspace request shares: the places no path may reach, where
/// private index copies go, and the job limits.
#[derive(Debug)]
pub struct Workspace {
    /// Canonical directories no path may resolve into (the data dir, the CLI's
    /// configuration directory, `~/.ssh`).
    forbidden: Vec<PathBuf>,
    /// `<data-dir>/workspace`: private index copies (removed after each job).
    scratch: PathBuf,
    /// The session roots (canonical): discovery never climbs above the one that
    /// holds a workdir.
    roots: Vec<PathBuf>,
    server_wide: Arc<Semaphore>,
    per_workdir: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    waiting: Mutex<HashMap<String, Waiting>>,
}

impl Workspace {
    /// Blocking (canonicalizes). `data_dir` and `roots` as configured.
    pub fn new(data_dir: &Path, roots: &[PathBuf]) -> Workspace {
        let mut forbidden = vec![data_dir.to_path_buf()];
        let home = crate::datadir::home_dir();
        forbidden.extend(crate::workdirs::claude_config_dir(
            std::env::var_os("CLAUDE_CONFIG_DIR"),
            home.as_deref(),
        ));
        forbidden.extend(home.map(|h| h.join(".ssh")));
        let forbidden = forbidden
            .into_iter()
            .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
            .collect();
        let roots = roots
            .iter()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
            .collect();
        Workspace {
            forbidden,
            scratch: data_dir.join("workspace"),
            roots,
            server_wide: Arc::new(Semaphore::new(SERVER_WIDE_JOBS)),
            per_workdir: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// The directories paths may not resolve into.
    pub fn forbidden(&self) -> &[PathBuf] {
        &self.forbidden
    }

    /// The ceiling of git discovery for `workdir` (docs/protocol.md §11): above
    /// the outermost session root that holds it, else above its parent.
    pub fn ceiling(&self, workdir: &Path) -> Option<PathBuf> {
        let root = self
            .roots
            .iter()
            .filter(|r| workdir.starts_with(r))
            .min_by_key(|r| r.components().count())
            .cloned()
            .or_else(|| workdir.parent().map(Path::to_path_buf))?;
        crate::workdirs::git::ceiling_for_root(&root)
    }

    pub(crate) fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// Runs `job` as a git job of `workdir`: one at a time per workdir, at most
    /// [`SERVER_WIDE_JOBS`] at once. A job with the same `key` already waiting or
    /// running is joined instead of run again (its answer is shared); `key: None`
    /// always runs (snapshots).
    pub async fn run<T, F>(
        self: &Arc<Self>,
        workdir: &Path,
        key: Option<String>,
        job: F,
    ) -> Result<Arc<T>, WorkspaceError>
    where
        T: Send + Sync + 'static,
        F: std::future::Future<Output = Result<T, WorkspaceError>> + Send + 'static,
    {
        let lock = {
            let mut map = self.per_workdir.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, l| Arc::strong_count(l) > 1);
            map.entry(workdir.to_path_buf()).or_default().clone()
        };
        let server_wide = self.server_wide.clone();
        let queued = async move {
            let _mine = lock.lock().await;
            let _slot = server_wide
                .acquire_owned()
                .await
                .map_err(|_| WorkspaceError::Internal("the server is stopping".into()))?;
            job.await
                .map(|value| Arc::new(value) as Arc<dyn Any + Send + Sync>)
        };
        let answer = match key {
            None => queued.await,
            Some(key) => {
                let waiting = {
                    let mut map = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
                    match map.get(&key) {
                        Some(w) => w.clone(),
                        None => {
                            let this = self.clone();
                            let k = key.clone();
                            let fut: BoxFuture<'static, Answer> = async move {
                                let answer = queued.await;
                                this.waiting
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .remove(&k);
                                answer
                            }
                            .boxed();
                            let shared = fut.shared();
                            map.insert(key, shared.clone());
                            shared
                        }
                    }
                };
                waiting.await
            }
        };
        answer?
            .downcast::<T>()
            .map_err(|_| WorkspaceError::Internal("a shared answer of another kind".into()))
    }
}

/// A unique name under the scratch directory.
pub(crate) fn scratch_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
