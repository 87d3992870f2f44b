//! The original ML pipeline, reproduced (`modbus-detect ml ...`): per-ADU
//! features of captures, an Isolation Forest and a One-Class SVM trained on
//! those of normal traffic, the anomalies of other captures labelled by the
//! original's rules and written as one CSV report per model.
//!
//! It is a batch tool beside the detector, kept for its users and as the
//! yardstick `modbus-detect eval` measures our own models against: it
//! judges every ADU alone (time since the previous ADU, frame length,
//! source address, function code), where `detect::ml` judges what a
//! master does with a slave over a window. Faithful to the original in
//! its features, parameters and labels; what differs is said where it is
//! done (one row per ADU rather than per packet, bounded training memory).
//!
//! - [`model`]: the two models, their scaler and thresholds, as one file;
//! - [`label`]: the original's threat labels of an anomalous ADU;
//! - [`table`]: reading feature files, writing the per-model reports;
//! - [`command`]: the subcommands (`features`, `train`, `score`, `run`).

pub mod command;
pub mod label;
pub mod model;
pub mod table;

use std::net::IpAddr;

use crate::modbus::record::AduRecord;

/// Number of features the original's models see.
pub const DIMS: usize = 4;

/// Their names, in vector order: columns of the feature files.
pub const FEATURE_NAMES: [&str; DIMS] =
    ["delta_time", "packet_length", "src_ip_int", "function_code"];

/// One ADU's features, in [`FEATURE_NAMES`] order.
pub type Features = [f64; DIMS];

/// Seconds since the previous ADU of the capture (`last_ns`, updated): 0
/// for the first, and for the ADUs of one frame.
pub fn delta_time(last_ns: &mut Option<u64>, ts_ns: u64) -> f64 {
    let delta = last_ns.map_or(0.0, |l| ts_ns.saturating_sub(l) as f64 / 1e9);
    *last_ns = Some(ts_ns);
    delta
}

/// An address as the original's `int(ipaddress.ip_address(s))` (an IPv6
/// address, which the original never met, loses its low bits as a float).
pub fn ip_as_number(ip: IpAddr) -> f64 {
    match ip {
        IpAddr::V4(v4) => f64::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6) as f64,
    }
}

/// The features of one decoded ADU, `delta` seconds after the previous.
pub fn features_of(r: &AduRecord, delta: f64) -> Features {
    [
        delta,
        f64::from(r.frame_len),
        ip_as_number(r.src),
        f64::from(r.function_code),
    ]
}
