//! Decoding and encoding errors. Every decoding error names the reason code the receiver must
//! answer with (§4.13): 0x81 Malformed Packet, 0x82 Protocol Error, 0x84 Unsupported Protocol
//! Version, 0x95 Packet too large.

use super::ReasonCode;
use crate::topic::TopicError;

/// Why bytes could not be decoded as an MQTT packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// A Variable Byte Integer longer than four bytes `[MQTT-1.5.5-1]`.
    VarIntTooLong,
    /// A Variable Byte Integer not in its shortest form `[MQTT-1.5.5-1]`.
    VarIntNotMinimal,
    /// The packet is larger than the configured maximum packet size.
    PacketTooLarge {
        /// Size the fixed header announced (fixed header included).
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// Packet type 0, or 15 (AUTH) before MQTT 5 `[MQTT-2.1.3-1]` context: reserved types.
    ReservedPacketType(u8),
    /// Fixed header flag bits that must have a fixed value do not `[MQTT-2.1.3-1]`.
    InvalidHeaderFlags(u8),
    /// A field runs past the end of the packet.
    Truncated,
    /// Bytes left over after the last field of a packet with no payload.
    TrailingBytes,
    /// A string is not well-formed UTF-8 (this includes UTF-16 surrogates) `[MQTT-1.5.4-1]`.
    InvalidUtf8,
    /// A string contains U+0000 `[MQTT-1.5.4-2]`.
    NullCharacter,
    /// The CONNECT protocol name is not `MQTT` (or `MQIsdp` for level 3) `[MQTT-3.1.2-1]`.
    InvalidProtocolName,
    /// The CONNECT protocol level is not 3, 4 or 5 `[MQTT-3.1.2-2]`.
    UnsupportedProtocolLevel(u8),
    /// The reserved bit of the CONNECT flags is set `[MQTT-3.1.2-3]`.
    ReservedConnectFlag,
    /// Will QoS or Will Retain set without the Will Flag, or Will QoS 3 `[MQTT-3.1.2-11]`,
    /// `[MQTT-3.1.2-12]`, `[MQTT-3.1.2-13]`.
    InvalidWillFlags,
    /// Password Flag set without User Name Flag in MQTT 3.1.1 `[MQTT-3.1.2-22]`.
    PasswordWithoutUsername,
    /// QoS 3 in a PUBLISH `[MQTT-3.3.1-4]`, or requested QoS 3 in a 3.1.1 SUBSCRIBE
    /// `[MQTT-3-8.3-4]`.
    InvalidQoS,
    /// DUP set on a QoS 0 PUBLISH `[MQTT-3.3.1-2]`.
    DupOnQoS0,
    /// A Packet Identifier of zero where a non-zero one is required `[MQTT-2.2.1-3]`.
    ZeroPacketId,
    /// An invalid topic name `[MQTT-3.3.2-2]`, `[MQTT-4.7.3-1]`.
    InvalidTopicName(TopicError),
    /// An invalid topic filter `[MQTT-4.7.1-1]`, `[MQTT-4.7.1-2]`, `[MQTT-4.8.2-1]`.
    InvalidTopicFilter(TopicError),
    /// A zero-length topic name in a PUBLISH without a Topic Alias (MQTT 5 §3.3.2.1).
    EmptyTopicWithoutAlias,
    /// A Response Topic with wildcards `[MQTT-3.3.2-14]`.
    InvalidResponseTopic,
    /// SUBSCRIBE or UNSUBSCRIBE with no topic filter `[MQTT-3.8.3-3]`, `[MQTT-3.10.3-2]`.
    NoTopicFilters,
    /// Reserved bits of the subscription options are set `[MQTT-3.8.3-5]`.
    ReservedSubscriptionOptions,
    /// Maximum QoS 3 in MQTT 5 subscription options: "It is a Protocol Error if the Maximum QoS
    /// field has the value 3" (MQTT 5 §3.8.3.1). In 3.1.1 the same byte is malformed
    /// `[MQTT-3-8.3-4]` and decodes as [`DecodeError::InvalidQoS`].
    InvalidSubscriptionQoS,
    /// Retain Handling 3 in subscription options (MQTT 5 §3.8.3.1).
    InvalidRetainHandling,
    /// No Local on a shared subscription `[MQTT-3.8.3-4]`.
    NoLocalOnSharedSubscription,
    /// A reason code the specification does not allow in this packet.
    InvalidReasonCode(u8),
    /// Reserved CONNACK acknowledge flags set `[MQTT-3.2.2-1]`.
    ReservedConnAckFlags,
    /// Session Present set with a failure reason code `[MQTT-3.2.2-6]`.
    SessionPresentOnFailure,
    /// A property identifier the specification does not define.
    UnknownProperty(u8),
    /// A property that may not appear in this packet: a Malformed Packet (MQTT 5 §2.2.2.2).
    PropertyNotAllowed(u8),
    /// A property that may appear at most once appears twice.
    DuplicateProperty(u8),
    /// A property with a value outside its range (for example Receive Maximum 0).
    InvalidPropertyValue(u8),
    /// Authentication Data without an Authentication Method (MQTT 5 §3.1.2.11.10).
    AuthDataWithoutMethod,
    /// An AUTH packet with a reason code but no Authentication Method (MQTT 5 §3.15.2.2.2).
    AuthWithoutMethod,
}

