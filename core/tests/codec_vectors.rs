//! Byte-exact vectors for every MQTT control packet, written by hand from the OASIS MQTT 3.1.1
//! and MQTT 5.0 specifications (section numbers in the comments are those of the version the
//! vector is for). Each vector is decoded and every field compared with a literal `Packet`, then
//! re-encoded and compared byte for byte. Non-canonical but valid forms are only decoded.

use core::num::{NonZeroU16, NonZeroU32};

use femtomq_core::codec::{
    Ack, AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect,
    ConnectProperties, DecodeError, Decoded, Disconnect, DisconnectProperties, EncodeError, Frame,
    MAX_PACKET_SIZE, Packet, Publish, PublishProperties, QosPid, ReasonCode, Repeated, SubAck,
    Subscribe, SubscribeProperties, Subscription, SubscriptionId, UnsubAck, Unsubscribe,
    UnsubscribeProperties, UserProperty, Will, WillProperties, decode, decode_packet, frame,
};
use femtomq_core::{ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};

const V3_1: ProtocolVersion = ProtocolVersion::V3_1;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn pid(value: u16) -> NonZeroU16 {
    NonZeroU16::new(value).unwrap()
}

fn sub_id(value: u32) -> SubscriptionId {
    SubscriptionId::new(value).unwrap()
}

const fn user<'a>(name: &'a str, value: &'a str) -> UserProperty<'a> {
    UserProperty { name, value }
}

/// Decodes `bytes` as one packet of `version` and compares it with `expected`, through both
/// `decode_packet` and the stream entry points `frame` and `decode`.
fn assert_decodes(version: ProtocolVersion, bytes: &[u8], expected: &Packet<'_>) {
    let decoded = decode_packet(bytes, version)
        .unwrap_or_else(|error| panic!("{bytes:02X?} failed to decode: {error:?}"));
    assert_eq!(&decoded, expected, "decoded packet of {bytes:02X?}");
    assert_eq!(decoded.packet_type(), expected.packet_type());

    let header_len = match frame(bytes, MAX_PACKET_SIZE) {
        Ok(Frame::Complete { header_len, len }) => {
            assert_eq!(len, bytes.len(), "frame length of {bytes:02X?}");
            header_len
        }
        other => panic!("frame of {bytes:02X?}: {other:?}"),
    };
    assert!((2..=5).contains(&header_len));

    // The stream decoder stops at the packet's end even with more bytes behind it.
    let mut stream = bytes.to_vec();
    stream.extend_from_slice(&[0xC0, 0x00]);
    match decode(&stream, version, MAX_PACKET_SIZE) {
        Ok(Decoded::Packet { packet, len }) => {
            assert_eq!(&packet, expected);
            assert_eq!(len, bytes.len());
        }
        other => panic!("stream decode of {bytes:02X?}: {other:?}"),
    }
}

/// Encodes `packet` for `version` and compares the output with `expected` byte for byte.
fn assert_encodes(version: ProtocolVersion, packet: &Packet<'_>, expected: &[u8]) {
    assert_eq!(
        packet.encoded_len(version),
        Ok(expected.len()),
        "encoded_len of {packet:?}"
    );
    let mut buf = vec![0xA5; expected.len() + 8];
    let written = packet
        .encode(version, &mut buf)
        .unwrap_or_else(|error| panic!("{packet:?} failed to encode: {error:?}"));
    assert_eq!(&buf[..written], expected, "encoding of {packet:?}");
    assert!(
        buf[written..].iter().all(|&byte| byte == 0xA5),
        "wrote past the packet"
    );
}

/// A canonical vector: decodes to `expected` and encodes back to the same bytes.
fn assert_round_trip(version: ProtocolVersion, bytes: &[u8], expected: &Packet<'_>) {
    assert_decodes(version, bytes, expected);
    assert_encodes(version, expected, bytes);
    let decoded = decode_packet(bytes, version).unwrap();
    assert_encodes(version, &decoded, bytes);
}

// ---------------------------------------------------------------------------------------------
// MQTT 3.1 and 3.1.1 CONNECT / CONNACK
// ---------------------------------------------------------------------------------------------

#[rustfmt::skip]
const V311_CONNECT_FULL: &[u8] = &[
    0x10,                               // 2.2.1 type 1 CONNECT, 2.2.2 flags 0000
    0x1F,                               // 2.2.3 remaining length 31
    0x00, 0x04, b'M', b'Q', b'T', b'T', // 3.1.2.1 protocol name "MQTT"
    0x04,                               // 3.1.2.2 protocol level 4
    0xEE,                               // 3.1.2.3 flags: user, password, will retain, will QoS 1, will, clean session
    0x00, 0x3C,                         // 3.1.2.10 keep alive 60
    0x00, 0x02, b'c', b'1',             // 3.1.3.1 client identifier "c1"
    0x00, 0x03, b'w', b'/', b't',       // 3.1.3.2 will topic "w/t"
    0x00, 0x03, b'b', b'y', b'e',       // 3.1.3.3 will message "bye"
    0x00, 0x01, b'u',                   // 3.1.3.4 user name "u"
    0x00, 0x02, b'p', b'w',             // 3.1.3.5 password "pw"
];

#[test]
fn v311_connect_with_will_username_and_password() {
    let expected = Packet::Connect(Connect {
        version: V311,
        clean_start: true,
        keep_alive: 60,
        properties: ConnectProperties::default(),
        client_id: "c1",
        will: Some(Will {
            properties: WillProperties::default(),
            topic: "w/t",
            payload: b"bye",
            qos: QoS::AtLeastOnce,
            retain: true,
        }),
        username: Some("u"),
        password: Some(b"pw"),
    });
    assert_round_trip(V311, V311_CONNECT_FULL, &expected);
    // A CONNECT carries its own version: the connection's version does not matter.
    assert_decodes(V5, V311_CONNECT_FULL, &expected);
    assert_encodes(V5, &expected, V311_CONNECT_FULL);
}

#[rustfmt::skip]
const V311_CONNECT_MINIMAL: &[u8] = &[
    0x10, 0x0C,                         // 2.2 CONNECT, remaining length 12
    0x00, 0x04, b'M', b'Q', b'T', b'T', // 3.1.2.1 protocol name
    0x04,                               // 3.1.2.2 level 4
    0x02,                               // 3.1.2.4 clean session only
    0x00, 0x00,                         // 3.1.2.10 keep alive 0 (disabled)
    0x00, 0x00,                         // 3.1.3.1 zero-byte client identifier [MQTT-3.1.3-6]
];

#[test]
fn v311_connect_minimal_with_empty_client_id() {
    let expected = Packet::Connect(Connect {
        version: V311,
        clean_start: true,
        keep_alive: 0,
        properties: ConnectProperties::default(),
        client_id: "",
        will: None,
        username: None,
        password: None,
    });
    assert_round_trip(V311, V311_CONNECT_MINIMAL, &expected);
}

#[rustfmt::skip]
const V31_CONNECT: &[u8] = &[
    0x10, 0x1A,                                         // CONNECT, remaining length 26
    0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p',     // MQTT 3.1 protocol name "MQIsdp"
    0x03,                                               // protocol version 3
    0xC2,                                               // flags: user name, password, clean session
    0x00, 0x0A,                                         // keep alive 10
    0x00, 0x06, b'l', b'e', b'g', b'a', b'c', b'y',     // client identifier "legacy"
    0x00, 0x01, b'u',                                   // user name "u"
    0x00, 0x01, b'p',                                   // password "p"
];

