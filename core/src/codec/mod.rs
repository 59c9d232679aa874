//! The MQTT wire layer: framing, decoding and encoding of every MQTT 3.1, 3.1.1 and 5.0 packet.
//!
//! Two levels, in the style of smoltcp's `wire`:
//! - [`frame`] finds packet boundaries in a byte stream and enforces the maximum packet size as
//!   soon as the fixed header is known, before the body is buffered.
//! - [`decode_packet`] turns the bytes of one packet into a [`Packet`]: a validated view that
//!   borrows every string, payload and list from the input (zero-copy). If a `Packet` exists,
//!   it can be encoded: identifiers that must be non-zero are `NonZeroU16`, QoS and packet id
//!   travel together in [`QosPid`], reason codes are checked against the packet type.
//!
//! [`Packet::encode`] writes into a caller's `&mut [u8]`: it computes the exact length first,
//! fails with [`EncodeError::BufferTooSmall`] before writing anything if the buffer is short,
//! and never allocates. Encoding follows the connection's [`ProtocolVersion`]: properties and
//! reason codes exist only in MQTT 5, and 3.1.1 return codes are mapped.
//!
//! Every malformed input is a [`DecodeError`] carrying the reason code to answer with; the
//! decoder never panics (it is fuzzed, see `core/fuzz`).

mod connect;
mod error;
mod props;
mod publish;
mod reason;
mod repeated;
mod subscribe;
mod teardown;
mod wire;

use core::num::NonZeroU16;

pub use connect::{ConnAck, Connect, Will};
pub use error::{DecodeError, EncodeError};
pub use props::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, SubscriptionId, UnsubscribeProperties, UserProperty,
    WillProperties, id as property_id,
};
pub use publish::{Ack, Publish, QosPid};
pub use reason::ReasonCode;
pub use repeated::{Repeated, RepeatedItem, RepeatedIter};
pub use subscribe::{SubAck, Subscribe, Subscription, UnsubAck, Unsubscribe};
pub use teardown::{Auth, Disconnect};
pub use wire::{VAR_INT_MAX, var_int_len};

use crate::ProtocolVersion;
use wire::{Reader, VarInt, Writer, read_var_int};

/// The smallest possible packet: a fixed header with a zero remaining length.
pub const MIN_PACKET_SIZE: usize = 2;

/// The largest packet MQTT can express: 1 + 4 header bytes + 268,435,455.
pub const MAX_PACKET_SIZE: usize = 5 + VAR_INT_MAX as usize;

/// The control packet types (§2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// Client request to connect.
    Connect = 1,
    /// Connect acknowledgement.
    ConnAck = 2,
    /// Application message.
    Publish = 3,
    /// QoS 1 acknowledgement.
    PubAck = 4,
    /// QoS 2 delivery, part 1.
    PubRec = 5,
    /// QoS 2 delivery, part 2.
    PubRel = 6,
    /// QoS 2 delivery, part 3.
    PubComp = 7,
    /// Subscribe request.
    Subscribe = 8,
    /// Subscribe acknowledgement.
    SubAck = 9,
    /// Unsubscribe request.
    Unsubscribe = 10,
    /// Unsubscribe acknowledgement.
    UnsubAck = 11,
    /// Ping request.
    PingReq = 12,
    /// Ping response.
    PingResp = 13,
    /// Disconnect notification.
    Disconnect = 14,
    /// Authentication exchange (MQTT 5 only).
    Auth = 15,
}

