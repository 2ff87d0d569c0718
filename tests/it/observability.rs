//! Observability and graceful degradation: `/metrics` (parsed with a real
//! Prometheus parser), the inbound rate limit, surviving file-descriptor
//! exhaustion, structured JSON logs with connection context, the example
//! dashboard, fatal faults, and the memory guard. Real binary, real sockets.

use crate::common;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Fixture, Received, ServerOptions, TestClient, TestServer, eventually, http_request};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

fn upgrade_request(addr: SocketAddr, extra: &str) -> String {
    format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// One `/metrics` scrape: family types from the `# TYPE` lines, samples from
/// `prometheus-parse`.
struct Scrape {
    /// Family name → type, as exposed (`counter`, `gauge`, `histogram`, ...).
    types: HashMap<String, String>,
    samples: Vec<prometheus_parse::Sample>,
    text: String,
}

/// GET /metrics (no `Accept`, so the classic Prometheus text format 0.0.4) and
/// parse it with prometheus-parse, as served. Family types are keyed by family
/// name (a counter's `# TYPE` line names its `_total` sample in this format).
/// tests/it/metrics_format.rs checks the OpenMetrics variant and the negotiation.
async fn scrape(server: &TestServer) -> Scrape {
    let (status, head, body) = server.http_get("/metrics").await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        !body.contains("# EOF"),
        "no OpenMetrics EOF in the classic format"
    );
    let mut types = HashMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                panic!("bad TYPE line {line:?}");
            };
            let family = if kind == "counter" {
                name.strip_suffix("_total")
                    .unwrap_or_else(|| panic!("counter {name} lacks _total"))
            } else {
                name
            };
            types.insert(family.to_string(), kind.to_string());
        }
    }
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("the exposition parses");
    Scrape {
        types,
        samples: parsed.samples,
        text: body,
    }
}

impl Scrape {
    /// Sum of the samples named `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                other => panic!("{name} is not a plain value: {other:?}"),
            })
            .sum()
    }

    /// Whether a sample named `name` with these labels exists.
    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.samples
            .iter()
            .any(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
    }

    /// Observations of a histogram (its `+Inf` bucket, as parsed).
    fn observations(&self, family: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.metric == family)
            .map(|s| match &s.value {
                prometheus_parse::Value::Histogram(buckets) => buckets
                    .iter()
                    .filter(|b| b.less_than.is_infinite())
                    .map(|b| b.count)
                    .sum::<f64>(),
                other => panic!("{family} is not a histogram: {other:?}"),
            })
            .sum()
    }

    /// Every metric name a PromQL expression may use: `<counter>_total`, gauges
    /// and unknowns by family name, `<histogram>_bucket/_sum/_count`.
    fn queryable_names(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (family, kind) in &self.types {
            match kind.as_str() {
                "counter" => {
                    out.insert(format!("{family}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        out.insert(format!("{family}{suffix}"));
                    }
                }
                _ => {
                    out.insert(family.clone());
                }
            }
        }
        out
    }
}

