//! Pairing a new device (docs/protocol.md §3.9) and `ccrelay keys add|list|remove`,
//! against the real binary over real sockets. The device's signature is made by
//! the real `ssh-keygen -Y sign`, as any outside client could.

use crate::common;

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::time::Duration;

use common::tmux::Tmux;
use common::*;
use serde_json::{Value, json};
use sha2::Digest as _;

/// The pairing code rule of §3, computed independently of the server.
fn expected_code(nonce: &str, fingerprint: &str) -> String {
    let d = sha2::Sha256::digest(format!("ccrelay-pair-v1:{nonce}:{fingerprint}").as_bytes());
    format!(
        "{:06}",
        u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % 1_000_000
    )
}

/// Connect, read the challenge, send a pair.request for `key`; returns the
/// client and the server's answer.
async fn pair_request(server: &TestServer, key: &KeyPair, device: &str) -> (TestClient, Value) {
    pair_request_on(server.connect().await, key, device, None).await
}

/// On a connection just opened: read the challenge and send a pair.request for
/// `key` (with `invite` when given); returns the client and the server's answer.
async fn pair_request_on(
    mut c: TestClient,
    key: &KeyPair,
    device: &str,
    invite: Option<&str>,
) -> (TestClient, Value) {
    let challenge = c.recv().await;
    assert_eq!(challenge["type"], "auth.challenge");
    let sign = challenge["sign"].as_str().unwrap().to_string();
    c.challenge = Some(challenge);
    let signature = ssh_keygen_sign(key, &common::bound_text(&sign, &c.origin));
    let mut request = json!({"type": "pair.request", "id": "pair", "signature": signature,
        "public_key": key.public_line, "device": device, "origin": c.origin});
    if let Some(token) = invite {
        request["invite"] = Value::from(token);
    }
    c.send(request).await;
    let answer = c.recv().await;
    (c, answer)
}

/// A WebSocket to `server` whose socket is bound to `source` (another loopback
/// address), so the server sees a different peer.
async fn connect_from(server: &TestServer, source: &str) -> TestClient {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{source}:0").parse().unwrap())
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    let stream = socket.connect(server.addr).await.expect("connects");
    let tls = tokio_tungstenite::Connector::Rustls(tls_client_config());
    let (ws, _) = tokio_tungstenite::client_async_tls_with_config(
        server.url.as_str(),
        stream,
        None,
        Some(tls),
    )
    .await
    .expect("websocket upgrade");
    TestClient::from_ws(ws)
}

fn nonce_of(c: &TestClient) -> String {
    c.challenge.as_ref().unwrap()["nonce"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn expect_error_and_policy_close(c: &mut TestClient, code: &str) {
    let (close, _, frames) = c.expect_close(Duration::from_secs(10)).await;
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "error" && f["code"] == code),
        "expected error {code}, got {frames:?}"
    );
    assert_eq!(close, Some(1008), "{frames:?}");
}

fn paired_keys(fx: &Fixture) -> std::path::PathBuf {
    fx.data_dir().join("paired_keys")
}

