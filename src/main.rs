//! The `ccrelay` binary: parse the command line and hand over to the library.

use ccrelay::cli::Cli;
use clap::Parser;

fn main() {
    let _cli = Cli::parse();
}
