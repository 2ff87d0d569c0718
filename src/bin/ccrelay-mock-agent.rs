//! `ccrelay-mock-agent`: the mock Claude Code CLI as its own binary, so tests and
//! demos can use it as `--agent-cmd` (same as `ccrelay mock-agent`).

use clap::Parser;

use ccrelay::cli::{MOCK_AGENT_HELP, MockAgentArgs};

/// A protocol-faithful stand-in for `claude` (stream-json over stdin/stdout).
#[derive(Debug, Parser)]
#[command(name = "ccrelay-mock-agent", version, after_help = MOCK_AGENT_HELP)]
struct Cli {
    #[command(flatten)]
    args: MockAgentArgs,
}

fn main() {
    let cli = Cli::parse();
    let code = match ccrelay::mock_agent::run(cli.args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mock-agent: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
