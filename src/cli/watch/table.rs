//! What the watcher knows: its units (a file, or a bulk-images capture directory) with their
//! settle clocks, writers and last outcomes, found by scans and kept up to date by the
//! file-system events. When a unit is taken and what follows an attempt is the watcher's
//! ([`super::Watcher`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind};

use super::schedule::{self, Settle};
use crate::run::Selection;

/// What a unit looks like: (bytes, mtime in ns since the epoch: a u64 until 2554, its low
/// bits after) of a file; (bytes, a hash of the listing of names, sizes and mtimes) of a
/// capture directory. Two words: the watcher keeps one or two per unit it ever saw.
pub(super) type Sig = (u64, u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    File,
    Capture,
}

#[derive(Clone, Debug)]
pub(super) enum Last {
    Done,
    Refused,
    Failed { failures: u32, retry_at: Instant },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Seen changing: waiting until it is complete.
    Pending,
    /// Being uploaded; `changed` when an event said it changed meanwhile.
    InFlight { changed: bool },
    /// Nothing to do until it changes (or, after a failure, until its retry time).
    Idle,
}

/// What the watcher keeps of each unit it saw (kept small: one per file of a directory of
/// a hundred thousand): one signature, the one its settle clock last saw. The signature an
/// attempt sent travels with the attempt; the outcome kept is that of this very version.
pub(super) struct Unit {
    settle: Settle<Sig>,
    /// The outcome of the last attempt at the version `settle` holds (forgotten when the
    /// version changes: no later attempt is for the old one).
    last: Option<Last>,
    pub(super) kind: Kind,
    /// A writer has it open (inotify saw a write or a creation, and no close since).
    pub(super) open: bool,
    /// Appeared by a rename: complete at once.
    pub(super) immediate: bool,
    pub(super) state: State,
    /// The next attempt starts over instead of resuming (the journal belongs to an older version).
    pub(super) fresh: bool,
}

/// A watched directory: as given (the paths reported), and canonical (the paths events name).
pub(super) struct Root {
    pub(super) given: PathBuf,
    pub(super) canon: PathBuf,
}

/// A unit: the index of its root, and its path relative to it (shared: the backlog and the
/// attempt in flight hold the key without a copy of the path).
pub(super) type Key = (usize, Arc<Path>);

/// How long after a new directory's event it is scanned a second time.
const RESCAN_AFTER: Duration = Duration::from_secs(1);

/// The watcher's table of what it knows: the roots, what it takes of them, and its units.
pub(super) struct Table<'a> {
    pub(super) roots: Vec<Root>,
    pub(super) selection: &'a Selection,
    pub(super) recursive: bool,
    pub(super) bulk: bool,
    pub(super) inotify: bool,
    pub(super) ignore: Vec<PathBuf>,
    pub(super) units: HashMap<Key, Unit>,
    /// New directories to scan once more, at the instant given: a file written into a new
    /// sub-directory before its watch was in place sends no event, and the first scan (at the
    /// directory's event) may have come before the file did.
    pub(super) rescans: Vec<(Instant, usize, PathBuf)>,
    /// What the scans could not take (a dangling link, an unreadable directory, a FIFO), to
    /// report once each.
    pub(super) problems: Vec<crate::run::WalkProblem>,
}

fn mtime_ns(m: &std::fs::Metadata) -> u64 {
    // Truncated after 2554: the low bits still change with the mtime.
    m.modified().ok().and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as u64)
}

fn age_of(m: &std::fs::Metadata) -> Duration {
    m.modified().ok().and_then(|t| SystemTime::now().duration_since(t).ok()).unwrap_or_default()
}

