//! What a hostile peer can cost the server at the transport level, and
//! what an idle authenticated connection costs: real sockets against
//! the real binary. Floods come from 127.0.0.2 and up; the legitimate client uses
//! 127.0.0.1. Figures are printed, never asserted on time beyond the contract's
//! own deadlines. Heavy tests run one at a time (`flock /tmp/ccrelay-heavy.lock`).

use crate::common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Fixture, ServerOptions, TestClient, TestServer, rss_kib};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Let this test process hold thousands of sockets.
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// The n-th flood source address: 127.0.0.2 and up, `per` connections each.
fn flood_ip(i: usize, per: usize) -> IpAddr {
    let k = 2 + i / per;
    IpAddr::from([127, 0, (k / 250) as u8, (k % 250) as u8 + 2])
}

async fn tcp_from(ip: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(to).await
}

fn upgrade_request(addr: SocketAddr, extra: &str) -> String {
    format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// Send an upgrade request from `ip`; returns (status, head).
async fn upgrade_from(ip: IpAddr, addr: SocketAddr, extra: &str) -> (u16, String, TcpStream) {
    let mut s = tcp_from(ip, addr).await.expect("connects");
    s.write_all(upgrade_request(addr, extra).as_bytes())
        .await
        .expect("request written");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head, s)
}

/// A WebSocket client from a chosen source address, with extra request headers.
async fn ws_from(server: &TestServer, ip: IpAddr, headers: &[(&str, &str)]) -> TestClient {
    let tcp = tcp_from(ip, server.addr).await.expect("connects");
    let mut request = server.url.as_str().into_client_request().unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            v.parse().expect("header value"),
        );
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        request,
        MaybeTlsStream::Plain(tcp),
        Some(config),
    )
    .await
    .expect("websocket connects");
    TestClient::from_ws(ws)
}

