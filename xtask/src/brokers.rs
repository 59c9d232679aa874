//! `cargo xtask bench brokers`: femtomq and Mosquitto side by side in one run.
//!
//! For every scenario, each run starts both brokers fresh (alternating which goes first), loads
//! each with `femtomq bench ... --broker-pid PID --json`, and stops it. The medians, the
//! min..max and the femtomq/Mosquitto ratios go to stdout and into BENCHMARKS.md between
//! markers, with the machine, the date and the command.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

type Result<T = ()> = std::result::Result<T, String>;

/// One load shape, as `femtomq bench` arguments.
struct Scenario {
    name: &'static str,
    args: &'static [&'static str],
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "fan-in 16->1, 64 B, QoS 0",
        args: &["fanin", "-n", "16", "-q", "0", "-s", "64", "-d", "4"],
    },
    Scenario {
        name: "fan-in 16->1, 64 B, QoS 1",
        args: &["fanin", "-n", "16", "-q", "1", "-s", "64", "-d", "4"],
    },
    Scenario {
        name: "fan-out 1->100, 64 B, QoS 0",
        args: &["fanout", "-n", "100", "-q", "0", "-s", "64", "-d", "2"],
    },
    Scenario {
        name: "pairs 1,000 x 10 msg/s, 16 KB, QoS 1",
        args: &[
            "pairs", "-n", "1000", "-q", "1", "-s", "16384", "-r", "10", "-d", "10",
        ],
    },
    Scenario {
        name: "10,000 idle connections",
        args: &["conns", "-n", "10000", "-d", "3"],
    },
];

/// As many connections as this machine's open-file limit allows (hard limit 20,000), each
/// sending keepalives, held for a minute (`cargo xtask bench hold`).
const HOLD_SCENARIOS: &[Scenario] = &[Scenario {
    name: "19,000 connections held for 60 s with keepalives",
    args: &["conns", "-n", "19000", "-d", "60"],
}];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Broker {
    Femtomq,
    Mosquitto,
    /// The relay of tests/src/floor.rs (binary `floor-relay`): the least a socket broker spends.
    Floor,
}

impl Broker {
    fn name(self) -> &'static str {
        match self {
            Broker::Femtomq => "femtomq",
            Broker::Mosquitto => "Mosquitto",
            Broker::Floor => "floor relay",
        }
    }
}

/// The fields of one `femtomq bench --json` line that the report uses.
#[derive(Clone, Copy, Default)]
struct Sample {
    expected: f64,
    received: f64,
    rate: f64,
    p99_us: f64,
    per_cpu: f64,
    rss_before_kb: f64,
    rss_peak_kb: f64,
    rss_after_kb: f64,
    generator_cpu: f64,
}

