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
//! All the waiting (settle, ticks, backoff) is [`schedule`]'s.

mod open;
mod schedule;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use futures::future::LocalBoxFuture;
use futures::stream::FuturesUnordered;
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher as _};
use tokio_util::sync::CancellationToken;

use crate::cli::args::{AfterUpload, OutputArgs, ProviderName, WatchArgs};
use crate::cli::batch::{Reporter, bar_for};
use crate::cli::settings::UploadSettings;
use crate::cli::ui;
use crate::error::{Error, Result};
use crate::run::{End, FileEnd, FileResult, Item, RunOptions, Selection};
use schedule::{Settle, Ticker};

/// What a unit looks like: (bytes, mtime in ns) of a file; (bytes, a hash of the listing of
/// names, sizes and mtimes) of a capture directory.
type Sig = (u64, u128);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Capture,
}

#[derive(Clone, Debug)]
enum Last {
    Done,
    Refused,
    Failed { failures: u32, retry_at: Instant },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Seen changing: waiting until it is complete.
    Pending,
    /// Being uploaded; `changed` when an event said it changed meanwhile.
    InFlight { changed: bool },
    /// Nothing to do until it changes (or, after a failure, until its retry time).
    Idle,
}

struct Unit {
    kind: Kind,
    settle: Settle<Sig>,
    /// A writer has it open (inotify saw a write or a creation, and no close since).
    open: bool,
    /// Appeared by a rename: complete at once.
    immediate: bool,
    state: State,
    /// The outcome of the last attempt, and the signature it was for.
    last: Option<(Sig, Last)>,
    /// The signature of the attempt in flight.
    sent: Option<Sig>,
    /// The next attempt starts over instead of resuming (the journal belongs to an older version).
    fresh: bool,
}

struct Root {
    given: PathBuf,
    canon: PathBuf,
}

type Key = (usize, PathBuf);

/// The watcher's table of what it knows.
/// How long after a new directory's event it is scanned a second time.
const RESCAN_AFTER: Duration = Duration::from_secs(1);

struct Table<'a> {
    roots: Vec<Root>,
    selection: &'a Selection,
    recursive: bool,
    bulk: bool,
    inotify: bool,
    ignore: Vec<PathBuf>,
    units: HashMap<Key, Unit>,
    /// New directories to scan once more, at the instant given: a file written into a new
    /// sub-directory before its watch was in place sends no event, and the first scan (at the
    /// directory's event) may have come before the file did.
    rescans: Vec<(Instant, usize, PathBuf)>,
    /// What the scans could not take (a dangling link, an unreadable directory, a FIFO), to
    /// report once each.
    problems: Vec<crate::run::WalkProblem>,
}

fn mtime_ns(m: &std::fs::Metadata) -> u128 {
    m.modified().ok().and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos())
}

fn age_of(m: &std::fs::Metadata) -> Duration {
    m.modified().ok().and_then(|t| SystemTime::now().duration_since(t).ok()).unwrap_or_default()
}

