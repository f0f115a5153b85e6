//! Progress reporting behind a small trait, so the engine knows nothing of terminals.

use std::time::Duration;

/// Something that happened during a transfer. More kinds may be added: match with a `_` arm.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// A file's transfer begins.
    Started {
        /// The file's name.
        file: String,
        /// Total bytes to send.
        total_bytes: u64,
        /// Number of parts.
        parts: u32,
        /// Bytes already on the server (resumed parts).
        done_bytes: u64,
        /// Parts already on the server.
        done_parts: u32,
    },
    /// Bytes of a part were handed to the connection (negative when an attempt is rolled back).
    Bytes {
        /// Part number.
        part: u32,
        /// Change in bytes sent.
        delta: i64,
    },
    /// A part attempt failed and will be retried after `delay`.
    Retry {
        /// Part number (0 for a control-plane call).
        part: u32,
        /// Attempt that failed (1-based).
        attempt: u32,
        /// Why (redacted).
        reason: String,
        /// Wait before the next attempt.
        delay: Duration,
    },
    /// A part was stored by the server.
    PartDone {
        /// Part number.
        part: u32,
    },
    /// A phase or state change worth showing ("completing", "PROCESSING", ...).
    Phase {
        /// Short text.
        message: String,
    },
    /// Something worth a line of its own, even beside progress bars: an interrupted upload
    /// carried on (`resuming capture X: 24 of 128 parts already sent`), one adopted, one that
    /// has to start over. A [`Event::Phase`] is a state that the next one replaces.
    Notice {
        /// Short text.
        message: String,
    },
    /// The file's transfer ended (successfully or not).
    Finished,
}

/// Receives progress events. Implementations must be cheap: `Bytes` comes once per read chunk.
pub trait Progress: Send + Sync {
    /// Handles one event.
    fn event(&self, event: Event);
}

/// Ignores everything.
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _event: Event) {}
}

/// The bytes one attempt reported as sent ([`Event::Bytes`]), taken back when it is dropped
/// without [`AttemptBytes::keep`]: the attempt failed, or was dropped (cut by the idle watch,
/// or by Ctrl-C), so its bytes must not stay counted.
pub struct AttemptBytes {
    sent: std::sync::Arc<std::sync::atomic::AtomicI64>,
    progress: std::sync::Arc<dyn Progress>,
    part: u32,
    kept: bool,
}

impl AttemptBytes {
    /// Counts the bytes of an attempt at `part`.
    pub fn new(progress: std::sync::Arc<dyn Progress>, part: u32) -> Self {
        AttemptBytes { sent: Default::default(), progress, part, kept: false }
    }

    /// Reports `n` more bytes sent (for a body stream's callback).
    pub fn counter(&self) -> impl Fn(u64) + Send + Sync + 'static {
        let (sent, progress, part) = (self.sent.clone(), self.progress.clone(), self.part);
        move |n| {
            sent.fetch_add(n as i64, std::sync::atomic::Ordering::Relaxed);
            progress.event(Event::Bytes { part, delta: n as i64 });
        }
    }

    /// The attempt stored its bytes: they stay counted.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for AttemptBytes {
    fn drop(&mut self) {
        let n = self.sent.swap(0, std::sync::atomic::Ordering::Relaxed);
        if !self.kept && n != 0 {
            self.progress.event(Event::Bytes { part: self.part, delta: -n });
        }
    }
}
