//! The full check of one `auth.response`: parse, verify, authorize, sk flags.
//!
//! Pure (no I/O) apart from reading the monotonic clock for the challenge's
//! expiry, so it is easy to test and bench.

use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use rsa::signature::Verifier as _;
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, PublicKey, SshSig};
use subtle::ConstantTimeEq as _;

use super::keystore::{KeyEntry, KeySet, MAX_RSA_BITS, key_type_refusal};
use super::sshsig::{self, ParsedSig, SK_USER_PRESENCE, SK_USER_VERIFIED};
use super::{AuthError, Challenge, Identity, KeyOptions, NAMESPACE};

/// Full check of one auth.response against the connection's challenge. Pure (no I/O) so it is easy to test and bench.
///
/// `now` is the wall clock for `expiry-time`; the challenge's own expiry is
/// checked against `Instant::now()`. Whether this challenge was already used is
/// the caller's business (one challenge per connection, one response). The
/// steps are also public ([`Candidate::parse`], [`Candidate::authorize`],
/// [`Candidate::verify`]) so that the connection can look the key up before
/// any signature arithmetic and run the arithmetic off the async workers.
pub fn verify_response(
    challenge: &Challenge,
    signature_armored: &str,
    claimed_public_key: Option<&str>,
    peer: IpAddr,
    keys: &KeySet,
    now: SystemTime,
) -> Result<Identity, AuthError> {
    let candidate = Candidate::parse(challenge, signature_armored, claimed_public_key)?;
    let entry = candidate.authorize(keys, peer, now)?;
    candidate.verify(challenge.sign.as_bytes())?;
    Ok(candidate.identity(&entry))
}

/// A response whose signature parsed and whose key ccrelay supports, not yet
/// verified. Everything about it is cheap; only [`Candidate::verify`] costs CPU.
#[derive(Debug, Clone)]
pub struct Candidate {
    sig: ParsedSig,
}

impl Candidate {
    /// Expiry of the challenge, the armor and blob, the key type (DSA, RSA size
    /// and exponent bounds), and `public_key` against the embedded key.
    pub fn parse(
        challenge: &Challenge,
        signature_armored: &str,
        claimed_public_key: Option<&str>,
    ) -> Result<Candidate, AuthError> {
        if challenge.is_expired(Instant::now()) {
            return Err(AuthError::ChallengeExpired);
        }
        let sig = sshsig::parse_armored(signature_armored)?;
        if let Some(refusal) = key_type_refusal(&sig.key) {
            return Err(refusal);
        }
        if let Some(claimed) = claimed_public_key {
            check_claimed_key(claimed, &sig.key)?;
        }
        Ok(Candidate { sig })
    }

    /// The signer's key.
    pub fn key(&self) -> &KeyData {
        &self.sig.key
    }

    /// `SHA256:...` of the signer's key.
    pub fn fingerprint(&self) -> String {
        self.sig.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// Algorithm name of the signer's key (bounded set).
    pub fn key_type(&self) -> &'static str {
        key_type_name(&self.sig.key)
    }

    /// Look the key up in the keys in force (no signature arithmetic): the entry
    /// that lets `peer` in at `now`, with the FIDO flags its options require.
    pub fn authorize(
        &self,
        keys: &KeySet,
        peer: IpAddr,
        now: SystemTime,
    ) -> Result<KeyEntry, AuthError> {
        let entry = keys.find(&self.sig.key, peer, now)?;
        check_sk_flags(&self.sig, entry.options())?;
        Ok(entry.clone())
    }

    /// FIDO flags with no keys-file options (pairing: user presence required).
    pub fn check_presence(&self) -> Result<(), AuthError> {
        check_sk_flags(&self.sig, &KeyOptions::default())
    }

    /// The signature arithmetic over `msg` (the `sign` text, or its bound form).
    /// The only expensive step: callers run it off the async workers.
    pub fn verify(&self, msg: &[u8]) -> Result<(), AuthError> {
        verify_signature(&self.sig, msg)
    }

    /// The identity a verified candidate gets from its keys-file entry.
    pub fn identity(&self, entry: &KeyEntry) -> Identity {
        self.identity_with(entry.role, &entry.line.comment)
    }

