//! Will messages: published when a client goes away without DISCONNECT (process killed, socket
//! dropped) [MQTT-3.1.2-8], never after a normal DISCONNECT [MQTT-3.1.2-10], for MQTT 3.1.1 and 5,
//! with mosquitto_sub, paho-mqtt and raw sockets as the client that dies.

use std::time::Duration;

use femtomq_e2e::raw::{self, RawClient, Received};
use femtomq_e2e::{Broker, STEP, SubTool, Subscriber, json, mosquitto_pub, paho};

/// A raw CONNECT with a will (QoS 1), clean start.
fn connect_with_will(level: u8, client_id: &str, topic: &str, payload: &str) -> Vec<u8> {
    let mut body = raw::field(b"MQTT");
    body.push(level);
    body.push(0x02 | 0x04 | (1 << 3));
    body.extend(60u16.to_be_bytes());
    if level == raw::V5 {
        body.push(0);
    }
    body.extend(raw::field(client_id.as_bytes()));
    if level == raw::V5 {
        body.push(0); // will properties
    }
    body.extend(raw::field(topic.as_bytes()));
    body.extend(raw::field(payload.as_bytes()));
    raw::packet(0x10, &body)
}

fn raw_client_with_will(broker: &Broker, level: u8, id: &str, topic: &str) -> RawClient {
    let mut client = RawClient::connect(broker.address());
    client
        .send(&connect_with_will(level, id, topic, &format!("{id} gone")))
        .unwrap();
    match client.read_packet(STEP) {
        Received::Packet(connack) => assert_eq!((connack[0], connack[3]), (0x20, 0)),
        other => panic!("no CONNACK: {other:?}"),
    }
    client
}

#[test]
fn will_is_published_when_the_client_vanishes_without_disconnect() {
    let broker = Broker::start(&[]);
    let port = broker.port();
    let watcher = Subscriber::start(SubTool::Mosquitto, port, &["-q", "1", "-t", "will/#"]);

    for version in ["mqttv311", "mqttv5"] {
        // mosquitto_sub killed with SIGKILL: the kernel closes its socket, no DISCONNECT.
        let topic = format!("will/mosquitto/{version}");
        let mut dying = Subscriber::start(
            SubTool::Mosquitto,
            port,
            &[
                "-V",
                version,
                "-t",
                "unused",
                "--will-topic",
                &topic,
                "--will-payload",
                "mosquitto gone",
                "--will-qos",
                "1",
            ],
        );
        dying.process().kill();
        assert_eq!(
            watcher.messages(1, STEP),
            [format!("{topic} mosquitto gone")]
        );
    }

    for protocol in ["311", "5"] {
        // paho killed while connected.
        let topic = format!("will/paho/{protocol}");
        let mut dying = paho(
            "paho_will.py",
            port,
            &[
                "--protocol",
                protocol,
                "--will-topic",
                &topic,
                "--will-payload",
                "paho gone",
                "--then",
                "hang",
            ],
        );
        assert_eq!(json(&dying.expect_line(STEP))["event"], "connected");
        dying.kill();
        assert_eq!(watcher.messages(1, STEP), [format!("{topic} paho gone")]);
    }

    for (level, name) in [(raw::V311, "raw311"), (raw::V5, "raw5")] {
        // A raw socket dropped after CONNACK.
        let topic = format!("will/{name}");
        drop(raw_client_with_will(&broker, level, name, &topic));
        assert_eq!(watcher.messages(1, STEP), [format!("{topic} {name} gone")]);
    }
    assert_eq!(
        watcher.more_within(Duration::from_millis(200)),
        Vec::<String>::new()
    );
}