#[test]
fn v31_mqisdp_level_3_connect() {
    let expected = Packet::Connect(Connect {
        version: V3_1,
        clean_start: true,
        keep_alive: 10,
        properties: ConnectProperties::default(),
        client_id: "legacy",
        will: None,
        username: Some("u"),
        password: Some(b"p"),
    });
    assert_round_trip(V3_1, V31_CONNECT, &expected);
    assert_round_trip(V311, V31_CONNECT, &expected);
}

#[test]
fn v311_connack_accepted_with_session_present() {
    #[rustfmt::skip]
    let bytes = [
        0x20, 0x02, // 2.2 CONNACK, remaining length 2
        0x01,       // 3.2.2.1 acknowledge flags: session present
        0x00,       // 3.2.2.3 return code 0 accepted
    ];
    let expected = Packet::ConnAck(ConnAck {
        session_present: true,
        reason: ReasonCode::SUCCESS,
        properties: ConnAckProperties::default(),
    });
    assert_round_trip(V311, &bytes, &expected);
}

#[test]
fn v311_connack_return_codes_map_to_reason_codes() {
    // 3.2.2.3 table 3.1: return codes 1 to 5.
    let cases = [
        (0x01, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        (0x02, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        (0x03, ReasonCode::SERVER_UNAVAILABLE),
        (0x04, ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        (0x05, ReasonCode::NOT_AUTHORIZED),
    ];
    for (code, reason) in cases {
        let bytes = [0x20, 0x02, 0x00, code];
        let expected = Packet::ConnAck(ConnAck {
            session_present: false,
            reason,
            properties: ConnAckProperties::default(),
        });
        assert_round_trip(V311, &bytes, &expected);
    }
}

// ---------------------------------------------------------------------------------------------
// MQTT 3.1.1 PUBLISH and acknowledgements
// ---------------------------------------------------------------------------------------------

#[test]
fn v311_publish_qos0() {
    #[rustfmt::skip]
    let bytes = [
        0x30,                   // 3.3.1 PUBLISH, DUP 0, QoS 0, RETAIN 0
        0x07,                   // 2.2.3 remaining length 7
        0x00, 0x03, b'a', b'/', b'b', // 3.3.2.1 topic name "a/b" (no packet identifier at QoS 0)
        b'h', b'i',             // 3.3.3 payload
    ];
    let expected = Packet::Publish(Publish {
        dup: false,
        qos_pid: QosPid::AtMostOnce,
        retain: false,
        topic: "a/b",
        properties: PublishProperties::default(),
        payload: b"hi",
    });
    assert_round_trip(V311, &bytes, &expected);
}

#[test]
fn v311_publish_qos1_dup_retain() {
    #[rustfmt::skip]
    let bytes = [
        0x3B,                   // 3.3.1.1 DUP 1, 3.3.1.2 QoS 1, 3.3.1.3 RETAIN 1
        0x0A,                   // remaining length 10
        0x00, 0x03, b'a', b'/', b'b', // 3.3.2.1 topic name
        0x00, 0x0A,             // 3.3.2.2 packet identifier 10
        0x01, 0x02, 0x03,       // 3.3.3 payload
    ];
    let expected = Packet::Publish(Publish {
        dup: true,
        qos_pid: QosPid::AtLeastOnce(pid(10)),
        retain: true,
        topic: "a/b",
        properties: PublishProperties::default(),
        payload: &[1, 2, 3],
    });
    assert_round_trip(V311, &bytes, &expected);
}

#[test]
fn v311_publish_qos2_empty_payload() {
    #[rustfmt::skip]
    let bytes = [
        0x34,                   // 3.3.1 QoS 2
        0x05,                   // remaining length 5
        0x00, 0x01, b't',       // 3.3.2.1 topic name "t"
        0x12, 0x34,             // 3.3.2.2 packet identifier 0x1234
                                // 3.3.3 zero-length payload
    ];
    let expected = Packet::Publish(Publish {
        dup: false,
        qos_pid: QosPid::ExactlyOnce(pid(0x1234)),
        retain: false,
        topic: "t",
        properties: PublishProperties::default(),
        payload: &[],
    });
    assert_round_trip(V311, &bytes, &expected);
}

#[test]
fn v311_puback_pubrec_pubrel_pubcomp() {
    // 3.4 PUBACK, 3.5 PUBREC, 3.6 PUBREL (flags 0010 [MQTT-3.6.1-1]), 3.7 PUBCOMP:
    // fixed header, remaining length 2, packet identifier.
    let puback = [0x40, 0x02, 0x00, 0x0A];
    let pubrec = [0x50, 0x02, 0x00, 0x0B];
    let pubrel = [0x62, 0x02, 0x00, 0x0C];
    let pubcomp = [0x70, 0x02, 0xFF, 0xFF];
    assert_round_trip(V311, &puback, &Packet::PubAck(Ack::success(pid(10))));
    assert_round_trip(V311, &pubrec, &Packet::PubRec(Ack::success(pid(11))));
    assert_round_trip(V311, &pubrel, &Packet::PubRel(Ack::success(pid(12))));
    assert_round_trip(V311, &pubcomp, &Packet::PubComp(Ack::success(pid(0xFFFF))));
}

#[test]
fn v311_acks_drop_v5_reason_and_properties_when_encoded() {
    let ack = Ack {
        packet_id: pid(7),
        reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
        properties: AckProperties {
            reason_string: Some("x"),
            user_properties: Repeated::default(),
        },
    };
    assert_encodes(V311, &Packet::PubAck(ack), &[0x40, 0x02, 0x00, 0x07]);
    assert_encodes(V311, &Packet::PubRel(ack), &[0x62, 0x02, 0x00, 0x07]);
}

// ---------------------------------------------------------------------------------------------
// MQTT 3.1.1 SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT
// ---------------------------------------------------------------------------------------------

#[test]
fn v311_subscribe_two_filters() {
    #[rustfmt::skip]
    let bytes = [
        0x82,                   // 3.8.1 SUBSCRIBE, flags 0010 [MQTT-3.8.1-1]
        0x0C,                   // remaining length 12
        0x00, 0x01,             // 3.8.2 packet identifier 1
        0x00, 0x03, b'a', b'/', b'+', // 3.8.3 topic filter "a/+"
        0x01,                   // 3.8.3.1 requested QoS 1
        0x00, 0x01, b'#',       // topic filter "#"
        0x02,                   // requested QoS 2
    ];
    let subscriptions = [
        Subscription {
            filter: "a/+",
            options: SubscriptionOptions::with_qos(QoS::AtLeastOnce),
        },
        Subscription {
            filter: "#",
            options: SubscriptionOptions::with_qos(QoS::ExactlyOnce),
        },
    ];
    let expected = Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: SubscribeProperties::default(),
        subscriptions: Repeated::from_slice(&subscriptions),
    });
    assert_round_trip(V311, &bytes, &expected);
}

#[test]
fn v311_suback_with_failure_0x80() {
    #[rustfmt::skip]
    let bytes = [
        0x90,                   // 3.9.1 SUBACK
        0x05,                   // remaining length 5
        0x00, 0x01,             // 3.9.2 packet identifier 1
        0x01,                   // 3.9.3 return code: success, maximum QoS 1
        0x80,                   // 3.9.3 return code: failure
        0x00,                   // 3.9.3 return code: success, maximum QoS 0
    ];
    let codes = [ReasonCode(0x01), ReasonCode(0x80), ReasonCode(0x00)];
    let expected = Packet::SubAck(SubAck {
        packet_id: pid(1),
        properties: AckProperties::default(),
        reason_codes: Repeated::from_slice(&codes),
    });
    assert_round_trip(V311, &bytes, &expected);
}

#[test]
fn v5_suback_failure_codes_are_written_as_0x80_for_v311() {
    // [MQTT-3.9.3-2] 3.1.1 allows only 0x00, 0x01, 0x02 and 0x80.
    let codes = [
        ReasonCode::GRANTED_QOS_2,
        ReasonCode::NOT_AUTHORIZED,
        ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
    ];
    let suback = Packet::SubAck(SubAck {
        packet_id: pid(9),
        properties: AckProperties {
            reason_string: Some("dropped for 3.1.1"),
            user_properties: Repeated::default(),
        },
        reason_codes: Repeated::from_slice(&codes),
    });
    assert_encodes(V311, &suback, &[0x90, 0x05, 0x00, 0x09, 0x02, 0x80, 0x80]);
}

#[test]
fn v311_unsubscribe_two_filters() {
    #[rustfmt::skip]
    let bytes = [
        0xA2,                   // 3.10.1 UNSUBSCRIBE, flags 0010 [MQTT-3.10.1-1]
        0x0A,                   // remaining length 10
        0x00, 0x02,             // 3.10.2 packet identifier 2
        0x00, 0x03, b'a', b'/', b'b', // 3.10.3 topic filter "a/b"
        0x00, 0x01, b'#',       // topic filter "#"
    ];
    let filters = ["a/b", "#"];
    let expected = Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(2),
        properties: UnsubscribeProperties::default(),
        filters: Repeated::from_slice(&filters),
    });
    assert_round_trip(V311, &bytes, &expected);
}

