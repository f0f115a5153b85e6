//! The command line of the `upload` binary (feature `cli`): clap, settings, the configuration
//! file, terminal output, batch runs, `watch` and the subcommands. Private to the crate; the
//! binary calls [`main`] only.

pub(crate) mod args;
pub(crate) mod batch;
pub(crate) mod commands;
pub(crate) mod config;
pub(crate) mod dirs;
pub(crate) mod report;
pub(crate) mod settings;
pub(crate) mod signals;
pub(crate) mod ui;
pub(crate) mod version;
pub(crate) mod watch;

use std::io::Write;

use tokio_util::sync::CancellationToken;

use crate::engine;
use crate::error::{Error, Result};

/// glibc gives each thread that allocates its own arena (up to 8 a core), and each keeps the
/// pages it touched: the blocking threads of a run of 100,000 small files (file reads, fsyncs,
/// compactions of done records) took peak RSS from 65 to 94 MiB that way. Two arenas serve
/// two busy async workers; `MALLOC_ARENA_MAX`, when set, is the user's choice and stays. The
/// binary's own process only: the library sets nothing process-wide.
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// The most threads the run's blocking pool may have (tokio's default is 512). Its work is
/// short: a state file's write and fsync, a read the page cache could not serve, a hash or a
/// zip. Files at once each wait on such work (up to `--files auto`'s 128), and every thread
/// the pool starts for them stays 10 s with its stack and its allocator cache: `watch` over
/// 100,000 files grew to 125 threads and 66 MiB; with 16, 20 threads, 59 MiB, and 12 % more
/// files a second (fewer switches). Every task still runs: past 16 they queue.
const BLOCKING_THREADS: usize = 16;

/// The `upload` binary: parse, set up the terminal and logs, run, map the error to an exit code.
pub fn main() -> std::process::ExitCode {
    few_malloc_arenas();
    // No argument at all: how to start, not clap's bare "required arguments" error.
    if std::env::args_os().len() <= 1 {
        eprint!("{}", args::NO_ARGUMENT);
        return std::process::ExitCode::from(report::exit::USAGE as u8);
    }
    let mut command = args::command();
    let cli = command
        .clone()
        .try_get_matches()
        .and_then(|m| <args::Cli as clap::FromArgMatches>::from_arg_matches(&m))
        .map_err(|e| e.format(&mut command))
        .unwrap_or_else(|e| e.exit());
    let colour = ui::init_color(cli.output.color);
    #[cfg(feature = "emulate")]
    let serves_emulator = matches!(cli.command, Some(args::Command::Emulator(_)));
    #[cfg(not(feature = "emulate"))]
    let serves_emulator = false;
    if serves_emulator {
        // The emulator's own logs, as `upload-emulator` writes them (RUST_LOG, default info).
        #[cfg(feature = "emulate")]
        upload_emulator::cli::init_logging();
    } else {
        init_tracing(cli.output.verbose, colour);
    }
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(BLOCKING_THREADS).build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("upload: error: cannot start the async runtime: {e}");
                return std::process::ExitCode::from(1);
            }
        };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            report_error(&err);
            crate::cli::report::exit_code(&err)
        }
    };
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::ExitCode::from(code.clamp(0, 255) as u8)
}

/// Logs on stderr (above the progress bars when they are drawn), coloured only when `colour`
/// (`--color`: by default on a terminal, never into a file or a pipe).
fn init_tracing(verbose: u8, colour: bool) {
    let level = match verbose {
        0 => "warn",
        1 => "upload=info",
        _ => "upload=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("UPLOAD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ui::log_writer)
        .with_ansi(colour)
        .with_target(false)
        .init();
}

/// Runs a parsed command line. Returns the exit code of a run whose failures were already
/// reported per file; an `Err` is a failure of the whole run, for the caller to print.
pub(crate) async fn run(cli: args::Cli) -> Result<i32> {
    // `UPLOAD_SENDFILE` (which chose the zero-copy path of plain-http parts, now removed) is
    // still accepted and ignored: env vars are a contract.
    // The run's trust roots and time model, merged once and handed to every client and
    // executor of the run (uploads, sign-in, downloads, subcommands).
    let offline = matches!(
        cli.command,
        Some(args::Command::Config { .. } | args::Command::Completions { .. } | args::Command::Man { .. })
    );
    #[cfg(feature = "emulate")]
    let offline = offline || matches!(cli.command, Some(args::Command::Emulator(_)));
    let inv = if offline {
        let net = engine::http::NetOptions::default().with_ca_bundle(cli.network.ca_bundle.as_deref())?;
        settings::Invocation { config: config::ConfigFile::default(), net }
    } else {
        let config = config::ConfigFile::load()?;
        settings::Invocation { net: settings::net_options(&cli.network, &config)?, config }
    };
    if let Some(cmd) = cli.command {
        return run_command(cmd, cli.output, &inv).await;
    }
    if cli.upload.emulate {
        #[cfg(feature = "emulate")]
        return commands::demo::run_emulated(cli).await;
        #[cfg(not(feature = "emulate"))]
        return Err(no_emulator());
    }
    let cancel = CancellationToken::new();
    install_ctrl_c(cancel.clone());
    let settings = settings::UploadSettings::from_args(&cli.upload, &cli.output, cancel, &inv)?;
    batch::run(&cli, &settings).await
}

