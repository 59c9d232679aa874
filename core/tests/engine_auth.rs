//! Authentication (user name/password, MQTT 5 enhanced authentication with a challenge/response
//! method, re-authentication, decisions made later with `resolve_auth`) and authorization of
//! publish, subscribe and receive.

mod sim;

use std::cell::RefCell;
use std::rc::Rc;

use sim::*;

const METHOD: &str = "REVERSE";

/// A challenge/response method: the client starts with "hello", the server challenges with a
/// word, the client answers with the word reversed. Plain CONNECTs need alice/secret; user
/// "slow" gets a decision later (Pending). Every call is logged.
#[derive(Default)]
struct TestAuth {
    log: Rc<RefCell<Vec<String>>>,
    pending_enhanced: bool,
}

impl Authenticator for TestAuth {
    fn authenticate(&mut self, info: &ConnectInfo<'_>) -> AuthDecision {
        self.log.borrow_mut().push(format!(
            "plain {} {:?} {:?}",
            info.client_id, info.username, info.version
        ));
        match (info.username, info.password) {
            (Some("alice"), Some(b"secret")) => AuthDecision::allow(),
            (Some("cert"), _) => AuthDecision::Allow {
                username: Some("CN=device-1".into()),
                data: None,
            },
            (Some("slow"), _) => AuthDecision::Pending,
            _ => AuthDecision::Deny(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        }
    }

    fn start_enhanced(
        &mut self,
        info: &ConnectInfo<'_>,
        method: &str,
        data: Option<&[u8]>,
    ) -> AuthDecision {
        self.log
            .borrow_mut()
            .push(format!("start {} {method} {data:?}", info.client_id));
        if method != METHOD {
            return AuthDecision::Deny(ReasonCode::BAD_AUTHENTICATION_METHOD);
        }
        if data != Some(b"hello") {
            return AuthDecision::Deny(ReasonCode::NOT_AUTHORIZED);
        }
        if self.pending_enhanced {
            return AuthDecision::Pending;
        }
        AuthDecision::Continue {
            data: Box::from(&b"stressed"[..]),
        }
    }

    fn continue_enhanced(
        &mut self,
        info: &ConnectInfo<'_>,
        method: &str,
        data: Option<&[u8]>,
    ) -> AuthDecision {
        self.log
            .borrow_mut()
            .push(format!("continue {} {method} {data:?}", info.client_id));
        if data == Some(b"desserts") {
            AuthDecision::Allow {
                username: None,
                data: Some(Box::from(&b"welcome"[..])),
            }
        } else {
            AuthDecision::Deny(ReasonCode::NOT_AUTHORIZED)
        }
    }
}

fn auth_sim() -> (Sim, Rc<RefCell<Vec<String>>>) {
    let mut sim = Sim::default_v();
    let auth = TestAuth::default();
    let log = auth.log.clone();
    sim.broker.set_authenticator(Box::new(auth));
    (sim, log)
}

fn auth_packet(reason: ReasonCode, method: &str, data: &[u8]) -> Packet<'static> {
    // Leak is fine in a test: packets borrow their data.
    let method: &'static str = Box::leak(method.to_string().into_boxed_str());
    let data: &'static [u8] = Box::leak(data.to_vec().into_boxed_slice());
    Packet::Auth(Auth {
        reason,
        properties: AuthProperties {
            authentication_method: Some(method),
            authentication_data: Some(data),
            ..AuthProperties::default()
        },
    })
}

fn challenge() -> Rx {
    Rx::Auth {
        reason: ReasonCode::CONTINUE_AUTHENTICATION,
        method: Some(METHOD.into()),
        data: Some(b"stressed".to_vec()),
    }
}

/// Runs the whole exchange and returns the connected client.
fn enhanced_connect(sim: &mut Sim, client_id: &str) -> Client {
    let c = sim.open(V5);
    let spec = ConnectSpec::v5(client_id).auth(METHOD, Some(b"hello"));
    assert_eq!(sim.connect_raw(c, &spec), [challenge()]);
    sim.send(
        c,
        auth_packet(ReasonCode::CONTINUE_AUTHENTICATION, METHOD, b"desserts"),
    );
    let rx = sim.take(c);
    assert!(
        matches!(&rx[..], [Rx::ConnAck(a)] if a.reason == ReasonCode::SUCCESS),
        "{rx:?}"
    );
    c
}

// ----- simple authentication -------------------------------------------------------------------

