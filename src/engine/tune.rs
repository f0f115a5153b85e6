//! Concurrency that tunes itself (`--concurrency auto`, the default), and the run's permit pool
//! that every part PUT (and every Apertur image) takes a permit from.
//!
//! [`Tuner`] is the pure decision: it is fed part completions (bytes, when the part took its
//! permit and when it finished, how many permits were in use) and throttling answers, and says
//! how many parts may be in flight:
//! - **slow start**: from [`DEFAULT_START`] connections, the level doubles after each
//!   measurement window whose throughput beat the previous one by more than
//!   [`TunerConfig::gain`]; the first step that does not is undone, and the level settles;
//! - **steady**: each window is compared with the reference throughput of the level; a fall of
//!   more than [`TunerConfig::fall`] backs off to ¾ of the level; every
//!   [`TunerConfig::probe_every`] windows one step up (+¼) is tried, and kept only if it pays;
//! - **throttling** (S3 503 SlowDown, HTTP 429) halves the level at once, at most once per
//!   [`TunerConfig::cooldown`] (one back-off per burst of refusals of parts already in flight);
//! - bounded by `max` (`--max-concurrency`) and by memory ([`memory_cap`]); never below 1.
//!
//! Throughput of a window is estimated by Little's law: the permits in use on average times the
//! bytes per second of one permit (Σ bytes / Σ time held), over the parts that took their permit
//! after the level last changed, so parts started at the old level do not blur the new one. A
//! window in which the permits were not used (fewer parts ready than permits: the end of a
//! file, or files that spend their time in API calls) decides nothing: more permits would not
//! be used either.
//!
//! [`Permits`] is the pool: a semaphore resized by the tuner (permits added at once; removed
//! ones forgotten as they come back) or pinned (`--concurrency N`). Under `auto`, a small file
//! sent whole (one part, or an Apertur image, of at most [`SMALL_PART`] bytes) takes its permit
//! from a second pool of `max` permits instead, and is no sample: the time of a small file's
//! PUT is its round trip, not bandwidth,
//! so its "throughput" says nothing about how many connections the link takes. (Tuning on it
//! backed a run of 2,000 files of 64 KiB off to 6 PUTs at once, which then held up the files
//! waiting behind them: a third of the files per second.) The files in flight bound them
//! ([`FileGate`]), and their memory is their size. A store that throttles (503 SlowDown, 429)
//! throttles its request rate, which is what many small files make: that pool is halved then,
//! and grown back by half after each round stored without a throttled answer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections an automatic run starts with: today's fixed default, so that a link that wants
/// more is reached in one doubling (a slow start from 4 spent its first 0.8 s at half of a
/// 200 MiB/s link made of 20 MiB/s connections: 88 % of the link for a 1 GiB file).
pub(crate) const DEFAULT_START: usize = 8;
/// Default `--max-concurrency`.
pub(crate) const DEFAULT_MAX: usize = 64;
/// Memory the parts in flight of a run may hold together (their read buffers): the automatic
/// level stays under `MEMORY_BUDGET / memory of one part`.
pub(crate) const MEMORY_BUDGET: u64 = 64 << 20;
/// The most a part in flight holds in memory (two read buffers), whatever its size.
pub(crate) const PART_MEMORY: u64 = 2 * super::source::READ_CHUNK as u64;

/// Files of at most this many bytes sent in one request do not take a tuned permit under
/// `auto` (see the module documentation).
pub(crate) const SMALL_PART: u64 = 1 << 20;

/// How many parts go at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Concurrency {
    /// Pinned (`--concurrency N`).
    Fixed(usize),
    /// Tuned from the measured throughput, at most `max` (`--concurrency auto`).
    Auto {
        /// `--max-concurrency`.
        max: usize,
    },
}

impl Concurrency {
    /// The most parts in flight this setting allows.
    pub fn max(self) -> usize {
        match self {
            Concurrency::Fixed(n) => n.max(1),
            Concurrency::Auto { max } => max.max(1),
        }
    }

    /// The level a run starts with.
    pub fn start(self) -> usize {
        match self {
            Concurrency::Fixed(n) => n.max(1),
            Concurrency::Auto { max } => DEFAULT_START.min(max.max(1)),
        }
    }

    /// `auto` or the number.
    pub fn describe(self) -> String {
        match self {
            Concurrency::Fixed(n) => n.to_string(),
            Concurrency::Auto { .. } => "auto".into(),
        }
    }
}

/// The most parts of `part_bytes` each that fit [`MEMORY_BUDGET`].
pub(crate) fn memory_cap(part_bytes: u64) -> usize {
    let per_part = part_bytes.clamp(64 << 10, PART_MEMORY);
    (MEMORY_BUDGET / per_part).max(1) as usize
}

