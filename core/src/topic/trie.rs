//! The subscription trie: topic filters to subscribers, shared groups included.
//!
//! Layout (see `tree.rs` for the nodes): each subscription is a 20-byte record in one arena,
//! linked into a doubly linked list hanging off the node of its filter (`exact`, or `multi` for
//! a filter ending in `#`), so that subscribing, unsubscribing and matching never allocate per
//! subscription beyond the record and its entry in the subscriber's list (4 bytes). Shared
//! subscriptions live in a second tree whose lists hold one record per group; the group holds
//! its members.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use super::hash::{Interner, NONE, hash_str};
use super::matches::{CachedWalk, Matches, Publisher, WalkStamp};
use super::shared::{Group, Member, SharedStrategy};
use super::tree::{ROOT, Step, Tree};
use super::validate::{Filter, TopicError, check_filter, parse_filter};
use crate::limits::Limits;
use crate::types::{QoS, SubscriptionOptions};

/// A subscriber (a session), named by the engine.
///
/// Ids index arrays in the trie and in [`Matches`]: the engine should hand out small, dense ids
/// and reuse those of ended sessions, because memory is proportional to the largest id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SubscriberId(pub u32);

/// The largest subscription identifier MQTT allows (a variable byte integer).
pub const MAX_SUBSCRIPTION_IDENTIFIER: u32 = 268_435_455;

/// What [`SubscriptionIndex::subscribe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeOutcome {
    /// A new subscription was added.
    New,
    /// The client already had a subscription with this filter; its options and identifier were
    /// replaced `[MQTT-3.8.4-3]` (Retain Handling 1 then sends no retained messages).
    Replaced,
}

/// Why a subscription was refused. [`SubscribeError::reason_code`] is the MQTT 5 code to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeError {
    /// The filter is invalid or exceeds the length or level bounds: SUBACK 0x8F.
    InvalidFilter(TopicError),
    /// The client has [`Limits::max_subscriptions_per_client`] subscriptions: SUBACK 0x97.
    ClientQuotaExceeded,
    /// The broker has [`Limits::max_subscriptions_total`] subscriptions: SUBACK 0x97.
    TotalQuotaExceeded,
    /// No Local on a shared subscription is a Protocol Error `[MQTT-3.8.3-4]`: DISCONNECT 0x82.
    NoLocalOnSharedSubscription,
    /// A subscription identifier of 0 or above 268,435,455: DISCONNECT 0x82 Protocol Error.
    InvalidSubscriptionIdentifier,
}

impl SubscribeError {
    /// The MQTT 5 reason code for this refusal (SUBACK for codes 0x8F and 0x97, DISCONNECT for
    /// 0x82). MQTT 3.1.1 clients get the SUBACK failure code 0x80 instead.
    pub const fn reason_code(self) -> u8 {
        match self {
            SubscribeError::InvalidFilter(_) => 0x8F,
            SubscribeError::ClientQuotaExceeded | SubscribeError::TotalQuotaExceeded => 0x97,
            SubscribeError::NoLocalOnSharedSubscription
            | SubscribeError::InvalidSubscriptionIdentifier => 0x82,
        }
    }
}

impl From<TopicError> for SubscribeError {
    fn from(error: TopicError) -> Self {
        SubscribeError::InvalidFilter(error)
    }
}

// Packed options: bits 0-1 QoS, bit 2 No Local, bit 3 Retain As Published, bits 4-31 the
// subscription identifier (0 = none; identifiers are 28-bit).
pub(crate) const NO_LOCAL: u32 = 1 << 2;
pub(crate) const RETAIN_AS_PUBLISHED: u32 = 1 << 3;

const fn pack(options: SubscriptionOptions, identifier: u32) -> u32 {
    let mut packed = (identifier << 4) | options.qos as u32;
    if options.no_local {
        packed |= NO_LOCAL;
    }
    if options.retain_as_published {
        packed |= RETAIN_AS_PUBLISHED;
    }
    packed
}

