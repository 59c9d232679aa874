//! Failed-login throttling per source address, in a table of bounded size.
//!
//! Every refused authentication (a wrong password, an unknown user, a refused anonymous client,
//! a failed SCRAM proof, an HTTP callout's "no") counts against the client's address: an IPv4
//! address, or the /64 prefix of an IPv6 one (a single host usually owns a whole /64). After
//! `max_failures` failures, each less than `window` after the previous one (or after the end of
//! the last refusal period), the address is refused for `backoff`, doubled with every further
//! failure up to `max_backoff`. While refused, its CONNECTs are answered at once without looking
//! at the credentials (so a right guess is not told apart from a wrong one, and no hash is
//! computed); those refusals do not count as failures. An entry is forgotten `window` after its
//! last failure or refusal period. A successful login clears the entry, unless the failures were
//! for another user name than the one that succeeded: a client with one valid account cannot
//! reset its count between guesses at another account's password.
//!
//! The answer while refused is CONNACK 0x9F Connection rate exceeded (MQTT 5 §3.2.2.2), and
//! return code 3 Server unavailable in 3.1.1. 0x9F is the code MQTT reserves for a server
//! limiting the rate of connections, and it says "retry later", which is what a legitimate
//! device behind the same address should do; 0x8A Banned is meant for administrative bans
//! ("contact the server administrator") and some clients stop retrying on it.
//!
//! The table holds at most `table_size` addresses; a new one replaces the least recently seen.
//! An attacker with very many addresses can therefore push its own entries out, but memory
//! stays bounded (about 80 bytes per entry) whatever it does.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The `[throttle]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures before an address is refused; 0 turns throttling off.
    pub max_failures: u32,
    /// How long failures are remembered after the last one.
    pub window: Duration,
    /// The first refusal period.
    pub backoff: Duration,
    /// The longest refusal period.
    pub max_backoff: Duration,
    /// Addresses remembered at most.
    pub table_size: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            max_failures: 5,
            window: Duration::from_secs(60),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            table_size: 1024,
        }
    }
}

/// Where failures are counted: an IPv4 address or an IPv6 /64 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey([u8; 16]);

impl SourceKey {
    /// The key of `ip` (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip {
            IpAddr::V4(v4) => SourceKey(v4.to_ipv6_mapped().octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey(v4.to_ipv6_mapped().octets()),
                None => {
                    let mut octets = v6.octets();
                    octets[8..].fill(0);
                    SourceKey(octets)
                }
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Users {
    /// Every failure was for this user name (hashed; `None` hashes the anonymous client).
    One(u64),
    /// Failures for several user names.
    Several,
}

#[derive(Debug, Clone)]
struct Entry {
    failures: u32,
    /// Last failure, or the end of the refusal period if later: the window runs from here.
    window_start: Instant,
    blocked_until: Option<Instant>,
    /// For the choice of the entry to replace.
    last_seen: Instant,
    users: Users,
}

/// What [`ThrottleTable::failed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Counted; the address may still try.
    Counted(u32),
    /// The address is now refused for this long.
    Blocked(u32, Duration),
}

/// The table of failing addresses.
#[derive(Debug)]
pub struct ThrottleTable {
    config: ThrottleConfig,
    entries: HashMap<SourceKey, Entry>,
    hasher: RandomState,
}

impl ThrottleTable {
    /// An empty table.
    pub fn new(config: ThrottleConfig) -> ThrottleTable {
        ThrottleTable {
            config,
            entries: HashMap::new(),
            hasher: RandomState::new(),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> ThrottleConfig {
        self.config
    }

    /// New settings (reload): entries are kept, the oldest dropped if the table shrank.
    pub fn set_config(&mut self, config: ThrottleConfig) {
        self.config = config;
        if config.max_failures == 0 {
            self.entries = HashMap::new();
        }
        while self.entries.len() > config.table_size {
            self.evict_oldest();
        }
    }

    /// Addresses remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no address is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn user_hash(&self, user: Option<&str>) -> u64 {
        self.hasher.hash_one(user)
    }

    fn expired(&self, entry: &Entry, now: Instant) -> bool {
        let free = entry.blocked_until.is_none_or(|until| now >= until);
        free && now.saturating_duration_since(entry.window_start) >= self.config.window
    }

    /// How long `ip` remains refused; `None` when it may try.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if self.config.max_failures == 0 {
            return None;
        }
        let key = SourceKey::of(ip);
        let entry = self.entries.get(&key)?;
        if self.expired(entry, now) {
            self.entries.remove(&key);
            return None;
        }
        let entry = self.entries.get_mut(&key)?;
        entry.last_seen = now;
        entry
            .blocked_until
            .filter(|&until| now < until)
            .map(|until| until - now)
    }

