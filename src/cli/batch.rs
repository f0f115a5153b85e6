//! `upload FILE|DIR...`: the command line's side of a library run ([`Uploader::run`]): the
//! paths given expanded into the run's items, one bar per file, one line (or JSON object) per
//! file as it ends, one summary.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::args::{Cli, OutputArgs, ProviderName, UploadArgs};
use crate::cli::report::{exit, exit_code, hint};
use crate::cli::settings::UploadSettings;
use crate::cli::{ignore_broken_pipe, ui};
use crate::engine::progress::Progress;
use crate::error::{Error, Result};
use crate::run::{End, FileEnd, FileResult, Item, Selection};
use crate::uploader::Uploader;

/// The options of a run that decide where a file goes, per provider, as `(flag, value)`.
/// Options left out do not count: a file uploaded without `--name` and again with it is two
/// uploads, a rerun of the same command is one.
pub(crate) fn destination(args: &crate::cli::args::UploadArgs, provider: ProviderName) -> Vec<(String, String)> {
    let mut d: Vec<(String, String)> = vec![];
    let mut put = |flag: &str, v: &Option<String>| {
        if let Some(v) = v {
            d.push((flag.into(), v.clone()));
        }
    };
    match provider {
        ProviderName::Teleport => {
            put("--name", &args.teleport.name);
            put("--format", &args.teleport.format);
        }
        ProviderName::Truvideo => {
            put("--title", &args.truvideo.title);
            put("--creator", &args.truvideo.creator);
            put("--file-type", &args.truvideo.file_type);
            if args.truvideo.library {
                put("--library", &Some("true".into()));
            }
        }
        ProviderName::Uplift => {
            put("--athlete-id", &args.uplift.athlete_id);
            put("--session-group-id", &args.uplift.session_group_id);
            put("--file-name", &args.uplift.file_name);
            put("--activity", &args.uplift.activity);
            put("--movement", &args.uplift.movement);
        }
        ProviderName::Apertur => {
            put("--session", &args.apertur.session);
            let mut dests = args.apertur.destinations.clone();
            dests.sort();
            dests.dedup();
            for v in dests {
                d.push(("--destination".into(), v));
            }
        }
    }
    d
}

/// Renders the ends of a run's files: a JSON line with `--json`, else a line above the bars or
/// the error on stderr; counts them in the summary.
pub(crate) struct Reporter<'a> {
    provider: &'static str,
    force: bool,
    board: &'a ui::Board,
    output: &'a OutputArgs,
    /// Paths named on the command line: a refusal of one fails the run, of a file found in a
    /// walked directory is a skip.
    named: HashSet<PathBuf>,
    /// The counts of the run.
    pub(crate) summary: ui::Summary,
    /// `watch --metrics`: the files' ends counted there too.
    metrics: Option<std::sync::Arc<crate::cli::watch::Metrics>>,
    /// `watch`: files found already uploaded are counted here instead of told one by one
    /// (without `-v`); [`Reporter::take_held_skips`] tells the count once.
    hold_skips: bool,
    held_skips: usize,
}

impl<'a> Reporter<'a> {
    /// A reporter of `uploader`'s files.
    pub(crate) fn new(uploader: &Uploader, force: bool, board: &'a ui::Board, output: &'a OutputArgs) -> Self {
        Reporter {
            provider: uploader.provider().name(),
            force,
            board,
            output,
            named: HashSet::new(),
            summary: ui::Summary::default(),
            metrics: None,
            hold_skips: false,
            held_skips: 0,
        }
    }

    /// Files already uploaded are counted, not told one by one (`watch` restarting over a
    /// directory of old files); `-v` and `--json` still tell each.
    pub(crate) fn holding_skips(mut self) -> Self {
        self.hold_skips = self.output.verbose == 0 && !self.output.json;
        self
    }

