//! The concurrent part uploader: bounded, retrying, streaming each part from the file.
//!
//! Contract:
//! - parts are 1-based and may finish in any order; the result is sorted by part number and
//!   checked to cover the plan exactly before it is handed back for completion;
//! - a permit of the run's pool ([`Permits`]: pinned, or tuned from the parts' throughput and
//!   the throttling answers) is taken before a part is read, so at most the pool's level of
//!   parts are in flight and memory stays at a few [`PIECE`](super::source::PIECE) buffers per
//!   part; the URL is in hand before the permit is taken;
//! - URLs are asked ahead of need by a small pipeline (`url_prefetch`), so a free connection
//!   rarely waits for one, and asked again (`stale = true`) when S3 refuses one (403);
//! - a retry re-sends the part from its first byte; ETags are kept verbatim;
//! - on cancellation no new part starts, parts in flight get `drain` time to finish (after the
//!   run's time limit, [`STOP_GRACE`](super::wait::STOP_GRACE)), and
//!   [`Error::Interrupted`] is returned; every finished part was reported to `on_part_done`
//!   (the resume journal) before that;
//! - no slow tail ([`UploaderOptions::hedge`]): once every part is under way, a part far
//!   behind its siblings (in flight [`HEDGE_FACTOR`] times as long as the median pace of the
//!   parts this run stored says it needs, and at least [`HEDGE_AFTER`]) is sent again, once,
//!   with a fresh URL on another connection; the first stored copy wins and the other is
//!   cancelled, except that a loser whose whole body was already handed out (the store may
//!   keep it after the winner's) is waited for (the idle timeout at most) and, stored, its
//!   ETag is the one kept: S3 keeps the copy that finished last.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::checksum::CrcSlot;
use super::checksum::{SIGNED_CHECKSUM_CODES, signed_checksum};
use super::plan::PartPlan;
use super::progress::{AttemptBytes, Event, Progress};
use super::ratelimit::RateLimit;
use super::request::{Call, Executor, Failure, Kind, MAX_ERROR_BODY, Pulse, RetryNotice};
use super::retry::{Outcome, RetryPolicy, TransportKind};
use super::source::FileSource;
use super::tune::{Concurrency, Permits};
use crate::error::{Error, Result};
use crate::redact::safe_url;

/// A part the server stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompletedPart {
    /// 1-based part number.
    pub number: u32,
    /// The ETag header of the PUT response, verbatim (quotes included).
    pub etag: String,
    /// Bytes in the part.
    pub size: u64,
    /// CRC-64/NVME of the part's bytes as sent (the receipt, see [`super::checksum`]); `None`
    /// in a journal of an older version (the part is then read again to know it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc64nvme: Option<u64>,
}

/// Where parts go: a provider hands out one presigned PUT URL per part.
#[async_trait]
pub trait PartUrls: Send + Sync {
    /// The URL for `part`. `stale` is true when S3 refused the previous URL (expired or
    /// rejected), so a cached one must not be returned again.
    async fn url(&self, part: u32, stale: bool) -> Result<String>;
}

/// Knobs of the part uploader.
#[derive(Clone, Debug)]
pub struct UploaderOptions {
    /// Parts in flight at once.
    pub concurrency: usize,
    /// URLs asked ahead of need.
    pub url_prefetch: usize,
    /// Retry policy for part PUTs.
    pub retry: RetryPolicy,
    /// `Content-Type` sent with each part (TruVideo asks for the file's MIME type).
    pub content_type: Option<String>,
    /// Send `Content-MD5` with each part (`--checksum md5`).
    pub content_md5: bool,
    /// Time parts in flight get to finish after cancellation.
    pub drain: Duration,
    /// Seed for the backoff jitter (tests); `None` = from the OS.
    pub seed: Option<u64>,
    /// The run's part budget, shared by every file uploading at the same time, pinned or
    /// tuned ([`Permits`]), so the bytes in flight stay bounded for the whole run; `None` =
    /// `concurrency` (pinned) for this file.
    pub shared_permits: Option<Arc<Permits>>,
    /// The run's bandwidth limit (`--limit-rate`), shared by every part and file.
    pub rate: RateLimit,
    /// The run's request executor (shared retry budget, cancellation of waits).
    pub exec: Executor,
    /// Send a part far behind its siblings again on another connection (see the module
    /// documentation: no slow tail).
    pub hedge: bool,
}

impl Default for UploaderOptions {
    fn default() -> Self {
        UploaderOptions {
            concurrency: 8,
            url_prefetch: 4,
            retry: RetryPolicy::default(),
            content_type: None,
            content_md5: false,
            drain: super::wait::GRACE,
            seed: None,
            shared_permits: None,
            rate: RateLimit::off(),
            exec: Executor::default(),
            hedge: true,
        }
    }
}

