//! The asset inventory end to end: devices and pairs in the report, what
//! devices say about themselves and their hardware addresses checked
//! against tshark, round-trip times and address ranges on captures written
//! here with known values, `--inventory` files (JSON and CSV), and
//! `diff-inventory` between runs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use modbus_synth::{adu, read_request, write_single_register, Conversation};
use modbus_tests::{detector_binary, fixture, run, tshark_fields, write_capture};
use serde_json::Value;

const MS: u64 = 1_000_000;
const T0: u64 = 1_700_000_000_000_000_000;
const HMI: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 20);
const PLC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);

/// tshark's fields of the frames matching `filter`, one row per frame,
/// several values of a field joined by `|`.
fn tshark(capture: &Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut rows = tshark_fields(capture, filter, fields, '|');
    rows.remove(0);
    rows
}

fn device<'a>(report: &'a Value, ip: &str) -> &'a Value {
    report["inventory"]["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["ip"] == ip)
        .unwrap_or_else(|| panic!("no device {ip}"))
}

/// What a slave answers to FC 43/14 and FC 17 is in its device entry, as
/// tshark decodes it (the latest answer of each kind).
#[test]
fn identification_is_what_tshark_decodes() {
    for capture in [
        "lab/device_enumeration.pcap",
        "real/icsnpp_modbus_example.pcap",
    ] {
        let path = fixture(capture);
        let r = run(&["--pcap", path.to_str().unwrap()]);
        assert_eq!(r.exit, Ok(0), "{capture}");
        let report = r.report();
        let rows = tshark(
            &path,
            "modbus.object_str_value",
            &["ip.src", "modbus.object_id", "modbus.object_str_value"],
        );
        assert!(!rows.is_empty(), "{capture}: tshark sees no identification");
        for row in &rows {
            let objects = &device(report, &row[0])["identification"]["objects"];
            let names = ["vendor_name", "product_code", "major_minor_revision"];
            for (id, value) in row[1].split('|').zip(row[2].split('|')) {
                let id: usize = id.parse().unwrap();
                assert_eq!(
                    objects[names[id]], value,
                    "{capture} {} object {id}",
                    row[0]
                );
            }
        }
        for row in tshark(
            &path,
            "modbus.func_code == 17 && modbus.data",
            &["ip.src", "modbus.data"],
        ) {
            let d = device(report, &row[0]);
            if d["roles"].as_array().unwrap().iter().any(|r| r == "slave") {
                // tshark's data starts with the byte count.
                assert_eq!(
                    d["identification"]["server_id_hex"],
                    row[1][2..],
                    "{capture}"
                );
            }
        }
    }
    let r = run(&[
        "--pcap",
        fixture("real/quickdraw_modbus_test_data_part1.pcap")
            .to_str()
            .unwrap(),
    ]);
    let id = &device(r.report(), "10.0.0.3")["identification"];
    assert_eq!(id["server_id_text"], "Wingpath Limited");
}

