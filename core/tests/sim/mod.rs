//! A deterministic simulation harness for the broker engine: one [`Broker`], simulated time and
//! many virtual clients, all in one thread. No sockets, no clock, no threads.
//!
//! The [`Sim`] plays the port: after every client action it drains the engine's output through
//! `poll_writable`, decodes it with the codec into owned [`Rx`] records per client, closes
//! connections the engine marks closing (calling `closed`), collects events, and runs
//! `handle_timeout` at every `poll_timeout` deadline when time advances.
//!
//! Test files use it with `mod sim;` and `use sim::*;`. Not every file uses every helper.
#![allow(dead_code, unused_imports)]

use std::collections::{BTreeMap, HashMap};
use std::num::{NonZeroU16, NonZeroU32};

pub use femtomq_core::broker::{
    Access, AllowAll, AuthDecision, Authenticator, Authorizer, Broker, ClientInfo, CloseCause,
    Config, ConnId, ConnectInfo, DropReason, Event, Message, SessionEnd,
};
pub use femtomq_core::codec::{
    Ack, AckProperties, Auth, AuthProperties, ConnectProperties, Decoded, Disconnect,
    DisconnectProperties, Packet, Publish, PublishProperties, QosPid, ReasonCode, Repeated,
    SubscribeProperties, Subscription, SubscriptionId, UserProperty, WillProperties,
};
pub use femtomq_core::limits::Limits;
pub use femtomq_core::{Instant, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};

pub const V5: ProtocolVersion = ProtocolVersion::V5;
pub const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
/// Both versions, for tests that hold for each.
pub const VERSIONS: [ProtocolVersion; 2] = [V5, V311];

/// The simulated start of time.
pub const T0: Instant = Instant(1_000_000);

/// Encodes a packet as a client of `version` would send it.
pub fn encode(packet: &Packet<'_>, version: ProtocolVersion) -> Vec<u8> {
    let len = packet
        .encoded_len(version)
        .unwrap_or_else(|e| panic!("cannot encode {packet:?}: {e:?}"));
    let mut buf = vec![0u8; len];
    packet.encode(version, &mut buf).expect("encodes");
    buf
}

pub fn pid(id: u16) -> NonZeroU16 {
    NonZeroU16::new(id).expect("non-zero packet id")
}

// ----- owned records of what the broker sent ------------------------------------------------

/// CONNACK as received.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RxConnAck {
    pub session_present: bool,
    pub reason: ReasonCode,
    pub session_expiry_interval: Option<u32>,
    pub receive_maximum: Option<u16>,
    pub maximum_packet_size: Option<u32>,
    pub topic_alias_maximum: Option<u16>,
    pub retain_available: Option<bool>,
    pub assigned_client_identifier: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Vec<u8>>,
}

/// PUBLISH as received, with its topic resolved through the broker's aliases.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RxPublish {
    pub dup: bool,
    pub qos: QoS,
    pub packet_id: Option<u16>,
    pub retain: bool,
    /// The topic name field as sent (empty when an alias stands for it).
    pub wire_topic: String,
    /// The topic after alias resolution.
    pub topic: String,
    pub topic_alias: Option<u16>,
    pub payload: Vec<u8>,
    pub payload_format_indicator: Option<bool>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub user_properties: Vec<(String, String)>,
    pub subscription_identifiers: Vec<u32>,
    /// Bytes of the whole packet on the wire.
    pub wire_len: usize,
}

/// Any packet as received, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Rx {
    ConnAck(RxConnAck),
    Publish(RxPublish),
    PubAck(u16, ReasonCode),
    PubRec(u16, ReasonCode),
    PubRel(u16, ReasonCode),
    PubComp(u16, ReasonCode),
    SubAck(u16, Vec<ReasonCode>),
    UnsubAck(u16, Vec<ReasonCode>),
    PingResp,
    Disconnect(ReasonCode),
    Auth {
        reason: ReasonCode,
        method: Option<String>,
        data: Option<Vec<u8>>,
    },
    /// Anything a server must not send (CONNECT, SUBSCRIBE...): recorded to fail tests.
    Unexpected(String),
}

impl Rx {
    pub fn publish(&self) -> Option<&RxPublish> {
        match self {
            Rx::Publish(p) => Some(p),
            _ => None,
        }
    }
}

fn owned(s: Option<&str>) -> Option<String> {
    s.map(String::from)
}

