//! The asset inventory a shard builds as traffic passes: who talks to
//! whom, with which function codes and unit ids, which addresses each
//! master read and wrote, how fast slaves answer, the hardware addresses
//! of both sides, and what devices say about themselves (FC 43/14, FC 17).
//!
//! Kept per master-slave pair: a pair lives in one shard (shards are keyed
//! by the slave), so shards never share one. Devices are put together from
//! their pairs when the inventory is written (`output::inventory`).

pub mod ranges;
pub mod rtt;

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::config::baseline::{Baseline, PairId};
use crate::modbus::device_id::{self, MEI_READ_DEVICE_ID};
use crate::modbus::pdu::{Request, Response, Table};
use crate::modbus::transaction::PendingRequest;
use ranges::Ranges;
use rtt::Rtt;

/// A link-layer (MAC) address; all zeros when the capture has none.
pub type Mac = [u8; 6];

/// Hardware addresses kept per side of a pair. More than one is a router
/// between sensor and device, a failover, or an address taken over.
const MAX_MACS: usize = 4;
/// Identification objects kept per pair, and bytes per value.
const MAX_OBJECTS: usize = 16;
const MAX_TEXT: usize = 128;
/// Bytes of identification text a shard keeps over all its pairs (devices
/// answering FC 43/14 with long strings cannot grow memory past it).
const IDENTIFICATION_BUDGET: usize = 1 << 20;

/// What one master-slave pair showed beyond its function codes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairAssets {
    /// Capture time of its first and last ADU, either direction.
    pub first_ns: u64,
    pub last_ns: u64,
    pub responses: u64,
    pub exceptions: u64,
    /// Round-trip times of answered requests.
    pub rtt: Rtt,
    pub master_macs: Vec<Mac>,
    pub slave_macs: Vec<Mac>,
    /// MAC addresses beyond [`MAX_MACS`] per side, not kept.
    pub macs_dropped: u64,
    /// Unit ids the master addressed.
    units: [u64; 4],
    /// Addresses read (answered with data) and written (requested), per
    /// table; allocated with the pair's first read or write.
    pub access: Option<Box<Access>>,
    pub identification: Option<Box<Identification>>,
}

/// Address ranges of one pair, indexed by [`table_index`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Access {
    pub reads: [Ranges; 4],
    pub writes: [Ranges; 4],
}

/// What a slave said about itself to this pair's master.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identification {
    /// Read Device Identification objects by id (the latest answer wins).
    pub objects: BTreeMap<u8, String>,
    /// Report Server ID data (server id, run indicator, device data).
    pub server_id: Option<Vec<u8>>,
}

/// Position of a table in [`Access`]'s arrays (and its name in reports).
pub const TABLES: [(Table, &str); 4] = [
    (Table::Coil, "coils"),
    (Table::DiscreteInput, "discrete_inputs"),
    (Table::Input, "input_registers"),
    (Table::Holding, "holding_registers"),
];

pub fn table_index(t: Table) -> usize {
    match t {
        Table::Coil => 0,
        Table::DiscreteInput => 1,
        Table::Input => 2,
        Table::Holding => 3,
    }
}

impl PairAssets {
    pub fn units(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=u8::MAX).filter(|u| self.units[usize::from(u / 64)] & (1 << (u % 64)) != 0)
    }

    fn seen(&mut self, ts_ns: u64) {
        if self.first_ns == 0 || ts_ns < self.first_ns {
            self.first_ns = ts_ns;
        }
        self.last_ns = self.last_ns.max(ts_ns);
    }

    fn access(&mut self) -> &mut Access {
        self.access.get_or_insert_with(Box::default)
    }

    /// Everything `o` saw (the same pair in another shard's or an earlier
    /// snapshot's inventory).
    pub fn merge(&mut self, o: &PairAssets) {
        if o.first_ns != 0 {
            self.seen(o.first_ns);
        }
        self.last_ns = self.last_ns.max(o.last_ns);
        self.responses += o.responses;
        self.exceptions += o.exceptions;
        self.rtt.merge(&o.rtt);
        self.macs_dropped += o.macs_dropped;
        for &m in &o.master_macs {
            self.macs_dropped += u64::from(!note_mac(&mut self.master_macs, m));
        }
        for &m in &o.slave_macs {
            self.macs_dropped += u64::from(!note_mac(&mut self.slave_macs, m));
        }
        for (a, b) in self.units.iter_mut().zip(o.units) {
            *a |= b;
        }
        if let Some(oa) = &o.access {
            let mine = self.access();
            for (a, b) in mine.reads.iter_mut().zip(&oa.reads) {
                a.merge(b);
            }
            for (a, b) in mine.writes.iter_mut().zip(&oa.writes) {
                a.merge(b);
            }
        }
        if let Some(oi) = &o.identification {
            let mine = self.identification.get_or_insert_with(Box::default);
            for (id, v) in &oi.objects {
                mine.objects.insert(*id, v.clone());
            }
            if oi.server_id.is_some() {
                mine.server_id.clone_from(&oi.server_id);
            }
        }
    }
}

