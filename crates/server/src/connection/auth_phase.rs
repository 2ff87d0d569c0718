//! The authentication phase of one connection (docs/protocol.md §3): the challenge,
//! the one `auth.response` or `pair.request`, the deadline (the auth timeout, or
//! `--pair-timeout` while a pair request waits), the identity that results, and
//! the owner side of pairing (`pair.requested` delivery, `pair.respond`).
//!
//! Order of one attempt, so that a stranger costs almost nothing: the throttle
//! takes a unit of the address's budget when the attempt arrives (none left:
//! `rate_limited`, close 1008, nothing checked); the signature is parsed and
//! its key type bounded (DSA, RSA size and exponent); the key is looked up in
//! the keys in force (a key in no file is refused here, without any signature
//! arithmetic); only then is the signature verified, on the verification pool
//! (off the async workers, bounded). `auth.ok` gives the unit back.
//!
//! Owns: everything a connection does before `auth.ok`, and `pair.respond`.
//! Must not: read or write WebSocket frames itself (the run loop in `mod.rs`
//! hands it parsed requests and wakes it when its deadline passes or a pair
//! request is answered) or touch session state.
//!
//! A pair request passes the same cheap checks, then is refused at once when an
//! owner blocked its address; after its signature verified (never before, so
//! nobody learns which keys are listed) it is refused when any keys file lists
//! its key already, so pairing never lifts a listed key's options. With a valid
//! invite it is allowed at once; otherwise it waits for an owner.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use crate::auth::{self, AuthError, Candidate, Challenge, Identity, Role};
use crate::metrics::{AuthResult, ClosedReason, NO_KEY_TYPE, UNKNOWN_KEY_TYPE};
use crate::names::{Arrival, Origin, ServerNames};
use crate::pairing::{self, OpenError, Outcome, OwnerGuard, PairTicket};
use crate::session::{ClientHandle, ClientInfo};
use ccrelay_protocol::{
    ClientRequest, ErrorCode, FrameType, Inbound, Limits, RequestId, ServerMsg, close_code,
};

use super::{Connection, Flow};

/// State of the authentication phase (and, once authenticated as an owner, the
/// registration that delivers `pair.requested`).
pub(super) struct AuthPhase {
    pub(super) challenge: Challenge,
    deadline: tokio::time::Instant,
    /// A pair request waiting for an owner (boxed: rare, and 280 bytes that
    /// every connection would otherwise carry for its whole life).
    pair: Option<Box<WaitingPair>>,
    /// Set while this connection is an authenticated owner.
    owner: Option<OwnerGuard>,
}

struct WaitingPair {
    ticket: PairTicket,
    rx: oneshot::Receiver<Outcome>,
    candidate: Candidate,
    device: String,
}

/// Why the auth phase woke the run loop.
pub(super) enum AuthWake {
    /// The challenge expired without a valid response.
    Deadline,
    /// The pair timeout passed with nobody answering.
    PairExpired,
    /// An owner answered the pair request.
    PairDecided(Outcome),
}

impl AuthPhase {
    pub(super) fn new(server_id: &str, ttl: Duration) -> Self {
        let challenge = Challenge::new(server_id, ttl);
        let deadline = tokio::time::Instant::from_std(challenge.expires_at);
        AuthPhase {
            challenge,
            deadline,
            pair: None,
            owner: None,
        }
    }

    /// Resolves when the run loop must act for the auth phase. Cancel-safe.
    pub(super) async fn wait(&mut self) -> AuthWake {
        match &mut self.pair {
            Some(pair) => tokio::select! {
                _ = tokio::time::sleep_until(self.deadline) => AuthWake::PairExpired,
                // A dropped sender (never expected) means nobody will allow it.
                outcome = &mut pair.rx => AuthWake::PairDecided(outcome.unwrap_or(Outcome::Denied)),
            },
            None => {
                tokio::time::sleep_until(self.deadline).await;
                AuthWake::Deadline
            }
        }
    }
}

