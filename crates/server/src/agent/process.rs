//! One running agent process: spawn, the single stdin writer, the bounded stdout
//! line reader, stderr to the log, exit status, and process-group hygiene.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// How the agent process is run and supervised (`--agent-*`, and what follows `--`).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub cmd: PathBuf,
    pub extra_args: Vec<String>,
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub max_restarts: u32,
    pub restart_window: Duration,
    pub stop_grace: Duration,
    /// `--agent-idle-stop`: stop an agent idle this long (none: never).
    pub idle_stop: Option<Duration>,
    /// `--allow-bypass-permissions`: start agents with the CLI's flag that permits
    /// switching to `bypassPermissions` (docs/protocol.md §10).
    pub allow_bypass: bool,
}

/// The CLI's flag that lets a session switch to `bypassPermissions` later
/// without starting in it (docs/protocol.md §10.1).
pub const ALLOW_BYPASS_FLAG: &str = "--allow-dangerously-skip-permissions";

/// Agent stdout lines longer than this are dropped (docs/protocol.md §5.2, `relay.dropped`: 32 MiB).
pub const MAX_LINE_BYTES: usize = 32 * 1024 * 1024;
/// Lines the writer task may hold before `send` reports the agent as unavailable.
const STDIN_QUEUE: usize = 1024;
/// After the process exits, how long its stdout may stay open (a grandchild holding it).
const STDOUT_DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// How the process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    /// Signal name such as `SIGKILL`.
    pub signal: Option<String>,
}

/// What the process reports to its session, tagged with the process generation.
#[derive(Debug)]
pub enum AgentOutput {
    /// One stdout line without its newline.
    Line(Bytes),
    /// A stdout line longer than [`MAX_LINE_BYTES`] was dropped.
    Dropped {
        /// Its full length.
        bytes: u64,
        /// It was the turn's `result` (seen in its first or last bytes), so the
        /// turn still ends even though the line itself cannot be relayed.
        was_result: bool,
    },
    /// stderr said the conversation to resume does not exist.
    ConversationNotFound,
    /// The process ended and its stdout is drained: always the last output.
    Exited(ExitInfo),
}

/// An output plus the generation of the process that produced it, so a session can
/// ignore what a previous process said after it was replaced.
#[derive(Debug)]
pub struct Tagged {
    pub generation: u64,
    pub output: AgentOutput,
}

/// Why a line could not be handed to the agent.
#[derive(Debug, thiserror::Error)]
#[error("the agent is not accepting input")]
pub struct AgentGone;

/// What to start.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub session: String,
    pub workdir: PathBuf,
    pub resume: Option<String>,
    /// With `resume`: `--fork-session` (continue a copy under a new id).
    pub fork: bool,
    pub generation: u64,
    /// The session's settings as flags (`--permission-mode`, `--model`,
    /// `--effort`), passed at every start (docs/protocol.md §10).
    pub settings_flags: Vec<String>,
}

/// A running agent process. Dropping it kills the process group.
#[derive(Debug)]
pub struct AgentProcess {
    pub pid: u32,
    pub generation: u64,
    stdin_tx: mpsc::Sender<Bytes>,
    exited: Arc<AtomicBool>,
}

/// The flags every agent is started with: the stream-json host protocol, with
/// permission prompts routed over stdio and partial messages for live streaming.
pub const STREAM_JSON_FLAGS: &[&str] = &[
    "-p",
    "--input-format",
    "stream-json",
    "--output-format",
    "stream-json",
    "--verbose",
    "--permission-prompt-tool",
    "stdio",
    "--include-partial-messages",
];

/// The agent's full argument list: the protocol flags, `--resume`, the operator's extras.
pub fn agent_args(spec: &SpawnSpec, config: &AgentConfig) -> Vec<String> {
    let mut args: Vec<String> = STREAM_JSON_FLAGS.iter().map(|s| s.to_string()).collect();
    if let Some(id) = &spec.resume {
        // The id comes from disk (meta.json, the journal): only a UUID becomes an
        // argument, so a tampered file cannot smuggle in a flag.
        if valid_conversation_id(id) {
            args.push("--resume".into());
            args.push(id.clone());
            if spec.fork {
                args.push("--fork-session".into());
            }
        } else {
            tracing::warn!(session = %spec.session, conversation = %id, "not a conversation id (a UUID); starting a new conversation");
        }
    }
    if config.allow_bypass {
        args.push(ALLOW_BYPASS_FLAG.into());
    }
    args.extend(spec.settings_flags.iter().cloned());
    args.extend(config.extra_args.iter().cloned());
    args
}

