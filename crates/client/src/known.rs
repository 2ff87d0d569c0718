//! The `known_servers` file of `ccrelay attach` (docs/protocol.md §3.11, server identity):
//! per server URL, the `server_id` seen the first time, the certificate
//! fingerprint when no CA vouched for it, and whether the server offered channel
//! binding — ssh's known_hosts for relays.
//!
//! Owns: the file's location, its format, reading it and updating one line while
//! leaving every other byte as it was. Must not: decide what to trust (`trust`).
//!
//! Format, one server a line, `#` comments and blank lines kept:
//! `URL server_id=ID [fingerprint=SHA256:...] [binding=tls-exporter|none]`.
//! Lines this version cannot read are kept and ignored.

use std::io::Write as _;
use std::path::PathBuf;

/// The header written at the top of a new file.
const HEADER: &str = "# ccrelay attach: relays seen before (like ssh's known_hosts).\n\
# URL server_id=ID [fingerprint=SHA256:...] [binding=tls-exporter|none]\n\
# Delete a server's line to forget it (e.g. after it got a new certificate or data dir).\n";

/// What is remembered about one server URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub url: String,
    pub server_id: String,
    /// Pinned certificate fingerprint (a certificate no CA vouched for).
    pub fingerprint: Option<String>,
    /// `Some(true)`: offered channel binding; `Some(false)`: a `wss://` server that
    /// did not (TLS ends at a proxy); `None`: plaintext, nothing to say.
    pub binding: Option<bool>,
}

impl Entry {
    fn line(&self) -> String {
        let mut s = format!("{} server_id={}", self.url, self.server_id);
        if let Some(fp) = &self.fingerprint {
            s.push_str(" fingerprint=");
            s.push_str(fp);
        }
        match self.binding {
            Some(true) => s.push_str(" binding=tls-exporter"),
            Some(false) => s.push_str(" binding=none"),
            None => {}
        }
        s
    }

    fn parse(line: &str) -> Option<Entry> {
        let mut words = line.split_whitespace();
        let url = words.next()?;
        if !url.contains("://") {
            return None;
        }
        let mut entry = Entry {
            url: url.to_string(),
            server_id: String::new(),
            fingerprint: None,
            binding: None,
        };
        for word in words {
            let (k, v) = word.split_once('=')?;
            match k {
                "server_id" => entry.server_id = v.to_string(),
                "fingerprint" => entry.fingerprint = Some(v.to_string()),
                "binding" => {
                    entry.binding = match v {
                        "tls-exporter" => Some(true),
                        "none" => Some(false),
                        _ => return None,
                    }
                }
                // Fields of a later version: keep the line usable.
                _ => {}
            }
        }
        (!entry.server_id.is_empty()).then_some(entry)
    }
}

/// A server's entry and where it is (1-based line number), for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub entry: Entry,
    pub line: usize,
}

/// Why the file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct KnownError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The known_servers file: its text as lines, so an update leaves the rest alone.
#[derive(Debug, Clone)]
pub struct KnownServers {
    path: Option<PathBuf>,
    lines: Vec<String>,
}

/// `$XDG_CONFIG_HOME/ccrelay/known_servers`, else `~/.config/ccrelay/known_servers`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir).join("ccrelay/known_servers"));
    }
    ccrelay_server::datadir::home_dir().map(|h| h.join(".config/ccrelay/known_servers"))
}