    /// How many files were found already uploaded since the last call (see
    /// [`Reporter::holding_skips`]).
    pub(crate) fn take_held_skips(&mut self) -> usize {
        std::mem::take(&mut self.held_skips)
    }

    /// Counts the files' ends into `metrics` too.
    pub(crate) fn with_metrics(mut self, metrics: Option<std::sync::Arc<crate::cli::watch::Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The paths named on the command line.
    pub(crate) fn named(mut self, paths: &[PathBuf]) -> Self {
        self.named = paths.iter().cloned().collect();
        self
    }

    /// Reports one file's end.
    pub(crate) fn end(&mut self, e: FileEnd<'_>) -> Result<()> {
        let named = self.named.contains(e.item.path());
        match e.end {
            End::Done(FileResult::Uploaded(outcome)) => self.uploaded(&outcome),
            End::Done(FileResult::Skipped(rec, bytes)) => self.skipped(e.item, &rec, bytes, e.elapsed),
            End::Done(FileResult::Planned(plan)) => {
                ignore_broken_pipe(ui::print_dry_run(&mut std::io::stdout().lock(), &plan, self.output.json))
            }
            End::Refused(err) => self.refused(e.item, &err, named),
            End::Failed(err) => self.failed(e.item, &err, e.elapsed),
            End::NotStarted => self.not_started(e.item),
        }
    }

    fn uploaded(&mut self, outcome: &crate::providers::UploadOutcome) -> Result<()> {
        let (json, board) = (self.output.json, self.board);
        let stdout = std::io::stdout();
        self.summary.uploaded(outcome.bytes);
        if let Some(m) = &self.metrics {
            m.uploaded();
        }
        if !json && board.mode() == ui::Mode::Bars && board.several() {
            // On a terminal, one line per file above the board; the detail with -v, and on
            // stdout when that is not the terminal (a script reads it).
            board.println(&ui::finished_line(outcome, ui::term_width()));
            if self.output.verbose > 0 && ui::stdout_is_terminal() {
                let mut block = Vec::new();
                let _ = ui::print_outcome(&mut block, outcome, false);
                for line in String::from_utf8_lossy(&block).lines().skip(1) {
                    board.println(line);
                }
            }
            if !ui::stdout_is_terminal() {
                ignore_broken_pipe(ui::print_outcome(&mut stdout.lock(), outcome, json))?;
            }
            Ok(())
        } else {
            ignore_broken_pipe(ui::print_outcome(&mut stdout.lock(), outcome, json))
        }
    }

    fn skipped(&mut self, item: &Item, rec: &crate::run::DoneRecord, bytes: u64, elapsed: Duration) -> Result<()> {
        self.summary.skipped();
        if let Some(m) = &self.metrics {
            m.skipped();
        }
        let by_this_run = rec.force_run.is_some() && self.force;
        let reason = format!(
            "already uploaded ({} {}, {}{}): {}",
            rec.provider,
            rec.id,
            rec.uploaded_at,
            if by_this_run { ", by this --force run before it was interrupted" } else { "" },
            rec.matched()
        );
        if self.output.json {
            let mut line = serde_json::json!({
                "provider": rec.provider, "file": item.path().display().to_string(), "bytes": bytes,
                "id": rec.id, "status": "skipped", "parts": 0, "elapsed_s": elapsed.as_secs_f64(),
                "uploaded_at": rec.uploaded_at, "reason": reason,
            });
            // The receipt of the upload the record remembers (records of older versions have none).
            if let Some(crc) = &rec.crc64nvme {
                line["crc64nvme"] = crc.clone().into();
            }
            ignore_broken_pipe(ui::print_json_line(&mut std::io::stdout().lock(), &line))?;
        } else if self.hold_skips {
            self.held_skips += 1;
        } else if !self.output.quiet {
            let again = if by_this_run { "" } else { "; --force uploads it again" };
            self.board.println(&format!("upload: {}: skipped: {reason}{again}", item.path().display()));
        }
        Ok(())
    }

    fn failed(&mut self, item: &Item, err: &Error, elapsed: Duration) -> Result<()> {
        if let Error::Stopped { .. } = err {
            // Told once for the run, after the summary (`stopped_line`).
            self.summary.stopped();
            if self.output.json {
                let line = ui::stopped_json(self.provider, item.path(), err, elapsed);
                ignore_broken_pipe(ui::print_json_line(&mut std::io::stdout().lock(), &line))?;
            }
            return Ok(());
        }
        let interrupted = matches!(err, Error::Interrupted { .. });
        if interrupted {
            self.summary.interrupted(exit_code(err), hint(err).as_deref());
        } else {
            self.summary.failed(exit_code(err));
            if let Some(m) = &self.metrics {
                m.failed();
            }
        }
        if self.output.json {
            let line = ui::failure_json(self.provider, item.path(), err, elapsed);
            ignore_broken_pipe(ui::print_json_line(&mut std::io::stdout().lock(), &line))?;
        }
        // An interruption of a run of several files is told once, after the summary.
        if !(interrupted && self.board.several()) {
            self.board.report_error(err);
        }
        Ok(())
    }

    fn not_started(&mut self, item: &Item) -> Result<()> {
        self.summary.not_started();
        if self.output.json {
            let line = ui::not_started_json(self.provider, item.path());
            ignore_broken_pipe(ui::print_json_line(&mut std::io::stdout().lock(), &line))?;
        }
        Ok(())
    }

    /// A file refused before any request (its type, its size): skipped with the reason when it
    /// was found in a walked directory, a failure when named.
    pub(crate) fn refused(&mut self, item: &Item, err: &Error, named: bool) -> Result<()> {
        // The provider's refusal of a found file is a skip; a file that cannot be read fails.
        if !named && matches!(err, Error::Usage { .. }) {
            self.summary.skipped();
            if let Some(m) = &self.metrics {
                m.skipped();
            }
            let reason = err.to_string();
            if self.output.json {
                let line = ui::skipped_json(self.provider, item.path(), &reason);
                ignore_broken_pipe(ui::print_json_line(&mut std::io::stdout().lock(), &line))?;
            } else if !self.output.quiet {
                self.board.println(&format!("upload: {}: skipped: {reason}", item.path().display()));
            }
            Ok(())
        } else {
            self.failed(item, err, Duration::ZERO)
        }
    }
}

/// What a run stopped at its time limit says, once: `upload: stopped at the time limit; run the
/// same command, or `upload pending --resume`, to go on`.
pub(crate) fn stopped_line() -> String {
    format!("upload: {}; {}", Error::Stopped { started: true }, crate::error::STOPPED_HINT)
}

/// The paths of `--files-from LIST` (`-`: standard input): one a line (a trailing `\r` is
/// dropped), or NUL-separated (`null`); empty entries are ignored.
pub(crate) fn listed_paths(list: &std::path::Path, null: bool) -> Result<Vec<PathBuf>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let read = if list == std::path::Path::new("-") {
        std::io::stdin().lock().read_to_end(&mut bytes)
    } else {
        std::fs::File::open(list).and_then(|mut f| f.read_to_end(&mut bytes))
    };
    read.map_err(|e| Error::File { path: list.to_path_buf(), source: e })?;
    let sep = if null { b'\0' } else { b'\n' };
    let mut paths = Vec::new();
    for entry in bytes.split(|b| *b == sep) {
        let entry = if null { entry } else { entry.strip_suffix(b"\r").unwrap_or(entry) };
        if entry.is_empty() {
            continue;
        }
        paths.push(path_of_bytes(entry).ok_or_else(|| {
            Error::usage(
                format!(
                    "--files-from {}: a path that is not UTF-8: {}",
                    list.display(),
                    String::from_utf8_lossy(entry)
                ),
                "on this system the paths of the list must be UTF-8",
            )
        })?);
    }
    Ok(paths)
}

