//! Authentication and access control against real clients: password files made by Mosquitto's
//! `mosquitto_passwd` and by `femtomq passwd`, anonymous access on and off per listener, ACL
//! files (read, write, deny, patterns, the anonymous section, a `#` subscriber that must not
//! receive what it may not read), files that stop startup or a reload, and the HTTP callout
//! against an HTTP server run by the test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use femtomq_e2e::raw::{self, RawClient, Received, V5, V311};
use femtomq_e2e::{
    Broker, STEP, SubTool, Subscriber, TestDir, femtomq, mosquitto_pub, path_arg, run,
    run_with_input,
};

// ----- raw clients with credentials ------------------------------------------------------------

/// CONNECT with optional user name and password; returns the client and the CONNACK reason
/// code (MQTT 5) or return code (3.1.1).
fn connect(
    address: SocketAddr,
    level: u8,
    client_id: &str,
    user: Option<&str>,
    password: Option<&str>,
) -> (RawClient, u8) {
    let mut body = raw::field(b"MQTT");
    body.push(level);
    let mut flags = 0x02;
    if user.is_some() {
        flags |= 0x80;
    }
    if password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend(60u16.to_be_bytes());
    if level == V5 {
        body.push(0);
    }
    body.extend(raw::field(client_id.as_bytes()));
    if let Some(user) = user {
        body.extend(raw::field(user.as_bytes()));
    }
    if let Some(password) = password {
        body.extend(raw::field(password.as_bytes()));
    }
    let mut client = RawClient::connect(address);
    client
        .send(&raw::packet(0x10, &body))
        .expect("send CONNECT");
    match client.read_packet(STEP) {
        Received::Packet(connack) if connack[0] == 0x20 => (client, connack[3]),
        other => panic!("CONNECT of `{client_id}` answered with {other:?}"),
    }
}

fn connected(address: SocketAddr, level: u8, client_id: &str, user: Option<&str>) -> RawClient {
    let (client, code) = connect(address, level, client_id, user, None);
    assert_eq!(code, 0, "CONNECT of {client_id} as {user:?}");
    client
}

/// PUBLISH at QoS 1; returns the PUBACK reason code (0 when it has none).
fn publish_qos1(client: &mut RawClient, level: u8, topic: &str, id: u16) -> u8 {
    client
        .send(&raw::publish(level, topic, b"x", Some(id)))
        .expect("send PUBLISH");
    loop {
        match client.read_packet(STEP) {
            Received::Packet(p) if p[0] == 0x40 => {
                assert_eq!(u16::from_be_bytes([p[2], p[3]]), id);
                return p.get(4).copied().unwrap_or(0);
            }
            // Messages for the client's own subscriptions can come first.
            Received::Packet(p) if p[0] >> 4 == 3 => {}
            other => panic!("PUBLISH {topic} answered with {other:?}"),
        }
    }
}

/// SUBSCRIBE to one filter at QoS 1; returns the SUBACK code.
fn subscribe(client: &mut RawClient, level: u8, filter: &str, id: u16) -> u8 {
    let mut body = id.to_be_bytes().to_vec();
    if level == V5 {
        body.push(0);
    }
    body.extend(raw::field(filter.as_bytes()));
    body.push(1);
    client
        .send(&raw::packet(0x82, &body))
        .expect("send SUBSCRIBE");
    match client.read_packet(STEP) {
        Received::Packet(p) if p[0] == 0x90 => *p.last().expect("a SUBACK code"),
        other => panic!("SUBSCRIBE {filter} answered with {other:?}"),
    }
}

/// `mosquitto_pub -h 127.0.0.1 -p PORT ARGS`, which may fail.
fn try_mosquitto_pub(port: u16, args: &[&str]) -> femtomq_e2e::Outcome {
    let mut command = std::process::Command::new("mosquitto_pub");
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    run(&mut command, STEP)
}

fn mosquitto_passwd(file: &std::path::Path, user: &str, password: &str, create: bool) {
    let mut command = std::process::Command::new("mosquitto_passwd");
    command.arg("-b");
    if create {
        command.arg("-c");
    }
    command.args([path_arg(file), user, password]);
    run(&mut command, STEP).assert_success("mosquitto_passwd");
}

// ----- passwords -------------------------------------------------------------------------------

