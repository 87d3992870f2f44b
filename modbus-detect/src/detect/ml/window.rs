//! What the models see: for each master-slave pair, one feature vector per
//! window of capture time (`--ml-window`, 5 s by default).
//!
//! The features describe how a master talks to a slave — how much, how
//! regularly, with which function codes, to how many addresses and units —
//! so that a flood, a scan, a master that starts writing or probing, or a
//! pair whose rhythm changes all move the vector away from the windows of
//! normal traffic. Counts go through `ln(1 + x)`, so that ten times more
//! requests is a step, not a cliff, after standardisation.
//!
//! A window starts with a pair's first request and closes with the first
//! request at or after its end, when the shard's clock (the capture time of
//! its traffic) passes its end, or at the end of the input; a window takes
//! no request after its end, so when it closes changes nothing in it: the
//! same windows whatever the number of shards (all of a pair's traffic goes
//! through the shard of its slave).
//! Accumulating costs a few integer additions per request and no
//! allocation: gaps are summed as exact integers and their mean and spread
//! worked out at close (a running mean took two divisions per request);
//! sets (function codes, addresses, units) are 256-bit bitmaps.

use crate::ml::features::Features;
use crate::modbus::pdu::Request;

/// A window that has closed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Closed {
    /// Capture times of its first and last requests.
    pub start_ns: u64,
    pub end_ns: u64,
    pub requests: u32,
    pub features: Features,
    /// What its threat label is read from ([`super::ThreatLabel`]).
    pub writes: u32,
    pub diagnostics: u32,
    /// The shortest gap between two of its requests.
    pub min_gap_ns: Option<u64>,
}

/// Coefficients of variation above this are all "very irregular".
const MAX_CV: f64 = 10.0;

/// A 256-bit set: function codes and unit ids exactly, addresses hashed
/// (so "distinct addresses" saturates at 256, plenty to tell a poll of a few
/// blocks from a scan).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bits([u64; 4]);

impl Bits {
    fn insert(&mut self, v: u8) {
        self.0[usize::from(v >> 6)] |= 1 << (v & 63);
    }

    fn len(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }
}

/// A 16-bit address folded to a set member (Fibonacci hashing: neighbouring
/// addresses land far apart).
fn address_bit(addr: u16) -> u8 {
    (u32::from(addr).wrapping_mul(0x9E37_79B9) >> 24) as u8
}

/// Function codes that read or change nothing in the process: diagnostics,
/// identification, event counters and logs, file records, FIFO queues, and
/// codes the protocol does not define. A scanner uses them; a poller does not.
fn is_diagnostic(fc: u8) -> bool {
    !matches!(fc & 0x7F, 1..=6 | 15 | 16 | 22 | 23)
}

/// The gaps between a window's requests, in ns, as exact integer sums:
/// no gap is longer than the window (a clock that steps back and forth
/// cannot make one longer), so even 2^32 gaps of a day-long window square
/// and sum within 128 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gaps {
    count: u32,
    sum: u128,
    squares: u128,
    min: u64,
}

impl Default for Gaps {
    fn default() -> Gaps {
        Gaps {
            count: 0,
            sum: 0,
            squares: 0,
            min: u64::MAX,
        }
    }
}

impl Gaps {
    fn add(&mut self, gap: u64) {
        self.count += 1;
        self.sum += u128::from(gap);
        self.squares = self
            .squares
            .saturating_add(u128::from(gap) * u128::from(gap));
        self.min = self.min.min(gap);
    }

    fn mean_ns(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / f64::from(self.count))
    }

    /// Coefficient of variation (population standard deviation over the
    /// mean), from `n * sum(g^2) - sum(g)^2`, exact while it fits in 128
    /// bits (any window of under a few million requests).
    fn cv(&self) -> Option<f64> {
        let mean = self.mean_ns().filter(|&m| self.count > 1 && m > 0.0)?;
        let n = u128::from(self.count);
        let spread = n
            .checked_mul(self.squares)
            .zip(self.sum.checked_mul(self.sum))
            .map(|(a, b)| a.saturating_sub(b) as f64)
            .unwrap_or_else(|| {
                let (n, sum) = (n as f64, self.sum as f64);
                (n * self.squares as f64 - sum * sum).max(0.0)
            });
        let variance = spread / (n as f64 * n as f64);
        Some(variance.sqrt() / mean)
    }
}

