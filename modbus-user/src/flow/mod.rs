//! Connection tracking: the bounded connection table and TCP reassembly.

pub mod reassembly;
mod table;

pub use table::FlowTable;

use std::net::IpAddr;

use crate::modbus::transaction::PendingTable;
use reassembly::Stream;

/// A connection, oriented: the server (slave) is the side on a Modbus port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub client: IpAddr,
    pub server: IpAddr,
    pub client_port: u16,
    pub server_port: u16,
}

/// Direction of a segment within its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Master to slave: requests.
    ToServer = 0,
    /// Slave to master: responses.
    ToClient = 1,
}

impl Dir {
    pub fn reverse(self) -> Dir {
        match self {
            Dir::ToServer => Dir::ToClient,
            Dir::ToClient => Dir::ToServer,
        }
    }
}

/// State of one tracked connection.
#[derive(Debug)]
pub struct Flow {
    pub key: FlowKey,
    /// Capture time of the last segment.
    pub last_ns: u64,
    /// Reassembly per direction, indexed by [`Dir`].
    pub streams: [Stream; 2],
    /// Requests waiting for their response.
    pub pending: PendingTable,
}

impl Flow {
    pub fn new(key: FlowKey, ts_ns: u64) -> Self {
        Flow {
            key,
            last_ns: ts_ns,
            streams: [Stream::default(), Stream::default()],
            pending: PendingTable::default(),
        }
    }

    /// Both directions ended.
    pub fn is_closed(&self) -> bool {
        self.streams.iter().all(Stream::is_closed)
    }
}
