//! Faults and privileges of the live sensor, in the network-namespace
//! topology of `live_e2e` (PLC, HMI and attacker on a switch, the PLC's
//! port mirrored to the sensor's `span0`): a signal during capture, the
//! capture interface going down or disappearing, shards that cannot keep
//! up, outputs that cannot be written or fill the disk, and the
//! capabilities the sensor holds once capturing.
//!
//! Root only (namespaces, XDP, mounts). CI runs as root; these fail, not
//! skip, without it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use modbus_tests::netns::{unique_prefix, Host, NsProcess, Topology, START, STOP};
use modbus_tests::{eventually, holds};
use serde_json::Value;

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{v} is not an unsigned integer"))
}

/// Every line of an EVE file is a JSON object and the file ends with a
/// newline; returns the lines.
fn eve_lines(p: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(p).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{}: ends mid-line",
        p.display()
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("EVE line {l:?}: {e}")))
        .collect()
}

/// The rogue attack: 10 reads from 10.77.0.66, a master nobody authorized.
fn rogue_attack(topo: &Topology) {
    topo.lab(
        Host::Attacker,
        &["attack", "--target", &topo.plc_addr(), "--kind", "rogue"],
    );
}

/// Start the sensor on span0 with `extra` flags and wait until it captures.
fn start_sensor(topo: &Topology, report: &Path, extra: &[&str]) -> NsProcess {
    start_sensor_env(topo, report, extra, &[])
}

