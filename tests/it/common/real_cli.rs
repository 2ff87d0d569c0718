//! Running a stream-json agent (the real Claude Code CLI, or the mock agent)
//! as a child process over pipes, for integration tests.
//!
//! - [`claude_bin`] / [`require_real_cli`]: find the pinned real CLI, or skip;
//! - [`offline_env`]: the environment that runs it offline against [`super::mock_anthropic`];
//! - [`AgentChild`]: a child on pipes with line reads under timeouts
//!   (synchronous: reader threads and channels, usable from any test).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// The flags ccrelay starts every agent with (what the relay passes to `claude`).
#[allow(unused_imports)] // not every test binary that includes `common` uses it
pub use ccrelay::agent::process::STREAM_JSON_FLAGS;

/// The real CLI: `$CCRELAY_CLAUDE_BIN`, else the pinned install in `tools/claude-cli`.
pub fn claude_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("CCRELAY_CLAUDE_BIN").filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    let pinned =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/claude-cli/node_modules/.bin/claude");
    pinned.exists().then_some(pinned)
}

/// The real CLI, or `None` after printing the SKIPPED line. Panics instead under
/// `CCRELAY_REQUIRE_ALL=1` (CI), so a missing install cannot pass silently.
pub fn require_real_cli() -> Option<PathBuf> {
    if let Some(bin) = claude_bin() {
        return Some(bin);
    }
    super::require::missing(
        "the real Claude Code CLI",
        "scripts/test installs it; or `npm ci` in tools/claude-cli, or set CCRELAY_CLAUDE_BIN",
    );
    None
}

