//! Every bound of the broker, in one value.
//!
//! femtomq is allocation-bounded: each structure that grows with what clients send has a bound
//! here, so memory use is a function of the configuration, not of the traffic. When a bound is
//! reached the broker answers as MQTT says (CONNACK 0x97 Quota exceeded or 0x89 Server busy,
//! SUBACK/PUBACK 0x97, DISCONNECT 0x95 Packet too large...) and keeps serving everyone else.
//!
//! The defaults suit an edge broker on a router or a small ARM board: a few hundred devices, a
//! few MiB for retained and queued messages. Configurations raise or lower them.

/// The bounds of one broker instance. [`Limits::DEFAULT`] (and [`Default`]) are the edge defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Simultaneous client connections; one more is refused with CONNACK 0x97. Default 1,024.
    pub max_connections: u32,
    /// Subscriptions of one session (shared ones included); one more gets SUBACK 0x97. Default 256.
    pub max_subscriptions_per_client: u32,
    /// Subscriptions of all sessions together; one more gets SUBACK 0x97. Default 65,536.
    pub max_subscriptions_total: u32,
    /// Bytes of a topic name or filter (the protocol allows 65,535). Default 1,024.
    pub max_topic_length: u16,
    /// Levels (`/`-separated parts) of a topic name or filter. Default 32.
    pub max_topic_levels: u16,
    /// Unacknowledged QoS 1/2 messages in flight per client, each way: the Receive Maximum the
    /// broker announces and the cap applied to the client's. Default 512.
    pub max_inflight: u16,
    /// Messages queued for one session while it is offline or its window is full. Default 1,000.
    pub max_queued_messages: u32,
    /// Bytes queued for one session while it is offline or its window is full. Default 1 MiB.
    pub max_queued_bytes: u32,
    /// Retained messages kept by the broker. Default 10,000.
    pub max_retained_messages: u32,
    /// Bytes of retained messages (topic plus message) kept by the broker. Default 4 MiB.
    pub max_retained_bytes: u32,
    /// Largest packet accepted or sent, in bytes (the Maximum Packet Size). Default 256 KiB.
    pub max_packet_size: u32,
    /// Rules of the rule engine. Default 64.
    pub max_rules: u32,
    /// Bytes buffered per bridge while its remote broker is unreachable. Default 1 MiB.
    pub bridge_cache_bytes: u32,
    /// Bytes of encoded packets waiting for one connection's socket. Past it the subscriber is
    /// congested: its publishers are held back (the copy each had already sent is still
    /// written), QoS 1/2 copies wait in its session queue (bounded by the queue limits), and
    /// once it made no progress for a second QoS 0 copies are dropped for it, so a client that
    /// stops reading cannot grow the broker's memory. One packet is always accepted, however
    /// large. Default 64 KiB.
    pub max_output_bytes: u32,
}

impl Limits {
    /// The edge defaults, usable in `const` and `static` items.
    pub const DEFAULT: Limits = Limits {
        max_connections: 1_024,
        max_subscriptions_per_client: 256,
        max_subscriptions_total: 65_536,
        max_topic_length: 1_024,
        max_topic_levels: 32,
        max_inflight: 512,
        max_queued_messages: 1_000,
        max_queued_bytes: 1 << 20,
        max_retained_messages: 10_000,
        max_retained_bytes: 4 << 20,
        max_packet_size: 256 << 10,
        max_rules: 64,
        bridge_cache_bytes: 1 << 20,
        max_output_bytes: 64 << 10,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