#[test]
fn a_mosquitto_passwd_file_is_accepted_and_answers_follow_the_protocol_version() {
    let dir = TestDir::new("passwd-mosquitto");
    let file = dir.join("passwd");
    mosquitto_passwd(&file, "alice", "secret", true);
    mosquitto_passwd(&file, "bob", "hunter2", false);
    // More refusals from 127.0.0.1 than [throttle] allows by default: throttling, tested in
    // auth_scram.rs, is off here.
    let conf = dir.write("femtomq.toml", "[throttle]\nmax_failures = 0\n");
    let broker = Broker::start(&[
        "--conf",
        path_arg(&conf),
        "--password-file",
        path_arg(&file),
    ]);
    assert!(
        broker.ready_line().ends_with("anonymous access off"),
        "{}",
        broker.ready_line()
    );
    let address = broker.address();
    // (user, password, MQTT 5 reason code, 3.1.1 return code)
    for (user, password, v5, v311) in [
        (Some("alice"), Some("secret"), 0x00, 0),
        (Some("bob"), Some("hunter2"), 0x00, 0),
        (Some("alice"), Some("hunter2"), 0x86, 4),
        (Some("alice"), Some(""), 0x86, 4),
        (Some("alice"), None, 0x86, 4),
        (Some("mallory"), Some("secret"), 0x86, 4),
        // No user name: anonymous access is off by default with a password file.
        (None, None, 0x87, 5),
    ] {
        for (level, expected) in [(V5, v5), (V311, v311)] {
            let (mut client, code) = connect(address, level, "c1", user, password);
            assert_eq!(code, expected, "{user:?}/{password:?} at level {level}");
            if expected != 0 {
                // Refused connections are closed [MQTT-3.2.2-5].
                assert!(client.read_until_closed(STEP).is_ok());
            }
        }
    }
    // mosquitto's own client agrees.
    let ok = mosquitto_pub(
        broker.port(),
        &["-u", "alice", "-P", "secret", "-t", "t", "-m", "m"],
    );
    ok.assert_success("mosquitto_pub with the right password");
    let refused = try_mosquitto_pub(
        broker.port(),
        &["-u", "alice", "-P", "wrong", "-t", "t", "-m", "m"],
    );
    assert!(!refused.success(), "{refused:?}");
    // Every refusal is logged with the client id.
    assert!(broker.log().contains("client `c1`"), "{}", broker.log());
}

#[test]
fn anonymous_access_can_be_turned_on_beside_a_password_file_and_off_without_one() {
    let dir = TestDir::new("passwd-anon");
    let file = dir.join("passwd");
    mosquitto_passwd(&file, "alice", "secret", true);
    let broker = Broker::start(&[
        "--password-file",
        path_arg(&file),
        "--allow-anonymous",
        "true",
    ]);
    assert_eq!(connect(broker.address(), V5, "anon", None, None).1, 0);
    assert_eq!(
        connect(broker.address(), V5, "a", Some("alice"), Some("nope")).1,
        0x86
    );
    let closed = Broker::start(&["--allow-anonymous", "false"]);
    assert!(closed.ready_line().ends_with("anonymous access off"));
    assert_eq!(connect(closed.address(), V5, "anon", None, None).1, 0x87);
    assert_eq!(connect(closed.address(), V311, "anon", None, None).1, 5);
    // Without a password file there is nothing to check a user name against: refused too.
    assert_eq!(
        connect(closed.address(), V5, "u", Some("alice"), Some("x")).1,
        0x86
    );
}

#[test]
fn listeners_have_their_own_settings() {
    let dir = TestDir::new("per-listener");
    let file = dir.join("passwd");
    mosquitto_passwd(&file, "alice", "secret", true);
    let conf = dir.write(
        "femtomq.toml",
        "password_file = \"passwd\"\n\
         [[listener]]\nurl = \"127.0.0.1:0\"\n\
         [[listener]]\nurl = \"127.0.0.1:0\"\nallow_anonymous = true\n",
    );
    let broker = Broker::start_without_listen(&["--conf", path_arg(&conf)]);
    assert!(
        broker
            .ready_line()
            .ends_with("anonymous access per listener"),
        "{}",
        broker.ready_line()
    );
    let ports = femtomq_e2e::ready_ports(broker.ready_line());
    assert_eq!(ports.len(), 2, "{}", broker.ready_line());
    let closed = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let open = SocketAddr::from(([127, 0, 0, 1], ports[1]));
    assert_eq!(connect(closed, V5, "anon", None, None).1, 0x87);
    assert_eq!(connect(open, V5, "anon", None, None).1, 0);
    // The password file applies to both (inherited from the top level).
    for address in [closed, open] {
        assert_eq!(
            connect(address, V5, "a", Some("alice"), Some("secret")).1,
            0
        );
        assert_eq!(connect(address, V311, "a", Some("alice"), Some("bad")).1, 4);
    }
}