fn field(json: &str, name: &str) -> f64 {
    let key = format!("\"{name}\":");
    json.find(&key)
        .map(|at| &json[at + key.len()..])
        .and_then(|rest| rest.split([',', '}']).next())
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn parse(json: &str) -> Sample {
    Sample {
        expected: field(json, "expected"),
        received: field(json, "received"),
        rate: field(json, "rate"),
        p99_us: field(json, "p99_us"),
        per_cpu: field(json, "per_broker_cpu_second"),
        rss_before_kb: field(json, "broker_rss_before_kb"),
        rss_peak_kb: field(json, "broker_rss_peak_kb"),
        rss_after_kb: field(json, "broker_rss_after_kb"),
        generator_cpu: field(json, "generator_cpu"),
    }
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

struct Running {
    child: Child,
    port: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(broker: Broker, femtomq: &Path, scratch: &Path) -> Result<Running> {
    start_with(broker, femtomq, scratch, &[], "")
}

/// Starts a broker with extra femtomq flags or extra Mosquitto configuration lines.
fn start_with(
    broker: Broker,
    femtomq: &Path,
    scratch: &Path,
    femtomq_extra: &[String],
    mosquitto_extra: &str,
) -> Result<Running> {
    let port = free_port()?;
    let mut child = match broker {
        Broker::Femtomq => Command::new(femtomq)
            .args([
                "start",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--log-level",
                "error",
                "--max-connections",
                "20000",
            ])
            .args(femtomq_extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn(),
        Broker::Mosquitto => {
            let config = scratch.join(format!("mosquitto-{port}.conf"));
            std::fs::write(
                &config,
                format!(
                    "{mosquitto_extra}listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n"
                ),
            )
            .map_err(|e| e.to_string())?;
            Command::new("mosquitto")
                .arg("-c")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        }
        // Built beside femtomq by `bench floor` (femtomq-e2e's binary).
        Broker::Floor => Command::new(femtomq.with_file_name("floor-relay"))
            .args([&port.to_string(), "900"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn(),
    }
    .map_err(|e| format!("cannot start {}: {e}", broker.name()))?;
    if let Some(stdout) = child.stdout.take() {
        // femtomq says when it listens.
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
    }
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            return Err(format!("{} did not listen on {port}", broker.name()));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(Running { child, port })
}

fn run_once(broker: Broker, scenario: &Scenario, femtomq: &Path, scratch: &Path) -> Result<Sample> {
    let running = start(broker, femtomq, scratch)?;
    // Let the broker settle so "RSS before" is its idle figure.
    thread::sleep(Duration::from_millis(300));
    let output = Command::new(femtomq)
        .arg("bench")
        .args(scenario.args)
        .args([
            "-p",
            &running.port.to_string(),
            "--broker-pid",
            &running.child.id().to_string(),
            "--json",
        ])
        .output()
        .map_err(|e| format!("femtomq bench: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "femtomq bench {} against {} failed: {}",
            scenario.args.join(" "),
            broker.name(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(parse(String::from_utf8_lossy(&output.stdout).trim()))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn spread(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

fn human(value: f64) -> String {
    if !value.is_finite() {
        return "-".into();
    }
    if value >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.0}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

struct Summary {
    per_cpu: f64,
    per_cpu_range: (f64, f64),
    rate: f64,
    loss: f64,
    p99_ms: f64,
    rss_peak_kb: f64,
    per_connection_bytes: f64,
    rss_after_kb: f64,
    generator_cpu: f64,
}

fn summarize(samples: &[Sample], connections: Option<f64>) -> Summary {
    let collect = |f: fn(&Sample) -> f64| samples.iter().map(f).collect::<Vec<f64>>();
    let per_cpu = collect(|s| s.per_cpu);
    Summary {
        per_cpu: median(&mut per_cpu.clone()),
        per_cpu_range: spread(&per_cpu),
        rate: median(&mut collect(|s| s.rate)),
        loss: median(&mut collect(|s| {
            (s.expected - s.received).max(0.0) / s.expected.max(1.0)
        })),
        p99_ms: median(&mut collect(|s| s.p99_us / 1000.0)),
        rss_peak_kb: median(&mut collect(|s| s.rss_peak_kb)),
        per_connection_bytes: connections.map_or(f64::NAN, |n| {
            median(&mut collect(|s| (s.rss_peak_kb - s.rss_before_kb) * 1024.0)) / n
        }),
        rss_after_kb: median(&mut collect(|s| s.rss_after_kb)),
        generator_cpu: median(&mut collect(|s| s.generator_cpu)),
    }
}

/// Runs every scenario `runs` times per broker and returns the Markdown report.
pub fn run(root: &Path, femtomq: &Path, runs: usize, command: &str) -> Result<String> {
    run_scenarios(root, femtomq, runs, command, SCENARIOS)
}

/// `cargo xtask bench hold`: [`HOLD_SCENARIOS`] for both brokers.
pub fn run_hold(root: &Path, femtomq: &Path, runs: usize, command: &str) -> Result<String> {
    run_scenarios(root, femtomq, runs, command, HOLD_SCENARIOS)
}

/// Replaces the hold section of BENCHMARKS.md.
pub fn write_hold_report(benchmarks: &PathBuf, report: &str) -> Result {
    write_section(
        benchmarks,
        "hold",
        "Connections held with keepalives",
        report,
    )
}

/// Checks that Mosquitto is installed and returns the scratch directory (target/bench).
fn prepare(root: &Path) -> Result<PathBuf> {
    if Command::new("mosquitto").arg("-h").output().is_err() {
        return Err("mosquitto is not installed: run `cargo xtask setup`".into());
    }
    let scratch = root.join("target").join("bench");
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    Ok(scratch)
}

fn run_scenarios(
    root: &Path,
    femtomq: &Path,
    runs: usize,
    command: &str,
    scenarios: &[Scenario],
) -> Result<String> {
    let scratch = prepare(root)?;
    let mut report = String::new();
    let _ = writeln!(
        report,
        "Command: `{command}`, {runs} runs per broker and scenario, brokers alternating."
    );
    let _ = writeln!(
        report,
        "Machine: {}, {} cores. Date: {}.\n",
        machine(),
        cores(),
        today()
    );
    let _ = writeln!(
        report,
        "| scenario | broker | msgs per broker CPU-s (median, min..max) | delivered msg/s | loss | p99 latency | broker RSS peak | after | generator CPU s |"
    );
    let _ = writeln!(report, "|---|---|---|---|---|---|---|---|---|");
    let mut ratios = String::new();
    let mut extrapolated = String::new();
    for scenario in scenarios {
        let mut samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
        for run in 0..runs {
            let order = if run % 2 == 0 {
                [Broker::Femtomq, Broker::Mosquitto]
            } else {
                [Broker::Mosquitto, Broker::Femtomq]
            };
            for broker in order {
                eprintln!(
                    "bench: {} on {} (run {}/{runs})",
                    scenario.name,
                    broker.name(),
                    run + 1
                );
                let sample = run_once(broker, scenario, femtomq, &scratch)?;
                samples[usize::from(broker == Broker::Mosquitto)].push(sample);
            }
        }
        let connections =
            (scenario.args[0] == "conns").then(|| scenario.args[2].parse::<f64>().unwrap_or(1.0));
        let summaries = [
            summarize(&samples[0], connections),
            summarize(&samples[1], connections),
        ];
        for (broker, summary) in [Broker::Femtomq, Broker::Mosquitto].iter().zip(&summaries) {
            let memory = if connections.is_some() {
                format!(
                    "{:.0} KB ({:.0} B per connection)",
                    summary.rss_peak_kb, summary.per_connection_bytes
                )
            } else {
                format!("{:.0} KB", summary.rss_peak_kb)
            };
            let _ = writeln!(
                report,
                "| {} | {} | {} ({}..{}) | {} | {:.2}% | {:.1} ms | {memory} | {:.0} KB | {:.2} |",
                scenario.name,
                broker.name(),
                human(summary.per_cpu),
                human(summary.per_cpu_range.0),
                human(summary.per_cpu_range.1),
                human(summary.rate),
                summary.loss * 100.0,
                summary.p99_ms,
                summary.rss_after_kb,
                summary.generator_cpu
            );
        }
        if connections.is_some() {
            for (broker, summary) in [Broker::Femtomq, Broker::Mosquitto].iter().zip(&summaries) {
                let _ = writeln!(
                    extrapolated,
                    "- {}, {}: {:.0} B per connection, so about {:.2} GB for 1 million connections",
                    scenario.name,
                    broker.name(),
                    summary.per_connection_bytes,
                    summary.per_connection_bytes * 1e6 / 1e9
                );
            }
        }
        let ratio = summaries[0].per_cpu / summaries[1].per_cpu;
        // For held connections the count is of connections, not messages: opening, holding and
        // answering their keepalives.
        let unit = if connections.is_some() {
            "connections per broker CPU-second (connect, hold, keepalives)"
        } else {
            "msgs per broker CPU-second"
        };
        let _ = writeln!(
            ratios,
            "- {}: femtomq/Mosquitto = **{ratio:.2}x** {unit}",
            scenario.name
        );
    }
    let _ = writeln!(report, "\nRatios (medians):\n\n{ratios}");
    if !extrapolated.is_empty() {
        let _ = writeln!(
            report,
            "Memory per connection (RSS growth while connected over the connection count, medians), \
             extrapolated linearly:\n\n{extrapolated}"
        );
    }
    Ok(report)
}

fn machine() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn cores() -> usize {
    thread::available_parallelism().map_or(1, usize::from)
}

fn today() -> String {
    Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Replaces the text between the brokers markers of BENCHMARKS.md (appending them if absent).
pub fn write_report(benchmarks: &PathBuf, report: &str) -> Result {
    write_section(benchmarks, "brokers", "Brokers side by side", report)
}

/// Replaces the text between the `<!-- NAME:begin -->` and `<!-- NAME:end -->` markers of
/// BENCHMARKS.md, or appends them under a new `## HEADING` if absent.
fn write_section(benchmarks: &PathBuf, name: &str, heading: &str, report: &str) -> Result {
    let begin = format!("<!-- {name}:begin -->");
    let end_marker = format!("<!-- {name}:end -->");
    let text = std::fs::read_to_string(benchmarks).unwrap_or_else(|_| "# Benchmarks\n".into());
    let section = format!("{begin}\n{report}{end_marker}");
    let updated = match (text.find(&begin), text.find(&end_marker)) {
        (Some(start), Some(end)) if end > start => {
            format!(
                "{}{section}{}",
                &text[..start],
                &text[end + end_marker.len()..]
            )
        }
        _ => format!("{}\n\n## {heading}\n\n{section}\n", text.trim_end()),
    };
    std::fs::write(benchmarks, updated).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// `cargo xtask bench persist`: QoS 1 fan-in into a persistent subscriber, femtomq with each
// sync mode and without persistence, and Mosquitto with `persistence true`.

/// Fan-in shapes for the persistence benchmark (the subscriber keeps its session).
const PERSIST_SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "fan-in 4->1, 64 B, QoS 1, persistent subscriber",
        args: &["fanin", "-n", "4", "-q", "1", "-s", "64", "-d", "4"],
    },
    Scenario {
        name: "fan-in 16->1, 64 B, QoS 1, persistent subscriber",
        args: &["fanin", "-n", "16", "-q", "1", "-s", "64", "-d", "4"],
    },
];

/// One broker configuration of the persistence benchmark.
struct Target {
    name: &'static str,
    broker: Broker,
    /// `--sync` mode for femtomq with `--persist-dir`; `None` for no persistence.
    sync: Option<&'static str>,
    /// Mosquitto configuration lines besides persistence and the listener.
    mosquitto: &'static str,
}

/// Index in TARGETS of the Mosquitto configuration the ratios compare with.
const MOSQUITTO: usize = 4;

const TARGETS: &[Target] = &[
    Target {
        name: "femtomq sync=always",
        broker: Broker::Femtomq,
        sync: Some("always"),
        mosquitto: "",
    },
    Target {
        name: "femtomq sync=interval (1 s)",
        broker: Broker::Femtomq,
        sync: Some("interval"),
        mosquitto: "",
    },
    Target {
        name: "femtomq sync=never",
        broker: Broker::Femtomq,
        sync: Some("never"),
        mosquitto: "",
    },
    Target {
        name: "femtomq in memory",
        broker: Broker::Femtomq,
        sync: None,
        mosquitto: "",
    },
    Target {
        name: "Mosquitto persistence true",
        broker: Broker::Mosquitto,
        sync: None,
        mosquitto: "",
    },
    Target {
        name: "Mosquitto persistence true, tuned",
        broker: Broker::Mosquitto,
        sync: None,
        mosquitto: "set_tcp_nodelay true\nmax_queued_messages 0\n",
    },
];

/// A persistence run: the generator's sample plus what the broker wrote.
#[derive(Clone, Copy)]
struct PersistSample {
    sample: Sample,
    /// Bytes the broker caused to be written to storage during the load (/proc/PID/io).
    write_bytes: f64,
    /// Bytes in the store directory after a graceful stop (SIGTERM).
    store_bytes: f64,
}

/// `write_bytes` of /proc/PID/io: bytes this process caused to be sent to storage.
fn write_bytes(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(f64::NAN)
}

fn dir_bytes(dir: &Path) -> f64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum::<u64>() as f64
        })
        .unwrap_or(f64::NAN)
}

/// SIGTERM, then up to 10 s for the broker to save and exit (SIGKILL by Drop otherwise).
fn stop_gracefully(running: &mut Running) {
    let _ = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = running.child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn persist_once(
    target: &Target,
    scenario: &Scenario,
    femtomq: &Path,
    scratch: &Path,
    run: usize,
) -> Result<PersistSample> {
    let store = scratch.join(format!(
        "persist-{}-{run}-{}",
        target.name.replace([' ', '=', '(', ')'], ""),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&store);
    std::fs::create_dir_all(&store).map_err(|e| e.to_string())?;
    let mut femtomq_extra = Vec::new();
    let mut mosquitto_extra = String::new();
    match (target.broker, target.sync) {
        (Broker::Femtomq, Some(sync)) => {
            femtomq_extra.extend([
                "--persist-dir".to_string(),
                store.display().to_string(),
                "--sync".to_string(),
                sync.to_string(),
            ]);
        }
        // The floor relay keeps nothing: it is only measured in `bench floor`.
        (Broker::Femtomq, None) | (Broker::Floor, _) => {}
        (Broker::Mosquitto, _) => {
            // Started as root, Mosquitto drops to the `mosquitto` user: let it write there.
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| e.to_string())?;
            mosquitto_extra = format!(
                "persistence true\npersistence_location {}/\n{}",
                store.display(),
                target.mosquitto
            );
        }
    }
    let mut running = start_with(
        target.broker,
        femtomq,
        scratch,
        &femtomq_extra,
        &mosquitto_extra,
    )?;
    thread::sleep(Duration::from_millis(300));
    let pid = running.child.id();
    let written_before = write_bytes(pid);
    let output = Command::new(femtomq)
        .arg("bench")
        .args(scenario.args)
        .args([
            "-p",
            &running.port.to_string(),
            "--broker-pid",
            &pid.to_string(),
            "--json",
        ])
        .env("FEMTOMQ_BENCH_PERSISTENT_SUBSCRIBERS", "1")
        .output()
        .map_err(|e| format!("femtomq bench: {e}"))?;
    let written = write_bytes(pid) - written_before;
    if !output.status.success() {
        return Err(format!(
            "femtomq bench {} against {} failed: {}",
            scenario.args.join(" "),
            target.name,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    stop_gracefully(&mut running);
    drop(running);
    let store_bytes = dir_bytes(&store);
    let _ = std::fs::remove_dir_all(&store);
    Ok(PersistSample {
        sample: parse(String::from_utf8_lossy(&output.stdout).trim()),
        write_bytes: written,
        store_bytes,
    })
}

/// Bytes as B, KB or MB.
fn size(bytes: f64) -> String {
    if !bytes.is_finite() {
        "-".into()
    } else if bytes >= 1024.0 * 1024.0 {
        format!("{:.1} MB", bytes / (1024.0 * 1024.0))
    } else if bytes >= 1024.0 {
        format!("{:.0} KB", bytes / 1024.0)
    } else {
        format!("{bytes:.0} B")
    }
}

fn with_range(values: &[f64]) -> String {
    let (min, max) = spread(values);
    format!(
        "{} ({}..{})",
        human(median(&mut values.to_vec())),
        human(min),
        human(max)
    )
}

/// Runs every persistence scenario `runs` times per target and returns the Markdown report.
pub fn run_persist(root: &Path, femtomq: &Path, runs: usize, command: &str) -> Result<String> {
    let scratch = prepare(root)?;
    let mut report = String::new();
    let _ = writeln!(
        report,
        "Command: `{command}`, {runs} runs per broker and scenario, brokers rotating, a fresh \
         store directory each run (ext4 under target/bench). The subscriber connects with clean \
         session 0 (`FEMTOMQ_BENCH_PERSISTENT_SUBSCRIBERS=1`), so its queue is persistent."
    );
    let _ = writeln!(
        report,
        "Machine: {}, {} cores. Date: {}.\n",
        machine(),
        cores(),
        today()
    );
    let _ = writeln!(
        report,
        "| scenario | broker | delivered msg/s (median, min..max) | msgs per broker CPU-s (median, min..max) | loss | p99 latency | bytes written per msg | store after stop | generator CPU s |"
    );
    let _ = writeln!(report, "|---|---|---|---|---|---|---|---|---|");
    let mut ratios = String::new();
    for scenario in PERSIST_SCENARIOS {
        let mut samples: Vec<Vec<PersistSample>> = TARGETS.iter().map(|_| Vec::new()).collect();
        for run in 0..runs {
            for offset in 0..TARGETS.len() {
                let index = (run + offset) % TARGETS.len();
                let target = &TARGETS[index];
                eprintln!(
                    "bench: {} on {} (run {}/{runs})",
                    scenario.name,
                    target.name,
                    run + 1
                );
                samples[index].push(persist_once(target, scenario, femtomq, &scratch, run)?);
            }
        }
        let medians: Vec<(f64, f64)> = samples
            .iter()
            .map(|s| {
                (
                    median(&mut s.iter().map(|p| p.sample.rate).collect::<Vec<_>>()),
                    median(&mut s.iter().map(|p| p.sample.per_cpu).collect::<Vec<_>>()),
                )
            })
            .collect();
        let mosquitto = medians[MOSQUITTO];
        let tuned = medians[MOSQUITTO + 1];
        for (target, runs) in TARGETS.iter().zip(&samples) {
            let collect =
                |f: &dyn Fn(&PersistSample) -> f64| runs.iter().map(f).collect::<Vec<_>>();
            let loss = median(&mut collect(&|p| {
                (p.sample.expected - p.sample.received).max(0.0) / p.sample.expected.max(1.0)
            }));
            let p99_ms = median(&mut collect(&|p| p.sample.p99_us / 1000.0));
            let per_message = median(&mut collect(&|p| {
                p.write_bytes / p.sample.received.max(1.0)
            }));
            let store = median(&mut collect(&|p| p.store_bytes));
            let generator = median(&mut collect(&|p| p.sample.generator_cpu));
            let _ = writeln!(
                report,
                "| {} | {} | {} | {} | {:.2}% | {:.1} ms | {} | {} | {:.2} |",
                scenario.name,
                target.name,
                with_range(&collect(&|p| p.sample.rate)),
                with_range(&collect(&|p| p.sample.per_cpu)),
                loss * 100.0,
                p99_ms,
                if per_message.is_finite() {
                    format!("{per_message:.0} B")
                } else {
                    "-".into()
                },
                size(store),
                generator
            );
        }
        for (target, (rate, per_cpu)) in TARGETS.iter().zip(&medians).take(MOSQUITTO) {
            let _ = writeln!(
                ratios,
                "- {}, {}: **{:.2}x** Mosquitto's delivered msg/s ({:.2}x the tuned one's), \
                 **{:.2}x** its msgs per broker CPU-second ({:.2}x)",
                scenario.name,
                target.name,
                rate / mosquitto.0,
                rate / tuned.0,
                per_cpu / mosquitto.1,
                per_cpu / tuned.1
            );
        }
    }
    let _ = writeln!(
        report,
        "\n\"Bytes written per msg\" is the broker's `write_bytes` (/proc/PID/io) during the load \
         over messages delivered; \"store after stop\" is the store directory after SIGTERM.\n"
    );
    let _ = writeln!(
        report,
        "Ratios vs Mosquitto with `persistence true` (in parentheses: vs the tuned Mosquitto, \
         `set_tcp_nodelay true` and `max_queued_messages 0`), medians:\n\n{ratios}"
    );
    Ok(report)
}

/// Writes the persistence report between the persist markers of BENCHMARKS.md.
pub fn write_persist_report(benchmarks: &PathBuf, report: &str) -> Result {
    write_section(
        benchmarks,
        "persist",
        "Persistence: QoS 1 with each sync mode",
        report,
    )
}

// ---------------------------------------------------------------------------------------------
// `cargo xtask bench floor`: the pairs scenario against the floor relay, femtomq and Mosquitto.

/// Runs the pairs scenario `runs` times on the floor relay, femtomq and Mosquitto (rotating
/// which goes first) and returns the Markdown report.
pub fn run_floor(root: &Path, femtomq: &Path, runs: usize, command: &str) -> Result<String> {
    let scratch = prepare(root)?;
    let scenario = SCENARIOS
        .iter()
        .find(|s| s.args[0] == "pairs")
        .ok_or("no pairs scenario")?;
    let brokers = [Broker::Floor, Broker::Femtomq, Broker::Mosquitto];
    let mut samples: [Vec<Sample>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for run in 0..runs {
        for turn in 0..brokers.len() {
            let index = (run + turn) % brokers.len();
            let broker = brokers[index];
            eprintln!(
                "bench: {} on {} (run {}/{runs})",
                scenario.name,
                broker.name(),
                run + 1
            );
            samples[index].push(run_once(broker, scenario, femtomq, &scratch)?);
        }
    }
    let summaries = samples.map(|s| summarize(&s, None));
    let mosquitto = summaries[2].per_cpu;
    let mut report = String::new();
    let _ = writeln!(
        report,
        "Command: `{command}`, {runs} runs per broker, brokers rotating. Machine: {}, {} cores. \
         Date: {}. Scenario: {} (`femtomq bench {}`).\n",
        machine(),
        cores(),
        today(),
        scenario.name,
        scenario.args.join(" ")
    );
    let _ = writeln!(
        report,
        "| broker | msgs per broker CPU-s (median, min..max) | CPU as a share of Mosquitto's | delivered msg/s | loss | p99 latency |"
    );
    let _ = writeln!(report, "|---|---|---|---|---|---|");
    for (broker, summary) in brokers.iter().zip(&summaries) {
        let _ = writeln!(
            report,
            "| {} | {} ({}..{}) | {:.2} | {} | {:.2}% | {:.1} ms |",
            broker.name(),
            human(summary.per_cpu),
            human(summary.per_cpu_range.0),
            human(summary.per_cpu_range.1),
            mosquitto / summary.per_cpu,
            human(summary.rate),
            summary.loss * 100.0,
            summary.p99_ms
        );
    }
    let _ = writeln!(
        report,
        "\nThe target asks for at most 0.33 of Mosquitto's CPU. The floor relay needs {:.2} of it \
         (femtomq {:.2}; femtomq spends {:.2}x the floor relay's CPU).\n",
        mosquitto / summaries[0].per_cpu,
        mosquitto / summaries[1].per_cpu,
        summaries[0].per_cpu / summaries[1].per_cpu
    );
    Ok(report)
}

/// Replaces the floor section of BENCHMARKS.md.
pub fn write_floor_report(benchmarks: &PathBuf, report: &str) -> Result {
    write_section(benchmarks, "floor", "The floor of the pairs test", report)
}
