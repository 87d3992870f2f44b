//! DEVICE_ENUMERATION: diagnostic and identification requests (FC 7, 8, 17, 43).
//!
//! HIGH for reconnaissance; CRITICAL for FC 8 sub-function 10, clear
//! counters and diagnostic register (erases evidence). Sub-functions 1
//! (restart communications) and 4 (force listen-only mode: the device goes
//! silent) change the device's operating mode: PLC_PROGRAM_OPERATION
//! (`program.rs`) reports them.

use super::{AlertSink, RequestCtx};
use crate::alert::{AlertKind, Detail, Severity};
use crate::modbus::pdu::Request;

/// FC 8 sub-function that erases the device's diagnostic evidence.
const CLEAR_COUNTERS: u16 = 10;
/// FC 8 sub-functions that change the operating mode (see `program.rs`).
const MODE_CHANGES: [u16; 2] = [1, 4];

pub struct Enumeration;

impl Enumeration {
    pub fn on_request(&self, ctx: &RequestCtx<'_>, out: &mut impl AlertSink) {
        let (severity, detail) = match *ctx.req {
            Request::ReadExceptionStatus | Request::ReportServerId => (
                Severity::High,
                Detail::Enumeration {
                    sub_function: None,
                    mei: None,
                },
            ),
            Request::Diagnostics { sub, .. } if MODE_CHANGES.contains(&sub) => return,
            Request::Diagnostics { sub, .. } => (
                if sub == CLEAR_COUNTERS {
                    Severity::Critical
                } else {
                    Severity::High
                },
                Detail::Enumeration {
                    sub_function: Some(sub),
                    mei: None,
                },
            ),
            Request::EncapsulatedInterface { mei, .. } => (
                Severity::High,
                Detail::Enumeration {
                    sub_function: None,
                    mei: Some(mei),
                },
            ),
            _ => return,
        };
        let mut alert = ctx.alert(AlertKind::DeviceEnumeration, severity);
        alert.detail = detail;
        out.raise(alert, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::*;

    fn severity_of(r: Request<'_>) -> Option<Severity> {
        let mut out = Collected::default();
        Enumeration.on_request(&req(0, ep(1, 2), &r), &mut out);
        out.0.first().map(|(a, _)| a.severity)
    }

    #[test]
    fn identification_codes_are_high() {
        assert_eq!(
            severity_of(Request::ReadExceptionStatus),
            Some(Severity::High)
        );
        assert_eq!(severity_of(Request::ReportServerId), Some(Severity::High));
        assert_eq!(
            severity_of(Request::EncapsulatedInterface {
                mei: 14,
                data: &[1, 0]
            }),
            Some(Severity::High)
        );
        assert_eq!(
            severity_of(Request::Diagnostics {
                sub: 0,
                data: &[0, 0]
            }),
            Some(Severity::High)
        );
    }

    #[test]
    fn clearing_counters_is_critical_and_mode_changes_are_left_to_program_operations() {
        assert_eq!(
            severity_of(Request::Diagnostics {
                sub: 10,
                data: &[0, 0]
            }),
            Some(Severity::Critical)
        );
        for sub in [1, 4] {
            assert_eq!(
                severity_of(Request::Diagnostics { sub, data: &[0, 0] }),
                None,
                "sub-function {sub}"
            );
        }
    }

    #[test]
    fn ordinary_codes_are_ignored() {
        assert_eq!(severity_of(Request::ReadCoils { addr: 0, qty: 8 }), None);
        assert_eq!(severity_of(Request::GetCommEventCounter), None);
    }
}
