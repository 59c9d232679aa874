//! Persistence (`--persist-dir`): retained messages and persistent sessions with their queued
//! messages survive a clean restart and a crash (SIGKILL), with mosquitto clients; a small
//! store cap refuses new persistent messages with 0x97 while the broker keeps serving.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use femtomq_e2e::{Broker, TestDir, mosquitto_pub, run};
use rustix::process::Signal;

const WAIT: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start(port: u16, dir: &TestDir, extra: &[&str]) -> Broker {
    let listen = format!("127.0.0.1:{port}");
    let store = dir.join("store");
    let store = store.to_str().expect("utf-8 path");
    let mut args = vec!["--listen", &listen, "--persist-dir", store];
    args.extend_from_slice(extra);
    Broker::start_without_listen(&args)
}

/// `mosquitto_sub` receiving `count` messages (or timing out), their payloads.
fn receive(port: u16, args: &[&str], count: usize) -> Vec<String> {
    let out = run(
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-C", &count.to_string(), "-W", "5"])
            .args(args),
        WAIT,
    );
    out.stdout.lines().map(str::to_string).collect()
}

fn survives(stop: impl Fn(&mut Broker)) {
    let dir = TestDir::new("persist");
    let port = free_port();
    let mut broker = start(port, &dir, &[]);
    // A persistent session (3.1.1, clean session off) subscribed at QoS 1, then offline.
    let subscribed = run(
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-i", "keeper", "-c", "-q", "1", "-t", "q/#", "-E"]),
        WAIT,
    );
    assert!(subscribed.success(), "{}", subscribed.stdout);
    mosquitto_pub(port, &["-t", "r/one", "-m", "kept", "-r", "-q", "1"]);
    for i in 0..5 {
        mosquitto_pub(
            port,
            &["-t", &format!("q/{i}"), "-m", &format!("m{i}"), "-q", "1"],
        );
    }
    stop(&mut broker);
    drop(broker);
    let broker = start(port, &dir, &[]);
    assert_eq!(
        receive(port, &["-t", "r/#"], 1),
        ["kept"],
        "{}",
        broker.log()
    );
    let queued = receive(port, &["-i", "keeper", "-c", "-q", "1", "-t", "q/#"], 5);
    assert_eq!(queued, ["m0", "m1", "m2", "m3", "m4"], "{}", broker.log());
    // Delivered and acknowledged: not again after another restart.
    drop(broker);
    let _broker = start(port, &dir, &[]);
    let again = receive(port, &["-i", "keeper", "-c", "-q", "1", "-t", "q/#"], 1);
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn retained_messages_and_sessions_survive_a_clean_restart() {
    survives(|broker| {
        broker.signal(Signal::TERM);
        assert!(broker.wait_exit(WAIT).is_some());
    });
}

#[test]
fn retained_messages_and_sessions_survive_sigkill() {
    survives(|broker| {
        broker.signal(Signal::KILL);
        assert!(broker.wait_exit(WAIT).is_some());
    });
}

#[test]
fn a_full_store_refuses_with_quota_exceeded_and_keeps_serving() {
    let dir = TestDir::new("persist-full");
    let port = free_port();
    let broker = start(port, &dir, &["--persist-max-bytes", "8192"]);
    let payload = "x".repeat(1000);
    let mut refused = false;
    for i in 0..40 {
        let out = run(
            Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "5"])
                .args(["-t", &format!("big/{i}"), "-m", &payload, "-r", "-q", "1"]),
            WAIT,
        );
        let said = format!("{}{}", out.stdout, out.stderr);
        // mosquitto_pub reports the PUBACK reason code (0x97 = 151).
        if said.contains("Quota exceeded") || said.contains("151") {
            refused = true;
            break;
        }
    }
    assert!(refused, "a 8 KB store refuses 40 KB of retained messages");
    assert!(broker.log().contains("store full"), "{}", broker.log());
    // QoS 0 still flows.
    let sub = std::thread::spawn(move || receive(port, &["-t", "live/#"], 1));
    std::thread::sleep(Duration::from_millis(300));
    mosquitto_pub(port, &["-t", "live/x", "-m", "still here"]);
    assert_eq!(sub.join().expect("subscriber"), ["still here"]);
}
