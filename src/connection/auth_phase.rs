//! The authentication phase of one connection (PROTOCOL.md §3): the challenge,
//! the one `auth.response`, the deadline, and the identity that results.
//!
//! Owns: everything a connection does before `auth.ok`. Must not: read or write
//! WebSocket frames itself (the run loop in `mod.rs` hands it parsed requests and
//! wakes it when its deadline passes) or touch session state.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::auth::{self, Challenge};
use crate::protocol::{ClientRequest, ErrorCode, Inbound, ServerMsg, close_code};
use crate::session::{ClientHandle, ClientInfo};

use super::{Connection, Flow};

/// State of a connection that is not yet authenticated.
pub(super) struct AuthPhase {
    pub(super) challenge: Challenge,
    deadline: tokio::time::Instant,
}

/// Why the auth phase woke the run loop.
pub(super) enum AuthWake {
    /// The challenge expired without a valid response.
    Deadline,
}

impl AuthPhase {
    pub(super) fn new(server_id: &str, ttl: Duration) -> Self {
        let challenge = Challenge::new(server_id, ttl);
        let deadline = tokio::time::Instant::from_std(challenge.expires_at);
        AuthPhase {
            challenge,
            deadline,
        }
    }

    /// Resolves when the run loop must act for the auth phase.
    pub(super) async fn wait(&mut self) -> AuthWake {
        tokio::time::sleep_until(self.deadline).await;
        AuthWake::Deadline
    }
}

impl Connection {
    pub(super) fn send_challenge(&mut self) {
        let c = &self.auth.challenge;
        let msg = ServerMsg::AuthChallenge {
            protocol: crate::protocol::PROTOCOL_VERSION,
            server_id: c.server_id.clone(),
            nonce: c.nonce.clone(),
            namespace: auth::NAMESPACE,
            expires_in_ms: c.ttl.as_millis() as u64,
            sign: c.sign.clone(),
        };
        let _ = self.outbox.frame("auth.challenge", msg.to_json());
        tracing::debug!(
            tls_exporter = self.channel_binding.is_some(),
            "challenge sent"
        );
    }

    /// The auth phase woke up; `Some(reason)` ends the connection with that close reason.
    pub(super) fn on_auth_wake(&mut self, wake: AuthWake) -> Option<&'static str> {
        match wake {
            AuthWake::Deadline => {
                tracing::info!("authentication timed out");
                self.count_auth("timeout", "none");
                self.error(
                    None,
                    ErrorCode::AuthTimeout,
                    "no valid auth.response before the challenge expired",
                );
                self.ordered_close(close_code::POLICY, "authentication timed out");
                Some("auth_timeout")
            }
        }
    }

    pub(super) async fn on_auth_phase(&mut self, inbound: Inbound) -> Flow {
        let ClientRequest::AuthResponse {
            signature,
            public_key,
            device,
        } = inbound.request
        else {
            self.error(
                inbound.id,
                ErrorCode::NotAuthenticated,
                "authenticate first: answer the challenge with auth.response",
            );
            return Flow::Close(close_code::POLICY, "not authenticated".into());
        };
        let keys = self.shared.keys.current();
        let verdict = auth::verify_response(
            &self.auth.challenge,
            &signature,
            public_key.as_deref(),
            self.peer.ip(),
            &keys,
            SystemTime::now(),
        );
        let identity = match verdict {
            Ok(identity) => identity,
            Err(e) => {
                self.shared.throttle.record_failure(self.peer.ip());
                self.count_auth("failed", signature_key_type(&signature));
                tracing::warn!(reason = %e, reason_label = e.reason_label(), "authentication failed");
                self.error(inbound.id, ErrorCode::AuthFailed, "authentication failed");
                return Flow::Close(close_code::POLICY, "authentication failed".into());
            }
        };
        self.count_auth("ok", &identity.key_type);
        let client_id = uuid::Uuid::new_v4().simple().to_string();
        let span = tracing::Span::current();
        span.record("client_id", client_id.as_str());
        span.record("fingerprint", identity.fingerprint.as_str());
        tracing::info!(role = identity.role.as_str(), key_type = %identity.key_type, device = device.as_deref().unwrap_or("-"), comment = %identity.comment, "authenticated");
        let info = ClientInfo {
            conn_id: self.conn_id,
            client_id: client_id.clone(),
            fingerprint: identity.fingerprint.clone(),
            comment: identity.comment.clone(),
            device,
            role: identity.role,
        };
        let handle = ClientHandle {
            info: Arc::new(info),
            outbox: self.outbox.clone(),
        };
        let msg = ServerMsg::AuthOk {
            id: inbound.id,
            client_id,
            fingerprint: identity.fingerprint.clone(),
            role: identity.role,
            sessions: self.session_summaries(false),
        };
        // auth.ok is the direct reply to auth.response, so it echoes the request id (§2).
        self.reply("auth.ok", msg);
        self.identity = Some((identity, handle));
        self.gauge.authenticated();
        Flow::Continue
    }
}

/// The key type inside an SSHSIG, for the metrics label of a failed attempt
/// ("unknown" when the signature does not even parse). A bounded set.
fn signature_key_type(armored: &str) -> &'static str {
    if armored.len() > auth::MAX_ARMOR_BYTES {
        return "unknown";
    }
    match ssh_key::SshSig::from_pem(armored.trim()) {
        Ok(sig) => auth::key_type_name(sig.public_key()),
        Err(_) => "unknown",
    }
}