/// A part is sent again once it has been in flight this many times as long as the median
/// pace of its siblings says it needs...
pub const HEDGE_FACTOR: f64 = 4.0;
/// ...and at least this long.
pub const HEDGE_AFTER: Duration = Duration::from_secs(2);
/// How often the parts of the last wave are looked at.
const HEDGE_TICK: Duration = Duration::from_millis(200);

/// The parts in flight and the pace of those stored, for the slow tail.
#[derive(Default)]
struct Tail {
    in_flight: std::sync::Mutex<BTreeMap<u32, Arc<Probe>>>,
    /// Bytes per second of each part this run stored (from its start to its answer).
    paces: std::sync::Mutex<Vec<f64>>,
}

/// One part in flight.
struct Probe {
    len: u64,
    started: Instant,
    hedge: tokio::sync::Notify,
    hedged: std::sync::atomic::AtomicBool,
}

impl Tail {
    fn start(&self, number: u32, len: u64) -> Arc<Probe> {
        let probe = Arc::new(Probe {
            len,
            started: Instant::now(),
            hedge: tokio::sync::Notify::new(),
            hedged: Default::default(),
        });
        self.in_flight.lock().expect("tail").insert(number, probe.clone());
        probe
    }

    fn end(&self, number: u32, stored: bool) {
        let probe = self.in_flight.lock().expect("tail").remove(&number);
        if let (true, Some(p)) = (stored, probe) {
            let secs = p.started.elapsed().as_secs_f64().max(1e-3);
            self.paces.lock().expect("tail").push(p.len as f64 / secs);
        }
    }

    /// Tells the parts far behind the median pace of the stored ones to send a second copy,
    /// once each ([`hedge_bound`]).
    fn hedge_laggards(&self) {
        let Some(median) = median_pace(&self.paces.lock().expect("tail")) else { return };
        for (number, p) in self.in_flight.lock().expect("tail").iter() {
            let in_flight = p.started.elapsed();
            if in_flight > hedge_bound(p.len, median) && !p.hedged.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::info!(
                    part = number,
                    in_flight_s = in_flight.as_secs_f64(),
                    median_pace_bps = median as u64,
                    "part {number} is far behind its siblings: sending it again on another connection"
                );
                p.hedge.notify_one();
            }
        }
    }
}

/// The median of the stored parts' paces (bytes per second; the upper middle of an even
/// count); `None` before any part was stored: no part is hedged then.
fn median_pace(paces: &[f64]) -> Option<f64> {
    if paces.is_empty() {
        return None;
    }
    let mut paces = paces.to_vec();
    paces.sort_by(f64::total_cmp);
    Some(paces[paces.len() / 2])
}

/// How long a part of `len` bytes may be in flight before a second copy is sent, at the
/// stored parts' `median` pace: [`HEDGE_FACTOR`] times what that pace says it needs (at most
/// a day; a pace under 1 B/s counts as 1 B/s), and at least [`HEDGE_AFTER`].
fn hedge_bound(len: u64, median: f64) -> Duration {
    let needs = Duration::from_secs_f64((len as f64 / median.max(1.0)).min(86_400.0));
    needs.mul_f64(HEDGE_FACTOR).max(HEDGE_AFTER)
}

/// What one run of a part has handed to its connection in its current attempt.
#[derive(Default)]
struct Handed(std::sync::atomic::AtomicU64);

/// Callback told about the parts the server stored (the resume journal): every part finished
/// since its previous call, in one call. It runs on the blocking pool, one call at a time per
/// [`upload_parts`], and may block (one write + fsync for the lot); a part counts as finished
/// once the call that carried it returned `Ok`.
pub type PartDone = Arc<dyn Fn(&[CompletedPart]) -> Result<()> + Send + Sync>;

/// A finished part waiting for [`PartDone`], with where to say how that went.
type Recording = (CompletedPart, tokio::sync::oneshot::Sender<Result<()>>);

/// Hands the finished parts to `on_part_done` in batches: whatever finished while the previous
/// call ran goes in the next. One blocking-pool thread per upload, however slow the disk's
/// fsync: a thread per part (each waiting its turn at the journal's lock) grew to hundreds of
/// threads, and their stacks and malloc arenas to megabytes, when fsyncs took longer than the
/// parts did.
async fn record_parts(mut rx: mpsc::UnboundedReceiver<Recording>, on_part_done: PartDone, provider: &'static str) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let parts: Vec<CompletedPart> = batch.iter().map(|(p, _)| p.clone()).collect();
        let f = on_part_done.clone();
        let result = match tokio::task::spawn_blocking(move || f(&parts)).await {
            Ok(r) => r,
            Err(e) => {
                Err(Error::Protocol { provider, what: "resume journal".into(), message: format!("task failed: {e}") })
            }
        };
        for (_, reply) in batch {
            let _ = reply.send(result.as_ref().map(|_| ()).map_err(|e| copy_error(e, provider)));
        }
    }
}

