//! Harness for the end-to-end tests in `tests/tests/`: they run the built `femtomq` binary and
//! talk to it over real loopback sockets with clients nobody here wrote (`mosquitto_pub`,
//! `mosquitto_sub` and `mosquitto_rr` from Debian's mosquitto-clients, Python `paho-mqtt` 2.x
//! from `<repo>/.venv`, the `rumqttc` crate), with `femtomq pub`/`femtomq sub`, and with raw
//! `TcpStream`s for input no client would send.
//!
//! - [`Broker`] starts the daemon on `127.0.0.1:0`, learns its port from the ready line, keeps its
//!   stderr in a file (printed when a test fails) and stops it on drop.
//! - [`Spawned`] is any client process whose stdout is read line by line; [`Subscriber`] is a
//!   `mosquitto_sub`/`femtomq sub` that is known to be subscribed before the test goes on.
//! - [`run`] runs a command to completion; [`raw`] builds and reads MQTT packets by hand.
//! - [`floor`] is the relay of `cargo xtask bench floor` (binary `floor-relay`), not a test aid.
//!
//! Every wait is bounded: a broker or client that does not answer fails the test instead of
//! hanging it. The bounds are hang guards, never performance assertions.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

pub mod floor;
pub mod raw;

/// Bound on one step that should happen at once (a client connecting, a message arriving).
pub const STEP: Duration = Duration::from_secs(10);

/// The workspace root (parent of this crate).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
}

/// The `femtomq` binary under test: `$FEMTOMQ_BIN` if set, else built once per test process
/// with `cargo build -p femtomq --bin femtomq` in the profile of the tests themselves.
pub fn femtomq_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("FEMTOMQ_BIN") {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "FEMTOMQ_BIN={} is not a file",
                path.display()
            );
            return path;
        }
        let release = !cfg!(debug_assertions);
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .args(["build", "-p", "femtomq", "--bin", "femtomq"])
            .current_dir(workspace_root());
        if release {
            command.arg("--release");
        }
        let status = command
            .status()
            .expect("cannot run cargo to build the femtomq binary");
        assert!(status.success(), "cargo build -p femtomq failed: {status}");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"));
        let path = target
            .join(if release { "release" } else { "debug" })
            .join("femtomq");
        assert!(path.is_file(), "no binary at {}", path.display());
        path
    })
}

/// The venv interpreter that has paho-mqtt (`cargo xtask setup` creates it).
pub fn venv_python() -> PathBuf {
    let python = workspace_root().join(".venv").join("bin").join("python");
    assert!(
        python.exists(),
        "{} is missing: run `cargo xtask setup` to create the venv with paho-mqtt",
        python.display()
    );
    python
}

/// A command running `tests/python/<script>` with the venv interpreter, unbuffered.
pub fn python(script: &str) -> Command {
    let path = workspace_root().join("tests").join("python").join(script);
    assert!(path.is_file(), "no script {}", path.display());
    let mut command = Command::new(venv_python());
    command.arg("-u").arg(path);
    command
}

/// A scratch directory removed on drop (kept, and its path printed, when the test fails).
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates a fresh directory named after `label`.
    pub fn new(label: &str) -> TestDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "femtomq-e2e-{}-{}-{label}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("cannot create a scratch directory");
        TestDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, contents).expect("cannot write a scratch file");
        path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for diagnosis", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Sends `signal` to process `pid` (errors ignored: the process may be gone already).
pub fn send_signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Whether process `pid` exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the parenthesised command name.
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// Waits for `child` to exit for up to `timeout`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Raises this process's soft limit on open files to the hard limit (tests with thousands of
/// sockets) and returns the new soft limit (`None`: unlimited).
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).expect("cannot raise the open file limit");
    }
    getrlimit(Resource::Nofile).current
}

/// A running `femtomq start`, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Broker {
    child: Child,
    port: u16,
    ready_line: String,
    stderr_path: PathBuf,
    dir: TestDir,
}

