//! ROGUE_MODBUS_MASTER and UNAUTHORIZED_MODBUS_WRITE: who may talk, who may write.

use std::net::IpAddr;
use std::sync::Arc;

use super::{AlertSink, RequestCtx};
use crate::alert::{AlertKind, Severity};
use crate::config::DetectConfig;

/// The access rules' verdict on a master (see [`super::PairFacts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessFacts {
    /// Not an authorized master (and a list of them was given).
    pub rogue: bool,
    /// Not an authorized writer (and a list of them was given).
    pub unauthorized_writer: bool,
}

pub struct AccessRules {
    cfg: Arc<DetectConfig>,
}

impl AccessRules {
    pub fn new(cfg: Arc<DetectConfig>) -> Self {
        AccessRules { cfg }
    }

    /// What the rules decide about a master, whatever it sends.
    pub fn facts(&self, master: IpAddr) -> AccessFacts {
        AccessFacts {
            rogue: self
                .cfg
                .authorized_masters
                .as_ref()
                .is_some_and(|m| !m.contains(master)),
            unauthorized_writer: self
                .cfg
                .authorized_writers
                .as_ref()
                .is_some_and(|w| !w.contains(master)),
        }
    }

    pub fn on_request(&self, ctx: &RequestCtx<'_>, out: &mut impl AlertSink) {
        let facts = ctx
            .facts
            .access
            .unwrap_or_else(|| self.facts(ctx.ep.master));
        if facts.rogue {
            out.raise(ctx.alert(AlertKind::RogueMaster, Severity::Critical), 1);
        }
        if facts.unauthorized_writer && ctx.req.is_write() {
            out.raise(
                ctx.alert(AlertKind::UnauthorizedWrite, Severity::Critical),
                1,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::*;
    use crate::modbus::pdu::Request;

    fn rules(masters: Option<&[u8]>, writers: Option<&[u8]>) -> AccessRules {
        let set = |l: &[u8]| {
            l.iter()
                .map(|x| std::net::IpAddr::from([10, 0, 0, *x]))
                .collect()
        };
        AccessRules::new(Arc::new(DetectConfig {
            authorized_masters: masters.map(set),
            authorized_writers: writers.map(set),
            ..DetectConfig::default()
        }))
    }

    #[test]
    fn rogue_master_only_when_a_list_is_given() {
        let read = Request::ReadHoldingRegisters { addr: 0, qty: 1 };
        let mut out = Collected::default();
        rules(None, None).on_request(&req(0, ep(9, 1), &read), &mut out);
        assert!(out.0.is_empty());
        rules(Some(&[20]), None).on_request(&req(0, ep(20, 1), &read), &mut out);
        assert!(out.0.is_empty());
        rules(Some(&[20]), None).on_request(&req(0, ep(9, 1), &read), &mut out);
        assert_eq!(out.count(AlertKind::RogueMaster), 1);
        assert_eq!(out.0[0].0.severity, Severity::Critical);
        assert_eq!(out.0[0].0.function_code, 3);
    }

    #[test]
    fn every_write_code_from_a_non_writer() {
        let r = rules(Some(&[20, 40]), Some(&[20]));
        let writes = [
            Request::WriteSingleCoil {
                addr: 0,
                value: 0xff00,
            },
            Request::WriteSingleRegister { addr: 0, value: 1 },
            Request::WriteMultipleCoils {
                addr: 0,
                qty: 1,
                values: &[1],
            },
            Request::WriteMultipleRegisters {
                addr: 0,
                qty: 1,
                values: &[0, 1],
            },
            Request::MaskWriteRegister {
                addr: 0,
                and_mask: 0,
                or_mask: 1,
            },
            Request::ReadWriteMultipleRegisters {
                read_addr: 0,
                read_qty: 1,
                write_addr: 0,
                write_qty: 1,
                values: &[0, 1],
            },
        ];
        let mut out = Collected::default();
        for w in &writes {
            r.on_request(&req(0, ep(40, 1), w), &mut out);
            r.on_request(&req(0, ep(20, 1), w), &mut out);
        }
        assert_eq!(out.count(AlertKind::UnauthorizedWrite), 6);
        assert_eq!(out.count(AlertKind::RogueMaster), 0);
        let read = Request::ReadHoldingRegisters { addr: 0, qty: 1 };
        r.on_request(&req(0, ep(40, 1), &read), &mut out);
        assert_eq!(out.count(AlertKind::UnauthorizedWrite), 6);
    }
}
