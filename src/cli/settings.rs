//! The second stage of argument handling: clap's raw values become validated settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cli::args::{ApiArgs, AutoCount, NetworkArgs, OutputArgs, ProviderName, SignInArgs, TokenArgs, UploadArgs};
use crate::cli::config::ConfigFile;
use crate::engine::http::{NetOptions, SpeedLimit};
use crate::engine::ratelimit::{OffsetClock, RateLimit, Schedule};
use crate::engine::retry::RetryPolicy;
use crate::engine::tune::Files;
use crate::error::{Error, Result};
use crate::providers::signin::{Credentials, SignIn};
use crate::providers::{Api, Descriptor, Provider, SignInKind, TokenSource, apertur, teleport, truvideo, uplift};
use crate::redact::Secret;
use crate::run::{RunOptions, Selection};
use crate::uploader::Uploader;

/// Validated settings for an upload run: the library's [`Uploader`] built from the flags,
/// the environment and the configuration file, and what the run does with each file.
pub(crate) struct UploadSettings {
    /// Which provider.
    pub(crate) provider: ProviderName,
    /// The run's front door: provider, endpoint, tokens, part budget, rate limit, state.
    pub(crate) uploader: Uploader,
    args: UploadArgs,
    /// Whether the run has a way to a token: one given, a sign-in, or a token command (a dry
    /// run without one says the real run would fail).
    pub(crate) credentials: bool,
}

impl ProviderName {
    /// What the provider tells about itself: the one place where the command line's provider
    /// names meet the registry ([`crate::providers::PROVIDERS`]).
    pub(crate) fn descriptor(self) -> &'static Descriptor {
        use clap::ValueEnum;
        let value = self.to_possible_value().expect("no --provider value is skipped");
        crate::providers::descriptor(value.get_name()).expect("every --provider value is registered")
    }
    /// The name on the command line.
    pub(crate) fn as_str(self) -> &'static str {
        self.descriptor().name
    }
}

/// `--token`, else the provider's env var, else `UPLOAD_TOKEN`.
pub(crate) fn resolve_token(flag: Option<Secret>, provider: ProviderName) -> Option<Secret> {
    flag.filter(|t| !t.is_empty()).or_else(|| provider.descriptor().env_token())
}

/// How a command reaches a provider's API, as given on the command line or in the
/// environment (clap has merged those two already).
pub(crate) struct ConnectionArgs<'a> {
    /// `--endpoint` / `UPLOAD_ENDPOINT`.
    pub(crate) endpoint: Option<String>,
    /// `--token`, `--token-command` / `UPLOAD_TOKEN_COMMAND`.
    pub(crate) tokens: TokenArgs,
    /// Built-in sign-in flags.
    pub(crate) sign_in: &'a SignInArgs,
    /// `--rc` (TruVideo's release-candidate environment).
    pub(crate) rc: bool,
    /// `--state-dir` / `UPLOAD_STATE_DIR`.
    pub(crate) state_dir: Option<PathBuf>,
    /// Connections of the HTTP pool.
    pub(crate) concurrency: usize,
    /// The run's trust roots and time model.
    pub(crate) net: &'a NetOptions,
}

/// A command's resolved connection to a provider's API.
pub(crate) struct Connection {
    /// API base URL.
    pub(crate) endpoint: url::Url,
    /// Token source (given token > built-in sign-in > token command).
    pub(crate) token: Arc<TokenSource>,
    /// The HTTP pool.
    pub(crate) http: reqwest::Client,
}

/// A command's connection settings, merged but not yet connected.
pub(crate) struct Resolved {
    /// API base URL.
    pub(crate) endpoint: url::Url,
    /// The token given (flag, env, config file).
    pub(crate) token: Option<Secret>,
    /// `--token-command`.
    pub(crate) command: Option<String>,
    /// The built-in sign-in's credentials and origin, when given.
    pub(crate) sign_in: Option<(Credentials, url::Url)>,
    /// State directory.
    pub(crate) state_dir: Option<PathBuf>,
}

