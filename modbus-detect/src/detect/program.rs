//! PLC_PROGRAM_OPERATION: requests that change what a PLC runs, or whether
//! it runs. Schneider's UMAS (FC 90) carries the engineering software's
//! operations inside Modbus: reservation, program upload and download,
//! start and stop (function codes as published by Schneider's UMAS
//! analyses and decoded by Wireshark's and Zeek ICSNPP's UMAS parsers);
//! Modicon 584/984 programming uses FC 125 and 126; FC 8 sub-functions 1
//! (restart communications) and 4 (force listen-only mode) take a device
//! off the process network. Read-only UMAS (identification, monitoring,
//! keep-alive) raises nothing here.

use super::{AlertSink, RequestCtx};
use crate::alert::{AlertKind, Detail, Severity};
use crate::modbus::pdu::Request;

/// Schneider UMAS, carried as Modbus function code 90 (0x5A).
const FC_UMAS: u8 = 90;
/// Modicon 584/984 "program" and "poll program complete".
const FC_MODICON_PROGRAM: u8 = 125;
const FC_MODICON_POLL: u8 = 126;

/// An operation on a PLC's program or operating mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramOp {
    UmasTakeReservation,
    UmasReleaseReservation,
    UmasInitUpload,
    UmasUploadBlock,
    UmasEndUpload,
    UmasInitDownload,
    UmasDownloadBlock,
    UmasEndDownload,
    UmasStartPlc,
    UmasStopPlc,
    ModiconProgram,
    ModiconPollProgram,
    RestartCommunications,
    ForceListenOnly,
}

impl ProgramOp {
    /// The operation in words, for the alert.
    pub fn name(self) -> &'static str {
        match self {
            ProgramOp::UmasTakeReservation => "UMAS take PLC reservation",
            ProgramOp::UmasReleaseReservation => "UMAS release PLC reservation",
            ProgramOp::UmasInitUpload => "UMAS initialize program upload",
            ProgramOp::UmasUploadBlock => "UMAS upload program block",
            ProgramOp::UmasEndUpload => "UMAS end program upload",
            ProgramOp::UmasInitDownload => "UMAS initialize program download",
            ProgramOp::UmasDownloadBlock => "UMAS download program block",
            ProgramOp::UmasEndDownload => "UMAS end program download",
            ProgramOp::UmasStartPlc => "UMAS start PLC",
            ProgramOp::UmasStopPlc => "UMAS stop PLC",
            ProgramOp::ModiconProgram => "Modicon program (FC 125)",
            ProgramOp::ModiconPollProgram => "Modicon poll program complete (FC 126)",
            ProgramOp::RestartCommunications => "restart communications (FC 8/1)",
            ProgramOp::ForceListenOnly => "force listen-only mode (FC 8/4)",
        }
    }

    /// Told apart in aggregation: each operation is its own report entry.
    pub fn code(self) -> u16 {
        self as u16 + 1
    }

    /// Reservations precede engineering work; the rest change the program
    /// or the operating mode.
    fn severity(self) -> Severity {
        match self {
            ProgramOp::UmasTakeReservation | ProgramOp::UmasReleaseReservation => Severity::High,
            _ => Severity::Critical,
        }
    }

    /// The operation of a UMAS request: the byte after the session key.
    fn umas(data: &[u8]) -> Option<ProgramOp> {
        Some(match data.get(1)? {
            0x10 => ProgramOp::UmasTakeReservation,
            0x11 => ProgramOp::UmasReleaseReservation,
            0x30 => ProgramOp::UmasInitUpload,
            0x31 => ProgramOp::UmasUploadBlock,
            0x32 => ProgramOp::UmasEndUpload,
            0x33 => ProgramOp::UmasInitDownload,
            0x34 => ProgramOp::UmasDownloadBlock,
            0x35 => ProgramOp::UmasEndDownload,
            0x40 => ProgramOp::UmasStartPlc,
            0x41 => ProgramOp::UmasStopPlc,
            _ => return None,
        })
    }

    /// The operation a request performs, if it is one.
    pub fn of(req: &Request<'_>) -> Option<ProgramOp> {
        match *req {
            Request::Other { fc: FC_UMAS, data } => ProgramOp::umas(data),
            Request::Other {
                fc: FC_MODICON_PROGRAM,
                ..
            } => Some(ProgramOp::ModiconProgram),
            Request::Other {
                fc: FC_MODICON_POLL,
                ..
            } => Some(ProgramOp::ModiconPollProgram),
            Request::Diagnostics { sub: 1, .. } => Some(ProgramOp::RestartCommunications),
            Request::Diagnostics { sub: 4, .. } => Some(ProgramOp::ForceListenOnly),
            _ => None,
        }
    }
}

