//! MQTT 5.0 properties (§2.2.2): identifiers, typed values, and one typed struct per packet.
//!
//! A property block is decoded in one pass that rejects unknown identifiers and properties not
//! allowed in the packet (both 0x81, §2.2.2.2), duplicates of "at most once" properties (0x82)
//! and values out of range (0x82). User Properties and repeated Subscription Identifiers stay in the
//! validated block and are read again, in their original order, when iterated.

use core::num::{NonZeroU16, NonZeroU32};

use super::repeated::{Repeated, RepeatedItem};
use super::wire::{Reader, VAR_INT_MAX, Writer, binary_len, var_int_len};
use super::{DecodeError, EncodeError};
use crate::QoS;

/// Property identifiers (§2.2.2.2).
pub mod id {
    #![allow(missing_docs)]
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// How a property's value is encoded.
#[derive(Clone, Copy)]
enum ValueKind {
    Byte,
    TwoByte,
    FourByte,
    VarInt,
    Utf8,
    Binary,
    Utf8Pair,
}

fn value_kind(property: u8) -> Option<ValueKind> {
    use id::*;
    Some(match property {
        PAYLOAD_FORMAT_INDICATOR
        | REQUEST_PROBLEM_INFORMATION
        | REQUEST_RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => ValueKind::Byte,
        SERVER_KEEP_ALIVE | RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | TOPIC_ALIAS => {
            ValueKind::TwoByte
        }
        MESSAGE_EXPIRY_INTERVAL
        | SESSION_EXPIRY_INTERVAL
        | WILL_DELAY_INTERVAL
        | MAXIMUM_PACKET_SIZE => ValueKind::FourByte,
        SUBSCRIPTION_IDENTIFIER => ValueKind::VarInt,
        CONTENT_TYPE
        | RESPONSE_TOPIC
        | ASSIGNED_CLIENT_IDENTIFIER
        | AUTHENTICATION_METHOD
        | RESPONSE_INFORMATION
        | SERVER_REFERENCE
        | REASON_STRING => ValueKind::Utf8,
        CORRELATION_DATA | AUTHENTICATION_DATA => ValueKind::Binary,
        USER_PROPERTY => ValueKind::Utf8Pair,
        _ => return None,
    })
}

fn skip_value(reader: &mut Reader<'_>, property: u8) -> Result<(), DecodeError> {
    match value_kind(property).ok_or(DecodeError::UnknownProperty(property))? {
        ValueKind::Byte => reader.take(1).map(drop),
        ValueKind::TwoByte => reader.take(2).map(drop),
        ValueKind::FourByte => reader.take(4).map(drop),
        ValueKind::VarInt => reader.var_int().map(drop),
        ValueKind::Utf8 | ValueKind::Binary => reader.binary().map(drop),
        ValueKind::Utf8Pair => reader.binary().and_then(|_| reader.binary()).map(drop),
    }
}

/// The error for a property identifier a packet's decoder did not expect.
fn unexpected(property: u8) -> DecodeError {
    if value_kind(property).is_some() {
        DecodeError::PropertyNotAllowed(property)
    } else {
        DecodeError::UnknownProperty(property)
    }
}

/// Finds the next occurrence of `property` in a validated block and reads it.
fn next_in_block<'a, T: PropValue<'a>>(bytes: &mut &'a [u8], property: u8) -> Option<T> {
    let mut reader = Reader::new(bytes);
    let found = loop {
        if reader.is_empty() {
            break None;
        }
        let current = reader.u8().ok()?;
        if current == property {
            break T::read(&mut reader, current).ok();
        }
        skip_value(&mut reader, current).ok()?;
    };
    *bytes = reader.rest();
    found
}

/// A property value: how it is read, sized and written.
pub(crate) trait PropValue<'a>: Sized + Copy {
    fn read(reader: &mut Reader<'a>, property: u8) -> Result<Self, DecodeError>;
    fn value_len(&self) -> Result<usize, EncodeError>;
    fn write_value(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError>;
}

impl PropValue<'_> for bool {
    fn read(reader: &mut Reader<'_>, property: u8) -> Result<Self, DecodeError> {
        match reader.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidPropertyValue(property)),
        }
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        Ok(1)
    }
    fn write_value(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
        writer.u8(u8::from(*self))
    }
}