/// Wait until /readyz is 200 and the agent runs; returns the /healthz body.
async fn wait_ready(server: &TestServer) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, _) = server.http_get("/readyz").await;
        let (_, _, body) = server.http_get("/healthz").await;
        let health: Value = serde_json::from_str(&body).expect("healthz is JSON");
        let session = &health["sessions"]["default"];
        if status == 200 && session["agent_pid"].is_u64() && session["state"] == "idle" {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "server never became ready: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every family of the issue, with its exposed type.
const FAMILIES: &[(&str, &str)] = &[
    ("ccrelay_connections_open", "gauge"),
    ("ccrelay_connections_accepted", "counter"),
    ("ccrelay_connections_refused", "counter"),
    ("ccrelay_connections_closed", "counter"),
    ("ccrelay_auth_attempts", "counter"),
    ("ccrelay_clients_attached", "gauge"),
    ("ccrelay_frames_in", "counter"),
    ("ccrelay_frames_out", "counter"),
    ("ccrelay_sent_bytes", "counter"),
    ("ccrelay_errors_sent", "counter"),
    ("ccrelay_rate_limited_frames", "counter"),
    ("ccrelay_events_appended", "counter"),
    ("ccrelay_journal_bytes", "gauge"),
    ("ccrelay_journal_fsync_seconds", "histogram"),
    ("ccrelay_replays", "counter"),
    ("ccrelay_replays_truncated", "counter"),
    ("ccrelay_clients_lagged", "counter"),
    ("ccrelay_client_queue_depth", "histogram"),
    ("ccrelay_fanout_latency_seconds", "histogram"),
    ("ccrelay_agent_restarts", "counter"),
    ("ccrelay_agent_up", "gauge"),
    ("ccrelay_pending_requests", "gauge"),
    ("ccrelay_prompts", "counter"),
    ("ccrelay_queued_prompts", "gauge"),
    ("ccrelay_memory_shed", "counter"),
    ("ccrelay_memory_buffered_bytes", "gauge"),
    ("ccrelay_memory_limit_bytes", "gauge"),
    ("ccrelay_accept_errors", "counter"),
    ("ccrelay_auth_throttle_addresses", "gauge"),
    ("ccrelay_process_resident_memory_bytes", "gauge"),
    ("ccrelay_process_open_fds", "gauge"),
    ("ccrelay_process_max_fds", "gauge"),
    ("ccrelay_process_threads", "gauge"),
    ("ccrelay_process_cpu_seconds", "counter"),
];

#[tokio::test]
async fn metrics_families_exist_and_counters_move() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&[
        "--client-queue",
        "1024",
        "--auth-failures-per-min",
        "10",
    ]));
    wait_ready(&server).await;
    let m0 = scrape(&server).await;
    for (family, kind) in FAMILIES {
        assert_eq!(
            m0.types.get(*family).map(String::as_str),
            Some(*kind),
            "family {family} missing or mistyped in:\n{}",
            m0.text
        );
    }
    for family in m0.types.keys() {
        assert!(family.starts_with("ccrelay_"), "{family} lacks the prefix");
    }
    assert!(m0.value("ccrelay_process_resident_memory_bytes", &[]) > 0.0);
    assert!(m0.value("ccrelay_process_open_fds", &[]) > 0.0);
    assert!(m0.value("ccrelay_memory_limit_bytes", &[]) >= 1024.0 * 1024.0 * 1024.0);
    assert_eq!(m0.value("ccrelay_agent_up", &[("session", "default")]), 1.0);

    // Connect and authenticate: good, then bad (a key nobody listed).
    let mut owner = server.client(&fx.owner, Some("dev")).await;
    let mut bad = server.connect().await;
    let answer = bad.authenticate(&fx.stranger, None).await;
    assert_eq!(answer["code"], "auth_failed", "{answer}");
    let (code, _, _) = bad.expect_close(Duration::from_secs(10)).await;
    assert_eq!(code, Some(1008));

    let m1 = scrape(&server).await;
    let ok = [("result", "ok"), ("key_type", "ssh-ed25519")];
    let failed = [("result", "failed"), ("key_type", "ssh-ed25519")];
    assert_eq!(m1.value("ccrelay_auth_attempts_total", &ok), 1.0);
    assert_eq!(
        m1.value("ccrelay_auth_attempts_total", &failed),
        1.0,
        "a failed attempt whose signature parsed carries its real key type"
    );
    assert_eq!(
        m1.value("ccrelay_errors_sent_total", &[("code", "auth_failed")]),
        1.0
    );
    assert!(
        m1.value("ccrelay_connections_accepted_total", &[])
            >= m0.value("ccrelay_connections_accepted_total", &[]) + 2.0
    );
    assert_eq!(
        m1.value("ccrelay_connections_open", &[("state", "authenticated")]),
        1.0
    );

    // Prompt: a short streamed turn.
    owner.attach("default", None).await;
    let ok = owner.prompt("hello metrics").await;
    let prompt_id = ok["prompt_id"].as_str().unwrap().to_string();
    owner.wait_turn(&prompt_id, &["ended"]).await;
    let m2 = scrape(&server).await;
    let default = [("session", "default")];
    assert!(
        m2.value("ccrelay_events_appended_total", &default)
            > m1.value("ccrelay_events_appended_total", &default)
    );
    assert_eq!(m2.value("ccrelay_prompts_total", &default), 1.0);
    assert_eq!(m2.value("ccrelay_clients_attached", &default), 1.0);
    assert_eq!(m2.value("ccrelay_replays_total", &[]), 1.0);
    assert_eq!(
        m2.value("ccrelay_frames_in_total", &[("type", "prompt")]),
        1.0
    );
    assert_eq!(
        m2.value("ccrelay_frames_in_total", &[("type", "attach")]),
        1.0
    );
    assert!(m2.value("ccrelay_frames_out_total", &[("type", "event")]) >= 3.0);
    assert!(m2.value("ccrelay_sent_bytes_total", &[]) > m1.value("ccrelay_sent_bytes_total", &[]));
    assert!(m2.value("ccrelay_journal_bytes", &default) > 0.0);
    assert!(m2.observations("ccrelay_journal_fsync_seconds") > 0.0);
    assert!(m2.observations("ccrelay_fanout_latency_seconds") > 0.0);
    assert!(m2.observations("ccrelay_client_queue_depth") > 0.0);
    assert!(m2.has("ccrelay_fanout_latency_seconds_sum", &[]));

    // A flood streams while nobody reads: with --client-queue 64 (less than one
    // batch of agent lines) the attached clients are closed for lagging.
    let mut lagger = server.client(&fx.owner2, Some("slow")).await;
    lagger.attach("default", None).await;
    owner.prompt("flood 50000").await;
    let mut lagged = None;
    for _ in 0..600 {
        let m = scrape(&server).await;
        if m.value("ccrelay_clients_lagged_total", &[]) >= 2.0
            && m.value("ccrelay_connections_closed_total", &[("reason", "lagging")]) >= 2.0
        {
            lagged = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m3 = lagged.expect("both non-reading clients were closed for lagging");
    assert!(
        m3.observations("ccrelay_client_queue_depth")
            > m2.observations("ccrelay_client_queue_depth")
    );
    assert_eq!(m3.value("ccrelay_clients_attached", &default), 0.0);
    for c in [&mut owner, &mut lagger] {
        let (code, reason, _) = c.expect_close(Duration::from_secs(30)).await;
        if let Some(code) = code {
            assert_eq!(code, 4008, "{reason}");
            assert!(reason.starts_with("lagging; last seq "), "{reason}");
        }
    }

    // Disconnect: the open gauge goes back down, closes are counted.
    let closed_before = m3.value("ccrelay_connections_closed_total", &[]);
    let extra = server.client(&fx.owner, Some("extra")).await;
    drop(extra);
    drop(owner);
    drop(lagger);
    let mut settled = None;
    for _ in 0..100 {
        let m = scrape(&server).await;
        if m.value("ccrelay_connections_open", &[]) == 0.0 {
            settled = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m4 = settled.expect("open connections went back to 0");
    assert!(m4.value("ccrelay_connections_closed_total", &[]) >= closed_before + 1.0);
    assert_eq!(m4.value("ccrelay_clients_attached", &default), 0.0);

    // Refusals by reason: origin, then the auth-failure throttle.
    let (status, _, _) = http_request(
        server.addr,
        &upgrade_request(server.addr, "Origin: https://evil.example\r\n"),
    )
    .await;
    assert_eq!(status, 403);
    let mut throttled = false;
    for _ in 0..20 {
        let (status, head, _) = http_request(server.addr, &upgrade_request(server.addr, "")).await;
        if status == 429 {
            assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
            throttled = true;
            break;
        }
        let mut c = server.connect().await;
        let _ = c.authenticate(&fx.stranger, None).await;
    }
    assert!(throttled, "repeated failures were never throttled");
    let m5 = scrape(&server).await;
    assert_eq!(
        m5.value("ccrelay_connections_refused_total", &[("reason", "origin")]),
        1.0
    );
    assert!(
        m5.value(
            "ccrelay_connections_refused_total",
            &[("reason", "throttle")]
        ) >= 1.0
    );
    assert!(m5.value("ccrelay_auth_attempts_total", &failed) >= 10.0);
}

#[tokio::test]
async fn inbound_flood_is_rate_limited_then_closed_without_hurting_others() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&["--max-frames-per-sec", "10"]));
    let mut abuser = server.client(&fx.owner, Some("abuser")).await;
    let mut other = server.client(&fx.owner2, Some("other")).await;
    let started = Instant::now();
    for i in 0..400 {
        // The server may close mid-flood; later sends may fail.
        let frame = json!({"type": "ping", "id": i}).to_string();
        if abuser.ws.send(Message::Text(frame.into())).await.is_err() {
            break;
        }
    }
    let (code, reason, frames) = abuser.expect_close(Duration::from_secs(20)).await;
    assert_eq!(code, Some(1008), "{reason}; {} frames", frames.len());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed within the abuse window"
    );
    let pongs = frames.iter().filter(|f| f["type"] == "pong").count();
    let limited = frames
        .iter()
        .filter(|f| f["type"] == "error" && f["code"] == "rate_limited")
        .count();
    assert!(
        (20..=40).contains(&pongs),
        "burst of 2x10 plus refill: {pongs} pongs"
    );
    // At most one `rate_limited` error a second reaches the flooder (§2); the
    // other refused frames are dropped without a reply.
    let elapsed_s = started.elapsed().as_secs() as usize;
    assert!(
        (1..=elapsed_s + 1).contains(&limited),
        "{limited} rate_limited errors in {elapsed_s} s"
    );

    // Another connection from the same address is unaffected.
    for i in 0..5 {
        let pong = other
            .request(json!({"type": "ping"}), &format!("p{i}"))
            .await;
        assert_eq!(pong["type"], "pong");
    }
    let m = scrape(&server).await;
    assert!(m.value("ccrelay_rate_limited_frames_total", &[]) > 200.0);
    assert_eq!(
        m.value("ccrelay_errors_sent_total", &[("code", "rate_limited")]) as usize,
        limited
    );
    assert!(
        server
            .wait_log("sustained rate-limit abuse", Duration::from_secs(2))
            .await
    );
}