/// Keep `mac` (unless unknown); false when it is new and there is no room.
#[inline]
fn note_mac(macs: &mut Vec<Mac>, mac: Mac) -> bool {
    if mac == [0; 6] || macs.first() == Some(&mac) || macs.contains(&mac) {
        return true;
    }
    if macs.len() < MAX_MACS {
        macs.push(mac);
        return true;
    }
    false
}

/// The inventory of one shard: the pairs (with their function codes,
/// units and, when learning, timing) in a [`Baseline`], and beside each
/// its [`PairAssets`]. Bounded in pairs: more when learning (the baseline
/// is the point) than when detecting; requests of pairs left out are
/// counted.
#[derive(Debug)]
pub struct Inventory {
    observed: Baseline,
    /// Indexed by the pair's [`PairId`] in `observed`.
    assets: Vec<PairAssets>,
    /// Keep each pair's timing (baseline mode).
    learning: bool,
    /// Pairs kept at most.
    cap: usize,
    /// Requests of pairs left out because the inventory was full.
    dropped: u64,
    /// Identification bytes kept, against [`IDENTIFICATION_BUDGET`].
    identification_bytes: usize,
    identification_budget: usize,
    /// Identification objects left out (budget or per-pair bound reached).
    identification_dropped: u64,
}

/// What a shard hands over: its inventory, whole.
#[derive(Debug, Clone, Default)]
pub struct InventoryResult {
    pub observed: Baseline,
    pub assets: BTreeMap<(IpAddr, IpAddr), PairAssets>,
    pub pairs_dropped: u64,
    pub identification_dropped: u64,
}

impl InventoryResult {
    /// Add another shard's inventory (or a later snapshot's parts).
    pub fn merge(&mut self, o: InventoryResult) {
        self.observed.merge(o.observed);
        for (k, a) in o.assets {
            match self.assets.get_mut(&k) {
                Some(mine) => mine.merge(&a),
                None => {
                    self.assets.insert(k, a);
                }
            }
        }
        self.pairs_dropped += o.pairs_dropped;
        self.identification_dropped += o.identification_dropped;
    }
}

impl Inventory {
    /// `cap` pairs at most; `shards` share the identification budget.
    pub fn new(learning: bool, cap: usize, shards: usize) -> Inventory {
        Inventory {
            observed: Baseline::default(),
            assets: Vec::new(),
            learning,
            cap: cap.max(1),
            dropped: 0,
            identification_bytes: 0,
            identification_budget: IDENTIFICATION_BUDGET / shards.max(1),
            identification_dropped: 0,
        }
    }

    /// The pair's entry, added if there is room.
    pub fn pair(&mut self, master: IpAddr, slave: IpAddr) -> Option<PairId> {
        if let Some(id) = self.observed.pair_id(master, slave) {
            return Some(id);
        }
        if self.observed.pair_count() >= self.cap {
            return None;
        }
        let id = self.observed.add_pair(master, slave);
        self.assets.push(PairAssets::default());
        Some(id)
    }

    /// A frame of pair `id` from the master (`from_master`) or the slave.
    #[inline]
    pub fn note_mac(&mut self, id: PairId, from_master: bool, mac: Mac) {
        let Some(a) = self.assets.get_mut(id.index()) else {
            return;
        };
        let macs = if from_master {
            &mut a.master_macs
        } else {
            &mut a.slave_macs
        };
        if !note_mac(macs, mac) {
            a.macs_dropped += 1;
        }
    }

    /// A request of pair `entry` (`None`: left out, counted).
    #[inline]
    pub fn on_request(&mut self, entry: Option<PairId>, req: &Request<'_>, unit: u8, ts_ns: u64) {
        let Some(id) = entry else {
            self.dropped += 1;
            return;
        };
        let fc = req.function_code();
        self.observed.count_pair(id, unit, fc, ts_ns, self.learning);
        let Some(a) = self.assets.get_mut(id.index()) else {
            return;
        };
        a.seen(ts_ns);
        a.units[usize::from(unit / 64)] |= 1 << (unit % 64);
        if req.is_write() {
            // Writes as requested, accepted or not: who tries to change
            // what is the point.
            let (table, start, qty) = match *req {
                Request::MaskWriteRegister { addr, .. } => (Table::Holding, addr, 1),
                _ => req.written_values().span(),
            };
            a.access().writes[table_index(table)].add(start, qty);
        }
    }

