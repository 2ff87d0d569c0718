//! Scheduled prompts and `auto_continue` (docs/protocol.md §10) against the real
//! binary: prompts with `at` wait (across a server restart) and run at their
//! time, can be cancelled, are bounded, and are aborted when the key that
//! scheduled them stops being usable; with `auto_continue` on, a usage limit
//! reported by the REAL Claude Code CLI (under the mock Anthropic API, as a
//! gateway client) schedules `continue` for the limit's reset, which then runs.
//!
//! Run: `cargo test --test it scheduled_prompts:: -- --test-threads=1`.

use crate::common;

use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use common::mock_anthropic::MockAnthropic;
use common::real_cli::{gateway_env, require_real_cli};
use common::{Fixture, ServerOptions, TestClient, TestServer, audit_log_when, scaled};

fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .expect("formats as RFC 3339")
}

fn parse(text: &str) -> SystemTime {
    SystemTime::from(OffsetDateTime::parse(text, &Rfc3339).expect("an RFC 3339 time"))
}

/// A time `ahead` from now, to whole seconds (as a person would write it).
fn at_in(ahead: Duration) -> (SystemTime, String) {
    let secs = (SystemTime::now() + ahead)
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs()
        + 1;
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    (t, rfc3339(t))
}

async fn schedule(c: &mut TestClient, text: &str, at: &str, id: &str) -> Value {
    c.request(json!({"type": "prompt", "content": text, "at": at}), id)
        .await
}

/// An owner's client attached to `default`.
async fn attached(server: &TestServer, fx: &Fixture, device: &str) -> TestClient {
    let mut c = server.client(&fx.owner, Some(device)).await;
    c.attach("default", None).await;
    c
}

fn turn_events<'a>(frames: &'a [Value], prompt_id: &'a str) -> impl Iterator<Item = &'a Value> {
    frames.iter().filter(move |v| {
        v["type"] == "event"
            && v["event"]["type"] == "relay.turn"
            && v["event"]["prompt_id"] == prompt_id
    })
}

/// A prompt with `at` is accepted now (`relay.prompt` with `scheduled_at`), lets
/// prompts sent meanwhile run, is kept across a server restart (no `aborted`),
/// and starts no earlier than its time.
#[tokio::test]
async fn a_scheduled_prompt_survives_a_restart_and_runs_at_its_time() {
    let fx = Fixture::new();
    let mut server = fx.start(ServerOptions::default());
    let mut c = attached(&server, &fx, "laptop").await;
    let (due, at) = at_in(Duration::from_secs(4));
    let ok = schedule(&mut c, "scheduled hello", &at, "s1").await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["queued"], true, "{ok}");
    let scheduled_id = ok["prompt_id"].as_str().expect("prompt_id").to_string();
    let (prompt, _) = c.recv_event("relay.prompt").await;
    assert_eq!(prompt["event"]["prompt_id"], scheduled_id.as_str());
    assert_eq!(prompt["event"]["content"], "scheduled hello");
    let scheduled_at = prompt["event"]["scheduled_at"]
        .as_str()
        .expect("scheduled_at");
    assert_eq!(parse(scheduled_at), due, "{prompt}");

    // A prompt sent now does not wait for the scheduled one.
    let now_id = c.prompt("right away").await["prompt_id"]
        .as_str()
        .expect("prompt_id")
        .to_string();
    let (_, seen) = c.wait_turn(&now_id, &["ended"]).await;
    assert_eq!(
        turn_events(&seen, &scheduled_id).count(),
        0,
        "the scheduled prompt moved before its time: {seen:#?}"
    );
    assert!(
        SystemTime::now() < due,
        "the test machine is too slow for this test's timing"
    );

    // A clean restart keeps it.
    server.signal(Signal::SIGTERM);
    assert!(
        server.wait_exit(scaled(Duration::from_secs(20))).is_some(),
        "the server did not stop"
    );
    let server = fx.start(ServerOptions::default());
    let mut c = attached(&server, &fx, "laptop").await;
    let (started, seen) = c.wait_turn(&scheduled_id, &["started", "aborted"]).await;
    assert_eq!(started["event"]["phase"], "started", "{started}");
    assert!(
        SystemTime::now() >= due,
        "started before its time ({at}): {started}"
    );
    assert_eq!(
        turn_events(&seen, &scheduled_id).count(),
        0,
        "nothing else happened to it: {seen:#?}"
    );
    let (ended, _) = c.wait_turn(&scheduled_id, &["ended", "aborted"]).await;
    assert_eq!(ended["event"]["phase"], "ended", "{ended}");
    let audit = audit_log_when(&fx.data_dir(), |t| t.contains(scheduled_at));
    assert!(
        audit.contains(&format!("\"scheduled_at\":\"{scheduled_at}\"")),
        "the audit line records the time: {audit}"
    );
}