/// The tuner's knobs.
#[derive(Clone, Debug)]
pub struct TunerConfig {
    /// First level.
    pub start: usize,
    /// Highest level.
    pub max: usize,
    /// A step up must raise the throughput by more than this fraction to be kept.
    pub gain: f64,
    /// A steady throughput this fraction under the reference backs off.
    pub fall: f64,
    /// Shortest measurement window.
    pub min_window: Duration,
    /// Fewest completions in a window (also at least half the level).
    pub min_samples: usize,
    /// Steady windows between two probes upward.
    pub probe_every: u32,
    /// After a back-off on throttling, further throttling answers within this time are the
    /// same burst (parts sent before the back-off) and do not back off again.
    pub cooldown: Duration,
}

impl TunerConfig {
    /// Defaults for a run bounded by `max`.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        TunerConfig {
            start: DEFAULT_START.min(max),
            max,
            gain: 0.05,
            fall: 0.25,
            min_window: Duration::from_millis(200),
            min_samples: 4,
            probe_every: 8,
            cooldown: Duration::from_millis(500),
        }
    }
}

/// One finished part, as the tuner sees it. Times are offsets from the run's start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    /// When the part took its permit.
    pub started: Duration,
    /// When it was stored.
    pub finished: Duration,
    /// Its bytes.
    pub bytes: u64,
    /// Permits in use when it finished (itself included).
    pub in_use: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Doubling; `last` = (level, throughput) of the previous window.
    SlowStart { last: Option<(usize, f64)> },
    /// Settled; `reference` = the level's throughput (a moving average), `windows` since the
    /// last change.
    Steady { reference: Option<f64>, windows: u32 },
    /// Trying a step up from `from`, whose throughput was `reference`.
    Probe { from: usize, reference: f64 },
}

/// A change of level and why.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Change {
    /// Level before.
    pub from: usize,
    /// Level after.
    pub to: usize,
    /// Why, for the logs.
    pub reason: String,
}

/// The pure decision (see the module documentation).
#[derive(Clone, Debug)]
pub(crate) struct Tuner {
    cfg: TunerConfig,
    level: usize,
    max: usize,
    mode: Mode,
    /// Start of the current window (the last change).
    since: Duration,
    n: usize,
    bytes: u64,
    held: f64,
    in_use: usize,
    throttled_at: Option<Duration>,
}

const MIB: f64 = 1048576.0;

impl Tuner {
    /// A tuner at `cfg.start`.
    pub(crate) fn new(cfg: TunerConfig) -> Self {
        let level = cfg.start.clamp(1, cfg.max.max(1));
        Tuner {
            max: cfg.max.max(1),
            cfg,
            level,
            mode: Mode::SlowStart { last: None },
            since: Duration::ZERO,
            n: 0,
            bytes: 0,
            held: 0.0,
            in_use: 0,
            throttled_at: None,
        }
    }

    /// Parts allowed in flight now.
    pub(crate) fn level(&self) -> usize {
        self.level
    }

    /// Lowers (or raises, up to the configured maximum) the highest level: the memory cap.
    pub(crate) fn set_max(&mut self, max: usize, now: Duration) -> Option<Change> {
        self.max = max.clamp(1, self.cfg.max);
        if self.level > self.max {
            let to = self.max;
            return self.change(to, now, "memory cap".into(), None);
        }
        None
    }

    /// A part finished.
    pub(crate) fn on_sample(&mut self, s: Sample) -> Option<Change> {
        if s.started < self.since {
            return None;
        }
        self.n += 1;
        self.bytes += s.bytes;
        self.held += s.finished.saturating_sub(s.started).as_secs_f64();
        self.in_use += s.in_use;
        let enough = self.n >= self.cfg.min_samples.max(self.level / 2);
        if !enough || s.finished.saturating_sub(self.since) < self.cfg.min_window {
            return None;
        }
        let busy = self.in_use as f64 / self.n as f64;
        let rate = if self.held > 0.0 { busy * self.bytes as f64 / self.held } else { f64::MAX };
        let starved = busy < 0.75 * self.level as f64;
        self.decide(rate, starved, s.finished)
    }

    /// The server refused a request as throttled (503 SlowDown, 429).
    pub(crate) fn on_throttle(&mut self, now: Duration) -> Option<Change> {
        if self.throttled_at.is_some_and(|t| now.saturating_sub(t) < self.cfg.cooldown) {
            return None;
        }
        self.throttled_at = Some(now);
        let to = (self.level / 2).max(1);
        let mode = Mode::Steady { reference: None, windows: 0 };
        if to == self.level {
            self.mode = mode;
            self.restart(now);
            return None;
        }
        self.change(to, now, "throttled by the server (503 SlowDown / 429)".into(), Some(mode))
    }

