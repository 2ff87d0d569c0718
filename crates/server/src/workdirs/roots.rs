//! The session roots (`--session-root`) and the directories excluded from them
//! (docs/protocol.md §4, "Roots"): which directories a client may name.
//!
//! A client names a directory as an absolute or `~/`-relative path. It is accepted
//! only when, after symlinks and `..` are resolved, it lies inside a root and not
//! inside (or at) an excluded directory: the data dir, the Claude Code
//! configuration directory and `~/.ssh`. A path outside every root is refused as
//! such before the file system is asked anything about it, so answers never tell
//! whether something exists outside the roots.

use super::error::{WorkdirError, shown};
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// The longest path a client may send, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// A root that cannot be used, found at start.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    /// Missing or unreadable.
    #[error("session root {}: {source}", .path.display())]
    Unusable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Exists but is not a directory.
    #[error("session root {} is not a directory", .path.display())]
    NotADirectory { path: PathBuf },
    /// Not an absolute path.
    #[error("session root {} is not an absolute path", .path.display())]
    NotAbsolute { path: PathBuf },
}

/// The Claude Code CLI's configuration directory, as the CLI finds it:
/// `$CLAUDE_CONFIG_DIR` when set and non-empty, else `~/.claude`; `None` without
/// either. `env_value` is the variable's value (`std::env::var_os("CLAUDE_CONFIG_DIR")`).
pub fn claude_config_dir(env_value: Option<OsString>, home: Option<&Path>) -> Option<PathBuf> {
    match env_value.filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None => home.map(|h| h.join(".claude")),
    }
}

