//! The web page's protocol fixtures (web/tests/fixtures/protocol/) against the
//! Rust types: every request the page sends must be a `ClientMsg`, every frame
//! and relay event it handles a `ServerMsg` / `RelayEvent`, each with exactly the
//! fixture's fields (read, written again, compared as JSON), and every type the
//! Rust side has must have a fixture. web/tests/protocol-fixtures.test.js checks
//! the page's own builders and handlers against the same files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ccrelay::protocol::{
    CLIENT_MSG_TYPES, ClientMsg, RELAY_EVENT_TYPES, RelayEvent, SERVER_MSG_TYPES, ServerMsg,
    parse_server_frame,
};
use serde_json::Value;

fn fixtures(kind: &str) -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("web/tests/fixtures/protocol")
        .join(kind);
    let mut out: Vec<(PathBuf, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("a fixture reads");
            let value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display()));
            (p, value)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no fixtures in {}", dir.display());
    out
}

/// The file is named after its `type`, and every type listed has one file.
fn check_names(kind: &str, all: &[(PathBuf, Value)], types: &[&str]) {
    let mut seen = BTreeSet::new();
    for (path, value) in all {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        assert_eq!(
            value["type"],
            name,
            "{}: `type` and file name differ",
            path.display()
        );
        seen.insert(name.to_string());
    }
    let declared: BTreeSet<String> = types.iter().map(|t| t.to_string()).collect();
    assert_eq!(seen, declared, "{kind} fixtures vs the Rust types");
}

#[test]
fn every_request_fixture_is_a_client_msg_with_exactly_its_fields() {
    let all = fixtures("client");
    check_names("client", &all, CLIENT_MSG_TYPES);
    for (path, value) in &all {
        let msg: ClientMsg = serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("{}: not a ClientMsg: {e}", path.display()));
        let back = serde_json::to_value(&msg).expect("a request serializes");
        assert_eq!(
            &back,
            value,
            "{}: fields differ from ClientMsg's",
            path.display()
        );
        // And the server accepts it.
        ccrelay::protocol::parse_request(&value.to_string())
            .unwrap_or_else(|e| panic!("{}: refused by the server: {e}", path.display()));
    }
}

#[test]
fn every_server_fixture_is_a_server_msg_with_exactly_its_fields() {
    let all = fixtures("server");
    check_names("server", &all, SERVER_MSG_TYPES);
    for (path, value) in &all {
        let msg: ServerMsg = parse_server_frame(&value.to_string())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .unwrap_or_else(|| panic!("{}: a type ServerMsg does not know", path.display()));
        let back: Value = serde_json::from_str(&msg.to_json()).expect("JSON");
        assert_eq!(
            &back,
            value,
            "{}: fields differ from ServerMsg's",
            path.display()
        );
    }
}

#[test]
fn every_event_fixture_is_a_relay_event_with_exactly_its_fields() {
    let all = fixtures("event");
    check_names("event", &all, RELAY_EVENT_TYPES);
    for (path, value) in &all {
        let event = RelayEvent::parse(&value.to_string())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .unwrap_or_else(|| panic!("{}: not a relay event", path.display()));
        let back = serde_json::to_value(&event).expect("an event serializes");
        assert_eq!(
            &back,
            value,
            "{}: fields differ from RelayEvent's",
            path.display()
        );
    }
}

/// The comparison above can fail: a field the type lacks, or one it requires
/// that the fixture lacks, is caught.
#[test]
fn an_extra_or_missing_field_is_caught() {
    let extra: ClientMsg =
        serde_json::from_str(r#"{"type":"ping","id":1,"extra":true}"#).expect("parses");
    assert_ne!(
        serde_json::to_value(&extra).unwrap(),
        serde_json::json!({"type":"ping","id":1,"extra":true})
    );
    assert!(parse_server_frame(r#"{"type":"pong","id":1}"#).is_ok());
    assert!(parse_server_frame(r#"{"type":"detached","id":1}"#).is_err());
    assert!(matches!(
        parse_server_frame(r#"{"type":"brand.new"}"#),
        Ok(None)
    ));
}
