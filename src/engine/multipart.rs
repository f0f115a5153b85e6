//! The multipart protocol, written once for every provider whose uploads go create → parts →
//! complete: journal the intent → create (or resume, or adopt what a lost create made) →
//! parts ([`upload_parts`]) → complete → journal the completion.
//!
//! The rule for the calls that are not idempotent (create/start, complete) lives in
//! [`send_once_then_look_up`]: such a call is sent once; after an ambiguous failure (the
//! request may have arrived: a reset, a timeout, a 5xx) what it did is looked up first, and it
//! is sent again only when the look-up proves it did nothing. A provider that cannot look up
//! (TruVideo start) never has the call sent again.
//!
//! A provider describes its vendor with [`MultipartUpload`]; this module owns the order of
//! the steps, the journal and the rule.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::journal::{Journal, JournalState};
use super::plan::PartPlan;
use super::progress::{Event, Progress};
use super::retry::{Backoff, RetryPolicy};
use super::source::FileSource;
use super::uploader::{CompletedPart, PartDone, PartUrls, UploaderOptions, upload_parts};
use crate::error::{Error, Result};

/// What a create/start made (or a look-up found).
#[derive(Clone, Debug)]
pub struct Created {
    /// The provider's id of the upload.
    pub upload_id: String,
    /// How the file is cut.
    pub plan: PartPlan,
    /// Provider facts kept in the journal (`mediaId`, ...).
    pub extra: serde_json::Value,
}

/// The answer of a look-up.
#[derive(Debug)]
pub enum Lookup<T> {
    /// The lost request did this.
    Found(T),
    /// It did nothing: the request may be sent again.
    NotFound,
    /// The provider has no way to tell: the request is never sent again.
    Unsupported,
}

/// A journaled upload, as the server sees it on resume.
#[derive(Debug)]
pub enum Remote {
    /// Still open for parts.
    Open,
    /// Completed already (the completion's answer was lost): its details.
    Completed(serde_json::Value),
    /// Gone (deleted, expired, aborted): the reason. The journal is discarded.
    Gone(String),
}

/// One vendor's multipart upload of one file.
#[async_trait]
pub trait MultipartUpload: Send + Sync {
    /// Provider name.
    fn provider(&self) -> &'static str;
    /// What the provider calls one upload, for messages (`resuming capture X`).
    fn noun(&self) -> &'static str {
        "upload"
    }
    /// The plan when the client picks it (journaled with the intent); `None` when the server does.
    fn client_plan(&self) -> Option<PartPlan>;
    /// Sends the create/start request, once.
    async fn create(&self) -> Result<Created>;
    /// What a create sent at or after `since` and lost made, if the provider can tell.
    async fn find_created(&self, since: chrono::DateTime<chrono::Utc>) -> Result<Lookup<Created>>;
    /// The state of a journaled upload on resume (default: [`Remote::Open`]; a stale upload
    /// is then found when asking URLs, see [`MultipartUpload::is_stale`]).
    async fn check(&self, _created: &Created) -> Result<Remote> {
        Ok(Remote::Open)
    }
    /// Where the parts go.
    fn part_urls(&self, created: &Created, done: &[CompletedPart]) -> Arc<dyn PartUrls>;
    /// The part uploader's settings for this upload (a content type, say).
    fn uploader_options(&self, base: &UploaderOptions) -> UploaderOptions {
        base.clone()
    }
    /// Cleans up an upload this run made and will never use (it gave up with no journal to
    /// carry it on, or it started over from a journal's upload with `--no-resume`), where the
    /// provider allows it (Teleport deletes the capture). Best effort; default: nothing (no
    /// documented abort).
    async fn abandon(&self, _created: &Created) -> Result<()> {
        Ok(())
    }
    /// Sends the completion, once; the provider's answer.
    async fn complete(&self, created: &Created, parts: &[CompletedPart]) -> Result<serde_json::Value>;
    /// What a lost completion did: `Found(details)` when the upload is completed.
    async fn find_completed(&self, created: &Created) -> Result<Lookup<serde_json::Value>>;
    /// A failure that may have done its work (default: [`Error::Ambiguous`], and
    /// [`Error::Network`] for failures the executor could not tell apart).
    fn is_ambiguous(&self, e: &Error) -> bool {
        matches!(e, Error::Ambiguous { .. } | Error::Network { .. })
    }
    /// A completion refused because of its parts: S3's `InvalidPart` (an ETag that does not
    /// match the part the store has, or a part it does not have), by the refusal's code (a
    /// vendor that passes S3's refusal on in its own text lifts the code from it in its error
    /// parsing: `providers::api::lift_s3_code`). `Some` with the part numbers the refusal names
    /// (`part N`), empty when it names none; `None` for any other failure. The routine then
    /// sends those parts again (the journaled ones, when none is named) and completes again,
    /// once.
    fn refused_parts(&self, e: &Error) -> Option<Vec<u32>> {
        let Error::Rejected { code: Some(code), message, .. } = e else { return None };
        (code == "InvalidPart").then(|| part_numbers(message))
    }
    /// A failure proving a journaled upload is gone on the server (default: a 404, or an
    /// S3 `NoSuchUpload`).
    fn is_stale(&self, e: &Error) -> bool {
        match e {
            Error::Rejected { status, code, .. } => *status == 404 || code.as_deref() == Some("NoSuchUpload"),
            _ => false,
        }
    }
}

