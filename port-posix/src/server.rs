//! The event loop: listeners, connections, timers and control, on one thread.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::executor::LocalExecutor;
use crate::reactor::{Async, Timer, Wakeup};

use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
use log::{debug, error, info, warn};

use femtomq_core::broker::{
    Broker, CloseCause, Config, ConnId, DropReason, Event, RemoteDelivery, Replication, Stats,
    client_owner,
};
use femtomq_core::codec::{self, Frame, Packet};
use femtomq_core::{Instant, ProtocolVersion};

use crate::auth::{AccessHub, AccessRules, Answer};
use crate::listener::ListenerSpec;
use crate::notify::Notify;
use crate::slots::SlotTable;
use crate::transport::{Identities, IdentityAuthenticator, Layers, Wrapping};

/// The loop's one read buffer. Every connection reads into it as much as the socket holds
/// (up to this size) and the engine consumes every whole packet in it; only the tail of a
/// packet not yet complete is copied into the connection's own buffer, so an idle connection
/// holds no read buffer at all.
const SCRATCH: usize = 64 * 1024;
/// Reads one connection may do before letting the others run.
const READS_PER_TURN: usize = 4;
/// Smallest step by which a connection's own buffer grows for a large packet.
const PENDING_STEP: usize = 4096;
/// A connection's partial-packet buffer grown past this is released once empty.
const KEEP_BUFFER: usize = 16 * 1024;
/// How long shutdown waits for connections to flush their last packets.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Sockets accepted beyond `max_connections` (to answer CONNACK 0x97) before new ones are
/// closed at once.
const ACCEPT_SLACK: usize = 64;

/// The connection count of a listener with its own `max_connections`, shared by the workers.
struct ListenerLimit {
    /// The listener, for log lines.
    name: String,
    max: usize,
    open: AtomicUsize,
    /// When a refusal was last logged (whole seconds since `start`, plus one; 0: never), and
    /// how many refusals were not logged since. 32 bits: 32-bit MIPS has no 64-bit atomics.
    last_log: AtomicU32,
    unlogged: AtomicUsize,
    start: std::time::Instant,
}

/// Refusals of one listener are logged at most once in this many seconds.
const REFUSAL_LOG_INTERVAL_S: u32 = 1;

impl ListenerLimit {
    /// A slot on the listener, or `None` when it is full (the refusal is logged, at most once a
    /// second).
    fn acquire(self: &Arc<Self>, peer: SocketAddr) -> Option<Slot> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            });
        if taken.is_ok() {
            return Some(Slot(Some(self.clone())));
        }
        let now = u32::try_from(self.start.elapsed().as_secs())
            .unwrap_or(u32::MAX - 1)
            .saturating_add(1);
        let last = self.last_log.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= REFUSAL_LOG_INTERVAL_S;
        if due
            && self
                .last_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
            let more = if unlogged > 0 {
                format!(" ({unlogged} more refused since the last report)")
            } else {
                String::new()
            };
            warn!(
                "listener {}: refusing connection from {peer}: its max_connections ({}) are open{more}",
                self.name, self.max
            );
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
        }
        None
    }
}