fn start_sensor_env(
    topo: &Topology,
    report: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> NsProcess {
    let mut args: Vec<String> = vec![
        "--interface".into(),
        topo.sensor_iface().into(),
        "--output".into(),
        report.display().to_string(),
        "--authorized-masters".into(),
        topo.hmi_ip().to_string(),
        "--stats-interval".into(),
        "0.5".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    topo.start_sensor_with_env(env, &args)
}

fn sigint(p: &NsProcess) {
    // SAFETY: kill(2) on the PID of our own child.
    let r = unsafe { libc::kill(p.pid() as i32, libc::SIGINT) };
    assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
}

/// SIGINT during live capture: the report and the EVE stream are complete
/// valid JSON and say the run was interrupted; the XDP program is detached;
/// the interface is an ordinary one again (the kernel sees the Modbus
/// frames XDP took from it while the sensor ran); and a new sensor can
/// attach and bind queue 0 at once, which the kernel refuses (EBUSY) while
/// another AF_XDP socket is still bound there: the old one is closed.
/// (This kernel has no XDP socket diagnostics for `ss --xdp` to list them.)
#[test]
fn sigint_during_live_capture_leaves_complete_outputs_and_a_clean_interface() {
    modbus_tests::require_root("these tests need root (namespaces, XDP, mounts)");
    let topo = Topology::create(&unique_prefix("mfs")).expect("topology");
    let _plc = topo.start_plc();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("live.json");
    let eve = dir.path().join("eve.json");
    let mut sensor = start_sensor(&topo, &report, &["--eve", eve.to_str().unwrap()]);
    assert!(topo.xdp_attached());
    rogue_attack(&topo);
    // The HMI keeps polling while the signal comes.
    let mut hmi = topo.spawn_hmi("4", "10");
    std::thread::sleep(Duration::from_millis(500));
    sigint(&sensor);
    let done = sensor.wait(STOP).expect("the sensor stops on SIGINT");
    assert_eq!(done.status.code(), Some(130), "stderr: {}", done.stderr);
    // Outputs: complete, valid, interrupted.
    let r = modbus_tests::read_report_json(&report);
    assert_eq!(r["status"], "interrupted");
    assert_eq!(
        u(&r["counters"]["alerts_by_type"]["ROGUE_MODBUS_MASTER"]),
        10
    );
    let lines = eve_lines(&eve);
    assert!(!lines.is_empty());
    // Alert lines (and, had the run lasted a stats interval, stats events).
    assert!(lines
        .iter()
        .all(|l| l["event_type"] == "stats" || l["alert"]["signature"].as_str().is_some()));
    // The interface is clean.
    assert!(!topo.xdp_attached(), "XDP program detached");
    // ... and the kernel gets the Modbus frames again: tcpdump on span0
    // sees the HMI's polls (while XDP was attached, it saw none).
    let seen = topo
        .run_in(
            Host::Sensor,
            "timeout",
            &[
                "5",
                "tcpdump",
                "-i",
                topo.sensor_iface(),
                "-c",
                "10",
                "-n",
                "tcp port 502",
            ],
        )
        .expect("tcpdump on span0 sees Modbus frames after the sensor left");
    assert!(
        String::from_utf8_lossy(&seen.stderr).contains("10 packets captured"),
        "{}",
        String::from_utf8_lossy(&seen.stderr)
    );
    hmi.wait(STOP).expect("HMI done");
    // A fresh sensor attaches and binds again.
    let again = dir.path().join("again.json");
    let mut second = start_sensor(&topo, &again, &[]);
    assert!(topo.xdp_attached());
    let done = second.stop(STOP).expect("stops on SIGTERM");
    assert_eq!(done.status.code(), Some(130), "stderr: {}", done.stderr);
    assert_eq!(
        modbus_tests::read_report_json(&again)["status"],
        "interrupted"
    );
    assert!(!topo.xdp_attached());
    topo.teardown().expect("teardown");
}

/// Wait until `span0` reports `state` ("UP"/"DOWN"/"LOWERLAYERDOWN").
fn wait_link(topo: &Topology, state: &str) {
    eventually(Duration::from_secs(10), Duration::from_millis(20), || {
        let out = topo
            .run_in(
                Host::Sensor,
                "ip",
                &["-br", "link", "show", "dev", topo.sensor_iface()],
            )
            .expect("ip link show");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        holds(text.split_whitespace().nth(1) == Some(state), || {
            format!("span0 not {state}: {text}")
        })
    })
}

/// The capture interface goes down mid-capture: the sensor says so, waits
/// (no error, no busy loop, no exit), and captures again once it is back
/// up; the outage is in the report.
#[test]
fn interface_down_mid_capture_is_waited_out() {
    modbus_tests::require_root("these tests need root (namespaces, XDP, mounts)");
    let topo = Topology::create(&unique_prefix("mfd")).expect("topology");
    let _plc = topo.start_plc();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("live.json");
    let mut sensor = start_sensor(&topo, &report, &[]);
    rogue_attack(&topo);
    let iface = topo.sensor_iface();
    topo.run_in(Host::Sensor, "ip", &["link", "set", iface, "down"])
        .expect("link down");
    sensor
        .wait_for_line("link down", Duration::from_secs(5))
        .expect("the sensor reports the link down");
    // Traffic while it is down is not seen; the sensor keeps running.
    rogue_attack(&topo);
    std::thread::sleep(Duration::from_millis(700));
    topo.run_in(Host::Sensor, "ip", &["link", "set", iface, "up"])
        .expect("link up");
    wait_link(&topo, "UP");
    sensor
        .wait_for_line("link up again", Duration::from_secs(5))
        .expect("the sensor reports the link back");
    rogue_attack(&topo);
    std::thread::sleep(Duration::from_millis(300));
    let done = sensor.stop(STOP).expect("stops on SIGTERM");
    assert_eq!(done.status.code(), Some(130), "stderr: {}", done.stderr);
    let r = modbus_tests::read_report_json(&report);
    assert_eq!(r["status"], "interrupted");
    assert_eq!(r["error"], Value::Null);
    let cap = &r["capture"];
    assert_eq!(u(&cap["link_down_events"]), 1, "{cap}");
    assert!(cap["link_down_seconds"].as_f64().unwrap() >= 0.5, "{cap}");
    // Before and after the outage, not during it.
    assert_eq!(
        u(&r["counters"]["alerts_by_type"]["ROGUE_MODBUS_MASTER"]),
        20,
        "{}",
        r["counters"]
    );
    assert!(!topo.xdp_attached());
    topo.teardown().expect("teardown");
}

/// The capture interface disappears mid-capture: a clear one-line error
/// naming it, exit code 3, within a second or so (no hang), and the report
/// is written with what was found before, status `input_error`.
#[test]
fn interface_deleted_mid_capture_is_a_clear_error_with_a_report() {
    modbus_tests::require_root("these tests need root (namespaces, XDP, mounts)");
    let topo = Topology::create(&unique_prefix("mfx")).expect("topology");
    let _plc = topo.start_plc();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("live.json");
    let eve = dir.path().join("eve.json");
    let mut sensor = start_sensor(&topo, &report, &["--eve", eve.to_str().unwrap()]);
    rogue_attack(&topo);
    std::thread::sleep(Duration::from_millis(200));
    let iface = topo.sensor_iface();
    let t = Instant::now();
    topo.run_in(Host::Sensor, "ip", &["link", "del", iface])
        .expect("delete span0");
    let done = sensor
        .wait(Duration::from_secs(10))
        .expect("the sensor exits by itself");
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(done.status.code(), Some(3), "stderr: {}", done.stderr);
    let err: Vec<&str> = done
        .stderr
        .lines()
        .filter(|l| l.starts_with("modbus-detect: error:"))
        .collect();
    assert_eq!(err.len(), 1, "{}", done.stderr);
    assert!(
        err[0].starts_with("modbus-detect: error: span0: the interface disappeared"),
        "{}",
        done.stderr
    );
    assert!(!done.stderr.contains("panicked"), "{}", done.stderr);
    let r = modbus_tests::read_report_json(&report);
    assert_eq!(r["status"], "input_error");
    assert!(r["error"].as_str().unwrap().contains("disappeared"));
    assert_eq!(
        u(&r["counters"]["alerts_by_type"]["ROGUE_MODBUS_MASTER"]),
        10
    );
    assert_eq!(eve_lines(&eve).len(), 1, "one line for the rogue master");
    // The veth pair went with span0: the switch's end of it is gone too,
    // which the teardown reports; everything else is torn down.
    let e = topo
        .teardown()
        .expect_err("the span port is gone")
        .to_string();
    assert!(
        e.contains("link del span") && !e.contains("netns del"),
        "{e}"
    );
}

/// A capture the tests inject: bulk polling of many slaves (so that both
/// shards get frames).
fn bulk_capture(path: &Path, frames: u64) -> u64 {
    let cfg = modbus_synth::SynthConfig {
        frames,
        seed: 11,
        ..modbus_synth::SynthConfig::default()
    };
    let f = std::fs::File::create(path).unwrap();
    modbus_synth::generate(&cfg, std::io::BufWriter::new(f))
        .unwrap()
        .frames
}

/// Shards that cannot keep up (the test hook makes each sleep 20 ms per
/// batch) while 100,000 frames are injected as fast as possible: the frames
/// their full rings refused are counted per RX queue and per shard, in the
/// report and on the stats line, and every frame read is accounted for.
#[test]
fn shard_overload_drops_are_counted_per_queue_and_per_shard() {
    modbus_tests::require_root("these tests need root (namespaces, XDP, mounts)");
    let topo = Topology::create(&unique_prefix("mfo")).expect("topology");
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("bulk.pcap");
    let frames = bulk_capture(&pcap, 100_000);
    let report = dir.path().join("live.json");
    let mut sensor = start_sensor_env(
        &topo,
        &report,
        &["--threads", "2"],
        &[(modbus_detect::runtime::SHARD_DELAY_ENV, "20000")],
    );
    topo.inject(&pcap, &[]);
    // Wait for the stats line that shows the drops.
    sensor
        .wait_for_line("by shard", Duration::from_secs(10))
        .expect("the stats line shows ring-full drops per shard");
    let done = sensor.stop(STOP).expect("stops on SIGTERM");
    assert_eq!(done.status.code(), Some(130), "stderr: {}", done.stderr);
    let r = modbus_tests::read_report_json(&report);
    let c = &r["counters"];
    let cap = &r["capture"];
    let queues = cap["queues"].as_array().unwrap();
    let queue_drops: u64 = queues.iter().map(|q| u(&q["shard_ring_full_drops"])).sum();
    assert!(queue_drops > 0, "{cap}");
    for q in queues {
        let by_shard: u64 = q["shard_ring_full_drops_by_shard"]
            .as_array()
            .unwrap()
            .iter()
            .map(u)
            .sum();
        assert_eq!(by_shard, u(&q["shard_ring_full_drops"]), "{q}");
    }
    let shards = cap["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2);
    let shard_drops: u64 = shards.iter().map(|s| u(&s["ring_full_drops"])).sum();
    assert_eq!(shard_drops, queue_drops);
    eprintln!(
        "overload: {frames} frames injected, {} read, {} to shards, {queue_drops} dropped at full shard rings ({})",
        c["frames"],
        c["modbus_frames"],
        cap["shards"]
    );
    // Every frame read went to a shard, was skipped, or was dropped.
    let skipped: u64 = c["skipped"].as_object().unwrap().values().map(u).sum();
    assert_eq!(
        u(&c["frames"]),
        u(&c["modbus_frames"]) + skipped + queue_drops,
        "{c}"
    );
    // Every frame XDP redirected was read or counted by the socket.
    let socket_drops: u64 = queues
        .iter()
        .map(|q| u(&q["rx_dropped"]) + u(&q["rx_ring_full"]))
        .sum();
    let redirected = u(&cap["xdp"]["redirected"]);
    assert!(
        redirected <= u(&c["frames"]) + socket_drops && u(&c["frames"]) <= redirected,
        "{cap} {c}"
    );
    assert!(redirected <= frames);
    topo.teardown().expect("teardown");
}

/// Capability bits of every thread of `pid`: (CapInh, CapPrm, CapEff,
/// CapBnd, CapAmb, NoNewPrivs) per thread.
fn thread_caps(pid: u32) -> Vec<(String, [u64; 5], u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("{k} in {}", task.display()))
        };
        let hex = |k: &str| u64::from_str_radix(&field(k), 16).unwrap();
        out.push((
            field("Name:"),
            [
                hex("CapInh:"),
                hex("CapPrm:"),
                hex("CapEff:"),
                hex("CapBnd:"),
                hex("CapAmb:"),
            ],
            field("NoNewPrivs:").parse().unwrap(),
        ));
    }
    out
}

