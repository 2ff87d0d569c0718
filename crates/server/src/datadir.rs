//! Owner-only files: the data dir and everything ccrelay writes in it.
//!
//! Owns: the modes (0700 directories, 0600 files) set *at creation* through the
//! helpers here, the server's umask (077, so a file created anywhere else in the
//! server is owner-only too; the agent gets the original umask back, see
//! [`original_umask`]), and the start-up check of the data dir: refuse one owned by
//! another user or writable by group/others, tighten what older versions left
//! readable. Journals hold whole transcripts, the audit log who allowed what, so
//! nothing in here is for anyone but the server's user. Must not: decide what
//! goes in the files (journal, audit, session, server id own that).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// `$HOME`, if set and non-empty.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// The data dir when none is given: `$XDG_STATE_HOME/ccrelay`, else `~/.local/state/ccrelay`.
pub fn default_data_dir() -> PathBuf {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(state).join("ccrelay");
    }
    home_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".local/state/ccrelay")
}

/// Mode of every directory under the data dir.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file under the data dir.
pub const FILE_MODE: u32 = 0o600;
/// The umask the server runs with.
const SERVER_UMASK: u32 = 0o077;
/// No umask recorded yet.
const UNSET: u32 = u32::MAX;

static ORIGINAL_UMASK: AtomicU32 = AtomicU32::new(UNSET);

/// Why the data dir cannot be used (a configuration error: exit 2, `--data-dir`).
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a directory")]
    NotDir { path: PathBuf },
    #[error(
        "{path} is owned by uid {owner}, not by this user (uid {me}); refusing to keep data there"
    )]
    NotOwner { path: PathBuf, owner: u32, me: u32 },
    #[error(
        "{path} is writable by group or others (mode {mode:04o}); refusing to keep data there (chmod 700 it)"
    )]
    Writable { path: PathBuf, mode: u32 },
}

/// Check the data dir (creating it owner-only if missing), refuse an unsafe one,
/// tighten every directory and file already in it to 0700/0600, and set the
/// server's umask to 077.
pub fn prepare(dir: &Path) -> Result<(), DataDirError> {
    set_server_umask();
    check_and_tighten(dir)
}

/// [`prepare`] without touching the process umask.
fn check_and_tighten(dir: &Path) -> Result<(), DataDirError> {
    create_dir_all(dir).map_err(|source| DataDirError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    let meta = std::fs::metadata(dir).map_err(|source| DataDirError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    check_dir(dir, &meta, me)?;
    tighten_tree(dir);
    Ok(())
}

/// The ownership and mode rule, apart from the file system (unit-tested).
fn check_dir(dir: &Path, meta: &std::fs::Metadata, me: u32) -> Result<(), DataDirError> {
    if !meta.is_dir() {
        return Err(DataDirError::NotDir {
            path: dir.to_path_buf(),
        });
    }
    check_mode(dir, meta.uid(), meta.mode(), me)
}

fn check_mode(dir: &Path, owner: u32, mode: u32, me: u32) -> Result<(), DataDirError> {
    if owner != me {
        return Err(DataDirError::NotOwner {
            path: dir.to_path_buf(),
            owner,
            me,
        });
    }
    let mode = mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(DataDirError::Writable {
            path: dir.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Walk the tree (never following symlinks) and take group/other bits off every
/// directory and regular file: what an older version created with the default
/// umask becomes owner-only before anything reads it.
fn tighten_tree(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() && !meta.is_file() {
            continue;
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            let tightened = mode & !0o077;
            match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(tightened)) {
                Ok(()) => tracing::info!(
                    path = %path.display(),
                    from = format!("{mode:04o}"),
                    to = format!("{tightened:04o}"),
                    "data dir: made owner-only"
                ),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "data dir: cannot make owner-only"
                ),
            }
        }
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
        }
    }
}

/// Set the process umask to 077 once, remembering the original for child processes.
fn set_server_umask() {
    if ORIGINAL_UMASK.load(Ordering::Acquire) != UNSET {
        return;
    }
    // SAFETY: umask only swaps the process's file-mode mask.
    let old = unsafe { libc::umask(SERVER_UMASK as libc::mode_t) } as u32;
    if ORIGINAL_UMASK
        .compare_exchange(UNSET, old, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // Another caller got there first; keep its record (the mask is 077 either way).
    }
}

/// The umask the process had before the server set 077, if it did: the agent is
/// started with it, so the files it creates in the user's project keep their
/// usual modes. Async-signal-safe (read in `pre_exec`).
pub fn original_umask() -> Option<u32> {
    match ORIGINAL_UMASK.load(Ordering::Acquire) {
        UNSET => None,
        m => Some(m),
    }
}

/// `mkdir -p` with 0700 for every directory it creates.
pub fn create_dir_all(path: &Path) -> std::io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// `OpenOptions` whose `create` makes a 0600 file.
pub fn open_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Create or replace `path` with `contents`, 0600 from the first byte.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    let mut f: File = open_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(contents.as_ref())
}

