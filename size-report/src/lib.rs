//! size-report: measures what a femtomq build costs and checks it against its board's budget.
//!
//! - [`elf`]: the stripped binary's size and its split into `.text`, `.rodata`, `.data` and
//!   `.bss`, and the largest contributors by crate from the symbol table of an unstripped copy
//!   (grouped by the crate of each demangled symbol, like cargo-bloat).
//! - [`memory`]: idle VmRSS and Pss of the running broker 1 s after start, and the growth of VmRSS
//!   with 1,000 idle MQTT connections, read from `/proc` (native boards only: under qemu-user
//!   the resident set is qemu's, not the program's).
//! - [`budget`]: the comparison of every measured figure with the board's budget.
//!
//! The `size-report` binary prints a table for humans and writes JSON for CI;
//! `cargo xtask size` builds the boards and runs it.

#![forbid(unsafe_code)]

pub mod budget;
pub mod elf;
pub mod memory;
