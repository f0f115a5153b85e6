//! The library's front door: [`Uploader`].
//!
//! ```no_run
//! # async fn f() -> upload::Result<()> {
//! use upload::Uploader;
//! use upload::providers::teleport::{Teleport, TeleportOptions};
//!
//! let outcome = Uploader::new(Teleport::new(TeleportOptions::default())?)
//!     .token(std::env::var("TELEPORT_TOKEN").unwrap_or_default())
//!     .upload("scan.zip")
//!     .await?;
//! println!("{} {}", outcome.id, outcome.status);
//! # Ok(()) }
//! ```
//!
//! An `Uploader` holds what every upload it makes shares, built once at its first upload: one
//! HTTP connection pool, one request executor (its retry budget, its knowledge of which hosts
//! answered), one permit pool for the parts in flight (pinned or tuned), one bandwidth limit,
//! one token source (a given token, the vendor's built-in sign-in, or a command). Clones share
//! them; a builder method called afterwards starts a new set. The command line builds one per
//! run and uploads every file through it ([`Uploader::run`], in [`crate::run`]).

/// How many parts go at once ([`Uploader::concurrency_setting`]), how many files
/// ([`Uploader::files`]), and the most files [`Files::Auto`] keeps in flight (small files;
/// fewer when they are large).
pub use crate::engine::tune::{AUTO_FILES_MAX, Concurrency, Files};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use futures::Stream;
use tokio_util::sync::CancellationToken;

use crate::engine::http::NetOptions;
use crate::engine::progress::{Event, NoProgress, Progress};
use crate::engine::ratelimit::RateLimit;
use crate::engine::request::{Executor, Notifier};
use crate::engine::retry::RetryPolicy;
use crate::engine::tune::Permits;
use crate::engine::uploader::UploaderOptions;
use crate::engine::wait::{Halt, TimeLimit};
use crate::error::Result;
use crate::providers::api::RequestSigner;
use crate::providers::signin::{Credentials, SignIn};
use crate::providers::{Api, Context, Provider, TokenSource, UploadOutcome};
use crate::redact::Secret;
use crate::run::{FileResult, Item, RunOptions};

/// Uploads files to one provider. Cheap to clone; clones share one connection pool, executor,
/// part budget, bandwidth limit and token source.
#[derive(Clone)]
pub struct Uploader {
    config: Config,
    shared: Arc<OnceLock<Arc<Shared>>>,
}

/// What the builder methods set.
#[derive(Clone)]
struct Config {
    provider: Arc<dyn Provider>,
    endpoint: Option<String>,
    auth_endpoint: Option<String>,
    token: Option<Secret>,
    token_command: Option<String>,
    sign_in: Option<Credentials>,
    concurrency: Concurrency,
    files: Files,
    retry: RetryPolicy,
    content_md5: bool,
    hedge: bool,
    rate: RateLimit,
    state_dir: Option<PathBuf>,
    resume: bool,
    resume_options: serde_json::Value,
    signer: Option<Arc<dyn RequestSigner>>,
    notifier: Option<Notifier>,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
    net: NetOptions,
    time_limit: Option<TimeLimit>,
}

/// What the uploads of an `Uploader` share, built at the first one.
pub(crate) struct Shared {
    pub(crate) endpoint: url::Url,
    pub(crate) http: reqwest::Client,
    pub(crate) tokens: Arc<TokenSource>,
    pub(crate) exec: Executor,
    pub(crate) permits: Arc<Permits>,
}

impl Uploader {
    /// An uploader for `provider` (e.g. [`crate::providers::teleport::Teleport`], or a
    /// provider of your own) with the endpoint and token environment variable its
    /// [`Descriptor`](crate::providers::Descriptor) documents, the part concurrency tuned from
    /// the measured throughput (up to 64, as the command line's `--concurrency auto`), 10
    /// retries, no resume journal and no progress reporting.
    pub fn new(provider: impl Provider + 'static) -> Self {
        Self::from_arc(Arc::new(provider))
    }