#[test]
fn femtomq_passwd_makes_files_both_brokers_accept() {
    let dir = TestDir::new("femtomq-passwd");
    let file = dir.join("passwd");
    let passwd = |args: &[&str], input: &str| {
        let mut all = vec!["passwd"];
        all.extend_from_slice(args);
        run_with_input(&mut femtomq(&all), input.as_bytes(), STEP)
    };
    passwd(&["-c", path_arg(&file), "alice"], "first\n").assert_success("passwd -c");
    passwd(&[path_arg(&file), "bob"], "bobpass\n").assert_success("passwd add");
    passwd(&[path_arg(&file), "alice"], "second\n").assert_success("passwd update");
    passwd(&[path_arg(&file), "carol"], "carolpass\n").assert_success("passwd add");
    passwd(&["-D", path_arg(&file), "bob"], "").assert_success("passwd -D");
    let missing = passwd(&["-D", path_arg(&file), "bob"], "");
    assert_eq!(missing.code(), Some(1), "{missing:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    // Each user's `$7$` line, then its SCRAM-SHA-256 verifier (a comment to Mosquitto).
    let (verifiers, hashes): (Vec<&str>, Vec<&str>) =
        text.lines().partition(|l| l.starts_with("#SCRAM-SHA-256:"));
    let users: Vec<&str> = hashes
        .iter()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(users, ["alice", "carol"], "{text}");
    assert!(hashes.iter().all(|l| l.contains(":$7$101$")), "{text}");
    let verified: Vec<&str> = verifiers
        .iter()
        .map(|l| l.split(':').nth(1).unwrap())
        .collect();
    assert_eq!(verified, ["alice", "carol"], "{text}");
    // The password never comes from the command line: a third positional is refused.
    assert!(!passwd(&[path_arg(&file), "dave", "pw"], "").success());

    let broker = Broker::start(&["--password-file", path_arg(&file)]);
    let address = broker.address();
    assert_eq!(
        connect(address, V5, "a", Some("alice"), Some("second")).1,
        0
    );
    assert_eq!(
        connect(address, V5, "a", Some("alice"), Some("first")).1,
        0x86
    );
    assert_eq!(
        connect(address, V5, "c", Some("carol"), Some("carolpass")).1,
        0
    );
    assert_eq!(
        connect(address, V5, "b", Some("bob"), Some("bobpass")).1,
        0x86
    );

    // Mosquitto reads the same file.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let conf = dir.write(
        "mosquitto.conf",
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n{}",
            file.display(),
            // As root, mosquitto would switch to its own user, who cannot read the 0600 file.
            if rustix::process::getuid().is_root() {
                "user root\n"
            } else {
                ""
            }
        ),
    );
    let mut mosquitto = femtomq_e2e::Spawned::spawn(
        std::process::Command::new("mosquitto").args(["-c", path_arg(&conf)]),
    );
    let accepted = femtomq_e2e::wait_until(STEP, || {
        try_mosquitto_pub(port, &["-u", "alice", "-P", "second", "-t", "t", "-m", "m"]).success()
    });
    assert!(accepted, "mosquitto refused alice: {}", mosquitto.stderr());
    assert!(
        !try_mosquitto_pub(port, &["-u", "alice", "-P", "first", "-t", "t", "-m", "m"]).success()
    );
    mosquitto.kill();
}

// ----- ACL ---------------------------------------------------------------------------------------

const ACL: &str = "\
# anonymous clients: the probes of the test harness, and public/
topic readwrite probe/#
topic read public/#

user alice
topic read probe/#
topic readwrite sensors/#
topic deny sensors/secret/#
topic write commands/+

