//! The `upload` binary: parse, run, map the error to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = upload::cli::Cli::parse();
    init_tracing(cli.output.verbose);
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

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "upload=info",
        _ => "upload=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("UPLOAD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}