    /// A response of pair `id`, answering `request` if matched.
    #[inline]
    pub fn on_response(
        &mut self,
        id: PairId,
        request: Option<&PendingRequest>,
        resp: &Response<'_>,
        ts_ns: u64,
    ) {
        let Some(a) = self.assets.get_mut(id.index()) else {
            return;
        };
        a.seen(ts_ns);
        a.responses += 1;
        if matches!(resp, Response::Exception { .. }) {
            a.exceptions += 1;
            return;
        }
        if let Some(req) = request {
            a.rtt.add(ts_ns.saturating_sub(req.ts_ns));
            if let (Some((addr, qty)), Some(table)) = (req.read, read_table(req.fc)) {
                a.access().reads[table_index(table)].add(addr, qty);
            }
        }
        match *resp {
            Response::EncapsulatedInterface {
                mei: MEI_READ_DEVICE_ID,
                data,
            } => {
                self.identify(id, |i, budget| {
                    let mut dropped = 0;
                    for (obj, value) in device_id::objects(data) {
                        let text = device_id::text(value, MAX_TEXT);
                        let old = i.objects.get(&obj).map_or(0, String::len);
                        let room = i.objects.len() < MAX_OBJECTS || old > 0;
                        if room && budget.take(text.len(), old) {
                            i.objects.insert(obj, text);
                        } else {
                            dropped += 1;
                        }
                    }
                    dropped
                });
            }
            Response::ReportServerId { data } => {
                let data = &data[..data.len().min(MAX_TEXT)];
                self.identify(id, |i, budget| {
                    let old = i.server_id.as_ref().map_or(0, Vec::len);
                    if budget.take(data.len(), old) {
                        i.server_id = Some(data.to_vec());
                        0
                    } else {
                        1
                    }
                });
            }
            _ => {}
        }
    }

    /// Update a pair's identification within the shard's budget; `f`
    /// returns the objects it left out.
    #[cold]
    fn identify(&mut self, id: PairId, f: impl FnOnce(&mut Identification, &mut Budget) -> u64) {
        let Some(a) = self.assets.get_mut(id.index()) else {
            return;
        };
        let mut budget = Budget {
            used: &mut self.identification_bytes,
            limit: self.identification_budget,
        };
        let ident = a.identification.get_or_insert_with(Box::default);
        self.identification_dropped += f(ident, &mut budget);
    }

    /// The learned baseline (register statistics join it at the end).
    pub fn observed_mut(&mut self) -> &mut Baseline {
        &mut self.observed
    }

    /// A copy of everything so far (periodic inventory files while live).
    pub fn snapshot(&self) -> InventoryResult {
        InventoryResult {
            observed: self.observed.clone(),
            assets: self.keyed_assets(),
            pairs_dropped: self.dropped,
            identification_dropped: self.identification_dropped,
        }
    }

    pub fn finish(self) -> InventoryResult {
        InventoryResult {
            assets: self.keyed_assets(),
            pairs_dropped: self.dropped,
            identification_dropped: self.identification_dropped,
            observed: self.observed,
        }
    }

    fn keyed_assets(&self) -> BTreeMap<(IpAddr, IpAddr), PairAssets> {
        self.observed
            .pair_keys()
            .zip(&self.assets)
            .map(|(k, a)| (k, a.clone()))
            .collect()
    }
}

/// The table a read function code reads.
fn read_table(fc: u8) -> Option<Table> {
    match fc {
        1 => Some(Table::Coil),
        2 => Some(Table::DiscreteInput),
        3 | 23 => Some(Table::Holding),
        4 => Some(Table::Input),
        _ => None,
    }
}

/// A shard's identification bytes: what is used, and the limit.
struct Budget<'a> {
    used: &'a mut usize,
    limit: usize,
}

impl Budget<'_> {
    /// Replace `old` bytes by `new` if that stays within the limit.
    fn take(&mut self, new: usize, old: usize) -> bool {
        let after = *self.used - old.min(*self.used) + new;
        if after > self.limit {
            return false;
        }
        *self.used = after;
        true
    }
}
