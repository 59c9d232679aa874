//! `cargo xtask`: the project's automation, in Rust so that it runs wherever cargo does.
//!
//! Deliberately dependency-free: it must build in seconds on a fresh machine before anything
//! else is installed.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

mod cross;

mod brokers;

mod package;

/// Debian packages the tests and cross builds need (see `../shared/DESIGN.md`, "Cross targets").
const DEBIAN_PACKAGES: &[&str] = &[
    // Second Rust toolchain whose std can be rebuilt for any target (-Zbuild-std).
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    // Cross C toolchains (linkers and C libraries) and qemu-user to run what they build.
    "gcc-arm-linux-gnueabihf",
    "gcc-aarch64-linux-gnu",
    "gcc-mipsel-linux-gnu",
    "gcc-riscv64-linux-gnu",
    "libc6-dev-armhf-cross",
    "libc6-dev-arm64-cross",
    "libc6-dev-mipsel-cross",
    "libc6-dev-riscv64-cross",
    "qemu-user",
    // Certificates for the smoke suite's mqtts:// check.
    "openssl",
    // LLVM's linker for the device builds (boards/*.toml pass `-fuse-ld=lld` with
    // `-B/usr/lib/llvm-14/bin`): it drops what GNU ld keeps (compiler-builtins' soft-float
    // routines on armv7) and packs the segments without RELRO padding.
    "lld-14",
    // Independent MQTT clients and a reference broker for end-to-end tests and benchmarks.
    "mosquitto",
    "mosquitto-clients",
    "python3-venv",
    // Static musl builds of the smallest x86_64 board (boards/x86_64-musl.toml): musl-gcc and
    // musl's libc.a, and libunwind.a for the unwinder std links.
    "musl-tools",
    "musl-dev",
    "libunwind-14-dev",
    // OpenWrt's libc for the static mipsel musl board (boards/mipsel-openwrt.toml): musl for
    // Debian's mipsel architecture (multiarch; setup adds the architecture) with its
    // mipsel-linux-musl-gcc wrapper around gcc-mipsel-linux-gnu.
    "musl-dev:mipsel",
];

/// The Python MQTT client of the end-to-end tests, pinned (its 2.x callback API is used).
const PAHO_MQTT: &str = "paho-mqtt==2.1.0";

/// Bare-metal targets that prove the core is really `no_std`.
const BARE_METAL_TARGETS: &[&str] = &["thumbv7em-none-eabihf", "riscv32imac-unknown-none-elf"];

