//! Persistence records: what the engine writes so that sessions, their queues and the retained
//! messages survive a restart or a crash, and the frame that protects each record on storage.
//!
//! The engine (with [`Persistence`] on in its [`Config`](super::Config)) emits one [`Record`]
//! per state change of a persistent session (Session Expiry Interval > 0) and of the retained
//! store; the port drains them with [`Broker::take_records`](super::Broker::take_records),
//! writes them with [`encode_frame`] to whatever storage it has (an append-only file on POSIX,
//! `sequential-storage` on a flash board), and at startup hands them back to
//! [`Broker::restore`](super::Broker::restore). [`Broker::snapshot`](super::Broker::snapshot)
//! gives the whole persistent state as records, for compaction.
//!
//! Records are idempotent upserts and deletions keyed by client identifier (and delivery
//! sequence number, packet identifier, filter or topic): replaying any prefix of them rebuilds
//! the state as it was after that prefix. Times are UNIX milliseconds (the port tells the
//! engine the wall clock with [`Broker::set_wall_clock`](super::Broker::set_wall_clock)), so
//! that session and message expiry keep counting while the broker is down.
//!
//! A frame is `length (u32 LE) | body | CRC-32 (u32 LE) of length and body`, the body being
//! `postcard(sequence number, record)`.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::num::NonZeroU16;

use serde::de::{Deserializer, Error as _};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

use super::message::{Message, MessageProperties, SharedMessage};
use super::session::{Awaiting, Inflight, Outgoing, PendingWill, Session};
use super::{Broker, ConnId, Replication, Timer, TimerKind};
use crate::{Instant, QoS, RetainHandling, SubscriptionOptions};

/// Whether and how the engine persists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Persistence {
    /// No records, no cost (the default).
    #[default]
    Off,
    /// Records are emitted; acknowledgements go out at once (`sync = interval` or `never`).
    Records,
    /// Records are emitted, and every packet that depends on one (PUBACK/PUBREC of a message,
    /// anything sent to a persistent session) is held until the port reports the records
    /// durable with [`Broker::durable`](super::Broker::durable) (`sync = always`).
    Durable,
}

impl Persistence {
    /// True unless [`Persistence::Off`].
    pub fn is_on(self) -> bool {
        self != Persistence::Off
    }
}

/// Where a persisted delivery is in its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryState {
    /// Waiting in the session's queue.
    Queued,
    /// QoS 1 sent with this packet identifier, waiting for PUBACK.
    AwaitingPubAck(u16),
    /// QoS 2 sent with this packet identifier, waiting for PUBREC.
    AwaitingPubRec(u16),
    /// PUBREL sent for this packet identifier, waiting for PUBCOMP.
    AwaitingPubComp(u16),
}

/// A message with the wall-clock time it was received (UNIX milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// When the broker received it, in UNIX milliseconds.
    pub received_at_ms: u64,
    /// The message (its `received_at` is meaningful in the process that made the record only).
    pub message: SharedMessage,
}

impl Serialize for StoredMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Bytes<'a>(&'a [u8]);
        impl Serialize for Bytes<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(self.0)
            }
        }
        let m = &*self.message;
        let p = &m.properties;
        let mut tuple = serializer.serialize_tuple(11)?;
        tuple.serialize_element(&self.received_at_ms)?;
        tuple.serialize_element(&*m.topic)?;
        tuple.serialize_element(&Bytes(&m.payload))?;
        tuple.serialize_element(&(m.qos as u8))?;
        tuple.serialize_element(&m.retain)?;
        tuple.serialize_element(&p.payload_format_indicator)?;
        tuple.serialize_element(&p.message_expiry_interval)?;
        tuple.serialize_element(&p.content_type.as_deref())?;
        tuple.serialize_element(&p.response_topic.as_deref())?;
        tuple.serialize_element(&p.correlation_data.as_deref().map(Bytes))?;
        tuple.serialize_element(&Bytes(p.user_properties_wire()))?;
        tuple.end()
    }
}

type MessageTuple = (
    u64,
    Box<str>,
    Box<[u8]>,
    u8,
    bool,
    Option<bool>,
    Option<u32>,
    Option<Box<str>>,
    Option<Box<str>>,
    Option<Box<[u8]>>,
    Box<[u8]>,
);

impl<'de> Deserialize<'de> for StoredMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (
            at,
            topic,
            payload,
            qos,
            retain,
            pfi,
            expiry,
            content_type,
            response,
            correlation,
            user,
        ) = MessageTuple::deserialize(deserializer)?;
        let qos = qos_from(qos).ok_or_else(|| D::Error::custom("bad QoS"))?;
        let mut properties = MessageProperties::default();
        properties.payload_format_indicator = pfi;
        properties.message_expiry_interval = expiry;
        properties.content_type = content_type;
        properties.response_topic = response;
        properties.correlation_data = correlation;
        if !properties.set_user_properties_wire(user) {
            return Err(D::Error::custom("bad user properties"));
        }
        Ok(StoredMessage {
            received_at_ms: at,
            message: Arc::new(Message {
                topic,
                payload,
                qos,
                retain,
                properties,
                received_at: Instant(0),
            }),
        })
    }
}

