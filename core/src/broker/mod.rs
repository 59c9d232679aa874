//! The broker engine: MQTT 5.0 and 3.1.1 server semantics as a state machine with no I/O.
//!
//! The port drives it (DESIGN.md, "core: a broker with no I/O"):
//! 1. [`Broker::open`] when a client connects, then [`Broker::handle_input`] with the bytes it
//!    reads (the engine consumes whole packets and says how many bytes; the port keeps the rest);
//! 2. [`Broker::poll_writable`] names connections with bytes to send: write
//!    [`Broker::output`], then [`Broker::consume_output`]; close the socket when
//!    [`Broker::is_closing`] and the output is empty, and call [`Broker::closed`];
//! 3. [`Broker::poll_event`] for hooks, metrics, rules and bridges;
//! 4. [`Broker::handle_timeout`] at [`Broker::poll_timeout`] (keep alive, connect timeout, will
//!    delay, session expiry).
//!
//! Messages are stored once ([`SharedMessage`]) and shared by every queue that holds them.

mod auth;
mod config;
mod event;
mod message;
pub mod persist;
mod session;

use alloc::boxed::Box;
use alloc::collections::{BinaryHeap, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::fmt::Write as _;
use core::num::{NonZeroU16, NonZeroU32};

pub use auth::{
    Access, AccessDecision, AllowAll, AuthDecision, Authenticator, Authorizer, ClientInfo,
    ConnectInfo,
};
pub use config::Config;
pub use event::{CloseCause, DropReason, Event, SessionEnd};
pub use message::{Message, MessageProperties, SharedMessage};
pub use persist::{Persistence, Record, RestoreSummary};

use crate::codec::{
    self, Ack, AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect,
    DecodeError, Decoded, Disconnect, DisconnectProperties, Packet, PacketType, Publish,
    PublishProperties, QosPid, ReasonCode, Repeated, SubAck, Subscribe, SubscriptionId, UnsubAck,
    Unsubscribe,
};
use crate::topic::hash::{NONE as NO_INDEX, ProbeTable, hash_str};
use crate::topic::{
    Matches, Publisher, RetainedIndex, RetainedMessage, SubscribeError, SubscribeOutcome,
    SubscriberId, SubscriptionIndex,
};
use crate::{Instant, ProtocolVersion, QoS, RetainHandling};
use session::{Awaiting, Inflight, Outgoing, PendingWill, Session};

/// Which worker owns the session of `client_id` among `workers` (FNV-1a): every connection
/// of a client lands on the same worker, so sessions never move between them.
pub fn client_owner(client_id: &str, workers: u16) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in client_id.bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    (hash % u32::from(workers.max(1))) as u16
}

/// The message a PUBLISH carries, with its resolved topic, received at `now`.
fn message_of(publish: &Publish<'_>, topic: Box<str>, v5: bool, now: Instant) -> SharedMessage {
    Arc::new(Message {
        topic,
        payload: Box::from(publish.payload),
        qos: publish.qos_pid.qos(),
        retain: publish.retain,
        properties: if v5 {
            MessageProperties::from_publish(&publish.properties)
        } else {
            MessageProperties::default()
        },
        received_at: now,
    })
}

/// A copy of a message for a session owned by another worker.
#[derive(Debug, Clone)]
pub struct RemoteDelivery {
    /// The receiving session.
    pub subscriber: SubscriberId,
    /// The message (shared, not copied).
    pub message: SharedMessage,
    /// The QoS to deliver with.
    pub qos: QoS,
    /// The RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions.
    pub subscription_ids: Box<[u32]>,
    /// The worker that routed it.
    pub origin: u16,
    /// With [`Persistence::Durable`]: the origin's record number this copy confirms once the
    /// receiving worker's records of it are durable ([`Broker::take_confirmations`]); the
    /// origin holds the publisher's acknowledgement until then. 0: no confirmation wanted.
    pub confirm: u64,
    /// With persistence and several workers, the QoS 2 flow the copy belongs to, by which the
    /// receiving worker keeps a publisher's resent message from being stored twice.
    pub flow: Option<Qos2Flow>,
    /// The first copy of its publication for the receiving worker: the receiver reports these
    /// back, for flow control ([`Broker::take_taken`], [`Broker::remote_taken`]).
    pub first: bool,
}

/// A QoS 2 PUBLISH flow of a publisher (its client identifier and packet identifier), carried
/// with the copies of its message for other workers' sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qos2Flow {
    /// The publisher's client identifier.
    pub publisher: Box<str>,
    /// The PUBLISH packet identifier.
    pub packet_id: u16,
    /// The publisher sent it again while the flow was open (its worker had it already, possibly
    /// from before a crash): a worker that stored a copy of this flow keeps it and drops this
    /// one; one that did not (the crash came first) stores it now.
    pub resend: bool,
    /// The routing that made the copy (its worker's count): the copies of one routing are
    /// stored, or dropped as stored before, together.
    pub routing: u64,
}

impl RemoteDelivery {
    fn from_outgoing(
        subscriber: SubscriberId,
        outgoing: Outgoing,
        origin: u16,
        confirm: u64,
        flow: Option<Qos2Flow>,
    ) -> Self {
        RemoteDelivery {
            flow,
            subscriber,
            message: outgoing.message,
            qos: outgoing.qos,
            retain: outgoing.retain,
            subscription_ids: outgoing.subscription_ids,
            origin,
            confirm,
            first: false,
        }
    }
}

/// A routing change every worker's replica of the subscriptions and retained messages applies.
#[derive(Debug, Clone)]
pub enum Replication {
    /// A subscription was added or replaced.
    Subscribe {
        /// The subscriber.
        subscriber: SubscriberId,
        /// The filter.
        filter: Box<str>,
        /// Its options.
        options: crate::SubscriptionOptions,
        /// Its subscription identifier.
        identifier: Option<u32>,
    },
    /// A subscription was removed.
    Unsubscribe {
        /// The subscriber.
        subscriber: SubscriberId,
        /// The filter.
        filter: Box<str>,
    },
    /// A session ended: all its subscriptions go.
    SessionEnded {
        /// The subscriber.
        subscriber: SubscriberId,
    },
    /// A publisher's QoS 2 flow was released (PUBREL): workers that stored copies of it forget it.
    FlowReleased {
        /// The publisher's client identifier.
        publisher: Box<str>,
        /// The packet identifier.
        packet_id: u16,
    },
    /// A retained message was stored (or deleted, with an empty payload).
    Retain {
        /// The message.
        message: SharedMessage,
    },
    /// Flow control across workers: a session is behind on copies routed by other workers
    /// (`on`), or has caught up, stalled or gone (`!on`). While on, a worker routing to it
    /// holds back the publisher whose input it is handling, as it would for its own sessions.
    Pressure {
        /// The session.
        subscriber: SubscriberId,
        /// Whether publishers should be held back.
        on: bool,
    },
}

/// A network connection, as the engine names it. Stale ids (of closed connections) are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

impl ConnId {
    /// The connection's slot: small, dense and reused once the connection is closed (ports
    /// index their own per-connection tables by it and compare the whole id).
    pub fn slot(self) -> usize {
        self.index as usize
    }
}

/// Counters for metrics and `$SYS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Clients connected now.
    pub connected: u32,
    /// Sessions, connected or not.
    pub sessions: u32,
    /// PUBLISH packets received from clients.
    pub messages_received: u64,
    /// PUBLISH packets sent to clients.
    pub messages_sent: u64,
    /// Deliveries dropped (queue full, expired, too large, not authorized, offline QoS 0).
    pub messages_dropped: u64,
    /// Access checks that said no, and refused connections.
    pub denials: u64,
    /// Connections closed for breaking the protocol.
    pub protocol_errors: u64,
    /// PUBLISH packets refused because the persistent store was full (0x97).
    pub persist_refused: u64,
}

/// What CONNECT asked for, kept while authentication runs.
#[derive(Debug)]
struct ConnectRequest {
    client_id: Box<str>,
    assigned_client_id: bool,
    clean_start: bool,
    keep_alive: u16,
    server_keep_alive: Option<u16>,
    session_expiry: u32,
    /// The Session Expiry Interval CONNECT asked for, before the cap.
    requested_session_expiry: u32,
    receive_maximum: u16,
    maximum_packet_size: u32,
    topic_alias_maximum: u16,
    will: Option<Box<PendingWill>>,
    username: Option<Box<str>>,
    password: Option<Box<[u8]>>,
    auth_method: Option<Box<str>>,
}

#[derive(Debug)]
enum Phase {
    AwaitingConnect,
    Authenticating(Box<ConnectRequest>),
    Connected,
    Closing,
}

#[derive(Debug)]
struct Connection {
    generation: u32,
    phase: Phase,
    version: ProtocolVersion,
    session: Option<u32>,
    out: Vec<u8>,
    queued_writable: bool,
    /// `connection_lost` ran: the session no longer points here.
    lost: bool,
    last_received: Instant,
    keep_alive: u16,
    /// The client's limits on what the broker sends it.
    receive_maximum: u16,
    maximum_packet_size: u32,
    topic_alias_maximum: u16,
    /// CONNECT's Request Problem Information (absent means 1): when false, failures other than
    /// CONNACK and DISCONNECT carry no Reason String `[MQTT-3.1.2-29]`.
    request_problem_information: bool,
    listener: u16,
    /// Topic aliases, the authentication method and held output: `None` while the connection
    /// uses none of them (most connections never do).
    extras: Option<Box<ConnectionExtras>>,
    reauthenticating: bool,
    /// Its keep-alive check is among the timers.
    keep_alive_armed: bool,
    /// Flow control: the port stops reading this connection until the sessions its messages
    /// are piling up in have drained (see [`Broker::is_paused`]).
    paused: bool,
    /// CONNECT asked for a Session Expiry Interval of 0 (then DISCONNECT may not raise it).
    connect_expiry_zero: bool,
    /// Its session is persistent: output waits for the records before it to be durable
    /// (`Persistence::Durable`).
    hold_output: bool,
    /// A PUBLISH or SUBSCRIBE whose access check is pending: input stops until
    /// [`Broker::resolve_access`].
    pending_access: Option<Box<PendingAccess>>,
}

/// What few connections use, kept apart so that the others do not pay for it (96 B each).
#[derive(Debug, Default)]
struct ConnectionExtras {
    inbound_aliases: Vec<Option<Box<str>>>,
    outbound_aliases: Vec<Box<str>>,
    auth_method: Option<Box<str>>,
    /// Held output: from byte offset `.0` on, nothing goes out before record `.1` is durable.
    holds: VecDeque<(usize, u64)>,
}

/// The extras of every connection that has none.
static NO_EXTRAS: ConnectionExtras = ConnectionExtras {
    inbound_aliases: Vec::new(),
    outbound_aliases: Vec::new(),
    auth_method: None,
    holds: VecDeque::new(),
};

/// A PUBLISH or SUBSCRIBE kept while the authorizer decides ([`AccessDecision::Pending`]).
#[derive(Debug)]
struct PendingAccess {
    /// The whole packet as received.
    packet: Box<[u8]>,
    /// The answers so far, one per check in packet order (a SUBSCRIBE checks each filter).
    answers: Vec<bool>,
    /// The check that is pending has its answer (from `resolve_access`) at `answers.len() - 1`.
    resolved: bool,
}

/// The access answers known while a packet is handled (again, after `resolve_access`).
#[derive(Debug, Default)]
struct AccessReplay {
    /// Answers from earlier runs, consumed in order.
    answers: Vec<bool>,
    /// Checks made so far in this run.
    next: usize,
    /// The answer at this position came from `resolve_access` and is not reported yet.
    unreported: Option<usize>,
    /// A check answered Pending in this run.
    pending: bool,
}

impl AccessReplay {
    /// Starts a new run with no answers, keeping the buffer (no allocation per packet).
    fn reset(&mut self) {
        self.answers.clear();
        self.next = 0;
        self.unreported = None;
        self.pending = false;
    }
}

impl Connection {
    fn new(generation: u32, listener: u16, now: Instant) -> Self {
        Connection {
            generation,
            phase: Phase::AwaitingConnect,
            version: ProtocolVersion::V3_1_1,
            session: None,
            out: Vec::new(),
            queued_writable: false,
            lost: false,
            last_received: now,
            keep_alive: 0,
            receive_maximum: u16::MAX,
            maximum_packet_size: u32::MAX,
            topic_alias_maximum: 0,
            request_problem_information: true,
            listener,
            extras: None,
            reauthenticating: false,
            keep_alive_armed: false,
            paused: false,
            connect_expiry_zero: false,
            hold_output: false,
            pending_access: None,
        }
    }

    /// The connection's extras (empty when it has none).
    fn extras(&self) -> &ConnectionExtras {
        self.extras.as_deref().unwrap_or(&NO_EXTRAS)
    }

    /// The extras, to change: allocated on first use.
    fn extras_mut(&mut self) -> &mut ConnectionExtras {
        self.extras.get_or_insert_with(Box::default)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    ConnectTimeout = 0,
    KeepAlive = 1,
    Will = 2,
    SessionExpiry = 3,
    /// Releases the publishers a session holds back if it made no progress since.
    StallCheck = 4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    /// The deadline in milliseconds, shifted left by [`TIMER_KIND_BITS`], and the kind in
    /// those bits: 16 B a timer instead of 24 (every connection waits on one), ordered by
    /// deadline first as before.
    at_and_kind: u64,
    index: u32,
    generation: u32,
}

const TIMER_KIND_BITS: u32 = 3;

impl Timer {
    fn new(at: Instant, kind: TimerKind, index: u32, generation: u32) -> Timer {
        // 2^61 ms is 73 million years of uptime: clamped there, the shift loses nothing (a
        // saturated "never" stays the latest deadline).
        let at = at.0.min(u64::MAX >> TIMER_KIND_BITS);
        Timer {
            at_and_kind: (at << TIMER_KIND_BITS) | kind as u64,
            index,
            generation,
        }
    }

    fn at(&self) -> Instant {
        Instant(self.at_and_kind >> TIMER_KIND_BITS)
    }

