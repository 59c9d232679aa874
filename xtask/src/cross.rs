//! `cargo xtask build|test|size`: per-board builds (boards/*.toml), the smoke suite under
//! qemu-user, and size-report.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use femtomq_boards::{Board, Flavour};

use crate::{DEBIAN_CARGO, DEBIAN_RUSTC, Result, cargo, describe, run, workspace_root};

/// Builds land here, away from the host build's `target/` cache.
const CROSS_TARGET_DIR: &str = "target/cross";
/// How long one smoke step may take (qemu-user is slow, but not this slow).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the broker has to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What a board build produced.
pub struct Built {
    /// The stripped binary (or, for a bare-metal board, the core's `.rlib`).
    pub artifact: PathBuf,
    /// The same binary with its symbol table, for size-report's by-crate figures.
    pub unstripped: Option<PathBuf>,
}

/// Reads `boards/NAME.toml`.
pub fn board(name: &str) -> Result<Board> {
    femtomq_boards::load(&femtomq_boards::boards_dir(), name).map_err(|e| e.to_string())
}

fn all_boards() -> Result<Vec<Board>> {
    femtomq_boards::load_all(&femtomq_boards::boards_dir()).map_err(|e| e.to_string())
}

/// Parses `--board NAME [--minimal]`.
pub fn board_args(command: &str, args: &[String]) -> Result<(Option<String>, bool)> {
    let mut name = None;
    let mut minimal = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--board" => {
                name = Some(
                    args.next()
                        .ok_or(format!("{command}: --board needs a NAME"))?
                        .clone(),
                )
            }
            "--minimal" => minimal = true,
            other => return Err(format!("{command}: unknown argument `{other}`")),
        }
    }
    Ok((name, minimal))
}

/// `cargo xtask build --board NAME [--minimal]`: prints the built artifact's path last.
pub fn build_command(args: &[String]) -> Result {
    let (name, minimal) = board_args("build", args)?;
    let name = name.ok_or("build: --board NAME is required (see boards/)")?;
    let built = build(&board(&name)?, minimal)?;
    println!("{}", built.artifact.display());
    Ok(())
}

/// Cross-builds `board` (with its `features`, or with none and its `minimal-features` when
/// `minimal`), keeps the unstripped binary for size-report and strips a copy.
pub fn build(board: &Board, minimal: bool) -> Result<Built> {
    build_features(board, minimal, &[])
}

