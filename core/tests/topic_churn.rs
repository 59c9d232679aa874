//! A million subscriptions come and go: every node, record and label is freed again.

use femtomq_core::limits::Limits;
use femtomq_core::topic::{
    Matches, Publisher, RetainedIndex, SharedStrategy, SubscriberId, SubscriptionIndex,
};
use femtomq_core::{QoS, SubscriptionOptions};

/// xorshift64, so the test needs no RNG crate and replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// A random filter shaped like an IoT tree, with wildcards and shared groups now and then.
fn random_filter(rng: &mut Rng) -> String {
    let mut filter = String::new();
    if rng.below(20) == 0 {
        filter.push_str(&format!("$share/g{}/", rng.below(4)));
    }
    let depth = 1 + rng.below(6);
    for level in 0..depth {
        if level > 0 {
            filter.push('/');
        }
        match rng.below(10) {
            0 => filter.push('+'),
            1 if level == depth - 1 => filter.push('#'),
            2 if depth > 1 => {}
            3..=5 => filter.push_str(["site", "device", "telemetry", "cmd"][rng.below(4) as usize]),
            _ => filter.push_str(&format!("d{}", rng.below(5_000))),
        }
    }
    filter
}

#[test]
fn a_million_subscriptions_churn_back_to_zero_nodes() {
    let limits = Limits {
        max_subscriptions_per_client: u32::MAX,
        max_subscriptions_total: u32::MAX,
        ..Limits::default()
    };
    let mut index = SubscriptionIndex::new(&limits, SharedStrategy::RoundRobin, 0x5eed);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut live: Vec<(SubscriberId, String)> = Vec::new();
    let mut out = Matches::default();
    let options = SubscriptionOptions::with_qos(QoS::AtLeastOnce);
    let mut peak_nodes = 0;
    for round in 0..1_000_000u32 {
        let who = SubscriberId(rng.below(2_000) as u32);
        let filter = random_filter(&mut rng);
        index
            .subscribe(who, &filter, options, Some(1 + round % 1000))
            .unwrap();
        live.push((who, filter));
        // Keep about 20,000 alive: unsubscribe a random live one most of the time.
        if live.len() > 20_000 {
            let at = rng.below(live.len() as u64) as usize;
            let (who, filter) = live.swap_remove(at);
            // Several identical (who, filter) pairs may be live: the first removal removes it.
            index.unsubscribe(who, &filter);
        }
        if round % 100_000 == 0 {
            peak_nodes = peak_nodes.max(index.node_count());
            index.matches(
                "site/d1/device/d2/telemetry",
                Publisher::default(),
                &mut out,
            );
        }
        if round % 250_000 == 0 {
            // A session ends now and then.
            index.unsubscribe_all(SubscriberId(rng.below(2_000) as u32));
        }
    }
    assert!(
        peak_nodes > 10_000,
        "the churn grew a real trie: {peak_nodes}"
    );
    for (who, filter) in live.drain(..) {
        index.unsubscribe(who, &filter);
    }
    assert_eq!(index.len(), 0);
    assert_eq!(index.node_count(), 0);
    assert_eq!(index.shared_group_count(), 0);
}

#[test]
fn retained_churn_back_to_zero_nodes() {
    let limits = Limits {
        max_retained_messages: u32::MAX,
        max_retained_bytes: u32::MAX,
        ..Limits::default()
    };
    let mut retained = RetainedIndex::new(&limits, 7);
    let mut rng = Rng(99);
    let mut topics = Vec::new();
    for _ in 0..200_000 {
        let topic = format!(
            "site/s{}/device/d{}/t{}",
            rng.below(50),
            rng.below(2_000),
            rng.below(3)
        );
        let payload = if rng.below(4) == 0 {
            Vec::new()
        } else {
            vec![1u8; 8]
        };
        retained.retain(&topic, payload).unwrap();
        topics.push(topic);
    }
    assert!(retained.node_count() > 1_000);
    for topic in &topics {
        retained.remove(topic);
    }
    assert!(retained.is_empty());
    assert_eq!(retained.bytes(), 0);
    assert_eq!(retained.node_count(), 0);
}
