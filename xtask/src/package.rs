//! `cargo xtask package`: a Debian package of the sensor,
//! `target/debian/modbus-detect_<version>_<arch>.deb`.
//!
//! Built with Debian's own `dpkg-deb --root-owner-group --build` from a
//! staging tree assembled here, not with cargo-deb: that would need a
//! `cargo install` on every fresh CI machine, while dpkg-deb and
//! dpkg-shlibdeps come with `dpkg-dev` (installed by `setup`).
//!
//! What the package holds, and where from:
//! - `/usr/bin/modbus-detect`: the release binary with the XDP program
//!   built in (`MODBUS_XDP_REQUIRE=1`: no package without it), built with
//!   profile-guided optimisation (`pgo.rs`), its DWARF stripped (symbols
//!   kept, so a backtrace still names functions).
//! - `/lib/systemd/system/modbus-detect.service`: `contrib/`'s unit with its
//!   `/usr/local` paths rewritten to the package's ([`packaged_unit`]).
//! - `/etc/modbus-detect/modbus-detect.toml` and
//!   `/etc/logrotate.d/modbus-detect`: conffiles, from `contrib/`.
//! - `/usr/share/doc/modbus-detect/`: README.md (uncompressed: the unit's
//!   `Documentation=` names it), `copyright`, `usage.txt` (the binary's
//!   `--help`).
//! - `/usr/share/modbus-detect/demo/`: `modbus-detect/demo/`, so the
//!   replay demo runs from the installed package.
//!
//! `tests/tests/package.rs` installs the result with `dpkg -i` and replays
//! the installed demo with the installed binary.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context, Result};

use crate::{cargo, pgo, root, setup, status};

const PACKAGE: &str = "modbus-detect";
/// Where the package puts the binary; the unit's `ExecStart` must name it.
const BIN_PATH: &str = "/usr/bin/modbus-detect";
const MAINTAINER: &str = "modbus-detect maintainers <modbus-detect@example.invalid>";
/// The licence the `copyright` file below is written for; the workspace's
/// `Cargo.toml` must still say this (checked, so the two cannot drift).
const LICENSE: &str = "MIT OR Apache-2.0";
const CONFFILES: &[&str] = &[
    "/etc/modbus-detect/modbus-detect.toml",
    "/etc/logrotate.d/modbus-detect",
];
/// contrib's unit describes a hand install under /usr/local; the package's
/// paths replace them. Each must be found: a unit that no longer names one
/// fails the build rather than shipping a unit that points elsewhere.
const UNIT_REWRITES: &[(&str, &str)] = &[
    ("/usr/local/bin/modbus-detect", BIN_PATH),
    ("/usr/local/share/doc", "/usr/share/doc"),
];

/// `cargo xtask package`: build the package, print its path.
pub fn package(args: &[String]) -> Result<ExitCode> {
    if let Some(a) = args.first() {
        bail!("package: unexpected argument {a:?} (usage: cargo xtask package)");
    }
    setup::setup()?;
    let deb = build()?;
    println!("{}", deb.display());
    Ok(ExitCode::SUCCESS)
}