/// A connection's place on a listener with `max_connections`: given back when dropped (when
/// the connection ends, however it ends). Travels with a connection handed to another worker.
struct Slot(Option<Arc<ListenerLimit>>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(limit) = self.0.take() {
            limit.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What [`run`] serves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listeners that must open (startup fails otherwise).
    pub listeners: Vec<ListenerSpec>,
    /// Listeners opened if possible (for example `[::1]` on a host without IPv6).
    pub optional_listeners: Vec<ListenerSpec>,
    /// The engine's configuration.
    pub engine: Config,
    /// Seed for client id assignment and random shared-subscription choice.
    pub seed: u64,
    /// Who may connect and what they may do (the default lets everyone do everything).
    pub access: AccessRules,
    /// Persistence of sessions, queues and retained messages (`None`: in memory only).
    #[cfg(feature = "persist")]
    pub persist: Option<crate::persist::PersistConfig>,
}

/// What a reload produced.
pub enum ReloadOutcome {
    /// Apply this engine configuration and these access rules.
    Apply(Config, AccessRules),
    /// Keep the current configuration; the message says why (already logged by the caller).
    Keep,
}

/// Called once every listener is open.
pub type ReadyCallback = Box<dyn FnOnce(&[ListenerSpec])>;

/// How the daemon steers a running server.
pub struct Control {
    /// Becomes readable when the server must shut down (a signal pipe).
    pub shutdown: UnixStream,
    /// Becomes readable when the configuration must be reloaded (a signal pipe).
    pub reload: UnixStream,
    /// Becomes readable when the counters must be logged (a signal pipe).
    pub report: UnixStream,
    /// Re-reads the configuration on reload.
    pub on_reload: Box<dyn FnMut() -> ReloadOutcome>,
    /// Called once every listener is open, with the listeners as bound (port 0 resolved).
    pub on_ready: ReadyCallback,
}

/// What one worker sends another.
enum Mail {
    /// A connection whose CONNECT names a client this worker owns, with the bytes read so far.
    Handoff {
        stream: TcpStream,
        bytes: Vec<u8>,
        peer: SocketAddr,
        listener: u16,
        /// The TLS and WebSocket state of the connection, on such listeners.
        layers: Option<Box<Layers>>,
        /// Its place on its listener.
        slot: Slot,
    },
    /// Copies of messages for this worker's sessions.
    Deliveries(Vec<RemoteDelivery>),
    /// Subscription and retained changes made by another worker.
    Replication(Vec<Replication>),
    /// Worker `from` stored the copies this worker sent it, up to record `seq`, durably.
    Confirmed { from: u16, seq: u64 },
    /// Worker `from` took `publications` of the publications (of `bytes`) this worker sent it
    /// copies of (flow control: `Broker::take_taken`, `Broker::remote_taken`); posted after
    /// the routing changes taking them made.
    Taken {
        from: u16,
        publications: u32,
        bytes: usize,
    },
    /// A new configuration and access rules.
    Reload(Config, AccessRules),
    /// Add this worker's counters to a report.
    Report(Arc<Tally>),
    /// Stop.
    Shutdown,
}

/// A worker's inbox: a queue, and a pipe byte to wake the worker when the queue was empty.
struct Mailbox {
    queue: Mutex<Vec<Mail>>,
    wake: UnixStream,
}

impl Mailbox {
    fn post(&self, mail: Mail) {
        let was_empty = match self.queue.lock() {
            Ok(mut queue) => {
                let was_empty = queue.is_empty();
                queue.push(mail);
                was_empty
            }
            Err(_) => return,
        };
        if was_empty {
            // The pipe is non-blocking: when it is full the worker has wake-ups pending anyway.
            let _ = (&self.wake).write(&[1]);
        }
    }

    fn take(&self) -> Vec<Mail> {
        self.queue
            .lock()
            .map(|mut queue| std::mem::take(&mut *queue))
            .unwrap_or_default()
    }

    /// Takes the routing changes only, leaving any other mail for the mailbox loop.
    fn take_replication(&self) -> Vec<Replication> {
        let Ok(mut queue) = self.queue.lock() else {
            return Vec::new();
        };
        let mut changes = Vec::new();
        queue.retain_mut(|mail| match mail {
            Mail::Replication(batch) => {
                changes.append(batch);
                false
            }
            _ => true,
        });
        changes
    }
}

/// Where the workers wait for each other at startup: each one has restored its sessions and
/// posted their subscriptions (and worker 0 the retained messages) to the others before any
/// serves, so that no message published right after a restart misses a restored subscriber of
/// another worker.
struct StartupGate {
    arrived: Mutex<usize>,
    all_arrived: std::sync::Condvar,
    workers: usize,
}

/// How long a worker waits at the gate for the others (one that fails to start never comes).
const STARTUP_GATE_WAIT: Duration = Duration::from_secs(30);

impl StartupGate {
    fn new(workers: usize) -> StartupGate {
        StartupGate {
            arrived: Mutex::new(0),
            all_arrived: std::sync::Condvar::new(),
            workers,
        }
    }

    /// Counts this worker in (once: see [`GatePass`]).
    fn arrive(&self) {
        if let Ok(mut arrived) = self.arrived.lock() {
            *arrived += 1;
            self.all_arrived.notify_all();
        }
    }

    /// Waits until every worker has arrived, or gives up after [`STARTUP_GATE_WAIT`].
    fn wait(&self) {
        let Ok(arrived) = self.arrived.lock() else {
            return;
        };
        let waited = self
            .all_arrived
            .wait_timeout_while(arrived, STARTUP_GATE_WAIT, |n| *n < self.workers);
        if waited.is_ok_and(|(_, timeout)| timeout.timed_out()) {
            warn!(
                "startup: not every worker started within {} s; serving anyway",
                STARTUP_GATE_WAIT.as_secs()
            );
        }
    }
}

/// A worker's pass through the gate: it arrives when told, or when dropped (a worker that fails
/// before the gate must not hold the others up).
struct GatePass {
    gate: Arc<StartupGate>,
    arrived: bool,
}

impl GatePass {
    fn arrive_and_wait(mut self) {
        self.arrived = true;
        self.gate.arrive();
        self.gate.wait();
    }
}

impl Drop for GatePass {
    fn drop(&mut self) {
        if !self.arrived {
            self.gate.arrive();
        }
    }
}

/// A report of the counters being summed: each worker adds its own, the last one logs it.
struct Tally {
    /// The sum so far, and how many workers are still to add theirs.
    sum: Mutex<(Stats, usize)>,
    uptime: Duration,
}

impl Tally {
    fn add(&self, stats: Stats) {
        let Ok(mut sum) = self.sum.lock() else {
            return;
        };
        let (total, left) = &mut *sum;
        add_stats(total, stats);
        *left = left.saturating_sub(1);
        if *left == 0 {
            info!("{}", stats_line("running for", self.uptime, total));
        }
    }
}

/// Adds one worker's counters to the sum of all.
fn add_stats(total: &mut Stats, stats: Stats) {
    total.connected += stats.connected;
    total.sessions += stats.sessions;
    total.messages_received += stats.messages_received;
    total.messages_sent += stats.messages_sent;
    total.messages_dropped += stats.messages_dropped;
    total.denials += stats.denials;
    total.protocol_errors += stats.protocol_errors;
    total.persist_refused += stats.persist_refused;
}

/// The line an operator reads the counters in (on SIGUSR1 and at shutdown).
fn stats_line(when: &str, uptime: Duration, stats: &Stats) -> String {
    format!(
        "{when} {} s: {} clients connected, {} sessions, {} messages received, {} sent, \
         {} dropped, {} access denials, {} protocol errors, {} refused with the store full",
        uptime.as_secs(),
        stats.connected,
        stats.sessions,
        stats.messages_received,
        stats.messages_sent,
        stats.messages_dropped,
        stats.denials,
        stats.protocol_errors,
        stats.persist_refused
    )
}

/// The open connections of a worker: what wakes each one's task when the engine has output
/// for it. (Their addresses are in the access hub, which needs them for throttling.)
type ConnectionTable = SlotTable<Wakeup>;

/// State shared by the tasks of the loop (all on one thread).
struct Shared {
    broker: RefCell<Broker>,
    scratch: RefCell<Vec<u8>>,
    connections: RefCell<ConnectionTable>,
    timer: Notify,
    armed: Cell<Option<Instant>>,
    start: std::time::Instant,
    open_sockets: Cell<usize>,
    /// Gives freed heap memory back after the open sockets halve from a peak.
    trimmer: RefCell<crate::trim::Trimmer>,
    /// Warnings about dropped messages, a few per window and then a count.
    drop_warnings: RefCell<crate::warnings::WarningLimit>,
    sockets_closed: Notify,
    stopping: Cell<bool>,
    access: Rc<AccessHub>,
    /// This worker's place, and every worker's mailbox (its own included).
    worker: usize,
    mailboxes: Arc<[Mailbox]>,
    /// Scratch for the batches the engine hands over for other workers.
    outbox: RefCell<(Vec<RemoteDelivery>, Vec<Replication>)>,
    /// Scratch for the confirmations of their copies that other workers wait for.
    confirmations: RefCell<Vec<(u16, u64)>>,
    /// Scratch for the reports of copies taken from other workers (flow control).
    taken: RefCell<Vec<(u16, u32, usize)>>,
    /// TLS and WebSocket settings by listener index (`None`: plain TCP), shared by the workers.
    wrappings: Arc<[Option<Wrapping>]>,
    /// Certificate names of the connections of `use_identity_as_username` listeners.
    identities: Rc<Identities>,
    /// Connection counts by listener index (`None`: no `max_connections` of its own).
    limits: Arc<[Option<Arc<ListenerLimit>>]>,
    /// This worker's persistent store (records go to its writer thread after each call).
    #[cfg(feature = "persist")]
    store: RefCell<Option<crate::persist::Store>>,
}

impl Shared {
    fn now(&self) -> Instant {
        Instant(self.start.elapsed().as_millis() as u64)
    }

    fn deadline(&self, at: Instant) -> std::time::Instant {
        self.start + Duration::from_millis(at.0)
    }

    /// After any call into the engine: wake the connections it wrote to, report its events,
    /// and re-arm the timer if the next deadline changed.
    fn dispatch(&self) {
        let mut broker = self.broker.borrow_mut();
        #[cfg(feature = "persist")]
        if let Some(store) = self.store.borrow_mut().as_mut() {
            store.collect(&mut broker);
        }
        let connections = self.connections.borrow();
        while let Some(conn) = broker.poll_writable() {
            if let Some(entry) = connections.get(&conn) {
                entry.wake();
            }
        }
        // The clock is read only when there is something to log or a window to end.
        let mut drop_warnings = self.drop_warnings.borrow_mut();
        let mut now = None;
        while let Some(event) = broker.poll_event() {
            let at = *now.get_or_insert_with(|| self.now().0);
            log_event(&broker, &self.access, &mut drop_warnings, at, &event);
        }
        if drop_warnings.in_window() {
            let at = now.unwrap_or_else(|| self.now().0);
            if let Some(count) = drop_warnings.end_window(at) {
                warn!("{count} more messages dropped in the last 10 s (not logged one by one)");
            }
        }
        if broker.poll_timeout() != self.armed.get() {
            self.timer.notify();
        }
        if MULTI_WORKER && self.mailboxes.len() > 1 {
            self.post_batches(&mut broker);
        }
    }

    /// Sends the copies for other workers' sessions, one batch per worker, and the routing
    /// changes to every other worker.
    fn post_batches(&self, broker: &mut Broker) {
        let mut outbox = self.outbox.borrow_mut();
        let (remote, replication) = &mut *outbox;
        broker.take_remote(remote);
        broker.take_replication(replication);
        let workers = self.mailboxes.len();
        let mut confirmations = self.confirmations.borrow_mut();
        broker.take_confirmations(&mut confirmations);
        for (origin, seq) in confirmations.drain(..) {
            if let Some(mailbox) = self.mailboxes.get(usize::from(origin)) {
                let from = self.worker as u16;
                mailbox.post(Mail::Confirmed { from, seq });
            }
        }
        if !replication.is_empty() {
            for (index, mailbox) in self.mailboxes.iter().enumerate() {
                if index != self.worker {
                    mailbox.post(Mail::Replication(replication.clone()));
                }
            }
            replication.clear();
        }
        // After the routing changes: a request to hold back publishers arrives first.
        let mut taken = self.taken.borrow_mut();
        broker.take_taken(&mut taken);
        let from = self.worker as u16;
        for (origin, publications, bytes) in taken.drain(..) {
            if let Some(mailbox) = self.mailboxes.get(usize::from(origin)) {
                mailbox.post(Mail::Taken {
                    from,
                    publications,
                    bytes,
                });
            }
        }
        if !remote.is_empty() {
            let mut batches: Vec<Vec<RemoteDelivery>> = (0..workers).map(|_| Vec::new()).collect();
            for delivery in remote.drain(..) {
                batches[delivery.subscriber.0 as usize % workers].push(delivery);
            }
            for (mailbox, batch) in self.mailboxes.iter().zip(batches) {
                if !batch.is_empty() {
                    mailbox.post(Mail::Deliveries(batch));
                }
            }
        }
    }
}

fn log_event(
    broker: &Broker,
    access: &AccessHub,
    drop_warnings: &mut crate::warnings::WarningLimit,
    now: u64,
    event: &Event,
) {
    let peer = |conn: &ConnId| {
        access
            .peer_address(*conn)
            .map(|peer| peer.to_string())
            .unwrap_or_default()
    };
    match event {
        Event::ClientConnected {
            conn,
            client_id,
            username,
            version,
            session_present,
            ..
        } => info!(
            "client `{client_id}` connected from {} (MQTT {version:?}, user {}, session {})",
            peer(conn),
            username.as_deref().unwrap_or("-"),
            if *session_present { "resumed" } else { "new" }
        ),
        Event::ClientDisconnected {
            conn,
            client_id,
            cause,
        } => {
            let who = client_id.as_deref().unwrap_or("(before CONNECT)");
            match cause {
                CloseCause::ClientDisconnect(_)
                | CloseCause::NetworkClosed
                | CloseCause::ServerShutdown => {
                    info!("client `{who}` from {} disconnected: {cause:?}", peer(conn))
                }
                _ => warn!("client `{who}` from {} disconnected: {cause:?}", peer(conn)),
            }
        }
        Event::AccessDenied {
            session,
            username,
            access,
            topic,
        } => {
            warn!(
                "access denied: client `{}` user `{}` {access:?} `{topic}`",
                broker.client_id(*session).unwrap_or("?"),
                username.as_deref().unwrap_or("-")
            )
        }
        Event::MessageDropped {
            session,
            message,
            reason,
        } => {
            let client = broker.client_id(*session).unwrap_or("?");
            match reason {
                DropReason::QueueFull | DropReason::TooLarge => {
                    if drop_warnings.admit(now) {
                        warn!(
                            "message on `{}` dropped for client `{client}`: {reason:?}",
                            message.topic
                        )
                    }
                }
                _ => debug!(
                    "message on `{}` dropped for client `{client}`: {reason:?}",
                    message.topic
                ),
            }
        }
        other => debug!("{other:?}"),
    }
}

/// Binds every listener, then serves until `control.shutdown` becomes readable. On shutdown,
/// MQTT 5 clients get DISCONNECT 0x8B, queued writes are flushed (for up to a few seconds) and
/// the function returns `Ok(())` after logging the counters of all workers.
///
/// `config.engine.workers` workers each run on their own thread (worker 0 on the caller's) with
/// their own engine, executor and connections: an actor per core, no lock per message. Every
/// worker accepts on every listener; a connection whose CONNECT names a client owned by another
/// worker (`client_owner`) is handed to it with the bytes read so far.
pub fn run(config: ServerConfig, control: Control) -> io::Result<()> {
    if !MULTI_WORKER && config.engine.workers > 1 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "workers = {}: this build runs one worker (cargo feature `workers`)",
                config.engine.workers
            ),
        ));
    }
    let mut bound = Vec::new();
    for (spec, required) in config
        .listeners
        .iter()
        .map(|spec| (spec, true))
        .chain(config.optional_listeners.iter().map(|spec| (spec, false)))
    {
        // Certificates are read before anything listens: a bad file stops startup.
        let wrapping = Wrapping::new(spec)
            .map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?;
        match crate::listener::bind_tcp(spec.address) {
            Ok(listener) => {
                let address = listener.local_addr()?;
                bound.push((spec.clone(), address, listener, wrapping));
            }
            Err(e) if required => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot listen on {spec}: {e}"),
                ));
            }
            Err(e) => warn!("not listening on {spec}: {e}"),
        }
    }
    let addresses: Vec<ListenerSpec> = bound
        .iter()
        .map(|(spec, address, _, _)| ListenerSpec {
            address: *address,
            ..spec.clone()
        })
        .collect();
    let (listeners, wrappings): (Vec<TcpListener>, Vec<Option<Wrapping>>) = bound
        .into_iter()
        .map(|(_, _, listener, wrapping)| (listener, wrapping))
        .unzip();
    let wrappings: Arc<[Option<Wrapping>]> = wrappings.into();
    let start = std::time::Instant::now();
    let limits: Arc<[Option<Arc<ListenerLimit>>]> = addresses
        .iter()
        .map(|spec| {
            spec.max_connections.map(|max| {
                Arc::new(ListenerLimit {
                    name: spec.to_string(),
                    max: max as usize,
                    open: AtomicUsize::new(0),
                    last_log: AtomicU32::new(0),
                    unlogged: AtomicUsize::new(0),
                    start,
                })
            })
        })
        .collect();

    let workers = usize::from(config.engine.workers.max(1));
    let mut wake_readers = Vec::new();
    let mut mailboxes = Vec::new();
    for _ in 0..workers {
        let (reader, writer) = UnixStream::pair()?;
        writer.set_nonblocking(true)?;
        wake_readers.push(reader);
        mailboxes.push(Mailbox {
            queue: Mutex::new(Vec::new()),
            wake: writer,
        });
    }
    let mailboxes: Arc<[Mailbox]> = mailboxes.into();
    // The stores are opened (and a torn log tail cut) before anything is served.
    #[cfg(feature = "persist")]
    let mut stores: Vec<Option<_>> = match &config.persist {
        Some(persist) => crate::persist::open_all(persist, workers)?
            .workers
            .into_iter()
            .map(Some)
            .collect(),
        None => Vec::new(),
    };
    let gate = Arc::new(StartupGate::new(workers));
    let pass = || GatePass {
        gate: gate.clone(),
        arrived: false,
    };
    let mut threads = Vec::new();
    let mut wake_readers = wake_readers.into_iter();
    let own_wake = wake_readers
        .next()
        .ok_or_else(|| io::Error::other("no worker"))?;
    for (offset, wake) in wake_readers.enumerate().filter(|_| MULTI_WORKER) {
        let index = offset + 1;
        let setup = WorkerSetup {
            index,
            listeners: listeners
                .iter()
                .map(TcpListener::try_clone)
                .collect::<io::Result<_>>()?,
            config: config.clone(),
            mailboxes: mailboxes.clone(),
            wake,
            start,
            wrappings: wrappings.clone(),
            limits: limits.clone(),
            gate: pass(),
            #[cfg(feature = "persist")]
            store: stores.get_mut(index).and_then(Option::take),
        };
        let thread = std::thread::Builder::new()
            .name(format!("femtomq-worker-{index}"))
            .spawn(move || {
                worker_main(setup, None)
                    .map_err(|e| error!("worker {index}: {e}"))
                    .ok()
            })?;
        threads.push(thread);
    }
    let setup = WorkerSetup {
        index: 0,
        listeners,
        config,
        mailboxes: mailboxes.clone(),
        wake: own_wake,
        start,
        wrappings,
        limits,
        gate: pass(),
        #[cfg(feature = "persist")]
        store: stores.get_mut(0).and_then(Option::take),
    };
    let result = worker_main(setup, Some((control, addresses)));
    // Worker 0 has told the others to stop; wait for them.
    let mut total = Stats::default();
    for thread in threads {
        if let Ok(Some(stats)) = thread.join() {
            add_stats(&mut total, stats);
        }
    }
    add_stats(&mut total, result?);
    info!("{}", stats_line("stopped after", start.elapsed(), &total));
    Ok(())
}