/// The one merge of the connection settings of every command (uploads, `auth check`, the
/// management subcommands): flags > environment > the configuration file (the provider's
/// section, `[defaults]`) > what the provider's descriptor documents.
pub(crate) fn resolve(provider: ProviderName, config: &ConfigFile, a: ConnectionArgs<'_>) -> Result<Resolved> {
    let d = provider.descriptor();
    let section = config.section(provider);
    let rc = a.rc || section.rc.unwrap_or(false);
    let endpoint_text = a.endpoint.or(section.endpoint.clone()).unwrap_or_else(|| d.endpoint(rc).to_string());
    let endpoint = crate::engine::http::checked_url(&endpoint_text, "--endpoint")?;
    let mut sign_in = a.sign_in.clone();
    config.apply_sign_in(provider, &mut sign_in);
    let state_dir = a.state_dir.or_else(|| config.defaults.state_dir.clone()).or_else(default_state_dir);
    let token = resolve_token(a.tokens.token, provider).or_else(|| section.token.clone()).filter(|t| !t.is_empty());
    let sign_in = match sign_in_credentials(d, &sign_in, token.is_some())? {
        None => None,
        Some(credentials) => {
            let text = sign_in.auth_endpoint.as_deref().or(d.auth_endpoint(rc)).unwrap_or_default();
            Some((credentials, crate::engine::http::checked_url(text, "--auth-endpoint")?))
        }
    };
    Ok(Resolved {
        endpoint,
        token,
        command: a.tokens.token_command.or(section.token_command.clone()),
        sign_in,
        state_dir,
    })
}

/// [`resolve`], connected: an HTTP pool of `a.concurrency` connections and the token source.
pub(crate) fn connect(provider: ProviderName, config: &ConfigFile, a: ConnectionArgs<'_>) -> Result<Connection> {
    let d = provider.descriptor();
    let net = a.net;
    let http = crate::engine::http::client(net, a.concurrency);
    let r = resolve(provider, config, a)?;
    let sign_in = r.sign_in.map(|(credentials, endpoint)| {
        SignIn::new(d.name, endpoint, credentials, http.clone(), r.state_dir.as_deref())
            .with_executor(crate::engine::request::Executor::with_options(CancellationToken::new(), None, net))
    });
    let token = Arc::new(TokenSource::with_sign_in(d.name, d.token_env, r.token, sign_in, r.command));
    Ok(Connection { endpoint: r.endpoint, token, http })
}

/// What the parts of one invocation share, read once: the configuration file, and the time
/// model merged from it and the flags (handed to every client and executor). `watch` reads
/// the file again on SIGHUP.
#[derive(Clone, Debug, Default)]
pub(crate) struct Invocation {
    pub(crate) config: ConfigFile,
    pub(crate) net: NetOptions,
}

/// The API client of a management subcommand (`upload teleport list`, ...): endpoint and token
/// resolved exactly as for an upload ([`connect`]), its executor on the run's time model.
pub(crate) fn api_from_args(provider: ProviderName, args: &ApiArgs, inv: &Invocation) -> Result<Api> {
    let (config, net) = (&inv.config, &inv.net);
    let c = connect(
        provider,
        config,
        ConnectionArgs {
            endpoint: args.endpoint.clone(),
            tokens: args.tokens.clone(),
            sign_in: &args.sign_in.credentials,
            rc: false,
            state_dir: args.sign_in.state_dir.clone(),
            concurrency: 4,
            net,
        },
    )?;
    Ok(Api::new(
        c.http,
        c.endpoint,
        provider.as_str(),
        c.token,
        RetryPolicy { max_retries: args.retries, ..RetryPolicy::default() },
    )
    .with_executor(crate::engine::request::Executor::with_options(CancellationToken::new(), None, net)))
}

