//! The `upload` binary: parse, run, map the error to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = upload::cli::Cli::parse();
    let colour = upload::ui::init_color(cli.output.color);
    init_tracing(cli.output.verbose, colour);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("upload: error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let code = match runtime.block_on(upload::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            upload::report_error(&err);
            err.exit_code()
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
        .with_writer(upload::ui::log_writer)
        .with_ansi(colour)
        .with_target(false)
        .init();
}