#[test]
fn v311_unsuback() {
    let bytes = [
        0xB0, 0x02, // 3.11.1 UNSUBACK, remaining length 2
        0x00, 0x02, // 3.11.2 packet identifier 2 (no payload in 3.1.1)
    ];
    let expected = Packet::UnsubAck(UnsubAck {
        packet_id: pid(2),
        properties: AckProperties::default(),
        reason_codes: Repeated::default(),
    });
    assert_round_trip(V311, &bytes, &expected);
    // v5 reason codes are not sent to a 3.1.1 client.
    let codes = [ReasonCode::NO_SUBSCRIPTION_EXISTED];
    let v5_unsuback = Packet::UnsubAck(UnsubAck {
        packet_id: pid(2),
        properties: AckProperties::default(),
        reason_codes: Repeated::from_slice(&codes),
    });
    assert_encodes(V311, &v5_unsuback, &bytes);
}

#[test]
fn pingreq_pingresp_in_both_versions() {
    for version in [V311, V5] {
        // 3.12 PINGREQ and 3.13 PINGRESP: fixed header only.
        assert_round_trip(version, &[0xC0, 0x00], &Packet::PingReq);
        assert_round_trip(version, &[0xD0, 0x00], &Packet::PingResp);
    }
}

#[test]
fn v311_disconnect() {
    // 3.14 DISCONNECT: fixed header only.
    assert_round_trip(
        V311,
        &[0xE0, 0x00],
        &Packet::Disconnect(Disconnect::default()),
    );
    // A v5 reason is not sent to a 3.1.1 client.
    let disconnect = Packet::Disconnect(Disconnect::with_reason(ReasonCode::SERVER_SHUTTING_DOWN));
    assert_encodes(V311, &disconnect, &[0xE0, 0x00]);
}

// ---------------------------------------------------------------------------------------------
// MQTT 5.0 CONNECT / CONNACK
// ---------------------------------------------------------------------------------------------

#[rustfmt::skip]
const V5_CONNECT_ALL_PROPERTIES: &[u8] = &[
    0x10,                               // 2.1.2 CONNECT, 2.1.3 flags 0000
    0x6C,                               // 2.1.4 remaining length 108
    0x00, 0x04, b'M', b'Q', b'T', b'T', // 3.1.2.1 protocol name
    0x05,                               // 3.1.2.2 protocol version 5
    0xD6,                               // 3.1.2.3 flags: user name, password, will QoS 2, will flag, clean start
    0x00, 0x1E,                         // 3.1.2.10 keep alive 30
    0x26,                               // 3.1.2.11.1 property length 38
    0x11, 0x00, 0x00, 0x00, 0x78,       // 3.1.2.11.2 session expiry interval 120
    0x21, 0x00, 0x0A,                   // 3.1.2.11.3 receive maximum 10
    0x27, 0x00, 0x00, 0x04, 0x00,       // 3.1.2.11.4 maximum packet size 1024
    0x22, 0x00, 0x05,                   // 3.1.2.11.5 topic alias maximum 5
    0x19, 0x01,                         // 3.1.2.11.6 request response information 1
    0x17, 0x00,                         // 3.1.2.11.7 request problem information 0
    0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // 3.1.2.11.8 user property k=v
    0x15, 0x00, 0x03, b't', b'o', b'k', // 3.1.2.11.9 authentication method "tok"
    0x16, 0x00, 0x02, 0xAB, 0xCD,       // 3.1.2.11.10 authentication data
    0x00, 0x02, b'c', b'5',             // 3.1.3.1 client identifier "c5"
    0x25,                               // 3.1.3.2.1 will property length 37
    0x18, 0x00, 0x00, 0x00, 0x0A,       // 3.1.3.2.2 will delay interval 10
    0x01, 0x01,                         // 3.1.3.2.3 payload format indicator 1 (UTF-8)
    0x02, 0x00, 0x00, 0x01, 0x2C,       // 3.1.3.2.4 message expiry interval 300
    0x03, 0x00, 0x04, b't', b'e', b'x', b't', // 3.1.3.2.5 content type "text"
    0x08, 0x00, 0x03, b'r', b'/', b'1', // 3.1.3.2.6 response topic "r/1"
    0x09, 0x00, 0x02, 0x01, 0x02,       // 3.1.3.2.7 correlation data
    0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b', // 3.1.3.2.8 user property a=b
    0x00, 0x03, b'w', b'/', b't',       // 3.1.3.3 will topic "w/t"
    0x00, 0x03, b'b', b'y', b'e',       // 3.1.3.4 will payload "bye"
    0x00, 0x01, b'u',                   // 3.1.3.5 user name "u"
    0x00, 0x02, b'p', b'w',             // 3.1.3.6 password "pw"
];

