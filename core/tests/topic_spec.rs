//! Normative statements of MQTT 3.1.1 and 5.0 about topics, subscriptions and retained
//! messages, by statement id.
//!
//! Chapter 4.7 numbers its statements differently in the two versions:
//! - names without wildcards: 3.1.1 `[MQTT-4.7.1-1]`, 5.0 `[MQTT-4.7.0-1]`;
//! - `#` alone and last: 3.1.1 `[MQTT-4.7.1-2]`, 5.0 `[MQTT-4.7.1-1]`;
//! - `+` a whole level: 3.1.1 `[MQTT-4.7.1-3]`, 5.0 `[MQTT-4.7.1-2]`;
//! - `[MQTT-4.7.2-1]` and `[MQTT-4.7.3-1..4]` are the same in both.
//!
//! Both versions are checked by the same code, so each test names both ids.

use femtomq_core::limits::Limits;
use femtomq_core::topic::{
    Filter, Matches, Publisher, RetainedIndex, SharedStrategy, SubscribeError, SubscribeOutcome,
    SubscriberId, SubscriptionIndex, TopicError, filter_matches, parse_filter, validate_filter,
    validate_name,
};
use femtomq_core::{QoS, SubscriptionOptions};

const A: SubscriberId = SubscriberId(1);
const B: SubscriberId = SubscriberId(2);
const C: SubscriberId = SubscriberId(3);

fn index() -> SubscriptionIndex {
    SubscriptionIndex::new(&Limits::default(), SharedStrategy::RoundRobin, 7)
}

fn qos(level: u8) -> SubscriptionOptions {
    SubscriptionOptions::with_qos(QoS::from_u8(level).unwrap_or_default())
}

/// The subscribers (sorted) that `index` delivers `topic` to.
fn receivers(index: &SubscriptionIndex, topic: &str) -> Vec<u32> {
    let mut out = Matches::default();
    index.matches(topic, Publisher::default(), &mut out);
    let mut ids: Vec<u32> = out.deliveries().iter().map(|d| d.subscriber.0).collect();
    ids.sort_unstable();
    ids
}

fn matches_one(filter: &str, topic: &str) -> bool {
    let mut index = index();
    index
        .subscribe(A, filter, qos(0), None)
        .unwrap_or_else(|e| panic!("{filter}: {e:?}"));
    let by_index = !receivers(&index, topic).is_empty();
    assert_eq!(
        by_index,
        filter_matches(filter, topic),
        "{filter} vs {topic}"
    );
    by_index
}

#[test]
fn mqtt_4_7_1_1_v311_4_7_0_1_v5_no_wildcards_in_topic_names() {
    for name in ["+", "#", "a/+", "a/#", "a/b+", "a#", "sport/tennis/+/x"] {
        assert_eq!(
            validate_name(name),
            Err(TopicError::WildcardInName),
            "{name}"
        );
    }
    for name in ["a", "a/b", "/", "a//b", "$SYS/x", "sp ort", "añ/日本"] {
        assert_eq!(validate_name(name), Ok(()), "{name}");
    }
}

#[test]
fn mqtt_4_7_1_2_v311_4_7_1_1_v5_multi_level_wildcard_alone_and_last() {
    for filter in ["#", "a/#", "/#", "+/#", "a/b/c/#"] {
        assert_eq!(validate_filter(filter), Ok(()), "{filter}");
    }
    for filter in ["a#", "a/#/b", "#/a", "a/b#", "##", "a/#/"] {
        assert_eq!(
            validate_filter(filter),
            Err(TopicError::MisplacedMultiLevelWildcard),
            "{filter}"
        );
    }
    // `#` matches the parent level and any number of child levels.
    assert!(matches_one(
        "sport/tennis/player1/#",
        "sport/tennis/player1"
    ));
    assert!(matches_one(
        "sport/tennis/player1/#",
        "sport/tennis/player1/ranking"
    ));
    assert!(matches_one(
        "sport/tennis/player1/#",
        "sport/tennis/player1/score/wimbledon"
    ));
    assert!(matches_one("sport/#", "sport"));
    assert!(matches_one("#", "a/b/c"));
    assert!(!matches_one("sport/tennis/#", "sport"));
}

