//! Web Push (RFC 8030 delivery, RFC 8291 `aes128gcm` encryption, RFC 8292 VAPID):
//! the transport the notifier uses to reach devices that are not connected
//! (docs/protocol.md §9.1).
//!
//! Owns: the server's VAPID key ([`vapid`]), the push subscriptions and their
//! file ([`store`]), the endpoint address rule ([`ssrf`]), the push HTTP client
//! ([`client`]), and [`WebPush::send`]: encrypt, sign, post, and what the push
//! service's answer means (404/410 remove the subscription). Must not: decide
//! what to send or when (the notifier does), or wait on anything for a session:
//! callers run [`WebPush::send`] in their own bounded task.

pub mod client;
pub mod ssrf;
pub mod store;
pub mod vapid;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, PushFailedLabel};

pub use ssrf::{EndpointError, Guard};
pub use store::{
    InsertError, Inserted, KeysError, PushKeysJson, PushSubscriptionJson, SubscriptionId,
    SubscriptionOwner, SubscriptionRef,
};
pub use vapid::{VapidError, VapidKey};

/// Largest plaintext one push message may carry: push services accept a
/// 4,096-byte body, which with one `aes128gcm` record holds a 86-byte header
/// (salt, record size, key id), a 1-byte padding delimiter and a 16-byte tag.
pub const MAX_PAYLOAD_BYTES: usize = 4096 - 86 - 1 - 16;
/// Longest `Topic` (RFC 8030 §5.4: at most 32 characters of the base64url alphabet).
pub const MAX_TOPIC_CHARS: usize = 32;
/// Default time to set up a connection to a push service.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time for a whole push request (connection, request, answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The VAPID `sub` (contact) when no public URL is configured.
pub const DEFAULT_SUBJECT: &str = "mailto:ccrelay@localhost";

/// How the Web Push transport is set up.
#[derive(Debug, Clone)]
pub struct WebPushConfig {
    /// Where the VAPID key and the subscriptions are kept.
    pub data_dir: PathBuf,
    /// `--push-allow-insecure-endpoints`: `http://` and loopback endpoints (tests).
    pub allow_insecure: bool,
    /// The VAPID `sub` claim (`--push-subject`; an `https:` public URL is a
    /// valid contact too), else [`DEFAULT_SUBJECT`]. Apple's push service
    /// refuses a contact whose domain does not resolve, `localhost` included.
    pub subject: Option<String>,
    pub connect_timeout: Duration,
    /// Whole-request limit, answer included.
    pub timeout: Duration,
}

impl WebPushConfig {
    /// The defaults for a data dir.
    pub fn new(data_dir: impl Into<PathBuf>, allow_insecure: bool) -> Self {
        WebPushConfig {
            data_dir: data_dir.into(),
            allow_insecure,
            subject: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Why Web Push could not be set up (a start-up error naming the data dir).
#[derive(Debug, thiserror::Error)]
pub enum WebPushError {
    #[error(transparent)]
    Vapid(#[from] VapidError),
    #[error(transparent)]
    Client(#[from] client::ClientError),
}

/// Why a subscription was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error(transparent)]
    Full(#[from] InsertError),
    /// The key was taken out of the keys files while it subscribed.
    #[error("this key is no longer in the keys files")]
    KeyGone,
    /// The subscriptions file could not be written (the server's fault).
    #[error("cannot store the subscription: {0}")]
    Io(String),
}

impl SubscribeError {
    /// True when the client sent something unusable (`bad_message`), false for
    /// the server's own failures (`internal`).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, SubscribeError::Io(_))
    }
}

/// RFC 8030 §5.3 `Urgency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    VeryLow,
    Low,
    Normal,
    High,
}

impl Urgency {
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::VeryLow => "very-low",
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }
}

/// One message to push.
#[derive(Debug, Clone, Copy)]
pub struct PushMessage<'a> {
    /// RFC 8030 `Topic`: a later message with the same topic replaces an
    /// undelivered one (at most 32 base64url characters).
    pub topic: Option<&'a str>,
    pub urgency: Urgency,
    /// How long the push service keeps it for an offline device (`TTL`, seconds).
    pub ttl: u32,
    /// The plaintext (the §9 JSON); at most [`MAX_PAYLOAD_BYTES`].
    pub payload: &'a [u8],
}

/// Why a push was not delivered: declared with the `reason` label of
/// `ccrelay_push_failed_total` it is counted under.
pub use crate::metrics::PushFailReason as FailReason;

/// What became of one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// The push service accepted it (2xx).
    Delivered,
    /// The push service answered 404 or 410: the subscription is gone and has
    /// been removed.
    Gone,
    Failed(FailReason),
}