#[cfg(unix)]
fn path_of_bytes(b: &[u8]) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(b)))
}

#[cfg(not(unix))]
fn path_of_bytes(b: &[u8]) -> Option<PathBuf> {
    std::str::from_utf8(b).ok().map(PathBuf::from)
}

/// The progress of one file: its bar on the board, named by the file's name.
pub(crate) fn bar_for(board: &ui::Board, item: &Item) -> Arc<dyn Progress> {
    let name = item.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Arc::new(board.file_named(&name))
}

/// Uploads every item of the command line; prints one result per file; returns the exit
/// code of the worst outcome.
pub(crate) async fn run(cli: &Cli, settings: &UploadSettings) -> Result<i32> {
    let args = &cli.upload;
    let uploader = &settings.uploader;
    let selection = Selection::new(args.recursive, args.hidden, &args.include, &args.exclude)?;
    let Chosen { items, problems, not_videos, dirs_not_walked } = choose(args, settings.provider, &selection)?;
    let total_bytes: u64 =
        items.iter().filter_map(|i| std::fs::metadata(i.path()).ok()).filter(|m| m.is_file()).map(|m| m.len()).sum();
    let board = ui::Board::new(ui::Mode::detect(cli.output.quiet, cli.output.json))
        .with_rate_limit(uploader.rate())
        .with_total(items.len(), total_bytes);
    let several = items.len() + problems.len() + not_videos.len() > 1;
    let started = Instant::now();
    let mut reporter = Reporter::new(uploader, args.force, &board, &cli.output).named(&args.files);
    if dirs_not_walked > 0 && !cli.output.quiet {
        let n = dirs_not_walked;
        board.println(&format!(
            "upload: {n} sub-director{} not walked; --recursive walks them",
            if n == 1 { "y" } else { "ies" }
        ));
    }
    // What the walks could not take is reported by path, and the other files still go.
    for problem in problems {
        let item = Item::File(problem.path.clone());
        reporter.refused(&item, &problem.into_error(), false)?;
    }
    for item in &not_videos {
        let err = Error::usage(
            format!("{} is not an .mp4: --format video takes the .mp4 files of a directory", item.path().display()),
            "name it on the command line to upload it as a video all the same",
        );
        reporter.refused(item, &err, false)?;
    }
    let options = settings.run_options(&selection);
    let progress_for = |item: &Item| bar_for(&board, item);
    let stats = uploader.run(items, &options, &progress_for, &mut |end| reporter.end(end)).await?;
    tracing::info!(files = stats.peak_files, parts = stats.peak_parts, "most files and parts in flight at once");
    let mut code = exit::OK;
    if let Some(err) = &stats.finish {
        crate::cli::report_error(err);
        code = exit_code(err);
    }
    board.finish();
    let summary = &reporter.summary;
    if several && !args.dry_run {
        summary.print(started.elapsed(), board.sent(), cli.output.quiet);
        if let Some(hint) = summary.interruption() {
            let how = if hint.is_empty() { String::new() } else { format!(": {hint}") };
            eprintln!("upload: interrupted{how}");
        }
    }
    if summary.stopped_files() > 0 {
        eprintln!("{}", stopped_line());
    }
    // A dry run without a token passed, but the real run would stop at its first request.
    if args.dry_run && !settings.credentials {
        let err = no_token_for_real_run(settings.provider);
        crate::cli::report_error(&err);
        code = code.max(exit_code(&err));
    }
    Ok(summary.exit_code().max(code))
}

