//! `upload watch DIR...`: a long-running uploader of the files that appear in directories.
//!
//! It is a batch run ([`crate::cli::batch`]) that does not end: the same selection, the same
//! per-file step ([`Step::run`]: done records, resume journals), the same JSON lines and
//! the same part budget. What it adds is knowing when a file is *complete*:
//! - with inotify (Linux, the default), a file that was written is taken once its writer closed
//!   it (`CLOSE_WRITE`) and its size and mtime have not changed for `--settle`; a file that
//!   appears by a rename into the directory (`MOVED_TO`) is complete at once;
//! - files found by a scan (at start, with `--poll`, with `--once`, after an inotify queue
//!   overflow), and every file on systems whose events say nothing of closing (FSEvents on
//!   macOS, `ReadDirectoryChangesW` on Windows), are taken once unchanged for `--settle` (a
//!   file whose mtime is older than that at once) and no process has them open for writing
//!   (asked of the system: [`open`]);
//! - Teleport `--format bulk-images`: each sub-directory is one capture, complete once no file
//!   in it changed for `--settle`, or at once when it holds the `--ready-file` marker.
//!
//! A file that failed is tried again after `--retry-failed-after` (doubling), a file refused
//! for good (bad input, exit code 2) is reported once; both are taken afresh when they change.
//! SIGTERM or Ctrl-C stops taking files, lets parts in flight finish (journals kept, so a
//! restart resumes them) and exits 0 with a summary; SIGHUP re-reads the configuration file.
//! At the time limit (`--max-duration`, `--until`: the engine's [`TimeLimit`]) it stops taking
//! files, the uploads in flight stop as a run's do, and it exits 9 once idle.
//!
//! [`TimeLimit`]: crate::engine::wait::TimeLimit
//! All the waiting (settle, ticks, backoff) is [`schedule`]'s; what the watcher knows of its
//! units (scans, events, settle clocks, writers) is [`table`]'s.

mod metrics;
mod open;
mod schedule;
mod table;

pub(crate) use metrics::Metrics;

/// `--metrics ADDR` (clap's value parser).
pub(crate) fn parse_metrics_addr(text: &str) -> std::result::Result<std::net::SocketAddr, String> {
    metrics::parse_addr(text)
}

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::LocalBoxFuture;
use futures::stream::FuturesUnordered;
use notify::{Event, RecursiveMode};
use tokio_util::sync::CancellationToken;

use crate::cli::args::{AfterUpload, OutputArgs, ProviderName, UploadArgs, WatchArgs, WatchOptions};
use crate::cli::batch::{Reporter, bar_for};
use crate::cli::settings::UploadSettings;
use crate::cli::ui;
use crate::engine::tune::{AUTO_FILES_BYTES, FileGate, Files};
use crate::error::{Error, Result};
use crate::run::{End, FileEnd, FileResult, Item, RunOptions, Selection};
use schedule::Ticker;
use table::{Key, Kind, Last, Root, Sig, State, Table};

/// Whether the watcher's events say when a writer closed a file (inotify's `CLOSE_WRITE`, on
/// Linux). Elsewhere nothing says so and the writer check of [`open`] decides after `--settle`.
/// `UPLOAD_WATCH_NO_CLOSE_EVENTS=1` (hidden, for tests) makes Linux decide as macOS and Windows do.
fn close_events() -> bool {
    cfg!(target_os = "linux") && std::env::var_os("UPLOAD_WATCH_NO_CLOSE_EVENTS").is_none_or(|v| v != "1")
}

/// How an attempt ended, as far as the watcher is concerned.
fn classify(err: &Error) -> Last {
    match err {
        Error::Usage { .. } | Error::JournalMismatch { .. } => Last::Refused,
        _ => Last::Failed { failures: 0, retry_at: Instant::now() },
    }
}

/// The journal of an interrupted upload no longer matches the file: a new version to upload afresh.
fn journal_outdated(err: &Error) -> bool {
    matches!(err, Error::JournalMismatch { .. })
}