#[test]
fn v5_connect_with_every_connect_and_will_property() {
    let connect_users = [user("k", "v")];
    let will_users = [user("a", "b")];
    let expected = Packet::Connect(Connect {
        version: V5,
        clean_start: true,
        keep_alive: 30,
        properties: ConnectProperties {
            session_expiry_interval: Some(120),
            receive_maximum: Some(pid(10)),
            maximum_packet_size: NonZeroU32::new(1024),
            topic_alias_maximum: Some(5),
            request_response_information: Some(true),
            request_problem_information: Some(false),
            user_properties: Repeated::from_slice(&connect_users),
            authentication_method: Some("tok"),
            authentication_data: Some(&[0xAB, 0xCD]),
        },
        client_id: "c5",
        will: Some(Will {
            properties: WillProperties {
                will_delay_interval: Some(10),
                payload_format_indicator: Some(true),
                message_expiry_interval: Some(300),
                content_type: Some("text"),
                response_topic: Some("r/1"),
                correlation_data: Some(&[1, 2]),
                user_properties: Repeated::from_slice(&will_users),
            },
            topic: "w/t",
            payload: b"bye",
            qos: QoS::ExactlyOnce,
            retain: false,
        }),
        username: Some("u"),
        password: Some(b"pw"),
    });
    assert_round_trip(V5, V5_CONNECT_ALL_PROPERTIES, &expected);
    assert_round_trip(V311, V5_CONNECT_ALL_PROPERTIES, &expected);
}

#[test]
fn v5_connect_password_without_user_name_is_allowed() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x12,                         // CONNECT, remaining length 18
        0x00, 0x04, b'M', b'Q', b'T', b'T', // 3.1.2.1 protocol name
        0x05,                               // 3.1.2.2 version 5
        0x40,                               // 3.1.2.9 password flag without user name flag
        0x00, 0x00,                         // 3.1.2.10 keep alive
        0x00,                               // 3.1.2.11.1 property length 0
        0x00, 0x01, b'x',                   // 3.1.3.1 client identifier "x"
        0x00, 0x02, 0x00, 0xFF,             // 3.1.3.6 password: binary data
    ];
    let expected = Packet::Connect(Connect {
        version: V5,
        clean_start: false,
        keep_alive: 0,
        properties: ConnectProperties::default(),
        client_id: "x",
        will: None,
        username: None,
        password: Some(&[0x00, 0xFF]),
    });
    assert_round_trip(V5, &bytes, &expected);
}

#[rustfmt::skip]
const V5_CONNACK_ALL_PROPERTIES: &[u8] = &[
    0x20,                               // 3.2.1 CONNACK
    0x49,                               // remaining length 73
    0x01,                               // 3.2.2.1.1 session present
    0x00,                               // 3.2.2.2 reason code: success
    0x46,                               // 3.2.2.3.1 property length 70
    0x11, 0x00, 0x00, 0x0E, 0x10,       // 3.2.2.3.2 session expiry interval 3600
    0x21, 0x00, 0x14,                   // 3.2.2.3.3 receive maximum 20
    0x24, 0x01,                         // 3.2.2.3.4 maximum QoS 1
    0x25, 0x00,                         // 3.2.2.3.5 retain available 0
    0x27, 0x00, 0x01, 0x00, 0x00,       // 3.2.2.3.6 maximum packet size 65536
    0x12, 0x00, 0x03, b'c', b'i', b'd', // 3.2.2.3.7 assigned client identifier "cid"
    0x22, 0x00, 0x0A,                   // 3.2.2.3.8 topic alias maximum 10
    0x1F, 0x00, 0x02, b'o', b'k',       // 3.2.2.3.9 reason string "ok"
    0x26, 0x00, 0x01, b'x', 0x00, 0x01, b'y', // 3.2.2.3.10 user property x=y
    0x28, 0x00,                         // 3.2.2.3.11 wildcard subscription available 0
    0x29, 0x00,                         // 3.2.2.3.12 subscription identifiers available 0
    0x2A, 0x01,                         // 3.2.2.3.13 shared subscription available 1
    0x13, 0x00, 0x3C,                   // 3.2.2.3.14 server keep alive 60
    0x1A, 0x00, 0x04, b'r', b'e', b's', b'p', // 3.2.2.3.15 response information "resp"
    0x1C, 0x00, 0x03, b's', b'r', b'v', // 3.2.2.3.16 server reference "srv"
    0x15, 0x00, 0x03, b't', b'o', b'k', // 3.2.2.3.17 authentication method "tok"
    0x16, 0x00, 0x01, 0xFF,             // 3.2.2.3.18 authentication data
];

#[test]
fn v5_connack_with_every_connack_property() {
    let users = [user("x", "y")];
    let expected = Packet::ConnAck(ConnAck {
        session_present: true,
        reason: ReasonCode::SUCCESS,
        properties: ConnAckProperties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(pid(20)),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            maximum_packet_size: NonZeroU32::new(65536),
            assigned_client_identifier: Some("cid"),
            topic_alias_maximum: Some(10),
            reason_string: Some("ok"),
            user_properties: Repeated::from_slice(&users),
            wildcard_subscription_available: Some(false),
            subscription_identifiers_available: Some(false),
            shared_subscription_available: Some(true),
            server_keep_alive: Some(60),
            response_information: Some("resp"),
            server_reference: Some("srv"),
            authentication_method: Some("tok"),
            authentication_data: Some(&[0xFF]),
        },
    });
    assert_round_trip(V5, V5_CONNACK_ALL_PROPERTIES, &expected);
}

#[test]
fn v5_connack_failure_and_its_v311_return_code() {
    #[rustfmt::skip]
    let bytes = [
        0x20, 0x03, // CONNACK, remaining length 3
        0x00,       // 3.2.2.1 no session present
        0x86,       // 3.2.2.2 Bad User Name or Password
        0x00,       // 3.2.2.3.1 property length 0
    ];
    let expected = Packet::ConnAck(ConnAck {
        session_present: false,
        reason: ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        properties: ConnAckProperties::default(),
    });
    assert_round_trip(V5, &bytes, &expected);
    // 3.1.1 §3.2.2.3: return code 4 "bad user name or password".
    assert_encodes(V311, &expected, &[0x20, 0x02, 0x00, 0x04]);
}

#[test]
fn connack_session_present_is_cleared_on_failure_when_encoding() {
    // [MQTT-3.2.2-6] (5.0) / [MQTT-3.2.2-4] (3.1.1).
    let connack = Packet::ConnAck(ConnAck {
        session_present: true,
        reason: ReasonCode::NOT_AUTHORIZED,
        properties: ConnAckProperties::default(),
    });
    assert_encodes(V5, &connack, &[0x20, 0x03, 0x00, 0x87, 0x00]);
    assert_encodes(V311, &connack, &[0x20, 0x02, 0x00, 0x05]);
}

// ---------------------------------------------------------------------------------------------
// MQTT 5.0 PUBLISH and acknowledgements
// ---------------------------------------------------------------------------------------------

#[rustfmt::skip]
const V5_PUBLISH_ALL_PROPERTIES: &[u8] = &[
    0x3D,                               // 3.3.1 PUBLISH, DUP 1, QoS 2, RETAIN 1
    0x3A,                               // remaining length 58
    0x00, 0x03, b's', b'/', b't',       // 3.3.2.1 topic name "s/t"
    0x00, 0x07,                         // 3.3.2.2 packet identifier 7
    0x30,                               // 3.3.2.3.1 property length 48
    0x01, 0x01,                         // 3.3.2.3.2 payload format indicator 1
    0x02, 0x00, 0x00, 0x00, 0x3C,       // 3.3.2.3.3 message expiry interval 60
    0x23, 0x00, 0x02,                   // 3.3.2.3.4 topic alias 2
    0x08, 0x00, 0x03, b'r', b'/', b's', // 3.3.2.3.5 response topic "r/s"
    0x09, 0x00, 0x03, 0xAA, 0xBB, 0xCC, // 3.3.2.3.6 correlation data
    0x26, 0x00, 0x01, b'n', 0x00, 0x01, b'1', // 3.3.2.3.7 user property n=1
    0x26, 0x00, 0x01, b'n', 0x00, 0x01, b'2', // 3.3.2.3.7 user property n=2 (same name, kept in order)
    0x0B, 0x05,                         // 3.3.2.3.8 subscription identifier 5
    0x0B, 0x80, 0x01,                   // 3.3.2.3.8 subscription identifier 128 (two-byte VBI)
    0x03, 0x00, 0x04, b'j', b's', b'o', b'n', // 3.3.2.3.9 content type "json"
    b'{', b'}',                         // 3.3.3 payload
];