async fn run_command(cmd: args::Command, output: args::OutputArgs, inv: &settings::Invocation) -> Result<i32> {
    match cmd {
        #[cfg(feature = "emulate")]
        args::Command::Demo { provider, size } => commands::demo::demo(provider, size, output).await,
        #[cfg(not(feature = "emulate"))]
        args::Command::Demo { .. } => Err(no_emulator()),
        #[cfg(feature = "emulate")]
        args::Command::Emulator(args) => Ok(upload_emulator::cli::serve(*args, "upload emulator").await.into()),
        args::Command::Man { out_dir } => commands::man::run(out_dir.as_deref()),
        args::Command::Auth { command: args::AuthCommand::Check(args) } => {
            commands::auth::check(&args, &output, inv).await
        }
        args::Command::Config { command } => {
            let path = config::ConfigFile::path();
            match command {
                args::ConfigCommand::Path => match path {
                    Some(p) => println!("{}", p.display()),
                    None => return Err(dirs::no_config_file()),
                },
                args::ConfigCommand::Show => {
                    let file = config::ConfigFile::load()?;
                    let shown = path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
                    let exists = path.as_ref().is_some_and(|p| p.exists());
                    println!("# {shown}{}", if exists { "" } else { " (not found: defaults)" });
                    print!("{}", file.redacted_toml());
                }
            }
            Ok(0)
        }
        args::Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut c = args::Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut c, "upload", &mut script);
            ignore_broken_pipe(std::io::stdout().lock().write_all(&script))?;
            Ok(0)
        }
        args::Command::Teleport { command } => commands::teleport::run(command, &output, inv).await,
        args::Command::Apertur(args) => {
            let cancel = CancellationToken::new();
            install_ctrl_c(cancel.clone());
            commands::apertur::run(*args, &output, cancel, inv).await
        }
        args::Command::Watch(args) => watch::run(*args, output, inv).await,
        args::Command::Pending(args) => commands::pending::run(*args, &output, inv).await,
    }
}

#[cfg(not(feature = "emulate"))]
fn no_emulator() -> Error {
    Error::usage(
        "this upload was built without the emulator",
        "build it with the default features (or `--features emulate`) for `upload demo` and --emulate",
    )
}

/// Ctrl-C cancels `cancel`: the first press cancels (work in flight gets a few seconds,
/// [`engine::wait::GRACE`], journals are kept); a second one exits at once. One handler per
/// process, whatever the number of runs it starts (`upload pending --resume` runs one per
/// journal): every token given here follows it.
pub(crate) fn install_ctrl_c(cancel: CancellationToken) {
    static ROOT: std::sync::OnceLock<CancellationToken> = std::sync::OnceLock::new();
    let root = ROOT
        .get_or_init(|| {
            let root = CancellationToken::new();
            let first = root.clone();
            tokio::spawn(async move {
                // Windows: Ctrl-Break and closing the console too (signals.rs).
                let mut stop = signals::Stop::new(false);
                if stop.recv().await {
                    ui::notice("upload: stopping: finishing the parts in flight (press Ctrl-C again to quit now)");
                    first.cancel();
                    if stop.recv().await {
                        ui::clear_board();
                        eprintln!("upload: interrupted: run the same command again to resume");
                        std::process::exit(crate::cli::report::exit::INTERRUPTED);
                    }
                }
            });
            root
        })
        .clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = root.cancelled() => cancel.cancel(),
            _ = cancel.cancelled() => {}
        }
    });
}

/// A closed stdout (`| head`) is not an error.
pub(crate) fn ignore_broken_pipe(r: std::io::Result<()>) -> Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::File { path: "<stdout>".into(), source: e }),
        Ok(()) => Ok(()),
    }
}

/// Writes `upload: error: ...` and the hint to stderr.
pub(crate) fn report_error(err: &Error) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "upload: error: {err}");
    if let Some(h) = crate::cli::report::hint(err)
        && !h.is_empty()
    {
        let _ = writeln!(stderr, "  hint: {h}");
    }
}
