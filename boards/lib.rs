//! Board definitions for femtomq.
//!
//! Each supported board or target will be described by one file in this folder (target triple,
//! linker, cargo features, qemu runner, size and memory budgets), read by `cargo xtask` and
//! `size-report`. No board is defined yet; the cross-build recipe lives in `../shared/DESIGN.md`
//! and the bare-metal core build is run by `cargo xtask ci`.

#![forbid(unsafe_code)]
