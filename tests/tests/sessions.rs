//! Persistent sessions: messages published while a subscriber is offline are queued and all
//! delivered, in order, when it comes back [MQTT-3.1.2-5] [MQTT-4.6.0-6]: MQTT 3.1.1 with clean
//! session off (`mosquitto_sub -c -i ID`) and MQTT 5 with a Session Expiry Interval (`-x`).

use std::process::Command;
use std::time::Duration;

use femtomq_e2e::{
    Broker, STEP, Spawned, SubTool, Subscriber, femtomq, json, mosquitto_pub_input, paho,
    paho_messages, paho_sub, run,
};

const QUEUED: usize = 500;

/// Subscribes with a persistent session, goes offline, gets QUEUED QoS 1 messages published,
/// reconnects with `reconnect` and returns what it printed.
fn queued_while_offline(
    broker: &Broker,
    tool: SubTool,
    session_args: &[&str],
    topic: &str,
    publish_version: &str,
) -> (Vec<String>, Vec<String>) {
    let port = broker.port();
    let mut first = Subscriber::start(
        tool,
        port,
        &[session_args, &["-q", "1", "-t", topic]].concat(),
    );
    // SIGTERM: both tools then disconnect normally; the session stays.
    first.process().signal(rustix::process::Signal::TERM);
    assert!(
        first.process().wait(STEP).is_some(),
        "subscriber did not exit"
    );
    drop(first);

    let sent: Vec<String> = (0..QUEUED).map(|i| format!("queued-{i:04}")).collect();
    mosquitto_pub_input(
        port,
        &["-V", publish_version, "-q", "1", "-t", topic, "-l"],
        (sent.join("\n") + "\n").as_bytes(),
    );

    // Back online with the same session and no new subscription needed; the bound is a hang
    // guard, completeness and order are what is asserted.
    let count = QUEUED.to_string();
    let mut command = match tool {
        SubTool::Mosquitto => {
            let mut command = Command::new("mosquitto_sub");
            command.args(["-h", "127.0.0.1"]);
            command
        }
        SubTool::Femtomq => femtomq(&["sub", "--host", "127.0.0.1"]),
    };
    command
        .args(["-p", &port.to_string()])
        .args(session_args)
        .args(["-q", "1", "-t", topic, "-C", &count, "-W", "20"]);
    let out = run(&mut command, Duration::from_secs(25));
    out.assert_success("reconnecting subscriber");
    (out.stdout.lines().map(String::from).collect(), sent)
}

#[test]
fn mqtt311_clean_session_off_gets_every_message_queued_while_offline_in_order() {
    let broker = Broker::start(&[]);
    let (got, sent) = queued_while_offline(
        &broker,
        SubTool::Mosquitto,
        &["-V", "mqttv311", "-c", "-i", "offline-311"],
        "sessions/311",
        "mqttv311",
    );
    assert_eq!(got.len(), QUEUED);
    assert_eq!(got, sent);
}

#[test]
fn mqtt5_session_expiry_gets_every_message_queued_while_offline_in_order() {
    let broker = Broker::start(&[]);
    let (got, sent) = queued_while_offline(
        &broker,
        SubTool::Mosquitto,
        &["-V", "mqttv5", "-c", "-x", "600", "-i", "offline-5"],
        "sessions/5",
        "mqttv5",
    );
    assert_eq!(got.len(), QUEUED);
    assert_eq!(got, sent);
}

#[test]
fn femtomq_sub_session_expiry_gets_every_message_queued_while_offline_in_order() {
    let broker = Broker::start(&[]);
    let (got, sent) = queued_while_offline(
        &broker,
        SubTool::Femtomq,
        &["-V", "5", "-c", "-x", "600", "-i", "offline-femtomq"],
        "sessions/femtomq",
        "mqttv311",
    );
    assert_eq!(got.len(), QUEUED);
    assert_eq!(got, sent);
}

#[test]
fn mqtt5_session_without_expiry_ends_at_disconnect() {
    // The contrast case: Session Expiry Interval absent (0) ends the session when the network
    // connection closes [MQTT-3.1.2-23], so a client coming back with clean start off finds no
    // session (CONNACK session present 0) and nothing queued. paho sends no expiry by default;
    // (mosquitto_sub -c sets an infinite one in MQTT 5.)
    let broker = Broker::start(&[]);
    let port = broker.port();
    let args = [
        "--protocol",
        "5",
        "--client-id",
        "no-expiry",
        "--keep-session",
        "--topic",
        "sessions/none",
        "--qos",
        "1",
    ];
    let mut first = paho_sub(port, &args);
    assert_eq!(first.wait(STEP).map(|s| s.success()), Some(true));
    mosquitto_pub_input(
        port,
        &["-q", "1", "-t", "sessions/none", "-l"],
        b"lost-1\nlost-2\n",
    );

    let back = paho(
        "paho_sub.py",
        port,
        &[&args[..], &["--count", "1"]].concat(),
    );
    let connected = json(&back.expect_line(STEP));
    assert_eq!(connected["event"], "connected");
    assert_eq!(connected["session_present"], false);
    assert_eq!(json(&back.expect_line(STEP))["event"], "subscribed");
    mosquitto_pub_input(port, &["-q", "1", "-t", "sessions/none", "-l"], b"fresh\n");
    let got = paho_messages(&back, 1, STEP);
    assert_eq!(got[0]["payload"], "fresh");
}

