//! Events the engine reports to the port: what hooks, metrics, rules and bridges build on.

use alloc::boxed::Box;

use super::ConnId;
use super::auth::Access;
use super::message::SharedMessage;
use crate::codec::ReasonCode;
use crate::topic::SubscriberId;
use crate::{ProtocolVersion, SubscriptionOptions};

/// Why a network connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// The client sent DISCONNECT with this reason code.
    ClientDisconnect(ReasonCode),
    /// The port reported the network connection closed or failed.
    NetworkClosed,
    /// No packet within 1.5 times the keep alive.
    KeepAliveTimeout,
    /// CONNECT (and authentication) did not complete in time.
    ConnectTimeout,
    /// Another connection took over the session.
    TakenOver,
    /// The client broke the protocol; the reason code was sent in DISCONNECT or CONNACK.
    ProtocolError(ReasonCode),
    /// The broker refused the connection with this CONNACK reason code.
    Refused(ReasonCode),
    /// The broker is shutting down.
    ServerShutdown,
}

/// Why a message was not delivered to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The session's queue reached its message or byte limit.
    QueueFull,
    /// The message expired before it could be sent.
    Expired,
    /// The message exceeds the Maximum Packet Size of the subscriber `[MQTT-3.1.2-25]`.
    TooLarge,
    /// The subscriber may not receive this topic.
    NotAuthorized,
    /// A QoS 0 message for an offline session (not queued unless configured).
    Offline,
    /// A QoS 0 message for a subscriber whose connection has `max_output_bytes` unwritten.
    Congested,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Its expiry interval passed (0 ends it with the connection).
    Expired,
    /// A new connection with Clean Start replaced it.
    CleanStart,
}

/// Something the port may want to act on. Connection and session events are always emitted;
/// message events only with `Config::message_events`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A client completed CONNECT and got CONNACK 0x00.
    ClientConnected {
        /// The connection.
        conn: ConnId,
        /// Its session.
        session: SubscriberId,
        /// Client identifier.
        client_id: Box<str>,
        /// Authenticated user name.
        username: Option<Box<str>>,
        /// Protocol version.
        version: ProtocolVersion,
        /// Whether an existing session was resumed.
        session_present: bool,
    },
    /// A connection ended (after CONNECT or before it).
    ClientDisconnected {
        /// The connection.
        conn: ConnId,
        /// Client identifier, if CONNECT got that far.
        client_id: Option<Box<str>>,
        /// Why.
        cause: CloseCause,
    },
    /// A session was created.
    SessionCreated {
        /// The session.
        session: SubscriberId,
        /// Client identifier.
        client_id: Box<str>,
    },
    /// A session ended and its state was discarded.
    SessionTerminated {
        /// The session.
        session: SubscriberId,
        /// Client identifier.
        client_id: Box<str>,
        /// Why.
        reason: SessionEnd,
    },
    /// A subscription was added or replaced.
    Subscribed {
        /// The session.
        session: SubscriberId,
        /// Topic filter.
        filter: Box<str>,
        /// Options requested.
        options: SubscriptionOptions,
    },
    /// A subscription was removed by UNSUBSCRIBE.
    Unsubscribed {
        /// The session.
        session: SubscriberId,
        /// Topic filter.
        filter: Box<str>,
    },
    /// An access check said no.
    AccessDenied {
        /// The session.
        session: SubscriberId,
        /// The user name the client authenticated with, if any.
        username: Option<Box<str>>,
        /// What was attempted.
        access: Access,
        /// Topic name or filter.
        topic: Box<str>,
    },
    /// A message was accepted for routing (message event).
    MessagePublished {
        /// The publishing session; `None` for messages the port published.
        publisher: Option<SubscriberId>,
        /// The message.
        message: SharedMessage,
    },
    /// A message was written to a subscriber's connection (message event).
    MessageDelivered {
        /// The subscriber.
        session: SubscriberId,
        /// The message.
        message: SharedMessage,
    },
    /// A subscriber acknowledged a QoS 1 or 2 message (message event).
    MessageAcked {
        /// The subscriber.
        session: SubscriberId,
        /// The message.
        message: SharedMessage,
    },
    /// A message was not delivered to a session (always emitted: drops are rare and matter).
    MessageDropped {
        /// The subscriber.
        session: SubscriberId,
        /// The message.
        message: SharedMessage,
        /// Why.
        reason: DropReason,
    },
}
