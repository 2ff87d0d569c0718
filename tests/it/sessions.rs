//! Sessions with the mock agent: fan-out, exact replay, lagging clients,
//! load, prompts with keys, permission prompts, presence, durability.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Fixture, Received, ServerOptions, TestClient, TestServer, seq_of};
use serde_json::{Value, json};

/// Heavy tests (floods, hundreds of clients) run one at a time.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn events(frames: &[Value]) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| f["type"] == "event")
        .cloned()
        .collect()
}

#[tokio::test]
async fn three_clients_get_identical_bytes_starting_with_the_prompt() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let mut a = server.client(&fx.owner, Some("laptop")).await;
    let mut b = server.client(&fx.owner2, Some("phone")).await;
    let mut c = server.client(&fx.viewer, Some("tablet")).await;
    for cl in [&mut a, &mut b, &mut c] {
        cl.attach("default", None).await;
    }
    // Wait until the agent is idle so every client has seen the startup events.
    let (_, _) = a
        .recv_until("idle", |v| {
            v["type"] == "event"
                && v["event"]["type"] == "relay.state"
                && v["event"]["state"] == "idle"
        })
        .await;
    for cl in [&mut a, &mut b, &mut c] {
        cl.keep_raw = true;
        cl.raw.clear();
    }
    let head = a.request(json!({"type": "session.list"}), "l").await["sessions"][0]["head"]
        .as_u64()
        .unwrap();
    let ok = a.prompt("hello there").await;
    let prompt_id = ok["prompt_id"].as_str().unwrap().to_string();
    let mut streams = Vec::new();
    for cl in [&mut a, &mut b, &mut c] {
        cl.wait_turn(&prompt_id, &["ended"]).await;
        let raw: Vec<String> = cl
            .raw
            .iter()
            .filter(|t| t.starts_with(r#"{"type":"event""#))
            .filter(|t| seq_of(&serde_json::from_str(t).unwrap()) > head)
            .cloned()
            .collect();
        streams.push(raw);
    }
    assert!(!streams[0].is_empty());
    assert_eq!(streams[0], streams[1], "same bytes for every client");
    assert_eq!(streams[0], streams[2], "same bytes for every client");
    let first: Value = serde_json::from_str(&streams[0][0]).unwrap();
    assert_eq!(
        first["event"]["type"], "relay.prompt",
        "the stream starts with relay.prompt"
    );
    assert_eq!(first["event"]["prompt_id"], prompt_id.as_str());
    assert_eq!(first["event"]["device"], "laptop");
    assert_eq!(first["event"]["fingerprint"], fx.owner.fingerprint.as_str());
    assert_eq!(first["event"]["content"], "hello there");
    let parsed: Vec<Value> = streams[0]
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
    let seqs: Vec<u64> = parsed.iter().map(seq_of).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "contiguous seqs: {seqs:?}"
    );
    let kinds: Vec<&str> = parsed
        .iter()
        .map(|e| e["event"]["type"].as_str().unwrap())
        .collect();
    let pos = |k: &str| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("{k} missing in {kinds:?}"))
    };
    assert!(pos("relay.prompt") < pos("relay.turn") && pos("relay.turn") < pos("system"));
    assert!(pos("stream_event") < pos("result"));
    // The ok reply came before the relay.prompt event on the sender's connection.
    let ok_pos = a.raw.iter().position(|t| t.contains(r#""type":"ok""#));
    let ev_pos = a
        .raw
        .iter()
        .position(|t| t.contains(r#""type":"relay.prompt""#));
    assert!(ok_pos.is_none() || ok_pos < ev_pos);
}

/// Read events until `relay.turn` ended/aborted for `prompt_id`; returns the seqs seen.
async fn read_until_turn_end(c: &mut TestClient, prompt_id: &str, seen: &mut Vec<u64>) {
    loop {
        let v = c.recv().await;
        if v["type"] == "event" {
            seen.push(seq_of(&v));
            if v["event"]["type"] == "relay.turn"
                && v["event"]["prompt_id"] == prompt_id
                && (v["event"]["phase"] == "ended" || v["event"]["phase"] == "aborted")
            {
                return;
            }
        }
    }
}

/// `seen` must be exactly 1..=upto, each once, in increasing order.
fn assert_exact(seen: &[u64], upto: u64) {
    if let Some(w) = seen.windows(2).find(|w| w[1] <= w[0]) {
        panic!("out of order: {} after {}", w[1], w[0]);
    }
    let mut sorted = seen.to_vec();
    sorted.sort_unstable();
    let expected: Vec<u64> = (1..=upto).collect();
    if sorted != expected {
        let dups = sorted.windows(2).filter(|w| w[0] == w[1]).count();
        panic!(
            "not exactly 1..={upto}: {} seqs, {dups} duplicates, first={:?} last={:?}",
            sorted.len(),
            sorted.first(),
            sorted.last()
        );
    }
}

#[test]
#[should_panic(expected = "out of order: 2 after 3")]
fn assert_exact_rejects_out_of_order_delivery() {
    assert_exact(&[1, 3, 2, 4], 4);
}

#[test]
#[should_panic(expected = "out of order: 2 after 2")]
fn assert_exact_rejects_a_duplicate() {
    assert_exact(&[1, 2, 2, 3], 3);
}

#[test]
#[should_panic(expected = "not exactly 1..=4")]
fn assert_exact_rejects_a_gap() {
    assert_exact(&[1, 2, 4], 4);
}

#[test]
fn assert_exact_accepts_every_seq_once_in_order() {
    assert_exact(&[1, 2, 3, 4], 4);
}

#[tokio::test]
async fn reconnect_with_since_misses_nothing_at_random_cut_points() {
    let _heavy = HEAVY.lock().await;
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&["--journal-fsync", "never"]));
    let mut driver = server.client(&fx.owner, Some("driver")).await;
    driver.attach("default", None).await;
    let mut rng = common::seed::Lcg::for_test("sessions");
    for round in 0..20 {
        let mut watcher = server.client(&fx.owner2, Some("watcher")).await;
        let attached = watcher.attach("default", Some(0)).await;
        let start_head = attached["head"].as_u64().unwrap();
        let mut seen: Vec<u64> = Vec::new();
        let ok = driver.prompt("flood 2000").await;
        let prompt_id = ok["prompt_id"].as_str().unwrap().to_string();
        let cut = start_head + 1 + rng.below(2000);
        // Read (replay + live) until the cut point, then drop the connection.
        while seen.last().copied().unwrap_or(0) < cut {
            let v = watcher.recv().await;
            if v["type"] == "event" {
                seen.push(seq_of(&v));
            }
        }
        drop(watcher);
        let mut again = server.client(&fx.owner2, Some("watcher")).await;
        let last = *seen.last().unwrap();
        let reattached = again.attach("default", Some(last)).await;
        assert_eq!(reattached["replay_from"], last + 1, "round {round}");
        assert_eq!(reattached["truncated"], false);
        read_until_turn_end(&mut again, &prompt_id, &mut seen).await;
        driver.wait_turn(&prompt_id, &["ended"]).await;
        let head = *seen.last().unwrap();
        assert_exact(&seen, head);
        assert!(
            head >= start_head + 2000,
            "round {round}: the flood is in the log"
        );
    }
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_closed_4008_and_resumes_losslessly() {
    let _heavy = HEAVY.lock().await;
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&[
        "--journal-fsync",
        "never",
        "--client-queue",
        "1024",
    ]));
    let mut reader = server.client(&fx.owner, Some("reader")).await;
    reader.attach("default", None).await;
    let mut stalled = server.client(&fx.owner2, Some("stalled")).await;
    stalled.attach("default", Some(0)).await;
    let rss_before = common::rss_kib(server.pid()).unwrap_or(0);
    let ok = reader.prompt("flood 50000").await;
    let prompt_id = ok["prompt_id"].as_str().unwrap().to_string();
    // The reading client gets every event (in its own task) while the stalled one
    // reads nothing.
    let server_pid = server.pid();
    let (url, key) = (server.url.clone(), fx.owner.clone());
    let reading = tokio::spawn(async move {
        let mut seen: Vec<u64> = Vec::new();
        let mut peak_rss = 0;
        let mut lagged = 0;
        let started = Instant::now();
        loop {
            let v = match reader.recv_frame(common::FRAME_TIMEOUT).await {
                Some(Received::Frame(v)) => v,
                // On a machine loaded enough, even this client can fall behind; like
                // any client it then resumes from its last seq and loses nothing.
                Some(Received::Closed(Some((4008, _)))) => {
                    lagged += 1;
                    assert!(lagged <= 100, "the reading client lagged {lagged} times");
                    reader = common::TestClient::connect(&url).await;
                    reader.authenticate(&key, Some("reader")).await;
                    // Sent, not awaited: under this flood the new connection can lag
                    // again before its `attached` is read; the loop then resumes
                    // once more from the last seq it saw.
                    let mut attach = serde_json::json!({"type": "attach", "session": "default"});
                    if let Some(last) = seen.last() {
                        attach["since"] = serde_json::json!(last);
                    }
                    reader.send(attach).await;
                    continue;
                }
                other => panic!("reading client: {other:?}"),
            };
            if seen.len() % 5000 == 0 {
                peak_rss = peak_rss.max(common::rss_kib(server_pid).unwrap_or(0));
            }
            if v["type"] == "event" {
                seen.push(seq_of(&v));
                if v["event"]["type"] == "relay.turn"
                    && v["event"]["prompt_id"] == prompt_id.as_str()
                    && v["event"]["phase"] == "ended"
                {
                    if lagged > 0 {
                        println!("(the reading client itself lagged {lagged} time(s) and resumed)");
                    }
                    return (seen, peak_rss, started.elapsed().as_secs_f64());
                }
            }
        }
    });
    assert!(
        server
            .wait_log("client too slow", Duration::from_secs(60))
            .await,
        "the stalled client was marked lagging"
    );
    // Now the stalled client reads at once: what was written to its socket, then the
    // close. The server gives the close frame a short grace; a client that reads by
    // then gets 4008 with its last seq.
    let mut stalled_seen = Vec::new();
    let close = loop {
        match stalled.recv_frame(Duration::from_secs(20)).await {
            Some(Received::Frame(v)) => {
                if v["type"] == "event" {
                    stalled_seen.push(seq_of(&v));
                }
            }
            Some(Received::Closed(close)) => break close,
            None => panic!("the lagging client was not closed"),
        }
    };
    let last = *stalled_seen.last().unwrap_or(&0);
    match close {
        Some((code, reason)) => {
            assert_eq!(code, 4008);
            assert_eq!(reason, format!("lagging; last seq {last}"));
        }
        // docs/protocol.md §2.3 (lagging): when even the close frame cannot be delivered within the
        // grace period, the connection is dropped; the server says so in its log.
        None => assert!(
            server
                .wait_log("close frame not delivered", Duration::from_secs(5))
                .await,
            "dropped without a close frame, and the server did not report why"
        ),
    }
    let (reader_seen, peak_rss, flood_secs) = reading.await.expect("reader task");
    assert!(
        reader_seen.windows(2).all(|w| w[1] == w[0] + 1),
        "the reading client missed nothing"
    );
    let head = *reader_seen.last().unwrap();
    assert!(last < head, "it was really behind");
    let mut again = server.client(&fx.owner2, Some("stalled")).await;
    again.attach("default", Some(last)).await;
    while stalled_seen.last().copied().unwrap_or(0) < head {
        let v = again.recv().await;
        if v["type"] == "event" {
            stalled_seen.push(seq_of(&v));
        }
    }
    assert_exact(&stalled_seen, head);
    let rss_after = common::rss_kib(server.pid()).unwrap_or(0);
    println!(
        "lagging test: {} events in {flood_secs:.2} s; server RSS {} KiB before, peak {} KiB, after {} KiB",
        reader_seen.len(),
        rss_before,
        peak_rss,
        rss_after
    );
}

