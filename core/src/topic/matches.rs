//! The reusable output of [`SubscriptionIndex::matches`](super::SubscriptionIndex::matches).

use alloc::vec::Vec;

use super::trie::{RETAIN_AS_PUBLISHED, SubscriberId, unpack_qos};
use crate::types::QoS;

/// Who published the message being matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Publisher<'a> {
    /// The publishing session, for No Local; `None` for messages of the broker itself.
    pub id: Option<SubscriberId>,
    /// The publisher's client id, for [`SharedStrategy::HashByPublisher`](super::SharedStrategy).
    pub client_id: &'a str,
}

/// One copy of the message to send.
///
/// For a non-shared delivery, the options are merged over all of the subscriber's subscriptions
/// matching the topic, which MQTT delivers as one message:
/// - `qos` is the highest of their QoS `[MQTT-3.3.4-2]` (3.1.1: `[MQTT-3.3.5-1]`); the engine
///   sends `min(message QoS, qos)`;
/// - `retain_as_published` is true when any of them asks for it (the message is sent once, so
///   the most faithful flag wins);
/// - No Local has already been applied: a subscription with No Local does not match its own
///   client's publications, so it contributes neither QoS nor identifier;
/// - the subscription identifiers are those of all of them `[MQTT-3.3.4-3]`, `[MQTT-3.3.4-4]`,
///   without duplicates ([`Matches::identifiers`]).
///
/// A shared delivery carries the options of the chosen member's one subscription. It is not
/// merged with the member's non-shared delivery: MQTT 5 section 4.8.2 sends both copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The session that gets the copy.
    pub subscriber: SubscriberId,
    /// The highest QoS granted by the matching subscriptions.
    pub qos: QoS,
    /// Keep the RETAIN flag as published (else clear it).
    pub retain_as_published: bool,
    /// True for a copy chosen from a shared subscription.
    pub shared: bool,
    /// The first subscription identifier (0 = none); more in the owning [`Matches`].
    identifier: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    epoch: u32,
    delivery: u32,
}

/// A reusable buffer for the result of matching one topic, so that the hot path does not
/// allocate: keep one per worker and pass it to every match; it grows to the largest result and
/// stays there.
///
/// It also holds the xorshift state of [`SharedStrategy::Random`](super::SharedStrategy).
#[derive(Debug)]
pub struct Matches {
    deliveries: Vec<Delivery>,
    /// Identifiers beyond a delivery's first: `(delivery index, identifier)`.
    extra_identifiers: Vec<(u32, u32)>,
    /// Per subscriber id: the delivery made for it in the current match.
    seen: Vec<Seen>,
    epoch: u32,
    levels: Vec<u32>,
    stack: Vec<(u32, u32)>,
    rng: u64,
    /// The walks of recently matched topics, so that a topic published again (telemetry sends
    /// the same few topics over and over) skips hashing its levels and walking the trees.
    /// Empty until the first match (idle brokers do not pay for it); then
    /// [`WALK_CACHE_SLOTS`] slots, direct-mapped by the topic's hash.
    walks: Vec<CachedWalk>,
}

/// Slots of the walk cache ([`Matches`]' `walks`). 32 holds the topics of a
/// few dozen steady publishers; a miss costs a walk plus copying the topic and the list heads.
const WALK_CACHE_SLOTS: usize = 32;

/// Topics longer than this are not cached (their walk dominates the copy anyway, and the slots
/// stay small).
const WALK_CACHE_MAX_TOPIC: usize = 256;

/// What walking the trees found for one topic: the list heads to visit, valid while the index
/// that made them is unchanged ([`WalkStamp`]).
#[derive(Debug, Default)]
pub(crate) struct CachedWalk {
    stamp: WalkStamp,
    topic: Vec<u8>,
    /// List heads of the non-shared tree.
    pub(crate) direct: Vec<u32>,
    /// List heads of the shared tree (groups).
    pub(crate) shared: Vec<u32>,
}

/// Which index, in which version, made a [`CachedWalk`]: the index's unique id and its count of
/// changes. The default (id 0) is never an index's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WalkStamp {
    pub(crate) index: u32,
    pub(crate) changes: u64,
}

impl Default for Matches {
    fn default() -> Self {
        Matches::new(0x853c_49e6_748f_ea9b)
    }
}

impl Matches {
    /// An empty buffer whose random member choice is seeded by `seed`.
    pub fn new(seed: u64) -> Self {
        Matches {
            deliveries: Vec::new(),
            extra_identifiers: Vec::new(),
            seen: Vec::new(),
            epoch: 0,
            levels: Vec::new(),
            stack: Vec::new(),
            walks: Vec::new(),
            rng: if seed == 0 {
                0x9e37_79b9_7f4a_7c15
            } else {
                seed
            },
        }
    }

    /// The copies to send, non-shared ones first.
    pub fn deliveries(&self) -> &[Delivery] {
        &self.deliveries
    }

    /// Number of copies to send.
    pub fn len(&self) -> usize {
        self.deliveries.len()
    }

