//! The retained-message index: the last retained message of each topic name, found by name or
//! by a filter with wildcards (for the retained messages a new subscription receives).

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::hash::{Interner, NONE};
use super::tree::{ROOT, Step, Tree};
use super::validate::{TopicError, check_name, parse_filter};
use crate::limits::Limits;

/// What the retained index needs to know of the messages it keeps.
///
/// The index is generic so that the engine can keep its reference-counted message; the values
/// returned must not change while the message is stored.
pub trait RetainedMessage {
    /// Payload bytes: a retained PUBLISH with an empty payload deletes `[MQTT-3.3.1-6]`.
    fn payload_len(&self) -> usize;
    /// Bytes charged against [`Limits::max_retained_bytes`], besides the topic name (which the
    /// index adds): the payload and the properties kept with it.
    fn retained_bytes(&self) -> usize;
}

impl RetainedMessage for Vec<u8> {
    fn payload_len(&self) -> usize {
        self.len()
    }
    fn retained_bytes(&self) -> usize {
        self.len()
    }
}

impl RetainedMessage for Box<[u8]> {
    fn payload_len(&self) -> usize {
        self.len()
    }
    fn retained_bytes(&self) -> usize {
        self.len()
    }
}

impl RetainedMessage for &[u8] {
    fn payload_len(&self) -> usize {
        self.len()
    }
    fn retained_bytes(&self) -> usize {
        self.len()
    }
}

/// Why a message was not retained. [`RetainError::reason_code`] is the MQTT 5 code to answer.
///
/// The engine still forwards the PUBLISH to current subscribers when only retaining failed; it
/// answers a QoS 1/2 publisher with PUBACK/PUBREC 0x97 Quota exceeded (0x90 for a bad topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainError {
    /// The topic name is invalid or exceeds the length or level bounds: 0x90 Topic Name invalid.
    InvalidTopic(TopicError),
    /// [`Limits::max_retained_messages`] are stored already: 0x97 Quota exceeded.
    MessageQuotaExceeded,
    /// Storing would exceed [`Limits::max_retained_bytes`]: 0x97 Quota exceeded.
    ByteQuotaExceeded,
}

impl RetainError {
    /// The MQTT 5 reason code for PUBACK/PUBREC.
    pub const fn reason_code(self) -> u8 {
        match self {
            RetainError::InvalidTopic(_) => 0x90,
            RetainError::MessageQuotaExceeded | RetainError::ByteQuotaExceeded => 0x97,
        }
    }
}

impl From<TopicError> for RetainError {
    fn from(error: TopicError) -> Self {
        RetainError::InvalidTopic(error)
    }
}

/// One level of a filter, resolved against the index's labels.
#[derive(Debug, Clone, Copy)]
enum Level {
    Literal(u32),
    Plus,
    Multi,
}

/// Marks "every node below" on the walk stack.
const SUBTREE: u32 = u32::MAX;
/// The `exact` field of a node holding a message.
const HOLDS_MESSAGE: u32 = 0;

/// Retained messages by topic name, bounded by [`Limits::max_retained_messages`] and
/// [`Limits::max_retained_bytes`].
#[derive(Debug)]
pub struct RetainedIndex<T> {
    labels: Interner,
    tree: Tree,
    /// Parallel to the tree's nodes.
    messages: Vec<Option<T>>,
    count: u32,
    bytes: u64,
    limits: Limits,
}

fn name_path(topic: &str) -> impl Iterator<Item = Step<'_>> {
    super::levels(topic).map(Step::Literal)
}

