//! CONNECT (§3.1) and CONNACK (§3.2).

use super::props::{ConnAckProperties, ConnectProperties, WillProperties};
use super::wire::{Reader, Writer, binary_len};
use super::{DecodeError, EncodeError, PacketType, ReasonCode, read_reason};
use crate::topic::validate_name;
use crate::{ProtocolVersion, QoS};

/// A client's request to connect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Connect<'a> {
    /// The protocol version the client speaks, from the protocol name and level.
    pub version: ProtocolVersion,
    /// Clean Start (MQTT 5) or Clean Session (3.1.1).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// Properties (MQTT 5; empty otherwise).
    pub properties: ConnectProperties<'a>,
    /// Client identifier; may be empty.
    pub client_id: &'a str,
    /// Will message, if the Will Flag is set.
    pub will: Option<Will<'a>>,
    /// User name, if the User Name Flag is set.
    pub username: Option<&'a str>,
    /// Password, if the Password Flag is set.
    pub password: Option<&'a [u8]>,
}

/// A will message, published by the server when the connection ends abnormally.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Will<'a> {
    /// Will properties (MQTT 5; empty otherwise).
    pub properties: WillProperties<'a>,
    /// Topic name.
    pub topic: &'a str,
    /// Payload.
    pub payload: &'a [u8],
    /// QoS to publish with.
    pub qos: QoS,
    /// Whether the will is retained.
    pub retain: bool,
}

mod flag {
    pub const RESERVED: u8 = 0x01;
    pub const CLEAN_START: u8 = 0x02;
    pub const WILL: u8 = 0x04;
    pub const WILL_QOS_SHIFT: u8 = 3;
    pub const WILL_RETAIN: u8 = 0x20;
    pub const PASSWORD: u8 = 0x40;
    pub const USERNAME: u8 = 0x80;
}

/// Protocol name bytes and level for a version (§3.1.2.1, §3.1.2.2).
const fn protocol_name(version: ProtocolVersion) -> &'static [u8] {
    match version {
        ProtocolVersion::V3_1 => b"MQIsdp",
        ProtocolVersion::V3_1_1 | ProtocolVersion::V5 => b"MQTT",
    }
}

/// Checks a Response Topic: a topic name, so no wildcards `[MQTT-3.3.2-14]`.
pub(crate) fn check_response_topic(topic: Option<&str>) -> Result<(), DecodeError> {
    match topic {
        Some(topic) => validate_name(topic).map_err(|_| DecodeError::InvalidResponseTopic),
        None => Ok(()),
    }
}