/// Maximum QoS (0x24) is the only QoS-valued property, and may only be 0 or 1.
impl PropValue<'_> for QoS {
    fn read(reader: &mut Reader<'_>, property: u8) -> Result<Self, DecodeError> {
        match reader.u8()? {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            _ => Err(DecodeError::InvalidPropertyValue(property)),
        }
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        Ok(1)
    }
    fn write_value(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
        writer.u8(*self as u8)
    }
}

impl PropValue<'_> for u16 {
    fn read(reader: &mut Reader<'_>, _: u8) -> Result<Self, DecodeError> {
        reader.u16()
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        Ok(2)
    }
    fn write_value(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
        writer.u16(*self)
    }
}

impl PropValue<'_> for NonZeroU16 {
    fn read(reader: &mut Reader<'_>, property: u8) -> Result<Self, DecodeError> {
        NonZeroU16::new(reader.u16()?).ok_or(DecodeError::InvalidPropertyValue(property))
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        Ok(2)
    }
    fn write_value(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
        writer.u16(self.get())
    }
}

impl PropValue<'_> for u32 {
    fn read(reader: &mut Reader<'_>, _: u8) -> Result<Self, DecodeError> {
        reader.u32()
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        Ok(4)
    }
    fn write_value(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
        writer.u32(*self)
    }
}

impl PropValue<'_> for NonZeroU32 {
    fn read(reader: &mut Reader<'_>, property: u8) -> Result<Self, DecodeError> {
        NonZeroU32::new(reader.u32()?).ok_or(DecodeError::InvalidPropertyValue(property))
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        Ok(4)
    }
    fn write_value(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
        writer.u32(self.get())
    }
}

impl<'a> PropValue<'a> for &'a str {
    fn read(reader: &mut Reader<'a>, _: u8) -> Result<Self, DecodeError> {
        reader.utf8()
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        binary_len(self.len())
    }
    fn write_value(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
        writer.utf8(self)
    }
}

impl<'a> PropValue<'a> for &'a [u8] {
    fn read(reader: &mut Reader<'a>, _: u8) -> Result<Self, DecodeError> {
        reader.binary()
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        binary_len(self.len())
    }
    fn write_value(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
        writer.binary(self)
    }
}

/// A Subscription Identifier: 1 to 268,435,455 (§3.8.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(NonZeroU32);

impl SubscriptionId {
    /// The largest identifier (the largest Variable Byte Integer).
    pub const MAX: u32 = VAR_INT_MAX;

    /// An identifier, or `None` for 0 and values above [`SubscriptionId::MAX`].
    pub const fn new(value: u32) -> Option<Self> {
        if value > Self::MAX {
            return None;
        }
        match NonZeroU32::new(value) {
            Some(value) => Some(SubscriptionId(value)),
            None => None,
        }
    }

    /// The numeric value.
    pub const fn get(self) -> u32 {
        self.0.get()
    }
}

impl PropValue<'_> for SubscriptionId {
    fn read(reader: &mut Reader<'_>, property: u8) -> Result<Self, DecodeError> {
        SubscriptionId::new(reader.var_int()?).ok_or(DecodeError::InvalidPropertyValue(property))
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        Ok(var_int_len(self.get()))
    }
    fn write_value(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
        writer.var_int(self.get())
    }
}

impl<'a> RepeatedItem<'a> for SubscriptionId {
    fn next_encoded(bytes: &mut &'a [u8]) -> Option<Self> {
        next_in_block(bytes, id::SUBSCRIPTION_IDENTIFIER)
    }
}

/// A User Property: a name and a value, both UTF-8 strings. Names may repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserProperty<'a> {
    /// The name.
    pub name: &'a str,
    /// The value.
    pub value: &'a str,
}

