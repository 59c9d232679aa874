//! MQTT 5 Request Problem Information and Reason Strings on failures, and the CONNACK a
//! malformed MQTT 5 CONNECT gets, through the simulation harness. Test names carry the
//! normative statement they check.

mod sim;

use sim::*;

/// Denies publishing and subscribing under `secret/`.
struct SecretAcl;

impl Authorizer for SecretAcl {
    fn authorize(&self, _client: &ClientInfo<'_>, access: Access, topic: &str) -> bool {
        access == Access::Receive || !topic.starts_with("secret/")
    }
}

fn acl_sim() -> Sim {
    let mut sim = Sim::default_v();
    sim.broker.set_authorizer(Box::new(SecretAcl));
    sim
}

/// The Reason String (and User Property count) of every packet `c` received since last asked.
fn reason_strings(sim: &mut Sim, c: Client) -> Vec<(Option<String>, usize)> {
    let version = sim.client(c).version;
    sim.take_raw(c)
        .iter()
        .map(|bytes| reason_string(bytes, version))
        .collect()
}

fn text(s: &str) -> (Option<String>, usize) {
    (Some(s.to_string()), 0)
}

const NONE: (Option<String>, usize) = (None, 0);

/// A refused QoS 1 and QoS 2 PUBLISH and a SUBSCRIBE with one refused filter of two.
fn failures(sim: &mut Sim, c: Client) {
    sim.publish(c, "secret/a", b"x", QoS::AtLeastOnce);
    sim.publish(c, "secret/b", b"x", QoS::ExactlyOnce);
    let codes = sim.subscribe_many(
        c,
        &[
            ("open/#", opts(QoS::AtLeastOnce)),
            ("secret/#", opts(QoS::AtLeastOnce)),
        ],
        None,
    );
    assert_eq!(
        codes,
        [ReasonCode::GRANTED_QOS_1, ReasonCode::NOT_AUTHORIZED]
    );
}

// ----- Reason Strings ---------------------------------------------------------------------------

#[test]
fn mqtt_3_4_2_2_v5_failed_puback_pubrec_and_suback_carry_a_reason_string() {
    let mut sim = acl_sim();
    let c = sim.connect(ConnectSpec::v5("a"));
    sim.take_raw(c);
    failures(&mut sim, c);
    assert_eq!(
        sim.take(c),
        [
            Rx::PubAck(1, ReasonCode::NOT_AUTHORIZED),
            Rx::PubRec(2, ReasonCode::NOT_AUTHORIZED),
        ]
    );
    assert_eq!(
        reason_strings(&mut sim, c),
        [
            text("Not authorized"),
            text("Not authorized"),
            text("Not authorized")
        ]
    );
}

#[test]
fn successful_acks_carry_no_reason_string() {
    let mut sim = acl_sim();
    let c = sim.connect(ConnectSpec::v5("a"));
    sim.subscribe(c, "open/#", QoS::AtLeastOnce);
    sim.publish(c, "open/a", b"x", QoS::AtLeastOnce);
    sim.publish(c, "open/b", b"x", QoS::ExactlyOnce);
    let rx = sim.take_raw(c);
    // CONNACK, SUBACK, PUBACK, PUBLISH, PUBREC, PUBLISH, PUBCOMP: nothing but CONNACK's
    // announcements.
    assert!(rx.len() >= 5, "{rx:02x?}");
    assert!(rx.iter().all(|bytes| reason_string(bytes, V5) == NONE));
}

#[test]
fn v5_puback_0x99_payload_format_invalid_carries_a_reason_string() {
    let mut sim = Sim::default_v();
    let c = sim.connect(ConnectSpec::v5("a"));
    sim.take_raw(c);
    let spec = PublishSpec {
        payload_format_indicator: Some(true),
        ..PublishSpec::new("t", &[0xff, 0xfe], QoS::AtLeastOnce)
    };
    let id = sim.publish_spec(c, &spec);
    assert_eq!(
        sim.take(c),
        [Rx::PubAck(id, ReasonCode::PAYLOAD_FORMAT_INVALID)]
    );
    assert_eq!(
        reason_strings(&mut sim, c),
        [text("Payload format invalid")]
    );
}

#[test]
fn mqtt_3_1_2_29_no_reason_string_when_request_problem_information_is_0() {
    let mut sim = acl_sim();
    let c = sim.connect(ConnectSpec::v5("a").request_problem_information(false));
    sim.take_raw(c);
    failures(&mut sim, c);
    assert_eq!(
        sim.take(c),
        [
            Rx::PubAck(1, ReasonCode::NOT_AUTHORIZED),
            Rx::PubRec(2, ReasonCode::NOT_AUTHORIZED),
        ]
    );
    assert_eq!(reason_strings(&mut sim, c), [NONE, NONE, NONE]);
    // DISCONNECT may still carry one `[MQTT-3.1.2-29]`.
    sim.send(c, Packet::PingResp);
    assert_eq!(sim.take(c), [Rx::Disconnect(ReasonCode::PROTOCOL_ERROR)]);
    assert_eq!(reason_strings(&mut sim, c), [text("Protocol Error")]);
    assert!(sim.is_closed(c));
}

#[test]
fn mqtt_3_1_2_29_connack_refusal_carries_a_reason_string_even_when_problem_information_is_0() {
    let mut config = events_config();
    config.limits.max_connections = 1;
    let mut sim = Sim::new(config);
    sim.connect(ConnectSpec::v5("a"));
    let c = sim.open(V5);
    let rx = sim.connect_raw(c, &ConnectSpec::v5("b").request_problem_information(false));
    assert!(
        matches!(&rx[..], [Rx::ConnAck(a)] if a.reason == ReasonCode::QUOTA_EXCEEDED),
        "{rx:?}"
    );
    assert_eq!(reason_strings(&mut sim, c), [text("Quota exceeded")]);
    assert!(sim.is_closed(c));
}

