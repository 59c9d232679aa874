//! MQTT 5 features end to end: user properties kept in order [MQTT-3.3.2-18], message expiry of
//! queued messages [MQTT-3.3.2-5] with the remaining interval forwarded [MQTT-3.3.2-6], topic
//! aliases from the client (MQTT 5 §3.3.2.3.4), request/response properties passed through
//! [MQTT-3.3.2-15] [MQTT-3.3.2-16], and a 1 MB payload under a raised maximum packet size.

use std::process::Command;
use std::time::Duration;

use femtomq_e2e::{
    Broker, STEP, SubTool, Subscriber, crc32, json, mosquitto_pub, paho, paho_messages, paho_sub,
    path_arg, run,
};

#[test]
fn user_properties_arrive_in_order_with_duplicates() {
    let broker = Broker::start(&[]);
    let port = broker.port();
    let sub = paho_sub(
        port,
        &[
            "--protocol",
            "5",
            "--topic",
            "props/#",
            "--qos",
            "1",
            "--count",
            "2",
        ],
    );
    // From paho: a repeated key keeps its place.
    let mut publisher = paho(
        "paho_pub.py",
        port,
        &[
            "--topic",
            "props/paho",
            "--qos",
            "1",
            "--message",
            "p",
            "--user-property",
            "region=eu",
            "--user-property",
            "unit=C",
            "--user-property",
            "region=us",
            "--user-property",
            "empty=",
        ],
    );
    assert_eq!(publisher.wait(STEP).map(|s| s.success()), Some(true));
    // From mosquitto_pub.
    mosquitto_pub(
        port,
        &[
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            "props/mosquitto",
            "-m",
            "m",
            "-D",
            "publish",
            "user-property",
            "z",
            "last",
            "-D",
            "publish",
            "user-property",
            "a",
            "first",
        ],
    );
    let got = paho_messages(&sub, 2, STEP);
    assert_eq!(got[0]["payload"], "p");
    assert_eq!(
        got[0]["user_properties"],
        serde_json::json!([
            ["region", "eu"],
            ["unit", "C"],
            ["region", "us"],
            ["empty", ""]
        ])
    );
    assert_eq!(got[1]["payload"], "m");
    assert_eq!(
        got[1]["user_properties"],
        serde_json::json!([["z", "last"], ["a", "first"]])
    );
}

