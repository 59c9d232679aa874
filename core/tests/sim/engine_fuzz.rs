//! The engine fuzz property, shared by `core/fuzz/fuzz_targets/engine.rs` and the replay test
//! `core/tests/engine_fuzz_regressions.rs`: arbitrary bytes as client input on a few
//! connections (some of them connected first with a valid CONNECT and SUBSCRIBE), with time
//! passing, connections drained, dropped and reopened. It must not panic, and what the broker
//! holds must stay within the configured bounds.

use femtomq_core::broker::{Broker, Config, ConnId};
use femtomq_core::codec::{
    Connect, ConnectProperties, Packet, Repeated, Subscribe, SubscribeProperties, Subscription,
};
use femtomq_core::limits::Limits;
use femtomq_core::{Instant, ProtocolVersion, QoS, SubscriptionOptions};

const CONNECTIONS: usize = 3;

fn config() -> Config {
    Config {
        limits: Limits {
            max_connections: 8,
            max_subscriptions_per_client: 8,
            max_subscriptions_total: 16,
            max_inflight: 4,
            max_queued_messages: 16,
            max_queued_bytes: 4096,
            max_retained_messages: 8,
            max_retained_bytes: 4096,
            max_packet_size: 2048,
            max_output_bytes: 8192,
            ..Limits::DEFAULT
        },
        max_keep_alive: Some(30),
        max_session_expiry: 60,
        topic_alias_maximum: 4,
        max_outbound_aliases: 4,
        message_events: true,
        ..Config::default()
    }
}

fn encode(packet: &Packet<'_>, version: ProtocolVersion, out: &mut Vec<u8>) {
    if let Ok(len) = packet.encoded_len(version) {
        let start = out.len();
        out.resize(start + len, 0);
        if packet.encode(version, &mut out[start..]).is_err() {
            out.truncate(start);
        }
    }
}

/// A valid CONNECT (and SUBSCRIBE to `#`) chosen by `byte`, so that fuzzing starts from
/// connected clients as often as from raw bytes.
fn preamble(index: usize, byte: u8) -> (ProtocolVersion, Vec<u8>) {
    let version = if byte & 1 == 0 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V3_1_1
    };
    let ids = ["f0", "f1", "f2"];
    let mut bytes = Vec::new();
    if byte & 2 != 0 {
        return (version, bytes);
    }
    let properties = ConnectProperties {
        session_expiry_interval: (byte & 4 != 0).then_some(60),
        receive_maximum: core::num::NonZeroU16::new(u16::from(byte >> 5) + 1),
        topic_alias_maximum: Some(u16::from(byte >> 6)),
        maximum_packet_size: core::num::NonZeroU32::new(if byte & 8 != 0 { 128 } else { 4096 }),
        ..ConnectProperties::default()
    };
    let connect = Packet::Connect(Connect {
        version,
        clean_start: byte & 4 == 0,
        keep_alive: 10,
        properties,
        client_id: ids[index % ids.len()],
        will: None,
        username: None,
        password: None,
    });
    encode(&connect, version, &mut bytes);
    if byte & 16 == 0 {
        let subscriptions = [Subscription {
            filter: "#",
            options: SubscriptionOptions::with_qos(QoS::ExactlyOnce),
        }];
        let subscribe = Packet::Subscribe(Subscribe {
            packet_id: core::num::NonZeroU16::MIN,
            properties: SubscribeProperties::default(),
            subscriptions: Repeated::from_slice(&subscriptions),
        });
        encode(&subscribe, version, &mut bytes);
    }
    (version, bytes)
}

struct Conn {
    id: ConnId,
    /// Bytes the engine has not consumed yet (an incomplete packet).
    pending: Vec<u8>,
    /// Input bytes fed since the output was last drained.
    fed_since_drain: usize,
    open: bool,
}