#[test]
fn v5_publish_with_every_publish_property() {
    let users = [user("n", "1"), user("n", "2")];
    let ids = [sub_id(5), sub_id(128)];
    let expected = Packet::Publish(Publish {
        dup: true,
        qos_pid: QosPid::ExactlyOnce(pid(7)),
        retain: true,
        topic: "s/t",
        properties: PublishProperties {
            payload_format_indicator: Some(true),
            message_expiry_interval: Some(60),
            topic_alias: Some(pid(2)),
            response_topic: Some("r/s"),
            correlation_data: Some(&[0xAA, 0xBB, 0xCC]),
            user_properties: Repeated::from_slice(&users),
            subscription_identifiers: Repeated::from_slice(&ids),
            content_type: Some("json"),
        },
        payload: b"{}",
    });
    assert_round_trip(V5, V5_PUBLISH_ALL_PROPERTIES, &expected);

    // The decoded lists iterate in wire order.
    let Ok(Packet::Publish(decoded)) = decode_packet(V5_PUBLISH_ALL_PROPERTIES, V5) else {
        panic!("not a PUBLISH");
    };
    let names: Vec<_> = decoded
        .properties
        .user_properties
        .iter()
        .map(|property| property.value)
        .collect();
    assert_eq!(names, ["1", "2"]);
    let ids: Vec<_> = decoded
        .properties
        .subscription_identifiers
        .iter()
        .map(SubscriptionId::get)
        .collect();
    assert_eq!(ids, [5, 128]);
    assert_eq!(decoded.properties.user_properties.len(), 2);
}

#[test]
fn v5_publish_properties_in_another_order_decode_the_same() {
    // §2.2.2.2: no significance in the order of properties with different identifiers; user
    // properties interleaved with others keep their relative order.
    #[rustfmt::skip]
    let bytes = [
        0x3D, 0x3A,
        0x00, 0x03, b's', b'/', b't',
        0x00, 0x07,
        0x30,
        0x26, 0x00, 0x01, b'n', 0x00, 0x01, b'1', // user property n=1
        0x03, 0x00, 0x04, b'j', b's', b'o', b'n', // content type
        0x0B, 0x05,                               // subscription identifier 5
        0x23, 0x00, 0x02,                         // topic alias
        0x26, 0x00, 0x01, b'n', 0x00, 0x01, b'2', // user property n=2
        0x09, 0x00, 0x03, 0xAA, 0xBB, 0xCC,       // correlation data
        0x0B, 0x80, 0x01,                         // subscription identifier 128
        0x08, 0x00, 0x03, b'r', b'/', b's',       // response topic
        0x02, 0x00, 0x00, 0x00, 0x3C,             // message expiry interval
        0x01, 0x01,                               // payload format indicator
        b'{', b'}',
    ];
    let canonical = decode_packet(V5_PUBLISH_ALL_PROPERTIES, V5).unwrap();
    assert_decodes(V5, &bytes, &canonical);
    // Re-encoding writes the canonical order.
    assert_encodes(
        V5,
        &decode_packet(&bytes, V5).unwrap(),
        V5_PUBLISH_ALL_PROPERTIES,
    );
}

#[test]
fn v5_publish_properties_are_dropped_for_v311() {
    let publish = decode_packet(V5_PUBLISH_ALL_PROPERTIES, V5).unwrap();
    #[rustfmt::skip]
    let v311 = [
        0x3D, 0x09,                         // DUP 1, QoS 2, RETAIN 1; remaining length 9
        0x00, 0x03, b's', b'/', b't',       // topic name
        0x00, 0x07,                         // packet identifier
        b'{', b'}',                         // payload (no property length in 3.1.1)
    ];
    assert_encodes(V311, &publish, &v311);
}

#[test]
fn v5_publish_with_topic_alias_and_empty_topic() {
    #[rustfmt::skip]
    let bytes = [
        0x30, 0x07,             // PUBLISH QoS 0, remaining length 7
        0x00, 0x00,             // 3.3.2.1 zero-length topic name, allowed with a topic alias
        0x03,                   // 3.3.2.3.1 property length 3
        0x23, 0x00, 0x01,       // 3.3.2.3.4 topic alias 1
        b'x',                   // payload
    ];
    let expected = Packet::Publish(Publish {
        dup: false,
        qos_pid: QosPid::AtMostOnce,
        retain: false,
        topic: "",
        properties: PublishProperties {
            topic_alias: Some(pid(1)),
            ..PublishProperties::default()
        },
        payload: b"x",
    });
    assert_round_trip(V5, &bytes, &expected);
}

#[test]
fn v5_publish_encode_header_then_payload_equals_encode() {
    let publish = match decode_packet(V5_PUBLISH_ALL_PROPERTIES, V5).unwrap() {
        Packet::Publish(publish) => publish,
        other => panic!("{other:?}"),
    };
    let mut header = [0u8; 64];
    let header_len = publish.encode_header(V5, &mut header).unwrap();
    assert_eq!(header_len, V5_PUBLISH_ALL_PROPERTIES.len() - 2);
    assert_eq!(
        &header[..header_len],
        &V5_PUBLISH_ALL_PROPERTIES[..header_len]
    );
    let mut short = [0u8; 10];
    assert_eq!(
        publish.encode_header(V5, &mut short),
        Err(EncodeError::BufferTooSmall { needed: header_len })
    );
    assert_eq!(short, [0u8; 10]);
}

#[test]
fn v5_puback_short_forms() {
    // 3.4.2.1: reason code and property length omitted for success without properties.
    let canonical = [0x40, 0x02, 0x00, 0x01];
    let expected = Packet::PubAck(Ack::success(pid(1)));
    assert_round_trip(V5, &canonical, &expected);
    // Non-canonical but valid: explicit reason 0x00, then also an explicit property length 0.
    assert_decodes(V5, &[0x40, 0x03, 0x00, 0x01, 0x00], &expected);
    assert_decodes(V5, &[0x40, 0x04, 0x00, 0x01, 0x00, 0x00], &expected);

    // 3.4.2.2.1: "If the Remaining Length is less than 4 there is no Property Length".
    let no_subscribers = [
        0x40, 0x03, // PUBACK, remaining length 3
        0x00, 0x01, // 3.4.2 packet identifier
        0x10, // 3.4.2.1 No matching subscribers
    ];
    let expected = Packet::PubAck(Ack {
        packet_id: pid(1),
        reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
        properties: AckProperties::default(),
    });
    assert_round_trip(V5, &no_subscribers, &expected);
    assert_decodes(V5, &[0x40, 0x04, 0x00, 0x01, 0x10, 0x00], &expected);
}

