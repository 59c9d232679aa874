//! MQTT over TLS, WebSocket and WebSocket over TLS, with clients nobody here wrote:
//! `mosquitto_pub`/`mosquitto_sub` over TLS (server verified with `--cafile`, and client
//! certificates), Python paho-mqtt with `transport="websockets"` plain and over TLS, a mix of
//! TLS, WebSocket and TCP clients on one broker, handshakes that fail (plain MQTT on the TLS
//! port, HTTP without Upgrade, oversized headers, a wrong path, text frames, untrusted
//! certificates) while everyone else keeps being served, `use_identity_as_username` with an
//! ACL, certificates re-read on reload, and the configuration errors.
//!
//! Certificates are made in the test with rcgen: a CA, a server certificate for `localhost` and
//! `127.0.0.1`, and client certificates.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use femtomq_e2e::raw;
use femtomq_e2e::{
    Broker, STEP, Spawned, SubTool, Subscriber, TestDir, json, mosquitto_pub, path_arg, python, run,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};

/// A certificate authority writing PEM files into a scratch directory.
struct Pki {
    dir: TestDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    /// A CA named `name`, with `ca.pem` and a server certificate `server.pem`/`server.key`.
    fn new(name: &str) -> Pki {
        let dir = TestDir::new(name);
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        dir.write("ca.pem", ca.pem());
        let pki = Pki { dir, ca, ca_key };
        pki.issue("server", "localhost", false);
        pki
    }

    /// Writes `FILE.pem` and `FILE.key`: a certificate for `cn` signed by this CA.
    fn issue(&self, file: &str, cn: &str, client: bool) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        self.dir.write(&format!("{file}.pem"), cert.pem());
        self.dir.write(&format!("{file}.key"), key.serialize_pem());
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn arg(&self, name: &str) -> String {
        path_arg(&self.path(name)).to_string()
    }

    /// `--cert server.pem --key server.key`.
    fn server_args(&self) -> Vec<String> {
        vec![
            "--cert".into(),
            self.arg("server.pem"),
            "--key".into(),
            self.arg("server.key"),
        ]
    }
}

/// The ports of the broker's listeners by scheme (the first of each), from its ready line.
fn ports(broker: &Broker) -> HashMap<String, u16> {
    let mut ports = HashMap::new();
    let line = broker.ready_line();
    let list = line
        .split(" listening on ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("unexpected ready line {line}"));
    for url in list.split(", ") {
        let (scheme, rest) = url.split_once("://").unwrap();
        let address = rest.split('/').next().unwrap();
        let port = address.rsplit(':').next().unwrap().parse().unwrap();
        ports.entry(scheme.to_string()).or_insert(port);
    }
    ports
}

fn start(args: &[String]) -> (Broker, HashMap<String, u16>) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let broker = Broker::start(&args);
    let ports = ports(&broker);
    (broker, ports)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// `mosquitto_sub -v` over TLS on `tls_port` with `tls_args`, known to be subscribed: probes are
/// published over plain TCP on `plain_port` until one comes back through TLS.
fn tls_subscriber(plain_port: u16, tls_port: u16, tls_args: &[String], topic: &str) -> Spawned {
    let probe = format!("probe/tls-{tls_port}-{}", std::process::id());
    let process = Spawned::spawn(
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &tls_port.to_string(), "-v"])
            .args(tls_args)
            .args(["-t", &probe, "-t", topic]),
    );
    let deadline = Instant::now() + STEP;
    loop {
        assert!(
            Instant::now() < deadline,
            "TLS subscriber not subscribed within {STEP:?}; stderr:\n{}",
            process.stderr()
        );
        mosquitto_pub(plain_port, &["-t", &probe, "-m", "probe"]);
        if let Some(line) = process.next_line(Duration::from_millis(300)) {
            if line.starts_with(&probe) {
                break;
            }
        }
    }
    // Late probes.
    let _ = process.lines_within(Duration::from_millis(100));
    process
}

/// Lines of a `mosquitto_sub -v` that are not probes, `count` of them.
fn messages(process: &Spawned, count: usize) -> Vec<String> {
    process.collect(count, STEP, |line| !line.starts_with("probe/"))
}

/// paho_ws.py with `args`, once it printed `subscribed` (subscribers) or `connected`.
fn paho_ws(port: u16, args: &[&str]) -> Spawned {
    // Subscribers stay until the test drops them (killed), within a bound.
    let process = Spawned::spawn(
        python("paho_ws.py")
            .args(["--port", &port.to_string(), "--timeout", "120"])
            .args(args),
    );
    let expected = if args.contains(&"--sub") {
        "subscribed"
    } else {
        "connected"
    };
    loop {
        let event = json(&process.expect_line(STEP));
        match event["event"].as_str() {
            Some(name) if name == expected => return process,
            Some("connected") => {}
            _ => panic!("paho_ws {args:?}: unexpected {event}"),
        }
    }
}

