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

#[cfg(test)]
mod tests {
    use std::process::{Child, Command};
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::auth::testutil::*;
    use crate::auth::{Challenge, KeySet, verify_response};

    fn accepted(dir: &std::path::Path, public: &PublicKey, armored: &str) {
        let c_sign = "ccrelay-auth-v1:srv:fixed-nonce";
        assert!(
            keygen_verify(dir, public, c_sign, armored),
            "ssh-keygen -Y verify rejects:\n{armored}"
        );
    }

    fn check_both(dir: &tempfile::TempDir, public: &PublicKey, sign: impl Fn(&[u8]) -> String) {
        // ssh-keygen -Y verify over a fixed message...
        let msg = "ccrelay-auth-v1:srv:fixed-nonce";
        accepted(dir.path(), public, &sign(msg.as_bytes()));
        // ...and verify_response over a real challenge.
        let c = Challenge::new("srv", Duration::from_secs(10));
        let keys = KeySet::from_texts("owner", &public.to_openssh().unwrap(), None);
        let armored = sign(c.sign.as_bytes());
        let id = verify_response(&c, &armored, None, localhost(), &keys, SystemTime::now())
            .unwrap_or_else(|e| panic!("{}: {e}", public.algorithm().as_str()));
        assert_eq!(
            id.fingerprint,
            public.fingerprint(HashAlg::Sha256).to_string()
        );
    }

    #[test]
    fn key_files_sign_for_every_type() {
        let dir = tempdir();
        for (kind, bits) in [
            ("ed25519", None),
            ("ecdsa", Some(256)),
            ("ecdsa", Some(384)),
            ("rsa", Some(2048)),
            ("rsa", Some(3072)),
        ] {
            let k = keygen(&dir, &format!("{kind}{}", bits.unwrap_or(0)), kind, bits);
            let key = load_private_key(&k.path).unwrap();
            check_both(&dir, &k.public, |m| sign_with_private_key(&key, m).unwrap());
        }
    }

    #[test]
    fn p521_key_file_or_the_ssh_keygen_fallback() {
        // ssh-key 0.6.7 fails to load about 1 in 3 P-521 key files ("length
        // invalid"); the documented way out is ssh-keygen. Both paths must verify.
        let dir = tempdir();
        for i in 0..3 {
            let k = keygen(&dir, &format!("p521-{i}"), "ecdsa", Some(521));
            match load_private_key(&k.path) {
                Ok(key) => check_both(&dir, &k.public, |m| sign_with_private_key(&key, m).unwrap()),
                Err(e) => {
                    assert!(e.to_string().contains(&format!("p521-{i}")), "{e}");
                    check_both(&dir, &k.public, |m| {
                        sign_with_ssh_keygen(&k.path, m).unwrap()
                    });
                }
            }
        }
    }

    #[test]
    fn ssh_keygen_fallback_signs() {
        let dir = tempdir();
        let k = keygen(&dir, "ed", "ed25519", None);
        check_both(&dir, &k.public, |m| {
            sign_with_ssh_keygen(&k.path, m).unwrap()
        });
        let err = sign_with_ssh_keygen(&dir.path().join("missing"), b"x").unwrap_err();
        assert!(matches!(err, SignError::SshKeygen(_)), "{err}");
    }

    #[test]
    fn encrypted_key_file() {
        let dir = tempdir();
        let k = keygen_pass(&dir, "enc", "ed25519", None, "correct horse");
        let key = load_private_key(&k.path).unwrap();
        assert!(key.is_encrypted());
        assert!(matches!(
            sign_with_private_key(&key, b"x"),
            Err(SignError::Encrypted)
        ));
        let err = decrypt_private_key(&key, "wrong").unwrap_err();
        assert!(matches!(err, SignError::WrongPassphrase), "{err:?}");
        assert_eq!(err.to_string(), "wrong passphrase for the private key");
        let plain = decrypt_private_key(&key, "correct horse").unwrap();
        check_both(&dir, &k.public, |m| {
            sign_with_private_key(&plain, m).unwrap()
        });

        let k = keygen_pass(&dir, "enc-rsa", "rsa", Some(2048), "pw");
        let key = decrypt_private_key(&load_private_key(&k.path).unwrap(), "pw").unwrap();
        check_both(&dir, &k.public, |m| sign_with_private_key(&key, m).unwrap());

        let err = load_private_key(&dir.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    /// An `ssh-agent -D` child, killed on drop.
    struct Agent {
        child: Child,
        socket: std::path::PathBuf,
    }

    impl Agent {
        fn start(dir: &tempfile::TempDir) -> Agent {
            let socket = dir.path().join("agent.sock");
            let child = Command::new("ssh-agent")
                .arg("-D")
                .arg("-a")
                .arg(&socket)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start ssh-agent");
            let agent = Agent { child, socket };
            for _ in 0..100 {
                if agent.socket.exists() {
                    return agent;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("ssh-agent socket did not appear");
        }

        fn add(&self, key: &std::path::Path) {
            let out = Command::new("ssh-add")
                .arg(key)
                .env("SSH_AUTH_SOCK", &self.socket)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ssh-add: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    impl Drop for Agent {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn ssh_agent_signs_ed25519_ecdsa_and_rsa() {
        let dir = tempdir();
        let agent = Agent::start(&dir);
        let keys = [
            keygen(&dir, "ed", "ed25519", None),
            keygen(&dir, "ec", "ecdsa", Some(256)),
            keygen(&dir, "rsa", "rsa", Some(2048)),
        ];
        for k in &keys {
            agent.add(&k.path);
        }
        let listed = agent_keys(&agent.socket).unwrap();
        assert_eq!(listed.len(), 3);
        for k in &keys {
            let from_agent = listed
                .iter()
                .find(|p| p.key_data() == k.public.key_data())
                .expect("key listed by the agent");
            check_both(&dir, from_agent, |m| {
                sign_with_agent(&agent.socket, from_agent, m).unwrap()
            });
            if k.public.key_data().is_rsa() {
                let sig = sign_with_agent(&agent.socket, from_agent, b"m").unwrap();
                assert!(
                    split_fields(&sig)
                        .sig_blob
                        .windows(12)
                        .any(|w| w == b"rsa-sha2-512")
                );
            }
        }
        // A key the agent does not hold.
        let stranger = keygen(&dir, "stranger", "ed25519", None);
        assert!(matches!(
            sign_with_agent(&agent.socket, &stranger.public, b"m"),
            Err(SignError::Agent(_))
        ));
        drop(agent);
        assert!(matches!(
            agent_keys(&dir.path().join("agent.sock")),
            Err(SignError::Agent(_))
        ));
    }
}
