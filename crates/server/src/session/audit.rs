//! The audit log: who prompted, who allowed or denied what (docs/protocol.md §6.1, "Audit log").
//!
//! One JSON line per `relay.prompt` and `relay.resolved`, in `<data-dir>/audit.jsonl`,
//! rotated by size to `audit.jsonl.1` … `audit.jsonl.N`. Journal compaction never
//! touches these files.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

/// Rotate when the live file passes this size.
pub const ROTATE_BYTES: u64 = 64 * 1024 * 1024;
/// Rotated files kept besides the live one.
pub const KEEP_ROTATED: u32 = 4;

#[derive(Debug)]
struct Inner {
    file: File,
    bytes: u64,
    /// A write failed or was interrupted part-way: the file may end in a partial
    /// line, so the next record starts on a new line (a reader then sees one bad
    /// line, never two records run together).
    torn: bool,
}

/// Append-only audit log shared by all sessions; a small lock serializes lines.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    rotate_bytes: u64,
    inner: Mutex<Option<Inner>>,
}

impl AuditLog {
    /// Open (or create) `<dir>/audit.jsonl`.
    pub fn open(dir: &Path) -> std::io::Result<AuditLog> {
        Self::open_with_limit(dir, ROTATE_BYTES)
    }

    pub fn open_with_limit(dir: &Path, rotate_bytes: u64) -> std::io::Result<AuditLog> {
        crate::datadir::create_dir_all(dir)?;
        let path = dir.join("audit.jsonl");
        let file = crate::datadir::open_options()
            .create(true)
            .append(true)
            .open(&path)?;
        let bytes = file.metadata()?.len();
        Ok(AuditLog {
            path,
            rotate_bytes,
            inner: Mutex::new(Some(Inner {
                file,
                bytes,
                torn: false,
            })),
        })
    }

    /// Append one record; `fields` must be a JSON object. Failures are never fatal (the
    /// journal holds the same facts) and never silent: a record that cannot be written
    /// goes to the server log whole, at error level.
    pub fn record(&self, kind: &str, session: &str, mut fields: Value) {
        if let Value::Object(map) = &mut fields {
            map.insert(
                "time".into(),
                Value::from(
                    time::OffsetDateTime::now_utc()
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                ),
            );
            map.insert("kind".into(), Value::from(kind));
            map.insert("session".into(), Value::from(session));
        }
        let mut line = fields.to_string();
        line.push('\n');
        // A panic while another record was written poisons the lock; the state
        // behind it (a file handle and a byte count) stays usable, and dropping
        // every later record would lose the audit trail silently.
        let mut guard = self.inner.lock().unwrap_or_else(|poisoned| {
            self.inner.clear_poison();
            let mut guard = poisoned.into_inner();
            if let Some(inner) = guard.as_mut() {
                inner.torn = true;
            }
            guard
        });
        if let Err(e) = self.write_line(&mut guard, line.as_bytes()) {
            if let Some(inner) = guard.as_mut() {
                inner.torn = true;
            }
            tracing::error!(
                path = %self.path.display(),
                error = %e,
                record = %line.trim_end(),
                "audit log write failed; the record is logged here instead"
            );
        }
    }

    fn write_line(&self, guard: &mut Option<Inner>, line: &[u8]) -> std::io::Result<()> {
        if guard
            .as_ref()
            .is_none_or(|i| i.bytes + line.len() as u64 > self.rotate_bytes && i.bytes > 0)
        {
            *guard = None;
            self.rotate()?;
            let file = crate::datadir::open_options()
                .create(true)
                .append(true)
                .open(&self.path)?;
            let bytes = file.metadata()?.len();
            *guard = Some(Inner {
                file,
                bytes,
                torn: false,
            });
        }
        let inner = guard
            .as_mut()
            .ok_or_else(|| std::io::Error::other("audit log not open"))?;
        if inner.torn {
            inner.file.write_all(b"\n")?;
            inner.bytes += 1;
            inner.torn = false;
        }
        inner.file.write_all(line)?;
        inner.bytes += line.len() as u64;
        Ok(())
    }

    fn rotate(&self) -> std::io::Result<()> {
        let name = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = std::fs::remove_file(name(KEEP_ROTATED));
        for n in (1..KEEP_ROTATED).rev() {
            let _ = std::fs::rename(name(n), name(n + 1));
        }
        match std::fs::rename(&self.path, name(1)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Where the live file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_loses_no_record_and_keeps_lines_whole() {
        let dir = tempfile::tempdir().unwrap();
        let log = std::sync::Arc::new(AuditLog::open(dir.path()).unwrap());
        log.record(
            "prompt",
            "default",
            serde_json::json!({"prompt_id": "before"}),
        );
        // A thread panics while holding the lock, after writing half a line.
        let holder = log.clone();
        let _ = std::thread::spawn(move || {
            let mut guard = holder.inner.lock().unwrap();
            guard.as_mut().unwrap().file.write_all(b"{\"half").unwrap();
            panic!("writer died mid-record");
        })
        .join();
        assert!(log.inner.is_poisoned());
        log.record(
            "prompt",
            "default",
            serde_json::json!({"prompt_id": "after"}),
        );
        log.record(
            "resolved",
            "default",
            serde_json::json!({"request_id": "r1"}),
        );
        let live = std::fs::read_to_string(log.path()).unwrap();
        let lines: Vec<&str> = live.lines().collect();
        assert_eq!(lines.len(), 4, "{live}");
        assert_eq!(lines[1], "{\"half");
        let after: Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(after["prompt_id"], "after");
        let resolved: Value = serde_json::from_str(lines[3]).unwrap();
        assert_eq!(resolved["request_id"], "r1");
    }

    #[test]
    fn records_lines_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open_with_limit(dir.path(), 300).unwrap();
        for i in 0..20 {
            log.record(
                "prompt",
                "default",
                serde_json::json!({"prompt_id": format!("p{i}")}),
            );
        }
        let live = std::fs::read_to_string(log.path()).unwrap();
        let first: Value = serde_json::from_str(live.lines().next().unwrap()).unwrap();
        assert_eq!(first["kind"], "prompt");
        assert_eq!(first["session"], "default");
        assert!(first["time"].as_str().unwrap().contains('T'));
        assert!(dir.path().join("audit.jsonl.1").exists());
        assert!(!dir.path().join("audit.jsonl.5").exists());
        assert!(live.len() <= 300);
        use std::os::unix::fs::PermissionsExt;
        for name in ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }
}
