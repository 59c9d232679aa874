//! The event loop: listeners, connections, timers and control, on one thread.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use async_executor::LocalExecutor;
use async_io::{Async, Timer};
use std::io::Read as _;

use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
use log::{debug, error, info, warn};

use femtomq_core::Instant;
use femtomq_core::broker::{Broker, CloseCause, Config, ConnId, DropReason, Event};

use crate::auth::{AccessHub, AccessRules, Answer};
use crate::listener::{ListenerSpec, Transport};
use crate::notify::Notify;

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
/// An output buffer larger than this is released after it was written.
const KEEP_OUTPUT_BUFFER: usize = 4 * 1024;
/// How long shutdown waits for connections to flush their last packets.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Sockets accepted beyond `max_connections` (to answer CONNACK 0x97) before new ones are
/// closed at once.
const ACCEPT_SLACK: usize = 64;

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
    /// Re-reads the configuration on reload.
    pub on_reload: Box<dyn FnMut() -> ReloadOutcome>,
    /// Called once every listener is open, with the listeners as bound (port 0 resolved).
    pub on_ready: ReadyCallback,
}

struct ConnectionEntry {
    notify: Rc<Notify>,
    peer: SocketAddr,
}

/// State shared by the tasks of the loop (all on one thread).
struct Shared {
    broker: RefCell<Broker>,
    scratch: RefCell<Vec<u8>>,
    connections: RefCell<HashMap<ConnId, ConnectionEntry>>,
    timer: Notify,
    armed: Cell<Option<Instant>>,
    start: std::time::Instant,
    open_sockets: Cell<usize>,
    sockets_closed: Notify,
    stopping: Cell<bool>,
    access: Rc<AccessHub>,
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
        let connections = self.connections.borrow();
        while let Some(conn) = broker.poll_writable() {
            if let Some(entry) = connections.get(&conn) {
                entry.notify.notify();
            }
        }
        while let Some(event) = broker.poll_event() {
            log_event(&broker, &connections, &event);
        }
        if broker.poll_timeout() != self.armed.get() {
            self.timer.notify();
        }
    }
}

fn log_event(broker: &Broker, connections: &HashMap<ConnId, ConnectionEntry>, event: &Event) {
    let peer = |conn: &ConnId| {
        connections
            .get(conn)
            .map(|e| e.peer.to_string())
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
                    warn!(
                        "message on `{}` dropped for client `{client}`: {reason:?}",
                        message.topic
                    )
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
/// the function returns `Ok(())`.
pub fn run(config: ServerConfig, control: Control) -> io::Result<()> {
    let mut bound = Vec::new();
    for (spec, required) in config
        .listeners
        .iter()
        .map(|spec| (spec, true))
        .chain(config.optional_listeners.iter().map(|spec| (spec, false)))
    {
        if spec.transport != Transport::Tcp {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("listener {spec}: TLS and WebSocket listeners are not implemented yet"),
            ));
        }
        match TcpListener::bind(spec.address).and_then(Async::new) {
            Ok(listener) => {
                let address = listener.get_ref().local_addr()?;
                bound.push((spec.clone(), address, listener));
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
        .map(|(spec, address, _)| ListenerSpec {
            address: *address,
            ..spec.clone()
        })
        .collect();

    let access = AccessHub::new(config.access);
    let mut broker = Broker::new(config.engine, config.seed);
    let (authenticator, authorizer) = access.hooks();
    broker.set_authenticator(authenticator);
    broker.set_authorizer(authorizer);
    let shared = Rc::new(Shared {
        broker: RefCell::new(broker),
        scratch: RefCell::new(vec![0u8; SCRATCH]),
        connections: RefCell::new(HashMap::new()),
        timer: Notify::default(),
        armed: Cell::new(None),
        start: std::time::Instant::now(),
        open_sockets: Cell::new(0),
        sockets_closed: Notify::default(),
        stopping: Cell::new(false),
        access,
    });
    let executor = Rc::new(LocalExecutor::new());
    for (index, (_, _, listener)) in bound.into_iter().enumerate() {
        let task = accept_loop(shared.clone(), executor.clone(), listener, index as u16);
        executor.spawn(task).detach();
    }
    executor.spawn(timer_loop(shared.clone())).detach();
    executor
        .spawn(access_loop(shared.clone(), executor.clone()))
        .detach();
    let Control {
        shutdown,
        reload,
        on_reload,
        on_ready,
    } = control;
    executor
        .spawn(reload_loop(shared.clone(), Async::new(reload)?, on_reload))
        .detach();
    on_ready(&addresses);

    let shutdown = Async::new(shutdown)?;
    // async_io::block_on makes this thread wait in epoll itself when it has nothing to run;
    // futures_lite's block_on would leave the reactor to async-io's helper thread, which then
    // wakes this one through a futex for every event (measured: half the CPU in context switches).
    async_io::block_on(executor.run(async {
        let mut byte = [0u8; 1];
        // Any byte, or the pipe closing, means stop.
        let _ = (&shutdown).read(&mut byte).await;
        info!("shutting down");
        shared.stopping.set(true);
        let now = shared.now();
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
    }));
    Ok(())
}

async fn accept_loop(
    shared: Rc<Shared>,
    executor: Rc<LocalExecutor<'static>>,
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
                let _ = stream.get_ref().set_nodelay(true);
                shared.open_sockets.set(shared.open_sockets.get() + 1);
                let shared = shared.clone();
                executor
                    .spawn(async move {
                        serve_connection(&shared, stream, peer, index).await;
                        shared.open_sockets.set(shared.open_sockets.get() - 1);
                        shared.sockets_closed.notify();
                    })
                    .detach();
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                error!("accept failed: {e}");
                Timer::after(Duration::from_millis(100)).await;
            }
        }
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
                shared.broker.borrow_mut().set_config(config);
                shared.access.replace(access);
                info!("configuration reloaded");
            }
            ReloadOutcome::Keep => warn!("reload failed: keeping the current configuration"),
        }
        shared.dispatch();
    }
}

