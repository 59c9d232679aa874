//! Settings of one `[[listener]]` beyond authentication: the protocol versions it accepts
//! (`protocol_versions`) and its own bound on connections (`max_connections`), with another
//! listener of the same broker unaffected.

use std::net::SocketAddr;
use std::time::Duration;

use femtomq_e2e::raw::{self, RawClient, Received, V5, V311};
use femtomq_e2e::{Broker, STEP, TestDir, path_arg, run, wait_until};

/// A broker with the `[[listener]]`s of `conf` (each `url = "127.0.0.1:0"`), and their addresses.
fn broker_with(label: &str, conf: &str, listeners: usize) -> (Broker, TestDir, Vec<SocketAddr>) {
    let dir = TestDir::new(label);
    let file = dir.write("femtomq.toml", conf);
    let broker = Broker::start_without_listen(&["--conf", path_arg(&file)]);
    let addresses: Vec<SocketAddr> = femtomq_e2e::ready_ports(broker.ready_line())
        .into_iter()
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
        .collect();
    assert_eq!(addresses.len(), listeners, "{}", broker.ready_line());
    (broker, dir, addresses)
}

/// An MQTT 3.1 CONNECT (`MQIsdp`, level 3).
fn connect_v31(client_id: &str) -> Vec<u8> {
    let mut body = raw::field(b"MQIsdp");
    body.extend([3, 0x02]);
    body.extend(60u16.to_be_bytes());
    body.extend(raw::field(client_id.as_bytes()));
    raw::packet(0x10, &body)
}

/// Sends `connect` and returns the answer and whether the broker then closed the connection.
fn answer_to(address: SocketAddr, connect: &[u8]) -> (Received, bool) {
    let mut client = RawClient::connect(address);
    client.send(connect).expect("send CONNECT");
    let answer = client.read_packet(STEP);
    let closed = client.read_until_closed(STEP).is_ok();
    (answer, closed)
}

/// `mosquitto_pub -V VERSION` against `port`: whether it succeeded.
fn mosquitto_pub_succeeds(port: u16, version: &str) -> bool {
    let mut command = std::process::Command::new("mosquitto_pub");
    command.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-V",
        version,
        "-t",
        "t",
        "-m",
        "m",
    ]);
    run(&mut command, STEP).success()
}

#[test]
fn a_listener_accepts_only_its_protocol_versions() {
    let (broker, _dir, addresses) = broker_with(
        "protocol-versions",
        "[[listener]]\nurl = \"127.0.0.1:0\"\nprotocol_versions = [\"5\"]\n\
         [[listener]]\nurl = \"127.0.0.1:0\"\nprotocol_versions = [\"3.1.1\", \"3.1\"]\n",
        2,
    );
    let (five_only, old_only) = (addresses[0], addresses[1]);
    // 3.1.1 on the MQTT 5 listener: return code 1, then the connection is closed.
    let (answer, closed) = answer_to(five_only, &raw::connect(V311, "old-client", 60));
    assert_eq!(answer, Received::Packet(vec![0x20, 0x02, 0x00, 0x01]));
    assert!(closed, "the refused client stays connected");
    assert!(
        broker.wait_for_log("client `old-client` refused: MQTT 3.1.1", 1, STEP),
        "{}",
        broker.log()
    );
    assert!(
        broker.log().contains("listener mqtt://127.0.0.1:0"),
        "the log line names the listener: {}",
        broker.log()
    );
    let (answer, closed) = answer_to(five_only, &connect_v31("older"));
    assert_eq!(answer, Received::Packet(vec![0x20, 0x02, 0x00, 0x01]));
    assert!(closed);
    // MQTT 5 on the MQTT 3 listener: CONNACK 0x84.
    let (answer, closed) = answer_to(old_only, &raw::connect(V5, "new-client", 60));
    match answer {
        Received::Packet(connack) => assert_eq!(connack[..4], [0x20, connack[1], 0x00, 0x84]),
        other => panic!("CONNECT answered with {other:?}"),
    }
    assert!(closed);
    // Each accepts its own.
    RawClient::connected(five_only, V5, "five");
    RawClient::connected(old_only, V311, "three");
    let (answer, _) = answer_to(old_only, &connect_v31("three-one"));
    assert_eq!(answer, Received::Packet(vec![0x20, 0x02, 0x00, 0x00]));
    // An independent client.
    assert!(!mosquitto_pub_succeeds(five_only.port(), "mqttv311"));
    assert!(mosquitto_pub_succeeds(five_only.port(), "mqttv5"));
    assert!(mosquitto_pub_succeeds(old_only.port(), "mqttv311"));
    assert!(!mosquitto_pub_succeeds(old_only.port(), "mqttv5"));
}

/// Whether a new MQTT 5 client gets in on `address` (a closed socket or no CONNACK: no).
fn gets_in(address: SocketAddr, client_id: &str) -> Option<RawClient> {
    let mut client = RawClient::connect(address);
    // The broker may have closed the socket already.
    let _ = client.send(&raw::connect(V5, client_id, 60));
    match client.read_packet(STEP) {
        Received::Packet(connack) if connack[0] == 0x20 && connack[3] == 0 => Some(client),
        _ => None,
    }
}

#[test]
fn a_listener_holds_at_most_its_max_connections() {
    // Two workers: a connection handed from one to the other keeps its place on the listener.
    let (broker, _dir, addresses) = broker_with(
        "max-connections",
        "workers = 2\n\
         [[listener]]\nurl = \"127.0.0.1:0\"\nmax_connections = 2\n\
         [[listener]]\nurl = \"127.0.0.1:0\"\n",
        2,
    );
    let (bounded, other) = (addresses[0], addresses[1]);
    let mut first = gets_in(bounded, "first").expect("the first client gets in");
    let _second = gets_in(bounded, "second").expect("the second client gets in");
    // The third is closed at accept.
    let mut third = RawClient::connect(bounded);
    let _ = third.send(&raw::connect(V5, "third", 60));
    assert_eq!(
        third.read_until_closed(STEP),
        Ok(vec![]),
        "the third connection gets nothing and is closed"
    );
    assert!(
        broker.wait_for_log("its max_connections (2) are open", 1, STEP),
        "{}",
        broker.log()
    );
    // The other listener goes on serving.
    let _elsewhere: Vec<RawClient> = (0..3)
        .map(|i| gets_in(other, &format!("other-{i}")).expect("the other listener accepts"))
        .collect();
    // A client leaving frees its place.
    first.send(&[0xE0, 0x00]).expect("send DISCONNECT");
    assert!(first.read_until_closed(STEP).is_ok());
    drop(first);
    let mut late = None;
    assert!(
        wait_until(STEP, || {
            late = gets_in(bounded, "late");
            late.is_some()
        }),
        "no place freed after a disconnect: {}",
        broker.log()
    );
    // And it is full again.
    let mut fourth = RawClient::connect(bounded);
    let _ = fourth.send(&raw::connect(V5, "fourth", 60));
    assert_eq!(fourth.read_until_closed(Duration::from_secs(5)), Ok(vec![]));
}