    /// [`Uploader::new`] for a provider already shared.
    pub fn from_arc(provider: Arc<dyn Provider>) -> Self {
        Uploader {
            config: Config {
                provider,
                endpoint: None,
                auth_endpoint: None,
                token: None,
                token_command: None,
                sign_in: None,
                concurrency: Concurrency::Auto { max: crate::engine::tune::DEFAULT_MAX },
                files: Files::Auto,
                retry: RetryPolicy::default(),
                content_md5: false,
                hedge: true,
                rate: RateLimit::off(),
                state_dir: None,
                resume: true,
                resume_options: serde_json::Value::Null,
                signer: None,
                notifier: None,
                progress: Arc::new(NoProgress),
                cancel: CancellationToken::new(),
                net: NetOptions::default(),
                time_limit: None,
            },
            shared: Arc::default(),
        }
    }

    fn set(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self.shared = Arc::default();
        self
    }

    /// Replaces the documented API origin (plain http is accepted for loopback only).
    pub fn endpoint(self, url: impl Into<String>) -> Self {
        self.set(|c| c.endpoint = Some(url.into()))
    }

    /// The bearer token (default: the provider's env var, then `UPLOAD_TOKEN`).
    pub fn token(self, token: impl Into<String>) -> Self {
        self.set(|c| c.token = Some(Secret::new(token.into())))
    }

    /// The bearer token, already a [`Secret`] (blank: none).
    pub fn token_secret(self, token: Option<Secret>) -> Self {
        self.set(|c| c.token = token.filter(|t| !t.is_empty()))
    }

    /// A shell command printing a fresh token, run when none is set and after a 401.
    pub fn token_command(self, cmd: impl Into<String>) -> Self {
        self.set(|c| c.token_command = Some(cmd.into()))
    }

    /// The vendor's built-in sign-in (Teleport client credentials, TruVideo's signed login):
    /// used when no token is given, and to renew one; the token is cached in the state
    /// directory when there is one.
    pub fn sign_in(self, credentials: Credentials) -> Self {
        self.set(|c| c.sign_in = Some(credentials))
    }

    /// Replaces the documented sign-in origin.
    pub fn auth_endpoint(self, url: impl Into<String>) -> Self {
        self.set(|c| c.auth_endpoint = Some(url.into()))
    }

    /// Parts (Apertur: images) in flight at once, pinned.
    pub fn concurrency(self, n: usize) -> Self {
        self.concurrency_setting(Concurrency::Fixed(n.max(1)))
    }

    /// Parts in flight: pinned, or tuned from the measured throughput up to a most.
    pub fn concurrency_setting(self, setting: Concurrency) -> Self {
        self.set(|c| c.concurrency = setting)
    }

    /// How many files of a [`run`](Uploader::run) upload at once.
    pub fn files(self, files: Files) -> Self {
        self.set(|c| c.files = files)
    }

    /// Retries of a failed part or idempotent request.
    pub fn retries(self, n: u32) -> Self {
        self.set(|c| c.retry = RetryPolicy { max_retries: n, ..c.retry.clone() })
    }

    /// Sends `Content-MD5` with each part, so the store checks every byte it received.
    pub fn content_md5(self, on: bool) -> Self {
        self.set(|c| c.content_md5 = on)
    }

    /// Sends a part far behind its siblings again on another connection, the first stored copy
    /// winning (default on; see [`crate::engine::uploader`]: no slow tail).
    pub fn hedge(self, on: bool) -> Self {
        self.set(|c| c.hedge = on)
    }

    /// The bandwidth limit of every upload of this uploader together.
    pub fn rate_limit(self, rate: RateLimit) -> Self {
        self.set(|c| c.rate = rate)
    }

    /// Keeps resume journals and done records in `dir`, so an interrupted upload of the same
    /// file carries on, and two runs of one file exclude each other.
    pub fn state_dir(self, dir: impl Into<PathBuf>) -> Self {
        self.set(|c| c.state_dir = Some(dir.into()))
    }

    /// Like [`state_dir`](Uploader::state_dir), `None` keeping no state.
    pub fn state_dir_opt(self, dir: Option<PathBuf>) -> Self {
        self.set(|c| c.state_dir = dir)
    }

    /// Carries on an interrupted upload from its journal (default); `false` starts over.
    pub fn resume(self, on: bool) -> Self {
        self.set(|c| c.resume = on)
    }

    /// What a resume journal keeps of the options of the run (for a later resume without the
    /// original command; never a secret).
    pub fn resume_options(self, options: serde_json::Value) -> Self {
        self.set(|c| c.resume_options = options)
    }

