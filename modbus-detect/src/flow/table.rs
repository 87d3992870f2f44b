//! The bounded connection table.
//!
//! Flows live in a slab indexed by a flat hash index ([`FlowIndex`]). When
//! the table is full, a CLOCK hand (second-chance LRU approximation) picks
//! the victim: a flow seen since the hand last passed gets another chance,
//! so established, active connections survive a flood of one-packet
//! connections (SYN floods, scans). Idle flows are freed by an incremental
//! sweep, a few slots per packet, instead of a periodic full scan that would
//! stall the shard.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

use crate::keyed::RandomState;

use super::{Flow, FlowKey};

struct Slot {
    flow: Option<Flow>,
    referenced: bool,
}

pub struct FlowTable {
    /// The random key of the index's hash (see `keyed`): connection keys
    /// are the attacker's to choose.
    keys: RandomState,
    index: FlowIndex,
    slots: Vec<Slot>,
    free: Vec<u32>,
    capacity: usize,
    idle_timeout_ns: u64,
    hand: usize,
    sweep: usize,
}

impl FlowTable {
    pub fn new(capacity: usize, idle_timeout_ns: u64) -> Self {
        FlowTable {
            keys: RandomState::default(),
            index: FlowIndex::default(),
            slots: Vec::new(),
            free: Vec::new(),
            capacity: capacity.max(1),
            idle_timeout_ns,
            hand: 0,
            sweep: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.index.len
    }

    pub fn is_empty(&self) -> bool {
        self.index.len == 0
    }

    /// The slot of `key`, if tracked; marks it recently used. Always
    /// inlined: once per frame, and a call costs more than its body.
    #[inline(always)]
    pub fn find(&mut self, key: &FlowKey) -> Option<usize> {
        let slots = &self.slots;
        let idx = self.index.find(
            flow_hash(&self.keys, key),
            |i| matches!(slots.get(i as usize), Some(Slot { flow: Some(f), .. }) if f.key == *key),
        )? as usize;
        if let Some(slot) = self.slots.get_mut(idx) {
            slot.referenced = true;
        }
        Some(idx)
    }

    /// Track a new flow; when full, first evicts one, returned with the new
    /// flow's slot.
    pub fn insert(&mut self, flow: Flow) -> (usize, Option<Flow>) {
        let mut evicted = None;
        if self.index.len >= self.capacity {
            if let Some(victim) = self.pick_victim() {
                evicted = Some(self.take(victim));
            }
        }
        let key = flow.key;
        // A new flow earns its second chance only with its second packet, so
        // one-packet flows (SYN floods, scans) are the first to go.
        let slot = Slot {
            flow: Some(flow),
            referenced: false,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i as usize
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        self.index.insert(flow_hash(&self.keys, &key), idx as u32);
        (idx, evicted)
    }

    pub fn get_mut(&mut self, idx: usize) -> Option<&mut Flow> {
        self.slots.get_mut(idx)?.flow.as_mut()
    }

    /// Remove a flow (closed by FIN/RST).
    pub fn remove(&mut self, idx: usize) -> Option<Flow> {
        self.slots.get(idx)?.flow.as_ref()?;
        Some(self.take(idx))
    }

    /// Look at the next slot of the incremental sweep: the flow there, if it
    /// has been idle since before `now - timeout`, leaves the table.
    pub fn sweep(&mut self, now: u64) -> Option<Flow> {
        if self.slots.is_empty() {
            return None;
        }
        // A compare instead of `%`: a division per call, twice per packet,
        // was 2 % of the per-frame cost.
        self.sweep += 1;
        if self.sweep >= self.slots.len() {
            self.sweep = 0;
        }
        let idle = self.slots[self.sweep]
            .flow
            .as_ref()
            .is_some_and(|f| now.saturating_sub(f.last_ns) > self.idle_timeout_ns);
        idle.then(|| self.take(self.sweep))
    }

    /// Every flow tracked, in place (new settings: what each flow cached
    /// from the old ones is let go).
    pub fn flows_mut(&mut self) -> impl Iterator<Item = &mut Flow> + '_ {
        self.slots.iter_mut().filter_map(|s| s.flow.as_mut())
    }

    /// Every flow still tracked (end of the run).
    pub fn drain(&mut self) -> impl Iterator<Item = Flow> + '_ {
        self.index.clear();
        self.free.clear();
        self.slots.drain(..).filter_map(|s| s.flow)
    }

    fn take(&mut self, idx: usize) -> Flow {
        let slot = &mut self.slots[idx];
        slot.referenced = false;
        let flow = slot
            .flow
            .take()
            .expect("take() is only called on occupied slots");
        self.index
            .remove(flow_hash(&self.keys, &flow.key), idx as u32);
        self.free.push(idx as u32);
        flow
    }