// Two worker threads, so the 200 test clients are not the bottleneck being measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_200_clients_receive_a_1000_event_burst_in_order() {
    let _heavy = HEAVY.lock().await;
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&["--journal-fsync", "never"]));
    let mut driver = server.client(&fx.owner, Some("driver")).await;
    let head = driver.attach("default", None).await["head"]
        .as_u64()
        .unwrap();
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(200);
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    for i in 0..200 {
        let mut c = server.client(&fx.owner2, Some(&format!("load{i}"))).await;
        let ready_tx = ready_tx.clone();
        let attached = c.request(json!({"type": "attach", "tail": 0}), "a").await;
        let start = attached["head"].as_u64().unwrap();
        tasks.push(tokio::spawn(async move {
            let _ = ready_tx.send(()).await;
            let mut got: Vec<(u64, Instant)> = Vec::with_capacity(1100);
            loop {
                match c.recv_frame(Duration::from_secs(60)).await {
                    Some(Received::Frame(v)) if v["type"] == "event" => {
                        got.push((seq_of(&v), Instant::now()));
                        if v["event"]["type"] == "relay.turn" && v["event"]["phase"] == "ended" {
                            return (start, got);
                        }
                    }
                    Some(Received::Frame(_)) => {}
                    other => panic!("client {i}: {other:?}"),
                }
            }
        }));
    }
    drop(ready_tx);
    for _ in 0..200 {
        ready_rx.recv().await;
    }
    drop(go);
    let started = Instant::now();
    driver.prompt("flood 1000").await;
    let mut first_seen: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut all = Vec::new();
    for t in tasks {
        let (start, got) = t.await.expect("client task");
        let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "in order, no gap"
        );
        assert_eq!(seqs.first().copied(), Some(start + 1), "from the head on");
        assert!(seqs.len() >= 1000);
        for (s, t) in &got {
            first_seen
                .entry(*s)
                .and_modify(|f| *f = (*f).min(*t))
                .or_insert(*t);
        }
        all.push(got);
    }
    let elapsed = started.elapsed();
    let mut spread: Vec<f64> = all
        .iter()
        .flat_map(|got| {
            got.iter()
                .map(|(s, t)| (*t - first_seen[s]).as_secs_f64() * 1000.0)
        })
        .collect();
    spread.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| spread[((spread.len() as f64 - 1.0) * p) as usize];
    let delivered: usize = all.iter().map(|g| g.len()).sum();
    // Clients that attached while the agent was still starting also saw its startup
    // events: compare from the first seq every client was attached for.
    let common_start = all
        .iter()
        .filter_map(|g| g.first().map(|(s, _)| *s))
        .max()
        .unwrap_or(0);
    let lens: Vec<usize> = all
        .iter()
        .map(|g| g.iter().filter(|(s, _)| *s >= common_start).count())
        .collect();
    assert!(lens[0] >= 1000, "the burst reached everyone: {}", lens[0]);
    assert!(
        lens.iter().all(|l| *l == lens[0]),
        "every client got the same number of events"
    );
    println!(
        "load: 200 clients x {} events = {delivered} deliveries in {:.2} s ({:.0} events/s delivered); \
         receive-time spread across the test clients p50 {:.2} ms, p99 {:.2} ms (head before {head})",
        lens[0],
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
    );
    let (_, _, metrics) = server.http_get("/metrics").await;
    let q = |p: f64| histogram_quantile(&metrics, "ccrelay_fanout_latency_seconds", p) * 1000.0;
    println!(
        "load: server fan-out latency (agent line read -> frame written to a client socket) p50 <= {:.2} ms, p99 <= {:.2} ms",
        q(0.50),
        q(0.99)
    );
}

