//! The server's fatal-fault signal: any task (a session, a listener) raises it
//! with a cause; the server then shuts down in order and closes clients with 1011.
//!
//! Owns: the first cause and the cancellation token. A leaf: it must not depend on
//! any other module, so every layer can raise it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// Lets any task report an unrecoverable fault; the server then shuts down with 1011.
#[derive(Debug, Clone, Default)]
pub struct FatalSignal {
    token: CancellationToken,
    cause: Arc<std::sync::Mutex<Option<String>>>,
}

impl FatalSignal {
    /// Record the first fault and trigger the shutdown.
    pub fn raise(&self, cause: String) {
        if let Ok(mut slot) = self.cause.lock()
            && slot.is_none()
        {
            *slot = Some(cause);
        }
        self.token.cancel();
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    pub fn cause(&self) -> Option<String> {
        self.cause.lock().ok().and_then(|c| c.clone())
    }
}
