//! Persistence: record frames (round trip, CRC, torn tails), the records the engine emits for
//! persistent sessions and retained messages, a broker rebuilt from them (`Broker::restore`,
//! from the log and from a snapshot), expiry on load, holding acknowledgements until the
//! records are durable (`Persistence::Durable`), and 0x97 when the store is full.

mod sim;

use femtomq_core::broker::persist::{
    DeliveryState, FrameError, SessionRecord, StoredMessage, WillRecord, decode_frame,
    encode_frame, pack_options, unpack_options,
};
use femtomq_core::broker::{Message, Persistence, Record};
use sim::*;
use std::sync::Arc;

const WALL: u64 = 1_700_000_000_000;

fn persist_config(persistence: Persistence) -> Config {
    Config {
        persistence,
        ..events_config()
    }
}

fn sim_with(persistence: Persistence) -> Sim {
    let mut sim = Sim::new(persist_config(persistence));
    let now = sim.now;
    sim.broker.set_wall_clock(WALL, now);
    sim
}

fn records(sim: &mut Sim) -> Vec<Record> {
    let mut out = Vec::new();
    sim.broker.take_records(&mut out);
    out
}

/// A new broker (a restart `later_ms` after `sim`'s clock) rebuilt from `log`.
fn restart(sim: &Sim, log: Vec<Record>, later_ms: u64) -> Sim {
    let mut next = Sim::new(persist_config(Persistence::Records));
    let now = next.now;
    let wall = WALL + sim.now.millis_since(T0) + later_ms;
    next.broker.set_wall_clock(wall, now);
    next.broker.restore(log, now);
    next.pump();
    next
}

fn every_record() -> Vec<Record> {
    let mut message = Message::new("a/b", b"payload", QoS::ExactlyOnce, true, Instant(0));
    message.properties.message_expiry_interval = Some(60);
    message.properties.content_type = Some("text/plain".into());
    message.properties.correlation_data = Some(Box::from(&b"\x00\x01"[..]));
    message
        .properties
        .set_user_properties([("k", "v"), ("k2", "é")]);
    let stored = StoredMessage {
        received_at_ms: WALL,
        message: Arc::new(message),
    };
    let id: Box<str> = "client".into();
    vec![
        Record::Session(SessionRecord {
            client_id: id.clone(),
            expiry_secs: 300,
            disconnected_at_ms: Some(WALL),
            will: Some(WillRecord {
                message: stored.clone(),
                delay_secs: 10,
            }),
            will_due_ms: Some(WALL + 10_000),
            username: Some("user".into()),
            listener: 2,
        }),
        Record::Subscribed {
            client_id: id.clone(),
            filter: "a/#".into(),
            options: pack_options(SubscriptionOptions::with_qos(QoS::AtLeastOnce)),
            identifier: Some(7),
        },
        Record::Unsubscribed {
            client_id: id.clone(),
            filter: "x".into(),
        },
        Record::Delivery {
            client_id: id.clone(),
            seq: 9,
            qos: 2,
            retain: false,
            subscription_ids: Box::from(&[7u32][..]),
            state: DeliveryState::AwaitingPubRec(3),
            message: stored.clone(),
        },
        Record::DeliveryMoved {
            client_id: id.clone(),
            seq: 9,
            state: DeliveryState::AwaitingPubComp(3),
        },
        Record::DeliveryDone {
            client_id: id.clone(),
            seq: 9,
        },
        Record::InboundQos2 {
            client_id: id.clone(),
            packet_id: 12,
        },
        Record::InboundReleased {
            client_id: id.clone(),
            packet_id: 12,
        },
        Record::Retained(stored),
        Record::RetainedDeleted {
            topic: "a/b".into(),
        },
        Record::SessionDeleted { client_id: id },
    ]
}