/// The fields of one `pair.request`.
struct PairAttempt {
    signature: String,
    public_key: String,
    device: String,
    bound: Bound,
    invite: Option<String>,
}

/// What an attempt that passed the cheap checks still has to pass.
struct Checked {
    candidate: Candidate,
    signed: String,
    /// The origin the signature is bound to (docs/protocol.md, "Origin binding"), as
    /// received and parsed; whether it is one of this server's names is checked once
    /// the signature verifies.
    origin: Option<(String, Origin)>,
    /// A bare signature from a key named by `--allow-unbound-auth` (logged as a warning).
    unbound: bool,
}

impl Connection {
    pub(super) fn send_challenge(&mut self) {
        self.auth.challenge = self
            .auth
            .challenge
            .clone()
            .with_channel_binding(self.channel_binding);
        let c = &self.auth.challenge;
        let msg = ServerMsg::AuthChallenge {
            protocol: ccrelay_protocol::PROTOCOL_VERSION,
            server_id: c.server_id.clone(),
            nonce: c.nonce.clone(),
            namespace: auth::NAMESPACE.into(),
            expires_in_ms: c.ttl.as_millis() as u64,
            sign: c.sign.clone(),
            channel_binding: c.offered_binding().map(Into::into),
            bindings: auth::offered_bindings(c.channel_binding.is_some()),
        };
        let _ = self.outbox.frame(FrameType::AuthChallenge, msg.to_json());
    }

    /// The auth phase woke up; `Some(reason)` ends the connection with that close reason.
    pub(super) fn on_auth_wake(&mut self, wake: AuthWake) -> Option<ClosedReason> {
        match wake {
            AuthWake::Deadline => {
                tracing::info!("authentication timed out");
                self.shared.throttle.record_failure(self.peer.ip());
                self.count_auth(AuthResult::Timeout, NO_KEY_TYPE);
                self.error(
                    None,
                    ErrorCode::AuthTimeout,
                    "no valid auth.response before the challenge expired",
                );
                self.ordered_close(close_code::POLICY, "authentication timed out");
                Some(ClosedReason::AuthTimeout)
            }
            AuthWake::PairExpired => {
                if let Some(pair) = self.auth.pair.take() {
                    tracing::info!(
                        pair_id = pair.ticket.pair_id(),
                        "pair request expired unanswered"
                    );
                    pair.ticket.expire();
                }
                self.error(None, ErrorCode::AuthFailed, "authentication failed");
                self.ordered_close(close_code::POLICY, "pair request expired");
                Some(ClosedReason::PairTimeout)
            }
            AuthWake::PairDecided(outcome) => {
                let pair = self.auth.pair.take()?;
                match outcome {
                    Outcome::Allowed { role } => {
                        let keys = self.shared.keys.current();
                        let identity =
                            match pair
                                .candidate
                                .authorize(&keys, self.peer.ip(), SystemTime::now())
                            {
                                Ok(entry) => pair.candidate.identity(&entry),
                                // The file was appended and reloaded before the outcome
                                // was sent; if another edit raced it, the role granted stands
                                // until the next key check closes the connection.
                                Err(_) => pair.candidate.identity_with(role, &pair.device),
                            };
                        tracing::info!(
                            pair_id = pair.ticket.pair_id(),
                            role = identity.role.as_str(),
                            "pair request allowed"
                        );
                        self.authenticated(identity, Some(pair.device), None);
                        None
                    }
                    Outcome::Denied => {
                        tracing::info!(pair_id = pair.ticket.pair_id(), "pair request denied");
                        self.error(None, ErrorCode::AuthFailed, "authentication failed");
                        self.ordered_close(close_code::POLICY, "pair request denied");
                        Some(ClosedReason::PairDenied)
                    }
                }
            }
        }
    }