/// What the routine needs from the run.
pub struct Session<'a> {
    /// HTTP client of the part PUTs.
    pub http: &'a reqwest::Client,
    /// The resume journal, when there is a state directory.
    pub journal: Option<&'a Journal>,
    /// Part uploader settings.
    pub uploader: &'a UploaderOptions,
    /// Retry policy of the create/complete resends.
    pub retry: &'a RetryPolicy,
    /// Progress sink.
    pub progress: Arc<dyn Progress>,
    /// Cancelled on Ctrl-C.
    pub cancel: &'a CancellationToken,
}

/// How the upload ended.
#[derive(Debug)]
pub struct Finished {
    /// The upload.
    pub created: Created,
    /// The provider's answer to the completion (or what the look-up found).
    pub completion: serde_json::Value,
    /// True when the journal said the completion had been accepted by an earlier run: no
    /// request was made to upload or complete.
    pub already_completed: bool,
    /// CRC-64/NVME of the file as sent: the parts' CRCs combined (the receipt, see
    /// [`super::checksum`]).
    pub crc64nvme: u64,
}

/// Sends a non-idempotent request once; after an ambiguous failure looks up what it did, and
/// sends it again only when the look-up proves it did nothing (bounded by `retry`,
/// cancellable). A look-up that fails or cannot tell ends with the request's error.
///
/// The operation, sends, look-ups and the waits between them, is bounded by `deadline` (the
/// run's [`Executor::operation_deadline`](super::request::Executor::operation_deadline)): no
/// resend starts that could not begin before it. A send or a look-up in flight is not cut by
/// it: one that moves is never cut (a slow answer is an answer), one that stalls is cut by
/// the idle watch; a look-up begun after the deadline has `patience` (the idle timeout). So a
/// call that never answers, while its look-ups do, ends within the deadline and a little.
#[allow(clippy::too_many_arguments)]
pub async fn send_once_then_look_up<T, S, SF, L, LF>(
    (provider, what): (&'static str, &str),
    retry: &RetryPolicy,
    (deadline, patience): (std::time::Duration, std::time::Duration),
    cancel: &CancellationToken,
    is_ambiguous: impl Fn(&Error) -> bool,
    mut send: S,
    mut look_up: L,
) -> Result<T>
where
    S: FnMut() -> SF,
    SF: std::future::Future<Output = Result<T>>,
    L: FnMut() -> LF,
    LF: std::future::Future<Output = Result<Lookup<T>>>,
{
    let mut backoff = Backoff::new(retry.clone());
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let err = match send().await {
            Ok(v) => return Ok(v),
            Err(e) if is_ambiguous(&e) => e,
            Err(e) => return Err(e),
        };
        let look_until = until.max(tokio::time::Instant::now() + patience);
        let Ok(found) = tokio::time::timeout_at(look_until, look_up()).await else {
            tracing::info!(
                "{provider}: {what}: the look-up of what the failed request did ran out of time; not sending it again"
            );
            return Err(err);
        };
        match found {
            Ok(Lookup::Found(v)) => {
                tracing::info!("{provider}: {what}: the failed request had done its work ({err})");
                return Ok(v);
            }
            Ok(Lookup::NotFound) => {}
            Ok(Lookup::Unsupported) => return Err(err),
            // Ctrl-C during the look-up: the rerun looks up again (the intent is journaled).
            Err(e @ Error::Interrupted { .. }) => return Err(e),
            Err(e) => {
                tracing::info!(
                    "{provider}: {what}: cannot look up what the failed request did ({e}); not sending it again"
                );
                return Err(err);
            }
        }
        let Some(delay) = backoff.next_delay(None) else { return Err(err) };
        if tokio::time::Instant::now() + delay >= until {
            tracing::info!(
                "{provider}: {what} failed ({err}); not sent again: its operation's deadline ({}, 3 × --idle-timeout) is reached",
                crate::size::human_duration(deadline)
            );
            return Err(err);
        }
        tracing::info!(
            "{provider}: {what} failed ({err}); the look-up shows it did nothing; sending it again in {}",
            crate::size::human_duration(delay)
        );
        super::wait::sleep(delay, cancel).await?;
    }
}

