//! The subscription trie and the retained index against a naive reference written here.

use std::collections::{BTreeMap, BTreeSet};

use femtomq_core::limits::Limits;
use femtomq_core::topic::{
    Matches, Publisher, RetainedIndex, SharedStrategy, SubscriberId, SubscriptionIndex,
};
use femtomq_core::{QoS, SubscriptionOptions};
use proptest::prelude::*;

/// The reference matcher: level by level, straight from the text of MQTT 4.7.
fn reference_matches(filter: &str, topic: &str) -> bool {
    fn rest(filter: &[&str], topic: &[&str]) -> bool {
        match (filter.split_first(), topic.split_first()) {
            (Some((&"#", _)), _) => true,
            (None, None) => true,
            (Some((&"+", f)), Some((_, t))) => rest(f, t),
            (Some((level, f)), Some((name, t))) => level == name && rest(f, t),
            _ => false,
        }
    }
    let filter: Vec<&str> = filter.split('/').collect();
    let topic: Vec<&str> = topic.split('/').collect();
    if topic[0].starts_with('$') && (filter[0] == "+" || filter[0] == "#") {
        return false;
    }
    rest(&filter, &topic)
}

fn level() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "c", "$s", "", "dev-42"])
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("empty topic", |topic| !topic.is_empty())
}

fn filter() -> impl Strategy<Value = String> {
    let part = prop_oneof![4 => level(), 2 => Just("+")];
    (
        prop::collection::vec(part, 0..5),
        any::<bool>(),
        prop::option::weighted(0.2, prop::sample::select(vec!["g", "h"])),
    )
        .prop_filter_map("empty filter", |(levels, multi, group)| {
            let mut levels: Vec<&str> = levels;
            if multi || levels.is_empty() {
                levels.push("#");
            }
            let filter = levels.join("/");
            if filter.is_empty() {
                return None;
            }
            Some(match group {
                Some(group) => format!("$share/{group}/{filter}"),
                None => filter,
            })
        })
}

#[derive(Debug, Clone)]
enum Op {
    Subscribe {
        who: u32,
        filter: String,
        qos: u8,
        id: Option<u32>,
        no_local: bool,
        rap: bool,
    },
    Unsubscribe {
        who: u32,
        filter: String,
    },
    UnsubscribeAll {
        who: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..6u32, filter(), 0..3u8, prop::option::of(1..5u32), any::<bool>(), any::<bool>())
            .prop_map(|(who, filter, qos, id, no_local, rap)| Op::Subscribe { who, filter, qos, id, no_local, rap }),
        2 => (0..6u32, filter()).prop_map(|(who, filter)| Op::Unsubscribe { who, filter }),
        1 => (0..6u32).prop_map(|who| Op::UnsubscribeAll { who }),
    ]
}

#[derive(Debug, Clone, Copy)]
struct Sub {
    qos: u8,
    id: Option<u32>,
    no_local: bool,
    rap: bool,
}

type Model = BTreeMap<(u32, String), Sub>;

fn apply(index: &mut SubscriptionIndex, model: &mut Model, op: &Op) {
    match op {
        Op::Subscribe {
            who,
            filter,
            qos,
            id,
            no_local,
            rap,
        } => {
            let options = SubscriptionOptions {
                qos: QoS::from_u8(*qos).unwrap_or_default(),
                no_local: *no_local,
                retain_as_published: *rap,
                ..SubscriptionOptions::default()
            };
            let result = index.subscribe(SubscriberId(*who), filter, options, *id);
            if filter.starts_with("$share/") && *no_local {
                assert!(result.is_err());
                return;
            }
            let existed = model
                .insert(
                    (*who, filter.clone()),
                    Sub {
                        qos: *qos,
                        id: *id,
                        no_local: *no_local,
                        rap: *rap,
                    },
                )
                .is_some();
            assert_eq!(
                result.map(|outcome| outcome == femtomq_core::topic::SubscribeOutcome::Replaced),
                Ok(existed)
            );
        }
        Op::Unsubscribe { who, filter } => {
            let existed = model.remove(&(*who, filter.clone())).is_some();
            assert_eq!(
                index.unsubscribe(SubscriberId(*who), filter),
                existed,
                "{op:?}"
            );
        }
        Op::UnsubscribeAll { who } => {
            let before = model.len();
            model.retain(|(owner, _), _| owner != who);
            assert_eq!(
                index.unsubscribe_all(SubscriberId(*who)),
                before - model.len()
            );
        }
    }
}