impl Table<'_> {
    pub(super) fn path(&self, key: &Key) -> PathBuf {
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
    pub(super) fn stat(&self, key: &Key, kind: Kind) -> Option<(Sig, Duration)> {
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
                Some(((bytes, h.finish()), youngest))
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
            let first = Path::new(rel.components().next()?.as_os_str());
            // Loose files in the root are not captures.
            if rel.components().count() == 1 && !path.is_dir() {
                return None;
            }
            return Some(((i, first.into()), Kind::Capture));
        }
        if !self.recursive && rel.components().count() > 1 {
            return None;
        }
        if path.is_dir() || !self.selection.keeps(rel) {
            return None;
        }
        Some(((i, rel.into()), Kind::File))
    }

    /// Adds what a scan of `dir` (inside root `i`) finds and the table does not know yet.
    fn scan_dir(&mut self, i: usize, dir: &Path, now: Instant) {
        let root = &self.roots[i];
        let Ok(prefix) = dir.strip_prefix(&root.given).map(Path::to_path_buf) else { return };
        if self.bulk {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for e in entries.flatten() {
                let rel = prefix.join(e.file_name());
                if e.path().is_dir() && !self.hidden(&rel) {
                    let canon = crate::engine::platform::canonicalize(e.path()).unwrap_or_else(|_| e.path());
                    if !self.ignored(&canon) {
                        self.add((i, rel.into()), Kind::Capture, now);
                    }
                }
            }
            return;
        }
        let walk = self.selection.walk(dir, self.recursive);
        self.problems.extend(walk.problems);
        // Room for them all at once: no growth by doubling, which holds the old table and the
        // new one at the same time.
        // (A rescan finds mostly known units: room for those beyond the count known.)
        self.units.reserve(walk.files.len().saturating_sub(self.units.len()));
        for rel in walk.files {
            let rel = if prefix.as_os_str().is_empty() { rel } else { prefix.join(rel) };
            if !self.selection.keeps(&rel) {
                continue;
            }
            let canon = crate::engine::platform::canonicalize(self.roots[i].given.join(&rel)).unwrap_or_default();
            if !self.ignored(&canon) {
                self.add((i, rel.into()), Kind::File, now);
            }
        }
    }

    /// A unit found by a scan, unless known already (or gone meanwhile): unchanged since its mtime.
    fn add(&mut self, key: Key, kind: Kind, now: Instant) {
        if self.units.contains_key(&key) {
            return;
        }
        if let Some((sig, age)) = self.stat(&key, kind) {
            self.units.insert(key, Unit::new(kind, sig, schedule::instant_ago(now, age)));
        }
    }

    /// The second scans of new directories that are due.
    pub(super) fn rescan_new_dirs(&mut self, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.rescans).into_iter().partition(|r| r.0 <= now);
        self.rescans = later;
        for (_, i, dir) in due {
            self.scan_dir(i, &dir, now);
        }
    }

    pub(super) fn scan_all(&mut self, now: Instant) {
        for i in 0..self.roots.len() {
            let dir = self.roots[i].given.clone();
            self.scan_dir(i, &dir, now);
        }
    }

    pub(super) fn on_event(&mut self, ev: Event, now: Instant) {
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
            u.touch(now);
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
    pub(super) fn new(kind: Kind, sig: Sig, since: Instant) -> Self {
        Unit {
            kind,
            settle: Settle::new(sig, since),
            open: false,
            immediate: false,
            state: State::Pending,
            last: None,
            fresh: false,
        }
    }

    /// The settle clock: unchanged since when.
    pub(super) fn settle(&self) -> &Settle<Sig> {
        &self.settle
    }

    /// Restarts the settle clock (an event said it changed).
    pub(super) fn touch(&mut self, now: Instant) {
        self.settle.touch(now);
    }

    /// The signature seen now; true (the clock restarted, the last outcome forgotten) when it changed.
    pub(super) fn observe(&mut self, sig: Sig, now: Instant) -> bool {
        let changed = self.settle.observe(sig, now);
        if changed {
            self.last = None;
        }
        changed
    }

    /// The outcome of the last attempt, with the signature it was for.
    pub(super) fn last(&self) -> Option<(Sig, Last)> {
        self.last.clone().map(|l| (*self.settle.sig(), l))
    }

    /// Records how the attempt at version `sent` ended (kept only while it is the version the
    /// settle clock holds, as it is from the start of an attempt to its end).
    pub(super) fn set_last(&mut self, sent: Sig, last: Last) {
        self.last = (sent == *self.settle.sig()).then_some(last);
    }

    /// Whether the tick looks at it: pending, or idle after a failure whose retry is due (not
    /// with `--once`: one attempt per run).
    pub(super) fn wanted(&self, now: Instant, once: bool) -> bool {
        let retry_due = matches!(&self.last, Some(Last::Failed { retry_at, .. }) if *retry_at <= now);
        self.state == State::Pending || (self.state == State::Idle && retry_due && !once)
    }

    /// Whether it is complete now: no writer known to have it open, and it appeared by a rename
    /// (or must start over), holds the `--ready-file` marker, or has settled. A settled file is
    /// complete only if `writing` (the system, asked) does not say a process has it open for
    /// writing: this catches a file found by a scan while being written, and a missed (or
    /// never sent) close, which `writing` saying "no" makes up for.
    pub(super) fn complete(
        &mut self,
        marker: bool,
        now: Instant,
        settle: Duration,
        writing: impl FnOnce() -> Option<bool>,
    ) -> bool {
        let settled = self.settle.settled(now, settle);
        let mut complete = !self.open && (self.immediate || marker || settled);
        if self.kind == Kind::File && !self.immediate && settled {
            match writing() {
                Some(true) => complete = false,
                Some(false) if self.open => {
                    self.open = false;
                    complete = true;
                }
                _ => {}
            }
        }
        complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_secs(5);

    fn file(since: Instant) -> Unit {
        Unit::new(Kind::File, (10, 1), since)
    }

    #[test]
    fn a_settled_file_is_complete_unless_a_writer_has_it_open() {
        let t0 = Instant::now();
        let (early, late) = (t0 + Duration::from_secs(1), t0 + SETTLE);
        let mut u = file(t0);
        // Not settled: the system is not asked.
        assert!(!u.complete(false, early, SETTLE, || panic!("asked before settling")));
        assert!(u.complete(false, late, SETTLE, || Some(false)));
        assert!(!u.complete(false, late, SETTLE, || Some(true)), "a writer still has it open");
        assert!(u.complete(false, late, SETTLE, || None), "unknown: the settle rule decides");
        // A write seen and no close: the system saying "no writer" makes up for the lost close.
        u.open = true;
        assert!(!u.complete(false, late, SETTLE, || None));
        assert!(u.complete(false, late, SETTLE, || Some(false)));
        assert!(!u.open);
        // Renamed in: complete at once, nobody asked.
        let mut u = file(t0);
        u.immediate = true;
        assert!(u.complete(false, early, SETTLE, || panic!("asked about a renamed file")));
        u.open = true;
        assert!(!u.complete(false, early, SETTLE, || panic!("asked about a renamed file")));
    }

    #[test]
    fn a_capture_is_complete_when_settled_or_marked() {
        let t0 = Instant::now();
        let mut u = Unit::new(Kind::Capture, (10, 1), t0);
        let early = t0 + Duration::from_secs(1);
        assert!(!u.complete(false, early, SETTLE, || panic!("a directory is not asked")));
        assert!(u.complete(true, early, SETTLE, || panic!("a directory is not asked")));
        assert!(u.complete(false, t0 + SETTLE, SETTLE, || panic!("a directory is not asked")));
    }

    #[test]
    fn an_outcome_is_kept_for_its_version_only() {
        let now = Instant::now();
        let mut u = file(now);
        u.set_last((10, 1), Last::Done);
        assert!(matches!(u.last(), Some(((10, 1), Last::Done))));
        assert!(!u.observe((10, 1), now), "the same version");
        assert!(matches!(u.last(), Some(((10, 1), Last::Done))));
        assert!(u.observe((11, 2), now), "a new version");
        assert!(u.last().is_none(), "no attempt at the new version yet");
        u.set_last((10, 1), Last::Refused);
        assert!(u.last().is_none(), "an outcome for another version is not kept");
    }

    #[test]
    fn a_unit_and_its_key_are_small() {
        // A hash table bucket per file ever seen: 100,000 files take 131,072 of them.
        assert!(std::mem::size_of::<(Key, Unit)>() <= 88, "{}", std::mem::size_of::<(Key, Unit)>());
        assert_eq!(std::mem::size_of::<Sig>(), 16);
    }

    #[test]
    fn the_tick_looks_at_pending_units_and_failures_due() {
        let now = Instant::now();
        let mut u = file(now);
        assert!(u.wanted(now, false), "a new unit is pending");
        u.state = State::InFlight { changed: false };
        assert!(!u.wanted(now, false));
        u.state = State::Idle;
        assert!(!u.wanted(now, false));
        u.set_last((10, 1), Last::Failed { failures: 1, retry_at: now + SETTLE });
        assert!(!u.wanted(now, false), "not due yet");
        assert!(u.wanted(now + SETTLE, false));
        assert!(!u.wanted(now + SETTLE, true), "--once: one attempt");
    }
}