#[test]
fn mqtt_4_7_1_3_v311_4_7_1_2_v5_single_level_wildcard_a_whole_level() {
    for filter in ["+", "+/tennis/#", "sport/+/player1", "+/+", "/+", "+/"] {
        assert_eq!(validate_filter(filter), Ok(()), "{filter}");
    }
    for filter in ["sport+", "sport/+x", "a/++", "+a/b"] {
        assert_eq!(
            validate_filter(filter),
            Err(TopicError::MisplacedSingleLevelWildcard),
            "{filter}"
        );
    }
    assert!(matches_one("sport/tennis/+", "sport/tennis/player1"));
    assert!(matches_one("sport/tennis/+", "sport/tennis/player2"));
    assert!(!matches_one(
        "sport/tennis/+",
        "sport/tennis/player1/ranking"
    ));
    assert!(!matches_one("sport/+", "sport"));
    assert!(matches_one("sport/+", "sport/"));
    // Empty levels are levels: `+` matches them.
    assert!(matches_one("+/+", "/finance"));
    assert!(matches_one("/+", "/finance"));
    assert!(!matches_one("+", "/finance"));
}

#[test]
fn mqtt_4_7_2_1_dollar_topics_not_matched_by_leading_wildcard() {
    assert!(!matches_one("#", "$SYS/broker/clients"));
    assert!(!matches_one("+/monitor/Clients", "$SYS/monitor/Clients"));
    assert!(!matches_one("+", "$SYS"));
    assert!(matches_one("$SYS/#", "$SYS/monitor/Clients"));
    assert!(matches_one("$SYS/monitor/+", "$SYS/monitor/Clients"));
    assert!(matches_one("$SYS", "$SYS"));
    // Only the first level is special.
    assert!(matches_one("a/+", "a/$b"));
    assert!(matches_one("a/#", "a/$b/c"));

    let mut retained = RetainedIndex::new(&Limits::default(), 3);
    for topic in ["$SYS/uptime", "a/b", "$other"] {
        retained.retain(topic, topic.as_bytes().to_vec()).unwrap();
    }
    let found = |filter: &str| {
        let mut topics = Vec::new();
        retained.for_each_match(filter, |m: &Vec<u8>| topics.push(m.clone()));
        topics.sort();
        topics
    };
    assert_eq!(found("#"), vec![b"a/b".to_vec()]);
    assert_eq!(found("+"), Vec::<Vec<u8>>::new());
    assert_eq!(found("+/b"), vec![b"a/b".to_vec()]);
    assert_eq!(found("$SYS/#"), vec![b"$SYS/uptime".to_vec()]);
    assert_eq!(found("$other"), vec![b"$other".to_vec()]);
}

#[test]
fn mqtt_4_7_3_1_names_and_filters_at_least_one_character() {
    assert_eq!(validate_name(""), Err(TopicError::Empty));
    assert_eq!(validate_filter(""), Err(TopicError::Empty));
    let mut index = index();
    assert_eq!(
        index.subscribe(A, "", qos(0), None),
        Err(SubscribeError::InvalidFilter(TopicError::Empty))
    );
}

#[test]
fn mqtt_4_7_3_2_no_null_character() {
    assert_eq!(validate_name("a/\0"), Err(TopicError::NullCharacter));
    assert_eq!(validate_filter("a/\0/#"), Err(TopicError::NullCharacter));
    assert_eq!(
        validate_filter("$share/g\0/a"),
        Err(TopicError::NullCharacter)
    );
}

#[test]
fn mqtt_4_7_3_3_at_most_65535_bytes() {
    let longest = "a".repeat(65_535);
    let too_long = "a".repeat(65_536);
    assert_eq!(validate_name(&longest), Ok(()));
    assert_eq!(validate_filter(&longest), Ok(()));
    assert_eq!(validate_name(&too_long), Err(TopicError::TooLong));
    assert_eq!(validate_filter(&too_long), Err(TopicError::TooLong));
}

#[test]
fn mqtt_4_7_3_4_no_normalization_when_matching() {
    assert!(!matches_one("a/b", "A/b"));
    assert!(!matches_one("a/b", "a/b/"));
    assert!(!matches_one("a/b", "/a/b"));
    assert!(!matches_one("a//b", "a/b"));
    assert!(matches_one("a//b", "a//b"));
    assert!(!matches_one("caf\u{e9}", "cafe\u{301}"));
    assert!(!matches_one("a b", "a  b"));
}

