//! The one way the engine waits: every sleep is bounded and gives way to cancellation, so a
//! first Ctrl-C interrupts a backoff, a poll interval or a lock wait at once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// How long work in flight gets to finish after a first Ctrl-C (a part's PUT, an API call)
/// before it is dropped: the run ends within [`GRACE`] and a little, well under the 5 s the
/// README promises.
pub(crate) const GRACE: Duration = Duration::from_secs(3);

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
}