/// Bad times are refused; `prompt.cancel` removes a scheduled prompt (it never
/// runs); at most 100 wait per session; a viewer cannot schedule.
#[tokio::test]
async fn scheduled_prompts_are_checked_cancellable_and_bounded() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let mut c = attached(&server, &fx, "laptop").await;

    let far = rfc3339(SystemTime::now() + Duration::from_secs(31 * 24 * 3600));
    for (i, req) in [
        json!({"type": "prompt", "content": "x", "at": "tomorrow at nine"}),
        json!({"type": "prompt", "content": "x", "at": "2026-12-07 09:00:00"}),
        json!({"type": "prompt", "content": "x", "at": far}),
        json!({"type": "prompt", "content": "x", "at": 1_800_000_000}),
        json!({"type": "prompt", "content": "x", "at": "2026-12-07T09:00:00Z", "steer": true}),
    ]
    .into_iter()
    .enumerate()
    {
        let reply = c.request(req.clone(), &format!("bad{i}")).await;
        assert_eq!(reply["type"], "error", "{req}: {reply}");
        assert_eq!(reply["code"], "bad_message", "{req}: {reply}");
    }

    let (due, at) = at_in(Duration::from_secs(2));
    let ok = schedule(&mut c, "never", &at, "s").await;
    let cancelled = ok["prompt_id"].as_str().expect("prompt_id").to_string();
    let reply = c
        .request(
            json!({"type": "prompt.cancel", "prompt_id": cancelled}),
            "cancel",
        )
        .await;
    assert_eq!(reply["type"], "ok", "{reply}");
    let (aborted, _) = c.wait_turn(&cancelled, &["aborted"]).await;
    assert_eq!(aborted["event"]["detail"], "cancelled", "{aborted}");
    let again = c
        .request(
            json!({"type": "prompt.cancel", "prompt_id": cancelled}),
            "again",
        )
        .await;
    assert_eq!(again["code"], "not_pending", "{again}");

    // The viewer may not schedule.
    let mut viewer = server.client(&fx.viewer, Some("tv")).await;
    viewer.attach("default", None).await;
    let refused = schedule(&mut viewer, "x", &at, "v").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");

    // 100 wait; the 101st is refused.
    let (_, later) = at_in(Duration::from_secs(3600));
    for i in 0..100 {
        let ok = schedule(&mut c, &format!("later {i}"), &later, &format!("l{i}")).await;
        assert_eq!(ok["type"], "ok", "scheduled prompt {i}: {ok}");
    }
    let full = schedule(&mut c, "one too many", &later, "full").await;
    assert_eq!(full["code"], "overloaded", "{full}");
    let files = std::fs::read_dir(fx.data_dir().join("sessions/default/scheduled"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(files, 100, "one file per scheduled prompt");

    // Past the cancelled prompt's time, a prompt runs and the cancelled one did not.
    while SystemTime::now() < due + Duration::from_millis(500) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = c.prompt("after").await["prompt_id"]
        .as_str()
        .expect("prompt_id")
        .to_string();
    let (_, seen) = c.wait_turn(&id, &["ended"]).await;
    assert_eq!(
        turn_events(&seen, &cancelled).count(),
        0,
        "the cancelled prompt ran: {seen:#?}"
    );
}

/// A scheduled prompt whose key is removed from the keys file is aborted with
/// `key_unusable` as soon as the server reloads the keys (not an hour later, at
/// its time); the other key's prompts are not disturbed.
#[tokio::test]
async fn a_scheduled_prompt_of_a_removed_key_is_aborted() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let mut watcher = attached(&server, &fx, "laptop").await;
    let mut phone = server.client(&fx.owner2, Some("phone")).await;
    phone.attach("default", None).await;
    let (_, in_an_hour) = at_in(Duration::from_secs(3600));
    let ok = schedule(&mut phone, "from the phone", &in_an_hour, "p").await;
    let prompt_id = ok["prompt_id"].as_str().expect("prompt_id").to_string();
    let (_, soon) = at_in(Duration::from_secs(3));
    let ok = schedule(&mut watcher, "from the laptop", &soon, "l").await;
    let kept = ok["prompt_id"].as_str().expect("prompt_id").to_string();

    std::fs::write(fx.authorized_keys(), format!("{}\n", fx.owner.public_line))
        .expect("rewrite the keys file");
    let (code, _, _) = phone.expect_close(Duration::from_secs(10)).await;
    assert_eq!(code, Some(1008), "the removed key's connection closes");

    let (aborted, _) = watcher.wait_turn(&prompt_id, &["started", "aborted"]).await;
    assert_eq!(aborted["event"]["phase"], "aborted", "{aborted}");
    assert_eq!(aborted["event"]["detail"], "key_unusable", "{aborted}");
    let (ended, _) = watcher.wait_turn(&kept, &["ended", "aborted"]).await;
    assert_eq!(ended["event"]["phase"], "ended", "{ended}");
    let audit = audit_log_when(&fx.data_dir(), |t| t.contains("prompt_abort"));
    assert!(
        audit.contains("key_unusable") && audit.contains(&fx.owner2.fingerprint),
        "{audit}"
    );
}

