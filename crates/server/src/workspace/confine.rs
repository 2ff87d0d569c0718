//! Which paths a workspace request may reach (docs/protocol.md §11): relative to
//! the workdir, no NUL, no `..`, nothing under `.git/`, and resolved (symlinks
//! followed) inside the workdir and outside the data dir, the CLI's configuration
//! directory and `~/.ssh`. Blocking (file system).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::WorkspaceError;

/// A path that passed every check.
#[derive(Debug, Clone)]
pub struct Confined {
    /// As the client should see it: relative, normalized (`""` for the workdir).
    pub shown: String,
    /// Canonical, inside the workdir.
    pub real: PathBuf,
}

fn forbidden(path: &str, why: &str) -> WorkspaceError {
    WorkspaceError::Forbidden(format!("{}: {why}", crate::escape::quoted(path)))
}

/// Checks the text of `path` (no file system): relative, no NUL, no `..`, no
/// `.git` component. Returns its normalized components.
pub fn lexical(path: &str) -> Result<Vec<&OsStr>, WorkspaceError> {
    if path.contains('\0') {
        return Err(forbidden(path, "a path may not contain NUL"));
    }
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => {
                if is_git_dir_name(part) {
                    return Err(forbidden(path, "nothing under .git/ may be read"));
                }
                parts.push(part);
            }
            Component::CurDir => {}
            Component::ParentDir => return Err(forbidden(path, "`..` is not allowed")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(forbidden(path, "the path must be relative to the workdir"));
            }
        }
    }
    Ok(parts)
}

fn is_git_dir_name(part: &OsStr) -> bool {
    part.as_bytes().eq_ignore_ascii_case(b".git")
}

/// Resolves `path` under `workdir` (canonical) and checks where it lands.
/// Missing: `not_found`; a symlink loop or any escape: `forbidden`.
pub fn resolve(workdir: &Path, path: &str, deny: &[PathBuf]) -> Result<Confined, WorkspaceError> {
    let parts = lexical(path)?;
    let mut joined = workdir.to_path_buf();
    for part in &parts {
        joined.push(part);
    }
    let real = match std::fs::canonicalize(&joined) {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(WorkspaceError::NotFound(format!(
                "{} does not exist",
                crate::escape::quoted(path)
            )));
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(forbidden(path, "a symlink loop"));
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(WorkspaceError::NotFound(format!(
                "{} does not exist",
                crate::escape::quoted(path)
            )));
        }
        Err(e) => return Err(WorkspaceError::io("resolving a path", e)),
    };
    check_real(workdir, &real, deny).map_err(|why| forbidden(path, why))?;
    let shown = parts
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    Ok(Confined { shown, real })
}

/// Where a resolved path may lie: inside `workdir`, not under a `.git`
/// directory of it, not in any of `deny`.
pub fn check_real(workdir: &Path, real: &Path, deny: &[PathBuf]) -> Result<(), &'static str> {
    let Ok(inside) = real.strip_prefix(workdir) else {
        return Err("it resolves outside the workdir");
    };
    if inside.components().any(|c| is_git_dir_name(c.as_os_str())) {
        return Err("nothing under .git/ may be read");
    }
    if deny.iter().any(|d| real.starts_with(d)) {
        return Err("it resolves into a directory the relay keeps private");
    }
    Ok(())
}

/// Checks what an open file descriptor really is (its `/proc/self/fd` link):
/// the same checks as [`check_real`], against a swap between resolving and
/// opening.
pub fn check_fd(
    fd: &impl std::os::fd::AsRawFd,
    workdir: &Path,
    deny: &[PathBuf],
) -> Result<(), WorkspaceError> {
    let link = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let real = std::fs::read_link(&link).map_err(|e| WorkspaceError::io("checking a file", e))?;
    check_real(workdir, &real, deny).map_err(|why| WorkspaceError::Forbidden(why.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccrelay_protocol::ErrorCode;

    #[test]
    fn refuses_escapes_and_accepts_inside() {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let work = base.join("w");
        std::fs::create_dir_all(work.join("src")).unwrap();
        std::fs::create_dir_all(work.join(".git")).unwrap();
        std::fs::write(work.join(".git/config"), "x").unwrap();
        std::fs::write(work.join("src/main.rs"), "x").unwrap();
        let private = base.join("private");
        std::fs::create_dir_all(&private).unwrap();
        std::os::unix::fs::symlink("/etc", work.join("etc")).unwrap();
        std::os::unix::fs::symlink(".git", work.join("g")).unwrap();
        std::os::unix::fs::symlink(&private, work.join("p")).unwrap();
        std::os::unix::fs::symlink("loop", work.join("loop")).unwrap();
        let deny = vec![private.clone()];
        for bad in [
            "..",
            "src/../../x",
            "/etc/passwd",
            "a\0b",
            ".git/config",
            "src/.GIT/x",
            "etc",
            "etc/passwd",
            "g/config",
            "p",
            "loop",
        ] {
            let err = resolve(&work, bad, &deny).unwrap_err();
            assert_eq!(err.code(), ErrorCode::Forbidden, "{bad:?}: {err}");
        }
        assert_eq!(
            resolve(&work, "nope", &deny).unwrap_err().code(),
            ErrorCode::NotFound
        );
        let ok = resolve(&work, "./src//main.rs", &deny).unwrap();
        assert_eq!(ok.shown, "src/main.rs");
        assert_eq!(ok.real, work.join("src/main.rs"));
        assert_eq!(resolve(&work, "", &deny).unwrap().real, work);
    }
}