#[tokio::test]
async fn file_descriptor_exhaustion_is_survived() {
    const NOFILE: u64 = 64;
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().nofile(NOFILE));
    wait_ready(&server).await;
    let before = scrape(&server).await;
    assert_eq!(before.value("ccrelay_process_max_fds", &[]), NOFILE as f64);
    let base_fds = before.value("ccrelay_process_open_fds", &[]);

    let mut client = server.client(&fx.owner, Some("survivor")).await;
    client.attach("default", None).await;

    // More connections than the server has descriptors left. The kernel completes
    // the handshakes (the backlog); the server cannot accept them all. They come
    // from 127.0.0.2 and up, 16 per address: from one address, all but 16 would
    // wait for their refusal in a few overflow places or be closed at accept,
    // and descriptors would never run out.
    let mut raw = Vec::new();
    for i in 0..(NOFILE as usize + 40) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from((
                [127, 0, 0, 2 + (i / 16) as u8],
                0,
            )))
            .unwrap();
        let mut s = socket
            .connect(server.addr)
            .await
            .expect("the kernel accepts into the backlog");
        s.write_all(upgrade_request(server.addr, "").as_bytes())
            .await
            .unwrap();
        raw.push(s);
    }
    assert!(
        server
            .wait_log(
                "cannot accept connections (out of resources)",
                Duration::from_secs(10)
            )
            .await,
        "no accept error logged; base fds were {base_fds}"
    );
    // Existing clients keep being served while the listener backs off.
    for i in 0..3 {
        let pong = client
            .request(json!({"type": "ping"}), &format!("p{i}"))
            .await;
        assert_eq!(pong["type"], "pong");
    }
    let ok = client.prompt("still here").await;
    let prompt_id = ok["prompt_id"].as_str().unwrap().to_string();
    client.wait_turn(&prompt_id, &["ended"]).await;

    // When connections close, new ones are accepted again. Until the server has
    // seen every dropped socket close, 127.0.0.1 may still hold its 16
    // unauthenticated connections: a 429 then is an answer, and we try again.
    drop(raw);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut again = loop {
        let attempt = tokio::time::timeout(Duration::from_secs(5), async {
            let mut c = TestClient::try_connect(&server.url).await.ok()?;
            let ok = c.authenticate(&fx.owner2, Some("late")).await;
            Some((c, ok))
        })
        .await;
        if let Ok(Some((c, ok))) = attempt
            && ok["type"] == "auth.ok"
        {
            break c;
        }
        assert!(Instant::now() < deadline, "the server did not accept again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        again.request(json!({"type": "ping"}), "late").await["type"],
        "pong"
    );
    assert!(
        server
            .wait_log("accepting connections again", Duration::from_secs(10))
            .await
    );
    let after = scrape(&server).await;
    assert!(after.value("ccrelay_accept_errors_total", &[("reason", "resources")]) >= 1.0);
    assert_eq!(
        client.request(json!({"type": "ping"}), "end").await["type"],
        "pong"
    );
    // One warning per episode, not one per failed accept.
    let warnings = server
        .log_json()
        .iter()
        .filter(|l| l["message"] == "cannot accept connections (out of resources); retrying with back-off, existing connections are served")
        .count();
    assert_eq!(warnings, 1, "one warning, however often the episode flaps");
}

