//! Origin binding of signatures (docs/protocol.md, "Origin binding" and "This
//! server's names"), with the real binary on loopback: a server that relays another
//! server's challenge to `ccrelay attach` obtains a signature naming itself, which
//! the other server refuses; a port mapping is refused until named with
//! `--server-name`; a bare signature is refused unless the key is named by
//! `--allow-unbound-auth`.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::forwarder::Forwarder;
use common::{Fixture, KeyPair, ServerOptions, TestServer, ccrelay_bin};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// `ccrelay attach -i KEY --prompt hello --json --accept-new-server URL`, with its
/// own HOME (known_servers); (exit code, stdout, stderr).
async fn attach(fx: &Fixture, key: &KeyPair, url: &str) -> (Option<i32>, String, String) {
    let home = fx.path().join("home");
    std::fs::create_dir_all(&home).expect("home dir");
    let mut cmd = tokio::process::Command::new(ccrelay_bin());
    cmd.arg("attach")
        .args(["--prompt", "hello", "--json", "--accept-new-server", "-i"])
        .arg(&key.private)
        .arg(url)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", &home)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(common::scaled(ATTACH_TIMEOUT), cmd.output())
        .await
        .expect("attach exits in time")
        .expect("attach runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A server X of the attacker's: it answers every WebSocket connection with a
/// fresh challenge of the real server Y (optionally without its binding offers),
/// relays the client's signed answer to Y, and Y's verdict back.
struct Relay {
    addr: SocketAddr,
    /// What the client sent X, and what Y answered, per connection.
    exchanges: Arc<Mutex<Vec<(Value, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// X on a loopback port of its own, serving TLS (a self-signed certificate)
    /// when `tls`; `strip` removes `channel_binding` and `bindings` from the
    /// challenges it forwards.
    async fn start(upstream: &str, tls: bool, strip: bool) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("X binds");
        let addr = listener.local_addr().unwrap();
        let acceptor = tls.then(|| {
            let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
            let key =
                rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
            let config = ccrelay::tls::server_config(vec![cert.cert.der().clone()], key).unwrap();
            tokio_rustls::TlsAcceptor::from(config)
        });
        let exchanges = Arc::new(Mutex::new(Vec::new()));
        let (upstream, seen) = (upstream.to_string(), exchanges.clone());
        let task = tokio::spawn(async move {
            // Bounded: a client with one key connects once.
            for _ in 0..8 {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let exchange = match &acceptor {
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(tls) => relay_one(tls, &upstream, strip).await,
                        Err(_) => None,
                    },
                    None => relay_one(tcp, &upstream, strip).await,
                };
                if let Some(exchange) = exchange {
                    seen.lock().unwrap().push(exchange);
                }
            }
        });
        Relay {
            addr,
            exchanges,
            task,
        }
    }

    fn url(&self, tls: bool) -> String {
        let scheme = if tls { "wss" } else { "ws" };
        format!("{scheme}://{}/v1/ws", self.addr)
    }
}

async fn next_json<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Option<Value>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Bounded by the frame timeout and a count of non-text frames.
    for _ in 0..16 {
        match tokio::time::timeout(common::FRAME_TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).ok(),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
    None
}

/// One relayed authentication: (the client's response, Y's answer).
async fn relay_one<S>(stream: S, upstream: &str, strip: bool) -> Option<(Value, Value)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut down = tokio_tungstenite::accept_async(stream).await.ok()?;
    let connector = tokio_tungstenite::Connector::Rustls(common::tls_client_config());
    let (mut up, _) =
        tokio_tungstenite::connect_async_tls_with_config(upstream, None, false, Some(connector))
            .await
            .ok()?;
    let mut challenge = next_json(&mut up).await?;
    if strip {
        let obj = challenge.as_object_mut()?;
        obj.remove("channel_binding");
        obj.remove("bindings");
    }
    down.send(Message::Text(challenge.to_string().into()))
        .await
        .ok()?;
    let response = next_json(&mut down).await?;
    up.send(Message::Text(response.to_string().into()))
        .await
        .ok()?;
    let answer = next_json(&mut up).await?;
    let _ = down.send(Message::Text(answer.to_string().into())).await;
    let _ = down.close(None).await;
    Some((response, answer))
}

