//! The second stage of argument handling: clap's raw values become validated settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cli::{ApiArgs, OutputArgs, ProviderName, SignInArgs, UploadArgs};
use crate::engine::progress::Progress;
use crate::engine::retry::RetryPolicy;
use crate::engine::uploader::UploaderOptions;
use crate::error::{Error, Result};
use crate::providers::signin::{self, Credentials, SignIn};
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
/// env var, `UPLOAD_TOKEN`, the built-in sign-in, `--token-command`, then the config file's
/// section).
pub fn api_from_args(provider: ProviderName, args: &ApiArgs) -> Result<Api> {
    let config = crate::config::ConfigFile::load()?;
    let section = config.section(provider);
    let endpoint_text = args
        .endpoint
        .clone()
        .or_else(|| section.endpoint.clone())
        .unwrap_or_else(|| provider.default_endpoint().to_string());
    let base = crate::engine::http::checked_url(&endpoint_text, "--endpoint")?;
    let mut sign_in = args.sign_in.credentials.clone();
    config.apply_sign_in(provider, &mut sign_in);
    let state_dir =
        args.sign_in.state_dir.clone().or_else(|| config.defaults.state_dir.clone()).or_else(default_state_dir);
    let http = crate::engine::http::client(4);
    let token = Arc::new(token_source(
        provider,
        resolve_token(args.token.as_deref(), provider).or_else(|| section.token.clone().map(Secret::new)),
        args.token_command.clone().or_else(|| section.token_command.clone()),
        &sign_in,
        section.rc.unwrap_or(false),
        state_dir.as_deref(),
        &http,
    )?);
    Ok(Api::new(
        http,
        base,
        provider.as_str_static(),
        token,
        RetryPolicy { max_retries: args.retries, ..RetryPolicy::default() },
    ))
}

/// The token source of a run: `token` (already resolved from `--token`, the env vars and the
/// config file) > the built-in sign-in from `sign_in` > `command`.
pub fn token_source(
    provider: ProviderName,
    token: Option<Secret>,
    command: Option<String>,
    sign_in: &SignInArgs,
    rc: bool,
    state_dir: Option<&std::path::Path>,
    http: &reqwest::Client,
) -> Result<TokenSource> {
    let given = token.as_ref().is_some_and(|t| !t.is_empty());
    let sign_in = match sign_in_credentials(provider, sign_in, given)? {
        None => None,
        Some(credentials) => {
            let text = sign_in.auth_endpoint.clone().unwrap_or_else(|| default_auth_endpoint(provider, rc).to_string());
            let endpoint = crate::engine::http::checked_url(&text, "--auth-endpoint")?;
            Some(SignIn::new(provider.as_str_static(), endpoint, credentials, http.clone(), state_dir))
        }
    };
    Ok(TokenSource::with_sign_in(provider.as_str_static(), provider.token_env(), token, sign_in, command))
}

/// The documented sign-in origin of a provider.
pub fn default_auth_endpoint(provider: ProviderName, rc: bool) -> &'static str {
    match provider {
        ProviderName::Truvideo if rc => signin::TRUVIDEO_RC_AUTH_ENDPOINT,
        ProviderName::Truvideo => signin::TRUVIDEO_AUTH_ENDPOINT,
        _ => signin::TELEPORT_AUTH_ENDPOINT,
    }
}

