//! The `ccrelay` binary: parse the command line and hand over to the library.

use clap::Parser;
use ccrelay::cli::Cli;

fn main() {
    let _cli = Cli::parse();
}