    /// Signs every JSON API request (Apertur `--signing-secret`).
    pub fn signer(self, signer: Option<Arc<dyn RequestSigner>>) -> Self {
        self.set(|c| c.signer = signer)
    }

    /// Told about every retry of every request.
    pub fn on_retry(self, notifier: Notifier) -> Self {
        self.set(|c| c.notifier = Some(notifier))
    }

    /// How the uploads reach the network: extra trust roots, the connect and idle timeouts,
    /// a speed limit (default: [`NetOptions::default`], the documented defaults).
    pub fn net(self, net: NetOptions) -> Self {
        self.set(|c| c.net = net)
    }

    /// Receives progress events.
    pub fn progress(self, progress: impl Progress + 'static) -> Self {
        self.set(|c| c.progress = Arc::new(progress))
    }

    /// Ends every upload of this uploader when cancelled (the same token the uploader hands
    /// out with [`cancel_token`](Uploader::cancel_token)).
    pub fn cancel_on(self, cancel: CancellationToken) -> Self {
        self.set(|c| c.cancel = cancel)
    }

    /// Stops every upload cleanly at `limit` (`--max-duration`, `--until`): from then on no
    /// new file or part starts, the work in flight gets
    /// [`STOP_GRACE`](crate::engine::wait::STOP_GRACE) to finish, and the uploads that did not
    /// finish end with [`Error::Stopped`](crate::Error::Stopped), their journals kept.
    pub fn time_limit(self, limit: Option<TimeLimit>) -> Self {
        self.set(|c| c.time_limit = limit)
    }

    /// The run's time limit, when it has one.
    pub fn time_limit_in_force(&self) -> Option<&TimeLimit> {
        self.config.time_limit.as_ref()
    }

    /// Cancelled: no new part starts, parts in flight get a few seconds, and the upload ends
    /// with [`Error::Interrupted`](crate::Error::Interrupted) (resumable with a state directory).
    pub fn cancel_token(&self) -> CancellationToken {
        self.config.cancel.clone()
    }

    /// The provider.
    pub fn provider(&self) -> &dyn Provider {
        self.config.provider.as_ref()
    }

    /// The bandwidth limit in force.
    pub fn rate(&self) -> &RateLimit {
        &self.config.rate
    }

    /// The state directory, when there is one.
    pub fn state_dir_path(&self) -> Option<&Path> {
        self.config.state_dir.as_deref()
    }

    /// Whether interrupted uploads are carried on.
    pub fn resumes(&self) -> bool {
        self.config.resume
    }

    /// How many files of a run upload at once.
    pub fn files_setting(&self) -> Files {
        self.config.files
    }

    /// The most parts that were in flight at once so far.
    pub fn peak_parts(&self) -> usize {
        self.shared.get().map_or(0, |s| s.permits.peak_in_use())
    }

    /// The API origin, without a trailing slash (the key of journals and done records).
    pub fn endpoint_key(&self) -> Result<String> {
        Ok(self.shared()?.endpoint.as_str().trim_end_matches('/').to_string())
    }

    /// What the uploads share, built at the first call.
    pub(crate) fn shared(&self) -> Result<Arc<Shared>> {
        if let Some(s) = self.shared.get() {
            return Ok(s.clone());
        }
        let c = &self.config;
        let d = c.provider.descriptor();
        let endpoint = c.endpoint.clone().unwrap_or_else(|| d.endpoint.to_string());
        let endpoint = crate::engine::http::checked_url(&endpoint, "endpoint")?;
        let http = crate::engine::http::client(&c.net, c.concurrency.max());
        let token = c.token.clone().or_else(|| d.env_token());
        let sign_in = match &c.sign_in {
            Some(credentials) => {
                let text = c.auth_endpoint.as_deref().or(d.auth_endpoint(false)).unwrap_or_default();
                let auth = crate::engine::http::checked_url(text, "--auth-endpoint")?;
                let exec = Executor::with_options(c.cancel.clone(), None, &c.net);
                Some(
                    SignIn::new(d.name, auth, credentials.clone(), http.clone(), c.state_dir.as_deref())
                        .with_executor(exec),
                )
            }
            None => None,
        };
        let tokens = Arc::new(TokenSource::with_sign_in(d.name, d.token_env, token, sign_in, c.token_command.clone()));
        let shared = Arc::new(Shared {
            endpoint,
            http,
            tokens,
            exec: Executor::with_options(c.cancel.clone(), c.notifier.clone(), &c.net),
            permits: Permits::new(c.concurrency),
        });
        let _ = self.shared.set(shared);
        Ok(self.shared.get().expect("just set").clone())
    }