impl Table<'_> {
    fn path(&self, key: &Key) -> PathBuf {
        self.roots[key.0].given.join(&key.1)
    }

    fn ignored(&self, canonical: &Path) -> bool {
        self.ignore.iter().any(|i| canonical.starts_with(i))
    }

    fn hidden(&self, rel: &Path) -> bool {
        !self.selection.hidden() && rel.components().any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
    }

    /// The signature of a unit now and how long it has been unchanged by its mtime; `None`
    /// when it is gone (or no longer a file / a directory).
    fn stat(&self, key: &Key, kind: Kind) -> Option<(Sig, Duration)> {
        let path = self.path(key);
        match kind {
            Kind::File => {
                let m = std::fs::metadata(&path).ok().filter(|m| m.is_file())?;
                Some(((m.len(), mtime_ns(&m)), age_of(&m)))
            }
            Kind::Capture => {
                use std::hash::{Hash, Hasher};
                if !std::fs::metadata(&path).ok()?.is_dir() {
                    return None;
                }
                let files = self.selection.walk(&path, true).files;
                let mut h = std::collections::hash_map::DefaultHasher::new();
                let (mut bytes, mut youngest) = (0u64, Duration::MAX);
                for rel in &files {
                    let Ok(m) = std::fs::metadata(path.join(rel)) else { continue };
                    (rel, m.len(), mtime_ns(&m)).hash(&mut h);
                    bytes += m.len();
                    youngest = youngest.min(age_of(&m));
                }
                if files.is_empty() {
                    youngest = std::fs::metadata(&path).map(|m| age_of(&m)).unwrap_or_default();
                }
                Some(((bytes, h.finish() as u128), youngest))
            }
        }
    }

    /// The unit a path belongs to: (key, kind), or `None` when the watcher does not take it.
    fn unit_of(&self, path: &Path) -> Option<(Key, Kind)> {
        let (i, root) = self.roots.iter().enumerate().find(|(_, r)| path.starts_with(&r.canon))?;
        if self.ignored(path) {
            return None;
        }
        let rel = path.strip_prefix(&root.canon).ok()?;
        if rel.as_os_str().is_empty() || self.hidden(rel) {
            return None;
        }
        if self.bulk {
            let first: PathBuf = rel.components().next()?.as_os_str().into();
            // Loose files in the root are not captures.
            if rel.components().count() == 1 && !path.is_dir() {
                return None;
            }
            return Some(((i, first), Kind::Capture));
        }
        if !self.recursive && rel.components().count() > 1 {
            return None;
        }
        if path.is_dir() || !self.selection.keeps(rel) {
            return None;
        }
        Some(((i, rel.to_path_buf()), Kind::File))
    }

    /// Adds (or refreshes) what a scan of `dir` (inside root `i`) finds.
    fn scan_dir(&mut self, i: usize, dir: &Path, now: Instant) {
        let root = &self.roots[i];
        let Ok(prefix) = dir.strip_prefix(&root.given).map(Path::to_path_buf) else { return };
        let mut found: Vec<(Key, Kind)> = vec![];
        if self.bulk {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for e in entries.flatten() {
                let rel = prefix.join(e.file_name());
                if e.path().is_dir() && !self.hidden(&rel) {
                    let canon = crate::engine::platform::canonicalize(e.path()).unwrap_or_else(|_| e.path());
                    if !self.ignored(&canon) {
                        found.push(((i, rel), Kind::Capture));
                    }
                }
            }
        } else {
            let walk = self.selection.walk(dir, self.recursive);
            self.problems.extend(walk.problems);
            for rel in walk.files {
                let rel = prefix.join(rel);
                if !self.selection.keeps(&rel) {
                    continue;
                }
                let canon = crate::engine::platform::canonicalize(root.given.join(&rel)).unwrap_or_default();
                if !self.ignored(&canon) {
                    found.push(((i, rel), Kind::File));
                }
            }
        }
        for (key, kind) in found {
            if self.units.contains_key(&key) {
                continue;
            }
            if let Some((sig, age)) = self.stat(&key, kind) {
                self.units.insert(key, Unit::new(kind, sig, schedule::instant_ago(now, age)));
            }
        }
    }

    /// The second scans of new directories that are due.
    fn rescan_new_dirs(&mut self, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.rescans).into_iter().partition(|r| r.0 <= now);
        self.rescans = later;
        for (_, i, dir) in due {
            self.scan_dir(i, &dir, now);
        }
    }

    fn scan_all(&mut self, now: Instant) {
        for i in 0..self.roots.len() {
            let dir = self.roots[i].given.clone();
            self.scan_dir(i, &dir, now);
        }
    }

    fn on_event(&mut self, ev: Event, now: Instant) {
        if ev.need_rescan() {
            tracing::info!("watch: events were lost; scanning again");
            for u in self.units.values_mut() {
                u.open = false;
            }
            self.scan_all(now);
            return;
        }
        let (data, closed, created) = match ev.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => (false, true, false),
            EventKind::Access(_) => return,
            EventKind::Modify(ModifyKind::Data(_)) => (true, false, false),
            EventKind::Create(CreateKind::File) => (true, false, true),
            _ => (false, false, false),
        };
        for (n, path) in ev.paths.iter().enumerate() {
            let renamed_in = matches!(ev.kind, EventKind::Modify(ModifyKind::Name(RenameMode::To)))
                || (matches!(ev.kind, EventKind::Modify(ModifyKind::Name(RenameMode::Both))) && n == 1);
            // A directory that appears may already hold files (created before its watch).
            if (renamed_in || matches!(ev.kind, EventKind::Create(_)))
                && path.is_dir()
                && !self.bulk
                && let Some(i) = self.roots.iter().position(|r| path.starts_with(&r.canon))
                && let Ok(rel) = path.strip_prefix(&self.roots[i].canon)
            {
                let dir = self.roots[i].given.join(rel);
                if self.recursive && !self.hidden(rel) {
                    self.scan_dir(i, &dir, now);
                    self.rescans.push((now + RESCAN_AFTER, i, dir));
                }
                continue;
            }
            let Some((key, kind)) = self.unit_of(path) else { continue };
            let immediate = renamed_in && kind == Kind::File;
            let inotify = self.inotify;
            if !self.units.contains_key(&key) {
                let Some((sig, _)) = self.stat(&key, kind) else { continue };
                self.units.insert(key.clone(), Unit::new(kind, sig, now));
            }
            let u = self.units.get_mut(&key).expect("just inserted");
            u.settle.touch(now);
            if inotify && kind == Kind::File {
                if data || created {
                    u.open = true;
                }
                if closed {
                    u.open = false;
                }
            }
            if immediate {
                u.open = false;
                u.immediate = true;
            } else if data {
                u.immediate = false;
            }
            match &mut u.state {
                State::InFlight { changed } => *changed = true,
                s => *s = State::Pending,
            }
        }
    }
}

