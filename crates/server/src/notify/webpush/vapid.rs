//! The server's VAPID identity (RFC 8292): one P-256 key pair, made once and kept
//! in the data dir (0600), and the ES256 JWT that signs each push request.
//!
//! Owns: the key file's format (base64url of the 32-byte private scalar, one
//! line), the public key as browsers want it (`applicationServerKey`: the
//! uncompressed point, base64url without padding), and the JWT claims (`aud` =
//! the endpoint's origin, `exp`, `sub`). Must not: send anything or know about
//! subscriptions.

use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};

/// The key file's name in the data dir.
pub const KEY_FILE: &str = "vapid_private_key";

/// How long a VAPID JWT is valid (RFC 8292 allows at most 24 hours; push
/// services refuse more).
pub const JWT_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Why the VAPID key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum VapidError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} does not hold a VAPID private key (base64url of 32 bytes); move it away to make a new one, which invalidates every push subscription"
    )]
    Malformed { path: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// The server's VAPID key pair.
#[derive(Clone)]
pub struct VapidKey {
    signing: SigningKey,
    /// base64url (no padding) of the uncompressed public point (65 bytes).
    public_b64: String,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("VapidKey")
            .field("public", &self.public_b64)
            .finish_non_exhaustive()
    }
}

impl VapidKey {
    /// Load the key from `<data_dir>/vapid_private_key`, or make and keep one
    /// (0600, written atomically) if the file does not exist. A file that exists
    /// but does not hold a key is an error, never silently replaced: every
    /// browser subscription is bound to this key.
    pub fn load_or_create(data_dir: &Path) -> Result<VapidKey, VapidError> {
        let path = data_dir.join(KEY_FILE);
        let shown = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes =
                    URL_SAFE_NO_PAD
                        .decode(text.trim())
                        .map_err(|_| VapidError::Malformed {
                            path: shown.clone(),
                        })?;
                let signing = SigningKey::from_slice(&bytes)
                    .map_err(|_| VapidError::Malformed { path: shown })?;
                Ok(VapidKey::from_signing(signing))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let signing = SigningKey::random(&mut rand::rngs::OsRng);
                let text = format!("{}\n", URL_SAFE_NO_PAD.encode(signing.to_bytes()));
                crate::datadir::write_atomic(&path, text).map_err(|source| VapidError::Write {
                    path: shown,
                    source,
                })?;
                tracing::info!(path = %path.display(), "made the VAPID key for Web Push");
                Ok(VapidKey::from_signing(signing))
            }
            Err(source) => Err(VapidError::Read {
                path: shown,
                source,
            }),
        }
    }

    fn from_signing(signing: SigningKey) -> VapidKey {
        let point = signing.verifying_key().to_encoded_point(false);
        VapidKey {
            public_b64: URL_SAFE_NO_PAD.encode(point.as_bytes()),
            signing,
        }
    }

    /// base64url (no padding) of the uncompressed public point.
    pub fn public_key(&self) -> &str {
        &self.public_b64
    }

    /// The `Authorization` header value for a push to `endpoint`:
    /// `vapid t=<JWT>, k=<public key>` (RFC 8292 §3).
    pub fn authorization(&self, endpoint: &reqwest::Url, subject: &str, now: SystemTime) -> String {
        format!(
            "vapid t={}, k={}",
            self.jwt(endpoint, subject, now),
            self.public_b64
        )
    }

    /// The ES256 JWT: `aud` is the endpoint's origin (scheme, host and a
    /// non-default port), `exp` now + [`JWT_LIFETIME`], `sub` the contact.
    pub fn jwt(&self, endpoint: &reqwest::Url, subject: &str, now: SystemTime) -> String {
        let exp = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(JWT_LIFETIME)
            .as_secs();
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({
            "aud": endpoint.origin().ascii_serialization(),
            "exp": exp,
            "sub": subject,
        });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{claims}");
        // RFC 6979 deterministic ECDSA over SHA-256; JWS wants r || s (64 bytes).
        let sig: Signature = self.signing.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::VerifyingKey;
    use p256::ecdsa::signature::Verifier as _;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_kept_0600_and_stable() {
        let t = tempfile::tempdir().unwrap();
        let a = VapidKey::load_or_create(t.path()).unwrap();
        let mode = std::fs::metadata(t.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = VapidKey::load_or_create(t.path()).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let raw = URL_SAFE_NO_PAD.decode(a.public_key()).unwrap();
        assert_eq!(raw.len(), 65);
        assert_eq!(raw[0], 4);
    }

    #[test]
    fn a_bad_key_file_is_an_error_not_replaced() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join(KEY_FILE), "not a key\n").unwrap();
        let e = VapidKey::load_or_create(t.path()).unwrap_err();
        assert!(matches!(e, VapidError::Malformed { .. }), "{e}");
        assert_eq!(
            std::fs::read_to_string(t.path().join(KEY_FILE)).unwrap(),
            "not a key\n"
        );
    }

    #[test]
    fn jwt_claims_and_signature() {
        let t = tempfile::tempdir().unwrap();
        let key = VapidKey::load_or_create(t.path()).unwrap();
        let url = reqwest::Url::parse("https://push.example:8443/send/abc?x=1").unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let auth = key.authorization(&url, "mailto:ops@example.org", now);
        let rest = auth.strip_prefix("vapid t=").unwrap();
        let (jwt, k) = rest.split_once(", k=").unwrap();
        assert_eq!(k, key.public_key());
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://push.example:8443");
        assert_eq!(claims["exp"], 1_000_000 + 12 * 3600);
        assert_eq!(claims["sub"], "mailto:ops@example.org");
        let vk = VerifyingKey::from_sec1_bytes(&URL_SAFE_NO_PAD.decode(k).unwrap()).unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        vk.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .unwrap();
        // The default port is left out of the origin.
        let url = reqwest::Url::parse("https://push.example:443/a").unwrap();
        let jwt = key.jwt(&url, "mailto:a@b", now);
        let claims: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(jwt.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["aud"], "https://push.example");
    }
}
