//! Byte-level primitives: a bounds-checked reader over a borrowed packet, a writer into a
//! caller's buffer, and MQTT's Variable Byte Integer (§1.5.5).

use super::{DecodeError, EncodeError};

/// Largest value a Variable Byte Integer can hold (four bytes).
pub const VAR_INT_MAX: u32 = 268_435_455;

/// Outcome of reading a Variable Byte Integer from a prefix of `bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarInt {
    /// The value and how many bytes encoded it.
    Complete(u32, usize),
    /// The bytes end inside the integer.
    Incomplete,
}

/// Reads a Variable Byte Integer, rejecting overlong and non-minimal forms `[MQTT-1.5.5-1]`.
pub(crate) fn read_var_int(bytes: &[u8]) -> Result<VarInt, DecodeError> {
    let mut value: u32 = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        if index == 4 {
            return Err(DecodeError::VarIntTooLong);
        }
        value |= u32::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            // A last byte of zero after the first means a shorter encoding existed.
            if byte == 0 && index > 0 {
                return Err(DecodeError::VarIntNotMinimal);
            }
            return Ok(VarInt::Complete(value, index + 1));
        }
    }
    if bytes.len() >= 4 {
        return Err(DecodeError::VarIntTooLong);
    }
    Ok(VarInt::Incomplete)
}

/// Bytes needed to encode `value` as a Variable Byte Integer.
pub const fn var_int_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// A cursor over the bytes of one packet. Every read is bounds-checked and fails with
/// [`DecodeError::Truncated`] instead of panicking.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// Everything not read yet, consuming it.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.bytes)
    }

    pub(crate) fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        if count > self.bytes.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.bytes.split_at(count);
        self.bytes = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&first, tail) = self.bytes.split_first().ok_or(DecodeError::Truncated)?;
        self.bytes = tail;
        Ok(first)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub(crate) fn var_int(&mut self) -> Result<u32, DecodeError> {
        match read_var_int(self.bytes)? {
            VarInt::Complete(value, used) => {
                self.bytes = self.bytes.get(used..).unwrap_or_default();
                Ok(value)
            }
            VarInt::Incomplete => Err(DecodeError::Truncated),
        }
    }

    /// Binary Data: a two-byte length and that many bytes (§1.5.6).
    pub(crate) fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// UTF-8 Encoded String: well-formed UTF-8 without U+0000 (§1.5.4).
    pub(crate) fn utf8(&mut self) -> Result<&'a str, DecodeError> {
        let bytes = self.binary()?;
        let text = core::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
        if bytes.contains(&0) {
            return Err(DecodeError::NullCharacter);
        }
        Ok(text)
    }

    /// A PUBLISH topic name: [`Reader::utf8`], with the scan for U+0000 shared with the one for
    /// wildcards, and whether the name holds `+` or `#` (then it needs
    /// [`validate_name`](crate::topic::validate_name)'s full check; most topics have neither).
    pub(crate) fn topic_name(&mut self) -> Result<(&'a str, bool), DecodeError> {
        let bytes = self.binary()?;
        let text = core::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
        let special = crate::topic::has_null_or_wildcard(bytes);
        if special && bytes.contains(&0) {
            return Err(DecodeError::NullCharacter);
        }
        Ok((text, special))
    }

    /// Fails unless every byte was read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// Writes into a caller-provided buffer. Encoders size the packet first and check the buffer