pub(crate) const fn unpack_qos(packed: u32) -> QoS {
    match packed & 3 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// The `node` field of a record for a filter ending in `#`.
const MULTI_BIT: u32 = 1 << 31;
/// A subscriber's reference to a shared membership (else to a record).
const SHARED_BIT: u32 = 1 << 31;

/// One subscription (or one shared group, in the shared tree), in a list of its node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record {
    /// The subscriber, or the group in the shared tree.
    pub(crate) owner: u32,
    /// The node, with [`MULTI_BIT`] for a `#` filter.
    node: u32,
    /// The next record of the list (for a free record: the next free one).
    pub(crate) next: u32,
    prev: u32,
    /// Options and identifier; unused for groups.
    pub(crate) packed: u32,
}

/// The subscriptions of all sessions: subscribe, unsubscribe, and match a topic name.
///
/// Matching takes `&self` (and a per-caller [`Matches`] buffer), so workers can share one index
/// behind a read lock; the round-robin cursors of shared groups are relaxed atomics.
#[derive(Debug)]
pub struct SubscriptionIndex {
    labels: Interner,
    direct: Tree,
    shared: Tree,
    records: Vec<Record>,
    free_record: u32,
    groups: Vec<Option<Group>>,
    free_groups: Vec<u32>,
    live_groups: usize,
    /// Per subscriber id: record ids, or [`SHARED_BIT`] | group id.
    subscribers: Vec<Vec<u32>>,
    total: u32,
    limits: Limits,
    strategy: SharedStrategy,
    /// Unique among the indexes of the process: tells [`Matches`]' cached walks of this index
    /// from another's.
    id: u32,
    /// Changes to the trees so far: a cached walk is valid while this has not moved.
    changes: u64,
    /// Seeds the topic hash that places a walk in the cache.
    seed: u64,
}

/// Ids of [`SubscriptionIndex`]es (0 is never one).
static NEXT_INDEX_ID: AtomicU32 = AtomicU32::new(1);

/// Splits a filter proper into its path (without a trailing `#`) and whether it ends in `#`.
fn filter_path(filter: &str) -> (impl Iterator<Item = Step<'_>> + Clone, bool) {
    let (prefix, multi) = if filter == "#" {
        (None, true)
    } else if let Some(prefix) = filter.strip_suffix("/#") {
        (Some(prefix), true)
    } else {
        (Some(filter), false)
    };
    let steps = prefix
        .into_iter()
        .flat_map(|prefix| prefix.split('/'))
        .map(Step::of);
    (steps, multi)
}

fn list_head(tree: &mut Tree, node_field: u32) -> &mut u32 {
    let node = tree.node_mut(node_field & !MULTI_BIT);
    if node_field & MULTI_BIT != 0 {
        &mut node.multi
    } else {
        &mut node.exact
    }
}

impl SubscriptionIndex {
    /// An empty index bounded by `limits`, choosing shared-group members by `strategy`.
    /// `seed` keys the hash tables; give a random value (from the port) so that clients cannot
    /// aim hash collisions at the broker.
    pub fn new(limits: &Limits, strategy: SharedStrategy, seed: u64) -> Self {
        SubscriptionIndex {
            labels: Interner::new(seed),
            direct: Tree::new(seed, false),
            shared: Tree::new(seed.rotate_left(17), false),
            records: Vec::new(),
            free_record: NONE,
            groups: Vec::new(),
            free_groups: Vec::new(),
            live_groups: 0,
            subscribers: Vec::new(),
            total: 0,
            limits: *limits,
            strategy,
            id: match NEXT_INDEX_ID.fetch_add(1, Ordering::Relaxed) {
                0 => NEXT_INDEX_ID.fetch_add(1, Ordering::Relaxed),
                id => id,
            },
            changes: 0,
            seed: seed.rotate_left(41),
        }
    }

    /// The shared-subscription strategy in use.
    pub fn strategy(&self) -> SharedStrategy {
        self.strategy
    }

    /// Changes the shared-subscription strategy (on configuration reload).
    pub fn set_strategy(&mut self, strategy: SharedStrategy) {
        self.strategy = strategy;
    }