#[tokio::test]
async fn json_logs_carry_connection_context() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    wait_ready(&server).await;
    let mut client = server.client(&fx.owner, Some("logger")).await;
    client.attach("default", None).await;
    assert_eq!(
        client.request(json!({"type": "ping"}), "p").await["type"],
        "pong"
    );
    client
        .send(json!({"type": "no.such.type", "id": "u"}))
        .await;
    let (err, _) = client.recv_until("unknown_type", |v| v["id"] == "u").await;
    assert_eq!(err["code"], "unknown_type");
    client.ws.close(None).await.unwrap();
    let _ = client.recv_frame(Duration::from_secs(5)).await;
    assert!(
        server
            .wait_log("connection closed", Duration::from_secs(5))
            .await
    );
    // A failed authentication on another connection.
    let mut bad = server.connect().await;
    let _ = bad.authenticate(&fx.stranger, None).await;
    assert!(
        server
            .wait_log("authentication failed", Duration::from_secs(5))
            .await
    );

    let raw = server.logs();
    let mut lines = Vec::new();
    for line in raw.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string() && v["message"].is_string(),
            "{v}"
        );
        lines.push(v);
    }
    // The connection that authenticated: find it by its client id.
    let authed = lines
        .iter()
        .find(|l| {
            l["message"] == "authenticated" && l["span"]["client_id"] == client.client_id.as_str()
        })
        .unwrap_or_else(|| panic!("no authenticated line for {}", client.client_id));
    let conn_id = authed["span"]["conn_id"].clone();
    assert!(conn_id.is_u64(), "{authed}");
    assert_eq!(authed["span"]["fingerprint"], fx.owner.fingerprint.as_str());
    let of_conn: Vec<&Value> = lines
        .iter()
        .filter(|l| l["span"]["name"] == "conn" && l["span"]["conn_id"] == conn_id)
        .collect();
    assert!(of_conn.len() >= 4, "{of_conn:#?}");
    let mut after_auth = false;
    for l in &of_conn {
        assert!(
            l["span"]["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{l}"
        );
        if l["message"] == "authenticated" {
            after_auth = true;
        }
        if after_auth {
            assert_eq!(l["span"]["client_id"], client.client_id.as_str(), "{l}");
            assert_eq!(
                l["span"]["fingerprint"],
                fx.owner.fingerprint.as_str(),
                "{l}"
            );
        }
    }
    for needle in ["unknown message type", "connection closed"] {
        assert!(
            of_conn.iter().any(|l| l["message"] == needle),
            "no {needle:?} line in the connection's span: {of_conn:#?}"
        );
    }
    // The failed authentication is logged once, in its connection's span, with the reason.
    let failures: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "authentication failed")
        .collect();
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert!(failures[0]["span"]["conn_id"].is_u64());
    assert!(failures[0]["span"]["client_id"].is_null());
    assert_eq!(failures[0]["reason_label"], "not_listed");
    // Session lines carry the session span.
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "client attached" && l["span"]["session"] == "default"),
        "no session span on the actor's lines"
    );
}