/// [`build`] with `extra` cargo features on top (for the cost of one feature); the binaries go
/// to a folder named after them.
pub fn build_features(board: &Board, minimal: bool, extra: &[&str]) -> Result<Built> {
    let root = workspace_root();
    let target_dir = root.join(CROSS_TARGET_DIR);
    let mut command = match board.flavour {
        Flavour::Host => cargo(),
        Flavour::BuildStd | Flavour::BareMetal => {
            for tool in [DEBIAN_RUSTC, DEBIAN_CARGO] {
                if !Path::new(tool).exists() {
                    return Err(format!(
                        "{tool} is missing: run `cargo xtask setup` (Debian rustc-web, cargo-web, rust-web-src)"
                    ));
                }
            }
            let mut command = Command::new(DEBIAN_CARGO);
            command
                .env("RUSTC", DEBIAN_RUSTC)
                .env("RUSTC_BOOTSTRAP", "1")
                // The rustup proxy's variables must not leak into Debian's cargo.
                .env_remove("RUSTUP_TOOLCHAIN")
                .env_remove("RUSTC_WRAPPER")
                .env_remove("RUSTC_WORKSPACE_WRAPPER")
                .env_remove("RUSTDOC")
                .env_remove("CARGO");
            command
        }
    };
    command
        .args(["build", "--profile", &board.profile])
        .args(["--package", &board.package])
        .args(["--target", &board.triple])
        .arg("--target-dir")
        .arg(&target_dir)
        // The board file is the whole recipe: no flags from the caller's environment.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        // Keep the symbol table: size-report groups code by crate from it; we strip a copy.
        .env(
            format!(
                "CARGO_PROFILE_{}_STRIP",
                board.profile.to_uppercase().replace('-', "_")
            ),
            "false",
        );
    let mut features: Vec<String> = if minimal {
        command.arg("--no-default-features");
        board.minimal_features.clone()
    } else {
        board.features.clone()
    };
    features.extend(extra.iter().map(|f| f.to_string()));
    if !features.is_empty() {
        command.arg("--features").arg(features.join(","));
    }
    if let Some(crates) = board.flavour.build_std_crates() {
        command.arg(format!("-Zbuild-std={crates}"));
        if !board.build_std_features.is_empty() {
            command.arg(format!(
                "-Zbuild-std-features={}",
                board.build_std_features.join(",")
            ));
        }
    }
    if let Some(linker) = &board.linker {
        command.env(board.linker_env_var(), linker);
    }
    if !board.rustflags.is_empty() {
        command.env(board.rustflags_env_var(), board.rustflags.join(" "));
    }
    // cargo's own progress goes to stderr; keep stdout for the artifact path.
    command.stdout(Stdio::inherit());
    run(&mut command)?;

    let out_dir = target_dir.join(&board.triple).join(&board.profile);
    if board.is_library_only() {
        let rlib = out_dir.join(format!("lib{}.rlib", board.package.replace('-', "_")));
        return if rlib.is_file() {
            Ok(Built {
                artifact: rlib,
                unstripped: None,
            })
        } else {
            Err(format!("the build made no {}", rlib.display()))
        };
    }
    let built = out_dir.join(&board.package);
    let mut folder = if minimal {
        format!("{}-minimal", board.name)
    } else {
        board.name.clone()
    };
    for feature in extra {
        folder.push('+');
        folder.push_str(feature);
    }
    let board_dir = target_dir.join("boards").join(folder);
    std::fs::create_dir_all(&board_dir)
        .map_err(|e| format!("cannot create {}: {e}", board_dir.display()))?;
    let unstripped = board_dir.join(format!("{}.unstripped", board.package));
    std::fs::copy(&built, &unstripped)
        .map_err(|e| format!("cannot copy {}: {e}", built.display()))?;
    let stripped = board_dir.join(&board.package);
    let strip = board
        .strip
        .as_deref()
        .ok_or(format!("board `{}` names no strip tool", board.name))?;
    run(Command::new(strip)
        .arg("--strip-all")
        .arg("-o")
        .arg(&stripped)
        .arg(&unstripped))?;
    Ok(Built {
        artifact: stripped,
        unstripped: Some(unstripped),
    })
}

/// `cargo xtask size [--board NAME] [--minimal]`: builds the board (every board with a binary
/// when none is named) and runs size-report on it, with Mosquitto measured alongside.
pub fn size_command(args: &[String]) -> Result {
    let (name, minimal) = board_args("size", args)?;
    let boards = match name {
        Some(name) => vec![board(&name)?],
        None => all_boards()?
            .into_iter()
            .filter(|b| !b.is_library_only())
            .collect(),
    };
    let builds: Vec<(Board, bool)> = boards.into_iter().map(|b| (b, minimal)).collect();
    size(&builds)
}

/// Builds each board (its minimal build where the flag says so) and checks them all in one
/// size-report run, which fails on an exceeded budget.
pub fn size(builds: &[(Board, bool)]) -> Result {
    let mut report_args: Vec<String> = Vec::new();
    for (board, minimal) in builds {
        if board.is_library_only() {
            return Err(format!(
                "board `{}` builds the core library only: nothing for size-report to measure",
                board.name
            ));
        }
        let built = build(board, *minimal)?;
        report_args.extend(["--board".into(), board.name.clone()]);
        if *minimal {
            report_args.push("--minimal".into());
        }
        report_args.extend(["--binary".into(), built.artifact.display().to_string()]);
        if let Some(unstripped) = built.unstripped {
            report_args.extend(["--symbols".into(), unstripped.display().to_string()]);
        }
    }
    let json = workspace_root()
        .join(CROSS_TARGET_DIR)
        .join("size-report.json");
    let mut command = cargo();
    command.args(["run", "--quiet", "--package", "size-report", "--"]);
    if builds.iter().any(|(b, _)| b.native) && Path::new(MOSQUITTO).exists() {
        command.args(["--mosquitto", MOSQUITTO]);
    }
    command.arg("--json").arg(&json).args(&report_args);
    run(&mut command)
}

/// The optional features of the `femtomq` package whose cost `cargo xtask feature-cost` measures.
const OPTIONAL_FEATURES: &[&str] = &[
    "auth", "tls", "ws", "persist", "client", "daemon", "workers", "dns",
];