/// once, so these checks never fire in practice; they keep the encoder panic-free regardless.
pub(crate) struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> Writer<'b> {
    pub(crate) fn new(buf: &'b mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self.pos + bytes.len();
        let target = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(EncodeError::BufferTooSmall { needed: end })?;
        target.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    pub(crate) fn u8(&mut self, value: u8) -> Result<(), EncodeError> {
        self.bytes(&[value])
    }

    pub(crate) fn u16(&mut self, value: u16) -> Result<(), EncodeError> {
        self.bytes(&value.to_be_bytes())
    }

    pub(crate) fn u32(&mut self, value: u32) -> Result<(), EncodeError> {
        self.bytes(&value.to_be_bytes())
    }

    pub(crate) fn var_int(&mut self, mut value: u32) -> Result<(), EncodeError> {
        if value > VAR_INT_MAX {
            return Err(EncodeError::PacketTooLarge);
        }
        loop {
            let mut byte = (value & 0x7F) as u8;
            value >>= 7;
            if value > 0 {
                byte |= 0x80;
            }
            self.u8(byte)?;
            if value == 0 {
                return Ok(());
            }
        }
    }

    pub(crate) fn binary(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::FieldTooLong)?;
        self.u16(len)?;
        self.bytes(bytes)
    }

    pub(crate) fn utf8(&mut self, text: &str) -> Result<(), EncodeError> {
        self.binary(text.as_bytes())
    }
}

/// Encoded size of Binary Data or a UTF-8 string of `len` bytes, or an error past 65,535.
pub(crate) fn binary_len(len: usize) -> Result<usize, EncodeError> {
    if len > usize::from(u16::MAX) {
        Err(EncodeError::FieldTooLong)
    } else {
        Ok(2 + len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_int_boundaries_from_the_spec_table() {
        // §1.5.5, table 1-1: the edges of each length.
        let cases: &[(&[u8], u32)] = &[
            (&[0x00], 0),
            (&[0x7F], 127),
            (&[0x80, 0x01], 128),
            (&[0xFF, 0x7F], 16_383),
            (&[0x80, 0x80, 0x01], 16_384),
            (&[0xFF, 0xFF, 0x7F], 2_097_151),
            (&[0x80, 0x80, 0x80, 0x01], 2_097_152),
            (&[0xFF, 0xFF, 0xFF, 0x7F], 268_435_455),
        ];
        for &(bytes, value) in cases {
            assert_eq!(
                read_var_int(bytes),
                Ok(VarInt::Complete(value, bytes.len()))
            );
            assert_eq!(var_int_len(value), bytes.len());
            let mut buf = [0u8; 4];
            let mut writer = Writer::new(&mut buf);
            writer.var_int(value).unwrap();
            let written = writer.position();
            assert_eq!(&buf[..written], bytes);
        }
    }

    #[test]
    fn mqtt_1_5_5_1_var_int_rejects_five_bytes_and_non_minimal_forms() {
        assert_eq!(
            read_var_int(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            Err(DecodeError::VarIntTooLong)
        );
        assert_eq!(
            read_var_int(&[0x80, 0x80, 0x80, 0x80]),
            Err(DecodeError::VarIntTooLong)
        );
        assert_eq!(
            read_var_int(&[0x80, 0x00]),
            Err(DecodeError::VarIntNotMinimal)
        );
        assert_eq!(
            read_var_int(&[0x81, 0x80, 0x00]),
            Err(DecodeError::VarIntNotMinimal)
        );
        assert_eq!(read_var_int(&[0x80, 0x80]), Ok(VarInt::Incomplete));
        assert_eq!(read_var_int(&[]), Ok(VarInt::Incomplete));
    }

    #[test]
    fn mqtt_1_5_4_strings_reject_null_and_bad_utf8() {
        assert_eq!(
            Reader::new(&[0, 2, b'a', 0]).utf8(),
            Err(DecodeError::NullCharacter)
        );
        // An encoded UTF-16 surrogate (U+D800) is not well-formed UTF-8 [MQTT-1.5.4-1].
        assert_eq!(
            Reader::new(&[0, 3, 0xED, 0xA0, 0x80]).utf8(),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            Reader::new(&[0, 3, b'a']).utf8(),
            Err(DecodeError::Truncated)
        );
        // U+FEFF is a valid character and must not be stripped [MQTT-1.5.4-3].
        assert_eq!(
            Reader::new(&[0, 3, 0xEF, 0xBB, 0xBF]).utf8(),
            Ok("\u{FEFF}")
        );
    }
}
