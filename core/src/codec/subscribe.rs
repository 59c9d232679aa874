//! SUBSCRIBE, SUBACK (§3.8, §3.9), UNSUBSCRIBE and UNSUBACK (§3.10, §3.11).

use core::num::NonZeroU16;

use super::props::{AckProperties, SubscribeProperties, UnsubscribeProperties};
use super::repeated::{EncodeItem, Repeated, RepeatedItem, list_len, write_list};
use super::wire::{Reader, Writer, binary_len};
use super::{DecodeError, EncodeError, PacketType, ReasonCode, read_packet_id};
use crate::topic::{is_shared, validate_filter};
use crate::{ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};

/// One topic filter of a SUBSCRIBE with its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription<'a> {
    /// The topic filter, possibly `$share/{group}/{filter}`.
    pub filter: &'a str,
    /// The subscription options.
    pub options: SubscriptionOptions,
}

/// Parses a subscription options byte that the decoder has validated (MQTT 5 layout, which
/// reads a valid 3.1.1 byte correctly too).
fn options_from_byte(byte: u8) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::from_u8(byte & 0b11).unwrap_or_default(),
        no_local: byte & 0b0100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling: match (byte >> 4) & 0b11 {
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => RetainHandling::SendOnSubscribe,
        },
    }
}

/// Validates a subscription options byte for `version` (§3.8.3.1).
fn check_options(byte: u8, filter: &str, version: ProtocolVersion) -> Result<(), DecodeError> {
    let reserved = if version.is_v5() {
        0b1100_0000
    } else {
        0b1111_1100
    };
    if byte & reserved != 0 {
        return Err(DecodeError::ReservedSubscriptionOptions);
    }
    if byte & 0b11 == 3 {
        // MQTT 5 §3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value 3";
        // MQTT 3.1.1 treats it as malformed [MQTT-3-8.3-4].
        return Err(if version.is_v5() {
            DecodeError::InvalidSubscriptionQoS
        } else {
            DecodeError::InvalidQoS
        });
    }
    if (byte >> 4) & 0b11 == 3 {
        return Err(DecodeError::InvalidRetainHandling);
    }
    if byte & 0b0100 != 0 && is_shared(filter) {
        return Err(DecodeError::NoLocalOnSharedSubscription);
    }
    Ok(())
}

impl<'a> RepeatedItem<'a> for Subscription<'a> {
    fn next_encoded(bytes: &mut &'a [u8]) -> Option<Self> {
        let mut reader = Reader::new(bytes);
        let filter = reader.utf8().ok()?;
        let options = options_from_byte(reader.u8().ok()?);
        *bytes = reader.rest();
        Some(Subscription { filter, options })
    }
}

impl EncodeItem for Subscription<'_> {
    fn encoded_len(&self, _: ProtocolVersion) -> Result<usize, EncodeError> {
        Ok(binary_len(self.filter.len())? + 1)
    }
    fn write(&self, writer: &mut Writer<'_>, version: ProtocolVersion) -> Result<(), EncodeError> {
        writer.utf8(self.filter)?;
        writer.u8(self.options.to_byte(version))
    }
}

impl<'a> RepeatedItem<'a> for &'a str {
    fn next_encoded(bytes: &mut &'a [u8]) -> Option<Self> {
        let mut reader = Reader::new(bytes);
        let text = reader.utf8().ok()?;
        *bytes = reader.rest();
        Some(text)
    }
}

impl EncodeItem for &str {
    fn encoded_len(&self, _: ProtocolVersion) -> Result<usize, EncodeError> {
        binary_len(self.len())
    }
    fn write(&self, writer: &mut Writer<'_>, _: ProtocolVersion) -> Result<(), EncodeError> {
        writer.utf8(self)
    }
}

impl<'a> RepeatedItem<'a> for ReasonCode {
    fn next_encoded(bytes: &mut &'a [u8]) -> Option<Self> {
        let (&first, rest) = bytes.split_first()?;
        *bytes = rest;
        Some(ReasonCode(first))
    }
}