fn to_rx(packet: Packet<'_>, len: usize, aliases: &mut HashMap<u16, String>) -> Rx {
    match packet {
        Packet::ConnAck(c) => {
            let p = &c.properties;
            Rx::ConnAck(RxConnAck {
                session_present: c.session_present,
                reason: c.reason,
                session_expiry_interval: p.session_expiry_interval,
                receive_maximum: p.receive_maximum.map(NonZeroU16::get),
                maximum_packet_size: p.maximum_packet_size.map(NonZeroU32::get),
                topic_alias_maximum: p.topic_alias_maximum,
                retain_available: p.retain_available,
                assigned_client_identifier: owned(p.assigned_client_identifier),
                server_keep_alive: p.server_keep_alive,
                authentication_method: owned(p.authentication_method),
                authentication_data: p.authentication_data.map(<[u8]>::to_vec),
            })
        }
        Packet::Publish(p) => {
            let alias = p.properties.topic_alias.map(NonZeroU16::get);
            let topic = match alias {
                Some(a) if p.topic.is_empty() => aliases
                    .get(&a)
                    .cloned()
                    .unwrap_or_else(|| panic!("broker used alias {a} before setting it")),
                Some(a) => {
                    aliases.insert(a, p.topic.to_string());
                    p.topic.to_string()
                }
                None => p.topic.to_string(),
            };
            let pp = &p.properties;
            Rx::Publish(RxPublish {
                dup: p.dup,
                qos: p.qos_pid.qos(),
                packet_id: p.qos_pid.packet_id().map(NonZeroU16::get),
                retain: p.retain,
                wire_topic: p.topic.to_string(),
                topic,
                topic_alias: alias,
                payload: p.payload.to_vec(),
                payload_format_indicator: pp.payload_format_indicator,
                message_expiry_interval: pp.message_expiry_interval,
                content_type: owned(pp.content_type),
                response_topic: owned(pp.response_topic),
                correlation_data: pp.correlation_data.map(<[u8]>::to_vec),
                user_properties: pp
                    .user_properties
                    .iter()
                    .map(|u| (u.name.to_string(), u.value.to_string()))
                    .collect(),
                subscription_identifiers: pp
                    .subscription_identifiers
                    .iter()
                    .map(SubscriptionId::get)
                    .collect(),
                wire_len: len,
            })
        }
        Packet::PubAck(a) => Rx::PubAck(a.packet_id.get(), a.reason),
        Packet::PubRec(a) => Rx::PubRec(a.packet_id.get(), a.reason),
        Packet::PubRel(a) => Rx::PubRel(a.packet_id.get(), a.reason),
        Packet::PubComp(a) => Rx::PubComp(a.packet_id.get(), a.reason),
        Packet::SubAck(s) => Rx::SubAck(s.packet_id.get(), s.reason_codes.iter().collect()),
        Packet::UnsubAck(s) => Rx::UnsubAck(s.packet_id.get(), s.reason_codes.iter().collect()),
        Packet::PingResp => Rx::PingResp,
        Packet::Disconnect(d) => Rx::Disconnect(d.reason),
        Packet::Auth(a) => Rx::Auth {
            reason: a.reason,
            method: owned(a.properties.authentication_method),
            data: a.properties.authentication_data.map(<[u8]>::to_vec),
        },
        other => Rx::Unexpected(format!("{other:?}")),
    }
}

/// The Reason String and the number of User Properties of one packet the broker sent (as in
/// [`ClientState::raw`]), decoded for `version`; `(None, 0)` for packets that have neither.
pub fn reason_string(bytes: &[u8], version: ProtocolVersion) -> (Option<String>, usize) {
    let packet = femtomq_core::codec::decode_packet(bytes, version).expect("decodes");
    let (text, users) = match &packet {
        Packet::ConnAck(c) => (
            c.properties.reason_string,
            c.properties.user_properties.len(),
        ),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => (
            a.properties.reason_string,
            a.properties.user_properties.len(),
        ),
        Packet::SubAck(s) => (
            s.properties.reason_string,
            s.properties.user_properties.len(),
        ),
        Packet::UnsubAck(s) => (
            s.properties.reason_string,
            s.properties.user_properties.len(),
        ),
        Packet::Disconnect(d) => (
            d.properties.reason_string,
            d.properties.user_properties.len(),
        ),
        Packet::Auth(a) => (
            a.properties.reason_string,
            a.properties.user_properties.len(),
        ),
        _ => (None, 0),
    };
    (text.map(String::from), users)
}

