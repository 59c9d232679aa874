//! Property tests of the codec: any valid packet survives encode then decode unchanged, in both
//! protocol versions, and anything the decoder accepts re-encodes to bytes that decode to the
//! same packet.

use core::num::{NonZeroU16, NonZeroU32};

use femtomq_core::codec::*;
use femtomq_core::{ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};
use proptest::prelude::*;

/// Owned material from which one packet of every type can be built, borrowing from it.
#[derive(Debug, Clone)]
struct Material {
    kind: u8,
    version: ProtocolVersion,
    packet_id: u16,
    flags: [bool; 8],
    numbers: [u32; 6],
    qos: [u8; 2],
    text: Vec<String>,
    topic: String,
    filters: Vec<(String, SubscriptionOptions)>,
    users: Vec<(String, String)>,
    subscription_ids: Vec<u32>,
    payload: Vec<u8>,
    reason: u8,
    codes: Vec<u8>,
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(ProtocolVersion::V3_1_1), Just(ProtocolVersion::V5)]
}

/// UTF-8 strings without U+0000, including multi-byte characters.
fn text() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}

fn topic_name() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-zA-Z0-9 $é€😀_-]{0,6}", 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("non-empty", |topic| !topic.is_empty())
}

fn topic_filter() -> impl Strategy<Value = String> {
    let level = prop_oneof![Just("+".to_string()), "[a-z0-9é]{0,5}"];
    (
        prop::option::of("[a-z]{1,4}"),
        prop::collection::vec(level, 1..5),
        any::<bool>(),
    )
        .prop_map(|(group, levels, multi)| {
            let mut filter = levels.join("/");
            if multi {
                filter.push_str(if filter.is_empty() { "#" } else { "/#" });
            }
            if filter.is_empty() {
                filter.push('x');
            }
            match group {
                Some(group) => format!("$share/{group}/{filter}"),
                None => filter,
            }
        })
}

fn options() -> impl Strategy<Value = SubscriptionOptions> {
    (0u8..3, any::<bool>(), any::<bool>(), 0u8..3).prop_map(|(qos, no_local, rap, rh)| {
        SubscriptionOptions {
            qos: QoS::from_u8(qos).unwrap(),
            no_local,
            retain_as_published: rap,
            retain_handling: match rh {
                0 => RetainHandling::SendOnSubscribe,
                1 => RetainHandling::SendIfNew,
                _ => RetainHandling::DoNotSend,
            },
        }
    })
}

prop_compose! {
    fn material()(
        kind in 1u8..=15,
        version in version(),
        packet_id in 1u16..,
        flags in any::<[bool; 8]>(),
        numbers in any::<[u32; 6]>(),
        qos in any::<[u8; 2]>(),
        text in prop::collection::vec(text(), 8),
        topic in topic_name(),
        filters in prop::collection::vec((topic_filter(), options()), 1..4),
        users in prop::collection::vec((text(), text()), 0..4),
        subscription_ids in prop::collection::vec(1u32..=268_435_455, 0..3),
        payload in prop::collection::vec(any::<u8>(), 0..64),
        reason in any::<u8>(),
        codes in prop::collection::vec(any::<u8>(), 1..4),
    ) -> Material {
        Material { kind, version, packet_id, flags, numbers, qos, text, topic, filters, users, subscription_ids, payload, reason, codes }
    }
}

/// Picks an allowed reason code for `kind` from a random byte.
fn allowed_reason(kind: PacketType, byte: u8) -> ReasonCode {
    let allowed: Vec<u8> = (0..=255u8)
        .filter(|&c| ReasonCode(c).is_allowed_in(kind))
        .collect();
    ReasonCode(allowed[usize::from(byte) % allowed.len()])
}

/// Optional field helper: present when the flag says so.
fn opt<T>(present: bool, value: T) -> Option<T> {
    present.then_some(value)
}

/// Everything borrowed lists need, built once from the material.
struct Lists<'a> {
    users: Vec<UserProperty<'a>>,
    subscriptions: Vec<Subscription<'a>>,
    filters: Vec<&'a str>,
    subscription_ids: Vec<SubscriptionId>,
    codes: Vec<ReasonCode>,
}