    /// CLOCK: clear the reference bit of recently used flows until one is
    /// found that was not used since the hand last passed.
    fn pick_victim(&mut self) -> Option<usize> {
        let n = self.slots.len();
        for _ in 0..2 * n {
            self.hand = (self.hand + 1) % n;
            let slot = &mut self.slots[self.hand];
            if slot.flow.is_none() {
                continue;
            }
            if slot.referenced {
                slot.referenced = false;
            } else {
                return Some(self.hand);
            }
        }
        None
    }
}

/// Hash of a flow key under the table's random key: addresses as integers,
/// both ports in one word. (`#[derive(Hash)]` on the key hashes each
/// `IpAddr`'s enum tag and each field separately: twice the work.)
#[inline]
fn flow_hash(state: &RandomState, key: &FlowKey) -> u64 {
    fn addr(h: &mut impl Hasher, a: IpAddr) {
        match a {
            IpAddr::V4(a) => h.write_u32(a.to_bits()),
            IpAddr::V6(a) => h.write_u128(a.to_bits()),
        }
    }
    let mut h = state.build_hasher();
    addr(&mut h, key.client);
    addr(&mut h, key.server);
    h.write_u32(u32::from(key.client_port) << 16 | u32::from(key.server_port));
    h.finish()
}

/// A flat open-addressing hash index (linear probing, backward-shift
/// deletion) from flow keys to slab slots.
///
/// Each bucket is one `u64`: 32 bits of the key's hash (which also give the
/// bucket the key belongs in) and the slot number. Keys are not stored: a
/// candidate is confirmed by comparing the key in its slot, which the
/// caller reads next anyway. A `HashMap<FlowKey, u32>` bucket is 44 bytes
/// and a control byte; at 1 M connections this index is 16 MB instead of
/// about 90 MB (`modbus-bench-alloc memory`), and a lookup scans 8-byte
/// buckets of one cache line (criterion `flow_table`).
#[derive(Default)]
struct FlowIndex {
    /// A power of two in length (or empty); `EMPTY` where free.
    buckets: Vec<u64>,
    len: usize,
}

const EMPTY: u64 = u64::MAX;

impl FlowIndex {
    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    /// The slot whose key hashes to `hash` and satisfies `is_key`.
    #[inline]
    fn find(&self, hash: u64, is_key: impl Fn(u32) -> bool) -> Option<u32> {
        if self.buckets.is_empty() {
            return None;
        }
        let tag = hash as u32;
        let mask = self.mask();
        let mut i = tag as usize & mask;
        loop {
            let b = self.buckets[i];
            if b == EMPTY {
                return None;
            }
            if (b >> 32) as u32 == tag && is_key(b as u32) {
                return Some(b as u32);
            }
            i = (i + 1) & mask;
        }
    }

    fn insert(&mut self, hash: u64, slot: u32) {
        // At most 3/4 full: probe sequences stay short.
        if (self.len + 1) * 4 > self.buckets.len() * 3 {
            self.grow();
        }
        self.place(u64::from(hash as u32) << 32 | u64::from(slot));
        self.len += 1;
    }

