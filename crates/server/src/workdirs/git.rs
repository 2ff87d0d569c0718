//! The one way git runs here, hygienically (docs/protocol.md §11, "Git hygiene"):
//! no program that the repository's or the user's git configuration names ever
//! runs on the relay's behalf.
//!
//! Every run: `tokio::process::Command` in its own process group, killed (the whole
//! group) when its time limit passes or its future is dropped; stdin null; stdout
//! and stderr read up to a cap; `--no-pager`; `GIT_TERMINAL_PROMPT=0` (no credential
//! prompts), `GIT_OPTIONAL_LOCKS=0` (a status does not rewrite the index);
//! inherited `GIT_*` variables that would redirect git (`GIT_DIR`,
//! `GIT_CONFIG_PARAMETERS`, `GIT_EXTERNAL_DIFF`, `GIT_SSH_COMMAND`, …) removed, except
//! where the user keeps config (`GIT_CONFIG_GLOBAL`, `GIT_CONFIG_SYSTEM`,
//! `GIT_CONFIG_NOSYSTEM`); and configuration given through `GIT_CONFIG_COUNT` (any
//! key, even one whose driver name holds `=`, and it outranks every config file):
//! `core.hooksPath=/dev/null` (no hook can be found, `reference-transaction` and
//! `post-index-change` included), `core.fsmonitor=false`, `core.pager=cat`,
//! `diff.external=`, `credential.helper=`, `core.sshCommand=`, `core.askPass=`,
//! `core.editor=:` and `sequence.editor=:`, and for every
//! `filter.<driver>`, `diff.<driver>` and `merge.<driver>` any configuration
//! defines (read first with `git config --get-regexp`, which runs nothing): its
//! `clean`, `smudge`, `process`, `textconv`, `command` and `driver` emptied and
//! `required=false`. A file under an emptied filter is checked out as stored (an
//! LFS file as its pointer).
//!
//! `GIT_CONFIG_NOSYSTEM` is not set: the system file also holds settings normal
//! use needs (`safe.directory`, `core.sharedRepository`), and every program it can
//! name is overridden above like the user's and the repository's.

use super::error::WorkdirError;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The time limit of a quick git run (docs/protocol.md §11).
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(5);
/// The time limit of `git worktree add` and `git worktree remove`, which check out
/// or delete a whole tree.
pub const WORKTREE_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of git's error output is kept (its first line is what clients see).
const MAX_STDERR: usize = 64 * 1024;
/// How much output a run keeps when the caller sets no cap.
pub const DEFAULT_MAX_STDOUT: usize = 1024 * 1024;

/// Inherited variables kept: where the user's own config files are.
const KEPT_GIT_VARS: &[&str] = &[
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_NOSYSTEM",
];

/// Fixed overrides of every run (see the module doc).
const FIXED_CONFIG: &[(&str, &str)] = &[
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    ("core.pager", "cat"),
    ("diff.external", ""),
    ("credential.helper", ""),
    ("core.sshCommand", ""),
    ("core.askPass", ""),
    ("core.editor", ":"),
    ("sequence.editor", ":"),
    // Index writes (only ever to a private copy, or a new worktree's) stay one
    // file: no shared index written into the repository, no automatic gc.
    ("core.splitIndex", "false"),
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
];

/// The driver settings that name programs, per driver section.
const DRIVER_PROGRAM_KEYS: &[&str] = &[
    "clean", "smudge", "process", "textconv", "command", "driver",
];

/// What a run may cost and how it is named in errors.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// What git does, for "git <what> timed out".
    pub what: &'static str,
    pub timeout: Duration,
    /// Bytes of stdout kept; past them git's stdout is closed (it stops).
    pub max_stdout: usize,
    /// Repository discovery never looks at this directory or above
    /// (`GIT_CEILING_DIRECTORIES`).
    pub ceiling: Option<&'a Path>,
    /// Where this run keeps its index and objects instead of the repository's:
    /// only [`REDIRECT_VARS`] are set, every other name is ignored.
    pub env: &'a [(&'static str, &'a OsStr)],
    /// Bytes written to git's stdin (then closed); none: stdin is null.
    pub stdin: Option<&'a [u8]>,
}

