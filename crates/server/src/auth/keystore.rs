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
/// Largest RSA modulus accepted, in bits (bounds verification cost; the largest
/// `ssh-keygen` makes).
pub const MAX_RSA_BITS: usize = 16384;
/// Largest RSA public exponent accepted. `ssh-keygen` always uses 65537 (very old
/// versions 35 or 37); verification costs one modular squaring per exponent bit,
/// so a 17-bit bound keeps an RSA-16384 verification to about a millisecond
/// instead of letting a peer choose a 33-bit (or, without the rsa crate's own cap,
/// arbitrarily long) exponent.
pub const MAX_RSA_EXPONENT: u64 = 65537;

/// Why the key files could not be (re)loaded. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read (missing, permissions, not UTF-8...).
    #[error("cannot read keys file {path}: {source}")]
    Unreadable {
        /// The setting that names the file (`authorized-keys`, `viewer-keys`, ...).
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The owner file lists no key ccrelay can use.
    #[error("keys file {path} has no usable key (run `ccrelay keys check {path}`)")]
    NoUsableKey {
        /// The setting that names the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
    },
}

impl KeyFileError {
    /// The option naming the file at fault, for "invalid value for --X" (exit 2).
    pub fn setting(&self) -> &'static str {
        match self {
            KeyFileError::Unreadable { setting, .. }
            | KeyFileError::NoUsableKey { setting, .. } => setting,
        }
    }
}

/// One file of a [`KeyStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    /// Where it is.
    pub path: PathBuf,
    /// The role its keys get.
    pub role: Role,
    /// The option that names it (`authorized-keys`, `viewer-keys`, `paired-keys`, `paired-viewers`).
    pub setting: &'static str,
    /// A missing file counts as empty (the paired keys files, created on first use).
    pub may_be_missing: bool,
}

impl KeyFile {
    /// A file that must exist.
    pub fn required(path: &Path, role: Role, setting: &'static str) -> KeyFile {
        KeyFile {
            path: path.to_owned(),
            role,
            setting,
            may_be_missing: false,
        }
    }