    /// Counts a refused authentication of `user` from `ip`.
    pub fn failed(&mut self, ip: IpAddr, user: Option<&str>, now: Instant) -> Failure {
        let config = self.config;
        if config.max_failures == 0 || config.table_size == 0 {
            return Failure::Counted(0);
        }
        let key = SourceKey::of(ip);
        let user = self.user_hash(user);
        if self
            .entries
            .get(&key)
            .is_some_and(|entry| self.expired(entry, now))
        {
            self.entries.remove(&key);
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= config.table_size {
            self.evict_oldest();
        }
        let entry = self.entries.entry(key).or_insert(Entry {
            failures: 0,
            window_start: now,
            blocked_until: None,
            last_seen: now,
            users: Users::One(user),
        });
        entry.failures = entry.failures.saturating_add(1);
        entry.last_seen = now;
        entry.window_start = entry.window_start.max(now);
        if entry.users != Users::One(user) {
            entry.users = Users::Several;
        }
        if entry.failures < config.max_failures {
            return Failure::Counted(entry.failures);
        }
        let doublings = (entry.failures - config.max_failures).min(31);
        let backoff = config
            .backoff
            .saturating_mul(1 << doublings)
            .min(config.max_backoff);
        let until = now + backoff;
        entry.blocked_until = Some(until);
        entry.window_start = until;
        Failure::Blocked(entry.failures, backoff)
    }

    /// A successful authentication of `user` from `ip`: forgets the address's failures if they
    /// were all for this user.
    pub fn succeeded(&mut self, ip: IpAddr, user: Option<&str>) {
        let key = SourceKey::of(ip);
        let user = self.user_hash(user);
        if self
            .entries
            .get(&key)
            .is_some_and(|entry| entry.users == Users::One(user))
        {
            self.entries.remove(&key);
        }
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, entry)| entry.last_seen)
            .map(|(key, _)| *key);
        if let Some(key) = oldest {
            self.entries.remove(&key);
        }
    }
}

/// The table shared by every worker (failures count wherever the connection landed), behind a
/// lock taken once per authentication, never per message.
#[derive(Debug)]
pub struct Throttle(Mutex<ThrottleTable>);

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(ThrottleConfig::default())
    }
}

impl Throttle {
    /// An empty table with these settings.
    pub fn new(config: ThrottleConfig) -> Throttle {
        Throttle(Mutex::new(ThrottleTable::new(config)))
    }

