//! The second stage of argument handling: clap's raw values become validated settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cli::{ApiArgs, OutputArgs, ProviderName, UploadArgs};
use crate::engine::progress::Progress;
use crate::engine::retry::RetryPolicy;
use crate::engine::uploader::UploaderOptions;
use crate::error::{Error, Result};
use crate::providers::{Api, Context, Provider, TokenSource, apertur, teleport, truvideo, uplift};
use crate::redact::Secret;

/// Validated settings for an upload run.
pub struct UploadSettings {
    /// Which provider.
    pub provider: ProviderName,
    /// API base URL.
    pub endpoint: url::Url,
    /// Token source.
    pub token: Arc<TokenSource>,
    /// Part uploader options.
    pub uploader: UploaderOptions,
    /// State directory.
    pub state_dir: Option<PathBuf>,
    /// Resume.
    pub resume: bool,
    args: UploadArgs,
    quiet: bool,
    http: reqwest::Client,
}

impl ProviderName {
    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderName::Teleport => "teleport",
            ProviderName::Truvideo => "truvideo",
            ProviderName::Uplift => "uplift",
            ProviderName::Apertur => "apertur",
        }
    }
    /// The provider's token environment variable.
    pub fn token_env(self) -> &'static str {
        match self {
            ProviderName::Teleport => "TELEPORT_TOKEN",
            ProviderName::Truvideo => "TRUVIDEO_TOKEN",
            ProviderName::Uplift => "UPLIFT_TOKEN",
            ProviderName::Apertur => "APERTUR_TOKEN",
        }
    }
    /// The documented origin.
    pub fn default_endpoint(self) -> &'static str {
        match self {
            ProviderName::Teleport => teleport::DEFAULT_ENDPOINT,
            ProviderName::Truvideo => truvideo::DEFAULT_ENDPOINT,
            ProviderName::Uplift => uplift::DEFAULT_ENDPOINT,
            ProviderName::Apertur => apertur::DEFAULT_ENDPOINT,
        }
    }
}

/// `--token`, else the provider's env var, else `UPLOAD_TOKEN`.
pub fn resolve_token(flag: Option<&str>, provider: ProviderName) -> Option<Secret> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    flag.map(String::from).or_else(|| env(provider.token_env())).or_else(|| env("UPLOAD_TOKEN")).map(Secret::new)
}

/// The API client of a management subcommand (`upload teleport list`, ...): endpoint and token
/// resolved exactly as for an upload (`--endpoint`/`UPLOAD_ENDPOINT`, `--token`, the provider's
/// env var, `UPLOAD_TOKEN`, `--token-command`, then the config file's section).
pub fn api_from_args(provider: ProviderName, args: &ApiArgs) -> Result<Api> {
    let config = crate::config::ConfigFile::load()?;
    let section = config.section(provider);
    let endpoint_text = args
        .endpoint
        .clone()
        .or_else(|| section.endpoint.clone())
        .unwrap_or_else(|| provider.default_endpoint().to_string());
    let base = crate::engine::http::checked_url(&endpoint_text, "--endpoint")?;
    let token = Arc::new(TokenSource::new(
        provider.as_str_static(),
        provider.token_env(),
        resolve_token(args.token.as_deref(), provider).or_else(|| section.token.clone().map(Secret::new)),
        args.token_command.clone().or_else(|| section.token_command.clone()),
    ));
    Ok(Api::new(
        crate::engine::http::client(4),
        base,
        provider.as_str_static(),
        token,
        RetryPolicy { max_retries: args.retries, ..RetryPolicy::default() },
    ))
}