    fn decide(&mut self, rate: f64, starved: bool, now: Duration) -> Option<Change> {
        let grow = |level: usize, max: usize, by_double: bool| {
            if by_double { (level * 2).min(max) } else { (level + (level / 4).max(1)).min(max) }
        };
        let gain = 1.0 + self.cfg.gain;
        let show = |r: f64| format!("{:.1} MiB/s", r / MIB);
        match self.mode {
            Mode::SlowStart { last } => {
                if starved {
                    // Not every permit was used: more would not be either. Measure again.
                    self.restart(now);
                    return None;
                }
                match last {
                    Some((prev_level, prev_rate)) if rate <= prev_rate * gain => {
                        let mode = Mode::Steady { reference: Some(prev_rate), windows: 0 };
                        let why = format!(
                            "{} at {} after {} at {prev_level}: settled",
                            show(rate),
                            self.level,
                            show(prev_rate)
                        );
                        self.change(prev_level, now, why, Some(mode))
                    }
                    _ if self.level >= self.max => {
                        self.mode = Mode::Steady { reference: Some(rate), windows: 0 };
                        self.restart(now);
                        None
                    }
                    _ => {
                        let to = grow(self.level, self.max, true);
                        let mode = Mode::SlowStart { last: Some((self.level, rate)) };
                        self.change(to, now, format!("{} at {}: growing", show(rate), self.level), Some(mode))
                    }
                }
            }
            Mode::Steady { reference, windows } => {
                let Some(reference) = reference else {
                    self.mode = Mode::Steady { reference: (!starved).then_some(rate), windows: 0 };
                    self.restart(now);
                    return None;
                };
                if starved {
                    self.mode = Mode::Steady { reference: Some(reference), windows: windows + 1 };
                    self.restart(now);
                    return None;
                }
                if rate < reference * (1.0 - self.cfg.fall) {
                    let to = (self.level * 3 / 4).max(1);
                    let why = format!("{} at {}, down from {}: backing off", show(rate), self.level, show(reference));
                    let mode = Mode::Steady { reference: None, windows: 0 };
                    if to == self.level {
                        self.mode = mode;
                        self.restart(now);
                        return None;
                    }
                    return self.change(to, now, why, Some(mode));
                }
                let reference = 0.8 * reference + 0.2 * rate;
                if windows + 1 >= self.cfg.probe_every && self.level < self.max {
                    let to = grow(self.level, self.max, false);
                    let mode = Mode::Probe { from: self.level, reference };
                    return self.change(to, now, format!("{} at {}: probing", show(rate), self.level), Some(mode));
                }
                self.mode = Mode::Steady { reference: Some(reference), windows: windows + 1 };
                self.restart(now);
                None
            }
            Mode::Probe { from, reference } => {
                if !starved && rate > reference * gain {
                    if self.level >= self.max {
                        self.mode = Mode::Steady { reference: Some(rate), windows: 0 };
                        self.restart(now);
                        return None;
                    }
                    let to = grow(self.level, self.max, false);
                    let mode = Mode::Probe { from: self.level, reference: rate };
                    return self.change(to, now, format!("{} at {}: growing", show(rate), self.level), Some(mode));
                }
                let mode = Mode::Steady { reference: Some(reference), windows: 0 };
                let why = format!("{} at {}, {} at {from}: back", show(rate), self.level, show(reference));
                self.change(from, now, why, Some(mode))
            }
        }
    }

    fn change(&mut self, to: usize, now: Duration, reason: String, mode: Option<Mode>) -> Option<Change> {
        if let Some(m) = mode {
            self.mode = m;
        }
        self.restart(now);
        let from = self.level;
        self.level = to.clamp(1, self.max);
        (self.level != from).then_some(Change { from, to: self.level, reason })
    }

    fn restart(&mut self, now: Duration) {
        self.since = now;
        self.n = 0;
        self.bytes = 0;
        self.held = 0.0;
        self.in_use = 0;
    }
}

/// The run's permit pool: one permit per part (or Apertur image) in flight. See the module
/// documentation.
pub struct Permits {
    sem: Arc<Semaphore>,
    /// Under `auto`: the permits of small parts ([`SMALL_PART`]), up to `max` of them.
    small: Option<SmallPool>,
    setting: Concurrency,
    origin: Instant,
    inner: Mutex<Inner>,
}

struct Inner {
    tuner: Option<Tuner>,
    /// Permits that exist (in use or not).
    level: usize,
    /// Permits to forget as they come back (the level went down while they were in use).
    debt: usize,
    in_use: usize,
    peak_level: usize,
    peak_in_use: usize,
    /// The largest memory of one part seen (for the memory cap).
    part_memory: u64,
}

impl std::fmt::Debug for Permits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permits").field("setting", &self.setting).field("level", &self.level()).finish()
    }
}

impl Permits {
    /// A pool for `setting`: pinned, or tuned from [`DEFAULT_START`].
    pub fn new(setting: Concurrency) -> Arc<Self> {
        let tuner = match setting {
            Concurrency::Fixed(_) => None,
            Concurrency::Auto { max } => Some(Tuner::new(TunerConfig::new(max))),
        };
        Self::with_tuner(setting, tuner)
    }

    /// A pool driven by a tuner of these knobs (tests).
    pub fn with_config(cfg: TunerConfig) -> Arc<Self> {
        Self::with_tuner(Concurrency::Auto { max: cfg.max }, Some(Tuner::new(cfg)))
    }