impl<'a> Connect<'a> {
    pub(crate) fn decode(reader: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let name = reader.binary()?;
        let level = reader.u8()?;
        let version = match (name, level) {
            (b"MQTT", 4) => ProtocolVersion::V3_1_1,
            (b"MQTT", 5) => ProtocolVersion::V5,
            (b"MQIsdp", 3) => ProtocolVersion::V3_1,
            (b"MQTT" | b"MQIsdp", level) => {
                return Err(DecodeError::UnsupportedProtocolLevel(level));
            }
            _ => return Err(DecodeError::InvalidProtocolName),
        };
        let flags = reader.u8()?;
        if flags & flag::RESERVED != 0 {
            return Err(DecodeError::ReservedConnectFlag);
        }
        let has_will = flags & flag::WILL != 0;
        let will_qos = (flags >> flag::WILL_QOS_SHIFT) & 0b11;
        let will_retain = flags & flag::WILL_RETAIN != 0;
        if !has_will && (will_qos != 0 || will_retain) {
            return Err(DecodeError::InvalidWillFlags);
        }
        let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidWillFlags)?;
        let has_username = flags & flag::USERNAME != 0;
        let has_password = flags & flag::PASSWORD != 0;
        if !version.is_v5() && has_password && !has_username {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = reader.u16()?;
        let properties = if version.is_v5() {
            let properties = ConnectProperties::decode(reader)?;
            if properties.authentication_data.is_some()
                && properties.authentication_method.is_none()
            {
                return Err(DecodeError::AuthDataWithoutMethod);
            }
            properties
        } else {
            ConnectProperties::default()
        };
        let client_id = reader.utf8()?;
        let will = if has_will {
            let properties = if version.is_v5() {
                WillProperties::decode(reader)?
            } else {
                WillProperties::default()
            };
            check_response_topic(properties.response_topic)?;
            let topic = reader.utf8()?;
            validate_name(topic).map_err(DecodeError::InvalidTopicName)?;
            let payload = reader.binary()?;
            Some(Will {
                properties,
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(reader.utf8()?)
        } else {
            None
        };
        let password = if has_password {
            Some(reader.binary()?)
        } else {
            None
        };
        reader.finish()?;
        Ok(Connect {
            version,
            clean_start: flags & flag::CLEAN_START != 0,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
        })
    }

    fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.clean_start {
            flags |= flag::CLEAN_START;
        }
        if let Some(will) = &self.will {
            flags |= flag::WILL | (will.qos as u8) << flag::WILL_QOS_SHIFT;
            if will.retain {
                flags |= flag::WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= flag::USERNAME;
        }
        if self.password.is_some() {
            flags |= flag::PASSWORD;
        }
        flags
    }

    pub(crate) fn body_len(&self) -> Result<usize, EncodeError> {
        let v5 = self.version.is_v5();
        let mut len = binary_len(protocol_name(self.version).len())? + 1 + 1 + 2;
        if v5 {
            len += self.properties.block_len()?;
        }
        len += binary_len(self.client_id.len())?;
        if let Some(will) = &self.will {
            if v5 {
                len += will.properties.block_len()?;
            }
            len += binary_len(will.topic.len())? + binary_len(will.payload.len())?;
        }
        if let Some(username) = self.username {
            len += binary_len(username.len())?;
        }
        if let Some(password) = self.password {
            len += binary_len(password.len())?;
        }
        Ok(len)
    }

    pub(crate) fn write_body(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
        let v5 = self.version.is_v5();
        writer.binary(protocol_name(self.version))?;
        writer.u8(self.version.level())?;
        writer.u8(self.flags())?;
        writer.u16(self.keep_alive)?;
        if v5 {
            self.properties.write_block(writer)?;
        }
        writer.utf8(self.client_id)?;
        if let Some(will) = &self.will {
            if v5 {
                will.properties.write_block(writer)?;
            }
            writer.utf8(will.topic)?;
            writer.binary(will.payload)?;
        }
        if let Some(username) = self.username {
            writer.utf8(username)?;
        }
        if let Some(password) = self.password {
            writer.binary(password)?;
        }
        Ok(())
    }
}

/// The server's answer to CONNECT.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnAck<'a> {
    /// Whether the server resumed an existing session.
    pub session_present: bool,
    /// The outcome. In MQTT 3.1.1 it travels as a return code ([`ReasonCode::to_v3_connack`]).
    pub reason: ReasonCode,
    /// Properties (MQTT 5; empty otherwise).
    pub properties: ConnAckProperties<'a>,
}

impl<'a> ConnAck<'a> {
    pub(crate) fn decode(
        reader: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let flags = reader.u8()?;
        if flags & 0xFE != 0 {
            return Err(DecodeError::ReservedConnAckFlags);
        }
        let session_present = flags & 0x01 != 0;
        let (reason, properties) = if version.is_v5() {
            let reason = read_reason(reader, PacketType::ConnAck)?;
            (reason, ConnAckProperties::decode(reader)?)
        } else {
            let code = reader.u8()?;
            let reason =
                ReasonCode::from_v3_connack(code).ok_or(DecodeError::InvalidReasonCode(code))?;
            (reason, ConnAckProperties::default())
        };
        if session_present && reason.is_error() {
            return Err(DecodeError::SessionPresentOnFailure);
        }
        reader.finish()?;
        Ok(ConnAck {
            session_present,
            reason,
            properties,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        Ok(2 + if version.is_v5() {
            self.properties.block_len()?
        } else {
            0
        })
    }

    pub(crate) fn write_body(
        &self,
        writer: &mut Writer<'_>,
        version: ProtocolVersion,
    ) -> Result<(), EncodeError> {
        // Session Present must be 0 with a failure [MQTT-3.2.2-6].
        writer.u8(u8::from(self.session_present && !self.reason.is_error()))?;
        if version.is_v5() {
            writer.u8(self.reason.0)?;
            self.properties.write_block(writer)
        } else {
            writer.u8(self.reason.to_v3_connack())
        }
    }
}
