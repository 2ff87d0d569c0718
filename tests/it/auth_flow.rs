//! Authentication (docs/protocol.md §3) end to end: the real binary, real sockets, and
//! keys and signatures from the real `ssh-keygen` (and `ssh-agent`) wherever they
//! can make them; FIDO, DSA and SHA-1 RSA signatures are crafted by hand.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{Fixture, KeyPair, Received, ServerOptions, TestClient, TestServer, http_request};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use ssh_key::public::{KeyData, SkEd25519};
use ssh_key::{Algorithm, HashAlg, PrivateKey, PublicKey, SshSig};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const NAMESPACE: &str = "ccrelay-auth";
const SK_USER_PRESENCE: u8 = 0x01;

// ---------------------------------------------------------------- helpers

fn upgrade_request(addr: SocketAddr) -> String {
    format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// `printf '%s' TEXT | ssh-keygen -Y sign -n NAMESPACE [EXTRA] -f KEY`; Err(stderr) on failure.
fn try_keygen_sign(
    key: &Path,
    namespace: &str,
    text: &str,
    extra: &[&str],
) -> Result<String, String> {
    use std::io::Write as _;
    let mut child = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", namespace])
        .args(extra)
        .arg("-f")
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() && stdout.contains("-----BEGIN SSH SIGNATURE-----") {
        Ok(stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn keygen_sign(key: &Path, namespace: &str, text: &str, extra: &[&str]) -> String {
    try_keygen_sign(key, namespace, text, extra)
        .unwrap_or_else(|e| panic!("ssh-keygen -Y sign with {}: {e}", key.display()))
}

/// The `SHA256:...` field of `ssh-keygen -lf FILE`.
fn keygen_fingerprint(file: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(file)
        .output()
        .expect("ssh-keygen -l runs");
    assert!(out.status.success(), "ssh-keygen -lf {}", file.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint field")
        .to_string()
}

/// `ssh-keygen -Y verify` of `armored` over `text` by the key `public_line`.
fn keygen_verifies(dir: &Path, public_line: &str, text: &str, armored: &str) -> bool {
    use std::io::Write as _;
    let signers = dir.join("allowed_signers_check");
    std::fs::write(
        &signers,
        format!("tester namespaces=\"{NAMESPACE}\" {public_line}\n"),
    )
    .unwrap();
    let sig = dir.join("check.sig");
    std::fs::write(&sig, armored).unwrap();
    let mut child = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-I", "tester", "-n", NAMESPACE, "-f"])
        .arg(&signers)
        .arg("-s")
        .arg(&sig)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait().unwrap().success()
}

/// The five fields of an SSHSIG blob after the magic and version.
#[derive(Debug, Clone)]
struct SigFields {
    key_blob: Vec<u8>,
    namespace: Vec<u8>,
    reserved: Vec<u8>,
    hash: Vec<u8>,
    sig_blob: Vec<u8>,
}

fn ssh_string(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(&u32::try_from(v.len()).unwrap().to_be_bytes());
    out.extend_from_slice(v);
}

fn split_fields(armored: &str) -> SigFields {
    let body: String = armored
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let blob = STANDARD.decode(body).expect("armored base64");
    assert_eq!(&blob[..6], b"SSHSIG");
    let mut rest = &blob[10..];
    let mut next = || {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let v = rest[4..4 + len].to_vec();
        rest = &rest[4 + len..];
        v
    };
    SigFields {
        key_blob: next(),
        namespace: next(),
        reserved: next(),
        hash: next(),
        sig_blob: next(),
    }
}

fn join_fields(f: &SigFields) -> String {
    let mut blob = b"SSHSIG".to_vec();
    blob.extend_from_slice(&1u32.to_be_bytes());
    for v in [&f.key_blob, &f.namespace, &f.reserved, &f.hash, &f.sig_blob] {
        ssh_string(&mut blob, v);
    }
    let b64 = STANDARD.encode(blob);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(70)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN SSH SIGNATURE-----\n{}\n-----END SSH SIGNATURE-----\n",
        lines.join("\n")
    )
}

fn local_addr(c: &TestClient) -> SocketAddr {
    match c.ws.get_ref() {
        MaybeTlsStream::Plain(s) => s.local_addr().expect("local address"),
        _ => unreachable!("tests use plain ws://"),
    }
}

/// Connect and read the challenge; returns the client and the text to sign: the
/// challenge's `sign` bound to the origin the client dialed (`respond` sends it).
async fn challenged(server: &TestServer) -> (TestClient, String) {
    let mut c = server.connect().await;
    let challenge = c.recv().await;
    assert_eq!(challenge["type"], "auth.challenge", "{challenge}");
    assert_eq!(challenge["namespace"], NAMESPACE);
    assert_eq!(challenge["bindings"], json!(["origin"]), "{challenge}");
    let sign = challenge["sign"].as_str().expect("sign text").to_string();
    c.challenge = Some(challenge);
    let text = common::bound_text(&sign, &c.origin);
    (c, text)
}

/// Send an `auth.response` bound to the client's origin and return the server's answer.
async fn respond(c: &mut TestClient, signature: &str, public_key: Option<&str>) -> Value {
    let mut msg = json!({"type": "auth.response", "signature": signature, "origin": c.origin});
    if let Some(k) = public_key {
        msg["public_key"] = Value::from(k);
    }
    c.send(msg).await;
    c.recv().await
}

fn assert_auth_ok(answer: &Value, fingerprint: &str, role: &str) {
    assert_eq!(answer["type"], "auth.ok", "{answer}");
    assert_eq!(answer["fingerprint"], fingerprint, "{answer}");
    assert_eq!(answer["role"], role, "{answer}");
    assert!(
        answer["client_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{answer}"
    );
    let sessions = answer["sessions"].as_array().expect("sessions list");
    assert!(
        sessions
            .iter()
            .any(|s| s["session"] == "default" && s["state"].is_string()),
        "{answer}"
    );
}

/// The generic refusal, then close 1008; the server log names `reason_label`
/// for this very connection (matched by its peer address).
async fn expect_refused(server: &TestServer, c: &mut TestClient, answer: Value, label: &str) {
    let peer = local_addr(c).to_string();
    assert_eq!(
        answer,
        json!({"type": "error", "code": "auth_failed", "message": "authentication failed"}),
        "expected the generic refusal ({label})"
    );
    let (code, _, frames) = c.expect_close(Duration::from_secs(10)).await;
    assert!(
        frames.is_empty(),
        "{label}: frames after the error: {frames:?}"
    );
    assert_eq!(code, Some(1008), "{label}");
    let logged = common::eventually(Duration::from_secs(5), || {
        server.log_json().iter().any(|l| {
            l["span"]["peer"] == peer.as_str()
                && l["message"] == "authentication failed"
                && l["reason_label"] == label
        })
    })
    .await;
    assert!(
        logged,
        "no 'authentication failed' log with reason_label={label} for {peer}; logs:\n{}",
        server.logs()
    );
}

/// Write the owner keys file (lines joined with newlines).
fn write_keys(fx: &Fixture, lines: &[String]) {
    std::fs::write(fx.authorized_keys(), format!("{}\n", lines.join("\n"))).unwrap();
}

fn retry_after(head: &str) -> Option<u64> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("retry-after")
            .then(|| v.trim().parse().ok())?
    })
}

// ------------------------------------------------- FIDO (sk-) signatures by hand

/// An sk-ssh-ed25519@openssh.com key whose "token" is an ed25519 key in memory.
struct SkEd25519Key {
    private: PrivateKey,
    public: KeyData,
}

impl SkEd25519Key {
    fn new() -> Self {
        let private = PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519).unwrap();
        let ed = *private.public_key().key_data().ed25519().unwrap();
        SkEd25519Key {
            private,
            public: KeyData::SkEd25519(SkEd25519::new(ed, "ssh:")),
        }
    }

    fn line(&self, comment: &str) -> String {
        let mut k = PublicKey::from(self.public.clone());
        k.set_comment(comment);
        k.to_openssh().unwrap()
    }

    /// What a FIDO token signs: sha256(application) || flags || counter || sha256(SSHSIG data).
    fn sign(&self, text: &str, flags: u8) -> String {
        use rsa::signature::Signer as _;
        use sha2::Digest as _;
        let counter = 42u32;
        let signed = SshSig::signed_data(NAMESPACE, HashAlg::Sha512, text.as_bytes()).unwrap();
        let mut data = sha2::Sha256::digest(b"ssh:").to_vec();
        data.push(flags);
        data.extend_from_slice(&counter.to_be_bytes());
        data.extend_from_slice(&sha2::Sha256::digest(&signed));
        let raw: ssh_key::Signature = self.private.key_data().try_sign(&data).unwrap();
        let mut sig_blob = Vec::new();
        ssh_string(&mut sig_blob, b"sk-ssh-ed25519@openssh.com");
        ssh_string(&mut sig_blob, raw.as_bytes());
        sig_blob.push(flags);
        sig_blob.extend_from_slice(&counter.to_be_bytes());
        join_fields(&SigFields {
            key_blob: PublicKey::from(self.public.clone()).to_bytes().unwrap(),
            namespace: NAMESPACE.as_bytes().to_vec(),
            reserved: Vec::new(),
            hash: b"sha512".to_vec(),
            sig_blob,
        })
    }
}

// ------------------------------------------------------------------ tests

/// 1. Every supported plain key type, signed by `ssh-keygen -Y sign`, is accepted
/// with the fingerprint `ssh-keygen -l` prints, role owner and the session list.
#[tokio::test]
async fn every_key_type_signed_by_ssh_keygen_is_accepted() {
    let fx = Fixture::new();
    let kinds: [(&str, &str, &[&str]); 5] = [
        ("ed", "ed25519", &[]),
        ("p256", "ecdsa", &["-b", "256"]),
        ("p384", "ecdsa", &["-b", "384"]),
        ("p521", "ecdsa", &["-b", "521"]),
        ("rsa3072", "rsa", &["-b", "3072"]),
    ];
    let keys: Vec<(&str, KeyPair)> = kinds
        .iter()
        .map(|(name, kind, extra)| (*name, common::keygen(fx.path(), name, kind, extra)))
        .collect();
    let mut lines: Vec<String> = keys.iter().map(|(_, k)| k.public_line.clone()).collect();
    lines.push(fx.owner.public_line.clone());
    write_keys(&fx, &lines);
    let server = fx.start(ServerOptions::default());

    let mut client_ids = std::collections::BTreeSet::new();
    for (name, key) in &keys {
        let fingerprint = keygen_fingerprint(&key.private.with_extension("pub"));
        assert_eq!(fingerprint, key.fingerprint);
        // With the optional public_key, then without it.
        for with_public_key in [true, false] {
            let (mut c, sign) = challenged(&server).await;
            let sig = keygen_sign(&key.private, NAMESPACE, &sign, &[]);
            if *name == "rsa3072" {
                let f = split_fields(&sig);
                assert!(
                    f.sig_blob.starts_with(b"\0\0\0\x0crsa-sha2-512"),
                    "ssh-keygen signs RSA with rsa-sha2-512 by default"
                );
            }
            let answer = respond(
                &mut c,
                &sig,
                with_public_key.then_some(key.public_line.as_str()),
            )
            .await;
            assert_auth_ok(&answer, &fingerprint, "owner");
            assert!(answer.get("id").is_none(), "no id was sent: {answer}");
            assert!(client_ids.insert(answer["client_id"].as_str().unwrap().to_string()));
            // The connection is usable.
            let pong = c.request(json!({"type": "ping"}), "p").await;
            assert_eq!(pong["type"], "pong", "{name}");
        }
    }
    // A sha256 message hash (`-O hashalg=sha256`) is accepted as well.
    let (mut c, sign) = challenged(&server).await;
    let sig = keygen_sign(
        &keys[0].1.private,
        NAMESPACE,
        &sign,
        &["-O", "hashalg=sha256"],
    );
    assert_eq!(split_fields(&sig).hash, b"sha256");
    let answer = respond(&mut c, &sig, None).await;
    assert_auth_ok(&answer, &keys[0].1.fingerprint, "owner");
    // Unknown fields are ignored; a `device` that is not a short string is ignored.
    let (mut c, sign) = challenged(&server).await;
    let sig = keygen_sign(&keys[1].1.private, NAMESPACE, &sign, &[]);
    c.send(
        json!({"type": "auth.response", "signature": sig, "device": 42, "origin": c.origin,
                  "future_field": {"x": [1, 2]}, "id": "a1"}),
    )
    .await;
    let answer = c.recv().await;
    assert_auth_ok(&answer, &keys[1].1.fingerprint, "owner");
    // auth.ok is the direct reply to auth.response: it carries the request id (§2).
    assert_eq!(answer["id"], "a1", "{answer}");
    // An integer id too; and none when the request had none (checked above).
    let (mut c, sign) = challenged(&server).await;
    let sig = keygen_sign(&keys[0].1.private, NAMESPACE, &sign, &[]);
    c.send(json!({"type": "auth.response", "signature": sig, "id": 0, "origin": c.origin}))
        .await;
    let answer = c.recv().await;
    assert_auth_ok(&answer, &keys[0].1.fingerprint, "owner");
    assert_eq!(answer["id"], 0, "{answer}");
    assert!(
        server
            .wait_log("ecdsa-sha2-nistp521", Duration::from_secs(2))
            .await,
        "the key type is logged on success"
    );
}

/// 1b. sk-ssh-ed25519@openssh.com over the wire: a touched signature is accepted;
/// one without user presence only when the key line has `no-touch-required`.
#[tokio::test]
async fn fido_sk_ed25519_signatures_and_the_touch_flag() {
    let fx = Fixture::new();
    let plain = SkEd25519Key::new();
    let no_touch = SkEd25519Key::new();
    write_keys(
        &fx,
        &[
            fx.owner.public_line.clone(),
            plain.line("token"),
            format!("no-touch-required {}", no_touch.line("lazy-token")),
        ],
    );
    let server = fx.start(ServerOptions::default());
    let pub_file = fx.path().join("sk.pub");
    std::fs::write(&pub_file, format!("{}\n", plain.line("token"))).unwrap();
    let plain_fp = keygen_fingerprint(&pub_file);
    std::fs::write(&pub_file, format!("{}\n", no_touch.line("lazy"))).unwrap();
    let no_touch_fp = keygen_fingerprint(&pub_file);

    // Touched: accepted; the hand-made signature is a real one (ssh-keygen agrees).
    let (mut c, sign) = challenged(&server).await;
    let sig = plain.sign(&sign, SK_USER_PRESENCE);
    assert!(
        keygen_verifies(fx.path(), &plain.line("token"), &sign, &sig),
        "ssh-keygen -Y verify rejects the hand-made sk signature"
    );
    let answer = respond(&mut c, &sig, Some(&plain.line("token"))).await;
    assert_auth_ok(&answer, &plain_fp, "owner");
    assert!(
        server
            .wait_log("sk-ssh-ed25519@openssh.com", Duration::from_secs(2))
            .await
    );

    // Flags 0 (no touch): refused for the plain line.
    let (mut c, sign) = challenged(&server).await;
    let sig = plain.sign(&sign, 0);
    assert!(keygen_verifies(
        fx.path(),
        &plain.line("token"),
        &sign,
        &sig
    ));
    let answer = respond(&mut c, &sig, None).await;
    expect_refused(&server, &mut c, answer, "user_presence_missing").await;

    // Flags 0 with no-touch-required: accepted.
    let (mut c, sign) = challenged(&server).await;
    let answer = respond(&mut c, &no_touch.sign(&sign, 0), None).await;
    assert_auth_ok(&answer, &no_touch_fp, "owner");
}

/// 2. Every refusal is the same generic `auth_failed` + close 1008, with the
/// specific reason in the server log.
#[tokio::test]
async fn each_refusal_is_generic_closes_1008_and_logs_the_reason() {
    let fx = Fixture::new();
    let expired = common::keygen(fx.path(), "expired", "ed25519", &[]);
    let far = common::keygen(fx.path(), "far", "ed25519", &[]);
    let near = common::keygen(fx.path(), "near", "ed25519", &[]);
    let rsa = common::keygen(fx.path(), "rsa", "rsa", &["-b", "3072"]);
    let commanded = common::keygen(fx.path(), "commanded", "ed25519", &[]);
    let restricted = common::keygen(fx.path(), "restricted", "ed25519", &[]);
    // DSA: from ssh-keygen when this OpenSSH still makes and signs with DSA keys;
    // a fixed public key with a crafted blob claiming ssh-dss in any case.
    let dsa_made = Command::new("ssh-keygen")
        .args(["-q", "-t", "dsa", "-N", "", "-C", "dsa@test", "-f"])
        .arg(fx.path().join("dsa"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let dsa_fixed_line = format!("ssh-dss {DSA_FIXTURE} dsa@fixture");
    let dsa_made_line = if dsa_made {
        std::fs::read_to_string(fx.path().join("dsa.pub"))
            .unwrap()
            .trim()
            .to_string()
    } else {
        println!("note: ssh-keygen cannot make DSA keys here; only the fixed DSA key is tried");
        dsa_fixed_line.clone()
    };
    write_keys(
        &fx,
        &[
            fx.owner.public_line.clone(),
            fx.owner2.public_line.clone(),
            format!("expiry-time=\"20200101\" {}", expired.public_line),
            format!("from=\"10.0.0.0/8\" {}", far.public_line),
            format!(
                "from=\"10.0.0.0/8,!127.0.0.2,127.0.0.?\" {}",
                near.public_line
            ),
            dsa_made_line.clone(),
            dsa_fixed_line.clone(),
            rsa.public_line.clone(),
            format!("command=\"/bin/true\" {}", commanded.public_line),
            format!(
                "restrict,no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-user-rc {}",
                restricted.public_line
            ),
        ],
    );
    let server = fx.start(ServerOptions::default());
    let owner_key = &fx.owner.private;

    // Key not listed.
    let (mut c, sign) = challenged(&server).await;
    let sig = keygen_sign(&fx.stranger.private, NAMESPACE, &sign, &[]);
    let a = respond(&mut c, &sig, Some(&fx.stranger.public_line)).await;
    expect_refused(&server, &mut c, a, "not_listed").await;

    // A signature over a different message.
    let (mut c, sign) = challenged(&server).await;
    let other_text = format!("{sign}x");
    let sig = keygen_sign(owner_key, NAMESPACE, &other_text, &[]);
    let a = respond(&mut c, &sig, None).await;
    expect_refused(&server, &mut c, a, "bad_signature").await;

    // The right message in the wrong namespace.
    let (mut c, sign) = challenged(&server).await;
    let sig = keygen_sign(owner_key, "other", &sign, &[]);
    let a = respond(&mut c, &sig, None).await;
    expect_refused(&server, &mut c, a, "wrong_namespace").await;

    // A signature replayed from an earlier connection (which used it successfully).
    let (mut first, sign) = challenged(&server).await;
    let old_sig = keygen_sign(owner_key, NAMESPACE, &sign, &[]);
    let a = respond(&mut first, &old_sig, None).await;
    assert_eq!(a["type"], "auth.ok", "{a}");
    let (mut c, new_sign) = challenged(&server).await;
    assert_ne!(new_sign, sign, "a new connection gets a new nonce");
    let a = respond(&mut c, &old_sig, None).await;
    expect_refused(&server, &mut c, a, "bad_signature").await;

    // A second auth.response on an authenticated connection (even a valid one).
    let peer = local_addr(&first).to_string();
    first
        .send(json!({"type": "auth.response", "signature": old_sig, "id": "again"}))
        .await;
    let a = first.recv().await;
    assert_eq!(
        a,
        json!({"type": "error", "id": "again", "code": "auth_failed", "message": "authentication failed"})
    );
    let (code, _, frames) = first.expect_close(Duration::from_secs(10)).await;
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(code, Some(1008));
    assert!(
        common::eventually(Duration::from_secs(5), || {
            server.log_json().iter().any(|l| {
                l["span"]["peer"] == peer.as_str()
                    && l["message"] == "second auth.response on an authenticated connection"
            })
        })
        .await,
        "second auth.response not logged; logs:\n{}",
        server.logs()
    );

    // Tampered signature bytes (last byte of the ed25519 signature flipped).
    let (mut c, sign) = challenged(&server).await;
    let mut f = split_fields(&keygen_sign(owner_key, NAMESPACE, &sign, &[]));
    *f.sig_blob.last_mut().unwrap() ^= 0x01;
    let a = respond(&mut c, &join_fields(&f), None).await;
    expect_refused(&server, &mut c, a, "bad_signature").await;

    // public_key differs from the key in the signature (both keys are listed).
    let (mut c, sign) = challenged(&server).await;
    let sig = keygen_sign(owner_key, NAMESPACE, &sign, &[]);
    let a = respond(&mut c, &sig, Some(&fx.owner2.public_line)).await;
    expect_refused(&server, &mut c, a, "key_mismatch").await;

    // expiry-time in the past.
    let (mut c, sign) = challenged(&server).await;
    let sig = keygen_sign(&expired.private, NAMESPACE, &sign, &[]);
    let a = respond(&mut c, &sig, Some(&expired.public_line)).await;
    expect_refused(&server, &mut c, a, "key_expired").await;

    // from= that excludes 127.0.0.1.
    let (mut c, sign) = challenged(&server).await;
    let sig = keygen_sign(&far.private, NAMESPACE, &sign, &[]);
    let a = respond(&mut c, &sig, None).await;
    expect_refused(&server, &mut c, a, "from_denied").await;
    // ... while a from= that matches 127.0.0.1 lets the key in.
    let (mut c, sign) = challenged(&server).await;
    let sig = keygen_sign(&near.private, NAMESPACE, &sign, &[]);
    let a = respond(&mut c, &sig, None).await;
    assert_auth_ok(&a, &near.fingerprint, "owner");

    // DSA is refused: a real ssh-keygen DSA signature (when possible) and a
    // crafted blob claiming the fixed ssh-dss key.
    let (mut c, sign) = challenged(&server).await;
    let real = dsa_made
        .then(|| try_keygen_sign(&fx.path().join("dsa"), NAMESPACE, &sign, &[]).ok())
        .flatten();
    match real {
        Some(sig) => {
            assert!(
                split_fields(&sig)
                    .key_blob
                    .starts_with(b"\0\0\0\x07ssh-dss")
            );
            let a = respond(&mut c, &sig, Some(&dsa_made_line)).await;
            expect_refused(&server, &mut c, a, "unsupported_key_type").await;
        }
        None => {
            println!("note: ssh-keygen cannot sign with DSA here; only the crafted blob is tried")
        }
    }
    let (mut c, _) = challenged(&server).await;
    let key = PublicKey::from_openssh(&dsa_fixed_line).unwrap();
    let mut sig_blob = Vec::new();
    ssh_string(&mut sig_blob, b"ssh-dss");
    ssh_string(&mut sig_blob, &[7u8; 40]);
    let crafted = join_fields(&SigFields {
        key_blob: key.to_bytes().unwrap(),
        namespace: NAMESPACE.as_bytes().to_vec(),
        reserved: Vec::new(),
        hash: b"sha512".to_vec(),
        sig_blob,
    });
    let a = respond(&mut c, &crafted, None).await;
    expect_refused(&server, &mut c, a, "unsupported_key_type").await;

    // An RSA key signing with SHA-1 (`ssh-rsa` signature algorithm): a valid
    // PKCS#1 v1.5 SHA-1 signature by a listed key, still refused.
    let (mut c, sign) = challenged(&server).await;
    let sig = rsa_sha1_sshsig(&rsa.private, &sign);
    let a = respond(&mut c, &sig, Some(&rsa.public_line)).await;
    expect_refused(&server, &mut c, a, "rsa_sha1").await;
    // ... while the same key's normal signature is accepted.
    let (mut c, sign) = challenged(&server).await;
    let a = respond(
        &mut c,
        &keygen_sign(&rsa.private, NAMESPACE, &sign, &[]),
        None,
    )
    .await;
    assert_auth_ok(&a, &rsa.fingerprint, "owner");

    // An option ccrelay does not honour (command=) refuses the key; options about
    // SSH features it has no use for are accepted and ignored.
    let (mut c, sign) = challenged(&server).await;
    let sig = keygen_sign(&commanded.private, NAMESPACE, &sign, &[]);
    let a = respond(&mut c, &sig, None).await;
    expect_refused(&server, &mut c, a, "disallowed_option").await;
    let (mut c, sign) = challenged(&server).await;
    let sig = keygen_sign(&restricted.private, NAMESPACE, &sign, &[]);
    let a = respond(&mut c, &sig, None).await;
    assert_auth_ok(&a, &restricted.fingerprint, "owner");

    // An unreadable public_key.
    let (mut c, sign) = challenged(&server).await;
    let sig = keygen_sign(owner_key, NAMESPACE, &sign, &[]);
    let a = respond(&mut c, &sig, Some("ssh-ed25519 not-base64!")).await;
    expect_refused(&server, &mut c, a, "bad_public_key").await;

    // Garbage in `signature` (the request id is echoed on the error).
    for garbage in [
        "garbage".to_string(),
        "-----BEGIN SSH SIGNATURE-----\n!!!!\n-----END SSH SIGNATURE-----".to_string(),
        format!(
            "-----BEGIN SSH SIGNATURE-----\n{}\n-----END SSH SIGNATURE-----",
            STANDARD.encode(b"SSHSIG\0\0\0\x01\xff\xff\xff\xff")
        ),
    ] {
        let (mut c, _) = challenged(&server).await;
        c.send(json!({"type": "auth.response", "signature": garbage, "id": 5}))
            .await;
        let mut a = c.recv().await;
        assert_eq!(a["id"], 5, "{a}");
        a.as_object_mut().unwrap().remove("id");
        expect_refused(&server, &mut c, a, "bad_armor").await;
    }

    // Nothing above hurt the owner.
    let mut ok = server.client(&fx.owner, None).await;
    let pong = ok.request(json!({"type": "ping"}), "p").await;
    assert_eq!(pong["type"], "pong");
}

/// A fixed DSA public key (newer OpenSSH builds cannot make one).
const DSA_FIXTURE: &str = "AAAAB3NzaC1kc3MAAACBAOybTJRU3LxmE7DaYZpiKkcWsqABkLAGKk0oFnp8vWUmuKkyhOcMZ3uBzuUDkJbAiKcJdFNaKgSinFC6DjGM44MJN/AvT1YBccoJr3QNWH1YKkPFUe1F10DhE/0GOylWIyWXzvh/a3Z2CJg2WnpmkdlhRt8YJQuU2OJfkqW1TIRNAAAAFQC1sjlXjs0mKYhQvlINqMOTFTbKEwAAAIB/pBOokMQqhd3phSaDRbQMX87fqFZHEK/trqD96kQ4YSi02U7f3h7iVB6h11VDkHwGNc5Pe83jBmP1li6ItmGRX5BytPpMtTDmv2xJWObCoFUgvU7KsEpD/JpL9J0HKZcBuYKxkHc2GNpvvnFBEHQFOBom/wTaT1XsaWO/PJBp+AAAAIAWPIUOeOYu8Ui3hvu2ZO/8/8s2JsoPZj7N/0yQRaDP21D6XiwCHXxhXhLc6DIPUEqalcAtDNxWduaNEKh+ChwWU40nWSngriRLv5hiVNH+Q5fgCw+Z3nusTIF2AyQ/NK0fDDI4dvkWM65djQbcycTrnEhQ8iW2NVqV1iKd+pZ8Qw==";

/// An SSHSIG whose signature is `ssh-rsa` (PKCS#1 v1.5 over SHA-1) by the key file.
fn rsa_sha1_sshsig(key_file: &Path, text: &str) -> String {
    use sha1::Digest as _;
    let key = PrivateKey::read_openssh_file(key_file).unwrap();
    let kp = key.key_data().rsa().unwrap();
    let big = |m: &ssh_key::Mpint| rsa::BigUint::from_bytes_be(m.as_positive_bytes().unwrap());
    let private = rsa::RsaPrivateKey::from_components(
        big(&kp.public.n),
        big(&kp.public.e),
        big(&kp.private.d),
        vec![big(&kp.private.p), big(&kp.private.q)],
    )
    .unwrap();
    let signed = SshSig::signed_data(NAMESPACE, HashAlg::Sha512, text.as_bytes()).unwrap();
    let digest = sha1::Sha1::digest(&signed);
    let raw = private
        .sign(rsa::Pkcs1v15Sign::new::<sha1::Sha1>(), &digest)
        .unwrap();
    // Sanity: a valid SHA-1 signature by this key.
    rsa::RsaPublicKey::from(&private)
        .verify(rsa::Pkcs1v15Sign::new::<sha1::Sha1>(), &digest, &raw)
        .unwrap();
    let mut sig_blob = Vec::new();
    ssh_string(&mut sig_blob, b"ssh-rsa");
    ssh_string(&mut sig_blob, &raw);
    join_fields(&SigFields {
        key_blob: key.public_key().to_bytes().unwrap(),
        namespace: NAMESPACE.as_bytes().to_vec(),
        reserved: Vec::new(),
        hash: b"sha512".to_vec(),
        sig_blob,
    })
}

/// 3. No response within the auth timeout: `auth_timeout`, close 1008.
#[tokio::test]
async fn silence_after_the_challenge_times_out() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&["--auth-timeout", "1"]));
    let started = Instant::now();
    let (mut c, _) = challenged(&server).await;
    assert_eq!(c.challenge.as_ref().unwrap()["expires_in_ms"], 1000);
    let e = match c.recv_frame(Duration::from_secs(5)).await {
        Some(Received::Frame(v)) => v,
        other => panic!("expected the auth_timeout error, got {other:?}"),
    };
    let waited = started.elapsed();
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "auth_timeout", "{e}");
    assert!(e.get("id").is_none(), "{e}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "timed out after {waited:?}"
    );
    let (code, _, frames) = c.expect_close(Duration::from_secs(5)).await;
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(code, Some(1008));
    assert!(
        server
            .wait_log("authentication timed out", Duration::from_secs(2))
            .await
    );

    // The timeout no longer applies once authenticated.
    let mut ok = server.client(&fx.owner, None).await;
    // Outlast the 1 s authentication timeout: the absence of a close is the point.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        ping_ok(&mut ok, "later").await,
        "authenticated client hit the auth timeout"
    );
}