user bob
topic read #
topic deny secret/#

user admin
topic readwrite #

pattern readwrite devices/%c/#
pattern read inbox/%u
";

#[test]
fn acl_rules_decide_publish_and_subscribe_with_the_right_codes() {
    let dir = TestDir::new("acl");
    let acl = dir.write("acl", ACL);
    let broker = Broker::start(&["--acl-file", path_arg(&acl)]);
    let address = broker.address();
    for level in [V5, V311] {
        // MQTT 5: PUBACK 0x10 No matching subscribers, or 0x87; 3.1.1: acknowledged either way.
        let (ok_pub, denied_pub) = if level == V5 { (0x10, 0x87) } else { (0, 0) };
        let mut alice = connected(address, level, "alice-1", Some("alice"));
        assert_eq!(publish_qos1(&mut alice, level, "sensors/t", 1), ok_pub);
        assert_eq!(
            publish_qos1(&mut alice, level, "sensors/secret/k", 2),
            denied_pub
        );
        assert_eq!(
            publish_qos1(&mut alice, level, "commands/reboot", 3),
            ok_pub
        );
        assert_eq!(publish_qos1(&mut alice, level, "public/x", 4), denied_pub);
        // Patterns: her own device tree, not another's.
        assert_eq!(
            publish_qos1(&mut alice, level, "devices/alice-1/state", 5),
            ok_pub
        );
        assert_eq!(
            publish_qos1(&mut alice, level, "devices/other/state", 6),
            denied_pub
        );
        let denied_sub = if level == V5 { 0x87 } else { 0x80 };
        assert_eq!(subscribe(&mut alice, level, "sensors/#", 7), 1);
        assert_eq!(
            subscribe(&mut alice, level, "sensors/secret/#", 8),
            denied_sub
        );
        assert_eq!(subscribe(&mut alice, level, "commands/+", 9), denied_sub);
        assert_eq!(subscribe(&mut alice, level, "#", 10), denied_sub);
        assert_eq!(subscribe(&mut alice, level, "inbox/alice", 11), 1);
        assert_eq!(subscribe(&mut alice, level, "inbox/bob", 12), denied_sub);
        // Anonymous clients get the anonymous section only.
        let mut anon = connected(address, level, "anon-1", None);
        assert_eq!(subscribe(&mut anon, level, "public/#", 1), 1);
        assert_eq!(subscribe(&mut anon, level, "sensors/#", 2), denied_sub);
        assert_eq!(publish_qos1(&mut anon, level, "public/x", 3), denied_pub);
    }
    // Denials are logged with client id, user name and topic.
    assert!(
        broker.wait_for_log(
            "access denied: client `alice-1` user `alice` Publish `sensors/secret/k`",
            1,
            STEP
        ),
        "{}",
        broker.log()
    );
    assert!(
        broker
            .log()
            .contains("access denied: client `anon-1` user `-` Subscribe `sensors/#`")
    );
}

/// The operator's line with the counters (`running for`: SIGUSR1, `stopped after`: shutdown).
fn stats_line(log: &str, when: &str) -> String {
    log.lines()
        .find(|line| line.contains(when) && line.contains(" access denials"))
        .unwrap_or_else(|| panic!("no `{when}` line with the counters in:\n{log}"))
        .to_string()
}