#[test]
fn every_record_survives_a_frame_round_trip() {
    let mut bytes = Vec::new();
    for (seq, record) in every_record().iter().enumerate() {
        encode_frame(seq as u64, record, &mut bytes);
    }
    let mut rest = &bytes[..];
    for (seq, record) in every_record().into_iter().enumerate() {
        let (got_seq, got, used) = decode_frame(rest).expect("frame decodes");
        assert_eq!((got_seq, &got), (seq as u64, &record));
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
}

#[test]
fn a_flipped_byte_or_a_torn_frame_is_detected() {
    let mut bytes = Vec::new();
    let record = every_record().remove(3);
    let len = encode_frame(1, &record, &mut bytes);
    for position in 0..len {
        let mut broken = bytes.clone();
        broken[position] ^= 0x10;
        assert!(
            decode_frame(&broken).is_err(),
            "flip at {position} not detected"
        );
    }
    for cut in 0..len {
        assert_eq!(
            decode_frame(&bytes[..cut]),
            Err(FrameError::Truncated),
            "cut {cut}"
        );
    }
    assert_eq!(decode_frame(&[0u8; 64]), Err(FrameError::Corrupt));
}

#[test]
fn subscription_options_pack_and_unpack() {
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        for rh in [
            RetainHandling::SendOnSubscribe,
            RetainHandling::SendIfNew,
            RetainHandling::DoNotSend,
        ] {
            for flags in 0..4 {
                let options = SubscriptionOptions {
                    qos,
                    no_local: flags & 1 != 0,
                    retain_as_published: flags & 2 != 0,
                    retain_handling: rh,
                };
                assert_eq!(unpack_options(pack_options(options)), Some(options));
            }
        }
    }
    assert_eq!(unpack_options(0x33), None);
}

#[test]
fn no_records_without_persistence() {
    let mut sim = sim_with(Persistence::Off);
    let sub = sim.connect(ConnectSpec::v5("sub").persistent(3600));
    sim.subscribe(sub, "t/#", QoS::AtLeastOnce);
    sim.drop_connection(sub);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish_spec(
        publisher,
        &PublishSpec::new("t/1", b"x", QoS::AtLeastOnce).retain(),
    );
    assert!(records(&mut sim).is_empty());
    assert_eq!(sim.broker.last_record(), 0);
}

