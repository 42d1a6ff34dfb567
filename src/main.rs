//! The `kiln` binary: parse arguments, run one subcommand, print the error
//! chain and map it to a documented exit code.
//!
//! Exit codes: 0 success; 1 the command ran and found a problem (reserved
//! for scan, check, diff, verify, and build's gates); 2 usage error or failure (bad input, I/O,
//! engine); 130 interrupted (Ctrl-C), after cleaning up.

#[macro_use]
mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // SIGPIPE stays ignored (Rust's default): a registry or engine closing a
    // socket mid-write must surface as an error kiln can retry or report,
    // not kill it. A closed stdout is handled where results are printed.
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if matches!(e.downcast_ref::<kiln::Error>(), Some(kiln::Error::Interrupted)) {
                eprintln!("kiln: interrupted; containers removed");
                return ExitCode::from(130);
            }
            eprintln!("kiln: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}
