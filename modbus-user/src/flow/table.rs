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

/// Why a flow left the table without being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// The table was full and this flow was the CLOCK victim.
    Evicted,
    /// Idle for longer than the timeout.
    Expired,
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

    /// Track a new flow; when full, first evicts one (handed to `gone`).
    pub fn insert(&mut self, flow: Flow, mut gone: impl FnMut(Flow, Removed)) -> usize {
        if self.index.len() >= self.capacity {
            if let Some(victim) = self.pick_victim() {
                gone(self.take(victim), Removed::Evicted);
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
        idx
    }

    pub fn get_mut(&mut self, idx: usize) -> Option<&mut Flow> {
        self.slots.get_mut(idx)?.flow.as_mut()
    }

    /// Remove a flow (closed by FIN/RST).
    pub fn remove(&mut self, idx: usize) -> Option<Flow> {
        self.slots.get(idx)?.flow.as_ref()?;
        Some(self.take(idx))
    }

    /// Look at `budget` slots for flows idle since before `now - timeout`.
    pub fn sweep(&mut self, now: u64, budget: usize, mut gone: impl FnMut(Flow, Removed)) {
        if self.slots.is_empty() {
            return;
        }
        for _ in 0..budget.min(self.slots.len()) {
            self.sweep = (self.sweep + 1) % self.slots.len();
            let idle = self.slots[self.sweep]
                .flow
                .as_ref()
                .is_some_and(|f| now.saturating_sub(f.last_ns) > self.idle_timeout_ns);
            if idle {
                gone(self.take(self.sweep), Removed::Expired);
            }
        }
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
            t.insert(Flow::new(key(p), 0), |_, why| {
                assert_eq!(why, Removed::Evicted);
                evicted += 1;
            });
            assert!(t.len() <= 100);
        }
        assert_eq!(evicted, 10_000 - 100);
    }

    #[test]
    fn active_flow_survives_a_flood_of_new_ones() {
        let mut t = FlowTable::new(64, u64::MAX);
        t.insert(Flow::new(key(1), 0), |_, _| {});
        for p in 100..20_000u16 {
            // The established flow keeps sending.
            assert!(t.find(&key(1)).is_some(), "evicted at {p}");
            t.insert(Flow::new(key(p), 0), |_, _| {});
        }
    }

    #[test]
    fn idle_flows_expire_through_the_sweep() {
        let mut t = FlowTable::new(10, 1_000);
        for p in 0..5 {
            t.insert(Flow::new(key(p), 0), |_, _| {});
        }
        let mut expired = 0;
        t.sweep(5_000, 10, |_, why| {
            assert_eq!(why, Removed::Expired);
            expired += 1;
        });
        assert_eq!(expired, 5);
        assert!(t.is_empty());
    }

    #[test]
    fn removed_slots_are_reused() {
        let mut t = FlowTable::new(10, u64::MAX);
        let a = t.insert(Flow::new(key(1), 0), |_, _| {});
        assert!(t.remove(a).is_some());
        assert!(t.remove(a).is_none());
        let b = t.insert(Flow::new(key(2), 0), |_, _| {});
        assert_eq!(a, b);
        assert_eq!(t.find(&key(2)), Some(b));
        assert_eq!(t.find(&key(1)), None);
    }
}