impl KnownServers {
    /// Read the file (a missing file is an empty list). `None`: nowhere to keep
    /// records (no `$HOME`): nothing is known and nothing is recorded.
    pub fn load(path: Option<PathBuf>) -> Result<KnownServers, KnownError> {
        let text = match &path {
            None => String::new(),
            Some(p) => match std::fs::read_to_string(p) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(source) => {
                    return Err(KnownError {
                        path: p.clone(),
                        source,
                    });
                }
            },
        };
        Ok(KnownServers::parse(path, &text))
    }

    fn parse(path: Option<PathBuf>, text: &str) -> KnownServers {
        KnownServers {
            path,
            lines: text.lines().map(str::to_string).collect(),
        }
    }

    /// Where the records live (for messages), or a description when nowhere.
    pub fn display_path(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "known_servers (no $HOME: not kept)".into(),
        }
    }

    /// The entry for `url`, the first if the file has several.
    pub fn find(&self, url: &str) -> Option<Found> {
        self.lines.iter().enumerate().find_map(|(i, l)| {
            let t = l.trim();
            if t.is_empty() || t.starts_with('#') {
                return None;
            }
            Entry::parse(t)
                .filter(|e| e.url == url)
                .map(|entry| Found { entry, line: i + 1 })
        })
    }

    /// Add or replace the entry for `entry.url` and write the file (atomically;
    /// the directory is made 0700 when missing).
    pub fn record(&mut self, entry: Entry) -> Result<(), KnownError> {
        let line = entry.line();
        match self.find(&entry.url) {
            Some(found) => self.lines[found.line - 1] = line,
            None => {
                if self.lines.is_empty() {
                    self.lines.extend(HEADER.lines().map(str::to_string));
                }
                self.lines.push(line);
            }
        }
        self.save()
    }

    fn save(&self) -> Result<(), KnownError> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let Some(path) = &self.path else {
            return Ok(());
        };
        let err = |source| KnownError {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(err)?;
        }
        let mut text = self.lines.join("\n");
        text.push('\n');
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(url: &str, id: &str) -> Entry {
        Entry {
            url: url.into(),
            server_id: id.into(),
            fingerprint: None,
            binding: None,
        }
    }

    #[test]
    fn parses_lines_and_reports_line_numbers() {
        let text = "# comment\n\nws://127.0.0.1:1/v1/ws server_id=aa\n\
            wss://h:2/v1/ws server_id=bb fingerprint=SHA256:xyz binding=tls-exporter future=1\n\
            garbage line\nwss://p:3/v1/ws server_id=cc binding=none\n\
            wss://bad:4/v1/ws server_id=dd binding=maybe\n";
        let k = KnownServers::parse(None, text);
        assert_eq!(
            k.find("ws://127.0.0.1:1/v1/ws"),
            Some(Found {
                entry: entry("ws://127.0.0.1:1/v1/ws", "aa"),
                line: 3
            })
        );
        let h = k.find("wss://h:2/v1/ws").unwrap();
        assert_eq!(h.line, 4);
        assert_eq!(h.entry.fingerprint.as_deref(), Some("SHA256:xyz"));
        assert_eq!(h.entry.binding, Some(true));
        assert_eq!(
            k.find("wss://p:3/v1/ws").unwrap().entry.binding,
            Some(false)
        );
        assert_eq!(k.find("wss://bad:4/v1/ws"), None, "unreadable line ignored");
        assert_eq!(k.find("wss://other:1/v1/ws"), None);
    }

    #[test]
    fn record_adds_replaces_and_keeps_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg/ccrelay/known_servers");
        let mut k = KnownServers::load(Some(path.clone())).unwrap();
        assert_eq!(k.find("ws://a:1/v1/ws"), None);
        k.record(entry("ws://a:1/v1/ws", "one")).unwrap();
        let mut b = entry("wss://b:2/v1/ws", "two");
        b.fingerprint = Some("SHA256:fp".into());
        b.binding = Some(false);
        k.record(b.clone()).unwrap();
        // A hand-written comment and an unknown line survive an update.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("# mine\nsomething else\n");
        std::fs::write(&path, &text).unwrap();
        let mut k = KnownServers::load(Some(path.clone())).unwrap();
        b.binding = Some(true);
        k.record(b.clone()).unwrap();
        let k = KnownServers::load(Some(path.clone())).unwrap();
        assert_eq!(k.find("wss://b:2/v1/ws").unwrap().entry, b);
        assert_eq!(k.find("ws://a:1/v1/ws").unwrap().entry.server_id, "one");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# ccrelay attach"), "{text}");
        assert!(text.contains("# mine\nsomething else\n"), "{text}");
        assert_eq!(text.matches("wss://b:2/v1/ws").count(), 1, "{text}");
        assert!(
            text.contains(
                "wss://b:2/v1/ws server_id=two fingerprint=SHA256:fp binding=tls-exporter"
            )
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn nowhere_to_keep_records_is_not_an_error() {
        let mut k = KnownServers::load(None).unwrap();
        k.record(entry("ws://a:1/v1/ws", "one")).unwrap();
    }
}
