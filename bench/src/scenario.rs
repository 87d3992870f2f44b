//! The detection scenario every replay figure is measured with: all rules
//! on (authorized masters and writers, a register limits file, a baseline
//! learned from the capture itself), as an operator would run the sensor.

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use modbus_detect::config::baseline::Baseline;
use modbus_detect::config::limits::RegisterLimits;
use modbus_detect::config::{DetectConfig, Mode};
use modbus_detect::runtime::offline::replay;
use modbus_detect::runtime::Plan;
use modbus_detect::source::CaptureFile;
use modbus_synth::{master_addr, SynthConfig};

/// Limits on registers the synthetic masters poll and write (addresses
/// 0..=99, values 0..=1000 drifting): range and rate alerts do fire, at the
/// realistic low rate of a plant that mostly behaves.
pub const LIMITS_JSON: &str = r#"{
  "40001": {"name": "Reactor Temperature Setpoint", "min": 0, "max": 900, "unit": "C", "max_rate": 50},
  "40010": {"name": "Pump Speed", "min": 0, "max": 1000, "unit": "RPM", "max_rate": 100},
  "40043": {"name": "Valve Position", "min": 10, "max": 990, "unit": "%"},
  "30005": {"name": "Flow", "min": 0, "max": 950, "unit": "l/s", "max_rate": 20},
  "30050": {"name": "Pressure", "min": 100, "max": 800, "unit": "kPa"}
}"#;

/// The synthetic capture's masters (10.1.0.1 ...) and, of them, the writers
/// (the first half), as `modbus-synth` reports them.
pub fn masters_and_writers() -> (Vec<IpAddr>, Vec<IpAddr>) {
    let n = SynthConfig::default().masters;
    let masters: Vec<IpAddr> = (0..n).map(|i| IpAddr::V4(master_addr(i))).collect();
    let writers = masters[..usize::from(n / 2)].to_vec();
    (masters, writers)
}

/// ML window of the learned baseline (`--ml-window`'s default).
pub const ML_WINDOW_S: f64 = 5.0;

/// Learn a baseline from `capture` (what `--baseline-mode` does, ML models
/// included).
pub fn learn_baseline(capture: &CaptureFile) -> Baseline {
    let cfg = DetectConfig {
        mode: Mode::Learn,
        ..DetectConfig::default()
    };
    let stop = AtomicBool::new(false);
    let out = replay(Arc::new(cfg), capture, Plan::Inline, None, &stop, None)
        .expect("the inline plan starts no thread");
    let mut learned = Baseline::default();
    let mut samples = Vec::new();
    for s in out.shards {
        learned.merge(s.inventory.observed);
        samples.extend(s.ml_samples);
    }
    modbus_detect::detect::learn::train(&mut learned, &mut samples, ML_WINDOW_S);
    learned
}

/// Every rule on: masters, writers, limits and the given baseline (ML off:
/// `cfg.ml` turns it on where the baseline has models).
pub fn all_rules(baseline: Option<Baseline>) -> DetectConfig {
    let (masters, writers) = masters_and_writers();
    let limits = RegisterLimits::parse(LIMITS_JSON).expect("the bench limits file is valid");
    DetectConfig {
        authorized_masters: Some(masters.into_iter().collect()),
        authorized_writers: Some(writers.into_iter().collect()),
        limits_file: Some(Arc::new(limits)),
        baseline: baseline.map(Arc::new),
        ..DetectConfig::default()
    }
}