/// The Debian toolchain used for -Zbuild-std builds.
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("ci") => ci(),
        Some("no-std") => build_bare_metal(),
        Some("build") => cross::build_command(&args[1..]),
        Some("test") => cross::test_command(&args[1..]),
        Some("size") => cross::size_command(&args[1..]),
        Some("package") => package::package_command(&args[1..]),
        Some("feature-cost") => cross::feature_cost_command(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("help") | Some("--help") | Some("-h") | None => {
            print_help();
            Ok(())
        }
        Some(other) => Err(format!("unknown command `{other}`; try `cargo xtask help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_help() {
    println!(
        "cargo xtask <command>

Commands:
  setup              install the Debian packages the tests and cross builds need, and the
                     Python venv (.venv) with paho-mqtt for the end-to-end tests (idempotent)
  ci                 everything CI checks: setup, fmt, clippy, tests, bare-metal core builds
  no-std             build femtomq-core for {targets} with -Zbuild-std
  build --board NAME [--minimal]
                     build for a board of boards/ (cross with -Zbuild-std); prints the path
                     of the stripped binary (or the core's .rlib) last
  test --board NAME  build, start the broker (under qemu-user for cross boards) and run the
                     smoke suite against it with mosquitto_pub/mosquitto_sub
  size [--board NAME] [--minimal]
                     build and run size-report (every board with a binary by default):
                     sizes, RSS, budgets; JSON in target/cross/size-report.json
  package openwrt|deb --board NAME [--minimal]
                     build for the board and assemble an OpenWrt .ipk (boards with an
                     openwrt-arch: mipsel-openwrt) or a Debian .deb; prints its path last
  feature-cost --board NAME...
                     stripped size of each board's minimal build, of it plus each optional
                     feature (auth, tls, ws, persist) alone, and of the default build
  fuzz [SECONDS]     run each cargo-fuzz target for SECONDS (default 60); not part of ci
  bench [codec]      run the codec benchmark (results go to BENCHMARKS.md by hand)
  bench brokers [N]  femtomq against Mosquitto, N runs each (default 3), into BENCHMARKS.md
  bench hold [N]     19,000 connections held for a minute with keepalives, femtomq and
                     Mosquitto, N runs each (default 3), into BENCHMARKS.md
  bench persist [N]  QoS 1 fan-in to a persistent subscriber: femtomq with sync = always,
                     interval, never and in memory, and Mosquitto with persistence true,
                     N runs each (default 3), into BENCHMARKS.md
  bench floor [N]    the pairs test against a relay that does only the system calls a socket
                     broker cannot avoid, femtomq and Mosquitto, N runs each (default 3), into
                     BENCHMARKS.md (the relay: tests/src/floor.rs)
  bench engine       instructions per message on the engine's hot path (callgrind)",
        targets = BARE_METAL_TARGETS.join(" and ")
    );
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command in the workspace root, echoing it, and fails with its exit status.
fn run(command: &mut Command) -> Result {
    command.current_dir(workspace_root());
    eprintln!("$ {}", describe(command));
    let status = command
        .status()
        .map_err(|e| format!("cannot start `{}`: {e}", describe(command)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed with {status}", describe(command)))
    }
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

fn cargo() -> Command {
    Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn step(name: &str, body: impl FnOnce() -> Result) -> Result {
    eprintln!("\n==> {name}");
    let started = Instant::now();
    let result = body();
    let seconds = started.elapsed().as_secs_f64();
    match &result {
        Ok(()) => eprintln!("==> {name}: ok ({seconds:.1} s)"),
        Err(e) => eprintln!("==> {name}: FAILED ({seconds:.1} s): {e}"),
    }
    result.map_err(|e| format!("step `{name}` failed: {e}"))
}

fn setup() -> Result {
    setup_debian_packages()?;
    setup_python_venv()
}

fn setup_debian_packages() -> Result {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|package| !debian_package_installed(package))
        .collect();
    if missing.is_empty() {
        eprintln!(
            "setup: all {} Debian packages present",
            DEBIAN_PACKAGES.len()
        );
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    if Command::new("apt-get").arg("--version").output().is_err() {
        return Err(format!(
            "apt-get not found: install these Debian packages by hand: {}",
            missing.join(" ")
        ));
    }
    let as_root = is_root();
    let apt = |args: &[&str]| -> Command {
        let mut command = if as_root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.arg("apt-get");
            sudo
        };
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    // Packages of another architecture (`NAME:ARCH`) need it added to dpkg before the update.
    for arch in missing
        .iter()
        .filter_map(|package| package.split_once(':'))
        .map(|(_, a)| a)
    {
        let mut dpkg = if as_root {
            Command::new("dpkg")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.arg("dpkg");
            sudo
        };
        run(dpkg.args(["--add-architecture", arch]))?;
    }
    run(&mut apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing);
    run(&mut install)?;
    let still_missing: Vec<&str> = missing
        .into_iter()
        .filter(|package| !debian_package_installed(package))
        .collect();
    if still_missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "still missing after apt-get install: {}",
            still_missing.join(" ")
        ))
    }
}

/// Creates `<repo>/.venv` with `python3 -m venv` and installs the pinned paho-mqtt into it,
/// unless it is already there. The end-to-end tests run their Python scripts with
/// `.venv/bin/python`.
fn setup_python_venv() -> Result {
    let venv = workspace_root().join(".venv");
    let python = venv.join("bin").join("python");
    let wanted_version = PAHO_MQTT.split_once("==").map_or("", |(_, v)| v);
    if python.exists() && paho_version(&python).as_deref() == Some(wanted_version) {
        eprintln!("setup: {} has {PAHO_MQTT}", venv.display());
        return Ok(());
    }
    if !python.exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv)).map_err(|e| {
            format!(
                "{e}: creating the venv needs python3 with its venv module (Debian python3-venv)"
            )
        })?;
    }
    run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        PAHO_MQTT,
    ]))?;
    match paho_version(&python) {
        Some(version) if version == wanted_version => Ok(()),
        other => Err(format!(
            "{PAHO_MQTT} is not importable from {} after pip install (found {other:?})",
            python.display()
        )),
    }
}

