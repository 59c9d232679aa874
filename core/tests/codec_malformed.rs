//! Malformed and protocol-violating inputs, each named after the normative statement (or spec
//! section) it checks, with the `DecodeError` the codec must return and the reason code (§4.13,
//! §2.4) the broker answers with. One table-driven test reports every failing row at once.
//!
//! Also: every prefix of valid packets, and every single-bit corruption of them, must fail (or
//! decode) cleanly, never panic.

use core::mem::discriminant;

use femtomq_core::ProtocolVersion;
use femtomq_core::codec::{
    DecodeError, Decoded, MAX_PACKET_SIZE, ReasonCode, decode, decode_packet, frame,
};
use femtomq_core::topic::TopicError;

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// How a row's bytes reach the codec.
enum Input {
    /// One whole packet, to `decode_packet`.
    Packet(Vec<u8>),
    /// The start of a stream, to `frame` and `decode` with this maximum packet size.
    Stream(Vec<u8>, usize),
}

/// A packet given as plain bytes.
fn p(bytes: &[u8]) -> Input {
    Input::Packet(bytes.to_vec())
}

/// A packet given as concatenated pieces (byte literals and strings).
fn pc(pieces: &[&[u8]]) -> Input {
    Input::Packet(pieces.concat())
}

/// A stream prefix checked against `max`.
fn s(bytes: &[u8], max: usize) -> Input {
    Input::Stream(bytes.to_vec(), max)
}

