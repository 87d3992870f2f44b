//! Connection tracking: the bounded connection table and TCP reassembly.

mod admit;
pub mod policy;
pub mod reassembly;
mod table;

pub use admit::Admission;
pub use table::FlowTable;

use std::net::IpAddr;

use crate::decode::PacketMeta;

use crate::config::baseline::PairId;
use crate::detect::PairFacts;
use crate::modbus::transaction::PendingTable;
use policy::TargetPolicy;
use reassembly::Stream;

/// A connection, oriented: the server (slave) is the side on a Modbus port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub client: IpAddr,
    pub server: IpAddr,
    pub client_port: u16,
    pub server_port: u16,
}

/// The `flow_id` of a connection's alert lines: a fixed hash (SipHash
/// with a constant key: the same in every run of a build, unlike the
/// shards' keyed tables, which need not be) of its addresses, ports and
/// first frame's time, so that two connections on the same ports are two
/// flows; below 2^53, so that JavaScript readers (the dashboard, Kibana)
/// keep it exact.
pub fn flow_id(key: &FlowKey, first_ns: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    first_ns.hash(&mut h);
    h.finish() & ((1 << 53) - 1)
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

/// A segment's direction in its connection, as the dispatcher found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    pub dir: Dir,
    /// Both ports are Modbus ports, so the ports cannot tell who is the
    /// server: `dir` is relative to the lower address (and port) taken as
    /// the server, for a key both directions share, and the shard decides
    /// the roles from the handshake or the traffic (see `shard::roles`).
    pub provisional: bool,
}

impl FlowKey {
    /// The same connection with the roles the other way round.
    pub fn swapped(&self) -> FlowKey {
        FlowKey {
            client: self.server,
            server: self.client,
            client_port: self.server_port,
            server_port: self.client_port,
        }
    }

    /// The key of a segment whose direction [`orient`] has decided: a copy
    /// of its addresses, no decision again.
    #[inline(always)]
    pub fn of(meta: &PacketMeta, dir: Dir) -> FlowKey {
        match dir {
            Dir::ToServer => FlowKey {
                client: meta.src,
                server: meta.dst,
                client_port: meta.sport,
                server_port: meta.dport,
            },
            Dir::ToClient => FlowKey {
                client: meta.dst,
                server: meta.src,
                client_port: meta.dport,
                server_port: meta.sport,
            },
        }
    }
}

/// Whether `port` is one of `ports` (`--ports`), with the usual single port
/// (502) a single comparison: `slice::contains` costs some 30 instructions
/// even on a one-element slice, and every frame asks twice, 6 % of the
/// per-frame cost before this (micro-benchmark `dispatch/port_check`).
#[inline]
pub fn is_modbus_port(ports: &[u16], port: u16) -> bool {
    match ports {
        [p] => *p == port,
        _ => ports.contains(&port),
    }
}

/// Which side of a segment is the server, decided once per frame by the
/// dispatcher (the shard key is the server) and carried to the shard with
/// the frame: the side on a Modbus port. When both are, the ports cannot
/// tell: the lower address (and port) is taken as the server for now, so
/// that both directions share one key and one shard, and the side is
/// marked provisional for the shard to decide (never IP ordering: an
/// attacker who sources from port 502 would swap the roles). `None` when
/// neither port is a Modbus port.
#[inline(always)]
pub fn orient(meta: &PacketMeta, ports: &[u16]) -> Option<Side> {
    let (dir, provisional) = match (
        is_modbus_port(ports, meta.sport),
        is_modbus_port(ports, meta.dport),
    ) {
        (false, false) => return None,
        (true, false) => (Dir::ToClient, false),
        (false, true) => (Dir::ToServer, false),
        (true, true) if (meta.dst, meta.dport) <= (meta.src, meta.sport) => (Dir::ToServer, true),
        (true, true) => (Dir::ToClient, true),
    };
    Some(Side { dir, provisional })
}

/// The server's address of a segment going `dir` (the shard key).
#[inline(always)]
pub fn server_of(meta: &PacketMeta, dir: Dir) -> IpAddr {
    match dir {
        Dir::ToServer => meta.dst,
        Dir::ToClient => meta.src,
    }
}

/// State of one tracked connection.
#[derive(Debug)]
pub struct Flow {
    pub key: FlowKey,
    /// The connection's `flow_id` in alert lines (see [`flow_id`]).
    pub id: u64,
    /// Capture time of the last segment.
    pub last_ns: u64,
    /// Reassembly per direction, indexed by [`Dir`].
    pub streams: [Stream; 2],
    /// Requests waiting for their response.
    pub pending: PendingTable,
    /// What is known of the connection's master-slave pair.
    pub pair: PairCache,
    /// The window scale each side announced in its SYN, indexed by the
    /// [`Dir`] of its segments (RFC 7323: used only when both did).
    pub wscale: [Option<u8>; 2],
    /// Whether the receiver takes a segment at all (checksums, TTL).
    pub admission: Admission,
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
    /// NON_MODBUS_TRAFFIC was raised for the connection (once for both
    /// directions).
    pub not_modbus: bool,
    /// The client's SYN was seen and none of its bytes went unseen: every
    /// request of the connection was seen, so a response that answers
    /// none is unsolicited.
    pub from_start: bool,
    /// The link-layer address each direction's frames came from last, as
    /// given to the inventory: a frame from another one (an address taken
    /// over mid-connection) is noted again; the same costs a compare.
    pub macs: [[u8; 6]; 2],
}

impl Flow {
    pub fn new(key: FlowKey, ts_ns: u64) -> Self {
        Flow {
            key,
            id: flow_id(&key, ts_ns),
            last_ns: ts_ns,
            streams: [Stream::default(), Stream::default()],
            pending: PendingTable::default(),
            pair: PairCache::default(),
            wscale: [None, None],
            admission: Admission::default(),
        }
    }

    /// The receivers' stacks resolve overlapping copies by these policies:
    /// the server's for the requests, the client's for the responses.
    pub fn with_policies(mut self, server: TargetPolicy, client: TargetPolicy) -> Self {
        self.streams = [Stream::new(server), Stream::new(client)];
        self
    }

    /// The receive window a segment going `dir` advertises, in bytes: its
    /// window field, scaled as the handshake agreed (never on a SYN, RFC
    /// 7323). `None` when the scale is unknown (no handshake seen): the
    /// field alone could understate the window by up to 2^14.
    pub fn advertised_window(&self, dir: Dir, window: u16, syn: bool) -> Option<u32> {
        if syn {
            return Some(u32::from(window));
        }
        match (
            self.wscale[dir as usize],
            self.wscale[dir.reverse() as usize],
        ) {
            (Some(shift), Some(_)) => Some(u32::from(window) << shift),
            _ if self.handshake_seen() => Some(u32::from(window)),
            _ => None,
        }
    }

    /// Both SYNs were seen (both streams started by one).
    fn handshake_seen(&self) -> bool {
        self.streams.iter().all(Stream::started_by_syn)
    }

    /// Both directions ended.
    pub fn is_closed(&self) -> bool {
        self.streams.iter().all(Stream::is_closed)
    }
}
