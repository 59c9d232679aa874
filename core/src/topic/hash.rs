//! The hash tables under the topic indexes: an open-addressing table of `u32` ids and the
//! interner of level strings built on it.
//!
//! `alloc` has no hash map, and a generic one would spend 16-32 bytes per entry; these tables keep
//! 8 bytes per slot (a 32-bit hash and a 32-bit id) and look the key up in the owner's arrays.
//! Hashes are seeded by the caller so that clients cannot aim collisions at a known function.

use alloc::boxed::Box;
use alloc::vec::Vec;

/// "No entry" for every `u32` index of the topic module.
pub(crate) const NONE: u32 = u32::MAX;

const EMPTY_SLOT: u64 = u64::MAX;

/// The murmur3 finalizer: a full-avalanche mix of 64 bits.
#[inline]
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// A seeded hash of a string, eight bytes per step.
#[inline]
pub(crate) fn hash_str(seed: u64, text: &str) -> u32 {
    let bytes = text.as_bytes();
    let mut hash = seed ^ (bytes.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        hash = (hash ^ u64::from_le_bytes(word))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        hash = (hash ^ tail_word(bytes, rest.len())).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    mix64(hash) as u32
}

/// The last `len` (1..=7) bytes of `bytes` in one word, read with at most two overlapping loads
/// (building the word byte by byte on the stack stalls the load that reads it back). Bytes of
/// the word beyond the tail repeat tail or earlier bytes; the length, mixed in first, tells
/// such words apart.
#[inline]
fn tail_word(bytes: &[u8], len: usize) -> u64 {
    let end = bytes.len();
    if end >= 8 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[end - 8..]);
        return u64::from_le_bytes(word) >> (8 * (8 - len));
    }
    let read4 = |at: usize| {
        let mut word = [0u8; 4];
        word.copy_from_slice(&bytes[at..at + 4]);
        u64::from(u32::from_le_bytes(word))
    };
    match len {
        4..=7 => read4(0) | (read4(len - 4) << 32),
        _ => {
            let first = u64::from(bytes[0]);
            let middle = u64::from(bytes[len / 2]);
            let last = u64::from(bytes[len - 1]);
            first | (middle << 8) | (last << 16)
        }
    }
}

/// A seeded hash of a pair of ids.
#[inline]
pub(crate) fn hash_pair(seed: u64, a: u32, b: u32) -> u32 {
    mix64(((u64::from(a) << 32) | u64::from(b)) ^ seed) as u32
}

/// Open addressing with linear probing over `(hash, id)` slots; the keys live with the owner,
/// which compares them through a closure. Load factor at most 3/4.
#[derive(Debug, Default)]
pub(crate) struct ProbeTable {
    slots: Vec<u64>,
    len: usize,
}

impl ProbeTable {
    #[inline]
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// The id whose hash is `hash` and for which `is_key` holds, or [`NONE`].
    #[inline]
    pub(crate) fn find(&self, hash: u32, mut is_key: impl FnMut(u32) -> bool) -> u32 {
        if self.slots.is_empty() {
            return NONE;
        }
        let mask = self.mask();
        let mut position = hash as usize & mask;
        loop {
            let slot = self.slots[position];
            if slot == EMPTY_SLOT {
                return NONE;
            }
            if (slot >> 32) as u32 == hash && is_key(slot as u32) {
                return slot as u32;
            }
            position = (position + 1) & mask;
        }
    }

