//! QoS 0, 1 and 2 round trips through the built broker with every client: mosquitto_pub/sub
//! (MQTT 3.1.1 and 5), paho-mqtt (3.1.1 and 5), rumqttc (3.1.1 and 5), `femtomq pub/sub`, and
//! mixes of them. Every message must arrive once, in order, at min(publish, subscribe) QoS.

use std::time::Duration;

use femtomq_e2e::{
    Broker, STEP, SubTool, Subscriber, femtomq, mosquitto_pub_input, paho, paho_messages, paho_sub,
    run,
};

const COUNT: usize = 10;

fn payloads(prefix: &str) -> Vec<String> {
    (0..COUNT).map(|i| format!("{prefix}-{i}")).collect()
}

fn lines(topic: &str, payloads: &[String]) -> Vec<String> {
    payloads.iter().map(|p| format!("{topic} {p}")).collect()
}

/// mosquitto_pub -l (one message per stdin line) into mosquitto_sub, at each QoS.
fn mosquitto_round_trip(version: &str) {
    let broker = Broker::start(&[]);
    for qos in ["0", "1", "2"] {
        let topic = format!("rt/mosquitto/{version}/{qos}");
        let sub = Subscriber::start(
            SubTool::Mosquitto,
            broker.port(),
            &["-V", version, "-q", qos, "-t", &topic],
        );
        let sent = payloads(&format!("q{qos}"));
        let input = sent.join("\n") + "\n";
        mosquitto_pub_input(
            broker.port(),
            &["-V", version, "-q", qos, "-t", &topic, "-l"],
            input.as_bytes(),
        );
        assert_eq!(sub.messages(COUNT, STEP), lines(&topic, &sent), "QoS {qos}");
        assert_eq!(
            sub.more_within(Duration::from_millis(100)),
            Vec::<String>::new()
        );
    }
}

#[test]
fn mosquitto_clients_round_trip_qos_0_1_2_mqtt311() {
    mosquitto_round_trip("mqttv311");
}

#[test]
fn mosquitto_clients_round_trip_qos_0_1_2_mqtt5() {
    mosquitto_round_trip("mqttv5");
}

/// paho publisher into paho subscriber, at each QoS; the delivered QoS is the publish QoS.
fn paho_round_trip(protocol: &str) {
    let broker = Broker::start(&[]);
    for qos in ["0", "1", "2"] {
        let topic = format!("rt/paho/{protocol}/{qos}");
        let count = COUNT.to_string();
        let sub = paho_sub(
            broker.port(),
            &[
                "--protocol",
                protocol,
                "--topic",
                &topic,
                "--qos",
                "2",
                "--count",
                &count,
            ],
        );
        let sent = payloads(&format!("q{qos}"));
        let mut args = vec!["--protocol", protocol, "--topic", &topic, "--qos", qos];
        for payload in &sent {
            args.extend(["--message", payload]);
        }
        let mut publisher = paho("paho_pub.py", broker.port(), &args);
        let acks = publisher.collect(COUNT + 1, STEP, |_| true);
        assert!(acks[COUNT].contains("\"done\""), "{acks:?}");
        assert_eq!(publisher.wait(STEP).map(|s| s.success()), Some(true));
        let messages = paho_messages(&sub, COUNT, STEP);
        let got: Vec<&str> = messages
            .iter()
            .map(|m| m["payload"].as_str().unwrap())
            .collect();
        assert_eq!(got, sent, "QoS {qos}");
        for message in &messages {
            assert_eq!(message["topic"], topic.as_str());
            assert_eq!(message["qos"].to_string(), qos);
            assert_eq!(message["retain"], false);
        }
    }
}

#[test]
fn paho_round_trip_qos_0_1_2_mqtt311() {
    paho_round_trip("311");
}

#[test]
fn paho_round_trip_qos_0_1_2_mqtt5() {
    paho_round_trip("5");
}

