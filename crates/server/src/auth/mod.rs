//! SSH key challenge-response authentication (docs/protocol.md §3).
//!
//! Owns: challenges, SSHSIG verification, the authorized keys files and their
//! reloading, the per-address failure throttle, client-side signing (key files,
//! ssh-agent, `ssh-keygen`), and `ccrelay keys check`. Must not: see WebSocket
//! frames, JSON or close codes — the connection code turns an [`AuthError`]
//! into the generic `auth_failed` reply and logs [`AuthError`]'s text.
//!
//! Files: `sshsig` (wire format), `authorized_keys` (line parser),
//! `hostmatch` (`from=` patterns), `keystore` (keys in force, reloads),
//! `verify` (the full check of one response), `pool` (where verification runs),
//! `throttle`, `signer`, `check`, `paired` (paired keys files, `ccrelay keys`),
//! `devices` (the `keys.*` requests' view and edits of the keys files).

mod authorized_keys;
mod check;
mod devices;
mod hostmatch;
mod keystore;
mod paired;
mod pool;
mod signer;
mod sshsig;
mod throttle;
mod verify;

#[cfg(test)]
mod testutil;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;

pub use authorized_keys::{KeyLine, KeyOptions, parse_expiry_time};
pub use check::run_keys_check;
pub use devices::{
    DeviceError, DeviceKey, list_keys, paired_edit_lock, rename_key, revoke_key,
    split_paired_comment,
};
pub use hostmatch::{FromRefusal, canonical as canonical_ip, match_from};
pub use keystore::{
    KeyEntry, KeyFile, KeyFileError, KeySet, KeyStore, MAX_RSA_BITS, MAX_RSA_EXPONENT,
    MIN_RSA_BITS, WATCH_INTERVAL,
};
pub use paired::{
    KeyFileOptions, KeyPaths, append_line, file_lists, paired_line, remove_fingerprint,
    run_keys_add, run_keys_list, run_keys_remove, today,
};
pub use pool::Verifier;
pub use signer::{
    SignError, agent_keys, decrypt_private_key, load_private_key, sign_with_agent,
    sign_with_private_key, sign_with_ssh_keygen,
};
pub use sshsig::{MAX_ARMOR_BYTES, SK_USER_PRESENCE, SK_USER_VERIFIED};
pub use throttle::AuthThrottle;
pub use verify::{Candidate, describe_signature, key_type_name, verify_response};

/// The wire-level rules both sides of authentication share (namespace, signed
/// text, roles) live with the protocol types.
pub use ccrelay_protocol::{
    CHANNEL_BINDING_TLS_EXPORTER, NAMESPACE, Role, SIGN_PREFIX, bound_text, offered_bindings,
};

/// Who authenticated.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `SHA256:...` as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The key's comment from the keys file ("" if none).
    pub comment: String,
    /// Role given by the file the key was found in.
    pub role: Role,
    /// Algorithm name, e.g. `ssh-ed25519`; one of a bounded set (metrics label).
    pub key_type: String,
    /// The key, with the keys file's comment.
    pub public_key: ssh_key::PublicKey,
}

/// One connection's challenge.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// This server's stable id.
    pub server_id: String,
    /// base64url (no padding) of 32 bytes from the OS RNG.
    pub nonce: String,
    /// The exact text the client signs.
    pub sign: String,
    /// After this instant the challenge is refused.
    pub expires_at: Instant,
    /// Lifetime given at creation (for `expires_in_ms`).
    pub ttl: Duration,
    /// The connection's TLS 1.3 exporter (RFC 9266), when it has one: the
    /// challenge then offers `"channel_binding":"tls-exporter"`.
    pub channel_binding: Option<[u8; 32]>,
}

impl Challenge {
    /// Free the text of a challenge that was answered: an authenticated
    /// connection never reads it again, and it is ~150 bytes for its whole life.
    pub fn forget(&mut self) {
        self.server_id = String::new();
        self.nonce = String::new();
        self.sign = String::new();
    }

