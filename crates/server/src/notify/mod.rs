//! Notifications for devices that are not looking (docs/protocol.md §9): permission
//! prompts nobody answered within `--notify-after`, their dismissal when they are
//! answered or cancelled, long turns that ended, sessions that failed — delivered
//! by Web Push, `--notify-webhook` and `--notify-ntfy`, with answer tokens for
//! `POST /v1/push/respond`.
//!
//! Session actors report what happens with [`Notifier::report`], which never waits
//! (a full queue drops the report and counts it); one task (this module's
//! [`run`]) owns the timers and what was sent to whom, and every delivery runs in
//! its own bounded task with short timeouts. Nothing here can slow a session.
//!
//! Submodules, one concern each: [`webpush`] is the Web Push transport (VAPID key,
//! subscriptions, encryption, delivery), reached through [`PushSink`];
//! [`visibility`] the `client.visible` registry; [`tokens`] the answer tokens;
//! [`payload`] the payloads; [`hooks`] webhook and ntfy; [`respond`] the respond
//! endpoint; [`usable`] whether a subscription's key may still be notified.
//!
//! A subscription whose key stops being usable (expired, restricted, `from=` no
//! longer admitting where it was registered from) is suspended, not dropped: it is
//! sent nothing and its tokens are refused, and it resumes when its key is usable
//! again. This task looks at every subscription when the keys change (to log and
//! count suspensions) and again before each notification (expiry is a time).
//!
//! Owns (this file): the notifier task and its state. Must not: touch session
//! state (answers go through the session's actor as a `SessionCmd`), or Web Push
//! subscriptions, keys and encryption (`webpush`).

pub mod hooks;
pub mod payload;
pub mod tokens;
pub mod usable;
pub mod visibility;
pub mod webpush;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, mpsc, watch};
// Tokio's clock (not std's), so that tests can pause and advance it.
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthThrottle, KeySet};
use crate::metrics::{Metrics, NotifyFailedAt, NotifySink};
use hooks::Hooks;
use payload::{ActionToken, PUSH_PLAINTEXT_MAX, Payload, TURN_NOTIFY_AFTER_MS};
use tokens::{Action, Recipient, Tokens};
pub use visibility::Visibility;

/// Reports waiting for the notifier; beyond this they are dropped (and counted).
const EVENT_QUEUE: usize = 4096;
/// Requests the notifier tracks at most; the oldest is forgotten beyond it.
const MAX_TRACKED: usize = 4096;
/// Web Push deliveries under way at most; more are dropped (and counted).
const PUSH_IN_FLIGHT: usize = 64;
/// Push service TTL of a permission prompt: its tokens expire then anyway.
const PERMISSION_TTL_SECS: u32 = tokens::TOKEN_TTL.as_secs() as u32;
/// Push service TTL of other notifications.
const OTHER_TTL_SECS: u32 = 3600;
/// Answers to `POST /v1/push/respond` allowed per address per minute (burst the same).
pub const RESPOND_PER_MINUTE: u32 = 30;

/// What a session actor reports.
#[derive(Debug)]
pub enum NotifyEvent {
    /// A control request addressed to the host opened (or was restored at start).
    Opened {
        session: Arc<str>,
        request_id: String,
        subtype: String,
        /// The agent's whole `control_request` line.
        line: Box<RawValue>,
    },
    /// It stopped being pending: answered (`by` names who) or cancelled (`by` None).
    Closed {
        session: Arc<str>,
        request_id: String,
        by: Option<String>,
    },
    TurnEnded {
        session: Arc<str>,
        prompt_id: String,
        duration: Duration,
        cost_usd: Option<f64>,
    },
    /// The session went `failed`.
    Failed { session: Arc<str>, detail: String },
}

/// One Web Push subscription, as the notifier needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// Stable id (it goes into tokens).
    pub id: String,
    /// The key that registered it.
    pub fingerprint: String,
    pub device: Option<String>,
    /// The address it was registered from (None: not recorded).
    pub registered_from: Option<IpAddr>,
}

/// A message for one subscription.
#[derive(Debug, Clone)]
pub struct PushOut {
    pub topic: String,
    /// `Urgency: high` (permission prompts) or normal.
    pub urgent: bool,
    pub ttl_secs: u32,
    pub payload: Vec<u8>,
}