/// Every device's hardware addresses are the Ethernet sources tshark shows
/// for its Modbus frames.
#[test]
fn macs_are_the_ethernet_sources() {
    for capture in [
        "lab/rogue_master.pcap",
        "real/quickdraw_modbus_test_data_part1.pcap",
        "real/iti_mb2.pcap",
    ] {
        let path = fixture(capture);
        let r = run(&["--pcap", path.to_str().unwrap()]);
        let mut theirs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for row in tshark(&path, "tcp.port == 502", &["ip.src", "eth.src"]) {
            theirs
                .entry(row[0].clone())
                .or_default()
                .insert(row[1].clone());
        }
        let devices = r.report()["inventory"]["devices"].as_array().unwrap();
        assert!(!devices.is_empty(), "{capture}");
        for d in devices {
            let ip = d["ip"].as_str().unwrap();
            let ours: BTreeSet<String> = d["macs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap().to_string())
                .collect();
            assert_eq!(Some(&ours), theirs.get(ip), "{capture} {ip}");
        }
    }
}

/// Answers 2 ms after the request 98 times and 40 ms twice: mean 2.76 ms,
/// median 2 ms, p99 40 ms (quantiles within 1/16). Reads of 0-9 and
/// 100-119 answered with data, one of 500 answered with an exception (not
/// a range read), a write to 7 (a range written).
fn polled_capture(path: &Path) {
    write_capture(path, |w| {
        let mut c = Conversation::new(HMI, 40_000, PLC);
        c.handshake(w, T0)?;
        let mut t = T0 + 10 * MS;
        for i in 0..100u16 {
            let (addr, qty) = if i % 2 == 0 { (0, 10) } else { (100, 20) };
            c.send(w, t, true, &adu(i, 1, &read_request(3, addr, qty)))?;
            let mut resp = vec![3, (qty * 2) as u8];
            resp.resize(2 + usize::from(qty) * 2, 0);
            let delay = if i < 2 { 40 * MS } else { 2 * MS };
            c.send(w, t + delay, false, &adu(i, 1, &resp))?;
            t += 100 * MS;
        }
        c.send(w, t, true, &adu(200, 1, &read_request(3, 500, 1)))?;
        c.send(w, t + MS, false, &adu(200, 1, &[0x83, 2]))?;
        c.send(
            w,
            t + 10 * MS,
            true,
            &adu(201, 1, &write_single_register(7, 42)),
        )?;
        c.send(
            w,
            t + 11 * MS,
            false,
            &adu(201, 1, &write_single_register(7, 42)),
        )
    });
}

#[test]
fn round_trip_times_and_address_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("poll.pcap");
    polled_capture(&cap);
    let r = run(&["--pcap", cap.to_str().unwrap()]);
    let pairs = r.report()["inventory"]["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 1);
    let p = &pairs[0];
    assert_eq!(p["requests"], 102);
    assert_eq!(p["responses"], 102);
    assert_eq!(p["exceptions"], 1);
    let rtt = &p["rtt_ms"];
    assert_eq!(rtt["samples"], 101);
    let close = |v: &Value, want: f64| (v.as_f64().unwrap() - want).abs() <= want / 16.0;
    assert!(close(&rtt["p50"], 2.0), "{rtt}");
    assert!(close(&rtt["p99"], 40.0), "{rtt}");
    assert!(close(&rtt["max"], 40.0), "{rtt}");
    // (98 * 2 + 2 * 40 + 1 (the write)) / 101.
    assert!(
        (rtt["mean"].as_f64().unwrap() - 277.0 / 101.0).abs() < 1e-3,
        "{rtt}"
    );
    assert_eq!(
        p["reads"]["holding_registers"],
        serde_json::json!(["0-9", "100-119"])
    );
    assert_eq!(p["writes"]["holding_registers"], serde_json::json!(["7"]));
    assert_eq!(p["ranges_coarsened"], false);
    let plc = device(r.report(), "10.0.0.10");
    assert_eq!(plc["roles"], serde_json::json!(["slave"]));
    assert_eq!(plc["macs"], serde_json::json!(["02:00:0a:00:00:0a"]));
    assert_eq!(plc["unit_ids"], serde_json::json!([1]));
    assert_eq!(
        plc["function_codes_served"],
        serde_json::json!({"3": 101, "6": 1})
    );
    assert_eq!(
        device(r.report(), "10.0.0.20")["function_codes_used"],
        serde_json::json!({"3": 101, "6": 1})
    );
}

/// A slave that answers FC 43/14 with text made to attack whoever reads
/// the inventory: a spreadsheet formula, markup, a terminal escape.
fn hostile_identification(path: &Path, vendor: &[u8]) {
    write_capture(path, |w| {
        let mut c = Conversation::new(HMI, 40_001, PLC);
        c.handshake(w, T0)?;
        c.send(w, T0 + 10 * MS, true, &adu(1, 1, &[43, 14, 1, 0]))?;
        let mut resp = vec![43, 14, 1, 1, 0, 0, 2];
        resp.extend_from_slice(&[0, vendor.len() as u8]);
        resp.extend_from_slice(vendor);
        resp.extend_from_slice(&[1, 6]);
        resp.extend_from_slice(b"<b>x</b>"[..6].as_ref());
        c.send(w, T0 + 11 * MS, false, &adu(1, 1, &resp))
    });
}

#[test]
fn inventory_files_are_json_and_safe_csv() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("id.pcap");
    hostile_identification(&cap, b"=cmd|' /C calc'!A0\x1b[31m");
    let inv = dir.path().join("inv.json");
    let r = run(&[
        "--pcap",
        cap.to_str().unwrap(),
        "--inventory",
        inv.to_str().unwrap(),
    ]);
    assert_eq!(r.exit, Ok(0));
    let file: Value = serde_json::from_slice(&std::fs::read(&inv).unwrap()).unwrap();
    assert_eq!(file["schema"], "modbus-detect-inventory");
    assert_eq!(file["complete"], true);
    assert_eq!(file["devices"], r.report()["inventory"]["devices"]);
    let wrapped = serde_json::json!({ "inventory": file.clone() });
    let vendor = &device(&wrapped, "10.0.0.10")["identification"]["vendor_name"];
    assert_eq!(
        vendor, "=cmd|' /C calc'!A0\u{1b}[31m",
        "kept as sent in JSON"
    );
    let devices = std::fs::read_to_string(dir.path().join("inv.devices.csv")).unwrap();
    let pairs = std::fs::read_to_string(dir.path().join("inv.pairs.csv")).unwrap();
    let header = |t: &str| t.lines().next().unwrap().to_string();
    assert_eq!(
        header(&devices),
        modbus_detect::output::inventory::DEVICE_COLUMNS.join(",")
    );
    assert_eq!(
        header(&pairs),
        modbus_detect::output::inventory::PAIR_COLUMNS.join(",")
    );
    let row = devices
        .lines()
        .find(|l| l.starts_with("10.0.0.10,"))
        .expect("the PLC's row");
    // RFC 4180 quoting, and a leading apostrophe so that no spreadsheet
    // runs the vendor name as a formula.
    assert!(row.contains(",'=cmd|' /C calc'!A0\u{1b}[31m,"), "{row}");
    assert!(row.contains(",<b>x</,"), "{row}");
}

