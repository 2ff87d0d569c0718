//! Rebuilding a session from its journal at startup: the head seq, the in-memory
//! tail, prompts that never finished, agent requests still pending, recent prompt
//! keys (for duplicate detection) and the conversation to resume.

use std::collections::{HashMap, VecDeque};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::journal::{JournalError, JournalReader};
use crate::ws::FrameText;

/// How long a prompt `key` protects against a resend (docs/protocol.md §4.4).
pub const PROMPT_KEY_TTL_MS: u64 = 10 * 60 * 1000;

/// A host-addressed request the agent opened and nobody closed.
#[derive(Debug, Clone)]
pub struct RecoveredRequest {
    pub request_id: String,
    pub subtype: String,
    pub input: Option<serde_json::Value>,
    pub raw: Box<RawValue>,
}

/// A prompt the journal shows as accepted but never finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPrompt {
    pub prompt_id: String,
    /// It had reached the agent (`relay.turn` started).
    pub started: bool,
}

/// What the journal says about the session.
#[derive(Debug, Default)]
pub struct Recovered {
    pub head: u64,
    pub tail: VecDeque<(u64, FrameText)>,
    pub tail_bytes: usize,
    /// Prompts with a `relay.prompt` but no `relay.turn` ended/aborted, in order.
    pub open_prompts: Vec<OpenPrompt>,
    pub pending: Vec<RecoveredRequest>,
    /// (fingerprint, key) → (prompt_id, time in ms).
    pub prompt_keys: HashMap<(String, String), (String, u64)>,
    pub conversation: Option<String>,
    /// The state the last `relay.state` announced (a session that opens asleep
    /// announces `asleep` only when this differs).
    pub last_state: Option<String>,
}

#[derive(Deserialize)]
struct FrameHead<'a> {
    #[serde(borrow)]
    event: &'a RawValue,
}

#[derive(Deserialize)]
struct EventHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    subtype: Option<String>,
    prompt_id: Option<String>,
    phase: Option<String>,
    request_id: Option<String>,
    key: Option<String>,
    fingerprint: Option<String>,
    session_id: Option<String>,
    request: Option<RequestHead>,
    state: Option<String>,
}

#[derive(Deserialize)]
struct RequestHead {
    subtype: Option<String>,
    input: Option<serde_json::Value>,
}

/// Scan the whole journal once.
pub fn recover(
    head: u64,
    journal: &JournalReader,
    tail_events: usize,
    tail_bytes: usize,
    now_ms: u64,
) -> Result<Recovered, JournalError> {
    let mut r = Recovered {
        head,
        ..Recovered::default()
    };
    let mut open: Vec<OpenPrompt> = Vec::new();
    let mut pending: Vec<RecoveredRequest> = Vec::new();
    journal.for_each(|rec| {
        let frame = match String::from_utf8(rec.frame) {
            Ok(f) => f,
            Err(_) => return true,
        };
        if let Ok(head) = serde_json::from_str::<FrameHead>(&frame)
            && let Ok(ev) = serde_json::from_str::<EventHead>(head.event.get())
        {
            match ev.kind.as_deref() {
                Some("relay.prompt") => {
                    if let Some(pid) = ev.prompt_id {
                        if let (Some(fp), Some(key)) = (ev.fingerprint, ev.key)
                            && now_ms.saturating_sub(rec.ts_ms) < PROMPT_KEY_TTL_MS
                        {
                            r.prompt_keys.insert((fp, key), (pid.clone(), rec.ts_ms));
                        }
                        open.push(OpenPrompt {
                            prompt_id: pid,
                            started: false,
                        });
                    }
                }
                Some("relay.turn") => {
                    if let Some(pid) = ev.prompt_id {
                        match ev.phase.as_deref() {
                            Some("ended" | "aborted" | "merged") => {
                                open.retain(|p| p.prompt_id != pid)
                            }
                            Some("started") => {
                                if let Some(p) = open.iter_mut().find(|p| p.prompt_id == pid) {
                                    p.started = true;
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Some("control_request") => {
                    if let (Some(request_id), Some(req)) = (ev.request_id, ev.request)
                        && let Ok(raw) = RawValue::from_string(head.event.get().to_string())
                    {
                        pending.push(RecoveredRequest {
                            request_id,
                            subtype: req.subtype.unwrap_or_default(),
                            input: req.input,
                            raw,
                        });
                    }
                }
                Some("control_cancel_request" | "relay.resolved" | "relay.cancelled") => {
                    if let Some(id) = ev.request_id {
                        pending.retain(|p| p.request_id != id);
                    }
                }
                Some("relay.state") => r.last_state = ev.state,
                Some("system")
                    if ev.subtype.as_deref() == Some("init") && ev.session_id.is_some() =>
                {
                    r.conversation = ev.session_id;
                }
                _ => {}
            }
        }
        r.tail_bytes += frame.len();
        r.tail.push_back((rec.seq, FrameText::from(frame)));
        while r.tail.len() > tail_events || (r.tail_bytes > tail_bytes && r.tail.len() > 1) {
            if let Some((_, old)) = r.tail.pop_front() {
                r.tail_bytes -= old.len();
            }
        }
        true
    })?;
    r.open_prompts = open;
    r.pending = pending;
    Ok(r)
}