    /// The identity with an explicit role and comment (a freshly paired key).
    pub fn identity_with(&self, role: super::Role, comment: &str) -> Identity {
        let mut public_key = PublicKey::from(self.sig.key.clone());
        public_key.set_comment(comment);
        Identity {
            fingerprint: self.fingerprint(),
            comment: comment.to_owned(),
            role,
            key_type: key_type_name(&self.sig.key).to_owned(),
            public_key,
        }
    }
}

/// (fingerprint, key type) of the key inside an armored SSHSIG that parses, even
/// one whose key type is refused — for the refusal's log line.
pub fn describe_signature(signature_armored: &str) -> Option<(String, &'static str)> {
    let sig = sshsig::parse_armored(signature_armored).ok()?;
    Some((
        sig.key.fingerprint(HashAlg::Sha256).to_string(),
        key_type_name(&sig.key),
    ))
}

/// Algorithm name of a key, from a bounded set (safe as a metrics label).
pub fn key_type_name(key: &KeyData) -> &'static str {
    match key.algorithm() {
        Algorithm::Ed25519 => "ssh-ed25519",
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        } => "ecdsa-sha2-nistp256",
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP384,
        } => "ecdsa-sha2-nistp384",
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP521,
        } => "ecdsa-sha2-nistp521",
        Algorithm::Rsa { .. } => "ssh-rsa",
        Algorithm::SkEd25519 => "sk-ssh-ed25519@openssh.com",
        Algorithm::SkEcdsaSha2NistP256 => "sk-ecdsa-sha2-nistp256@openssh.com",
        Algorithm::Dsa => "ssh-dss",
        _ => "other",
    }
}

fn check_claimed_key(claimed: &str, signer: &KeyData) -> Result<(), AuthError> {
    let claimed = PublicKey::from_openssh(claimed.trim())
        .map_err(|e| AuthError::BadPublicKey(e.to_string()))?;
    let a = claimed
        .to_bytes()
        .map_err(|e| AuthError::BadPublicKey(e.to_string()))?;
    let b = PublicKey::from(signer.clone())
        .to_bytes()
        .map_err(|e| AuthError::BadArmor(e.to_string()))?;
    // Key data only (the comment is not part of the blob); constant time.
    if bool::from(a.ct_eq(&b)) {
        Ok(())
    } else {
        Err(AuthError::KeyMismatch)
    }
}

/// Signature algorithms each key type may sign with.
fn algorithm_fits_key(sig_algorithm: &str, key: &KeyData) -> bool {
    match key {
        KeyData::Rsa(_) => matches!(sig_algorithm, "rsa-sha2-256" | "rsa-sha2-512"),
        other => sig_algorithm == key_type_name(other),
    }
}

fn verify_signature(sig: &ParsedSig, msg: &[u8]) -> Result<(), AuthError> {
    if !algorithm_fits_key(&sig.sig_algorithm, &sig.key) {
        return Err(AuthError::BadSignature(format!(
            "{} signature from a {} key",
            sig.sig_algorithm,
            key_type_name(&sig.key)
        )));
    }
    let signed = SshSig::signed_data(NAMESPACE, sig.hash_alg, msg)
        .map_err(|e| AuthError::BadSignature(e.to_string()))?;
    let ok = match &sig.key {
        KeyData::Rsa(rsa) => verify_rsa(rsa, &sig.sig_algorithm, sig.signature.as_bytes(), &signed),
        other => other.verify(&signed, &sig.signature).is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(AuthError::BadSignature(
            "does not verify over this challenge".into(),
        ))
    }
}

/// RSA PKCS#1 v1.5 with SHA-256/512, done here rather than by ssh-key so that
/// keys up to [`MAX_RSA_BITS`] work (the rsa crate's default cap is 4096) and a
/// signature shorter than the modulus is left-padded, as OpenSSH accepts.
fn verify_rsa(
    key: &ssh_key::public::RsaPublicKey,
    sig_algorithm: &str,
    sig: &[u8],
    signed: &[u8],
) -> bool {
    let (Some(n), Some(e)) = (key.n.as_positive_bytes(), key.e.as_positive_bytes()) else {
        return false;
    };
    let Ok(pk) = rsa::RsaPublicKey::new_with_max_size(
        rsa::BigUint::from_bytes_be(n),
        rsa::BigUint::from_bytes_be(e),
        MAX_RSA_BITS,
    ) else {
        return false;
    };
    let k = rsa::traits::PublicKeyParts::size(&pk);
    if sig.len() > k {
        return false;
    }
    let mut padded = vec![0u8; k - sig.len()];
    padded.extend_from_slice(sig);
    let Ok(s) = rsa::pkcs1v15::Signature::try_from(padded.as_slice()) else {
        return false;
    };
    match sig_algorithm {
        "rsa-sha2-256" => rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(pk)
            .verify(signed, &s)
            .is_ok(),
        "rsa-sha2-512" => rsa::pkcs1v15::VerifyingKey::<sha2::Sha512>::new(pk)
            .verify(signed, &s)
            .is_ok(),
        _ => false,
    }
}