/// The numbers `part N` names in a message (`The ETag of part 3 does not match`), in order,
/// once each.
fn part_numbers(message: &str) -> Vec<u32> {
    let lower = message.to_ascii_lowercase();
    let mut out = vec![];
    for (i, _) in lower.match_indices("part ") {
        let digits: String = lower[i + 5..].chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse::<u32>()
            && !out.contains(&n)
        {
            out.push(n);
        }
    }
    out
}

fn parse_time(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| chrono::Utc::now())
}

/// Runs the protocol for `file`: resume, adopt or create; parts; completion, each step
/// journaled. See the module documentation.
pub async fn run(session: &Session<'_>, file: &FileSource, upload: &dyn MultipartUpload) -> Result<Finished> {
    // Started over (`--no-resume`) from a journal's upload: that one will never be used.
    if let Some(old) = session.journal.and_then(|j| j.take_discarded())
        && old.state == JournalState::Started
        && !old.upload_id.is_empty()
    {
        let created = Created { upload_id: old.upload_id, plan: old.plan, extra: old.extra };
        abandon(session, upload, &created, "the upload --no-resume starts over from").await;
    }
    let mut made = None;
    let r = run_steps(session, file, upload, &mut made).await;
    // Gave up on an upload this run made, with no journal to carry it on: nothing will use it.
    if let (Err(e), Some(created), None) = (&r, &made, session.journal)
        && !matches!(e, Error::Interrupted { .. })
    {
        abandon(session, upload, created, "this run made and cannot finish").await;
    }
    r
}

/// Cleans up `created` ([`MultipartUpload::abandon`]), saying so; a failure is only logged.
async fn abandon(session: &Session<'_>, upload: &dyn MultipartUpload, created: &Created, why: &str) {
    let bound = session.uploader.exec.operation_deadline();
    match tokio::time::timeout(bound, upload.abandon(created)).await {
        Ok(Ok(())) => session.progress.event(Event::Notice {
            message: format!("{}: removed {} {} ({why})", upload.provider(), upload.noun(), created.upload_id),
        }),
        Ok(Err(e)) => tracing::warn!("cannot remove {} {} ({why}): {e}", upload.noun(), created.upload_id),
        Err(_) => tracing::warn!("cannot remove {} {} ({why}): no answer in time", upload.noun(), created.upload_id),
    }
}

/// The steps of one file: where the journal leaves it ([`resume_point`]), then rounds
/// ([`Rounds::round`]) until one finishes. A resumed upload the server no longer knows is
/// started over once; parts a completion refused are sent again once: at most three rounds.
async fn run_steps(
    session: &Session<'_>,
    file: &FileSource,
    upload: &dyn MultipartUpload,
    made: &mut Option<Created>,
) -> Result<Finished> {
    let mut rounds = Rounds {
        session,
        file,
        upload,
        carry_on: None,
        intent_at: None,
        journaled: vec![],
        started_over: false,
        parts_resent: false,
    };
    match resume_point(session, file, upload).await? {
        Start::Finished(f) => return Ok(f),
        Start::CarryOn(created, parts) => {
            rounds.journaled = parts.iter().map(|p| p.number).collect();
            rounds.carry_on = Some((created, parts));
        }
        Start::Create(intent_at) => rounds.intent_at = intent_at,
    }
    loop {
        if let Some(f) = rounds.round(made).await? {
            return Ok(f);
        }
    }
}

/// Where the journal leaves a file.
enum Start {
    /// Completed already (by an earlier run, or the server says so).
    Finished(Finished),
    /// Carry on with the journal's upload, open on the server, and the parts it stored.
    CarryOn(Created, Vec<CompletedPart>),
    /// A new upload; `Some` when an earlier run journaled its intent to create one (it may
    /// have: [`create`] looks it up first).
    Create(Option<chrono::DateTime<chrono::Utc>>),
}

