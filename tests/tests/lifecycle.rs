//! Process lifecycle: `--daemon --pid-file` and `femtomq stop`, SIGTERM and SIGINT telling
//! MQTT 5 clients DISCONNECT 0x8B Server shutting down before exiting 0 after flushing what was
//! queued for them, and `femtomq reload` (SIGHUP) applying a new limit or log level without
//! dropping connected clients.

use std::net::TcpStream;
use std::time::Duration;

use femtomq_e2e::raw::{self, RawClient, Received};
use femtomq_e2e::{
    Broker, STEP, SubTool, Subscriber, TestDir, femtomq, json, listening_ports, mosquitto_pub,
    paho, path_arg, process_alive, run, send_signal, wait_until,
};

/// Whether the broker sent exactly one DISCONNECT with `reason` before closing (properties such
/// as a reason string may follow the reason code, after the one-byte remaining length).
fn one_disconnect(packets: &Result<Vec<Vec<u8>>, Vec<Vec<u8>>>, reason: u8) -> bool {
    match packets {
        Ok(p) => p.len() == 1 && p[0].len() >= 3 && p[0][0] == 0xE0 && p[0][2] == reason,
        Err(_) => false,
    }
}

/// Kills a daemon left running by a failed test.
struct DaemonGuard(Option<u32>);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0
            && process_alive(pid)
        {
            send_signal(pid, rustix::process::Signal::KILL);
        }
    }
}

#[test]
fn daemon_runs_in_the_background_and_stop_ends_it_and_removes_the_pid_file() {
    let dir = TestDir::new("daemon");
    let pid_file = dir.join("femtomq.pid");
    let out = run(
        &mut femtomq(&[
            "start",
            "--daemon",
            "--pid-file",
            path_arg(&pid_file),
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "off",
        ]),
        STEP,
    );
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("no pid file ({e}): {out:?}"))
        .trim()
        .parse()
        .expect("a pid");
    let _guard = DaemonGuard(Some(pid));
    out.assert_success("femtomq start --daemon");
    assert_eq!(
        out.stdout.trim(),
        format!("femtomq running in the background, pid {pid}")
    );
    assert!(process_alive(pid));

    // It serves: find its port from /proc and do a round trip.
    let mut ports = Vec::new();
    assert!(
        wait_until(STEP, || {
            ports = listening_ports(pid);
            !ports.is_empty()
        }),
        "the daemon listens on no port"
    );
    let sub = Subscriber::start(SubTool::Mosquitto, ports[0], &["-t", "daemon"]);
    mosquitto_pub(ports[0], &["-t", "daemon", "-m", "alive"]);
    assert_eq!(sub.messages(1, STEP), ["daemon alive"]);
    drop(sub);

    let out = run(
        &mut femtomq(&["stop", "--pid-file", path_arg(&pid_file)]),
        Duration::from_secs(15),
    );
    out.assert_success("femtomq stop");
    assert!(!process_alive(pid), "the daemon is still running");
    assert!(!pid_file.exists(), "the pid file was not removed");
}

#[test]
fn sigterm_sends_mqtt5_clients_disconnect_0x8b_and_exits_0() {
    shutdown_signal_sends_disconnect_0x8b_and_exits_0(rustix::process::Signal::TERM);
}

/// Ctrl-C in a terminal: the same clean shutdown as SIGTERM.
#[test]
fn sigint_sends_mqtt5_clients_disconnect_0x8b_and_exits_0() {
    shutdown_signal_sends_disconnect_0x8b_and_exits_0(rustix::process::Signal::INT);
}

fn shutdown_signal_sends_disconnect_0x8b_and_exits_0(signal: rustix::process::Signal) {
    let mut broker = Broker::start(&[]);
    let (mut raw5, _) = RawClient::connected(broker.address(), raw::V5, "raw5");
    let (mut raw311, _) = RawClient::connected(broker.address(), raw::V311, "raw311");
    let paho_client = paho(
        "paho_sub.py",
        broker.port(),
        &[
            "--protocol",
            "5",
            "--topic",
            "x",
            "--stay",
            "--timeout",
            "30",
        ],
    );
    assert_eq!(json(&paho_client.expect_line(STEP))["event"], "connected");
    assert_eq!(json(&paho_client.expect_line(STEP))["event"], "subscribed");

    broker.signal(signal);
    // Server shutting down [MQTT 5 §3.14.2.1, reason 0x8B], then the connection closes. The
    // reason code follows the one-byte remaining length; properties (a reason string) may follow.
    let packets = raw5.read_until_closed(STEP);
    assert!(
        one_disconnect(&packets, 0x8B),
        "{signal:?}: expected one DISCONNECT 0x8B, got {packets:?}"
    );
    // MQTT 3.1.1 has no server DISCONNECT: just closed.
    assert_eq!(raw311.read_until_closed(STEP), Ok(vec![]));
    // paho is told it was disconnected by the broker. (paho-mqtt 2.1 reads a DISCONNECT's
    // reason code only when the packet also carries properties, remaining length > 2, so it
    // reports 0 for the short form E0 01 8B that the raw client checks above.)
    let event = json(&paho_client.expect_line(STEP));
    assert_eq!(event["event"], "disconnected", "{event}");
    let status = broker.wait_exit(STEP).expect("the broker did not exit");
    assert_eq!(status.code(), Some(0), "{signal:?}: {status}");
}

