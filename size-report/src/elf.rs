//! What an ELF binary is made of: its sections and, from the symbol table of an unstripped
//! copy, the code size of each crate.

use std::collections::HashMap;
use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol, SectionFlags, SymbolKind};
use serde::Serialize;

/// `SHF_ALLOC`: the section occupies memory when the program runs.
const SHF_ALLOC: u64 = 0x2;

/// The loaded sections of a binary, grouped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sections {
    /// Size of the file, in bytes.
    pub file_bytes: u64,
    /// Code: `.text`, `.init`, `.fini`, `.plt*`.
    pub text: u64,
    /// Read-only data: `.rodata*`, `.eh_frame*`, `.gcc_except_table`.
    pub rodata: u64,
    /// Initialised writable data: `.data*`, `.got*`, `.init_array`, `.fini_array`, `.tdata`,
    /// `.dynamic`, `.sdata`.
    pub data: u64,
    /// Zero-initialised data (takes memory, not file space): `.bss*`, `.tbss`, `.sbss`.
    pub bss: u64,
    /// Other loaded sections: dynamic linking tables, notes, interpreter path, relocations.
    pub other: u64,
}

/// Reads the loaded sections of the ELF file at `path`.
pub fn sections(path: &Path) -> Result<Sections, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file = object::File::parse(&*data)
        .map_err(|e| format!("{} is not an object file: {e}", path.display()))?;
    let mut sections = Sections {
        file_bytes: data.len() as u64,
        ..Sections::default()
    };
    for section in file.sections() {
        let allocated = match section.flags() {
            SectionFlags::Elf { sh_flags } => sh_flags & SHF_ALLOC != 0,
            _ => false,
        };
        if !allocated {
            continue;
        }
        let name = section.name().unwrap_or("");
        let size = section.size();
        let slot = match name {
            n if n.starts_with(".text")
                || n == ".init"
                || n == ".fini"
                || n.starts_with(".plt") =>
            {
                &mut sections.text
            }
            n if n.starts_with(".rodata")
                || n.starts_with(".eh_frame")
                || n == ".gcc_except_table"
                || n.starts_with(".srodata") =>
            {
                &mut sections.rodata
            }
            n if n.starts_with(".data")
                || n.starts_with(".got")
                || n.starts_with(".sdata")
                || n == ".init_array"
                || n == ".fini_array"
                || n == ".tdata"
                || n == ".dynamic" =>
            {
                &mut sections.data
            }
            n if n.starts_with(".bss") || n == ".tbss" || n.starts_with(".sbss") => {
                &mut sections.bss
            }
            _ => &mut sections.other,
        };
        *slot += size;
    }
    Ok(sections)
}

/// Code attributed to one crate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrateSize {
    /// The crate (`[C]` for symbols that are not Rust: libc, crt, the unwinder).
    pub name: String,
    /// Bytes of the function symbols attributed to it.
    pub bytes: u64,
}

/// Sums the sizes of the function symbols of the unstripped ELF file at `path` by crate,
/// largest first.
pub fn crates(path: &Path) -> Result<Vec<CrateSize>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file = object::File::parse(&*data)
        .map_err(|e| format!("{} is not an object file: {e}", path.display()))?;
    let mut by_crate: HashMap<String, u64> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for symbol in file.symbols() {
        if symbol.kind() != SymbolKind::Text || symbol.size() == 0 {
            continue;
        }
        // Aliases share an address: count the code once.
        if !seen.insert(symbol.address()) {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        *by_crate.entry(crate_of(name)).or_default() += symbol.size();
    }
    if by_crate.is_empty() {
        return Err(format!(
            "{} has no function symbols (is it stripped?)",
            path.display()
        ));
    }
    let mut crates: Vec<CrateSize> = by_crate
        .into_iter()
        .map(|(name, bytes)| CrateSize { name, bytes })
        .collect();
    crates.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    Ok(crates)
}

/// The crate a (mangled) symbol belongs to: the first path segment of its demangled name, with
/// `<...>` impl brackets, references and pointers looked through. Symbols that are not Rust
/// belong to `[C]`.
pub fn crate_of(mangled: &str) -> String {
    let Ok(demangled) = rustc_demangle::try_demangle(mangled) else {
        return "[C]".to_string();
    };
    let text = format!("{demangled:#}");
    let mut rest = text.as_str();
    loop {
        let before = rest;
        for prefix in ["<", "&", "mut ", "*const ", "*mut ", "[", "(", "dyn "] {
            rest = rest.strip_prefix(prefix).unwrap_or(rest);
        }
        if rest == before {
            break;
        }
    }
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let head = &rest[..end];
    if head.is_empty() || !rest[end..].starts_with("::") {
        // A primitive type (`<u8 as core::fmt::Debug>`) or a lone name: say so rather than guess.
        "[other Rust]".to_string()
    } else {
        head.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_symbols_to_crates() {
        // Legacy mangling of femtomq_core::codec::decode::h0123456789abcdef.
        assert_eq!(
            crate_of("_ZN12femtomq_core5codec6decode17h0123456789abcdefE"),
            "femtomq_core"
        );
        // <alloc::vec::Vec<T> as core::ops::Drop>::drop
        assert_eq!(
            crate_of(
                "_ZN66_$LT$alloc..vec..Vec$LT$T$GT$$u20$as$u20$core..ops..drop..Drop$GT$4drop17h0123456789abcdefE"
            ),
            "alloc"
        );
        assert_eq!(crate_of("memcpy"), "[C]");
        assert_eq!(crate_of("epoll_wait"), "[C]");
    }

    #[test]
    fn reads_this_test_binary() {
        let me = std::env::current_exe().unwrap();
        let sections = sections(&me).unwrap();
        assert!(sections.text > 0 && sections.file_bytes > sections.text);
        let crates = crates(&me).unwrap();
        assert!(crates.iter().any(|c| c.name == "size_report"), "{crates:?}");
        assert!(crates.windows(2).all(|w| w[0].bytes >= w[1].bytes));
    }
}