/// What the notifier needs of Web Push (the `webpush` module provides it).
pub trait PushSink: Send + Sync + 'static {
    fn subscribers(&self) -> Vec<Subscriber>;
    /// Encrypt and deliver; true when the push service accepted it. Never panics.
    fn send(&self, subscription_id: &str, msg: PushOut) -> BoxFuture<'static, bool>;
}

/// The notifier's view of the Web Push transport: subscriptions by id, and
/// delivery with the §9 headers (the outcome is logged and counted by `webpush`).
impl PushSink for webpush::WebPush {
    fn subscribers(&self) -> Vec<Subscriber> {
        self.subscriptions()
            .into_iter()
            .map(|s| Subscriber {
                id: s.id.0,
                fingerprint: s.fingerprint,
                device: s.device,
                registered_from: s.registered_from,
            })
            .collect()
    }

    fn send(&self, subscription_id: &str, msg: PushOut) -> BoxFuture<'static, bool> {
        let push = self.clone();
        let id = webpush::SubscriptionId(subscription_id.to_string());
        Box::pin(async move {
            let message = webpush::PushMessage {
                topic: Some(&msg.topic),
                urgency: if msg.urgent {
                    webpush::Urgency::High
                } else {
                    webpush::Urgency::Normal
                },
                ttl: msg.ttl_secs,
                payload: &msg.payload,
            };
            matches!(
                push.send(&id, &message).await,
                webpush::SendOutcome::Delivered
            )
        })
    }
}

/// Settings of notifications (docs/protocol.md §9.2).
#[derive(Debug, Clone, Default)]
pub struct NotifySettings {
    /// `--notify-after`.
    pub after: Duration,
    pub webhook: Option<reqwest::Url>,
    pub ntfy: Option<hooks::NtfyTarget>,
    pub public_url: Option<reqwest::Url>,
    /// `--notify-sink-allow`: webhook and ntfy notifications of complete requests
    /// carry `allow` too (their tokens belong to no key).
    pub sink_allow: bool,
    /// How `POST /v1/push/respond`'s throttle counts addresses (`--ipv6-prefix-len`).
    pub address_grouping: crate::address::AddressGrouping,
}

/// The errors of starting notifications.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Secret(#[from] tokens::SecretError),
    #[error("cannot make the HTTP client of notifications: {0}")]
    Client(String),
}