/// Started as root, the sensor holds no capability at all once it
/// captures: every thread (main, RX, shards, EVE writer) has empty
/// inheritable, permitted, effective, bounding and ambient sets and
/// no-new-privs set; the report says the same.
#[test]
fn sensor_holds_no_capability_after_setup() {
    modbus_tests::require_root("these tests need root (namespaces, XDP, mounts)");
    let topo = Topology::create(&unique_prefix("mfc")).expect("topology");
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("live.json");
    let eve = dir.path().join("eve.json");
    let mut sensor = start_sensor(
        &topo,
        &report,
        &["--threads", "2", "--eve", eve.to_str().unwrap()],
    );
    let threads = thread_caps(sensor.pid());
    eprintln!("capabilities after setup (inh, prm, eff, bnd, amb), no-new-privs: {threads:?}");
    assert!(threads.len() >= 4, "main, RX, 2 shards, EVE: {threads:?}");
    for (name, sets, nnp) in &threads {
        assert_eq!(sets, &[0; 5], "thread {name}: {threads:?}");
        assert_eq!(*nnp, 1, "thread {name}: no-new-privs");
    }
    let done = sensor.stop(STOP).expect("stops");
    assert_eq!(done.status.code(), Some(130), "stderr: {}", done.stderr);
    let p = &modbus_tests::read_report_json(&report)["capture"]["privileges"];
    assert_eq!(p["effective"], "0000000000000000", "{p}");
    assert_eq!(p["permitted"], "0000000000000000", "{p}");
    assert_eq!(p["kept"], serde_json::json!([]), "{p}");
    assert_eq!(p["bounding_set_cleared"], true, "{p}");
    topo.teardown().expect("teardown");
}