fn lists(m: &Material) -> Lists<'_> {
    let v5 = m.version.is_v5();
    let kind = if m.kind == 9 {
        PacketType::SubAck
    } else {
        PacketType::UnsubAck
    };
    Lists {
        users: m
            .users
            .iter()
            .map(|(name, value)| UserProperty { name, value })
            .collect(),
        subscriptions: m
            .filters
            .iter()
            .map(|(filter, options)| {
                let mut options = *options;
                if !v5 {
                    options = SubscriptionOptions::with_qos(options.qos);
                }
                if filter.starts_with("$share/") {
                    options.no_local = false;
                }
                Subscription { filter, options }
            })
            .collect(),
        filters: m
            .filters
            .iter()
            .map(|(filter, _)| filter.as_str())
            .collect(),
        subscription_ids: m
            .subscription_ids
            .iter()
            .map(|&id| SubscriptionId::new(id).unwrap())
            .collect(),
        codes: m
            .codes
            .iter()
            .map(|&byte| {
                if v5 {
                    allowed_reason(kind, byte)
                } else {
                    ReasonCode([0x00, 0x01, 0x02, 0x80][usize::from(byte % 4)])
                }
            })
            .collect(),
    }
}

/// Builds the packet the material describes, valid for its version (no properties in 3.1.1).
fn build<'a>(m: &'a Material, l: &'a Lists<'a>) -> Packet<'a> {
    let v5 = m.version.is_v5();
    let f = m.flags;
    let n = m.numbers;
    let t = |i: usize| m.text[i].as_str();
    let users = if v5 {
        Repeated::from_slice(&l.users[..])
    } else {
        Repeated::default()
    };
    let pid = NonZeroU16::new(m.packet_id).unwrap();
    let ack_properties = AckProperties {
        reason_string: opt(v5 && f[0], t(0)),
        user_properties: users,
    };
    let ack = |kind| Ack {
        packet_id: pid,
        reason: if v5 {
            allowed_reason(kind, m.reason)
        } else {
            ReasonCode::SUCCESS
        },
        properties: ack_properties,
    };
    match m.kind {
        1 => {
            let will = f[1].then(|| Will {
                properties: if v5 {
                    WillProperties {
                        will_delay_interval: opt(f[2], n[0]),
                        payload_format_indicator: opt(f[3], f[4]),
                        message_expiry_interval: opt(f[5], n[1]),
                        content_type: opt(f[6], t(1)),
                        response_topic: opt(f[7], m.topic.as_str()),
                        correlation_data: opt(f[0], &m.payload[..]),
                        user_properties: users,
                    }
                } else {
                    WillProperties::default()
                },
                topic: &m.topic,
                payload: &m.payload,
                qos: QoS::from_u8(m.qos[0] % 3).unwrap(),
                retain: f[3],
            });
            let username = opt(f[4] || (!v5 && f[5]), t(2));
            Packet::Connect(Connect {
                version: m.version,
                clean_start: f[0],
                keep_alive: n[2] as u16,
                properties: if v5 {
                    ConnectProperties {
                        session_expiry_interval: opt(f[1], n[0]),
                        receive_maximum: NonZeroU16::new(n[1] as u16),
                        maximum_packet_size: NonZeroU32::new(n[2]),
                        topic_alias_maximum: opt(f[2], n[3] as u16),
                        request_response_information: opt(f[3], f[4]),
                        request_problem_information: opt(f[5], f[6]),
                        user_properties: users,
                        authentication_method: opt(f[7], t(3)),
                        authentication_data: opt(f[7] && f[0], &m.payload[..]),
                    }
                } else {
                    ConnectProperties::default()
                },
                client_id: t(4),
                will,
                username,
                password: opt(f[5], t(5).as_bytes()),
            })
        }
        2 => {
            let reason = if v5 {
                allowed_reason(PacketType::ConnAck, m.reason)
            } else {
                ReasonCode::from_v3_connack(m.reason % 6).unwrap()
            };
            Packet::ConnAck(ConnAck {
                session_present: f[0] && !reason.is_error(),
                reason,
                properties: if v5 {
                    ConnAckProperties {
                        session_expiry_interval: opt(f[1], n[0]),
                        receive_maximum: NonZeroU16::new(n[1] as u16),
                        maximum_qos: opt(
                            f[2],
                            if f[3] {
                                QoS::AtLeastOnce
                            } else {
                                QoS::AtMostOnce
                            },
                        ),
                        retain_available: opt(f[4], f[5]),
                        maximum_packet_size: NonZeroU32::new(n[2]),
                        assigned_client_identifier: opt(f[6], t(0)),
                        topic_alias_maximum: opt(f[7], n[3] as u16),
                        reason_string: opt(f[1] && f[2], t(1)),
                        user_properties: users,
                        wildcard_subscription_available: opt(f[3] && f[4], f[0]),
                        subscription_identifiers_available: opt(f[5] && f[6], f[1]),
                        shared_subscription_available: opt(f[7] && f[0], f[2]),
                        server_keep_alive: opt(f[1] && f[3], n[4] as u16),
                        response_information: opt(f[2] && f[4], t(2)),
                        server_reference: opt(f[3] && f[5], t(3)),
                        authentication_method: opt(f[4] && f[6], t(4)),
                        authentication_data: opt(f[5] && f[7], &m.payload[..]),
                    }
                } else {
                    ConnAckProperties::default()
                },
            })
        }
        3 => {
            let qos_pid = match m.qos[0] % 3 {
                0 => QosPid::AtMostOnce,
                1 => QosPid::AtLeastOnce(pid),
                _ => QosPid::ExactlyOnce(pid),
            };
            let alias = if v5 {
                NonZeroU16::new(n[0] as u16)
            } else {
                None
            };
            Packet::Publish(Publish {
                dup: f[0] && qos_pid != QosPid::AtMostOnce,
                qos_pid,
                retain: f[1],
                // MQTT 5 may send an empty topic when an alias stands for it.
                topic: if alias.is_some() && f[2] {
                    ""
                } else {
                    &m.topic
                },
                properties: if v5 {
                    PublishProperties {
                        payload_format_indicator: opt(f[3], f[4]),
                        message_expiry_interval: opt(f[5], n[1]),
                        topic_alias: alias,
                        response_topic: opt(f[6], m.topic.as_str()),
                        correlation_data: opt(f[7], &m.payload[..]),
                        user_properties: users,
                        subscription_identifiers: Repeated::from_slice(&l.subscription_ids[..]),
                        content_type: opt(f[3] && f[5], t(0)),
                    }
                } else {
                    PublishProperties::default()
                },
                payload: &m.payload,
            })
        }
        4 => Packet::PubAck(ack(PacketType::PubAck)),
        5 => Packet::PubRec(ack(PacketType::PubRec)),
        6 => Packet::PubRel(ack(PacketType::PubRel)),
        7 => Packet::PubComp(ack(PacketType::PubComp)),
        8 => Packet::Subscribe(Subscribe {
            packet_id: pid,
            properties: SubscribeProperties {
                subscription_identifier: if v5 {
                    l.subscription_ids.first().copied()
                } else {
                    None
                },
                user_properties: users,
            },
            subscriptions: Repeated::from_slice(&l.subscriptions[..]),
        }),
        9 => Packet::SubAck(SubAck {
            packet_id: pid,
            properties: ack_properties,
            reason_codes: Repeated::from_slice(&l.codes[..]),
        }),
        10 => Packet::Unsubscribe(Unsubscribe {
            packet_id: pid,
            properties: UnsubscribeProperties {
                user_properties: users,
            },
            filters: Repeated::from_slice(&l.filters[..]),
        }),
        11 => Packet::UnsubAck(UnsubAck {
            packet_id: pid,
            properties: ack_properties,
            reason_codes: if v5 {
                Repeated::from_slice(&l.codes[..])
            } else {
                Repeated::default()
            },
        }),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => Packet::Disconnect(if v5 {
            Disconnect {
                reason: allowed_reason(PacketType::Disconnect, m.reason),
                properties: DisconnectProperties {
                    session_expiry_interval: opt(f[0], n[0]),
                    reason_string: opt(f[1], t(0)),
                    user_properties: users,
                    server_reference: opt(f[2], t(1)),
                },
            }
        } else {
            Disconnect::default()
        }),
        _ if v5 => Packet::Auth(Auth {
            reason: allowed_reason(PacketType::Auth, m.reason),
            properties: AuthProperties {
                // Every AUTH with a reason code or properties names its method (§3.15.2.2.2).
                authentication_method: Some(t(0)),
                authentication_data: opt(f[1], &m.payload[..]),
                reason_string: opt(f[2], t(1)),
                user_properties: users,
            },
        }),
        _ => Packet::PingReq,
    }
}

