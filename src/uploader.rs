//! The library's front door: [`Uploader`].
//!
//! ```no_run
//! # async fn f() -> upload::Result<()> {
//! use upload::Uploader;
//! use upload::providers::teleport::{Teleport, TeleportOptions};
//!
//! let outcome = Uploader::new(Teleport::new(TeleportOptions::default()))
//!     .token(std::env::var("TELEPORT_TOKEN").unwrap_or_default())
//!     .upload("scan.zip")
//!     .await?;
//! println!("{} {}", outcome.id, outcome.status);
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::Stream;
use tokio_util::sync::CancellationToken;

use crate::engine::progress::{Event, NoProgress, Progress};
use crate::engine::retry::RetryPolicy;
use crate::engine::source::FileSource;
use crate::engine::uploader::UploaderOptions;
use crate::error::Result;
use crate::providers::{Api, Context, Provider, TokenSource, UploadOutcome};
use crate::redact::Secret;

/// Uploads files to one provider. Cheap to clone; one HTTP connection pool per `Uploader`.
#[derive(Clone)]
pub struct Uploader {
    provider: Arc<dyn Provider>,
    endpoint: Option<String>,
    token: Option<Secret>,
    token_command: Option<String>,
    options: UploaderOptions,
    state_dir: Option<PathBuf>,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
}

impl Uploader {
    /// An uploader for `provider` (e.g. [`crate::providers::teleport::Teleport`], or a
    /// provider of your own) with the endpoint and token environment variable its
    /// [`Descriptor`](crate::providers::Descriptor) documents, 8 parts at once, 10 retries, no
    /// resume journal and no progress reporting.
    pub fn new(provider: impl Provider + 'static) -> Self {
        Uploader {
            provider: Arc::new(provider),
            endpoint: None,
            token: None,
            token_command: None,
            options: UploaderOptions::default(),
            state_dir: None,
            progress: Arc::new(NoProgress),
            cancel: CancellationToken::new(),
        }
    }

    /// Replaces the documented API origin (plain http is accepted for loopback only).
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The bearer token (default: the provider's env var, then `UPLOAD_TOKEN`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Secret::new(token.into()));
        self
    }

    /// A shell command printing a fresh token, run when none is set and after a 401.
    pub fn token_command(mut self, cmd: impl Into<String>) -> Self {
        self.token_command = Some(cmd.into());
        self
    }

    /// Parts in flight at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.options.concurrency = n.max(1);
        self.options.url_prefetch = n.clamp(2, 8);
        self
    }

    /// Retries of a failed part or idempotent request.
    pub fn retries(mut self, n: u32) -> Self {
        self.options.retry = RetryPolicy { max_retries: n, ..self.options.retry };
        self
    }

    /// Keeps resume journals in `dir`, so an interrupted upload of the same file carries on.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Receives progress events.
    pub fn progress(mut self, progress: impl Progress + 'static) -> Self {
        self.progress = Arc::new(progress);
        self
    }

    /// Cancelled: no new part starts, parts in flight get a few seconds, and the upload ends
    /// with [`Error::Interrupted`](crate::Error::Interrupted) (resumable with a state directory).
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    fn context(&self, progress: Arc<dyn Progress>) -> Result<Context> {
        let d = self.provider.descriptor();
        let endpoint = self.endpoint.clone().unwrap_or_else(|| d.endpoint.to_string());
        let base = crate::engine::http::checked_url(&endpoint, "endpoint")?;
        let token = self.token.clone().or_else(|| d.env_token());
        let tokens = Arc::new(TokenSource::new(d.name, d.token_env, token, self.token_command.clone()));
        let http = crate::engine::http::client(self.options.concurrency);
        let exec = crate::engine::request::Executor::new(self.cancel.clone(), None);
        let mut uploader = self.options.clone();
        uploader.exec = exec.clone();
        Ok(Context {
            api: Api::new(http, base, d.name, tokens, self.options.retry.clone()).with_executor(exec),
            uploader,
            progress,
            cancel: self.cancel.clone(),
            state_dir: self.state_dir.clone(),
            resume: true,
            journal_options: serde_json::Value::Null,
        })
    }

    /// Uploads one file through the provider's whole flow.
    pub async fn upload(&self, path: impl AsRef<Path>) -> Result<UploadOutcome> {
        let ctx = self.context(self.progress.clone())?;
        let file = FileSource::open(path.as_ref())?;
        let outcome = self.provider.upload(&ctx, file).await?;
        forget_journal(&ctx, path.as_ref());
        Ok(outcome)
    }

    /// Uploads one file and hands its progress events out as a stream. Drive the future;
    /// the stream ends when the upload does.
    pub fn upload_with_events(
        &self,
        path: impl AsRef<Path>,
    ) -> (impl Stream<Item = Event> + Send + 'static, impl Future<Output = Result<UploadOutcome>> + Send + '_) {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let path = path.as_ref().to_path_buf();
        let fut = async move {
            let ctx = self.context(Arc::new(ChannelProgress(tx)))?;
            let file = FileSource::open(&path)?;
            let outcome = self.provider.upload(&ctx, file).await?;
            forget_journal(&ctx, &path);
            Ok(outcome)
        };
        (rx, fut)
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

/// The upload is done: its (completed) resume journal goes.
fn forget_journal(ctx: &Context, path: &Path) {
    if let (Some(dir), Ok(canonical)) = (&ctx.state_dir, crate::engine::platform::canonicalize(path)) {
        crate::engine::journal::remove(dir, ctx.api.provider, ctx.api.base.as_str().trim_end_matches('/'), &canonical);
    }
}
