//! The workspace view (docs/protocol.md §11) over the real binary: `relay.changes`
//! per turn, `files.status` against `git status --porcelain=v2`, confinement,
//! the repository left untouched, a hostile repository's programs never run.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::{Fixture, ServerOptions, TestClient};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "T")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "T")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn init_repo(dir: &Path) {
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("edit.txt"), "one\ntwo\nthree\n").unwrap();
    std::fs::write(dir.join("other.txt"), "other\n").unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "first"]);
}

/// What must not change: index bytes, refs, stash, config, object count.
fn repo_state(dir: &Path) -> (Vec<u8>, String, String, Vec<u8>, usize) {
    let objects = walk_count(&dir.join(".git/objects"));
    (
        std::fs::read(dir.join(".git/index")).unwrap_or_default(),
        git(dir, &["for-each-ref"]),
        git(dir, &["stash", "list"]),
        std::fs::read(dir.join(".git/config")).unwrap(),
        objects,
    )
}

fn walk_count(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

/// Runs one `run-bash` turn, allowing its command; returns its prompt id and
/// every frame up to the next turn's start (or the wait's end).
async fn bash_turn(c: &mut TestClient, cmd: &str) -> String {
    let ok = c.prompt(&format!("run-bash {cmd}")).await;
    let prompt_id = ok["prompt_id"].as_str().unwrap().to_owned();
    let (req, _) = c.recv_event("control_request").await;
    let request_id = req["event"]["request_id"].as_str().unwrap().to_owned();
    let reply = c
        .request(
            json!({"type": "respond", "request_id": request_id, "response": {"behavior": "allow"}}),
            "allow",
        )
        .await;
    assert_eq!(reply["type"], "ok", "{reply}");
    prompt_id
}

fn by_path(files: &Value) -> std::collections::BTreeMap<String, Value> {
    files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_owned(), f.clone()))
        .collect()
}

#[tokio::test]
async fn a_turn_reports_its_changes_and_the_repository_stays_untouched() {
    let f = Fixture::new();
    init_repo(&f.workdir());
    let before = repo_state(&f.workdir());
    let server = f.start(ServerOptions::default());
    let mut c = server.client(&f.owner, None).await;
    c.attach("default", None).await;

    // An earlier turn changes another file.
    let first = bash_turn(&mut c, "echo more >> other.txt").await;
    let (ended, _) = c
        .recv_until("first turn's changes", |v| {
            v["event"]["type"] == "relay.changes" && v["event"]["prompt_id"] == first.as_str()
        })
        .await;
    assert_eq!(by_path(&ended["event"]["files"]).len(), 1, "{ended}");

    let second = bash_turn(
        &mut c,
        "printf 'a\\nb\\n' > new1.txt; printf 'x\\n' > new2.txt; printf 'one\\nTWO\\nthree\\nfour\\n' > edit.txt",
    )
    .await;
    let (turn_end, _) = c
        .recv_until("the turn's end", |v| {
            v["event"]["type"] == "relay.turn"
                && v["event"]["prompt_id"] == second.as_str()
                && v["event"]["phase"] == "ended"
        })
        .await;
    let (changes, _) = c
        .recv_until("relay.changes", |v| v["event"]["type"] == "relay.changes")
        .await;
    assert!(changes["seq"].as_u64() > turn_end["seq"].as_u64());
    assert_eq!(changes["event"]["prompt_id"], second.as_str());
    let files = by_path(&changes["event"]["files"]);
    assert_eq!(
        files.keys().cloned().collect::<Vec<_>>(),
        ["edit.txt", "new1.txt", "new2.txt"],
        "{changes}"
    );
    assert_eq!(files["new1.txt"]["status"], "added");
    assert_eq!(files["new1.txt"]["insertions"], 2);
    assert_eq!(files["new2.txt"]["insertions"], 1);
    assert_eq!(files["edit.txt"]["status"], "modified");
    assert_eq!(files["edit.txt"]["insertions"], 2);
    assert_eq!(files["edit.txt"]["deletions"], 1);

    // The turn's diff shows only that turn.
    let diff = c
        .request(
            json!({"type": "files.diff", "session": "default", "base": format!("turn:{second}")}),
            "d1",
        )
        .await;
    assert_eq!(diff["type"], "files.diff", "{diff}");
    let text = diff["diff"].as_str().unwrap();
    assert!(
        text.contains("+++ b/new1.txt") && text.contains("+TWO"),
        "{text}"
    );
    assert!(!text.contains("other.txt"), "{text}");
    // Against HEAD, both turns show.
    let diff = c
        .request(json!({"type": "files.diff", "session": "default"}), "d2")
        .await;
    let text = diff["diff"].as_str().unwrap();
    assert!(
        text.contains("other.txt") && text.contains("new2.txt"),
        "{text}"
    );

    let status = c
        .request(json!({"type": "files.status", "session": "default"}), "s")
        .await;
    assert_eq!(status["git"], true, "{status}");
    assert_eq!(status["branch"], "main");
    let files = by_path(&status["files"]);
    assert_eq!(files["new1.txt"]["status"], "untracked");
    assert_eq!(files["other.txt"]["status"], "modified");
    let _ = c
        .request(
            json!({"type": "files.read", "session": "default", "path": "edit.txt"}),
            "r",
        )
        .await;
    let _ = c
        .request(json!({"type": "files.list", "session": "default"}), "l")
        .await;

    assert_eq!(repo_state(&f.workdir()), before, "the repository changed");
}

