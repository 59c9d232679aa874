//! PUBLISH (§3.3) and its acknowledgements PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4 to §3.7).

use core::num::NonZeroU16;

use super::connect::check_response_topic;
use super::props::{AckProperties, PublishProperties};
use super::wire::{Reader, Writer, binary_len};
use super::{
    DecodeError, EncodeError, PacketType, ReasonCode, read_packet_id, read_reason, total_len,
};
use crate::topic::{TopicError, validate_name};
use crate::{ProtocolVersion, QoS};

/// QoS of a PUBLISH together with its Packet Identifier, which exists exactly when QoS > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosPid {
    /// QoS 0: no packet identifier.
    AtMostOnce,
    /// QoS 1 with its packet identifier.
    AtLeastOnce(NonZeroU16),
    /// QoS 2 with its packet identifier.
    ExactlyOnce(NonZeroU16),
}

impl QosPid {
    /// The QoS.
    pub const fn qos(self) -> QoS {
        match self {
            QosPid::AtMostOnce => QoS::AtMostOnce,
            QosPid::AtLeastOnce(_) => QoS::AtLeastOnce,
            QosPid::ExactlyOnce(_) => QoS::ExactlyOnce,
        }
    }

    /// The packet identifier, for QoS 1 and 2.
    pub const fn packet_id(self) -> Option<NonZeroU16> {
        match self {
            QosPid::AtMostOnce => None,
            QosPid::AtLeastOnce(id) | QosPid::ExactlyOnce(id) => Some(id),
        }
    }
}

/// An application message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Publish<'a> {
    /// Redelivery of an earlier attempt (never set with QoS 0).
    pub dup: bool,
    /// QoS and packet identifier.
    pub qos_pid: QosPid,
    /// Retain flag.
    pub retain: bool,
    /// Topic name; empty in MQTT 5 when a topic alias stands for it.
    pub topic: &'a str,
    /// Properties (MQTT 5; empty otherwise).
    pub properties: PublishProperties<'a>,
    /// Application payload.
    pub payload: &'a [u8],
}

impl<'a> Publish<'a> {
    pub(crate) fn decode(
        flags: u8,
        reader: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let dup = flags & 0b1000 != 0;
        let retain = flags & 0b0001 != 0;
        let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQoS)?;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::DupOnQoS0);
        }
        let (topic, special) = reader.topic_name()?;
        let qos_pid = match qos {
            QoS::AtMostOnce => QosPid::AtMostOnce,
            QoS::AtLeastOnce => QosPid::AtLeastOnce(read_packet_id(reader)?),
            QoS::ExactlyOnce => QosPid::ExactlyOnce(read_packet_id(reader)?),
        };
        let properties = if version.is_v5() {
            PublishProperties::decode(reader)?
        } else {
            PublishProperties::default()
        };
        // A non-empty name without `+`, `#` or U+0000 is valid (its length fits in 16 bits).
        let checked = if special || topic.is_empty() {
            validate_name(topic)
        } else {
            Ok(())
        };
        match checked {
            Ok(()) => {}
            Err(TopicError::Empty) if version.is_v5() && properties.topic_alias.is_some() => {}
            Err(TopicError::Empty) if version.is_v5() => {
                return Err(DecodeError::EmptyTopicWithoutAlias);
            }
            Err(error) => return Err(DecodeError::InvalidTopicName(error)),
        }
        check_response_topic(properties.response_topic)?;
        let payload = reader.rest();
        Ok(Publish {
            dup,
            qos_pid,
            retain,
            topic,
            properties,
            payload,
        })
    }

    /// The fixed header flags: DUP, QoS, RETAIN.
    pub(crate) fn flags(&self) -> u8 {
        (u8::from(self.dup && self.qos_pid != QosPid::AtMostOnce) << 3)
            | ((self.qos_pid.qos() as u8) << 1)
            | u8::from(self.retain)
    }

    fn variable_header_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        // An empty topic stands only for an MQTT 5 topic alias (§3.3.2.1).
        if self.topic.is_empty() && !(version.is_v5() && self.properties.topic_alias.is_some()) {
            return Err(EncodeError::EmptyTopic);
        }
        let mut len = binary_len(self.topic.len())?;
        if self.qos_pid.packet_id().is_some() {
            len += 2;
        }
        if version.is_v5() {
            len += self.properties.block_len()?;
        }
        Ok(len)
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        Ok(self.variable_header_len(version)? + self.payload.len())
    }

    pub(crate) fn write_variable_header(
        &self,
        writer: &mut Writer<'_>,
        version: ProtocolVersion,
    ) -> Result<(), EncodeError> {
        writer.utf8(self.topic)?;
        if let Some(packet_id) = self.qos_pid.packet_id() {
            writer.u16(packet_id.get())?;
        }
        if version.is_v5() {
            self.properties.write_block(writer)?;
        }
        Ok(())
    }

    /// Encodes everything but the payload (fixed header, topic, packet id, properties), so a
    /// payload shared by many subscribers can be sent after it with a vectored write.
    /// Returns the header's length; the packet is that plus `payload.len()` bytes.
    pub fn encode_header(
        &self,
        version: ProtocolVersion,
        buf: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let body = self.body_len(version)?;
        let header = total_len(body)? - self.payload.len();
        if buf.len() < header {
            return Err(EncodeError::BufferTooSmall { needed: header });
        }
        let mut writer = Writer::new(buf);
        writer.u8((PacketType::Publish as u8) << 4 | self.flags())?;
        writer.var_int(body as u32)?;
        self.write_variable_header(&mut writer, version)?;
        Ok(writer.position())
    }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP: which one is given by the [`super::Packet`] variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ack<'a> {
    /// The acknowledged packet identifier.
    pub packet_id: NonZeroU16,
    /// The outcome (MQTT 5; always success in 3.1.1).
    pub reason: ReasonCode,
    /// Properties (MQTT 5; empty otherwise).
    pub properties: AckProperties<'a>,
}

impl<'a> Ack<'a> {
    /// A successful acknowledgement with no properties.
    pub fn success(packet_id: NonZeroU16) -> Self {
        Ack {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: AckProperties::default(),
        }
    }

    pub(crate) fn decode(
        kind: PacketType,
        reader: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(reader)?;
        let mut ack = Ack::success(packet_id);
        // MQTT 5 lets the reason code and properties be omitted (§3.4.2.1).
        if version.is_v5() && !reader.is_empty() {
            ack.reason = read_reason(reader, kind)?;
            if !reader.is_empty() {
                ack.properties = AckProperties::decode(reader)?;
            }
        }
        reader.finish()?;
        Ok(ack)
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        if !version.is_v5() {
            return Ok(2);
        }
        Ok(
            match (
                self.reason == ReasonCode::SUCCESS,
                self.properties.is_empty(),
            ) {
                (true, true) => 2,
                (_, true) => 3,
                (_, false) => 3 + self.properties.block_len()?,
            },
        )
    }

    pub(crate) fn write_body(
        &self,
        writer: &mut Writer<'_>,
        version: ProtocolVersion,
    ) -> Result<(), EncodeError> {
        writer.u16(self.packet_id.get())?;
        let len = self.body_len(version)?;
        if len >= 3 {
            writer.u8(self.reason.0)?;
        }
        if len > 3 {
            self.properties.write_block(writer)?;
        }
        Ok(())
    }
}
