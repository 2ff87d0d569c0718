//! What a stranger's `auth.response`s cost before
//! authentication. 1,000 responses from one address (127.0.0.3), 16 at a time,
//! signed by keys in no keys file — Ed25519 keys with real signatures, and
//! RSA-16384 keys with a huge public exponent — plus some bad signatures by a
//! listed key: at most the throttle's budget of them cost a signature
//! verification (counted by `ccrelay_auth_signature_verifications_total`), an
//! authenticated client's pings keep being answered (p50/p99 printed, not
//! asserted), and the address is then refused with 429.
//!
//! A flood: run under `flock /tmp/ccrelay-heavy.lock`.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Error as WsError;

const ATTEMPTS: usize = 1000;
const CONCURRENCY: usize = 16;
const BUDGET: u64 = 10;
const FLOOD_FROM: &str = "127.0.0.3:0";

fn ssh_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// An armored SSHSIG by an RSA key with a 16384-bit modulus and public exponent
/// 2^33-1 (the costliest the rsa crate would take), over nothing in particular:
/// if the server ever did the arithmetic, each would cost a 16384-bit modexp
/// with a 33-bit exponent. The modulus is random (not a real RSA modulus):
/// the arithmetic costs the same. Returns (armored signature, public key line).
fn huge_rsa_signature() -> (String, String) {
    let mut rng = common::seed::Lcg::for_test("huge_rsa_signature");
    let mut n = vec![0u8; 2048];
    rng.fill(&mut n);
    n[0] |= 0x80;
    n[2047] |= 1;
    let e = [0x01, 0xff, 0xff, 0xff, 0xff];
    let key = ssh_key::public::KeyData::Rsa(ssh_key::public::RsaPublicKey {
        e: ssh_key::Mpint::from_positive_bytes(&e).unwrap(),
        n: ssh_key::Mpint::from_positive_bytes(&n).unwrap(),
    });
    let public = ssh_key::PublicKey::new(key, "huge-e");
    let key_blob = public.to_bytes().unwrap();
    let mut raw_sig = vec![0u8; 2048];
    rng.fill(&mut raw_sig);
    let mut sig = Vec::new();
    ssh_string(&mut sig, b"rsa-sha2-512");
    ssh_string(&mut sig, &raw_sig);
    let mut blob = b"SSHSIG".to_vec();
    blob.extend_from_slice(&1u32.to_be_bytes());
    ssh_string(&mut blob, &key_blob);
    ssh_string(&mut blob, b"ccrelay-auth");
    ssh_string(&mut blob, b"");
    ssh_string(&mut blob, b"sha512");
    ssh_string(&mut blob, &sig);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&blob);
    let body: Vec<&str> = b64
        .as_bytes()
        .chunks(70)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let armored = format!(
        "-----BEGIN SSH SIGNATURE-----\n{}\n-----END SSH SIGNATURE-----\n",
        body.join("\n")
    );
    (armored, public.to_openssh().unwrap())
}

/// What one flood attempt saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Seen {
    Http(u16),
    Error(&'static str),
    Other,
}

enum Signer {
    Ed(Box<ssh_key::PrivateKey>),
    /// A listed key whose signature is over the wrong text (costs a verification).
    ListedBad(KeyPair),
    Rsa(String, String),
}

