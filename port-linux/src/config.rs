//! The daemon's settings: embedded defaults, then the configuration file, then command-line
//! flags. Every key of the file is listed in `femtomq.toml` at the repository root with its
//! default; unknown keys and bad values stop startup with the file, line and key named.

use std::fmt;
use std::path::{Path, PathBuf};

use femtomq_core::broker::Config as EngineConfig;
use femtomq_core::topic::SharedStrategy;
#[cfg(feature = "auth")]
use femtomq_posix::auth::ThrottleConfig;
use femtomq_posix::{ListenerSpec, ProtocolVersions, TlsFiles, Transport};

use crate::toml::{self, Entry, Table, Value};

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard error (the default).
    Stderr,
    /// Appended to a file.
    File(PathBuf),
    /// The local syslog daemon: datagrams to a Unix socket (`syslog_path`, `/dev/log` by
    /// default).
    Syslog(PathBuf),
}

/// Everything the daemon needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listeners; empty means the embedded default (loopback, port 1883).
    pub listeners: Vec<ListenerSpec>,
    /// Worker threads; 0 means one per CPU.
    pub workers: usize,
    /// Whether clients without a user name may connect; `None`: off when a password file is
    /// configured, on otherwise.
    pub allow_anonymous: Option<bool>,
    /// The password file (Mosquitto format) for every listener without its own.
    pub password_file: Option<PathBuf>,
    /// The ACL file (Mosquitto syntax) for every listener without its own.
    pub acl_file: Option<PathBuf>,
    /// Per-listener overrides, one per entry of `listeners` (empty when the listeners come
    /// from `--listen` or the defaults).
    pub listener_auth: Vec<ListenerAuth>,
    /// The HTTP authentication and ACL callout (`[http_auth]`).
    pub http_auth: Option<HttpAuthSettings>,
    /// Failed-login throttling per source address (`[throttle]`).
    #[cfg(feature = "auth")]
    pub throttle: ThrottleConfig,
    /// The `[persist]` table (flags override it).
    pub persist: PersistSettings,
    /// The engine's configuration (limits and behaviour).
    pub engine: EngineConfig,
    /// Log verbosity.
    pub log_level: log::LevelFilter,
    /// Log destination.
    pub log_target: LogTarget,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listeners: Vec::new(),
            workers: 1,
            allow_anonymous: None,
            password_file: None,
            acl_file: None,
            listener_auth: Vec::new(),
            http_auth: None,
            #[cfg(feature = "auth")]
            throttle: ThrottleConfig::default(),
            persist: PersistSettings::default(),
            engine: EngineConfig::default(),
            log_level: log::LevelFilter::Info,
            log_target: LogTarget::Stderr,
        }
    }
}

/// Persistence across restarts (`[persist]`); nothing is kept without `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistSettings {
    /// The store directory; `None` keeps state in memory only.
    pub dir: Option<PathBuf>,
    /// When the store is synced: `always`, `interval` or `never`.
    pub sync: String,
    /// Milliseconds between syncs with `sync = "interval"`.
    pub sync_interval_ms: u64,
    /// Cap on the store's bytes: above it, new persistent messages get 0x97.
    pub max_bytes: u64,
    /// The log is compacted into a snapshot when it grows past this many bytes.
    pub compact_every_bytes: u64,
}

impl Default for PersistSettings {
    fn default() -> Self {
        PersistSettings {
            dir: None,
            sync: "always".into(),
            sync_interval_ms: 1000,
            max_bytes: 64 << 20,
            compact_every_bytes: 4 << 20,
        }
    }
}

/// A listener's own authentication settings; what is `None` comes from the top level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerAuth {
    /// `password_file` of this `[[listener]]`.
    pub password_file: Option<PathBuf>,
    /// `acl_file` of this `[[listener]]`.
    pub acl_file: Option<PathBuf>,
    /// `allow_anonymous` of this `[[listener]]`.
    pub allow_anonymous: Option<bool>,
    /// `protocol_versions` of this `[[listener]]` (all by default).
    pub protocol_versions: ProtocolVersions,
}

/// `[http_auth]`: the HTTP callout, as written (URLs are resolved when the rules are loaded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAuthSettings {
    /// Asked at CONNECT.
    pub auth_url: Option<String>,
    /// Asked per PUBLISH and SUBSCRIBE filter.
    pub acl_url: Option<String>,
    /// `true` for POST, `false` for GET.
    pub post: bool,
    /// The form template with `%u %c %a %P %t %A`.
    pub params: String,
    /// Milliseconds before a request counts as a denial.
    pub timeout_ms: u64,
    /// Milliseconds an ACL answer is reused.
    pub cache_ttl_ms: u64,
    /// ACL answers kept at most.
    pub cache_size: usize,
    /// Line of the `[http_auth]` header, for errors.
    pub line: usize,
}

impl Default for HttpAuthSettings {
    fn default() -> Self {
        HttpAuthSettings {
            auth_url: None,
            acl_url: None,
            post: true,
            params: DEFAULT_HTTP_PARAMS.to_string(),
            timeout_ms: 5000,
            cache_ttl_ms: 60_000,
            cache_size: 256,
            line: 0,
        }
    }
}

/// The default `[http_auth] params`.
pub const DEFAULT_HTTP_PARAMS: &str =
    "username=%u&clientid=%c&ipaddr=%a&password=%P&topic=%t&access=%A";

