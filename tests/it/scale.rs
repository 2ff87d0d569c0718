//! Scale: presence that costs O(N) bytes for N attaches (docs/protocol.md §7.1), the
//! `history` request (§4.9), re-attach storms that must not shed anyone, journal
//! replays to clients that do not read, and `ccrelay attach`'s view of who is
//! there — all against the real binary over real sockets.
//!
//! The tests with hundreds of connections are heavy: run them under the machine
//! lock (`flock /tmp/ccrelay-heavy.lock cargo test --test it scale::`).

use crate::common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Fixture, KeyPair, ServerOptions, TestClient, TestServer, ccrelay_bin, seq_of};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a test waits for something that must happen.
const WAIT: Duration = Duration::from_secs(60);

/// A WebSocket from `source` (127.0.0.x) to the server; with `recv_buf`, the
/// socket's receive buffer is that small (a client that stops reading then
/// stalls the server's writes quickly).
async fn ws_from(server: &TestServer, source: Ipv4Addr, recv_buf: Option<u32>) -> Ws {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(n) = recv_buf {
        socket.set_recv_buffer_size(n).expect("SO_RCVBUF");
    }
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .expect("bind a loopback source address");
    let stream = socket.connect(server.addr).await.expect("connects");
    let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        server.url.clone(),
        MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .await
    .expect("websocket upgrade");
    ws
}

/// Authenticate and attach a client from `source`; returns it after its own
/// presence frame (the end of its attach).
async fn attached_client(
    server: &TestServer,
    key: &KeyPair,
    device: &str,
    source: Ipv4Addr,
) -> TestClient {
    attached_client_and_presence(server, key, device, source)
        .await
        .0
}

/// [`attached_client`], also returning its own presence frame.
async fn attached_client_and_presence(
    server: &TestServer,
    key: &KeyPair,
    device: &str,
    source: Ipv4Addr,
) -> (TestClient, Value) {
    let mut c = TestClient::from_ws(ws_from(server, source, None).await);
    let ok = c.authenticate(key, Some(device)).await;
    assert_eq!(ok["type"], "auth.ok", "{ok}");
    let reply = c
        .request(
            json!({"type": "attach", "session": "default", "tail": 0}),
            "attach",
        )
        .await;
    assert_eq!(reply["type"], "attached", "{reply}");
    let (own, _) = c
        .recv_until("own presence", |v| v["type"] == "presence")
        .await;
    (c, own)
}

/// The source address for the i-th client: 127.0.0.2 and up, 16 per address.
fn source(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1 + (i / 16 / 250) as u8, 2 + ((i / 16) % 250) as u8)
}

/// Presence bytes one client received, cumulatively, at each `count` it was told.
#[derive(Debug, Default, Clone)]
struct PresenceLog {
    bytes: u64,
    frames: u64,
    /// (count in the frame, cumulative bytes after it)
    points: Vec<(u64, u64)>,
}

/// Read presence frames (and nothing else matters) until one says `count` ==
/// `until`; `own` is the client's own frame, already read.
async fn count_presence(mut ws: Ws, own: Value, until: u64, log: Arc<Mutex<PresenceLog>>) -> Ws {
    {
        let mut l = log.lock().unwrap();
        l.bytes += own.to_string().len() as u64;
        l.frames += 1;
        let bytes = l.bytes;
        l.points.push((own["count"].as_u64().unwrap_or(0), bytes));
    }
    if own["count"] == until {
        return ws;
    }
    loop {
        let next = tokio::time::timeout(WAIT * 4, ws.next())
            .await
            .expect("presence frames keep coming");
        let Some(Ok(Message::Text(t))) = next else {
            match next {
                Some(Ok(_)) => continue,
                other => panic!("connection ended while counting presence: {other:?}"),
            }
        };
        if !t.starts_with(r#"{"type":"presence""#) {
            continue;
        }
        let v: Value = serde_json::from_str(&t).expect("presence is JSON");
        let count = v["count"].as_u64().expect("presence carries count");
        let mut l = log.lock().unwrap();
        l.bytes += t.len() as u64;
        l.frames += 1;
        let bytes = l.bytes;
        l.points.push((count, bytes));
        if count == until {
            return ws;
        }
    }
}

