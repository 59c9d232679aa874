//! Several worker threads: connections land on any worker, sessions live on the worker their
//! client id belongs to, and messages, retained messages and persistent sessions work across
//! them. The client is rumqttc (MQTT 3.1.1).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use femtomq_e2e::{Broker, TestDir, path_arg};
use rumqttc::{Client, Connection, Event, MqttOptions, Packet, QoS};

const WAIT: Duration = Duration::from_secs(20);

/// A client whose connection runs on its own thread, handing over the payloads it receives
/// and saying when its SUBACK and CONNACK arrived.
struct TestClient {
    client: Client,
    messages: Receiver<(String, Vec<u8>, bool)>,
    acks: Receiver<Packet>,
}

fn start(port: u16, id: &str, clean: bool) -> TestClient {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(clean);
    let (client, connection) = Client::new(options, 256);
    let (messages_tx, messages) = mpsc::channel();
    let (acks_tx, acks) = mpsc::channel();
    std::thread::spawn(move || pump(connection, messages_tx, acks_tx));
    TestClient {
        client,
        messages,
        acks,
    }
}

fn pump(
    mut connection: Connection,
    messages: mpsc::Sender<(String, Vec<u8>, bool)>,
    acks: mpsc::Sender<Packet>,
) {
    for event in connection.iter() {
        match event {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if messages
                    .send((p.topic.clone(), p.payload.to_vec(), p.retain))
                    .is_err()
                {
                    return;
                }
            }
            Ok(Event::Incoming(packet @ (Packet::ConnAck(_) | Packet::SubAck(_)))) => {
                let _ = acks.send(packet);
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

impl TestClient {
    fn expect_ack(&self, what: &str) -> Packet {
        self.acks
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no {what}"))
    }

    fn subscribe(&self, filter: &str) {
        self.client.subscribe(filter, QoS::AtLeastOnce).unwrap();
        match self.expect_ack("SUBACK") {
            Packet::SubAck(_) => {}
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// The next `count` payloads on `topic` (others are skipped), waiting at most WAIT.
    fn payloads(&self, topic: &str, count: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + WAIT;
        let mut out = Vec::new();
        while out.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok((t, payload, _)) if t == topic => out.push(payload),
                Ok(_) => {}
                Err(_) => panic!("only {} of {count} messages on {topic}: {out:?}", out.len()),
            }
        }
        out
    }
}

fn numbered(prefix: &str, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|n| format!("{prefix}{n}").into_bytes())
        .collect()
}

#[test]
fn messages_retained_and_sessions_work_across_four_workers() {
    let broker = Broker::start(&["--workers", "4"]);
    let port = broker.port();
    // Enough clients that they belong to every worker.
    let subscribers: Vec<TestClient> = (0..12)
        .map(|i| start(port, &format!("sub-{i}"), true))
        .collect();
    for subscriber in &subscribers {
        subscriber.expect_ack("CONNACK");
        subscriber.subscribe("w/+/data");
    }
    let publisher = start(port, "the-publisher", true);
    publisher.expect_ack("CONNACK");
    // Subscriptions reach the other workers within a loop turn: wait until a probe arrives
    // everywhere, then count exactly.
    for subscriber in &subscribers {
        let deadline = Instant::now() + WAIT;
        loop {
            publisher
                .client
                .publish("w/probe/data", QoS::AtMostOnce, false, "probe")
                .unwrap();
            if subscriber
                .messages
                .recv_timeout(Duration::from_millis(50))
                .is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "subscriptions never reached every worker"
            );
        }
    }
    for subscriber in &subscribers {
        while subscriber.messages.try_recv().is_ok() {}
    }
    for payload in numbered("m", 50) {
        publisher
            .client
            .publish("w/1/data", QoS::AtLeastOnce, false, payload)
            .unwrap();
    }
    for (i, subscriber) in subscribers.iter().enumerate() {
        assert_eq!(
            subscriber.payloads("w/1/data", 50),
            numbered("m", 50),
            "subscriber {i}"
        );
    }

    // A retained message stored through one worker reaches a subscriber on another.
    publisher
        .client
        .publish("w/kept", QoS::AtLeastOnce, true, "stay")
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut attempt = 0;
    loop {
        let late = start(port, &format!("late-{attempt}"), true);
        late.expect_ack("CONNACK");
        late.subscribe("w/kept");
        if let Ok((topic, payload, retain)) = late.messages.recv_timeout(Duration::from_millis(500))
        {
            assert_eq!(
                (topic.as_str(), payload.as_slice(), retain),
                ("w/kept", &b"stay"[..], true)
            );
            break;
        }
        attempt += 1;
        assert!(
            Instant::now() < deadline,
            "the retained message never reached the other workers"
        );
    }

    // A persistent session reconnecting lands on the worker that holds it, with its queue.
    let keeper = start(port, "keeper", false);
    keeper.expect_ack("CONNACK");
    keeper.subscribe("w/queued");
    keeper.client.disconnect().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for payload in numbered("q", 20) {
        publisher
            .client
            .publish("w/queued", QoS::AtLeastOnce, false, payload)
            .unwrap();
    }
    let again = start(port, "keeper", false);
    match again.expect_ack("CONNACK") {
        Packet::ConnAck(connack) => {
            assert!(connack.session_present, "session present on reconnect")
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    assert_eq!(again.payloads("w/queued", 20), numbered("q", 20));
}

/// An MQTT 3.1.1 publisher on a raw socket, its packets encoded here by hand: it connects, then
/// writes `count` PUBLISH packets at QoS `qos` (0 or 1) on `topic` in one go (payloads
/// `{id}-{n}`), far faster than any subscriber reads them. Returns the thread, which yields
/// the PUBACKs it read (QoS 1; none are expected at QoS 0).
fn flood(port: u16, id: &str, topic: &str, count: u16, qos: u8) -> std::thread::JoinHandle<usize> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut connect = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c];
    connect.extend((id.len() as u16).to_be_bytes());
    connect.extend(id.as_bytes());
    let mut packet = vec![0x10, connect.len() as u8];
    packet.extend(connect);
    stream.write_all(&packet).unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "CONNACK for {id}");
    let mut publishes = Vec::new();
    for n in 1..=count {
        let payload = format!("{id}-{n}");
        let id_length = if qos == 0 { 0 } else { 2 };
        let length = 2 + topic.len() + id_length + payload.len();
        assert!(length < 128, "one-byte remaining length");
        publishes.extend([0x30 | (qos << 1), length as u8]);
        publishes.extend((topic.len() as u16).to_be_bytes());
        publishes.extend(topic.as_bytes());
        if qos > 0 {
            publishes.extend(n.to_be_bytes());
        }
        publishes.extend(payload.as_bytes());
    }
    let mut writer = stream.try_clone().unwrap();
    std::thread::spawn(move || writer.write_all(&publishes).unwrap());
    std::thread::spawn(move || {
        let mut acks = 0;
        let mut ack = [0u8; 4];
        let expected = if qos == 0 { 0 } else { usize::from(count) };
        while acks < expected && stream.read_exact(&mut ack).is_ok() {
            assert_eq!(ack[..2], [0x40, 0x02], "PUBACK");
            acks += 1;
        }
        acks
    })
}