/// The same error again (a journal's write failure, told to every part it carried).
fn copy_error(e: &Error, provider: &'static str) -> Error {
    match e {
        Error::File { path, source } => {
            Error::File { path: path.clone(), source: std::io::Error::new(source.kind(), source.to_string()) }
        }
        other => Error::Protocol { provider, what: "resume journal".into(), message: other.to_string() },
    }
}

/// Uploads the parts of `plan` not in `done`, concurrently, and returns all parts sorted.
///
/// Its steps, one function each: [`PartRun::new`] plans (what is left, the `Started`
/// event), [`prefetch_urls`] asks the URLs ahead, [`PartRun::dispatch`] starts a part per
/// URL and permit, [`PartRun::last_wave`] waits for the parts under way and hedges the slow
/// tail, [`PartRun::drain`] ends the tasks after a failure or a Ctrl-C, and
/// [`PartRun::outcome`] checks the result once the journal has every stored part.
#[allow(clippy::too_many_arguments)]
pub async fn upload_parts(
    http: &reqwest::Client,
    provider: &'static str,
    source: &FileSource,
    plan: &PartPlan,
    urls: Arc<dyn PartUrls>,
    done: Vec<CompletedPart>,
    on_part_done: PartDone,
    options: &UploaderOptions,
    progress: Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<Vec<CompletedPart>> {
    let (mut run, pending) = PartRun::new(http, provider, source, plan, urls, done, options, progress, cancel);
    // Stage 1: URLs, asked a few at a time ahead of the uploads.
    let (mut url_rx, _stop_producer) = prefetch_urls(run.urls.clone(), pending, options.url_prefetch);
    // Stage 3: the journal's appends, batched.
    let (record_tx, record_rx) = mpsc::unbounded_channel::<Recording>();
    let mut recorder = AbortOnDrop(tokio::spawn(record_parts(record_rx, on_part_done, provider)));
    // Stage 2: bounded part uploads.
    run.dispatch(&mut url_rx, &record_tx).await;
    run.last_wave().await;
    run.drain().await;
    // Every part the recorder was handed is journaled before this returns, a failure or an
    // interruption included (a part aborted while waiting for its line is still written): the
    // server stored it, so a resume must not send it again. Bounded, as every wait.
    drop(record_tx);
    if tokio::time::timeout(RECORDER_DRAIN, &mut recorder.0).await.is_err() {
        tracing::warn!("the resume journal's writer did not finish within {RECORDER_DRAIN:?}");
    }
    run.outcome()
}

/// Asks the URLs of `pending`, in order, `prefetch` at a time ahead of the uploads; stops at
/// the first failure (handed on) or when the receiver is gone. The producer is aborted when
/// the guard is dropped.
fn prefetch_urls(
    urls: Arc<dyn PartUrls>,
    pending: Vec<u32>,
    prefetch: usize,
) -> (mpsc::Receiver<(u32, Result<String>)>, AbortOnDrop) {
    let prefetch = prefetch.max(1);
    let (url_tx, url_rx) = mpsc::channel::<(u32, Result<String>)>(prefetch);
    let producer = tokio::spawn(async move {
        let mut stream = futures::stream::iter(pending)
            .map(|n| {
                let urls = urls.clone();
                async move { (n, urls.url(n, false).await) }
            })
            .buffered(prefetch);
        while let Some(item) = stream.next().await {
            let failed = item.1.is_err();
            if url_tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    (url_rx, AbortOnDrop(producer))
}

/// One call of [`upload_parts`]: what it was given, the parts stored so far, the tasks in
/// flight and why it stopped early, if it did.
struct PartRun<'a> {
    http: &'a reqwest::Client,
    provider: &'static str,
    source: &'a FileSource,
    plan: &'a PartPlan,
    urls: Arc<dyn PartUrls>,
    options: &'a UploaderOptions,
    progress: Arc<dyn Progress>,
    cancel: &'a CancellationToken,
    permits: Arc<Permits>,
    tail: Arc<Tail>,
    tasks: JoinSet<Result<CompletedPart>>,
    /// Stored parts by number: `done`'s (those of the plan) and this run's.
    finished: BTreeMap<u32, CompletedPart>,
    /// The seed of the next part's backoff jitter (tests).
    part_seed: Option<u64>,
    /// The first failure: no new part starts, the others are aborted.
    failure: Option<Error>,
    /// Ctrl-C (or the run's time limit): no new part starts, those in flight get `drain`.
    interrupted: bool,
}

impl<'a> PartRun<'a> {
    /// The plan of the call: the parts of `done` that belong to `plan` count as stored, the
    /// others are pending (returned, in order); the progress sink hears `Started` with both.
    #[allow(clippy::too_many_arguments)]
    fn new(
        http: &'a reqwest::Client,
        provider: &'static str,
        source: &'a FileSource,
        plan: &'a PartPlan,
        urls: Arc<dyn PartUrls>,
        done: Vec<CompletedPart>,
        options: &'a UploaderOptions,
        progress: Arc<dyn Progress>,
        cancel: &'a CancellationToken,
    ) -> (Self, Vec<u32>) {
        let finished: BTreeMap<u32, CompletedPart> =
            done.into_iter().filter(|p| p.number >= 1 && p.number <= plan.num_parts).map(|p| (p.number, p)).collect();
        let pending: Vec<u32> = plan.numbers().filter(|n| !finished.contains_key(n)).collect();
        progress.event(Event::Started {
            file: source.file_name(),
            total_bytes: plan.file_size,
            parts: plan.num_parts,
            done_bytes: finished.values().map(|p| p.size).sum(),
            done_parts: finished.len() as u32,
        });
        let permits =
            options.shared_permits.clone().unwrap_or_else(|| Permits::new(Concurrency::Fixed(options.concurrency)));
        let run = PartRun {
            http,
            provider,
            source,
            plan,
            urls,
            options,
            progress,
            cancel,
            permits,
            tail: Arc::new(Tail::default()),
            tasks: JoinSet::new(),
            finished,
            part_seed: options.seed,
            failure: None,
            interrupted: false,
        };
        (run, pending)
    }

    /// Starts a part for each URL the prefetcher hands over, until the URLs run out, one
    /// fails, a part fails or Ctrl-C. The rule it owns: the URL first, then the permit (a
    /// permit is never held waiting for a URL); while it waits for a permit, finished parts
    /// are taken in (a failure stops the run at once).
    async fn dispatch(
        &mut self,
        url_rx: &mut mpsc::Receiver<(u32, Result<String>)>,
        record_tx: &mpsc::UnboundedSender<Recording>,
    ) {
        loop {
            while let Some(res) = self.tasks.try_join_next() {
                if self.take_in(res) {
                    return;
                }
            }
            let next = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => { self.interrupted = true; return; }
                n = url_rx.recv() => n,
            };
            let Some((number, url)) = next else { return };
            let url = match url {
                Ok(u) => u,
                Err(e) => {
                    self.failure = Some(e);
                    return;
                }
            };
            let permit = loop {
                tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => { self.interrupted = true; return; }
                    Some(res) = self.tasks.join_next(), if !self.tasks.is_empty() && self.permits.available() == 0 => {
                        if self.take_in(res) { return; }
                    }
                    p = acquire(&self.permits, self.plan, number) => break p,
                }
            };
            self.spawn_part(number, url, permit, record_tx.clone());
        }
    }

    /// Takes in a task's end: a stored part is counted (`PartDone`); a failure becomes the
    /// run's (true: stop now). A task aborted by the run is neither.
    fn take_in(&mut self, res: std::result::Result<Result<CompletedPart>, tokio::task::JoinError>) -> bool {
        match self.absorb(res) {
            Some(e) => {
                self.failure = Some(e);
                true
            }
            None => false,
        }
    }

    /// What a task's end means: `None` when it stored its part (recorded in `finished`) or was
    /// aborted, else the error.
    fn absorb(&mut self, res: std::result::Result<Result<CompletedPart>, tokio::task::JoinError>) -> Option<Error> {
        match res {
            Ok(Ok(part)) => {
                let number = part.number;
                self.progress.event(Event::PartDone { part: number });
                self.finished.insert(number, part);
                None
            }
            Ok(Err(e)) => Some(e),
            Err(join) if join.is_cancelled() => None,
            Err(join) => Some(Error::Protocol {
                provider: self.provider,
                what: "part upload".into(),
                message: format!("task failed: {join}"),
            }),
        }
    }

    /// Spawns the task of part `number`: sent (hedged if the tail says so), its permit given
    /// back once stored (its time counts in the run's throughput) and before the journal's
    /// write; the part counts as finished only once its journal line is durable.
    fn spawn_part(
        &mut self,
        number: u32,
        url: String,
        permit: crate::engine::tune::Permit,
        record_tx: mpsc::UnboundedSender<Recording>,
    ) {
        let job = PartJob {
            http: self.http.clone(),
            provider: self.provider,
            source: self.source.clone(),
            plan: *self.plan,
            urls: self.urls.clone(),
            options: self.options.clone(),
            progress: self.progress.clone(),
            permits: self.permits.clone(),
            seed: self.part_seed.map(|s| s.wrapping_add(number as u64)),
        };
        self.part_seed = self.part_seed.map(|s| s.wrapping_add(1));
        let span = tracing::debug_span!("part", part_number = number);
        let tail = self.tail.clone();
        let provider = self.provider;
        let len = self.plan.range(number).1;
        self.tasks.spawn(
            async move {
                let probe = tail.start(number, len);
                let part = job.run_hedged(number, url, &probe).await;
                tail.end(number, part.is_ok());
                let part = part?;
                permit.finished();
                // The journal's append (write + fsync) runs on the blocking pool, batched with
                // the parts that finish meanwhile.
                let (reply, recorded) = tokio::sync::oneshot::channel();
                let gone = || Error::Protocol {
                    provider,
                    what: "resume journal".into(),
                    message: "the journal's writer stopped".into(),
                };
                record_tx.send((part.clone(), reply)).map_err(|_| gone())?;
                recorded.await.map_err(|_| gone())??;
                Ok(part)
            }
            .instrument(span),
        );
    }

    /// The last wave, once every part is under way: waits for them, still hearing Ctrl-C and
    /// stopping at the first failure, and every [`HEDGE_TICK`] tells the parts far behind
    /// their siblings to send a second copy ([`Tail::hedge_laggards`]: no slow tail).
    async fn last_wave(&mut self) {
        if self.failure.is_some() || self.interrupted {
            return;
        }
        let mut tick = tokio::time::interval(HEDGE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => { self.interrupted = true; return; }
                _ = tick.tick(), if self.options.hedge => self.tail.hedge_laggards(),
                res = self.tasks.join_next() => match res {
                    Some(res) => if self.take_in(res) { return },
                    None => return,
                },
            }
        }
    }

    /// Ends the tasks still running: aborted after a failure; after a Ctrl-C given `drain`
    /// (after the run's time limit, up to `STOP_GRACE`) to store their parts, then aborted.
    /// The parts they stored meanwhile count; a failure after the first is dropped.
    async fn drain(&mut self) {
        if self.failure.is_some() {
            self.tasks.abort_all();
        } else if self.interrupted {
            let deadline = self.options.exec.cut(self.options.drain);
            tokio::pin!(deadline);
            let mut cut = false;
            loop {
                tokio::select! {
                    _ = &mut deadline, if !cut => { cut = true; self.tasks.abort_all(); }
                    res = self.tasks.join_next() => match res {
                        Some(res) => { let _ = self.absorb(res); }
                        None => break,
                    }
                }
            }
        }
        while let Some(res) = self.tasks.join_next().await {
            if let Some(e) = self.absorb(res) {
                self.failure.get_or_insert(e);
            }
        }
    }

    /// The call's answer: its failure, else [`Error::Interrupted`] after a Ctrl-C, else every
    /// part of the plan, sorted and checked ([`check_complete`]).
    fn outcome(self) -> Result<Vec<CompletedPart>> {
        if let Some(e) = self.failure {
            return Err(e);
        }
        if self.interrupted || self.cancel.is_cancelled() {
            return Err(Error::Interrupted {
                hint: "run the same command again to resume; finished parts are not sent again".into(),
            });
        }
        let parts: Vec<CompletedPart> = self.finished.into_values().collect();
        check_complete(self.provider, self.plan, &parts)?;
        Ok(parts)
    }
}