    fn kind(&self) -> TimerKind {
        match self.at_and_kind & ((1 << TIMER_KIND_BITS) - 1) {
            0 => TimerKind::ConnectTimeout,
            1 => TimerKind::KeepAlive,
            2 => TimerKind::Will,
            3 => TimerKind::SessionExpiry,
            _ => TimerKind::StallCheck,
        }
    }
}

impl RetainedMessage for SharedMessage {
    fn payload_len(&self) -> usize {
        self.payload.len()
    }
    fn retained_bytes(&self) -> usize {
        self.payload.len() + self.properties.heap_size()
    }
}

/// The broker engine. See the module documentation for how a port drives it.
pub struct Broker {
    config: Config,
    /// Boxed, so that a free slot costs a pointer and a closed connection's memory goes back to
    /// the allocator (measured: 19,000 connections left 8 MB of unboxed slots behind).
    connections: Vec<Option<Box<Connection>>>,
    connection_generations: Vec<u32>,
    free_connections: Vec<u32>,
    /// Boxed like `connections`.
    sessions: Vec<Option<Box<Session>>>,
    free_sessions: Vec<u32>,
    /// Session indexes by client id, which each session holds (the table keeps 8 B per slot
    /// and no copy of the id: a `BTreeMap<Box<str>, u32>` spent about 45 B per session).
    by_client_id: ProbeTable,
    subscriptions: SubscriptionIndex,
    retained: RetainedIndex<SharedMessage>,
    /// The matching buffer (and its cache of walks), reused by every message.
    matches: Option<Box<Matches>>,
    timers: BinaryHeap<Reverse<Timer>>,
    events: VecDeque<Event>,
    writable: VecDeque<ConnId>,
    authenticator: Box<dyn Authenticator>,
    authorizer: Box<dyn Authorizer>,
    assigned_ids: u64,
    seed: u64,
    stats: Stats,
    /// The connection whose packets are being handled (the publisher, for flow control).
    input: Option<ConnId>,
    /// Whether that connection was held back already when its packet came (a port reads none
    /// then; the copies of such a packet are not kept over a queue's limits, see `deliver`).
    input_was_paused: bool,
    /// Access answers for the packet being handled (see [`Broker::resolve_access`]).
    replay: AccessReplay,
    /// Copies for other workers' sessions, each with the record it waits for (see
    /// [`Broker::take_remote`]).
    remote: Vec<(u64, RemoteDelivery)>,
    /// Routing changes for other workers, until the port takes them.
    replication: Vec<Replication>,
    /// The QoS 2 flow of the PUBLISH being routed, when its copies for other workers carry it
    /// (persistence on, several workers).
    routing_flow: Option<Qos2Flow>,
    /// QoS 2 flows of other workers' publishers of which a copy was stored here, until their
    /// PUBREL (see [`Qos2Flow`]).
    remote_flows: alloc::collections::BTreeSet<(Box<str>, u16)>,
    /// The routing (origin worker and its count) of the last copy with a flow delivered here,
    /// and whether it was dropped as stored before.
    last_routing: Option<(u16, u64, bool)>,
    /// Routings made here (see [`Qos2Flow::routing`]).
    routings: u64,
    /// Sessions of other workers that asked for their publishers to be held back, with the
    /// publishers held back for them (few at a time: a linear list).
    remote_pressure: Vec<(SubscriberId, Vec<ConnId>)>,
    /// Copies routed to other workers and not yet taken by them, and the publishers held back
    /// until they are (see [`Broker::remote_taken`]).
    remote_credit: RemoteCredit,
    /// Persistence records and held output.
    journal: persist::Journal,
    /// The longest connect timeout configured since start: no connect-timeout timer pending
    /// is further away than this (see [`Broker::arm_keep_alive`]).
    connect_timeout_horizon_ms: u64,
}

impl core::fmt::Debug for Broker {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Broker")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// A subscriber that made no progress for this long holds back no publisher (flow control).
const STALL_MS: u64 = 1000;

/// Flow control between workers. A session of another worker that falls behind asks this
/// worker to hold back its publishers ([`Replication::Pressure`]), but that request travels
/// through the mailboxes while copies keep coming. What may arrive after it is bounded here: the
/// publications routed to a worker and not yet taken by it (it says so by
/// [`Broker::remote_taken`], after it posted any such request), each at most one copy per session
/// (and one per shared subscription), may not exceed a quarter of a session's queue limits shared
/// by the other workers: the room between asking (at half the limits, see
/// [`Broker::backlogged`]) and the limits, less a margin for that worker's own publishers. The
/// publisher that reaches the bound is held back until half of it has been taken.
#[derive(Debug, Default)]
struct RemoteCredit {
    /// By worker: the publications routed there and not yet taken, their bytes, and the last
    /// publication counted (by [`RemoteCredit::publications`]).
    outstanding: Vec<(u32, usize, u64)>,
    /// Publications routed, to tell the first copy of one for a worker.
    publications: u64,
    /// Publishers held back until the copies are taken.
    waiters: Vec<ConnId>,
    /// By origin worker: the publications (and bytes) of its copies delivered here and not yet
    /// reported back ([`Broker::take_taken`]).
    taken: Vec<(u32, usize)>,
}

/// How long a connection may stay silent: 1.5 times its keep alive (MQTT 5 `[MQTT-3.1.2-22]`,
/// 3.1.1 `[MQTT-3.1.2-24]`).
fn keep_alive_deadline(last: Instant, keep_alive: u16) -> Instant {
    last.plus_millis(u64::from(keep_alive) * 1500)
}

/// Pushes onto a vector with an entry per connection or session, growing it by a quarter
/// rather than doubling it (see [`Broker::push_timer`]).
fn push_by_quarters<T>(vector: &mut Vec<T>, value: T) {
    if vector.len() == vector.capacity() {
        vector.reserve_exact((vector.capacity() / 4).max(16));
    }
    vector.push(value);
}

/// The first allocation of a connection's output buffer.
const FIRST_OUTPUT_BUFFER: usize = 128;

/// Room on the stack for a PUBLISH's fixed and variable header (a longer one, with a long topic
/// or many properties, takes the general path).
const PUBLISH_HEADER_ON_STACK: usize = 160;

/// Written buffers are released (idle connections hold none): a new one starts with room for a
/// few small packets, not growing by doubling from 8 bytes.
fn reserve_first_output(out: &mut Vec<u8>, len: usize) {
    if out.capacity() == 0 {
        out.reserve(len.max(FIRST_OUTPUT_BUFFER));
    }
}

fn push_packet(out: &mut Vec<u8>, packet: &Packet<'_>, version: ProtocolVersion) -> bool {
    if let Packet::Publish(publish) = packet {
        // The header encoded on the stack, then the payload appended: the payload is copied
        // once, and the buffer is not zero-filled first (a byte loop in the size profile).
        let mut header = [0u8; PUBLISH_HEADER_ON_STACK];
        match publish.encode_header(version, &mut header) {
            Ok(header_len) => {
                reserve_first_output(out, header_len + publish.payload.len());
                out.extend_from_slice(&header[..header_len]);
                out.extend_from_slice(publish.payload);
                return true;
            }
            Err(codec::EncodeError::BufferTooSmall { .. }) => {}
            Err(_) => return false,
        }
    }
    let Ok(len) = packet.encoded_len(version) else {
        return false;
    };
    let start = out.len();
    reserve_first_output(out, len);
    out.resize(start + len, 0);
    match packet.encode(version, &mut out[start..]) {
        Ok(_) => true,
        Err(_) => {
            out.truncate(start);
            false
        }
    }
}

impl Broker {
    /// A broker that lets everyone in and allows everything (set an [`Authenticator`] and an
    /// [`Authorizer`] for anything else). `seed` drives client id assignment and random member
    /// choice in shared subscriptions.
    pub fn new(config: Config, seed: u64) -> Self {
        let config_connect_timeout = config.connect_timeout_ms;
        Broker {
            subscriptions: SubscriptionIndex::new(&config.limits, config.shared_strategy, seed),
            retained: RetainedIndex::new(&config.limits, seed ^ 0x5bd1_e995),
            matches: Some(Box::new(Matches::new(seed | 1))),
            config,
            connections: Vec::new(),
            connection_generations: Vec::new(),
            free_connections: Vec::new(),
            sessions: Vec::new(),
            free_sessions: Vec::new(),
            by_client_id: ProbeTable::default(),
            timers: BinaryHeap::new(),
            events: VecDeque::new(),
            writable: VecDeque::new(),
            authenticator: Box::new(AllowAll),
            authorizer: Box::new(AllowAll),
            assigned_ids: 0,
            seed,
            stats: Stats::default(),
            input: None,
            replay: AccessReplay::default(),
            remote: Vec::new(),
            routing_flow: None,
            remote_flows: alloc::collections::BTreeSet::new(),
            last_routing: None,
            routings: 0,
            replication: Vec::new(),
            input_was_paused: false,
            remote_pressure: Vec::new(),
            remote_credit: RemoteCredit::default(),
            journal: persist::Journal::default(),
            connect_timeout_horizon_ms: config_connect_timeout,
        }
    }

    /// Replaces the authenticator (applies to connections that CONNECT from now on).
    pub fn set_authenticator(&mut self, authenticator: Box<dyn Authenticator>) {
        self.authenticator = authenticator;
    }