/// What the journal says of the file: completed (no request; the receipt from the journal),
/// an intent, or an upload started, which the server is asked about ([`MultipartUpload::check`]):
/// open (its parts carried on, but those journaled without an ETag, which are sent again),
/// completed (the completion's answer was lost), or gone (the journal is dropped).
async fn resume_point(session: &Session<'_>, file: &FileSource, upload: &dyn MultipartUpload) -> Result<Start> {
    let journal = session.journal;
    let Some(r) = journal.and_then(|j| j.resume_point()) else { return Ok(Start::Create(None)) };
    let notice = |message: String| session.progress.event(Event::Notice { message });
    let noun = upload.noun();
    let created = Created { upload_id: r.upload_id.clone(), plan: r.plan, extra: r.extra.clone() };
    match r.state {
        JournalState::Completed => {
            notice(format!("{noun} {} was completed by an earlier run", r.upload_id));
            let completion = r.completion.unwrap_or(serde_json::Value::Null);
            let crc64nvme = match r.crc64nvme {
                Some(c) => c,
                None => receipt(file, &created.plan, &[]).await?,
            };
            Ok(Start::Finished(Finished { created, completion, already_completed: true, crc64nvme }))
        }
        JournalState::Intent => Ok(Start::Create(Some(parse_time(&r.intent_at)))),
        JournalState::Started => match upload.check(&created).await? {
            Remote::Open => {
                // An ETag the server never gave cannot complete anything: send those parts again.
                let (good, bad): (Vec<_>, Vec<_>) =
                    r.parts.into_iter().partition(|p| !p.etag.trim().trim_matches('"').is_empty());
                if !bad.is_empty() {
                    tracing::info!(parts = bad.len(), "the journal holds parts without an ETag: sending them again");
                }
                Ok(Start::CarryOn(created, good))
            }
            Remote::Completed(details) => {
                notice(format!("{noun} {} is already completed", r.upload_id));
                let crc = receipt(file, &created.plan, &r.parts).await?;
                finished(journal, created, details, crc).await.map(Start::Finished)
            }
            Remote::Gone(reason) => {
                stale_message(session, upload.provider(), &r.upload_id, &reason);
                if let Some(j) = journal {
                    j.finish();
                }
                Ok(Start::Create(None))
            }
        },
    }
}

/// The rounds of one file's upload, and what each carries to the next.
struct Rounds<'s, 'a> {
    session: &'s Session<'a>,
    file: &'s FileSource,
    upload: &'s dyn MultipartUpload,
    /// The upload to go on with and its stored parts; `None`: create one.
    carry_on: Option<(Created, Vec<CompletedPart>)>,
    /// An earlier run's intent to create (its create may have made an upload).
    intent_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The parts an earlier run journaled (their ETags are the journal's word, not this run's).
    journaled: Vec<u32>,
    /// The journal's upload was found gone and started over (once).
    started_over: bool,
    /// Parts a completion refused were sent again (once).
    parts_resent: bool,
}

impl Rounds<'_, '_> {
    /// One round: the upload (carried on, or created: `made`), its parts, its completion.
    /// `Ok(None)`: another round follows (the journal's upload was gone, or the completion
    /// refused parts that are sent again).
    async fn round(&mut self, made: &mut Option<Created>) -> Result<Option<Finished>> {
        let (session, file, upload) = (self.session, self.file, self.upload);
        let resuming = self.carry_on.is_some();
        let (created, done) = match self.carry_on.take() {
            Some((created, done)) => {
                session.progress.event(Event::Notice {
                    message: format!(
                        "resuming {} {}: {} of {} parts already sent",
                        upload.noun(),
                        created.upload_id,
                        done.len(),
                        created.plan.num_parts
                    ),
                });
                (created, done)
            }
            None => {
                let c = create(session, upload, self.intent_at.take()).await?;
                *made = Some(c.clone());
                (c, Vec::new())
            }
        };
        if resuming && done.len() as u32 == created.plan.num_parts {
            // Every part was sent: the completion may have been sent too. Look first.
            if let Lookup::Found(details) = upload.find_completed(&created).await? {
                let crc = receipt(file, &created.plan, &done).await?;
                return finished(session.journal, created, details, crc).await.map(Some);
            }
        }
        let parts = send_parts(session, file, upload, &created, done).await;
        // A resumed upload the provider no longer knows is started over, once.
        let may_be_stale = resuming && !self.started_over;
        let stale = |e: &Error| may_be_stale && upload.is_stale(e);
        let Some(parts) = unless_stale(session, upload.provider(), &created, parts, stale)? else {
            self.start_over();
            return Ok(None);
        };
        file.check_unchanged()?;
        let crc = receipt(file, &created.plan, &parts).await?;
        session.progress.event(Event::Phase { message: "completing".into() });
        let completion = send_once_then_look_up(
            (upload.provider(), "complete upload"),
            session.retry,
            (session.uploader.exec.operation_deadline(), session.uploader.exec.idle_timeout()),
            session.cancel,
            |e| upload.is_ambiguous(e),
            || upload.complete(&created, &parts),
            || upload.find_completed(&created),
        )
        .await;
        if let Err(e) = &completion
            && let Some(again) = self.refused(e, &parts)
        {
            self.resend(&created, &again, e).await?;
            self.carry_on = Some((created, parts.into_iter().filter(|p| !again.contains(&p.number)).collect()));
            return Ok(None);
        }
        let Some(completion) = unless_stale(session, upload.provider(), &created, completion, stale)? else {
            self.start_over();
            return Ok(None);
        };
        finished(session.journal, created, completion, crc).await.map(Some)
    }