/// Moves `from` to `to` (a rename; a copy and delete across filesystems, for a file).
fn move_path(from: &Path, to: &Path) -> std::io::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        // Another file system (Linux's EXDEV), another drive (Windows' ERROR_NOT_SAME_DEVICE).
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices && from.is_file() => {
            let tmp = crate::engine::durable::temp_path(to);
            let copy = || {
                std::fs::copy(from, &tmp)?;
                // Opened for writing: Windows flushes no file opened for reading only ("Access denied").
                std::fs::OpenOptions::new().write(true).open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, to)
            };
            if let Err(e) = copy() {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            std::fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

struct Attempt {
    key: Key,
    /// The version of the unit sent.
    sig: Sig,
    item: Item,
    /// The bytes the file gate counted for it (see [`Watcher::gate`]).
    size: u64,
    res: Result<FileResult>,
    elapsed: Duration,
}

fn signals(cancel: CancellationToken) -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (hup_tx, hup_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
                (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
            else {
                return;
            };
            let mut stops = 0;
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                    _ = hup.recv() => { let _ = hup_tx.send(()); continue; }
                }
                stops += 1;
                if stops == 1 {
                    eprintln!("upload: watch: stopping: finishing parts in flight (signal again to quit now)");
                    cancel.cancel();
                } else {
                    eprintln!("upload: watch: stopped: interrupted uploads resume when the watcher starts again");
                    std::process::exit(crate::cli::report::exit::INTERRUPTED);
                }
            }
        }
        #[cfg(not(unix))]
        {
            // Ctrl-C, Ctrl-Break, the console closed, log-off or shut-down: Windows' SIGTERM.
            let _ = hup_tx;
            let mut stop = crate::cli::signals::Stop::new(true);
            if stop.recv().await {
                eprintln!("upload: watch: stopping: finishing parts in flight (signal again to quit now)");
                cancel.cancel();
                if stop.recv().await {
                    eprintln!("upload: watch: stopped: interrupted uploads resume when the watcher starts again");
                    std::process::exit(crate::cli::report::exit::INTERRUPTED);
                }
            }
        }
    });
    hup_rx
}

/// Runs `upload watch`. Returns 0 after SIGTERM / Ctrl-C; with `--once`, the worst file's exit code.
///
/// The set-up, in this order: the arguments checked, the stop signals caught, the settings
/// built, the directories watched and only then scanned (nothing that arrives in between is
/// missed), `--metrics` served; then [`Watcher::watch`] until stopped, then [`Watcher::stop`].
pub(crate) async fn run(args: WatchArgs, output: OutputArgs, inv: &crate::cli::settings::Invocation) -> Result<i32> {
    let (up, opts) = (&args.upload, &args.watch);
    let roots = roots_to_watch(up)?;
    let cancel = CancellationToken::new();
    let mut hups = signals(cancel.clone());

    let settings = Arc::new(UploadSettings::from_args(up, &output, cancel.clone(), inv)?);
    // `--max-duration` / `--until`: the engine's timer, counted from the start (a re-read of
    // the configuration keeps it).
    let limit = settings.uploader.time_limit_in_force().cloned();
    let selection = Selection::new(up.recursive, up.hidden, &up.include, &up.exclude)?;
    let bulk = settings.provider == ProviderName::Teleport && up.teleport.format.as_deref() == Some("bulk-images");
    let ignore = ignored_dirs(opts, &settings)?;

    // Watch first, then scan: nothing that arrives in between is missed.
    let (_notifier, mut events) = start_notifier(opts, &roots, up.recursive || bulk)?;
    let started = Instant::now();
    let mut table = Table {
        roots,
        selection: &selection,
        recursive: up.recursive,
        bulk,
        inotify: close_events() && !opts.once && opts.poll.is_none(),
        ignore,
        units: HashMap::new(),
        rescans: Vec::new(),
        problems: Vec::new(),
    };
    table.scan_all(started);

    let metrics = serve_metrics(opts.metrics, &settings, output.quiet).await?;
    let board = ui::Board::new(ui::Mode::detect(output.quiet, output.json));
    let reporter =
        Reporter::new(&settings.uploader, up.force, &board, &output).holding_skips().with_metrics(metrics.clone());
    let mut watcher = Watcher {
        up,
        opts,
        output: &output,
        net: inv.net.clone(),
        gate: FileGate::new(files_setting(up, &settings)),
        backlog: VecDeque::new(),
        queued: 0,
        writers: None,
        settings,
        limit,
        cancel,
        table,
        board: &board,
        reporter,
        metrics,
        inflight: FuturesUnordered::new(),
        started,
        first_tick: true,
        interrupted: 0,
        problems_reported: HashSet::new(),
    };
    watcher.announce();
    watcher.watch(&mut events, &mut hups).await;
    Ok(watcher.stop().await)
}