/// The variables a run may set to keep its writes out of the repository
/// (docs/protocol.md §11: per-turn changes live in the data dir).
pub const REDIRECT_VARS: &[&str] = &[
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
];

impl Limits<'_> {
    /// A quick run (5 s, 1 MiB of output, no ceiling).
    pub fn quick(what: &'static str) -> Limits<'static> {
        Limits {
            what,
            timeout: QUICK_TIMEOUT,
            max_stdout: DEFAULT_MAX_STDOUT,
            ceiling: None,
            env: &[],
            stdin: None,
        }
    }
}

/// What one run gave.
#[derive(Debug)]
pub struct GitOutput {
    pub success: bool,
    pub stdout: Vec<u8>,
    /// stdout reached `max_stdout` (and was closed).
    pub stdout_capped: bool,
    pub stderr: Vec<u8>,
}

impl GitOutput {
    /// Git's first non-empty line of error output (its `fatal: …`), or a fallback.
    pub fn first_error_line(&self) -> String {
        String::from_utf8_lossy(&self.stderr)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("git failed without a message")
            .to_owned()
    }

    /// `Ok(stdout)` on success, else [`WorkdirError::GitFailed`] with git's first line.
    pub fn into_stdout(self) -> Result<Vec<u8>, WorkdirError> {
        if self.success {
            Ok(self.stdout)
        } else {
            Err(WorkdirError::GitFailed(self.first_error_line()))
        }
    }
}

/// Runs `git <args>` in `dir` with every override of the module doc, including
/// the driver overrides found by a first, program-free `git config --get-regexp`.
pub async fn run(
    dir: &Path,
    args: &[&OsStr],
    limits: Limits<'_>,
) -> Result<GitOutput, WorkdirError> {
    let mut config: Vec<(String, String)> = FIXED_CONFIG
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    config.extend(driver_overrides(dir, limits).await?);
    run_with_config(dir, args, limits, &config).await
}

/// Overrides for every filter, diff and merge driver the configuration defines.
async fn driver_overrides(
    dir: &Path,
    limits: Limits<'_>,
) -> Result<Vec<(String, String)>, WorkdirError> {
    let fixed: Vec<(String, String)> = FIXED_CONFIG
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let args: [&OsStr; 4] = [
        "config".as_ref(),
        "-z".as_ref(),
        "--get-regexp".as_ref(),
        r"^(filter|diff|merge)\.".as_ref(),
    ];
    let probe = Limits {
        what: "config",
        timeout: QUICK_TIMEOUT.min(limits.timeout),
        max_stdout: DEFAULT_MAX_STDOUT,
        ceiling: limits.ceiling,
        env: &[],
        stdin: None,
    };
    let out = run_with_config(dir, &args, probe, &fixed).await?;
    // Exit 1 means "no such keys"; anything else unsuccessful is an error (a
    // broken config file would make the real run fail too).
    if !out.success && !out.stderr.is_empty() {
        return Err(WorkdirError::GitFailed(out.first_error_line()));
    }
    if out.stdout_capped {
        return Err(WorkdirError::GitFailed(
            "the git configuration defines too many drivers".into(),
        ));
    }
    let mut drivers: Vec<(String, String)> = Vec::new();
    // -z: each entry is `key\nvalue\0` (`key\0` when the key has no value).
    for entry in out.stdout.split(|&b| b == 0).filter(|e| !e.is_empty()) {
        let key = entry.split(|&b| b == b'\n').next().unwrap_or_default();
        let key = String::from_utf8_lossy(key);
        // section.subsection.variable: the driver is between the first and last dot.
        let (Some(first), Some(last)) = (key.find('.'), key.rfind('.')) else {
            continue;
        };
        if last <= first {
            continue;
        }
        let section = &key[..first];
        let driver = &key[first + 1..last];
        if !drivers.iter().any(|(s, d)| s == section && d == driver) {
            drivers.push((section.to_owned(), driver.to_owned()));
        }
    }
    let mut overrides = Vec::new();
    for (section, driver) in drivers {
        for variable in DRIVER_PROGRAM_KEYS {
            overrides.push((format!("{section}.{driver}.{variable}"), String::new()));
        }
        if section == "filter" {
            overrides.push((format!("filter.{driver}.required"), "false".to_owned()));
        }
    }
    Ok(overrides)
}