/// SUBACK reason codes are written as 3.1.1 return codes for 3.1.1 clients.
impl EncodeItem for ReasonCode {
    fn encoded_len(&self, _: ProtocolVersion) -> Result<usize, EncodeError> {
        Ok(1)
    }
    fn write(&self, writer: &mut Writer<'_>, version: ProtocolVersion) -> Result<(), EncodeError> {
        writer.u8(if version.is_v5() {
            self.0
        } else {
            self.to_v3_suback()
        })
    }
}

/// Reads a list of reason codes that must not be empty and must be allowed in `kind`
/// (3.1.1 SUBACK return codes are 0, 1, 2 or 0x80 `[MQTT-3.9.3-2]`).
fn read_reason_codes<'a>(
    reader: &mut Reader<'a>,
    kind: PacketType,
    version: ProtocolVersion,
) -> Result<Repeated<'a, ReasonCode>, DecodeError> {
    let codes = reader.rest();
    if codes.is_empty() {
        return Err(DecodeError::Truncated);
    }
    for &code in codes {
        let allowed = if version.is_v5() {
            ReasonCode(code).is_allowed_in(kind)
        } else {
            matches!(code, 0x00..=0x02 | 0x80)
        };
        if !allowed {
            return Err(DecodeError::InvalidReasonCode(code));
        }
    }
    Ok(Repeated::from_encoded(codes))
}

/// Walks a list of topic filters (with an options byte each when `with_options`), validating
/// every entry, and returns the validated bytes.
fn read_filters<'a>(
    reader: &mut Reader<'a>,
    version: ProtocolVersion,
    with_options: bool,
) -> Result<&'a [u8], DecodeError> {
    let payload = reader.rest();
    let mut entries = Reader::new(payload);
    if entries.is_empty() {
        return Err(DecodeError::NoTopicFilters);
    }
    while !entries.is_empty() {
        let filter = entries.utf8()?;
        validate_filter(filter).map_err(DecodeError::InvalidTopicFilter)?;
        if with_options {
            check_options(entries.u8()?, filter, version)?;
        }
    }
    Ok(payload)
}

/// A request to subscribe to one or more topic filters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Subscribe<'a> {
    /// Packet identifier.
    pub packet_id: NonZeroU16,
    /// Properties (MQTT 5; empty otherwise).
    pub properties: SubscribeProperties<'a>,
    /// The filters and their options, at least one.
    pub subscriptions: Repeated<'a, Subscription<'a>>,
}