#[test]
fn v5_puback_with_reason_string_and_user_property() {
    #[rustfmt::skip]
    let bytes = [
        0x40, 0x12,                         // PUBACK, remaining length 18
        0x00, 0x01,                         // 3.4.2 packet identifier 1
        0x87,                               // 3.4.2.1 Not authorized
        0x0E,                               // 3.4.2.2.1 property length 14
        0x1F, 0x00, 0x04, b'd', b'e', b'n', b'y', // 3.4.2.2.2 reason string "deny"
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // 3.4.2.2.3 user property k=v
    ];
    let users = [user("k", "v")];
    let expected = Packet::PubAck(Ack {
        packet_id: pid(1),
        reason: ReasonCode::NOT_AUTHORIZED,
        properties: AckProperties {
            reason_string: Some("deny"),
            user_properties: Repeated::from_slice(&users),
        },
    });
    assert_round_trip(V5, &bytes, &expected);
}

#[test]
fn v5_pubrec_pubrel_pubcomp() {
    // 3.5 PUBREC with reason 0x10, 3.6 PUBREL with 0x92, 3.7 PUBCOMP canonical success.
    let pubrec = [0x50, 0x03, 0x00, 0x02, 0x10];
    let pubrel = [0x62, 0x03, 0x00, 0x03, 0x92];
    let pubcomp = [0x70, 0x02, 0x00, 0x04];
    let ack = |id, reason| Ack {
        packet_id: pid(id),
        reason,
        properties: AckProperties::default(),
    };
    assert_round_trip(
        V5,
        &pubrec,
        &Packet::PubRec(ack(2, ReasonCode::NO_MATCHING_SUBSCRIBERS)),
    );
    assert_round_trip(
        V5,
        &pubrel,
        &Packet::PubRel(ack(3, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)),
    );
    assert_round_trip(V5, &pubcomp, &Packet::PubComp(Ack::success(pid(4))));
    assert_decodes(
        V5,
        &[0x62, 0x04, 0x00, 0x05, 0x00, 0x00],
        &Packet::PubRel(Ack::success(pid(5))),
    );

    #[rustfmt::skip]
    let pubcomp_with_reason_string = [
        0x70, 0x09,                         // PUBCOMP, remaining length 9
        0x00, 0x04,                         // 3.7.2 packet identifier 4
        0x92,                               // 3.7.2.1 Packet Identifier not found
        0x05,                               // 3.7.2.2.1 property length 5
        0x1F, 0x00, 0x02, b'n', b'f',       // 3.7.2.2.2 reason string "nf"
    ];
    let expected = Packet::PubComp(Ack {
        packet_id: pid(4),
        reason: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
        properties: AckProperties {
            reason_string: Some("nf"),
            user_properties: Repeated::default(),
        },
    });
    assert_round_trip(V5, &pubcomp_with_reason_string, &expected);
}

// ---------------------------------------------------------------------------------------------
// MQTT 5.0 SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK
// ---------------------------------------------------------------------------------------------

#[test]
fn v5_subscribe_with_properties_options_and_shared_filter() {
    #[rustfmt::skip]
    let bytes = [
        0x82, 0x22,                         // 3.8.1 SUBSCRIBE, remaining length 34
        0x00, 0x0A,                         // 3.8.2 packet identifier 10
        0x0A,                               // 3.8.2.1.1 property length 10
        0x0B, 0x81, 0x01,                   // 3.8.2.1.2 subscription identifier 129
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b', // 3.8.2.1.3 user property a=b
        0x00, 0x03, b'a', b'/', b'b',       // 3.8.3 topic filter "a/b"
        0x2D,                               // 3.8.3.1 QoS 1, no local, retain as published, retain handling 2
        0x00, 0x0C, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', b'x', b'/', b'#',
                                            // 4.8.2 shared subscription "$share/g/x/#"
        0x12,                               // 3.8.3.1 QoS 2, retain handling 1
    ];
    let users = [user("a", "b")];
    let subscriptions = [
        Subscription {
            filter: "a/b",
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        },
        Subscription {
            filter: "$share/g/x/#",
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: RetainHandling::SendIfNew,
            },
        },
    ];
    let expected = Packet::Subscribe(Subscribe {
        packet_id: pid(10),
        properties: SubscribeProperties {
            subscription_identifier: Some(sub_id(129)),
            user_properties: Repeated::from_slice(&users),
        },
        subscriptions: Repeated::from_slice(&subscriptions),
    });
    assert_round_trip(V5, &bytes, &expected);

    // For a 3.1.1 peer only the QoS bits of the options and no properties are written.
    #[rustfmt::skip]
    let v311 = [
        0x82, 0x17,
        0x00, 0x0A,
        0x00, 0x03, b'a', b'/', b'b', 0x01,
        0x00, 0x0C, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', b'x', b'/', b'#', 0x02,
    ];
    assert_encodes(V311, &expected, &v311);
}

#[test]
fn v5_suback_with_reason_string() {
    #[rustfmt::skip]
    let bytes = [
        0x90, 0x0C,                         // 3.9.1 SUBACK, remaining length 12
        0x00, 0x0A,                         // 3.9.2 packet identifier 10
        0x05,                               // 3.9.2.1.1 property length 5
        0x1F, 0x00, 0x02, b'h', b'i',       // 3.9.2.1.2 reason string "hi"
        0x01,                               // 3.9.3 Granted QoS 1
        0x02,                               // Granted QoS 2
        0x87,                               // Not authorized
        0xA2,                               // Wildcard Subscriptions not supported
    ];
    let codes = [
        ReasonCode::GRANTED_QOS_1,
        ReasonCode::GRANTED_QOS_2,
        ReasonCode::NOT_AUTHORIZED,
        ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
    ];
    let expected = Packet::SubAck(SubAck {
        packet_id: pid(10),
        properties: AckProperties {
            reason_string: Some("hi"),
            user_properties: Repeated::default(),
        },
        reason_codes: Repeated::from_slice(&codes),
    });
    assert_round_trip(V5, &bytes, &expected);
    assert_encodes(
        V311,
        &expected,
        &[0x90, 0x06, 0x00, 0x0A, 0x01, 0x02, 0x80, 0x80],
    );
}

#[test]
fn v5_unsubscribe_with_user_property() {
    #[rustfmt::skip]
    let bytes = [
        0xA2, 0x12,                         // 3.10.1 UNSUBSCRIBE, remaining length 18
        0x00, 0x0B,                         // 3.10.2 packet identifier 11
        0x07,                               // 3.10.2.1.1 property length 7
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // 3.10.2.1.2 user property k=v
        0x00, 0x03, b'a', b'/', b'b',       // 3.10.3 topic filter "a/b"
        0x00, 0x01, b'#',                   // topic filter "#"
    ];
    let users = [user("k", "v")];
    let filters = ["a/b", "#"];
    let expected = Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(11),
        properties: UnsubscribeProperties {
            user_properties: Repeated::from_slice(&users),
        },
        filters: Repeated::from_slice(&filters),
    });
    assert_round_trip(V5, &bytes, &expected);
}