impl<'a> PropValue<'a> for UserProperty<'a> {
    fn read(reader: &mut Reader<'a>, _: u8) -> Result<Self, DecodeError> {
        Ok(UserProperty {
            name: reader.utf8()?,
            value: reader.utf8()?,
        })
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        Ok(binary_len(self.name.len())? + binary_len(self.value.len())?)
    }
    fn write_value(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
        writer.utf8(self.name)?;
        writer.utf8(self.value)
    }
}

impl<'a> RepeatedItem<'a> for UserProperty<'a> {
    fn next_encoded(bytes: &mut &'a [u8]) -> Option<Self> {
        next_in_block(bytes, id::USER_PROPERTY)
    }
}

/// One field of a property struct: a single optional value or a repeatable list.
pub(crate) trait PropField<'a> {
    fn decode_field(
        &mut self,
        property: u8,
        reader: &mut Reader<'a>,
        block: &'a [u8],
    ) -> Result<(), DecodeError>;
    fn field_len(&self, property: u8) -> Result<usize, EncodeError>;
    fn write_field(&self, property: u8, writer: &mut Writer<'_>) -> Result<(), EncodeError>;
}

impl<'a, T: PropValue<'a>> PropField<'a> for Option<T> {
    fn decode_field(
        &mut self,
        property: u8,
        reader: &mut Reader<'a>,
        _: &'a [u8],
    ) -> Result<(), DecodeError> {
        if self.is_some() {
            return Err(DecodeError::DuplicateProperty(property));
        }
        *self = Some(T::read(reader, property)?);
        Ok(())
    }
    fn field_len(&self, _: u8) -> Result<usize, EncodeError> {
        self.map_or(Ok(0), |value| Ok(1 + value.value_len()?))
    }
    fn write_field(&self, property: u8, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
        if let Some(value) = self {
            writer.u8(property)?;
            value.write_value(writer)?;
        }
        Ok(())
    }
}

impl<'a, T: PropValue<'a> + RepeatedItem<'a>> PropField<'a> for Repeated<'a, T> {
    fn decode_field(
        &mut self,
        property: u8,
        reader: &mut Reader<'a>,
        block: &'a [u8],
    ) -> Result<(), DecodeError> {
        T::read(reader, property)?;
        if self.is_unset() {
            *self = Repeated::from_encoded(block);
        }
        Ok(())
    }
    fn field_len(&self, _: u8) -> Result<usize, EncodeError> {
        self.iter()
            .try_fold(0, |total, item| Ok(total + 1 + item.value_len()?))
    }
    fn write_field(&self, property: u8, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
        self.iter().try_for_each(|item| {
            writer.u8(property)?;
            item.write_value(writer)
        })
    }
}

/// Defines a packet's property struct and its decoder, sizer and writer from one list of
/// `field: Type = IDENTIFIER` lines, so the three can never disagree.
macro_rules! properties {
    ($(#[$meta:meta])* $name:ident { $($(#[$field_meta:meta])* $field:ident: $ty:ty = $id:ident,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq)]
        pub struct $name<'a> {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl<'a> $name<'a> {
            /// Decodes a property block, its Variable Byte Integer length included.
            pub(crate) fn decode(reader: &mut Reader<'a>) -> Result<Self, DecodeError> {
                let mut properties = Self::default();
                let len = reader.var_int()?;
                let block = reader.take(len as usize)?;
                let mut block_reader = Reader::new(block);
                while !block_reader.is_empty() {
                    let property = block_reader.u8()?;
                    match property {
                        $(id::$id => PropField::decode_field(&mut properties.$field, property, &mut block_reader, block)?,)*
                        other => return Err(unexpected(other)),
                    }
                }
                Ok(properties)
            }

            /// Size of the block's content, without the length prefix.
            pub(crate) fn content_len(&self) -> Result<usize, EncodeError> {
                let mut len = 0usize;
                $(len += PropField::field_len(&self.$field, id::$id)?;)*
                Ok(len)
            }

            /// Size of the block with its length prefix.
            pub(crate) fn block_len(&self) -> Result<usize, EncodeError> {
                let content = self.content_len()?;
                Ok(var_int_len(content as u32) + content)
            }

            /// Writes the block with its length prefix.
            pub(crate) fn write_block(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
                let content = u32::try_from(self.content_len()?).map_err(|_| EncodeError::PacketTooLarge)?;
                writer.var_int(content)?;
                $(PropField::write_field(&self.$field, id::$id, writer)?;)*
                Ok(())
            }

            /// True when no property is present.
            pub fn is_empty(&self) -> bool {
                self.content_len() == Ok(0)
            }
        }
    };
}

