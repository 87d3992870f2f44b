//! What the console knows of the fleet, built from the events the sensors
//! published: each sensor's health, every alert line (the newest
//! [`MAX_ALERTS`]), the merged inventory (a device seen by several sensors
//! is one asset), and the alerts only the fleet can raise: one rogue
//! master seen at several sites, one device (by MAC address) seen at
//! several sites. Every table is bounded; what is left out is counted.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use crate::output::inventory::InventoryFile;

/// Alert lines kept (the oldest go first, counted).
pub const MAX_ALERTS: usize = 100_000;
/// Sensors, devices and rogue masters tracked at most.
pub const MAX_SENSORS: usize = 4096;
pub const MAX_DEVICES: usize = 65_536;

/// One sensor's health.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sensor {
    pub name: String,
    /// Time of its latest event (its own clock: the line's timestamp).
    pub last_seen: Option<String>,
    pub alert_lines: u64,
    pub stats_events: u64,
    pub inventories: u64,
    /// From its latest stats event: frames, alerts, every drop.
    pub frames: Option<u64>,
    pub kernel_drops: Option<u64>,
    pub alerts_dropped: Option<u64>,
    pub publish_dropped: Option<u64>,
    /// Devices in its latest inventory.
    pub devices: usize,
    /// Frames and alerts per second, between two stats events at least a
    /// second of its uptime apart.
    pub frames_per_s: Option<f64>,
    pub alerts_per_s: Option<f64>,
    /// The stats event the rates are measured from: uptime, frames, alerts.
    #[serde(skip)]
    rate_base: Option<(u64, u64, u64)>,
}

impl Sensor {
    /// A stats event's uptime and totals: the rates since the base, once
    /// a second or more has passed (then this is the new base). A sensor
    /// that started again (its uptime went back) starts a new base.
    fn rate(&mut self, uptime: u64, frames: u64, alerts: u64) {
        match self.rate_base {
            Some((u0, f0, a0)) if uptime > u0 => {
                let dt = (uptime - u0) as f64;
                self.frames_per_s = Some(frames.saturating_sub(f0) as f64 / dt);
                self.alerts_per_s = Some(alerts.saturating_sub(a0) as f64 / dt);
                self.rate_base = Some((uptime, frames, alerts));
            }
            Some((u0, _, _)) if uptime == u0 => {}
            _ => self.rate_base = Some((uptime, frames, alerts)),
        }
    }
}

/// A device as the fleet sees it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Asset {
    pub ip: Option<IpAddr>,
    pub macs: BTreeSet<String>,
    pub roles: BTreeSet<String>,
    pub sensors: BTreeSet<String>,
    pub identification: Option<Value>,
}

/// An alert only the fleet can raise.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FleetAlert {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub subject: String,
    pub sensors: Vec<String>,
    pub description: String,
}

/// The fleet.
#[derive(Debug, Default)]
pub struct Fleet {
    pub sensors: BTreeMap<String, Sensor>,
    /// (sensor, line), oldest first.
    pub alerts: VecDeque<(String, Value)>,
    /// Latest inventory of each sensor.
    inventories: BTreeMap<String, InventoryFile>,
    /// Rogue masters (ROGUE_MODBUS_MASTER sources) per sensor.
    rogues: BTreeMap<IpAddr, BTreeSet<String>>,
    /// Messages read, and those left out: not an event, over a bound.
    pub messages: u64,
    pub undecodable: u64,
    pub alerts_evicted: u64,
    pub left_out: u64,
}