    pub(super) async fn on_auth_phase(&mut self, inbound: Inbound) -> Flow {
        let Inbound { id, request } = inbound;
        match request {
            ClientRequest::Ping => {
                // A ping is answered at any time (§1).
                self.reply(FrameType::Pong, ServerMsg::Pong { id });
                Flow::Continue
            }
            ClientRequest::AuthResponse { .. } | ClientRequest::PairRequest { .. }
                if self.auth.pair.is_some() =>
            {
                self.shared.throttle.record_failure(self.peer.ip());
                self.error(
                    id,
                    ErrorCode::NotAuthenticated,
                    "a pair request is already waiting on this connection",
                );
                Flow::Close(close_code::POLICY, "not authenticated".into())
            }
            ClientRequest::AuthResponse {
                signature,
                public_key,
                device,
                channel_binding,
                origin,
            } => {
                let bound = Bound {
                    channel_binding,
                    origin,
                };
                self.on_auth_response(id, signature, public_key, device, bound)
                    .await
            }
            ClientRequest::PairRequest {
                signature,
                public_key,
                device,
                channel_binding,
                origin,
                invite,
            } => {
                let attempt = PairAttempt {
                    signature,
                    public_key,
                    device,
                    bound: Bound {
                        channel_binding,
                        origin,
                    },
                    invite,
                };
                self.on_pair_request(id, attempt).await
            }
            _ => {
                self.shared.throttle.record_failure(self.peer.ip());
                self.error(
                    id,
                    ErrorCode::NotAuthenticated,
                    "authenticate first: answer the challenge with auth.response",
                );
                Flow::Close(close_code::POLICY, "not authenticated".into())
            }
        }
    }

    /// Take the throttle's unit for an arriving attempt; false (after sending
    /// `rate_limited`) when the address has no budget left.
    fn take_attempt(&mut self, id: &Option<RequestId>) -> bool {
        if let Err(wait) = self.shared.throttle.try_take(self.peer.ip()) {
            tracing::info!(
                retry_after_ms = wait.as_millis() as u64,
                "authentication attempt refused: throttled"
            );
            self.count_auth(AuthResult::Throttled, UNKNOWN_KEY_TYPE);
            self.error(
                id.clone(),
                ErrorCode::RateLimited,
                "too many failed authentications from this address",
            );
            return false;
        }
        true
    }

    /// The cheap checks of an attempt: parse, key type bounds, claimed key, what
    /// the signature is bound to (an unbound one only for a key named by
    /// `--allow-unbound-auth`). On refusal, the candidate when the signature parsed
    /// (for the log line).
    fn check_cheaply(
        &self,
        signature: &str,
        public_key: Option<&str>,
        bound: &Bound,
    ) -> Result<Checked, (AuthError, Option<Box<Candidate>>)> {
        let candidate =
            Candidate::parse(&self.auth.challenge, signature, public_key).map_err(|e| (e, None))?;
        let refuse = |e: AuthError, candidate: Candidate| Err((e, Some(Box::new(candidate))));
        let origin = match bound.origin.as_deref().map(|o| (o, Origin::parse(o))) {
            None => None,
            Some((text, Ok(parsed))) => Some((text.to_string(), parsed)),
            Some((text, Err(e))) => {
                let origin = text.chars().take(crate::names::MAX_ORIGIN_BYTES).collect();
                return refuse(
                    AuthError::BadOrigin {
                        origin,
                        why: e.to_string(),
                    },
                    candidate,
                );
            }
        };
        let signed = match self.auth.challenge.signed_text(
            bound.origin.as_deref(),
            bound.channel_binding.as_deref(),
            self.shared.config.require_channel_binding,
        ) {
            Ok(signed) => signed,
            Err(e) => return refuse(e, candidate),
        };
        if signed.unbound
            && !self
                .shared
                .config
                .allow_unbound_auth
                .contains(&candidate.fingerprint())
        {
            return refuse(AuthError::Unbound, candidate);
        }
        Ok(Checked {
            candidate,
            signed: signed.text,
            origin,
            unbound: signed.unbound,
        })
    }