/// FIDO flags: user presence unless `no-touch-required`; user verification when
/// `verify-required` (which no non-sk signature can satisfy: fail closed).
fn check_sk_flags(sig: &ParsedSig, options: &KeyOptions) -> Result<(), AuthError> {
    match sig.sk_flags {
        Some(flags) => {
            if !options.no_touch_required && flags & SK_USER_PRESENCE == 0 {
                return Err(AuthError::UserPresenceMissing);
            }
            if options.verify_required && flags & SK_USER_VERIFIED == 0 {
                return Err(AuthError::UserVerificationMissing);
            }
            Ok(())
        }
        None if options.verify_required => Err(AuthError::UserVerificationMissing),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::{Duration, SystemTime};

    use rsa::signature::Signer as _;
    use ssh_key::public::{KeyData, SkEcdsaSha2NistP256, SkEd25519};
    use ssh_key::{Algorithm, HashAlg, PrivateKey, Signature, SshSig};

    use super::*;
    use crate::auth::sshsig::armor;
    use crate::auth::testutil::*;
    use crate::auth::{Challenge, KeySet, Role};

    fn challenge() -> Challenge {
        Challenge::new("test-server", Duration::from_secs(10))
    }

    fn set(owner: &str) -> KeySet {
        KeySet::from_texts("owner-test", owner, None)
    }

    fn verify(
        c: &Challenge,
        sig: &str,
        claimed: Option<&str>,
        keys: &KeySet,
    ) -> Result<Identity, AuthError> {
        verify_response(c, sig, claimed, localhost(), keys, SystemTime::now())
    }

    fn label(r: Result<Identity, AuthError>) -> &'static str {
        match r {
            Ok(id) => panic!("accepted {id:?}"),
            Err(e) => e.reason_label(),
        }
    }

    #[test]
    fn every_supported_key_type_verifies_with_the_right_identity() {
        let dir = tempdir();
        for (kind, bits, key_type) in [
            ("ed25519", None, "ssh-ed25519"),
            ("ecdsa", Some(256), "ecdsa-sha2-nistp256"),
            ("ecdsa", Some(384), "ecdsa-sha2-nistp384"),
            ("ecdsa", Some(521), "ecdsa-sha2-nistp521"),
            ("rsa", Some(2048), "ssh-rsa"),
            ("rsa", Some(3072), "ssh-rsa"),
        ] {
            let name = format!("{kind}{}", bits.unwrap_or(0));
            let k = keygen(&dir, &name, kind, bits);
            let viewer = keygen(&dir, &format!("{name}-viewer"), kind, bits);
            let keys = KeySet::from_texts(
                "owner",
                &format!("{} the owner\n", k.pub_line_no_comment()),
                Some((
                    "viewer",
                    &format!("{} the viewer", viewer.pub_line_no_comment()),
                )),
            );
            let c = challenge();
            let sig = keygen_sign(&k.path, NAMESPACE, &c.sign, &[]);
            if kind == "rsa" {
                assert!(
                    split_fields(&sig)
                        .sig_blob
                        .windows(12)
                        .any(|w| w == b"rsa-sha2-512")
                );
            }
            let id = verify(&c, &sig, Some(&k.pub_line), &keys)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(id.fingerprint, k.fingerprint, "{name}");
            assert_eq!(id.role, Role::Owner);
            assert_eq!(id.comment, "the owner");
            assert_eq!(id.key_type, key_type);
            assert_eq!(id.public_key.key_data(), k.public.key_data());
            // Without the optional public_key too.
            assert!(verify(&c, &sig, None, &keys).is_ok());
            // sha256 message hash is accepted as well.
            let sig256 = keygen_sign(&k.path, NAMESPACE, &c.sign, &["-O", "hashalg=sha256"]);
            assert_eq!(split_fields(&sig256).hash, b"sha256");
            assert!(verify(&c, &sig256, None, &keys).is_ok(), "{name} sha256");
            // The viewer file gives role viewer.
            let vsig = keygen_sign(&viewer.path, NAMESPACE, &c.sign, &[]);
            let id = verify(&c, &vsig, None, &keys).unwrap();
            assert_eq!(
                (id.role, id.comment.as_str(), id.fingerprint.as_str()),
                (Role::Viewer, "the viewer", viewer.fingerprint.as_str())
            );
        }
    }

    #[test]
    fn rsa_sha2_256_signature_is_accepted() {
        let dir = tempdir();
        let k = keygen(&dir, "rsa", "rsa", Some(2048));
        let keys = set(&k.pub_line);
        let c = challenge();
        let private = rsa_private(&k.path);
        let signed = SshSig::signed_data(NAMESPACE, HashAlg::Sha512, c.sign.as_bytes()).unwrap();
        let raw = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(private).sign(&signed);
        let sig = Signature::new(
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
            Box::<[u8]>::from(raw).into_vec(),
        )
        .unwrap();
        let armored = armor(k.public.key_data(), NAMESPACE, HashAlg::Sha512, &sig).unwrap();
        assert!(
            keygen_verify(dir.path(), &k.public, &c.sign, &armored),
            "ssh-keygen rejects our rsa-sha2-256 SSHSIG"
        );
        assert!(verify(&c, &armored, None, &keys).is_ok());
    }

    fn rsa_private(path: &std::path::Path) -> rsa::RsaPrivateKey {
        let key = PrivateKey::read_openssh_file(path).unwrap();
        let kp = key.key_data().rsa().unwrap();
        let big = |m: &ssh_key::Mpint| rsa::BigUint::from_bytes_be(m.as_positive_bytes().unwrap());
        rsa::RsaPrivateKey::from_components(
            big(&kp.public.n),
            big(&kp.public.e),
            big(&kp.private.d),
            vec![big(&kp.private.p), big(&kp.private.q)],
        )
        .unwrap()
    }

    #[test]
    fn each_failure_reason_is_detected() {
        let dir = tempdir();
        let k = keygen(&dir, "listed", "ed25519", None);
        let other = keygen(&dir, "other", "ed25519", None);
        let keys = set(&format!("{}\n", k.pub_line));
        let c = challenge();
        let good = keygen_sign(&k.path, NAMESPACE, &c.sign, &[]);
        assert!(verify(&c, &good, Some(&k.pub_line), &keys).is_ok());

        // Key not listed.
        let sig = keygen_sign(&other.path, NAMESPACE, &c.sign, &[]);
        assert_eq!(label(verify(&c, &sig, None, &keys)), "not_listed");

        // Signature over another message: another challenge, or a trailing newline.
        let sig = keygen_sign(&k.path, NAMESPACE, &challenge().sign, &[]);
        assert_eq!(label(verify(&c, &sig, None, &keys)), "bad_signature");
        let sig = keygen_sign(&k.path, NAMESPACE, &format!("{}\n", c.sign), &[]);
        assert_eq!(label(verify(&c, &sig, None, &keys)), "bad_signature");

        // Wrong namespace.
        let sig = keygen_sign(&k.path, "file", &c.sign, &[]);
        assert_eq!(label(verify(&c, &sig, None, &keys)), "wrong_namespace");

        // Tampered signature bytes, tampered embedded key.
        let mut f = split_fields(&good);
        let last = f.sig_blob.len() - 1;
        f.sig_blob[last] ^= 0x01;
        assert_eq!(
            label(verify(&c, &join_fields(&f), None, &keys)),
            "bad_signature"
        );
        // A tampered embedded key is another key: it is looked up (and not
        // found) before any signature arithmetic.
        let mut f = split_fields(&good);
        let last = f.key_blob.len() - 1;
        f.key_blob[last] ^= 0x01;
        assert_eq!(
            label(verify(&c, &join_fields(&f), None, &keys)),
            "not_listed"
        );

        // A hash other than sha256/sha512.
        let mut f = split_fields(&good);
        f.hash = b"sha384".to_vec();
        assert_eq!(
            label(verify(&c, &join_fields(&f), None, &keys)),
            "unsupported_hash"
        );

        // public_key mismatch; a different comment is fine; garbage is refused.
        assert_eq!(
            label(verify(&c, &good, Some(&other.pub_line), &keys)),
            "key_mismatch"
        );
        assert!(
            verify(
                &c,
                &good,
                Some(&format!("{} another comment", k.pub_line_no_comment())),
                &keys
            )
            .is_ok()
        );
        assert_eq!(
            label(verify(&c, &good, Some("ssh-ed25519 AAAA"), &keys)),
            "bad_public_key"
        );

        // Garbage armor.
        for garbage in [
            "",
            "not a signature",
            &good[..good.len() / 2],
            &good.replace('A', "B"),
        ] {
            let l = label(verify(&c, garbage, None, &keys));
            assert!(l == "bad_armor" || l == "bad_signature", "{garbage:?}: {l}");
        }
        assert_eq!(label(verify(&c, "garbage", None, &keys)), "bad_armor");

        // Expired challenge (checked before anything else).
        let mut expired = c.clone();
        expired.expires_at = std::time::Instant::now() - Duration::from_millis(1);
        assert_eq!(
            label(verify(&expired, &good, None, &keys)),
            "challenge_expired"
        );
        let zero = Challenge::new("test-server", Duration::ZERO);
        let sig = keygen_sign(&k.path, NAMESPACE, &zero.sign, &[]);
        assert_eq!(label(verify(&zero, &sig, None, &keys)), "challenge_expired");

        // A disallowed option makes the key unusable.
        let keys_cmd = set(&format!("command=\"/bin/true\" {}\n", k.pub_line));
        assert_eq!(
            label(verify(&c, &good, None, &keys_cmd)),
            "disallowed_option"
        );
        let keys_unknown = set(&format!("frobnicate {}\n", k.pub_line));
        assert_eq!(
            label(verify(&c, &good, None, &keys_unknown)),
            "disallowed_option"
        );
    }

    #[test]
    fn expiry_time_option() {
        let dir = tempdir();
        let k = keygen(&dir, "k", "ed25519", None);
        let c = challenge();
        let sig = keygen_sign(&k.path, NAMESPACE, &c.sign, &[]);
        let past = set(&format!("expiry-time=\"20200101Z\" {}\n", k.pub_line));
        assert_eq!(label(verify(&c, &sig, None, &past)), "key_expired");
        let past_local = set(&format!("expiry-time=\"202001011200\" {}\n", k.pub_line));
        assert_eq!(label(verify(&c, &sig, None, &past_local)), "key_expired");
        let future = set(&format!("expiry-time=\"29991231\" {}\n", k.pub_line));
        assert!(verify(&c, &sig, None, &future).is_ok());
        // `now` is the caller's clock: the same key at a time before the expiry.
        let then = SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
        assert!(verify_response(&c, &sig, None, localhost(), &past, then).is_ok());
    }

    #[test]
    fn from_option_patterns() {
        let dir = tempdir();
        let k = keygen(&dir, "k", "ed25519", None);
        let c = challenge();
        let sig = keygen_sign(&k.path, NAMESPACE, &c.sign, &[]);
        let check = |from: &str, peer: &str| {
            let keys = set(&format!("from=\"{from}\" {}\n", k.pub_line));
            let peer: IpAddr = peer.parse().unwrap();
            verify_response(&c, &sig, None, peer, &keys, SystemTime::now())
                .map(|_| ())
                .map_err(|e| e.reason_label())
        };
        assert_eq!(check("10.0.0.1", "127.0.0.1"), Err("from_denied"));
        assert_eq!(check("127.0.0.1", "127.0.0.1"), Ok(()));
        // Negation denies outright, even when another entry matches.
        assert_eq!(check("!127.0.0.1,*", "127.0.0.1"), Err("from_denied"));
        assert_eq!(check("!10.0.0.1,*", "127.0.0.1"), Ok(()));
        // CIDR.
        assert_eq!(check("10.0.0.0/8", "127.0.0.1"), Err("from_denied"));
        assert_eq!(check("127.0.0.0/8", "127.0.0.1"), Ok(()));
        assert_eq!(
            check("127.0.0.1/8", "127.0.0.1"),
            Err("from_denied"),
            "inconsistent mask"
        );
        // Wildcards.
        assert_eq!(check("127.0.0.?", "127.0.0.1"), Ok(()));
        assert_eq!(check("10.*", "127.0.0.1"), Err("from_denied"));
        // IPv4-mapped IPv6 peer is matched as IPv4.
        assert_eq!(check("127.0.0.1", "::ffff:127.0.0.1"), Ok(()));
        assert_eq!(
            check("!127.0.0.1,*", "::ffff:127.0.0.1"),
            Err("from_denied")
        );
        // Host names are never looked up.
        assert_eq!(check("localhost", "127.0.0.1"), Err("from_denied"));
    }

    #[test]
    fn dsa_is_refused() {
        // In the keys file: refused at load.
        let keys = set(&format!("ssh-dss {DSA_FIXTURE} old\n"));
        assert_eq!(keys.len(), 0);
        let dsa = ssh_key::PublicKey::from_openssh(&format!("ssh-dss {DSA_FIXTURE}")).unwrap();
        assert_eq!(
            keys.authorize(&dsa, localhost(), SystemTime::now())
                .unwrap_err()
                .reason_label(),
            "unsupported_key_type"
        );
        // In a response: refused before any verification.
        let c = challenge();
        let mut sig_blob = Vec::new();
        ssh_string(&mut sig_blob, b"ssh-dss");
        ssh_string(&mut sig_blob, &[7u8; 40]);
        let f = SigFields {
            key_blob: dsa.to_bytes().unwrap(),
            namespace: NAMESPACE.as_bytes().to_vec(),
            reserved: vec![],
            hash: b"sha512".to_vec(),
            sig_blob,
        };
        assert_eq!(
            label(verify(&c, &join_fields(&f), None, &keys)),
            "unsupported_key_type"
        );
    }

    #[test]
    fn rsa_1024_is_refused() {
        let dir = tempdir();
        let k = keygen(&dir, "rsa1024", "rsa", Some(1024));
        let keys = set(&format!("{}\n", k.pub_line));
        assert_eq!(keys.len(), 0, "refused at load");
        let c = challenge();
        let sig = keygen_sign(&k.path, NAMESPACE, &c.sign, &[]);
        assert_eq!(label(verify(&c, &sig, None, &keys)), "rsa_key_too_small");
        match verify(&c, &sig, None, &keys) {
            Err(AuthError::RsaKeyTooSmall { bits }) => assert_eq!(bits, 1024),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rsa_sha1_signature_is_refused() {
        use sha1::Digest as _;
        let dir = tempdir();
        let k = keygen(&dir, "rsa", "rsa", Some(2048));
        let keys = set(&format!("{}\n", k.pub_line));
        let c = challenge();
        let private = rsa_private(&k.path);
        let signed = SshSig::signed_data(NAMESPACE, HashAlg::Sha512, c.sign.as_bytes()).unwrap();
        let raw = private
            .sign(
                rsa::Pkcs1v15Sign::new::<sha1::Sha1>(),
                &sha1::Sha1::digest(&signed),
            )
            .unwrap();
        // Sanity: this really is a valid SHA-1 PKCS#1 v1.5 signature by this key.
        rsa::RsaPublicKey::from(&private)
            .verify(
                rsa::Pkcs1v15Sign::new::<sha1::Sha1>(),
                &sha1::Sha1::digest(&signed),
                &raw,
            )
            .unwrap();
        let mut sig_blob = Vec::new();
        ssh_string(&mut sig_blob, b"ssh-rsa");
        ssh_string(&mut sig_blob, &raw);
        let f = SigFields {
            key_blob: k.public.to_bytes().unwrap(),
            namespace: NAMESPACE.as_bytes().to_vec(),
            reserved: vec![],
            hash: b"sha512".to_vec(),
            sig_blob,
        };
        assert_eq!(label(verify(&c, &join_fields(&f), None, &keys)), "rsa_sha1");
    }

    // ---- FIDO security keys, signed by hand: an sk signature is made by the
    // token over sha256(application) || flags || counter || sha256(message).

    fn sk_data(application: &str, flags: u8, counter: u32, signed: &[u8]) -> Vec<u8> {
        use sha2::Digest as _;
        let mut d = sha2::Sha256::digest(application.as_bytes()).to_vec();
        d.push(flags);
        d.extend_from_slice(&counter.to_be_bytes());
        d.extend_from_slice(&sha2::Sha256::digest(signed));
        d
    }

    struct SkKey {
        private: PrivateKey,
        public: KeyData,
        alg: Algorithm,
    }

    impl SkKey {
        fn ed25519() -> Self {
            let private = PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519).unwrap();
            let ed = *private.public_key().key_data().ed25519().unwrap();
            SkKey {
                private,
                public: KeyData::SkEd25519(SkEd25519::new(ed, "ssh:")),
                alg: Algorithm::SkEd25519,
            }
        }

        fn ecdsa() -> Self {
            let private = PrivateKey::random(
                &mut rand::rngs::OsRng,
                Algorithm::Ecdsa {
                    curve: ssh_key::EcdsaCurve::NistP256,
                },
            )
            .unwrap();
            let point = match private.public_key().key_data().ecdsa().unwrap() {
                ssh_key::public::EcdsaPublicKey::NistP256(p) => *p,
                _ => unreachable!(),
            };
            SkKey {
                private,
                public: KeyData::SkEcdsaSha2NistP256(SkEcdsaSha2NistP256::new(point, "ssh:")),
                alg: Algorithm::SkEcdsaSha2NistP256,
            }
        }

        fn line(&self) -> String {
            ssh_key::PublicKey::from(self.public.clone())
                .to_openssh()
                .unwrap()
        }

        fn sign(&self, msg: &str, flags: u8) -> String {
            let signed = SshSig::signed_data(NAMESPACE, HashAlg::Sha512, msg.as_bytes()).unwrap();
            let data = sk_data("ssh:", flags, 42, &signed);
            let inner: Signature = self.private.key_data().try_sign(&data).unwrap();
            let mut raw = inner.as_bytes().to_vec();
            raw.push(flags);
            raw.extend_from_slice(&42u32.to_be_bytes());
            let sig = Signature::new(self.alg.clone(), raw).unwrap();
            armor(&self.public, NAMESPACE, HashAlg::Sha512, &sig).unwrap()
        }
    }

    #[test]
    fn sk_signatures_and_their_flags() {
        let dir = tempdir();
        for sk in [SkKey::ed25519(), SkKey::ecdsa()] {
            let name = sk.alg.as_str().to_owned();
            let c = challenge();
            let plain = set(&format!("{} token\n", sk.line()));
            let touched = sk.sign(&c.sign, SK_USER_PRESENCE);
            // The hand-made signature is a real one: OpenSSH accepts it.
            let public = ssh_key::PublicKey::from(sk.public.clone());
            assert!(
                keygen_verify(dir.path(), &public, &c.sign, &touched),
                "{name}: ssh-keygen rejects it"
            );

            let id = verify(&c, &touched, Some(&sk.line()), &plain)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(id.key_type, name);
            assert_eq!(
                id.fingerprint,
                public.fingerprint(HashAlg::Sha256).to_string()
            );

            // No user presence: refused unless no-touch-required.
            let untouched = sk.sign(&c.sign, 0);
            assert_eq!(
                label(verify(&c, &untouched, None, &plain)),
                "user_presence_missing",
                "{name}"
            );
            let no_touch = set(&format!("no-touch-required {}\n", sk.line()));
            assert!(verify(&c, &untouched, None, &no_touch).is_ok(), "{name}");

            // verify-required needs the UV flag.
            let uv = set(&format!("verify-required {}\n", sk.line()));
            assert_eq!(
                label(verify(&c, &touched, None, &uv)),
                "user_verification_missing",
                "{name}"
            );
            let verified = sk.sign(&c.sign, SK_USER_PRESENCE | SK_USER_VERIFIED);
            assert!(verify(&c, &verified, None, &uv).is_ok(), "{name}");
            let uv_no_touch = set(&format!(
                "verify-required,no-touch-required {}\n",
                sk.line()
            ));
            assert!(verify(&c, &sk.sign(&c.sign, SK_USER_VERIFIED), None, &uv_no_touch).is_ok());

            // The flags are signed: flipping them in transit breaks the signature.
            let mut f = split_fields(&untouched);
            let flags_at = f.sig_blob.len() - 5;
            f.sig_blob[flags_at] = SK_USER_PRESENCE;
            assert_eq!(
                label(verify(&c, &join_fields(&f), None, &plain)),
                "bad_signature",
                "{name}"
            );
        }
    }

    #[test]
    fn verify_required_on_a_plain_key_fails_closed() {
        let dir = tempdir();
        let k = keygen(&dir, "k", "ed25519", None);
        let c = challenge();
        let sig = keygen_sign(&k.path, NAMESPACE, &c.sign, &[]);
        let keys = set(&format!("verify-required {}\n", k.pub_line));
        assert_eq!(
            label(verify(&c, &sig, None, &keys)),
            "user_verification_missing"
        );
        // no-touch-required means nothing for a plain key.
        let keys = set(&format!("no-touch-required {}\n", k.pub_line));
        assert!(verify(&c, &sig, None, &keys).is_ok());
    }
}
