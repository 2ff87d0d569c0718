//! Client side: answering a challenge with a key file, ssh-agent or `ssh-keygen`.
//!
//! Owns: producing the armored SSHSIG (namespace `ccrelay-auth`, sha512) that
//! `verify_response` accepts. Reused by `ccrelay attach`. Works around two
//! ssh-key 0.6.7 bugs: RSA key-file signing (it builds the private key from
//! p, p instead of p, q; RustCrypto/SSH#387), so RSA is signed here with the rsa
//! crate; and sk-ecdsa SSHSIG encoding, so the armor is built by `sshsig`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rsa::signature::RandomizedSigner as _;
use ssh_key::private::{KeypairData, RsaKeypair};
use ssh_key::{Algorithm, HashAlg, PrivateKey, PublicKey, Signature, SshSig};

use super::NAMESPACE;
use super::sshsig::armor;

/// Why signing failed (shown to the user of `ccrelay attach`).
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key file could not be read or parsed.
    #[error("cannot load private key {path}: {reason}")]
    Load {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key is encrypted: call `decrypt_private_key` first.
    #[error("private key is encrypted; a passphrase is needed")]
    Encrypted,
    /// The passphrase is wrong (or the key file is corrupt).
    #[error("wrong passphrase for the private key")]
    WrongPassphrase,
    /// ccrelay cannot sign with this kind of key itself (FIDO keys, DSA...).
    #[error("cannot sign with a {0} key here; use ssh-agent or ssh-keygen")]
    Unsupported(String),
    /// The signature could not be made.
    #[error("signing failed: {0}")]
    Crypto(String),
    /// `ssh-keygen -Y sign` failed or could not be run.
    #[error("ssh-keygen -Y sign failed: {0}")]
    SshKeygen(String),
    /// ssh-agent could not be reached or refused.
    #[error("ssh-agent: {0}")]
    Agent(String),
}