    /// Whether the origin a verified signature names is one of this server's names
    /// on this connection (docs/protocol.md, "Origin binding").
    fn check_origin(&self, checked: &Checked) -> Result<(), AuthError> {
        let Some((text, origin)) = &checked.origin else {
            return Ok(());
        };
        let arrival = Arrival {
            tls: self.tls,
            local: self.local,
            peer: self.peer.ip(),
        };
        self.shared
            .names
            .admit(origin, &arrival)
            .map_err(|why| AuthError::OriginRefused {
                origin: text.clone(),
                why: why.to_string(),
                admit_with: ServerNames::admit_with(origin, why),
            })
    }

    /// A login with a bare signature (a key named by `--allow-unbound-auth`) is a
    /// warning every time: it can be relayed by a server the client was tricked into.
    fn warn_if_unbound(&self, checked: &Checked) {
        if checked.unbound {
            tracing::warn!(
                fingerprint = %checked.candidate.fingerprint(),
                "authenticated with a signature bound to no origin (--allow-unbound-auth): such a signature could have been relayed from another server; update the client"
            );
        }
    }

    /// The signature arithmetic, on the verification pool; counted.
    async fn verify(&self, checked: &Checked) -> Result<(), AuthError> {
        self.shared.metrics.auth_signature_verifications.inc();
        self.shared
            .verifier
            .verify(
                checked.candidate.clone(),
                checked.signed.clone().into_bytes(),
            )
            .await
    }

    /// [`Self::verify`], then the challenge must still be alive (a verification
    /// that waited for the pool past the expiry does not count), then the origin
    /// the signature names must be one of this server's names.
    async fn verify_in_time(&self, checked: &Checked) -> Result<(), AuthError> {
        self.verify(checked).await?;
        if checked.candidate_expired(&self.auth.challenge) {
            return Err(AuthError::ChallengeExpired);
        }
        self.check_origin(checked)
    }

    /// The refusal's log line: the reason, and the key's fingerprint and type
    /// whenever the signature parsed (even when its key type is refused).
    fn log_refusal(&self, e: &AuthError, candidate: Option<&Candidate>, signature: &str) {
        let described = match candidate {
            Some(c) => Some((c.fingerprint(), c.key_type())),
            None => auth::describe_signature(signature),
        };
        match described {
            Some((fingerprint, key_type)) => tracing::warn!(
                reason = %e,
                reason_label = e.reason_label(),
                fingerprint = %fingerprint,
                key_type,
                "authentication failed"
            ),
            None => {
                tracing::warn!(reason = %e, reason_label = e.reason_label(), "authentication failed")
            }
        }
    }

    /// What `auth.response` and `pair.request` both start with: take a unit of the
    /// throttle's budget, then the checks that cost no signature arithmetic. On
    /// refusal the error is sent and logged, and the flow to return is given.
    fn admit(
        &mut self,
        id: &Option<RequestId>,
        signature: &str,
        public_key: Option<&str>,
        bound: &Bound,
    ) -> Result<Checked, Flow> {
        if !self.take_attempt(id) {
            return Err(Flow::Close(close_code::POLICY, "throttled".into()));
        }
        self.check_cheaply(signature, public_key, bound)
            .map_err(|(e, candidate)| {
                self.log_refusal(&e, candidate.as_deref(), signature);
                let key_type =
                    candidate.map_or_else(|| signature_key_type(signature), |c| c.key_type());
                self.refuse(id.clone(), key_type)
            })
    }

    fn refuse(&self, id: Option<RequestId>, key_type: &str) -> Flow {
        self.count_auth(AuthResult::Failed, key_type);
        self.error(id, ErrorCode::AuthFailed, "authentication failed");
        Flow::Close(close_code::POLICY, "authentication failed".into())
    }