/// 4. Viewer keys: role viewer; attach and session.list work, the four owner
/// actions answer `forbidden` with the request id.
#[tokio::test]
async fn viewer_may_watch_but_not_drive() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let (mut c, sign) = challenged(&server).await;
    let sig = keygen_sign(&fx.viewer.private, NAMESPACE, &sign, &[]);
    let answer = respond(&mut c, &sig, Some(&fx.viewer.public_line)).await;
    assert_auth_ok(&answer, &fx.viewer.fingerprint, "viewer");

    let attached = c.attach("default", None).await;
    assert_eq!(attached["session"], "default");
    let list = c.request(json!({"type": "session.list"}), "list").await;
    assert_eq!(list["type"], "session.list", "{list}");
    assert!(
        list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["session"] == "default"),
        "{list}"
    );
    for (i, req) in [
        json!({"type": "prompt", "session": "default", "content": "hello"}),
        json!({"type": "respond", "session": "default", "request_id": "whatever",
               "response": {"behavior": "allow"}}),
        json!({"type": "interrupt", "session": "default"}),
        json!({"type": "session.restart", "session": "default"}),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("v{i}");
        let what = req["type"].as_str().unwrap().to_string();
        let reply = c.request(req, &id).await;
        assert_eq!(reply["type"], "error", "{what}: {reply}");
        assert_eq!(reply["code"], "forbidden", "{what}: {reply}");
    }
    // Integer ids are echoed on forbidden as well, and the connection stays open.
    c.send(json!({"type": "interrupt", "id": 9})).await;
    let (reply, _) = c.recv_until("forbidden 9", |v| v["id"] == 9).await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
    let pong = c.request(json!({"type": "ping"}), "alive").await;
    assert_eq!(pong["type"], "pong");
}

