//! The one way the engine waits: every sleep is bounded and gives way to cancellation, so a
//! first Ctrl-C interrupts a backoff, a poll interval or a lock wait at once. A run's time limit
//! ([`TimeLimit`]: `--max-duration`, `--until`) is the engine's too: the one timer that stops a
//! run cleanly, and how long its work in flight gets ([`Halt::cut`]).

use std::sync::{Arc, Once};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// How long work in flight gets to finish after a first Ctrl-C (a part's PUT, an API call)
/// before it is dropped: the run ends within [`GRACE`] and a little, well under the 5 s the
/// README promises.
pub(crate) const GRACE: Duration = Duration::from_secs(3);

/// How long work in flight (a part's PUT, an API call) gets to finish once a run's
/// [`TimeLimit`] is reached, before it is cut: a stop at a time is a clean end, not an alarm,
/// so a part that is nearly there still lands (a Ctrl-C meanwhile shortens it to [`GRACE`]).
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// A run's time limit: once reached, no new file or part starts, the work in flight gets
/// [`STOP_GRACE`] to finish, and the uploads end with [`Error::Stopped`] (journals kept, so the
/// same command, or `upload pending --resume`, carries on). Cheap to clone; clones share one
/// timer, armed at the first wait on it (inside the tokio runtime).
#[derive(Clone)]
pub struct TimeLimit(Arc<LimitInner>);

struct LimitInner {
    at: std::time::Instant,
    reached: CancellationToken,
    armed: Once,
}

impl std::fmt::Debug for TimeLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeLimit").field("in", &self.remaining()).finish()
    }
}

impl TimeLimit {
    /// A limit at `at` (the monotonic clock: a change of the wall clock does not move it).
    pub fn at(at: std::time::Instant) -> Self {
        TimeLimit(Arc::new(LimitInner { at, reached: CancellationToken::new(), armed: Once::new() }))
    }

    /// A limit `d` from now (`--max-duration`).
    pub fn after(d: Duration) -> Self {
        let now = std::time::Instant::now();
        Self::at(now.checked_add(d).unwrap_or(now + Duration::from_secs(100 * 365 * 86_400)))
    }

    /// The instant of the limit.
    pub fn deadline(&self) -> std::time::Instant {
        self.0.at
    }

    /// How long until the limit (zero once reached).
    pub fn remaining(&self) -> Duration {
        self.0.at.saturating_duration_since(std::time::Instant::now())
    }

    /// Whether the limit has been reached.
    pub fn reached(&self) -> bool {
        self.0.reached.is_cancelled() || std::time::Instant::now() >= self.0.at
    }

    /// Resolves once the limit is reached.
    pub async fn wait(&self) {
        self.arm();
        self.0.reached.cancelled().await
    }

    fn arm(&self) {
        self.0.armed.call_once(|| {
            let (reached, at) = (self.0.reached.clone(), tokio::time::Instant::from_std(self.0.at));
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                reached.cancel();
            });
        });
    }

    /// A token that fires when `cancel` does or the limit is reached, whichever comes first,
    /// and the [`Halt`] that says how long work in flight gets after it fired. The guard ends
    /// the link (drop it when the work is done).
    pub(crate) fn link(&self, cancel: &CancellationToken) -> (CancellationToken, Halt, tokio_util::sync::DropGuard) {
        let linked = cancel.child_token();
        if self.reached() {
            linked.cancel();
        } else {
            self.arm();
            let (reached, l) = (self.0.reached.clone(), linked.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = reached.cancelled() => l.cancel(),
                    _ = l.cancelled() => {}
                }
            });
        }
        let halt = Halt { limit: Some(self.clone()), user: cancel.clone() };
        (linked.clone(), halt, linked.drop_guard())
    }
}

/// How long work in flight gets once its cancellation token fired: [`GRACE`] after a Ctrl-C,
/// [`STOP_GRACE`] after the run's time limit (cut short by a Ctrl-C meanwhile).
#[derive(Clone, Debug, Default)]
pub struct Halt {
    limit: Option<TimeLimit>,
    /// The token of the user's stop (Ctrl-C), apart from the time limit's.
    user: CancellationToken,
}

