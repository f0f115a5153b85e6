//! The one request executor: every HTTP call the tool makes (part PUTs, POST forms, API calls,
//! sign-in, downloads) goes through [`Executor::run`].
//!
//! The caller hands over a closure that makes ONE attempt (it builds the request anew each
//! time, so a streamed body is re-read from its first byte) and says how it went; the executor
//! owns everything else:
//! - the retry classifier ([`classify`]), by the kind of call ([`Kind`]): what is retried, what
//!   asks for a fresh presigned URL, what is final; certificate and DNS errors are never retried;
//! - jittered exponential backoff ([`Backoff`]) and `Retry-After` (seconds or an HTTP date);
//! - the time model of the run ([`super::http::NetOptions`]): each attempt is watched through
//!   its [`Pulse`] and cut when it moves no byte either way for the idle timeout, or moves
//!   slower than the speed limit ([`super::pulse`]); a cut attempt is classified as a timeout
//!   (retried on a new connection, or, for a call not safe to repeat, ambiguous: its look-up
//!   follows). A host that sent nothing for [`super::http::NetOptions::give_up_after`] while
//!   its exchanges stalled is given up on (exit 5), and announced once per streak of silence
//!   through the run's notifier (the CLI prints "HOST is not answering ... still trying");
//! - an optional per-attempt time limit and a per-call deadline after which no retry starts
//!   (kept under the lifetime of presigned URLs);
//! - one retry budget shared by every call of the run ([`RetryBudget`]): a storm of failures
//!   backs the whole run off instead of every part retrying on its own;
//! - an unreachable origin is given up on early: until a host has answered once in this run,
//!   connection failures get [`RetryPolicy::first_contact_retries`] retries, and each is
//!   announced through the run's notifier (the CLI prints them at the default level);
//! - cancellation: a first Ctrl-C interrupts any wait at once; an attempt in flight gets
//!   [`super::wait::GRACE`] to finish, then it is dropped (its connection closed) and the call
//!   ends with [`Error::Interrupted`]: a call not safe to repeat that was cut so is looked up
//!   by the rerun (its intent is journaled first).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;

pub use super::pulse::Pulse;
use super::pulse::{Host, Timing};
use super::retry::{Backoff, Class, Outcome, RetryPolicy, TransportKind, classify_api, classify_part, retry_after};
use crate::error::{Error, Result};

/// An operation not safe to repeat (create, complete, with its look-ups and resends) ends
/// within this many idle timeouts ([`Executor::operation_deadline`]).
pub const OPERATION_IDLE_TIMEOUTS: u32 = 3;

/// Largest API answer read into memory (JSON, S3 XML errors): past it the call fails.
pub const MAX_API_BODY: usize = 16 << 20;
/// Largest error body read from S3 (its XML errors are a few hundred bytes).
pub const MAX_ERROR_BODY: usize = 64 << 10;

/// Whether a provider API call may be sent again after an ambiguous failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// GET, PUT, DELETE, asking a presigned URL: safe to repeat.
    Idempotent,
    /// Create/start/reserve/complete: repeated only when the request surely never arrived
    /// (connection refused, 429); otherwise the caller looks the state up first. After a 401 the
    /// token is renewed and the request repeated once (a refused request did nothing).
    Once,
    /// Like [`Retry::Once`], but not repeated after a 401 either: the token is renewed and the
    /// [`Error::Auth`] returned, for the caller to look the state up before sending again.
    Never,
}

/// What kind of call an attempt is: decides the classification of its failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A provider API call.
    Api(Retry),
    /// A PUT to a presigned URL: a 403 means "ask for a fresh URL".
    Part,
    /// A POST form upload to S3: a 403 is final (the caller tells an expiry apart).
    Form,
    /// A GET of a file (Range requests), or a sign-in: repeatable.
    Fetch,
}

/// The classifier: one table for every call the tool makes.
pub fn classify(kind: Kind, outcome: &Outcome) -> Class {
    if let Outcome::Transport(
        TransportKind::Tls | TransportKind::PlainHttp | TransportKind::Dns | TransportKind::Protocol,
    ) = outcome
    {
        return Class::Fatal;
    }
    match kind {
        Kind::Part => classify_part(outcome),
        Kind::Form => match classify_part(outcome) {
            Class::RefreshUrl => Class::Fatal,
            c => c,
        },
        Kind::Fetch | Kind::Api(Retry::Idempotent) => classify_api(outcome),
        Kind::Api(Retry::Once | Retry::Never) => match outcome {
            // Never reached the server, or the server refused it without acting on it.
            Outcome::Transport(TransportKind::Connect) | Outcome::Status { status: 429, .. } => Class::Retry,
            _ => Class::Fatal,
        },
    }
}

/// How an attempt failed.
#[derive(Debug)]
pub enum Failure {
    /// Final: return this error (no classification).
    Fatal(Error),
    /// Classify this outcome and perhaps try again.
    Outcome {
        /// What happened.
        outcome: Outcome,
        /// One line for messages (secret-free).
        message: String,
        /// `Retry-After` sent by the server.
        retry_after: Option<Duration>,
    },
    /// Send again at once, not counted as a retry (the token was just renewed).
    Again,
}