impl Broker {
    /// Starts `femtomq start --listen 127.0.0.1:0 ARGS` and waits for its ready line.
    pub fn start(args: &[&str]) -> Broker {
        Broker::launch(args, true).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `femtomq start ARGS` without adding a listener (ARGS or the defaults decide).
    pub fn start_without_listen(args: &[&str]) -> Broker {
        Broker::launch(args, false).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the broker; `Err` with its stderr if it exits or stays silent instead.
    pub fn launch(args: &[&str], listen: bool) -> Result<Broker, String> {
        let dir = TestDir::new("broker");
        let stderr_path = dir.join("stderr.log");
        let stderr = File::create(&stderr_path).map_err(|e| e.to_string())?;
        let mut command = Command::new(femtomq_bin());
        command.arg("start");
        if listen {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", femtomq_bin().display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keeps draining stdout after the ready line so the broker never blocks on it.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let failed = |child: &mut Child, what: String| {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            format!("femtomq start {args:?}: {what}\n--- stderr ---\n{log}")
        };
        let line = match rx.recv_timeout(STEP) {
            Ok(line) => line,
            Err(_) => {
                let status = child.try_wait().ok().flatten();
                return Err(failed(
                    &mut child,
                    format!("no ready line within {STEP:?} (exit status {status:?})"),
                ));
            }
        };
        let port = line
            .split("mqtt://")
            .nth(1)
            .and_then(|rest| rest.split([',', ';']).next())
            .and_then(|address| address.parse::<SocketAddr>().ok())
            .map(|address| address.port());
        let Some(port) = port else {
            return Err(failed(
                &mut child,
                format!("unexpected ready line `{line}`"),
            ));
        };
        Ok(Broker {
            child,
            port,
            ready_line: line,
            stderr_path,
            dir,
        })
    }

    /// The port of the first listener.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The port as a string, for client command lines.
    pub fn port_arg(&self) -> String {
        self.port.to_string()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The line the broker printed when ready.
    pub fn ready_line(&self) -> &str {
        &self.ready_line
    }

    /// A scratch directory that lives as long as the broker.
    pub fn dir(&self) -> &TestDir {
        &self.dir
    }

    /// What the broker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits until the log contains `needle` `count` times; returns whether it did in time.
    pub fn wait_for_log(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().matches(needle).count() >= count)
    }

    /// The resident set size in KiB (`VmRSS` of /proc/PID/status).
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the broker process is gone");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("no VmRSS line")
    }

    /// How many file descriptors the broker has open (listeners, clients, pipes, log).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|dir| dir.count())
            .expect("the broker process is gone")
    }

    /// Sends a signal to the broker.
    pub fn signal(&self, signal: rustix::process::Signal) {
        send_signal(self.pid(), signal);
    }

    /// Waits up to `timeout` for the broker to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_timeout(&mut self.child, timeout)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(rustix::process::Signal::TERM);
            if wait_timeout(&mut self.child, Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- broker stderr (last {} lines) ---", tail.len());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Outcome {
    /// Its exit status (`None`: killed at the timeout).
    pub status: Option<ExitStatus>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Outcome {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Its exit code (`None`: killed by a signal or at the timeout).
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// Panics with the output unless it exited with status 0.
    pub fn assert_success(&self, what: &str) -> &Outcome {
        assert!(self.success(), "{what} failed: {self:#?}");
        self
    }
}

/// Runs `command` to completion with `stdin` as input, killing it after `timeout`.
pub fn run_with_input(command: &mut Command, stdin: &[u8], timeout: Duration) -> Outcome {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", command.get_program()));
    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut input, &stdin);
    });
    let out = drain(child.stdout.take().expect("stdout is piped"));
    let err = drain(child.stderr.take().expect("stderr is piped"));
    let status = wait_timeout(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = writer.join();
    Outcome {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Runs `command` to completion with empty input, killing it after `timeout`.
pub fn run(command: &mut Command, timeout: Duration) -> Outcome {
    run_with_input(command, &[], timeout)
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// `femtomq ARGS` (the binary under test as a command-line tool).
pub fn femtomq(args: &[&str]) -> Command {
    let mut command = Command::new(femtomq_bin());
    command.args(args);
    command
}

/// `mosquitto_pub -h 127.0.0.1 -p PORT ARGS`, run to completion; panics unless it succeeds.
pub fn mosquitto_pub(port: u16, args: &[&str]) -> Outcome {
    mosquitto_pub_input(port, args, &[])
}

/// Like [`mosquitto_pub`], with `stdin` as input (for `-l` and `-s`).
pub fn mosquitto_pub_input(port: u16, args: &[&str], stdin: &[u8]) -> Outcome {
    let mut command = Command::new("mosquitto_pub");
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    let outcome = run_with_input(&mut command, stdin, Duration::from_secs(30));
    outcome.assert_success(&format!("mosquitto_pub {args:?}"));
    outcome
}

/// A client process whose standard output is read line by line; killed on drop.
pub struct Spawned {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Spawned {
    /// Starts `command` with piped stdout and stderr.
    pub fn spawn(command: &mut Command) -> Spawned {
        let name = format!("{:?}", command.get_program()).replace('"', "");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut pipe = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(count @ 1..) = pipe.read(&mut buffer) {
                if let Ok(mut text) = sink.lock() {
                    text.push_str(&String::from_utf8_lossy(&buffer[..count]));
                }
            }
        });
        Spawned {
            name,
            child,
            lines,
            stderr,
        }
    }

    /// The next line of output, if one comes within `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// The next line of output; panics (with the process's stderr) if none comes within `timeout`.
    pub fn expect_line(&self, timeout: Duration) -> String {
        self.next_line(timeout).unwrap_or_else(|| {
            panic!(
                "{}: no output within {timeout:?}; stderr:\n{}",
                self.name,
                self.stderr()
            )
        })
    }

    /// Reads lines until `keep` has accepted `count` of them, within `timeout` overall.
    /// Panics with what it got so far if they do not all come.
    pub fn collect(
        &self,
        count: usize,
        timeout: Duration,
        mut keep: impl FnMut(&str) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut kept = Vec::new();
        while kept.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if keep(&line) => kept.push(line),
                Ok(_) => {}
                Err(_) => panic!(
                    "{}: {} of {count} lines within {timeout:?}: {kept:?}\nstderr:\n{}",
                    self.name,
                    kept.len(),
                    self.stderr()
                ),
            }
        }
        kept
    }

    /// Lines that arrive within `window` (used after a marker, to show nothing else came).
    pub fn lines_within(&self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut lines = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            lines.push(line);
        }
        lines
    }

    /// What the process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal.
    pub fn signal(&self, signal: rustix::process::Signal) {
        send_signal(self.pid(), signal);
    }

    /// SIGKILL: the process dies without closing anything itself (the kernel closes sockets).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_timeout(&mut self.child, timeout)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let stderr = self.stderr();
            if !stderr.is_empty() {
                eprintln!("--- {} stderr ---\n{stderr}", self.name);
            }
        }
    }
}

