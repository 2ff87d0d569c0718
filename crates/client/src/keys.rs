//! Which SSH keys `ccrelay attach` offers, in which order, and how each one signs.
//!
//! Owns: key discovery (ssh-agent identities, `-i`, the default key files),
//! unlocking encrypted key files (terminal prompt or `SSH_ASKPASS`, as ssh does)
//! and producing the armored SSHSIG for one challenge. Everything here is
//! blocking (agent socket, terminal, child processes): the async side calls it
//! through `tokio::task::block_in_place`.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ssh_key::{HashAlg, PrivateKey, PublicKey};

use ccrelay_server::auth::{
    SignError, agent_keys, decrypt_private_key, load_private_key, sign_with_agent,
    sign_with_private_key, sign_with_ssh_keygen,
};

/// The key files tried when neither `-i` nor an agent key was accepted, in ssh's order.
const DEFAULT_KEY_FILES: &[&str] = &["id_ed25519", "id_ecdsa", "id_rsa"];
/// Passphrase attempts per key file before it is skipped (ssh's default too).
const PASSPHRASE_TRIES: usize = 3;

/// Why no key could even be offered.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// `-i` named a file that cannot be used.
    #[error("{0}")]
    Identity(SignError),
    /// Neither an agent key nor a default key file exists.
    #[error(
        "no SSH key to try: no ssh-agent keys (SSH_AUTH_SOCK) and none of ~/.ssh/{{id_ed25519,id_ecdsa,id_rsa}}; use -i KEY_FILE"
    )]
    NoKeys,
}

/// How one candidate signs a challenge, once unlocked. Cheap to clone and `Send`,
/// so it can be kept for reconnects.
#[derive(Debug, Clone)]
pub enum Signer {
    /// An identity held by ssh-agent.
    Agent { socket: PathBuf, key: PublicKey },
    /// A decrypted key file.
    Key(Box<PrivateKey>),
    /// A key file ssh-key cannot load (e.g. FIDO): `ssh-keygen -Y sign` does it.
    SshKeygen(PathBuf),
}

impl Signer {
    /// Armored SSHSIG over `msg`, plus the public key line to send along when known.
    pub fn sign(&self, msg: &[u8]) -> Result<(String, Option<String>), SignError> {
        match self {
            Signer::Agent { socket, key } => {
                let sig = sign_with_agent(socket, key, msg)?;
                Ok((sig, key.to_openssh().ok()))
            }
            Signer::Key(key) => {
                let sig = sign_with_private_key(key, msg)?;
                Ok((sig, key.public_key().to_openssh().ok()))
            }
            // The SSHSIG embeds the key; the server needs nothing more.
            Signer::SshKeygen(path) => Ok((sign_with_ssh_keygen(path, msg)?, None)),
        }
    }
}

/// Where a candidate comes from, before it is unlocked.
#[derive(Debug, Clone)]
enum Source {
    Agent { socket: PathBuf, key: PublicKey },
    File { path: PathBuf },
}

/// One key ccrelay will offer, with the words used to name it in errors.
#[derive(Debug, Clone)]
pub struct Candidate {
    source: Source,
    /// `id_ed25519 (SHA256:...)` or `agent key SHA256:... (comment)`.
    pub label: String,
    /// The unlocked signer, kept so a reconnect does not ask for the passphrase again.
    signer: Option<Signer>,
}

impl Candidate {
    fn agent(socket: &Path, key: PublicKey) -> Candidate {
        let fp = key.fingerprint(HashAlg::Sha256);
        let label = if key.comment().is_empty() {
            format!("agent key {fp}")
        } else {
            format!("agent key {fp} ({})", key.comment())
        };
        Candidate {
            source: Source::Agent {
                socket: socket.to_owned(),
                key,
            },
            label,
            signer: None,
        }
    }