/// 5c. A key whose `expiry-time` passes while it is connected is closed (1008);
/// another key's connection carries on.
#[tokio::test]
async fn key_expiring_while_connected_is_closed() {
    let fx = Fixture::new();
    // Whole seconds: that is all expiry-time can say.
    let expires = (time::OffsetDateTime::now_utc() + Duration::from_secs(4))
        .replace_nanosecond(0)
        .unwrap();
    let stamp = expires
        .format(time::macros::format_description!(
            "[year][month][day][hour][minute][second]"
        ))
        .unwrap();
    write_keys(
        &fx,
        &[
            fx.owner.public_line.clone(),
            format!("expiry-time=\"{stamp}Z\" {}", fx.owner2.public_line),
        ],
    );
    let server = fx.start(ServerOptions::default().args(&["--ping-interval", "1"]));
    let mut stays = server.client(&fx.owner, Some("stays")).await;
    let mut goes = server.client(&fx.owner2, Some("expires")).await;
    let (code, _, _) = goes.expect_close(Duration::from_secs(10)).await;
    let late = time::OffsetDateTime::now_utc() - expires;
    assert_eq!(code, Some(1008));
    assert!(
        late > time::Duration::ZERO && late < time::Duration::seconds(4),
        "closed {late} after the expiry"
    );
    assert!(ping_ok(&mut stays, "stays").await);
}

