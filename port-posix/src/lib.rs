//! femtomq-posix: drives [`femtomq_core`]'s broker engine on POSIX systems (Linux today: the
//! reactor, `reactor.rs`, is epoll; a kqueue one would serve the BSDs behind the same API).
//!
//! [`run`] owns the sockets, the clock and the timers; the engine owns every MQTT decision.
//! Each worker thread runs its tasks (`executor.rs`, a run queue of `async-task` tasks) on its
//! own reactor: a task accepts on each listener, a task serves each connection (reading into a
//! buffer that grows only to the packet in hand, writing everything the engine queued for it in
//! one write per wake-up), a task fires the engine's deadlines, and tasks watch the control
//! pipes (shutdown, reload, report). The engine lives in a `RefCell` that no task holds across an `await`, so no lock
//! is taken.

// Denied, not forbidden: `trim` calls glibc's malloc_trim (with its SAFETY note and a test).
#![deny(unsafe_code)]

pub mod auth;
mod executor;
mod listener;
mod notify;
#[cfg(feature = "persist")]
pub mod persist;
mod reactor;
mod server;
mod slots;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;
mod trim;
mod warnings;
#[cfg(feature = "ws")]
pub mod ws;

pub use auth::{AccessRules, AuthFileError, ListenerRules, ProtocolVersions};
pub use femtomq_core as core;
pub use listener::{ListenerSpec, ListenerSpecError, TlsFiles, Transport};
pub use server::{Control, ReloadOutcome, ServerConfig, run};
