//! `cargo xtask eval-ml`: the evaluation table of the README, reproduced.
//! Two data sets: the lab captures (labels from their manifest) and
//! synthetic captures the generator labels itself (a normal capture to
//! train on, a second normal one with another seed, and one with the
//! scripted attacks and their per-frame labels). Each set gives one
//! `modbus-detect eval` table; JSON beside them in `target/eval/`.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

use super::{build_release, root, setup, status};

/// Frames per synthetic capture (each takes a second or two to replay).
const FRAMES: &str = "200000";

pub fn eval_ml(args: &[String]) -> Result<ExitCode> {
    if !args.is_empty() {
        anyhow::bail!("usage: cargo xtask eval-ml");
    }
    setup::setup()?;
    let bin = build_release(
        &["modbus-detect", "modbus-synth"],
        &["modbus-detect", "modbus-synth"],
    )?;
    let out = root().join("target/eval");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;

    println!("## Lab captures (tests/fixtures/lab, labels from manifest.json)\n");
    let mut lab = Command::new(bin.join("modbus-detect"));
    lab.arg("eval")
        .arg("--manifest")
        .arg(root().join("tests/fixtures/lab/manifest.json"))
        .arg("--json")
        .arg(out.join("lab.json"));
    status(lab)?;

    let synth = |name: &str, seed: &str, attacks: bool| -> Result<String> {
        let mut c = Command::new(bin.join("modbus-synth"));
        c.args(["--frames", FRAMES, "--seed", seed, "--out"])
            .arg(out.join(format!("{name}.pcap")));
        if attacks {
            c.arg("--attacks")
                .arg("--labels")
                .arg(out.join(format!("{name}.labels.csv")));
        }
        let o = c.output().context("cannot start modbus-synth")?;
        if !o.status.success() {
            anyhow::bail!(
                "modbus-synth failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    synth("synth-normal", "11", false)?;
    synth("synth-normal-2", "13", false)?;
    let summary = synth("synth-attack", "12", true)?;
    // The generator's masters and writers (its summary's JSON lists).
    let list = |key: &str| -> String {
        let start = summary
            .find(&format!("\"{key}\":["))
            .map(|i| i + key.len() + 4);
        let body = start
            .and_then(|s| summary[s..].find(']').map(|e| &summary[s..s + e]))
            .unwrap_or("");
        body.replace('"', "")
    };
    println!(
        "\n## Synthetic captures ({FRAMES} frames each: train on seed 11, score seed 12 with the scripted attacks and seed 13 without)\n"
    );
    let mut syn = Command::new(bin.join("modbus-detect"));
    syn.arg("eval")
        .arg("--normal")
        .arg(out.join("synth-normal.pcap"))
        .arg("--capture")
        .arg(format!(
            "{}={}",
            out.join("synth-attack.pcap").display(),
            out.join("synth-attack.labels.csv").display()
        ))
        .arg("--capture")
        .arg(out.join("synth-normal-2.pcap"))
        .args(["--authorized-masters", &list("authorized_masters")])
        .args(["--authorized-writers", &list("authorized_writers")])
        .arg("--json")
        .arg(out.join("synthetic.json"));
    status(syn)?;
    Ok(ExitCode::SUCCESS)
}
