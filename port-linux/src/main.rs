//! The `femtomq` daemon: command line, configuration, logging, signals, pid file, and the
//! `pub`/`sub` client commands. The broker itself runs in `femtomq_posix::run`.

#![forbid(unsafe_code)]

mod access;
#[cfg(feature = "client")]
mod bench;
#[cfg(feature = "client")]
mod client;
mod config;
mod listeners;
mod logger;
mod toml;

use std::io::Write;
use std::os::unix::net::UnixStream;
#[cfg(feature = "daemon")]
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
#[cfg(feature = "daemon")]
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use argh::FromArgs;
use log::{error, info};

#[cfg(feature = "client")]
use femtomq_core::{ProtocolVersion, QoS};
#[cfg(feature = "persist")]
use femtomq_posix::persist::{PersistConfig, SyncMode};
use femtomq_posix::{Control, ListenerSpec, ReloadOutcome, ServerConfig};

use config::{ConfigError, Settings, parse_log_level};

/// femtomq: an MQTT 5.0 / 3.1.1 broker for the IoT edge.
#[derive(FromArgs)]
struct Cli {
    /// print the version and exit
    #[argh(switch, short = 'V')]
    version: bool,
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
// Parsed once at startup; boxing the start options would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    Start(StartArgs),
    Stop(StopArgs),
    Reload(ReloadArgs),
    CheckConfig(CheckConfigArgs),
    Pub(PubArgs),
    Sub(SubArgs),
    Bench(BenchArgs),
    #[cfg(feature = "auth")]
    Passwd(PasswdArgs),
}

/// Add or update a user in a password file (Mosquitto's `$7$` format), or delete one. The
/// password is read from the terminal without echo, or from standard input (one line) when it
/// is not a terminal; never from the command line.
#[cfg(feature = "auth")]
#[derive(FromArgs)]
#[argh(subcommand, name = "passwd")]
struct PasswdArgs {
    /// create a new file (replacing an existing one)
    #[argh(switch, short = 'c')]
    create: bool,
    /// delete the user
    #[argh(switch, short = 'D')]
    delete: bool,
    /// the password file
    #[argh(positional)]
    file: PathBuf,
    /// the user name
    #[argh(positional)]
    user: String,
}

/// Load-test an MQTT broker (this one or any other) and report throughput, loss, latency and,
/// given its pid, the broker's CPU and memory.
#[cfg(feature = "client")]
#[derive(FromArgs)]
#[argh(subcommand, name = "bench")]
struct BenchArgs {
    /// scenario: fanin, fanout, pairs or conns
    #[argh(positional)]
    scenario: String,
    #[argh(option, default = "String::from(\"127.0.0.1\")")]
    /// broker host (default 127.0.0.1)
    host: String,
    /// broker port (default 1883)
    #[argh(option, short = 'p', default = "1883")]
    port: u16,
    /// clients: publishers (fanin), subscribers (fanout), pairs, or connections (conns: held
    /// for the duration, each sending PINGREQ every 15 s; one without PINGRESP counts as lost)
    #[argh(option, short = 'n', default = "16")]
    clients: usize,
    /// quality of service 0, 1 or 2 (default 0)
    #[argh(option, short = 'q', default = "0")]
    qos: u8,
    /// payload bytes, at least 16 (default 64)
    #[argh(option, short = 's', default = "64")]
    size: usize,
    /// seconds of publishing (default 5)
    #[argh(option, short = 'd', default = "5")]
    duration: u64,
    /// messages per second per publisher; 0 for as fast as possible (default 0)
    #[argh(option, short = 'r', default = "0")]
    rate: u32,
    /// the broker's process id, to report its CPU seconds and RSS
    #[argh(option)]
    broker_pid: Option<u32>,
    /// print one line of JSON instead of a summary
    #[argh(switch)]
    json: bool,
}

