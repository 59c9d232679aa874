//! A first end-to-end check of the engine with two virtual clients: CONNECT, SUBSCRIBE,
//! PUBLISH at QoS 1, delivery and acknowledgement. The full simulation suite builds on this.

use core::num::NonZeroU16;

use femtomq_core::broker::{Broker, Config, ConnId, Event};
use femtomq_core::codec::*;
use femtomq_core::{Instant, ProtocolVersion, QoS, SubscriptionOptions};

const V5: ProtocolVersion = ProtocolVersion::V5;

fn bytes_of(packet: Packet<'_>, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = vec![0u8; packet.encoded_len(version).unwrap()];
    packet.encode(version, &mut buf).unwrap();
    buf
}

/// Takes what the broker wrote to `conn` and decodes it into owned debug strings plus raw bytes.
fn drain(broker: &mut Broker, conn: ConnId, version: ProtocolVersion) -> Vec<Vec<u8>> {
    let out = broker.output(conn).to_vec();
    broker.consume_output(conn, out.len(), Instant(0));
    let mut packets = Vec::new();
    let mut rest = &out[..];
    while !rest.is_empty() {
        match decode(rest, version, MAX_PACKET_SIZE).unwrap() {
            Decoded::Packet { len, .. } => {
                packets.push(rest[..len].to_vec());
                rest = &rest[len..];
            }
            Decoded::Incomplete { .. } => panic!("broker wrote a partial packet"),
        }
    }
    packets
}

fn connect(broker: &mut Broker, client_id: &str, now: Instant) -> ConnId {
    let conn = broker.open(0, now);
    let packet = Packet::Connect(Connect {
        version: V5,
        clean_start: true,
        keep_alive: 30,
        properties: ConnectProperties::default(),
        client_id,
        will: None,
        username: None,
        password: None,
    });
    let bytes = bytes_of(packet, V5);
    assert_eq!(broker.handle_input(conn, &bytes, now), bytes.len());
    let out = drain(broker, conn, V5);
    match decode_packet(&out[0], V5).unwrap() {
        Packet::ConnAck(connack) => assert_eq!(connack.reason, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    conn
}

#[test]
fn qos1_message_reaches_a_subscriber_and_is_acknowledged_both_ways() {
    let mut broker = Broker::new(
        Config {
            message_events: true,
            ..Config::default()
        },
        7,
    );
    let now = Instant(1_000);
    let subscriber = connect(&mut broker, "sub", now);
    let publisher = connect(&mut broker, "pub", now);

    let id = NonZeroU16::new(1).unwrap();
    let subscriptions = [Subscription {
        filter: "sensors/+/temp",
        options: SubscriptionOptions::with_qos(QoS::AtLeastOnce),
    }];
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: id,
        properties: SubscribeProperties::default(),
        subscriptions: Repeated::from_slice(&subscriptions),
    });
    broker.handle_input(subscriber, &bytes_of(subscribe, V5), now);
    let out = drain(&mut broker, subscriber, V5);
    match decode_packet(&out[0], V5).unwrap() {
        Packet::SubAck(suback) => assert_eq!(
            suback.reason_codes.iter().collect::<Vec<_>>(),
            [ReasonCode::GRANTED_QOS_1]
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }

    let publish = Packet::Publish(Publish {
        dup: false,
        qos_pid: QosPid::AtLeastOnce(NonZeroU16::new(9).unwrap()),
        retain: false,
        topic: "sensors/kitchen/temp",
        properties: PublishProperties::default(),
        payload: b"21.5",
    });
    broker.handle_input(publisher, &bytes_of(publish, V5), now);
    let puback = drain(&mut broker, publisher, V5);
    assert_eq!(
        decode_packet(&puback[0], V5).unwrap(),
        Packet::PubAck(Ack::success(NonZeroU16::new(9).unwrap()))
    );

    let delivered = drain(&mut broker, subscriber, V5);
    let Packet::Publish(received) = decode_packet(&delivered[0], V5).unwrap() else {
        panic!("expected PUBLISH");
    };
    assert_eq!(received.payload, b"21.5");
    assert_eq!(received.topic, "sensors/kitchen/temp");
    let QosPid::AtLeastOnce(packet_id) = received.qos_pid else {
        panic!("expected QoS 1")
    };

    broker.handle_input(
        subscriber,
        &bytes_of(Packet::PubAck(Ack::success(packet_id)), V5),
        now,
    );
    let events: Vec<Event> = std::iter::from_fn(|| broker.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::MessageAcked { .. })),
        "{events:?}"
    );
}