/// 500 clients attach one after another; what any one
/// of them receives in presence frames grows linearly with the number of
/// attaches after it, not quadratically.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_bytes_grow_linearly_as_500_clients_attach_one_after_another() {
    const N: usize = 500;
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&["--max-connections", "1000"]));
    let mut logs = Vec::new();
    let mut readers = Vec::new();
    for i in 0..N {
        let (c, own) =
            attached_client_and_presence(&server, &fx.viewer, &format!("v{i}"), source(i)).await;
        let log = Arc::new(Mutex::new(PresenceLog::default()));
        logs.push(log.clone());
        readers.push(tokio::spawn(count_presence(c.ws, own, N as u64, log)));
    }
    for r in readers {
        r.await.expect("reader task");
    }
    let logs: Vec<PresenceLog> = logs.iter().map(|l| l.lock().unwrap().clone()).collect();
    let first = &logs[0];
    // Bytes the first client received for the attaches from 125 to 250 and from
    // 250 to 500: twice the attaches should cost about twice the bytes. With a
    // full list per attach it would be about four times.
    let at = |count: u64| {
        first
            .points
            .iter()
            .find(|(c, _)| *c >= count)
            .map(|(_, b)| *b)
            .unwrap_or_else(|| panic!("no presence at count {count}: {:?}", first.points))
    };
    let early = at(250) - at(125);
    let late = at(500) - at(250);
    let worst = logs.iter().map(|l| l.bytes).max().unwrap_or(0);
    let total: u64 = logs.iter().map(|l| l.bytes).sum();
    println!(
        "presence: first client {} frames {} bytes; attaches 125..250 cost it {early} bytes, \
         250..500 {late} bytes; worst client {worst} bytes; all clients {total} bytes",
        first.frames, first.bytes
    );
    assert!(
        late < 3 * early,
        "presence bytes grow faster than linearly: {early} bytes for attaches 125..250, {late} for 250..500"
    );
    // Linear with a per-attach bound: no client receives more than 1 KiB per
    // attach it saw (a full list of 500 entries alone is about 90 KiB).
    assert!(
        worst <= N as u64 * 1024,
        "a client received {worst} presence bytes for {N} attaches"
    );
    assert!(
        first.frames < N as u64,
        "changes are combined: {} frames for {N} attaches",
        first.frames
    );
}

/// Read frames in the background, counting pongs and recording close codes.
async fn drain(
    mut ws: futures_util::stream::SplitStream<Ws>,
    closes: Arc<Mutex<Vec<Option<u16>>>>,
    pongs: Arc<Mutex<u64>>,
) {
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(t)) if t.starts_with(r#"{"type":"pong""#) => {
                *pongs.lock().unwrap() += 1;
            }
            Ok(Message::Close(frame)) => {
                closes
                    .lock()
                    .unwrap()
                    .push(frame.map(|f| u16::from(f.code)));
                return;
            }
            Ok(_) => {}
            Err(_) => {
                closes.lock().unwrap().push(None);
                return;
            }
        }
    }
}