/// The directories to watch, checked: `watch` takes directories only, not `--emulate`,
/// `--dry-run` or `--files-from` (each refusal names what to do instead).
fn roots_to_watch(up: &UploadArgs) -> Result<Vec<Root>> {
    if up.emulate || up.dry_run {
        return Err(Error::usage(
            "upload watch takes neither --emulate nor --dry-run",
            "try the upload once with `upload DIR --dry-run` (or --emulate), then watch",
        ));
    }
    if up.files_from.is_some() {
        return Err(Error::usage(
            "upload watch takes the directories to watch as arguments, not --files-from",
            "give the directories (`upload watch DIR...`); upload a list of files once with `upload --files-from LIST`",
        ));
    }
    up.files
        .iter()
        .map(|dir| {
            let canon = crate::engine::platform::canonicalize(dir).ok().filter(|p| p.is_dir()).ok_or_else(|| {
                Error::usage(
                    format!("{} is not a directory", dir.display()),
                    "upload watch takes directories; upload single files with `upload FILE`",
                )
            })?;
            Ok(Root { given: dir.clone(), canon })
        })
        .collect()
}

/// What the watcher never takes, though it may lie inside a watched directory: the
/// `--after-upload move:DIR` directory (made now) and the state directory.
fn ignored_dirs(opts: &WatchOptions, settings: &UploadSettings) -> Result<Vec<PathBuf>> {
    let mut ignore = vec![];
    if let AfterUpload::Move(dir) = &opts.after_upload {
        std::fs::create_dir_all(dir).map_err(|e| Error::File { path: dir.clone(), source: e })?;
        ignore.push(
            crate::engine::platform::canonicalize(dir).map_err(|e| Error::File { path: dir.clone(), source: e })?,
        );
    }
    if let Some(d) = settings.uploader.state_dir_path().and_then(|d| crate::engine::platform::canonicalize(d).ok()) {
        ignore.push(d);
    }
    Ok(ignore)
}

/// How many units are uploaded at once: `--files-at-once` (auto: the engine's minimum), never
/// fewer than the provider takes at once.
/// How many units go at once: `--files N` (at least what the provider uploads at once), or
/// `auto` as a run of `upload DIR` counts them (many small files at once, a few large ones:
/// the engine's [`FileGate`]).
fn files_setting(up: &UploadArgs, settings: &UploadSettings) -> Files {
    let concurrent_files = settings.uploader.provider().concurrent_files();
    match up.files_at_once {
        crate::cli::args::AutoCount::Fixed(n) => Files::Fixed((n as usize).max(concurrent_files)),
        crate::cli::args::AutoCount::Auto => Files::Auto,
    }
}

/// The file-system events of the watched directories: none with `--once` (one scan), a scan
/// every `--poll`, else the system's notifier (inotify, FSEvents, `ReadDirectoryChangesW`).
/// The notifier stops when dropped.
type Notifier = (Option<Box<dyn notify::Watcher>>, tokio::sync::mpsc::UnboundedReceiver<notify::Result<Event>>);