/// The provider's sign-in credentials, when all of them are given. Some but not all is a usage
/// error, unless a given token makes the sign-in unnecessary at start (it then only renews).
fn sign_in_credentials(d: &Descriptor, a: &SignInArgs, token_given: bool) -> Result<Option<Credentials>> {
    let val = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(String::from);
    let secret = |v: &Option<Secret>| v.clone().filter(|v| !v.is_empty());
    let missing = |names: Vec<&str>, hint: &str| {
        Error::usage(format!("incomplete {} sign-in credentials: {} missing", d.name, names.join(" and ")), hint)
    };
    let Some(sign_in) = d.sign_in else { return Ok(None) };
    match sign_in.kind {
        SignInKind::ClientCredentials => match (val(&a.client_id), secret(&a.client_secret)) {
            (Some(client_id), Some(client_secret)) => Ok(Some(Credentials::Teleport { client_id, client_secret })),
            (None, None) => Ok(None),
            _ if token_given => Ok(None),
            (c, _) => Err(missing(
                vec![if c.is_none() { "--client-id" } else { "--client-secret" }],
                "give both --client-id and --client-secret (env TELEPORT_CLIENT_ID, TELEPORT_CLIENT_SECRET)",
            )),
        },
        SignInKind::SignedLogin => {
            let (k, s, e) = (secret(&a.api_key), secret(&a.secret_key), val(&a.external_id));
            match (k, s, e) {
                (Some(api_key), Some(secret_key), Some(external_id)) => {
                    Ok(Some(Credentials::Truvideo { api_key, secret_key, external_id }))
                }
                (None, None, None) => Ok(None),
                _ if token_given => Ok(None),
                (k, s, e) => {
                    let names =
                        [("--api-key", k.is_none()), ("--secret-key", s.is_none()), ("--external-id", e.is_none())];
                    Err(missing(
                        names.iter().filter(|(_, m)| *m).map(|(n, _)| *n).collect(),
                        "give --api-key, --secret-key and --external-id (env TRUVIDEO_API_KEY, TRUVIDEO_SECRET_KEY, TRUVIDEO_EXTERNAL_ID)",
                    ))
                }
            }
        }
    }
}

impl UploadSettings {
    /// Validates the arguments and builds the run's [`Uploader`], its waits ending on `cancel`.
    pub(crate) fn from_args(
        args: &UploadArgs,
        output: &OutputArgs,
        cancel: CancellationToken,
        inv: &Invocation,
    ) -> Result<Self> {
        let (config, net) = (&inv.config, &inv.net);
        let mut args = args.clone();
        config.apply(&mut args)?;
        let args = &args;
        let provider = args.provider.ok_or_else(|| {
            Error::usage(
                "no provider given",
                "pass --provider teleport|truvideo|uplift|apertur (or set UPLOAD_PROVIDER)",
            )
        })?;
        let r = resolve(
            provider,
            config,
            ConnectionArgs {
                endpoint: args.endpoint.clone(),
                tokens: args.tokens.clone(),
                sign_in: &args.sign_in,
                rc: args.truvideo.rc,
                state_dir: args.state_dir.clone(),
                concurrency: concurrency_setting(args).max(),
                net,
            },
        )?;
        // No journal, lock or done record without one: a run never goes on like that silently.
        if r.state_dir.is_none() && !args.dry_run {
            return Err(crate::cli::dirs::no_state_dir());
        }
        let credentials = r.token.is_some() || r.command.is_some() || r.sign_in.is_some();
        let built: Arc<dyn Provider> = Arc::from(build_provider(provider, args)?);
        let files = match args.files_at_once {
            AutoCount::Fixed(n) => Files::Fixed((n as usize).max(built.concurrent_files())),
            AutoCount::Auto => Files::Auto,
        };
        let signer = match provider {
            ProviderName::Apertur => apertur::signer(args.apertur.signing_secret.as_ref()),
            _ => None,
        };
        let mut uploader = Uploader::from_arc(built)
            .endpoint(r.endpoint.as_str())
            .token_secret(r.token)
            .concurrency_setting(concurrency_setting(args))
            .files(files)
            .retries(args.retries)
            .content_md5(args.checksum.is_some())
            .rate_limit(rate_limit(args.limit_rate.as_deref(), config)?)
            .state_dir_opt(r.state_dir)
            .resume(!args.no_resume)
            .resume_options(journal_options(args))
            .signer(signer)
            .net(net.clone())
            .cancel_on(cancel);
        if let Some(cmd) = r.command {
            uploader = uploader.token_command(cmd);
        }
        if let Some((credentials, endpoint)) = r.sign_in {
            uploader = uploader.sign_in(credentials).auth_endpoint(endpoint.as_str());
        }
        if let Some(notifier) = retry_notifier(output.quiet) {
            uploader = uploader.on_retry(notifier);
        }
        if !output.quiet {
            // What a run says outside any file (Apertur's deliveries once followed).
            uploader = uploader.progress(|e: crate::Event| {
                if let crate::Event::Notice { message } = e {
                    crate::cli::ui::notice(&format!("upload: {message}"));
                }
            });
        }
        Ok(UploadSettings { provider, uploader, args: args.clone(), credentials })
    }