/// Build the release binary and the package; the `.deb`'s path. Used by
/// `cargo xtask test` (after its own `setup`) so that the package test
/// finds a package of this very tree.
pub fn build() -> Result<PathBuf> {
    let version = deb_version(&crate_version(PACKAGE)?)?;
    let arch = stdout(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string();
    if arch.is_empty() {
        bail!("`dpkg --print-architecture` printed nothing");
    }

    // The XDP program must be in the packaged binary: without it the
    // installed sensor could replay but never capture.
    // Profile-guided: the package is what plants run (see `pgo.rs`).
    let built = pgo::build_release(&[PACKAGE], &[PACKAGE], &[("MODBUS_XDP_REQUIRE", "1")])
        .context("the release build for the package")?
        .join(PACKAGE);

    let out = root().join("target/debian");
    // dpkg-shlibdeps' working directory: `debian/control` and the package
    // tree in `debian/<package>/`, the layout it expects.
    let work = out.join("work");
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("removing the previous staging tree {}", work.display()))?;
    }
    let stage = work.join("debian").join(PACKAGE);

    // The binary, without its DWARF (most of its size).
    let bin = put_file(
        &stage,
        BIN_PATH,
        &std::fs::read(&built).with_context(|| built.display().to_string())?,
    )?;
    let mut strip = Command::new("strip");
    strip.arg("--strip-debug").arg(&bin);
    status(strip)?;
    set_mode(&bin, 0o755)?;
    let usage =
        stdout(Command::new(&bin).arg("--help")).context("running the packaged binary's --help")?;

    let src = root();
    let unit_src = src.join("contrib/modbus-detect.service");
    let unit = packaged_unit(&read_text(&unit_src)?)
        .with_context(|| format!("packaging {}", unit_src.display()))?;
    put_file(
        &stage,
        "/lib/systemd/system/modbus-detect.service",
        unit.as_bytes(),
    )?;
    copy_file(
        &src.join("contrib/modbus-detect.toml"),
        &stage,
        CONFFILES[0],
    )?;
    copy_file(
        &src.join("contrib/logrotate.d/modbus-detect"),
        &stage,
        CONFFILES[1],
    )?;

    let doc = "/usr/share/doc/modbus-detect";
    copy_file(&src.join("README.md"), &stage, &format!("{doc}/README.md"))?;
    put_file(&stage, &format!("{doc}/copyright"), copyright()?.as_bytes())?;
    put_file(&stage, &format!("{doc}/usage.txt"), usage.as_bytes())?;
    let demo = src.join("modbus-detect/demo");
    let copied = copy_tree(&demo, &stage, "/usr/share/modbus-detect/demo")?;
    if copied == 0 {
        bail!(
            "{} holds no files: the package would have no demo",
            demo.display()
        );
    }

    // Before dpkg-shlibdeps, which finds the package's root by it.
    let meta = stage.join("DEBIAN");
    create_dir(&meta)?;
    let depends = shlib_depends(&work, &bin)?;
    let installed_kib = installed_size_kib(&stage, &meta)?;

    write(
        &meta.join("control"),
        control(&version, &arch, &depends, installed_kib).as_bytes(),
    )?;
    let conffiles: String = CONFFILES.iter().map(|c| format!("{c}\n")).collect();
    write(&meta.join("conffiles"), conffiles.as_bytes())?;
    for (name, text) in [("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)] {
        write(&meta.join(name), text.as_bytes())?;
    }

    // Modes do not depend on the umask or on the sources' own modes.
    let executables = [
        bin.clone(),
        meta.join("postinst"),
        meta.join("prerm"),
        meta.join("postrm"),
    ];
    set_modes(&stage, &executables)?;

    let deb = out.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    if deb.exists() {
        std::fs::remove_file(&deb).with_context(|| format!("removing {}", deb.display()))?;
    }
    let mut dpkg_deb = Command::new("dpkg-deb");
    dpkg_deb
        .args(["--root-owner-group", "--build"])
        .arg(&stage)
        .arg(&deb);
    status(dpkg_deb)?;
    Ok(deb)
}

/// The unit as installed by the package: contrib's with [`UNIT_REWRITES`]
/// applied, checked to start the packaged binary and to name nothing under
/// /usr/local, and a header saying how to change it so that upgrades keep
/// the change (the file in /lib is the package's, not a conffile).
fn packaged_unit(unit: &str) -> Result<String> {
    let mut text = unit.to_string();
    for (from, to) in UNIT_REWRITES {
        if !text.contains(from) {
            bail!(
                "it no longer names {from}: update UNIT_REWRITES in xtask/src/package.rs \
                 so that the packaged unit and the package agree"
            );
        }
        text = text.replace(from, to);
    }
    if let Some(line) = text.lines().find(|l| l.contains("/usr/local")) {
        bail!("it still names /usr/local after the rewrite: {line:?}");
    }
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .context("it has no ExecStart= line")?;
    if exec.split_whitespace().next() != Some(BIN_PATH) {
        bail!("its ExecStart does not start {BIN_PATH}: {exec:?}");
    }
    Ok(format!(
        "# Installed by the {PACKAGE} Debian package, which replaces this file on\n\
         # upgrade: to set the capture interface, copy it to /etc/systemd/system\n\
         # with `systemctl edit --full {PACKAGE}.service` and edit the copy.\n\
         #\n{text}"
    ))
}

