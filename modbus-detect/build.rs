//! Builds the XDP program (`../modbus-ebpf`) for bpfel-unknown-none with
//! aya-build (nightly, `-Z build-std=core`, bpf-linker), the way
//! aya-template does, and tells the crate where the object is: with the cfg
//! `modbus_xdp` set, `source::xdp` embeds `$OUT_DIR/modbus-xdp`.
//!
//! Without the cfg the crate still builds, with no eBPF program
//! (`source::xdp::available()` is false and live capture refuses to start):
//! - `AYA_BUILD_SKIP=1` (or `true`): aya-build's own switch, for builds that
//!   need no live capture.
//! - the nightly toolchain, its rust-src or bpf-linker is missing: a
//!   warning says so (`cargo xtask setup` installs them). Set
//!   `MODBUS_XDP_REQUIRE=1` to make that an error instead.
//!
//! The eBPF crate is not a workspace member and not a dependency, so it is
//! never built for the host; aya-build runs `cargo build --package
//! modbus-ebpf` from that crate's folder (its own workspace) into
//! `$OUT_DIR/aya-build/target`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const EBPF_PACKAGE: &str = "modbus-ebpf";
/// The `[[bin]]` of the eBPF crate: the object file aya-build copies to OUT_DIR.
const EBPF_BIN: &str = "modbus-xdp";

fn main() -> Result<()> {
    println!("cargo::rustc-check-cfg=cfg(modbus_xdp)");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-env-changed=MODBUS_XDP_REQUIRE");
    println!("cargo:rerun-if-changed=build.rs");

    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir
        .join("..")
        .join(EBPF_PACKAGE)
        .canonicalize()
        .with_context(|| {
            format!(
                "the eBPF crate is not at {}/../{EBPF_PACKAGE}",
                manifest_dir.display()
            )
        })?;
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR")?);
    // aya-build watches the eBPF crate's folder; the types both sides share
    // live in the common crate beside it, and a change there must rebuild
    // the object too.
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("..").join("modbus-common").display()
    );

    if skip_requested() {
        println!(
            "cargo:warning=AYA_BUILD_SKIP is set: building without the XDP program (no live capture)"
        );
        return Ok(());
    }

    let missing = missing_prerequisites();
    if !missing.is_empty() {
        let what = missing.join("; ");
        if env::var_os("MODBUS_XDP_REQUIRE").is_some_and(|v| v == "1" || v == "true") {
            bail!("cannot build the XDP program: {what}; run `cargo xtask setup`");
        }
        println!(
            "cargo:warning=building without the XDP program (no live capture): {what}; run `cargo xtask setup` and rebuild"
        );
        // A path that never exists: look again on every build until the
        // prerequisites are there.
        println!(
            "cargo:rerun-if-changed={}",
            out_dir.join("xdp-prerequisites-missing").display()
        );
        return Ok(());
    }
    if let Some(linker) = find_in_path("bpf-linker") {
        // A new bpf-linker means a new object (as aya-template's build.rs).
        println!("cargo:rerun-if-changed={}", linker.display());
    }

    // aya-build runs `cargo build --package modbus-ebpf` in the current
    // folder: make that the eBPF crate's own workspace, not ours (where it
    // is excluded).
    env::set_current_dir(&ebpf_dir).with_context(|| format!("cd {}", ebpf_dir.display()))?;
    // aya-build turns every line the inner cargo prints into a warning;
    // errors still come through, "Compiling ..." lines need not.
    env::set_var("CARGO_TERM_QUIET", "true");

    // aya-build builds in `$OUT_DIR/aya-build` and copies the object to
    // `$OUT_DIR`. Every build of this crate with other settings (build,
    // clippy, another feature set) has its own OUT_DIR; point aya-build at
    // one folder under the target dir instead, so the eBPF build (~350 MB,
    // ~20 s with core from source) is done once, not once per OUT_DIR. A
    // lock keeps two concurrent builds from copying the object at once.
    let build_dir = shared_build_dir(&out_dir).unwrap_or_else(|| out_dir.clone());
    fs::create_dir_all(&build_dir).with_context(|| format!("mkdir {}", build_dir.display()))?;
    let lock_path = build_dir.join(".lock");
    let lock = fs::File::create(&lock_path).with_context(|| format!("{}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    env::set_var("OUT_DIR", &build_dir);
    let root_dir = ebpf_dir
        .to_str()
        .context("the eBPF crate's path is not UTF-8")?;
    let package = aya_build::Package {
        name: EBPF_PACKAGE,
        root_dir,
        ..Default::default()
    };
    let built = aya_build::build_ebpf([package], aya_build::Toolchain::Nightly)
        .context("building the XDP program (modbus-ebpf) failed; `cargo xtask setup` installs what it needs, AYA_BUILD_SKIP=1 builds without it");
    env::set_var("OUT_DIR", &out_dir);
    built?;

    let object = out_dir.join(EBPF_BIN);
    let built_object = build_dir.join(EBPF_BIN);
    if built_object != object {
        fs::copy(&built_object, &object).with_context(|| {
            format!("copying {} to {}", built_object.display(), object.display())
        })?;
    }
    drop(lock);
    if !object.is_file() {
        bail!("aya-build did not produce {}", object.display());
    }
    println!("cargo:rustc-cfg=modbus_xdp");
    Ok(())
}

/// `AYA_BUILD_SKIP` as aya-build reads it.
fn skip_requested() -> bool {
    env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// What the eBPF build needs and this machine lacks, in words.
fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    if find_in_path("rustup").is_none() {
        missing.push("rustup is not on PATH".to_string());
    } else {
        match Command::new("rustup")
            .args(["run", "nightly", "rustc", "--print", "sysroot"])
            .output()
        {
            Ok(out) if out.status.success() => {
                let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let src = Path::new(&sysroot).join("lib/rustlib/src/rust/library/core");
                if !src.is_dir() {
                    missing.push("the nightly toolchain has no rust-src component".to_string());
                }
            }
            _ => missing.push("no nightly toolchain".to_string()),
        }
    }
    if find_in_path("bpf-linker").is_none() {
        missing.push("bpf-linker is not on PATH".to_string());
    }
    missing
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `<target dir>/modbus-ebpf-build`, from `OUT_DIR` =
/// `<target dir>[/<triple>]/<profile>/build/<pkg>-<hash>/out`.
fn shared_build_dir(out_dir: &Path) -> Option<PathBuf> {
    let build = out_dir.ancestors().nth(2)?;
    if build.file_name()? != "build" {
        return None;
    }
    Some(out_dir.ancestors().nth(4)?.join("modbus-ebpf-build"))
}
