//! End-to-end checks of the namespace topology the live sensor is tested on:
//! real tokio-modbus masters and a slave talk across the switch, and the
//! SPAN port must deliver every request and every response to the sensor,
//! exactly as many as the programs say they sent and received.
//!
//! These need root (network namespaces, veths, tc). CI runs as root; without
//! it they fail, on purpose, rather than skip: a skipped test would hide a
//! capture path that was never exercised.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use modbus_tests::netns::{
    cleanup_stale, list_namespaces, unique_prefix, Host, NsProcess, Topology,
};
use serde_json::Value;

const START: Duration = Duration::from_secs(10);
const STOP: Duration = Duration::from_secs(5);

/// Namespaces whose names start with `prefix`.
fn namespaces_of(prefix: &str) -> Vec<String> {
    list_namespaces()
        .expect("ip netns list")
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// tcpdump on the sensor's interface, writing `pcap`. Immediate mode: with
/// TPACKET_V3 the kernel hands frames over per block or per timeout, and the
/// frames of a block still pending when tcpdump is stopped are lost.
fn start_capture(topo: &Topology, pcap: &Path) -> NsProcess {
    let pcap = pcap.to_str().expect("UTF-8 temp path");
    let args = [
        "-i",
        topo.sensor_iface(),
        "-w",
        pcap,
        "-U",
        "--immediate-mode",
        "-n",
        "-Z",
        "root",
    ];
    let mut dump = topo
        .spawn_in(Host::Sensor, "tcpdump", &args)
        .expect("start tcpdump");
    dump.wait_for_line("listening on", START)
        .expect("tcpdump up");
    dump
}

/// Stop tcpdump after the last mirrored frames are in, and check it lost
/// nothing on its side.
fn stop_capture(mut dump: NsProcess) {
    std::thread::sleep(Duration::from_millis(200));
    let done = dump.stop(STOP).expect("tcpdump stops");
    assert!(done.status.success(), "tcpdump: {}", done.stderr);
    assert!(
        done.stderr
            .lines()
            .any(|l| l.trim() == "0 packets dropped by kernel"),
        "tcpdump dropped frames: {}",
        done.stderr
    );
}

/// The one JSON line a modbus-lab run prints.
fn summary(stdout: &str) -> Value {
    let line = stdout.lines().last().expect("a summary line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("summary {line:?}: {e}"))
}

/// Per function code, as the summaries write them ({"3": 20, ...}).
fn per_fc(v: &Value) -> BTreeMap<u8, u64> {
    v.as_object()
        .expect("a per-function-code map")
        .iter()
        .map(|(k, n)| (k.parse().expect("fc"), n.as_u64().expect("count")))
        .collect()
}

/// One Modbus/TCP ADU in a capture, as tshark decodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Adu {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    request: bool,
    trans_id: u16,
    fc: u8,
    exception: bool,
}

/// Every ADU of `pcap` (several per frame where TCP carried several), and
/// how many frames Wireshark calls malformed.
fn tshark_adus(pcap: &Path) -> (Vec<Adu>, usize) {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-d", "tcp.port==502,mbtcp", "-Y", "mbtcp", "-T", "fields"])
        .args(["-e", "ip.src", "-e", "ip.dst", "-e", "tcp.dstport"])
        .args(["-e", "mbtcp.trans_id", "-e", "modbus.func_code"])
        .args(["-e", "modbus.exception_code", "-e", "_ws.malformed"])
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut adus = Vec::new();
    let mut malformed = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        assert!(f.len() >= 6, "tshark line {line:?}");
        if f.get(6).is_some_and(|m| !m.is_empty()) {
            malformed += 1;
        }
        let request = f[2] == "502";
        let ids: Vec<&str> = f[3].split(',').collect();
        let fcs: Vec<&str> = f[4].split(',').collect();
        assert_eq!(ids.len(), fcs.len(), "tshark line {line:?}");
        // tshark lists exception codes only for the ADUs that have one;
        // frames here carry one ADU each (checked below), so this is exact.
        let exception = !f[5].is_empty();
        for (id, fc) in ids.iter().zip(&fcs) {
            adus.push(Adu {
                src: f[0].parse().expect("ip.src"),
                dst: f[1].parse().expect("ip.dst"),
                request,
                trans_id: id.parse().expect("trans_id"),
                fc: fc.parse().expect("func_code"),
                exception,
            });
        }
        assert!(
            ids.len() == 1 || !exception,
            "an exception in a multi-ADU frame: {line:?}"
        );
    }
    (adus, malformed)
}

fn count(adus: &[Adu], keep: impl Fn(&Adu) -> bool) -> BTreeMap<u8, u64> {
    let mut m = BTreeMap::new();
    for a in adus.iter().filter(|a| keep(a)) {
        *m.entry(a.fc).or_default() += 1;
    }
    m
}