#[test]
fn mqtt_3_1_3_5_user_name_and_password_are_checked() {
    let (mut sim, log) = auth_sim();
    sim.connect(ConnectSpec::v5("a").user("alice", b"secret"));
    let c = sim.open(V5);
    let rx = sim.connect_raw(c, &ConnectSpec::v5("b").user("alice", b"wrong"));
    assert!(
        matches!(&rx[..], [Rx::ConnAck(a)] if a.reason == ReasonCode::BAD_USER_NAME_OR_PASSWORD)
    );
    assert!(sim.is_closed(c));
    assert_eq!(
        log.borrow()[0],
        "plain a Some(\"alice\") V5",
        "the authenticator sees the CONNECT identity"
    );
    // 3.1.1: return code 4.
    let conn = sim.broker.open(0, sim.now);
    let bytes = ConnectSpec::v311("c").user("bob", b"x").encode();
    sim.broker.handle_input(conn, &bytes, sim.now);
    assert_eq!(sim.broker.output(conn), [0x20, 0x02, 0x00, 0x04]);
    assert!(sim.broker.is_closing(conn));
    assert_eq!(sim.broker.stats().sessions, 1);
}

/// Refuses every CONNECT as an unsupported protocol version (a listener limited to others).
struct VersionGate;

impl Authenticator for VersionGate {
    fn authenticate(&mut self, _: &ConnectInfo<'_>) -> AuthDecision {
        AuthDecision::Deny(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION)
    }
}

#[test]
fn mqtt_3_2_2_3_a_version_refused_by_the_authenticator_is_return_code_1() {
    let mut sim = Sim::default_v();
    sim.broker.set_authenticator(Box::new(VersionGate));
    // MQTT 5: CONNACK 0x84 Unsupported Protocol Version.
    let c = sim.open(V5);
    let rx = sim.connect_raw(c, &ConnectSpec::v5("five"));
    assert!(
        matches!(&rx[..], [Rx::ConnAck(a)] if a.reason == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        "{rx:?}"
    );
    assert!(sim.is_closed(c));
    // 3.1.1 and 3.1: return code 1 Unacceptable protocol version.
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V3_1] {
        let conn = sim.broker.open(0, sim.now);
        let bytes = ConnectSpec::new(version, "old").encode();
        sim.broker.handle_input(conn, &bytes, sim.now);
        assert_eq!(
            sim.broker.output(conn),
            [0x20, 0x02, 0x00, 0x01],
            "{version:?}"
        );
        assert!(sim.broker.is_closing(conn));
    }
}

#[test]
fn authenticator_may_replace_the_user_name() {
    let (mut sim, _) = auth_sim();
    sim.connect(ConnectSpec::v5("dev").user("cert", b""));
    let connected = sim.events_matching(|e| matches!(e, Event::ClientConnected { .. }));
    assert!(matches!(
        &connected[0],
        Event::ClientConnected { username: Some(u), .. } if &**u == "CN=device-1"
    ));
}

#[test]
fn pending_authentication_is_completed_by_resolve_auth() {
    for (decision, expected) in [
        (AuthDecision::allow(), ReasonCode::SUCCESS),
        (AuthDecision::Deny(ReasonCode::BANNED), ReasonCode::BANNED),
    ] {
        let (mut sim, _) = auth_sim();
        let c = sim.open(V5);
        assert_eq!(
            sim.connect_raw(c, &ConnectSpec::v5("s").user("slow", b"")),
            []
        );
        assert!(!sim.is_closed(c));
        // Other packets before the decision are a protocol error; none are sent here.
        sim.advance(5_000);
        let conn = sim.conn(c);
        let now = sim.now;
        sim.broker.resolve_auth(conn, decision, now);
        sim.pump();
        let rx = sim.take(c);
        assert!(
            matches!(&rx[..], [Rx::ConnAck(a)] if a.reason == expected),
            "{rx:?}"
        );
        assert_eq!(sim.is_closed(c), expected != ReasonCode::SUCCESS);
    }
}

#[test]
fn pending_authentication_is_cut_by_the_connect_timeout() {
    let (mut sim, _) = auth_sim();
    let c = sim.open(V5);
    sim.connect_raw(c, &ConnectSpec::v5("s").user("slow", b""));
    let conn = sim.conn(c);
    sim.advance(10_000);
    assert!(sim.is_closed(c));
    assert_eq!(sim.take(c), []);
    // A late answer for the gone connection is ignored.
    let now = sim.now;
    sim.broker.resolve_auth(conn, AuthDecision::allow(), now);
    sim.pump();
    assert_eq!(sim.broker.stats().connected, 0);
    assert_eq!(sim.broker.stats().sessions, 0);
}