impl Fleet {
    /// One published message: its subject `modbus.<sensor>.<kind>` and bytes.
    pub fn apply(&mut self, subject: &str, payload: &[u8]) {
        self.messages += 1;
        let mut parts = subject.splitn(3, '.');
        let (Some("modbus"), Some(sensor), Some(kind)) = (parts.next(), parts.next(), parts.next())
        else {
            self.undecodable += 1;
            return;
        };
        if !self.sensors.contains_key(sensor) && self.sensors.len() >= MAX_SENSORS {
            self.left_out += 1;
            return;
        }
        let s = self
            .sensors
            .entry(sensor.to_string())
            .or_insert_with(|| Sensor {
                name: sensor.to_string(),
                ..Sensor::default()
            });
        match kind {
            "inventory" => {
                let Ok(file) = serde_json::from_slice::<InventoryFile>(payload) else {
                    self.undecodable += 1;
                    return;
                };
                s.inventories += 1;
                s.devices = file.inventory.devices.len();
                self.inventories.insert(sensor.to_string(), file);
            }
            "alerts" | "stats" => {
                let Ok(line) = serde_json::from_slice::<Value>(payload) else {
                    self.undecodable += 1;
                    return;
                };
                if let Some(t) = line["timestamp"].as_str() {
                    s.last_seen = Some(t.to_string());
                }
                if kind == "stats" {
                    s.stats_events += 1;
                    let ours = &line["modbus_detect"];
                    s.frames = ours["counters"]["frames"].as_u64();
                    s.kernel_drops = line["stats"]["capture"]["kernel_drops"].as_u64();
                    if let (Some(up), Some(frames), Some(alerts)) = (
                        line["stats"]["uptime"].as_u64(),
                        s.frames,
                        ours["alerts_total"].as_u64(),
                    ) {
                        s.rate(up, frames, alerts);
                    }
                    s.alerts_dropped = ours["alerts_dropped_table_full"].as_u64();
                    s.publish_dropped = ours["publish"].as_object().map(|p| {
                        p.get("spool_dropped").and_then(Value::as_u64).unwrap_or(0)
                            + p.get("queue_full_drops")
                                .and_then(Value::as_u64)
                                .unwrap_or(0)
                    });
                    return;
                }
                s.alert_lines += 1;
                let rogue = line["alert"]["signature_id"].is_number()
                    && line["modbus_detect"]["type"] == "ROGUE_MODBUS_MASTER";
                if let (true, Some(ip)) =
                    (rogue, line["src_ip"].as_str().and_then(|i| i.parse().ok()))
                {
                    if self.rogues.contains_key(&ip) || self.rogues.len() < MAX_DEVICES {
                        self.rogues
                            .entry(ip)
                            .or_default()
                            .insert(sensor.to_string());
                    } else {
                        self.left_out += 1;
                    }
                }
                if self.alerts.len() >= MAX_ALERTS {
                    self.alerts.pop_front();
                    self.alerts_evicted += 1;
                }
                self.alerts.push_back((sensor.to_string(), line));
            }
            _ => self.undecodable += 1,
        }
    }

    /// The merged inventory: one asset per IP address, with every sensor
    /// that saw it.
    pub fn assets(&self) -> Vec<Asset> {
        let mut by_ip: BTreeMap<IpAddr, Asset> = BTreeMap::new();
        for (sensor, file) in &self.inventories {
            for d in &file.inventory.devices {
                if !by_ip.contains_key(&d.ip) && by_ip.len() >= MAX_DEVICES {
                    continue;
                }
                let a = by_ip.entry(d.ip).or_insert_with(|| Asset {
                    ip: Some(d.ip),
                    ..Asset::default()
                });
                a.macs.extend(d.macs.iter().cloned());
                a.roles.extend(d.roles.iter().cloned());
                a.sensors.insert(sensor.clone());
                if a.identification.is_none() {
                    a.identification = d
                        .identification
                        .as_ref()
                        .and_then(|i| serde_json::to_value(i).ok());
                }
            }
        }
        by_ip.into_values().collect()
    }