/// `cargo xtask feature-cost --board NAME...`: for each board, the stripped size of the minimal
/// build, of the minimal build plus each optional feature alone, and of the default build; prints
/// a Markdown table of what each feature costs on each board.
pub fn feature_cost_command(args: &[String]) -> Result {
    let mut names = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--board" => names.push(
                args.next()
                    .ok_or("feature-cost: --board needs a NAME")?
                    .clone(),
            ),
            other => return Err(format!("feature-cost: unknown argument `{other}`")),
        }
    }
    if names.is_empty() {
        return Err("feature-cost: name at least one --board (see boards/)".into());
    }
    let mut rows = Vec::new();
    for name in &names {
        let board = board(name)?;
        let size = |built: Built| -> Result<u64> {
            std::fs::metadata(&built.artifact)
                .map(|m| m.len())
                .map_err(|e| format!("{}: {e}", built.artifact.display()))
        };
        let minimal = size(build(&board, true)?)?;
        let mut costs = Vec::new();
        for feature in OPTIONAL_FEATURES {
            let with = size(build_features(&board, true, &[feature])?)?;
            costs.push(with as i64 - minimal as i64);
        }
        let default = size(build(&board, false)?)?;
        rows.push((name.clone(), minimal, costs, default));
    }
    println!(
        "| board | minimal B | {} | default B |",
        OPTIONAL_FEATURES
            .iter()
            .map(|f| format!("+{f}"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|--:|{}--:|", "--:|".repeat(OPTIONAL_FEATURES.len()));
    for (name, minimal, costs, default) in rows {
        let costs: Vec<String> = costs.iter().map(|c| format!("{c:+}")).collect();
        println!("| {name} | {minimal} | {} | {default} |", costs.join(" | "));
    }
    Ok(())
}

/// Debian's Mosquitto, measured alongside as the reference.
const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// `cargo xtask test --board NAME`: builds the board, starts the broker (under its qemu-user
/// runner) and runs the smoke suite against it with the host's mosquitto clients.
pub fn test_command(args: &[String]) -> Result {
    let (name, minimal) = board_args("test", args)?;
    let name = name.ok_or("test: --board NAME is required (see boards/)")?;
    let board = board(&name)?;
    if board.is_library_only() {
        return Err(format!(
            "board `{name}` builds the core library only: there is no broker to test"
        ));
    }
    let built = build(&board, minimal)?;
    let tls = if minimal {
        SmokeTls::Skip
    } else {
        SmokeTls::Check
    };
    smoke(&board, &built.artifact, tls)?;
    if minimal {
        check_minimal_refusals(&board, &built.artifact)?;
    }
    Ok(())
}

/// A command that runs `binary` through the board's runner (qemu-user), or directly.
pub fn runner_command(board: &Board, binary: &Path) -> Command {
    match board.runner.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(binary);
            command
        }
        None => Command::new(binary),
    }
}

/// A minimal build refuses what it leaves out with an error naming the cargo feature, instead
/// of ignoring the request: each command must fail and say so.
fn check_minimal_refusals(board: &Board, binary: &Path) -> Result {
    let pid_file = binary.with_file_name("refusal.pid");
    let pid_file = pid_file.to_string_lossy();
    let throttle_config = binary.with_file_name("refusal-throttle.toml");
    std::fs::write(&throttle_config, "[throttle]\nmax_failures = 3\n")
        .map_err(|e| format!("cannot write {}: {e}", throttle_config.display()))?;
    let throttle_config = throttle_config.to_string_lossy();
    let cases: [(&[&str], &str); 9] = [
        (&["pub", "-t", "t", "-m", "m"], "cargo feature `client`"),
        (&["sub", "-t", "t"], "cargo feature `client`"),
        (&["bench", "fanin"], "cargo feature `client`"),
        (
            &["start", "--daemon", "--pid-file", &pid_file],
            "cargo feature `daemon`",
        ),
        (
            &[
                "start",
                "--listen",
                "127.0.0.1:0",
                "--persist-dir",
                "/nonexistent",
            ],
            "cargo feature `persist`",
        ),
        (
            &["start", "--listen", "mqtts://127.0.0.1:0"],
            "cargo feature `tls`",
        ),
        (&["check-config", &throttle_config], "cargo feature `auth`"),
        (
            &["start", "--listen", "127.0.0.1:0", "--workers", "2"],
            "cargo feature `workers`",
        ),
        (
            &["start", "--listen", "broker.invalid:0"],
            "cargo feature `dns`",
        ),
    ];
    for (args, expected) in cases {
        let mut command = runner_command(board, binary);
        command.args(args).stdin(Stdio::null());
        let output = command
            .output()
            .map_err(|e| format!("cannot run `{}`: {e}", describe(&command)))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() || !stderr.contains(expected) {
            return Err(format!(
                "{}: `{}` should fail naming {expected}; it exited with {} and said {stderr:?}",
                board.name,
                describe(&command),
                output.status
            ));
        }
        eprintln!("refusal: {}: `{}`: ok", board.name, args.join(" "));
    }
    Ok(())
}