impl UploadSettings {
    /// Validates the arguments.
    pub fn from_args(args: &UploadArgs, output: &OutputArgs) -> Result<Self> {
        let config = crate::config::ConfigFile::load()?;
        let mut args = args.clone();
        config.apply(&mut args)?;
        let args = &args;
        let provider = args.provider.ok_or_else(|| {
            Error::usage(
                "no provider given",
                "pass --provider teleport|truvideo|uplift|apertur (or set UPLOAD_PROVIDER)",
            )
        })?;
        let endpoint_text = args.endpoint.clone().unwrap_or_else(|| match provider {
            ProviderName::Truvideo if args.truvideo.rc => truvideo::RC_ENDPOINT.to_string(),
            _ => provider.default_endpoint().to_string(),
        });
        let endpoint = crate::engine::http::checked_url(&endpoint_text, "--endpoint")?;
        let token = Arc::new(TokenSource::new(
            provider.as_str_static(),
            provider.token_env(),
            resolve_token(args.token.as_deref(), provider)
                .or_else(|| config.section(provider).token.clone().map(Secret::new)),
            args.token_command.clone(),
        ));
        let concurrency = args.concurrency as usize;
        let uploader = UploaderOptions {
            concurrency,
            url_prefetch: concurrency.clamp(2, 8),
            retry: RetryPolicy { max_retries: args.retries, ..RetryPolicy::default() },
            content_type: None,
            content_md5: args.checksum.is_some(),
            drain: Duration::from_secs(5),
            seed: None,
            shared_permits: None,
        };
        Ok(UploadSettings {
            provider,
            endpoint,
            token,
            uploader,
            state_dir: args.state_dir.clone().or_else(default_state_dir),
            resume: !args.no_resume,
            args: args.clone(),
            quiet: output.quiet,
            http: crate::engine::http::client(concurrency),
        })
    }

    /// The provider with its settings.
    pub fn provider(&self) -> Result<Box<dyn Provider>> {
        match self.provider {
            ProviderName::Teleport => {
                let format = self.args.teleport.format.as_deref().map(teleport::Format::parse).transpose()?;
                Ok(Box::new(teleport::Teleport::new(teleport::TeleportOptions {
                    name: self.args.teleport.name.clone(),
                    format,
                    wait: self.args.wait.then_some(crate::providers::teleport_admin::WaitOptions {
                        poll_interval: self.args.poll_interval,
                        timeout: self.args.wait_timeout,
                    }),
                })))
            }
            ProviderName::Uplift => Ok(Box::new(uplift::Uplift::new(uplift::UpliftOptions::from_args(
                &self.args.uplift,
                self.args.wait,
                // One new session group per run (the provider is built once), shared by its files.
                uuid::Uuid::new_v4(),
            )?))),
            ProviderName::Truvideo => {
                let t = &self.args.truvideo;
                Ok(Box::new(truvideo::Truvideo::new(truvideo::TruvideoOptions {
                    title: t.title.clone(),
                    creator: t.creator.clone(),
                    duration_ms: t.duration_ms,
                    resolution: t.resolution.clone(),
                    file_type: t.file_type.clone(),
                    tags: self.args.tags.clone(),
                    library: t.library,
                    no_report: t.no_report,
                    metadata: t.metadata.clone(),
                    metadata_json: t.metadata_json.clone(),
                    part_size: self.args.part_size,
                    wait: !self.args.no_wait,
                    wait_timeout: self.args.wait_timeout,
                    poll_interval: self.args.poll_interval,
                })?))
            }
            ProviderName::Apertur => {
                Ok(Box::new(apertur::Apertur::new(apertur::AperturOptions::from_args(&self.args, self.quiet)?)))
            }
        }
    }

    /// The request signer of the provider, when one is configured (Apertur `--signing-secret`).
    fn signer(&self) -> Option<Arc<dyn crate::providers::api::RequestSigner>> {
        match self.provider {
            ProviderName::Apertur => apertur::signer(self.args.apertur.signing_secret.as_deref()),
            _ => None,
        }
    }

    /// The run context for one file.
    pub fn context(&self, progress: Arc<dyn Progress>, cancel: CancellationToken) -> Result<Context> {
        Ok(Context {
            api: Api {
                http: self.http.clone(),
                base: self.endpoint.clone(),
                provider: self.provider.as_str_static(),
                token: self.token.clone(),
                retry: self.uploader.retry.clone(),
                signer: self.signer(),
                timeout: crate::providers::api::DEFAULT_TIMEOUT,
            },
            uploader: self.uploader.clone(),
            progress,
            cancel,
            state_dir: self.state_dir.clone(),
            resume: self.resume,
        })
    }
}

impl ProviderName {
    fn as_str_static(self) -> &'static str {
        self.as_str()
    }
}

/// `$XDG_STATE_HOME/upload`, else `~/.local/state/upload`.
pub fn default_state_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("upload"));
    }
    std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".local/state/upload"))
}
