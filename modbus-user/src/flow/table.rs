//! The bounded connection table.
//!
//! Flows live in a slab indexed by a hash map. When the table is full, a
//! CLOCK hand (second-chance LRU approximation) picks the victim: a flow seen
//! since the hand last passed gets another chance, so established, active
//! connections survive a flood of one-packet connections (SYN floods, scans).
//! Idle flows are freed by an incremental sweep, a few slots per packet,
//! instead of a periodic full scan that would stall the shard.

use rustc_hash::FxHashMap;

use super::{Flow, FlowKey};

struct Slot {
    flow: Option<Flow>,
    referenced: bool,
}

pub struct FlowTable {
    index: FxHashMap<FlowKey, u32>,
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
            index: FxHashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            capacity: capacity.max(1),
            idle_timeout_ns,
            hand: 0,
            sweep: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The slot of `key`, if tracked; marks it recently used.
    pub fn find(&mut self, key: &FlowKey) -> Option<usize> {
        let idx = *self.index.get(key)? as usize;
        self.slots[idx].referenced = true;
        Some(idx)
    }

    /// Track a new flow; when full, first evicts one, returned with the new
    /// flow's slot.
    pub fn insert(&mut self, flow: Flow) -> (usize, Option<Flow>) {
        let mut evicted = None;
        if self.index.len() >= self.capacity {
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
        self.index.insert(key, idx as u32);
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
        self.sweep = (self.sweep + 1) % self.slots.len();
        let idle = self.slots[self.sweep]
            .flow
            .as_ref()
            .is_some_and(|f| now.saturating_sub(f.last_ns) > self.idle_timeout_ns);
        idle.then(|| self.take(self.sweep))
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
        self.index.remove(&flow.key);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

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
