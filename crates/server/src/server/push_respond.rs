//! `POST /v1/push/respond` (docs/protocol.md §9.2.5): a permission answered from a
//! notification. The body `{"token":"..."}` is the only credential; the token names
//! the session, the request, the action and who it was sent to.
//!
//! Unauthenticated by design, so what a stranger can make it cost is bounded: a
//! per-address budget ([`crate::notify::RESPOND_PER_MINUTE`], 429 beyond it), a body of at
//! most [`MAX_BODY_BYTES`] read within [`BODY_TIMEOUT`], one HMAC per request, no
//! state kept for refused tokens. It is served on the main listener, so the
//! listener's per-address connection cap, head deadline and TLS apply as to every
//! HTTP request.
//!
//! Order of checks: token (forged, expired → 403 `invalid_token`), then who it
//! answers as (a subscription still there whose key is usable now, from where it
//! was registered and from this request's address; or a sink still configured,
//! with `--notify-sink-allow` for `allow` → else 403 `invalid_token`, the token
//! left unused), then used (403), then the request (answered or cancelled → 409
//! `not_pending`), then 200 once the session's actor has written the answer to the
//! agent and logged `relay.resolved`.
//!
//! Owns: the endpoint (an HTTP route of the server; the notifier only checks
//! tokens and who they were sent to). Must not: touch session state (the actor answers).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::Shared;
use crate::listen::ConnCtx;
use crate::listen::proxy;
use crate::metrics::PushRespondOutcome;
use crate::notify::tokens::{Recipient, TokenError};
use crate::session::{PushAnswer, PushAnswerer, SessionCmd};

/// Largest body accepted (a token is a few hundred bytes).
pub const MAX_BODY_BYTES: usize = 4096;
/// Time the body may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the session may take to answer (it is one actor step; this only bounds a
/// session that is stopping).
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

