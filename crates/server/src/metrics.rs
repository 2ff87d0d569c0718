//! Prometheus metrics: one registry per server (no globals, so parallel test
//! servers never collide), the families every module records into, and the
//! Linux process collector.
//!
//! Owns: metric names, help texts, label sets and the exposition. Must not: hold
//! unbounded label values (no client ids, no fingerprints, no request ids).

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelSetEncoder,
    LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use ccrelay_protocol::label_enum;
use ccrelay_protocol::{ErrorCode, FrameType, RequestType};

label_enum! {
    /// `state` of `ccrelay_connections_open`.
    pub enum ConnectionState {
        Unauthenticated => "unauthenticated",
        Authenticated => "authenticated",
    }
}

label_enum! {
    /// `reason` of `ccrelay_connections_refused_total`: why a connection or plain
    /// HTTP request was refused before (or instead of) the upgrade.
    pub enum RefusedReason {
        /// The address is throttled after failed authentications.
        Throttle => "throttle",
        /// Buffered memory is at the refuse level.
        Memory => "memory",
        /// `--max-connections` reached.
        Limit => "limit",
        /// The `Origin` is not allowed.
        Origin => "origin",
        /// The server is shutting down.
        Shutdown => "shutdown",
        /// A plain request where an upgrade was required.
        NotWebsocket => "not_websocket",
        /// Too many pre-auth connections from one address.
        AddressCap => "address_cap",
        /// The request head did not arrive in time.
        HeadTimeout => "head_timeout",
        /// Too many plain HTTP connections from one address.
        HttpAddressCap => "http_address_cap",
        /// Plain HTTP connections hold their share of the connection limit.
        HttpShare => "http_share",
        /// The accept backlog overflowed.
        Overflow => "overflow",
    }
}

label_enum! {
    /// `reason` of `ccrelay_connections_closed_total`.
    pub enum ClosedReason {
        Client => "client",
        Protocol => "protocol",
        AuthTimeout => "auth_timeout",
        Revoked => "revoked",
        Idle => "idle",
        Lagging => "lagging",
        Shed => "shed",
        Shutdown => "shutdown",
        Closed => "closed",
        Broken => "broken",
        PairTimeout => "pair_timeout",
        PairDenied => "pair_denied",
    }
}

label_enum! {
    /// `reason` of `ccrelay_accept_errors_total`.
    pub enum AcceptErrorReason {
        /// One connection failed (reset before accept): nothing to do.
        Connection => "connection",
        /// Out of file descriptors or memory: accepting backs off.
        Resources => "resources",
        /// Anything else: the listener cannot go on.
        Fatal => "fatal",
    }
}

label_enum! {
    /// `result` of `ccrelay_auth_attempts_total`.
    pub enum AuthResult {
        Ok => "ok",
        Failed => "failed",
        Timeout => "timeout",
        Throttled => "throttled",
    }
}

label_enum! {
    /// `result` of `ccrelay_pair_requests_total`.
    pub enum PairResult {
        Pending => "pending",
        Allowed => "allowed",
        Denied => "denied",
        Expired => "expired",
        Withdrawn => "withdrawn",
        Refused => "refused",
        Invited => "invited",
    }
}

label_enum! {
    /// `sink` of `ccrelay_notifications_total`.
    pub enum NotifySink {
        Webpush => "webpush",
        Webhook => "webhook",
        Ntfy => "ntfy",
    }
}

label_enum! {
    /// `sink` of `ccrelay_notify_failed_total`: a sink, or the notifier's queue
    /// (a report dropped before any sink).
    pub enum NotifyFailedAt {
        Webpush => "webpush",
        Webhook => "webhook",
        Ntfy => "ntfy",
        Queue => "queue",
    }
}

impl From<NotifySink> for NotifyFailedAt {
    fn from(sink: NotifySink) -> Self {
        match sink {
            NotifySink::Webpush => NotifyFailedAt::Webpush,
            NotifySink::Webhook => NotifyFailedAt::Webhook,
            NotifySink::Ntfy => NotifyFailedAt::Ntfy,
        }
    }
}

label_enum! {
    /// `kind` of `ccrelay_notifications_total` (the docs/protocol.md §9 payload kinds).
    pub enum NotifyKind {
        Permission => "permission",
        Dismiss => "dismiss",
        TurnEnded => "turn_ended",
        AgentFailed => "agent_failed",
    }
}

label_enum! {
    /// `outcome` of `ccrelay_push_respond_total`.
    pub enum PushRespondOutcome {
        Ok => "ok",
        InvalidToken => "invalid_token",
        NotPending => "not_pending",
        BadRequest => "bad_request",
        TooLarge => "too_large",
        Throttled => "throttled",
        Unavailable => "unavailable",
    }
}