/// 500 viewers attached to one session, one of which
/// re-attaches 20 times: a new owner connection is not refused for memory and
/// no connection is shed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_viewers_and_a_reattaching_one_shed_nobody() {
    const N: usize = 500;
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&[
        "--max-connections",
        "1000",
        "--memory-limit",
        "268435456",
    ]));
    let closes = Arc::new(Mutex::new(Vec::new()));
    let pongs = Arc::new(Mutex::new(0u64));
    let mut senders = Vec::new();
    for i in 1..N {
        let c = attached_client(&server, &fx.viewer, &format!("v{i}"), source(i)).await;
        let (sink, stream) = c.ws.split();
        senders.push(sink);
        tokio::spawn(drain(stream, closes.clone(), pongs.clone()));
    }
    let mut busy = attached_client(&server, &fx.viewer, "busy", source(0)).await;
    for round in 0..20 {
        let reply = busy
            .request(
                json!({"type": "attach", "session": "default", "tail": 0}),
                &format!("re{round}"),
            )
            .await;
        assert_eq!(reply["type"], "attached", "{reply}");
        assert_eq!(reply["clients_total"], N, "{reply}");
        // The 99 oldest attached, then the newcomer itself (§7), each once.
        let listed = reply["clients"].as_array().unwrap();
        assert_eq!(listed.len(), 100, "{reply}");
        assert_eq!(listed[99]["device"], "busy", "{reply}");
        let ids: std::collections::HashSet<&str> = listed
            .iter()
            .map(|c| c["client_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 100, "no client listed twice");
        assert!(listed[..99].iter().all(|c| c["device"] != "busy"));
        let (own, _) = busy
            .recv_until("own presence", |v| v["type"] == "presence")
            .await;
        assert_eq!(own["count"], N, "{own}");
    }
    // A new owner connects and works.
    let mut owner = server.client(&fx.owner, Some("owner")).await;
    owner.attach("default", None).await;
    let pong = owner.request(json!({"type": "ping"}), "p").await;
    assert_eq!(pong["type"], "pong");
    // Every viewer still answers a ping: nobody was shed.
    for s in &mut senders {
        s.send(Message::Text(r#"{"type":"ping"}"#.into()))
            .await
            .expect("viewer still connected");
    }
    let deadline = Instant::now() + WAIT;
    while *pongs.lock().unwrap() < (N - 1) as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        *pongs.lock().unwrap(),
        (N - 1) as u64,
        "every viewer answered"
    );
    assert!(
        closes.lock().unwrap().is_empty(),
        "connections closed: {:?}",
        closes.lock().unwrap()
    );
    let (_, _, metrics) = server.http_get("/metrics").await;
    let shed = metrics
        .lines()
        .find(|l| l.starts_with("ccrelay_connections_closed_total") && l.contains("shed"))
        .map(|l| l.to_string());
    assert!(
        shed.as_deref().is_none_or(|l| l.ends_with(" 0")),
        "{shed:?}"
    );
}

/// Run prompts until the head is at least `events`; returns the head.
async fn fill(c: &mut TestClient, prompt: &str, events: u64) -> u64 {
    let mut head = 0;
    while head < events {
        let ok = c.prompt(prompt).await;
        let pid = ok["prompt_id"].as_str().unwrap().to_string();
        let (end, _) = c.wait_turn(&pid, &["ended"]).await;
        head = seq_of(&end);
    }
    // The relay.state idle after the turn.
    let (idle, _) = c
        .recv_until("idle", |v| {
            v["type"] == "event"
                && v["event"]["type"] == "relay.state"
                && v["event"]["state"] == "idle"
        })
        .await;
    seq_of(&idle)
}

fn seqs(reply: &Value) -> Vec<u64> {
    reply["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events: {reply}"))
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "event", "{e}");
            seq_of(e)
        })
        .collect()
}

