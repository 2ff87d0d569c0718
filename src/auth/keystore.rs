//! The authorized keys in force: one parsed snapshot ([`KeySet`]) of the owner
//! file and the optional viewer file, and the [`KeyStore`] that reloads it on
//! SIGHUP or when either file changes, telling subscribers.
//!
//! Owns: which key may log in with which role from which address now. Reloads
//! keep the previous good set when a file cannot be read, so a half-written file
//! or an editor's rename never locks everybody out; a file that reads fine but
//! lists fewer keys takes effect at once, so revoking a key works.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::authorized_keys::{self, KeyLine, KeyOptions, ParsedLine};
use super::hostmatch;
use super::{AuthError, Role};

/// How often the watcher looks at the files' metadata.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(300);

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (bounds verification cost).
pub const MAX_RSA_BITS: usize = 16384;

/// Why the key files could not be (re)loaded. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read (missing, permissions, not UTF-8...).
    #[error("cannot read keys file {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The owner file lists no key ccrelay can use.
    #[error("keys file {path} has no usable key (run `ccrelay keys check {path}`)")]
    NoUsableKey {
        /// The file.
        path: PathBuf,
    },
}

/// Why a key line can never be used, whoever connects. `None` means usable
/// (its `from=` and `expiry-time` are checked per connection).
pub fn key_refusal(line: &KeyLine) -> Option<AuthError> {
    if let Some(e) = key_type_refusal(line.key.key_data()) {
        return Some(e);
    }
    line.options
        .disallowed
        .first()
        .map(|o| AuthError::DisallowedOption(o.clone()))
}

/// Key types ccrelay refuses whatever the options (DSA, small RSA, unknown).
pub fn key_type_refusal(key: &KeyData) -> Option<AuthError> {
    match key {
        KeyData::Ed25519(_)
        | KeyData::Ecdsa(_)
        | KeyData::SkEd25519(_)
        | KeyData::SkEcdsaSha2NistP256(_) => None,
        KeyData::Rsa(rsa) => {
            let bits = rsa_bits(rsa);
            if bits < MIN_RSA_BITS {
                Some(AuthError::RsaKeyTooSmall { bits })
            } else if bits > MAX_RSA_BITS {
                Some(AuthError::UnsupportedKeyType(format!(
                    "ssh-rsa with {bits} bits"
                )))
            } else {
                None
            }
        }
        other => Some(AuthError::UnsupportedKeyType(
            other.algorithm().as_str().to_owned(),
        )),
    }
}

/// Size of an RSA modulus in bits, as `ssh-keygen -l` counts it.
pub fn rsa_bits(rsa: &ssh_key::public::RsaPublicKey) -> usize {
    let n = rsa.n.as_positive_bytes().unwrap_or(&[]);
    let n = match n.iter().position(|&b| b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    (n.len() - 1) * 8 + (8 - n[0].leading_zeros() as usize)
}

/// One entry of a [`KeySet`].
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// The key line as parsed.
    pub line: KeyLine,
    /// The role its file gives.
    pub role: Role,
    /// Set when the key can never be used (logged once when the set was built).
    pub refusal: Option<AuthError>,
}

impl KeyEntry {
    /// The key's options.
    pub fn options(&self) -> &KeyOptions {
        &self.line.options
    }

    /// Does this entry let `peer` in at `now`? Type and option refusals first.
    pub fn check(&self, peer: IpAddr, now: SystemTime) -> Result<(), AuthError> {
        if let Some(e) = &self.refusal {
            return Err(e.clone());
        }
        let o = &self.line.options;
        if let Some(exp) = o.expiry {
            // OpenSSH refuses once `now` is past the expiry second.
            if now > exp {
                return Err(AuthError::KeyExpired(humantime(exp)));
            }
        }
        if let Some(from) = &o.from {
            hostmatch::match_from(from, peer).map_err(|why| AuthError::FromNotMatched {
                peer: hostmatch::canonical(peer),
                why: why.to_string(),
            })?;
        }
        Ok(())
    }
}

fn humantime(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{secs}"))
}