    /// True when nobody gets the message.
    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty()
    }

    /// The subscription identifiers to put in the copy `deliveries()[index]`.
    pub fn identifiers(&self, index: usize) -> SubscriptionIdentifiers<'_> {
        SubscriptionIdentifiers {
            first: self.deliveries.get(index).map_or(0, |d| d.identifier),
            index: index as u32,
            extra: self.extra_identifiers.iter(),
        }
    }

    pub(crate) fn begin(&mut self) {
        self.deliveries.clear();
        self.extra_identifiers.clear();
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.seen.fill(Seen::default());
            self.epoch = 1;
        }
    }

    /// The cached walk of `topic` made by the index in version `stamp` (`Ok`), or a slot to
    /// record a fresh walk in (`Err`, cleared and stamped; or `None` when `topic` is too long
    /// to cache), with the collector to fill.
    #[allow(clippy::type_complexity)]
    pub(crate) fn walk_parts(
        &mut self,
        stamp: WalkStamp,
        topic: &str,
        hash: u32,
    ) -> (
        Result<&CachedWalk, Option<&mut CachedWalk>>,
        &mut Vec<u32>,
        &mut Vec<(u32, u32)>,
        Collector<'_>,
    ) {
        let slot = if topic.len() > WALK_CACHE_MAX_TOPIC {
            Err(None)
        } else {
            let slots = &mut self.walks;
            if slots.is_empty() {
                slots.resize_with(WALK_CACHE_SLOTS, CachedWalk::default);
            }
            let walk = &mut slots[hash as usize % WALK_CACHE_SLOTS];
            if walk.stamp == stamp && walk.topic == topic.as_bytes() {
                Ok(&*walk)
            } else {
                walk.stamp = stamp;
                walk.topic.clear();
                walk.topic.extend_from_slice(topic.as_bytes());
                walk.direct.clear();
                walk.shared.clear();
                Err(Some(walk))
            }
        };
        (
            slot,
            &mut self.levels,
            &mut self.stack,
            Collector {
                deliveries: &mut self.deliveries,
                extra_identifiers: &mut self.extra_identifiers,
                seen: &mut self.seen,
                epoch: self.epoch,
                rng: &mut self.rng,
            },
        )
    }
}

/// Mutable access to the parts of [`Matches`] that the walk fills.
pub(crate) struct Collector<'a> {
    deliveries: &'a mut Vec<Delivery>,
    extra_identifiers: &'a mut Vec<(u32, u32)>,
    seen: &'a mut Vec<Seen>,
    epoch: u32,
    rng: &'a mut u64,
}

impl Collector<'_> {
    /// Adds a matching non-shared subscription of `subscriber`, merging it into the
    /// subscriber's delivery when there is one already.
    #[inline]
    pub(crate) fn merge(&mut self, subscriber: u32, packed: u32) {
        let slot = subscriber as usize;
        if slot >= self.seen.len() {
            self.seen.resize(slot + 1, Seen::default());
        }
        let seen = &mut self.seen[slot];
        let qos = unpack_qos(packed);
        let retain_as_published = packed & RETAIN_AS_PUBLISHED != 0;
        let identifier = packed >> 4;
        if seen.epoch != self.epoch {
            seen.epoch = self.epoch;
            seen.delivery = self.deliveries.len() as u32;
            self.deliveries.push(Delivery {
                subscriber: SubscriberId(subscriber),
                qos,
                retain_as_published,
                shared: false,
                identifier,
            });
            return;
        }
        let index = seen.delivery;
        let delivery = &mut self.deliveries[index as usize];
        delivery.qos = delivery.qos.max(qos);
        delivery.retain_as_published |= retain_as_published;
        if identifier == 0 || identifier == delivery.identifier {
            return;
        }
        if delivery.identifier == 0 {
            delivery.identifier = identifier;
        } else if !self.extra_identifiers.contains(&(index, identifier)) {
            self.extra_identifiers.push((index, identifier));
        }
    }

    /// Adds the copy for the chosen member of a shared subscription.
    pub(crate) fn push_shared(&mut self, subscriber: u32, packed: u32) {
        self.deliveries.push(Delivery {
            subscriber: SubscriberId(subscriber),
            qos: unpack_qos(packed),
            retain_as_published: packed & RETAIN_AS_PUBLISHED != 0,
            shared: true,
            identifier: packed >> 4,
        });
    }

    pub(crate) fn rng(&mut self) -> &mut u64 {
        self.rng
    }
}

/// The subscription identifiers of one delivery, in no particular order.
#[derive(Debug, Clone)]
pub struct SubscriptionIdentifiers<'a> {
    first: u32,
    index: u32,
    extra: core::slice::Iter<'a, (u32, u32)>,
}

impl Iterator for SubscriptionIdentifiers<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.first != 0 {
            return Some(core::mem::take(&mut self.first));
        }
        let index = self.index;
        self.extra
            .find(|&&(of, _)| of == index)
            .map(|&(_, identifier)| identifier)
    }
}