/// Run the broker (the default command). Flags override the configuration file.
#[derive(FromArgs, Default, Clone)]
#[argh(subcommand, name = "start")]
struct StartArgs {
    /// configuration file (TOML; see femtomq.toml for every key)
    #[argh(option, short = 'c')]
    conf: Option<PathBuf>,
    /// listener: HOST:PORT, mqtt://HOST:PORT, mqtts://HOST:PORT, ws://HOST:PORT/PATH or
    /// wss://HOST:PORT/PATH (repeatable; replaces the file's listeners)
    #[argh(option, short = 'l')]
    listen: Vec<String>,
    /// certificate chain (PEM) of the mqtts:// and wss:// listeners
    #[argh(option)]
    cert: Option<PathBuf>,
    /// private key (PEM, not encrypted) of the mqtts:// and wss:// listeners
    #[argh(option)]
    key: Option<PathBuf>,
    /// CA certificates (PEM) to verify client certificates against
    #[argh(option)]
    cafile: Option<PathBuf>,
    /// refuse TLS clients without a valid certificate (needs --cafile)
    #[argh(switch)]
    require_certificate: bool,
    /// the client certificate's Common Name is the user name (needs --cafile)
    #[argh(switch)]
    use_identity_as_username: bool,
    /// worker threads (default 1); 0 means one per CPU
    #[argh(option)]
    workers: Option<usize>,
    /// log level: off, error, warn, info, debug or trace
    #[argh(option)]
    log_level: Option<String>,
    /// run in the background (requires --pid-file; log to a file or syslog)
    #[argh(switch, short = 'd')]
    daemon: bool,
    /// write the process id to this file (removed at exit)
    #[argh(option)]
    pid_file: Option<PathBuf>,
    /// clients connected at once (limits.max_connections)
    #[argh(option)]
    max_connections: Option<u32>,
    /// largest packet accepted or sent, in bytes (limits.max_packet_size)
    #[argh(option)]
    max_packet_size: Option<u32>,
    /// longest keep alive accepted, in seconds; MQTT 5 clients asking for more are told this
    #[argh(option)]
    max_keepalive: Option<u16>,
    /// messages at QoS 1/2 in flight per client (limits.max_inflight)
    #[argh(option)]
    receive_maximum: Option<u16>,
    /// messages queued per offline session (limits.max_queued_messages)
    #[argh(option)]
    max_queued_messages: Option<u32>,
    /// whether clients without a user name may connect (true|false; default: false when a
    /// password file is configured, else true)
    #[argh(option)]
    allow_anonymous: Option<bool>,
    /// password file in Mosquitto's format (see `femtomq passwd`)
    #[argh(option)]
    password_file: Option<PathBuf>,
    /// ACL file in Mosquitto's syntax
    #[argh(option)]
    acl_file: Option<PathBuf>,
    /// keep sessions, queues and retained messages in this directory across restarts and
    /// crashes (default: in memory only)
    #[argh(option)]
    persist_dir: Option<PathBuf>,
    /// when the store is synced: always (acknowledge after fsync), interval, never
    #[argh(option)]
    sync: Option<String>,
    /// milliseconds between syncs with --sync interval (default 1000)
    #[argh(option)]
    sync_interval_ms: Option<u64>,
    /// store size cap in bytes: above it, new persistent messages get 0x97 (default 64 MiB)
    #[argh(option)]
    persist_max_bytes: Option<u64>,
}

/// Stop a running broker (SIGTERM to the pid in the pid file) and wait for it to exit.
#[derive(FromArgs)]
#[argh(subcommand, name = "stop")]
struct StopArgs {
    /// the broker's pid file
    #[argh(option)]
    pid_file: PathBuf,
}

/// Make a running broker re-read its configuration (SIGHUP to the pid in the pid file).
#[derive(FromArgs)]
#[argh(subcommand, name = "reload")]
struct ReloadArgs {
    /// the broker's pid file
    #[argh(option)]
    pid_file: PathBuf,
}

/// Check a configuration file and exit: 0 if valid, 1 with the error otherwise.
#[derive(FromArgs)]
#[argh(subcommand, name = "check-config")]
struct CheckConfigArgs {
    /// the file to check
    #[argh(positional)]
    file: PathBuf,
}

