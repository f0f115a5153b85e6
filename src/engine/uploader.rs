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
//!   (the resume journal) before that.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::plan::PartPlan;
use super::progress::{AttemptBytes, Event, Progress};
use super::ratelimit::RateLimit;
use super::request::{Call, Executor, Failure, Kind, MAX_ERROR_BODY, Pulse, RetryNotice};
use super::retry::{Outcome, RetryPolicy};
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
        }
    }
}

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
    let mut finished: BTreeMap<u32, CompletedPart> =
        done.into_iter().filter(|p| p.number >= 1 && p.number <= plan.num_parts).map(|p| (p.number, p)).collect();
    let pending: Vec<u32> = plan.numbers().filter(|n| !finished.contains_key(n)).collect();
    progress.event(Event::Started {
        file: source.file_name(),
        total_bytes: plan.file_size,
        parts: plan.num_parts,
        done_bytes: finished.values().map(|p| p.size).sum(),
        done_parts: finished.len() as u32,
    });

    // Stage 1: URLs, asked a few at a time ahead of the uploads.
    let (url_tx, mut url_rx) = mpsc::channel::<(u32, Result<String>)>(options.url_prefetch.max(1));
    let producer = {
        let urls = urls.clone();
        let prefetch = options.url_prefetch.max(1);
        tokio::spawn(async move {
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
        })
    };
    let _stop_producer = AbortOnDrop(producer);

    // Stage 3: the journal's appends, batched.
    let (record_tx, record_rx) = mpsc::unbounded_channel::<Recording>();
    let mut recorder = AbortOnDrop(tokio::spawn(record_parts(record_rx, on_part_done, provider)));

    // Stage 2: bounded part uploads.
    let permits =
        options.shared_permits.clone().unwrap_or_else(|| Permits::new(Concurrency::Fixed(options.concurrency)));
    let mut tasks: JoinSet<Result<CompletedPart>> = JoinSet::new();
    let mut part_seed = options.seed;
    let mut interrupted = false;
    let mut failure: Option<Error> = None;

    let absorb = |res: std::result::Result<Result<CompletedPart>, tokio::task::JoinError>,
                  finished: &mut BTreeMap<u32, CompletedPart>|
     -> Option<Error> {
        match res {
            Ok(Ok(part)) => {
                let number = part.number;
                progress.event(Event::PartDone { part: number });
                finished.insert(number, part);
                None
            }
            Ok(Err(e)) => Some(e),
            Err(join) if join.is_cancelled() => None,
            Err(join) => {
                Some(Error::Protocol { provider, what: "part upload".into(), message: format!("task failed: {join}") })
            }
        }
    };

    'feed: loop {
        while let Some(res) = tasks.try_join_next() {
            if let Some(e) = absorb(res, &mut finished) {
                failure = Some(e);
                break 'feed;
            }
        }
        // The URL first, then the permit: a permit is never held waiting for a URL.
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => { interrupted = true; break 'feed; }
            n = url_rx.recv() => n,
        };
        let Some((number, url)) = next else { break 'feed };
        let url = match url {
            Ok(u) => u,
            Err(e) => {
                failure = Some(e);
                break 'feed;
            }
        };
        let permit = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => { interrupted = true; break 'feed; }
                Some(res) = tasks.join_next(), if !tasks.is_empty() && permits.available() == 0 => {
                    if let Some(e) = absorb(res, &mut finished) { failure = Some(e); break 'feed; }
                }
                p = acquire(&permits, plan, number) => break p,
            }
        };
        let job = PartJob {
            http: http.clone(),
            provider,
            source: source.clone(),
            plan: *plan,
            urls: urls.clone(),
            options: options.clone(),
            progress: progress.clone(),
            permits: permits.clone(),
            seed: part_seed.map(|s| s.wrapping_add(number as u64)),
        };
        part_seed = part_seed.map(|s| s.wrapping_add(1));
        let span = tracing::debug_span!("part", part_number = number);
        let record_tx = record_tx.clone();
        tasks.spawn(
            async move {
                let part = job.run(number, url).await?;
                // Stored: its time counts in the run's throughput, and the permit goes back
                // before the journal's write.
                permit.finished();
                // The journal's append (write + fsync) runs on the blocking pool, batched with
                // the parts that finish meanwhile, and the part counts as finished only once it
                // is durable.
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

    if failure.is_none() && !interrupted {
        // The last wave: every part is under way; wait for them, but still hear Ctrl-C, and
        // stop at the first failure.
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => { interrupted = true; break; }
                res = tasks.join_next() => match res {
                    Some(res) => {
                        if let Some(e) = absorb(res, &mut finished) {
                            failure = Some(e);
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
    }
    if failure.is_some() {
        tasks.abort_all();
    } else if interrupted {
        // `drain` after a Ctrl-C; after the run's time limit, up to `STOP_GRACE`.
        let deadline = options.exec.cut(options.drain);
        tokio::pin!(deadline);
        let mut cut = false;
        loop {
            tokio::select! {
                _ = &mut deadline, if !cut => { cut = true; tasks.abort_all(); }
                res = tasks.join_next() => match res {
                    Some(res) => { let _ = absorb(res, &mut finished); }
                    None => break,
                }
            }
        }
    }
    while let Some(res) = tasks.join_next().await {
        if let Some(e) = absorb(res, &mut finished) {
            failure.get_or_insert(e);
        }
    }
    // Every part the recorder was handed is journaled before this returns, a failure or an
    // interruption included (a part aborted while waiting for its line is still written): the
    // server stored it, so a resume must not send it again. Bounded, as every wait.
    drop(record_tx);
    if tokio::time::timeout(RECORDER_DRAIN, &mut recorder.0).await.is_err() {
        tracing::warn!("the resume journal's writer did not finish within {RECORDER_DRAIN:?}");
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if interrupted || cancel.is_cancelled() {
        return Err(Error::Interrupted {
            hint: "run the same command again to resume; finished parts are not sent again".into(),
        });
    }
    let parts: Vec<CompletedPart> = finished.into_values().collect();
    check_complete(provider, plan, &parts)?;
    Ok(parts)
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

impl PartJob {
    async fn run(self, number: u32, url: String) -> Result<CompletedPart> {
        let (offset, len) = self.plan.range(number);
        let what = format!("PUT part {number}");
        let md5 = if self.options.content_md5 {
            let digest = self
                .source
                .md5_range(offset, len)
                .await
                .map_err(|source| Error::File { path: self.source.path().to_path_buf(), source })?;
            use base64::Engine;
            Some(base64::engine::general_purpose::STANDARD.encode(digest))
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
        let this = &self;
        let md5 = &md5;
        let url = &url;
        let what = what.as_str();
        self.options
            .exec
            .run(&call, |attempt| async move {
                let mut url = url.lock().await;
                if attempt.refresh_url {
                    *url = this.urls.url(number, true).await.map_err(Failure::Fatal)?;
                }
                this.attempt(number, &url, offset, len, md5.as_deref(), what, &attempt.pulse).await
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
        md5: Option<&str>,
        what: &str,
        pulse: &Pulse,
    ) -> std::result::Result<CompletedPart, Failure> {
        // The bytes of an attempt that does not store the part are taken back, also when the
        // attempt is dropped (cut by the idle watch, or by Ctrl-C).
        let sent = AttemptBytes::new(self.progress.clone(), number);
        let on_sent = sent.counter();
        // No bound on the whole PUT: the executor's idle watch cuts it when it stops moving,
        // never while it moves (a slow link, a low --limit-rate).
        let headers = part_headers(&self.options, md5);
        let t0 = Instant::now();
        let answer = self.streamed(url, offset, len, headers, on_sent, what, pulse).await;
        if let Err(Failure::Outcome { message, .. }) = &answer {
            tracing::debug!(part = number, url = %safe_url(url), "part attempt failed: {message}");
        }
        let result = answer.and_then(|a| self.judge(number, url, len, a, what));
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
        what: &str,
        pulse: &Pulse,
    ) -> std::result::Result<Answer, Failure> {
        // A read error of the file (it shrank) is the file's fault, not the network's.
        let file_error: Arc<std::sync::Mutex<Option<std::io::Error>>> = Arc::default();
        let body = {
            let file_error = file_error.clone();
            let stream = self.source.stream_range_limited(offset, len, self.options.rate.clone(), on_sent);
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
        answer: Answer,
        what: &str,
    ) -> std::result::Result<CompletedPart, Failure> {
        if !(200..300).contains(&answer.status) {
            let f = Failure::answered(answer.status, &answer.headers, &answer.body, &[]);
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
        match etag {
            Some(e) if !e.trim().trim_matches('"').is_empty() => Ok(CompletedPart { number, etag: e, size: len }),
            Some(_) => Err(Failure::Fatal(protocol(self.provider, what, "the response has an empty ETag header"))),
            None => Err(Failure::Fatal(protocol(self.provider, what, "the response has no ETag header"))),
        }
    }
}

/// An answer to a part's PUT: its status, headers and (capped) body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
}

/// The extra headers of a part's PUT.
fn part_headers(options: &UploaderOptions, md5: Option<&str>) -> Vec<(&'static str, String)> {
    let mut headers = vec![];
    if let Some(ct) = &options.content_type {
        headers.push(("content-type", ct.clone()));
    }
    if let Some(m) = md5 {
        headers.push(("content-md5", m.to_string()));
    }
    headers
}

fn protocol(provider: &'static str, what: &str, message: &str) -> Error {
    Error::Protocol { provider, what: what.into(), message: message.into() }
}