    /// Replaces the authorizer (applies to every check from now on).
    pub fn set_authorizer(&mut self, authorizer: Box<dyn Authorizer>) {
        self.authorizer = authorizer;
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Applies a new configuration at run time (limits, keep alive, aliases...). Existing
    /// subscriptions, queues and retained messages stay even if now above a lowered bound; new
    /// ones are checked against it.
    pub fn set_config(&mut self, config: Config) {
        self.subscriptions.set_strategy(config.shared_strategy);
        self.connect_timeout_horizon_ms = self
            .connect_timeout_horizon_ms
            .max(config.connect_timeout_ms);
        self.config = config;
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Retained messages stored.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// Subscriptions of all sessions.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// Nodes of the subscription trie (for leak checks: zero when nobody subscribes).
    pub fn subscription_nodes(&self) -> usize {
        self.subscriptions.node_count()
    }

    /// The client identifier of a session.
    pub fn client_id(&self, session: SubscriberId) -> Option<&str> {
        self.session(self.local(session)?).map(|s| &*s.client_id)
    }

    /// The global identity (trie, events) of the local session `index`: sessions of all
    /// workers share one dense space, `index * workers + worker`.
    fn global(&self, index: u32) -> SubscriberId {
        let workers = u32::from(self.config.workers.max(1));
        SubscriberId(index * workers + u32::from(self.config.worker))
    }

    /// The local session index of a global identity, if this worker owns it.
    fn local(&self, id: SubscriberId) -> Option<u32> {
        let workers = u32::from(self.config.workers.max(1));
        (id.0 % workers == u32::from(self.config.worker)).then_some(id.0 / workers)
    }

    fn replicate(&mut self, item: Replication) {
        if self.config.workers > 1 {
            self.replication.push(item);
        }
    }

    /// Moves the copies of messages for other workers' sessions into `out` (batches for their
    /// mailboxes). Empty when this engine works alone.
    ///
    /// With [`Persistence::Durable`], a copy waits until the records of the call that made it
    /// are durable (the publisher's inbound QoS 2 packet identifier among them): the other
    /// worker stores it in its own log, and were it stored before this worker's records, a
    /// crash in between would have the publisher send the message again and the session get
    /// it twice. Call again after [`Broker::durable`].
    pub fn take_remote(&mut self, out: &mut Vec<RemoteDelivery>) {
        let ready = self
            .remote
            .iter()
            .take_while(|(seq, _)| self.records_durable(*seq))
            .count();
        out.extend(self.remote.drain(..ready).map(|(_, delivery)| delivery));
    }

    /// Moves the routing changes other workers must apply into `out`.
    pub fn take_replication(&mut self, out: &mut Vec<Replication>) {
        out.append(&mut self.replication);
    }

    /// Moves into `out`, as (origin worker, publications, bytes), what this worker took of the
    /// copies other workers routed to it since the last call. Post each to its origin's
    /// [`Broker::remote_taken`] after the routing changes of [`Broker::take_replication`], so
    /// that a request to hold back publishers arrives first (see [`RemoteCredit`]).
    pub fn take_taken(&mut self, out: &mut Vec<(u16, u32, usize)>) {
        for (origin, count) in self.remote_credit.taken.iter_mut().enumerate() {
            if count.0 > 0 {
                let (publications, bytes) = core::mem::take(count);
                out.push((origin as u16, publications, bytes));
            }
        }
    }

    /// Delivers a copy routed by another worker to one of this worker's sessions. A copy that
    /// asks for it is confirmed to its origin once the records it made here are durable
    /// ([`Broker::take_confirmations`]).
    pub fn deliver_remote(&mut self, delivery: RemoteDelivery, now: Instant) {
        let (origin, confirm) = (delivery.origin, delivery.confirm);
        if delivery.first {
            let taken = &mut self.remote_credit.taken;
            let index = usize::from(origin);
            if taken.len() <= index {
                taken.resize(index + 1, (0, 0));
            }
            taken[index].0 = taken[index].0.saturating_add(1);
            taken[index].1 = taken[index].1.saturating_add(delivery.message.size());
        }
        let stored_before = match &delivery.flow {
            Some(flow) => self.stored_before(origin, flow),
            None => false,
        };
        if stored_before {
            // Stored when the publisher first sent it.
        } else if let Some(index) = self.local(delivery.subscriber) {
            let outgoing = Outgoing {
                message: delivery.message,
                qos: delivery.qos,
                retain: delivery.retain,
                subscription_ids: delivery.subscription_ids,
                seq: 0,
            };
            self.deliver(index, outgoing, now);
        }
        if confirm != 0 {
            self.confirm_when_durable(origin, confirm);
        }
    }

    /// Whether a copy of `flow` from `origin` was stored here before (then it is dropped): only
    /// a resent message's can be. The copies of one routing share the answer; a flow whose
    /// copies are stored is remembered (and recorded) until its PUBREL.
    fn stored_before(&mut self, origin: u16, flow: &Qos2Flow) -> bool {
        if let Some((o, routing, dropped)) = self.last_routing {
            if o == origin && routing == flow.routing {
                return dropped;
            }
        }
        let key = (flow.publisher.clone(), flow.packet_id);
        let dropped = flow.resend && self.remote_flows.contains(&key);
        self.last_routing = Some((origin, flow.routing, dropped));
        if !dropped && self.remote_flows.insert(key) {
            self.persist_remote_flow(&flow.publisher, flow.packet_id, true);
        }
        dropped
    }

    /// Whether QoS 2 copies for other workers carry their flow: with persistence, the inbound
    /// packet identifier and the copies are in different logs.
    fn flows_cross_workers(&self) -> bool {
        self.config.workers > 1 && self.config.persistence.is_on()
    }

    /// Worker `worker` took `publications` of this worker's publications (of `bytes`, by
    /// [`Message::size`], once per publication): the copies routed to its sessions that are
    /// marked [`RemoteDelivery::first`], as its [`Broker::take_taken`] reported them. Call it
    /// after the routing changes that worker made before that report: flow control between
    /// workers relies on that order (see [`RemoteCredit`]).
    pub fn remote_taken(&mut self, worker: u16, publications: u32, bytes: usize) {
        let (max_publications, max_bytes) = self.remote_credit_limits();
        let credit = &mut self.remote_credit;
        let Some(entry) = credit.outstanding.get_mut(usize::from(worker)) else {
            return;
        };
        entry.0 = entry.0.saturating_sub(publications);
        entry.1 = entry.1.saturating_sub(bytes);
        if credit.waiters.is_empty() {
            return;
        }
        let drained = credit.outstanding.iter().all(|&(p, b, _)| {
            p.saturating_mul(2) <= max_publications && b.saturating_mul(2) <= max_bytes
        });
        if drained {
            for publisher in core::mem::take(&mut self.remote_credit.waiters) {
                self.unpause(publisher);
            }
        }
    }

    /// The publications (and bytes) routed to one other worker that may be outstanding (see
    /// [`RemoteCredit`]).
    fn remote_credit_limits(&self) -> (u32, usize) {
        let limits = &self.config.limits;
        let others = u32::from(self.config.workers.max(2) - 1);
        let room = |limit: u32| limit / 4 / others;
        let publications = room(limits.max_queued_messages).max(1);
        let bytes = (room(limits.max_queued_bytes) as usize).max(1);
        (publications, bytes)
    }

    /// Counts a copy routed to `worker`'s sessions: the first of its publication there counts
    /// it, and holds back the publisher being read when the publications not yet taken reach
    /// their bound (see [`RemoteCredit`]). Returns whether it was the first.
    fn count_remote(&mut self, worker: usize, bytes: usize) -> bool {
        let credit = &mut self.remote_credit;
        if credit.outstanding.len() <= worker {
            credit.outstanding.resize(worker + 1, (0, 0, 0));
        }
        let publication = credit.publications;
        let entry = &mut credit.outstanding[worker];
        if entry.2 == publication {
            return false;
        }
        entry.2 = publication;
        entry.0 = entry.0.saturating_add(1);
        entry.1 = entry.1.saturating_add(bytes);
        let (outstanding, outstanding_bytes) = (entry.0, entry.1);
        let (max_publications, max_bytes) = self.remote_credit_limits();
        if outstanding < max_publications && outstanding_bytes < max_bytes {
            return true;
        }
        let credit = &mut self.remote_credit;
        let Some(publisher) = self.input else {
            return true;
        };
        if !credit.waiters.contains(&publisher) {
            credit.waiters.push(publisher);
        }
        if let Some(connection) = self.connection_mut(publisher) {
            connection.paused = true;
        }
        true
    }

    /// Applies a routing change made by another worker to this worker's replica.
    pub fn apply_replication(&mut self, item: Replication) {
        match item {
            Replication::Subscribe {
                subscriber,
                filter,
                options,
                identifier,
            } => {
                let _ = self
                    .subscriptions
                    .subscribe(subscriber, &filter, options, identifier);
            }
            Replication::Unsubscribe { subscriber, filter } => {
                self.subscriptions.unsubscribe(subscriber, &filter);
            }
            Replication::FlowReleased {
                publisher,
                packet_id,
            } => {
                if self.remote_flows.remove(&(publisher.clone(), packet_id)) {
                    self.persist_remote_flow(&publisher, packet_id, false);
                }
            }
            Replication::SessionEnded { subscriber } => {
                self.subscriptions.unsubscribe_all(subscriber);
                self.release_remote_pressure(subscriber);
            }
            Replication::Pressure {
                subscriber,
                on: true,
            } => {
                if !self.remote_pressure.iter().any(|(s, _)| *s == subscriber) {
                    self.remote_pressure.push((subscriber, Vec::new()));
                }
            }
            Replication::Pressure {
                subscriber,
                on: false,
            } => {
                self.release_remote_pressure(subscriber);
            }
            Replication::Retain { message } => {
                if message.payload.is_empty() {
                    self.retained.remove(&message.topic);
                    self.persist_retained(&message);
                } else {
                    let topic = message.topic.clone();
                    if self.retained.retain(&topic, message.clone()).is_ok() {
                        self.persist_retained(&message);
                    }
                }
            }
        }
    }

    /// Messages queued for `client_id`'s session, if it exists.
    pub fn queued_messages(&self, client_id: &str) -> Option<usize> {
        let index = self.session_index(client_id)?;
        self.session(index)
            .map(|session| session.backlog().queue.len())
    }

    // ----- connections ---------------------------------------------------------------------

    /// Registers a new network connection that arrived on `listener`; CONNECT must follow
    /// within the connect timeout.
    pub fn open(&mut self, listener: u16, now: Instant) -> ConnId {
        let index = match self.free_connections.pop() {
            Some(index) => index,
            None => {
                push_by_quarters(&mut self.connections, None);
                push_by_quarters(&mut self.connection_generations, 0);
                (self.connections.len() - 1) as u32
            }
        };
        let generation = self.connection_generations[index as usize].wrapping_add(1);
        self.connection_generations[index as usize] = generation;
        self.connections[index as usize] =
            Some(Box::new(Connection::new(generation, listener, now)));
        self.push_timer(Reverse(Timer::new(
            now.plus_millis(self.config.connect_timeout_ms),
            TimerKind::ConnectTimeout,
            index,
            generation,
        )));
        ConnId { index, generation }
    }

    fn connection(&self, id: ConnId) -> Option<&Connection> {
        find_connection(&self.connections, id)
    }

    fn connection_mut(&mut self, id: ConnId) -> Option<&mut Connection> {
        self.connections
            .get_mut(id.index as usize)?
            .as_deref_mut()
            .filter(|c| c.generation == id.generation)
    }

    /// The hash of a client id in [`Broker::session_index`]'s table (seeded: clients cannot
    /// aim collisions at it).
    fn client_id_hash(&self, client_id: &str) -> u32 {
        hash_str(self.seed ^ 0x243f_6a88_85a3_08d3, client_id)
    }

    /// The index of `client_id`'s session, if it has one.
    fn session_index(&self, client_id: &str) -> Option<u32> {
        let sessions = &self.sessions;
        let found = self
            .by_client_id
            .find(self.client_id_hash(client_id), |index| {
                sessions
                    .get(index as usize)
                    .and_then(Option::as_deref)
                    .is_some_and(|session| &*session.client_id == client_id)
            });
        (found != NO_INDEX).then_some(found)
    }

    fn session(&self, index: u32) -> Option<&Session> {
        self.sessions.get(index as usize)?.as_deref()
    }

    fn session_mut(&mut self, index: u32) -> Option<&mut Session> {
        self.sessions.get_mut(index as usize)?.as_deref_mut()
    }

    /// Bytes waiting to be written to `conn`.
    pub fn output(&self, conn: ConnId) -> &[u8] {
        self.connection(conn).map_or(&[], |c| {
            &c.out[..c.extras().holds.front().map_or(c.out.len(), |h| h.0)]
        })
    }

    /// Bytes allocated for `conn`'s output buffer: what the buffer costs the connection (none
    /// once its output has been consumed).
    pub fn output_capacity(&self, conn: ConnId) -> usize {
        self.connection(conn).map_or(0, |c| c.out.capacity())
    }

    /// Marks the first `written` bytes of [`Broker::output`] as sent.
    ///
    /// Messages that waited for a congested connection move into the room this makes.
    pub fn consume_output(&mut self, conn: ConnId, written: usize, now: Instant) {
        let Some(connection) = self.connection_mut(conn) else {
            return;
        };
        let free = connection
            .extras()
            .holds
            .front()
            .map_or(connection.out.len(), |h| h.0);
        let written = written.min(free);
        connection.out.drain(..written);
        if let Some(extras) = connection.extras.as_deref_mut() {
            for hold in &mut extras.holds {
                hold.0 -= written;
            }
        }
        if connection.out.is_empty() {
            // Written out: the buffer goes, so that an idle connection holds none (a turn that
            // writes costs a system call; one allocation more is small beside it).
            connection.out = Vec::new();
        }
        if let Some(index) = connection.session {
            self.output_taken(index, now);
        }
    }

    /// Exchanges `conn`'s pending output with `buffer` (which should be empty): the port writes
    /// what it gets while the engine appends new output to the buffer it was given. No copy;
    /// buffers are recycled between the two.
    ///
    /// Call it when the previous buffer has been written: the engine then moves messages that
    /// waited for a congested connection into the new one.
    pub fn swap_output(&mut self, conn: ConnId, buffer: &mut Vec<u8>, now: Instant) {
        buffer.clear();
        let Some(connection) = self.connection_mut(conn) else {
            return;
        };
        match connection.extras().holds.front() {
            None => core::mem::swap(&mut connection.out, buffer),
            // Only what is durable goes out (`Persistence::Durable`).
            Some(&(free, _)) => {
                buffer.extend_from_slice(&connection.out[..free]);
                connection.out.drain(..free);
                for hold in &mut connection.extras_mut().holds {
                    hold.0 -= free;
                }
            }
        }
        if let Some(index) = connection.session {
            self.output_taken(index, now);
        }
    }

    /// The port took a session's output: move waiting messages into the room it made.
    fn output_taken(&mut self, index: u32, now: Instant) {
        if self
            .session(index)
            .is_some_and(|s| !s.backlog().queue.is_empty())
        {
            self.pump(index, now);
        }
        self.made_progress(index, now);
    }

    /// True when `conn` has `max_output_bytes` or more waiting for its socket.
    fn congested(&self, conn: ConnId) -> bool {
        let high_water = self.config.limits.max_output_bytes as usize;
        self.connection(conn)
            .is_some_and(|c| c.out.len() >= high_water)
    }

    /// True while the port should not read from `conn`: its messages are piling up in the
    /// queues of subscribers that are draining them (flow control). The engine marks the
    /// connection writable (see [`Broker::poll_writable`]) when it may read again.
    ///
    /// A connection whose PUBLISH or SUBSCRIBE awaits an access decision
    /// ([`AccessDecision::Pending`]) is paused too, until [`Broker::resolve_access`].
    pub fn is_paused(&self, conn: ConnId) -> bool {
        self.connection(conn).is_some_and(|c| {
            (c.paused || c.pending_access.is_some()) && !matches!(c.phase, Phase::Closing)
        })
    }

    /// True when the engine wants `conn` closed once its output is written.
    pub fn is_closing(&self, conn: ConnId) -> bool {
        self.connection(conn)
            .is_none_or(|c| matches!(c.phase, Phase::Closing))
    }

    /// The next connection with new output or that must close, since the last call.
    pub fn poll_writable(&mut self) -> Option<ConnId> {
        while let Some(id) = self.writable.pop_front() {
            if let Some(connection) = self.connection_mut(id) {
                connection.queued_writable = false;
                return Some(id);
            }
        }
        None
    }

    fn mark_writable(&mut self, id: ConnId) {
        if let Some(connection) = self.connection_mut(id) {
            if !connection.queued_writable {
                connection.queued_writable = true;
                self.writable.push_back(id);
            }
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The port reports that the network connection is gone (closed by either side, or failed).
    /// The id is invalid afterwards.
    pub fn closed(&mut self, conn: ConnId, now: Instant) {
        if self.connection(conn).is_none() {
            return;
        }
        self.connection_lost(conn, CloseCause::NetworkClosed, now);
        if let Some(slot) = self.connections.get_mut(conn.index as usize) {
            *slot = None;
            self.free_connections.push(conn.index);
        }
    }

    /// Encodes `packet` for `conn` and queues it for writing.
    fn send(&mut self, conn: ConnId, packet: &Packet<'_>) {
        let Some(connection) = self.connection_mut(conn) else {
            return;
        };
        if matches!(connection.phase, Phase::Closing) {
            return;
        }
        let version = connection.version;
        let was_empty = connection.out.is_empty();
        let start = connection.out.len();
        if push_packet(&mut connection.out, packet, version) {
            if self.config.persistence == Persistence::Durable {
                let acknowledges = matches!(packet, Packet::PubAck(_) | Packet::PubRec(_));
                self.hold_output(conn, start, acknowledges);
            }
            if was_empty {
                self.mark_writable(conn);
            }
        }
    }

    /// Starts closing `conn`: after what is queued is written, the port closes it.
    fn begin_close(&mut self, conn: ConnId, cause: CloseCause, now: Instant) {
        let Some(connection) = self.connection_mut(conn) else {
            return;
        };
        if matches!(connection.phase, Phase::Closing) {
            return;
        }
        connection.phase = Phase::Closing;
        connection.queued_writable = false;
        self.connection_lost(conn, cause, now);
        self.mark_writable(conn);
    }

    /// Closes `conn` for a protocol violation: DISCONNECT with `reason` to an MQTT 5 client
    /// that completed CONNECT `[MQTT-4.13.1-1]`, nothing otherwise.
    fn protocol_violation(&mut self, conn: ConnId, reason: ReasonCode, now: Instant) {
        self.stats.protocol_errors += 1;
        if let Some(connection) = self.connection(conn) {
            if connection.version.is_v5() && matches!(connection.phase, Phase::Connected) {
                self.send_disconnect(conn, reason);
            }
        }
        self.begin_close(conn, CloseCause::ProtocolError(reason), now);
    }

    /// The Reason String for a failure `reason` in a packet of type `kind` to `conn`: MQTT 5
    /// only, and on packets other than CONNACK and DISCONNECT only if the client did not set
    /// Request Problem Information to 0 `[MQTT-3.1.2-29]`. Static text: no allocation.
    fn reason_string(
        &self,
        conn: ConnId,
        kind: PacketType,
        reason: ReasonCode,
    ) -> Option<&'static str> {
        let connection = self.connection(conn)?;
        let allowed = connection.request_problem_information
            || matches!(kind, PacketType::ConnAck | PacketType::Disconnect);
        if !(reason.is_error() && connection.version.is_v5() && allowed) {
            return None;
        }
        reason.name()
    }

    /// Sends a failure packet that `build` makes with or without a Reason String: with it when
    /// [`Broker::reason_string`] gives one and the packet still fits the client's Maximum Packet
    /// Size, without it otherwise (`[MQTT-3.2.2-19]`, `[MQTT-3.4.2-2]`, `[MQTT-3.9.2-1]`,
    /// `[MQTT-3.14.2-3]`...). Only failures come here: successes carry nothing extra.
    #[cold]
    fn send_failure<'a>(
        &mut self,
        conn: ConnId,
        kind: PacketType,
        reason: ReasonCode,
        build: impl Fn(Option<&'static str>) -> Packet<'a>,
    ) {
        let text = self.reason_string(conn, kind, reason);
        let mut packet = build(text);
        if text.is_some() {
            let max = self
                .connection(conn)
                .map_or(u32::MAX, |c| c.maximum_packet_size);
            let fits = packet
                .encoded_len(ProtocolVersion::V5)
                .is_ok_and(|len| len <= max as usize);
            if !fits {
                packet = build(None);
            }
        }
        self.send(conn, &packet);
    }

    /// Sends DISCONNECT with `reason` (and a Reason String where it fits).
    fn send_disconnect(&mut self, conn: ConnId, reason: ReasonCode) {
        self.send_failure(conn, PacketType::Disconnect, reason, |text| {
            Packet::Disconnect(Disconnect {
                reason,
                properties: DisconnectProperties {
                    reason_string: text,
                    ..DisconnectProperties::default()
                },
            })
        });
    }

    /// Sends PUBACK or PUBREC with the failure `reason` for `qos_pid` (nothing for QoS 0).
    fn send_publish_failure(&mut self, conn: ConnId, qos_pid: QosPid, reason: ReasonCode) {
        let (kind, id) = match qos_pid {
            QosPid::AtMostOnce => return,
            QosPid::AtLeastOnce(id) => (PacketType::PubAck, id),
            QosPid::ExactlyOnce(id) => (PacketType::PubRec, id),
        };
        self.send_failure(conn, kind, reason, |text| {
            let ack = Ack {
                packet_id: id,
                reason,
                properties: AckProperties {
                    reason_string: text,
                    ..AckProperties::default()
                },
            };
            match kind {
                PacketType::PubAck => Packet::PubAck(ack),
                _ => Packet::PubRec(ack),
            }
        });
    }

    /// The connection ends: detach its session, handle the will and the session's expiry.
    fn connection_lost(&mut self, conn: ConnId, cause: CloseCause, now: Instant) {
        let Some(connection) = self.connection_mut(conn) else {
            return;
        };
        if connection.lost {
            return;
        }
        connection.lost = true;
        let session_index = connection.session.take();
        let client_id = session_index
            .and_then(|index| self.session(index))
            .map(|session| session.client_id.clone());
        if let Some(index) = session_index {
            if let Some(session) = self.session_mut(index) {
                session.tidy();
            }
            self.detach_session(index, cause, now);
            self.stats.connected = self.stats.connected.saturating_sub(1);
        }
        self.events.push_back(Event::ClientDisconnected {
            conn,
            client_id,
            cause,
        });
    }

    fn detach_session(&mut self, index: u32, cause: CloseCause, now: Instant) {
        // An offline session holds back no publisher: its messages queue or drop at the limits.
        self.release_waiters(index);
        let max_expiry = self.config.max_session_expiry;
        let Some(session) = self.session_mut(index) else {
            return;
        };
        session.conn = None;
        session.epoch = session.epoch.wrapping_add(1);
        let epoch = session.epoch;
        let expiry = session.expiry_secs.min(max_expiry);
        // The will is deleted on a normal DISCONNECT and kept for 0x04 and every abnormal end.
        let will = session.will.take();
        let publish_will = match cause {
            CloseCause::ClientDisconnect(reason) => {
                reason == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE
            }
            CloseCause::ServerShutdown => false,
            _ => true,
        };
        if expiry == 0 {
            if let (true, Some(will)) = (publish_will, will) {
                self.publish_will(will.message, now);
            }
            self.end_session(index, SessionEnd::Expired);
            return;
        }
        if let (true, Some(will)) = (publish_will, will) {
            // Published after the will delay, or when the session ends, whichever is first.
            if will.delay_secs == 0 {
                self.publish_will(will.message, now);
            } else {
                let due = now.plus_secs(u64::from(will.delay_secs.min(expiry)));
                if let Some(session) = self.session_mut(index) {
                    session.will = Some(Box::new(PendingWill {
                        due: Some(due),
                        ..*will
                    }));
                }
                self.push_timer(Reverse(Timer::new(due, TimerKind::Will, index, epoch)));
            }
        }
        if expiry != u32::MAX {
            self.push_timer(Reverse(Timer::new(
                now.plus_secs(u64::from(expiry)),
                TimerKind::SessionExpiry,
                index,
                epoch,
            )));
        }
        if let Some(session) = self.session_mut(index) {
            session.since = now;
        }
        self.persist_session(index);
    }

    /// Discards a session: its subscriptions, queue and inflight messages.
    fn end_session(&mut self, index: u32, reason: SessionEnd) {
        let Some(session) = self.sessions.get_mut(index as usize).and_then(Option::take) else {
            return;
        };
        self.persist_session_end(&session);
        let subscriber = self.global(index);
        self.subscriptions.unsubscribe_all(subscriber);
        self.replicate(Replication::SessionEnded { subscriber });
        let hash = self.client_id_hash(&session.client_id);
        self.by_client_id.remove(hash, index);
        self.free_sessions.push(index);
        self.stats.sessions = self.stats.sessions.saturating_sub(1);
        self.events.push_back(Event::SessionTerminated {
            session: self.global(index),
            client_id: session.client_id,
            reason,
        });
    }

    fn publish_will(&mut self, message: SharedMessage, now: Instant) {
        let message = Arc::new(Message {
            received_at: now,
            ..Message::clone(&message)
        });
        self.accept_message(None, message, now);
    }

    // ----- time ----------------------------------------------------------------------------

    /// When [`Broker::handle_timeout`] should be called next (it may be called earlier).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse(timer)| timer.at())
    }

    /// Adds a deadline. The heap grows by a quarter rather than doubling: every connection
    /// waits on a timer, and with tens of thousands of them a doubled heap's spare half would
    /// be a fifth of what the connections cost.
    fn push_timer(&mut self, timer: Reverse<Timer>) {
        if self.timers.len() == self.timers.capacity() {
            let room = (self.timers.capacity() / 4).max(16);
            self.timers.reserve_exact(room);
        }
        self.timers.push(timer);
    }

    /// Deadlines waiting (connect timeouts, keep-alive checks, wills, expiries), stale ones
    /// included until they come due: what the timers cost in memory.
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// Runs every deadline that has passed at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse(timer)) = self.timers.peek().copied() {
            if timer.at() > now {
                break;
            }
            self.timers.pop();
            match timer.kind() {
                TimerKind::ConnectTimeout => self.connect_timeout(timer, now),
                TimerKind::KeepAlive => self.keep_alive_check(timer, now),
                TimerKind::Will => self.will_due(timer, now),
                TimerKind::SessionExpiry => self.session_expired(timer),
                TimerKind::StallCheck => self.stall_check(timer, now),
            }
        }
    }

