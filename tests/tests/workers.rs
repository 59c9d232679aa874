//! Several worker threads: connections land on any worker, sessions live on the worker their
//! client id belongs to, and messages, retained messages and persistent sessions work across
//! them. The client is rumqttc (MQTT 3.1.1).

use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use femtomq_e2e::Broker;
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