/// Upper bound of the bucket holding quantile `p` of a histogram in exposition text.
fn histogram_quantile(text: &str, family: &str, p: f64) -> f64 {
    let prefix = format!("{family}_bucket{{le=\"");
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last().map(|(_, c)| *c).unwrap_or(0.0);
    buckets
        .iter()
        .find(|(_, c)| *c >= total * p)
        .map(|(le, _)| *le)
        .unwrap_or(f64::NAN)
}

/// Read until the session reports `idle` (attach replays the state history first).
async fn wait_idle(c: &mut TestClient) {
    c.recv_until("idle", |v| {
        v["type"] == "event" && v["event"]["type"] == "relay.state" && v["event"]["state"] == "idle"
    })
    .await;
}

async fn expect_presence(c: &mut TestClient, devices: &[&str]) -> Value {
    let (p, _) = c.recv_until("presence", |v| v["type"] == "presence").await;
    let mut got: Vec<&str> = p["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["device"].as_str().unwrap_or(""))
        .collect();
    got.sort_unstable();
    let mut want = devices.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "{p}");
    p
}

#[tokio::test]
async fn session_list_detach_presence_and_clients() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let mut a = server.client(&fx.owner, Some("laptop")).await;
    let list = a.request(json!({"type": "session.list"}), "s").await;
    assert_eq!(list["sessions"][0]["session"], "default");
    assert_eq!(list["sessions"][0]["clients"], 0);
    assert!(list["sessions"][0]["head"].is_u64());
    let attached = a.attach("default", None).await;
    assert_eq!(attached["clients"].as_array().unwrap().len(), 1);
    assert_eq!(attached["clients"][0]["client_id"], a.client_id.as_str());
    assert_eq!(
        attached["clients"][0]["fingerprint"],
        fx.owner.fingerprint.as_str()
    );
    assert_eq!(attached["clients"][0]["comment"], "owner@test");
    assert_eq!(attached["clients"][0]["device"], "laptop");
    assert_eq!(attached["clients"][0]["role"], "owner");
    expect_presence(&mut a, &["laptop"]).await;

    let mut v = server.client(&fx.viewer, None).await;
    let attached = v.attach("default", None).await;
    assert_eq!(attached["clients"].as_array().unwrap().len(), 2);
    let me = attached["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["role"] == "viewer")
        .unwrap()
        .clone();
    assert!(
        me.get("device").is_none(),
        "no device when none was given: {me}"
    );
    expect_presence(&mut a, &["laptop", ""]).await;
    expect_presence(&mut v, &["laptop", ""]).await;
    let list = a.request(json!({"type": "session.list"}), "s2").await;
    assert_eq!(list["sessions"][0]["clients"], 2);

    let detached = v.request(json!({"type": "detach"}), "d").await;
    assert_eq!(
        detached,
        json!({"type": "detached", "id": "d", "session": "default"})
    );
    expect_presence(&mut a, &["laptop"]).await;
    // After detach the viewer gets no more events or presence (frames that arrived
    // before the `detached` reply were still its to receive).
    v.discard_backlog();
    a.prompt("hello").await;
    // `session.changed` goes to every authenticated connection (docs/protocol.md
    // §4.10), attached or not; events and presence do not.
    let quiet_until = Instant::now() + Duration::from_millis(500);
    while let Some(frame) = v
        .recv_frame(quiet_until.saturating_duration_since(Instant::now()))
        .await
    {
        assert!(
            matches!(&frame, Received::Frame(f) if f["type"] == "session.changed"),
            "detached client got {frame:?}"
        );
    }

    let mut b = server.client(&fx.owner2, Some("phone")).await;
    b.attach("default", None).await;
    expect_presence(&mut a, &["laptop", "phone"]).await;
    drop(b);
    expect_presence(&mut a, &["laptop"]).await;
}

