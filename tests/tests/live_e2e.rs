//! The live sensor end to end: real tokio-modbus masters and slave talk
//! across a switch in network namespaces, the PLC's port is mirrored to the
//! sensor's interface, and `modbus-detect --interface` (XDP + AF_XDP)
//! watches it while tcpdump records the same mirrored traffic on a second
//! copy of the mirror. The live report and the replay of the recording must
//! raise the same alerts; non-Modbus traffic (ping, HTTP) must never reach
//! userspace; nothing may be dropped; the XDP program must be gone after.
//!
//! Root only (namespaces, XDP). CI runs as root; these fail, not skip, without it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use modbus_tests::netns::{unique_prefix, Host, Topology};
use serde_json::Value;

const LAB: &str = env!("CARGO_BIN_EXE_modbus-lab");
const START: Duration = Duration::from_secs(20);
const STOP: Duration = Duration::from_secs(20);

fn require_root() {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the live tests need root (namespaces, XDP); CI runs them as root"
    );
}

/// Detector flags shared by the live run and the replay.
fn detector_flags(limits: &Path) -> Vec<String> {
    [
        "--authorized-masters",
        "10.77.0.20",
        "--authorized-writers",
        "10.77.0.20",
        "--register-limits-file",
        limits.to_str().unwrap(),
        "--threads",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .expect("valid report JSON")
}

/// Alerts as comparable keys: everything but times and ports.
fn alert_set(report: &Value) -> BTreeMap<String, u64> {
    report["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| {
            let key = format!(
                "{} {} {}->{} unit {} fc {} reg {}",
                a["type"],
                a["severity"],
                a["src_ip"],
                a["dst_ip"],
                a["unit_id"],
                a["function_code"],
                a["register"]
            );
            (key, a["count"].as_u64().unwrap())
        })
        .fold(BTreeMap::new(), |mut m, (k, n)| {
            *m.entry(k).or_default() += n;
            m
        })
}