/// The full happy path: pending with the code, every owner (also one that
/// connects later) told with the same code, allow → auth.ok, exactly one line
/// appended to paired_keys keeping every other byte, and the key then logs in.
#[tokio::test]
async fn an_owner_allows_a_device_which_then_logs_in_normally() {
    let fx = Fixture::new();
    let phone = keygen(fx.path(), "phone", "ed25519", &[]);
    std::fs::create_dir_all(fx.data_dir()).unwrap();
    // Pre-seeded: comments, a blank line, another key, no trailing newline.
    let before = format!(
        "# devices paired earlier\n\n  # keep me\n{} old tablet (paired 2026-01-01 by SHA256:x)",
        fx.stranger
            .public_line
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    );
    std::fs::write(paired_keys(&fx), &before).unwrap();
    let server = fx.start(ServerOptions::default());
    let mut owner = server.client(&fx.owner, Some("laptop")).await;

    let (mut device, pending) = pair_request(&server, &phone, "Pixel 9").await;
    assert_eq!(pending["type"], "pair.pending", "{pending}");
    assert_eq!(pending["id"], "pair");
    let code = expected_code(&nonce_of(&device), &phone.fingerprint);
    assert_eq!(pending["code"], code.as_str());
    assert_eq!(pending["expires_in_ms"], 120_000);
    let pair_id = pending["pair_id"].as_str().unwrap().to_string();

    let (requested, _) = owner
        .recv_until("pair.requested", |v| v["type"] == "pair.requested")
        .await;
    assert_eq!(requested["pair_id"], pair_id.as_str());
    assert_eq!(requested["code"], code.as_str());
    assert_eq!(requested["fingerprint"], phone.fingerprint.as_str());
    assert_eq!(requested["key_type"], "ssh-ed25519");
    assert_eq!(requested["device"], "Pixel 9");
    assert_eq!(requested["peer"], "127.0.0.1");
    assert!(requested["expires_in_ms"].as_u64().unwrap() <= 120_000);

    // An owner that connects while the request is pending hears of it right after auth.ok.
    let mut late = server.connect().await;
    assert_eq!(late.authenticate(&fx.owner2, None).await["type"], "auth.ok");
    let next = late.recv().await;
    assert_eq!(next["type"], "pair.requested", "{next}");
    assert_eq!(next["code"], code.as_str());

    let ok = owner
        .request(
            json!({"type": "pair.respond", "pair_id": pair_id, "allow": true}),
            "respond",
        )
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let auth_ok = device.recv().await;
    assert_eq!(auth_ok["type"], "auth.ok", "{auth_ok}");
    assert_eq!(auth_ok["role"], "owner");
    assert_eq!(auth_ok["fingerprint"], phone.fingerprint.as_str());
    let approver = owner.client_id.clone();
    for o in [&mut owner, &mut late] {
        let (resolved, _) = o
            .recv_until("pair.resolved", |v| v["type"] == "pair.resolved")
            .await;
        assert_eq!(resolved["pair_id"], pair_id.as_str());
        assert_eq!(resolved["allow"], true);
        assert_eq!(resolved["role"], "owner");
        assert_eq!(resolved["by"], approver.as_str());
    }
    // The device is authenticated from now on.
    let pong = device.request(json!({"type": "ping"}), "p").await;
    assert_eq!(pong["type"], "pong");
    // A later answer: not_pending.
    let again = owner
        .request(
            json!({"type": "pair.respond", "pair_id": pair_id, "allow": true}),
            "again",
        )
        .await;
    assert_eq!(again["code"], "not_pending", "{again}");

    // Exactly one line more; every other byte kept.
    let after = std::fs::read_to_string(paired_keys(&fx)).unwrap();
    let added = after
        .strip_prefix(&format!("{before}\n"))
        .unwrap_or_else(|| panic!("old bytes changed:\n{after}"));
    assert_eq!(added.matches('\n').count(), 1, "{added:?}");
    let bare: Vec<&str> = phone.public_line.split_whitespace().take(2).collect();
    let line = added.trim_end_matches('\n');
    assert!(
        line.starts_with(&format!("{} {} Pixel 9 (paired ", bare[0], bare[1])),
        "{line}"
    );
    assert!(
        line.ends_with(&format!(" by {})", fx.owner.fingerprint)),
        "{line}"
    );

    // Reconnecting with that key authenticates normally, as an owner.
    let mut again = server.connect().await;
    let ok = again.authenticate(&phone, Some("Pixel 9")).await;
    assert_eq!(ok["type"], "auth.ok", "{ok}");
    assert_eq!(ok["role"], "owner");
}