/// Replace the keys file's contents in place (same inode).
fn rewrite_in_place(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

async fn ping_ok(c: &mut TestClient, id: &str) -> bool {
    c.send(json!({"type": "ping", "id": id})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match c.recv_frame(Duration::from_secs(5)).await {
            Some(Received::Frame(v)) if v["id"] == id => return v["type"] == "pong",
            Some(Received::Frame(_)) => continue,
            _ => return false,
        }
    }
    false
}

/// Wait for the revoked client's close; returns (code, how long it took).
async fn revoked_close(c: &mut TestClient, since: Instant) -> (Option<u16>, Duration) {
    let (code, _, _) = c.expect_close(Duration::from_secs(5)).await;
    (code, since.elapsed())
}

/// 5a. Rewriting the keys file without a key closes that key's connection
/// (1008, within ~2 s); the other key's connection carries on.
#[tokio::test]
async fn removing_a_key_from_the_file_closes_its_connection() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let mut stays = server.client(&fx.owner, Some("stays")).await;
    let mut goes = server.client(&fx.owner2, Some("goes")).await;
    assert!(ping_ok(&mut goes, "before").await);

    let started = Instant::now();
    std::fs::write(fx.authorized_keys(), format!("{}\n", fx.owner.public_line)).unwrap();
    let (code, took) = revoked_close(&mut goes, started).await;
    assert_eq!(code, Some(1008));
    assert!(took < Duration::from_millis(2500), "closed after {took:?}");
    assert!(
        ping_ok(&mut stays, "after").await,
        "the other key's connection was hurt"
    );
    assert!(
        server
            .wait_log("key no longer authorized", Duration::from_secs(2))
            .await
    );

    // And the removed key can no longer log in.
    let (mut c, sign) = challenged(&server).await;
    let sig = keygen_sign(&fx.owner2.private, NAMESPACE, &sign, &[]);
    let a = respond(&mut c, &sig, None).await;
    expect_refused(&server, &mut c, a, "not_listed").await;
}

