//! The push subscriptions: validated, bounded, owned by the key that registered
//! them, and kept in the data dir (`push_subscriptions.json`, 0600, replaced
//! atomically on every change).
//!
//! Owns: the subscription records (id, owner fingerprint, device, endpoint,
//! keys), their validation (a 65-byte uncompressed P-256 point on the curve, a
//! 16-byte auth secret, an endpoint of at most [`MAX_ENDPOINT_BYTES`]), the caps
//! ([`MAX_PER_KEY`], [`MAX_TOTAL`]), and the file. Must not: check endpoint
//! addresses (ssrf) or send anything (client); callers do file I/O off the async
//! workers (every mutating call writes the file).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

/// The file's name in the data dir.
pub const FILE: &str = "push_subscriptions.json";
/// Subscriptions one key may hold; a new one beyond this replaces the key's oldest.
pub const MAX_PER_KEY: usize = 10;
/// Subscriptions the server holds in all; beyond this new ones are refused.
pub const MAX_TOTAL: usize = 1000;
/// Longest endpoint URL accepted, in bytes (real ones are 150-400).
pub const MAX_ENDPOINT_BYTES: usize = 2048;
/// Longest `p256dh`/`auth` text looked at (a point is 87 base64url characters).
const MAX_KEY_TEXT: usize = 128;

/// A stable subscription id (random, base64url), for the notifier's tokens.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SubscriptionId(pub String);

impl std::fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who registers a subscription: the connection's key and device name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionOwner {
    /// `SHA256:...` of the key.
    pub fingerprint: String,
    /// The device name the connection gave, if any.
    pub device: Option<String>,
    /// The connection's address (after `--trusted-proxy` resolution): the key's
    /// `from=` must keep admitting it for the subscription to be notified.
    pub address: IpAddr,
}

/// The browser's `PushSubscription.toJSON()` as the client sends it (a wire type).
pub use ccrelay_protocol::{PushKeysJson, PushSubscriptionJson};

/// A subscription as the notifier sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRef {
    pub id: SubscriptionId,
    pub fingerprint: String,
    pub device: Option<String>,
    /// Where it was registered from (None: stored before addresses were kept).
    pub registered_from: Option<IpAddr>,
}

/// Why the keys of a subscription are refused (reaches the client in `bad_message`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    #[error("`endpoint` is longer than {MAX_ENDPOINT_BYTES} bytes")]
    EndpointTooLong,
    #[error("`keys.p256dh` must be base64url of a 65-byte uncompressed P-256 point")]
    P256dhEncoding,
    #[error("`keys.p256dh` is not a point on the P-256 curve")]
    P256dhNotOnCurve,
    #[error("`keys.auth` must be base64url of 16 bytes")]
    Auth,
}

/// One stored subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: SubscriptionId,
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The address it was registered from; absent in files written before it was
    /// kept (such a subscription is suspended while its key has `from=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_from: Option<IpAddr>,
    pub endpoint: String,
    /// base64url (no padding) of the 65-byte point.
    pub p256dh: String,
    /// base64url (no padding) of the 16-byte secret.
    pub auth: String,
    /// Seconds since the epoch; the oldest of a key is replaced first.
    pub created: u64,
}

/// A subscription's keys, decoded and checked.
#[derive(Debug, Clone)]
pub struct DecodedKeys {
    pub p256dh: p256::PublicKey,
    pub auth: [u8; 16],
}

impl Record {
    /// Decode the stored keys (checked when stored; checked again when read back).
    pub fn keys(&self) -> Result<DecodedKeys, KeysError> {
        decode_keys(&self.p256dh, &self.auth)
    }
}

fn b64(text: &str) -> Option<Vec<u8>> {
    if text.len() > MAX_KEY_TEXT {
        return None;
    }
    // Browsers give unpadded base64url; padded is accepted too.
    if text.ends_with('=') {
        URL_SAFE.decode(text).ok()
    } else {
        URL_SAFE_NO_PAD.decode(text).ok()
    }
}