    fn place(&mut self, bucket: u64) {
        let mask = self.mask();
        let mut i = (bucket >> 32) as usize & mask;
        while self.buckets[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.buckets[i] = bucket;
    }

    fn grow(&mut self) {
        let n = (self.buckets.len() * 2).max(16);
        let old = std::mem::replace(&mut self.buckets, vec![EMPTY; n]);
        for b in old.into_iter().filter(|&b| b != EMPTY) {
            self.place(b);
        }
    }

    /// Forget `slot` (whose key hashes to `hash`).
    fn remove(&mut self, hash: u64, slot: u32) {
        if self.buckets.is_empty() {
            return;
        }
        let mask = self.mask();
        let mut i = hash as u32 as usize & mask;
        loop {
            let b = self.buckets[i];
            if b == EMPTY {
                return;
            }
            if b as u32 == slot {
                break;
            }
            i = (i + 1) & mask;
        }
        // Backward shift: pull later entries of the run into the hole when
        // the hole lies between their home bucket and where they are.
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let b = self.buckets[j];
            if b == EMPTY {
                break;
            }
            let home = (b >> 32) as usize & mask;
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.buckets[hole] = b;
                hole = j;
            }
        }
        self.buckets[hole] = EMPTY;
        self.len -= 1;
    }

    /// How far, in all, the entries sit from their home bucket: the work
    /// of looking every one of them up.
    #[cfg(test)]
    fn displacement(&self) -> usize {
        let mask = self.mask();
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, &b)| b != EMPTY)
            .map(|(i, &b)| i.wrapping_sub((b >> 32) as usize & mask) & mask)
            .sum()
    }

    fn clear(&mut self) {
        self.buckets.fill(EMPTY);
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    /// The unkeyed hash this index used before: FxHash of the same words.
    fn unkeyed(key: &FlowKey) -> u64 {
        let mut h = rustc_hash::FxHasher::default();
        for a in [key.client, key.server] {
            match a {
                IpAddr::V4(a) => h.write_u32(a.to_bits()),
                IpAddr::V6(a) => h.write_u128(a.to_bits()),
            }
        }
        h.write_u32(u32::from(key.client_port) << 16 | u32::from(key.server_port));
        h.finish()
    }

    /// Connections an attacker can send from spoofed addresses, chosen so
    /// that the unkeyed hash puts them all in one bucket of a 4096-bucket
    /// index: with it every lookup walks the whole run (the cost grows
    /// with the square of their number); with the keyed hash they spread.
    #[test]
    fn colliding_keys_for_an_unkeyed_hash_spread_under_the_random_key() {
        const N: usize = 1500;
        let mask = 4095u64;
        let keys: Vec<FlowKey> = (0u32..)
            .map(|c| FlowKey {
                client: IpAddr::from(c.to_be_bytes()),
                server: IpAddr::from([10, 0, 0, 2]),
                client_port: 40_000,
                server_port: 502,
            })
            .filter(|k| unkeyed(k) & mask == 0)
            .take(N)
            .collect();
        let fill = |hash: &dyn Fn(&FlowKey) -> u64| {
            let mut index = FlowIndex::default();
            for (slot, k) in keys.iter().enumerate() {
                index.insert(hash(k), slot as u32);
            }
            assert!(
                index.buckets.len() <= 4096,
                "one bucket for all under the unkeyed hash"
            );
            index.displacement()
        };
        let unkeyed_cost = fill(&unkeyed);
        assert!(
            unkeyed_cost >= N * (N - 1) / 2,
            "the attack works unkeyed: {unkeyed_cost}"
        );
        let table = FlowTable::new(1 << 20, 0);
        let keyed_cost = fill(&|k| flow_hash(&table.keys, k));
        assert!(
            keyed_cost < 4 * N,
            "keyed: {keyed_cost} probes for {N} keys"
        );
        // And the key is random: another table hashes the same key apart.
        let other = FlowTable::new(1 << 20, 0);
        assert_ne!(
            flow_hash(&table.keys, &keys[0]),
            flow_hash(&other.keys, &keys[0])
        );
    }

    fn key(port: u16) -> FlowKey {
        FlowKey {
            client: IpAddr::from([10, 0, 0, 1]),
            server: IpAddr::from([10, 0, 0, 2]),
            client_port: port,
            server_port: 502,
        }
    }

    #[test]
    fn capacity_is_a_hard_bound_and_evictions_are_reported() {
        let mut t = FlowTable::new(100, u64::MAX);
        let mut evicted = 0;
        for p in 0..10_000u16 {
            evicted += usize::from(t.insert(Flow::new(key(p), 0)).1.is_some());
            assert!(t.len() <= 100);
        }
        assert_eq!(evicted, 10_000 - 100);
    }

    #[test]
    fn active_flow_survives_a_flood_of_new_ones() {
        let mut t = FlowTable::new(64, u64::MAX);
        t.insert(Flow::new(key(1), 0));
        for p in 100..20_000u16 {
            // The established flow keeps sending.
            assert!(t.find(&key(1)).is_some(), "evicted at {p}");
            t.insert(Flow::new(key(p), 0));
        }
    }

    #[test]
    fn idle_flows_expire_through_the_sweep() {
        let mut t = FlowTable::new(10, 1_000);
        for p in 0..5 {
            t.insert(Flow::new(key(p), 0));
        }
        assert!(t.sweep(500).is_none(), "not idle yet");
        let expired = (0..10).filter(|_| t.sweep(5_000).is_some()).count();
        assert_eq!(expired, 5);
        assert!(t.is_empty());
    }

    #[test]
    fn index_agrees_with_a_map_under_churn() {
        // Few buckets' worth of hash bits collide often: exercise long runs,
        // wrap-around and backward-shift deletion against a model.
        let mut t = FlowTable::new(5_000, u64::MAX);
        let mut model = std::collections::HashMap::new();
        let mut x = 12345u64;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = key((x % 3_000) as u16);
            if x.is_multiple_of(3) {
                if let Some(i) = t.find(&k) {
                    assert_eq!(model.remove(&k.client_port), Some(i));
                    assert!(t.remove(i).is_some());
                } else {
                    assert!(!model.contains_key(&k.client_port));
                }
            } else if t.find(&k).is_none() {
                let (i, victim) = t.insert(Flow::new(k, 0));
                assert!(victim.is_none());
                model.insert(k.client_port, i);
            }
            assert_eq!(t.len(), model.len());
        }
        for (port, i) in &model {
            assert_eq!(t.find(&key(*port)), Some(*i));
        }
    }

    #[test]
    fn removed_slots_are_reused() {
        let mut t = FlowTable::new(10, u64::MAX);
        let (a, _) = t.insert(Flow::new(key(1), 0));
        assert!(t.remove(a).is_some());
        assert!(t.remove(a).is_none());
        let (b, _) = t.insert(Flow::new(key(2), 0));
        assert_eq!(a, b);
        assert_eq!(t.find(&key(2)), Some(b));
        assert_eq!(t.find(&key(1)), None);
    }
}