/// The Web Push transport. Cheap to clone; every clone shares one store and client.
#[derive(Clone)]
pub struct WebPush {
    inner: Arc<Inner>,
}

struct Inner {
    vapid: VapidKey,
    store: store::Store,
    guard: Guard,
    client: reqwest::Client,
    subject: String,
    /// No contact was configured: Apple endpoints will refuse our JWTs.
    default_subject: bool,
    timeout: Duration,
    metrics: Arc<Metrics>,
    /// The keys in force, once [`WebPush::watch_keys`] runs: a subscription
    /// stored just as its key was removed is taken out again.
    keys: std::sync::OnceLock<tokio::sync::watch::Receiver<Arc<crate::auth::KeySet>>>,
}

impl std::fmt::Debug for WebPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPush")
            .field("vapid", &self.inner.vapid)
            .field("subscriptions", &self.inner.store.len())
            .field("allow_insecure", &self.inner.guard.allow_insecure)
            .finish_non_exhaustive()
    }
}

impl WebPush {
    /// Load (or make, once) the VAPID key and read the subscriptions. Blocking
    /// file I/O: call at start-up.
    pub fn open(cfg: &WebPushConfig, metrics: Arc<Metrics>) -> Result<WebPush, WebPushError> {
        let vapid = VapidKey::load_or_create(&cfg.data_dir)?;
        let store = store::Store::open(&cfg.data_dir);
        let guard = Guard {
            allow_insecure: cfg.allow_insecure,
        };
        let client = client::build(guard, cfg.connect_timeout, cfg.timeout)?;
        if cfg.allow_insecure {
            tracing::warn!(
                "--push-allow-insecure-endpoints: http:// and loopback push endpoints are accepted (tests only)"
            );
        }
        let push = WebPush {
            inner: Arc::new(Inner {
                vapid,
                store,
                guard,
                client,
                subject: cfg
                    .subject
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SUBJECT.to_string()),
                default_subject: cfg.subject.is_none(),
                timeout: cfg.timeout,
                metrics,
                keys: std::sync::OnceLock::new(),
            }),
        };
        push.update_gauge();
        Ok(push)
    }

    /// The VAPID public key: base64url (no padding) of the uncompressed point.
    pub fn public_key(&self) -> &str {
        self.inner.vapid.public_key()
    }

    fn update_gauge(&self) {
        let n = self.inner.store.len();
        self.inner
            .metrics
            .push_subscriptions
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Check and store a subscription for `owner` (an owner key; the caller
    /// checked the role). The endpoint's form and, by DNS, its addresses are
    /// checked against the §9 rule; the keys must decode. The same endpoint
    /// again replaces the old record.
    pub async fn subscribe(
        &self,
        owner: SubscriptionOwner,
        sub: PushSubscriptionJson,
    ) -> Result<SubscriptionId, SubscribeError> {
        if sub.endpoint.len() > store::MAX_ENDPOINT_BYTES {
            return Err(KeysError::EndpointTooLong.into());
        }
        store::decode_keys(&sub.keys.p256dh, &sub.keys.auth)?;
        let url = self.inner.guard.check(&sub.endpoint).await?;
        let this = self.clone();
        let owner2 = owner.clone();
        let inserted = tokio::task::spawn_blocking(move || {
            this.inner
                .store
                .insert(&owner2, &sub.endpoint, &sub.keys.p256dh, &sub.keys.auth)
        })
        .await
        .map_err(|e| SubscribeError::Io(e.to_string()))?
        .map_err(|e| SubscribeError::Io(e.to_string()))??;
        let id = match &inserted {
            Inserted::New(id) | Inserted::Replaced(id) | Inserted::Evicted { id, .. } => id.clone(),
        };
        // The key may have left the keys files while this request was on its
        // way: the watcher removed its subscriptions before this one was stored.
        // (The set is looked at and let go before anything waits.)
        let key_gone = self
            .inner
            .keys
            .get()
            .is_some_and(|keys| !is_owner(&keys.borrow(), &owner.fingerprint));
        if key_gone {
            let this = self.clone();
            let gone = id.clone();
            let _ = tokio::task::spawn_blocking(move || this.inner.store.remove_id(&gone)).await;
            self.update_gauge();
            return Err(SubscribeError::KeyGone);
        }
        self.update_gauge();
        let origin = url.origin().ascii_serialization();
        if self.inner.default_subject
            && url
                .host_str()
                .is_some_and(|h| h == "push.apple.com" || h.ends_with(".push.apple.com"))
        {
            tracing::warn!(
                push_service = %origin,
                "Apple's push service refuses the default VAPID contact ({DEFAULT_SUBJECT}); set --push-subject to a mailto: address or https:// URL of yours"
            );
        }
        let id = match inserted {
            Inserted::New(id) => {
                tracing::info!(subscription = %id, fingerprint = %owner.fingerprint, device = owner.device.as_deref().unwrap_or(""), push_service = %origin, "push subscription added");
                id
            }
            Inserted::Replaced(id) => {
                tracing::info!(subscription = %id, fingerprint = %owner.fingerprint, device = owner.device.as_deref().unwrap_or(""), push_service = %origin, "push subscription replaced (same endpoint)");
                id
            }
            Inserted::Evicted { id, evicted } => {
                tracing::info!(subscription = %id, evicted = %evicted, fingerprint = %owner.fingerprint, device = owner.device.as_deref().unwrap_or(""), push_service = %origin, "push subscription added; the key's oldest was removed (at most {} per key)", store::MAX_PER_KEY);
                id
            }
        };
        Ok(id)
    }

    /// Remove the subscription of `fingerprint` with this endpoint. True if one
    /// was removed (an unknown endpoint is not an error: the goal is reached).
    pub async fn unsubscribe(&self, fingerprint: &str, endpoint: &str) -> bool {
        let this = self.clone();
        let (fp, ep) = (fingerprint.to_string(), endpoint.to_string());
        let removed =
            tokio::task::spawn_blocking(move || this.inner.store.remove_endpoint(&fp, &ep)).await;
        match removed {
            Ok(Ok(removed)) => {
                if removed {
                    self.update_gauge();
                    tracing::info!(fingerprint, "push subscription removed by its owner");
                }
                removed
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot write the push subscriptions");
                self.update_gauge();
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "push unsubscribe task failed");
                false
            }
        }
    }

    /// Every subscription (id, owner fingerprint, device).
    pub fn subscriptions(&self) -> Vec<SubscriptionRef> {
        self.inner.store.list()
    }

    /// Drop the subscriptions of every key `still_present` does not know.
    /// Blocking file I/O when something is removed: call off the async workers.
    pub fn retain_keys(&self, still_present: &dyn Fn(&str) -> bool) -> usize {
        match self.inner.store.retain_keys(still_present) {
            Ok(0) => 0,
            Ok(n) => {
                self.update_gauge();
                tracing::info!(
                    removed = n,
                    "push subscriptions of keys no longer in the keys files removed"
                );
                n
            }
            Err(e) => {
                self.update_gauge();
                tracing::error!(error = %e, "cannot write the push subscriptions");
                0
            }
        }
    }

    /// Keep the subscriptions in step with the owner keys: now, and after every
    /// reload of the keys files (file edits, SIGHUP, `keys.revoke`, `ccrelay keys
    /// remove`). Runs until `stop` is cancelled.
    pub fn watch_keys(
        &self,
        keys: &crate::auth::KeyStore,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let push = self.clone();
        let _ = self.inner.keys.set(keys.subscribe());
        let mut rx = keys.subscribe();
        tokio::spawn(async move {
            loop {
                let owners = owner_fingerprints(&rx.borrow_and_update());
                let p = push.clone();
                let _ =
                    tokio::task::spawn_blocking(move || p.retain_keys(&|fp| owners.contains(fp)))
                        .await;
                tokio::select! {
                    () = stop.cancelled() => break,
                    changed = rx.changed() => if changed.is_err() { break },
                }
            }
        })
    }

    /// Encrypt and post one message to one subscription. Never panics and never
    /// waits longer than the configured timeout; a 404 or 410 removes the
    /// subscription. A payload over [`MAX_PAYLOAD_BYTES`] or a bad topic fails
    /// before any I/O.
    pub async fn send(&self, id: &SubscriptionId, msg: &PushMessage<'_>) -> SendOutcome {
        let outcome = match tokio::time::timeout(
            self.inner.timeout + Duration::from_secs(1),
            self.try_send(id, msg),
        )
        .await
        {
            Ok(o) => o,
            Err(_) => SendOutcome::Failed(FailReason::Timeout),
        };
        let m = &self.inner.metrics;
        match outcome {
            SendOutcome::Delivered => m.push_sent.inc(),
            SendOutcome::Gone => m.push_subscriptions_expired.inc(),
            SendOutcome::Failed(reason) => m
                .push_failed
                .get_or_create(&PushFailedLabel { reason })
                .inc(),
        };
        outcome
    }

    async fn try_send(&self, id: &SubscriptionId, msg: &PushMessage<'_>) -> SendOutcome {
        use SendOutcome::Failed;
        if msg.payload.len() > MAX_PAYLOAD_BYTES {
            return Failed(FailReason::TooLarge);
        }
        if let Some(topic) = msg.topic
            && !valid_topic(topic)
        {
            return Failed(FailReason::BadTopic);
        }
        let Some(record) = self.inner.store.get(id) else {
            return Failed(FailReason::UnknownSubscription);
        };
        // The form again (the rule may be stricter than when it was stored: an
        // IP literal passes only as loopback under the test setting, since it
        // would not go through the resolver); the addresses of a name are checked
        // by the client's resolver as it connects.
        let url = match self.inner.guard.check_form(&record.endpoint) {
            Ok(url) => url,
            Err(e) => {
                tracing::warn!(subscription = %id, error = %e, "push endpoint refused");
                return Failed(FailReason::RefusedAddress);
            }
        };
        let Ok(keys) = record.keys() else {
            return Failed(FailReason::Encrypt);
        };
        let auth = web_push_native::Auth::clone_from_slice(&keys.auth);
        let body = match web_push_native::encrypt(msg.payload.to_vec(), &keys.p256dh, &auth) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(subscription = %id, error = %e, "push encryption failed");
                return Failed(FailReason::Encrypt);
            }
        };
        let authorization =
            self.inner
                .vapid
                .authorization(&url, &self.inner.subject, SystemTime::now());
        let origin = url.origin().ascii_serialization();
        let mut request = self
            .inner
            .client
            .post(url)
            .header("TTL", msg.ttl.to_string())
            .header("Urgency", msg.urgency.as_str())
            .header(reqwest::header::CONTENT_ENCODING, "aes128gcm")
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::AUTHORIZATION, authorization)
            .body(body);
        if let Some(topic) = msg.topic {
            request = request.header("Topic", topic);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let reason = if client::is_refused_address(&e) {
                    FailReason::RefusedAddress
                } else if e.is_timeout() {
                    FailReason::Timeout
                } else if e.is_connect() {
                    FailReason::Connect
                } else {
                    FailReason::Network
                };
                tracing::warn!(subscription = %id, push_service = %origin, reason = reason.as_str(), error = %error_chain(&e), "push not delivered");
                return Failed(reason);
            }
        };
        let status = response.status();
        if status.is_success() {
            tracing::debug!(subscription = %id, push_service = %origin, status = status.as_u16(), "push delivered");
            return SendOutcome::Delivered;
        }
        let code = status.as_u16();
        if code == 404 || code == 410 {
            let store_push = self.clone();
            let gone = id.clone();
            let removed =
                tokio::task::spawn_blocking(move || store_push.inner.store.remove_id(&gone)).await;
            if let Ok(Err(e)) = &removed {
                tracing::error!(error = %e, "cannot write the push subscriptions");
            }
            self.update_gauge();
            tracing::info!(subscription = %id, push_service = %origin, status = code, "push subscription expired: removed");
            return SendOutcome::Gone;
        }
        let reason = match code {
            300..=399 => FailReason::Redirect,
            413 => FailReason::TooLarge,
            429 => FailReason::RateLimited,
            400..=499 => FailReason::Rejected,
            _ => FailReason::ServerError,
        };
        let body = client::read_capped(response, client::MAX_RESPONSE_BYTES).await;
        tracing::warn!(subscription = %id, push_service = %origin, status = code, reason = reason.as_str(), answer = %body, "push refused by the push service");
        Failed(reason)
    }
}