/// What a run takes, chosen from the command line.
struct Chosen {
    /// The files and directories to zip.
    items: Vec<Item>,
    /// What the walks could not take.
    problems: Vec<crate::run::WalkProblem>,
    /// What `--format video` leaves out of a directory's walk.
    not_videos: Vec<Item>,
    /// Sub-directories not entered (no `--recursive`).
    dirs_not_walked: usize,
}

/// The paths given (and `--files-from`'s, which must list some) through the selection;
/// `--format video` keeps a walk's .mp4 files; `--zip-to` takes exactly one directory;
/// nothing at all to upload is a usage error.
fn choose(args: &UploadArgs, provider: ProviderName, selection: &Selection) -> Result<Chosen> {
    let zip_dirs = provider == ProviderName::Teleport && args.teleport.format.as_deref() == Some("bulk-images");
    let mut expanded = selection.expand(&args.files, zip_dirs);
    if let Some(list) = &args.files_from {
        selection.expand_listed(listed_paths(list, args.null)?, &mut expanded);
        if expanded.items.is_empty() && expanded.problems.is_empty() && args.files.is_empty() {
            return Err(Error::usage(
                format!("--files-from {} lists no files", list.display()),
                "give it one path a line, or NUL-separated with -0 (find -print0)",
            ));
        }
    }
    let (items, not_videos) = if provider == ProviderName::Teleport && args.teleport.format.as_deref() == Some("video")
    {
        videos_only(expanded.items, &args.files)
    } else {
        (expanded.items, vec![])
    };
    if let Some(to) = &args.teleport.zip_to {
        let dirs = items.iter().filter(|i| matches!(i, Item::ZipDir(_))).count();
        if dirs != 1 {
            return Err(Error::usage(
                format!("--zip-to {} takes exactly one directory of images, not {dirs}", to.display()),
                "give one directory with --provider teleport --format bulk-images, or leave --zip-to out to stream",
            ));
        }
    }
    if items.is_empty() && expanded.problems.is_empty() && not_videos.is_empty() {
        return Err(Error::usage(
            "no files to upload: the directories hold no matching files",
            "check the paths, --include/--exclude, and --recursive",
        ));
    }
    Ok(Chosen { items, problems: expanded.problems, not_videos, dirs_not_walked: expanded.dirs_not_walked })
}

