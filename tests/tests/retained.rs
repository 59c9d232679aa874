//! Retained messages: a late subscriber gets the last retained message on each topic (with the
//! retain flag), an existing subscriber gets it live (without), and an empty retained payload
//! deletes it [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-9] [MQTT-3.3.1-10].

use femtomq_e2e::{Broker, STEP, mosquitto_pub, paho_messages, paho_sub, run};
use std::process::Command;

fn payload_and_retain(message: &serde_json::Value) -> (String, String, bool) {
    (
        message["topic"].as_str().unwrap().to_string(),
        message["payload"].as_str().unwrap().to_string(),
        message["retain"].as_bool().unwrap(),
    )
}

#[test]
fn late_subscriber_gets_the_last_retained_message_with_the_retain_flag() {
    let broker = Broker::start(&[]);
    let port = broker.port();
    // Subscribed before: gets them live, retain flag cleared [MQTT-3.3.1-9].
    let early = paho_sub(
        port,
        &[
            "--protocol",
            "5",
            "--topic",
            "ret/#",
            "--qos",
            "1",
            "--count",
            "3",
        ],
    );
    mosquitto_pub(port, &["-r", "-q", "1", "-t", "ret/a", "-m", "first"]);
    mosquitto_pub(port, &["-r", "-q", "1", "-t", "ret/a", "-m", "second"]);
    mosquitto_pub(
        port,
        &["-V", "mqttv5", "-r", "-q", "0", "-t", "ret/b", "-m", "bee"],
    );
    let live: Vec<_> = paho_messages(&early, 3, STEP)
        .iter()
        .map(payload_and_retain)
        .collect();
    assert_eq!(
        live,
        [
            ("ret/a".into(), "first".into(), false),
            ("ret/a".into(), "second".into(), false),
            ("ret/b".into(), "bee".into(), false),
        ]
    );

    // Late subscribers: the last retained message of each topic, flagged, then a live marker.
    for protocol in ["311", "5"] {
        let late = paho_sub(
            port,
            &[
                "--protocol",
                protocol,
                "--topic",
                "ret/a",
                "--qos",
                "1",
                "--count",
                "2",
            ],
        );
        mosquitto_pub(port, &["-q", "1", "-t", "ret/a", "-m", "live"]);
        let got: Vec<_> = paho_messages(&late, 2, STEP)
            .iter()
            .map(payload_and_retain)
            .collect();
        assert_eq!(
            got,
            [
                ("ret/a".into(), "second".into(), true),
                ("ret/a".into(), "live".into(), false),
            ],
            "MQTT {protocol}"
        );
    }

    // mosquitto_sub as the late subscriber, on a wildcard: both retained topics.
    let out = run(
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &broker.port_arg()])
            .args(["-v", "-t", "ret/+", "-C", "2", "-W", "10"]),
        STEP,
    );
    out.assert_success("mosquitto_sub");
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["ret/a second", "ret/b bee"]);
}

#[test]
fn empty_retained_payload_deletes_the_retained_message() {
    let broker = Broker::start(&[]);
    let port = broker.port();
    mosquitto_pub(port, &["-r", "-q", "1", "-t", "del/a", "-m", "keep me?"]);
    mosquitto_pub(port, &["-r", "-q", "1", "-t", "del/b", "-m", "kept"]);
    // Deleted by a zero-length retained message, from MQTT 3.1.1 and from MQTT 5.
    mosquitto_pub(port, &["-r", "-q", "1", "-t", "del/a", "-n"]);
    mosquitto_pub(
        port,
        &[
            "-V", "mqttv5", "-r", "-q", "1", "-t", "del/b", "-m", "kept2",
        ],
    );
    let late = paho_sub(
        port,
        &[
            "--protocol",
            "5",
            "--topic",
            "del/#",
            "--qos",
            "1",
            "--count",
            "2",
        ],
    );
    mosquitto_pub(port, &["-q", "1", "-t", "del/marker", "-m", "live"]);
    let got: Vec<_> = paho_messages(&late, 2, STEP)
        .iter()
        .map(payload_and_retain)
        .collect();
    // del/a is gone; only del/b's retained message, then the live marker.
    assert_eq!(
        got,
        [
            ("del/b".into(), "kept2".into(), true),
            ("del/marker".into(), "live".into(), false),
        ]
    );

    // Deleting the last one leaves nothing: the next late subscriber sees the marker first.
    mosquitto_pub(
        port,
        &["-V", "mqttv5", "-r", "-q", "1", "-t", "del/b", "-n"],
    );
    let empty = paho_sub(
        port,
        &[
            "--protocol",
            "311",
            "--topic",
            "del/#",
            "--qos",
            "1",
            "--count",
            "1",
        ],
    );
    mosquitto_pub(port, &["-q", "1", "-t", "del/marker", "-m", "live2"]);
    let got: Vec<_> = paho_messages(&empty, 1, STEP)
        .iter()
        .map(payload_and_retain)
        .collect();
    assert_eq!(got, [("del/marker".into(), "live2".into(), false)]);
}
