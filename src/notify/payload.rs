//! What a notification says (PROTOCOL.md §9): the JSON payloads, their `Topic`, and
//! the short summary of a request's input.
//!
//! Owns: payload shapes and sizes. Must not: deliver anything or issue tokens (it is
//! handed the tokens to embed).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Largest plaintext one Web Push message may carry: a single 4,096-byte aes128gcm
/// record minus its header (86 bytes with a 65-byte key id), the padding delimiter
/// and the 16-byte tag (RFC 8188, RFC 8291).
pub const PUSH_PLAINTEXT_MAX: usize = 3993;
/// Longest summary, in characters, before any fitting to the size limit.
pub const SUMMARY_MAX_CHARS: usize = 200;
/// A turn must have run longer than this for its end to be notified.
pub const TURN_NOTIFY_AFTER_MS: u64 = 60_000;

/// `Topic` of a notification: the first 32 characters of the unpadded base64url
/// SHA-256 of `<session>/<id>` (`id`: request id, prompt id, or `failed`). 32
/// characters of the URL-safe alphabet is what RFC 8030 allows.
pub fn topic(session: &str, id: &str) -> String {
    let digest = Sha256::digest(format!("{session}/{id}").as_bytes());
    let mut t = B64.encode(digest);
    t.truncate(32);
    t
}

/// One answer button of a permission notification.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ActionToken {
    pub action: &'static str,
    pub token: String,
}

/// A notification, as sent to Web Push and the webhook (§9 payloads).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payload {
    Permission {
        session: String,
        request_id: String,
        tool: String,
        summary: String,
        actions: Vec<ActionToken>,
    },
    Dismiss {
        session: String,
        request_id: String,
        /// Extension: who answered (a device name, a fingerprint, `relay` for a
        /// timeout), for the replacing "answered by …" notification. Absent when
        /// the request was cancelled rather than answered.
        #[serde(skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    TurnEnded {
        session: String,
        prompt_id: String,
        duration_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        cost_usd: Option<f64>,
    },
    AgentFailed {
        session: String,
        detail: String,
    },
}

