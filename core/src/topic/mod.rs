//! Topic names and topic filters.
//!
//! Validation lives here so that the codec can refuse bad names and filters while decoding.
//! The subscription trie, shared subscriptions and the retained index are built in this module.

/// Why a topic name or filter is invalid.
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
}

/// Checks a topic name (as used in PUBLISH): non-empty, no wildcards, no U+0000.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
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

/// Checks a topic filter (as used in SUBSCRIBE and UNSUBSCRIBE), including `$share/` filters.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    let plain = match filter.strip_prefix("$share/") {
        Some(rest) => {
            let (group, inner) = rest
                .split_once('/')
                .ok_or(TopicError::InvalidSharedSubscription)?;
            if group.is_empty() || inner.is_empty() || group.contains(['+', '#']) {
                return Err(TopicError::InvalidSharedSubscription);
            }
            inner
        }
        None => filter,
    };
    let mut levels = plain.split('/').peekable();
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
    Ok(())
}

/// True when `filter` is a shared subscription (`$share/{group}/{filter}`).
pub fn is_shared(filter: &str) -> bool {
    filter.starts_with("$share/")
}
