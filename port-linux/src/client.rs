//! `femtomq pub` and `femtomq sub`: small MQTT clients on blocking sockets, for scripts and
//! for checking a broker by hand (like `mosquitto_pub`/`mosquitto_sub`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use femtomq_core::codec::{
    Ack, ConnAck, Connect, ConnectProperties, Decoded, Disconnect, MAX_PACKET_SIZE, Packet,
    PacketType, Publish, PublishProperties, QosPid, ReasonCode, Repeated, Subscribe,
    SubscribeProperties, Subscription, UserProperty, decode, decode_packet,
};
use femtomq_core::{ProtocolVersion, QoS, SubscriptionOptions};

/// How to reach and identify with the broker.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Protocol version.
    pub version: ProtocolVersion,
    /// Client identifier (empty: the broker assigns one).
    pub client_id: String,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Keep alive in seconds.
    pub keep_alive: u16,
    /// Clean start / clean session.
    pub clean_start: bool,
    /// Session expiry interval (MQTT 5).
    pub session_expiry: Option<u32>,
}

/// A connected client.
struct Client {
    stream: TcpStream,
    version: ProtocolVersion,
    input: Vec<u8>,
    next_packet_id: u16,
    keep_alive: u16,
    last_sent: Instant,
}

fn error(context: &str, e: impl std::fmt::Display) -> String {
    format!("{context}: {e}")
}

impl Client {
    fn connect(options: &ClientOptions) -> Result<Client, String> {
        let address = format!("{}:{}", options.host, options.port);
        let stream = TcpStream::connect(&address)
            .map_err(|e| error(&format!("cannot connect to {address}"), e))?;
        stream.set_nodelay(true).map_err(|e| error("socket", e))?;
        let mut client = Client {
            stream,
            version: options.version,
            input: Vec::new(),
            next_packet_id: 1,
            keep_alive: options.keep_alive,
            last_sent: Instant::now(),
        };
        let connect = Packet::Connect(Connect {
            version: options.version,
            clean_start: options.clean_start,
            keep_alive: options.keep_alive,
            properties: ConnectProperties {
                session_expiry_interval: options.session_expiry,
                ..ConnectProperties::default()
            },
            client_id: &options.client_id,
            will: None,
            username: options.username.as_deref(),
            password: options.password.as_deref().map(str::as_bytes),
        });
        client.send(&connect)?;
        let connack = client.receive(Some(Duration::from_secs(10)))?;
        let Some(bytes) = connack else {
            return Err("no CONNACK within 10 s".into());
        };
        match decode_packet(&bytes, client.version) {
            Ok(Packet::ConnAck(ConnAck { reason, .. })) if reason == ReasonCode::SUCCESS => {
                Ok(client)
            }
            Ok(Packet::ConnAck(ConnAck { reason, .. })) => {
                Err(format!("connection refused: {reason}"))
            }
            Ok(other) => Err(format!("expected CONNACK, got {:?}", other.packet_type())),
            Err(e) => Err(error("bad CONNACK", e)),
        }
    }

    fn packet_id(&mut self) -> NonZeroU16 {
        let id = NonZeroU16::new(self.next_packet_id).unwrap_or(NonZeroU16::MIN);
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        id
    }

    fn send(&mut self, packet: &Packet<'_>) -> Result<(), String> {
        let len = packet
            .encoded_len(self.version)
            .map_err(|e| error("cannot encode", e))?;
        let mut buf = vec![0u8; len];
        packet
            .encode(self.version, &mut buf)
            .map_err(|e| error("cannot encode", e))?;
        self.stream.write_all(&buf).map_err(|e| error("write", e))?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// The next whole packet's bytes, or `None` if `timeout` passed first. Sends PINGREQ when the
    /// keep alive asks for it.
    fn receive(&mut self, timeout: Option<Duration>) -> Result<Option<Vec<u8>>, String> {
        let started = Instant::now();
        loop {
            match decode(&self.input, self.version, MAX_PACKET_SIZE) {
                Ok(Decoded::Packet { len, .. }) => {
                    let packet = self.input[..len].to_vec();
                    self.input.drain(..len);
                    return Ok(Some(packet));
                }
                Ok(Decoded::Incomplete { .. }) => {}
                Err(e) => return Err(error("broker sent a malformed packet", e)),
            }
            let ping_every = (self.keep_alive > 0)
                .then(|| Duration::from_secs(u64::from(self.keep_alive)) * 3 / 4);
            if let Some(every) = ping_every {
                if self.last_sent.elapsed() >= every {
                    self.send(&Packet::PingReq)?;
                }
            }
            let mut wait = ping_every.map_or(Duration::from_secs(1), |every| {
                every.saturating_sub(self.last_sent.elapsed())
            });
            if let Some(timeout) = timeout {
                let left = timeout.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Ok(None);
                }
                wait = wait.min(left);
            }
            self.stream
                .set_read_timeout(Some(wait.max(Duration::from_millis(10))))
                .map_err(|e| error("socket", e))?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("the broker closed the connection".into()),
                Ok(count) => self.input.extend_from_slice(&chunk[..count]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(error("read", e)),
            }
        }
    }

