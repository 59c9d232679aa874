//! Topic filters: `+` and `#` wildcards [MQTT-4.7.1-2] [MQTT-4.7.1-3], `$`-topics not matched
//! by filters starting with a wildcard [MQTT-4.7.2-1], and shared subscriptions spreading
//! messages over a group, each message to one member (MQTT 5 §4.8.2).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use femtomq_e2e::{
    Broker, STEP, SubTool, Subscriber, mosquitto_pub, mosquitto_pub_input, paho_messages, paho_sub,
};

const QUIET: Duration = Duration::from_millis(300);

#[test]
fn plus_and_hash_wildcards_match_exactly_the_right_topics() {
    let broker = Broker::start(&[]);
    let port = broker.port();
    let filters = [
        "wc/+/temp",
        "wc/#",
        "wc/a/#",
        "+/+/temp",
        "wc/+",
        "wc/a/temp",
    ];
    let subscribers: Vec<Subscriber> = filters
        .iter()
        .map(|filter| Subscriber::start(SubTool::Mosquitto, port, &["-q", "1", "-t", filter]))
        .collect();
    let topics = [
        "wc/a/temp",
        "wc/b/temp",
        "wc/a/hum",
        "wc/a",
        "wc/a/b/temp",
        "other/a/temp",
        "wc//temp",
        "wc",
    ];
    for topic in topics {
        mosquitto_pub(port, &["-q", "1", "-t", topic, "-m", topic]);
    }
    let expected: [&[&str]; 6] = [
        // wc/+/temp: one level, empty levels count
        &["wc/a/temp", "wc/b/temp", "wc//temp"],
        // wc/#: the parent level too [MQTT-4.7.1-2]
        &[
            "wc/a/temp",
            "wc/b/temp",
            "wc/a/hum",
            "wc/a",
            "wc/a/b/temp",
            "wc//temp",
            "wc",
        ],
        // wc/a/#
        &["wc/a/temp", "wc/a/hum", "wc/a", "wc/a/b/temp"],
        // +/+/temp
        &["wc/a/temp", "wc/b/temp", "other/a/temp", "wc//temp"],
        // wc/+
        &["wc/a"],
        // exact
        &["wc/a/temp"],
    ];
    for ((filter, subscriber), want) in filters.iter().zip(&subscribers).zip(expected) {
        let want: Vec<String> = want.iter().map(|t| format!("{t} {t}")).collect();
        assert_eq!(
            subscriber.messages(want.len(), STEP),
            want,
            "filter {filter}"
        );
    }
    for (filter, subscriber) in filters.iter().zip(&subscribers) {
        assert_eq!(
            subscriber.more_within(QUIET),
            Vec::<String>::new(),
            "filter {filter}"
        );
    }
}

#[test]
fn dollar_topics_are_not_matched_by_leading_wildcards() {
    let broker = Broker::start(&[]);
    let port = broker.port();
    let hash = Subscriber::start(SubTool::Mosquitto, port, &["-q", "1", "-t", "#"]);
    let plus = Subscriber::start(SubTool::Mosquitto, port, &["-q", "1", "-t", "+/status"]);
    let dollar = paho_sub(
        port,
        &[
            "--protocol",
            "5",
            "--topic",
            "$dev/#",
            "--qos",
            "1",
            "--count",
            "1",
        ],
    );
    mosquitto_pub(port, &["-q", "1", "-t", "$dev/status", "-m", "dollar"]);
    mosquitto_pub(port, &["-q", "1", "-t", "dev/status", "-m", "plain"]);
    // `#` and `+/status` see only the plain topic (the probes of the harness are filtered out).
    assert_eq!(hash.messages(1, STEP), ["dev/status plain"]);
    assert_eq!(plus.messages(1, STEP), ["dev/status plain"]);
    // A filter naming `$dev` explicitly gets the `$` topic.
    let got = paho_messages(&dollar, 1, STEP);
    assert_eq!(
        (got[0]["topic"].as_str(), got[0]["payload"].as_str()),
        (Some("$dev/status"), Some("dollar"))
    );
    assert_eq!(hash.more_within(QUIET), Vec::<String>::new());
    assert_eq!(plus.more_within(QUIET), Vec::<String>::new());
}

#[test]
fn shared_subscription_spreads_messages_over_the_group_each_once() {
    const TOTAL: usize = 40;
    let broker = Broker::start(&[]);
    let port = broker.port();
    let members = [
        Subscriber::start(
            SubTool::Mosquitto,
            port,
            &["-V", "mqttv5", "-q", "1", "-t", "$share/g/jobs/+"],
        ),
        Subscriber::start(
            SubTool::Femtomq,
            port,
            &["-q", "1", "-t", "$share/g/jobs/+"],
        ),
    ];
    // A plain subscriber on the same topics gets every message regardless of the group.
    let everyone = Subscriber::start(SubTool::Mosquitto, port, &["-q", "1", "-t", "jobs/#"]);
    let sent: Vec<String> = (0..TOTAL).map(|i| format!("job-{i:02}")).collect();
    mosquitto_pub_input(
        port,
        &["-V", "mqttv5", "-q", "1", "-t", "jobs/x", "-l"],
        (sent.join("\n") + "\n").as_bytes(),
    );

    let mut got: [Vec<String>; 2] = Default::default();
    let deadline = Instant::now() + STEP;
    while got[0].len() + got[1].len() < TOTAL && Instant::now() < deadline {
        for (member, received) in members.iter().zip(got.iter_mut()) {
            if let Some(line) = member.next_message(Duration::from_millis(20)) {
                received.push(line);
            }
        }
    }
    for (member, received) in members.iter().zip(got.iter_mut()) {
        received.extend(member.more_within(QUIET));
    }
    let payload = |line: &String| line.strip_prefix("jobs/x ").unwrap().to_string();
    let all: Vec<String> = got.iter().flatten().map(payload).collect();
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), TOTAL, "each message once: {got:?}");
    assert_eq!(
        unique.into_iter().cloned().collect::<Vec<_>>(),
        sent,
        "{got:?}"
    );
    assert!(
        got.iter().all(|received| !received.is_empty()),
        "both members get some: {got:?}"
    );
    // Each member sees its share in publish order.
    for received in &got {
        let mine: Vec<String> = received.iter().map(payload).collect();
        let mut sorted = mine.clone();
        sorted.sort();
        assert_eq!(mine, sorted);
    }
    let all_plain: Vec<String> = everyone.messages(TOTAL, STEP);
    assert_eq!(all_plain.iter().map(payload).collect::<Vec<_>>(), sent);
}