/// One parsed snapshot of the owner file plus the optional viewer file.
#[derive(Debug, Default)]
pub struct KeySet {
    entries: Vec<KeyEntry>,
    /// Entry indexes per key, in file order, owner file first.
    by_key: HashMap<KeyData, Vec<usize>>,
    usable: usize,
    /// Digest of the files' bytes, to tell a real change from a touch.
    digest: [u8; 32],
}

impl KeySet {
    /// Build a set from file texts. `*_name` names the file in warnings.
    pub fn from_texts(owner_name: &str, owner: &str, viewer: Option<(&str, &str)>) -> KeySet {
        let mut set = KeySet::default();
        let mut hasher = Sha256::new();
        hasher.update(owner.len().to_be_bytes());
        hasher.update(owner.as_bytes());
        set.add_file(owner_name, owner, Role::Owner);
        if let Some((name, text)) = viewer {
            hasher.update(text.as_bytes());
            set.add_file(name, text, Role::Viewer);
        }
        set.digest = hasher.finalize().into();
        set
    }

    fn add_file(&mut self, name: &str, text: &str, role: Role) {
        for parsed in authorized_keys::parse(text) {
            match parsed {
                ParsedLine::Malformed { line, reason } => {
                    tracing::warn!(file = name, line, %reason, "skipping malformed authorized_keys line");
                }
                ParsedLine::Key(line) => {
                    let refusal = key_refusal(&line);
                    if let Some(why) = &refusal {
                        tracing::warn!(
                            file = name,
                            line = line.line,
                            fingerprint = %line.key.fingerprint(HashAlg::Sha256),
                            reason = %why,
                            "key will not be accepted"
                        );
                    } else {
                        self.usable += 1;
                    }
                    let idx = self.entries.len();
                    self.by_key
                        .entry(line.key.key_data().clone())
                        .or_default()
                        .push(idx);
                    self.entries.push(KeyEntry {
                        line: *line,
                        role,
                        refusal,
                    });
                }
            }
        }
    }

    /// Is this key allowed for this peer now? Returns role + comment (owner file wins if a key is in both).
    pub fn authorize(
        &self,
        key: &PublicKey,
        peer: IpAddr,
        now: SystemTime,
    ) -> Result<(Role, String), AuthError> {
        let e = self.find(key.key_data(), peer, now)?;
        Ok((e.role, e.line.comment.clone()))
    }

    /// The first entry for `key` (owner file first, then file order) that lets
    /// `peer` in at `now`, as sshd scans its file; else the first entry's refusal.
    pub fn find(
        &self,
        key: &KeyData,
        peer: IpAddr,
        now: SystemTime,
    ) -> Result<&KeyEntry, AuthError> {
        let idxs = self.by_key.get(key).ok_or(AuthError::NotListed)?;
        let mut first_err = None;
        for &i in idxs {
            let Some(e) = self.entries.get(i) else {
                continue;
            };
            match e.check(peer, now) {
                Ok(()) => return Ok(e),
                Err(err) => {
                    first_err.get_or_insert(err);
                }
            }
        }
        Err(first_err.unwrap_or(AuthError::NotListed))
    }

    /// Number of usable keys (entries not refused for their type or options).
    pub fn len(&self) -> usize {
        self.usable
    }

    /// True when no key is usable.
    pub fn is_empty(&self) -> bool {
        self.usable == 0
    }

    /// Every entry, owner file first, in file order.
    pub fn entries(&self) -> &[KeyEntry] {
        &self.entries
    }

    /// Usable entries of one role.
    fn usable_of(&self, role: Role) -> usize {
        self.entries
            .iter()
            .filter(|e| e.role == role && e.refusal.is_none())
            .count()
    }
}

/// Stat identity of a file: a change of any part means "re-read it".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    mtime: Option<SystemTime>,
    size: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        mtime: m.modified().ok(),
        size: m.len(),
        inode: m.ino(),
    })
}

struct Inner {
    owner: PathBuf,
    viewer: Option<PathBuf>,
    tx: watch::Sender<Arc<KeySet>>,
    /// Serialises reloads (watcher, SIGHUP, explicit calls).
    reload_lock: Mutex<()>,
}

