//! `upload man`: the man page, rendered from the clap definitions (`clap_mangen`), so it says
//! what `--help` says. `--out-dir DIR` writes one page per command (`upload.1`,
//! `upload-watch.1`, `upload-teleport-list.1`, ...), as the release archives carry them.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::args::Cli;
use crate::error::{Error, Result};

pub(crate) fn run(out_dir: Option<&Path>) -> Result<i32> {
    // No `help` subcommand in the pages: `upload help X` is `upload X --help`, and
    // `generate_to` writes no page for it either.
    let cmd = Cli::command().disable_help_subcommand(true);
    let file_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::File { path, source }
    };
    match out_dir {
        None => {
            let mut page = Vec::new();
            let mut man = clap_mangen::Man::new(cmd);
            if let Some(date) = option_env!("UPLOAD_BUILD_GIT_DATE").filter(|d| !d.is_empty()) {
                man = man.date(date);
            }
            man.render(&mut page).map_err(file_error(Path::new("<stdout>")))?;
            crate::cli::ignore_broken_pipe(std::io::stdout().lock().write_all(&page))?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(file_error(dir))?;
            clap_mangen::generate_to(cmd, dir).map_err(file_error(dir))?;
        }
    }
    Ok(0)
}