#[test]
fn mqtt_4_8_2_1_share_name_at_least_one_character() {
    assert_eq!(
        validate_filter("$share//a"),
        Err(TopicError::InvalidSharedSubscription)
    );
    assert_eq!(
        validate_filter("$share/"),
        Err(TopicError::InvalidSharedSubscription)
    );
    assert_eq!(
        parse_filter("$share/g/a/+"),
        Ok(Filter {
            share_group: Some("g"),
            filter: "a/+"
        })
    );
    // `$share` without the slash is an ordinary filter.
    assert_eq!(
        parse_filter("$shared/a"),
        Ok(Filter {
            share_group: None,
            filter: "$shared/a"
        })
    );
}

#[test]
fn mqtt_4_8_2_2_share_name_without_wildcards_followed_by_slash_and_filter() {
    for filter in [
        "$share/g+/a",
        "$share/#/a",
        "$share/+/a",
        "$share/g",
        "$share/g/",
    ] {
        assert_eq!(
            validate_filter(filter),
            Err(TopicError::InvalidSharedSubscription),
            "{filter}"
        );
    }
    assert_eq!(
        validate_filter("$share/g/a/#/b"),
        Err(TopicError::MisplacedMultiLevelWildcard)
    );
    for filter in ["$share/g/#", "$share/g/+", "$share/g//", "$share/g/$SYS/x"] {
        assert_eq!(validate_filter(filter), Ok(()), "{filter}");
    }
}

#[test]
fn mqtt_4_8_2_shared_subscription_delivers_to_one_member_per_message() {
    let mut index = index();
    for member in [A, B, C] {
        index
            .subscribe(member, "$share/g/a/+", qos(1), None)
            .unwrap();
    }
    let mut out = Matches::default();
    let mut counts = [0; 4];
    for _ in 0..30 {
        index.matches("a/x", Publisher::default(), &mut out);
        assert_eq!(out.len(), 1);
        assert!(out.deliveries()[0].shared);
        counts[out.deliveries()[0].subscriber.0 as usize] += 1;
    }
    assert_eq!(counts, [0, 10, 10, 10], "round robin");
    // The leading `+` of the inner filter follows [MQTT-4.7.2-1] too.
    let mut index = self::index();
    index.subscribe(A, "$share/g/#", qos(0), None).unwrap();
    assert!(receivers(&index, "$SYS/x").is_empty());
    assert_eq!(receivers(&index, "x"), vec![1]);
}

#[test]
fn mqtt_4_8_2_shared_and_non_shared_subscriptions_each_get_a_copy() {
    let mut index = index();
    index.subscribe(A, "$share/g/a/b", qos(1), None).unwrap();
    index.subscribe(A, "a/b", qos(0), None).unwrap();
    index.subscribe(B, "$share/h/a/#", qos(2), None).unwrap();
    index.subscribe(B, "$share/g/a/#", qos(2), None).unwrap();
    assert_eq!(receivers(&index, "a/b"), vec![1, 1, 2, 2]);
}

#[test]
fn mqtt_3_3_4_2_v5_3_3_5_1_v311_highest_qos_of_overlapping_subscriptions() {
    let mut index = index();
    index.subscribe(A, "a/#", qos(0), None).unwrap();
    index.subscribe(A, "a/+", qos(2), None).unwrap();
    index.subscribe(A, "a/b", qos(1), None).unwrap();
    index.subscribe(B, "#", qos(1), None).unwrap();
    let mut out = Matches::default();
    index.matches("a/b", Publisher::default(), &mut out);
    let mut deliveries = out.deliveries().to_vec();
    deliveries.sort_by_key(|d| d.subscriber);
    assert_eq!(deliveries.len(), 2, "one copy per subscriber");
    assert_eq!(deliveries[0].subscriber, A);
    assert_eq!(deliveries[0].qos, QoS::ExactlyOnce);
    assert_eq!(deliveries[1].qos, QoS::AtLeastOnce);
}

