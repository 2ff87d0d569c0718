//! Verifications per second of `auth::verify_response`, per key type.
//!
//! Run with `cargo bench --bench auth_verify` (plain `harness = false` main: no
//! benchmark framework to build). Keys are generated in memory and each
//! signature is made once, at start, with the auth module's own signer; the
//! timed loop is the whole server-side check (parse, verify, authorize).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime};

use ccrelay::auth::{Challenge, KeySet, sign_with_private_key, verify_response};
use ssh_key::private::{KeypairData, RsaKeypair};
use ssh_key::{Algorithm, EcdsaCurve, PrivateKey};

/// How long each key type is measured.
const MEASURE: Duration = Duration::from_secs(2);

fn key(name: &str) -> PrivateKey {
    let rng = &mut rand::rngs::OsRng;
    let made = match name {
        "ed25519" => PrivateKey::random(rng, Algorithm::Ed25519),
        "ecdsa-p256" => PrivateKey::random(
            rng,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
        ),
        "ecdsa-p384" => PrivateKey::random(
            rng,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
        ),
        "ecdsa-p521" => PrivateKey::random(
            rng,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP521,
            },
        ),
        "rsa-2048" | "rsa-3072" => {
            let bits = if name == "rsa-2048" { 2048 } else { 3072 };
            RsaKeypair::random(rng, bits).and_then(|kp| PrivateKey::new(KeypairData::Rsa(kp), name))
        }
        other => panic!("unknown key type {other}"),
    };
    made.unwrap_or_else(|e| panic!("generating {name}: {e}"))
}

fn main() {
    // `cargo bench` passes --bench; under `cargo test` this is a quick smoke run that
    // only checks every key type still verifies.
    let measure = if std::env::args().any(|a| a == "--bench") {
        MEASURE
    } else {
        println!("(smoke run: use `cargo bench --bench auth_verify` for figures)");
        Duration::from_millis(50)
    };
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    println!("{:<12} {:>12} {:>12}", "key type", "verify/s", "µs/verify");
    for name in [
        "ed25519",
        "ecdsa-p256",
        "ecdsa-p384",
        "ecdsa-p521",
        "rsa-2048",
        "rsa-3072",
    ] {
        let private = key(name);
        let public = private
            .public_key()
            .to_openssh()
            .expect("encode public key");
        // A few unrelated keys in the file, as in real life.
        let mut file = String::new();
        for _ in 0..5 {
            file.push_str(&key("ed25519").public_key().to_openssh().expect("encode"));
            file.push('\n');
        }
        file.push_str(&format!("from=\"127.0.0.0/8\" {public}\n"));
        let keys = KeySet::from_texts("bench", &file, None);
        let challenge = Challenge::new("bench-server", Duration::from_secs(3600));
        let sig = sign_with_private_key(&private, challenge.sign.as_bytes()).expect("sign");
        // Warm up and check that it is accepted at all.
        verify_response(
            &challenge,
            &sig,
            Some(&public),
            peer,
            &keys,
            SystemTime::now(),
        )
        .expect("verifies");

        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < measure {
            for _ in 0..8 {
                let id = verify_response(
                    black_box(&challenge),
                    black_box(&sig),
                    black_box(Some(public.as_str())),
                    peer,
                    &keys,
                    SystemTime::now(),
                );
                black_box(id.is_ok());
            }
            n += 8;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{name:<12} {:>12.0} {:>12.1}",
            n as f64 / secs,
            secs * 1e6 / n as f64
        );
    }
}
