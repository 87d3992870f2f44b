//! The original's threat labels of an anomalous ADU: first match wins.
//! The texts are shared with our own `ML_ANOMALY` alerts
//! (`detect::ml::ThreatLabel`), which derive the same labels from a
//! window's content.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::config::addrs::AddrSet;
use crate::detect::ml::ThreatLabel;

/// Function codes the original calls a stop command: the writes.
const STOP_CODES: [u8; 4] = [5, 6, 15, 16];
/// Faster than this after the previous ADU is the original's DoS.
const DOS_DELTA_S: f64 = 0.005;

/// Sources the FOREIGN IP label leaves alone: `--authorized-masters` (the
/// original's allow list) and every source of the normal traffic the
/// models learned (so that the PLC's own answers are not foreign).
#[derive(Debug, Default)]
pub struct Allowed {
    pub list: Option<AddrSet>,
    pub sources: BTreeSet<IpAddr>,
}

impl Allowed {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.sources.contains(&ip) || self.list.as_ref().is_some_and(|l| l.contains(ip))
    }
}

/// The label of an anomalous ADU.
pub fn label(function_code: u8, src: IpAddr, delta_time: f64, allowed: &Allowed) -> ThreatLabel {
    if STOP_CODES.contains(&function_code) {
        ThreatLabel::StopCommand
    } else if !allowed.contains(src) {
        ThreatLabel::ForeignIp
    } else if delta_time < DOS_DELTA_S {
        ThreatLabel::Dos
    } else {
        ThreatLabel::Unknown
    }
}

/// The original's four labels, in its order (the breakdown's rows).
pub const LABELS: [ThreatLabel; 4] = [
    ThreatLabel::StopCommand,
    ThreatLabel::ForeignIp,
    ThreatLabel::Dos,
    ThreatLabel::Unknown,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_wins_in_the_original_s_order() {
        let plc = IpAddr::from([192, 168, 50, 10]);
        let rogue = IpAddr::from([192, 168, 50, 66]);
        let allowed = Allowed {
            list: None,
            sources: [plc].into(),
        };
        assert_eq!(label(6, rogue, 0.0, &allowed), ThreatLabel::StopCommand);
        assert_eq!(label(3, rogue, 0.0, &allowed), ThreatLabel::ForeignIp);
        assert_eq!(label(3, plc, 0.004, &allowed), ThreatLabel::Dos);
        assert_eq!(label(3, plc, 0.005, &allowed), ThreatLabel::Unknown);
        // An exception to a write is not the write (the byte as sent).
        assert_eq!(label(0x86, plc, 1.0, &allowed), ThreatLabel::Unknown);
        let listed = Allowed {
            list: Some(AddrSet::new(["192.168.50.0/24".parse().unwrap()]).unwrap()),
            sources: BTreeSet::new(),
        };
        assert_eq!(label(3, rogue, 1.0, &listed), ThreatLabel::Unknown);
        assert_eq!(
            label(3, IpAddr::from([10, 0, 0, 1]), 1.0, &listed),
            ThreatLabel::ForeignIp
        );
    }
}
