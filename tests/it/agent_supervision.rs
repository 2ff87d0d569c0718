//! Agent supervision with the mock agent: hang detection, crash loops ending in
//! `failed`, process-group hygiene, and what the relay does with odd agent output.

use crate::common;

use std::time::{Duration, Instant};

use common::{
    Fixture, ServerOptions, TestClient, TestServer, eventually, processes_in_group, seq_of,
};
use serde_json::{Value, json};

async fn healthz(server: &TestServer) -> Value {
    let (status, _, body) = server.http_get("/healthz").await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("healthz JSON")
}

async fn agent_pid(server: &TestServer) -> i32 {
    for _ in 0..200 {
        if let Some(pid) = healthz(server).await["sessions"]["default"]["agent_pid"].as_i64() {
            return pid as i32;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no agent pid in /healthz");
}

async fn wait_state(c: &mut TestClient, state: &str) -> (Value, Vec<Value>) {
    c.recv_until(state, |v| {
        v["type"] == "event" && v["event"]["type"] == "relay.state" && v["event"]["state"] == state
    })
    .await
}

#[tokio::test]
async fn a_hung_agent_is_detected_killed_and_restarted() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&[
        "--agent-probe-interval",
        "0.5",
        "--agent-probe-timeout",
        "1",
    ]));
    let mut c = server.client(&fx.owner, None).await;
    c.attach("default", None).await;
    wait_state(&mut c, "idle").await;
    let old_pid = agent_pid(&server).await;
    let ok = c.prompt("please hang now").await;
    let prompt_id = ok["prompt_id"].as_str().unwrap().to_string();
    let (started, _) = c
        .recv_until("turn started", |v| {
            v["event"]["type"] == "relay.turn" && v["event"]["phase"] == "started"
        })
        .await;
    let t0 = Instant::now();
    let (exit, _) = c.recv_event("relay.agent_exit").await;
    let detected_after = t0.elapsed();
    assert_eq!(exit["event"]["cause"], "hung");
    assert_eq!(exit["event"]["signal"], "SIGKILL");
    assert_eq!(exit["event"]["code"], Value::Null);
    assert_eq!(exit["event"]["restarting"], true);
    assert!(seq_of(&exit) > seq_of(&started));
    // Silence (0.5 s) + probe timeout (1 s), with room for a loaded machine.
    assert!(
        detected_after < Duration::from_secs(6),
        "hang detected after {detected_after:?}"
    );
    let (aborted, _) = c.wait_turn(&prompt_id, &["aborted"]).await;
    assert_eq!(aborted["event"]["detail"], "hung");
    wait_state(&mut c, "idle").await;
    let new_pid = agent_pid(&server).await;
    assert_ne!(new_pid, old_pid);
    assert!(
        processes_in_group(old_pid).is_empty(),
        "the hung agent's group is gone"
    );
    // The restarted agent works.
    let ok = c.prompt("hello again").await;
    c.wait_turn(ok["prompt_id"].as_str().unwrap(), &["ended"])
        .await;
    let (_, _, metrics) = server.http_get("/metrics").await;
    assert!(
        metrics.contains(r#"ccrelay_agent_restarts_total{session="default",cause="hung"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_crash_loop_ends_in_failed_until_an_owner_restarts() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&[
        "--agent-max-restarts",
        "2",
        "--agent-restart-window",
        "120",
    ]));
    let mut c = server.client(&fx.owner, None).await;
    c.attach("default", None).await;
    wait_state(&mut c, "idle").await;
    for round in 1..=3 {
        let ok = c.prompt("crash please").await;
        let (exit, _) = c.recv_event("relay.agent_exit").await;
        assert_eq!(exit["event"]["cause"], "crashed", "round {round}");
        assert_eq!(exit["event"]["code"], 3);
        assert_eq!(exit["event"]["signal"], Value::Null);
        c.wait_turn(ok["prompt_id"].as_str().unwrap(), &["aborted"])
            .await;
        if round < 3 {
            assert_eq!(exit["event"]["restarting"], true);
            wait_state(&mut c, "restarting").await;
            wait_state(&mut c, "idle").await;
        } else {
            assert_eq!(
                exit["event"]["restarting"], false,
                "the third crash exceeds the limit"
            );
        }
    }
    let (failed, _) = wait_state(&mut c, "failed").await;
    assert!(
        failed["event"]["detail"]
            .as_str()
            .unwrap()
            .contains("unexpected exits"),
        "{failed}"
    );
    let (status, _, body) = server.http_get("/readyz").await;
    assert_eq!(status, 503);
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["sessions"]["default"]["state"], "failed");
    let refused = c
        .request(
            json!({"type": "prompt", "content": "hello"}),
            "while-failed",
        )
        .await;
    assert_eq!(refused["code"], "agent_unavailable");
    let interrupt = c.request(json!({"type": "interrupt"}), "int").await;
    assert_eq!(interrupt["code"], "agent_unavailable");
    // session.restart is the way out; its ok comes once the new agent answers.
    let ok = c
        .request(json!({"type": "session.restart"}), "restart")
        .await;
    assert_eq!(ok, json!({"type": "ok", "id": "restart"}));
    let (status, _, _) = server.http_get("/readyz").await;
    assert_eq!(status, 200);
    let ok = c.prompt("hello after restart").await;
    c.wait_turn(ok["prompt_id"].as_str().unwrap(), &["ended"])
        .await;
}