    /// The run context of one file (or of the run's `prepare`/`finish`), its waits ending on
    /// `cancel`.
    /// The progress handler given to [`Uploader::progress`].
    pub(crate) fn progress_sink(&self) -> Arc<dyn Progress> {
        self.config.progress.clone()
    }

    pub(crate) fn context(&self, progress: Arc<dyn Progress>, cancel: CancellationToken) -> Result<Context> {
        self.context_halted(progress, cancel, Halt::default())
    }

    /// [`context`](Self::context) whose `cancel` also fires at the run's time limit, `halt`
    /// saying how long work in flight then gets.
    pub(crate) fn context_halted(
        &self,
        progress: Arc<dyn Progress>,
        cancel: CancellationToken,
        halt: Halt,
    ) -> Result<Context> {
        let s = self.shared()?;
        let c = &self.config;
        let exec = s.exec.with_halt(cancel.clone(), halt);
        let max = c.concurrency.max();
        let uploader = UploaderOptions {
            concurrency: max,
            url_prefetch: max.clamp(2, 8),
            retry: c.retry.clone(),
            content_type: None,
            content_md5: c.content_md5,
            drain: crate::engine::wait::GRACE,
            seed: None,
            shared_permits: Some(s.permits.clone()),
            rate: c.rate.clone(),
            exec: exec.clone(),
            hedge: c.hedge,
        };
        Ok(Context {
            api: Api {
                exec,
                http: s.http.clone(),
                base: s.endpoint.clone(),
                provider: c.provider.name(),
                token: s.tokens.clone(),
                retry: c.retry.clone(),
                signer: c.signer.clone(),
                hold: None,
                on_retry: None,
            },
            uploader,
            progress,
            cancel,
            state_dir: c.state_dir.clone(),
            resume: c.resume,
            journal_options: c.resume_options.clone(),
        })
    }

    /// Uploads one file through the provider's whole flow, as a run of that one file
    /// (the provider's `prepare` and `finish` included: Apertur's `wait` follows the
    /// deliveries). With a state directory the upload is journaled (an interrupted one carries
    /// on), locked against a second run of the same file, and recorded as done.
    pub async fn upload(&self, path: impl AsRef<Path>) -> Result<UploadOutcome> {
        self.upload_reporting(path.as_ref(), self.config.progress.clone()).await
    }

    /// Uploads one file and hands its progress events out as a stream. Drive the future;
    /// the stream ends when the upload does.
    pub fn upload_with_events(
        &self,
        path: impl AsRef<Path>,
    ) -> (impl Stream<Item = Event> + Send + 'static, impl Future<Output = Result<UploadOutcome>> + Send + '_) {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let path = path.as_ref().to_path_buf();
        let fut = async move { self.upload_reporting(&path, Arc::new(ChannelProgress(tx))).await };
        (rx, fut)
    }

    async fn upload_reporting(&self, path: &Path, progress: Arc<dyn Progress>) -> Result<UploadOutcome> {
        let cancel = self.config.cancel.clone();
        let item = Item::File(path.to_path_buf());
        self.check(&item)?;
        if let Some((_, err)) = self.prepare(std::slice::from_ref(&item), &cancel).await?.pop() {
            return Err(err);
        }
        let options = RunOptions { force: true, resume: self.config.resume, ..RunOptions::default() };
        let progress_for = move |_: &Item| progress.clone();
        let outcome = match self.upload_item(&item, &options, &progress_for, cancel.clone()).await? {
            FileResult::Uploaded(outcome) => outcome,
            other => unreachable!("a forced upload that is not a dry run uploads: {other:?}"),
        };
        self.finish(&cancel).await?;
        Ok(outcome)
    }
}

struct ChannelProgress(futures::channel::mpsc::UnboundedSender<Event>);

impl Progress for ChannelProgress {
    fn event(&self, event: Event) {
        let _ = self.0.unbounded_send(event);
    }
}

/// Any closure over events is a progress handler.
impl<F: Fn(Event) + Send + Sync> Progress for F {
    fn event(&self, event: Event) {
        self(event)
    }
}
