//! `ccrelay attach` with the session controls (docs/protocol.md §10, §11), on a
//! real terminal (tmux) against the real `ccrelay serve` and the mock agent: the
//! usage status line, Tab completion of slash commands, `:mode`, a turn's change
//! summary, `:changes` and `:diff` in a git workdir, and plan and question
//! prompts answered with keys.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::tmux::Tmux;
use crate::common::{Fixture, ServerOptions, ccrelay_bin};

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "T")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "T")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

/// The empty editor line (capture-pane drops the trailing space of "> ").
fn has_editor(screen: &str) -> bool {
    screen.lines().any(|l| l == ">" || l.starts_with("> "))
}

/// `ccrelay attach` in a tmux session of its own, `PAGER=cat` so a diff lands on
/// the screen; waits for the editor.
fn start_attach(tmux: &Tmux, fx: &Fixture, url: &str, device: &str) {
    let home = fx.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let command = format!(
        "env -u SSH_AUTH_SOCK HOME={} NO_COLOR=1 PAGER=cat {} attach -i {} --device {device} {url}; echo CLIENT-EXITED $?; sleep 600",
        home.display(),
        ccrelay_bin(),
        fx.owner.private.display(),
    );
    tmux.tmux(&[
        "new-session",
        "-d",
        "-s",
        device,
        "-x",
        "200",
        "-y",
        "60",
        &command,
    ]);
    tmux.wait_for(device, "the editor", |s| {
        s.contains("connected to") && has_editor(s)
    });
}

fn typed(tmux: &Tmux, device: &str, text: &str) {
    tmux.tmux(&["send-keys", "-t", device, "-l", text]);
}