/// One pair's open window.
#[derive(Debug, Clone, Default)]
pub struct Window {
    start_ns: u64,
    last_request_ns: u64,
    requests: u32,
    writes: u32,
    diagnostics: u32,
    responses: u32,
    exceptions: u32,
    quantity: u64,
    gaps: Gaps,
    function_codes: Bits,
    addresses: Bits,
    units: Bits,
}

impl Window {
    /// Has the window a request, and is `now_ns` at or past its end?
    pub fn due(&self, window_ns: u64, now_ns: u64) -> bool {
        self.requests > 0 && now_ns >= self.start_ns.saturating_add(window_ns)
    }

    /// A request of the pair at `ts_ns`. When it falls at or after the end
    /// of the open window, that window closes first: its features are
    /// returned (with its start) and the request opens the next one.
    /// Always inlined (one caller): saving and restoring registers for a
    /// call was a fifth of its cost.
    #[inline(always)]
    pub fn on_request(
        &mut self,
        window_ns: u64,
        ts_ns: u64,
        unit: u8,
        req: &Request<'_>,
    ) -> Option<Closed> {
        let closed = if self.due(window_ns, ts_ns) {
            let out = self.close(window_ns);
            *self = Window::default();
            out
        } else {
            None
        };
        if self.requests == 0 {
            self.start_ns = ts_ns;
        } else if let Some(gap) = ts_ns.checked_sub(self.last_request_ns) {
            // A clock that stepped back gives no interval.
            self.gaps.add(gap.min(window_ns));
        }
        self.last_request_ns = ts_ns;
        self.requests += 1;
        let fc = req.function_code();
        self.writes += u32::from(req.is_write());
        self.diagnostics += u32::from(is_diagnostic(fc));
        self.function_codes.insert(fc);
        self.units.insert(unit);
        if let Some((addr, qty)) = req.reference() {
            self.addresses.insert(address_bit(addr));
            self.quantity += u64::from(qty);
        }
        closed
    }

    /// A response to one of the pair's requests.
    pub fn on_response(&mut self, exception: bool) {
        self.responses += 1;
        self.exceptions += u32::from(exception);
    }

