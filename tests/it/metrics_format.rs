//! `/metrics` content negotiation against the real binary: the classic
//! Prometheus text format 0.0.4 by default (parsed with prometheus-parse), and
//! OpenMetrics 1.0 only when the scraper's `Accept` asks for it (as Prometheus
//! itself does). The classic one is also checked with `promtool check metrics`
//! (Debian package `prometheus`, installed by scripts/test-deps): without it the
//! test says SKIPPED, or fails under `CCRELAY_REQUIRE_ALL=1` (tests/it/common/require.rs).

use crate::common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Fixture, ServerOptions, TestServer, http_request};

/// GET /metrics with an optional Accept header: (content-type, body).
async fn get_metrics(server: &TestServer, accept: Option<&str>) -> (String, String) {
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    let (status, head, body) = http_request(
        server.addr,
        &format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\n{accept}Connection: close\r\n\r\n",
            server.addr
        ),
    )
    .await;
    assert_eq!(status, 200, "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .expect("content-type header");
    assert!(
        head.to_ascii_lowercase().contains("vary: accept"),
        "caches must key on Accept: {head}"
    );
    (content_type, body)
}

/// `promtool check metrics` on `body`, when promtool exists: Some((ok, output)).
fn promtool(body: &str) -> Option<(bool, String)> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(body.as_bytes())
        .expect("promtool reads the exposition");
    let out = child.wait_with_output().expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

#[tokio::test]
async fn classic_by_default_openmetrics_when_asked() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    // Some traffic so counters and histograms have samples.
    let mut c = server.client(&fx.owner, Some("scraper-test")).await;
    c.attach("default", None).await;
    drop(c);

    // No Accept, text/plain and */* all get the classic format.
    for accept in [None, Some("text/plain"), Some("*/*")] {
        let (ct, body) = get_metrics(&server, accept).await;
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8", "{accept:?}");
        assert!(!body.contains("# EOF"), "{accept:?}: {body}");
        assert!(!body.contains("# UNIT"), "{accept:?}");
        let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
            .expect("the classic exposition parses");
        let accepted = parsed
            .samples
            .iter()
            .find(|s| s.metric == "ccrelay_connections_accepted_total")
            .expect("counter sample present");
        assert!(
            matches!(accepted.value, prometheus_parse::Value::Counter(v) if v >= 1.0),
            "{:?}",
            accepted.value
        );
        assert!(
            body.contains("# TYPE ccrelay_connections_accepted_total counter"),
            "the classic TYPE line names the sample"
        );
        assert!(
            parsed
                .samples
                .iter()
                .any(|s| s.metric == "ccrelay_fanout_latency_seconds"
                    && matches!(s.value, prometheus_parse::Value::Histogram(_))),
            "histogram parsed as one"
        );
    }

    // What Prometheus sends by default, and a bare OpenMetrics request.
    for accept in [
        "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        "application/openmetrics-text",
    ] {
        let (ct, body) = get_metrics(&server, Some(accept)).await;
        assert_eq!(
            ct, "application/openmetrics-text; version=1.0.0; charset=utf-8",
            "{accept}"
        );
        assert_eq!(body.lines().last(), Some("# EOF"), "{accept}");
        assert!(
            body.contains("# TYPE ccrelay_connections_accepted counter"),
            "OpenMetrics names the family"
        );
    }

    // A scraper that prefers the classic format gets it.
    let (ct, _) = get_metrics(
        &server,
        Some("text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.1"),
    )
    .await;
    assert!(ct.starts_with("text/plain"), "{ct}");

    // promtool check metrics reads the classic format only (its parser is the
    // classic one: on OpenMetrics it reports every counter as lacking help) —
    // the reason the classic format is the default.
    let (_, classic) = get_metrics(&server, None).await;
    match promtool(&classic) {
        Some((ok, out)) => {
            println!("promtool check metrics (classic): ok={ok} {}", out.trim());
            assert!(ok, "promtool rejects the classic format: {out}");
        }
        None => common::require::missing(
            "promtool",
            "scripts/test-deps installs it as root; else apt-get install prometheus",
        ),
    }
}