#[tokio::test]
async fn tail_and_since_beyond_head() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let mut a = server.client(&fx.owner, None).await;
    a.attach("default", None).await;
    let ok = a.prompt("hello").await;
    a.wait_turn(ok["prompt_id"].as_str().unwrap(), &["ended"])
        .await;
    let mut t = server.client(&fx.owner2, None).await;
    let attached = t.request(json!({"type": "attach", "tail": 3}), "t").await;
    let head = attached["head"].as_u64().unwrap();
    assert_eq!(attached["replay_from"].as_u64().unwrap(), head - 2);
    assert_eq!(attached["truncated"], false);
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let (e, _) = t
            .recv_until("replayed event", |v| v["type"] == "event")
            .await;
        seqs.push(seq_of(&e));
    }
    assert_eq!(seqs, vec![head - 2, head - 1, head]);
    let mut z = server.client(&fx.owner2, None).await;
    let zero = z.request(json!({"type": "attach", "tail": 0}), "z").await;
    assert_eq!(zero["replay_from"].as_u64().unwrap(), head + 1);
    let mut f = server.client(&fx.owner2, None).await;
    let future = f
        .request(json!({"type": "attach", "since": head + 100}), "f")
        .await;
    assert_eq!(
        future["truncated"], true,
        "since beyond head: the client must rebuild"
    );
    assert_eq!(future["replay_from"], 1);
}