/// How long the start-up check of [`ALLOW_BYPASS_FLAG`] may take.
const BYPASS_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// With `--allow-bypass-permissions` and running as root: start the agent once
/// with its flags and no input. The CLI refuses [`ALLOW_BYPASS_FLAG`] for root
/// unless its sandbox variable (`IS_SANDBOX=1`) says so, and would then exit at
/// every start; `serve` exits 2 with the CLI's reason instead (docs/protocol.md §10).
/// Blocking: run it off the async workers.
pub fn check_allow_bypass(config: &AgentConfig) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let mut child = std::process::Command::new(&config.cmd)
        .args(STREAM_JSON_FLAGS)
        .arg(ALLOW_BYPASS_FLAG)
        .args(&config.extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {} to check it: {e}", config.cmd.display()))?;
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < BYPASS_CHECK_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not finish a start with {ALLOW_BYPASS_FLAG} and no input within {} s",
                    config.cmd.display(),
                    BYPASS_CHECK_TIMEOUT.as_secs()
                ));
            }
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.by_ref().take(64 * 1024).read_to_string(&mut stderr);
    }
    let reason = stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| {
            l.chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect::<String>()
        })
        .unwrap_or_else(|| format!("it exited with {status}"));
    Err(format!(
        "the agent refuses {ALLOW_BYPASS_FLAG} while running as root: {reason} (set IS_SANDBOX=1 in a sandbox, or run as another user)"
    ))
}

/// Whether `id` is a conversation id as Claude Code makes them: a UUID in its
/// canonical hyphenated form (36 characters, so never a flag or a path).
pub fn valid_conversation_id(id: &str) -> bool {
    id.len() == 36 && uuid::Uuid::try_parse(id).is_ok()
}