#[test]
fn v311_failures_carry_no_reason_string() {
    let mut sim = acl_sim();
    let c = sim.connect(ConnectSpec::v311("a"));
    sim.take_raw(c);
    sim.publish(c, "secret/a", b"x", QoS::AtLeastOnce);
    let codes = sim.subscribe_many(c, &[("secret/#", opts(QoS::AtLeastOnce))], None);
    assert_eq!(codes, [ReasonCode(0x80)]);
    let raw = sim.take_raw(c);
    // PUBACK (acknowledged and dropped) and SUBACK: the plain 3.1.1 forms.
    assert_eq!(raw.iter().map(Vec::len).collect::<Vec<_>>(), [4, 5]);
    assert!(raw.iter().all(|bytes| reason_string(bytes, V311) == NONE));
}

#[test]
fn mqtt_3_4_2_2_reason_string_is_omitted_when_it_would_exceed_the_maximum_packet_size() {
    let mut sim = acl_sim();
    // PUBACK and PUBREC with a reason code are 5 bytes, SUBACK for two filters 7; with
    // "Not authorized" each would be 18 bytes longer.
    let c = sim.connect(ConnectSpec::v5("a").maximum_packet_size(16));
    sim.take_raw(c);
    failures(&mut sim, c);
    assert_eq!(
        sim.take(c),
        [
            Rx::PubAck(1, ReasonCode::NOT_AUTHORIZED),
            Rx::PubRec(2, ReasonCode::NOT_AUTHORIZED),
        ]
    );
    let raw = sim.take_raw(c);
    assert_eq!(raw.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5, 7]);
    assert!(raw.iter().all(|bytes| reason_string(bytes, V5) == NONE));
    assert!(!sim.is_closed(c));
}

#[test]
fn mqtt_3_14_2_3_disconnect_reason_string_is_omitted_when_it_would_exceed_the_maximum() {
    let mut sim = Sim::default_v();
    let c = sim.connect(ConnectSpec::v5("a").maximum_packet_size(8));
    sim.take_raw(c);
    sim.send(c, Packet::PingResp);
    assert_eq!(sim.take(c), [Rx::Disconnect(ReasonCode::PROTOCOL_ERROR)]);
    let raw = sim.take_raw(c);
    assert_eq!(raw.iter().map(Vec::len).collect::<Vec<_>>(), [3]);
    assert!(sim.is_closed(c));
}

// ----- malformed MQTT 5 CONNECT -----------------------------------------------------------------

/// An MQTT 5 CONNECT for client "c" with `properties` as its property block content.
fn raw_v5_connect(properties: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 0];
    body.push(u8::try_from(properties.len()).expect("short property block"));
    body.extend_from_slice(properties);
    body.extend_from_slice(&[0, 1, b'c']);
    let mut packet = vec![0x10, u8::try_from(body.len()).expect("short packet")];
    packet.extend_from_slice(&body);
    packet
}

#[test]
fn mqtt_3_1_4_1_v5_connect_with_a_duplicated_property_gets_connack_0x82_and_close() {
    let mut sim = Sim::default_v();
    let c = sim.open(V5);
    // Session Expiry Interval twice: a Protocol Error (MQTT 5 §3.1.2.11.2).
    let bytes = raw_v5_connect(&[0x11, 0, 0, 0, 10, 0x11, 0, 0, 0, 10]);
    let expected = femtomq_core::codec::decode_packet(&bytes, V5)
        .expect_err("a duplicated property does not decode")
        .reason_code();
    assert_eq!(expected, ReasonCode::PROTOCOL_ERROR);
    sim.send_bytes(c, &bytes);
    let rx = sim.take(c);
    assert!(
        matches!(&rx[..], [Rx::ConnAck(a)] if a.reason == expected && !a.session_present),
        "{rx:?}"
    );
    assert_eq!(reason_strings(&mut sim, c), [text("Protocol Error")]);
    assert!(sim.is_closed(c));
    assert_eq!(sim.broker.stats().connected, 0);
}

#[test]
fn mqtt_3_1_4_1_v5_connect_with_an_unknown_property_gets_connack_0x81_and_close() {
    let mut sim = Sim::default_v();
    let c = sim.open(V5);
    let bytes = raw_v5_connect(&[0x7f, 0]);
    sim.send_bytes(c, &bytes);
    let rx = sim.take(c);
    assert!(
        matches!(&rx[..], [Rx::ConnAck(a)] if a.reason == ReasonCode::MALFORMED_PACKET),
        "{rx:?}"
    );
    assert!(sim.is_closed(c));
}

#[test]
fn mqtt_4_13_1_v5_connect_over_the_broker_maximum_gets_connack_0x95_and_close() {
    let mut config = events_config();
    config.limits.max_packet_size = 64;
    let mut sim = Sim::new(config);
    let c = sim.open(V5);
    let bytes = ConnectSpec::v5(&"x".repeat(100)).encode();
    assert!(bytes.len() > 64);
    // The fixed header alone is enough to refuse it: the engine does not wait for the body.
    let used = sim.feed(c, &bytes[..12]);
    assert_eq!(used, 12);
    let rx = sim.take(c);
    assert!(
        matches!(&rx[..], [Rx::ConnAck(a)] if a.reason == ReasonCode::PACKET_TOO_LARGE),
        "{rx:?}"
    );
    assert!(sim.is_closed(c));
    assert_eq!(sim.broker.stats().connected, 0);
}