    /// Adds `id` under `hash`; the caller knows its key is absent.
    pub(crate) fn insert(&mut self, hash: u32, id: u32) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        self.place((u64::from(hash) << 32) | u64::from(id));
        self.len += 1;
    }

    fn place(&mut self, entry: u64) {
        let mask = self.mask();
        let mut position = (entry >> 32) as usize & mask;
        while self.slots[position] != EMPTY_SLOT {
            position = (position + 1) & mask;
        }
        self.slots[position] = entry;
    }

    fn grow(&mut self) {
        self.rebuild((self.slots.len() * 2).max(8));
    }

    fn rebuild(&mut self, capacity: usize) {
        let old = core::mem::replace(&mut self.slots, alloc::vec![EMPTY_SLOT; capacity]);
        for entry in old {
            if entry != EMPTY_SLOT {
                self.place(entry);
            }
        }
    }

    /// Removes `id`, stored under `hash` (backward-shift deletion: no tombstones).
    pub(crate) fn remove(&mut self, hash: u32, id: u32) {
        if self.slots.is_empty() {
            return;
        }
        let mask = self.mask();
        let mut position = hash as usize & mask;
        loop {
            let slot = self.slots[position];
            if slot == EMPTY_SLOT {
                return;
            }
            if slot as u32 == id {
                break;
            }
            position = (position + 1) & mask;
        }
        // Shift later entries of the cluster back over the hole when their home allows it.
        let mut hole = position;
        let mut next = (hole + 1) & mask;
        loop {
            let slot = self.slots[next];
            if slot == EMPTY_SLOT {
                break;
            }
            let home = (slot >> 32) as usize & mask;
            // The entry may move into the hole unless its home lies cyclically in (hole, next].
            let stays = if hole <= next {
                hole < home && home <= next
            } else {
                hole < home || home <= next
            };
            if !stays {
                self.slots[hole] = slot;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.slots[hole] = EMPTY_SLOT;
        self.len -= 1;
        if self.len == 0 {
            self.slots = Vec::new();
        } else if self.slots.len() > 64 && self.len * 8 < self.slots.len() {
            // After a wave of removals the table gives its memory back (at an eighth full, to
            // half its size: a quarter full then, far from the next growth).
            self.rebuild(self.slots.len() / 2);
        }
    }
}

#[derive(Debug)]
struct Label {
    text: Box<str>,
    /// Nodes using this label; on the free list, the next free label.
    refs: u32,
}

/// Interned level strings with reference counts: each distinct level (`site`, `telemetry`, a
/// device id...) is stored once however many nodes use it, and freed with its last node.
#[derive(Debug)]
pub(crate) struct Interner {
    seed: u64,
    table: ProbeTable,
    labels: Vec<Label>,
    free_head: u32,
}

impl Interner {
    pub(crate) fn new(seed: u64) -> Self {
        Interner {
            seed,
            table: ProbeTable::default(),
            labels: Vec::new(),
            free_head: NONE,
        }
    }

    /// The id of `text`, or [`NONE`] when no node uses it.
    #[inline]
    pub(crate) fn find(&self, text: &str) -> u32 {
        let hash = hash_str(self.seed, text);
        self.table
            .find(hash, |id| &*self.labels[id as usize].text == text)
    }

    /// The text of a live label.
    #[inline]
    pub(crate) fn text(&self, id: u32) -> &str {
        &self.labels[id as usize].text
    }

    /// Takes a reference on `text`, interning it if needed.
    pub(crate) fn acquire(&mut self, text: &str) -> u32 {
        let hash = hash_str(self.seed, text);
        let labels = &self.labels;
        let found = self
            .table
            .find(hash, |id| &*labels[id as usize].text == text);
        if found != NONE {
            self.labels[found as usize].refs += 1;
            return found;
        }
        let label = Label {
            text: Box::from(text),
            refs: 1,
        };
        let id = if self.free_head != NONE {
            let id = self.free_head;
            self.free_head = self.labels[id as usize].refs;
            self.labels[id as usize] = label;
            id
        } else {
            self.labels.push(label);
            (self.labels.len() - 1) as u32
        };
        self.table.insert(hash, id);
        id
    }

    /// Drops a reference on a label, freeing it with the last one.
    pub(crate) fn release(&mut self, id: u32) {
        let label = &mut self.labels[id as usize];
        label.refs -= 1;
        if label.refs > 0 {
            return;
        }
        let hash = hash_str(self.seed, &label.text);
        label.text = Box::from("");
        label.refs = self.free_head;
        self.free_head = id;
        self.table.remove(hash, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_byte_of_a_string_reaches_its_hash() {
        // The tail of a string (the bytes after its last whole word) is read with overlapping
        // loads: changing any one byte, at any length, must still change the hash.
        for len in 1..=24usize {
            let base: alloc::string::String = (0..len).map(|i| (b'a' + i as u8) as char).collect();
            let hash = hash_str(7, &base);
            for at in 0..len {
                let mut changed = base.clone().into_bytes();
                changed[at] = b'Z';
                let changed = core::str::from_utf8(&changed).unwrap();
                assert_ne!(hash_str(7, changed), hash, "{base} vs {changed}");
            }
        }
    }

    #[test]
    fn probe_table_survives_colliding_inserts_and_removals() {
        // Few distinct hashes force long clusters that wrap around the table.
        let mut table = ProbeTable::default();
        let mut live = BTreeSet::new();
        let mut state = 1u64;
        for step in 0..20_000u32 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let id = (state >> 40) as u32 % 500;
            let hash = id % 7 + (u32::MAX - 8);
            if live.contains(&id) {
                table.remove(hash, id);
                live.remove(&id);
            } else {
                table.insert(hash, id);
                live.insert(id);
            }
            if step % 97 == 0 {
                for probe in 0..500 {
                    let found =
                        table.find(probe % 7 + (u32::MAX - 8), |candidate| candidate == probe);
                    assert_eq!(
                        found != NONE,
                        live.contains(&probe),
                        "id {probe} at step {step}"
                    );
                }
            }
        }
        for id in core::mem::take(&mut live) {
            table.remove(id % 7 + (u32::MAX - 8), id);
        }
        assert_eq!(table.len, 0);
        assert!(table.slots.is_empty());
    }

    #[test]
    fn probe_table_shrinks_after_removals() {
        let mut table = ProbeTable::default();
        for id in 0..10_000u32 {
            table.insert(mix64(u64::from(id)) as u32, id);
        }
        let grown = table.slots.len();
        for id in 10..10_000u32 {
            table.remove(mix64(u64::from(id)) as u32, id);
        }
        assert!(
            table.slots.len() * 64 <= grown,
            "{} of {grown}",
            table.slots.len()
        );
        for id in 0..10_000u32 {
            let found = table.find(mix64(u64::from(id)) as u32, |candidate| candidate == id);
            assert_eq!(found != NONE, id < 10, "{id}");
        }
    }

    #[test]
    fn interner_counts_references() {
        let mut labels = Interner::new(3);
        let a = labels.acquire("site");
        assert_eq!(labels.acquire("site"), a);
        let b = labels.acquire("");
        assert_ne!(a, b);
        assert_eq!(labels.find("site"), a);
        labels.release(a);
        assert_eq!(labels.find("site"), a);
        labels.release(a);
        assert_eq!(labels.find("site"), NONE);
        assert_eq!(labels.text(b), "");
        // The freed id is reused.
        assert_eq!(labels.acquire("device"), a);
    }
}