#[test]
fn reload_applies_a_new_packet_limit_without_dropping_clients() {
    let dir = TestDir::new("reload");
    let conf = dir.write("femtomq.toml", "[limits]\nmax_packet_size = 262144\n");
    let pid_file = dir.join("femtomq.pid");
    let broker = Broker::start(&["--conf", path_arg(&conf), "--pid-file", path_arg(&pid_file)]);
    let port = broker.port();
    let (_before, connack) = RawClient::connected(broker.address(), raw::V5, "before");
    assert_eq!(raw::connack_maximum_packet_size(&connack), Some(262_144));
    let mosquitto = Subscriber::start(SubTool::Mosquitto, port, &["-q", "1", "-t", "reload/t"]);
    let paho_client = paho(
        "paho_sub.py",
        port,
        &[
            "--protocol",
            "5",
            "--topic",
            "reload/t",
            "--qos",
            "1",
            "--count",
            "2",
        ],
    );
    assert_eq!(json(&paho_client.expect_line(STEP))["event"], "connected");
    assert_eq!(json(&paho_client.expect_line(STEP))["event"], "subscribed");
    mosquitto_pub(port, &["-q", "1", "-t", "reload/t", "-m", "before"]);

    std::fs::write(&conf, "[limits]\nmax_packet_size = 1000\n").unwrap();
    run(
        &mut femtomq(&["reload", "--pid-file", path_arg(&pid_file)]),
        STEP,
    )
    .assert_success("femtomq reload");
    assert!(
        broker.wait_for_log("configuration reloaded", 1, STEP),
        "no reload in the log"
    );

    // New connections see the new limit and are held to it.
    let (mut after, connack) = RawClient::connected(broker.address(), raw::V5, "after");
    assert_eq!(raw::connack_maximum_packet_size(&connack), Some(1000));
    let _ = after.send(&raw::publish(raw::V5, "reload/t", &[b'x'; 2000], Some(1)));
    // DISCONNECT 0x95 Packet too large (a reason string may follow the reason code).
    let packets = after.read_until_closed(STEP);
    assert!(
        one_disconnect(&packets, 0x95),
        "expected one DISCONNECT 0x95, got {packets:?}"
    );
    // The clients connected before are still there and still served.
    mosquitto_pub(port, &["-q", "1", "-t", "reload/t", "-m", "after"]);
    assert_eq!(
        mosquitto.messages(2, STEP),
        ["reload/t before", "reload/t after"]
    );
    let got: Vec<String> = paho_client
        .collect(2, STEP, |_| true)
        .iter()
        .map(|line| json(line)["payload"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ["before", "after"]);
}

#[test]
fn reload_raising_the_packet_limit_applies_to_connections_already_open() {
    let dir = TestDir::new("reload-up");
    let conf = dir.write("femtomq.toml", "[limits]\nmax_packet_size = 1000\n");
    let pid_file = dir.join("femtomq.pid");
    let broker = Broker::start(&["--conf", path_arg(&conf), "--pid-file", path_arg(&pid_file)]);
    let (mut client, connack) = RawClient::connected(broker.address(), raw::V5, "early");
    assert_eq!(raw::connack_maximum_packet_size(&connack), Some(1000));
    let sub = Subscriber::start(SubTool::Mosquitto, broker.port(), &["-q", "1", "-t", "up"]);

    std::fs::write(&conf, "[limits]\nmax_packet_size = 1000000\n").unwrap();
    run(
        &mut femtomq(&["reload", "--pid-file", path_arg(&pid_file)]),
        STEP,
    )
    .assert_success("femtomq reload");
    assert!(broker.wait_for_log("configuration reloaded", 1, STEP));

    // The connection opened under the old limit may now send up to the new one.
    let payload = vec![b'y'; 500_000];
    client
        .send(&raw::publish(raw::V5, "up", &payload, Some(7)))
        .unwrap();
    assert_eq!(
        client.read_packet(STEP),
        raw::Received::Packet(vec![0x40, 0x02, 0x00, 0x07]),
        "PUBACK for the large message"
    );
    let got = sub.messages(1, STEP);
    assert_eq!(got[0].len(), "up ".len() + payload.len());
}

/// SIGHUP re-reads `[log] level`: at "warn" a connecting client leaves no info line, after the
/// file says "info" and the broker is told to reload, the next one does.
#[test]
fn sighup_applies_a_new_log_level() {
    let dir = TestDir::new("reload-log");
    let conf = dir.write("femtomq.toml", "[log]\nlevel = \"warn\"\n");
    let broker = Broker::start(&["--conf", path_arg(&conf)]);
    let (_before, _) = RawClient::connected(broker.address(), raw::V5, "quiet-before");

    std::fs::write(&conf, "[log]\nlevel = \"info\"\n").unwrap();
    broker.signal(rustix::process::Signal::HUP);
    // Logged at info, after the new level is in force.
    assert!(
        broker.wait_for_log("configuration reloaded", 1, STEP),
        "no reload in the log: {}",
        broker.log()
    );
    let (_after, _) = RawClient::connected(broker.address(), raw::V5, "loud-after");
    assert!(
        broker.wait_for_log("client `loud-after` connected from", 1, STEP),
        "the info line of a client connecting after the reload is missing: {}",
        broker.log()
    );
    let log = broker.log();
    // Before the reload the level was warn: no info line at all.
    assert!(!log.contains("client `quiet-before` connected"), "{log}");
    assert!(!log.contains("listening on"), "{log}");
}

/// SUBSCRIBE at QoS 1 to `filter`, asserting SUBACK granted QoS 1.
fn subscribe_qos1(client: &mut RawClient, filter: &str) {
    let mut body = 1u16.to_be_bytes().to_vec();
    body.push(0); // MQTT 5 properties
    body.extend(raw::field(filter.as_bytes()));
    body.push(1);
    client.send(&raw::packet(0x82, &body)).expect("SUBSCRIBE");
    match client.read_packet(STEP) {
        Received::Packet(p) if p[0] == 0x90 && p.last() == Some(&1) => {}
        other => panic!("SUBSCRIBE answered with {other:?}"),
    }
}

/// "On SIGTERM ... queued writes are flushed": a subscriber that reads nothing while 2,000
/// messages of 1 KB are published to it at QoS 1 (all PUBACKed) has them waiting in the broker's
/// output (its receive buffer is a few KB, and `max_output_bytes` and `max_inflight` are raised
/// so that none waits in the session queue, which the README does not promise to flush). After
/// SIGTERM it then receives every one, in order, then DISCONNECT 0x8B, then the close.
#[test]
fn sigterm_flushes_writes_queued_for_a_slow_subscriber_before_disconnect_0x8b() {
    const COUNT: u16 = 2000;
    const SIZE: usize = 1024;
    let dir = TestDir::new("shutdown-flush");
    let conf = dir.write(
        "femtomq.toml",
        "[limits]\nmax_inflight = 65535\nmax_output_bytes = 8388608\n",
    );
    let mut broker = Broker::start(&["--conf", path_arg(&conf)]);

    // A small receive buffer, set before connecting, keeps the kernel from taking the backlog.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket
        .connect_timeout(&broker.address().into(), STEP)
        .expect("connect");
    let mut sub = RawClient::from_stream(TcpStream::from(socket));
    sub.send(&raw::connect(raw::V5, "slow-sub", 60)).unwrap();
    match sub.read_packet(STEP) {
        Received::Packet(p) if p[0] == 0x20 && p.get(3) == Some(&0) => {}
        other => panic!("CONNECT answered with {other:?}"),
    }
    subscribe_qos1(&mut sub, "flush/t");

    let payload = |i: u16| {
        let mut bytes = format!("message {i:05} ").into_bytes();
        bytes.resize(SIZE, b'.');
        bytes
    };
    let (mut publisher, _) = RawClient::connected(broker.address(), raw::V5, "publisher");
    let mut batch = Vec::new();
    for id in 1..=COUNT {
        batch.extend(raw::publish(raw::V5, "flush/t", &payload(id), Some(id)));
    }
    publisher.send(&batch).expect("PUBLISH x 2000");
    for id in 1..=COUNT {
        // PUBACK, success (MQTT 5 allows omitting reason code 0 and the properties).
        match publisher.read_packet(STEP) {
            Received::Packet(p) if p[0] == 0x40 && p[2..4] == id.to_be_bytes() => assert!(
                p.len() == 4 || p[4] == 0,
                "PUBACK {id} with reason {:#x}",
                p[4]
            ),
            other => panic!("PUBLISH {id} answered with {other:?}"),
        }
    }

    broker.signal(rustix::process::Signal::TERM);
    let packets = sub
        .read_until_closed(Duration::from_secs(60))
        .unwrap_or_else(|p| panic!("still open after {} packets", p.len()));
    let (last, publishes) = packets.split_last().expect("no packet at all");
    assert!(
        last.len() >= 3 && last[0] == 0xE0 && last[2] == 0x8B,
        "the last of {} packets is not DISCONNECT 0x8B: {:02x?}",
        packets.len(),
        &last[..last.len().min(8)]
    );
    assert_eq!(
        publishes.len(),
        usize::from(COUNT),
        "messages received before DISCONNECT 0x8B"
    );
    for (publish, id) in publishes.iter().zip(1..=COUNT) {
        // QoS 1 PUBLISH: 0x32 (DUP and RETAIN clear), ending with the payload.
        assert_eq!(
            publish[0] & 0xF6,
            0x32,
            "packet {id}: {:02x?}",
            &publish[..4]
        );
        assert!(
            publish.ends_with(&payload(id)),
            "packet {id} is not message {id}"
        );
    }
    let status = broker.wait_exit(STEP).expect("the broker did not exit");
    assert_eq!(status.code(), Some(0), "{status}");
}