/// The handle everything else holds: cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<NotifyEvent>,
    pub tokens: Arc<Tokens>,
    pub visibility: Arc<Visibility>,
    pub push: Option<Arc<dyn PushSink>>,
    /// Per-address budget of `POST /v1/push/respond`.
    pub respond_limit: Arc<AuthThrottle>,
    /// Whether `--notify-webhook` / `--notify-ntfy` are set: tokens sent there
    /// answer only while they are.
    webhook_on: bool,
    ntfy_on: bool,
    /// `--notify-sink-allow`: their allow tokens answer only while it is set.
    sink_allow: bool,
    /// The keys in force: a subscription answers only while its key is usable.
    keys: watch::Receiver<Arc<KeySet>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("web_push", &self.push.is_some())
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Start the notifier task (it stops when `stop` is cancelled). `keys` is the
    /// set in force and its changes (`KeyStore::subscribe`).
    pub fn start(
        settings: NotifySettings,
        data_dir: &std::path::Path,
        push: Option<Arc<dyn PushSink>>,
        keys: watch::Receiver<Arc<KeySet>>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Result<Notifier, NotifyError> {
        let tokens = Arc::new(Tokens::open(data_dir)?);
        let client = if settings.webhook.is_some() || settings.ntfy.is_some() {
            Some(hooks::http_client().map_err(NotifyError::Client)?)
        } else {
            None
        };
        let hooks = Hooks::new(
            client,
            settings.webhook.clone(),
            settings.ntfy.clone(),
            settings.public_url.as_ref(),
            metrics.clone(),
        );
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let visibility = Arc::new(Visibility::default());
        let task = Task {
            after: settings.after,
            sink_allow: settings.sink_allow,
            hooks,
            keys: keys.clone(),
            suspended: HashSet::new(),
            push: push.clone(),
            tokens: tokens.clone(),
            visibility: visibility.clone(),
            metrics: metrics.clone(),
            tracked: HashMap::new(),
            opened: 0,
            push_slots: Arc::new(Semaphore::new(PUSH_IN_FLIGHT)),
        };
        tokio::spawn(task.run(rx, stop));
        Ok(Notifier {
            webhook_on: settings.webhook.is_some(),
            ntfy_on: settings.ntfy.is_some(),
            sink_allow: settings.sink_allow,
            keys,
            tx,
            tokens,
            visibility,
            push,
            respond_limit: Arc::new(
                AuthThrottle::new(RESPOND_PER_MINUTE).with_grouping(settings.address_grouping),
            ),
            metrics,
        })
    }

    /// Hand an event to the notifier without waiting: a full queue drops it.
    pub fn report(&self, event: NotifyEvent) {
        if let Err(mpsc::error::TrySendError::Full(e)) = self.tx.try_send(event) {
            self.metrics.notify_failed(NotifyFailedAt::Queue);
            tracing::warn!(event = ?e, "notifier queue full: event dropped");
        }
    }

    /// Whether a token sent by webhook / ntfy still answers: the sink is
    /// configured, and for `allow`, `--notify-sink-allow` is set.
    pub fn hook_enabled(&self, recipient: &Recipient, action: Action) -> bool {
        let allowed = action != Action::Allow || self.sink_allow;
        match recipient {
            Recipient::Webhook => self.webhook_on && allowed,
            Recipient::Ntfy => self.ntfy_on && allowed,
            Recipient::Subscription(_) => true,
        }
    }

    /// Whether the key of subscription `s` is usable now: from where it was
    /// registered and, when given, from `answer_from` (where an answer comes from).
    pub fn key_usable(
        &self,
        s: &Subscriber,
        answer_from: Option<IpAddr>,
    ) -> Result<(), usable::Unusable> {
        let keys = self.keys.borrow().clone();
        let now = std::time::SystemTime::now();
        usable::check(&keys, &s.fingerprint, s.registered_from, now)?;
        match answer_from {
            Some(ip) => usable::check(&keys, &s.fingerprint, Some(ip), now),
            None => Ok(()),
        }
    }

    /// Whether the owner key with this fingerprint is usable now from `address`
    /// (as [`usable::check`] judges it): a scheduled prompt runs only while the
    /// key that scheduled it is (docs/protocol.md §10).
    pub fn fingerprint_usable(
        &self,
        fingerprint: &str,
        address: Option<IpAddr>,
    ) -> Result<(), usable::Unusable> {
        let keys = self.keys.borrow().clone();
        usable::check(&keys, fingerprint, address, std::time::SystemTime::now())
    }

    /// A watch of the keys in force (a session re-checks its scheduled prompts'
    /// keys when they change).
    pub fn keys_watch(&self) -> watch::Receiver<Arc<KeySet>> {
        self.keys.clone()
    }

    /// The subscription a token was made for, if it still exists.
    pub fn subscriber(&self, id: &str) -> Option<Subscriber> {
        self.push
            .as_ref()?
            .subscribers()
            .into_iter()
            .find(|s| s.id == id)
    }
}

/// A request the notifier follows.
struct Tracked {
    seq: u64,
    subtype: String,
    tool: String,
    summary: String,
    /// The summary shows the whole request (`allow` may be offered).
    complete: bool,
    /// When it is notified; None once it was.
    due: Option<Instant>,
    /// Who got the notification (they get the dismiss).
    sent_to: Vec<Recipient>,
}

