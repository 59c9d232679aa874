//! Bad input over raw sockets while real clients keep working: every offender gets the answer
//! the specification gives (a CONNACK or DISCONNECT reason code, or just a closed connection),
//! and a mosquitto_sub and a paho subscriber receive every message of a steady rumqttc
//! publisher that runs through all of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use femtomq_e2e::raw::{self, RawClient, Received};
use femtomq_e2e::{Broker, STEP, SubTool, Subscriber, json, paho, path_arg};

const CONNECT_TIMEOUT_MS: u64 = 500;
const MAX_PACKET: usize = 4096;

/// A rumqttc (MQTT 3.1.1) client publishing QoS 1 messages `steady-NNNN`, one at a time, each
/// after the previous one's PUBACK, until stopped.
struct SteadyPublisher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<usize>,
}

impl SteadyPublisher {
    fn start(port: u16, topic: &'static str) -> SteadyPublisher {
        use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let options = MqttOptions::new("steady-publisher", "127.0.0.1", port);
            let (client, mut connection) = Client::new(options, 16);
            let (acks, acked) = mpsc::channel();
            let driver = std::thread::spawn(move || {
                for event in connection.iter() {
                    match event {
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            if acks.send(()).is_err() {
                                break;
                            }
                        }
                        Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                        Ok(_) => {}
                        Err(e) => panic!("steady publisher lost its connection: {e}"),
                    }
                }
            });
            let mut sent = 0;
            while !stopping.load(Ordering::Relaxed) {
                client
                    .publish(topic, QoS::AtLeastOnce, false, format!("steady-{sent:04}"))
                    .unwrap();
                acked
                    .recv_timeout(STEP)
                    .expect("no PUBACK for a steady message");
                sent += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            client.disconnect().unwrap();
            driver.join().unwrap();
            sent
        });
        SteadyPublisher { stop, thread }
    }

    /// Stops and returns how many messages were published (and acknowledged).
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("steady publisher panicked")
    }
}

/// Asserts that the broker sent exactly one packet of `kind` (`0xE0` DISCONNECT, `0x20`
/// CONNACK) with `reason` as its MQTT 5 reason code, then closed. Properties such as a Reason
/// String may follow the code.
fn answered_then_closed(
    received: Result<Vec<Vec<u8>>, Vec<Vec<u8>>>,
    kind: u8,
    reason: u8,
    what: &str,
) {
    let packets =
        received.unwrap_or_else(|got| panic!("{what}: not closed in time after {got:02x?}"));
    assert_eq!(
        packets.len(),
        1,
        "{what}: expected one packet, got {packets:02x?}"
    );
    let packet = &packets[0];
    // Header, a one-byte remaining length (these answers are short), then for CONNACK the
    // acknowledge flags before the reason code.
    let code_at = if kind == 0x20 { 3 } else { 2 };
    assert_eq!(packet.first(), Some(&kind), "{what}: {packet:02x?}");
    assert_eq!(
        usize::from(packet[1]),
        packet.len() - 2,
        "{what}: {packet:02x?}"
    );
    assert_eq!(packet.get(code_at), Some(&reason), "{what}: {packet:02x?}");
}

fn closed_without_answer(client: &mut RawClient, what: &str) {
    assert_eq!(
        client.read_until_closed(STEP),
        Ok(vec![]),
        "{what}: expected a closed connection and no bytes"
    );
}

fn garbage(broker: &Broker) {
    for bytes in [
        &b"\xff\xfe\x00\x01garbage"[..],
        b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n",
        // A CONNECT whose remaining length never ends (five continuation bytes).
        b"\x10\xff\xff\xff\xff\x01",
    ] {
        let mut client = RawClient::connect(broker.address());
        client.send(bytes).unwrap();
        closed_without_answer(&mut client, &format!("garbage {bytes:?}"));
    }
}

fn truncated_then_silence(broker: &Broker) {
    // Closed by the connect timeout (`connect_timeout_ms`, 500 ms here).
    let connect = raw::connect(raw::V311, "truncated", 60);
    let mut client = RawClient::connect(broker.address());
    client.send(&connect[..connect.len() - 5]).unwrap();
    closed_without_answer(&mut client, "truncated CONNECT");
    // Nothing at all is the same.
    let mut silent = RawClient::connect(broker.address());
    closed_without_answer(&mut silent, "silent connection");
}

fn over_the_size_limit(broker: &Broker) {
    let payload = vec![b'x'; MAX_PACKET + 100];
    // MQTT 5 after CONNECT: DISCONNECT 0x95 Packet too large, then closed.
    let (mut client, connack) = RawClient::connected(broker.address(), raw::V5, "big5");
    assert_eq!(
        raw::connack_maximum_packet_size(&connack),
        Some(MAX_PACKET as u32)
    );
    // The broker can tell from the fixed header alone; it may close before reading the rest.
    let _ = client.send(&raw::publish(raw::V5, "big", &payload, Some(1)));
    answered_then_closed(
        client.read_until_closed(STEP),
        0xE0,
        0x95,
        "oversized PUBLISH in MQTT 5",
    );
    // An oversized MQTT 5 CONNECT: CONNACK 0x95, then closed.
    let mut client = RawClient::connect(broker.address());
    let _ = client.send(&raw::connect(raw::V5, &"c".repeat(MAX_PACKET + 100), 60));
    answered_then_closed(
        client.read_until_closed(STEP),
        0x20,
        0x95,
        "oversized CONNECT in MQTT 5",
    );
    // MQTT 3.1.1 has no way to say it: closed.
    let (mut client, _) = RawClient::connected(broker.address(), raw::V311, "big311");
    let _ = client.send(&raw::publish(raw::V311, "big", &payload, Some(1)));
    closed_without_answer(&mut client, "oversized PUBLISH in MQTT 3.1.1");
}