/// 5b. SIGHUP reloads the keys (even an edit the file watcher cannot see: same
/// size, same inode, mtime put back), closing the removed key's connection; the
/// server survives the signal.
#[tokio::test]
async fn sighup_reloads_keys_and_does_not_kill_the_server() {
    let fx = Fixture::new();
    let path = fx.authorized_keys();
    let original = format!("{}\n{}\n", fx.owner.public_line, fx.owner2.public_line);
    std::fs::write(&path, &original).unwrap();
    let mut server = fx.start(ServerOptions::default());
    let mut stays = server.client(&fx.owner, Some("stays")).await;
    let mut goes = server.client(&fx.owner2, Some("goes")).await;
    // The watcher has taken its first look at the file.
    assert!(
        server
            .wait_log("watching the keys files", Duration::from_secs(10))
            .await
    );

    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let edited = format!(
        "{}\n{}\n",
        fx.owner.public_line,
        "#".repeat(fx.owner2.public_line.len())
    );
    assert_eq!(edited.len(), original.len());
    rewrite_in_place(&path, &edited);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    // Test premise: the watcher (size, mtime, inode) does not see this edit. Not a
    // readiness wait but the absence of an event: a little more than one watch
    // interval (1 s) gives the watcher its chance to (wrongly) notice.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        ping_ok(&mut goes, "before-hup").await,
        "test premise broken: the file watcher noticed the invisible edit"
    );

    let started = Instant::now();
    server.signal(Signal::SIGHUP);
    let (code, took) = revoked_close(&mut goes, started).await;
    assert_eq!(code, Some(1008));
    assert!(took < Duration::from_millis(2500), "closed after {took:?}");
    assert!(ping_ok(&mut stays, "after-hup").await);
    assert!(
        server
            .wait_log("SIGHUP: reloading authorized keys", Duration::from_secs(2))
            .await
    );
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "SIGHUP killed the server"
    );
    // A second SIGHUP with nothing changed is harmless too.
    server.signal(Signal::SIGHUP);
    let handled = Instant::now() + Duration::from_secs(5);
    while server
        .logs()
        .matches("SIGHUP: reloading authorized keys")
        .count()
        < 2
    {
        assert!(
            Instant::now() < handled,
            "the second SIGHUP was not handled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.wait_exit(Duration::from_millis(200)).is_none());
    assert!(ping_ok(&mut stays, "after-second-hup").await);
    let mut fresh = server.client(&fx.owner, Some("fresh")).await;
    assert!(ping_ok(&mut fresh, "fresh").await);
}

/// One failed attempt from the test's usual address. Returns Err(status, head)
/// when the upgrade itself was refused.
async fn failed_attempt(server: &TestServer) -> Result<(), (u16, String)> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match tokio_tungstenite::connect_async(server.url.as_str()).await {
        Ok((ws, _)) => {
            let mut c = TestClient::from_ws(ws);
            assert_eq!(c.recv().await["type"], "auth.challenge");
            c.send(json!({"type": "auth.response", "signature": "nope"}))
                .await;
            assert_eq!(c.recv().await["code"], "auth_failed");
            let (code, _, _) = c.expect_close(Duration::from_secs(10)).await;
            assert_eq!(code, Some(1008));
            Ok(())
        }
        Err(WsError::Http(resp)) => {
            let head = resp
                .headers()
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("\r\n");
            Err((resp.status().as_u16(), head))
        }
        Err(e) => panic!("connect failed: {e}"),
    }
}