#[test]
fn no_will_after_a_normal_disconnect() {
    let broker = Broker::start(&[]);
    let port = broker.port();
    let watcher = Subscriber::start(SubTool::Mosquitto, port, &["-q", "1", "-t", "quiet/#"]);

    // mosquitto_pub with a will: publishes, then disconnects normally.
    for version in ["mqttv311", "mqttv5"] {
        mosquitto_pub(
            port,
            &[
                "-V",
                version,
                "-t",
                "elsewhere",
                "-m",
                "x",
                "--will-topic",
                "quiet/mosquitto",
                "--will-payload",
                "must not appear",
            ],
        );
    }
    // paho with a will, disconnecting normally.
    for protocol in ["311", "5"] {
        let mut client = paho(
            "paho_will.py",
            port,
            &[
                "--protocol",
                protocol,
                "--will-topic",
                "quiet/paho",
                "--will-payload",
                "must not appear",
                "--then",
                "disconnect",
            ],
        );
        assert_eq!(client.wait(STEP).map(|s| s.success()), Some(true));
    }
    // Raw: DISCONNECT (reason 0 in MQTT 5), then close.
    for (level, disconnect) in [
        (raw::V311, vec![0xE0, 0x00]),
        (raw::V5, vec![0xE0, 0x01, 0x00]),
    ] {
        let mut client = raw_client_with_will(&broker, level, "raw-quiet", "quiet/raw");
        client.send(&disconnect).unwrap();
        assert_eq!(client.read_until_closed(STEP), Ok(vec![]));
    }
    // Every will would have been published before this marker was even sent.
    mosquitto_pub(port, &["-q", "1", "-t", "quiet/marker", "-m", "marker"]);
    assert_eq!(watcher.messages(1, STEP), ["quiet/marker marker"]);
    assert_eq!(
        watcher.more_within(Duration::from_millis(200)),
        Vec::<String>::new()
    );
}

/// A client that stops reading, then sends DISCONNECT and closes its socket: with our output
/// unread in its buffer, its kernel answers with a reset, and the broker's next write to it fails.
/// The DISCONNECT it sent before the reset still counts: no will. (Without reading it first, the
/// broker took the failed write for a lost connection and published the will.)
#[test]
fn no_will_after_a_disconnect_followed_by_a_reset_while_output_waits() {
    let broker = Broker::start(&[]);
    let port = broker.port();
    let watcher = Subscriber::start(SubTool::Mosquitto, port, &["-q", "1", "-t", "reset/#"]);
    // A small receive buffer, so that what the broker sends it backs up.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .connect_timeout(&broker.address().into(), STEP)
        .unwrap();
    let mut client = RawClient::from_stream(socket.into());
    client
        .send(&connect_with_will(
            raw::V311,
            "resetter",
            "reset/will",
            "resetter gone",
        ))
        .unwrap();
    match client.read_packet(STEP) {
        Received::Packet(connack) => assert_eq!((connack[0], connack[3]), (0x20, 0)),
        other => panic!("no CONNACK: {other:?}"),
    }
    let mut subscribe = vec![0, 1];
    subscribe.extend(raw::field(b"flood"));
    subscribe.push(0);
    client.send(&raw::packet(0x82, &subscribe)).unwrap();
    match client.read_packet(STEP) {
        Received::Packet(suback) => assert_eq!(suback, [0x90, 3, 0, 1, 0]),
        other => panic!("no SUBACK: {other:?}"),
    }
    // 16 MiB at QoS 0 that it never reads: far more than the kernel buffers between them, so
    // the broker keeps output for it (up to max_output_bytes, dropping the rest).
    let (mut flooder, _) = RawClient::connected(broker.address(), raw::V311, "flooder");
    let payload = vec![b'x'; 32 * 1024];
    for _ in 0..512 {
        flooder
            .send(&raw::publish(raw::V311, "flood", &payload, None))
            .unwrap();
    }
    // The broker handles a connection's packets in order: the PINGRESP comes after the rest.
    flooder.send(&[0xC0, 0]).unwrap();
    assert!(matches!(flooder.read_packet(STEP), Received::Packet(p) if p == [0xD0, 0]));
    client.send(&[0xE0, 0]).unwrap();
    socket2::SockRef::from(client.stream())
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    assert!(
        broker.wait_for_log("client `resetter` from", 1, STEP),
        "{}",
        broker.log()
    );
    let log = broker.log();
    let ended = log
        .lines()
        .find(|line| line.contains("client `resetter` from") && line.contains("disconnected"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(ended.contains("ClientDisconnect"), "{ended}");
    // A will would have been published before this marker was even sent.
    mosquitto_pub(port, &["-q", "1", "-t", "reset/marker", "-m", "marker"]);
    assert_eq!(watcher.messages(1, STEP), ["reset/marker marker"]);
    assert_eq!(
        watcher.more_within(Duration::from_millis(200)),
        Vec::<String>::new()
    );
}
