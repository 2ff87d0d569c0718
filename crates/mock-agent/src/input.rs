//! stdin: a reader thread that turns NDJSON lines into [`Input`]s.
//!
//! Like the real CLI, a line that is not JSON, or a `user` line without a
//! proper message, is fatal: a diagnostic on stderr and exit 1 at once.
//! Empty lines, `keep_alive` and unknown types are ignored. Nothing here
//! panics on odd input.

use std::io::BufRead;
use std::sync::mpsc::Sender;

use serde_json::Value;

use super::out;

/// A prompt written by the host.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The text (string content, or the text blocks joined by newlines).
    pub text: String,
    /// The `message.content` exactly as received, as JSON text.
    pub content_json: String,
    /// The host-chosen `uuid`, if any.
    pub uuid: Option<String>,
    /// `priority`, if any (`"next"` on a steering prompt).
    pub priority: Option<String>,
}

/// How the host answered a can_use_tool request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `subtype:"success"` with this inner `response` (a PermissionResult).
    Success(Value),
    /// `subtype:"error"` with this message.
    Error(String),
}

/// One meaningful stdin event.
#[derive(Debug, Clone)]
pub enum Input {
    /// `{"type":"user",…}`.
    Prompt(Prompt),
    /// `{"type":"control_request",…}`: the request_id and the `request` object.
    Control {
        /// Echoed in the response.
        request_id: String,
        /// The `request` object (has `subtype`).
        request: Value,
    },
    /// `{"type":"control_response",…}` for one of the mock's requests.
    Response {
        /// The mock's request id it answers.
        request_id: String,
        /// The answer.
        reply: Reply,
    },
    /// stdin reached end of file (or failed).
    Eof,
}

/// Reads stdin until EOF, sending every event to `tx`. Exits the process on fatal lines.
pub fn spawn_reader(tx: Sender<Input>) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = lock.read_until(b'\n', &mut buf).unwrap_or(0);
            if out::is_hung() {
                out::park_forever();
            }
            if n == 0 {
                let _ = tx.send(Input::Eof);
                return;
            }
            match parse_line(&buf) {
                Ok(Some(input)) => {
                    if tx.send(input).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(message) => {
                    eprintln!("{message}");
                    out::exit(1);
                }
            }
        }
    });
}

/// Parses one stdin line: `Ok(None)` to ignore it, `Err(diagnostic)` when it is fatal.
pub fn parse_line(raw: &[u8]) -> Result<Option<Input>, String> {
    let line = trim_line(raw);
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(line).map_err(|_| {
        let chars = String::from_utf8_lossy(line).chars().count();
        format!("Error parsing streaming input line (type=unknown, {chars} chars): SyntaxError")
    })?;
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "user" => parse_prompt(&value).map(|p| Some(Input::Prompt(p))),
        "control_request" => {
            let request_id = string_of(value.get("request_id"));
            let request = value.get("request").cloned().unwrap_or(Value::Null);
            Ok(Some(Input::Control {
                request_id,
                request,
            }))
        }
        "control_response" => {
            let Some(resp) = value.get("response") else {
                return Ok(None);
            };
            let request_id = string_of(resp.get("request_id"));
            let reply = match resp.get("subtype").and_then(Value::as_str) {
                Some("success") => {
                    Reply::Success(resp.get("response").cloned().unwrap_or(Value::Null))
                }
                _ => Reply::Error(
                    resp.get("error")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown error")
                        .to_string(),
                ),
            };
            Ok(Some(Input::Response { request_id, reply }))
        }
        // keep_alive, control_cancel_request (the host withdrawing its own request)
        // and anything unknown: ignored, the session goes on.
        _ => Ok(None),
    }
}

fn trim_line(raw: &[u8]) -> &[u8] {
    let mut line = raw;
    while let [rest @ .., b'\n' | b'\r'] = line {
        line = rest;
    }
    line
}

fn string_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn parse_prompt(value: &Value) -> Result<Prompt, String> {
    let message = value.get("message");
    let role = message.and_then(|m| m.get("role"));
    match role.and_then(Value::as_str) {
        Some("user") => {}
        Some(other) => {
            return Err(format!(
                "Error: Expected message role 'user', got '{other}'"
            ));
        }
        None => return Err("Error: Expected message role 'user', got 'undefined'".to_string()),
    }
    let content = message
        .and_then(|m| m.get("content"))
        .cloned()
        .unwrap_or(Value::Null);
    let text = match &content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    };
    let uuid = value
        .get("uuid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_string);
    let priority = value
        .get("priority")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Prompt {
        text,
        content_json: content.to_string(),
        uuid,
        priority,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_lines() {
        assert!(matches!(parse_line(b"\n"), Ok(None)));
        assert!(matches!(parse_line(br#"{"type":"keep_alive"}"#), Ok(None)));
        assert!(matches!(
            parse_line(br#"{"type":"no_such_type","foo":1}"#),
            Ok(None)
        ));
        assert!(matches!(parse_line(br#"[1,2]"#), Ok(None)));
        let err = parse_line(b"this is not json {\n")
            .err()
            .unwrap_or_default();
        assert_eq!(
            err,
            "Error parsing streaming input line (type=unknown, 18 chars): SyntaxError"
        );
        let err = parse_line(br#"{"type":"user"}"#).err().unwrap_or_default();
        assert_eq!(err, "Error: Expected message role 'user', got 'undefined'");
        let Ok(Some(Input::Prompt(p))) = parse_line(
            br#"{"type":"user","message":{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},"uuid":"u1"}"#,
        ) else {
            panic!("not a prompt");
        };
        assert_eq!(p.text, "a\nb");
        assert_eq!(p.uuid.as_deref(), Some("u1"));
    }
}