/// A client whose socket is bound to `local` before connecting: Err(io) when the
/// address cannot be bound, Ok(Err(status)) when the upgrade is refused.
async fn try_client_from(
    server: &TestServer,
    local: &str,
) -> std::io::Result<Result<TestClient, u16>> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(local.parse().unwrap())?;
    let stream = socket.connect(server.addr).await?;
    let config = WebSocketConfig::default();
    match tokio_tungstenite::client_async_with_config(
        server.url.as_str(),
        MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .await
    {
        Ok((ws, _)) => Ok(Ok(TestClient::from_ws(ws))),
        Err(WsError::Http(resp)) => Ok(Err(resp.status().as_u16())),
        Err(e) => panic!("websocket handshake from {local}: {e}"),
    }
}

async fn client_from(server: &TestServer, local: &str) -> std::io::Result<TestClient> {
    Ok(try_client_from(server, local)
        .await?
        .unwrap_or_else(|status| panic!("upgrade from {local} refused with {status}")))
}

/// 6. A flood of failures from one address trips the throttle (429 + Retry-After
/// before the upgrade, and before the connection limit); another address is unaffected.
#[tokio::test]
async fn failure_flood_is_throttled_per_address() {
    const LIMIT: usize = 6;
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&["--max-connections", "6"]));
    let started = Instant::now();
    let mut admitted = 0;
    let mut refused = 0;
    let mut first_refusal = None;
    for _ in 0..200 {
        match failed_attempt(&server).await {
            Ok(()) => {
                assert_eq!(refused, 0, "admitted again after being throttled");
                admitted += 1;
            }
            Err((status, head)) => {
                assert_eq!(status, 429, "{head}");
                refused += 1;
                first_refusal.get_or_insert(head);
            }
        }
    }
    let took = started.elapsed();
    println!("200 attempts in {took:?}: {admitted} failures admitted, {refused} refused with 429");
    assert!(admitted >= 10, "fewer than 10 failures allowed: {admitted}");
    assert!(
        refused > 0,
        "200 failures in {took:?} never tripped the throttle"
    );
    let head = first_refusal.unwrap();
    let wait = retry_after(&head).unwrap_or_else(|| panic!("no Retry-After in {head}"));
    assert!((1..=60).contains(&wait), "Retry-After {wait}");

    // Raw HTTP: refused before the upgrade, with Retry-After and a JSON body.
    let (status, head, body) = http_request(server.addr, &upgrade_request(server.addr)).await;
    assert_eq!(status, 429, "{head}");
    assert!(retry_after(&head).is_some_and(|s| s >= 1), "{head}");
    assert!(serde_json::from_str::<Value>(&body).is_ok(), "{body}");
    assert!(
        server
            .wait_log("too many failed authentications", Duration::from_secs(2))
            .await
    );

    // Another address is unaffected.
    let mut held = Vec::new();
    match client_from(&server, "127.0.0.2:0").await {
        Ok(mut c) => {
            let ok = c.authenticate(&fx.owner, Some("elsewhere")).await;
            assert_auth_ok(&ok, &fx.owner.fingerprint, "owner");
            assert!(ping_ok(&mut c, "p").await);
            held.push(c);
        }
        Err(e) => {
            common::require::missing("a bindable 127.0.0.2", &format!("{e}"));
            return;
        }
    }
    // The throttle is checked before the connection limit: with every slot taken,
    // the throttled address still gets 429 and another one 503.
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.len() < LIMIT {
        assert!(
            Instant::now() < deadline,
            "could not fill the connection slots"
        );
        match try_client_from(&server, "127.0.0.2:0").await.unwrap() {
            Ok(mut c) => {
                assert_eq!(c.recv().await["type"], "auth.challenge");
                held.push(c);
            }
            // A failed connection may still be releasing its slot.
            Err(503) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(status) => panic!("connecting from 127.0.0.2: HTTP {status}"),
        }
    }
    let (status, head) = upgrade_status_from(server.addr, "127.0.0.1:0").await;
    assert_eq!(
        status, 429,
        "throttled address at the connection limit: {head}"
    );
    let (status, head) = upgrade_status_from(server.addr, "127.0.0.3:0").await;
    assert_eq!(status, 503, "other address at the connection limit: {head}");
}