impl AgentProcess {
    /// Start the agent in its own process group with piped stdio. Output goes to `out`.
    pub fn spawn(
        spec: &SpawnSpec,
        config: &AgentConfig,
        out: mpsc::Sender<Tagged>,
    ) -> std::io::Result<AgentProcess> {
        let mut cmd = Command::new(&config.cmd);
        cmd.args(agent_args(spec, config))
            .current_dir(&spec.workdir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: only async-signal-safe calls (prctl) between fork and exec.
        unsafe {
            let umask = crate::datadir::original_umask();
            cmd.pre_exec(move || {
                // If the relay dies, so does the agent. Best effort: the kernel sends
                // the signal when the thread that spawned the agent exits, which can
                // happen before the relay process does.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // The server runs with umask 077 (owner-only data dir); the agent's
                // files in the user's project get the user's usual umask.
                if let Some(m) = umask {
                    libc::umask(m as libc::mode_t);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let pid = child.id().unwrap_or(0);
        let (stdin, stdout, stderr) =
            match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
                (Some(i), Some(o), Some(e)) => (i, o, e),
                _ => return Err(std::io::Error::other("agent stdio pipes missing")),
            };
        let generation = spec.generation;
        let (stdin_tx, stdin_rx) = mpsc::channel(STDIN_QUEUE);
        let exited = Arc::new(AtomicBool::new(false));
        tokio::spawn(write_stdin(stdin, stdin_rx, spec.session.clone(), pid));
        tokio::spawn(log_stderr(
            stderr,
            spec.session.clone(),
            pid,
            generation,
            out.clone(),
        ));
        tokio::spawn(read_stdout_then_wait(
            child,
            stdout,
            generation,
            out,
            exited.clone(),
            pid,
        ));
        Ok(AgentProcess {
            pid,
            generation,
            stdin_tx,
            exited,
        })
    }

    /// Queue one line (a JSON object the relay built) for the agent's stdin.
    pub fn send(&self, line: String) -> Result<(), AgentGone> {
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        self.stdin_tx
            .try_send(Bytes::from(bytes))
            .map_err(|_| AgentGone)
    }

    /// Signal the whole process group.
    pub fn signal_group(&self, signal: Signal) {
        signal_group(self.pid, signal);
    }

    /// True once the process has exited.
    pub fn has_exited(&self) -> bool {
        self.exited.load(Ordering::Acquire)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if !self.has_exited() {
            self.signal_group(Signal::SIGKILL);
        }
    }
}

/// Send `signal` to the process group led by `pid` (errors mean it is already gone).
pub fn signal_group(pid: u32, signal: Signal) {
    if pid == 0 {
        return;
    }
    let _ = killpg(Pid::from_raw(pid as i32), signal);
}

async fn write_stdin(
    mut stdin: ChildStdin,
    mut rx: mpsc::Receiver<Bytes>,
    session: String,
    pid: u32,
) {
    while let Some(line) = rx.recv().await {
        if let Err(e) = stdin.write_all(&line).await {
            tracing::debug!(session = %session, pid, error = %e, "agent stdin closed");
            return;
        }
        if rx.is_empty()
            && let Err(e) = stdin.flush().await
        {
            tracing::debug!(session = %session, pid, error = %e, "agent stdin closed");
            return;
        }
    }
}

async fn log_stderr(
    stderr: impl AsyncRead + Unpin,
    session: String,
    pid: u32,
    generation: u64,
    out: mpsc::Sender<Tagged>,
) {
    // stderr is diagnostics: cap each line so a runaway writer cannot grow memory.
    let mut lines = LineReader::new(BufReader::new(stderr), 64 * 1024);
    loop {
        lines.clear();
        match lines.next_line().await {
            Ok(None) => return,
            Ok(Some(line)) => {
                let text = String::from_utf8_lossy(line.bytes);
                let text = text.trim_end();
                if text.is_empty() {
                    continue;
                }
                tracing::warn!(session = %session, pid, stderr = %text, "agent stderr");
                if text.contains("No conversation found") {
                    let _ = out
                        .send(Tagged {
                            generation,
                            output: AgentOutput::ConversationNotFound,
                        })
                        .await;
                }
            }
            Err(e) => {
                tracing::debug!(session = %session, pid, error = %e, "agent stderr read failed");
                return;
            }
        }
    }
}

/// A `\n`-delimited line reader that keeps at most `max` bytes of a line but
/// reports its full length. Cancel-safe: the partial line lives in the struct, and
/// bytes are consumed from the inner reader only after they were copied.
struct LineReader<R> {
    reader: R,
    buf: Vec<u8>,
    /// The last bytes of a line that overflowed `buf` (at most [`OVERFLOW_TAIL_BYTES`]).
    overflow_tail: Vec<u8>,
    total: u64,
    max: usize,
}

/// How much of the end of an over-long line is kept to tell what it was.
const OVERFLOW_TAIL_BYTES: usize = 16 * 1024;

/// One complete line: its kept prefix, the end of it when it overflowed, and its
/// full length.
struct Line<'a> {
    bytes: &'a [u8],
    overflow_tail: &'a [u8],
    len: u64,
}

impl<R: tokio::io::AsyncBufRead + Unpin> LineReader<R> {
    fn new(reader: R, max: usize) -> Self {
        LineReader {
            reader,
            buf: Vec::new(),
            overflow_tail: Vec::new(),
            total: 0,
            max,
        }
    }

    /// The next line, or `None` at EOF (a last line without newline is still returned).
    async fn next_line(&mut self) -> std::io::Result<Option<Line<'_>>> {
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                if self.total == 0 {
                    return Ok(None);
                }
                break;
            }
            let (chunk, consumed, done) = match memchr(b'\n', available) {
                Some(i) => (&available[..i], i + 1, true),
                None => (available, available.len(), false),
            };
            let room = self.max.saturating_sub(self.buf.len());
            let kept = chunk.len().min(room);
            self.buf.extend_from_slice(&chunk[..kept]);
            if kept < chunk.len() {
                let rest = &chunk[kept..];
                let rest = &rest[rest.len().saturating_sub(OVERFLOW_TAIL_BYTES)..];
                self.overflow_tail.extend_from_slice(rest);
                let excess = self.overflow_tail.len().saturating_sub(OVERFLOW_TAIL_BYTES);
                self.overflow_tail.drain(..excess);
            }
            self.total += chunk.len() as u64;
            self.reader.consume(consumed);
            if done {
                break;
            }
        }
        let len = std::mem::take(&mut self.total);
        Ok(Some(Line {
            bytes: trim_cr(&self.buf),
            overflow_tail: &self.overflow_tail,
            len,
        }))
    }

