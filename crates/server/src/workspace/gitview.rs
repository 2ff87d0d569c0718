//! The git side of the workspace view (docs/protocol.md §11): `files.status`,
//! `files.diff` and per-turn snapshots, all without changing the repository.
//!
//! How the repository stays untouched: porcelain `git status`/`git diff` may
//! rewrite a stat-dirty index, so only plumbing runs here, against a private copy
//! of the index (`GIT_INDEX_FILE` under `<data-dir>/workspace/`), refreshed with
//! `update-index --refresh` (the copy alone is written). A snapshot adds the
//! working tree to such a copy and writes a tree with `write-tree`; its objects go
//! to the session's own object directory (`GIT_OBJECT_DIRECTORY`) with the
//! repository's objects as an alternate, so nothing is written into the
//! repository. Untracked files over 1 MiB enter a snapshot as a short
//! placeholder (their size and time), never their content.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ccrelay_protocol::{FileChange, FileStatus, Upstream};

use super::confine::Confined;
use super::{MAX_DIFF_BYTES, MAX_ENTRIES, MAX_UNTRACKED_CONTENT, Workspace, WorkspaceError};
use crate::workdirs::git::{self, GitOutput, Limits};
use crate::workdirs::worktree::repository_of_within;

/// Untracked files whose lines are counted for one `files.status`, at most.
const MAX_COUNTED_BYTES: u64 = 32 * 1024 * 1024;
/// Large untracked files a snapshot records as placeholders, at most.
const MAX_PLACEHOLDERS: usize = 100;

/// A repository as seen from a workdir.
#[derive(Debug, Clone)]
pub struct Repo {
    pub workdir: PathBuf,
    pub top: PathBuf,
    index: PathBuf,
    objects: PathBuf,
    ceiling: Option<PathBuf>,
    object_format: String,
}