/// `--format video` names what a directory's walk takes: its .mp4 files (any case); the
/// others found there are left out (second), a file named on the command line goes as asked.
fn videos_only(mut items: Vec<Item>, named: &[PathBuf]) -> (Vec<Item>, Vec<Item>) {
    let named: HashSet<&PathBuf> = named.iter().collect();
    // In place: a walk of many files keeps one list.
    let left = items
        .extract_if(.., |i| match i {
            Item::File(p) => !named.contains(p) && !p.extension().is_some_and(|e| e.eq_ignore_ascii_case("mp4")),
            Item::ZipDir(_) => false,
        })
        .collect();
    (items, left)
}

/// A dry run without a token passes, but the real run would stop at its first request: this
/// error says so and names where a token comes from.
fn no_token_for_real_run(provider: ProviderName) -> Error {
    let d = provider.descriptor();
    Error::Auth {
        provider: d.name,
        message: "no token given: the plan above is fine, but the real run would fail for lack of one".into(),
        hint: Some(format!(
            "set {} (or UPLOAD_TOKEN), pass --token, or give --token-command (or the provider's sign-in, where it has one)",
            d.token_env
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_video_keeps_a_walks_mp4s_and_what_was_named() {
        let items = vec![
            Item::File("d/a.mp4".into()),
            Item::File("d/b.MP4".into()),
            Item::File("d/notes.txt".into()),
            Item::File("named.mov".into()),
            Item::ZipDir("caps".into()),
        ];
        let (kept, left) = videos_only(items, &["named.mov".into()]);
        let paths = |v: &[Item]| v.iter().map(|i| i.path().to_path_buf()).collect::<Vec<_>>();
        assert_eq!(paths(&kept), [PathBuf::from("d/a.mp4"), "d/b.MP4".into(), "named.mov".into(), "caps".into()]);
        assert_eq!(paths(&left), [PathBuf::from("d/notes.txt")]);
    }
}
