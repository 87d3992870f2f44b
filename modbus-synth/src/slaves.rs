//! The simulated slaves: register contents and how a slave answers.
//!
//! Responses carry plausible process values: bounded, slowly drifting, and
//! reflecting earlier writes, so value-based checks see realistic data.

use super::pdu::{
    put_adu, put_diagnostics, put_exception, put_read_device_id_request,
    put_read_device_id_response, put_read_registers_response, put_read_request,
    put_write_multiple_registers_request, put_write_multiple_registers_response,
    put_write_single_register,
};
use super::plan::AduKind;
use modbus_common::rng::Rng;

/// Unit ids each slave answers for (1..=UNITS), as behind a small gateway.
pub const UNITS: u8 = 3;
/// Highest start address a generated request uses.
pub const MAX_ADDR: u16 = 99;
pub const MAX_READ_QTY: u16 = 20;
pub const MAX_WRITE_QTY: u16 = 10;
/// Process values stay within 0..=MAX_VALUE (e.g. tenths of a percent).
pub const MAX_VALUE: u16 = 1000;

/// Registers per table: enough for the furthest read the generator makes.
const TABLE_LEN: usize = (MAX_ADDR + MAX_READ_QTY) as usize;
/// Holding (FC 3) and input (FC 4) tables.
const TABLES: usize = 2;
/// One drift step per register read, with probability 1/DRIFT_ODDS each way.
const DRIFT_ODDS: u64 = 8;

const EXCEPTION_ILLEGAL_DATA_ADDRESS: u8 = 2;
/// FC 43 / MEI 14 read code 1: basic device identification.
const BASIC_DEVICE_ID: u8 = 1;
const DEVICE_OBJECTS: [(u8, &[u8]); 3] = [(0, b"Synth Controls"), (1, b"SC-1000"), (2, b"V2.1.4")];
/// FC 8 sub-function 1 with data 0x0000: restart, keeping the event log.
const RESTART_COMMUNICATIONS: u16 = 1;
const RESTART_DATA: [u8; 2] = [0, 0];

/// A request to issue and answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// FC 3 or 4; `fail` answers with exception 2 instead of data.
    Read {
        fc: u8,
        addr: u16,
        qty: u16,
        fail: bool,
    },
    WriteSingle {
        addr: u16,
        value: u16,
    },
    /// FC 16 of `values` (see [`Bank::respond`]).
    WriteMultiple {
        addr: u16,
    },
    /// FC 43 / MEI 14, basic identification.
    DeviceId,
    /// FC 8 sub-function 1, Restart Communications Option.
    Restart,
}

/// Where a request goes: which slave (for its registers), unit id and
/// transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dest {
    pub slave: usize,
    pub unit: u8,
    pub tid: u16,
}

/// Appends the request ADU for `op`; `values` are an FC 16's registers.
pub fn put_request(buf: &mut Vec<u8>, to: Dest, op: Op, values: &[u16]) {
    put_adu(buf, to.tid, 0, to.unit, |b| match op {
        Op::Read { fc, addr, qty, .. } => put_read_request(b, fc, addr, qty),
        Op::WriteSingle { addr, value } => put_write_single_register(b, addr, value),
        Op::WriteMultiple { addr } => put_write_multiple_registers_request(b, addr, values),
        Op::DeviceId => put_read_device_id_request(b, BASIC_DEVICE_ID, 0),
        Op::Restart => put_diagnostics(b, RESTART_COMMUNICATIONS, &RESTART_DATA),
    });
}

/// All register tables of all slaves, flattened into one allocation.
#[derive(Debug, Clone)]
pub struct Bank {
    values: Vec<u16>,
}

impl Bank {
    pub fn new(slaves: usize, rng: &mut Rng) -> Self {
        let len = slaves * usize::from(UNITS) * TABLES * TABLE_LEN;
        let values = (0..len).map(|_| rng.range_u16(0, MAX_VALUE)).collect();
        Bank { values }
    }

    /// Reads `qty` registers at `addr` of the table `fc` addresses (3:
    /// holding, otherwise input), drifting each by at most one first so that
    /// values change slowly between polls. The range is clamped to the
    /// table: the generator never asks beyond it.
    fn read(&mut self, rng: &mut Rng, to: Dest, fc: u8, addr: u16, qty: u16) -> &[u16] {
        let table = usize::from(fc != 3);
        let regs = self.range_mut(to.slave, to.unit, table, addr, qty);
        for v in regs.iter_mut() {
            match rng.below(DRIFT_ODDS) {
                0 => *v = v.saturating_sub(1),
                1 => *v = (*v + 1).min(MAX_VALUE),
                _ => {}
            }
        }
        regs
    }

