//! Conversation persistence, so `--resume <id>` works across processes.
//!
//! One JSON file per session: `<state dir>/<session_id>.json`, where the state
//! dir is `$CCRELAY_MOCK_STATE_DIR`, else `$XDG_STATE_HOME/ccrelay-mock`, else
//! `$HOME/.local/state/ccrelay-mock`. Written atomically (temp file + rename)
//! at the start and the end of every turn, so a killed turn's prompt survives
//! like it does with the real CLI.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One prompt and the answer it got (`None` while running or if the turn was cut short).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exchange {
    /// The prompt's text.
    pub prompt: String,
    /// The final answer text.
    pub answer: Option<String>,
}

/// A stored conversation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conversation {
    /// The session id (also the file name).
    pub session_id: String,
    /// Every turn so far, oldest first.
    pub exchanges: Vec<Exchange>,
}

/// The directory conversations live in.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CCRELAY_MOCK_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("ccrelay-mock");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/state/ccrelay-mock")
}

/// Only ids that are safe as a file name can name a stored conversation.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn path_of(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Loads a conversation; `None` when it does not exist or cannot be read.
pub fn load(dir: &Path, id: &str) -> Option<Conversation> {
    if !valid_id(id) {
        return None;
    }
    let bytes = std::fs::read(path_of(dir, id)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Saves a conversation atomically. Failures are reported on stderr only:
/// a mock that cannot persist still answers.
pub fn save(dir: &Path, conv: &Conversation) {
    if !valid_id(&conv.session_id) {
        return;
    }
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let path = path_of(dir, &conv.session_id);
        let tmp = dir.join(format!(".{}.{}.tmp", conv.session_id, std::process::id()));
        let bytes = serde_json::to_vec_pretty(conv).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        eprintln!(
            "mock-agent: cannot save conversation in {}: {e}",
            dir.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejects_path_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conv = Conversation {
            session_id: "abc-1".into(),
            exchanges: vec![Exchange {
                prompt: "p".into(),
                answer: None,
            }],
        };
        save(dir.path(), &conv);
        let back = load(dir.path(), "abc-1").expect("stored");
        assert_eq!(back.exchanges.len(), 1);
        assert!(load(dir.path(), "../abc-1").is_none());
        assert!(load(dir.path(), "missing").is_none());
    }
}
