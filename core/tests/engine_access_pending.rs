//! Access checks answered later: an [`Authorizer`] whose `check` says Pending for a PUBLISH or a
//! SUBSCRIBE filter (as an HTTP ACL callout does). The engine keeps the packet, reads nothing
//! more from that connection, and handles the packet with the answer `resolve_access` brings.

mod sim;

use std::cell::RefCell;
use std::rc::Rc;

use femtomq_core::broker::AccessDecision;
use sim::*;

/// Topics under `ask/` are pending (the request is recorded); `no/` is denied at once; the rest
/// is allowed. Receive checks are answered at once: `ask/secret` may not be received.
/// The pending questions: which connection asked for what on which topic.
type Asked = Rc<RefCell<Vec<(Option<ConnId>, Access, String)>>>;

#[derive(Default, Clone)]
struct AskingAcl {
    asked: Asked,
}

impl Authorizer for AskingAcl {
    fn authorize(&self, _: &ClientInfo<'_>, access: Access, topic: &str) -> bool {
        match access {
            Access::Receive => topic != "ask/secret",
            _ => !topic.starts_with("no/"),
        }
    }

    fn check(&self, client: &ClientInfo<'_>, access: Access, topic: &str) -> AccessDecision {
        if topic.starts_with("ask/") {
            self.asked
                .borrow_mut()
                .push((client.conn, access, topic.to_string()));
            return AccessDecision::Pending;
        }
        self.authorize(client, access, topic).into()
    }
}

fn asking_sim() -> (Sim, AskingAcl) {
    let mut sim = Sim::default_v();
    let acl = AskingAcl::default();
    sim.broker.set_authorizer(Box::new(acl.clone()));
    (sim, acl)
}

fn denials(sim: &Sim) -> Vec<(Access, String, Option<String>)> {
    sim.events_matching(|e| matches!(e, Event::AccessDenied { .. }))
        .into_iter()
        .map(|e| match e {
            Event::AccessDenied {
                access,
                topic,
                username,
                ..
            } => (access, topic.to_string(), username.map(|u| u.to_string())),
            _ => unreachable!(),
        })
        .collect()
}

/// Sends SUBSCRIBE without waiting for its SUBACK (which a pending check holds back).
fn send_subscribe(sim: &mut Sim, c: Client, filters: &[(&str, QoS)]) -> u16 {
    let id = sim.next_packet_id(c);
    let subscriptions: Vec<Subscription<'_>> = filters
        .iter()
        .map(|&(filter, qos)| Subscription {
            filter,
            options: SubscriptionOptions::with_qos(qos),
        })
        .collect();
    sim.send(
        c,
        Packet::Subscribe(femtomq_core::codec::Subscribe {
            packet_id: pid(id),
            properties: SubscribeProperties::default(),
            subscriptions: Repeated::from_slice(&subscriptions),
        }),
    );
    id
}

