//! The SSHSIG wire format (OpenSSH PROTOCOL.sshsig): armor and blob, both ways.
//!
//! Owns: turning the armored text a peer sent into typed parts without trusting
//! anything in it, and building armored signatures for the signer. We parse the
//! envelope ourselves (instead of `SshSig::from_pem`) so that each way a
//! signature can be wrong gets its own [`AuthError`] (a SHA-1 `ssh-rsa`
//! signature, a DSA key, an unknown hash are all just "decode error" inside
//! ssh-key), and we encode it ourselves because ssh-key 0.6.7 encodes
//! `sk-ecdsa` signatures wrongly (flags and counter inside the string).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ssh_key::{HashAlg, PublicKey, Signature, public::KeyData};

use super::AuthError;

/// Largest armored signature we look at (an RSA-16384 SSHSIG is about 5.5 KiB).
pub const MAX_ARMOR_BYTES: usize = 16 * 1024;

const BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
const END: &str = "-----END SSH SIGNATURE-----";
const MAGIC: &[u8] = b"SSHSIG";
const VERSION: u32 = 1;
/// OpenSSH wraps the base64 body at 70 columns.
const LINE_WIDTH: usize = 70;

/// Flag bits of a FIDO (sk-) signature.
pub const SK_USER_PRESENCE: u8 = 0x01;
/// User verified (PIN or biometrics) flag of a FIDO signature.
pub const SK_USER_VERIFIED: u8 = 0x04;

/// One decoded SSHSIG, fields checked for shape only (not the signature itself).
#[derive(Debug, Clone)]
pub struct ParsedSig {
    /// The signer's public key as embedded in the blob.
    pub key: KeyData,
    /// Hash of the message (sha256 or sha512; others are refused while parsing).
    pub hash_alg: HashAlg,
    /// Signature algorithm name, e.g. `rsa-sha2-512`.
    pub sig_algorithm: String,
    /// The signature in ssh-key's form (for sk- keys: raw sig || flags || counter).
    pub signature: Signature,
    /// The FIDO flags byte, for sk- signatures only.
    pub sk_flags: Option<u8>,
}

/// Read from the armored text up to the typed parts.
pub fn parse_armored(armored: &str) -> Result<ParsedSig, AuthError> {
    if armored.len() > MAX_ARMOR_BYTES {
        return Err(AuthError::BadArmor("signature text too large".into()));
    }
    let blob = dearmor(armored)?;
    parse_blob(&blob)
}

fn dearmor(armored: &str) -> Result<Vec<u8>, AuthError> {
    let text = armored.trim();
    let body = text
        .strip_prefix(BEGIN)
        .and_then(|rest| rest.strip_suffix(END))
        .ok_or_else(|| AuthError::BadArmor("missing BEGIN/END SSH SIGNATURE lines".into()))?;
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| AuthError::BadArmor(format!("base64: {e}")))
}

/// A bounds-checked reader of SSH wire data (RFC 4251 §5).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AuthError> {
        if self.0.len() < n {
            return Err(AuthError::BadArmor("truncated signature blob".into()));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, AuthError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, AuthError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<&'a [u8], AuthError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn utf8(&mut self) -> Result<&'a str, AuthError> {
        std::str::from_utf8(self.string()?)
            .map_err(|_| AuthError::BadArmor("non-UTF-8 name in signature blob".into()))
    }
    fn finish(&self) -> Result<(), AuthError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(AuthError::BadArmor(
                "trailing bytes in signature blob".into(),
            ))
        }
    }
}