    async fn on_auth_response(
        &mut self,
        id: Option<RequestId>,
        signature: String,
        public_key: Option<String>,
        device: Option<String>,
        bound: Bound,
    ) -> Flow {
        let checked = match self.admit(&id, &signature, public_key.as_deref(), &bound) {
            Ok(c) => c,
            Err(flow) => return flow,
        };
        let key_type = checked.candidate.key_type();
        // Look the key up before any signature arithmetic.
        let keys = self.shared.keys.current();
        let entry = match checked
            .candidate
            .authorize(&keys, self.peer.ip(), SystemTime::now())
        {
            Ok(entry) => entry,
            Err(e) => {
                self.log_refusal(&e, Some(&checked.candidate), &signature);
                return self.refuse(id, key_type);
            }
        };
        if let Err(e) = self.verify_in_time(&checked).await {
            self.log_refusal(&e, Some(&checked.candidate), &signature);
            return self.refuse(id, key_type);
        }
        self.warn_if_unbound(&checked);
        let identity = checked.candidate.identity(&entry);
        self.authenticated(identity, device, id);
        Flow::Continue
    }

    async fn on_pair_request(&mut self, id: Option<RequestId>, attempt: PairAttempt) -> Flow {
        let PairAttempt {
            signature,
            public_key,
            device,
            bound,
            invite,
        } = attempt;
        let checked = match self.admit(&id, &signature, Some(&public_key), &bound) {
            Ok(c) => c,
            Err(flow) => return flow,
        };
        let key_type = checked.candidate.key_type();
        // Refused before any signature arithmetic: an owner's block says
        // nothing about the key, so nothing is learnt from it.
        if self.shared.pairing.is_blocked(self.peer.ip()) {
            return self.refuse_pair(id, OpenError::Blocked, &checked.candidate.fingerprint());
        }
        // The key is checked against itself, not the keys files; an sk- key
        // must still show user presence.
        if let Err(e) = checked.candidate.check_presence() {
            self.log_refusal(&e, Some(&checked.candidate), &signature);
            return self.refuse(id, key_type);
        }
        if let Err(e) = self.verify_in_time(&checked).await {
            self.log_refusal(&e, Some(&checked.candidate), &signature);
            return self.refuse(id, key_type);
        }
        self.warn_if_unbound(&checked);
        let fingerprint = checked.candidate.fingerprint();
        // Only now that the signature verified: a listed key fails like any
        // failed authentication, so the answer reveals nothing to whoever
        // does not hold the private key, and pairing never replaces a listed
        // key's options (`from=`, `expiry-time=`, a refusing option).
        if let Some(entry) = self.shared.keys.current().listing(checked.candidate.key()) {
            tracing::warn!(
                fingerprint = %fingerprint,
                key_type,
                file = %entry.file,
                line = entry.line.line,
                role = entry.role.as_str(),
                "pair request refused: the key is already listed in a keys file"
            );
            return self.refuse(id, key_type);
        }
        if let Some(token) = invite {
            return self
                .pair_by_invite(id, &token, checked.candidate, device)
                .await;
        }
        let code = pairing::pair_code(&self.auth.challenge.nonce, &fingerprint);
        let pair_timeout = self.shared.config.pair_timeout;
        let now = std::time::Instant::now();
        let expires_at = now
            .checked_add(pair_timeout)
            .unwrap_or(now + Duration::from_secs(86_400));
        let request = pairing::Request {
            fingerprint: fingerprint.clone(),
            key_type: key_type.to_string(),
            key: checked.candidate.key().clone(),
            device: device.clone(),
            code: code.clone(),
            peer: self.peer.ip(),
            expires_at,
        };
        let (ticket, rx) = match self.shared.pairing.open(request) {
            Ok(t) => t,
            Err(e) => return self.refuse_pair(id, e, &fingerprint),
        };
        tracing::info!(
            pair_id = ticket.pair_id(),
            fingerprint = %fingerprint,
            key_type,
            device = %device,
            "pair request pending"
        );
        self.reply(
            FrameType::PairPending,
            ServerMsg::PairPending {
                id,
                pair_id: ticket.pair_id().to_string(),
                code,
                expires_in_ms: pair_timeout.as_millis() as u64,
            },
        );
        // The auth timeout no longer applies; the pair timeout does.
        self.auth.deadline = tokio::time::Instant::from_std(expires_at);
        self.auth.pair = Some(Box::new(WaitingPair {
            ticket,
            rx,
            candidate: checked.candidate,
            device,
        }));
        Flow::Continue
    }