/// Y's log names the origin received and the option that would admit it.
async fn assert_origin_logged(y: &TestServer, origin: &str, admit: &str) {
    assert!(
        y.wait_log(origin, LOG_TIMEOUT).await && y.wait_log(admit, LOG_TIMEOUT).await,
        "Y's log does not name {origin} and {admit}:\n{}",
        y.logs()
    );
    let line = y
        .logs()
        .lines()
        .find(|l| l.contains("origin_refused") && l.contains(origin))
        .map(str::to_string);
    assert!(line.is_some(), "no origin_refused line for {origin}");
}

/// `ccrelay attach` sent its signed answer through X, and Y refused it.
fn assert_relayed_and_refused(relay: &Relay, origin: &str, exporter: bool) {
    let exchanges = relay.exchanges.lock().unwrap().clone();
    assert!(!exchanges.is_empty(), "attach never answered X's challenge");
    for (response, answer) in &exchanges {
        assert_eq!(response["type"], "auth.response", "{response}");
        // attach binds the origin it dialed: X's.
        assert_eq!(response["origin"], origin, "{response}");
        assert_eq!(
            response.get("channel_binding").is_some(),
            exporter,
            "{response}"
        );
        assert_eq!(
            answer,
            &json!({"type": "error", "code": "auth_failed", "message": "authentication failed"})
        );
    }
}

/// Plaintext: X on another loopback port relays Y's challenge (as is, and without
/// its binding offers); attach's signature names X, and Y refuses it.
#[tokio::test]
async fn a_relayed_challenge_over_plaintext_is_refused() {
    let fx = Fixture::new();
    let y = fx.start(ServerOptions::default());
    for strip in [false, true] {
        let x = Relay::start(&y.url, false, strip).await;
        let (code, stdout, stderr) = attach(&fx, &fx.owner, &x.url(false)).await;
        assert_eq!(code, Some(2), "strip={strip}: {stderr}");
        assert!(stderr.contains("no authorized key"), "{stderr}");
        // attach cannot know why; it says that the address dialed may be the cause.
        assert!(stderr.contains("--server-name"), "{stderr}");
        assert!(!stdout.contains("relay.prompt"), "{stdout}");
        let origin = format!("ws://{}", x.addr);
        assert_relayed_and_refused(&x, &origin, false);
        assert_origin_logged(&y, &origin, &format!("--server-name {}", x.addr)).await;
    }
    // The same client and key log in when they dial Y itself.
    let (code, _, stderr) = attach(&fx, &fx.owner, &y.url).await;
    assert_eq!(code, Some(0), "{stderr}");
}

/// TLS: X serves TLS of its own. With the offers kept, attach binds X's origin and
/// X's exporter (neither is Y's); without them, X's origin alone, which Y's log names.
#[tokio::test]
async fn a_relayed_challenge_over_tls_is_refused() {
    let fx = Fixture::new();
    let y = fx.start(ServerOptions::default().arg("--tls-self-signed"));
    assert!(y.url.starts_with("wss://"), "{}", y.url);

    let x = Relay::start(&y.url, true, false).await;
    let (code, _, stderr) = attach(&fx, &fx.owner, &x.url(true)).await;
    assert_eq!(code, Some(2), "{stderr}");
    let origin = format!("wss://{}", x.addr);
    assert_relayed_and_refused(&x, &origin, true);
    assert!(
        y.wait_log("bad_signature", LOG_TIMEOUT).await,
        "{}",
        y.logs()
    );

    let x = Relay::start(&y.url, true, true).await;
    let (code, _, stderr) = attach(&fx, &fx.owner, &x.url(true)).await;
    assert_eq!(code, Some(2), "{stderr}");
    let origin = format!("wss://{}", x.addr);
    assert_relayed_and_refused(&x, &origin, false);
    assert_origin_logged(&y, &origin, &format!("--server-name {}", x.addr)).await;

    // Directly, over TLS, the same key logs in (origin and exporter bound).
    let (code, _, stderr) = attach(&fx, &fx.owner, &y.url).await;
    assert_eq!(code, Some(0), "{stderr}");
}