#[test]
fn denials_of_all_workers_are_counted_on_sigusr1_and_at_shutdown() {
    let dir = TestDir::new("acl-count");
    let acl = dir.write("acl", ACL);
    let mut broker = Broker::start(&["--acl-file", path_arg(&acl), "--workers", "2"]);
    let address = broker.address();
    // `alice-1` and `alice-2` are owned by different workers (`client_owner`): 2 + 3 denials.
    let mut one = connected(address, V5, "alice-1", Some("alice"));
    assert_eq!(publish_qos1(&mut one, V5, "sensors/secret/k", 1), 0x87);
    assert_eq!(subscribe(&mut one, V5, "#", 2), 0x87);
    assert_eq!(subscribe(&mut one, V5, "sensors/#", 3), 1);
    let mut two = connected(address, V5, "alice-2", Some("alice"));
    assert_eq!(publish_qos1(&mut two, V5, "public/x", 1), 0x87);
    assert_eq!(subscribe(&mut two, V5, "inbox/bob", 2), 0x87);
    assert_eq!(subscribe(&mut two, V5, "commands/+", 3), 0x87);
    broker.signal(rustix::process::Signal::USR1);
    assert!(
        broker.wait_for_log("running for", 1, STEP),
        "{}",
        broker.log()
    );
    let running = stats_line(&broker.log(), "running for");
    assert!(
        running.contains(": 2 clients connected, 2 sessions,")
            && running.contains(", 5 access denials,"),
        "{running}"
    );
    assert_eq!(subscribe(&mut two, V5, "sensors/secret/#", 4), 0x87);
    broker.signal(rustix::process::Signal::TERM);
    assert!(broker.wait_exit(STEP).is_some_and(|s| s.success()));
    let log = broker.log();
    let stopped = stats_line(&log, "stopped after");
    assert!(stopped.contains(", 6 access denials,"), "{stopped}");
    // Each denial counted is one logged.
    assert_eq!(log.matches("access denied: ").count(), 6, "{log}");
}

#[test]
fn a_subscriber_to_everything_receives_only_what_it_may_read() {
    let dir = TestDir::new("acl-hash");
    let acl = dir.write("acl", ACL);
    let broker = Broker::start(&["--acl-file", path_arg(&acl)]);
    let port = broker.port();
    let bob = Subscriber::start(
        SubTool::Mosquitto,
        port,
        &["-u", "bob", "-i", "bob-sub", "-q", "1", "-t", "#"],
    );
    let anon = Subscriber::start(SubTool::Mosquitto, port, &["-q", "1", "-t", "public/#"]);
    for topic in ["secret/plans", "news/today", "secret/more", "public/notice"] {
        mosquitto_pub(port, &["-u", "admin", "-q", "1", "-t", topic, "-m", topic])
            .assert_success("admin publishes");
    }
    assert_eq!(
        bob.messages(2, STEP),
        ["news/today news/today", "public/notice public/notice"]
    );
    assert_eq!(anon.messages(1, STEP), ["public/notice public/notice"]);
    assert_eq!(
        bob.more_within(Duration::from_millis(300)),
        Vec::<String>::new()
    );
    assert!(
        broker
            .log()
            .contains("access denied: client `bob-sub` user `bob` Receive `secret/plans`")
    );
}

// ----- files that cannot be used ---------------------------------------------------------------

#[test]
fn missing_unreadable_or_malformed_files_stop_startup_naming_file_and_line() {
    let dir = TestDir::new("bad-auth-files");
    let good_pw = dir.join("passwd");
    mosquitto_passwd(&good_pw, "alice", "secret", true);
    let bad_pw = dir.write(
        "bad-passwd",
        format!(
            "{}\nbob:plaintext\n",
            std::fs::read_to_string(&good_pw).unwrap().trim()
        ),
    );
    let bad_acl = dir.write("bad-acl", "topic read a/#\n\nuser bob\nallow everything\n");
    let missing = dir.join("missing");
    // A directory cannot be read as a file (the tests may run as root, who reads any mode).
    let unreadable = dir.join("a-directory");
    std::fs::create_dir(&unreadable).unwrap();
    for (flag, file, place) in [
        (
            "--password-file",
            &bad_pw,
            format!("{}:2: ", bad_pw.display()),
        ),
        ("--acl-file", &bad_acl, format!("{}:4: ", bad_acl.display())),
        (
            "--password-file",
            &missing,
            format!("{}: cannot read", missing.display()),
        ),
        (
            "--acl-file",
            &missing,
            format!("{}: cannot read", missing.display()),
        ),
        (
            "--password-file",
            &unreadable,
            format!("{}: cannot read", unreadable.display()),
        ),
    ] {
        let out = run(
            &mut femtomq(&["start", "--listen", "127.0.0.1:0", flag, path_arg(file)]),
            STEP,
        );
        assert_eq!(out.code(), Some(1), "{flag} {file:?}: {out:?}");
        assert!(
            out.stderr.contains(&place),
            "{flag}: `{}` should name {place}",
            out.stderr
        );
        assert_eq!(out.stdout, "", "it never listened");
    }
    // check-config reads the files a configuration names.
    let conf = dir.write("femtomq.toml", "acl_file = \"bad-acl\"\n");
    let out = run(&mut femtomq(&["check-config", path_arg(&conf)]), STEP);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!("{}:4: ", bad_acl.display())),
        "{}",
        out.stderr
    );
}