#[test]
fn mqtt_3_3_4_3_and_3_3_4_4_all_subscription_identifiers_of_overlapping_subscriptions() {
    let mut index = index();
    index.subscribe(A, "a/#", qos(0), Some(10)).unwrap();
    index.subscribe(A, "a/+", qos(0), Some(20)).unwrap();
    index.subscribe(A, "+/b", qos(0), None).unwrap();
    index.subscribe(A, "a/b", qos(0), Some(30)).unwrap();
    index.subscribe(A, "#", qos(0), Some(10)).unwrap();
    index.subscribe(B, "a/b", qos(0), Some(5)).unwrap();
    index.subscribe(C, "a/b", qos(0), None).unwrap();
    let mut out = Matches::default();
    index.matches("a/b", Publisher::default(), &mut out);
    assert_eq!(out.len(), 3);
    for (at, delivery) in out.deliveries().iter().enumerate() {
        let mut ids: Vec<u32> = out.identifiers(at).collect();
        ids.sort_unstable();
        let expected: &[u32] = match delivery.subscriber {
            A => &[10, 20, 30],
            B => &[5],
            _ => &[],
        };
        assert_eq!(ids, expected, "{delivery:?}");
    }
    // [MQTT-3.3.4-5] a shared copy carries the identifier of its one subscription.
    let mut index = self::index();
    index.subscribe(A, "$share/g/a/b", qos(0), Some(7)).unwrap();
    index.matches("a/b", Publisher::default(), &mut out);
    assert_eq!(out.identifiers(0).collect::<Vec<_>>(), vec![7]);
}

#[test]
fn mqtt_3_8_4_3_identical_filter_replaces_the_subscription() {
    let mut index = index();
    assert_eq!(
        index.subscribe(A, "a/+", qos(2), Some(1)),
        Ok(SubscribeOutcome::New)
    );
    assert_eq!(
        index.subscribe(A, "a/+", qos(0), Some(2)),
        Ok(SubscribeOutcome::Replaced)
    );
    assert_eq!(index.subscriptions_of(A), 1);
    assert_eq!(index.len(), 1);
    let mut out = Matches::default();
    index.matches("a/b", Publisher::default(), &mut out);
    assert_eq!(out.deliveries()[0].qos, QoS::AtMostOnce);
    assert_eq!(out.identifiers(0).collect::<Vec<_>>(), vec![2]);
    // Another client's identical filter is its own subscription.
    assert_eq!(
        index.subscribe(B, "a/+", qos(0), None),
        Ok(SubscribeOutcome::New)
    );
    // A shared membership is replaced the same way.
    assert_eq!(
        index.subscribe(A, "$share/g/a/+", qos(1), None),
        Ok(SubscribeOutcome::New)
    );
    assert_eq!(
        index.subscribe(A, "$share/g/a/+", qos(2), Some(9)),
        Ok(SubscribeOutcome::Replaced)
    );
    assert_eq!(index.len(), 3);
}

#[test]
fn mqtt_3_8_3_3_no_local_skips_own_publications() {
    let mut index = index();
    let no_local = SubscriptionOptions {
        no_local: true,
        ..qos(2)
    };
    index.subscribe(A, "a/#", no_local, Some(1)).unwrap();
    index.subscribe(A, "a/b", qos(1), Some(2)).unwrap();
    index.subscribe(B, "a/#", no_local, None).unwrap();
    let mut out = Matches::default();
    let from_a = Publisher {
        id: Some(A),
        client_id: "a",
    };
    index.matches("a/b", from_a, &mut out);
    let mut deliveries = out.deliveries().to_vec();
    deliveries.sort_by_key(|d| d.subscriber);
    // A still gets it through its other subscription, with that one's QoS and identifier only.
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[0].qos, QoS::AtLeastOnce);
    let at = out
        .deliveries()
        .iter()
        .position(|d| d.subscriber == A)
        .unwrap();
    assert_eq!(out.identifiers(at).collect::<Vec<_>>(), vec![2]);
    index.matches("a/c", from_a, &mut out);
    assert_eq!(out.deliveries().len(), 1);
    assert_eq!(out.deliveries()[0].subscriber, B);
}

