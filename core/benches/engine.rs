//! Engine hot-path benchmark without sockets: the cost per message of decoding, routing and
//! encoding, for the shapes of `femtomq bench`. Packets are encoded before the clock starts;
//! every subscriber's output is taken (as the port does) and QoS 1 deliveries are acknowledged.
//!
//! `cargo bench -p femtomq-core --bench engine` prints nanoseconds per message (noisy on shared
//! machines); `cargo xtask bench engine` runs it under callgrind and prints instructions per
//! message, which are exact and repeatable. `ENGINE_BENCH_MESSAGES` sets the message count.

use std::hint::black_box;
use std::num::NonZeroU16;
use std::time::Instant as Clock;

use femtomq_core::broker::{Broker, Config, ConnId};
use femtomq_core::codec::{
    Ack, Connect, ConnectProperties, Decoded, MAX_PACKET_SIZE, Packet, Publish, PublishProperties,
    QosPid, Repeated, Subscribe, SubscribeProperties, Subscription, decode,
};
use femtomq_core::{Instant, ProtocolVersion, QoS, SubscriptionOptions};

const V: ProtocolVersion = ProtocolVersion::V3_1_1;

fn encode(packet: &Packet<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + packet.encoded_len(V).unwrap(), 0);
    packet.encode(V, &mut out[start..]).unwrap();
}

fn connect(broker: &mut Broker, id: &str) -> ConnId {
    let conn = broker.open(0, Instant(0));
    let mut bytes = Vec::new();
    encode(
        &Packet::Connect(Connect {
            version: V,
            clean_start: true,
            keep_alive: 0,
            properties: ConnectProperties::default(),
            client_id: id,
            will: None,
            username: None,
            password: None,
        }),
        &mut bytes,
    );
    broker.handle_input(conn, &bytes, Instant(0));
    conn
}

fn subscribe(broker: &mut Broker, conn: ConnId, filter: &str, qos: QoS) {
    let subscriptions = [Subscription {
        filter,
        options: SubscriptionOptions::with_qos(qos),
    }];
    let mut bytes = Vec::new();
    encode(
        &Packet::Subscribe(Subscribe {
            packet_id: NonZeroU16::MIN,
            properties: SubscribeProperties::default(),
            subscriptions: Repeated::from_slice(&subscriptions),
        }),
        &mut bytes,
    );
    broker.handle_input(conn, &bytes, Instant(0));
}

/// Takes a subscriber's output; acknowledges its QoS 1 deliveries. Returns messages received.
fn take(broker: &mut Broker, conn: ConnId, buffer: &mut Vec<u8>, acks: &mut Vec<u8>) -> usize {
    broker.swap_output(conn, buffer, Instant(0));
    let mut rest = &buffer[..];
    let mut count = 0;
    acks.clear();
    while let Ok(Decoded::Packet { packet, len }) = decode(rest, V, MAX_PACKET_SIZE) {
        if let Packet::Publish(publish) = packet {
            count += 1;
            if let QosPid::AtLeastOnce(id) = publish.qos_pid {
                encode(&Packet::PubAck(Ack::success(id)), acks);
            }
        }
        rest = &rest[len..];
    }
    if !acks.is_empty() {
        broker.handle_input(conn, acks, Instant(0));
    }
    count
}

struct Scenario {
    name: &'static str,
    publishers: usize,
    subscribers: usize,
    qos: QoS,
    batch: usize,
}

fn run(scenario: &Scenario, messages: usize) -> (usize, f64) {
    // Default limits but for the queues and output, which must hold a whole round of the
    // benchmark (the default inflight window of 32 is kept: its cost is part of the figure).
    let mut config = Config::default();
    config.limits.max_queued_messages = 100_000;
    config.limits.max_queued_bytes = u32::MAX;
    config.limits.max_output_bytes = u32::MAX;
    let mut broker = Broker::new(config, 1);
    let subscribers: Vec<ConnId> = (0..scenario.subscribers)
        .map(|i| {
            let conn = connect(&mut broker, &format!("s{i}"));
            subscribe(&mut broker, conn, "site/1/device/+/telemetry", scenario.qos);
            conn
        })
        .collect();
    let publishers: Vec<ConnId> = (0..scenario.publishers)
        .map(|i| connect(&mut broker, &format!("p{i}")))
        .collect();
    let mut buffer = Vec::new();
    let mut acks = Vec::new();
    for &conn in subscribers.iter().chain(&publishers) {
        broker.swap_output(conn, &mut buffer, Instant(0));
    }
    // One batch of PUBLISH packets per publisher, as one read would bring them.
    let payload = [0x5Au8; 64];
    let batches: Vec<Vec<u8>> = (0..scenario.publishers)
        .map(|_| {
            let mut bytes = Vec::new();
            for i in 0..scenario.batch {
                let qos_pid = match scenario.qos {
                    QoS::AtMostOnce => QosPid::AtMostOnce,
                    _ => QosPid::AtLeastOnce(NonZeroU16::new(i as u16 + 1).unwrap()),
                };
                let publish = Publish {
                    dup: false,
                    qos_pid,
                    retain: false,
                    topic: "site/1/device/00042/telemetry",
                    properties: PublishProperties::default(),
                    payload: &payload,
                };
                encode(&Packet::Publish(publish), &mut bytes);
            }
            bytes
        })
        .collect();
    let rounds = messages / (scenario.publishers * scenario.batch);
    let start = Clock::now();
    let mut delivered = 0;
    for _ in 0..rounds {
        for (conn, bytes) in publishers.iter().zip(&batches) {
            black_box(broker.handle_input(*conn, bytes, Instant(0)));
            broker.swap_output(*conn, &mut buffer, Instant(0));
        }
        for &conn in &subscribers {
            delivered += take(&mut broker, conn, &mut buffer, &mut acks);
        }
    }
    let elapsed = start.elapsed().as_nanos() as f64;
    (delivered, elapsed / delivered.max(1) as f64)
}

fn main() {
    let messages: usize = std::env::var("ENGINE_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let scenarios = [
        Scenario {
            name: "fanin-qos0",
            publishers: 16,
            subscribers: 1,
            qos: QoS::AtMostOnce,
            batch: 32,
        },
        Scenario {
            name: "fanin-qos1",
            publishers: 16,
            subscribers: 1,
            qos: QoS::AtLeastOnce,
            batch: 32,
        },
        Scenario {
            name: "fanout-qos0",
            publishers: 1,
            subscribers: 100,
            qos: QoS::AtMostOnce,
            batch: 32,
        },
    ];
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    for scenario in scenarios
        .iter()
        .filter(|s| only.as_deref().is_none_or(|o| o == s.name))
    {
        let inbound = if scenario.subscribers > 1 {
            messages / scenario.subscribers
        } else {
            messages
        };
        let (delivered, ns) = run(scenario, inbound.max(scenario.publishers * scenario.batch));
        println!(
            "{:<12} delivered {delivered:>9}  {ns:>7.1} ns per delivered message",
            scenario.name
        );
    }
}
