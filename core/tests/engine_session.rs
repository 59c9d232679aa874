//! Offline sessions: queueing for disconnected persistent sessions within the count and byte
//! limits, delivery of the queue on reconnect within the receive maximum, QoS 0 handling, and
//! the events the engine reports along a session's life.

mod sim;

use sim::*;

fn offline_subscriber(sim: &mut Sim, version: ProtocolVersion, qos: QoS) -> (Client, ConnectSpec) {
    let spec = ConnectSpec::new(version, "sub").persistent(3600);
    let sub = sim.connect(spec.clone());
    sim.subscribe(sub, "t/#", qos);
    sim.drop_connection(sub);
    (sub, spec)
}

#[test]
fn mqtt_3_1_2_23_qos1_and_qos2_messages_are_queued_for_an_offline_session() {
    for version in VERSIONS {
        let mut sim = Sim::default_v();
        let (sub, spec) = offline_subscriber(&mut sim, version, QoS::ExactlyOnce);
        let publisher = sim.connect(ConnectSpec::new(version, "pub"));
        sim.publish(publisher, "t/1", b"a", QoS::AtLeastOnce);
        sim.publish(publisher, "t/2", b"b", QoS::ExactlyOnce);
        sim.publish(publisher, "t/1", b"c", QoS::AtLeastOnce);
        assert_eq!(sim.broker.queued_messages("sub"), Some(3));
        let ack = sim.reconnect(sub, &spec);
        assert!(ack.session_present);
        let got = sim.take_publishes(sub);
        let summary: Vec<(String, QoS, bool)> = got
            .iter()
            .map(|p| {
                (
                    String::from_utf8(p.payload.clone()).unwrap_or_default(),
                    p.qos,
                    p.dup,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("a".to_string(), QoS::AtLeastOnce, false),
                ("b".to_string(), QoS::ExactlyOnce, false),
                ("c".to_string(), QoS::AtLeastOnce, false),
            ],
            "{version:?}"
        );
        assert_eq!(sim.broker.queued_messages("sub"), Some(0));
    }
}

#[test]
fn mqtt_3_1_2_23_queue_is_delivered_at_once_within_the_receive_maximum() {
    let mut sim = Sim::default_v();
    let (sub, spec) = offline_subscriber(&mut sim, V5, QoS::AtLeastOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    for i in 0..20 {
        sim.publish(
            publisher,
            "t/x",
            format!("{i}").as_bytes(),
            QoS::AtLeastOnce,
        );
    }
    sim.set_acks(sub, Acks::Manual);
    sim.reconnect(sub, &spec.clone().receive_maximum(5));
    // No time passes: as many as the window allows come with the CONNACK.
    let mut window = sim.take_publishes(sub);
    assert_eq!(window.len(), 5);
    let mut received = window.clone();
    // Each acknowledgement lets exactly one more through, still without time passing.
    while let Some(p) = (!window.is_empty()).then(|| window.remove(0)) {
        sim.puback(sub, p.packet_id.expect("id"));
        let more = sim.take_publishes(sub);
        assert!(more.len() <= 1);
        window.extend(more.iter().cloned());
        received.extend(more);
    }
    let payloads: Vec<String> = received
        .iter()
        .map(|p| String::from_utf8(p.payload.clone()).unwrap_or_default())
        .collect();
    let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(payloads, expected);
}

#[test]
fn queue_message_limit_drops_with_queue_full_events() {
    let mut config = events_config();
    config.limits.max_queued_messages = 5;
    let mut sim = Sim::new(config);
    let (sub, spec) = offline_subscriber(&mut sim, V5, QoS::AtLeastOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.events.clear();
    for i in 0..8 {
        sim.publish(
            publisher,
            "t/x",
            format!("{i}").as_bytes(),
            QoS::AtLeastOnce,
        );
    }
    assert_eq!(sim.broker.queued_messages("sub"), Some(5));
    let dropped: Vec<Vec<u8>> = sim
        .events
        .iter()
        .filter_map(|e| match e {
            Event::MessageDropped {
                reason: DropReason::QueueFull,
                message,
                ..
            } => Some(message.payload.to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(dropped, [b"5".to_vec(), b"6".to_vec(), b"7".to_vec()]);
    assert_eq!(sim.broker.stats().messages_dropped, 3);
    sim.reconnect(sub, &spec);
    assert_eq!(sim.take_payloads(sub), ["0", "1", "2", "3", "4"]);
}

#[test]
fn queue_byte_limit_drops_with_queue_full_events() {
    let mut config = events_config();
    // Topic "t/x" (3 bytes) + 100-byte payloads: 103 bytes each; room for 3.
    config.limits.max_queued_bytes = 350;
    let mut sim = Sim::new(config);
    let (sub, spec) = offline_subscriber(&mut sim, V5, QoS::AtLeastOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.events.clear();
    for i in 0..5u8 {
        sim.publish(publisher, "t/x", &[b'0' + i; 100], QoS::AtLeastOnce);
    }
    assert_eq!(sim.broker.queued_messages("sub"), Some(3));
    let full = sim.events_matching(|e| {
        matches!(
            e,
            Event::MessageDropped {
                reason: DropReason::QueueFull,
                ..
            }
        )
    });
    assert_eq!(full.len(), 2);
    // A small one still fits.
    sim.publish(publisher, "t/x", b"s", QoS::AtLeastOnce);
    assert_eq!(sim.broker.queued_messages("sub"), Some(4));
    sim.reconnect(sub, &spec);
    assert_eq!(sim.take_publishes(sub).len(), 4);
}

#[test]
fn mqtt_3_1_2_23_qos0_is_not_queued_for_an_offline_session_by_default() {
    let mut sim = Sim::default_v();
    let (sub, spec) = offline_subscriber(&mut sim, V5, QoS::AtLeastOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.events.clear();
    sim.publish(publisher, "t/x", b"zero", QoS::AtMostOnce);
    assert_eq!(sim.broker.queued_messages("sub"), Some(0));
    let offline = sim.events_matching(|e| {
        matches!(
            e,
            Event::MessageDropped {
                reason: DropReason::Offline,
                ..
            }
        )
    });
    assert_eq!(offline.len(), 1);
    sim.reconnect(sub, &spec);
    assert_eq!(sim.take(sub), []);
}

#[test]
fn qos0_is_queued_offline_when_configured() {
    let config = Config {
        queue_qos0_offline: true,
        ..events_config()
    };
    let mut sim = Sim::new(config);
    let (sub, spec) = offline_subscriber(&mut sim, V5, QoS::AtMostOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish(publisher, "t/x", b"zero", QoS::AtLeastOnce);
    assert_eq!(sim.broker.queued_messages("sub"), Some(1));
    sim.reconnect(sub, &spec);
    let got = sim.take_publishes(sub);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtMostOnce);
}

#[test]
fn queue_is_discarded_with_the_session() {
    let mut sim = Sim::default_v();
    let spec = ConnectSpec::v5("sub").persistent(10);
    let sub = sim.connect(spec.clone());
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    sim.drop_connection(sub);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish(publisher, "t", b"x", QoS::AtLeastOnce);
    sim.advance_secs(10);
    sim.drop_connection(publisher);
    sim.assert_baseline();
    let ack = sim.reconnect(sub, &spec);
    assert!(!ack.session_present);
    assert_eq!(sim.take(sub), []);
}

#[test]
fn session_expiry_counts_from_the_disconnect_not_from_the_connect() {
    let mut sim = Sim::default_v();
    let c = sim.connect(ConnectSpec::v5("a").persistent(10));
    sim.advance_secs(100);
    sim.drop_connection(c);
    sim.advance_secs(9);
    assert_eq!(sim.broker.stats().sessions, 1);
    sim.advance_secs(1);
    assert_eq!(sim.broker.stats().sessions, 0);
}

// ----- events ------------------------------------------------------------------------------------

#[test]
fn events_report_a_whole_session_life_in_order() {
    let mut sim = Sim::default_v();
    let sub = sim.connect(ConnectSpec::v5("sub").persistent(5));
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish(publisher, "t", b"x", QoS::AtLeastOnce);
    sim.unsubscribe(sub, &["t"]);
    sim.disconnect(sub, ReasonCode::SUCCESS);
    sim.advance_secs(5);
    let conn_sub = sim.conn(sub);
    let conn_pub = sim.conn(publisher);
    let names: Vec<String> = sim
        .events
        .iter()
        .map(|e| match e {
            Event::SessionCreated { client_id, .. } => format!("created {client_id}"),
            Event::ClientConnected {
                client_id,
                conn,
                session_present,
                version,
                ..
            } => {
                assert!(*conn == conn_sub || *conn == conn_pub);
                assert_eq!(*version, V5);
                format!("connected {client_id} {session_present}")
            }
            Event::Subscribed {
                filter, options, ..
            } => {
                assert_eq!(options.qos, QoS::AtLeastOnce);
                format!("subscribed {filter}")
            }
            Event::MessagePublished { message, publisher } => {
                assert!(publisher.is_some());
                format!("published {}", message.topic)
            }
            Event::MessageDelivered { message, .. } => format!("delivered {}", message.topic),
            Event::MessageAcked { message, .. } => format!("acked {}", message.topic),
            Event::Unsubscribed { filter, .. } => format!("unsubscribed {filter}"),
            Event::ClientDisconnected {
                client_id, cause, ..
            } => format!("disconnected {client_id:?} {cause:?}"),
            Event::SessionTerminated {
                client_id, reason, ..
            } => format!("terminated {client_id} {reason:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            "created sub",
            "connected sub false",
            "subscribed t",
            "created pub",
            "connected pub false",
            "published t",
            "delivered t",
            "acked t",
            "unsubscribed t",
            "disconnected Some(\"sub\") ClientDisconnect(0x00 (Success))",
            "terminated sub Expired",
        ]
    );
}

#[test]
fn message_events_are_off_unless_configured() {
    let mut sim = Sim::new(Config::default());
    let sub = sim.connect(ConnectSpec::v5("sub"));
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish(publisher, "t", b"x", QoS::AtLeastOnce);
    assert!(sim.events.iter().all(|e| !matches!(
        e,
        Event::MessagePublished { .. }
            | Event::MessageDelivered { .. }
            | Event::MessageAcked { .. }
    )));
    // Drops are always reported.
    let (_, _) = offline_subscriber(&mut sim, V5, QoS::AtLeastOnce);
    sim.publish(publisher, "t/x", b"0", QoS::AtMostOnce);
    assert!(
        sim.events
            .iter()
            .any(|e| matches!(e, Event::MessageDropped { .. }))
    );
}

#[test]
fn broker_published_messages_are_routed_like_client_ones() {
    let mut sim = Sim::default_v();
    let sub = sim.connect(ConnectSpec::v5("sub"));
    sim.subscribe(sub, "$SYS/#", QoS::AtLeastOnce);
    let now = sim.now;
    let n = sim.broker.publish(
        Message::new("$SYS/uptime", b"42", QoS::AtLeastOnce, true, now),
        now,
    );
    sim.pump();
    assert_eq!(n, 1);
    assert_eq!(sim.take_payloads(sub), ["42"]);
    assert_eq!(sim.broker.retained_count(), 1);
    assert!(sim.events.iter().any(|e| matches!(
        e,
        Event::MessagePublished {
            publisher: None,
            ..
        }
    )));
}

#[test]
fn stats_count_messages_and_sessions() {
    let mut sim = Sim::default_v();
    let sub = sim.connect(ConnectSpec::v5("sub"));
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    for _ in 0..3 {
        sim.publish(publisher, "t", b"x", QoS::AtLeastOnce);
    }
    let stats = sim.broker.stats();
    assert_eq!(stats.messages_received, 3);
    assert_eq!(stats.messages_sent, 3);
    assert_eq!(stats.connected, 2);
    assert_eq!(stats.sessions, 2);
    sim.drop_connection(sub);
    sim.drop_connection(publisher);
    sim.assert_baseline();
}
