//! The level tree shared by the subscription trie and the retained index.
//!
//! Nodes live in one arena (`Vec<Node>`, 24 bytes each) and are named by `u32` indexes; freed
//! nodes go on a free list. A literal child is found through one hash table keyed by
//! `(parent, label)` for the whole tree, so a node with 10,000 children costs no more to search
//! than one with two, and a node pays nothing for a child container. A `+` child hangs off its
//! parent's `plus` field; `#` is not a node but a second value list (`multi`) on the node of
//! the level before it. Trees that must enumerate children (the retained index, to answer `+`
//! and `#`) also keep sibling links in a parallel array.

use alloc::vec::Vec;

use super::hash::{Interner, NONE, ProbeTable, hash_pair};

/// The root node, never freed.
pub(crate) const ROOT: u32 = 0;

/// The label of `+` nodes (never a real label id).
const PLUS_LABEL: u32 = u32::MAX - 1;

/// One level of a filter or name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Node {
    /// The parent node (for a freed node: the next free node).
    pub(crate) parent: u32,
    /// The interned level, or `PLUS_LABEL`.
    pub(crate) label: u32,
    /// The `+` child, or [`NONE`].
    pub(crate) plus: u32,
    /// Number of children, the `+` child included.
    pub(crate) children: u32,
    /// Head of the owner's list for filters/names ending at this node, or [`NONE`].
    pub(crate) exact: u32,
    /// Head of the owner's list for filters ending in `/#` after this node, or [`NONE`].
    pub(crate) multi: u32,
}

impl Node {
    const fn new(parent: u32, label: u32) -> Self {
        Node {
            parent,
            label,
            plus: NONE,
            children: 0,
            exact: NONE,
            multi: NONE,
        }
    }

    fn is_unused(&self) -> bool {
        self.children == 0 && self.exact == NONE && self.multi == NONE
    }
}

/// Sibling links of enumerable trees.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Links {
    pub(crate) first_child: u32,
    pub(crate) next: u32,
    prev: u32,
}

const NO_LINKS: Links = Links {
    first_child: NONE,
    next: NONE,
    prev: NONE,
};

/// One level of a parsed filter path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step<'a> {
    Plus,
    Literal(&'a str),
}

impl<'a> Step<'a> {
    pub(crate) fn of(level: &'a str) -> Self {
        if level == "+" {
            Step::Plus
        } else {
            Step::Literal(level)
        }
    }
}

#[derive(Debug)]
pub(crate) struct Tree {
    pub(crate) nodes: Vec<Node>,
    /// Parallel to `nodes` when the tree is enumerable, empty otherwise.
    pub(crate) links: Vec<Links>,
    enumerable: bool,
    edges: ProbeTable,
    seed: u64,
    free_head: u32,
    live: u32,
}

impl Tree {
    pub(crate) fn new(seed: u64, enumerable: bool) -> Self {
        let mut tree = Tree {
            nodes: Vec::new(),
            links: Vec::new(),
            enumerable,
            edges: ProbeTable::default(),
            seed,
            free_head: NONE,
            live: 0,
        };
        tree.nodes.push(Node::new(NONE, NONE));
        if enumerable {
            tree.links.push(NO_LINKS);
        }
        tree
    }

    /// Live nodes, the root excluded.
    pub(crate) fn node_count(&self) -> usize {
        self.live as usize
    }

    #[inline]
    pub(crate) fn node(&self, id: u32) -> &Node {
        &self.nodes[id as usize]
    }

    #[inline]
    pub(crate) fn node_mut(&mut self, id: u32) -> &mut Node {
        &mut self.nodes[id as usize]
    }

    /// The literal child of `parent` labelled `label`, or [`NONE`].
    #[inline]
    pub(crate) fn child(&self, parent: u32, label: u32) -> u32 {
        let hash = hash_pair(self.seed, parent, label);
        let nodes = &self.nodes;
        self.edges.find(hash, |id| {
            let node = &nodes[id as usize];
            node.parent == parent && node.label == label
        })
    }

    /// The child of `parent` for one filter step, or [`NONE`].
    pub(crate) fn step(&self, labels: &Interner, parent: u32, step: Step<'_>) -> u32 {
        match step {
            Step::Plus => self.node(parent).plus,
            Step::Literal(text) => {
                let label = labels.find(text);
                if label == NONE {
                    NONE
                } else {
                    self.child(parent, label)
                }
            }
        }
    }

