//! Topic index benchmark: lookups per second and heap bytes per subscription of the
//! subscription trie with 10k, 100k and 1M subscriptions shaped like an IoT tree, side by side
//! with a naive linear matcher over the same subscriptions, and the cost of a wildcard lookup in
//! a retained index of 100k topics, side by side with a naive linear scan of the same topics.
//!
//! Run: `cargo bench -p femtomq-core --bench topic`. Prints medians of 7 samples; results are
//! recorded in BENCHMARKS.md. Memory is counted by a `#[global_allocator]` that forwards to
//! `System` and keeps a running total of requested bytes (allocator overhead not included).

// The counting allocator below is the only unsafe code: `GlobalAlloc` is an unsafe trait.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use femtomq_core::limits::Limits;
use femtomq_core::topic::{
    Matches, Publisher, RetainedIndex, SharedStrategy, SubscriberId, SubscriptionIndex,
    filter_matches,
};
use femtomq_core::{QoS, SubscriptionOptions};

/// `System`, plus a count of the bytes currently allocated.
struct CountingAllocator;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwards to System with the caller's layout, under the caller's guarantees.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwards to System with the caller's layout, under the caller's guarantees.
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: forwards to System the block it allocated, with the layout it was given.
        unsafe { System.dealloc(pointer, layout) };
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwards to System the block it allocated, with its layout and the new size.
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
            ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        moved
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocated() -> usize {
    ALLOCATED.load(Ordering::Relaxed)
}

const SAMPLES: usize = 7;
const SITES: u64 = 100;

/// xorshift64: deterministic workloads without an RNG crate.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// Devices per site so that exact filters mostly name distinct devices.
fn devices_per_site(subscriptions: usize) -> u64 {
    (subscriptions as u64 / SITES).max(10)
}

/// Subscription `i` of the IoT mix: one `site/{s}/#` and one `site/{s}/+/+/alarm` per site
/// (dashboards), then 60% `site/{s}/device/{d}/telemetry`, 10% `.../status`, 15% one device's
/// subtree `site/{s}/device/{d}/#` and 15% one device id on every site `site/+/device/{d}/#`.
/// The fan-out per topic stays about the same at every size (about 17 copies).
fn iot_filter(i: usize, rng: &mut Rng, devices: u64) -> String {
    let i = i as u64;
    if i < 2 * SITES {
        return if i % 2 == 0 {
            format!("site/{}/#", i / 2)
        } else {
            format!("site/{}/+/+/alarm", i / 2)
        };
    }
    let site = rng.below(SITES);
    let device = rng.below(devices);
    match rng.below(100) {
        0..=59 => format!("site/{site}/device/{device}/telemetry"),
        60..=69 => format!("site/{site}/device/{device}/status"),
        70..=84 => format!("site/{site}/device/{device}/#"),
        _ => format!("site/+/device/{device}/#"),
    }
}

fn iot_topic(rng: &mut Rng, devices: u64) -> String {
    let site = rng.below(SITES);
    let device = rng.below(devices);
    let leaf = ["telemetry", "status", "alarm"][rng.below(3) as usize];
    format!("site/{site}/device/{device}/{leaf}")
}

/// Median seconds of `SAMPLES` runs of `run`.
fn median_seconds(mut run: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64()
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[SAMPLES / 2]
}

/// The naive matcher: every subscription checked against the topic, one copy per subscriber.
struct LinearMatcher {
    subscriptions: Vec<(SubscriberId, String, QoS)>,
}

impl LinearMatcher {
    fn matches(&self, topic: &str, out: &mut Vec<(SubscriberId, QoS)>) {
        out.clear();
        for (subscriber, filter, qos) in &self.subscriptions {
            if filter_matches(filter, topic) {
                match out.iter_mut().find(|(who, _)| who == subscriber) {
                    Some(delivery) => delivery.1 = delivery.1.max(*qos),
                    None => out.push((*subscriber, *qos)),
                }
            }
        }
    }
}

