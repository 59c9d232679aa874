//! End-to-end tests of the built `femtomq` binary against clients nobody here wrote
//! (`mosquitto_pub`/`mosquitto_sub`, Python `paho-mqtt`, `rumqttc`), over real sockets.
//!
//! They arrive with the daemon (POSIX port); until then this crate holds no tests.

#![forbid(unsafe_code)]