fn subscribe(broker: &mut Broker, conn: ConnId, filter: &str, qos: QoS, now: Instant) {
    let subscriptions = [Subscription {
        filter,
        options: SubscriptionOptions::with_qos(qos),
    }];
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: NonZeroU16::new(1).unwrap(),
        properties: SubscribeProperties::default(),
        subscriptions: Repeated::from_slice(&subscriptions),
    });
    broker.handle_input(conn, &bytes_of(subscribe, V5), now);
    drain(broker, conn, V5);
}

fn publish(
    broker: &mut Broker,
    conn: ConnId,
    topic: &str,
    payload: &[u8],
    qos_pid: QosPid,
    now: Instant,
) {
    let publish = Packet::Publish(Publish {
        dup: false,
        qos_pid,
        retain: false,
        topic,
        properties: PublishProperties::default(),
        payload,
    });
    broker.handle_input(conn, &bytes_of(publish, V5), now);
}

/// Publishes `payload` on `topic` at QoS 0.
fn publish_qos0(broker: &mut Broker, conn: ConnId, topic: &str, payload: &[u8], now: Instant) {
    publish(broker, conn, topic, payload, QosPid::AtMostOnce, now);
}

#[test]
fn a_subscriber_that_stops_reading_cannot_grow_the_brokers_memory() {
    let mut config = Config::default();
    config.limits.max_output_bytes = 4096;
    config.limits.max_queued_messages = 10;
    let mut broker = Broker::new(config, 1);
    let now = Instant(0);
    let slow = connect(&mut broker, "slow", now);
    let fast = connect(&mut broker, "fast", now);
    let publisher = connect(&mut broker, "pub", now);
    subscribe(&mut broker, slow, "t/#", QoS::AtLeastOnce, now);
    subscribe(&mut broker, fast, "t/#", QoS::AtMostOnce, now);
    let payload = [7u8; 1000];
    // 100 QoS 0 messages: the slow subscriber's output stops at the high-water mark.
    for _ in 0..100 {
        publish_qos0(&mut broker, publisher, "t/0", &payload, now);
        // The fast subscriber reads everything as it comes and loses nothing.
        let out = drain(&mut broker, fast, V5);
        assert_eq!(out.len(), 1);
    }
    drain(&mut broker, publisher, V5);
    let waiting = broker.output(slow).len();
    assert!(
        (4096..4096 + 1100).contains(&waiting),
        "slow output {waiting}"
    );
    let dropped = std::iter::from_fn(|| broker.poll_event())
        .filter(|e| {
            matches!(
                e,
                Event::MessageDropped {
                    reason: femtomq_core::broker::DropReason::Congested,
                    ..
                }
            )
        })
        .count();
    assert_eq!(
        dropped,
        100 - waiting.div_ceil(1000 + 10).min(100),
        "each copy not buffered is reported"
    );

    // QoS 1 messages for the congested subscriber wait in its bounded session queue...
    for id in 1..=15u16 {
        publish(
            &mut broker,
            publisher,
            "t/1",
            &payload,
            QosPid::AtLeastOnce(NonZeroU16::new(id).unwrap()),
            now,
        );
    }
    assert_eq!(
        broker.queued_messages("slow"),
        Some(10),
        "queue bound holds"
    );
    // ...and flow once the port has written the buffer it was holding.
    let mut buffer = Vec::new();
    broker.swap_output(slow, &mut buffer, now);
    assert!(buffer.len() >= 4096);
    assert!(
        broker.queued_messages("slow").unwrap() < 10,
        "swap_output pumps the queue"
    );
    assert!(!broker.output(slow).is_empty());
}

/// Takes the subscriber's output (as the port does) and acknowledges every QoS 1 PUBLISH in it.
fn read_and_ack(broker: &mut Broker, conn: ConnId, now: Instant) -> usize {
    let mut buffer = Vec::new();
    broker.swap_output(conn, &mut buffer, now);
    let mut rest = &buffer[..];
    let mut acks = Vec::new();
    let mut count = 0;
    while let Ok(Decoded::Packet { packet, len }) = decode(rest, V5, MAX_PACKET_SIZE) {
        if let Packet::Publish(Publish {
            qos_pid: QosPid::AtLeastOnce(id),
            ..
        }) = packet
        {
            acks.extend(bytes_of(Packet::PubAck(Ack::success(id)), V5));
            count += 1;
        }
        rest = &rest[len..];
    }
    broker.handle_input(conn, &acks, now);
    count
}

