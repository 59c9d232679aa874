//! `cargo xtask package openwrt|deb --board NAME [--minimal]`: installable packages assembled
//! from a board's cross build, with no OpenWrt SDK and no debhelper.
//!
//! An OpenWrt `.ipk` is an `ar` archive of `debian-binary` ("2.0"), `control.tar.gz` (the
//! `control` fields, `conffiles`, `postinst`, `prerm`) and `data.tar.gz` (the files, owned by
//! root); a `.deb` is the same with Debian's fields, made by `dpkg-deb --build`. The files come
//! from `packaging/`: the procd init script and the router's default configuration for OpenWrt,
//! the systemd unit and the annotated `femtomq.toml` for Debian.

use std::path::{Path, PathBuf};
use std::process::Command;

use femtomq_boards::Board;

use crate::cross::{self, Built, runner_command};
use crate::{Result, run, workspace_root};

/// The package's version: the workspace's.
const VERSION: &str = env!("CARGO_PKG_VERSION");
const DESCRIPTION: &str = "MQTT 5.0 / 3.1.1 broker for the edge\n \
    A small broker with TLS and WebSocket listeners, Mosquitto-compatible password and ACL\n \
    files, and persistent sessions that survive a crash.";

/// What kind of package to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An OpenWrt `.ipk`.
    OpenWrt,
    /// A Debian `.deb`.
    Deb,
}

/// Parses `openwrt|deb --board NAME [--minimal]`, builds and packages; prints the package's
/// path last.
pub fn package_command(args: &[String]) -> Result {
    let (kind, rest) = match args.split_first() {
        Some((kind, rest)) if kind == "openwrt" => (Kind::OpenWrt, rest),
        Some((kind, rest)) if kind == "deb" => (Kind::Deb, rest),
        _ => return Err("package: usage: package openwrt|deb --board NAME [--minimal]".into()),
    };
    let (name, minimal) = cross::board_args("package", rest)?;
    let name = name.ok_or("package: --board NAME is required (see boards/)")?;
    let board = cross::board(&name)?;
    let built = cross::build(&board, minimal)?;
    let package = make(kind, &board, &built, minimal)?;
    println!("{}", package.display());
    Ok(())
}

/// The package architecture of `board` for `kind`, or why it has none.
fn architecture(kind: Kind, board: &Board) -> Result<String> {
    let (arch, key) = match kind {
        Kind::OpenWrt => (&board.openwrt_arch, "openwrt-arch"),
        Kind::Deb => (&board.deb_arch, "deb-arch"),
    };
    arch.clone().ok_or(format!(
        "board `{}` has no `{key}`: it is not packaged that way{}",
        board.name,
        if kind == Kind::OpenWrt {
            " (OpenWrt's libc is musl: use a static musl board such as mipsel-openwrt)"
        } else {
            ""
        }
    ))
}