/// A port mapping (a forwarder on another loopback port): refused until the server
/// names it with `--server-name`.
#[tokio::test]
async fn a_port_mapping_needs_server_name() {
    let fx = Fixture::new();
    let fwd = Forwarder::start("127.0.0.1:9".parse().unwrap()).await;
    let y = fx.start(ServerOptions::default());
    fwd.set_target(y.addr);
    let (code, _, stderr) = attach(&fx, &fx.owner, &fwd.ws_url()).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert_origin_logged(
        &y,
        &format!("ws://{}", fwd.addr),
        &format!("--server-name {}", fwd.addr),
    )
    .await;
    drop(y);

    let named = format!("127.0.0.1:{}", fwd.addr.port());
    let y = fx.start(ServerOptions::default().args(&["--server-name", &named]));
    fwd.set_target(y.addr);
    let (code, stdout, stderr) = attach(&fx, &fx.owner, &fwd.ws_url()).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("relay.prompt"), "{stdout}");
    // The env var and the comma-separated list work the same way.
    drop(y);
    let y = fx.start(
        ServerOptions::default().env("CCRELAY_SERVER_NAMES", &format!("relay.example,{named}")),
    );
    fwd.set_target(y.addr);
    let (code, _, stderr) = attach(&fx, &fx.owner, &fwd.ws_url()).await;
    assert_eq!(code, Some(0), "{stderr}");
}

/// A response bound to no origin: what `ssh-keygen -Y sign` over the bare `sign`
/// text gives.
async fn bare_login(server: &TestServer, key: &KeyPair) -> Value {
    let mut c = server.connect().await;
    let challenge = c.recv().await;
    assert_eq!(challenge["bindings"], json!(["origin"]), "{challenge}");
    let signature = common::ssh_keygen_sign(key, challenge["sign"].as_str().unwrap());
    c.send(json!({"type": "auth.response", "signature": signature, "public_key": key.public_line}))
        .await;
    c.recv().await
}

#[tokio::test]
async fn a_bare_signature_is_refused_unless_the_key_is_allowed_unbound() {
    let fx = Fixture::new();
    let y = fx.start(ServerOptions::default());
    let answer = bare_login(&y, &fx.owner).await;
    assert_eq!(answer["code"], "auth_failed", "{answer}");
    assert!(y.wait_log("\"unbound\"", LOG_TIMEOUT).await, "{}", y.logs());
    // The same key, bound to its origin, is fine.
    let mut c = y.connect().await;
    assert_eq!(c.authenticate(&fx.owner, None).await["type"], "auth.ok");
    drop(y);

    let y =
        fx.start(ServerOptions::default().args(&["--allow-unbound-auth", &fx.owner.fingerprint]));
    let answer = bare_login(&y, &fx.owner).await;
    assert_eq!(answer["type"], "auth.ok", "{answer}");
    assert!(
        y.wait_log("--allow-unbound-auth", LOG_TIMEOUT).await,
        "no warning for the unbound login: {}",
        y.logs()
    );
    let warning = y
        .log_json()
        .into_iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("--allow-unbound-auth"))
        })
        .expect("a warning line");
    assert_eq!(warning["level"], "WARN", "{warning}");
    // Another listed key is not allowed to.
    let answer = bare_login(&y, &fx.owner2).await;
    assert_eq!(answer["code"], "auth_failed", "{answer}");
}