/// A key that expires (its `expiry-time`) between scheduling and the prompt's time
/// changes no keys file: the prompt is aborted `key_unusable` when it is due.
#[tokio::test]
async fn a_scheduled_prompt_of_an_expired_key_is_aborted_when_due() {
    let fx = Fixture::new();
    // Whole seconds: that is all expiry-time can say.
    let expires = (OffsetDateTime::now_utc() + Duration::from_secs(3))
        .replace_nanosecond(0)
        .expect("whole seconds");
    let stamp = expires
        .format(time::macros::format_description!(
            "[year][month][day][hour][minute][second]"
        ))
        .expect("stamp");
    std::fs::write(
        fx.authorized_keys(),
        format!(
            "{}\nexpiry-time=\"{stamp}Z\" {}\n",
            fx.owner.public_line, fx.owner2.public_line
        ),
    )
    .expect("keys file");
    let server = fx.start(ServerOptions::default());
    let mut watcher = attached(&server, &fx, "laptop").await;
    let mut phone = server.client(&fx.owner2, Some("phone")).await;
    phone.attach("default", None).await;
    let (due, at) = at_in(Duration::from_secs(5));
    let ok = schedule(&mut phone, "after the expiry", &at, "p").await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let prompt_id = ok["prompt_id"].as_str().expect("prompt_id").to_string();
    let (aborted, _) = watcher.wait_turn(&prompt_id, &["started", "aborted"]).await;
    assert_eq!(aborted["event"]["detail"], "key_unusable", "{aborted}");
    assert!(SystemTime::now() >= due, "aborted at its time, not before");
}

/// The real CLI, as a gateway client, hits a usage limit that resets in a few
/// seconds: with `auto_continue` on, the relay schedules `continue` for the reset
/// (`relay.prompt` from `relay`, `scheduled_at` = the reset the CLI reported),
/// and it runs then (the mock API sees `continue`). Turned off, a scheduled
/// `continue` is cancelled.
/// The real CLI as a gateway client (so that it reports usage limits with their
/// reset) under a fresh mock API, and an owner's client attached to an idle
/// `default` with `auto_continue` on. `None` without the CLI. Borrow its parts
/// (`&mut world`): a field moved out and left to `..` would be dropped at once.
struct LimitWorld {
    fx: Fixture,
    api: MockAnthropic,
    _server: TestServer,
    c: TestClient,
}

impl LimitWorld {
    async fn start() -> Option<LimitWorld> {
        let bin = require_real_cli()?;
        let fx = Fixture::new();
        let api = MockAnthropic::start().await.expect("mock API starts");
        let mut opts = ServerOptions {
            agent_cmd: Some(bin.display().to_string()),
            ..ServerOptions::default()
        };
        opts.env = gateway_env(&fx.path().join("home"), &api.base_url);
        let server = fx.start(opts);
        let mut c = server.client(&fx.owner, Some("laptop")).await;
        let attached = c.attach("default", None).await;
        if attached["state"] != "idle" {
            c.recv_until("idle", |v| {
                v["event"]["type"] == "relay.state" && v["event"]["state"] == "idle"
            })
            .await;
        }
        let set = c
            .request(
                json!({"type": "session.set", "settings": {"auto_continue": true}}),
                "on",
            )
            .await;
        assert_eq!(set["type"], "ok", "{set}");
        assert_eq!(set["settings"]["auto_continue"], true, "{set}");
        Some(LimitWorld {
            fx,
            api,
            _server: server,
            c,
        })
    }
}