impl PacketType {
    fn from_nibble(nibble: u8) -> Option<PacketType> {
        use PacketType::*;
        Some(match nibble {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }

    /// The fixed flags of every type but PUBLISH: 0b0010 for PUBREL, SUBSCRIBE and UNSUBSCRIBE,
    /// zero otherwise `[MQTT-2.1.3-1]`.
    const fn fixed_flags(self) -> u8 {
        match self {
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
            _ => 0,
        }
    }
}

/// One decoded (or to be encoded) MQTT control packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Packet<'a> {
    /// CONNECT.
    Connect(Connect<'a>),
    /// CONNACK.
    ConnAck(ConnAck<'a>),
    /// PUBLISH.
    Publish(Publish<'a>),
    /// PUBACK.
    PubAck(Ack<'a>),
    /// PUBREC.
    PubRec(Ack<'a>),
    /// PUBREL.
    PubRel(Ack<'a>),
    /// PUBCOMP.
    PubComp(Ack<'a>),
    /// SUBSCRIBE.
    Subscribe(Subscribe<'a>),
    /// SUBACK.
    SubAck(SubAck<'a>),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe<'a>),
    /// UNSUBACK.
    UnsubAck(UnsubAck<'a>),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect<'a>),
    /// AUTH (MQTT 5 only).
    Auth(Auth<'a>),
}

/// Where the first packet in a byte stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// More bytes are needed; `needed` is a lower bound (exact once the header is complete).
    Incomplete {
        /// Bytes still missing.
        needed: usize,
    },
    /// A whole packet of `len` bytes, whose fixed header is `header_len` bytes, starts the buffer.
    Complete {
        /// Fixed header length (2 to 5).
        header_len: usize,
        /// Whole packet length.
        len: usize,
    },
}

/// Finds the first packet in `buf`. Fails on a reserved packet type or a bad length encoding at
/// once, and with [`DecodeError::PacketTooLarge`] as soon as the announced size exceeds
/// `max_packet_size` (the whole packet, fixed header included, as MQTT 5 counts it).
pub fn frame(buf: &[u8], max_packet_size: usize) -> Result<Frame, DecodeError> {
    let Some((&first, rest)) = buf.split_first() else {
        return Ok(Frame::Incomplete {
            needed: MIN_PACKET_SIZE,
        });
    };
    if first >> 4 == 0 {
        return Err(DecodeError::ReservedPacketType(0));
    }
    match read_var_int(rest)? {
        VarInt::Incomplete => Ok(Frame::Incomplete { needed: 1 }),
        VarInt::Complete(remaining, used) => {
            let header_len = 1 + used;
            let len = header_len + remaining as usize;
            if len > max_packet_size {
                return Err(DecodeError::PacketTooLarge {
                    size: len,
                    max: max_packet_size,
                });
            }
            if buf.len() < len {
                Ok(Frame::Incomplete {
                    needed: len - buf.len(),
                })
            } else {
                Ok(Frame::Complete { header_len, len })
            }
        }
    }
}

/// Outcome of [`decode`] on a stream buffer.
// No allocator to box into: a decoded packet is a short-lived stack value by design.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decoded<'a> {
    /// The buffer does not hold a whole packet yet.
    Incomplete {
        /// Bytes still missing (a lower bound until the fixed header is complete).
        needed: usize,
    },
    /// The first packet, and how many bytes of the buffer it used.
    Packet {
        /// The packet.
        packet: Packet<'a>,
        /// Bytes consumed.
        len: usize,
    },
}

/// Decodes the first packet of a stream buffer: [`frame`] then [`decode_packet`].
pub fn decode(
    buf: &[u8],
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Decoded<'_>, DecodeError> {
    match frame(buf, max_packet_size)? {
        Frame::Incomplete { needed } => Ok(Decoded::Incomplete { needed }),
        Frame::Complete { len, .. } => {
            let packet = decode_packet(buf.get(..len).unwrap_or_default(), version)?;
            Ok(Decoded::Packet { packet, len })
        }
    }
}

/// Decodes exactly one packet (`packet` must hold the whole packet and nothing else).
///
/// `version` is the connection's protocol version. A CONNECT carries its own, which its
/// decoder reads and returns in [`Connect::version`]; before CONNECT, pass any version.
pub fn decode_packet(packet: &[u8], version: ProtocolVersion) -> Result<Packet<'_>, DecodeError> {
    let (first, mut reader) = fixed_header(packet)?;
    let kind =
        PacketType::from_nibble(first >> 4).ok_or(DecodeError::ReservedPacketType(first >> 4))?;
    let flags = first & 0x0F;
    if kind != PacketType::Publish && flags != kind.fixed_flags() {
        return Err(DecodeError::InvalidHeaderFlags(first));
    }
    let body = &mut reader;
    let packet = match kind {
        PacketType::Connect => Packet::Connect(Connect::decode(body)?),
        PacketType::ConnAck => Packet::ConnAck(ConnAck::decode(body, version)?),
        PacketType::Publish => Packet::Publish(Publish::decode(flags, body, version)?),
        PacketType::PubAck => Packet::PubAck(Ack::decode(kind, body, version)?),
        PacketType::PubRec => Packet::PubRec(Ack::decode(kind, body, version)?),
        PacketType::PubRel => Packet::PubRel(Ack::decode(kind, body, version)?),
        PacketType::PubComp => Packet::PubComp(Ack::decode(kind, body, version)?),
        PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(body, version)?),
        PacketType::SubAck => Packet::SubAck(SubAck::decode(body, version)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::decode(body, version)?),
        PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(body, version)?),
        PacketType::PingReq => {
            body.finish()?;
            Packet::PingReq
        }
        PacketType::PingResp => {
            body.finish()?;
            Packet::PingResp
        }
        PacketType::Disconnect => Packet::Disconnect(Disconnect::decode(body, version)?),
        PacketType::Auth => {
            if !version.is_v5() {
                return Err(DecodeError::ReservedPacketType(15));
            }
            Packet::Auth(Auth::decode(body)?)
        }
    };
    Ok(packet)
}

/// Reads the fixed header of exactly one packet: its first byte, and a reader of its body.
fn fixed_header(packet: &[u8]) -> Result<(u8, Reader<'_>), DecodeError> {
    let mut reader = Reader::new(packet);
    let first = reader.u8()?;
    let remaining = reader.var_int()?;
    if remaining as usize != reader.remaining() {
        return Err(if (remaining as usize) > reader.remaining() {
            DecodeError::Truncated
        } else {
            DecodeError::TrailingBytes
        });
    }
    Ok((first, reader))
}

/// True when `packet` (a whole packet, as [`frame`] delimits it) is a PUBLISH.
pub fn is_publish(packet: &[u8]) -> bool {
    packet.first().is_some_and(|&first| first >> 4 == 3)
}

/// Decodes exactly one PUBLISH packet (`packet` as for [`decode_packet`], its type checked
/// with [`is_publish`]), without wrapping it in a [`Packet`]: the hot path of a broker, which
/// then does not move the larger enum around. Decodes what [`decode_packet`] would, with the
/// same errors.
pub fn decode_publish(packet: &[u8], version: ProtocolVersion) -> Result<Publish<'_>, DecodeError> {
    let (first, mut reader) = fixed_header(packet)?;
    if first >> 4 != 3 {
        return Err(DecodeError::ReservedPacketType(first >> 4));
    }
    Publish::decode(first & 0x0F, &mut reader, version)
}

/// Reads a Packet Identifier that must not be zero `[MQTT-2.2.1-3]`.
pub(crate) fn read_packet_id(reader: &mut Reader<'_>) -> Result<NonZeroU16, DecodeError> {
    NonZeroU16::new(reader.u16()?).ok_or(DecodeError::ZeroPacketId)
}

/// Checks a decoded MQTT 5 reason code against the packet type.
pub(crate) fn read_reason(
    reader: &mut Reader<'_>,
    kind: PacketType,
) -> Result<ReasonCode, DecodeError> {
    let code = ReasonCode(reader.u8()?);
    if code.is_allowed_in(kind) {
        Ok(code)
    } else {
        Err(DecodeError::InvalidReasonCode(code.0))
    }
}

impl Packet<'_> {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    fn first_byte(&self) -> u8 {
        let kind = self.packet_type();
        let flags = match self {
            Packet::Publish(publish) => publish.flags(),
            _ => kind.fixed_flags(),
        };
        (kind as u8) << 4 | flags
    }

    /// Length of the variable header and payload (the Remaining Length).
    fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        match self {
            Packet::Connect(connect) => connect.body_len(),
            Packet::ConnAck(connack) => connack.body_len(version),
            Packet::Publish(publish) => publish.body_len(version),
            Packet::PubAck(ack)
            | Packet::PubRec(ack)
            | Packet::PubRel(ack)
            | Packet::PubComp(ack) => ack.body_len(version),
            Packet::Subscribe(subscribe) => subscribe.body_len(version),
            Packet::SubAck(suback) => suback.body_len(version),
            Packet::Unsubscribe(unsubscribe) => unsubscribe.body_len(version),
            Packet::UnsubAck(unsuback) => unsuback.body_len(version),
            Packet::PingReq | Packet::PingResp => Ok(0),
            Packet::Disconnect(disconnect) => disconnect.body_len(version),
            Packet::Auth(auth) => auth.body_len(version),
        }
    }

    fn write_body(
        &self,
        writer: &mut Writer<'_>,
        version: ProtocolVersion,
    ) -> Result<(), EncodeError> {
        match self {
            Packet::Connect(connect) => connect.write_body(writer),
            Packet::ConnAck(connack) => connack.write_body(writer, version),
            Packet::Publish(publish) => {
                publish.write_variable_header(writer, version)?;
                writer.bytes(publish.payload)
            }
            Packet::PubAck(ack)
            | Packet::PubRec(ack)
            | Packet::PubRel(ack)
            | Packet::PubComp(ack) => ack.write_body(writer, version),
            Packet::Subscribe(subscribe) => subscribe.write_body(writer, version),
            Packet::SubAck(suback) => suback.write_body(writer, version),
            Packet::Unsubscribe(unsubscribe) => unsubscribe.write_body(writer, version),
            Packet::UnsubAck(unsuback) => unsuback.write_body(writer, version),
            Packet::PingReq | Packet::PingResp => Ok(()),
            Packet::Disconnect(disconnect) => disconnect.write_body(writer, version),
            Packet::Auth(auth) => auth.write_body(writer),
        }
    }

    /// Exact encoded size for `version` (a CONNECT always uses its own version).
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let body = self.body_len(version)?;
        total_len(body)
    }

    /// Encodes into `buf` for a connection speaking `version` and returns the bytes written.
    /// Nothing is written when the buffer is too small. A CONNECT uses its own version.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let body = self.body_len(version)?;
        let total = total_len(body)?;
        if buf.len() < total {
            return Err(EncodeError::BufferTooSmall { needed: total });
        }
        let mut writer = Writer::new(buf);
        writer.u8(self.first_byte())?;
        writer.var_int(body as u32)?;
        self.write_body(&mut writer, version)?;
        debug_assert_eq!(
            writer.position(),
            total,
            "encoded length disagrees with the size computed first"
        );
        Ok(writer.position())
    }
}

/// Whole packet size for a body of `body` bytes, or an error past the Remaining Length limit.
fn total_len(body: usize) -> Result<usize, EncodeError> {
    let remaining = u32::try_from(body)
        .ok()
        .filter(|&len| len <= VAR_INT_MAX)
        .ok_or(EncodeError::PacketTooLarge)?;
    Ok(1 + var_int_len(remaining) + body)
}
