//! `file.upload` (docs/protocol.md §10): a client's file written under
//! `<workdir>/.ccrelay/uploads/`. Every directory on the way is opened relative
//! to the one before with `O_NOFOLLOW` (a symlinked `.ccrelay` or `uploads` is
//! refused, never followed), and the file itself is created with `O_EXCL`, so an
//! upload can neither leave the workdir nor replace anything.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat, mkdirat};
use nix::unistd::UnlinkatFlags;

/// The directory under the workdir that holds uploads.
pub const UPLOADS_DIR: &str = ".ccrelay/uploads";
/// All uploads of one uploads directory together (docs/protocol.md §10: 100 MiB).
pub const QUOTA_BYTES: u64 = 100 * 1024 * 1024;
/// Characters of the client's name kept at most.
const NAME_CHARS: usize = 100;
/// Suffixes tried when the name exists already.
const UNIQUE_TRIES: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{0} is not a plain directory (a symlink is never followed)")]
    Unsafe(&'static str),
    #[error("the uploads of this workdir would exceed {QUOTA_BYTES} bytes ({used} used)")]
    Quota { used: u64 },
    #[error("no free name for the upload")]
    NoName,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<Errno> for UploadError {
    fn from(e: Errno) -> UploadError {
        UploadError::Io(std::io::Error::from(e))
    }
}

/// The client's name made safe: no path separators, control or format
/// characters, no leading dots or spaces, at most [`NAME_CHARS`] characters;
/// `upload` when nothing is left.
pub fn sanitize(name: &str) -> String {
    let kept: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() || ccrelay_protocol::is_format_char(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed: String = kept
        .trim_start_matches(['.', ' ', '_'])
        .trim_end()
        .chars()
        .take(NAME_CHARS)
        .collect();
    if trimmed.is_empty() {
        "upload".into()
    } else {
        trimmed
    }
}

/// Write `data` as a new file named after `name` (prefixed with `stamp`, e.g.
/// `2026-12-06T101500Z`) under `workdir`'s uploads directory; its path relative
/// to `workdir`.
pub fn write(workdir: &Path, name: &str, stamp: &str, data: &[u8]) -> Result<String, UploadError> {
    let dir_flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    let root = nix::fcntl::open(
        workdir,
        OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let ccrelay = subdir(&root, ".ccrelay", dir_flags)?;
    let uploads = subdir(&ccrelay, "uploads", dir_flags)?;
    match openat(
        &uploads,
        ".gitignore",
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    ) {
        Ok(fd) => std::fs::File::from(fd).write_all(b"*\n")?,
        Err(Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let used = used_bytes(&uploads)?;
    if used.saturating_add(data.len() as u64) > QUOTA_BYTES {
        return Err(UploadError::Quota { used });
    }
    let base = format!("{stamp}-{}", sanitize(name));
    for n in 0..UNIQUE_TRIES {
        let candidate = if n == 0 {
            base.clone()
        } else {
            unique_name(&base, n)
        };
        let fd = match openat(
            &uploads,
            candidate.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        ) {
            Ok(fd) => fd,
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(e.into()),
        };
        if let Err(e) = std::fs::File::from(fd).write_all(data) {
            // A half-written upload is not left behind.
            let _ = nix::unistd::unlinkat(&uploads, candidate.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(e.into());
        }
        return Ok(format!("{UPLOADS_DIR}/{candidate}"));
    }
    Err(UploadError::NoName)
}

/// `crash.log` → `crash-2.log` for `n` 1 (the suffix before the extension).
fn unique_name(base: &str, n: u32) -> String {
    match base.rfind('.') {
        Some(dot) if dot > 0 => format!("{}-{}{}", &base[..dot], n + 1, &base[dot..]),
        _ => format!("{base}-{}", n + 1),
    }
}

/// The directory `name` inside `parent`, created when missing, opened without
/// following a symlink.
fn subdir(parent: &OwnedFd, name: &'static str, flags: OFlag) -> Result<OwnedFd, UploadError> {
    match mkdirat(parent, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    match openat(parent, name, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::ELOOP | Errno::ENOTDIR) => Err(UploadError::Unsafe(name)),
        Err(e) => Err(e.into()),
    }
}

/// Bytes of the regular files directly in the uploads directory.
fn used_bytes(uploads: &OwnedFd) -> Result<u64, UploadError> {
    use std::os::fd::AsRawFd;
    // The directory already opened (no path is resolved again).
    let listing = std::fs::read_dir(format!("/proc/self/fd/{}", uploads.as_raw_fd()))?;
    let mut total = 0u64;
    for entry in listing.filter_map(Result::ok) {
        let name = entry.file_name();
        let Ok(st): Result<FileStat, _> = fstatat(
            uploads,
            name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) else {
            continue;
        };
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG {
            total = total.saturating_add(st.st_size as u64);
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_separators_controls_and_leading_dots() {
        assert_eq!(sanitize("../../etc/passwd"), "etc_passwd");
        assert_eq!(sanitize(".bashrc"), "bashrc");
        assert_eq!(sanitize("a\u{202E}b\u{0007}c.txt"), "a_b_c.txt");
        // A line separator (Zl) breaks the line a terminal shows, like a newline.
        assert_eq!(sanitize("a\u{2028}b.txt"), "a_b.txt");
        assert_eq!(sanitize("..."), "upload");
        assert_eq!(sanitize(&"x".repeat(500)).chars().count(), NAME_CHARS);
        assert_eq!(unique_name("s-crash.log", 1), "s-crash-2.log");
    }

    #[test]
    fn a_symlinked_ccrelay_is_refused_and_nothing_is_written() {
        let work = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), work.path().join(".ccrelay")).unwrap();
        let err = write(work.path(), "a.txt", "T", b"hi").unwrap_err();
        assert!(matches!(err, UploadError::Unsafe(".ccrelay")), "{err}");
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }

    #[test]
    fn uploads_are_unique_ignored_and_counted() {
        let work = tempfile::tempdir().unwrap();
        let a = write(work.path(), "c.log", "T", b"one").unwrap();
        let b = write(work.path(), "c.log", "T", b"two").unwrap();
        assert_eq!(a, ".ccrelay/uploads/T-c.log");
        assert_eq!(b, ".ccrelay/uploads/T-c-2.log");
        assert_eq!(std::fs::read(work.path().join(&b)).unwrap(), b"two");
        let ignore = work.path().join(".ccrelay/uploads/.gitignore");
        assert_eq!(std::fs::read_to_string(ignore).unwrap(), "*\n");
    }
}