    fn with_tuner(setting: Concurrency, tuner: Option<Tuner>) -> Arc<Self> {
        let level = tuner.as_ref().map_or(setting.start(), Tuner::level);
        let small = match (setting, &tuner) {
            (Concurrency::Auto { max }, Some(_)) => Some(SmallPool::new(max)),
            _ => None,
        };
        Arc::new(Permits {
            sem: Arc::new(Semaphore::new(level)),
            small,
            setting,
            origin: Instant::now(),
            inner: Mutex::new(Inner {
                tuner,
                level,
                debt: 0,
                in_use: 0,
                peak_level: level,
                peak_in_use: 0,
                part_memory: 0,
            }),
        })
    }

    /// The setting.
    pub fn setting(&self) -> Concurrency {
        self.setting
    }

    /// Parts allowed in flight now.
    pub fn level(&self) -> usize {
        self.inner.lock().expect("permits lock").level
    }

    /// The highest level of the run so far.
    pub fn peak_level(&self) -> usize {
        self.inner.lock().expect("permits lock").peak_level
    }

    /// The most permits in use at once so far.
    pub fn peak_in_use(&self) -> usize {
        self.inner.lock().expect("permits lock").peak_in_use
    }

    /// Permits free now.
    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }

    /// Waits for a permit for a part of `bytes`.
    pub async fn acquire(self: &Arc<Self>, bytes: u64) -> Permit {
        self.take(bytes, false).await
    }

    /// Waits for a permit for a part that is a whole file of `bytes` (a one-part upload, an
    /// Apertur image): a small one ([`SMALL_PART`]) takes it from the small files' pool under
    /// `auto`.
    pub async fn acquire_whole(self: &Arc<Self>, bytes: u64) -> Permit {
        self.take(bytes, true).await
    }

    async fn take(self: &Arc<Self>, bytes: u64, whole: bool) -> Permit {
        let small = self.small.as_ref().filter(|_| whole && bytes <= SMALL_PART);
        if small.is_none() {
            self.note_part(bytes);
        }
        let sem = small.map_or(&self.sem, |p| &p.sem).clone();
        let permit = sem.acquire_owned().await.expect("the permit semaphore is never closed");
        let mut inner = self.inner.lock().expect("permits lock");
        inner.in_use += 1;
        inner.peak_in_use = inner.peak_in_use.max(inner.in_use);
        drop(inner);
        Permit { pool: self.clone(), permit: Some(permit), started: Instant::now(), bytes, small: small.is_some() }
    }

    /// The server refused a request as throttled (503 SlowDown, 429): the tuned level backs
    /// off, and so does the small files' pool (a store throttles its request rate, whatever the
    /// request's size).
    pub fn throttled(&self) {
        let now = self.origin.elapsed();
        if let Some(small) = &self.small {
            small.throttled(now);
        }
        let mut inner = self.inner.lock().expect("permits lock");
        if let Some(change) = inner.tuner.as_mut().and_then(|t| t.on_throttle(now)) {
            self.apply(&mut inner, change);
        }
    }

    /// Small parts allowed in flight now (under `auto`; `None` when pinned).
    pub fn small_level(&self) -> Option<usize> {
        self.small.as_ref().map(|p| p.state.lock().expect("small pool lock").level)
    }

    fn note_part(&self, bytes: u64) {
        let cost = bytes.min(PART_MEMORY);
        let mut inner = self.inner.lock().expect("permits lock");
        if cost > inner.part_memory {
            inner.part_memory = cost;
            let now = self.origin.elapsed();
            if let Some(change) = inner.tuner.as_mut().and_then(|t| t.set_max(memory_cap(cost), now)) {
                self.apply(&mut inner, change);
            }
        }
    }

    fn finished(&self, started: Instant, bytes: u64) {
        let mut inner = self.inner.lock().expect("permits lock");
        let sample = Sample {
            started: started.saturating_duration_since(self.origin),
            finished: self.origin.elapsed(),
            bytes,
            in_use: inner.in_use,
        };
        if let Some(change) = inner.tuner.as_mut().and_then(|t| t.on_sample(sample)) {
            self.apply(&mut inner, change);
        }
    }

    fn apply(&self, inner: &mut Inner, change: Change) {
        tracing::info!(
            from = change.from,
            to = change.to,
            "concurrency {} → {}: {}",
            change.from,
            change.to,
            change.reason
        );
        resize(&self.sem, &mut inner.level, &mut inner.debt, change.to);
        inner.peak_level = inner.peak_level.max(change.to);
    }

    fn release(&self, permit: OwnedSemaphorePermit, small: bool) {
        let mut inner = self.inner.lock().expect("permits lock");
        inner.in_use -= 1;
        if let Some(pool) = self.small.as_ref().filter(|_| small) {
            drop(inner);
            pool.release(permit);
        } else {
            give_back(permit, &mut inner.debt);
        }
    }
}