// ----- enhanced authentication -----------------------------------------------------------------

#[test]
fn mqtt_4_12_0_enhanced_authentication_challenge_and_response() {
    let (mut sim, log) = auth_sim();
    let c = sim.open(V5);
    let spec = ConnectSpec::v5("e").auth(METHOD, Some(b"hello"));
    assert_eq!(sim.connect_raw(c, &spec), [challenge()]);
    sim.send(
        c,
        auth_packet(ReasonCode::CONTINUE_AUTHENTICATION, METHOD, b"desserts"),
    );
    let rx = sim.take(c);
    let [Rx::ConnAck(ack)] = &rx[..] else {
        panic!("{rx:?}");
    };
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert_eq!(ack.authentication_method.as_deref(), Some(METHOD));
    assert_eq!(ack.authentication_data.as_deref(), Some(&b"welcome"[..]));
    assert_eq!(
        *log.borrow(),
        [
            "start e REVERSE Some([104, 101, 108, 108, 111])",
            "continue e REVERSE Some([100, 101, 115, 115, 101, 114, 116, 115])"
        ]
    );
    // A working connection.
    sim.subscribe(c, "t", QoS::AtLeastOnce);
}

#[test]
fn mqtt_4_12_0_wrong_response_is_refused_with_0x87() {
    let (mut sim, _) = auth_sim();
    let c = sim.open(V5);
    sim.connect_raw(c, &ConnectSpec::v5("e").auth(METHOD, Some(b"hello")));
    sim.send(
        c,
        auth_packet(ReasonCode::CONTINUE_AUTHENTICATION, METHOD, b"wrong"),
    );
    let rx = sim.take(c);
    assert!(
        matches!(&rx[..], [Rx::ConnAck(a)] if a.reason == ReasonCode::NOT_AUTHORIZED),
        "{rx:?}"
    );
    assert!(sim.is_closed(c));
    assert_eq!(sim.broker.stats().sessions, 0);
}

#[test]
fn mqtt_4_12_0_unknown_method_is_refused_with_0x8c() {
    let (mut sim, _) = auth_sim();
    let c = sim.open(V5);
    let rx = sim.connect_raw(c, &ConnectSpec::v5("e").auth("SCRAM-SHA-1", Some(b"x")));
    assert!(
        matches!(&rx[..], [Rx::ConnAck(a)] if a.reason == ReasonCode::BAD_AUTHENTICATION_METHOD)
    );
    assert!(sim.is_closed(c));
}

#[test]
fn mqtt_4_12_0_the_default_authenticator_refuses_enhanced_authentication() {
    let mut sim = Sim::default_v();
    let c = sim.open(V5);
    let rx = sim.connect_raw(c, &ConnectSpec::v5("e").auth(METHOD, None));
    assert!(
        matches!(&rx[..], [Rx::ConnAck(a)] if a.reason == ReasonCode::BAD_AUTHENTICATION_METHOD)
    );
}

#[test]
fn mqtt_4_12_0_auth_with_another_method_during_the_exchange_closes() {
    let (mut sim, _) = auth_sim();
    let c = sim.open(V5);
    sim.connect_raw(c, &ConnectSpec::v5("e").auth(METHOD, Some(b"hello")));
    sim.send(
        c,
        auth_packet(ReasonCode::CONTINUE_AUTHENTICATION, "OTHER", b"desserts"),
    );
    assert!(sim.is_closed(c));
    assert!(
        !sim.take(c)
            .iter()
            .any(|rx| matches!(rx, Rx::ConnAck(a) if a.reason == ReasonCode::SUCCESS))
    );
    assert_eq!(sim.broker.stats().sessions, 0);
}

#[test]
fn mqtt_4_12_0_other_packets_during_the_exchange_close_the_connection() {
    let (mut sim, _) = auth_sim();
    let c = sim.open(V5);
    sim.connect_raw(c, &ConnectSpec::v5("e").auth(METHOD, Some(b"hello")));
    sim.publish(c, "t", b"x", QoS::AtMostOnce);
    assert!(sim.is_closed(c));
    assert_eq!(sim.broker.stats().sessions, 0);
}

#[test]
fn enhanced_authentication_is_cut_by_the_connect_timeout() {
    let (mut sim, _) = auth_sim();
    let c = sim.open(V5);
    sim.connect_raw(c, &ConnectSpec::v5("e").auth(METHOD, Some(b"hello")));
    sim.advance(10_000);
    assert!(sim.is_closed(c));
}

