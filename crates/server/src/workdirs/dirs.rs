//! `dirs.list` (docs/protocol.md §4): the subdirectories of a directory inside the
//! roots, for a client's directory picker.

use super::error::WorkdirError;
use super::roots::Roots;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// How many entries a listing returns at most (the contract's cap).
pub const MAX_DIRS: usize = 2_000;

/// How many directory entries one listing examines at most, whatever they are; past
/// it the listing is `truncated` (a directory of a million files costs no more).
pub const MAX_EXAMINED: usize = 20_000;

/// One listing: `path` is the listed directory, resolved; empty when the roots
/// themselves are listed (then each entry's `name` is a root's full path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirListing {
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    pub dirs: Vec<DirEntry>,
    pub truncated: bool,
}

/// One subdirectory: its name and whether it holds a `.git` (file or directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirEntry {
    pub name: String,
    pub git: bool,
}

fn lossy_path<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// Blocking (reads the directory). The subdirectories of `path` (absolute or
/// `~/`-relative, resolved by [`Roots::resolve_dir`]), or with `None` the roots
/// themselves, named by their full paths. Listed: directories, and symlinks to
/// directories whose target is inside the roots and not excluded; not: names
/// starting with `.`, names that are not UTF-8, excluded directories. Sorted by
/// name; at most `max` entries and at most [`MAX_EXAMINED`] entries examined, else
/// `truncated`.
pub fn list_dirs(
    roots: &Roots,
    path: Option<&str>,
    max: usize,
) -> Result<DirListing, WorkdirError> {
    let Some(path) = path else {
        let mut dirs: Vec<DirEntry> = roots
            .roots()
            .iter()
            .filter(|r| !roots.is_excluded(r))
            .map(|r| DirEntry {
                name: r.to_string_lossy().into_owned(),
                git: has_git(r),
            })
            .collect();
        let truncated = dirs.len() > max;
        dirs.truncate(max);
        return Ok(DirListing {
            path: PathBuf::new(),
            dirs,
            truncated,
        });
    };
    let dir = roots.resolve_dir(path)?;
    let reader = std::fs::read_dir(&dir).map_err(WorkdirError::io("listing a directory"))?;
    let mut dirs = Vec::new();
    let mut truncated = false;
    for (examined, entry) in reader.enumerate() {
        if examined >= MAX_EXAMINED {
            truncated = true;
            break;
        }
        // An entry that vanished or cannot be read is left out, not an error.
        let Ok(entry) = entry else { continue };
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        let full = dir.join(&name);
        let target = if file_type.is_dir() {
            full
        } else if file_type.is_symlink() {
            match std::fs::canonicalize(&full) {
                Ok(t) if t.is_dir() => t,
                _ => continue,
            }
        } else {
            continue;
        };
        if !roots.allows(&target) {
            continue;
        }
        dirs.push(DirEntry {
            git: has_git(&target),
            name,
        });
    }
    dirs.sort_by(|a, b| a.name.cmp(&b.name));
    if dirs.len() > max {
        dirs.truncate(max);
        truncated = true;
    }
    Ok(DirListing {
        path: dir,
        dirs,
        truncated,
    })
}

/// Whether `dir` holds a `.git` file (a worktree or submodule) or directory.
fn has_git(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join(".git")).is_ok_and(|m| m.is_dir() || m.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, PathBuf, Roots) {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let home = base.join("home");
        for d in [
            "src/api/.git",
            "src/web",
            "src/.hidden",
            "src/data",
            "src/wt",
            "other",
        ] {
            std::fs::create_dir_all(home.join(d)).unwrap();
        }
        std::fs::write(home.join("src/wt/.git"), "gitdir: /x\n").unwrap();
        std::fs::write(home.join("src/file.txt"), "x").unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        symlink(base.join("outside"), home.join("src/out-link")).unwrap();
        symlink(home.join("src/web"), home.join("src/in-link")).unwrap();
        symlink(home.join("src/file.txt"), home.join("src/file-link")).unwrap();
        symlink(home.join("src/data"), home.join("src/data-link")).unwrap();
        let roots = Roots::new(
            vec![home.join("src")],
            vec![home.join("src/data")],
            Some(home.clone()),
        )
        .unwrap();
        (tmp, home, roots)
    }

    #[test]
    fn lists_subdirectories_with_git_flags_sorted() {
        let (_tmp, home, roots) = setup();
        let listing = list_dirs(&roots, Some("~/src"), MAX_DIRS).unwrap();
        assert_eq!(listing.path, home.join("src"));
        let names: Vec<(&str, bool)> = listing
            .dirs
            .iter()
            .map(|d| (d.name.as_str(), d.git))
            .collect();
        assert_eq!(
            names,
            [
                ("api", true),
                ("in-link", false),
                ("web", false),
                ("wt", true)
            ]
        );
        assert!(!listing.truncated);
        let json = serde_json::to_value(&listing).unwrap();
        assert_eq!(
            json["dirs"][0],
            serde_json::json!({"name": "api", "git": true})
        );
        assert_eq!(json["truncated"], false);
        assert_eq!(json["path"], home.join("src").to_str().unwrap());
    }

    #[test]
    fn caps_the_entries() {
        let (_tmp, _home, roots) = setup();
        let listing = list_dirs(&roots, Some("~/src"), 2).unwrap();
        assert_eq!(listing.dirs.len(), 2);
        assert!(listing.truncated);
        assert_eq!(listing.dirs[0].name, "api");
    }

    #[test]
    fn stops_examining_after_max_examined_entries() {
        let (_tmp, home, roots) = setup();
        let big = home.join("src/big");
        std::fs::create_dir(&big).unwrap();
        for i in 0..MAX_EXAMINED {
            std::fs::write(big.join(format!("f{i}")), "").unwrap();
        }
        std::fs::create_dir(big.join("sub")).unwrap();
        let listing = list_dirs(&roots, Some("~/src/big"), MAX_DIRS).unwrap();
        assert!(listing.truncated);
        assert!(listing.dirs.len() <= 1);
    }

    #[test]
    fn without_a_path_lists_the_roots() {
        let (_tmp, home, roots) = setup();
        let listing = list_dirs(&roots, None, MAX_DIRS).unwrap();
        assert_eq!(listing.path, PathBuf::new());
        assert_eq!(
            listing.dirs,
            [DirEntry {
                name: home.join("src").to_string_lossy().into_owned(),
                git: false
            }]
        );
    }

    #[test]
    fn refuses_what_resolve_dir_refuses() {
        let (_tmp, _home, roots) = setup();
        let code = |p| list_dirs(&roots, Some(p), MAX_DIRS).unwrap_err().code();
        assert_eq!(code("~/other"), ccrelay_protocol::ErrorCode::OutsideRoots);
        assert_eq!(
            code("~/src/out-link"),
            ccrelay_protocol::ErrorCode::OutsideRoots
        );
        assert_eq!(
            code("~/src/data"),
            ccrelay_protocol::ErrorCode::OutsideRoots
        );
        assert_eq!(
            code("~/src/file.txt"),
            ccrelay_protocol::ErrorCode::NotFound
        );
        assert_eq!(code("src"), ccrelay_protocol::ErrorCode::BadMessage);
    }
}