/// A plain-HTTP upgrade attempt from a given local address: (status, raw headers).
async fn upgrade_status_from(addr: SocketAddr, local: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(local.parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(upgrade_request(addr).as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => raw.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&raw).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head)
}

/// 6b. At least 10 failures a minute are allowed: after 10 failures the 11th
/// connection still gets its challenge (and the right key gets in).
#[tokio::test]
async fn ten_failures_a_minute_are_allowed() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    for i in 0..10 {
        failed_attempt(&server)
            .await
            .unwrap_or_else(|(s, _)| panic!("failure {} refused with {s}", i + 1));
    }
    let (mut c, sign) = challenged(&server).await;
    let a = respond(
        &mut c,
        &keygen_sign(&fx.owner.private, NAMESPACE, &sign, &[]),
        None,
    )
    .await;
    assert_auth_ok(&a, &fx.owner.fingerprint, "owner");

    // With the smallest allowed setting, 10 failures are still all admitted.
    let strict = fx.start(ServerOptions::default().args(&["--auth-failures-per-min", "10"]));
    for i in 0..10 {
        failed_attempt(&strict)
            .await
            .unwrap_or_else(|(s, _)| panic!("failure {} refused with {s}", i + 1));
    }
}

/// 7. After authentication, frame errors are answered with the right code and the
/// request id (string or integer) and the connection stays open.
#[tokio::test]
async fn frame_errors_after_authentication_echo_ids_and_keep_the_connection() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let mut c = server.client(&fx.owner, None).await;
    let max_int: u64 = (1 << 53) - 1;
    let long_id = "i".repeat(64);

    // bad_json: not JSON, or JSON that is not an object. No id can be read from
    // such a frame, so none is echoed.
    for text in [
        "{nope",
        "[1,2]",
        "\"ping\"",
        "{\"type\":\"ping\",\"id\":\"x\",",
    ] {
        c.send_text(text).await;
        let e = c.recv().await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some("bad_json")),
            "{text}: {e}"
        );
        assert!(e.get("id").is_none(), "{text}: {e}");
    }

    // bad_message and unknown_type echo string and integer ids.
    let cases: Vec<(Value, &str)> = vec![
        (json!({"type": "attach", "since": "x"}), "bad_message"),
        (json!({"type": 5}), "bad_message"),
        (json!({"session": "default"}), "bad_message"),
        (
            json!({"type": "prompt", "session": "default"}),
            "bad_message",
        ),
        (
            json!({"type": "respond", "request_id": "r", "response": 3}),
            "bad_message",
        ),
        (json!({"type": "frobnicate"}), "unknown_type"),
        (json!({"type": "auth.challenge"}), "unknown_type"),
    ];
    for id in [json!("s-1"), json!(0), json!(max_int), json!(long_id)] {
        for (req, code) in &cases {
            let mut req = req.clone();
            req["id"] = id.clone();
            c.send(req.clone()).await;
            let e = c.recv().await;
            assert_eq!(e["type"], "error", "{req}: {e}");
            assert_eq!(e["code"], *code, "{req}: {e}");
            assert_eq!(e["id"], id, "{req}: {e}");
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        }
    }
    // An id that is itself invalid: bad_message, without an id.
    for bad_id in [
        json!("i".repeat(65)),
        json!(max_int + 1),
        json!(-1),
        json!(1.5),
        json!([1]),
    ] {
        c.send(json!({"type": "ping", "id": bad_id})).await;
        let e = c.recv().await;
        assert_eq!(e["code"], "bad_message", "{bad_id}: {e}");
        assert!(e.get("id").is_none(), "{bad_id}: {e}");
    }
    let pong = c.request(json!({"type": "ping"}), "still-open").await;
    assert_eq!(pong["type"], "pong");
}

