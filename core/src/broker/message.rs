//! An application message as the broker keeps it: owned, immutable, shared by reference count
//! between every queue and inflight window that holds it (one copy however many subscribers).

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::codec::{PublishProperties, Repeated, UserProperty, WillProperties, property_id};
use crate::{Instant, QoS};

/// The MQTT 5 properties of a message that travel with it to subscribers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageProperties {
    /// True when the payload is declared UTF-8.
    pub payload_format_indicator: Option<bool>,
    /// Lifetime in seconds from `received_at`.
    pub message_expiry_interval: Option<u32>,
    /// Content type.
    pub content_type: Option<Box<str>>,
    /// Response topic (request/response).
    pub response_topic: Option<Box<str>>,
    /// Correlation data (request/response).
    pub correlation_data: Option<Box<[u8]>>,
    /// User properties, kept in their validated wire form (identifier, name, value) so that
    /// forwarding them costs a copy of bytes, not a list of strings. Read with
    /// [`MessageProperties::user_properties`].
    user_properties: Box<[u8]>,
}

impl MessageProperties {
    /// The user properties, in the order the publisher sent them.
    pub fn user_properties(&self) -> Repeated<'_, UserProperty<'_>> {
        Repeated::from_encoded(&self.user_properties)
    }

    /// Sets the user properties from name/value pairs (strings longer than 65,535 bytes are cut
    /// at a character boundary, which no decoded property ever is).
    pub fn set_user_properties<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut bytes = Vec::new();
        for (name, value) in pairs {
            bytes.push(property_id::USER_PROPERTY);
            push_string(&mut bytes, name);
            push_string(&mut bytes, value);
        }
        self.user_properties = bytes.into_boxed_slice();
    }

    /// The user properties in their wire form (for persistence records).
    pub(crate) fn user_properties_wire(&self) -> &[u8] {
        &self.user_properties
    }

    /// Sets the user properties from their wire form; false (nothing set) if `bytes` is not a
    /// well-formed list of user properties.
    pub(crate) fn set_user_properties_wire(&mut self, bytes: Box<[u8]>) -> bool {
        let mut rest: &[u8] = &bytes;
        while let Some((&id, tail)) = rest.split_first() {
            if id != property_id::USER_PROPERTY {
                return false;
            }
            rest = tail;
            for _ in 0..2 {
                let Some((len, tail)) = rest.split_first_chunk::<2>() else {
                    return false;
                };
                let len = usize::from(u16::from_be_bytes(*len));
                let Some(text) = tail.get(..len) else {
                    return false;
                };
                if core::str::from_utf8(text).is_err() {
                    return false;
                }
                rest = &tail[len..];
            }
        }
        self.user_properties = bytes;
        true
    }

    /// Copies the properties of a received PUBLISH that are forwarded to subscribers (not the
    /// topic alias nor subscription identifiers, which are per connection).
    pub fn from_publish(properties: &PublishProperties<'_>) -> Self {
        let mut owned = MessageProperties {
            payload_format_indicator: properties.payload_format_indicator,
            message_expiry_interval: properties.message_expiry_interval,
            content_type: properties.content_type.map(Box::from),
            response_topic: properties.response_topic.map(Box::from),
            correlation_data: properties.correlation_data.map(Box::from),
            user_properties: Box::default(),
        };
        owned.set_user_properties(properties.user_properties.iter().map(|p| (p.name, p.value)));
        owned
    }

    /// Copies the properties of a will that travel with the will message (all but the delay).
    pub fn from_will(properties: &WillProperties<'_>) -> Self {
        Self::from_publish(&PublishProperties {
            payload_format_indicator: properties.payload_format_indicator,
            message_expiry_interval: properties.message_expiry_interval,
            content_type: properties.content_type,
            response_topic: properties.response_topic,
            correlation_data: properties.correlation_data,
            user_properties: properties.user_properties,
            ..PublishProperties::default()
        })
    }

    /// Approximate heap bytes held, for queue accounting.
    pub fn heap_size(&self) -> usize {
        self.content_type.as_ref().map_or(0, |s| s.len())
            + self.response_topic.as_ref().map_or(0, |s| s.len())
            + self.correlation_data.as_ref().map_or(0, |s| s.len())
            + self.user_properties.len()
    }
}

fn push_string(bytes: &mut Vec<u8>, text: &str) {
    let mut end = text.len().min(usize::from(u16::MAX));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    bytes.extend_from_slice(&(end as u16).to_be_bytes());
    bytes.extend_from_slice(&text.as_bytes()[..end]);
}

/// An application message: what was published, once, for every subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name.
    pub topic: Box<str>,
    /// Payload.
    pub payload: Box<[u8]>,
    /// QoS it was published with.
    pub qos: QoS,
    /// Retain flag as published.
    pub retain: bool,
    /// MQTT 5 properties forwarded to subscribers.
    pub properties: MessageProperties,
    /// When the broker received it (message expiry counts from here).
    pub received_at: Instant,
}

impl Message {
    /// A message with no properties.
    pub fn new(topic: &str, payload: &[u8], qos: QoS, retain: bool, now: Instant) -> Self {
        Message {
            topic: Box::from(topic),
            payload: Box::from(payload),
            qos,
            retain,
            properties: MessageProperties::default(),
            received_at: now,
        }
    }

    /// Seconds of life left at `now`: `None` without an expiry, `Some(0)` once expired.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        let interval = self.properties.message_expiry_interval?;
        let elapsed = now.millis_since(self.received_at) / 1000;
        Some(u32::try_from(u64::from(interval).saturating_sub(elapsed)).unwrap_or(0))
    }

    /// True when the message expiry interval has passed.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.remaining_expiry(now) == Some(0)
    }

    /// Bytes this message accounts for in queue and retained limits.
    pub fn size(&self) -> usize {
        self.topic.len() + self.payload.len() + self.properties.heap_size()
    }
}

/// A shared, immutable message.
pub type SharedMessage = Arc<Message>;