    fn timer_connection(&self, timer: &Timer) -> Option<ConnId> {
        let id = ConnId {
            index: timer.index,
            generation: timer.generation,
        };
        self.connection(id).map(|_| id)
    }

    fn connect_timeout(&mut self, timer: Timer, now: Instant) {
        if let Some(id) = self.timer_connection(&timer) {
            let waiting = self.connection(id).is_some_and(|c| {
                matches!(c.phase, Phase::AwaitingConnect | Phase::Authenticating(_))
            });
            if waiting {
                self.begin_close(id, CloseCause::ConnectTimeout, now);
            } else {
                self.hand_over_to_keep_alive(id, timer);
            }
        }
    }

    /// A connection's keep-alive check starts from its connect timeout, so that an idle
    /// connection has one timer waiting, not two (24 B each, and the heap's spare room): at
    /// CONNECT, the check is armed only when due before the connect timeout
    /// ([`Broker::arm_keep_alive`]); otherwise the connect timeout hands over to it here.
    fn hand_over_to_keep_alive(&mut self, id: ConnId, timer: Timer) {
        let Some(connection) = self.connection_mut(id) else {
            return;
        };
        if !matches!(connection.phase, Phase::Connected)
            || connection.keep_alive == 0
            || connection.keep_alive_armed
        {
            return;
        }
        connection.keep_alive_armed = true;
        let at = keep_alive_deadline(connection.last_received, connection.keep_alive);
        self.push_timer(Reverse(Timer::new(
            at,
            TimerKind::KeepAlive,
            timer.index,
            timer.generation,
        )));
    }

    /// At CONNECT: arms the keep-alive check if it is due before the connect-timeout timer,
    /// which otherwise arms it when it fires ([`Broker::hand_over_to_keep_alive`]).
    fn arm_keep_alive(&mut self, conn: ConnId, keep_alive: u16, now: Instant) {
        let horizon = now.plus_millis(self.connect_timeout_horizon_ms);
        let at = keep_alive_deadline(now, keep_alive);
        if keep_alive == 0 || at >= horizon {
            return;
        }
        let Some(connection) = self.connection_mut(conn) else {
            return;
        };
        connection.keep_alive_armed = true;
        let generation = connection.generation;
        self.push_timer(Reverse(Timer::new(
            at,
            TimerKind::KeepAlive,
            conn.index,
            generation,
        )));
    }

    fn keep_alive_check(&mut self, timer: Timer, now: Instant) {
        let Some(id) = self.timer_connection(&timer) else {
            return;
        };
        let Some(connection) = self.connection(id) else {
            return;
        };
        if !matches!(connection.phase, Phase::Connected) || connection.keep_alive == 0 {
            return;
        }
        let deadline = keep_alive_deadline(connection.last_received, connection.keep_alive);
        if now >= deadline {
            if connection.version.is_v5() {
                self.send_disconnect(id, ReasonCode::KEEP_ALIVE_TIMEOUT);
            }
            self.begin_close(id, CloseCause::KeepAliveTimeout, now);
        } else {
            self.push_timer(Reverse(Timer::new(
                deadline,
                timer.kind(),
                timer.index,
                timer.generation,
            )));
        }
    }

    fn will_due(&mut self, timer: Timer, now: Instant) {
        let Some(session) = self.session_mut(timer.index) else {
            return;
        };
        if session.epoch != timer.generation || session.conn.is_some() {
            return;
        }
        if let Some(will) = session.will.take() {
            self.persist_session(timer.index);
            self.publish_will(will.message, now);
        }
    }

    fn session_expired(&mut self, timer: Timer) {
        let current = self
            .session(timer.index)
            .is_some_and(|s| s.epoch == timer.generation && s.conn.is_none());
        if current {
            // A will still waiting for its delay is published when the session ends.
            if let Some(will) = self.session_mut(timer.index).and_then(|s| s.will.take()) {
                self.publish_will(will.message, timer.at());
            }
            self.end_session(timer.index, SessionEnd::Expired);
        }
    }

    // ----- input ---------------------------------------------------------------------------

    /// Handles bytes read from `conn`: every whole packet at the start of `bytes` is processed,
    /// and the number of bytes they used is returned (the port keeps the rest and calls again
    /// when more arrive). After a protocol violation the rest is discarded (all of `bytes` is
    /// reported used) and the connection is closing.
    pub fn handle_input(&mut self, conn: ConnId, bytes: &[u8], now: Instant) -> usize {
        let mut used = 0;
        loop {
            let Some(connection) = self.connection(conn) else {
                return bytes.len();
            };
            if matches!(connection.phase, Phase::Closing) {
                return bytes.len();
            }
            if connection.pending_access.is_some() {
                // Nothing more is handled until the pending access check is resolved.
                return used;
            }
            let version = connection.version;
            let max = self.config.limits.max_packet_size as usize;
            let connected = matches!(connection.phase, Phase::Connected);
            let rest = &bytes[used..];
            let len = match codec::frame(rest, max) {
                Ok(codec::Frame::Incomplete { .. }) => return used,
                Ok(codec::Frame::Complete { len, .. }) => len,
                Err(error) => {
                    self.decode_failed(conn, error, rest, now);
                    return bytes.len();
                }
            };
            let whole = rest.get(..len).unwrap_or_default();
            // PUBLISH, the packet that matters for speed, skips the `Packet` enum (and is handled
            // where it was decoded, not moved out first).
            let handled = if connected && codec::is_publish(whole) {
                codec::decode_publish(whole, version).map(|publish| {
                    self.begin_packet(conn, now);
                    self.handle_publish(conn, publish, now);
                })
            } else {
                codec::decode_packet(whole, version).map(|packet| {
                    self.begin_packet(conn, now);
                    self.handle_packet(conn, packet, now);
                })
            };
            match handled {
                Ok(()) => {
                    used += len;
                    self.input = None;
                    self.stash_if_pending(conn, &rest[..len]);
                    if self.is_paused(conn) {
                        // Flow control: leave the rest for when the subscribers have drained.
                        return used;
                    }
                }
                Err(error) => {
                    self.decode_failed(conn, error, rest, now);
                    return bytes.len();
                }
            }
        }
    }

    /// Before a decoded packet of `conn` is handled.
    #[inline]
    fn begin_packet(&mut self, conn: ConnId, now: Instant) {
        self.input_was_paused = self.connection_mut(conn).is_some_and(|connection| {
            connection.last_received = now;
            connection.paused
        });
        self.replay.reset();
        self.input = Some(conn);
    }

    /// After a packet was handled: if an access check answered Pending, keep the packet (and
    /// the answers so far) until [`Broker::resolve_access`].
    fn stash_if_pending(&mut self, conn: ConnId, packet: &[u8]) {
        if !self.replay.pending {
            // The common case: keep the answers' buffer for the next packet.
            self.replay.reset();
            return;
        }
        let replay = core::mem::take(&mut self.replay);
        if let Some(connection) = self.connection_mut(conn) {
            if !matches!(connection.phase, Phase::Closing) {
                connection.pending_access = Some(Box::new(PendingAccess {
                    packet: Box::from(packet),
                    answers: replay.answers,
                    resolved: false,
                }));
            }
        }
    }

    /// Completes an access check that [`Authorizer::check`] left [`AccessDecision::Pending`]
    /// for `conn`: the kept PUBLISH or SUBSCRIBE is handled with this answer (a SUBSCRIBE with
    /// more filters may ask again), and once it is done the connection is marked writable (see
    /// [`Broker::poll_writable`]) so that the port reads from it again. A `Pending` decision,
    /// a stale `conn` or a connection with nothing pending is ignored.
    pub fn resolve_access(&mut self, conn: ConnId, decision: AccessDecision, now: Instant) {
        let allowed = match decision {
            AccessDecision::Allow => true,
            AccessDecision::Deny => false,
            AccessDecision::Pending => return,
        };
        let Some(connection) = self.connection_mut(conn) else {
            return;
        };
        let Some(mut pending) = connection.pending_access.take() else {
            return;
        };
        let version = connection.version;
        pending.answers.push(allowed);
        pending.resolved = true;
        let max = self.config.limits.max_packet_size as usize;
        let PendingAccess {
            packet, answers, ..
        } = *pending;
        self.replay = AccessReplay {
            unreported: Some(answers.len() - 1),
            answers,
            next: 0,
            pending: false,
        };
        if let Ok(Decoded::Packet {
            packet: decoded, ..
        }) = codec::decode(&packet, version, max)
        {
            self.input = Some(conn);
            self.input_was_paused = self.connection(conn).is_some_and(|c| c.paused);
            self.handle_packet(conn, decoded, now);
            self.input = None;
        }
        self.stash_if_pending(conn, &packet);
        if let Some(connection) = self.connection_mut(conn) {
            if connection.pending_access.is_none() {
                // Wake the port's task for it, so that it reads again.
                connection.queued_writable = false;
                self.mark_writable(conn);
            }
        }
    }

    fn decode_failed(&mut self, conn: ConnId, error: DecodeError, bytes: &[u8], now: Instant) {
        let awaiting_connect = self
            .connection(conn)
            .is_some_and(|c| matches!(c.phase, Phase::AwaitingConnect));
        if !awaiting_connect {
            self.protocol_violation(conn, error.reason_code(), now);
            return;
        }
        // A CONNECT we could not decode: answer in the version it claims where we can tell
        // `[MQTT-3.1.2-2]`, else just close `[MQTT-4.8.0-1]`.
        let is_connect = bytes.first().is_some_and(|b| b >> 4 == 1);
        let claimed_level = connect_level(bytes);
        if is_connect {
            match (error, claimed_level) {
                (DecodeError::UnsupportedProtocolLevel(_), _) => {
                    self.refuse_with_version(
                        conn,
                        ProtocolVersion::V3_1_1,
                        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                        now,
                    );
                    return;
                }
                (_, Some(5)) => {
                    self.refuse_with_version(conn, ProtocolVersion::V5, error.reason_code(), now);
                    return;
                }
                _ => {}
            }
        }
        self.stats.protocol_errors += 1;
        self.begin_close(conn, CloseCause::ProtocolError(error.reason_code()), now);
    }

    fn handle_packet(&mut self, conn: ConnId, packet: Packet<'_>, now: Instant) {
        let Some(connection) = self.connection(conn) else {
            return;
        };
        match (&connection.phase, packet) {
            (Phase::AwaitingConnect, Packet::Connect(connect)) => {
                self.handle_connect(conn, connect, now)
            }
            // The first packet must be CONNECT `[MQTT-3.1.0-1]`.
            (Phase::AwaitingConnect, _) => {
                self.stats.protocol_errors += 1;
                self.begin_close(
                    conn,
                    CloseCause::ProtocolError(ReasonCode::PROTOCOL_ERROR),
                    now,
                );
            }
            (Phase::Authenticating(_), Packet::Auth(auth)) => {
                self.handle_auth_step(conn, auth, now)
            }
            (Phase::Authenticating(_), _) => {
                self.protocol_violation(conn, ReasonCode::PROTOCOL_ERROR, now)
            }
            (Phase::Closing, _) => {}
            (Phase::Connected, packet) => match packet {
                Packet::Publish(publish) => self.handle_publish(conn, publish, now),
                Packet::PubAck(ack) => self.handle_puback(conn, ack, now),
                Packet::PubRec(ack) => self.handle_pubrec(conn, ack, now),
                Packet::PubRel(ack) => self.handle_pubrel(conn, ack),
                Packet::PubComp(ack) => self.handle_pubcomp(conn, ack, now),
                Packet::Subscribe(subscribe) => self.handle_subscribe(conn, subscribe, now),
                Packet::Unsubscribe(unsubscribe) => self.handle_unsubscribe(conn, unsubscribe),
                Packet::PingReq => {
                    // A connection that only pings is idle: its session gives back the room
                    // its earlier traffic took (not at every acknowledgement: a busy session
                    // would allocate it again at once).
                    if let Some(index) = self.connection(conn).and_then(|c| c.session) {
                        if let Some(session) = self.session_mut(index) {
                            session.tidy();
                        }
                    }
                    self.send(conn, &Packet::PingResp)
                }
                Packet::Disconnect(disconnect) => self.handle_disconnect(conn, disconnect, now),
                Packet::Auth(auth) => self.handle_auth_step(conn, auth, now),
                // A second CONNECT `[MQTT-3.1.0-2]`, or a packet only a server sends.
                Packet::Connect(_)
                | Packet::ConnAck(_)
                | Packet::SubAck(_)
                | Packet::UnsubAck(_)
                | Packet::PingResp => {
                    self.protocol_violation(conn, ReasonCode::PROTOCOL_ERROR, now)
                }
            },
        }
    }

    // ----- CONNECT and authentication -------------------------------------------------------

    fn refuse_with_version(
        &mut self,
        conn: ConnId,
        version: ProtocolVersion,
        reason: ReasonCode,
        now: Instant,
    ) {
        if let Some(connection) = self.connection_mut(conn) {
            connection.version = version;
        }
        self.send_failure(conn, PacketType::ConnAck, reason, |text| {
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason,
                properties: ConnAckProperties {
                    reason_string: text,
                    ..ConnAckProperties::default()
                },
            })
        });
        self.stats.denials += 1;
        self.begin_close(conn, CloseCause::Refused(reason), now);
    }

    fn refuse(&mut self, conn: ConnId, reason: ReasonCode, now: Instant) {
        let version = self
            .connection(conn)
            .map_or(ProtocolVersion::V3_1_1, |c| c.version);
        self.refuse_with_version(conn, version, reason, now);
    }