#[test]
fn pending_enhanced_step_resolved_with_continue_sends_the_challenge() {
    let mut sim = Sim::default_v();
    sim.broker.set_authenticator(Box::new(TestAuth {
        pending_enhanced: true,
        ..TestAuth::default()
    }));
    let c = sim.open(V5);
    assert_eq!(
        sim.connect_raw(c, &ConnectSpec::v5("e").auth(METHOD, Some(b"hello"))),
        []
    );
    let (conn, now) = (sim.conn(c), sim.now);
    sim.broker.resolve_auth(
        conn,
        AuthDecision::Continue {
            data: Box::from(&b"stressed"[..]),
        },
        now,
    );
    sim.pump();
    assert_eq!(sim.take(c), [challenge()]);
    sim.send(
        c,
        auth_packet(ReasonCode::CONTINUE_AUTHENTICATION, METHOD, b"desserts"),
    );
    assert!(matches!(&sim.take(c)[..], [Rx::ConnAck(a)] if a.reason == ReasonCode::SUCCESS));
}

#[test]
fn mqtt_4_12_1_re_authentication_with_auth_0x19() {
    let (mut sim, _) = auth_sim();
    let c = enhanced_connect(&mut sim, "e");
    sim.send(
        c,
        auth_packet(ReasonCode::RE_AUTHENTICATE, METHOD, b"hello"),
    );
    assert_eq!(sim.take(c), [challenge()]);
    // The connection keeps working during re-authentication.
    sim.send(c, Packet::PingReq);
    assert_eq!(sim.take(c), [Rx::PingResp]);
    sim.send(
        c,
        auth_packet(ReasonCode::CONTINUE_AUTHENTICATION, METHOD, b"desserts"),
    );
    assert_eq!(
        sim.take(c),
        [Rx::Auth {
            reason: ReasonCode::SUCCESS,
            method: Some(METHOD.into()),
            data: Some(b"welcome".to_vec()),
        }]
    );
    assert!(!sim.is_closed(c));
}

#[test]
fn mqtt_4_12_1_failed_re_authentication_disconnects() {
    let (mut sim, _) = auth_sim();
    let c = enhanced_connect(&mut sim, "e");
    sim.send(
        c,
        auth_packet(ReasonCode::RE_AUTHENTICATE, METHOD, b"hello"),
    );
    sim.take(c);
    sim.send(
        c,
        auth_packet(ReasonCode::CONTINUE_AUTHENTICATION, METHOD, b"nope"),
    );
    assert_eq!(sim.take(c), [Rx::Disconnect(ReasonCode::NOT_AUTHORIZED)]);
    assert!(sim.is_closed(c));
}

#[test]
fn mqtt_4_12_1_re_authentication_with_another_method_is_a_protocol_error() {
    let (mut sim, _) = auth_sim();
    let c = enhanced_connect(&mut sim, "e");
    sim.send(
        c,
        auth_packet(ReasonCode::RE_AUTHENTICATE, "OTHER", b"hello"),
    );
    assert_eq!(sim.take(c), [Rx::Disconnect(ReasonCode::PROTOCOL_ERROR)]);
}

#[test]
fn mqtt_4_12_0_auth_from_a_client_without_an_authentication_method_is_a_protocol_error() {
    let (mut sim, _) = auth_sim();
    let c = sim.connect(ConnectSpec::v5("a").user("alice", b"secret"));
    sim.send(
        c,
        auth_packet(ReasonCode::RE_AUTHENTICATE, METHOD, b"hello"),
    );
    assert_eq!(sim.take(c), [Rx::Disconnect(ReasonCode::PROTOCOL_ERROR)]);
    assert!(sim.is_closed(c));
}

// ----- authorization -----------------------------------------------------------------------------

/// Nobody may publish to or subscribe to `secret/#`; only user "admin" may receive it.
struct TestAcl;

impl Authorizer for TestAcl {
    fn authorize(&self, client: &ClientInfo<'_>, access: Access, topic: &str) -> bool {
        let secret = topic.starts_with("secret/");
        match access {
            Access::Publish => !secret || client.client_id == "admin-pub",
            Access::Subscribe => !secret,
            Access::Receive => !secret || client.username == Some("admin"),
        }
    }
}

fn acl_sim() -> Sim {
    let mut sim = Sim::default_v();
    sim.broker.set_authorizer(Box::new(TestAcl));
    sim
}

