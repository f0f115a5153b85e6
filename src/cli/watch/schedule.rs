//! The scheduling timers of `upload watch`, all in one place: when a file has settled, when the
//! next look at the pending files is due, when a failed file is tried again. These are not
//! HTTP retries (those are [`crate::engine::request`]'s); each is bounded and yields to cancellation.
//! A periodic tick rather than [`crate::engine::wait::sleep`]: a sleep restarted at each event would
//! never end while events keep coming.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How long a file (or a directory) has kept the same signature (size and mtime).
#[derive(Clone, Debug)]
pub(crate) struct Settle<S> {
    sig: S,
    since: Instant,
}

impl<S: PartialEq> Settle<S> {
    /// A signature first seen unchanged since `since`.
    pub(crate) fn new(sig: S, since: Instant) -> Self {
        Settle { sig, since }
    }

    /// The signature seen now; returns true (and restarts the clock) when it changed.
    pub(crate) fn observe(&mut self, sig: S, now: Instant) -> bool {
        if sig == self.sig {
            return false;
        }
        self.sig = sig;
        self.since = now;
        true
    }

    /// The signature last seen.
    pub(crate) fn sig(&self) -> &S {
        &self.sig
    }

    /// Restarts the clock (an event said the file changed, whatever its signature says).
    pub(crate) fn touch(&mut self, now: Instant) {
        self.since = now;
    }

    /// Unchanged for at least `settle`.
    pub(crate) fn settled(&self, now: Instant, settle: Duration) -> bool {
        now.saturating_duration_since(self.since) >= settle
    }

    /// How long it has been unchanged.
    pub(crate) fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.since)
    }
}

/// The instant `age` ago (a file's mtime seen as "unchanged since"), never before the process
/// clock's origin.
pub(crate) fn instant_ago(now: Instant, age: Duration) -> Instant {
    now.checked_sub(age).unwrap_or(now)
}

/// Delay before trying again a file that failed `failures` times (≥ 1): `base`, doubling at each
/// further failure, at most 8 × `base`.
pub(crate) fn failed_backoff(base: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(3);
    base.saturating_mul(factor)
}

/// How often the pending files are looked at: a quarter of `settle`, between 50 ms and 1 s.
pub(crate) fn tick_interval(settle: Duration) -> Duration {
    (settle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// A periodic tick that skips missed ticks instead of bursting.
pub(crate) struct Ticker(tokio::time::Interval);

impl Ticker {
    /// Ticks every `period` (the first tick after one period).
    pub(crate) fn new(period: Duration) -> Self {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ticker(i)
    }

    /// Waits for the next tick; false when `cancel` fired first.
    pub(crate) async fn tick(&mut self, cancel: &CancellationToken) -> bool {
        tokio::select! {
            _ = self.0.tick() => true,
            _ = cancel.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settle_restarts_on_change_only() {
        let t0 = Instant::now();
        let mut s = Settle::new((10u64, 1u64), t0);
        let t1 = t0 + Duration::from_secs(3);
        assert!(!s.observe((10, 1), t1));
        assert!(s.settled(t1, Duration::from_secs(3)));
        assert!(s.observe((11, 2), t1));
        assert!(!s.settled(t1 + Duration::from_secs(2), Duration::from_secs(3)));
        assert!(s.settled(t1 + Duration::from_secs(3), Duration::from_secs(3)));
        s.touch(t1 + Duration::from_secs(3));
        assert!(!s.settled(t1 + Duration::from_secs(4), Duration::from_secs(3)));
    }

    #[test]
    fn backoff_doubles_up_to_eight_times() {
        let m = Duration::from_secs(60);
        let got: Vec<u64> = (1..=6).map(|n| failed_backoff(m, n).as_secs()).collect();
        assert_eq!(got, [60, 120, 240, 480, 480, 480]);
        assert_eq!(tick_interval(Duration::from_millis(300)), Duration::from_millis(75));
        assert_eq!(tick_interval(Duration::from_secs(60)), Duration::from_secs(1));
        assert_eq!(tick_interval(Duration::ZERO), Duration::from_millis(50));
    }

    #[tokio::test]
    async fn the_ticker_yields_to_cancellation() {
        let c = CancellationToken::new();
        c.cancel();
        let t = Instant::now();
        assert!(!Ticker::new(Duration::from_secs(60)).tick(&c).await);
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