    fn assign_client_id(&mut self) -> Box<str> {
        loop {
            self.assigned_ids += 1;
            let mut id = String::with_capacity(24);
            let mixed = self.assigned_ids.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.seed;
            let _ = write!(id, "femtomq-{mixed:016x}");
            // With several workers, an assigned id must belong to this one.
            let ours = client_owner(&id, self.config.workers) == self.config.worker;
            if ours && self.session_index(&id).is_none() {
                return id.into_boxed_str();
            }
        }
    }

    fn handle_connect(&mut self, conn: ConnId, connect: Connect<'_>, now: Instant) {
        let v5 = connect.version.is_v5();
        if let Some(connection) = self.connection_mut(conn) {
            connection.version = connect.version;
            if v5 {
                let properties = &connect.properties;
                // Known from here on, so that a refusing CONNACK respects them too.
                connection.request_problem_information =
                    properties.request_problem_information.unwrap_or(true);
                connection.maximum_packet_size = properties
                    .maximum_packet_size
                    .map_or(u32::MAX, NonZeroU32::get);
            }
        }
        // A client taking over its own connected session does not add a connection.
        let takeover = self
            .session_index(connect.client_id)
            .and_then(|index| self.session(index))
            .is_some_and(|session| session.conn.is_some());
        if self.stats.connected >= self.config.limits.max_connections && !takeover {
            self.refuse(conn, ReasonCode::QUOTA_EXCEEDED, now);
            return;
        }
        let mut assigned_client_id = false;
        let client_id: Box<str> = if connect.client_id.is_empty() {
            // 3.1.1 accepts an empty id only with a clean session `[MQTT-3.1.3-8]`.
            if !v5 && !connect.clean_start {
                self.refuse(conn, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, now);
                return;
            }
            assigned_client_id = true;
            self.assign_client_id()
        } else {
            Box::from(connect.client_id)
        };
        if client_id.len() > usize::from(self.config.max_client_id_length) {
            self.refuse(conn, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, now);
            return;
        }
        let mut keep_alive = connect.keep_alive;
        let mut server_keep_alive = None;
        if let Some(max) = self.config.max_keep_alive {
            if keep_alive > max || keep_alive == 0 {
                if !v5 {
                    self.refuse(conn, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, now);
                    return;
                }
                keep_alive = max;
                server_keep_alive = Some(max);
            }
        }
        let properties = &connect.properties;
        let session_expiry = if v5 {
            properties.session_expiry_interval.unwrap_or(0)
        } else if connect.clean_start {
            0
        } else {
            u32::MAX
        };
        // A will that asks to be retained when retained messages are not supported: CONNACK
        // 0x9A Retain not supported `[MQTT-3.2.2-13]`.
        if connect.will.is_some_and(|will| will.retain) && !self.config.retain_available {
            self.refuse(conn, ReasonCode::RETAIN_NOT_SUPPORTED, now);
            return;
        }
        let will = connect.will.map(|will| {
            let mut message = Message::new(will.topic, will.payload, will.qos, will.retain, now);
            message.properties = MessageProperties::from_will(&will.properties);
            Box::new(PendingWill {
                message: Arc::new(message),
                delay_secs: will.properties.will_delay_interval.unwrap_or(0),
                due: None,
            })
        });
        let request = Box::new(ConnectRequest {
            client_id,
            assigned_client_id,
            clean_start: connect.clean_start,
            keep_alive,
            server_keep_alive,
            session_expiry: session_expiry.min(self.config.max_session_expiry),
            requested_session_expiry: session_expiry,
            receive_maximum: properties.receive_maximum.map_or(u16::MAX, NonZeroU16::get),
            maximum_packet_size: properties
                .maximum_packet_size
                .map_or(u32::MAX, NonZeroU32::get),
            topic_alias_maximum: properties.topic_alias_maximum.unwrap_or(0),
            will,
            username: connect.username.map(Box::from),
            password: connect.password.map(Box::from),
            auth_method: properties.authentication_method.map(Box::from),
        });
        let listener = self.connection(conn).map_or(0, |c| c.listener);
        let info = ConnectInfo {
            client_id: &request.client_id,
            username: request.username.as_deref(),
            password: request.password.as_deref(),
            version: connect.version,
            listener,
            conn,
        };
        let decision = match properties.authentication_method {
            Some(method) => {
                self.authenticator
                    .start_enhanced(&info, method, properties.authentication_data)
            }
            None => self.authenticator.authenticate(&info),
        };
        self.apply_connect_decision(conn, request, decision, now);
    }

    /// Completes a decision that [`Authenticator`] or [`Authorizer`] left
    /// [`AuthDecision::Pending`] for `conn`.
    pub fn resolve_auth(&mut self, conn: ConnId, decision: AuthDecision, now: Instant) {
        let Some(connection) = self.connection_mut(conn) else {
            return;
        };
        match core::mem::replace(&mut connection.phase, Phase::AwaitingConnect) {
            Phase::Authenticating(request) => {
                self.apply_connect_decision(conn, request, decision, now)
            }
            other => {
                connection.phase = other;
                if connection.reauthenticating {
                    self.apply_reauth_decision(conn, decision, now);
                }
            }
        }
    }

    fn apply_connect_decision(
        &mut self,
        conn: ConnId,
        request: Box<ConnectRequest>,
        decision: AuthDecision,
        now: Instant,
    ) {
        match decision {
            AuthDecision::Allow { username, data } => {
                self.finish_connect(conn, request, username, data, now)
            }
            AuthDecision::Deny(reason) => self.refuse(conn, reason, now),
            AuthDecision::Continue { data } => {
                let Some(method) = request.auth_method.clone() else {
                    // Only enhanced authentication has further steps.
                    self.refuse(conn, ReasonCode::NOT_AUTHORIZED, now);
                    return;
                };
                self.send_auth(
                    conn,
                    ReasonCode::CONTINUE_AUTHENTICATION,
                    &method,
                    Some(&data),
                );
                if let Some(connection) = self.connection_mut(conn) {
                    connection.phase = Phase::Authenticating(request);
                }
            }
            AuthDecision::Pending => {
                if let Some(connection) = self.connection_mut(conn) {
                    connection.phase = Phase::Authenticating(request);
                }
            }
        }
    }

    fn send_auth(&mut self, conn: ConnId, reason: ReasonCode, method: &str, data: Option<&[u8]>) {
        let auth = Auth {
            reason,
            properties: AuthProperties {
                authentication_method: Some(method),
                authentication_data: data,
                ..AuthProperties::default()
            },
        };
        self.send(conn, &Packet::Auth(auth));
    }

    /// An AUTH packet: the next step of an enhanced authentication, or a re-authentication.
    fn handle_auth_step(&mut self, conn: ConnId, auth: Auth<'_>, now: Instant) {
        let data = auth.properties.authentication_data;
        // Borrow the fields apart: the authenticator is called while the connection is read.
        let Some(connection) = find_connection(&self.connections, conn) else {
            return;
        };
        let expected = match &connection.phase {
            Phase::Authenticating(request) => request.auth_method.as_deref(),
            _ => connection.extras().auth_method.as_deref(),
        };
        // AUTH is only valid inside an exchange of the method CONNECT chose `[MQTT-4.12.0-5]`.
        let Some(method) = auth
            .properties
            .authentication_method
            .filter(|m| Some(*m) == expected)
        else {
            self.protocol_violation(conn, ReasonCode::PROTOCOL_ERROR, now);
            return;
        };
        let session = connection
            .session
            .and_then(|index| self.sessions.get(index as usize)?.as_ref());
        let (info, step) = match &connection.phase {
            Phase::Authenticating(request) => {
                let info = ConnectInfo {
                    client_id: &request.client_id,
                    username: request.username.as_deref(),
                    password: request.password.as_deref(),
                    version: connection.version,
                    listener: connection.listener,
                    conn,
                };
                (
                    info,
                    (auth.reason == ReasonCode::CONTINUE_AUTHENTICATION).then_some(false),
                )
            }
            _ => {
                let Some(session) = session else {
                    return;
                };
                let info = ConnectInfo {
                    client_id: &session.client_id,
                    username: session.username.as_deref(),
                    password: None,
                    version: connection.version,
                    listener: connection.listener,
                    conn,
                };
                let step = match auth.reason {
                    ReasonCode::RE_AUTHENTICATE => Some(true),
                    ReasonCode::CONTINUE_AUTHENTICATION if connection.reauthenticating => {
                        Some(false)
                    }
                    _ => None,
                };
                (info, step)
            }
        };
        let decision = match step {
            Some(true) => self.authenticator.start_enhanced(&info, method, data),
            Some(false) => self.authenticator.continue_enhanced(&info, method, data),
            None => {
                self.protocol_violation(conn, ReasonCode::PROTOCOL_ERROR, now);
                return;
            }
        };
        let connecting = matches!(connection.phase, Phase::Authenticating(_));
        if connecting {
            self.resolve_auth(conn, decision, now);
        } else {
            if let Some(connection) = self.connection_mut(conn) {
                connection.reauthenticating = true;
            }
            self.apply_reauth_decision(conn, decision, now);
        }
    }

    fn apply_reauth_decision(&mut self, conn: ConnId, decision: AuthDecision, now: Instant) {
        let Some(method) = self
            .connection(conn)
            .and_then(|c| c.extras().auth_method.clone())
        else {
            return;
        };
        match decision {
            AuthDecision::Allow { data, username } => {
                let mut session = None;
                if let Some(connection) = self.connection_mut(conn) {
                    connection.reauthenticating = false;
                    session = connection.session;
                }
                // A new identity from re-authentication applies to authorization from now on.
                if let (Some(index), Some(username)) = (session, username) {
                    if let Some(session) = self.session_mut(index) {
                        session.username = Some(username);
                    }
                }
                self.send_auth(conn, ReasonCode::SUCCESS, &method, data.as_deref());
            }
            AuthDecision::Continue { data } => {
                self.send_auth(
                    conn,
                    ReasonCode::CONTINUE_AUTHENTICATION,
                    &method,
                    Some(&data),
                );
            }
            AuthDecision::Deny(reason) => {
                self.stats.denials += 1;
                self.send_disconnect(conn, reason);
                self.begin_close(conn, CloseCause::Refused(reason), now);
            }
            AuthDecision::Pending => {}
        }
    }

    #[allow(clippy::boxed_local)]
    fn finish_connect(
        &mut self,
        conn: ConnId,
        request: Box<ConnectRequest>, // boxed where it waited for authentication; moved on here
        username: Option<Box<str>>,
        auth_data: Option<Box<[u8]>>,
        now: Instant,
    ) {
        let username = username.or(request.username.clone());
        let limits = self.config.limits;
        // Take over an existing session's connection `[MQTT-3.1.4-3]`.
        let existing = self.session_index(&request.client_id);
        if let Some(index) = existing {
            if let Some(old) = self.session(index).and_then(|s| s.conn) {
                if old != conn {
                    if self.connection(old).is_some_and(|c| c.version.is_v5()) {
                        self.send_disconnect(old, ReasonCode::SESSION_TAKEN_OVER);
                    }
                    self.begin_close(old, CloseCause::TakenOver, now);
                }
            }
        }
        // The takeover may have ended the old session (expiry 0).
        let existing = self.session_index(&request.client_id);
        let (index, session_present) = match existing {
            Some(index) if !request.clean_start => (index, true),
            Some(index) => {
                // The old session ends here, so a will still waiting for its delay is due now
                // (§3.1.3.2.2: published when the delay passes or the session ends).
                let pending_will = self.session_mut(index).and_then(|s| {
                    s.will.as_ref()?.due?;
                    s.will.take()
                });
                if let Some(will) = pending_will {
                    self.publish_will(will.message, now);
                }
                self.end_session(index, SessionEnd::CleanStart);
                (self.create_session(request.client_id.clone()), false)
            }
            None => (self.create_session(request.client_id.clone()), false),
        };
        let receive_maximum = request.receive_maximum.min(limits.max_inflight.max(1));
        let Some(connection) = self.connection_mut(conn) else {
            return;
        };
        connection.phase = Phase::Connected;
        connection.session = Some(index);
        connection.keep_alive = request.keep_alive;
        connection.receive_maximum = receive_maximum;
        connection.maximum_packet_size = request.maximum_packet_size;
        connection.topic_alias_maximum = request.topic_alias_maximum;
        if request.auth_method.is_some() || connection.extras.is_some() {
            connection.extras_mut().auth_method = request.auth_method.clone();
        }
        connection.connect_expiry_zero = request.requested_session_expiry == 0;
        let listener = connection.listener;
        let version = connection.version;
        self.arm_keep_alive(conn, request.keep_alive, now);
        let Some(session) = self.session_mut(index) else {
            return;
        };
        session.conn = Some(conn);
        session.epoch = session.epoch.wrapping_add(1);
        session.since = now;
        session.username = username.clone();
        session.listener = listener;
        session.expiry_secs = request.session_expiry;
        // A new connection before the will delay passed cancels that will `[MQTT-3.1.3-9]`.
        session.will = request.will;
        self.stats.connected += 1;
        self.persist_connected(index, conn);

        let properties = if version.is_v5() {
            ConnAckProperties {
                // The server tells the expiry it uses when it is not the client's (§3.2.2.3.2).
                session_expiry_interval: (request.session_expiry
                    != request.requested_session_expiry)
                    .then_some(request.session_expiry),
                receive_maximum: NonZeroU16::new(limits.max_inflight),
                maximum_packet_size: NonZeroU32::new(limits.max_packet_size),
                topic_alias_maximum: Some(self.config.topic_alias_maximum),
                retain_available: (!self.config.retain_available).then_some(false),
                assigned_client_identifier: request
                    .assigned_client_id
                    .then_some(&*request.client_id),
                server_keep_alive: request.server_keep_alive,
                authentication_method: request.auth_method.as_deref(),
                authentication_data: auth_data.as_deref(),
                ..ConnAckProperties::default()
            }
        } else {
            ConnAckProperties::default()
        };
        let connack = ConnAck {
            session_present,
            reason: ReasonCode::SUCCESS,
            properties,
        };
        self.send(conn, &Packet::ConnAck(connack));
        self.events.push_back(Event::ClientConnected {
            conn,
            session: self.global(index),
            client_id: request.client_id.clone(),
            username,
            version,
            session_present,
        });
        if session_present {
            self.resume_inflight(index, conn, now);
        }
        self.pump(index, now);
    }

    fn create_session(&mut self, client_id: Box<str>) -> u32 {
        let index = match self.free_sessions.pop() {
            Some(index) => index,
            None => {
                push_by_quarters(&mut self.sessions, None);
                (self.sessions.len() - 1) as u32
            }
        };
        self.sessions[index as usize] = Some(Box::new(Session::new(client_id.clone())));
        let hash = self.client_id_hash(&client_id);
        self.by_client_id.insert(hash, index);
        self.stats.sessions += 1;
        self.events.push_back(Event::SessionCreated {
            session: self.global(index),
            client_id,
        });
        index
    }