    /// Alerts only the fleet can raise.
    pub fn fleet_alerts(&self) -> Vec<FleetAlert> {
        let mut out = Vec::new();
        for (ip, sensors) in &self.rogues {
            if sensors.len() > 1 {
                out.push(FleetAlert {
                    kind: "ROGUE_MASTER_AT_SEVERAL_SITES",
                    subject: ip.to_string(),
                    sensors: sensors.iter().cloned().collect(),
                    description: format!(
                        "Rogue Modbus master {ip} seen by {} sensors: one host probing several sites, or one address reused",
                        sensors.len()
                    ),
                });
            }
        }
        // A MAC address behind different IP addresses at different sites.
        let mut by_mac: BTreeMap<&str, BTreeSet<(&str, IpAddr)>> = BTreeMap::new();
        for (sensor, file) in &self.inventories {
            for d in &file.inventory.devices {
                for m in &d.macs {
                    by_mac
                        .entry(m.as_str())
                        .or_default()
                        .insert((sensor.as_str(), d.ip));
                }
            }
        }
        for (mac, seen) in by_mac {
            let ips: BTreeSet<IpAddr> = seen.iter().map(|(_, ip)| *ip).collect();
            let sensors: BTreeSet<&str> = seen.iter().map(|(s, _)| *s).collect();
            if ips.len() > 1 && sensors.len() > 1 {
                out.push(FleetAlert {
                    kind: "DEVICE_MOVED",
                    subject: mac.to_string(),
                    sensors: sensors.iter().map(|s| s.to_string()).collect(),
                    description: format!(
                        "MAC address {mac} seen as {} at {} sites: a device moved or was cloned",
                        ips.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                        sensors.len()
                    ),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alert(src: &str, kind: &str) -> Vec<u8> {
        json!({"timestamp": "2026-12-03T10:00:00.000000+0000", "src_ip": src,
               "alert": {"signature_id": 1}, "modbus_detect": {"type": kind}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn sensors_alerts_and_cross_site_rogues() {
        let mut f = Fleet::default();
        f.apply(
            "modbus.a.alerts",
            &alert("10.0.0.66", "ROGUE_MODBUS_MASTER"),
        );
        f.apply(
            "modbus.b.alerts",
            &alert("10.0.0.66", "ROGUE_MODBUS_MASTER"),
        );
        f.apply(
            "modbus.b.alerts",
            &alert("10.0.0.7", "UNAUTHORIZED_MODBUS_WRITE"),
        );
        f.apply("other.subject", b"{}");
        f.apply("modbus.a.alerts", b"not json");
        assert_eq!(f.sensors["a"].alert_lines, 1);
        assert_eq!(f.sensors["b"].alert_lines, 2);
        assert_eq!(f.undecodable, 2);
        let x = f.fleet_alerts();
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].subject, "10.0.0.66");
        assert_eq!(x[0].sensors, ["a", "b"]);
    }

    /// An inventory snapshot with one device.
    fn inventory(ip: &str, mac: &str) -> Vec<u8> {
        use crate::output::inventory::{Device, InventorySection};
        let device = Device {
            ip: ip.parse().expect("an address"),
            macs: vec![mac.into()],
            roles: vec!["slave".into()],
            unit_ids: vec![1],
            first_seen: None,
            last_seen: None,
            function_codes_used: BTreeMap::new(),
            function_codes_served: BTreeMap::new(),
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
            identification: None,
        };
        let section = InventorySection {
            devices: vec![device],
            ..InventorySection::default()
        };
        serde_json::to_vec(&InventoryFile::new("x".into(), true, section)).expect("JSON")
    }

    #[test]
    fn a_mac_behind_other_addresses_at_other_sites_moved() {
        let mut f = Fleet::default();
        let mac = "02:00:00:00:00:05";
        f.apply("modbus.a.inventory", &inventory("10.0.0.5", mac));
        // The same address at a second site is one asset, not a move.
        f.apply("modbus.b.inventory", &inventory("10.0.0.5", mac));
        assert!(f.fleet_alerts().is_empty());
        assert_eq!(f.assets().len(), 1);
        // The newer snapshot of b: the MAC now answers as 10.0.1.9 there.
        f.apply("modbus.b.inventory", &inventory("10.0.1.9", mac));
        let x = f.fleet_alerts();
        assert_eq!(x.len(), 1, "{x:?}");
        assert_eq!(x[0].kind, "DEVICE_MOVED");
        assert_eq!(x[0].subject, mac);
        assert_eq!(x[0].sensors, ["a", "b"]);
        assert!(
            x[0].description.contains("10.0.0.5, 10.0.1.9"),
            "{}",
            x[0].description
        );
        // Each sensor's newest snapshot counts: once a's no longer holds
        // the MAC, it is seen at one site only.
        f.apply(
            "modbus.a.inventory",
            &inventory("10.0.0.5", "02:00:00:00:00:99"),
        );
        assert_eq!(f.fleet_alerts().len(), 0);
    }

    fn stats(uptime: u64, frames: u64, alerts: u64) -> Vec<u8> {
        json!({"timestamp": "2026-12-03T10:00:00.000000+0000", "event_type": "stats",
               "stats": {"uptime": uptime, "capture": {"kernel_drops": 0}},
               "modbus_detect": {"counters": {"frames": frames}, "alerts_total": alerts}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn rates_come_from_two_stats_events_a_second_apart() {
        let mut f = Fleet::default();
        f.apply("modbus.a.stats", &stats(10, 1_000, 5));
        assert_eq!(f.sensors["a"].frames_per_s, None);
        // The same second again: no rate yet.
        f.apply("modbus.a.stats", &stats(10, 1_200, 5));
        assert_eq!(f.sensors["a"].frames_per_s, None);
        f.apply("modbus.a.stats", &stats(20, 6_000, 25));
        assert_eq!(f.sensors["a"].frames_per_s, Some(500.0));
        assert_eq!(f.sensors["a"].alerts_per_s, Some(2.0));
        // Restarted: a new base, the last rates stay until the next one.
        f.apply("modbus.a.stats", &stats(3, 100, 0));
        f.apply("modbus.a.stats", &stats(5, 500, 1));
        assert_eq!(f.sensors["a"].frames_per_s, Some(200.0));
        assert_eq!(f.sensors["a"].frames, Some(500));
    }

    #[test]
    fn alerts_are_bounded_and_evictions_counted() {
        let mut f = Fleet::default();
        for _ in 0..MAX_ALERTS + 5 {
            f.apply("modbus.a.alerts", &alert("10.0.0.1", "X"));
        }
        assert_eq!(f.alerts.len(), MAX_ALERTS);
        assert_eq!(f.alerts_evicted, 5);
    }
}
