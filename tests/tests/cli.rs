//! The `femtomq` command line: `--version`, `femtomq pub -r --user-property` seen by
//! mosquitto_sub, `femtomq pub/sub --cafile` refused clearly, IPv6 and IPv4 wildcard listeners
//! on one port (IPV6_V6ONLY) with a round trip over ::1, and the `[log]` file and syslog targets.

use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Instant;

use femtomq_e2e::{Broker, STEP, TestDir, femtomq, path_arg, run, wait_until};

#[test]
fn version_prints_the_crate_version() {
    for flag in ["--version", "-V"] {
        let out = run(&mut femtomq(&[flag]), STEP);
        out.assert_success(flag);
        assert_eq!(
            out.stdout.trim(),
            format!("femtomq {}", env!("CARGO_PKG_VERSION")),
            "{flag}"
        );
    }
}

#[test]
fn pub_retained_with_user_properties_reaches_mosquitto_sub() {
    let broker = Broker::start(&[]);
    let port = broker.port_arg();
    run(
        &mut femtomq(&[
            "pub",
            "--host",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            "1",
            "-t",
            "cli/retained",
            "-m",
            "kept",
            "-r",
            "--user-property",
            "origin=femtomq",
            "--user-property",
            "k=v=w",
        ]),
        STEP,
    )
    .assert_success("femtomq pub -r --user-property");
    // Subscribing afterwards: only a retained message can arrive. %r is the retain flag, %P the
    // user properties as key:value.
    let out = run(
        Command::new("mosquitto_sub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "5",
            "-t",
            "cli/retained",
            "-C",
            "1",
            "-W",
            "10",
            "-F",
            "%r|%t|%P|%p",
        ]),
        STEP,
    );
    out.assert_success("mosquitto_sub");
    assert_eq!(
        out.stdout.trim(),
        "1|cli/retained|origin:femtomq k:v=w|kept"
    );
}

#[test]
fn pub_and_sub_refuse_cafile_saying_the_client_commands_lack_tls() {
    let dir = TestDir::new("cli-cafile");
    let ca = dir.write("ca.pem", "not used");
    for command in [
        vec!["pub", "-t", "t", "-m", "m", "--cafile", path_arg(&ca)],
        vec!["sub", "-t", "t", "--cafile", path_arg(&ca)],
    ] {
        let out = run(&mut femtomq(&command), STEP);
        assert_eq!(out.code(), Some(1), "{command:?}: {out:?}");
        assert!(
            out.stderr.contains("do not speak TLS yet")
                && out
                    .stderr
                    .contains("mosquitto_pub or mosquitto_sub with --cafile"),
            "{command:?}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("not implemented"), "{}", out.stderr);
    }
}

/// `[::]:P` and `0.0.0.0:P` together: without IPV6_V6ONLY the IPv6 wildcard takes IPv4 too on
/// Linux (`net.ipv6.bindv6only = 0`) and the second listener cannot bind.
#[test]
fn ipv6_and_ipv4_wildcards_share_a_port_and_serve_over_loopback() {
    let v6 = TcpListener::bind("[::1]:0").unwrap_or_else(|e| {
        panic!("this test needs IPv6 loopback: cannot bind [::1]:0 ({e}); enable IPv6 on lo")
    });
    drop(v6);
    // A port free on both families right now.
    let port = {
        let probe = TcpListener::bind("[::]:0").expect("bind [::]:0");
        probe.local_addr().expect("local address").port()
    };
    let broker = Broker::start_without_listen(&[
        "--listen",
        &format!("[::]:{port}"),
        "--listen",
        &format!("0.0.0.0:{port}"),
    ]);
    assert!(
        broker
            .ready_line()
            .contains(&format!("mqtt://[::]:{port}, mqtt://0.0.0.0:{port}")),
        "{}",
        broker.ready_line()
    );
    let port = port.to_string();
    // Retained messages make each round trip independent of when the subscriber is ready.
    for (host, topic) in [("::1", "v6/retained"), ("127.0.0.1", "v4/retained")] {
        run(
            Command::new("mosquitto_pub").args([
                "-h", host, "-p", &port, "-q", "1", "-r", "-t", topic, "-m", host,
            ]),
            STEP,
        )
        .assert_success(&format!("mosquitto_pub -h {host}"));
        let out = run(
            Command::new("mosquitto_sub").args([
                "-h", host, "-p", &port, "-t", topic, "-C", "1", "-W", "10", "-v",
            ]),
            STEP,
        );
        out.assert_success(&format!("mosquitto_sub -h {host}"));
        assert_eq!(out.stdout.trim(), format!("{topic} {host}"));
    }
    // And across families: published over IPv4, received over ::1.
    let out = run(
        Command::new("mosquitto_sub").args([
            "-h",
            "::1",
            "-p",
            &port,
            "-t",
            "v4/retained",
            "-C",
            "1",
            "-W",
            "10",
        ]),
        STEP,
    );
    out.assert_success("mosquitto_sub -h ::1");
    assert_eq!(out.stdout.trim(), "127.0.0.1");
}

#[test]
fn log_target_file_receives_the_listening_line() {
    let dir = TestDir::new("log-file");
    let log = dir.join("femtomq.log");
    let conf = dir.write(
        "femtomq.toml",
        format!(
            "[log]\nlevel = \"info\"\ntarget = \"file\"\nfile = \"{}\"\n",
            log.display()
        ),
    );
    let broker = Broker::start(&["--conf", path_arg(&conf)]);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(STEP, || read().contains("listening on mqtt://127.0.0.1:")),
        "{} does not have the listening line: {:?}; stderr: {}",
        log.display(),
        read(),
        broker.log()
    );
    assert!(
        read().contains(&format!("127.0.0.1:{}", broker.port())),
        "{}",
        read()
    );
    // The file is the target: stderr does not get the log lines.
    assert!(!broker.log().contains("listening on"), "{}", broker.log());
}