impl Payload {
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::Permission { .. } => "permission",
            Payload::Dismiss { .. } => "dismiss",
            Payload::TurnEnded { .. } => "turn_ended",
            Payload::AgentFailed { .. } => "agent_failed",
        }
    }

    pub fn session(&self) -> &str {
        match self {
            Payload::Permission { session, .. }
            | Payload::Dismiss { session, .. }
            | Payload::TurnEnded { session, .. }
            | Payload::AgentFailed { session, .. } => session,
        }
    }

    /// The §9 `Topic`.
    pub fn topic(&self) -> String {
        match self {
            Payload::Permission {
                session,
                request_id,
                ..
            }
            | Payload::Dismiss {
                session,
                request_id,
                ..
            } => topic(session, request_id),
            Payload::TurnEnded {
                session, prompt_id, ..
            } => topic(session, prompt_id),
            Payload::AgentFailed { session, .. } => topic(session, "failed"),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The JSON, at most `limit` bytes when the variable texts (summary, detail)
    /// can be shortened that far; `None` when even then it does not fit.
    pub fn to_json_within(&self, limit: usize) -> Option<String> {
        let json = self.to_json();
        if json.len() <= limit {
            return Some(json);
        }
        let full = match self {
            Payload::Permission { summary, .. } => summary,
            Payload::AgentFailed { detail, .. } => detail,
            _ => return None,
        };
        let with = |chars: usize| {
            let mut shorter = self.clone();
            if let Payload::Permission { summary: t, .. } | Payload::AgentFailed { detail: t, .. } =
                &mut shorter
            {
                *t = truncate_chars(full, chars);
            }
            shorter.to_json()
        };
        // The longest cut that fits (escaping makes bytes per character uneven).
        let (mut lo, mut hi) = (0usize, full.chars().count());
        let mut best = with(0);
        if best.len() > limit {
            return None;
        }
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            let json = with(mid);
            if json.len() <= limit {
                best = json;
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Some(best)
    }
}

/// At most `max` characters of `s`; a cut text ends with `…` (counted).
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Control characters (newlines in a command, say) shown as spaces: a notification
/// is one short line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// What a control request shows in a notification: the tool (for `can_use_tool`;
/// the request kind otherwise) and a short summary of the input — the command, the
/// file path, else a compact rendering.
pub fn describe(subtype: &str, request: &Value) -> (String, String) {
    let input = request.get("input");
    let field = |v: Option<&Value>, keys: &[&str]| -> Option<String> {
        keys.iter()
            .find_map(|k| v?.get(*k)?.as_str().map(str::to_string))
    };
    if subtype == "can_use_tool" {
        let tool = request
            .get("tool_name")
            .and_then(Value::as_str)
            .unwrap_or("tool")
            .to_string();
        let summary = field(
            input,
            &["command", "file_path", "notebook_path", "path", "url"],
        )
        .or_else(|| field(input, &["pattern", "query", "description"]))
        .or_else(|| input.map(compact))
        .unwrap_or_default();
        return (
            truncate_chars(&tool, 64),
            truncate_chars(&one_line(&summary), SUMMARY_MAX_CHARS),
        );
    }
    // A question or dialog the agent opened: its own words when it has them.
    let summary = field(Some(request), &["title", "message", "question", "prompt"])
        .or_else(|| input.map(compact))
        .unwrap_or_else(|| {
            let mut rest = request.clone();
            if let Some(o) = rest.as_object_mut() {
                o.remove("subtype");
            }
            compact(&rest)
        });
    let tool = request
        .get("tool_name")
        .and_then(Value::as_str)
        .unwrap_or(subtype);
    (
        truncate_chars(tool, 64),
        truncate_chars(&one_line(&summary), SUMMARY_MAX_CHARS),
    )
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn topic_is_32_url_safe_characters_of_the_sha256() {
        let t = topic("default", "944dcfbb-8cda-46f2-83c2-744878761bb5");
        assert_eq!(t.len(), 32);
        assert!(
            t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        // Known value: SHA-256("default/failed"), base64url, first 32 characters.
        let digest = Sha256::digest(b"default/failed");
        assert_eq!(topic("default", "failed"), B64.encode(digest)[..32]);
        assert_ne!(topic("default", "a"), topic("other", "a"));
    }

    #[test]
    fn payloads_have_the_contract_shapes() {
        let p = Payload::Permission {
            session: "default".into(),
            request_id: "r1".into(),
            tool: "Bash".into(),
            summary: "ls".into(),
            actions: vec![
                ActionToken {
                    action: "allow",
                    token: "a".into(),
                },
                ActionToken {
                    action: "deny",
                    token: "d".into(),
                },
            ],
        };
        let v: Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"kind":"permission","session":"default","request_id":"r1","tool":"Bash","summary":"ls",
                   "actions":[{"action":"allow","token":"a"},{"action":"deny","token":"d"}]})
        );
        let d = Payload::Dismiss {
            session: "default".into(),
            request_id: "r1".into(),
            by: None,
        };
        assert_eq!(
            d.to_json(),
            r#"{"kind":"dismiss","session":"default","request_id":"r1"}"#
        );
        assert_eq!(d.topic(), p.topic());
        let t = Payload::TurnEnded {
            session: "default".into(),
            prompt_id: "p".into(),
            duration_ms: 95000,
            cost_usd: Some(0.42),
        };
        assert_eq!(
            t.to_json(),
            r#"{"kind":"turn_ended","session":"default","prompt_id":"p","duration_ms":95000,"cost_usd":0.42}"#
        );
        let f = Payload::AgentFailed {
            session: "default".into(),
            detail: "x".into(),
        };
        assert_eq!(
            f.to_json(),
            r#"{"kind":"agent_failed","session":"default","detail":"x"}"#
        );
        assert_eq!(f.topic(), topic("default", "failed"));
    }

    #[test]
    fn summaries_name_the_command_or_the_file() {
        let bash = json!({"subtype":"can_use_tool","tool_name":"Bash","input":{"command":"rm -rf\nbuild","description":"clean"}});
        assert_eq!(
            describe("can_use_tool", &bash),
            ("Bash".into(), "rm -rf build".into())
        );
        let write = json!({"subtype":"can_use_tool","tool_name":"Write","input":{"file_path":"/p/x.txt","content":"..."}});
        assert_eq!(describe("can_use_tool", &write).1, "/p/x.txt");
        let other = json!({"subtype":"can_use_tool","tool_name":"mcp__x","input":{"a":1}});
        assert_eq!(describe("can_use_tool", &other).1, r#"{"a":1}"#);
        let long = json!({"subtype":"can_use_tool","tool_name":"Bash","input":{"command":"x".repeat(1000)}});
        let s = describe("can_use_tool", &long).1;
        assert_eq!(s.chars().count(), SUMMARY_MAX_CHARS);
        assert!(s.ends_with('…'));
        let ask = json!({"subtype":"elicitation","message":"Which branch?"});
        assert_eq!(
            describe("elicitation", &ask),
            ("elicitation".into(), "Which branch?".into())
        );
    }

    #[test]
    fn payloads_are_cut_to_fit_the_push_limit() {
        let p = Payload::Permission {
            session: "default".into(),
            request_id: "r1".into(),
            tool: "Bash".into(),
            summary: "\u{1}é".repeat(2000),
            actions: vec![],
        };
        let json = p.to_json_within(PUSH_PLAINTEXT_MAX).unwrap();
        assert!(json.len() <= PUSH_PLAINTEXT_MAX, "{}", json.len());
        assert!(json.len() > PUSH_PLAINTEXT_MAX / 2, "{}", json.len());
        let v: Value = serde_json::from_str(&json).unwrap();
        assert!(v["summary"].as_str().unwrap().ends_with('…'));
        // Nothing to shorten: does not fit.
        let huge = Payload::Dismiss {
            session: "default".into(),
            request_id: "r".repeat(5000),
            by: None,
        };
        assert_eq!(huge.to_json_within(PUSH_PLAINTEXT_MAX), None);
    }
}
