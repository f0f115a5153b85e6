//! Request body bytes received by both servers over time, for checking a client's bandwidth
//! limit: counted as the handlers read them off the connection, in 100 ms slots since the
//! emulator started ([`Emulator::received_per_window`](crate::Emulator::received_per_window),
//! `GET /_emulator/received?window_ms=1000`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Width of one slot.
pub const SLOT: Duration = Duration::from_millis(100);

/// Bytes per slot since `start`.
pub struct ReceiveMeter {
    start: Instant,
    slots: Mutex<Vec<u64>>,
    /// When the first and the last byte arrived.
    span: Mutex<Option<(Instant, Instant)>>,
}

impl Default for ReceiveMeter {
    fn default() -> Self {
        ReceiveMeter { start: Instant::now(), slots: Mutex::new(Vec::new()), span: Mutex::new(None) }
    }
}

impl ReceiveMeter {
    /// Counts `n` bytes received now.
    pub fn add(&self, n: usize) {
        if n == 0 {
            return;
        }
        let now = Instant::now();
        {
            let mut span = self.span.lock().unwrap();
            let first = span.map_or(now, |(first, _)| first);
            *span = Some((first, now));
        }
        let slot = (now.duration_since(self.start).as_millis() / SLOT.as_millis()) as usize;
        let mut slots = self.slots.lock().unwrap();
        if slots.len() <= slot {
            slots.resize(slot + 1, 0);
        }
        slots[slot] += n as u64;
    }

    /// Total bytes received.
    pub fn total(&self) -> u64 {
        self.slots.lock().unwrap().iter().sum()
    }

    /// Bytes received in consecutive windows of `window` (rounded to whole slots, at least
    /// one), the first starting at the first slot that received anything; the last window may
    /// be partial. Empty when nothing was received.
    pub fn per_window(&self, window: Duration) -> Vec<u64> {
        let per = ((window.as_millis() / SLOT.as_millis()) as usize).max(1);
        let slots = self.slots.lock().unwrap();
        let Some(first) = slots.iter().position(|&n| n > 0) else { return vec![] };
        slots[first..].chunks(per).map(|c| c.iter().sum()).collect()
    }

    /// Time from the first byte received to the last one (zero when nothing was received).
    pub fn span(&self) -> Duration {
        self.span.lock().unwrap().map_or(Duration::ZERO, |(first, last)| last - first)
    }

    /// Forgets everything received so far.
    pub fn clear(&self) {
        self.slots.lock().unwrap().clear();
        *self.span.lock().unwrap() = None;
    }
}

/// Requests being handled by one server: how many now, and the most at once since the start
/// (or since [`InFlight::reset_peak`]). A request counts from its arrival until its answer
/// (the `latency_ms` wait included); its body is read within that time.
#[derive(Debug, Default)]
pub struct InFlight {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl InFlight {
    /// A request arrives; it counts until the guard is dropped.
    pub fn enter(&self) -> InFlightGuard<'_> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        InFlightGuard(self)
    }

    /// Requests being handled now.
    pub fn now(&self) -> usize {
        self.now.load(Ordering::SeqCst)
    }

    /// The most requests handled at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// A new measurement: the peak restarts from the requests handled now.
    pub fn reset_peak(&self) {
        self.peak.store(self.now(), Ordering::SeqCst);
    }
}

/// One request counted by an [`InFlight`].
pub struct InFlightGuard<'a>(&'a InFlight);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}