/// `target = "syslog"` sends each line as one RFC 3164 datagram `<PRI>femtomq[PID]: MESSAGE`
/// to the Unix socket `syslog_path` (here a socket of the test's instead of /dev/log), with
/// facility daemon (3): info is priority 3 * 8 + 6 = 30.
#[test]
fn log_target_syslog_sends_rfc3164_datagrams_to_syslog_path() {
    let dir = TestDir::new("log-syslog");
    let socket_path = dir.join("syslog.sock");
    let socket = UnixDatagram::bind(&socket_path)
        .unwrap_or_else(|e| panic!("cannot bind {}: {e}", socket_path.display()));
    let conf = dir.write(
        "femtomq.toml",
        format!(
            "[log]\nlevel = \"info\"\ntarget = \"syslog\"\nsyslog_path = \"{}\"\n",
            socket_path.display()
        ),
    );
    let broker = Broker::start(&["--conf", path_arg(&conf)]);
    let prefix = format!("<30>femtomq[{}]: ", broker.pid());
    let deadline = Instant::now() + STEP;
    let mut received = Vec::new();
    let listening = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no \"listening on\" datagram at {}; got {received:?}",
            socket_path.display()
        );
        socket.set_read_timeout(Some(left)).unwrap();
        let mut buffer = [0u8; 4096];
        let Ok(count) = socket.recv(&mut buffer) else {
            continue;
        };
        let datagram = String::from_utf8_lossy(&buffer[..count]).into_owned();
        if datagram.contains("listening on") {
            break datagram;
        }
        received.push(datagram);
    };
    // The whole datagram: priority, tag with the broker's pid, and the same line as stdout's,
    // with no timestamp or trailing newline (syslog adds its own).
    assert_eq!(listening, format!("{prefix}{}", broker.ready_line()));
    // Any line before it has the same form: facility daemon (priorities 24 to 31), this tag.
    let tag = format!(">femtomq[{}]: ", broker.pid());
    for other in &received {
        let priority = other
            .strip_prefix('<')
            .and_then(|rest| rest.split_once(&tag))
            .and_then(|(priority, _)| priority.parse::<u8>().ok());
        assert!(
            priority.is_some_and(|p| (24..=31).contains(&p)),
            "{other:?}"
        );
    }
    // Syslog is the target: stderr does not get the log lines.
    assert!(!broker.log().contains("listening on"), "{}", broker.log());
}