/// The environment the real CLI needs to run offline against a mock API at
/// `mock_base_url`, with all its state inside the throwaway folder `home`.
pub fn offline_env(home: &Path, mock_base_url: &str) -> Vec<(String, String)> {
    let home_s = home.display().to_string();
    let config = home.join(".claude");
    let tmp = home.join("tmp");
    // Best effort: the CLI wants both to exist; a failure shows up in the test anyway.
    let _ = std::fs::create_dir_all(&config);
    let _ = std::fs::create_dir_all(&tmp);
    [
        ("ANTHROPIC_BASE_URL", mock_base_url.to_string()),
        ("ANTHROPIC_API_KEY", "test".to_string()),
        ("HOME", home_s),
        ("CLAUDE_CONFIG_DIR", config.display().to_string()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_string()),
        ("DISABLE_TELEMETRY", "1".to_string()),
        ("DISABLE_AUTOUPDATER", "1".to_string()),
        ("DISABLE_ERROR_REPORTING", "1".to_string()),
        ("TMPDIR", tmp.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// [`offline_env`], authenticated as an LLM gateway's client instead of with an
/// API key: `ANTHROPIC_AUTH_TOKEN` is a JWT whose audience is `claude-gateway`
/// (unsigned: the CLI only reads its claims). The CLI then reports a usage limit
/// with its reset time as a `rate_limit_event`, as it does for claude.ai logins
/// (docs/protocol.md §10.1); with an API key it does not.
pub fn gateway_env(home: &Path, mock_base_url: &str) -> Vec<(String, String)> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let token = format!(
        "{}.{}.unsigned",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(r#"{"aud":"claude-gateway","sub":"ccrelay-tests","exp":4102444800}"#)
    );
    let mut env: Vec<(String, String)> = offline_env(home, mock_base_url)
        .into_iter()
        .filter(|(k, _)| k != "ANTHROPIC_API_KEY")
        .collect();
    env.push(("ANTHROPIC_AUTH_TOKEN".into(), token));
    env
}

/// An `initialize` control_request.
pub fn initialize(request_id: &str) -> Value {
    json!({"type":"control_request","request_id":request_id,"request":{"subtype":"initialize","hooks":null}})
}

/// An `interrupt` control_request.
pub fn interrupt(request_id: &str) -> Value {
    json!({"type":"control_request","request_id":request_id,"request":{"subtype":"interrupt"}})
}

/// A prompt, optionally stamped with a host-chosen uuid.
pub fn user_prompt(text: &str, uuid: Option<&str>) -> Value {
    let mut v = json!({"type":"user","message":{"role":"user","content":text},"parent_tool_use_id":null,"session_id":""});
    if let Some(u) = uuid {
        v["uuid"] = json!(u);
    }
    v
}

/// The host's answer to a can_use_tool request: allow (echoing `input`).
pub fn allow(request_id: &str, input: &Value) -> Value {
    json!({"type":"control_response","response":{"subtype":"success","request_id":request_id,
        "response":{"behavior":"allow","updatedInput":input}}})
}

/// The host's answer to a can_use_tool request: deny with `message`.
pub fn deny(request_id: &str, message: &str) -> Value {
    json!({"type":"control_response","response":{"subtype":"success","request_id":request_id,
        "response":{"behavior":"deny","message":message}}})
}

/// `type`, or `type/subtype` for system lines, or `stream_event/<event type>`.
pub fn kind(v: &Value) -> String {
    let t = v["type"].as_str().unwrap_or("?");
    match t {
        "system" => format!("system/{}", v["subtype"].as_str().unwrap_or("?")),
        "stream_event" => format!(
            "stream_event/{}",
            v["event"]["type"].as_str().unwrap_or("?")
        ),
        _ => t.to_string(),
    }
}

/// A stream-json agent process on pipes.
pub struct AgentChild {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// Closed (sender dropped) when stderr reaches EOF: after an exit, `stderr()`
    /// must hold everything the process wrote, not what the reader had caught up on.
    stderr_done: Receiver<()>,
    /// Every stdout line received so far.
    pub transcript: Vec<String>,
}

impl AgentChild {
    /// Spawns `cmd` with piped stdin/stdout/stderr.
    pub fn spawn(mut cmd: Command) -> anyhow::Result<Self> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout")?;
        let mut stderr_pipe = child.stderr.take().context("no stderr")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if line.ends_with('\n') {
                            line.pop();
                        }
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let (stderr_eof, stderr_done) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _eof_on_return = stderr_eof;
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    return;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            lines,
            stderr,
            stderr_done,
            transcript: Vec::new(),
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one JSON line to stdin.
    pub fn send(&mut self, v: &Value) -> anyhow::Result<()> {
        self.send_raw(&v.to_string())
    }

    /// Writes one raw line (a `\n` is appended) to stdin.
    pub fn send_raw(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        stdin.write_all(line.as_bytes())?;
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Closes stdin (EOF for the agent).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next stdout line; `Ok(None)` at EOF; an error on timeout.
    pub fn next_line(&mut self, timeout: Duration) -> anyhow::Result<Option<String>> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.transcript.push(line.clone());
                Ok(Some(line))
            }
            Err(RecvTimeoutError::Disconnected) => Ok(None),
            Err(RecvTimeoutError::Timeout) => bail!(
                "no stdout line within {timeout:?}; last lines: {:?}; stderr: {}",
                self.tail(3),
                self.stderr()
            ),
        }
    }

    /// Whether a stdout line arrives within `wait` (for "nothing is written" checks).
    pub fn quiet_for(&mut self, wait: Duration) -> anyhow::Result<bool> {
        match self.lines.recv_timeout(wait) {
            Ok(line) => {
                self.transcript.push(line);
                Ok(false)
            }
            Err(RecvTimeoutError::Timeout) => Ok(true),
            Err(RecvTimeoutError::Disconnected) => Ok(true),
        }
    }

    /// The next stdout line as JSON; an error at EOF, on timeout or on non-JSON.
    pub fn next_json(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        let line = self.next_line(timeout)?.context("stdout closed")?;
        serde_json::from_str(&line).with_context(|| format!("not JSON: {}", preview(&line)))
    }

    /// Reads JSON lines until one matches `pred` (within `timeout` overall);
    /// returns every line read, the match last.
    pub fn read_until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .next_json(left)
                .with_context(|| format!("waiting for a line; kinds so far: {:?}", kinds(&seen)))?;
            let hit = pred(&v);
            seen.push(v);
            if hit {
                return Ok(seen);
            }
        }
    }

    /// Reads until the next `result` line.
    pub fn read_turn(&mut self, timeout: Duration) -> anyhow::Result<Vec<Value>> {
        self.read_until(timeout, |v| v["type"] == "result")
    }

    /// Closes stdin and requires the process to exit 0 within `timeout`: what an
    /// agent does when the relay lets go of it.
    pub fn exits_cleanly_on_eof(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.close_stdin();
        let status = self.wait(timeout)?;
        anyhow::ensure!(
            status.code() == Some(0),
            "exit {status} on EOF; stderr: {}",
            self.stderr()
        );
        Ok(())
    }

    /// Waits for the exit, killing the child after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                // A grandchild may still hold the pipe open: wait a little, not forever.
                let _ = self.stderr_done.recv_timeout(Duration::from_secs(2));
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                bail!("did not exit within {timeout:?}; stderr: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn tail(&self, n: usize) -> Vec<String> {
        let skip = self.transcript.len().saturating_sub(n);
        self.transcript[skip..].iter().map(|l| preview(l)).collect()
    }
}

impl Drop for AgentChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The [`kind`]s of a list of lines.
pub fn kinds(lines: &[Value]) -> Vec<String> {
    lines.iter().map(kind).collect()
}

fn preview(line: &str) -> String {
    if line.len() > 300 {
        let mut end = 300;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &line[..end], line.len())
    } else {
        line.to_string()
    }
}