/// `publishers` raw-socket publishers (`flood-pub-N`) each flood `each` messages at QoS `qos`
/// into one rumqttc subscriber (`flood-sub`) of a broker started with `args`; asserts that every
/// message is delivered once (and at QoS 1 acknowledged).
fn flood_into_one_subscriber(args: &[&str], publishers: usize, each: u16, qos: u8) {
    let broker = Broker::start(args);
    let port = broker.port();
    let subscriber = start(port, "flood-sub", true);
    subscriber.expect_ack("CONNACK");
    subscriber.subscribe("flow/t");
    let floods: Vec<_> = (0..publishers)
        .map(|n| flood(port, &format!("flood-pub-{n}"), "flow/t", each, qos))
        .collect();
    let total = publishers * usize::from(each);
    // Until all arrived, or none for 5 s (a dropped message never comes).
    let mut received = std::collections::HashSet::new();
    while received.len() < total {
        match subscriber.messages.recv_timeout(Duration::from_secs(5)) {
            Ok((topic, payload, _)) if topic == "flow/t" => {
                received.insert(payload);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let acks: Vec<usize> = floods.into_iter().map(|f| f.join().unwrap()).collect();
    let expected_acks = if qos == 0 { 0 } else { usize::from(each) };
    assert!(
        acks.iter().all(|&a| a == expected_acks),
        "every QoS 1 PUBLISH acknowledged: {acks:?}"
    );
    assert_eq!(received.len(), total, "distinct messages received");
}

#[test]
fn qos1_floods_from_both_workers_into_one_slow_subscriber_lose_nothing() {
    // Copies routed to another worker's session travel through its mailbox: without flow
    // control between the workers they overflow that session's queue (200 messages here).
    // Of two workers, worker 0 owns `flood-sub` and `flood-pub-{0,2,4}`, worker 1
    // `flood-pub-{1,3,5}` (`femtomq_core::broker::client_owner`): half the copies cross over.
    flood_into_one_subscriber(
        &["--workers", "2", "--max-queued-messages", "200"],
        6,
        4000,
        1,
    );
}

#[test]
fn qos1_floods_from_300_publishers_into_one_slow_subscriber_lose_nothing() {
    // One worker. Each publisher is held back after the message that finds the session
    // backlogged; when the session drains they are all released, and each routes at least one
    // more before it is held back again: more publishers than the queue's free room (a queue
    // of 100, a window of 10 here) overflowed it (11,722 of 30,000 arrived before the fix).
    flood_into_one_subscriber(
        &[
            "--workers",
            "1",
            "--max-queued-messages",
            "100",
            "--receive-maximum",
            "10",
        ],
        300,
        100,
        1,
    );
}

#[test]
fn qos0_floods_from_300_publishers_into_one_slow_subscriber_lose_nothing() {
    // QoS 0 may be dropped, but a subscriber that is reading holds its publishers back instead:
    // the copy that finds its output full is sent anyway and its publisher waits. Before, each
    // such copy was dropped and the publisher was not held back at all.
    // A subscriber's output of at most 4 KB (instead of 64 KB) makes it full early and often.
    let dir = TestDir::new("qos0-flood");
    let conf = dir.write("femtomq.toml", "[limits]\nmax_output_bytes = 4096\n");
    flood_into_one_subscriber(&["--workers", "1", "--conf", path_arg(&conf)], 300, 400, 0);
}