    /// Waits for the acknowledgement of type `kind` for `packet_id` and returns its reason code.
    fn wait_for_ack(
        &mut self,
        kind: PacketType,
        packet_id: NonZeroU16,
    ) -> Result<ReasonCode, String> {
        loop {
            let Some(bytes) = self.receive(Some(Duration::from_secs(30)))? else {
                return Err(format!("no {kind:?} within 30 s"));
            };
            let packet = decode_packet(&bytes, self.version).map_err(|e| error("bad packet", e))?;
            if let Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubComp(ack) = packet {
                if packet.packet_type() == kind && ack.packet_id == packet_id {
                    return Ok(ack.reason);
                }
            }
        }
    }

    fn disconnect(mut self) -> Result<(), String> {
        self.send(&Packet::Disconnect(Disconnect::default()))?;
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        Ok(())
    }
}

/// What `femtomq pub` sends.
pub struct PublishRequest<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Payloads, one message each.
    pub messages: Vec<Vec<u8>>,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// User properties (MQTT 5).
    pub user_properties: Vec<(String, String)>,
}

/// Connects, publishes every message (waiting for each acknowledgement), and disconnects.
pub fn publish(options: &ClientOptions, request: &PublishRequest<'_>) -> Result<(), String> {
    let mut client = Client::connect(options)?;
    let users: Vec<UserProperty<'_>> = request
        .user_properties
        .iter()
        .map(|(name, value)| UserProperty { name, value })
        .collect();
    for payload in &request.messages {
        let packet_id = client.packet_id();
        let qos_pid = match request.qos {
            QoS::AtMostOnce => QosPid::AtMostOnce,
            QoS::AtLeastOnce => QosPid::AtLeastOnce(packet_id),
            QoS::ExactlyOnce => QosPid::ExactlyOnce(packet_id),
        };
        let publish = Packet::Publish(Publish {
            dup: false,
            qos_pid,
            retain: request.retain,
            topic: request.topic,
            properties: PublishProperties {
                user_properties: Repeated::from_slice(&users),
                ..PublishProperties::default()
            },
            payload,
        });
        client.send(&publish)?;
        let reason = match request.qos {
            QoS::AtMostOnce => ReasonCode::SUCCESS,
            QoS::AtLeastOnce => client.wait_for_ack(PacketType::PubAck, packet_id)?,
            QoS::ExactlyOnce => {
                let reason = client.wait_for_ack(PacketType::PubRec, packet_id)?;
                if reason.is_error() {
                    reason
                } else {
                    client.send(&Packet::PubRel(Ack::success(packet_id)))?;
                    client.wait_for_ack(PacketType::PubComp, packet_id)?
                }
            }
        };
        if reason.is_error() {
            return Err(format!("the broker refused the message: {reason}"));
        }
    }
    client.disconnect()
}

/// What `femtomq sub` subscribes to and how it prints.
pub struct SubscribeRequest<'a> {
    /// Topic filters.
    pub filters: &'a [String],
    /// Maximum QoS.
    pub qos: QoS,
    /// Print the topic before each payload.
    pub verbose: bool,
    /// Exit after this many messages.
    pub count: Option<usize>,
    /// Exit with an error after this long without the expected messages.
    pub timeout: Option<Duration>,
}

/// Connects, subscribes, and prints each message received on `out` (one line each).
pub fn subscribe(
    options: &ClientOptions,
    request: &SubscribeRequest<'_>,
    out: &mut dyn Write,
) -> Result<(), String> {
    let mut client = Client::connect(options)?;
    let subscriptions: Vec<Subscription<'_>> = request
        .filters
        .iter()
        .map(|filter| Subscription {
            filter,
            options: SubscriptionOptions::with_qos(request.qos),
        })
        .collect();
    let packet_id = client.packet_id();
    client.send(&Packet::Subscribe(Subscribe {
        packet_id,
        properties: SubscribeProperties::default(),
        subscriptions: Repeated::from_slice(&subscriptions),
    }))?;
    let started = Instant::now();
    let mut received = 0usize;
    loop {
        if request.count.is_some_and(|count| received >= count) {
            return client.disconnect();
        }
        let left = request.timeout.map(|t| t.saturating_sub(started.elapsed()));
        let Some(bytes) = client.receive(left)? else {
            return Err(format!("timed out after {received} messages"));
        };
        let packet = decode_packet(&bytes, client.version).map_err(|e| error("bad packet", e))?;
        match packet {
            Packet::SubAck(suback) => {
                for (filter, code) in request.filters.iter().zip(suback.reason_codes.iter()) {
                    if code.is_error() {
                        return Err(format!("subscription to `{filter}` refused: {code}"));
                    }
                }
            }
            Packet::Publish(publish) => {
                match publish.qos_pid {
                    QosPid::AtMostOnce => {}
                    QosPid::AtLeastOnce(id) => client.send(&Packet::PubAck(Ack::success(id)))?,
                    QosPid::ExactlyOnce(id) => client.send(&Packet::PubRec(Ack::success(id)))?,
                }
                let payload = String::from_utf8_lossy(publish.payload);
                let line = if request.verbose {
                    format!("{} {payload}\n", publish.topic)
                } else {
                    format!("{payload}\n")
                };
                out.write_all(line.as_bytes())
                    .and_then(|()| out.flush())
                    .map_err(|e| error("output", e))?;
                received += 1;
            }
            Packet::PubRel(ack) => client.send(&Packet::PubComp(Ack::success(ack.packet_id)))?,
            Packet::Disconnect(disconnect) => {
                return Err(format!("disconnected by the broker: {}", disconnect.reason));
            }
            _ => {}
        }
    }
}