/// The package's version: the crate's, as cargo reads its manifest
/// (`cargo pkgid` resolves `version.workspace = true`, which a plain TOML
/// read would not), without a dependency for xtask.
fn crate_version(package: &str) -> Result<String> {
    let mut pkgid = cargo();
    pkgid.args(["pkgid", "-p", package]);
    // path+file:///work/modbus-detect#0.1.0, or ...#name@0.1.0 when the
    // folder's name is not the package's.
    let id = stdout(&mut pkgid)?;
    let version = id
        .trim()
        .rsplit_once('#')
        .map(|(_, v)| v.rsplit_once('@').map_or(v, |(_, v)| v))
        .with_context(|| format!("`cargo pkgid -p {package}` printed {id:?}"))?;
    Ok(version.to_string())
}

/// A Cargo (semver) version as a Debian version: a pre-release
/// (`1.0.0-rc.1`) sorts before its release in semver, which `~` does in
/// Debian (a `-` would start a Debian revision).
/// `tests/tests/package.rs` names the file the same way.
fn deb_version(semver: &str) -> Result<String> {
    let v = semver.replace('-', "~");
    let valid = v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~'));
    if !valid {
        bail!("version {semver:?} cannot be a Debian version");
    }
    Ok(v)
}

/// `Depends` from dpkg-shlibdeps: the packages of the binary's shared
/// libraries, with the minimum versions their symbols files give for the
/// symbols it uses (an ldd + `dpkg -S` map would give no versions, and a
/// package built on a newer glibc would install where it cannot run).
fn shlib_depends(work: &Path, bin: &Path) -> Result<String> {
    // dpkg-shlibdeps reads debian/control for the package's name.
    write(
        &work.join("debian/control"),
        format!(
            "Source: {PACKAGE}\nMaintainer: {MAINTAINER}\n\n\
             Package: {PACKAGE}\nArchitecture: any\nDescription: staging\n"
        )
        .as_bytes(),
    )?;
    let rel = bin
        .strip_prefix(work)
        .with_context(|| format!("{} is not under {}", bin.display(), work.display()))?;
    let mut shlibdeps = Command::new("dpkg-shlibdeps");
    shlibdeps
        .current_dir(work)
        .arg("-O")
        .arg(format!("-e{}", rel.display()));
    let out = stdout(&mut shlibdeps)?;
    let deps = out
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .with_context(|| format!("dpkg-shlibdeps printed no shlibs:Depends: {out:?}"))?
        .trim();
    if deps.is_empty() {
        bail!(
            "dpkg-shlibdeps found no shared library in {}, which links glibc",
            bin.display()
        );
    }
    Ok(deps.to_string())
}

/// `Installed-Size` in KiB as dpkg-gencontrol counts it: each file's size
/// rounded up to a KiB, one for each directory or other entry; `skip` (the
/// control folder) not counted.
fn installed_size_kib(dir: &Path, skip: &Path) -> Result<u64> {
    let mut kib = 0;
    for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let entry = entry.with_context(|| dir.display().to_string())?;
        if entry.path() == skip {
            continue;
        }
        let meta = entry
            .metadata()
            .with_context(|| entry.path().display().to_string())?;
        kib += if meta.is_file() {
            meta.len().div_ceil(1024)
        } else {
            1
        };
        if meta.is_dir() {
            kib += installed_size_kib(&entry.path(), skip)?;
        }
    }
    Ok(kib)
}

fn control(version: &str, arch: &str, depends: &str, installed_kib: u64) -> String {
    format!(
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}\n\
         Section: net\n\
         Priority: optional\n\
         Description: Modbus/TCP anomaly detector for ICS/SCADA networks\n \
         A line-rate Modbus/TCP anomaly detector, on a mirror (SPAN) port or TAP\n \
         (live capture through XDP and AF_XDP) or on capture files: it rebuilds\n \
         every TCP stream, decodes every Modbus ADU and raises alerts for rogue\n \
         masters, unauthorized writes, unsafe register values, device\n \
         enumeration, departures from a learned baseline, floods and malformed\n \
         framing, with a JSON report and an EVE JSON alert stream.\n \
         .\n \
         The systemd unit modbus-detect.service is installed but neither\n \
         enabled nor started: set the capture interface in\n \
         /etc/modbus-detect/modbus-detect.toml and in the unit first. The replay\n \
         demo is in /usr/share/modbus-detect/demo, its arguments in demo.args.\n"
    )
}