#[test]
fn a_pending_publish_waits_and_is_routed_once_allowed() {
    let (mut sim, acl) = asking_sim();
    let sub = sim.connect(ConnectSpec::v5("sub"));
    sim.subscribe(sub, "#", QoS::AtLeastOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub").user("writer", b""));
    let conn = sim.conn(publisher);
    let id = sim.publish(publisher, "ask/a", b"one", QoS::AtLeastOnce);
    // Nothing yet: no PUBACK, no delivery, the connection is paused.
    assert_eq!(sim.take(publisher), []);
    assert_eq!(sim.take(sub), []);
    assert!(sim.broker.is_paused(conn));
    assert_eq!(
        *acl.asked.borrow(),
        [(Some(conn), Access::Publish, "ask/a".to_string())]
    );
    let received = sim.broker.stats().messages_received;
    sim.broker
        .resolve_access(conn, AccessDecision::Allow, sim.now);
    sim.pump();
    assert!(!sim.broker.is_paused(conn));
    assert_eq!(sim.take(publisher), [Rx::PubAck(id, ReasonCode::SUCCESS)]);
    assert_eq!(sim.take_payloads(sub), ["one"]);
    // Counted once, asked once.
    assert_eq!(sim.broker.stats().messages_received, received);
    assert_eq!(acl.asked.borrow().len(), 1);
    assert_eq!(denials(&sim), []);
}

#[test]
fn a_pending_publish_denied_gets_0x87_in_v5_and_is_acknowledged_and_dropped_in_v311() {
    for (version, expected) in [
        (V5, ReasonCode::NOT_AUTHORIZED),
        (V311, ReasonCode::SUCCESS),
    ] {
        let (mut sim, _) = asking_sim();
        let sub = sim.connect(ConnectSpec::v5("sub"));
        sim.subscribe(sub, "#", QoS::AtLeastOnce);
        let publisher = sim.connect(ConnectSpec::new(version, "pub").user("writer", b""));
        let conn = sim.conn(publisher);
        sim.events.clear();
        let id = sim.publish(publisher, "ask/b", b"two", QoS::AtLeastOnce);
        assert_eq!(sim.take(publisher), []);
        sim.broker
            .resolve_access(conn, AccessDecision::Deny, sim.now);
        sim.pump();
        assert_eq!(
            sim.take(publisher),
            [Rx::PubAck(id, expected)],
            "{version:?}"
        );
        assert_eq!(sim.take(sub), []);
        assert_eq!(
            denials(&sim),
            [(
                Access::Publish,
                "ask/b".to_string(),
                Some("writer".to_string())
            )]
        );
    }
}

#[test]
fn packets_behind_a_pending_one_wait_for_it() {
    let (mut sim, _) = asking_sim();
    let sub = sim.connect(ConnectSpec::v5("sub"));
    sim.subscribe(sub, "#", QoS::AtMostOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    let conn = sim.conn(publisher);
    let first = PublishSpec::new("ask/first", b"1", QoS::AtMostOnce).encode(V5, 1);
    let second = PublishSpec::new("open/second", b"2", QoS::AtMostOnce).encode(V5, 1);
    let mut both = first.clone();
    both.extend_from_slice(&second);
    // Only the first packet is consumed: the port keeps the rest while the connection waits.
    assert_eq!(sim.feed(publisher, &both), first.len());
    assert_eq!(sim.broker.handle_input(conn, &second, sim.now), 0);
    assert_eq!(sim.take(sub), []);
    sim.broker
        .resolve_access(conn, AccessDecision::Allow, sim.now);
    sim.pump();
    assert_eq!(sim.feed(publisher, &second), second.len());
    // In order.
    assert_eq!(sim.take_payloads(sub), ["1", "2"]);
}

#[test]
fn mqtt_3_9_3_a_subscribe_with_pending_filters_is_answered_in_order_once_all_are_decided() {
    let (mut sim, acl) = asking_sim();
    let c = sim.connect(ConnectSpec::v5("c").user("reader", b""));
    let conn = sim.conn(c);
    sim.events.clear();
    let id = send_subscribe(
        &mut sim,
        c,
        &[
            ("open/+", QoS::AtLeastOnce),
            ("ask/one", QoS::AtLeastOnce),
            ("no/x", QoS::AtLeastOnce),
            ("ask/two", QoS::AtMostOnce),
        ],
    );
    assert_eq!(sim.take(c), []);
    assert_eq!(acl.asked.borrow().len(), 1);
    sim.broker
        .resolve_access(conn, AccessDecision::Allow, sim.now);
    sim.pump();
    // The next pending filter is asked; still no SUBACK and nothing subscribed.
    assert_eq!(sim.take(c), []);
    assert_eq!(sim.broker.subscription_count(), 0);
    assert!(sim.broker.is_paused(conn));
    assert_eq!(
        acl.asked
            .borrow()
            .iter()
            .map(|(_, _, t)| t.as_str())
            .collect::<Vec<_>>(),
        ["ask/one", "ask/two"]
    );
    sim.broker
        .resolve_access(conn, AccessDecision::Deny, sim.now);
    sim.pump();
    assert_eq!(
        sim.take(c),
        [Rx::SubAck(
            id,
            vec![
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::NOT_AUTHORIZED,
                ReasonCode::NOT_AUTHORIZED
            ]
        )]
    );
    assert_eq!(sim.broker.subscription_count(), 2);
    assert!(!sim.broker.is_paused(conn));
    // Each denial reported once, with the user name.
    assert_eq!(
        denials(&sim),
        [
            (
                Access::Subscribe,
                "no/x".to_string(),
                Some("reader".to_string())
            ),
            (
                Access::Subscribe,
                "ask/two".to_string(),
                Some("reader".to_string())
            ),
        ]
    );
}

#[test]
fn receive_checks_are_never_pending() {
    let (mut sim, acl) = asking_sim();
    let sub = sim.connect(ConnectSpec::v5("sub"));
    sim.subscribe(sub, "open/#", QoS::AtMostOnce);
    let sub_conn = sim.conn(sub);
    send_subscribe(&mut sim, sub, &[("ask/secret", QoS::AtMostOnce)]);
    // The subscription to ask/secret was pending: allow it.
    sim.broker
        .resolve_access(sub_conn, AccessDecision::Allow, sim.now);
    sim.pump();
    sim.take(sub);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    let pub_conn = sim.conn(publisher);
    sim.publish(publisher, "ask/secret", b"s", QoS::AtMostOnce);
    sim.broker
        .resolve_access(pub_conn, AccessDecision::Allow, sim.now);
    sim.pump();
    sim.publish(publisher, "open/x", b"o", QoS::AtMostOnce);
    // The receive check said no at once, with no new question asked for it.
    assert_eq!(sim.take_payloads(sub), ["o"]);
    assert_eq!(acl.asked.borrow().len(), 2);
}

#[test]
fn resolving_a_closed_or_idle_connection_is_ignored() {
    let (mut sim, _) = asking_sim();
    let c = sim.connect(ConnectSpec::v5("c"));
    let conn = sim.conn(c);
    // Nothing pending: no effect.
    sim.broker
        .resolve_access(conn, AccessDecision::Deny, sim.now);
    sim.pump();
    assert_eq!(sim.take(c), []);
    sim.publish(c, "ask/x", b"x", QoS::AtLeastOnce);
    sim.drop_connection(c);
    sim.broker
        .resolve_access(conn, AccessDecision::Allow, sim.now);
    sim.pump();
    assert_eq!(sim.broker.stats().connected, 0);
}