#[tokio::test]
async fn status_matches_porcelain_v2() {
    let f = Fixture::new();
    let w = f.workdir();
    init_repo(&w);
    std::fs::write(w.join("ren.txt"), "r1\nr2\nr3\nr4\nr5\n").unwrap();
    std::fs::write(w.join("gone.txt"), "g\n").unwrap();
    git(&w, &["add", "."]);
    git(&w, &["commit", "-q", "-m", "more"]);
    // A conflict from a real merge.
    git(&w, &["checkout", "-q", "-b", "side"]);
    std::fs::write(w.join("other.txt"), "side\n").unwrap();
    git(&w, &["commit", "-q", "-am", "side"]);
    git(&w, &["checkout", "-q", "main"]);
    std::fs::write(w.join("other.txt"), "main\n").unwrap();
    git(&w, &["commit", "-q", "-am", "main"]);
    git(&w, &["merge", "-q", "side"]);
    std::fs::write(w.join("edit.txt"), "one\n").unwrap();
    git(&w, &["mv", "ren.txt", "renamed.txt"]);
    std::fs::remove_file(w.join("gone.txt")).unwrap();
    std::fs::write(w.join("staged.txt"), "s\n").unwrap();
    git(&w, &["add", "staged.txt"]);
    std::fs::write(w.join("loose.txt"), "l\n").unwrap();
    let porcelain = git(&w, &["status", "--porcelain=v2", "-uall"]);
    let mut expected: Vec<(String, &str)> = porcelain
        .lines()
        .map(|line| {
            let kind = &line[..1];
            let xy = line.get(2..4).unwrap_or("");
            let path = match kind {
                "2" => line
                    .rsplit('\t')
                    .nth(1)
                    .unwrap()
                    .rsplit(' ')
                    .next()
                    .unwrap(),
                _ => line.rsplit(' ').next().unwrap(),
            };
            let status = match kind {
                "u" => "conflicted",
                "?" => "untracked",
                "2" => "renamed",
                _ if xy.contains('A') => "added",
                _ if xy.contains('D') => "deleted",
                _ => "modified",
            };
            (path.to_owned(), status)
        })
        .collect();
    expected.sort();
    assert_eq!(expected.len(), 6, "{porcelain}");
    let before = repo_state(&w);
    let server = f.start(ServerOptions::default());
    let mut c = server.client(&f.owner, None).await;
    let status = c
        .request(json!({"type": "files.status", "session": "default"}), "s")
        .await;
    let mut got: Vec<(String, String)> = status["files"]
        .as_array()
        .unwrap_or_else(|| panic!("{status}"))
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    let expected: Vec<(String, String)> = expected
        .into_iter()
        .map(|(p, s)| (p, s.to_owned()))
        .collect();
    assert_eq!(got, expected, "{status}");
    let renamed = status["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["status"] == "renamed")
        .unwrap();
    assert_eq!(renamed["from"], "ren.txt");
    assert_eq!(repo_state(&w), before, "the repository changed");
}

#[tokio::test]
async fn paths_are_confined_and_viewers_need_the_flag() {
    let f = Fixture::new();
    let w = f.workdir();
    init_repo(&w);
    std::os::unix::fs::symlink("/etc", w.join("etc-link")).unwrap();
    let server = f.start(ServerOptions::default());
    let mut c = server.client(&f.owner, None).await;
    for (i, path) in [
        "..",
        "/etc/passwd",
        "etc-link",
        "etc-link/passwd",
        ".git/config",
        "a\0b",
        "x/../..",
    ]
    .iter()
    .enumerate()
    {
        for kind in ["files.read", "files.list"] {
            let reply = c
                .request(
                    json!({"type": kind, "session": "default", "path": path}),
                    &format!("{kind}{i}"),
                )
                .await;
            assert_eq!(reply["code"], "forbidden", "{kind} {path:?}: {reply}");
        }
    }
    let missing = c
        .request(
            json!({"type": "files.read", "session": "default", "path": "nope"}),
            "m",
        )
        .await;
    assert_eq!(missing["code"], "not_found");
    let mut v = server.client(&f.viewer, None).await;
    let refused = v
        .request(json!({"type": "files.status", "session": "default"}), "v")
        .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    drop(server);
    let server = f.start(ServerOptions::default().arg("--viewer-files"));
    let mut v = server.client(&f.viewer, None).await;
    let allowed = v
        .request(
            json!({"type": "files.read", "session": "default", "path": "edit.txt"}),
            "v2",
        )
        .await;
    assert_eq!(allowed["type"], "files.read", "{allowed}");
    assert_eq!(allowed["data"], "one\ntwo\nthree\n");
    // The audit writer appends in the background: wait for the line, bounded.
    let mut audit = String::new();
    for _ in 0..100 {
        audit = std::fs::read_to_string(f.data_dir().join("audit.jsonl")).unwrap_or_default();
        if audit.contains("file_read") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let line = audit
        .lines()
        .find(|l| l.contains("file_read"))
        .unwrap_or_default();
    assert!(
        line.contains("edit.txt") && line.contains("viewer"),
        "{audit}"
    );
}

#[tokio::test]
async fn a_hostile_repository_runs_nothing() {
    let f = Fixture::new();
    let w = f.workdir();
    init_repo(&w);
    let markers = f.path().join("markers");
    std::fs::create_dir(&markers).unwrap();
    let m = |n: &str| markers.join(n).display().to_string();
    std::fs::write(w.join(".gitattributes"), "*.txt filter=evil diff=evil\n").unwrap();
    git(&w, &["add", ".gitattributes"]);
    git(&w, &["commit", "-q", "-m", "attrs"]);
    let script = f.path().join("fsmonitor.sh");
    std::fs::write(&script, format!("#!/bin/sh\ntouch {}\n", m("fsmonitor"))).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for (k, v) in [
        ("core.fsmonitor", script.display().to_string()),
        ("core.pager", format!("touch {}; cat", m("pager"))),
        ("filter.evil.clean", format!("touch {}; cat", m("clean"))),
        ("filter.evil.smudge", format!("touch {}; cat", m("smudge"))),
        ("filter.evil.process", format!("touch {}", m("process"))),
        (
            "diff.evil.textconv",
            format!("touch {}; cat", m("textconv")),
        ),
        ("diff.external", format!("touch {}", m("external"))),
    ] {
        git(&w, &["config", k, &v]);
    }
    let hook = w.join(".git/hooks/post-checkout");
    std::fs::write(&hook, format!("#!/bin/sh\ntouch {}\n", m("hook"))).unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(w.join("edit.txt"), "changed\n").unwrap();
    let server = f.start(ServerOptions::default());
    let mut c = server.client(&f.owner, None).await;
    c.attach("default", None).await;
    let status = c
        .request(json!({"type": "files.status", "session": "default"}), "s")
        .await;
    assert_eq!(status["git"], true, "{status}");
    let diff = c
        .request(
            json!({"type": "files.diff", "session": "default", "path": "edit.txt"}),
            "d",
        )
        .await;
    assert!(
        diff["diff"].as_str().unwrap().contains("+changed"),
        "{diff}"
    );
    let id = bash_turn(&mut c, "echo x > edit.txt").await;
    c.recv_until("changes", |v| {
        v["event"]["type"] == "relay.changes" && v["event"]["prompt_id"] == id.as_str()
    })
    .await;
    let fired: Vec<_> = std::fs::read_dir(&markers)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(fired.is_empty(), "programs ran: {fired:?}");

    // core.worktree elsewhere: not a repository.
    let elsewhere = f.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    git(
        &w,
        &["config", "core.worktree", elsewhere.to_str().unwrap()],
    );
    let status = c
        .request(json!({"type": "files.status", "session": "default"}), "s2")
        .await;
    assert_eq!(status["git"], false, "{status}");
    let diff = c
        .request(json!({"type": "files.diff", "session": "default"}), "d2")
        .await;
    assert_eq!(diff["code"], "not_a_repository", "{diff}");
}

#[tokio::test]
async fn reads_and_listings_are_capped() {
    let f = Fixture::new();
    let w = f.workdir();
    let big = std::fs::File::create(w.join("big.bin")).unwrap();
    big.set_len(200 * 1024 * 1024).unwrap();
    let many = w.join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..100_000 {
        std::fs::File::create(many.join(format!("f{i}"))).unwrap();
    }
    let server = f.start(ServerOptions::default());
    let mut c = server.client(&f.owner, None).await;
    let read = c
        .request(
            json!({"type": "files.read", "session": "default", "path": "big.bin"}),
            "r",
        )
        .await;
    assert_eq!(read["truncated"], true, "{}", read["type"]);
    assert_eq!(read["size"], 200 * 1024 * 1024);
    assert_eq!(read["encoding"], "base64");
    let bytes = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        read["data"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(bytes.len(), 256 * 1024);
    let list = c
        .request(
            json!({"type": "files.list", "session": "default", "path": "many"}),
            "l",
        )
        .await;
    assert_eq!(list["entries"].as_array().unwrap().len(), 2000);
    assert_eq!(list["truncated"], true);
    let status = c
        .request(json!({"type": "files.status", "session": "default"}), "s")
        .await;
    assert_eq!(status["git"], false, "{status}");
}
