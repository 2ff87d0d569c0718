//! `--notify-webhook` and `--notify-ntfy` (docs/protocol.md §9.2.3, §9.2.4): the same notifications
//! posted as JSON to an operator's endpoint, or in ntfy's JSON publishing format
//! (<https://docs.ntfy.sh/publish/#publish-as-json>) with `http` action buttons that
//! post the answer tokens to `<public-url>/v1/push/respond`.
//!
//! Every post runs in its own task, at most [`MAX_IN_FLIGHT`] per sink at a time
//! (beyond that a notification is dropped and counted), with a connect timeout and
//! a total timeout, no redirects, and at most [`RESPONSE_BODY_CAP`] bytes of the
//! response read. Nothing here is ever awaited by a session.
//!
//! Owns: the HTTP client of notifications, the two formats, delivery and its
//! metrics. Must not: decide what is notified or when (the notifier does).

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::payload::Payload;
use crate::metrics::{Metrics, NotifyKind, NotifySink};

/// Time to set up a connection (TCP + TLS) to a webhook or ntfy server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time a whole post may take, response included.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Posts under way per sink; more are dropped (and counted as failed).
pub const MAX_IN_FLIGHT: usize = 32;
/// Bytes of a response read at most (for the log line of a failure).
pub const RESPONSE_BODY_CAP: usize = 1024;

/// The HTTP client of webhook and ntfy posts: timeouts, no redirects, no proxy from
/// the environment (a notification goes where it was configured to go), rustls with
/// the ring provider and both the compiled-in web roots and the system's CA store
/// (an operator's own endpoint may use a private CA added with update-ca-certificates).
pub fn http_client() -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(TOTAL_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("ccrelay/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

/// An ntfy topic URL split into where to post and the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NtfyTarget {
    /// The server's root (`https://ntfy.example/`).
    pub root: Url,
    pub topic: String,
}

impl NtfyTarget {
    /// `https://host[:port]/[path/]topic` → root and topic (the last path segment).
    pub fn parse(url: &Url) -> Result<NtfyTarget, String> {
        let topic = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .filter(|t| !t.is_empty())
            .ok_or("expected a topic URL such as https://ntfy.example/ccrelay-alerts")?
            .to_string();
        let mut root = url.clone();
        // The root of the topic's server: ntfy's JSON publishing posts there.
        let path = url.path();
        let prefix = &path[..path.len() - topic.len()];
        root.set_path(prefix);
        root.set_query(None);
        root.set_fragment(None);
        Ok(NtfyTarget { root, topic })
    }
}

/// Where notifications are posted besides Web Push.
#[derive(Debug, Clone)]
pub struct Hooks {
    /// None when neither sink is configured.
    client: Option<reqwest::Client>,
    webhook: Option<Url>,
    ntfy: Option<NtfyTarget>,
    /// `<public-url>/v1/push/respond`, for ntfy's action buttons and click target.
    respond_url: Option<String>,
    public_url: Option<String>,
    webhook_slots: Arc<Semaphore>,
    ntfy_slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl Hooks {
    pub fn new(
        client: Option<reqwest::Client>,
        webhook: Option<Url>,
        ntfy: Option<NtfyTarget>,
        public_url: Option<&Url>,
        metrics: Arc<Metrics>,
    ) -> Hooks {
        let public_url = public_url.map(|u| u.as_str().trim_end_matches('/').to_string());
        Hooks {
            client,
            webhook,
            ntfy,
            respond_url: public_url.as_ref().map(|u| format!("{u}/v1/push/respond")),
            public_url,
            webhook_slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            ntfy_slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            metrics,
        }
    }

    pub fn has_webhook(&self) -> bool {
        self.webhook.is_some()
    }

    pub fn has_ntfy(&self) -> bool {
        self.ntfy.is_some()
    }

    /// Post the §9 JSON to the webhook, in the background.
    pub fn webhook(&self, payload: &Payload) {
        let Some(url) = &self.webhook else { return };
        let body = payload.to_json();
        self.post(
            NotifySink::Webhook,
            &self.webhook_slots,
            url.clone(),
            body,
            payload.kind(),
        );
    }

    /// Post the notification to ntfy, in the background.
    pub fn ntfy(&self, payload: &Payload) {
        let Some(target) = &self.ntfy else { return };
        let body = ntfy_message(
            payload,
            &target.topic,
            self.respond_url.as_deref(),
            self.public_url.as_deref(),
        )
        .to_string();
        self.post(
            NotifySink::Ntfy,
            &self.ntfy_slots,
            target.root.clone(),
            body,
            payload.kind(),
        );
    }

    fn post(
        &self,
        sink: NotifySink,
        slots: &Arc<Semaphore>,
        url: Url,
        body: String,
        kind: NotifyKind,
    ) {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                sink = sink.as_str(),
                kind = kind.as_str(),
                in_flight = MAX_IN_FLIGHT,
                "notification dropped: too many posts to this endpoint still under way"
            );
            self.metrics.notify_failed(sink);
            return;
        };
        let Some(client) = self.client.clone() else {
            return;
        };
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match send(&client, url, body).await {
                Ok(()) => {
                    metrics.notification_sent(kind, sink);
                    tracing::debug!(
                        sink = sink.as_str(),
                        kind = kind.as_str(),
                        "notification posted"
                    );
                }
                Err(why) => {
                    metrics.notify_failed(sink);
                    tracing::warn!(sink = sink.as_str(), kind = kind.as_str(), error = %why, "notification post failed");
                }
            }
        });
    }
}

