//! DISCONNECT (§3.14) and AUTH (§3.15): packets whose reason code and properties may both be
//! omitted when the reason is success and there are no properties.

use super::props::{AuthProperties, DisconnectProperties};
use super::wire::{Reader, Writer};
use super::{DecodeError, EncodeError, PacketType, ReasonCode, read_reason};
use crate::ProtocolVersion;

/// A notice that the connection is closing, from either side.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Disconnect<'a> {
    /// Why (MQTT 5; a 3.1.1 DISCONNECT is always a normal disconnection).
    pub reason: ReasonCode,
    /// Properties (MQTT 5; empty otherwise).
    pub properties: DisconnectProperties<'a>,
}

impl Default for ReasonCode {
    fn default() -> Self {
        ReasonCode::SUCCESS
    }
}

impl<'a> Disconnect<'a> {
    /// A disconnect with `reason` and no properties.
    pub fn with_reason(reason: ReasonCode) -> Self {
        Disconnect {
            reason,
            properties: DisconnectProperties::default(),
        }
    }

    pub(crate) fn decode(
        reader: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let mut disconnect = Disconnect::default();
        if version.is_v5() && !reader.is_empty() {
            disconnect.reason = read_reason(reader, PacketType::Disconnect)?;
            if !reader.is_empty() {
                disconnect.properties = DisconnectProperties::decode(reader)?;
            }
        }
        reader.finish()?;
        Ok(disconnect)
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        if !version.is_v5() {
            return Ok(0);
        }
        short_form_len(self.reason, self.properties.is_empty(), || {
            self.properties.block_len()
        })
    }

    pub(crate) fn write_body(
        &self,
        writer: &mut Writer<'_>,
        version: ProtocolVersion,
    ) -> Result<(), EncodeError> {
        let len = self.body_len(version)?;
        write_short_form(writer, len, self.reason, |writer| {
            self.properties.write_block(writer)
        })
    }
}

/// The body length of a packet that omits what it can: nothing for success without properties,
/// the reason code alone without properties, or both.
fn short_form_len(
    reason: ReasonCode,
    no_properties: bool,
    block_len: impl FnOnce() -> Result<usize, EncodeError>,
) -> Result<usize, EncodeError> {
    Ok(match (reason == ReasonCode::SUCCESS, no_properties) {
        (true, true) => 0,
        (_, true) => 1,
        (_, false) => 1 + block_len()?,
    })
}

/// Writes the parts [`short_form_len`] kept for a body of `len` bytes.
fn write_short_form(
    writer: &mut Writer<'_>,
    len: usize,
    reason: ReasonCode,
    write_block: impl FnOnce(&mut Writer<'_>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    if len >= 1 {
        writer.u8(reason.0)?;
    }
    if len > 1 {
        write_block(writer)?;
    }
    Ok(())
}

/// An extended authentication exchange step (MQTT 5 only).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Auth<'a> {
    /// Success, Continue authentication or Re-authenticate.
    pub reason: ReasonCode,
    /// Properties: the method and data of the exchange.
    pub properties: AuthProperties<'a>,
}

impl<'a> Auth<'a> {
    pub(crate) fn decode(reader: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let mut auth = Auth::default();
        if !reader.is_empty() {
            auth.reason = read_reason(reader, PacketType::Auth)?;
            // Only a Remaining Length of 0 may omit the Property Length (§3.15.2.1); unlike
            // PUBACK or DISCONNECT, AUTH has no reason-code-only form.
            auth.properties = AuthProperties::decode(reader)?;
            // Omitting the Authentication Method is a Protocol Error (§3.15.2.2.2).
            if auth.properties.authentication_method.is_none() {
                return Err(DecodeError::AuthWithoutMethod);
            }
        }
        reader.finish()?;
        Ok(auth)
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        if !version.is_v5() {
            return Err(EncodeError::NotInVersion);
        }
        // Reason code and Property Length are omitted together or not at all (§3.15.2.1).
        if self.reason == ReasonCode::SUCCESS && self.properties.is_empty() {
            return Ok(0);
        }
        // Otherwise the Authentication Method is required (§3.15.2.2.2).
        if self.properties.authentication_method.is_none() {
            return Err(EncodeError::MissingAuthMethod);
        }
        Ok(1 + self.properties.block_len()?)
    }

    pub(crate) fn write_body(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
        let len = self.body_len(ProtocolVersion::V5)?;
        write_short_form(writer, len, self.reason, |writer| {
            self.properties.write_block(writer)
        })
    }
}