#[test]
fn mqtt_3_8_3_4_no_local_on_shared_subscription_is_a_protocol_error() {
    let mut index = index();
    let no_local = SubscriptionOptions {
        no_local: true,
        ..qos(0)
    };
    let error = index.subscribe(A, "$share/g/a", no_local, None);
    assert_eq!(error, Err(SubscribeError::NoLocalOnSharedSubscription));
    assert_eq!(
        SubscribeError::NoLocalOnSharedSubscription.reason_code(),
        0x82
    );
    assert_eq!(index.node_count(), 0);
}

#[test]
fn retain_as_published_merges_as_any_of_the_overlapping_subscriptions() {
    let mut index = index();
    let keep = SubscriptionOptions {
        retain_as_published: true,
        ..qos(0)
    };
    index.subscribe(A, "a/+", keep, None).unwrap();
    index.subscribe(A, "a/b", qos(0), None).unwrap();
    index.subscribe(B, "a/b", qos(0), None).unwrap();
    let mut out = Matches::default();
    index.matches("a/b", Publisher::default(), &mut out);
    for delivery in out.deliveries() {
        assert_eq!(delivery.retain_as_published, delivery.subscriber == A);
    }
}

#[test]
fn subscription_identifier_range() {
    let mut index = index();
    for bad in [0, 268_435_456, u32::MAX] {
        assert_eq!(
            index.subscribe(A, "a", qos(0), Some(bad)),
            Err(SubscribeError::InvalidSubscriptionIdentifier)
        );
    }
    assert!(index.subscribe(A, "a", qos(0), Some(268_435_455)).is_ok());
    let mut out = Matches::default();
    index.matches("a", Publisher::default(), &mut out);
    assert_eq!(out.identifiers(0).collect::<Vec<_>>(), vec![268_435_455]);
}

#[test]
fn mqtt_3_10_4_unsubscribe_removes_only_that_filter() {
    let mut index = index();
    index.subscribe(A, "a/+", qos(0), None).unwrap();
    index.subscribe(A, "a/#", qos(0), None).unwrap();
    index.subscribe(B, "a/+", qos(0), None).unwrap();
    assert!(index.unsubscribe(A, "a/+"));
    assert!(!index.unsubscribe(A, "a/+"), "0x11 No subscription existed");
    assert!(!index.unsubscribe(C, "a/+"));
    assert!(!index.unsubscribe(A, "a/b"));
    assert_eq!(receivers(&index, "a/b"), vec![1, 2]);
    assert!(index.unsubscribe(A, "a/#"));
    assert_eq!(receivers(&index, "a/b"), vec![2]);
}

#[test]
fn shared_member_that_leaves_stops_receiving_at_once() {
    for strategy in [
        SharedStrategy::RoundRobin,
        SharedStrategy::Random,
        SharedStrategy::HashByPublisher,
    ] {
        let mut index = SubscriptionIndex::new(&Limits::default(), strategy, 1);
        for member in [A, B, C] {
            index.subscribe(member, "$share/g/t", qos(0), None).unwrap();
        }
        assert!(index.unsubscribe(B, "$share/g/t"));
        index.unsubscribe_all(C);
        let mut out = Matches::new(42);
        for n in 0..50 {
            let client_id = format!("client-{n}");
            let publisher = Publisher {
                id: None,
                client_id: &client_id,
            };
            index.matches("t", publisher, &mut out);
            assert_eq!(out.len(), 1, "{strategy:?}");
            assert_eq!(out.deliveries()[0].subscriber, A, "{strategy:?}");
        }
        index.unsubscribe_all(A);
        index.matches("t", Publisher::default(), &mut out);
        assert!(out.is_empty());
        assert_eq!(index.node_count(), 0);
        assert_eq!(index.shared_group_count(), 0);
    }
}