/// The provider's sign-in credentials, when all of them are given. Some but not all is a usage
/// error, unless a given token makes the sign-in unnecessary at start (it then only renews).
fn sign_in_credentials(provider: ProviderName, a: &SignInArgs, token_given: bool) -> Result<Option<Credentials>> {
    let val = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(String::from);
    let missing = |names: Vec<&str>| {
        Error::usage(
            format!("incomplete {} sign-in credentials: {} missing", provider.as_str(), names.join(" and ")),
            match provider {
                ProviderName::Teleport => {
                    "give both --client-id and --client-secret (env TELEPORT_CLIENT_ID, TELEPORT_CLIENT_SECRET)"
                }
                _ => {
                    "give --api-key, --secret-key and --external-id (env TRUVIDEO_API_KEY, TRUVIDEO_SECRET_KEY, TRUVIDEO_EXTERNAL_ID)"
                }
            },
        )
    };
    match provider {
        ProviderName::Teleport => match (val(&a.client_id), val(&a.client_secret)) {
            (Some(client_id), Some(secret)) => {
                Ok(Some(Credentials::Teleport { client_id, client_secret: Secret::new(secret) }))
            }
            (None, None) => Ok(None),
            _ if token_given => Ok(None),
            (None, _) => Err(missing(vec!["--client-id"])),
            (_, None) => Err(missing(vec!["--client-secret"])),
        },
        ProviderName::Truvideo => {
            let (k, s, e) = (val(&a.api_key), val(&a.secret_key), val(&a.external_id));
            match (k, s, e) {
                (Some(api_key), Some(secret), Some(external_id)) => {
                    Ok(Some(Credentials::Truvideo { api_key, secret_key: Secret::new(secret), external_id }))
                }
                (None, None, None) => Ok(None),
                _ if token_given => Ok(None),
                (k, s, e) => {
                    let names =
                        [("--api-key", k.is_none()), ("--secret-key", s.is_none()), ("--external-id", e.is_none())];
                    Err(missing(names.iter().filter(|(_, m)| *m).map(|(n, _)| *n).collect()))
                }
            }
        }
        _ => Ok(None),
    }
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
        let concurrency = args.concurrency as usize;
        let http = crate::engine::http::client(concurrency);
        let state_dir = args.state_dir.clone().or_else(default_state_dir);
        let token = Arc::new(token_source(
            provider,
            resolve_token(args.token.as_deref(), provider)
                .or_else(|| config.section(provider).token.clone().map(Secret::new)),
            args.token_command.clone(),
            &args.sign_in,
            args.truvideo.rc,
            state_dir.as_deref(),
            &http,
        )?);
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
            state_dir,
            resume: !args.no_resume,
            args: args.clone(),
            quiet: output.quiet,
            http,
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
            ProviderName::Uplift => Ok(Box::new(uplift::Uplift::new(uplift::UpliftOptions::from_input(
                &uplift_input(&self.args.uplift),
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
            ProviderName::Apertur => Ok(Box::new(apertur::Apertur::new(apertur::AperturOptions::from_input(
                &apertur_input(&self.args),
                self.quiet,
            )?))),
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

/// The Uplift flags as the provider's plain settings.
pub fn uplift_input(a: &crate::cli::UpliftArgs) -> uplift::UpliftInput {
    uplift::UpliftInput {
        athlete_id: a.athlete_id.clone(),
        session_group_id: a.session_group_id.clone(),
        activity: a.activity.clone(),
        movement: a.movement.clone(),
        camera_setup: a.camera_setup.clone(),
        orientation: a.orientation.clone(),
        camera_config: a.camera_config.clone(),
        movement_attr: a.movement_attr.clone(),
        file_name: a.file_name.clone(),
        capture_time: a.capture_time.clone(),
    }
}

/// The Apertur flags (and the shared `--tag`, `--concurrency`, `--wait` ones) as the
/// provider's plain settings.
pub fn apertur_input(args: &UploadArgs) -> apertur::AperturInput {
    let a = &args.apertur;
    apertur::AperturInput {
        session: a.session.clone(),
        destinations: a.destinations.clone(),
        tags: args.tags.clone(),
        expires_in_hours: a.expires_in_hours,
        expires_at: a.expires_at.clone(),
        max_images: a.max_images,
        allowed_mime_types: a.allowed_mime_types.clone(),
        max_image_dimension: a.max_image_dimension,
        password: a.password.as_deref().map(Secret::new),
        long_polling: a.long_polling,
        concurrency: args.concurrency as usize,
        wait: args.wait,
        wait_timeout: args.wait_timeout,
        poll_interval: args.poll_interval,
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