    /// What the run does with each file: `--force`, `--no-resume`, `--dry-run`, `--zip-to`,
    /// `--wait-for-lock`, `--fail-fast`, and the options that decide where a file goes.
    pub(crate) fn run_options(&self, selection: &Selection) -> RunOptions {
        let a = &self.args;
        RunOptions {
            force: a.force,
            resume: !a.no_resume,
            dry_run: a.dry_run,
            zip_to: a.teleport.zip_to.clone(),
            wait_for_lock: a.wait_for_lock,
            destination: crate::cli::batch::destination(a, self.provider),
            fail_fast: a.fail_fast,
            selection: Some(selection.clone()),
        }
    }
}

/// The provider with its settings from the command line.
fn build_provider(provider: ProviderName, args: &UploadArgs) -> Result<Box<dyn Provider>> {
    match provider {
        ProviderName::Teleport => {
            let format = args.teleport.format.as_deref().map(teleport::Format::parse).transpose()?;
            Ok(Box::new(teleport::Teleport::new(teleport::TeleportOptions {
                name: args.teleport.name.clone(),
                format,
                wait: args.wait.then_some(crate::providers::teleport::admin::WaitOptions {
                    poll_interval: args.poll_interval,
                    timeout: wait_timeout(args, provider),
                }),
            })?))
        }
        // One new session group per run (the provider is built once), shared by its files.
        ProviderName::Uplift => Ok(Box::new(uplift::Uplift::new(uplift_options(args))?)),
        ProviderName::Truvideo => {
            let t = &args.truvideo;
            Ok(Box::new(truvideo::Truvideo::new(truvideo::TruvideoOptions {
                title: t.title.clone(),
                creator: t.creator.clone(),
                duration_ms: t.duration_ms,
                resolution: t.resolution.clone(),
                file_type: t.file_type.clone(),
                tags: args.tags.clone(),
                library: t.library,
                no_report: t.no_report,
                metadata: t.metadata.clone(),
                metadata_json: t.metadata_json.clone(),
                part_size: args.part_size,
                wait: !args.no_wait,
                wait_timeout: wait_timeout(args, provider),
                poll_interval: args.poll_interval,
            })?))
        }
        ProviderName::Apertur => Ok(Box::new(apertur::Apertur::new(apertur_options(args))?)),
    }
}