    /// A pair request the registry refused: `rate_limited` (blocked address,
    /// one already pending from it) or `overloaded` (too many pending); close 1008.
    fn refuse_pair(&self, id: Option<RequestId>, e: OpenError, fingerprint: &str) -> Flow {
        tracing::info!(reason = %e, fingerprint, "pair request refused");
        let code = match e {
            OpenError::Blocked | OpenError::AddressBusy => ErrorCode::RateLimited,
            OpenError::Full => ErrorCode::Overloaded,
        };
        self.error(id, code, e.to_string());
        Flow::Close(close_code::POLICY, "pair request refused".into())
    }

    /// A verified pair request carrying an invite: a valid one pairs the key at
    /// once with the invite's role (no pending slot, no owner answer) and is
    /// used up; an unknown, used or expired one fails like a failed authentication.
    async fn pair_by_invite(
        &mut self,
        id: Option<RequestId>,
        token: &str,
        candidate: Candidate,
        device: String,
    ) -> Flow {
        let fingerprint = candidate.fingerprint();
        let key_type = candidate.key_type();
        let Some(redeemed) = self.shared.pairing.redeem_invite(token) else {
            tracing::warn!(
                fingerprint = %fingerprint,
                key_type,
                "pair request refused: the invite is unknown, used or expired"
            );
            return self.refuse(id, key_type);
        };
        let role = redeemed.role;
        let by = format!("{}{}", pairing::INVITE_BY_PREFIX, redeemed.inviter);
        let pair_id = uuid::Uuid::new_v4().simple().to_string();
        match self
            .add_paired_key(
                candidate.key().clone(),
                device.clone(),
                role,
                redeemed.inviter_fingerprint,
            )
            .await
        {
            Ok(path) => {
                tracing::info!(
                    pair_id,
                    fingerprint = %fingerprint,
                    role = role.as_str(),
                    by,
                    file = %path.display(),
                    "pair request allowed by an invite: key added"
                );
                self.shared
                    .pairing
                    .announce_resolved(&pair_id, true, Some(role), &by);
                let keys = self.shared.keys.current();
                let identity = match candidate.authorize(&keys, self.peer.ip(), SystemTime::now()) {
                    Ok(entry) => candidate.identity(&entry),
                    // Reloaded before this; an edit racing it leaves the role granted
                    // until the next key check closes the connection.
                    Err(_) => candidate.identity_with(role, &device),
                };
                self.authenticated(identity, Some(device), id);
                Flow::Continue
            }
            Err(e) => {
                tracing::error!(pair_id, error = %e, "cannot add the key paired by an invite");
                self.error(
                    id,
                    ErrorCode::Internal,
                    "the key could not be added; see the server log",
                );
                Flow::Close(close_code::POLICY, "pairing failed".into())
            }
        }
    }