/// A `mosquitto_sub`-like subscriber (`-v` output: `TOPIC PAYLOAD` per line) that is known to be
/// subscribed: it also subscribes to a private probe topic, and [`Subscriber::start`] publishes
/// there until a probe comes back. Lines on `probe/...` topics are never returned as messages,
/// so tests keep their own topics out of `probe/`.
pub struct Subscriber {
    process: Spawned,
    probe_topic: String,
    early: std::cell::RefCell<Vec<String>>,
}

/// Client programs that print messages like `mosquitto_sub -v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubTool {
    /// Debian's `mosquitto_sub`.
    Mosquitto,
    /// `femtomq sub`.
    Femtomq,
}

impl Subscriber {
    /// Starts `TOOL -h 127.0.0.1 -p PORT -v -t probe/N ARGS` and waits until it is subscribed.
    pub fn start(tool: SubTool, port: u16, args: &[&str]) -> Subscriber {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let probe_topic = format!(
            "probe/{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut command = match tool {
            SubTool::Mosquitto => {
                let mut command = Command::new("mosquitto_sub");
                command.args(["-h", "127.0.0.1"]);
                command
            }
            SubTool::Femtomq => femtomq(&["sub", "--host", "127.0.0.1"]),
        };
        command
            .args(["-p", &port.to_string(), "-v", "-t", &probe_topic])
            .args(args);
        let subscriber = Subscriber {
            process: Spawned::spawn(&mut command),
            probe_topic,
            early: std::cell::RefCell::new(Vec::new()),
        };
        let deadline = Instant::now() + STEP;
        'ready: loop {
            assert!(
                Instant::now() < deadline,
                "{tool:?} subscriber {args:?} not subscribed within {STEP:?}; stderr:\n{}",
                subscriber.process.stderr()
            );
            // Probes go out at QoS 0: never queued for an offline session.
            mosquitto_pub(port, &["-t", &subscriber.probe_topic, "-m", "probe"]);
            while let Some(line) = subscriber.process.next_line(Duration::from_millis(200)) {
                if subscriber.is_own_probe(&line) {
                    break 'ready;
                }
                if subscriber.is_probe(&line) {
                    continue;
                }
                // Retained or queued messages can come before the probe.
                subscriber.early.borrow_mut().push(line);
            }
        }
        // Probes that were still in flight.
        for line in subscriber.process.lines_within(Duration::from_millis(50)) {
            if !subscriber.is_probe(&line) {
                subscriber.early.borrow_mut().push(line);
            }
        }
        subscriber
    }

    fn is_own_probe(&self, line: &str) -> bool {
        line.split_once(' ').map_or(line, |(topic, _)| topic) == self.probe_topic
    }

    /// Probes of any subscriber (a `#` subscriber sees the others'): never a test's message.
    fn is_probe(&self, line: &str) -> bool {
        line.starts_with("probe/")
    }

    /// The next `count` messages as `TOPIC PAYLOAD` lines; panics if they do not all come within
    /// `timeout`.
    pub fn messages(&self, count: usize, timeout: Duration) -> Vec<String> {
        let mut early = self.early.borrow_mut();
        let taken = early.len().min(count);
        let mut messages: Vec<String> = early.drain(..taken).collect();
        messages.extend(
            self.process
                .collect(count - taken, timeout, |line| !line.starts_with("probe/")),
        );
        messages
    }

    /// The next message, if one comes within `timeout`.
    pub fn next_message(&self, timeout: Duration) -> Option<String> {
        if !self.early.borrow().is_empty() {
            return Some(self.early.borrow_mut().remove(0));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let line = self
                .process
                .next_line(deadline.saturating_duration_since(Instant::now()))?;
            if !self.is_probe(&line) {
                return Some(line);
            }
        }
    }

    /// Messages that arrive within `window` (after the expected ones: to show nothing more came).
    pub fn more_within(&self, window: Duration) -> Vec<String> {
        let mut more: Vec<String> = self.early.borrow_mut().drain(..).collect();
        more.extend(
            self.process
                .lines_within(window)
                .into_iter()
                .filter(|line| !self.is_probe(line)),
        );
        more
    }

    /// The process.
    pub fn process(&mut self) -> &mut Spawned {
        &mut self.process
    }
}

