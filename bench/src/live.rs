//! The live benchmark (root): how many frames per second the sensor
//! interface of the kernel-path topology takes in, in one run, with
//!
//! 1. no program attached (the kernel receives and drops the frames);
//! 2. an XDP program that drops everything (`bench/xdp_drop.c`): the XDP
//!    ceiling of this interface;
//! 3. modbus-detect (XDP + AF_XDP, every rule on): the highest rate with no
//!    loss, found by stepping the sender's rate, and the loss at the
//!    sender's maximum; then the same with `--busy-poll 0`, to show what
//!    busy polling buys;
//! 4. an AF_PACKET TPACKET_V3 reader with the classic BPF filter of
//!    `tcp port 502` ([`crate::afpacket`]): the same two figures.
//!
//! The topology is the one of the live tests (`modbus_tests::netns`): the
//! sender, `modbus-lab inject` (AF_PACKET `sendmmsg`, bursts of 64), runs
//! in the switch namespace and sends out of the switch end of the sensor's
//! veth, so every frame arrives on `span0` in the sensor namespace. A veth
//! delivers in the sender's context: a slow receiver slows the sender, and
//! the figures are frames the receiver took in per second of sending.

use std::path::{Path, PathBuf};
use std::time::Duration;

use modbus_tests::netns::{cleanup_stale, unique_prefix, Host, Topology};
use serde_json::{json, Value};

use crate::results::Row;
use crate::stats::Summary;

/// Where the programs and files are.
pub struct Setup {
    pub lab: PathBuf,
    pub detector: PathBuf,
    /// This benchmark's own binary (for `afpacket-reader`).
    pub bench: PathBuf,
    pub pcap: PathBuf,
    pub frames: u64,
    pub xdp_obj: PathBuf,
    /// Detector flags: every rule on.
    pub rules: Vec<String>,
    pub work: PathBuf,
    pub runs: usize,
    /// Steps of the zero-loss search.
    pub steps: usize,
}

/// One send: what the sender reported.
#[derive(Debug, Clone, Copy)]
struct Sent {
    frames: u64,
    pps: f64,
}

/// One measurement at one sender rate.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// Requested rate (0: as fast as possible).
    pub asked_pps: u64,
    pub sent: u64,
    /// Rate the sender achieved.
    pub sent_pps: f64,
    pub received: u64,
}

impl Point {
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }

    /// Frames the receiver took in per second of sending.
    pub fn received_pps(&self) -> f64 {
        self.received as f64 * self.sent_pps / self.sent.max(1) as f64
    }

    fn json(&self) -> Value {
        json!({"asked_pps": self.asked_pps, "sent": self.sent, "sent_pps": self.sent_pps,
               "received": self.received, "lost": self.lost(), "received_pps": self.received_pps()})
    }
}

const START: Duration = Duration::from_secs(20);
const STOP: Duration = Duration::from_secs(20);

fn err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

struct Bench<'a> {
    topo: Topology,
    setup: &'a Setup,
}