pub struct ProgramOperations;

impl ProgramOperations {
    pub fn on_request(&self, ctx: &RequestCtx<'_>, out: &mut impl AlertSink) {
        let Some(op) = ProgramOp::of(ctx.req) else {
            return;
        };
        let mut alert = ctx.alert(AlertKind::PlcProgramOperation, op.severity());
        alert.detail = Detail::Program { op };
        out.raise(alert, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::*;

    fn raised(r: Request<'_>) -> Option<(Severity, ProgramOp)> {
        let mut out = Collected::default();
        ProgramOperations.on_request(&req(0, ep(1, 2), &r), &mut out);
        out.0.first().and_then(|(a, _)| match a.detail {
            Detail::Program { op } => Some((a.severity, op)),
            _ => None,
        })
    }

    /// A UMAS request: session key 0, then the operation.
    fn umas(code: u8) -> Option<(Severity, ProgramOp)> {
        let data = [0x00, code, 0x00];
        raised(Request::Other {
            fc: 90,
            data: &data,
        })
    }

    #[test]
    fn umas_program_and_mode_changes_are_named() {
        for (code, want) in [
            (0x41, (Severity::Critical, ProgramOp::UmasStopPlc)),
            (0x40, (Severity::Critical, ProgramOp::UmasStartPlc)),
            (0x34, (Severity::Critical, ProgramOp::UmasDownloadBlock)),
            (0x31, (Severity::Critical, ProgramOp::UmasUploadBlock)),
            (0x10, (Severity::High, ProgramOp::UmasTakeReservation)),
        ] {
            assert_eq!(umas(code), Some(want), "UMAS {code:#04x}");
        }
        // Read-only UMAS: identification, PLC info, keep-alive, reads.
        for code in [0x01u8, 0x02, 0x03, 0x04, 0x12, 0x20, 0x22, 0x50, 0x58] {
            assert_eq!(umas(code), None, "UMAS {code:#04x}");
        }
        // Too short to hold the operation.
        assert_eq!(raised(Request::Other { fc: 90, data: &[0] }), None);
    }

    #[test]
    fn modicon_programming_and_fc8_mode_changes() {
        for (r, op) in [
            (
                Request::Other { fc: 125, data: &[] },
                ProgramOp::ModiconProgram,
            ),
            (
                Request::Other { fc: 126, data: &[] },
                ProgramOp::ModiconPollProgram,
            ),
            (
                Request::Diagnostics {
                    sub: 1,
                    data: &[0, 0],
                },
                ProgramOp::RestartCommunications,
            ),
            (
                Request::Diagnostics {
                    sub: 4,
                    data: &[0, 0],
                },
                ProgramOp::ForceListenOnly,
            ),
        ] {
            assert_eq!(raised(r), Some((Severity::Critical, op)));
        }
        for r in [
            Request::Diagnostics {
                sub: 0,
                data: &[0, 0],
            },
            Request::Diagnostics {
                sub: 10,
                data: &[0, 0],
            },
            Request::ReadHoldingRegisters { addr: 0, qty: 1 },
            Request::Other {
                fc: 91,
                data: &[0, 0x41],
            },
        ] {
            assert_eq!(raised(r), None, "{r:?}");
        }
    }
}
