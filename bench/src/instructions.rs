//! Instructions per frame of the single-thread replay, counted by
//! callgrind from the runtime's entry (`replay_watched`: read, decode,
//! detect, report) to its return.
//!
//! Wall-clock figures on a shared virtual machine move with the host: the
//! same binary replays twice as fast on one day as on another here. An
//! instruction count is the same on every run and every machine, so it
//! shows what a change did, and how far a frames/s target is on another
//! CPU (frames/s = instructions/s of that CPU / instructions per frame).
//! It does not see cache misses: the timed rows still say what they cost.

use std::path::Path;
use std::process::Command;

use crate::replay::Run;
use crate::results::Row;
use crate::stats::Summary;

/// The function whose calls callgrind counts (`--toggle-collect`): every
/// replay, with or without a report, goes through it.
const COUNTED: &str = "*runtime::offline::replay_watched*";

/// The two rows: ML off and ML on, one run each (a count does not vary
/// enough between runs to need more: only the hash tables' random keys
/// change it, by well under 0.1 %). `work`: where callgrind's files go.
pub fn rows(pcap: &Path, baseline: &Path, work: &Path) -> std::io::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for ml in [false, true] {
        let out = work.join(format!(
            "callgrind-ml-{}.out",
            if ml { "on" } else { "off" }
        ));
        let (instructions, run) = count(pcap, baseline, ml, &out)?;
        let tag = if ml { "ML on" } else { "ML off" };
        let mut row = Row::new(
            "instructions",
            format!("1 thread, no pipeline (read+decode+detect), {tag}"),
        );
        row.instructions_per_frame = Summary::of(&[instructions as f64 / run.frames as f64]);
        row.note = format!(
            "callgrind, {} frames, {} alerts; the same on any machine",
            run.frames, run.alerts
        );
        rows.push(row);
    }
    Ok(rows)
}

/// One `replay-once --plan inline` under callgrind: the instructions it
/// counted in [`COUNTED`], and what the replay itself reported.
fn count(pcap: &Path, baseline: &Path, ml: bool, out: &Path) -> std::io::Result<(u64, Run)> {
    // Quiet: valgrind's banner and summary would bury the replay's own
    // error on stderr.
    let mut cmd = Command::new("valgrind");
    cmd.args(["-q", "--tool=callgrind"])
        .arg(format!("--toggle-collect={COUNTED}"))
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(std::env::current_exe()?)
        .args(["replay-once", "--plan", "inline", "--pcap"])
        .arg(pcap)
        .arg("--baseline")
        .arg(baseline);
    if ml {
        cmd.arg("--ml");
    }
    let done = cmd.output().map_err(|e| {
        std::io::Error::other(format!(
            "cannot start valgrind ({e}): `cargo xtask setup` installs it (Debian package valgrind)"
        ))
    })?;
    if !done.status.success() {
        return Err(std::io::Error::other(format!(
            "replay-once under callgrind failed ({}): {}",
            done.status,
            String::from_utf8_lossy(&done.stderr).trim()
        )));
    }
    let run = serde_json::from_slice(&done.stdout)
        .ok()
        .and_then(|v| Run::from_json(&v))
        .ok_or_else(|| std::io::Error::other("replay-once under callgrind: bad output"))?;
    let text = std::fs::read_to_string(out)
        .map_err(|e| std::io::Error::other(format!("{}: {e}", out.display())))?;
    match summary(&text) {
        Some(n) if n > 0 && run.frames > 0 => Ok((n, run)),
        _ => Err(std::io::Error::other(format!(
            "{}: callgrind counted no instructions in {COUNTED} (renamed, or inlined away?)",
            out.display()
        ))),
    }
}

/// The instructions a callgrind output file totals (its `summary:` line,
/// or `totals:` where there is none).
fn summary(text: &str) -> Option<u64> {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    value("summary:").or_else(|| value("totals:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_comes_from_the_summary_line() {
        let file = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\n\
                    fn=(1) main\n3 12\nsummary: 3028100974\n\ntotals: 3028100974\n";
        assert_eq!(summary(file), Some(3_028_100_974));
        assert_eq!(summary("events: Ir\ntotals: 42\n"), Some(42));
        assert_eq!(summary("events: Ir\nfn=(1) main\n3 12\n"), None);
        assert_eq!(summary("summary: many\n"), None);
    }
}
