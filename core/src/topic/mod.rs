//! Topic names and filters: validation, matching, the subscription trie, shared subscriptions
//! and the retained-message index.
//!
//! - [`validate_name`], [`validate_filter`] (used by the codec), [`check_name`] and
//!   [`check_filter`] (the same plus the bounds of [`Limits`](crate::limits::Limits)),
//!   [`parse_filter`] and [`filter_matches`]: always available, no allocation.
//! - [`SubscriptionIndex`]: filters to [`SubscriberId`]s with their options and subscription
//!   identifiers, `$share/` groups with a [`SharedStrategy`]; [`SubscriptionIndex::matches`]
//!   fills a reusable [`Matches`] with one [`Delivery`] per recipient.
//! - [`RetainedIndex`]: the last retained message of each topic, generic over the message.
//!
//! # Storage
//!
//! The indexes need the `alloc` feature (on by default). They grow with what sessions subscribe
//! and publish, up to bounds that the configuration sets at run time, so caller-provided fixed
//! storage would have to be sized for the worst case of every bound at once, or the index would
//! need a second, capacity-generic implementation; the bounds in [`Limits`](crate::limits::Limits)
//! keep the heap use a function of the configuration instead. The codec, which is bounded per
//! packet, needs no allocator and builds without the feature.
//!
//! Memory stays small per subscription: one arena of 24-byte nodes addressed by `u32`, one hash
//! table of 8-byte slots for all parent-to-child edges (no per-node child container), level
//! strings interned once with a reference count, and a 20-byte record per subscription plus
//! 4 bytes in its subscriber's list. Nodes, records and labels are freed with their last user.
//! `BENCHMARKS.md` has the measured bytes per subscription.

#[cfg(feature = "alloc")]
mod hash;
#[cfg(feature = "alloc")]
mod matches;
#[cfg(feature = "alloc")]
mod retained;
#[cfg(feature = "alloc")]
mod shared;
#[cfg(feature = "alloc")]
mod tree;
#[cfg(feature = "alloc")]
mod trie;
mod validate;

#[cfg(feature = "alloc")]
pub use matches::{Delivery, Matches, Publisher, SubscriptionIdentifiers};
#[cfg(feature = "alloc")]
pub use retained::{RetainError, RetainedIndex, RetainedMessage};
#[cfg(feature = "alloc")]
pub use shared::SharedStrategy;
#[cfg(feature = "alloc")]
pub use trie::{
    MAX_SUBSCRIPTION_IDENTIFIER, SubscribeError, SubscribeOutcome, SubscriberId, SubscriptionIndex,
};
pub use validate::{
    Filter, PROTOCOL_MAX_TOPIC_LENGTH, SHARE_PREFIX, TopicError, check_filter, check_name,
    filter_matches, is_shared, parse_filter, validate_filter, validate_name,
};
