//! Scheduled prompts of one session (docs/protocol.md §10): prompts accepted now
//! and queued at a later time, by a client (`prompt` with `at`) or by the relay
//! itself (`auto_continue` at a usage limit's reset). They survive a server
//! restart, so each is a file in the session's data dir.
//!
//! Owns: the `scheduled/` folder of a session's data dir (one file per prompt,
//! content included, so memory holds only what is needed to know when each is
//! due), and the syntax of `at`.
//! Must not: decide what happens to a prompt that is due (the session actor queues
//! it, or aborts it when the key that scheduled it is no longer usable), or emit
//! events.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// At most this many scheduled prompts per session (docs/protocol.md §10).
pub const MAX_SCHEDULED: usize = 100;
/// How far ahead a prompt may be scheduled: far enough for a weekend, near
/// enough that a typo in the year is refused rather than kept for ever.
pub const MAX_AHEAD: Duration = Duration::from_secs(30 * 24 * 3600);

const FOLDER: &str = "scheduled";

/// A bad `at`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtError {
    #[error("`at` must be an RFC 3339 time such as 2026-12-07T09:30:00Z")]
    Syntax,
    #[error("`at` may be at most 30 days ahead")]
    TooFar,
}

/// Reads a prompt's `at`. A time already past is valid (the prompt is queued at
/// once); one more than [`MAX_AHEAD`] from `now` is not.
pub fn parse_at(text: &str, now: SystemTime) -> Result<SystemTime, AtError> {
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| AtError::Syntax)?;
    let at = SystemTime::from(at);
    if at.duration_since(now).is_ok_and(|ahead| ahead > MAX_AHEAD) {
        return Err(AtError::TooFar);
    }
    Ok(at)
}

/// `t` as RFC 3339 in UTC, to the millisecond (as `scheduled_at` carries it).
pub fn rfc3339(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i128);
    OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000)
        .ok()
        .and_then(|d| d.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Who scheduled a prompt: the key whose usability, when the prompt is due,
/// decides whether it still runs (`from=` is checked against `address`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledBy {
    pub fingerprint: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
}

impl ScheduledBy {
    pub fn of(info: &super::ClientInfo) -> ScheduledBy {
        ScheduledBy {
            fingerprint: info.fingerprint.clone(),
            client_id: info.client_id.clone(),
            device: info.device.clone(),
            address: info.address,
        }
    }
}

/// One scheduled prompt as memory holds it (its content stays on disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    pub prompt_id: String,
    pub at: SystemTime,
    /// None: scheduled with no key behind it (`auto_continue` set in the
    /// server's configuration).
    pub by: Option<ScheduledBy>,
    pub auto_continue: bool,
}

/// A scheduled prompt's file.
#[derive(Serialize, Deserialize)]
struct Record {
    prompt_id: String,
    at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    by: Option<ScheduledBy>,
    #[serde(default)]
    auto_continue: bool,
    content: Box<RawValue>,
}

/// A scheduled prompt that is due, with its content read back.
#[derive(Debug)]
pub struct Due {
    pub prompt: Scheduled,
    /// `Err` when the file could not be read back (the prompt cannot run).
    pub content: Result<Box<RawValue>, String>,
}

/// The scheduled prompts of one session, soonest first.
#[derive(Debug)]
pub struct ScheduledStore {
    dir: PathBuf,
    entries: Vec<Scheduled>,
}