fn check_topic(
    index: &SubscriptionIndex,
    model: &Model,
    topic: &str,
    publisher: Option<u32>,
    out: &mut Matches,
) {
    index.matches(
        topic,
        Publisher {
            id: publisher.map(SubscriberId),
            client_id: "p",
        },
        out,
    );
    // Expected non-shared deliveries: subscriber -> (qos, retain as published, identifiers).
    let mut expected: BTreeMap<u32, (u8, bool, BTreeSet<u32>)> = BTreeMap::new();
    // Expected shared subscriptions: (group, filter) -> members.
    let mut groups: BTreeMap<(String, String), BTreeSet<u32>> = BTreeMap::new();
    for ((who, filter), sub) in model {
        if let Some(rest) = filter.strip_prefix("$share/") {
            let (group, inner) = rest.split_once('/').unwrap();
            if reference_matches(inner, topic) {
                groups
                    .entry((group.to_string(), inner.to_string()))
                    .or_default()
                    .insert(*who);
            }
            continue;
        }
        if !reference_matches(filter, topic) || (sub.no_local && publisher == Some(*who)) {
            continue;
        }
        let entry = expected.entry(*who).or_insert((0, false, BTreeSet::new()));
        entry.0 = entry.0.max(sub.qos);
        entry.1 |= sub.rap;
        entry.2.extend(sub.id);
    }
    let mut actual: BTreeMap<u32, (u8, bool, BTreeSet<u32>)> = BTreeMap::new();
    let mut shared: Vec<u32> = Vec::new();
    for (at, delivery) in out.deliveries().iter().enumerate() {
        let ids: Vec<u32> = out.identifiers(at).collect();
        let unique: BTreeSet<u32> = ids.iter().copied().collect();
        assert_eq!(ids.len(), unique.len(), "identifiers without duplicates");
        if delivery.shared {
            shared.push(delivery.subscriber.0);
            continue;
        }
        let previous = actual.insert(
            delivery.subscriber.0,
            (delivery.qos as u8, delivery.retain_as_published, unique),
        );
        assert!(previous.is_none(), "one non-shared copy per subscriber");
    }
    assert_eq!(actual, expected, "topic {topic}");
    assert_eq!(
        shared.len(),
        groups.len(),
        "one copy per shared subscription, topic {topic}"
    );
    for member in shared {
        assert!(groups.values().any(|members| members.contains(&member)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn trie_agrees_with_reference(
        ops in prop::collection::vec(op(), 1..40),
        topics in prop::collection::vec((topic(), prop::option::of(0..6u32)), 1..12),
        strategy in prop::sample::select(vec![SharedStrategy::RoundRobin, SharedStrategy::Random, SharedStrategy::HashByPublisher]),
    ) {
        let mut index = SubscriptionIndex::new(&Limits::default(), strategy, 5);
        let mut model = Model::new();
        let mut out = Matches::new(3);
        // Matching between the changes (and each topic twice) checks that the walks `out`
        // caches are not used once the index has changed.
        for op in &ops {
            apply(&mut index, &mut model, op);
            prop_assert_eq!(index.len(), model.len());
            for (topic, publisher) in &topics {
                check_topic(&index, &model, topic, *publisher, &mut out);
            }
        }
        for (topic, publisher) in &topics {
            check_topic(&index, &model, topic, *publisher, &mut out);
            check_topic(&index, &model, topic, *publisher, &mut out);
        }
        for who in 0..6 {
            index.unsubscribe_all(SubscriberId(who));
        }
        prop_assert_eq!(index.node_count(), 0);
        prop_assert_eq!(index.len(), 0);
    }

    #[test]
    fn retained_index_agrees_with_reference(
        ops in prop::collection::vec((topic(), 0..3usize), 1..40),
        filters in prop::collection::vec(filter(), 1..12),
    ) {
        let mut retained: RetainedIndex<Vec<u8>> = RetainedIndex::new(&Limits::default(), 11);
        let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (topic, payload_len) in &ops {
            // The payload names its topic, so that lookups can be compared.
            let payload = if *payload_len == 0 { Vec::new() } else { topic.repeat(*payload_len).into_bytes() };
            let previous = retained.retain(topic, payload.clone()).unwrap();
            let expected = if payload.is_empty() { model.remove(topic) } else { model.insert(topic.clone(), payload) };
            prop_assert_eq!(previous, expected);
        }
        prop_assert_eq!(retained.len(), model.len());
        for filter in &filters {
            let mut found = Vec::new();
            retained.for_each_match(filter, |message| found.push(message.clone()));
            found.sort();
            let mut expected: Vec<Vec<u8>> = if filter.starts_with("$share/") {
                Vec::new()
            } else {
                model.iter().filter(|(topic, _)| reference_matches(filter, topic)).map(|(_, m)| m.clone()).collect()
            };
            expected.sort();
            prop_assert_eq!(found, expected, "filter {}", filter);
        }
        for topic in model.keys() {
            prop_assert!(retained.remove(topic).is_some());
        }
        prop_assert_eq!(retained.node_count(), 0);
        prop_assert_eq!(retained.bytes(), 0);
    }
}
