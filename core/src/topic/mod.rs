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
pub(crate) mod hash;
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
pub(crate) use validate::has_null_or_wildcard;
pub use validate::{
    Filter, PROTOCOL_MAX_TOPIC_LENGTH, SHARE_PREFIX, TopicError, check_filter, check_name,
    check_name_bounds, filter_matches, is_shared, parse_filter, validate_filter, validate_name,
};

/// The levels of a topic name or filter, as `topic.split('/')` yields them (an empty topic is
/// one empty level), found byte by byte: topic levels are short, and for them this loop costs a
/// fraction of `str::split`'s searcher on the publish hot path (`cargo xtask bench engine`).
pub(crate) fn levels(topic: &str) -> Levels<'_> {
    Levels { rest: Some(topic) }
}

/// Iterator of [`levels`].
pub(crate) struct Levels<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for Levels<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match rest.bytes().position(|byte| byte == b'/') {
            Some(slash) => {
                self.rest = Some(&rest[slash + 1..]);
                Some(&rest[..slash])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::levels;

    #[test]
    fn levels_split_like_str_split() {
        for topic in [
            "",
            "/",
            "a",
            "a/b",
            "/a/",
            "a//b",
            "sport/tennis/+",
            "ü/ß/€",
            "$SYS/x",
        ] {
            let ours: alloc::vec::Vec<&str> = levels(topic).collect();
            let std: alloc::vec::Vec<&str> = topic.split('/').collect();
            assert_eq!(ours, std, "{topic:?}");
        }
    }
}