/// (normative statement, connection version, input, expected error, expected reason code)
type Row = (&'static str, ProtocolVersion, Input, DecodeError, u8);

use DecodeError::*;

/// The variable header of a v5 CONNECT up to the property length (clean start, keep alive 0).
const V5_CONNECT_HEAD: &[u8] = &[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00];

/// The same with the will flag (QoS 0) set.
const V5_CONNECT_WILL_HEAD: &[u8] = &[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x06, 0x00, 0x00];

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    vec![
        // ---- §1.5.5 Variable Byte Integer ------------------------------------------------
        ("MQTT-1.5.5-1 remaining length of five bytes", V5,
            p(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]), VarIntTooLong, 0x81),
        ("MQTT-1.5.5-1 remaining length 0 encoded in two bytes", V311,
            p(&[0xC0, 0x80, 0x00]), VarIntNotMinimal, 0x81),
        ("MQTT-1.5.5-1 remaining length 1 encoded in three bytes", V311,
            p(&[0xE0, 0x81, 0x80, 0x00, 0x00]), VarIntNotMinimal, 0x81),
        ("MQTT-1.5.5-1 non-minimal property length", V5,
            p(&[0x40, 0x05, 0x00, 0x01, 0x00, 0x80, 0x00]), VarIntNotMinimal, 0x81),
        ("MQTT-1.5.5-1 non-minimal subscription identifier", V5,
            p(&[0x82, 0x0A, 0x00, 0x01, 0x03, 0x0B, 0x81, 0x00, 0x00, 0x01, b'a', 0x00]),
            VarIntNotMinimal, 0x81),
        ("MQTT-1.5.5-1 property length of five bytes", V5,
            p(&[0x30, 0x08, 0x00, 0x01, b't', 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]), VarIntTooLong, 0x81),
        ("1.5.5 remaining length cut short", V311,
            p(&[0x30, 0x80]), Truncated, 0x81),
        ("MQTT-1.5.5-1 five-byte remaining length in a stream", V5,
            s(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF], MAX_PACKET_SIZE), VarIntTooLong, 0x81),
        ("MQTT-1.5.5-1 non-minimal remaining length in a stream", V5,
            s(&[0x30, 0x80, 0x00], MAX_PACKET_SIZE), VarIntNotMinimal, 0x81),

        // ---- §2.1.2 packet types ---------------------------------------------------------
        ("2.1.2 reserved packet type 0", V5,
            p(&[0x00, 0x00]), ReservedPacketType(0), 0x81),
        ("2.1.2 reserved packet type 0 in a stream, from the first byte", V311,
            s(&[0x00], MAX_PACKET_SIZE), ReservedPacketType(0), 0x81),
        ("2.2.1 (3.1.1) packet type 15 is reserved before MQTT 5", V311,
            p(&[0xF0, 0x00]), ReservedPacketType(15), 0x81),

        // ---- §2.1.3 fixed header flags [MQTT-2.1.3-1] ------------------------------------
        ("MQTT-2.1.3-1 CONNECT flags 0001", V311,
            pc(&[&[0x11, 0x0C, 0x00, 0x04], b"MQTT", &[0x04, 0x02, 0x00, 0x00, 0x00, 0x00]]),
            InvalidHeaderFlags(0x11), 0x81),
        ("MQTT-2.1.3-1 CONNACK flags 0001", V311,
            p(&[0x21, 0x02, 0x00, 0x00]), InvalidHeaderFlags(0x21), 0x81),
        ("MQTT-2.1.3-1 PUBACK flags 0010", V5,
            p(&[0x42, 0x02, 0x00, 0x01]), InvalidHeaderFlags(0x42), 0x81),
        ("MQTT-2.1.3-1 PUBREC flags 1000", V311,
            p(&[0x58, 0x02, 0x00, 0x01]), InvalidHeaderFlags(0x58), 0x81),
        ("MQTT-3.6.1-1 PUBREL flags 0000", V311,
            p(&[0x60, 0x02, 0x00, 0x01]), InvalidHeaderFlags(0x60), 0x81),
        ("MQTT-3.6.1-1 PUBREL flags 0011", V5,
            p(&[0x63, 0x02, 0x00, 0x01]), InvalidHeaderFlags(0x63), 0x81),
        ("MQTT-2.1.3-1 PUBCOMP flags 0010", V311,
            p(&[0x72, 0x02, 0x00, 0x01]), InvalidHeaderFlags(0x72), 0x81),
        ("MQTT-3.8.1-1 SUBSCRIBE flags 0000", V311,
            p(&[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'#', 0x00]), InvalidHeaderFlags(0x80), 0x81),
        ("MQTT-3.8.1-1 SUBSCRIBE flags 0011", V5,
            p(&[0x83, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'#', 0x00]),
            InvalidHeaderFlags(0x83), 0x81),
        ("MQTT-2.1.3-1 SUBACK flags 0010", V311,
            p(&[0x92, 0x03, 0x00, 0x01, 0x00]), InvalidHeaderFlags(0x92), 0x81),
        ("MQTT-3.10.1-1 UNSUBSCRIBE flags 0000", V311,
            p(&[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'#']), InvalidHeaderFlags(0xA0), 0x81),
        ("MQTT-2.1.3-1 UNSUBACK flags 0001", V311,
            p(&[0xB1, 0x02, 0x00, 0x01]), InvalidHeaderFlags(0xB1), 0x81),
        ("MQTT-2.1.3-1 PINGREQ flags 0001", V311,
            p(&[0xC1, 0x00]), InvalidHeaderFlags(0xC1), 0x81),
        ("MQTT-2.1.3-1 PINGRESP flags 0100", V5,
            p(&[0xD4, 0x00]), InvalidHeaderFlags(0xD4), 0x81),
        ("MQTT-3.14.1-1 DISCONNECT flags 1000", V5,
            p(&[0xE8, 0x00]), InvalidHeaderFlags(0xE8), 0x81),
        ("MQTT-3.15.1-1 AUTH flags 0001", V5,
            p(&[0xF1, 0x00]), InvalidHeaderFlags(0xF1), 0x81),

        // ---- §1.5.4 UTF-8 Encoded Strings ------------------------------------------------
        ("MQTT-1.5.4-1 ill-formed UTF-8 in a topic name", V311,
            p(&[0x30, 0x04, 0x00, 0x02, 0xC3, 0x28]), InvalidUtf8, 0x81),
        ("MQTT-1.5.4-1 UTF-16 surrogate U+D800 in a client identifier", V311,
            pc(&[&[0x10, 0x0F, 0x00, 0x04], b"MQTT", &[0x04, 0x02, 0x00, 0x00],
                 &[0x00, 0x03, 0xED, 0xA0, 0x80]]),
            InvalidUtf8, 0x81),
        ("MQTT-1.5.4-1 overlong UTF-8 in a user property name", V5,
            p(&[0x30, 0x0B, 0x00, 0x01, b't', 0x07, 0x26, 0x00, 0x02, 0xC0, 0xAF, 0x00, 0x00]),
            InvalidUtf8, 0x81),
        ("MQTT-1.5.4-2 U+0000 in a topic name", V311,
            p(&[0x30, 0x05, 0x00, 0x03, b'a', 0x00, b'b']), NullCharacter, 0x81),
        ("MQTT-1.5.4-2 U+0000 in a topic filter", V311,
            p(&[0x82, 0x07, 0x00, 0x01, 0x00, 0x02, b'a', 0x00, 0x00]), NullCharacter, 0x81),
        ("1.5.4 string length runs past the packet", V311,
            p(&[0x30, 0x03, 0x00, 0x05, b'a']), Truncated, 0x81),

        // ---- §3.1 CONNECT ----------------------------------------------------------------
        ("MQTT-3.1.2-1 protocol name MQTX", V5,
            pc(&[&[0x10, 0x0C, 0x00, 0x04], b"MQTX", &[0x04, 0x02, 0x00, 0x00, 0x00, 0x00]]),
            InvalidProtocolName, 0x84),
        ("MQTT-3.1.2-1 protocol name in lower case", V5,
            pc(&[&[0x10, 0x0C, 0x00, 0x04], b"mqtt", &[0x05, 0x02, 0x00, 0x00, 0x00, 0x00]]),
            InvalidProtocolName, 0x84),
        ("MQTT-3.1.2-2 protocol level 6", V5,
            pc(&[&[0x10, 0x0C, 0x00, 0x04], b"MQTT", &[0x06, 0x02, 0x00, 0x00, 0x00, 0x00]]),
            UnsupportedProtocolLevel(6), 0x84),
        ("MQTT-3.1.2-2 MQIsdp with level 4", V311,
            pc(&[&[0x10, 0x0E, 0x00, 0x06], b"MQIsdp", &[0x04, 0x02, 0x00, 0x00, 0x00, 0x00]]),
            UnsupportedProtocolLevel(4), 0x84),
        ("MQTT-3.1.2-3 reserved connect flag (3.1.1)", V311,
            pc(&[&[0x10, 0x0C, 0x00, 0x04], b"MQTT", &[0x04, 0x03, 0x00, 0x00, 0x00, 0x00]]),
            ReservedConnectFlag, 0x81),
        ("MQTT-3.1.2-3 reserved connect flag (5.0)", V5,
            pc(&[&[0x10, 0x0D, 0x00, 0x04], b"MQTT", &[0x05, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00]]),
            ReservedConnectFlag, 0x81),
        ("MQTT-3.1.2-11 will QoS 1 without the will flag", V311,
            pc(&[&[0x10, 0x0C, 0x00, 0x04], b"MQTT", &[0x04, 0x0A, 0x00, 0x00, 0x00, 0x00]]),
            InvalidWillFlags, 0x81),
        ("MQTT-3.1.2-12 will QoS 3", V5,
            pc(&[&[0x10, 0x0D, 0x00, 0x04], b"MQTT", &[0x05, 0x1E, 0x00, 0x00, 0x00, 0x00, 0x00]]),
            InvalidWillFlags, 0x81),
        ("MQTT-3.1.2-13 will retain without the will flag", V311,
            pc(&[&[0x10, 0x0C, 0x00, 0x04], b"MQTT", &[0x04, 0x22, 0x00, 0x00, 0x00, 0x00]]),
            InvalidWillFlags, 0x81),
        ("MQTT-3.1.2-22 password without user name (3.1.1)", V311,
            pc(&[&[0x10, 0x10, 0x00, 0x04], b"MQTT", &[0x04, 0x42, 0x00, 0x00, 0x00, 0x00],
                 &[0x00, 0x02], b"pw"]),
            PasswordWithoutUsername, 0x81),
        ("MQTT-3.3.2-2 wildcard in the will topic", V311,
            pc(&[&[0x10, 0x11, 0x00, 0x04], b"MQTT", &[0x04, 0x06, 0x00, 0x00, 0x00, 0x00],
                 &[0x00, 0x01, b'#', 0x00, 0x00]]),
            InvalidTopicName(TopicError::WildcardInName), 0x81),
        ("MQTT-4.7.3-1 empty will topic", V311,
            pc(&[&[0x10, 0x10, 0x00, 0x04], b"MQTT", &[0x04, 0x06, 0x00, 0x00, 0x00, 0x00],
                 &[0x00, 0x00, 0x00, 0x00]]),
            InvalidTopicName(TopicError::Empty), 0x81),
        ("MQTT-3.3.2-14 will response topic with a wildcard", V5,
            pc(&[&[0x10, 0x17], V5_CONNECT_WILL_HEAD, &[0x00, 0x00, 0x00],
                 &[0x04, 0x08, 0x00, 0x01, b'+'], &[0x00, 0x01, b't', 0x00, 0x00]]),
            InvalidResponseTopic, 0x82),
        ("3.1.2.11.10 authentication data without authentication method", V5,
            pc(&[&[0x10, 0x11], V5_CONNECT_HEAD, &[0x04, 0x16, 0x00, 0x01, 0xAA, 0x00, 0x00]]),
            AuthDataWithoutMethod, 0x82),
        ("3.1.2.11.3 receive maximum 0", V5,
            pc(&[&[0x10, 0x10], V5_CONNECT_HEAD, &[0x03, 0x21, 0x00, 0x00, 0x00, 0x00]]),
            InvalidPropertyValue(0x21), 0x82),
        ("3.1.2.11.4 maximum packet size 0", V5,
            pc(&[&[0x10, 0x12], V5_CONNECT_HEAD,
                 &[0x05, 0x27, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]]),
            InvalidPropertyValue(0x27), 0x82),
        ("3.1.2.11.7 request problem information 2", V5,
            pc(&[&[0x10, 0x0F], V5_CONNECT_HEAD, &[0x02, 0x17, 0x02, 0x00, 0x00]]),
            InvalidPropertyValue(0x17), 0x82),
        ("3.1.2.11.6 request response information 2", V5,
            pc(&[&[0x10, 0x0F], V5_CONNECT_HEAD, &[0x02, 0x19, 0x02, 0x00, 0x00]]),
            InvalidPropertyValue(0x19), 0x82),
        ("3.1.2.11.2 session expiry interval included twice", V5,
            pc(&[&[0x10, 0x17], V5_CONNECT_HEAD,
                 &[0x0A, 0x11, 0x00, 0x00, 0x00, 0x01, 0x11, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00]]),
            DuplicateProperty(0x11), 0x82),
        ("3.1.2.11.9 authentication method included twice", V5,
            pc(&[&[0x10, 0x15], V5_CONNECT_HEAD,
                 &[0x08, 0x15, 0x00, 0x01, b'a', 0x15, 0x00, 0x01, b'b', 0x00, 0x00]]),
            DuplicateProperty(0x15), 0x82),
        ("2.2.2.2 topic alias is not a CONNECT property", V5,
            pc(&[&[0x10, 0x10], V5_CONNECT_HEAD, &[0x03, 0x23, 0x00, 0x01, 0x00, 0x00]]),
            PropertyNotAllowed(0x23), 0x81),
        ("2.2.2.2 unknown property identifier 0x7F", V5,
            pc(&[&[0x10, 0x0F], V5_CONNECT_HEAD, &[0x02, 0x7F, 0x00, 0x00, 0x00]]),
            UnknownProperty(0x7F), 0x81),
        ("2.2.2.2 session expiry interval is not a will property", V5,
            pc(&[&[0x10, 0x18], V5_CONNECT_WILL_HEAD, &[0x00, 0x00, 0x00],
                 &[0x05, 0x11, 0x00, 0x00, 0x00, 0x01], &[0x00, 0x01, b't', 0x00, 0x00]]),
            PropertyNotAllowed(0x11), 0x81),
        ("3.1.3.2.2 will delay interval included twice", V5,
            pc(&[&[0x10, 0x1D], V5_CONNECT_WILL_HEAD, &[0x00, 0x00, 0x00],
                 &[0x0A, 0x18, 0x00, 0x00, 0x00, 0x01, 0x18, 0x00, 0x00, 0x00, 0x01],
                 &[0x00, 0x01, b't', 0x00, 0x00]]),
            DuplicateProperty(0x18), 0x82),
        ("3.1.3 CONNECT with a byte after the last field", V311,
            pc(&[&[0x10, 0x0D, 0x00, 0x04], b"MQTT", &[0x04, 0x02, 0x00, 0x00, 0x00, 0x00, 0xFF]]),
            TrailingBytes, 0x81),
        ("3.1.2.10 CONNECT cut inside the keep alive", V311,
            pc(&[&[0x10, 0x09, 0x00, 0x04], b"MQTT", &[0x04, 0x02, 0x00]]),
            Truncated, 0x81),
        ("MQTT-3.1.2-19 password flag set but no password", V311,
            pc(&[&[0x10, 0x0F, 0x00, 0x04], b"MQTT", &[0x04, 0xC2, 0x00, 0x00, 0x00, 0x00],
                 &[0x00, 0x01, b'u']]),
            Truncated, 0x81),

        // ---- §3.2 CONNACK ----------------------------------------------------------------
        ("MQTT-3.2.2-1 reserved acknowledge flags (3.1.1)", V311,
            p(&[0x20, 0x02, 0x02, 0x00]), ReservedConnAckFlags, 0x81),
        ("MQTT-3.2.2-1 reserved acknowledge flags (5.0)", V5,
            p(&[0x20, 0x03, 0x80, 0x00, 0x00]), ReservedConnAckFlags, 0x81),
        ("MQTT-3.2.2-6 session present with a failure reason", V5,
            p(&[0x20, 0x03, 0x01, 0x80, 0x00]), SessionPresentOnFailure, 0x82),
        ("MQTT-3.2.2-4 (3.1.1) session present with return code 5", V311,
            p(&[0x20, 0x02, 0x01, 0x05]), SessionPresentOnFailure, 0x82),
        ("3.2.2.3 (3.1.1) return code 6 is reserved", V311,
            p(&[0x20, 0x02, 0x00, 0x06]), InvalidReasonCode(0x06), 0x82),
        ("3.2.2.2 reason 0x10 is not a CONNACK reason code", V5,
            p(&[0x20, 0x03, 0x00, 0x10, 0x00]), InvalidReasonCode(0x10), 0x82),
        ("3.2.2.3.4 maximum QoS 2", V5,
            p(&[0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02]), InvalidPropertyValue(0x24), 0x82),
        ("3.2.2.3.5 retain available 2", V5,
            p(&[0x20, 0x05, 0x00, 0x00, 0x02, 0x25, 0x02]), InvalidPropertyValue(0x25), 0x82),
        ("3.2.2.3.11 wildcard subscription available included twice", V5,
            p(&[0x20, 0x07, 0x00, 0x00, 0x04, 0x28, 0x01, 0x28, 0x01]),
            DuplicateProperty(0x28), 0x82),
        ("2.2.2.2 will delay interval is not a CONNACK property", V5,
            p(&[0x20, 0x08, 0x00, 0x00, 0x05, 0x18, 0x00, 0x00, 0x00, 0x01]),
            PropertyNotAllowed(0x18), 0x81),
        ("3.2.2 CONNACK cut after the flags", V311,
            p(&[0x20, 0x01, 0x00]), Truncated, 0x81),
        ("3.2.2 CONNACK with a trailing byte", V311,
            p(&[0x20, 0x03, 0x00, 0x00, 0x00]), TrailingBytes, 0x81),
        ("3.2.2.3.1 v5 CONNACK without a property length", V5,
            p(&[0x20, 0x02, 0x00, 0x00]), Truncated, 0x81),

        // ---- §3.3 PUBLISH ----------------------------------------------------------------
        ("MQTT-3.3.1-4 QoS 3", V311,
            p(&[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01]), InvalidQoS, 0x81),
        ("MQTT-3.3.1-2 DUP set on QoS 0", V311,
            p(&[0x38, 0x03, 0x00, 0x01, b't']), DupOnQoS0, 0x81),
        ("MQTT-3.3.2-2 single-level wildcard in a topic name", V311,
            p(&[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+']),
            InvalidTopicName(TopicError::WildcardInName), 0x81),
        ("MQTT-3.3.2-2 multi-level wildcard in a topic name (5.0)", V5,
            p(&[0x30, 0x04, 0x00, 0x01, b'#', 0x00]),
            InvalidTopicName(TopicError::WildcardInName), 0x81),
        ("MQTT-4.7.3-1 empty topic name (3.1.1)", V311,
            p(&[0x30, 0x02, 0x00, 0x00]), InvalidTopicName(TopicError::Empty), 0x81),
        ("3.3.2.1 empty topic name without a topic alias", V5,
            p(&[0x30, 0x03, 0x00, 0x00, 0x00]), EmptyTopicWithoutAlias, 0x82),
        ("MQTT-2.2.1-3 packet identifier 0 in a QoS 1 PUBLISH", V311,
            p(&[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00]), ZeroPacketId, 0x82),
        ("MQTT-2.2.1-3 packet identifier 0 in a QoS 2 PUBLISH", V5,
            p(&[0x34, 0x06, 0x00, 0x01, b't', 0x00, 0x00, 0x00]), ZeroPacketId, 0x82),
        ("3.3.2.2 QoS 1 PUBLISH cut inside the packet identifier", V311,
            p(&[0x32, 0x04, 0x00, 0x01, b't', 0x00]), Truncated, 0x81),
        ("MQTT-3.3.2-14 response topic with a wildcard", V5,
            p(&[0x30, 0x08, 0x00, 0x01, b't', 0x04, 0x08, 0x00, 0x01, b'#']),
            InvalidResponseTopic, 0x82),
        ("MQTT-3.3.2-8 topic alias 0", V5,
            p(&[0x30, 0x07, 0x00, 0x01, b't', 0x03, 0x23, 0x00, 0x00]),
            InvalidPropertyValue(0x23), 0x82),
        ("3.3.2.3.2 payload format indicator 2", V5,
            p(&[0x30, 0x06, 0x00, 0x01, b't', 0x02, 0x01, 0x02]), InvalidPropertyValue(0x01), 0x82),
        ("3.3.2.3.8 subscription identifier 0", V5,
            p(&[0x30, 0x06, 0x00, 0x01, b't', 0x02, 0x0B, 0x00]), InvalidPropertyValue(0x0B), 0x82),
        ("3.3.2.3.3 message expiry interval included twice", V5,
            p(&[0x30, 0x0E, 0x00, 0x01, b't', 0x0A,
                0x02, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x02]),
            DuplicateProperty(0x02), 0x82),
        ("3.3.2.3.4 topic alias included twice", V5,
            p(&[0x30, 0x0A, 0x00, 0x01, b't', 0x06, 0x23, 0x00, 0x01, 0x23, 0x00, 0x02]),
            DuplicateProperty(0x23), 0x82),
        ("3.3.2.3.9 content type included twice", V5,
            p(&[0x30, 0x0C, 0x00, 0x01, b't', 0x08,
                0x03, 0x00, 0x01, b'a', 0x03, 0x00, 0x01, b'b']),
            DuplicateProperty(0x03), 0x82),
        ("2.2.2.2 session expiry interval is not a PUBLISH property", V5,
            p(&[0x30, 0x09, 0x00, 0x01, b't', 0x05, 0x11, 0x00, 0x00, 0x00, 0x01]),
            PropertyNotAllowed(0x11), 0x81),
        ("2.2.2.2 unknown property identifier 0x00", V5,
            p(&[0x30, 0x06, 0x00, 0x01, b't', 0x02, 0x00, 0x00]), UnknownProperty(0x00), 0x81),
        ("2.2.2.1 property length runs past the packet", V5,
            p(&[0x30, 0x05, 0x00, 0x01, b't', 0x09, 0x01]), Truncated, 0x81),
        ("2.2.2.1 property value cut by the property length", V5,
            p(&[0x30, 0x07, 0x00, 0x01, b't', 0x02, 0x02, 0x00, 0x00]), Truncated, 0x81),

        // ---- §3.4 to §3.7 PUBACK, PUBREC, PUBREL, PUBCOMP --------------------------------
        ("MQTT-2.2.1-3 packet identifier 0 in PUBACK", V311,
            p(&[0x40, 0x02, 0x00, 0x00]), ZeroPacketId, 0x82),
        ("3.5.2 PUBREC cut inside the packet identifier", V311,
            p(&[0x50, 0x01, 0x00]), Truncated, 0x81),
        ("3.6.2 (3.1.1) PUBREL with a trailing byte", V311,
            p(&[0x62, 0x03, 0x00, 0x01, 0x00]), TrailingBytes, 0x81),
        ("3.7.2 PUBCOMP with a byte after its properties", V5,
            p(&[0x70, 0x05, 0x00, 0x01, 0x00, 0x00, 0xFF]), TrailingBytes, 0x81),
        ("MQTT-3.4.2-1 PUBACK reason 0x92 is not a PUBACK reason code", V5,
            p(&[0x40, 0x03, 0x00, 0x01, 0x92]), InvalidReasonCode(0x92), 0x82),
        ("MQTT-3.6.2-1 PUBREL reason 0x10 is not a PUBREL reason code", V5,
            p(&[0x62, 0x03, 0x00, 0x01, 0x10]), InvalidReasonCode(0x10), 0x82),
        ("MQTT-3.7.2-1 PUBCOMP reason 0x80 is not a PUBCOMP reason code", V5,
            p(&[0x70, 0x03, 0x00, 0x01, 0x80]), InvalidReasonCode(0x80), 0x82),
        ("2.2.2.2 session expiry interval is not a PUBREC property", V5,
            p(&[0x50, 0x09, 0x00, 0x01, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x01]),
            PropertyNotAllowed(0x11), 0x81),
        ("3.4.2.2.2 reason string included twice in PUBACK", V5,
            p(&[0x40, 0x0C, 0x00, 0x01, 0x00, 0x08,
                0x1F, 0x00, 0x01, b'a', 0x1F, 0x00, 0x01, b'b']),
            DuplicateProperty(0x1F), 0x82),
        ("3.4.2.2.1 PUBACK property length runs past the packet", V5,
            p(&[0x40, 0x04, 0x00, 0x01, 0x00, 0x03]), Truncated, 0x81),

        // ---- §3.8 SUBSCRIBE, §3.10 UNSUBSCRIBE, §4.7 / §4.8 filters ----------------------
        ("MQTT-3.8.3-5 reserved subscription option bits (5.0)", V5,
            p(&[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'#', 0x40]),
            ReservedSubscriptionOptions, 0x81),
        ("MQTT-3-8.3-4 reserved subscription option bits (3.1.1)", V311,
            p(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'#', 0x04]),
            ReservedSubscriptionOptions, 0x81),
        ("MQTT-3-8.3-4 requested QoS 3 (3.1.1)", V311,
            p(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'#', 0x03]), InvalidQoS, 0x81),
        ("3.8.3.1 maximum QoS 3 is a Protocol Error (5.0)", V5,
            p(&[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'#', 0x03]),
            InvalidSubscriptionQoS, 0x82),
        ("3.8.3.1 retain handling 3", V5,
            p(&[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'#', 0x30]),
            InvalidRetainHandling, 0x82),
        ("MQTT-3.8.3-4 no local on a shared subscription", V5,
            pc(&[&[0x82, 0x10, 0x00, 0x01, 0x00, 0x00, 0x0A], b"$share/g/a", &[0x04]]),
            NoLocalOnSharedSubscription, 0x82),
        ("MQTT-3.8.3-3 (3.1.1) SUBSCRIBE without a topic filter", V311,
            p(&[0x82, 0x02, 0x00, 0x01]), NoTopicFilters, 0x82),
        ("MQTT-3.8.3-2 (5.0) SUBSCRIBE without a topic filter", V5,
            p(&[0x82, 0x03, 0x00, 0x01, 0x00]), NoTopicFilters, 0x82),
        ("MQTT-2.2.1-3 packet identifier 0 in SUBSCRIBE", V311,
            p(&[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'#', 0x00]), ZeroPacketId, 0x82),
        ("3.8.3 subscription options byte missing", V311,
            p(&[0x82, 0x05, 0x00, 0x01, 0x00, 0x01, b'#']), Truncated, 0x81),
        ("MQTT-4.7.1-1 multi-level wildcard not the last level", V311,
            pc(&[&[0x82, 0x0A, 0x00, 0x01, 0x00, 0x05], b"a/#/b", &[0x00]]),
            InvalidTopicFilter(TopicError::MisplacedMultiLevelWildcard), 0x81),
        ("MQTT-4.7.1-1 multi-level wildcard not alone in its level", V311,
            pc(&[&[0x82, 0x07, 0x00, 0x01, 0x00, 0x02], b"a#", &[0x00]]),
            InvalidTopicFilter(TopicError::MisplacedMultiLevelWildcard), 0x81),
        ("MQTT-4.7.1-2 single-level wildcard not alone in its level", V311,
            pc(&[&[0xA2, 0x08, 0x00, 0x01, 0x00, 0x04], b"a+/b"]),
            InvalidTopicFilter(TopicError::MisplacedSingleLevelWildcard), 0x81),
        ("MQTT-4.7.3-1 empty topic filter", V311,
            p(&[0x82, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00]),
            InvalidTopicFilter(TopicError::Empty), 0x81),
        ("MQTT-4.8.2-1 empty share name", V5,
            pc(&[&[0x82, 0x0F, 0x00, 0x01, 0x00, 0x00, 0x09], b"$share//a", &[0x00]]),
            InvalidTopicFilter(TopicError::InvalidSharedSubscription), 0x81),
        ("MQTT-4.8.2-2 share name with a wildcard", V5,
            pc(&[&[0x82, 0x11, 0x00, 0x01, 0x00, 0x00, 0x0B], b"$share/g+/a", &[0x00]]),
            InvalidTopicFilter(TopicError::InvalidSharedSubscription), 0x81),
        ("MQTT-4.8.2-2 share name not followed by a topic filter", V5,
            pc(&[&[0x82, 0x0E, 0x00, 0x01, 0x00, 0x00, 0x08], b"$share/g", &[0x00]]),
            InvalidTopicFilter(TopicError::InvalidSharedSubscription), 0x81),
        ("MQTT-4.8.2-2 shared UNSUBSCRIBE with an empty topic filter", V5,
            pc(&[&[0xA2, 0x0E, 0x00, 0x01, 0x00, 0x00, 0x09], b"$share/g/"]),
            InvalidTopicFilter(TopicError::InvalidSharedSubscription), 0x81),
        ("3.8.2.1.2 subscription identifier 0", V5,
            p(&[0x82, 0x09, 0x00, 0x01, 0x02, 0x0B, 0x00, 0x00, 0x01, b'#', 0x00]),
            InvalidPropertyValue(0x0B), 0x82),
        ("3.8.2.1.2 subscription identifier included twice", V5,
            p(&[0x82, 0x0B, 0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x01, b'#', 0x00]),
            DuplicateProperty(0x0B), 0x82),
        ("2.2.2.2 topic alias is not a SUBSCRIBE property", V5,
            p(&[0x82, 0x0A, 0x00, 0x01, 0x03, 0x23, 0x00, 0x01, 0x00, 0x01, b'#', 0x00]),
            PropertyNotAllowed(0x23), 0x81),
        ("2.2.2.2 reason string is not an UNSUBSCRIBE property", V5,
            p(&[0xA2, 0x0A, 0x00, 0x01, 0x04, 0x1F, 0x00, 0x01, b'a', 0x00, 0x01, b'#']),
            PropertyNotAllowed(0x1F), 0x81),
        ("MQTT-3.10.3-2 (3.1.1) UNSUBSCRIBE without a topic filter", V311,
            p(&[0xA2, 0x02, 0x00, 0x01]), NoTopicFilters, 0x82),
        ("MQTT-3.10.3-2 (5.0) UNSUBSCRIBE without a topic filter", V5,
            p(&[0xA2, 0x03, 0x00, 0x01, 0x00]), NoTopicFilters, 0x82),
        ("MQTT-2.2.1-3 packet identifier 0 in UNSUBSCRIBE", V5,
            p(&[0xA2, 0x06, 0x00, 0x00, 0x00, 0x00, 0x01, b'#']), ZeroPacketId, 0x82),

        // ---- §3.9 SUBACK, §3.11 UNSUBACK -------------------------------------------------
        ("MQTT-3.9.3-2 (3.1.1) SUBACK return code 0x03", V311,
            p(&[0x90, 0x03, 0x00, 0x01, 0x03]), InvalidReasonCode(0x03), 0x82),
        ("MQTT-3.9.3-2 (3.1.1) SUBACK return code 0x87 exists only in 5.0", V311,
            p(&[0x90, 0x03, 0x00, 0x01, 0x87]), InvalidReasonCode(0x87), 0x82),
        ("MQTT-3.9.3-2 SUBACK reason 0x04", V5,
            p(&[0x90, 0x04, 0x00, 0x01, 0x00, 0x04]), InvalidReasonCode(0x04), 0x82),
        ("3.9.3 SUBACK without a return code", V311,
            p(&[0x90, 0x02, 0x00, 0x01]), Truncated, 0x81),
        ("2.2.2.2 subscription identifier is not a SUBACK property", V5,
            p(&[0x90, 0x06, 0x00, 0x01, 0x02, 0x0B, 0x01, 0x00]), PropertyNotAllowed(0x0B), 0x81),
        ("MQTT-3.11.3-1 UNSUBACK reason 0x10", V5,
            p(&[0xB0, 0x04, 0x00, 0x01, 0x00, 0x10]), InvalidReasonCode(0x10), 0x82),
        ("3.11.2 (3.1.1) UNSUBACK with a trailing byte", V311,
            p(&[0xB0, 0x03, 0x00, 0x01, 0x00]), TrailingBytes, 0x81),
        ("3.11.3 (5.0) UNSUBACK without a reason code", V5,
            p(&[0xB0, 0x03, 0x00, 0x01, 0x00]), Truncated, 0x81),

        // ---- §3.12 to §3.15 PINGREQ, PINGRESP, DISCONNECT, AUTH --------------------------
        ("3.12 PINGREQ with a body", V311,
            p(&[0xC0, 0x01, 0x00]), TrailingBytes, 0x81),
        ("3.13 PINGRESP with a body", V5,
            p(&[0xD0, 0x01, 0x00]), TrailingBytes, 0x81),
        ("3.14 (3.1.1) DISCONNECT with a body", V311,
            p(&[0xE0, 0x01, 0x00]), TrailingBytes, 0x81),
        ("MQTT-3.14.2-1 DISCONNECT reason 0x01", V5,
            p(&[0xE0, 0x01, 0x01]), InvalidReasonCode(0x01), 0x82),
        ("2.2.2.2 receive maximum is not a DISCONNECT property", V5,
            p(&[0xE0, 0x05, 0x00, 0x03, 0x21, 0x00, 0x01]), PropertyNotAllowed(0x21), 0x81),
        ("3.14.2.2.3 reason string included twice in DISCONNECT", V5,
            p(&[0xE0, 0x0A, 0x00, 0x08, 0x1F, 0x00, 0x01, b'a', 0x1F, 0x00, 0x01, b'b']),
            DuplicateProperty(0x1F), 0x82),
        ("3.14.2.2.1 DISCONNECT property length runs past the packet", V5,
            p(&[0xE0, 0x03, 0x00, 0x05, 0x1F]), Truncated, 0x81),
        ("3.14.2 DISCONNECT with a byte after its properties", V5,
            p(&[0xE0, 0x03, 0x00, 0x00, 0x00]), TrailingBytes, 0x81),
        ("3.15.2.1 AUTH reason code without a property length", V5,
            p(&[0xF0, 0x01, 0x18]), Truncated, 0x81),
        ("3.15.2.2.3 AUTH data without an authentication method", V5,
            p(&[0xF0, 0x06, 0x18, 0x04, 0x16, 0x00, 0x01, 0xAA]), AuthWithoutMethod, 0x82),
        ("3.15.2.2.2 AUTH with a reason code and no authentication method", V5,
            p(&[0xF0, 0x02, 0x19, 0x00]), AuthWithoutMethod, 0x82),
        ("MQTT-3.15.2-1 AUTH reason 0x01", V5,
            p(&[0xF0, 0x01, 0x01]), InvalidReasonCode(0x01), 0x82),
        ("3.15.2.2.2 authentication method included twice in AUTH", V5,
            p(&[0xF0, 0x0A, 0x18, 0x08, 0x15, 0x00, 0x01, b'a', 0x15, 0x00, 0x01, b'b']),
            DuplicateProperty(0x15), 0x82),
        ("2.2.2.2 topic alias is not an AUTH property", V5,
            p(&[0xF0, 0x05, 0x18, 0x03, 0x23, 0x00, 0x01]), PropertyNotAllowed(0x23), 0x81),

        // ---- §2.1.4 remaining length against the bytes, maximum packet size ---------------
        ("2.1.4 remaining length larger than the packet", V311,
            p(&[0xC0, 0x02, 0x00]), Truncated, 0x81),
        ("2.1.4 remaining length smaller than the packet", V311,
            p(&[0x40, 0x02, 0x00, 0x01, 0x00]), TrailingBytes, 0x81),
        ("2.1.4 remaining length with no body at all", V5,
            p(&[0x82, 0x0A]), Truncated, 0x81),
        ("3.1.2.11.4 packet too large, from the fixed header alone", V5,
            s(&[0x30, 0xFF, 0x7F], 1024), PacketTooLarge { size: 16_386, max: 1024 }, 0x95),
        ("3.1.2.11.4 the maximum packet size counts the fixed header", V5,
            s(&[0xC0, 0x00], 1), PacketTooLarge { size: 2, max: 1 }, 0x95),
    ]
}