/// Moves a pool of `sem` from `level` to `to` permits: added at once (less what is owed), or
/// forgotten now if free and owed (`debt`) as the ones in use come back.
fn resize(sem: &Semaphore, level: &mut usize, debt: &mut usize, to: usize) {
    if to > *level {
        let add = to - *level;
        let paid = add.min(*debt);
        *debt -= paid;
        sem.add_permits(add - paid);
    } else if to < *level {
        let remove = *level - to;
        *debt += remove - sem.forget_permits(remove);
    }
    *level = to;
}

/// A permit coming back: forgotten while the pool owes some (it shrank while they were out).
fn give_back(permit: OwnedSemaphorePermit, debt: &mut usize) {
    if *debt > 0 {
        *debt -= 1;
        permit.forget();
    }
}

/// How long after a cut of the small files' pool another throttled answer is taken for the
/// same storm (the requests in flight when the store began to refuse all come back refused).
const SMALL_CUT_QUIET: Duration = Duration::from_secs(1);

/// The small files' pool under `auto`: `max` permits, halved when the store throttles (at most
/// once per [`SMALL_CUT_QUIET`]), and grown again by half after each round of its level stored
/// without a throttled answer (additive-increase would take thousands of files to climb back
/// from a cut; the store says so again if it was too soon).
struct SmallPool {
    sem: Arc<Semaphore>,
    state: Mutex<SmallState>,
}

struct SmallState {
    max: usize,
    level: usize,
    /// Permits to forget as they come back (the level went down while they were in use).
    debt: usize,
    /// When the level was last cut.
    last_cut: Option<Duration>,
    /// Small parts stored since the level last changed.
    stored: usize,
}

impl SmallPool {
    fn new(max: usize) -> Self {
        let max = max.max(1);
        SmallPool {
            sem: Arc::new(Semaphore::new(max)),
            state: Mutex::new(SmallState { max, level: max, debt: 0, last_cut: None, stored: 0 }),
        }
    }

    fn throttled(&self, now: Duration) {
        let mut st = self.state.lock().expect("small pool lock");
        if st.level == 1 || st.last_cut.is_some_and(|t| now.saturating_sub(t) < SMALL_CUT_QUIET) {
            return;
        }
        let to = (st.level / 2).max(1);
        tracing::info!(from = st.level, to, "small files at once {} → {}: the store throttles", st.level, to);
        let SmallState { level, debt, .. } = &mut *st;
        resize(&self.sem, level, debt, to);
        st.last_cut = Some(now);
        st.stored = 0;
    }

    fn stored(&self, now: Duration) {
        let mut st = self.state.lock().expect("small pool lock");
        st.stored += 1;
        let quiet = st.last_cut.is_none_or(|t| now.saturating_sub(t) >= SMALL_CUT_QUIET);
        if st.level < st.max && st.stored >= st.level && quiet {
            let to = (st.level + st.level.div_ceil(2)).min(st.max);
            tracing::info!(from = st.level, to, "small files at once {} → {}: no throttling for a round", st.level, to);
            let SmallState { level, debt, .. } = &mut *st;
            resize(&self.sem, level, debt, to);
            st.stored = 0;
        }
    }

    fn release(&self, permit: OwnedSemaphorePermit) {
        give_back(permit, &mut self.state.lock().expect("small pool lock").debt);
    }
}

/// A permit of the pool, for one part in flight. [`Permit::finished`] when the part was stored
/// (it feeds the tuner); dropped otherwise (a failure: no sample).
pub struct Permit {
    pool: Arc<Permits>,
    permit: Option<OwnedSemaphorePermit>,
    started: Instant,
    bytes: u64,
    /// From the small parts' pool: no sample.
    small: bool,
}

impl Permit {
    /// The part was stored: its bytes and time count in the throughput (a tuned permit's); the
    /// permit goes back.
    pub fn finished(self) {
        if !self.small {
            self.pool.finished(self.started, self.bytes);
        } else if let Some(small) = &self.pool.small {
            small.stored(self.pool.origin.elapsed());
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.pool.release(p, self.small);
        }
    }
}

/// How many files go at once (`--files`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Files {
    /// Pinned (`--files N`).
    Fixed(usize),
    /// [`AUTO_FILES_MIN`] whatever their size, and more (up to [`AUTO_FILES_MAX`]) while the
    /// bytes of the files in flight stay under [`AUTO_FILES_BYTES`]: small files go many at a
    /// time, so their API round trips overlap; large ones share the part budget a few at a
    /// time.
    Auto,
}

/// Files an automatic run always lets go at once.
pub(crate) const AUTO_FILES_MIN: usize = 4;
/// The most files an automatic run lets go at once.
pub const AUTO_FILES_MAX: usize = 128;
/// Bytes of the files in flight beyond which an automatic run starts no more than
/// [`AUTO_FILES_MIN`] files.
pub(crate) const AUTO_FILES_BYTES: u64 = 128 << 20;