fn bad_protocol_level(broker: &Broker) {
    // "MQTT" with level 6: CONNACK return code 1 (unacceptable protocol version), then closed
    // [MQTT-3.1.2-2].
    for level in [6, 2] {
        let mut client = RawClient::connect(broker.address());
        client.send(&raw::connect(level, "bad-level", 60)).unwrap();
        assert_eq!(
            client.read_until_closed(STEP),
            Ok(vec![vec![0x20, 0x02, 0x00, 0x01]]),
            "protocol level {level}"
        );
    }
}

fn second_connect(broker: &Broker) {
    // MQTT 5: DISCONNECT 0x82 Protocol Error, then closed [MQTT-3.1.0-2].
    let (mut client, _) = RawClient::connected(broker.address(), raw::V5, "twice5");
    client.send(&raw::connect(raw::V5, "twice5", 60)).unwrap();
    answered_then_closed(
        client.read_until_closed(STEP),
        0xE0,
        0x82,
        "second CONNECT in MQTT 5",
    );
    let (mut client, _) = RawClient::connected(broker.address(), raw::V311, "twice311");
    client
        .send(&raw::connect(raw::V311, "twice311", 60))
        .unwrap();
    closed_without_answer(&mut client, "second CONNECT in MQTT 3.1.1");
}

fn publish_before_connect(broker: &Broker) {
    // The first packet must be CONNECT [MQTT-3.1.0-1].
    for level in [raw::V311, raw::V5] {
        let mut client = RawClient::connect(broker.address());
        client
            .send(&raw::publish(level, "steady", b"forged", None))
            .unwrap();
        closed_without_answer(&mut client, "PUBLISH before CONNECT");
    }
}

fn slowloris(broker: &Broker) {
    // One byte every 200 ms of a CONNECT that is never finished: closed at the connect timeout,
    // however long the trickle goes on.
    let mut connect = raw::connect(raw::V311, &"s".repeat(200), 60);
    connect.pop();
    let mut client = RawClient::connect(broker.address());
    let started = Instant::now();
    for byte in &connect {
        if client.send(&[*byte]).is_err() {
            return; // reset by the broker
        }
        match client.read_packet(Duration::from_millis(200)) {
            Received::Closed => return,
            Received::TimedOut => {}
            Received::Packet(packet) => panic!("slowloris got {packet:?}"),
        }
        assert!(
            started.elapsed() < STEP,
            "slowloris still connected after {STEP:?}"
        );
    }
    panic!("the whole slow CONNECT but one byte went through without the connection closing");
}

#[test]
fn bad_input_gets_the_right_answer_and_others_lose_nothing() {
    let dir = femtomq_e2e::TestDir::new("bad-input");
    let conf = dir.write(
        "femtomq.toml",
        format!(
            "[limits]\nmax_packet_size = {MAX_PACKET}\n\n[session]\nconnect_timeout_ms = {CONNECT_TIMEOUT_MS}\n"
        ),
    );
    let broker = Broker::start(&["--conf", path_arg(&conf)]);
    let port = broker.port();
    let mosquitto = Subscriber::start(SubTool::Mosquitto, port, &["-q", "1", "-t", "steady"]);
    let paho_subscriber = paho(
        "paho_sub.py",
        port,
        &[
            "--protocol",
            "5",
            "--topic",
            "steady",
            "--qos",
            "1",
            "--stay",
            "--timeout",
            "60",
        ],
    );
    assert_eq!(
        json(&paho_subscriber.expect_line(STEP))["event"],
        "connected"
    );
    assert_eq!(
        json(&paho_subscriber.expect_line(STEP))["event"],
        "subscribed"
    );
    let publisher = SteadyPublisher::start(port, "steady");

    garbage(&broker);
    truncated_then_silence(&broker);
    over_the_size_limit(&broker);
    bad_protocol_level(&broker);
    second_connect(&broker);
    publish_before_connect(&broker);
    slowloris(&broker);

    let sent = publisher.stop();
    assert!(sent > 0);
    let expected: Vec<String> = (0..sent).map(|i| format!("steady-{i:04}")).collect();
    let got: Vec<String> = mosquitto
        .messages(sent, STEP)
        .into_iter()
        .map(|line| line.strip_prefix("steady ").unwrap().to_string())
        .collect();
    assert_eq!(got, expected, "mosquitto_sub");
    let got: Vec<String> = paho_subscriber
        .collect(sent, STEP, |_| true)
        .iter()
        .map(|line| json(line)["payload"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, expected, "paho");
    assert_eq!(
        mosquitto.more_within(Duration::from_millis(200)),
        Vec::<String>::new()
    );
    // The forged PUBLISH before CONNECT reached nobody (checked above: only steady-NNNN).
}