    /// The table, locked.
    pub fn table(&self) -> std::sync::MutexGuard<'_, ThrottleTable> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config() -> ThrottleConfig {
        ThrottleConfig {
            max_failures: 3,
            window: ms(1000),
            backoff: ms(100),
            max_backoff: ms(500),
            table_size: 4,
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn failures_block_with_a_growing_capped_backoff() {
        let t0 = Instant::now();
        let mut table = ThrottleTable::new(config());
        let a = ip("192.0.2.1");
        assert_eq!(table.failed(a, Some("u"), t0), Failure::Counted(1));
        assert_eq!(table.failed(a, Some("u"), t0 + ms(10)), Failure::Counted(2));
        assert_eq!(table.check(a, t0 + ms(20)), None);
        assert_eq!(
            table.failed(a, Some("u"), t0 + ms(20)),
            Failure::Blocked(3, ms(100))
        );
        assert_eq!(table.check(a, t0 + ms(20)), Some(ms(100)));
        assert_eq!(table.check(a, t0 + ms(119)), Some(ms(1)));
        assert_eq!(table.check(a, t0 + ms(120)), None);
        // Each further failure doubles the period, up to the cap.
        let mut now = t0 + ms(120);
        for expected in [200, 400, 500, 500] {
            match table.failed(a, Some("u"), now) {
                Failure::Blocked(_, backoff) => assert_eq!(backoff, ms(expected)),
                other => panic!("{other:?}"),
            }
            now += ms(expected);
            assert_eq!(table.check(a, now - ms(1)), Some(ms(1)));
            assert_eq!(table.check(a, now), None);
        }
        // Another address is not affected.
        assert_eq!(table.check(ip("192.0.2.2"), now), None);
    }

    #[test]
    fn failures_are_forgotten_after_the_window() {
        let t0 = Instant::now();
        let mut table = ThrottleTable::new(config());
        let a = ip("192.0.2.1");
        table.failed(a, None, t0);
        table.failed(a, None, t0 + ms(999));
        // 999 ms after the last failure: still counted.
        assert_eq!(
            table.failed(a, None, t0 + ms(1998)),
            Failure::Blocked(3, ms(100))
        );
        // The window runs from the end of the refusal period.
        assert_eq!(table.check(a, t0 + ms(2098 + 999)), None);
        assert_eq!(table.len(), 1);
        assert_eq!(
            table.failed(a, None, t0 + ms(2098 + 999)),
            Failure::Blocked(4, ms(200))
        );
        // A full window after the end of the period, the entry is gone.
        let later = t0 + ms(3097 + 200 + 1000);
        assert_eq!(table.check(a, later), None);
        assert!(table.is_empty());
        assert_eq!(table.failed(a, None, later), Failure::Counted(1));
    }

    #[test]
    fn success_clears_only_failures_for_the_same_user() {
        let t0 = Instant::now();
        let mut table = ThrottleTable::new(config());
        let a = ip("192.0.2.1");
        table.failed(a, Some("alice"), t0);
        table.failed(a, Some("alice"), t0);
        table.succeeded(a, Some("alice"));
        assert!(table.is_empty());
        // Guesses at bob's password cannot be reset by logging in as mallory.
        table.failed(a, Some("bob"), t0);
        table.failed(a, Some("bob"), t0);
        table.succeeded(a, Some("mallory"));
        assert_eq!(
            table.failed(a, Some("bob"), t0),
            Failure::Blocked(3, ms(100))
        );
        // Mixed failures are not cleared by either user.
        let b = ip("192.0.2.2");
        table.failed(b, Some("x"), t0);
        table.failed(b, Some("y"), t0);
        table.succeeded(b, Some("x"));
        assert_eq!(table.failed(b, Some("x"), t0), Failure::Blocked(3, ms(100)));
    }

    #[test]
    fn the_table_is_bounded_and_replaces_the_least_recently_seen() {
        let t0 = Instant::now();
        let mut table = ThrottleTable::new(config());
        for i in 0..4u64 {
            table.failed(ip(&format!("10.0.0.{i}")), None, t0 + ms(i));
        }
        assert_eq!(table.len(), 4);
        // 10.0.0.0 is seen again: 10.0.0.1 is now the least recent.
        table.check(ip("10.0.0.0"), t0 + ms(10));
        for i in 4..1000u64 {
            table.failed(
                ip(&format!("10.0.{}.{}", i / 256, i % 256)),
                None,
                t0 + ms(10 + i),
            );
            assert!(table.len() <= 4);
            if i == 4 {
                assert!(table.entries.contains_key(&SourceKey::of(ip("10.0.0.0"))));
                assert!(!table.entries.contains_key(&SourceKey::of(ip("10.0.0.1"))));
            }
        }
        assert_eq!(table.len(), 4);
        // Shrinking the table drops the oldest.
        table.set_config(ThrottleConfig {
            table_size: 2,
            ..config()
        });
        assert_eq!(table.len(), 2);
        assert!(table.entries.contains_key(&SourceKey::of(ip("10.0.3.231"))));
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_ipv4_as_ipv4() {
        let t0 = Instant::now();
        let mut table = ThrottleTable::new(config());
        table.failed(ip("2001:db8:1:2::1"), None, t0);
        table.failed(ip("2001:db8:1:2:ffff::9"), None, t0);
        table.failed(ip("2001:db8:1:2:abcd:1:2:3"), None, t0);
        assert!(table.check(ip("2001:db8:1:2::77"), t0).is_some());
        assert_eq!(table.check(ip("2001:db8:1:3::1"), t0), None);
        table.failed(ip("192.0.2.9"), None, t0);
        table.failed(ip("::ffff:192.0.2.9"), None, t0);
        table.failed(ip("192.0.2.9"), None, t0);
        assert!(table.check(ip("::ffff:192.0.2.9"), t0).is_some());
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn zero_failures_turns_it_off() {
        let t0 = Instant::now();
        let mut table = ThrottleTable::new(ThrottleConfig {
            max_failures: 0,
            ..config()
        });
        for _ in 0..10 {
            assert_eq!(table.failed(ip("192.0.2.1"), None, t0), Failure::Counted(0));
        }
        assert_eq!(table.check(ip("192.0.2.1"), t0), None);
        assert!(table.is_empty());
    }
}
