//! stdout lines, process exit and SIGTERM.
//!
//! Every stdout line is written whole and flushed under one lock, so an exit
//! from another thread (fatal stdin line, SIGTERM) never cuts a line in half.
//! SIGTERM is blocked in every thread and taken by a `sigwait` thread, which
//! exits with 143 like the real CLI (no further output; the lock is awaited
//! for at most 300 ms in case stdout is blocked on a full pipe).

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static OUT_LOCK: Mutex<()> = Mutex::new(());
static HUNG: AtomicBool = AtomicBool::new(false);

/// Writes one line (a `\n` is appended) and flushes it. A broken stdout ends the process.
pub fn line(text: &str) {
    let _guard = OUT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut stdout = std::io::stdout().lock();
    let ok = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    if ok.is_err() {
        // The host closed our stdout: nobody is listening any more.
        std::process::exit(1);
    }
}

/// Exits with `code` once no stdout line is being written.
pub fn exit(code: i32) -> ! {
    let _guard = OUT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    std::process::exit(code)
}

/// Marks the process hung: the stdin reader stops and nobody writes again.
pub fn set_hung() {
    HUNG.store(true, Ordering::SeqCst);
}

/// Whether [`set_hung`] was called.
pub fn is_hung() -> bool {
    HUNG.load(Ordering::SeqCst)
}

/// Sleeps forever (signals still end the process).
pub fn park_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Blocks SIGTERM in this (and every later) thread and starts the thread that
/// turns it into exit code 143. Call before spawning any other thread.
pub fn install_sigterm() -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.thread_block()?;
    std::thread::spawn(move || {
        if set.wait().is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(300);
        loop {
            match OUT_LOCK.try_lock() {
                Ok(guard) => {
                    std::mem::forget(guard);
                    break;
                }
                Err(std::sync::TryLockError::Poisoned(_)) => break,
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() >= deadline => break,
                Err(std::sync::TryLockError::WouldBlock) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
            }
        }
        // SAFETY: `_exit` only ends the process; no Rust state is touched afterwards.
        unsafe { libc::_exit(143) }
    });
    Ok(())
}