impl Repo {
    /// The tree of an empty directory (what an unborn HEAD is compared to).
    fn empty_tree(&self) -> &'static str {
        if self.object_format == "sha256" {
            "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321"
        } else {
            "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
        }
    }

    async fn git(
        &self,
        what: &'static str,
        dir: &Path,
        args: &[&OsStr],
        env: &[(&'static str, &OsStr)],
        stdin: Option<&[u8]>,
        max_stdout: usize,
    ) -> Result<GitOutput, WorkspaceError> {
        let limits = Limits {
            what,
            max_stdout,
            ceiling: self.ceiling.as_deref(),
            env,
            stdin,
            ..Limits::quick(what)
        };
        Ok(git::run(dir, args, limits).await?)
    }
}

fn os(list: &[&'static str]) -> Vec<&'static OsStr> {
    list.iter().map(|a| OsStr::new(*a)).collect()
}

/// The repository of `workdir` (canonical), or `None` when it is not in one
/// (a `core.worktree` elsewhere counts as not in one).
pub async fn open(ws: &Workspace, workdir: &Path) -> Result<Option<Repo>, WorkspaceError> {
    let ceiling = ws.ceiling(workdir);
    let top = match repository_of_within(workdir, ceiling.as_deref()).await {
        Ok(top) => top,
        Err(e) if e.code() == ccrelay_protocol::ErrorCode::NotARepository => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let args = os(&[
        "rev-parse",
        "--path-format=absolute",
        "--git-path",
        "index",
        "--git-path",
        "objects",
        "--show-object-format",
    ]);
    let limits = Limits {
        ceiling: ceiling.as_deref(),
        ..Limits::quick("rev-parse")
    };
    let out = git::run(workdir, &args, limits).await?.into_stdout()?;
    let text = String::from_utf8_lossy(&out);
    let mut lines = text.lines();
    let (Some(index), Some(objects), Some(format)) = (lines.next(), lines.next(), lines.next())
    else {
        return Err(WorkspaceError::Git(
            "git rev-parse answered too little".into(),
        ));
    };
    Ok(Some(Repo {
        workdir: workdir.to_path_buf(),
        top,
        index: PathBuf::from(index),
        objects: PathBuf::from(objects),
        ceiling,
        object_format: format.to_owned(),
    }))
}

/// A private copy of the repository's index, removed on drop.
struct IndexCopy {
    path: PathBuf,
}

impl Drop for IndexCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let mut lock = self.path.clone().into_os_string();
        lock.push(".lock");
        let _ = std::fs::remove_file(lock);
    }
}

async fn index_copy(ws: &Workspace, repo: &Repo) -> Result<IndexCopy, WorkspaceError> {
    let scratch = ws.scratch().to_path_buf();
    let from = repo.index.clone();
    tokio::task::spawn_blocking(move || {
        crate::datadir::create_dir_all(&scratch)
            .map_err(|e| WorkspaceError::io("creating the workspace scratch directory", e))?;
        let copy = IndexCopy {
            path: scratch.join(super::scratch_name("index")),
        };
        match std::fs::copy(&from, &copy.path) {
            Ok(_) => Ok(copy),
            // No index yet (a new repository): git starts from an empty one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(copy),
            Err(e) => Err(WorkspaceError::io("copying the index", e)),
        }
    })
    .await
    .map_err(|e| WorkspaceError::Internal(e.to_string()))?
}

/// Refreshes the copy's stat data so unchanged files do not look modified.
async fn refresh(repo: &Repo, env: &[(&'static str, &OsStr)]) -> Result<(), WorkspaceError> {
    let args = os(&[
        "update-index",
        "-q",
        "--refresh",
        "--unmerged",
        "--ignore-missing",
    ]);
    // Exit 1 only says some entries need updating; timeouts still fail.
    repo.git("update-index", &repo.workdir, &args, env, None, 64 * 1024)
        .await
        .map(drop)
}

/// HEAD's commit, or `None` before the first commit.
async fn head(repo: &Repo) -> Result<Option<String>, WorkspaceError> {
    let args = os(&["rev-parse", "-q", "--verify", "HEAD^{commit}"]);
    let out = repo
        .git("rev-parse", &repo.workdir, &args, &[], None, 1024)
        .await?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok((out.success && !text.is_empty()).then_some(text))
}

/// Parses `--raw --numstat -z` output (raw records first, then numstat ones).
fn parse_raw_numstat(out: &[u8]) -> Vec<FileChange> {
    let tokens: Vec<String> = out
        .split(|&b| b == 0)
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect();
    let mut files: Vec<FileChange> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        i += 1;
        if token.is_empty() {
            continue;
        }
        if let Some(raw) = token.strip_prefix(':') {
            let letter = raw.split(' ').nth(4).and_then(|s| s.chars().next());
            let (status, from) = match letter {
                Some('A') => (FileStatus::Added, None),
                Some('D') => (FileStatus::Deleted, None),
                Some('U') => (FileStatus::Conflicted, None),
                Some('R') => {
                    i += 1;
                    (FileStatus::Renamed, tokens.get(i - 1).cloned())
                }
                Some('C') => {
                    i += 1;
                    (FileStatus::Added, None)
                }
                _ => (FileStatus::Modified, None),
            };
            let Some(path) = tokens.get(i).cloned() else {
                break;
            };
            i += 1;
            files.push(FileChange {
                path,
                status,
                from,
                insertions: 0,
                deletions: 0,
                binary: false,
            });
        } else {
            let mut parts = token.splitn(3, '\t');
            let (Some(ins), Some(del), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let path = if path.is_empty() {
                // A rename: old and new path follow.
                i += 2;
                tokens.get(i - 1).cloned().unwrap_or_default()
            } else {
                path.to_owned()
            };
            if let Some(f) = files.iter_mut().find(|f| f.path == path) {
                f.binary = ins == "-";
                f.insertions = ins.parse().unwrap_or(0);
                f.deletions = del.parse().unwrap_or(0);
            }
        }
    }
    files
}

fn nul_list(out: &[u8]) -> Vec<String> {
    out.split(|&b| b == 0)
        .filter(|t| !t.is_empty())
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect()
}

/// What `files.status` answers.
#[derive(Debug, Clone, Default)]
pub struct StatusView {
    pub git: bool,
    pub branch: Option<String>,
    pub head: Option<String>,
    pub upstream: Option<Upstream>,
    pub files: Vec<FileChange>,
    pub truncated: bool,
}

/// `files.status` for `workdir` (docs/protocol.md §11).
pub async fn status(ws: Arc<Workspace>, workdir: PathBuf) -> Result<StatusView, WorkspaceError> {
    let Some(repo) = open(&ws, &workdir).await? else {
        return Ok(StatusView::default());
    };
    let copy = index_copy(&ws, &repo).await?;
    let env: [(&'static str, &OsStr); 1] = [("GIT_INDEX_FILE", copy.path.as_os_str())];
    refresh(&repo, &env).await?;
    let head = head(&repo).await?;
    let base = head.clone().unwrap_or_else(|| repo.empty_tree().to_owned());
    let mut args = os(&[
        "diff-index",
        "-z",
        "-M",
        "--raw",
        "--numstat",
        "--no-ext-diff",
        "--relative",
    ]);
    args.push(OsStr::new(&base));
    let out = repo
        .git(
            "diff-index",
            &repo.workdir,
            &args,
            &env,
            None,
            8 * 1024 * 1024,
        )
        .await?;
    let mut truncated = out.stdout_capped;
    let mut files = parse_raw_numstat(&out.into_stdout()?);
    let args = os(&["ls-files", "-z", "--unmerged"]);
    let unmerged = repo
        .git(
            "ls-files",
            &repo.workdir,
            &args,
            &env,
            None,
            4 * 1024 * 1024,
        )
        .await?
        .into_stdout()?;
    for line in nul_list(&unmerged) {
        let Some((_, path)) = line.split_once('\t') else {
            continue;
        };
        match files.iter_mut().find(|f| f.path == path) {
            Some(f) => f.status = FileStatus::Conflicted,
            None => files.push(FileChange {
                path: path.to_owned(),
                status: FileStatus::Conflicted,
                from: None,
                insertions: 0,
                deletions: 0,
                binary: false,
            }),
        }
    }
    let args = os(&["ls-files", "-z", "--others", "--exclude-standard"]);
    let out = repo
        .git(
            "ls-files",
            &repo.workdir,
            &args,
            &env,
            None,
            4 * 1024 * 1024,
        )
        .await?;
    truncated |= out.stdout_capped;
    let untracked = nul_list(&out.into_stdout()?);
    let room = (MAX_ENTRIES + 1).saturating_sub(files.len());
    let untracked: Vec<String> = untracked.into_iter().take(room).collect();
    let counted = {
        let workdir = repo.workdir.clone();
        let deny = ws.forbidden().to_vec();
        tokio::task::spawn_blocking(move || count_untracked(&workdir, untracked, &deny))
            .await
            .map_err(|e| WorkspaceError::Internal(e.to_string()))?
    };
    files.extend(counted);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if files.len() > MAX_ENTRIES {
        files.truncate(MAX_ENTRIES);
        truncated = true;
    }
    let (branch, upstream) = branch_and_upstream(&repo).await?;
    drop(copy);
    Ok(StatusView {
        git: true,
        branch,
        head,
        upstream,
        files,
        truncated,
    })
}

/// Untracked files as `untracked` entries with their line counts (text files
/// up to 1 MiB, within a total budget; a symlink is never followed).
fn count_untracked(workdir: &Path, paths: Vec<String>, deny: &[PathBuf]) -> Vec<FileChange> {
    let mut budget = MAX_COUNTED_BYTES;
    paths
        .into_iter()
        .map(|path| {
            let mut change = FileChange {
                path,
                status: FileStatus::Untracked,
                from: None,
                insertions: 0,
                deletions: 0,
                binary: false,
            };
            match read_small(workdir, &change.path, deny, budget) {
                Some(Content::Text(lines, bytes)) => {
                    change.insertions = lines;
                    budget = budget.saturating_sub(bytes);
                }
                Some(Content::Binary) => change.binary = true,
                None => {}
            }
            change
        })
        .collect()
}

enum Content {
    Text(u64, u64),
    Binary,
}

/// A regular file's content class, when it is at most 1 MiB and within `budget`;
/// larger ones are binary (listed without content), others unknown.
fn read_small(workdir: &Path, rel: &str, deny: &[PathBuf], budget: u64) -> Option<Content> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let path = workdir.join(rel);
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.file_type().is_file() {
        return None;
    }
    if meta.len() > MAX_UNTRACKED_CONTENT {
        return Some(Content::Binary);
    }
    if meta.len() > budget {
        return None;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .ok()?;
    super::confine::check_fd(&file, workdir, deny).ok()?;
    let mut data = Vec::new();
    file.take(MAX_UNTRACKED_CONTENT)
        .read_to_end(&mut data)
        .ok()?;
    if is_binary(&data) {
        return Some(Content::Binary);
    }
    Some(Content::Text(line_count(&data), data.len() as u64))
}

/// Git's rule: a NUL in the first 8000 bytes.
pub fn is_binary(data: &[u8]) -> bool {
    data.iter().take(8000).any(|&b| b == 0)
}

fn line_count(data: &[u8]) -> u64 {
    let newlines = data.iter().filter(|&&b| b == b'\n').count() as u64;
    newlines + u64::from(!data.is_empty() && !data.ends_with(b"\n"))
}

async fn branch_and_upstream(
    repo: &Repo,
) -> Result<(Option<String>, Option<Upstream>), WorkspaceError> {
    let args = os(&["symbolic-ref", "-q", "HEAD"]);
    let out = repo
        .git("symbolic-ref", &repo.workdir, &args, &[], None, 4096)
        .await?;
    let reference = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.success || reference.is_empty() {
        return Ok((None, None));
    }
    let branch = reference
        .strip_prefix("refs/heads/")
        .unwrap_or(&reference)
        .to_owned();
    let args: Vec<&OsStr> = vec![
        "for-each-ref".as_ref(),
        "--format=%(upstream:short)%00%(upstream:track,nobracket)".as_ref(),
        reference.as_ref(),
    ];
    let out = repo
        .git("for-each-ref", &repo.workdir, &args, &[], None, 4096)
        .await?
        .into_stdout()?;
    let text = String::from_utf8_lossy(&out);
    let line = text.lines().next().unwrap_or_default();
    let (name, track) = line.split_once('\0').unwrap_or((line, ""));
    if name.is_empty() {
        return Ok((Some(branch), None));
    }
    let count = |word: &str| {
        track
            .split(", ")
            .find_map(|part| part.strip_prefix(word))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    let upstream = Upstream {
        name: name.to_owned(),
        ahead: count("ahead "),
        behind: count("behind "),
    };
    Ok((Some(branch), Some(upstream)))
}

/// What `files.diff` answers.
#[derive(Debug, Clone, Default)]
pub struct DiffView {
    pub diff: String,
    pub binary: bool,
    pub truncated: bool,
}

fn pathspec(path: &Confined) -> String {
    format!(":(literal){}", path.shown)
}

/// Cuts `text` to the cap at a line end and marks it truncated.
fn finish_diff(mut bytes: Vec<u8>, mut truncated: bool, single: bool) -> DiffView {
    if bytes.len() > MAX_DIFF_BYTES {
        bytes.truncate(MAX_DIFF_BYTES);
        truncated = true;
    }
    if truncated && let Some(end) = bytes.iter().rposition(|&b| b == b'\n') {
        bytes.truncate(end + 1);
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let binary = single
        && (text.contains("\nBinary files ")
            || text.starts_with("Binary files ")
            || text.contains("GIT binary patch"));
    DiffView {
        diff: text,
        binary,
        truncated,
    }
}

/// `files.diff` with base `HEAD`: the working tree and index against the last
/// commit, untracked files against nothing.
pub async fn diff_head(
    ws: Arc<Workspace>,
    workdir: PathBuf,
    path: Option<Confined>,
) -> Result<DiffView, WorkspaceError> {
    let Some(repo) = open(&ws, &workdir).await? else {
        return Err(WorkspaceError::NotARepository(crate::escape::quoted(
            &workdir.to_string_lossy(),
        )));
    };
    let copy = index_copy(&ws, &repo).await?;
    let env: [(&'static str, &OsStr); 1] = [("GIT_INDEX_FILE", copy.path.as_os_str())];
    refresh(&repo, &env).await?;
    let base = head(&repo)
        .await?
        .unwrap_or_else(|| repo.empty_tree().to_owned());
    let spec = path.as_ref().map(pathspec);
    let mut args = os(&[
        "diff-index",
        "-p",
        "-M",
        "--no-ext-diff",
        "--no-textconv",
        "--no-color",
        "--relative",
    ]);
    args.push(OsStr::new(&base));
    args.push(OsStr::new("--"));
    if let Some(spec) = &spec {
        args.push(OsStr::new(spec));
    }
    let out = repo
        .git(
            "diff-index",
            &repo.workdir,
            &args,
            &env,
            None,
            MAX_DIFF_BYTES + 1,
        )
        .await?;
    let truncated = out.stdout_capped;
    let mut bytes = out.into_stdout()?;
    if !truncated {
        let mut args = os(&["ls-files", "-z", "--others", "--exclude-standard", "--"]);
        if let Some(spec) = &spec {
            args.push(OsStr::new(spec));
        }
        let untracked = repo
            .git(
                "ls-files",
                &repo.workdir,
                &args,
                &env,
                None,
                4 * 1024 * 1024,
            )
            .await?
            .into_stdout()?;
        let untracked = nul_list(&untracked);
        let workdir = repo.workdir.clone();
        let deny = ws.forbidden().to_vec();
        bytes = tokio::task::spawn_blocking(move || {
            for rel in untracked {
                if bytes.len() > MAX_DIFF_BYTES {
                    break;
                }
                new_file_diff(&workdir, &rel, &deny, &mut bytes);
            }
            bytes
        })
        .await
        .map_err(|e| WorkspaceError::Internal(e.to_string()))?;
    }
    drop(copy);
    Ok(finish_diff(bytes, truncated, path.is_some()))
}

/// A diff of an untracked file against nothing, as git writes one.
fn new_file_diff(workdir: &Path, rel: &str, deny: &[PathBuf], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("diff --git a/{rel} b/{rel}\nnew file mode 100644\n").as_bytes());
    let big = std::fs::symlink_metadata(workdir.join(rel))
        .map(|m| m.len() > MAX_UNTRACKED_CONTENT)
        .unwrap_or(false);
    let content = if big {
        None
    } else {
        read_small(workdir, rel, deny, u64::MAX).and_then(|c| match c {
            Content::Text(..) => std::fs::read(workdir.join(rel)).ok(),
            Content::Binary => None,
        })
    };
    match content {
        Some(data) if !data.is_empty() => {
            let lines = line_count(&data);
            out.extend_from_slice(
                format!("--- /dev/null\n+++ b/{rel}\n@@ -0,0 +1,{lines} @@\n").as_bytes(),
            );
            for line in data.split_inclusive(|&b| b == b'\n') {
                out.push(b'+');
                out.extend_from_slice(line);
            }
            if !data.ends_with(b"\n") {
                out.extend_from_slice(b"\n\\ No newline at end of file\n");
            }
        }
        Some(_) => {}
        None => {
            out.extend_from_slice(format!("Binary files /dev/null and b/{rel} differ\n").as_bytes())
        }
    }
}

/// Where a session keeps its snapshots: `<dir>/objects` and `<dir>/turns`.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    pub dir: PathBuf,
}

impl SnapshotStore {
    fn objects(&self) -> PathBuf {
        self.dir.join("objects")
    }

    fn turn_file(&self, prompt_id: &str) -> PathBuf {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(prompt_id.as_bytes());
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join("turns").join(name)
    }

    /// Blocking. Records a turn's start and end trees.
    pub fn record_turn(&self, prompt_id: &str, start: &str, end: &str) -> std::io::Result<()> {
        let file = self.turn_file(prompt_id);
        if let Some(parent) = file.parent() {
            crate::datadir::create_dir_all(parent)?;
        }
        crate::datadir::write(&file, format!("{start} {end}\n"))
    }

    /// Blocking. A turn's start and end trees, when recorded.
    pub fn turn(&self, prompt_id: &str) -> Option<(String, String)> {
        let text = std::fs::read_to_string(self.turn_file(prompt_id)).ok()?;
        let (start, end) = text.trim().split_once(' ')?;
        Some((start.to_owned(), end.to_owned()))
    }
}

fn object_env<'a>(
    repo: &'a Repo,
    objects: &'a Path,
    index: Option<&'a Path>,
) -> Vec<(&'static str, &'a OsStr)> {
    let mut env = vec![
        ("GIT_OBJECT_DIRECTORY", objects.as_os_str()),
        ("GIT_ALTERNATE_OBJECT_DIRECTORIES", repo.objects.as_os_str()),
    ];
    if let Some(index) = index {
        env.push(("GIT_INDEX_FILE", index.as_os_str()));
    }
    env
}

/// The working tree of `workdir` as a tree object in `store`'s object directory,
/// or `None` when it is not in a repository.
pub async fn snapshot(
    ws: Arc<Workspace>,
    workdir: PathBuf,
    store: SnapshotStore,
) -> Result<Option<String>, WorkspaceError> {
    let Some(repo) = open(&ws, &workdir).await? else {
        return Ok(None);
    };
    let objects = store.objects();
    {
        let objects = objects.clone();
        tokio::task::spawn_blocking(move || crate::datadir::create_dir_all(&objects))
            .await
            .map_err(|e| WorkspaceError::Internal(e.to_string()))?
            .map_err(|e| WorkspaceError::io("creating the snapshot objects", e))?;
    }
    let copy = index_copy(&ws, &repo).await?;
    let env = object_env(&repo, &objects, Some(&copy.path));
    let args = os(&["ls-files", "-z", "--others", "--exclude-standard"]);
    let untracked = repo
        .git(
            "ls-files",
            &repo.workdir,
            &args,
            &env,
            None,
            8 * 1024 * 1024,
        )
        .await?
        .into_stdout()?;
    let big: Vec<(String, u64, i64)> = {
        let workdir = repo.workdir.clone();
        let untracked = nul_list(&untracked);
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::MetadataExt;
            untracked
                .into_iter()
                .filter_map(|rel| {
                    let meta = std::fs::symlink_metadata(workdir.join(&rel)).ok()?;
                    (meta.is_file() && meta.len() > MAX_UNTRACKED_CONTENT).then(|| {
                        (
                            rel,
                            meta.len(),
                            meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
                        )
                    })
                })
                .take(MAX_PLACEHOLDERS)
                .collect()
        })
        .await
        .map_err(|e| WorkspaceError::Internal(e.to_string()))?
    };
    let mut specs = b".\0".to_vec();
    for (rel, _, _) in &big {
        specs.extend_from_slice(format!(":(exclude,literal){rel}\0").as_bytes());
    }
    let args = os(&[
        "add",
        "-A",
        "--ignore-errors",
        "--pathspec-from-file=-",
        "--pathspec-file-nul",
    ]);
    let out = repo
        .git("add", &repo.workdir, &args, &env, Some(&specs), 64 * 1024)
        .await?;
    if !out.success && out.first_error_line().starts_with("fatal") {
        return Err(WorkspaceError::Git(out.first_error_line()));
    }
    if !big.is_empty() {
        let prefix = repo
            .workdir
            .strip_prefix(&repo.top)
            .unwrap_or(Path::new(""))
            .to_path_buf();
        let mut info = Vec::new();
        for (rel, size, mtime) in &big {
            let text = format!(
                "ccrelay: an untracked file over 1 MiB, content not kept ({size} bytes, modified at {mtime} ns)\n"
            );
            let args = os(&["hash-object", "-w", "--stdin"]);
            let out = repo
                .git(
                    "hash-object",
                    &repo.workdir,
                    &args,
                    &env,
                    Some(text.as_bytes()),
                    1024,
                )
                .await?
                .into_stdout()?;
            let id = String::from_utf8_lossy(&out).trim().to_owned();
            let full = prefix.join(rel);
            info.extend_from_slice(format!("100644 {id}\t").as_bytes());
            info.extend_from_slice(full.as_os_str().as_encoded_bytes());
            info.push(0);
        }
        let args = os(&["update-index", "-z", "--add", "--index-info"]);
        repo.git(
            "update-index",
            &repo.top,
            &args,
            &env,
            Some(&info),
            64 * 1024,
        )
        .await?
        .into_stdout()?;
    }
    let args = os(&["write-tree"]);
    let out = repo
        .git("write-tree", &repo.workdir, &args, &env, None, 1024)
        .await?
        .into_stdout()?;
    drop(copy);
    let tree = String::from_utf8_lossy(&out).trim().to_owned();
    if tree.is_empty() {
        return Err(WorkspaceError::Git(
            "git write-tree answered nothing".into(),
        ));
    }
    Ok(Some(tree))
}

/// What changed between two snapshots, under the workdir.
pub async fn changes(
    ws: Arc<Workspace>,
    workdir: PathBuf,
    store: SnapshotStore,
    from: String,
    to: String,
) -> Result<(Vec<FileChange>, bool), WorkspaceError> {
    let Some(repo) = open(&ws, &workdir).await? else {
        return Ok((Vec::new(), false));
    };
    let objects = store.objects();
    let env = object_env(&repo, &objects, None);
    let mut args = os(&[
        "diff-tree",
        "-r",
        "-z",
        "-M",
        "--raw",
        "--numstat",
        "--relative",
    ]);
    args.push(OsStr::new(&from));
    args.push(OsStr::new(&to));
    let out = repo
        .git(
            "diff-tree",
            &repo.workdir,
            &args,
            &env,
            None,
            8 * 1024 * 1024,
        )
        .await?;
    let mut truncated = out.stdout_capped;
    let mut files = parse_raw_numstat(&out.into_stdout()?);
    if files.len() > MAX_ENTRIES {
        files.truncate(MAX_ENTRIES);
        truncated = true;
    }
    Ok((files, truncated))
}

/// `files.diff` with base `turn:<prompt_id>`: that turn's changes.
pub async fn diff_turn(
    ws: Arc<Workspace>,
    workdir: PathBuf,
    store: SnapshotStore,
    prompt_id: String,
    path: Option<Confined>,
) -> Result<DiffView, WorkspaceError> {
    let Some(repo) = open(&ws, &workdir).await? else {
        return Err(WorkspaceError::NotARepository(crate::escape::quoted(
            &workdir.to_string_lossy(),
        )));
    };
    let recorded = {
        let store = store.clone();
        let id = prompt_id.clone();
        tokio::task::spawn_blocking(move || store.turn(&id))
            .await
            .map_err(|e| WorkspaceError::Internal(e.to_string()))?
    };
    let Some((from, to)) = recorded else {
        return Err(WorkspaceError::NotFound(format!(
            "no changes are recorded for turn {}",
            crate::escape::quoted(&prompt_id)
        )));
    };
    let objects = store.objects();
    let env = object_env(&repo, &objects, None);
    let spec = path.as_ref().map(pathspec);
    let mut args = os(&[
        "diff-tree",
        "-r",
        "-p",
        "-M",
        "--no-ext-diff",
        "--no-textconv",
        "--no-color",
        "--relative",
    ]);
    args.push(OsStr::new(&from));
    args.push(OsStr::new(&to));
    args.push(OsStr::new("--"));
    if let Some(spec) = &spec {
        args.push(OsStr::new(spec));
    }
    let out = repo
        .git(
            "diff-tree",
            &repo.workdir,
            &args,
            &env,
            None,
            MAX_DIFF_BYTES + 1,
        )
        .await?;
    let truncated = out.stdout_capped;
    let bytes = out.into_stdout()?;
    Ok(finish_diff(bytes, truncated, path.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_numstat_are_read_together() {
        let out = [
            ":000000 100644 0000 1111 A",
            "ad",
            ":100644 100644 2222 0000 M",
            "f",
            ":100644 100644 3333 3333 R100",
            "r",
            "r2",
            "1\t0\tad",
            "4\t1\tf",
            "0\t0\t",
            "r",
            "r2",
            "-\t-\tbin",
            "",
        ]
        .join("\0");
        let files = parse_raw_numstat(out.as_bytes());
        assert_eq!(files.len(), 3);
        assert_eq!(files[0].status, FileStatus::Added);
        assert_eq!((files[0].insertions, files[0].deletions), (1, 0));
        assert_eq!((files[1].insertions, files[1].deletions), (4, 1));
        assert_eq!(files[2].status, FileStatus::Renamed);
        assert_eq!(files[2].path, "r2");
        assert_eq!(files[2].from.as_deref(), Some("r"));
    }
}