/// The hygienic run itself, with exactly `config` as command-line configuration.
async fn run_with_config(
    dir: &Path,
    args: &[&OsStr],
    limits: Limits<'_>,
    config: &[(String, String)],
) -> Result<GitOutput, WorkdirError> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("--no-pager").args(args).current_dir(dir);
    for (name, _) in std::env::vars_os() {
        if let Some(name) = name.to_str()
            && name.starts_with("GIT_")
            && !KEPT_GIT_VARS.contains(&name)
        {
            cmd.env_remove(name);
        }
    }
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_PAGER", "cat")
        .env("PAGER", "cat")
        .env("GIT_ASKPASS", "")
        .env("SSH_ASKPASS", "")
        .env("GIT_CONFIG_COUNT", config.len().to_string());
    for (i, (key, value)) in config.iter().enumerate() {
        cmd.env(format!("GIT_CONFIG_KEY_{i}"), key)
            .env(format!("GIT_CONFIG_VALUE_{i}"), value);
    }
    if let Some(ceiling) = limits.ceiling {
        let mut value = OsString::from(ceiling);
        if value.is_empty() {
            value = OsString::from("/");
        }
        cmd.env("GIT_CEILING_DIRECTORIES", value);
    }
    for (name, value) in limits.env {
        if REDIRECT_VARS.contains(name) {
            cmd.env(name, value);
        }
    }
    cmd.stdin(if limits.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true)
    .process_group(0);
    let mut child = cmd.spawn().map_err(WorkdirError::io("starting git"))?;
    let group = child.id();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let stdin = child.stdin.take();
    let input = limits.stdin.unwrap_or_default();
    let work = async {
        let feed = async {
            if let Some(mut pipe) = stdin {
                // Git may stop reading early; its exit status tells why.
                let _ = tokio::io::AsyncWriteExt::write_all(&mut pipe, input).await;
            }
        };
        let ((), stdout, stderr) = tokio::join!(
            feed,
            read_capped(stdout, limits.max_stdout),
            read_capped(stderr, MAX_STDERR)
        );
        let status = child.wait().await;
        (status, stdout, stderr)
    };
    match tokio::time::timeout(limits.timeout, work).await {
        Ok((status, (stdout, stdout_capped), (stderr, _))) => {
            let status = status.map_err(WorkdirError::io("waiting for git"))?;
            Ok(GitOutput {
                success: status.success(),
                stdout,
                stdout_capped,
                stderr,
            })
        }
        Err(_) => {
            kill_group(group);
            Err(WorkdirError::GitTimedOut {
                what: limits.what,
                secs: limits.timeout.as_secs(),
            })
        }
    }
}

