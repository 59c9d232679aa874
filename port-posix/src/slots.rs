//! A table of values by connection, indexed by the engine's dense connection slots.

use femtomq_core::broker::ConnId;

/// Values by [`ConnId::slot`]: the engine keeps slots dense and reuses them, so a vector costs
/// less per connection than a hash map (about 100 B there with its spare room). An entry is
/// found only under the exact id it was inserted with, not under a later connection's id that
/// reuses the slot.
pub(crate) struct SlotTable<T> {
    entries: Vec<Option<(ConnId, T)>>,
}

impl<T> Default for SlotTable<T> {
    fn default() -> Self {
        SlotTable {
            entries: Vec::new(),
        }
    }
}

impl<T> SlotTable<T> {
    pub(crate) fn get(&self, conn: &ConnId) -> Option<&T> {
        match self.entries.get(conn.slot()) {
            Some(Some((id, entry))) if id == conn => Some(entry),
            _ => None,
        }
    }

    pub(crate) fn insert(&mut self, conn: ConnId, entry: T) {
        let slot = conn.slot();
        if self.entries.len() <= slot {
            self.entries.resize_with(slot + 1, || None);
        }
        self.entries[slot] = Some((conn, entry));
    }

    pub(crate) fn remove(&mut self, conn: &ConnId) {
        let slot = conn.slot();
        if self.get(conn).is_some() {
            self.entries[slot] = None;
        }
        while self.entries.last().is_some_and(Option::is_none) {
            self.entries.pop();
        }
        // After a wave of disconnects the table gives its memory back.
        if self.entries.capacity() > 64 && self.entries.len() < self.entries.capacity() / 4 {
            self.entries.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use femtomq_core::Instant;
    use femtomq_core::broker::{Broker, Config};

    #[test]
    fn an_entry_is_found_under_its_own_id_only() {
        let mut broker = Broker::new(Config::default(), 1);
        let first = broker.open(0, Instant(0));
        let second = broker.open(0, Instant(0));
        let mut table = SlotTable::default();
        table.insert(first, "first");
        table.insert(second, "second");
        assert_eq!(table.get(&first), Some(&"first"));
        // The slot of a closed connection is reused under a new id.
        broker.closed(first, Instant(1));
        let third = broker.open(0, Instant(2));
        assert_eq!(third.slot(), first.slot());
        assert_eq!(table.get(&third), None);
        table.remove(&third);
        assert_eq!(table.get(&first), Some(&"first"));
        table.remove(&first);
        assert_eq!(table.get(&first), None);
        assert_eq!(table.get(&second), Some(&"second"));
        table.remove(&second);
        assert!(table.entries.is_empty());
    }
}
