//! The paired keys files (docs/protocol.md §3.9 "Pairing a new device") and the
//! `ccrelay keys add|list|remove` commands that edit them.
//!
//! Owns: the line format `<key type> <base64> <device> (paired <YYYY-MM-DD> by
//! <fingerprint>)`, appending one line while keeping every other byte of the
//! file, removing the lines of one fingerprint, and creating these files
//! owner-only (0600, their directory 0700). Must not: ever write an
//! `authorized_keys` file that ssh reads — only the paired files are edited; the
//! server's key store picks the change up through its watcher.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};

use super::authorized_keys::{self, ParsedLine};
use super::keystore::key_type_refusal;
use super::verify::key_type_name;
use super::{KeyFile, Role};

/// The keys-file options of `ccrelay keys add|list|remove`, as given (same
/// options and env vars as `ccrelay serve`; `None` when not given).
#[derive(Debug, Default, Clone)]
pub struct KeyFileOptions {
    pub data_dir: Option<PathBuf>,
    pub paired_keys: Option<PathBuf>,
    pub paired_viewers: Option<PathBuf>,
    pub authorized_keys: Option<PathBuf>,
    pub viewer_keys: Option<PathBuf>,
}

/// Who approved a key added on the command line (there is no approver key).
pub const ADDED_BY_CLI: &str = "ccrelay-keys-add";

/// The line appended for a paired key. `device` is already validated (no
/// control characters), so it cannot break the line.
pub fn paired_line(key: &KeyData, device: &str, date: &str, by: &str) -> Result<String, String> {
    let bare = PublicKey::from(key.clone())
        .to_openssh()
        .map_err(|e| format!("cannot encode the key: {e}"))?;
    Ok(format!("{bare} {device} (paired {date} by {by})"))
}

/// Today as `YYYY-MM-DD` (UTC).
pub fn today() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Append `line` to `path`, keeping every byte already there (a last line
/// without a newline gets one first). Creates the file 0600 and its directory
/// 0700 when missing; fsyncs before returning.
pub fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let len = file.metadata()?.len();
    let mut text = String::new();
    if len > 0 && !ends_with_newline(path)? {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn ends_with_newline(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// Does the file at `path` list `key` (any options, any comment)? A missing file lists nothing.
pub fn file_lists(path: &Path, key: &KeyData) -> std::io::Result<bool> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(authorized_keys::parse(&text)
        .iter()
        .any(|p| matches!(p, ParsedLine::Key(k) if k.key.key_data() == key)))
}

/// Remove every line of `path` whose key has `fingerprint`, keeping every other
/// byte; returns how many lines went. The file is replaced atomically (same
/// directory, mode 0600). A missing file has nothing to remove.
pub fn remove_fingerprint(path: &Path, fingerprint: &str) -> std::io::Result<usize> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let doomed: Vec<usize> = authorized_keys::parse(&text)
        .iter()
        .filter_map(|p| match p {
            ParsedLine::Key(k) if k.key.fingerprint(HashAlg::Sha256).to_string() == fingerprint => {
                Some(k.line)
            }
            _ => None,
        })
        .collect();
    if doomed.is_empty() {
        return Ok(0);
    }
    // Lines numbered as the parser numbers them (split on '\n', 1-based).
    let kept: String = text
        .split_inclusive('\n')
        .enumerate()
        .filter(|(i, _)| !doomed.contains(&(i + 1)))
        .map(|(_, l)| l)
        .collect();
    crate::datadir::write_atomic(path, kept)?;
    Ok(doomed.len())
}

/// The files `ccrelay keys` works on, resolved from its options and env vars
/// exactly as `ccrelay serve` resolves them.
#[derive(Debug, Clone)]
pub struct KeyPaths {
    pub authorized_keys: Option<PathBuf>,
    pub viewer_keys: Option<PathBuf>,
    pub paired_keys: PathBuf,
    pub paired_viewers: PathBuf,
}

impl KeyPaths {
    /// Resolve `--data-dir` and the file options (defaults as `serve`).
    pub fn resolve(args: &KeyFileOptions) -> KeyPaths {
        let data_dir = args
            .data_dir
            .clone()
            .unwrap_or_else(crate::datadir::default_data_dir);
        KeyPaths {
            authorized_keys: args
                .authorized_keys
                .clone()
                .or_else(|| crate::datadir::home_dir().map(|h| h.join(".ssh/authorized_keys"))),
            viewer_keys: args.viewer_keys.clone(),
            paired_keys: args
                .paired_keys
                .clone()
                .unwrap_or_else(|| data_dir.join("paired_keys")),
            paired_viewers: args
                .paired_viewers
                .clone()
                .unwrap_or_else(|| data_dir.join("paired_viewers")),
        }
    }

    /// Every file the server reads, in the order it reads them.
    pub fn files(&self) -> Vec<KeyFile> {
        let mut files = Vec::new();
        if let Some(p) = &self.authorized_keys {
            files.push(KeyFile::required(p, Role::Owner, "authorized-keys"));
        }
        files.push(KeyFile::optional(
            &self.paired_keys,
            Role::Owner,
            "paired-keys",
        ));
        if let Some(p) = &self.viewer_keys {
            files.push(KeyFile::required(p, Role::Viewer, "viewer-keys"));
        }
        files.push(KeyFile::optional(
            &self.paired_viewers,
            Role::Viewer,
            "paired-viewers",
        ));
        files
    }
}

/// `ccrelay keys add KEYLINE [--viewer]`: 0 added (or already there, with a
/// note), 2 for an unparseable, DSA or otherwise unusable key, 1 for an I/O error.
pub fn run_keys_add(
    keyline: &str,
    viewer: bool,
    paths: &KeyPaths,
    out: &mut impl std::io::Write,
) -> std::io::Result<i32> {
    let key = match PublicKey::from_openssh(keyline.trim()) {
        Ok(k) => k,
        Err(e) => {
            writeln!(
                out,
                "ccrelay: not a public key line (expected `ssh-ed25519 AAAA... name`): {e}"
            )?;
            return Ok(2);
        }
    };
    if let Some(why) = key_type_refusal(key.key_data()) {
        writeln!(out, "ccrelay: this key cannot be used: {why}")?;
        return Ok(2);
    }
    let path = if viewer {
        &paths.paired_viewers
    } else {
        &paths.paired_keys
    };
    let fingerprint = key.fingerprint(HashAlg::Sha256);
    if file_lists(path, key.key_data())? {
        writeln!(
            out,
            "note: {fingerprint} is already in {}; nothing changed",
            path.display()
        )?;
        return Ok(0);
    }
    let comment: String = key.comment().chars().filter(|c| !c.is_control()).collect();
    let comment = if comment.trim().is_empty() {
        "key".to_string()
    } else {
        comment.trim().to_string()
    };
    let line = match paired_line(key.key_data(), &comment, &today(), ADDED_BY_CLI) {
        Ok(l) => l,
        Err(e) => {
            writeln!(out, "ccrelay: {e}")?;
            return Ok(2);
        }
    };
    append_line(path, &line)?;
    writeln!(
        out,
        "added {} {fingerprint} as {} to {}",
        key_type_name(key.key_data()),
        if viewer { "viewer" } else { "owner" },
        path.display()
    )?;
    Ok(0)
}

/// `ccrelay keys list`: one line per key the server would accept:
/// `<role> <fingerprint> <key type> <file> <comment>`. Exit 0, or 2 when a
/// required file cannot be read.
pub fn run_keys_list(paths: &KeyPaths, out: &mut impl std::io::Write) -> std::io::Result<i32> {
    let mut code = 0;
    for file in paths.files() {
        let text = match std::fs::read_to_string(&file.path) {
            Ok(t) => t,
            Err(e) if file.may_be_missing && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                writeln!(
                    out,
                    "# {}: cannot read: {e} (--{})",
                    file.path.display(),
                    file.setting
                )?;
                code = 2;
                continue;
            }
        };
        for parsed in authorized_keys::parse(&text) {
            let ParsedLine::Key(k) = parsed else { continue };
            if super::keystore::key_refusal(&k).is_some() {
                continue;
            }
            let comment: String = k
                .comment
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            writeln!(
                out,
                "{}\t{}\t{}\t{}:{}\t{}",
                file.role.as_str(),
                k.key.fingerprint(HashAlg::Sha256),
                key_type_name(k.key.key_data()),
                file.path.display(),
                k.line,
                if comment.is_empty() { "-" } else { &comment },
            )?;
        }
    }
    Ok(code)
}