/// The options a resume journal keeps, as the command-line arguments that give them
/// (`{"args": [...]}`): what the upload needs to finish without the original command line
/// (Teleport's name and format, TruVideo's media fields, metadata, tags and part size, the
/// waiting, concurrency and retries, `--force`, `--limit-rate`, and which images a directory's
/// zip takes: `--recursive`, `--include`, `--exclude`, `--hidden`). Never a token, secret or password; the file, provider and
/// endpoint are in the journal already.
pub(crate) fn journal_options(a: &UploadArgs) -> serde_json::Value {
    let mut v: Vec<String> = vec![];
    let mut opt = |flag: &str, value: Option<String>| {
        if let Some(value) = value {
            v.push(flag.into());
            v.push(value);
        }
    };
    let ms = |d: Duration| Some(format!("{}ms", d.as_millis()));
    opt("--concurrency", Some(a.concurrency.to_string()));
    if a.concurrency == crate::cli::args::AutoCount::Auto {
        opt("--max-concurrency", Some(a.max_concurrency.to_string()));
    }
    opt("--retries", Some(a.retries.to_string()));
    opt("--part-size", a.part_size.map(|n| n.to_string()));
    opt("--checksum", a.checksum.map(|_| "md5".to_string()));
    opt("--wait-timeout", a.wait_timeout.and_then(ms));
    opt("--poll-interval", ms(a.poll_interval));
    opt("--limit-rate", a.limit_rate.clone());
    for g in &a.include {
        opt("--include", Some(g.clone()));
    }
    for g in &a.exclude {
        opt("--exclude", Some(g.clone()));
    }
    opt("--name", a.teleport.name.clone());
    opt("--format", a.teleport.format.clone());
    let t = &a.truvideo;
    opt("--title", t.title.clone());
    opt("--creator", t.creator.clone());
    opt("--duration-ms", t.duration_ms.map(|n| n.to_string()));
    opt("--resolution", t.resolution.clone());
    opt("--file-type", t.file_type.clone());
    opt("--metadata-json", t.metadata_json.clone());
    for m in &t.metadata {
        opt("--metadata", Some(m.clone()));
    }
    for tag in &a.tags {
        opt("--tag", Some(tag.clone()));
    }
    for (flag, on) in [
        ("--force", a.force),
        ("--hidden", a.hidden),
        ("--recursive", a.recursive),
        ("--wait", a.wait),
        ("--no-wait", a.no_wait),
        ("--rc", t.rc),
        ("--library", t.library),
        ("--no-report", t.no_report),
    ] {
        if on {
            v.push(flag.into());
        }
    }
    serde_json::json!({ "args": v })
}

/// `--concurrency` and `--max-concurrency` as the engine's setting.
pub(crate) fn concurrency_setting(args: &UploadArgs) -> crate::engine::tune::Concurrency {
    use crate::engine::tune::Concurrency;
    match args.concurrency {
        crate::cli::args::AutoCount::Auto => Concurrency::Auto { max: args.max_concurrency as usize },
        crate::cli::args::AutoCount::Fixed(n) => Concurrency::Fixed(n as usize),
    }
}

/// The Uplift flags (and the shared `--wait` ones) as the provider's options.
pub(crate) fn uplift_options(args: &UploadArgs) -> uplift::UpliftOptions {
    let a = &args.uplift;
    uplift::UpliftOptions {
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
        wait: args.wait,
        wait_timeout: wait_timeout(args, ProviderName::Uplift),
        poll_interval: args.poll_interval,
    }
}

/// The Apertur flags (and the shared `--tag`, `--concurrency`, `--wait` ones) as the
/// provider's options.
pub(crate) fn apertur_options(args: &UploadArgs) -> apertur::AperturOptions {
    let a = &args.apertur;
    apertur::AperturOptions {
        session: a.session.clone(),
        destinations: a.destinations.clone(),
        tags: args.tags.clone(),
        expires_in_hours: a.expires_in_hours,
        expires_at: a.expires_at.clone(),
        max_images: a.max_images,
        allowed_mime_types: a.allowed_mime_types.clone(),
        max_image_dimension: a.max_image_dimension,
        password: a.password.clone(),
        long_polling: a.long_polling,
        concurrency: concurrency_setting(args).max(),
        wait: args.wait,
        wait_timeout: wait_timeout(args, ProviderName::Apertur),
        poll_interval: args.poll_interval,
    }
}