impl Halt {
    /// Whether the time limit stopped the work (and not the user).
    pub fn by_time_limit(&self) -> bool {
        !self.user.is_cancelled() && self.limit.as_ref().is_some_and(TimeLimit::reached)
    }

    /// Resolves when work in flight must be dropped, `cancel` having fired (or firing): `grace`
    /// after a Ctrl-C; after the time limit, [`STOP_GRACE`] from the limit, or [`GRACE`] after
    /// a Ctrl-C that comes meanwhile, whichever is first.
    pub async fn cut(&self, cancel: &CancellationToken, grace: Duration) {
        cancel.cancelled().await;
        match &self.limit {
            Some(limit) if self.by_time_limit() => {
                let end = tokio::time::Instant::from_std(limit.deadline() + STOP_GRACE);
                tokio::select! {
                    _ = tokio::time::sleep_until(end) => {}
                    _ = async { self.user.cancelled().await; tokio::time::sleep(GRACE).await } => {}
                }
            }
            _ => tokio::time::sleep(grace).await,
        }
    }

    /// `err` as the time limit makes it: an interruption by the limit is [`Error::Stopped`].
    pub fn judge(&self, err: Error, started: bool) -> Error {
        match err {
            Error::Interrupted { .. } if self.by_time_limit() => Error::Stopped { started },
            e => e,
        }
    }
}

/// Sleeps for `delay`, or returns [`Error::Interrupted`] as soon as `cancel` fires.
pub(crate) async fn sleep(delay: Duration, cancel: &CancellationToken) -> Result<()> {
    if cancel.is_cancelled() {
        return Err(interrupted());
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => Ok(()),
        _ = cancel.cancelled() => Err(interrupted()),
    }
}

/// A token that a task cancels after `after`: the tests' Ctrl-C during a wait.
#[cfg(test)]
pub(crate) fn cancelled_after(after: Duration) -> CancellationToken {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        c.cancel();
    });
    cancel
}

fn interrupted() -> Error {
    Error::Interrupted { hint: "run the same command again to resume".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancelled_sleep_ends_at_once() {
        let cancel = cancelled_after(Duration::from_millis(20));
        let t0 = std::time::Instant::now();
        let r = sleep(Duration::from_secs(3600), &cancel).await;
        assert!(matches!(r, Err(Error::Interrupted { .. })), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(60));
        // Already cancelled: no wait at all.
        assert!(sleep(Duration::from_secs(3600), &cancel).await.is_err());
        assert!(sleep(Duration::from_millis(1), &CancellationToken::new()).await.is_ok());
    }

    #[tokio::test]
    async fn a_time_limit_stops_linked_work_and_a_ctrl_c_still_wins() {
        let limit = TimeLimit::after(Duration::from_millis(100));
        let user = CancellationToken::new();
        let (linked, halt, _guard) = limit.link(&user);
        assert!(!linked.is_cancelled() && !halt.by_time_limit());
        tokio::time::timeout(Duration::from_secs(30), linked.cancelled()).await.expect("fired at the limit");
        assert!(limit.reached() && halt.by_time_limit() && !user.is_cancelled());
        let e = halt.judge(Error::Interrupted { hint: String::new() }, true);
        assert!(matches!(e, Error::Stopped { started: true }), "{e:?}");
        // Work in flight gets STOP_GRACE, unless a Ctrl-C comes: then GRACE from it.
        let t0 = std::time::Instant::now();
        let c = user.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.cancel();
        });
        halt.cut(&linked, GRACE).await;
        assert!(t0.elapsed() >= GRACE && t0.elapsed() < STOP_GRACE, "{:?}", t0.elapsed());
        // After the user's own stop, an interruption stays one.
        assert!(matches!(halt.judge(Error::Interrupted { hint: String::new() }, true), Error::Interrupted { .. }));
        // A limit already reached links a token that is cancelled at once.
        let (again, _, _g) = limit.link(&CancellationToken::new());
        assert!(again.is_cancelled());
    }
}
