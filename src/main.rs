//! The `upload` binary: everything is in the library's command-line module.

fn main() -> std::process::ExitCode {
    upload::cli::main()
}