// ----- CONNECT --------------------------------------------------------------------------------

/// A will, owned.
#[derive(Debug, Clone, Default)]
pub struct WillSpec {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
    pub delay: Option<u32>,
    pub expiry: Option<u32>,
}

/// Everything a CONNECT may say, with the defaults of a plain MQTT 5 client.
#[derive(Debug, Clone)]
pub struct ConnectSpec {
    pub version: ProtocolVersion,
    pub client_id: String,
    pub clean_start: bool,
    pub keep_alive: u16,
    pub session_expiry: Option<u32>,
    pub receive_maximum: Option<u16>,
    pub maximum_packet_size: Option<u32>,
    pub topic_alias_maximum: Option<u16>,
    pub will: Option<WillSpec>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
    pub auth_method: Option<String>,
    pub auth_data: Option<Vec<u8>>,
    /// Request Problem Information (MQTT 5; absent means 1).
    pub request_problem_information: Option<bool>,
}

impl ConnectSpec {
    pub fn new(version: ProtocolVersion, client_id: &str) -> Self {
        ConnectSpec {
            version,
            client_id: client_id.to_string(),
            clean_start: true,
            keep_alive: 0,
            session_expiry: None,
            receive_maximum: None,
            maximum_packet_size: None,
            topic_alias_maximum: None,
            will: None,
            username: None,
            password: None,
            auth_method: None,
            auth_data: None,
            request_problem_information: None,
        }
    }

    pub fn v5(client_id: &str) -> Self {
        Self::new(V5, client_id)
    }

    pub fn v311(client_id: &str) -> Self {
        Self::new(V311, client_id)
    }

    /// A persistent session: Clean Start 0 and (MQTT 5) a session expiry of `expiry` seconds.
    pub fn persistent(mut self, expiry: u32) -> Self {
        self.clean_start = false;
        if self.version.is_v5() {
            self.session_expiry = Some(expiry);
        }
        self
    }

    pub fn clean(mut self, clean_start: bool) -> Self {
        self.clean_start = clean_start;
        self
    }

    pub fn keep_alive(mut self, seconds: u16) -> Self {
        self.keep_alive = seconds;
        self
    }

    pub fn expiry(mut self, seconds: u32) -> Self {
        self.session_expiry = Some(seconds);
        self
    }

    pub fn receive_maximum(mut self, max: u16) -> Self {
        self.receive_maximum = Some(max);
        self
    }

    pub fn maximum_packet_size(mut self, max: u32) -> Self {
        self.maximum_packet_size = Some(max);
        self
    }

    pub fn topic_alias_maximum(mut self, max: u16) -> Self {
        self.topic_alias_maximum = Some(max);
        self
    }

    pub fn will(mut self, will: WillSpec) -> Self {
        self.will = Some(will);
        self
    }

    pub fn user(mut self, username: &str, password: &[u8]) -> Self {
        self.username = Some(username.to_string());
        self.password = Some(password.to_vec());
        self
    }

    pub fn request_problem_information(mut self, request: bool) -> Self {
        self.request_problem_information = Some(request);
        self
    }

    pub fn auth(mut self, method: &str, data: Option<&[u8]>) -> Self {
        self.auth_method = Some(method.to_string());
        self.auth_data = data.map(<[u8]>::to_vec);
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let will = self.will.as_ref().map(|w| femtomq_core::codec::Will {
            properties: WillProperties {
                will_delay_interval: w.delay,
                message_expiry_interval: w.expiry,
                ..WillProperties::default()
            },
            topic: &w.topic,
            payload: &w.payload,
            qos: w.qos,
            retain: w.retain,
        });
        let packet = Packet::Connect(femtomq_core::codec::Connect {
            version: self.version,
            clean_start: self.clean_start,
            keep_alive: self.keep_alive,
            properties: ConnectProperties {
                session_expiry_interval: self.session_expiry,
                receive_maximum: self.receive_maximum.and_then(NonZeroU16::new),
                maximum_packet_size: self.maximum_packet_size.and_then(NonZeroU32::new),
                topic_alias_maximum: self.topic_alias_maximum,
                request_problem_information: self.request_problem_information,
                authentication_method: self.auth_method.as_deref(),
                authentication_data: self.auth_data.as_deref(),
                ..ConnectProperties::default()
            },
            client_id: &self.client_id,
            will,
            username: self.username.as_deref(),
            password: self.password.as_deref(),
        });
        encode(&packet, self.version)
    }
}

