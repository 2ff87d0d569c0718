//! Stopping a server the benches started: what each bench's `Drop for Server` does.

use std::process::Child;
use std::time::{Duration, Instant};

/// SIGTERM, up to `grace` for a clean exit (the server drains and fsyncs), then SIGKILL.
pub fn stop(child: &mut Child, grace: Duration) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
