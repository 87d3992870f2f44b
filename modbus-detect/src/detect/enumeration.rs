//! DEVICE_ENUMERATION: diagnostic and identification requests (FC 7, 8, 17, 43).
//!
//! HIGH for reconnaissance; CRITICAL for the FC 8 sub-functions that change
//! the device's state: 1 restart communications, 4 force listen-only mode
//! (the device goes silent), 10 clear counters and diagnostic register
//! (erases evidence).

use super::{AlertSink, RequestCtx};
use crate::alert::{AlertKind, Detail, Severity};
use crate::modbus::pdu::Request;

/// FC 8 sub-functions that change device state.
const STATE_CHANGING_DIAGNOSTICS: [u16; 3] = [1, 4, 10];

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
            Request::Diagnostics { sub, .. } => (
                if STATE_CHANGING_DIAGNOSTICS.contains(&sub) {
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
    fn state_changing_diagnostics_are_critical() {
        for sub in [1, 4, 10] {
            assert_eq!(
                severity_of(Request::Diagnostics { sub, data: &[0, 0] }),
                Some(Severity::Critical),
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