/// The minimal set is enough: as an unprivileged user (nobody) with only
/// CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF and CAP_PERFMON (ambient, as the
/// systemd unit gives them), the sensor attaches, captures, detects, and
/// drops those four once set up. Without CAP_PERFMON the verifier refuses
/// the program; without CAP_NET_RAW there is no AF_XDP socket.
#[test]
fn minimal_capabilities_suffice_and_are_dropped() {
    modbus_tests::require_root("these tests need root (namespaces, XDP, mounts)");
    let topo = Topology::create(&unique_prefix("mfm")).expect("topology");
    let _plc = topo.start_plc();
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // nobody must be able to write there ...
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    std::os::unix::fs::chown(&out_dir, Some(65534), Some(65534)).unwrap();
    // ... and to run the binary, wherever the checkout is.
    let bin = dir.path().join("modbus-detect");
    std::fs::copy(modbus_tests::detector_binary(), &bin).unwrap();
    let sensor_as = |caps: &str, report: &Path| -> Vec<String> {
        [
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &format!("--inh-caps=-all,{caps}"),
            &format!("--ambient-caps=-all,{caps}"),
            &format!("--bounding-set=-all,{caps}"),
            bin.to_str().unwrap(),
            "--interface",
            topo.sensor_iface(),
            "--output",
            report.to_str().unwrap(),
            "--authorized-masters",
            &topo.hmi_ip().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let minimal = "+net_admin,+net_raw,+bpf,+perfmon";
    let report = out_dir.join("live.json");
    let args = sensor_as(minimal, &report);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut sensor = topo
        .spawn_in(Host::Sensor, "setpriv", &argv)
        .expect("sensor as nobody");
    sensor
        .wait_for_line("capturing on", START)
        .expect("sensor up with the minimal capabilities");
    for (name, sets, _) in thread_caps(sensor.pid()) {
        assert_eq!(sets[..3], [0, 0, 0], "thread {name}: inh, prm, eff");
        assert_eq!(sets[4], 0, "thread {name}: ambient");
    }
    rogue_attack(&topo);
    std::thread::sleep(Duration::from_millis(200));
    let done = sensor.stop(STOP).expect("stops");
    assert_eq!(done.status.code(), Some(130), "stderr: {}", done.stderr);
    let r = modbus_tests::read_report_json(&report);
    assert_eq!(
        u(&r["counters"]["alerts_by_type"]["ROGUE_MODBUS_MASTER"]),
        10
    );
    assert!(!topo.xdp_attached());
    // One fewer is not enough.
    for (caps, needle) in [
        ("+net_admin,+net_raw,+bpf", "loading the XDP program"),
        ("+net_admin,+bpf,+perfmon", "queue 0"),
        ("+net_raw,+bpf,+perfmon", "loading the XDP program"),
    ] {
        let report = out_dir.join("refused.json");
        let mut args = sensor_as(caps, &report);
        args.extend(["--duration".into(), "1".into()]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = topo
            .run_in(Host::Sensor, "setpriv", &argv)
            .expect_err(caps)
            .to_string();
        assert!(err.contains(needle), "{caps}: {err}");
        assert!(!topo.xdp_attached(), "{caps}: nothing left attached");
    }
    topo.teardown().expect("teardown");
}

/// Run `modbus-detect ARGS` with `{fs}` in them standing for a 64 KiB
/// tmpfs mounted in a private mount namespace (`unshare -m`: nothing
/// outside sees it). What the tmpfs holds afterwards is copied to
/// `<returned dir>/fs`; returns (exit code, stderr, that dir).
fn run_on_tiny_fs(args: &[&str], before: &[(&str, &[u8])]) -> (Option<i32>, String, PathBuf) {
    let dir = tempfile::tempdir().unwrap().keep();
    let mnt = dir.join("mnt");
    let copy = dir.join("fs");
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::create_dir_all(&copy).unwrap();
    let seed = dir.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    for (name, bytes) in before {
        std::fs::write(seed.join(name), bytes).unwrap();
    }
    let script = r#"set -e
mnt="$1"; seed="$2"; copy="$3"; shift 3
mount -t tmpfs -o size=64k tmpfs "$mnt"
cp -a "$seed/." "$mnt/"
set +e
"$@"
code=$?
cp -a "$mnt/." "$copy/"
exit $code
"#;
    let bin = modbus_tests::detector_binary();
    let mnt_s = mnt.display().to_string();
    let args: Vec<String> = args.iter().map(|a| a.replace("{fs}", &mnt_s)).collect();
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&mnt)
        .arg(&seed)
        .arg(&copy)
        .arg(&bin)
        .args(&args)
        .output()
        .expect("unshare");
    // Nothing was mounted here.
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        dir,
    )
}

/// A capture whose report is large: 400 rogue masters, one alert entry each.
fn many_alerts_capture(path: &Path) {
    use modbus_synth::{adu, read_request, Conversation, PcapWriter};
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    let plc = std::net::Ipv4Addr::new(10, 0, 0, 10);
    for i in 0..400u32 {
        let t = 1_700_000_000_000_000_000 + u64::from(i) * 10_000_000;
        let mut c = Conversation::new(std::net::Ipv4Addr::from(0x0a63_0000 + i), 40000, plc);
        c.handshake(&mut w, t).unwrap();
        c.send(
            &mut w,
            t + 1_000_000,
            true,
            &adu(1, 1, &read_request(3, 0, 1)),
        )
        .unwrap();
    }
    w.into_inner().unwrap().flush().unwrap();
}

/// The disk fills up while the report is written: exit code 4 and a clear
/// error, and the destination keeps its previous report, whole (the report
/// is written to a temporary file, synced, then renamed); no temporary file
/// is left behind.
#[test]
fn full_disk_for_the_report_leaves_the_previous_one_whole() {
    modbus_tests::require_root("these tests need root (namespaces, XDP, mounts)");
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("many.pcap");
    many_alerts_capture(&pcap);
    let old = br#"{"status": "complete", "note": "the previous run"}"#;
    let (code, stderr, out) = run_on_tiny_fs(
        &[
            "--pcap",
            pcap.to_str().unwrap(),
            "--authorized-masters",
            "10.0.0.20",
            "--output",
            "{fs}/report.json",
            "--quiet",
        ],
        &[("report.json", old)],
    );
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains("report.json: cannot write report") && stderr.contains("No space left"),
        "{stderr}"
    );
    let names: Vec<String> = std::fs::read_dir(out.join("fs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["report.json"], "no temporary file left");
    assert_eq!(std::fs::read(out.join("fs/report.json")).unwrap(), old);
    std::fs::remove_dir_all(out).unwrap();
}

/// The disk fills up under the EVE stream: the run goes on, the report
/// (elsewhere) is written with every alert, the exit code is 4 with a clear
/// error, and the stream holds whole lines only, each valid JSON.
#[test]
fn full_disk_for_the_eve_stream_leaves_whole_lines() {
    modbus_tests::require_root("these tests need root (namespaces, XDP, mounts)");
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("many.pcap");
    many_alerts_capture(&pcap);
    let report = dir.path().join("report.json");
    let (code, stderr, out) = run_on_tiny_fs(
        &[
            "--pcap",
            pcap.to_str().unwrap(),
            "--authorized-masters",
            "10.0.0.20",
            "--output",
            report.to_str().unwrap(),
            "--eve",
            "{fs}/eve.json",
            "--quiet",
        ],
        &[],
    );
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains("EVE stream") && stderr.contains("No space left"),
        "{stderr}"
    );
    let r = modbus_tests::read_report_json(&report);
    assert_eq!(r["status"], "complete");
    assert_eq!(
        u(&r["counters"]["alerts_by_type"]["ROGUE_MODBUS_MASTER"]),
        400
    );
    let lines = eve_lines(&out.join("fs/eve.json"));
    assert!(
        !lines.is_empty() && lines.len() < 400,
        "{} lines",
        lines.len()
    );
    std::fs::remove_dir_all(out).unwrap();
}

/// Outputs that cannot be written are refused before anything is read:
/// an EVE path in a missing directory, a report path that is a directory,
/// a baseline to learn into an unwritable place. Exit code 4, one line, and
/// (live) before the interface is even looked at.
#[test]
fn unwritable_outputs_are_refused_before_capture() {
    let bin = modbus_tests::detector_binary();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let run = |args: &[&str]| {
        let out = Command::new(&bin).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    };
    let missing = dir.path().join("no-such-dir/eve.json");
    // The capture does not even exist: the outputs are checked first.
    let (code, err) = run(&[
        "--pcap",
        "/nonexistent.pcap",
        "--output",
        report.to_str().unwrap(),
        "--eve",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("no-such-dir/eve.json: cannot write"), "{err}");
    assert_eq!(err.lines().count(), 1);
    // Live: refused before the interface is looked up.
    let (code, err) = run(&[
        "--interface",
        "mbd-nope0",
        "--output",
        report.to_str().unwrap(),
        "--eve",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(4), "{err}");
    // A directory where the report should go.
    let (code, err) = run(&[
        "--pcap",
        "/nonexistent.pcap",
        "--output",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("is a directory"), "{err}");
    // A baseline to learn into a missing directory.
    let (code, err) = run(&[
        "--pcap",
        "/nonexistent.pcap",
        "--output",
        report.to_str().unwrap(),
        "--baseline-mode",
        "--baseline-file",
        missing.with_file_name("b.json").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(4), "{err}");
    assert!(!report.exists());
}
