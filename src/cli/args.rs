//! Command-line arguments (clap derive). Converted into validated settings by
//! [`crate::cli::settings`]; the engine never sees these types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::redact::{Secret, parse_secret};

const EXAMPLES: &str = "\
Examples:
  upload demo                                              # try it: a sample through the built-in emulator
  upload walk.mp4 --provider teleport --emulate            # your file, to the emulator (no account needed)
  upload scan.zip --provider teleport                      # bulk-images, from the .zip
  upload walk.mp4 --provider teleport --name Walkthrough --json
  upload walkaround.mp4 --provider truvideo --title \"BMW Engine diagnostic\" --tag brand=Jeep
  upload swing-001.mov --provider uplift --athlete-id aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee \\
      --activity golf --movement full_swing --camera-setup single.down_the_line --orientation landscape
  upload photos/*.jpg --provider apertur --destination d290f1ee-6c54-4b01-90e6-d701748f0851 --wait
  upload scan.zip --provider teleport --dry-run            # validate and print the plan only

Tokens: --token, else TELEPORT_TOKEN / TRUVIDEO_TOKEN / UPLIFT_TOKEN / APERTUR_TOKEN, else UPLOAD_TOKEN;
else the built-in sign-in (Teleport --client-id/--client-secret, TruVideo --api-key/--secret-key/
--external-id: the token is cached and renewed before it expires); else --token-command CMD (env
UPLOAD_TOKEN_COMMAND), which prints a fresh one and is run again after a 401.
  upload auth check --provider teleport                    # sign in and make one read-only call
Exit codes: 0 ok, 2 bad input, 3 authentication, 4 rejected by the provider, 5 network/server,
6 processing failed, 7 timed out waiting, 8 another run is uploading the same file (nothing sent),
130 interrupted (run the same command again to resume).";

/// What `-h` shows after the options (`--help` shows [`EXAMPLES`]).
const SHORT_EXAMPLES: &str = "\
Examples:
  upload demo                                   # try it: a sample through the built-in emulator
  upload walk.mp4 -p teleport --emulate         # your file, to the emulator (no account needed)
  upload scan.zip -p teleport                   # token in TELEPORT_TOKEN
  upload videos/ -r -p truvideo --dry-run       # what would go, and how
Exit codes: 0 ok, 2 bad input, 3 authentication, 4 rejected, 5 network/server, 6 processing
failed, 7 timed out, 8 busy (another run of the same file), 130 interrupted (rerun to resume).
`upload --help` shows every option, the token sources and more examples.";

/// What `upload` with no argument prints (on stderr, exit 2): how to start.
pub(crate) const NO_ARGUMENT: &str = "\
upload: nothing to upload: give the files and the provider they go to

Usage: upload <FILE>... --provider <teleport|truvideo|uplift|apertur>
       (the token in TELEPORT_TOKEN, TRUVIDEO_TOKEN, UPLIFT_TOKEN or APERTUR_TOKEN, or --token)

Without an account, on this machine only:
  upload demo                                   # a sample through the built-in emulator, end to end
  upload <FILE>... --provider teleport --emulate   # your files, to the emulator

`upload -h` shows the main options, `upload --help` all of them.
";

/// The options `-h` shows (the ids of their fields); `--help` shows every one.
const SHORT_HELP: &[&str] = &[
    "files",
    "provider",
    "token",
    "endpoint",
    "recursive",
    "dry_run",
    "emulate",
    "limit_rate",
    "json",
    "quiet",
    "verbose",
    "help",
    "version",
];

/// The command line as the binary parses it: `-h` cut to one screen (the options of a first
/// run, short examples), `--help` with everything.
pub(crate) fn command() -> clap::Command {
    use clap::CommandFactory;
    // Shorter words for `-h` where `--help` says more.
    const SHORT_WORDS: &[(&str, &str)] = &[
        ("token", "API token (else the provider's env var, e.g. TELEPORT_TOKEN)"),
        ("limit_rate", "Total bandwidth of the run: 20MiB, 8M, off, or a timetable (see --help)"),
        ("emulate", "Upload to an emulator started in-process instead: no account needed"),
        ("verbose", "More logs on stderr (-v info, -vv debug)"),
    ];
    let shorter = |c: clap::Command, about: &'static str| {
        let long = c.get_long_about().or(c.get_about()).cloned();
        let c = c.about(about);
        match long {
            Some(long) => c.long_about(long),
            None => c,
        }
    };
    Cli::command()
        .after_help(SHORT_EXAMPLES)
        .after_long_help(EXAMPLES)
        .mut_args(|a| {
            if !SHORT_HELP.contains(&a.get_id().as_str()) {
                return a.hide_short_help(true);
            }
            match SHORT_WORDS.iter().find(|(id, _)| *id == a.get_id().as_str()) {
                Some((_, words)) => {
                    let long = a.get_long_help().or(a.get_help()).cloned();
                    let a = a.help(*words);
                    match long {
                        Some(long) => a.long_help(long),
                        None => a,
                    }
                }
                None => a,
            }
        })
        .mut_subcommand("emulator", |c| {
            shorter(c, "Run the emulator as a server: the four APIs and an S3 store on loopback")
        })
        .mut_subcommand("pending", |c| {
            shorter(c, "List the uploads that have a resume journal; resume them, or discard some")
        })
}

/// Upload large media files to Varjo Teleport, TruVideo, Uplift and Apertur.
#[derive(Parser, Debug)]
#[command(name = "upload", version = crate::cli::version::long(), about, after_help = EXAMPLES, args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct Cli {
    /// A subcommand instead of an upload.
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    /// What to upload and how.
    #[command(flatten)]
    pub(crate) upload: UploadArgs,
    /// Output settings.
    #[command(flatten)]
    pub(crate) output: OutputArgs,
    /// Network settings.
    #[command(flatten)]
    pub(crate) network: NetworkArgs,
}

/// Network settings, valid everywhere.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Network")]
pub(crate) struct NetworkArgs {
    /// PEM file of CA certificates trusted besides the system's trust store (a TLS-inspecting
    /// proxy's CA, a private CA in front of an S3-compatible store); SSL_CERT_FILE is honoured too.
    #[arg(long, global = true, env = "UPLOAD_CA_BUNDLE", value_name = "FILE")]
    pub(crate) ca_bundle: Option<PathBuf>,
    /// Longest wait for a TCP (and TLS) connection, for every request of the run (uploads,
    /// sign-in, downloads, subcommands): 500ms, 10s (default 5s; config `[defaults]
    /// connect_timeout`).
    #[arg(long, global = true, env = "UPLOAD_CONNECT_TIMEOUT", value_name = "DURATION", value_parser = parse_connect_timeout_arg)]
    pub(crate) connect_timeout: Option<std::time::Duration>,
    /// Longest time one exchange (a part's PUT, an API call, a download) may move no byte
    /// either way before it is cut and tried again on a new connection: 10s, 2m (default 30s;
    /// config `[defaults] idle_timeout`). Slow but moving transfers are never cut.
    #[arg(long, global = true, env = "UPLOAD_IDLE_TIMEOUT", value_name = "DURATION", value_parser = parse_idle_timeout_arg)]
    pub(crate) idle_timeout: Option<std::time::Duration>,
    /// Cut an exchange that moves fewer than BYTES per second for --speed-time (as curl's
    /// --speed-limit): 1000, 10KiB (default off; config `[defaults] speed_limit`).
    #[arg(long, global = true, env = "UPLOAD_SPEED_LIMIT", value_name = "BYTES", value_parser = parse_size_arg)]
    pub(crate) speed_limit: Option<u64>,
    /// The window of --speed-limit (default 30s when --speed-limit is given; alone, it cuts
    /// exchanges below 1 byte per second; config `[defaults] speed_time`).
    #[arg(long, global = true, env = "UPLOAD_SPEED_TIME", value_name = "DURATION", value_parser = parse_speed_time_arg)]
    pub(crate) speed_time: Option<std::time::Duration>,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Upload a generated sample file to the in-process emulator and show what happened.
    Demo {
        /// The provider flow to show.
        #[arg(long, short = 'p', value_enum, default_value = "teleport")]
        provider: ProviderName,
        /// Size of the sample file.
        #[arg(long, default_value = "20MiB", value_parser = parse_size_arg)]
        size: u64,
    },
    /// Run the emulator as a server (as `upload-emulator`, same flags and output): the four
    /// APIs and an S3-compatible store on loopback, until Ctrl-C.
    #[cfg(feature = "emulate")]
    #[command(about = upload_emulator::cli::ABOUT, long_about = upload_emulator::cli::LONG_ABOUT)]
    Emulator(Box<upload_emulator::cli::ServerArgs>),
    /// Show the configuration file's path or its content (secrets redacted).
    Config {
        /// What to show.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Check credentials: sign in (or take the given token) and make one read-only call.
    Auth {
        /// What to do.
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `upload man | man -l -`, or `upload man > upload.1`.
    Man {
        /// Write every page into this directory instead (upload.1, upload-watch.1, ...: one per
        /// subcommand), as a package installs them under share/man/man1.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Manage Varjo Teleport captures: list, status, rename, delete, metadata, download.
    Teleport {
        /// What to do.
        #[command(subcommand)]
        command: TeleportCommand,
    },
    /// Apertur: delivery status, long-polling download, sessions and destinations.
    Apertur(Box<AperturCommandArgs>),
    /// Watch directories: upload what is there, then each new or changed file once complete.
    Watch(Box<WatchArgs>),
    /// List the uploads that have a resume journal (interrupted or still running); resume them
    /// all with --resume, or discard some with --discard ID / --all-older-than AGE.
    ///
    /// Discarding removes the journal and, where the provider allows it, the upload on the
    /// server: Teleport deletes the capture (DELETE /api/v1/captures/{eid}); TruVideo documents no
    /// way to abort an upload, so only the journal goes; Uplift and Apertur keep no journal (one
    /// request per file). Teleport and TruVideo both hand out fresh part URLs, so an old journal
    /// still resumes.
    Pending(Box<PendingArgs>),
}

/// `upload watch DIR... --provider P [upload options]`.
#[derive(Args, Debug, Clone)]
pub(crate) struct WatchArgs {
    /// What to watch (the directories, as FILE) and how to upload.
    #[command(flatten)]
    pub(crate) upload: UploadArgs,
    /// How to watch.
    #[command(flatten)]
    pub(crate) watch: WatchOptions,
}

/// The watcher's own flags.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Watch")]
pub(crate) struct WatchOptions {
    /// A file (or a bulk-images directory) is complete once its size and mtime have not
    /// changed for this long (and, with inotify, no writer has it open): 5s, 300ms.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration_arg)]
    pub(crate) settle: std::time::Duration,
    /// Scan the directories this often instead of inotify (network filesystems): 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub(crate) poll: Option<std::time::Duration>,
    /// What to do with a file once the provider accepted it: keep, delete, or move:DIR
    /// (keeping its path relative to the watched directory).
    #[arg(long, value_name = "keep|delete|move:DIR", default_value = "keep", value_parser = parse_after_upload)]
    pub(crate) after_upload: AfterUpload,
    /// A file that failed is tried again after this long (doubling at each failure, up to 8 times as long).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration_arg)]
    pub(crate) retry_failed_after: std::time::Duration,
    /// Teleport bulk-images: a sub-directory holding a file of this name is uploaded at once,
    /// without waiting for it to settle.
    #[arg(long, value_name = "NAME")]
    pub(crate) ready_file: Option<String>,
    /// One scan with the same completeness rules, then exit with the worst file's exit code (cron).
    #[arg(long)]
    pub(crate) once: bool,
}

/// `--after-upload`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AfterUpload {
    /// Leave the file where it is.
    Keep,
    /// Delete the file.
    Delete,
    /// Move the file below this directory, keeping its relative path.
    Move(PathBuf),
}

fn parse_after_upload(s: &str) -> Result<AfterUpload, String> {
    match s {
        "keep" => Ok(AfterUpload::Keep),
        "delete" => Ok(AfterUpload::Delete),
        _ => match s.strip_prefix("move:") {
            Some(dir) if !dir.trim().is_empty() => Ok(AfterUpload::Move(PathBuf::from(dir))),
            _ => Err(format!("'{s}' is not keep, delete or move:DIR (e.g. move:done/)")),
        },
    }
}

/// `upload pending`.
#[derive(Args, Debug, Clone)]
pub(crate) struct PendingArgs {
    /// Resume every pending upload, as rerunning its original command would (the journal keeps
    /// the file, provider, endpoint and options; tokens come from this command's sources).
    #[arg(long, conflicts_with_all = ["discard", "all_older_than"])]
    pub(crate) resume: bool,
    /// Discard this pending upload: its id (first column) or the provider's id. Repeatable.
    #[arg(long, value_name = "ID")]
    pub(crate) discard: Vec<String>,
    /// Discard every pending upload whose last activity is older than this: 7d, 12h, 30m.
    #[arg(long, value_name = "AGE", value_parser = parse_duration_arg)]
    pub(crate) all_older_than: Option<std::time::Duration>,
    /// Discard without asking (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
    /// Where resume journals are kept (default $XDG_STATE_HOME/upload, else ~/.local/state/upload; Windows: %LOCALAPPDATA%\upload).
    #[arg(long, env = "UPLOAD_STATE_DIR", value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// The given token and the token command.
    #[command(flatten)]
    pub(crate) tokens: TokenArgs,
    /// Bandwidth of the resumed uploads (as for an upload).
    #[arg(long, env = "UPLOAD_LIMIT_RATE", value_name = "RATE")]
    pub(crate) limit_rate: Option<String>,
    /// Built-in sign-in.
    #[command(flatten)]
    pub(crate) sign_in: SignInArgs,
}

/// Where a token comes from besides the built-in sign-in: `--token` (else the provider's env
/// var) and `--token-command`, the same for an upload, `upload pending` and the management
/// subcommands.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct TokenArgs {
    /// API token (else the provider's env var, e.g. TELEPORT_TOKEN, else UPLOAD_TOKEN).
    #[arg(long, value_name = "TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub(crate) token: Option<Secret>,
    /// Command that prints a fresh token on stdout; run when no token is given and after a 401.
    #[arg(long, env = "UPLOAD_TOKEN_COMMAND", value_name = "CMD")]
    pub(crate) token_command: Option<String>,
}

/// How a management subcommand reaches the provider's API: the same flags, environment
/// variables and token resolution as an upload.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct ApiArgs {
    /// The given token and the token command.
    #[command(flatten)]
    pub(crate) tokens: TokenArgs,

    /// API origin replacing the documented one (paths are kept below it).
    #[arg(long, env = "UPLOAD_ENDPOINT", value_name = "URL")]
    pub(crate) endpoint: Option<String>,

    /// Retries of a failed idempotent request or download.
    #[arg(long, env = "UPLOAD_RETRIES", default_value_t = 10)]
    pub(crate) retries: u32,

    /// Built-in sign-in and its token cache (boxed: keeps the subcommand enums small).
    #[command(flatten)]
    pub(crate) sign_in: Box<ApiSignInArgs>,
}

/// The built-in sign-in of a management subcommand.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct ApiSignInArgs {
    /// Where the sign-in token cache is kept (default $XDG_STATE_HOME/upload, else ~/.local/state/upload; Windows: %LOCALAPPDATA%\upload).
    #[arg(long, env = "UPLOAD_STATE_DIR", value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,

    /// Sign-in credentials.
    #[command(flatten)]
    pub(crate) credentials: SignInArgs,
}

/// `upload teleport ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum TeleportCommand {
    /// List captures: a table (eid, name, state, created, uploaded, viewer_url), JSON lines with --json.
    List {
        /// Captures per page (the API's `limit`).
        #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Captures to skip (the API's `offset`).
        #[arg(long, default_value_t = 0)]
        offset: u32,
        /// Every capture from --offset on: pages of --limit until a short page.
        #[arg(long)]
        all: bool,
        /// API access.
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show one capture (found by paging the list).
    Status {
        /// The capture's eid.
        eid: String,
        /// API access.
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Rename a capture.
    Rename {
        /// The capture's eid.
        eid: String,
        /// The new name.
        name: String,
        /// API access.
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete a capture (asks for confirmation on a terminal unless --yes).
    Delete {
        /// The capture's eid.
        eid: String,
        /// Delete without asking (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        /// API access.
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print the metadata (camera poses, model URLs and sizes) of a READY capture, as JSON.
    Metadata {
        /// The capture's share id (`sid`, set once the capture is READY).
        sid: String,
        /// What to select.
        #[command(flatten)]
        model: ModelArgs,
        /// API access.
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Download the model file(s) of a READY capture: resumable, size-checked.
    Download {
        /// The capture's share id (`sid`, set once the capture is READY).
        sid: String,
        /// What to download.
        #[command(flatten)]
        model: ModelArgs,
        /// Directory the files are written to (created when missing).
        #[arg(long, short = 'o', value_name = "DIR", default_value = ".")]
        output: PathBuf,
        /// Download bandwidth.
        #[command(flatten)]
        rate: Box<LimitRateArgs>,
        /// API access.
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// `--limit-rate` of a download (boxed: keeps the subcommand enums small).
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct LimitRateArgs {
    /// Download bandwidth in bytes per second (20MiB, 8M, off) or a timetable of local times,
    /// "08:00,4MiB 18:00,off", as for uploads.
    #[arg(long, env = "UPLOAD_LIMIT_RATE", value_name = "RATE")]
    pub(crate) limit_rate: Option<String>,
}

/// Which model of a capture (`GET /share/{sid}/metadata` parameters).
#[derive(Args, Debug, Clone)]
pub(crate) struct ModelArgs {
    /// Model profile: ply (the uncompressed .ply) or sogs-sh0 (a .zip of 6 compressed files).
    #[arg(long, default_value = "ply", value_parser = ["ply", "sogs-sh0"])]
    pub(crate) profile: String,
    /// Model quality.
    #[arg(long, default_value = "hd", value_parser = ["sd", "hd"])]
    pub(crate) quality: String,
    /// Ask for the level-of-detail hierarchy (several model files).
    #[arg(long)]
    pub(crate) lod: bool,
    /// Model URLs from the origin instead of the CDN (use_cdn=false).
    #[arg(long)]
    pub(crate) no_cdn: bool,
}

/// `upload apertur ...`.
#[derive(Args, Debug, Clone)]
pub(crate) struct AperturCommandArgs {
    /// Connection settings.
    #[command(flatten)]
    pub(crate) conn: AperturConnArgs,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: AperturCommand,
}

/// How `upload apertur ...` reaches the API.
#[derive(Args, Debug, Clone)]
pub(crate) struct AperturConnArgs {
    /// API token (else APERTUR_TOKEN, else UPLOAD_TOKEN).
    #[arg(long, global = true, value_name = "TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub(crate) token: Option<Secret>,
    /// Command that prints a fresh token on stdout; run when no token is given and after a 401.
    #[arg(long, global = true, env = "UPLOAD_TOKEN_COMMAND", value_name = "CMD")]
    pub(crate) token_command: Option<String>,
    /// API origin (default https://api.apertur.ca; the SDK's https://api.aptr.ca works too).
    #[arg(long, global = true, env = "UPLOAD_ENDPOINT", value_name = "URL")]
    pub(crate) endpoint: Option<String>,
    /// Secret for request signing (X-Aptr-Timestamp / X-Aptr-Signature headers).
    #[arg(long, global = true, env = "APERTUR_SIGNING_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub(crate) signing_secret: Option<Secret>,
    /// Retries of a failed idempotent request.
    #[arg(long, global = true, env = "UPLOAD_RETRIES", default_value_t = 10)]
    pub(crate) retries: u32,
}

/// Apertur subcommands.
#[derive(Subcommand, Debug, Clone)]
pub(crate) enum AperturCommand {
    /// Per-image, per-destination delivery status of a session.
    Status {
        /// The session id.
        session: String,
    },
    /// Download the images of a long-polling session into a directory; each image is
    /// acknowledged only once it is safely on disk (written, fsynced, renamed).
    Poll {
        /// The session id.
        session: String,
        /// Where to write the images.
        #[arg(long = "output-dir", short = 'o', value_name = "DIR")]
        output_dir: PathBuf,
        /// Stop once the queue is empty instead of waiting for more images.
        #[arg(long)]
        once: bool,
        /// Time between polls of an empty queue: 3s, 500ms.
        #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration_arg)]
        interval: std::time::Duration,
        /// Stop after this long (default: run until Ctrl-C, or until the queue is empty with --once).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
        timeout: Option<std::time::Duration>,
        /// Download bandwidth.
        #[command(flatten)]
        rate: Box<LimitRateArgs>,
    },
    /// Show or change a session.
    Session {
        /// What to do.
        #[command(subcommand)]
        command: AperturSessionCommand,
    },
    /// List, create, update, delete or test a project's destinations.
    Destinations {
        /// What to do.
        #[command(subcommand)]
        command: AperturDestinationsCommand,
    },
}

/// `upload apertur session ...`.
#[derive(Subcommand, Debug, Clone)]
pub(crate) enum AperturSessionCommand {
    /// Show a session's settings and limits.
    Get {
        /// The session id.
        session: String,
    },
    /// Change a session's settings.
    Update {
        /// The session id.
        session: String,
        /// New expiry, ISO 8601.
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
        /// New image limit.
        #[arg(long, value_name = "N")]
        max_images: Option<u32>,
        /// Accepted MIME type (image/jpeg, image/png, image/webp, image/heic). Repeatable.
        #[arg(long = "allowed-mime-type", value_name = "MIME")]
        allowed_mime_types: Vec<String>,
        /// Maximum width or height in pixels.
        #[arg(long, value_name = "PIXELS")]
        max_image_dimension: Option<u32>,
        /// Maximum image size in MB.
        #[arg(long, value_name = "MB")]
        max_image_size_mb: Option<u32>,
        /// New session password (4 to 128 characters).
        #[arg(long, conflicts_with = "remove_password", value_parser = parse_secret)]
        password: Option<Secret>,
        /// Remove the session's password.
        #[arg(long)]
        remove_password: bool,
    },
}

/// `upload apertur destinations ...`.
#[derive(Subcommand, Debug, Clone)]
pub(crate) enum AperturDestinationsCommand {
    /// List the project's destinations.
    List {
        /// Project id.
        #[arg(long, env = "APERTUR_PROJECT")]
        project: String,
    },
    /// Create a destination (s3, azure_blob, ftp, webdav, webhook; OAuth types are created in the dashboard).
    Create {
        /// Project id.
        #[arg(long, env = "APERTUR_PROJECT")]
        project: String,
        /// Destination type.
        #[arg(long = "type", value_name = "TYPE")]
        kind: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// `config` as a JSON object.
        #[arg(long, value_name = "JSON")]
        config: Option<String>,
        /// One `config` entry K=V (V is parsed as JSON when valid, else kept as text). Repeatable.
        #[arg(long = "config-entry", value_name = "K=V")]
        config_entries: Vec<String>,
    },
    /// Update a destination.
    Update {
        /// Project id.
        #[arg(long, env = "APERTUR_PROJECT")]
        project: String,
        /// Destination id.
        destination: String,
        /// New display name.
        #[arg(long)]
        name: Option<String>,
        /// New `config` as a JSON object.
        #[arg(long, value_name = "JSON")]
        config: Option<String>,
        /// One `config` entry K=V. Repeatable.
        #[arg(long = "config-entry", value_name = "K=V")]
        config_entries: Vec<String>,
        /// Activate (true) or deactivate (false).
        #[arg(long, value_name = "BOOL")]
        active: Option<bool>,
    },
    /// Delete a destination.
    Delete {
        /// Project id.
        #[arg(long, env = "APERTUR_PROJECT")]
        project: String,
        /// Destination id.
        destination: String,
    },
    /// Send a test delivery to a destination (exit 6 when it fails).
    Test {
        /// Project id.
        #[arg(long, env = "APERTUR_PROJECT")]
        project: String,
        /// Destination id.
        destination: String,
    },
}

/// `upload config ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum ConfigCommand {
    /// Print where the configuration file is read from.
    Path,
    /// Print the configuration as read, secrets redacted.
    Show,
}

/// `upload auth ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum AuthCommand {
    /// Sign in (or take the given token), make one cheap read-only call and say who the token
    /// is for when the API tells. Exit 0 when the API accepts the token, 3 when not.
    Check(Box<AuthCheckArgs>),
}

/// `upload auth check`.
#[derive(Args, Debug, Clone)]
pub(crate) struct AuthCheckArgs {
    /// The vendor.
    #[arg(long, short = 'p', env = "UPLOAD_PROVIDER", value_enum)]
    pub(crate) provider: Option<ProviderName>,
    /// API token to check instead of signing in.
    #[arg(long, value_name = "TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub(crate) token: Option<Secret>,
    /// Command that prints a token on stdout.
    #[arg(long, env = "UPLOAD_TOKEN_COMMAND", value_name = "CMD")]
    pub(crate) token_command: Option<String>,
    /// API origin replacing the documented one.
    #[arg(long, env = "UPLOAD_ENDPOINT", value_name = "URL")]
    pub(crate) endpoint: Option<String>,
    /// Where the token cache is kept (default $XDG_STATE_HOME/upload, else ~/.local/state/upload; Windows: %LOCALAPPDATA%\upload).
    #[arg(long, env = "UPLOAD_STATE_DIR", value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// TruVideo: the release-candidate environment.
    #[arg(long)]
    pub(crate) rc: bool,
    /// Apertur: secret for request signing (X-Aptr-Timestamp / X-Aptr-Signature headers).
    #[arg(long, env = "APERTUR_SIGNING_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub(crate) signing_secret: Option<Secret>,
    /// Sign-in credentials.
    #[command(flatten)]
    pub(crate) sign_in: SignInArgs,
}

/// Built-in sign-in: the tool fetches (and renews) its own token.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Sign-in")]
pub(crate) struct SignInArgs {
    /// Teleport API key client id (client-credentials sign-in).
    #[arg(long, env = "TELEPORT_CLIENT_ID", value_name = "ID")]
    pub(crate) client_id: Option<String>,
    /// Teleport API key client secret.
    #[arg(long, env = "TELEPORT_CLIENT_SECRET", value_name = "SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub(crate) client_secret: Option<Secret>,
    /// TruVideo api key (signed login).
    #[arg(long, env = "TRUVIDEO_API_KEY", value_name = "KEY", hide_env_values = true, value_parser = parse_secret)]
    pub(crate) api_key: Option<Secret>,
    /// TruVideo secret key (signs the login; never sent).
    #[arg(long, env = "TRUVIDEO_SECRET_KEY", value_name = "KEY", hide_env_values = true, value_parser = parse_secret)]
    pub(crate) secret_key: Option<Secret>,
    /// TruVideo external id (the tenant).
    #[arg(long, env = "TRUVIDEO_EXTERNAL_ID", value_name = "ID")]
    pub(crate) external_id: Option<String>,
    /// Sign-in origin replacing the documented one (Teleport https://signin.teleport.varjo.com,
    /// TruVideo https://sdk-mobile-api.truvideo.com).
    #[arg(long, env = "UPLOAD_AUTH_ENDPOINT", value_name = "URL")]
    pub(crate) auth_endpoint: Option<String>,
}

/// Which vendor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProviderName {
    /// Varjo Teleport (.zip of images or .mp4).
    Teleport,
    /// TruVideo Upload V3.
    Truvideo,
    /// Uplift (.mov, one S3 POST).
    Uplift,
    /// Apertur (images into an upload session).
    Apertur,
}

/// Output settings, valid everywhere.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Output")]
pub(crate) struct OutputArgs {
    /// Print results as JSON, one object per line on stdout (progress and logs stay on stderr).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// No progress output.
    #[arg(long, short, global = true)]
    pub(crate) quiet: bool,
    /// More logs on stderr (-v info, -vv debug: requests with redacted URLs, statuses, retries).
    #[arg(long, short, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Colour on stderr (logs, bars, results): auto = only on a terminal, and not when NO_COLOR
    /// is set.
    #[arg(long, global = true, value_enum, env = "UPLOAD_COLOR", value_name = "WHEN", default_value = "auto")]
    pub(crate) color: crate::cli::ui::ColorWhen,
}

/// An upload.
#[derive(Args, Debug, Clone)]
pub(crate) struct UploadArgs {
    /// Files to upload (with --emulate and none given: a generated sample, as `upload demo`).
    #[arg(required_unless_present_any = ["emulate", "files_from"], value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,

    /// Also upload the files listed in LIST, one path a line (`-`: standard input; blank lines
    /// ignored), e.g. `find DIR -type f -print0 | upload --files-from - -0 ...`. Each path is a
    /// file, taken as listed (relative to the current directory, not walked); one that cannot be
    /// read is reported by path and the others still go.
    #[arg(long, value_name = "LIST")]
    pub(crate) files_from: Option<PathBuf>,

    /// The paths of --files-from are separated by NUL bytes (find -print0, fd -0, xargs -0),
    /// not newlines: any file name works.
    #[arg(long = "null", short = '0', requires = "files_from")]
    pub(crate) null: bool,

    /// The vendor to upload to.
    #[arg(long, short = 'p', env = "UPLOAD_PROVIDER", value_enum)]
    pub(crate) provider: Option<ProviderName>,

    /// The given token and the token command.
    #[command(flatten)]
    pub(crate) tokens: TokenArgs,

    /// API origin replacing the documented one (paths are kept below it).
    #[arg(long, env = "UPLOAD_ENDPOINT", value_name = "URL")]
    pub(crate) endpoint: Option<String>,

    /// Parts (or Apertur images) in flight at once: auto (tuned from the measured throughput,
    /// from 4 up to --max-concurrency) or a number (1-256) that pins it.
    #[arg(long, short = 'c', env = "UPLOAD_CONCURRENCY", value_name = "auto|N", default_value = "auto", value_parser = parse_concurrency)]
    pub(crate) concurrency: AutoCount,

    /// Most parts in flight that --concurrency auto goes up to (1-256).
    #[arg(long, env = "UPLOAD_MAX_CONCURRENCY", value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) max_concurrency: u16,

    /// Retries of a failed part or idempotent request.
    #[arg(long, env = "UPLOAD_RETRIES", default_value_t = 10)]
    pub(crate) retries: u32,

    /// Part size where the client chooses it (TruVideo): 5MiB, 64MiB, 1GiB...
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub(crate) part_size: Option<u64>,

    /// Send a checksum with each part (Content-MD5).
    #[arg(long, value_enum)]
    pub(crate) checksum: Option<Checksum>,

    /// Where resume journals and caches are kept (default $XDG_STATE_HOME/upload, else ~/.local/state/upload; Windows: %LOCALAPPDATA%\upload).
    #[arg(long, env = "UPLOAD_STATE_DIR", value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,

    /// Total bandwidth of the run, all files and connections together, in bytes per second:
    /// 20MiB, 8M, off; or a timetable of local times, "08:00,4MiB 12:00,10MiB 18:00,off", with
    /// Mon-08:00,RATE entries for single days.
    #[arg(long, env = "UPLOAD_LIMIT_RATE", value_name = "RATE")]
    pub(crate) limit_rate: Option<String>,

    /// Start over instead of resuming an interrupted upload of the same file.
    #[arg(long)]
    pub(crate) no_resume: bool,

    /// When another run is uploading the same file, wait for it to end (at most DURATION,
    /// default 1h; Ctrl-C stops the wait) instead of exiting with code 8; then the file is
    /// found done, or carried on.
    #[arg(long, value_name = "DURATION", num_args = 0..=1, require_equals = true, default_missing_value = "1h", value_parser = parse_duration_arg)]
    pub(crate) wait_for_lock: Option<std::time::Duration>,

    /// Validate everything locally and print the plan; make no request.
    #[arg(long)]
    pub(crate) dry_run: bool,

    /// Start the local emulator in-process and upload there instead (no account needed);
    /// then show the requests made and what the emulator stored.
    #[arg(long)]
    pub(crate) emulate: bool,

    /// Walk directories given as FILE into their subdirectories too.
    #[arg(long, short = 'r')]
    pub(crate) recursive: bool,

    /// Only files (found in directories) whose path matches this glob, e.g. '*.mp4'. Repeatable.
    #[arg(long, value_name = "GLOB")]
    pub(crate) include: Vec<String>,

    /// Leave out files (found in directories) whose path matches this glob. Repeatable.
    #[arg(long, value_name = "GLOB")]
    pub(crate) exclude: Vec<String>,

    /// Include hidden files and directories (names starting with '.') when walking directories.
    #[arg(long)]
    pub(crate) hidden: bool,

    /// Files uploaded at once: auto (4, and up to 128 small files while their bytes in flight stay
    /// under 128 MiB) or a number (1-256) that pins it; they share the --concurrency part budget.
    #[arg(long = "files", value_name = "auto|N", default_value = "auto", value_parser = parse_files)]
    pub(crate) files_at_once: AutoCount,

    /// Stop at the first file that fails (the default carries on with the others).
    #[arg(long)]
    pub(crate) fail_fast: bool,

    /// Upload files again even when the state directory records them as already uploaded.
    #[arg(long)]
    pub(crate) force: bool,

    /// After the upload, follow processing/delivery until it ends (Teleport, Uplift, Apertur).
    #[arg(long, conflicts_with = "no_wait")]
    pub(crate) wait: bool,

    /// Stop once the upload is accepted; do not poll for processing (TruVideo waits by default).
    #[arg(long)]
    pub(crate) no_wait: bool,

    /// Longest time to wait for processing or delivery: 90s, 30m, 2h [default: 1h; Apertur 80m,
    /// which covers its deliveries' retries (5 s, 30 s, 2 min, 10 min, 1 h)]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub(crate) wait_timeout: Option<std::time::Duration>,

    /// First interval between status polls (grows with backoff): 2s, 500ms.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration_arg)]
    pub(crate) poll_interval: std::time::Duration,

    /// Tags: `K=V` for TruVideo (media.tags), free text such as `order:456` for Apertur. Repeatable.
    #[arg(long = "tag", value_name = "TAG")]
    pub(crate) tags: Vec<String>,

    /// Teleport options.
    #[command(flatten)]
    pub(crate) teleport: TeleportArgs,

    /// TruVideo options.
    #[command(flatten)]
    pub(crate) truvideo: TruvideoArgs,

    /// Uplift options.
    #[command(flatten)]
    pub(crate) uplift: UpliftArgs,

    /// Apertur options.
    #[command(flatten)]
    pub(crate) apertur: AperturArgs,

    /// Built-in sign-in.
    #[command(flatten)]
    pub(crate) sign_in: SignInArgs,
}

/// `--checksum`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Checksum {
    /// Content-MD5 on every part.
    Md5,
}

/// Teleport settings.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Teleport")]
pub(crate) struct TeleportArgs {
    /// Capture name (default: the file name).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Input format (default: .zip → bulk-images, .mp4 → video).
    #[arg(long, value_parser = ["bulk-images", "video"])]
    pub(crate) format: Option<String>,
    /// With --format bulk-images and a directory: write its zip to FILE first, then upload
    /// FILE (default: the zip is streamed from the images and never written to disk).
    #[arg(long, value_name = "FILE")]
    pub(crate) zip_to: Option<PathBuf>,
}

/// TruVideo settings.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "TruVideo")]
pub(crate) struct TruvideoArgs {
    /// Use the release-candidate API (https://upload-api-rc.truvideo.com).
    #[arg(long)]
    pub(crate) rc: bool,
    /// media.title.
    #[arg(long)]
    pub(crate) title: Option<String>,
    /// media.creator (0 to 255 characters).
    #[arg(long)]
    pub(crate) creator: Option<String>,
    /// media.duration in milliseconds.
    #[arg(long, value_name = "MS")]
    pub(crate) duration_ms: Option<u64>,
    /// media.resolution.
    #[arg(long, value_parser = ["LOW", "NORMAL", "HIGH"], ignore_case = true)]
    pub(crate) resolution: Option<String>,
    /// media.fileType (default: from the extension, e.g. MP4, MOV, JPG, PDF).
    #[arg(long, value_name = "TYPE")]
    pub(crate) file_type: Option<String>,
    /// Add the media to the permanent library (insights.isLibrary = true).
    #[arg(long)]
    pub(crate) library: bool,
    /// Keep the media out of reports (insights.includeInReport = false).
    #[arg(long)]
    pub(crate) no_report: bool,
    /// metadata entry K=V (V is parsed as JSON when it is valid JSON, else kept as text). Repeatable.
    #[arg(long = "metadata", value_name = "K=V")]
    pub(crate) metadata: Vec<String>,
    /// metadata as a JSON object, merged under the --metadata entries.
    #[arg(long, value_name = "JSON")]
    pub(crate) metadata_json: Option<String>,
}

/// Uplift settings.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Uplift")]
pub(crate) struct UpliftArgs {
    /// Athlete UUID.
    #[arg(long, env = "UPLIFT_ATHLETE_ID", value_name = "UUID")]
    pub(crate) athlete_id: Option<String>,
    /// Session group UUID (default: a new random one, printed in the result).
    #[arg(long, value_name = "UUID")]
    pub(crate) session_group_id: Option<String>,
    /// movement_attributes.activity, e.g. golf.
    #[arg(long)]
    pub(crate) activity: Option<String>,
    /// movement_attributes.movement, e.g. full_swing.
    #[arg(long)]
    pub(crate) movement: Option<String>,
    /// camera_configuration.camera_setup_selection, e.g. single.down_the_line.
    #[arg(long, value_name = "SETUP")]
    pub(crate) camera_setup: Option<String>,
    /// camera_configuration.camera_orientation: portrait or landscape.
    #[arg(long)]
    pub(crate) orientation: Option<String>,
    /// Extra camera_configuration key K=V. Repeatable.
    #[arg(long = "camera-config", value_name = "K=V")]
    pub(crate) camera_config: Vec<String>,
    /// Extra movement_attributes key K=V. Repeatable.
    #[arg(long = "movement-attr", value_name = "K=V")]
    pub(crate) movement_attr: Vec<String>,
    /// file_name sent to Uplift (default: the file's name; must end in .mov).
    #[arg(long, value_name = "NAME")]
    pub(crate) file_name: Option<String>,
    /// capture_time: RFC 3339, or `mtime` for the file's modification time (default: server time).
    #[arg(long, value_name = "TIME")]
    pub(crate) capture_time: Option<String>,
}

/// Apertur settings.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Apertur")]
pub(crate) struct AperturArgs {
    /// Upload into this existing session instead of creating one.
    #[arg(long, value_name = "SESSION_ID")]
    pub(crate) session: Option<String>,
    /// Destination id for the new session. Repeatable.
    #[arg(long = "destination", value_name = "DESTINATION_ID")]
    pub(crate) destinations: Vec<String>,
    /// Session lifetime in hours (1 to 168).
    #[arg(long, value_name = "HOURS", conflicts_with = "expires_at")]
    pub(crate) expires_in_hours: Option<u32>,
    /// Session expiry as an ISO 8601 time.
    #[arg(long, value_name = "TIME")]
    pub(crate) expires_at: Option<String>,
    /// Maximum number of images in the session.
    #[arg(long, value_name = "N")]
    pub(crate) max_images: Option<u32>,
    /// Accepted MIME type (image/jpeg, image/png, image/webp, image/heic). Repeatable.
    #[arg(long = "allowed-mime-type", value_name = "MIME")]
    pub(crate) allowed_mime_types: Vec<String>,
    /// Maximum width or height in pixels.
    #[arg(long, value_name = "PIXELS")]
    pub(crate) max_image_dimension: Option<u32>,
    /// Session password (4 to 128 characters); sent as x-session-password when uploading.
    #[arg(long, env = "APERTUR_SESSION_PASSWORD", hide_env_values = true, value_parser = parse_secret)]
    pub(crate) password: Option<Secret>,
    /// Enable long polling (pull-based delivery) on the new session.
    #[arg(long)]
    pub(crate) long_polling: bool,
    /// Secret for request signing (X-Aptr-Timestamp / X-Aptr-Signature headers).
    #[arg(long, env = "APERTUR_SIGNING_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub(crate) signing_secret: Option<Secret>,
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    parse_duration(s)
}

fn parse_connect_timeout_arg(s: &str) -> Result<std::time::Duration, String> {
    parse_connect_timeout(s)
}

fn parse_idle_timeout_arg(s: &str) -> Result<std::time::Duration, String> {
    parse_timeout("idle timeout", s)
}

fn parse_speed_time_arg(s: &str) -> Result<std::time::Duration, String> {
    parse_timeout("speed time", s)
}

/// Parses a timeout named `what` (`idle timeout`): a [`parse_duration`] above zero and at most
/// [`MAX_CONNECT_TIMEOUT`] (an hour).
pub(crate) fn parse_timeout(what: &str, s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{what} '{s}' must be more than zero: e.g. 500ms or 10s"));
    }
    if d > MAX_CONNECT_TIMEOUT {
        return Err(format!("{what} '{s}' is too long: at most 1h"));
    }
    Ok(d)
}

/// The longest `--connect-timeout` (a connection that takes longer is not coming).
pub(crate) const MAX_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Parses a `--connect-timeout`: a [`parse_duration`] above zero and at most
/// [`MAX_CONNECT_TIMEOUT`].
pub(crate) fn parse_connect_timeout(s: &str) -> Result<std::time::Duration, String> {
    parse_timeout("connect timeout", s)
}

/// Parses `500ms`, `90s`, `90`, `30m`, `2h`.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("invalid duration '{s}': use e.g. 500ms, 90s, 30m, 2h"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "" | "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        "d" => v * 86400.0,
        _ => return Err(format!("invalid duration unit in '{s}': use ms, s, m or h")),
    };
    // A deadline is `now + duration`: beyond a year it overflows some clocks and is a typo anyway.
    if !secs.is_finite() || secs > MAX_DURATION_SECS {
        return Err(format!("duration '{s}' is too long: at most 8760h (one year)"));
    }
    std::time::Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration '{s}'"))
}

/// The longest duration the command line takes (one year).
pub(crate) const MAX_DURATION_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// `auto`, or a number that pins a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AutoCount {
    /// Chosen by the tool as it goes.
    Auto,
    /// Pinned.
    Fixed(u16),
}

impl std::fmt::Display for AutoCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AutoCount::Auto => f.write_str("auto"),
            AutoCount::Fixed(n) => write!(f, "{n}"),
        }
    }
}

fn parse_auto_count(s: &str, max: u16) -> Result<AutoCount, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("auto") {
        return Ok(AutoCount::Auto);
    }
    match s.parse::<u16>() {
        Ok(n) if (1..=max).contains(&n) => Ok(AutoCount::Fixed(n)),
        _ => Err(format!("'{s}' is neither auto nor a number from 1 to {max}")),
    }
}

fn parse_concurrency(s: &str) -> Result<AutoCount, String> {
    parse_auto_count(s, 256)
}

fn parse_files(s: &str) -> Result<AutoCount, String> {
    parse_auto_count(s, 256)
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    crate::size::parse_size(s)
}
