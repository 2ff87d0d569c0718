//! Answer tokens of notifications (docs/protocol.md §9.2): the credential of
//! `POST /v1/push/respond`.
//!
//! A token is `base64url(claims) "." base64url(HMAC-SHA256(secret, "ccrelay-notify-v1." claims))`
//! (no padding). The claims bind the session, the request id, the action (allow or
//! deny), the recipient (a Web Push subscription id, `webhook` or `ntfy`), an expiry
//! ([`TOKEN_TTL`] after issue) and a random nonce. The 32-byte secret is made once
//! and kept in the data dir (0600), so tokens survive a restart of the server.
//! A token works once: the MACs of used tokens are kept until the token's expiry
//! (after which it is refused as expired anyway), in a set of bounded size.
//!
//! Owns: the secret, issuing and checking tokens, the used-set. Must not: know about
//! sessions, HTTP or what a token is used for.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a token is valid after it was issued (§9: 10 minutes).
pub const TOKEN_TTL: Duration = Duration::from_secs(600);
/// The secret's file in the data dir.
pub const SECRET_FILE: &str = "notify_token_key";
/// Longer strings are not tokens we made (ours are a few hundred bytes): refused
/// before any decoding or MAC work.
pub const MAX_TOKEN_CHARS: usize = 1024;
/// Used tokens remembered at most. Only tokens with a valid MAC ever get in, and the
/// endpoint is rate limited per address, so this is never reached in practice; if it
/// is, further answers are refused (`Busy`) rather than forgetting a used token early.
pub const MAX_USED: usize = 65_536;
/// Domain separation of the MAC input.
const MAC_CONTEXT: &[u8] = b"ccrelay-notify-v1.";
/// The claims' format. 2 since allow tokens are only made for requests a
/// notification shows whole: tokens of format 1 (allow tokens for any request)
/// are refused.
const CLAIMS_FORMAT: u64 = 2;

type HmacSha256 = Hmac<Sha256>;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        match s {
            "allow" => Some(Action::Allow),
            "deny" => Some(Action::Deny),
            _ => None,
        }
    }
}

/// Who a token was sent to: it answers as that one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Recipient {
    /// A Web Push subscription (its stable id).
    Subscription(String),
    Webhook,
    Ntfy,
}

impl Recipient {
    fn encode(&self) -> String {
        match self {
            Recipient::Subscription(id) => format!("s:{id}"),
            Recipient::Webhook => "webhook".into(),
            Recipient::Ntfy => "ntfy".into(),
        }
    }

    fn decode(s: &str) -> Option<Recipient> {
        match s {
            "webhook" => Some(Recipient::Webhook),
            "ntfy" => Some(Recipient::Ntfy),
            _ => s
                .strip_prefix("s:")
                .map(|id| Recipient::Subscription(id.to_string())),
        }
    }

    /// The label of metrics and the `device` of webhook and ntfy answers.
    pub fn sink(&self) -> &'static str {
        match self {
            Recipient::Subscription(_) => "webpush",
            Recipient::Webhook => "webhook",
            Recipient::Ntfy => "ntfy",
        }
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub session: String,
    pub request_id: String,
    pub action: Action,
    pub recipient: Recipient,
    /// Unix time in ms after which the token is refused.
    pub expires_ms: u64,
    /// The MAC: identifies the token in the used-set.
    mac: [u8; 32],
}

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token this server made (malformed, or the MAC does not match).
    #[error("forged or malformed token")]
    Invalid,
    #[error("expired token")]
    Expired,
    #[error("token used before")]
    Used,
    /// The used-set is full of unexpired tokens (see [`MAX_USED`]).
    #[error("too many tokens used recently")]
    Busy,
}

/// The secret could not be read or made.
#[derive(Debug, thiserror::Error)]
#[error("notification token secret {path}: {source}")]
pub struct SecretError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

/// The wall clock, in Unix ms (injected so tests can move time).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Issues and checks tokens. Shared by reference (`Arc`).
pub struct Tokens {
    secret: [u8; 32],
    clock: Clock,
    /// MAC → expiry (Unix ms) of each used token.
    used: Mutex<HashMap<[u8; 32], u64>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").finish_non_exhaustive()
    }
}

impl Tokens {
    /// Read the secret from the data dir, or make it (0600) when there is none.
    pub fn open(data_dir: &Path) -> Result<Tokens, SecretError> {
        let secret = load_or_create_secret(data_dir)?;
        Ok(Tokens::with_clock(secret, Arc::new(crate::journal::now_ms)))
    }

