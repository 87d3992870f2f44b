//! The Debian package of `cargo xtask package` (which `cargo xtask test`
//! builds before the tests), installed with `dpkg -i`: it puts the sensor,
//! its unit, conffiles, documents and demo where it says, the installed
//! binary replays the installed demo to the very report this tree's
//! detector gives on the repo's demo (a stale or broken package fails),
//! and `dpkg --purge` takes it all away again.
//!
//! Root (dpkg). Fails, never skips, when the package is missing, and will
//! not touch a modbus-detect already installed on the machine.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use modbus_tests::{read_report_json, require_root, run};
use serde_json::Value;

const PACKAGE: &str = "modbus-detect";
const BIN: &str = "/usr/bin/modbus-detect";
const UNIT: &str = "/lib/systemd/system/modbus-detect.service";
const CONFFILES: [&str; 2] = [
    "/etc/modbus-detect/modbus-detect.toml",
    "/etc/logrotate.d/modbus-detect",
];
const DOCS: [&str; 3] = [
    "/usr/share/doc/modbus-detect/README.md",
    "/usr/share/doc/modbus-detect/copyright",
    "/usr/share/doc/modbus-detect/usage.txt",
];
const DEMO: &str = "/usr/share/modbus-detect/demo";

/// Alert types the demo's lab captures are made to raise (one of each
/// attack scenario); both runs must have them, so that two runs broken the
/// same way do not agree on nothing.
const DEMO_ALERTS: &[&str] = &[
    "ROGUE_MODBUS_MASTER",
    "UNAUTHORIZED_MODBUS_WRITE",
    "REGISTER_VALUE_OUT_OF_RANGE",
    "REGISTER_VALUE_EXCESSIVE_RATE",
    "DEVICE_ENUMERATION",
    "FUNCTION_CODE_SCAN",
    "MODBUS_FLOOD",
    "EXCEPTION_BURST",
    "MALFORMED_MBAP_HEADER",
    "ML_ANOMALY",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the workspace root")
}

fn output(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"))
}

/// A command's stdout; panics with its stderr when it fails.
fn stdout_of(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{shown} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package's file, named as `cargo xtask package` names it: the
/// workspace's version (modbus-detect's and this crate's; the report's
/// `version` is checked against it below), a pre-release's `-` as `~`.
fn deb() -> PathBuf {
    let arch = stdout_of(Command::new("dpkg").arg("--print-architecture"));
    let version = env!("CARGO_PKG_VERSION").replace('-', "~");
    workspace()
        .join("target/debian")
        .join(format!("{PACKAGE}_{version}_{}.deb", arch.trim()))
}

/// dpkg's status of the package, if dpkg knows it in any state.
fn dpkg_status() -> Option<String> {
    let out = output(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]));
    let status = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !status.ends_with("not-installed")).then_some(status)
}

/// The installed package, purged when dropped: a failing test leaves the
/// machine as it found it.
struct Installed {
    purged: bool,
}

