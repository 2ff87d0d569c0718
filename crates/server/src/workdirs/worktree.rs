//! Git worktrees for created sessions (docs/protocol.md §4, `session.create` with
//! `worktree`, `session.close` with `remove_worktree`).
//!
//! Where: [`default_worktree_path`] puts a session's worktree beside its
//! repository, outside the repository's own working tree:
//! `<repository's parent>/<repository's name>.worktrees/<session name>` (with
//! `-2`, `-3`, … appended when that exists). Creating is all or nothing: when
//! `git worktree add` fails or times out, the branch it made, the directories it
//! made and its worktree registration are removed again. Removing refuses a
//! worktree with changes other than ignored files and keeps the branch (the
//! session's commits stay reachable; deleting the branch is left to the person).
//! Every git run goes through [`super::git`].

use super::error::{WorkdirError, shown};
use super::git::{self, GitOutput, Limits};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The longest branch name or base revision accepted, in bytes.
const MAX_REF_BYTES: usize = 255;
/// How many `-N` suffixes [`default_worktree_path`] tries.
const MAX_SUFFIX: u32 = 1000;

/// A worktree the server created.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Worktree {
    /// The worktree's directory (the session's workdir).
    pub path: PathBuf,
    pub branch: String,
    /// The top level of the repository it belongs to.
    pub repository: PathBuf,
}

/// The top level of the git repository containing `dir`
/// (canonical), found without looking above `ceiling` (pass
/// [`git::ceiling_for_root`] of the session root: discovery never climbs above the
/// root). A repository whose working tree is configured elsewhere
/// (`core.worktree`), a bare one, or one whose top level does not contain `dir` is
/// [`WorkdirError::NotARepository`].
pub async fn repository_of_within(
    dir: &Path,
    ceiling: Option<&Path>,
) -> Result<PathBuf, WorkdirError> {
    let not_a_repository = || WorkdirError::NotARepository(shown(dir));
    let limits = Limits {
        ceiling,
        ..Limits::quick("rev-parse")
    };
    let out = git::run(
        dir,
        &["rev-parse".as_ref(), "--show-toplevel".as_ref()],
        limits,
    )
    .await?;
    if !out.success {
        return Err(not_a_repository());
    }
    let text = String::from_utf8(out.stdout).map_err(|_| not_a_repository())?;
    let top = text.strip_suffix('\n').unwrap_or(&text);
    if top.is_empty() {
        return Err(not_a_repository());
    }
    let limits = Limits {
        ceiling,
        ..Limits::quick("config")
    };
    let worktree_setting = git::run(
        dir,
        &[
            "config".as_ref(),
            "--get".as_ref(),
            "core.worktree".as_ref(),
        ],
        limits,
    )
    .await?;
    if worktree_setting.success {
        return Err(not_a_repository());
    }
    let top = tokio::fs::canonicalize(top)
        .await
        .map_err(|_| not_a_repository())?;
    if !dir.starts_with(&top) {
        return Err(not_a_repository());
    }
    Ok(top)
}

/// [`repository_of_within`] without a ceiling (discovery may climb to `/`).
pub async fn repository_of(dir: &Path) -> Result<PathBuf, WorkdirError> {
    repository_of_within(dir, None).await
}

/// A branch name `git check-ref-format --branch` accepts (a valid
/// `refs/heads/<name>`, not `HEAD`, not `@{-N}`), not starting with `-` (never an
/// option), at most 255 bytes; else `bad_message`.
pub fn validate_branch(name: &str) -> Result<(), WorkdirError> {
    if is_valid_branch(name) {
        Ok(())
    } else {
        Err(WorkdirError::BadBranch(name.to_owned()))
    }
}

fn is_valid_branch(name: &str) -> bool {
    if name.is_empty()
        || name.len() > MAX_REF_BYTES
        || name.starts_with('-')
        || name == "HEAD"
        || name == "@"
    {
        return false;
    }
    if name.starts_with('/') || name.ends_with('/') || name.ends_with('.') || name.contains("//") {
        return false;
    }
    if name.contains("..") || name.contains("@{") {
        return false;
    }
    if name
        .bytes()
        .any(|b| b < 0x20 || b == 0x7f || b" ~^:?*[\\".contains(&b))
    {
        return false;
    }
    name.split('/')
        .all(|c| !c.starts_with('.') && !c.ends_with(".lock"))
}