impl DecodeError {
    /// The reason code to send back (in CONNACK or DISCONNECT) before closing the connection.
    pub const fn reason_code(self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            InvalidProtocolName | UnsupportedProtocolLevel(_) => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            ZeroPacketId
            | EmptyTopicWithoutAlias
            | InvalidResponseTopic
            | NoTopicFilters
            | InvalidSubscriptionQoS
            | InvalidRetainHandling
            | NoLocalOnSharedSubscription
            | InvalidReasonCode(_)
            | SessionPresentOnFailure
            | DuplicateProperty(_)
            | InvalidPropertyValue(_)
            | AuthDataWithoutMethod
            | AuthWithoutMethod => ReasonCode::PROTOCOL_ERROR,
            VarIntTooLong
            | VarIntNotMinimal
            | ReservedPacketType(_)
            | InvalidHeaderFlags(_)
            | Truncated
            | TrailingBytes
            | InvalidUtf8
            | NullCharacter
            | ReservedConnectFlag
            | InvalidWillFlags
            | PasswordWithoutUsername
            | InvalidQoS
            | DupOnQoS0
            | InvalidTopicName(_)
            | InvalidTopicFilter(_)
            | ReservedSubscriptionOptions
            | ReservedConnAckFlags
            | UnknownProperty(_)
            // MQTT 5 §2.2.2.2: "A Control Packet which contains an Identifier which is not valid
            // for its packet type, or contains a value not of the specified data type, is a
            // Malformed Packet."
            | PropertyNotAllowed(_) => ReasonCode::MALFORMED_PACKET,
        }
    }
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use DecodeError::*;
        match self {
            PacketTooLarge { size, max } => {
                write!(f, "packet of {size} bytes exceeds the maximum of {max}")
            }
            ReservedPacketType(t) => write!(f, "reserved packet type {t}"),
            InvalidHeaderFlags(b) => write!(f, "invalid fixed header flags in byte 0x{b:02X}"),
            UnsupportedProtocolLevel(l) => write!(f, "unsupported protocol level {l}"),
            InvalidTopicName(e) => write!(f, "invalid topic name: {e:?}"),
            InvalidTopicFilter(e) => write!(f, "invalid topic filter: {e:?}"),
            InvalidReasonCode(c) => write!(f, "reason code 0x{c:02X} not allowed here"),
            UnknownProperty(p) => write!(f, "unknown property 0x{p:02X}"),
            PropertyNotAllowed(p) => write!(f, "property 0x{p:02X} not allowed in this packet"),
            DuplicateProperty(p) => write!(f, "property 0x{p:02X} given more than once"),
            InvalidPropertyValue(p) => write!(f, "property 0x{p:02X} has an invalid value"),
            other => write!(f, "{other:?}"),
        }?;
        write!(f, " (reason {})", self.reason_code())
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small; `needed` is the packet's full encoded size.
    BufferTooSmall {
        /// Bytes the packet needs.
        needed: usize,
    },
    /// A string or binary field is longer than 65,535 bytes.
    FieldTooLong,
    /// The packet's remaining length would exceed 268,435,455 bytes.
    PacketTooLarge,
    /// The packet does not exist in the target protocol version (AUTH before MQTT 5).
    NotInVersion,
    /// A SUBSCRIBE or UNSUBSCRIBE with no topic filter.
    NoTopicFilters,
    /// A SUBACK, or an MQTT 5 UNSUBACK, with no reason code (one per filter is required).
    NoReasonCodes,
    /// A PUBLISH with an empty topic name and no topic alias, or any empty topic before MQTT 5.
    EmptyTopic,
    /// An AUTH packet with a reason code or properties but no Authentication Method.
    MissingAuthMethod,
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EncodeError::BufferTooSmall { needed } => {
                write!(f, "output buffer too small: {needed} bytes needed")
            }
            other => write!(f, "{other:?}"),
        }
    }
}