/// A configuration error: where, which key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, if the error is in one.
    pub file: Option<PathBuf>,
    /// 1-based line, if known.
    pub line: Option<usize>,
    /// The key (`table.key`), if the error is about one.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
            f.write_str(": ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error about a command-line flag or a setting with no file position.
    pub fn flag(flag: &str, message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            line: None,
            key: Some(flag.to_string()),
            message: message.into(),
        }
    }
}

/// A [`ConfigError`] while reading a file, boxed: every key's `?` then moves a pointer, not the
/// whole error (x86_64-musl minimal: 1,120 B less code, 2026-12-08).
type Failure = Box<ConfigError>;

struct Reader<'a> {
    file: &'a Path,
}

impl Reader<'_> {
    /// A path from the file: relative paths are relative to the file's directory.
    fn path(&self, entry: &Entry, key: &str) -> Result<PathBuf, Failure> {
        let value = self.string(entry, key)?;
        if value.is_empty() {
            return Err(self.error(entry.line, key, "expected a file path, found \"\""));
        }
        let path = Path::new(value);
        Ok(match self.file.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        })
    }

    fn error(&self, line: usize, key: &str, message: impl Into<String>) -> Failure {
        Box::new(ConfigError {
            file: Some(self.file.to_path_buf()),
            line: Some(line),
            key: (!key.is_empty()).then(|| key.to_string()),
            message: message.into(),
        })
    }

    fn integer<T: TryFrom<i64>>(
        &self,
        entry: &Entry,
        path: &str,
        min: i64,
        max: i64,
    ) -> Result<T, Failure> {
        match &entry.value {
            Value::Integer(value) if (min..=max).contains(value) => {
                T::try_from(*value).map_err(|_| self.error(entry.line, path, "value out of range"))
            }
            Value::Integer(value) => Err(self.error(
                entry.line,
                path,
                format!("{value} is out of range ({min} to {max})"),
            )),
            other => Err(self.error(
                entry.line,
                path,
                format!("expected an integer, found {}", other.type_name()),
            )),
        }
    }

    fn boolean(&self, entry: &Entry, path: &str) -> Result<bool, Failure> {
        match entry.value {
            Value::Boolean(value) => Ok(value),
            ref other => Err(self.error(
                entry.line,
                path,
                format!("expected true or false, found {}", other.type_name()),
            )),
        }
    }

    /// A non-empty array of protocol versions: `["5", "3.1.1", "3.1"]`.
    fn protocol_versions(&self, entry: &Entry, path: &str) -> Result<ProtocolVersions, Failure> {
        let expected = "expected an array of protocol versions such as [\"5\", \"3.1.1\", \"3.1\"]";
        let Value::Array(items) = &entry.value else {
            return Err(self.error(
                entry.line,
                path,
                format!("{expected}, found {}", entry.value.type_name()),
            ));
        };
        let mut versions = ProtocolVersions::NONE;
        for item in items {
            let Value::String(name) = item else {
                return Err(self.error(
                    entry.line,
                    path,
                    format!("{expected}, found {} in it", item.type_name()),
                ));
            };
            let version = ProtocolVersions::parse_version(name).ok_or_else(|| {
                self.error(
                    entry.line,
                    path,
                    format!("`{name}` is not a protocol version (5, 3.1.1 or 3.1)"),
                )
            })?;
            versions = versions.with(version);
        }
        if versions.is_empty() {
            return Err(self.error(
                entry.line,
                path,
                "a listener must accept at least one protocol version",
            ));
        }
        Ok(versions)
    }

    fn string<'v>(&self, entry: &'v Entry, path: &str) -> Result<&'v str, Failure> {
        match &entry.value {
            Value::String(value) => Ok(value),
            other => Err(self.error(
                entry.line,
                path,
                format!("expected a string, found {}", other.type_name()),
            )),
        }
    }
}

/// Where `target = "syslog"` sends its datagrams unless `syslog_path` says otherwise.
pub const DEFAULT_SYSLOG_PATH: &str = "/dev/log";

/// Parses a log level name.
pub fn parse_log_level(name: &str) -> Option<log::LevelFilter> {
    Some(match name.to_ascii_lowercase().as_str() {
        "off" => log::LevelFilter::Off,
        "error" => log::LevelFilter::Error,
        "warn" | "warning" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        _ => return None,
    })
}

const U32_MAX: i64 = u32::MAX as i64;
const U16_MAX: i64 = u16::MAX as i64;