    /// Subscriptions of all subscribers, shared memberships included.
    pub fn len(&self) -> usize {
        self.total as usize
    }

    /// True when nobody subscribes to anything.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Subscriptions of one subscriber, shared memberships included.
    pub fn subscriptions_of(&self, subscriber: SubscriberId) -> usize {
        self.subscribers
            .get(subscriber.0 as usize)
            .map_or(0, Vec::len)
    }

    /// Live trie nodes (both trees, roots excluded): zero again once every subscription is gone.
    pub fn node_count(&self) -> usize {
        self.direct.node_count() + self.shared.node_count()
    }

    /// Live shared subscriptions (groups with at least one member).
    pub fn shared_group_count(&self) -> usize {
        self.live_groups
    }

    /// Adds the subscription of `subscriber` to `filter` (a `$share/` filter joins the group),
    /// or replaces the options and identifier of its existing one with the same filter.
    ///
    /// `identifier` is the MQTT 5 Subscription Identifier (1..=268,435,455).
    pub fn subscribe(
        &mut self,
        subscriber: SubscriberId,
        filter: &str,
        options: SubscriptionOptions,
        identifier: Option<u32>,
    ) -> Result<SubscribeOutcome, SubscribeError> {
        self.changes += 1;
        let parsed = check_filter(filter, &self.limits)?;
        if parsed.share_group.is_some() && options.no_local {
            return Err(SubscribeError::NoLocalOnSharedSubscription);
        }
        let identifier = match identifier {
            None => 0,
            Some(id @ 1..=MAX_SUBSCRIPTION_IDENTIFIER) => id,
            Some(_) => return Err(SubscribeError::InvalidSubscriptionIdentifier),
        };
        let packed = pack(options, identifier);
        if let Some(reference) = self.find_reference(subscriber, parsed) {
            let entry = self.subscribers[subscriber.0 as usize][reference];
            if entry & SHARED_BIT != 0 {
                if let Some(group) = self.groups[(entry & !SHARED_BIT) as usize].as_mut() {
                    for member in group.members.iter_mut() {
                        if member.subscriber == subscriber.0 {
                            member.packed = packed;
                        }
                    }
                }
            } else {
                self.records[entry as usize].packed = packed;
            }
            return Ok(SubscribeOutcome::Replaced);
        }
        if self.subscriptions_of(subscriber) >= self.limits.max_subscriptions_per_client as usize {
            return Err(SubscribeError::ClientQuotaExceeded);
        }
        if self.total >= self.limits.max_subscriptions_total.min(SHARED_BIT - 1) {
            return Err(SubscribeError::TotalQuotaExceeded);
        }
        let (path, multi) = filter_path(parsed.filter);
        let entry = match parsed.share_group {
            None => {
                let node = self.direct.insert(&mut self.labels, path);
                let node_field = node | if multi { MULTI_BIT } else { 0 };
                let record = self.allocate_record(subscriber.0, node_field, packed);
                Self::link(&mut self.direct, &mut self.records, record);
                record
            }
            Some(name) => {
                let node = self.shared.insert(&mut self.labels, path);
                let node_field = node | if multi { MULTI_BIT } else { 0 };
                let group = match self.find_group(node_field, name) {
                    Some(group) => group,
                    None => self.create_group(node_field, name),
                };
                if let Some(group) = self.groups[group as usize].as_mut() {
                    group.members.push(Member {
                        subscriber: subscriber.0,
                        packed,
                    });
                }
                SHARED_BIT | group
            }
        };
        let index = subscriber.0 as usize;
        if index >= self.subscribers.len() {
            self.subscribers.resize_with(index + 1, Vec::new);
        }
        self.subscribers[index].push(entry);
        self.total += 1;
        Ok(SubscribeOutcome::New)
    }