/// The turn in `frames` ended with the model's answer, not another refusal.
fn assert_answered(frames: &[Value]) {
    let result = frames
        .iter()
        .find(|v| v["event"]["type"] == "result")
        .unwrap_or_else(|| panic!("no result: {frames:#?}"));
    assert_eq!(result["event"]["is_error"], false, "{result}");
}

/// The prompt id of a `prompt` reply.
fn prompt_id(reply: &Value) -> String {
    reply["prompt_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no prompt_id in {reply}"))
        .to_string()
}

/// With `auto_continue` on, the queue waits behind its `continue`: a prompt
/// queued behind the turn that hit the limit, and one sent while the session
/// waits (`queued: true` in its `ok` and `relay.prompt`), start only after
/// `continue` ran at the reset, in order; the mock API is asked `continue`
/// first. Cancelling the `continue` lets a waiting prompt run at once.
#[tokio::test]
async fn prompts_wait_behind_auto_continue_until_the_reset() {
    let Some(mut world) = LimitWorld::start().await else {
        return;
    };
    let LimitWorld { api, c, .. } = &mut world;
    let limited = prompt_id(&c.prompt("usage-limit-soon").await);
    let behind = prompt_id(&c.prompt("queued behind the limit").await);
    c.wait_turn(&limited, &["ended"]).await;
    let (scheduled, _) = c
        .recv_until("the auto_continue prompt", |v| {
            v["event"]["type"] == "relay.prompt" && v["event"]["auto_continue"] == true
        })
        .await;
    let resumed = prompt_id(&scheduled["event"]);
    let reset = parse(
        scheduled["event"]["scheduled_at"]
            .as_str()
            .expect("scheduled_at"),
    );
    // Sent while the session is idle but waiting for the reset: queued.
    let later = c.prompt("sent while waiting").await;
    assert_eq!(later["queued"], true, "{later}");
    let later = prompt_id(&later);
    let (announced, _) = c
        .recv_until("relay.prompt of the waiting prompt", |v| {
            v["event"]["type"] == "relay.prompt" && v["event"]["prompt_id"] == later.as_str()
        })
        .await;
    assert_eq!(announced["event"]["queued"], true, "{announced}");

    let (first, _) = c
        .recv_until("the first turn after the limit", |v| {
            v["event"]["type"] == "relay.turn" && v["event"]["phase"] == "started"
        })
        .await;
    assert_eq!(
        first["event"]["prompt_id"],
        resumed.as_str(),
        "continue runs first: {first}"
    );
    assert!(SystemTime::now() >= reset, "nothing ran before the reset");
    let (_, seen) = c.wait_turn(&resumed, &["ended"]).await;
    assert_answered(&seen);
    let (second, _) = c
        .recv_until("the next turn", |v| {
            v["event"]["type"] == "relay.turn" && v["event"]["phase"] == "started"
        })
        .await;
    assert_eq!(second["event"]["prompt_id"], behind.as_str(), "{second}");
    c.wait_turn(&behind, &["ended"]).await;
    let (third, _) = c.wait_turn(&later, &["started", "aborted"]).await;
    assert_eq!(third["event"]["phase"], "started", "{third}");
    c.wait_turn(&later, &["ended"]).await;
    let asked: Vec<String> = api
        .requests()
        .iter()
        .map(|r| r["messages"].to_string())
        .collect();
    let position = |text: &str| {
        asked
            .iter()
            .position(|m| m.contains(text))
            .unwrap_or_else(|| panic!("the mock API never saw {text:?}"))
    };
    assert!(position("queued behind the limit") < position("sent while waiting"));

    // Another limit; cancelling its `continue` lets the prompt behind it run now.
    let limited = prompt_id(&c.prompt("usage-limit-soon again").await);
    let behind = prompt_id(&c.prompt("behind the second limit").await);
    c.wait_turn(&limited, &["ended"]).await;
    let (scheduled, _) = c
        .recv_until("the second auto_continue prompt", |v| {
            v["event"]["type"] == "relay.prompt" && v["event"]["auto_continue"] == true
        })
        .await;
    let reset = parse(
        scheduled["event"]["scheduled_at"]
            .as_str()
            .expect("scheduled_at"),
    );
    let cancel = c
        .request(
            json!({"type": "prompt.cancel", "prompt_id": scheduled["event"]["prompt_id"]}),
            "cancel",
        )
        .await;
    assert_eq!(cancel["type"], "ok", "{cancel}");
    let (started, _) = c.wait_turn(&behind, &["started", "aborted"]).await;
    assert_eq!(started["event"]["phase"], "started", "{started}");
    assert!(
        SystemTime::now() < reset,
        "released by the cancel, not by the reset"
    );
}