impl Failure {
    /// A transport failure of reqwest, classified by kind.
    pub fn transport(err: &reqwest::Error) -> Self {
        Failure::Outcome {
            outcome: Outcome::Transport(super::http::transport_kind(err)),
            message: super::http::describe_transport(err),
            retry_after: None,
        }
    }

    /// A non-2xx answer: its body (at most `cap` bytes of it) summarized into one line,
    /// scrubbed of `secrets`.
    pub async fn status(resp: reqwest::Response, cap: usize, secrets: &[&str]) -> Self {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = read_capped(resp, cap).await.unwrap_or_default();
        Failure::answered(status, &headers, &body, secrets)
    }

    /// A non-2xx answer already read: its body summarized into one line, scrubbed of `secrets`.
    pub fn answered(status: u16, headers: &reqwest::header::HeaderMap, body: &[u8], secrets: &[&str]) -> Self {
        let (code, msg) = super::http::summarize_body(body);
        Failure::Outcome {
            outcome: Outcome::Status { status, code },
            message: crate::redact::scrub(&msg, secrets),
            retry_after: retry_after(headers).or_else(|| super::retry::body_retry_after(body)),
        }
    }
}

/// Reads a body, refusing one longer than `cap` bytes (checked against `Content-Length` first,
/// then while reading, so an endless body cannot grow memory).
pub async fn read_capped(resp: reqwest::Response, cap: usize) -> std::result::Result<bytes::Bytes, BodyError> {
    // The same read as an attempt's, through a pulse no watch looks at.
    Pulse::new(None, None).read_capped(resp, cap).await
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Longer than the cap (bytes).
    TooLarge(usize),
    /// The connection failed mid-body.
    Transport(reqwest::Error),
}

impl BodyError {
    /// As an attempt failure: an oversized answer is final, a broken one is retried as a
    /// transport error.
    pub fn into_failure(self, provider: &'static str, what: &str) -> Failure {
        match self {
            BodyError::TooLarge(cap) => Failure::Fatal(Error::Protocol {
                provider,
                what: what.into(),
                message: format!(
                    "the answer is larger than {} (the limit for an API answer); refused",
                    crate::size::human(cap as u64)
                ),
            }),
            BodyError::Transport(e) => Failure::transport(&e),
        }
    }
}

/// What an attempt is told.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// The previous attempt's presigned URL was refused: get a fresh one before sending.
    pub refresh_url: bool,
    /// The attempt's heartbeat: send with [`Pulse::send`], read with [`Pulse::read_capped`] or
    /// [`Pulse::chunk`], so that the idle watch sees the bytes move.
    pub pulse: Pulse,
}

/// A retry about to happen, for whoever shows them.
#[derive(Clone, Debug)]
pub struct RetryNotice {
    /// Provider name.
    pub provider: &'static str,
    /// The call, e.g. "create capture" or "PUT part 3".
    pub what: String,
    /// The failed attempt's number (1-based).
    pub attempt: u32,
    /// Most retries this call may make.
    pub max_retries: u32,
    /// Wait before the next attempt.
    pub delay: Duration,
    /// Why (one line).
    pub reason: String,
    /// No request to this host has been answered yet in this run.
    pub first_contact: bool,
    /// The next attempt uses a fresh presigned URL (no wait).
    pub refresh_url: bool,
    /// The HTTP status of the failed attempt, when it had one.
    pub status: Option<u16>,
    /// The attempt stalled and its host has sent nothing for a while: said once per streak of
    /// silence, for people to hear that a server is not answering (and the run still trying).
    pub silence: Option<Silence>,
}

/// A host that sent nothing while the exchanges with it stalled.
#[derive(Clone, Debug)]
pub struct Silence {
    /// `host:port`.
    pub host: String,
    /// How long it has sent nothing.
    pub silent_for: Duration,
    /// After how much silence the calls to it give up.
    pub gives_up_after: Duration,
}

impl RetryNotice {
    /// The server refused the attempt as throttled (503 SlowDown, 429 Too Many Requests).
    pub fn throttled(&self) -> bool {
        matches!(self.status, Some(429 | 503))
    }
}

/// Receives every retry of the run.
pub type Notifier = Arc<dyn Fn(&RetryNotice) + Send + Sync>;

/// One call's description.
#[derive(Clone)]
pub struct Call<'a> {
    /// Provider name, for messages.
    pub provider: &'static str,
    /// The call, for messages ("create capture", "PUT part 3").
    pub what: &'a str,
    /// Its kind.
    pub kind: Kind,
    /// Its retry policy.
    pub policy: &'a RetryPolicy,
    /// The host it goes to (for "unreachable origin" accounting), when known.
    pub host: Option<&'a str>,
    /// A hard time limit for one attempt (besides the idle watch), when the caller needs one.
    pub attempt_timeout: Option<Duration>,
    /// How long the server may hold the answer before its first byte (a long poll): the idle
    /// watch waits at least this long for it.
    pub patience: Option<Duration>,
    /// Seed for the backoff jitter (tests).
    pub seed: Option<u64>,
    /// Told about each retry of this call (besides the run's notifier).
    pub on_retry: Option<&'a (dyn Fn(&RetryNotice) + Send + Sync)>,
}