    /// Removes the subscription of `subscriber` to `filter` (leaving the group for a `$share/`
    /// filter); false when there was none (UNSUBACK 0x11 No subscription existed).
    /// A removed shared member gets no further message.
    pub fn unsubscribe(&mut self, subscriber: SubscriberId, filter: &str) -> bool {
        self.changes += 1;
        let Ok(parsed) = parse_filter(filter) else {
            return false;
        };
        let Some(reference) = self.find_reference(subscriber, parsed) else {
            return false;
        };
        let entry = self.subscribers[subscriber.0 as usize].swap_remove(reference);
        self.remove_entry(subscriber.0, entry);
        true
    }

    /// Removes every subscription of `subscriber` (when its session ends) and returns how many.
    pub fn unsubscribe_all(&mut self, subscriber: SubscriberId) -> usize {
        self.changes += 1;
        let Some(entries) = self.subscribers.get_mut(subscriber.0 as usize) else {
            return 0;
        };
        let entries = core::mem::take(entries);
        for &entry in &entries {
            self.remove_entry(subscriber.0, entry);
        }
        entries.len()
    }

    /// Finds the subscribers of the topic name `topic` (valid, as the codec checks it) into `out`.
    ///
    /// `out` then lists each subscriber with a matching non-shared subscription once, with the
    /// options merged over its overlapping subscriptions (see [`Matches`]), followed by one
    /// chosen member per matching shared subscription. A subscription with No Local does not
    /// match the publications of `publisher.id` `[MQTT-3.8.3-3]`.
    pub fn matches(&self, topic: &str, publisher: Publisher<'_>, out: &mut Matches) {
        out.begin();
        if self.total == 0 {
            return;
        }
        let stamp = WalkStamp {
            index: self.id,
            changes: self.changes,
        };
        let hash = hash_str(self.seed, topic);
        let (cached, levels, stack, mut collector) = out.walk_parts(stamp, topic, hash);
        let mut fresh = CachedWalk::default();
        let heads: &CachedWalk = match cached {
            Ok(cached) => cached,
            Err(slot) => {
                let slot = slot.unwrap_or(&mut fresh);
                levels.clear();
                levels.extend(super::levels(topic).map(|level| self.labels.find(level)));
                let dollar = topic.starts_with('$');
                walk(&self.direct, levels, dollar, stack, |head| {
                    slot.direct.push(head)
                });
                if self.live_groups != 0 {
                    walk(&self.shared, levels, dollar, stack, |head| {
                        slot.shared.push(head)
                    });
                }
                slot
            }
        };
        let publisher_id = publisher.id.map_or(NONE, |id| id.0);
        for &head in &heads.direct {
            let mut record = head;
            while record != NONE {
                let Record {
                    owner,
                    next,
                    packed,
                    ..
                } = self.records[record as usize];
                if !(packed & NO_LOCAL != 0 && owner == publisher_id) {
                    collector.merge(owner, packed);
                }
                record = next;
            }
        }
        if self.live_groups == 0 {
            return;
        }
        let publisher_hash = match self.strategy {
            SharedStrategy::HashByPublisher => super::shared::publisher_hash(publisher.client_id),
            _ => 0,
        };
        for &head in &heads.shared {
            let mut record = head;
            while record != NONE {
                let Record { owner, next, .. } = self.records[record as usize];
                if let Some(group) = self.groups[owner as usize].as_ref() {
                    let rng = collector.rng();
                    if let Some(member) = group.choose(self.strategy, rng, publisher_hash) {
                        collector.push_shared(member.subscriber, member.packed);
                    }
                }
                record = next;
            }
        }
    }

    /// The position in the subscriber's list of its subscription to `filter`.
    fn find_reference(&self, subscriber: SubscriberId, filter: Filter<'_>) -> Option<usize> {
        let entries = self.subscribers.get(subscriber.0 as usize)?;
        let (path, multi) = filter_path(filter.filter);
        let multi_bit = if multi { MULTI_BIT } else { 0 };
        match filter.share_group {
            None => {
                let node = self.direct.find(&self.labels, path);
                if node == NONE {
                    return None;
                }
                let wanted = node | multi_bit;
                entries.iter().position(|&entry| {
                    entry & SHARED_BIT == 0 && self.records[entry as usize].node == wanted
                })
            }
            Some(name) => {
                let node = self.shared.find(&self.labels, path);
                if node == NONE {
                    return None;
                }
                let group = self.find_group(node | multi_bit, name)?;
                entries
                    .iter()
                    .position(|&entry| entry == SHARED_BIT | group)
            }
        }
    }