#[tokio::test]
async fn first_answer_wins_and_others_are_told() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let mut a = server.client(&fx.owner, Some("laptop")).await;
    let mut b = server.client(&fx.owner2, Some("phone")).await;
    let mut v = server.client(&fx.viewer, Some("tablet")).await;
    for c in [&mut a, &mut b, &mut v] {
        c.attach("default", None).await;
    }
    let marker = fx.workdir().join("ran-once");
    let ok = a
        .prompt(&format!("please run-bash echo x >> {}", marker.display()))
        .await;
    let prompt_id = ok["prompt_id"].as_str().unwrap().to_string();
    let mut request_id = String::new();
    for c in [&mut a, &mut b, &mut v] {
        let (req, _) = c.recv_event("control_request").await;
        assert_eq!(req["event"]["request"]["subtype"], "can_use_tool");
        assert_eq!(req["event"]["request"]["tool_name"], "Bash");
        request_id = req["event"]["request_id"].as_str().unwrap().to_string();
        let (state, _) = c
            .recv_until("awaiting_permission", |e| {
                e["event"]["type"] == "relay.state"
            })
            .await;
        assert_eq!(state["event"]["state"], "awaiting_permission");
    }
    // A late joiner sees the request as pending.
    let mut late = server.client(&fx.owner, Some("late")).await;
    let attached = late.attach("default", None).await;
    assert_eq!(attached["pending"][0]["request_id"], request_id.as_str());
    assert_eq!(attached["state"], "awaiting_permission");
    // A wrong answer is refused and the request stays pending.
    let bad = b
        .request(
            json!({"type": "respond", "request_id": request_id, "response": {"behavior": "maybe"}}),
            "bad",
        )
        .await;
    assert_eq!(bad["code"], "bad_message");
    let forbidden = v
        .request(
            json!({"type": "respond", "request_id": request_id, "response": {"behavior": "allow"}}),
            "v",
        )
        .await;
    assert_eq!(forbidden["code"], "forbidden");
    let won = b
        .request(
            json!({"type": "respond", "request_id": request_id, "response": {"behavior": "allow"}}),
            "win",
        )
        .await;
    assert_eq!(won, json!({"type": "ok", "id": "win"}));
    let winner = b.client_id.clone();
    for c in [&mut a, &mut b, &mut v] {
        let (resolved, _) = c.recv_event("relay.resolved").await;
        assert_eq!(resolved["event"]["request_id"], request_id.as_str());
        assert_eq!(resolved["event"]["client_id"], winner.as_str());
        assert_eq!(resolved["event"]["response"]["behavior"], "allow");
    }
    let late_answer = a
        .request(
            json!({"type": "respond", "request_id": request_id, "response": {"behavior": "deny"}}),
            "late",
        )
        .await;
    assert_eq!(late_answer["code"], "not_pending");
    a.wait_turn(&prompt_id, &["ended"]).await;
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "x\n",
        "the tool ran exactly once"
    );
    let audit = common::audit_log_when(&fx.data_dir(), |text| {
        text.contains("\"kind\":\"resolved\"")
    });
    let resolved: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &Value| r["kind"] == "resolved")
        .collect();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0]["device"], "phone");
    assert_eq!(resolved[0]["decision"], "allow");
    assert_eq!(resolved[0]["fingerprint"], fx.owner2.fingerprint.as_str());
}

