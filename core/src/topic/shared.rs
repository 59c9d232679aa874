//! Shared subscriptions (`$share/{group}/{filter}`): groups, their members, and the choice of
//! the one member that gets each message.
//!
//! A shared subscription is identified by its share name and its filter together: `$share/g/a/+`
//! and `$share/g/a/#` are two shared subscriptions, each delivering every matching message once.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use super::hash::mix64;

/// How the member of a shared subscription that receives a message is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SharedStrategy {
    /// Members in turn, per shared subscription.
    #[default]
    RoundRobin,
    /// A member drawn by the xorshift generator of the [`Matches`](super::Matches) buffer.
    Random,
    /// A member chosen by a hash of the publisher's client id: a publisher sticks to one
    /// member while the membership stays the same.
    HashByPublisher,
}

/// One member of a shared subscription.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member {
    pub(crate) subscriber: u32,
    /// Options and subscription identifier, packed as in the trie's records.
    pub(crate) packed: u32,
}

/// A shared subscription: its share name, its record in the shared tree, its members.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) name: Box<str>,
    pub(crate) record: u32,
    pub(crate) members: Vec<Member>,
    /// Round-robin position. Atomic so that matching needs only `&self`; a race between two
    /// workers can give one member two messages in a row, which round robin tolerates.
    cursor: AtomicU32,
}

impl Group {
    pub(crate) fn new(name: &str, record: u32) -> Self {
        Group {
            name: Box::from(name),
            record,
            members: Vec::new(),
            cursor: AtomicU32::new(0),
        }
    }

    /// The member that gets the next message. `members` is never empty for a live group.
    pub(crate) fn choose(
        &self,
        strategy: SharedStrategy,
        rng: &mut u64,
        publisher_hash: u32,
    ) -> Option<&Member> {
        let count = self.members.len() as u64;
        if count == 0 {
            return None;
        }
        let index = match strategy {
            SharedStrategy::RoundRobin => {
                let turn = self.cursor.load(Ordering::Relaxed);
                self.cursor
                    .store(turn.wrapping_add(1) % count as u32, Ordering::Relaxed);
                u64::from(turn) % count
            }
            SharedStrategy::Random => (u64::from(xorshift32(rng)) * count) >> 32,
            SharedStrategy::HashByPublisher => u64::from(publisher_hash) % count,
        };
        self.members.get(index as usize)
    }
}

/// One step of xorshift64*, returning 32 good bits; `state` must not be zero.
pub(crate) fn xorshift32(state: &mut u64) -> u32 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
}

/// The hash that makes [`SharedStrategy::HashByPublisher`] sticky: FNV-1a of the client id,
/// finalized so that the low bits are usable.
pub(crate) fn publisher_hash(client_id: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in client_id.bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    mix64(u64::from(hash)) as u32
}