/// A base revision for a new branch: not empty, not starting with `-`, no NUL or
/// control characters, at most 255 bytes; git judges the rest.
fn validate_base(base: &str) -> Result<(), WorkdirError> {
    let ok = !base.is_empty()
        && base.len() <= MAX_REF_BYTES
        && !base.starts_with('-')
        && !base.bytes().any(|b| b < 0x20 || b == 0x7f);
    if ok {
        Ok(())
    } else {
        Err(WorkdirError::BadBranch(base.to_owned()))
    }
}

/// Blocking (looks at the file system). Where a session's worktree goes:
/// `<parent of repo>/<repo name>.worktrees/<session_name>`, or with `-2`, `-3`, …
/// when that path exists. `repo` is a repository's top level; `session_name` a
/// valid session name (docs/protocol.md §4).
pub fn default_worktree_path(repo: &Path, session_name: &str) -> PathBuf {
    let parent = repo.parent().unwrap_or(repo);
    let repo_name = repo
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "repository".to_owned());
    let holder = parent.join(format!("{repo_name}.worktrees"));
    let first = holder.join(session_name);
    if std::fs::symlink_metadata(&first).is_err() {
        return first;
    }
    (2..=MAX_SUFFIX)
        .map(|n| holder.join(format!("{session_name}-{n}")))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or_else(|| holder.join(format!("{session_name}-{}", uuid::Uuid::new_v4())))
}

fn args<'a>(list: &'a [&'a str]) -> Vec<&'a OsStr> {
    list.iter().map(|a| a.as_ref()).collect()
}

/// Whether `refs/heads/<branch>` exists in `repo`.
async fn branch_exists(repo: &Path, branch: &str) -> Result<bool, WorkdirError> {
    let reference = format!("refs/heads/{branch}");
    let out = git::run(
        repo,
        &args(&["rev-parse", "--verify", "--quiet", &reference]),
        Limits::quick("rev-parse"),
    )
    .await?;
    Ok(out.success)
}

/// Creates a worktree of `repo` (a top level from [`repository_of`]) at `path` (an
/// absolute path that does not exist yet, e.g. [`default_worktree_path`]) on a new
/// branch `branch` from `base` (default `HEAD`), with `git worktree add -b`, under
/// [`git::WORKTREE_TIMEOUT`]. An existing branch is `git_failed` with git's
/// message. On any failure nothing is left behind: no branch, no directory, no
/// worktree registration.
pub async fn create(
    repo: &Path,
    branch: &str,
    base: Option<&str>,
    path: &Path,
) -> Result<Worktree, WorkdirError> {
    validate_branch(branch)?;
    let base = base.unwrap_or("HEAD");
    validate_base(base)?;
    if !path.is_absolute() {
        return Err(WorkdirError::NotAbsolute(shown(path)));
    }
    if branch_exists(repo, branch).await? {
        return Err(WorkdirError::GitFailed(format!(
            "fatal: a branch named '{branch}' already exists"
        )));
    }
    // What is missing now is what a failure must remove again (deepest last).
    let mut created_dirs: Vec<PathBuf> = Vec::new();
    for ancestor in path.ancestors() {
        if tokio::fs::symlink_metadata(ancestor).await.is_ok() {
            break;
        }
        created_dirs.push(ancestor.to_path_buf());
    }
    let path_text = path.as_os_str();
    let add_args: [&OsStr; 6] = [
        "worktree".as_ref(),
        "add".as_ref(),
        "-b".as_ref(),
        branch.as_ref(),
        path_text,
        base.as_ref(),
    ];
    let limits = Limits {
        timeout: git::WORKTREE_TIMEOUT,
        ..Limits::quick("worktree add")
    };
    let result = match git::run(repo, &add_args, limits).await {
        Ok(out) => out.into_stdout().map(drop),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            let path = tokio::fs::canonicalize(path)
                .await
                .map_err(WorkdirError::io("resolving a new worktree"))?;
            Ok(Worktree {
                path,
                branch: branch.to_owned(),
                repository: repo.to_path_buf(),
            })
        }
        Err(e) => {
            undo_create(repo, branch, path, &created_dirs).await;
            Err(e)
        }
    }
}