#[test]
fn femtomq_pub_sub_round_trip_qos_0_1_2_both_versions() {
    let broker = Broker::start(&[]);
    for version in ["311", "5"] {
        for qos in ["0", "1", "2"] {
            let topic = format!("rt/femtomq/{version}/{qos}");
            let sub = Subscriber::start(
                SubTool::Femtomq,
                broker.port(),
                &["-V", version, "-q", qos, "-t", &topic],
            );
            let sent = payloads(&format!("v{version}q{qos}"));
            let mut args = vec![
                "pub".to_string(),
                "--host".into(),
                "127.0.0.1".into(),
                "-p".into(),
                broker.port_arg(),
                "-V".into(),
                version.into(),
                "-q".into(),
                qos.into(),
                "-t".into(),
                topic.clone(),
            ];
            for payload in &sent {
                args.extend(["-m".to_string(), payload.clone()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&mut femtomq(&args), STEP).assert_success("femtomq pub");
            assert_eq!(sub.messages(COUNT, STEP), lines(&topic, &sent));
        }
    }
}

/// Every client publishing into every other kind of subscriber, at QoS 1.
#[test]
fn clients_interoperate_mosquitto_paho_femtomq() {
    let broker = Broker::start(&[]);
    let port = broker.port();
    let count = COUNT.to_string();

    // mosquitto_pub (v5) -> paho (3.1.1)
    let sub = paho_sub(
        port,
        &[
            "--protocol",
            "311",
            "--topic",
            "mix/a",
            "--qos",
            "1",
            "--count",
            &count,
        ],
    );
    let sent = payloads("a");
    mosquitto_pub_input(
        port,
        &["-V", "mqttv5", "-q", "1", "-t", "mix/a", "-l"],
        (sent.join("\n") + "\n").as_bytes(),
    );
    let got: Vec<String> = paho_messages(&sub, COUNT, STEP)
        .iter()
        .map(|m| m["payload"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, sent);

    // paho (v5) -> mosquitto_sub (3.1.1) and femtomq sub (5) at once
    let mosquitto = Subscriber::start(
        SubTool::Mosquitto,
        port,
        &["-V", "mqttv311", "-q", "1", "-t", "mix/b"],
    );
    let ours = Subscriber::start(SubTool::Femtomq, port, &["-q", "1", "-t", "mix/b"]);
    let sent = payloads("b");
    let mut args = vec!["--protocol", "5", "--topic", "mix/b", "--qos", "1"];
    for payload in &sent {
        args.extend(["--message", payload]);
    }
    let mut publisher = paho("paho_pub.py", port, &args);
    assert_eq!(publisher.wait(STEP).map(|s| s.success()), Some(true));
    assert_eq!(mosquitto.messages(COUNT, STEP), lines("mix/b", &sent));
    assert_eq!(ours.messages(COUNT, STEP), lines("mix/b", &sent));

    // femtomq pub (3.1.1) -> mosquitto_sub (5)
    let mosquitto5 = Subscriber::start(
        SubTool::Mosquitto,
        port,
        &["-V", "mqttv5", "-q", "2", "-t", "mix/c"],
    );
    let sent = payloads("c");
    let mut args = vec![
        "pub".to_string(),
        "--host".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-V".into(),
        "311".into(),
        "-q".into(),
        "2".into(),
        "-t".into(),
        "mix/c".into(),
    ];
    for payload in &sent {
        args.extend(["-m".to_string(), payload.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&mut femtomq(&args), STEP).assert_success("femtomq pub");
    assert_eq!(mosquitto5.messages(COUNT, STEP), lines("mix/c", &sent));
}

mod rumqttc_clients {
    use super::*;
    use std::sync::mpsc;

    /// rumqttc 3.1.1 (`rumqttc::Client`): a subscriber thread and a publisher, at `qos`.
    fn round_trip_v311(port: u16, qos: rumqttc::QoS) -> Vec<(String, String, rumqttc::QoS)> {
        use rumqttc::{Client, Event, MqttOptions, Packet};
        let topic = format!("rt/rumqttc/311/{qos:?}");
        let mut options = MqttOptions::new(format!("rumqttc-sub-{qos:?}"), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        let (subscriber, mut connection) = Client::new(options, 64);
        subscriber
            .subscribe(&topic, rumqttc::QoS::ExactlyOnce)
            .unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let receiver = std::thread::spawn(move || {
            let mut received = Vec::new();
            while received.len() < COUNT {
                match connection.recv_timeout(STEP) {
                    Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => ready_tx.send(()).unwrap(),
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => received.push((
                        p.topic.clone(),
                        String::from_utf8_lossy(&p.payload).into_owned(),
                        p.qos,
                    )),
                    Ok(Ok(_)) => {}
                    other => panic!("rumqttc subscriber: {other:?} after {received:?}"),
                }
            }
            subscriber.disconnect().unwrap();
            received
        });
        ready_rx.recv_timeout(STEP).expect("no SUBACK");

        let options = MqttOptions::new(format!("rumqttc-pub-{qos:?}"), "127.0.0.1", port);
        let (publisher, mut connection) = Client::new(options, 64);
        for payload in payloads(&format!("{qos:?}")) {
            publisher.publish(&topic, qos, false, payload).unwrap();
        }
        let mut done = 0;
        while done < COUNT {
            match connection.recv_timeout(STEP) {
                Ok(Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))))
                    if qos != rumqttc::QoS::AtMostOnce =>
                {
                    done += 1
                }
                Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))))
                    if qos == rumqttc::QoS::AtMostOnce =>
                {
                    done += 1
                }
                Ok(Ok(_)) => {}
                other => panic!("rumqttc publisher: {other:?}"),
            }
        }
        publisher.disconnect().unwrap();
        // Drive the connection until the DISCONNECT is out (the loop ends with an error then).
        while let Ok(Ok(_)) = connection.recv_timeout(Duration::from_secs(1)) {}
        receiver.join().unwrap()
    }

    #[test]
    fn rumqttc_round_trip_qos_0_1_2_mqtt311() {
        let broker = Broker::start(&[]);
        for qos in [
            rumqttc::QoS::AtMostOnce,
            rumqttc::QoS::AtLeastOnce,
            rumqttc::QoS::ExactlyOnce,
        ] {
            let received = round_trip_v311(broker.port(), qos);
            let topic = format!("rt/rumqttc/311/{qos:?}");
            let expected: Vec<_> = payloads(&format!("{qos:?}"))
                .into_iter()
                .map(|p| (topic.clone(), p, qos))
                .collect();
            assert_eq!(received, expected);
        }
    }

    /// rumqttc MQTT 5 (`rumqttc::v5::Client`), at `qos`.
    fn round_trip_v5(
        port: u16,
        qos: rumqttc::v5::mqttbytes::QoS,
    ) -> Vec<(String, String, rumqttc::v5::mqttbytes::QoS)> {
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::{Client, Event, MqttOptions};
        let topic = format!("rt/rumqttc/5/{qos:?}");
        let mut options = MqttOptions::new(format!("rumqttc5-sub-{qos:?}"), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        let (subscriber, mut connection) = Client::new(options, 64);
        subscriber.subscribe(&topic, QoS::ExactlyOnce).unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let receiver = std::thread::spawn(move || {
            let mut received = Vec::new();
            while received.len() < COUNT {
                match connection.recv_timeout(STEP) {
                    Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => ready_tx.send(()).unwrap(),
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => received.push((
                        String::from_utf8_lossy(&p.topic).into_owned(),
                        String::from_utf8_lossy(&p.payload).into_owned(),
                        p.qos,
                    )),
                    Ok(Ok(_)) => {}
                    other => panic!("rumqttc v5 subscriber: {other:?} after {received:?}"),
                }
            }
            subscriber.disconnect().unwrap();
            received
        });
        ready_rx.recv_timeout(STEP).expect("no SUBACK");

        let options = MqttOptions::new(format!("rumqttc5-pub-{qos:?}"), "127.0.0.1", port);
        let (publisher, mut connection) = Client::new(options, 64);
        for payload in payloads(&format!("{qos:?}")) {
            publisher
                .publish(topic.clone(), qos, false, payload)
                .unwrap();
        }
        let mut done = 0;
        while done < COUNT {
            match connection.recv_timeout(STEP) {
                Ok(Ok(Event::Incoming(Packet::PubAck(..) | Packet::PubComp(..))))
                    if qos != QoS::AtMostOnce =>
                {
                    done += 1
                }
                Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))))
                    if qos == QoS::AtMostOnce =>
                {
                    done += 1
                }
                Ok(Ok(_)) => {}
                other => panic!("rumqttc v5 publisher: {other:?}"),
            }
        }
        publisher.disconnect().unwrap();
        while let Ok(Ok(_)) = connection.recv_timeout(Duration::from_secs(1)) {}
        receiver.join().unwrap()
    }

    #[test]
    fn rumqttc_round_trip_qos_0_1_2_mqtt5() {
        use rumqttc::v5::mqttbytes::QoS;
        let broker = Broker::start(&[]);
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let received = round_trip_v5(broker.port(), qos);
            let topic = format!("rt/rumqttc/5/{qos:?}");
            let expected: Vec<_> = payloads(&format!("{qos:?}"))
                .into_iter()
                .map(|p| (topic.clone(), p, qos))
                .collect();
            assert_eq!(received, expected);
        }
    }
}