#[tokio::test]
async fn stopping_leaves_no_process_of_the_agent_group() {
    let fx = Fixture::new();
    let mut server = fx.start(ServerOptions::default().args(&["--agent-stop-grace", "1"]));
    let mut c = server.client(&fx.owner, None).await;
    c.attach("default", None).await;
    wait_state(&mut c, "idle").await;
    // A tool subprocess that would outlive a careless relay.
    let pid = agent_pid(&server).await;
    let ok = c.prompt("run-bash sh -c 'sleep 300 & sleep 300'").await;
    let (req, _) = c.recv_event("control_request").await;
    let request_id = req["event"]["request_id"].as_str().unwrap().to_string();
    let allowed = c
        .request(
            json!({"type": "respond", "request_id": request_id, "response": {"behavior": "allow"}}),
            "allow",
        )
        .await;
    assert_eq!(allowed["type"], "ok");
    assert!(
        eventually(Duration::from_secs(10), || processes_in_group(pid).len()
            >= 3)
        .await,
        "agent + shell + sleeps running"
    );

    // session.restart stops the whole group and starts a new agent.
    let restarted = c.request(json!({"type": "session.restart"}), "r").await;
    assert_eq!(restarted["type"], "ok");
    let (_, skipped) = c
        .wait_turn(ok["prompt_id"].as_str().unwrap(), &["aborted"])
        .await;
    let _ = skipped;
    assert!(
        eventually(Duration::from_secs(5), || processes_in_group(pid)
            .is_empty())
        .await,
        "old group: {:?}",
        processes_in_group(pid)
    );
    let new_pid = agent_pid(&server).await;
    assert_ne!(new_pid, pid);

    // Server shutdown stops the new group too.
    let ok = c.prompt("run-bash sh -c 'sleep 300'").await;
    let (req, _) = c.recv_event("control_request").await;
    let request_id = req["event"]["request_id"].as_str().unwrap().to_string();
    c.request(
        json!({"type": "respond", "request_id": request_id, "response": {"behavior": "allow"}}),
        "allow2",
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || processes_in_group(new_pid)
            .len()
            >= 2)
        .await
    );
    let _ = ok;
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("server exits");
    assert_eq!(status.code(), Some(0));
    assert!(
        processes_in_group(new_pid).is_empty(),
        "left behind: {:?}",
        processes_in_group(new_pid)
    );
    assert!(
        !fx.data_dir().join("sessions/default/agent.pid").exists(),
        "pid record removed on a clean stop"
    );
}

#[tokio::test]
async fn big_lines_pass_intact_and_odd_output_is_handled() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let mut c = server.client(&fx.owner, None).await;
    c.attach("default", None).await;
    wait_state(&mut c, "idle").await;

    // 10 MiB agent line, relayed byte for byte.
    let ok = c.prompt("bigline 10485760").await;
    let (end, frames) = c
        .wait_turn(ok["prompt_id"].as_str().unwrap(), &["ended"])
        .await;
    let big = frames
        .iter()
        .find(|f| {
            f["event"]["type"] == "assistant"
                && f["event"]["message"]["content"][0]["text"]
                    .as_str()
                    .is_some_and(|t| t.len() >= 10 * 1024 * 1024)
        })
        .expect("the 10 MiB assistant line arrived");
    let text = big["event"]["message"]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert_eq!(text.len(), 10_485_760);
    assert!(seq_of(&end) > seq_of(big));

    // A non-JSON line is logged and skipped; the turn completes and seqs have no gap.
    let ok = c.prompt("garbage hello").await;
    let (end, frames) = c
        .wait_turn(ok["prompt_id"].as_str().unwrap(), &["ended"])
        .await;
    let mut seqs: Vec<u64> = frames
        .iter()
        .filter(|f| f["type"] == "event")
        .map(seq_of)
        .collect();
    seqs.push(seq_of(&end));
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(frames.iter().any(|f| f["event"]["type"] == "result"));
    assert!(
        server
            .wait_log("not a JSON object", Duration::from_secs(5))
            .await
    );

    // A line over the relay's limit (32 MiB) is dropped but keeps its seq.
    let ok = c.prompt("bigline 40000000").await;
    let (end, frames) = c
        .wait_turn(ok["prompt_id"].as_str().unwrap(), &["ended"])
        .await;
    let dropped = frames
        .iter()
        .find(|f| f["event"]["type"] == "relay.dropped")
        .expect("relay.dropped event");
    assert!(dropped["event"]["bytes"].as_u64().unwrap() > 40_000_000);
    let mut seqs: Vec<u64> = frames
        .iter()
        .filter(|f| f["type"] == "event")
        .map(seq_of)
        .collect();
    seqs.push(seq_of(&end));
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap around the dropped line"
    );
}