    /// A file that may not exist yet.
    pub fn optional(path: &Path, role: Role, setting: &'static str) -> KeyFile {
        KeyFile {
            may_be_missing: true,
            ..KeyFile::required(path, role, setting)
        }
    }
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
            } else if let Some(why) = rsa_exponent_refusal(rsa) {
                Some(AuthError::UnsupportedKeyType(format!("ssh-rsa with {why}")))
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

/// Why an RSA public exponent is refused: it must be odd, at least 3 and at
/// most [`MAX_RSA_EXPONENT`]. Checked on the bytes, before any arithmetic.
fn rsa_exponent_refusal(rsa: &ssh_key::public::RsaPublicKey) -> Option<String> {
    let e = rsa.e.as_positive_bytes().unwrap_or(&[]);
    let e = match e.iter().position(|&b| b != 0) {
        Some(i) => &e[i..],
        None => return Some("a zero public exponent".into()),
    };
    if e.len() > 8 {
        return Some(format!("a {}-byte public exponent", e.len()));
    }
    let value = e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if value > MAX_RSA_EXPONENT {
        Some(format!(
            "public exponent {value} (at most {MAX_RSA_EXPONENT} accepted)"
        ))
    } else if value < 3 || value % 2 == 0 {
        Some(format!(
            "public exponent {value} (an odd number from 3 needed)"
        ))
    } else {
        None
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
    /// The file it is in (as named in warnings: its path).
    pub file: Arc<str>,
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
    /// The same indexes per `SHA256:` fingerprint (push subscriptions name their
    /// key by fingerprint).
    by_fingerprint: HashMap<String, Vec<usize>>,
    usable: usize,
    /// Digest of the files' bytes, to tell a real change from a touch.
    digest: [u8; 32],
}

impl KeySet {
    /// Build a set from file texts. `*_name` names the file in warnings.
    pub fn from_texts(owner_name: &str, owner: &str, viewer: Option<(&str, &str)>) -> KeySet {
        let mut files = vec![(owner_name, owner, Role::Owner)];
        if let Some((name, text)) = viewer {
            files.push((name, text, Role::Viewer));
        }
        KeySet::from_files(&files)
    }

    /// Build a set from (name, text, role) of each file, owner files first.
    pub fn from_files(files: &[(&str, &str, Role)]) -> KeySet {
        let mut set = KeySet::default();
        let mut hasher = Sha256::new();
        // Owner files first, so that a key in both gets the owner role (as sshd
        // scans, the first allowing entry wins).
        let ordered = files
            .iter()
            .filter(|f| f.2 == Role::Owner)
            .chain(files.iter().filter(|f| f.2 == Role::Viewer));
        for (name, text, role) in ordered {
            hasher.update(text.len().to_be_bytes());
            hasher.update(text.as_bytes());
            set.add_file(name, text, *role);
        }
        set.digest = hasher.finalize().into();
        set
    }

    fn add_file(&mut self, name: &str, text: &str, role: Role) {
        let file: Arc<str> = Arc::from(name);
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
                    self.by_fingerprint
                        .entry(line.key.fingerprint(HashAlg::Sha256).to_string())
                        .or_default()
                        .push(idx);
                    self.entries.push(KeyEntry {
                        line: *line,
                        role,
                        file: file.clone(),
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

    /// Every entry of the key with this `SHA256:` fingerprint, owner file first,
    /// in file order (none when it is not listed).
    pub fn entries_of_fingerprint(&self, fingerprint: &str) -> impl Iterator<Item = &KeyEntry> {
        self.by_fingerprint
            .get(fingerprint)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.entries.get(i))
    }

    /// The first entry listing `key` in any file, whatever its options say and
    /// whether or not it may be used (pairing never adds a key listed already).
    pub fn listing(&self, key: &KeyData) -> Option<&KeyEntry> {
        self.by_key
            .get(key)
            .and_then(|idxs| idxs.first())
            .and_then(|&i| self.entries.get(i))
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
    files: Vec<KeyFile>,
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
            .field("files", &self.inner.files)
            .field("keys", &self.current().len())
            .finish()
    }
}

fn read(file: &KeyFile) -> Result<String, KeyFileError> {
    match std::fs::read_to_string(&file.path) {
        Ok(text) => Ok(text),
        Err(e) if file.may_be_missing && e.kind() == std::io::ErrorKind::NotFound => {
            Ok(String::new())
        }
        Err(source) => Err(KeyFileError::Unreadable {
            setting: file.setting,
            path: file.path.clone(),
            source,
        }),
    }
}

fn read_set(files: &[KeyFile]) -> Result<KeySet, KeyFileError> {
    let mut texts = Vec::with_capacity(files.len());
    for f in files {
        texts.push((f.path.display().to_string(), read(f)?, f.role));
    }
    let refs: Vec<(&str, &str, Role)> = texts
        .iter()
        .map(|(n, t, r)| (n.as_str(), t.as_str(), *r))
        .collect();
    Ok(KeySet::from_files(&refs))
}

impl KeyStore {
    /// Errors (for the server's config validation, exit 2): owner file unreadable, or no usable key in it. Names the file.
    pub fn load(owner_path: &Path, viewer_path: Option<&Path>) -> Result<KeyStore, KeyFileError> {
        let mut files = vec![KeyFile::required(
            owner_path,
            Role::Owner,
            "authorized-keys",
        )];
        if let Some(v) = viewer_path {
            files.push(KeyFile::required(v, Role::Viewer, "viewer-keys"));
        }
        KeyStore::load_files(files)
    }

    /// Load these files (the first owner file is the one named when no owner key
    /// is usable; keys from any owner file count).
    pub fn load_files(files: Vec<KeyFile>) -> Result<KeyStore, KeyFileError> {
        let set = read_set(&files)?;
        if set.usable_of(Role::Owner) == 0 {
            let first = files.iter().find(|f| f.role == Role::Owner);
            return Err(KeyFileError::NoUsableKey {
                setting: first.map_or("authorized-keys", |f| f.setting),
                path: first.map(|f| f.path.clone()).unwrap_or_default(),
            });
        }
        tracing::info!(
            files = ?files.iter().map(|f| f.path.display().to_string()).collect::<Vec<_>>(),
            keys = set.len(),
            "authorized keys loaded"
        );
        let (tx, _rx) = watch::channel(Arc::new(set));
        Ok(KeyStore {
            inner: Arc::new(Inner {
                files,
                tx,
                reload_lock: Mutex::new(()),
            }),
        })
    }

    /// The files this store reads.
    pub fn files(&self) -> &[KeyFile] {
        &self.inner.files
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
        let set = read_set(&self.inner.files)?;
        if set.usable_of(Role::Owner) == 0 {
            // Not an error: emptying the file is a way to revoke every key.
            tracing::warn!("the owner keys files now have no usable key");
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

    fn stamps(&self) -> Vec<Option<FileStamp>> {
        self.inner.files.iter().map(|f| stamp(&f.path)).collect()
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
        self.spawn_watcher_with_ready(shutdown, None)
    }

    /// [`KeyStore::spawn_watcher`], telling `ready` once the watcher has taken its
    /// first look at the files (it then sees every later change).
    pub fn spawn_watcher_with_ready(
        &self,
        shutdown: CancellationToken,
        mut ready: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> tokio::task::JoinHandle<()> {
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
                        let first = last.is_none();
                        let now = Some(store.stamps());
                        if now != last {
                            last = now;
                            store.reload_in_background("file_changed").await;
                        }
                        if first {
                            // The readiness signal: changes from here on are seen.
                            tracing::debug!("watching the keys files");
                            if let Some(ready) = ready.take() {
                                let _ = ready.send(());
                            }
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
    fn listing_finds_a_key_whatever_its_options_say() {
        let dir = tempdir();
        let a = keygen(&dir, "a", "ed25519", None);
        let b = keygen(&dir, "b", "ed25519", None);
        let c = keygen(&dir, "c", "ed25519", None);
        let owner = format!(
            "# owners\nexpiry-time=\"20200101\" {}\ncommand=\"x\" {}\n",
            a.pub_line_no_comment(),
            b.pub_line_no_comment()
        );
        let set = KeySet::from_texts("/o/authorized_keys", &owner, Some(("/v/viewers", "")));
        // Refused at login, yet listed: with the file and line that list it.
        assert!(
            set.authorize(&a.public, localhost(), SystemTime::now())
                .is_err()
        );
        let entry = set.listing(a.public.key_data()).unwrap();
        assert_eq!((&*entry.file, entry.line.line), ("/o/authorized_keys", 2));
        let entry = set.listing(b.public.key_data()).unwrap();
        assert!(entry.refusal.is_some());
        assert_eq!(entry.line.line, 3);
        assert!(set.listing(c.public.key_data()).is_none());
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
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let task = store.spawn_watcher_with_ready(shutdown.clone(), Some(ready_tx));
        // The watcher takes its first look before the file changes.
        tokio::time::timeout(Duration::from_secs(5), ready)
            .await
            .expect("the watcher never took its first look")
            .unwrap();
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
    fn rsa_exponents_are_bounded_before_any_arithmetic() {
        let key = |e: &[u8]| {
            KeyData::Rsa(ssh_key::public::RsaPublicKey {
                e: ssh_key::Mpint::from_positive_bytes(e).unwrap(),
                n: ssh_key::Mpint::from_positive_bytes(&[0xc5; 256]).unwrap(),
            })
        };
        assert!(key_type_refusal(&key(&[1, 0, 1])).is_none(), "65537");
        assert!(
            key_type_refusal(&key(&[35])).is_none(),
            "old ssh-keygen's 35"
        );
        for bad in [
            &[1, 0, 3][..],
            &[2],
            &[1],
            &[0xff, 0xff, 0xff, 0xff],
            &[1, 0, 0, 0, 1],
            &[0x7f; 64],
        ] {
            let refusal = key_type_refusal(&key(bad)).expect("refused");
            assert_eq!(refusal.reason_label(), "unsupported_key_type", "{bad:?}");
        }
        // A file line with such a key is refused at load (and by `keys check`).
        let big_e = PublicKey::new(key(&[0xff, 0xff, 0xff, 0xff]), "big-e");
        let set = KeySet::from_texts("owner", &big_e.to_openssh().unwrap(), None);
        assert_eq!(set.len(), 0);
    }

    #[test]
    fn viewer_file_errors_name_viewer_keys() {
        let dir = tempdir();
        let good = dir.path().join("owners");
        std::fs::write(&good, format!("{ED_FIXTURE_LINE}\n")).unwrap();
        let err = KeyStore::load(&good, Some(&dir.path().join("vkeys"))).unwrap_err();
        assert_eq!(err.setting(), "viewer-keys");
        let err = KeyStore::load(&dir.path().join("nope"), None).unwrap_err();
        assert_eq!(err.setting(), "authorized-keys");
        // Paired files may be missing; their keys count as owners.
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        let paired = dir.path().join("paired_keys");
        let files = vec![
            KeyFile::required(&empty, Role::Owner, "authorized-keys"),
            KeyFile::optional(&paired, Role::Owner, "paired-keys"),
        ];
        assert!(
            KeyStore::load_files(files.clone()).is_err(),
            "no owner key yet"
        );
        std::fs::write(&paired, format!("{ED_FIXTURE_LINE}\n")).unwrap();
        let store = KeyStore::load_files(files).unwrap();
        assert_eq!(store.current().len(), 1);
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