/// Replace `path` atomically: a 0600 temp file beside it (0600 even when a stale
/// temp file with another mode was left there), synced, then renamed over `path`.
pub fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f: File = open_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
        f.write_all(contents.as_ref())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn helpers_create_owner_only() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b/c");
        create_dir_all(&d).unwrap();
        assert_eq!(mode_of(&t.path().join("a")), 0o700);
        assert_eq!(mode_of(&d), 0o700);
        write(&d.join("f"), "x").unwrap();
        assert_eq!(mode_of(&d.join("f")), 0o600);
        write_atomic(&d.join("g"), "y").unwrap();
        assert_eq!(mode_of(&d.join("g")), 0o600);
        assert!(!d.join("g.tmp").exists());
        let f = open_options()
            .create(true)
            .append(true)
            .open(d.join("h"))
            .unwrap();
        drop(f);
        assert_eq!(mode_of(&d.join("h")), 0o600);
    }

    #[test]
    fn ownership_and_write_bits_are_refused() {
        let p = Path::new("/data");
        assert!(check_mode(p, 1000, 0o40700, 1000).is_ok());
        assert!(check_mode(p, 1000, 0o40755, 1000).is_ok());
        assert!(matches!(
            check_mode(p, 0, 0o40700, 1000),
            Err(DataDirError::NotOwner {
                owner: 0,
                me: 1000,
                ..
            })
        ));
        for mode in [0o40777, 0o40770, 0o40702, 0o40720] {
            let e = check_mode(p, 1000, mode, 1000).unwrap_err();
            assert!(matches!(e, DataDirError::Writable { .. }), "{mode:o}");
            assert!(e.to_string().contains("writable by group or others"));
        }
    }

    #[test]
    fn tightens_what_an_older_version_left_readable() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("data");
        std::fs::create_dir_all(root.join("sessions/default/journal")).unwrap();
        for d in [
            "",
            "sessions",
            "sessions/default",
            "sessions/default/journal",
        ] {
            std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let file = root.join("sessions/default/journal/00000000000000000001.log");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        // A symlink out of the tree is not followed.
        let outside = t.path().join("outside");
        std::fs::write(&outside, "o").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        check_and_tighten(&root).unwrap();
        assert_eq!(mode_of(&root), 0o700);
        assert_eq!(mode_of(&root.join("sessions/default/journal")), 0o700);
        assert_eq!(mode_of(&file), 0o600);
        assert_eq!(mode_of(&outside), 0o644);
    }

    #[test]
    fn a_data_dir_writable_by_others_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("data");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_and_tighten(&root).unwrap_err();
        assert!(
            matches!(e, DataDirError::Writable { mode: 0o777, .. }),
            "{e}"
        );
        // Refused, not "fixed": the mode is left for the operator to look at.
        assert_eq!(mode_of(&root), 0o777);
    }
}
