//! The `push.subscribe` / `push.unsubscribe` requests of an authenticated owner
//! (docs/protocol.md §9.1.2).
//!
//! Owns: checking the role and turning the Web Push store's answer into the
//! reply. Must not: validate endpoints or keys itself, or touch the
//! subscriptions file (that is `notify::webpush`).

use crate::notify::webpush::{PushSubscriptionJson, SubscriptionOwner};
use ccrelay_protocol::{ErrorCode, FrameType, RequestId, ServerMsg};

use super::Connection;

impl Connection {
    pub(super) async fn on_push_subscribe(
        &mut self,
        id: Option<RequestId>,
        subscription: PushSubscriptionJson,
    ) {
        if !self.owner_only(&id, "push.subscribe") {
            return;
        }
        let Some((identity, handle)) = &self.identity else {
            return;
        };
        // The subscription belongs to this key, named after this device; the
        // address is kept for the key's `from=` (docs/protocol.md, "Notifications").
        let owner = SubscriptionOwner {
            fingerprint: identity.fingerprint.clone(),
            device: handle.info.device.clone(),
            address: self.peer.ip(),
        };
        match self.shared.push.subscribe(owner, subscription).await {
            Ok(_) => self.reply(FrameType::Ok, ServerMsg::ok(id)),
            Err(e) if e.is_client_error() => {
                tracing::info!(reason = %e, "push.subscribe refused");
                self.error(id, ErrorCode::BadMessage, e.to_string());
            }
            Err(e) => {
                tracing::error!(error = %e, "push.subscribe failed");
                self.error(
                    id,
                    ErrorCode::Internal,
                    "the subscription could not be stored; see the server log",
                );
            }
        }
    }

    pub(super) async fn on_push_unsubscribe(&mut self, id: Option<RequestId>, endpoint: String) {
        if !self.owner_only(&id, "push.unsubscribe") {
            return;
        }
        let Some((identity, _)) = &self.identity else {
            return;
        };
        let fingerprint = identity.fingerprint.clone();
        // Removing what is not there reaches the goal too: `ok` either way.
        self.shared.push.unsubscribe(&fingerprint, &endpoint).await;
        self.reply(FrameType::Ok, ServerMsg::ok(id));
    }
}