/// A will, with its delay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WillRecord {
    /// The will message.
    pub message: StoredMessage,
    /// Will Delay Interval in seconds.
    pub delay_secs: u32,
}

/// A persistent session's own state (its subscriptions, deliveries and inbound QoS 2 ids are
/// records of their own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Client identifier.
    pub client_id: Box<str>,
    /// Session Expiry Interval in seconds (`u32::MAX`: never).
    pub expiry_secs: u32,
    /// When its connection ended (UNIX ms); `None` while connected.
    pub disconnected_at_ms: Option<u64>,
    /// The will of the connection, or a will waiting for its delay.
    pub will: Option<WillRecord>,
    /// When a will waiting for its delay is due (UNIX ms).
    pub will_due_ms: Option<u64>,
    /// Authenticated user name (deliveries are authorized for it).
    pub username: Option<Box<str>>,
    /// Listener of its last connection.
    pub listener: u16,
}

/// One change of persistent state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// A persistent session was created or changed.
    Session(SessionRecord),
    /// A session ended (expired, cleaned, or no longer persistent), with all its state.
    SessionDeleted {
        /// Client identifier.
        client_id: Box<str>,
    },
    /// A subscription was added or replaced.
    Subscribed {
        /// Client identifier.
        client_id: Box<str>,
        /// Topic filter.
        filter: Box<str>,
        /// Options, packed by [`pack_options`].
        options: u8,
        /// Subscription identifier.
        identifier: Option<u32>,
    },
    /// A subscription was removed.
    Unsubscribed {
        /// Client identifier.
        client_id: Box<str>,
        /// Topic filter.
        filter: Box<str>,
    },
    /// A QoS 1/2 message was queued or sent to a persistent session.
    Delivery {
        /// Client identifier.
        client_id: Box<str>,
        /// The engine's number for this delivery (orders the queue).
        seq: u64,
        /// QoS it is delivered with.
        qos: u8,
        /// RETAIN flag to send.
        retain: bool,
        /// Subscription identifiers.
        subscription_ids: Box<[u32]>,
        /// Where it is.
        state: DeliveryState,
        /// The message.
        message: StoredMessage,
    },
    /// A delivery moved on (sent, or PUBREC received).
    DeliveryMoved {
        /// Client identifier.
        client_id: Box<str>,
        /// The delivery.
        seq: u64,
        /// Its new state.
        state: DeliveryState,
    },
    /// A delivery is complete, refused, expired or dropped.
    DeliveryDone {
        /// Client identifier.
        client_id: Box<str>,
        /// The delivery.
        seq: u64,
    },
    /// A QoS 2 PUBLISH was received: its packet identifier awaits PUBREL.
    InboundQos2 {
        /// Client identifier.
        client_id: Box<str>,
        /// Packet identifier.
        packet_id: u16,
    },
    /// PUBREL released an inbound QoS 2 packet identifier.
    InboundReleased {
        /// Client identifier.
        client_id: Box<str>,
        /// Packet identifier.
        packet_id: u16,
    },
    /// A retained message was stored.
    Retained(StoredMessage),
    /// A retained message was deleted.
    RetainedDeleted {
        /// Topic name.
        topic: Box<str>,
    },
    /// A copy of another worker's publisher's QoS 2 message was stored by this worker (see
    /// [`Qos2Flow`](super::Qos2Flow)); a resent copy of the flow is not stored again. Kept by
    /// the worker that wrote it.
    RemoteFlow {
        /// The publisher's client identifier.
        publisher: Box<str>,
        /// Its PUBLISH packet identifier.
        packet_id: u16,
    },
    /// The publisher released that flow (PUBREL).
    RemoteFlowReleased {
        /// The publisher's client identifier.
        publisher: Box<str>,
        /// Its PUBLISH packet identifier.
        packet_id: u16,
    },
}

impl Record {
    /// The client identifier the record belongs to, `None` for retained messages.
    pub fn client_id(&self) -> Option<&str> {
        match self {
            Record::Session(session) => Some(&session.client_id),
            Record::SessionDeleted { client_id }
            | Record::Subscribed { client_id, .. }
            | Record::Unsubscribed { client_id, .. }
            | Record::Delivery { client_id, .. }
            | Record::DeliveryMoved { client_id, .. }
            | Record::DeliveryDone { client_id, .. }
            | Record::InboundQos2 { client_id, .. }
            | Record::InboundReleased { client_id, .. } => Some(client_id),
            Record::Retained(_)
            | Record::RetainedDeleted { .. }
            | Record::RemoteFlow { .. }
            | Record::RemoteFlowReleased { .. } => None,
        }
    }

    /// True for the records that belong to the worker that wrote them, whichever sessions its
    /// workers own ([`Record::RemoteFlow`], [`Record::RemoteFlowReleased`]).
    pub fn stays_with_its_worker(&self) -> bool {
        matches!(
            self,
            Record::RemoteFlow { .. } | Record::RemoteFlowReleased { .. }
        )
    }
}

pub(crate) fn qos_from(value: u8) -> Option<QoS> {
    match value {
        0 => Some(QoS::AtMostOnce),
        1 => Some(QoS::AtLeastOnce),
        2 => Some(QoS::ExactlyOnce),
        _ => None,
    }
}