/// Kills git's process group (git and anything it started); the child itself is
/// also killed when its handle drops (`kill_on_drop`).
fn kill_group(group: Option<u32>) {
    if let Some(pid) = group.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Up to `cap` bytes of `pipe`, and whether the cap was reached (then the pipe is
/// closed, so the writer stops instead of blocking).
async fn read_capped<R: AsyncRead + Unpin>(pipe: Option<R>, cap: usize) -> (Vec<u8>, bool) {
    let Some(pipe) = pipe else {
        return (Vec::new(), false);
    };
    let mut out = Vec::new();
    let mut limited = pipe.take(cap as u64 + 1);
    // A read error ends the output where it is; the exit status tells the rest.
    let _ = limited.read_to_end(&mut out).await;
    let capped = out.len() > cap;
    out.truncate(cap);
    (out, capped)
}

/// `GIT_CEILING_DIRECTORIES` for discovery that may reach `root` but not above it.
pub fn ceiling_for_root(root: &Path) -> Option<PathBuf> {
    root.parent().map(Path::to_path_buf)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Real repositories for tests, made with a plain `git` that reads no user or
    //! system configuration of this machine.

    use std::path::Path;
    use std::process::Command;

    /// Runs plain git (no hygiene: this is the test's own setup) in `dir`.
    pub fn git(dir: &Path, args: &[&str]) -> std::process::Output {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }

    /// Like [`git`], asserting success.
    pub fn git_ok(dir: &Path, args: &[&str]) -> String {
        let out = git(dir, args);
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A repository at `dir` (created) with one commit on `main`.
    pub fn init_repo(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        git_ok(dir, &["init", "-q", "-b", "main"]);
        std::fs::write(dir.join("README"), "hello\n").unwrap();
        git_ok(dir, &["add", "README"]);
        git_ok(dir, &["commit", "-q", "-m", "first"]);
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[tokio::test]
    async fn runs_git_and_reports_its_first_error_line() {
        let tmp = tempfile::tempdir().unwrap();
        init_repo(tmp.path());
        let out = run(
            tmp.path(),
            &["rev-parse".as_ref(), "HEAD".as_ref()],
            Limits::quick("rev-parse"),
        )
        .await
        .unwrap();
        assert!(out.success);
        assert_eq!(out.stdout.len(), 41);
        let err = run(
            tmp.path(),
            &["rev-parse".as_ref(), "--verify".as_ref(), "nope".as_ref()],
            Limits::quick("rev-parse"),
        )
        .await
        .unwrap()
        .into_stdout()
        .unwrap_err();
        assert_eq!(err.code(), ccrelay_protocol::ErrorCode::GitFailed);
        assert!(err.to_string().contains("fatal"), "{err}");
    }

    #[tokio::test]
    async fn output_is_capped() {
        let tmp = tempfile::tempdir().unwrap();
        init_repo(tmp.path());
        let limits = Limits {
            max_stdout: 10,
            ..Limits::quick("log")
        };
        let out = run(tmp.path(), &["log".as_ref()], limits).await.unwrap();
        assert_eq!(out.stdout.len(), 10);
        assert!(out.stdout_capped);
    }

    #[tokio::test]
    async fn a_run_past_its_limit_is_killed_and_says_it_timed_out() {
        let tmp = tempfile::tempdir().unwrap();
        init_repo(tmp.path());
        // A config include that is a FIFO nobody writes: git blocks opening it.
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        git_ok(
            tmp.path(),
            &["config", "include.path", fifo.to_str().unwrap()],
        );
        let limits = Limits {
            timeout: Duration::from_millis(300),
            ..Limits::quick("status")
        };
        let err = run(tmp.path(), &["status".as_ref()], limits)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ccrelay_protocol::ErrorCode::GitFailed);
        assert!(err.to_string().contains("timed out"), "{err}");
    }

    #[tokio::test]
    async fn the_ceiling_stops_discovery() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        init_repo(&repo);
        let sub = repo.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let args: [&OsStr; 2] = ["rev-parse".as_ref(), "--show-toplevel".as_ref()];
        let found = run(&sub, &args, Limits::quick("rev-parse")).await.unwrap();
        assert!(found.success);
        let limits = Limits {
            ceiling: Some(&repo),
            ..Limits::quick("rev-parse")
        };
        let stopped = run(&sub, &args, limits).await.unwrap();
        assert!(!stopped.success);
    }
}
