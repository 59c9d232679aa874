//! Flow control: the client's Receive Maximum on what the broker sends, the broker's on what
//! clients send, and the queue that holds messages while a window is full.

mod sim;

use sim::*;

fn in_flight_publishes(rx: &[Rx]) -> Vec<RxPublish> {
    rx.iter().filter_map(Rx::publish).cloned().collect()
}

#[test]
fn mqtt_3_3_4_9_broker_never_has_more_than_receive_maximum_unacknowledged() {
    let mut sim = Sim::default_v();
    let sub = sim.connect(ConnectSpec::v5("sub").receive_maximum(3));
    sim.subscribe(sub, "t", QoS::ExactlyOnce);
    sim.set_acks(sub, Acks::Manual);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    for i in 0..10 {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        sim.publish(publisher, "t", format!("{i}").as_bytes(), qos);
    }
    let mut outstanding: Vec<RxPublish> = sim.take_publishes(sub);
    assert_eq!(outstanding.len(), 3);
    let mut received = outstanding.clone();
    while !outstanding.is_empty() {
        let first = outstanding.remove(0);
        let id = first.packet_id.expect("id");
        if first.qos == QoS::ExactlyOnce {
            // PUBREC does not free the slot; PUBCOMP does.
            sim.pubrec(sub, id);
            assert_eq!(sim.take(sub), [Rx::PubRel(id, ReasonCode::SUCCESS)]);
            sim.pubcomp(sub, id);
        } else {
            sim.puback(sub, id);
        }
        let more = in_flight_publishes(&sim.take(sub));
        assert!(more.len() <= 1, "one slot freed, one message: {more:?}");
        outstanding.extend(more.iter().cloned());
        received.extend(more);
        assert!(outstanding.len() <= 3);
    }
    let payloads: Vec<String> = received
        .iter()
        .map(|p| String::from_utf8(p.payload.clone()).unwrap_or_default())
        .collect();
    let expected: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(payloads, expected, "all delivered, in order");
}

#[test]
fn mqtt_3_3_4_9_qos0_is_not_held_back_by_a_full_window() {
    let mut sim = Sim::default_v();
    let sub = sim.connect(ConnectSpec::v5("sub").receive_maximum(1));
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    sim.set_acks(sub, Acks::Manual);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish(publisher, "t", b"q1", QoS::AtLeastOnce);
    sim.publish(publisher, "t", b"q1-waits", QoS::AtLeastOnce);
    sim.publish(publisher, "t", b"q0", QoS::AtMostOnce);
    assert_eq!(sim.take_payloads(sub), ["q1", "q0"]);
}

#[test]
fn broker_caps_a_large_client_receive_maximum_at_max_inflight() {
    let mut config = events_config();
    config.limits.max_inflight = 4;
    let mut sim = Sim::new(config);
    let sub = sim.connect(ConnectSpec::v5("sub"));
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    sim.set_acks(sub, Acks::Manual);
    let v3 = sim.connect(ConnectSpec::v311("v3"));
    sim.subscribe(v3, "t", QoS::AtLeastOnce);
    sim.set_acks(v3, Acks::Manual);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    for _ in 0..10 {
        sim.publish(publisher, "t", b"x", QoS::AtLeastOnce);
    }
    assert_eq!(sim.take_publishes(sub).len(), 4);
    assert_eq!(
        sim.take_publishes(v3).len(),
        4,
        "3.1.1 clients get the same cap"
    );
}