    /// Append `key` to the paired file of `role` (unless that file lists it
    /// already) and put it in force; the file's path, or why not.
    async fn add_paired_key(
        &self,
        key: ssh_key::public::KeyData,
        device: String,
        role: Role,
        approver: String,
    ) -> Result<std::path::PathBuf, String> {
        let path = match role {
            Role::Owner => self.shared.config.paired_keys.clone(),
            Role::Viewer => self.shared.config.paired_viewers.clone(),
        };
        let store = self.shared.keys.clone();
        tokio::task::spawn_blocking(move || -> Result<std::path::PathBuf, String> {
            let err = |e: std::io::Error| format!("{}: {e}", path.display());
            // Not while a `keys.rename`/`keys.revoke` replaces the file.
            let _edit = auth::paired_edit_lock();
            if !auth::file_lists(&path, &key).map_err(err)? {
                let line = auth::paired_line(&key, &device, &auth::today(), &approver)?;
                auth::append_line(&path, &line).map_err(err)?;
            }
            // Put the key in force before the device hears it is allowed.
            store.reload().map_err(|e| e.to_string())?;
            Ok(path)
        })
        .await
        .unwrap_or_else(|e| Err(format!("pairing task failed: {e}")))
    }

    /// `pair.invite` from an authenticated connection (owners only).
    pub(super) fn on_pair_invite(
        &mut self,
        id: Option<RequestId>,
        role: Role,
        expires_in_ms: Option<u64>,
    ) {
        let Some((me, handle)) = &self.identity else {
            return;
        };
        if me.role != Role::Owner {
            self.error(
                id,
                ErrorCode::Forbidden,
                "viewer keys may not send pair.invite",
            );
            return;
        }
        if expires_in_ms == Some(0) {
            self.error(
                id,
                ErrorCode::BadMessage,
                "`expires_in_ms` must be at least 1",
            );
            return;
        }
        let ttl = expires_in_ms.map_or(pairing::MAX_INVITE_TTL, Duration::from_millis);
        let made =
            self.shared
                .pairing
                .create_invite(role, ttl, &handle.info.client_id, &me.fingerprint);
        match made {
            Ok((invite, ttl)) => {
                tracing::info!(
                    role = role.as_str(),
                    expires_in_ms = ttl.as_millis() as u64,
                    "pairing invite opened"
                );
                self.reply(
                    FrameType::PairInvite,
                    ServerMsg::PairInvite {
                        id,
                        invite,
                        expires_in_ms: ttl.as_millis() as u64,
                    },
                );
            }
            Err(e) => self.error(id, ErrorCode::Overloaded, e.to_string()),
        }
    }

    /// The connection is authenticated as `identity`: `auth.ok` (echoing `id`,
    /// the request it answers), the throttle's unit back, owner registration.
    fn authenticated(&mut self, identity: Identity, device: Option<String>, id: Option<RequestId>) {
        self.shared.throttle.give_back(self.peer.ip());
        self.count_auth(AuthResult::Ok, &identity.key_type);
        self.auth.challenge.forget();
        let client_id = uuid::Uuid::new_v4().simple().to_string();
        let span = tracing::Span::current();
        span.record("client_id", client_id.as_str());
        span.record("fingerprint", identity.fingerprint.as_str());
        // Peer strings are escaped by the log formatter (crate::escape).
        tracing::info!(
            role = identity.role.as_str(),
            key_type = %identity.key_type,
            device = device.as_deref().unwrap_or("-"),
            comment = %identity.comment,
            "authenticated"
        );
        let info = ClientInfo {
            conn_id: self.conn_id,
            client_id: client_id.clone(),
            fingerprint: identity.fingerprint.clone(),
            comment: identity.comment.clone(),
            device,
            role: identity.role,
            address: Some(self.peer.ip()),
        };
        let handle = ClientHandle {
            info: Arc::new(info),
            outbox: self.outbox.clone(),
        };
        let msg = ServerMsg::AuthOk {
            id,
            client_id,
            fingerprint: identity.fingerprint.clone(),
            role: identity.role,
            sessions: self.session_summaries(false),
            limits: Some(Limits {
                max_frame_bytes: self.shared.config.max_frame_bytes as u64,
                max_prompt_bytes: self.shared.config.max_prompt_bytes as u64,
                max_upload_bytes: self.shared.config.max_upload_bytes as u64,
            }),
        };
        // auth.ok is the direct reply to auth.response, so it echoes the request id (§2).
        self.reply(FrameType::AuthOk, msg);
        if identity.role == Role::Owner {
            // Pending pair requests reach a new owner right after its auth.ok.
            self.auth.owner = Some(
                self.shared
                    .pairing
                    .add_owner(self.conn_id, self.outbox.clone()),
            );
        }
        // Every authenticated connection hears of session changes (docs/protocol.md §4.10).
        self.shared
            .sessions
            .watch(self.conn_id, identity.role, self.outbox.clone());
        self.identity = Some((identity, handle));
        self.gauge.authenticated();
    }