// ----- PUBLISH --------------------------------------------------------------------------------

/// A PUBLISH to send, owned, with the MQTT 5 properties a test may set.
#[derive(Debug, Clone, Default)]
pub struct PublishSpec {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
    pub dup: bool,
    /// Packet id for QoS > 0; the client allocates one when `None`.
    pub packet_id: Option<u16>,
    pub topic_alias: Option<u16>,
    pub message_expiry: Option<u32>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub content_type: Option<String>,
    pub payload_format_indicator: Option<bool>,
    pub user_properties: Vec<(String, String)>,
}

impl PublishSpec {
    pub fn new(topic: &str, payload: &[u8], qos: QoS) -> Self {
        PublishSpec {
            topic: topic.to_string(),
            payload: payload.to_vec(),
            qos,
            ..PublishSpec::default()
        }
    }

    pub fn retain(mut self) -> Self {
        self.retain = true;
        self
    }

    pub fn packet_id(mut self, id: u16) -> Self {
        self.packet_id = Some(id);
        self
    }

    pub fn alias(mut self, alias: u16) -> Self {
        self.topic_alias = Some(alias);
        self
    }

    pub fn expiry(mut self, seconds: u32) -> Self {
        self.message_expiry = Some(seconds);
        self
    }

    pub fn encode(&self, version: ProtocolVersion, packet_id: u16) -> Vec<u8> {
        let users: Vec<UserProperty<'_>> = self
            .user_properties
            .iter()
            .map(|(name, value)| UserProperty { name, value })
            .collect();
        let packet = Packet::Publish(Publish {
            dup: self.dup,
            qos_pid: match self.qos {
                QoS::AtMostOnce => QosPid::AtMostOnce,
                QoS::AtLeastOnce => QosPid::AtLeastOnce(pid(packet_id)),
                QoS::ExactlyOnce => QosPid::ExactlyOnce(pid(packet_id)),
            },
            retain: self.retain,
            topic: &self.topic,
            properties: PublishProperties {
                payload_format_indicator: self.payload_format_indicator,
                message_expiry_interval: self.message_expiry,
                topic_alias: self.topic_alias.and_then(NonZeroU16::new),
                response_topic: self.response_topic.as_deref(),
                correlation_data: self.correlation_data.as_deref(),
                user_properties: Repeated::from_slice(&users),
                content_type: self.content_type.as_deref(),
                ..PublishProperties::default()
            },
            payload: &self.payload,
        });
        encode(&packet, version)
    }
}

// ----- clients --------------------------------------------------------------------------------

/// A virtual client: its index in the [`Sim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Client(pub usize);

/// How a client answers the broker's QoS packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// PUBACK/PUBREC for every PUBLISH, PUBREL for every PUBREC, PUBCOMP for every PUBREL.
    Auto,
    /// Nothing is answered unless the test does.
    Manual,
}

#[derive(Debug)]
pub struct ClientState {
    pub conn: ConnId,
    pub version: ProtocolVersion,
    pub acks: Acks,
    /// Every packet received, in order (tests take from here).
    pub inbox: Vec<Rx>,
    /// The wire bytes of every packet received, in order, one entry per packet (for what
    /// [`Rx`] leaves out, see [`reason_string`] and [`Sim::take_raw`]).
    pub raw: Vec<Vec<u8>>,
    /// Every PUBLISH ever received on any connection of this client, in order.
    pub all_publishes: Vec<RxPublish>,
    /// The broker closed the connection (or the test dropped it).
    pub closed: bool,
    aliases: HashMap<u16, String>,
    next_packet_id: u16,
    /// Answers queued by `Acks::Auto`, sent at the next pump.
    pending_answers: Vec<Vec<u8>>,
}

/// The simulated world.
pub struct Sim {
    pub broker: Broker,
    pub now: Instant,
    pub clients: Vec<ClientState>,
    /// Every event the engine emitted, in order.
    pub events: Vec<Event>,
}

impl Sim {
    pub fn new(config: Config) -> Self {
        Self::with_seed(config, 7)
    }

    pub fn with_seed(config: Config, seed: u64) -> Self {
        Sim {
            broker: Broker::new(config, seed),
            now: T0,
            clients: Vec::new(),
            events: Vec::new(),
        }
    }

