//! Fuzz target: arbitrary bytes through the framer and decoder (see `check.rs`).
#![no_main]

mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check_stream(data));