fn flow_control_setup() -> (Broker, ConnId, ConnId, Instant) {
    let mut config = Config::default();
    config.limits.max_queued_messages = 100;
    config.limits.max_inflight = 10;
    let mut broker = Broker::new(config, 3);
    let now = Instant(10_000);
    let subscriber = connect(&mut broker, "sub", now);
    let publisher = connect(&mut broker, "pub", now);
    subscribe(&mut broker, subscriber, "f/#", QoS::AtLeastOnce, now);
    (broker, subscriber, publisher, now)
}

fn publish_qos1(broker: &mut Broker, publisher: ConnId, count: u16, now: Instant) {
    for id in 1..=count {
        publish(
            broker,
            publisher,
            "f/x",
            b"data",
            QosPid::AtLeastOnce(NonZeroU16::new(id).unwrap()),
            now,
        );
    }
    drain(broker, publisher, V5);
}

#[test]
fn a_draining_subscriber_holds_back_its_publisher_instead_of_dropping_messages() {
    let (mut broker, subscriber, publisher, now) = flow_control_setup();
    // 10 go in flight, the next 50 fill half of the 100-message queue: the publisher is paused.
    publish_qos1(&mut broker, publisher, 60, now);
    assert!(
        broker.is_paused(publisher),
        "publisher held back at the high-water mark"
    );
    assert!(!broker.is_paused(subscriber));
    assert_eq!(broker.stats().messages_dropped, 0);
    // The subscriber drains; below a quarter of the queue the publisher may read again and the
    // engine wakes its connection.
    while broker.poll_writable().is_some() {}
    let mut rounds = 0;
    while broker.is_paused(publisher) {
        assert!(
            read_and_ack(&mut broker, subscriber, now) > 0,
            "the subscriber drains"
        );
        rounds += 1;
    }
    // Released only below the low-water mark (a quarter of the queue limit).
    assert!(
        broker.queued_messages("sub").unwrap() <= 25,
        "released after {rounds} rounds"
    );
    assert!(
        std::iter::from_fn(|| broker.poll_writable()).any(|c| c == publisher),
        "publisher woken"
    );
    // Nothing was lost on the way.
    while read_and_ack(&mut broker, subscriber, now) > 0 {}
    assert_eq!(broker.queued_messages("sub"), Some(0));
    assert_eq!(broker.stats().messages_dropped, 0);
}

#[test]
fn many_publishers_each_held_back_after_one_message_lose_none_of_them() {
    let (mut broker, subscriber, publisher, now) = flow_control_setup();
    // The session is at its high-water mark: 10 in flight, 50 queued of 100.
    publish_qos1(&mut broker, publisher, 60, now);
    assert!(broker.is_paused(publisher));
    // 200 more publishers, each with one message read before it is held back: together they
    // take the queue past its limit, and none of their messages is dropped.
    let others: Vec<ConnId> = (0..200)
        .map(|n| connect(&mut broker, &format!("pub-{n}"), now))
        .collect();
    for &other in &others {
        publish(
            &mut broker,
            other,
            "f/x",
            b"one",
            QosPid::AtLeastOnce(NonZeroU16::new(1).unwrap()),
            now,
        );
        assert!(broker.is_paused(other), "held back after its one message");
    }
    assert_eq!(broker.queued_messages("sub"), Some(250));
    assert_eq!(broker.stats().messages_dropped, 0);
    let mut received = 0;
    loop {
        let read = read_and_ack(&mut broker, subscriber, now);
        if read == 0 {
            break;
        }
        received += read;
    }
    assert_eq!(received, 260, "every message delivered");
    assert!(others.iter().all(|&o| !broker.is_paused(o)), "all released");
}

