//! The keys the server accepts, as the `keys.list` / `keys.rename` /
//! `keys.revoke` requests see them (docs/protocol.md, extension "Devices").
//!
//! Owns: reading every keys file into a list of entries (source, role,
//! device name and pairing date of paired lines), renaming the device part of
//! a paired line and removing a paired key — both keeping every other byte of
//! the file — and the one lock that serializes this process's edits of the
//! paired files. Must not: edit a file other than the two paired files (an
//! `authorized_keys` that ssh reads is never written), or know about frames:
//! the connection turns a [`DeviceError`] into its `error` reply.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use ssh_key::HashAlg;

use super::KeyFile;
use super::authorized_keys::{self, ParsedLine};
use super::keystore::key_refusal;
use super::verify::key_type_name;

/// Every edit of a paired keys file made by this process holds this lock, so
/// two owners renaming or revoking at once (or a rename racing a pairing's
/// append) never lose or interleave a write.
static PAIRED_FILES: Mutex<()> = Mutex::new(());

/// Hold the paired files' edit lock (a poisoned lock is still usable: the
/// files are replaced atomically, so a panicking holder left nothing half-done).
pub fn paired_edit_lock() -> MutexGuard<'static, ()> {
    PAIRED_FILES.lock().unwrap_or_else(|p| p.into_inner())
}

/// One key the server accepts, from one file: a wire type (`keys.list`).
pub use ccrelay_protocol::DeviceKey;

/// Why a rename or revoke did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The fingerprint is only in a file ccrelay does not edit.
    #[error("{fingerprint} is in the {file} file, which ccrelay does not edit")]
    NotEditable {
        fingerprint: String,
        file: &'static str,
    },
    /// No keys file lists the fingerprint.
    #[error("no key has fingerprint {0}")]
    Unknown(String),
    /// Reading or writing a file failed.
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
}

/// The wire name of a file's source (its setting with `_` for `-`).
fn source_name(file: &KeyFile) -> &'static str {
    match file.setting {
        "authorized-keys" => "authorized_keys",
        "viewer-keys" => "viewer_keys",
        "paired-keys" => "paired_keys",
        "paired-viewers" => "paired_viewers",
        other => other,
    }
}

fn is_paired_file(file: &KeyFile) -> bool {
    matches!(file.setting, "paired-keys" | "paired-viewers")
}

/// Split a paired comment `<device> (paired <YYYY-MM-DD> by <fingerprint>)`
/// into its parts; None when the comment has another form.
pub fn split_paired_comment(comment: &str) -> Option<(&str, &str, &str)> {
    let inner = comment.strip_suffix(')')?;
    let at = inner.rfind(" (paired ")?;
    let device = &inner[..at];
    let rest = &inner[at + " (paired ".len()..];
    let (date, by) = rest.split_once(" by ")?;
    let valid_date = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if device.is_empty() || !valid_date || by.is_empty() || by.contains(' ') {
        return None;
    }
    Some((device, date, by))
}