    pub fn with_clock(secret: [u8; 32], clock: Clock) -> Tokens {
        Tokens {
            secret,
            clock,
            used: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, claims_b64: &str) -> HmacSha256 {
        // new_from_slice only fails for key sizes HMAC cannot take; any size works.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(MAC_CONTEXT);
        mac.update(claims_b64.as_bytes());
        mac
    }

    /// A token for answering `request_id` of `session` with `action`, as `recipient`.
    pub fn issue(
        &self,
        session: &str,
        request_id: &str,
        action: Action,
        recipient: &Recipient,
    ) -> String {
        let expires_ms = (self.clock)() + TOKEN_TTL.as_millis() as u64;
        let mut nonce = [0u8; 9];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let claims = serde_json::json!([
            CLAIMS_FORMAT,
            expires_ms,
            action.as_str(),
            recipient.encode(),
            session,
            request_id,
            B64.encode(nonce),
        ]);
        let claims_b64 = B64.encode(claims.to_string());
        let tag = self.mac(&claims_b64).finalize().into_bytes();
        format!("{claims_b64}.{}", B64.encode(tag))
    }

    /// Check a token's MAC (in constant time) and expiry. Forged before expired:
    /// nothing about a forged token is looked at.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::Invalid);
        }
        let (claims_b64, tag_b64) = token.split_once('.').ok_or(TokenError::Invalid)?;
        let tag = B64.decode(tag_b64).map_err(|_| TokenError::Invalid)?;
        self.mac(claims_b64)
            .verify_slice(&tag)
            .map_err(|_| TokenError::Invalid)?;
        let mut mac = [0u8; 32];
        mac.copy_from_slice(&tag);
        // Signed by us from here on; a shape we don't know is still refused.
        let raw = B64.decode(claims_b64).map_err(|_| TokenError::Invalid)?;
        let v: serde_json::Value = serde_json::from_slice(&raw).map_err(|_| TokenError::Invalid)?;
        let parts = v.as_array().ok_or(TokenError::Invalid)?;
        let text = |i: usize| parts.get(i).and_then(|p| p.as_str());
        if parts.first().and_then(|p| p.as_u64()) != Some(CLAIMS_FORMAT) {
            return Err(TokenError::Invalid);
        }
        let claims = Claims {
            expires_ms: parts
                .get(1)
                .and_then(|p| p.as_u64())
                .ok_or(TokenError::Invalid)?,
            action: text(2).and_then(Action::parse).ok_or(TokenError::Invalid)?,
            recipient: text(3)
                .and_then(Recipient::decode)
                .ok_or(TokenError::Invalid)?,
            session: text(4).ok_or(TokenError::Invalid)?.to_string(),
            request_id: text(5).ok_or(TokenError::Invalid)?.to_string(),
            mac,
        };
        if (self.clock)() >= claims.expires_ms {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Mark a verified token used; `Used` when it was before. Done before the token
    /// is acted on, so two concurrent uses cannot both get through.
    pub fn claim(&self, claims: &Claims) -> Result<(), TokenError> {
        let now = (self.clock)();
        let mut used = self.used.lock().map_err(|_| TokenError::Busy)?;
        if let Some(exp) = used.get(&claims.mac)
            && *exp > now
        {
            return Err(TokenError::Used);
        }
        if used.len() >= MAX_USED {
            // Expired entries carry no information: an expired token is refused anyway.
            used.retain(|_, exp| *exp > now);
            if used.len() >= MAX_USED {
                return Err(TokenError::Busy);
            }
        }
        used.insert(claims.mac, claims.expires_ms);
        Ok(())
    }

    /// Give a claimed token back (it was not acted on: the session could not take
    /// the answer right now), so it can be tried again.
    pub fn release(&self, claims: &Claims) {
        if let Ok(mut used) = self.used.lock() {
            used.remove(&claims.mac);
        }
    }

    /// Used tokens remembered (for tests and metrics).
    pub fn used_len(&self) -> usize {
        self.used.lock().map(|u| u.len()).unwrap_or(0)
    }
}

fn load_or_create_secret(data_dir: &Path) -> Result<[u8; 32], SecretError> {
    let path = data_dir.join(SECRET_FILE);
    let err = |source| SecretError {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() == 32 => {
            let mut secret = [0u8; 32];
            secret.copy_from_slice(&bytes);
            return Ok(secret);
        }
        Ok(bytes) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "holds {} bytes, not 32; remove it to make a new one (outstanding tokens stop working)",
                    bytes.len()
                ),
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
    crate::datadir::write_atomic(&path, secret).map_err(err)?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn keeper() -> (Tokens, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(1_800_000_000_000));
        let clock = now.clone();
        let t = Tokens::with_clock([7u8; 32], Arc::new(move || clock.load(Ordering::SeqCst)));
        (t, now)
    }