/// Decode and check a subscription's `p256dh` and `auth`.
pub fn decode_keys(p256dh: &str, auth: &str) -> Result<DecodedKeys, KeysError> {
    let point = b64(p256dh).ok_or(KeysError::P256dhEncoding)?;
    if point.len() != 65 || point[0] != 0x04 {
        return Err(KeysError::P256dhEncoding);
    }
    let p256dh =
        p256::PublicKey::from_sec1_bytes(&point).map_err(|_| KeysError::P256dhNotOnCurve)?;
    let auth: [u8; 16] = b64(auth)
        .and_then(|a| a.try_into().ok())
        .ok_or(KeysError::Auth)?;
    Ok(DecodedKeys { p256dh, auth })
}

/// What [`Store::insert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// A new subscription.
    New(SubscriptionId),
    /// The same endpoint was there: replaced (new keys, possibly a new owner).
    Replaced(SubscriptionId),
    /// New, and the key's oldest subscription made room for it.
    Evicted {
        id: SubscriptionId,
        evicted: SubscriptionId,
    },
}

/// Why a subscription is not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    #[error("the server holds {MAX_TOTAL} push subscriptions, its limit")]
    Full,
}

/// The subscriptions and their file. Writes are serialized by `write`, and each
/// writes a snapshot taken under it, so the file never goes back in time.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    records: Mutex<BTreeMap<SubscriptionId, Record>>,
    write: Mutex<()>,
}