    /// The journal's upload is gone on the server: the next round creates a new one.
    fn start_over(&mut self) {
        self.started_over = true;
        self.journaled.clear();
    }

    /// The parts to send again after the completion failed with `e`, once per file: those it
    /// refused ([`MultipartUpload::refused_parts`]), see [`parts_to_resend`].
    fn refused(&self, e: &Error, parts: &[CompletedPart]) -> Option<Vec<u32>> {
        if self.parts_resent {
            return None;
        }
        let named = self.upload.refused_parts(e)?;
        let again = parts_to_resend(named, &self.journaled, parts);
        (!again.is_empty()).then_some(again)
    }

    /// Parts the completion refused (an ETag the store does not have: a journal line gone
    /// wrong): named in a notice, dropped from the journal; the next round sends them again
    /// and completes again.
    async fn resend(&mut self, created: &Created, again: &[u32], why: &Error) -> Result<()> {
        let list = again.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        self.session.progress.event(Event::Notice {
            message: format!(
                "{}: the completion of {} {} refused part {list} ({why}): sending {} again",
                self.upload.provider(),
                self.upload.noun(),
                created.upload_id,
                if again.len() == 1 { "it" } else { "them" },
            ),
        });
        if let Some(j) = self.session.journal {
            let (j, again) = (j.clone(), again.to_vec());
            super::durable::off_thread(move || j.forget_parts(&again)).await?;
        }
        self.parts_resent = true;
        self.journaled.retain(|n| !again.contains(n));
        Ok(())
    }
}

/// Which parts a completion's refusal sends again: those it `named`, or, when it named none,
/// those an earlier run `journaled` (this run's ETags are the store's own); only parts the
/// completion listed.
fn parts_to_resend(named: Vec<u32>, journaled: &[u32], parts: &[CompletedPart]) -> Vec<u32> {
    let again = if named.is_empty() { journaled.to_vec() } else { named };
    again.into_iter().filter(|n| parts.iter().any(|p| p.number == *n)).collect()
}

/// The parts of `created` not in `done`, through the part uploader, each journaled as stored.
async fn send_parts(
    session: &Session<'_>,
    file: &FileSource,
    upload: &dyn MultipartUpload,
    created: &Created,
    done: Vec<CompletedPart>,
) -> Result<Vec<CompletedPart>> {
    let recorder: PartDone = match session.journal {
        Some(j) => j.recorder(),
        None => Arc::new(|_: &[CompletedPart]| Ok(())),
    };
    upload_parts(
        session.http,
        upload.provider(),
        file,
        &created.plan,
        upload.part_urls(created, &done),
        done,
        recorder,
        &upload.uploader_options(session.uploader),
        session.progress.clone(),
        session.cancel,
    )
    .await
}

/// The file's CRC-64/NVME from its parts' (see [`super::checksum`]): those the parts carry
/// combined in order, any other (a part an older journal kept without one, or a plan that
/// does not cover the file) read again from the file.
async fn receipt(file: &FileSource, plan: &PartPlan, parts: &[CompletedPart]) -> Result<u64> {
    let pieces = if plan.num_parts == 0 || plan.file_size != file.size() {
        vec![(None, 0, file.size())]
    } else {
        plan.numbers()
            .map(|n| {
                let (offset, len) = plan.range(n);
                let crc = parts.iter().find(|p| p.number == n && p.size == len).and_then(|p| p.crc64nvme);
                (crc, offset, len)
            })
            .collect()
    };
    super::checksum::whole_file(file, pieces)
        .await
        .map_err(|source| Error::File { path: file.path().to_path_buf(), source })
}