/// Deny, viewer role, forbidden for viewers, one pending per address, withdrawal.
#[tokio::test]
async fn deny_viewer_role_limits_and_withdrawal() {
    let fx = Fixture::new();
    let tablet = keygen(fx.path(), "tablet", "ed25519", &[]);
    let other = keygen(fx.path(), "other", "ecdsa", &[]);
    let server = fx.start(ServerOptions::default());
    let mut owner = server.client(&fx.owner, None).await;
    let mut viewer = server.client(&fx.viewer, None).await;

    // Deny.
    let (mut device, pending) = pair_request(&server, &tablet, "tablet").await;
    assert_eq!(pending["type"], "pair.pending", "{pending}");
    let pair_id = pending["pair_id"].as_str().unwrap().to_string();
    let forbidden = viewer
        .request(
            json!({"type": "pair.respond", "pair_id": pair_id, "allow": true}),
            "v",
        )
        .await;
    assert_eq!(forbidden["code"], "forbidden", "{forbidden}");
    let ok = owner
        .request(
            json!({"type": "pair.respond", "pair_id": pair_id, "allow": false}),
            "deny",
        )
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    expect_error_and_policy_close(&mut device, "auth_failed").await;
    let (resolved, _) = owner
        .recv_until("pair.resolved", |v| v["type"] == "pair.resolved")
        .await;
    assert_eq!(resolved["allow"], false);
    assert_eq!(resolved["by"], owner.client_id.as_str());
    assert!(!paired_keys(&fx).exists(), "a denied key was written");

    // One pending per address: a second request from 127.0.0.1 is refused.
    let (first, pending) = pair_request(&server, &tablet, "tablet").await;
    assert_eq!(pending["type"], "pair.pending", "{pending}");
    let first_id = pending["pair_id"].as_str().unwrap().to_string();
    let (mut second, answer) = pair_request(&server, &other, "other").await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "rate_limited");
    let (close, _, _) = second.expect_close(Duration::from_secs(10)).await;
    assert_eq!(close, Some(1008));
    // The device that disconnects withdraws its request.
    drop(first);
    let (resolved, _) = owner
        .recv_until("pair.resolved", |v| {
            v["type"] == "pair.resolved" && v["pair_id"] == first_id.as_str()
        })
        .await;
    assert_eq!(resolved["allow"], false);
    assert_eq!(resolved["by"], "relay");

    // Allowed as a viewer: paired_viewers created 0600, auth.ok as viewer.
    let (mut device, pending) = pair_request(&server, &other, "e-reader").await;
    assert_eq!(pending["type"], "pair.pending", "{pending}");
    let ok = owner
        .request(
            json!({"type": "pair.respond", "pair_id": pending["pair_id"], "allow": true, "role": "viewer"}),
            "allow-viewer",
        )
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let auth_ok = device.recv().await;
    assert_eq!(auth_ok["role"], "viewer", "{auth_ok}");
    let path = fx.data_dir().join("paired_viewers");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let forbidden = device
        .request(json!({"type": "prompt", "content": "hi"}), "x")
        .await;
    assert_eq!(forbidden["code"], "forbidden");

    // Bad device names are bad_message + 1008.
    let (mut bad, answer) = pair_request(&server, &tablet, "evil\u{1b}[2J\u{202e}").await;
    assert_eq!(answer["code"], "bad_message", "{answer}");
    let (close, _, _) = bad.expect_close(Duration::from_secs(10)).await;
    assert_eq!(close, Some(1008));
}

/// Nobody answers within --pair-timeout: the device gets auth_failed + 1008 and
/// owners a pair.resolved by the relay.
#[tokio::test]
async fn an_unanswered_request_times_out() {
    let fx = Fixture::new();
    let phone = keygen(fx.path(), "phone", "ed25519", &[]);
    let server =
        fx.start(ServerOptions::default().args(&["--pair-timeout", "1", "--auth-timeout", "0.5"]));
    let mut owner = server.client(&fx.owner, None).await;
    let (mut device, pending) = pair_request(&server, &phone, "phone").await;
    assert_eq!(pending["type"], "pair.pending", "{pending}");
    assert_eq!(pending["expires_in_ms"], 1000);
    // The auth timeout (0.5 s) no longer applies: a ping is still answered after it.
    let (requested, _) = owner
        .recv_until("pair.requested", |v| v["type"] == "pair.requested")
        .await;
    assert_eq!(requested["pair_id"], pending["pair_id"]);
    expect_error_and_policy_close(&mut device, "auth_failed").await;
    let (resolved, _) = owner
        .recv_until("pair.resolved", |v| v["type"] == "pair.resolved")
        .await;
    assert_eq!(resolved["by"], "relay");
    assert_eq!(resolved["allow"], false);
    assert!(
        server
            .wait_log("pair request expired", Duration::from_secs(2))
            .await,
        "{}",
        server.logs()
    );
}

