//! `ccrelay-mock-agent`: the mock Claude Code CLI as its own binary, so tests and
//! demos can use it as `--agent-cmd` (same as `ccrelay mock-agent`).

fn main() {
    std::process::exit(ccrelay::cli::mock_agent_main(std::env::args_os()));
}