impl<'a> Subscribe<'a> {
    pub(crate) fn decode(
        reader: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(reader)?;
        let properties = if version.is_v5() {
            SubscribeProperties::decode(reader)?
        } else {
            SubscribeProperties::default()
        };
        let subscriptions = Repeated::from_encoded(read_filters(reader, version, true)?);
        Ok(Subscribe {
            packet_id,
            properties,
            subscriptions,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        if self.subscriptions.is_empty() {
            return Err(EncodeError::NoTopicFilters);
        }
        let properties = if version.is_v5() {
            self.properties.block_len()?
        } else {
            0
        };
        Ok(2 + properties + list_len(&self.subscriptions, version)?)
    }

    pub(crate) fn write_body(
        &self,
        writer: &mut Writer<'_>,
        version: ProtocolVersion,
    ) -> Result<(), EncodeError> {
        writer.u16(self.packet_id.get())?;
        if version.is_v5() {
            self.properties.write_block(writer)?;
        }
        write_list(&self.subscriptions, writer, version)
    }
}

/// The answer to SUBSCRIBE: one reason code per filter, in order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubAck<'a> {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: NonZeroU16,
    /// Properties (MQTT 5; empty otherwise).
    pub properties: AckProperties<'a>,
    /// Granted QoS or failure per filter; 3.1.1 failures are written as 0x80.
    pub reason_codes: Repeated<'a, ReasonCode>,
}

impl<'a> SubAck<'a> {
    pub(crate) fn decode(
        reader: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(reader)?;
        let properties = if version.is_v5() {
            AckProperties::decode(reader)?
        } else {
            AckProperties::default()
        };
        let reason_codes = read_reason_codes(reader, PacketType::SubAck, version)?;
        Ok(SubAck {
            packet_id,
            properties,
            reason_codes,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let properties = if version.is_v5() {
            self.properties.block_len()?
        } else {
            0
        };
        if self.reason_codes.is_empty() {
            return Err(EncodeError::NoReasonCodes);
        }
        Ok(2 + properties + list_len(&self.reason_codes, version)?)
    }

    pub(crate) fn write_body(
        &self,
        writer: &mut Writer<'_>,
        version: ProtocolVersion,
    ) -> Result<(), EncodeError> {
        writer.u16(self.packet_id.get())?;
        if version.is_v5() {
            self.properties.write_block(writer)?;
        }
        write_list(&self.reason_codes, writer, version)
    }
}

/// A request to remove one or more subscriptions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unsubscribe<'a> {
    /// Packet identifier.
    pub packet_id: NonZeroU16,
    /// Properties (MQTT 5; empty otherwise).
    pub properties: UnsubscribeProperties<'a>,
    /// The topic filters, at least one.
    pub filters: Repeated<'a, &'a str>,
}

impl<'a> Unsubscribe<'a> {
    pub(crate) fn decode(
        reader: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(reader)?;
        let properties = if version.is_v5() {
            UnsubscribeProperties::decode(reader)?
        } else {
            UnsubscribeProperties::default()
        };
        let filters = Repeated::from_encoded(read_filters(reader, version, false)?);
        Ok(Unsubscribe {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::NoTopicFilters);
        }
        let properties = if version.is_v5() {
            self.properties.block_len()?
        } else {
            0
        };
        Ok(2 + properties + list_len(&self.filters, version)?)
    }

    pub(crate) fn write_body(
        &self,
        writer: &mut Writer<'_>,
        version: ProtocolVersion,
    ) -> Result<(), EncodeError> {
        writer.u16(self.packet_id.get())?;
        if version.is_v5() {
            self.properties.write_block(writer)?;
        }
        write_list(&self.filters, writer, version)
    }
}

/// The answer to UNSUBSCRIBE. MQTT 3.1.1 UNSUBACKs carry only the packet identifier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnsubAck<'a> {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: NonZeroU16,
    /// Properties (MQTT 5; empty otherwise).
    pub properties: AckProperties<'a>,
    /// Outcome per filter (MQTT 5; empty and not sent in 3.1.1).
    pub reason_codes: Repeated<'a, ReasonCode>,
}

impl<'a> UnsubAck<'a> {
    pub(crate) fn decode(
        reader: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(reader)?;
        if !version.is_v5() {
            reader.finish()?;
            return Ok(UnsubAck {
                packet_id,
                properties: AckProperties::default(),
                reason_codes: Repeated::default(),
            });
        }
        let properties = AckProperties::decode(reader)?;
        let reason_codes = read_reason_codes(reader, PacketType::UnsubAck, version)?;
        Ok(UnsubAck {
            packet_id,
            properties,
            reason_codes,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        if !version.is_v5() {
            return Ok(2);
        }
        if self.reason_codes.is_empty() {
            return Err(EncodeError::NoReasonCodes);
        }
        Ok(2 + self.properties.block_len()? + list_len(&self.reason_codes, version)?)
    }

    pub(crate) fn write_body(
        &self,
        writer: &mut Writer<'_>,
        version: ProtocolVersion,
    ) -> Result<(), EncodeError> {
        writer.u16(self.packet_id.get())?;
        if version.is_v5() {
            self.properties.write_block(writer)?;
            write_list(&self.reason_codes, writer, version)?;
        }
        Ok(())
    }
}