pub(super) fn parse_blob(blob: &[u8]) -> Result<ParsedSig, AuthError> {
    let mut r = Reader(blob);
    if r.take(MAGIC.len())? != MAGIC {
        return Err(AuthError::BadArmor("not an SSHSIG blob".into()));
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(AuthError::BadArmor(format!("SSHSIG version {version}")));
    }
    let key_blob = r.string()?;
    let namespace = r.utf8()?.to_owned();
    let _reserved = r.string()?; // ignored, as OpenSSH does
    let hash_name = r.utf8()?;
    let sig_blob = r.string()?;
    r.finish()?;

    // Key type first: a DSA or certificate key is refused as such, whatever else is wrong.
    let key_type = Reader(key_blob).utf8().unwrap_or("");
    if key_type == "ssh-dss" {
        return Err(AuthError::UnsupportedKeyType("ssh-dss".into()));
    }
    if key_type.ends_with("-cert-v01@openssh.com") {
        return Err(AuthError::UnsupportedKeyType(key_type.to_owned()));
    }
    let key = PublicKey::from_bytes(key_blob)
        .map_err(|e| AuthError::BadArmor(format!("embedded public key ({key_type}): {e}")))?
        .key_data()
        .clone();
    if matches!(key, KeyData::Other(_)) {
        return Err(AuthError::UnsupportedKeyType(key_type.to_owned()));
    }

    if namespace != super::NAMESPACE {
        return Err(AuthError::WrongNamespace(namespace));
    }
    let hash_alg = match hash_name {
        "sha256" => HashAlg::Sha256,
        "sha512" => HashAlg::Sha512,
        other => return Err(AuthError::UnsupportedHash(other.to_owned())),
    };

    let mut s = Reader(sig_blob);
    let sig_algorithm = s.utf8()?.to_owned();
    let raw = s.string()?;
    if sig_algorithm == "ssh-rsa" {
        return Err(AuthError::RsaSha1Signature);
    }
    let is_sk = matches!(
        sig_algorithm.as_str(),
        "sk-ssh-ed25519@openssh.com" | "sk-ecdsa-sha2-nistp256@openssh.com"
    );
    let mut sk_flags = None;
    let mut data = raw.to_vec();
    if is_sk {
        let flags = s.u8()?;
        let counter = s.u32()?;
        sk_flags = Some(flags);
        data.push(flags);
        data.extend_from_slice(&counter.to_be_bytes());
    }
    s.finish()?;
    let algorithm = ssh_key::Algorithm::new(&sig_algorithm).map_err(|_| {
        AuthError::BadSignature(format!("unknown signature algorithm {sig_algorithm}"))
    })?;
    let signature = Signature::new(algorithm, data).map_err(|e| {
        AuthError::BadSignature(format!("malformed {sig_algorithm} signature: {e}"))
    })?;
    Ok(ParsedSig {
        key,
        hash_alg,
        sig_algorithm,
        signature,
        sk_flags,
    })
}

/// The signature part of an SSHSIG blob, in OpenSSH's encoding.
pub fn encode_signature(sig: &Signature) -> Vec<u8> {
    let alg = sig.algorithm();
    let name = alg.as_str();
    let bytes = sig.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() + name.len() + 8);
    put_string(&mut out, name.as_bytes());
    let sk = matches!(
        alg,
        ssh_key::Algorithm::SkEd25519 | ssh_key::Algorithm::SkEcdsaSha2NistP256
    );
    if sk && bytes.len() >= 5 {
        // ssh-key keeps flags (1 byte) and counter (4 bytes) after the raw signature.
        let (raw, trailer) = bytes.split_at(bytes.len() - 5);
        put_string(&mut out, raw);
        out.extend_from_slice(trailer);
    } else {
        put_string(&mut out, bytes);
    }
    out
}

/// Armored SSHSIG (what `ssh-keygen -Y sign` prints) for a finished signature.
pub fn armor(
    key: &KeyData,
    namespace: &str,
    hash_alg: HashAlg,
    sig: &Signature,
) -> Result<String, ssh_key::Error> {
    let key_blob = PublicKey::from(key.clone()).to_bytes()?;
    let mut blob = Vec::with_capacity(key_blob.len() + sig.as_bytes().len() + 64);
    blob.extend_from_slice(MAGIC);
    blob.extend_from_slice(&VERSION.to_be_bytes());
    put_string(&mut blob, &key_blob);
    put_string(&mut blob, namespace.as_bytes());
    put_string(&mut blob, b"");
    put_string(&mut blob, hash_alg.as_str().as_bytes());
    put_string(&mut blob, &encode_signature(sig));
    let b64 = STANDARD.encode(&blob);
    let mut out = String::with_capacity(b64.len() + b64.len() / LINE_WIDTH + 64);
    out.push_str(BEGIN);
    out.push('\n');
    for chunk in b64.as_bytes().chunks(LINE_WIDTH) {
        // base64 output is ASCII, so every chunk boundary is a char boundary.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(END);
    out.push('\n');
    Ok(out)
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    // Our inputs are keys and signatures (a few KiB): the length always fits.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_bad_armor() {
        for text in [
            "",
            "hello",
            "-----BEGIN SSH SIGNATURE-----\n!!!!\n-----END SSH SIGNATURE-----",
            "-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----",
            "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----",
        ] {
            let err = parse_armored(text).unwrap_err();
            assert_eq!(err.reason_label(), "bad_armor", "{text:?}: {err}");
        }
        let huge = "A".repeat(MAX_ARMOR_BYTES + 1);
        assert_eq!(
            parse_armored(&huge).unwrap_err().reason_label(),
            "bad_armor"
        );
    }

    #[test]
    fn truncated_lengths_never_panic() {
        // A length prefix pointing far past the end of the blob.
        let mut blob = MAGIC.to_vec();
        blob.extend_from_slice(&1u32.to_be_bytes());
        blob.extend_from_slice(&u32::MAX.to_be_bytes());
        let armored = format!("{BEGIN}\n{}\n{END}\n", STANDARD.encode(&blob));
        assert_eq!(
            parse_armored(&armored).unwrap_err().reason_label(),
            "bad_armor"
        );
    }
}