/// Whether this build can run several workers (cargo feature `workers`). Without it every
/// path that hands connections, copies or mail to another worker is dead code the compiler
/// drops, with the threads and mailboxes it needs (about 16 KB of a device build).
const MULTI_WORKER: bool = cfg!(feature = "workers");

/// What a worker thread starts from.
struct WorkerSetup {
    index: usize,
    listeners: Vec<TcpListener>,
    config: ServerConfig,
    mailboxes: Arc<[Mailbox]>,
    wake: UnixStream,
    start: std::time::Instant,
    wrappings: Arc<[Option<Wrapping>]>,
    limits: Arc<[Option<Arc<ListenerLimit>>]>,
    /// Where the workers wait for each other's restored state before serving.
    gate: GatePass,
    /// This worker's store and the records it restores.
    #[cfg(feature = "persist")]
    store: Option<(crate::persist::FileStore, Vec<femtomq_core::broker::Record>)>,
}

/// Runs one worker until it is told to stop and returns its engine's counters. Worker 0 also
/// gets the daemon's controls.
fn worker_main(
    setup: WorkerSetup,
    control: Option<(Control, Vec<ListenerSpec>)>,
) -> io::Result<Stats> {
    let WorkerSetup {
        index,
        listeners,
        config,
        mailboxes,
        wake,
        start,
        wrappings,
        limits,
        gate,
        #[cfg(feature = "persist")]
        store,
    } = setup;
    let workers = mailboxes.len();
    let mut engine = config.engine;
    engine.worker = index as u16;
    engine.workers = workers as u16;
    // Each worker takes its share of the connections.
    engine.limits.max_connections = engine
        .limits
        .max_connections
        .div_ceil(workers as u32)
        .max(1);
    #[cfg(feature = "persist")]
    if let Some(persist) = &config.persist {
        engine.persistence = persist.persistence();
        // Worker 0 writes the retained messages of all (they are replicated to every worker).
        engine.persist_retained = index == 0;
    }
    let access = AccessHub::new(config.access);
    let mut broker = Broker::new(engine, config.seed.wrapping_add(index as u64));
    #[cfg(feature = "persist")]
    let store = match (store, &config.persist) {
        (Some((file, records)), Some(persist)) => {
            let now = Instant(start.elapsed().as_millis() as u64);
            Some(crate::persist::Store::start(
                &mut broker,
                file,
                records,
                persist,
                workers,
                now,
            )?)
        }
        _ => None,
    };
    if MULTI_WORKER && workers > 1 {
        let mut replication = Vec::new();
        broker.take_replication(&mut replication);
        if !replication.is_empty() {
            for (other, mailbox) in mailboxes.iter().enumerate() {
                if other != index {
                    mailbox.post(Mail::Replication(replication.clone()));
                }
            }
        }
        gate.arrive_and_wait();
        for change in mailboxes[index].take_replication() {
            broker.apply_replication(change);
        }
    } else {
        drop(gate);
    }
    let (authenticator, authorizer) = access.hooks();
    let identities = Rc::new(Identities::default());
    if wrappings.iter().flatten().any(Wrapping::uses_identity) {
        // Clients of `use_identity_as_username` listeners are named by their certificate.
        broker.set_authenticator(Box::new(IdentityAuthenticator {
            inner: authenticator,
            identities: identities.clone(),
        }));
    } else {
        broker.set_authenticator(authenticator);
    }
    broker.set_authorizer(authorizer);
    let shared = Rc::new(Shared {
        broker: RefCell::new(broker),
        scratch: RefCell::new(vec![0u8; SCRATCH]),
        connections: RefCell::new(ConnectionTable::default()),
        timer: Notify::default(),
        armed: Cell::new(None),
        start,
        open_sockets: Cell::new(0),
        trimmer: RefCell::new(crate::trim::Trimmer::default()),
        drop_warnings: RefCell::new(crate::warnings::WarningLimit::default()),
        sockets_closed: Notify::default(),
        stopping: Cell::new(false),
        access,
        worker: index,
        mailboxes,
        outbox: RefCell::new((Vec::new(), Vec::new())),
        confirmations: RefCell::new(Vec::new()),
        taken: RefCell::new(Vec::new()),
        wrappings,
        identities,
        limits,
        #[cfg(feature = "persist")]
        store: RefCell::new(store),
    });
    let executor = Rc::new(LocalExecutor::new());
    for (listener_index, listener) in listeners.into_iter().enumerate() {
        let listener = Async::new(listener)?;
        let task = accept_loop(
            shared.clone(),
            executor.clone(),
            listener,
            listener_index as u16,
        );
        executor.spawn(task);
    }
    executor.spawn(timer_loop(shared.clone()));
    #[cfg(feature = "persist")]
    if let Some(wake) = shared.store.borrow().as_ref().map(|s| s.wake.try_clone()) {
        executor.spawn(store_loop(shared.clone(), Async::new(wake?)?));
    }
    executor.spawn(access_loop(shared.clone(), executor.clone()));
    let stop = Rc::new(Notify::default());
    let wake = Async::new(wake)?;
    // Mail only ever comes from other workers.
    if MULTI_WORKER && workers > 1 {
        executor.spawn(mailbox_loop(
            shared.clone(),
            executor.clone(),
            wake,
            stop.clone(),
        ));
    }
    let shutdown = match control {
        Some((control, addresses)) => {
            let Control {
                shutdown,
                reload,
                report,
                on_reload,
                on_ready,
            } = control;
            executor.spawn(reload_loop(shared.clone(), Async::new(reload)?, on_reload));
            executor.spawn(report_loop(shared.clone(), Async::new(report)?));
            on_ready(&addresses);
            Some(Async::new(shutdown)?)
        }
        None => None,
    };
    // The thread waits in epoll itself when it has nothing to run (src/reactor.rs).
    crate::reactor::block_on(executor.run(async {
        match &shutdown {
            Some(signal) => {
                let mut byte = [0u8; 1];
                // Any byte, or the pipe closing, means stop; the other workers are told.
                let _ = (&*signal).read(&mut byte).await;
                info!("shutting down");
                for (other, mailbox) in shared.mailboxes.iter().enumerate() {
                    if MULTI_WORKER && other != shared.worker {
                        mailbox.post(Mail::Shutdown);
                    }
                }
            }
            None => stop.notified().await,
        }
        shared.stopping.set(true);
        let now = shared.now();
        #[cfg(feature = "persist")]
        if let Some(store) = shared.store.borrow_mut().as_mut() {
            // Everything written and synced; what was held for it goes out before the close.
            let mut broker = shared.broker.borrow_mut();
            let durable = store.flush(&mut broker);
            broker.durable(durable, now);
        }
        shared.broker.borrow_mut().shutdown(now);
        shared.dispatch();
        let drained = async {
            while shared.open_sockets.get() > 0 {
                shared.sockets_closed.notified().await;
            }
        };
        let late = async {
            Timer::after(SHUTDOWN_GRACE).await;
            warn!(
                "{} connections did not close in time",
                shared.open_sockets.get()
            );
        };
        future::or(drained, late).await;
    }))?;
    let stats = shared.broker.borrow().stats();
    Ok(stats)
}