#[tokio::test]
async fn auto_continue_resumes_after_a_usage_limit_resets() {
    let Some(mut world) = LimitWorld::start().await else {
        return;
    };
    let LimitWorld { fx, api, c, .. } = &mut world;

    let limited = c.prompt("usage-limit-soon").await["prompt_id"]
        .as_str()
        .expect("prompt_id")
        .to_string();
    let (_, seen) = c.wait_turn(&limited, &["ended"]).await;
    let limit = seen
        .iter()
        .find(|v| v["event"]["type"] == "rate_limit_event")
        .unwrap_or_else(|| panic!("the CLI reported no rate_limit_event: {seen:#?}"));
    assert_eq!(limit["event"]["rate_limit_info"]["status"], "rejected");
    let resets = limit["event"]["rate_limit_info"]["resetsAt"]
        .as_u64()
        .expect("resetsAt");
    let reset = SystemTime::UNIX_EPOCH + Duration::from_secs(resets);
    // session.usage tells every client the limit and its reset.
    let usage = c
        .request(
            json!({"type": "session.usage", "session": "default"}),
            "usage",
        )
        .await;
    assert_eq!(usage["rate_limit"]["status"], "rejected", "{usage}");
    assert_eq!(
        parse(
            usage["rate_limit"]["resets_at"]
                .as_str()
                .expect("resets_at")
        ),
        reset,
        "{usage}"
    );

    let (scheduled, _) = c
        .recv_until("the auto_continue prompt", |v| {
            v["event"]["type"] == "relay.prompt" && v["event"]["auto_continue"] == true
        })
        .await;
    let ev = &scheduled["event"];
    assert_eq!(ev["client_id"], "relay", "{ev}");
    assert_eq!(ev["content"], "continue", "{ev}");
    assert_eq!(ev["fingerprint"], fx.owner.fingerprint.as_str(), "{ev}");
    assert_eq!(
        parse(ev["scheduled_at"].as_str().expect("scheduled_at")),
        reset,
        "{ev}"
    );
    let resumed = ev["prompt_id"].as_str().expect("prompt_id").to_string();
    let (started, _) = c.wait_turn(&resumed, &["started", "aborted"]).await;
    assert_eq!(started["event"]["phase"], "started", "{started}");
    assert!(SystemTime::now() >= reset, "continue ran before the reset");
    let (ended, seen) = c.wait_turn(&resumed, &["ended", "aborted"]).await;
    assert_eq!(ended["event"]["phase"], "ended", "{ended}");
    assert_answered(&seen);
    let last_user_text = api
        .requests()
        .last()
        .map(|r| r["messages"].to_string())
        .unwrap_or_default();
    assert!(
        last_user_text.contains("continue"),
        "the model was asked to continue: {last_user_text}"
    );

    // Another limit schedules another `continue`; turning auto_continue off cancels it.
    let limited = c.prompt("usage-limit-soon again").await["prompt_id"]
        .as_str()
        .expect("prompt_id")
        .to_string();
    c.wait_turn(&limited, &["ended"]).await;
    let (scheduled, _) = c
        .recv_until("the second auto_continue prompt", |v| {
            v["event"]["type"] == "relay.prompt" && v["event"]["auto_continue"] == true
        })
        .await;
    let second = scheduled["event"]["prompt_id"]
        .as_str()
        .expect("prompt_id")
        .to_string();
    let off = c
        .request(
            json!({"type": "session.set", "settings": {"auto_continue": false}}),
            "off",
        )
        .await;
    assert_eq!(off["type"], "ok", "{off}");
    let (aborted, _) = c.wait_turn(&second, &["started", "aborted"]).await;
    assert_eq!(aborted["event"]["detail"], "cancelled", "{aborted}");
}

