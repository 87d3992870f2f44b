//! `modbus-lab plc`: a small slave with 64 entities in each table, served by
//! tokio-modbus. It answers what a real PLC answers, exceptions included, so
//! that captures carry genuine response traffic for every attack.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_modbus::bytes::Bytes;
use tokio_modbus::prelude::{ConformityLevel, DeviceIdObject, ReadCode};
use tokio_modbus::server::tcp::Server;
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use super::{io_msg, LabError, Outcome};

/// Entities in each of the four tables.
pub const TABLE_SIZE: usize = 64;
/// Initial value of holding register 0, the set point the HMI moves.
pub const INITIAL_SETPOINT: u16 = 120;

/// The four tables of one unit.
struct Tables {
    holding: [u16; TABLE_SIZE],
    input: [u16; TABLE_SIZE],
    coils: [bool; TABLE_SIZE],
    discrete: [bool; TABLE_SIZE],
}

impl Tables {
    fn new() -> Self {
        let mut holding = [0u16; TABLE_SIZE];
        let mut input = [0u16; TABLE_SIZE];
        for (i, (h, r)) in holding.iter_mut().zip(input.iter_mut()).enumerate() {
            *h = 100 + i as u16;
            *r = 1000 + i as u16;
        }
        holding[0] = INITIAL_SETPOINT;
        let mut coils = [false; TABLE_SIZE];
        let mut discrete = [false; TABLE_SIZE];
        for i in 0..TABLE_SIZE {
            coils[i] = i % 2 == 0;
            discrete[i] = i % 3 == 0;
        }
        Self {
            holding,
            input,
            coils,
            discrete,
        }
    }
}

/// Everything the PLC holds: tables per unit, and what it has answered.
struct Plc {
    units: BTreeMap<u8, Tables>,
    connections: u64,
    requests: BTreeMap<u8, u64>,
    exceptions: BTreeMap<u8, u64>,
}

type Answer = Result<Option<Response>, ExceptionCode>;

/// `start..start+qty` inside a table, with `qty` between 1 and `max`
/// (exception 3 otherwise, as the spec orders the checks: quantity first).
fn range(start: u16, qty: usize, max: usize) -> Result<std::ops::Range<usize>, ExceptionCode> {
    if qty == 0 || qty > max {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let start = usize::from(start);
    if start + qty > TABLE_SIZE {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    Ok(start..start + qty)
}

fn index(addr: u16) -> Result<usize, ExceptionCode> {
    range(addr, 1, 1).map(|r| r.start)
}

/// Device identification objects 0-2 (the basic category).
fn device_id_objects() -> Vec<DeviceIdObject> {
    [
        (0u8, &b"modbus-lab"[..]),
        (1, b"LAB-PLC-64"),
        (2, env!("CARGO_PKG_VERSION").as_bytes()),
    ]
    .into_iter()
    .map(|(id, v)| DeviceIdObject {
        id,
        value: Bytes::copy_from_slice(v),
    })
    .collect()
}

/// The FC 17 response data: byte count, server id, run indicator (on),
/// additional data. Encoded by hand because tokio-modbus 0.17 frames its own
/// `Response::ReportServerId` one byte short in the MBAP length field (its
/// size is `3 + data` for `4 + data` bytes), which cuts the ADU and desyncs
/// the stream.
fn report_server_id(unit: u8) -> Bytes {
    const ADDITIONAL: &[u8] = b"modbus-lab PLC";
    let mut pdu = vec![2 + ADDITIONAL.len() as u8, unit, 0xFF];
    pdu.extend_from_slice(ADDITIONAL);
    Bytes::from(pdu)
}

impl Tables {
    #[allow(clippy::too_many_lines)]
    fn answer(&mut self, unit: u8, req: Request<'_>) -> Answer {
        use Request as Q;
        use Response as R;
        let resp = match req {
            Q::ReadCoils(a, n) => R::ReadCoils(self.coils[range(a, n.into(), 2000)?].to_vec()),
            Q::ReadDiscreteInputs(a, n) => {
                R::ReadDiscreteInputs(self.discrete[range(a, n.into(), 2000)?].to_vec())
            }
            Q::ReadHoldingRegisters(a, n) => {
                R::ReadHoldingRegisters(self.holding[range(a, n.into(), 125)?].to_vec())
            }
            Q::ReadInputRegisters(a, n) => {
                R::ReadInputRegisters(self.input[range(a, n.into(), 125)?].to_vec())
            }
            Q::WriteSingleCoil(a, v) => {
                self.coils[index(a)?] = v;
                R::WriteSingleCoil(a, v)
            }
            Q::WriteSingleRegister(a, v) => {
                self.holding[index(a)?] = v;
                R::WriteSingleRegister(a, v)
            }
            Q::WriteMultipleCoils(a, vs) => {
                let r = range(a, vs.len(), 1968)?;
                self.coils[r].copy_from_slice(&vs);
                R::WriteMultipleCoils(a, vs.len() as u16)
            }
            Q::WriteMultipleRegisters(a, vs) => {
                let r = range(a, vs.len(), 123)?;
                self.holding[r].copy_from_slice(&vs);
                R::WriteMultipleRegisters(a, vs.len() as u16)
            }
            Q::MaskWriteRegister(a, and, or) => {
                let i = index(a)?;
                self.holding[i] = (self.holding[i] & and) | (or & !and);
                R::MaskWriteRegister(a, and, or)
            }
            Q::ReadWriteMultipleRegisters(ra, rn, wa, vs) => {
                let rr = range(ra, rn.into(), 125)?;
                let wr = range(wa, vs.len(), 121)?;
                self.holding[wr].copy_from_slice(&vs);
                R::ReadWriteMultipleRegisters(self.holding[rr].to_vec())
            }
            Q::ReportServerId => R::Custom(0x11, report_server_id(unit)),
            Q::ReadDeviceIdentification(code, object) => {
                let mut objects = device_id_objects();
                if code == ReadCode::Specific {
                    objects.retain(|o| o.id == object);
                    if objects.is_empty() {
                        return Err(ExceptionCode::IllegalDataAddress);
                    }
                }
                R::ReadDeviceIdentification(
                    tokio_modbus::prelude::ReadDeviceIdentificationResponse {
                        read_code: code,
                        conformity_level: ConformityLevel::BasicIdentification,
                        more_follows: false,
                        next_object_id: 0,
                        device_id_objects: objects,
                    },
                )
            }
            // Diagnostics: echo for return-query-data (0), restart
            // communications (1) and clear counters (10), as a device does.
            Q::Custom(8, data) => match data.get(..2) {
                Some([0, 0 | 1 | 10]) => R::Custom(8, Bytes::copy_from_slice(&data)),
                Some(_) => return Err(ExceptionCode::IllegalFunction),
                None => return Err(ExceptionCode::IllegalDataValue),
            },
            Q::Custom(..) => return Err(ExceptionCode::IllegalFunction),
        };
        Ok(Some(resp))
    }
}

/// One per connection; they share the PLC.
struct PlcService(Arc<Mutex<Plc>>);

impl Service for PlcService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Answer>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let mut plc = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let fc = req.request.function_code().value();
        *plc.requests.entry(fc).or_default() += 1;
        let answer = match plc.units.get_mut(&req.slave) {
            Some(tables) => tables.answer(req.slave, req.request),
            // No such unit behind this address: what a gateway answers.
            None => Err(ExceptionCode::GatewayTargetDevice),
        };
        if answer.is_err() {
            *plc.exceptions.entry(fc).or_default() += 1;
        }
        std::future::ready(answer)
    }
}