    fn file(path: &Path) -> Candidate {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        // The fingerprint comes from the key file itself (its public half is not
        // encrypted) or from the `.pub` beside it for types ssh-key cannot load.
        let public = load_private_key(path)
            .map(|k| k.public_key().clone())
            .ok()
            .or_else(|| {
                let pub_path = PathBuf::from(format!("{}.pub", path.display()));
                std::fs::read_to_string(pub_path)
                    .ok()
                    .and_then(|t| PublicKey::from_openssh(t.trim()).ok())
            });
        let label = match public {
            Some(k) => format!("{name} ({})", k.fingerprint(HashAlg::Sha256)),
            None => name,
        };
        Candidate {
            source: Source::File {
                path: path.to_owned(),
            },
            label,
            signer: None,
        }
    }

    /// The public key of an agent candidate (to skip a key file the agent already offered).
    fn agent_public(&self) -> Option<&PublicKey> {
        match &self.source {
            Source::Agent { key, .. } => Some(key),
            Source::File { .. } => None,
        }
    }

    /// The signer, unlocking the key file first if needed. Asks for a passphrase
    /// only with `may_prompt` (not while the line editor owns the terminal).
    pub fn unlock(&mut self, may_prompt: bool) -> Result<Signer, SignError> {
        if let Some(s) = &self.signer {
            return Ok(s.clone());
        }
        let signer = match &self.source {
            Source::Agent { socket, key } => Signer::Agent {
                socket: socket.clone(),
                key: key.clone(),
            },
            Source::File { path } => unlock_file(path, may_prompt)?,
        };
        self.signer = Some(signer.clone());
        Ok(signer)
    }
}