    /// `pair.respond` from an authenticated connection (owners only).
    pub(super) async fn on_pair_respond(
        &mut self,
        id: Option<RequestId>,
        pair_id: String,
        allow: bool,
        role: Role,
        block: bool,
    ) {
        let Some((me, handle)) = &self.identity else {
            return;
        };
        if me.role != Role::Owner {
            self.error(
                id,
                ErrorCode::Forbidden,
                "viewer keys may not send pair.respond",
            );
            return;
        }
        let (approver, client_id) = (me.fingerprint.clone(), handle.info.client_id.clone());
        let Some((request, tx)) = self.shared.pairing.take(&pair_id) else {
            self.error(id, ErrorCode::NotPending, "no such pair request is pending");
            return;
        };
        if !allow {
            tracing::info!(pair_id, fingerprint = %request.fingerprint, block, "pair request denied by this owner");
            self.shared.pairing.record_denial(request.peer, block);
            self.reply(FrameType::Ok, ServerMsg::ok(id));
            let _ = tx.send(Outcome::Denied);
            self.shared
                .pairing
                .announce_resolved(&pair_id, false, None, &client_id);
            return;
        }
        // A keys file may have come to list the key while the request waited:
        // pairing must not add an unrestricted line beside it.
        if let Some(entry) = self.shared.keys.current().listing(&request.key) {
            tracing::warn!(
                pair_id,
                fingerprint = %request.fingerprint,
                file = %entry.file,
                line = entry.line.line,
                "pair request not allowed: the key is listed in a keys file now"
            );
            self.error(
                id,
                ErrorCode::NotPending,
                "the key is listed in a keys file now; the request was refused",
            );
            let _ = tx.send(Outcome::Denied);
            self.shared
                .pairing
                .announce_resolved(&pair_id, false, None, &client_id);
            return;
        }
        let written = self
            .add_paired_key(request.key.clone(), request.device.clone(), role, approver)
            .await;
        match written {
            Ok(path) => {
                tracing::info!(pair_id, fingerprint = %request.fingerprint, role = role.as_str(), file = %path.display(), "pair request allowed: key added");
                self.reply(FrameType::Ok, ServerMsg::ok(id));
                let _ = tx.send(Outcome::Allowed { role });
                self.shared
                    .pairing
                    .announce_resolved(&pair_id, true, Some(role), &client_id);
            }
            Err(e) => {
                tracing::error!(pair_id, error = %e, "cannot add the paired key");
                self.error(
                    id,
                    ErrorCode::Internal,
                    "the key could not be added; see the server log",
                );
                let _ = tx.send(Outcome::Denied);
                self.shared
                    .pairing
                    .announce_resolved(&pair_id, false, None, &client_id);
            }
        }
    }
}

/// What an `auth.response` or `pair.request` says its signature is bound to.
struct Bound {
    channel_binding: Option<String>,
    origin: Option<String>,
}

impl Checked {
    /// The challenge may have expired while the verification waited for the pool.
    fn candidate_expired(&self, challenge: &Challenge) -> bool {
        challenge.is_expired(std::time::Instant::now())
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
