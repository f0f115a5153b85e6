//! Command-line arguments (clap derive). Converted into validated settings by
//! [`crate::settings`]; the engine never sees these types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  upload scan.zip --provider teleport                      # bulk-images, from the .zip
  upload walk.mp4 --provider teleport --name Walkthrough --json
  upload walkaround.mp4 --provider truvideo --title \"BMW Engine diagnostic\" --tag brand=Jeep
  upload swing-001.mov --provider uplift --athlete-id aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee \\
      --activity golf --movement full_swing --camera-setup single.down_the_line --orientation landscape
  upload photos/*.jpg --provider apertur --destination d290f1ee-6c54-4b01-90e6-d701748f0851 --wait
  upload scan.zip --provider teleport --dry-run            # validate and print the plan only

Tokens: --token, else TELEPORT_TOKEN / TRUVIDEO_TOKEN / UPLIFT_TOKEN / APERTUR_TOKEN, else UPLOAD_TOKEN;
--token-command CMD (env UPLOAD_TOKEN_COMMAND) prints a fresh one and is run again after a 401.
Exit codes: 0 ok, 2 bad input, 3 authentication, 4 rejected by the provider, 5 network/server,
6 processing failed, 7 timed out waiting, 130 interrupted (run the same command again to resume).";

/// Upload large media files to Varjo Teleport, TruVideo, Uplift and Apertur.
#[derive(Parser, Debug)]
#[command(name = "upload", version, about, after_help = EXAMPLES, args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Cli {
    /// A subcommand instead of an upload.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// What to upload and how.
    #[command(flatten)]
    pub upload: UploadArgs,
    /// Output settings.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Which vendor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProviderName {
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
pub struct OutputArgs {
    /// Print results as JSON, one object per line on stdout (progress and logs stay on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// More logs on stderr (-v info, -vv debug: requests with redacted URLs, statuses, retries).
    #[arg(long, short, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// An upload.
#[derive(Args, Debug, Clone)]
pub struct UploadArgs {
    /// Files to upload.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// The vendor to upload to.
    #[arg(long, short = 'p', env = "UPLOAD_PROVIDER", value_enum)]
    pub provider: Option<ProviderName>,

    /// API token (else the provider's env var, e.g. TELEPORT_TOKEN, else UPLOAD_TOKEN).
    #[arg(long, value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Command that prints a fresh token on stdout; run when no token is given and after a 401.
    #[arg(long, env = "UPLOAD_TOKEN_COMMAND", value_name = "CMD")]
    pub token_command: Option<String>,

    /// API origin replacing the documented one (paths are kept below it).
    #[arg(long, env = "UPLOAD_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,

    /// Parts (or files) in flight at once.
    #[arg(long, short = 'c', env = "UPLOAD_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,

    /// Retries of a failed part or idempotent request.
    #[arg(long, env = "UPLOAD_RETRIES", default_value_t = 10)]
    pub retries: u32,

    /// Part size where the client chooses it (TruVideo): 5MiB, 64MiB, 1GiB...
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub part_size: Option<u64>,

    /// Send a checksum with each part (Content-MD5).
    #[arg(long, value_enum)]
    pub checksum: Option<Checksum>,

    /// Where resume journals and caches are kept (default $XDG_STATE_HOME/upload).
    #[arg(long, env = "UPLOAD_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Start over instead of resuming an interrupted upload of the same file.
    #[arg(long)]
    pub no_resume: bool,

    /// Validate everything locally and print the plan; make no request.
    #[arg(long)]
    pub dry_run: bool,

    /// Teleport options.
    #[command(flatten)]
    pub teleport: TeleportArgs,
}

/// `--checksum`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Checksum {
    /// Content-MD5 on every part.
    Md5,
}

/// Teleport settings.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Teleport")]
pub struct TeleportArgs {
    /// Capture name (default: the file name).
    #[arg(long)]
    pub name: Option<String>,
    /// Input format (default: .zip → bulk-images, .mp4 → video).
    #[arg(long, value_parser = ["bulk-images", "video"])]
    pub format: Option<String>,
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    crate::size::parse_size(s)
}