/// The keys in force and their reloading. Cheap to clone.
#[derive(Clone)]
pub struct KeyStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("owner", &self.inner.owner)
            .field("viewer", &self.inner.viewer)
            .field("keys", &self.current().len())
            .finish()
    }
}

fn read(path: &Path) -> Result<String, KeyFileError> {
    std::fs::read_to_string(path).map_err(|source| KeyFileError::Unreadable {
        path: path.to_owned(),
        source,
    })
}

fn read_set(owner: &Path, viewer: Option<&Path>) -> Result<KeySet, KeyFileError> {
    let owner_text = read(owner)?;
    let viewer_text = viewer.map(|p| read(p).map(|t| (p, t))).transpose()?;
    let owner_name = owner.display().to_string();
    let viewer_name = viewer.map(|p| p.display().to_string()).unwrap_or_default();
    Ok(KeySet::from_texts(
        &owner_name,
        &owner_text,
        viewer_text
            .as_ref()
            .map(|(_, t)| (viewer_name.as_str(), t.as_str())),
    ))
}

impl KeyStore {
    /// Errors (for the server's config validation, exit 2): owner file unreadable, or no usable key in it. Names the file.
    pub fn load(owner_path: &Path, viewer_path: Option<&Path>) -> Result<KeyStore, KeyFileError> {
        let set = read_set(owner_path, viewer_path)?;
        if set.usable_of(Role::Owner) == 0 {
            return Err(KeyFileError::NoUsableKey {
                path: owner_path.to_owned(),
            });
        }
        tracing::info!(owner_file = %owner_path.display(), keys = set.len(), "authorized keys loaded");
        let (tx, _rx) = watch::channel(Arc::new(set));
        Ok(KeyStore {
            inner: Arc::new(Inner {
                owner: owner_path.to_owned(),
                viewer: viewer_path.map(Path::to_owned),
                tx,
                reload_lock: Mutex::new(()),
            }),
        })
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<KeySet> {
        self.inner.tx.borrow().clone()
    }

    /// Re-read both files; on any read error keep the previous good set and return the error (the caller logs it).
    /// A set whose files' bytes did not change is not published again.
    pub fn reload(&self) -> Result<(), KeyFileError> {
        let _guard = self
            .inner
            .reload_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let set = read_set(&self.inner.owner, self.inner.viewer.as_deref())?;
        if set.usable_of(Role::Owner) == 0 {
            // Not an error: emptying the file is a way to revoke every key.
            tracing::warn!(file = %self.inner.owner.display(), "owner keys file now has no usable key");
        }
        let set = Arc::new(set);
        let changed = self.inner.tx.send_if_modified(|cur| {
            if cur.digest == set.digest {
                false
            } else {
                *cur = set.clone();
                true
            }
        });
        if changed {
            tracing::info!(keys = set.len(), "authorized keys reloaded");
        }
        Ok(())
    }

    /// Changes whenever a reload produced a new set; connections re-check their identity on change and close with 1008 if their key is gone.
    pub fn subscribe(&self) -> watch::Receiver<Arc<KeySet>> {
        self.inner.tx.subscribe()
    }

    fn stamps(&self) -> (Option<FileStamp>, Option<FileStamp>) {
        (
            stamp(&self.inner.owner),
            self.inner.viewer.as_deref().and_then(stamp),
        )
    }

    async fn reload_in_background(&self, why: &'static str) {
        let store = self.clone();
        match tokio::task::spawn_blocking(move || store.reload()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(trigger = why, error = %e, "keys reload failed; keeping the previous keys")
            }
            Err(e) => tracing::error!(trigger = why, error = %e, "keys reload task failed"),
        }
    }

