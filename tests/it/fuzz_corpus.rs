//! Replays the committed fuzz corpus (fuzz/corpus/<target>/*) through the same entry
//! points as the fuzz targets, on the stable toolchain: every seed and every crash
//! input ever committed there keeps being checked by `cargo test`, without
//! cargo-fuzz. (The fuzzing itself: scripts/fuzz-smoke.)

use std::path::Path;

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!out.is_empty(), "empty corpus {}", dir.display());
    out.sort();
    out
}

#[test]
fn parse_request_corpus() {
    let mut parsed = 0;
    for data in inputs("parse_request") {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        match ccrelay::protocol::parse_request(text) {
            Ok(_) => parsed += 1,
            Err(e) => {
                serde_json::from_str::<serde_json::Value>(&e.to_frame()).unwrap();
            }
        }
        let _ = ccrelay::protocol::peek_request_id(text);
    }
    assert!(parsed > 5, "the seeds are real frames: most parse");
}

#[test]
fn sshsig_corpus() {
    let armored: Vec<bool> = inputs("sshsig_armor")
        .iter()
        .filter_map(|d| std::str::from_utf8(d).ok())
        .map(ccrelay::auth::fuzzing::sshsig_armored)
        .collect();
    assert!(
        armored.iter().any(|ok| *ok),
        "real ssh-keygen signatures parse"
    );
    let blobs: Vec<bool> = inputs("sshsig_blob")
        .iter()
        .map(|d| ccrelay::auth::fuzzing::sshsig_blob(d))
        .collect();
    assert!(blobs.iter().any(|ok| *ok));
}

#[test]
fn authorized_keys_corpus() {
    for data in inputs("authorized_keys") {
        if let Ok(text) = std::str::from_utf8(&data) {
            ccrelay::auth::fuzzing::authorized_keys(text);
        }
    }
}

#[test]
fn agent_line_corpus() {
    for data in inputs("agent_line") {
        let _ = ccrelay::agent::wire::classify(&data);
    }
}

#[test]
fn ws_frame_header_corpus() {
    let mut over = 0;
    for data in inputs("ws_frame_header") {
        if let ccrelay::ws::gate::Scan::Over(_) = ccrelay::ws::gate::fuzzing::frame_scanner(&data) {
            over += 1;
        }
    }
    assert!(over > 0, "some seeds announce more than their limit");
}

#[test]
fn forwarded_for_corpus() {
    let proxy: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let forwarded = inputs("forwarded_for")
        .iter()
        .map(|d| ccrelay::listen::proxy::fuzzing::forwarded_for(d))
        .filter(|ip| *ip != proxy)
        .count();
    assert!(forwarded > 0, "some seeds name a client address");
}