    /// A broker with message events on and default limits.
    pub fn default_v() -> Self {
        Self::new(events_config())
    }

    pub fn client(&self, c: Client) -> &ClientState {
        &self.clients[c.0]
    }

    pub fn client_mut(&mut self, c: Client) -> &mut ClientState {
        &mut self.clients[c.0]
    }

    pub fn conn(&self, c: Client) -> ConnId {
        self.clients[c.0].conn
    }

    /// Opens a network connection for a new client of `version` (no CONNECT yet).
    pub fn open(&mut self, version: ProtocolVersion) -> Client {
        let conn = self.broker.open(0, self.now);
        self.clients.push(ClientState {
            conn,
            version,
            acks: Acks::Auto,
            inbox: Vec::new(),
            raw: Vec::new(),
            all_publishes: Vec::new(),
            closed: false,
            aliases: HashMap::new(),
            next_packet_id: 0,
            pending_answers: Vec::new(),
        });
        Client(self.clients.len() - 1)
    }

    /// Opens a new network connection for an existing client (a reconnect): the client's
    /// received packets and counters stay, the alias table starts afresh.
    pub fn reopen(&mut self, c: Client) {
        assert!(
            self.clients[c.0].closed,
            "reopen a client whose connection is closed"
        );
        let conn = self.broker.open(0, self.now);
        let state = &mut self.clients[c.0];
        state.conn = conn;
        state.closed = false;
        state.aliases.clear();
        state.inbox.clear();
        state.raw.clear();
        state.pending_answers.clear();
    }

    /// Sends CONNECT and returns what came back (CONNACK or AUTH, possibly nothing).
    pub fn connect_raw(&mut self, c: Client, spec: &ConnectSpec) -> Vec<Rx> {
        self.clients[c.0].version = spec.version;
        self.send_bytes(c, &spec.encode());
        self.take(c)
    }

    /// Opens a connection, connects, asserts CONNACK 0x00 and returns the client and CONNACK.
    pub fn connect_ack(&mut self, spec: &ConnectSpec) -> (Client, RxConnAck) {
        let c = self.open(spec.version);
        let rx = self.connect_raw(c, spec);
        match rx.first() {
            Some(Rx::ConnAck(ack)) if ack.reason == ReasonCode::SUCCESS => {
                let ack = ack.clone();
                // Keep anything after CONNACK (resent messages) for the test.
                self.clients[c.0].inbox = rx[1..].to_vec();
                (c, ack)
            }
            other => panic!("expected CONNACK 0x00 for {spec:?}, got {other:?} in {rx:?}"),
        }
    }

    /// Connects a new client and asserts success.
    pub fn connect(&mut self, spec: ConnectSpec) -> Client {
        self.connect_ack(&spec).0
    }

    /// Reconnects an existing (closed) client with `spec`, asserting CONNACK 0x00.
    pub fn reconnect(&mut self, c: Client, spec: &ConnectSpec) -> RxConnAck {
        self.reopen(c);
        let rx = self.connect_raw(c, spec);
        match rx.first() {
            Some(Rx::ConnAck(ack)) if ack.reason == ReasonCode::SUCCESS => {
                let ack = ack.clone();
                self.clients[c.0].inbox = rx[1..].to_vec();
                ack
            }
            other => panic!("expected CONNACK 0x00, got {other:?} in {rx:?}"),
        }
    }

    pub fn set_acks(&mut self, c: Client, acks: Acks) {
        self.clients[c.0].acks = acks;
    }

    /// Feeds raw bytes to the engine as input from `c`, asserting they were all consumed, then
    /// runs the port loop.
    pub fn send_bytes(&mut self, c: Client, bytes: &[u8]) {
        let conn = self.clients[c.0].conn;
        assert!(
            !self.clients[c.0].closed,
            "client {c:?} sends on a closed connection"
        );
        let used = self.broker.handle_input(conn, bytes, self.now);
        assert_eq!(used, bytes.len(), "the engine consumes whole packets");
        self.pump();
    }

    /// Feeds raw bytes and returns how many the engine consumed (for partial-packet tests).
    pub fn feed(&mut self, c: Client, bytes: &[u8]) -> usize {
        let conn = self.clients[c.0].conn;
        let used = self.broker.handle_input(conn, bytes, self.now);
        self.pump();
        used
    }