    /// The features of the open window, if it has a request; `window_ns`
    /// is the nominal length (a window closed early, at the end of the
    /// input, counts as a quiet one).
    pub fn close(&self, window_ns: u64) -> Option<Closed> {
        if self.requests == 0 {
            return None;
        }
        let n = f64::from(self.requests);
        let mean_interval_s = self.gaps.mean_ns().unwrap_or(window_ns as f64) / 1e9;
        let cv = self.gaps.cv().map_or(0.0, |cv| cv.min(MAX_CV));
        let features = [
            n.ln_1p(),
            (mean_interval_s * 1e3).ln_1p(),
            cv,
            f64::from(self.writes) / n,
            f64::from(self.exceptions) / f64::from(self.responses.max(1)),
            f64::from(self.function_codes.len()),
            f64::from(self.addresses.len()).ln_1p(),
            f64::from(self.diagnostics) / n,
            (self.quantity as f64 / n).ln_1p(),
            f64::from(self.units.len()).ln_1p(),
        ];
        Some(Closed {
            start_ns: self.start_ns,
            end_ns: self.last_request_ns,
            requests: self.requests,
            features,
            writes: self.writes,
            diagnostics: self.diagnostics,
            min_gap_ns: (self.gaps.count > 0).then_some(self.gaps.min),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = 5_000_000_000;
    const MS: u64 = 1_000_000;

    fn read(addr: u16, qty: u16) -> Request<'static> {
        Request::ReadHoldingRegisters { addr, qty }
    }

    #[test]
    fn a_window_closes_with_the_first_request_after_its_end() {
        let mut w = Window::default();
        for i in 0..10 {
            assert!(w.on_request(W, i * 500 * MS, 1, &read(0, 10)).is_none());
        }
        // 4.5 s after the first: still inside; 5 s: closes it.
        let c = w.on_request(W, 5_000 * MS, 1, &read(0, 10)).unwrap();
        let f = c.features;
        assert_eq!((c.start_ns, c.end_ns, c.requests), (0, 4_500 * MS, 10));
        assert!((f[0] - 10f64.ln_1p()).abs() < 1e-12, "ten requests");
        assert!((f[1] - 500f64.ln_1p()).abs() < 1e-9, "500 ms apart");
        assert!(f[2].abs() < 1e-9, "perfectly regular");
        let next = w.close(W).unwrap();
        assert_eq!(next.start_ns, 5_000 * MS, "the request opened the next");
        let next = next.features;
        assert!((next[0] - 1f64.ln_1p()).abs() < 1e-12);
        assert!(
            (next[1] - 5_000f64.ln_1p()).abs() < 1e-9,
            "one request: the window length"
        );
    }

    #[test]
    fn features_count_writes_exceptions_codes_addresses_and_units() {
        let mut w = Window::default();
        let reqs = [
            (1, read(0, 10)),
            (1, read(100, 20)),
            (2, Request::WriteSingleRegister { addr: 5, value: 1 }),
            (
                3,
                Request::Diagnostics {
                    sub: 0,
                    data: &[0, 0],
                },
            ),
        ];
        for (i, (unit, r)) in reqs.iter().enumerate() {
            w.on_request(W, i as u64 * MS, *unit, r);
        }
        w.on_response(false);
        w.on_response(true);
        let f = w.close(W).unwrap().features;
        assert!((f[3] - 0.25).abs() < 1e-12, "one write in four");
        assert!((f[4] - 0.5).abs() < 1e-12, "one exception in two responses");
        assert_eq!(f[5], 3.0, "FC 3, 6 and 8");
        assert!((f[6] - 2f64.ln_1p()).abs() < 1e-12, "two start addresses");
        assert!((f[7] - 0.25).abs() < 1e-12, "FC 8 is diagnostic");
        assert!(
            (f[8] - (30.0f64 / 4.0).ln_1p()).abs() < 1e-12,
            "mean quantity"
        );
        assert!((f[9] - 3f64.ln_1p()).abs() < 1e-12, "units 1, 2, 3");
    }

    #[test]
    fn irregular_requests_have_a_large_cv_and_empty_windows_no_features() {
        let w = Window::default();
        assert!(w.close(W).is_none());
        let mut w = Window::default();
        for t in [0, 1, 2, 3, 4_000] {
            w.on_request(W, t * MS, 1, &read(0, 1));
        }
        let f = w.close(W).unwrap().features;
        assert!(f[2] > 1.5, "cv {}", f[2]);
        assert!(f.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn gaps_give_the_population_cv_exactly() {
        let mut w = Window::default();
        for t in [0, 1, 3, 6] {
            w.on_request(W, t * MS, 1, &read(0, 1));
        }
        let c = w.close(W).unwrap();
        // Gaps of 1, 2 and 3 ms: mean 2 ms, standard deviation sqrt(2/3) ms.
        assert!((c.features[1] - 2f64.ln_1p()).abs() < 1e-12);
        assert!((c.features[2] - (2.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-12);
        assert_eq!(c.min_gap_ns, Some(MS));
    }

    /// A clock that jumps back and forth across the whole range neither
    /// overflows the sums nor gives a gap longer than the window.
    #[test]
    fn a_hostile_clock_gives_finite_features() {
        let day = 86_400 * 1_000_000_000;
        let mut w = Window::default();
        w.on_request(day, u64::MAX / 2, 1, &read(0, 1));
        for i in 0..10_000u64 {
            let t = if i % 2 == 0 {
                0
            } else {
                u64::MAX / 2 + day - 1
            };
            assert!(w.on_request(day, t, 1, &read(0, 1)).is_none());
        }
        let c = w.close(day).unwrap();
        assert!(c.features.iter().all(|f| f.is_finite()), "{:?}", c.features);
        assert!(c.features[1] <= (day as f64 / 1e6).ln_1p());
    }

    #[test]
    fn undefined_and_identification_codes_are_diagnostic() {
        for fc in [7, 8, 11, 12, 17, 20, 21, 24, 43, 90, 0x88] {
            assert!(is_diagnostic(fc), "{fc}");
        }
        for fc in [1, 2, 3, 4, 5, 6, 15, 16, 22, 23, 0x83] {
            assert!(!is_diagnostic(fc), "{fc}");
        }
    }
}
