//! Board definitions for femtomq.
//!
//! Each supported board or target is described by one TOML file in this folder
//! (`boards/NAME.toml`): its target triple, how it is built (the host toolchain, Debian's
//! toolchain with `-Zbuild-std`, or a bare-metal core-only build), its linker, cargo features,
//! the qemu-user command that runs it, and its footprint budgets. `cargo xtask build|test|size`
//! and `size-report` read them through this crate; the recipe itself is in
//! `../shared/DESIGN.md` ("Cross targets").
//!
//! ```
//! let boards = femtomq_boards::load_all(&femtomq_boards::boards_dir()).unwrap();
//! assert!(boards.iter().any(|board| board.name == "armv7-linux"));
//! ```

#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// How a board's binary is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flavour {
    /// The default (rustup) toolchain and its prebuilt standard library.
    Host,
    /// Debian's `rustc-web` toolchain with `-Zbuild-std=std,panic_abort`: any Linux target.
    BuildStd,
    /// Debian's toolchain with `-Zbuild-std=core,alloc`: the `no_std` core only, no binary.
    BareMetal,
}

impl Flavour {
    /// The `-Zbuild-std=` crates of this flavour, if it rebuilds the standard library.
    pub fn build_std_crates(self) -> Option<&'static str> {
        match self {
            Flavour::Host => None,
            Flavour::BuildStd => Some("std,panic_abort"),
            Flavour::BareMetal => Some("core,alloc"),
        }
    }
}

/// Footprint budgets of a board. A missing figure is not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Budget {
    /// Size of the stripped binary, in bytes.
    pub binary_bytes: Option<u64>,
    /// VmRSS of the idle broker 1 s after start, in KiB (native boards only: under qemu-user
    /// the resident set is qemu's).
    pub idle_rss_kb: Option<u64>,
    /// Growth of VmRSS when 1,000 idle MQTT clients are connected, in KiB (native boards only).
    pub rss_per_1000_connections_kb: Option<u64>,
}

impl Budget {
    /// Whether any figure is budgeted.
    pub fn is_empty(&self) -> bool {
        self.binary_bytes.is_none() && !self.has_rss()
    }

    /// Whether a memory figure is budgeted.
    pub fn has_rss(&self) -> bool {
        self.idle_rss_kb.is_some() || self.rss_per_1000_connections_kb.is_some()
    }
}

/// One board or target, as described by `boards/NAME.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Board {
    /// The board's name: its file name without `.toml`.
    #[serde(skip)]
    pub name: String,
    /// What the board stands for (hardware class, C library).
    pub description: String,
    /// The Rust target triple.
    pub triple: String,
    /// How it is built.
    pub flavour: Flavour,
    /// The cargo package built: `femtomq` (the daemon) or `femtomq-core` (bare metal).
    pub package: String,
    /// The cargo profile (`size` for devices).
    #[serde(default = "default_profile")]
    pub profile: String,
    /// The linker, passed as `CARGO_TARGET_<TRIPLE>_LINKER`.
    #[serde(default)]
    pub linker: Option<String>,
    /// The strip tool for the target's binutils (the build keeps symbols for size-report, then
    /// strips a copy).
    #[serde(default)]
    pub strip: Option<String>,
    /// Cargo features of the default build (added to the package's default features).
    #[serde(default)]
    pub features: Vec<String>,
    /// Features of `--minimal` builds (built with `--no-default-features`).
    #[serde(default)]
    pub minimal_features: Vec<String>,
    /// `-Zbuild-std-features=` of build-std flavours.
    #[serde(default)]
    pub build_std_features: Vec<String>,
    /// Extra `RUSTFLAGS` for the target.
    #[serde(default)]
    pub rustflags: Vec<String>,
    /// Command prefix that runs a binary of this target on the build machine (qemu-user with
    /// `-L SYSROOT`); empty when it runs natively.
    #[serde(default)]
    pub runner: Vec<String>,
    /// OpenWrt's name for the package architecture (`mipsel_24kc`), for
    /// `cargo xtask package openwrt`; boards without one are not packaged for OpenWrt.
    #[serde(default)]
    pub openwrt_arch: Option<String>,
    /// Debian's name for the architecture (`armhf`), for `cargo xtask package deb`.
    #[serde(default)]
    pub deb_arch: Option<String>,
    /// Whether the binary runs natively here, so that its memory can be measured.
    #[serde(default)]
    pub native: bool,
    /// The footprint budgets of the default build (the package's default features plus
    /// `features`): `[budget]`.
    #[serde(default)]
    pub budget: Budget,
    /// The footprint budgets of the `--minimal` build (`--no-default-features` plus
    /// `minimal-features`): `[minimal-budget]`. Empty when the board has no minimal budget.
    #[serde(default)]
    pub minimal_budget: Budget,
}