fn lab(topo: &Topology, host: Host, args: &[&str]) {
    let out = topo.run_in(host, LAB, args).expect("modbus-lab run");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn xdp_attached(topo: &Topology) -> bool {
    let out = topo
        .run_in(
            Host::Sensor,
            "ip",
            &["link", "show", "dev", topo.sensor_iface()],
        )
        .expect("ip link show");
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

/// Run the scenario with the sensor in `mode`; returns (live report, replay report).
fn scenario(mode: &str) -> (Value, Value) {
    require_root();
    let topo = Topology::create(&unique_prefix("mbe")).expect("topology");
    let dir = tempfile::tempdir().unwrap();
    let limits = dir.path().join("limits.json");
    std::fs::write(
        &limits,
        r#"{"40021": {"name": "Tank Level Setpoint", "min": 10, "max": 90}}"#,
    )
    .unwrap();
    let report = dir.path().join("live.json");
    let pcap = dir.path().join("mirror.pcap");
    let plc_addr = format!("{}:502", topo.plc_ip());
    let mut plc = topo
        .spawn_in(Host::Plc, LAB, &["plc", "--listen", &plc_addr])
        .expect("PLC");
    plc.wait_for_line("listening on", START).expect("PLC up");
    let http = topo
        .spawn_in(
            Host::Plc,
            "python3",
            &["-m", "http.server", "80", "--bind", "10.77.0.10"],
        )
        .expect("HTTP server");
    let mut tcpdump = topo
        .spawn_in(
            Host::Sensor,
            "tcpdump",
            &[
                "-i",
                topo.tap_iface(),
                "-w",
                pcap.to_str().unwrap(),
                "-U",
                "--immediate-mode",
                "-s",
                "0",
            ],
        )
        .expect("tcpdump");
    tcpdump
        .wait_for_line("listening on", START)
        .expect("tcpdump up");
    let bin = modbus_tests::detector_binary();
    let mut args: Vec<String> = vec![
        "--interface".into(),
        topo.sensor_iface().into(),
        "--xdp-mode".into(),
        mode.into(),
        "--output".into(),
        report.display().to_string(),
        "--stats-interval".into(),
        "1".into(),
    ];
    args.extend(detector_flags(&limits));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut sensor = topo
        .spawn_in(Host::Sensor, bin.to_str().unwrap(), &argv)
        .expect("sensor");
    sensor
        .wait_for_line("capturing on", START)
        .expect("sensor up");
    assert!(xdp_attached(&topo), "XDP program attached");

    // Normal polling, attacks, and traffic that is not Modbus.
    lab(
        &topo,
        Host::Hmi,
        &[
            "hmi",
            "--target",
            &plc_addr,
            "--duration",
            "1.5",
            "--interval-ms",
            "20",
            "--write-every",
            "5",
        ],
    );
    for kind in ["rogue", "write", "enumerate", "exceptions", "oor"] {
        lab(
            &topo,
            Host::Attacker,
            &["attack", "--target", &plc_addr, "--kind", kind],
        );
    }
    topo.run_in(Host::Hmi, "ping", &["-c", "5", "-i", "0.05", "10.77.0.10"])
        .expect("ping");
    topo.run_in(
        Host::Hmi,
        "python3",
        &[
            "-c",
            "import urllib.request; urllib.request.urlopen('http://10.77.0.10/', timeout=5).read()",
        ],
    )
    .expect("HTTP GET");
    std::thread::sleep(Duration::from_millis(300));

    let done = sensor.stop(STOP).expect("sensor stops on SIGTERM");
    assert_eq!(done.status.code(), Some(130), "stderr: {}", done.stderr);
    tcpdump.stop(STOP).expect("tcpdump stops");
    drop(http);
    plc.stop(STOP).expect("PLC stops");
    assert!(!xdp_attached(&topo), "XDP program detached on exit");

    let live = read_json(&report);
    let replay_out = dir.path().join("replay.json");
    let mut rargs: Vec<String> = vec![
        "--pcap".into(),
        pcap.display().to_string(),
        "--output".into(),
        replay_out.display().to_string(),
        "--quiet".into(),
    ];
    rargs.extend(detector_flags(&limits));
    let out = std::process::Command::new(&bin)
        .args(&rargs)
        .output()
        .expect("replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replay = read_json(&replay_out);
    topo.teardown().expect("teardown");
    (live, replay)
}

fn check(live: &Value, replay: &Value) {
    assert_eq!(live["status"], "interrupted");
    let lc = &live["counters"];
    let rc = &replay["counters"];
    // The same Modbus traffic, decoded the same way.
    for k in ["modbus_adus", "requests", "responses", "exceptions"] {
        assert_eq!(lc[k], rc[k], "{k}: live {} replay {}", lc[k], rc[k]);
    }
    assert!(lc["requests"].as_u64().unwrap() > 50);
    // The same alerts, with the same counts.
    let (la, ra) = (alert_set(live), alert_set(replay));
    assert_eq!(la, ra, "live and replay alerts");
    for t in [
        "ROGUE_MODBUS_MASTER",
        "UNAUTHORIZED_MODBUS_WRITE",
        "DEVICE_ENUMERATION",
        "EXCEPTION_BURST",
        "REGISTER_VALUE_OUT_OF_RANGE",
    ] {
        assert!(la.keys().any(|k| k.contains(t)), "{t} raised live: {la:?}");
    }
    // Non-Modbus traffic crossed the mirror (the recording has it) ...
    let skipped = &rc["skipped"];
    assert!(
        skipped["not_tcp"].as_u64().unwrap() >= 10,
        "pings mirrored: {skipped}"
    );
    assert!(
        skipped["not_modbus_port"].as_u64().unwrap() >= 6,
        "HTTP mirrored: {skipped}"
    );
    // ... but never reached userspace live: XDP passed it.
    let ls = &lc["skipped"];
    assert_eq!(ls["not_tcp"], 0, "{ls}");
    assert_eq!(ls["not_modbus_port"], 0, "{ls}");
    let cap = &live["capture"];
    let xdp = &cap["xdp"];
    assert_eq!(
        xdp["redirected"], lc["frames"],
        "every redirected frame was read"
    );
    assert_eq!(xdp["redirect_failed"], 0);
    assert!(
        xdp["passed"].as_u64().unwrap() >= 16,
        "ping + HTTP passed: {xdp}"
    );
    // Zero loss at every stage.
    for q in cap["queues"].as_array().unwrap() {
        for k in [
            "shard_ring_full_drops",
            "rx_dropped",
            "rx_ring_full",
            "rx_invalid_descs",
        ] {
            assert_eq!(q[k], 0, "queue {}: {k}", q["queue"]);
        }
    }
    assert_eq!(lc["reassembly_gaps"], 0);
}

#[test]
fn live_sensor_in_native_mode_matches_the_replay() {
    let (live, replay) = scenario("native");
    assert_eq!(live["capture"]["xdp_mode"], "native");
    check(&live, &replay);
}

#[test]
fn live_sensor_in_skb_mode_matches_the_replay() {
    let (live, replay) = scenario("skb");
    assert_eq!(live["capture"]["xdp_mode"], "skb");
    check(&live, &replay);
}

/// A missing interface is a one-line error and exit code 3.
#[test]
fn missing_interface() {
    let out = std::process::Command::new(modbus_tests::detector_binary())
        .args([
            "--interface",
            "mbd-nope0",
            "--output",
            "/tmp/mbd-never-written.json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "modbus-detect: error: mbd-nope0: no such interface"
    );
}