/// The permit of part `number`: the whole file's when it is the only part (see
/// [`Permits::acquire_whole`]).
async fn acquire(permits: &Arc<Permits>, plan: &PartPlan, number: u32) -> crate::engine::tune::Permit {
    let bytes = plan.range(number).1;
    if plan.num_parts == 1 { permits.acquire_whole(bytes).await } else { permits.acquire(bytes).await }
}

/// Checks that `parts` are exactly 1..=num_parts with the plan's sizes.
pub fn check_complete(provider: &'static str, plan: &PartPlan, parts: &[CompletedPart]) -> Result<()> {
    let total: u64 = parts.iter().map(|p| p.size).sum();
    let numbers_ok = parts.len() == plan.num_parts as usize
        && parts.iter().enumerate().all(|(i, p)| p.number as usize == i + 1 && p.size == plan.range(p.number).1);
    if !numbers_ok || total != plan.file_size {
        return Err(Error::Protocol {
            provider,
            what: "complete".into(),
            message: format!(
                "have {} parts with {} bytes; the plan needs {} parts with {} bytes",
                parts.len(),
                total,
                plan.num_parts,
                plan.file_size
            ),
        });
    }
    Ok(())
}

/// How long the end of [`upload_parts`] waits for the journal's lines of the parts already
/// stored (one write and fsync of the last batch; a disk that takes longer is not a journal).
const RECORDER_DRAIN: Duration = Duration::from_secs(30);

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct PartJob {
    http: reqwest::Client,
    provider: &'static str,
    source: FileSource,
    plan: PartPlan,
    urls: Arc<dyn PartUrls>,
    options: UploaderOptions,
    progress: Arc<dyn Progress>,
    permits: Arc<Permits>,
    seed: Option<u64>,
}

