//! What `/healthz` and `/readyz` may say to whom.
//!
//! Owns: the rule that only a request from loopback, not forwarded by a proxy,
//! gets the details (pids, counts, memory, uptime, version, reasons); anyone else
//! gets what a load balancer needs: `/healthz` its status, `/readyz` `ready` and each
//! session's `state` (docs/protocol.md §1.1, §1.5). Must not: compute the details (server does).
//!
//! The caller is the client address the server uses everywhere (the forwarded
//! client behind a `--trusted-proxy`, else the TCP peer). A reverse proxy on the
//! same host makes every request look local, so a request carrying forwarding
//! headers (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`) is treated as coming from
//! outside whatever its socket says, trusted proxy or not.

use std::net::IpAddr;

use axum::http::HeaderMap;
use serde_json::{Map, Value, json};

/// Headers a proxy adds; their presence means "not a local caller".
const FORWARDING_HEADERS: &[&str] = &["forwarded", "x-forwarded-for", "x-real-ip"];

/// Whether a request from `peer` with `headers` may see the details.
pub fn full_detail(peer: IpAddr, headers: &HeaderMap) -> bool {
    peer.to_canonical().is_loopback()
        && !FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h))
}

/// `/healthz` for outside callers: the process serves, nothing more.
pub fn healthz_minimal() -> Value {
    json!({"status": "ok"})
}

/// `/readyz` for outside callers: `ready` and each session's `state` only.
pub fn readyz_minimal(ready: bool, sessions: &Map<String, Value>) -> Value {
    let sessions: Map<String, Value> = sessions
        .iter()
        .map(|(name, s)| {
            let state = s.get("state").cloned().unwrap_or(Value::Null);
            (name.clone(), json!({"state": state}))
        })
        .collect();
    json!({"ready": ready, "sessions": sessions})
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_loopback_without_forwarding_headers_gets_details() {
        let none = HeaderMap::new();
        for local in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            assert!(full_detail(local.parse().unwrap(), &none), "{local}");
        }
        for outside in [
            "192.0.2.2",
            "10.0.0.1",
            "::ffff:192.0.2.2",
            "fd00::2",
            "0.0.0.0",
        ] {
            assert!(!full_detail(outside.parse().unwrap(), &none), "{outside}");
        }
        for h in ["forwarded", "x-forwarded-for", "x-real-ip"] {
            let mut headers = HeaderMap::new();
            headers.insert(h, HeaderValue::from_static("203.0.113.9"));
            assert!(!full_detail("127.0.0.1".parse().unwrap(), &headers), "{h}");
        }
    }

    #[test]
    fn minimal_bodies_hold_only_what_a_load_balancer_needs() {
        assert_eq!(healthz_minimal(), json!({"status": "ok"}));
        let mut sessions = Map::new();
        sessions.insert(
            "default".into(),
            json!({"state": "idle", "agent_pid": 42, "clients": 3, "detail": "x"}),
        );
        assert_eq!(
            readyz_minimal(true, &sessions),
            json!({"ready": true, "sessions": {"default": {"state": "idle"}}})
        );
    }
}