/// No postinst/prerm/postrm from debhelper here, so these are the systemd
/// parts of theirs a package whose unit is never enabled by installation
/// needs. Each does nothing without a running systemd (containers,
/// chroots). Installation does not enable or start the sensor: it must be
/// told its interface first, and a sensor started on the wrong one would
/// attach XDP to it.
///
/// postinst: make systemd read the new or changed unit; on an upgrade,
/// restart a running sensor so that it runs the new binary.
const POSTINST: &str = "#!/bin/sh
set -e
if [ \"$1\" = configure ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
    if [ -n \"$2\" ]; then
        systemctl try-restart modbus-detect.service >/dev/null || true
    fi
fi
exit 0
";

/// prerm: on removal, stop a running sensor before its binary goes (it
/// writes its report and detaches the XDP program); an upgrade leaves it
/// running until the postinst restarts it.
const PRERM: &str = "#!/bin/sh
set -e
if [ \"$1\" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop modbus-detect.service >/dev/null || true
fi
exit 0
";

/// postrm: make systemd forget the removed unit; on purge, also the link
/// `systemctl enable` made (the package's configuration goes with a purge).
/// Reports and alert logs (/var/lib, /var/log) are the site's records and
/// stay.
const POSTRM: &str = "#!/bin/sh
set -e
if [ \"$1\" = purge ]; then
    rm -f /etc/systemd/system/multi-user.target.wants/modbus-detect.service
fi
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
exit 0
";

/// A machine-readable copyright file (DEP-5) for the workspace's licence,
/// which must still be [`LICENSE`].
fn copyright() -> Result<String> {
    let manifest = root().join("Cargo.toml");
    let text = read_text(&manifest)?;
    let license = workspace_package_field(&text, "license")
        .with_context(|| format!("{}: no [workspace.package] license", manifest.display()))?;
    if license != LICENSE {
        bail!(
            "{} says license = {license:?}; the package's copyright file is written for \
             {LICENSE:?}: update copyright() in xtask/src/package.rs",
            manifest.display()
        );
    }
    let mut out = String::from(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: modbus-detect\n",
    );
    if let Some(repo) = workspace_package_field(&text, "repository") {
        let _ = writeln!(out, "Source: {repo}");
    }
    out.push_str(
        "Comment: The binary also holds, statically linked, the Rust crates listed\n \
         in the source's Cargo.lock, each under its own licence (mostly MIT and/or\n \
         Apache-2.0), and libxdp and libbpf (built by the libxdp-sys and\n \
         libbpf-sys crates), under LGPL-2.1 or BSD-2-Clause.\n\
         \n\
         Files: *\n\
         Copyright: the modbus-detect contributors\n\
         License: MIT or Apache-2.0\n\
         \n\
         License: MIT\n \
         Permission is hereby granted, free of charge, to any person obtaining a\n \
         copy of this software and associated documentation files (the\n \
         \"Software\"), to deal in the Software without restriction, including\n \
         without limitation the rights to use, copy, modify, merge, publish,\n \
         distribute, sublicense, and/or sell copies of the Software, and to\n \
         permit persons to whom the Software is furnished to do so, subject to\n \
         the following conditions:\n \
         .\n \
         The above copyright notice and this permission notice shall be included\n \
         in all copies or substantial portions of the Software.\n \
         .\n \
         THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS\n \
         OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF\n \
         MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT.\n \
         IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY\n \
         CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT,\n \
         TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE\n \
         SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.\n\
         \n\
         License: Apache-2.0\n \
         Licensed under the Apache License, Version 2.0 (the \"License\"); you may\n \
         not use this file except in compliance with the License. You may obtain\n \
         a copy of the License at http://www.apache.org/licenses/LICENSE-2.0\n \
         .\n \
         Unless required by applicable law or agreed to in writing, software\n \
         distributed under the License is distributed on an \"AS IS\" BASIS,\n \
         WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.\n \
         See the License for the specific language governing permissions and\n \
         limitations under the License.\n \
         .\n \
         On Debian systems, the full text of the Apache License, Version 2.0 is\n \
         in /usr/share/common-licenses/Apache-2.0.\n",
    );
    Ok(out)
}

/// `key = "value"` in the `[workspace.package]` table of a Cargo.toml (a
/// plain string value is all this needs; xtask has no TOML parser).
fn workspace_package_field(manifest: &str, key: &str) -> Option<String> {
    let mut in_table = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_table = line == "[workspace.package]";
            continue;
        }
        if !in_table {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim() == key {
            let v = v.trim();
            return v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_string);
        }
    }
    None
}

/// A command's stdout; fails with its stderr shown when it fails.
fn stdout(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed ({})", out.status);
    }
    String::from_utf8(out.stdout).with_context(|| format!("{shown} printed something not UTF-8"))
}

fn read_text(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
}

fn create_dir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("mkdir {}", p.display()))
}