/// The copy of a part whose ETag is kept once `won` was stored: `won`, unless the loser's
/// whole body was handed out (the store may then keep it after the winner's) and it is stored
/// within `bound` too: S3 keeps the copy that finished last.
async fn settle<F: std::future::Future<Output = Result<CompletedPart>>>(
    won: CompletedPart,
    loser: std::pin::Pin<&mut F>,
    handed: &Handed,
    (bound, len, number): (Duration, u64, u32),
) -> CompletedPart {
    if handed.0.load(std::sync::atomic::Ordering::Relaxed) < len {
        return won;
    }
    match tokio::time::timeout(bound, loser).await {
        Ok(Ok(last)) => {
            tracing::debug!(part = number, "both copies stored: the one that finished last is kept");
            last
        }
        _ => won,
    }
}

/// Which run of a part answered first, when a second copy was sent.
enum First {
    Original(Result<CompletedPart>),
    Hedge(Result<CompletedPart>),
}

impl PartJob {
    /// The part, sent once more on another connection if the tail says it is far behind
    /// (see the module documentation: no slow tail).
    async fn run_hedged(&self, number: u32, url: String, probe: &Probe) -> Result<CompletedPart> {
        let len = self.plan.range(number).1;
        let handed_a = Arc::new(Handed::default());
        let a = self.run(number, url, handed_a.clone());
        tokio::pin!(a);
        tokio::select! {
            r = &mut a => return r,
            _ = probe.hedge.notified() => {}
        }
        self.progress.event(Event::Notice {
            message: format!(
                "part {number} is far behind the others ({:.1} s in flight): sending it again on another connection",
                probe.started.elapsed().as_secs_f64()
            ),
        });
        let handed_b = Arc::new(Handed::default());
        let b = async {
            let url = self.urls.url(number, true).await?;
            self.run(number, url, handed_b.clone()).await
        };
        tokio::pin!(b);
        let first = tokio::select! {
            r = &mut a => First::Original(r),
            r = &mut b => First::Hedge(r),
        };
        // The loser is cancelled (dropped) unless its whole body is out: then the store may
        // keep it after the winner's, and its answer (within the idle timeout) says which.
        let bound = (self.options.exec.idle_timeout(), len, number);
        match first {
            First::Original(Ok(p)) => {
                tracing::debug!(part = number, "the first copy was stored first");
                Ok(settle(p, b.as_mut(), &handed_b, bound).await)
            }
            First::Hedge(Ok(p)) => {
                tracing::debug!(part = number, "the second copy was stored first");
                Ok(settle(p, a.as_mut(), &handed_a, bound).await)
            }
            // One failed: the other may still store the part.
            First::Original(Err(_)) => b.await,
            First::Hedge(Err(e)) => {
                tracing::debug!(part = number, "the second copy failed: {e}");
                a.await
            }
        }
    }