fn start_notifier(opts: &WatchOptions, roots: &[Root], recursive: bool) -> Result<Notifier> {
    let (tx, events) = tokio::sync::mpsc::unbounded_channel::<notify::Result<Event>>();
    let handler = move |ev: notify::Result<Event>| {
        let _ = tx.send(ev);
    };
    let mode = if recursive { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
    let watch_err = |e: notify::Error| {
        Error::usage(
            format!("cannot watch the directories: {e}"),
            "raise fs.inotify.max_user_watches, or pass --poll 10s to scan instead",
        )
    };
    let mut notifier: Box<dyn notify::Watcher> = if opts.once {
        return Ok((None, events));
    } else if let Some(every) = opts.poll {
        Box::new(
            notify::PollWatcher::new(handler, notify::Config::default().with_poll_interval(every))
                .map_err(watch_err)?,
        )
    } else {
        Box::new(notify::recommended_watcher(handler).map_err(watch_err)?)
    };
    for r in roots {
        notifier.watch(&r.canon, mode).map_err(watch_err)?;
    }
    Ok((Some(notifier), events))
}

/// `--metrics ADDR`: served from now on; a port that cannot be had is exit 2 before any upload.
async fn serve_metrics(
    addr: Option<std::net::SocketAddr>,
    settings: &UploadSettings,
    quiet: bool,
) -> Result<Option<Arc<Metrics>>> {
    let Some(addr) = addr else { return Ok(None) };
    let m = Arc::new(Metrics::new(settings.uploader.provider().name()));
    let bound = metrics::serve(addr, m.clone()).await?;
    if !quiet {
        eprintln!("upload: watch: metrics at http://{bound}/metrics");
    }
    Ok(Some(m))
}

/// `--once`: a file still changing this long after the scan is left for the next run.
fn once_patience(settle: Duration) -> Duration {
    (settle * 3).max(settle + Duration::from_secs(30))
}

/// The most units a tick lists to take from, the oldest unchanged: more than the gate lets go
/// in a tick at any rate (the backlog is also taken from as each upload ends), so the others
/// wait for a later tick at no cost, and a tick's list stays small however many files wait.
const TICK_LIST_MAX: usize = 4_096;

/// A running watcher: what it knows of the units ([`Table`]), the uploads in flight, and what
/// it reports. Its loop ([`Watcher::watch`]) owns when a unit is taken; the waiting itself (the
/// settle clock, the tick, the retry backoff) is [`schedule`]'s and the time limit the engine's.
struct Watcher<'a> {
    up: &'a UploadArgs,
    opts: &'a WatchOptions,
    output: &'a OutputArgs,
    /// For a re-read of the configuration (SIGHUP).
    net: crate::engine::http::NetOptions,
    /// Replaced on SIGHUP; an upload in flight keeps the settings it started with.
    settings: Arc<UploadSettings>,
    limit: Option<crate::engine::wait::TimeLimit>,
    /// The stop (SIGTERM, Ctrl-C, or stdout gone).
    cancel: CancellationToken,
    table: Table<'a>,
    board: &'a ui::Board,
    reporter: Reporter<'a>,
    metrics: Option<Arc<Metrics>>,
    inflight: FuturesUnordered<LocalBoxFuture<'a, Attempt>>,
    /// Which units may start: their count and bytes in flight (`--files`).
    gate: FileGate,
    /// The units to look at next, unchanged longest first: the tick's list, taken from
    /// whenever the gate lets one more start (at the tick, and as soon as an upload ends), so
    /// that a directory of many files keeps the gate full instead of starting a wave a tick.
    backlog: VecDeque<Key>,
    /// Units waiting at the last tick (the metrics' gauge, counted once a tick).
    queued: usize,
    /// The processes' files open for writing, as seen at most one tick ago: one look at the
    /// system serves every unit considered meanwhile (a look per unit made watching many
    /// files cost a scan of every process's descriptors per file).
    writers: Option<(Instant, open::Writers)>,
    started: Instant,
    /// No tick yet: `--once` does not end before the first look at what the scan found.
    first_tick: bool,
    /// Uploads cut by the stop (their journals kept).
    interrupted: u32,
    /// The scan problems told already (each path once).
    problems_reported: HashSet<PathBuf>,
}

impl<'a> Watcher<'a> {
    /// The line that says what was found and how the directories are watched.
    fn announce(&self) {
        if self.output.quiet {
            return;
        }
        let opts = self.opts;
        let how = if opts.once {
            "one scan".to_string()
        } else if let Some(p) = opts.poll {
            format!("scanning every {:?}", p)
        } else {
            "inotify".to_string()
        };
        let dirs = self.table.roots.len();
        eprintln!(
            "upload: watch: {} unit(s) found in {} director{} ({how}, settle {:?})",
            self.table.units.len(),
            dirs,
            if dirs == 1 { "y" } else { "ies" },
            opts.settle
        );
    }

    /// The stop was asked for, or the time limit reached: no unit is taken any more.
    fn stopping(&self) -> bool {
        self.cancel.is_cancelled() || self.limit.as_ref().is_some_and(crate::engine::wait::TimeLimit::reached)
    }

    /// The loop, until stopped and idle (or, with `--once`, until every unit is idle after the
    /// first look). Each turn tells new scan problems and the metrics' gauges, then takes what
    /// comes first: an attempt's end, a file-system event, SIGHUP, the time limit, the tick.
    async fn watch(
        &mut self,
        events: &mut tokio::sync::mpsc::UnboundedReceiver<notify::Result<Event>>,
        hups: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
    ) {
        let mut ticker = Ticker::new(schedule::tick_interval(self.opts.settle));
        loop {
            self.report_problems();
            // At the time limit no file is taken; the uploads in flight stop (the engine's), then exit 9.
            let stopping = self.stopping();
            self.publish_state();
            if stopping && self.inflight.is_empty() {
                break;
            }
            if self.opts.once
                && self.inflight.is_empty()
                && !self.first_tick
                && self.table.units.values().all(|u| u.state == State::Idle)
            {
                break;
            }
            let (limit, cancel) = (&self.limit, &self.cancel);
            tokio::select! {
                biased;
                Some(a) = self.inflight.next(), if !self.inflight.is_empty() => {
                    self.on_end(a, stopping);
                    if !self.stopping() {
                        self.take_from_backlog(Instant::now());
                    }
                }
                Some(ev) = events.recv() => match ev {
                    Ok(ev) => self.table.on_event(ev, Instant::now()),
                    Err(e) => tracing::warn!("watch: {e}"),
                },
                Some(()) = hups.recv() => self.reload(),
                // Wakes the loop at the time limit (the engine's timer), to stop taking files.
                _ = async { match limit { Some(l) => l.wait().await, None => std::future::pending().await } }, if !stopping => {}
                alive = ticker.tick(cancel), if !stopping => {
                    if alive {
                        self.on_tick();
                    }
                }
            }
        }
    }

