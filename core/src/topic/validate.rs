//! Validation of topic names and filters, and matching of one filter against one name.
//!
//! The rules are the same in MQTT 3.1.1 and 5.0 (chapter 4.7 of both); only the numbering of the
//! normative statements differs, so both ids are cited. `$share/` filters are a 5.0 feature that
//! femtomq also honours for 3.1.1 clients, as Mosquitto and EMQX do.

use crate::limits::Limits;

/// The most bytes a topic name or filter can have on the wire `[MQTT-4.7.3-3]`.
pub const PROTOCOL_MAX_TOPIC_LENGTH: usize = 65_535;

/// The prefix of shared subscription filters.
pub const SHARE_PREFIX: &str = "$share/";

/// Why a topic name or filter is invalid.
///
/// The engine answers SUBACK 0x8F (Topic Filter invalid) for a bad filter, PUBACK/PUBREC 0x90
/// (Topic Name invalid) or DISCONNECT 0x90 for a bad name; `TooLong` and `TooManyLevels` are
/// configured bounds ([`Limits`]) and get the same codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// Empty where at least one character is required `[MQTT-4.7.3-1]`.
    Empty,
    /// A wildcard (`+` or `#`) in a topic name `[MQTT-3.3.2-2]`.
    WildcardInName,
    /// `#` not alone in its level or not the last level `[MQTT-4.7.1-1]`.
    MisplacedMultiLevelWildcard,
    /// `+` not alone in its level `[MQTT-4.7.1-2]`.
    MisplacedSingleLevelWildcard,
    /// A `$share/` filter with an empty or invalid share name, or no filter after it `[MQTT-4.8.2-1]`, `[MQTT-4.8.2-2]`.
    InvalidSharedSubscription,
    /// U+0000 inside a topic `[MQTT-4.7.3-2]`.
    NullCharacter,
    /// Longer than 65,535 bytes `[MQTT-4.7.3-3]` or than [`Limits::max_topic_length`].
    TooLong,
    /// More levels than [`Limits::max_topic_levels`].
    TooManyLevels,
}

/// A validated topic filter, split into its share group (for `$share/{group}/{filter}`) and the
/// filter proper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter<'a> {
    /// The share name of a shared subscription, `None` for an ordinary one.
    pub share_group: Option<&'a str>,
    /// The topic filter that is matched against topic names.
    pub filter: &'a str,
}

/// Checks a topic name (as used in PUBLISH): non-empty, no wildcards, no U+0000, at most
/// 65,535 bytes.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    if name.len() > PROTOCOL_MAX_TOPIC_LENGTH {
        return Err(TopicError::TooLong);
    }
    if !has_null_or_wildcard(name.as_bytes()) {
        return Ok(());
    }
    for byte in name.bytes() {
        match byte {
            b'+' | b'#' => return Err(TopicError::WildcardInName),
            0 => return Err(TopicError::NullCharacter),
            _ => {}
        }
    }
    Ok(())
}

/// Whether `bytes` holds a 0, `+` or `#` byte, looked for eight bytes at a time: this runs for
/// every PUBLISH, and a byte loop cost about 12 instructions per byte of topic there.
pub(crate) fn has_null_or_wildcard(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    // Exact for "some byte of `word` is zero" (it may misplace which one, which is not asked).
    fn has_zero_byte(word: u64) -> bool {
        word.wrapping_sub(ONES) & !word & HIGH_BITS != 0
    }
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(chunk);
        let word = u64::from_ne_bytes(eight);
        if has_zero_byte(word)
            || has_zero_byte(word ^ (ONES * u64::from(b'+')))
            || has_zero_byte(word ^ (ONES * u64::from(b'#')))
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&byte| matches!(byte, 0 | b'+' | b'#'))
}

/// Checks a topic filter (as used in SUBSCRIBE and UNSUBSCRIBE), including `$share/` filters.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    parse_filter(filter).map(|_| ())
}

/// Checks a topic name like [`validate_name`] and against the configured length and level bounds.
pub fn check_name(name: &str, limits: &Limits) -> Result<(), TopicError> {
    validate_name(name)?;
    check_bounds(name, name, limits)
}

/// Checks a topic name that the codec has validated already (a decoded PUBLISH's, or the one
/// its topic alias stands for) against the configured length and level bounds only.
pub fn check_name_bounds(name: &str, limits: &Limits) -> Result<(), TopicError> {
    debug_assert_eq!(validate_name(name), Ok(()));
    check_bounds(name, name, limits)
}