impl Settings {
    /// Reads `path` over the defaults.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_path_buf()),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Settings::from_text(&text, path)
    }

    /// Reads configuration `text` (named `path` in errors) over the defaults.
    pub fn from_text(text: &str, path: &Path) -> Result<Settings, ConfigError> {
        let reader = Reader { file: path };
        let document = toml::parse(text).map_err(|e| *reader.error(e.line, "", e.message))?;
        let mut settings = Settings::default();
        for table in &document.tables {
            settings.apply_table(&reader, table).map_err(|e| *e)?;
        }
        Ok(settings)
    }

    fn apply_table(&mut self, reader: &Reader<'_>, table: &Table) -> Result<(), Failure> {
        let unknown_table = || {
            reader.error(
                table.line,
                &table.name,
                "unknown table (expected [[listener]], [limits], [session], [log], [http_auth], [throttle] or [persist])",
            )
        };
        match (table.name.as_str(), table.array_element) {
            ("", false) => self.apply_root(reader, table),
            ("listener", true) => self.apply_listener(reader, table),
            ("limits", false) => self.apply_limits(reader, table),
            ("session", false) => self.apply_session(reader, table),
            ("log", false) => self.apply_log(reader, table),
            ("http_auth", false) => self.apply_http_auth(reader, table),
            #[cfg(feature = "auth")]
            ("throttle", false) => self.apply_throttle(reader, table),
            #[cfg(not(feature = "auth"))]
            ("throttle", false) => Err(reader.error(
                table.line,
                "throttle",
                "this build has no failed-login throttling (cargo feature `auth`; without \
                 password files no login can fail)",
            )),
            ("persist", false) => self.apply_persist(reader, table),
            ("listener", false) => Err(reader.error(
                table.line,
                "listener",
                "listeners are an array: write [[listener]]",
            )),
            _ => Err(unknown_table()),
        }
    }

    fn apply_root(&mut self, reader: &Reader<'_>, table: &Table) -> Result<(), Failure> {
        for entry in &table.entries {
            let key = entry.key.as_str();
            match key {
                "workers" => self.workers = reader.integer(entry, key, 0, 1024)?,
                "allow_anonymous" => self.allow_anonymous = Some(reader.boolean(entry, key)?),
                "password_file" => self.password_file = Some(reader.path(entry, key)?),
                "acl_file" => self.acl_file = Some(reader.path(entry, key)?),
                _ => {
                    return Err(reader.error(
                        entry.line,
                        key,
                        "unknown key (expected workers, allow_anonymous, password_file or acl_file, or a table)",
                    ));
                }
            }
        }
        Ok(())
    }

    fn apply_listener(&mut self, reader: &Reader<'_>, table: &Table) -> Result<(), Failure> {
        let mut url = None;
        let mut auth = ListenerAuth::default();
        let mut max_connections = None;
        let mut tls = TlsFiles::default();
        // The first TLS key, for an error on a listener without TLS.
        let mut tls_key = None;
        for entry in &table.entries {
            let path = format!("listener.{}", entry.key);
            if matches!(
                entry.key.as_str(),
                "cert" | "key" | "cafile" | "require_certificate" | "use_identity_as_username"
            ) {
                tls_key.get_or_insert((entry.line, path.clone()));
            }
            match entry.key.as_str() {
                "url" => url = Some((reader.string(entry, &path)?, entry.line)),
                "cert" => tls.cert = reader.path(entry, &path)?,
                "key" => tls.key = reader.path(entry, &path)?,
                "cafile" => tls.cafile = Some(reader.path(entry, &path)?),
                "require_certificate" => tls.require_certificate = reader.boolean(entry, &path)?,
                "use_identity_as_username" => {
                    tls.use_identity_as_username = reader.boolean(entry, &path)?
                }
                "password_file" => auth.password_file = Some(reader.path(entry, &path)?),
                "acl_file" => auth.acl_file = Some(reader.path(entry, &path)?),
                "allow_anonymous" => auth.allow_anonymous = Some(reader.boolean(entry, &path)?),
                "protocol_versions" => {
                    auth.protocol_versions = reader.protocol_versions(entry, &path)?
                }
                "max_connections" => {
                    max_connections = Some(reader.integer(entry, &path, 1, U32_MAX)?)
                }
                _ => {
                    return Err(reader.error(
                        entry.line,
                        &path,
                        "unknown key (expected url, password_file, acl_file, allow_anonymous, protocol_versions, max_connections, cert, key, cafile, require_certificate or use_identity_as_username)",
                    ));
                }
            }
        }
        let Some((url, line)) = url else {
            return Err(reader.error(
                table.line,
                "listener",
                "a [[listener]] needs `url = \"HOST:PORT\"`",
            ));
        };
        let mut spec =
            ListenerSpec::parse(url).map_err(|e| reader.error(line, "listener.url", e.0))?;
        spec.max_connections = max_connections;
        let is_tls = matches!(spec.transport, Transport::Tls | Transport::WebSocketTls);
        match tls_key {
            Some((line, key)) if !is_tls => {
                return Err(reader.error(
                    line,
                    &key,
                    format!(
                        "listener `{url}` has no TLS: certificates go with mqtts:// and wss://"
                    ),
                ));
            }
            _ if is_tls => {
                if tls.cert.as_os_str().is_empty() || tls.key.as_os_str().is_empty() {
                    return Err(reader.error(
                        table.line,
                        "listener",
                        format!("listener `{url}` needs `cert` and `key` (PEM files)"),
                    ));
                }
                spec.tls = Some(tls);
            }
            _ => {}
        }
        self.listeners.push(spec);
        self.listener_auth.push(auth);
        Ok(())
    }

    fn apply_persist(&mut self, reader: &Reader<'_>, table: &Table) -> Result<(), Failure> {
        let persist = &mut self.persist;
        for entry in &table.entries {
            let path = format!("persist.{}", entry.key);
            let path = path.as_str();
            match entry.key.as_str() {
                "dir" => persist.dir = Some(reader.path(entry, path)?),
                "sync" => {
                    let mode = reader.string(entry, path)?;
                    if !matches!(mode, "always" | "interval" | "never") {
                        return Err(reader.error(
                            entry.line,
                            path,
                            format!("`{mode}` is not a sync mode (always, interval or never)"),
                        ));
                    }
                    persist.sync = mode.to_string();
                }
                "sync_interval_ms" => {
                    persist.sync_interval_ms = reader.integer(entry, path, 1, 3_600_000)?
                }
                "max_bytes" => persist.max_bytes = reader.integer(entry, path, 4096, i64::MAX)?,
                "compact_every_bytes" => {
                    persist.compact_every_bytes = reader.integer(entry, path, 4096, i64::MAX)?
                }
                _ => {
                    return Err(reader.error(
                        entry.line,
                        path,
                        "unknown key (expected dir, sync, sync_interval_ms, max_bytes or compact_every_bytes)",
                    ));
                }
            }
        }
        Ok(())
    }

    #[cfg(feature = "auth")]
    fn apply_throttle(&mut self, reader: &Reader<'_>, table: &Table) -> Result<(), Failure> {
        let throttle = &mut self.throttle;
        let millis = |entry: &Entry, path: &str| -> Result<std::time::Duration, Failure> {
            Ok(std::time::Duration::from_millis(
                reader.integer(entry, path, 1, U32_MAX)?,
            ))
        };
        for entry in &table.entries {
            let path = format!("throttle.{}", entry.key);
            let path = path.as_str();
            match entry.key.as_str() {
                "max_failures" => {
                    throttle.max_failures = reader.integer(entry, path, 0, 1_000_000)?
                }
                "window_ms" => throttle.window = millis(entry, path)?,
                "backoff_ms" => throttle.backoff = millis(entry, path)?,
                "max_backoff_ms" => throttle.max_backoff = millis(entry, path)?,
                "table_size" => throttle.table_size = reader.integer(entry, path, 1, 1_000_000)?,
                _ => {
                    return Err(reader.error(
                        entry.line,
                        path,
                        "unknown key (expected max_failures, window_ms, backoff_ms, max_backoff_ms or table_size)",
                    ));
                }
            }
        }
        if throttle.max_backoff < throttle.backoff {
            return Err(reader.error(
                table.line,
                "throttle.max_backoff_ms",
                "must not be below throttle.backoff_ms",
            ));
        }
        Ok(())
    }

    fn apply_http_auth(&mut self, reader: &Reader<'_>, table: &Table) -> Result<(), Failure> {
        let mut http = HttpAuthSettings {
            line: table.line,
            ..HttpAuthSettings::default()
        };
        for entry in &table.entries {
            let path = format!("http_auth.{}", entry.key);
            let path = path.as_str();
            let url = |entry: &Entry| -> Result<Option<String>, Failure> {
                let url = reader.string(entry, path)?;
                if url.is_empty() {
                    return Ok(None);
                }
                if !url.starts_with("http://") {
                    return Err(reader.error(
                        entry.line,
                        path,
                        format!("`{url}`: only http:// URLs are supported"),
                    ));
                }
                Ok(Some(url.to_string()))
            };
            match entry.key.as_str() {
                "auth_url" => http.auth_url = url(entry)?,
                "acl_url" => http.acl_url = url(entry)?,
                "method" => {
                    http.post = match reader.string(entry, path)? {
                        "POST" | "post" => true,
                        "GET" | "get" => false,
                        other => {
                            return Err(reader.error(
                                entry.line,
                                path,
                                format!("`{other}` is not a method (POST or GET)"),
                            ));
                        }
                    }
                }
                "params" => http.params = reader.string(entry, path)?.to_string(),
                "timeout_ms" => http.timeout_ms = reader.integer(entry, path, 1, 600_000)?,
                "cache_ttl_ms" => http.cache_ttl_ms = reader.integer(entry, path, 0, U32_MAX)?,
                "cache_size" => http.cache_size = reader.integer(entry, path, 0, 1_000_000)?,
                _ => {
                    return Err(reader.error(
                        entry.line,
                        path,
                        "unknown key (see femtomq.toml for the keys of [http_auth])",
                    ));
                }
            }
        }
        // A table with neither URL asks nothing: the same as no table.
        self.http_auth = (http.auth_url.is_some() || http.acl_url.is_some()).then_some(http);
        Ok(())
    }

    fn apply_limits(&mut self, reader: &Reader<'_>, table: &Table) -> Result<(), Failure> {
        let limits = &mut self.engine.limits;
        for entry in &table.entries {
            let path = format!("limits.{}", entry.key);
            let path = path.as_str();
            match entry.key.as_str() {
                "max_connections" => {
                    limits.max_connections = reader.integer(entry, path, 1, U32_MAX)?
                }
                "max_subscriptions_per_client" => {
                    limits.max_subscriptions_per_client = reader.integer(entry, path, 1, U32_MAX)?
                }
                "max_subscriptions_total" => {
                    limits.max_subscriptions_total = reader.integer(entry, path, 1, U32_MAX)?
                }
                "max_topic_length" => {
                    limits.max_topic_length = reader.integer(entry, path, 1, U16_MAX)?
                }
                "max_topic_levels" => {
                    limits.max_topic_levels = reader.integer(entry, path, 1, U16_MAX)?
                }
                "max_inflight" | "receive_maximum" => {
                    limits.max_inflight = reader.integer(entry, path, 1, U16_MAX)?
                }
                "max_queued_messages" => {
                    limits.max_queued_messages = reader.integer(entry, path, 0, U32_MAX)?
                }
                "max_queued_bytes" => {
                    limits.max_queued_bytes = reader.integer(entry, path, 0, U32_MAX)?
                }
                "max_retained_messages" => {
                    limits.max_retained_messages = reader.integer(entry, path, 0, U32_MAX)?
                }
                "max_retained_bytes" => {
                    limits.max_retained_bytes = reader.integer(entry, path, 0, U32_MAX)?
                }
                "max_packet_size" => {
                    limits.max_packet_size = reader.integer(entry, path, 64, 268_435_460)?
                }
                "max_rules" => limits.max_rules = reader.integer(entry, path, 0, U32_MAX)?,
                "bridge_cache_bytes" => {
                    limits.bridge_cache_bytes = reader.integer(entry, path, 0, U32_MAX)?
                }
                "max_output_bytes" => {
                    limits.max_output_bytes = reader.integer(entry, path, 1024, U32_MAX)?
                }
                _ => {
                    return Err(reader.error(
                        entry.line,
                        path,
                        "unknown key (see femtomq.toml for the keys of [limits])",
                    ));
                }
            }
        }
        Ok(())
    }

    fn apply_session(&mut self, reader: &Reader<'_>, table: &Table) -> Result<(), Failure> {
        let engine = &mut self.engine;
        for entry in &table.entries {
            let path = format!("session.{}", entry.key);
            let path = path.as_str();
            match entry.key.as_str() {
                "max_keep_alive" => {
                    let seconds: u16 = reader.integer(entry, path, 0, U16_MAX)?;
                    engine.max_keep_alive = (seconds > 0).then_some(seconds);
                }
                "connect_timeout_ms" => {
                    engine.connect_timeout_ms = reader.integer(entry, path, 100, 3_600_000)?
                }
                "max_session_expiry" => {
                    engine.max_session_expiry = reader.integer(entry, path, 0, U32_MAX)?
                }
                "topic_alias_maximum" => {
                    engine.topic_alias_maximum = reader.integer(entry, path, 0, U16_MAX)?
                }
                "max_outbound_aliases" => {
                    engine.max_outbound_aliases = reader.integer(entry, path, 0, U16_MAX)?
                }
                "retain_available" => engine.retain_available = reader.boolean(entry, path)?,
                "queue_qos0_offline" => engine.queue_qos0_offline = reader.boolean(entry, path)?,
                "max_client_id_length" => {
                    engine.max_client_id_length = reader.integer(entry, path, 1, U16_MAX)?
                }
                "shared_strategy" => {
                    engine.shared_strategy = match reader.string(entry, path)? {
                        "round_robin" => SharedStrategy::RoundRobin,
                        "random" => SharedStrategy::Random,
                        "hash_by_publisher" | "sticky" => SharedStrategy::HashByPublisher,
                        other => {
                            return Err(reader.error(
                                entry.line,
                                path,
                                format!("`{other}` is not a strategy (round_robin, random or hash_by_publisher)"),
                            ));
                        }
                    }
                }
                _ => {
                    return Err(reader.error(
                        entry.line,
                        path,
                        "unknown key (see femtomq.toml for the keys of [session])",
                    ));
                }
            }
        }
        Ok(())
    }

    fn apply_log(&mut self, reader: &Reader<'_>, table: &Table) -> Result<(), Failure> {
        let mut target = None;
        let mut file = None;
        let mut syslog_path = None;
        for entry in &table.entries {
            let path = format!("log.{}", entry.key);
            let path = path.as_str();
            match entry.key.as_str() {
                "level" => {
                    let name = reader.string(entry, path)?;
                    self.log_level = parse_log_level(name).ok_or_else(|| {
                        reader.error(
                            entry.line,
                            path,
                            format!(
                                "`{name}` is not a level (off, error, warn, info, debug, trace)"
                            ),
                        )
                    })?;
                }
                "target" => target = Some((reader.string(entry, path)?.to_string(), entry.line)),
                "file" => file = Some(PathBuf::from(reader.string(entry, path)?)),
                "syslog_path" => {
                    let value = reader.string(entry, path)?;
                    if value.is_empty() {
                        return Err(reader.error(
                            entry.line,
                            path,
                            "expected a socket path, found \"\"",
                        ));
                    }
                    syslog_path = Some(PathBuf::from(value));
                }
                _ => {
                    return Err(reader.error(
                        entry.line,
                        path,
                        "unknown key (expected level, target, file or syslog_path)",
                    ));
                }
            }
        }
        if let Some((target, line)) = target {
            self.log_target = match (target.as_str(), file) {
                ("stderr", _) => LogTarget::Stderr,
                ("syslog", _) => LogTarget::Syslog(
                    syslog_path.unwrap_or_else(|| PathBuf::from(DEFAULT_SYSLOG_PATH)),
                ),
                ("file", Some(file)) => LogTarget::File(file),
                ("file", None) => {
                    return Err(reader.error(
                        line,
                        "log.target",
                        "target \"file\" needs `file = \"PATH\"`",
                    ));
                }
                (other, _) => {
                    return Err(reader.error(
                        line,
                        "log.target",
                        format!("`{other}` is not a target (stderr, file or syslog)"),
                    ));
                }
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_text(text, Path::new("test.toml"))
    }

    #[test]
    fn the_example_file_in_the_repository_is_valid_and_matches_the_defaults() {
        let example = include_str!("../../femtomq.toml");
        let settings = parse(example).unwrap();
        let defaults = Settings::default();
        assert_eq!(
            settings.engine, defaults.engine,
            "femtomq.toml must show the defaults"
        );
        assert_eq!(settings.log_level, defaults.log_level);
        assert_eq!(settings.log_target, defaults.log_target);
        // The syslog_path shown is the one used by default.
        let syslog = parse(&example.replace("target = \"stderr\"", "target = \"syslog\""))
            .unwrap()
            .log_target;
        assert_eq!(syslog, LogTarget::Syslog(DEFAULT_SYSLOG_PATH.into()));
        assert_eq!(
            parse("[log]\ntarget = \"syslog\"").unwrap().log_target,
            syslog
        );
        assert_eq!(
            settings.persist, defaults.persist,
            "femtomq.toml must show the [persist] defaults"
        );
        assert_eq!(settings.listeners.len(), 2);
        // Authentication: no files, anonymous access decided by the password file.
        assert_eq!(settings.allow_anonymous, None);
        assert_eq!(settings.password_file, None);
        assert_eq!(settings.acl_file, None);
        assert_eq!(
            settings.listener_auth,
            [ListenerAuth::default(), ListenerAuth::default()]
        );
        assert_eq!(settings.http_auth, None);
        #[cfg(feature = "auth")]
        assert_eq!(settings.throttle, ThrottleConfig::default());
        // The [http_auth] keys show their defaults: with a URL set, the rest is the default.
        let with_url = example.replace("auth_url = \"\"", "auth_url = \"http://127.0.0.1/a\"");
        let http = parse(&with_url)
            .unwrap()
            .http_auth
            .expect("an [http_auth] table");
        assert_eq!(
            http,
            HttpAuthSettings {
                auth_url: Some("http://127.0.0.1/a".into()),
                line: http.line,
                ..HttpAuthSettings::default()
            }
        );
    }

    #[test]
    fn authentication_keys_at_the_top_per_listener_and_for_http() {
        let settings = parse(
            "allow_anonymous = false\npassword_file = \"/etc/pw\"\nacl_file = \"acl\"\n\
             [[listener]]\nurl = \"127.0.0.1:1\"\nallow_anonymous = true\npassword_file = \"/p2\"\n\
             [http_auth]\nacl_url = \"http://127.0.0.1:9/acl\"\nmethod = \"GET\"\nparams = \"u=%u\"\n\
             timeout_ms = 300\ncache_ttl_ms = 0\ncache_size = 8\n",
        )
        .unwrap();
        assert_eq!(settings.allow_anonymous, Some(false));
        assert_eq!(settings.password_file, Some(PathBuf::from("/etc/pw")));
        // Relative to the configuration file's directory ("test.toml" has none but ".").
        assert_eq!(settings.acl_file, Some(PathBuf::from("acl")));
        assert_eq!(
            settings.listener_auth,
            [ListenerAuth {
                password_file: Some(PathBuf::from("/p2")),
                acl_file: None,
                allow_anonymous: Some(true),
                protocol_versions: ProtocolVersions::ALL,
            }]
        );
        let http = settings.http_auth.unwrap();
        assert_eq!(http.acl_url.as_deref(), Some("http://127.0.0.1:9/acl"));
        assert!(!http.post);
        assert_eq!(
            (http.timeout_ms, http.cache_ttl_ms, http.cache_size),
            (300, 0, 8)
        );
        for (text, expected) in [
            (
                "allow_anonymous = \"no\"",
                "test.toml:1: `allow_anonymous`: expected true or false",
            ),
            (
                "password_file = 3",
                "test.toml:1: `password_file`: expected a string",
            ),
            (
                "[[listener]]\nurl = \"127.0.0.1:1\"\nacl_file = \"\"",
                "test.toml:3: `listener.acl_file`: expected a file path",
            ),
            (
                "[http_auth]\nauth_url = \"https://x\"",
                "test.toml:2: `http_auth.auth_url`: `https://x`: only http://",
            ),
            (
                "[http_auth]\nmethod = \"PUT\"",
                "test.toml:2: `http_auth.method`: `PUT` is not a method",
            ),
            (
                "[http_auth]\ntimeout_ms = 0",
                "test.toml:2: `http_auth.timeout_ms`: 0 is out of range",
            ),
            (
                "[http_auth]\nurl = \"x\"",
                "test.toml:2: `http_auth.url`: unknown key",
            ),
        ] {
            let message = parse(text).unwrap_err().to_string();
            assert!(message.starts_with(expected), "{text:?} gave {message:?}");
        }
    }

    #[test]
    fn tls_and_websocket_listener_keys() {
        let settings = parse(
            "[[listener]]\nurl = \"mqtts://127.0.0.1:8883\"\ncert = \"s.pem\"\nkey = \"s.key\"\ncafile = \"ca.pem\"\nrequire_certificate = true\nuse_identity_as_username = true\n[[listener]]\nurl = \"ws://127.0.0.1:8083\"\n",
        )
        .unwrap();
        let tls = settings.listeners[0].tls.as_ref().unwrap();
        assert_eq!(
            (&tls.cert, &tls.key, tls.cafile.as_deref()),
            (
                &PathBuf::from("s.pem"),
                &PathBuf::from("s.key"),
                Some(Path::new("ca.pem"))
            )
        );
        assert!(tls.require_certificate && tls.use_identity_as_username);
        assert_eq!(settings.listeners[1].path.as_deref(), Some("/mqtt"));
        assert_eq!(settings.listeners[1].tls, None);
        for (text, expected) in [
            (
                "[[listener]]\nurl = \"127.0.0.1:1\"\ncert = \"s.pem\"",
                "test.toml:3: `listener.cert`: listener `127.0.0.1:1` has no TLS",
            ),
            (
                "[[listener]]\nurl = \"mqtts://127.0.0.1:1\"\ncert = \"s.pem\"",
                "test.toml:1: `listener`: listener `mqtts://127.0.0.1:1` needs `cert` and `key`",
            ),
        ] {
            let message = parse(text).unwrap_err().to_string();
            assert!(message.starts_with(expected), "{text:?} gave {message:?}");
        }
    }

    /// The commented-out block of femtomq.toml that starts with `marker`, uncommented: its table
    /// headers and `key = value` lines (the prose comments dropped).
    fn commented_example(marker: &str) -> String {
        let example = include_str!("../../femtomq.toml");
        let start = example
            .find(marker)
            .unwrap_or_else(|| panic!("femtomq.toml shows {marker:?}"));
        let end = start + example[start..].find("\n\n").unwrap();
        example[start..end]
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| line.starts_with('[') || line.contains(" = "))
            .map(|line| format!("{line}\n"))
            .collect()
    }

    #[cfg(feature = "auth")]
    #[test]
    fn the_commented_throttle_example_shows_the_defaults() {
        let block = commented_example("# [throttle]\n");
        assert!(block.starts_with("[throttle]\n") && block.lines().count() == 6);
        assert_eq!(parse(&block).unwrap().throttle, ThrottleConfig::default());
    }

    #[test]
    fn the_commented_tls_and_websocket_example_parses_with_the_defaults() {
        let block = commented_example("# [[listener]]\n# url = \"mqtts");
        let settings = parse(&block).unwrap();
        let schemes: Vec<String> = settings.listeners.iter().map(|l| l.to_string()).collect();
        assert_eq!(
            schemes,
            [
                "mqtts://0.0.0.0:8883",
                "ws://0.0.0.0:8083/mqtt",
                "wss://0.0.0.0:8084/mqtt"
            ]
        );
        let tls = settings.listeners[0].tls.as_ref().unwrap();
        assert!(!tls.require_certificate && !tls.use_identity_as_username);
        assert!(settings.listeners[2].tls.is_some());
    }

    #[cfg(feature = "auth")]
    #[test]
    fn throttle_keys() {
        let settings = parse(
            "[throttle]\nmax_failures = 3\nwindow_ms = 500\nbackoff_ms = 20\nmax_backoff_ms = 80\ntable_size = 7\n",
        )
        .unwrap();
        let ms = std::time::Duration::from_millis;
        assert_eq!(
            settings.throttle,
            ThrottleConfig {
                max_failures: 3,
                window: ms(500),
                backoff: ms(20),
                max_backoff: ms(80),
                table_size: 7,
            }
        );
        assert_eq!(
            parse("[throttle]\nmax_failures = 0")
                .unwrap()
                .throttle
                .max_failures,
            0
        );
        for (text, expected) in [
            (
                "[throttle]\ntable_size = 0",
                "test.toml:2: `throttle.table_size`: 0 is out of range",
            ),
            (
                "[throttle]\nwindow_ms = -1",
                "test.toml:2: `throttle.window_ms`: -1 is out of range",
            ),
            (
                "[throttle]\nbackoff_ms = 10\nmax_backoff_ms = 5",
                "test.toml:1: `throttle.max_backoff_ms`: must not be below",
            ),
            (
                "[throttle]\nmax_fails = 1",
                "test.toml:2: `throttle.max_fails`: unknown key",
            ),
        ] {
            let message = parse(text).unwrap_err().to_string();
            assert!(message.starts_with(expected), "{text:?} gave {message:?}");
        }
    }

    #[test]
    fn values_are_applied() {
        let settings = parse(
            "allow_anonymous = true\n[[listener]]\nurl = \"127.0.0.1:1999\"\n[limits]\nmax_connections = 7\nmax_inflight = 9\n[session]\nmax_keep_alive = 60\nshared_strategy = \"random\"\n[log]\nlevel = \"debug\"\ntarget = \"file\"\nfile = \"/tmp/x.log\"\n",
        )
        .unwrap();
        assert_eq!(settings.listeners[0].address.port(), 1999);
        assert_eq!(settings.engine.limits.max_connections, 7);
        assert_eq!(settings.engine.limits.max_inflight, 9);
        assert_eq!(settings.engine.max_keep_alive, Some(60));
        assert_eq!(settings.engine.shared_strategy, SharedStrategy::Random);
        assert_eq!(settings.log_level, log::LevelFilter::Debug);
        assert_eq!(settings.log_target, LogTarget::File("/tmp/x.log".into()));
    }

    #[test]
    fn syslog_target_defaults_to_dev_log_and_takes_syslog_path() {
        let settings = parse("[log]\ntarget = \"syslog\"\n").unwrap();
        assert_eq!(settings.log_target, LogTarget::Syslog("/dev/log".into()));
        let settings =
            parse("[log]\nsyslog_path = \"/run/s.sock\"\ntarget = \"syslog\"\n").unwrap();
        assert_eq!(settings.log_target, LogTarget::Syslog("/run/s.sock".into()));
        let error = parse("[log]\ntarget = \"syslog\"\nsyslog_path = \"\"")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("test.toml:3: `log.syslog_path`: expected a socket path"),
            "{error}"
        );
    }

    #[test]
    fn persist_keys_are_applied_and_checked() {
        let settings = parse(
            "[persist]\ndir = \"store\"\nsync = \"interval\"\nsync_interval_ms = 250\nmax_bytes = 1048576\ncompact_every_bytes = 65536\n",
        )
        .unwrap();
        let persist = &settings.persist;
        // Relative to the configuration file's directory, like the other paths.
        assert_eq!(persist.dir.as_deref(), Some(Path::new("store")));
        assert_eq!(
            (persist.sync.as_str(), persist.sync_interval_ms),
            ("interval", 250)
        );
        assert_eq!(
            (persist.max_bytes, persist.compact_every_bytes),
            (1 << 20, 1 << 16)
        );
        let error = parse("[persist]\nsync = \"sometimes\"")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("test.toml:2: `persist.sync`: `sometimes` is not a sync mode"),
            "{error}"
        );
        let error = parse("[persist]\ndirectory = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`persist.directory`: unknown key"),
            "{error}"
        );
    }

    #[test]
    fn listener_protocol_versions_and_max_connections() {
        let settings = parse(
            "[[listener]]\nurl = \"127.0.0.1:1\"\nprotocol_versions = [\"5\"]\nmax_connections = 2\n\
             [[listener]]\nurl = \"127.0.0.1:2\"\nprotocol_versions = [\"3.1.1\", \"3.1\"]\n\
             [[listener]]\nurl = \"127.0.0.1:3\"\n",
        )
        .unwrap();
        use femtomq_core::ProtocolVersion::{V3_1, V3_1_1, V5};
        let versions: Vec<_> = settings
            .listener_auth
            .iter()
            .map(|auth| [V5, V3_1_1, V3_1].map(|version| auth.protocol_versions.contains(version)))
            .collect();
        assert_eq!(
            versions,
            [
                [true, false, false],
                [false, true, true],
                [true, true, true]
            ]
        );
        let bounds: Vec<_> = settings
            .listeners
            .iter()
            .map(|spec| spec.max_connections)
            .collect();
        assert_eq!(bounds, [Some(2), None, None]);
        // "5.0" is also MQTT 5.
        let five =
            parse("[[listener]]\nurl = \"127.0.0.1:1\"\nprotocol_versions = [\"5.0\"]").unwrap();
        assert_eq!(
            five.listener_auth[0].protocol_versions,
            ProtocolVersions::NONE.with(V5)
        );
    }

    #[test]
    fn listener_protocol_versions_and_max_connections_errors() {
        for (text, expected) in [
            (
                "[[listener]]\nurl = \"127.0.0.1:1\"\nprotocol_versions = [\"5\", \"4\"]",
                "test.toml:3: `listener.protocol_versions`: `4` is not a protocol version (5, 3.1.1 or 3.1)",
            ),
            (
                "[[listener]]\nurl = \"127.0.0.1:1\"\n\nprotocol_versions = []",
                "test.toml:4: `listener.protocol_versions`: a listener must accept at least one protocol version",
            ),
            (
                "[[listener]]\nurl = \"127.0.0.1:1\"\nprotocol_versions = \"5\"",
                "test.toml:3: `listener.protocol_versions`: expected an array of protocol versions",
            ),
            (
                "[[listener]]\nurl = \"127.0.0.1:1\"\nprotocol_versions = [5]",
                "test.toml:3: `listener.protocol_versions`: expected an array of protocol versions such as [\"5\", \"3.1.1\", \"3.1\"], found an integer in it",
            ),
            (
                "[[listener]]\nurl = \"127.0.0.1:1\"\nmax_connections = 0",
                "test.toml:3: `listener.max_connections`: 0 is out of range",
            ),
            (
                "[[listener]]\nurl = \"127.0.0.1:1\"\nmax_connections = \"2\"",
                "test.toml:3: `listener.max_connections`: expected an integer, found a string",
            ),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn errors_name_file_line_and_key() {
        for (text, expected) in [
            (
                "[limits]\nmax_conections = 5",
                "test.toml:2: `limits.max_conections`: unknown key",
            ),
            (
                "[limits]\n\nmax_connections = \"many\"",
                "test.toml:3: `limits.max_connections`: expected an integer, found a string",
            ),
            (
                "[limits]\nmax_connections = 0",
                "test.toml:2: `limits.max_connections`: 0 is out of range",
            ),
            (
                "[session]\nshared_strategy = \"best\"",
                "test.toml:2: `session.shared_strategy`: `best` is not a strategy",
            ),
            (
                "[[listener]]\nurl = \"http://x:1\"",
                "test.toml:2: `listener.url`: listener `http://x:1`: unknown scheme",
            ),
            ("[nope]", "test.toml:1: `nope`: unknown table"),
            ("workers = yes", "test.toml:1: `workers`: `yes` is not"),
            (
                "[log]\nlevel = \"loud\"",
                "test.toml:2: `log.level`: `loud` is not a level",
            ),
        ] {
            let message = parse(text).unwrap_err().to_string();
            assert!(message.starts_with(expected), "{text:?} gave {message:?}");
        }
    }
}
