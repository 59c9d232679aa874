//! Process lifecycle: `--daemon --pid-file` and `femtomq stop`, SIGTERM and SIGINT telling
//! MQTT 5 clients DISCONNECT 0x8B Server shutting down before exiting 0, and `femtomq reload`
//! applying a new limit without dropping connected clients.

use std::time::Duration;

use femtomq_e2e::raw::{self, RawClient};
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