    /// What a scan could not take is reported once, by path, as a batch run reports it.
    fn report_problems(&mut self) {
        for problem in std::mem::take(&mut self.table.problems) {
            if self.problems_reported.insert(problem.path.clone()) {
                let item = Item::File(problem.path.clone());
                if let Err(e) = self.reporter.refused(&item, &problem.into_error(), false) {
                    crate::cli::report_error(&e);
                    self.cancel.cancel();
                }
            }
        }
    }

    /// `--metrics`: the uploads in flight, the units waiting, the rate limit in force.
    fn publish_state(&self) {
        if let Some(m) = &self.metrics {
            m.set_state(self.inflight.len(), self.queued, self.settings.uploader.rate().current());
        }
    }

    /// SIGHUP: the configuration file is read again; the units started from now on use it (the
    /// time limit stays the one counted from the start). A file that does not load keeps the
    /// previous settings.
    fn reload(&mut self) {
        let reloaded = crate::cli::config::ConfigFile::load().and_then(|config| {
            let inv = crate::cli::settings::Invocation { config, net: self.net.clone() };
            UploadSettings::from_args(self.up, self.output, self.cancel.clone(), &inv)
        });
        match reloaded {
            Ok(mut s) => {
                s.uploader = s.uploader.time_limit(self.limit.clone());
                self.settings = Arc::new(s);
                eprintln!("upload: watch: configuration re-read (files started from now on use it)");
            }
            Err(e) => {
                crate::cli::report_error(&e);
                eprintln!("upload: watch: keeping the previous configuration");
            }
        }
    }

    /// An attempt ended: the unit's outcome recorded ([`Watcher::record`]), then reported.
    /// Files found already uploaded (a restart over old files) get one line for the lot once
    /// the round in flight is over; -v names each.
    fn on_end(&mut self, a: Attempt, stopping: bool) {
        let Attempt { key, sig, item, size, mut res, elapsed } = a;
        self.gate.end(size);
        if !self.record(&key, sig, &mut res, stopping) {
            return;
        }
        let end = match res {
            Ok(r) => End::Done(r),
            Err(e) if matches!(classify(&e), Last::Refused) => End::Refused(e),
            Err(e) => End::Failed(e),
        };
        if let Err(e) = self.reporter.end(FileEnd { item: &item, end, elapsed }) {
            // stdout is gone: nothing more can be reported.
            crate::cli::report_error(&e);
            self.cancel.cancel();
        }
        if self.inflight.is_empty() && !self.output.quiet {
            let held = self.reporter.take_held_skips();
            if held > 0 {
                let files = if held == 1 { "file" } else { "files" };
                self.board.println(&format!(
                    "upload: watch: {held} {files} already uploaded, not sent again (-v lists them)"
                ));
            }
        }
    }