    /// Forget the line returned last (call before asking for the next one).
    fn clear(&mut self) {
        self.buf.clear();
        self.overflow_tail.clear();
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|b| *b == needle)
}

async fn read_stdout_then_wait(
    mut child: Child,
    stdout: impl AsyncRead + Unpin,
    generation: u64,
    out: mpsc::Sender<Tagged>,
    exited: Arc<AtomicBool>,
    pid: u32,
) {
    let send = |output| {
        let out = out.clone();
        async move { out.send(Tagged { generation, output }).await.is_ok() }
    };
    let mut lines = LineReader::new(
        BufReader::with_capacity(256 * 1024, stdout),
        MAX_LINE_BYTES + 1,
    );
    let mut status = None;
    loop {
        let line = if status.is_some() {
            // The process is gone; give a grandchild that inherited stdout a moment, no more.
            match tokio::time::timeout(STDOUT_DRAIN_AFTER_EXIT, lines.next_line()).await {
                Ok(r) => r,
                Err(_) => {
                    signal_group(pid, Signal::SIGKILL);
                    Ok(None)
                }
            }
        } else {
            tokio::select! {
                r = lines.next_line() => r,
                s = child.wait() => {
                    // A partial line stays in `lines`; the next round finishes it.
                    status = Some(s);
                    exited.store(true, Ordering::Release);
                    continue;
                }
            }
        };
        let output = match line {
            Ok(Some(line)) if line.len as usize > MAX_LINE_BYTES => AgentOutput::Dropped {
                bytes: line.len,
                was_result: is_result_line(line.bytes, line.overflow_tail),
            },
            Ok(Some(line)) => AgentOutput::Line(Bytes::copy_from_slice(line.bytes)),
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(pid, error = %e, "agent stdout read failed");
                break;
            }
        };
        lines.clear();
        if !send(output).await {
            break;
        }
    }
    let status = match status {
        Some(s) => s,
        None => child.wait().await,
    };
    exited.store(true, Ordering::Release);
    let info = match status {
        Ok(s) => exit_info(s),
        Err(e) => {
            tracing::warn!(pid, error = %e, "waiting for the agent failed");
            ExitInfo {
                code: None,
                signal: None,
            }
        }
    };
    // Tool subprocesses must not outlive their agent.
    signal_group(pid, Signal::SIGKILL);
    let _ = out
        .send(Tagged {
            generation,
            output: AgentOutput::Exited(info),
        })
        .await;
}

/// Whether an over-long line was a `result`, judged from its first and last bytes:
/// its top-level `type` when the line starts with it, else a `"type":"result"` key
/// near its end, where the CLI writes it (JSON string values cannot contain that
/// text unescaped).
fn is_result_line(head: &[u8], tail: &[u8]) -> bool {
    const KEY: &[u8] = b"\"type\":\"result\"";
    if head.starts_with(b"{\"type\":") {
        return head.starts_with(b"{\"type\":\"result\"");
    }
    let contains = |hay: &[u8]| hay.windows(KEY.len()).any(|w| w == KEY);
    contains(&head[..head.len().min(OVERFLOW_TAIL_BYTES)]) || contains(tail)
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn exit_info(status: std::process::ExitStatus) -> ExitInfo {
    use std::os::unix::process::ExitStatusExt;
    ExitInfo {
        code: status.code(),
        signal: status
            .signal()
            .and_then(|s| Signal::try_from(s).ok())
            .map(|s| s.as_str().to_string()),
    }
}

/// Where the running agent's process group is recorded, so that a relay killed
/// with SIGKILL can end a survivor at its next start.
pub fn pid_file(session_dir: &Path) -> PathBuf {
    session_dir.join("agent.pid")
}

/// What `agent.pid` records: enough to recognise the very process we started
/// (a pid alone may have been reused by the time a relay restarts).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PidRecord {
    pub pid: u32,
    /// Start time in clock ticks since boot (field 22 of /proc/PID/stat).
    pub start: u64,
    /// The process's command line as /proc/PID/cmdline showed it after exec.
    pub cmdline: Vec<String>,
}