fn diff(a: &Path, b: &Path) -> (i32, String) {
    let out = Command::new(detector_binary())
        .arg("diff-inventory")
        .args([a, b])
        .output()
        .expect("the detector runs");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn diff_inventory_names_what_is_new_changed_and_gone() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    // A baseline learned from the lab's normal traffic, against a run with
    // a rogue master.
    let base = d("baseline.json");
    let r = run(&[
        "--pcap",
        fixture("lab/normal_baseline.pcap").to_str().unwrap(),
        "--baseline-mode",
        "--baseline-file",
        base.to_str().unwrap(),
    ]);
    assert_eq!(r.exit, Ok(0));
    let rogue = d("rogue.json");
    run(&[
        "--pcap",
        fixture("lab/rogue_master.pcap").to_str().unwrap(),
        "--output",
        rogue.to_str().unwrap(),
    ]);
    let (code, text) = diff(&base, &rogue);
    assert_eq!(code, 1, "{text}");
    assert_eq!(
        text,
        "new device 192.168.50.66 (master)\nnew pair 192.168.50.66 -> 192.168.50.10 (function codes 3)\n"
    );
    let (code, text) = diff(&rogue, &rogue);
    assert_eq!((code, text.as_str()), (0, ""));
    let (code, text) = diff(&rogue, &base);
    assert_eq!(code, 1);
    assert!(text.contains("gone device 192.168.50.66\n"), "{text}");
    // The same device telling another vendor name, as --inventory files.
    let (a, b) = (d("a.pcap"), d("b.pcap"));
    hostile_identification(&a, b"ACME");
    hostile_identification(&b, b"EVIL");
    for (cap, inv) in [(&a, d("a.inv.json")), (&b, d("b.inv.json"))] {
        run(&[
            "--pcap",
            cap.to_str().unwrap(),
            "--inventory",
            inv.to_str().unwrap(),
        ]);
    }
    let (code, text) = diff(&d("a.inv.json"), &d("b.inv.json"));
    assert_eq!(code, 1);
    assert_eq!(
        text,
        "changed identification 10.0.0.10 vendor_name: \"ACME\" -> \"EVIL\"\n"
    );
    // Not an inventory: one line naming the file, exit 3.
    let out = Command::new(detector_binary())
        .args(["diff-inventory"])
        .arg(d("a.pcap"))
        .arg(&rogue)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("modbus-detect: error: ")
            && err.contains("a.pcap")
            && err.lines().count() == 1,
        "{err}"
    );
}