    #[test]
    fn a_token_names_what_it_was_made_for() {
        let (t, _) = keeper();
        let sub = Recipient::Subscription("abc".into());
        let token = t.issue("default", "req-1", Action::Allow, &sub);
        assert!(token.len() < 300, "{}", token.len());
        let c = t.verify(&token).unwrap();
        assert_eq!(c.session, "default");
        assert_eq!(c.request_id, "req-1");
        assert_eq!(c.action, Action::Allow);
        assert_eq!(c.recipient, sub);
        for r in [Recipient::Webhook, Recipient::Ntfy] {
            let c = t.verify(&t.issue("s", "r", Action::Deny, &r)).unwrap();
            assert_eq!((c.recipient, c.action), (r, Action::Deny));
        }
    }

    #[test]
    fn forged_tokens_are_refused() {
        let (t, _) = keeper();
        let token = t.issue("default", "req-1", Action::Deny, &Recipient::Webhook);
        let (claims, tag) = token.split_once('.').unwrap();
        // The claims changed (deny → allow, another request) with the old MAC.
        let forged_claims = B64.encode(
            String::from_utf8(B64.decode(claims).unwrap())
                .unwrap()
                .replace("\"deny\"", "\"allow\""),
        );
        assert_eq!(
            t.verify(&format!("{forged_claims}.{tag}")),
            Err(TokenError::Invalid)
        );
        // A MAC from another secret.
        let other = Tokens::with_clock([8u8; 32], Arc::new(|| 1_800_000_000_000));
        let theirs = other.issue("default", "req-1", Action::Allow, &Recipient::Webhook);
        assert_eq!(t.verify(&theirs), Err(TokenError::Invalid));
        for junk in ["", ".", "abc", "abc.def", &"a".repeat(5000), "é.é"] {
            assert_eq!(t.verify(junk), Err(TokenError::Invalid), "{junk:?}");
        }
        // A truncated tag.
        assert_eq!(
            t.verify(&token[..token.len() - 2]),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn tokens_expire_after_ten_minutes() {
        let (t, now) = keeper();
        let token = t.issue("default", "req-1", Action::Allow, &Recipient::Ntfy);
        now.fetch_add(TOKEN_TTL.as_millis() as u64 - 1, Ordering::SeqCst);
        assert!(t.verify(&token).is_ok());
        now.fetch_add(1, Ordering::SeqCst);
        assert_eq!(t.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_works_once_and_the_used_set_is_pruned_at_expiry() {
        let (t, now) = keeper();
        let token = t.issue("default", "req-1", Action::Allow, &Recipient::Webhook);
        let c = t.verify(&token).unwrap();
        t.claim(&c).unwrap();
        assert_eq!(t.claim(&c), Err(TokenError::Used));
        // Released (not acted on): usable again.
        t.release(&c);
        t.claim(&c).unwrap();
        // Two tokens for the same request and action are distinct tokens.
        let again = t.issue("default", "req-1", Action::Allow, &Recipient::Webhook);
        assert_ne!(again, token);
        t.claim(&t.verify(&again).unwrap()).unwrap();
        assert_eq!(t.used_len(), 2);
        // Fill the set: entries that expired make room, unexpired ones never do.
        now.fetch_add(TOKEN_TTL.as_millis() as u64, Ordering::SeqCst);
        let mut last = None;
        for i in 0..MAX_USED {
            let tok = t.issue("s", &format!("r{i}"), Action::Deny, &Recipient::Ntfy);
            let c = t.verify(&tok).unwrap();
            t.claim(&c).unwrap();
            last = Some(c);
        }
        assert_eq!(t.used_len(), MAX_USED);
        let one_more = t
            .verify(&t.issue("s", "x", Action::Deny, &Recipient::Ntfy))
            .unwrap();
        assert_eq!(t.claim(&one_more), Err(TokenError::Busy));
        assert_eq!(t.claim(&last.unwrap()), Err(TokenError::Used));
    }

    #[test]
    fn the_secret_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = Tokens::open(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let token = a.issue("default", "r", Action::Allow, &Recipient::Webhook);
        let b = Tokens::open(dir.path()).unwrap();
        assert!(b.verify(&token).is_ok(), "a restart keeps the secret");
        std::fs::write(dir.path().join(SECRET_FILE), b"short").unwrap();
        assert!(Tokens::open(dir.path()).is_err());
    }
}