/// Runs one fuzz input.
pub fn check_engine(data: &[u8]) {
    let config = config();
    let limits = config.limits;
    let mut broker = Broker::new(config, 0x5eed);
    let mut now = Instant(1_000);
    let mut conns: Vec<Conn> = Vec::new();
    let (head, mut rest) = data.split_at(data.len().min(CONNECTIONS));
    for index in 0..CONNECTIONS {
        let id = broker.open(0, now);
        let (_, bytes) = preamble(index, head.get(index).copied().unwrap_or(0));
        let used = broker.handle_input(id, &bytes, now);
        assert_eq!(used, bytes.len(), "whole packets are consumed");
        conns.push(Conn {
            id,
            pending: Vec::new(),
            fed_since_drain: bytes.len(),
            open: true,
        });
    }
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let target = usize::from(op >> 5) % CONNECTIONS;
        match op & 0x07 {
            // Input: up to 64 bytes.
            0..=3 => {
                let len = rest.first().map_or(0, |&n| usize::from(n % 64));
                let take = rest.len().min(1 + len);
                let (chunk, tail) = rest.split_at(take);
                rest = tail;
                let conn = &mut conns[target];
                if !conn.open {
                    continue;
                }
                conn.pending
                    .extend_from_slice(chunk.get(1..).unwrap_or_default());
                let used = broker.handle_input(conn.id, &conn.pending, now);
                assert!(used <= conn.pending.len());
                conn.pending.drain(..used);
                conn.fed_since_drain += used;
                assert!(
                    conn.pending.len() <= limits.max_packet_size as usize,
                    "the engine waits for no more than one maximum-size packet"
                );
            }
            // Time passes.
            4 => {
                let step = rest.first().copied().unwrap_or(0);
                rest = rest.get(1..).unwrap_or_default();
                now = now.plus_millis(u64::from(step) * 250);
                while let Some(deadline) = broker.poll_timeout() {
                    if deadline > now {
                        break;
                    }
                    broker.handle_timeout(deadline.max(Instant(0)));
                }
                broker.handle_timeout(now);
                assert!(broker.poll_timeout().is_none_or(|t| t > now));
            }
            // The port writes a connection's output.
            5 => {
                let conn = &mut conns[target];
                let mut buffer = Vec::new();
                broker.swap_output(conn.id, &mut buffer, now);
                conn.fed_since_drain = 0;
            }
            // The socket breaks.
            6 => {
                let conn = &mut conns[target];
                broker.closed(conn.id, now);
                conn.open = false;
            }
            // A new connection replaces a closed one.
            _ => {
                let conn = &mut conns[target];
                if !conn.open {
                    conn.id = broker.open(0, now);
                    conn.pending.clear();
                    conn.fed_since_drain = 0;
                    conn.open = true;
                }
            }
        }
        // The port's loop: close what the engine closes once written.
        while let Some(id) = broker.poll_writable() {
            if broker.is_closing(id) {
                if let Some(conn) = conns.iter_mut().find(|c| c.id == id && c.open) {
                    broker.closed(id, now);
                    conn.open = false;
                }
            }
        }
        while broker.poll_event().is_some() {}
        // Bounds: unwritten output is at most the high-water mark plus one packet plus the
        // answers to what that connection itself sent (acks, SUBACKs, PINGRESPs), which the
        // port bounds by not reading a client it cannot write to.
        for conn in &conns {
            let out = broker.output(conn.id).len();
            let bound = limits.max_output_bytes as usize
                + 2 * limits.max_packet_size as usize
                + 4 * conn.fed_since_drain
                + 64;
            assert!(out <= bound, "output {out} > {bound}");
        }
        for client_id in ["f0", "f1", "f2"] {
            if let Some(queued) = broker.queued_messages(client_id) {
                assert!(queued <= limits.max_queued_messages as usize);
            }
        }
        assert!(broker.retained_count() <= limits.max_retained_messages as usize);
        assert!(broker.subscription_count() <= limits.max_subscriptions_total as usize);
        assert!(broker.stats().connected <= limits.max_connections);
    }
    // Everything ends: no connection, and only sessions that outlive them.
    for conn in &conns {
        if conn.open {
            broker.closed(conn.id, now);
        }
    }
    broker.handle_timeout(now.plus_secs(3600));
    let stats = broker.stats();
    assert_eq!(stats.connected, 0);
    assert_eq!(
        stats.sessions, 0,
        "sessions expire at most 60 s after their connection"
    );
    assert_eq!(broker.subscription_count(), 0);
    assert_eq!(broker.subscription_nodes(), 0);
}
