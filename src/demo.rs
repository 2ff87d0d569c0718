//! `ccrelay demo`: the whole system on one machine, in one command, with nothing
//! installed: a throwaway SSH key authorized for a relay that runs the built-in
//! mock agent (or `--agent-cmd`), and `ccrelay attach` on this terminal.
//!
//! Owns: the demo's temporary directory and its lifetime. Must not: differ from
//! a real deployment in anything but where keys and data live — it runs the same
//! server and the same client code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use ssh_key::{Algorithm, LineEnding, PrivateKey};
use tokio_util::sync::CancellationToken;

use crate::client::{AttachSettings, ServerOptions};
use crate::config::{Config, ServeValues, settings};
use crate::server::{self, Announce};

/// The name under which `ccrelay` behaves as the mock agent (see `main.rs`).
pub const MOCK_AGENT_NAME: &str = "ccrelay-mock-agent";

/// What `ccrelay demo` was asked for.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// Listen address of the demo relay.
    pub listen: std::net::SocketAddr,
    /// The agent to run instead of the built-in mock.
    pub agent_cmd: Option<PathBuf>,
}

/// A directory removed when the demo ends.
struct DemoDir(PathBuf);

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The last `lines` lines of the relay's log, to quote in an error.
fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    if tail.is_empty() {
        "(the relay's log was empty)".to_owned()
    } else {
        format!("the relay's log said (the demo's directory is removed):\n{tail}")
    }
}

/// Run the demo; returns the client's exit code.
pub fn run(args: DemoSettings) -> ExitCode {
    match run_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ccrelay demo: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_inner(args: DemoSettings) -> anyhow::Result<ExitCode> {
    let dir = DemoDir(std::env::temp_dir().join(format!("ccrelay-demo-{}", std::process::id())));
    let root = &dir.0;
    let workdir = root.join("work");
    std::fs::create_dir_all(&workdir)?;

    let key_path = root.join("demo_key");
    write_throwaway_key(&key_path, &root.join("authorized_keys"))?;
    let agent_cmd = match args.agent_cmd {
        Some(cmd) => cmd,
        None => mock_agent_command(root)?,
    };
    let log_path = root.join("ccrelay.log");
    crate::logging::init_to_file("info", &log_path)?;

    let serve = ServeValues::default()
        .with(&settings::LISTEN, args.listen.to_string())
        .with(&settings::AUTHORIZED_KEYS, root.join("authorized_keys"))
        .with(&settings::AGENT_CMD, agent_cmd.clone())
        .with(&settings::WORKDIR, workdir.clone())
        .with(&settings::DATA_DIR, root.join("data"));
    let config = Config::resolve(&serve)?;

    let shutdown = CancellationToken::new();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let server_stop = shutdown.clone();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime
            .block_on(server::run_with(
                config,
                server_stop,
                Announce::Channel(addr_tx),
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))
    });
    let addr = match addr_rx.blocking_recv() {
        Ok(addr) => addr,
        Err(_) => {
            let why = server
                .join()
                .map_err(|_| anyhow::anyhow!("the relay thread panicked"))?
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("the relay stopped before listening"));
            // The log lives in the demo's directory, which is removed on the way
            // out: show its last lines instead of pointing at a file that is gone.
            return Err(anyhow::anyhow!("{why:#}\n{}", log_tail(&log_path, 20)));
        }
    };
    let url = format!("ws://{addr}/v1/ws");
    let page = crate::web::page_url(addr, false);
    {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            if let Some(qr) = crate::web::qr_half_blocks(&page) {
                eprint!("\n{qr}");
            }
        }
    }
    eprintln!("\n  web:     {page}  (open it in a browser and pair it; approve here)");
    eprintln!("{}", phone_hint(addr));
    eprintln!(
        "\nccrelay demo\n  relay:   {url}  (agent: {})\n  key:     {}\n  log:     {}\n\n\
         Try prompts such as `hello`, `please run-bash` (asks permission), `slow` (Ctrl-C interrupts),\n\
         `recall`. Attach a second terminal to see it live there too:\n    ccrelay attach {url} -i {} --device second\n\
         Ctrl-D (or Ctrl-C twice) ends the demo.\n",
        agent_cmd.display(),
        key_path.display(),
        log_path.display(),
        key_path.display(),
    );

    let code = crate::client::run(AttachSettings {
        server: ServerOptions {
            url,
            identity: Some(key_path),
            device: Some("demo".into()),
            // A throwaway relay (new server id, any port): not for the user's records.
            known_servers: Some(root.join("known_servers")),
            ..ServerOptions::default()
        },
        session: "default".into(),
        new: None,
        prompt: None,
        allow: false,
        deny: false,
        json: false,
        tail: None,
        invite: false,
        viewer: false,
    });

    shutdown.cancel();
    // The relay stops its agent and flushes within its grace periods.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !server.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if server.is_finished() {
        if let Ok(Err(e)) = server.join() {
            eprintln!("ccrelay demo: the relay stopped with an error: {e:#}");
        }
    }
    Ok(code)
}

/// How a phone reaches the server: the QR code above holds the address the demo
/// listens on, which a phone cannot always open (a loopback address is this machine
/// only), and a phone's page needs `https://` to keep its key (a secure context).
fn phone_hint(addr: std::net::SocketAddr) -> String {
    let ip = addr.ip();
    let reach = if ip.is_loopback() {
        "The QR code holds a loopback address: it opens the page on this machine only, \
         a phone that scans it reaches itself, not this server."
    } else if ip.is_unspecified() {
        "The QR code says `localhost` (this machine only); a phone on the same network \
         uses this machine's network address with the same port instead."
    } else {
        "A phone on the same network can open that address."
    };
    format!(
        "           {reach}\n           A phone is another machine: it needs a relay listening on the network, \
         which serves TLS only (the page\n           keeps its key only on https://). See \
         docs/getting-started.md, \"Reach it from the phone\": `ccrelay serve --config \
         deploy/config/devbox-phone.toml`."
    )
}

/// Make an ed25519 key pair: the private key in OpenSSH format (mode 0600) and its
/// public line as the only authorized key.
fn write_throwaway_key(key_path: &Path, authorized_keys: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut key = PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519)?;
    key.set_comment("ccrelay-demo");
    let pem = key.to_openssh(LineEnding::LF)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key_path)?;
    std::io::Write::write_all(&mut file, pem.as_bytes())?;
    let public = key.public_key().to_openssh()?;
    std::fs::write(authorized_keys, format!("{public}\n"))?;
    Ok(())
}

/// The mock agent as a command path: this very binary, under the name that makes
/// it act as the mock agent (a symlink in the demo directory).
fn mock_agent_command(dir: &Path) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let link = dir.join(MOCK_AGENT_NAME);
    std::os::unix::fs::symlink(&exe, &link)?;
    Ok(link)
}

#[cfg(test)]
mod tests {
    use super::phone_hint;

    #[test]
    fn the_phone_hint_says_a_loopback_qr_code_works_on_this_machine_only() {
        let loopback = phone_hint("127.0.0.1:7878".parse().expect("an address"));
        assert!(loopback.contains("loopback address"), "{loopback}");
        assert!(loopback.contains("this machine only"), "{loopback}");
        assert!(loopback.contains("TLS"), "{loopback}");
        let any = phone_hint("0.0.0.0:7878".parse().expect("an address"));
        assert!(any.contains("network address"), "{any}");
        let lan = phone_hint("192.168.1.5:7878".parse().expect("an address"));
        assert!(!lan.contains("loopback"), "{lan}");
    }
}