    /// A fresh challenge valid for `ttl` from now.
    pub fn new(server_id: &str, ttl: Duration) -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let nonce = URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        Challenge {
            server_id: server_id.to_owned(),
            sign: format!("{SIGN_PREFIX}:{server_id}:{nonce}"),
            nonce,
            // An absurd ttl saturates to "far future" instead of panicking.
            expires_at: now
                .checked_add(ttl)
                .unwrap_or(now + Duration::from_secs(86_400 * 365)),
            ttl,
            channel_binding: None,
        }
    }

    /// The same challenge bound to this connection's TLS exporter (None: unbound).
    pub fn with_channel_binding(mut self, exporter: Option<[u8; 32]>) -> Self {
        self.channel_binding = exporter;
        self
    }

    /// What the challenge offers in its `channel_binding` field.
    pub fn offered_binding(&self) -> Option<&'static str> {
        self.channel_binding.map(|_| CHANNEL_BINDING_TLS_EXPORTER)
    }

    /// The exact text a response must have signed, given what it declares: its
    /// `origin` and its `channel_binding` (docs/protocol.md, "Origin binding"):
    /// `<sign>:origin:<origin>`, `<sign>:origin:<origin>:tls-exporter:<exporter>`,
    /// `<sign>:tls-exporter:<exporter>` (clients made before origin binding), or the
    /// bare `sign` ([`SignedText::unbound`]: refused unless the key is allowed it).
    /// The origin is used exactly as received; whether it names this server is
    /// checked after the signature verifies. With `require_binding`, a response
    /// without the exporter on a connection that has one is refused.
    pub fn signed_text(
        &self,
        origin: Option<&str>,
        claimed: Option<&str>,
        require_binding: bool,
    ) -> Result<SignedText, AuthError> {
        let exporter = match (claimed, self.channel_binding) {
            (None, Some(_)) if require_binding => return Err(AuthError::ChannelBindingRequired),
            (None, _) => None,
            (Some(CHANNEL_BINDING_TLS_EXPORTER), Some(exporter)) => Some(exporter),
            (Some(CHANNEL_BINDING_TLS_EXPORTER), None) => {
                return Err(AuthError::ChannelBindingUnavailable);
            }
            (Some(other), _) => {
                return Err(AuthError::UnsupportedChannelBinding(
                    other.chars().take(32).collect(),
                ));
            }
        };
        let exporter_text = exporter.map(|x| URL_SAFE_NO_PAD.encode(x));
        let text = bound_text(&self.sign, origin, exporter_text.as_deref());
        Ok(SignedText {
            text,
            unbound: origin.is_none() && exporter.is_none(),
        })
    }

    /// True from `expires_at` on.
    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.expires_at
    }
}

/// What a response signed, built from the challenge and what the response declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedText {
    /// The exact text.
    pub text: String,
    /// Neither an origin nor the exporter: the bare `sign` text.
    pub unbound: bool,
}