/// Publish messages (like mosquitto_pub).
#[cfg(feature = "client")]
#[derive(FromArgs)]
#[argh(subcommand, name = "pub")]
struct PubArgs {
    #[argh(option, default = "String::from(\"localhost\")")]
    /// broker host (default localhost)
    host: String,
    /// broker port (default 1883)
    #[argh(option, short = 'p', default = "1883")]
    port: u16,
    /// topic to publish to
    #[argh(option, short = 't')]
    topic: String,
    /// message payload (repeatable: one message each)
    #[argh(option, short = 'm')]
    message: Vec<String>,
    /// send the contents of a file as one message
    #[argh(option, short = 'f')]
    file: Option<PathBuf>,
    /// send an empty message (deletes a retained message with -r)
    #[argh(switch, short = 'n')]
    null_message: bool,
    /// send each line of standard input as a message
    #[argh(switch, short = 'l')]
    stdin_lines: bool,
    /// quality of service 0, 1 or 2 (default 0)
    #[argh(option, short = 'q', default = "0")]
    qos: u8,
    /// retain the message
    #[argh(switch, short = 'r')]
    retain: bool,
    /// user property KEY=VALUE (MQTT 5; repeatable)
    #[argh(option)]
    user_property: Vec<String>,
    #[argh(option, short = 'V', default = "String::from(\"5\")")]
    /// protocol version: 5, 311 or 31 (default 5)
    protocol: String,
    #[argh(option, short = 'i', default = "String::new()")]
    /// client id (default: assigned by the broker)
    id: String,
    /// user name
    #[argh(option, short = 'u')]
    username: Option<String>,
    /// password
    #[argh(option, short = 'P')]
    password: Option<String>,
    /// refused: these client commands do not speak TLS yet (use mosquitto_pub/_sub --cafile)
    #[argh(option)]
    cafile: Option<PathBuf>,
}

/// Subscribe and print messages (like mosquitto_sub).
#[cfg(feature = "client")]
#[derive(FromArgs)]
#[argh(subcommand, name = "sub")]
struct SubArgs {
    #[argh(option, default = "String::from(\"localhost\")")]
    /// broker host (default localhost)
    host: String,
    /// broker port (default 1883)
    #[argh(option, short = 'p', default = "1883")]
    port: u16,
    /// topic filter (repeatable)
    #[argh(option, short = 't')]
    topic: Vec<String>,
    /// maximum quality of service 0, 1 or 2 (default 0)
    #[argh(option, short = 'q', default = "0")]
    qos: u8,
    /// print the topic before each payload
    #[argh(switch, short = 'v')]
    verbose: bool,
    /// exit after this many messages
    #[argh(option, short = 'C')]
    count: Option<usize>,
    /// exit with an error after this many seconds
    #[argh(option, short = 'W')]
    timeout: Option<u64>,
    /// keep the session (no clean start), with -x to set its expiry in MQTT 5
    #[argh(switch, short = 'c')]
    keep_session: bool,
    /// session expiry interval in seconds (MQTT 5)
    #[argh(option, short = 'x')]
    session_expiry: Option<u32>,
    /// keep alive in seconds (default 60)
    #[argh(option, short = 'k', default = "60")]
    keepalive: u16,
    #[argh(option, short = 'V', default = "String::from(\"5\")")]
    /// protocol version: 5, 311 or 31 (default 5)
    protocol: String,
    #[argh(option, short = 'i', default = "String::new()")]
    /// client id (default: assigned by the broker)
    id: String,
    /// user name
    #[argh(option, short = 'u')]
    username: Option<String>,
    /// password
    #[argh(option, short = 'P')]
    password: Option<String>,
    /// refused: these client commands do not speak TLS yet (use mosquitto_pub/_sub --cafile)
    #[argh(option)]
    cafile: Option<PathBuf>,
}