fn keys_cmd(fx: &Fixture, args: &[&str]) -> (i32, String) {
    let out = Command::new(ccrelay_bin())
        .arg("keys")
        .args(args)
        .arg("--data-dir")
        .arg(fx.data_dir())
        .arg("--authorized-keys")
        .arg(fx.authorized_keys())
        .arg("--viewer-keys")
        .arg(fx.path().join("viewer_keys"))
        .env_remove("CCRELAY_PAIRED_KEYS")
        .env_remove("CCRELAY_PAIRED_VIEWERS")
        .output()
        .expect("ccrelay keys runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `ccrelay keys add|list|remove`: exit codes, file effects, and a removed key's
/// live connection closed with 1008.
#[tokio::test]
async fn keys_add_list_remove() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let line = fx.stranger.public_line.clone();

    let (code, out) = keys_cmd(&fx, &["add", &line]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = keys_cmd(&fx, &["add", &line]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("already"), "{out}");
    let text = std::fs::read_to_string(paired_keys(&fx)).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let mode = std::fs::metadata(paired_keys(&fx))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let (code, out) = keys_cmd(&fx, &["add", "ssh-ed25519 not-base64"]);
    assert_eq!(code, 2, "{out}");
    let (code, out) = keys_cmd(
        &fx,
        &[
            "add",
            "ssh-dss AAAAB3NzaC1kc3MAAACBAOybTJRU3LxmE7DaYZpiKkcWsqABkLAGKk0oFnp8vWUmuKkyhOcMZ3uBzuUDkJbAiKcJdFNaKgSinFC6DjGM44MJN/AvT1YBccoJr3QNWH1YKkPFUe1F10DhE/0GOylWIyWXzvh/a3Z2CJg2WnpmkdlhRt8YJQuU2OJfkqW1TIRNAAAAFQC1sjlXjs0mKYhQvlINqMOTFTbKEwAAAIB/pBOokMQqhd3phSaDRbQMX87fqFZHEK/trqD96kQ4YSi02U7f3h7iVB6h11VDkHwGNc5Pe83jBmP1li6ItmGRX5BytPpMtTDmv2xJWObCoFUgvU7KsEpD/JpL9J0HKZcBuYKxkHc2GNpvvnFBEHQFOBom/wTaT1XsaWO/PJBp+AAAAIAWPIUOeOYu8Ui3hvu2ZO/8/8s2JsoPZj7N/0yQRaDP21D6XiwCHXxhXhLc6DIPUEqalcAtDNxWduaNEKh+ChwWU40nWSngriRLv5hiVNH+Q5fgCw+Z3nusTIF2AyQ/NK0fDDI4dvkWM65djQbcycTrnEhQ8iW2NVqV1iKd+pZ8Qw== dsa",
        ],
    );
    assert_eq!(code, 2, "{out}");

    let (code, out) = keys_cmd(&fx, &["list"]);
    assert_eq!(code, 0, "{out}");
    for (fp, role, file) in [
        (&fx.owner.fingerprint, "owner", "authorized_keys"),
        (&fx.viewer.fingerprint, "viewer", "viewer_keys"),
        (&fx.stranger.fingerprint, "owner", "paired_keys"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains(fp.as_str()) && l.starts_with(role) && l.contains(file)),
            "{fp} {role} {file} not listed:\n{out}"
        );
    }
    assert!(out.contains("stranger@test"), "comment listed: {out}");

    // The server picks the added key up (watched file) and lets it in.
    let mut live = None;
    for _ in 0..50 {
        let mut c = server.connect().await;
        let ok = c.authenticate(&fx.stranger, None).await;
        if ok["type"] == "auth.ok" {
            live = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut live = live.expect("the added key was never accepted");

    let (code, out) = keys_cmd(&fx, &["remove", &fx.stranger.fingerprint]);
    assert_eq!(code, 0, "{out}");
    let (close, _, _) = live.expect_close(Duration::from_secs(10)).await;
    assert_eq!(close, Some(1008));
    let (code, out) = keys_cmd(&fx, &["remove", &fx.stranger.fingerprint]);
    assert_eq!(code, 1, "{out}");
    // A key of the authorized_keys file is not ccrelay's to remove.
    let (code, out) = keys_cmd(&fx, &["remove", &fx.owner.fingerprint]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("authorized_keys"), "{out}");
    // `keys check` still works.
    let out = Command::new(ccrelay_bin())
        .args(["keys", "check"])
        .arg(fx.authorized_keys())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

/// `ccrelay attach` shows a pair request to an owner with its code, and `y`
/// approves it: the device is authenticated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_shows_a_pair_request_and_y_approves_it() {
    let fx = Fixture::new();
    let phone = keygen(fx.path(), "phone", "ed25519", &[]);
    let server = fx.start(ServerOptions::default());
    let home = fx.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let tmux = Tmux::new("pairing");
    let command = format!(
        "env -u SSH_AUTH_SOCK -u XDG_CONFIG_HOME HOME={} NO_COLOR=1 {} attach -i {} --device laptop {}; echo CLIENT-EXITED $?; sleep 600",
        home.display(),
        ccrelay_bin(),
        fx.owner.private.display(),
        server.url
    );
    tmux.tmux(&[
        "new-session",
        "-d",
        "-s",
        "owner",
        "-x",
        "220",
        "-y",
        "50",
        &command,
    ]);
    tmux.wait_for_async("owner", "the editor", |s| {
        s.contains("connected to") && s.lines().any(|l| l == ">" || l.starts_with("> "))
    })
    .await;

    let (mut device, pending) = pair_request(&server, &phone, "Pixel 9").await;
    assert_eq!(pending["type"], "pair.pending", "{pending}");
    let code = pending["code"].as_str().unwrap().to_string();
    let screen = tmux
        .wait_for_async("owner", "the pair request", |s| {
            s.contains(&format!("Pair device \"Pixel 9\" (code {code}"))
        })
        .await;
    assert!(screen.contains(&phone.fingerprint), "{screen}");
    tmux.tmux(&["send-keys", "-t", "owner", "y"]);
    let auth_ok = device.recv().await;
    assert_eq!(auth_ok["type"], "auth.ok", "{auth_ok}");
    assert_eq!(auth_ok["role"], "owner");
    tmux.wait_for_async("owner", "the resolution", |s| {
        s.contains("device \"Pixel 9\" paired as owner by you") && !s.contains("Pair device")
    })
    .await;
    tmux.tmux(&["send-keys", "-t", "owner", "C-d"]);
    tmux.wait_for_async("owner", "the exit", |s| s.contains("CLIENT-EXITED 0"))
        .await;
}

/// `ccrelay keys` without a server: `add --viewer` goes to paired_viewers and is
/// listed as a viewer (a comment with control characters listed visibly, an
/// empty one as `-`), an unreadable required file makes `list` exit 2 naming its
/// setting while still listing the rest, and `remove` takes a key out of both
/// paired files at once.
#[test]
fn keys_viewer_role_unreadable_files_and_removal_from_both_files() {
    let fx = Fixture::new();
    let line = fx.stranger.public_line.trim().to_string();
    let (code, out) = keys_cmd(&fx, &["add", "--viewer", &line]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("as viewer to") && out.contains("paired_viewers"),
        "{out}"
    );
    // The same key as an owner too, without a comment.
    let bare: String = line
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let (code, out) = keys_cmd(&fx, &["add", &bare]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("as owner to"), "{out}");
    let owner_line = std::fs::read_to_string(paired_keys(&fx)).unwrap();
    assert!(
        owner_line.contains(" key (paired "),
        "unnamed key: {owner_line}"
    );

    std::fs::write(
        fx.path().join("viewer_keys"),
        format!(
            "{} tab\there\n",
            fx.viewer
                .public_line
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        ),
    )
    .unwrap();
    let (code, out) = keys_cmd(&fx, &["list"]);
    assert_eq!(code, 0, "{out}");
    let viewer_rows: Vec<&str> = out.lines().filter(|l| l.starts_with("viewer\t")).collect();
    assert!(
        viewer_rows
            .iter()
            .any(|l| l.contains(&fx.stranger.fingerprint) && l.contains("paired_viewers")),
        "{out}"
    );
    assert!(
        viewer_rows
            .iter()
            .any(|l| l.contains(&fx.viewer.fingerprint) && l.ends_with("tab?here")),
        "control characters shown as '?': {out}"
    );

    // A required file that cannot be read: exit 2, the file and its setting named.
    let out = Command::new(ccrelay_bin())
        .args(["keys", "list", "--data-dir"])
        .arg(fx.data_dir())
        .arg("--authorized-keys")
        .arg(fx.path().join("no_such_file"))
        .env_remove("CCRELAY_PAIRED_KEYS")
        .env_remove("CCRELAY_PAIRED_VIEWERS")
        .env_remove("CCRELAY_VIEWER_KEYS")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("no_such_file: cannot read") && text.contains("(--authorized-keys)"),
        "{text}"
    );
    assert!(
        text.contains(&fx.stranger.fingerprint),
        "the rest is listed: {text}"
    );

    let (code, out) = keys_cmd(&fx, &["remove", &fx.stranger.fingerprint]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("removed ").count(), 2, "{out}");
    assert!(out.contains("(1 line)"), "{out}");
    let (code, out) = keys_cmd(&fx, &["list"]);
    assert_eq!(code, 0);
    assert!(!out.contains(&fx.stranger.fingerprint), "{out}");
}

/// A key an operator listed with options that refuse it now (`expiry-time` in
/// the past) cannot be paired instead: once its signature verified, its
/// pair.request fails like a failed authentication, no owner hears of it,
/// nothing is appended, and the log says where the key is listed. A bad
/// signature over a listed key is refused without that line (nothing is
/// looked up before the signature verified), and a listed viewer key is refused too.
#[tokio::test]
async fn a_listed_key_is_never_paired_even_when_its_options_refuse_it() {
    let fx = Fixture::new();
    let expired = keygen(fx.path(), "expired", "ed25519", &[]);
    std::fs::write(
        fx.authorized_keys(),
        format!(
            "{}\n{}\nexpiry-time=\"20200101\" {}\n",
            fx.owner.public_line, fx.owner2.public_line, expired.public_line
        ),
    )
    .unwrap();
    let server = fx.start(ServerOptions::default());
    let mut owner = server.client(&fx.owner, None).await;

    // It cannot log in (expired)...
    let mut c = server.connect().await;
    let refused = c.authenticate(&expired, None).await;
    assert_eq!(refused["code"], "auth_failed", "{refused}");

    // ...a signature that does not verify is refused before any lookup...
    let mut c = server.connect().await;
    assert_eq!(c.recv().await["type"], "auth.challenge");
    let wrong = ssh_keygen_sign(&expired, "not the challenge");
    c.send(
        json!({"type": "pair.request", "id": "pair", "signature": wrong,
        "public_key": expired.public_line, "device": "sneaky", "origin": c.origin}),
    )
    .await;
    expect_error_and_policy_close(&mut c, "auth_failed").await;
    assert!(
        server
            .wait_log("bad_signature", Duration::from_secs(5))
            .await,
        "{}",
        server.logs()
    );
    assert!(
        !server.logs().contains("already listed"),
        "looked up before verifying: {}",
        server.logs()
    );

    // ...and a verified pair.request for it fails the same way.
    let (mut device, answer) = pair_request(&server, &expired, "sneaky").await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "auth_failed");
    assert_eq!(answer["message"], "authentication failed");
    assert_eq!(answer["id"], "pair");
    let (close, _, _) = device.expect_close(Duration::from_secs(10)).await;
    assert_eq!(close, Some(1008));
    assert!(
        server
            .wait_log("already listed in a keys file", Duration::from_secs(5))
            .await,
        "{}",
        server.logs()
    );
    let logs = server.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("already listed in a keys file"))
        .unwrap();
    assert!(
        line.contains(&fx.authorized_keys().display().to_string())
            && line.contains(&expired.fingerprint),
        "the log names the file and the key: {line}"
    );

    // A listed viewer key cannot become an owner by pairing either.
    let (mut device, answer) = pair_request(&server, &fx.viewer, "upgrade me").await;
    assert_eq!(answer["code"], "auth_failed", "{answer}");
    let (close, _, _) = device.expect_close(Duration::from_secs(10)).await;
    assert_eq!(close, Some(1008));

    assert!(!paired_keys(&fx).exists(), "nothing appended");
    assert!(!fx.data_dir().join("paired_viewers").exists());
    // The owner heard of none of them: nothing came before the pong to its
    // ping (an owner's frames arrive in the order they were sent).
    let pong = owner.request(json!({"type": "ping"}), "p").await;
    assert_eq!(pong["type"], "pong", "{pong}");
    let mut earlier = Vec::new();
    while let Some(Received::Frame(v)) = owner.recv_frame(Duration::from_millis(1)).await {
        earlier.push(v);
    }
    assert!(
        earlier.iter().all(|v| v["type"] != "pair.requested"),
        "{earlier:?}"
    );
}