/// `r`'s value, or `None` when `r` is an error that proves the journal's upload gone on the
/// server (`stale`): then say so and drop the journal, so the caller starts a new upload.
fn unless_stale<T>(
    session: &Session<'_>,
    provider: &str,
    created: &Created,
    r: Result<T>,
    stale: impl Fn(&Error) -> bool,
) -> Result<Option<T>> {
    match r {
        Err(e) if stale(&e) => {
            stale_message(session, provider, &created.upload_id, &e.to_string());
            if let Some(j) = session.journal {
                j.finish();
            }
            Ok(None)
        }
        r => r.map(Some),
    }
}

/// The upload completed: the journal says so, then the run returns it.
async fn finished(
    journal: Option<&Journal>,
    created: Created,
    completion: serde_json::Value,
    crc64nvme: u64,
) -> Result<Finished> {
    if let Some(j) = journal {
        completed(j, &completion, crc64nvme).await?;
    }
    Ok(Finished { created, completion, already_completed: false, crc64nvme })
}

fn stale_message(session: &Session<'_>, provider: &str, id: &str, reason: &str) {
    tracing::info!(%provider, upload_id = %id, "the journal's upload is gone ({reason}); starting over");
    session.progress.event(Event::Notice {
        message: format!(
            "{provider}: upload {id} of the resume journal no longer exists on the server ({reason}); starting over"
        ),
    });
}