/// Why an `auth.response` was refused. The text is for the server log only: the
/// client always gets the generic `auth_failed` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a readable armored SSHSIG (bad markers, base64, truncated blob...).
    #[error("unreadable signature: {0}")]
    BadArmor(String),
    /// The signature's namespace is not `ccrelay-auth`.
    #[error("signature namespace is {0:?}, expected \"ccrelay-auth\"")]
    WrongNamespace(String),
    /// The message hash is neither sha256 nor sha512.
    #[error("unsupported signature hash {0:?}")]
    UnsupportedHash(String),
    /// A key type ccrelay refuses (DSA, certificates, unknown).
    #[error("unsupported key type {0}")]
    UnsupportedKeyType(String),
    /// An RSA key under 2048 bits.
    #[error("RSA key too small: {bits} bits (at least 2048 needed)")]
    RsaKeyTooSmall {
        /// Modulus size.
        bits: usize,
    },
    /// An RSA signature of type `ssh-rsa` (SHA-1).
    #[error("RSA signature uses SHA-1 (ssh-rsa); rsa-sha2-256 or rsa-sha2-512 required")]
    RsaSha1Signature,
    /// The signature does not verify over this challenge (or is malformed).
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// `public_key` could not be parsed.
    #[error("unreadable public_key: {0}")]
    BadPublicKey(String),
    /// `public_key` is not the key inside the signature.
    #[error("public_key differs from the key that made the signature")]
    KeyMismatch,
    /// The key is in neither keys file.
    #[error("key not listed in the authorized keys")]
    NotListed,
    /// The key's `expiry-time` has passed.
    #[error("key expired at {0}")]
    KeyExpired(String),
    /// The key's `from=` does not allow this address.
    #[error("from= does not allow {peer}: {why}")]
    FromNotMatched {
        /// The peer as matched (IPv4-mapped IPv6 shown as IPv4).
        peer: std::net::IpAddr,
        /// Which rule refused.
        why: String,
    },
    /// The key has an option ccrelay does not honour (`command=`, unknown...).
    #[error("key has option {0} which ccrelay does not support")]
    DisallowedOption(String),
    /// An sk- signature without the user-presence flag (and no `no-touch-required`).
    #[error("security key signature without user presence (touch)")]
    UserPresenceMissing,
    /// `verify-required` but the user-verified flag is not set.
    #[error("verify-required but the signature is not user-verified")]
    UserVerificationMissing,
    /// The challenge expired before the response was checked.
    #[error("challenge expired")]
    ChallengeExpired,
    /// `--require-channel-binding` and the response is not bound to the TLS connection.
    #[error("response not bound to the TLS connection (--require-channel-binding)")]
    ChannelBindingRequired,
    /// The response claims `tls-exporter` binding on a connection without TLS 1.3.
    #[error("response claims tls-exporter binding but this connection has no TLS exporter")]
    ChannelBindingUnavailable,
    /// A `channel_binding` type ccrelay does not know.
    #[error("unsupported channel binding {0:?}")]
    UnsupportedChannelBinding(String),
    /// A signature over the bare challenge, from a key not named by `--allow-unbound-auth`.
    #[error(
        "signature over the bare challenge, bound to no origin (only keys named by --allow-unbound-auth may sign it)"
    )]
    Unbound,
    /// The `origin` of the response is not an origin.
    #[error("unreadable origin {origin:?}: {why}")]
    BadOrigin {
        /// As received (bounded).
        origin: String,
        why: String,
    },
    /// The signature verified, but the origin it names is not one of this server's
    /// names (a relayed challenge, or a name the operator has not declared).
    #[error("origin {origin:?} refused: {why}; would be admitted by: {admit_with}")]
    OriginRefused {
        /// As received.
        origin: String,
        why: String,
        /// The option that would admit it, e.g. `--server-name 127.0.0.1:9999`.
        admit_with: String,
    },
}

impl AuthError {
    /// Short bounded label for metrics.
    pub fn reason_label(&self) -> &'static str {
        match self {
            AuthError::BadArmor(_) => "bad_armor",
            AuthError::WrongNamespace(_) => "wrong_namespace",
            AuthError::UnsupportedHash(_) => "unsupported_hash",
            AuthError::UnsupportedKeyType(_) => "unsupported_key_type",
            AuthError::RsaKeyTooSmall { .. } => "rsa_key_too_small",
            AuthError::RsaSha1Signature => "rsa_sha1",
            AuthError::BadSignature(_) => "bad_signature",
            AuthError::BadPublicKey(_) => "bad_public_key",
            AuthError::KeyMismatch => "key_mismatch",
            AuthError::NotListed => "not_listed",
            AuthError::KeyExpired(_) => "key_expired",
            AuthError::FromNotMatched { .. } => "from_denied",
            AuthError::DisallowedOption(_) => "disallowed_option",
            AuthError::UserPresenceMissing => "user_presence_missing",
            AuthError::UserVerificationMissing => "user_verification_missing",
            AuthError::ChallengeExpired => "challenge_expired",
            AuthError::ChannelBindingRequired => "binding_required",
            AuthError::ChannelBindingUnavailable => "binding_unavailable",
            AuthError::UnsupportedChannelBinding(_) => "binding_unsupported",
            AuthError::Unbound => "unbound",
            AuthError::BadOrigin { .. } => "bad_origin",
            AuthError::OriginRefused { .. } => "origin_refused",
        }
    }
}