/// Undoes a [`create`] whose session could not be recorded: removes the fresh
/// worktree (forced: nothing of the person's is in it yet) and its branch. Best
/// effort, like the undo of a failed create.
pub async fn discard(wt: &Worktree) {
    undo_create(
        &wt.repository,
        &wt.branch,
        &wt.path,
        std::slice::from_ref(&wt.path),
    )
    .await;
}

/// Removes what a failed `git worktree add` may have left: its registration (and
/// checkout), the directories that did not exist before, and the new branch. Best
/// effort: each step runs even when an earlier one fails.
async fn undo_create(repo: &Path, branch: &str, path: &Path, created_dirs: &[PathBuf]) {
    let limits = Limits {
        timeout: git::WORKTREE_TIMEOUT,
        ..Limits::quick("worktree remove")
    };
    if created_dirs.first().map(PathBuf::as_path) == Some(path) {
        // Forced twice: also when git left it locked mid-way.
        let remove: [&OsStr; 5] = [
            "worktree".as_ref(),
            "remove".as_ref(),
            "--force".as_ref(),
            "--force".as_ref(),
            path.as_os_str(),
        ];
        let _ = git::run(repo, &remove, limits).await;
        let _ = tokio::fs::remove_dir_all(path).await;
    }
    for dir in created_dirs.iter().skip(1) {
        // Only when empty: something else may have put files there meanwhile.
        if tokio::fs::remove_dir(dir).await.is_err() {
            break;
        }
    }
    // A registration whose directory is gone (git stopped before checking out).
    remove_stale_registration(repo, path).await;
    if branch_exists(repo, branch).await.unwrap_or(false) {
        let _ = git::run(
            repo,
            &args(&["branch", "-D", "--", branch]),
            Limits::quick("branch -D"),
        )
        .await;
    }
}

/// Removes the administrative directory of a worktree of `repo` registered at `path`.
async fn remove_stale_registration(repo: &Path, path: &Path) {
    let Ok(out) = git::run(
        repo,
        &args(&["worktree", "list", "--porcelain", "-z"]),
        Limits::quick("worktree list"),
    )
    .await
    else {
        return;
    };
    let registered = out
        .stdout
        .split(|&b| b == 0)
        .any(|field| field.strip_prefix(b"worktree ") == Some(path.as_os_str().as_encoded_bytes()));
    if registered {
        let prune: [&OsStr; 5] = [
            "worktree".as_ref(),
            "remove".as_ref(),
            "--force".as_ref(),
            "--force".as_ref(),
            path.as_os_str(),
        ];
        let _ = git::run(repo, &prune, Limits::quick("worktree remove")).await;
    }
}

/// Whether `path`'s working tree has no changes other than ignored files
/// (`git status --porcelain` prints nothing).
pub async fn is_clean(path: &Path) -> Result<bool, WorkdirError> {
    let limits = Limits {
        max_stdout: 1,
        ..Limits::quick("status")
    };
    let out: GitOutput = git::run(
        path,
        &args(&["status", "--porcelain", "--ignore-submodules=none"]),
        limits,
    )
    .await?;
    if !out.stdout.is_empty() {
        return Ok(false);
    }
    out.into_stdout().map(|_| true)
}

