//! The `taskdeck` command: parses the arguments and runs the chosen command
//! (see the `cli` module, one file per command group).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match cli::Cli::parse().run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("taskdeck: {error:#}");
            ExitCode::FAILURE
        }
    }
}