    async fn run(&self, number: u32, url: String, handed: Arc<Handed>) -> Result<CompletedPart> {
        let (offset, len) = self.plan.range(number);
        let what = format!("PUT part {number}");
        let md5 = if self.options.content_md5 {
            let digest = self
                .source
                .md5_range(offset, len)
                .await
                .map_err(|source| Error::File { path: self.source.path().to_path_buf(), source })?;
            Some(digest)
        } else {
            None
        };
        let host = url::Url::parse(&url)
            .ok()
            .and_then(|u| u.host_str().map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0))));
        let on_retry = |n: &RetryNotice| {
            if n.throttled() {
                self.permits.throttled();
            }
            self.progress.event(Event::Retry {
                part: number,
                attempt: n.attempt,
                reason: if n.refresh_url { format!("{}; asking for a fresh URL", n.reason) } else { n.reason.clone() },
                delay: n.delay,
            })
        };
        let call = Call {
            host: host.as_deref(),
            seed: self.seed,
            on_retry: Some(&on_retry),
            ..Call::new(self.provider, &what, Kind::Part, &self.options.retry)
        };
        let url = tokio::sync::Mutex::new(url);
        let this = self;
        let md5 = &md5;
        let handed = &handed;
        let url = &url;
        let what = what.as_str();
        self.options
            .exec
            .run(&call, |attempt| async move {
                let mut url = url.lock().await;
                if attempt.refresh_url {
                    *url = this.urls.url(number, true).await.map_err(Failure::Fatal)?;
                }
                this.attempt(number, &url, offset, len, md5.as_ref(), what, &attempt.pulse, handed).await
            })
            .await
    }

    /// One PUT of the part, its body streamed from the file through the run's HTTP client.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        number: u32,
        url: &str,
        offset: u64,
        len: u64,
        md5: Option<&[u8; 16]>,
        what: &str,
        pulse: &Pulse,
        handed: &Arc<Handed>,
    ) -> std::result::Result<CompletedPart, Failure> {
        // The bytes of an attempt that does not store the part are taken back, also when the
        // attempt is dropped (cut by the idle watch, or by Ctrl-C).
        let sent = AttemptBytes::new(self.progress.clone(), number);
        let counter = sent.counter();
        handed.0.store(0, std::sync::atomic::Ordering::Relaxed);
        let this_attempt = handed.clone();
        let on_sent = move |n: u64| {
            this_attempt.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            counter(n);
        };
        // No bound on the whole PUT: the executor's idle watch cuts it when it stops moving,
        // never while it moves (a slow link, a low --limit-rate).
        let headers = part_headers(&self.options, md5);
        let t0 = Instant::now();
        let crc = CrcSlot::new();
        let answer = self.streamed(url, offset, len, headers, on_sent, crc.clone(), what, pulse).await;
        if let Err(Failure::Outcome { message, .. }) = &answer {
            tracing::debug!(part = number, url = %safe_url(url), "part attempt failed: {message}");
        }
        let result = answer
            .and_then(|a| self.judge(number, url, len, md5, a, what))
            .map(|part| CompletedPart { crc64nvme: crc.get(), ..part });
        if result.is_ok() {
            sent.keep();
            tracing::debug!(part = number, status = 200, elapsed_ms = t0.elapsed().as_millis() as u64, url = %safe_url(url), "part stored");
        }
        result
    }

    /// The PUT through reqwest, its body streamed from the file in pieces.
    #[allow(clippy::too_many_arguments)]
    async fn streamed(
        &self,
        url: &str,
        offset: u64,
        len: u64,
        headers: Vec<(&'static str, String)>,
        on_sent: impl Fn(u64) + Send + Sync + 'static,
        crc: CrcSlot,
        what: &str,
        pulse: &Pulse,
    ) -> std::result::Result<Answer, Failure> {
        // A read error of the file (it shrank) is the file's fault, not the network's.
        let file_error: Arc<std::sync::Mutex<Option<std::io::Error>>> = Arc::default();
        let body = {
            let file_error = file_error.clone();
            let stream = self.source.body_stream(offset, len, self.options.rate.clone(), on_sent, crc);
            reqwest::Body::wrap_stream(stream.map(move |r| {
                r.map_err(|e| {
                    let copy = std::io::Error::new(e.kind(), e.to_string());
                    *file_error.lock().expect("file error slot") = Some(e);
                    copy
                })
            }))
        };
        let mut req = self.http.put(url).header(reqwest::header::CONTENT_LENGTH, len).body(body);
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let resp = match pulse.send(req).await {
            Ok(resp) => resp,
            Err(failure) => {
                // An image of a virtual zip changed: say which, whatever the read error was.
                if let Some(err) = self.source.failure() {
                    return Err(Failure::Fatal(err));
                }
                if let Some(io) = file_error.lock().expect("file error slot").take() {
                    return Err(Failure::Fatal(Error::File { path: self.source.path().to_path_buf(), source: io }));
                }
                return Err(failure);
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        // Read the (empty) body so the connection goes back to the pool, and so a 200 that
        // carries an S3 error document is seen for what it is. A refusal's body that cannot be
        // read is only its explanation.
        let body = match pulse.read_capped(resp, MAX_ERROR_BODY).await {
            Ok(b) => b,
            Err(e) if (200..300).contains(&status) => return Err(e.into_failure(self.provider, what)),
            Err(_) => Default::default(),
        };
        Ok(Answer { status, headers, body })
    }

    /// What an answer to a part's PUT means: the stored part, or why not.
    fn judge(
        &self,
        number: u32,
        url: &str,
        len: u64,
        md5: Option<&[u8; 16]>,
        answer: Answer,
        what: &str,
    ) -> std::result::Result<CompletedPart, Failure> {
        if !(200..300).contains(&answer.status) {
            let f = Failure::answered(answer.status, &answer.headers, &answer.body, &[]);
            if let Failure::Outcome { message, outcome: Outcome::Status { status, code: Some(code) }, .. } = &f
                && SIGNED_CHECKSUM_CODES.contains(&code.as_str())
            {
                let signed = signed_checksum(url, &[]);
                // Our own Content-MD5 refused, where the URL signs no checksum: the bytes were
                // altered on the way; sent again.
                if code == "BadDigest" && md5.is_some() && signed.is_empty() {
                    return Err(Failure::Outcome {
                        outcome: Outcome::Transport(TransportKind::Altered),
                        message: format!("S3 found the part's bytes altered on the way (BadDigest: {message})"),
                        retry_after: None,
                    });
                }
                tracing::debug!(part = number, url = %safe_url(url), "part refused for a signed checksum: {message}");
                return Err(Failure::Fatal(Error::VendorChecksum {
                    provider: self.provider,
                    what: what.into(),
                    status: *status,
                    code: code.clone(),
                    signed,
                    message: message.clone(),
                }));
            }
            if let Failure::Outcome { message, .. } = &f {
                tracing::debug!(part = number, url = %safe_url(url), "part refused: {message}");
            }
            return Err(f);
        }
        if answer.body.windows(7).any(|w| w == b"<Error>") {
            let (code, msg) = super::http::summarize_body(&answer.body);
            return Err(Failure::Outcome {
                outcome: Outcome::Status { status: 500, code },
                message: format!("HTTP 200 carrying an S3 error: {}", crate::redact::scrub(&msg, &[])),
                retry_after: None,
            });
        }
        let etag = answer.headers.get(reqwest::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_string);
        // `--checksum md5`: an ETag that is an MD5 must be the part's (a store that ignores
        // Content-MD5 may keep other bytes than were sent); the part is sent again.
        if let (Some(md5), Some(tag)) = (md5, etag.as_deref().and_then(md5_etag)) {
            let sent = hex::encode(md5);
            if tag != sent {
                tracing::debug!(part = number, etag = tag, md5 = %sent, "part stored with another MD5");
                return Err(Failure::Outcome {
                    outcome: Outcome::Transport(TransportKind::Altered),
                    message: format!(
                        "the store's ETag of part {number} ({tag}) is not the MD5 of the bytes sent ({sent}): it kept other bytes"
                    ),
                    retry_after: None,
                });
            }
        }
        match etag {
            Some(e) if !e.trim().trim_matches('"').is_empty() => {
                Ok(CompletedPart { number, etag: e, size: len, crc64nvme: None })
            }
            Some(_) => Err(Failure::Fatal(protocol(self.provider, what, "the response has an empty ETag header"))),
            None => Err(Failure::Fatal(protocol(self.provider, what, "the response has no ETag header"))),
        }
    }
}

/// The MD5 an ETag is (32 hex digits, quotes stripped), lower-case; `None` for any other
/// ETag (a multipart object's `-N`, an encrypted object's, another store's).
fn md5_etag(etag: &str) -> Option<String> {
    let t = etag.trim();
    let t = t.strip_prefix("W/").unwrap_or(t).trim_matches('"');
    (t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())).then(|| t.to_ascii_lowercase())
}

/// An answer to a part's PUT: its status, headers and (capped) body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
}