/// Handles what other workers send: handed-over connections, copies for local sessions,
/// routing changes, reloads and the order to stop.
async fn mailbox_loop(
    shared: Rc<Shared>,
    executor: Rc<LocalExecutor>,
    wake: Async<UnixStream>,
    stop: Rc<Notify>,
) {
    let mut bytes = [0u8; 64];
    while let Ok(1..) = (&wake).read(&mut bytes).await {
        let now = shared.now();
        for mail in shared.mailboxes[shared.worker].take() {
            match mail {
                Mail::Handoff {
                    stream,
                    bytes,
                    peer,
                    listener,
                    layers,
                    slot,
                } => match Async::new(stream) {
                    Ok(stream) => spawn_connection(
                        &shared,
                        &executor,
                        Box::new(ConnectionStart {
                            stream,
                            peer,
                            listener,
                            initial: bytes,
                            layers,
                            slot,
                        }),
                    ),
                    Err(e) => warn!("handed-over connection from {peer}: {e}"),
                },
                Mail::Deliveries(batch) => {
                    let mut broker = shared.broker.borrow_mut();
                    for delivery in batch {
                        broker.deliver_remote(delivery, now);
                    }
                }
                Mail::Taken {
                    from,
                    publications,
                    bytes,
                } => shared
                    .broker
                    .borrow_mut()
                    .remote_taken(from, publications, bytes),
                Mail::Replication(changes) => {
                    let mut broker = shared.broker.borrow_mut();
                    for change in changes {
                        broker.apply_replication(change);
                    }
                }
                Mail::Confirmed { from, seq } => {
                    shared.broker.borrow_mut().remote_durable(from, seq, now);
                }
                Mail::Reload(config, access) => {
                    apply_reload(&shared, config, access);
                }
                Mail::Report(tally) => tally.add(shared.broker.borrow().stats()),
                Mail::Shutdown => stop.notify(),
            }
        }
        shared.dispatch();
    }
}