#[test]
fn shared_strategies_spread_and_stick() {
    let mut index = SubscriptionIndex::new(&Limits::default(), SharedStrategy::Random, 1);
    for member in 0..4 {
        index
            .subscribe(SubscriberId(member), "$share/g/t/#", qos(0), None)
            .unwrap();
    }
    let mut out = Matches::new(99);
    let mut counts = [0u32; 4];
    for _ in 0..4000 {
        index.matches("t/x", Publisher::default(), &mut out);
        counts[out.deliveries()[0].subscriber.0 as usize] += 1;
    }
    assert!(
        counts.iter().all(|&c| (800..1200).contains(&c)),
        "{counts:?}"
    );

    index.set_strategy(SharedStrategy::HashByPublisher);
    let mut seen = std::collections::BTreeSet::new();
    for n in 0..64 {
        let client_id = format!("sensor-{n}");
        let publisher = Publisher {
            id: None,
            client_id: &client_id,
        };
        index.matches("t/x", publisher, &mut out);
        let first = out.deliveries()[0].subscriber;
        for _ in 0..5 {
            index.matches("t/y", publisher, &mut out);
            assert_eq!(out.deliveries()[0].subscriber, first, "sticky");
        }
        seen.insert(first);
    }
    assert_eq!(seen.len(), 4, "different publishers spread over members");
}

#[test]
fn unsubscribe_all_removes_every_subscription_of_a_session() {
    let mut index = index();
    for filter in ["a", "a/#", "+/b", "$share/g/a/b", "$share/h/#"] {
        index.subscribe(A, filter, qos(1), None).unwrap();
    }
    index.subscribe(B, "$share/g/a/b", qos(1), None).unwrap();
    index.subscribe(B, "a/#", qos(1), None).unwrap();
    assert_eq!(index.unsubscribe_all(A), 5);
    assert_eq!(index.unsubscribe_all(A), 0);
    assert_eq!(index.subscriptions_of(A), 0);
    assert_eq!(index.len(), 2);
    assert_eq!(receivers(&index, "a/b"), vec![2, 2]);
    assert_eq!(index.unsubscribe_all(B), 2);
    assert_eq!(index.node_count(), 0);
}

#[test]
fn retained_store_replace_delete_and_wildcard_lookup() {
    let mut retained: RetainedIndex<Vec<u8>> = RetainedIndex::new(&Limits::default(), 9);
    assert_eq!(retained.retain("a/b", b"1".to_vec()), Ok(None));
    // [MQTT-3.3.1-5] replaces the retained message of the topic.
    assert_eq!(
        retained.retain("a/b", b"22".to_vec()),
        Ok(Some(b"1".to_vec()))
    );
    assert_eq!(retained.get("a/b"), Some(&b"22".to_vec()));
    retained.retain("a", b"top".to_vec()).unwrap();
    retained.retain("a/c/d", b"deep".to_vec()).unwrap();
    retained.retain("/", b"slash".to_vec()).unwrap();
    assert_eq!(retained.len(), 4);
    assert_eq!(retained.bytes(), (3 + 2) + (1 + 3) + (5 + 4) + (1 + 5));

    let found = |retained: &RetainedIndex<Vec<u8>>, filter: &str| {
        let mut found = Vec::new();
        let count = retained.for_each_match(filter, |m| {
            found.push(String::from_utf8_lossy(m).into_owned())
        });
        assert_eq!(count, found.len());
        found.sort();
        found
    };
    assert_eq!(found(&retained, "a/#"), ["22", "deep", "top"]);
    assert_eq!(found(&retained, "a/+"), ["22"]);
    assert_eq!(found(&retained, "+/+"), ["22", "slash"]);
    assert_eq!(found(&retained, "#"), ["22", "deep", "slash", "top"]);
    assert_eq!(found(&retained, "+/c/#"), ["deep"]);
    assert_eq!(found(&retained, "a/b"), ["22"]);
    assert_eq!(found(&retained, "x/#"), Vec::<String>::new());
    assert_eq!(found(&retained, "$share/g/#"), Vec::<String>::new());

    // [MQTT-3.3.1-6] an empty payload deletes, and is not stored [MQTT-3.3.1-7].
    assert_eq!(retained.retain("a/b", Vec::new()), Ok(Some(b"22".to_vec())));
    assert_eq!(retained.retain("never", Vec::new()), Ok(None));
    assert_eq!(retained.get("a/b"), None);
    assert_eq!(found(&retained, "a/#"), ["deep", "top"]);
    for topic in ["a", "a/c/d", "/"] {
        assert!(retained.remove(topic).is_some());
    }
    assert!(retained.is_empty());
    assert_eq!(retained.bytes(), 0);
    assert_eq!(retained.node_count(), 0);
}