/// Assembles the package from a build of `board` under `target/cross/packages/`.
pub fn make(kind: Kind, board: &Board, built: &Built, minimal: bool) -> Result<PathBuf> {
    if board.is_library_only() {
        return Err(format!(
            "board `{}` builds the core library only: nothing to package",
            board.name
        ));
    }
    let arch = architecture(kind, board)?;
    let root = workspace_root();
    let packaging = root.join("packaging");
    let flavour = if minimal { "-minimal" } else { "" };
    let work = root
        .join("target/cross/packages")
        .join(format!("{}{flavour}-{kind:?}", board.name).to_lowercase());
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    }
    let data = work.join("data");
    let control = work.join(match kind {
        Kind::OpenWrt => "control",
        Kind::Deb => "data/DEBIAN",
    });
    install(&built.artifact, &data.join("usr/sbin/femtomq"), 0o755)?;
    let (config, conffile) = match kind {
        Kind::OpenWrt => {
            install(
                &packaging.join("openwrt/femtomq.init"),
                &data.join("etc/init.d/femtomq"),
                0o755,
            )?;
            (
                packaging.join("openwrt/femtomq.toml"),
                "/etc/femtomq/femtomq.toml",
            )
        }
        Kind::Deb => {
            install(
                &packaging.join("debian/femtomq.service"),
                &data.join("lib/systemd/system/femtomq.service"),
                0o644,
            )?;
            (root.join("femtomq.toml"), "/etc/femtomq/femtomq.toml")
        }
    };
    install(&config, &data.join(conffile.trim_start_matches('/')), 0o644)?;
    let installed_kib = tree_bytes(&data)?.div_ceil(1024);

    let name = if minimal {
        "femtomq-minimal"
    } else {
        "femtomq"
    };
    let mut fields = vec![
        format!("Package: {name}"),
        format!("Version: {VERSION}-1"),
        format!("Architecture: {arch}"),
        "Maintainer: femtomq developers".to_string(),
        "Section: net".to_string(),
        "Priority: optional".to_string(),
        format!("Installed-Size: {installed_kib}"),
        "License: MIT".to_string(),
    ];
    if minimal {
        fields.push("Provides: femtomq".to_string());
        fields.push("Conflicts: femtomq".to_string());
    }
    // No Depends: the OpenWrt board's binary is static (musl) and needs nothing from the
    // device; the Debian one links only glibc, which every Debian system has.
    fields.push(format!("Description: {DESCRIPTION}"));
    write(&control.join("control"), &(fields.join("\n") + "\n"), 0o644)?;
    write(&control.join("conffiles"), &format!("{conffile}\n"), 0o644)?;
    let scripts = packaging.join("openwrt");
    match kind {
        Kind::OpenWrt => {
            install(&scripts.join("postinst"), &control.join("postinst"), 0o755)?;
            install(&scripts.join("prerm"), &control.join("prerm"), 0o755)?;
        }
        Kind::Deb => {}
    }

    let file = work.join(format!(
        "{name}_{VERSION}-1_{arch}.{}",
        match kind {
            Kind::OpenWrt => "ipk",
            Kind::Deb => "deb",
        }
    ));
    match kind {
        Kind::OpenWrt => {
            write(&work.join("debian-binary"), "2.0\n", 0o644)?;
            tar(&control, &work.join("control.tar.gz"))?;
            tar(&data, &work.join("data.tar.gz"))?;
            // The order of the members is the format: debian-binary first.
            run(Command::new("ar")
                .arg("rcD")
                .arg(&file)
                .arg(work.join("debian-binary"))
                .arg(work.join("control.tar.gz"))
                .arg(work.join("data.tar.gz")))?;
        }
        Kind::Deb => {
            run(Command::new("dpkg-deb")
                .args(["--root-owner-group", "--build"])
                .arg(&data)
                .arg(&file))?;
        }
    }
    Ok(file)
}

