//! `upload-emulator`: runs the emulator until Ctrl-C. The flags and the launch are the
//! library's (`upload_emulator::cli`), shared with `upload emulator`.

use std::process::ExitCode;

use clap::Parser;
use upload_emulator::cli::{ABOUT, LONG_ABOUT, ServerArgs};

#[derive(Parser, Debug)]
#[command(name = "upload-emulator", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    upload_emulator::cli::init_logging();
    let cli = Cli::parse();
    ExitCode::from(upload_emulator::cli::serve(cli.server, "upload-emulator").await)
}