#[test]
fn qos0_publishers_held_back_by_a_congested_subscriber_lose_nothing() {
    let mut config = Config::default();
    config.limits.max_output_bytes = 4096;
    let mut broker = Broker::new(config, 1);
    let now = Instant(10_000);
    let subscriber = connect(&mut broker, "slow", now);
    subscribe(&mut broker, subscriber, "t/#", QoS::AtMostOnce, now);
    let payload = [7u8; 1000];
    let publishers: Vec<ConnId> = (0..20)
        .map(|n| connect(&mut broker, &format!("pub-{n}"), now))
        .collect();
    // The first publisher fills the subscriber's output to its limit and is held back.
    let mut sent = 0;
    while !broker.is_paused(publishers[0]) {
        publish_qos0(&mut broker, publishers[0], "t/0", &payload, now);
        sent += 1;
    }
    // Each of the others gets one message read before it is held back: sent, not dropped.
    for &publisher in &publishers[1..] {
        publish_qos0(&mut broker, publisher, "t/0", &payload, now);
        sent += 1;
        assert!(broker.is_paused(publisher));
    }
    assert_eq!(broker.stats().messages_dropped, 0);
    let received = drain(&mut broker, subscriber, V5)
        .iter()
        .filter(|packet| matches!(decode_packet(packet, V5), Ok(Packet::Publish(_))))
        .count();
    assert_eq!(received, sent, "every QoS 0 message delivered");
}

#[test]
fn a_stuck_subscriber_holds_back_nobody_for_long() {
    let (mut broker, subscriber, publisher, now) = flow_control_setup();
    publish_qos1(&mut broker, publisher, 60, now);
    assert!(broker.is_paused(publisher));
    // The subscriber never reads nor acknowledges: after a second the publisher is released.
    let later = now.plus_millis(1_000);
    broker.handle_timeout(later);
    assert!(
        !broker.is_paused(publisher),
        "a stalled subscriber releases its publishers"
    );
    // And it holds nobody back any more while it makes no progress: its queue fills to the
    // limit and the overflow is dropped and reported, but the publisher keeps going.
    publish_qos1(&mut broker, publisher, 60, later);
    assert!(!broker.is_paused(publisher));
    assert_eq!(broker.queued_messages("sub"), Some(100));
    assert!(broker.stats().messages_dropped > 0);
    let _ = subscriber;
}

#[test]
fn an_offline_subscriber_holds_back_nobody() {
    let (mut broker, subscriber, publisher, now) = flow_control_setup();
    publish_qos1(&mut broker, publisher, 30, now);
    broker.closed(subscriber, now);
    publish_qos1(&mut broker, publisher, 60, now);
    assert!(
        !broker.is_paused(publisher),
        "offline sessions queue or drop, they do not pause"
    );
}

