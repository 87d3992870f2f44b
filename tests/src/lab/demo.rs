//! `modbus-lab demo`: the whole live path on one machine, for a new user to
//! watch. A virtual plant in network namespaces (a tokio-modbus PLC, an HMI
//! polling it, an attacker), the PLC's switch port mirrored to a sensor
//! interface, and `modbus-detect --interface` on it; alerts are printed as the
//! sensor writes them. Everything is torn down at the end, on Ctrl-C too.

use std::io::{BufRead, BufReader, Seek};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use modbus_tests::netns::{cleanup_stale, unique_prefix, Host, NsProcess, Topology};

use super::LabError;

const START: Duration = Duration::from_secs(20);

/// The attacks, in order, with a pause before each.
const SCRIPT: &[(&str, &str)] = &[
    ("rogue", "an unknown master reads registers"),
    ("write", "a master that may not write writes"),
    ("enumerate", "device identification and a remote restart"),
    ("exceptions", "probing addresses that do not exist"),
    ("oor", "a set point far outside its safe range"),
    ("flood", "back-to-back requests"),
];

pub fn run(detector: &Path, seconds: u64, out: &Path) -> Result<(), LabError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| LabError(format!("{what}: {e}"));
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGINT, libc::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| fail("signal handler", &e))?;
    }
    let _ = cleanup_stale("mbdemo");
    std::fs::create_dir_all(out).map_err(|e| fail(&out.display().to_string(), &e))?;
    let lab = std::env::current_exe().map_err(|e| fail("modbus-lab path", &e))?;
    let lab = lab.to_string_lossy().into_owned();
    let topo = Topology::create(&unique_prefix("mbdemo")).map_err(|e| fail("topology", &e))?;
    say(&format!(
        "plant: PLC {} (namespace {}), HMI {}, attacker {}; the PLC's switch port is mirrored to {} in {}",
        topo.plc_ip(),
        topo.ns_name(Host::Plc),
        topo.hmi_ip(),
        topo.attacker_ip(),
        topo.sensor_iface(),
        topo.sensor_netns()
    ));
    let plc_addr = format!("{}:502", topo.plc_ip());
    let mut plc = topo
        .spawn_in(Host::Plc, &lab, &["plc", "--listen", &plc_addr])
        .map_err(|e| fail("PLC", &e))?;
    plc.wait_for_line("listening on", START)
        .map_err(|e| fail("PLC", &e))?;
    let files = Files::new(out);
    std::fs::write(
        &files.limits,
        r#"{"40021": {"name": "Tank Level Setpoint", "min": 10, "max": 90, "unit": "%", "max_rate": 2}}"#,
    )
    .map_err(|e| fail("limits file", &e))?;
    let mut sensor = start_sensor(&topo, detector, &files).map_err(|e| fail("sensor", &e))?;
    let hmi_secs = seconds.max(SCRIPT.len() as u64 * 2 + 2).to_string();
    let mut hmi = topo
        .spawn_in(
            Host::Hmi,
            &lab,
            &["hmi", "--target", &plc_addr, "--duration", &hmi_secs],
        )
        .map_err(|e| fail("HMI", &e))?;
    say("the HMI 10.77.0.20 polls the PLC; the attacks follow, one every 2 s");
    let mut eve = EveTail::default();
    let started = Instant::now();
    let mut next = 0;
    let total = Duration::from_secs(hmi_secs.parse().unwrap_or(20));
    while started.elapsed() < total && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        eve.print_new(&files.eve);
        if next < SCRIPT.len() && started.elapsed() >= Duration::from_secs(2 * next as u64 + 2) {
            let (kind, what) = SCRIPT[next];
            say(&format!(
                "attack: {kind} ({what}) from {}",
                topo.attacker_ip()
            ));
            let _ = topo.run_in(
                Host::Attacker,
                &lab,
                &["attack", "--target", &plc_addr, "--kind", kind],
            );
            next += 1;
        }
    }
    let _ = hmi.stop(START);
    std::thread::sleep(Duration::from_millis(300));
    let done = sensor.stop(START).map_err(|e| fail("sensor", &e))?;
    eve.print_new(&files.eve);
    let _ = plc.stop(START);
    print!("{}", done.stderr);
    say(&format!(
        "report: {}\nmodbus-lab demo: alert stream: {}",
        files.report.display(),
        files.eve.display()
    ));
    topo.teardown().map_err(|e| fail("teardown", &e))?;
    say("the virtual plant is torn down");
    Ok(())
}

fn say(msg: &str) {
    println!("modbus-lab demo: {msg}");
}

struct Files {
    limits: PathBuf,
    eve: PathBuf,
    report: PathBuf,
}

impl Files {
    fn new(out: &Path) -> Self {
        Files {
            limits: out.join("register_limits.json"),
            eve: out.join("alerts.eve.json"),
            report: out.join("modbus_anomaly_report.json"),
        }
    }
}

fn start_sensor(topo: &Topology, detector: &Path, f: &Files) -> std::io::Result<NsProcess> {
    let (eve, report, limits) = (
        f.eve.display().to_string(),
        f.report.display().to_string(),
        f.limits.display().to_string(),
    );
    let args = [
        "--interface",
        topo.sensor_iface(),
        "--authorized-masters",
        "10.77.0.20",
        "--authorized-writers",
        "10.77.0.20",
        "--register-limits-file",
        &limits,
        "--eve",
        &eve,
        "--eve-truncate",
        "--output",
        &report,
        "--stats-interval",
        "5",
    ];
    let mut sensor = topo.spawn_in(Host::Sensor, &detector.display().to_string(), &args)?;
    let line = sensor.wait_for_line("capturing on", START)?;
    say(line.trim());
    Ok(sensor)
}

/// Prints the EVE lines the sensor appends, one short line per alert.
#[derive(Default)]
struct EveTail {
    offset: u64,
}

impl EveTail {
    fn print_new(&mut self, path: &Path) {
        let Ok(mut f) = std::fs::File::open(path) else {
            return;
        };
        if f.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut reader = BufReader::new(f);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if !line.ends_with('\n') {
                break; // a line still being written
            }
            self.offset += line.len() as u64;
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let d = &v["modbus_detect"];
                println!(
                    "  ALERT {:<8} {:<29} {} (count {})",
                    d["severity"].as_str().unwrap_or("?"),
                    d["type"].as_str().unwrap_or("?"),
                    d["description"].as_str().unwrap_or(""),
                    d["count"]
                );
            }
            line.clear();
        }
    }
}