    /// Encodes `packet` in the client's version and sends it.
    pub fn send(&mut self, c: Client, packet: Packet<'_>) {
        let bytes = encode(&packet, self.clients[c.0].version);
        self.send_bytes(c, &bytes);
    }

    pub fn next_packet_id(&mut self, c: Client) -> u16 {
        let state = &mut self.clients[c.0];
        state.next_packet_id = state.next_packet_id.checked_add(1).unwrap_or(1);
        state.next_packet_id
    }

    /// Sends SUBSCRIBE for several filters (with an optional subscription identifier) and
    /// returns the SUBACK reason codes. Retained messages that follow stay in the inbox.
    pub fn subscribe_many(
        &mut self,
        c: Client,
        filters: &[(&str, SubscriptionOptions)],
        identifier: Option<u32>,
    ) -> Vec<ReasonCode> {
        let id = self.next_packet_id(c);
        let subscriptions: Vec<Subscription<'_>> = filters
            .iter()
            .map(|&(filter, options)| Subscription { filter, options })
            .collect();
        self.send(
            c,
            Packet::Subscribe(femtomq_core::codec::Subscribe {
                packet_id: pid(id),
                properties: SubscribeProperties {
                    subscription_identifier: identifier.and_then(SubscriptionId::new),
                    ..SubscribeProperties::default()
                },
                subscriptions: Repeated::from_slice(&subscriptions),
            }),
        );
        let inbox = &mut self.clients[c.0].inbox;
        let position = inbox
            .iter()
            .position(|rx| matches!(rx, Rx::SubAck(i, _) if *i == id))
            .unwrap_or_else(|| panic!("no SUBACK {id} in {inbox:?}"));
        match inbox.remove(position) {
            Rx::SubAck(_, codes) => codes,
            _ => unreachable!(),
        }
    }

    pub fn subscribe_opts(
        &mut self,
        c: Client,
        filter: &str,
        options: SubscriptionOptions,
    ) -> ReasonCode {
        self.subscribe_many(c, &[(filter, options)], None)[0]
    }

    /// Subscribes to one filter at `qos` and asserts it was granted.
    pub fn subscribe(&mut self, c: Client, filter: &str, qos: QoS) {
        let code = self.subscribe_opts(c, filter, SubscriptionOptions::with_qos(qos));
        assert_eq!(code, ReasonCode(qos as u8), "SUBACK for {filter}");
    }

    pub fn unsubscribe(&mut self, c: Client, filters: &[&str]) -> Vec<ReasonCode> {
        let id = self.next_packet_id(c);
        self.send(
            c,
            Packet::Unsubscribe(femtomq_core::codec::Unsubscribe {
                packet_id: pid(id),
                properties: Default::default(),
                filters: Repeated::from_slice(filters),
            }),
        );
        let inbox = &mut self.clients[c.0].inbox;
        let position = inbox
            .iter()
            .position(|rx| matches!(rx, Rx::UnsubAck(i, _) if *i == id))
            .unwrap_or_else(|| panic!("no UNSUBACK {id} in {inbox:?}"));
        match inbox.remove(position) {
            Rx::UnsubAck(_, codes) => codes,
            _ => unreachable!(),
        }
    }

    /// Sends a PUBLISH; returns the packet id used (0 for QoS 0).
    pub fn publish_spec(&mut self, c: Client, spec: &PublishSpec) -> u16 {
        let id = match (spec.qos, spec.packet_id) {
            (QoS::AtMostOnce, _) => 0,
            (_, Some(id)) => id,
            (_, None) => self.next_packet_id(c),
        };
        let bytes = spec.encode(self.clients[c.0].version, id.max(1));
        self.send_bytes(c, &bytes);
        id
    }

    /// Publishes `payload` to `topic`.
    pub fn publish(&mut self, c: Client, topic: &str, payload: &[u8], qos: QoS) -> u16 {
        self.publish_spec(c, &PublishSpec::new(topic, payload, qos))
    }

    pub fn puback(&mut self, c: Client, id: u16) {
        self.send(c, Packet::PubAck(Ack::success(pid(id))));
    }

    pub fn pubrec(&mut self, c: Client, id: u16) {
        self.send(c, Packet::PubRec(Ack::success(pid(id))));
    }

    pub fn pubrel(&mut self, c: Client, id: u16) {
        self.send(c, Packet::PubRel(Ack::success(pid(id))));
    }