/// OpenSSH format; may be encrypted.
pub fn load_private_key(path: &Path) -> Result<PrivateKey, SignError> {
    PrivateKey::read_openssh_file(path).map_err(|e| SignError::Load {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Decrypt an encrypted key (an unencrypted one is returned as is).
pub fn decrypt_private_key(key: &PrivateKey, passphrase: &str) -> Result<PrivateKey, SignError> {
    if !key.is_encrypted() {
        return Ok(key.clone());
    }
    key.decrypt(passphrase).map_err(|e| match e {
        ssh_key::Error::Crypto | ssh_key::Error::Encoding(_) => SignError::WrongPassphrase,
        other => SignError::Crypto(other.to_string()),
    })
}

/// Armored SSHSIG over `msg` (namespace ccrelay-auth, sha512) with a decrypted key.
pub fn sign_with_private_key(key: &PrivateKey, msg: &[u8]) -> Result<String, SignError> {
    if key.is_encrypted() {
        return Err(SignError::Encrypted);
    }
    let public = key.public_key().key_data();
    let signature = match key.key_data() {
        KeypairData::Rsa(rsa) => sign_rsa(rsa, msg)?,
        KeypairData::Ed25519(_) | KeypairData::Ecdsa(_) => {
            let sig = key
                .sign(NAMESPACE, HashAlg::Sha512, msg)
                .map_err(|e| SignError::Crypto(e.to_string()))?;
            sig.signature().clone()
        }
        other => {
            let name = other
                .algorithm()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_else(|_| "unknown".into());
            return Err(SignError::Unsupported(name));
        }
    };
    armor(public, NAMESPACE, HashAlg::Sha512, &signature)
        .map_err(|e| SignError::Crypto(e.to_string()))
}

/// rsa-sha2-512 over the SSHSIG signed data, with the rsa crate (the ssh-key bug workaround).
fn sign_rsa(keypair: &RsaKeypair, msg: &[u8]) -> Result<Signature, SignError> {
    let big = |m: &ssh_key::Mpint| {
        m.as_positive_bytes()
            .map(rsa::BigUint::from_bytes_be)
            .ok_or_else(|| SignError::Crypto("negative RSA key component".into()))
    };
    let private = rsa::RsaPrivateKey::from_components(
        big(&keypair.public.n)?,
        big(&keypair.public.e)?,
        big(&keypair.private.d)?,
        vec![big(&keypair.private.p)?, big(&keypair.private.q)?],
    )
    .map_err(|e| SignError::Crypto(e.to_string()))?;
    let signed = SshSig::signed_data(NAMESPACE, HashAlg::Sha512, msg)
        .map_err(|e| SignError::Crypto(e.to_string()))?;
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha512>::new(private);
    // Randomized: blinding of the private-key operation.
    let sig = signer
        .try_sign_with_rng(&mut rand::rngs::OsRng, &signed)
        .map_err(|e| SignError::Crypto(e.to_string()))?;
    Signature::new(
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        Box::<[u8]>::from(sig).into_vec(),
    )
    .map_err(|e| SignError::Crypto(e.to_string()))
}

/// Fallback via `ssh-keygen -Y sign -n ccrelay-auth -f KEY` (P-521 load failures,
/// FIDO keys; a `.pub` path signs through the agent). The message goes on stdin.
pub fn sign_with_ssh_keygen(key_path: &Path, msg: &[u8]) -> Result<String, SignError> {
    let mut child = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", NAMESPACE, "-f"])
        .arg(key_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SignError::SshKeygen(format!("cannot run ssh-keygen: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(msg)
            .map_err(|e| SignError::SshKeygen(format!("writing the message: {e}")))?;
        // Dropping stdin closes it: ssh-keygen reads to end of file.
    }
    let out = child
        .wait_with_output()
        .map_err(|e| SignError::SshKeygen(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || !stdout.contains("-----BEGIN SSH SIGNATURE-----") {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(SignError::SshKeygen(format!(
            "{} ({})",
            stderr.trim(),
            out.status
        )));
    }
    Ok(stdout)
}

/// SSH_AUTH_SOCK identities (sync; certificates are skipped).
pub fn agent_keys(socket: &Path) -> Result<Vec<PublicKey>, SignError> {
    let mut client = ssh_agent_client_rs::Client::connect(socket)
        .map_err(|e| SignError::Agent(e.to_string()))?;
    let ids = client
        .list_all_identities()
        .map_err(|e| SignError::Agent(e.to_string()))?;
    Ok(ids
        .into_iter()
        .filter_map(|id| match id {
            ssh_agent_client_rs::Identity::PublicKey(pk) => Some(pk.into_owned()),
            ssh_agent_client_rs::Identity::Certificate(_) => None,
        })
        .collect())
}

/// Builds SshSig::signed_data → agent sign → SSHSIG armor. RSA keys request
/// rsa-sha2-512 (the agent client always sets that flag; checked on return).
pub fn sign_with_agent(socket: &Path, key: &PublicKey, msg: &[u8]) -> Result<String, SignError> {
    let signed = SshSig::signed_data(NAMESPACE, HashAlg::Sha512, msg)
        .map_err(|e| SignError::Crypto(e.to_string()))?;
    let mut client = ssh_agent_client_rs::Client::connect(socket)
        .map_err(|e| SignError::Agent(e.to_string()))?;
    let sig = client
        .sign(key, &signed)
        .map_err(|e| SignError::Agent(e.to_string()))?;
    if key.key_data().is_rsa()
        && sig.algorithm()
            != (Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            })
    {
        return Err(SignError::Agent(format!(
            "agent answered {} instead of rsa-sha2-512",
            sig.algorithm().as_str()
        )));
    }
    armor(key.key_data(), NAMESPACE, HashAlg::Sha512, &sig)
        .map_err(|e| SignError::Crypto(e.to_string()))
}