/// Journals the intent, then creates the upload (or adopts the one a lost create made).
async fn create(
    session: &Session<'_>,
    upload: &dyn MultipartUpload,
    earlier_intent: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Created> {
    let provider = upload.provider();
    // Whether an earlier run's create is still unaccounted for (its look-up could not tell).
    let mut earlier_unsettled = false;
    // An earlier run wrote its intent and may have created an upload before it died.
    if let Some(since) = earlier_intent {
        match upload.find_created(since).await {
            Ok(Lookup::Found(c)) => {
                session.progress.event(Event::Notice {
                    message: format!("adopting {} {}, created by an interrupted run", upload.noun(), c.upload_id),
                });
                if let Some(j) = session.journal {
                    started(j, provider, &c).await?;
                }
                return Ok(c);
            }
            Ok(Lookup::NotFound) => {}
            Ok(Lookup::Unsupported) => earlier_unsettled = true,
            Err(e) => {
                earlier_unsettled = true;
                tracing::info!("cannot look up the upload an interrupted run may have created: {e}");
            }
        }
    }
    let since = chrono::Utc::now() - chrono::Duration::seconds(5);
    if let Some(j) = session.journal {
        let plan = upload.client_plan().unwrap_or(PartPlan { file_size: 0, part_size: 0, num_parts: 0 });
        let j = j.clone();
        super::durable::off_thread(move || j.intent(plan)).await?;
    }
    let created = send_once_then_look_up(
        (provider, "create upload"),
        session.retry,
        (session.uploader.exec.operation_deadline(), session.uploader.exec.idle_timeout()),
        session.cancel,
        |e| upload.is_ambiguous(e),
        || upload.create(),
        || upload.find_created(since),
    )
    .await;
    let created = match created {
        Ok(c) => c,
        // The create surely made nothing (and no earlier run's create is unaccounted for): the
        // intent goes, so `upload pending` does not list an upload that can never finish.
        Err(e) => {
            if !earlier_unsettled
                && !upload.is_ambiguous(&e)
                && never_happened(&e)
                && let Some(j) = session.journal
            {
                j.finish();
            }
            return Err(e);
        }
    };
    tracing::info!(upload_id = %created.upload_id, parts = created.plan.num_parts, "upload created");
    if let Some(j) = session.journal {
        started(j, provider, &created).await?;
    }
    Ok(created)
}

/// A failure of a create that proves it made nothing: the request never reached a server
/// (refused or unresolvable, a TLS handshake that failed, plain http where TLS was expected),
/// or the server refused it before acting on it (a 4xx: authentication, a bad request, a
/// method the endpoint does not have), or it was never sent (a local error). A timeout, a
/// reset, a 5xx or an answer that could not be read leave it open.
pub fn never_happened(e: &Error) -> bool {
    match e {
        Error::Unreachable { .. } | Error::Certificate { .. } | Error::PlainHttp { .. } => true,
        Error::Auth { .. } | Error::Usage { .. } | Error::File { .. } => true,
        Error::Rejected { status, .. } => (400..500).contains(status) && *status != 408,
        _ => false,
    }
}

// The journal's writes wait for fsync: off the async workers (see `durable::off_thread`),
// awaited before the next step, so the order of the steps is kept.

async fn started(j: &Journal, provider: &'static str, c: &Created) -> Result<()> {
    let (j, c) = (j.clone(), c.clone());
    super::durable::off_thread(move || j.start(provider, j.endpoint(), &c.upload_id, c.extra.clone(), c.plan)).await
}

async fn completed(j: &Journal, details: &serde_json::Value, crc64nvme: u64) -> Result<()> {
    let (j, details) = (j.clone(), details.clone());
    super::durable::off_thread(move || j.completed(details, Some(crc64nvme))).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn net() -> Error {
        Error::Network { provider: "t", what: "x".into(), message: "reset".into() }
    }

    /// A policy of `max_retries` resends with a backoff between `base_ms` and `max_ms`.
    fn quick_retry(max_retries: u32, base_ms: u64, max_ms: u64) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            base_delay: std::time::Duration::from_millis(base_ms),
            max_delay: std::time::Duration::from_millis(max_ms),
            ..RetryPolicy::default()
        }
    }

    /// A completion refused for its parts is known by S3's code, never by the text: a message
    /// that quotes `InvalidPart` with no code (the vendor's parsing did not lift it) is not one.
    #[test]
    fn a_refused_part_is_known_by_its_code() {
        struct Any;
        #[async_trait]
        impl MultipartUpload for Any {
            fn provider(&self) -> &'static str {
                "t"
            }
            fn client_plan(&self) -> Option<PartPlan> {
                None
            }
            async fn create(&self) -> Result<Created> {
                unreachable!()
            }
            async fn find_created(&self, _: chrono::DateTime<chrono::Utc>) -> Result<Lookup<Created>> {
                unreachable!()
            }
            fn part_urls(&self, _: &Created, _: &[CompletedPart]) -> Arc<dyn PartUrls> {
                unreachable!()
            }
            async fn complete(&self, _: &Created, _: &[CompletedPart]) -> Result<serde_json::Value> {
                unreachable!()
            }
            async fn find_completed(&self, _: &Created) -> Result<Lookup<serde_json::Value>> {
                unreachable!()
            }
        }
        let refusal = |code: Option<&str>, message: &str| Error::Rejected {
            provider: "t",
            what: "complete upload".into(),
            status: 400,
            code: code.map(String::from),
            message: message.into(),
        };
        let named = refusal(Some("InvalidPart"), "The ETag of part 2 does not match; part 5 neither");
        assert_eq!(Any.refused_parts(&named), Some(vec![2, 5]));
        assert_eq!(Any.refused_parts(&refusal(Some("InvalidPart"), "One or more parts")), Some(vec![]));
        assert_eq!(Any.refused_parts(&refusal(None, "The ETag of part 2 does not match. (InvalidPart)")), None);
        assert_eq!(Any.refused_parts(&refusal(Some("InvalidPartOrder"), "part 3")), None);
    }

    /// A completion's refusal sends again the parts it names, or, naming none, the ones an
    /// earlier run journaled; never a part the completion did not list.
    #[test]
    fn the_parts_sent_again_are_those_the_refusal_names_else_the_journaled_ones() {
        let parts: Vec<CompletedPart> = (1..=4)
            .map(|number| CompletedPart { number, etag: format!("\"{number}\""), size: 5, crc64nvme: None })
            .collect();
        assert_eq!(parts_to_resend(vec![3], &[1, 2], &parts), [3]);
        assert_eq!(parts_to_resend(vec![], &[1, 2], &parts), [1, 2]);
        assert_eq!(parts_to_resend(vec![2, 9], &[], &parts), [2], "part 9 was not listed");
        assert!(parts_to_resend(vec![], &[], &parts).is_empty(), "nothing journaled, nothing named");
    }

    /// The rule, once: never sent again before a look-up proved the first did nothing.
    #[tokio::test]
    async fn a_non_idempotent_call_is_sent_again_only_after_a_look_up_found_nothing() {
        let retry = quick_retry(5, 1, 2);
        let cancel = CancellationToken::new();
        let amb = |e: &Error| matches!(e, Error::Network { .. });
        // (send outcomes, look-up answers) → (result, sends, look-ups, order of calls)
        async fn case(
            retry: &RetryPolicy,
            cancel: &CancellationToken,
            amb: impl Fn(&Error) -> bool,
            fails: u32,
            look: fn(u32) -> Result<Lookup<u32>>,
            fatal: bool,
        ) -> (Result<u32>, u32, u32, String) {
            let sends = AtomicU32::new(0);
            let looks = AtomicU32::new(0);
            let order = std::sync::Mutex::new(String::new());
            let r = send_once_then_look_up(
                ("t", "t"),
                retry,
                (std::time::Duration::from_secs(60), std::time::Duration::from_secs(60)),
                cancel,
                amb,
                || async {
                    let n = sends.fetch_add(1, Ordering::SeqCst) + 1;
                    order.lock().unwrap().push('S');
                    if fatal {
                        Err(Error::Rejected {
                            provider: "t",
                            what: "x".into(),
                            status: 400,
                            code: None,
                            message: "no".into(),
                        })
                    } else if n <= fails {
                        Err(net())
                    } else {
                        Ok(100 + n)
                    }
                },
                || async {
                    let n = looks.fetch_add(1, Ordering::SeqCst) + 1;
                    order.lock().unwrap().push('L');
                    look(n)
                },
            )
            .await;
            let o = order.lock().unwrap().clone();
            (r, sends.load(Ordering::SeqCst), looks.load(Ordering::SeqCst), o)
        }
        // Two lost requests that did nothing: each resend comes after a look-up.
        let (r, s, l, o) = case(&retry, &cancel, amb, 2, |_| Ok(Lookup::NotFound), false).await;
        assert_eq!((r.unwrap(), s, l, o.as_str()), (103, 3, 2, "SLSLS"));
        // The look-up finds the work done: never sent again.
        let (r, s, l, _) = case(&retry, &cancel, amb, 9, |_| Ok(Lookup::Found(7)), false).await;
        assert_eq!((r.unwrap(), s, l), (7, 1, 1));
        // No way to look up, or the look-up fails: never sent again, the request's error.
        let (r, s, l, _) = case(&retry, &cancel, amb, 9, |_| Ok(Lookup::Unsupported), false).await;
        assert!(matches!(r, Err(Error::Network { .. })) && s == 1 && l == 1);
        let (r, s, _, _) = case(&retry, &cancel, amb, 9, |_| Err(net()), false).await;
        assert!(matches!(r, Err(Error::Network { .. })) && s == 1);
        // A refusal is not ambiguous: no look-up, no resend.
        let (r, s, l, _) = case(&retry, &cancel, amb, 0, |_| Ok(Lookup::NotFound), true).await;
        assert!(matches!(r, Err(Error::Rejected { .. })) && s == 1 && l == 0);
        // Bounded: the retry policy's attempts, then the error.
        let (r, s, l, _) = case(&retry, &cancel, amb, 99, |_| Ok(Lookup::NotFound), false).await;
        assert!(matches!(r, Err(Error::Network { .. })) && s == 6 && l == 6, "{s} {l}");
    }

    /// The operation is bounded: quick ambiguous failures whose look-ups find nothing are sent
    /// again until the deadline, no longer; a look-up that never ends is given up after its
    /// patience, with the request's error.
    #[tokio::test]
    async fn the_operation_ends_within_its_deadline() {
        let retry = quick_retry(1000, 20, 40);
        let cancel = CancellationToken::new();
        let bounds = (std::time::Duration::from_millis(300), std::time::Duration::from_millis(100));
        let sends = AtomicU32::new(0);
        let t0 = std::time::Instant::now();
        let r: Result<u32> = send_once_then_look_up(
            ("t", "create"),
            &retry,
            bounds,
            &cancel,
            |_| true,
            || async {
                sends.fetch_add(1, Ordering::SeqCst);
                Err(net())
            },
            || async { Ok(Lookup::NotFound) },
        )
        .await;
        assert!(matches!(r, Err(Error::Network { .. })), "{r:?}");
        assert!(t0.elapsed() < bounds.0 + std::time::Duration::from_millis(200), "{:?}", t0.elapsed());
        assert!(sends.load(Ordering::SeqCst) >= 3, "resent while there was time");
        let t0 = std::time::Instant::now();
        let r: Result<u32> = send_once_then_look_up(
            ("t", "create"),
            &retry,
            bounds,
            &cancel,
            |_| true,
            || async { Err(net()) },
            std::future::pending,
        )
        .await;
        assert!(matches!(r, Err(Error::Network { .. })), "{r:?}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(30));
    }
}