impl Installed {
    fn purge(&mut self) -> Output {
        self.purged = true;
        output(Command::new("dpkg").args(["--purge", PACKAGE]))
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.purged {
            let out = self.purge();
            if !out.status.success() {
                eprintln!(
                    "dpkg --purge {PACKAGE} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// `cargo xtask run`'s demo arguments, as `demo.args` in the demo folder
/// `demo` lists them, with the outputs in `out`.
fn demo_args(demo: &Path, out: &Path) -> Vec<String> {
    let file = demo.join("demo.args");
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.replace("{demo}", &demo.display().to_string())
                .replace("{out}", &out.display().to_string())
        })
        .collect()
}

/// What two runs of the demo must agree on: the whole report but for the
/// timing, the memory, the thread count and the paths (the demo's folder
/// becomes `<demo>/`, the alert stream's name goes).
fn comparable(mut report: Value, demo: &Path) -> Value {
    let obj = report.as_object_mut().expect("the report is an object");
    obj.remove("processing_seconds");
    obj.remove("peak_memory_kib");
    if let Some(settings) = obj.get_mut("settings").and_then(Value::as_object_mut) {
        settings.remove("threads");
        settings.remove("eve_file");
    }
    relocate(&mut report, &format!("{}/", demo.display()));
    report
}

fn relocate(v: &mut Value, prefix: &str) {
    match v {
        Value::String(s) => {
            if let Some(rest) = s.strip_prefix(prefix) {
                *s = format!("<demo>/{rest}");
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| relocate(i, prefix)),
        Value::Object(map) => map.values_mut().for_each(|i| relocate(i, prefix)),
        _ => {}
    }
}

/// Alerts counted by type.
fn alerts_by_type(report: &Value) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for a in report["alerts"].as_array().expect("the report has alerts") {
        let kind = a["type"].as_str().expect("an alert has a type");
        *m.entry(kind.to_string()).or_insert(0) += a["count"].as_u64().expect("a count");
    }
    m
}

#[test]
fn the_package_installs_replays_the_demo_and_purges() {
    require_root("installing the Debian package needs root (dpkg -i)");
    let deb = deb();
    assert!(
        deb.is_file(),
        "{} is missing: build it with `cargo xtask package` (`cargo xtask test` does so before the tests)",
        deb.display()
    );
    if let Some(status) = dpkg_status() {
        panic!(
            "a {PACKAGE} package is already on this machine ({status}): this test installs and \
             purges its own and will not replace it (nor its configuration); \
             `dpkg --purge {PACKAGE}` first if it may go"
        );
    }
    assert!(
        !Path::new(BIN).exists(),
        "{BIN} exists and is no package's: this test will not overwrite it"
    );

    // The reference: this tree's detector, in this process, on the repo's
    // demo (`run` puts its outputs in its temporary folder, `{dir}`).
    let repo_demo = workspace().join("modbus-detect/demo");
    let args = demo_args(&repo_demo, Path::new("{dir}"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let reference = run(&args);
    assert_eq!(reference.exit, Ok(0), "the reference run of the demo");
    let reference = reference.report().clone();
    assert_eq!(
        reference["version"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "modbus-detect's version is no longer the workspace's: name the package file after it here"
    );

    let mut installed = Installed { purged: false };
    let t = Instant::now();
    let out = output(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(
        out.status.success(),
        "dpkg -i {} failed ({}): {}{}",
        deb.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("dpkg -i: {:.2?}", t.elapsed());

    // What dpkg says it installed, and what is on disk.
    let demo_files: Vec<String> = std::fs::read_dir(&repo_demo)
        .expect("the repo's demo folder")
        .map(|e| {
            e.expect("a demo file")
                .file_name()
                .into_string()
                .expect("a UTF-8 name")
        })
        .collect();
    assert!(!demo_files.is_empty(), "{} is empty", repo_demo.display());
    let demo_paths: Vec<String> = demo_files.iter().map(|f| format!("{DEMO}/{f}")).collect();
    let mut files: Vec<&str> = vec![BIN, UNIT];
    files.extend(CONFFILES);
    files.extend(DOCS);
    files.extend(demo_paths.iter().map(String::as_str));
    let listed = stdout_of(Command::new("dpkg").args(["-L", PACKAGE]));
    for f in &files {
        assert!(
            listed.lines().any(|l| l == *f),
            "`dpkg -L {PACKAGE}` does not list {f}:\n{listed}"
        );
        let meta = std::fs::metadata(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        let mode = if *f == BIN { 0o755 } else { 0o644 };
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (0, 0, mode),
            "{f}: owner, group and mode"
        );
    }
    // The demo the installed binary replays below is the repo's.
    for f in &demo_files {
        let ours = std::fs::read(repo_demo.join(f)).expect("a repo demo file");
        let theirs = std::fs::read(Path::new(DEMO).join(f)).expect("an installed demo file");
        assert!(
            ours == theirs,
            "{DEMO}/{f} is not the repo's: the package is stale, run `cargo xtask package`"
        );
    }
    let conffiles = stdout_of(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]));
    for c in CONFFILES {
        assert!(
            conffiles
                .lines()
                .any(|l| l.split_whitespace().next() == Some(c)),
            "{c} is not a conffile of {PACKAGE}: {conffiles:?}"
        );
    }
    let unit = std::fs::read_to_string(UNIT).expect("the installed unit");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart line");
    assert_eq!(
        exec.split_whitespace().next(),
        Some(BIN),
        "the installed unit's ExecStart: {exec}"
    );
    assert!(
        !unit.contains("/usr/local"),
        "the installed unit names /usr/local:\n{unit}"
    );
    let usage = std::fs::read_to_string(DOCS[2]).expect("the installed usage.txt");
    let help = stdout_of(Command::new(BIN).arg("--help"));
    assert_eq!(usage, help, "usage.txt is the installed binary's --help");

    // The demo, from the installed package.
    let out_dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let out = output(Command::new(BIN).args(demo_args(Path::new(DEMO), out_dir.path())));
    assert!(
        out.status.success(),
        "{BIN} on the installed demo failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("installed demo replay: {:.2?}", t.elapsed());
    let report = read_report_json(&out_dir.path().join("modbus_anomaly_report.json"));
    let eve =
        std::fs::read_to_string(out_dir.path().join("alerts.eve.json")).expect("the EVE file");
    assert!(
        eve.lines().count() > 0,
        "the installed demo wrote no alert line"
    );

    let ours = alerts_by_type(&reference);
    let theirs = alerts_by_type(&report);
    for kind in DEMO_ALERTS {
        assert!(
            ours.contains_key(*kind),
            "the demo raises no {kind} with this tree: {ours:?}"
        );
    }
    assert_eq!(
        theirs, ours,
        "alerts by type: the installed binary (left) and this tree's detector (right); \
         is the package stale? (`cargo xtask package`)"
    );
    let theirs = comparable(report, Path::new(DEMO));
    let ours = comparable(reference, &repo_demo);
    for (key, value) in ours.as_object().expect("an object") {
        assert_eq!(
            theirs.get(key),
            Some(value),
            "the report's {key:?}: the installed binary (left) and this tree's detector (right)"
        );
    }
    assert_eq!(theirs, ours, "the whole report");

    let t = Instant::now();
    let out = installed.purge();
    assert!(
        out.status.success(),
        "dpkg --purge {PACKAGE} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("dpkg --purge: {:.2?}", t.elapsed());
    for f in files {
        assert!(!Path::new(f).exists(), "{f} is still there after the purge");
    }
    assert_eq!(
        dpkg_status(),
        None,
        "dpkg still knows {PACKAGE} after the purge"
    );
}