/// The HMI polls the PLC for a second; the sensor's capture holds exactly
/// the requests the HMI sent and the responses it got, matched by
/// transaction id, and exactly what the PLC says it served.
#[test]
fn mirror_delivers_every_request_and_response() {
    modbus_tests::require_root("the netns tests need root (namespaces, veths, tc)");
    let t0 = Instant::now();
    let topo = Topology::create(&unique_prefix("mb")).expect("create the topology");
    let created = t0.elapsed();
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("span.pcap");
    let mut plc = topo.start_plc();
    let dump = start_capture(&topo, &pcap);

    let target = format!("{}:502", topo.plc_ip());
    let hmi_args = [
        "hmi",
        "--target",
        &target,
        "--duration",
        "1",
        "--interval-ms",
        "50",
        "--write-every",
        "5",
    ];
    let done = topo
        .spawn_lab(Host::Hmi, &hmi_args)
        .wait(Duration::from_secs(15))
        .expect("the HMI finishes");
    assert!(done.status.success(), "hmi: {}", done.stderr);
    let hmi = summary(&done.stdout);
    stop_capture(dump);
    let served = plc.stop(STOP).expect("PLC stops");
    assert!(served.status.success(), "plc: {}", served.stderr);
    let served = summary(&served.stdout);

    let sent = per_fc(&hmi["requests"]);
    let answered = per_fc(&hmi["responses"]);
    let polls = hmi["polls"].as_u64().expect("polls");
    // About 20 in 1 s at 50 ms; fewer on a loaded machine, and the counts
    // below are exact whatever the number.
    assert!(polls >= 10, "polls: {hmi}");
    assert_eq!(
        sent,
        BTreeMap::from([(1, polls), (3, polls), (6, polls / 5)]),
        "{hmi}"
    );
    assert_eq!(answered, sent, "every request answered: {hmi}");
    assert_eq!(per_fc(&served["requests"]), sent, "the PLC served them all");

    let (adus, malformed) = tshark_adus(&pcap);
    assert_eq!(malformed, 0, "malformed frames in the capture");
    let requests = count(&adus, |a| a.request);
    let responses = count(&adus, |a| !a.request);
    assert_eq!(requests, sent, "requests on the wire vs. sent");
    assert_eq!(responses, answered, "responses on the wire vs. received");
    assert!(adus.iter().all(|a| !a.exception));
    for a in &adus {
        let (master, slave) = if a.request {
            (a.src, a.dst)
        } else {
            (a.dst, a.src)
        };
        assert_eq!((master, slave), (topo.hmi_ip(), topo.plc_ip()), "{a:?}");
    }
    // Each transaction id once each way: no frame lost, none doubled.
    let ids = |req: bool| {
        let mut v: Vec<u16> = adus
            .iter()
            .filter(|a| a.request == req)
            .map(|a| a.trans_id)
            .collect();
        v.sort_unstable();
        v
    };
    let total = usize::try_from(hmi["requests_total"].as_u64().expect("total")).expect("usize");
    let expected: Vec<u16> = (0..total).map(|i| i as u16).collect();
    assert_eq!(ids(true), expected);
    assert_eq!(ids(false), expected);

    let before = t0.elapsed();
    topo.teardown().expect("teardown");
    eprintln!(
        "topology created in {created:?}, test body {before:?}, torn down in {:?}",
        t0.elapsed() - before
    );
}

/// Every attack kind from the attacker's namespace, the flood included (the
/// fastest traffic the lab makes): the capture matches each summary, function
/// code by function code, exceptions included, and Wireshark finds every
/// frame of tokio-modbus well formed.
#[test]
fn attacks_reach_the_sensor_exactly() {
    modbus_tests::require_root("the netns tests need root (namespaces, veths, tc)");
    let topo = Topology::create(&unique_prefix("mb")).expect("create the topology");
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("span.pcap");
    let mut plc = topo.start_plc();
    let dump = start_capture(&topo, &pcap);
    let target = format!("{}:502", topo.plc_ip());

    let mut sent: BTreeMap<u8, u64> = BTreeMap::new();
    let mut answered: BTreeMap<u8, u64> = BTreeMap::new();
    let mut refused: BTreeMap<u8, u64> = BTreeMap::new();
    let kinds = [
        ("rogue", BTreeMap::from([(3, 10)]), 0),
        ("write", BTreeMap::from([(6, 3), (16, 3)]), 0),
        ("enumerate", BTreeMap::from([(8, 1), (17, 1), (43, 1)]), 0),
        ("flood", BTreeMap::from([(3, 200)]), 0),
        ("exceptions", BTreeMap::from([(3, 12)]), 12),
        ("oor", BTreeMap::from([(6, 3)]), 0),
    ];
    for (kind, expect, exceptions) in kinds {
        let args = ["attack", "--target", &target, "--kind", kind];
        let done = topo
            .spawn_lab(Host::Attacker, &args)
            .wait(Duration::from_secs(15))
            .expect("the attack finishes");
        assert!(done.status.success(), "attack {kind}: {}", done.stderr);
        let s = summary(&done.stdout);
        assert_eq!(per_fc(&s["requests"]), expect, "{s}");
        assert_eq!(per_fc(&s["responses"]), expect, "{s}");
        assert_eq!(s["exceptions_total"], exceptions, "{s}");
        for (m, key) in [
            (&mut sent, "requests"),
            (&mut answered, "responses"),
            (&mut refused, "exceptions"),
        ] {
            for (fc, n) in per_fc(&s[key]) {
                *m.entry(fc).or_default() += n;
            }
        }
    }

    // No listener on 503: one line, exit 1, nothing on stdout.
    let wrong = format!("{}:503", topo.plc_ip());
    let done = topo
        .spawn_lab(
            Host::Attacker,
            &["attack", "--target", &wrong, "--kind", "rogue"],
        )
        .wait(Duration::from_secs(10))
        .expect("finishes");
    assert_eq!(done.status.code(), Some(1));
    assert_eq!(
        done.stderr,
        format!("modbus-lab: cannot connect to {wrong}: Connection refused\n")
    );
    assert_eq!(done.stdout, "");

    stop_capture(dump);
    let served = summary(&plc.stop(STOP).expect("PLC stops").stdout);
    assert_eq!(per_fc(&served["requests"]), sent);
    assert_eq!(per_fc(&served["exceptions"]), refused);

    let (adus, malformed) = tshark_adus(&pcap);
    assert_eq!(malformed, 0, "malformed frames in the capture");
    assert_eq!(count(&adus, |a| a.request), sent);
    assert_eq!(count(&adus, |a| !a.request), answered);
    assert_eq!(count(&adus, |a| a.exception), refused);
    assert!(adus
        .iter()
        .all(|a| [a.src, a.dst].contains(&topo.attacker_ip())));
}