properties! {
    /// CONNECT properties (§3.1.2.11).
    ConnectProperties {
        /// Seconds the session outlives the connection; absent means 0.
        session_expiry_interval: Option<u32> = SESSION_EXPIRY_INTERVAL,
        /// QoS 1 and 2 publications the client accepts in flight; absent means 65,535.
        receive_maximum: Option<NonZeroU16> = RECEIVE_MAXIMUM,
        /// Largest packet the client accepts; absent means no limit.
        maximum_packet_size: Option<NonZeroU32> = MAXIMUM_PACKET_SIZE,
        /// Highest topic alias the client accepts; absent means 0 (none).
        topic_alias_maximum: Option<u16> = TOPIC_ALIAS_MAXIMUM,
        /// Whether the client wants Response Information in CONNACK.
        request_response_information: Option<bool> = REQUEST_RESPONSE_INFORMATION,
        /// Whether reason strings and user properties may be sent on failures; absent means true.
        request_problem_information: Option<bool> = REQUEST_PROBLEM_INFORMATION,
        /// User properties, in order.
        user_properties: Repeated<'a, UserProperty<'a>> = USER_PROPERTY,
        /// Extended authentication method.
        authentication_method: Option<&'a str> = AUTHENTICATION_METHOD,
        /// Extended authentication data.
        authentication_data: Option<&'a [u8]> = AUTHENTICATION_DATA,
    }
}

properties! {
    /// Will properties, in the CONNECT payload (§3.1.3.2).
    WillProperties {
        /// Seconds to wait before publishing the will.
        will_delay_interval: Option<u32> = WILL_DELAY_INTERVAL,
        /// True when the payload is UTF-8 text.
        payload_format_indicator: Option<bool> = PAYLOAD_FORMAT_INDICATOR,
        /// Lifetime of the will message in seconds.
        message_expiry_interval: Option<u32> = MESSAGE_EXPIRY_INTERVAL,
        /// MIME-like description of the payload.
        content_type: Option<&'a str> = CONTENT_TYPE,
        /// Topic for a response (request/response).
        response_topic: Option<&'a str> = RESPONSE_TOPIC,
        /// Correlation data for request/response.
        correlation_data: Option<&'a [u8]> = CORRELATION_DATA,
        /// User properties, in order.
        user_properties: Repeated<'a, UserProperty<'a>> = USER_PROPERTY,
    }
}

properties! {
    /// CONNACK properties (§3.2.2.3).
    ConnAckProperties {
        /// Session expiry the server uses, if different from the client's.
        session_expiry_interval: Option<u32> = SESSION_EXPIRY_INTERVAL,
        /// QoS 1 and 2 publications the server accepts in flight.
        receive_maximum: Option<NonZeroU16> = RECEIVE_MAXIMUM,
        /// Highest QoS the server supports (0 or 1; absent means 2).
        maximum_qos: Option<QoS> = MAXIMUM_QOS,
        /// Whether the server supports retained messages.
        retain_available: Option<bool> = RETAIN_AVAILABLE,
        /// Largest packet the server accepts.
        maximum_packet_size: Option<NonZeroU32> = MAXIMUM_PACKET_SIZE,
        /// Client identifier the server assigned to an empty one.
        assigned_client_identifier: Option<&'a str> = ASSIGNED_CLIENT_IDENTIFIER,
        /// Highest topic alias the server accepts.
        topic_alias_maximum: Option<u16> = TOPIC_ALIAS_MAXIMUM,
        /// Human-readable diagnostic.
        reason_string: Option<&'a str> = REASON_STRING,
        /// User properties, in order.
        user_properties: Repeated<'a, UserProperty<'a>> = USER_PROPERTY,
        /// Whether wildcard subscriptions are supported.
        wildcard_subscription_available: Option<bool> = WILDCARD_SUBSCRIPTION_AVAILABLE,
        /// Whether subscription identifiers are supported.
        subscription_identifiers_available: Option<bool> = SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        /// Whether shared subscriptions are supported.
        shared_subscription_available: Option<bool> = SHARED_SUBSCRIPTION_AVAILABLE,
        /// Keep alive the client must use instead of its own.
        server_keep_alive: Option<u16> = SERVER_KEEP_ALIVE,
        /// Basis for response topics (request/response).
        response_information: Option<&'a str> = RESPONSE_INFORMATION,
        /// Another server the client can use.
        server_reference: Option<&'a str> = SERVER_REFERENCE,
        /// Extended authentication method.
        authentication_method: Option<&'a str> = AUTHENTICATION_METHOD,
        /// Extended authentication data.
        authentication_data: Option<&'a [u8]> = AUTHENTICATION_DATA,
    }
}