fn connect_with(
    broker: &mut Broker,
    connect: Connect<'_>,
    now: Instant,
) -> (ConnId, ReasonCode, bool) {
    let conn = broker.open(0, now);
    let version = connect.version;
    broker.handle_input(conn, &bytes_of(Packet::Connect(connect), version), now);
    let out = drain(broker, conn, version);
    match decode_packet(&out[0], version).unwrap() {
        Packet::ConnAck(connack) => (conn, connack.reason, connack.session_present),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn connect_packet(client_id: &str, version: ProtocolVersion) -> Connect<'_> {
    Connect {
        version,
        clean_start: true,
        keep_alive: 0,
        properties: ConnectProperties::default(),
        client_id,
        will: None,
        username: None,
        password: None,
    }
}

#[test]
fn mqtt_3_1_4_3_a_takeover_is_accepted_at_the_connection_limit() {
    let mut config = Config::default();
    config.limits.max_connections = 1;
    let mut broker = Broker::new(config, 1);
    let now = Instant(0);
    let (first, reason, _) = connect_with(&mut broker, connect_packet("same", V5), now);
    assert_eq!(reason, ReasonCode::SUCCESS);
    // Another client id is refused: the broker is full.
    let (_, reason, _) = connect_with(&mut broker, connect_packet("other", V5), now);
    assert_eq!(reason, ReasonCode::QUOTA_EXCEEDED);
    // The same client id takes over its own connection.
    let (_, reason, _) = connect_with(&mut broker, connect_packet("same", V5), now);
    assert_eq!(reason, ReasonCode::SUCCESS);
    assert!(broker.is_closing(first));
    assert_eq!(broker.stats().connected, 1);
}

#[test]
fn mqtt_4_3_3_a_repeated_pubrec_gets_its_pubrel_again() {
    let mut broker = Broker::new(Config::default(), 1);
    let now = Instant(0);
    let subscriber = connect(&mut broker, "sub", now);
    let publisher = connect(&mut broker, "pub", now);
    subscribe(&mut broker, subscriber, "q2", QoS::ExactlyOnce, now);
    publish(
        &mut broker,
        publisher,
        "q2",
        b"x",
        QosPid::ExactlyOnce(NonZeroU16::new(5).unwrap()),
        now,
    );
    let delivered = drain(&mut broker, subscriber, V5);
    let Packet::Publish(Publish {
        qos_pid: QosPid::ExactlyOnce(id),
        ..
    }) = decode_packet(&delivered[0], V5).unwrap()
    else {
        panic!("expected a QoS 2 PUBLISH")
    };
    for _ in 0..2 {
        broker.handle_input(
            subscriber,
            &bytes_of(Packet::PubRec(Ack::success(id)), V5),
            now,
        );
        let out = drain(&mut broker, subscriber, V5);
        assert_eq!(
            decode_packet(&out[0], V5).unwrap(),
            Packet::PubRel(Ack::success(id)),
            "PUBREL, not 0x92"
        );
    }
}

#[test]
fn mqtt_3_1_1_clients_have_no_receive_maximum_to_exceed() {
    let mut config = Config::default();
    config.limits.max_inflight = 2;
    let mut broker = Broker::new(config, 1);
    let now = Instant(0);
    let (publisher, _, _) = connect_with(
        &mut broker,
        connect_packet("v3", ProtocolVersion::V3_1_1),
        now,
    );
    for id in 1..=5u16 {
        let publish = Packet::Publish(Publish {
            dup: false,
            qos_pid: QosPid::ExactlyOnce(NonZeroU16::new(id).unwrap()),
            retain: false,
            topic: "t",
            properties: PublishProperties::default(),
            payload: b"x",
        });
        broker.handle_input(publisher, &bytes_of(publish, ProtocolVersion::V3_1_1), now);
    }
    assert!(
        !broker.is_closing(publisher),
        "five unreleased QoS 2 messages are fine in 3.1.1"
    );
    assert_eq!(
        drain(&mut broker, publisher, ProtocolVersion::V3_1_1).len(),
        5,
        "five PUBRECs"
    );
}

#[test]
fn expired_retained_messages_are_deleted_not_sent() {
    let mut broker = Broker::new(Config::default(), 1);
    let now = Instant(0);
    let publisher = connect(&mut broker, "pub", now);
    let publish = Packet::Publish(Publish {
        dup: false,
        qos_pid: QosPid::AtMostOnce,
        retain: true,
        topic: "r",
        properties: PublishProperties {
            message_expiry_interval: Some(1),
            ..PublishProperties::default()
        },
        payload: b"short-lived",
    });
    broker.handle_input(publisher, &bytes_of(publish, V5), now);
    assert_eq!(broker.retained_count(), 1);
    let later = now.plus_secs(2);
    let subscriber = connect(&mut broker, "sub", later);
    subscribe(&mut broker, subscriber, "r", QoS::AtMostOnce, later);
    assert!(
        drain(&mut broker, subscriber, V5).is_empty(),
        "nothing sent"
    );
    assert_eq!(broker.retained_count(), 0, "and deleted from the store");
}

#[test]
fn mqtt_3_1_3_9_a_clean_start_takeover_ends_the_session_and_publishes_its_delayed_will() {
    let mut broker = Broker::new(Config::default(), 1);
    let now = Instant(0);
    let watcher = connect(&mut broker, "watcher", now);
    subscribe(&mut broker, watcher, "wills/#", QoS::AtMostOnce, now);
    let will = Will {
        properties: WillProperties {
            will_delay_interval: Some(60),
            ..WillProperties::default()
        },
        topic: "wills/dev",
        payload: b"gone",
        qos: QoS::AtMostOnce,
        retain: false,
    };
    let with_will = Connect {
        will: Some(will),
        properties: ConnectProperties {
            session_expiry_interval: Some(300),
            ..ConnectProperties::default()
        },
        ..connect_packet("dev", V5)
    };
    let (device, _, _) = connect_with(&mut broker, with_will, now);
    // The connection drops: the will waits for its 60 s delay.
    broker.closed(device, now);
    assert!(drain(&mut broker, watcher, V5).is_empty());
    // A new connection with Clean Start ends that session: the will is due at once.
    connect_with(&mut broker, connect_packet("dev", V5), now.plus_secs(1));
    let out = drain(&mut broker, watcher, V5);
    assert_eq!(out.len(), 1, "the will is published when the session ends");
    let Packet::Publish(will) = decode_packet(&out[0], V5).unwrap() else {
        panic!("expected the will")
    };
    assert_eq!((will.topic, will.payload), ("wills/dev", &b"gone"[..]));
}

/// Two engines as two workers: what the port's mailboxes carry is moved between them by hand,
/// in the port's order: a worker reports the publications it took (flow control) after the
/// routing changes its deliveries made.
fn exchange(a: &mut Broker, b: &mut Broker, now: Instant) {
    fn send(from: &mut Broker, to: &mut Broker, now: Instant) {
        let (mut remote, mut replication, mut taken) = (Vec::new(), Vec::new(), Vec::new());
        from.take_remote(&mut remote);
        from.take_replication(&mut replication);
        from.take_taken(&mut taken);
        replication
            .into_iter()
            .for_each(|item| to.apply_replication(item));
        for (_, publications, bytes) in taken {
            to.remote_taken(from.config().worker, publications, bytes);
        }
        remote
            .into_iter()
            .for_each(|delivery| to.deliver_remote(delivery, now));
    }
    for _ in 0..3 {
        send(a, b, now);
        send(b, a, now);
    }
}

fn id_owned_by(worker: u16, prefix: &str) -> String {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|id| femtomq_core::broker::client_owner(id, 2) == worker)
        .unwrap()
}

