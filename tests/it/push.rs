//! Web Push (docs/protocol.md §9.1): the VAPID key endpoint, `push.subscribe` /
//! `push.unsubscribe` against the real binary, subscriptions following the keys
//! files, and `WebPush::send` end to end against a loopback mock push service
//! that checks the VAPID JWT and decrypts the payload like a real one.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ccrelay::metrics::Metrics;
use ccrelay::notify::webpush::{
    FailReason, PushMessage, PushSubscriptionJson, SendOutcome, SubscriptionOwner, Urgency,
    WebPush, WebPushConfig,
};
use common::mock_push::{Behavior, MockPush};
use common::{Fixture, ServerOptions, TestServer, eventually};
use serde_json::{Value, json};

const INSECURE: &str = "--push-allow-insecure-endpoints";

async fn vapid_key(server: &TestServer) -> String {
    let (status, headers, body) = server.http_get("/v1/push/key").await;
    assert_eq!(status, 200, "{headers}\n{body}");
    assert!(
        headers.to_ascii_lowercase().contains("application/json"),
        "{headers}"
    );
    let v: Value = serde_json::from_str(&body).expect("JSON");
    let key = v["vapid_public_key"].as_str().expect("key").to_string();
    let raw = URL_SAFE_NO_PAD
        .decode(&key)
        .expect("base64url without padding");
    assert_eq!(raw.len(), 65, "uncompressed P-256 point");
    assert_eq!(raw[0], 0x04);
    p256::PublicKey::from_sec1_bytes(&raw).expect("on the curve");
    key
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn subscriptions_file(f: &Fixture) -> Vec<Value> {
    match std::fs::read(f.data_dir().join("push_subscriptions.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes).expect("subscriptions file is JSON"),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn push_key_is_made_once_kept_0600_and_served_over_plaintext_and_tls() {
    let f = Fixture::new();
    let first = {
        let server = f.start(ServerOptions::default());
        vapid_key(&server).await
    };
    let path = f.data_dir().join("vapid_private_key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
    // A restart keeps it (browsers subscribed with it); over TLS too.
    let server = f.start(ServerOptions::default());
    assert_eq!(vapid_key(&server).await, first);
    drop(server);
    let server = f.start(ServerOptions::default().arg("--tls-self-signed"));
    assert!(server.url.starts_with("wss://"));
    assert_eq!(vapid_key(&server).await, first);
}

#[tokio::test]
async fn a_broken_vapid_key_file_stops_the_start_naming_the_data_dir() {
    let f = Fixture::new();
    drop(f.start(ServerOptions::default()));
    std::fs::write(f.data_dir().join("vapid_private_key"), "garbage\n").unwrap();
    let out = std::process::Command::new(common::ccrelay_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--authorized-keys"])
        .arg(f.authorized_keys())
        .arg("--data-dir")
        .arg(f.data_dir())
        .arg("--workdir")
        .arg(f.workdir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--data-dir") && err.contains("vapid_private_key"),
        "{err}"
    );
}

#[tokio::test]
async fn subscribe_and_unsubscribe_replies() {
    let f = Fixture::new();
    let server = f.start(ServerOptions::default().arg(INSECURE));
    let mock = MockPush::start(&vapid_key(&server).await).await;
    let phone = mock.device("phone");

    let mut owner = server.client(&f.owner, Some("Pixel")).await;
    let r = owner
        .request(
            json!({"type": "push.subscribe", "subscription": phone.subscription()}),
            "s1",
        )
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    let stored = subscriptions_file(&f);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["endpoint"], phone.endpoint.as_str());
    assert_eq!(stored[0]["fingerprint"], f.owner.fingerprint.as_str());
    assert_eq!(stored[0]["device"], "Pixel");
    let mode = std::fs::metadata(f.data_dir().join("push_subscriptions.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    // The same endpoint again (a browser re-subscribing with new keys) replaces it.
    let again = mock.device("phone");
    let r = owner
        .request(
            json!({"type": "push.subscribe", "subscription": again.subscription()}),
            "s2",
        )
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    let stored = subscriptions_file(&f);
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0]["auth"],
        again.subscription()["keys"]["auth"],
        "the new keys replaced the old"
    );

    // A viewer may do neither.
    let mut viewer = server.client(&f.viewer, None).await;
    let tablet = mock.device("tablet");
    for (req, id) in [
        (
            json!({"type": "push.subscribe", "subscription": tablet.subscription()}),
            "v1",
        ),
        (
            json!({"type": "push.unsubscribe", "endpoint": phone.endpoint}),
            "v2",
        ),
    ] {
        let r = viewer.request(req, id).await;
        assert_eq!(r["type"], "error", "{r}");
        assert_eq!(r["code"], "forbidden", "{r}");
    }
    assert_eq!(subscriptions_file(&f).len(), 1);

    // Malformed keys are refused before anything is stored.
    let mut bad = tablet.subscription();
    bad["keys"]["p256dh"] = json!("BAAA");
    let mut off_curve = tablet.subscription();
    let mut point = vec![4u8; 65];
    point[1] = 1;
    off_curve["keys"]["p256dh"] = json!(URL_SAFE_NO_PAD.encode(&point));
    let mut short_auth = tablet.subscription();
    short_auth["keys"]["auth"] = json!("AAAA");
    let mut no_keys = tablet.subscription();
    no_keys.as_object_mut().unwrap().remove("keys");
    for (i, (sub, needle)) in [
        (bad, "p256dh"),
        (off_curve, "curve"),
        (short_auth, "auth"),
        (no_keys, "keys"),
        (json!("https://x"), "subscription"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = owner
            .request(
                json!({"type": "push.subscribe", "subscription": sub}),
                &format!("m{i}"),
            )
            .await;
        assert_eq!(r["code"], "bad_message", "{r}");
        assert!(r["message"].as_str().unwrap().contains(needle), "{r}");
    }
    // Even with the test flag, an inward address other than loopback is refused.
    let mut private = tablet.subscription();
    private["endpoint"] = json!("http://10.1.2.3/push/x");
    let r = owner
        .request(
            json!({"type": "push.subscribe", "subscription": private}),
            "p1",
        )
        .await;
    assert_eq!(r["code"], "bad_message", "{r}");
    assert_eq!(subscriptions_file(&f).len(), 1);

    // Unsubscribe: ok, gone from the file; again: still ok.
    for id in ["u1", "u2"] {
        let r = owner
            .request(
                json!({"type": "push.unsubscribe", "endpoint": phone.endpoint}),
                id,
            )
            .await;
        assert_eq!(r["type"], "ok", "{r}");
    }
    assert!(subscriptions_file(&f).is_empty());
    let (_, _, text) = server.http_get("/metrics").await;
    assert_eq!(metric(&text, "ccrelay_push_subscriptions"), Some(0.0));
}

#[tokio::test]
async fn without_the_test_flag_only_public_https_endpoints_are_taken() {
    let f = Fixture::new();
    let server = f.start(ServerOptions::default());
    let mock = MockPush::start(&vapid_key(&server).await).await;
    let device = mock.device("phone");
    let mut owner = server.client(&f.owner, None).await;
    for (i, (endpoint, needle)) in [
        (device.endpoint.clone(), "https://"),
        ("https://127.0.0.1/push/x".to_string(), "IP address"),
        ("https://[::1]/push/x".to_string(), "IP address"),
        ("https://192.168.1.10/push/x".to_string(), "IP address"),
        ("https://2130706433/push/x".to_string(), "IP address"),
        ("https://localhost/push/x".to_string(), "loopback"),
        ("https://user:pw@push.example/x".to_string(), "user name"),
        ("ftp://push.example/x".to_string(), "https://"),
        (
            format!("https://push.example/{}", "a".repeat(3000)),
            "longer",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut sub = device.subscription();
        sub["endpoint"] = json!(endpoint);
        let r = owner
            .request(
                json!({"type": "push.subscribe", "subscription": sub}),
                &format!("r{i}"),
            )
            .await;
        assert_eq!(r["code"], "bad_message", "{endpoint}: {r}");
        assert!(
            r["message"].as_str().unwrap().contains(needle),
            "{endpoint}: {r}"
        );
    }
    assert!(subscriptions_file(&f).is_empty());
    assert_eq!(mock.requests(), 0);
}

#[tokio::test]
async fn a_key_leaving_the_keys_files_takes_its_subscriptions() {
    let f = Fixture::new();
    // owner2 is a paired key (the keys.revoke path); `tablet` a third key in
    // authorized_keys (the file-edit path).
    let tablet_key = common::keygen(f.path(), "tablet", "ed25519", &[]);
    std::fs::write(
        f.authorized_keys(),
        format!("{}\n{}\n", f.owner.public_line, tablet_key.public_line),
    )
    .unwrap();
    std::fs::create_dir_all(f.data_dir()).unwrap();
    std::fs::set_permissions(f.data_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let bare: Vec<&str> = f.owner2.public_line.split_whitespace().take(2).collect();
    std::fs::write(
        f.data_dir().join("paired_keys"),
        format!("{} Phone (paired 2026-11-29 by test)\n", bare.join(" ")),
    )
    .unwrap();
    let server = f.start(ServerOptions::default().arg(INSECURE));
    let mock = MockPush::start(&vapid_key(&server).await).await;

    let mut owner = server.client(&f.owner, Some("laptop")).await;
    let mut paired = server.client(&f.owner2, Some("phone")).await;
    let mut tablet = server.client(&tablet_key, Some("tablet")).await;
    for (c, dev) in [
        (&mut owner, "laptop"),
        (&mut paired, "phone"),
        (&mut tablet, "tablet"),
    ] {
        let d = mock.device(dev);
        let r = c
            .request(
                json!({"type": "push.subscribe", "subscription": d.subscription()}),
                "s",
            )
            .await;
        assert_eq!(r["type"], "ok", "{r}");
    }
    assert_eq!(subscriptions_file(&f).len(), 3);

    // The tablet's key is taken out of authorized_keys by hand.
    std::fs::write(f.authorized_keys(), format!("{}\n", f.owner.public_line)).unwrap();
    let gone = |fp: &str| {
        !subscriptions_file(&f)
            .iter()
            .any(|s| s["fingerprint"] == fp)
    };
    assert!(
        eventually(Duration::from_secs(10), || gone(&tablet_key.fingerprint)).await,
        "{:?}",
        subscriptions_file(&f)
    );

    // The paired phone is revoked by the owner.
    let r = owner
        .request(
            json!({"type": "keys.revoke", "fingerprint": f.owner2.fingerprint}),
            "revoke",
        )
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    assert!(
        eventually(Duration::from_secs(10), || gone(&f.owner2.fingerprint)).await,
        "{:?}",
        subscriptions_file(&f)
    );
    let left = subscriptions_file(&f);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["fingerprint"], f.owner.fingerprint.as_str());
    let (_, _, text) = server.http_get("/metrics").await;
    assert_eq!(metric(&text, "ccrelay_push_subscriptions"), Some(1.0));
}

// ---- WebPush::send in-process, against the mock push service ----

struct InProcess {
    _dir: tempfile::TempDir,
    data_dir: std::path::PathBuf,
    push: WebPush,
    metrics: Arc<Metrics>,
    mock: MockPush,
}

async fn in_process(timeout: Duration) -> InProcess {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let metrics = Arc::new(Metrics::new());
    let mut cfg = WebPushConfig::new(&data_dir, true);
    cfg.timeout = timeout;
    let push = WebPush::open(&cfg, metrics.clone()).unwrap();
    let mock = MockPush::start(push.public_key()).await;
    InProcess {
        _dir: dir,
        data_dir,
        push,
        metrics,
        mock,
    }
}

impl InProcess {
    async fn subscribe(
        &self,
        device: &str,
    ) -> (
        common::mock_push::FakeDevice,
        ccrelay::notify::webpush::SubscriptionId,
    ) {
        let d = self.mock.device(device);
        let sub: PushSubscriptionJson = serde_json::from_value(d.subscription()).unwrap();
        let id = self
            .push
            .subscribe(
                SubscriptionOwner {
                    fingerprint: "SHA256:test".into(),
                    device: Some(device.into()),
                    address: std::net::Ipv4Addr::LOCALHOST.into(),
                },
                sub,
            )
            .await
            .unwrap();
        (d, id)
    }

    fn metric(&self, name: &str) -> f64 {
        metric(&self.metrics.encode(), name).unwrap_or(0.0)
    }
}

fn message(payload: &[u8]) -> PushMessage<'_> {
    PushMessage {
        topic: Some("2jmj7l5rSw0yVb_vlWAYkK_YBwk"),
        urgency: Urgency::High,
        ttl: 600,
        payload,
    }
}

#[tokio::test]
async fn send_encrypts_signs_and_delivers() {
    let t = in_process(Duration::from_secs(10)).await;
    let (_, id) = t.subscribe("phone").await;
    let payload = json!({"kind": "permission", "session": "default", "request_id": "r1", "tool": "Bash", "summary": "rm -rf build"}).to_string();
    assert_eq!(
        t.push.send(&id, &message(payload.as_bytes())).await,
        SendOutcome::Delivered
    );
    assert_eq!(t.mock.errors(), Vec::<String>::new());
    let got = t.mock.pushed_to("phone");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].plaintext, payload.as_bytes());
    assert_eq!(got[0].json()["tool"], "Bash");
    assert_eq!(got[0].topic.as_deref(), Some("2jmj7l5rSw0yVb_vlWAYkK_YBwk"));
    assert_eq!(got[0].urgency.as_deref(), Some("high"));
    assert_eq!(got[0].ttl.as_deref(), Some("600"));
    assert_eq!(got[0].claims["sub"], "mailto:ccrelay@localhost");
    // The largest payload one record holds goes through and decrypts; one byte
    // more is refused before any I/O.
    let max = vec![b'x'; ccrelay::notify::webpush::MAX_PAYLOAD_BYTES];
    assert_eq!(
        t.push.send(&id, &message(&max)).await,
        SendOutcome::Delivered
    );
    assert_eq!(t.mock.pushed_to("phone")[1].plaintext.len(), max.len());
    let requests = t.mock.requests();
    let over = vec![b'x'; ccrelay::notify::webpush::MAX_PAYLOAD_BYTES + 1];
    assert_eq!(
        t.push.send(&id, &message(&over)).await,
        SendOutcome::Failed(FailReason::TooLarge)
    );
    let bad_topic = PushMessage {
        topic: Some("not a topic!"),
        ..message(b"{}")
    };
    assert_eq!(
        t.push.send(&id, &bad_topic).await,
        SendOutcome::Failed(FailReason::BadTopic)
    );
    assert_eq!(t.mock.requests(), requests, "refused before any I/O");
    assert_eq!(t.metric("ccrelay_push_sent_total"), 2.0);
    assert_eq!(
        metric(
            &t.metrics.encode(),
            "ccrelay_push_failed_total{reason=\"too_large\"}"
        ),
        Some(1.0)
    );
    assert_eq!(t.mock.errors(), Vec::<String>::new());
}

#[tokio::test]
async fn gone_subscriptions_are_removed_and_failures_keep_them() {
    let t = in_process(Duration::from_secs(10)).await;
    let (_, a) = t.subscribe("a").await;
    let (_, b) = t.subscribe("b").await;
    let (_, c) = t.subscribe("c").await;
    t.mock.set_behavior("a", Behavior::Status(410));
    t.mock.set_behavior("b", Behavior::Status(404));
    t.mock.set_behavior("c", Behavior::Status(500));
    assert_eq!(t.push.send(&a, &message(b"{}")).await, SendOutcome::Gone);
    assert_eq!(t.push.send(&b, &message(b"{}")).await, SendOutcome::Gone);
    assert_eq!(
        t.push.send(&c, &message(b"{}")).await,
        SendOutcome::Failed(FailReason::ServerError)
    );
    let left: Vec<_> = t.push.subscriptions().into_iter().map(|s| s.id).collect();
    assert_eq!(left, vec![c.clone()]);
    let file: Vec<Value> =
        serde_json::from_slice(&std::fs::read(t.data_dir.join("push_subscriptions.json")).unwrap())
            .unwrap();
    assert_eq!(file.len(), 1);
    assert_eq!(file[0]["id"], c.0.as_str());
    // A removed subscription is not sent to again.
    assert_eq!(
        t.push.send(&a, &message(b"{}")).await,
        SendOutcome::Failed(FailReason::UnknownSubscription)
    );
    assert_eq!(t.metric("ccrelay_push_subscriptions_expired_total"), 2.0);
    assert_eq!(t.metric("ccrelay_push_subscriptions"), 1.0);
    // Redirects are not followed; other 4xx are a rejection; 429 rate limiting.
    for (code, reason) in [
        (301, FailReason::Redirect),
        (307, FailReason::Redirect),
        (403, FailReason::Rejected),
        (413, FailReason::TooLarge),
        (429, FailReason::RateLimited),
    ] {
        t.mock.set_behavior("c", Behavior::Status(code));
        let before = t.mock.requests();
        assert_eq!(
            t.push.send(&c, &message(b"{}")).await,
            SendOutcome::Failed(reason),
            "{code}"
        );
        assert_eq!(t.mock.requests(), before + 1, "{code}: exactly one request");
    }
    assert_eq!(t.push.subscriptions().len(), 1);
    assert_eq!(t.mock.errors(), Vec::<String>::new());
}

#[tokio::test]
async fn a_hanging_push_service_times_out() {
    let t = in_process(Duration::from_secs(1)).await;
    let (_, id) = t.subscribe("slow").await;
    t.mock.set_behavior("slow", Behavior::Hang);
    assert_eq!(
        t.push.send(&id, &message(b"{}")).await,
        SendOutcome::Failed(FailReason::Timeout)
    );
    assert_eq!(t.mock.pushed_to("slow").len(), 1, "the request did arrive");
    assert_eq!(t.push.subscriptions().len(), 1, "a timeout keeps it");
    assert_eq!(
        metric(
            &t.metrics.encode(),
            "ccrelay_push_failed_total{reason=\"timeout\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_name_that_now_resolves_inward_is_refused_at_connect_time() {
    // A subscription stored while its host resolved to a public address, whose
    // DNS answer is now loopback (rebinding): the strict client's resolver
    // refuses to connect. Simulated by a stored record for `localhost`.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let probe = WebPush::open(
        &WebPushConfig::new(&data_dir, true),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    let mock = MockPush::start(probe.public_key()).await;
    let d = mock.device("rebound");
    let mut sub: PushSubscriptionJson = serde_json::from_value(d.subscription()).unwrap();
    sub.endpoint = format!("http://localhost:{}/push/rebound", mock.addr.port());
    let owner = SubscriptionOwner {
        fingerprint: "SHA256:x".into(),
        device: None,
        address: std::net::Ipv4Addr::LOCALHOST.into(),
    };
    let id = probe.subscribe(owner, sub.clone()).await.unwrap();
    // The lax transport reaches it (so the refusal below is the rule, not the mock).
    assert_eq!(
        probe.send(&id, &message(b"{}")).await,
        SendOutcome::Delivered
    );
    // The same stored subscription, https this time, under the strict rule.
    let file = data_dir.join("push_subscriptions.json");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("http://localhost", "https://localhost");
    std::fs::write(&file, text).unwrap();
    drop(probe);
    let metrics = Arc::new(Metrics::new());
    let strict = WebPush::open(&WebPushConfig::new(&data_dir, false), metrics.clone()).unwrap();
    let before = mock.requests();
    assert_eq!(
        strict.send(&id, &message(b"{}")).await,
        SendOutcome::Failed(FailReason::RefusedAddress)
    );
    assert_eq!(mock.requests(), before, "nothing reached the address");
    assert_eq!(
        metric(
            &metrics.encode(),
            "ccrelay_push_failed_total{reason=\"refused_address\"}"
        ),
        Some(1.0)
    );
    // An IP literal (which no resolver sees) stored by an older rule is refused too.
    drop(strict);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("https://localhost", "https://127.0.0.1");
    std::fs::write(&file, text).unwrap();
    let strict = WebPush::open(
        &WebPushConfig::new(&data_dir, false),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    assert_eq!(
        strict.send(&id, &message(b"{}")).await,
        SendOutcome::Failed(FailReason::RefusedAddress)
    );
    assert_eq!(mock.requests(), before, "nothing reached the address");
}

#[tokio::test]
async fn https_endpoints_are_verified_against_the_webpki_roots() {
    // A push service on loopback with a self-signed certificate: the client
    // (rustls, webpki roots only) must refuse the handshake, never post.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let server_config = rustls::ServerConfig::builder_with_provider(ccrelay::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshake = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor
            .accept(tcp)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });

    let t = in_process(Duration::from_secs(10)).await;
    let d = t.mock.device("tls");
    let mut sub: PushSubscriptionJson = serde_json::from_value(d.subscription()).unwrap();
    sub.endpoint = format!("https://localhost:{port}/push/tls");
    let id = t
        .push
        .subscribe(
            SubscriptionOwner {
                fingerprint: "SHA256:x".into(),
                device: None,
                address: std::net::Ipv4Addr::LOCALHOST.into(),
            },
            sub,
        )
        .await
        .unwrap();
    assert_eq!(
        t.push.send(&id, &message(b"{}")).await,
        SendOutcome::Failed(FailReason::Connect)
    );
    let server_side = tokio::time::timeout(Duration::from_secs(20), handshake)
        .await
        .expect("the client connected")
        .unwrap();
    let err = server_side.expect_err("the handshake must fail");
    assert!(
        err.contains("UnknownCA") || err.contains("BadCertificate"),
        "{err}"
    );
    assert_eq!(t.push.subscriptions().len(), 1, "a failure keeps it");
}

#[tokio::test]
async fn an_endless_answer_is_read_no_further_than_the_cap() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A hostile push service: a 500 whose body never ends. The client reads a
    // few KiB and drops the connection, so the writer fails long before its
    // 256 MiB are out.
    const LIMIT: usize = 256 * 1024 * 1024;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let writer = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        let _ = tcp.read(&mut buf).await;
        let head = format!("HTTP/1.1 500 Oops\r\nContent-Length: {LIMIT}\r\n\r\n");
        if tcp.write_all(head.as_bytes()).await.is_err() {
            return 0;
        }
        let chunk = vec![b'x'; 64 * 1024];
        let mut written = 0;
        while written < LIMIT {
            if tcp.write_all(&chunk).await.is_err() {
                break;
            }
            written += chunk.len();
        }
        written
    });
    let t = in_process(Duration::from_secs(60)).await;
    let d = t.mock.device("endless");
    let mut sub: PushSubscriptionJson = serde_json::from_value(d.subscription()).unwrap();
    sub.endpoint = format!("http://127.0.0.1:{port}/push/endless");
    let id = t
        .push
        .subscribe(
            SubscriptionOwner {
                fingerprint: "SHA256:x".into(),
                device: None,
                address: std::net::Ipv4Addr::LOCALHOST.into(),
            },
            sub,
        )
        .await
        .unwrap();
    assert_eq!(
        t.push.send(&id, &message(b"{}")).await,
        SendOutcome::Failed(FailReason::ServerError)
    );
    let written = tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .expect("the writer ends")
        .unwrap();
    assert!(written < LIMIT, "the client read the whole endless body");
}

#[tokio::test]
async fn a_subscription_of_a_key_not_in_force_is_not_kept() {
    let t = in_process(Duration::from_secs(10)).await;
    let dir = tempfile::tempdir().unwrap();
    let key = common::keygen(dir.path(), "k", "ed25519", &[]);
    let file = dir.path().join("authorized_keys");
    std::fs::write(&file, format!("{}\n", key.public_line)).unwrap();
    let keys = ccrelay::auth::KeyStore::load(&file, None).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = t.push.watch_keys(&keys, stop.clone());
    let sub = |name: &str| -> PushSubscriptionJson {
        serde_json::from_value(t.mock.device(name).subscription()).unwrap()
    };
    let as_key = |fingerprint: &str| SubscriptionOwner {
        fingerprint: fingerprint.into(),
        device: None,
        address: std::net::Ipv4Addr::LOCALHOST.into(),
    };
    t.push
        .subscribe(as_key(&key.fingerprint), sub("a"))
        .await
        .expect("an owner key in force subscribes");
    let err = t
        .push
        .subscribe(as_key("SHA256:not-a-key-in-force"), sub("b"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no longer"), "{err}");
    let held = t.push.subscriptions();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].fingerprint, key.fingerprint);
    // The key leaves the file: its subscription goes with the reload.
    std::fs::write(&file, "").unwrap();
    keys.reload().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || t
            .push
            .subscriptions()
            .is_empty())
        .await
    );
    stop.cancel();
    watcher.await.unwrap();
}
