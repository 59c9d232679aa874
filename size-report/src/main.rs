//! `size-report`: measures femtomq builds and checks them against their boards' budgets.
//!
//! ```text
//! size-report [--boards-dir DIR] [--json PATH] [--mosquitto PATH] [--connections N]
//!             (--board NAME [--minimal] --binary STRIPPED [--symbols UNSTRIPPED])...
//! ```
//!
//! `--minimal` says that the binary is the board's minimal build: it is checked against the
//! board's `[minimal-budget]` instead of its `[budget]`.
//!
//! Prints a table for humans on stdout, writes the same figures as JSON to `--json PATH`, and
//! exits with status 1 naming the board and the figure when a budget is exceeded (2 when
//! something could not be measured at all). `cargo xtask size` builds the boards and runs it.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use femtomq_boards::Board;
use serde::Serialize;
use size_report::budget::{self, Check, Measurement};
use size_report::elf::{self, CrateSize, Sections};
use size_report::memory::{self, Broker, MemoryReport};

/// Crates listed per board in the table.
const TOP_CRATES: usize = 8;

struct Request {
    board: String,
    /// Whether the binary is the board's `--minimal` build (checked against `[minimal-budget]`).
    minimal: bool,
    binary: Option<PathBuf>,
    symbols: Option<PathBuf>,
}

struct Options {
    boards_dir: PathBuf,
    json: Option<PathBuf>,
    mosquitto: Option<PathBuf>,
    connections: u64,
    requests: Vec<Request>,
}

#[derive(Serialize)]
struct BoardReport {
    /// The board's name, with ` (minimal)` for its minimal build.
    board: String,
    /// Whether this is the board's `--minimal` build.
    minimal: bool,
    triple: String,
    description: String,
    binary: PathBuf,
    sections: Sections,
    /// Largest crates by code size, from the unstripped build.
    crates: Vec<CrateSize>,
    /// Memory of the broker running natively; `None` under qemu-user.
    memory: Option<MemoryReport>,
    memory_note: Option<String>,
    measurement: Measurement,
    checks: Vec<Check>,
}