/// `ccrelay keys remove FINGERPRINT`: remove it from the paired files. 0 removed;
/// 1 not found in a paired file (with a hint when it is in a file ccrelay does not edit).
pub fn run_keys_remove(
    fingerprint: &str,
    paths: &KeyPaths,
    out: &mut impl std::io::Write,
) -> std::io::Result<i32> {
    let fingerprint = fingerprint.trim();
    let mut removed = 0;
    for path in [&paths.paired_keys, &paths.paired_viewers] {
        let n = remove_fingerprint(path, fingerprint)?;
        if n > 0 {
            writeln!(
                out,
                "removed {fingerprint} from {} ({n} line{})",
                path.display(),
                if n == 1 { "" } else { "s" }
            )?;
        }
        removed += n;
    }
    if removed > 0 {
        return Ok(0);
    }
    for path in [&paths.authorized_keys, &paths.viewer_keys]
        .into_iter()
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let listed = authorized_keys::parse(&text).iter().any(|p| {
            matches!(p, ParsedLine::Key(k) if k.key.fingerprint(HashAlg::Sha256).to_string() == fingerprint)
        });
        if listed {
            writeln!(
                out,
                "ccrelay: {fingerprint} is in {}, which ccrelay does not edit; remove its line there",
                path.display()
            )?;
            return Ok(1);
        }
    }
    writeln!(out, "ccrelay: no paired key has fingerprint {fingerprint}")?;
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testutil::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn append_keeps_every_byte_and_adds_one_line() {
        let dir = tempdir();
        let k = keygen(&dir, "k", "ed25519", None);
        let path = dir.path().join("sub").join("paired_keys");
        // Created 0600 in a 0700 directory when missing.
        append_line(&path, "first line").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        // No trailing newline: one is added before the new line, nothing else changes.
        let before = "# my keys\n\n  # indented comment\nfirst line";
        std::fs::write(&path, before).unwrap();
        let line = paired_line(k.public.key_data(), "Pixel 9", "2026-11-29", "SHA256:abc").unwrap();
        assert_eq!(
            line,
            format!(
                "{} Pixel 9 (paired 2026-11-29 by SHA256:abc)",
                k.pub_line_no_comment()
            )
        );
        append_line(&path, &line).unwrap();
        let after = std::fs::read_to_string(&path).unwrap();
        assert_eq!(after, format!("{before}\n{line}\n"));
        assert!(file_lists(&path, k.public.key_data()).unwrap());
        // Removing it gives back the bytes (plus the newline that ended the old last line).
        let fp = k.public.fingerprint(HashAlg::Sha256).to_string();
        assert_eq!(remove_fingerprint(&path, &fp).unwrap(), 1);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{before}\n")
        );
        assert_eq!(remove_fingerprint(&path, &fp).unwrap(), 0);
        assert!(!file_lists(&path, k.public.key_data()).unwrap());
    }
}