fn encode_to_vec(packet: &Packet<'_>, version: ProtocolVersion) -> Vec<u8> {
    let len = packet
        .encoded_len(version)
        .expect("valid packets have a size");
    let mut buf = vec![0u8; len];
    let written = packet
        .encode(version, &mut buf)
        .expect("valid packets encode");
    assert_eq!(written, len, "encoded_len must be exact");
    buf
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_valid_packet_round_trips(m in material()) {
        let l = lists(&m);
        let packet = build(&m, &l);
        let bytes = encode_to_vec(&packet, m.version);
        let decoded = decode_packet(&bytes, m.version);
        prop_assert_eq!(decoded, Ok(packet));
        // The streaming entry point agrees and consumes exactly the packet.
        let mut stream = bytes.clone();
        stream.extend_from_slice(&[0xC0, 0x00]);
        match decode(&stream, m.version, MAX_PACKET_SIZE) {
            Ok(Decoded::Packet { packet: streamed, len }) => {
                prop_assert_eq!(len, bytes.len());
                prop_assert_eq!(streamed, packet);
            }
            other => prop_assert!(false, "stream decode gave {:?}", other),
        }
        // Every strict prefix is incomplete, never an error or a wrong packet.
        for cut in 0..bytes.len() {
            let incomplete = matches!(frame(&bytes[..cut], MAX_PACKET_SIZE), Ok(Frame::Incomplete { .. }));
            prop_assert!(incomplete, "prefix of {} bytes was not incomplete", cut);
        }
    }

    #[test]
    fn publish_header_and_payload_equal_the_whole_packet(m in material()) {
        let mut m3 = m.clone();
        m3.kind = 3;
        let l3 = lists(&m3);
        if let Packet::Publish(publish) = build(&m3, &l3) {
            let whole = encode_to_vec(&Packet::Publish(publish), m3.version);
            let mut header = vec![0u8; whole.len()];
            let header_len = publish.encode_header(m3.version, &mut header).unwrap();
            header.truncate(header_len);
            header.extend_from_slice(publish.payload);
            prop_assert_eq!(header, whole);
        }
    }

    /// The broker's PUBLISH fast path decodes what `decode_packet` decodes, with the same
    /// errors, for valid packets, their corruptions and arbitrary bytes with PUBLISH's type.
    #[test]
    fn decode_publish_agrees_with_decode_packet(
        m in material(),
        flip in any::<(usize, u8)>(),
        flags in 0u8..16,
        body in prop::collection::vec(any::<u8>(), 0..48),
    ) {
        let mut m3 = m.clone();
        m3.kind = 3;
        let l3 = lists(&m3);
        let packet = build(&m3, &l3);
        let valid = encode_to_vec(&packet, m3.version);
        let mut corrupted = valid.clone();
        let at = flip.0 % corrupted.len();
        corrupted[at] ^= flip.1.max(1);
        let mut arbitrary = vec![0x30 | flags, body.len() as u8];
        arbitrary.extend_from_slice(&body);
        for bytes in [&valid, &corrupted, &arbitrary] {
            if !is_publish(bytes) {
                continue;
            }
            let expected = decode_packet(bytes, m3.version).map(|packet| match packet {
                Packet::Publish(publish) => publish,
                other => panic!("a PUBLISH decoded as {other:?}"),
            });
            prop_assert_eq!(decode_publish(bytes, m3.version), expected);
        }
    }

    /// Differential check on arbitrary bytes: the decoder never panics, and whatever it accepts
    /// it can encode again, to bytes that decode to the same packet.
    #[test]
    fn whatever_decodes_re_encodes_to_the_same_packet(
        first in any::<u8>(),
        body in prop::collection::vec(any::<u8>(), 0..48),
        version in prop_oneof![Just(ProtocolVersion::V3_1_1), Just(ProtocolVersion::V5)],
    ) {
        let mut bytes = vec![first, body.len() as u8];
        bytes.extend_from_slice(&body);
        if let Ok(packet) = decode_packet(&bytes, version) {
            let version = match packet { Packet::Connect(connect) => connect.version, _ => version };
            let again = encode_to_vec(&packet, version);
            prop_assert_eq!(decode_packet(&again, version), Ok(packet));
        }
    }
}
