//! Authentication and access control that fail closed: password files, ACL files, per-listener
//! anonymous access and the HTTP callout, behind the engine's [`Authenticator`] and
//! [`Authorizer`] traits.
//!
//! The daemon reads the files into [`AccessRules`] (a file that is missing, unreadable or
//! malformed is an [`AuthFileError`] naming the file and line: startup stops, a reload keeps the
//! rules it had). The server installs them in the engine and swaps them on reload.
//!
//! Who gets in (per listener, see [`ListenerRules`]):
//! 1. a client whose user name is in the password file: the password must match (else CONNACK
//!    0x86 Bad user name or password, 3.1.1: return code 4);
//! 2. a client without a user name when `allow_anonymous` is off: CONNACK 0x87 Not authorized
//!    (3.1.1: 5);
//! 3. with `[http_auth] auth_url`: everyone else is asked over HTTP, and 200 is the only yes
//!    (0x86/4 if the client gave a user name or password, else 0x87/5);
//! 4. otherwise a client with a user name the password file does not know is refused (0x86/4),
//!    and with no password file at all a user name is taken as given when `allow_anonymous` is
//!    on (as Mosquitto does) and refused when it is off.
//!
//! What they may do: the listener's ACL file ([`acl`]) when it has one, then the HTTP ACL
//! callout for PUBLISH and each SUBSCRIBE filter when `acl_url` is set; both must allow. With no
//! ACL file and no `acl_url` everything is allowed. Deliveries ([`Access::Receive`]) are checked
//! against the ACL file at once; the HTTP ACL cannot be asked per message, so with an HTTP ACL
//! read access is decided at SUBSCRIBE (a cached "no" for the exact topic still drops the
//! delivery).
//!
//! MQTT 5 enhanced authentication: the method `SCRAM-SHA-256` ([`scram`]) against the
//! verifiers of the listener's password file; any other method gets CONNACK 0x8C. A CONNECT
//! that also has a User Name must name the same user, and a re-authentication must be the
//! connected user's. Every refused authentication counts against the client's address
//! (`throttle`, with the `auth` feature): after too many, its CONNECTs get 0x9F Connection rate
//! exceeded for a while.

#![cfg_attr(not(feature = "auth"), allow(dead_code))]

use std::cell::RefCell;
#[cfg(feature = "auth")]
use std::collections::HashMap;
use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use femtomq_core::ProtocolVersion;
use femtomq_core::broker::{
    Access, AccessDecision, AuthDecision, Authenticator, Authorizer, ClientInfo, ConnId,
    ConnectInfo,
};
use femtomq_core::codec::ReasonCode;

use crate::notify::Notify;
use crate::slots::{PeerAddress, SlotTable};

pub mod acl;
#[cfg(feature = "auth")]
pub mod http;
#[cfg(feature = "auth")]
pub mod passwd;
#[cfg(feature = "auth")]
pub mod scram;
// Without password files (`auth`) no login can fail: there is nothing to throttle.
#[cfg(feature = "auth")]
pub mod throttle;

pub use acl::AclFile;
#[cfg(feature = "auth")]
pub use http::{HttpAuthConfig, HttpMethod, HttpUrl};
#[cfg(feature = "auth")]
pub use passwd::{PasswordFile, PasswordHash};
#[cfg(feature = "auth")]
pub use throttle::{Throttle, ThrottleConfig};