#[test]
fn a_reload_with_a_bad_file_keeps_the_rules_in_force() {
    let dir = TestDir::new("reload-acl");
    let acl = dir.write("acl", "topic readwrite allowed/#\n");
    let pid_file = dir.join("pid");
    let broker = Broker::start(&[
        "--acl-file",
        path_arg(&acl),
        "--pid-file",
        path_arg(&pid_file),
    ]);
    let address = broker.address();
    let check = |topic: &str| {
        let mut client = connected(address, V5, "checker", None);
        publish_qos1(&mut client, V5, topic, 1)
    };
    assert_eq!(check("allowed/x"), 0x10);
    assert_eq!(check("later/x"), 0x87);
    // A malformed file: the reload fails and the old rules stay.
    std::fs::write(&acl, "topic readwrite later/#\ntopic sideways x\nbogus\n").unwrap();
    run(
        &mut femtomq(&["reload", "--pid-file", path_arg(&pid_file)]),
        STEP,
    )
    .assert_success("reload");
    assert!(
        broker.wait_for_log(&format!("{}:3: ", acl.display()), 1, STEP),
        "{}",
        broker.log()
    );
    assert!(broker.wait_for_log("keeping the current configuration", 1, STEP));
    assert_eq!(check("allowed/x"), 0x10);
    assert_eq!(check("later/x"), 0x87);
    // A missing file: the same.
    std::fs::remove_file(&acl).unwrap();
    run(
        &mut femtomq(&["reload", "--pid-file", path_arg(&pid_file)]),
        STEP,
    )
    .assert_success("reload");
    assert!(broker.wait_for_log("keeping the current configuration", 2, STEP));
    assert_eq!(check("allowed/x"), 0x10);
    // A good file applies.
    std::fs::write(&acl, "topic readwrite later/#\n").unwrap();
    run(
        &mut femtomq(&["reload", "--pid-file", path_arg(&pid_file)]),
        STEP,
    )
    .assert_success("reload");
    assert!(broker.wait_for_log("configuration reloaded", 1, STEP));
    assert_eq!(check("later/x"), 0x10);
    assert_eq!(check("allowed/x"), 0x87);
}

// ----- HTTP callout ------------------------------------------------------------------------------

/// A tiny HTTP server: answers each request with the status `decide` gives for its request line
/// and body (after `delay` for bodies containing `slow`), and records what it was asked.
struct HttpServer {
    address: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl HttpServer {
    fn start(decide: fn(&str) -> u16) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || serve(stream, decide, &seen));
            }
        });
        HttpServer { address, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(mut stream: TcpStream, decide: fn(&str) -> u16, seen: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(STEP));
    let mut data = Vec::new();
    let mut buffer = [0u8; 2048];
    // Read the head, then the body by Content-Length.
    let request = loop {
        let Ok(count) = stream.read(&mut buffer) else {
            return;
        };
        if count == 0 {
            return;
        }
        data.extend_from_slice(&buffer[..count]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |n| n.trim().parse::<usize>().unwrap_or(0));
            if data.len() >= end + 4 + length {
                let line = text.lines().next().unwrap_or("").to_string();
                break format!("{line} {}", &text[end + 4..]);
            }
        }
    };
    seen.lock().unwrap().push(request.clone());
    let status = decide(&request);
    if request.contains("slow") {
        std::thread::sleep(Duration::from_secs(3));
    }
    let reason = if status == 200 { "OK" } else { "No" };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn http_authentication_allows_on_200_only_and_denies_on_timeout() {
    // user "slow" is allowed too, but only after the broker's timeout.
    let server = HttpServer::start(|request| {
        let alice = request.contains("username=alice&") && request.contains("password=good");
        if alice || request.contains("username=slow") {
            200
        } else {
            403
        }
    });
    let dir = TestDir::new("http-auth");
    let conf = dir.write(
        "femtomq.toml",
        format!(
            "[http_auth]\nauth_url = \"{}\"\ntimeout_ms = 300\n",
            server.url("/mqtt/auth")
        ),
    );
    let broker = Broker::start(&["--conf", path_arg(&conf)]);
    let address = broker.address();
    assert_eq!(connect(address, V5, "c1", Some("alice"), Some("good")).1, 0);
    assert_eq!(
        connect(address, V5, "c2", Some("alice"), Some("bad")).1,
        0x86
    );
    assert_eq!(
        connect(address, V311, "c3", Some("alice"), Some("bad")).1,
        4
    );
    assert_eq!(connect(address, V5, "c4", None, None).1, 0x87);
    assert_eq!(connect(address, V5, "c5", Some("slow"), Some("x")).1, 0x86);
    let requests = server.requests();
    let first = &requests[0];
    assert!(first.starts_with("POST /mqtt/auth HTTP/1.1 "), "{first}");
    assert!(
        first.contains("username=alice&clientid=c1&ipaddr=127.0.0.1&password=good&topic=&access="),
        "{first}"
    );
    // An HTTP server that is not there denies too.
    drop(broker);
    let conf = dir.write(
        "down.toml",
        "[http_auth]\nauth_url = \"http://127.0.0.1:1/auth\"\nmethod = \"GET\"\n",
    );
    let broker = Broker::start(&["--conf", path_arg(&conf)]);
    assert_eq!(
        connect(broker.address(), V5, "c6", Some("alice"), Some("good")).1,
        0x86
    );
}

