//! Replays every input in `tests/sim/engine-fuzz-regressions/` through the engine fuzz
//! property (`core/fuzz/fuzz_targets/engine.rs`, `cargo fuzz run engine`), so that a crash the
//! fuzzer once found stays fixed, plus a few generated inputs.

#[path = "sim/engine_fuzz.rs"]
mod engine_fuzz;

use std::path::Path;

#[test]
fn every_saved_engine_fuzz_input_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sim/engine-fuzz-regressions");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("the regressions directory exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().is_some_and(|ext| ext == "bin") {
            let data = std::fs::read(&path).expect("readable input");
            engine_fuzz::check_engine(&data);
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no inputs in {}", dir.display());
}

#[test]
fn pseudo_random_inputs_pass() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..300 {
        let len = (state % 2048) as usize;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        engine_fuzz::check_engine(&data);
    }
}
