//! The audit log: who prompted, who allowed or denied what (docs/protocol.md §6.1, "Audit log").
//!
//! One JSON line per `relay.prompt` and `relay.resolved`, in `<data-dir>/audit.jsonl`,
//! rotated by size to `audit.jsonl.1` … `audit.jsonl.N`, by the log's own thread.
//! Journal compaction never touches these files.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde_json::Value;

/// Rotate when the live file passes this size.
pub const ROTATE_BYTES: u64 = 64 * 1024 * 1024;
/// Rotated files kept besides the live one.
pub const KEEP_ROTATED: u32 = 4;
/// Records waiting for the audit writer thread; beyond this a record goes to the
/// server log instead (never silently lost, and `record` never waits).
const QUEUE: usize = 4096;

#[derive(Debug)]
struct Inner {
    file: File,
    bytes: u64,
    /// A write failed or was interrupted part-way: the file may end in a partial
    /// line, so the next record starts on a new line (a reader then sees one bad
    /// line, never two records run together).
    torn: bool,
}

/// What the audit writer thread is asked to do.
enum Job {
    Line(String),
    /// Answered once every earlier line is written.
    Flush(mpsc::SyncSender<()>),
}

/// Append-only audit log shared by all sessions. Records are formatted by the
/// caller and written, one line each, by the log's own thread: the file writes and
/// the rotation never run on the async workers.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    jobs: Option<mpsc::SyncSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The writer thread's side: the open file and where it rotates.
struct Writer {
    path: PathBuf,
    rotate_bytes: u64,
    inner: Option<Inner>,
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
        let mut writer = Writer {
            path: path.clone(),
            rotate_bytes,
            inner: Some(Inner {
                file,
                bytes,
                torn: false,
            }),
        };
        let (jobs, rx) = mpsc::sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        Job::Line(line) => writer.write_or_log(&line),
                        Job::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(AuditLog {
            path,
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Append one record; `fields` must be a JSON object. Failures are never fatal (the
    /// journal holds the same facts) and never silent: a record that cannot be written
    /// (or queued) goes to the server log whole, at error level.
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
        let queued = match &self.jobs {
            Some(jobs) => jobs.try_send(Job::Line(line)),
            None => Err(mpsc::TrySendError::Disconnected(Job::Line(line))),
        };
        if let Err(mpsc::TrySendError::Full(job) | mpsc::TrySendError::Disconnected(job)) = queued
            && let Job::Line(line) = job
        {
            tracing::error!(
                path = %self.path.display(),
                record = %line.trim_end(),
                "audit log writer busy or gone; the record is logged here instead"
            );
        }
    }

    /// Wait until every record so far is written (tests; a blocking call).
    pub fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if let Some(jobs) = &self.jobs
            && jobs.send(Job::Flush(done)).is_ok()
        {
            let _ = wait.recv();
        }
    }

    /// Where the live file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AuditLog {
    /// The writer thread writes what is queued and ends; dropped at server exit.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Writer {
    fn write_or_log(&mut self, line: &str) {
        if let Err(e) = self.write_line(line.as_bytes()) {
            if let Some(inner) = self.inner.as_mut() {
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

    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self
            .inner
            .as_ref()
            .is_none_or(|i| i.bytes + line.len() as u64 > self.rotate_bytes && i.bytes > 0)
        {
            self.inner = None;
            self.rotate()?;
            let file = crate::datadir::open_options()
                .create(true)
                .append(true)
                .open(&self.path)?;
            let bytes = file.metadata()?.len();
            self.inner = Some(Inner {
                file,
                bytes,
                torn: false,
            });
        }
        let inner = self
            .inner
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write cut short leaves a partial line; the next record starts on a new
    /// line, so a reader sees one bad line, never two records run together.
    #[test]
    fn a_torn_write_loses_no_later_record_and_keeps_lines_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let file = crate::datadir::open_options()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let mut writer = Writer {
            path: path.clone(),
            rotate_bytes: ROTATE_BYTES,
            inner: Some(Inner {
                file,
                bytes: 0,
                torn: false,
            }),
        };
        writer.write_or_log("{\"prompt_id\":\"before\"}\n");
        // Half a record reached the file before its write failed.
        let inner = writer.inner.as_mut().unwrap();
        inner.file.write_all(b"{\"half").unwrap();
        inner.torn = true;
        writer.write_or_log("{\"prompt_id\":\"after\"}\n");
        let live = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = live.lines().collect();
        assert_eq!(
            lines,
            [
                "{\"prompt_id\":\"before\"}",
                "{\"half",
                "{\"prompt_id\":\"after\"}"
            ]
        );
    }

    /// Records go through the writer thread in order; `flush` waits for them.
    #[test]
    fn records_are_written_in_order_by_the_writer_thread() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        for i in 0..50 {
            log.record(
                "prompt",
                "default",
                serde_json::json!({"prompt_id": format!("p{i}")}),
            );
        }
        log.flush();
        let live = std::fs::read_to_string(log.path()).unwrap();
        let ids: Vec<String> = live
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["prompt_id"].to_string())
            .collect();
        let expected: Vec<String> = (0..50).map(|i| format!("\"p{i}\"")).collect();
        assert_eq!(ids, expected);
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
        log.flush();
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