/// Runs the questions the authenticator and authorizer left pending (HTTP callouts), each in
/// its own task, and hands the answers to the engine.
async fn access_loop(shared: Rc<Shared>, executor: Rc<LocalExecutor<'static>>) {
    loop {
        shared.access.jobs_ready.notified().await;
        while let Some(job) = shared.access.next_job() {
            let peer = shared.connections.borrow().get(&job.conn).map(|e| e.peer);
            let shared = shared.clone();
            executor
                .spawn(async move {
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
                })
                .detach();
        }
    }
}

/// Serves one connection until either side closes it.
async fn serve_connection(
    shared: &Shared,
    stream: Async<TcpStream>,
    peer: SocketAddr,
    listener: u16,
) {
    let notify = Rc::new(Notify::default());
    let conn = shared.broker.borrow_mut().open(listener, shared.now());
    shared.connections.borrow_mut().insert(
        conn,
        ConnectionEntry {
            notify: notify.clone(),
            peer,
        },
    );
    debug!("connection from {peer}");
    if let Err(e) = pump_connection(shared, &stream, conn, &notify).await {
        debug!("connection from {peer}: {e}");
    }
    let _ = stream.get_ref().shutdown(std::net::Shutdown::Both);
    shared.broker.borrow_mut().closed(conn, shared.now());
    shared.dispatch();
    shared.connections.borrow_mut().remove(&conn);
}

enum Wake {
    Readable,
    Notified,
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
        pending: &mut Vec<u8>,
    ) -> io::Result<Reading> {
        let max_packet = self.broker.borrow().config().limits.max_packet_size as usize;
        let mut scratch = self.scratch.borrow_mut();
        for _ in 0..READS_PER_TURN {
            let broker = self.broker.borrow();
            if broker.is_closing(conn) || broker.is_paused(conn) {
                return Ok(Reading::Progress);
            }
            drop(broker);
            let result = if pending.is_empty() {
                // The common case: read into the shared buffer, keep only a partial tail.
                match stream.get_ref().read(&mut scratch[..]) {
                    Ok(0) => return Ok(Reading::Closed),
                    Ok(count) => {
                        let used = self.broker.borrow_mut().handle_input(
                            conn,
                            &scratch[..count],
                            self.now(),
                        );
                        pending.extend_from_slice(&scratch[used..count]);
                        Ok(count)
                    }
                    Err(e) => Err(e),
                }
            } else {
                // A packet is in hand: grow its buffer towards the size the framer announces.
                let needed = match femtomq_core::codec::frame(pending, max_packet.saturating_add(8))
                {
                    Ok(femtomq_core::codec::Frame::Incomplete { needed }) => needed,
                    _ => 1,
                };
                let start = pending.len();
                pending.resize(start + needed.max(PENDING_STEP), 0);
                match stream.get_ref().read(&mut pending[start..]) {
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
        if pending.is_empty() && pending.capacity() > KEEP_BUFFER {
            *pending = Vec::new();
        }
        Ok(Reading::Progress)
    }
}

async fn pump_connection(
    shared: &Shared,
    stream: &Async<TcpStream>,
    conn: ConnId,
    notify: &Notify,
) -> io::Result<()> {
    let mut pending = Vec::new();
    let mut output = Vec::new();
    loop {
        // Everything the engine queued for this connection goes out in one write.
        shared
            .broker
            .borrow_mut()
            .swap_output(conn, &mut output, shared.now());
        shared.dispatch();
        if !output.is_empty() {
            let written = async {
                let mut writer = stream;
                writer.write_all(&output).await.map(|()| true)
            };
            let abandoned = async {
                // A client that stops reading must not keep a closing connection alive.
                loop {
                    notify.notified().await;
                    if shared.broker.borrow().is_closing(conn) {
                        return Ok(false);
                    }
                }
            };
            if !future::or(written, abandoned).await? {
                return Ok(());
            }
            // The buffer goes back to the engine for the next packets: keep a small one only, so
            // that thousands of connections that once sent a large packet do not hold it.
            if output.capacity() > KEEP_OUTPUT_BUFFER {
                output = Vec::new();
            }
            continue;
        }
        if shared.broker.borrow().is_closing(conn) {
            return Ok(());
        }
        // A paused connection (flow control) is not read until the engine wakes it.
        let paused = shared.broker.borrow().is_paused(conn);
        // Packets left over when the engine paused this connection are handled first: the
        // socket may have nothing more to say, so it would never become readable for them.
        if !paused && !pending.is_empty() {
            let used = shared
                .broker
                .borrow_mut()
                .handle_input(conn, &pending, shared.now());
            if used > 0 {
                pending.drain(..used);
                shared.dispatch();
                continue;
            }
        }
        let readable = async {
            if paused {
                future::pending::<()>().await;
            }
            stream.readable().await.map(|()| Wake::Readable)
        };
        let notified = async {
            notify.notified().await;
            Ok(Wake::Notified)
        };
        match future::or(readable, notified).await? {
            Wake::Readable => {
                let reading = shared.read_available(stream, conn, &mut pending)?;
                shared.dispatch();
                if let Reading::Closed = reading {
                    return Ok(());
                }
                // Let the connections this one wrote to, and the others, have their turn.
                future::yield_now().await;
            }
            Wake::Notified => {}
        }
    }
}