#[derive(Serialize)]
struct Report {
    boards: Vec<BoardReport>,
    /// Mosquitto measured the same way in the same run, for comparison (no budget).
    mosquitto: Option<MemoryReport>,
    /// Whether every budgeted figure was measured and within its budget.
    ok: bool,
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("size-report: {message}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(report) => {
            print_table(&report);
            if let Some(path) = &options.json {
                let text = serde_json::to_string_pretty(&report).unwrap_or_default();
                if let Err(e) = std::fs::write(path, text + "\n") {
                    eprintln!("size-report: cannot write {}: {e}", path.display());
                    return ExitCode::from(2);
                }
                println!("\nJSON: {}", path.display());
            }
            let failed: Vec<&Check> = report
                .boards
                .iter()
                .flat_map(|b| &b.checks)
                .filter(|c| !c.ok)
                .collect();
            for check in &failed {
                eprintln!("size-report: budget exceeded: {}", check.message());
            }
            if failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(message) => {
            eprintln!("size-report: {message}");
            ExitCode::from(2)
        }
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        boards_dir: femtomq_boards::boards_dir(),
        json: None,
        mosquitto: None,
        connections: 1000,
        requests: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--boards-dir" => options.boards_dir = value()?.into(),
            "--json" => options.json = Some(value()?.into()),
            "--mosquitto" => options.mosquitto = Some(value()?.into()),
            "--connections" => {
                options.connections = value()?
                    .parse()
                    .map_err(|_| "--connections needs a number".to_string())?
            }
            "--board" => options.requests.push(Request {
                board: value()?,
                minimal: false,
                binary: None,
                symbols: None,
            }),
            "--minimal" => {
                options
                    .requests
                    .last_mut()
                    .ok_or(format!("{arg} must follow --board"))?
                    .minimal = true
            }
            "--binary" | "--symbols" => {
                let path = PathBuf::from(value()?);
                let request = options
                    .requests
                    .last_mut()
                    .ok_or(format!("{arg} must follow --board"))?;
                if arg == "--binary" {
                    request.binary = Some(path);
                } else {
                    request.symbols = Some(path);
                }
            }
            "--help" | "-h" => {
                return Err("usage: size-report [--boards-dir DIR] [--json PATH] \
                     [--mosquitto PATH] [--connections N] \
                     (--board NAME [--minimal] --binary STRIPPED [--symbols UNSTRIPPED])..."
                    .into());
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    if options.requests.is_empty() {
        return Err("nothing to measure: give --board NAME --binary PATH".into());
    }
    Ok(options)
}

fn run(options: &Options) -> Result<Report, String> {
    memory::raise_open_files(options.connections + 64)?;
    let mut boards = Vec::new();
    for request in &options.requests {
        let board =
            femtomq_boards::load(&options.boards_dir, &request.board).map_err(|e| e.to_string())?;
        boards.push(measure_board(&board, request, options.connections)?);
    }
    let mosquitto = match &options.mosquitto {
        Some(binary) => {
            let broker = Broker::mosquitto(binary)?;
            Some(
                memory::measure(&broker, options.connections)
                    .map_err(|e| format!("mosquitto: {e}"))?,
            )
        }
        None => None,
    };
    let ok = boards.iter().all(|b| b.checks.iter().all(|c| c.ok));
    Ok(Report {
        boards,
        mosquitto,
        ok,
    })
}

fn measure_board(
    board: &Board,
    request: &Request,
    connections: u64,
) -> Result<BoardReport, String> {
    let binary = request
        .binary
        .clone()
        .ok_or(format!("board `{}`: --binary is missing", board.name))?;
    if board.is_library_only() {
        return Err(format!(
            "board `{}` builds a library ({}), not a binary to measure",
            board.name, board.package
        ));
    }
    let sections = elf::sections(&binary)?;
    let crates = match &request.symbols {
        Some(path) => elf::crates(path)?,
        None => Vec::new(),
    };
    let (memory, memory_note) = if board.native {
        let broker =
            Broker::femtomq(&binary).map_err(|e| format!("board `{}`: {e}", board.name))?;
        let report = memory::measure(&broker, connections)
            .map_err(|e| format!("board `{}`: {e}", board.name))?;
        (Some(report), None)
    } else {
        (
            None,
            Some(format!(
                "not measured: under {} the resident set is qemu's, not the program's",
                board.runner.first().map_or("an emulator", String::as_str)
            )),
        )
    };
    let measurement = Measurement {
        binary_bytes: Some(sections.file_bytes),
        idle_rss_kb: memory.as_ref().map(|m| m.idle.rss_kb),
        rss_per_1000_connections_kb: memory.as_ref().map(|m| m.rss_per_1000_connections_kb),
    };
    let label = if request.minimal {
        format!("{} (minimal)", board.name)
    } else {
        board.name.clone()
    };
    let checks = budget::check(&label, board.budget_for(request.minimal), &measurement);
    Ok(BoardReport {
        board: label,
        minimal: request.minimal,
        triple: board.triple.clone(),
        description: board.description.clone(),
        binary,
        sections,
        crates,
        memory,
        memory_note,
        measurement,
        checks,
    })
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_table(report: &Report) {
    println!(
        "| board | binary B | .text | .rodata | .data | .bss | idle RSS KiB | idle Pss KiB (anon/file) | RSS per 1,000 conn. KiB |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    let dash = || "n/a (qemu)".to_string();
    for board in &report.boards {
        let s = &board.sections;
        let (rss, pss, per) = match &board.memory {
            Some(m) => (
                thousands(m.idle.rss_kb),
                format!(
                    "{} ({}/{})",
                    thousands(m.idle.pss_kb),
                    m.idle.pss_anon_kb,
                    m.idle.pss_file_kb
                ),
                thousands(m.rss_per_1000_connections_kb),
            ),
            None => (dash(), dash(), dash()),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {rss} | {pss} | {per} |",
            board.board,
            thousands(s.file_bytes),
            thousands(s.text),
            thousands(s.rodata),
            thousands(s.data),
            thousands(s.bss),
        );
    }
    if let Some(m) = &report.mosquitto {
        println!(
            "| mosquitto (reference) | - | - | - | - | - | {} | {} ({}/{}) | {} |",
            thousands(m.idle.rss_kb),
            thousands(m.idle.pss_kb),
            m.idle.pss_anon_kb,
            m.idle.pss_file_kb,
            thousands(m.rss_per_1000_connections_kb)
        );
    }
    for board in &report.boards {
        if !board.crates.is_empty() {
            let total: u64 = board.crates.iter().map(|c| c.bytes).sum();
            let top: Vec<String> = board
                .crates
                .iter()
                .take(TOP_CRATES)
                .map(|c| {
                    format!(
                        "{} {} ({}%)",
                        c.name,
                        thousands(c.bytes),
                        c.bytes * 100 / total.max(1)
                    )
                })
                .collect();
            println!(
                "\n{}: code by crate (of {} B in function symbols): {}",
                board.board,
                thousands(total),
                top.join(", ")
            );
        }
        if let Some(m) = &board.memory {
            println!(
                "{}: idle {} threads, peak {} KiB; with {} connections RSS {} KiB",
                board.board,
                m.idle.threads,
                thousands(m.idle.hwm_kb),
                m.connections,
                thousands(m.with_connections.rss_kb)
            );
        }
        if let Some(note) = &board.memory_note {
            println!("{}: memory {note}", board.board);
        }
    }
    println!();
    for check in report.boards.iter().flat_map(|b| &b.checks) {
        println!(
            "{} {}",
            if check.ok { "ok  " } else { "FAIL" },
            check.message()
        );
    }
}