/// Removes the worktree `wt` with `git worktree remove` (never `--force`), keeping
/// its branch. Refused with `git_failed` ("… has uncommitted changes") when it has
/// changes other than ignored files; then nothing is removed. A worktree whose
/// directory is gone is `not_found`.
pub async fn remove(wt: &Worktree) -> Result<(), WorkdirError> {
    if tokio::fs::symlink_metadata(&wt.path).await.is_err() {
        return Err(WorkdirError::NotFound(shown(&wt.path)));
    }
    if !is_clean(&wt.path).await? {
        return Err(WorkdirError::Dirty(shown(&wt.path)));
    }
    let remove: [&OsStr; 3] = ["worktree".as_ref(), "remove".as_ref(), wt.path.as_os_str()];
    let limits = Limits {
        timeout: git::WORKTREE_TIMEOUT,
        ..Limits::quick("worktree remove")
    };
    git::run(&wt.repository, &remove, limits)
        .await?
        .into_stdout()
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::super::git::testing::*;
    use super::*;
    use ccrelay_protocol::ErrorCode;

    struct Fixture {
        _tmp: tempfile::TempDir,
        base: PathBuf,
        repo: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let repo = base.join("api");
        init_repo(&repo);
        Fixture {
            _tmp: tmp,
            base,
            repo,
        }
    }

    fn worktree_list(repo: &Path) -> String {
        git_ok(repo, &["worktree", "list", "--porcelain"])
    }

    fn branches(repo: &Path) -> String {
        git_ok(repo, &["branch", "--list", "--format=%(refname:short)"])
    }

    #[tokio::test]
    async fn finds_the_top_level_and_refuses_what_is_not_a_repository() {
        let f = fixture();
        let sub = f.repo.join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert_eq!(repository_of(&sub).await.unwrap(), f.repo);
        let plain = f.base.join("plain");
        std::fs::create_dir(&plain).unwrap();
        // The temp dir is not in a repository, but stop at base to be sure.
        let err = repository_of_within(&plain, Some(&f.base))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotARepository);
        // The ceiling: a root inside the repository does not see it.
        let err = repository_of_within(&sub, git::ceiling_for_root(&sub).as_deref())
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotARepository);
        // core.worktree elsewhere: refused.
        let other = f.base.join("elsewhere");
        std::fs::create_dir(&other).unwrap();
        git_ok(
            &f.repo,
            &["config", "core.worktree", other.to_str().unwrap()],
        );
        let err = repository_of(&sub).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotARepository);
    }

    #[test]
    fn branch_names_follow_check_ref_format() {
        let names = [
            "fix-login",
            "ccrelay/api",
            "a.b",
            "-x",
            "HEAD",
            "@",
            "a..b",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            "/a",
            "a/",
            "a//b",
            ".a",
            "a/.b",
            "a.lock",
            "a/b.lock/c",
            "a.",
            "a@{1}",
            "é",
            "a\tb",
            "@{-1}",
            "x@y",
            "",
        ];
        for name in names {
            let ours = is_valid_branch(name);
            let out = git(Path::new("/"), &["check-ref-format", "--branch", name]);
            // Stricter than git on purpose: `@` alone (git's shorthand for HEAD).
            let theirs = out.status.success() && !name.starts_with('-') && name != "@";
            assert_eq!(ours, theirs, "{name:?}");
        }
        assert_eq!(
            validate_branch("-f").unwrap_err().code(),
            ErrorCode::BadMessage
        );
        assert!(validate_branch(&"a".repeat(300)).is_err());
    }

    #[test]
    fn the_default_path_is_beside_the_repository_and_unique() {
        let f = fixture();
        let first = default_worktree_path(&f.repo, "api");
        assert_eq!(first, f.base.join("api.worktrees/api"));
        assert!(!first.starts_with(&f.repo));
        std::fs::create_dir_all(&first).unwrap();
        assert_eq!(
            default_worktree_path(&f.repo, "api"),
            f.base.join("api.worktrees/api-2")
        );
    }

    #[tokio::test]
    async fn create_list_remove_keeps_the_branch() {
        let f = fixture();
        let path = default_worktree_path(&f.repo, "s1");
        let wt = create(&f.repo, "ccrelay/s1", None, &path).await.unwrap();
        assert_eq!(wt.path, path);
        assert_eq!(wt.repository, f.repo);
        assert!(path.join("README").is_file());
        assert!(worktree_list(&f.repo).contains(path.to_str().unwrap()));
        assert_eq!(
            git_ok(&path, &["branch", "--show-current"]).trim(),
            "ccrelay/s1"
        );
        assert!(is_clean(&path).await.unwrap());
        // Ignored files do not make it dirty.
        std::fs::write(path.join(".gitignore"), "*.log\n").unwrap();
        git_ok(&path, &["add", ".gitignore"]);
        git_ok(&path, &["commit", "-q", "-m", "ignore logs"]);
        std::fs::write(path.join("debug.log"), "x").unwrap();
        assert!(is_clean(&path).await.unwrap());
        remove(&wt).await.unwrap();
        assert!(!path.exists());
        assert!(!worktree_list(&f.repo).contains(path.to_str().unwrap()));
        assert!(branches(&f.repo).lines().any(|b| b == "ccrelay/s1"));
        assert_eq!(remove(&wt).await.unwrap_err().code(), ErrorCode::NotFound);
    }

    #[tokio::test]
    async fn a_dirty_worktree_is_not_removed() {
        let f = fixture();
        let path = default_worktree_path(&f.repo, "s1");
        let wt = create(&f.repo, "s1", Some("main"), &path).await.unwrap();
        std::fs::write(path.join("README"), "changed\n").unwrap();
        let err = remove(&wt).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::GitFailed);
        assert!(err.to_string().contains("uncommitted changes"), "{err}");
        assert!(path.join("README").is_file());
        assert!(worktree_list(&f.repo).contains(path.to_str().unwrap()));
        // An untracked file counts too.
        git_ok(&path, &["checkout", "--", "README"]);
        std::fs::write(path.join("new.txt"), "x").unwrap();
        assert!(!is_clean(&path).await.unwrap());
        assert_eq!(remove(&wt).await.unwrap_err().code(), ErrorCode::GitFailed);
    }

    /// Nothing of a failed create is left: branch, directories, registration.
    fn assert_nothing_left(f: &Fixture, branch: &str, created: &Path) {
        assert!(
            !branches(&f.repo).lines().any(|b| b == branch),
            "{}",
            branches(&f.repo)
        );
        assert!(!created.exists(), "{created:?} left");
        let list = worktree_list(&f.repo);
        assert_eq!(list.matches("worktree ").count(), 1, "{list}");
        let admin = f.repo.join(".git/worktrees");
        assert!(!admin.exists() || std::fs::read_dir(&admin).unwrap().next().is_none());
    }

    #[tokio::test]
    async fn a_failed_create_leaves_nothing() {
        let f = fixture();
        // An existing branch: git's message, and the branch is kept (it was not ours).
        git_ok(&f.repo, &["branch", "taken"]);
        let path = default_worktree_path(&f.repo, "s");
        let err = create(&f.repo, "taken", None, &path).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::GitFailed);
        assert!(err.to_string().contains("already exists"), "{err}");
        assert!(branches(&f.repo).lines().any(|b| b == "taken"));
        assert!(!f.base.join("api.worktrees").exists());

        // A bad base.
        let err = create(&f.repo, "b1", Some("no-such-base"), &path)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::GitFailed);
        assert_nothing_left(&f, "b1", &f.base.join("api.worktrees"));

        // A path git cannot create, found after git made the branch: under a file.
        let file = f.base.join("a-file");
        std::fs::write(&file, "x").unwrap();
        let err = create(&f.repo, "b2", None, &file.join("wt"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::GitFailed);
        assert_nothing_left(&f, "b2", &file.join("wt"));

        // An existing non-empty directory (git checks it after making the branch):
        // the directory is kept, the branch is not.
        let full = f.base.join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("keep.txt"), "mine").unwrap();
        let err = create(&f.repo, "b3", None, &full).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::GitFailed);
        assert!(full.join("keep.txt").is_file());
        assert!(
            !branches(&f.repo).lines().any(|b| b == "b3"),
            "{}",
            branches(&f.repo)
        );

        // Refused before git runs.
        assert_eq!(
            create(&f.repo, "-x", None, &path).await.unwrap_err().code(),
            ErrorCode::BadMessage
        );
        assert_eq!(
            create(&f.repo, "b4", Some("--orphan"), &path)
                .await
                .unwrap_err()
                .code(),
            ErrorCode::BadMessage
        );
        assert_eq!(
            create(&f.repo, "b5", None, Path::new("rel/path"))
                .await
                .unwrap_err()
                .code(),
            ErrorCode::BadMessage
        );
    }

    #[tokio::test]
    async fn a_hostile_repository_runs_none_of_its_programs() {
        let f = fixture();
        let markers = f.base.join("markers");
        std::fs::create_dir(&markers).unwrap();
        let m = |name: &str| markers.join(name).to_str().unwrap().to_owned();
        // Files under a filter and a diff driver, committed before the config names them.
        std::fs::write(
            f.repo.join(".gitattributes"),
            "*.txt filter=evil diff=evil\n*.dat filter=proc\n",
        )
        .unwrap();
        std::fs::write(f.repo.join("a.txt"), "text\n").unwrap();
        std::fs::write(f.repo.join("b.dat"), "data\n").unwrap();
        git_ok(&f.repo, &["add", "."]);
        git_ok(&f.repo, &["commit", "-q", "-m", "attributes"]);
        let script = |name: &str, body: &str| {
            let path = f.base.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::os::unix::fs::PermissionsExt::set_mode(
                &mut std::fs::metadata(&path).unwrap().permissions(),
                0o755,
            );
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            path.to_str().unwrap().to_owned()
        };
        let fsmonitor = script("fsmonitor.sh", &format!("touch {}", m("fsmonitor")));
        let config = [
            ("core.fsmonitor", fsmonitor),
            ("core.pager", format!("touch {}; cat", m("pager"))),
            ("filter.evil.smudge", format!("touch {}; cat", m("smudge"))),
            ("filter.evil.clean", format!("touch {}; cat", m("clean"))),
            ("filter.evil.required", "true".to_owned()),
            ("filter.proc.process", format!("touch {}", m("process"))),
            ("filter.proc.required", "true".to_owned()),
            (
                "diff.evil.textconv",
                format!("touch {}; cat", m("textconv")),
            ),
            ("diff.external", format!("touch {}", m("external"))),
        ];
        for (key, value) in &config {
            git_ok(&f.repo, &["config", key, value]);
        }
        let hooks = f.repo.join(".git/hooks");
        for hook in [
            "post-checkout",
            "reference-transaction",
            "post-index-change",
            "pre-commit",
        ] {
            let path = hooks.join(hook);
            std::fs::write(&path, format!("#!/bin/sh\ntouch {}\n", m(hook))).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }

        // The test can fail: plain git in this repository does run them. First
        // without the process filter (which fails a checkout: it does not speak
        // the protocol) so that the checkout completes, then with it.
        let control = f.base.join("control");
        let control = control.to_str().unwrap();
        let args = [
            "-c",
            "filter.proc.process=",
            "-c",
            "filter.proc.required=false",
            "worktree",
            "add",
            "-b",
            "control",
            control,
        ];
        git_ok(&f.repo, &args);
        let control_2 = f.base.join("control-2");
        let _ = git(
            &f.repo,
            &[
                "worktree",
                "add",
                "-b",
                "control-2",
                control_2.to_str().unwrap(),
            ],
        );
        let fired: Vec<String> = std::fs::read_dir(&markers)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        for expected in [
            "smudge",
            "process",
            "fsmonitor",
            "reference-transaction",
            "post-checkout",
        ] {
            assert!(
                fired.iter().any(|n| n == expected),
                "plain git did not run {expected}: {fired:?}"
            );
        }
        for entry in std::fs::read_dir(&markers).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }

        let path = default_worktree_path(&f.repo, "s");
        let wt = create(&f.repo, "s", None, &path).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(path.join("a.txt")).unwrap(),
            "text\n"
        );
        assert!(is_clean(&path).await.unwrap());
        remove(&wt).await.unwrap();
        // And a failed create's undo.
        let _ = create(&f.repo, "t", Some("no-such-base"), &path)
            .await
            .unwrap_err();
        let _ = repository_of(&f.repo).await.unwrap();
        let fired: Vec<String> = std::fs::read_dir(&markers)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(fired.is_empty(), "programs ran: {fired:?}");
    }
}
