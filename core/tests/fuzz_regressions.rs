//! Replays every input in `tests/fuzz-regressions/` through the fuzz target's property, so a
//! crash the fuzzer once found (`cargo xtask fuzz`) stays fixed. Seeds with tricky shapes live
//! there too.

#[path = "../fuzz/fuzz_targets/check.rs"]
mod check;

use std::path::Path;

#[test]
fn every_saved_fuzz_input_passes_the_decode_property() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/fuzz-regressions exists") {
        let path = entry.expect("readable directory entry").path();
        if path.extension().is_some_and(|ext| ext == "bin") {
            let data = std::fs::read(&path).expect("readable input");
            check::check_stream(&data);
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no inputs found in {}", dir.display());
}