/// Metric names (`ccrelay_…`) used in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(found) = expr[i..].find("ccrelay_") {
        let start = i + found;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start + "ccrelay_".len();
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary && end > start + "ccrelay_".len() {
            out.push(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

#[tokio::test]
async fn dashboard_and_scrape_config_use_only_exported_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana-dashboard.json")).expect("dashboard exists"),
    )
    .expect("the dashboard is JSON");
    let scrape_config =
        std::fs::read_to_string(root.join("prometheus.yml")).expect("scrape config exists");
    assert!(scrape_config.contains("metrics_path: /metrics"));

    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    wait_ready(&server).await;
    let exported = scrape(&server).await.queryable_names();

    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    let panel_targets: usize = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .map(|p| p["targets"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(panel_targets >= 20, "{panel_targets} targets");
    let mut used = BTreeSet::new();
    for expr in exprs.iter().filter(|e| !e.starts_with("prometheus")) {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "expression without a ccrelay metric: {expr}"
        );
        used.extend(names);
    }
    used.extend(metric_names(&scrape_config));
    let unknown: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "not exported: {unknown:?}\nexported: {exported:#?}"
    );
    // The dashboard covers the families of the issue.
    for family in [
        "ccrelay_connections_open",
        "ccrelay_fanout_latency_seconds_bucket",
        "ccrelay_memory_shed_total",
        "ccrelay_agent_restarts_total",
        "ccrelay_journal_fsync_seconds_bucket",
    ] {
        assert!(used.contains(family), "dashboard lacks {family}");
    }
}

/// The `## Metrics` section of docs/operations.md (up to the next `## ` heading).
fn docs_metrics_section() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md");
    let text = std::fs::read_to_string(&path).expect("docs/operations.md exists");
    let start = text
        .find("\n## Metrics\n")
        .expect("docs/operations.md has a ## Metrics section")
        + 1;
    let rest = &text[start..];
    let end = rest[1..].find("\n## ").map_or(rest.len(), |i| i + 1);
    rest[..end].to_string()
}

