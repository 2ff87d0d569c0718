//! Agents on demand (docs/protocol.md §4.11) with the mock agent: at most
//! `--max-agents` agent processes (counted from /proc, not from the server),
//! idle agents stopped after `--agent-idle-stop`, sessions asleep and woken by
//! a prompt that resumes their conversation, and a session waiting for a slot.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Fixture, ServerOptions, TestClient, TestServer, eventually, scaled};
use serde_json::{Value, json};

/// Heavy tests (a dozen sessions) run one at a time.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Pids of the mock agent processes whose parent is `server_pid` (from /proc).
fn agent_children(server_pid: i32) -> Vec<i32> {
    let agent_name = std::path::Path::new(common::mock_agent_bin())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: comm may hold spaces, so split after the last ')'.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid: i32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid != server_pid || state == "Z" {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or(&[]);
        if String::from_utf8_lossy(argv0).ends_with(&agent_name) {
            out.push(pid);
        }
    }
    out
}

/// The arguments of a process (from /proc).
fn argv(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Counts the server's agent children every few milliseconds and keeps the
/// largest count seen, until dropped.
struct AgentCounter {
    max: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AgentCounter {
    fn start(server_pid: i32) -> AgentCounter {
        let max = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (max.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(agent_children(server_pid).len(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        AgentCounter {
            max,
            stop,
            thread: Some(thread),
        }
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }
}

impl Drop for AgentCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn is_event(v: &Value, session: &str, kind: &str) -> bool {
    v["type"] == "event" && v["session"] == session && v["event"]["type"] == kind
}

fn is_state(v: &Value, session: &str, state: &str) -> bool {
    is_event(v, session, "relay.state") && v["event"]["state"] == state
}

/// Prompt `session` (attached on this connection); the `ok` reply.
async fn prompt_in(c: &mut TestClient, session: &str, text: &str) -> Value {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let id = format!("p-{session}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let reply = c
        .request(
            json!({"type": "prompt", "session": session, "content": text}),
            &id,
        )
        .await;
    assert_eq!(reply["type"], "ok", "{reply}");
    reply
}

async fn session_states(c: &mut TestClient) -> BTreeMap<String, String> {
    let list = c.request(json!({"type": "session.list"}), "list").await;
    list["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| {
            (
                s["session"].as_str().unwrap_or("").to_string(),
                s["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn healthz(server: &TestServer) -> Value {
    let (status, _, body) = server.http_get("/healthz").await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("healthz JSON")
}

fn start_with_sessions(fx: &Fixture, extra: &[&str], names: &[&str]) -> TestServer {
    let mut opts = ServerOptions::default().args(extra);
    for name in names {
        let dir = fx.path().join(format!("work-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        opts = opts
            .arg("--session")
            .arg(&format!("{name}={}", dir.display()));
    }
    fx.start(opts)
}

#[tokio::test]
async fn at_most_max_agents_run_and_every_prompt_gets_its_turn() {
    let _heavy = HEAVY.lock().await;
    let fx = Fixture::new();
    let extra: Vec<String> = (1..=11).map(|i| format!("s{i}")).collect();
    let extra_refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let server = start_with_sessions(
        &fx,
        &["--max-agents", "3", "--agent-idle-stop", "2"],
        &extra_refs,
    );
    let counter = AgentCounter::start(server.pid());
    let mut names = vec!["default".to_string()];
    names.extend(extra.iter().cloned());
    let mut c = server.client(&fx.owner, Some("laptop")).await;
    for name in &names {
        c.attach(name, None).await;
    }

    // Every session in turn, all at once: with three slots most of them wait,
    // and each waits only until an agent of another session is idle again.
    let mut open: BTreeMap<String, String> = BTreeMap::new();
    for name in &names {
        let ok = prompt_in(&mut c, name, &format!("hello from {name}")).await;
        open.insert(
            ok["prompt_id"].as_str().expect("prompt_id").to_string(),
            name.clone(),
        );
    }
    let deadline = Instant::now() + scaled(Duration::from_secs(120));
    let mut ended = BTreeSet::new();
    while ended.len() < open.len() {
        assert!(
            Instant::now() < deadline,
            "turns ended: {ended:?} of {open:?}"
        );
        let (frame, _) = c
            .recv_until("a turn that ended", |v| {
                v["type"] == "event"
                    && v["event"]["type"] == "relay.turn"
                    && (v["event"]["phase"] == "ended" || v["event"]["phase"] == "aborted")
            })
            .await;
        let pid = frame["event"]["prompt_id"].as_str().unwrap_or("");
        assert_eq!(frame["event"]["phase"], "ended", "no turn is lost: {frame}");
        assert_eq!(
            open.get(pid).map(String::as_str),
            frame["session"].as_str(),
            "{frame}"
        );
        ended.insert(pid.to_string());
    }
    assert!(counter.max() >= 1, "agents were seen running");
    assert!(
        counter.max() <= 3,
        "at most 3 agent processes at once, saw {}",
        counter.max()
    );

    // Two seconds without work: every session sleeps and no agent process is left.
    let asleep = {
        let mut all = false;
        for _ in 0..100 {
            let states = session_states(&mut c).await;
            if states.values().all(|s| s == "asleep") {
                all = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        all
    };
    assert!(
        asleep,
        "every session asleep: {:?}",
        session_states(&mut c).await
    );
    assert!(
        eventually(Duration::from_secs(10), || agent_children(server.pid())
            .is_empty())
        .await,
        "no agent process left: {:?}",
        agent_children(server.pid())
    );

    // A prompt wakes a sleeping session: accepted at once, queued, and run.
    let ok = prompt_in(&mut c, "s5", "wake up").await;
    assert_eq!(ok["queued"], true, "{ok}");
    let prompt_id = ok["prompt_id"].as_str().unwrap().to_string();
    c.wait_turn(&prompt_id, &["ended"]).await;
    assert!(counter.max() <= 3, "saw {}", counter.max());
    // Asleep is healthy: /readyz stays ready.
    let (status, _, body) = server.http_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
}

/// The same with sessions created by a client (docs/protocol.md §4.10), which open
/// asleep: twelve of them on three slots, prompted in turn and then all at once.
#[tokio::test]
async fn twelve_created_sessions_share_three_agents() {
    let _heavy = HEAVY.lock().await;
    let fx = Fixture::new();
    let root = fx.path().join("projects");
    std::fs::create_dir_all(&root).unwrap();
    let server = fx.start(ServerOptions::default().args(&[
        "--max-agents",
        "3",
        "--agent-idle-stop",
        "2",
        "--session-root",
        &root.display().to_string(),
    ]));
    let counter = AgentCounter::start(server.pid());
    let mut c = server.client(&fx.owner, Some("laptop")).await;
    let names: Vec<String> = (1..=12).map(|i| format!("c{i}")).collect();
    for name in &names {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let created = c
            .request(
                json!({"type": "session.create", "workdir": dir.display().to_string(), "name": name}),
                &format!("create-{name}"),
            )
            .await;
        assert_eq!(created["type"], "session.created", "{created}");
        let attached = c
            .request(
                json!({"type": "attach", "session": name, "uid": created["uid"]}),
                &format!("attach-{name}"),
            )
            .await;
        assert_eq!(
            attached["state"], "asleep",
            "a created session sleeps: {attached}"
        );
    }
    assert!(
        agent_children(server.pid()).len() <= 1,
        "only the default session's agent runs before any prompt"
    );

    // In turn: each prompt wakes its session and gets its turn.
    for name in &names {
        let ok = prompt_in(&mut c, name, &format!("hello from {name}")).await;
        assert_eq!(
            ok["queued"], true,
            "a prompt to an asleep session waits: {ok}"
        );
        c.wait_turn(ok["prompt_id"].as_str().unwrap(), &["ended"])
            .await;
    }
    // All at once: most wait for a slot, none is lost.
    let mut open: BTreeMap<String, String> = BTreeMap::new();
    for name in &names {
        let ok = prompt_in(&mut c, name, &format!("again {name}")).await;
        open.insert(ok["prompt_id"].as_str().unwrap().to_string(), name.clone());
    }
    let deadline = Instant::now() + scaled(Duration::from_secs(120));
    let mut ended = BTreeSet::new();
    while ended.len() < open.len() {
        assert!(
            Instant::now() < deadline,
            "turns ended: {ended:?} of {open:?}"
        );
        let (frame, _) = c
            .recv_until("a turn that ended", |v| {
                v["type"] == "event"
                    && v["event"]["type"] == "relay.turn"
                    && (v["event"]["phase"] == "ended" || v["event"]["phase"] == "aborted")
                    && v["session"] != "default"
            })
            .await;
        let pid = frame["event"]["prompt_id"].as_str().unwrap_or("");
        if !open.contains_key(pid) {
            continue; // the in-turn round's end, read late
        }
        assert_eq!(frame["event"]["phase"], "ended", "no turn is lost: {frame}");
        assert_eq!(open[pid].as_str(), frame["session"].as_str().unwrap_or(""));
        ended.insert(pid.to_string());
    }
    assert!(
        counter.max() <= 3,
        "at most 3 agent processes at once, saw {}",
        counter.max()
    );

    // Idle agents stop after about two seconds; every created session sleeps.
    let mut asleep = false;
    for _ in 0..100 {
        let states = session_states(&mut c).await;
        if names
            .iter()
            .all(|n| states.get(n).map(String::as_str) == Some("asleep"))
        {
            asleep = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        asleep,
        "created sessions asleep: {:?}",
        session_states(&mut c).await
    );
    assert!(
        eventually(Duration::from_secs(10), || agent_children(server.pid())
            .is_empty())
        .await,
        "no agent process left: {:?}",
        agent_children(server.pid())
    );
}

#[tokio::test]
async fn a_session_waits_for_a_slot_while_no_agent_is_idle() {
    let fx = Fixture::new();
    let server = start_with_sessions(&fx, &["--max-agents", "1"], &["s1"]);
    let counter = AgentCounter::start(server.pid());
    let mut c = server.client(&fx.owner, Some("laptop")).await;
    c.attach("default", None).await;
    c.attach("s1", None).await;
    // At start one of the two holds the only slot; once it is idle it is put to
    // sleep for the other. Wait until one is asleep and the other idle.
    let deadline = Instant::now() + scaled(Duration::from_secs(30));
    let (running, sleeping) = loop {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            session_states(&mut c).await
        );
        let states = session_states(&mut c).await;
        match (states["default"].as_str(), states["s1"].as_str()) {
            ("idle", "asleep") => break ("default", "s1"),
            ("asleep", "idle") => break ("s1", "default"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    // A long turn keeps the running agent busy (20 deltas, 250 ms apart).
    let long = prompt_in(&mut c, running, "slow").await;
    let long_id = long["prompt_id"].as_str().unwrap().to_string();
    c.recv_until("the long turn started", |v| {
        is_event(v, running, "relay.turn") && v["event"]["phase"] == "started"
    })
    .await;
    let woken = prompt_in(&mut c, sleeping, "hello").await;
    assert_eq!(woken["queued"], true, "{woken}");
    let woken_id = woken["prompt_id"].as_str().unwrap().to_string();
    let (waiting, _) = c
        .recv_until("the sleeping session waits", |v| {
            is_state(v, sleeping, "starting")
        })
        .await;
    assert_eq!(
        waiting["event"]["detail"], "waiting for an agent slot",
        "{waiting}"
    );
    // The busy agent finishes its turn, is idle, and gives its slot up.
    let (_, seen) = c.wait_turn(&woken_id, &["ended"]).await;
    let order: Vec<&Value> = seen
        .iter()
        .filter(|v| v["type"] == "event")
        .filter(|v| {
            (is_event(v, running, "relay.turn") && v["event"]["prompt_id"] == long_id.as_str())
                || (is_event(v, running, "relay.agent_exit"))
                || is_state(v, running, "asleep")
        })
        .collect();
    let kinds: Vec<String> = order
        .iter()
        .map(|v| {
            format!(
                "{} {}",
                v["event"]["type"].as_str().unwrap_or(""),
                v["event"]["phase"]
                    .as_str()
                    .or(v["event"]["cause"].as_str())
                    .or(v["event"]["state"].as_str())
                    .unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "relay.turn ended",
            "relay.agent_exit stopped",
            "relay.state asleep"
        ],
        "the long turn ended before its agent was put to sleep: {order:#?}"
    );
    assert!(counter.max() <= 1, "saw {} agents at once", counter.max());
}

#[tokio::test]
async fn idle_stop_spares_a_pending_request_and_a_queued_prompt() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&["--agent-idle-stop", "1"]));
    let mut c = server.client(&fx.owner, Some("laptop")).await;
    c.attach("default", None).await;
    // Idle from the start: stopped after a second (time is what is tested here).
    let (exit, _) = c
        .recv_until("the idle agent stopped", |v| {
            is_event(v, "default", "relay.agent_exit")
        })
        .await;
    assert_eq!(exit["event"]["cause"], "stopped", "{exit}");
    assert_eq!(exit["event"]["restarting"], false, "{exit}");
    let (asleep, _) = c
        .recv_until("relay.state", |v| is_event(v, "default", "relay.state"))
        .await;
    assert_eq!(asleep["event"]["state"], "asleep", "{asleep}");
    // While asleep: interrupt is a no-op, and nothing is pending to answer.
    let reply = c
        .request(json!({"type": "interrupt", "session": "default"}), "int")
        .await;
    assert_eq!(reply["type"], "ok", "{reply}");
    let reply = c
        .request(
            json!({"type": "respond", "session": "default", "request_id": "nope", "response": {"behavior": "allow"}}),
            "resp",
        )
        .await;
    assert_eq!(reply["code"], "not_pending", "{reply}");

    let ask = prompt_in(&mut c, "default", "permission").await;
    assert_eq!(ask["queued"], true, "a sleeping session queues: {ask}");
    let (request, _) = c
        .recv_until("the permission request", |v| {
            is_event(v, "default", "control_request")
        })
        .await;
    let request_id = request["event"]["request_id"].as_str().unwrap().to_string();
    let queued = prompt_in(&mut c, "default", "and then this one").await;
    assert_eq!(queued["queued"], true, "{queued}");
    let pid = healthz(&server).await["sessions"]["default"]["agent_pid"]
        .as_i64()
        .expect("an agent runs") as i32;
    // Three times the idle limit with a request pending and a prompt queued:
    // the agent keeps running.
    let quiet_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet_until {
        if let Some(common::Received::Frame(v)) = c
            .recv_frame(quiet_until.saturating_duration_since(Instant::now()))
            .await
        {
            assert!(
                !is_event(&v, "default", "relay.agent_exit") && !is_state(&v, "default", "asleep"),
                "stopped while a request was pending: {v}"
            );
        }
    }
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the agent process still runs"
    );
    let reply = c
        .request(
            json!({"type": "respond", "session": "default", "request_id": request_id, "response": {"behavior": "allow"}}),
            "allow",
        )
        .await;
    assert_eq!(reply["type"], "ok", "{reply}");
    let after_id = queued["prompt_id"].as_str().unwrap().to_string();
    c.wait_turn(&after_id, &["ended"]).await;
    let (exit, _) = c
        .recv_until("the agent stopped once idle", |v| {
            is_event(v, "default", "relay.agent_exit")
        })
        .await;
    assert_eq!(exit["event"]["cause"], "stopped", "{exit}");
    c.recv_until("asleep again", |v| is_state(v, "default", "asleep"))
        .await;
}

#[tokio::test]
async fn a_woken_session_resumes_its_conversation() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default().args(&["--agent-idle-stop", "2"]));
    let mut c = server.client(&fx.owner, Some("laptop")).await;
    c.attach("default", None).await;
    let first = c.prompt("remember the blue door").await;
    let first_id = first["prompt_id"].as_str().unwrap().to_string();
    let (_, seen) = c.wait_turn(&first_id, &["ended"]).await;
    let conversation = seen
        .iter()
        .find(|v| v["event"]["type"] == "system" && v["event"]["subtype"] == "init")
        .and_then(|v| v["event"]["session_id"].as_str())
        .expect("system/init with the conversation id")
        .to_string();
    c.recv_until("asleep", |v| is_state(v, "default", "asleep"))
        .await;
    assert!(
        eventually(Duration::from_secs(10), || agent_children(server.pid())
            .is_empty())
        .await
    );
    let wake = c.prompt("recall").await;
    assert_eq!(wake["queued"], true, "{wake}");
    let wake_id = wake["prompt_id"].as_str().unwrap().to_string();
    // The new process was started with --resume <the conversation>.
    let pid = {
        let mut found = None;
        for _ in 0..200 {
            if let Some(p) = healthz(&server).await["sessions"]["default"]["agent_pid"].as_i64() {
                found = Some(p as i32);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        found.expect("an agent started")
    };
    let args = argv(pid);
    let at = args.iter().position(|a| a == "--resume");
    assert_eq!(
        at.and_then(|i| args.get(i + 1)).map(String::as_str),
        Some(conversation.as_str()),
        "{args:?}"
    );
    // And it carries the conversation on: the mock agent quotes the earlier prompt.
    let (_, seen) = c.wait_turn(&wake_id, &["ended"]).await;
    let text: String = seen
        .iter()
        .filter(|v| v["event"]["type"] == "assistant")
        .map(|v| v["event"].to_string())
        .collect();
    assert!(text.contains("remember the blue door"), "{text}");
}

#[test]
fn max_agents_zero_is_refused_naming_it() {
    let fx = Fixture::new();
    for (flag, value) in [("--max-agents", "0"), ("--agent-idle-stop", "soon")] {
        let out = fx
            .serve_command()
            .args([flag, value])
            .env_remove("CCRELAY_MAX_AGENTS")
            .env_remove("CCRELAY_AGENT_IDLE_STOP")
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains(&flag[2..]), "{stderr:?} names {flag}");
        assert!(out.stdout.is_empty());
    }
}