/// `--wait-timeout`, else the provider's default: 1 h, and for Apertur long enough for the
/// vendor's delivery retries (5 s, 30 s, 2 min, 10 min, 1 h: about 73 minutes) to end as
/// delivered or failed rather than as a timeout.
pub(crate) fn wait_timeout(args: &UploadArgs, provider: ProviderName) -> Duration {
    args.wait_timeout.unwrap_or(match provider {
        ProviderName::Apertur => apertur::DEFAULT_WAIT_TIMEOUT,
        _ => Duration::from_secs(3600),
    })
}

/// Unless `quiet`: a server that stopped answering is said on stderr at once (`upload: HOST
/// is not answering: ...; still trying`), and while a host has not answered yet, each retry
/// is shown (`upload: retrying in 2s: ... (3/10)`).
pub(crate) fn retry_notifier(quiet: bool) -> Option<crate::engine::request::Notifier> {
    use crate::engine::request::{Notifier, RetryNotice};
    (!quiet).then(|| {
        Arc::new(|n: &RetryNotice| {
            if let Some(s) = &n.silence {
                crate::cli::ui::notice(&format!(
                    "upload: {} is not answering: nothing received for {} ({}); still trying, for up to {} of silence",
                    s.host,
                    crate::size::human_duration(s.silent_for),
                    n.what,
                    crate::size::human_duration(s.gives_up_after),
                ));
            } else if n.first_contact {
                // Above the bars when they are drawn.
                crate::cli::ui::notice(&format!(
                    "upload: {}: retrying in {}: {} ({}/{})",
                    n.what,
                    crate::size::human_duration(n.delay),
                    n.reason,
                    n.attempt,
                    n.max_retries
                ));
            }
        }) as Notifier
    })
}

/// The executor of a CLI subcommand, on the run's time model (`net`): waits end on `cancel`;
/// retries and silent servers shown as for an upload ([`retry_notifier`]).
pub(crate) fn run_executor(
    cancel: CancellationToken,
    quiet: bool,
    net: &NetOptions,
) -> crate::engine::request::Executor {
    crate::engine::request::Executor::with_options(cancel, retry_notifier(quiet), net)
}

/// The system's default state directory ([`crate::cli::dirs`]).
pub(crate) fn default_state_dir() -> Option<PathBuf> {
    crate::cli::dirs::state_dir()
}

/// The run's trust roots and time model, merged once: flags (`--connect-timeout`,
/// `--idle-timeout`, `--speed-limit`, `--speed-time`, `--ca-bundle`; their env vars are
/// merged by clap) > the config file's `[defaults]` (checked here: exit 2 naming the key) >
/// the documented defaults ([`NetOptions::default`]).
pub(crate) fn net_options(a: &NetworkArgs, config: &ConfigFile) -> Result<NetOptions> {
    let d = &config.defaults;
    let bad = |key: &str, e: String, example: &str| {
        Error::usage(format!("config file [defaults] {key}: {e}"), format!("give {example}"))
    };
    let timeout = |flag: Option<Duration>, key: &str, text: &Option<String>| -> Result<Option<Duration>> {
        match (flag, text.as_deref()) {
            (Some(d), _) => Ok(Some(d)),
            (None, None) => Ok(None),
            (None, Some(t)) => crate::cli::args::parse_timeout(&key.replace('_', " "), t)
                .map(Some)
                .map_err(|e| bad(key, e, "a duration above zero and at most 1h, such as \"10s\"")),
        }
    };
    let defaults = NetOptions::default();
    let connect = timeout(a.connect_timeout, "connect_timeout", &d.connect_timeout)?;
    let idle = timeout(a.idle_timeout, "idle_timeout", &d.idle_timeout)?;
    let speed_time = timeout(a.speed_time, "speed_time", &d.speed_time)?;
    let speed_limit = match (a.speed_limit, d.speed_limit.as_deref()) {
        (Some(n), _) => Some(n),
        (None, None) => None,
        (None, Some(t)) => {
            Some(crate::size::parse_size(t).map_err(|e| bad("speed_limit", e, "bytes per second, such as \"10KiB\""))?)
        }
    };
    // As curl: either one alone turns the check on (1 byte per second, 30 s); 0 turns it off.
    let speed_limit = match (speed_limit, speed_time) {
        (None, None) | (Some(0), _) => None,
        (limit, time) => Some(SpeedLimit {
            bytes_per_second: limit.unwrap_or(1),
            time: time.unwrap_or(crate::engine::http::DEFAULT_SPEED_TIME),
        }),
    };
    NetOptions {
        connect_timeout: connect.unwrap_or(defaults.connect_timeout),
        idle_timeout: idle.unwrap_or(defaults.idle_timeout),
        speed_limit,
        ..defaults
    }
    .with_ca_bundle(a.ca_bundle.as_deref())
}