/// Without `client` the `pub`, `sub` and `bench` commands stay in the help, to say clearly that
/// they are not built; `main` answers them before parsing (their options would cost about 4 KB
/// of parser).
#[cfg(not(feature = "client"))]
macro_rules! absent_client_command {
    ($args:ident, $name:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(FromArgs)]
        #[argh(subcommand, name = $name)]
        struct $args {}
    };
}
#[cfg(not(feature = "client"))]
absent_client_command!(
    BenchArgs,
    "bench",
    "Load-test an MQTT broker (not in this build)."
);
#[cfg(not(feature = "client"))]
absent_client_command!(PubArgs, "pub", "Publish messages (not in this build).");
#[cfg(not(feature = "client"))]
absent_client_command!(
    SubArgs,
    "sub",
    "Subscribe and print messages (not in this build)."
);

fn main() -> ExitCode {
    #[cfg(not(feature = "client"))]
    if let Some(command) = std::env::args()
        .nth(1)
        .filter(|c| matches!(c.as_str(), "pub" | "sub" | "bench"))
    {
        return report(no_client_commands(&command));
    }
    let cli: Cli = argh::from_env();
    if cli.version {
        println!("femtomq {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let result = match cli.command.unwrap_or(Command::Start(StartArgs::default())) {
        Command::Start(args) => start(args),
        Command::Stop(args) => signal_pid_file(&args.pid_file, Signal::Terminate),
        Command::Reload(args) => signal_pid_file(&args.pid_file, Signal::Reload),
        Command::CheckConfig(args) => check_config(&args.file),
        #[cfg(feature = "client")]
        Command::Pub(args) => publish(args),
        #[cfg(feature = "client")]
        Command::Sub(args) => subscribe(args),
        #[cfg(feature = "client")]
        Command::Bench(args) => run_bench(args),
        #[cfg(not(feature = "client"))]
        Command::Pub(_) => no_client_commands("pub"),
        #[cfg(not(feature = "client"))]
        Command::Sub(_) => no_client_commands("sub"),
        #[cfg(not(feature = "client"))]
        Command::Bench(_) => no_client_commands("bench"),
        #[cfg(feature = "auth")]
        Command::Passwd(args) => access::passwd(&args.file, &args.user, args.create, args.delete),
    };
    report(result)
}

/// The exit code of a command, its error printed.
fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("femtomq: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The file's settings (or the embedded defaults) with the command-line flags applied.
fn settings(args: &StartArgs) -> Result<Settings, ConfigError> {
    let mut settings = match &args.conf {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    if !args.listen.is_empty() {
        settings.listeners = args
            .listen
            .iter()
            .map(|url| ListenerSpec::parse(url).map_err(|e| ConfigError::flag("--listen", e.0)))
            .collect::<Result<_, _>>()?;
        // The file's per-listener settings belonged to the file's listeners.
        settings.listener_auth.clear();
    }
    let limits = &mut settings.engine.limits;
    if let Some(value) = args.max_connections {
        limits.max_connections = value;
    }
    if let Some(value) = args.max_packet_size {
        limits.max_packet_size = value;
    }
    if let Some(value) = args.receive_maximum {
        limits.max_inflight = value.max(1);
    }
    if let Some(value) = args.max_queued_messages {
        limits.max_queued_messages = value;
    }
    if let Some(value) = args.max_keepalive {
        settings.engine.max_keep_alive = (value > 0).then_some(value);
    }
    if let Some(workers) = args.workers {
        settings.workers = workers;
    }
    if let Some(allow) = args.allow_anonymous {
        settings.allow_anonymous = Some(allow);
    }
    if let Some(path) = &args.password_file {
        settings.password_file = Some(path.clone());
    }
    if let Some(path) = &args.acl_file {
        settings.acl_file = Some(path.clone());
    }
    listeners::apply_tls_flags(
        &mut settings,
        &listeners::TlsFlags {
            cert: args.cert.as_ref(),
            key: args.key.as_ref(),
            cafile: args.cafile.as_ref(),
            require_certificate: args.require_certificate,
            use_identity_as_username: args.use_identity_as_username,
        },
    )?;
    if let Some(level) = &args.log_level {
        settings.log_level = parse_log_level(level).ok_or_else(|| {
            ConfigError::flag(
                "--log-level",
                format!("`{level}` is not a level (off, error, warn, info, debug, trace)"),
            )
        })?;
    }
    check_implemented(&settings)?;
    Ok(settings)
}

/// Refuses settings that name features not built yet, rather than ignoring them.
fn check_implemented(settings: &Settings) -> Result<(), ConfigError> {
    access::check_features(settings)?;
    #[cfg(not(feature = "workers"))]
    if settings.workers != 1 {
        return Err(ConfigError::flag(
            "workers",
            format!(
                "{}: this build runs one worker (cargo feature `workers`)",
                settings.workers
            ),
        ));
    }
    listeners::check(settings)?;
    if settings.engine.limits.max_packet_size < 64 {
        return Err(ConfigError::flag(
            "max_packet_size",
            "must be at least 64 bytes",
        ));
    }
    Ok(())
}

fn check_config(file: &Path) -> Result<(), String> {
    let settings = Settings::from_file(file).map_err(|e| e.to_string())?;
    check_implemented(&settings).map_err(|e| format!("{}: {e}", file.display()))?;
    // The password and ACL files it names must be usable too.
    access::load(&settings).map_err(|e| e.to_string())?;
    println!("{}: ok", file.display());
    Ok(())
}

fn default_listeners() -> (Vec<ListenerSpec>, Vec<ListenerSpec>) {
    let ipv4 = ListenerSpec::parse("mqtt://127.0.0.1:1883").expect("a valid literal");
    let ipv6 = ListenerSpec::parse("mqtt://[::1]:1883").expect("a valid literal");
    (vec![ipv4], vec![ipv6])
}

/// The persistence settings of the `[persist]` table with the flags over it (`None` without a
/// store directory).
#[cfg(feature = "persist")]
fn persist_config(
    args: &StartArgs,
    file: &config::PersistSettings,
) -> Result<Option<PersistConfig>, String> {
    let Some(dir) = args.persist_dir.as_ref().or(file.dir.as_ref()) else {
        if args.sync.is_some() || args.sync_interval_ms.is_some() {
            return Err("--sync needs --persist-dir (or `dir` in [persist])".into());
        }
        return Ok(None);
    };
    let interval = Duration::from_millis(
        args.sync_interval_ms
            .unwrap_or(file.sync_interval_ms)
            .max(1),
    );
    let sync = match args.sync.as_deref().unwrap_or(&file.sync) {
        "always" => SyncMode::Always,
        "interval" => SyncMode::Interval(interval),
        "never" => SyncMode::Never,
        other => {
            return Err(format!(
                "--sync `{other}`: expected always, interval or never"
            ));
        }
    };
    Ok(Some(PersistConfig {
        dir: dir.clone(),
        sync,
        max_bytes: args.persist_max_bytes.unwrap_or(file.max_bytes),
        compact_every_bytes: file.compact_every_bytes,
    }))
}

fn start(args: StartArgs) -> Result<(), String> {
    let settings = settings(&args).map_err(|e| e.to_string())?;
    // Password and ACL files are read before anything starts: a bad one stops startup.
    let access = access::load(&settings).map_err(|e| e.to_string())?;
    if args.daemon {
        return daemonize(&args);
    }
    logger::init(&settings.log_target, settings.log_level)?;
    raise_open_file_limit(settings.engine.limits.max_connections);
    let pid_file = PidFile::create(args.pid_file.as_deref())?;

    // Signals reach the event loop through pipes (signal-hook writes a byte from the handler).
    let (shutdown_rx, shutdown_tx) = UnixStream::pair().map_err(|e| format!("pipe: {e}"))?;
    let (reload_rx, reload_tx) = UnixStream::pair().map_err(|e| format!("pipe: {e}"))?;
    let (report_rx, report_tx) = UnixStream::pair().map_err(|e| format!("pipe: {e}"))?;
    let shutdown_tx2 = shutdown_tx.try_clone().map_err(|e| format!("pipe: {e}"))?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, shutdown_tx)
        .map_err(|e| format!("signal: {e}"))?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, shutdown_tx2)
        .map_err(|e| format!("signal: {e}"))?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGHUP, reload_tx)
        .map_err(|e| format!("signal: {e}"))?;
    // A write past RLIMIT_FSIZE fails with EFBIG (the store refuses with 0x97) instead of killing.
    signal_hook::flag::register(signal_hook::consts::SIGXFSZ, Default::default())
        .map_err(|e| format!("signal: {e}"))?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGUSR1, report_tx)
        .map_err(|e| format!("signal: {e}"))?;

    let (listeners, optional_listeners) = if settings.listeners.is_empty() {
        default_listeners()
    } else {
        (settings.listeners.clone(), Vec::new())
    };
    let anonymous = anonymous_summary(&access, listeners.len() + optional_listeners.len());
    let reload_args = args.clone();
    let mut engine = settings.engine;
    engine.workers = worker_count(settings.workers);
    let server = ServerConfig {
        listeners,
        optional_listeners,
        engine,
        seed: seed(),
        access,
        #[cfg(feature = "persist")]
        persist: persist_config(&args, &settings.persist)?,
    };
    #[cfg(not(feature = "persist"))]
    if args.persist_dir.is_some()
        || settings.persist.dir.is_some()
        || args.sync.is_some()
        || args.sync_interval_ms.is_some()
        || args.persist_max_bytes.is_some()
    {
        return Err(
            "--persist-dir: this build has no persistence (cargo feature `persist`)".into(),
        );
    }
    let control = Control {
        shutdown: shutdown_rx,
        reload: reload_rx,
        report: report_rx,
        on_reload: Box::new(move || {
            // A bad password or ACL file keeps the rules in force: never fail open.
            match self::settings(&reload_args)
                .and_then(|settings| Ok((access::load(&settings)?, settings)))
            {
                Ok((access, settings)) => {
                    log::set_max_level(settings.log_level);
                    ReloadOutcome::Apply(settings.engine, access)
                }
                Err(e) => {
                    error!("reload: {e}");
                    ReloadOutcome::Keep
                }
            }
        }),
        on_ready: Box::new(move |bound: &[ListenerSpec]| {
            let places: Vec<String> = bound.iter().map(ListenerSpec::to_string).collect();
            let line = format!(
                "femtomq {} listening on {}; anonymous access {}",
                env!("CARGO_PKG_VERSION"),
                places.join(", "),
                anonymous
            );
            println!("{line}");
            let _ = std::io::stdout().flush();
            info!("{line}");
        }),
    };
    let result = femtomq_posix::run(server, control).map_err(|e| e.to_string());
    drop(pid_file);
    result
}