/// The table row of the docs section whose first cell names `metric`.
fn docs_row<'a>(section: &'a str, metric: &str) -> Option<&'a str> {
    let quoted = format!("`{metric}`");
    section.lines().find(|line| {
        line.starts_with("| ") && line.split('|').nth(1).is_some_and(|c| c.contains(&quoted))
    })
}

/// docs/operations.md's metrics section against a real first scrape: every family
/// has a table row, every label name and value of every series is written in that
/// row (session names aside: they are the configured sessions), and every metric
/// name the section mentions (tables, alert rules, prose) is exported. Adding a
/// family or a label value without documenting it fails here.
#[tokio::test]
async fn metrics_docs_list_every_family_and_label_value() {
    let docs = docs_metrics_section();
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let scrape = scrape(&server).await;
    assert!(scrape.types.len() >= 40, "{}", scrape.text);

    let mut missing = Vec::new();
    for (family, kind) in &scrape.types {
        // Counters are documented by their sample name, as the classic format writes them.
        let name = if kind == "counter" {
            format!("{family}_total")
        } else {
            family.clone()
        };
        if docs_row(&docs, &name).is_none() {
            missing.push(format!("family {name} ({kind})"));
        }
    }
    let mut label_values = 0;
    for sample in &scrape.samples {
        let Some(row) = docs_row(&docs, &sample.metric) else {
            continue; // reported above by family
        };
        for (label, value) in sample.labels.iter() {
            if label == "session" {
                continue;
            }
            label_values += 1;
            for word in [label, value] {
                if !row.contains(&format!("`{word}`")) {
                    missing.push(format!(
                        "{}{{{label}=\"{value}\"}}: `{word}`",
                        sample.metric
                    ));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in docs/operations.md's metrics section:\n{}",
        missing.join("\n")
    );
    assert!(label_values >= 100, "only {label_values} labelled series");

    // A histogram is documented by its family name, queried by its series'.
    let mut exported = scrape.queryable_names();
    exported.extend(scrape.types.keys().cloned());
    let unknown: BTreeSet<String> = metric_names(&docs)
        .into_iter()
        .filter(|n| !exported.contains(n))
        .collect();
    assert!(
        unknown.is_empty(),
        "documented but not exported: {unknown:?}"
    );
}

/// Start a server, attach a client, cause a fault with `fault`, and check the
/// clean fatal shutdown: close 1011 to the client, no agent left, exit code 1,
/// the cause logged once.
async fn fatal_fault_shuts_down_cleanly(
    opts: ServerOptions,
    fault: impl FnOnce(&Fixture),
    cause: &str,
) {
    let fx = Fixture::new();
    let mut server = fx.start(opts);
    let health = wait_ready(&server).await;
    let agent_pid = health["sessions"]["default"]["agent_pid"].as_u64().unwrap() as i32;
    assert!(!common::processes_in_group(agent_pid).is_empty());
    let mut client = server.client(&fx.owner, Some("victim")).await;
    client.attach("default", None).await;
    fault(&fx);
    client
        .send(json!({"type": "prompt", "content": "flood 2000", "id": "boom"}))
        .await;
    let (code, reason, _) = client.expect_close(Duration::from_secs(30)).await;
    assert_eq!(code, Some(1011), "{reason}");
    assert!(reason.starts_with("server fault: "), "{reason}");
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the server exits after a fatal fault");
    assert_eq!(status.code(), Some(1), "{}", server.logs());
    assert!(
        eventually(Duration::from_secs(5), || common::processes_in_group(
            agent_pid
        )
        .is_empty())
        .await,
        "agent processes left: {:?}",
        common::processes_in_group(agent_pid)
    );
    let logs = server.log_json();
    let fatal: Vec<&Value> = logs
        .iter()
        .filter(|l| l["message"] == "fatal fault: shutting down")
        .collect();
    assert_eq!(fatal.len(), 1, "{}", server.logs());
    assert!(
        fatal[0]["cause"]
            .as_str()
            .is_some_and(|c| c.contains(cause)),
        "{}",
        fatal[0]
    );
    assert!(logs.iter().any(|l| l["message"] == "stopping the agent"));
}

#[tokio::test]
async fn injected_journal_fault_shuts_down_with_1011_and_exit_1() {
    let opts = ServerOptions::default().env("CCRELAY_FAULT_INJECT", "journal-write-after:300");
    fatal_fault_shuts_down_cleanly(opts, |_| {}, "injected write fault").await;
}

#[tokio::test]
async fn replaced_data_dir_shuts_down_with_1011_and_exit_1() {
    fatal_fault_shuts_down_cleanly(
        ServerOptions::default(),
        |fx| {
            let data = fx.data_dir();
            std::fs::rename(&data, fx.path().join("data.moved")).unwrap();
            std::fs::create_dir_all(&data).unwrap();
        },
        "disappeared",
    )
    .await;
}

async fn connect_with_small_receive_buffer(server: &TestServer) -> common::TestClient {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        server.url.as_str(),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
        None,
    )
    .await
    .expect("websocket connects");
    common::TestClient::from_ws(ws)
}

// Two workers: the knocking task must run while the reader is busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_pressure_refuses_then_sheds_the_slow_client() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&[
        "--memory-limit",
        "4194304",
        "--tail-bytes",
        "262144",
        // Frames alone never make a client lag here: only the memory guard acts.
        "--client-queue",
        "1000000",
    ]));
    wait_ready(&server).await;
    let mut reader = server.client(&fx.owner, Some("reader")).await;
    let attached = reader.attach("default", None).await;
    let mut last_seq = attached["replay_from"].as_u64().unwrap() - 1;
    // A client that stops reading. Its socket's receive buffer is pinned small
    // (loopback autotuning would otherwise let the kernel absorb the whole
    // flood), so what it does not read piles up in its queue at the server.
    let mut slow = connect_with_small_receive_buffer(&server).await;
    let ok = slow.authenticate(&fx.owner2, Some("slow")).await;
    assert_eq!(ok["type"], "auth.ok");
    slow.attach("default", None).await;

    // Knock on the door while the flood runs.
    let addr = server.addr;
    let stop = tokio_util::sync::CancellationToken::new();
    let knocker = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut refusals = Vec::new();
            // Past the flood's end, keep knocking a little: refusing outlasts the
            // pressure by the guard's hold time, and a loaded machine may have kept
            // this task from running while it peaked.
            let mut stopped_at = None;
            loop {
                if stop.is_cancelled() {
                    let since = *stopped_at.get_or_insert_with(Instant::now);
                    if !refusals.is_empty() || since.elapsed() > Duration::from_secs(3) {
                        break;
                    }
                }
                let (status, head, body) = http_request(addr, &upgrade_request(addr, "")).await;
                if status == 503 {
                    refusals.push((head, body));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            refusals
        }
    });

    reader
        .send(json!({"type": "prompt", "content": "flood 60000", "id": "flood"}))
        .await;
    // The reader gets every event, in order, without a gap, to the end of the turn.
    let mut prompt_id = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    // The guard sheds whoever holds the most queued bytes; during the burst that can
    // momentarily be this (debug-build) reader. Like any client it then reconnects
    // (refused with 503 while the pressure lasts) and resumes from its last seq.
    let mut reader_shed = 0.0;
    let mut reader_refused = 0.0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = match reader.recv_frame(left).await {
            Some(Received::Frame(v)) => v,
            Some(Received::Closed(Some((1013, _)))) => {
                reader_shed += 1.0;
                let (again, refused) =
                    reconnect_through_pressure(&server, &fx.owner, last_seq).await;
                reader = again;
                reader_refused += refused as f64;
                continue;
            }
            other => panic!("reader lost its connection or timed out: {other:?}"),
        };
        if frame["id"] == "flood" {
            prompt_id = frame["prompt_id"].as_str().map(str::to_string);
            continue;
        }
        if frame["type"] != "event" {
            continue;
        }
        let seq = frame["seq"].as_u64().unwrap();
        assert_eq!(seq, last_seq + 1, "gap or duplicate in the reader's stream");
        last_seq = seq;
        let ev = &frame["event"];
        if ev["type"] == "relay.turn"
            && ev["phase"] == "ended"
            && prompt_id.as_deref().is_some_and(|p| ev["prompt_id"] == p)
        {
            break;
        }
    }
    stop.cancel();
    let refusals = knocker.await.unwrap();

    let m = scrape(&server).await;
    assert!(
        m.value("ccrelay_memory_shed_total", &[]) >= 1.0,
        "nobody was shed; buffered: {:?}",
        m.value("ccrelay_memory_buffered_bytes", &[("kind", "queues")])
    );
    assert_eq!(m.value("ccrelay_clients_lagged_total", &[]), 0.0);
    let refused = m.value("ccrelay_connections_refused_total", &[("reason", "memory")]);
    assert_eq!(
        refused,
        refusals.len() as f64 + reader_refused,
        "every 503 is counted"
    );
    assert!(
        !refusals.is_empty(),
        "no connection attempt was refused under pressure"
    );
    for (head, body) in &refusals {
        assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "overloaded", "{body}");
    }
    let (code, reason, _) = slow.expect_close(Duration::from_secs(30)).await;
    if let Some(code) = code {
        assert_eq!(code, 1013, "{reason}");
    }
    let mut shed_closed = 0.0;
    for _ in 0..100 {
        shed_closed = scrape(&server)
            .await
            .value("ccrelay_connections_closed_total", &[("reason", "shed")]);
        if shed_closed > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        shed_closed,
        1.0 + reader_shed,
        "each shed connection is closed and counted once"
    );
    assert!(
        server
            .wait_log("memory pressure: shedding", Duration::from_secs(1))
            .await
    );
    // Pressure is gone: the buffered bytes drained and connections are accepted again.
    assert_eq!(m.value("ccrelay_memory_limit_bytes", &[]), 4194304.0);
    // After the refuse hold, connections are accepted again.
    let mut accepted = false;
    for _ in 0..200 {
        let (status, _, _) = http_request(server.addr, &upgrade_request(server.addr, "")).await;
        if status == 101 {
            accepted = true;
            break;
        }
        assert_eq!(status, 503);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted, "still refusing long after the pressure ended");
    let mut late = server.client(&fx.owner2, Some("late")).await;
    assert_eq!(
        late.request(json!({"type": "ping"}), "p").await["type"],
        "pong"
    );
    let after = scrape(&server).await;
    assert!(
        after.value("ccrelay_memory_buffered_bytes", &[("kind", "queues")]) < 1024.0 * 1024.0,
        "{}",
        after.value("ccrelay_memory_buffered_bytes", &[("kind", "queues")])
    );
    assert!(
        after.value("ccrelay_memory_buffered_bytes", &[("kind", "tails")]) <= 262144.0 + 65536.0
    );
}