/// RFC 8030 §5.4: a topic is at most 32 characters of the URL-safe base64 alphabet.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_CHARS
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Is `fingerprint` an owner key of the set?
fn is_owner(set: &crate::auth::KeySet, fingerprint: &str) -> bool {
    set.entries().iter().any(|e| {
        e.role == crate::auth::Role::Owner
            && e.line.key.fingerprint(ssh_key::HashAlg::Sha256).to_string() == fingerprint
    })
}

/// The fingerprints of every owner key in the set (viewers cannot subscribe).
fn owner_fingerprints(set: &crate::auth::KeySet) -> HashSet<String> {
    set.entries()
        .iter()
        .filter(|e| e.role == crate::auth::Role::Owner)
        .map(|e| e.line.key.fingerprint(ssh_key::HashAlg::Sha256).to_string())
        .collect()
}

/// An error and its causes on one line (reqwest's Display hides the cause).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        out.push_str(": ");
        out.push_str(&err.to_string());
        cur = err.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert!(valid_topic("abcDEF012-_"));
        assert!(valid_topic(&"a".repeat(32)));
        assert!(!valid_topic(&"a".repeat(33)));
        assert!(!valid_topic(""));
        assert!(!valid_topic("a b"));
        assert!(!valid_topic("a/b"));
    }

    #[test]
    fn payload_limit_is_one_4096_byte_record() {
        assert_eq!(MAX_PAYLOAD_BYTES, 3993);
    }
}