#[test]
fn sessions_without_expiry_write_nothing() {
    let mut sim = sim_with(Persistence::Records);
    let sub = sim.connect(ConnectSpec::v5("sub"));
    sim.subscribe(sub, "t/#", QoS::AtLeastOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish(publisher, "t/1", b"x", QoS::AtLeastOnce);
    assert!(records(&mut sim).is_empty());
}

/// Builds a session with two subscriptions (one with an identifier), two QoS 1 messages
/// awaiting PUBACK, a QoS 2 message awaiting PUBCOMP, three queued messages, an inbound QoS 2
/// packet id awaiting PUBREL, a will with a delay, and a retained message.
fn rich_state(sim: &mut Sim) -> (Client, ConnectSpec, u16) {
    let spec = ConnectSpec::v5("sub")
        .persistent(3600)
        .receive_maximum(3)
        .will(WillSpec {
            topic: "wills/sub".into(),
            payload: b"gone".to_vec(),
            qos: QoS::AtLeastOnce,
            delay: Some(30),
            ..WillSpec::default()
        });
    let sub = sim.connect(spec.clone());
    sim.set_acks(sub, Acks::Manual);
    sim.subscribe(sub, "t/#", QoS::ExactlyOnce);
    sim.subscribe_many(
        sub,
        &[("u/+", SubscriptionOptions::with_qos(QoS::AtLeastOnce))],
        Some(42),
    );
    let watcher = sim.connect(ConnectSpec::v5("watcher"));
    sim.subscribe(watcher, "wills/#", QoS::AtLeastOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish_spec(
        publisher,
        &PublishSpec::new("t/r", b"kept", QoS::AtLeastOnce).retain(),
    );
    sim.publish(publisher, "u/1", b"m1", QoS::AtLeastOnce);
    sim.publish(publisher, "t/2", b"m2", QoS::ExactlyOnce);
    sim.publish(publisher, "t/3", b"m3", QoS::ExactlyOnce);
    sim.publish(publisher, "t/4", b"m4", QoS::AtLeastOnce);
    sim.publish(publisher, "t/5", b"m5", QoS::ExactlyOnce);
    let got = sim.take(sub);
    let ids: Vec<u16> = got
        .iter()
        .filter_map(|rx| match rx {
            Rx::Publish(p) => p.packet_id,
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 3, "{got:?}"); // the window
    // PUBREC for m2 (t/2): it awaits PUBCOMP.
    sim.pubrec(sub, ids[2]);
    // The subscriber also publishes QoS 2 without releasing it.
    let inbound = sim.publish(sub, "elsewhere", b"q2", QoS::ExactlyOnce);
    sim.take(sub);
    sim.drop_connection(sub);
    (sub, spec, inbound)
}

fn check_restored(sim: &mut Sim, sub: Client, spec: &ConnectSpec, inbound: u16) {
    assert_eq!(sim.broker.retained_count(), 1);
    assert_eq!(sim.broker.queued_messages("sub"), Some(3));
    let watcher = sim.connect(ConnectSpec::v5("watcher2"));
    sim.subscribe(watcher, "wills/#", QoS::AtLeastOnce);
    let ack = sim.reconnect(sub, spec);
    assert!(ack.session_present);
    let got = sim.take(sub);
    let summary: Vec<String> = got
        .iter()
        .map(|rx| match rx {
            Rx::Publish(p) => format!(
                "{} {} dup={} ids={:?}",
                p.topic,
                String::from_utf8_lossy(&p.payload),
                p.dup,
                p.subscription_identifiers
            ),
            Rx::PubRel(id, _) => format!("pubrel {id}"),
            other => format!("{other:?}"),
        })
        .collect();
    // Inflight resent in order with DUP (PUBREL for the released one), the window (3) full.
    assert_eq!(
        summary,
        [
            "t/r kept dup=true ids=[]",
            "u/1 m1 dup=true ids=[42]",
            "pubrel 3",
        ],
        "{got:?}"
    );
    // Completing them lets the queue out.
    sim.set_acks(sub, Acks::Auto);
    for rx in got {
        match rx {
            Rx::Publish(p) => sim.ack(sub, &p),
            Rx::PubRel(id, _) => sim.pubcomp(sub, id),
            _ => {}
        }
    }
    let rest: Vec<String> = sim
        .take_publishes(sub)
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect();
    assert_eq!(rest, ["m3", "m4", "m5"]);
    // The inbound QoS 2 id still awaits PUBREL.
    sim.pubrel(sub, inbound);
    assert_eq!(sim.take(sub), [Rx::PubComp(inbound, ReasonCode::SUCCESS)]);
    // Subscriptions are back: a new message arrives.
    let publisher = sim.connect(ConnectSpec::v5("pub2"));
    sim.publish(publisher, "u/9", b"new", QoS::AtLeastOnce);
    assert_eq!(sim.take_payloads(sub), ["new"]);
    // The connection's will was restored: dropping it publishes after the delay.
    sim.drop_connection(sub);
    sim.advance_secs(31);
    assert_eq!(sim.take_payloads(watcher), ["gone"]);
}

#[test]
fn a_broker_restored_from_its_log_resumes_the_session() {
    let mut sim = sim_with(Persistence::Records);
    let (sub, spec, inbound) = rich_state(&mut sim);
    let log = records(&mut sim);
    let mut next = restart(&sim, log, 1000);
    next.clients = sim.clients;
    for client in &mut next.clients {
        client.closed = true;
    }
    check_restored(&mut next, sub, &spec, inbound);
}

#[test]
fn a_broker_restored_from_a_snapshot_resumes_the_session() {
    let mut sim = sim_with(Persistence::Records);
    let (sub, spec, inbound) = rich_state(&mut sim);
    records(&mut sim);
    let mut snapshot = Vec::new();
    sim.broker.snapshot(&mut snapshot);
    // A snapshot holds the state, not the history.
    assert!(!snapshot.iter().any(|r| matches!(
        r,
        Record::DeliveryDone { .. } | Record::DeliveryMoved { .. }
    )));
    let mut next = restart(&sim, snapshot, 1000);
    next.clients = sim.clients;
    for client in &mut next.clients {
        client.closed = true;
    }
    check_restored(&mut next, sub, &spec, inbound);
}

#[test]
fn a_session_connected_at_the_crash_publishes_its_will_after_the_delay() {
    let mut sim = sim_with(Persistence::Records);
    let spec = ConnectSpec::v5("dev").persistent(600).will(WillSpec {
        topic: "wills/dev".into(),
        payload: b"lost".to_vec(),
        qos: QoS::AtLeastOnce,
        delay: Some(5),
        ..WillSpec::default()
    });
    sim.connect(spec);
    let log = records(&mut sim);
    let mut next = restart(&sim, log, 0);
    let watcher = next.connect(ConnectSpec::v5("watcher"));
    next.subscribe(watcher, "wills/#", QoS::AtLeastOnce);
    next.advance_secs(4);
    assert!(next.take_payloads(watcher).is_empty());
    next.advance_secs(2);
    assert_eq!(next.take_payloads(watcher), ["lost"]);
}

#[test]
fn expired_sessions_and_messages_are_removed_on_load() {
    let mut sim = sim_with(Persistence::Records);
    let short = sim.connect(ConnectSpec::v5("short").persistent(10));
    sim.subscribe(short, "t/#", QoS::AtLeastOnce);
    sim.drop_connection(short);
    let long = sim.connect(ConnectSpec::v5("long").persistent(3600));
    sim.subscribe(long, "t/#", QoS::AtLeastOnce);
    sim.drop_connection(long);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish_spec(
        publisher,
        &PublishSpec::new("t/a", b"brief", QoS::AtLeastOnce).expiry(5),
    );
    sim.publish(publisher, "t/b", b"lasting", QoS::AtLeastOnce);
    sim.publish_spec(
        publisher,
        &PublishSpec::new("t/r", b"old", QoS::AtLeastOnce)
            .retain()
            .expiry(5),
    );
    let log = records(&mut sim);
    let mut next = restart(&sim, log, 60_000);
    assert_eq!(next.broker.queued_messages("short"), None);
    assert_eq!(next.broker.queued_messages("long"), Some(1));
    assert_eq!(next.broker.retained_count(), 0);
    let (long, _) = next.connect_ack(&ConnectSpec::v5("long").persistent(3600).clean(false));
    assert_eq!(next.take_payloads(long), ["lasting"]);
}

#[test]
fn a_clean_start_or_expiry_zero_deletes_the_stored_session() {
    let mut sim = sim_with(Persistence::Records);
    let c = sim.connect(ConnectSpec::v5("c").persistent(60));
    sim.subscribe(c, "t", QoS::AtLeastOnce);
    sim.disconnect_with_expiry(c, ReasonCode::SUCCESS, 0);
    let log = records(&mut sim);
    assert!(matches!(log.last(), Some(Record::SessionDeleted { .. })));
    let next = restart(&sim, log, 0);
    assert_eq!(next.broker.queued_messages("c"), None);
}

#[test]
fn acknowledgements_wait_until_the_records_are_durable() {
    let mut sim = sim_with(Persistence::Durable);
    let sub_conn = sim.open(V5);
    let rx = sim.connect_raw(sub_conn, &ConnectSpec::v5("sub").persistent(3600));
    // CONNACK of a persistent session waits for its session record.
    assert!(rx.is_empty(), "{rx:?}");
    let seq = sim.broker.take_records(&mut Vec::new());
    sim.broker.durable(seq, sim.now);
    sim.pump();
    assert!(matches!(sim.take(sub_conn).first(), Some(Rx::ConnAck(_))));
    sim.send(
        sub_conn,
        Packet::Subscribe(femtomq_core::codec::Subscribe {
            packet_id: pid(1),
            properties: Default::default(),
            subscriptions: femtomq_core::codec::Repeated::from_slice(&[
                femtomq_core::codec::Subscription {
                    filter: "t/#",
                    options: SubscriptionOptions::with_qos(QoS::AtLeastOnce),
                },
            ]),
        }),
    );
    assert!(sim.take(sub_conn).is_empty());
    let seq = sim.broker.take_records(&mut Vec::new());
    sim.broker.durable(seq, sim.now);
    sim.pump();
    assert!(matches!(sim.take(sub_conn).first(), Some(Rx::SubAck(..))));
    // A non-persistent publisher: its PUBACK waits for the delivery record.
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.set_acks(sub_conn, Acks::Manual);
    let id = sim.publish(publisher, "t/1", b"x", QoS::AtLeastOnce);
    assert!(sim.take(publisher).is_empty());
    assert!(sim.take(sub_conn).is_empty());
    let seq = sim.broker.take_records(&mut Vec::new());
    sim.broker.durable(seq - 1, sim.now);
    sim.pump();
    assert!(sim.take(publisher).is_empty(), "released before its record");
    sim.broker.durable(seq, sim.now);
    sim.pump();
    assert_eq!(sim.take(publisher), [Rx::PubAck(id, ReasonCode::SUCCESS)]);
    assert_eq!(sim.take_payloads(sub_conn), ["x"]);
    // QoS 0 to a non-persistent session with nothing to persist is not held.
    let plain = sim.connect(ConnectSpec::v5("plain"));
    sim.subscribe(plain, "q/#", QoS::AtMostOnce);
    sim.publish(publisher, "q/1", b"zero", QoS::AtMostOnce);
    assert_eq!(sim.take_payloads(plain), ["zero"]);
}

#[test]
fn acknowledgements_go_at_once_with_records_only() {
    let mut sim = sim_with(Persistence::Records);
    let sub = sim.connect(ConnectSpec::v5("sub").persistent(3600));
    sim.subscribe(sub, "t/#", QoS::AtLeastOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    let id = sim.publish(publisher, "t/1", b"x", QoS::AtLeastOnce);
    assert_eq!(sim.take(publisher), [Rx::PubAck(id, ReasonCode::SUCCESS)]);
}

#[test]
fn a_full_store_refuses_persistent_messages_with_quota_exceeded() {
    let mut sim = sim_with(Persistence::Records);
    let sub = sim.connect(ConnectSpec::v5("sub").persistent(3600));
    sim.subscribe(sub, "t/#", QoS::AtLeastOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.broker.set_store_full(true);
    let id = sim.publish(publisher, "t/1", b"x", QoS::AtLeastOnce);
    assert_eq!(
        sim.take(publisher),
        [Rx::PubAck(id, ReasonCode::QUOTA_EXCEEDED)]
    );
    assert_eq!(sim.broker.stats().persist_refused, 1);
    // QoS 0 still flows, and the broker serves on once there is room again.
    sim.publish(publisher, "t/0", b"zero", QoS::AtMostOnce);
    assert_eq!(sim.take_payloads(sub), ["zero"]);
    sim.broker.set_store_full(false);
    let id = sim.publish(publisher, "t/2", b"y", QoS::AtLeastOnce);
    assert_eq!(sim.take(publisher), [Rx::PubAck(id, ReasonCode::SUCCESS)]);
    // 3.1.1 cannot be told: the connection closes without an acknowledgement.
    sim.broker.set_store_full(true);
    let old = sim.connect(ConnectSpec::v311("old"));
    sim.publish(old, "t/3", b"z", QoS::AtLeastOnce);
    assert!(sim.take(old).is_empty());
    assert!(sim.client(old).closed);
}

/// Two workers under `sync = always`: a QoS 2 message from a publisher on worker 0 to a
/// persistent subscriber on worker 1. Each worker has its own log; whatever prefix of worker 0's
/// records was durable at a crash (worker 1's all were), the restored subscriber gets the
/// message at most once, also after the publisher sends it again (it saw no PUBREC). The copy
/// for worker 1 waits for worker 0's records, the inbound packet identifier among them.
mod two_logs {
    use core::num::NonZeroU16;
    use femtomq_core::broker::{Broker, Config, ConnId, Persistence, Record, client_owner};
    use femtomq_core::codec::*;
    use femtomq_core::{Instant, ProtocolVersion, QoS, SubscriptionOptions};

    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn bytes_of(packet: Packet<'_>) -> Vec<u8> {
        let mut buf = vec![0u8; packet.encoded_len(V5).unwrap()];
        packet.encode(V5, &mut buf).unwrap();
        buf
    }

    fn drain(broker: &mut Broker, conn: ConnId) -> Vec<Vec<u8>> {
        let out = broker.output(conn).to_vec();
        broker.consume_output(conn, out.len(), Instant(0));
        let mut packets = Vec::new();
        let mut rest = &out[..];
        while !rest.is_empty() {
            match decode(rest, V5, MAX_PACKET_SIZE).unwrap() {
                Decoded::Packet { len, .. } => {
                    packets.push(rest[..len].to_vec());
                    rest = &rest[len..];
                }
                Decoded::Incomplete { .. } => panic!("partial packet"),
            }
        }
        packets
    }

    fn worker(index: u16, records: Vec<Record>) -> Broker {
        let config = Config {
            workers: 2,
            worker: index,
            persistence: Persistence::Durable,
            ..Config::default()
        };
        let mut broker = Broker::new(config, 3);
        broker.set_wall_clock(super::WALL, Instant(0));
        broker.restore(records, Instant(0));
        broker
    }

    fn id_owned_by(worker: u16, prefix: &str) -> String {
        (0..)
            .map(|n| format!("{prefix}-{n}"))
            .find(|id| client_owner(id, 2) == worker)
            .unwrap()
    }

    fn connect(broker: &mut Broker, client_id: &str) -> ConnId {
        let conn = broker.open(0, Instant(0));
        let properties = ConnectProperties {
            session_expiry_interval: Some(300),
            ..ConnectProperties::default()
        };
        let packet = Packet::Connect(Connect {
            version: V5,
            clean_start: false,
            keep_alive: 0,
            properties,
            client_id,
            will: None,
            username: None,
            password: None,
        });
        broker.handle_input(conn, &bytes_of(packet), Instant(0));
        conn
    }

    fn subscribe(broker: &mut Broker, conn: ConnId, qos: QoS) {
        let filters = [Subscription {
            filter: "x/#",
            options: SubscriptionOptions::with_qos(qos),
        }];
        let subscribe = Packet::Subscribe(Subscribe {
            packet_id: NonZeroU16::new(1).unwrap(),
            properties: SubscribeProperties::default(),
            subscriptions: Repeated::from_slice(&filters),
        });
        broker.handle_input(conn, &bytes_of(subscribe), Instant(0));
    }

    /// Makes everything durable, carries copies and routing changes between the workers
    /// (keeping each worker's records in `logs`), until nothing moves.
    fn settle(workers: &mut [Broker; 2], logs: &mut [Vec<Record>; 2]) {
        for _ in 0..4 {
            for (index, log) in logs.iter_mut().enumerate() {
                let last = workers[index].take_records(log);
                workers[index].durable(last, Instant(0));
            }
            let (mut remote, mut replication) = (Vec::new(), Vec::new());
            workers[0].take_remote(&mut remote);
            workers[0].take_replication(&mut replication);
            replication
                .into_iter()
                .for_each(|r| workers[1].apply_replication(r));
            remote
                .into_iter()
                .for_each(|d| workers[1].deliver_remote(d, Instant(0)));
            let (mut remote, mut replication) = (Vec::new(), Vec::new());
            workers[1].take_remote(&mut remote);
            workers[1].take_replication(&mut replication);
            replication
                .into_iter()
                .for_each(|r| workers[0].apply_replication(r));
            remote
                .into_iter()
                .for_each(|d| workers[0].deliver_remote(d, Instant(0)));
            confirm(workers);
        }
    }

    /// Carries each worker's confirmations of durable copies to their origin.
    fn confirm(workers: &mut [Broker; 2]) {
        for index in 0..2 {
            let mut confirmations = Vec::new();
            workers[index].take_confirmations(&mut confirmations);
            for (origin, seq) in confirmations {
                workers[usize::from(origin)].remote_durable(index as u16, seq, Instant(0));
            }
        }
    }

    fn publish(broker: &mut Broker, conn: ConnId, dup: bool) {
        let packet = Packet::Publish(Publish {
            dup,
            qos_pid: QosPid::ExactlyOnce(NonZeroU16::new(1).unwrap()),
            retain: false,
            topic: "x/once",
            properties: PublishProperties::default(),
            payload: b"once",
        });
        broker.handle_input(conn, &bytes_of(packet), Instant(0));
    }

    /// PUBLISH packets of the message on `conn` (each answered with PUBREC/PUBCOMP as due).
    fn received(broker: &mut Broker, conn: ConnId) -> usize {
        let mut count = 0;
        for raw in drain(broker, conn) {
            match decode_packet(&raw, V5).unwrap() {
                Packet::Publish(p) if p.payload == b"once" => {
                    count += 1;
                    if let QosPid::ExactlyOnce(id) = p.qos_pid {
                        let ack = bytes_of(Packet::PubRec(Ack::success(id)));
                        broker.handle_input(conn, &ack, Instant(0));
                    }
                }
                Packet::PubRel(ack) => {
                    let comp = bytes_of(Packet::PubComp(Ack::success(ack.packet_id)));
                    broker.handle_input(conn, &comp, Instant(0));
                }
                _ => {}
            }
        }
        count
    }

    /// Where the crash comes in a QoS 2 publish on worker 0 for a subscriber on worker 1.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum CrashPoint {
        /// Worker 0's block of the publish was not durable: the publisher sends it again.
        BeforePublisherRecords,
        /// Worker 0's block was durable, worker 1 had not stored its copy (it was in the
        /// mailbox): no PUBREC went out, the publisher sends it again.
        BeforeCopyStored,
        /// Both were durable but the PUBREC did not reach the publisher: it sends it again.
        BeforePubRecArrived,
        /// Both were durable and the PUBREC arrived.
        AfterPubRec,
    }

    /// The crash at `point`; returns how often the restarted subscriber gets the message.
    fn crash_once(point: CrashPoint) -> usize {
        let publish_durable = point != CrashPoint::BeforePublisherRecords;
        let (sub_id, pub_id) = (id_owned_by(1, "sub"), id_owned_by(0, "pub"));
        let mut workers = [worker(0, Vec::new()), worker(1, Vec::new())];
        let mut logs: [Vec<Record>; 2] = [Vec::new(), Vec::new()];
        let subscriber = connect(&mut workers[1], &sub_id);
        subscribe(&mut workers[1], subscriber, QoS::ExactlyOnce);
        let publisher = connect(&mut workers[0], &pub_id);
        settle(&mut workers, &mut logs);
        drain(&mut workers[0], publisher);
        drain(&mut workers[1], subscriber);
        publish(&mut workers[0], publisher, false);
        if point == CrashPoint::BeforeCopyStored {
            let last = workers[0].take_records(&mut logs[0]);
            workers[0].durable(last, Instant(0));
            let mut remote = Vec::new();
            workers[0].take_remote(&mut remote);
            assert_eq!(
                remote.len(),
                1,
                "the copy leaves once worker 0's records are durable"
            );
            assert!(
                drain(&mut workers[0], publisher).is_empty(),
                "no PUBREC before worker 1 stored its copy"
            );
        } else if publish_durable {
            settle(&mut workers, &mut logs);
        } else {
            let mut block = Vec::new();
            workers[0].take_records(&mut block);
            let mut remote = Vec::new();
            workers[0].take_remote(&mut remote);
            assert!(remote.is_empty(), "the copy waits for worker 0's records");
            // Whatever worker 1 was given is durable there.
            for delivery in remote {
                workers[1].deliver_remote(delivery, Instant(0));
            }
            let last = workers[1].take_records(&mut logs[1]);
            workers[1].durable(last, Instant(0));
        }
        // The crash: each worker restarts from what it had durable.
        let mut logs = [logs[0].clone(), logs[1].clone()];
        let mut restarted = [worker(0, logs[0].clone()), worker(1, logs[1].clone())];
        settle(&mut restarted, &mut logs);
        let publisher = connect(&mut restarted[0], &pub_id);
        if point != CrashPoint::AfterPubRec {
            // No PUBREC reached the publisher: it sends the message again.
            publish(&mut restarted[0], publisher, true);
        }
        settle(&mut restarted, &mut logs);
        let subscriber = connect(&mut restarted[1], &sub_id);
        let mut count = 0;
        for _ in 0..4 {
            count += received(&mut restarted[1], subscriber);
            settle(&mut restarted, &mut logs);
        }
        count
    }

    /// A PUBACK acknowledges a message only once every worker that got a copy for a persistent
    /// session stored it durably: worker 0's own records are not enough (a crash before worker
    /// 1 wrote its copy would lose an acknowledged message).
    #[test]
    fn an_acknowledgement_waits_for_the_copies_stored_by_other_workers() {
        let (sub_id, pub_id) = (id_owned_by(1, "sub"), id_owned_by(0, "pub"));
        let mut workers = [worker(0, Vec::new()), worker(1, Vec::new())];
        let mut logs: [Vec<Record>; 2] = [Vec::new(), Vec::new()];
        let subscriber = connect(&mut workers[1], &sub_id);
        subscribe(&mut workers[1], subscriber, QoS::AtLeastOnce);
        let publisher = connect(&mut workers[0], &pub_id);
        settle(&mut workers, &mut logs);
        drain(&mut workers[0], publisher);
        // The subscriber is offline: its copy is queued, and recorded, on worker 1.
        workers[1].closed(subscriber, Instant(0));
        settle(&mut workers, &mut logs);
        let packet = Packet::Publish(Publish {
            dup: false,
            qos_pid: QosPid::AtLeastOnce(NonZeroU16::new(7).unwrap()),
            retain: false,
            topic: "x/one",
            properties: PublishProperties::default(),
            payload: b"one",
        });
        workers[0].handle_input(publisher, &bytes_of(packet), Instant(0));
        let last = workers[0].take_records(&mut logs[0]);
        workers[0].durable(last, Instant(0));
        assert!(
            workers[0].output(publisher).is_empty(),
            "PUBACK before the copy left worker 0"
        );
        let mut remote = Vec::new();
        workers[0].take_remote(&mut remote);
        assert_eq!(
            remote.len(),
            1,
            "the copy goes once worker 0's records are durable"
        );
        for delivery in remote {
            workers[1].deliver_remote(delivery, Instant(0));
        }
        confirm(&mut workers);
        assert!(
            workers[0].output(publisher).is_empty(),
            "PUBACK before worker 1's record of the copy was durable"
        );
        let last = workers[1].take_records(&mut logs[1]);
        assert!(
            logs[1].iter().any(|r| matches!(r, Record::Delivery { .. })),
            "worker 1 records the queued copy"
        );
        workers[1].durable(last, Instant(0));
        confirm(&mut workers);
        let acks: Vec<Vec<u8>> = drain(&mut workers[0], publisher);
        assert_eq!(acks.len(), 1, "one PUBACK once both are durable");
        assert!(matches!(
            decode_packet(&acks[0], V5).unwrap(),
            Packet::PubAck(ack) if ack.packet_id.get() == 7
        ));
    }

    #[test]
    fn a_qos2_message_for_another_workers_session_is_delivered_once_whatever_the_crash_point() {
        for point in [
            CrashPoint::BeforePublisherRecords,
            CrashPoint::BeforeCopyStored,
            CrashPoint::BeforePubRecArrived,
            CrashPoint::AfterPubRec,
        ] {
            assert_eq!(crash_once(point), 1, "delivered once (crash {point:?})");
        }
    }
}

#[test]
fn a_disconnected_session_keeps_the_time_it_disconnected() {
    let mut sim = sim_with(Persistence::Records);
    let sub = sim.connect(ConnectSpec::v5("sub").persistent(3600));
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    sim.advance_secs(3);
    // Acknowledgements and written output move a connected session's progress time…
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish(publisher, "t", b"seen", QoS::AtLeastOnce);
    assert_eq!(sim.take_payloads(sub), ["seen"]);
    sim.drop_connection(sub);
    let disconnected_ms = WALL + sim.now.millis_since(T0);
    // …but once it is gone, queueing for it and time passing do not move when it left.
    sim.advance_secs(5);
    sim.publish(publisher, "t", b"queued", QoS::AtLeastOnce);
    sim.advance_secs(5);
    records(&mut sim);
    let mut snapshot = Vec::new();
    sim.broker.snapshot(&mut snapshot);
    let stored = snapshot.iter().find_map(|record| match record {
        Record::Session(session) if &*session.client_id == "sub" => {
            Some(session.disconnected_at_ms)
        }
        _ => None,
    });
    assert_eq!(stored, Some(Some(disconnected_ms)));
}