#[test]
fn queued_message_past_its_expiry_is_not_delivered() {
    let broker = Broker::start(&[]);
    let port = broker.port();
    let session = [
        "--protocol",
        "5",
        "--client-id",
        "expiring",
        "--keep-session",
        "--session-expiry",
        "600",
        "--topic",
        "expiry/t",
        "--qos",
        "1",
    ];
    // Subscribe, then go offline (the session stays for 600 s).
    let mut first = paho_sub(port, &session);
    assert_eq!(first.wait(STEP).map(|s| s.success()), Some(true));
    for (payload, expiry) in [
        ("short", Some("1")),
        ("long", Some("100")),
        ("forever", None),
    ] {
        let mut args = vec!["-V", "mqttv5", "-q", "1", "-t", "expiry/t", "-m", payload];
        if let Some(seconds) = expiry {
            args.extend(["-D", "publish", "message-expiry-interval", seconds]);
        }
        mosquitto_pub(port, &args);
    }
    // Offline for longer than the 1 s expiry: part of the scenario, not a timing assertion.
    std::thread::sleep(Duration::from_millis(2100));
    let back = paho(
        "paho_sub.py",
        port,
        &[&session[..], &["--count", "2"]].concat(),
    );
    let connected = json(&back.expect_line(STEP));
    assert_eq!(connected["session_present"], true, "{connected}");
    let got: Vec<serde_json::Value> = back
        .collect(2, STEP, |line| json(line)["event"] == "message")
        .iter()
        .map(|line| json(line))
        .collect();
    assert_eq!(
        got.iter()
            .map(|m| m["payload"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["long", "forever"]
    );
    // The expiry forwarded is what is left of it: at least 2 s have passed [MQTT-3.3.2-6].
    let left = got[0]["message_expiry"].as_u64().expect("expiry forwarded");
    assert!((1..=98).contains(&left), "remaining expiry {left}");
    assert_eq!(got[1].get("message_expiry"), None);
}

#[test]
fn topic_alias_from_paho_is_resolved_for_every_subscriber() {
    let broker = Broker::start(&[]);
    let port = broker.port();
    let paho_subscriber = paho_sub(
        port,
        &[
            "--protocol",
            "311",
            "--topic",
            "alias/t",
            "--qos",
            "1",
            "--count",
            "3",
        ],
    );
    let mosquitto = Subscriber::start(SubTool::Mosquitto, port, &["-q", "1", "-t", "alias/#"]);
    // The first PUBLISH carries the topic and alias 1, the next two only the alias.
    let mut publisher = paho(
        "paho_pub.py",
        port,
        &[
            "--topic",
            "alias/t",
            "--alias",
            "1",
            "--qos",
            "1",
            "--message",
            "one",
            "--message",
            "two",
            "--message",
            "three",
        ],
    );
    let acks = publisher.collect(4, STEP, |_| true);
    assert_eq!(publisher.wait(STEP).map(|s| s.success()), Some(true));
    assert_eq!(json(&acks[3])["event"], "done");
    for (index, ack) in acks[..3].iter().enumerate() {
        let ack = json(ack);
        assert_eq!(
            (ack["event"].as_str(), ack["index"].as_u64()),
            (Some("published"), Some(index as u64))
        );
        assert_eq!(ack["reason_code"], 0, "PUBACK {ack}");
    }
    let got = paho_messages(&paho_subscriber, 3, STEP);
    assert_eq!(
        got.iter()
            .map(|m| (m["topic"].as_str().unwrap(), m["payload"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [("alias/t", "one"), ("alias/t", "two"), ("alias/t", "three")]
    );
    assert_eq!(
        mosquitto.messages(3, STEP),
        ["alias/t one", "alias/t two", "alias/t three"]
    );
}

#[test]
fn request_response_properties_pass_through() {
    let broker = Broker::start(&[]);
    let port = broker.port();
    let responder = paho(
        "paho_responder.py",
        port,
        &["--topic", "rr/request", "--count", "1"],
    );
    assert_eq!(json(&responder.expect_line(STEP))["event"], "subscribed");
    // A third party watching the responses sees the correlation data come back.
    let watcher = paho_sub(
        port,
        &[
            "--protocol",
            "5",
            "--topic",
            "rr/response/#",
            "--qos",
            "1",
            "--count",
            "1",
        ],
    );
    // mosquitto_rr: publishes with a Response Topic and waits for the answer there.
    let out = run(
        Command::new("mosquitto_rr")
            .args(["-h", "127.0.0.1", "-p", &broker.port_arg()])
            .args(["-t", "rr/request", "-e", "rr/response/me", "-m", "question"])
            .args(["-D", "publish", "correlation-data", "corr-42", "-W", "10"]),
        STEP,
    );
    out.assert_success("mosquitto_rr");
    assert_eq!(out.stdout.trim_end(), "answer:question");

    let request = json(&responder.expect_line(STEP));
    assert_eq!(request["payload"], "question");
    assert_eq!(request["response_topic"], "rr/response/me");
    assert_eq!(request["correlation_data"], hex(b"corr-42"));
    let response = &paho_messages(&watcher, 1, STEP)[0];
    assert_eq!(response["topic"], "rr/response/me");
    assert_eq!(response["payload"], "answer:question");
    assert_eq!(response["correlation_data"], hex(b"corr-42"));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn one_megabyte_payload_round_trips_under_a_raised_packet_limit() {
    const SIZE: usize = 1_000_000;
    let broker = Broker::start(&["--max-packet-size", "2000000"]);
    let port = broker.port();
    let pattern: Vec<u8> = (0..SIZE).map(|i| ((i * 7 + 3) % 256) as u8).collect();
    let file = broker.dir().write("payload.bin", &pattern);

    let sub = paho_sub(
        port,
        &[
            "--protocol",
            "5",
            "--topic",
            "big/#",
            "--qos",
            "2",
            "--count",
            "2",
            "--no-payload",
        ],
    );
    // mosquitto_pub -f at QoS 1, then paho at QoS 2 (same pattern, generated in Python).
    mosquitto_pub(
        port,
        &[
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            "big/mosquitto",
            "-f",
            path_arg(&file),
        ],
    );
    let mut publisher = paho(
        "paho_pub.py",
        port,
        &[
            "--topic",
            "big/paho",
            "--qos",
            "2",
            "--payload-size",
            &SIZE.to_string(),
        ],
    );
    assert_eq!(
        publisher.wait(Duration::from_secs(30)).map(|s| s.success()),
        Some(true)
    );
    let got = paho_messages(&sub, 2, Duration::from_secs(30));
    for (message, topic) in got.iter().zip(["big/mosquitto", "big/paho"]) {
        assert_eq!(message["topic"], topic);
        assert_eq!(message["len"], SIZE);
        assert_eq!(message["crc32"], crc32(&pattern));
    }
}

/// `--max-keepalive` caps a larger Keep Alive with a Server Keep Alive property (MQTT 5
/// §3.2.2.3.14) and `--receive-maximum` is the Receive Maximum the CONNACK announces.
#[test]
fn connack_carries_server_keep_alive_and_receive_maximum_from_flags() {
    use femtomq_e2e::raw::{self, RawClient, Received};
    let broker = Broker::start(&["--max-keepalive", "30", "--receive-maximum", "7"]);
    let mut client = RawClient::connect(broker.address());
    client
        .send(&raw::connect(raw::V5, "keepalive", 600))
        .expect("send CONNECT");
    let connack = match client.read_packet(STEP) {
        Received::Packet(connack) if connack[0] == 0x20 && connack.get(3) == Some(&0) => connack,
        other => panic!("CONNECT answered with {other:?}"),
    };
    let properties = raw::connack_properties(&connack);
    let value = |id: u8| {
        properties
            .iter()
            .find(|(found, _)| *found == id)
            .map(|(_, value)| u16::from_be_bytes([value[0], value[1]]))
    };
    assert_eq!(value(0x13), Some(30), "Server Keep Alive in {properties:?}");
    assert_eq!(value(0x21), Some(7), "Receive Maximum in {properties:?}");
}
