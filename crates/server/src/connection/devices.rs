//! The `keys.list` / `keys.rename` / `keys.revoke` requests of an
//! authenticated owner (docs/protocol.md, extension "Devices").
//!
//! Owns: checking the role, running the file work off the async threads and
//! turning its outcome into the reply. Must not: read or edit a keys file
//! itself (that is `auth::devices`) or close connections of a revoked key —
//! the key store's reload does that for every connection, this one included.

use crate::auth::{self, DeviceError};
use ccrelay_protocol::{ErrorCode, FrameType, RequestId, ServerMsg};

use super::Connection;

/// What a rename or revoke did, for the reply and the log.
type EditResult = Result<usize, DeviceError>;

impl Connection {
    pub(super) async fn on_keys_list(&mut self, id: Option<RequestId>) {
        if !self.owner_only(&id, "keys.list") {
            return;
        }
        let files = self.shared.keys.files().to_vec();
        match tokio::task::spawn_blocking(move || auth::list_keys(&files)).await {
            Ok(keys) => self.reply(FrameType::KeysList, ServerMsg::KeysList { id, keys }),
            Err(e) => {
                tracing::error!(error = %e, "keys.list task failed");
                self.error(id, ErrorCode::Internal, "the keys could not be listed");
            }
        }
    }

    pub(super) async fn on_keys_rename(
        &mut self,
        id: Option<RequestId>,
        fingerprint: String,
        device: String,
    ) {
        if !self.owner_only(&id, "keys.rename") {
            return;
        }
        let files = self.shared.keys.files().to_vec();
        let (fp, name) = (fingerprint.clone(), device.clone());
        let done = self
            .edit_keys(move || auth::rename_key(&files, &fp, &name))
            .await;
        self.edit_reply(id, "keys.rename", &fingerprint, done);
    }

    pub(super) async fn on_keys_revoke(&mut self, id: Option<RequestId>, fingerprint: String) {
        if !self.owner_only(&id, "keys.revoke") {
            return;
        }
        let files = self.shared.keys.files().to_vec();
        let fp = fingerprint.clone();
        let done = self.edit_keys(move || auth::revoke_key(&files, &fp)).await;
        self.edit_reply(id, "keys.revoke", &fingerprint, done);
    }

    /// Run one edit, then reload the key store so that the change is in force
    /// (a revoked key's connections closed with 1008) before the reply.
    async fn edit_keys(
        &self,
        edit: impl FnOnce() -> EditResult + Send + 'static,
    ) -> Result<EditResult, String> {
        let store = self.shared.keys.clone();
        tokio::task::spawn_blocking(move || {
            let done = edit();
            if matches!(done, Ok(n) if n > 0) {
                store.reload().map_err(|e| e.to_string())?;
            }
            Ok(done)
        })
        .await
        .unwrap_or_else(|e| Err(format!("keys task failed: {e}")))
    }

    fn edit_reply(
        &self,
        id: Option<RequestId>,
        what: &'static str,
        fingerprint: &str,
        done: Result<EditResult, String>,
    ) {
        let by = self
            .identity
            .as_ref()
            .map(|(me, _)| me.fingerprint.clone())
            .unwrap_or_default();
        match done {
            Ok(Ok(lines)) => {
                tracing::info!(
                    request = what,
                    fingerprint,
                    lines,
                    by,
                    "paired keys file edited"
                );
                self.reply(FrameType::Ok, ServerMsg::ok(id));
            }
            Ok(Err(e @ (DeviceError::NotEditable { .. } | DeviceError::Unknown(_)))) => {
                self.error(id, ErrorCode::BadMessage, e.to_string());
            }
            Ok(Err(e @ DeviceError::Io { .. })) => {
                tracing::error!(request = what, error = %e, "cannot edit the paired keys file");
                self.error(
                    id,
                    ErrorCode::Internal,
                    "the keys file could not be edited; see the server log",
                );
            }
            Err(e) => {
                tracing::error!(request = what, error = %e, "cannot reload the keys after an edit");
                self.error(
                    id,
                    ErrorCode::Internal,
                    "the keys could not be reloaded; see the server log",
                );
            }
        }
    }
}