fn ms_of(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ScheduledStore {
    /// Reads the session's scheduled prompts; a file that cannot be read is
    /// logged and removed (it can never run).
    pub fn open(session_dir: &Path, session: &str) -> ScheduledStore {
        let dir = session_dir.join(FOLDER);
        let mut entries = Vec::new();
        if let Ok(listing) = std::fs::read_dir(&dir) {
            for entry in listing.flatten() {
                let path = entry.path();
                if path.extension().is_none_or(|e| e != "json") {
                    // A temporary file of an interrupted write.
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                match std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()))
                {
                    Ok(r) => entries.push(Scheduled {
                        prompt_id: r.prompt_id,
                        at: SystemTime::UNIX_EPOCH + Duration::from_millis(r.at_ms),
                        by: r.by,
                        auto_continue: r.auto_continue,
                    }),
                    Err(error) => {
                        tracing::warn!(session, file = %path.display(), %error, "an unreadable scheduled prompt was dropped");
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        entries.sort_by_key(|e| e.at);
        ScheduledStore { dir, entries }
    }

    fn path_of(&self, prompt_id: &str) -> PathBuf {
        self.dir.join(format!("{prompt_id}.json"))
    }

    /// Keeps only the prompts `open` says are still waiting (the journal shows
    /// them accepted and not ended); the others' files are removed.
    pub fn retain(&mut self, mut open: impl FnMut(&str) -> bool) {
        let (keep, drop): (Vec<_>, Vec<_>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| open(&e.prompt_id));
        for gone in drop {
            let _ = std::fs::remove_file(self.path_of(&gone.prompt_id));
        }
        self.entries = keep;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, prompt_id: &str) -> bool {
        self.entries.iter().any(|e| e.prompt_id == prompt_id)
    }

    /// The scheduled prompts, soonest first.
    pub fn iter(&self) -> impl Iterator<Item = &Scheduled> {
        self.entries.iter()
    }

    /// Is an `auto_continue` prompt waiting?
    pub fn has_auto_continue(&self) -> bool {
        self.entries.iter().any(|e| e.auto_continue)
    }

    /// Records a scheduled prompt (its file first: nothing is announced that a
    /// restart would lose).
    pub fn add(&mut self, prompt: Scheduled, content: &RawValue) -> std::io::Result<()> {
        crate::datadir::create_dir_all(&self.dir)?;
        let record = Record {
            prompt_id: prompt.prompt_id.clone(),
            at_ms: ms_of(prompt.at),
            by: prompt.by.clone(),
            auto_continue: prompt.auto_continue,
            content: content.to_owned(),
        };
        let body = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        crate::datadir::write_atomic(&self.path_of(&prompt.prompt_id), body)?;
        let at = self.entries.partition_point(|e| e.at <= prompt.at);
        self.entries.insert(at, prompt);
        Ok(())
    }

    /// Forgets a prompt (cancelled, or its session closed).
    pub fn remove(&mut self, prompt_id: &str) -> Option<Scheduled> {
        let index = self.entries.iter().position(|e| e.prompt_id == prompt_id)?;
        let _ = std::fs::remove_file(self.path_of(prompt_id));
        Some(self.entries.remove(index))
    }

    /// Forgets them all, soonest first.
    pub fn remove_all(&mut self) -> Vec<Scheduled> {
        let all = std::mem::take(&mut self.entries);
        for e in &all {
            let _ = std::fs::remove_file(self.path_of(&e.prompt_id));
        }
        all
    }

    /// When the soonest one is due.
    pub fn next_due(&self) -> Option<SystemTime> {
        self.entries.first().map(|e| e.at)
    }

    /// The prompts due at `now`, soonest first, with their content; their files
    /// are removed.
    pub fn take_due(&mut self, now: SystemTime) -> Vec<Due> {
        let count = self.entries.partition_point(|e| e.at <= now);
        let due: Vec<Scheduled> = self.entries.drain(..count).collect();
        due.into_iter()
            .map(|prompt| {
                let path = self.path_of(&prompt.prompt_id);
                let content = std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()))
                    .map(|r| r.content);
                let _ = std::fs::remove_file(&path);
                Due { prompt, content }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn prompt(id: &str, secs: u64) -> Scheduled {
        Scheduled {
            prompt_id: id.into(),
            at: at(secs),
            by: Some(ScheduledBy {
                fingerprint: "SHA256:k".into(),
                client_id: "c1".into(),
                device: Some("phone".into()),
                address: Some("192.0.2.7".parse().expect("address")),
            }),
            auto_continue: false,
        }
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.into()).expect("raw json")
    }

    #[test]
    fn at_is_rfc3339_and_at_most_30_days_ahead() {
        let now = at(1_800_000_000);
        assert_eq!(
            parse_at("2027-01-15T08:00:00Z", now),
            Ok(SystemTime::from(
                OffsetDateTime::parse("2027-01-15T08:00:00Z", &Rfc3339).expect("time")
            ))
        );
        assert_eq!(
            parse_at("2027-01-15T09:00:00+01:00", now),
            parse_at("2027-01-15T08:00:00Z", now)
        );
        assert_eq!(parse_at("tomorrow", now), Err(AtError::Syntax));
        assert_eq!(parse_at("2027-01-15 08:00", now), Err(AtError::Syntax));
        assert_eq!(parse_at("2207-01-15T08:00:00Z", now), Err(AtError::TooFar));
        // The past is fine: queued at once.
        assert_eq!(parse_at("1970-01-01T00:00:01Z", now), Ok(at(1)));
        assert_eq!(rfc3339(at(1_800_000_000)), "2027-01-15T08:00:00Z");
        assert_eq!(
            rfc3339(at(1_800_000_000) + Duration::from_millis(250)),
            "2027-01-15T08:00:00.25Z"
        );
    }

    #[test]
    fn prompts_survive_a_reopen_soonest_first_and_leave_when_due() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = ScheduledStore::open(dir.path(), "s");
        assert!(store.is_empty());
        store
            .add(prompt("late", 300), &raw(r#""later""#))
            .expect("add");
        store
            .add(
                prompt("soon", 100),
                &raw(r#"[{"type":"text","text":"soon"}]"#),
            )
            .expect("add");
        store.add(prompt("gone", 200), &raw("\"x\"")).expect("add");
        assert_eq!(store.next_due(), Some(at(100)));

        let mut store = ScheduledStore::open(dir.path(), "s");
        assert_eq!(store.len(), 3);
        assert_eq!(store.entries[0], prompt("soon", 100));
        store.retain(|id| id != "gone");
        assert_eq!(store.len(), 2);
        assert!(!dir.path().join("scheduled/gone.json").exists());

        assert!(store.take_due(at(99)).is_empty());
        let due = store.take_due(at(100));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].prompt.prompt_id, "soon");
        assert_eq!(
            due[0].content.as_ref().map(|c| c.get().to_string()),
            Ok(r#"[{"type":"text","text":"soon"}]"#.to_string())
        );
        assert!(!dir.path().join("scheduled/soon.json").exists());
        assert_eq!(
            ScheduledStore::open(dir.path(), "s").len(),
            1,
            "a prompt that was due is gone from disk too"
        );
        assert!(store.remove("late").is_some());
        assert!(ScheduledStore::open(dir.path(), "s").is_empty());
    }

    #[test]
    fn an_unreadable_file_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(FOLDER)).expect("mkdir");
        std::fs::write(dir.path().join("scheduled/bad.json"), b"{not json").expect("write");
        std::fs::write(dir.path().join("scheduled/x.json.tmp"), b"half").expect("write");
        let store = ScheduledStore::open(dir.path(), "s");
        assert!(store.is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join(FOLDER))
                .expect("listing")
                .count(),
            0
        );
    }
}