impl Store {
    /// Read the file (none: empty). An unreadable or malformed file is moved
    /// aside (`.bad`) and logged, and the server starts with none: losing the
    /// subscriptions costs a re-subscribe, refusing to start would cost more.
    /// Records whose keys no longer check are dropped.
    pub fn open(data_dir: &Path) -> Store {
        let path = data_dir.join(FILE);
        let mut records = BTreeMap::new();
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Vec<Record>>(&bytes) {
                Ok(list) => {
                    for r in list.into_iter().take(MAX_TOTAL) {
                        if r.keys().is_ok() && r.endpoint.len() <= MAX_ENDPOINT_BYTES {
                            records.insert(r.id.clone(), r);
                        }
                    }
                }
                Err(e) => {
                    let aside = path.with_extension("json.bad");
                    let _ = std::fs::rename(&path, &aside);
                    tracing::warn!(path = %path.display(), moved_to = %aside.display(), error = %e, "push subscriptions file is malformed; starting with none");
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the push subscriptions; starting with none")
            }
        }
        Store {
            path,
            records: Mutex::new(records),
            write: Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SubscriptionId, Record>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many subscriptions are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when none are held.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// One subscription.
    pub fn get(&self, id: &SubscriptionId) -> Option<Record> {
        self.lock().get(id).cloned()
    }

    /// Every subscription, as the notifier sees them.
    pub fn list(&self) -> Vec<SubscriptionRef> {
        self.lock()
            .values()
            .map(|r| SubscriptionRef {
                id: r.id.clone(),
                fingerprint: r.fingerprint.clone(),
                device: r.device.clone(),
                registered_from: r.registered_from,
            })
            .collect()
    }

    /// Store a checked subscription (the caller validated the endpoint and keys).
    /// The same endpoint again replaces the old record (a browser re-subscribes
    /// with new keys), keeping its id when the same key registers it.
    pub fn insert(
        &self,
        owner: &SubscriptionOwner,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
    ) -> std::io::Result<Result<Inserted, InsertError>> {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = {
            let mut records = self.lock();
            let same = records
                .values()
                .find(|r| r.endpoint == endpoint)
                .map(|r| (r.id.clone(), r.fingerprint == owner.fingerprint));
            let created = now_secs();
            let mut record = Record {
                id: new_id(),
                fingerprint: owner.fingerprint.clone(),
                device: owner.device.clone(),
                registered_from: Some(crate::auth::canonical_ip(owner.address)),
                endpoint: endpoint.to_string(),
                p256dh: normalize(p256dh),
                auth: normalize(auth),
                created,
            };
            match same {
                Some((old, same_key)) => {
                    records.remove(&old);
                    if same_key {
                        record.id = old;
                    }
                    let id = record.id.clone();
                    records.insert(id.clone(), record);
                    Inserted::Replaced(id)
                }
                None => {
                    let mine: Vec<&Record> = records
                        .values()
                        .filter(|r| r.fingerprint == owner.fingerprint)
                        .collect();
                    let evict = if mine.len() >= MAX_PER_KEY {
                        mine.iter()
                            .min_by_key(|r| (r.created, r.id.clone()))
                            .map(|r| r.id.clone())
                    } else {
                        None
                    };
                    if evict.is_none() && records.len() >= MAX_TOTAL {
                        return Ok(Err(InsertError::Full));
                    }
                    if let Some(e) = &evict {
                        records.remove(e);
                    }
                    let id = record.id.clone();
                    records.insert(id.clone(), record);
                    match evict {
                        Some(evicted) => Inserted::Evicted { id, evicted },
                        None => Inserted::New(id),
                    }
                }
            }
        };
        self.persist()?;
        Ok(Ok(outcome))
    }

    /// Remove the subscription of `fingerprint` with this endpoint. True if one was removed.
    pub fn remove_endpoint(&self, fingerprint: &str, endpoint: &str) -> std::io::Result<bool> {
        self.remove_where(|r| r.fingerprint == fingerprint && r.endpoint == endpoint)
            .map(|n| n > 0)
    }

    /// Remove one subscription by id. True if it was there.
    pub fn remove_id(&self, id: &SubscriptionId) -> std::io::Result<bool> {
        self.remove_where(|r| &r.id == id).map(|n| n > 0)
    }

    /// Remove every subscription whose key `still_present` no longer knows.
    /// Returns how many were removed.
    pub fn retain_keys(&self, still_present: &dyn Fn(&str) -> bool) -> std::io::Result<usize> {
        self.remove_where(|r| !still_present(&r.fingerprint))
    }

    fn remove_where(&self, drop: impl Fn(&Record) -> bool) -> std::io::Result<usize> {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let removed = {
            let mut records = self.lock();
            let before = records.len();
            records.retain(|_, r| !drop(r));
            before - records.len()
        };
        if removed > 0 {
            self.persist()?;
        }
        Ok(removed)
    }

    /// Write the current records (called with `write` held).
    fn persist(&self) -> std::io::Result<()> {
        let snapshot: Vec<Record> = self.lock().values().cloned().collect();
        let json = serde_json::to_vec_pretty(&snapshot).map_err(std::io::Error::other)?;
        crate::datadir::write_atomic(&self.path, json)
    }
}

/// Keys stored unpadded, whatever the client sent.
fn normalize(b64_text: &str) -> String {
    b64(b64_text)
        .map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
        .unwrap_or_default()
}

fn new_id() -> SubscriptionId {
    let mut bytes = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    SubscriptionId(URL_SAFE_NO_PAD.encode(bytes))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::sec1::ToEncodedPoint;

    fn point() -> String {
        let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
        URL_SAFE_NO_PAD.encode(sk.public_key().to_encoded_point(false).as_bytes())
    }

    fn owner(fp: &str) -> SubscriptionOwner {
        SubscriptionOwner {
            fingerprint: fp.into(),
            device: Some("phone".into()),
            address: "127.0.0.1".parse().unwrap(),
        }
    }

    const AUTH: &str = "AAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn key_checks() {
        let p = point();
        assert!(decode_keys(&p, AUTH).is_ok());
        assert!(decode_keys(&format!("{p}="), "AAAAAAAAAAAAAAAAAAAAAA==").is_ok());
        assert_eq!(
            decode_keys("AAAA", AUTH).unwrap_err(),
            KeysError::P256dhEncoding
        );
        // 65 bytes with the right prefix but not on the curve.
        let mut off = vec![4u8; 65];
        off[1] = 1;
        assert_eq!(
            decode_keys(&URL_SAFE_NO_PAD.encode(&off), AUTH).unwrap_err(),
            KeysError::P256dhNotOnCurve
        );
        // A compressed point is not what browsers send, and is refused.
        let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let compressed = URL_SAFE_NO_PAD.encode(sk.public_key().to_encoded_point(true).as_bytes());
        assert_eq!(
            decode_keys(&compressed, AUTH).unwrap_err(),
            KeysError::P256dhEncoding
        );
        assert_eq!(decode_keys(&p, "AAAA").unwrap_err(), KeysError::Auth);
        assert_eq!(decode_keys(&p, "!!!").unwrap_err(), KeysError::Auth);
        assert_eq!(
            decode_keys(&"A".repeat(10_000), AUTH).unwrap_err(),
            KeysError::P256dhEncoding
        );
    }

    #[test]
    fn replace_cap_evict_and_persist() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path());
        let a = owner("SHA256:a");
        let first = match store
            .insert(&a, "https://p.example/1", &point(), AUTH)
            .unwrap()
        {
            Ok(Inserted::New(id)) => id,
            other => panic!("{other:?}"),
        };
        // Same endpoint, same key: replaced, same id.
        assert_eq!(
            store
                .insert(&a, "https://p.example/1", &point(), AUTH)
                .unwrap(),
            Ok(Inserted::Replaced(first.clone()))
        );
        assert_eq!(store.len(), 1);
        // Same endpoint, another key: replaced, new id, new owner.
        let b = owner("SHA256:b");
        let Ok(Inserted::Replaced(other)) = store
            .insert(&b, "https://p.example/1", &point(), AUTH)
            .unwrap()
        else {
            panic!()
        };
        assert_ne!(other, first);
        assert_eq!(store.get(&other).unwrap().fingerprint, "SHA256:b");
        // The per-key cap evicts that key's oldest.
        for i in 0..MAX_PER_KEY {
            store
                .insert(&a, &format!("https://p.example/a{i}"), &point(), AUTH)
                .unwrap()
                .unwrap();
        }
        let out = store
            .insert(&a, "https://p.example/a-last", &point(), AUTH)
            .unwrap()
            .unwrap();
        assert!(matches!(out, Inserted::Evicted { .. }), "{out:?}");
        let of_a = store
            .list()
            .iter()
            .filter(|r| r.fingerprint == "SHA256:a")
            .count();
        assert_eq!(of_a, MAX_PER_KEY);
        // Persisted, 0600, read back.
        let again = Store::open(t.path());
        assert_eq!(again.len(), store.len());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(t.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Key removal and unsubscribe.
        assert_eq!(
            again.retain_keys(&|fp| fp != "SHA256:a").unwrap(),
            MAX_PER_KEY
        );
        assert!(
            !again
                .remove_endpoint("SHA256:a", "https://p.example/1")
                .unwrap()
        );
        assert!(
            again
                .remove_endpoint("SHA256:b", "https://p.example/1")
                .unwrap()
        );
        assert!(again.is_empty());
        assert!(Store::open(t.path()).is_empty());
    }

    #[test]
    fn total_cap_refuses() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path());
        let p = point();
        {
            let mut records = store.lock();
            for i in 0..MAX_TOTAL {
                let id = SubscriptionId(format!("id{i}"));
                records.insert(
                    id.clone(),
                    Record {
                        id,
                        fingerprint: format!("SHA256:k{}", i / 5),
                        device: None,
                        registered_from: None,
                        endpoint: format!("https://p.example/{i}"),
                        p256dh: p.clone(),
                        auth: AUTH.into(),
                        created: 0,
                    },
                );
            }
        }
        assert_eq!(
            store
                .insert(&owner("SHA256:new"), "https://p.example/new", &p, AUTH)
                .unwrap(),
            Err(InsertError::Full)
        );
        // Re-subscribing an endpoint held is still possible when full.
        assert!(
            store
                .insert(&owner("SHA256:k0"), "https://p.example/0", &p, AUTH)
                .unwrap()
                .is_ok()
        );
    }

    #[test]
    fn malformed_file_is_moved_aside() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join(FILE), "{not json").unwrap();
        assert!(Store::open(t.path()).is_empty());
        assert!(t.path().join("push_subscriptions.json.bad").exists());
    }
}