impl<T: RetainedMessage> RetainedIndex<T> {
    /// An empty index bounded by `limits`; `seed` keys its hash tables (give a random value).
    pub fn new(limits: &Limits, seed: u64) -> Self {
        RetainedIndex {
            labels: Interner::new(seed),
            tree: Tree::new(seed, true),
            messages: Vec::new(),
            count: 0,
            bytes: 0,
            limits: *limits,
        }
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when no message is retained.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes charged for the retained messages (topics plus [`RetainedMessage::retained_bytes`]).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Live nodes of the index (root excluded): zero again once every message is gone.
    pub fn node_count(&self) -> usize {
        self.tree.node_count()
    }

    /// Applies a PUBLISH with RETAIN 1 on `topic`: an empty payload deletes the retained message
    /// `[MQTT-3.3.1-6]`, any other replaces it `[MQTT-3.3.1-5]`. Returns the message it replaced
    /// or deleted. On error nothing changes (the previous message stays).
    pub fn retain(&mut self, topic: &str, message: T) -> Result<Option<T>, RetainError> {
        check_name(topic, &self.limits)?;
        if message.payload_len() == 0 {
            return Ok(self.remove(topic));
        }
        let size = (message.retained_bytes() as u64).saturating_add(topic.len() as u64);
        let node = self.tree.find(&self.labels, name_path(topic));
        let old = self.message(node);
        let old_size = old.map_or(0, |old| Self::size_of(topic, old));
        if old.is_none() && self.count >= self.limits.max_retained_messages {
            return Err(RetainError::MessageQuotaExceeded);
        }
        if self.bytes - old_size + size > u64::from(self.limits.max_retained_bytes) {
            return Err(RetainError::ByteQuotaExceeded);
        }
        let node = if node == NONE {
            self.tree.insert(&mut self.labels, name_path(topic))
        } else {
            node
        };
        if self.messages.len() < self.tree.nodes.len() {
            self.messages.resize_with(self.tree.nodes.len(), || None);
        }
        self.tree.node_mut(node).exact = HOLDS_MESSAGE;
        let old = self.messages[node as usize].replace(message);
        if old.is_none() {
            self.count += 1;
        }
        self.bytes = self.bytes - old_size + size;
        Ok(old)
    }

    /// Deletes the retained message of `topic` and returns it.
    pub fn remove(&mut self, topic: &str) -> Option<T> {
        let node = self.tree.find(&self.labels, name_path(topic));
        if node == NONE || node == ROOT {
            return None;
        }
        let old = self.messages.get_mut(node as usize)?.take()?;
        self.count -= 1;
        self.bytes -= Self::size_of(topic, &old);
        self.tree.node_mut(node).exact = NONE;
        self.tree.prune(&mut self.labels, node);
        Some(old)
    }

    /// Calls `visit` with every retained message, in no particular order.
    pub fn for_each(&self, mut visit: impl FnMut(&T)) {
        self.messages.iter().flatten().for_each(&mut visit);
    }

    /// The retained message of `topic`.
    pub fn get(&self, topic: &str) -> Option<&T> {
        self.message(self.tree.find(&self.labels, name_path(topic)))
    }

    /// Calls `visit` with every retained message whose topic matches `filter` (a valid filter,
    /// wildcards allowed) and returns how many. Wildcards at the first level do not match `$`
    /// topics `[MQTT-4.7.2-1]`. A `$share/` filter gets none: retained messages are not sent for
    /// shared subscriptions (MQTT 5 section 4.8.2).
    pub fn for_each_match(&self, filter: &str, mut visit: impl FnMut(&T)) -> usize {
        let Ok(parsed) = parse_filter(filter) else {
            return 0;
        };
        if parsed.share_group.is_some() || self.count == 0 {
            return 0;
        }
        let mut levels = Vec::new();
        for level in parsed.filter.split('/') {
            levels.push(match level {
                "+" => Level::Plus,
                "#" => Level::Multi,
                literal => {
                    let label = self.labels.find(literal);
                    if label == NONE {
                        return 0;
                    }
                    Level::Literal(label)
                }
            });
        }
        let mut visited = 0;
        let mut stack = alloc::vec![(ROOT, 0u32)];
        while let Some((id, depth)) = stack.pop() {
            if depth == SUBTREE {
                if let Some(message) = self.message(id) {
                    visit(message);
                    visited += 1;
                }
                self.push_children(&mut stack, id, SUBTREE, false);
                continue;
            }
            let Some(level) = levels.get(depth as usize) else {
                if let Some(message) = self.message(id) {
                    visit(message);
                    visited += 1;
                }
                continue;
            };
            match *level {
                Level::Literal(label) => {
                    let child = self.tree.child(id, label);
                    if child != NONE {
                        stack.push((child, depth + 1));
                    }
                }
                Level::Plus => self.push_children(&mut stack, id, depth + 1, depth == 0),
                Level::Multi => {
                    // `a/#` also matches `a` itself.
                    if let Some(message) = self.message(id) {
                        visit(message);
                        visited += 1;
                    }
                    self.push_children(&mut stack, id, SUBTREE, depth == 0);
                }
            }
        }
        visited
    }

    fn push_children(&self, stack: &mut Vec<(u32, u32)>, id: u32, depth: u32, skip_dollar: bool) {
        let mut child = self.tree.links[id as usize].first_child;
        while child != NONE {
            let label = self.tree.node(child).label;
            if !(skip_dollar && self.labels.text(label).starts_with('$')) {
                stack.push((child, depth));
            }
            child = self.tree.links[child as usize].next;
        }
    }

    fn message(&self, node: u32) -> Option<&T> {
        if node == NONE || node == ROOT {
            return None;
        }
        self.messages.get(node as usize)?.as_ref()
    }

    fn size_of(topic: &str, message: &T) -> u64 {
        (message.retained_bytes() as u64).saturating_add(topic.len() as u64)
    }
}