/// Where a `--limit-rate` value came from, for its error: the flag, or `UPLOAD_LIMIT_RATE`
/// when the command line has no `--limit-rate` and the variable holds that value (clap has
/// merged the two already).
fn limit_rate_source(text: &str) -> &'static str {
    let flag = std::env::args_os().any(|a| a.to_string_lossy().starts_with("--limit-rate"));
    let env = std::env::var("UPLOAD_LIMIT_RATE").is_ok_and(|v| v == text);
    if env && !flag { "UPLOAD_LIMIT_RATE" } else { "--limit-rate" }
}

/// The run's bandwidth limit from `--limit-rate` (env `UPLOAD_LIMIT_RATE`), else the config
/// file's `[defaults] limit_rate`; refused (exit 2, naming the bad entry) before any request.
/// The hidden `UPLOAD_FAKE_LOCAL_TIME=YYYY-MM-DDTHH:MM:SS` makes the schedule's clock start at
/// that local time (tests).
pub(crate) fn rate_limit(text: Option<&str>, config: &ConfigFile) -> Result<RateLimit> {
    let (text, source) = match text {
        Some(t) => (Some(t.to_string()), limit_rate_source(t)),
        None => (config.defaults.limit_rate.clone(), "the config file's [defaults] limit_rate"),
    };
    let Some(text) = text else { return Ok(RateLimit::off()) };
    let schedule = Schedule::parse(&text).map_err(|e| {
        Error::usage(
            format!("invalid {source}: {e}"),
            "give a rate in bytes per second (10MiB, 8M, 500k, off) or a timetable such as \"08:00,4MiB 12:00,10MiB 18:00,off\" (Mon-08:00,RATE for one day)",
        )
    })?;
    let fake = std::env::var("UPLOAD_FAKE_LOCAL_TIME").ok().filter(|v| !v.is_empty());
    match fake {
        Some(t) => {
            let start = chrono::NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S").map_err(|e| {
                Error::usage(format!("UPLOAD_FAKE_LOCAL_TIME '{t}' is invalid: {e}"), "use YYYY-MM-DDTHH:MM:SS")
            })?;
            Ok(RateLimit::with_clock(schedule, Arc::new(OffsetClock::starting_at(start))))
        }
        None => Ok(RateLimit::new(schedule)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_options_merge_flag_over_file_over_default() {
        let mut file = ConfigFile::default();
        let flags = NetworkArgs::default();
        let n = net_options(&flags, &file).unwrap();
        assert_eq!(
            (n.connect_timeout, n.idle_timeout, n.speed_limit),
            (Duration::from_secs(5), Duration::from_secs(30), None)
        );
        file.defaults.connect_timeout = Some("1500ms".into());
        file.defaults.idle_timeout = Some("2m".into());
        file.defaults.speed_limit = Some("10KiB".into());
        let n = net_options(&flags, &file).unwrap();
        assert_eq!((n.connect_timeout, n.idle_timeout), (Duration::from_millis(1500), Duration::from_secs(120)));
        assert_eq!(n.speed_limit, Some(SpeedLimit { bytes_per_second: 10 << 10, time: Duration::from_secs(30) }));
        let flags = NetworkArgs {
            connect_timeout: Some(Duration::from_secs(2)),
            idle_timeout: Some(Duration::from_secs(7)),
            speed_time: Some(Duration::from_secs(9)),
            ..NetworkArgs::default()
        };
        let n = net_options(&flags, &file).unwrap();
        assert_eq!((n.connect_timeout, n.idle_timeout), (Duration::from_secs(2), Duration::from_secs(7)));
        assert_eq!(n.speed_limit, Some(SpeedLimit { bytes_per_second: 10 << 10, time: Duration::from_secs(9) }));
        // --speed-time alone: curl's 1 byte per second; a limit of 0 is off.
        let n = net_options(&flags, &ConfigFile::default()).unwrap();
        assert_eq!(n.speed_limit, Some(SpeedLimit { bytes_per_second: 1, time: Duration::from_secs(9) }));
        let off = NetworkArgs { speed_limit: Some(0), ..flags };
        assert_eq!(net_options(&off, &file).unwrap().speed_limit, None);
        for (key, bad) in
            [("connect_timeout", "0"), ("idle_timeout", "2h"), ("speed_time", "soon"), ("speed_limit", "fast")]
        {
            let mut file = ConfigFile::default();
            match key {
                "connect_timeout" => file.defaults.connect_timeout = Some(bad.into()),
                "idle_timeout" => file.defaults.idle_timeout = Some(bad.into()),
                "speed_time" => file.defaults.speed_time = Some(bad.into()),
                _ => file.defaults.speed_limit = Some(bad.into()),
            }
            let e = net_options(&NetworkArgs::default(), &file).unwrap_err();
            assert_eq!(crate::cli::report::exit_code(&e), 2, "{key} = {bad}: {e}");
            assert!(e.to_string().starts_with(&format!("config file [defaults] {key}: ")), "{e}");
        }
    }

    #[test]
    fn secrets_are_parsed_into_the_redacting_type() {
        use clap::Parser;
        let secrets = ["tok-111111", "csec-22222", "akey-33333", "skey-44444", "pass-55555", "sign-66666"];
        let cli = crate::cli::args::Cli::parse_from([
            "upload",
            "a.jpg",
            "--provider",
            "apertur",
            "--token",
            secrets[0],
            "--client-secret",
            secrets[1],
            "--api-key",
            secrets[2],
            "--secret-key",
            secrets[3],
            "--password",
            secrets[4],
            "--signing-secret",
            secrets[5],
        ]);
        let shown = format!("{cli:?}");
        for s in secrets {
            assert!(!shown.contains(s), "{s} in {shown}");
        }
        let u = &cli.upload;
        assert_eq!(u.tokens.token.as_ref().map(Secret::expose), Some(secrets[0]));
        assert_eq!(u.sign_in.secret_key.as_ref().map(Secret::expose), Some(secrets[3]));
        assert_eq!(apertur_options(u).password.as_ref().map(Secret::expose), Some(secrets[4]));
        let options = apertur_options(u);
        assert!(!format!("{options:?}").contains(secrets[4]), "{options:?}");

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, format!("[teleport]\ntoken = \"{}\"\nclient_secret = \"{}\"\n", secrets[0], secrets[1]))
            .unwrap();
        let config = ConfigFile::load_from(&p).unwrap();
        assert!(!format!("{config:?}").contains(secrets[0]) && !config.redacted_toml().contains(secrets[1]));
        assert_eq!(config.section(ProviderName::Teleport).token.as_ref().map(Secret::expose), Some(secrets[0]));
    }

    #[test]
    fn every_provider_flag_value_is_registered_and_back() {
        use clap::ValueEnum;
        assert_eq!(ProviderName::value_variants().len(), crate::providers::PROVIDERS.len());
        for d in crate::providers::PROVIDERS {
            let name = ProviderName::from_str(d.name, false).unwrap();
            assert_eq!(name.descriptor(), d);
            assert_eq!(name.as_str(), d.name);
        }
    }
}