/// Which files may start: files in flight follow their bytes (see [`Files`]).
#[derive(Clone, Debug)]
pub(crate) struct FileGate {
    setting: Files,
    files: usize,
    bytes: u64,
    peak: usize,
}

impl FileGate {
    /// No file in flight.
    pub(crate) fn new(setting: Files) -> Self {
        FileGate { setting, files: 0, bytes: 0, peak: 0 }
    }

    /// Whether a file of `size` bytes may start now.
    pub(crate) fn admits(&self, size: u64) -> bool {
        match self.setting {
            Files::Fixed(n) => self.files < n.max(1),
            Files::Auto => {
                self.files < AUTO_FILES_MIN
                    || (self.files < AUTO_FILES_MAX && self.bytes.saturating_add(size) <= AUTO_FILES_BYTES)
            }
        }
    }

    /// A file of `size` bytes started.
    pub(crate) fn start(&mut self, size: u64) {
        self.files += 1;
        self.bytes = self.bytes.saturating_add(size);
        self.peak = self.peak.max(self.files);
    }

    /// A file of `size` bytes ended.
    pub(crate) fn end(&mut self, size: u64) {
        self.files = self.files.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(size);
    }

    /// Files in flight now.
    pub(crate) fn files(&self) -> usize {
        self.files
    }