/// Eight requests pending from eight addresses (127.0.0.2 to .9); a ninth, from
/// a tenth address, is refused `overloaded` with close 1008.
#[tokio::test]
async fn eight_pending_requests_fill_the_server_and_a_ninth_is_overloaded() {
    let fx = Fixture::new();
    let phone = keygen(fx.path(), "phone", "ed25519", &[]);
    let server = fx.start(ServerOptions::default());
    let mut held = Vec::new();
    for i in 2..=9 {
        let c = connect_from(&server, &format!("127.0.0.{i}")).await;
        let (c, pending) = pair_request_on(c, &phone, &format!("phone {i}"), None).await;
        assert_eq!(
            pending["type"], "pair.pending",
            "from 127.0.0.{i}: {pending}"
        );
        held.push(c);
    }
    let c = connect_from(&server, "127.0.0.10").await;
    let (mut ninth, answer) = pair_request_on(c, &phone, "phone 10", None).await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "overloaded");
    let (close, _, _) = ninth.expect_close(Duration::from_secs(10)).await;
    assert_eq!(close, Some(1008));

    // One leaves: its slot is free again.
    drop(held.pop());
    let mut freed = false;
    for _ in 0..50 {
        let c = connect_from(&server, "127.0.0.10").await;
        let (_c, answer) = pair_request_on(c, &phone, "phone 10", None).await;
        if answer["type"] == "pair.pending" {
            freed = true;
            break;
        }
        assert_eq!(answer["code"], "overloaded", "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "the withdrawn request's slot was never freed");
}

/// A plain denial is shown on the address's next request (`denied_recently`)
/// and leaves it free to ask; a denial with `block` refuses the address's next
/// pair request (`rate_limited`, close 1008), also one carrying an invite,
/// while another address may still ask.
#[tokio::test]
async fn a_denial_is_remembered_and_a_block_refuses_the_address() {
    let fx = Fixture::new();
    let phone = keygen(fx.path(), "phone", "ed25519", &[]);
    let server = fx.start(ServerOptions::default());
    let mut owner = server.client(&fx.owner, None).await;

    let (mut device, pending) = pair_request(&server, &phone, "first").await;
    assert_eq!(pending["type"], "pair.pending", "{pending}");
    let (requested, _) = owner
        .recv_until("pair.requested", |v| v["type"] == "pair.requested")
        .await;
    assert!(requested.get("denied_recently").is_none(), "{requested}");
    let ok = owner
        .request(
            json!({"type": "pair.respond", "pair_id": pending["pair_id"], "allow": false}),
            "deny",
        )
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    expect_error_and_policy_close(&mut device, "auth_failed").await;

    let (mut device, pending) = pair_request(&server, &phone, "second").await;
    assert_eq!(
        pending["type"], "pair.pending",
        "a plain denial does not block: {pending}"
    );
    let (requested, _) = owner
        .recv_until("pair.requested", |v| {
            v["type"] == "pair.requested" && v["pair_id"] == pending["pair_id"]
        })
        .await;
    assert_eq!(requested["denied_recently"], true, "{requested}");
    let ok = owner
        .request(
            json!({"type": "pair.respond", "pair_id": pending["pair_id"], "allow": false, "block": true}),
            "block",
        )
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    expect_error_and_policy_close(&mut device, "auth_failed").await;

    let (mut device, answer) = pair_request(&server, &phone, "third").await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "rate_limited");
    let (close, _, _) = device.expect_close(Duration::from_secs(10)).await;
    assert_eq!(close, Some(1008));
    // A valid invite does not get around the block, and is not used up by it.
    let invite = owner
        .request(json!({"type": "pair.invite"}), "invite")
        .await;
    let token = invite["invite"].as_str().unwrap().to_string();
    let (mut device, answer) =
        pair_request_on(server.connect().await, &phone, "fourth", Some(&token)).await;
    assert_eq!(answer["code"], "rate_limited", "{answer}");
    let (close, _, _) = device.expect_close(Duration::from_secs(10)).await;
    assert_eq!(close, Some(1008));

    // Another address is not affected; its request is not marked.
    let c = connect_from(&server, "127.0.0.2").await;
    let (_other, pending) = pair_request_on(c, &phone, "elsewhere", None).await;
    assert_eq!(pending["type"], "pair.pending", "{pending}");
    let (requested, _) = owner
        .recv_until("pair.requested", |v| {
            v["type"] == "pair.requested" && v["pair_id"] == pending["pair_id"]
        })
        .await;
    assert!(requested.get("denied_recently").is_none(), "{requested}");
    assert_eq!(requested["peer"], "127.0.0.2");
    // And the invite the blocked address could not use still pairs a device there.
    let c = connect_from(&server, "127.0.0.3").await;
    let (_d, ok) = pair_request_on(c, &phone, "invited", Some(&token)).await;
    assert_eq!(ok["type"], "auth.ok", "{ok}");
}