    /// Resends what was in flight when the previous connection ended: PUBLISH with DUP for
    /// unacknowledged messages, PUBREL for released ones `[MQTT-4.4.0-1]`. The new connection
    /// may have a smaller Receive Maximum: PUBLISH packets beyond it wait for acknowledgements
    /// (`pump`) with their original packet identifiers `[MQTT-3.3.4-9]`.
    fn resume_inflight(&mut self, index: u32, conn: ConnId, now: Instant) {
        let window = self
            .connection(conn)
            .map_or(0, |c| usize::from(c.receive_maximum));
        let Some(session) = self.session_mut(index) else {
            return;
        };
        // A QoS 2 message awaiting PUBCOMP still counts against the window.
        let mut room = window.saturating_sub(
            session
                .backlog()
                .inflight
                .iter()
                .filter(|e| e.awaiting == Awaiting::PubComp)
                .count(),
        );
        // In the original order `[MQTT-4.6.0-1]`.
        let mut position = 0;
        while let Some(entry) = self
            .session(index)
            .and_then(|s| s.backlog().inflight.get(position))
        {
            let (awaiting, packet_id) = (entry.awaiting, entry.packet_id);
            if awaiting == Awaiting::PubComp {
                self.send(conn, &Packet::PubRel(Ack::success(packet_id)));
                position += 1;
                continue;
            }
            if room == 0 {
                if let Some(session) = self.session_mut(index) {
                    let backlog = session.backlog_mut();
                    backlog.inflight[position].resend = true;
                    backlog.resend_pending = true;
                }
                position += 1;
                continue;
            }
            let outgoing = entry.outgoing.clone();
            if self.write_publish(conn, &outgoing, Some(packet_id), true, now) {
                if let Some(session) = self.session_mut(index) {
                    session.backlog_mut().inflight[position].resend = false;
                }
                room -= 1;
                position += 1;
            } else if let Some(session) = self.session_mut(index) {
                // Too large for the new connection's Maximum Packet Size: discarded as if
                // delivered `[MQTT-3.1.2-25]`.
                let Some(entry) = session.backlog_mut().inflight.remove(position) else {
                    return;
                };
                self.dropped(index, entry.outgoing, DropReason::TooLarge);
            }
        }
    }

    /// Resends the PUBLISH packets still marked for resending while the window has room.
    fn resend_inflight(&mut self, index: u32, conn: ConnId, now: Instant) {
        let window = self
            .connection(conn)
            .map_or(0, |c| usize::from(c.receive_maximum));
        loop {
            let Some(session) = self.session_mut(index) else {
                return;
            };
            if !session.backlog().resend_pending {
                return;
            }
            let Some(position) = session.backlog().inflight.iter().position(|e| e.resend) else {
                session.backlog_mut().resend_pending = false;
                return;
            };
            let outstanding = session
                .backlog()
                .inflight
                .iter()
                .filter(|e| !e.resend)
                .count();
            if outstanding >= window {
                return;
            }
            let entry = &session.backlog().inflight[position];
            let (outgoing, packet_id) = (entry.outgoing.clone(), entry.packet_id);
            if self.write_publish(conn, &outgoing, Some(packet_id), true, now) {
                if let Some(session) = self.session_mut(index) {
                    session.backlog_mut().inflight[position].resend = false;
                }
            } else if let Some(session) = self.session_mut(index) {
                // Too large for the new connection's Maximum Packet Size: discarded as if
                // delivered `[MQTT-3.1.2-25]`.
                let Some(entry) = session.backlog_mut().inflight.remove(position) else {
                    return;
                };
                self.dropped(index, entry.outgoing, DropReason::TooLarge);
            }
        }
    }

    fn handle_disconnect(&mut self, conn: ConnId, disconnect: Disconnect<'_>, now: Instant) {
        if let Some(expiry) = disconnect.properties.session_expiry_interval {
            let (index, was_zero) = self
                .connection(conn)
                .map_or((None, false), |c| (c.session, c.connect_expiry_zero));
            // Expiry 0 in CONNECT cannot become non-zero at DISCONNECT: a Protocol Error
            // (§3.14.2.2.2). What counts is what CONNECT said, not the server's cap of it.
            if was_zero && expiry != 0 {
                self.protocol_violation(conn, ReasonCode::PROTOCOL_ERROR, now);
                return;
            }
            let max = self.config.max_session_expiry;
            if let Some(session) = index.and_then(|index| self.session_mut(index)) {
                session.expiry_secs = expiry.min(max);
            }
        }
        self.begin_close(conn, CloseCause::ClientDisconnect(disconnect.reason), now);
    }

    // ----- PUBLISH from clients -------------------------------------------------------------