/// Runs paho_ws.py to completion and returns its JSON events.
fn paho_ws_run(port: u16, args: &[&str]) -> Vec<serde_json::Value> {
    let outcome = run(
        python("paho_ws.py")
            .args(["--port", &port.to_string()])
            .args(args),
        Duration::from_secs(30),
    );
    outcome
        .stdout
        .lines()
        .map(json)
        .collect::<Vec<serde_json::Value>>()
}

fn paho_payloads(process: &Spawned, count: usize) -> Vec<String> {
    process
        .collect(count, STEP, |line| json(line)["event"] == "message")
        .iter()
        .map(|line| json(line)["payload"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn mosquitto_over_tls_with_cafile() {
    let pki = Pki::new("tls-basic");
    let mut args = strings(&["--listen", "mqtts://127.0.0.1:0"]);
    args.extend(pki.server_args());
    let (broker, ports) = start(&args);
    let (plain, tls) = (ports["mqtt"], ports["mqtts"]);
    let cafile = strings(&["--cafile", &pki.arg("ca.pem")]);
    for version in ["mqttv311", "mqttv5"] {
        let topic = format!("tls/{version}");
        let mut sub_args = cafile.clone();
        sub_args.extend(strings(&["-V", version, "-q", "1"]));
        let sub = tls_subscriber(plain, tls, &sub_args, &topic);
        let mut pub_args: Vec<&str> = cafile.iter().map(String::as_str).collect();
        pub_args.extend(["-V", version, "-q", "1", "-t", &topic, "-l"]);
        femtomq_e2e::mosquitto_pub_input(tls, &pub_args, b"one\ntwo\nthree\n");
        assert_eq!(
            messages(&sub, 3),
            ["one", "two", "three"].map(|m| format!("{topic} {m}"))
        );
    }
    assert!(broker.log().contains("connected from 127.0.0.1"));
}

#[test]
fn mutual_tls_requires_a_certificate_from_the_ca() {
    let pki = Pki::new("mtls");
    pki.issue("client", "sensor-1", true);
    let stranger = Pki::new("mtls-stranger");
    stranger.issue("client", "sensor-1", true);
    let mut args = strings(&[
        "--listen",
        "mqtts://127.0.0.1:0",
        "--cafile",
        &pki.arg("ca.pem"),
        "--require-certificate",
        "--workers",
        "2",
    ]);
    args.extend(pki.server_args());
    let (broker, ports) = start(&args);
    let (plain, tls) = (ports["mqtt"], ports["mqtts"]);
    let tcp = Subscriber::start(SubTool::Mosquitto, plain, &["-t", "mtls/#"]);

    let with_cert = [
        "--cafile",
        &pki.arg("ca.pem"),
        "--cert",
        &pki.arg("client.pem"),
        "--key",
        &pki.arg("client.key"),
    ];
    let mut args = with_cert.to_vec();
    args.extend(["-q", "1", "-t", "mtls/ok", "-m", "with certificate"]);
    mosquitto_pub(tls, &args);
    assert_eq!(tcp.messages(1, STEP), ["mtls/ok with certificate"]);

    // No client certificate: the handshake fails, the client exits with an error.
    let refused = run(
        Command::new("mosquitto_pub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &tls.to_string(),
            "--cafile",
            &pki.arg("ca.pem"),
            "-t",
            "mtls/no-cert",
            "-m",
            "x",
        ]),
        STEP,
    );
    assert!(!refused.success(), "{refused:?}");
    // A certificate from another CA: refused too.
    let refused = run(
        Command::new("mosquitto_pub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &tls.to_string(),
            "--cafile",
            &pki.arg("ca.pem"),
            "--cert",
            &stranger.arg("client.pem"),
            "--key",
            &stranger.arg("client.key"),
            "-t",
            "mtls/stranger",
            "-m",
            "x",
        ]),
        STEP,
    );
    assert!(!refused.success(), "{refused:?}");
    assert!(
        broker.wait_for_log("TLS handshake failed", 2, STEP),
        "no log line for the refused handshakes"
    );
    // Nothing got through, and the broker still serves.
    mosquitto_pub(
        tls,
        &[&with_cert[..], &["-t", "mtls/after", "-m", "still"]].concat(),
    );
    assert_eq!(tcp.messages(1, STEP), ["mtls/after still"]);
}

#[test]
fn paho_over_websocket_plain_and_tls() {
    let pki = Pki::new("paho-ws");
    let mut args = strings(&[
        "--listen",
        "ws://127.0.0.1:0/mqtt",
        "--listen",
        "wss://127.0.0.1:0/mqtt",
    ]);
    args.extend(pki.server_args());
    let (_broker, ports) = start(&args);
    let (ws, wss) = (ports["ws"], ports["wss"]);
    let ca = pki.arg("ca.pem");
    let plain_sub = paho_ws(ws, &["--sub", "web/#", "--qos", "1"]);
    let tls_sub = paho_ws(
        wss,
        &[
            "--cafile",
            &ca,
            "--protocol",
            "311",
            "--sub",
            "web/#",
            "--qos",
            "2",
        ],
    );
    // A large message spans several TLS records and WebSocket frame sizes.
    let large = "x".repeat(100_000);
    for (port, tls, protocol) in [(ws, false, "5"), (wss, true, "311"), (wss, true, "5")] {
        let mut args = vec!["--protocol", protocol, "--pub", "web/t", "--qos", "1"];
        if tls {
            args.extend(["--cafile", &ca]);
        }
        args.extend(["--message", "a", "--message", "b", "--message", &large]);
        let events = paho_ws_run(port, &args);
        assert_eq!(
            events.last().map(|e| e["event"].clone()),
            Some("published".into()),
            "{events:?}"
        );
        for sub in [&plain_sub, &tls_sub] {
            let got = paho_payloads(sub, 3);
            assert_eq!(got[..2], ["a", "b"]);
            assert_eq!(got[2].len(), large.len());
        }
    }
}

#[test]
fn tls_publisher_websocket_and_tcp_subscribers_get_the_same_messages() {
    let pki = Pki::new("mixed");
    let mut args = strings(&[
        "--listen",
        "mqtts://127.0.0.1:0",
        "--listen",
        "ws://127.0.0.1:0/mqtt",
        "--listen",
        "wss://127.0.0.1:0/mqtt",
        "--workers",
        "2",
    ]);
    args.extend(pki.server_args());
    let (_broker, ports) = start(&args);
    let ca = pki.arg("ca.pem");
    let tcp = Subscriber::start(
        SubTool::Mosquitto,
        ports["mqtt"],
        &["-q", "1", "-t", "mix/#"],
    );
    let ws = paho_ws(ports["ws"], &["--sub", "mix/#", "--qos", "1"]);
    let wss = paho_ws(
        ports["wss"],
        &["--cafile", &ca, "--sub", "mix/#", "--qos", "1"],
    );
    let tls = tls_subscriber(
        ports["mqtt"],
        ports["mqtts"],
        &strings(&["--cafile", &ca, "-q", "1"]),
        "mix/#",
    );
    let sent: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
    femtomq_e2e::mosquitto_pub_input(
        ports["mqtts"],
        &["--cafile", &ca, "-q", "1", "-t", "mix/t", "-l"],
        (sent.join("\n") + "\n").as_bytes(),
    );
    let lines: Vec<String> = sent.iter().map(|m| format!("mix/t {m}")).collect();
    assert_eq!(tcp.messages(20, STEP), lines);
    assert_eq!(messages(&tls, 20), lines);
    assert_eq!(paho_payloads(&ws, 20), sent);
    assert_eq!(paho_payloads(&wss, 20), sent);
}

/// Sends `request` on a new connection and reads until the broker closes it.
fn exchange(port: u16, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(STEP)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
}

fn bad_handshakes(workers: &str) {
    let pki = Pki::new("bad-handshakes");
    let stranger = Pki::new("bad-handshakes-stranger");
    let mut args = strings(&[
        "--listen",
        "mqtts://127.0.0.1:0",
        "--listen",
        "ws://127.0.0.1:0/mqtt",
        "--workers",
        workers,
    ]);
    args.extend(pki.server_args());
    let (broker, ports) = start(&args);
    let (plain, tls, ws) = (ports["mqtt"], ports["mqtts"], ports["ws"]);
    let ca = pki.arg("ca.pem");
    let ws_sub = paho_ws(ws, &["--sub", "ok/#", "--qos", "1"]);
    let tls_sub = tls_subscriber(plain, tls, &strings(&["--cafile", &ca]), "ok/#");
    let mut expected_warnings = 0;

    // Plain MQTT on the TLS port: a TLS alert (content type 21) or just the close.
    let answer = exchange(tls, &raw::connect(raw::V5, "plain-on-tls", 30));
    assert!(answer.is_empty() || answer[0] == 0x15, "{answer:?}");
    expected_warnings += 1;
    assert!(broker.wait_for_log("TLS handshake failed", 1, STEP));

    // HTTP without Upgrade on the WebSocket port.
    let answer = exchange(ws, b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert!(
        answer.starts_with(b"HTTP/1.1 426 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    expected_warnings += 1;

    // Headers over 8 KB.
    let mut oversized = b"GET /mqtt HTTP/1.1\r\nX-Padding: ".to_vec();
    oversized.extend(vec![b'a'; 10_000]);
    oversized.extend(b"\r\n\r\n");
    let answer = exchange(ws, &oversized);
    assert!(
        answer.starts_with(b"HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    expected_warnings += 1;

    // Another path.
    let answer = exchange(ws, upgrade_request("/other").as_bytes());
    assert!(
        answer.starts_with(b"HTTP/1.1 404 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    expected_warnings += 1;

    // A WebSocket that sends a text frame: 101, then close 1003.
    let mut request = upgrade_request("/mqtt").into_bytes();
    let mask = [1u8, 2, 3, 4];
    request.extend([0x81, 0x85]);
    request.extend(mask);
    request.extend(b"hello".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    let answer = exchange(ws, &request);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    let end = text.find("\r\n\r\n").unwrap() + 4;
    assert_eq!(answer[end], 0x88, "{answer:?}");
    assert_eq!(&answer[end + 2..end + 4], &1003u16.to_be_bytes());
    expected_warnings += 1;

    // A client that does not trust the server's certificate gives up during the handshake.
    let refused = run(
        Command::new("mosquitto_pub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &tls.to_string(),
            "--cafile",
            &stranger.arg("ca.pem"),
            "-t",
            "ok/x",
            "-m",
            "x",
        ]),
        STEP,
    );
    assert!(!refused.success(), "{refused:?}");
    expected_warnings += 1;

    assert!(
        broker.wait_for_log("connection from 127.0.0.1", expected_warnings, STEP),
        "expected {expected_warnings} log lines about refused connections:\n{}",
        broker.log()
    );
    for needle in [
        "WebSocket handshake refused with HTTP 426",
        "WebSocket handshake refused with HTTP 431",
        "WebSocket handshake refused with HTTP 404",
        "WebSocket closed with code 1003",
    ] {
        assert!(broker.log().contains(needle), "no `{needle}` in the log");
    }

    // Everyone else was unaffected.
    mosquitto_pub(plain, &["-q", "1", "-t", "ok/after", "-m", "fine"]);
    assert_eq!(paho_payloads(&ws_sub, 1), ["fine"]);
    assert_eq!(messages(&tls_sub, 1), ["ok/after fine"]);
}

#[test]
fn bad_handshakes_close_only_their_connection_one_worker() {
    bad_handshakes("1");
}

#[test]
fn bad_handshakes_close_only_their_connection_two_workers() {
    bad_handshakes("2");
}

#[test]
fn use_identity_as_username_applies_the_acl_of_the_certificate_name() {
    let pki = Pki::new("identity");
    pki.issue("device", "device-42", true);
    pki.issue("intruder", "intruder", true);
    let dir = TestDir::new("identity-conf");
    let acl = dir.write(
        "acl",
        "topic read devices/#\ntopic readwrite probe/#\n\nuser device-42\ntopic write devices/device-42/#\n",
    );
    let conf = dir.write(
        "femtomq.toml",
        format!(
            "acl_file = \"{}\"\n\n[[listener]]\nurl = \"127.0.0.1:0\"\n\n[[listener]]\nurl = \"mqtts://127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\ncafile = \"{}\"\nrequire_certificate = true\nuse_identity_as_username = true\n",
            path_arg(&acl),
            pki.arg("server.pem"),
            pki.arg("server.key"),
            pki.arg("ca.pem"),
        ),
    );
    let broker = Broker::start_without_listen(&["--conf", path_arg(&conf)]);
    let ports = ports(&broker);
    let (plain, tls) = (ports["mqtt"], ports["mqtts"]);
    let sub = Subscriber::start(SubTool::Mosquitto, plain, &["-t", "devices/#"]);
    let publish = |who: &str, username: Option<&str>, topic: &str, message: &str| {
        let mut command = Command::new("mosquitto_pub");
        command.args([
            "-h",
            "127.0.0.1",
            "-p",
            &tls.to_string(),
            "-V",
            "mqttv5",
            "-q",
            "1",
            "--cafile",
            &pki.arg("ca.pem"),
            "--cert",
            &pki.arg(&format!("{who}.pem")),
            "--key",
            &pki.arg(&format!("{who}.key")),
            "-t",
            topic,
            "-m",
            message,
        ]);
        if let Some(username) = username {
            command.args(["-u", username, "-P", "wrong"]);
        }
        run(&mut command, STEP)
    };
    // Denied: another device's topic, and an intruder naming itself device-42.
    publish("device", None, "devices/device-7/t", "not mine");
    publish(
        "intruder",
        Some("device-42"),
        "devices/device-42/t",
        "spoofed",
    );
    // Allowed: its own topic, whatever user name the client sends.
    publish(
        "device",
        Some("someone-else"),
        "devices/device-42/t",
        "mine",
    )
    .assert_success("publish to its own topic");
    assert_eq!(sub.messages(1, STEP), ["devices/device-42/t mine"]);
    assert_eq!(
        sub.more_within(Duration::from_millis(200)),
        Vec::<String>::new()
    );
    assert!(broker.log().contains("user device-42"), "{}", broker.log());
    assert!(broker.log().contains("user intruder"), "{}", broker.log());
}

#[test]
fn reload_rereads_certificates_and_keeps_open_connections() {
    let first = Pki::new("reload-first");
    let second = Pki::new("reload-second");
    let dir = TestDir::new("reload-files");
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    std::fs::copy(first.path("server.pem"), &cert).unwrap();
    std::fs::copy(first.path("server.key"), &key).unwrap();
    let (broker, ports) = start(&strings(&[
        "--listen",
        "mqtts://127.0.0.1:0",
        "--cert",
        path_arg(&cert),
        "--key",
        path_arg(&key),
    ]));
    let (plain, tls) = (ports["mqtt"], ports["mqtts"]);
    let old = tls_subscriber(
        plain,
        tls,
        &strings(&["--cafile", &first.arg("ca.pem")]),
        "rl/#",
    );
    std::fs::copy(second.path("server.pem"), &cert).unwrap();
    std::fs::copy(second.path("server.key"), &key).unwrap();
    broker.signal(rustix::process::Signal::HUP);
    assert!(broker.wait_for_log("configuration reloaded", 1, STEP));
    // New connections get the new certificate: trusting only the new CA works...
    mosquitto_pub(
        tls,
        &[
            "--cafile",
            &second.arg("ca.pem"),
            "-q",
            "1",
            "-t",
            "rl/new",
            "-m",
            "renewed",
        ],
    );
    // ... and the connection made with the old one is still open.
    assert_eq!(messages(&old, 1), ["rl/new renewed"]);
    let stale = run(
        Command::new("mosquitto_pub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &tls.to_string(),
            "--cafile",
            &first.arg("ca.pem"),
            "-t",
            "rl/old",
            "-m",
            "x",
        ]),
        STEP,
    );
    assert!(!stale.success(), "the old certificate is still served");
}

#[test]
fn tls_configuration_errors_stop_startup_with_a_clear_message() {
    let pki = Pki::new("config-errors");
    let encrypted = pki.dir.write(
        "encrypted.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            strings(&["--listen", "mqtts://127.0.0.1:0"]),
            "a TLS listener needs a certificate and key",
        ),
        (
            strings(&[
                "--listen",
                "wss://127.0.0.1:0/mqtt",
                "--cert",
                &pki.arg("server.pem"),
                "--key",
                path_arg(&encrypted),
            ]),
            "encrypted with a passphrase",
        ),
        (
            strings(&[
                "--listen",
                "mqtts://127.0.0.1:0",
                "--cert",
                &pki.arg("missing.pem"),
                "--key",
                &pki.arg("server.key"),
            ]),
            "cannot read certificate file",
        ),
        (
            [pki.server_args(), strings(&["--require-certificate"])]
                .concat()
                .into_iter()
                .chain(strings(&["--listen", "mqtts://127.0.0.1:0"]))
                .collect(),
            "require_certificate needs cafile",
        ),
        (
            [
                pki.server_args(),
                strings(&["--listen", "ws://127.0.0.1:0"]),
            ]
            .concat(),
            "no TLS listener",
        ),
    ];
    for (args, expected) in cases {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let outcome = run(
            Command::new(femtomq_e2e::femtomq_bin())
                .arg("start")
                .args(&argv),
            STEP,
        );
        assert_eq!(outcome.code(), Some(1), "{args:?}: {outcome:?}");
        assert!(
            outcome.stderr.contains(expected),
            "{args:?}: expected `{expected}` in {:?}",
            outcome.stderr
        );
    }
}