impl<'a> Call<'a> {
    /// A call with no host, no extra time limit, no seed and no retry listener.
    pub fn new(provider: &'static str, what: &'a str, kind: Kind, policy: &'a RetryPolicy) -> Self {
        Call {
            provider,
            what,
            kind,
            policy,
            host: None,
            attempt_timeout: None,
            patience: None,
            seed: None,
            on_retry: None,
        }
    }
}

/// A shared retry budget: a token bucket that every retry of the run draws from (a timeout
/// costs double) and that refills with time. When it is empty a retry waits for its share
/// (the debt is paid off at the refill rate), so a storm slows the whole run down to a
/// trickle of retries instead of every part hammering on its own.
#[derive(Debug)]
pub struct RetryBudget {
    capacity: f64,
    refill_per_s: f64,
    state: Mutex<(f64, Instant)>,
}

impl RetryBudget {
    /// Cost of one retry.
    pub const RETRY_COST: f64 = 5.0;

    /// A budget of `capacity` tokens refilled at `refill_per_s`.
    pub fn new(capacity: f64, refill_per_s: f64) -> Self {
        RetryBudget { capacity, refill_per_s, state: Mutex::new((capacity, Instant::now())) }
    }

    /// Takes `cost` tokens; returns how long the retry must wait for them.
    pub fn take(&self, cost: f64) -> Duration {
        let mut s = self.state.lock().expect("retry budget lock");
        let now = Instant::now();
        let (tokens, last) = *s;
        let refilled = (tokens + now.duration_since(last).as_secs_f64() * self.refill_per_s).min(self.capacity);
        let left = refilled - cost;
        *s = (left, now);
        if left >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-left / self.refill_per_s) }
    }
}

impl Default for RetryBudget {
    /// 20 retries at once, then one retry every half second across the run.
    fn default() -> Self {
        RetryBudget::new(20.0 * Self::RETRY_COST, 2.0 * Self::RETRY_COST)
    }
}

struct Shared {
    budget: RetryBudget,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    notifier: Option<Notifier>,
    timing: Timing,
}

/// The executor of a run: cheap to clone; every clone shares the budget, the time model and
/// the knowledge of the hosts (which answered, which are silent), and the cancellation token
/// unless given another one ([`Executor::with_cancel`]).
#[derive(Clone)]
pub struct Executor {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    /// How long an attempt in flight gets once `cancel` fired (a Ctrl-C, the run's time limit).
    halt: super::wait::Halt,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("cancelled", &self.cancel.is_cancelled()).finish()
    }
}

impl Default for Executor {
    fn default() -> Self {
        Executor::new(CancellationToken::new(), None)
    }
}

impl Executor {
    /// An executor whose waits end when `cancel` fires, announcing retries to `notifier`,
    /// with the default time model ([`NetOptions::default`](super::http::NetOptions)).
    pub fn new(cancel: CancellationToken, notifier: Option<Notifier>) -> Self {
        Self::with_options(cancel, notifier, &super::http::NetOptions::default())
    }

    /// An executor with the time model of `net` (idle timeout, speed limit; the connect
    /// timeout is the client's, named in messages).
    pub fn with_options(cancel: CancellationToken, notifier: Option<Notifier>, net: &super::http::NetOptions) -> Self {
        Self::build(cancel, notifier, RetryBudget::default(), net)
    }

    /// Like [`new`](Self::new) with a given budget.
    pub fn with_budget(cancel: CancellationToken, notifier: Option<Notifier>, budget: RetryBudget) -> Self {
        Self::build(cancel, notifier, budget, &super::http::NetOptions::default())
    }

    fn build(
        cancel: CancellationToken,
        notifier: Option<Notifier>,
        budget: RetryBudget,
        net: &super::http::NetOptions,
    ) -> Self {
        Executor {
            shared: Arc::new(Shared { budget, hosts: Mutex::new(HashMap::new()), notifier, timing: Timing::from(net) }),
            cancel,
            halt: super::wait::Halt::default(),
        }
    }

    /// The idle timeout of the run (`--idle-timeout`).
    pub fn idle_timeout(&self) -> Duration {
        self.shared.timing.idle
    }

    /// How long a whole operation that is not safe to repeat (create, complete), with its
    /// look-ups and resends, may take: three idle timeouts (90 s by default).
    pub fn operation_deadline(&self) -> Duration {
        self.shared.timing.idle.saturating_mul(OPERATION_IDLE_TIMEOUTS)
    }

    /// The same executor (budget, hosts, notifier, time model) whose waits end on `cancel`:
    /// one run of an uploader, or one file of a run.
    pub fn with_cancel(&self, cancel: CancellationToken) -> Self {
        Executor { shared: self.shared.clone(), cancel, halt: super::wait::Halt::default() }
    }

    /// [`with_cancel`](Self::with_cancel), where `cancel` also fires at the run's time limit
    /// and `halt` says how long an attempt in flight then gets ([`super::wait::STOP_GRACE`]).
    pub fn with_halt(&self, cancel: CancellationToken, halt: super::wait::Halt) -> Self {
        Executor { shared: self.shared.clone(), cancel, halt }
    }

    /// Resolves when work in flight must be dropped, once the cancellation fired: `grace`
    /// after a Ctrl-C, up to [`super::wait::STOP_GRACE`] after the run's time limit.
    pub async fn cut(&self, grace: Duration) {
        self.halt.cut(&self.cancel, grace).await
    }