    /// Records how an attempt at `key` ended, for the version of the unit it sent (`sent`): pending
    /// again when it changed meanwhile, else idle; done (then `--after-upload`), refused for
    /// good, or failed (tried again after the doubling `--retry-failed-after`). An upload cut by
    /// the stop, or one whose journal no longer matches the changed file (taken afresh at
    /// once), is pending and not reported: returns false then.
    fn record(&mut self, key: &Key, sent: Sig, res: &mut Result<FileResult>, stopping: bool) -> bool {
        let now = Instant::now();
        let path = self.table.path(key);
        let current = self.table.units.get(key).and_then(|u| self.table.stat(key, u.kind)).map(|(s, _)| s);
        let Some(u) = self.table.units.get_mut(key) else { return false };
        let changed = matches!(u.state, State::InFlight { changed: true }) || current != Some(sent);
        u.state = if changed { State::Pending } else { State::Idle };
        match res {
            Ok(FileResult::Uploaded(_) | FileResult::Skipped(..)) => {
                u.set_last(sent, Last::Done);
                u.fresh = false;
                let kind = u.kind;
                if !changed && self.opts.after_upload != AfterUpload::Keep {
                    self.after_upload(key, &path, kind, res);
                }
            }
            Ok(_) => u.set_last(sent, Last::Done),
            Err(Error::Interrupted { .. }) => {
                self.interrupted += 1;
                u.state = State::Pending;
                return false;
            }
            // Its journal is kept: the next start of the watcher carries it on.
            Err(Error::Stopped { .. }) => u.state = State::Pending,
            Err(e) if journal_outdated(e) && !u.fresh => {
                // The file changed while its upload was interrupted: a new upload of it as it is.
                tracing::info!("{}: changed since its interrupted upload; starting over", path.display());
                u.fresh = true;
                u.immediate = true;
                u.state = State::Pending;
                return false;
            }
            Err(e) => {
                let last = match classify(e) {
                    Last::Failed { .. } => {
                        let failures = failures_after(u.last().as_ref(), sent);
                        let delay = schedule::failed_backoff(self.opts.retry_failed_after, failures);
                        if !self.opts.once && !stopping {
                            eprintln!(
                                "upload: {}: will be tried again in {}",
                                path.display(),
                                crate::size::human_duration(delay)
                            );
                        }
                        Last::Failed { failures, retry_at: now + delay }
                    }
                    other => other,
                };
                u.set_last(sent, last);
            }
        }
        true
    }

    /// `--after-upload delete|move:DIR` of a unit uploaded and unchanged since: the unit is
    /// forgotten and the JSON line says what was done (`after_upload`); a failure is a warning.
    fn after_upload(&mut self, key: &Key, path: &Path, kind: Kind, res: &mut Result<FileResult>) {
        let what = match &self.opts.after_upload {
            AfterUpload::Move(dir) => {
                let to = dir.join(&key.1);
                move_path(path, &to).map(|()| format!("moved to {}", to.display()))
            }
            _ if kind == Kind::Capture => std::fs::remove_dir_all(path).map(|()| "deleted".to_string()),
            _ => std::fs::remove_file(path).map(|()| "deleted".to_string()),
        };
        match what {
            Ok(what) => {
                if let Ok(FileResult::Uploaded(o)) = res {
                    o.fields.insert("after_upload".into(), what.clone().into());
                }
                tracing::info!("{}: {what}", path.display());
                self.table.units.remove(key);
            }
            Err(e) => eprintln!("upload: warning: {}: uploaded, but --after-upload failed: {e}", path.display()),
        }
    }

    /// The tick: new directories scanned a second time, then the units to look at (pending,
    /// or failed and due again), those unchanged longest first, each taken when complete and
    /// the gate lets it start. What the gate holds back waits in the backlog.
    fn on_tick(&mut self) {
        self.first_tick = false;
        let now = Instant::now();
        self.table.rescan_new_dirs(now);
        let once = self.opts.once;
        // The last tick's list goes first: never two lists at once.
        self.backlog = VecDeque::new();
        // The oldest TICK_LIST_MAX of the units wanted (a heap whose top is the youngest kept):
        // a directory of 100,000 files cost a list of every key each second (5 MB at its peak).
        let mut wanted = 0;
        let mut oldest: std::collections::BinaryHeap<std::cmp::Reverse<(Duration, Key)>> =
            std::collections::BinaryHeap::with_capacity(TICK_LIST_MAX + 1);
        for (k, u) in self.table.units.iter().filter(|(_, u)| u.wanted(now, once)) {
            wanted += 1;
            oldest.push(std::cmp::Reverse((u.settle().age(now), k.clone())));
            if oldest.len() > TICK_LIST_MAX {
                oldest.pop();
            }
        }
        self.queued = wanted;
        // Oldest first (the heap sorted by `Reverse`); collected in place, then a deque of it
        // without a copy.
        let look: Vec<Key> = oldest.into_sorted_vec().into_iter().map(|r| r.0.1).collect();
        self.backlog = VecDeque::from(look);
        self.take_from_backlog(now);
    }

    /// Looks at the backlog's units in order while the gate has room: each is taken when
    /// complete, or left (still changing, handled already) for a later tick.
    fn take_from_backlog(&mut self, now: Instant) {
        let once = self.opts.once;
        while !self.gate_full()
            && let Some(key) = self.backlog.pop_front()
        {
            if self.table.units.get(&key).is_some_and(|u| u.wanted(now, once)) && self.consider(key, now) {
                // Held back by the gate (a large one while others go): first once one ends.
                break;
            }
        }
    }