#[test]
fn v5_unsuback() {
    #[rustfmt::skip]
    let bytes = [
        0xB0, 0x0A,                         // 3.11.1 UNSUBACK, remaining length 10
        0x00, 0x0B,                         // 3.11.2 packet identifier 11
        0x05,                               // 3.11.2.1.1 property length 5
        0x1F, 0x00, 0x02, b'n', b'o',       // 3.11.2.1.2 reason string "no"
        0x00,                               // 3.11.3 Success
        0x11,                               // No subscription existed
    ];
    let codes = [ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED];
    let expected = Packet::UnsubAck(UnsubAck {
        packet_id: pid(11),
        properties: AckProperties {
            reason_string: Some("no"),
            user_properties: Repeated::default(),
        },
        reason_codes: Repeated::from_slice(&codes),
    });
    assert_round_trip(V5, &bytes, &expected);

    let minimal = [0xB0, 0x04, 0x00, 0x01, 0x00, 0x87];
    let codes = [ReasonCode::NOT_AUTHORIZED];
    let expected = Packet::UnsubAck(UnsubAck {
        packet_id: pid(1),
        properties: AckProperties::default(),
        reason_codes: Repeated::from_slice(&codes),
    });
    assert_round_trip(V5, &minimal, &expected);
}

// ---------------------------------------------------------------------------------------------
// MQTT 5.0 DISCONNECT and AUTH
// ---------------------------------------------------------------------------------------------

#[test]
fn v5_disconnect_short_forms() {
    // 3.14.2.1: remaining length 0 means Normal disconnection without properties.
    let expected = Packet::Disconnect(Disconnect::default());
    assert_round_trip(V5, &[0xE0, 0x00], &expected);
    assert_decodes(V5, &[0xE0, 0x01, 0x00], &expected);
    assert_decodes(V5, &[0xE0, 0x02, 0x00, 0x00], &expected);
    // 3.14.2.2.1: remaining length 1, no property length.
    assert_round_trip(
        V5,
        &[0xE0, 0x01, 0x04],
        &Packet::Disconnect(Disconnect::with_reason(
            ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        )),
    );
}

#[test]
fn v5_disconnect_with_reason_and_every_disconnect_property() {
    #[rustfmt::skip]
    let bytes = [
        0xE0, 0x1B,                         // 3.14.1 DISCONNECT, remaining length 27
        0x9C,                               // 3.14.2.1 Use another server
        0x19,                               // 3.14.2.2.1 property length 25
        0x11, 0x00, 0x00, 0x00, 0x00,       // 3.14.2.2.2 session expiry interval 0
        0x1F, 0x00, 0x04, b'b', b'y', b'e', b'!', // 3.14.2.2.3 reason string "bye!"
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // 3.14.2.2.4 user property k=v
        0x1C, 0x00, 0x03, b'a', b'l', b't', // 3.14.2.2.5 server reference "alt"
    ];
    let users = [user("k", "v")];
    let expected = Packet::Disconnect(Disconnect {
        reason: ReasonCode::USE_ANOTHER_SERVER,
        properties: DisconnectProperties {
            session_expiry_interval: Some(0),
            reason_string: Some("bye!"),
            user_properties: Repeated::from_slice(&users),
            server_reference: Some("alt"),
        },
    });
    assert_round_trip(V5, &bytes, &expected);
}

#[test]
fn v5_auth_short_and_full_forms() {
    // 3.15.2.1: reason code and property length omitted for success without properties.
    let expected = Packet::Auth(Auth::default());
    assert_round_trip(V5, &[0xF0, 0x00], &expected);
    // With a reason code the Authentication Method is required (§3.15.2.2.2).
    assert_eq!(
        decode_packet(&[0xF0, 0x02, 0x00, 0x00], V5),
        Err(DecodeError::AuthWithoutMethod)
    );

    // Success with the method, for a completed re-authentication (4.12.1).
    #[rustfmt::skip]
    let success_with_method = [
        0xF0, 0x06,                         // 3.15.1 AUTH, remaining length 6
        0x00,                               // 3.15.2.1 Success
        0x04,                               // 3.15.2.2.1 property length 4
        0x15, 0x00, 0x01, b'm',             // 3.15.2.2.2 authentication method "m"
    ];
    let expected = Packet::Auth(Auth {
        reason: ReasonCode::SUCCESS,
        properties: AuthProperties {
            authentication_method: Some("m"),
            ..AuthProperties::default()
        },
    });
    assert_round_trip(V5, &success_with_method, &expected);

    #[rustfmt::skip]
    let bytes = [
        0xF0, 0x1B,                         // 3.15.1 AUTH, remaining length 27
        0x18,                               // 3.15.2.1 Continue authentication
        0x19,                               // 3.15.2.2.1 property length 25
        0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M', // 3.15.2.2.2 authentication method "SCRAM"
        0x16, 0x00, 0x03, 0x01, 0x02, 0x03, // 3.15.2.2.3 authentication data
        0x1F, 0x00, 0x01, b'r',             // 3.15.2.2.4 reason string "r"
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // 3.15.2.2.5 user property k=v
    ];
    let users = [user("k", "v")];
    let expected = Packet::Auth(Auth {
        reason: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: AuthProperties {
            authentication_method: Some("SCRAM"),
            authentication_data: Some(&[1, 2, 3]),
            reason_string: Some("r"),
            user_properties: Repeated::from_slice(&users),
        },
    });
    assert_round_trip(V5, &bytes, &expected);
    assert_eq!(
        expected.encode(V311, &mut [0u8; 64]),
        Err(EncodeError::NotInVersion)
    );
}

#[test]
fn v5_auth_never_encodes_a_reason_code_without_property_length() {
    // §3.15.2.1 allows omitting the reason code and the property length only together.
    let auth = Packet::Auth(Auth {
        reason: ReasonCode::RE_AUTHENTICATE,
        properties: AuthProperties {
            authentication_method: Some("m"),
            ..AuthProperties::default()
        },
    });
    assert_encodes(V5, &auth, &[0xF0, 0x06, 0x19, 0x04, 0x15, 0x00, 0x01, b'm']);
    // Without a method it cannot be emitted: the receiver would have to refuse it.
    let no_method = Packet::Auth(Auth {
        reason: ReasonCode::RE_AUTHENTICATE,
        properties: AuthProperties::default(),
    });
    assert_eq!(
        no_method.encoded_len(V5),
        Err(EncodeError::MissingAuthMethod)
    );
}

// ---------------------------------------------------------------------------------------------
// Encoder contract
// ---------------------------------------------------------------------------------------------

#[test]
fn encode_into_a_too_small_buffer_writes_nothing() {
    for (version, bytes) in [
        (V5, V5_CONNECT_ALL_PROPERTIES),
        (V5, V5_CONNACK_ALL_PROPERTIES),
        (V5, V5_PUBLISH_ALL_PROPERTIES),
        (V311, V311_CONNECT_FULL),
        (V3_1, V31_CONNECT),
    ] {
        let packet = decode_packet(bytes, version).unwrap();
        for size in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            let mut buf = vec![0x5A; size];
            assert_eq!(
                packet.encode(version, &mut buf),
                Err(EncodeError::BufferTooSmall {
                    needed: bytes.len()
                })
            );
            assert!(
                buf.iter().all(|&byte| byte == 0x5A),
                "wrote into {size} bytes"
            );
        }
        let mut exact = vec![0; bytes.len()];
        assert_eq!(packet.encode(version, &mut exact), Ok(bytes.len()));
        assert_eq!(exact, bytes);
    }
}