/// The CRC-32 (IEEE, as Python's `zlib.crc32`) of `bytes`: to compare large payloads.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Arguments as `&str`s from owned strings.
pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A path as a command-line argument (scratch paths are always UTF-8).
pub fn path_arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// A paho-mqtt script (`tests/python/SCRIPT`) started with `--port PORT ARGS`; its stdout is one
/// JSON object per line.
pub fn paho(script: &str, port: u16, args: &[&str]) -> Spawned {
    Spawned::spawn(
        python(script)
            .args(["--port", &port.to_string()])
            .args(args),
    )
}

/// `paho_sub.py --port PORT ARGS`, once it printed `subscribed` (or `connected` when it
/// subscribes to nothing).
pub fn paho_sub(port: u16, args: &[&str]) -> Spawned {
    let process = paho("paho_sub.py", port, args);
    let expected = if args.contains(&"--topic") {
        "subscribed"
    } else {
        "connected"
    };
    loop {
        let event = json(&process.expect_line(STEP));
        match event["event"].as_str() {
            Some(name) if name == expected => return process,
            Some("connected") => {}
            _ => panic!("paho_sub {args:?}: unexpected {event}"),
        }
    }
}

/// Parses one JSON line a Python script printed.
pub fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Reads `count` `message` events of a paho script, within `timeout`.
pub fn paho_messages(process: &Spawned, count: usize, timeout: Duration) -> Vec<serde_json::Value> {
    process
        .collect(count, timeout, |line| {
            assert_eq!(json(line)["event"], "message", "unexpected output {line}");
            true
        })
        .iter()
        .map(|line| json(line))
        .collect()
}

/// The TCP ports process `pid` listens on over IPv4 (its socket inodes matched against
/// /proc/net/tcp): to reach a daemon whose ready line went to /dev/null.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
                .filter_map(|target| {
                    let target = target.to_str()?;
                    Some(
                        target
                            .strip_prefix("socket:[")?
                            .strip_suffix(']')?
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            if *state != "0A" || !inodes.iter().any(|i| i == inode) {
                return None;
            }
            u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
        })
        .collect()
}

/// The ports of the `mqtt://` addresses in a ready line, in listener order.
pub fn ready_ports(line: &str) -> Vec<u16> {
    line.split("mqtt://")
        .skip(1)
        .filter_map(|rest| rest.split([',', ';']).next())
        .filter_map(|address| address.parse::<SocketAddr>().ok())
        .map(|address| address.port())
        .collect()
}