    fn find_group(&self, node_field: u32, name: &str) -> Option<u32> {
        let node = self.shared.node(node_field & !MULTI_BIT);
        let mut record = if node_field & MULTI_BIT != 0 {
            node.multi
        } else {
            node.exact
        };
        while record != NONE {
            let Record { owner, next, .. } = self.records[record as usize];
            if let Some(group) = self.groups[owner as usize].as_ref() {
                if &*group.name == name {
                    return Some(owner);
                }
            }
            record = next;
        }
        None
    }

    fn create_group(&mut self, node_field: u32, name: &str) -> u32 {
        let id = match self.free_groups.pop() {
            Some(id) => id,
            None => {
                self.groups.push(None);
                (self.groups.len() - 1) as u32
            }
        };
        let record = self.allocate_record(id, node_field, 0);
        Self::link(&mut self.shared, &mut self.records, record);
        self.groups[id as usize] = Some(Group::new(name, record));
        self.live_groups += 1;
        id
    }

    fn remove_entry(&mut self, subscriber: u32, entry: u32) {
        self.total -= 1;
        if entry & SHARED_BIT == 0 {
            let node = self.records[entry as usize].node & !MULTI_BIT;
            Self::unlink(&mut self.direct, &mut self.records, entry);
            self.free_record(entry);
            self.direct.prune(&mut self.labels, node);
            return;
        }
        let id = entry & !SHARED_BIT;
        let Some(group) = self.groups[id as usize].as_mut() else {
            return;
        };
        group
            .members
            .retain(|member| member.subscriber != subscriber);
        if !group.members.is_empty() {
            return;
        }
        let record = group.record;
        self.groups[id as usize] = None;
        self.free_groups.push(id);
        self.live_groups -= 1;
        let node = self.records[record as usize].node & !MULTI_BIT;
        Self::unlink(&mut self.shared, &mut self.records, record);
        self.free_record(record);
        self.shared.prune(&mut self.labels, node);
    }

    fn allocate_record(&mut self, owner: u32, node: u32, packed: u32) -> u32 {
        let record = Record {
            owner,
            node,
            next: NONE,
            prev: NONE,
            packed,
        };
        if self.free_record != NONE {
            let id = self.free_record;
            self.free_record = self.records[id as usize].next;
            self.records[id as usize] = record;
            id
        } else {
            self.records.push(record);
            (self.records.len() - 1) as u32
        }
    }

    fn free_record(&mut self, id: u32) {
        let record = &mut self.records[id as usize];
        record.owner = NONE;
        record.node = NONE;
        record.prev = NONE;
        record.next = self.free_record;
        self.free_record = id;
    }

    /// Puts `record` at the head of its node's list.
    fn link(tree: &mut Tree, records: &mut [Record], record: u32) {
        let head = list_head(tree, records[record as usize].node);
        let old = *head;
        *head = record;
        records[record as usize].next = old;
        records[record as usize].prev = NONE;
        if old != NONE {
            records[old as usize].prev = record;
        }
    }

    fn unlink(tree: &mut Tree, records: &mut [Record], record: u32) {
        let Record {
            node, next, prev, ..
        } = records[record as usize];
        if prev != NONE {
            records[prev as usize].next = next;
        } else {
            *list_head(tree, node) = next;
        }
        if next != NONE {
            records[next as usize].prev = prev;
        }
    }
}

