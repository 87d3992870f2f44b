//! `--metrics` scraped by a real Prometheus server (Debian's `prometheus`,
//! installed by `cargo xtask setup`): the test starts it on loopback with
//! a scrape configuration pointing at a replay that serves its metrics
//! (and holds them after the run), and queries Prometheus's HTTP API until
//! the counters appear and match the report. Both processes are the
//! test's children and are stopped, also on failure.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use modbus_tests::{detector_binary, eventually, free_port, holds, Killed};
use serde_json::Value;

/// GET `path` from 127.0.0.1:`port`; the body, if the server answered 200.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
}

/// One instant query's value, if Prometheus has it.
fn query(port: u16, q: &str) -> Option<u64> {
    let body = get(port, &format!("/api/v1/query?query={q}"))?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

fn demo(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../modbus-detect/demo")
        .join(file)
        .display()
        .to_string()
}

#[test]
fn prometheus_scrapes_what_the_report_counts() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let (sensor_port, prom_port) = (free_port(), free_port());
    let sensor = Killed(
        Command::new(detector_binary())
            .args(["--pcap", &demo("demo.pcap"), "--quiet"])
            .args([
                "--authorized-masters",
                "192.168.50.20,192.168.50.30,192.168.50.40",
            ])
            .args(["--authorized-writers", "192.168.50.20"])
            .args(["--output", report.to_str().unwrap()])
            .args([
                "--metrics",
                &format!("127.0.0.1:{sensor_port}"),
                "--metrics-hold",
                "120",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("the detector starts"),
    );
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: modbus-detect\n    static_configs:\n      - targets: ['127.0.0.1:{sensor_port}']\n"
        ),
    )
    .unwrap();
    let prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus runs (cargo xtask setup installs it)"),
    );
    // The replay's report, once written (its metrics are final then).
    let r: Value = eventually(Duration::from_secs(60), Duration::from_millis(100), || {
        let b = std::fs::read(&report).map_err(|e| format!("no report: {e}"))?;
        Ok(serde_json::from_slice(&b).expect("the report is JSON"))
    });
    let c = &r["counters"];
    let want = [
        ("modbus_detect_frames_total", c["frames"].as_u64().unwrap()),
        (
            "modbus_detect_modbus_adus_total",
            c["modbus_adus"].as_u64().unwrap(),
        ),
        (
            "modbus_detect_requests_total",
            c["requests"].as_u64().unwrap(),
        ),
        (
            "sum(modbus_detect_alerts_total)",
            c["alerts_total"].as_u64().unwrap(),
        ),
        (
            "modbus_detect_alerts_total%7Btype%3D%22ROGUE_MODBUS_MASTER%22%7D",
            c["alerts_by_type"]["ROGUE_MODBUS_MASTER"].as_u64().unwrap(),
        ),
        (
            "modbus_detect_alerts_by_severity_total%7Bseverity%3D%22CRITICAL%22%7D",
            c["alerts_by_severity"]["CRITICAL"].as_u64().unwrap(),
        ),
    ];
    assert!(want.iter().all(|(_, v)| *v > 0), "{want:?}");
    // Prometheus scrapes every second: each query comes to give the
    // report's figure.
    eventually(Duration::from_secs(60), Duration::from_millis(500), || {
        let got: Vec<Option<u64>> = want.iter().map(|(q, _)| query(prom_port, q)).collect();
        holds(
            got.iter().zip(&want).all(|(g, (_, w))| *g == Some(*w)),
            || format!("Prometheus answers {got:?} to {want:?}"),
        )
    });
    assert_eq!(query(prom_port, "up"), Some(1), "the target is up");
    // The scrape is the exposition format, with the build's version.
    let text = get(sensor_port, "/metrics").expect("/metrics answers");
    assert!(
        text.contains("modbus_detect_build_info{version=\""),
        "{text}"
    );
    drop(prometheus);
    drop(sensor);
}