fn default_profile() -> String {
    "size".to_string()
}

/// A board file that could not be read or is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardError(pub String);

impl fmt::Display for BoardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BoardError {}

impl Board {
    /// Parses the text of `boards/NAME.toml`.
    pub fn parse(name: &str, text: &str) -> Result<Board, BoardError> {
        let mut board: Board =
            toml::from_str(text).map_err(|e| BoardError(format!("board `{name}`: {e}")))?;
        board.name = name.to_string();
        board.validate()?;
        Ok(board)
    }

    fn validate(&self) -> Result<(), BoardError> {
        let fail = |what: &str| Err(BoardError(format!("board `{}`: {what}", self.name)));
        if self.triple.is_empty() || self.triple.contains(char::is_whitespace) {
            return fail("`triple` must be a target triple");
        }
        if self.flavour == Flavour::BareMetal {
            if !self.runner.is_empty() || self.native {
                return fail("a bare-metal board has no runner and is not native");
            }
            if self.budget.has_rss() || self.minimal_budget.has_rss() {
                return fail("a bare-metal board builds a library: it has no RSS to budget");
            }
        }
        if self.native && !self.runner.is_empty() {
            return fail("a native board needs no runner");
        }
        if !self.native && (self.budget.has_rss() || self.minimal_budget.has_rss()) {
            return fail(
                "RSS budgets need a native board: under qemu-user the resident set is qemu's",
            );
        }
        Ok(())
    }

    /// The budgets of the default build, or of the `--minimal` build when `minimal`.
    pub fn budget_for(&self, minimal: bool) -> &Budget {
        if minimal {
            &self.minimal_budget
        } else {
            &self.budget
        }
    }

    /// Whether the build produces only a library (no binary to run or measure).
    pub fn is_library_only(&self) -> bool {
        self.flavour == Flavour::BareMetal
    }

    /// The environment variable that sets this target's linker for cargo.
    pub fn linker_env_var(&self) -> String {
        let upper: String = self
            .triple
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("CARGO_TARGET_{upper}_LINKER")
    }

    /// The environment variable that sets this target's `RUSTFLAGS` for cargo.
    pub fn rustflags_env_var(&self) -> String {
        self.linker_env_var().replace("_LINKER", "_RUSTFLAGS")
    }
}

/// The `boards/` folder of this workspace.
pub fn boards_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Reads every `*.toml` file of `dir`, sorted by name.
pub fn load_all(dir: &Path) -> Result<Vec<Board>, BoardError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| BoardError(format!("cannot read {}: {e}", dir.display())))?;
    let mut boards = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| BoardError(format!("cannot read {}: {e}", dir.display())))?
            .path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") || path.ends_with("Cargo.toml")
        {
            continue;
        }
        boards.push(load_file(&path)?);
    }
    boards.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(boards)
}

/// Reads `dir/NAME.toml`; the error lists the known boards when there is no such file.
pub fn load(dir: &Path, name: &str) -> Result<Board, BoardError> {
    let path = dir.join(format!("{name}.toml"));
    if name.contains('/') || !path.is_file() {
        let known: Vec<String> = load_all(dir)?.into_iter().map(|b| b.name).collect();
        return Err(BoardError(format!(
            "no board `{name}` in {} (known: {})",
            dir.display(),
            known.join(", ")
        )));
    }
    load_file(&path)
}

