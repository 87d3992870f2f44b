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

use modbus_tests::netns::{unique_prefix, Host, Topology, START, STOP};
use serde_json::{json, Value};

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

/// Run the scenario with the sensor in `mode`; returns (live report, replay report).
/// One live run on the mirror topology and the replay of its recording;
/// also the sensor interface's NAPI settings (`napi_defer_hard_irqs`,
/// `gro_flush_timeout`) as the sensor left them.
fn scenario(mode: &str, extra: &[&str]) -> (Value, Value, (u64, u64)) {
    modbus_tests::require_root("the live tests need root (namespaces, XDP)");
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
    let mut plc = topo.start_plc();
    let plc_addr = topo.plc_addr();
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
    args.extend(extra.iter().map(|a| a.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut sensor = topo.start_sensor(&argv);
    assert!(topo.xdp_attached(), "XDP program attached");

    // Normal polling, attacks, and traffic that is not Modbus.
    topo.lab(
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
        topo.lab(
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
    assert!(!topo.xdp_attached(), "XDP program detached on exit");

    let live = modbus_tests::read_report_json(&report);
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
    let replay = modbus_tests::read_report_json(&replay_out);
    let napi = |f: &str| -> u64 {
        let path = format!("/sys/class/net/{}/{f}", topo.sensor_iface());
        let out = topo.run_in(Host::Sensor, "cat", &[&path]).expect("cat");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect(f)
    };
    let tuning = (napi("napi_defer_hard_irqs"), napi("gro_flush_timeout"));
    topo.teardown().expect("teardown");
    (live, replay, tuning)
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
    let (live, replay, tuning) = scenario("native", &[]);
    assert_eq!(live["capture"]["xdp_mode"], "native");
    check(&live, &replay);
    // Busy polling is on by default, with the kernel's preferred busy
    // polling on the socket and the interface tuned for it.
    let busy = &live["capture"]["busy_poll"];
    assert_eq!(busy["spin_us"], 1000, "{busy}");
    assert_eq!(busy["kernel"], true, "{busy}");
    assert_eq!(busy["interface"]["changed"], true, "{busy}");
    assert_eq!(busy["interface"]["napi_defer_hard_irqs"], json!([0, 2]));
    assert_eq!(
        busy["interface"]["gro_flush_timeout_ns"],
        json!([0, 200000])
    );
    assert!(busy.get("warning").is_none(), "{busy}");
    assert_eq!(tuning, (2, 200_000), "the tuning the report shows");
}

#[test]
fn live_sensor_without_busy_polling_matches_the_replay() {
    let (live, replay, tuning) = scenario("native", &["--busy-poll", "0"]);
    check(&live, &replay);
    let busy = &live["capture"]["busy_poll"];
    assert_eq!(busy["spin_us"], 0, "{busy}");
    assert_eq!(busy["kernel"], false, "{busy}");
    assert!(busy.get("interface").is_none(), "{busy}");
    assert_eq!(tuning, (0, 0), "interface left untouched");
}

#[test]
fn live_sensor_in_skb_mode_matches_the_replay() {
    let (live, replay, _) = scenario("skb", &[]);
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

/// 802.1Q and QinQ (802.1ad) tagged frames cannot come through the mirror
/// (the kernel strips tags there and this kernel has no 8021q module): they
/// are injected into the sensor's veth with an AF_PACKET socket instead. The
/// XDP program must walk the tags, and the shards must decode them.
#[test]
fn vlan_tagged_frames_reach_the_detector() {
    use modbus_synth::{adu, read_registers_response, read_request, Conversation, PcapWriter};
    use std::net::Ipv4Addr;

    modbus_tests::require_root("the live tests need root (namespaces, XDP)");
    let topo = Topology::create(&unique_prefix("mbv")).expect("topology");
    let dir = tempfile::tempdir().unwrap();
    // One rogue master per tagging: 3 reads each, answered.
    let write = |path: &Path, rogue: Ipv4Addr| {
        let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
        let mut c = Conversation::new(rogue, 40000, Ipv4Addr::new(10, 77, 0, 10));
        let sec = 1_000_000_000;
        c.handshake(&mut w, sec).unwrap();
        for tid in 1..=3u16 {
            let t = sec + u64::from(tid) * sec / 10;
            c.send(&mut w, t, true, &adu(tid, 1, &read_request(3, 0, 2)))
                .unwrap();
            c.send(
                &mut w,
                t + 500_000,
                false,
                &adu(tid, 1, &read_registers_response(3, &[1, 2])),
            )
            .unwrap();
        }
        w.into_inner().unwrap();
    };
    let (one, two) = (dir.path().join("dot1q.pcap"), dir.path().join("qinq.pcap"));
    write(&one, Ipv4Addr::new(10, 66, 0, 1));
    write(&two, Ipv4Addr::new(10, 66, 0, 2));
    let report = dir.path().join("vlan.json");
    let args = [
        "--interface",
        topo.sensor_iface(),
        "--authorized-masters",
        "10.77.0.20",
        "--output",
        report.to_str().unwrap(),
    ];
    let mut sensor = topo.start_sensor(&args);
    topo.inject(&one, &["--vlan", "0x8100:100"]);
    topo.inject(&two, &["--vlan", "0x88a8:10,0x8100:20"]);
    std::thread::sleep(Duration::from_millis(300));
    let done = sensor.stop(STOP).expect("sensor stops");
    assert_eq!(done.status.code(), Some(130), "{}", done.stderr);
    let r = modbus_tests::read_report_json(&report);
    let alerts = alert_set(&r);
    for rogue in ["10.66.0.1", "10.66.0.2"] {
        let n: u64 = alerts
            .iter()
            .filter(|(k, _)| k.contains("ROGUE_MODBUS_MASTER") && k.contains(rogue))
            .map(|(_, n)| n)
            .sum();
        assert_eq!(n, 3, "{rogue}: {alerts:?}");
    }
    let c = &r["counters"];
    assert_eq!(c["requests"], 6);
    assert_eq!(c["responses"], 6);
    assert_eq!(r["capture"]["xdp"]["redirected"], c["frames"]);
    topo.teardown().expect("teardown");
}

/// On a host that itself serves Modbus on the interface, XDP redirect would
/// steal its sessions' frames: the sensor refuses unless --force.
#[test]
fn refuses_to_steal_frames_from_a_local_modbus_server() {
    modbus_tests::require_root("the live tests need root (namespaces, XDP)");
    let topo = Topology::create(&unique_prefix("mbf")).expect("topology");
    let mut plc = topo.start_plc();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let bin = modbus_tests::detector_binary();
    let args = [
        "--interface",
        "eth0",
        "--output",
        report.to_str().unwrap(),
        "--duration",
        "0.5",
    ];
    let refused = topo.run_in(Host::Plc, bin.to_str().unwrap(), &args);
    let err = refused.expect_err("refused without --force").to_string();
    assert!(
        err.contains("eth0: refusing to capture") && err.contains(":502"),
        "{err}"
    );
    assert!(!report.exists());
    let mut forced = args.to_vec();
    forced.push("--force");
    let out = topo
        .run_in(Host::Plc, bin.to_str().unwrap(), &forced)
        .expect("--force attaches");
    assert!(out.status.success());
    assert_eq!(
        modbus_tests::read_report_json(&report)["status"],
        "complete"
    );
    plc.stop(STOP).expect("PLC stops");
    topo.teardown().expect("teardown");
}

/// What a live sensor writes while it runs: the inventory files
/// (`complete: false`) and the report (`status: running`) appear during
/// capture and grow as the HMI polls; `stats` events join the alert lines,
/// valid against Suricata's EVE schema and counting what the report
/// counts; at the end the files are complete.
#[test]
fn periodic_outputs_while_capturing() {
    modbus_tests::require_root("the live tests need root (namespaces, XDP)");
    let topo = Topology::create(&unique_prefix("mbi")).expect("topology");
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("live.json");
    let inv = dir.path().join("inv.json");
    let eve = dir.path().join("eve.json");
    let mut plc = topo.start_plc();
    let args = [
        "--interface",
        topo.sensor_iface(),
        "--output",
        report.to_str().unwrap(),
        "--inventory",
        inv.to_str().unwrap(),
        "--inventory-interval",
        "0.3",
        "--report-interval",
        "0.3",
        "--eve",
        eve.to_str().unwrap(),
        "--stats-interval",
        "0.3",
        "--sensor-name",
        "cell-7",
        "--metrics",
        "127.0.0.1:9502",
    ];
    let mut sensor = topo.start_sensor(&args);
    let hmi = topo.spawn_hmi("3", "20");
    // Requests of the pair, in the files written while the HMI polls.
    let mut seen: Vec<u64> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(400));
        let Ok(bytes) = std::fs::read(&inv) else {
            continue;
        };
        let file: Value = serde_json::from_slice(&bytes).expect("a whole JSON file");
        assert_eq!(file["complete"], false, "written while capturing");
        let running: Value =
            serde_json::from_slice(&std::fs::read(&report).expect("the report, while capturing"))
                .expect("a whole report");
        assert_eq!(running["status"], "running");
        if let Some(n) = file["pairs"][0]["requests"].as_u64() {
            if seen.last().is_none_or(|&last| n > last) {
                seen.push(n);
            }
        }
    }
    // The metrics, as a scraper in the sensor's namespace reads them while
    // traffic flows: frames counted, the live-only XDP figures there.
    let scrape = || {
        let out = topo
            .run_in(
                Host::Sensor,
                "python3",
                &[
                    "-c",
                    "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9502/metrics', timeout=5).read().decode())",
                ],
            )
            .expect("python3 in the sensor's namespace");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let frames: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("modbus_detect_frames_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        (frames, text)
    };
    let (mut frames, mut metrics) = scrape();
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while frames == 0 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
        (frames, metrics) = scrape();
    }
    drop(hmi);
    let done = sensor.stop(STOP).expect("sensor stops on SIGTERM");
    plc.stop(STOP).expect("PLC stops");
    let iface = topo.sensor_iface().to_string();
    topo.teardown().expect("teardown");
    assert!(
        seen.len() >= 2,
        "inventory files during capture: {seen:?}; stderr: {}",
        done.stderr
    );
    assert_eq!(done.status.code(), Some(130), "stderr: {}", done.stderr);
    let last: Value = serde_json::from_slice(&std::fs::read(&inv).unwrap()).unwrap();
    assert_eq!(last["complete"], true);
    let live = modbus_tests::read_report_json(&report);
    assert_eq!(last["pairs"], live["inventory"]["pairs"]);
    assert!(last["pairs"][0]["requests"].as_u64() >= seen.last().copied());
    assert_eq!(live["capture"]["inventory_snapshots_missed"], 0);
    assert!(dir.path().join("inv.devices.csv").exists());
    assert!(dir.path().join("inv.pairs.csv").exists());
    assert_eq!(live["status"], "interrupted");
    // The stats events: Suricata's shape (its schema, our one key added),
    // frames counted as the report counts them, never more.
    let mut schema: Value = serde_json::from_slice(
        &std::fs::read(modbus_tests::fixture("suricata/schema.json")).unwrap(),
    )
    .unwrap();
    schema["properties"]["modbus_detect"] = json!({"type": "object"});
    let validator = jsonschema::validator_for(&schema).unwrap();
    let stats: Vec<Value> = std::fs::read_to_string(&eve)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["event_type"] == "stats")
        .collect();
    assert!(stats.len() >= 2, "{} stats events", stats.len());
    let mut last_pkts = 0;
    for st in &stats {
        let errors: Vec<String> = validator.iter_errors(st).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}: {st}");
        assert_eq!(st["host"], "cell-7");
        assert_eq!(st["in_iface"], iface.as_str());
        let pkts = st["stats"]["decoder"]["pkts"].as_u64().unwrap();
        assert!(pkts >= last_pkts, "counters only grow");
        last_pkts = pkts;
    }
    assert!(last_pkts > 0 && last_pkts <= live["counters"]["frames"].as_u64().unwrap());
    assert!(frames > 0, "metrics while capturing: {metrics}");
    assert!(frames <= live["counters"]["frames"].as_u64().unwrap());
    assert!(
        metrics.contains("modbus_detect_xdp_redirected_total"),
        "{metrics}"
    );
    // How full each shard's rings are, a gauge per shard.
    let shards = live["settings"]["threads"].as_u64().unwrap();
    for shard in 0..shards {
        let gauge = format!("modbus_detect_shard_queue_depth{{shard=\"{shard}\"}} ");
        assert!(metrics.contains(&gauge), "{gauge}: {metrics}");
    }
}

/// The standard logrotate recipe on a live sensor: `logrotate -f` moves the
/// alert stream away while alerts pour in and sends SIGHUP; the sensor
/// goes on, writes its next lines to a new file, and no line is lost or
/// cut: the lines of both files are every line the sensor wrote, and one
/// per alert raised (`--eve-every-event`).
#[test]
fn logrotate_loses_no_alert_line() {
    modbus_tests::require_root("the live tests need root (namespaces, XDP)");
    let topo = Topology::create(&unique_prefix("mbr")).expect("topology");
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("live.json");
    let eve = dir.path().join("eve.json");
    let mut plc = topo.start_plc();
    let args = [
        "--interface",
        topo.sensor_iface(),
        "--output",
        report.to_str().unwrap(),
        "--eve",
        eve.to_str().unwrap(),
        "--eve-every-event",
        // Nobody is an authorized master: every poll is an alert.
        "--authorized-masters",
        "192.0.2.1",
    ];
    let mut sensor = topo.start_sensor(&args);
    let hmi = topo.spawn_hmi("3", "10");
    std::thread::sleep(Duration::from_millis(1200));
    let config = dir.path().join("logrotate.conf");
    std::fs::write(
        &config,
        format!(
            "{} {{\n  rotate 3\n  create 0644 root root\n  postrotate\n    kill -HUP {}\n  endscript\n}}\n",
            eve.display(),
            sensor.pid()
        ),
    )
    .unwrap();
    let state = dir.path().join("logrotate.state");
    let rotated = std::process::Command::new("logrotate")
        .args(["-f", "-s"])
        .arg(&state)
        .arg(&config)
        .output()
        .expect("logrotate runs (cargo xtask setup installs it)");
    assert!(
        rotated.status.success(),
        "logrotate: {}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    std::thread::sleep(Duration::from_millis(1200));
    drop(hmi);
    let done = sensor.stop(STOP).expect("sensor stops on SIGTERM");
    plc.stop(STOP).expect("PLC stops");
    topo.teardown().expect("teardown");
    assert_eq!(done.status.code(), Some(130), "stderr: {}", done.stderr);
    let read = |p: &Path| -> Vec<Value> {
        let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{} ends in a whole line",
            p.display()
        );
        text.lines()
            .map(|l| serde_json::from_str(l).expect("every line is whole JSON"))
            .collect()
    };
    let before = read(&dir.path().join("eve.json.1"));
    let after = read(&eve);
    assert!(!before.is_empty(), "lines before the rotation");
    assert!(!after.is_empty(), "lines after it, in the new file");
    let live = modbus_tests::read_report_json(&report);
    let c = &live["counters"];
    assert_eq!(
        (before.len() + after.len()) as u64,
        c["eve_lines_written"].as_u64().unwrap(),
        "every line written is in one of the files"
    );
    let events: u64 = before
        .iter()
        .chain(&after)
        .filter(|l| l["event_type"] == "alert")
        .map(|l| l["modbus_detect"]["events"].as_u64().unwrap())
        .sum();
    assert_eq!(
        events,
        c["alerts_total"].as_u64().unwrap(),
        "a line per alert"
    );
    assert!(c["alerts_by_type"]["ROGUE_MODBUS_MASTER"].as_u64() > Some(50));
}