    /// No unit may start now, whatever its size.
    fn gate_full(&self) -> bool {
        !self.gate.admits(0)
    }

    /// Whether a process has `path` open for writing, from a look at the system at most one
    /// tick old.
    fn open_for_writing(&mut self, path: &Path, now: Instant) -> Option<bool> {
        let fresh = schedule::tick_interval(self.opts.settle);
        if self.writers.as_ref().is_none_or(|(at, _)| now.saturating_duration_since(*at) >= fresh) {
            self.writers = Some((now, open::Writers::look()));
        }
        self.writers.as_mut().and_then(|(_, w)| w.open_for_writing(path))
    }

    /// Looks at one unit: gone (forgotten), still changing, complete but handled already in
    /// this very state, or complete and taken (when fewer than `--files-at-once` are in flight).
    /// Returns true when the gate held it back (it is first in the backlog again).
    fn consider(&mut self, key: Key, now: Instant) -> bool {
        let opts = self.opts;
        let kind = self.table.units[&key].kind;
        let path = self.table.path(&key);
        let Some((sig, _)) = self.table.stat(&key, kind) else {
            self.table.units.remove(&key);
            return false;
        };
        let marker = kind == Kind::Capture && opts.ready_file.as_ref().is_some_and(|m| path.join(m).exists());
        let u = self.table.units.get_mut(&key).expect("listed");
        if u.observe(sig, now) {
            u.immediate = false;
            if u.state == State::Idle {
                u.state = State::Pending;
            }
        }
        // The system is asked only when the settle clock says complete (see `Unit::complete`).
        let writing = if u.kind == Kind::File && !u.immediate && u.settle().settled(now, opts.settle) {
            self.open_for_writing(&path, now)
        } else {
            None
        };
        let u = self.table.units.get_mut(&key).expect("listed");
        if !u.complete(marker, now, opts.settle, || writing) {
            if opts.once && now.duration_since(self.started) > once_patience(opts.settle) {
                eprintln!("upload: {}: still changing; left for the next run", path.display());
                u.state = State::Idle;
            }
            return false;
        }
        if let Some(seen) = handled(u.last().as_ref(), sig, now, opts.once) {
            u.state = State::Idle;
            if seen == Handled::Final {
                u.immediate = false;
            }
            return false;
        }
        // A capture directory counts as large: a few at a time, as a large file.
        let size = if kind == Kind::Capture { AUTO_FILES_BYTES } else { sig.0 };
        if !self.gate.admits(size) {
            // Looked at again first once an upload ends.
            self.backlog.push_front(key);
            return true;
        }
        u.state = State::InFlight { changed: false };
        u.immediate = false;
        let fresh = u.fresh;
        self.gate.start(size);
        self.dispatch(key, sig, kind, path, size, fresh);
        false
    }

    /// Starts the attempt at a complete unit, with the settings in force now: a file, or a
    /// capture directory as one zip; resumed from its journal unless it must start over.
    fn dispatch(&mut self, key: Key, sig: Sig, kind: Kind, path: PathBuf, size: u64, fresh: bool) {
        let resume = self.settings.uploader.resumes() && !fresh;
        let item = match kind {
            Kind::File => Item::File(path),
            Kind::Capture => Item::ZipDir(path),
        };
        let settings = self.settings.clone();
        let (board, selection, run_cancel) = (self.board, self.table.selection, self.cancel.child_token());
        let metrics = self.metrics.clone();
        self.inflight.push(Box::pin(async move {
            let t0 = Instant::now();
            let options = RunOptions { resume, ..settings.run_options(selection) };
            let res = attempt(&settings.uploader, &item, &options, board, metrics, run_cancel).await;
            Attempt { key, sig, item, size, res, elapsed: t0.elapsed() }
        }));
    }