fn load_file(path: &Path) -> Result<Board, BoardError> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| BoardError(format!("{}: not a board file name", path.display())))?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| BoardError(format!("cannot read {}: {e}", path.display())))?;
    Board::parse(name, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARMV7: &str = r#"
description = "ARMv7"
triple = "armv7-unknown-linux-gnueabihf"
flavour = "build-std"
package = "femtomq"
linker = "arm-linux-gnueabihf-gcc"
runner = ["qemu-arm", "-L", "/usr/arm-linux-gnueabihf"]
[budget]
binary-bytes = 1000
"#;

    #[test]
    fn parses_a_board() {
        let board = Board::parse("armv7-linux", ARMV7).unwrap();
        assert_eq!(board.name, "armv7-linux");
        assert_eq!(board.profile, "size");
        assert_eq!(board.flavour.build_std_crates(), Some("std,panic_abort"));
        assert_eq!(board.budget.binary_bytes, Some(1000));
        assert_eq!(board.budget.idle_rss_kb, None);
        assert!(board.minimal_budget.is_empty());
        assert_eq!(board.budget_for(false).binary_bytes, Some(1000));
        assert_eq!(board.budget_for(true).binary_bytes, None);
        assert_eq!(
            board.linker_env_var(),
            "CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER"
        );
        assert_eq!(
            board.rustflags_env_var(),
            "CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS"
        );
    }

    #[test]
    fn rejects_unknown_keys_and_rss_budgets_under_qemu() {
        let typo = ARMV7.replace("binary-bytes", "binary-size");
        assert!(
            Board::parse("x", &typo)
                .unwrap_err()
                .0
                .contains("binary-size")
        );
        let rss_under_qemu = format!("{ARMV7}idle-rss-kb = 100\n");
        assert!(
            Board::parse("x", &rss_under_qemu)
                .unwrap_err()
                .0
                .contains("qemu")
        );
        let minimal_rss_under_qemu = format!("{ARMV7}[minimal-budget]\nidle-rss-kb = 100\n");
        assert!(
            Board::parse("x", &minimal_rss_under_qemu)
                .unwrap_err()
                .0
                .contains("qemu")
        );
    }

    #[test]
    fn the_minimal_build_has_budgets_of_its_own() {
        let board = Board::parse(
            "armv7-linux",
            &format!("{ARMV7}[minimal-budget]\nbinary-bytes = 500\n"),
        )
        .unwrap();
        assert_eq!(board.budget_for(false).binary_bytes, Some(1000));
        assert_eq!(board.budget_for(true).binary_bytes, Some(500));
    }

    #[test]
    fn the_repository_boards_are_valid_and_complete() {
        let boards = load_all(&boards_dir()).unwrap();
        let names: Vec<&str> = boards.iter().map(|b| b.name.as_str()).collect();
        for wanted in [
            "x86_64-linux",
            "x86_64-musl",
            "armv7-linux",
            "aarch64-linux",
            "mipsel-linux",
            "riscv64-linux",
            "thumbv7em-none-eabihf",
            "riscv32imac-unknown-none-elf",
        ] {
            assert!(names.contains(&wanted), "missing board {wanted}: {names:?}");
        }
        for board in &boards {
            if board.is_library_only() {
                assert_eq!(board.package, "femtomq-core", "{}", board.name);
            } else {
                assert!(board.strip.is_some(), "{} needs a strip tool", board.name);
                assert!(
                    board.budget.binary_bytes.is_some(),
                    "{} has no binary budget",
                    board.name
                );
            }
            if board.native {
                assert!(board.budget.idle_rss_kb.is_some(), "{}", board.name);
                assert!(
                    board.minimal_budget.idle_rss_kb.is_some(),
                    "{}: the minimal build's idle RSS is the figure the footprint promise is about",
                    board.name
                );
            }
        }
        let error = load(&boards_dir(), "no-such-board").unwrap_err();
        assert!(error.0.contains("armv7-linux"), "{error}");
    }
}