/// The paho-mqtt version the venv's interpreter imports, if any.
fn paho_version(python: &Path) -> Option<String> {
    let out = Command::new(python)
        .args(["-c", "import paho.mqtt; print(paho.mqtt.__version__)"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn debian_package_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn ci() -> Result {
    let started = Instant::now();
    step("setup", setup)?;
    step("fmt", || {
        run(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    step("clippy", || {
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    step("test", || {
        run(cargo().args(["test", "--workspace", "--locked"]))
    })?;
    step("no-std core builds", build_bare_metal)?;
    step("cross builds and qemu smoke suites", cross::ci_cross)?;
    step("OpenWrt package: built, unpacked and smoke-tested", || {
        package::ci_openwrt("mipsel-openwrt")
    })?;
    step("Debian package", || package::ci_deb("x86_64-linux"))?;
    step("size-report against the board budgets", cross::ci_size)?;
    eprintln!(
        "\nci: all steps passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds femtomq-core for the bare-metal targets with Debian's toolchain and -Zbuild-std.
fn build_bare_metal() -> Result {
    for tool in [DEBIAN_RUSTC, DEBIAN_CARGO] {
        if !Path::new(tool).exists() {
            return Err(format!(
                "{tool} is missing: run `cargo xtask setup` (Debian rustc-web, cargo-web, rust-web-src)"
            ));
        }
    }
    let target_dir = workspace_root().join("target").join("build-std");
    // Without default features the core needs no allocator at all; with them it uses `alloc`.
    let feature_sets: [&[&str]; 2] = [&["--no-default-features"], &[]];
    for (target, features) in BARE_METAL_TARGETS
        .iter()
        .flat_map(|target| feature_sets.iter().map(move |features| (target, features)))
    {
        let mut command = Command::new(DEBIAN_CARGO);
        command
            .args([
                "build",
                "--release",
                "--package",
                "femtomq-core",
                "--target",
                target,
            ])
            .args(features.iter())
            .arg("-Zbuild-std=core,alloc")
            .arg("--target-dir")
            .arg(&target_dir)
            .env("RUSTC", DEBIAN_RUSTC)
            .env("RUSTC_BOOTSTRAP", "1")
            // The rustup proxy's variables must not leak into Debian's cargo.
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC_WRAPPER")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("RUSTDOC")
            .env_remove("CARGO");
        run(&mut command)?;
    }
    Ok(())
}

fn fuzz(args: &[String]) -> Result {
    let seconds: u64 = match args.first() {
        Some(text) => text
            .parse()
            .map_err(|_| format!("fuzz: `{text}` is not a number of seconds"))?,
        None => 60,
    };
    if Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        run(cargo().args(["install", "--locked", "cargo-fuzz"]))?;
    }
    let fuzz_dir = workspace_root().join("core").join("fuzz");
    let targets = Command::new("cargo")
        .args(["fuzz", "list"])
        .current_dir(&fuzz_dir)
        .output()
        .map_err(|e| format!("cargo fuzz list: {e}"))?;
    let targets = String::from_utf8_lossy(&targets.stdout).into_owned();
    if targets.trim().is_empty() {
        return Err("cargo fuzz list found no fuzz targets in core/fuzz".into());
    }
    for target in targets.lines().map(str::trim).filter(|t| !t.is_empty()) {
        // Stable rustc accepts the sanitizer flags cargo-fuzz passes when RUSTC_BOOTSTRAP is set.
        let mut command = Command::new("cargo");
        command
            .current_dir(&fuzz_dir)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", target, "--"])
            .arg(format!("-max_total_time={seconds}"));
        eprintln!("$ (in core/fuzz) {}", describe(&command));
        let status = command
            .status()
            .map_err(|e| format!("cargo fuzz run: {e}"))?;
        if !status.success() {
            return Err(format!(
                "fuzz target `{target}` found a failure: copy the input from core/fuzz/artifacts/{target}/ into core/tests/fuzz-regressions/ and fix it"
            ));
        }
    }
    Ok(())
}

/// Instructions per delivered message on the engine's hot path, measured with callgrind: the
/// engine benchmark runs twice with different message counts and the difference is divided by
/// the difference in messages, so setup costs cancel out. Exact and repeatable.
fn bench_engine_instructions() -> Result {
    if Command::new("valgrind").arg("--version").output().is_err() {
        return Err("valgrind is not installed (Debian package valgrind)".into());
    }
    let output = cargo()
        .args([
            "bench",
            "--no-run",
            "--package",
            "femtomq-core",
            "--bench",
            "engine",
            "--message-format=json",
        ])
        .current_dir(workspace_root())
        .output()
        .map_err(|e| format!("cargo bench --no-run: {e}"))?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let executable = listing
        .lines()
        .filter(|line| line.contains("\"name\":\"engine\"") && line.contains("\"executable\":\""))
        .find_map(|line| {
            line.split("\"executable\":\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_string)
        })
        .ok_or("cannot find the engine benchmark executable")?;
    let instructions = |scenario: &str, messages: u64| -> Result<(u64, u64)> {
        let run = Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(&executable)
            .arg(scenario)
            .env("ENGINE_BENCH_MESSAGES", messages.to_string())
            .output()
            .map_err(|e| format!("valgrind: {e}"))?;
        let stderr = String::from_utf8_lossy(&run.stderr);
        let stdout = String::from_utf8_lossy(&run.stdout);
        let collected = stderr
            .lines()
            .find_map(|l| l.split("Collected :").nth(1))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| format!("no instruction count from callgrind: {stderr}"))?;
        let delivered = stdout
            .split_whitespace()
            .skip_while(|w| *w != "delivered")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no delivered count: {stdout}"))?;
        Ok((collected, delivered))
    };
    println!(
        "{:<12} {:>12}",
        "scenario", "instructions per delivered message (callgrind)"
    );
    for scenario in ["fanin-qos0", "fanin-qos1", "fanout-qos0"] {
        let (small_ir, small_n) = instructions(scenario, 51_200)?;
        let (large_ir, large_n) = instructions(scenario, 153_600)?;
        let per_message = (large_ir - small_ir) as f64 / (large_n - small_n).max(1) as f64;
        println!("{scenario:<12} {per_message:>12.0}");
    }
    Ok(())
}

/// One side-by-side suite of brokers.rs: (root, femtomq binary, runs, command) -> report.
type BrokerSuite = fn(&Path, &Path, usize, &str) -> Result<String>;
/// Writes a suite's report into its section of BENCHMARKS.md.
type ReportWriter = fn(&PathBuf, &str) -> Result;

/// `cargo xtask bench [codec | brokers [RUNS] | hold [RUNS] | persist [RUNS] | engine]`: the
/// codec micro-benchmark (default), or femtomq against Mosquitto (all scenarios, 19,000 held
/// connections, or QoS 1 with each persistence sync mode) with the results written into
/// BENCHMARKS.md.
fn bench(args: &[String]) -> Result {
    match args.first().map(String::as_str) {
        None | Some("codec") => {
            run(cargo().args(["bench", "--package", "femtomq-core", "--bench", "codec"]))
        }
        Some(suite @ ("brokers" | "persist" | "hold" | "floor")) => {
            let runs: usize = match args.get(1) {
                Some(text) => text
                    .parse()
                    .map_err(|_| format!("bench {suite}: `{text}` is not a number of runs"))?,
                None => 3,
            };
            run(cargo().args(["build", "--release", "--package", "femtomq"]))?;
            if suite == "floor" {
                run(cargo().args([
                    "build",
                    "--release",
                    "--package",
                    "femtomq-e2e",
                    "--bin",
                    "floor-relay",
                ]))?;
            }
            let root = workspace_root();
            let femtomq = root.join("target").join("release").join("femtomq");
            let command = format!("cargo xtask bench {suite} {runs}");
            let benchmarks = root.join("BENCHMARKS.md");
            let (measure, write): (BrokerSuite, ReportWriter) = match suite {
                "brokers" => (brokers::run, brokers::write_report),
                "persist" => (brokers::run_persist, brokers::write_persist_report),
                "floor" => (brokers::run_floor, brokers::write_floor_report),
                _ => (brokers::run_hold, brokers::write_hold_report),
            };
            let report = measure(&root, &femtomq, runs, &command)?;
            println!("{report}");
            write(&benchmarks, &report)
        }
        Some("engine") => bench_engine_instructions(),
        Some(other) => Err(format!(
            "bench: unknown suite `{other}` (codec, engine, brokers, hold, persist or floor)"
        )),
    }
}