fn read_optional(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DeviceError + '_ {
    move |error| DeviceError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// Every usable key of `files`, in file order. A file that cannot be read is
/// skipped (the key store logs it); keys the server would refuse are left out.
pub fn list_keys(files: &[KeyFile]) -> Vec<DeviceKey> {
    let mut out = Vec::new();
    for file in files {
        let Ok(Some(text)) = read_optional(&file.path) else {
            continue;
        };
        for parsed in authorized_keys::parse(&text) {
            let ParsedLine::Key(k) = parsed else { continue };
            if key_refusal(&k).is_some() {
                continue;
            }
            let paired = split_paired_comment(&k.comment);
            out.push(DeviceKey {
                fingerprint: k.key.fingerprint(HashAlg::Sha256).to_string(),
                key_type: key_type_name(k.key.key_data()).to_string(),
                comment: k.comment.clone(),
                role: file.role,
                source: source_name(file).into(),
                device: paired.map(|(d, _, _)| d.to_string()),
                paired: paired.map(|(_, d, _)| d.to_string()),
                paired_by: paired.map(|(_, _, b)| b.to_string()),
                editable: is_paired_file(file),
            });
        }
    }
    out
}

/// When `fingerprint` is in none of the paired files: the error saying why.
fn not_found(files: &[KeyFile], fingerprint: &str) -> DeviceError {
    for file in files.iter().filter(|f| !is_paired_file(f)) {
        let Ok(Some(text)) = read_optional(&file.path) else {
            continue;
        };
        let listed = authorized_keys::parse(&text).iter().any(|p| {
            matches!(p, ParsedLine::Key(k) if k.key.fingerprint(HashAlg::Sha256).to_string() == fingerprint)
        });
        if listed {
            return DeviceError::NotEditable {
                fingerprint: fingerprint.to_string(),
                file: source_name(file),
            };
        }
    }
    DeviceError::Unknown(fingerprint.to_string())
}

/// The text of one line with its comment's device part set to `device`: a
/// paired comment keeps its `(paired ... by ...)` suffix, another comment is
/// replaced, a line without one gets it. Options, key, trailing blanks and the
/// line ending are kept.
fn renamed_line(raw: &str, comment: &str, device: &str) -> String {
    let (content, ending) = match raw.strip_suffix("\r\n") {
        Some(c) => (c, "\r\n"),
        None => match raw.strip_suffix('\n') {
            Some(c) => (c, "\n"),
            None => (raw, ""),
        },
    };
    let body = content.trim_end_matches([' ', '\t']);
    let trailing = &content[body.len()..];
    let new_comment = match split_paired_comment(comment) {
        Some((_, date, by)) => format!("{device} (paired {date} by {by})"),
        None => device.to_string(),
    };
    let head = if comment.is_empty() {
        format!("{body} ")
    } else {
        // The parser trims the comment of blanks, so the line body ends with it.
        body.strip_suffix(comment)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{body} "))
    };
    format!("{head}{new_comment}{trailing}{ending}")
}

/// Set the device name of every paired line of `fingerprint` (in either
/// paired file), keeping every other byte. `device` is already validated.
/// Returns how many lines changed.
pub fn rename_key(
    files: &[KeyFile],
    fingerprint: &str,
    device: &str,
) -> Result<usize, DeviceError> {
    let _edit = paired_edit_lock();
    let mut changed = 0;
    for file in files.iter().filter(|f| is_paired_file(f)) {
        let Some(text) = read_optional(&file.path).map_err(io_err(&file.path))? else {
            continue;
        };
        let targets: Vec<(usize, String)> = authorized_keys::parse(&text)
            .into_iter()
            .filter_map(|p| match p {
                ParsedLine::Key(k)
                    if k.key.fingerprint(HashAlg::Sha256).to_string() == fingerprint =>
                {
                    Some((k.line, k.comment))
                }
                _ => None,
            })
            .collect();
        if targets.is_empty() {
            continue;
        }
        // Lines numbered as the parser numbers them (split on '\n', 1-based).
        let new_text: String = text
            .split_inclusive('\n')
            .enumerate()
            .map(|(i, raw)| match targets.iter().find(|(n, _)| *n == i + 1) {
                Some((_, comment)) => renamed_line(raw, comment, device),
                None => raw.to_string(),
            })
            .collect();
        crate::datadir::write_atomic(&file.path, &new_text).map_err(io_err(&file.path))?;
        changed += targets.len();
    }
    if changed == 0 {
        return Err(not_found(files, fingerprint));
    }
    Ok(changed)
}

/// Remove every line of `fingerprint` from the paired files, keeping every
/// other byte. Returns how many lines went.
pub fn revoke_key(files: &[KeyFile], fingerprint: &str) -> Result<usize, DeviceError> {
    let _edit = paired_edit_lock();
    let mut removed = 0;
    for file in files.iter().filter(|f| is_paired_file(f)) {
        removed += super::paired::remove_fingerprint(&file.path, fingerprint)
            .map_err(io_err(&file.path))?;
    }
    if removed == 0 {
        return Err(not_found(files, fingerprint));
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use crate::auth::testutil::*;

    #[test]
    fn paired_comment_parts() {
        assert_eq!(
            split_paired_comment("Pixel 9 (paired 2026-11-29 by SHA256:abc)"),
            Some(("Pixel 9", "2026-11-29", "SHA256:abc"))
        );
        assert_eq!(
            split_paired_comment("a (paired x) (paired 2026-01-02 by ccrelay-keys-add)"),
            Some(("a (paired x)", "2026-01-02", "ccrelay-keys-add"))
        );
        assert_eq!(split_paired_comment("laptop"), None);
        assert_eq!(split_paired_comment("x (paired 26-1-2 by y)"), None);
        assert_eq!(split_paired_comment(" (paired 2026-01-02 by y)"), None);
    }

    #[test]
    fn rename_keeps_every_other_byte() {
        let dir = tempdir();
        let a = keygen(&dir, "a", "ed25519", None);
        let b = keygen(&dir, "b", "ed25519", None);
        let path = dir.path().join("paired_keys");
        let a_line = format!(
            "{} phone (paired 2026-11-01 by SHA256:x)",
            a.pub_line_no_comment()
        );
        let b_line = format!(
            "from=\"127.0.0.1\" {} tablet (paired 2026-11-02 by SHA256:y)  \r",
            b.pub_line_no_comment()
        );
        let before = format!("# keys\n{a_line}\n\n{b_line}\n# end");
        std::fs::write(&path, &before).unwrap();
        let files = vec![KeyFile::optional(&path, Role::Owner, "paired-keys")];
        let fp = b.public.fingerprint(HashAlg::Sha256).to_string();
        assert_eq!(rename_key(&files, &fp, "big tablet").unwrap(), 1);
        let after = std::fs::read_to_string(&path).unwrap();
        let b_new = format!(
            "from=\"127.0.0.1\" {} big tablet (paired 2026-11-02 by SHA256:y)  \r",
            b.pub_line_no_comment()
        );
        assert_eq!(after, format!("# keys\n{a_line}\n\n{b_new}\n# end"));
        let listed = list_keys(&files);
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].device.as_deref(), Some("big tablet"));
        assert_eq!(listed[1].paired.as_deref(), Some("2026-11-02"));
        assert!(listed[1].editable);
        // A key in no paired file is refused, naming why.
        let auth = dir.path().join("authorized_keys");
        let c = keygen(&dir, "c", "ed25519", None);
        std::fs::write(&auth, format!("{}\n", c.pub_line_no_comment())).unwrap();
        let mut files = files;
        files.insert(0, KeyFile::required(&auth, Role::Owner, "authorized-keys"));
        let cfp = c.public.fingerprint(HashAlg::Sha256).to_string();
        assert!(matches!(
            rename_key(&files, &cfp, "x"),
            Err(DeviceError::NotEditable {
                file: "authorized_keys",
                ..
            })
        ));
        assert!(matches!(
            revoke_key(&files, "SHA256:nope"),
            Err(DeviceError::Unknown(_))
        ));
        assert!(!list_keys(&files)[0].editable);
        // Revoke removes only that line.
        assert_eq!(revoke_key(&files, &fp).unwrap(), 1);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("# keys\n{a_line}\n\n# end")
        );
    }

    #[test]
    fn rename_a_line_without_paired_comment() {
        assert_eq!(
            renamed_line("ssh-ed25519 AAAA laptop\n", "laptop", "work"),
            "ssh-ed25519 AAAA work\n"
        );
        assert_eq!(
            renamed_line("ssh-ed25519 AAAA", "", "work"),
            "ssh-ed25519 AAAA work"
        );
    }
}