/// Entry points for the fuzz targets in `fuzz/` (parsers of peer and file input
/// that are private to this module). Not an API: results are reduced to what a
/// fuzzer can check.
#[doc(hidden)]
pub mod fuzzing {
    /// The SSHSIG armor and blob parser, from armored text; true if it parsed.
    pub fn sshsig_armored(text: &str) -> bool {
        super::sshsig::parse_armored(text).is_ok()
    }

    /// The SSHSIG blob parser, from the binary blob; true if it parsed.
    pub fn sshsig_blob(blob: &[u8]) -> bool {
        super::sshsig::parse_blob(blob).is_ok()
    }

    /// The authorized_keys parser; the number of lines it returned.
    pub fn authorized_keys(text: &str) -> usize {
        super::authorized_keys::parse(text).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_shape() {
        let c = Challenge::new("srv-1", Duration::from_secs(10));
        assert_eq!(c.nonce.len(), 43, "32 bytes in unpadded base64");
        assert_eq!(URL_SAFE_NO_PAD.decode(&c.nonce).unwrap().len(), 32);
        assert!(!c.nonce.contains(['+', '/', '=']));
        assert_eq!(c.sign, format!("ccrelay-auth-v1:srv-1:{}", c.nonce));
        assert_ne!(
            c.nonce,
            Challenge::new("srv-1", Duration::from_secs(10)).nonce
        );
        assert!(!c.is_expired(Instant::now()));
        assert!(c.is_expired(c.expires_at));
        assert!(c.is_expired(Instant::now() + Duration::from_secs(11)));
    }

    #[test]
    fn bound_texts() {
        let exporter = [7u8; 32];
        let exp = URL_SAFE_NO_PAD.encode(exporter);
        let unbound = Challenge::new("srv", Duration::from_secs(10));
        let s = unbound.sign.clone();
        assert_eq!(unbound.offered_binding(), None);
        let text = |c: &Challenge, o: Option<&str>, b: Option<&str>, req: bool| {
            c.signed_text(o, b, req).map(|t| (t.text, t.unbound))
        };
        assert_eq!(text(&unbound, None, None, true), Ok((s.clone(), true)));
        assert_eq!(
            text(&unbound, Some("ws://127.0.0.1:7878"), None, true),
            Ok((format!("{s}:origin:ws://127.0.0.1:7878"), false))
        );
        // The origin is used exactly as received.
        assert_eq!(
            text(&unbound, Some("WS://X:80/"), None, false),
            Ok((format!("{s}:origin:WS://X:80/"), false))
        );
        assert_eq!(
            text(&unbound, None, Some("tls-exporter"), false),
            Err(AuthError::ChannelBindingUnavailable)
        );
        let bound = unbound.clone().with_channel_binding(Some(exporter));
        assert_eq!(bound.offered_binding(), Some("tls-exporter"));
        assert_eq!(
            text(&bound, None, Some("tls-exporter"), true),
            Ok((format!("{s}:tls-exporter:{exp}"), false))
        );
        assert_eq!(
            text(
                &bound,
                Some("wss://relay.example"),
                Some("tls-exporter"),
                true
            ),
            Ok((
                format!("{s}:origin:wss://relay.example:tls-exporter:{exp}"),
                false
            ))
        );
        // 32 bytes: 43 base64url characters, no padding.
        assert_eq!(exp.len(), 43);
        assert_eq!(text(&bound, None, None, false), Ok((s.clone(), true)));
        assert_eq!(
            text(&bound, Some("wss://relay.example"), None, false),
            Ok((format!("{s}:origin:wss://relay.example"), false))
        );
        assert_eq!(
            text(&bound, Some("wss://relay.example"), None, true),
            Err(AuthError::ChannelBindingRequired)
        );
        assert!(matches!(
            text(&bound, None, Some("tls-unique"), false),
            Err(AuthError::UnsupportedChannelBinding(_))
        ));
        assert_eq!(offered_bindings(false), ["origin"]);
        assert_eq!(offered_bindings(true), ["origin", "tls-exporter"]);
    }

    #[test]
    fn role_serializes_lowercase() {
        assert_eq!(serde_json::to_string(&Role::Owner).unwrap(), "\"owner\"");
        assert_eq!(serde_json::to_string(&Role::Viewer).unwrap(), "\"viewer\"");
    }
}
