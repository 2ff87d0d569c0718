//! A tmux server of the test's own (killed on drop), for driving `ccrelay attach`
//! on a real terminal: start sessions, type keys, read the screen.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for the screen to show what it expects.
pub const SCREEN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// A fresh tmux server; `name` tells the test's servers apart in `ps`.
    pub fn new(name: &str) -> Tmux {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Tmux {
            socket: format!("ccrelay-{name}-{}-{nanos}", std::process::id()),
        }
    }

    /// Run one tmux command against this server; panics when it fails.
    pub fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn screen(&self, session: &str) -> String {
        self.tmux(&["capture-pane", "-p", "-t", session])
    }

    /// Poll the screen until `pred` holds (blocking the calling thread); returns it.
    pub fn wait_for(&self, session: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        loop {
            let screen = self.screen(session);
            if pred(&screen) {
                return screen;
            }
            if Instant::now() >= deadline {
                panic!("{session}: timed out waiting for {what}; screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// [`Tmux::wait_for`] for async tests: sleeps without holding a runtime worker.
    pub async fn wait_for_async(
        &self,
        session: &str,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        loop {
            let screen = self.screen(session);
            if pred(&screen) {
                return screen;
            }
            if Instant::now() >= deadline {
                panic!("{session}: timed out waiting for {what}; screen:\n{screen}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("kill-server")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