/// Visits the list heads of every filter of `tree` matching the topic whose interned levels are
/// `levels`: a depth-first walk following, at each level, the literal child, the `+` child and
/// the `#` list. Wildcards are not followed at the first level of a `$` topic `[MQTT-4.7.2-1]`.
#[inline]
fn walk(
    tree: &Tree,
    levels: &[u32],
    dollar: bool,
    stack: &mut Vec<(u32, u32)>,
    mut visit: impl FnMut(u32),
) {
    stack.clear();
    stack.push((ROOT, 0));
    while let Some((id, depth)) = stack.pop() {
        let node = tree.node(id);
        let Some(&label) = levels.get(depth as usize) else {
            // All levels consumed: filters ending here, and `a/#` which matches `a`.
            if node.exact != NONE {
                visit(node.exact);
            }
            if node.multi != NONE {
                visit(node.multi);
            }
            continue;
        };
        if !(dollar && depth == 0) {
            if node.multi != NONE {
                visit(node.multi);
            }
            if node.plus != NONE {
                stack.push((node.plus, depth + 1));
            }
        }
        if label != NONE {
            let child = tree.child(id, label);
            if child != NONE {
                stack.push((child, depth + 1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receivers(index: &SubscriptionIndex, topic: &str, out: &mut Matches) -> Vec<u32> {
        index.matches(topic, Publisher::default(), out);
        let mut ids: Vec<u32> = out.deliveries().iter().map(|d| d.subscriber.0).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn cached_walks_follow_every_change_of_the_index() {
        let limits = Limits::default();
        let options = SubscriptionOptions::with_qos(QoS::AtLeastOnce);
        let mut index = SubscriptionIndex::new(&limits, SharedStrategy::RoundRobin, 9);
        let mut out = Matches::default();
        let topic = "site/1/device/7";
        index
            .subscribe(SubscriberId(1), "site/+/device/7", options, None)
            .unwrap();
        assert_eq!(receivers(&index, topic, &mut out), [1]);
        // Same topic again: served from the cache.
        assert_eq!(receivers(&index, topic, &mut out), [1]);
        index
            .subscribe(SubscriberId(2), "site/#", options, None)
            .unwrap();
        assert_eq!(receivers(&index, topic, &mut out), [1, 2]);
        index
            .subscribe(SubscriberId(3), "$share/g/site/1/#", options, None)
            .unwrap();
        assert_eq!(receivers(&index, topic, &mut out), [1, 2, 3]);
        assert!(index.unsubscribe(SubscriberId(1), "site/+/device/7"));
        assert_eq!(receivers(&index, topic, &mut out), [2, 3]);
        assert_eq!(index.unsubscribe_all(SubscriberId(2)), 1);
        assert_eq!(receivers(&index, topic, &mut out), [3]);
        // Another index with the same seed and the same history does not use this one's walks.
        let mut other = SubscriptionIndex::new(&limits, SharedStrategy::RoundRobin, 9);
        other
            .subscribe(SubscriberId(4), "site/1/device/7", options, None)
            .unwrap();
        for _ in 0..4 {
            other
                .subscribe(SubscriberId(4), "site/1/device/7", options, None)
                .unwrap();
        }
        assert_eq!(receivers(&other, topic, &mut out), [4]);
        assert_eq!(receivers(&index, topic, &mut out), [3]);
        // Topics too long to cache still match.
        let long = alloc::format!("site/1/{}", "x".repeat(300));
        index
            .subscribe(SubscriberId(5), "site/1/+", options, None)
            .unwrap();
        assert_eq!(receivers(&index, &long, &mut out), [3, 5]);
        assert_eq!(receivers(&index, &long, &mut out), [3, 5]);
    }

    #[test]
    fn records_stay_compact() {
        assert_eq!(core::mem::size_of::<Record>(), 20);
    }

    #[test]
    fn options_round_trip_through_packing() {
        let options = SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: true,
            ..SubscriptionOptions::default()
        };
        let packed = pack(options, MAX_SUBSCRIPTION_IDENTIFIER);
        assert_eq!(unpack_qos(packed), QoS::ExactlyOnce);
        assert_ne!(packed & NO_LOCAL, 0);
        assert_ne!(packed & RETAIN_AS_PUBLISHED, 0);
        assert_eq!(packed >> 4, MAX_SUBSCRIPTION_IDENTIFIER);
    }
}