    fn client_info(&self, index: u32) -> Option<ClientInfo<'_>> {
        let session = self.session(index)?;
        Some(ClientInfo {
            client_id: &session.client_id,
            username: session.username.as_deref(),
            listener: session.listener,
            conn: session.conn,
        })
    }

    /// A check that must be answered at once (each delivery).
    fn authorized(&mut self, index: u32, access: Access, topic: &str) -> bool {
        let allowed = self
            .client_info(index)
            .is_some_and(|info| self.authorizer.authorize(&info, access, topic));
        if !allowed {
            self.access_denied(index, access, topic);
        }
        allowed
    }

    /// The check of an incoming PUBLISH or of one SUBSCRIBE filter: `None` while the
    /// authorizer's answer is pending (the packet is then kept, see [`Broker::resolve_access`]).
    /// When a kept packet is handled again, the answers given before are reused in order.
    fn check_access(&mut self, index: u32, access: Access, topic: &str) -> Option<bool> {
        let position = self.replay.next;
        self.replay.next += 1;
        if let Some(&allowed) = self.replay.answers.get(position) {
            if self.replay.unreported == Some(position) {
                self.replay.unreported = None;
                if !allowed {
                    self.access_denied(index, access, topic);
                }
            }
            return Some(allowed);
        }
        let decision = match self.client_info(index) {
            Some(info) => self.authorizer.check(&info, access, topic),
            None => AccessDecision::Deny,
        };
        let allowed = match decision {
            AccessDecision::Allow => true,
            AccessDecision::Deny => false,
            AccessDecision::Pending => {
                self.replay.pending = true;
                return None;
            }
        };
        self.replay.answers.push(allowed);
        if !allowed {
            self.access_denied(index, access, topic);
        }
        Some(allowed)
    }

    fn access_denied(&mut self, index: u32, access: Access, topic: &str) {
        self.stats.denials += 1;
        let username = self
            .session(index)
            .and_then(|session| session.username.clone());
        self.events.push_back(Event::AccessDenied {
            session: self.global(index),
            username,
            access,
            topic: Box::from(topic),
        });
    }

    /// Resolves the topic of an incoming PUBLISH through the connection's alias table.
    fn resolve_topic(
        &mut self,
        conn: ConnId,
        publish: &Publish<'_>,
    ) -> Result<Box<str>, ReasonCode> {
        let alias_maximum = self.config.topic_alias_maximum;
        let Some(connection) = self.connection_mut(conn) else {
            return Err(ReasonCode::UNSPECIFIED_ERROR);
        };
        let Some(alias) = publish.properties.topic_alias else {
            return Ok(Box::from(publish.topic));
        };
        // Aliases above what the broker announced are a Topic Alias invalid `[MQTT-3.3.2-9]`.
        if alias.get() > alias_maximum {
            return Err(ReasonCode::TOPIC_ALIAS_INVALID);
        }
        let slot = usize::from(alias.get() - 1);
        let aliases = &mut connection.extras_mut().inbound_aliases;
        if aliases.len() <= slot {
            aliases.resize(slot + 1, None);
        }
        if publish.topic.is_empty() {
            // An alias with no mapping yet and an empty topic name is a Protocol Error
            // (MQTT 5 §3.3.4, "PUBLISH Actions", which gives the rule no statement id).
            aliases[slot].clone().ok_or(ReasonCode::PROTOCOL_ERROR)
        } else {
            let topic: Box<str> = Box::from(publish.topic);
            aliases[slot] = Some(topic.clone());
            Ok(topic)
        }
    }

    /// The flow that copies for other workers carry, when they carry one.
    fn flow_of(&mut self, index: u32, packet_id: u16, resend: bool) -> Option<Qos2Flow> {
        if !self.flows_cross_workers() {
            return None;
        }
        self.routings += 1;
        Some(Qos2Flow {
            publisher: self.session(index)?.client_id.clone(),
            packet_id,
            resend,
            routing: self.routings,
        })
    }

    /// A QoS 2 PUBLISH sent again before PUBREL, with several workers and persistence: this
    /// worker's sessions have their copies (recorded with the inbound packet identifier), the
    /// other workers' get theirs again, and keep them only if they did not store them before
    /// (a crash between the two logs); PUBREC follows as for the first.
    fn resend_to_workers(&mut self, conn: ConnId, index: u32, publish: Publish<'_>, now: Instant) {
        let QosPid::ExactlyOnce(id) = publish.qos_pid else {
            return;
        };
        let v5 = self.connection(conn).is_some_and(|c| c.version.is_v5());
        let topic = match self.resolve_topic(conn, &publish) {
            Ok(topic) => topic,
            Err(reason) => {
                self.protocol_violation(conn, reason, now);
                return;
            }
        };
        let message = message_of(&publish, topic, v5, now);
        self.routing_flow = self.flow_of(index, id.get(), true);
        self.route(Some(index), message, now);
        self.routing_flow = None;
        self.send_publish_ack(conn, publish.qos_pid, ReasonCode::SUCCESS);
    }

    fn send_publish_ack(&mut self, conn: ConnId, qos_pid: QosPid, reason: ReasonCode) {
        let ack = |id| Ack {
            packet_id: id,
            reason,
            properties: AckProperties::default(),
        };
        match qos_pid {
            QosPid::AtMostOnce => {}
            QosPid::AtLeastOnce(id) => self.send(conn, &Packet::PubAck(ack(id))),
            QosPid::ExactlyOnce(id) => self.send(conn, &Packet::PubRec(ack(id))),
        }
    }

    fn handle_publish(&mut self, conn: ConnId, publish: Publish<'_>, now: Instant) {
        let Some(connection) = self.connection(conn) else {
            return;
        };
        let Some(index) = connection.session else {
            return;
        };
        let v5 = connection.version.is_v5();
        // Counted once, not again when a packet kept for an access decision is handled again.
        if self.replay.answers.is_empty() {
            self.stats.messages_received += 1;
        }
        // A client must not send subscription identifiers `[MQTT-3.3.4-6]`.
        if !publish.properties.subscription_identifiers.is_empty() {
            self.protocol_violation(conn, ReasonCode::PROTOCOL_ERROR, now);
            return;
        }
        if publish.retain && !self.config.retain_available {
            // The client was told Retain Available 0 `[MQTT-3.2.2-14]`: DISCONNECT 0x9A Retain
            // not supported (§3.3.1.3).
            self.protocol_violation(conn, ReasonCode::RETAIN_NOT_SUPPORTED, now);
            return;
        }
        if let QosPid::ExactlyOnce(id) = publish.qos_pid {
            let Some(session) = self.session(index) else {
                return;
            };
            // A repeated QoS 2 PUBLISH before PUBREL is acknowledged, not delivered again; with
            // several workers its copies for their sessions go again, marked as resent (see
            // `Qos2Flow`).
            if session.backlog().inbound_qos2.contains(&id.get()) {
                if self.flows_cross_workers() {
                    self.resend_to_workers(conn, index, publish, now);
                } else {
                    self.send_publish_ack(conn, publish.qos_pid, ReasonCode::SUCCESS);
                }
                return;
            }
            // More unreleased QoS 2 messages than the Receive Maximum we announced, which the
            // client must not send `[MQTT-3.3.4-7]`: DISCONNECT 0x93 (§3.3.4). 3.1.1 has no
            // Receive Maximum; its packet identifiers bound the set to 65,535 entries.
            if v5
                && session.backlog().inbound_qos2.len()
                    >= usize::from(self.config.limits.max_inflight)
            {
                self.protocol_violation(conn, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED, now);
                return;
            }
        }
        let topic = match self.resolve_topic(conn, &publish) {
            Ok(topic) => topic,
            Err(reason) => {
                self.protocol_violation(conn, reason, now);
                return;
            }
        };
        // The codec validated the name (and the one an alias stands for, when it was set).
        if crate::topic::check_name_bounds(&topic, &self.config.limits).is_err() {
            self.reject_publish(
                conn,
                publish.qos_pid,
                ReasonCode::TOPIC_NAME_INVALID,
                v5,
                now,
            );
            return;
        }
        if publish.properties.payload_format_indicator == Some(true)
            && core::str::from_utf8(publish.payload).is_err()
        {
            self.reject_publish(
                conn,
                publish.qos_pid,
                ReasonCode::PAYLOAD_FORMAT_INVALID,
                v5,
                now,
            );
            return;
        }
        let Some(allowed) = self.check_access(index, Access::Publish, &topic) else {
            // Kept until `resolve_access`.
            return;
        };
        if !allowed {
            // 3.1.1 cannot say no: the message is acknowledged and dropped.
            if v5 {
                self.send_publish_failure(conn, publish.qos_pid, ReasonCode::NOT_AUTHORIZED);
            } else {
                self.send_publish_ack(conn, publish.qos_pid, ReasonCode::SUCCESS);
            }
            return;
        }
        if self.store_refuses(publish.qos_pid.qos(), publish.retain) {
            self.stats.persist_refused += 1;
            if v5 {
                self.reject_publish(conn, publish.qos_pid, ReasonCode::QUOTA_EXCEEDED, v5, now);
            } else {
                // 3.1.1 cannot say no: no acknowledgement, the client sends it again later.
                self.begin_close(conn, CloseCause::Refused(ReasonCode::QUOTA_EXCEEDED), now);
            }
            return;
        }
        let message = message_of(&publish, topic, v5, now);
        // Recorded before the message is routed, so that copies for other workers' sessions
        // wait for this record (see `take_remote`).
        if let QosPid::ExactlyOnce(id) = publish.qos_pid {
            if let Some(session) = self.session_mut(index) {
                session.backlog_mut().inbound_qos2.push(id.get());
            }
            self.persist_inbound(index, id.get(), true);
            self.routing_flow = self.flow_of(index, id.get(), false);
        }
        let (delivered, retain_failure) = self.accept_message(Some(index), message, now);
        self.routing_flow = None;
        let reason = match (retain_failure, delivered) {
            (Some(reason), _) if v5 => {
                self.send_publish_failure(conn, publish.qos_pid, reason);
                return;
            }
            (_, 0) if v5 => ReasonCode::NO_MATCHING_SUBSCRIBERS,
            _ => ReasonCode::SUCCESS,
        };
        self.send_publish_ack(conn, publish.qos_pid, reason);
    }

    /// Refuses a PUBLISH: a reason code in PUBACK/PUBREC for QoS 1/2 in MQTT 5, DISCONNECT for
    /// QoS 0 in MQTT 5, acknowledged and dropped in 3.1.1.
    fn reject_publish(
        &mut self,
        conn: ConnId,
        qos_pid: QosPid,
        reason: ReasonCode,
        v5: bool,
        now: Instant,
    ) {
        match (qos_pid, v5) {
            (QosPid::AtMostOnce, true) => self.protocol_violation(conn, reason, now),
            (_, true) => self.send_publish_failure(conn, qos_pid, reason),
            (_, false) => self.send_publish_ack(conn, qos_pid, ReasonCode::SUCCESS),
        }
    }

    /// Publishes a message on behalf of the port (`$SYS`, bridges, rules): retained handling and
    /// routing exactly as for a client's PUBLISH. Returns the number of deliveries.
    pub fn publish(&mut self, message: Message, now: Instant) -> usize {
        self.accept_message(None, Arc::new(message), now).0
    }

    /// Retains and routes a message. Returns the deliveries made and, if retaining it failed,
    /// the reason code for the publisher.
    fn accept_message(
        &mut self,
        publisher: Option<u32>,
        message: SharedMessage,
        now: Instant,
    ) -> (usize, Option<ReasonCode>) {
        let mut retain_failure = None;
        if message.retain {
            if message.payload.is_empty() {
                self.retained.remove(&message.topic);
            } else if let Err(error) = self.retained.retain(&message.topic, message.clone()) {
                retain_failure = Some(ReasonCode(error.reason_code()));
            }
            if retain_failure.is_none() {
                self.persist_retained(&message);
                self.replicate(Replication::Retain {
                    message: message.clone(),
                });
            }
        }
        if self.config.message_events {
            self.events.push_back(Event::MessagePublished {
                publisher: publisher.map(|index| self.global(index)),
                message: message.clone(),
            });
        }
        (self.route(publisher, message, now), retain_failure)
    }

    /// Sends or queues a copy of `message` for every matching subscription (the last copy takes
    /// `message` itself: one reference count less to move per delivery).
    fn route(&mut self, publisher: Option<u32>, message: SharedMessage, now: Instant) -> usize {
        // Taken out of the engine while its deliveries are made (boxed: moving it is a pointer).
        let mut matches = self
            .matches
            .take()
            .unwrap_or_else(|| Box::new(Matches::new(self.seed | 1)));
        let client_id = publisher
            .and_then(|index| self.session(index))
            .map_or("", |s| &*s.client_id);
        let id = publisher.map(|index| self.global(index));
        self.subscriptions
            .matches(&message.topic, Publisher { id, client_id }, &mut matches);
        let (published_qos, published_retain) = (message.qos, message.retain);
        // Starts from 1: a worker's entry that counted none holds 0.
        self.remote_credit.publications += 1;
        let last = matches.len().wrapping_sub(1);
        let mut message = Some(message);
        for (position, delivery) in matches.deliveries().iter().enumerate() {
            let copy = if position == last {
                message.take()
            } else {
                message.clone()
            };
            let Some(copy) = copy else { break };
            let outgoing = Outgoing {
                message: copy,
                qos: published_qos.min(delivery.qos),
                // Forwarded messages carry RETAIN 0 unless Retain As Published `[MQTT-3.3.1-12]`.
                retain: published_retain && delivery.retain_as_published,
                subscription_ids: matches.identifiers(position).collect(),
                seq: 0,
            };
            let resend = self.routing_flow.as_ref().is_some_and(|f| f.resend);
            match self.local(delivery.subscriber) {
                // A resent message's local copies were stored with its inbound packet
                // identifier, in the same block.
                Some(_) if resend => {}
                Some(index) => self.deliver(index, outgoing, now),
                // Sessions of other workers get theirs through their mailbox.
                None => {
                    let wait = self.remote_wait();
                    // A QoS 1/2 copy may be persisted there: what acknowledges the message here
                    // waits until it is.
                    let confirm = if outgoing.qos == QoS::AtMostOnce {
                        0
                    } else {
                        wait
                    };
                    if confirm != 0 {
                        let workers = u32::from(self.config.workers.max(1));
                        self.await_remote((delivery.subscriber.0 % workers) as u16, confirm);
                    }
                    let worker = self.config.worker;
                    let size = outgoing.size();
                    let flow = match outgoing.qos {
                        QoS::AtMostOnce => None,
                        _ => self.routing_flow.clone(),
                    };
                    self.remote.push((
                        wait,
                        RemoteDelivery::from_outgoing(
                            delivery.subscriber,
                            outgoing,
                            worker,
                            confirm,
                            flow,
                        ),
                    ));
                    self.hold_back_for_remote(delivery.subscriber);
                    let workers = u32::from(self.config.workers.max(1));
                    let first = self.count_remote((delivery.subscriber.0 % workers) as usize, size);
                    if let Some((_, copy)) = self.remote.last_mut() {
                        copy.first = first;
                    }
                }
            }
        }
        let count = matches.len();
        self.matches = Some(matches);
        count
    }

    /// Sends or queues one copy of a message for a session.
    fn deliver(&mut self, index: u32, outgoing: Outgoing, now: Instant) {
        if outgoing.message.is_expired(now) {
            self.dropped(index, outgoing, DropReason::Expired);
            return;
        }
        if !self.authorized(index, Access::Receive, &outgoing.message.topic) {
            self.dropped(index, outgoing, DropReason::NotAuthorized);
            return;
        }
        let Some(session) = self.session(index) else {
            return;
        };
        let online = session.conn.filter(|&conn| {
            self.connection(conn)
                .is_some_and(|c| matches!(c.phase, Phase::Connected))
        });
        match online {
            Some(conn) if outgoing.qos == QoS::AtMostOnce && self.congested(conn) => {
                // As for the queue below: the copy of a publisher held back at once is sent
                // even over the output's limit (one per publisher before it waits); others,
                // for a stalled session or an already paused publisher, are dropped.
                if self.keeps_copy_over_limits(conn, session.since, now) {
                    self.transmit(index, conn, outgoing, now);
                    self.hold_back_publisher(index, conn, now);
                } else {
                    self.dropped(index, outgoing, DropReason::Congested);
                }
            }
            Some(conn) if outgoing.qos == QoS::AtMostOnce => {
                // QoS 0 is not subject to the Receive Maximum.
                self.transmit(index, conn, outgoing, now);
                self.hold_back_publisher(index, conn, now);
            }
            Some(conn) => {
                let window = self
                    .connection(conn)
                    .map_or(0, |c| usize::from(c.receive_maximum));
                if session.backlog().queue.is_empty()
                    && session.backlog().inflight.len() < window
                    && !self.congested(conn)
                {
                    self.transmit(index, conn, outgoing, now);
                } else {
                    // A copy whose publisher is held back for this session right after
                    // (below) is kept even over the queue's limits: it is already here, and
                    // each publisher adds at most one before it waits (bounded like its input
                    // buffer; copies from other workers by `RemoteCredit`). Without this, many
                    // publishers released at once (1,000 in a fan-in) overflow the queue by
                    // one message each and lost a third of the messages.
                    let held_back = self.keeps_copy_over_limits(conn, session.since, now);
                    self.enqueue(index, outgoing, held_back);
                }
                self.hold_back_publisher(index, conn, now);
            }
            None if outgoing.qos == QoS::AtMostOnce && !self.config.queue_qos0_offline => {
                self.dropped(index, outgoing, DropReason::Offline);
            }
            None => self.enqueue(index, outgoing, false),
        }
    }

    /// Whether a session's backlog is at its high-water mark (half its queue limits, or its
    /// connection congested), or still above its low-water mark (a quarter) when `releasing`.
    fn backlogged(&self, index: u32, conn: ConnId, releasing: bool) -> bool {
        let limits = &self.config.limits;
        let Some(session) = self.session(index) else {
            return false;
        };
        let divisor = if releasing { 4 } else { 2 };
        let output = self.connection(conn).map_or(0, |c| c.out.len());
        session.backlog().queue.len() * divisor >= (limits.max_queued_messages as usize).max(1)
            || session.backlog().queued_bytes * divisor >= (limits.max_queued_bytes as usize).max(1)
            || output * divisor / 2 >= (limits.max_output_bytes as usize).max(1)
    }

    /// Whether the copy being delivered to a session connected as `conn` (last progress at
    /// `since`) is kept even when the session's queue or output is at its limits: when its
    /// source is held back for the session at once (see [`Broker::hold_back_publisher`]), so
    /// that each source adds at most one such copy before it waits. Not for a publisher that
    /// was paused before its packet came (a port reads none then), nor a stalled session.
    fn keeps_copy_over_limits(&self, conn: ConnId, since: Instant, now: Instant) -> bool {
        self.has_source_to_hold_back(conn)
            && now.millis_since(since) < STALL_MS
            && !(self.input.is_some() && self.input_was_paused)
    }

    /// Whether the copy being delivered to a session connected as `conn` has a source that the
    /// session can hold back when backlogged: the publisher being read (not the subscriber
    /// itself), or with several workers the other workers' publishers (a copy from them comes
    /// without one). A session that made no progress for `STALL_MS` holds back none even so.
    fn has_source_to_hold_back(&self, conn: ConnId) -> bool {
        match self.input {
            Some(publisher) => publisher != conn,
            None => self.config.workers > 1,
        }
    }

    /// Flow control: a subscriber that is draining but falling behind holds back the publisher
    /// whose input is being handled, instead of letting its queue overflow. A subscriber that
    /// made no progress for `STALL_MS` holds back nobody, so a stuck client cannot stall others.
    fn hold_back_publisher(&mut self, index: u32, conn: ConnId, now: Instant) {
        let publisher = self.input.filter(|&p| p != conn);
        if !self.has_source_to_hold_back(conn) || !self.backlogged(index, conn, false) {
            return;
        }
        let Some(session) = self.session_mut(index) else {
            return;
        };
        if now.millis_since(session.since) >= STALL_MS {
            return;
        }
        let announce = match publisher {
            Some(publisher) => {
                if !session.backlog().waiters.contains(&publisher) {
                    session.backlog_mut().waiters.push(publisher);
                }
                false
            }
            // Copies from other workers: ask them to hold back their publishers.
            None => !core::mem::replace(&mut session.remote_pressure, true),
        };
        let schedule = !session.stall_check_armed;
        session.stall_check_armed = true;
        let (at, epoch) = (session.since.plus_millis(STALL_MS), session.epoch);
        if schedule {
            self.push_timer(Reverse(Timer::new(at, TimerKind::StallCheck, index, epoch)));
        }
        if announce {
            let subscriber = self.global(index);
            self.replicate(Replication::Pressure {
                subscriber,
                on: true,
            });
        }
        if let Some(connection) = publisher.and_then(|p| self.connection_mut(p)) {
            connection.paused = true;
        }
    }

    /// Pauses the publisher being read if it routes to a session of another worker that asked
    /// for it (see [`Replication::Pressure`]).
    fn hold_back_for_remote(&mut self, subscriber: SubscriberId) {
        let Some(publisher) = self.input else {
            return;
        };
        let Some((_, waiters)) = self
            .remote_pressure
            .iter_mut()
            .find(|(s, _)| *s == subscriber)
        else {
            return;
        };
        if !waiters.contains(&publisher) {
            waiters.push(publisher);
        }
        if let Some(connection) = self.connection_mut(publisher) {
            connection.paused = true;
        }
    }

    /// Ends the hold on publishers for a session of another worker.
    fn release_remote_pressure(&mut self, subscriber: SubscriberId) {
        let Some(position) = self
            .remote_pressure
            .iter()
            .position(|(s, _)| *s == subscriber)
        else {
            return;
        };
        let (_, waiters) = self.remote_pressure.swap_remove(position);
        for publisher in waiters {
            self.unpause(publisher);
        }
    }

    fn unpause(&mut self, publisher: ConnId) {
        if let Some(connection) = self.connection_mut(publisher) {
            connection.paused = false;
            // Wake the port's task for it, so that it reads again.
            connection.queued_writable = false;
            self.mark_writable(publisher);
        }
    }

    /// A session made progress (its client acknowledged, or the port took its output): release
    /// the publishers it held back once its backlog is below the low-water mark.
    fn made_progress(&mut self, index: u32, now: Instant) {
        let Some(session) = self.session_mut(index) else {
            return;
        };
        // Monotonic even if a port reports times out of order. A disconnected session's
        // `since` is when it disconnected (output written after that does not move it).
        if session.conn.is_some() {
            session.since = session.since.max(now);
        }
        if session.backlog().waiters.is_empty() && !session.remote_pressure {
            return;
        }
        let still = session
            .conn
            .is_some_and(|conn| self.backlogged(index, conn, true));
        if !still {
            self.release_waiters(index);
        }
    }

    fn release_waiters(&mut self, index: u32) {
        let Some(session) = self.session_mut(index) else {
            return;
        };
        let waiters = session
            .backlog
            .as_deref_mut()
            .map(|backlog| core::mem::take(&mut backlog.waiters))
            .unwrap_or_default();
        let announced = core::mem::replace(&mut session.remote_pressure, false);
        for publisher in waiters {
            self.unpause(publisher);
        }
        if announced {
            let subscriber = self.global(index);
            self.replicate(Replication::Pressure {
                subscriber,
                on: false,
            });
        }
    }

    fn stall_check(&mut self, timer: Timer, now: Instant) {
        let Some(session) = self.session_mut(timer.index) else {
            return;
        };
        session.stall_check_armed = false;
        if session.backlog().waiters.is_empty() && !session.remote_pressure {
            return;
        }
        let due = session.since.plus_millis(STALL_MS);
        if now >= due || session.conn.is_none() {
            self.release_waiters(timer.index);
        } else {
            session.stall_check_armed = true;
            let epoch = session.epoch;
            self.push_timer(Reverse(Timer::new(
                due,
                TimerKind::StallCheck,
                timer.index,
                epoch,
            )));
        }
    }

    /// Queues a copy for a session, or drops it when the queue is at its limits, unless
    /// `over_limits` (the publisher is held back for this session at once).
    fn enqueue(&mut self, index: u32, mut outgoing: Outgoing, over_limits: bool) {
        let limits = self.config.limits;
        let Some(session) = self.session_mut(index) else {
            return;
        };
        let size = outgoing.size();
        let full = session.backlog().queue.len() >= limits.max_queued_messages as usize
            || session.backlog().queued_bytes + size > limits.max_queued_bytes as usize;
        if full && !over_limits {
            self.dropped(index, outgoing, DropReason::QueueFull);
            return;
        }
        self.persist_queued(index, &mut outgoing);
        if let Some(session) = self.session_mut(index) {
            session.backlog_mut().queued_bytes += size;
            session.backlog_mut().queue.push_back(outgoing);
        }
    }

    fn dropped(&mut self, index: u32, outgoing: Outgoing, reason: DropReason) {
        self.persist_done(index, outgoing.seq);
        self.stats.messages_dropped += 1;
        self.events.push_back(Event::MessageDropped {
            session: self.global(index),
            message: outgoing.message,
            reason,
        });
    }

    /// Sends a message now: QoS 0 directly, QoS 1/2 with a new packet id into the window.
    fn transmit(&mut self, index: u32, conn: ConnId, mut outgoing: Outgoing, now: Instant) {
        let packet_id = match outgoing.qos {
            QoS::AtMostOnce => None,
            _ => self.session_mut(index).map(Session::allocate_packet_id),
        };
        if let Some(packet_id) = packet_id {
            // Recorded before it is written, so that the PUBLISH waits for its record.
            self.persist_sent(index, &mut outgoing, packet_id.get());
        }
        if !self.write_publish(conn, &outgoing, packet_id, false, now) {
            self.dropped(index, outgoing, DropReason::TooLarge);
            return;
        }
        if self.config.message_events {
            self.events.push_back(Event::MessageDelivered {
                session: self.global(index),
                message: outgoing.message.clone(),
            });
        }
        if let (Some(packet_id), Some(session)) = (packet_id, self.session_mut(index)) {
            let awaiting = if outgoing.qos == QoS::AtLeastOnce {
                Awaiting::PubAck
            } else {
                Awaiting::PubRec
            };
            session.backlog_mut().inflight.push_back(Inflight {
                packet_id,
                outgoing,
                awaiting,
                resend: false,
            });
        }
    }

    /// Encodes a PUBLISH for `conn` (with an outbound topic alias when the client allows them).
    /// Returns false, writing nothing, when it exceeds the client's Maximum Packet Size.
    fn write_publish(
        &mut self,
        conn: ConnId,
        outgoing: &Outgoing,
        packet_id: Option<NonZeroU16>,
        dup: bool,
        now: Instant,
    ) -> bool {
        let max_outbound_aliases = self.config.max_outbound_aliases;
        let Some(connection) = self.connection_mut(conn) else {
            return false;
        };
        let message = &outgoing.message;
        let v5 = connection.version.is_v5();
        let ids: Vec<SubscriptionId> = if v5 {
            outgoing
                .subscription_ids
                .iter()
                .filter_map(|&id| SubscriptionId::new(id))
                .collect()
        } else {
            Vec::new()
        };
        let mut topic: &str = &message.topic;
        let mut alias = None;
        let alias_limit = connection.topic_alias_maximum.min(max_outbound_aliases);
        if v5 && alias_limit > 0 {
            match connection
                .extras()
                .outbound_aliases
                .iter()
                .position(|t| **t == *message.topic)
            {
                Some(position) => {
                    alias = NonZeroU16::new(position as u16 + 1);
                    topic = "";
                }
                None if connection.extras().outbound_aliases.len() < usize::from(alias_limit) => {
                    let aliases = &mut connection.extras_mut().outbound_aliases;
                    aliases.push(message.topic.clone());
                    alias = NonZeroU16::new(aliases.len() as u16);
                }
                None => {}
            }
        }
        let properties = &message.properties;
        let publish = Publish {
            dup,
            qos_pid: match (outgoing.qos, packet_id) {
                (QoS::AtLeastOnce, Some(id)) => QosPid::AtLeastOnce(id),
                (QoS::ExactlyOnce, Some(id)) => QosPid::ExactlyOnce(id),
                _ => QosPid::AtMostOnce,
            },
            retain: outgoing.retain,
            topic,
            properties: PublishProperties {
                payload_format_indicator: properties.payload_format_indicator,
                message_expiry_interval: message.remaining_expiry(now),
                topic_alias: alias,
                response_topic: properties.response_topic.as_deref(),
                correlation_data: properties.correlation_data.as_deref(),
                user_properties: properties.user_properties(),
                subscription_identifiers: Repeated::from_slice(&ids),
                content_type: properties.content_type.as_deref(),
            },
            payload: &message.payload,
        };
        let packet = Packet::Publish(publish);
        let fits = packet
            .encoded_len(connection.version)
            .is_ok_and(|len| len <= connection.maximum_packet_size as usize);
        if !fits {
            // A new alias must not be left assigned to a message that was not sent.
            if alias.is_some() && !topic.is_empty() {
                connection.extras_mut().outbound_aliases.pop();
            }
            return false;
        }
        self.send(conn, &packet);
        self.stats.messages_sent += 1;
        true
    }

    /// Moves queued messages into the inflight window while it has room, after any message
    /// that waits to be resent.
    fn pump(&mut self, index: u32, now: Instant) {
        if let Some(conn) = self.session(index).and_then(|s| s.conn) {
            self.resend_inflight(index, conn, now);
        }
        loop {
            let Some(session) = self.session(index) else {
                return;
            };
            let Some(conn) = session.conn else {
                return;
            };
            let window = self
                .connection(conn)
                .map_or(0, |c| usize::from(c.receive_maximum));
            let Some(front) = session.backlog().queue.front() else {
                return;
            };
            if front.qos != QoS::AtMostOnce && session.backlog().inflight.len() >= window {
                return;
            }
            // A congested connection gets the rest when the port takes its output.
            if self.congested(conn) {
                return;
            }
            let Some(outgoing) = self.session_mut(index).and_then(Session::pop_queued) else {
                return;
            };
            if outgoing.message.is_expired(now) {
                self.dropped(index, outgoing, DropReason::Expired);
                continue;
            }
            self.transmit(index, conn, outgoing, now);
        }
    }

    fn conn_session(&self, conn: ConnId) -> Option<u32> {
        self.connection(conn).and_then(|c| c.session)
    }

    fn acknowledged(&mut self, index: u32, entry: Inflight) {
        self.persist_done(index, entry.outgoing.seq);
        if self.config.message_events {
            self.events.push_back(Event::MessageAcked {
                session: self.global(index),
                message: entry.outgoing.message,
            });
        }
    }

    fn handle_puback(&mut self, conn: ConnId, ack: Ack<'_>, now: Instant) {
        let Some(index) = self.conn_session(conn) else {
            return;
        };
        let Some(session) = self.session_mut(index) else {
            return;
        };
        if let Some(position) = session.inflight_position(ack.packet_id, Awaiting::PubAck) {
            let Some(entry) = session.backlog_mut().inflight.remove(position) else {
                return;
            };
            self.acknowledged(index, entry);
            self.pump(index, now);
            self.made_progress(index, now);
        }
    }

    fn handle_pubrec(&mut self, conn: ConnId, ack: Ack<'_>, now: Instant) {
        let Some(index) = self.conn_session(conn) else {
            return;
        };
        let Some(session) = self.session_mut(index) else {
            return;
        };
        match session.inflight_position(ack.packet_id, Awaiting::PubRec) {
            Some(position) if ack.reason.is_error() => {
                // The receiver refused the message: no PUBREL, which follows only a PUBREC below
                // 0x80 `[MQTT-4.3.3-4]`; the flow ends and the id is free (§4.3.3).
                let Some(entry) = session.backlog_mut().inflight.remove(position) else {
                    return;
                };
                self.acknowledged(index, entry);
                self.pump(index, now);
                self.made_progress(index, now);
            }
            Some(position) => {
                session.backlog_mut().inflight[position].awaiting = Awaiting::PubComp;
                let seq = session.backlog().inflight[position].outgoing.seq;
                self.persist_released(index, seq, ack.packet_id.get());
                self.send(conn, &Packet::PubRel(Ack::success(ack.packet_id)));
            }
            // A repeated PUBREC (its PUBREL was lost or is late) gets the PUBREL again.
            None if session
                .inflight_position(ack.packet_id, Awaiting::PubComp)
                .is_some() =>
            {
                self.send(conn, &Packet::PubRel(Ack::success(ack.packet_id)));
            }
            None => {
                let reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                self.send_failure(conn, PacketType::PubRel, reason, |text| {
                    Packet::PubRel(Ack {
                        packet_id: ack.packet_id,
                        reason,
                        properties: AckProperties {
                            reason_string: text,
                            ..AckProperties::default()
                        },
                    })
                });
            }
        }
    }

    fn handle_pubcomp(&mut self, conn: ConnId, ack: Ack<'_>, now: Instant) {
        let Some(index) = self.conn_session(conn) else {
            return;
        };
        let Some(session) = self.session_mut(index) else {
            return;
        };
        if let Some(position) = session.inflight_position(ack.packet_id, Awaiting::PubComp) {
            let Some(entry) = session.backlog_mut().inflight.remove(position) else {
                return;
            };
            self.acknowledged(index, entry);
            self.pump(index, now);
            self.made_progress(index, now);
        }
    }

    fn handle_pubrel(&mut self, conn: ConnId, ack: Ack<'_>) {
        let Some(index) = self.conn_session(conn) else {
            return;
        };
        let Some(session) = self.session_mut(index) else {
            return;
        };
        match session
            .backlog()
            .inbound_qos2
            .iter()
            .position(|&id| id == ack.packet_id.get())
        {
            Some(position) => {
                session.backlog_mut().inbound_qos2.swap_remove(position);
                self.persist_inbound(index, ack.packet_id.get(), false);
                if self.flows_cross_workers() {
                    if let Some(publisher) = self.session(index).map(|s| s.client_id.clone()) {
                        self.replicate(Replication::FlowReleased {
                            publisher,
                            packet_id: ack.packet_id.get(),
                        });
                    }
                }
                self.send(conn, &Packet::PubComp(Ack::success(ack.packet_id)));
            }
            None => {
                let reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                self.send_failure(conn, PacketType::PubComp, reason, |text| {
                    Packet::PubComp(Ack {
                        packet_id: ack.packet_id,
                        reason,
                        properties: AckProperties {
                            reason_string: text,
                            ..AckProperties::default()
                        },
                    })
                });
            }
        }
    }

    // ----- SUBSCRIBE and UNSUBSCRIBE --------------------------------------------------------

    fn handle_subscribe(&mut self, conn: ConnId, subscribe: Subscribe<'_>, now: Instant) {
        let Some(index) = self.conn_session(conn) else {
            return;
        };
        let identifier = subscribe
            .properties
            .subscription_identifier
            .map(SubscriptionId::get);
        // Every filter is checked before anything is subscribed: a check may be pending, and
        // then the packet is handled again from the start once it is resolved.
        let mut allowed: Vec<bool> = Vec::new();
        for subscription in subscribe.subscriptions.iter() {
            match self.check_access(index, Access::Subscribe, subscription.filter) {
                Some(answer) => allowed.push(answer),
                None => return,
            }
        }
        let mut codes: Vec<ReasonCode> = Vec::new();
        // The first refusal, which the SUBACK's Reason String describes.
        let mut failure: Option<ReasonCode> = None;
        let mut retained: Vec<Outgoing> = Vec::new();
        for (subscription, allowed) in subscribe.subscriptions.iter().zip(allowed) {
            let filter = subscription.filter;
            let options = subscription.options;
            if !allowed {
                codes.push(ReasonCode::NOT_AUTHORIZED);
                failure = failure.or(Some(ReasonCode::NOT_AUTHORIZED));
                continue;
            }
            let subscriber = self.global(index);
            match self
                .subscriptions
                .subscribe(subscriber, filter, options, identifier)
            {
                Ok(outcome) => {
                    codes.push(ReasonCode(options.qos as u8));
                    self.persist_subscribed(index, filter, options, identifier);
                    self.replicate(Replication::Subscribe {
                        subscriber,
                        filter: Box::from(filter),
                        options,
                        identifier,
                    });
                    self.events.push_back(Event::Subscribed {
                        session: self.global(index),
                        filter: Box::from(filter),
                        options,
                    });
                    let send_retained = match options.retain_handling {
                        RetainHandling::SendOnSubscribe => true,
                        RetainHandling::SendIfNew => outcome == SubscribeOutcome::New,
                        RetainHandling::DoNotSend => false,
                    };
                    if send_retained {
                        let ids: Box<[u32]> = identifier.into_iter().collect();
                        let mut expired: Vec<SharedMessage> = Vec::new();
                        self.retained.for_each_match(filter, |message| {
                            if message.is_expired(now) {
                                // Expired retained messages are deleted, not sent (§3.3.2.3.3).
                                expired.push(message.clone());
                                return;
                            }
                            retained.push(Outgoing {
                                message: message.clone(),
                                qos: message.qos.min(options.qos),
                                // Retained messages sent for a new subscription keep RETAIN 1
                                // `[MQTT-3.3.1-9]`.
                                retain: true,
                                subscription_ids: ids.clone(),
                                seq: 0,
                            });
                        });
                        for message in expired {
                            if self
                                .retained
                                .get(&message.topic)
                                .is_some_and(|kept| Arc::ptr_eq(kept, &message))
                            {
                                self.retained.remove(&message.topic);
                            }
                        }
                    }
                }
                Err(
                    SubscribeError::NoLocalOnSharedSubscription
                    | SubscribeError::InvalidSubscriptionIdentifier,
                ) => {
                    self.protocol_violation(conn, ReasonCode::PROTOCOL_ERROR, now);
                    return;
                }
                Err(error) => {
                    let code = ReasonCode(error.reason_code());
                    codes.push(code);
                    failure = failure.or(Some(code));
                }
            }
        }
        let suback = |text| {
            Packet::SubAck(SubAck {
                packet_id: subscribe.packet_id,
                properties: AckProperties {
                    reason_string: text,
                    ..AckProperties::default()
                },
                reason_codes: Repeated::from_slice(&codes),
            })
        };
        match failure {
            None => self.send(conn, &suback(None)),
            Some(reason) => self.send_failure(conn, PacketType::SubAck, reason, suback),
        }
        for outgoing in retained {
            self.deliver(index, outgoing, now);
        }
    }

    fn handle_unsubscribe(&mut self, conn: ConnId, unsubscribe: Unsubscribe<'_>) {
        let Some(index) = self.conn_session(conn) else {
            return;
        };
        let mut codes: Vec<ReasonCode> = Vec::new();
        for filter in unsubscribe.filters.iter() {
            let subscriber = self.global(index);
            if self.subscriptions.unsubscribe(subscriber, filter) {
                codes.push(ReasonCode::SUCCESS);
                self.persist_unsubscribed(index, filter);
                self.replicate(Replication::Unsubscribe {
                    subscriber,
                    filter: Box::from(filter),
                });
                self.events.push_back(Event::Unsubscribed {
                    session: self.global(index),
                    filter: Box::from(filter),
                });
            } else {
                codes.push(ReasonCode::NO_SUBSCRIPTION_EXISTED);
            }
        }
        let unsuback = UnsubAck {
            packet_id: unsubscribe.packet_id,
            properties: AckProperties::default(),
            reason_codes: Repeated::from_slice(&codes),
        };
        self.send(conn, &Packet::UnsubAck(unsuback));
    }

    // ----- shutdown --------------------------------------------------------------------------

    /// Closes every connection for shutdown: MQTT 5 clients get DISCONNECT 0x8B Server shutting
    /// down; wills are not published and sessions are kept as they are.
    pub fn shutdown(&mut self, now: Instant) {
        let ids: Vec<ConnId> = self
            .connections
            .iter()
            .zip(0u32..)
            // Pair each slot with its index before skipping free slots: a free slot before a
            // live connection must not shift the indices.
            .filter_map(|(c, index)| {
                c.as_ref().map(|c| ConnId {
                    index,
                    generation: c.generation,
                })
            })
            .collect();
        for id in ids {
            if self
                .connection(id)
                .is_some_and(|c| c.version.is_v5() && matches!(c.phase, Phase::Connected))
            {
                self.send_disconnect(id, ReasonCode::SERVER_SHUTTING_DOWN);
            }
            self.begin_close(id, CloseCause::ServerShutdown, now);
        }
    }
}