fn key(tmux: &Tmux, device: &str, key: &str) {
    tmux.tmux(&["send-keys", "-t", device, key]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_diff_mode_usage_and_slash_completion_on_a_terminal() {
    let fx = Fixture::new();
    git(&fx.workdir(), &["init", "-q", "-b", "main"]);
    std::fs::write(fx.workdir().join("kept.txt"), "kept\n").expect("write");
    git(&fx.workdir(), &["add", "."]);
    git(&fx.workdir(), &["commit", "-q", "-m", "first"]);
    let server = fx.start(ServerOptions::default());
    let tmux = Tmux::new("attach-controls");
    start_attach(&tmux, &fx, &server.url, "laptop");
    // The status line: context and cost from session.usage.
    tmux.wait_for_async("laptop", "the usage status line", |s| {
        s.contains("context ") && s.contains(" · $")
    })
    .await;

    typed(&tmux, "laptop", "write-file");
    key(&tmux, "laptop", "Enter");
    tmux.wait_for_async("laptop", "the Write permission prompt", |s| {
        s.contains("Allow Write? [y] yes")
    })
    .await;
    key(&tmux, "laptop", "y");
    // The turn's change summary: the path, its status and its counts.
    let screen = tmux
        .wait_for_async("laptop", "the turn's changes", |s| {
            s.contains("· the turn changed 1 file") && s.contains(" relay-test.txt +1 −0")
        })
        .await;
    assert!(has_editor(&screen), "{screen}");

    typed(&tmux, "laptop", ":changes");
    key(&tmux, "laptop", "Enter");
    tmux.wait_for_async("laptop", ":changes", |s| s.contains("1 changed on main:"))
        .await;

    typed(&tmux, "laptop", ":diff turn");
    key(&tmux, "laptop", "Enter");
    tmux.wait_for_async("laptop", "the turn's diff through the pager", |s| {
        s.contains("+written by the mock agent") && s.contains("+++ b/relay-test.txt")
    })
    .await;
    typed(&tmux, "laptop", ":diff kept.txt");
    key(&tmux, "laptop", "Enter");
    tmux.wait_for_async("laptop", "an unchanged file's empty diff", |s| {
        s.contains("(no changes)")
    })
    .await;

    // Tab completes a slash command from the agent's catalog.
    typed(&tmux, "laptop", "/comp");
    key(&tmux, "laptop", "Tab");
    tmux.wait_for_async("laptop", "the completed command", |s| {
        s.lines().any(|l| l.trim_end() == "> /compact")
    })
    .await;
    key(&tmux, "laptop", "C-u");

    let mut script = server.client(&fx.owner2, Some("script")).await;
    script.attach("default", None).await;
    typed(&tmux, "laptop", ":mode plan");
    key(&tmux, "laptop", "Enter");
    let (settings, _) = script.recv_event("relay.settings").await;
    assert_eq!(settings["event"]["settings"]["permission_mode"], "plan");
    tmux.wait_for_async("laptop", "the settings line", |s| {
        s.contains("settings changed by laptop") && s.contains("(mode plan)")
    })
    .await;
    typed(&tmux, "laptop", ":mode no-such-mode");
    key(&tmux, "laptop", "Enter");
    tmux.wait_for_async("laptop", "the refusal", |s| s.contains("server error"))
        .await;

    // `:at`: the rest of the line, scheduled (docs/protocol.md §10).
    typed(&tmux, "laptop", ":at +2h run the nightly checks");
    key(&tmux, "laptop", "Enter");
    let (prompt, _) = script.recv_event("relay.prompt").await;
    assert_eq!(
        prompt["event"]["content"], "run the nightly checks",
        "{prompt}"
    );
    let scheduled_at = prompt["event"]["scheduled_at"]
        .as_str()
        .unwrap_or_else(|| panic!("not scheduled: {prompt}"))
        .to_string();
    let ahead = time::OffsetDateTime::parse(
        &scheduled_at,
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339")
        - time::OffsetDateTime::now_utc();
    assert!(
        ahead.whole_minutes() > 110 && ahead.whole_minutes() <= 120,
        "two hours ahead: {scheduled_at}"
    );
    tmux.wait_for_async("laptop", "the scheduled prompt", |s| {
        s.contains("run the nightly checks")
            && s.contains(&format!("(scheduled for {scheduled_at})"))
    })
    .await;

    key(&tmux, "laptop", "C-d");
    tmux.wait_for_async("laptop", "the exit", |s| s.contains("CLIENT-EXITED 0"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_question_prompts_are_answered_with_keys() {
    let fx = Fixture::new();
    let server = fx.start(ServerOptions::default());
    let tmux = Tmux::new("attach-plan");
    start_attach(&tmux, &fx, &server.url, "laptop");
    let mut script = server.client(&fx.owner2, Some("script")).await;
    script.attach("default", None).await;

    let ok = script.prompt("exit-plan").await;
    let plan_turn = ok["prompt_id"].as_str().expect("prompt_id").to_string();
    let screen = tmux
        .wait_for_async("laptop", "the plan prompt", |s| {
            s.contains("Approve the plan? [y] yes  [a] yes, and accept edits")
        })
        .await;
    assert!(
        screen.contains("? the agent's plan, for approval:"),
        "{screen}"
    );
    assert!(
        screen.contains("  Plan\n"),
        "the heading without its #:\n{screen}"
    );
    assert!(screen.contains("  1. Read the code."), "{screen}");
    key(&tmux, "laptop", "a");
    let (resolved, _) = script.recv_event("relay.resolved").await;
    assert_eq!(resolved["event"]["response"]["behavior"], "allow");
    // The CLI's own switch to default, then the client's acceptEdits.
    let (_, _) = script
        .recv_until("relay.settings acceptEdits", |v: &Value| {
            v["event"]["type"] == "relay.settings"
                && v["event"]["settings"]["permission_mode"] == "acceptEdits"
        })
        .await;
    script.wait_turn(&plan_turn, &["ended"]).await;

    let ok = script.prompt("ask-question").await;
    let question_turn = ok["prompt_id"].as_str().expect("prompt_id").to_string();
    let screen = tmux
        .wait_for_async("laptop", "the questions", |s| s.contains("Answer Q1 of 2"))
        .await;
    assert!(
        screen.contains("Q1 [Color] Which color should the button be?"),
        "{screen}"
    );
    assert!(screen.contains("    2. Blue — A calm blue"), "{screen}");
    typed(&tmux, "laptop", "2");
    key(&tmux, "laptop", "Enter");
    tmux.wait_for_async("laptop", "the second question", |s| {
        s.contains("Answer Q2 of 2 — numbers")
    })
    .await;
    typed(&tmux, "laptop", "13");
    key(&tmux, "laptop", "Enter");
    let (resolved, _) = script.recv_event("relay.resolved").await;
    assert_eq!(
        resolved["event"]["response"]["updatedInput"]["answers"],
        json!({"Which color should the button be?":"Blue","Which toppings do you want?":"Cheese, Basil"})
    );
    let (_, frames) = script.wait_turn(&question_turn, &["ended"]).await;
    let said: String = frames
        .iter()
        .filter(|v| v["event"]["type"] == "assistant")
        .map(|v| v["event"]["message"]["content"].to_string())
        .collect();
    assert!(
        said.contains(r#"\"Which toppings do you want?\"=\"Cheese, Basil\""#),
        "{said}"
    );

    key(&tmux, "laptop", "C-d");
    tmux.wait_for_async("laptop", "the exit", |s| s.contains("CLIENT-EXITED 0"))
        .await;
}