/// The extra headers of a part's PUT.
fn part_headers(options: &UploaderOptions, md5: Option<&[u8; 16]>) -> Vec<(&'static str, String)> {
    let mut headers = vec![];
    if let Some(ct) = &options.content_type {
        headers.push(("content-type", ct.clone()));
    }
    if let Some(m) = md5 {
        use base64::Engine;
        headers.push(("content-md5", base64::engine::general_purpose::STANDARD.encode(m)));
    }
    headers
}

fn protocol(provider: &'static str, what: &str, message: &str) -> Error {
    Error::Protocol { provider, what: what.into(), message: message.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn the_median_pace_is_the_middle_of_the_stored_parts() {
        assert_eq!(median_pace(&[]), None, "nothing stored: nothing to compare with");
        assert_eq!(median_pace(&[5.0]), Some(5.0));
        assert_eq!(median_pace(&[9.0, 1.0, 5.0]), Some(5.0), "sorted first");
        assert_eq!(median_pace(&[4.0, 1.0, 3.0, 2.0]), Some(3.0), "an even count: the upper middle");
    }

    #[test]
    fn a_part_is_hedged_after_four_times_what_the_median_pace_says_it_needs_and_at_least_two_seconds() {
        // 8 MiB at 1 MiB/s needs 8 s: sent again after 32 s.
        assert_eq!(hedge_bound(8 * MIB, MIB as f64), Duration::from_secs(32));
        // A small or fast part: never before HEDGE_AFTER.
        assert_eq!(hedge_bound(1024, MIB as f64), HEDGE_AFTER);
        assert_eq!(hedge_bound(0, MIB as f64), HEDGE_AFTER);
        // A pace of nothing: bounded (a day's need), not infinite, not a panic.
        assert_eq!(hedge_bound(u64::MAX, 0.0), Duration::from_secs(86_400).mul_f64(HEDGE_FACTOR));
    }

    #[test]
    fn only_a_part_far_behind_its_siblings_is_told_to_send_a_second_copy_and_only_once() {
        let tail = Tail::default();
        tail.paces.lock().unwrap().extend([MIB as f64; 3]);
        let probe = |secs_ago: u64| {
            Arc::new(Probe {
                len: MIB,
                started: Instant::now().checked_sub(Duration::from_secs(secs_ago)).unwrap(),
                hedge: tokio::sync::Notify::new(),
                hedged: Default::default(),
            })
        };
        // 1 MiB at the median 1 MiB/s: the bound is max(4 × 1 s, 2 s) = 4 s.
        let (late, on_time) = (probe(10), probe(1));
        tail.in_flight.lock().unwrap().extend([(1, late.clone()), (2, on_time.clone())]);
        tail.hedge_laggards();
        assert!(late.hedged.load(Ordering::Relaxed), "10 s in flight for a 4 s bound");
        assert!(!on_time.hedged.load(Ordering::Relaxed), "1 s in flight for a 4 s bound");
        // Told once: the notification is stored for the part's run, not sent again.
        tail.hedge_laggards();
        let told = late.hedge.notified();
        tokio::pin!(told);
        assert!(futures::FutureExt::now_or_never(told.as_mut()).is_some(), "the late part was told");
        let again = late.hedge.notified();
        tokio::pin!(again);
        assert!(futures::FutureExt::now_or_never(again.as_mut()).is_none(), "told twice");
        // Before any part is stored nothing is hedged, however long parts have been in flight.
        let fresh = Tail::default();
        let old = probe(3600);
        fresh.in_flight.lock().unwrap().insert(1, old.clone());
        fresh.hedge_laggards();
        assert!(!old.hedged.load(Ordering::Relaxed));
    }
}