#[tokio::test]
async fn permission_timeout_denies_for_everyone() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&["--permission-timeout", "2"]));
    let mut a = server.client(&fx.owner, None).await;
    let mut b = server.client(&fx.owner2, None).await;
    a.attach("default", None).await;
    b.attach("default", None).await;
    let marker = fx.workdir().join("never");
    let ok = a
        .prompt(&format!("please run-bash touch {}", marker.display()))
        .await;
    let (req, _) = a.recv_event("control_request").await;
    let asked = Instant::now();
    for c in [&mut a, &mut b] {
        let (resolved, _) = c.recv_event("relay.resolved").await;
        assert_eq!(resolved["event"]["client_id"], "relay");
        assert_eq!(resolved["event"]["request_id"], req["event"]["request_id"]);
        assert_eq!(
            resolved["event"]["response"],
            json!({"behavior": "deny", "message": "no answer within 2 s"})
        );
    }
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "denied after {waited:?}"
    );
    a.wait_turn(ok["prompt_id"].as_str().unwrap(), &["ended"])
        .await;
    assert!(!marker.exists(), "the denied tool did not run");
}

#[tokio::test]
async fn a_prompt_resent_with_its_key_runs_once() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let mut a = server.client(&fx.owner, Some("phone")).await;
    a.attach("default", None).await;
    wait_idle(&mut a).await;
    let first = a
        .request(
            json!({"type": "prompt", "content": "hello once", "key": "k-123"}),
            "p1",
        )
        .await;
    let prompt_id = first["prompt_id"].as_str().unwrap().to_string();
    assert_eq!(first["queued"], false);
    let (ev, _) = a.recv_event("relay.prompt").await;
    assert_eq!(ev["event"]["key"], "k-123");
    a.wait_turn(&prompt_id, &["ended"]).await;
    drop(a);
    // Reconnect and resend: acknowledged as a duplicate, not run again.
    let mut again = server.client(&fx.owner, Some("phone")).await;
    again.attach("default", None).await;
    let dup = again
        .request(
            json!({"type": "prompt", "content": "hello once", "key": "k-123"}),
            "p2",
        )
        .await;
    assert_eq!(
        dup,
        json!({"type": "ok", "id": "p2", "prompt_id": prompt_id, "duplicate": true})
    );
    // Another key holder with the same key is not a duplicate.
    let mut other = server.client(&fx.owner2, None).await;
    other.attach("default", None).await;
    let fresh = other
        .request(
            json!({"type": "prompt", "content": "hello", "key": "k-123"}),
            "p3",
        )
        .await;
    assert_ne!(fresh["prompt_id"], prompt_id.as_str());
    assert!(fresh.get("duplicate").is_none());
    other
        .wait_turn(fresh["prompt_id"].as_str().unwrap(), &["ended"])
        .await;
    let audit = common::audit_log_when(&fx.data_dir(), |text| {
        text.lines()
            .filter(|l| l.contains("\"kind\":\"prompt\""))
            .count()
            >= 2
    });
    assert_eq!(
        audit
            .lines()
            .filter(|l| l.contains("\"kind\":\"prompt\""))
            .count(),
        2,
        "the agent got two prompts, not three"
    );
    // The key survives a server restart.
    drop(again);
    drop(other);
    drop(server);
    let server = fx.start(ServerOptions::default());
    let mut c = server.client(&fx.owner, Some("phone")).await;
    c.attach("default", None).await;
    let dup = c
        .request(
            json!({"type": "prompt", "content": "hello once", "key": "k-123"}),
            "p4",
        )
        .await;
    assert_eq!(dup["duplicate"], true);
    assert_eq!(dup["prompt_id"], prompt_id.as_str());
}