/// The `history` request: from the in-memory tail, from the journal, with
/// events no longer retained (`truncated`), the limit, and bad input.
#[tokio::test]
async fn history_serves_the_tail_the_journal_and_says_what_is_gone() {
    let fx = Fixture::new();
    // A small tail (older events only in the journal) and a small journal
    // (the oldest segments removed).
    let server = fx.start(ServerOptions::default().args(&[
        "--tail-events",
        "40",
        "--journal-segment-bytes",
        "8192",
        "--journal-max-bytes",
        "65536",
    ]));
    let mut c = server.client(&fx.owner, None).await;
    c.attach("default", None).await;
    let head = fill(&mut c, "hello there", 600).await;

    // From the tail.
    let r = c
        .request(
            json!({"type": "history", "before": head + 1, "limit": 20}),
            "h1",
        )
        .await;
    assert_eq!(r["type"], "history", "{r}");
    assert_eq!(r["session"], "default");
    assert_eq!(r["truncated"], false);
    assert_eq!(seqs(&r), ((head - 19)..=head).collect::<Vec<_>>());

    // Up to 1000 at once: everything still kept; the start of the session is
    // gone (journal segments removed), so it is truncated.
    let r = c
        .request(
            json!({"type": "history", "before": head + 1, "limit": 1000}),
            "h2",
        )
        .await;
    assert_eq!(r["truncated"], true, "the oldest segments were removed");
    let kept = seqs(&r);
    let first_kept = kept[0];
    assert!(first_kept > 1);
    assert_eq!(kept, (first_kept..=head).collect::<Vec<_>>());
    println!("head {head}, first kept {first_kept}");
    assert!(
        head - first_kept > 100,
        "the journal keeps events older than the tail (head {head}, first kept {first_kept})"
    );

    // From the journal only (older than the tail's 40), not truncated.
    let before = first_kept + 40;
    let r = c
        .request(
            json!({"type": "history", "session": "default", "before": before, "limit": 30}),
            "h3",
        )
        .await;
    assert_eq!(r["truncated"], false, "{}", r["truncated"]);
    assert_eq!(seqs(&r), ((before - 30)..before).collect::<Vec<_>>());
    // The same bytes a replay sends.
    let mut fresh = server.client(&fx.owner2, None).await;
    fresh.attach("default", Some(before - 2)).await;
    let (first, _) = fresh
        .recv_until("replayed event", |v| v["type"] == "event")
        .await;
    assert_eq!(seq_of(&first), before - 1);
    assert_eq!(&r["events"][29], &first);

    // Partly gone: truncated, and only what is still kept.
    let r = c
        .request(
            json!({"type": "history", "before": first_kept + 10, "limit": 20}),
            "h4",
        )
        .await;
    assert_eq!(r["truncated"], true, "{r}");
    assert_eq!(seqs(&r), (first_kept..first_kept + 10).collect::<Vec<_>>());

    // Nothing before seq 1, nothing beyond the head.
    let r = c
        .request(json!({"type": "history", "before": 1, "limit": 10}), "h5")
        .await;
    assert_eq!(r["events"], json!([]));
    assert_eq!(r["truncated"], false);
    let r = c
        .request(
            json!({"type": "history", "before": head + 100, "limit": 5}),
            "h6",
        )
        .await;
    assert_eq!(r["events"], json!([]));
    // The default limit.
    let r = c
        .request(json!({"type": "history", "before": head + 1}), "h7")
        .await;
    assert_eq!(seqs(&r), ((head - 99)..=head).collect::<Vec<_>>());

    // Bad input.
    for (req, code) in [
        (
            json!({"type": "history", "before": 10, "limit": 1001}),
            "bad_message",
        ),
        (
            json!({"type": "history", "before": 10, "limit": 0}),
            "bad_message",
        ),
        (json!({"type": "history", "before": 0}), "bad_message"),
        (json!({"type": "history", "limit": 5}), "bad_message"),
        (json!({"type": "history", "before": "ten"}), "bad_message"),
        (
            json!({"type": "history", "before": 10, "limit": -1}),
            "bad_message",
        ),
        (
            json!({"type": "history", "session": "nope", "before": 10}),
            "no_such_session",
        ),
    ] {
        let r = c.request(req.clone(), "bad").await;
        assert_eq!(r["type"], "error", "{req} -> {r}");
        assert_eq!(r["code"], code, "{req} -> {r}");
    }
    // A viewer may ask too, without attaching.
    let mut v = server.client(&fx.viewer, None).await;
    let r = v
        .request(
            json!({"type": "history", "before": head + 1, "limit": 3}),
            "hv",
        )
        .await;
    assert_eq!(seqs(&r), ((head - 2)..=head).collect::<Vec<_>>());
}

