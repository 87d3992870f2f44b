//! Whether the receiver would take a segment at all, before TCP looks at
//! it: its checksums, and whether it can reach the receiver.
//!
//! An attacker on the wire can send copies of segments that the sensor
//! sees but the PLC drops (a bad checksum, a time to live that runs out on
//! the way): if the sensor took them as stream data, it would decode bytes
//! the PLC never executes and miss the ones it does. Both checks are per
//! connection side, from what that side's own packets show.

use crate::counters::Counters;
use crate::decode::checksum::{self, Checksum};
use crate::decode::{tcp_flags, PacketMeta};

use super::Dir;

/// What a sender's checksums have shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Checksums {
    /// Nothing checked yet.
    #[default]
    Unknown,
    /// Right: later offload-shaped ones are wrong ones.
    Valid,
    /// Its first checksum was in the shape TX offload leaves (the capture
    /// was taken on the sender itself): that shape is accepted from it,
    /// and counted.
    Offloaded,
}

/// A hop count not known yet.
const NO_HOPS: u8 = u8::MAX;

/// Per connection: each side's checksum habit and distance (in routers)
/// from the sensor, indexed by the [`Dir`] of the side's segments.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    checksums: [Checksums; 2],
    hops: [u8; 2],
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            checksums: [Checksums::Unknown; 2],
            hops: [NO_HOPS; 2],
        }
    }
}

impl Admission {
    /// Whether the receiver of a segment going `dir` takes it; counted
    /// when not (and when taken only as an offloaded checksum). Checksums
    /// are checked when `verify` (`--checksums`).
    pub fn admits(
        &mut self,
        dir: Dir,
        meta: &PacketMeta,
        frame: &[u8],
        verify: bool,
        counters: &mut Counters,
    ) -> bool {
        let sender = dir as usize;
        let habit = &mut self.checksums[sender];
        let verdict = if verify {
            checksum::verify(frame, meta)
        } else {
            Checksum::Valid
        };
        let ok = match (verdict, *habit) {
            (Checksum::Valid, Checksums::Unknown) => {
                *habit = Checksums::Valid;
                true
            }
            (Checksum::Valid, _) => true,
            // The first checksum of a side decides whether it offloads:
            // a forged offload shape on a side whose checksums are right
            // is a wrong checksum, as the receiver sees it.
            (Checksum::Offloaded, Checksums::Unknown | Checksums::Offloaded) => {
                *habit = Checksums::Offloaded;
                counters.checksum_offloaded += 1;
                true
            }
            (Checksum::Offloaded, Checksums::Valid) | (Checksum::Bad, _) => {
                counters.checksum_errors += 1;
                false
            }
            (Checksum::Unverifiable, _) => {
                counters.checksum_unverified += 1;
                true
            }
        };
        if !ok {
            return false;
        }
        if let Some(h) = hops_travelled(meta.ttl) {
            // The least a side's packets show: a forged packet with a lower
            // time to live can only make the estimate smaller, never hide
            // the real one.
            self.hops[sender] = self.hops[sender].min(h);
        }
        let to_receiver = self.hops[dir.reverse() as usize];
        // A SYN is exempt: before the receiver has spoken its distance is
        // only what forged packets may have claimed.
        let expires = to_receiver != NO_HOPS
            && to_receiver > 0
            && meta.ttl <= to_receiver
            && meta.flags & tcp_flags::SYN == 0;
        if expires {
            counters.ttl_expired_segments += 1;
        }
        !expires
    }
}

/// How many routers a packet that reached the sensor with `ttl` left has
/// passed: from the nearest initial value at or above it that stacks use
/// (32, 64, 128, 255). `None` for 0 (nothing to tell).
fn hops_travelled(ttl: u8) -> Option<u8> {
    let initial = [32u8, 64, 128, 255].into_iter().find(|&i| i >= ttl)?;
    (ttl != 0).then(|| initial - ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_come_from_the_nearest_initial_ttl() {
        assert_eq!(hops_travelled(64), Some(0));
        assert_eq!(hops_travelled(61), Some(3));
        assert_eq!(hops_travelled(128), Some(0));
        assert_eq!(hops_travelled(120), Some(8));
        assert_eq!(hops_travelled(250), Some(5));
        assert_eq!(hops_travelled(30), Some(2));
        assert_eq!(hops_travelled(0), None);
    }
}
