//! Sensors publishing into a real NATS JetStream cluster (`--publish`):
//! three `nats-server` nodes on loopback ports, each with its own store
//! under the test's temporary directory, started and stopped by the test
//! (also on failure). `cargo xtask setup` installs nats-server; without it
//! these tests fail.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use modbus_tests::{detector_binary, eventually, fixture, free_port, holds, read_json, Killed};
use serde_json::{json, Value};

/// The tests here run one at a time: each starts JetStream servers and
/// sensors, and several of them at once on a small CI machine slow a
/// cluster's recovery from a killed node past what a test waits for.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A test that failed holding it says nothing about the next one.
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One node of the cluster.
struct Node {
    client: u16,
    monitor: u16,
    config: PathBuf,
    log: PathBuf,
    process: Option<Killed>,
}

struct Cluster {
    nodes: Vec<Node>,
}

impl Cluster {
    /// Three nodes routed to each other, JetStream on, stores in `dir`.
    /// Ports are picked free, but another process may take one before a
    /// node binds it: a cluster that does not come up is made again on
    /// other ports (three tries), each try's logs kept for the message.
    fn new(dir: &Path) -> Cluster {
        let mut why = Vec::new();
        for attempt in 0..3 {
            let mut c = Cluster::configure(&dir.join(format!("try{attempt}")));
            for i in 0..3 {
                c.start(i);
            }
            match c.wait_ready() {
                Ok(()) => return c,
                Err(e) => why.push(e),
            }
        }
        panic!("the JetStream cluster did not come up: {why:?}");
    }

    fn configure(dir: &Path) -> Cluster {
        std::fs::create_dir_all(dir).unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, &(client, cluster, monitor))| {
                let routes: Vec<String> = ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| format!("nats-route://127.0.0.1:{}", p.1))
                    .collect();
                let store = dir.join(format!("n{i}"));
                let config = dir.join(format!("n{i}.conf"));
                std::fs::write(
                    &config,
                    format!(
                        "server_name: n{i}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                         jetstream {{ store_dir: \"{}\", max_memory_store: 64MB, max_file_store: 1GB }}\n\
                         cluster {{ name: modbus, listen: 127.0.0.1:{cluster}, routes: [{}] }}\n",
                        store.display(),
                        routes.join(", ")
                    ),
                )
                .unwrap();
                Node {
                    client,
                    monitor,
                    config,
                    log: dir.join(format!("n{i}.log")),
                    process: None,
                }
            })
            .collect();
        Cluster { nodes }
    }

    fn start(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&n.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server runs (cargo xtask setup installs it)");
        n.process = Some(Killed(child));
    }

    /// SIGKILL, as a crash.
    fn kill(&mut self, i: usize) {
        self.nodes[i].process = None;
    }

    fn stop_all(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
    }

    fn start_all(&mut self) {
        for i in 0..3 {
            self.start(i);
        }
        if let Err(e) = self.wait_ready() {
            panic!("{e}");
        }
    }

    /// Every running node says JetStream is up (a meta leader elected);
    /// else why not, with the node's log.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in self.nodes.iter_mut().filter(|n| n.process.is_some()) {
            loop {
                if http_get(n.monitor, "/healthz?js-enabled-only=true").contains("ok") {
                    break;
                }
                let exited = n
                    .process
                    .as_mut()
                    .is_some_and(|p| p.0.try_wait().ok().flatten().is_some());
                if exited || Instant::now() >= deadline {
                    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    return Err(format!("node on {} not ready: {tail:?}", n.client));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // The meta group needs its leader before a stream can be made.
        loop {
            if http_get(self.nodes[0].monitor, "/jsz").contains("\"meta_cluster\"")
                && http_get(self.nodes[0].monitor, "/jsz?leader-only=false").contains("\"leader\"")
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err("no JetStream meta leader".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every message of the stream: (subject, Nats-Msg-Id, payload), in
    /// stream order.
    fn messages(&self, stream: &str) -> Vec<(String, String, Value)> {
        stream_messages(&self.urls(), stream)
    }
}

/// Every message of `stream` at `urls`: (subject, Nats-Msg-Id, payload),
/// in stream order.
fn stream_messages(urls: &str, stream: &str) -> Vec<(String, String, Value)> {
    with_jetstream(urls, async |js| {
        let mut s = js.get_stream(stream).await.unwrap();
        let last = s.info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            // Nothing is deleted from the stream: every sequence is there.
            // A get may fail while the cluster elects a leader: try again,
            // then fail loudly (a message skipped would read as lost).
            let mut tries = 0;
            let m = loop {
                match s.get_raw_message(seq).await {
                    Ok(m) => break m,
                    Err(e) if tries < 20 => {
                        tries += 1;
                        eprintln!("stream {stream}: message {seq}: {e}; again");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => panic!("stream {stream}: message {seq}: {e}"),
                }
            };
            let id = m
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.to_string())
                .unwrap_or_default();
            let payload: Value = serde_json::from_slice(&m.payload).unwrap();
            out.push((m.subject.to_string(), id, payload));
        }
        out
    })
}

/// Run `f` with a JetStream context on `urls`, in a runtime of its own.
fn with_jetstream<T>(urls: &str, f: impl AsyncFnOnce(async_nats::jetstream::Context) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let servers: Vec<async_nats::ServerAddr> =
            urls.split(',').map(|u| u.parse().unwrap()).collect();
        let client = async_nats::connect(servers).await.unwrap();
        f(async_nats::jetstream::new(client)).await
    })
}

/// A plain HTTP GET of the monitoring port ("" when it does not answer).
fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

/// GET `path` from 127.0.0.1:`port`: the body as JSON, null while there
/// is none (the server is not up yet).
fn get_json(port: u16, path: &str) -> Value {
    let text = http_get(port, path);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// The figure `field` of the sensor `name` in a console's `/api/sensors`.
fn sensor_figure(sensors: &Value, name: &str, field: &str) -> Option<u64> {
    sensors["sensors"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == name))
        .and_then(|x| x[field].as_u64())
}

/// Poll every 200 ms, for `secs` at most (see [`eventually`]).
fn within<T>(secs: u64, check: impl FnMut() -> Result<T, String>) -> T {
    eventually(Duration::from_secs(secs), Duration::from_millis(200), check)
}

/// The alert lines of an EVE file, parsed.
fn eve_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn sensor(name: &str, dir: &Path, urls: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(detector_binary());
    c.args(["--quiet", "--sensor-name", name, "--publish", urls])
        .args(["--publish-replicas", "3"])
        .arg("--publish-spool")
        .arg(dir.join(format!("spool-{name}")))
        .arg("--output")
        .arg(dir.join(format!("{name}.json")))
        .arg("--eve")
        .arg(dir.join(format!("{name}.eve.json")))
        .args([
            "--eve-every-event",
            "--authorized-masters",
            "192.168.50.20,192.168.50.30,192.168.50.40",
        ])
        .args(extra);
    c
}

