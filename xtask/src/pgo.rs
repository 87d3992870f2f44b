//! Profile-guided optimisation (PGO) of the release binaries that are
//! shipped (`cargo xtask package`) and measured (`cargo xtask bench`).
//!
//! The frame path is thin work spread over many small functions: decode,
//! shard bookkeeping, reassembly, matching, a dozen rule families. No one
//! of them is worth much alone (see the README's Performance section), but
//! the compiler can inline and lay out all of them better once it knows
//! which branches a real stream of frames takes. On the bench capture a
//! PGO build runs 21 % fewer instructions per frame and replays about
//! 30 % more frames per second on one core, with the same alerts.
//!
//! Three steps, in their own target directories so that the plain
//! `target/release` build (tests, `cargo xtask run`) is never rebuilt with
//! other flags:
//! 1. an instrumented build (`-Cprofile-generate`) in `target/pgo/gen`;
//! 2. training: synthetic captures written with other seeds than the
//!    bench capture's (so the bench does not measure its own training
//!    data), replayed by the instrumented `modbus-detect` the ways an
//!    operator runs it (learning a baseline, detecting with every rule and
//!    ML on with one and two shard threads, reading standard input, whose
//!    frames are copied into the shards' batches as live ones are) and on
//!    the bundled demo; `modbus-bench` too when it is being built, so that its
//!    own copies of the engine's generic code have counts;
//! 3. the profiles merged with the toolchain's `llvm-profdata` (rustup's
//!    `llvm-tools` component, installed by `setup`) and the optimised
//!    build (`-Cprofile-use`) in `target/pgo/use`.
//!
//! A profile that never saw a frame through the shard would optimise for
//! the wrong code in silence, so the merged profile is checked for counts
//! in `Shard::process` before it is used.
//!
//! The live capture path (the AF_XDP receive loop) cannot be trained here
//! without root and a network namespace; the compiler keeps its usual
//! optimisation for code without counts (`-pgso=false`: no size
//! optimisation of code the training did not run).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::{release_build, root, status};

/// Frames of each training capture: enough for every pair's ML windows
/// (`modbus-synth` squeezes minutes of traffic into them) in seconds.
const TRAIN_FRAMES: &str = "300000";