    /// Carries out `op` on the slave and appends its response ADU to `buf`;
    /// `values` are an FC 16's registers, as given to [`put_request`].
    pub fn respond(
        &mut self,
        rng: &mut Rng,
        buf: &mut Vec<u8>,
        to: Dest,
        op: Op,
        values: &[u16],
    ) -> AduKind {
        if let Op::Read { fc, fail: true, .. } = op {
            put_adu(buf, to.tid, 0, to.unit, |b| {
                put_exception(b, fc, EXCEPTION_ILLEGAL_DATA_ADDRESS)
            });
            return AduKind::Exception;
        }
        put_adu(buf, to.tid, 0, to.unit, |b| match op {
            Op::Read { fc, addr, qty, .. } => {
                put_read_registers_response(b, fc, self.read(rng, to, fc, addr, qty))
            }
            Op::WriteSingle { addr, value } => {
                self.write(to, addr, &[value]);
                put_write_single_register(b, addr, value);
            }
            Op::WriteMultiple { addr } => {
                self.write(to, addr, values);
                put_write_multiple_registers_response(
                    b,
                    addr,
                    u16::try_from(values.len()).unwrap_or(u16::MAX),
                );
            }
            Op::DeviceId => put_read_device_id_response(b, BASIC_DEVICE_ID, &DEVICE_OBJECTS),
            Op::Restart => put_diagnostics(b, RESTART_COMMUNICATIONS, &RESTART_DATA),
        });
        AduKind::Response
    }

    /// Stores written values into the holding table.
    fn write(&mut self, to: Dest, addr: u16, values: &[u16]) {
        let qty = u16::try_from(values.len()).unwrap_or(u16::MAX);
        let regs = self.range_mut(to.slave, to.unit, 0, addr, qty);
        let n = regs.len();
        regs.copy_from_slice(&values[..n]);
    }

    fn range_mut(
        &mut self,
        slave: usize,
        unit: u8,
        table: usize,
        addr: u16,
        qty: u16,
    ) -> &mut [u16] {
        let unit_idx = usize::from(unit.clamp(1, UNITS) - 1);
        let base = ((slave * usize::from(UNITS) + unit_idx) * TABLES + table) * TABLE_LEN;
        let start = usize::from(addr).min(TABLE_LEN);
        let end = (start + usize::from(qty)).min(TABLE_LEN);
        &mut self.values[base + start..base + end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TO: Dest = Dest {
        slave: 1,
        unit: 3,
        tid: 9,
    };

    #[test]
    fn reads_stay_bounded_and_drift_slowly() {
        let mut rng = Rng::new(1);
        let mut bank = Bank::new(2, &mut rng);
        let mut prev = bank.read(&mut rng, TO, 4, MAX_ADDR, MAX_READ_QTY).to_vec();
        for _ in 0..1_000 {
            let now = bank.read(&mut rng, TO, 4, MAX_ADDR, MAX_READ_QTY).to_vec();
            assert_eq!(now.len(), usize::from(MAX_READ_QTY));
            for (a, b) in prev.iter().zip(&now) {
                assert!(*b <= MAX_VALUE);
                assert!(a.abs_diff(*b) <= 1);
            }
            prev = now;
        }
    }

    #[test]
    fn writes_land_in_the_holding_table_only() {
        let mut rng = Rng::new(2);
        let mut bank = Bank::new(2, &mut rng);
        let input_before = bank.range_mut(1, 3, 1, 10, 2).to_vec();
        let mut resp = Vec::new();
        let op = Op::WriteMultiple { addr: 10 };
        assert_eq!(
            bank.respond(&mut rng, &mut resp, TO, op, &[500, 501]),
            AduKind::Response
        );
        assert_eq!(resp, vec![0, 9, 0, 0, 0, 6, 3, 16, 0, 10, 0, 2]);
        assert_eq!(bank.range_mut(1, 3, 0, 10, 2).to_vec(), vec![500, 501]);
        assert_eq!(bank.range_mut(1, 3, 1, 10, 2).to_vec(), input_before);
    }

    #[test]
    fn failing_reads_answer_illegal_data_address() {
        let mut rng = Rng::new(3);
        let mut bank = Bank::new(2, &mut rng);
        let op = Op::Read {
            fc: 4,
            addr: 0,
            qty: 1,
            fail: true,
        };
        let mut req = Vec::new();
        put_request(&mut req, TO, op, &[]);
        assert_eq!(req, vec![0, 9, 0, 0, 0, 6, 3, 4, 0, 0, 0, 1]);
        let mut resp = Vec::new();
        assert_eq!(
            bank.respond(&mut rng, &mut resp, TO, op, &[]),
            AduKind::Exception
        );
        assert_eq!(resp, vec![0, 9, 0, 0, 0, 3, 3, 0x84, 2]);
    }
}
