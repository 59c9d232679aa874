//! [`Repeated`]: a list that is either borrowed from a decoded packet or from the caller's slice.
//!
//! Decoding keeps lists (user properties, subscriptions, reason codes...) as the validated bytes
//! they arrived in and parses each item again when iterated: no allocation, no fixed capacity.
//! Encoding takes a plain slice. Both forms compare and iterate alike.

use super::EncodeError;
use super::wire::Writer;
use crate::ProtocolVersion;

/// An item of a [`Repeated`] list that can be read back from its validated encoding.
pub trait RepeatedItem<'a>: Sized + Copy {
    /// Reads the next item from `bytes` and advances past it; `None` when there is none.
    /// Only called on bytes the decoder already validated.
    #[doc(hidden)]
    fn next_encoded(bytes: &mut &'a [u8]) -> Option<Self>;
}

/// How a list item is written (crate-internal: encoders size and write through this).
pub(crate) trait EncodeItem {
    fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError>;
    fn write(&self, writer: &mut Writer<'_>, version: ProtocolVersion) -> Result<(), EncodeError>;
}

/// A list of `T` borrowed either from a decoded packet or from a caller's slice.
pub struct Repeated<'a, T> {
    repr: Repr<'a, T>,
}

enum Repr<'a, T> {
    Encoded(&'a [u8]),
    Slice(&'a [T]),
}

impl<'a, T> Repeated<'a, T> {
    /// A list over the caller's items, for encoding.
    pub const fn from_slice(items: &'a [T]) -> Self {
        Repeated {
            repr: Repr::Slice(items),
        }
    }

    /// A list over validated encoded bytes (decoder only).
    pub(crate) const fn from_encoded(bytes: &'a [u8]) -> Self {
        Repeated {
            repr: Repr::Encoded(bytes),
        }
    }

    /// True while nothing was set: an empty slice (decoders use this to spot the first item).
    pub(crate) fn is_unset(&self) -> bool {
        matches!(self.repr, Repr::Slice(items) if items.is_empty())
    }
}

impl<'a, T: RepeatedItem<'a>> Repeated<'a, T> {
    /// Iterates over the items in order.
    pub fn iter(&self) -> RepeatedIter<'a, T> {
        RepeatedIter {
            repr: match self.repr {
                Repr::Encoded(bytes) => IterRepr::Encoded(bytes),
                Repr::Slice(items) => IterRepr::Slice(items.iter()),
            },
        }
    }

    /// True when the list has no items.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Number of items (walks an encoded list).
    pub fn len(&self) -> usize {
        self.iter().count()
    }
}

/// Encoded size of every item of `list`.
pub(crate) fn list_len<'a, T: RepeatedItem<'a> + EncodeItem>(
    list: &Repeated<'a, T>,
    version: ProtocolVersion,
) -> Result<usize, EncodeError> {
    list.iter()
        .try_fold(0usize, |total, item| Ok(total + item.encoded_len(version)?))
}

/// Writes every item of `list`.
pub(crate) fn write_list<'a, T: RepeatedItem<'a> + EncodeItem>(
    list: &Repeated<'a, T>,
    writer: &mut Writer<'_>,
    version: ProtocolVersion,
) -> Result<(), EncodeError> {
    list.iter().try_for_each(|item| item.write(writer, version))
}

impl<T> Clone for Repeated<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Repeated<'_, T> {}

impl<T> Clone for Repr<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Repr<'_, T> {}

impl<T> Default for Repeated<'_, T> {
    fn default() -> Self {
        Repeated::from_slice(&[])
    }
}

impl<'a, T: RepeatedItem<'a> + PartialEq> PartialEq for Repeated<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<'a, T: RepeatedItem<'a> + core::fmt::Debug> core::fmt::Debug for Repeated<'a, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a, T: RepeatedItem<'a>> IntoIterator for Repeated<'a, T> {
    type Item = T;
    type IntoIter = RepeatedIter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over a [`Repeated`] list.
pub struct RepeatedIter<'a, T> {
    repr: IterRepr<'a, T>,
}

enum IterRepr<'a, T> {
    Encoded(&'a [u8]),
    Slice(core::slice::Iter<'a, T>),
}

impl<'a, T: RepeatedItem<'a>> Iterator for RepeatedIter<'a, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        match &mut self.repr {
            IterRepr::Encoded(bytes) => T::next_encoded(bytes),
            IterRepr::Slice(items) => items.next().copied(),
        }
    }
}
