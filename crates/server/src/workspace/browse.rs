//! `files.list` and `files.read` (docs/protocol.md §11). Blocking: callers run
//! these with `spawn_blocking`. Nothing is followed out of the workdir: a path is
//! resolved and checked ([`super::confine`]), then opened with `O_NOFOLLOW` and
//! the opened descriptor checked again.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine;
use ccrelay_protocol::{FileEntry, FileKind, ReadEncoding};

use super::confine::{self, Confined};
use super::{MAX_ENTRIES, WorkspaceError};

/// What `files.list` answers.
#[derive(Debug, Clone)]
pub struct Listing {
    pub path: String,
    pub entries: Vec<FileEntry>,
    pub truncated: bool,
}

fn rfc3339(t: SystemTime) -> String {
    let nanos = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(nanos)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn open_checked(
    real: &Path,
    workdir: &Path,
    deny: &[PathBuf],
    directory: bool,
) -> Result<std::fs::File, WorkspaceError> {
    let mut flags = libc::O_NOFOLLOW | libc::O_NONBLOCK;
    if directory {
        flags |= libc::O_DIRECTORY;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(real)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => WorkspaceError::NotFound("it no longer exists".into()),
            Some(libc::ENOTDIR) => WorkspaceError::NotFound("not a directory".into()),
            Some(libc::ELOOP) => WorkspaceError::Forbidden("it became a symlink".into()),
            _ => WorkspaceError::io("opening", e),
        })?;
    confine::check_fd(&file, workdir, deny)?;
    Ok(file)
}

/// Lists the directory `path` (sorted by name, at most [`MAX_ENTRIES`]; a
/// directory with more is read only that far, then `truncated`). `.git` is left
/// out: nothing under it may be read.
pub fn list(workdir: &Path, path: &Confined, deny: &[PathBuf]) -> Result<Listing, WorkspaceError> {
    let meta = std::fs::metadata(&path.real).map_err(|e| WorkspaceError::io("reading", e))?;
    if !meta.is_dir() {
        return Err(WorkspaceError::NotFound(format!(
            "{} is not a directory",
            crate::escape::quoted(&path.shown)
        )));
    }
    let dir = open_checked(&path.real, workdir, deny, true)?;
    use std::os::fd::AsRawFd;
    let by_fd = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    let reader = std::fs::read_dir(&by_fd).map_err(|e| WorkspaceError::io("listing", e))?;
    let mut entries = Vec::new();
    let mut truncated = false;
    for entry in reader {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        if name.as_encoded_bytes().eq_ignore_ascii_case(b".git") {
            continue;
        }
        if entries.len() == MAX_ENTRIES {
            truncated = true;
            break;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let kind = if meta.file_type().is_symlink() {
            FileKind::Symlink
        } else if meta.is_dir() {
            FileKind::Dir
        } else if meta.is_file() {
            FileKind::File
        } else {
            FileKind::Other
        };
        entries.push(FileEntry {
            name: name.to_string_lossy().into_owned(),
            kind,
            size: meta.len(),
            mtime: meta.modified().map(rfc3339).unwrap_or_default(),
        });
    }
    drop(dir);
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Listing {
        path: path.shown.clone(),
        entries,
        truncated,
    })
}

/// What `files.read` answers.
#[derive(Debug, Clone)]
pub struct FileRead {
    pub path: String,
    pub size: u64,
    pub offset: u64,
    pub encoding: ReadEncoding,
    pub data: String,
    pub truncated: bool,
    pub mime: String,
}

/// Reads up to `max_bytes` of the file `path` from `offset`. Text (valid UTF-8
/// without NUL) is sent as UTF-8; anything else, and images, as base64.
pub fn read(
    workdir: &Path,
    path: &Confined,
    offset: u64,
    max_bytes: u64,
    deny: &[PathBuf],
) -> Result<FileRead, WorkspaceError> {
    let meta = std::fs::metadata(&path.real).map_err(|e| WorkspaceError::io("reading", e))?;
    if !meta.is_file() {
        return Err(WorkspaceError::NotFound(format!(
            "{} is not a file",
            crate::escape::quoted(&path.shown)
        )));
    }
    let mut file = open_checked(&path.real, workdir, deny, false)?;
    let size = file
        .metadata()
        .map_err(|e| WorkspaceError::io("reading", e))?
        .len();
    let offset = offset.min(size);
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| WorkspaceError::io("reading", e))?;
    let mut data = Vec::new();
    file.take(max_bytes)
        .read_to_end(&mut data)
        .map_err(|e| WorkspaceError::io("reading", e))?;
    let mut truncated = offset + (data.len() as u64) < size;
    let mime = mime_of(&path.shown);
    let image = mime.is_some_and(|m| m.starts_with("image/") && m != "image/svg+xml");
    let text = if image || super::gitview::is_binary(&data) {
        None
    } else {
        match std::str::from_utf8(&data) {
            Ok(_) => Some(data.clone()),
            // A cut through the last character: send the whole characters before it.
            Err(e) if truncated && e.error_len().is_none() => {
                let mut whole = data.clone();
                whole.truncate(e.valid_up_to());
                truncated = true;
                Some(whole)
            }
            Err(_) => None,
        }
    };
    let (encoding, data, mime) = match text {
        Some(bytes) => (
            ReadEncoding::Utf8,
            String::from_utf8(bytes).unwrap_or_default(),
            mime.unwrap_or("text/plain"),
        ),
        None => (
            ReadEncoding::Base64,
            base64::engine::general_purpose::STANDARD.encode(&data),
            mime.unwrap_or("application/octet-stream"),
        ),
    };
    Ok(FileRead {
        path: path.shown.clone(),
        size,
        offset,
        encoding,
        data,
        truncated,
        mime: mime.to_owned(),
    })
}

/// A MIME type from the file name's extension, for the common kinds.
fn mime_of(path: &str) -> Option<&'static str> {
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "rs" => "text/x-rust",
        "py" => "text/x-python",
        "js" | "mjs" | "cjs" => "text/javascript",
        "ts" | "tsx" => "text/x-typescript",
        "json" => "application/json",
        "md" => "text/markdown",
        "toml" => "text/x-toml",
        "yaml" | "yml" => "text/yaml",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "sh" => "text/x-shellscript",
        "c" | "h" => "text/x-c",
        "go" => "text/x-go",
        "txt" | "log" => "text/plain",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        _ => return None,
    })
}