/// Build `bins` of `packages` in release mode with PGO; the directory the
/// binaries are in. `env`: variables for both builds (the package sets
/// `MODBUS_XDP_REQUIRE=1`).
pub fn build_release(packages: &[&str], bins: &[&str], env: &[(&str, &str)]) -> Result<PathBuf> {
    let profdata = llvm_profdata()?;
    let pgo = root().join("target/pgo");
    let raw = pgo.join("profiles");
    let train = pgo.join("train");
    for dir in [&raw, &train] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("removing the previous {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    // The trainers are built (and counted) beside what was asked for.
    let mut gen_packages = packages.to_vec();
    let mut gen_bins = bins.to_vec();
    for p in ["modbus-detect", "modbus-synth"] {
        if !gen_packages.contains(&p) {
            gen_packages.push(p);
        }
        if !gen_bins.contains(&p) {
            gen_bins.push(p);
        }
    }
    eprintln!("xtask pgo: instrumented build (target/pgo/gen)");
    let gen_dir = pgo.join("gen");
    let flag = format!("-Cprofile-generate={}", raw.display());
    status(build(&gen_packages, &gen_bins, env, &gen_dir, &flag))
        .context("the instrumented build")?;
    let gen_bin = gen_dir.join("release");
    // Build scripts and proc macros were instrumented too and counted the
    // build itself: only the training's counts go into the profile.
    std::fs::remove_dir_all(&raw)
        .and_then(|()| std::fs::create_dir_all(&raw))
        .with_context(|| format!("emptying {}", raw.display()))?;

    eprintln!("xtask pgo: training on synthetic captures and the demo");
    train_on(&gen_bin, &train, &raw, bins.contains(&"modbus-bench"))?;

    let merged = pgo.join("merged.profdata");
    let mut merge = Command::new(&profdata);
    merge.arg("merge").arg("-o").arg(&merged).arg(&raw);
    status(merge).context("merging the training profiles")?;
    check_profile(&profdata, &merged)?;

    eprintln!("xtask pgo: optimised build (target/pgo/use)");
    let use_dir = pgo.join("use");
    let flag = format!("-Cprofile-use={}", merged.display());
    status(build(packages, bins, env, &use_dir, &flag)).context("the profile-guided build")?;
    Ok(use_dir.join("release"))
}

/// `cargo build --release` into `target_dir` with `flag` added to the
/// caller's RUSTFLAGS. Passed as CARGO_ENCODED_RUSTFLAGS, whose separator
/// is not a space, so that a workspace path with spaces stays one flag.
/// aya-build sets its own flags for the eBPF program's build, so the flag
/// never reaches the BPF target.
fn build(
    packages: &[&str],
    bins: &[&str],
    env: &[(&str, &str)],
    target_dir: &Path,
    flag: &str,
) -> Command {
    let mut cmd = release_build(packages, bins);
    cmd.arg("--target-dir").arg(target_dir);
    let flags = encoded_rustflags(
        std::env::var("CARGO_ENCODED_RUSTFLAGS").ok(),
        std::env::var("RUSTFLAGS").ok(),
        &[flag, "-Cllvm-args=-pgso=false"],
    );
    cmd.env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", flags);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// The caller's flags (CARGO_ENCODED_RUSTFLAGS wins over RUSTFLAGS, as in
/// cargo) with `extra` after them, encoded for CARGO_ENCODED_RUSTFLAGS.
fn encoded_rustflags(encoded: Option<String>, plain: Option<String>, extra: &[&str]) -> String {
    const SEP: &str = "\x1f";
    let mut flags: Vec<&str> = match (&encoded, &plain) {
        (Some(e), _) => e.split(SEP).collect(),
        (None, Some(p)) => p.split_whitespace().collect(),
        (None, None) => Vec::new(),
    };
    flags.retain(|f| !f.is_empty());
    flags.extend(extra);
    flags.join(SEP)
}

/// The training runs. Every run must succeed: a run that fails early
/// would leave a profile of error paths.
fn train_on(bin: &Path, dir: &Path, raw: &Path, bench: bool) -> Result<()> {
    // Writing the captures is not what is being trained.
    let synth_profiles = dir.join("synth-profiles");
    let normal = dir.join("normal.pcap");
    let attacks = dir.join("attacks.pcap");
    for (out, extra) in [
        (&normal, &["--seed", "11"][..]),
        (
            &attacks,
            &[
                "--seed",
                "12",
                "--attacks",
                "--adus-per-segment",
                "3",
                "--split-adus",
            ][..],
        ),
    ] {
        let mut synth = Command::new(bin.join("modbus-synth"));
        synth
            .args(["--frames", TRAIN_FRAMES, "--out"])
            .arg(out)
            .args(extra)
            .env("LLVM_PROFILE_FILE", synth_profiles.join("%p.profraw"))
            .stdout(Stdio::null());
        status(synth)?;
    }

    let profile_file = raw.join("%m-%p.profraw");
    let detect = |args: &[&dyn AsRef<std::ffi::OsStr>]| -> Result<()> {
        let mut cmd = Command::new(bin.join("modbus-detect"));
        for a in args {
            cmd.arg(a);
        }
        cmd.env("LLVM_PROFILE_FILE", &profile_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        status(cmd)
    };
    let baseline = dir.join("baseline.json");
    let limits = root().join("modbus-detect/demo/register_limits.json");
    detect(&[
        &"--pcap",
        &normal,
        &"--baseline-mode",
        &"--baseline-file",
        &baseline,
        &"--output",
        &dir.join("learn.json"),
    ])?;
    // The synthetic masters are 10.1.0.1 up; the first half may write.
    for threads in ["1", "2"] {
        detect(&[
            &"--pcap",
            &attacks,
            &"--baseline-file",
            &baseline,
            &"--ml",
            &"--authorized-masters",
            &"10.1.0.0/26",
            &"--authorized-writers",
            &"10.1.0.0/28",
            &"--register-limits-file",
            &limits,
            &"--threads",
            &threads,
            &"--output",
            &dir.join(format!("detect-{threads}.json")),
            &"--eve",
            &dir.join(format!("detect-{threads}.eve.json")),
        ])?;
    }
    // From standard input: frames are copied into the shards' batches as
    // live capture copies them out of the AF_XDP ring.
    let mut piped = Command::new(bin.join("modbus-detect"));
    piped
        .args(["--pcap", "-", "--threads", "2", "--baseline-file"])
        .arg(&baseline)
        .arg("--output")
        .arg(dir.join("stdin.json"))
        .stdin(
            std::fs::File::open(&attacks)
                .with_context(|| format!("opening {}", attacks.display()))?,
        )
        .env("LLVM_PROFILE_FILE", &profile_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    status(piped)?;
    let demo: Vec<String> = crate::demo_args()?
        .into_iter()
        .map(|a| {
            a.replace(
                &root().join("target/demo").display().to_string(),
                &dir.display().to_string(),
            )
        })
        .collect();
    let demo: Vec<&dyn AsRef<std::ffi::OsStr>> = demo
        .iter()
        .map(|a| a as &dyn AsRef<std::ffi::OsStr>)
        .collect();
    detect(&demo)?;

    if bench {
        for ml in [false, true] {
            let mut cmd = Command::new(bin.join("modbus-bench"));
            cmd.arg("--out")
                .arg(dir)
                .args(["replay", "--profile", "--runs", "1", "--pcap"])
                .arg(&normal)
                .env("LLVM_PROFILE_FILE", &profile_file)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if ml {
                cmd.arg("--ml");
            }
            status(cmd)?;
        }
    }
    Ok(())
}

/// The merged profile must have counted frames through the shard
/// (`Shard::process`, mangled `..5Shard7process..`).
fn check_profile(profdata: &Path, merged: &Path) -> Result<()> {
    let out = Command::new(profdata)
        .args(["show", "--counts", "--function=5Shard7process"])
        .arg(merged)
        .output()
        .with_context(|| format!("running {} show", profdata.display()))?;
    if !out.status.success() || !counted(&String::from_utf8_lossy(&out.stdout)) {
        bail!(
            "the training profile {} has no counts in Shard::process: the training replayed no frame",
            merged.display()
        );
    }
    Ok(())
}

/// Whether `llvm-profdata show --counts` printed a block count above zero.
fn counted(show: &str) -> bool {
    show.lines()
        .filter_map(|l| l.trim().strip_prefix("Block counts: ["))
        .flat_map(|l| l.trim_end_matches(']').split(", "))
        .any(|n| n.parse::<u64>().is_ok_and(|n| n > 0))
}

/// rustup's `llvm-profdata`, of the LLVM the compiler uses.
pub fn llvm_profdata() -> Result<PathBuf> {
    let out = |args: &[&str]| -> Result<String> {
        let o = Command::new("rustc")
            .args(args)
            .current_dir(root())
            .output()
            .context("running rustc")?;
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let sysroot = out(&["--print", "sysroot"])?;
    let host = out(&["-vV"])?
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("rustc -vV names no host")?;
    let tool = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(host)
        .join("bin/llvm-profdata");
    if !tool.is_file() {
        bail!(
            "{} is missing: the profile-guided build needs rustup's llvm-tools component (run `cargo xtask setup`)",
            tool.display()
        );
    }
    Ok(tool)
}

#[cfg(test)]
mod tests {
    use super::{counted, encoded_rustflags};

    #[test]
    fn the_profile_flag_stays_one_flag_after_the_callers_own() {
        let flag = "-Cprofile-use=/home/a b/target/pgo/merged.profdata";
        assert_eq!(
            encoded_rustflags(None, Some(" -Ctarget-cpu=native  -g ".into()), &[flag]),
            format!("-Ctarget-cpu=native\x1f-g\x1f{flag}")
        );
        assert_eq!(
            encoded_rustflags(Some("-Cdebuginfo=1".into()), Some("-g".into()), &[flag]),
            format!("-Cdebuginfo=1\x1f{flag}")
        );
        assert_eq!(encoded_rustflags(Some(String::new()), None, &[flag]), flag);
    }

    /// `llvm-profdata show --counts --function=...` as LLVM 22 prints it.
    fn show(counts: &str) -> String {
        format!(
            "Counters:\n  _ZN13modbus_detect5shard5Shard7process17h27842fed0c93ab82E:\n    \
             Hash: 0x01be4d90a49161cc\n    Counters: 4\n    Block counts: [{counts}]\n\
             Functions shown: 1\nTotal functions: 22561\n"
        )
    }

    #[test]
    fn a_profile_that_ran_frames_through_the_shard_counts() {
        assert!(counted(&show("60716, 0, 4799984, 2")));
    }

    #[test]
    fn a_profile_without_shard_counts_is_refused() {
        assert!(!counted(&show("0, 0, 0, 0")));
        assert!(!counted(
            "Counters:\nFunctions shown: 0\nTotal functions: 22561\n"
        ));
    }
}
