//! `upload`: uploads large media files to Varjo Teleport, TruVideo, Uplift and Apertur
//! through the presigned S3 URLs they hand out.
//!
//! The library is [`Uploader`] over the transfer machinery in [`engine`] and one module per
//! vendor in [`providers`]. Depend on it with `default-features = false` to leave out the
//! command line: the `cli` feature (on by default) adds the modules of the `upload` binary
//! (argument parsing, terminal output, the configuration file; not public API), and `emulate`
//! adds `upload demo` and `--emulate` (the emulator in-process).

#![warn(missing_docs)]

/// Declares the modules of the command line (the `cli` feature): used by the `upload`
/// binary, not library API.
macro_rules! cli_modules {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "cli")]
        #[doc(hidden)]
        pub mod $name;
    )*};
}

cli_modules!(auth, batch, cli, commands, config, settings, ui, watch);
#[cfg(feature = "emulate")]
#[doc(hidden)]
pub mod demo;
pub mod engine;
pub mod error;
pub mod providers;
pub mod redact;
pub mod size;
pub mod uploader;

#[cfg(feature = "cli")]
use std::io::Write;

#[cfg(feature = "cli")]
use tokio_util::sync::CancellationToken;

pub use engine::progress::{Event, Progress};
pub use error::{Error, Result};
pub use providers::{Provider, UploadOutcome};
pub use uploader::Uploader;

#[cfg(feature = "cli")]
#[doc(hidden)]
/// Runs a parsed command line. Returns the exit code of a run whose failures were already
/// reported per file; an `Err` is a failure of the whole run, for the caller to print.
pub async fn run(cli: cli::Cli) -> Result<i32> {
    engine::http::set_ca_bundle(cli.network.ca_bundle.as_deref())?;
    // `UPLOAD_SENDFILE=0` sends plain-http parts through reqwest instead of sendfile(2).
    let sendfile = std::env::var("UPLOAD_SENDFILE").unwrap_or_default();
    engine::zerocopy::set_enabled(!matches!(sendfile.to_ascii_lowercase().as_str(), "0" | "off" | "false" | "no"));
    // Every client of the run is built after this (uploads, sign-in, downloads, subcommands).
    let offline = matches!(cli.command, Some(cli::Command::Config { .. } | cli::Command::Completions { .. }));
    if !offline {
        let flag = cli.network.connect_timeout;
        let file = if flag.is_some() { config::ConfigFile::default() } else { config::ConfigFile::load()? };
        engine::http::set_connect_timeout(settings::connect_timeout(flag, &file)?);
    }
    if let Some(cmd) = cli.command {
        return run_command(cmd, cli.output).await;
    }
    if cli.upload.emulate {
        #[cfg(feature = "emulate")]
        return demo::run_emulated(cli).await;
        #[cfg(not(feature = "emulate"))]
        return Err(no_emulator());
    }
    let cancel = CancellationToken::new();
    install_ctrl_c(cancel.clone());
    let settings = settings::UploadSettings::from_args(&cli.upload, &cli.output)?;
    let provider = settings.provider()?;
    batch::run(&cli, &settings, provider.as_ref(), cancel).await
}

#[cfg(feature = "cli")]
async fn run_command(cmd: cli::Command, output: cli::OutputArgs) -> Result<i32> {
    match cmd {
        #[cfg(feature = "emulate")]
        cli::Command::Demo { provider, size } => demo::demo(provider, size, output).await,
        #[cfg(not(feature = "emulate"))]
        cli::Command::Demo { .. } => Err(no_emulator()),
        cli::Command::Auth { command: cli::AuthCommand::Check(args) } => auth::check(&args, &output).await,
        cli::Command::Config { command } => {
            let path = config::ConfigFile::path();
            match command {
                cli::ConfigCommand::Path => match path {
                    Some(p) => println!("{}", p.display()),
                    None => {
                        return Err(Error::usage(
                            "no configuration path: HOME is not set",
                            "set XDG_CONFIG_HOME or UPLOAD_CONFIG",
                        ));
                    }
                },
                cli::ConfigCommand::Show => {
                    let file = config::ConfigFile::load()?;
                    let shown = path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
                    let exists = path.as_ref().is_some_and(|p| p.exists());
                    println!("# {shown}{}", if exists { "" } else { " (not found: defaults)" });
                    print!("{}", file.redacted_toml());
                }
            }
            Ok(0)
        }
        cli::Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut c = cli::Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut c, "upload", &mut script);
            ignore_broken_pipe(std::io::stdout().lock().write_all(&script))?;
            Ok(0)
        }
        cli::Command::Teleport { command } => commands::teleport::run(command, &output).await,
        cli::Command::Apertur(args) => {
            let cancel = CancellationToken::new();
            install_ctrl_c(cancel.clone());
            providers::apertur_cmd::run(*args, &output, cancel).await
        }
        cli::Command::Watch(args) => watch::run(*args, output).await,
        cli::Command::Pending(args) => commands::pending::run(*args, &output).await,
    }
}

#[cfg(all(feature = "cli", not(feature = "emulate")))]
fn no_emulator() -> Error {
    Error::usage(
        "this upload was built without the emulator",
        "build it with the default features (or `--features emulate`) for `upload demo` and --emulate",
    )
}

#[cfg(feature = "cli")]
/// First Ctrl-C cancels (parts in flight get a few seconds, the journal is kept); a second
/// one exits at once.
pub(crate) fn install_ctrl_c(cancel: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            ui::notice("upload: stopping: finishing the parts in flight (press Ctrl-C again to quit now)");
            cancel.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                ui::clear_board();
                eprintln!("upload: interrupted: run the same command again to resume");
                std::process::exit(error::exit::INTERRUPTED);
            }
        }
    });
}

#[cfg(feature = "cli")]
/// A closed stdout (`| head`) is not an error.
pub(crate) fn ignore_broken_pipe(r: std::io::Result<()>) -> Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::File { path: "<stdout>".into(), source: e }),
        Ok(()) => Ok(()),
    }
}

#[cfg(feature = "cli")]
#[doc(hidden)]
/// Writes `upload: error: ...` and the hint to stderr.
pub fn report_error(err: &Error) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "upload: error: {err}");
    if let Some(h) = err.hint()
        && !h.is_empty()
    {
        let _ = writeln!(stderr, "  hint: {h}");
    }
}
