//! Fuzz target: arbitrary client input to the broker engine across a few connections with time
//! passing (see `core/tests/sim/engine_fuzz.rs`, which the replay test shares).
#![no_main]

#[path = "../../tests/sim/engine_fuzz.rs"]
mod engine_fuzz;

libfuzzer_sys::fuzz_target!(|data: &[u8]| engine_fuzz::check_engine(data));