fn answer(
    shared: &Shared,
    status: StatusCode,
    outcome: PushRespondOutcome,
    body: Value,
) -> Response {
    shared.services.metrics.push_respond(outcome);
    let mut r = (status, Json(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub async fn handler(
    State(shared): State<Arc<Shared>>,
    Extension(ctx): Extension<Arc<ConnCtx>>,
    request: Request,
) -> Response {
    let ip = proxy::client_address(
        ctx.peer.ip(),
        &shared.services.config.trusted_proxies,
        request.headers(),
    );
    let notify = &shared.services.notify;
    if let Err(wait) = notify.respond_limit.try_take(ip) {
        let secs = wait.as_millis().div_ceil(1000).max(1) as u64;
        tracing::info!(peer = %ip, retry_after_s = secs, "push respond: throttled");
        let mut r = answer(
            &shared,
            StatusCode::TOO_MANY_REQUESTS,
            PushRespondOutcome::Throttled,
            json!({"error": "throttled", "retry_after_s": secs}),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return r;
    }
    let body = tokio::time::timeout(
        BODY_TIMEOUT,
        axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES),
    )
    .await;
    let body = match body {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return answer(
                &shared,
                StatusCode::PAYLOAD_TOO_LARGE,
                PushRespondOutcome::TooLarge,
                json!({"error": "too_large", "message": format!("the body must be at most {MAX_BODY_BYTES} bytes")}),
            );
        }
        Err(_) => {
            return answer(
                &shared,
                StatusCode::REQUEST_TIMEOUT,
                PushRespondOutcome::BadRequest,
                json!({"error": "bad_request", "message": "the body did not arrive in time"}),
            );
        }
    };
    #[derive(serde::Deserialize)]
    struct Body {
        token: String,
    }
    let token = match serde_json::from_slice::<Body>(&body) {
        Ok(b) => b.token,
        Err(e) => {
            return answer(
                &shared,
                StatusCode::BAD_REQUEST,
                PushRespondOutcome::BadRequest,
                json!({"error": "bad_request", "message": format!("expected {{\"token\":\"...\"}}: {e}")}),
            );
        }
    };
    let invalid = |why: &str| {
        // Debug, not info: strangers choose how often this happens (it is counted).
        tracing::debug!(peer = %ip, why, "push respond: token refused");
        answer(
            &shared,
            StatusCode::FORBIDDEN,
            PushRespondOutcome::InvalidToken,
            json!({"error": "invalid_token"}),
        )
    };
    let claims = match notify.tokens.verify(&token) {
        Ok(c) => c,
        Err(e) => return invalid(&e.to_string()),
    };
    // Who answers: the subscription's device (which must still exist: a removed
    // key's subscriptions are gone, and so are its tokens' powers; and whose key
    // must be usable now, from here: an expired or restricted key's subscription
    // is suspended), or the hook.
    let answerer = match &claims.recipient {
        Recipient::Subscription(id) => match notify.subscriber(id) {
            Some(s) => {
                if let Err(why) = notify.key_usable(&s, Some(ip)) {
                    // Info: only a holder of a real token gets here.
                    tracing::info!(peer = %ip, subscription = %s.id, fingerprint = %s.fingerprint, reason = %why, "push respond: refused, the token's key is not usable from here");
                    return invalid("its key is not usable");
                }
                PushAnswerer {
                    device: s.device.clone().unwrap_or_else(|| s.fingerprint.clone()),
                    fingerprint: Some(s.fingerprint),
                }
            }
            None => return invalid("its subscription is gone"),
        },
        // A sink the operator has since removed from the configuration, or an
        // allow token of a sink no longer allowed to allow.
        other if !notify.hook_enabled(other, claims.action) => {
            return invalid("its sink is no longer configured for this answer");
        }
        other => PushAnswerer {
            device: other.sink().to_string(),
            fingerprint: None,
        },
    };
    // A token we made, for someone still entitled to it, costs the address
    // nothing: only guessing (or using a token from the wrong place) spends its budget.
    notify.respond_limit.give_back(ip);
    match notify.tokens.claim(&claims) {
        Ok(()) => {}
        Err(TokenError::Busy) => {
            return answer(
                &shared,
                StatusCode::SERVICE_UNAVAILABLE,
                PushRespondOutcome::Unavailable,
                json!({"error": "overloaded", "message": "too many answers recently; retry later"}),
            );
        }
        Err(e) => return invalid(&e.to_string()),
    }
    let Some(session) = shared.services.sessions.get(&claims.session) else {
        // A token of a session this configuration no longer has.
        return answer(
            &shared,
            StatusCode::CONFLICT,
            PushRespondOutcome::NotPending,
            json!({"error": "not_pending"}),
        );
    };
    let (tx, rx) = oneshot::channel();
    let cmd = SessionCmd::PushRespond {
        request_id: claims.request_id.clone(),
        action: claims.action,
        answerer: answerer.clone(),
        reply: tx,
    };
    let outcome = match session.send(cmd).await {
        Ok(()) => tokio::time::timeout(SESSION_TIMEOUT, rx)
            .await
            .ok()
            .and_then(Result::ok),
        Err(_) => None,
    };
    match outcome {
        Some(PushAnswer::Resolved) => {
            tracing::info!(session = %claims.session, request_id = %claims.request_id, action = claims.action.as_str(), device = %answerer.device, "answered from a notification");
            answer(
                &shared,
                StatusCode::OK,
                PushRespondOutcome::Ok,
                json!({"ok": true}),
            )
        }
        Some(PushAnswer::NotPending) => answer(
            &shared,
            StatusCode::CONFLICT,
            PushRespondOutcome::NotPending,
            json!({"error": "not_pending"}),
        ),
        Some(PushAnswer::Unavailable) | None => {
            // Not acted on: the token may be tried again.
            notify.tokens.release(&claims);
            let mut r = answer(
                &shared,
                StatusCode::SERVICE_UNAVAILABLE,
                PushRespondOutcome::Unavailable,
                json!({"error": "agent_unavailable", "message": "the agent is restarting; try again"}),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
    }
}
