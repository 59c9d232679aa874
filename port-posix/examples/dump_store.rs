//! Prints the records of a persistence directory (`--persist-dir`), one per line, for diagnosis:
//! `cargo run -p femtomq-posix --features persist --example dump_store DIR`.
//!
//! Each worker's snapshot (`S` lines) comes before its log (`L` lines); a torn or corrupt log
//! tail is reported with its offset, as the broker would truncate it at startup.

use std::path::Path;
use std::process::ExitCode;

use femtomq_posix::core::broker::Record;
use femtomq_posix::persist::{decode_blocks, read_snapshot};

/// Bytes of a log file's header (magic and generation).
const LOG_HEADER: usize = 16;

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: dump_store DIR");
        return ExitCode::FAILURE;
    };
    let dir = Path::new(&dir);
    let mut found = false;
    for worker in 0.. {
        let snap = dir.join(format!("worker-{worker}.snap"));
        let log = dir.join(format!("worker-{worker}.log"));
        if !snap.exists() && !log.exists() {
            break;
        }
        found = true;
        if snap.exists() {
            match read_snapshot(&snap) {
                Ok((generation, records)) => {
                    println!("== {} (generation {generation})", snap.display());
                    records.iter().for_each(|r| println!("S {}", brief(r)));
                }
                Err(e) => println!("== {}: {e}", snap.display()),
            }
        }
        match std::fs::read(&log) {
            Ok(bytes) if bytes.len() >= LOG_HEADER => {
                let generation = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default());
                println!("== {} (generation {generation})", log.display());
                let (records, torn) = decode_blocks(&bytes[LOG_HEADER..], LOG_HEADER as u64);
                records.iter().for_each(|r| println!("L {}", brief(r)));
                if let Some((offset, lost)) = torn {
                    println!("torn or corrupt tail at offset {offset} ({lost} records lost)");
                }
            }
            Ok(_) => println!("== {}: no header", log.display()),
            Err(e) => println!("== {}: {e}", log.display()),
        }
    }
    if !found {
        eprintln!("no worker-N.snap or worker-N.log in {}", dir.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// A record on one line: deliveries with their payload as text, the rest as they debug-print.
fn brief(record: &Record) -> String {
    match record {
        Record::Delivery {
            client_id,
            seq,
            state,
            message,
            ..
        } => format!(
            "Delivery {client_id} seq={seq} {state:?} `{}` {:?}",
            message.message.topic,
            String::from_utf8_lossy(&message.message.payload)
        ),
        other => format!("{other:?}"),
    }
}