    /// The run's cancellation token.
    pub fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Sleeps for `delay` unless cancelled (see [`super::wait::sleep`]).
    pub async fn sleep(&self, delay: Duration) -> Result<()> {
        super::wait::sleep(delay, &self.cancel).await
    }

    /// The record of `host` (a fresh one of its own for a call that names no host).
    fn host(&self, host: Option<&str>) -> Arc<Host> {
        match host {
            Some(h) => self.shared.hosts.lock().expect("hosts lock").entry(h.to_string()).or_default().clone(),
            None => Arc::new(Host::anonymous()),
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries, the deadline or the
    /// budget run out. See the module documentation. Its steps: [`watched`](Self::watched)
    /// runs one attempt under its limits, [`Tries::renewed`] counts a renewed token, and
    /// [`after_failure`](Self::after_failure) decides what a failed attempt leads to.
    pub async fn run<T, F, Fut>(&self, call: &Call<'_>, mut attempt: F) -> Result<T>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure>>,
    {
        let mut tries = Tries::new(call);
        let host = self.host(call.host);
        loop {
            if self.cancel.is_cancelled() && tries.number > 0 {
                return Err(interrupted());
            }
            tries.number += 1;
            let pulse = Pulse::new(Some(host.clone()), Some(self.shared.timing.connect));
            let fut = attempt(Attempt { number: tries.number, refresh_url: tries.refresh_url, pulse: pulse.clone() });
            let (result, quiet_at) = self.watched(call, &pulse, fut).await?;
            tries.refresh_url = false;
            match result {
                Ok(v) => {
                    host.answered.store(true, std::sync::atomic::Ordering::Relaxed);
                    return Ok(v);
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Again) => tries.renewed(call)?,
                Err(Failure::Outcome { outcome, message, retry_after }) => {
                    let failed = Failed::judge(call, &host, outcome, message, retry_after);
                    self.after_failure(call, &host, &mut tries, failed, quiet_at).await?;
                }
            }
        }
    }

    /// One attempt under its limits: the idle watch (a stalled exchange is cut; with it comes
    /// when it went quiet), the call's hard limit ([`Call::attempt_timeout`]), and Ctrl-C,
    /// which gives it [`super::wait::GRACE`] and then drops it ([`Error::Interrupted`]).
    async fn watched<T>(
        &self,
        call: &Call<'_>,
        pulse: &Pulse,
        fut: impl Future<Output = std::result::Result<T, Failure>>,
    ) -> Result<(std::result::Result<T, Failure>, Option<u64>)> {
        let hard_limit = async {
            match call.attempt_timeout {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        let cancelled = self.cut(super::wait::GRACE);
        tokio::select! {
            r = fut => Ok((r, None)),
            cut = super::pulse::watch(pulse, &self.shared.timing, call.patience) => Ok((Err(cut.failure), cut.quiet_at)),
            _ = hard_limit => Ok((Err(Failure::Outcome {
                outcome: Outcome::Transport(TransportKind::Timeout),
                message: format!(
                    "no answer within {}",
                    crate::size::human_duration(call.attempt_timeout.unwrap_or_default())
                ),
                retry_after: None,
            }), None)),
            _ = cancelled => Err(interrupted()),
        }
    }

    /// What a failed attempt leads to: `Ok` to send again (with a fresh URL at once, or after
    /// the backoff's delay and the budget's share), else the call's final error. A stalled
    /// attempt (`quiet_at`) first goes through [`silence`](Self::silence).
    async fn after_failure(
        &self,
        call: &Call<'_>,
        host: &Host,
        tries: &mut Tries,
        failed: Failed,
        quiet_at: Option<u64>,
    ) -> Result<()> {
        let silence = match quiet_at {
            Some(quiet_at) => self.silence(call, host, quiet_at, tries.number, &failed)?,
            None => None,
        };
        let first = failed.first_contact;
        match failed.class {
            Class::Fatal => Err(final_error(call, &failed.outcome, failed.message, tries.number)),
            Class::RefreshUrl => {
                tries.refreshed(call, &failed)?;
                self.notify(call, tries.number, Duration::ZERO, &failed.reason, &failed.outcome, (false, true), None);
                tries.refresh_url = true;
                Ok(())
            }
            Class::Retry => {
                let Some(delay) = tries.next_delay(call, &failed) else {
                    return Err(gave_up(call, &failed.outcome, failed.message, tries.number, first));
                };
                let cost = match failed.outcome {
                    Outcome::Transport(TransportKind::Timeout) => 2.0 * RetryBudget::RETRY_COST,
                    _ => RetryBudget::RETRY_COST,
                };
                let delay = delay.max(self.shared.budget.take(cost));
                self.notify(call, tries.number, delay, &failed.reason, &failed.outcome, (first, false), silence);
                self.sleep(delay).await
            }
        }
    }

    /// A stalled exchange, quiet since `quiet_at`: how long its host has been silent. A call
    /// that would be retried gives up ([`Error::Network`]) once the host has been silent for
    /// the time model's `give_up_after`; the silence is said once per streak: at once when no
    /// retry follows (a look-up may), else handed back for the retry's notice.
    fn silence(
        &self,
        call: &Call<'_>,
        host: &Host,
        quiet_at: u64,
        attempt: u32,
        failed: &Failed,
    ) -> Result<Option<Silence>> {
        let timing = &self.shared.timing;
        let (silent_for, announce) = host.stalled(quiet_at, timing.idle);
        let s = Silence {
            host: call.host.unwrap_or("the server").to_string(),
            silent_for,
            gives_up_after: timing.give_up_after,
        };
        tracing::info!(provider = call.provider, what = call.what, "{}", failed.reason);
        if silent_for >= timing.give_up_after && failed.class == Class::Retry {
            return Err(Error::Network {
                provider: call.provider,
                what: call.what.into(),
                message: format!(
                    "{} is not answering: nothing received from it for {} (--idle-timeout {}); gave up after {attempt} attempts",
                    s.host,
                    crate::size::human_duration(silent_for),
                    crate::size::human_duration(timing.idle),
                ),
            });
        }
        if !announce {
            return Ok(None);
        }
        if failed.class != Class::Retry {
            let (reason, outcome) = (&failed.reason, &failed.outcome);
            self.notify(call, attempt, Duration::ZERO, reason, outcome, (failed.first_contact, false), Some(s));
            return Ok(None);
        }
        Ok(Some(s))
    }

    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        call: &Call<'_>,
        attempt: u32,
        delay: Duration,
        reason: &str,
        outcome: &Outcome,
        (first, refresh): (bool, bool),
        silence: Option<Silence>,
    ) {
        let notice = RetryNotice {
            status: match outcome {
                Outcome::Status { status, .. } => Some(*status),
                Outcome::Transport(_) => None,
            },
            provider: call.provider,
            what: call.what.to_string(),
            attempt,
            max_retries: if first { call.policy.first_contact_retries } else { call.policy.max_retries },
            delay,
            reason: reason.to_string(),
            first_contact: first,
            refresh_url: refresh,
            silence,
        };
        tracing::info!(
            provider = call.provider,
            what = call.what,
            attempt,
            delay_ms = delay.as_millis() as u64,
            "retrying: {reason}"
        );
        if let Some(n) = &self.shared.notifier {
            n(&notice);
        }
        if let Some(f) = call.on_retry {
            f(&notice);
        }
    }
}

/// The attempts of one call so far, and the limits it owns: the token is renewed at most 3
/// times, a presigned URL refreshed at most `max_url_refreshes` times, and a retry waits for
/// the backoff within the policy's attempts (fewer on first contact) and deadline.
struct Tries {
    backoff: Backoff,
    started: Instant,
    /// The attempt under way (1-based; 0 before the first).
    number: u32,
    refreshes: u32,
    renewals: u32,
    /// The next attempt asks a fresh URL.
    refresh_url: bool,
}

impl Tries {
    fn new(call: &Call<'_>) -> Self {
        let rng = match call.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        Tries {
            backoff: Backoff::with_rng(call.policy.clone(), rng),
            started: Instant::now(),
            number: 0,
            refreshes: 0,
            renewals: 0,
            refresh_url: false,
        }
    }

    /// The token was renewed ([`Failure::Again`]): sent again at once, up to 3 times; then
    /// the token is refused for good ([`Error::Auth`]).
    fn renewed(&mut self, call: &Call<'_>) -> Result<()> {
        self.renewals += 1;
        if self.renewals > 3 {
            return Err(Error::Auth {
                provider: call.provider,
                message: format!("{}: the token was refused after renewing it {} times", call.what, 3),
                hint: None,
            });
        }
        Ok(())
    }

    /// The presigned URL was refused: one more fresh URL, unless the policy's
    /// `max_url_refreshes` are spent (then [`Error::Rejected`], with the refusal's status and
    /// code; 403 when it had none).
    fn refreshed(&mut self, call: &Call<'_>, failed: &Failed) -> Result<()> {
        self.refreshes += 1;
        if self.refreshes <= call.policy.max_url_refreshes {
            return Ok(());
        }
        let (status, code) = match &failed.outcome {
            Outcome::Status { status, code } => (*status, code.clone()),
            Outcome::Transport(_) => (403, None),
        };
        Err(Error::Rejected {
            provider: call.provider,
            what: call.what.into(),
            status,
            code,
            message: format!("{} (still refused after {} fresh URLs)", failed.message, call.policy.max_url_refreshes),
        })
    }

    /// The backoff's delay before the next attempt (`Retry-After` honoured), or `None` when
    /// the call is out of attempts (`first_contact_retries` while its host never answered) or
    /// past the policy's deadline.
    fn next_delay(&mut self, call: &Call<'_>, failed: &Failed) -> Option<Duration> {
        let limit = if failed.first_contact {
            call.policy.first_contact_retries.min(call.policy.max_retries)
        } else {
            call.policy.max_retries
        };
        let over = self.started.elapsed() >= call.policy.deadline || self.backoff.attempts() >= limit;
        if over { None } else { self.backoff.next_delay(failed.retry_after) }
    }
}

/// A failed attempt, judged: what happened, what to do, and how to say it.
struct Failed {
    outcome: Outcome,
    message: String,
    retry_after: Option<Duration>,
    /// One line: the status (if any) and the message.
    reason: String,
    class: Class,
    /// A transport failure of a call to a host that has answered nothing in this run.
    first_contact: bool,
}

impl Failed {
    /// Classifies the failure by the call's kind ([`classify`]); an answer (any status, or
    /// bytes found altered) marks the host as answered first.
    fn judge(call: &Call<'_>, host: &Host, outcome: Outcome, message: String, retry_after: Option<Duration>) -> Self {
        if let Outcome::Status { .. } | Outcome::Transport(TransportKind::Altered) = outcome {
            host.answered.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let reason = match &outcome {
            Outcome::Status { status, .. } => format!("HTTP {status}: {message}"),
            Outcome::Transport(_) => message.clone(),
        };
        let class = classify(call.kind, &outcome);
        let first_contact = matches!(outcome, Outcome::Transport(_))
            && call.host.is_some()
            && !host.answered.load(std::sync::atomic::Ordering::Relaxed);
        Failed { outcome, message, retry_after, reason, class, first_contact }
    }
}

fn interrupted() -> Error {
    Error::Interrupted { hint: "run the same command again to resume".into() }
}

/// A refusal's message led by the server's error code (`MAX_IMAGES_REACHED: ...`), as S3's
/// are, so scripts and the hints can tell refusals apart; a numeric code or one the message
/// already names is left out.
fn with_code(code: Option<&str>, message: String) -> String {
    match code {
        Some(c) if !c.is_empty() && !c.bytes().all(|b| b.is_ascii_digit()) && !message.contains(c) => {
            format!("{c}: {message}")
        }
        _ => message,
    }
}

/// The error of a call that failed for good on its first classification.
fn final_error(call: &Call<'_>, outcome: &Outcome, message: String, attempts: u32) -> Error {
    let unsafe_to_repeat = matches!(call.kind, Kind::Api(Retry::Once | Retry::Never));
    match outcome {
        // The request went out; whether the server acted on it is unknown.
        Outcome::Transport(TransportKind::Timeout | TransportKind::Other) if unsafe_to_repeat => {
            Error::Ambiguous { provider: call.provider, what: call.what.into(), message }
        }
        Outcome::Status { status, .. } if unsafe_to_repeat && *status >= 500 => Error::Ambiguous {
            provider: call.provider,
            what: call.what.into(),
            message: format!("HTTP {status}: {message}"),
        },
        Outcome::Transport(TransportKind::Tls) => Error::Certificate {
            provider: call.provider,
            what: call.what.into(),
            host: call.host.unwrap_or("the server").to_string(),
            message,
        },
        Outcome::Transport(TransportKind::PlainHttp) => Error::PlainHttp {
            provider: call.provider,
            what: call.what.into(),
            host: call.host.unwrap_or("the server").to_string(),
        },
        // A redirect refused, an answer that is not HTTP: sending again meets the same (and a
        // refused redirect did nothing on the server).
        Outcome::Transport(TransportKind::Protocol) => Error::Protocol {
            provider: call.provider,
            what: call.what.into(),
            message: format!("{message} (not retried: sending again meets the same)"),
        },
        Outcome::Transport(TransportKind::Dns) => Error::Unreachable {
            provider: call.provider,
            what: call.what.into(),
            host: call.host.unwrap_or("the server").to_string(),
            message: format!("{message} (the host name does not resolve; not retried)"),
        },
        Outcome::Transport(_) => Error::Network {
            provider: call.provider,
            what: call.what.into(),
            message: if attempts > 1 { format!("{message} (after {attempts} attempts)") } else { message },
        },
        Outcome::Status { status, .. } if *status >= 500 || *status == 429 || *status == 408 => Error::Network {
            provider: call.provider,
            what: call.what.into(),
            message: format!("HTTP {status}: {message}"),
        },
        Outcome::Status { status, code } => Error::Rejected {
            provider: call.provider,
            what: call.what.into(),
            status: *status,
            message: with_code(code.as_deref(), message),
            code: code.clone(),
        },
    }
}

fn gave_up(call: &Call<'_>, outcome: &Outcome, message: String, attempts: u32, first_contact: bool) -> Error {
    match outcome {
        Outcome::Status { status, code } if !(*status >= 500 || *status == 429 || *status == 408) => Error::Rejected {
            provider: call.provider,
            what: call.what.into(),
            status: *status,
            message: with_code(code.as_deref(), message),
            code: code.clone(),
        },
        _ if first_contact => Error::Unreachable {
            provider: call.provider,
            what: call.what.into(),
            host: call.host.unwrap_or("the server").to_string(),
            message: format!("{message} (gave up after {attempts} attempts)"),
        },
        Outcome::Status { status, .. } => Error::Network {
            provider: call.provider,
            what: call.what.into(),
            message: format!("HTTP {status}: {message} (gave up after {attempts} attempts)"),
        },
        Outcome::Transport(_) => Error::Network {
            provider: call.provider,
            what: call.what.into(),
            message: format!("{message} (gave up after {attempts} attempts)"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    use crate::engine::retry::st;

    /// The limits a call's tries own: 3 token renewals, `max_url_refreshes` fresh URLs (then
    /// the refusal, its status and code kept), and fewer retries while the host never answered.
    #[test]
    fn a_call_s_tries_stop_at_their_limits() {
        let policy = RetryPolicy {
            max_retries: 5,
            first_contact_retries: 2,
            max_url_refreshes: 1,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..RetryPolicy::default()
        };
        let call = Call { seed: Some(7), ..Call::new("t", "PUT part 1", Kind::Part, &policy) };
        let mut tries = Tries::new(&call);
        for _ in 0..3 {
            tries.renewed(&call).unwrap();
        }
        assert!(matches!(tries.renewed(&call), Err(Error::Auth { .. })), "a fourth renewal");

        let host = Host::default();
        let refused = |tries: &mut Tries| {
            let outcome = Outcome::Status { status: 403, code: Some("AccessDenied".into()) };
            let failed = Failed::judge(&call, &host, outcome, "Request has expired".into(), None);
            tries.refreshed(&call, &failed)
        };
        refused(&mut tries).unwrap();
        match refused(&mut tries) {
            Err(Error::Rejected { status: 403, code: Some(code), message, .. }) => {
                assert_eq!(code, "AccessDenied");
                assert!(message.contains("still refused after 1 fresh URLs"), "{message}");
            }
            other => panic!("{other:?}"),
        }

        let reset = |first_contact| Failed {
            outcome: Outcome::Transport(TransportKind::Other),
            message: "reset".into(),
            retry_after: None,
            reason: "reset".into(),
            class: Class::Retry,
            first_contact,
        };
        let count = |first_contact| {
            let mut tries = Tries::new(&call);
            std::iter::from_fn(|| tries.next_delay(&call, &reset(first_contact))).count()
        };
        assert_eq!((count(true), count(false)), (2, 5), "first contact: 2 retries, else 5");
    }

    /// The classification of every call kind, pinned.
    #[test]
    fn classification_table() {
        use Class::*;
        use TransportKind as T;
        let once = Kind::Api(super::Retry::Once);
        let idem = Kind::Api(super::Retry::Idempotent);
        let never = Kind::Api(super::Retry::Never);
        let table: Vec<(Kind, Outcome, Class)> = vec![
            (Kind::Part, Outcome::Transport(T::Connect), Retry),
            (Kind::Part, Outcome::Transport(T::Timeout), Retry),
            (Kind::Part, Outcome::Transport(T::Other), Retry),
            (Kind::Part, Outcome::Transport(T::Tls), Fatal),
            (Kind::Part, Outcome::Transport(T::Dns), Fatal),
            (Kind::Part, Outcome::Transport(T::Protocol), Fatal),
            (idem, Outcome::Transport(T::Protocol), Fatal),
            (once, Outcome::Transport(T::Protocol), Fatal),
            (Kind::Fetch, Outcome::Transport(T::Protocol), Fatal),
            (Kind::Part, st(403, Some("AccessDenied")), RefreshUrl),
            (Kind::Part, st(500, None), Retry),
            (Kind::Part, st(503, Some("SlowDown")), Retry),
            (Kind::Part, st(400, Some("RequestTimeout")), Retry),
            (Kind::Part, st(400, Some("EntityTooLarge")), Fatal),
            (Kind::Part, st(404, Some("NoSuchUpload")), Fatal),
            (Kind::Form, st(403, Some("AccessDenied")), Fatal),
            (Kind::Form, st(503, None), Retry),
            (Kind::Form, Outcome::Transport(T::Other), Retry),
            (idem, Outcome::Transport(T::Timeout), Retry),
            (idem, st(502, None), Retry),
            (idem, st(429, None), Retry),
            (idem, st(408, None), Retry),
            (idem, st(403, None), Fatal),
            (idem, st(404, None), Fatal),
            (idem, st(422, None), Fatal),
            (idem, Outcome::Transport(T::Tls), Fatal),
            (once, Outcome::Transport(T::Connect), Retry),
            (once, Outcome::Transport(T::Timeout), Fatal),
            (once, Outcome::Transport(T::Other), Fatal),
            (once, st(500, None), Fatal),
            (once, st(429, None), Retry),
            (once, Outcome::Transport(T::Dns), Fatal),
            (never, st(503, None), Fatal),
            (never, Outcome::Transport(T::Connect), Retry),
            (Kind::Fetch, st(503, None), Retry),
            (Kind::Fetch, st(416, None), Fatal),
            (Kind::Fetch, Outcome::Transport(T::Tls), Fatal),
        ];
        for (kind, outcome, class) in table {
            assert_eq!(classify(kind, &outcome), class, "{kind:?} {outcome:?}");
        }
    }

    fn fast_policy(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..RetryPolicy::default()
        }
    }

    fn fail(o: Outcome) -> Failure {
        Failure::Outcome { outcome: o, message: "boom".into(), retry_after: None }
    }

    #[tokio::test]
    async fn retries_until_success_and_counts_attempts() {
        let ex = Executor::default();
        let policy = fast_policy(5);
        let n = AtomicU32::new(0);
        let call = Call::new("t", "GET x", Kind::Api(Retry::Idempotent), &policy);
        let r = ex
            .run(&call, |a| {
                n.fetch_add(1, Ordering::SeqCst);
                async move { if a.number < 3 { Err(fail(st(503, None))) } else { Ok(a.number) } }
            })
            .await
            .unwrap();
        assert_eq!((r, n.load(Ordering::SeqCst)), (3, 3));
    }

    #[tokio::test]
    async fn non_idempotent_calls_are_not_repeated_after_an_ambiguous_failure() {
        let ex = Executor::default();
        let policy = fast_policy(5);
        let n = AtomicU32::new(0);
        let call = Call::new("t", "create", Kind::Api(Retry::Once), &policy);
        let e = ex
            .run(&call, |_| {
                n.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(fail(st(502, None))) }
            })
            .await
            .unwrap_err();
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert!(matches!(e, Error::Ambiguous { .. }), "{e:?}");
        assert!(e.to_string().contains("may have acted on it"), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_host_is_given_up_on_early_and_announced() {
        let notices = Arc::new(Mutex::new(Vec::new()));
        let seen = notices.clone();
        let ex = Executor::new(
            CancellationToken::new(),
            Some(Arc::new(move |n: &RetryNotice| seen.lock().unwrap().push(n.clone()))),
        );
        let policy = RetryPolicy { first_contact_retries: 2, ..fast_policy(10) };
        let call = Call { host: Some("h:1"), ..Call::new("t", "create", Kind::Api(Retry::Once), &policy) };
        let n = AtomicU32::new(0);
        let e = ex
            .run(&call, |_| {
                n.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(fail(Outcome::Transport(TransportKind::Connect))) }
            })
            .await
            .unwrap_err();
        assert_eq!(n.load(Ordering::SeqCst), 3, "1 attempt + 2 retries");
        assert!(matches!(e, Error::Unreachable { .. }), "{e:?}");
        {
            let seen = notices.lock().unwrap();
            assert_eq!(seen.len(), 2);
            assert!(seen.iter().all(|s| s.first_contact && s.max_retries == 2));
        }
        // Once the host answered, the full retry count applies.
        ex.run(&call, |_| async { Ok::<_, Failure>(()) }).await.unwrap();
        let n = AtomicU32::new(0);
        let _ = ex
            .run(&call, |_| {
                n.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(fail(Outcome::Transport(TransportKind::Connect))) }
            })
            .await;
        assert_eq!(n.load(Ordering::SeqCst), 11);
    }

    #[tokio::test]
    async fn certificate_errors_are_final_at_once() {
        let ex = Executor::default();
        let policy = fast_policy(10);
        let n = AtomicU32::new(0);
        let call = Call::new("t", "GET x", Kind::Part, &policy);
        let e = ex
            .run(&call, |_| {
                n.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(fail(Outcome::Transport(TransportKind::Tls))) }
            })
            .await
            .unwrap_err();
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert!(matches!(e, Error::Certificate { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn a_403_asks_a_fresh_url_a_bounded_number_of_times() {
        let ex = Executor::default();
        let policy = fast_policy(10);
        let refreshed = AtomicU32::new(0);
        let call = Call::new("t", "PUT part 1", Kind::Part, &policy);
        let e = ex
            .run(&call, |a| {
                if a.refresh_url {
                    refreshed.fetch_add(1, Ordering::SeqCst);
                }
                async { Err::<(), _>(fail(st(403, Some("AccessDenied")))) }
            })
            .await
            .unwrap_err();
        assert_eq!(refreshed.load(Ordering::SeqCst), policy.max_url_refreshes);
        assert!(matches!(e, Error::Rejected { status: 403, .. }), "{e:?}");
    }

    #[tokio::test]
    async fn cancellation_interrupts_a_backoff_wait_at_once() {
        let cancel = crate::engine::wait::cancelled_after(Duration::from_millis(50));
        let ex = Executor::new(cancel.clone(), None);
        let policy = RetryPolicy {
            base_delay: Duration::from_secs(3600),
            max_delay: Duration::from_secs(3600),
            ..RetryPolicy::default()
        };
        let call = Call::new("t", "GET x", Kind::Api(Retry::Idempotent), &policy);
        let t0 = Instant::now();
        let e = ex.run(&call, |_| async { Err::<(), _>(fail(st(503, None))) }).await.unwrap_err();
        assert!(matches!(e, Error::Interrupted { .. }), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn the_budget_makes_a_storm_wait() {
        let b = RetryBudget::new(10.0, 10.0);
        assert_eq!(b.take(5.0), Duration::ZERO);
        assert_eq!(b.take(5.0), Duration::ZERO);
        // Empty: the next retry waits for its 5 tokens at 10 per second, the one after for 10.
        let w1 = b.take(5.0);
        let w2 = b.take(5.0);
        assert!(w1 > Duration::from_millis(400) && w1 <= Duration::from_millis(500), "{w1:?}");
        assert!(w2 > Duration::from_millis(900) && w2 <= Duration::from_millis(1000), "{w2:?}");
    }

    #[tokio::test]
    async fn the_per_attempt_time_limit_turns_a_hang_into_a_retried_timeout() {
        let ex = Executor::default();
        let policy = fast_policy(1);
        let call = Call {
            attempt_timeout: Some(Duration::from_millis(20)),
            ..Call::new("t", "GET x", Kind::Api(Retry::Idempotent), &policy)
        };
        let n = AtomicU32::new(0);
        let e = ex
            .run(&call, |_| {
                n.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok::<(), Failure>(())
                }
            })
            .await
            .unwrap_err();
        assert_eq!(n.load(Ordering::SeqCst), 2);
        assert!(e.to_string().contains("no answer within"), "{e}");
    }
}