/// Packs subscription options into a byte: bits 0-1 QoS, 2 No Local, 3 Retain As Published,
/// 4-5 Retain Handling.
pub fn pack_options(options: SubscriptionOptions) -> u8 {
    options.qos as u8
        | (u8::from(options.no_local) << 2)
        | (u8::from(options.retain_as_published) << 3)
        | ((options.retain_handling as u8) << 4)
}

/// The inverse of [`pack_options`]; `None` for a byte it never makes.
pub fn unpack_options(byte: u8) -> Option<SubscriptionOptions> {
    let retain_handling = match byte >> 4 {
        0 => RetainHandling::SendOnSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return None,
    };
    Some(SubscriptionOptions {
        qos: qos_from(byte & 3)?,
        no_local: byte & 4 != 0,
        retain_as_published: byte & 8 != 0,
        retain_handling,
    })
}

// ----- frames ------------------------------------------------------------------------------

/// Largest frame body accepted when decoding (a longer length field is corruption).
pub const MAX_FRAME_BODY: usize = 512 * 1024 * 1024;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes end inside the frame (a torn write at the end of a log).
    Truncated,
    /// The CRC does not match, the length is impossible, or the body does not decode.
    Corrupt,
}

/// The CRC-32 (IEEE 802.3, reflected, as zlib and Ethernet) of `bytes`, continuing `crc`
/// (start with 0).
pub fn crc32(crc: u32, bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut c = !crc;
    for &byte in bytes {
        c = TABLE[((c ^ u32::from(byte)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// Appends the frame of `record` with sequence number `seq` to `out`; returns its length.
pub fn encode_frame(seq: u64, record: &Record, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    // Encoding into memory fails only for types postcard cannot express; records are not.
    let Ok(body) = postcard::to_allocvec(&(seq, record)) else {
        return 0;
    };
    let len = body.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32(0, &out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// Decodes the frame at the start of `bytes`: its sequence number, record and length.
pub fn decode_frame(bytes: &[u8]) -> Result<(u64, Record, usize), FrameError> {
    let Some(head) = bytes.get(..4) else {
        return Err(FrameError::Truncated);
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len == 0 || len > MAX_FRAME_BODY {
        return Err(FrameError::Corrupt);
    }
    let Some(frame) = bytes.get(..4 + len + 4) else {
        return Err(FrameError::Truncated);
    };
    let (covered, tail) = frame.split_at(4 + len);
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    if crc32(0, covered) != stored {
        return Err(FrameError::Corrupt);
    }
    match postcard::from_bytes::<(u64, Record)>(&covered[4..]) {
        Ok((seq, record)) => Ok((seq, record, frame.len())),
        Err(_) => Err(FrameError::Corrupt),
    }
}

// ----- the engine's side ----------------------------------------------------------------------

/// The engine's persistence bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    /// Records not yet taken by the port.
    records: Vec<Record>,
    /// Sequence number of the last record emitted (the first is 1).
    last: u64,
    /// The port reported every record up to this one durable.
    durable: u64,
    /// Next delivery number.
    next_delivery: u64,
    /// The store is full: new persistent messages are refused (0x97).
    pub(crate) full: bool,
    /// UNIX milliseconds at `Instant(0)`.
    wall_at_zero: u64,
    /// Connections with held output.
    held: Vec<ConnId>,
    /// By worker: the record numbers of QoS 1/2 copies routed to its sessions and not yet
    /// confirmed durable there, in order (see [`Broker::remote_durable`]).
    unconfirmed: Vec<VecDeque<u64>>,
    /// Copies from other workers to confirm: (origin worker, its record number, the last of
    /// this worker's records once the copy was delivered), in order.
    confirmations: VecDeque<(u16, u64, u64)>,
}

impl Journal {
    /// Output held for records up to this one may go out: they are durable here, and every
    /// copy they made for another worker's session is durable there.
    fn released(&self) -> u64 {
        self.unconfirmed
            .iter()
            .filter_map(|waits| waits.front())
            .map(|&first| first - 1)
            .fold(self.durable, u64::min)
    }
}

/// What [`Broker::restore`] rebuilt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Sessions restored.
    pub sessions: usize,
    /// Sessions that had expired while the broker was down (removed).
    pub expired_sessions: usize,
    /// Queued and inflight messages restored.
    pub messages: usize,
    /// Messages that had expired (removed).
    pub expired_messages: usize,
    /// Retained messages restored.
    pub retained: usize,
    /// Wills published at restore (their delay passed or their session expired).
    pub wills_published: usize,
}

#[derive(Debug)]
struct RestoredDelivery {
    qos: u8,
    retain: bool,
    subscription_ids: Box<[u32]>,
    state: DeliveryState,
    message: StoredMessage,
}

#[derive(Debug)]
struct RestoredSession {
    record: SessionRecord,
    subscriptions: BTreeMap<Box<str>, (u8, Option<u32>)>,
    deliveries: BTreeMap<u64, RestoredDelivery>,
    inbound: Vec<u16>,
}

/// The state the records describe, before it becomes engine state.
#[derive(Debug, Default)]
struct Model {
    sessions: BTreeMap<Box<str>, RestoredSession>,
    retained: BTreeMap<Box<str>, StoredMessage>,
    remote_flows: BTreeSet<(Box<str>, u16)>,
}

impl Model {
    fn apply(&mut self, record: Record) {
        match record {
            Record::Session(record) => match self.sessions.get_mut(&record.client_id) {
                Some(session) => session.record = record,
                None => {
                    self.sessions.insert(
                        record.client_id.clone(),
                        RestoredSession {
                            record,
                            subscriptions: BTreeMap::new(),
                            deliveries: BTreeMap::new(),
                            inbound: Vec::new(),
                        },
                    );
                }
            },
            Record::SessionDeleted { client_id } => {
                self.sessions.remove(&client_id);
            }
            Record::Subscribed {
                client_id,
                filter,
                options,
                identifier,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id) {
                    session.subscriptions.insert(filter, (options, identifier));
                }
            }
            Record::Unsubscribed { client_id, filter } => {
                if let Some(session) = self.sessions.get_mut(&client_id) {
                    session.subscriptions.remove(&filter);
                }
            }
            Record::Delivery {
                client_id,
                seq,
                qos,
                retain,
                subscription_ids,
                state,
                message,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id) {
                    let delivery = RestoredDelivery {
                        qos,
                        retain,
                        subscription_ids,
                        state,
                        message,
                    };
                    session.deliveries.insert(seq, delivery);
                }
            }
            Record::DeliveryMoved {
                client_id,
                seq,
                state,
            } => {
                if let Some(delivery) = self
                    .sessions
                    .get_mut(&client_id)
                    .and_then(|s| s.deliveries.get_mut(&seq))
                {
                    delivery.state = state;
                }
            }
            Record::DeliveryDone { client_id, seq } => {
                if let Some(session) = self.sessions.get_mut(&client_id) {
                    session.deliveries.remove(&seq);
                }
            }
            Record::InboundQos2 {
                client_id,
                packet_id,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id) {
                    if !session.inbound.contains(&packet_id) {
                        session.inbound.push(packet_id);
                    }
                }
            }
            Record::InboundReleased {
                client_id,
                packet_id,
            } => {
                if let Some(session) = self.sessions.get_mut(&client_id) {
                    session.inbound.retain(|&id| id != packet_id);
                }
            }
            Record::Retained(message) => {
                self.retained.insert(message.message.topic.clone(), message);
            }
            Record::RetainedDeleted { topic } => {
                self.retained.remove(&topic);
            }
            Record::RemoteFlow {
                publisher,
                packet_id,
            } => {
                self.remote_flows.insert((publisher, packet_id));
            }
            Record::RemoteFlowReleased {
                publisher,
                packet_id,
            } => {
                self.remote_flows.remove(&(publisher, packet_id));
            }
        }
    }
}

impl Broker {
    /// Tells the engine the wall clock: `unix_ms` (milliseconds since 1970) at `now`. Records
    /// carry wall-clock times so that expiry keeps counting while the broker is down.
    pub fn set_wall_clock(&mut self, unix_ms: u64, now: Instant) {
        self.journal.wall_at_zero = unix_ms.saturating_sub(now.0);
    }

    fn wall(&self, at: Instant) -> u64 {
        self.journal.wall_at_zero + at.0
    }

    /// Moves the records emitted since the last call into `out` and returns the sequence number
    /// of the last one (report it to [`Broker::durable`] once it is on stable storage).
    /// Records of one call into the engine should be stored atomically (in one block).
    pub fn take_records(&mut self, out: &mut Vec<Record>) -> u64 {
        out.append(&mut self.journal.records);
        self.journal.last
    }

    /// Sequence number of the last record emitted.
    pub fn last_record(&self) -> u64 {
        self.journal.last
    }

    /// The port stored every record up to `seq` durably: output held for them goes out
    /// (see [`Persistence::Durable`]); the connections concerned are marked writable.
    pub fn durable(&mut self, seq: u64, now: Instant) {
        let _ = now;
        if seq <= self.journal.durable {
            return;
        }
        self.journal.durable = seq.min(self.journal.last);
        self.release_held();
    }

    /// Worker `worker` stored every copy this worker routed to it up to record `seq` durably
    /// (its [`Broker::take_confirmations`]): acknowledgements that waited for them go out.
    pub fn remote_durable(&mut self, worker: u16, seq: u64, now: Instant) {
        let _ = now;
        let Some(waits) = self.journal.unconfirmed.get_mut(usize::from(worker)) else {
            return;
        };
        let before = waits.len();
        while waits.front().is_some_and(|&wait| wait <= seq) {
            waits.pop_front();
        }
        if waits.len() != before {
            self.release_held();
        }
    }

    /// The confirmations due to other workers, as (origin worker, record number): every copy
    /// it routed here up to that record is durable in this worker's store. Post each to its
    /// origin's [`Broker::remote_durable`].
    pub fn take_confirmations(&mut self, out: &mut Vec<(u16, u64)>) {
        let durable = self.journal.durable;
        while let Some(&(origin, seq, _)) = self
            .journal
            .confirmations
            .front()
            .filter(|&&(_, _, local)| local <= durable)
        {
            self.journal.confirmations.pop_front();
            match out.iter_mut().find(|(o, _)| *o == origin) {
                Some(entry) => entry.1 = entry.1.max(seq),
                None => out.push((origin, seq)),
            }
        }
    }

    /// A QoS 1/2 copy waiting for record `seq` goes to worker `worker`'s session.
    pub(crate) fn await_remote(&mut self, worker: u16, seq: u64) {
        let index = usize::from(worker);
        if self.journal.unconfirmed.len() <= index {
            self.journal
                .unconfirmed
                .resize_with(index + 1, VecDeque::new);
        }
        self.journal.unconfirmed[index].push_back(seq);
    }

    /// A copy from `origin` asking to confirm its record `seq` was delivered here.
    pub(crate) fn confirm_when_durable(&mut self, origin: u16, seq: u64) {
        let last = self.journal.last;
        self.journal.confirmations.push_back((origin, seq, last));
    }

    /// Lets out the held output of every connection up to what is released.
    fn release_held(&mut self) {
        let seq = self.journal.released();
        let held = core::mem::take(&mut self.journal.held);
        for conn in held {
            let Some(connection) = self.connection_mut(conn) else {
                continue;
            };
            let holds = &mut connection.extras_mut().holds;
            let before = holds.len();
            while holds.front().is_some_and(|&(_, s)| s <= seq) {
                holds.pop_front();
            }
            let released = holds.len() != before;
            let still = !holds.is_empty();
            if released {
                connection.queued_writable = false;
                self.mark_writable(conn);
            }
            if still {
                self.journal.held.push(conn);
            }
        }
    }

    /// Marks the store full (or not): while full, QoS 1/2 and retained PUBLISH packets are
    /// refused with 0x97 Quota exceeded (MQTT 3.1.1 connections are closed without an
    /// acknowledgement, so the client sends again later) and counted in
    /// [`Stats::persist_refused`](super::Stats::persist_refused).
    pub fn set_store_full(&mut self, full: bool) {
        self.journal.full = full;
    }

    /// True while the store is marked full.
    pub fn store_full(&self) -> bool {
        self.journal.full
    }

    /// The record a copy for another worker's session made now waits for (0: none).
    pub(crate) fn remote_wait(&self) -> u64 {
        match self.config.persistence {
            Persistence::Durable => self.journal.last,
            _ => 0,
        }
    }

    /// Whether every record up to `seq` is durable.
    pub(crate) fn records_durable(&self, seq: u64) -> bool {
        seq <= self.journal.durable
    }

    fn emit(&mut self, record: Record) {
        self.journal.last += 1;
        self.journal.records.push(record);
    }

    /// Output of `conn` from byte `start` on is held until the records emitted so far are
    /// durable, when it goes to a persistent session or acknowledges a PUBLISH.
    pub(crate) fn hold_output(&mut self, conn: ConnId, start: usize, acknowledges: bool) {
        let last = self.journal.last;
        if last <= self.journal.released() {
            return;
        }
        let Some(connection) = self.connection_mut(conn) else {
            return;
        };
        if !(connection.hold_output || acknowledges) {
            return;
        }
        let holds = &mut connection.extras_mut().holds;
        let first = holds.is_empty();
        if holds.back().is_none_or(|&(_, s)| s < last) {
            holds.push_back((start, last));
        }
        if first {
            self.journal.held.push(conn);
        }
    }

    fn client_id_of(&self, index: u32) -> Option<Box<str>> {
        self.session(index)
            .filter(|s| s.persisted)
            .map(|s| s.client_id.clone())
    }

    fn session_record(&self, session: &Session) -> SessionRecord {
        let will = session.will.as_ref().map(|will| WillRecord {
            message: StoredMessage {
                received_at_ms: self.wall(will.message.received_at),
                message: will.message.clone(),
            },
            delay_secs: will.delay_secs,
        });
        SessionRecord {
            client_id: session.client_id.clone(),
            expiry_secs: session.expiry_secs,
            disconnected_at_ms: match session.conn {
                Some(_) => None,
                None => Some(self.wall(session.since)),
            },
            will,
            will_due_ms: session
                .will
                .as_ref()
                .and_then(|will| will.due)
                .map(|at| self.wall(at)),
            username: session.username.clone(),
            listener: session.listener,
        }
    }

    /// A session's own state changed (connected, disconnected, will published).
    pub(crate) fn persist_session(&mut self, index: u32) {
        if !self.config.persistence.is_on() {
            return;
        }
        let Some(session) = self.session(index).filter(|s| s.persisted) else {
            return;
        };
        let record = self.session_record(session);
        self.emit(Record::Session(record));
    }

    /// A connection took a session: it becomes persistent if its expiry is above 0.
    pub(crate) fn persist_connected(&mut self, index: u32, conn: ConnId) {
        if !self.config.persistence.is_on() {
            return;
        }
        let Some(session) = self.session_mut(index) else {
            return;
        };
        if session.expiry_secs > 0 {
            session.persisted = true;
            if let Some(connection) = self.connection_mut(conn) {
                connection.hold_output = true;
            }
            self.persist_session(index);
        } else if session.persisted {
            // Resumed with expiry 0: it ends with this connection, so it is no longer stored.
            session.persisted = false;
            if let Some(backlog) = session.backlog.as_deref_mut() {
                backlog.subscriptions.clear();
            }
            let client_id = session.client_id.clone();
            self.emit(Record::SessionDeleted { client_id });
        }
    }

    /// A session ended.
    pub(crate) fn persist_session_end(&mut self, session: &Session) {
        if self.config.persistence.is_on() && session.persisted {
            let client_id = session.client_id.clone();
            self.emit(Record::SessionDeleted { client_id });
        }
    }

    pub(crate) fn persist_subscribed(
        &mut self,
        index: u32,
        filter: &str,
        options: SubscriptionOptions,
        identifier: Option<u32>,
    ) {
        let Some(client_id) = self.client_id_of(index) else {
            return;
        };
        if let Some(session) = self.session_mut(index) {
            match session
                .backlog_mut()
                .subscriptions
                .iter_mut()
                .find(|s| &*s.0 == filter)
            {
                Some(entry) => {
                    entry.1 = options;
                    entry.2 = identifier;
                }
                None => session.backlog_mut().subscriptions.push((
                    Box::from(filter),
                    options,
                    identifier,
                )),
            }
        }
        self.emit(Record::Subscribed {
            client_id,
            filter: Box::from(filter),
            options: pack_options(options),
            identifier,
        });
    }

    pub(crate) fn persist_unsubscribed(&mut self, index: u32, filter: &str) {
        let Some(client_id) = self.client_id_of(index) else {
            return;
        };
        if let Some(session) = self.session_mut(index) {
            if let Some(backlog) = session.backlog.as_deref_mut() {
                backlog.subscriptions.retain(|s| &*s.0 != filter);
            }
            session.tidy();
        }
        self.emit(Record::Unsubscribed {
            client_id,
            filter: Box::from(filter),
        });
    }

    fn delivery_record(
        &self,
        client_id: Box<str>,
        outgoing: &Outgoing,
        state: DeliveryState,
    ) -> Record {
        Record::Delivery {
            client_id,
            seq: outgoing.seq,
            qos: outgoing.qos as u8,
            retain: outgoing.retain,
            subscription_ids: outgoing.subscription_ids.clone(),
            state,
            message: StoredMessage {
                received_at_ms: self.wall(outgoing.message.received_at),
                message: outgoing.message.clone(),
            },
        }
    }

    /// A QoS 1/2 message goes into a persistent session's queue.
    pub(crate) fn persist_queued(&mut self, index: u32, outgoing: &mut Outgoing) {
        if outgoing.qos == QoS::AtMostOnce || outgoing.seq != 0 {
            return;
        }
        let Some(client_id) = self.client_id_of(index) else {
            return;
        };
        self.journal.next_delivery += 1;
        outgoing.seq = self.journal.next_delivery;
        let record = self.delivery_record(client_id, outgoing, DeliveryState::Queued);
        self.emit(record);
    }

    /// A QoS 1/2 message is sent to a persistent session with `packet_id`.
    pub(crate) fn persist_sent(&mut self, index: u32, outgoing: &mut Outgoing, packet_id: u16) {
        let Some(client_id) = self.client_id_of(index) else {
            return;
        };
        let state = match outgoing.qos {
            QoS::AtMostOnce => return,
            QoS::AtLeastOnce => DeliveryState::AwaitingPubAck(packet_id),
            QoS::ExactlyOnce => DeliveryState::AwaitingPubRec(packet_id),
        };
        if outgoing.seq == 0 {
            self.journal.next_delivery += 1;
            outgoing.seq = self.journal.next_delivery;
            let record = self.delivery_record(client_id, outgoing, state);
            self.emit(record);
        } else {
            let seq = outgoing.seq;
            self.emit(Record::DeliveryMoved {
                client_id,
                seq,
                state,
            });
        }
    }

    /// PUBREC arrived for a persisted delivery.
    pub(crate) fn persist_released(&mut self, index: u32, seq: u64, packet_id: u16) {
        if seq == 0 {
            return;
        }
        if let Some(client_id) = self.client_id_of(index) {
            self.emit(Record::DeliveryMoved {
                client_id,
                seq,
                state: DeliveryState::AwaitingPubComp(packet_id),
            });
        }
    }

    /// A persisted delivery is finished (acknowledged, refused, expired, dropped).
    pub(crate) fn persist_done(&mut self, index: u32, seq: u64) {
        if seq == 0 {
            return;
        }
        if let Some(client_id) = self.client_id_of(index) {
            self.emit(Record::DeliveryDone { client_id, seq });
        }
    }

    /// An inbound QoS 2 packet identifier was stored (`stored`) or released.
    pub(crate) fn persist_inbound(&mut self, index: u32, packet_id: u16, stored: bool) {
        if let Some(client_id) = self.client_id_of(index) {
            self.emit(if stored {
                Record::InboundQos2 {
                    client_id,
                    packet_id,
                }
            } else {
                Record::InboundReleased {
                    client_id,
                    packet_id,
                }
            });
        }
    }

    /// A copy of another worker's publisher's QoS 2 flow was stored here (`stored`) or the
    /// flow released.
    pub(crate) fn persist_remote_flow(&mut self, publisher: &str, packet_id: u16, stored: bool) {
        if !self.config.persistence.is_on() {
            return;
        }
        let publisher = Box::from(publisher);
        self.emit(if stored {
            Record::RemoteFlow {
                publisher,
                packet_id,
            }
        } else {
            Record::RemoteFlowReleased {
                publisher,
                packet_id,
            }
        });
    }

    /// A retained message was stored or (empty payload) deleted.
    pub(crate) fn persist_retained(&mut self, message: &SharedMessage) {
        if !self.config.persistence.is_on() || !self.config.persist_retained {
            return;
        }
        let record = if message.payload.is_empty() {
            Record::RetainedDeleted {
                topic: message.topic.clone(),
            }
        } else {
            Record::Retained(StoredMessage {
                received_at_ms: self.wall(message.received_at),
                message: message.clone(),
            })
        };
        self.emit(record);
    }

    /// Whether a PUBLISH must be refused because the store is full.
    pub(crate) fn store_refuses(&self, qos: QoS, retain: bool) -> bool {
        self.journal.full && self.config.persistence.is_on() && (qos != QoS::AtMostOnce || retain)
    }

    /// The whole persistent state as records (sessions with their subscriptions, deliveries
    /// and inbound QoS 2 identifiers; retained messages when this engine persists them), for
    /// compaction. Take the pending records first ([`Broker::take_records`]): the snapshot
    /// reflects every record up to the returned sequence number.
    pub fn snapshot(&self, out: &mut Vec<Record>) -> u64 {
        for session in self.sessions.iter().flatten().filter(|s| s.persisted) {
            let client_id = &session.client_id;
            out.push(Record::Session(self.session_record(session)));
            for (filter, options, identifier) in &session.backlog().subscriptions {
                out.push(Record::Subscribed {
                    client_id: client_id.clone(),
                    filter: filter.clone(),
                    options: pack_options(*options),
                    identifier: *identifier,
                });
            }
            for &packet_id in &session.backlog().inbound_qos2 {
                out.push(Record::InboundQos2 {
                    client_id: client_id.clone(),
                    packet_id,
                });
            }
            for entry in session
                .backlog()
                .inflight
                .iter()
                .filter(|e| e.outgoing.seq != 0)
            {
                let id = entry.packet_id.get();
                let state = match entry.awaiting {
                    Awaiting::PubAck => DeliveryState::AwaitingPubAck(id),
                    Awaiting::PubRec => DeliveryState::AwaitingPubRec(id),
                    Awaiting::PubComp => DeliveryState::AwaitingPubComp(id),
                };
                out.push(self.delivery_record(client_id.clone(), &entry.outgoing, state));
            }
            for outgoing in session.backlog().queue.iter().filter(|o| o.seq != 0) {
                out.push(self.delivery_record(client_id.clone(), outgoing, DeliveryState::Queued));
            }
        }
        for (publisher, packet_id) in &self.remote_flows {
            out.push(Record::RemoteFlow {
                publisher: publisher.clone(),
                packet_id: *packet_id,
            });
        }
        if self.config.persist_retained {
            self.retained.for_each(|message| {
                out.push(Record::Retained(StoredMessage {
                    received_at_ms: self.wall(message.received_at),
                    message: message.clone(),
                }));
            });
        }
        self.journal.last
    }

    /// A stored message as it is at `now`: `None` once expired.
    fn revive(&self, stored: StoredMessage, now: Instant) -> Option<SharedMessage> {
        let age_secs = self.wall(now).saturating_sub(stored.received_at_ms) / 1000;
        let mut message = Arc::unwrap_or_clone(stored.message);
        if let Some(interval) = message.properties.message_expiry_interval {
            let left = u64::from(interval)
                .checked_sub(age_secs)
                .filter(|&l| l > 0)?;
            message.properties.message_expiry_interval = Some(left as u32);
        }
        message.received_at = now;
        Some(Arc::new(message))
    }

    /// Rebuilds the persistent state from `records` (a snapshot followed by the log) into this
    /// fresh engine at `now` (after [`Broker::set_wall_clock`]). Sessions whose expiry passed
    /// while the broker was down are removed (their wills published), as are expired messages;
    /// wills whose delay passed are published. Sessions that were connected when the broker
    /// stopped count as disconnected now: their wills wait for their delay.
    ///
    /// Records emitted while restoring (by the wills published) are dropped: store a
    /// [`Broker::snapshot`] right after, which contains everything.
    pub fn restore(
        &mut self,
        records: impl IntoIterator<Item = Record>,
        now: Instant,
    ) -> RestoreSummary {
        let mut model = Model::default();
        for record in records {
            if let Record::Delivery { seq, .. } = &record {
                self.journal.next_delivery = self.journal.next_delivery.max(*seq);
            }
            model.apply(record);
        }
        let mut summary = RestoreSummary::default();
        let unix_now = self.wall(now);
        let mut wills: Vec<SharedMessage> = Vec::new();
        for (client_id, restored) in model.sessions {
            let record = restored.record;
            let disconnected_at = record.disconnected_at_ms.unwrap_or(unix_now);
            let away_secs = unix_now.saturating_sub(disconnected_at) / 1000;
            let expiry = record.expiry_secs;
            let remaining = if expiry == u32::MAX {
                u32::MAX
            } else {
                match u64::from(expiry).checked_sub(away_secs).filter(|&r| r > 0) {
                    Some(left) => left as u32,
                    None => {
                        summary.expired_sessions += 1;
                        if let Some(will) = record.will {
                            wills.extend(self.revive(will.message, now));
                        }
                        continue;
                    }
                }
            };
            if self.session_index(&client_id).is_some() {
                continue;
            }
            let index = self.create_session(client_id);
            let subscriber = self.global(index);
            let mut subscriptions = Vec::new();
            for (filter, (packed, identifier)) in restored.subscriptions {
                let Some(options) = unpack_options(packed) else {
                    continue;
                };
                if self
                    .subscriptions
                    .subscribe(subscriber, &filter, options, identifier)
                    .is_ok()
                {
                    self.replicate(Replication::Subscribe {
                        subscriber,
                        filter: filter.clone(),
                        options,
                        identifier,
                    });
                    subscriptions.push((filter, options, identifier));
                }
            }
            let mut queue = Vec::new();
            let mut inflight = Vec::new();
            for (seq, delivery) in restored.deliveries {
                let Some(qos) = qos_from(delivery.qos) else {
                    continue;
                };
                let Some(message) = self.revive(delivery.message, now) else {
                    summary.expired_messages += 1;
                    continue;
                };
                let outgoing = Outgoing {
                    message,
                    qos,
                    retain: delivery.retain,
                    subscription_ids: delivery.subscription_ids,
                    seq,
                };
                let (packet_id, awaiting) = match delivery.state {
                    DeliveryState::Queued => {
                        queue.push(outgoing);
                        summary.messages += 1;
                        continue;
                    }
                    DeliveryState::AwaitingPubAck(id) => (id, Awaiting::PubAck),
                    DeliveryState::AwaitingPubRec(id) => (id, Awaiting::PubRec),
                    DeliveryState::AwaitingPubComp(id) => (id, Awaiting::PubComp),
                };
                let Some(packet_id) = NonZeroU16::new(packet_id) else {
                    continue;
                };
                summary.messages += 1;
                inflight.push(Inflight {
                    packet_id,
                    outgoing,
                    awaiting,
                    resend: false,
                });
            }
            let will = record.will.and_then(|will| {
                let message = self.revive(will.message, now)?;
                Some(PendingWill {
                    message,
                    delay_secs: will.delay_secs,
                    due: None,
                })
            });
            let will_due = match (&will, record.disconnected_at_ms, record.will_due_ms) {
                (None, _, _) => None,
                // Connected when the broker stopped: the connection ended now.
                (Some(will), None, _) => {
                    Some(now.plus_secs(u64::from(will.delay_secs.min(remaining))))
                }
                (Some(_), Some(_), Some(due)) => {
                    Some(now.plus_millis(due.saturating_sub(unix_now)))
                }
                // A will kept by a disconnected session is not pending.
                (Some(_), Some(_), None) => None,
            };
            let Some(session) = self.session_mut(index) else {
                continue;
            };
            session.persisted = true;
            session.expiry_secs = expiry;
            session.username = record.username;
            session.listener = record.listener;
            session.since = now;
            session.next_packet_id = inflight
                .iter()
                .map(|e| e.packet_id.get())
                .max()
                .map_or(1, |id| id.checked_add(1).unwrap_or(1));
            let backlog = session.backlog_mut();
            backlog.inbound_qos2 = restored.inbound;
            backlog.subscriptions = subscriptions;
            for outgoing in queue {
                backlog.queued_bytes += outgoing.size();
                backlog.queue.push_back(outgoing);
            }
            backlog.inflight = inflight.into();
            // Restored in any order: identifiers are checked until they pass the highest.
            backlog.ids_may_repeat = true;
            session.tidy();
            let epoch = session.epoch;
            match (will, will_due) {
                (Some(will), Some(due)) if due <= now => {
                    wills.push(will.message);
                }
                (Some(will), Some(due)) => {
                    session.will = Some(Box::new(PendingWill {
                        due: Some(due),
                        ..will
                    }));
                    self.push_timer(Reverse(Timer::new(due, TimerKind::Will, index, epoch)));
                }
                _ => {}
            }
            if remaining != u32::MAX {
                self.push_timer(Reverse(Timer::new(
                    now.plus_secs(u64::from(remaining)),
                    TimerKind::SessionExpiry,
                    index,
                    epoch,
                )));
            }
            summary.sessions += 1;
        }
        self.remote_flows = model.remote_flows;
        for (topic, stored) in model.retained {
            match self.revive(stored, now) {
                Some(message) => {
                    if self.retained.retain(&topic, message.clone()).is_ok() {
                        summary.retained += 1;
                        self.replicate(Replication::Retain { message });
                    }
                }
                None => summary.expired_messages += 1,
            }
        }
        summary.wills_published = wills.len();
        for message in wills {
            self.publish_will(message, now);
        }
        self.journal.records.clear();
        self.journal.durable = self.journal.last;
        summary
    }
}
