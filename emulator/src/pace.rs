//! Pacing of object uploads received by the S3 store: each request body read at most at the
//! per-connection cap (`Faults::bandwidth_bps`), and all of them together at most at the total
//! cap (`Faults::total_bandwidth_bps`), as a link shared by every connection would.
//!
//! The total cap is a virtual clock shared by every body: each chunk read books the next
//! `len / rate` seconds of the link after the bookings before it and waits until then, so the
//! sum of every connection's bytes never runs ahead of the rate (no burst after an idle time),
//! and late wake-ups are not paid back by anyone.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The link every upload shares (see the module documentation).
#[derive(Debug, Default)]
pub struct TotalCap {
    /// When the link is free again.
    free_at: Mutex<Option<Instant>>,
}

/// How far the link's clock may lag behind now: a wake-up a timer tick late (1 ms) is not lost
/// to the link, so the rate holds with small chunks; at most this much of burst follows an idle
/// time.
const SLACK: Duration = Duration::from_millis(5);

impl TotalCap {
    /// Books `bytes` at `bps` after the bookings made so far; returns when they are sent.
    fn book(&self, bytes: u64, bps: u64) -> Instant {
        let now = Instant::now();
        let mut free_at = self.free_at.lock().unwrap();
        let floor = now.checked_sub(SLACK).unwrap_or(now);
        let start = free_at.filter(|t| *t > floor).unwrap_or(floor);
        let done = start + Duration::from_secs_f64(bytes as f64 / bps as f64);
        *free_at = Some(done);
        done
    }
}

/// The pacing of one request body.
pub struct Pace<'a> {
    start: Instant,
    read: u64,
    per_connection_bps: u64,
    total: Option<(&'a TotalCap, u64)>,
}

impl<'a> Pace<'a> {
    /// Unpaced.
    pub fn none() -> Pace<'static> {
        Pace { start: Instant::now(), read: 0, per_connection_bps: 0, total: None }
    }

    /// At most `per_connection_bps` for this body (0 = no cap) and `total_bps` over `link`
    /// for every body together (0 = no cap).
    pub fn new(per_connection_bps: u64, link: &'a TotalCap, total_bps: u64) -> Self {
        Pace { start: Instant::now(), read: 0, per_connection_bps, total: (total_bps > 0).then_some((link, total_bps)) }
    }

    /// `bytes` more were read: waits until the caps allow them.
    pub async fn advance(&mut self, bytes: u64) {
        self.read += bytes;
        if self.per_connection_bps > 0 {
            let due = self.start + Duration::from_secs_f64(self.read as f64 / self.per_connection_bps as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        if let Some((link, bps)) = self.total {
            let done = link.book(bytes, bps);
            if done > Instant::now() {
                tokio::time::sleep_until(done.into()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookings_follow_each_other_at_the_rate() {
        let link = TotalCap::default();
        let t0 = Instant::now();
        let a = link.book(1_000, 10_000); // 0.1 s (from at most SLACK ago)
        let b = link.book(2_000, 10_000); // 0.2 s more
        assert!(a + SLACK >= t0 + Duration::from_millis(100));
        assert!(b >= a + Duration::from_millis(199), "{:?}", b - a);
    }
}
