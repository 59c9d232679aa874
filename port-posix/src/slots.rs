//! A table of values by connection, indexed by the engine's dense connection slots.

use femtomq_core::broker::ConnId;

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// A connection's address in 20 bytes, where [`SocketAddr`] takes 32 (room for an IPv6 flow
/// label and scope, which the broker only ever shows in its log; the scope is kept while it
/// fits in 8 bits, the usual interface numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerAddress {
    /// IPv4 addresses as IPv4-mapped IPv6.
    ip: [u8; 16],
    port: u16,
    v4: bool,
    scope: u8,
}

impl From<SocketAddr> for PeerAddress {
    fn from(address: SocketAddr) -> PeerAddress {
        match address {
            SocketAddr::V4(v4) => PeerAddress {
                ip: v4.ip().to_ipv6_mapped().octets(),
                port: v4.port(),
                v4: true,
                scope: 0,
            },
            SocketAddr::V6(v6) => PeerAddress {
                ip: v6.ip().octets(),
                port: v6.port(),
                v4: false,
                scope: u8::try_from(v6.scope_id()).unwrap_or(0),
            },
        }
    }
}

impl From<PeerAddress> for SocketAddr {
    fn from(peer: PeerAddress) -> SocketAddr {
        let ip = Ipv6Addr::from(peer.ip);
        match ip.to_ipv4_mapped() {
            Some(v4) if peer.v4 => SocketAddr::new(IpAddr::V4(v4), peer.port),
            _ => SocketAddr::V6(SocketAddrV6::new(ip, peer.port, 0, u32::from(peer.scope))),
        }
    }
}

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
            let needed = slot + 1 - self.entries.len();
            if self.entries.capacity() < slot + 1 {
                // Grown by a quarter rather than doubled: with tens of thousands of connections
                // a doubled table's spare half would cost more than its entries (still O(1)
                // amortized per insert).
                let room = needed.max(self.entries.capacity() / 4).max(16);
                self.entries.reserve_exact(room);
            }
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

    #[test]
    fn a_peer_address_keeps_what_the_log_shows() {
        for text in [
            "127.0.0.1:1883",
            "[::1]:40000",
            "[fe80::1%3]:8883",
            "[::ffff:10.0.0.1]:1",
        ] {
            let address: SocketAddr = text.parse().unwrap();
            assert_eq!(
                SocketAddr::from(PeerAddress::from(address)),
                address,
                "{text}"
            );
        }
        assert_eq!(std::mem::size_of::<Option<(ConnId, PeerAddress)>>(), 28);
    }

    #[test]
    fn the_table_grows_by_a_quarter() {
        let mut broker = Broker::new(Config::default(), 1);
        let mut table = SlotTable::default();
        for _ in 0..10_000 {
            table.insert(broker.open(0, Instant(0)), 0u8);
        }
        assert!(table.entries.capacity() * 4 <= table.entries.len() * 5 + 64);
    }
}