/// A child process killed when dropped, so that no failure path leaves one behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's stdout, read by a thread.
fn lines_of(child: &mut Child) -> Result<Receiver<String>> {
    let stdout = child.stdout.take().ok_or("child has no stdout")?;
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    Ok(receive)
}

/// Waits up to `timeout` for a line satisfying `wanted`; fails naming `what` and the lines seen.
fn expect_line(
    lines: &Receiver<String>,
    timeout: Duration,
    what: &str,
    wanted: impl Fn(&str) -> bool,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if wanted(&line) => return Ok(line),
            Ok(line) => seen.push(line),
            Err(_) => {
                return Err(format!(
                    "{what}: not seen within {timeout:?}; got {} other lines: {seen:?}",
                    seen.len()
                ));
            }
        }
    }
}

/// Runs a command to completion within `timeout` (killing it otherwise) and returns its output.
fn run_bounded(command: &mut Command, timeout: Duration) -> Result<Output> {
    let text = describe(command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{text}`: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let out_reader = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = stdout.read_to_end(&mut buffer);
        buffer
    });
    let err_reader = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = stderr.read_to_end(&mut buffer);
        buffer
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{text}` did not finish within {timeout:?}"));
            }
            Err(e) => return Err(format!("`{text}`: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// Runs a mosquitto client to completion and fails unless it exits with success.
fn client_ok(command: &mut Command) -> Result<String> {
    let text = describe(command);
    let output = run_bounded(command, STEP_TIMEOUT)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`{text}` failed with {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn mosquitto_pub(port: u16) -> Command {
    let mut command = Command::new("mosquitto_pub");
    command.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    command
}

fn mosquitto_sub(port: u16) -> Command {
    let mut command = Command::new("mosquitto_sub");
    command.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    command
}

/// `mosquitto_sub` with line-buffered stdout (coreutils `stdbuf`), so that its debug lines
/// (SUBACK, PUBLISH) arrive as they happen rather than when its stdio buffer fills.
fn live_mosquitto_sub(port: u16) -> Command {
    let mut command = Command::new("stdbuf");
    command.args([
        "-oL",
        "mosquitto_sub",
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
    ]);
    command
}

/// A running `mosquitto_sub -d -v`, subscribed (its SUBACK seen) when returned.
struct Subscriber {
    _child: Guard,
    lines: Receiver<String>,
}

fn subscribe(command: &mut Command, what: &str) -> Result<Subscriber> {
    let mut child = command
        .args(["-d", "-v"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start mosquitto_sub: {e}"))?;
    let lines = lines_of(&mut child)?;
    let subscriber = Subscriber {
        _child: Guard(child),
        lines,
    };
    expect_line(
        &subscriber.lines,
        STEP_TIMEOUT,
        &format!("{what}: SUBACK"),
        |line| line.contains("received SUBACK"),
    )?;
    Ok(subscriber)
}

impl Subscriber {
    fn expect(&self, line: &str) -> Result {
        expect_line(
            &self.lines,
            STEP_TIMEOUT,
            &format!("message `{line}`"),
            |l| l == line,
        )
        .map(drop)
    }
}

/// One smoke check, given the broker's port.
type SmokeCheck = fn(u16) -> Result;

/// Whether a smoke run also checks an mqtts:// listener (builds with the `tls` feature).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SmokeTls {
    /// The build has TLS: a certificate is made and an mqtts:// listener checked too.
    Check,
    /// The build has no TLS (minimal builds).
    Skip,
}

/// Makes a CA and a server certificate for 127.0.0.1 (openssl, P-256) in `dir`; returns the
/// paths of the CA certificate, the server's chain and its key.
fn make_test_certificates(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    // The openssl arguments below are split on spaces.
    if dir.to_string_lossy().contains(' ') {
        return Err(format!("{}: a space in the path", dir.display()));
    }
    let ca_key = dir.join("smoke-ca.key");
    let ca = dir.join("smoke-ca.pem");
    let key = dir.join("smoke-server.key");
    let request = dir.join("smoke-server.csr");
    let cert = dir.join("smoke-server.pem");
    let extensions = dir.join("smoke-server.ext");
    std::fs::write(&extensions, "subjectAltName=IP:127.0.0.1\n")
        .map_err(|e| format!("cannot write {}: {e}", extensions.display()))?;
    let openssl = |args: &[&str]| -> Result {
        let output = Command::new("openssl")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run openssl (run `cargo xtask setup`): {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`openssl {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    };
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();
    let new_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let self_signed_ca = format!(
        "req -x509 {new_key} -days 2 -subj /CN=femtomq-smoke-CA -keyout {} -out {}",
        path(&ca_key),
        path(&ca)
    );
    let server_request = format!(
        "req {new_key} -subj /CN=127.0.0.1 -keyout {} -out {}",
        path(&key),
        path(&request)
    );
    let server_certificate = format!(
        "x509 -req -days 2 -in {} -CA {} -CAkey {} -CAcreateserial -extfile {} -out {}",
        path(&request),
        path(&ca),
        path(&ca_key),
        path(&extensions),
        path(&cert)
    );
    for command in [self_signed_ca, server_request, server_certificate] {
        openssl(&command.split(' ').collect::<Vec<_>>())?;
    }
    Ok((ca, cert, key))
}

/// The port of the `scheme` listener in the broker's ready line
/// (`... listening on mqtt://127.0.0.1:P, mqtts://127.0.0.1:Q; ...`).
fn ready_port(ready: &str, scheme: &str) -> Result<u16> {
    ready
        .split(scheme)
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| c == ';' || c == ',' || c.is_whitespace())
                .next()
        })
        .and_then(|address| address.rsplit(':').next())
        .and_then(|port| port.parse::<u16>().ok())
        .ok_or(format!("no {scheme} port in the ready line {ready:?}"))
}

/// Starts `binary` (through the board's runner) and runs every smoke check against it; with
/// [`SmokeTls::Check`] an mqtts:// listener with a certificate made for the run is checked too.
pub fn smoke(board: &Board, binary: &Path, tls: SmokeTls) -> Result {
    for client in ["mosquitto_pub", "mosquitto_sub"] {
        if Command::new(client).arg("--help").output().is_err() {
            return Err(format!(
                "{client} is missing: run `cargo xtask setup` (mosquitto-clients)"
            ));
        }
    }
    let certificates = match tls {
        SmokeTls::Check => Some(make_test_certificates(
            binary.parent().ok_or("the binary has no directory")?,
        )?),
        SmokeTls::Skip => None,
    };
    let log_path = binary.with_file_name("smoke-broker.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let mut command = runner_command(board, binary);
    command.args(["start", "--listen", "127.0.0.1:0", "--log-level", "debug"]);
    if let Some((_, cert, key)) = &certificates {
        command
            .args(["--listen", "mqtts://127.0.0.1:0", "--cert"])
            .arg(cert)
            .arg("--key")
            .arg(key);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    eprintln!("$ {}", describe(&command));
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", describe(&command)))?;
    let lines = lines_of(&mut child)?;
    let broker = Guard(child);
    let started = Instant::now();
    let result = (|| {
        let ready = expect_line(&lines, READY_TIMEOUT, "the broker's ready line", |l| {
            l.contains("listening on mqtt://")
        })?;
        let port = ready_port(&ready, "mqtt://")?;
        eprintln!(
            "smoke: {} broker ready on port {port} after {:.1} s",
            board.name,
            started.elapsed().as_secs_f64()
        );
        let checks: [(&str, SmokeCheck); 5] = [
            ("connect (MQTT 3.1.1 and 5)", check_connect),
            ("QoS 0, 1 and 2", check_qos),
            ("retained message", check_retained),
            ("will on abrupt disconnect", check_will),
            ("persistent session", check_persistent_session),
        ];
        for (name, check) in checks {
            let step = Instant::now();
            check(port).map_err(|e| format!("smoke check `{name}` on {}: {e}", board.name))?;
            eprintln!("smoke: {name}: ok ({:.1} s)", step.elapsed().as_secs_f64());
        }
        if let Some((ca, _, _)) = &certificates {
            let step = Instant::now();
            let tls_port = ready_port(&ready, "mqtts://")?;
            check_tls(tls_port, ca)
                .map_err(|e| format!("smoke check `TLS` on {}: {e}", board.name))?;
            eprintln!(
                "smoke: QoS 1 over TLS (mqtts://, certificate made for the run): ok ({:.1} s)",
                step.elapsed().as_secs_f64()
            );
        }
        Ok(())
    })();
    drop(broker);
    match result {
        Ok(()) => {
            eprintln!(
                "smoke: {}: all checks passed in {:.1} s",
                board.name,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(e) => {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- last lines of {} ---", log_path.display());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
            Err(e)
        }
    }
}

/// A QoS 1 message through the mqtts:// listener, both clients verifying the broker's
/// certificate against `ca`.
fn check_tls(port: u16, ca: &Path) -> Result {
    let subscriber = subscribe(
        live_mosquitto_sub(port)
            .arg("--cafile")
            .arg(ca)
            .args(["-q", "1", "-t", "smoke/tls"]),
        "TLS subscriber",
    )?;
    client_ok(mosquitto_pub(port).arg("--cafile").arg(ca).args([
        "-q",
        "1",
        "-t",
        "smoke/tls",
        "-m",
        "over-tls",
    ]))?;
    subscriber.expect("smoke/tls over-tls")
}

fn check_connect(port: u16) -> Result {
    for version in ["mqttv311", "mqttv5"] {
        client_ok(mosquitto_pub(port).args(["-V", version, "-t", "smoke/connect", "-m", version]))?;
    }
    Ok(())
}

fn check_qos(port: u16) -> Result {
    let subscriber = subscribe(
        live_mosquitto_sub(port).args(["-V", "mqttv5", "-q", "2", "-t", "smoke/qos/#"]),
        "QoS subscriber",
    )?;
    for qos in ["0", "1", "2"] {
        let topic = format!("smoke/qos/{qos}");
        let payload = format!("at-qos-{qos}");
        client_ok(
            mosquitto_pub(port).args(["-V", "mqttv5", "-q", qos, "-t", &topic, "-m", &payload]),
        )?;
        // The debug line before the payload tells the QoS it was delivered with.
        expect_line(
            &subscriber.lines,
            STEP_TIMEOUT,
            &format!("PUBLISH at QoS {qos}"),
            |l| l.contains("received PUBLISH") && l.contains(&format!(", q{qos},")),
        )?;
        subscriber.expect(&format!("{topic} {payload}"))?;
    }
    Ok(())
}

fn check_retained(port: u16) -> Result {
    client_ok(mosquitto_pub(port).args(["-q", "1", "-r", "-t", "smoke/retained", "-m", "kept"]))?;
    let out =
        client_ok(mosquitto_sub(port).args(["-v", "-t", "smoke/retained", "-C", "1", "-W", "20"]))?;
    if out.trim() != "smoke/retained kept" {
        return Err(format!(
            "a new subscriber got {out:?}, not the retained message"
        ));
    }
    // Clear it, so that a second run starts from the same state.
    client_ok(mosquitto_pub(port).args(["-q", "1", "-r", "-n", "-t", "smoke/retained"]))?;
    Ok(())
}

fn check_will(port: u16) -> Result {
    let watcher = subscribe(
        live_mosquitto_sub(port).args(["-q", "1", "-t", "smoke/will"]),
        "will watcher",
    )?;
    let doomed = subscribe(
        live_mosquitto_sub(port).args([
            "-i",
            "smoke-doomed",
            "-t",
            "smoke/doomed",
            "--will-topic",
            "smoke/will",
            "--will-payload",
            "gone",
            "--will-qos",
            "1",
        ]),
        "client with a will",
    )?;
    // SIGKILL: the socket closes without DISCONNECT, so the broker must publish the will.
    drop(doomed);
    watcher.expect("smoke/will gone")
}

fn check_persistent_session(port: u16) -> Result {
    for (version, id, expiry) in [
        ("mqttv5", "smoke-persist-5", Some("600")),
        ("mqttv311", "smoke-persist-311", None),
    ] {
        let session = |command: &mut Command| {
            command.args([
                "-V",
                version,
                "-i",
                id,
                "-c",
                "-q",
                "1",
                "-t",
                "smoke/persist",
            ]);
            if let Some(expiry) = expiry {
                command.args(["-x", expiry]);
            }
        };
        // Subscribe, then leave cleanly once the subscription is acknowledged.
        let mut first = mosquitto_sub(port);
        session(&mut first);
        client_ok(first.arg("-E"))?;
        let payload = format!("queued-for-{version}");
        client_ok(mosquitto_pub(port).args(["-q", "1", "-t", "smoke/persist", "-m", &payload]))?;
        let mut again = mosquitto_sub(port);
        session(&mut again);
        let out = client_ok(again.args(["-v", "-C", "1", "-W", "20"]))?;
        if out.trim() != format!("smoke/persist {payload}") {
            return Err(format!(
                "{version}: the resumed session got {out:?}, not the message queued while it was away"
            ));
        }
        // End the session so that a second run starts clean.
        client_ok(mosquitto_sub(port).args([
            "-V",
            version,
            "-i",
            id,
            "-t",
            "smoke/persist",
            "-E",
        ]))?;
    }
    Ok(())
}

/// Boards CI cross-builds and runs the smoke suite on under qemu-user.
const CI_QEMU_BOARDS: &[&str] = &[
    "armv7-linux",
    "aarch64-linux",
    "riscv64-linux",
    "mipsel-linux",
];
/// Boards CI runs size-report on (the native ones measure memory too).
const CI_SIZE_BOARDS: &[&str] = &[
    "mipsel-openwrt",
    "x86_64-linux",
    "x86_64-musl",
    "armv7-linux",
    "aarch64-linux",
    "mipsel-linux",
    "riscv64-linux",
];

/// Boards whose minimal build CI smoke-tests and checks for clear refusals of what it leaves
/// out (the footprint targets are set on these builds).
const CI_MINIMAL_BOARDS: &[&str] = &["x86_64-musl", "armv7-linux"];

/// CI: cross-build each of [`CI_QEMU_BOARDS`] and run the smoke suite on it under qemu-user; the
/// minimal builds of [`CI_MINIMAL_BOARDS`] are smoke-tested and checked for refusals too.
pub fn ci_cross() -> Result {
    for name in CI_MINIMAL_BOARDS {
        let board = board(name)?;
        let started = Instant::now();
        let built = build(&board, true)?;
        smoke(&board, &built.artifact, SmokeTls::Skip)?;
        check_minimal_refusals(&board, &built.artifact)?;
        eprintln!(
            "ci: {name} (minimal): built, smoke-tested and refusals checked in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    for name in CI_QEMU_BOARDS {
        let board = board(name)?;
        let started = Instant::now();
        let built = build(&board, false)?;
        smoke(&board, &built.artifact, SmokeTls::Check)?;
        eprintln!(
            "ci: {name}: built and smoke-tested in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// CI: size-report on the default build of each of [`CI_SIZE_BOARDS`], and on the minimal
/// build of those that budget one; fails naming the board and figure over budget.
pub fn ci_size() -> Result {
    let boards = CI_SIZE_BOARDS
        .iter()
        .map(|name| board(name))
        .collect::<Result<Vec<Board>>>()?;
    let minimal = boards
        .iter()
        .filter(|b| !b.minimal_budget.is_empty())
        .map(|b| (b.clone(), true));
    let builds: Vec<(Board, bool)> = boards
        .iter()
        .map(|b| (b.clone(), false))
        .chain(minimal)
        .collect();
    size(&builds)
}

#[cfg(test)]
mod tests {
    use super::ready_port;

    #[test]
    fn ready_port_finds_each_listener_of_the_ready_line() {
        let line = "femtomq 0.1.0 listening on mqtt://127.0.0.1:40001, mqtts://127.0.0.1:40002; \
                    anonymous access on";
        assert_eq!(ready_port(line, "mqtt://"), Ok(40001));
        assert_eq!(ready_port(line, "mqtts://"), Ok(40002));
        let single = "femtomq 0.1.0 listening on mqtt://[::1]:1883; anonymous access off";
        assert_eq!(ready_port(single, "mqtt://"), Ok(1883));
        assert!(ready_port(single, "mqtts://").is_err());
    }
}