impl PidRecord {
    /// The record of the running process `pid`, if /proc can tell.
    pub fn of(pid: u32) -> Option<PidRecord> {
        Some(PidRecord {
            pid,
            start: process_start_time(pid)?,
            cmdline: process_cmdline(pid)?,
        })
    }

    /// Whether the process now running as `pid` is the one recorded: same start
    /// time and same command line. Anything else (gone, reused pid) is not ours.
    pub fn is_running(&self) -> bool {
        self.pid > 1 && PidRecord::of(self.pid).as_ref() == Some(self)
    }
}

/// Record `pid`, its start time and its command line (0600, like all data files).
pub fn record_pid(session_dir: &Path, pid: u32) {
    let Some(record) = PidRecord::of(pid) else {
        tracing::warn!(
            pid,
            "cannot read the agent's start time and command line; not recording its pid"
        );
        return;
    };
    let body = serde_json::to_string(&record).unwrap_or_default();
    if let Err(e) = crate::datadir::write_atomic(&pid_file(session_dir), body + "\n") {
        tracing::warn!(error = %e, "cannot record the agent pid");
    }
}

/// Forget the recorded pid (the agent ended normally).
pub fn clear_pid(session_dir: &Path) {
    let _ = std::fs::remove_file(pid_file(session_dir));
}

/// End an agent left running by a previous relay that died without stopping it.
/// Only a process whose pid, start time *and* command line match the record is
/// killed, so a recycled pid is never hit; a record this version did not write
/// (older format, edited) is not trusted.
pub fn end_survivor(session_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(pid_file(session_dir)).ok()?;
    clear_pid(session_dir);
    let record: PidRecord = match serde_json::from_str(text.trim()) {
        Ok(r) => r,
        Err(_) => {
            tracing::info!(
                file = %pid_file(session_dir).display(),
                "agent.pid not in this version's format; not trusted, nothing signalled"
            );
            return None;
        }
    };
    if !record.is_running() {
        tracing::info!(
            pid = record.pid,
            "the agent a previous relay left had already exited; nothing signalled"
        );
        return None;
    }
    signal_group(record.pid, Signal::SIGKILL);
    Some(record.pid)
}