/// "on", "off" or "per listener": whether the listeners let clients in without a user name.
fn anonymous_summary(access: &femtomq_posix::AccessRules, listeners: usize) -> &'static str {
    let mut values = (0..listeners).map(|i| {
        u16::try_from(i).map_or(access.fallback.allow_anonymous, |i| {
            access.for_listener(i).allow_anonymous
        })
    });
    let first = values.next().unwrap_or(access.fallback.allow_anonymous);
    match (values.all(|v| v == first), first) {
        (false, _) => "per listener",
        (true, true) => "on",
        (true, false) => "off",
    }
}

/// Raises the soft limit on open files to the hard limit: every client is a descriptor, and the
/// common default of 1,024 is below what `max_connections` allows. Warns if it stays too low.
fn raise_open_file_limit(max_connections: u32) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            log::warn!("cannot raise the open file limit: {e}");
        }
    }
    let current = getrlimit(Resource::Nofile).current;
    let needed = u64::from(max_connections) + 64;
    if current.is_some_and(|files| files < needed) {
        log::warn!(
            "open file limit {} is below max_connections {max_connections} (plus listeners and files)",
            current.unwrap_or(0)
        );
    }
}

/// Worker threads for a `workers` setting: 0 means one per CPU the process may use.
#[cfg(feature = "workers")]
fn worker_count(workers: usize) -> u16 {
    let workers = if workers == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        workers
    };
    workers.clamp(1, 1024) as u16
}