impl Unit {
    fn new(kind: Kind, sig: Sig, since: Instant) -> Self {
        Unit {
            kind,
            settle: Settle::new(sig, since),
            open: false,
            immediate: false,
            state: State::Pending,
            last: None,
            sent: None,
            fresh: false,
        }
    }
}

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
    item: Item,
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
pub(crate) async fn run(args: WatchArgs, output: OutputArgs, inv: &crate::cli::settings::Invocation) -> Result<i32> {
    let net = inv.net.clone();
    let opts = args.watch.clone();
    let up = &args.upload;
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
    let mut roots = vec![];
    for dir in &up.files {
        let canon = crate::engine::platform::canonicalize(dir).ok().filter(|p| p.is_dir()).ok_or_else(|| {
            Error::usage(
                format!("{} is not a directory", dir.display()),
                "upload watch takes directories; upload single files with `upload FILE`",
            )
        })?;
        roots.push(Root { given: dir.clone(), canon });
    }
    let cancel = CancellationToken::new();
    let mut hups = signals(cancel.clone());

    let mut settings = Arc::new(UploadSettings::from_args(up, &output, cancel.clone(), inv)?);
    let selection = Selection::new(up.recursive, up.hidden, &up.include, &up.exclude)?;
    let bulk = settings.provider == ProviderName::Teleport && up.teleport.format.as_deref() == Some("bulk-images");
    let concurrent_files = settings.uploader.provider().concurrent_files();
    let files_at_once = match up.files_at_once {
        crate::cli::args::AutoCount::Fixed(n) => (n as usize).max(concurrent_files),
        crate::cli::args::AutoCount::Auto => crate::engine::tune::AUTO_FILES_MIN.max(concurrent_files),
    };
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

    // Watch first, then scan: nothing that arrives in between is missed.
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel::<notify::Result<Event>>();
    let handler = move |ev: notify::Result<Event>| {
        let _ = tx.send(ev);
    };
    let mode = if up.recursive || bulk { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
    let watch_err = |e: notify::Error| {
        Error::usage(
            format!("cannot watch the directories: {e}"),
            "raise fs.inotify.max_user_watches, or pass --poll 10s to scan instead",
        )
    };
    let _watcher: Option<Box<dyn notify::Watcher>> = if opts.once {
        None
    } else if let Some(every) = opts.poll {
        let mut w = notify::PollWatcher::new(handler, notify::Config::default().with_poll_interval(every))
            .map_err(watch_err)?;
        for r in &roots {
            w.watch(&r.canon, mode).map_err(watch_err)?;
        }
        Some(Box::new(w))
    } else {
        let mut w = notify::recommended_watcher(handler).map_err(watch_err)?;
        for r in &roots {
            w.watch(&r.canon, mode).map_err(watch_err)?;
        }
        Some(Box::new(w))
    };

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

    let board = ui::Board::new(ui::Mode::detect(output.quiet, output.json));
    let mut reporter = Reporter::new(&settings.uploader, up.force, &board, &output).holding_skips();
    let mut interrupted = 0u32;
    let mut inflight: FuturesUnordered<LocalBoxFuture<'_, Attempt>> = FuturesUnordered::new();
    let mut ticker = Ticker::new(schedule::tick_interval(opts.settle));
    // --once: a file still changing this long after the scan is left for the next run.
    let patience = (opts.settle * 3).max(opts.settle + Duration::from_secs(30));
    let mut first_tick = true;
    if !output.quiet {
        let how = if opts.once {
            "one scan".to_string()
        } else if let Some(p) = opts.poll {
            format!("scanning every {:?}", p)
        } else {
            "inotify".to_string()
        };
        eprintln!(
            "upload: watch: {} unit(s) found in {} director{} ({how}, settle {:?})",
            table.units.len(),
            table.roots.len(),
            if table.roots.len() == 1 { "y" } else { "ies" },
            opts.settle
        );
    }

    let mut problems_reported: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    loop {
        // What a scan could not take is reported once, by path, as a batch run reports it.
        for problem in std::mem::take(&mut table.problems) {
            if problems_reported.insert(problem.path.clone()) {
                let item = Item::File(problem.path.clone());
                if let Err(e) = reporter.refused(&item, &problem.into_error(), false) {
                    crate::cli::report_error(&e);
                    cancel.cancel();
                }
            }
        }
        let stopping = cancel.is_cancelled();
        if stopping && inflight.is_empty() {
            break;
        }
        if opts.once && inflight.is_empty() && !first_tick && table.units.values().all(|u| u.state == State::Idle) {
            break;
        }
        tokio::select! {
            biased;
            Some(a) = inflight.next(), if !inflight.is_empty() => {
                let Attempt { key, item, mut res, elapsed } = a;
                let now = Instant::now();
                let path = table.path(&key);
                let current = table.units.get(&key).and_then(|u| table.stat(&key, u.kind)).map(|(s, _)| s);
                let Some(u) = table.units.get_mut(&key) else { continue };
                let sent = u.sent.take().unwrap_or(*u.settle.sig());
                let changed = matches!(u.state, State::InFlight { changed: true }) || current != Some(sent);
                u.state = if changed { State::Pending } else { State::Idle };
                match &mut res {
                    Ok(FileResult::Uploaded(_) | FileResult::Skipped(..)) => {
                        u.last = Some((sent, Last::Done));
                        u.fresh = false;
                        if !changed && opts.after_upload != AfterUpload::Keep {
                            let what = match &opts.after_upload {
                                AfterUpload::Move(dir) => {
                                    let to = dir.join(&key.1);
                                    move_path(&path, &to).map(|()| format!("moved to {}", to.display()))
                                }
                                _ if u.kind == Kind::Capture => std::fs::remove_dir_all(&path).map(|()| "deleted".to_string()),
                                _ => std::fs::remove_file(&path).map(|()| "deleted".to_string()),
                            };
                            match what {
                                Ok(what) => {
                                    if let Ok(FileResult::Uploaded(o)) = &mut res {
                                        o.fields.insert("after_upload".into(), what.clone().into());
                                    }
                                    tracing::info!("{}: {what}", path.display());
                                    table.units.remove(&key);
                                }
                                Err(e) => eprintln!("upload: warning: {}: uploaded, but --after-upload failed: {e}", path.display()),
                            }
                        }
                    }
                    Ok(_) => u.last = Some((sent, Last::Done)),
                    Err(Error::Interrupted { .. }) => {
                        interrupted += 1;
                        u.state = State::Pending;
                        continue;
                    }
                    Err(e) if journal_outdated(e) && !u.fresh => {
                        // The file changed while its upload was interrupted: a new upload of it as it is.
                        tracing::info!("{}: changed since its interrupted upload; starting over", path.display());
                        u.fresh = true;
                        u.immediate = true;
                        u.state = State::Pending;
                        continue;
                    }
                    Err(e) => {
                        let last = match classify(e) {
                            Last::Failed { .. } => {
                                let failures = match &u.last {
                                    Some((s, Last::Failed { failures, .. })) if *s == sent => failures + 1,
                                    _ => 1,
                                };
                                let delay = schedule::failed_backoff(opts.retry_failed_after, failures);
                                if !opts.once && !stopping {
                                    eprintln!("upload: {}: will be tried again in {}", path.display(), crate::size::human_duration(delay));
                                }
                                Last::Failed { failures, retry_at: now + delay }
                            }
                            other => other,
                        };
                        u.last = Some((sent, last));
                    }
                }
                let end = match res {
                    Ok(r) => End::Done(r),
                    Err(e) if matches!(classify(&e), Last::Refused) => End::Refused(e),
                    Err(e) => End::Failed(e),
                };
                let reported = reporter.end(FileEnd { item: &item, end, elapsed });
                if let Err(e) = reported {
                    // stdout is gone: nothing more can be reported.
                    crate::cli::report_error(&e);
                    cancel.cancel();
                }
                // Files found already uploaded (a restart over old files): one line for the lot,
                // once the round in flight is over; -v names each.
                if inflight.is_empty() && !output.quiet {
                    let held = reporter.take_held_skips();
                    if held > 0 {
                        let files = if held == 1 { "file" } else { "files" };
                        board.println(&format!("upload: watch: {held} {files} already uploaded, not sent again (-v lists them)"));
                    }
                }
            }
            Some(ev) = events.recv() => match ev {
                Ok(ev) => table.on_event(ev, Instant::now()),
                Err(e) => tracing::warn!("watch: {e}"),
            },
            Some(()) = hups.recv() => {
                // The configuration file is read again: a reload takes its changes.
                let reloaded = crate::cli::config::ConfigFile::load().and_then(|config| {
                    let inv = crate::cli::settings::Invocation { config, net: net.clone() };
                    UploadSettings::from_args(up, &output, cancel.clone(), &inv)
                });
                match reloaded {
                    Ok(s) => {
                        settings = Arc::new(s);
                        eprintln!("upload: watch: configuration re-read (files started from now on use it)");
                    }
                    Err(e) => {
                        crate::cli::report_error(&e);
                        eprintln!("upload: watch: keeping the previous configuration");
                    }
                }
            }
            alive = ticker.tick(&cancel), if !stopping => {
                if !alive {
                    continue;
                }
                first_tick = false;
                let now = Instant::now();
                table.rescan_new_dirs(now);
                let mut look: Vec<(Duration, Key)> = table
                    .units
                    .iter()
                    .filter(|(_, u)| {
                        let retry_due =
                            matches!(&u.last, Some((_, Last::Failed { retry_at, .. })) if *retry_at <= now);
                        u.state == State::Pending || (u.state == State::Idle && retry_due && !opts.once)
                    })
                    .map(|(k, u)| (u.settle.age(now), k.clone()))
                    .collect();
                look.sort_by_key(|l| std::cmp::Reverse(l.0));
                for (_, key) in look {
                    let kind = table.units[&key].kind;
                    let path = table.path(&key);
                    let Some((sig, _)) = table.stat(&key, kind) else {
                        table.units.remove(&key);
                        continue;
                    };
                    let marker = kind == Kind::Capture && opts.ready_file.as_ref().is_some_and(|m| path.join(m).exists());
                    let u = table.units.get_mut(&key).expect("listed");
                    if u.settle.observe(sig, now) {
                        u.immediate = false;
                        if u.state == State::Idle {
                            u.state = State::Pending;
                        }
                    }
                    let mut complete = !u.open && (u.immediate || marker || u.settle.settled(now, opts.settle));
                    if kind == Kind::File && !u.immediate && u.settle.settled(now, opts.settle) {
                        // Settled: ask the kernel whether a writer still has it open. This catches a
                        // file found by a scan while being written, and a missed (or never sent) close.
                        match open::open_for_writing(&path) {
                            Some(true) => complete = false,
                            Some(false) if u.open => {
                                u.open = false;
                                complete = true;
                            }
                            _ => {}
                        }
                    }
                    if !complete {
                        if opts.once && now.duration_since(started) > patience {
                            eprintln!("upload: {}: still changing; left for the next run", path.display());
                            u.state = State::Idle;
                        }
                        continue;
                    }
                    // Already handled in this very state?
                    match &u.last {
                        Some((s, Last::Done | Last::Refused)) if *s == sig => {
                            u.state = State::Idle;
                            u.immediate = false;
                            continue;
                        }
                        Some((s, Last::Failed { retry_at, .. })) if *s == sig && (*retry_at > now || opts.once) => {
                            u.state = State::Idle;
                            continue;
                        }
                        _ => {}
                    }
                    if inflight.len() >= files_at_once {
                        continue;
                    }
                    u.state = State::InFlight { changed: false };
                    u.sent = Some(sig);
                    u.immediate = false;
                    let resume = settings.uploader.resumes() && !u.fresh;
                    let item = match kind {
                        Kind::File => Item::File(path),
                        Kind::Capture => Item::ZipDir(path),
                    };
                    let settings = settings.clone();
                    let (board, selection, run_cancel) = (&board, &selection, cancel.child_token());
                    inflight.push(Box::pin(async move {
                        let t0 = Instant::now();
                        let options = RunOptions { resume, ..settings.run_options(selection) };
                        let res = attempt(&settings.uploader, &item, &options, board, run_cancel).await;
                        Attempt { key, item, res, elapsed: t0.elapsed() }
                    }));
                }
            }
        }
    }
    drop(inflight);
    // Apertur --wait follows the deliveries of the session once the uploads ended.
    let summary = &reporter.summary;
    let mut code = if opts.once { summary.exit_code() } else { crate::cli::report::exit::OK };
    if opts.once
        && !cancel.is_cancelled()
        && let Err(err) = settings.uploader.finish(&cancel.child_token()).await
    {
        crate::cli::report_error(&err);
        code = code.max(crate::cli::report::exit_code(&err));
    }
    summary.print(started.elapsed(), board.sent(), output.quiet);
    if interrupted > 0 {
        eprintln!("upload: watch: {interrupted} upload(s) interrupted; they resume when the watcher starts again");
    }
    Ok(code)
}

/// One attempt at a unit: the provider's check of the file first (Apertur refuses types and
/// sizes here), then the library's per-file step.
async fn attempt(
    uploader: &crate::uploader::Uploader,
    item: &Item,
    options: &RunOptions,
    board: &ui::Board,
    cancel: CancellationToken,
) -> Result<FileResult> {
    if let Item::File(_) = item {
        // What the provider refuses locally (type, size) is refused before any request.
        uploader.check(item)?;
        if let Some(Some(err)) = uploader.prepare(std::slice::from_ref(item), &cancel).await?.pop() {
            return Err(err);
        }
    }
    uploader.upload_item(item, options, &|i: &Item| bar_for(board, i), cancel).await
}