/// The NUL-separated arguments of /proc/PID/cmdline.
pub fn process_cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None; // a zombie or kernel thread: nothing to match
    }
    let raw = raw.strip_suffix(b"\0").unwrap_or(&raw);
    Some(
        raw.split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Field 22 of /proc/PID/stat: start time in clock ticks since boot.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether any process of the group led by `pid` is still alive.
pub fn group_alive(pid: u32) -> bool {
    pid != 0 && killpg(Pid::from_raw(pid as i32), None).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn line_reader_reports_full_length_and_keeps_the_prefix() {
        let data = b"short\nthis line is long\r\nlast".to_vec();
        let mut lines = LineReader::new(BufReader::with_capacity(4, &data[..]), 4);
        let l = lines.next_line().await.unwrap().unwrap();
        assert_eq!((l.bytes, l.len), (&b"shor"[..], 5));
        lines.clear();
        let l = lines.next_line().await.unwrap().unwrap();
        assert_eq!((l.bytes, l.len), (&b"this"[..], 18));
        assert!(b" line is long\r".ends_with(l.overflow_tail));
        lines.clear();
        let l = lines.next_line().await.unwrap().unwrap();
        assert_eq!((l.bytes, l.len), (&b"last"[..], 4));
        lines.clear();
        assert!(lines.next_line().await.unwrap().is_none());
    }

    #[test]
    fn recognizes_dropped_results() {
        assert!(is_result_line(br#"{"type":"result","result":"xxx"#, b""));
        assert!(!is_result_line(
            br#"{"type":"assistant","message":{"#,
            br#""type":"result"}"#
        ));
        assert!(is_result_line(
            br#"{"duration_api_ms":62,"result":"xx"#,
            br#"xx","ttft_ms":1,"type":"result","uuid":"u"}"#
        ));
        assert!(!is_result_line(
            br#"{"duration_api_ms":62,"x":"xx"#,
            br#"xx\"type\":\"result\""}"#
        ));
    }

    #[test]
    fn conversation_ids_must_be_uuids() {
        assert!(valid_conversation_id(
            "0f8fad5b-d9cb-469f-a165-70867728950e"
        ));
        for bad in [
            "",
            "--dangerously-skip-permissions",
            "0f8fad5bd9cb469fa16570867728950e",
            "{0f8fad5b-d9cb-469f-a165-70867728950e}",
            "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e",
            "0f8fad5b-d9cb-469f-a165-70867728950e\n--x",
            "../../etc/passwd",
        ] {
            assert!(!valid_conversation_id(bad), "{bad:?}");
        }
        let config = AgentConfig {
            cmd: "claude".into(),
            extra_args: Vec::new(),
            probe_interval: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(20),
            max_restarts: 5,
            restart_window: Duration::from_secs(300),
            stop_grace: Duration::from_secs(5),
            idle_stop: None,
            allow_bypass: false,
        };
        let spec = |resume: &str| SpawnSpec {
            session: "s".into(),
            workdir: ".".into(),
            resume: Some(resume.into()),
            fork: false,
            generation: 1,
            settings_flags: Vec::new(),
        };
        let args = agent_args(&spec("--dangerously-skip-permissions"), &config);
        assert!(!args.iter().any(|a| a == "--resume"), "{args:?}");
        assert!(!args.iter().any(|a| a == "--dangerously-skip-permissions"));
        let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let args = agent_args(&spec(id), &config);
        let at = args.iter().position(|a| a == "--resume").unwrap();
        assert_eq!(args[at + 1], id);
    }

    /// A real process: a record naming it with another command line (a reused
    /// pid) or another start time is not trusted and nothing is signalled; the
    /// exact record is, and the process is ended.
    #[test]
    fn survivor_is_ended_only_when_start_time_and_command_line_match() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        // The child may still be between fork and exec for a moment (busy machine).
        let real = (0..500)
            .find_map(|_| {
                PidRecord::of(pid)
                    .filter(|r| r.cmdline[0] == "sleep")
                    .or_else(|| {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        None
                    })
            })
            .expect("record of a live process");
        assert_eq!(real.cmdline, ["sleep", "30"]);
        let write = |r: &PidRecord| {
            std::fs::write(pid_file(dir.path()), serde_json::to_string(r).unwrap()).unwrap()
        };
        let other_cmd = PidRecord {
            cmdline: vec!["claude".into(), "-p".into()],
            ..real.clone()
        };
        write(&other_cmd);
        assert_eq!(end_survivor(dir.path()), None);
        assert!(
            !pid_file(dir.path()).exists(),
            "an untrusted record is dropped"
        );
        let other_start = PidRecord {
            start: real.start + 1,
            ..real.clone()
        };
        write(&other_start);
        assert_eq!(end_survivor(dir.path()), None);
        // The older "pid start" format is not trusted either.
        std::fs::write(pid_file(dir.path()), format!("{pid} {}\n", real.start)).unwrap();
        assert_eq!(end_survivor(dir.path()), None);
        assert!(child.try_wait().unwrap().is_none(), "nothing was signalled");
        write(&real);
        assert_eq!(end_survivor(dir.path()), Some(pid));
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn record_pid_writes_an_owner_only_json_record() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        record_pid(dir.path(), std::process::id());
        let meta = std::fs::metadata(pid_file(dir.path())).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(pid_file(dir.path())).unwrap();
        let r: PidRecord = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(r.pid, std::process::id());
        assert!(r.is_running());
    }

    #[test]
    fn start_time_of_self_is_readable() {
        assert!(process_start_time(std::process::id()).is_some());
    }
}