/// Without the `workers` feature there is one worker (`check_implemented` refuses others).
#[cfg(not(feature = "workers"))]
fn worker_count(_: usize) -> u16 {
    1
}

/// A seed that differs between runs (client id assignment, random shared-subscription choice).
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Restarts this program in the background, in its own process group and without a terminal,
/// and returns once it has written its pid file (or failed).
#[cfg(feature = "daemon")]
fn daemonize(args: &StartArgs) -> Result<(), String> {
    let Some(pid_file) = &args.pid_file else {
        return Err("--daemon needs --pid-file".into());
    };
    let _ = std::fs::remove_file(pid_file);
    let program =
        std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let arguments: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--daemon" && a != "-d")
        .collect();
    let mut child = Process::new(program)
        .args(&arguments)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the daemon: {e}"))?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!(
                "the daemon exited at startup ({status}); run without --daemon to see why"
            ));
        }
        if std::fs::read_to_string(pid_file).is_ok_and(|text| text.trim() == child.id().to_string())
        {
            println!("femtomq running in the background, pid {}", child.id());
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("the daemon did not write its pid file within 10 s".into())
}

/// What `--daemon` says in a build without it: std's process spawning costs about 10 KB, and
/// procd, systemd or a shell's `&` run the broker in the background as well.
#[cfg(not(feature = "daemon"))]
fn daemonize(_: &StartArgs) -> Result<(), String> {
    Err(
        "--daemon: this build has no daemon mode (cargo feature `daemon`); run it in the \
         foreground under procd or systemd, or with a shell's `&`"
            .into(),
    )
}