/// A pair request is bound the same way: one naming another origin is refused.
#[tokio::test]
async fn a_pair_request_bound_to_another_origin_is_refused() {
    let fx = Fixture::new();
    let y = fx.start(ServerOptions::default());
    let mut c = y.connect().await;
    let challenge = c.recv().await;
    let elsewhere = "ws://127.0.0.1:1";
    let text = common::bound_text(challenge["sign"].as_str().unwrap(), elsewhere);
    let signature = common::ssh_keygen_sign(&fx.stranger, &text);
    c.send(
        json!({"type": "pair.request", "signature": signature, "origin": elsewhere,
        "public_key": fx.stranger.public_line, "device": "tablet"}),
    )
    .await;
    let answer = c.recv().await;
    assert_eq!(answer["code"], "auth_failed", "{answer}");
    assert_origin_logged(&y, elsewhere, "--server-name 127.0.0.1:1").await;
}

/// The page's own origin is admitted on the WebSocket upgrade by the same list of
/// names: through a forwarder only once the forwarder's port is named.
async fn page_upgrade_status(via: SocketAddr) -> u16 {
    let request = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {via}\r\nOrigin: http://{via}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    common::http_request(via, &request).await.0
}

/// `GET /v1/origin?origin=...` through `via`: (status, JSON body).
async fn origin_query(via: SocketAddr, origin: &str) -> (u16, Value) {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("origin", origin)
        .finish();
    let request =
        format!("GET /v1/origin?{query} HTTP/1.1\r\nHost: {via}\r\nConnection: close\r\n\r\n");
    let (status, head, body) = common::http_request(via, &request).await;
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-control: no-store"),
        "{head}"
    );
    (status, serde_json::from_str(&body).expect("JSON body"))
}

#[tokio::test]
async fn the_page_check_and_the_origin_query_use_the_same_names() {
    let fx = Fixture::new();
    let fwd = Forwarder::start("127.0.0.1:9".parse().unwrap()).await;
    let y = fx.start(ServerOptions::default());
    fwd.set_target(y.addr);
    assert_eq!(page_upgrade_status(y.addr).await, 101);
    assert_eq!(page_upgrade_status(fwd.addr).await, 403);

    let (status, answer) = origin_query(y.addr, &format!("ws://{}", y.addr)).await;
    assert_eq!(status, 200);
    assert_eq!(answer["accepted"], true, "{answer}");
    assert!(answer.get("suggest").is_none(), "{answer}");
    let asked = format!("ws://{}", fwd.addr);
    let (status, answer) = origin_query(fwd.addr, &asked).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"origin": asked, "accepted": false, "suggest": format!("http://{}/", y.addr)})
    );
    // localhost on a 127.0.0.1 listener, and a TLS scheme over plaintext.
    for refused in [
        format!("ws://localhost:{}", y.addr.port()),
        format!("wss://{}", y.addr),
    ] {
        let (_, answer) = origin_query(y.addr, &refused).await;
        assert_eq!(answer["accepted"], false, "{refused}: {answer}");
    }
    let (status, answer) = origin_query(y.addr, "http://not-an-origin/x").await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"], "bad_origin");
    drop(y);

    let named = format!("127.0.0.1:{}", fwd.addr.port());
    let y = fx.start(ServerOptions::default().args(&["--server-name", &named]));
    fwd.set_target(y.addr);
    assert_eq!(page_upgrade_status(fwd.addr).await, 101);
    let (_, answer) = origin_query(fwd.addr, &asked).await;
    assert_eq!(answer["accepted"], true, "{answer}");
}

/// A bad `--server-name` or `--allow-unbound-auth` stops the server: exit 2, naming it.
#[test]
fn bad_values_exit_2_naming_the_setting() {
    let fx = Fixture::new();
    for (args, setting) in [
        (["--server-name", "relay.example:http"], "--server-name"),
        (
            ["--allow-unbound-auth", "SHA256:nope"],
            "--allow-unbound-auth",
        ),
    ] {
        let mut child = std::process::Command::new(ccrelay_bin())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--authorized-keys"])
            .arg(fx.authorized_keys())
            .arg("--data-dir")
            .arg(fx.data_dir())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ccrelay runs");
        // A server that started anyway is killed after a bounded wait (and fails below).
        let deadline = std::time::Instant::now() + common::scaled(Duration::from_secs(30));
        while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let out = child.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(setting), "{stderr}");
        assert!(out.stdout.is_empty(), "nothing listened");
    }
}
