//! The original ML pipeline's per-packet features, one row per ADU, in
//! `--csv-dir`'s `adu_features.csv`: the original's columns with its
//! names, checked against tshark's view of the same frames.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;

use modbus_tests::{detector_binary, fixture, read_json, tshark_fields};

#[test]
fn adu_features_are_the_original_s_columns_and_agree_with_tshark() {
    let dir = tempfile::tempdir().unwrap();
    let capture = fixture("lab/exception_burst.pcap");
    let csv_dir = dir.path().join("csv");
    let report = dir.path().join("r.json");
    let o = Command::new(detector_binary())
        .args(["--quiet", "--pcap"])
        .arg(&capture)
        .arg("--output")
        .arg(&report)
        .arg("--csv-dir")
        .arg(&csv_dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = read_json(&report);
    let mut rd = csv::Reader::from_path(csv_dir.join("adu_features.csv")).unwrap();
    let header: Vec<String> = rd.headers().unwrap().iter().map(str::to_string).collect();
    assert_eq!(header, modbus_detect::output::features::COLUMNS);
    assert_eq!(
        &header[..5],
        [
            "delta_time",
            "packet_length",
            "src_ip_int",
            "src_ip_str",
            "function_code"
        ],
        "the original's columns first"
    );
    let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    assert_eq!(
        rows.len() as u64,
        report["counters"]["modbus_adus"].as_u64().unwrap(),
        "one row per ADU"
    );
    // Per frame: the captured length and the function codes tshark decodes.
    let tshark = tshark_fields(
        &capture,
        "mbtcp",
        &[
            "frame.number",
            "frame.cap_len",
            "modbus.func_code",
            "frame.time_epoch",
        ],
        ',',
    );
    let frames: BTreeMap<u64, (u64, Vec<u8>, f64)> = tshark[1..]
        .iter()
        .map(|r| {
            let mut fcs: Vec<u8> = r[2].split(',').filter_map(|f| f.parse().ok()).collect();
            fcs.sort_unstable();
            (
                r[0].parse().unwrap(),
                (r[1].parse().unwrap(), fcs, r[3].parse().unwrap()),
            )
        })
        .collect();
    let mut ours: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut exceptions = 0;
    let mut last_time: Option<f64> = None;
    for r in &rows {
        let frame: u64 = r[5].parse().unwrap();
        let (len, _, time) = frames
            .get(&frame)
            .unwrap_or_else(|| panic!("frame {frame} is no Modbus frame to tshark"));
        assert_eq!(
            r[1].parse::<u64>().unwrap(),
            *len,
            "frame {frame}: packet_length"
        );
        let t: f64 = r[6].parse().unwrap();
        assert!((t - time).abs() < 1e-5, "frame {frame}: time {t} vs {time}");
        // delta_time: since the previous row.
        let delta: f64 = r[0].parse().unwrap();
        assert!(
            (delta - last_time.map_or(0.0, |l| t - l)).abs() < 2e-6,
            "frame {frame}"
        );
        last_time = Some(t);
        let ip: IpAddr = r[3].parse().unwrap();
        let IpAddr::V4(v4) = ip else {
            panic!("IPv4 capture")
        };
        assert_eq!(r[2].parse::<u32>().unwrap(), u32::from(v4));
        let fc: u8 = r[4].parse().unwrap();
        exceptions += usize::from(fc & 0x80 != 0);
        ours.entry(frame).or_default().push(fc & 0x7f);
    }
    for (frame, fcs) in &mut ours {
        fcs.sort_unstable();
        assert_eq!(*fcs, frames[frame].1, "frame {frame}: function codes");
    }
    assert_eq!(
        exceptions as u64,
        report["counters"]["exceptions"].as_u64().unwrap(),
        "exceptions keep the 0x80 bit, as the original read the byte"
    );
}
