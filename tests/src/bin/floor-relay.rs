//! `floor-relay PORT [SECONDS]`: the relay of `cargo xtask bench floor` (see `femtomq_e2e::floor`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match femtomq_e2e::floor::relay_command(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("floor-relay: {message}");
            ExitCode::FAILURE
        }
    }
}