#[test]
fn two_workers_route_messages_to_each_others_sessions() {
    let worker = |index| {
        Broker::new(
            Config {
                workers: 2,
                worker: index,
                ..Config::default()
            },
            9,
        )
    };
    let (mut a, mut b) = (worker(0), worker(1));
    let now = Instant(0);
    let (sub_id, pub_id) = (id_owned_by(1, "sub"), id_owned_by(0, "pub"));
    let subscriber = connect(&mut b, &sub_id, now);
    let publisher = connect(&mut a, &pub_id, now);
    subscribe(&mut b, subscriber, "w/#", QoS::AtLeastOnce, now);
    exchange(&mut a, &mut b, now);
    // A publish on worker 0 is matched there once and its copy travels to worker 1.
    publish(
        &mut a,
        publisher,
        "w/x",
        b"across",
        QosPid::AtLeastOnce(NonZeroU16::new(1).unwrap()),
        now,
    );
    assert!(
        b.output(subscriber).is_empty(),
        "nothing before the mailbox carries it"
    );
    exchange(&mut a, &mut b, now);
    let out = drain(&mut b, subscriber, V5);
    let Packet::Publish(received) = decode_packet(&out[0], V5).unwrap() else {
        panic!("expected PUBLISH")
    };
    assert_eq!((received.topic, received.payload), ("w/x", &b"across"[..]));

    // Retained messages stored on one worker are found by subscribers of the other.
    publish(&mut a, publisher, "w/kept", b"r", QosPid::AtMostOnce, now);
    let retained = Packet::Publish(Publish {
        dup: false,
        qos_pid: QosPid::AtMostOnce,
        retain: true,
        topic: "kept/1",
        properties: PublishProperties::default(),
        payload: b"stay",
    });
    a.handle_input(publisher, &bytes_of(retained, V5), now);
    exchange(&mut a, &mut b, now);
    drain(&mut b, subscriber, V5);
    let subscriptions = [Subscription {
        filter: "kept/#",
        options: SubscriptionOptions::with_qos(QoS::AtMostOnce),
    }];
    let subscribe_packet = Packet::Subscribe(Subscribe {
        packet_id: NonZeroU16::new(2).unwrap(),
        properties: SubscribeProperties::default(),
        subscriptions: Repeated::from_slice(&subscriptions),
    });
    b.handle_input(subscriber, &bytes_of(subscribe_packet, V5), now);
    let out = drain(&mut b, subscriber, V5);
    assert_eq!(out.len(), 2, "SUBACK and the retained message");
    let Packet::Publish(kept) = decode_packet(&out[1], V5).unwrap() else {
        panic!("expected the retained message")
    };
    assert!(kept.retain && kept.payload == b"stay");

    // When the subscriber's session ends, worker 0 stops routing to it.
    b.closed(subscriber, now);
    exchange(&mut a, &mut b, now);
    assert_eq!(
        a.subscription_count(),
        0,
        "the replica forgot the ended session's subscriptions"
    );

    // Client ids the engine assigns belong to it, so reconnections land on the same worker.
    let (anonymous, _, _) = connect_with(&mut b, connect_packet("", V5), now);
    let assigned = std::iter::from_fn(|| b.poll_event())
        .find_map(|event| match event {
            Event::ClientConnected {
                conn, client_id, ..
            } if conn == anonymous => Some(client_id),
            _ => None,
        })
        .unwrap();
    assert_eq!(femtomq_core::broker::client_owner(&assigned, 2), 1);
}