/// What a sensor published: its alert lines in the stream, in order.
fn published<'a>(
    all: &'a [(String, String, Value)],
    name: &str,
) -> Vec<&'a (String, String, Value)> {
    let subject = format!("modbus.{name}.alerts");
    all.iter().filter(|(s, _, _)| *s == subject).collect()
}

/// The rogue master's MAC address in the lab captures (192.168.50.66).
const ROGUE_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x50, 0x00, 0x66];

/// A little-endian classic pcap whose Ethernet frames carry `to` wherever
/// they carried `from`, as source or destination (MACs are under no
/// checksum: the rest of each frame is as captured).
fn with_mac_replaced(bytes: &[u8], from: [u8; 6], to: [u8; 6]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let whole = modbus_tests::pcap_prefix(bytes, 0).len();
    let mut at = whole;
    while at + 16 <= out.len() {
        let caplen = u32::from_le_bytes(out[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &mut out[at + 16..at + 16 + caplen];
        for mac in [0..6, 6..12] {
            if frame.get(mac.clone()) == Some(&from[..]) {
                frame[mac].copy_from_slice(&to);
            }
        }
        at += 16 + caplen;
    }
    assert_eq!(at, out.len(), "a whole number of records");
    out
}

#[test]
fn sensors_publish_every_alert_exactly_once_while_a_node_dies_and_the_console_sees_across_sites() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::new(dir.path());
    let urls = cluster.urls();

    // Sensor A reads its capture from standard input: half, a pause in
    // which a node is killed, then the rest.
    let capture = std::fs::read(fixture("lab/dos_flood.pcap")).unwrap();
    let half = modbus_tests::pcap_prefix(&capture, 2000).len();
    // A cluster that lost a node takes a while to answer again: the
    // sensors wait for their acknowledgements longer than by default.
    let mut a = sensor(
        "site-a",
        dir.path(),
        &urls,
        &["--publish-wait", "60", "--pcap", "-"],
    )
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    let mut input = a.stdin.take().unwrap();
    input.write_all(&capture[..half]).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    cluster.kill(1);
    input.write_all(&capture[half..]).unwrap();
    drop(input);
    // Sensor B meanwhile, from a file.
    let b = sensor(
        "site-b",
        dir.path(),
        &urls,
        &["--publish-wait", "60", "--pcap"],
    )
    .arg(fixture("lab/rogue_master.pcap"))
    .output()
    .unwrap();
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    // Sensor C, at a third site, sees the rogue host's network card behind
    // another address: normal traffic whose engineering station
    // (192.168.50.40) has that MAC address (moved, or cloned).
    let moved = dir.path().join("moved.pcap");
    std::fs::write(
        &moved,
        with_mac_replaced(
            &std::fs::read(fixture("lab/normal_test.pcap")).unwrap(),
            [0x02, 0x00, 0x5e, 0x50, 0x00, 0x40],
            ROGUE_MAC,
        ),
    )
    .unwrap();
    let c = sensor("site-c", dir.path(), &urls, &["--pcap"])
        .arg(&moved)
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    assert!(a.wait().unwrap().success());

    let all = cluster.messages("MODBUS");
    for name in ["site-a", "site-b"] {
        let eve = eve_lines(&dir.path().join(format!("{name}.eve.json")));
        assert!(eve.len() > 10, "{name}: {} lines", eve.len());
        let got = published(&all, name);
        // Every line, once, in order.
        let payloads: Vec<&Value> = got.iter().map(|(_, _, p)| p).collect();
        assert_eq!(payloads.len(), eve.len(), "{name}");
        assert!(
            payloads.iter().zip(&eve).all(|(a, b)| *a == b),
            "{name}: lines differ"
        );
        let ids: std::collections::BTreeSet<&String> = got.iter().map(|(_, id, _)| id).collect();
        assert_eq!(ids.len(), got.len(), "{name}: an id twice");
        let report = read_json(&dir.path().join(format!("{name}.json")));
        // Acknowledged: every line (a batch sent again after a lost
        // acknowledgement counts again; the stream kept it once).
        assert!(
            report["publish"]["acked"].as_u64().unwrap() as usize >= eve.len(),
            "{}",
            report["publish"]
        );
        assert_eq!(report["publish"]["spool_waiting"], 0);
        assert_eq!(report["publish"]["spool_dropped"], 0);
        assert_eq!(report["publish"]["queue_full_drops"], 0);
        // The final inventory, once.
        let inventories: Vec<_> = all
            .iter()
            .filter(|(s, _, _)| *s == format!("modbus.{name}.inventory"))
            .collect();
        assert_eq!(inventories.len(), 1, "{name}");
        assert_eq!(inventories[0].2["devices"], report["inventory"]["devices"]);
    }

    // The console reads both sensors from the cluster (one node still down).
    let listen = free_port();
    let console = Killed(
        Command::new(detector_binary())
            .args(["console", "--nats", &urls])
            .args(["--listen", &format!("127.0.0.1:{listen}")])
            .spawn()
            .unwrap(),
    );
    let api = |path: &str| get_json(listen, path);
    let lines = |name: &str| eve_lines(&dir.path().join(format!("{name}.eve.json"))).len() as u64;
    within(30, || {
        let s = api("/api/sensors");
        let all = ["site-a", "site-b", "site-c"].iter().all(|&name| {
            sensor_figure(&s, name, "alert_lines") == Some(lines(name))
                && sensor_figure(&s, name, "inventories") == Some(1)
        });
        holds(all, || format!("the console has {s}"))
    });
    let b = api("/api/alerts?sensor=site-b&limit=5");
    assert_eq!(b["total"].as_u64(), Some(lines("site-b")));
    assert_eq!(b["alerts"].as_array().unwrap().len(), 5);
    assert!(b["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["sensor"] == "site-b"));
    // One asset per address: the PLC, seen by both sensors.
    let assets = api("/api/inventory");
    let plc: Vec<&Value> = assets["assets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["ip"] == "192.168.50.10")
        .collect();
    assert_eq!(plc.len(), 1, "{assets}");
    assert_eq!(
        plc[0]["sensors"],
        serde_json::json!(["site-a", "site-b", "site-c"])
    );
    // The rogue master of both captures, seen at both sites.
    let cross = api("/api/fleet-alerts");
    assert!(
        cross["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["type"] == "ROGUE_MASTER_AT_SEVERAL_SITES"
                && a["subject"] == "192.168.50.66"
                && a["sensors"] == serde_json::json!(["site-a", "site-b"])),
        "{cross}"
    );
    // The rogue host's MAC address behind 192.168.50.66 at two sites and
    // 192.168.50.40 at the third: one move, and no other (every other
    // address keeps its MAC address everywhere).
    let mac = ROGUE_MAC.map(|b| format!("{b:02x}")).join(":");
    let moves: Vec<&Value> = cross["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["type"] == "DEVICE_MOVED")
        .collect();
    assert_eq!(moves.len(), 1, "{cross}");
    assert_eq!(moves[0]["subject"], mac.as_str(), "{cross}");
    assert_eq!(
        moves[0]["sensors"],
        serde_json::json!(["site-a", "site-b", "site-c"])
    );
    let said = moves[0]["description"].as_str().unwrap();
    assert!(said.contains("192.168.50.40, 192.168.50.66"), "{said}");
    // The first console goes; a second one with the same durable consumer
    // (the default name) does not resume where the first stopped (all
    // acknowledged): it rebuilds the whole fleet from the stream.
    drop(console);
    // With a token, a request without it is refused (the dashboard's guard).
    let guarded = free_port();
    let _guarded = Killed(
        Command::new(detector_binary())
            .args(["console", "--nats", &urls, "--dashboard-token", "s3cret"])
            .args(["--listen", &format!("127.0.0.1:{guarded}")])
            .spawn()
            .unwrap(),
    );
    within(10, || {
        holds(!http_get(guarded, "/api/sensors").is_empty(), || {
            "the guarded console does not answer".into()
        })
    });
    assert!(http_get(guarded, "/api/sensors").starts_with("HTTP/1.0 401"));
    assert!(http_get(guarded, "/api/sensors?token=s3cret").starts_with("HTTP/1.0 200"));
    within(30, || {
        let s = get_json(guarded, "/api/sensors?token=s3cret");
        let all = ["site-a", "site-b"]
            .iter()
            .all(|&name| sensor_figure(&s, name, "alert_lines") == Some(lines(name)));
        holds(all, || format!("the second console has {s}"))
    });
}

#[test]
fn a_sensor_spools_while_the_cluster_is_down_and_sends_in_order_after() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::new(dir.path());
    let urls = cluster.urls();
    cluster.stop_all();

    // The cluster is down: every line waits in the spool.
    let first = sensor(
        "site-c",
        dir.path(),
        &urls,
        &["--publish-wait", "1", "--pcap"],
    )
    .arg(fixture("lab/rogue_master.pcap"))
    .output()
    .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let eve1 = eve_lines(&dir.path().join("site-c.eve.json"));
    let r1 = read_json(&dir.path().join("site-c.json"));
    assert_eq!(r1["publish"]["acked"], 0, "{}", r1["publish"]);
    assert_eq!(
        r1["publish"]["spool_waiting"].as_u64().unwrap() as usize,
        eve1.len() + 1,
        "every line and the final inventory"
    );
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("waiting in"),
        "said on stderr"
    );

    // A crash cut the spool's last record (the final inventory) short.
    let spool = dir.path().join("spool-site-c");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    let last = segments.last().expect("a segment");
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 5)
        .unwrap();

    // Back up: the next run sends the spool first, then its own lines.
    cluster.start_all();
    let second = sensor("site-c", dir.path(), &urls, &["--eve-truncate", "--pcap"])
        .arg(fixture("lab/unauthorized_write.pcap"))
        .output()
        .unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let eve2 = eve_lines(&dir.path().join("site-c.eve.json"));
    let r2 = read_json(&dir.path().join("site-c.json"));
    assert_eq!(r2["publish"]["spool_waiting"], 0, "{}", r2["publish"]);
    let got: Vec<Value> = published(&cluster.messages("MODBUS"), "site-c")
        .into_iter()
        .map(|(_, _, p)| p.clone())
        .collect();
    let expected: Vec<Value> = eve1.into_iter().chain(eve2).collect();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "not the two runs' lines in order");
    // The cut record is counted, not sent: the second run's inventory only.
    let corrupt = r2["publish"]["spool_corrupt_bytes"].as_u64().unwrap();
    assert!(corrupt > 0 && corrupt < len, "{}", r2["publish"]);
    let inventories = cluster
        .messages("MODBUS")
        .into_iter()
        .filter(|(s, _, _)| s == "modbus.site-c.inventory")
        .count();
    assert_eq!(inventories, 1);
}

#[test]
fn a_full_spool_drops_the_oldest_and_counts_them() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    // No server at all on this port.
    let urls = format!("nats://127.0.0.1:{}", free_port());
    // Every synthetic master is off the allow list of `sensor`: a rogue
    // master alert per request, tens of megabytes of lines.
    let capture = dir.path().join("flood.pcap");
    let cfg = modbus_synth::SynthConfig {
        frames: 50_000,
        attacks: true,
        seed: 5,
        ..modbus_synth::SynthConfig::default()
    };
    modbus_synth::generate(
        &cfg,
        std::io::BufWriter::new(std::fs::File::create(&capture).unwrap()),
    )
    .unwrap();
    let metrics = free_port();
    let mut child = sensor(
        "site-d",
        dir.path(),
        &urls,
        &[
            "--publish-wait",
            "0",
            "--publish-spool-max-bytes",
            "0",
            "--metrics",
            &format!("127.0.0.1:{metrics}"),
            "--metrics-hold",
            "30",
            "--pcap",
        ],
    )
    .arg(&capture)
    .spawn()
    .unwrap();
    // The report is written before the metrics are held: then scrape.
    let report = dir.path().join("site-d.json");
    within(120, || holds(report.exists(), || "no report".into()));
    let scraped = http_get(metrics, "/metrics");
    // SIGTERM ends the hold.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let lines = eve_lines(&dir.path().join("site-d.eve.json")).len() as u64;
    let p = read_json(&report)["publish"].clone();
    let metric = |name: &str| -> u64 {
        scraped
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in\n{scraped}"))
    };
    assert_eq!(
        metric("modbus_detect_publish_dropped_total{reason=\"spool_full\"}"),
        p["spool_dropped"].as_u64().unwrap()
    );
    assert_eq!(
        metric("modbus_detect_publish_spool_waiting"),
        p["spool_waiting"].as_u64().unwrap()
    );
    let waiting = p["spool_waiting"].as_u64().unwrap();
    let dropped = p["spool_dropped"].as_u64().unwrap() + p["queue_full_drops"].as_u64().unwrap();
    assert!(dropped > 0, "{p}");
    // Every line and the final inventory: waiting or dropped.
    assert_eq!(waiting + dropped, lines + 1, "{p}");
    // Memory stays bounded: the queue to the publisher holds 64 MiB at
    // most, the spool is on disk (73 MiB peak measured, debug build).
    let peak = read_json(&report)["peak_memory_kib"].as_u64().unwrap();
    assert!(peak < 256 * 1024, "{peak} KiB");
    // The spool keeps to its bound: two segments of 4 MiB at most.
    let bytes: u64 = std::fs::read_dir(dir.path().join("spool-site-d"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(bytes <= 8 << 20, "{bytes} bytes spooled");
}

/// A measurement, not a check (`cargo test --test fleet -- --ignored
/// --nocapture`): from the moment a frame that raises an alert is handed
/// to a sensor to the moment the console serves the alert, through the
/// three-node cluster. The sensor reads standard input, so each sample
/// includes the replay's idle flush (100 ms), which a live capture does
/// not wait for.
#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn frame_to_console_latency() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::new(dir.path());
    let urls = cluster.urls();
    let listen = free_port();
    let _console = Killed(
        Command::new(detector_binary())
            .args(["console", "--nats", &urls])
            .args(["--listen", &format!("127.0.0.1:{listen}")])
            .spawn()
            .unwrap(),
    );
    let capture = dir.path().join("attack.pcap");
    let cfg = modbus_synth::SynthConfig {
        frames: 30_000,
        masters: 4,
        slaves: 2,
        attacks: true,
        seed: 9,
        ..modbus_synth::SynthConfig::default()
    };
    let s = modbus_synth::generate(
        &cfg,
        std::io::BufWriter::new(std::fs::File::create(&capture).unwrap()),
    )
    .unwrap();
    let bytes = std::fs::read(&capture).unwrap();
    let join = |v: &[std::net::Ipv4Addr]| {
        v.iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let (masters, writers) = (join(&s.authorized_masters), join(&s.authorized_writers));
    let mut sensor = Command::new(detector_binary())
        .args(["--quiet", "--sensor-name", "lat", "--publish", &urls])
        .arg("--publish-spool")
        .arg(dir.path().join("spool"))
        .arg("--output")
        .arg(dir.path().join("lat.json"))
        .args(["--eve-every-event", "--authorized-masters", &masters])
        .args(["--authorized-writers", &writers, "--eve"])
        .arg(dir.path().join("lat.eve.json"))
        .args(["--pcap", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = sensor.stdin.take().unwrap();
    let total = || -> u64 {
        let text = http_get(listen, "/api/alerts?sensor=lat&limit=1");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        serde_json::from_str::<Value>(body).map_or(0, |v| v["total"].as_u64().unwrap_or(0))
    };
    let mut written = 0;
    let mut written_frames = 0;
    let mut samples = Vec::new();
    for &frame in s.attack_frames.iter().take(200) {
        // A write's alert waits for the PLC's answer: a few frames more
        // (an attack frame among those already written is no sample).
        if frame as usize <= written_frames {
            continue;
        }
        written_frames = frame as usize + 4;
        let upto = modbus_tests::pcap_prefix(&bytes, written_frames).len();
        let before = total();
        input.write_all(&bytes[written..upto]).unwrap();
        input.flush().unwrap();
        written = upto;
        let t0 = Instant::now();
        while total() <= before {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no alert for frame {frame}: {before} in the console, the EVE file has {:?}",
                std::fs::read_to_string(dir.path().join("lat.eve.json"))
                    .unwrap_or_default()
                    .lines()
                    .map(|l| {
                        let v: Value = serde_json::from_str(l).unwrap_or_default();
                        format!("{} {}", v["modbus_detect"]["type"], v["pcap_cnt"])
                    })
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    drop(input);
    let _ = sensor.wait();
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "frame to console: {} samples, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        samples[samples.len() - 1]
    );
}

/// `modbus-detect config ...` against the cluster: (exit code, stdout,
/// stderr).
fn config(urls: &str, sensor: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(detector_binary())
        .args(["config", "--nats", urls, "--sensor", sensor])
        .args(["--replicas", "3"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Store `value` under `key` as it is, past `config put`'s checks (what a
/// careless script or another tool could write).
fn kv_put_raw(urls: &str, key: &str, value: &str) {
    with_jetstream(urls, async |js| {
        let kv = js.get_key_value("modbus-config").await.unwrap();
        kv.put(key, value.to_string().into()).await.unwrap();
    });
}

/// The lines a child (spawned with a piped stderr) writes on stderr, as
/// they come.
fn stderr_lines(c: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = c.stderr.take().expect("a piped stderr");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    lines
}

/// Wait until a line containing `needle` arrives from `lines`; every line
/// read on the way is kept in `seen`.
fn wait_for_line(lines: &std::sync::mpsc::Receiver<String>, seen: &mut Vec<String>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.iter().any(|l| l.contains(needle)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("no line with {needle:?} on stderr; got {seen:#?}"),
        }
    }
}

#[test]
fn central_settings_reach_a_running_sensor_and_show_in_its_report() {
    let _one = one_at_a_time();
    central_settings_case(false);
}

/// The same on one core: the shard runs inline in the reader's thread,
/// which takes new settings at its own batch boundaries.
#[test]
fn central_settings_reach_an_inline_shard() {
    let _one = one_at_a_time();
    central_settings_case(true);
}

fn central_settings_case(one_core: bool) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::new(dir.path());
    let urls = cluster.urls();
    let capture_path = fixture("lab/rogue_master.pcap");

    // Where the rogue master's requests are, from a run with the local
    // allow list alone (192.168.50.66 is not on it).
    let plain = sensor("plain", dir.path(), &urls, &["--pcap"])
        .arg(&capture_path)
        .output()
        .unwrap();
    assert!(plain.status.success());
    let rogue_frames = |eve: &[Value]| -> Vec<u64> {
        eve.iter()
            .filter(|l| l["modbus_detect"]["type"] == "ROGUE_MODBUS_MASTER")
            .map(|l| l["pcap_cnt"].as_u64().unwrap())
            .collect()
    };
    let all_rogue = rogue_frames(&eve_lines(&dir.path().join("plain.eve.json")));
    assert!(all_rogue.len() >= 6, "{all_rogue:?}");
    let split = all_rogue[all_rogue.len() / 2] - 1;

    // A file `config put` refuses names the key and stores nothing.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "flood_min_run = 2.5\n").unwrap();
    let (code, _, err) = config(
        &urls,
        "site-c",
        &["put", "thresholds", bad.to_str().unwrap()],
    );
    assert_eq!(code, 3, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("site-c.thresholds") && err.contains("flood_min_run"),
        "{err}"
    );

    // The SOC authorizes the rogue master for this sensor, centrally.
    let list = dir.path().join("masters.txt");
    std::fs::write(
        &list,
        "# HMIs and the engineering station\n192.168.50.20\n192.168.50.30\n192.168.50.40\n192.168.50.66\n",
    )
    .unwrap();
    let (code, out, err) = config(
        &urls,
        "site-c",
        &["put", "authorized-masters", list.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("site-c.authorized-masters revision "),
        "{out}"
    );
    let (code, shown, _) = config(&urls, "site-c", &["show"]);
    assert_eq!(code, 0);
    assert!(shown.contains("site-c.thresholds (not set"), "{shown}");

    // The sensor reads the first half under the central list, then the
    // SOC takes it back (the local list holds again) and writes a bad
    // threshold past `config put`; then the rest.
    let capture = std::fs::read(&capture_path).unwrap();
    let half = modbus_tests::pcap_prefix(&capture, split as usize).len();
    let metrics = free_port();
    let metrics_at = format!("127.0.0.1:{metrics}");
    let board = free_port();
    let board_at = format!("127.0.0.1:{board}");
    let mut cmd = sensor(
        "site-c",
        dir.path(),
        &urls,
        &[
            "--pcap",
            "-",
            "--config-from",
            "nats",
            "--metrics",
            &metrics_at,
            "--dashboard",
            &board_at,
        ],
    );
    if one_core {
        modbus_tests::on_one_core(&mut cmd);
    }
    // Killed if the test fails: with a dashboard it would stay up.
    let mut sensor = Killed(
        cmd.stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let c = &mut sensor.0;
    let lines = stderr_lines(c);
    let mut seen = Vec::new();
    wait_for_line(&lines, &mut seen, "site-c.authorized-masters revision");
    let mut input = c.stdin.take().unwrap();
    input.write_all(&capture[..half]).unwrap();
    input.flush().unwrap();
    // The reader hands a paused writer's frames on after 100 ms.
    std::thread::sleep(Duration::from_millis(1000));
    // The dashboard following the run shows the central list in force.
    let central = json!([
        "192.168.50.20",
        "192.168.50.30",
        "192.168.50.40",
        "192.168.50.66"
    ]);
    dashboard_shows_masters(board, &central);
    kv_put_raw(&urls, "site-c.thresholds", "flood_min_run = 0\n");
    wait_for_line(&lines, &mut seen, "site-c.thresholds");
    let (code, out, err) = config(&urls, "site-c", &["delete", "authorized-masters"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "site-c.authorized-masters deleted");
    wait_for_line(&lines, &mut seen, "(delete): applied");
    let local = json!(["192.168.50.20", "192.168.50.30", "192.168.50.40"]);
    dashboard_shows_masters(board, &local);
    // The metrics say so while the sensor runs.
    let scraped = http_get(metrics, "/metrics");
    for want in [
        "modbus_detect_config_changes_total{outcome=\"applied\"} 2\n",
        "modbus_detect_config_changes_total{outcome=\"rejected\"} 1\n",
        "modbus_detect_config_loaded 1\n",
    ] {
        assert!(scraped.contains(want), "{want} not in {scraped}");
    }
    input.write_all(&capture[half..]).unwrap();
    drop(input);
    // A run with a dashboard keeps it up once the input ends: the final
    // report first, then a SIGTERM ends it with the run's status.
    let done = dir.path().join("site-c.json");
    within(30, || {
        let complete = std::fs::read(&done)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|r| r["status"] == "complete");
        holds(complete, || format!("no final report: {seen:#?}"))
    });
    // SAFETY: a signal to our own child, still running (not yet waited for).
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    assert!(c.wait().unwrap().success(), "{seen:#?}");

    // Rogue alerts only after the change, on exactly the frames a plain
    // run flags there.
    let eve = eve_lines(&dir.path().join("site-c.eve.json"));
    let after: Vec<u64> = all_rogue.iter().copied().filter(|f| *f > split).collect();
    assert_eq!(rogue_frames(&eve), after);

    // Logged, one line each, and in the report.
    let logged: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains("central settings: site-c."))
        .collect();
    assert_eq!(logged.len(), 3, "{seen:#?}");
    assert!(
        logged[0].contains("(put): applied: 4 entries"),
        "{}",
        logged[0]
    );
    assert!(
        logged[1].contains("(put): rejected") && logged[1].contains("flood_min_run"),
        "{}",
        logged[1]
    );
    assert!(
        logged[2].contains("back to the local setting"),
        "{}",
        logged[2]
    );
    let report = read_json(&dir.path().join("site-c.json"));
    let central = &report["central_config"];
    assert_eq!(central["loaded"], true, "{central}");
    assert_eq!(central["bucket"], "modbus-config");
    assert_eq!(central["key_prefix"], "site-c.");
    assert_eq!(central["applied"], 2, "{central}");
    assert_eq!(central["rejected"], 1, "{central}");
    assert_eq!(
        central["items"],
        serde_json::json!({}),
        "nothing held at the end"
    );
    let changes = central["changes"].as_array().unwrap();
    let summary: Vec<(&str, &str, &str)> = changes
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap(),
                c["operation"].as_str().unwrap(),
                c["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("site-c.authorized-masters", "put", "applied"),
            ("site-c.thresholds", "put", "rejected"),
            ("site-c.authorized-masters", "delete", "applied"),
        ]
    );
    let revisions: Vec<u64> = changes
        .iter()
        .map(|c| c["revision"].as_u64().unwrap())
        .collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    // The settings in force at the end: the local list, the default
    // flood threshold (the bad value was refused).
    assert_eq!(
        report["settings"]["authorized_masters"],
        serde_json::json!(["192.168.50.20", "192.168.50.30", "192.168.50.40"])
    );
    assert_eq!(report["settings"]["thresholds"]["flood_min_run"], 20);
}

/// Wait (10 s at most) for the dashboard on `port` to show `masters` as
/// the allow list in force: it follows a replay once a second.
fn dashboard_shows_masters(port: u16, masters: &Value) {
    within(10, || {
        let data = get_json(port, "/api/data");
        let shown = &data["report"]["settings"]["authorized_masters"];
        holds(shown == masters, || {
            format!("the dashboard shows {shown}, not {masters}")
        })
    });
}

/// Run `f` in a thread that has entered network namespace `ns` (its
/// sockets are made there): the test reads a server that listens on the
/// namespace's loopback.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        use std::os::fd::AsRawFd;
        // SAFETY: setns on an open namespace file; it changes only this
        // thread's network namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

#[test]
fn a_live_sensor_publishes_alerts_stats_and_inventory_while_capturing() {
    let _one = one_at_a_time();
    use modbus_tests::netns::{unique_prefix, Host, Topology, START};
    modbus_tests::require_root("the live fleet test needs root (namespaces, XDP)");
    let topo = Topology::create(&unique_prefix("mbf")).expect("topology");
    let dir = tempfile::tempdir().unwrap();
    let path = |f: &str| dir.path().join(f).to_str().unwrap().to_string();

    // A JetStream server on the sensor namespace's loopback (the site's).
    let store = path("js");
    let mut server = topo
        .spawn_in(
            Host::Sensor,
            "nats-server",
            &["-js", "-a", "127.0.0.1", "-p", "4222", "-sd", &store],
        )
        .expect("nats-server");
    server
        .wait_for_line("Server is ready", START)
        .expect("nats-server up");

    // Its central settings: the thresholds it runs with come from the
    // site's bucket, put there by `config` on the site's host.
    let bin = modbus_tests::detector_binary();
    let config_put = |item: &str, file: &str| {
        let args = [
            "config",
            "--nats",
            "nats://127.0.0.1:4222",
            "--sensor",
            "cell-9",
            "put",
            item,
            file,
        ];
        let put = topo
            .run_in(Host::Sensor, bin.to_str().unwrap(), &args)
            .expect("config put");
        assert!(
            put.status.success(),
            "{}",
            String::from_utf8_lossy(&put.stderr)
        );
    };
    let thresholds = path("thresholds.toml");
    std::fs::write(&thresholds, "flood_min_run = 40\n").unwrap();
    config_put("thresholds", &thresholds);

    let plc_addr = topo.plc_addr();
    let mut plc = topo.start_plc();
    let (report, eve, spool) = (path("live.json"), path("live.eve.json"), path("spool"));
    let mut sensor = topo.start_sensor(&[
        "--interface",
        topo.sensor_iface(),
        "--sensor-name",
        "cell-9",
        "--publish",
        "nats://127.0.0.1:4222",
        "--publish-spool",
        &spool,
        "--output",
        &report,
        "--eve",
        &eve,
        "--eve-every-event",
        "--inventory-interval",
        "0.3",
        "--stats-interval",
        "0.3",
        "--report-interval",
        "0.3",
        "--config-from",
        "nats",
        // Not the HMI: each of its requests is an alert.
        "--authorized-masters",
        "10.77.0.99",
    ]);
    let hmi = topo.lab(
        Host::Hmi,
        &[
            "hmi",
            "--target",
            &plc_addr,
            "--duration",
            "2",
            "--interval-ms",
            "20",
        ],
    );
    assert!(
        hmi.status.success(),
        "{}",
        String::from_utf8_lossy(&hmi.stderr)
    );
    // The report written while capturing (every 0.3 s) comes to have the
    // publisher's figures.
    let running = within(10, || {
        let r: Value = std::fs::read(&report)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        match r["publish"]["acked"].as_u64() {
            Some(n) if n > 0 => Ok(r),
            _ => Err(format!("the running report's publish: {}", r["publish"])),
        }
    });
    assert_eq!(running["status"], "running");
    assert_eq!(running["settings"]["thresholds"]["flood_min_run"], 40);
    assert_eq!(running["central_config"]["applied"], 1);
    // The SOC authorizes the HMI centrally while the sensor captures: its
    // polls stop being alerts from then on, without a restart.
    let rogue = || {
        eve_lines(Path::new(&eve))
            .iter()
            .filter(|l| l["modbus_detect"]["type"] == "ROGUE_MODBUS_MASTER")
            .count()
    };
    let before = rogue();
    assert!(before >= 20, "{before} rogue-master alerts");
    let masters = path("masters.txt");
    std::fs::write(&masters, format!("{}\n", topo.hmi_ip())).unwrap();
    config_put("authorized-masters", &masters);
    sensor
        .wait_for_line("cell-9.authorized-masters revision", START)
        .expect("the sensor applies the change");
    let hmi = topo.spawn_hmi("1", "20").wait(START).expect("HMI");
    assert!(hmi.status.success(), "{}", hmi.stderr);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        rogue(),
        before,
        "rogue-master alerts after the HMI was authorized"
    );
    let done = sensor.stop(Duration::from_secs(20)).expect("sensor stops");
    assert_eq!(done.status.code(), Some(130), "{}", done.stderr);
    let _ = plc.stop(Duration::from_secs(5));

    let all = in_netns(topo.sensor_netns(), || {
        stream_messages("nats://127.0.0.1:4222", "MODBUS")
    });
    let _ = server.stop(Duration::from_secs(5));
    let of = |kind: &str| -> Vec<&Value> {
        let subject = format!("modbus.cell-9.{kind}");
        all.iter()
            .filter(|(s, _, _)| *s == subject)
            .map(|(_, _, p)| p)
            .collect()
    };
    // Every alert line, once, in order.
    let lines = eve_lines(Path::new(&eve));
    let alerts: Vec<Value> = lines
        .iter()
        .filter(|l| l["event_type"] == "alert")
        .cloned()
        .collect();
    assert!(alerts.len() >= 20, "{} alert lines", alerts.len());
    let published: Vec<&Value> = of("alerts");
    assert_eq!(published.len(), alerts.len());
    assert!(published.iter().zip(&alerts).all(|(a, b)| *a == b));
    // Stats events while capturing, each with the publisher's figures.
    let stats = of("stats");
    assert!(stats.len() >= 3, "{} stats events", stats.len());
    for s in &stats {
        let p = &s["modbus_detect"]["publish"];
        assert!(p["acked"].is_u64() && p["spool_waiting"].is_u64(), "{s}");
        let central = &s["modbus_detect"]["central_config"];
        assert_eq!(
            (
                &central["loaded"],
                &central["applied"],
                &central["rejected"]
            ),
            (&json!(true), &central["applied"], &json!(0)),
            "{s}"
        );
    }
    let applied: Vec<u64> = stats
        .iter()
        .map(|s| {
            s["modbus_detect"]["central_config"]["applied"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(applied.windows(2).all(|w| w[0] <= w[1]), "{applied:?}");
    assert_eq!(applied.first(), Some(&1), "{applied:?}");
    assert_eq!(applied.last(), Some(&2), "{applied:?}");
    let acked: Vec<u64> = stats
        .iter()
        .map(|s| s["modbus_detect"]["publish"]["acked"].as_u64().unwrap())
        .collect();
    assert!(acked.windows(2).all(|w| w[0] <= w[1]), "{acked:?}");
    assert!(acked.last().is_some_and(|&n| n > 0), "{acked:?}");
    // Inventory snapshots while capturing, then the final one.
    let inventories = of("inventory");
    assert!(inventories.len() >= 3, "{} snapshots", inventories.len());
    let (last, running) = inventories.split_last().unwrap();
    assert!(running.iter().all(|i| i["complete"] == false));
    assert_eq!(last["complete"], true);
    let r = read_json(Path::new(&report));
    assert_eq!(last["devices"], r["inventory"]["devices"]);
    assert!(
        last["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["ip"] == topo.plc_ip().to_string()),
        "{last}"
    );
    assert_eq!(r["publish"]["spool_waiting"], 0);
    assert_eq!(r["publish"]["queue_full_drops"], 0);
    assert_eq!(r["settings"]["thresholds"]["flood_min_run"], 40);
    assert_eq!(r["central_config"]["applied"], 2, "{}", r["central_config"]);
    topo.teardown().expect("teardown");
}

/// Central settings that cannot be read: the sensor says so once, runs
/// with its local settings, and its report says the bucket was not read.
#[test]
fn a_sensor_whose_central_settings_are_unreachable_runs_with_its_own() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("nats://127.0.0.1:{}", free_port());
    let report = dir.path().join("r.json");
    let o = Command::new(detector_binary())
        .args(["--quiet", "--sensor-name", "lonely"])
        .args(["--config-from", &dead, "--config-wait", "0.5"])
        .args(["--authorized-masters", "192.168.50.20"])
        .arg("--output")
        .arg(&report)
        .arg("--pcap")
        .arg(fixture("lab/rogue_master.pcap"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("central settings: bucket modbus-config at")
            && err.contains("the local settings run until it is"),
        "{err}"
    );
    let r = read_json(&report);
    let central = &r["central_config"];
    assert_eq!(central["loaded"], false, "{central}");
    assert_eq!(central["servers"], dead.as_str());
    assert_eq!(central["applied"], 0);
    // The local allow list ran: the rogue master was seen.
    assert!(
        r["counters"]["alerts_by_type"]["ROGUE_MODBUS_MASTER"]
            .as_u64()
            .unwrap()
            > 0
    );
    // `--config-from nats` needs the --publish servers.
    let o = Command::new(detector_binary())
        .args(["--config-from", "nats", "--pcap"])
        .arg(fixture("lab/rogue_master.pcap"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("--config-from nats takes the --publish servers"));
}

/// A baseline with its ML models, from the bucket (stored gzipped: the
/// lab's is about 0.6 MB of JSON): a sensor with `--ml` and no local
/// baseline judges windows with it exactly as with the file.
#[test]
fn a_baseline_with_its_models_comes_from_the_bucket() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::new(dir.path());
    let urls = cluster.urls();
    let (baseline, _) = modbus_tests::learn_lab_baseline(dir.path(), &[]);
    let size = std::fs::metadata(&baseline).unwrap().len();
    assert!(size > 64 << 10, "{size} bytes: large enough to be gzipped");
    let (code, out, err) = config(&urls, "site-d", &["put", "baseline", &baseline]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("site-d.baseline revision "), "{out}");
    let (_, shown, _) = config(&urls, "site-d", &["show"]);
    let stored: u64 = shown
        .lines()
        .find(|l| l.starts_with("site-d.baseline revision"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(stored < size / 3, "stored {stored} of {size} bytes");

    let capture = fixture("lab/dos_flood.pcap");
    let run = |name: &str, extra: &[&str]| -> Value {
        let report = dir.path().join(format!("{name}.json"));
        let o = Command::new(detector_binary())
            .args(["--quiet", "--sensor-name", name, "--ml"])
            .args(extra)
            .arg("--output")
            .arg(&report)
            .arg("--pcap")
            .arg(&capture)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        read_json(&report)
    };
    let central = run("site-d", &["--config-from", &urls]);
    let local = run("local", &["--baseline-file", &baseline]);
    assert!(
        central["central_config"]["items"]["baseline"].is_u64(),
        "{}",
        central["central_config"]
    );
    let ml = |r: &Value| {
        r["counters"]["alerts_by_type"]["ML_ANOMALY"]
            .as_u64()
            .unwrap()
    };
    assert!(ml(&local) > 0, "the flood is an ML anomaly");
    assert_eq!(ml(&central), ml(&local));
    assert_eq!(central["ml"], local["ml"]);
}

/// A CA, and a certificate for 127.0.0.1 it signed: (CA, cert, key) files.
fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let files = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&files.0, ca.pem()).unwrap();
    std::fs::write(&files.1, cert.pem()).unwrap();
    std::fs::write(&files.2, key.serialize_pem()).unwrap();
    files
}

/// A server that requires TLS: a sensor given its CA publishes everything,
/// one without it cannot connect and spools; the console and `config`
/// reach it with the CA.
#[test]
fn tls_servers_are_reached_with_their_ca_only() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(dir.path());
    let port = free_port();
    let _server = Killed(
        Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "--tls"])
            .arg("--tlscert")
            .arg(&cert)
            .arg("--tlskey")
            .arg(&key)
            .arg("-sd")
            .arg(dir.path().join("js"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server"),
    );
    let ca = ca.to_str().unwrap();
    reached_only_with(dir.path(), port, &["--publish-ca", ca], &["--ca", ca]);
}

/// A server in operator mode, as `nsc` sets one up: an operator, an
/// account with JetStream, a user of it whose credentials file the
/// sensor, `config` and the console are given. Without it, the server
/// refuses the sensor (authorization violation) and everything spools.
#[test]
fn a_credentials_file_is_what_an_operator_mode_server_asks_for() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (conf, creds) = operator_mode(dir.path(), port);
    let _server = Killed(
        Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server"),
    );
    let creds = creds.to_str().unwrap();
    reached_only_with(
        dir.path(),
        port,
        &["--publish-creds", creds],
        &["--creds", creds],
    );
}

/// Files of an operator-mode server on 127.0.0.1:`port` (its
/// configuration, with the account's JWT preloaded) and of its user (a
/// credentials file): (configuration, credentials).
fn operator_mode(dir: &Path, port: u16) -> (PathBuf, PathBuf) {
    use nkeys::KeyPair;
    let operator = KeyPair::new_operator();
    // JetStream in operator mode needs a system account.
    let system = KeyPair::new_account();
    let account = KeyPair::new_account();
    let user = KeyPair::new_user();
    let unlimited = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
    });
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        json!({"type": "operator", "version": 2}),
    );
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        json!({"type": "account", "version": 2}),
    );
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        json!({"type": "account", "version": 2, "limits": unlimited}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        json!({"type": "user", "version": 2, "pub": {}, "sub": {},
               "subs": -1, "data": -1, "payload": -1}),
    );
    let conf = dir.join("operator.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: \"127.0.0.1:{port}\"\noperator: \"{operator_jwt}\"\n\
             system_account: {}\nresolver: MEMORY\n\
             resolver_preload: {{ {}: \"{system_jwt}\", {}: \"{account_jwt}\" }}\n\
             jetstream: {{ store_dir: \"{}\" }}\n",
            system.public_key(),
            system.public_key(),
            account.public_key(),
            dir.join("js").display()
        ),
    )
    .unwrap();
    let creds = dir.join("sensor.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();
    (conf, creds)
}

/// A NATS JWT: `nats` claims about `subject`, signed by `issuer`'s nkey.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, nats: Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "jti": format!("{subject}{iat}"), "iat": iat, "iss": issuer.public_key(),
        "sub": subject, "name": subject, "nats": nats
    });
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The server on 127.0.0.1:`port` asks its clients for something:
/// `config` given `client_auth` stores an allow list; a sensor given
/// `publish_auth` reads it (`--config-from nats`) and publishes every line;
/// the same run without it reads nothing, connects to nothing and spools
/// every line; the console given `client_auth` shows every line.
fn reached_only_with(dir: &Path, port: u16, publish_auth: &[&str], client_auth: &[&str]) {
    within(20, || {
        holds(TcpStream::connect(("127.0.0.1", port)).is_ok(), || {
            "nats-server did not listen".into()
        })
    });
    let url = format!("nats://127.0.0.1:{port}");
    // Both sensors' allow list in the bucket, put by `config`.
    let list = dir.join("m.txt");
    std::fs::write(&list, "192.168.50.20\n").unwrap();
    for sensor in ["trusted", "stranger"] {
        let o = Command::new(detector_binary())
            .args(["config", "--nats", &url, "--sensor", sensor])
            .args(client_auth)
            .args(["put", "authorized-masters", list.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let run = |name: &str, extra: &[&str]| -> Value {
        let o = Command::new(detector_binary())
            .args(["--quiet", "--sensor-name", name, "--publish", &url])
            .args(["--publish-wait", "2", "--eve-every-event"])
            .args(["--config-from", "nats", "--config-wait", "2"])
            .arg("--publish-spool")
            .arg(dir.join(format!("spool-{name}")))
            .arg("--output")
            .arg(dir.join(format!("{name}.json")))
            .arg("--eve")
            .arg(dir.join(format!("{name}.eve.json")))
            .args(["--authorized-masters", "192.168.50.20"])
            .args(extra)
            .arg("--pcap")
            .arg(fixture("lab/rogue_master.pcap"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        read_json(&dir.join(format!("{name}.json")))
    };
    let trusted = run("trusted", publish_auth);
    let lines = eve_lines(&dir.join("trusted.eve.json")).len() as u64;
    assert_eq!(
        trusted["publish"]["acked"].as_u64(),
        Some(lines + 1),
        "{}",
        trusted["publish"]
    );
    assert_eq!(trusted["publish"]["spool_waiting"], 0);
    let central = &trusted["central_config"];
    assert_eq!(
        (&central["loaded"], &central["applied"]),
        (&json!(true), &json!(1)),
        "{central}"
    );
    let stranger = run("stranger", &[]);
    assert_eq!(stranger["publish"]["acked"], 0, "{}", stranger["publish"]);
    assert_eq!(
        stranger["publish"]["spool_waiting"].as_u64(),
        Some(lines + 1)
    );
    let central = &stranger["central_config"];
    assert_eq!(central["loaded"], false, "{central}");

    let listen = free_port();
    let _console = Killed(
        Command::new(detector_binary())
            .args(["console", "--nats", &url])
            .args(client_auth)
            .args(["--listen", &format!("127.0.0.1:{listen}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    within(20, || {
        let s = get_json(listen, "/api/sensors");
        holds(
            sensor_figure(&s, "trusted", "alert_lines") == Some(lines),
            || format!("the console has {s}"),
        )
    });
}

/// The bucket deleted and made again while a sensor follows it: the
/// sensor reads it again, takes the new revisions (they start over), and
/// an item no longer there goes back to the local setting.
#[test]
fn a_bucket_made_again_is_read_again() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::new(dir.path());
    let urls = cluster.urls();
    let put = |item: &str, text: &str| {
        let f = dir.path().join(format!("{item}.txt"));
        std::fs::write(&f, text).unwrap();
        let (code, _, err) = config(&urls, "site-e", &["put", item, f.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
    };
    put("authorized-masters", "192.168.50.20\n");
    put("authorized-masters", "192.168.50.30\n");
    put("authorized-masters", "192.168.50.40\n");
    put("thresholds", "flood_min_run = 30\n");
    let mut c = sensor(
        "site-e",
        dir.path(),
        &urls,
        &["--pcap", "-", "--config-from", "nats"],
    )
    .stdin(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let lines = stderr_lines(&mut c);
    let mut seen = Vec::new();
    wait_for_line(
        &lines,
        &mut seen,
        "site-e.thresholds revision 4 (put): applied",
    );
    // The bucket goes, and is made again with one item.
    with_jetstream(&urls, async |js| {
        js.delete_stream("KV_modbus-config").await.unwrap();
    });
    // The sensor's watch fails (said once), and it tries again.
    wait_for_line(&lines, &mut seen, "trying again every 1 s");
    put("authorized-masters", "192.168.50.66\n");
    wait_for_line(&lines, &mut seen, "bucket modbus-config read again");
    wait_for_line(
        &lines,
        &mut seen,
        "site-e.thresholds revision 4 (gone): applied",
    );
    wait_for_line(
        &lines,
        &mut seen,
        "site-e.authorized-masters revision 1 (put): applied",
    );
    let mut input = c.stdin.take().unwrap();
    input
        .write_all(&std::fs::read(fixture("lab/rogue_master.pcap")).unwrap())
        .unwrap();
    drop(input);
    assert!(c.wait().unwrap().success(), "{seen:#?}");
    let r = read_json(&dir.path().join("site-e.json"));
    // Detection ran under the bucket's new list: the capture's rogue is
    // the one master allowed, its HMIs are not.
    let rogues: std::collections::BTreeSet<&str> = r["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["type"] == "ROGUE_MODBUS_MASTER")
        .filter_map(|a| a["src_ip"].as_str())
        .collect();
    assert!(
        !rogues.is_empty() && !rogues.contains("192.168.50.66"),
        "{rogues:?}"
    );
    assert_eq!(
        r["central_config"]["items"],
        serde_json::json!({"authorized-masters": 1}),
        "{}",
        r["central_config"]
    );
    assert_eq!(r["settings"]["thresholds"]["flood_min_run"], 20);
    assert_eq!(
        r["settings"]["authorized_masters"],
        serde_json::json!(["192.168.50.66"])
    );
}