    /// Background task: reload on SIGHUP and when either file's (mtime, size, inode) changes (poll every ~250-500 ms, so a removed key is noticed within about a second). Stops when `shutdown` is cancelled.
    pub fn spawn_watcher(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let mut hup = match signal(SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; keys are reloaded on file changes only");
                    None
                }
            };
            // None: the first tick (immediate) re-reads, catching any change made
            // between `load` and now; an unchanged file publishes nothing.
            let mut last = None;
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    Some(()) = async {
                        match hup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => {
                        tracing::info!("SIGHUP: reloading authorized keys");
                        last = Some(store.stamps());
                        store.reload_in_background("sighup").await;
                    }
                    _ = tick.tick() => {
                        let now = Some(store.stamps());
                        if now != last {
                            last = now;
                            store.reload_in_background("file_changed").await;
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testutil::*;

    #[test]
    fn owner_wins_and_viewer_role() {
        let dir = tempdir();
        let a = keygen(&dir, "a", "ed25519", None);
        let b = keygen(&dir, "b", "ed25519", None);
        let owner = format!("{} owner-a\n", a.pub_line_no_comment());
        let viewer = format!(
            "{} viewer-a\n{} viewer-b\n",
            a.pub_line_no_comment(),
            b.pub_line_no_comment()
        );
        let set = KeySet::from_texts("owner", &owner, Some(("viewer", &viewer)));
        assert_eq!(set.len(), 3);
        let (role, comment) = set
            .authorize(&a.public, localhost(), SystemTime::now())
            .unwrap();
        assert_eq!((role, comment.as_str()), (Role::Owner, "owner-a"));
        let (role, comment) = set
            .authorize(&b.public, localhost(), SystemTime::now())
            .unwrap();
        assert_eq!((role, comment.as_str()), (Role::Viewer, "viewer-b"));
    }

    #[test]
    fn first_entry_that_allows_wins_like_sshd() {
        let dir = tempdir();
        let a = keygen(&dir, "a", "ed25519", None);
        let text = format!(
            "from=\"10.0.0.0/8\" {k} lan\n{k} anywhere\n",
            k = a.pub_line_no_comment()
        );
        let set = KeySet::from_texts("owner", &text, None);
        let (_, c) = set
            .authorize(&a.public, "10.1.1.1".parse().unwrap(), SystemTime::now())
            .unwrap();
        assert_eq!(c, "lan");
        let (_, c) = set
            .authorize(&a.public, localhost(), SystemTime::now())
            .unwrap();
        assert_eq!(c, "anywhere");
        // Only the restricted line: the from= refusal is reported.
        let set = KeySet::from_texts(
            "owner",
            &format!("from=\"10.0.0.0/8\" {}\n", a.pub_line_no_comment()),
            None,
        );
        let err = set
            .authorize(&a.public, localhost(), SystemTime::now())
            .unwrap_err();
        assert_eq!(err.reason_label(), "from_denied");
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempdir();
        let missing = dir.path().join("nope");
        let err = KeyStore::load(&missing, None).unwrap_err();
        assert!(matches!(err, KeyFileError::Unreadable { .. }));
        assert!(err.to_string().contains("nope"), "{err}");

        let only_bad = dir.path().join("bad_keys");
        std::fs::write(
            &only_bad,
            format!("ssh-dss {DSA_FIXTURE}\ncommand=\"x\" {}\n", ED_FIXTURE_LINE),
        )
        .unwrap();
        let err = KeyStore::load(&only_bad, None).unwrap_err();
        assert!(matches!(err, KeyFileError::NoUsableKey { .. }));
        assert!(err.to_string().contains("bad_keys"), "{err}");

        // A viewer file that cannot be read is an error too.
        let good = dir.path().join("good");
        std::fs::write(&good, format!("{ED_FIXTURE_LINE}\n")).unwrap();
        assert!(KeyStore::load(&good, Some(&missing)).is_err());
        assert!(KeyStore::load(&good, None).is_ok());
    }

    #[test]
    fn reload_keeps_old_set_when_file_unreadable() {
        let dir = tempdir();
        let a = keygen(&dir, "a", "ed25519", None);
        let path = dir.path().join("keys");
        std::fs::write(&path, format!("{}\n", a.pub_line)).unwrap();
        let store = KeyStore::load(&path, None).unwrap();
        let before = store.current();
        std::fs::remove_file(&path).unwrap();
        let err = store.reload().unwrap_err();
        assert!(matches!(err, KeyFileError::Unreadable { .. }));
        assert!(Arc::ptr_eq(&before, &store.current()));
        assert!(
            store
                .current()
                .authorize(&a.public, localhost(), SystemTime::now())
                .is_ok()
        );
        // Not UTF-8 is unreadable too.
        std::fs::write(&path, b"\xff\xfe garbage").unwrap();
        assert!(store.reload().is_err());
        assert!(Arc::ptr_eq(&before, &store.current()));
    }

    #[test]
    fn reload_publishes_only_real_changes_and_applies_revocation() {
        let dir = tempdir();
        let a = keygen(&dir, "a", "ed25519", None);
        let path = dir.path().join("keys");
        std::fs::write(&path, format!("{}\n", a.pub_line)).unwrap();
        let store = KeyStore::load(&path, None).unwrap();
        let mut rx = store.subscribe();
        store.reload().unwrap();
        assert!(!rx.has_changed().unwrap(), "same bytes must not notify");
        std::fs::write(&path, "# everything revoked\n").unwrap();
        store.reload().unwrap();
        assert!(rx.has_changed().unwrap());
        let set = rx.borrow_and_update().clone();
        assert_eq!(set.len(), 0);
        assert_eq!(
            set.authorize(&a.public, localhost(), SystemTime::now())
                .unwrap_err()
                .reason_label(),
            "not_listed"
        );
    }

    #[tokio::test]
    async fn watcher_sees_a_removed_key_within_a_second() {
        let dir = tempdir();
        let a = keygen(&dir, "a", "ed25519", None);
        let b = keygen(&dir, "b", "ed25519", None);
        let path = dir.path().join("keys");
        std::fs::write(&path, format!("{}\n{}\n", a.pub_line, b.pub_line)).unwrap();
        let store = KeyStore::load(&path, None).unwrap();
        let mut rx = store.subscribe();
        let shutdown = CancellationToken::new();
        let task = store.spawn_watcher(shutdown.clone());
        // Let the watcher take its first look before the file changes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        std::fs::write(&path, format!("{}\n", a.pub_line)).unwrap();
        tokio::time::timeout(Duration::from_millis(1500), rx.changed())
            .await
            .expect("no reload within 1.5 s")
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(1200),
            "{:?}",
            started.elapsed()
        );
        let set = rx.borrow_and_update().clone();
        assert!(
            set.authorize(&a.public, localhost(), SystemTime::now())
                .is_ok()
        );
        assert_eq!(
            set.authorize(&b.public, localhost(), SystemTime::now())
                .unwrap_err()
                .reason_label(),
            "not_listed"
        );
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("watcher did not stop")
            .unwrap();
    }

    #[tokio::test]
    async fn watcher_picks_up_a_change_made_before_it_started() {
        let dir = tempdir();
        let a = keygen(&dir, "a", "ed25519", None);
        let path = dir.path().join("keys");
        std::fs::write(&path, format!("{}\n", a.pub_line)).unwrap();
        let store = KeyStore::load(&path, None).unwrap();
        let mut rx = store.subscribe();
        std::fs::write(&path, "# revoked before the watcher started\n").unwrap();
        let shutdown = CancellationToken::new();
        let task = store.spawn_watcher(shutdown.clone());
        tokio::time::timeout(Duration::from_secs(1), rx.changed())
            .await
            .expect("no reload within 1 s")
            .unwrap();
        assert!(rx.borrow_and_update().is_empty());
        shutdown.cancel();
        task.await.unwrap();
    }

    #[test]
    fn rsa_bit_counting() {
        let n = |bytes: &[u8]| ssh_key::public::RsaPublicKey {
            e: ssh_key::Mpint::from_positive_bytes(&[1, 0, 1]).unwrap(),
            n: ssh_key::Mpint::from_positive_bytes(bytes).unwrap(),
        };
        assert_eq!(rsa_bits(&n(&[0x80; 256])), 2048);
        assert_eq!(rsa_bits(&n(&[0x7f; 256])), 2047);
        assert_eq!(rsa_bits(&n(&[0x01])), 1);
    }
}
