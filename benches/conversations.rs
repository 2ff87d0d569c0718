//! Time of `conversations.list` (docs/protocol.md §4) over many large transcripts.
//!
//! Run with `cargo bench --bench conversations`: writes 500 transcripts of 1 MB
//! each (shaped like the CLI's: an opening with the prompt and `cwd`, assistant
//! records, an `ai-title` near the end) into a temporary config dir, then times
//! `list(limit = 50)` several times: "cold-ish" runs after asking the kernel to
//! drop the files' cached pages (`posix_fadvise(DONTNEED)`; not a guaranteed cold
//! cache), and warm runs. Prints the median and the maximum; asserts nothing about
//! time. Under `cargo test` it is a quick smoke run with small files.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ccrelay_server::workdirs::conversations::{self, encode_project_dir};

/// Timed runs per temperature.
const RUNS: usize = 7;

fn transcript(id: &str, cwd: &Path, n: usize, size: usize) -> Vec<u8> {
    let mut out = String::new();
    let prompt = format!("Conversation number {n}: fix the login bug\nwith details");
    out.push_str(
        &serde_json::json!({"type":"queue-operation","operation":"enqueue","sessionId":id,"content":prompt})
            .to_string(),
    );
    out.push('\n');
    out.push_str(
        &serde_json::json!({"parentUuid":null,"isSidechain":false,"type":"user","message":{"role":"user","content":prompt},"cwd":cwd,"sessionId":id,"version":"2.1.332"})
            .to_string(),
    );
    out.push('\n');
    let filler = serde_json::json!({"parentUuid":"x","isSidechain":false,"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"lorem ipsum ".repeat(300)}]},"cwd":cwd,"sessionId":id})
        .to_string();
    let title =
        serde_json::json!({"type":"ai-title","aiTitle":format!("Title {n}"),"sessionId":id})
            .to_string();
    while out.len() + filler.len() + title.len() + 2 < size {
        out.push_str(&filler);
        out.push('\n');
    }
    out.push_str(&title);
    out.push('\n');
    out.into_bytes()
}

/// Asks the kernel to drop `path`'s cached pages (after syncing them).
fn drop_cache(path: &Path) {
    if let Ok(file) = File::open(path) {
        let _ = file.sync_all();
        // SAFETY: a plain advisory call on an open descriptor.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
}

fn stats(label: &str, mut times: Vec<Duration>) {
    times.sort();
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    println!(
        "{label:<10} runs {:>2}  median {:>8.2} ms  max {:>8.2} ms",
        times.len(),
        median.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
}

fn main() -> anyhow::Result<()> {
    let bench = std::env::args().any(|a| a == "--bench");
    let (files, size) = if bench {
        (500, 1024 * 1024)
    } else {
        println!("(smoke run: use `cargo bench --bench conversations` for figures)");
        (20, 128 * 1024)
    };
    let tmp = tempfile::tempdir()?;
    let base = std::fs::canonicalize(tmp.path())?;
    let workdir = base.join("src/api");
    std::fs::create_dir_all(&workdir)?;
    let config = base.join("claude");
    let project = config.join("projects").join(encode_project_dir(&workdir));
    std::fs::create_dir_all(&project)?;
    let written = Instant::now();
    let mut paths: Vec<PathBuf> = Vec::with_capacity(files);
    for n in 0..files {
        let id = format!("00000000-0000-4000-8000-{n:012}");
        let path = project.join(format!("{id}.jsonl"));
        File::create(&path)?.write_all(&transcript(&id, &workdir, n, size))?;
        paths.push(path);
    }
    println!(
        "wrote {files} transcripts of {} KiB in {:.1} s",
        size / 1024,
        written.elapsed().as_secs_f64()
    );
    let nobody = |_: &str| None;
    let mut cold = Vec::new();
    for _ in 0..RUNS {
        for path in &paths {
            drop_cache(path);
        }
        let start = Instant::now();
        let page = conversations::list(&config, &workdir, 50, None, &nobody)?;
        cold.push(start.elapsed());
        anyhow::ensure!(
            page.conversations.len() == 50.min(files),
            "listed {}",
            page.conversations.len()
        );
    }
    let mut warm = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let page = conversations::list(&config, &workdir, 50, None, &nobody)?;
        warm.push(start.elapsed());
        anyhow::ensure!(page.more == (files > 50), "more is {}", page.more);
    }
    println!("list(limit=50) over {files} transcripts:");
    stats("cold-ish", cold);
    stats("warm", warm);
    Ok(())
}