/// A test that panics half-way still leaves nothing behind: the topology's
/// drop guard runs while unwinding, kills what runs in its namespaces (here a
/// PLC whose handle was leaked, so only the topology can stop it) and
/// deletes the namespaces.
#[test]
fn teardown_runs_even_after_a_panic() {
    modbus_tests::require_root("the netns tests need root (namespaces, veths, tc)");
    let prefix = unique_prefix("mb");
    let mut plc_pid = None;
    let res = catch_unwind(AssertUnwindSafe(|| {
        let topo = Topology::create(&prefix).expect("create the topology");
        assert_eq!(namespaces_of(&prefix).len(), 5, "plc, hmi, atk, sensor, sw");
        let plc = topo.start_plc();
        plc_pid = Some(plc.pid());
        std::mem::forget(plc);
        panic!("a test failing half-way");
    }));
    assert!(res.is_err());
    assert_eq!(namespaces_of(&prefix), Vec::<String>::new());
    let pid = plc_pid.expect("the PLC had started");
    // Dead: gone, or a zombie of this process waiting to be reaped.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "the PLC still runs: {stat}"
    );
    let pid = i32::try_from(pid).expect("pid");
    // SAFETY: reaps our own child; the status pointer may be null.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
}

/// A topology that cannot be built says which command failed, and its
/// cleanup touches nothing it did not create: here the other run's
/// namespaces, whose names it wanted.
#[test]
fn failed_create_names_the_command_and_spares_others() {
    modbus_tests::require_root("the netns tests need root (namespaces, veths, tc)");
    let prefix = unique_prefix("mb");
    let first = Topology::create(&prefix).expect("create the topology");
    let err = Topology::create(&prefix).expect_err("the names are taken");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("`ip netns add {prefix}-sw` failed")),
        "{msg}"
    );
    assert_eq!(namespaces_of(&prefix).len(), 5, "the first run is intact");
    assert!(Topology::create("no spaces allowed").is_err());
    first.teardown().expect("teardown");
}

/// Namespaces of a run that was killed (its PID is gone) are removed, veths
/// and mirror included; those of a live run are kept.
#[test]
fn cleanup_stale_removes_only_dead_runs() {
    modbus_tests::require_root("the netns tests need root (namespaces, veths, tc)");
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("pid_max")
        .trim()
        .parse()
        .expect("a number");
    let base = format!("mbstale{}", std::process::id());
    // A PID above pid_max never exists: the run that "made" it is dead.
    let dead = format!("{base}_{}x0", pid_max + 1);
    let live = format!("{base}_{}x1", std::process::id());
    // Simulate a killed run: a full topology that is never torn down.
    std::mem::forget(Topology::create(&dead).expect("create the topology"));
    let keep = Topology::create(&live).expect("create the topology");
    assert_eq!(namespaces_of(&dead).len(), 5);

    let removed = cleanup_stale(&format!("{base}_")).expect("cleanup");
    assert_eq!(removed.len(), 5, "{removed:?}");
    assert!(removed.iter().all(|n| n.starts_with(&dead)));
    assert_eq!(namespaces_of(&dead), Vec::<String>::new());
    assert_eq!(namespaces_of(&live).len(), 5, "a live run is left alone");
    keep.teardown().expect("teardown");
    assert_eq!(namespaces_of(&base), Vec::<String>::new());
}