/// Two workers with small limits (a queue of 100, a window of 10): a QoS 1 subscriber of
/// `f/#` on worker 1, a publisher on worker 0.
fn two_workers_flow_setup() -> (Broker, Broker, ConnId, ConnId, String, Instant) {
    let worker = |index| {
        let mut config = Config {
            workers: 2,
            worker: index,
            ..Config::default()
        };
        config.limits.max_queued_messages = 100;
        config.limits.max_inflight = 10;
        Broker::new(config, 5)
    };
    let (mut a, mut b) = (worker(0), worker(1));
    let now = Instant(10_000);
    let (sub_id, pub_id) = (id_owned_by(1, "sub"), id_owned_by(0, "pub"));
    let subscriber = connect(&mut b, &sub_id, now);
    let publisher = connect(&mut a, &pub_id, now);
    subscribe(&mut b, subscriber, "f/#", QoS::AtLeastOnce, now);
    exchange(&mut a, &mut b, now);
    (a, b, subscriber, publisher, sub_id, now)
}

#[test]
fn a_subscriber_on_another_worker_holds_back_the_publisher_too() {
    let (mut a, mut b, subscriber, publisher, sub_id, now) = two_workers_flow_setup();
    // Worker 1's session falls behind on copies from worker 0 and says so...
    publish_qos1(&mut a, publisher, 60, now);
    exchange(&mut a, &mut b, now);
    assert!(
        !a.is_paused(publisher),
        "nothing held back before the news arrives"
    );
    // ...so the next message worker 0 routes to it holds the publisher back.
    publish(
        &mut a,
        publisher,
        "f/x",
        b"d",
        QosPid::AtLeastOnce(NonZeroU16::new(61).unwrap()),
        now,
    );
    assert!(
        a.is_paused(publisher),
        "held back for a session of another worker"
    );
    assert_eq!(b.stats().messages_dropped, 0);
    // The subscriber drains; worker 1 lifts the pressure and worker 0 reads again.
    while read_and_ack(&mut b, subscriber, now) > 0 {
        exchange(&mut a, &mut b, now);
    }
    exchange(&mut a, &mut b, now);
    assert!(
        !a.is_paused(publisher),
        "released when the subscriber caught up"
    );
    assert_eq!(b.queued_messages(&sub_id), Some(0));
    assert_eq!(b.stats().messages_dropped, 0, "nothing lost across workers");
}

#[test]
fn copies_in_flight_to_another_worker_are_bounded_so_that_none_is_dropped() {
    let (mut a, mut b, subscriber, publisher, sub_id, now) = two_workers_flow_setup();
    // 300 QoS 1 messages read at once: three times what the subscriber's queue holds.
    let mut input = Vec::new();
    for id in 1..=300u16 {
        input.extend(bytes_of(
            Packet::Publish(Publish {
                dup: false,
                qos_pid: QosPid::AtLeastOnce(NonZeroU16::new(id).unwrap()),
                retain: false,
                topic: "f/x",
                properties: PublishProperties::default(),
                payload: b"data",
            }),
            V5,
        ));
    }
    // Before worker 1 can say that its session fell behind, worker 0 may route only a quarter
    // of that queue's limit to it: the publisher is held back with the rest of its input unread.
    let used = a.handle_input(publisher, &input, now);
    assert!(used < input.len(), "held back with input left");
    assert!(a.is_paused(publisher));
    let mut rest = &input[used..];
    let mut received = 0;
    for _ in 0..1000 {
        if rest.is_empty() && received == 300 {
            break;
        }
        exchange(&mut a, &mut b, now);
        if !a.is_paused(publisher) && !rest.is_empty() {
            let used = a.handle_input(publisher, rest, now);
            rest = &rest[used..];
        }
        drain(&mut a, publisher, V5);
        exchange(&mut a, &mut b, now);
        // A slow subscriber: one window a round.
        received += read_and_ack(&mut b, subscriber, now);
    }
    assert_eq!(received, 300, "every message delivered");
    assert_eq!(
        b.stats().messages_dropped,
        0,
        "none dropped by the full queue"
    );
    assert_eq!(b.queued_messages(&sub_id), Some(0));
}