/// Copies `from` to `to` (making its folders) with `mode`.
fn install(from: &Path, to: &Path, mode: u32) -> Result {
    let text = std::fs::read(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    write_bytes(to, &text, mode)
}

fn write(to: &Path, text: &str, mode: u32) -> Result {
    write_bytes(to, text.as_bytes(), mode)
}

fn write_bytes(to: &Path, bytes: &[u8], mode: u32) -> Result {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::write(to, bytes).map_err(|e| format!("cannot write {}: {e}", to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {}: {e}", to.display()))
}

/// Bytes of the regular files under `dir`.
fn tree_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let meta = entry
            .metadata()
            .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        total += if meta.is_dir() {
            tree_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// `tar czf OUT -C DIR .`, owned by root, sorted, with a fixed time: the same build gives the
/// same archive.
fn tar(dir: &Path, out: &Path) -> Result {
    run(Command::new("tar")
        .args([
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--sort=name",
            "--mtime=@0",
            "--format=gnu",
            "-czf",
        ])
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg("."))
}

/// CI: packages `board` for OpenWrt, unpacks the `.ipk` as opkg would, checks its members and
/// control fields, checks the packaged configuration with the packaged binary, and runs the
/// smoke suite on the packaged binary under qemu-user.
pub fn ci_openwrt(board_name: &str) -> Result {
    let board = cross::board(board_name)?;
    let built = cross::build(&board, false)?;
    let ipk = make(Kind::OpenWrt, &board, &built, false)?;
    let unpacked = ipk.with_extension("unpacked");
    if unpacked.exists() {
        std::fs::remove_dir_all(&unpacked).map_err(|e| format!("{}: {e}", unpacked.display()))?;
    }
    std::fs::create_dir_all(unpacked.join("data"))
        .and_then(|()| std::fs::create_dir_all(unpacked.join("control")))
        .map_err(|e| format!("{}: {e}", unpacked.display()))?;
    let members = output(Command::new("ar").arg("t").arg(&ipk))?;
    let members: Vec<&str> = members.lines().collect();
    if members != ["debian-binary", "control.tar.gz", "data.tar.gz"] {
        return Err(format!("{}: members {members:?}", ipk.display()));
    }
    run(Command::new("ar")
        .arg("x")
        .arg(&ipk)
        .arg("--output")
        .arg(&unpacked))?;
    for (archive, into) in [("control.tar.gz", "control"), ("data.tar.gz", "data")] {
        run(Command::new("tar")
            .arg("xzf")
            .arg(unpacked.join(archive))
            .arg("-C")
            .arg(unpacked.join(into)))?;
    }
    let control = std::fs::read_to_string(unpacked.join("control/control"))
        .map_err(|e| format!("the package has no control file: {e}"))?;
    let arch = architecture(Kind::OpenWrt, &board)?;
    for field in [
        "Package: femtomq".to_string(),
        format!("Version: {VERSION}-1"),
        format!("Architecture: {arch}"),
    ] {
        if !control.lines().any(|line| line == field) {
            return Err(format!("control file lacks `{field}`:\n{control}"));
        }
    }
    let data = unpacked.join("data");
    for file in [
        "usr/sbin/femtomq",
        "etc/init.d/femtomq",
        "etc/femtomq/femtomq.toml",
    ] {
        if !data.join(file).is_file() {
            return Err(format!("the package lacks /{file}"));
        }
    }
    let binary = data.join("usr/sbin/femtomq");
    let mut check = runner_command(&board, &binary);
    check
        .arg("check-config")
        .arg(data.join("etc/femtomq/femtomq.toml"));
    run(&mut check)?;
    cross::smoke(&board, &binary, cross::SmokeTls::Check)
}

/// CI: packages `board` as a `.deb` and checks its fields and files with `dpkg-deb`.
pub fn ci_deb(board_name: &str) -> Result {
    let board = cross::board(board_name)?;
    let built = cross::build(&board, false)?;
    let deb = make(Kind::Deb, &board, &built, false)?;
    let arch = architecture(Kind::Deb, &board)?;
    let fields = output(Command::new("dpkg-deb").arg("--field").arg(&deb).args([
        "Package",
        "Version",
        "Architecture",
    ]))?;
    for field in [
        "Package: femtomq".to_string(),
        format!("Version: {VERSION}-1"),
        format!("Architecture: {arch}"),
    ] {
        if !fields.lines().any(|line| line == field) {
            return Err(format!("{}: lacks `{field}`:\n{fields}", deb.display()));
        }
    }
    let contents = output(Command::new("dpkg-deb").arg("--contents").arg(&deb))?;
    for file in [
        "./usr/sbin/femtomq",
        "./lib/systemd/system/femtomq.service",
        "./etc/femtomq/femtomq.toml",
    ] {
        if !contents.lines().any(|line| line.ends_with(file)) {
            return Err(format!("{}: lacks {file}:\n{contents}", deb.display()));
        }
    }
    Ok(())
}

fn output(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
