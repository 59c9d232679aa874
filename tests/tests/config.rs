//! Configuration: bad files are refused by `femtomq start --conf` and `femtomq check-config`
//! with exit code 1 and a message naming file:line and key; good files and the defaults run.

use std::net::TcpListener;

use femtomq_e2e::{
    Broker, STEP, SubTool, Subscriber, TestDir, femtomq, mosquitto_pub, path_arg, run,
    workspace_root,
};

/// (file contents, line of the error, key named, words of the reason)
const BAD_FILES: &[(&str, usize, &str, &str)] = &[
    (
        "[limits]\nmax_connections = 10\nbogus_key = 3\n",
        3,
        "limits.bogus_key",
        "unknown key",
    ),
    (
        "# comment\n[limits]\nmax_packet_size = \"big\"\n",
        3,
        "limits.max_packet_size",
        "expected an integer",
    ),
    (
        "workers = 1\n[session]\nconnect_timeout_ms = -5\n",
        3,
        "session.connect_timeout_ms",
        "out of range",
    ),
    ("typo_at_top = true\n", 1, "typo_at_top", "unknown key"),
    (
        "[session]\nshared_strategy = \"fastest\"\n",
        2,
        "session.shared_strategy",
        "",
    ),
    // Value syntax errors name the key too.
    ("workers = yes\n", 1, "workers", "`yes` is not a string"),
    (
        "[limits]\n\nmax_connections = 10 20\n",
        3,
        "limits.max_connections",
        "unexpected `20`",
    ),
];

#[test]
fn bad_config_files_are_refused_naming_file_line_and_key() {
    let dir = TestDir::new("bad-config");
    for (index, (contents, line, key, reason)) in BAD_FILES.iter().enumerate() {
        let file = dir.write(&format!("bad{index}.toml"), contents);
        let place = format!("{}:{line}:", file.display());
        for args in [
            vec!["check-config", path_arg(&file)],
            vec![
                "start",
                "--conf",
                path_arg(&file),
                "--listen",
                "127.0.0.1:0",
            ],
        ] {
            let out = run(&mut femtomq(&args), STEP);
            assert_eq!(out.code(), Some(1), "{args:?} on {contents:?}: {out:?}");
            assert!(
                out.stderr.contains(&place) && out.stderr.contains(&format!("`{key}`")),
                "{args:?}: `{}` should name {place} and `{key}`",
                out.stderr.trim()
            );
            assert!(out.stderr.contains(reason), "{args:?}: {}", out.stderr);
            // The broker never got as far as listening.
            assert_eq!(out.stdout, "", "{args:?}");
        }
    }
}

#[test]
fn a_good_file_is_checked_ok_and_applied() {
    let dir = TestDir::new("good-config");
    let file = dir.write(
        "femtomq.toml",
        "workers = 1\n[limits]\nmax_packet_size = 5000\n[session]\nconnect_timeout_ms = 2000\n\
         [log]\nlevel = \"debug\"\n",
    );
    let out = run(&mut femtomq(&["check-config", path_arg(&file)]), STEP);
    out.assert_success("check-config");
    assert_eq!(out.stdout.trim(), format!("{}: ok", file.display()));
    let broker = Broker::start(&["--conf", path_arg(&file)]);
    // The file's maximum packet size is what the broker announces.
    let (_client, connack) =
        femtomq_e2e::raw::RawClient::connected(broker.address(), femtomq_e2e::raw::V5, "config");
    assert_eq!(
        femtomq_e2e::raw::connack_maximum_packet_size(&connack),
        Some(5000)
    );
    // A flag overrides the file.
    let flagged = Broker::start(&["--conf", path_arg(&file), "--max-packet-size", "7000"]);
    let (_client, connack) =
        femtomq_e2e::raw::RawClient::connected(flagged.address(), femtomq_e2e::raw::V5, "config");
    assert_eq!(
        femtomq_e2e::raw::connack_maximum_packet_size(&connack),
        Some(7000)
    );
}

#[test]
fn default_configuration_runs_or_the_shipped_file_checks() {
    // The shipped femtomq.toml documents every default: it must always pass.
    let shipped = workspace_root().join("femtomq.toml");
    run(&mut femtomq(&["check-config", path_arg(&shipped)]), STEP)
        .assert_success("check-config femtomq.toml");

    // With no file and no --listen the broker takes the default 127.0.0.1:1883 (and [::1]:1883
    // if it can). That port may be held by another broker on this machine, and the test must
    // not depend on it: run the defaults only when it is free, else the check above is what
    // this test shows, and it says so.
    if TcpListener::bind("127.0.0.1:1883").is_err() {
        // In CI the port is ours: there a busy port is a failure, not a reason to check less.
        assert!(
            std::env::var_os("CI").is_none(),
            "127.0.0.1:1883 is busy in CI: the defaults could not be run"
        );
        println!("127.0.0.1:1883 is busy: checked the shipped femtomq.toml only");
        return;
    }
    println!("127.0.0.1:1883 is free: running the broker with its defaults");
    let broker = Broker::start_without_listen(&[]);
    assert!(
        broker
            .ready_line()
            .starts_with("femtomq 0.1.0 listening on mqtt://127.0.0.1:1883"),
        "{}",
        broker.ready_line()
    );
    assert!(broker.ready_line().ends_with("; anonymous access on"));
    let sub = Subscriber::start(SubTool::Mosquitto, 1883, &["-q", "1", "-t", "defaults"]);
    mosquitto_pub(1883, &["-q", "1", "-t", "defaults", "-m", "on 1883"]);
    assert_eq!(sub.messages(1, STEP), ["defaults on 1883"]);
}