/// Checks a topic filter like [`validate_filter`] and against the configured length and level
/// bounds (levels count in the filter proper, after any `$share/{group}/`), and splits it.
pub fn check_filter<'a>(filter: &'a str, limits: &Limits) -> Result<Filter<'a>, TopicError> {
    let parsed = parse_filter(filter)?;
    check_bounds(filter, parsed.filter, limits)?;
    Ok(parsed)
}

fn check_bounds(whole: &str, levels_of: &str, limits: &Limits) -> Result<(), TopicError> {
    if whole.len() > usize::from(limits.max_topic_length) {
        return Err(TopicError::TooLong);
    }
    // A topic has one more level than it has separators; count without overflowing.
    let separators = levels_of.bytes().filter(|&byte| byte == b'/').count();
    if separators >= usize::from(limits.max_topic_levels) {
        return Err(TopicError::TooManyLevels);
    }
    Ok(())
}

/// Validates a topic filter and splits a `$share/{group}/{filter}` into group and filter.
pub fn parse_filter(filter: &str) -> Result<Filter<'_>, TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    if filter.len() > PROTOCOL_MAX_TOPIC_LENGTH {
        return Err(TopicError::TooLong);
    }
    let parsed = match filter.strip_prefix(SHARE_PREFIX) {
        Some(rest) => {
            // [MQTT-4.8.2-1] a share name of at least one character; [MQTT-4.8.2-2] without
            // `/`, `+` or `#`, followed by `/` and a topic filter.
            let (group, inner) = rest
                .split_once('/')
                .ok_or(TopicError::InvalidSharedSubscription)?;
            if group.is_empty() || inner.is_empty() || group.contains(['+', '#']) {
                return Err(TopicError::InvalidSharedSubscription);
            }
            if group.contains('\0') {
                return Err(TopicError::NullCharacter);
            }
            Filter {
                share_group: Some(group),
                filter: inner,
            }
        }
        None => Filter {
            share_group: None,
            filter,
        },
    };
    let mut levels = parsed.filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('\0') {
            return Err(TopicError::NullCharacter);
        }
        if level.contains('#') && (level.len() != 1 || levels.peek().is_some()) {
            return Err(TopicError::MisplacedMultiLevelWildcard);
        }
        if level.contains('+') && level.len() != 1 {
            return Err(TopicError::MisplacedSingleLevelWildcard);
        }
    }
    Ok(parsed)
}

/// True when `filter` is a shared subscription (`$share/{group}/{filter}`).
pub fn is_shared(filter: &str) -> bool {
    filter.starts_with(SHARE_PREFIX)
}

/// True when the topic filter `filter` (without `$share/{group}/`) matches the topic name `name`.
///
/// Both are assumed valid. A filter starting with a wildcard does not match a name starting with
/// `$` `[MQTT-4.7.2-1]`; levels compare byte for byte, without normalization `[MQTT-4.7.3-4]`.
/// This is the one-pair check (for ACLs, say); the indexes match many filters at once.
pub fn filter_matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut names = super::levels(name);
    for level in super::levels(filter) {
        match level {
            "#" => return true,
            "+" => {
                if names.next().is_none() {
                    return false;
                }
            }
            literal => {
                if names.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    names.next().is_none()
}

#[cfg(test)]
mod fast_scan_tests {
    use super::has_null_or_wildcard;

    #[test]
    fn finds_each_special_byte_at_every_position_and_nothing_else() {
        for len in 0..40 {
            let clean = [b'a'; 40];
            assert!(!has_null_or_wildcard(&clean[..len]));
            for position in 0..len {
                for special in [0u8, b'+', b'#'] {
                    let mut bytes = clean;
                    bytes[position] = special;
                    assert!(
                        has_null_or_wildcard(&bytes[..len]),
                        "{special} at {position} of {len}"
                    );
                }
            }
        }
        // Every other byte value, in every lane, is not special.
        for value in 0..=255u8 {
            if matches!(value, 0 | b'+' | b'#') {
                continue;
            }
            assert!(!has_null_or_wildcard(&[value; 17]), "{value}");
        }
        // Neighbours of the special values (borrows across lanes must not cause false hits).
        assert!(!has_null_or_wildcard(&[
            1, 0x2a, 0x2c, 0x22, 0x24, 1, 0x80, 0xff, 1
        ]));
    }
}