/// Read server frames from a raw upgraded socket until a close frame; its code.
async fn read_close_code(mut rd: tokio::net::tcp::OwnedReadHalf) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Parse complete frames (server frames are unmasked).
        loop {
            if buf.len() < 2 {
                break;
            }
            let opcode = buf[0] & 0x0f;
            let len7 = (buf[1] & 0x7f) as usize;
            let (len, hdr) = match len7 {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[2..10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                126 | 127 => break,
                n => (n, 2),
            };
            if buf.len() < hdr + len {
                break;
            }
            if opcode == 8 {
                return (len >= 2).then(|| u16::from_be_bytes([buf[hdr], buf[hdr + 1]]));
            }
            buf.drain(..hdr + len);
        }
        match tokio::time::timeout(Duration::from_secs(15), rd.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// Samples the server's RSS until stopped; returns the peak.
fn sample_rss(pid: i32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(rss_kib(pid).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak.max(rss_kib(pid).unwrap_or(0))
    })
}

async fn ping_ok(client: &mut TestClient, id: &str) {
    let pong = client.request(json!({"type": "ping"}), id).await;
    assert_eq!(pong["type"], "pong", "{pong}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_tcp_connections_are_closed_at_the_head_deadline() {
    raise_nofile();
    const BARE: usize = 2000;
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let mut legit = server.client(&fx.owner, Some("legit")).await;
    legit.attach("default", None).await;

    // 2,000 sockets that never send a byte, 16 per source address.
    let closed_after = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    let flood_started = Instant::now();
    for i in 0..BARE {
        let mut s = tcp_from(flood_ip(i, 16), server.addr)
            .await
            .expect("the server accepts bare connections");
        let opened = Instant::now();
        let closed_after = closed_after.clone();
        readers.push(tokio::spawn(async move {
            let mut b = [0u8; 64];
            // Bounded: the contract's 10 s deadline plus a generous margin.
            let r = tokio::time::timeout(Duration::from_secs(30), s.read(&mut b)).await;
            if matches!(r, Ok(Ok(0)) | Ok(Err(_))) {
                closed_after.lock().unwrap().push(opened.elapsed());
            }
        }));
    }
    println!(
        "opened {BARE} bare connections in {:?}",
        flood_started.elapsed()
    );

    // Meanwhile the authenticated client keeps its pongs and prompts, and /healthz answers.
    ping_ok(&mut legit, "during-1").await;
    let ok = legit.prompt("during the flood").await;
    let prompt_id = ok["prompt_id"].as_str().unwrap().to_string();
    legit.wait_turn(&prompt_id, &["ended"]).await;
    let (status, _, body) = server.http_get("/healthz").await;
    assert_eq!(status, 200, "{body}");

    for r in readers {
        r.await.unwrap();
    }
    let closed = closed_after.lock().unwrap().clone();
    let slowest = closed.iter().max().copied().unwrap_or_default();
    println!(
        "bare connections closed by the server: {} of {BARE}; slowest after {:?}",
        closed.len(),
        slowest
    );
    assert_eq!(closed.len(), BARE, "every bare connection is closed");
    assert!(
        slowest < Duration::from_secs(15),
        "the slowest bare connection was closed after {slowest:?}"
    );
    ping_ok(&mut legit, "after").await;
    // New legitimate clients connect once the sockets are gone.
    let mut late = server.client(&fx.owner2, Some("late")).await;
    ping_ok(&mut late, "late").await;
    let m = server.http_get("/metrics").await.2;
    assert!(
        m.lines()
            .any(|l| l.starts_with("ccrelay_connections_refused_total{reason=\"head_timeout\"}")),
        "head timeouts are counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_before_authentication_are_refused_from_the_header() {
    raise_nofile();
    const FLOODERS: usize = 300;
    const ANNOUNCED: u64 = 4 << 20;
    const SENT: usize = 3 << 20;
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let mut legit = server.client(&fx.owner, Some("legit")).await;
    legit.attach("default", None).await;
    // Let the server settle, then take its idle RSS.
    ping_ok(&mut legit, "settle").await;
    let idle = rss_kib(server.pid()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(server.pid(), stop.clone());

    let mut tasks = Vec::new();
    let sent_total = Arc::new(AtomicU64::new(0));
    for i in 0..FLOODERS {
        let addr = server.addr;
        let sent_total = sent_total.clone();
        tasks.push(tokio::spawn(async move {
            let (status, head, s) = upgrade_from(flood_ip(i, 16), addr, "").await;
            assert_eq!(status, 101, "{head}");
            let (rd, mut wr) = s.into_split();
            let reader = tokio::spawn(read_close_code(rd));
            // A masked text frame announcing 4 MiB, then most of its payload.
            let mut header = vec![0x81, 0x80 | 127];
            header.extend_from_slice(&ANNOUNCED.to_be_bytes());
            header.extend_from_slice(&[1, 2, 3, 4]);
            let chunk = vec![b'a'; 64 * 1024];
            let _ = tokio::time::timeout(Duration::from_secs(20), async {
                wr.write_all(&header).await?;
                let mut sent = 0;
                while sent < SENT {
                    wr.write_all(&chunk).await?;
                    sent += chunk.len();
                    sent_total.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            reader.await.unwrap()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.await.unwrap();
    let rise_mib = peak.saturating_sub(idle) as f64 / 1024.0;
    println!(
        "server RSS idle {idle} KiB, peak during {FLOODERS} oversized pre-auth messages {peak} KiB: +{rise_mib:.1} MiB; the flooders got {} MiB through",
        sent_total.load(Ordering::Relaxed) >> 20
    );
    let refused = codes.iter().filter(|c| **c == Some(1009)).count();
    assert_eq!(refused, FLOODERS, "close codes: {codes:?}");
    assert!(rise_mib < 64.0, "RSS rose by {rise_mib:.1} MiB");
    ping_ok(&mut legit, "after").await;
    let ok = legit.prompt("after the flood").await;
    let prompt_id = ok["prompt_id"].as_str().unwrap().to_string();
    legit.wait_turn(&prompt_id, &["ended"]).await;
}

/// Flood from an authenticated client with `make(i)` frames; returns the
/// `rate_limited` errors seen, the elapsed time and the close code.
async fn flood(
    client: TestClient,
    make: impl Fn(usize) -> Message + Send + 'static,
) -> (usize, Duration, Option<u16>) {
    let (mut tx, mut rx) = client.ws.split();
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_sending = stop.clone();
    let sender = tokio::spawn(async move {
        // Bounded: at most 20 s or 200,000 frames, as fast as the socket takes them.
        for i in 0..200_000 {
            if stop_sending.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(20) {
                break;
            }
            if tx.send(make(i)).await.is_err() {
                break;
            }
        }
    });
    let mut limited = Vec::new();
    let mut code = None;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(25), rx.next()).await {
        match msg {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["code"] == "rate_limited" {
                    limited.push(started.elapsed());
                }
            }
            Ok(Message::Close(frame)) => {
                code = frame.map(|f| u16::from(f.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sender.await;
    // At most one `rate_limited` a second.
    for pair in limited.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(900),
            "two rate_limited errors {:?} apart",
            pair[1] - pair[0]
        );
    }
    (limited.len(), started.elapsed(), code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_text_ping_and_binary_frames_are_rate_limited_then_closed_1008() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&["--max-frames-per-sec", "20"]));
    let mut bystander = server.client(&fx.owner2, Some("bystander")).await;
    type Maker = fn(usize) -> Message;
    let kinds: [(&str, Maker); 3] = [
        ("text", |i| {
            Message::Text(json!({"type": "ping", "id": i}).to_string().into())
        }),
        ("websocket ping", |_| Message::Ping(vec![1, 2, 3].into())),
        ("binary", |_| Message::Binary(vec![0u8; 16].into())),
    ];
    for (kind, make) in kinds {
        let client = server.client(&fx.owner, Some(kind)).await;
        let (limited, elapsed, code) = flood(client, make).await;
        println!("{kind} flood: {limited} rate_limited errors in {elapsed:?}, closed {code:?}");
        assert_eq!(code, Some(1008), "{kind} flood closed with {code:?}");
        assert!(limited >= 1, "{kind} flood saw rate_limited");
        ping_ok(&mut bystander, kind).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seventeenth_unauthenticated_connection_from_one_address_gets_429() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let ip: IpAddr = "127.0.0.5".parse().unwrap();
    let mut waiting = Vec::new();
    for _ in 0..16 {
        let mut c = ws_from(&server, ip, &[]).await;
        let challenge = c.recv().await;
        assert_eq!(challenge["type"], "auth.challenge");
        waiting.push((c, challenge));
    }
    let (status, head, _) = upgrade_from(ip, server.addr, "").await;
    assert_eq!(status, 429, "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    // Other addresses are not affected.
    let (status, _, _) = upgrade_from("127.0.0.6".parse().unwrap(), server.addr, "").await;
    assert_eq!(status, 101);
    // /healthz from the capped address still answers.
    let mut s = tcp_from(ip, server.addr).await.unwrap();
    s.write_all(
        format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut body = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut body)).await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");

    // Authenticating releases the address's place (the connection stays open):
    // the next connection gets in.
    let (mut first, challenge) = waiting.remove(0);
    let text = common::bound_text(challenge["sign"].as_str().unwrap(), &first.origin);
    let signature = common::sign(&fx.owner, &text);
    first
        .send(
            json!({"type": "auth.response", "id": "a", "signature": signature,
            "public_key": fx.owner.public_line, "origin": first.origin}),
        )
        .await;
    assert_eq!(first.recv().await["type"], "auth.ok");
    let (status, head, _kept) = upgrade_from(ip, server.addr, "").await;
    assert_eq!(status, 101, "authentication gave the place back: {head}");
    // So does closing one.
    let (status, _, _) = upgrade_from(ip, server.addr, "").await;
    assert_eq!(status, 429);
    drop(waiting.remove(0));
    let mut got_in = false;
    for _ in 0..100 {
        let (status, _, _) = upgrade_from(ip, server.addr, "").await;
        if status == 101 {
            got_in = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(got_in, "a closed connection gives its place back");
    ping_ok(&mut first, "still").await;
    let m = server.http_get("/metrics").await.2;
    assert!(
        m.lines()
            .any(|l| l.starts_with("ccrelay_connections_refused_total{reason=\"address_cap\"}")),
        "cap refusals are counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_connections_do_not_count_against_the_address_cap() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let ip: IpAddr = "127.0.0.7".parse().unwrap();
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut c = ws_from(&server, ip, &[]).await;
        let ok = c.authenticate(&fx.owner, Some(&format!("d{i}"))).await;
        assert_eq!(ok["type"], "auth.ok", "{ok}");
        clients.push(c);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        ping_ok(c, &format!("p{i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_limits_apply_per_forwarded_address() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&["--trusted-proxy", "127.0.0.1/32"]));
    let proxy: IpAddr = "127.0.0.1".parse().unwrap();
    let xff = |a: &str| format!("X-Forwarded-For: 198.51.100.9, {a}\r\n");

    // Repeated failures from one forwarded address get that address throttled.
    let mut throttled = false;
    for _ in 0..40 {
        let (status, _, _) = upgrade_from(proxy, server.addr, &xff("203.0.113.5")).await;
        if status == 429 {
            throttled = true;
            break;
        }
        assert_eq!(status, 101);
        let mut c = ws_from(&server, proxy, &[("X-Forwarded-For", "203.0.113.5")]).await;
        let answer = c.authenticate(&fx.stranger, None).await;
        assert_eq!(answer["code"], "auth_failed", "{answer}");
    }
    assert!(throttled, "the forwarded address was never throttled");
    assert!(
        server
            .log_json()
            .iter()
            .any(|l| l["message"] == "authentication failed"
                && l["span"]["peer"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("203.0.113.5"))),
        "logs name the forwarded address"
    );
    // Another forwarded address through the same proxy still logs in.
    let mut other = ws_from(&server, proxy, &[("X-Forwarded-For", "203.0.113.6")]).await;
    let ok = other.authenticate(&fx.owner, Some("via proxy")).await;
    assert_eq!(ok["type"], "auth.ok", "{ok}");
    // X-Forwarded-For from an untrusted peer is ignored: 127.0.0.2 is not throttled.
    let (status, _, _) = upgrade_from(
        "127.0.0.2".parse().unwrap(),
        server.addr,
        &xff("203.0.113.5"),
    )
    .await;
    assert_eq!(status, 101);

    // The per-address cap counts forwarded addresses.
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut c = ws_from(&server, proxy, &[("X-Forwarded-For", "203.0.113.7")]).await;
        assert_eq!(c.recv().await["type"], "auth.challenge");
        held.push(c);
    }
    let (status, head, _) = upgrade_from(proxy, server.addr, &xff("203.0.113.7")).await;
    assert_eq!(status, 429, "{head}");
    let (status, _, _) = upgrade_from(proxy, server.addr, &xff("203.0.113.8")).await;
    assert_eq!(status, 101, "another forwarded address is not capped");
    // An untrusted peer's X-Forwarded-For does not move it to another address's count.
    let ip: IpAddr = "127.0.0.3".parse().unwrap();
    let mut direct = Vec::new();
    for i in 0..16 {
        let c = ws_from(&server, ip, &[("X-Forwarded-For", &format!("192.0.2.{i}"))]).await;
        direct.push(c);
    }
    let (status, _, _) = upgrade_from(ip, server.addr, &xff("192.0.2.99")).await;
    assert_eq!(status, 429);
}

/// Server memory per idle attached connection as docs/operations.md ("Sizing")
/// documents it; the test allows 1.5 times that.
const IDLE_CONNECTION_KIB_DOCUMENTED: f64 = 7.7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_authenticated_connection_memory() {
    raise_nofile();
    // CCRELAY_MEASURE_N: a smaller count for a quick look (a multiple of 10).
    let n: usize = std::env::var("CCRELAY_MEASURE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let fx = Fixture::new();
    let bin = std::env::var("CCRELAY_MEASURE_BIN").ok();
    let server = match &bin {
        // Measure another build (e.g. main's) with the same test.
        Some(path) => {
            let mut cmd = std::process::Command::new(path);
            cmd.arg("serve")
                .args(["--listen", "127.0.0.1:0", "--authorized-keys"])
                .arg(fx.authorized_keys())
                .arg("--data-dir")
                .arg(fx.data_dir())
                .arg("--workdir")
                .arg(fx.workdir())
                .args(["--log-format", "json", "--log-level", "debug"])
                .arg("--agent-cmd")
                .arg(common::mock_agent_bin())
                .env("CCRELAY_MOCK_STATE_DIR", fx.path().join("mock-state"))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            TestServer::spawn(cmd)
        }
        None => fx.start(ServerOptions::default()),
    };
    // Warm up: the allocator, the runtime and the session exist before measuring.
    let mut warm = Vec::new();
    for i in 0..20 {
        let mut c = server.client(&fx.owner, Some(&format!("warm{i}"))).await;
        ping_ok(&mut c, "w").await;
        warm.push(c);
    }
    let before = rss_kib(server.pid()).unwrap();
    let mut clients = Vec::with_capacity(n);
    for chunk in 0..(n / 10) {
        let mut batch = Vec::new();
        for j in 0..10 {
            let url = server.url.clone();
            let owner = fx.owner.clone();
            batch.push(tokio::spawn(async move {
                let mut c = TestClient::connect(&url).await;
                let ok = c.authenticate(&owner, Some(&format!("c{chunk}-{j}"))).await;
                assert_eq!(ok["type"], "auth.ok");
                c.attach("default", None).await;
                c
            }));
        }
        for b in batch {
            clients.push(b.await.unwrap());
        }
    }
    // One round trip each, so every connection has done real work and gone idle.
    for (i, c) in clients.iter_mut().enumerate() {
        ping_ok(c, &format!("i{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(server.pid()).unwrap();
    // A thousand connections cost something: a drop means the measurement failed
    // (it is not read as zero).
    assert!(
        after > before,
        "server RSS fell from {before} KiB to {after} KiB with {n} more connections: no measurement"
    );
    let per_conn = (after - before) as f64 / n as f64;
    println!(
        "server RSS {before} KiB -> {after} KiB with {n} idle attached connections: {per_conn:.1} KiB per connection ({})",
        bin.as_deref().unwrap_or("this build")
    );
    if bin.is_none() {
        // docs/operations.md, "Sizing": 7.7 KiB per idle attached connection.
        assert!(
            per_conn < IDLE_CONNECTION_KIB_DOCUMENTED * 1.5,
            "{per_conn:.1} KiB per idle attached connection, documented {IDLE_CONNECTION_KIB_DOCUMENTED} KiB"
        );
    }
    // They all still work.
    for (i, c) in clients.iter_mut().enumerate().step_by(97) {
        ping_ok(c, &format!("e{i}")).await;
    }
}

/// Send `GET path` on a kept-alive connection; the status and head of the answer,
/// or `None` when the server closed the connection instead.
async fn get_on(s: &mut TcpStream, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    s.write_all(request.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body_len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    while buf.len() < head_end + body_len {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
    Some((status, head))
}

/// Wait up to `limit` for the server to close `s`: how long that took, or `None`
/// if it stayed open.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut b = [0u8; 512];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[derive(Debug)]
enum KeepAlive {
    /// Every request answered 200; then, idle, closed by the server after this long.
    Served(Option<Duration>),
    /// The first request got 429 with Retry-After and the connection was closed.
    Refused,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_keep_alive_connections_are_capped_per_address_and_closed() {
    raise_nofile();
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&["--log-level", "info"]));
    let addr = server.addr;

    // Beside the rest, from other addresses: one connection asking every 2 s
    // until the server closes it (the 60 s lifetime) ...
    let lifetime = tokio::spawn(async move {
        let mut s = tcp_from("127.0.0.9".parse().unwrap(), addr).await.unwrap();
        let opened = Instant::now();
        let mut served = 0;
        // Bounded: 40 rounds of 2 s reach past the lifetime.
        for _ in 0..40 {
            match get_on(&mut s, addr, "/healthz").await {
                Some((200, _)) => served += 1,
                Some((status, head)) => panic!("lifetime connection got {status}: {head}"),
                None => break,
            }
            if closed_within(&mut s, Duration::from_secs(2))
                .await
                .is_some()
            {
                break;
            }
        }
        (served, opened.elapsed())
    });
    // ... and one sending requests back to back: the 100th says `Connection: close`.
    let many = tokio::spawn(async move {
        let mut s = tcp_from("127.0.0.10".parse().unwrap(), addr).await.unwrap();
        for i in 1..=100 {
            let (status, head) = get_on(&mut s, addr, "/healthz").await.expect("answered");
            assert_eq!(status, 200, "request {i}: {head}");
            let closes = head.to_ascii_lowercase().contains("connection: close");
            assert_eq!(closes, i == 100, "request {i}: {head}");
        }
        closed_within(&mut s, Duration::from_secs(5)).await
    });

    // 64 keep-alive connections from one address, all at once, each asking every
    // 2 s for 10 s, then going idle.
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        tasks.push(tokio::spawn(async move {
            let mut s = tcp_from(local, addr).await.expect("connects");
            for round in 0..5 {
                match get_on(&mut s, addr, "/healthz").await {
                    Some((200, _)) => {}
                    Some((429, head)) => {
                        assert_eq!(round, 0, "a served connection was refused later: {head}");
                        assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
                        assert!(
                            closed_within(&mut s, Duration::from_secs(5))
                                .await
                                .is_some(),
                            "a refused connection is closed"
                        );
                        return KeepAlive::Refused;
                    }
                    other => panic!("round {round}: {other:?}"),
                }
                if round < 4 {
                    assert!(
                        closed_within(&mut s, Duration::from_secs(2))
                            .await
                            .is_none(),
                        "a connection asking every 2 s was closed"
                    );
                }
            }
            // From its last response on, the connection is idle.
            KeepAlive::Served(closed_within(&mut s, Duration::from_secs(10)).await)
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let served: Vec<Option<Duration>> = outcomes
        .iter()
        .filter_map(|o| match o {
            KeepAlive::Served(closed) => Some(*closed),
            KeepAlive::Refused => None,
        })
        .collect();
    println!(
        "{} of 64 served; idle ones closed after {:?}",
        served.len(),
        served.iter().flatten().max()
    );
    // All 64 were open together: the cap of 32 held at every moment.
    assert_eq!(served.len(), 32, "{outcomes:?}");
    for closed in &served {
        let after = closed.expect("an idle connection is closed");
        assert!(
            after <= Duration::from_secs(6),
            "idle one closed after {after:?}"
        );
    }

    let closed = many.await.unwrap();
    assert!(closed.is_some(), "closed after its 100th request");
    let (served, lived) = lifetime.await.unwrap();
    println!("the lifetime connection was served {served} times and lived {lived:?}");
    assert!(lived <= Duration::from_secs(61), "lived {lived:?}");
    assert!(
        lived >= Duration::from_secs(59),
        "closed early, after {lived:?}"
    );

    let m = server.http_get("/metrics").await.2;
    let refused: f64 = m
        .lines()
        .find_map(|l| {
            l.strip_prefix("ccrelay_connections_refused_total{reason=\"http_address_cap\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
        .expect("the refusal counter is exported");
    assert!(refused >= 32.0, "{refused} refusals counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_restarts_its_agent_while_400_keep_alive_sockets_press_a_256_descriptor_server() {
    raise_nofile();
    const SOCKETS: usize = 400;
    let fx = Fixture::new();
    let server = fx.start(
        ServerOptions::default()
            .nofile(256)
            .args(&["--log-level", "info"]),
    );
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..SOCKETS {
        // 127.0.0.2 to 127.0.0.20.
        let ip = IpAddr::from([127, 0, 0, 2 + (i % 19) as u8]);
        let (stop, served, refused) = (stop.clone(), served.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            // Bounded: until told to stop, at most 90 s; each socket reconnects
            // half a second after it was refused or closed.
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(90) {
                if let Ok(mut s) = tcp_from(ip, addr).await {
                    for _ in 0..100 {
                        match get_on(&mut s, addr, "/healthz").await {
                            Some((200, _)) => served.fetch_add(1, Ordering::Relaxed),
                            Some(_) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            None => break,
                        };
                        if stop.load(Ordering::Relaxed)
                            || closed_within(&mut s, Duration::from_secs(2))
                                .await
                                .is_some()
                        {
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    // Until the flood is in full swing: many served and many refused (bounded).
    for _ in 0..300 {
        if served.load(Ordering::Relaxed) >= 100 && refused.load(Ordering::Relaxed) >= 400 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "flood: {} served, {} refused so far",
        served.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
    assert!(
        refused.load(Ordering::Relaxed) >= 400,
        "the flood was refused"
    );

    // An owner from 127.0.0.1 gets in and restarts its agent, which then answers.
    let mut owner = server.client(&fx.owner, Some("owner")).await;
    owner.attach("default", None).await;
    let restarted = owner
        .request(json!({"type": "session.restart"}), "restart")
        .await;
    assert_eq!(restarted["type"], "ok", "{restarted}");
    let ok = owner.prompt("after the restart").await;
    let prompt_id = ok["prompt_id"]
        .as_str()
        .expect("prompt accepted")
        .to_string();
    owner.wait_turn(&prompt_id, &["ended"]).await;
    ping_ok(&mut owner, "still").await;

    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let too_many = server
        .log_json()
        .iter()
        .filter(|l| l.to_string().contains("Too many open files"))
        .count();
    assert_eq!(too_many, 0, "the server ran out of descriptors");
}

/// Open `n` keep-alive connections from `ip` to `to` and ask each for `path`
/// (all kept open): the statuses, in order.
async fn keep_alive_statuses(
    ip: IpAddr,
    to: SocketAddr,
    path: &str,
    n: usize,
) -> (Vec<u16>, Vec<TcpStream>) {
    let mut statuses = Vec::new();
    let mut kept = Vec::new();
    for _ in 0..n {
        let mut s = tcp_from(ip, to).await.expect("connects");
        let (status, _) = get_on(&mut s, to, path).await.expect("answered");
        statuses.push(status);
        kept.push(s);
    }
    (statuses, kept)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_and_the_metrics_listener_are_not_capped_per_address() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&[
        "--max-http-per-address",
        "2",
        "--trusted-proxy",
        "127.0.0.1/32",
        "--metrics-listen",
        "127.0.0.1:0",
    ]));
    // A direct client: its third plain connection is over the cap.
    let (direct, _kept) =
        keep_alive_statuses("127.0.0.3".parse().unwrap(), server.addr, "/healthz", 3).await;
    assert_eq!(direct, [200, 200, 429]);
    // The proxy: not capped per address.
    let (proxied, _kept) =
        keep_alive_statuses("127.0.0.1".parse().unwrap(), server.addr, "/healthz", 5).await;
    assert_eq!(proxied, [200; 5]);
    // The separate metrics listener: no caps at all.
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics_addr: SocketAddr = loop {
        let found = server
            .log_json()
            .into_iter()
            .find(|l| l["message"] == "listening")
            .and_then(|l| l["metrics_addr"].as_str().map(str::to_string));
        if let Some(addr) = found {
            break addr.parse().expect("metrics address");
        }
        assert!(Instant::now() < deadline, "no listening log line");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (scrapes, _kept) =
        keep_alive_statuses("127.0.0.3".parse().unwrap(), metrics_addr, "/metrics", 5).await;
    assert_eq!(scrapes, [200; 5]);
}