#[test]
fn http_acl_decides_publish_and_subscribe_and_its_cache_is_used_within_its_ttl() {
    let server = HttpServer::start(|request| {
        if request.contains("topic=ok%2F") {
            200
        } else {
            403
        }
    });
    let dir = TestDir::new("http-acl");
    for (ttl, questions_for_two) in [(60_000, 1), (0, 2)] {
        let conf = dir.write(
            "femtomq.toml",
            format!(
                "[http_auth]\nacl_url = \"{}\"\nmethod = \"GET\"\ntimeout_ms = 300\ncache_ttl_ms = {ttl}\n",
                server.url("/acl")
            ),
        );
        let broker = Broker::start(&["--conf", path_arg(&conf)]);
        let address = broker.address();
        let before = server.requests().len();
        let mut client = connected(address, V5, "acl-1", Some("u1"));
        assert_eq!(subscribe(&mut client, V5, "ok/#", 1), 1);
        assert_eq!(subscribe(&mut client, V5, "no/#", 2), 0x87);
        let mut v311 = connected(address, V311, "acl-2", Some("u2"));
        assert_eq!(subscribe(&mut v311, V311, "no/#", 1), 0x80);
        assert_eq!(publish_qos1(&mut v311, V311, "no/x", 2), 0);
        // The same question twice: asked once while the answer is cached, twice without.
        let asked = server.requests().len();
        assert_eq!(publish_qos1(&mut client, V5, "ok/x", 3), 0x00);
        assert_eq!(publish_qos1(&mut client, V5, "ok/x", 4), 0x00);
        assert_eq!(
            server.requests().len() - asked,
            questions_for_two,
            "cache_ttl_ms = {ttl}: {:?}",
            server.requests()
        );
        assert_eq!(publish_qos1(&mut client, V5, "no/x", 5), 0x87);
        let requests = server.requests();
        assert!(
            requests[before].starts_with("GET /acl?username=u1&clientid=acl-1&"),
            "{}",
            requests[before]
        );
        assert!(
            requests[before].contains("&topic=ok%2F%23&access=1"),
            "{}",
            requests[before]
        );
        assert!(
            requests.iter().any(|r| r.contains("topic=ok%2Fx&access=2")),
            "{requests:?}"
        );
    }
    // A server too slow to answer denies, and the connection goes on afterwards.
    let slow = HttpServer::start(|_| 200);
    let conf = dir.write(
        "slow.toml",
        format!(
            "[http_auth]\nacl_url = \"{}\"\ntimeout_ms = 200\n",
            slow.url("/slow")
        ),
    );
    let broker = Broker::start(&["--conf", path_arg(&conf)]);
    let mut client = connected(broker.address(), V5, "slow-1", None);
    assert_eq!(publish_qos1(&mut client, V5, "a", 1), 0x87);
    assert_eq!(subscribe(&mut client, V5, "a", 2), 0x87);
}
