//! `ccrelay-mock-agent`: the mock Claude Code CLI as its own binary, so tests and
//! demos can use it as `--agent-cmd` (same as `ccrelay mock-agent`).

fn main() {
    std::process::exit(ccrelay::mock_agent::main_from_args(std::env::args_os()));
}
