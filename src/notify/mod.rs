//! Notifications for devices that are not looking (PROTOCOL.md §9): permission
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
//! endpoint.
//!
//! Owns (this file): the notifier task and its state. Must not: touch session
//! state (answers go through the session's actor as a `SessionCmd`), or Web Push
//! subscriptions, keys and encryption (`webpush`).

pub mod hooks;
pub mod payload;
pub mod respond;
pub mod tokens;
pub mod visibility;
pub mod webpush;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, mpsc};
// Tokio's clock (not std's), so that tests can pause and advance it.
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::auth::AuthThrottle;
use crate::metrics::Metrics;
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

/// Settings of notifications (PROTOCOL.md §8).
#[derive(Debug, Clone, Default)]
pub struct NotifySettings {
    /// `--notify-after`.
    pub after: Duration,
    pub webhook: Option<reqwest::Url>,
    pub ntfy: Option<hooks::NtfyTarget>,
    pub public_url: Option<reqwest::Url>,
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
    /// Start the notifier task (it stops when `stop` is cancelled).
    pub fn start(
        settings: NotifySettings,
        data_dir: &std::path::Path,
        push: Option<Arc<dyn PushSink>>,
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
            hooks,
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
            tx,
            tokens,
            visibility,
            push,
            respond_limit: Arc::new(AuthThrottle::new(RESPOND_PER_MINUTE)),
            metrics,
        })
    }

    /// Hand an event to the notifier without waiting: a full queue drops it.
    pub fn report(&self, event: NotifyEvent) {
        if let Err(mpsc::error::TrySendError::Full(e)) = self.tx.try_send(event) {
            self.metrics.notify_failed("queue");
            tracing::warn!(event = ?e, "notifier queue full: event dropped");
        }
    }

    /// Whether tokens sent by webhook / ntfy still answer (the sink is configured).
    pub fn hook_enabled(&self, recipient: &Recipient) -> bool {
        match recipient {
            Recipient::Webhook => self.webhook_on,
            Recipient::Ntfy => self.ntfy_on,
            Recipient::Subscription(_) => true,
        }
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
    /// When it is notified; None once it was.
    due: Option<Instant>,
    /// Who got the notification (they get the dismiss).
    sent_to: Vec<Recipient>,
}

struct Task {
    after: Duration,
    hooks: Hooks,
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
            }
        }
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
                let (tool, summary) = payload::describe(&subtype, &request);
                self.opened += 1;
                self.tracked.insert(
                    key.clone(),
                    Tracked {
                        seq: self.opened,
                        subtype,
                        tool,
                        summary,
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
                for recipient in &t.sent_to {
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
        let (tool, summary) = (t.tool.clone(), t.summary.clone());
        tracing::info!(session = %session, request_id = %request_id, tool = %tool, "notifying an unanswered request");
        let make = |recipient: &Recipient| Payload::Permission {
            session: session.to_string(),
            request_id: request_id.clone(),
            tool: tool.clone(),
            summary: summary.clone(),
            // A question's answer is not allow/deny: it is notified without buttons.
            actions: if answerable {
                [Action::Allow, Action::Deny]
                    .into_iter()
                    .map(|a| ActionToken {
                        action: a.as_str(),
                        token: self.tokens.issue(session, request_id, a, recipient),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        };
        let mut sent_to = Vec::new();
        for recipient in self.recipients(session) {
            let p = make(&recipient);
            self.deliver(&recipient, &p, true);
            sent_to.push(recipient);
        }
        if let Some(t) = self.tracked.get_mut(key) {
            t.sent_to = sent_to;
        }
    }

    /// Everyone a new notification about `session` goes to: each subscription whose
    /// device is not looking at the session, the webhook, ntfy.
    fn recipients(&self, session: &str) -> Vec<Recipient> {
        let mut out = Vec::new();
        if let Some(push) = &self.push {
            let watchers = self.visibility.watchers(session);
            for s in push.subscribers() {
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

    fn broadcast(&self, p: &Payload) {
        for recipient in self.recipients(p.session()) {
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
                kind,
                "notification too large for Web Push even shortened; not sent"
            );
            self.metrics.notify_failed("webpush");
            return;
        };
        let Ok(permit) = self.push_slots.clone().try_acquire_owned() else {
            tracing::warn!(
                kind,
                in_flight = PUSH_IN_FLIGHT,
                "Web Push notification dropped: too many deliveries under way"
            );
            self.metrics.notify_failed("webpush");
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
                metrics.notification_sent(kind, "webpush");
            } else {
                // The reason is logged and counted by webpush itself.
                metrics.notify_failed("webpush");
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
        }
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
            subs: vec![sub("s1", "fpA"), sub("s2", "fpB"), sub("s3", "fpC")],
            ..Default::default()
        });
        let stop = CancellationToken::new();
        let n = Notifier::start(
            NotifySettings::default(),
            dir.path(),
            Some(Arc::new(fake.clone())),
            Arc::new(Metrics::new()),
            stop.clone(),
        )
        .unwrap();
        let session: Arc<str> = Arc::from("default");
        // fpC looks at the session: not pushed to.
        n.visibility.report(9, "fpC", true, [session.clone()]);
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
        n.visibility.report(9, "fpC", false, [session.clone()]);
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
            subs: vec![sub("s1", "fpA")],
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
}