/// A reset the agent reports beyond 30 days schedules `continue` no later than
/// 30 days ahead: the bound a client's `at` has.
#[tokio::test]
async fn a_far_reset_schedules_continue_at_most_30_days_ahead() {
    let Some(mut world) = LimitWorld::start().await else {
        return;
    };
    let LimitWorld { c, .. } = &mut world;
    let limited = prompt_id(&c.prompt("usage-limit-far").await);
    let (_, seen) = c.wait_turn(&limited, &["ended"]).await;
    assert!(
        seen.iter()
            .any(|v| v["event"]["type"] == "rate_limit_event"),
        "the CLI reported the limit: {seen:#?}"
    );
    let (scheduled, _) = c
        .recv_until("the auto_continue prompt", |v| {
            v["event"]["type"] == "relay.prompt" && v["event"]["auto_continue"] == true
        })
        .await;
    let at = parse(
        scheduled["event"]["scheduled_at"]
            .as_str()
            .expect("scheduled_at"),
    );
    let bound = SystemTime::now() + Duration::from_secs(30 * 24 * 3600);
    assert!(at <= bound, "{scheduled}");
    assert!(
        at > bound - Duration::from_secs(300),
        "clamped to the bound, not dropped: {scheduled}"
    );
}

/// Closing a created session aborts its scheduled prompts (`session_closed`)
/// before `relay.closed`, and removes their files; a session created with
/// `auto_continue` keeps it as its creator's.
#[tokio::test]
async fn closing_a_session_aborts_its_scheduled_prompts() {
    let fx = Fixture::new();
    let project = fx.workdir().join("projects").join("api");
    std::fs::create_dir_all(&project).expect("project dir");
    let server = fx.start(ServerOptions::default());
    let mut c = server.client(&fx.owner, Some("laptop")).await;
    let created = c
        .request(
            json!({"type": "session.create", "workdir": project.display().to_string(), "name": "api",
                   "settings": {"auto_continue": true}}),
            "create",
        )
        .await;
    assert_eq!(created["type"], "session.created", "{created}");
    let uid = created["uid"].as_str().expect("uid").to_string();
    let attached = c
        .request(json!({"type": "attach", "session": "api"}), "attach")
        .await;
    assert_eq!(attached["type"], "attached", "{attached}");
    let (_, at) = at_in(Duration::from_secs(3600));
    let mut ids = Vec::new();
    for i in 0..2 {
        let ok = c
            .request(
                json!({"type": "prompt", "session": "api", "content": format!("later {i}"), "at": at}),
                &format!("s{i}"),
            )
            .await;
        assert_eq!(ok["type"], "ok", "{ok}");
        ids.push(ok["prompt_id"].as_str().expect("prompt_id").to_string());
    }
    let dir = fx.data_dir().join("created").join(&uid).join("scheduled");
    assert_eq!(std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0), 2);
    let closed = c
        .request(json!({"type": "session.close", "session": "api"}), "close")
        .await;
    assert_eq!(closed["type"], "ok", "{closed}");
    // Everything up to `relay.closed` came before the `ok`: the backlog holds it.
    let (_, seen) = c.recv_until("detached", |v| v["type"] == "detached").await;
    let closed_at = seen
        .iter()
        .position(|v| v["event"]["type"] == "relay.closed")
        .unwrap_or_else(|| panic!("no relay.closed: {seen:#?}"));
    for id in &ids {
        let at = seen
            .iter()
            .position(|v| {
                v["event"]["type"] == "relay.turn"
                    && v["event"]["prompt_id"] == id.as_str()
                    && v["event"]["phase"] == "aborted"
                    && v["event"]["detail"] == "session_closed"
            })
            .unwrap_or_else(|| panic!("{id} not aborted: {seen:#?}"));
        assert!(at < closed_at, "aborted before relay.closed");
    }
    assert_eq!(std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0), 0);
    let record = std::fs::read_to_string(
        fx.data_dir()
            .join("created")
            .join(&uid)
            .join("session.json"),
    )
    .expect("the session's record");
    assert!(
        record.contains(&fx.owner.fingerprint),
        "the record names its creator: {record}"
    );
}