/// Invites: an owner makes one; a device pairs with it at once (no owner
/// answer, no pending slot: its address already has one pending) and gets
/// auth.ok with the invite's role; owners hear `pair.resolved` by
/// `invite:<client_id>`; a second use, a wrong token and a viewer's
/// `pair.invite` are refused; the lifetime is capped; a ninth open invite is
/// `overloaded`.
#[tokio::test]
async fn an_invite_pairs_a_device_at_once_and_only_once() {
    let fx = Fixture::new();
    let phone = keygen(fx.path(), "phone", "ed25519", &[]);
    let tablet = keygen(fx.path(), "tablet", "ecdsa", &[]);
    let other = keygen(fx.path(), "other", "ed25519", &[]);
    let server = fx.start(ServerOptions::default());
    let mut owner = server.client(&fx.owner, None).await;
    let mut viewer = server.client(&fx.viewer, None).await;

    let forbidden = viewer.request(json!({"type": "pair.invite"}), "v").await;
    assert_eq!(forbidden["type"], "error", "{forbidden}");
    assert_eq!(forbidden["code"], "forbidden");

    let invite = owner
        .request(
            json!({"type": "pair.invite", "role": "owner", "expires_in_ms": 3_600_000}),
            "invite",
        )
        .await;
    assert_eq!(invite["type"], "pair.invite", "{invite}");
    assert_eq!(invite["expires_in_ms"], 600_000, "capped at 10 minutes");
    let token = invite["invite"].as_str().unwrap().to_string();
    let raw = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &token)
        .expect("base64url");
    assert!(raw.len() >= 16, "at least 128 bits: {token}");

    // This address has a request pending already: the invite takes no slot.
    let (_waiting, pending) = pair_request(&server, &other, "waiting").await;
    assert_eq!(pending["type"], "pair.pending", "{pending}");

    let (mut device, ok) =
        pair_request_on(server.connect().await, &phone, "Pixel 9", Some(&token)).await;
    assert_eq!(ok["type"], "auth.ok", "{ok}");
    assert_eq!(ok["id"], "pair");
    assert_eq!(ok["role"], "owner");
    assert_eq!(ok["fingerprint"], phone.fingerprint.as_str());
    let (resolved, _) = owner
        .recv_until("pair.resolved", |v| v["type"] == "pair.resolved")
        .await;
    assert_eq!(resolved["allow"], true, "{resolved}");
    assert_eq!(resolved["role"], "owner");
    assert_eq!(
        resolved["by"],
        format!("invite:{}", owner.client_id).as_str()
    );
    let pong = device.request(json!({"type": "ping"}), "p").await;
    assert_eq!(pong["type"], "pong");
    let text = std::fs::read_to_string(paired_keys(&fx)).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(" Pixel 9 (paired "), "{text}");
    assert!(
        text.contains(&format!(" by {})", fx.owner.fingerprint)),
        "{text}"
    );
    // The paired key logs in normally afterwards.
    let mut again = server.connect().await;
    assert_eq!(again.authenticate(&phone, None).await["role"], "owner");

    // Used up: a second device with the same token fails like a failed authentication.
    let (mut second, answer) =
        pair_request_on(server.connect().await, &tablet, "tablet", Some(&token)).await;
    assert_eq!(answer["code"], "auth_failed", "{answer}");
    assert_eq!(answer["message"], "authentication failed");
    let (close, _, _) = second.expect_close(Duration::from_secs(10)).await;
    assert_eq!(close, Some(1008));
    // A token never issued, likewise.
    let (mut wrong, answer) = pair_request_on(
        server.connect().await,
        &tablet,
        "tablet",
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    )
    .await;
    assert_eq!(answer["code"], "auth_failed", "{answer}");
    let (close, _, _) = wrong.expect_close(Duration::from_secs(10)).await;
    assert_eq!(close, Some(1008));

    // A viewer invite pairs as a viewer, into paired_viewers.
    let invite = owner
        .request(json!({"type": "pair.invite", "role": "viewer"}), "invite-v")
        .await;
    assert_eq!(invite["expires_in_ms"], 600_000, "the default");
    let (mut device, ok) = pair_request_on(
        server.connect().await,
        &tablet,
        "e-reader",
        invite["invite"].as_str(),
    )
    .await;
    assert_eq!(ok["role"], "viewer", "{ok}");
    let refused = device
        .request(json!({"type": "prompt", "content": "hi"}), "x")
        .await;
    assert_eq!(refused["code"], "forbidden");
    let viewers = std::fs::read_to_string(fx.data_dir().join("paired_viewers")).unwrap();
    assert!(viewers.contains(" e-reader (paired "), "{viewers}");

    // At most eight open: the ninth is overloaded.
    for i in 0..8 {
        let made = owner
            .request(json!({"type": "pair.invite"}), &format!("many-{i}"))
            .await;
        assert_eq!(made["type"], "pair.invite", "invite {i}: {made}");
    }
    let ninth = owner.request(json!({"type": "pair.invite"}), "ninth").await;
    assert_eq!(ninth["type"], "error", "{ninth}");
    assert_eq!(ninth["code"], "overloaded");
}
