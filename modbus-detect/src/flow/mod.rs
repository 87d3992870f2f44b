//! Connection tracking: the bounded connection table and TCP reassembly.

pub mod reassembly;
mod table;

pub use table::FlowTable;

use std::net::IpAddr;

use crate::detect::baseline::PairId;
use crate::detect::PairFacts;
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
    /// What is known of the connection's master-slave pair.
    pub pair: PairCache,
}

/// What the shard works out once per connection about its master-slave
/// pair, instead of once per request (each a hash lookup keyed by two
/// addresses).
#[derive(Debug, Clone, Copy, Default)]
pub struct PairCache {
    /// The rules' facts, from the first request on.
    pub facts: Option<PairFacts>,
    /// The pair in the shard's inventory: `Some(Some(id))` recorded there,
    /// `Some(None)` left out (the inventory was full), `None` not yet seen.
    pub inventory: Option<Option<PairId>>,
}

impl Flow {
    pub fn new(key: FlowKey, ts_ns: u64) -> Self {
        Flow {
            key,
            last_ns: ts_ns,
            streams: [Stream::default(), Stream::default()],
            pending: PendingTable::default(),
            pair: PairCache::default(),
        }
    }

    /// Both directions ended.
    pub fn is_closed(&self) -> bool {
        self.streams.iter().all(Stream::is_closed)
    }
}
