//! MQTT packets built and read by hand over a plain `TcpStream`: for the input no real client
//! sends (garbage, truncated, oversized, out-of-order packets) and for checking the exact bytes
//! the broker answers with.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Protocol level of MQTT 3.1.1 in CONNECT.
pub const V311: u8 = 4;
/// Protocol level of MQTT 5 in CONNECT.
pub const V5: u8 = 5;

/// The Variable Byte Integer encoding of `value`.
pub fn varint(mut value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return out;
        }
    }
}

/// A packet: first byte, remaining length, body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(varint(body.len()));
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string or binary field.
pub fn field(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// CONNECT with clean start, no will, no credentials; MQTT 5 gets an empty property list.
pub fn connect(level: u8, client_id: &str, keep_alive: u16) -> Vec<u8> {
    let mut body = field(b"MQTT");
    body.push(level);
    body.push(0x02);
    body.extend(keep_alive.to_be_bytes());
    if level == V5 {
        body.push(0);
    }
    body.extend(field(client_id.as_bytes()));
    packet(0x10, &body)
}

/// PUBLISH at QoS 0 (`packet_id` `None`) or QoS 1.
pub fn publish(level: u8, topic: &str, payload: &[u8], packet_id: Option<u16>) -> Vec<u8> {
    let mut body = field(topic.as_bytes());
    if let Some(id) = packet_id {
        body.extend(id.to_be_bytes());
    }
    if level == V5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    packet(if packet_id.is_some() { 0x32 } else { 0x30 }, &body)
}

/// What a read produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A whole packet, header included.
    Packet(Vec<u8>),
    /// The broker closed the connection (end of stream or reset).
    Closed,
    /// Nothing within the timeout.
    TimedOut,
}

/// A TCP connection driven by hand.
pub struct RawClient {
    stream: TcpStream,
    input: Vec<u8>,
}

impl RawClient {
    /// Connects to `address`.
    pub fn connect(address: SocketAddr) -> RawClient {
        let stream = TcpStream::connect_timeout(&address, crate::STEP)
            .unwrap_or_else(|e| panic!("cannot connect to {address}: {e}"));
        RawClient::from_stream(stream)
    }

    /// Wraps a stream connected by the caller (with socket options of its own).
    pub fn from_stream(stream: TcpStream) -> RawClient {
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream
            .set_write_timeout(Some(crate::STEP))
            .expect("write timeout");
        RawClient {
            stream,
            input: Vec::new(),
        }
    }

    /// Connects and completes a CONNECT/CONNACK exchange (asserting success); returns the CONNACK.
    pub fn connected(address: SocketAddr, level: u8, client_id: &str) -> (RawClient, Vec<u8>) {
        let mut client = RawClient::connect(address);
        client
            .send(&connect(level, client_id, 60))
            .expect("send CONNECT");
        match client.read_packet(crate::STEP) {
            Received::Packet(connack) if connack[0] == 0x20 && connack.get(3) == Some(&0) => {
                (client, connack)
            }
            other => panic!("CONNECT of `{client_id}` answered with {other:?}"),
        }
    }

    /// Writes `bytes` (an error means the broker closed the connection).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads one packet within `timeout`.
    pub fn read_packet(&mut self, timeout: Duration) -> Received {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(len) = whole_packet(&self.input) {
                return Received::Packet(self.input.drain(..len).collect());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Received::TimedOut;
            }
            self.stream
                .set_read_timeout(Some(left))
                .expect("read timeout");
            let mut buffer = [0u8; 4096];
            match self.stream.read(&mut buffer) {
                Ok(0) => return Received::Closed,
                Ok(count) => self.input.extend_from_slice(&buffer[..count]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Received::TimedOut;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Received::Closed,
            }
        }
    }

    /// Reads packets until the broker closes the connection, within `timeout`; returns the
    /// packets read on the way, or `Err` with them if the connection stayed open.
    pub fn read_until_closed(&mut self, timeout: Duration) -> Result<Vec<Vec<u8>>, Vec<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        let mut packets = Vec::new();
        loop {
            match self.read_packet(deadline.saturating_duration_since(Instant::now())) {
                Received::Packet(packet) => packets.push(packet),
                Received::Closed => return Ok(packets),
                Received::TimedOut => return Err(packets),
            }
        }
    }

    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

/// The length of the whole packet at the start of `bytes`, if it is all there.
fn whole_packet(bytes: &[u8]) -> Option<usize> {
    let mut length = 0usize;
    for (i, byte) in bytes.iter().skip(1).take(4).enumerate() {
        length += usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            let total = 1 + i + 1 + length;
            return (bytes.len() >= total).then_some(total);
        }
    }
    None
}

/// The properties of an MQTT 5 CONNACK as (identifier, value bytes) pairs.
pub fn connack_properties(connack: &[u8]) -> Vec<(u8, Vec<u8>)> {
    // Header byte, remaining length (one byte for any CONNACK here), flags, reason code.
    let mut at = 4;
    let (length, used) = read_varint(&connack[at..]);
    at += used;
    let end = at + length;
    let mut properties = Vec::new();
    while at < end {
        let id = connack[at];
        at += 1;
        let size = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            0x0B => read_varint(&connack[at..]).1,
            0x26 => {
                let key = 2 + usize::from(u16::from_be_bytes([connack[at], connack[at + 1]]));
                let value = u16::from_be_bytes([connack[at + key], connack[at + key + 1]]);
                key + 2 + usize::from(value)
            }
            _ => 2 + usize::from(u16::from_be_bytes([connack[at], connack[at + 1]])),
        };
        properties.push((id, connack[at..at + size].to_vec()));
        at += size;
    }
    properties
}

/// The Maximum Packet Size a v5 CONNACK announces, if any.
pub fn connack_maximum_packet_size(connack: &[u8]) -> Option<u32> {
    connack_properties(connack)
        .into_iter()
        .find(|(id, _)| *id == 0x27)
        .map(|(_, value)| u32::from_be_bytes([value[0], value[1], value[2], value[3]]))
}

fn read_varint(bytes: &[u8]) -> (usize, usize) {
    let mut value = 0usize;
    for (i, byte) in bytes.iter().take(4).enumerate() {
        value += usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("bad variable byte integer in {bytes:?}")
}
