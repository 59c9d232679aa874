//! femtomq-posix: drives [`femtomq_core`] on any POSIX system.
//!
//! This crate will own everything that touches the operating system: TCP/TLS/WebSocket
//! listeners on `async-io`, timers fed from the core's deadlines, persistence files, bridges,
//! the HTTP management API and webhooks. None of it exists yet: the crate currently only
//! re-exports the core so that the dependency direction `port-linux -> port-posix -> core`
//! is in place from the start.

#![forbid(unsafe_code)]

pub use femtomq_core as core;