fn write(p: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = p.parent() {
        create_dir(parent)?;
    }
    std::fs::write(p, bytes).with_context(|| format!("writing {}", p.display()))
}

/// Write `bytes` at the absolute `path` of the package tree `stage`.
fn put_file(stage: &Path, path: &str, bytes: &[u8]) -> Result<PathBuf> {
    let rel = path
        .strip_prefix('/')
        .with_context(|| format!("{path} is not absolute"))?;
    let dest = stage.join(rel);
    write(&dest, bytes)?;
    Ok(dest)
}

fn copy_file(src: &Path, stage: &Path, path: &str) -> Result<()> {
    let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    put_file(stage, path, &bytes).map(drop)
}

/// Copy the files under `src` to `path` in the package tree; how many.
fn copy_tree(src: &Path, stage: &Path, path: &str) -> Result<usize> {
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .with_context(|| format!("reading {}", src.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", src.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let name = name
            .to_str()
            .with_context(|| format!("{}: a name that is not UTF-8", e.path().display()))?;
        let kind = e
            .file_type()
            .with_context(|| e.path().display().to_string())?;
        let dest = format!("{path}/{name}");
        if kind.is_dir() {
            n += copy_tree(&e.path(), stage, &dest)?;
        } else if kind.is_file() {
            copy_file(&e.path(), stage, &dest)?;
            n += 1;
        } else {
            bail!("{}: neither a file nor a folder", e.path().display());
        }
    }
    Ok(n)
}

/// 0755 for folders and `executables`, 0644 for every other file.
fn set_modes(dir: &Path, executables: &[PathBuf]) -> Result<()> {
    set_mode(dir, 0o755)?;
    for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let path = entry.with_context(|| dir.display().to_string())?.path();
        if path.is_dir() {
            set_modes(&path, executables)?;
        } else {
            set_mode(
                &path,
                if executables.contains(&path) {
                    0o755
                } else {
                    0o644
                },
            )?;
        }
    }
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_is_rewritten_to_the_package_paths() {
        let unit = "Documentation=file:///usr/local/share/doc/modbus-detect/README.md\n\
                    ExecStart=/usr/local/bin/modbus-detect --config /etc/x.toml\n";
        let out = packaged_unit(unit).expect("rewritten");
        assert!(out.contains("ExecStart=/usr/bin/modbus-detect --config /etc/x.toml\n"));
        assert!(out.contains("file:///usr/share/doc/modbus-detect/README.md"));
        assert!(!out.contains("/usr/local"));
    }

    #[test]
    fn a_unit_that_drifted_fails() {
        // No documentation path to rewrite.
        assert!(packaged_unit("ExecStart=/usr/local/bin/modbus-detect\n").is_err());
        // Another binary in ExecStart.
        let other = "Documentation=file:///usr/local/share/doc/x\n\
                     ExecStart=/opt/x /usr/local/bin/modbus-detect\n";
        assert!(packaged_unit(other).is_err());
        // A /usr/local path the rewrite does not cover.
        let more = "Documentation=file:///usr/local/share/doc/x\n\
                    ExecStart=/usr/local/bin/modbus-detect\nExecStartPre=/usr/local/sbin/y\n";
        assert!(packaged_unit(more).is_err());
    }

    #[test]
    fn versions() {
        assert_eq!(deb_version("0.1.0").ok().as_deref(), Some("0.1.0"));
        assert_eq!(
            deb_version("1.0.0-rc.1").ok().as_deref(),
            Some("1.0.0~rc.1")
        );
        assert_eq!(
            deb_version("1.0.0-rc-1").ok().as_deref(),
            Some("1.0.0~rc~1")
        );
        assert!(deb_version("v1").is_err());
    }

    #[test]
    fn workspace_fields() {
        let m = "[workspace]\nlicense = \"no\"\n[workspace.package]\nversion = \"0.1.0\"\n\
                 license = \"MIT OR Apache-2.0\"\n[x]\nrepository = \"no\"\n";
        assert_eq!(
            workspace_package_field(m, "license").as_deref(),
            Some("MIT OR Apache-2.0")
        );
        assert_eq!(workspace_package_field(m, "repository"), None);
    }
}