/// Serve on `listen` until SIGTERM or SIGINT, then report what was served.
pub async fn run(listen: SocketAddr, units: Vec<u8>) -> Outcome {
    match serve(listen, units).await {
        Ok(summary) => Outcome::ok(summary),
        Err(e) => Outcome::failed(None, e),
    }
}

async fn serve(listen: SocketAddr, units: Vec<u8>) -> Result<Value, LabError> {
    let cannot = |e: io::Error| LabError(format!("cannot listen on {listen}: {}", io_msg(&e)));
    let mut term = signal(SignalKind::terminate()).map_err(cannot)?;
    let mut int = signal(SignalKind::interrupt()).map_err(cannot)?;
    let listener = TcpListener::bind(listen).await.map_err(cannot)?;
    let bound = listener.local_addr().map_err(cannot)?;
    let plc = Arc::new(Mutex::new(Plc {
        units: units.iter().map(|&u| (u, Tables::new())).collect(),
        connections: 0,
        requests: BTreeMap::new(),
        exceptions: BTreeMap::new(),
    }));
    let server = Server::new(listener);
    let on_connected = |stream, _peer| {
        let plc = Arc::clone(&plc);
        async move {
            plc.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .connections += 1;
            Ok(Some((PlcService(plc), stream)))
        }
    };
    // A peer that sends garbage or resets loses its connection; the PLC
    // carries on, as a real one would.
    let on_process_error = |e: io::Error| eprintln!("modbus-lab plc: connection dropped: {e}");
    println!("listening on {bound}");
    tokio::select! {
        res = server.serve(&on_connected, on_process_error) => {
            res.map_err(|e| LabError(format!("{bound}: accept failed: {}", io_msg(&e))))?;
        }
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let plc = plc.lock().unwrap_or_else(PoisonError::into_inner);
    let total = |m: &BTreeMap<u8, u64>| m.values().sum::<u64>();
    Ok(json!({
        "role": "plc",
        "listen": bound.to_string(),
        "units": units,
        "connections": plc.connections,
        "requests": plc.requests,
        "exceptions": plc.exceptions,
        "requests_total": total(&plc.requests),
        "exceptions_total": total(&plc.exceptions),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn illegal_addresses_and_quantities() {
        let mut t = Tables::new();
        assert_eq!(
            t.answer(1, Request::ReadHoldingRegisters(500, 1)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            t.answer(1, Request::ReadHoldingRegisters(60, 5)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            t.answer(1, Request::ReadCoils(0, 0)),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            t.answer(1, Request::Custom(7, Default::default())),
            Err(ExceptionCode::IllegalFunction)
        );
        assert_eq!(
            t.answer(1, Request::ReadHoldingRegisters(0, 1)),
            Ok(Some(Response::ReadHoldingRegisters(vec![INITIAL_SETPOINT])))
        );
        let diag = Request::Custom(8, vec![0, 1, 0, 0].into());
        assert_eq!(
            t.answer(1, diag),
            Ok(Some(Response::Custom(8, Bytes::from_static(&[0, 1, 0, 0]))))
        );
    }

    #[test]
    fn writes_land_in_the_tables() {
        let mut t = Tables::new();
        t.answer(1, Request::WriteSingleRegister(20, 5000)).unwrap();
        t.answer(1, Request::WriteMultipleRegisters(2, vec![7, 8].into()))
            .unwrap();
        assert_eq!(
            t.answer(1, Request::ReadHoldingRegisters(2, 1)),
            Ok(Some(Response::ReadHoldingRegisters(vec![7])))
        );
        assert_eq!(t.holding[20], 5000);
    }
}