/// A password or ACL file that cannot be used: which file, which line, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFileError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when the error is about one.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl AuthFileError {
    /// An error about `file` (at `line`).
    pub fn new(file: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
        AuthFileError {
            file: file.to_path_buf(),
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for AuthFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for AuthFileError {}

/// A set of MQTT protocol versions: those a listener accepts (all by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolVersions(u8);

impl ProtocolVersions {
    /// MQTT 5.0, 3.1.1 and 3.1.
    pub const ALL: ProtocolVersions = ProtocolVersions(0b111);
    /// No version (to add to).
    pub const NONE: ProtocolVersions = ProtocolVersions(0);

    const fn bit(version: ProtocolVersion) -> u8 {
        match version {
            ProtocolVersion::V3_1 => 1,
            ProtocolVersion::V3_1_1 => 2,
            ProtocolVersion::V5 => 4,
        }
    }

    /// This set with `version` added.
    pub const fn with(self, version: ProtocolVersion) -> ProtocolVersions {
        ProtocolVersions(self.0 | Self::bit(version))
    }

    /// Whether `version` is in the set.
    pub fn contains(self, version: ProtocolVersion) -> bool {
        self.0 & Self::bit(version) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// A version as users write it: `5` (or `5.0`), `3.1.1`, `3.1`.
    pub fn parse_version(name: &str) -> Option<ProtocolVersion> {
        match name {
            "5" | "5.0" => Some(ProtocolVersion::V5),
            "3.1.1" => Some(ProtocolVersion::V3_1_1),
            "3.1" => Some(ProtocolVersion::V3_1),
            _ => None,
        }
    }
}

impl Default for ProtocolVersions {
    fn default() -> Self {
        ProtocolVersions::ALL
    }
}

/// A protocol version as users write it.
fn version_name(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::V5 => "5",
        ProtocolVersion::V3_1_1 => "3.1.1",
        ProtocolVersion::V3_1 => "3.1",
    }
}

/// The rules of one listener.
#[derive(Debug, Clone)]
pub struct ListenerRules {
    /// The listener's name for log lines (its URL); empty: its index.
    pub name: String,
    /// The protocol versions it accepts; a CONNECT with another gets CONNACK 0x84 (3.1.1 and
    /// 3.1: return code 1).
    pub protocol_versions: ProtocolVersions,
    /// Whether clients without a user name may connect.
    pub allow_anonymous: bool,
    /// Users and their password hashes.
    #[cfg(feature = "auth")]
    pub passwords: Option<Arc<PasswordFile>>,
    /// Topic rules.
    pub acl: Option<Arc<AclFile>>,
}

impl Default for ListenerRules {
    /// Anonymous access, no files: everyone may do everything.
    fn default() -> Self {
        ListenerRules {
            name: String::new(),
            protocol_versions: ProtocolVersions::ALL,
            allow_anonymous: true,
            #[cfg(feature = "auth")]
            passwords: None,
            acl: None,
        }
    }
}

/// Every listener's rules, and the HTTP callout.
#[derive(Debug, Clone, Default)]
pub struct AccessRules {
    /// Rules by listener index (position in `listeners`, then `optional_listeners`).
    pub listeners: Vec<ListenerRules>,
    /// Rules of listeners beyond the end of `listeners`.
    pub fallback: ListenerRules,
    /// The HTTP authentication and ACL callout.
    #[cfg(feature = "auth")]
    pub http: Option<Arc<HttpAuthConfig>>,
    /// Failed-login throttling, shared by every worker. On reload the table in force is kept
    /// and takes the new one's settings.
    #[cfg(feature = "auth")]
    pub throttle: Arc<Throttle>,
}

impl AccessRules {
    /// The rules of listener `index`.
    pub fn for_listener(&self, index: u16) -> &ListenerRules {
        self.listeners
            .get(usize::from(index))
            .unwrap_or(&self.fallback)
    }
}

/// A question for the HTTP callout, made while the engine waits.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// The connection waiting.
    pub(crate) conn: ConnId,
    kind: JobKind,
    username: Option<Box<str>>,
    client_id: Box<str>,
}

#[derive(Debug, Clone)]
enum JobKind {
    /// CONNECT: the answer goes to `Broker::resolve_auth`.
    Authenticate {
        password: Option<Box<[u8]>>,
        refusal: ReasonCode,
    },
    /// PUBLISH or a SUBSCRIBE filter: the answer goes to `Broker::resolve_access`.
    #[cfg_attr(not(feature = "auth"), allow(dead_code))]
    Access { access: u8, topic: Box<str> },
}

/// An answer for the engine.
pub(crate) enum Answer {
    /// For `Broker::resolve_auth`.
    Auth(ConnId, AuthDecision),
    /// For `Broker::resolve_access`.
    Access(ConnId, AccessDecision),
}

/// The rules in force, shared by the engine's authenticator and authorizer and the server.
pub(crate) struct AccessHub {
    rules: RefCell<AccessRules>,
    jobs: RefCell<VecDeque<Job>>,
    /// Wakes the task that runs the jobs.
    pub(crate) jobs_ready: Notify,
    #[cfg(feature = "auth")]
    cache: RefCell<http::AclCache>,
    /// The address of each open connection, for throttling and the log.
    peers: RefCell<SlotTable<PeerAddress>>,
    /// SCRAM exchanges waiting for the client's final message, one per connection at most.
    #[cfg(feature = "auth")]
    scram: RefCell<HashMap<ConnId, scram::ServerExchange>>,
}

impl AccessHub {
    pub(crate) fn new(rules: AccessRules) -> Rc<AccessHub> {
        Rc::new(AccessHub {
            rules: RefCell::new(rules),
            jobs: RefCell::new(VecDeque::new()),
            jobs_ready: Notify::default(),
            #[cfg(feature = "auth")]
            cache: RefCell::new(http::AclCache::default()),
            peers: RefCell::new(SlotTable::default()),
            #[cfg(feature = "auth")]
            scram: RefCell::new(HashMap::new()),
        })
    }

    /// A connection from `peer` was opened.
    pub(crate) fn opened(&self, conn: ConnId, peer: SocketAddr) {
        self.peers
            .borrow_mut()
            .insert(conn, PeerAddress::from(peer));
    }

    /// A connection was closed: forget its address and any exchange in progress.
    pub(crate) fn closed(&self, conn: ConnId) {
        self.peers.borrow_mut().remove(&conn);
        #[cfg(feature = "auth")]
        self.scram.borrow_mut().remove(&conn);
    }

    /// Whether `info`'s protocol version is refused on its listener (logged).
    fn version_refused(&self, info: &ConnectInfo<'_>) -> bool {
        let rules = self.rules.borrow();
        let listener = rules.for_listener(info.listener);
        if listener.protocol_versions.contains(info.version) {
            return false;
        }
        let name = if listener.name.is_empty() {
            format!("#{}", info.listener)
        } else {
            listener.name.clone()
        };
        log::info!(
            "listener {name}: client `{}` refused: MQTT {} is not accepted here",
            info.client_id,
            version_name(info.version)
        );
        true
    }

    /// The address of open connection `conn`, as accepted.
    pub(crate) fn peer_address(&self, conn: ConnId) -> Option<SocketAddr> {
        self.peers
            .borrow()
            .get(&conn)
            .map(|&peer| SocketAddr::from(peer))
    }

    fn peer(&self, conn: ConnId) -> Option<IpAddr> {
        self.peer_address(conn).map(|peer| peer.ip())
    }

    /// Whether `conn`'s address is refused for now (logged).
    #[cfg(feature = "auth")]
    fn throttled(&self, info: &ConnectInfo<'_>) -> bool {
        let Some(ip) = self.peer(info.conn) else {
            return false;
        };
        let throttle = self.rules.borrow().throttle.clone();
        let remaining = throttle.table().check(ip, std::time::Instant::now());
        if let Some(remaining) = remaining {
            log::info!(
                "client `{}` user `{}` from {ip}: refused for {} ms more after failed logins",
                info.client_id,
                info.username.unwrap_or(""),
                remaining.as_millis()
            );
        }
        remaining.is_some()
    }

    /// Without `auth` no address is throttled.
    #[cfg(not(feature = "auth"))]
    fn throttled(&self, _: &ConnectInfo<'_>) -> bool {
        false
    }

    /// Without `auth` failed logins are not counted.
    #[cfg(not(feature = "auth"))]
    fn record(&self, _: Option<IpAddr>, _: Option<&str>, _: &AuthDecision) {}

    /// Counts a decision about `user` from `conn`'s address: a refusal as a failure, a success
    /// as clearing the address's failures.
    #[cfg(feature = "auth")]
    fn record(&self, peer: Option<IpAddr>, user: Option<&str>, decision: &AuthDecision) {
        let Some(ip) = peer else {
            return;
        };
        let throttle = self.rules.borrow().throttle.clone();
        match decision {
            AuthDecision::Deny(ReasonCode::CONNECTION_RATE_EXCEEDED) => {}
            AuthDecision::Deny(_) => {
                let now = std::time::Instant::now();
                let outcome = throttle.table().failed(ip, user, now);
                if let throttle::Failure::Blocked(failures, backoff) = outcome {
                    log::warn!(
                        "{failures} failed logins from {ip} (last user `{}`): refused for {} ms",
                        user.unwrap_or(""),
                        backoff.as_millis()
                    );
                }
            }
            AuthDecision::Allow { username, .. } => {
                throttle.table().succeeded(ip, username.as_deref().or(user))
            }
            AuthDecision::Continue { .. } | AuthDecision::Pending => {}
        }
    }

    /// The engine hooks that consult this hub.
    pub(crate) fn hooks(self: &Rc<Self>) -> (Box<dyn Authenticator>, Box<dyn Authorizer>) {
        (
            Box::new(HubAuthenticator(self.clone())),
            Box::new(HubAuthorizer(self.clone())),
        )
    }

    /// Replaces the rules (reload); cached HTTP answers are forgotten, the throttle table is
    /// kept with the new settings.
    #[cfg_attr(not(feature = "auth"), allow(unused_mut))]
    pub(crate) fn replace(&self, mut rules: AccessRules) {
        #[cfg(feature = "auth")]
        {
            let throttle = self.rules.borrow().throttle.clone();
            if !Arc::ptr_eq(&throttle, &rules.throttle) {
                let config = rules.throttle.table().config();
                throttle.table().set_config(config);
                rules.throttle = throttle;
            }
        }
        *self.rules.borrow_mut() = rules;
        #[cfg(feature = "auth")]
        self.cache.borrow_mut().clear();
    }

    pub(crate) fn next_job(&self) -> Option<Job> {
        self.jobs.borrow_mut().pop_front()
    }

    fn push_job(&self, job: Job) {
        self.jobs.borrow_mut().push_back(job);
        self.jobs_ready.notify();
    }

    /// Asks the HTTP server `job`'s question; `peer` is the client's address. Fails closed.
    pub(crate) async fn answer(&self, job: Job, peer: Option<SocketAddr>) -> Answer {
        #[cfg(feature = "auth")]
        {
            let http = self.rules.borrow().http.clone();
            let allowed = match &http {
                Some(http) => self.ask_http(http, &job, peer).await,
                None => false,
            };
            match job.kind {
                JobKind::Authenticate { refusal, .. } => {
                    let decision = if allowed {
                        AuthDecision::allow()
                    } else {
                        AuthDecision::Deny(refusal)
                    };
                    self.record(peer.map(|p| p.ip()), job.username.as_deref(), &decision);
                    Answer::Auth(job.conn, decision)
                }
                JobKind::Access { .. } => Answer::Access(job.conn, allowed.into()),
            }
        }
        #[cfg(not(feature = "auth"))]
        {
            let _ = peer;
            match job.kind {
                JobKind::Authenticate { refusal, .. } => {
                    Answer::Auth(job.conn, AuthDecision::Deny(refusal))
                }
                JobKind::Access { .. } => Answer::Access(job.conn, AccessDecision::Deny),
            }
        }
    }

    #[cfg(feature = "auth")]
    async fn ask_http(&self, http: &HttpAuthConfig, job: &Job, peer: Option<SocketAddr>) -> bool {
        let (url, values) = match &job.kind {
            JobKind::Authenticate { password, .. } => (
                &http.auth_url,
                http::Values {
                    username: job.username.as_deref(),
                    client_id: &job.client_id,
                    peer,
                    password: password.as_deref(),
                    topic: None,
                    access: None,
                },
            ),
            JobKind::Access { access, topic } => (
                &http.acl_url,
                http::Values {
                    username: job.username.as_deref(),
                    client_id: &job.client_id,
                    peer,
                    password: None,
                    topic: Some(topic),
                    access: Some(*access),
                },
            ),
        };
        let Some(url) = url else {
            return false;
        };
        let form = http::fill_params(&http.params, &values);
        let request = http::build_request(http.method, url, &form);
        let allowed = http::ask(url, &request, http.timeout).await;
        log::debug!(
            "HTTP {} for client `{}`: {}",
            if matches!(job.kind, JobKind::Authenticate { .. }) {
                "authentication"
            } else {
                "ACL"
            },
            job.client_id,
            if allowed { "allowed" } else { "denied" }
        );
        if let JobKind::Access { access, topic } = &job.kind {
            let key = http::AclCache::key(job.username.as_deref(), &job.client_id, *access, topic);
            self.cache
                .borrow_mut()
                .put(key, allowed, http.cache_size, std::time::Instant::now());
        }
        allowed
    }
}

struct HubAuthenticator(Rc<AccessHub>);

impl Authenticator for HubAuthenticator {
    fn authenticate(&mut self, info: &ConnectInfo<'_>) -> AuthDecision {
        // Not a failed login: the throttle does not count it.
        if self.0.version_refused(info) {
            return AuthDecision::Deny(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
        }
        if self.0.throttled(info) {
            return AuthDecision::Deny(ReasonCode::CONNECTION_RATE_EXCEEDED);
        }
        let decision = self.check_password(info);
        self.0
            .record(self.0.peer(info.conn), info.username, &decision);
        decision
    }

    fn start_enhanced(
        &mut self,
        info: &ConnectInfo<'_>,
        method: &str,
        data: Option<&[u8]>,
    ) -> AuthDecision {
        if self.0.version_refused(info) {
            return AuthDecision::Deny(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
        }
        if self.0.throttled(info) {
            return AuthDecision::Deny(ReasonCode::CONNECTION_RATE_EXCEEDED);
        }
        #[cfg(feature = "auth")]
        if method == scram::METHOD {
            let (user, decision) = self.scram_start(info, data);
            self.0
                .record(self.0.peer(info.conn), user.as_deref(), &decision);
            return decision;
        }
        let _ = (method, data);
        let decision = AuthDecision::Deny(ReasonCode::BAD_AUTHENTICATION_METHOD);
        self.0
            .record(self.0.peer(info.conn), info.username, &decision);
        decision
    }

    fn continue_enhanced(
        &mut self,
        info: &ConnectInfo<'_>,
        method: &str,
        data: Option<&[u8]>,
    ) -> AuthDecision {
        #[cfg(feature = "auth")]
        let exchange = self.0.scram.borrow_mut().remove(&info.conn);
        #[cfg(feature = "auth")]
        if let Some(exchange) = exchange.filter(|_| method == scram::METHOD) {
            let decision = match exchange.finish(data.unwrap_or(b"")) {
                Ok(server_final) => AuthDecision::Allow {
                    username: Some(Box::from(exchange.username.as_str())),
                    data: Some(server_final.into()),
                },
                Err(error) => {
                    log::info!(
                        "client `{}` user `{}`: {error}",
                        info.client_id,
                        exchange.username
                    );
                    AuthDecision::Deny(scram_refusal(error))
                }
            };
            self.0
                .record(self.0.peer(info.conn), Some(&exchange.username), &decision);
            return decision;
        }
        let _ = (method, data);
        let decision = AuthDecision::Deny(ReasonCode::NOT_AUTHORIZED);
        self.0
            .record(self.0.peer(info.conn), info.username, &decision);
        decision
    }
}

/// The CONNACK (or DISCONNECT) reason for a failed SCRAM exchange.
#[cfg(feature = "auth")]
fn scram_refusal(error: scram::ScramError) -> ReasonCode {
    match error {
        scram::ScramError::InvalidProof => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        scram::ScramError::Malformed(_) | scram::ScramError::Unsupported(_) => {
            ReasonCode::NOT_AUTHORIZED
        }
    }
}

/// A process-wide secret for the decoy salts of unknown SCRAM users (the same in every worker).
#[cfg(feature = "auth")]
fn decoy_secret() -> &'static [u8; 32] {
    static SECRET: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| {
        let mut secret = [0u8; 32];
        if let Err(e) = scram::fill_random(&mut secret) {
            // Without it, decoy salts are predictable: they still reveal nothing else.
            log::warn!("no random secret for SCRAM decoy salts: {e}");
        }
        secret
    })
}

impl HubAuthenticator {
    /// The first SCRAM-SHA-256 step: the user named (if any) and the answer.
    #[cfg(feature = "auth")]
    fn scram_start(
        &mut self,
        info: &ConnectInfo<'_>,
        data: Option<&[u8]>,
    ) -> (Option<String>, AuthDecision) {
        self.0.scram.borrow_mut().remove(&info.conn);
        let first = match scram::ClientFirst::parse(data.unwrap_or(b"")) {
            Ok(first) => first,
            Err(error) => {
                log::info!("client `{}`: {error}", info.client_id);
                return (
                    info.username.map(str::to_string),
                    AuthDecision::Deny(scram_refusal(error)),
                );
            }
        };
        let user = Some(first.username.clone());
        // CONNECT's User Name, or the identity of a connected client re-authenticating.
        if info.username.is_some_and(|name| name != first.username) {
            log::info!(
                "client `{}`: SCRAM user `{}` is not `{}`",
                info.client_id,
                first.username,
                info.username.unwrap_or("")
            );
            return (user, AuthDecision::Deny(ReasonCode::NOT_AUTHORIZED));
        }
        let verifier = {
            let rules = self.0.rules.borrow();
            match &rules.for_listener(info.listener).passwords {
                Some(file) => file.scram(&first.username).cloned(),
                // No password file on this listener: nothing to check SCRAM against.
                None => {
                    return (
                        user,
                        AuthDecision::Deny(ReasonCode::BAD_AUTHENTICATION_METHOD),
                    );
                }
            }
        };
        let nonce = match scram::server_nonce() {
            Ok(nonce) => nonce,
            Err(e) => {
                log::error!("no random nonce for SCRAM: {e}");
                return (user, AuthDecision::Deny(ReasonCode::UNSPECIFIED_ERROR));
            }
        };
        let decoy = scram::decoy_salt(decoy_secret(), &first.username);
        let (exchange, server_first) =
            scram::ServerExchange::start(first, verifier, &nonce, &decoy);
        self.0.scram.borrow_mut().insert(info.conn, exchange);
        (
            user,
            AuthDecision::Continue {
                data: server_first.into(),
            },
        )
    }

    /// A CONNECT without an Authentication Method: user name and password.
    fn check_password(&mut self, info: &ConnectInfo<'_>) -> AuthDecision {
        let rules = self.0.rules.borrow();
        let listener = rules.for_listener(info.listener);
        #[cfg(feature = "auth")]
        let has_passwords = listener.passwords.is_some();
        #[cfg(not(feature = "auth"))]
        let has_passwords = false;
        #[cfg(feature = "auth")]
        if let (Some(user), Some(file)) = (info.username, &listener.passwords) {
            match file.verify(user, info.password.unwrap_or(b"")) {
                Some(true) => return AuthDecision::allow(),
                Some(false) => return AuthDecision::Deny(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
                None => {}
            }
        }
        if info.username.is_none() && !listener.allow_anonymous {
            return AuthDecision::Deny(ReasonCode::NOT_AUTHORIZED);
        }
        #[cfg(feature = "auth")]
        if rules.http.as_ref().is_some_and(|h| h.auth_url.is_some()) {
            let refusal = if info.username.is_some() || info.password.is_some() {
                ReasonCode::BAD_USER_NAME_OR_PASSWORD
            } else {
                ReasonCode::NOT_AUTHORIZED
            };
            self.0.push_job(Job {
                conn: info.conn,
                kind: JobKind::Authenticate {
                    password: info.password.map(Box::from),
                    refusal,
                },
                username: info.username.map(Box::from),
                client_id: Box::from(info.client_id),
            });
            return AuthDecision::Pending;
        }
        match info.username {
            None => AuthDecision::allow(),
            Some(_) if has_passwords => AuthDecision::Deny(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
            Some(_) if listener.allow_anonymous => AuthDecision::allow(),
            Some(_) => AuthDecision::Deny(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        }
    }
}

struct HubAuthorizer(Rc<AccessHub>);

impl HubAuthorizer {
    /// The ACL file's answer (true when the listener has none).
    fn file_allows(&self, client: &ClientInfo<'_>, access: Access, topic: &str) -> bool {
        let rules = self.0.rules.borrow();
        match &rules.for_listener(client.listener).acl {
            Some(acl) => acl.allows(client.client_id, client.username, access, topic),
            None => true,
        }
    }
}

#[cfg(feature = "auth")]
fn http_access(access: Access) -> u8 {
    match access {
        Access::Publish => 2,
        // Receiving is what a subscription asked for.
        Access::Subscribe | Access::Receive => 1,
    }
}

impl Authorizer for HubAuthorizer {
    fn authorize(&self, client: &ClientInfo<'_>, access: Access, topic: &str) -> bool {
        if !self.file_allows(client, access, topic) {
            return false;
        }
        #[cfg(feature = "auth")]
        {
            let rules = self.0.rules.borrow();
            if let Some(http) = rules.http.as_ref().filter(|h| h.acl_url.is_some()) {
                let key = http::AclCache::key(
                    client.username,
                    client.client_id,
                    http_access(access),
                    topic,
                );
                let cached =
                    self.0
                        .cache
                        .borrow_mut()
                        .get(&key, http.cache_ttl, std::time::Instant::now());
                return match access {
                    // Read access was decided at SUBSCRIBE; a cached "no" still counts.
                    Access::Receive => cached != Some(false),
                    // Only reached through a caller that cannot wait: fail closed.
                    Access::Publish | Access::Subscribe => cached == Some(true),
                };
            }
        }
        true
    }

    fn check(&self, client: &ClientInfo<'_>, access: Access, topic: &str) -> AccessDecision {
        if !self.file_allows(client, access, topic) {
            return AccessDecision::Deny;
        }
        #[cfg(feature = "auth")]
        {
            let rules = self.0.rules.borrow();
            if let Some(http) = rules.http.as_ref().filter(|h| h.acl_url.is_some()) {
                let code = http_access(access);
                let key = http::AclCache::key(client.username, client.client_id, code, topic);
                let cached =
                    self.0
                        .cache
                        .borrow_mut()
                        .get(&key, http.cache_ttl, std::time::Instant::now());
                if let Some(allowed) = cached {
                    return allowed.into();
                }
                let Some(conn) = client.conn else {
                    return AccessDecision::Deny;
                };
                self.0.push_job(Job {
                    conn,
                    kind: JobKind::Access {
                        access: code,
                        topic: Box::from(topic),
                    },
                    username: client.username.map(Box::from),
                    client_id: Box::from(client.client_id),
                });
                return AccessDecision::Pending;
            }
        }
        AccessDecision::Allow
    }
}
