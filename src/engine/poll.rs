//! The one polling loop: ask until a terminal state, with a growing interval, a deadline and
//! cancellation. Every "wait until processed / delivered / there is something new" of every
//! provider and subcommand goes through [`Poller::until`].
//!
//! - the interval starts at [`Poller::interval`] and grows by half each time nothing changed,
//!   up to [`Poller::max_interval`]; a check that says [`Step::Now`] (a long poll that moved on)
//!   is asked again at once;
//! - each check runs under the deadline too: a check that hangs past it ends the wait;
//! - a first Ctrl-C ends a wait at once (a check in flight is dropped: checks only read).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// What a check found.
#[derive(Debug)]
pub(crate) enum Step<T> {
    /// A terminal state: the wait is over.
    Done(T),
    /// Not yet: ask again after the interval.
    Again,
    /// Something moved: ask again at once (a long poll's new cursor).
    Now,
}

/// How to poll.
#[derive(Clone, Debug)]
pub(crate) struct Poller {
    /// First interval between checks.
    pub interval: Duration,
    /// Largest interval.
    pub max_interval: Duration,
    /// How long to wait at most; `None` = until cancelled.
    pub timeout: Option<Duration>,
}

impl Poller {
    /// Polls every `interval` (growing to `max_interval`) for at most `timeout`.
    pub(crate) fn new(interval: Duration, max_interval: Duration, timeout: Option<Duration>) -> Self {
        Poller { interval, max_interval: max_interval.max(interval), timeout }
    }

    /// Runs `check` until it says [`Step::Done`]. `on_timeout` and `on_interrupt` make the
    /// error for a passed deadline ([`Error::Timeout`] as a rule) and for a Ctrl-C
    /// ([`Error::Interrupted`] with a hint on how to carry on); a check's own error ends the
    /// wait as it is (its requests were already retried by the executor).
    pub(crate) async fn until<T, F, Fut>(
        &self,
        cancel: &CancellationToken,
        on_timeout: impl Fn() -> Error,
        on_interrupt: impl Fn() -> Error,
        mut check: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Step<T>>>,
    {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let mut interval = self.interval.max(Duration::from_millis(10));
        loop {
            let step = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(on_interrupt()),
                r = bounded(deadline, check()) => match r {
                    Some(r) => r?,
                    None => return Err(on_timeout()),
                },
            };
            match step {
                Step::Done(v) => return Ok(v),
                Step::Now => continue,
                Step::Again => {}
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(on_timeout());
            }
            let wake = deadline.map_or(now + interval, |d| (now + interval).min(d));
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(on_interrupt()),
                _ = tokio::time::sleep_until(wake) => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(on_timeout());
            }
            interval = interval.mul_f64(1.5).min(self.max_interval);
        }
    }
}

/// `fut`, or `None` when `deadline` passes first.
async fn bounded<F: Future>(deadline: Option<Instant>, fut: F) -> Option<F::Output> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, fut).await.ok(),
        None => Some(fut.await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn timeout() -> Error {
        Error::Timeout { what: "t".into(), seconds: 1 }
    }
    fn interrupted() -> Error {
        Error::Interrupted { hint: "h".into() }
    }

    #[tokio::test]
    async fn polls_until_done_with_a_growing_interval() {
        let p = Poller::new(Duration::from_millis(10), Duration::from_millis(40), Some(Duration::from_secs(60)));
        let n = AtomicU32::new(0);
        let t0 = std::time::Instant::now();
        let v = p
            .until(&CancellationToken::new(), timeout, interrupted, || async {
                let k = n.fetch_add(1, Ordering::SeqCst);
                Ok(if k == 4 { Step::Done(k) } else { Step::Again })
            })
            .await
            .unwrap();
        assert_eq!(v, 4);
        // 10 + 15 + 22.5 + 33.75 ms at least.
        assert!(t0.elapsed() >= Duration::from_millis(80), "{:?}", t0.elapsed());
    }

    #[tokio::test]
    async fn the_deadline_ends_the_wait_even_inside_a_hanging_check() {
        let p = Poller::new(Duration::from_millis(10), Duration::from_millis(10), Some(Duration::from_millis(50)));
        let e = p
            .until(&CancellationToken::new(), timeout, interrupted, || async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(Step::Done(()))
            })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        let n = AtomicU32::new(0);
        let e = p
            .until(&CancellationToken::new(), timeout, interrupted, || async {
                n.fetch_add(1, Ordering::SeqCst);
                Ok(Step::<()>::Again)
            })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        assert!(n.load(Ordering::SeqCst) >= 2);
    }

    #[tokio::test]
    async fn ctrl_c_ends_the_wait_at_once() {
        let p = Poller::new(Duration::from_secs(3600), Duration::from_secs(3600), None);
        let cancel = crate::engine::wait::cancelled_after(Duration::from_millis(30));
        let t0 = std::time::Instant::now();
        let e = p.until(&cancel, timeout, interrupted, || async { Ok(Step::<()>::Again) }).await.unwrap_err();
        assert!(matches!(e, Error::Interrupted { .. }), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(60));
    }

    #[tokio::test]
    async fn now_asks_again_without_waiting_and_errors_end_the_wait() {
        let p = Poller::new(Duration::from_secs(3600), Duration::from_secs(3600), None);
        let n = AtomicU32::new(0);
        let v = p
            .until(&CancellationToken::new(), timeout, interrupted, || async {
                let k = n.fetch_add(1, Ordering::SeqCst);
                Ok(if k < 3 { Step::Now } else { Step::Done(k) })
            })
            .await
            .unwrap();
        assert_eq!(v, 3);
        let e = p
            .until(&CancellationToken::new(), timeout, interrupted, || async {
                Err::<Step<()>, _>(Error::usage("boom", "x"))
            })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("boom"));
    }
}