    /// The node at the end of `path`, or [`NONE`] when it does not exist.
    pub(crate) fn find<'a>(&self, labels: &Interner, path: impl Iterator<Item = Step<'a>>) -> u32 {
        let mut node = ROOT;
        for step in path {
            node = self.step(labels, node, step);
            if node == NONE {
                return NONE;
            }
        }
        node
    }

    /// The node at the end of `path`, created with its ancestors as needed.
    ///
    /// A node created here is unused until the caller stores something in it; the caller must
    /// do so or call [`Tree::prune`].
    pub(crate) fn insert<'a>(
        &mut self,
        labels: &mut Interner,
        path: impl Iterator<Item = Step<'a>>,
    ) -> u32 {
        let mut node = ROOT;
        for step in path {
            let next = self.step(labels, node, step);
            node = if next != NONE {
                next
            } else {
                match step {
                    Step::Plus => {
                        let child = self.allocate(node, PLUS_LABEL);
                        self.node_mut(node).plus = child;
                        child
                    }
                    Step::Literal(text) => {
                        let label = labels.acquire(text);
                        let child = self.allocate(node, label);
                        self.edges.insert(hash_pair(self.seed, node, label), child);
                        child
                    }
                }
            };
        }
        node
    }

    fn allocate(&mut self, parent: u32, label: u32) -> u32 {
        let fresh = Node::new(parent, label);
        let id = if self.free_head != NONE {
            let id = self.free_head;
            self.free_head = self.nodes[id as usize].parent;
            self.nodes[id as usize] = fresh;
            id
        } else {
            self.nodes.push(fresh);
            if self.enumerable {
                self.links.push(NO_LINKS);
            }
            (self.nodes.len() - 1) as u32
        };
        self.live += 1;
        self.node_mut(parent).children += 1;
        if self.enumerable {
            let first = self.links[parent as usize].first_child;
            self.links[id as usize] = Links {
                first_child: NONE,
                next: first,
                prev: NONE,
            };
            if first != NONE {
                self.links[first as usize].prev = id;
            }
            self.links[parent as usize].first_child = id;
        }
        id
    }

    /// Frees `node` and then its ancestors while they hold nothing.
    pub(crate) fn prune(&mut self, labels: &mut Interner, mut node: u32) {
        while node != ROOT && node != NONE && self.node(node).is_unused() {
            let Node { parent, label, .. } = *self.node(node);
            if label == PLUS_LABEL {
                self.node_mut(parent).plus = NONE;
            } else {
                self.edges.remove(hash_pair(self.seed, parent, label), node);
                labels.release(label);
            }
            if self.enumerable {
                let Links { next, prev, .. } = self.links[node as usize];
                if prev != NONE {
                    self.links[prev as usize].next = next;
                } else {
                    self.links[parent as usize].first_child = next;
                }
                if next != NONE {
                    self.links[next as usize].prev = prev;
                }
                self.links[node as usize] = NO_LINKS;
            }
            self.node_mut(parent).children -= 1;
            let free_head = self.free_head;
            *self.node_mut(node) = Node::new(free_head, NONE);
            self.free_head = node;
            self.live -= 1;
            node = parent;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_stay_compact() {
        assert_eq!(core::mem::size_of::<Node>(), 24);
        assert_eq!(core::mem::size_of::<Links>(), 12);
    }

    #[test]
    fn plus_children_and_literal_children_are_freed() {
        let mut labels = Interner::new(1);
        let mut tree = Tree::new(2, true);
        let path = ["a", "+", "b"].map(Step::of);
        let leaf = tree.insert(&mut labels, path.into_iter());
        assert_eq!(tree.node_count(), 3);
        assert_eq!(tree.find(&labels, path.into_iter()), leaf);
        tree.node_mut(leaf).exact = 0;
        let other = tree.insert(&mut labels, ["a", "c"].map(Step::of).into_iter());
        tree.prune(&mut labels, other);
        assert_eq!(tree.node_count(), 3);
        tree.node_mut(leaf).exact = NONE;
        tree.prune(&mut labels, leaf);
        assert_eq!(tree.node_count(), 0);
        assert_eq!(tree.node(ROOT).children, 0);
        assert_eq!(tree.links[ROOT as usize].first_child, NONE);
        assert_eq!(labels.find("a"), NONE);
    }
}