#[tokio::test]
async fn an_unreachable_agent_command_ends_in_failed_with_a_reason() {
    let fx = Fixture::new();
    let opts = ServerOptions {
        agent_cmd: Some(fx.path().join("no-such-agent").display().to_string()),
        ..ServerOptions::default()
    }
    .args(&["--agent-max-restarts", "1"]);
    let server = fx.start(opts);
    let failed = eventually(Duration::from_secs(10), || {
        server.logs().contains(r#""state":"failed""#)
    })
    .await;
    assert!(failed, "logs:\n{}", server.logs());
    // The status snapshot is published right after the state change is logged.
    let mut last = (0, String::new());
    for _ in 0..100 {
        let (status, _, body) = server.http_get("/readyz").await;
        last = (status, body);
        if last.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = last;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("no-such-agent"),
        "the reason names the command: {body}"
    );
}

#[tokio::test]
async fn a_resume_of_an_unknown_conversation_starts_a_fresh_one_once() {
    let fx = Fixture::new();
    // The data dir remembers a conversation the agent has never heard of.
    let session_dir = fx.data_dir().join("sessions/default");
    std::fs::create_dir_all(&session_dir).unwrap();
    std::fs::write(
        session_dir.join("meta.json"),
        r#"{"conversation_id":"00000000-0000-4000-8000-000000000000"}"#,
    )
    .unwrap();
    let server = fx.start(ServerOptions::default().args(&["--agent-max-restarts", "1"]));
    let mut c = server.client(&fx.owner, None).await;
    c.attach("default", None).await;
    let (exit, _) = c.recv_event("relay.agent_exit").await;
    assert_eq!(exit["event"]["cause"], "crashed");
    assert_eq!(exit["event"]["code"], 1);
    assert_eq!(exit["event"]["restarting"], true);
    let (idle, skipped) = wait_state(&mut c, "idle").await;
    let said_so = skipped
        .iter()
        .chain(std::iter::once(&idle))
        .filter(|v| v["event"]["type"] == "relay.state")
        .filter_map(|v| v["event"]["detail"].as_str())
        .any(|d| {
            d.contains("00000000-0000-4000-8000-000000000000") && d.contains("new conversation")
        });
    assert!(
        said_so,
        "relay.state detail says a new conversation was started: {skipped:?}"
    );
    assert!(
        server
            .logs()
            .contains("resume failed: starting a new conversation")
    );
    // It does not count as a crash loop (max-restarts 1 would otherwise fail it), and it works.
    let ok = c.prompt("hello").await;
    let (_, frames) = c
        .wait_turn(ok["prompt_id"].as_str().unwrap(), &["ended"])
        .await;
    let init = frames
        .iter()
        .find(|f| f["event"]["type"] == "system" && f["event"]["subtype"] == "init")
        .unwrap();
    let fresh = init["event"]["session_id"].as_str().unwrap();
    assert_ne!(fresh, "00000000-0000-4000-8000-000000000000");
    let meta = std::fs::read_to_string(session_dir.join("meta.json")).unwrap();
    assert!(
        meta.contains(fresh),
        "the new conversation is remembered for the next resume: {meta}"
    );
}

#[tokio::test]
async fn a_pending_prompt_dies_with_its_agent_and_is_cancelled() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let mut a = server.client(&fx.owner, None).await;
    let mut b = server.client(&fx.owner2, None).await;
    a.attach("default", None).await;
    b.attach("default", None).await;
    wait_state(&mut a, "idle").await;
    let ok = a.prompt("please run-bash").await;
    let (req, _) = a.recv_event("control_request").await;
    let request_id = req["event"]["request_id"].as_str().unwrap().to_string();
    let pid = agent_pid(&server).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let prompt_id = ok["prompt_id"].as_str().unwrap().to_string();
    for c in [&mut a, &mut b] {
        let (exit, _) = c.recv_event("relay.agent_exit").await;
        assert_eq!(exit["event"]["signal"], "SIGKILL");
        c.wait_turn(&prompt_id, &["aborted"]).await;
        // Once the new agent answers initialize without listing it, it is cancelled.
        let (cancelled, _) = c.recv_event("relay.cancelled").await;
        assert_eq!(cancelled["event"]["request_id"], request_id.as_str());
        assert_eq!(cancelled["event"]["reason"], "agent_restarted");
    }
    let late = b
        .request(
            json!({"type": "respond", "request_id": request_id, "response": {"behavior": "allow"}}),
            "late",
        )
        .await;
    assert_eq!(late["code"], "not_pending");
    let mut c = server.client(&fx.owner, None).await;
    let attached = c.attach("default", None).await;
    assert_eq!(attached["pending"], json!([]));
}