    /// The end: with `--once` (and not stopped) the provider's `finish` (Apertur `--wait`
    /// follows the session's deliveries), then the summary. The exit code: `--once` the worst
    /// file's, else 0; 9 when the time limit stopped it.
    async fn stop(self) -> i32 {
        drop(self.inflight);
        let summary = &self.reporter.summary;
        let mut code = if self.opts.once { summary.exit_code() } else { crate::cli::report::exit::OK };
        let stopped =
            !self.cancel.is_cancelled() && self.limit.as_ref().is_some_and(crate::engine::wait::TimeLimit::reached);
        if stopped {
            code = code.max(crate::cli::report::exit::STOPPED);
        }
        if self.opts.once
            && !self.cancel.is_cancelled()
            && !stopped
            && let Err(err) = self.settings.uploader.finish(&self.cancel.child_token()).await
        {
            crate::cli::report_error(&err);
            code = code.max(crate::cli::report::exit_code(&err));
        }
        summary.print(self.started.elapsed(), self.board.sent(), self.output.quiet);
        if self.interrupted > 0 {
            eprintln!(
                "upload: watch: {} upload(s) interrupted; they resume when the watcher starts again",
                self.interrupted
            );
        }
        if stopped {
            eprintln!("{}", crate::cli::batch::stopped_line());
        }
        code
    }
}

/// How many times in a row the version `sent` has failed, counting the failure just seen.
fn failures_after(last: Option<&(Sig, Last)>, sent: Sig) -> u32 {
    match last {
        Some((s, Last::Failed { failures, .. })) if *s == sent => failures + 1,
        _ => 1,
    }
}

/// Whether a complete unit needs no attempt now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handled {
    /// This very version was uploaded or refused for good.
    Final,
    /// This very version failed and is not due again yet (or `--once`: not in this run).
    Waiting,
}

/// Whether the version `sig` of a complete unit was handled already (see [`Handled`]); `None`:
/// it is to be sent.
fn handled(last: Option<&(Sig, Last)>, sig: Sig, now: Instant, once: bool) -> Option<Handled> {
    match last {
        Some((s, Last::Done | Last::Refused)) if *s == sig => Some(Handled::Final),
        Some((s, Last::Failed { retry_at, .. })) if *s == sig && (*retry_at > now || once) => Some(Handled::Waiting),
        _ => None,
    }
}

/// One attempt at a unit: the provider's check of the file first (Apertur refuses types and
/// sizes here), then the library's per-file step.
async fn attempt(
    uploader: &crate::uploader::Uploader,
    item: &Item,
    options: &RunOptions,
    board: &ui::Board,
    metrics: Option<Arc<Metrics>>,
    cancel: CancellationToken,
) -> Result<FileResult> {
    if let Item::File(_) = item {
        // What the provider refuses locally (type, size) is refused before any request.
        uploader.check(item)?;
        if let Some((_, err)) = uploader.prepare(std::slice::from_ref(item), &cancel).await?.pop() {
            return Err(err);
        }
    }
    let progress_for = |i: &Item| match &metrics {
        Some(m) => m.progress(bar_for(board, i)),
        None => bar_for(board, i),
    };
    uploader.upload_item(item, options, &progress_for, cancel).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_secs(5);

    #[test]
    fn a_version_handled_already_is_not_sent_again() {
        let now = Instant::now();
        let (sig, other) = ((10, 1), (11, 2));
        assert_eq!(handled(None, sig, now, false), None);
        assert_eq!(handled(Some(&(sig, Last::Done)), sig, now, false), Some(Handled::Final));
        assert_eq!(handled(Some(&(sig, Last::Refused)), sig, now, false), Some(Handled::Final));
        assert_eq!(handled(Some(&(other, Last::Done)), sig, now, false), None, "a new version is sent");
        let later = Last::Failed { failures: 1, retry_at: now + SETTLE };
        assert_eq!(handled(Some(&(sig, later.clone())), sig, now, false), Some(Handled::Waiting));
        assert_eq!(handled(Some(&(other, later)), sig, now, false), None, "a new version is not held back");
        let due = Last::Failed { failures: 1, retry_at: now };
        assert_eq!(handled(Some(&(sig, due.clone())), sig, now, false), None);
        assert_eq!(handled(Some(&(sig, due)), sig, now, true), Some(Handled::Waiting), "--once: one attempt");
    }

    #[test]
    fn failures_count_per_version() {
        let (sig, other) = ((10, 1), (11, 2));
        let failed = |n| Last::Failed { failures: n, retry_at: Instant::now() };
        assert_eq!(failures_after(None, sig), 1);
        assert_eq!(failures_after(Some(&(sig, failed(2))), sig), 3);
        assert_eq!(failures_after(Some(&(other, failed(2))), sig), 1);
        assert_eq!(failures_after(Some(&(sig, Last::Done)), sig), 1);
    }

    #[test]
    fn once_waits_for_a_changing_file_three_settles_or_30_s_more() {
        assert_eq!(once_patience(Duration::from_secs(5)), Duration::from_secs(35));
        assert_eq!(once_patience(Duration::from_secs(60)), Duration::from_secs(180));
    }
}