/// Subscribes to `topic` with `mosquitto_sub` and the persistent `session` options, then
/// leaves: the session stays, offline.
fn subscribe_then_leave(port: u16, session: &[&str], topic: &str) {
    let mut first = Subscriber::start(
        SubTool::Mosquitto,
        port,
        &[session, &["-t", topic]].concat(),
    );
    first.process().signal(rustix::process::Signal::TERM);
    assert!(
        first.process().wait(STEP).is_some(),
        "subscriber did not exit"
    );
}

/// `--max-queued-messages N`: an offline session keeps the first N QoS 1 messages and drops
/// the newer ones (the queue refuses when full: femtomq.toml `[limits] max_queued_messages`).
#[test]
fn max_queued_messages_bounds_what_an_offline_session_gets_back() {
    const LIMIT: usize = 5;
    let broker = Broker::start(&["--max-queued-messages", &LIMIT.to_string()]);
    let port = broker.port();
    let session = [
        "-V", "mqttv5", "-c", "-x", "600", "-i", "bounded", "-q", "1",
    ];
    subscribe_then_leave(port, &session, "sessions/bounded");

    let sent: Vec<String> = (0..LIMIT + 3).map(|i| format!("queued-{i}")).collect();
    mosquitto_pub_input(
        port,
        &["-q", "1", "-t", "sessions/bounded", "-l"],
        (sent.join("\n") + "\n").as_bytes(),
    );

    // Back online: the first LIMIT queued messages, then a message published now comes next,
    // so the 3 over the limit were dropped (not merely late).
    let back = Spawned::spawn(
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(session)
            .args(["-t", "sessions/bounded"]),
    );
    let got: Vec<String> = (0..LIMIT).map(|_| back.expect_line(STEP)).collect();
    assert_eq!(got, sent[..LIMIT]);
    mosquitto_pub_input(
        port,
        &["-q", "1", "-t", "sessions/bounded", "-m", "live"],
        b"",
    );
    assert_eq!(back.expect_line(STEP), "live");
}

/// A session whose queue stays full has every further message dropped: the broker warns about
/// the first few (10) of each 10 s and then sums up the rest in one line, instead of writing a
/// line per message (1,995 here; an overloaded fan-in wrote 470,000 in 4 s).
#[test]
fn drops_from_a_full_queue_are_warned_about_a_few_at_a_time_then_counted() {
    let broker = Broker::start(&["--max-queued-messages", "5"]);
    let port = broker.port();
    let session = [
        "-V", "mqttv5", "-c", "-x", "600", "-i", "flooded", "-q", "1",
    ];
    subscribe_then_leave(port, &session, "sessions/flooded");
    let lines: Vec<String> = (0..2000).map(|i| format!("m{i}")).collect();
    mosquitto_pub_input(
        port,
        &["-q", "1", "-t", "sessions/flooded", "-l"],
        (lines.join("\n") + "\n").as_bytes(),
    );
    let one_by_one = "dropped for client `flooded`: QueueFull";
    assert!(
        broker.wait_for_log(one_by_one, 10, STEP),
        "{}",
        broker.log()
    );
    // 1,995 dropped: 10 warnings, and no summary before the window ends.
    assert_eq!(broker.log().matches(one_by_one).count(), 10);
    assert!(!broker.log().contains("more messages dropped"));
    // After the window, the next activity (a publisher connecting) brings the sum of those not
    // logged, 1,995 - 10; its message, dropped too, opens a new window and is logged.
    std::thread::sleep(Duration::from_millis(10_500));
    mosquitto_pub_input(
        port,
        &["-q", "1", "-t", "sessions/flooded", "-m", "late"],
        b"",
    );
    let summary = "1985 more messages dropped in the last 10 s";
    assert!(broker.wait_for_log(summary, 1, STEP), "{}", broker.log());
    assert!(
        broker.wait_for_log(one_by_one, 11, STEP),
        "{}",
        broker.log()
    );
    assert_eq!(broker.log().matches("more messages dropped").count(), 1);
}
