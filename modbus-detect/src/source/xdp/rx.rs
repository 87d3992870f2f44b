//! Receiving: one step of an RX thread on its AF_XDP socket — wait for
//! frames as the busy-polling settings say, hand each one to the caller,
//! give the UMEM frames straight back to the kernel.
//!
//! Frames are lent to the caller for the call only: it copies what it keeps
//! (a Modbus frame is ~60-300 bytes, a memcpy of a cache line or four), so
//! that the kernel never waits for a shard.

use std::time::{Duration, Instant};

use super::busy_poll;
use super::socket::XskQueue;

/// Descriptors taken from the RX ring per step.
pub const RX_BATCH: usize = 256;
/// Longest sleep in poll(2), so that a halt is seen soon.
const POLL_TIMEOUT_MS: i32 = 10;

/// How an RX thread waits for frames.
#[derive(Debug, Clone, Copy)]
pub(super) struct RxPolling {
    /// Keep polling an empty ring this long before sleeping in poll(2).
    pub spin: Duration,
    /// Each look at an empty ring runs the device's NAPI in this thread.
    pub kernel: bool,
}

impl Default for RxPolling {
    fn default() -> Self {
        RxPolling {
            spin: Duration::ZERO,
            kernel: false,
        }
    }
}

impl XskQueue {
    /// Take the frames waiting on the RX ring (waiting for some as set up
    /// by [`XskQueue::set_polling`], at most 10 ms), call `deliver` with
    /// each (receive time in ns since the epoch, bytes), and give their
    /// UMEM frames back to the fill ring. `last_frame` is when the previous
    /// frame came (how long spinning has gone on). Returns the frames
    /// delivered.
    pub fn receive(
        &mut self,
        last_frame: &mut Instant,
        mut deliver: impl FnMut(u64, &[u8]),
    ) -> std::io::Result<usize> {
        // SAFETY: the descriptors belong to this queue's UMEM.
        let mut got = unsafe { self.rx.consume(&mut self.descs) };
        if got == 0 {
            if last_frame.elapsed() < self.poll.spin {
                if self.poll.kernel {
                    busy_poll::drive_napi(self.fd());
                } else {
                    std::hint::spin_loop();
                }
            } else {
                // SAFETY: as above.
                got = unsafe { self.rx.poll_and_consume(&mut self.descs, POLL_TIMEOUT_MS) }?;
            }
        }
        if got == 0 {
            return Ok(0);
        }
        *last_frame = Instant::now();
        let ts_ns = now_ns();
        for d in &self.descs[..got] {
            // SAFETY: `d` was just consumed from this UMEM's RX ring.
            let data = unsafe { self.umem.data(d) };
            deliver(ts_ns, data.contents());
        }
        // SAFETY: these frames came from this UMEM and are no longer read.
        unsafe {
            self.fill
                .produce_and_wakeup(&self.descs[..got], self.rx.fd_mut(), 0)
        }?;
        Ok(got)
    }
}

/// Receive time, ns since the epoch.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
