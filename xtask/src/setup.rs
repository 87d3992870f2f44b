//! `cargo xtask setup`: what building the XDP program and running the live
//! capture tests need beyond a stable Rust toolchain, installed if missing.
//! Idempotent: each step says whether it found the thing or installed it.
//!
//! - Debian packages: clang, libelf-dev, m4, libpcap-dev, pkg-config,
//!   zlib1g-dev and gcc-multilib (xsk-rs builds libxdp from source; its BPF
//!   objects need `asm/types.h`), ethtool, iproute2, iputils-ping, tshark,
//!   tcpdump (the live tests), prometheus (the metrics are scraped by a
//!   real server in a test), logrotate, dpkg-dev (dpkg-shlibdeps and strip
//!   for `cargo xtask package`), chromium and chromium-driver (the
//!   dashboard is tested in a real browser), nats-server (the sensors
//!   publish into a real JetStream cluster in a test), valgrind (the
//!   benchmark counts instructions per frame with callgrind) (`apt-get update`
//!   then `apt-get install -y` for the missing ones only).
//! - the nightly toolchain's `rust-src` (aya-build compiles `core` for
//!   bpfel-unknown-none with `-Z build-std=core`).
//! - the build toolchain's `llvm-tools` (its `llvm-profdata` merges the
//!   training profiles of the profile-guided release build, `pgo.rs`).
//! - `bpf-linker` 0.13, built against the nightly toolchain's own LLVM, so
//!   that the bitcode nightly rustc emits is read by the same LLVM version.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

const APT_PACKAGES: &[&str] = &[
    "clang",
    "libelf-dev",
    "m4",
    "libpcap-dev",
    "pkg-config",
    "zlib1g-dev",
    "gcc-multilib",
    "ethtool",
    "iproute2",
    "iputils-ping",
    "tshark",
    "tcpdump",
    "prometheus",
    "logrotate",
    "dpkg-dev",
    "chromium",
    "chromium-driver",
    "nats-server",
    "valgrind",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Install what is missing; say what was there and what was done.
pub fn setup() -> Result<()> {
    apt_packages()?;
    rust_src()?;
    llvm_tools()?;
    bpf_linker()?;
    Ok(())
}

fn say(msg: impl AsRef<str>) {
    eprintln!("xtask setup: {}", msg.as_ref());
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Run a command, failing with its name if it cannot start or fails.
fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let st = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !st.success() {
        bail!("{shown} failed ({st})");
    }
    Ok(())
}

/// A command's stdout, if it ran and succeeded.
fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|u| u.trim() == "0")
}

fn apt_packages() -> Result<()> {
    let installed = |pkg: &str| {
        output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
            .is_some_and(|s| s.contains("install ok installed"))
    };
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        say(format!(
            "packages already installed: {}",
            APT_PACKAGES.join(" ")
        ));
        return Ok(());
    }
    if output(Command::new("apt-get").arg("--version")).is_none() {
        bail!(
            "missing packages {} and no apt-get: install them with the system's package manager",
            missing.join(" ")
        );
    }
    // Root runs apt-get itself; anyone else through sudo (which may ask).
    let apt = || {
        if is_root() {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        }
    };
    say(format!("installing packages: {}", missing.join(" ")));
    run(apt().arg("update")).context("apt-get update")?;
    run(apt()
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing))
    .context("apt-get install")?;
    say(format!("installed packages: {}", missing.join(" ")));
    Ok(())
}

fn rust_src() -> Result<()> {
    let has_nightly =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])).is_some();
    if !has_nightly {
        say("installing the nightly toolchain with rust-src");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
        return Ok(());
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.trim().starts_with("rust-src")) {
        say("nightly rust-src already installed");
        return Ok(());
    }
    say("adding rust-src to the nightly toolchain");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// `llvm-tools` of the toolchain that builds the workspace (rustup's
/// default here, or a `rust-toolchain` file's), run from the workspace.
fn llvm_tools() -> Result<()> {
    if crate::pgo::llvm_profdata().is_ok() {
        say("llvm-tools (llvm-profdata) already installed");
        return Ok(());
    }
    say("adding llvm-tools to the build toolchain");
    run(Command::new("rustup")
        .args(["component", "add", "llvm-tools"])
        .current_dir(workspace_root()))
}

fn bpf_linker() -> Result<()> {
    let wanted_minor = BPF_LINKER_VERSION
        .rsplit_once('.')
        .map_or(BPF_LINKER_VERSION, |(m, _)| m);
    if let Some(v) = output(Command::new("bpf-linker").arg("--version")) {
        if v.split_whitespace().any(|w| w.starts_with(wanted_minor)) {
            say(format!("{} already installed", v.trim()));
            return Ok(());
        }
        say(format!(
            "found {}, installing bpf-linker {BPF_LINKER_VERSION}",
            v.trim()
        ));
    }

    let sysroot =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
            .context("cannot ask the nightly rustc for its sysroot")?;
    let sysroot = PathBuf::from(sysroot.trim());
    let lib = sysroot.join("lib");
    let verbose = output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))
        .context("cannot ask the nightly rustc for its LLVM version")?;
    let llvm_major = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next().map(str::to_string))
        .context("the nightly rustc does not say its LLVM version")?;
    // libLLVM.so.<ver>-rust-<rustc ver>-nightly
    let libllvm = std::fs::read_dir(&lib)
        .with_context(|| format!("{}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-") && n.ends_with("-nightly"))
        .with_context(|| format!("no libLLVM.so.*-rust-*-nightly in {}", lib.display()))?;

    // An LLVM "prefix" holding only lib/libLLVM.so, for bpf-linker's build
    // (llvm-sys) to link against nightly's LLVM; the rpath finds it at run
    // time.
    let prefix = workspace_root().join("target/llvm-prefix");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("mkdir {}", prefix_lib.display()))?;
    let link = prefix_lib.join("libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(lib.join(&libllvm), &link)
        .with_context(|| format!("symlink {}", link.display()))?;

    say(format!(
        "building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {llvm_major} ({libllvm}); this takes a few minutes"
    ));
    run(Command::new("cargo")
        .env("LLVM_PREFIX", &prefix)
        .env(
            "RUSTFLAGS",
            format!("-C link-arg=-Wl,-rpath,{}", lib.display()),
        )
        .args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm_major}"),
        ]))
    .context("installing bpf-linker")?;
    let v = output(Command::new("bpf-linker").arg("--version"))
        .context("bpf-linker was installed but does not run (is ~/.cargo/bin on PATH?)")?;
    say(format!("installed {}", v.trim()));
    Ok(())
}
