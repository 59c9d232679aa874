//! Engine configuration: the bounds of [`Limits`] plus the behaviour choices MQTT leaves open.

use super::persist::Persistence;
use crate::limits::Limits;
use crate::topic::SharedStrategy;

/// How the engine behaves. [`Config::default`] suits an edge broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Every bound.
    pub limits: Limits,
    /// Longest keep alive accepted, in seconds. A MQTT 5 client asking for more (or for none) is
    /// told this value as Server Keep Alive; a 3.1.x client is refused with return code 2
    /// (identifier rejected), as Mosquitto does. `None`: any keep alive is accepted.
    pub max_keep_alive: Option<u16>,
    /// Milliseconds a new connection has to complete CONNECT (and authentication) before it is
    /// closed. Default 10 s.
    pub connect_timeout_ms: u64,
    /// Cap on the Session Expiry Interval a client may ask for, in seconds. `u32::MAX` (the
    /// default) means a session may never expire, which is what MQTT 3.1.1 persistent sessions get.
    pub max_session_expiry: u32,
    /// Topic aliases a client may use towards the broker (Topic Alias Maximum in CONNACK).
    pub topic_alias_maximum: u16,
    /// Aliases the broker assigns at most per connection for messages it sends (within the
    /// client's own maximum). Each costs a topic string of memory. 0 disables outbound aliases.
    pub max_outbound_aliases: u16,
    /// Whether retained messages are supported (Retain Available).
    pub retain_available: bool,
    /// Whether QoS 0 messages are queued for offline persistent sessions (they are not by default,
    /// as in Mosquitto).
    pub queue_qos0_offline: bool,
    /// How a shared subscription group picks its member.
    pub shared_strategy: SharedStrategy,
    /// Longest client identifier accepted, in bytes; longer ones get 0x85 Client Identifier not valid.
    pub max_client_id_length: u16,
    /// Which message events the engine emits (connection and session events are always on).
    pub message_events: bool,
    /// Engines working together, one per worker thread (see `Broker::take_remote`). 1 alone.
    pub workers: u16,
    /// This engine's place among them, `0..workers`.
    pub worker: u16,
    /// Whether the engine emits persistence records, and holds acknowledgements until they are
    /// durable (see [`Persistence`]). Off by default: no records, no cost.
    pub persistence: Persistence,
    /// Whether this engine writes records for retained messages (with several workers, one
    /// of them does, for the retained messages of all).
    pub persist_retained: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::DEFAULT,
            max_keep_alive: None,
            connect_timeout_ms: 10_000,
            max_session_expiry: u32::MAX,
            topic_alias_maximum: 64,
            max_outbound_aliases: 16,
            retain_available: true,
            queue_qos0_offline: false,
            shared_strategy: SharedStrategy::default(),
            max_client_id_length: 256,
            message_events: false,
            workers: 1,
            worker: 0,
            persistence: Persistence::Off,
            persist_retained: true,
        }
    }
}