label_enum! {
    /// Why a push was not delivered (the `reason` of `ccrelay_push_failed_total`;
    /// `notify::webpush::FailReason`).
    pub enum PushFailReason {
        /// The payload is over `notify::webpush::MAX_PAYLOAD_BYTES` (found before
        /// any I/O), or the push service answered 413.
        TooLarge => "too_large",
        /// The topic is not at most 32 base64url characters (before any I/O).
        BadTopic => "bad_topic",
        /// No such subscription (removed meanwhile).
        UnknownSubscription => "unknown_subscription",
        /// The endpoint or every address its host resolves to now breaks the §9 rule.
        RefusedAddress => "refused_address",
        /// Encryption failed (a stored key that no longer decodes).
        Encrypt => "encrypt",
        /// No answer in time (connect or total timeout).
        Timeout => "timeout",
        /// The connection could not be made (refused, TLS handshake, DNS).
        Connect => "connect",
        /// Any other transport failure.
        Network => "network",
        /// A 3xx answer: redirects are not followed.
        Redirect => "redirect",
        /// 429 from the push service.
        RateLimited => "rate_limited",
        /// Another 4xx (bad VAPID, bad request, forbidden).
        Rejected => "rejected",
        /// A 5xx (or other non-success) answer.
        ServerError => "server_error",
    }
}

label_enum! {
    /// `kind` of `ccrelay_memory_buffered_bytes`.
    pub enum MemoryKind {
        /// Bytes queued for clients.
        Queues => "queues",
        /// Bytes of the sessions' in-memory event tails.
        Tails => "tails",
    }
}

label_enum! {
    /// `cause` of `ccrelay_agent_restarts_total`.
    pub enum RestartCause {
        Crashed => "crashed",
        Hung => "hung",
        Stopped => "stopped",
    }
}

/// `type` of `ccrelay_frames_in_total`: a request's type, or a frame that is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameIn {
    Request(RequestType),
    /// A text frame that is not a valid request.
    Invalid,
    /// A binary frame.
    Binary,
    /// A frame over the size limit.
    TooLarge,
}

impl FrameIn {
    /// Every value: the request types, then the others.
    pub fn all() -> impl Iterator<Item = FrameIn> {
        RequestType::ALL
            .iter()
            .map(|&t| FrameIn::Request(t))
            .chain([FrameIn::Invalid, FrameIn::Binary, FrameIn::TooLarge])
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FrameIn::Request(t) => t.as_str(),
            FrameIn::Invalid => "invalid",
            FrameIn::Binary => "binary",
            FrameIn::TooLarge => "too_large",
        }
    }
}

/// A label value written as its `as_str`.
macro_rules! encode_as_str {
    ($($t:ty),+ $(,)?) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                EncodeLabelValue::encode(&self.as_str(), encoder)
            }
        }
    )+};
}