#[tokio::test]
async fn metrics_listen_serves_metrics_apart_and_health_is_complete() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&["--metrics-listen", "127.0.0.1:0"]));
    let health = wait_ready(&server).await;
    for key in [
        "status",
        "version",
        "uptime_s",
        "connections",
        "memory",
        "sessions",
    ] {
        assert!(!health[key].is_null(), "healthz lacks {key}: {health}");
    }
    let session = &health["sessions"]["default"];
    for key in [
        "state",
        "head",
        "clients",
        "agent_pid",
        "agent_uptime_s",
        "restarts",
        "pending",
        "queued",
    ] {
        assert!(
            !session[key].is_null(),
            "healthz session lacks {key}: {session}"
        );
    }
    assert_eq!(health["memory"]["pressure"], "normal");
    let (status, _, body) = server.http_get("/readyz").await;
    assert_eq!(status, 200, "{body}");

    let listening = server
        .log_json()
        .into_iter()
        .find(|l| l["message"] == "listening")
        .expect("listening line logged");
    let metrics_addr: SocketAddr = listening["metrics_addr"]
        .as_str()
        .expect("metrics_addr logged")
        .parse()
        .unwrap();
    assert_ne!(metrics_addr, server.addr);
    let (status, _, body) = http_request(
        metrics_addr,
        &format!("GET /metrics HTTP/1.1\r\nHost: {metrics_addr}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        body.contains("ccrelay_connections_accepted_total"),
        "{body}"
    );
    assert!(!body.contains("# EOF"), "classic format without Accept");
    let (status, _, _) = server.http_get("/metrics").await;
    assert_eq!(
        status, 404,
        "metrics are not on the public listener when --metrics-listen is set"
    );
}

/// Reconnect the reader after it was shed: retry while the server refuses new
/// connections under memory pressure, then attach from `since`. Returns the client
/// and how many attempts were refused.
async fn reconnect_through_pressure(
    server: &common::TestServer,
    key: &common::KeyPair,
    since: u64,
) -> (common::TestClient, usize) {
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio_tungstenite::connect_async(server.url.as_str()).await {
            Ok((ws, _)) => {
                let mut c = common::TestClient::from_ws(ws);
                assert_eq!(c.authenticate(key, Some("reader")).await["type"], "auth.ok");
                let attached = c.attach("default", Some(since)).await;
                assert_eq!(attached["truncated"], false);
                return (c, refused);
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) if resp.status() == 503 => {
                refused += 1;
            }
            Err(e) => panic!("reconnecting the reader: {e}"),
        }
        assert!(Instant::now() < deadline, "the reader could not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