async fn accept_loop(
    shared: Rc<Shared>,
    executor: Rc<LocalExecutor>,
    listener: Async<TcpListener>,
    index: u16,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let max = shared.broker.borrow().config().limits.max_connections as usize;
                if shared.stopping.get() || shared.open_sockets.get() >= max + ACCEPT_SLACK {
                    debug!(
                        "refusing connection from {peer}: {} sockets open",
                        shared.open_sockets.get()
                    );
                    continue;
                }
                // A listener with its own bound refuses beyond it; the others go on.
                let slot = match shared
                    .limits
                    .get(usize::from(index))
                    .and_then(Option::as_ref)
                {
                    Some(limit) => match limit.acquire(peer) {
                        Some(slot) => slot,
                        None => continue,
                    },
                    None => Slot(None),
                };
                let _ = stream.get_ref().set_nodelay(true);
                let layers = match shared.new_layers(index) {
                    Ok(layers) => layers,
                    Err(e) => {
                        warn!("connection from {peer}: {e}");
                        continue;
                    }
                };
                spawn_connection(
                    &shared,
                    &executor,
                    Box::new(ConnectionStart {
                        stream,
                        peer,
                        listener: index,
                        initial: Vec::new(),
                        layers,
                        slot,
                    }),
                );
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                error!("accept failed: {e}");
                Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What a connection task starts from. Boxed: an async fn keeps its arguments beside the
/// locals they are moved into, so passed one by one they would take room twice in the future of
/// every idle connection (measured: 680 B per task with them, see BENCHMARKS.md).
struct ConnectionStart {
    stream: Async<TcpStream>,
    peer: SocketAddr,
    listener: u16,
    /// Bytes already read from it (by the worker that handed it over).
    initial: Vec<u8>,
    layers: Option<Box<Layers>>,
    /// Its place on its listener, given back when it ends.
    slot: Slot,
}

impl ConnectionStart {
    /// Moves the start out of its box and frees the box at once (moving out of `*start` in
    /// the task would keep the allocation until the connection ends). The box is the point:
    /// it keeps the task's argument one pointer wide.
    #[allow(clippy::boxed_local)]
    fn unbox(start: Box<ConnectionStart>) -> ConnectionStart {
        *start
    }
}

/// Starts the task serving a connection.
fn spawn_connection(
    shared: &Rc<Shared>,
    executor: &Rc<LocalExecutor>,
    start: Box<ConnectionStart>,
) {
    shared.open_sockets.set(shared.open_sockets.get() + 1);
    shared
        .trimmer
        .borrow_mut()
        .update(shared.open_sockets.get());
    executor.spawn_unboxed(ConnectionTask {
        shared: shared.clone(),
        stage: Stage::Start(start),
    });
}

/// Applies a reloaded configuration to this worker (keeping its place among the workers).
fn apply_reload(shared: &Shared, mut config: Config, access: AccessRules) {
    let workers = shared.mailboxes.len();
    config.worker = shared.worker as u16;
    config.workers = workers as u16;
    config.limits.max_connections = config
        .limits
        .max_connections
        .div_ceil(workers as u32)
        .max(1);
    // Persistence is chosen at startup; a reload does not turn it on or off.
    let current = *shared.broker.borrow().config();
    config.persistence = current.persistence;
    config.persist_retained = current.persist_retained;
    shared.broker.borrow_mut().set_config(config);
    shared.access.replace(access);
}

/// Applies what the store's writer reports: records durable (held acknowledgements go out),
/// the store full or not, compaction wanted.
#[cfg(feature = "persist")]
async fn store_loop(shared: Rc<Shared>, wake: Async<UnixStream>) {
    let mut bytes = [0u8; 64];
    while let Ok(1..) = (&wake).read(&mut bytes).await {
        let now = shared.now();
        if let Some(store) = shared.store.borrow_mut().as_mut() {
            store.update(&mut shared.broker.borrow_mut(), now);
        }
        shared.dispatch();
    }
}

async fn timer_loop(shared: Rc<Shared>) {
    loop {
        let next = shared.broker.borrow().poll_timeout();
        shared.armed.set(next);
        match next {
            Some(at) => {
                let deadline = shared.deadline(at);
                let fired = async {
                    Timer::at(deadline).await;
                    true
                };
                let changed = async {
                    shared.timer.notified().await;
                    false
                };
                if future::or(fired, changed).await {
                    let now = shared.now().max(at);
                    shared.broker.borrow_mut().handle_timeout(now);
                    shared.dispatch();
                }
            }
            None => shared.timer.notified().await,
        }
    }
}

async fn reload_loop(
    shared: Rc<Shared>,
    reload: Async<UnixStream>,
    mut on_reload: Box<dyn FnMut() -> ReloadOutcome>,
) {
    let mut byte = [0u8; 1];
    while let Ok(1..) = (&reload).read(&mut byte).await {
        match on_reload() {
            ReloadOutcome::Apply(config, access) => {
                for (other, mailbox) in shared.mailboxes.iter().enumerate() {
                    if MULTI_WORKER && other != shared.worker {
                        mailbox.post(Mail::Reload(config, access.clone()));
                    }
                }
                apply_reload(&shared, config, access);
                // The workers share the listeners' TLS settings: one re-read serves them all.
                for wrapping in shared.wrappings.iter().flatten() {
                    if let Err(e) = wrapping.reload() {
                        error!("{e}; keeping the previous certificates");
                    }
                }
                info!("configuration reloaded");
            }
            ReloadOutcome::Keep => warn!("reload failed: keeping the current configuration"),
        }
        shared.dispatch();
    }
}

/// Logs the counters of all workers each time `report` becomes readable: the others are asked
/// by mail, and the last to add its own logs the sum.
async fn report_loop(shared: Rc<Shared>, report: Async<UnixStream>) {
    let mut byte = [0u8; 1];
    while let Ok(1..) = (&report).read(&mut byte).await {
        let tally = Arc::new(Tally {
            sum: Mutex::new((Stats::default(), shared.mailboxes.len())),
            uptime: shared.start.elapsed(),
        });
        for (other, mailbox) in shared.mailboxes.iter().enumerate() {
            if MULTI_WORKER && other != shared.worker {
                mailbox.post(Mail::Report(tally.clone()));
            }
        }
        tally.add(shared.broker.borrow().stats());
    }
}

/// Runs the questions the authenticator and authorizer left pending (HTTP callouts), each in
/// its own task, and hands the answers to the engine.
async fn access_loop(shared: Rc<Shared>, executor: Rc<LocalExecutor>) {
    loop {
        shared.access.jobs_ready.notified().await;
        while let Some(job) = shared.access.next_job() {
            let peer = shared.access.peer_address(job.conn);
            let shared = shared.clone();
            executor.spawn(async move {
                let answer = shared.access.answer(job, peer).await;
                let now = shared.now();
                match answer {
                    Answer::Auth(conn, decision) => {
                        shared.broker.borrow_mut().resolve_auth(conn, decision, now)
                    }
                    Answer::Access(conn, decision) => shared
                        .broker
                        .borrow_mut()
                        .resolve_access(conn, decision, now),
                }
                shared.dispatch();
            });
        }
    }
}

/// Serves one connection until either side closes it.
/// A connection's task: placed on its worker, served, closed.
///
/// Written by hand, like [`Pump`], so that an idle connection's task holds the pump and one
/// pointer: as async fns, the task kept their arguments and every stage's state side by side
/// (200 B, and 432 B before the pump was written by hand).
struct ConnectionTask {
    shared: Rc<Shared>,
    stage: Stage,
}

/// Where a [`ConnectionTask`] is.
enum Stage {
    Start(Box<ConnectionStart>),
    /// Among several workers: reading the CONNECT to find the worker that owns its client
    /// (boxed: large, and done with once the connection is placed).
    Routing(Pin<Box<dyn Future<Output = Option<Box<ConnectionStart>>>>>),
    Serving(Pump),
    /// After a refused TLS or WebSocket handshake: the client is given time to read the answer.
    Lingering(Pin<Box<dyn Future<Output = Pump>>>),
    Done,
}

impl Future for ConnectionTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let task = &mut *self;
        loop {
            match std::mem::replace(&mut task.stage, Stage::Done) {
                Stage::Start(start) => {
                    task.stage = if MULTI_WORKER && task.shared.mailboxes.len() > 1 {
                        // With several workers, the session's owner serves the connection.
                        Stage::Routing(Box::pin(route_connection(task.shared.clone(), start)))
                    } else {
                        Stage::Serving(task.shared.open_connection(start))
                    };
                }
                Stage::Routing(mut routing) => match routing.as_mut().poll(cx) {
                    Poll::Pending => {
                        task.stage = Stage::Routing(routing);
                        return Poll::Pending;
                    }
                    Poll::Ready(Some(start)) => {
                        task.stage = Stage::Serving(task.shared.open_connection(start));
                    }
                    Poll::Ready(None) => {}
                },
                Stage::Serving(mut pump) => match pump.poll(&task.shared, cx) {
                    Poll::Pending => {
                        task.stage = Stage::Serving(pump);
                        return Poll::Pending;
                    }
                    Poll::Ready(pumped) => {
                        let linger = match pumped {
                            Err(e) => {
                                let peer = task.shared.access.peer_address(pump.conn);
                                debug!("connection from {}: {e}", display_peer(peer));
                                false
                            }
                            Ok(()) => pump.layers.as_ref().is_some_and(|layers| layers.failed()),
                        };
                        if linger {
                            task.stage = Stage::Lingering(Box::pin(async move {
                                linger_close(&pump.stream).await;
                                pump
                            }));
                        } else {
                            task.shared.close_connection(pump);
                        }
                    }
                },
                Stage::Lingering(mut lingering) => match lingering.as_mut().poll(cx) {
                    Poll::Pending => {
                        task.stage = Stage::Lingering(lingering);
                        return Poll::Pending;
                    }
                    Poll::Ready(pump) => task.shared.close_connection(pump),
                },
                Stage::Done => {
                    let shared = &task.shared;
                    shared.open_sockets.set(shared.open_sockets.get() - 1);
                    shared
                        .trimmer
                        .borrow_mut()
                        .update(shared.open_sockets.get());
                    shared.sockets_closed.notify();
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// Reads the first packet of a connection on a worker among several and hands the connection
/// to the worker that owns its client; `Some` when it stays here.
async fn route_connection(
    shared: Rc<Shared>,
    mut start: Box<ConnectionStart>,
) -> Option<Box<ConnectionStart>> {
    let ConnectionStart {
        stream,
        peer,
        initial,
        layers,
        ..
    } = &mut *start;
    match first_packet(&shared, stream, initial, layers.as_deref_mut(), *peer).await {
        Route::Here => Some(start),
        Route::Closed => {
            if start.layers.as_ref().is_some_and(|layers| layers.failed()) {
                linger_close(&start.stream).await;
            }
            None
        }
        Route::Worker(owner) => {
            let ConnectionStart {
                stream,
                peer,
                listener,
                initial,
                layers,
                slot,
            } = ConnectionStart::unbox(start);
            match stream.into_inner() {
                Ok(stream) => shared.mailboxes[owner].post(Mail::Handoff {
                    stream,
                    bytes: initial,
                    peer,
                    listener,
                    layers,
                    slot,
                }),
                Err(e) => debug!("connection from {peer}: {e}"),
            }
            None
        }
    }
}

impl Shared {
    /// Opens the engine's side of a connection placed on this worker.
    fn open_connection(&self, start: Box<ConnectionStart>) -> Pump {
        let ConnectionStart {
            stream,
            peer,
            listener,
            initial,
            mut layers,
            slot,
        } = ConnectionStart::unbox(start);
        let conn = self.broker.borrow_mut().open(listener, self.now());
        self.connections.borrow_mut().insert(conn, stream.wakeup());
        self.access.opened(conn, peer);
        debug!("connection from {peer}");
        if let Some(layers) = &mut layers {
            self.note_identity(conn, listener, layers);
            if let Some(description) = layers.just_established() {
                debug!("connection from {peer}: {description}");
            }
        }
        Pump {
            stream,
            conn,
            pending: PendingInput::new(initial),
            layers,
            _slot: slot,
            closing_sent: false,
        }
    }

    /// Closes the socket and the engine's side of a connection that was served here.
    fn close_connection(&self, pump: Pump) {
        let _ = pump.stream.get_ref().shutdown(std::net::Shutdown::Both);
        let conn = pump.conn;
        self.broker.borrow_mut().closed(conn, self.now());
        self.dispatch();
        self.connections.borrow_mut().remove(&conn);
        self.access.closed(conn);
        self.identities.remove(conn);
    }
}

/// Where a new connection belongs.
enum Route {
    /// This worker serves it (its client is ours, or it is not a valid CONNECT: the engine answers).
    Here,
    /// Another worker owns its client.
    Worker(usize),
    /// It closed, or sent no whole packet within the connect timeout.
    Closed,
}

/// Reads until `pending` holds the first whole packet and says which worker owns its client.
///
/// On a TLS or WebSocket listener the bytes go through `layers`, and their handshake answers are
/// written as they come.
async fn first_packet(
    shared: &Shared,
    stream: &Async<TcpStream>,
    pending: &mut Vec<u8>,
    mut layers: Option<&mut Layers>,
    peer: SocketAddr,
) -> Route {
    let (max_packet, timeout) = {
        let broker = shared.broker.borrow();
        let config = broker.config();
        (
            config.limits.max_packet_size as usize,
            Duration::from_millis(config.connect_timeout_ms),
        )
    };
    let give_up = async {
        Timer::after(timeout).await;
        Route::Closed
    };
    let read = async {
        loop {
            match codec::frame(pending, max_packet) {
                Ok(Frame::Complete { len, .. }) => {
                    return match codec::decode_packet(&pending[..len], ProtocolVersion::V5) {
                        Ok(Packet::Connect(connect)) if !connect.client_id.is_empty() => {
                            let owner = usize::from(client_owner(
                                connect.client_id,
                                shared.mailboxes.len() as u16,
                            ));
                            if owner == shared.worker {
                                Route::Here
                            } else {
                                Route::Worker(owner)
                            }
                        }
                        _ => Route::Here,
                    };
                }
                Ok(Frame::Incomplete { .. }) => {}
                // Malformed or too large: the engine gives the answer the protocol asks for.
                Err(_) => return Route::Here,
            }
            let mut chunk = [0u8; 1024];
            let mut reader = stream;
            let count = match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return Route::Closed,
                Ok(count) => count,
            };
            match layers.as_deref_mut() {
                None => pending.extend_from_slice(&chunk[..count]),
                Some(layers) => {
                    let received = layers.receive(&chunk[..count], pending);
                    let mut wire = Vec::new();
                    layers.take_output(&mut wire);
                    let mut writer = stream;
                    if writer.write_all(&wire).await.is_err() {
                        return Route::Closed;
                    }
                    if let Err(e) = received {
                        warn!("connection from {peer}: {e}");
                        return Route::Closed;
                    }
                    if layers.finished() {
                        return Route::Closed;
                    }
                }
            }
        }
    };
    future::or(read, give_up).await
}

/// What one turn of reading found.
enum Reading {
    /// Bytes were handled (or the socket had none after all).
    Progress,
    /// The peer closed its side.
    Closed,
}

impl Shared {
    /// Reads what `stream` has (a few reads at most, without waiting) and hands every whole
    /// packet to the engine. `pending` keeps the start of a packet that is not complete yet.
    fn read_available(
        &self,
        stream: &Async<TcpStream>,
        conn: ConnId,
        input: &mut PendingInput,
    ) -> io::Result<Reading> {
        let max_packet = self.broker.borrow().config().limits.max_packet_size as usize;
        let mut scratch = self.scratch.borrow_mut();
        for _ in 0..READS_PER_TURN {
            let broker = self.broker.borrow();
            if broker.is_closing(conn) || broker.is_paused(conn) {
                return Ok(Reading::Progress);
            }
            drop(broker);
            let result = if input.is_empty() {
                // The common case: read into the shared buffer, keep only a partial tail.
                match stream.read_now(&mut scratch[..]) {
                    Ok(0) => return Ok(Reading::Closed),
                    Ok(count) => {
                        let used = self.broker.borrow_mut().handle_input(
                            conn,
                            &scratch[..count],
                            self.now(),
                        );
                        if used < count {
                            input.buffer().extend_from_slice(&scratch[used..count]);
                        }
                        Ok(count)
                    }
                    Err(e) => Err(e),
                }
            } else {
                let pending = input.buffer();
                // A packet is in hand: grow its buffer towards the size the framer announces.
                let needed = match femtomq_core::codec::frame(pending, max_packet.saturating_add(8))
                {
                    Ok(femtomq_core::codec::Frame::Incomplete { needed }) => needed,
                    _ => 1,
                };
                let start = pending.len();
                pending.resize(start + needed.max(PENDING_STEP), 0);
                match stream.read_now(&mut pending[start..]) {
                    Ok(0) => return Ok(Reading::Closed),
                    Ok(count) => {
                        pending.truncate(start + count);
                        let used = self
                            .broker
                            .borrow_mut()
                            .handle_input(conn, pending, self.now());
                        pending.drain(..used);
                        Ok(count)
                    }
                    Err(e) => {
                        pending.truncate(start);
                        Err(e)
                    }
                }
            };
            match result {
                Ok(count) if count < SCRATCH => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        input.release_if_empty();
        Ok(Reading::Progress)
    }
}

impl Shared {
    /// The TLS/WebSocket layers of a new connection on listener `index` (`None`: plain TCP).
    fn new_layers(&self, index: u16) -> Result<Option<Box<Layers>>, String> {
        match self
            .wrappings
            .get(usize::from(index))
            .and_then(Option::as_ref)
        {
            Some(wrapping) => {
                // A frame never needs to be larger than the largest packet (plus its header).
                let max_packet = self.broker.borrow().config().limits.max_packet_size;
                wrapping
                    .layers(u64::from(max_packet) + 16)
                    .map(|layers| Some(Box::new(layers)))
            }
            None => Ok(None),
        }
    }

    /// Records the certificate name of a `use_identity_as_username` connection before any of
    /// its MQTT bytes reach the engine (none, and the client is refused, until the TLS
    /// handshake is over).
    fn note_identity(&self, conn: ConnId, listener: u16, layers: &mut Layers) {
        let uses_identity = self
            .wrappings
            .get(usize::from(listener))
            .and_then(Option::as_ref)
            .is_some_and(Wrapping::uses_identity);
        if uses_identity {
            let identity = layers.identity().unwrap_or(None);
            self.identities.set(conn, identity);
        }
    }

    /// Like [`Shared::read_available`] for a TLS or WebSocket connection: the bytes read go
    /// through `layers`, and the MQTT bytes they carry to the engine. A failed handshake or a
    /// protocol error is logged; the answer for the client is then in the layers' output and
    /// [`Layers::finished`] is true.
    fn read_layered(
        &self,
        stream: &Async<TcpStream>,
        conn: ConnId,
        input: &mut PendingInput,
        layers: &mut Layers,
    ) -> io::Result<Reading> {
        let mut scratch = self.scratch.borrow_mut();
        // A TLS or WebSocket connection has its layers' buffers anyway.
        let pending = input.buffer();
        for _ in 0..READS_PER_TURN {
            let broker = self.broker.borrow();
            if broker.is_closing(conn) || broker.is_paused(conn) || layers.finished() {
                return Ok(Reading::Progress);
            }
            drop(broker);
            let count = match stream.read_now(&mut scratch[..]) {
                Ok(0) => return Ok(Reading::Closed),
                Ok(count) => count,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let received = layers.receive(&scratch[..count], pending);
            if let Some(identity) = layers.identity() {
                self.identities.set(conn, identity);
            }
            if let Some(description) = layers.just_established() {
                let peer = self.access.peer_address(conn);
                debug!("connection from {}: {description}", display_peer(peer));
            }
            if !pending.is_empty() {
                let used = self
                    .broker
                    .borrow_mut()
                    .handle_input(conn, pending, self.now());
                pending.drain(..used);
            }
            if let Err(e) = received {
                let peer = self.access.peer_address(conn);
                warn!("connection from {}: {e}", display_peer(peer));
                break;
            }
            if count < SCRATCH {
                break;
            }
        }
        input.release_if_empty();
        Ok(Reading::Progress)
    }
}

/// After refusing a TLS or WebSocket handshake: stops writing, then reads and drops what the
/// client still sends (up to 64 KB, for a second at most), so that closing does not reset the
/// connection before the client has read the answer (an HTTP status, a TLS alert).
async fn linger_close(stream: &Async<TcpStream>) {
    let _ = stream.get_ref().shutdown(std::net::Shutdown::Write);
    let drain = async {
        let mut buffer = [0u8; 4096];
        let mut left = 64 * 1024usize;
        let mut reader = stream;
        while left > 0 {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(count) => left = left.saturating_sub(count),
            }
        }
    };
    let give_up = async {
        Timer::after(Duration::from_secs(1)).await;
    };
    future::or(drain, give_up).await;
}

fn display_peer(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "?".to_string(), |peer| peer.to_string())
}

/// A connection being served: the engine's output written to the socket, the socket's input
/// handed to the engine, until either side closes.
///
/// A hand-written future rather than an async fn: an idle connection's task then holds these
/// fields only, where the async fn's state machine kept room for every nested future beside
/// them (432 B per idle connection, see BENCHMARKS.md).
/// The start of a packet not complete yet, and packets left over while input is paused: one
/// pointer in every connection's task (most hold nothing most of the time), where a `Vec` took
/// three; the buffer and its box exist only while there are bytes, or up to [`KEEP_BUFFER`] of
/// room for the next partial packet.
#[derive(Default)]
#[allow(clippy::box_collection)] // The box is the point: 8 B in the task instead of 24.
struct PendingInput(Option<Box<Vec<u8>>>);

impl PendingInput {
    fn new(bytes: Vec<u8>) -> PendingInput {
        PendingInput((!bytes.is_empty()).then(|| Box::new(bytes)))
    }

    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|bytes| bytes.is_empty())
    }

    fn as_slice(&self) -> &[u8] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    /// The buffer, created on first use.
    fn buffer(&mut self) -> &mut Vec<u8> {
        self.0.get_or_insert_with(Default::default)
    }

    /// Gives the memory back when nothing is pending, keeping a buffer of up to
    /// [`KEEP_BUFFER`] bytes for the next partial packet.
    fn release_if_empty(&mut self) {
        if self.0.as_ref().is_some_and(|bytes| {
            bytes.is_empty() && (bytes.capacity() == 0 || bytes.capacity() > KEEP_BUFFER)
        }) {
            self.0 = None;
        }
    }
}

struct Pump {
    stream: Async<TcpStream>,
    conn: ConnId,
    pending: PendingInput,
    layers: Option<Box<Layers>>,
    /// Its place on its listener, given back when the connection ends.
    _slot: Slot,
    /// The TLS close or WebSocket close frame was queued.
    closing_sent: bool,
}

impl Pump {
    /// A write failed (typically ECONNRESET: the client closed its socket with some of our
    /// output unread, so its kernel reset the connection). What it sent before the reset is
    /// still readable and still counts: the PUBACKs of messages it received (else they are
    /// sent again to its next connection) and its DISCONNECT (else its will is published).
    /// So the input is handed to the engine before the connection is given up; a connection
    /// the engine then closes (a DISCONNECT was read) ends normally.
    fn read_after_write_failed(&mut self, shared: &Shared, failure: io::Error) -> io::Result<()> {
        let read = match self.layers.as_mut() {
            Some(layers) => shared.read_layered(&self.stream, self.conn, &mut self.pending, layers),
            None => shared.read_available(&self.stream, self.conn, &mut self.pending),
        };
        shared.dispatch();
        if read.is_ok() && shared.broker.borrow().is_closing(self.conn) {
            return Ok(());
        }
        Err(failure)
    }

    /// Runs the connection until it closes (`Ok`) or its socket fails.
    fn poll(&mut self, shared: &Shared, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let conn = self.conn;
        loop {
            // What is ready goes out in one write: through TLS or WebSocket the layers' bytes,
            // otherwise the engine's output straight from its buffer (no copy, and no second
            // buffer per connection).
            let written = match self.layers.as_deref() {
                Some(layers) => {
                    let wire = layers.wire();
                    (!wire.is_empty()).then(|| self.stream.poll_write_now(cx, wire))
                }
                None => {
                    let broker = shared.broker.borrow();
                    let output = broker.output(conn);
                    (!output.is_empty()).then(|| self.stream.poll_write_now(cx, output))
                }
            };
            match written {
                None => {}
                Some(Poll::Ready(Ok(0))) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Some(Poll::Ready(Ok(count))) => {
                    // The engine moves messages that waited for room into what this frees. After
                    // a partial write, the next attempt finds the socket full.
                    match self.layers.as_deref_mut() {
                        Some(layers) => layers.wire_written(count),
                        None => {
                            shared
                                .broker
                                .borrow_mut()
                                .consume_output(conn, count, shared.now())
                        }
                    }
                    continue;
                }
                Some(Poll::Ready(Err(e))) => {
                    return Poll::Ready(self.read_after_write_failed(shared, e));
                }
                Some(Poll::Pending) => {
                    // What the writes so far made the engine do (messages moved into the room
                    // they freed, a publisher let go) goes to the other connections now.
                    shared.dispatch();
                    // A client that stops reading must not keep a closing connection alive.
                    while self.stream.poll_woken(cx).is_ready() {
                        if shared.broker.borrow().is_closing(conn) {
                            return Poll::Ready(Ok(()));
                        }
                    }
                    return Poll::Pending;
                }
            }
            shared.dispatch();
            if let Some(layers) = self.layers.as_deref_mut() {
                // Through TLS and WebSocket: the engine's bytes in one frame, then the records.
                let mut broker = shared.broker.borrow_mut();
                let output = broker.output(conn);
                if !output.is_empty() {
                    let len = output.len();
                    layers.send(output);
                    broker.consume_output(conn, len, shared.now());
                }
                if !self.closing_sent && broker.is_closing(conn) {
                    self.closing_sent = true;
                    layers.close(shared.stopping.get());
                }
                drop(broker);
                if layers.gather_wire() {
                    continue;
                }
            } else if !shared.broker.borrow().output(conn).is_empty() {
                continue;
            }
            if shared.broker.borrow().is_closing(conn)
                || self.layers.as_ref().is_some_and(|layers| layers.finished())
            {
                return Poll::Ready(Ok(()));
            }
            // A paused connection (flow control) is not read until the engine wakes it.
            let paused = shared.broker.borrow().is_paused(conn);
            // Packets left over when the engine paused this connection are handled first: the
            // socket may have nothing more to say, so it would never become readable for them.
            if !paused && !self.pending.is_empty() {
                let used = shared.broker.borrow_mut().handle_input(
                    conn,
                    self.pending.as_slice(),
                    shared.now(),
                );
                if used > 0 {
                    self.pending.buffer().drain(..used);
                    shared.dispatch();
                    continue;
                }
            }
            if self.stream.poll_woken(cx).is_ready() {
                continue;
            }
            if paused {
                return Poll::Pending;
            }
            match self.stream.poll_readable(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let reading = match self.layers.as_mut() {
                Some(layers) => {
                    shared.read_layered(&self.stream, conn, &mut self.pending, layers)?
                }
                None => shared.read_available(&self.stream, conn, &mut self.pending)?,
            };
            shared.dispatch();
            if let Reading::Closed = reading {
                return Poll::Ready(Ok(()));
            }
            // Let the connections this one wrote to, and the others, have their turn.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
    }
}

#[cfg(test)]
mod tests {
    /// What every idle connection's task holds (besides the executor's header): a growth here
    /// is a growth of the memory per connection, so it is a deliberate change of this bound.
    #[test]
    fn an_idle_connection_task_stays_small() {
        assert!(std::mem::size_of::<super::Pump>() <= 48);
        // With async-task's header (40 B) and the run queue's pointer, the task is then 104 B:
        // glibc's 112 B chunk (104 + 8), musl's mallocng 108 B class. It was 128 B (144 and
        // 140) before the pending input became one pointer and the socket's readiness moved
        // into the reactor's table.
        assert!(std::mem::size_of::<super::ConnectionTask>() <= 56);
    }
}
