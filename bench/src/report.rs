//! One Markdown table out of every result file (`target/bench/*.json` and
//! criterion's `target/criterion/**/new/`), and `results.json` with all of
//! it plus the machine it ran on.

use std::path::Path;

use serde_json::{json, Value};

use crate::results::{self, Row};
use crate::stats::Summary;

/// The benchmark files `report` reads, in table order.
pub const PARTS: [&str; 4] = ["replay", "alloc", "memory", "live"];

/// Criterion's results: one row per benchmark, figures per element (a
/// frame, segment or operation: see the benchmark's name), the median of
/// its samples with min and max.
pub fn criterion_rows(dir: &Path) -> Vec<Row> {
    let mut found = Vec::new();
    collect(dir, &mut found);
    found.sort();
    found
        .iter()
        .filter_map(|new| {
            let read = |f: &str| -> Option<Value> {
                serde_json::from_slice(&std::fs::read(new.join(f)).ok()?).ok()
            };
            let bench = read("benchmark.json")?;
            let sample = read("sample.json")?;
            let elements = bench["throughput"]["Elements"].as_u64().unwrap_or(1).max(1) as f64;
            let iters = sample["iters"].as_array()?;
            let times = sample["times"].as_array()?;
            let ns: Vec<f64> = iters
                .iter()
                .zip(times)
                .filter_map(|(i, t)| Some(t.as_f64()? / i.as_f64()? / elements))
                .collect();
            let mut row = Row::new("micro", bench["full_id"].as_str()?.to_string());
            row.ns_per_frame = Summary::of(&ns);
            row.frames_per_s = row.ns_per_frame.as_ref().map(|s| s.map(|n| 1e9 / n));
            Some(row)
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        if p.file_name().is_some_and(|n| n == "new") && p.join("benchmark.json").exists() {
            out.push(p);
        } else if p.file_name().is_none_or(|n| n != "report") {
            collect(&p, out);
        }
    }
}

fn si(x: f64) -> String {
    let a = x.abs();
    if a >= 1e9 {
        format!("{:.2} G", x / 1e9)
    } else if a >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if a >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

fn bytes(x: f64) -> String {
    if x >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", x / (1u64 << 20) as f64)
    } else {
        format!("{x:.0} B")
    }
}

/// "median (min–max)", or "median" when they agree at the shown precision.
fn cell(s: &Option<Summary>, fmt: fn(f64) -> String) -> String {
    let Some(s) = s else {
        return "–".into();
    };
    let (m, lo, hi) = (fmt(s.median), fmt(s.min), fmt(s.max));
    if lo == hi {
        m
    } else {
        format!("{m} ({lo} – {hi})")
    }
}

fn plain(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The table of measured rows, then (when there are any) the table of
/// counted ones: instructions per frame, which no other row has.
pub fn markdown(rows: &[Row]) -> String {
    let (counted, measured): (Vec<&Row>, Vec<&Row>) = rows
        .iter()
        .partition(|r| r.instructions_per_frame.is_some());
    let mut t = String::from(
        "| benchmark | frames/s | Gbit/s | ns/frame | allocations / M frames | memory | notes |\n\
         |---|---:|---:|---:|---:|---:|---|\n",
    );
    for r in measured {
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.name.replace('|', "/"),
            cell(&r.frames_per_s, si),
            cell(&r.gbit_per_s, plain),
            cell(&r.ns_per_frame, plain),
            cell(&r.allocs_per_m, plain),
            cell(&r.memory_bytes, bytes),
            r.note.replace('|', "/"),
        ));
    }
    if !counted.is_empty() {
        t.push_str(
            "\n| counted | instructions / frame | notes |\n\
             |---|---:|---|\n",
        );
        for r in counted {
            t.push_str(&format!(
                "| {} | {} | {} |\n",
                r.name.replace('|', "/"),
                cell(&r.instructions_per_frame, plain),
                r.note.replace('|', "/"),
            ));
        }
    }
    t
}

/// The machine, for the record.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse::<u64>().ok())
        .map_or(0, |k| k / 1024 / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let virt = cpuinfo.contains(" hypervisor");
    json!({"cpu": model, "cores": cores, "memory_gib": mem, "kernel": kernel, "virtual_machine": virt})
}

/// Gather, print and save. Returns the Markdown.
pub fn run(dir: &Path, criterion: &Path) -> std::io::Result<String> {
    let mut rows: Vec<Row> = Vec::new();
    let mut details = serde_json::Map::new();
    for part in ["replay", "alloc", "memory"] {
        if let Some((r, d)) = results::read(dir, part) {
            rows.extend(r);
            details.insert(part.into(), d);
        }
    }
    let micro = criterion_rows(criterion);
    rows.extend(micro.iter().cloned());
    if let Some((r, d)) = results::read(dir, "live") {
        rows.extend(r);
        details.insert("live".into(), d);
    }
    let m = machine();
    let table = markdown(&rows);
    let heading = format!(
        "Machine: {} ({} cores, {} GiB{}), Linux {}.\n\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["memory_gib"],
        if m["virtual_machine"] == true {
            ", a virtual machine"
        } else {
            ""
        },
        m["kernel"].as_str().unwrap_or("?"),
    );
    let md = format!("{heading}{table}");
    let doc = json!({
        "machine": m,
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "details": details,
        "markdown": md,
    });
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?,
    )?;
    std::fs::write(dir.join("results.md"), &md)?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counted rows get a table of their own: the measured table keeps
    /// its columns, and no count hides in a column meant for a time.
    #[test]
    fn counted_rows_get_their_own_table() {
        let mut timed = Row::new("replay", "1 thread, ML on");
        timed.frames_per_s = Summary::of(&[5.0e6]);
        let mut counted = Row::new("instructions", "1 thread, ML on");
        counted.instructions_per_frame = Summary::of(&[1514.6]);
        let md = markdown(&[counted, timed]);
        let (first, second) = md.split_once("\n\n").expect("two tables");
        assert!(first.contains("| 1 thread, ML on | 5.00 M |"), "{first}");
        assert!(!first.contains("1515"), "{first}");
        assert!(second.starts_with("| counted | instructions / frame |"));
        assert!(second.contains("| 1 thread, ML on | 1515 |"), "{second}");
        assert!(!markdown(&[]).contains("counted"));
    }
}