#[tokio::test]
async fn history_survives_a_restart_and_queued_prompts_are_aborted() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let mut a = server.client(&fx.owner, None).await;
    a.attach("default", None).await;
    let first = a.prompt("hello one").await;
    let (end, _) = a
        .wait_turn(first["prompt_id"].as_str().unwrap(), &["ended"])
        .await;
    let last_seen = seq_of(&end);
    let slow = a.prompt("slow").await;
    let queued = a.prompt("hello queued").await;
    assert_eq!(queued["queued"], true);
    let _ = a.recv_event("stream_event").await;
    let mut server = server;
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        server
            .wait_exit(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
    drop(server);
    let server = fx.start(ServerOptions::default());
    let mut b = server.client(&fx.owner, None).await;
    let attached = b.attach("default", Some(last_seen)).await;
    assert_eq!(attached["replay_from"], last_seen + 1);
    assert_eq!(attached["truncated"], false);
    let mut seen = vec![];
    let (aborted, before) = b
        .recv_until("queued prompt aborted", |v| {
            v["type"] == "event"
                && v["event"]["type"] == "relay.turn"
                && v["event"]["prompt_id"] == queued["prompt_id"]
                && v["event"]["phase"] == "aborted"
        })
        .await;
    seen.extend(events(&before).iter().map(seq_of));
    seen.push(seq_of(&aborted));
    assert_eq!(aborted["event"]["detail"], "server_stopped");
    assert_eq!(seen[0], last_seen + 1);
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");
    let slow_end: Vec<&Value> = before
        .iter()
        .filter(|v| {
            v["event"]["type"] == "relay.turn" && v["event"]["prompt_id"] == slow["prompt_id"]
        })
        .collect();
    assert!(
        slow_end.iter().any(|v| v["event"]["phase"] == "aborted"),
        "the running prompt was aborted when the server stopped"
    );
    // The conversation continues: the mock agent resumed it and remembers the first prompt.
    let recall = b.prompt("recall").await;
    let (end, skipped) = b
        .wait_turn(recall["prompt_id"].as_str().unwrap(), &["ended"])
        .await;
    assert!(seq_of(&end) > seen[seen.len() - 1]);
    let text: String = skipped
        .iter()
        .filter(|v| v["event"]["type"] == "result")
        .map(|v| v["event"]["result"].to_string())
        .collect();
    assert!(
        text.contains("hello one"),
        "resumed conversation remembers: {text}"
    );
}

#[tokio::test]
async fn unknown_session_and_viewer_restrictions() {
    let fx = Fixture::new();
    let server: TestServer = fx.start(ServerOptions::default());
    let mut v = server.client(&fx.viewer, None).await;
    v.attach("default", None).await;
    for (req, id) in [
        (json!({"type": "prompt", "content": "hi"}), "1"),
        (
            json!({"type": "respond", "request_id": "x", "response": {"behavior": "allow"}}),
            "2",
        ),
        (json!({"type": "interrupt"}), "3"),
        (json!({"type": "session.restart"}), "4"),
    ] {
        let reply = v.request(req, id).await;
        assert_eq!(reply["code"], "forbidden", "{reply}");
    }
    let reply = v
        .request(json!({"type": "attach", "session": "elsewhere"}), "5")
        .await;
    assert_eq!(reply["code"], "no_such_session");
    let mut o = server.client(&fx.owner, None).await;
    let reply = o.request(json!({"type": "interrupt"}), "6").await;
    assert_eq!(reply["code"], "not_attached");
    let reply = o
        .request(
            json!({"type": "prompt", "content": "x".repeat(2 << 20)}),
            "7",
        )
        .await;
    assert_eq!(reply["code"], "too_large");
}