encode_as_str!(
    ConnectionState,
    RefusedReason,
    ClosedReason,
    AcceptErrorReason,
    AuthResult,
    PairResult,
    NotifySink,
    NotifyFailedAt,
    NotifyKind,
    PushRespondOutcome,
    PushFailReason,
    MemoryKind,
    RestartCause,
    FrameIn,
);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: ConnectionState,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabel {
    pub reason: RefusedReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedLabel {
    pub reason: ClosedReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcceptErrorLabel {
    pub reason: AcceptErrorReason,
}

/// `key_type` is the key's algorithm name (bounded by the key types ssh-key
/// parses), `unknown` before a key is known, `none` when no response came.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    pub result: AuthResult,
    pub key_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PairResultLabel {
    pub result: PairResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FrameInLabel {
    #[allow(clippy::struct_field_names)]
    pub r#type: FrameIn,
}

// The protocol crate does not know Prometheus, and a label value trait cannot be
// implemented here for its types: these two label sets are encoded by hand.

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct FrameOutLabel {
    #[allow(clippy::struct_field_names)]
    pub r#type: FrameType,
}

impl EncodeLabelSet for FrameOutLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        [("type", self.r#type.as_str())].encode(encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct CodeLabel {
    pub code: ErrorCode,
}

impl EncodeLabelSet for CodeLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        [("code", self.code.as_str())].encode(encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub kind: NotifyKind,
    pub sink: NotifySink,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifyFailedLabel {
    pub sink: NotifyFailedAt,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: PushRespondOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushFailedLabel {
    pub reason: PushFailReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemoryLabel {
    pub kind: MemoryKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabel {
    pub session: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionCauseLabels {
    pub session: String,
    pub cause: RestartCause,
}

/// Every metric family of the server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub connections_open: Family<StateLabel, Gauge>,
    pub connections_accepted: Counter,
    pub connections_refused: Family<RefusedLabel, Counter>,
    pub connections_closed: Family<ClosedLabel, Counter>,
    pub auth_attempts: Family<AuthLabels, Counter>,
    pub frames_in: Family<FrameInLabel, Counter>,
    pub frames_out: Family<FrameOutLabel, Counter>,
    pub bytes_out: Counter,
    pub errors_sent: Family<CodeLabel, Counter>,
    pub rate_limited: Counter,
    pub clients_attached: Family<SessionLabel, Gauge>,
    pub events_appended: Family<SessionLabel, Counter>,
    pub journal_bytes: Family<SessionLabel, Gauge>,
    pub journal_fsync_seconds: Histogram,
    pub replays: Counter,
    pub replays_truncated: Counter,
    pub clients_lagged: Counter,
    pub client_queue_depth: Histogram,
    pub fanout_latency_seconds: Histogram,
    pub agent_restarts: Family<SessionCauseLabels, Counter>,
    pub agent_up: Family<SessionLabel, Gauge>,
    /// Agent processes running now, server-wide (at most `--max-agents`, docs/protocol.md §4.11).
    pub agents_running: Gauge,
    pub pending_requests: Family<SessionLabel, Gauge>,
    pub prompts: Family<SessionLabel, Counter>,
    pub queued_prompts: Family<SessionLabel, Gauge>,
    pub memory_shed: Counter,
    pub memory_buffered: Family<MemoryLabel, Gauge>,
    pub memory_limit: Gauge,
    pub accept_errors: Family<AcceptErrorLabel, Counter>,
    pub auth_throttle_addresses: Gauge,
    /// Signature verifications actually performed (the expensive step of an authentication).
    pub auth_signature_verifications: Counter,
    /// Pairing requests by outcome ([`PairResult`]).
    pub pair_requests: Family<PairResultLabel, Counter>,
    /// Notifications delivered, by kind and sink (docs/protocol.md §9.2).
    pub notifications: Family<NotificationLabels, Counter>,
    /// Notifications not delivered, by sink (`queue`: dropped before any sink).
    pub notify_failed: Family<NotifyFailedLabel, Counter>,
    /// `POST /v1/push/respond` answers, by outcome.
    pub push_respond: Family<OutcomeLabel, Counter>,
    /// Web Push messages the push service accepted.
    pub push_sent: Counter,
    /// Web Push messages not delivered, by reason ([`PushFailReason`]).
    pub push_failed: Family<PushFailedLabel, Counter>,
    /// Push subscriptions removed because the push service answered 404 or 410.
    pub push_subscriptions_expired: Counter,
    /// Push subscriptions held.
    pub push_subscriptions: Gauge,
    /// Push subscriptions suspended because their key is not usable (as of the
    /// last keys change or notification).
    pub push_subscriptions_suspended: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ccrelay");
        macro_rules! reg {
            ($name:literal, $help:literal, $metric:expr) => {{
                let m = $metric;
                registry.register($name, $help, m.clone());
                m
            }};
            ($name:literal, $help:literal, $unit:expr, $metric:expr) => {{
                let m = $metric;
                registry.register_with_unit($name, $help, $unit, m.clone());
                m
            }};
        }
        let latency_buckets = || Histogram::new(exponential_buckets(0.00005, 2.0, 20));
        Metrics {
            connections_open: reg!(
                "connections_open",
                "Open WebSocket connections by authentication state",
                Family::default()
            ),
            connections_accepted: reg!(
                "connections_accepted",
                "WebSocket connections upgraded",
                Counter::default()
            ),
            connections_refused: reg!(
                "connections_refused",
                "Connections and requests refused before the upgrade or as plain HTTP, by reason",
                Family::default()
            ),
            connections_closed: reg!(
                "connections_closed",
                "WebSocket connections closed, by reason",
                Family::default()
            ),
            auth_attempts: reg!(
                "auth_attempts",
                "Authentication attempts by result and key type",
                Family::default()
            ),
            frames_in: reg!(
                "frames_in",
                "Inbound frames by message type",
                Family::default()
            ),
            frames_out: reg!(
                "frames_out",
                "Outbound frames by message type",
                Family::default()
            ),
            bytes_out: reg!(
                "sent",
                "Bytes of frames written to clients",
                Unit::Bytes,
                Counter::default()
            ),
            errors_sent: reg!(
                "errors_sent",
                "error frames sent, by code",
                Family::default()
            ),
            rate_limited: reg!(
                "rate_limited_frames",
                "Inbound frames refused by the per-connection rate limit",
                Counter::default()
            ),
            clients_attached: reg!(
                "clients_attached",
                "Clients attached per session",
                Family::default()
            ),
            events_appended: reg!(
                "events_appended",
                "Events appended to the session log",
                Family::default()
            ),
            journal_bytes: reg!(
                "journal",
                "Bytes of journal segments kept per session",
                Unit::Bytes,
                Family::default()
            ),
            journal_fsync_seconds: reg!(
                "journal_fsync",
                "Time spent in journal fsync",
                Unit::Seconds,
                latency_buckets()
            ),
            replays: reg!("replays", "attach requests served", Counter::default()),
            replays_truncated: reg!(
                "replays_truncated",
                "attach requests answered with truncated: true",
                Counter::default()
            ),
            clients_lagged: reg!(
                "clients_lagged",
                "Clients closed with 4008 because their outbound queue was full",
                Counter::default()
            ),
            client_queue_depth: reg!(
                "client_queue_depth",
                "Outbound queue depth of a client, sampled as frames are written",
                Histogram::new(exponential_buckets(1.0, 4.0, 10))
            ),
            fanout_latency_seconds: reg!(
                "fanout_latency",
                "From an agent stdout line read to its event frame written to a client",
                Unit::Seconds,
                latency_buckets()
            ),
            agent_restarts: reg!(
                "agent_restarts",
                "Agent process ends by cause (crashed, hung, stopped)",
                Family::default()
            ),
            agent_up: reg!(
                "agent_up",
                "1 while the session's agent process runs",
                Family::default()
            ),
            agents_running: reg!(
                "agents_running",
                "Agent processes running now, all sessions together (at most --max-agents)",
                Gauge::default()
            ),
            pending_requests: reg!(
                "pending_requests",
                "Agent control requests (permission prompts, dialogs) awaiting an answer",
                Family::default()
            ),
            prompts: reg!("prompts", "Prompts accepted per session", Family::default()),
            queued_prompts: reg!(
                "queued_prompts",
                "Prompts waiting for their turn per session",
                Family::default()
            ),
            memory_shed: reg!(
                "memory_shed",
                "Clients shed (close 1013) because buffered memory neared its limit",
                Counter::default()
            ),
            memory_buffered: reg!(
                "memory_buffered",
                "Bytes buffered for clients, by kind (queues: frames waiting in client queues; tails: in-memory event tails)",
                Unit::Bytes,
                Family::default()
            ),
            memory_limit: reg!(
                "memory_limit",
                "The --memory-limit for buffered bytes (refuse from 80 %, shed from 95 %)",
                Unit::Bytes,
                Gauge::default()
            ),
            auth_throttle_addresses: reg!(
                "auth_throttle_addresses",
                "Addresses tracked by the auth-failure throttle (refusals: ccrelay_connections_refused_total{reason=\"throttle\"})",
                Gauge::default()
            ),
            auth_signature_verifications: reg!(
                "auth_signature_verifications",
                "SSHSIG signature verifications performed (keys in no keys file and throttled attempts cost none)",
                Counter::default()
            ),
            pair_requests: reg!(
                "pair_requests",
                "Device pairing requests by outcome",
                Family::default()
            ),
            notifications: reg!(
                "notifications",
                "Notifications delivered (accepted by the push service or endpoint), by kind and sink",
                Family::default()
            ),
            notify_failed: reg!(
                "notify_failed",
                "Notifications not delivered (timeout, refused, too many under way), by sink; `queue` counts reports dropped before any sink",
                Family::default()
            ),
            push_respond: reg!(
                "push_respond",
                "POST /v1/push/respond answers by outcome",
                Family::default()
            ),
            push_sent: reg!(
                "push_sent",
                "Web Push messages accepted by the push service",
                Counter::default()
            ),
            push_failed: reg!(
                "push_failed",
                "Web Push messages not delivered, by reason (timeout, connect, rejected, server_error, too_large, refused_address, ...)",
                Family::default()
            ),
            push_subscriptions_expired: reg!(
                "push_subscriptions_expired",
                "Push subscriptions removed because the push service answered 404 or 410",
                Counter::default()
            ),
            push_subscriptions: reg!(
                "push_subscriptions",
                "Push subscriptions held",
                Gauge::default()
            ),
            push_subscriptions_suspended: reg!(
                "push_subscriptions_suspended",
                "Push subscriptions suspended: their key is expired, restricted or its from= no longer admits them",
                Gauge::default()
            ),
            accept_errors: reg!(
                "accept_errors",
                "Failed accept() calls on the listeners, by reason (connection, resources, fatal)",
                Family::default()
            ),
            registry,
        }
    }

    /// Register the Linux process collector (RSS, fds, CPU). Separate so tests can skip it.
    pub fn with_process_collector(mut self) -> Self {
        self.registry.register_collector(Box::new(ProcessCollector));
        self
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Count one delivered notification.
    pub fn notification_sent(&self, kind: NotifyKind, sink: NotifySink) {
        self.notifications
            .get_or_create(&NotificationLabels { kind, sink })
            .inc();
    }

    /// Count one notification that was not delivered.
    pub fn notify_failed(&self, sink: impl Into<NotifyFailedAt>) {
        self.notify_failed
            .get_or_create(&NotifyFailedLabel { sink: sink.into() })
            .inc();
    }

    /// Count one answer of the respond endpoint.
    pub fn push_respond(&self, outcome: PushRespondOutcome) {
        self.push_respond
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Shorthand: count one error frame.
    pub fn error_sent(&self, code: ErrorCode) {
        self.errors_sent.get_or_create(&CodeLabel { code }).inc();
    }

    /// Count one connection or request refused before the upgrade.
    pub fn refused(&self, reason: RefusedReason) {
        self.connections_refused
            .get_or_create(&RefusedLabel { reason })
            .inc();
    }

    /// Count one inbound frame.
    pub fn frame_in(&self, r#type: FrameIn) {
        self.frames_in.get_or_create(&FrameInLabel { r#type }).inc();
    }

    /// Count one outbound frame.
    pub fn frame_out(&self, r#type: FrameType) {
        self.frames_out
            .get_or_create(&FrameOutLabel { r#type })
            .inc();
    }

    /// Set the bytes buffered of one kind (the memory guard pushes its figures).
    pub fn set_memory_buffered(&self, kind: MemoryKind, bytes: u64) {
        self.memory_buffered
            .get_or_create(&MemoryLabel { kind })
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Create every series of every family at zero, so each one is exposed (with
    /// its type) from the first scrape and `rate()` sees the first increment. The
    /// label values come from the label enums' `ALL`; per-session series are
    /// created for `sessions` (the configured ones). `ccrelay_auth_attempts_total`
    /// is the one family whose labels are not all known here: its `key_type` is
    /// the key's algorithm, so only the series without a key (`failed`/`throttled`
    /// with `unknown`, `timeout` with `none`) exist before the first attempt.
    pub fn init_series<'a>(&self, sessions: impl IntoIterator<Item = &'a str>) {
        for &state in ConnectionState::ALL {
            let _ = self.connections_open.get_or_create(&StateLabel { state });
        }
        for &reason in RefusedReason::ALL {
            let _ = self
                .connections_refused
                .get_or_create(&RefusedLabel { reason });
        }
        for &reason in ClosedReason::ALL {
            let _ = self
                .connections_closed
                .get_or_create(&ClosedLabel { reason });
        }
        for &reason in AcceptErrorReason::ALL {
            let _ = self
                .accept_errors
                .get_or_create(&AcceptErrorLabel { reason });
        }
        for (result, key_type) in [
            (AuthResult::Failed, UNKNOWN_KEY_TYPE),
            (AuthResult::Throttled, UNKNOWN_KEY_TYPE),
            (AuthResult::Timeout, NO_KEY_TYPE),
        ] {
            let _ = self.auth_attempts.get_or_create(&AuthLabels {
                result,
                key_type: key_type.to_string(),
            });
        }
        for &result in PairResult::ALL {
            let _ = self
                .pair_requests
                .get_or_create(&PairResultLabel { result });
        }
        for &sink in NotifySink::ALL {
            for &kind in NotifyKind::ALL {
                let _ = self
                    .notifications
                    .get_or_create(&NotificationLabels { kind, sink });
            }
        }
        for &sink in NotifyFailedAt::ALL {
            let _ = self
                .notify_failed
                .get_or_create(&NotifyFailedLabel { sink });
        }
        for &outcome in PushRespondOutcome::ALL {
            let _ = self.push_respond.get_or_create(&OutcomeLabel { outcome });
        }
        for r#type in FrameIn::all() {
            let _ = self.frames_in.get_or_create(&FrameInLabel { r#type });
        }
        for &r#type in FrameType::ALL {
            let _ = self.frames_out.get_or_create(&FrameOutLabel { r#type });
        }
        for &code in ErrorCode::ALL {
            let _ = self.errors_sent.get_or_create(&CodeLabel { code });
        }
        for &reason in PushFailReason::ALL {
            let _ = self.push_failed.get_or_create(&PushFailedLabel { reason });
        }
        for &kind in MemoryKind::ALL {
            let _ = self.memory_buffered.get_or_create(&MemoryLabel { kind });
        }
        for session in sessions {
            let label = Self::session_label(session);
            let _ = self.clients_attached.get_or_create(&label);
            let _ = self.agent_up.get_or_create(&label);
            let _ = self.prompts.get_or_create(&label);
            let _ = self.events_appended.get_or_create(&label);
            let _ = self.journal_bytes.get_or_create(&label);
            let _ = self.pending_requests.get_or_create(&label);
            let _ = self.queued_prompts.get_or_create(&label);
            for &cause in RestartCause::ALL {
                let _ = self.agent_restarts.get_or_create(&SessionCauseLabels {
                    session: session.to_string(),
                    cause,
                });
            }
        }
    }

    pub fn session_label(session: &str) -> SessionLabel {
        SessionLabel {
            session: session.to_string(),
        }
    }
}

/// `key_type` of `ccrelay_auth_attempts_total` before the key is known.
pub const UNKNOWN_KEY_TYPE: &str = "unknown";
/// `key_type` of `ccrelay_auth_attempts_total` when no response came.
pub const NO_KEY_TYPE: &str = "none";

/// The Content-Type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The Content-Type of the classic Prometheus text format ([`Format::Prometheus`]).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition format of one scrape, chosen from its `Accept` header the way
/// the reference client libraries do: OpenMetrics only when the scraper asks for
/// `application/openmetrics-text`, else the classic Prometheus text format 0.0.4,
/// which every scraper and `promtool check metrics` read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text exposition format 0.0.4 (`text/plain; version=0.0.4`).
    Prometheus,
    /// OpenMetrics 1.0 text (`application/openmetrics-text; version=1.0.0`).
    OpenMetrics,
}

impl Format {
    /// Pick the format for an `Accept` header value (absent or unreadable:
    /// classic). Media ranges are tried by descending `q` (ties in header order);
    /// the first one this server can serve wins: `application/openmetrics-text`
    /// → OpenMetrics; `text/plain`, `text/*`, `*/*` → classic. Ranges with
    /// `q=0` and types we cannot serve (protobuf) are skipped.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        let mut ranges: Vec<(f32, usize, Format)> = Vec::new();
        for (index, range) in accept.split(',').enumerate() {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = 1.0_f32;
            for param in parts {
                if let Some((k, v)) = param.split_once('=')
                    && k.trim().eq_ignore_ascii_case("q")
                {
                    // An unparseable q is treated as absent (RFC 9110 leaves it to us).
                    q = v.trim().parse::<f32>().unwrap_or(1.0).clamp(0.0, 1.0);
                }
            }
            let format = match media.as_str() {
                "application/openmetrics-text" => Format::OpenMetrics,
                "text/plain" | "text/*" | "*/*" => Format::Prometheus,
                _ => continue,
            };
            if q > 0.0 {
                ranges.push((q, index, format));
            }
        }
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        ranges
            .first()
            .map_or(Format::Prometheus, |&(_, _, format)| format)
    }

    /// The `Content-Type` of an exposition in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => PROMETHEUS_CONTENT_TYPE,
            Format::OpenMetrics => CONTENT_TYPE,
        }
    }
}

impl Metrics {
    /// The exposition text in `format`.
    pub fn encode_as(&self, format: Format) -> String {
        let open_metrics = self.encode();
        match format {
            Format::OpenMetrics => open_metrics,
            Format::Prometheus => openmetrics_to_prometheus(&open_metrics),
        }
    }
}

/// Rewrite an OpenMetrics exposition (as prometheus-client writes it) into the
/// classic Prometheus text format 0.0.4. prometheus-client has no encoder for the
/// classic format, and the two differ only in the descriptor lines, so the samples
/// pass through unchanged:
/// - a counter family is named with its `_total` suffix in `# HELP`/`# TYPE`
///   (the classic format names the sample, OpenMetrics the family), and its
///   `_created` samples are dropped (the classic format has none);
/// - `unknown` becomes `untyped`; `info` becomes a gauge named `<family>_info`;
/// - `# UNIT` and `# EOF` lines are dropped, and so are exemplars (` # {...}`
///   after a sample's value);
/// - `\"` in a HELP text becomes `"` (only `\\` and `\n` are escapes there).
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // (family, type) of the descriptor being copied, to rename and filter its samples.
    let mut family: Option<(String, String)> = None;
    let mut pending_help: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            pending_help = Some((name.to_string(), help.replace("\\\"", "\"")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (classic_name, classic_kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                "gaugehistogram" => (name.to_string(), "histogram"),
                "gauge" | "histogram" | "summary" => (name.to_string(), kind),
                _ => (name.to_string(), "untyped"),
            };
            if let Some((help_name, help)) = pending_help.take()
                && help_name == name
            {
                out.push_str(&format!("# HELP {classic_name} {help}\n"));
            }
            out.push_str(&format!("# TYPE {classic_name} {classic_kind}\n"));
            family = Some((name.to_string(), kind.to_string()));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let sample = strip_exemplar(line);
        if let Some((name, kind)) = &family
            && kind == "counter"
            && sample_name(sample) == format!("{name}_created")
        {
            continue;
        }
        out.push_str(sample);
        out.push('\n');
    }
    out
}

/// The metric name of a sample line (up to `{` or a space).
fn sample_name(line: &str) -> &str {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    &line[..end]
}

/// A sample line without its exemplar: the part before ` # ` that follows the
/// label set (label values may themselves contain ` # `, so quotes are skipped).
fn strip_exemplar(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut in_quotes = false;
    // Without a label set the value follows the name directly.
    let mut labels_done = bytes.get(sample_name(line).len()) != Some(&b'{');
    while i < bytes.len() {
        let b = bytes[i];
        if in_quotes {
            match b {
                b'\\' => i += 1,
                b'"' => in_quotes = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_quotes = true,
                b'}' => labels_done = true,
                b'#' if labels_done && i > 0 && bytes[i - 1] == b' ' => {
                    return line[..i - 1].trim_end();
                }
                _ => {}
            }
        }
        i += 1;
    }
    line
}

/// `process_*` metrics read from /proc on each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = process_stats();
        let mut gauge = |name: &str, help: &str, unit: Option<&Unit>, value: i64| {
            let g = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, unit, g.metric_type())?;
            g.encode(metric)
        };
        if let Some(rss) = stats.rss_bytes {
            gauge(
                "process_resident_memory",
                "Resident memory",
                Some(&Unit::Bytes),
                rss,
            )?;
        }
        if let Some(fds) = stats.open_fds {
            gauge("process_open_fds", "Open file descriptors", None, fds)?;
        }
        if let Some(max) = stats.max_fds {
            gauge(
                "process_max_fds",
                "Limit of open file descriptors",
                None,
                max,
            )?;
        }
        if let Some(threads) = stats.threads {
            gauge("process_threads", "OS threads", None, threads)?;
        }
        if let Some(cpu) = stats.cpu_seconds {
            let c = ConstCounter::new(cpu);
            let metric = encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time",
                Some(&Unit::Seconds),
                c.metric_type(),
            )?;
            c.encode(metric)?;
        }
        Ok(())
    }
}

/// A snapshot of this process's resource use (Linux /proc).
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessStats {
    pub rss_bytes: Option<i64>,
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
    pub threads: Option<i64>,
    pub cpu_seconds: Option<f64>,
}

static PAGE_SIZE: AtomicI64 = AtomicI64::new(0);

fn page_size() -> i64 {
    let cached = PAGE_SIZE.load(Ordering::Relaxed);
    if cached > 0 {
        return cached;
    }
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as i64;
    let size = if size > 0 { size } else { 4096 };
    PAGE_SIZE.store(size, Ordering::Relaxed);
    size
}

/// Read this process's stats from /proc/self.
pub fn process_stats() -> ProcessStats {
    let mut s = ProcessStats::default();
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        s.rss_bytes = statm
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<i64>().ok())
            .map(|pages| pages * page_size());
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        s.open_fds = Some(dir.count() as i64);
    }
    if let Ok((soft, _)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        s.max_fds = i64::try_from(soft).ok();
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        && let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..])
    {
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the command name: field 14/15 (utime/stime) are at index 11/12, threads at 17.
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        if let (Some(u), Some(st)) = (fields.get(11), fields.get(12))
            && let (Ok(u), Ok(st)) = (u.parse::<f64>(), st.parse::<f64>())
            && ticks > 0.0
        {
            s.cpu_seconds = Some((u + st) / ticks);
        }
        s.threads = fields.get(17).and_then(|t| t.parse().ok());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_prefixed_families() {
        let m = Metrics::new().with_process_collector();
        m.connections_accepted.inc();
        m.frame_in(FrameIn::Request(RequestType::Ping));
        let text = m.encode();
        assert!(
            text.contains("ccrelay_connections_accepted_total 1"),
            "{text}"
        );
        assert!(
            text.contains("ccrelay_frames_in_total{type=\"ping\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ccrelay_process_resident_memory_bytes"),
            "{text}"
        );
        assert!(text.contains("ccrelay_sent_bytes_total"), "{text}");
    }

    #[test]
    fn every_label_value_of_every_enum_is_a_series_from_the_start() {
        let m = Metrics::new();
        m.init_series(["default"]);
        let text = m.encode();
        let has = |family: &str, label: &str, value: &str| {
            let series = format!("{family}{{");
            let pair = format!("{label}=\"{value}\"");
            text.lines()
                .any(|l| l.starts_with(&series) && l.contains(&pair))
        };
        let check = |family: &str, label: &str, values: Vec<&str>| {
            assert!(!values.is_empty());
            for value in values {
                assert!(
                    has(family, label, value),
                    "{family}{{{label}={value}}}\n{text}"
                );
            }
        };
        macro_rules! each {
            ($family:literal, $label:literal, $t:ty) => {
                check(
                    $family,
                    $label,
                    <$t>::ALL.iter().map(|v| v.as_str()).collect(),
                )
            };
        }
        each!("ccrelay_connections_open", "state", ConnectionState);
        each!("ccrelay_connections_refused_total", "reason", RefusedReason);
        each!("ccrelay_connections_closed_total", "reason", ClosedReason);
        each!("ccrelay_accept_errors_total", "reason", AcceptErrorReason);
        each!("ccrelay_pair_requests_total", "result", PairResult);
        each!("ccrelay_notifications_total", "sink", NotifySink);
        each!("ccrelay_notifications_total", "kind", NotifyKind);
        each!("ccrelay_notify_failed_total", "sink", NotifyFailedAt);
        each!("ccrelay_push_respond_total", "outcome", PushRespondOutcome);
        each!("ccrelay_push_failed_total", "reason", PushFailReason);
        each!("ccrelay_memory_buffered_bytes", "kind", MemoryKind);
        each!("ccrelay_agent_restarts_total", "cause", RestartCause);
        each!("ccrelay_frames_out_total", "type", FrameType);
        each!("ccrelay_errors_sent_total", "code", ErrorCode);
        check(
            "ccrelay_frames_in_total",
            "type",
            FrameIn::all().map(FrameIn::as_str).collect(),
        );
        for result in [
            AuthResult::Failed,
            AuthResult::Throttled,
            AuthResult::Timeout,
        ] {
            check(
                "ccrelay_auth_attempts_total",
                "result",
                vec![result.as_str()],
            );
        }
    }

    #[test]
    fn error_codes_serialize_as_their_label() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::from(code.as_str())
            );
        }
    }

    #[test]
    fn negotiation_follows_accept_like_the_reference_clients() {
        use Format::*;
        assert_eq!(Format::negotiate(None), Prometheus);
        assert_eq!(Format::negotiate(Some("")), Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Prometheus);
        assert_eq!(Format::negotiate(Some("text/plain")), Prometheus);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text")),
            OpenMetrics
        );
        // What Prometheus 2.x sends by default.
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;\
                 version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
            )),
            OpenMetrics
        );
        // Protobuf first (native histograms): we skip it and honour the next choice.
        assert_eq!(
            Format::negotiate(Some(
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                 encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3"
            )),
            Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("text/plain;q=0.9, application/openmetrics-text;q=0.1")),
            Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("Application/OpenMetrics-Text; q=0")),
            Prometheus
        );
        assert_eq!(Format::negotiate(Some("image/png")), Prometheus);
        assert_eq!(Format::negotiate(Some("garbage;;;q=x,")), Prometheus);
    }

    #[test]
    fn classic_rewrite_names_counters_by_sample_and_drops_openmetrics_lines() {
        let om = "# HELP a_total_things Things \\\"quoted\\\".\n\
                  # TYPE a_total_things counter\n\
                  a_total_things_total{k=\"v # {x}\"} 3 # {trace=\"1\"} 1.0\n\
                  a_total_things_created 1700000000.0\n\
                  # HELP b_bytes Size.\n\
                  # TYPE b_bytes gauge\n\
                  # UNIT b_bytes bytes\n\
                  b_bytes 7\n\
                  # HELP c Unknown.\n\
                  # TYPE c unknown\n\
                  c 1\n\
                  # HELP d Build.\n\
                  # TYPE d info\n\
                  d_info{version=\"1\"} 1\n\
                  # EOF\n";
        let classic = openmetrics_to_prometheus(om);
        assert_eq!(
            classic,
            "# HELP a_total_things_total Things \"quoted\".\n\
             # TYPE a_total_things_total counter\n\
             a_total_things_total{k=\"v # {x}\"} 3\n\
             # HELP b_bytes Size.\n\
             # TYPE b_bytes gauge\n\
             b_bytes 7\n\
             # HELP c Unknown.\n\
             # TYPE c untyped\n\
             c 1\n\
             # HELP d_info Build.\n\
             # TYPE d_info gauge\n\
             d_info{version=\"1\"} 1\n"
        );
    }

    #[test]
    fn both_formats_of_the_real_registry_parse() {
        // No process collector: its RSS changes between the two encodings.
        let m = Metrics::new();
        m.init_series(["default"]);
        m.connections_accepted.inc();
        m.fanout_latency_seconds.observe(0.001);
        let om = m.encode_as(Format::OpenMetrics);
        assert!(om.ends_with("# EOF\n"), "{om}");
        let classic = m.encode_as(Format::Prometheus);
        assert!(!classic.contains("# EOF"), "{classic}");
        assert!(!classic.contains("# UNIT"), "{classic}");
        assert!(
            classic.contains("# TYPE ccrelay_connections_accepted_total counter\n"),
            "{classic}"
        );
        assert!(
            classic.contains("# TYPE ccrelay_fanout_latency_seconds histogram\n"),
            "{classic}"
        );
        // Same samples in both: only descriptor lines differ.
        let samples = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(samples(&om), samples(&classic));
        for f in [Format::Prometheus, Format::OpenMetrics] {
            assert!(f.content_type().contains("charset=utf-8"));
        }
    }
}