/// An address taken over in the middle of a long-lived connection (ARP
/// spoofing for a man in the middle): the slave's frames come from a
/// second MAC address, and the device lists both.
#[test]
fn a_mac_address_taken_over_mid_connection_is_listed() {
    use modbus_synth::{TCP_ACK, TCP_PSH};
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("spoof.pcap");
    write_capture(&cap, |w| {
        let mut c = Conversation::new(HMI, 40_002, PLC);
        c.handshake(w, T0)?;
        let req = adu(1, 1, &read_request(3, 0, 1));
        let resp = adu(1, 1, &[3, 2, 0, 5]);
        c.send(w, T0 + 10 * MS, true, &req)?;
        c.send(w, T0 + 11 * MS, false, &resp)?;
        let req = adu(2, 1, &read_request(3, 0, 1));
        c.send(w, T0 + 20 * MS, true, &req)?;
        // The answer from another host's MAC address.
        c.mangled_at(w, T0 + 21 * MS, true, 0, TCP_ACK | TCP_PSH, &resp, |f| {
            f[6..12].copy_from_slice(&[0x02, 0xde, 0xad, 0xbe, 0xef, 0x01]);
        })
    });
    // Answers from five addresses (the PLC's own never follows the
    // request): four are kept per side, the fifth's frame counted.
    let many = dir.path().join("many.pcap");
    write_capture(&many, |w| {
        let mut c = Conversation::new(HMI, 40_003, PLC);
        c.handshake(w, T0)?;
        let req = adu(1, 1, &read_request(3, 0, 1));
        c.send(w, T0 + 10 * MS, true, &req)?;
        let resp = adu(1, 1, &[3, 2, 0, 5]);
        for (i, last) in (1..=5u8).enumerate() {
            let at = T0 + (11 + i as u64) * MS;
            c.mangled_at(w, at, true, 0, TCP_ACK | TCP_PSH, &resp, |f| {
                f[6..12].copy_from_slice(&[0x02, 0xde, 0xad, 0xbe, 0xef, last]);
            })?;
        }
        Ok(())
    });
    let r = run(&["--pcap", many.to_str().unwrap()]);
    let inv = &r.report()["inventory"];
    assert_eq!(
        device(r.report(), "10.0.0.10")["macs"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(inv["macs_dropped"], 1, "the frame from the 5th address");
    let r = run(&["--pcap", cap.to_str().unwrap()]);
    assert_eq!(r.exit, Ok(0));
    let plc = device(r.report(), "10.0.0.10");
    assert_eq!(
        plc["macs"],
        serde_json::json!(["02:00:0a:00:00:0a", "02:de:ad:be:ef:01"])
    );
    assert_eq!(r.report()["counters"]["responses"], 2);
}