    pub fn pubcomp(&mut self, c: Client, id: u16) {
        self.send(c, Packet::PubComp(Ack::success(pid(id))));
    }

    /// Acknowledges a received PUBLISH completely: PUBACK, or PUBREC then PUBCOMP after PUBREL.
    pub fn ack(&mut self, c: Client, publish: &RxPublish) {
        let Some(id) = publish.packet_id else {
            return;
        };
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.puback(c, id),
            QoS::ExactlyOnce => {
                self.pubrec(c, id);
                let inbox = &mut self.clients[c.0].inbox;
                let position = inbox
                    .iter()
                    .position(|rx| *rx == Rx::PubRel(id, ReasonCode::SUCCESS))
                    .unwrap_or_else(|| panic!("no PUBREL {id} in {inbox:?}"));
                inbox.remove(position);
                self.pubcomp(c, id);
            }
        }
    }

    pub fn disconnect(&mut self, c: Client, reason: ReasonCode) {
        self.send(c, Packet::Disconnect(Disconnect::with_reason(reason)));
    }

    pub fn disconnect_with_expiry(&mut self, c: Client, reason: ReasonCode, expiry: u32) {
        self.send(
            c,
            Packet::Disconnect(Disconnect {
                reason,
                properties: DisconnectProperties {
                    session_expiry_interval: Some(expiry),
                    ..DisconnectProperties::default()
                },
            }),
        );
    }

    /// The network connection of `c` breaks (no DISCONNECT).
    pub fn drop_connection(&mut self, c: Client) {
        let state = &mut self.clients[c.0];
        if !state.closed {
            state.closed = true;
            self.broker.closed(state.conn, self.now);
            self.pump();
        }
    }

    /// Takes every packet `c` received since the last take.
    pub fn take(&mut self, c: Client) -> Vec<Rx> {
        std::mem::take(&mut self.clients[c.0].inbox)
    }

    /// Takes the wire bytes of the packets `c` received since the last `take_raw` (or its
    /// last reconnect), independently of [`Sim::take`].
    pub fn take_raw(&mut self, c: Client) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.clients[c.0].raw)
    }

    /// Takes the PUBLISH packets `c` received, asserting nothing else came (but the QoS 2
    /// handshake packets a client with [`Acks::Auto`] answers by itself).
    pub fn take_publishes(&mut self, c: Client) -> Vec<RxPublish> {
        let auto = self.clients[c.0].acks == Acks::Auto;
        self.take(c)
            .into_iter()
            .filter_map(|rx| match rx {
                Rx::Publish(p) => Some(p),
                Rx::PubRel(..) | Rx::PubRec(..) | Rx::PubComp(..) if auto => None,
                other => panic!("expected only PUBLISH, got {other:?}"),
            })
            .collect()
    }

    /// The payloads of the PUBLISH packets received, as strings, asserting nothing else came.
    pub fn take_payloads(&mut self, c: Client) -> Vec<String> {
        self.take_publishes(c)
            .into_iter()
            .map(|p| String::from_utf8(p.payload).expect("utf-8 payload"))
            .collect()
    }

    pub fn is_closed(&self, c: Client) -> bool {
        self.clients[c.0].closed
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Advances time by `millis`, running every deadline on the way at its own time.
    pub fn advance(&mut self, millis: u64) {
        let end = self.now.plus_millis(millis);
        while let Some(deadline) = self.broker.poll_timeout() {
            if deadline > end {
                break;
            }
            if deadline > self.now {
                self.now = deadline;
            }
            self.broker.handle_timeout(self.now);
            self.pump();
        }
        self.now = end;
        self.broker.handle_timeout(self.now);
        self.pump();
    }

    pub fn advance_secs(&mut self, seconds: u64) {
        self.advance(seconds * 1000);
    }

    /// The port loop: writes output of writable connections to their clients, closes what the
    /// engine closes, sends automatic answers, until nothing moves; then collects events.
    pub fn pump(&mut self) {
        let by_conn: BTreeMap<ConnId, usize> = self
            .clients
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.closed)
            .map(|(i, s)| (s.conn, i))
            .collect();
        loop {
            let mut moved = false;
            while let Some(conn) = self.broker.poll_writable() {
                let Some(&index) = by_conn.get(&conn) else {
                    // A connection the test never saw (should not happen) or already closed.
                    let n = self.broker.output(conn).len();
                    self.broker.consume_output(conn, n, self.now);
                    continue;
                };
                moved |= self.flush(index);
            }
            // The writable queue must have named every connection with output or closing.
            for index in 0..self.clients.len() {
                if self.clients[index].closed {
                    continue;
                }
                let conn = self.clients[index].conn;
                assert!(
                    self.broker.output(conn).is_empty(),
                    "connection {conn:?} has output poll_writable did not announce"
                );
                assert!(
                    !self.broker.is_closing(conn),
                    "connection {conn:?} is closing but poll_writable did not announce it"
                );
            }
            for index in 0..self.clients.len() {
                let answers = std::mem::take(&mut self.clients[index].pending_answers);
                for bytes in answers {
                    if self.clients[index].closed {
                        break;
                    }
                    let conn = self.clients[index].conn;
                    let used = self.broker.handle_input(conn, &bytes, self.now);
                    assert_eq!(used, bytes.len());
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        while let Some(event) = self.broker.poll_event() {
            self.events.push(event);
        }
    }

    /// Moves the output of client `index` into its inbox; closes it if the engine wants.
    fn flush(&mut self, index: usize) -> bool {
        let state = &mut self.clients[index];
        if state.closed {
            return false;
        }
        let conn = state.conn;
        // As the POSIX port does: take the whole buffer, which lets the engine move messages
        // that waited for a congested connection.
        let mut out = Vec::new();
        self.broker.swap_output(conn, &mut out, self.now);
        let mut rest = &out[..];
        let mut moved = !out.is_empty();
        while !rest.is_empty() {
            let decoded = femtomq_core::codec::decode(
                rest,
                state.version,
                femtomq_core::codec::MAX_PACKET_SIZE,
            )
            .unwrap_or_else(|e| panic!("broker wrote an undecodable packet: {e:?} {rest:02x?}"));
            let Decoded::Packet { packet, len } = decoded else {
                panic!("broker wrote a partial packet: {rest:02x?}");
            };
            let rx = to_rx(packet, len, &mut state.aliases);
            if let Rx::Unexpected(what) = &rx {
                panic!("broker sent a client-only packet: {what}");
            }
            if state.acks == Acks::Auto {
                let answer = match &rx {
                    Rx::Publish(p) => match (p.qos, p.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => Some(Packet::PubAck(Ack::success(pid(id)))),
                        (QoS::ExactlyOnce, Some(id)) => Some(Packet::PubRec(Ack::success(pid(id)))),
                        _ => None,
                    },
                    Rx::PubRec(id, reason) if !reason.is_error() => {
                        Some(Packet::PubRel(Ack::success(pid(*id))))
                    }
                    Rx::PubRel(id, _) => Some(Packet::PubComp(Ack::success(pid(*id)))),
                    _ => None,
                };
                if let Some(answer) = answer {
                    state.pending_answers.push(encode(&answer, state.version));
                }
            }
            if let Rx::Publish(p) = &rx {
                state.all_publishes.push(p.clone());
            }
            state.inbox.push(rx);
            state.raw.push(rest[..len].to_vec());
            rest = &rest[len..];
        }
        if self.broker.is_closing(conn) && self.broker.output(conn).is_empty() {
            state.closed = true;
            self.broker.closed(conn, self.now);
            moved = true;
        }
        moved
    }

    /// Events of one kind, by a filter closure.
    pub fn events_matching(&self, f: impl Fn(&Event) -> bool) -> Vec<Event> {
        self.events.iter().filter(|e| f(e)).cloned().collect()
    }

    /// Asserts the broker holds nothing for anyone: no sessions, subscriptions or trie nodes.
    pub fn assert_baseline(&self) {
        let stats = self.broker.stats();
        assert_eq!(stats.sessions, 0, "sessions left: {stats:?}");
        assert_eq!(stats.connected, 0, "connections left: {stats:?}");
        assert_eq!(self.broker.subscription_count(), 0, "subscriptions left");
        assert_eq!(self.broker.subscription_nodes(), 0, "trie nodes left");
    }
}

/// A configuration with message events on.
pub fn events_config() -> Config {
    Config {
        message_events: true,
        ..Config::default()
    }
}

/// Options with `qos` and everything else at its default.
pub fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions::with_qos(qos)
}

/// A tiny deterministic generator (xorshift64*) for randomized scenario tests.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