#[tokio::test]
async fn kill_9_mid_flood_then_replay_from_the_journal() {
    let _heavy = HEAVY.lock().await;
    let fx = Fixture::new();
    // A tiny in-memory tail: after the restart, replays must come from the journal files.
    let opts = || {
        ServerOptions::default().args(&["--tail-events", "100", "--journal-segment-bytes", "65536"])
    };
    let mut server = fx.start(opts());
    let mut a = server.client(&fx.owner, None).await;
    a.attach("default", None).await;
    let (idle, startup) = a
        .recv_until("idle", |v| {
            v["type"] == "event"
                && v["event"]["type"] == "relay.state"
                && v["event"]["state"] == "idle"
        })
        .await;
    let mut seen: Vec<u64> = events(&startup).iter().map(seq_of).collect();
    seen.push(seq_of(&idle));
    let before = seq_of(&idle);
    a.prompt("flood 20000").await;
    while seen.last().copied().unwrap_or(0) < before + 3000 {
        let v = match a.recv_frame(common::scaled(common::FRAME_TIMEOUT)).await {
            Some(Received::Frame(v)) => v,
            // A loaded machine can leave this reader more than a client queue behind
            // the flood; like any client it then resumes from its last seq.
            Some(Received::Closed(Some((4008, _)))) => {
                println!(
                    "(the reading client lagged and resumed from {seen_last:?})",
                    seen_last = seen.last()
                );
                a = server.client(&fx.owner, None).await;
                a.attach("default", seen.last().copied()).await;
                continue;
            }
            other => panic!("reading client: {other:?}"),
        };
        if v["type"] == "event" {
            seen.push(seq_of(&v));
        }
    }
    server.signal(nix::sys::signal::Signal::SIGKILL);
    server.wait_exit(Duration::from_secs(10)).expect("killed");
    // Drain what was already on the wire.
    while let Some(Received::Frame(v)) = a.recv_frame(Duration::from_millis(500)).await {
        if v["type"] == "event" {
            seen.push(seq_of(&v));
        }
    }
    drop(server);
    let last = *seen.last().unwrap();
    assert_exact(&seen, last);

    let server = fx.start(opts());
    let mut b = server.client(&fx.owner, None).await;
    let attached = b.attach("default", Some(last)).await;
    let head = attached["head"].as_u64().unwrap();
    assert!(
        head >= last,
        "the server's head ({head}) is never behind what a client saw ({last})"
    );
    assert_eq!(attached["truncated"], false);
    let mut after: Vec<u64> = Vec::new();
    while after.last().copied().unwrap_or(last) < head {
        let v = b.recv().await;
        if v["type"] == "event" {
            after.push(seq_of(&v));
        }
    }
    let mut all = seen.clone();
    all.extend(&after);
    assert_exact(&all, head);
    // New events continue upward from the restored head.
    // (Not the word "crash": the mock agent would act it out.)
    let ok = b.prompt("hello again after the restart").await;
    let (end, _) = b
        .wait_turn(ok["prompt_id"].as_str().unwrap(), &["ended"])
        .await;
    assert!(seq_of(&end) > head);
    // A full replay from the start also comes back intact from the journal.
    let mut c = server.client(&fx.owner2, None).await;
    let full = c.attach("default", Some(0)).await;
    assert_eq!(full["replay_from"], 1);
    let mut replayed = Vec::new();
    let target = seq_of(&end);
    while replayed.last().copied().unwrap_or(0) < target {
        let v = c.recv().await;
        if v["type"] == "event" {
            replayed.push(seq_of(&v));
        }
    }
    assert_exact(&replayed, target);
}

/// The journal is written on its own thread: while a write is held there (test
/// hook), the session still answers requests, and the events of the held write
/// reach no client until it is done (docs/protocol.md §2.1: journaled before sent).
#[tokio::test]
async fn a_held_journal_write_does_not_stop_the_session_answering() {
    let fx = Fixture::new();
    let hold = fx.path().join("hold-journal-writes");
    let server = fx.start(ServerOptions::default().env(
        "CCRELAY_FAULT_INJECT",
        &format!("journal-hold-file:{}", hold.display()),
    ));
    let mut a = server.client(&fx.owner, Some("laptop")).await;
    a.attach("default", None).await;
    wait_idle(&mut a).await;
    std::fs::write(&hold, b"").unwrap();
    // The prompt's events go to the held writer; its `ok` is answered all the same.
    a.send(json!({"type": "prompt", "content": "while held", "id": "p1"}))
        .await;
    let (ok, mut early) = a.recv_until("prompt ok", |v| v["id"] == "p1").await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let prompt_id = ok["prompt_id"].as_str().unwrap().to_string();
    // So is a request after it, handled by the same session actor.
    a.send(
        json!({"type": "respond", "id": "r1", "request_id": "no-such-request",
                  "response": {"behavior": "allow", "updatedInput": {}}}),
    )
    .await;
    let (not_pending, skipped) = a.recv_until("respond error", |v| v["id"] == "r1").await;
    assert_eq!(not_pending["type"], "error", "{not_pending}");
    assert_eq!(not_pending["code"], "not_pending", "{not_pending}");
    // Nothing of the held write was sent meanwhile.
    early.extend(skipped);
    assert!(
        early.iter().all(|e| e["event"]["type"] != "relay.prompt"),
        "an event was sent before its write finished: {early:?}"
    );
    std::fs::remove_file(&hold).unwrap();
    let (ev, _) = a.recv_event("relay.prompt").await;
    assert_eq!(ev["event"]["prompt_id"], prompt_id.as_str());
    a.wait_turn(&prompt_id, &["ended"]).await;
}