#[test]
fn encode_rejects_subscribe_and_unsubscribe_without_filters() {
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: SubscribeProperties::default(),
        subscriptions: Repeated::default(),
    });
    let unsubscribe = Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(1),
        properties: UnsubscribeProperties::default(),
        filters: Repeated::default(),
    });
    for version in [V311, V5] {
        assert_eq!(
            subscribe.encode(version, &mut [0; 16]),
            Err(EncodeError::NoTopicFilters)
        );
        assert_eq!(
            unsubscribe.encode(version, &mut [0; 16]),
            Err(EncodeError::NoTopicFilters)
        );
    }
}

#[test]
fn encode_never_sets_dup_on_qos0() {
    // [MQTT-3.3.1-2]
    let publish = Packet::Publish(Publish {
        dup: true,
        qos_pid: QosPid::AtMostOnce,
        retain: false,
        topic: "t",
        properties: PublishProperties::default(),
        payload: &[],
    });
    assert_encodes(V311, &publish, &[0x30, 0x03, 0x00, 0x01, b't']);
}

#[test]
fn encode_uses_a_multi_byte_remaining_length() {
    // 1.5.5: 203 = 0xCB 0x01.
    let payload = [0x55; 200];
    let publish = Packet::Publish(Publish {
        dup: false,
        qos_pid: QosPid::AtMostOnce,
        retain: false,
        topic: "t",
        properties: PublishProperties::default(),
        payload: &payload,
    });
    let bytes = big_publish();
    assert_round_trip(V311, &bytes, &publish);
}

// ---------------------------------------------------------------------------------------------
// Framing (§2.1.4 / §1.5.5 remaining length, 3.1.2.11.4 maximum packet size)
// ---------------------------------------------------------------------------------------------

/// A 3.1.1 QoS 0 PUBLISH of 206 bytes whose remaining length (203) takes two bytes.
fn big_publish() -> Vec<u8> {
    let mut bytes = vec![
        0x30, // PUBLISH QoS 0
        0xCB, 0x01, // remaining length 203
        0x00, 0x01, b't', // topic name "t"
    ];
    bytes.extend_from_slice(&[0x55; 200]);
    bytes
}

#[test]
fn frame_byte_by_byte() {
    let bytes = big_publish();
    assert_eq!(frame(&[], 1024), Ok(Frame::Incomplete { needed: 2 }));
    for end in 1..3 {
        // The remaining length is not complete yet: at least one more byte.
        assert_eq!(
            frame(&bytes[..end], 1024),
            Ok(Frame::Incomplete { needed: 1 })
        );
    }
    for end in 3..bytes.len() {
        // Header known: the exact count.
        assert_eq!(
            frame(&bytes[..end], 1024),
            Ok(Frame::Incomplete {
                needed: bytes.len() - end
            }),
            "after {end} bytes"
        );
        assert_eq!(
            decode(&bytes[..end], V5, 1024),
            Ok(Decoded::Incomplete {
                needed: bytes.len() - end
            })
        );
    }
    assert_eq!(
        frame(&bytes, 1024),
        Ok(Frame::Complete {
            header_len: 3,
            len: 206
        })
    );
    let mut stream = bytes.clone();
    stream.extend_from_slice(&[0xC0, 0x00, 0xD0]);
    assert_eq!(
        frame(&stream, 1024),
        Ok(Frame::Complete {
            header_len: 3,
            len: 206
        })
    );
    // Several packets in one buffer, one after the other.
    let Ok(Decoded::Packet { len, .. }) = decode(&stream, V311, 1024) else {
        panic!("first packet");
    };
    assert_eq!(
        decode(&stream[len..], V311, 1024),
        Ok(Decoded::Packet {
            packet: Packet::PingReq,
            len: 2
        })
    );
    assert_eq!(
        decode(&stream[len + 2..], V311, 1024),
        Ok(Decoded::Incomplete { needed: 1 })
    );
}

#[test]
fn frame_small_packets_byte_by_byte() {
    for bytes in [
        V311_CONNECT_FULL,
        V5_CONNECT_ALL_PROPERTIES,
        V5_CONNACK_ALL_PROPERTIES,
        V5_PUBLISH_ALL_PROPERTIES,
    ] {
        for end in 2..bytes.len() {
            assert_eq!(
                frame(&bytes[..end], MAX_PACKET_SIZE),
                Ok(Frame::Incomplete {
                    needed: bytes.len() - end
                })
            );
        }
        assert_eq!(
            frame(bytes, bytes.len()),
            Ok(Frame::Complete {
                header_len: 2,
                len: bytes.len()
            })
        );
    }
}

#[test]
fn packet_too_large_is_reported_from_the_header_alone() {
    let bytes = big_publish();
    let too_large = DecodeError::PacketTooLarge {
        size: 206,
        max: 205,
    };
    // Only the three header bytes have arrived.
    assert_eq!(frame(&bytes[..3], 205), Err(too_large));
    assert_eq!(decode(&bytes[..3], V5, 205), Err(too_large));
    assert_eq!(frame(&bytes, 205), Err(too_large));
    // The limit counts the whole packet, fixed header included: 206 fits.
    assert_eq!(
        frame(&bytes, 206),
        Ok(Frame::Complete {
            header_len: 3,
            len: 206
        })
    );
    // The largest remaining length MQTT can express, against the default limit.
    assert_eq!(
        frame(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], MAX_PACKET_SIZE),
        Ok(Frame::Incomplete {
            needed: MAX_PACKET_SIZE - 5
        })
    );
    assert_eq!(
        frame(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], 1 << 20),
        Err(DecodeError::PacketTooLarge {
            size: MAX_PACKET_SIZE,
            max: 1 << 20
        })
    );
    assert_eq!(
        DecodeError::PacketTooLarge { size: 1, max: 0 }.reason_code(),
        ReasonCode::PACKET_TOO_LARGE
    );
}

#[test]
fn packets_the_decoder_would_refuse_are_not_encoded() {
    // An empty topic stands only for an MQTT 5 topic alias (§3.3.2.1, [MQTT-4.7.3-1]).
    let publish = Publish {
        dup: false,
        qos_pid: QosPid::AtMostOnce,
        retain: false,
        topic: "",
        properties: PublishProperties::default(),
        payload: b"x",
    };
    for version in [V311, V5] {
        assert_eq!(
            Packet::Publish(publish).encoded_len(version),
            Err(EncodeError::EmptyTopic)
        );
    }
    // One reason code per topic filter: an empty list is not a SUBACK/UNSUBACK (§3.9.3, §3.11.3).
    let id = core::num::NonZeroU16::new(1).unwrap();
    let suback = Packet::SubAck(SubAck {
        packet_id: id,
        properties: AckProperties::default(),
        reason_codes: Repeated::default(),
    });
    assert_eq!(suback.encoded_len(V5), Err(EncodeError::NoReasonCodes));
    let unsuback = Packet::UnsubAck(UnsubAck {
        packet_id: id,
        properties: AckProperties::default(),
        reason_codes: Repeated::default(),
    });
    assert_eq!(unsuback.encoded_len(V5), Err(EncodeError::NoReasonCodes));
    // A 3.1.1 UNSUBACK has no reason codes at all.
    assert_eq!(unsuback.encoded_len(V311), Ok(4));
}