impl Bench<'_> {
    fn inject(&self, pps: u64) -> std::io::Result<Sent> {
        let out = self.topo.run_in(
            Host::Switch,
            &s(&self.setup.lab),
            &[
                "inject",
                "--iface",
                self.topo.sensor_peer(),
                "--pcap",
                &s(&self.setup.pcap),
                "--pps",
                &pps.to_string(),
            ],
        )?;
        let v: Value = serde_json::from_slice(&out.stdout).map_err(err)?;
        Ok(Sent {
            frames: v["frames"].as_u64().unwrap_or(0),
            pps: v["pps"].as_f64().unwrap_or(f64::NAN),
        })
    }

    fn rx_packets(&self) -> std::io::Result<u64> {
        let path = format!(
            "/sys/class/net/{}/statistics/rx_packets",
            self.topo.sensor_iface()
        );
        let out = self.topo.run_in(Host::Sensor, "cat", &[&path])?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(err)
    }

    /// Frames the interface counts while the sender runs at full speed.
    fn interface_rate(&self) -> std::io::Result<Point> {
        let before = self.rx_packets()?;
        let sent = self.inject(0)?;
        let after = self.rx_packets()?;
        Ok(Point {
            asked_pps: 0,
            sent: sent.frames,
            sent_pps: sent.pps,
            received: (after - before).min(sent.frames),
        })
    }

    fn xdp(&self, on: bool) -> std::io::Result<()> {
        let ns = self.topo.sensor_netns();
        let iface = self.topo.sensor_iface();
        let obj = s(&self.setup.xdp_obj);
        let mut args = vec!["-n", ns, "link", "set", "dev", iface, "xdpdrv"];
        if on {
            args.extend(["obj", &obj, "sec", "xdp"]);
        } else {
            args.push("off");
        }
        let st = std::process::Command::new("ip").args(&args).status()?;
        if !st.success() {
            return Err(err(format!("ip {} failed", args.join(" "))));
        }
        Ok(())
    }

    /// Put the sensor interface's NAPI settings back to the kernel's
    /// defaults: modbus-detect's busy polling tunes them and leaves them
    /// (see `modbus_detect::source::xdp::busy_poll`), and every measurement must
    /// start from the same interface.
    fn reset_napi(&self) -> std::io::Result<()> {
        let dir = format!("/sys/class/net/{}", self.topo.sensor_iface());
        let script =
            format!("echo 0 > {dir}/napi_defer_hard_irqs && echo 0 > {dir}/gro_flush_timeout");
        let out = self.topo.run_in(Host::Sensor, "sh", &["-c", &script])?;
        if !out.status.success() {
            return Err(err(format!(
                "resetting {dir}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// modbus-detect on the sensor interface while the sender runs at `pps`.
    fn sensor(&self, pps: u64, run: usize, extra: &[&str]) -> std::io::Result<(Point, Value)> {
        let report = self
            .setup
            .work
            .join(format!("live-sensor-{pps}-{run}.json"));
        let mut args: Vec<String> = vec![
            "--interface".into(),
            self.topo.sensor_iface().into(),
            "--output".into(),
            s(&report),
            "--stats-interval".into(),
            "3600".into(),
        ];
        args.extend(self.setup.rules.iter().cloned());
        args.extend(extra.iter().map(|a| a.to_string()));
        self.reset_napi()?;
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut p = self
            .topo
            .spawn_in(Host::Sensor, &s(&self.setup.detector), &argv)?;
        p.wait_for_line("capturing on", START)?;
        let sent = self.inject(pps)?;
        std::thread::sleep(Duration::from_millis(500));
        let done = p.stop(STOP)?;
        let r: Value = std::fs::read(&report)
            .map_err(|e| {
                err(format!(
                    "{}: {e}; stderr: {}",
                    report.display(),
                    done.stderr
                ))
            })
            .and_then(|b| serde_json::from_slice(&b).map_err(err))?;
        let received = r["counters"]["modbus_frames"].as_u64().unwrap_or(0);
        let capture = r["capture"].clone();
        Ok((
            Point {
                asked_pps: pps,
                sent: sent.frames,
                sent_pps: sent.pps,
                received: received.min(sent.frames),
            },
            json!({"capture": capture, "frames": r["counters"]["frames"]}),
        ))
    }

    /// The AF_PACKET reader while the sender runs at `pps`.
    fn afpacket(&self, pps: u64) -> std::io::Result<(Point, Value)> {
        self.reset_napi()?;
        let mut p = self.topo.spawn_in(
            Host::Sensor,
            &s(&self.setup.bench),
            &["afpacket-reader", "--iface", self.topo.sensor_iface()],
        )?;
        p.wait_for_line("reading on", START)?;
        let sent = self.inject(pps)?;
        std::thread::sleep(Duration::from_millis(500));
        let done = p.stop(STOP)?;
        let v: Value = serde_json::from_str(done.stdout.trim())
            .map_err(|e| err(format!("afpacket reader: {e}; stderr: {}", done.stderr)))?;
        let received = v["frames"].as_u64().unwrap_or(0);
        Ok((
            Point {
                asked_pps: pps,
                sent: sent.frames,
                sent_pps: sent.pps,
                received: received.min(sent.frames),
            },
            v,
        ))
    }

    /// The highest rate with no loss: `runs` sends at full speed first
    /// (the figures at the sender's maximum); if none loses a frame, those
    /// are the zero-loss figures too. Otherwise step down from the slowest
    /// lossy rate the sender reached until a step loses none, then bisect
    /// between the two (one point).
    fn zero_loss(
        &self,
        mut measure: impl FnMut(u64) -> std::io::Result<(Point, Value)>,
    ) -> std::io::Result<(Vec<Point>, Vec<Point>, Vec<Value>)> {
        let mut log = Vec::new();
        let mut maxima = Vec::new();
        for _ in 0..self.setup.runs.max(1) {
            let (p, d) = measure(0)?;
            log.push(json!({"point": p.json(), "details": d}));
            eprintln!(
                "    full speed: sent {:.0}/s, received {:.0}/s, lost {}",
                p.sent_pps,
                p.received_pps(),
                p.lost()
            );
            maxima.push(p);
        }
        if maxima.iter().all(|p| p.lost() == 0) {
            return Ok((maxima.clone(), maxima, log));
        }
        let Some(max) = maxima
            .iter()
            .filter(|p| p.lost() > 0)
            .min_by(|a, b| a.sent_pps.total_cmp(&b.sent_pps))
            .copied()
        else {
            return Ok((maxima.clone(), maxima, log));
        };
        let mut bad = max.sent_pps;
        let mut good: Option<Point> = None;
        let mut rate = max.received_pps() * 0.95;
        for _ in 0..self.setup.steps {
            let (p, d) = measure(rate.max(1000.0) as u64)?;
            log.push(json!({"point": p.json(), "details": d}));
            eprintln!(
                "    asked {:.0}/s: sent {:.0}/s, received {:.0}/s, lost {}",
                rate,
                p.sent_pps,
                p.received_pps(),
                p.lost()
            );
            if p.lost() == 0 {
                if good.is_none_or(|g| p.sent_pps > g.sent_pps) {
                    good = Some(p);
                }
            } else {
                bad = bad.min(rate);
            }
            rate = match good {
                Some(g) => (g.sent_pps + bad) / 2.0,
                None => rate * 0.7,
            };
        }
        let good = good.unwrap_or(Point {
            asked_pps: 0,
            sent: 0,
            sent_pps: 0.0,
            received: 0,
        });
        Ok((vec![good], maxima, log))
    }
}

/// The two rows of a receiver: its zero-loss rate and what it took in at
/// the sender's maximum, with the loss.
fn receiver_rows(name: &str, note: &str, ok: &[Point], max: &[Point]) -> [Row; 2] {
    let lost: u64 = max.iter().map(Point::lost).sum();
    let sent: u64 = max.iter().map(|p| p.sent).sum();
    let search = if ok.len() == max.len() {
        "no loss at full speed"
    } else {
        "found by stepping the sender's rate down"
    };
    [
        rate_row(
            &format!("live: {name}, zero-loss rate"),
            ok,
            &format!("{note}; {search}"),
        ),
        rate_row(
            &format!("live: {name} at the sender's maximum"),
            max,
            &format!(
                "received frames/s; {} runs, lost {lost} of {sent}",
                max.len()
            ),
        ),
    ]
}

fn rate_row(name: &str, points: &[Point], note: &str) -> Row {
    let mut r = Row::new("live", name);
    let fps: Vec<f64> = points.iter().map(Point::received_pps).collect();
    r.frames_per_s = Summary::of(&fps);
    r.ns_per_frame = r.frames_per_s.as_ref().map(|s| s.map(|f| 1e9 / f));
    r.note = note.to_string();
    r
}

/// Run everything; returns the rows and the raw measurements.
pub fn run(setup: &Setup) -> std::io::Result<(Vec<Row>, Value)> {
    let _ = cleanup_stale("mbbench");
    let topo = Topology::create(&unique_prefix("mbbench"))?;
    let b = Bench { topo, setup };
    let runs = setup.runs.max(1);
    let mut rows = Vec::new();
    let mut log = json!({});

    eprintln!("  no program attached ({runs} runs)");
    let kernel: Vec<Point> = (0..runs)
        .map(|_| b.interface_rate())
        .collect::<Result<_, _>>()?;
    rows.push(rate_row(
        "live: interface, no program (kernel drops)",
        &kernel,
        "frames/s span0 counts at the sender's full speed",
    ));

    eprintln!("  XDP drop program ({runs} runs)");
    b.xdp(true)?;
    let xdp: Result<Vec<Point>, _> = (0..runs).map(|_| b.interface_rate()).collect();
    b.xdp(false)?;
    let xdp = xdp?;
    rows.push(rate_row(
        "live: XDP drop (the XDP ceiling)",
        &xdp,
        "native XDP, XDP_DROP on everything",
    ));

    eprintln!("  modbus-detect (XDP + AF_XDP, all rules)");
    let mut run = 0;
    let (sensor_ok, sensor_max, sensor_log) = b.zero_loss(|pps| {
        run += 1;
        b.sensor(pps, run, &[])
    })?;
    // What busy polling buys (modbus_detect::source::xdp::busy_poll).
    eprintln!("  modbus-detect --busy-poll 0 (RX threads sleep in poll(2))");
    let (sleep_ok, sleep_max, sleep_log) = b.zero_loss(|pps| {
        run += 1;
        b.sensor(pps, run, &["--busy-poll", "0"])
    })?;
    eprintln!("  AF_PACKET TPACKET_V3 reader, cBPF 'tcp port 502'");
    let (pkt_ok, pkt_max, pkt_log) = b.zero_loss(|pps| b.afpacket(pps))?;

    rows.extend(receiver_rows(
        "modbus-detect",
        "highest sender rate with every frame through the shards",
        &sensor_ok,
        &sensor_max,
    ));
    rows.extend(receiver_rows(
        "modbus-detect --busy-poll 0",
        "busy polling off: RX thread sleeps in poll(2), NAPI in softirq",
        &sleep_ok,
        &sleep_max,
    ));
    rows.extend(receiver_rows(
        "AF_PACKET TPACKET_V3 + cBPF",
        "what a libpcap-class reader takes in without loss",
        &pkt_ok,
        &pkt_max,
    ));

    let med = |v: &[Point]| {
        Summary::of(&v.iter().map(Point::received_pps).collect::<Vec<_>>())
            .map_or(f64::NAN, |s| s.median)
    };
    let ceiling = med(&xdp);
    let ratios = json!({
        "sensor_zero_loss_over_xdp_ceiling": med(&sensor_ok) / ceiling,
        "sensor_zero_loss_over_afpacket_zero_loss": med(&sensor_ok) / med(&pkt_ok),
        "sensor_zero_loss_over_kernel": med(&sensor_ok) / med(&kernel),
        "xdp_ceiling_over_kernel": ceiling / med(&kernel),
        "afpacket_zero_loss_over_xdp_ceiling": med(&pkt_ok) / ceiling,
        "sensor_max_over_afpacket_max": med(&sensor_max) / med(&pkt_max),
        "busy_poll_over_no_busy_poll": med(&sensor_ok) / med(&sleep_ok),
    });
    let mut r = Row::new("live", "live: ratios");
    r.note = format!(
        "modbus-detect zero-loss / XDP ceiling = {:.2} (target >= 0.9); / AF_PACKET zero-loss = {:.2} (target >= 3); / kernel drop = {:.2}; at full speed modbus-detect / AF_PACKET = {:.2}; busy polling on / off = {:.2}",
        ratios["sensor_zero_loss_over_xdp_ceiling"].as_f64().unwrap_or(f64::NAN),
        ratios["sensor_zero_loss_over_afpacket_zero_loss"].as_f64().unwrap_or(f64::NAN),
        ratios["sensor_zero_loss_over_kernel"].as_f64().unwrap_or(f64::NAN),
        ratios["sensor_max_over_afpacket_max"].as_f64().unwrap_or(f64::NAN),
        ratios["busy_poll_over_no_busy_poll"].as_f64().unwrap_or(f64::NAN),
    );
    eprintln!("  {}", r.note);
    rows.push(r);
    log["kernel"] = json!(kernel.iter().map(Point::json).collect::<Vec<_>>());
    log["xdp_drop"] = json!(xdp.iter().map(Point::json).collect::<Vec<_>>());
    log["sensor"] = json!(sensor_log);
    log["sensor_no_busy_poll"] = json!(sleep_log);
    log["afpacket"] = json!(pkt_log);
    log["ratios"] = ratios;
    log["frames_per_send"] = json!(setup.frames);
    b.topo.teardown()?;
    Ok((rows, log))
}