struct Task {
    after: Duration,
    sink_allow: bool,
    hooks: Hooks,
    keys: watch::Receiver<Arc<KeySet>>,
    /// Subscriptions whose key was not usable when last looked at (for the log
    /// and the gauge; the check itself is made afresh each time).
    suspended: HashSet<String>,
    push: Option<Arc<dyn PushSink>>,
    tokens: Arc<Tokens>,
    visibility: Arc<Visibility>,
    metrics: Arc<Metrics>,
    tracked: HashMap<(Arc<str>, String), Tracked>,
    opened: u64,
    push_slots: Arc<Semaphore>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<NotifyEvent>, stop: CancellationToken) {
        let mut keys = self.keys.clone();
        keys.mark_changed();
        let mut keys_open = true;
        loop {
            let next = self.tracked.values().filter_map(|t| t.due).min();
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                _ = stop.cancelled() => return,
                event = rx.recv() => match event {
                    Some(e) => self.on_event(e),
                    None => return,
                },
                _ = sleep_until(next.unwrap_or(far)) => self.fire_due(),
                changed = keys.changed(), if keys_open => {
                    keys.borrow_and_update();
                    if changed.is_err() {
                        keys_open = false;
                    }
                    self.usable_subscribers();
                }
            }
        }
    }

    /// The subscriptions whose key is usable now. Logs each one that became
    /// suspended or resumed since the last look, and sets the gauge.
    fn usable_subscribers(&mut self) -> Vec<Subscriber> {
        let Some(push) = &self.push else {
            return Vec::new();
        };
        let keys = self.keys.borrow().clone();
        let now = std::time::SystemTime::now();
        let mut usable = Vec::new();
        let mut suspended = HashSet::new();
        for s in push.subscribers() {
            match usable::check(&keys, &s.fingerprint, s.registered_from, now) {
                Ok(()) => {
                    if self.suspended.contains(&s.id) {
                        tracing::info!(subscription = %s.id, fingerprint = %s.fingerprint, device = s.device.as_deref().unwrap_or(""), "push subscription resumed: its key is usable again");
                    }
                    usable.push(s);
                }
                // Not an owner key any more: `webpush` drops the subscription
                // (it is not suspended, it is going away).
                Err(usable::Unusable::NotListed | usable::Unusable::NotOwner) => {}
                Err(why) => {
                    if !self.suspended.contains(&s.id) {
                        tracing::info!(subscription = %s.id, fingerprint = %s.fingerprint, device = s.device.as_deref().unwrap_or(""), reason = %why, "push subscription suspended: its key is not usable");
                    }
                    suspended.insert(s.id);
                }
            }
        }
        self.metrics
            .push_subscriptions_suspended
            .set(i64::try_from(suspended.len()).unwrap_or(i64::MAX));
        self.suspended = suspended;
        usable
    }

    fn on_event(&mut self, event: NotifyEvent) {
        match event {
            NotifyEvent::Opened {
                session,
                request_id,
                subtype,
                line,
            } => {
                let key = (session, request_id);
                if self.tracked.contains_key(&key) {
                    return;
                }
                if self.tracked.len() >= MAX_TRACKED
                    && let Some(oldest) = self
                        .tracked
                        .iter()
                        .min_by_key(|(_, t)| t.seq)
                        .map(|(k, _)| k.clone())
                {
                    tracing::warn!(session = %oldest.0, request_id = %oldest.1, "notifier tracks too many requests: forgetting the oldest");
                    self.tracked.remove(&oldest);
                }
                let line: Value = serde_json::from_str(line.get()).unwrap_or(Value::Null);
                let request = line.get("request").cloned().unwrap_or(Value::Null);
                let described = payload::describe(&subtype, &request);
                self.opened += 1;
                self.tracked.insert(
                    key.clone(),
                    Tracked {
                        seq: self.opened,
                        subtype,
                        tool: described.tool,
                        summary: described.summary,
                        complete: described.complete,
                        due: Some(Instant::now() + self.after),
                        sent_to: Vec::new(),
                    },
                );
                if self.after.is_zero() {
                    self.fire(&key);
                }
            }
            NotifyEvent::Closed {
                session,
                request_id,
                by,
            } => {
                let Some(t) = self.tracked.remove(&(session.clone(), request_id.clone())) else {
                    return;
                };
                if t.sent_to.is_empty() {
                    return;
                }
                let dismiss = Payload::Dismiss {
                    session: session.to_string(),
                    request_id,
                    by,
                };
                // Not to a subscription suspended meanwhile: it is sent nothing.
                let usable: HashSet<String> = self
                    .usable_subscribers()
                    .into_iter()
                    .map(|s| s.id)
                    .collect();
                for recipient in &t.sent_to {
                    if let Recipient::Subscription(id) = recipient
                        && !usable.contains(id)
                    {
                        continue;
                    }
                    self.deliver(recipient, &dismiss, false);
                }
            }
            NotifyEvent::TurnEnded {
                session,
                prompt_id,
                duration,
                cost_usd,
            } => {
                let duration_ms = duration.as_millis() as u64;
                if duration_ms <= TURN_NOTIFY_AFTER_MS {
                    return;
                }
                self.broadcast(&Payload::TurnEnded {
                    session: session.to_string(),
                    prompt_id,
                    duration_ms,
                    cost_usd,
                });
            }
            NotifyEvent::Failed { session, detail } => {
                self.broadcast(&Payload::AgentFailed {
                    session: session.to_string(),
                    detail: payload::truncate_chars(&detail, 500),
                });
            }
        }
    }

    fn fire_due(&mut self) {
        let now = Instant::now();
        let due: Vec<_> = self
            .tracked
            .iter()
            .filter(|(_, t)| t.due.is_some_and(|d| d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.fire(&key);
        }
    }

    /// Notify a request nobody answered in time, to every recipient with its own tokens.
    fn fire(&mut self, key: &(Arc<str>, String)) {
        let Some(t) = self.tracked.get_mut(key) else {
            return;
        };
        t.due = None;
        let (session, request_id) = key;
        let answerable = t.subtype == "can_use_tool";
        let (tool, summary, complete) = (t.tool.clone(), t.summary.clone(), t.complete);
        tracing::info!(session = %session, request_id = %request_id, tool = %tool, complete, "notifying an unanswered request");
        let sink_allow = self.sink_allow;
        let recipients = self.recipients(session);
        let make = |recipient: &Recipient| {
            // Allow only where the whole request is shown, and for webhook and
            // ntfy (no key; a topic may be read by others) only when the
            // operator asked for it. A question's answer is not allow/deny: it
            // is notified without buttons.
            let allow = answerable
                && complete
                && (matches!(recipient, Recipient::Subscription(_)) || sink_allow);
            let offered: &[Action] = match (answerable, allow) {
                (false, _) => &[],
                (true, true) => &[Action::Allow, Action::Deny],
                (true, false) => &[Action::Deny],
            };
            Payload::Permission {
                session: session.to_string(),
                request_id: request_id.clone(),
                tool: tool.clone(),
                summary: summary.clone(),
                complete,
                actions: offered
                    .iter()
                    .map(|&a| ActionToken {
                        action: a.as_str(),
                        token: self.tokens.issue(session, request_id, a, recipient),
                    })
                    .collect(),
            }
        };
        let mut sent_to = Vec::new();
        for recipient in recipients {
            let p = make(&recipient);
            self.deliver(&recipient, &p, true);
            sent_to.push(recipient);
        }
        if let Some(t) = self.tracked.get_mut(key) {
            t.sent_to = sent_to;
        }
    }

    /// Everyone a new notification about `session` goes to: each subscription whose
    /// key is usable and whose device is not looking at the session, the webhook,
    /// ntfy.
    fn recipients(&mut self, session: &str) -> Vec<Recipient> {
        let mut out = Vec::new();
        if self.push.is_some() {
            let watchers = self.visibility.watchers(session);
            for s in self.usable_subscribers() {
                if watchers.contains(&s.fingerprint) {
                    tracing::debug!(
                        session,
                        device = s.device.as_deref().unwrap_or(&s.fingerprint),
                        "not pushed: the device is looking"
                    );
                    continue;
                }
                out.push(Recipient::Subscription(s.id));
            }
        }
        if self.hooks.has_webhook() {
            out.push(Recipient::Webhook);
        }
        if self.hooks.has_ntfy() {
            out.push(Recipient::Ntfy);
        }
        out
    }

    fn broadcast(&mut self, p: &Payload) {
        let session = p.session().to_string();
        for recipient in self.recipients(&session) {
            self.deliver(&recipient, p, false);
        }
    }

    fn deliver(&self, recipient: &Recipient, p: &Payload, urgent: bool) {
        match recipient {
            Recipient::Webhook => self.hooks.webhook(p),
            Recipient::Ntfy => self.hooks.ntfy(p),
            Recipient::Subscription(id) => self.push_to(id, p, urgent),
        }
    }

    fn push_to(&self, id: &str, p: &Payload, urgent: bool) {
        let Some(push) = &self.push else { return };
        let kind = p.kind();
        let Some(json) = p.to_json_within(PUSH_PLAINTEXT_MAX) else {
            tracing::warn!(
                kind = kind.as_str(),
                "notification too large for Web Push even shortened; not sent"
            );
            self.metrics.notify_failed(NotifySink::Webpush);
            return;
        };
        let Ok(permit) = self.push_slots.clone().try_acquire_owned() else {
            tracing::warn!(
                kind = kind.as_str(),
                in_flight = PUSH_IN_FLIGHT,
                "Web Push notification dropped: too many deliveries under way"
            );
            self.metrics.notify_failed(NotifySink::Webpush);
            return;
        };
        let msg = PushOut {
            topic: p.topic(),
            urgent,
            ttl_secs: if matches!(p, Payload::Permission { .. } | Payload::Dismiss { .. }) {
                PERMISSION_TTL_SECS
            } else {
                OTHER_TTL_SECS
            },
            payload: json.into_bytes(),
        };
        let sending = push.send(id, msg);
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if sending.await {
                metrics.notification_sent(kind, NotifySink::Webpush);
            } else {
                // The reason is logged and counted by webpush itself.
                metrics.notify_failed(NotifySink::Webpush);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A Web Push stand-in that records what it is asked to send.
    #[derive(Default)]
    struct FakePush {
        subs: Vec<Subscriber>,
        sent: Mutex<Vec<(String, PushOut)>>,
        notify: tokio::sync::Notify,
    }

    impl PushSink for Arc<FakePush> {
        fn subscribers(&self) -> Vec<Subscriber> {
            self.subs.clone()
        }
        fn send(&self, id: &str, msg: PushOut) -> BoxFuture<'static, bool> {
            self.sent.lock().unwrap().push((id.to_string(), msg));
            self.notify.notify_one();
            Box::pin(async { true })
        }
    }

    impl FakePush {
        /// Wait until `n` messages were sent in all; returns them (bounded wait).
        async fn wait_for(&self, n: usize) -> Vec<(String, Value)> {
            for _ in 0..200 {
                {
                    let sent = self.sent.lock().unwrap();
                    if sent.len() >= n {
                        return sent
                            .iter()
                            .map(|(id, m)| {
                                (id.clone(), serde_json::from_slice(&m.payload).unwrap())
                            })
                            .collect();
                    }
                }
                let _ =
                    tokio::time::timeout(Duration::from_millis(50), self.notify.notified()).await;
            }
            panic!("{} messages, wanted {n}", self.sent.lock().unwrap().len());
        }
    }

    fn sub(id: &str, fp: &str) -> Subscriber {
        Subscriber {
            id: id.into(),
            fingerprint: fp.into(),
            device: Some(format!("dev-{id}")),
            registered_from: Some("127.0.0.1".parse().unwrap()),
        }
    }

    /// Test key `n`, as an authorized_keys line (options before it).
    fn key_line(n: u8, options: &str) -> String {
        let key = ssh_key::PublicKey::from(ssh_key::public::KeyData::Ed25519(
            ssh_key::public::Ed25519PublicKey([n; 32]),
        ));
        format!("{options} {}\n", key.to_openssh().unwrap())
            .trim_start()
            .to_string()
    }

    fn fp(n: u8) -> String {
        ssh_key::PublicKey::from(ssh_key::public::KeyData::Ed25519(
            ssh_key::public::Ed25519PublicKey([n; 32]),
        ))
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string()
    }

    /// A keys set listing test keys 1..=n as owners, without options.
    fn owners(n: u8) -> watch::Receiver<Arc<KeySet>> {
        let text: String = (1..=n).map(|i| key_line(i, "")).collect();
        watch::channel(Arc::new(KeySet::from_texts("owner", &text, None))).1
    }

    fn opened(session: &Arc<str>, request_id: &str, line: &str) -> NotifyEvent {
        NotifyEvent::Opened {
            session: session.clone(),
            request_id: request_id.into(),
            subtype: serde_json::from_str::<Value>(line).unwrap()["request"]["subtype"]
                .as_str()
                .unwrap()
                .into(),
            line: RawValue::from_string(line.into()).unwrap(),
        }
    }

    #[tokio::test]
    async fn each_subscription_gets_its_own_tokens_the_looking_device_none_and_the_dismiss_follows()
    {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakePush {
            subs: vec![sub("s1", &fp(1)), sub("s2", &fp(2)), sub("s3", &fp(3))],
            ..Default::default()
        });
        let stop = CancellationToken::new();
        let n = Notifier::start(
            NotifySettings::default(),
            dir.path(),
            Some(Arc::new(fake.clone())),
            owners(3),
            Arc::new(Metrics::new()),
            stop.clone(),
        )
        .unwrap();
        let session: Arc<str> = Arc::from("default");
        // fpC looks at the session: not pushed to.
        n.visibility.report(9, &fp(3), true, [session.clone()]);
        n.report(opened(
            &session,
            "r1",
            r#"{"type":"control_request","request_id":"r1","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{"command":"make test"}}}"#,
        ));
        let sent = fake.wait_for(2).await;
        let ids: Vec<&str> = sent.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&"s1") && ids.contains(&"s2"), "{ids:?}");
        {
            let raw = fake.sent.lock().unwrap();
            for (id, msg) in raw.iter() {
                assert!(msg.urgent);
                assert_eq!(msg.topic, payload::topic("default", "r1"));
                let p: Value = serde_json::from_slice(&msg.payload).unwrap();
                assert_eq!(p["tool"], "Bash");
                assert_eq!(p["summary"], "make test");
                let token = p["actions"][0]["token"].as_str().unwrap();
                let claims = n.tokens.verify(token).unwrap();
                assert_eq!(claims.recipient, Recipient::Subscription(id.clone()));
                assert_eq!(claims.request_id, "r1");
                assert_eq!(claims.action, Action::Allow);
            }
        }
        // A question: notified without answer buttons.
        n.report(opened(
            &session,
            "q1",
            r#"{"type":"control_request","request_id":"q1","request":{"subtype":"elicitation","message":"Which branch?"}}"#,
        ));
        let sent = fake.wait_for(4).await;
        for (_, p) in &sent[2..] {
            assert_eq!(p["summary"], "Which branch?");
            assert_eq!(p["actions"], json_empty());
        }
        // Answered: the dismiss goes to exactly those two, same topic, even if the
        // looking device stopped looking in between.
        n.visibility.report(9, &fp(3), false, [session.clone()]);
        n.report(NotifyEvent::Closed {
            session: session.clone(),
            request_id: "r1".into(),
            by: Some("phone".into()),
        });
        let sent = fake.wait_for(6).await;
        let mut dismissed: Vec<&str> = sent[4..].iter().map(|(id, _)| id.as_str()).collect();
        dismissed.sort();
        assert_eq!(dismissed, ["s1", "s2"]);
        for (_, p) in &sent[4..] {
            assert_eq!(p["kind"], "dismiss");
            assert_eq!(p["by"], "phone");
        }
        assert!(
            fake.sent.lock().unwrap()[4..]
                .iter()
                .all(|(_, m)| !m.urgent && m.topic == payload::topic("default", "r1"))
        );
        // Closing a request that was never notified, or twice, sends nothing.
        n.report(NotifyEvent::Closed {
            session: session.clone(),
            request_id: "r1".into(),
            by: None,
        });
        // Short turns are not notified; long ones and failures go to everyone not looking.
        n.report(NotifyEvent::TurnEnded {
            session: session.clone(),
            prompt_id: "p-short".into(),
            duration: Duration::from_secs(59),
            cost_usd: None,
        });
        n.report(NotifyEvent::TurnEnded {
            session: session.clone(),
            prompt_id: "p1".into(),
            duration: Duration::from_secs(95),
            cost_usd: Some(0.42),
        });
        n.report(NotifyEvent::Failed {
            session: session.clone(),
            detail: "too many crashes".into(),
        });
        let sent = fake.wait_for(12).await;
        assert_eq!(sent.len(), 12, "{sent:#?}");
        let kinds: Vec<&str> = sent[6..]
            .iter()
            .map(|(_, p)| p["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "turn_ended",
                "turn_ended",
                "turn_ended",
                "agent_failed",
                "agent_failed",
                "agent_failed"
            ]
        );
        assert_eq!(sent[6].1["duration_ms"], 95000);
        assert_eq!(sent[6].1["prompt_id"], "p1");
        stop.cancel();
    }

    fn json_empty() -> Value {
        Value::Array(Vec::new())
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_is_notified_once_after_the_delay_and_never_if_answered_before() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakePush {
            subs: vec![sub("s1", &fp(1))],
            ..Default::default()
        });
        let stop = CancellationToken::new();
        let n = Notifier::start(
            NotifySettings {
                after: Duration::from_secs(10),
                ..Default::default()
            },
            dir.path(),
            Some(Arc::new(fake.clone())),
            owners(3),
            Arc::new(Metrics::new()),
            stop.clone(),
        )
        .unwrap();
        let session: Arc<str> = Arc::from("default");
        let line = |id: &str| {
            format!(
                r#"{{"type":"control_request","request_id":"{id}","request":{{"subtype":"can_use_tool","tool_name":"Write","input":{{"file_path":"/x"}}}}}}"#
            )
        };
        n.report(opened(&session, "early", &line("early")));
        n.report(opened(&session, "late", &line("late")));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(fake.sent.lock().unwrap().is_empty());
        n.report(NotifyEvent::Closed {
            session: session.clone(),
            request_id: "early".into(),
            by: Some("laptop".into()),
        });
        // The same request reported again (a restart) is not notified twice.
        n.report(opened(&session, "late", &line("late")));
        tokio::time::sleep(Duration::from_secs(30)).await;
        let sent = fake.wait_for(1).await;
        assert_eq!(sent.len(), 1, "{sent:#?}");
        assert_eq!(sent[0].1["request_id"], "late");
        assert_eq!(sent[0].1["summary"], "/x");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_subscription_whose_key_is_not_usable_is_suspended_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakePush {
            subs: vec![sub("s1", &fp(1)), sub("s2", &fp(2))],
            ..Default::default()
        });
        // Key 2 expired: s2 is suspended from the start.
        let set = |key2_options: &str| {
            Arc::new(KeySet::from_texts(
                "owner",
                &format!("{}{}", key_line(1, ""), key_line(2, key2_options)),
                None,
            ))
        };
        let (keys_tx, keys_rx) = watch::channel(set("expiry-time=\"20200101\""));
        let metrics = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let n = Notifier::start(
            NotifySettings::default(),
            dir.path(),
            Some(Arc::new(fake.clone())),
            keys_rx,
            metrics.clone(),
            stop.clone(),
        )
        .unwrap();
        let session: Arc<str> = Arc::from("default");
        let line = |id: &str, tool: &str, input: &str| {
            format!(
                r#"{{"type":"control_request","request_id":"{id}","request":{{"subtype":"can_use_tool","tool_name":"{tool}","input":{input}}}}}"#
            )
        };
        n.report(opened(
            &session,
            "r1",
            &line("r1", "Bash", r#"{"command":"ls"}"#),
        ));
        let sent = fake.wait_for(1).await;
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, "s1");
        assert_eq!(sent[0].1["complete"], true);
        assert_eq!(metrics.push_subscriptions_suspended.get(), 1);
        // Its token (had it one) is refused: the key check fails for it.
        assert!(n.key_usable(&sub("s2", &fp(2)), None).is_err());
        assert!(n.key_usable(&sub("s1", &fp(1)), None).is_ok());
        keys_tx.send_replace(set(""));
        // Renewed: s2 resumes. A Write is never complete: deny only.
        n.report(opened(
            &session,
            "w1",
            &line("w1", "Write", r#"{"file_path":"/x","content":"y"}"#),
        ));
        let sent = fake.wait_for(3).await;
        let mut to: Vec<&str> = sent[1..].iter().map(|(id, _)| id.as_str()).collect();
        to.sort();
        assert_eq!(to, ["s1", "s2"]);
        for (_, p) in &sent[1..] {
            assert_eq!(p["complete"], false);
            let actions: Vec<&str> = p["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["action"].as_str().unwrap())
                .collect();
            assert_eq!(actions, ["deny"]);
        }
        assert_eq!(metrics.push_subscriptions_suspended.get(), 0);
        // from= not admitting the address it was registered from: suspended.
        keys_tx.send_replace(Arc::new(KeySet::from_texts(
            "owner",
            &format!("{}{}", key_line(1, "from=\"10.9.9.9\""), key_line(2, "")),
            None,
        )));
        n.report(opened(
            &session,
            "r2",
            &line("r2", "Bash", r#"{"command":"ls"}"#),
        ));
        let sent = fake.wait_for(4).await;
        assert_eq!(sent.len(), 4);
        assert_eq!(sent[3].0, "s2");
        assert!(n.key_usable(&sub("s1", &fp(1)), None).is_err());
        let from_there = Subscriber {
            registered_from: Some("10.9.9.9".parse().unwrap()),
            ..sub("s1", &fp(1))
        };
        assert!(n.key_usable(&from_there, None).is_ok());
        assert!(
            n.key_usable(&from_there, Some("127.0.0.1".parse().unwrap()))
                .is_err(),
            "an answer from outside from= is refused"
        );
        stop.cancel();
    }
}