/// A pid file that is removed when dropped.
struct PidFile(Option<PathBuf>);

impl PidFile {
    fn create(path: Option<&Path>) -> Result<PidFile, String> {
        if let Some(path) = path {
            std::fs::write(path, format!("{}\n", std::process::id()))
                .map_err(|e| format!("cannot write pid file {}: {e}", path.display()))?;
        }
        Ok(PidFile(path.map(Path::to_path_buf)))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Signal {
    Terminate,
    Reload,
}

fn signal_pid_file(path: &Path, signal: Signal) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read pid file {}: {e}", path.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| format!("{}: `{}` is not a process id", path.display(), text.trim()))?;
    let pid = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| format!("{}: invalid pid {pid}", path.display()))?;
    let number = match signal {
        Signal::Terminate => rustix::process::Signal::TERM,
        Signal::Reload => rustix::process::Signal::HUP,
    };
    rustix::process::kill_process(pid, number)
        .map_err(|e| format!("cannot signal process {}: {e}", pid.as_raw_nonzero()))?;
    if signal == Signal::Terminate {
        let started = Instant::now();
        while rustix::process::test_kill_process(pid).is_ok() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "process {} did not exit within 10 s",
                    pid.as_raw_nonzero()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

#[cfg(feature = "client")]
fn protocol(name: &str) -> Result<ProtocolVersion, String> {
    match name {
        "5" | "mqttv5" => Ok(ProtocolVersion::V5),
        "311" | "4" | "mqttv311" => Ok(ProtocolVersion::V3_1_1),
        "31" | "3" | "mqttv31" => Ok(ProtocolVersion::V3_1),
        other => Err(format!(
            "`{other}` is not a protocol version (5, 311 or 31)"
        )),
    }
}

#[cfg(feature = "client")]
fn qos(value: u8) -> Result<QoS, String> {
    QoS::from_u8(value).ok_or_else(|| format!("QoS {value} does not exist (0, 1 or 2)"))
}

#[cfg(feature = "client")]
fn refuse_tls(cafile: &Option<PathBuf>) -> Result<(), String> {
    match cafile {
        // The broker serves TLS (mqtts://, wss://); only these client commands lack it.
        Some(_) => Err(
            "--cafile: `femtomq pub` and `femtomq sub` do not speak TLS yet; \
                        use mosquitto_pub or mosquitto_sub with --cafile for a TLS listener"
                .into(),
        ),
        None => Ok(()),
    }
}

/// What `pub`, `sub` and `bench` say in a build without them.
#[cfg(not(feature = "client"))]
fn no_client_commands(command: &str) -> Result<(), String> {
    Err(format!(
        "{command}: this build has no client commands (cargo feature `client`); use \
         mosquitto_pub / mosquitto_sub, or a default build"
    ))
}

#[cfg(feature = "client")]
fn publish(args: PubArgs) -> Result<(), String> {
    refuse_tls(&args.cafile)?;
    let mut messages: Vec<Vec<u8>> = args
        .message
        .iter()
        .map(|m| m.clone().into_bytes())
        .collect();
    if let Some(file) = &args.file {
        messages
            .push(std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?);
    }
    if args.null_message {
        messages.push(Vec::new());
    }
    if args.stdin_lines {
        for line in std::io::stdin().lines() {
            messages.push(line.map_err(|e| format!("stdin: {e}"))?.into_bytes());
        }
    }
    if messages.is_empty() {
        return Err("nothing to publish: give -m MESSAGE, -f FILE, -n or -l".into());
    }
    let user_properties = args
        .user_property
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("--user-property `{pair}` is not KEY=VALUE"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = client::ClientOptions {
        host: args.host,
        port: args.port,
        version: protocol(&args.protocol)?,
        client_id: args.id,
        username: args.username,
        password: args.password,
        keep_alive: 60,
        clean_start: true,
        session_expiry: None,
    };
    let request = client::PublishRequest {
        topic: &args.topic,
        messages,
        qos: qos(args.qos)?,
        retain: args.retain,
        user_properties,
    };
    client::publish(&options, &request)
}

#[cfg(feature = "client")]
fn subscribe(args: SubArgs) -> Result<(), String> {
    refuse_tls(&args.cafile)?;
    if args.topic.is_empty() {
        return Err("give at least one topic filter with -t".into());
    }
    let options = client::ClientOptions {
        host: args.host,
        port: args.port,
        version: protocol(&args.protocol)?,
        client_id: args.id,
        username: args.username,
        password: args.password,
        keep_alive: args.keepalive,
        clean_start: !args.keep_session,
        session_expiry: args.session_expiry,
    };
    let request = client::SubscribeRequest {
        filters: &args.topic,
        qos: qos(args.qos)?,
        verbose: args.verbose,
        count: args.count,
        timeout: args.timeout.map(Duration::from_secs),
    };
    client::subscribe(&options, &request, &mut std::io::stdout().lock())
}

#[cfg(feature = "client")]
fn run_bench(args: BenchArgs) -> Result<(), String> {
    let scenario = match args.scenario.as_str() {
        "fanin" => bench::Scenario::FanIn,
        "fanout" => bench::Scenario::FanOut,
        "pairs" => bench::Scenario::Pairs,
        "conns" => bench::Scenario::Conns,
        other => {
            return Err(format!(
                "`{other}` is not a scenario (fanin, fanout, pairs or conns)"
            ));
        }
    };
    if args.size < 16 {
        return Err("--size must be at least 16 (timestamp and sequence number)".into());
    }
    raise_open_file_limit(args.clients as u32);
    let config = bench::BenchConfig {
        address: format!("{}:{}", args.host, args.port),
        scenario,
        clients: args.clients.max(1),
        qos: qos(args.qos)?,
        payload: args.size,
        duration: Duration::from_secs(args.duration),
        rate: args.rate,
        broker_pid: args.broker_pid,
    };
    let report = bench::run(&config)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!(
            "{} {}x QoS {} {} B: published {}, received {} of {} ({} lost) in {:.2} s = {:.0} msg/s, latency p50 {} us p99 {} us",
            args.scenario,
            config.clients,
            args.qos,
            args.size,
            report.published,
            report.received,
            report.expected,
            report.expected.saturating_sub(report.received),
            report.seconds,
            report.rate(),
            report.p50_us,
            report.p99_us
        );
        if let Some(cpu) = report.broker_cpu {
            println!(
                "broker: {cpu:.2} CPU s = {:.0} msg per CPU-second; RSS before {} KB, peak {} KB, after {} KB",
                report.per_broker_cpu_second().unwrap_or(0.0),
                report.broker_rss_before_kb.unwrap_or(0),
                report.broker_rss_peak_kb.unwrap_or(0),
                report.broker_rss_after_kb.unwrap_or(0)
            );
        }
        println!("generator: {:.2} CPU s", report.generator_cpu);
    }
    Ok(())
}
