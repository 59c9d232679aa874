//! The `femtomq` daemon binary.
//!
//! It will hold the command line (argh), configuration, signals, worker threads and Linux-only
//! tuning. Until the POSIX port exists it only knows its version and says plainly that the
//! broker cannot be started yet, rather than pretending to run.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => {
            println!("femtomq {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help") | Some("-h") | None => {
            println!(
                "Usage: femtomq <command>\n\nCommands:\n  start    run the broker (not implemented yet)\n\nOptions:\n  --version  print the version"
            );
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!(
                "femtomq: `{other}` is not implemented yet: the broker daemon arrives with the POSIX port (issue 5). \
                 Today the workspace provides the no_std MQTT codec in femtomq-core."
            );
            ExitCode::from(2)
        }
    }
}
