//! The stream-json host protocol of Claude Code: the lines the relay writes
//! (always built here, never taken from a client) and the few fields the relay
//! reads from what the agent writes.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// The `initialize` control request (also the liveness probe: the CLI answers it at
/// any time, mid-turn and with a permission prompt open).
pub fn initialize(request_id: &str) -> String {
    serde_json::json!({
        "type": "control_request",
        "request_id": request_id,
        "request": {"subtype": "initialize", "hooks": null},
    })
    .to_string()
}

/// The `interrupt` control request.
pub fn interrupt(request_id: &str) -> String {
    serde_json::json!({
        "type": "control_request",
        "request_id": request_id,
        "request": {"subtype": "interrupt"},
    })
    .to_string()
}

#[derive(Serialize)]
struct UserLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: UserMessage<'a>,
    parent_tool_use_id: Option<()>,
    session_id: &'static str,
    uuid: &'a str,
    /// `next` for a steering prompt (docs/protocol.md §10): the running turn takes it
    /// at its next tool boundary instead of queueing it as a turn of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<&'static str>,
}

#[derive(Serialize)]
struct UserMessage<'a> {
    role: &'static str,
    content: &'a RawValue,
}

/// A prompt as a user message; `uuid` is the relay's prompt_id.
pub fn user_prompt(content: &RawValue, prompt_id: &str) -> String {
    let line = UserLine {
        kind: "user",
        message: UserMessage {
            role: "user",
            content,
        },
        parent_tool_use_id: None,
        session_id: "",
        uuid: prompt_id,
        priority: None,
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// A steering prompt: a user message with `priority:"next"`, which the CLI folds
/// into the running turn (with the next tool result) and reports with
/// `command_lifecycle` for `prompt_id`, without a `result` of its own.
pub fn steering_prompt(content: &RawValue, prompt_id: &str) -> String {
    let line = UserLine {
        kind: "user",
        message: UserMessage {
            role: "user",
            content,
        },
        parent_tool_use_id: None,
        session_id: "",
        uuid: prompt_id,
        priority: Some("next"),
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// A successful answer to a control request the agent opened.
pub fn control_success(request_id: &str, response: &Value) -> String {
    serde_json::json!({
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": response},
    })
    .to_string()
}

/// The fields of an agent line the relay looks at. Everything else is relayed as is.
#[derive(Debug, Deserialize)]
pub struct LineHead<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub subtype: Option<std::borrow::Cow<'a, str>>,
    pub request_id: Option<String>,
    pub session_id: Option<String>,
    #[serde(borrow)]
    pub request: Option<&'a RawValue>,
    #[serde(borrow)]
    pub response: Option<&'a RawValue>,
    /// On `result` lines: what the conversation has cost so far.
    pub total_cost_usd: Option<f64>,
    /// On `system/task_*` lines: the background task.
    pub task_id: Option<String>,
    /// On `system/task_updated` lines: what changed (`status` among others).
    #[serde(borrow)]
    pub patch: Option<&'a RawValue>,
}

/// The part of a `task_updated` patch the relay looks at.
#[derive(Debug, Deserialize)]
struct TaskPatch {
    status: Option<String>,
}

/// Task statuses after which a background task no longer runs.
const TASK_ENDED: &[&str] = &["completed", "failed", "killed", "stopped"];

/// The parts of a host-addressed `control_request` the relay needs.
#[derive(Debug, Deserialize)]
pub struct RequestBody {
    pub subtype: Option<String>,
    pub input: Option<Value>,
}

/// The envelope of a `control_response` the agent sent to one of the relay's requests.
#[derive(Debug, Deserialize)]
pub struct ResponseEnvelope {
    pub subtype: Option<String>,
    pub request_id: Option<String>,
    pub error: Option<String>,
    #[serde(default)]
    pub pending_permission_requests: Vec<PendingListed>,
}

/// One request listed as pending in an initialize reply.
#[derive(Debug, Deserialize)]
pub struct PendingListed {
    pub request_id: Option<String>,
}

/// What an agent line is, for the relay's purposes.
#[derive(Debug)]
pub enum AgentLine {
    /// Not a JSON object: logged, not an event.
    NotJson,
    /// `keep_alive`: ignored.
    KeepAlive,
    /// An answer to one of the relay's own control requests: internal, not an event.
    ControlResponse(ResponseEnvelope),
    /// A request addressed to the host (permission prompt, dialog, ...).
    ControlRequest {
        request_id: String,
        subtype: String,
        input: Option<Value>,
    },
    /// The agent withdrew one of its requests.
    ControlCancel { request_id: String },
    /// `system`/`init`: carries the conversation's session_id.
    SystemInit { session_id: Option<String> },
    /// The end of a turn, with the cost the CLI reports (`total_cost_usd`).
    Result { cost_usd: Option<f64> },
    /// `system/task_started` (`running`), or `system/task_notification` or a
    /// `task_updated` to an end status (not `running`): a background task of the
    /// agent began or ended. Relayed as an event.
    Task { task_id: String, running: bool },
    /// Anything else: relayed as an event.
    Other,
}

/// Classify one agent stdout line.
pub fn classify(line: &[u8]) -> AgentLine {
    let head: LineHead<'_> = match serde_json::from_slice(line) {
        Ok(h) => h,
        Err(_) => return AgentLine::NotJson,
    };
    match head.kind.as_deref() {
        Some("keep_alive") => AgentLine::KeepAlive,
        Some("control_response") => {
            match head
                .response
                .and_then(|r| serde_json::from_str::<ResponseEnvelope>(r.get()).ok())
            {
                Some(env) => AgentLine::ControlResponse(env),
                None => AgentLine::Other,
            }
        }
        Some("control_request") => {
            let body = head
                .request
                .and_then(|r| serde_json::from_str::<RequestBody>(r.get()).ok());
            match (head.request_id, body) {
                (Some(request_id), Some(body)) => AgentLine::ControlRequest {
                    request_id,
                    subtype: body.subtype.unwrap_or_default(),
                    input: body.input,
                },
                _ => AgentLine::Other,
            }
        }
        Some("control_cancel_request") => match head.request_id {
            Some(request_id) => AgentLine::ControlCancel { request_id },
            None => AgentLine::Other,
        },
        Some("system") if head.subtype.as_deref() == Some("init") => AgentLine::SystemInit {
            session_id: head.session_id,
        },
        Some("result") => AgentLine::Result {
            cost_usd: head.total_cost_usd,
        },
        Some("system") => match (head.subtype.as_deref(), head.task_id) {
            (Some("task_started"), Some(task_id)) => AgentLine::Task {
                task_id,
                running: true,
            },
            (Some("task_notification"), Some(task_id)) => AgentLine::Task {
                task_id,
                running: false,
            },
            (Some("task_updated"), Some(task_id))
                if head
                    .patch
                    .and_then(|p| serde_json::from_str::<TaskPatch>(p.get()).ok())
                    .and_then(|p| p.status)
                    .is_some_and(|s| TASK_ENDED.contains(&s.as_str())) =>
            {
                AgentLine::Task {
                    task_id,
                    running: false,
                }
            }
            _ => AgentLine::Other,
        },
        _ => AgentLine::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_recorded_shapes() {
        assert!(matches!(classify(b"not json"), AgentLine::NotJson));
        assert!(matches!(classify(b"[1]"), AgentLine::NotJson));
        assert!(matches!(
            classify(br#"{"type":"keep_alive"}"#),
            AgentLine::KeepAlive
        ));
        let init = br#"{"type":"system","subtype":"init","cwd":"/x","session_id":"5d76"}"#;
        assert!(
            matches!(classify(init), AgentLine::SystemInit { session_id: Some(s) } if s == "5d76")
        );
        let result =
            br#"{"duration_api_ms":62,"session_id":"5d76","type":"result","subtype":"success"}"#;
        assert!(matches!(
            classify(result),
            AgentLine::Result { cost_usd: None }
        ));
        let result = br#"{"type":"result","subtype":"success","total_cost_usd":0.051796}"#;
        assert!(matches!(
            classify(result),
            AgentLine::Result { cost_usd: Some(c) } if (c - 0.051796).abs() < 1e-9
        ));
        let started = br#"{"type":"system","subtype":"task_started","task_id":"b1","description":"sleep 60"}"#;
        assert!(
            matches!(classify(started), AgentLine::Task { task_id, running: true } if task_id == "b1")
        );
        let done = br#"{"type":"system","subtype":"task_notification","task_id":"b1","status":"completed"}"#;
        assert!(matches!(
            classify(done),
            AgentLine::Task { running: false, .. }
        ));
        let killed = br#"{"type":"system","subtype":"task_updated","task_id":"b1","patch":{"status":"killed"}}"#;
        assert!(matches!(
            classify(killed),
            AgentLine::Task { running: false, .. }
        ));
        let progress = br#"{"type":"system","subtype":"task_updated","task_id":"b1","patch":{"description":"x"}}"#;
        assert!(matches!(classify(progress), AgentLine::Other));
        let req = br#"{"type":"control_request","request_id":"944d","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{"command":"ls"}}}"#;
        match classify(req) {
            AgentLine::ControlRequest {
                request_id,
                subtype,
                input,
            } => {
                assert_eq!(request_id, "944d");
                assert_eq!(subtype, "can_use_tool");
                assert_eq!(input, Some(serde_json::json!({"command":"ls"})));
            }
            other => panic!("{other:?}"),
        }
        let resp = br#"{"type":"control_response","response":{"subtype":"success","request_id":"req_1","pending_permission_requests":[{"type":"control_request","request_id":"abc"}],"response":{}}}"#;
        match classify(resp) {
            AgentLine::ControlResponse(env) => {
                assert_eq!(env.request_id.as_deref(), Some("req_1"));
                assert_eq!(
                    env.pending_permission_requests[0].request_id.as_deref(),
                    Some("abc")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(br#"{"type":"control_cancel_request","request_id":"abc"}"#),
            AgentLine::ControlCancel { request_id } if request_id == "abc"
        ));
        assert!(matches!(
            classify(br#"{"type":"assistant","message":{}}"#),
            AgentLine::Other
        ));
        assert!(matches!(
            classify(br#"{"type":"brand_new","x":1}"#),
            AgentLine::Other
        ));
    }

    #[test]
    fn built_lines_are_single_line_json() {
        let content = serde_json::value::to_raw_value("hi\nthere").unwrap();
        let line = user_prompt(&content, "p-1");
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["message"]["content"], "hi\nthere");
        assert_eq!(v["uuid"], "p-1");
        assert_eq!(v["session_id"], "");
        assert!(v["parent_tool_use_id"].is_null());
        assert!(v.get("priority").is_none());
        let v: Value = serde_json::from_str(&steering_prompt(&content, "p-2")).unwrap();
        assert_eq!(v["priority"], "next");
        assert_eq!(v["uuid"], "p-2");
        let v: Value = serde_json::from_str(&control_success(
            "r",
            &serde_json::json!({"behavior":"allow"}),
        ))
        .unwrap();
        assert_eq!(v["response"]["request_id"], "r");
        assert_eq!(v["response"]["response"]["behavior"], "allow");
    }
}