/// `path` with `.` dropped and `..` applied to the components before it, without
/// asking the file system (so `/a/link/..` is `/a` here, whatever `link` is).
pub(crate) fn normalize_lexically(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// One directory in two spellings: as configured (made absolute lexically) and as
/// the file system resolves it (when it exists).
#[derive(Debug, Clone)]
struct Spelled {
    lexical: PathBuf,
    canonical: Option<PathBuf>,
}

impl Spelled {
    fn new(path: &Path) -> Spelled {
        Spelled {
            lexical: normalize_lexically(path),
            canonical: std::fs::canonicalize(path).ok(),
        }
    }

    /// Whether `path` is this directory or inside it, in either spelling.
    fn contains(&self, path: &Path) -> bool {
        path.starts_with(&self.lexical)
            || self.canonical.as_ref().is_some_and(|c| path.starts_with(c))
    }
}

/// The session roots and the excluded directories. Built once at start; cheap to
/// clone and share.
#[derive(Debug, Clone)]
pub struct Roots {
    roots: Vec<Spelled>,
    canonical_roots: Vec<PathBuf>,
    excluded: Vec<Spelled>,
    home: Option<PathBuf>,
}

impl Roots {
    /// Blocking (resolves every root). `roots` must exist (a missing one is an error
    /// naming it); `excluded` are the data dir and the Claude Code configuration
    /// directory ([`claude_config_dir`]); `~/.ssh` is added here when `home` is
    /// known. Excluded directories need not exist: they are compared as given
    /// (lexically normalized) and, when they exist, as resolved.
    pub fn new(
        roots: Vec<PathBuf>,
        excluded: Vec<PathBuf>,
        home: Option<PathBuf>,
    ) -> Result<Roots, RootsError> {
        let mut spelled = Vec::with_capacity(roots.len());
        let mut canonical_roots = Vec::with_capacity(roots.len());
        for root in roots {
            if !root.is_absolute() {
                return Err(RootsError::NotAbsolute { path: root });
            }
            let canonical =
                std::fs::canonicalize(&root).map_err(|source| RootsError::Unusable {
                    path: root.clone(),
                    source,
                })?;
            if !canonical.is_dir() {
                return Err(RootsError::NotADirectory { path: root });
            }
            spelled.push(Spelled {
                lexical: normalize_lexically(&root),
                canonical: Some(canonical.clone()),
            });
            if !canonical_roots.contains(&canonical) {
                canonical_roots.push(canonical);
            }
        }
        let mut excluded: Vec<Spelled> = excluded.iter().map(|p| Spelled::new(p)).collect();
        if let Some(home) = &home {
            excluded.push(Spelled::new(&home.join(".ssh")));
        }
        Ok(Roots {
            roots: spelled,
            canonical_roots,
            excluded,
            home,
        })
    }

    /// The roots, resolved (symlinks followed), without duplicates, in the order given.
    pub fn roots(&self) -> &[PathBuf] {
        &self.canonical_roots
    }

    /// The resolved root that contains the resolved path `canonical`, if any (the
    /// first given when roots nest).
    pub fn root_of(&self, canonical: &Path) -> Option<&Path> {
        self.canonical_roots
            .iter()
            .find(|r| canonical.starts_with(r))
            .map(PathBuf::as_path)
    }

    /// Whether `path` is at or inside an excluded directory (in either spelling).
    pub fn is_excluded(&self, path: &Path) -> bool {
        self.excluded.iter().any(|e| e.contains(path))
    }

    /// Whether the resolved path `canonical` may be used: inside a root and not excluded.
    pub fn allows(&self, canonical: &Path) -> bool {
        self.root_of(canonical).is_some() && !self.is_excluded(canonical)
    }

    /// Blocking. The directory a client named, resolved: `client_path` is absolute,
    /// `~` or `~/…`; the result is canonical (symlinks and `..` resolved), an
    /// existing directory, inside a root and not inside an excluded directory.
    pub fn resolve_dir(&self, client_path: &str) -> Result<PathBuf, WorkdirError> {
        let shown_path = || client_path.to_owned();
        if client_path.len() > MAX_PATH_BYTES {
            return Err(WorkdirError::TooLong);
        }
        if client_path.contains('\0') {
            return Err(WorkdirError::Nul);
        }
        let absolute = if client_path == "~" || client_path.starts_with("~/") {
            let home = self
                .home
                .as_ref()
                .ok_or_else(|| WorkdirError::NoHome(shown_path()))?;
            home.join(client_path.trim_start_matches('~').trim_start_matches('/'))
        } else if client_path.starts_with('/') {
            PathBuf::from(client_path)
        } else {
            return Err(WorkdirError::NotAbsolute(shown_path()));
        };
        // Before the file system is asked: a path outside every root is refused as
        // that, whether or not it exists.
        let lexical = normalize_lexically(&absolute);
        if !self.roots.iter().any(|r| r.contains(&lexical)) || self.is_excluded(&lexical) {
            return Err(WorkdirError::OutsideRoots(shown_path()));
        }
        let canonical = match std::fs::canonicalize(&absolute) {
            Ok(c) => c,
            Err(e) if is_missing(&e) => return Err(WorkdirError::NotFound(shown_path())),
            Err(source) => {
                return Err(WorkdirError::Io {
                    context: "resolving a path",
                    source,
                });
            }
        };
        // After: a symlink may lead anywhere.
        if !self.allows(&canonical) {
            return Err(WorkdirError::OutsideRoots(shown_path()));
        }
        match std::fs::metadata(&canonical) {
            Ok(m) if m.is_dir() => Ok(canonical),
            Ok(_) => Err(WorkdirError::NotADirectory(shown_path())),
            Err(e) if is_missing(&e) => Err(WorkdirError::NotFound(shown(&canonical))),
            Err(source) => Err(WorkdirError::Io {
                context: "reading a directory's metadata",
                source,
            }),
        }
    }
}

/// Errors that mean "there is no such directory" rather than a server fault: missing,
/// a file where a directory was expected on the way, a symlink loop.
fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || matches!(
            e.raw_os_error(),
            Some(libc::ENOTDIR) | Some(libc::ELOOP) | Some(libc::ENAMETOOLONG)
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccrelay_protocol::ErrorCode;
    use std::os::unix::fs::symlink;

    struct Fixture {
        _tmp: tempfile::TempDir,
        base: PathBuf,
        home: PathBuf,
    }

    /// base/home (the home dir) with home/src/api, home/.ssh, home/data (the data
    /// dir, inside the root), home/.claude, base/outside (outside every root).
    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let home = base.join("home");
        for d in ["src/api", ".ssh", "data", ".claude"] {
            std::fs::create_dir_all(home.join(d)).unwrap();
        }
        std::fs::create_dir_all(base.join("outside/secret")).unwrap();
        std::fs::write(home.join("src/file.txt"), "x").unwrap();
        Fixture {
            _tmp: tmp,
            base,
            home,
        }
    }

    fn roots_at(f: &Fixture, root: &Path) -> Roots {
        Roots::new(
            vec![root.to_path_buf()],
            vec![f.home.join("data"), f.home.join(".claude")],
            Some(f.home.clone()),
        )
        .unwrap()
    }

    fn code(r: Result<PathBuf, WorkdirError>) -> ErrorCode {
        r.unwrap_err().code()
    }

    #[test]
    fn accepts_absolute_and_tilde_paths_inside_a_root() {
        let f = fixture();
        let roots = roots_at(&f, &f.home);
        assert_eq!(
            roots.resolve_dir("~/src/api").unwrap(),
            f.home.join("src/api")
        );
        assert_eq!(roots.resolve_dir("~").unwrap(), f.home);
        let abs = f.home.join("src/./api/../api");
        assert_eq!(
            roots.resolve_dir(abs.to_str().unwrap()).unwrap(),
            f.home.join("src/api")
        );
        assert_eq!(roots.roots(), std::slice::from_ref(&f.home));
    }

    #[test]
    fn a_symlink_out_of_the_root_is_outside_roots() {
        let f = fixture();
        symlink(f.base.join("outside"), f.home.join("src/escape")).unwrap();
        let roots = roots_at(&f, &f.home.join("src"));
        assert_eq!(
            code(roots.resolve_dir("~/src/escape")),
            ErrorCode::OutsideRoots
        );
        assert_eq!(
            code(roots.resolve_dir("~/src/escape/secret")),
            ErrorCode::OutsideRoots
        );
    }

    #[test]
    fn dot_dot_cannot_escape_and_missing_outside_is_outside_not_missing() {
        let f = fixture();
        let roots = roots_at(&f, &f.home.join("src"));
        assert_eq!(
            code(roots.resolve_dir("~/src/../../outside")),
            ErrorCode::OutsideRoots
        );
        // Exists outside, missing outside: the same answer.
        let outside = f.base.join("outside");
        assert_eq!(
            code(roots.resolve_dir(outside.to_str().unwrap())),
            ErrorCode::OutsideRoots
        );
        let missing = f.base.join("no-such-dir");
        assert_eq!(
            code(roots.resolve_dir(missing.to_str().unwrap())),
            ErrorCode::OutsideRoots
        );
        // Missing inside a root: not_found.
        assert_eq!(code(roots.resolve_dir("~/src/nope")), ErrorCode::NotFound);
    }

    #[test]
    fn the_data_dir_and_claude_dir_inside_a_root_are_outside_roots() {
        let f = fixture();
        let roots = roots_at(&f, &f.home);
        assert_eq!(code(roots.resolve_dir("~/data")), ErrorCode::OutsideRoots);
        assert_eq!(
            code(roots.resolve_dir("~/.claude")),
            ErrorCode::OutsideRoots
        );
        std::fs::create_dir(f.home.join("data/sub")).unwrap();
        assert_eq!(
            code(roots.resolve_dir("~/data/sub")),
            ErrorCode::OutsideRoots
        );
        // Through a symlink too.
        symlink(f.home.join("data"), f.home.join("src/d")).unwrap();
        assert_eq!(code(roots.resolve_dir("~/src/d")), ErrorCode::OutsideRoots);
    }

    #[test]
    fn ssh_is_excluded_when_a_root_is_home() {
        let f = fixture();
        let roots = roots_at(&f, &f.home);
        assert_eq!(code(roots.resolve_dir("~/.ssh")), ErrorCode::OutsideRoots);
        assert_eq!(
            code(roots.resolve_dir("~/.ssh/missing")),
            ErrorCode::OutsideRoots
        );
    }

    #[test]
    fn a_file_is_not_found_and_so_is_a_path_through_it() {
        let f = fixture();
        let roots = roots_at(&f, &f.home);
        assert_eq!(
            code(roots.resolve_dir("~/src/file.txt")),
            ErrorCode::NotFound
        );
        assert_eq!(
            code(roots.resolve_dir("~/src/file.txt/x")),
            ErrorCode::NotFound
        );
    }

    #[test]
    fn malformed_paths_are_bad_message() {
        let f = fixture();
        let roots = roots_at(&f, &f.home);
        assert_eq!(code(roots.resolve_dir("src/api")), ErrorCode::BadMessage);
        assert_eq!(code(roots.resolve_dir("~other/x")), ErrorCode::BadMessage);
        assert_eq!(code(roots.resolve_dir("")), ErrorCode::BadMessage);
        assert_eq!(code(roots.resolve_dir("/tmp/a\0b")), ErrorCode::BadMessage);
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        assert_eq!(code(roots.resolve_dir(&long)), ErrorCode::BadMessage);
        let no_home = Roots::new(vec![f.home.clone()], vec![], None).unwrap();
        assert_eq!(code(no_home.resolve_dir("~/src")), ErrorCode::BadMessage);
    }

    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        let f = fixture();
        let missing = f.base.join("gone");
        let err = Roots::new(vec![missing.clone()], vec![], None).unwrap_err();
        assert!(err.to_string().contains(missing.to_str().unwrap()), "{err}");
        let file = f.home.join("src/file.txt");
        assert!(matches!(
            Roots::new(vec![file], vec![], None),
            Err(RootsError::NotADirectory { .. })
        ));
    }

    #[test]
    fn claude_config_dir_prefers_the_variable() {
        let home = Path::new("/home/u");
        assert_eq!(
            claude_config_dir(Some("/etc/cc".into()), Some(home)),
            Some(PathBuf::from("/etc/cc"))
        );
        assert_eq!(
            claude_config_dir(Some("".into()), Some(home)),
            Some(home.join(".claude"))
        );
        assert_eq!(
            claude_config_dir(None, Some(home)),
            Some(home.join(".claude"))
        );
        assert_eq!(claude_config_dir(None, None), None);
    }
}