#[test]
fn mqtt_3_3_4_7_client_exceeding_the_receive_maximum_with_qos2_gets_0x93() {
    let mut config = events_config();
    config.limits.max_inflight = 2;
    let mut sim = Sim::new(config);
    let c = sim.connect(ConnectSpec::v5("a"));
    sim.set_acks(c, Acks::Manual);
    // QoS 1 is acknowledged at once: never more than zero outstanding.
    for _ in 0..5 {
        sim.publish(c, "t", b"x", QoS::AtLeastOnce);
    }
    assert!(!sim.is_closed(c));
    sim.take(c);
    sim.publish(c, "t", b"1", QoS::ExactlyOnce);
    sim.publish(c, "t", b"2", QoS::ExactlyOnce);
    assert!(!sim.is_closed(c));
    sim.publish(c, "t", b"3", QoS::ExactlyOnce);
    assert_eq!(
        sim.take(c),
        [
            Rx::PubRec(6, ReasonCode::NO_MATCHING_SUBSCRIBERS),
            Rx::PubRec(7, ReasonCode::NO_MATCHING_SUBSCRIBERS),
            Rx::Disconnect(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
        ]
    );
    assert!(sim.is_closed(c));
}

#[test]
fn mqtt_3_3_4_7_released_qos2_messages_free_the_clients_quota() {
    let mut config = events_config();
    config.limits.max_inflight = 2;
    let mut sim = Sim::new(config);
    let c = sim.connect(ConnectSpec::v5("a"));
    // Auto acks: PUBREC is answered by PUBREL at once.
    for _ in 0..20 {
        sim.publish(c, "t", b"x", QoS::ExactlyOnce);
    }
    assert!(!sim.is_closed(c));
}

#[test]
fn window_overflow_waits_in_the_queue_within_its_limits() {
    let mut config = events_config();
    config.limits.max_queued_messages = 3;
    let mut sim = Sim::new(config);
    let sub = sim.connect(ConnectSpec::v5("sub").receive_maximum(1));
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    sim.set_acks(sub, Acks::Manual);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.events.clear();
    for i in 0..6 {
        sim.publish(publisher, "t", format!("{i}").as_bytes(), QoS::AtLeastOnce);
    }
    assert_eq!(sim.broker.queued_messages("sub"), Some(3));
    let dropped = sim.events_matching(|e| {
        matches!(
            e,
            Event::MessageDropped {
                reason: DropReason::QueueFull,
                ..
            }
        )
    });
    assert_eq!(dropped.len(), 2);
    let mut got = Vec::new();
    for _ in 0..4 {
        let p = sim.take_publishes(sub);
        assert_eq!(p.len(), 1);
        sim.puback(sub, p[0].packet_id.expect("id"));
        got.push(String::from_utf8(p[0].payload.clone()).unwrap_or_default());
    }
    assert_eq!(got, ["0", "1", "2", "3"]);
    assert_eq!(sim.take(sub), []);
}

#[test]
fn mqtt_3_3_4_9_resent_messages_respect_a_smaller_receive_maximum_after_reconnect() {
    let mut sim = Sim::default_v();
    let spec = ConnectSpec::v5("sub").persistent(600);
    let sub = sim.connect(spec.clone().receive_maximum(5));
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    sim.set_acks(sub, Acks::Manual);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    for i in 0..5 {
        sim.publish(publisher, "t", format!("{i}").as_bytes(), QoS::AtLeastOnce);
    }
    let first = sim.take_publishes(sub);
    assert_eq!(first.len(), 5);
    sim.drop_connection(sub);
    sim.reconnect(sub, &spec.clone().receive_maximum(2));
    let again = sim.take_publishes(sub);
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(again.iter().all(|p| p.dup));
    // The others follow, with their original ids, as the window frees.
    let mut resent = again.clone();
    let mut outstanding = again;
    while let Some(p) = outstanding.pop() {
        sim.puback(sub, p.packet_id.expect("id"));
        let more = sim.take_publishes(sub);
        assert!(more.len() <= 1);
        outstanding.extend(more.iter().cloned());
        resent.extend(more);
    }
    let mut ids: Vec<u16> = resent.iter().filter_map(|p| p.packet_id).collect();
    ids.sort();
    let mut original: Vec<u16> = first.iter().filter_map(|p| p.packet_id).collect();
    original.sort();
    assert_eq!(ids, original);
}