/// 8. Signing through a real ssh-agent with `agent_keys` + `sign_with_agent`.
#[tokio::test]
async fn signatures_from_a_real_ssh_agent_are_accepted() {
    let fx = Fixture::new();
    let rsa = common::keygen(fx.path(), "agent-rsa", "rsa", &["-b", "3072"]);
    write_keys(
        &fx,
        &[fx.owner.public_line.clone(), rsa.public_line.clone()],
    );
    let agent = common::SshAgent::start(fx.path());
    agent.add(&fx.owner);
    agent.add(&rsa);
    let server = fx.start(ServerOptions::default());
    let socket = agent.socket.clone();
    let listed = tokio::task::spawn_blocking(move || ccrelay::auth::agent_keys(&socket))
        .await
        .unwrap()
        .expect("agent lists its keys");
    assert_eq!(listed.len(), 2, "{listed:?}");

    for key in [&fx.owner, &rsa] {
        let wanted = PublicKey::from_openssh(&key.public_line).unwrap();
        let public = listed
            .iter()
            .find(|k| k.key_data() == wanted.key_data())
            .expect("the agent holds the key")
            .clone();
        let (mut c, sign) = challenged(&server).await;
        let socket = agent.socket.clone();
        let text = sign.clone();
        let sig = tokio::task::spawn_blocking(move || {
            ccrelay::auth::sign_with_agent(&socket, &public, text.as_bytes())
        })
        .await
        .unwrap()
        .expect("the agent signs");
        assert!(
            keygen_verifies(fx.path(), &key.public_line, &sign, &sig),
            "ssh-keygen rejects the agent signature"
        );
        let a = respond(&mut c, &sig, Some(&key.public_line)).await;
        assert_auth_ok(&a, &key.fingerprint, "owner");
    }
    drop(agent);
}

/// The throttle takes its unit when an attempt arrives (docs/protocol.md §3.6): with a
/// budget of 10, 14 connections upgraded before any failure and answering at
/// once get 10 refusals that were checked (`auth_failed`) and 4 `rate_limited`
/// with nothing checked, all closed 1008; keys in no file cost no verification;
/// a success gives its unit back.
#[tokio::test]
async fn attempts_take_the_budget_on_arrival() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&["--auth-failures-per-min", "10"]));
    // A success from this address gives its unit back: the budget is still 10 after it.
    let mut ok = server.connect().await;
    assert_eq!(ok.authenticate(&fx.owner, None).await["type"], "auth.ok");
    let mut clients = Vec::new();
    for _ in 0..14 {
        let mut c = server.connect().await;
        let challenge = c.recv().await;
        assert_eq!(challenge["type"], "auth.challenge");
        c.challenge = Some(challenge);
        clients.push(c);
    }
    for c in &mut clients {
        let sign = c.challenge.as_ref().unwrap()["sign"]
            .as_str()
            .unwrap()
            .to_string();
        let signature = common::sign(&fx.stranger, &common::bound_text(&sign, &c.origin));
        c.send(json!({"type": "auth.response", "signature": signature,
            "public_key": fx.stranger.public_line, "origin": c.origin}))
            .await;
    }
    let (mut failed, mut limited) = (0, 0);
    for c in &mut clients {
        let (code, _, frames) = c.expect_close(Duration::from_secs(20)).await;
        assert_eq!(code, Some(1008), "{frames:?}");
        match frames.first().and_then(|f| f["code"].as_str()) {
            Some("auth_failed") => failed += 1,
            Some("rate_limited") => limited += 1,
            other => panic!("unexpected answer {other:?}: {frames:?}"),
        }
    }
    assert_eq!((failed, limited), (10, 4));
    let (_, _, metrics) = server.http_get("/metrics").await;
    let verified = metrics
        .lines()
        .find(|l| l.starts_with("ccrelay_auth_signature_verifications_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("verification counter");
    assert_eq!(verified, 1.0, "only the owner's signature was verified");
    // The refusal line names the refused key.
    let logged = common::eventually(Duration::from_secs(5), || {
        server.log_json().iter().any(|l| {
            l["message"] == "authentication failed"
                && l["reason_label"] == "not_listed"
                && l["fingerprint"] == fx.stranger.fingerprint.as_str()
                && l["key_type"] == "ssh-ed25519"
        })
    })
    .await;
    assert!(logged, "{}", server.logs());
    // The address is now throttled before the upgrade.
    let (status, head, _) = http_request(server.addr, &upgrade_request(server.addr)).await;
    assert_eq!(status, 429, "{head}");
}

/// `auth.ok` carries the server's size limits (docs/protocol.md §3.3, §10), from
/// its settings: the defaults, and what the flags set.
#[tokio::test]
async fn auth_ok_carries_the_configured_limits() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let mut c = server.connect().await;
    let ok = c.authenticate(&fx.owner, None).await;
    assert_eq!(
        ok["limits"],
        json!({"max_frame_bytes": 4194304, "max_prompt_bytes": 1048576, "max_upload_bytes": 2097152}),
        "{ok}"
    );
    drop(server);

    let server = fx.start(ServerOptions::default().args(&[
        "--max-frame-bytes",
        "1000000",
        "--max-prompt-bytes",
        "12345",
        "--max-upload-bytes",
        "54321",
    ]));
    for key in [&fx.owner, &fx.viewer] {
        let mut c = server.connect().await;
        let ok = c.authenticate(key, None).await;
        assert_eq!(ok["type"], "auth.ok", "{ok}");
        assert_eq!(
            ok["limits"],
            json!({"max_frame_bytes": 1000000, "max_prompt_bytes": 12345, "max_upload_bytes": 54321}),
            "{ok}"
        );
    }
}