/// The naive retained store: every retained topic checked against the filter.
struct LinearRetained {
    messages: Vec<(String, &'static [u8])>,
}

impl LinearRetained {
    fn for_each_match(&self, filter: &str, mut visit: impl FnMut(&&'static [u8])) -> usize {
        let mut visited = 0;
        for (topic, message) in &self.messages {
            if filter_matches(filter, topic) {
                visit(message);
                visited += 1;
            }
        }
        visited
    }
}

fn bench_subscriptions(count: usize) {
    let devices = devices_per_site(count);
    let limits = Limits {
        max_subscriptions_per_client: u32::MAX,
        max_subscriptions_total: u32::MAX,
        ..Limits::default()
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let filters: Vec<(SubscriberId, String)> = (0..count)
        .map(|i| {
            (
                SubscriberId((i / 4) as u32),
                iot_filter(i, &mut rng, devices),
            )
        })
        .collect();
    let topics: Vec<String> = (0..4096).map(|_| iot_topic(&mut rng, devices)).collect();
    let options = SubscriptionOptions::with_qos(QoS::AtLeastOnce);

    let before = allocated();
    let start = Instant::now();
    let mut index = SubscriptionIndex::new(&limits, SharedStrategy::RoundRobin, 0x5eed);
    for (subscriber, filter) in &filters {
        let _ = index.subscribe(*subscriber, filter, options, None);
    }
    let build = start.elapsed().as_secs_f64();
    let trie_bytes = allocated() - before;

    let before = allocated();
    let linear = LinearMatcher {
        subscriptions: filters
            .iter()
            .map(|(subscriber, filter)| (*subscriber, filter.clone(), QoS::AtLeastOnce))
            .collect(),
    };
    let linear_bytes = allocated() - before;

    let mut out = Matches::default();
    let lookups = 200_000;
    let mut delivered = 0usize;
    let trie_seconds = median_seconds(|| {
        delivered = 0;
        for topic in topics.iter().cycle().take(lookups) {
            index.matches(black_box(topic), Publisher::default(), &mut out);
            delivered += black_box(out.len());
        }
    });
    let trie_rate = lookups as f64 / trie_seconds;

    let linear_lookups = (20_000_000 / count).clamp(20, 2_000);
    let mut linear_out = Vec::new();
    let mut linear_delivered = 0usize;
    let linear_seconds = median_seconds(|| {
        linear_delivered = 0;
        for topic in topics.iter().take(linear_lookups) {
            linear.matches(black_box(topic), &mut linear_out);
            linear_delivered += black_box(linear_out.len());
        }
    });
    let linear_rate = linear_lookups as f64 / linear_seconds;

    // Both matchers agree on the sample.
    let mut expected = Vec::new();
    for topic in topics.iter().take(50) {
        index.matches(topic, Publisher::default(), &mut out);
        linear.matches(topic, &mut expected);
        assert_eq!(out.len(), expected.len(), "{topic}");
    }

    println!(
        "| {:>9} | {:>7.1} | {:>9.0} | {:>5.2} | {:>12.0} | {:>5.0} | {:>11.0} | {:>8.0}x | {:>7.2} | {:>8.0} |",
        count,
        trie_bytes as f64 / count as f64,
        index.node_count() as f64,
        delivered as f64 / lookups as f64,
        trie_rate,
        trie_seconds * 1e9 / delivered.max(1) as f64,
        linear_rate,
        trie_rate / linear_rate,
        build * 1e3 / count as f64 * 1e3,
        linear_bytes as f64 / count as f64,
    );
    drop(linear);
    drop(index);
}

fn bench_retained() {
    let count = 100_000usize;
    let devices = 500u64;
    let limits = Limits {
        max_retained_messages: u32::MAX,
        max_retained_bytes: u32::MAX,
        ..Limits::default()
    };
    let topics: Vec<String> = (0..SITES)
        .flat_map(|site| {
            (0..devices).flat_map(move |device| {
                ["status", "telemetry"].map(|leaf| format!("site/{site}/device/{device}/{leaf}"))
            })
        })
        .collect();
    let before = allocated();
    let mut retained: RetainedIndex<&'static [u8]> = RetainedIndex::new(&limits, 0x5eed);
    // 100 sites x 500 devices x {status, telemetry}: 100k distinct topics.
    for topic in &topics {
        let _ = retained.retain(topic, b"21.5");
    }
    assert_eq!(retained.len(), count);
    let bytes = allocated() - before;

    let before = allocated();
    let linear = LinearRetained {
        messages: topics
            .iter()
            .map(|topic| (topic.clone(), &b"21.5"[..]))
            .collect(),
    };
    let linear_bytes = allocated() - before;
    drop(topics);

    println!(
        "\nRetained index: {count} topics, {:.1} heap bytes per retained topic (index only, payload not copied), {} nodes; linear Vec: {:.1} heap bytes per topic\n",
        bytes as f64 / count as f64,
        retained.node_count(),
        linear_bytes as f64 / count as f64,
    );
    println!(
        "| filter | messages | µs per lookup | ns per message | linear µs per lookup | factor |"
    );
    println!(
        "|--------|---------:|--------------:|---------------:|---------------------:|-------:|"
    );
    for filter in [
        "site/42/device/317/status",
        "site/42/device/+/status",
        "site/+/device/317/telemetry",
        "site/42/#",
        "+/+/device/7/+",
        "#",
    ] {
        let mut visited = 0;
        let repeat = if filter == "#" { 5 } else { 50 };
        let seconds = median_seconds(|| {
            for _ in 0..repeat {
                visited = retained.for_each_match(black_box(filter), |message| {
                    black_box(message);
                });
            }
        }) / repeat as f64;

        // Every lookup scans all topics, so fewer repetitions suffice.
        let linear_repeat = if filter == "#" { 2 } else { 5 };
        let mut linear_visited = 0;
        let linear_seconds = median_seconds(|| {
            for _ in 0..linear_repeat {
                linear_visited = linear.for_each_match(black_box(filter), |message| {
                    black_box(message);
                });
            }
        }) / linear_repeat as f64;
        assert_eq!(visited, linear_visited, "{filter}");

        let factor = linear_seconds / seconds;
        // One decimal for small factors, so `#` (both visit everything) does not round to 1x.
        let decimals = if factor < 10.0 { 1 } else { 0 };
        println!(
            "| `{filter}` | {visited} | {:.1} | {:.0} | {:.1} | {factor:.decimals$}x |",
            seconds * 1e6,
            seconds * 1e9 / visited.max(1) as f64,
            linear_seconds * 1e6,
        );
    }
}

fn main() {
    println!(
        "Subscription trie: IoT mix, 4 subscriptions per client, lookups cycle over 4,096 topics\n"
    );
    println!(
        "| subscriptions | trie B/sub | nodes | copies/lookup | trie lookups/s | ns/copy | linear lookups/s | factor | µs/subscribe | linear B/sub |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for count in [10_000, 100_000, 1_000_000] {
        bench_subscriptions(count);
    }
    bench_retained();
}
