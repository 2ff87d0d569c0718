//! The `ccrelay` binary: parse the command line, set up logging, hand over to the
//! library, and turn the outcome into an exit code.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use ccrelay::auth::KeyPaths;
use ccrelay::cli::{Cli, Command, KeysCommand, ServeArgs};
use ccrelay::config::Config;
use ccrelay::datadir::home_dir;
use ccrelay::{logging, server};

fn main() -> ExitCode {
    // Invoked under the mock agent's name (the demo's symlink): be the mock agent,
    // so the demo needs no second binary.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name()
        == Some(std::ffi::OsStr::new(ccrelay::demo::MOCK_AGENT_NAME))
    {
        let code = ccrelay::cli::mock_agent_main(std::env::args_os());
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Keys(KeysCommand::Check { path }) => {
            let path = path
                .or_else(|| home_dir().map(|h| h.join(".ssh/authorized_keys")))
                .unwrap_or_else(|| "authorized_keys".into());
            let mut out = std::io::stdout().lock();
            match ccrelay::auth::run_keys_check(&path, &mut out) {
                Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => {
                    eprintln!("ccrelay: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Keys(KeysCommand::Add {
            keyline,
            viewer,
            files,
        }) => keys_command(|out| {
            ccrelay::auth::run_keys_add(&keyline, viewer, &KeyPaths::resolve(&files.into()), out)
        }),
        Command::Keys(KeysCommand::List { files }) => {
            keys_command(|out| ccrelay::auth::run_keys_list(&KeyPaths::resolve(&files.into()), out))
        }
        Command::Keys(KeysCommand::Remove { fingerprint, files }) => keys_command(|out| {
            ccrelay::auth::run_keys_remove(&fingerprint, &KeyPaths::resolve(&files.into()), out)
        }),
        Command::MockAgent(args) => match ccrelay::mock_agent::run(args.into()) {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                eprintln!("ccrelay mock-agent: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Attach(args) => ccrelay::client::run(args.into()),
        Command::Sessions(args) => match args.check() {
            Ok(()) => ccrelay::client::run_sessions(args.into()),
            Err(e) => e.exit(),
        },
        Command::Demo(args) => ccrelay::demo::run(args.into()),
        Command::ServerInfo(args) => {
            let data_dir = args
                .data_dir
                .unwrap_or_else(ccrelay::datadir::default_data_dir);
            match ccrelay::tls::server_info(&data_dir, args.tls_cert.as_deref()) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ccrelay: invalid value for --{}: {e}", e.setting());
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// Run a `ccrelay keys` command writing to stdout; an I/O error exits 1.
fn keys_command(
    run: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<i32>,
) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match run(&mut out) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("ccrelay: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve(ServeArgs(values): ServeArgs) -> ExitCode {
    let config = match Config::resolve(&values) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ccrelay: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(&config.log_level, config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ccrelay: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        server::run(config, shutdown).await
    });
    // Agents and journals are done; do not wait for stray blocking tasks.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match &e {
                server::ServeError::Config { .. } => eprintln!("ccrelay: {e}"),
                // Already logged once, with its cause, where the server handled it.
                server::ServeError::Fatal(_) => {}
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// SIGINT or SIGTERM starts a graceful shutdown; a second one is not needed (the
/// shutdown is bounded), but it is honoured by exiting at once.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "signal received"),
    }
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting now");
    std::process::exit(130);
}