fn run(version: ProtocolVersion, input: &Input) -> Result<(), DecodeError> {
    match input {
        Input::Packet(bytes) => decode_packet(bytes, version).map(drop),
        Input::Stream(bytes, max) => {
            let framed = frame(bytes, *max).map(drop);
            let decoded = decode(bytes, version, *max).map(|decoded| match decoded {
                Decoded::Incomplete { .. } => (),
                Decoded::Packet { .. } => (),
            });
            assert_eq!(framed, decoded, "frame and decode disagree");
            framed
        }
    }
}

#[test]
fn malformed_packets_table() {
    let rows = rows();
    let mut failures = Vec::new();
    for (name, version, input, expected, reason) in &rows {
        let got = run(*version, input);
        if got != Err(*expected) {
            failures.push(format!("{name}: expected Err({expected:?}), got {got:?}"));
        }
        if expected.reason_code() != ReasonCode(*reason) {
            failures.push(format!(
                "{name}: {expected:?} maps to {}, expected 0x{reason:02X}",
                expected.reason_code()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    assert!(rows.len() >= 60);
}

#[test]
fn every_decode_error_variant_has_a_row() {
    let all = [
        VarIntTooLong,
        VarIntNotMinimal,
        PacketTooLarge { size: 0, max: 0 },
        ReservedPacketType(0),
        InvalidHeaderFlags(0),
        Truncated,
        TrailingBytes,
        InvalidUtf8,
        NullCharacter,
        InvalidProtocolName,
        UnsupportedProtocolLevel(0),
        ReservedConnectFlag,
        InvalidWillFlags,
        PasswordWithoutUsername,
        InvalidQoS,
        DupOnQoS0,
        ZeroPacketId,
        InvalidTopicName(TopicError::Empty),
        InvalidTopicFilter(TopicError::Empty),
        EmptyTopicWithoutAlias,
        InvalidResponseTopic,
        NoTopicFilters,
        ReservedSubscriptionOptions,
        InvalidSubscriptionQoS,
        InvalidRetainHandling,
        NoLocalOnSharedSubscription,
        InvalidReasonCode(0),
        ReservedConnAckFlags,
        SessionPresentOnFailure,
        UnknownProperty(0),
        PropertyNotAllowed(0),
        DuplicateProperty(0),
        InvalidPropertyValue(0),
        AuthDataWithoutMethod,
        AuthWithoutMethod,
    ];
    let rows = rows();
    let missing: Vec<_> = all
        .iter()
        .filter(|variant| {
            !rows
                .iter()
                .any(|(_, _, _, error, _)| discriminant(error) == discriminant(*variant))
        })
        .collect();
    assert!(missing.is_empty(), "no row for {missing:?}");
}

#[test]
fn unique_row_names() {
    let rows = rows();
    for (index, row) in rows.iter().enumerate() {
        assert!(
            rows[..index].iter().all(|other| other.0 != row.0),
            "duplicate row name {}",
            row.0
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Valid packets cut short or corrupted never panic
// ---------------------------------------------------------------------------------------------

/// Valid packets (some repeated from `codec_vectors.rs`), with the version to decode them in.
#[rustfmt::skip]
fn valid_vectors() -> Vec<(ProtocolVersion, Vec<u8>)> {
    vec![
        (V311, [&[0x10, 0x1F, 0x00, 0x04][..], b"MQTT", &[0x04, 0xEE, 0x00, 0x3C],
                &[0x00, 0x02], b"c1", &[0x00, 0x03], b"w/t", &[0x00, 0x03], b"bye",
                &[0x00, 0x01], b"u", &[0x00, 0x02], b"pw"].concat()),
        (V5, [&[0x10, 0x6C, 0x00, 0x04][..], b"MQTT", &[0x05, 0xD6, 0x00, 0x1E, 0x26],
              &[0x11, 0x00, 0x00, 0x00, 0x78, 0x21, 0x00, 0x0A, 0x27, 0x00, 0x00, 0x04, 0x00],
              &[0x22, 0x00, 0x05, 0x19, 0x01, 0x17, 0x00],
              &[0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v'],
              &[0x15, 0x00, 0x03], b"tok", &[0x16, 0x00, 0x02, 0xAB, 0xCD],
              &[0x00, 0x02], b"c5", &[0x25],
              &[0x18, 0x00, 0x00, 0x00, 0x0A, 0x01, 0x01, 0x02, 0x00, 0x00, 0x01, 0x2C],
              &[0x03, 0x00, 0x04], b"text", &[0x08, 0x00, 0x03], b"r/1",
              &[0x09, 0x00, 0x02, 0x01, 0x02], &[0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b'],
              &[0x00, 0x03], b"w/t", &[0x00, 0x03], b"bye", &[0x00, 0x01], b"u",
              &[0x00, 0x02], b"pw"].concat()),
        (V5, [&[0x20, 0x49, 0x01, 0x00, 0x46][..],
              &[0x11, 0x00, 0x00, 0x0E, 0x10, 0x21, 0x00, 0x14, 0x24, 0x01, 0x25, 0x00],
              &[0x27, 0x00, 0x01, 0x00, 0x00, 0x12, 0x00, 0x03], b"cid",
              &[0x22, 0x00, 0x0A, 0x1F, 0x00, 0x02], b"ok",
              &[0x26, 0x00, 0x01, b'x', 0x00, 0x01, b'y'],
              &[0x28, 0x00, 0x29, 0x00, 0x2A, 0x01, 0x13, 0x00, 0x3C],
              &[0x1A, 0x00, 0x04], b"resp", &[0x1C, 0x00, 0x03], b"srv",
              &[0x15, 0x00, 0x03], b"tok", &[0x16, 0x00, 0x01, 0xFF]].concat()),
        (V5, [&[0x3D, 0x3A, 0x00, 0x03][..], b"s/t", &[0x00, 0x07, 0x30],
              &[0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0x3C, 0x23, 0x00, 0x02],
              &[0x08, 0x00, 0x03], b"r/s", &[0x09, 0x00, 0x03, 0xAA, 0xBB, 0xCC],
              &[0x26, 0x00, 0x01, b'n', 0x00, 0x01, b'1'],
              &[0x26, 0x00, 0x01, b'n', 0x00, 0x01, b'2'],
              &[0x0B, 0x05, 0x0B, 0x80, 0x01, 0x03, 0x00, 0x04], b"json", b"{}"].concat()),
        (V5, [&[0x82, 0x22, 0x00, 0x0A, 0x0A, 0x0B, 0x81, 0x01][..],
              &[0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b'],
              &[0x00, 0x03], b"a/b", &[0x2D, 0x00, 0x0C], b"$share/g/x/#", &[0x12]].concat()),
        (V5, [&[0x90, 0x0C, 0x00, 0x0A, 0x05, 0x1F, 0x00, 0x02][..], b"hi",
              &[0x01, 0x02, 0x87, 0xA2]].concat()),
        (V5, [&[0xA2, 0x12, 0x00, 0x0B, 0x07][..], &[0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v'],
              &[0x00, 0x03], b"a/b", &[0x00, 0x01], b"#"].concat()),
        (V5, vec![0xB0, 0x0A, 0x00, 0x0B, 0x05, 0x1F, 0x00, 0x02, b'n', b'o', 0x00, 0x11]),
        (V5, [&[0x40, 0x12, 0x00, 0x01, 0x87, 0x0E, 0x1F, 0x00, 0x04][..], b"deny",
              &[0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v']].concat()),
        (V5, [&[0xE0, 0x1B, 0x9C, 0x19, 0x11, 0x00, 0x00, 0x00, 0x00, 0x1F, 0x00, 0x04][..],
              b"bye!", &[0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', 0x1C, 0x00, 0x03], b"alt"]
              .concat()),
        (V5, [&[0xF0, 0x1B, 0x18, 0x19, 0x15, 0x00, 0x05][..], b"SCRAM",
              &[0x16, 0x00, 0x03, 0x01, 0x02, 0x03, 0x1F, 0x00, 0x01, b'r'],
              &[0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v']].concat()),
        (V311, [&[0x82, 0x0C, 0x00, 0x01, 0x00, 0x03][..], b"a/+", &[0x01, 0x00, 0x01],
                b"#", &[0x02]].concat()),
        (V311, vec![0x90, 0x05, 0x00, 0x01, 0x01, 0x80, 0x00]),
        (V311, vec![0x3B, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, 0x01, 0x02, 0x03]),
        (V311, vec![0x62, 0x02, 0x00, 0x0C]),
        (V311, vec![0xC0, 0x00]),
    ]
}

#[test]
fn valid_vectors_are_valid() {
    for (version, bytes) in valid_vectors() {
        assert!(
            decode_packet(&bytes, version).is_ok(),
            "{bytes:02X?} should decode"
        );
    }
}

#[test]
fn every_prefix_of_a_valid_packet_fails_cleanly() {
    for (version, bytes) in valid_vectors() {
        for end in 0..bytes.len() {
            let prefix = &bytes[..end];
            // As if the prefix were a whole packet: the remaining length disagrees.
            let result = decode_packet(prefix, version);
            assert!(
                matches!(result, Err(DecodeError::Truncated)),
                "prefix {prefix:02X?}: {result:?}"
            );
            // As a stream: simply incomplete.
            assert!(matches!(
                decode(prefix, version, MAX_PACKET_SIZE),
                Ok(Decoded::Incomplete { .. })
            ));
        }
    }
}

#[test]
fn every_prefix_with_a_matching_remaining_length_fails_or_decodes_cleanly() {
    // Cut the body and fix the remaining length, so the packet's own fields are cut short.
    for (version, bytes) in valid_vectors() {
        assert!(bytes[1] < 0x80, "single-byte remaining length expected");
        for end in 2..bytes.len() {
            let mut cut = bytes[..end].to_vec();
            cut[1] = u8::try_from(end - 2).unwrap();
            match decode_packet(&cut, version) {
                // A shorter PUBLISH payload, fewer list entries... are still valid packets,
                // and then they must encode back to the same bytes.
                Ok(packet) => {
                    let mut buf = vec![0; cut.len()];
                    assert_eq!(
                        packet.encode(version, &mut buf),
                        Ok(cut.len()),
                        "{cut:02X?}"
                    );
                    if !matches!(packet, femtomq_core::codec::Packet::Connect(_)) {
                        assert_eq!(buf, cut, "re-encoding {cut:02X?}");
                    }
                }
                Err(error) => assert!(
                    matches!(error.reason_code().0, 0x81 | 0x82 | 0x84),
                    "{cut:02X?}: {error:?}"
                ),
            }
        }
    }
}

#[test]
fn every_single_bit_corruption_fails_or_decodes_cleanly() {
    for (version, bytes) in valid_vectors() {
        for index in 0..bytes.len() {
            for bit in 0..8 {
                let mut corrupt = bytes.clone();
                corrupt[index] ^= 1 << bit;
                if let Ok(packet) = decode_packet(&corrupt, version) {
                    // Whatever decodes can be encoded again.
                    let len = packet.encoded_len(version).unwrap();
                    let mut buf = vec![0; len];
                    assert_eq!(packet.encode(version, &mut buf), Ok(len));
                }
            }
        }
    }
}