async fn attempt(server: &TestServer, signer: &Signer) -> Seen {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(FLOOD_FROM.parse().unwrap()).unwrap();
    let Ok(stream) = socket.connect(server.addr).await else {
        return Seen::Other;
    };
    let ws =
        match tokio_tungstenite::client_async(server.url.as_str(), MaybeTlsStream::Plain(stream))
            .await
        {
            Ok((ws, _)) => ws,
            Err(WsError::Http(resp)) => return Seen::Http(resp.status().as_u16()),
            Err(_) => return Seen::Other,
        };
    let mut c = TestClient::from_ws(ws);
    let challenge = c.recv().await;
    let sign = common::bound_text(challenge["sign"].as_str().unwrap_or_default(), &c.origin);
    let (signature, public_key) = match signer {
        Signer::Ed(k) => (
            ccrelay::auth::sign_with_private_key(k, sign.as_bytes()).unwrap(),
            k.public_key().to_openssh().unwrap(),
        ),
        Signer::ListedBad(k) => (
            common::sign(k, &format!("{sign}-not-this")),
            k.public_line.clone(),
        ),
        Signer::Rsa(sig, key) => (sig.clone(), key.clone()),
    };
    c.send(
        json!({"type": "auth.response", "signature": signature, "public_key": public_key,
        "origin": c.origin}),
    )
    .await;
    match c.recv_frame(Duration::from_secs(30)).await {
        Some(Received::Frame(v)) if v["type"] == "error" => match v["code"].as_str() {
            Some("auth_failed") => Seen::Error("auth_failed"),
            Some("rate_limited") => Seen::Error("rate_limited"),
            _ => Seen::Other,
        },
        _ => Seen::Other,
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_unlisted_keys_costs_at_most_the_budget() {
    // Skip cleanly where 127.0.0.3 cannot be bound (not Linux loopback).
    if let Err(e) = std::net::TcpListener::bind("127.0.0.3:0") {
        common::require::missing("a bindable 127.0.0.3", &format!("{e}"));
        return;
    }
    let fx = Fixture::new();
    let server =
        fx.start(ServerOptions::default().args(&["--auth-failures-per-min", &BUDGET.to_string()]));
    let mut signers: Vec<Signer> = (0..8)
        .map(|_| {
            Signer::Ed(Box::new(
                ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519)
                    .unwrap(),
            ))
        })
        .collect();
    for _ in 0..2 {
        let (sig, key) = huge_rsa_signature();
        signers.push(Signer::Rsa(sig, key));
    }
    signers.push(Signer::ListedBad(fx.owner2.clone()));
    let signers = Arc::new(signers);

    // One RSA-16384 huge-exponent attempt from another address, on its own.
    {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.4:0".parse().unwrap()).unwrap();
        let stream = socket.connect(server.addr).await.unwrap();
        let (ws, _) =
            tokio_tungstenite::client_async(server.url.as_str(), MaybeTlsStream::Plain(stream))
                .await
                .unwrap();
        let mut c = TestClient::from_ws(ws);
        assert_eq!(c.recv().await["type"], "auth.challenge");
        let (sig, key) = huge_rsa_signature();
        c.send(json!({"type": "auth.response", "signature": sig, "public_key": key, "origin": c.origin}))
            .await;
        let answer = c.recv().await;
        assert_eq!(answer["code"], "auth_failed", "{answer}");
    }

    // The legitimate client, on 127.0.0.1, pings throughout.
    let mut pinger = server.client(&fx.owner, Some("pinger")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_pings = stop.clone();
    let pings = tokio::spawn(async move {
        let mut rtts = Vec::new();
        let mut i = 0u64;
        while !stop_pings.load(Ordering::Relaxed) && i < 100_000 {
            i += 1;
            let id = format!("p{i}");
            let sent = Instant::now();
            let reply = pinger.request(json!({"type": "ping"}), &id).await;
            assert_eq!(reply["type"], "pong", "{reply}");
            rtts.push(sent.elapsed());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        rtts
    });

    let started = Instant::now();
    let seen: Vec<Seen> = futures_util::stream::iter(0..ATTEMPTS)
        .map(|i| {
            let signers = signers.clone();
            let server = &server;
            async move { attempt(server, &signers[i % signers.len()]).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut rtts = pings.await.unwrap();
    rtts.sort();

    let count = |s: Seen| seen.iter().filter(|x| **x == s).count();
    let (_, _, metrics) = server.http_get("/metrics").await;
    let verified = metric(&metrics, "ccrelay_auth_signature_verifications_total")
        .expect("verification counter exposed");
    // The budget refills at BUDGET per minute while the flood runs.
    let allowed = BUDGET as f64 + (took.as_secs_f64() * BUDGET as f64 / 60.0).ceil() + 1.0;
    println!(
        "{ATTEMPTS} attempts from 127.0.0.3 in {took:?}: {} refused 429 before the upgrade, {} auth_failed, {} rate_limited, {} other; {verified} signature verifications (budget {BUDGET}/min, allowed {allowed})",
        count(Seen::Http(429)),
        count(Seen::Error("auth_failed")),
        count(Seen::Error("rate_limited")),
        seen.len()
            - count(Seen::Http(429))
            - count(Seen::Error("auth_failed"))
            - count(Seen::Error("rate_limited")),
    );
    println!(
        "pings during the flood: {} round-trips, p50 {:?}, p99 {:?}, max {:?}",
        rtts.len(),
        percentile(&rtts, 0.5),
        percentile(&rtts, 0.99),
        rtts.last().copied().unwrap_or_default()
    );
    assert!(verified <= allowed, "{verified} verifications > {allowed}");
    assert!(
        count(Seen::Http(429)) > ATTEMPTS / 2,
        "the address was not throttled: {:?}",
        seen.iter().take(40).collect::<Vec<_>>()
    );
    assert!(!rtts.is_empty(), "no ping answered during the flood");

    // Unlisted keys were refused without verification, and the refusal log line
    // names the key: fingerprint and type.
    let logs = server.log_json();
    let refusals: Vec<&Value> = logs
        .iter()
        .filter(|l| l["message"] == "authentication failed")
        .collect();
    assert!(
        refusals.iter().any(|l| l["reason_label"] == "not_listed"
            && l["fingerprint"]
                .as_str()
                .is_some_and(|f| f.starts_with("SHA256:"))
            && l["key_type"] == "ssh-ed25519"),
        "no refusal line with a fingerprint: {refusals:?}"
    );
    // The huge exponent is refused by its bound, before any lookup or
    // arithmetic, and the line still names the key.
    let rsa_refusals = refusals
        .iter()
        .filter(|l| {
            l["key_type"] == "ssh-rsa"
                && l["reason_label"] == "unsupported_key_type"
                && l["fingerprint"]
                    .as_str()
                    .is_some_and(|f| f.starts_with("SHA256:"))
        })
        .count();
    println!("RSA-16384 huge-exponent refusals logged: {rsa_refusals}");
    assert!(rsa_refusals >= 1, "{refusals:?}");

    // The address is now refused with 429; another address still logs in.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(FLOOD_FROM.parse().unwrap()).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    match tokio_tungstenite::client_async(server.url.as_str(), MaybeTlsStream::Plain(stream)).await
    {
        Err(WsError::Http(resp)) => assert_eq!(resp.status().as_u16(), 429),
        Ok(_) => panic!("127.0.0.3 was not refused after the flood"),
        Err(e) => panic!("unexpected: {e}"),
    }
    let mut c = server.connect().await;
    assert_eq!(c.authenticate(&fx.owner, None).await["type"], "auth.ok");
}