fn find_connection(connections: &[Option<Box<Connection>>], id: ConnId) -> Option<&Connection> {
    connections
        .get(id.index as usize)?
        .as_deref()
        .filter(|c| c.generation == id.generation)
}

/// The protocol level byte of a CONNECT, if the bytes get that far.
fn connect_level(bytes: &[u8]) -> Option<u8> {
    let mut header = 1;
    while bytes.get(header)? & 0x80 != 0 {
        header += 1;
    }
    let name_len = usize::from(u16::from_be_bytes([
        *bytes.get(header + 1)?,
        *bytes.get(header + 2)?,
    ]));
    bytes.get(header + 3 + name_len).copied()
}

#[cfg(test)]
mod size_tests {
    /// Every connection holds this much: a growth here is a growth of the memory per
    /// connection, so it is a deliberate change of this bound.
    #[test]
    fn a_connection_stays_small() {
        let size = core::mem::size_of::<super::Connection>();
        assert!(size <= 104, "{size}");
    }

    #[test]
    fn a_timer_packs_its_kind_with_its_deadline() {
        use super::{Instant, Timer, TimerKind};
        assert_eq!(core::mem::size_of::<Timer>(), 16);
        let kinds = [
            TimerKind::ConnectTimeout,
            TimerKind::KeepAlive,
            TimerKind::Will,
            TimerKind::SessionExpiry,
            TimerKind::StallCheck,
        ];
        for kind in kinds {
            let timer = Timer::new(Instant(123_456), kind, 7, 9);
            assert_eq!((timer.at(), timer.kind()), (Instant(123_456), kind));
            assert_eq!((timer.index, timer.generation), (7, 9));
        }
        // Ordered by deadline first, whatever the kind.
        let early = Timer::new(Instant(10), TimerKind::StallCheck, 1, 1);
        let late = Timer::new(Instant(11), TimerKind::ConnectTimeout, 0, 0);
        assert!(early < late);
        // A saturated deadline stays the latest.
        let never = Timer::new(Instant(u64::MAX), TimerKind::SessionExpiry, 0, 0);
        assert!(never > late);
        assert_eq!(never.kind(), TimerKind::SessionExpiry);
    }
}

#[cfg(test)]
mod encode_tests {
    use super::push_packet;
    use crate::codec::{Packet, Publish, PublishProperties, QosPid};
    use crate::types::ProtocolVersion;
    use alloc::vec::Vec;
    use core::num::NonZeroU16;

    /// The PUBLISH path (header on the stack, payload appended) writes what the general encoder
    /// writes, also for a header too long for the stack (which falls back to it), after bytes
    /// already queued.
    #[test]
    fn a_publish_is_queued_as_the_codec_encodes_it() {
        let long_topic = "t/".repeat(200);
        for topic in ["a/b", long_topic.as_str()] {
            for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
                let publish = Publish {
                    dup: false,
                    qos_pid: QosPid::AtLeastOnce(NonZeroU16::new(7).unwrap()),
                    retain: true,
                    topic,
                    properties: PublishProperties::default(),
                    payload: b"payload bytes",
                };
                let packet = Packet::Publish(publish);
                let len = packet.encoded_len(version).unwrap();
                let mut expected = alloc::vec![0u8; len];
                packet.encode(version, &mut expected).unwrap();
                let mut out: Vec<u8> = b"queued".to_vec();
                assert!(push_packet(&mut out, &packet, version));
                assert_eq!(&out[..6], b"queued");
                assert_eq!(&out[6..], &expected[..], "{} bytes of topic", topic.len());
            }
        }
    }
}