/// Load (and decrypt) a key file; key types ssh-key cannot load go to ssh-keygen.
fn unlock_file(path: &Path, may_prompt: bool) -> Result<Signer, SignError> {
    let key = match load_private_key(path) {
        Ok(k) => k,
        Err(e) => {
            if !path.exists() {
                return Err(e);
            }
            // Exists but does not parse here (FIDO, PKCS#8 PEM…): ssh-keygen may still sign.
            return Ok(Signer::SshKeygen(path.to_owned()));
        }
    };
    if !key.is_encrypted() {
        return Ok(Signer::Key(Box::new(key)));
    }
    if !may_prompt {
        return Err(SignError::Encrypted);
    }
    let mut last = SignError::Encrypted;
    for _ in 0..PASSPHRASE_TRIES {
        let prompt = format!("Enter passphrase for key '{}': ", path.display());
        let passphrase = read_passphrase(&prompt)?;
        match decrypt_private_key(&key, &passphrase) {
            Ok(k) => return Ok(Signer::Key(Box::new(k))),
            Err(SignError::WrongPassphrase) => {
                eprintln!("ccrelay: wrong passphrase for {}", path.display());
                last = SignError::WrongPassphrase;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// How to ask for a passphrase, following ssh's `SSH_ASKPASS_REQUIRE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AskVia {
    Terminal,
    Askpass,
}

/// ssh's rule: `force`/`prefer` use the askpass program, `never` only the terminal;
/// unset: the terminal when there is one, else the askpass program when one is set.
fn ask_via(require: Option<&str>, askpass_set: bool, have_terminal: bool) -> Option<AskVia> {
    match require {
        Some("force") if askpass_set => Some(AskVia::Askpass),
        Some("prefer") if askpass_set => Some(AskVia::Askpass),
        Some("never") => have_terminal.then_some(AskVia::Terminal),
        _ if have_terminal => Some(AskVia::Terminal),
        _ if askpass_set => Some(AskVia::Askpass),
        _ => None,
    }
}

fn read_passphrase(prompt: &str) -> Result<String, SignError> {
    let askpass = std::env::var_os("SSH_ASKPASS").filter(|v| !v.is_empty());
    let require = std::env::var("SSH_ASKPASS_REQUIRE").ok();
    let have_terminal = std::io::stdin().is_terminal();
    match ask_via(require.as_deref(), askpass.is_some(), have_terminal) {
        Some(AskVia::Askpass) => {
            let program = askpass.unwrap_or_default();
            run_askpass(Path::new(&program), prompt)
        }
        Some(AskVia::Terminal) => read_passphrase_from_terminal(prompt),
        None => Err(SignError::Encrypted),
    }
}

/// Run the askpass program with the prompt as its argument; the passphrase is its stdout.
fn run_askpass(program: &Path, prompt: &str) -> Result<String, SignError> {
    let out = Command::new(program)
        .arg(prompt)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| SignError::Load {
            path: program.to_owned(),
            reason: format!("cannot run SSH_ASKPASS program: {e}"),
        })?;
    if !out.status.success() {
        return Err(SignError::Load {
            path: program.to_owned(),
            reason: format!("SSH_ASKPASS program failed ({})", out.status),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// Read a line with echo off (raw mode), prompting on stderr.
fn read_passphrase_from_terminal(prompt: &str) -> Result<String, SignError> {
    use crossterm::event::{Event, KeyCode, KeyEventKind, KeyModifiers, read};
    let io_err = |e: std::io::Error| SignError::Crypto(format!("reading the passphrase: {e}"));
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    crossterm::terminal::enable_raw_mode().map_err(io_err)?;
    let mut passphrase = String::new();
    let outcome = loop {
        match read() {
            Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => match k.code {
                KeyCode::Enter => break Ok(()),
                KeyCode::Char('c') | KeyCode::Char('d')
                    if k.modifiers.contains(KeyModifiers::CONTROL) =>
                {
                    break Err(SignError::Crypto("passphrase entry cancelled".into()));
                }
                KeyCode::Char(c) => passphrase.push(c),
                KeyCode::Backspace => {
                    passphrase.pop();
                }
                _ => {}
            },
            Ok(_) => {}
            Err(e) => break Err(io_err(e)),
        }
    };
    let _ = crossterm::terminal::disable_raw_mode();
    eprintln!();
    outcome.map(|()| passphrase)
}

/// The keys to offer, in order: with `-i` only that file; otherwise every agent
/// identity, then the default key files that exist and the agent did not hold.
pub fn candidates(
    identity: Option<&Path>,
    home: Option<&Path>,
    agent_socket: Option<&Path>,
) -> Result<Vec<Candidate>, KeyError> {
    if let Some(path) = identity {
        // Fail now, with the file's own error, rather than as "no authorized key".
        if let Err(e) = std::fs::metadata(path) {
            return Err(KeyError::Identity(SignError::Load {
                path: path.to_owned(),
                reason: e.to_string(),
            }));
        }
        return Ok(vec![Candidate::file(path)]);
    }
    let mut out = Vec::new();
    if let Some(socket) = agent_socket {
        match agent_keys(socket) {
            Ok(keys) => out.extend(keys.into_iter().map(|k| Candidate::agent(socket, k))),
            Err(e) => eprintln!("ccrelay: ignoring ssh-agent: {e}"),
        }
    }
    if let Some(home) = home {
        for name in DEFAULT_KEY_FILES {
            let path = home.join(".ssh").join(name);
            if !path.exists() {
                continue;
            }
            let file = Candidate::file(&path);
            let held_by_agent = load_private_key(&path).ok().is_some_and(|k| {
                out.iter().any(|c| {
                    c.agent_public()
                        .is_some_and(|a| a.key_data() == k.public_key().key_data())
                })
            });
            if !held_by_agent {
                out.push(file);
            }
        }
    }
    if out.is_empty() {
        return Err(KeyError::NoKeys);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn askpass_rules_follow_ssh() {
        use AskVia::*;
        assert_eq!(ask_via(Some("force"), true, true), Some(Askpass));
        assert_eq!(ask_via(Some("prefer"), true, true), Some(Askpass));
        assert_eq!(ask_via(Some("never"), true, false), None);
        assert_eq!(ask_via(Some("never"), true, true), Some(Terminal));
        assert_eq!(ask_via(None, true, true), Some(Terminal));
        assert_eq!(ask_via(None, true, false), Some(Askpass));
        assert_eq!(ask_via(None, false, false), None);
        assert_eq!(ask_via(Some("force"), false, true), Some(Terminal));
    }

    #[test]
    fn identity_must_exist() {
        let err = candidates(Some(Path::new("/nonexistent/key")), None, None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/key"), "{err}");
    }

    #[test]
    fn no_keys_at_all() {
        let dir = std::env::temp_dir().join(format!("ccrelay-nokeys-{}", std::process::id()));
        let err = candidates(None, Some(&dir), None).unwrap_err();
        assert!(matches!(err, KeyError::NoKeys));
    }
}