/// After authentication: 512 clients whose journal replay stalls
/// because they never read must hold no blocking threads — a key revocation
/// (reloaded on the blocking pool) and another replay still happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_to_clients_that_do_not_read_block_neither_revocation_nor_other_replays() {
    const STUCK: usize = 512;
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&[
        "--tail-events",
        "8",
        "--max-connections",
        "1000",
    ]));
    let mut owner = server.client(&fx.owner, None).await;
    owner.attach("default", None).await;
    // Thousands of small events, all but the last few only in the journal.
    let head = fill(&mut owner, "flood 1500", 3000).await;

    let mut revoked = server.client(&fx.owner2, None).await;
    revoked.attach("default", Some(head)).await;

    // The stuck clients: a tiny receive buffer, attach from seq 0, read the
    // `attached` reply and then nothing more.
    let mut stuck = Vec::new();
    for i in 0..STUCK {
        let mut c = TestClient::from_ws(ws_from(&server, source(i), Some(4096)).await);
        let ok = c.authenticate(&fx.viewer, None).await;
        assert_eq!(ok["type"], "auth.ok", "{ok}");
        c.send(json!({"type": "attach", "id": "a", "since": 0}))
            .await;
        let (attached, _) = c.recv_until("attached", |v| v["type"] == "attached").await;
        assert_eq!(attached["replay_from"], 1, "{attached}");
        stuck.push(c);
    }

    // Revoke owner2: its connection must be closed with 1008.
    std::fs::write(fx.authorized_keys(), format!("{}\n", fx.owner.public_line))
        .expect("keys rewritten");
    let started = Instant::now();
    let (code, reason, _) = revoked.expect_close(WAIT).await;
    println!(
        "revocation with {STUCK} stalled replays took {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(code, Some(1008), "revoked key closed with 1008 ({reason})");

    // Another client replays the whole journal.
    let mut reader = server.client(&fx.owner, None).await;
    let attached = reader.attach("default", Some(0)).await;
    let to = attached["head"].as_u64().unwrap();
    let mut next = 1;
    while next <= to {
        let (ev, _) = reader
            .recv_until("replayed event", |v| v["type"] == "event")
            .await;
        assert_eq!(seq_of(&ev), next, "replay in order, nothing missing");
        next += 1;
    }
    drop(stuck);
}

/// `ccrelay attach` keeps its own view from full lists (≤ 32 attached) and from
/// deltas without a list (more): every join and leave is shown exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_shows_every_join_and_leave_from_lists_and_deltas() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let home = fx.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut child = Command::new(ccrelay_bin())
        .arg("attach")
        .arg("-i")
        .arg(&fx.owner.private)
        .arg(&server.url)
        .env_remove("SSH_AUTH_SOCK")
        // known_servers under this HOME, not a shared config dir.
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", &home)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ccrelay attach starts");
    let out = Arc::new(Mutex::new(String::new()));
    {
        let out = out.clone();
        let mut pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let wait_for = |what: String| {
        let out = out.clone();
        async move {
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline {
                if out.lock().unwrap().contains(&what) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("attach never printed {what:?}:\n{}", out.lock().unwrap());
        }
    };
    // Wait until attach is attached (so every viewer below is a join it shows).
    let mut probe = server.client(&fx.owner2, None).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let list = probe.request(json!({"type": "session.list"}), "l").await;
        if list["sessions"][0]["clients"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "attach never attached: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut clients = Vec::new();
    clients.push(attached_client(&server, &fx.viewer, "dev0", source(0)).await);
    wait_for("dev0 joined".into()).await;
    // 40 in all: beyond 32 presence has no full list, only deltas.
    for i in 1..40 {
        clients.push(attached_client(&server, &fx.viewer, &format!("dev{i}"), source(i)).await);
    }
    wait_for("dev39 joined".into()).await;
    // Some leave while more than 32 are attached, the rest down to a few.
    for i in (0..40).rev().step_by(3) {
        let c = clients.remove(i);
        drop(c);
    }
    wait_for("dev0 left".into()).await;
    let text = out.lock().unwrap().clone();
    let _ = child.kill();
    let _ = child.wait();
    for i in 0..40 {
        let joined = format!("· dev{i} joined\n");
        assert_eq!(
            text.matches(&joined).count(),
            1,
            "{joined:?} once in:\n{text}"
        );
        let left = format!("· dev{i} left\n");
        let expect_left = (0..40).rev().step_by(3).any(|j| j == i);
        assert_eq!(
            text.matches(&left).count(),
            usize::from(expect_left),
            "{left:?} in:\n{text}"
        );
    }
}