    /// The most files in flight at once so far.
    pub(crate) fn peak(&self) -> usize {
        self.peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The knobs of a run bounded by `max`, starting at 4 (the scenarios below are written from 4).
    fn cfg4(max: usize) -> TunerConfig {
        TunerConfig { start: 4.min(max), ..TunerConfig::new(max) }
    }

    const MIB: u64 = 1 << 20;

    /// A simulated link: `link(level)` gives each connection's bytes/s and the latency per
    /// part; parts of `part` bytes. Feeds the tuner whole rounds of parts at its level, the
    /// clock `now` going on, and returns the levels it chose, round by round.
    /// A tuner bounded by `max` from 4, and the clock of its simulation.
    fn sim(max: usize) -> (Tuner, Duration) {
        (Tuner::new(cfg4(max)), Duration::ZERO)
    }

    fn simulate(
        tuner: &mut Tuner,
        now: &mut Duration,
        rounds: usize,
        part: u64,
        link: impl Fn(usize) -> (f64, f64),
    ) -> Vec<usize> {
        let mut levels = vec![];
        for _ in 0..rounds {
            let level = tuner.level();
            let (per_conn, latency) = link(level);
            let started = *now;
            *now += Duration::from_secs_f64(latency + part as f64 / per_conn);
            for _ in 0..level {
                tuner.on_sample(Sample { started, finished: *now, bytes: part, in_use: level });
            }
            levels.push(tuner.level());
        }
        levels
    }

    /// Every level is `at`, or a probe one step above it followed by `at` again.
    fn settled_at(levels: &[usize], at: usize) -> bool {
        levels.iter().enumerate().all(|(i, &l)| {
            l == at || (l > at && l <= at + (at / 4).max(1) && levels.get(i + 1).is_none_or(|&n| n == at))
        })
    }

    /// 20 MiB/s per connection, 200 MiB/s in all, 30 ms per request.
    fn capped(level: usize) -> (f64, f64) {
        let per = (20.0 * MIB as f64).min(200.0 * MIB as f64 / level as f64);
        (per, 0.030)
    }

    #[test]
    fn grows_while_throughput_rises_then_settles_under_the_total_cap() {
        let (mut t, mut now) = sim(64);
        assert_eq!(t.level(), 4);
        let levels = simulate(&mut t, &mut now, 30, 8 * MIB, capped);
        // 4 → 8 → 16 (each a gain), 32 brings nothing over 16: back to 16, and it stays
        // (trying 20 now and then).
        assert_eq!(&levels[..4], &[8, 16, 32, 16], "{levels:?}");
        assert!(settled_at(&levels[4..], 16), "{levels:?}");
        assert!(levels[4..].contains(&20), "probes now and then: {levels:?}");
        // 16 connections of 12.5 MiB/s fill the 200 MiB/s link.
        assert!(16.0 * capped(16).0 >= 0.9 * 200.0 * MIB as f64);
    }

    #[test]
    fn plateaus_where_more_connections_bring_nothing() {
        // Each connection is fast, but the whole is capped at 100 MiB/s: 4 already fill it.
        let mut t = Tuner::new(cfg4(64));
        let link = |level: usize| ((100.0 * MIB as f64) / level as f64, 0.0);
        let levels = simulate(&mut t, &mut Duration::default(), 30, 8 * MIB, link);
        assert_eq!(levels[0], 8, "{levels:?}");
        assert!(settled_at(&levels[1..], 4), "{levels:?}");
    }

    #[test]
    fn respects_the_maximum() {
        // Every connection adds throughput: it stops at the maximum.
        let (mut t, mut now) = sim(10);
        let link = |_| (10.0 * MIB as f64, 0.01);
        let levels = simulate(&mut t, &mut now, 40, 4 * MIB, link);
        assert!(levels.iter().all(|&l| l <= 10), "{levels:?}");
        assert_eq!(&levels[levels.len() - 20..], &[10; 20], "{levels:?}");
        // A memory cap lowers it further.
        let change = t.set_max(6, now).expect("lowered");
        assert_eq!((change.from, change.to), (10, 6));
        let levels = simulate(&mut t, &mut now, 40, 4 * MIB, link);
        assert!(levels.iter().all(|&l| l <= 6), "{levels:?}");
        assert_eq!(*levels.last().unwrap(), 6, "grows back to the cap: {levels:?}");
    }

    #[test]
    fn backs_off_on_throttling_once_per_burst_and_grows_again_slowly() {
        let (mut t, mut now) = sim(64);
        let link = |_| (10.0 * MIB as f64, 0.01);
        simulate(&mut t, &mut now, 3, 4 * MIB, link);
        let before = t.level();
        assert_eq!(before, 32);
        let c = t.on_throttle(now).expect("backs off");
        assert_eq!(c.to, 16);
        // The rest of the burst (parts sent before the back-off) changes nothing.
        assert_eq!(t.on_throttle(now + Duration::from_millis(100)), None);
        assert_eq!(t.level(), 16);
        // A later refusal halves again.
        now += Duration::from_secs(2);
        assert_eq!(t.on_throttle(now).map(|c| c.to), Some(8));
        // Then, the throughput rising with each connection, it probes its way up by quarters
        // after some steady windows, not doubling.
        let levels = simulate(&mut t, &mut now, 30, 4 * MIB, link);
        let first_up = levels.iter().position(|&l| l > 8).expect("grows again");
        assert!(first_up >= 5, "probed only after some steady windows: {levels:?}");
        assert_eq!(levels[first_up], 10, "{levels:?}");
        assert!(levels.windows(2).all(|w| w[1] <= w[0] + (w[0] / 4).max(1)), "{levels:?}");
        // Never below one.
        let mut one = Tuner::new(TunerConfig { start: 1, ..cfg4(8) });
        assert_eq!(one.on_throttle(Duration::from_secs(1)), None);
        assert_eq!(one.level(), 1);
    }

    #[test]
    fn backs_off_when_throughput_falls() {
        let (mut t, mut now) = sim(64);
        let fast = |level: usize| ((100.0 * MIB as f64) / level as f64, 0.0);
        simulate(&mut t, &mut now, 6, 8 * MIB, fast);
        assert_eq!(t.level(), 4);
        // The link slows to 40 %: the steady window sees the fall and backs off.
        let slow = |level: usize| ((40.0 * MIB as f64) / level as f64, 0.0);
        let levels = simulate(&mut t, &mut now, 2, 8 * MIB, slow);
        assert_eq!(levels[0], 3, "{levels:?}");
    }

    #[test]
    fn a_window_with_idle_permits_decides_nothing() {
        let (mut t, mut now) = sim(64);
        // Only two parts at a time are ready while four permits exist: no growth.
        for _ in 0..20 {
            let started = now;
            now += Duration::from_millis(100);
            for _ in 0..4 {
                assert_eq!(t.on_sample(Sample { started, finished: now, bytes: MIB, in_use: 2 }), None);
            }
        }
        assert_eq!(t.level(), 4);
    }

    #[test]
    fn parts_started_before_a_change_do_not_count() {
        let (mut t, mut now) = sim(64);
        let link = |_| (10.0 * MIB as f64, 0.0);
        simulate(&mut t, &mut now, 1, 4 * MIB, link);
        assert_eq!(t.level(), 8);
        // Many completions of parts that took their permit before the change: nothing.
        for _ in 0..50 {
            let s = Sample { started: Duration::ZERO, finished: now + Duration::from_secs(5), bytes: MIB, in_use: 8 };
            assert_eq!(t.on_sample(s), None);
        }
        assert_eq!(t.level(), 8);
    }

    #[tokio::test]
    async fn the_pool_follows_the_tuner_and_forgets_permits_in_use() {
        let cfg = TunerConfig { min_window: Duration::ZERO, min_samples: 1, ..cfg4(8) };
        let pool = Permits::with_config(cfg);
        assert_eq!((pool.level(), pool.available()), (4, 4));
        let held: Vec<Permit> = futures::future::join_all((0..4).map(|_| pool.acquire(8 << 20))).await;
        assert_eq!(pool.available(), 0);
        // A throttling answer halves the level while all four are in use: two are forgotten as
        // they come back.
        pool.throttled();
        assert_eq!(pool.level(), 2);
        drop(held);
        assert_eq!(pool.available(), 2);
        assert_eq!(pool.peak_in_use(), 4);
        // Finished parts grow it again (every window is a gain here: the first sample counts).
        let p = pool.acquire(8 << 20).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        p.finished();
        assert!(pool.level() >= 2);
        // A pinned pool never moves.
        let pinned = Permits::new(Concurrency::Fixed(3));
        pinned.throttled();
        assert_eq!((pinned.level(), pinned.available()), (3, 3));
    }

    #[tokio::test]
    async fn small_whole_files_take_the_small_pool_under_auto_and_the_pinned_one_otherwise() {
        let cfg = TunerConfig { min_window: Duration::ZERO, min_samples: 1, ..cfg4(16) };
        let pool = Permits::with_config(cfg);
        assert_eq!(pool.level(), 4);
        // Sixteen small ones at once (the max), beyond the tuned level of 4; a 17th waits.
        let held: Vec<Permit> = futures::future::join_all((0..16).map(|_| pool.acquire_whole(64 << 10))).await;
        assert_eq!(pool.available(), 4, "the tuned permits are untouched");
        let waiting = tokio::time::timeout(Duration::from_millis(50), pool.acquire_whole(SMALL_PART)).await;
        assert!(waiting.is_err(), "a 17th small part waits for one of the 16");
        // They are no samples: finishing them leaves the level where it is.
        for p in held {
            tokio::time::sleep(Duration::from_millis(1)).await;
            p.finished();
        }
        assert_eq!((pool.level(), pool.peak_in_use()), (4, 16));
        // A large file, and a small part of a larger file, take tuned permits.
        let big = pool.acquire_whole(SMALL_PART + 1).await;
        let part = pool.acquire(64 << 10).await;
        assert_eq!(pool.available(), 2);
        drop((big, part));
        // Pinned: small parts count against the pinned number like any other.
        let pinned = Permits::new(Concurrency::Fixed(2));
        let _a = pinned.acquire_whole(1).await;
        let _b = pinned.acquire_whole(1).await;
        assert!(tokio::time::timeout(Duration::from_millis(50), pinned.acquire_whole(1)).await.is_err());
    }

    #[tokio::test]
    async fn the_small_files_pool_halves_when_throttled_and_grows_back_after_a_clean_round() {
        let pool = Permits::with_config(cfg4(16));
        let small = || pool.small.as_ref().unwrap().sem.available_permits();
        assert_eq!(pool.small_level(), Some(16));
        // Cut while all 16 are out: the 8 cut are forgotten as they come back.
        let held: Vec<Permit> = futures::future::join_all((0..16).map(|_| pool.acquire_whole(1024))).await;
        pool.throttled();
        pool.throttled(); // the same storm: one cut
        assert_eq!(pool.small_level(), Some(8));
        drop(held);
        assert_eq!(small(), 8);
        assert_eq!(pool.level(), 2, "the tuned level backs off too");
        // A round stored soon after the cut does not grow it; one after the quiet time does.
        let round: Vec<Permit> = futures::future::join_all((0..8).map(|_| pool.acquire_whole(1024))).await;
        assert!(tokio::time::timeout(Duration::from_millis(50), pool.acquire_whole(1024)).await.is_err());
        round.into_iter().for_each(Permit::finished);
        assert_eq!(pool.small_level(), Some(8));
        tokio::time::sleep(SMALL_CUT_QUIET + Duration::from_millis(50)).await;
        let round: Vec<Permit> = futures::future::join_all((0..8).map(|_| pool.acquire_whole(1024))).await;
        round.into_iter().for_each(Permit::finished);
        assert_eq!((pool.small_level(), small()), (Some(12), 12));
        // A throttled answer after the quiet time cuts again.
        pool.throttled();
        assert_eq!((pool.small_level(), small()), (Some(6), 6));
        assert_eq!(Permits::new(Concurrency::Fixed(4)).small_level(), None);
    }

    #[test]
    fn files_in_flight_follow_their_bytes() {
        let mut g = FileGate::new(Files::Auto);
        // Small files: up to the most at once.
        let mut n = 0;
        while g.admits(64 << 10) {
            g.start(64 << 10);
            n += 1;
        }
        assert_eq!(n, AUTO_FILES_MAX);
        g.end(64 << 10);
        assert!(g.admits(64 << 10));
        // Large files: four at once, whatever their bytes, then no more.
        let mut g = FileGate::new(Files::Auto);
        for _ in 0..AUTO_FILES_MIN {
            assert!(g.admits(1 << 30));
            g.start(1 << 30);
        }
        assert!(!g.admits(1 << 30));
        assert!(!g.admits(1), "the bytes in flight are over the budget");
        g.end(1 << 30);
        assert!(g.admits(1 << 30));
        assert_eq!(g.peak(), AUTO_FILES_MIN);
        // Pinned: that many, whatever the sizes.
        let mut g = FileGate::new(Files::Fixed(2));
        g.start(1);
        g.start(1);
        assert!(!g.admits(1));
    }

    #[test]
    fn memory_cap_of_part_sizes() {
        assert_eq!(memory_cap(8 * MIB), (MEMORY_BUDGET / PART_MEMORY) as usize);
        assert_eq!(memory_cap(64 << 10), (MEMORY_BUDGET / (64 << 10)) as usize);
        assert!(memory_cap(1) >= 64);
    }
}