async fn send(client: &reqwest::Client, url: Url, body: String) -> Result<(), String> {
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| describe_error(&e))?;
    let status = response.status();
    if status.is_success() {
        // The body is of no interest; the connection is dropped with the response.
        return Ok(());
    }
    let text = super::webpush::client::read_capped(response, RESPONSE_BODY_CAP).await;
    Err(format!("HTTP {status}: {}", text.trim()))
}

fn describe_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        format!("cannot connect: {e}")
    } else {
        e.to_string()
    }
}

/// A notification in ntfy's JSON publishing format.
pub fn ntfy_message(
    payload: &Payload,
    topic: &str,
    respond_url: Option<&str>,
    click: Option<&str>,
) -> Value {
    let mut msg = match payload {
        Payload::Permission {
            session,
            tool,
            summary,
            actions,
            ..
        } => {
            let mut m = json!({
                "title": format!("{tool}: permission needed ({session})"),
                "message": if summary.is_empty() { tool.clone() } else { summary.clone() },
                "priority": 5,
                "tags": ["lock"],
            });
            if let Some(url) = respond_url
                && !actions.is_empty()
            {
                m["actions"] = Value::from(
                    actions
                        .iter()
                        .map(|a| {
                            json!({
                                "action": "http",
                                "label": if a.action == "allow" { "Allow" } else { "Deny" },
                                "url": url,
                                "method": "POST",
                                "headers": {"Content-Type": "application/json"},
                                "body": json!({"token": a.token}).to_string(),
                                "clear": true,
                            })
                        })
                        .collect::<Vec<_>>(),
                );
            }
            m
        }
        Payload::Dismiss { session, by, .. } => json!({
            "title": format!("Permission request closed ({session})"),
            "message": match by {
                Some(by) => format!("answered by {by}"),
                None => "cancelled".to_string(),
            },
            "priority": 2,
            "tags": ["white_check_mark"],
        }),
        Payload::TurnEnded {
            session,
            duration_ms,
            cost_usd,
            ..
        } => {
            let mut text = format!("took {:.0} s", *duration_ms as f64 / 1000.0);
            if let Some(cost) = cost_usd {
                text.push_str(&format!(", ${cost:.2}"));
            }
            json!({
                "title": format!("Turn ended ({session})"),
                "message": text,
                "priority": 3,
                "tags": ["checkered_flag"],
            })
        }
        Payload::AgentFailed { session, detail } => json!({
            "title": format!("Agent failed ({session})"),
            "message": detail,
            "priority": 4,
            "tags": ["warning"],
        }),
    };
    msg["topic"] = Value::from(topic);
    if let Some(click) = click {
        msg["click"] = Value::from(click);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::payload::ActionToken;

    #[test]
    fn ntfy_topic_urls_split_into_root_and_topic() {
        let t =
            NtfyTarget::parse(&Url::parse("https://ntfy.example/ccrelay-alerts").unwrap()).unwrap();
        assert_eq!(t.root.as_str(), "https://ntfy.example/");
        assert_eq!(t.topic, "ccrelay-alerts");
        let t = NtfyTarget::parse(&Url::parse("http://127.0.0.1:8080/sub/dir/alerts?x=1").unwrap())
            .unwrap();
        assert_eq!(t.root.as_str(), "http://127.0.0.1:8080/sub/dir/");
        assert_eq!(t.topic, "alerts");
        for bad in ["https://ntfy.example/", "https://ntfy.example"] {
            assert!(
                NtfyTarget::parse(&Url::parse(bad).unwrap()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn ntfy_messages_carry_answer_buttons_only_with_a_public_url() {
        let p = Payload::Permission {
            session: "default".into(),
            request_id: "r".into(),
            tool: "Bash".into(),
            summary: "ls -l".into(),
            complete: true,
            actions: vec![
                ActionToken {
                    action: "allow",
                    token: "A".into(),
                },
                ActionToken {
                    action: "deny",
                    token: "D".into(),
                },
            ],
        };
        let m = ntfy_message(
            &p,
            "alerts",
            Some("https://relay.example/v1/push/respond"),
            Some("https://relay.example"),
        );
        assert_eq!(m["topic"], "alerts");
        assert_eq!(m["message"], "ls -l");
        assert_eq!(m["priority"], 5);
        assert_eq!(m["click"], "https://relay.example");
        let actions = m["actions"].as_array().unwrap();
        assert_eq!(actions.len(), 2);
        assert_eq!(actions[0]["action"], "http");
        assert_eq!(actions[0]["label"], "Allow");
        assert_eq!(actions[0]["method"], "POST");
        assert_eq!(actions[0]["url"], "https://relay.example/v1/push/respond");
        assert_eq!(actions[0]["body"], r#"{"token":"A"}"#);
        assert_eq!(actions[1]["body"], r#"{"token":"D"}"#);
        let m = ntfy_message(&p, "alerts", None, None);
        assert!(m.get("actions").is_none());
        assert!(m.get("click").is_none());
    }
}