properties! {
    /// PUBLISH properties (§3.3.2.3).
    PublishProperties {
        /// True when the payload is UTF-8 text.
        payload_format_indicator: Option<bool> = PAYLOAD_FORMAT_INDICATOR,
        /// Lifetime of the message in seconds (the remaining lifetime when forwarded).
        message_expiry_interval: Option<u32> = MESSAGE_EXPIRY_INTERVAL,
        /// Topic alias standing for the topic name.
        topic_alias: Option<NonZeroU16> = TOPIC_ALIAS,
        /// Topic for a response (request/response).
        response_topic: Option<&'a str> = RESPONSE_TOPIC,
        /// Correlation data for request/response.
        correlation_data: Option<&'a [u8]> = CORRELATION_DATA,
        /// User properties, in order.
        user_properties: Repeated<'a, UserProperty<'a>> = USER_PROPERTY,
        /// Identifiers of the subscriptions that matched (server to client only).
        subscription_identifiers: Repeated<'a, SubscriptionId> = SUBSCRIPTION_IDENTIFIER,
        /// MIME-like description of the payload.
        content_type: Option<&'a str> = CONTENT_TYPE,
    }
}

properties! {
    /// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
    AckProperties {
        /// Human-readable diagnostic.
        reason_string: Option<&'a str> = REASON_STRING,
        /// User properties, in order.
        user_properties: Repeated<'a, UserProperty<'a>> = USER_PROPERTY,
    }
}

properties! {
    /// SUBSCRIBE properties (§3.8.2.1).
    SubscribeProperties {
        /// Identifier attached to messages delivered through these subscriptions.
        subscription_identifier: Option<SubscriptionId> = SUBSCRIPTION_IDENTIFIER,
        /// User properties, in order.
        user_properties: Repeated<'a, UserProperty<'a>> = USER_PROPERTY,
    }
}

properties! {
    /// UNSUBSCRIBE properties (§3.10.2.1).
    UnsubscribeProperties {
        /// User properties, in order.
        user_properties: Repeated<'a, UserProperty<'a>> = USER_PROPERTY,
    }
}

properties! {
    /// DISCONNECT properties (§3.14.2.2).
    DisconnectProperties {
        /// New session expiry (client to server only).
        session_expiry_interval: Option<u32> = SESSION_EXPIRY_INTERVAL,
        /// Human-readable diagnostic.
        reason_string: Option<&'a str> = REASON_STRING,
        /// User properties, in order.
        user_properties: Repeated<'a, UserProperty<'a>> = USER_PROPERTY,
        /// Another server the client can use.
        server_reference: Option<&'a str> = SERVER_REFERENCE,
    }
}

properties! {
    /// AUTH properties (§3.15.2.2).
    AuthProperties {
        /// Extended authentication method.
        authentication_method: Option<&'a str> = AUTHENTICATION_METHOD,
        /// Extended authentication data.
        authentication_data: Option<&'a [u8]> = AUTHENTICATION_DATA,
        /// Human-readable diagnostic.
        reason_string: Option<&'a str> = REASON_STRING,
        /// User properties, in order.
        user_properties: Repeated<'a, UserProperty<'a>> = USER_PROPERTY,
    }
}