#[test]
fn mqtt_3_4_2_publish_denied_is_puback_0x87_in_v5() {
    let mut sim = acl_sim();
    let sub = sim.connect(ConnectSpec::v5("sub").user("admin", b""));
    sim.subscribe(sub, "#", QoS::AtLeastOnce);
    let c = sim.connect(ConnectSpec::v5("pub"));
    sim.set_acks(c, Acks::Manual);
    sim.events.clear();
    let id1 = sim.publish(c, "secret/x", b"x", QoS::AtLeastOnce);
    let id2 = sim.publish(c, "secret/x", b"x", QoS::ExactlyOnce);
    sim.publish(c, "secret/x", b"x", QoS::AtMostOnce);
    assert_eq!(
        sim.take(c),
        [
            Rx::PubAck(id1, ReasonCode::NOT_AUTHORIZED),
            Rx::PubRec(id2, ReasonCode::NOT_AUTHORIZED)
        ]
    );
    assert!(!sim.is_closed(c));
    assert_eq!(sim.take(sub), []);
    let denied = sim.events_matching(|e| {
        matches!(
            e,
            Event::AccessDenied {
                access: Access::Publish,
                ..
            }
        )
    });
    assert_eq!(denied.len(), 3);
    // A refused QoS 2 id is not kept: PUBREL for it is unknown [MQTT-4.3.3-9].
    sim.pubrel(c, id2);
    assert_eq!(
        sim.take(c),
        [Rx::PubComp(id2, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)]
    );
}

#[test]
fn v311_publish_denied_is_acknowledged_and_dropped() {
    let mut sim = acl_sim();
    let sub = sim.connect(ConnectSpec::v5("sub").user("admin", b""));
    sim.subscribe(sub, "#", QoS::AtLeastOnce);
    let c = sim.connect(ConnectSpec::v311("pub"));
    let id = sim.publish(c, "secret/x", b"x", QoS::AtLeastOnce);
    assert_eq!(sim.take(c), [Rx::PubAck(id, ReasonCode::SUCCESS)]);
    assert!(!sim.is_closed(c));
    assert_eq!(sim.take(sub), []);
}

#[test]
fn mqtt_3_9_3_subscribe_denied_is_suback_0x87_in_v5_and_0x80_in_v311() {
    for (version, failure) in [(V5, ReasonCode::NOT_AUTHORIZED), (V311, ReasonCode(0x80))] {
        let mut sim = acl_sim();
        let c = sim.connect(ConnectSpec::new(version, "c"));
        let codes = sim.subscribe_many(
            c,
            &[
                ("secret/+", opts(QoS::AtLeastOnce)),
                ("public/+", opts(QoS::AtLeastOnce)),
            ],
            None,
        );
        assert_eq!(codes, [failure, ReasonCode::GRANTED_QOS_1], "{version:?}");
        assert_eq!(sim.broker.subscription_count(), 1);
    }
}

#[test]
fn receive_denied_topics_are_not_delivered_to_a_wildcard_subscriber() {
    let mut sim = acl_sim();
    let nosy = sim.connect(ConnectSpec::v5("nosy"));
    sim.subscribe(nosy, "#", QoS::AtLeastOnce);
    let admin = sim.connect(ConnectSpec::v5("admin").user("admin", b""));
    sim.subscribe(admin, "#", QoS::AtLeastOnce);
    let publisher = sim.connect(ConnectSpec::v5("admin-pub"));
    sim.events.clear();
    sim.publish(publisher, "secret/plans", b"s", QoS::AtLeastOnce);
    sim.publish(publisher, "public/news", b"p", QoS::AtLeastOnce);
    assert_eq!(sim.take_payloads(nosy), ["p"]);
    assert_eq!(sim.take_payloads(admin), ["s", "p"]);
    let dropped = sim.events_matching(|e| {
        matches!(
            e,
            Event::MessageDropped {
                reason: DropReason::NotAuthorized,
                ..
            }
        )
    });
    assert_eq!(dropped.len(), 1);
    // Retained messages obey the same rule.
    sim.publish_spec(
        publisher,
        &PublishSpec::new("secret/r", b"r", QoS::AtLeastOnce).retain(),
    );
    sim.take(nosy);
    sim.take(admin);
    let late = sim.connect(ConnectSpec::v5("late"));
    sim.subscribe(late, "#", QoS::AtLeastOnce);
    assert_eq!(sim.take(late), []);
}
