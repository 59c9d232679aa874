//! femtomq-core: the MQTT broker with no I/O.
//!
//! Bytes and time go in; bytes, deadlines and events come out. This crate never reads a clock,
//! opens a socket, spawns or blocks, so the same code runs under the POSIX port, in a
//! deterministic simulation harness, and on a bare-metal board (`#![no_std]`, no allocator
//! required by the codec).
//!
//! The layers, bottom up:
//!
//! | module    | what it decides |
//! |-----------|-----------------|
//! | [`types`] | small value types shared by every layer: [`QoS`], [`ProtocolVersion`], subscription options |
//! | [`codec`] | the wire: framing, zero-copy decoding of every MQTT 3.1/3.1.1/5.0 packet into borrowed views, encoding into caller buffers, strict validation with the reason code to answer |
//! | [`topic`] | topic names and filters: validation, matching, the subscription trie, shared groups, retained index |
//! | [`limits`] | [`Limits`](limits::Limits): every bound of the broker (connections, subscriptions, topics, queues, retained, packets...) in one value |
//! | `broker`  | the engine (feature `alloc`): connections, sessions, QoS flows, queues, wills, auth hooks, events, timers |

#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(test)]
extern crate std;

#[cfg(feature = "alloc")]
pub mod broker;
pub mod codec;
pub mod limits;
pub mod topic;
pub mod types;

pub use types::{Instant, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};
