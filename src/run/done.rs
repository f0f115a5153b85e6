//! What the state directory remembers of finished uploads (done records, so a rerun skips
//! what was uploaded), and of `--force` runs in progress.

mod packed;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::journal::FileIdentity;
use crate::error::Result;
use crate::providers::UploadOutcome;

/// What the state directory remembers of a finished upload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DoneRecord {
    /// The file when it was uploaded.
    pub file: FileIdentity,
    /// Provider name.
    pub provider: String,
    /// Endpoint.
    pub endpoint: String,
    /// The provider's id.
    pub id: String,
    /// Final status.
    pub status: String,
    /// When (RFC 3339).
    pub uploaded_at: String,
    /// The options that decided where the file went (`--name`, `--destination`, ...), as
    /// given; part of the record's key: another destination is another upload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination: Vec<(String, String)>,
    /// The `--force` run that uploaded the file, when one did (see [`ForceRun`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_run: Option<String>,
    /// The receipt of the upload ([`UploadOutcome::crc64nvme`]); absent from older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc64nvme: Option<String>,
}

impl DoneRecord {
    /// What a skip says matched: `same file (...), provider, endpoint[, --name X]`.
    pub fn matched(&self) -> String {
        let rec = self;
        let mut s = format!("same file (path, size, mtime, content fingerprint), provider {}, endpoint", rec.provider);
        for (flag, value) in &rec.destination {
            s.push_str(&format!(", {flag} {value}"));
        }
        s
    }
}

/// A `--force` run in progress: `<state dir>/force/<key>.json` names it while it runs and is
/// removed when it ends without an interruption. Running the same `--force` command again
/// after a Ctrl-C carries on that run: files it already uploaded are not sent again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForceRun {
    /// The run's id, written into the done records of the files it uploads.
    pub id: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    #[serde(skip)]
    path: PathBuf,
}

impl ForceRun {
    /// The interrupted `--force` run of the same command (same provider, endpoint, files and
    /// destination), or a new one.
    pub fn begin(state_dir: &Path, key: &str) -> Result<ForceRun> {
        let name = hex::encode(&Sha256::digest(key.as_bytes())[..12]);
        let path = state_dir.join("force").join(format!("{name}.json"));
        if let Ok(text) = std::fs::read(&path)
            && let Ok(mut run) = serde_json::from_slice::<ForceRun>(&text)
        {
            run.path = path;
            return Ok(run);
        }
        let run = ForceRun { id: uuid::Uuid::new_v4().to_string(), started_at: chrono::Utc::now().to_rfc3339(), path };
        crate::engine::durable::write_atomic(&run.path, &serde_json::to_vec(&run).expect("serializes"))?;
        Ok(run)
    }

    /// The run ended without an interruption: the next `--force` run is a new one.
    pub fn end(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The key of a done record: its loose file's name without `.json`, and its line's key in the
/// packed file (`{provider}-{24 hex digits of SHA-256 over provider, endpoint, path and
/// destination}`).
fn done_key(provider: &str, endpoint: &str, path: &Path, destination: &[(String, String)]) -> String {
    let mut h = Sha256::new();
    h.update(format!("{provider}\n{endpoint}\n").as_bytes());
    h.update(path.as_os_str().as_encoded_bytes());
    for (flag, value) in destination {
        h.update(format!("\n{flag}={value}").as_bytes());
    }
    let key = hex::encode(h.finalize());
    format!("{provider}-{}", &key[..24])
}

/// Where the loose done record of an upload goes (`<state dir>/done/<key>.json`).
pub(crate) fn done_path(
    state_dir: &Path,
    provider: &str,
    endpoint: &str,
    identity: &FileIdentity,
    destination: &[(String, String)],
) -> PathBuf {
    let key = done_key(provider, endpoint, &identity.path, destination);
    state_dir.join("done").join(format!("{key}.json"))
}

/// The record of an earlier upload of this very file (same path, size, mtime, fingerprint)
/// to the same destination: its loose file when there is one (the newer), else its line of
/// the packed file (a binary search: O(log n) small reads).
pub fn find_done(
    state_dir: &Path,
    provider: &str,
    endpoint: &str,
    identity: &FileIdentity,
    destination: &[(String, String)],
) -> Option<DoneRecord> {
    let key = done_key(provider, endpoint, &identity.path, destination);
    let dir = state_dir.join("done");
    let line = match std::fs::read(dir.join(format!("{key}.json"))) {
        Ok(text) => crate::engine::journal::last_line(&text).to_vec(),
        // Read after the loose file: a compaction writes the packed file before it removes
        // the loose ones it took, so a record is always in one of the two.
        Err(_) => packed::lookup(&dir.join(PACKED), key.as_bytes()).ok()??,
    };
    let rec: DoneRecord = serde_json::from_slice(&line).ok()?;
    (rec.file.same_file(identity) && rec.destination == destination).then_some(rec)
}

/// How often [`prune`] looks through a state directory's done records.
pub const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Drops the done records that can never match again, at most once per [`PRUNE_EVERY`] for a
/// state directory (its `.done-pruned` marker tells when it last ran): a record only serves a
/// rerun of the very file it names, so a record whose file is gone (nothing at its path any
/// more, or a file of another size or modification time there) is dead, and so is a file in
/// `done/` that is not a record. Without this the state directory kept one file per file ever
/// uploaded (a watched inbox whose files move away after upload grows it for ever); with it,
/// the records are bounded by the files that still exist. It is a whole compaction
/// ([`compact`]): every loose record goes into the packed file, whose dead lines go too.
/// Returns how many records went. When another process compacts meanwhile, it does nothing
/// (and runs on the next call). Blocking (a stat per record): called off the async workers.
pub fn prune(state_dir: &Path) -> usize {
    let marker = state_dir.join(".done-pruned");
    let recent = std::fs::metadata(&marker)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < PRUNE_EVERY));
    if recent || !state_dir.join("done").is_dir() {
        return 0;
    }
    let Some(c) = compact(state_dir, Compaction::Prune) else { return 0 };
    let _ = crate::engine::durable::write_atomic(&marker, chrono::Utc::now().to_rfc3339().as_bytes());
    if c.dead > 0 {
        tracing::info!(records = c.dead, "done records of files that are gone were pruned");
    }
    c.dead
}

/// Keeps a state directory's done records small when a run ends: the daily [`prune`] when it
/// is due, else a [`compact`] when the loose records' blocks weigh a sixteenth of the packed
/// file (a compaction then rewrites at most 64 KiB of packed lines per record it takes in;
/// as a run goes, [`compaction_due`] waits for a quarter of the lines): so what a run leaves is mostly the
/// packed file. Blocking.
pub fn tidy(state_dir: &Path) {
    if prune(state_dir) == 0 && due(state_dir, LOOSE_COST, END_RATIO) {
        compact(state_dir, Compaction::Routine);
    }
}

/// [`tidy`] as a run or `watch` goes (after `written` records since the last look): compacts
/// when [`compaction_due`]. `done/` is listed only once this process's own records could make
/// a compaction due: listing it at every look read a quarter of the records' names again
/// every 64 records (19 million entries over a run of 100,000 files).
/// Returns whether `done/` was listed.
fn tidy_going(state_dir: &Path, written: u64) -> bool {
    let packed = std::fs::metadata(state_dir.join("done").join(PACKED)).map_or(0, |m| m.len());
    if written * LINE_COST * DUE_RATIO < packed {
        let _ = prune(state_dir);
        return false;
    }
    if prune(state_dir) == 0 && compaction_due(state_dir) {
        compact(state_dir, Compaction::Routine);
    }
    true
}

/// The name of the packed file in `done/`.
const PACKED: &str = "packed";

/// What a loose record is taken to cost on disk (a file's block), against its line in the
/// packed file.
const LOOSE_COST: u64 = 4096;

/// What a record takes in the packed file, about (a line of 400 to 500 bytes).
const LINE_COST: u64 = 512;

/// As a run goes, a compaction is due when the loose records number about a quarter of the
/// packed file's lines: loose × [`LINE_COST`] × 4 ≥ packed bytes. So the packed file grows by
/// a quarter at least between two rewrites: a run of n files rewrites about 5 n lines in all
/// (weighing the loose files' 4 KiB blocks instead, it grew by 3 % and rewrote 35 n: a run of
/// 100,000 files wrote 1.6 GB of packed lines, and its files per second fell with the count).
const DUE_RATIO: u64 = 4;

/// At the end of a run: a sixteenth ([`tidy`]).
const END_RATIO: u64 = 16;

/// At most this many loose records go into one pass of a compaction (what it keeps in memory:
/// their lines); a compaction makes passes until none are left.
const TAKE_MAX: usize = 8_192;

/// How many records this process writes between two looks at whether its state directory's
/// records want a compaction, and the longest time between two looks while records are written.
const LOOK_EVERY: u32 = 64;
const LOOK_AFTER: Duration = Duration::from_secs(600);

/// Whether the loose records of `state_dir` are due to be compacted as a run goes: there is
/// one, and they number about a quarter of the packed file's lines ([`DUE_RATIO`]). So a
/// compaction rewrites about 4 packed lines per loose record it takes in: its cost per record
/// does not grow with the state directory (a fixed count would rewrite a packed file of a
/// million records for every few hundred new ones), and the loose files in between stay
/// within a quarter of the records (what a run leaves is bounded by [`tidy`]'s rule). One
/// directory listing of `done/`.
pub fn compaction_due(state_dir: &Path) -> bool {
    due(state_dir, LINE_COST, DUE_RATIO)
}

/// Whether the loose records, at `cost` bytes each, weigh at least 1/`ratio` of the packed
/// file.
fn due(state_dir: &Path, cost: u64, ratio: u64) -> bool {
    let dir = state_dir.join("done");
    let loose = loose_records(&dir).map_or(0, |l| l.len()) as u64;
    let packed = std::fs::metadata(dir.join(PACKED)).map_or(0, |m| m.len());
    loose > 0 && loose * cost * ratio >= packed
}

/// The loose records of a `done/` directory: its files but the packed one and hidden ones
/// (temporary files).
fn loose_records(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)?.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == PACKED || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        out.push(entry.path());
    }
    Ok(out)
}

/// Which compaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compaction {
    /// Loose records into the packed file (a loose record of a file that is gone goes).
    Routine,
    /// The same, and the packed lines of files that are gone go too (a stat per record).
    Prune,
}

/// What a compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Loose records that went into the packed file (a busy one's file stays too).
    pub packed: usize,
    /// Records dropped: their file is gone (or a file in `done/` that is not a record).
    pub dead: usize,
    /// Loose records left as they are: their upload runs now, or they changed meanwhile.
    pub left: usize,
    /// Lines of the packed file after it.
    pub lines: usize,
}

/// Merges the loose done records of `state_dir` into its packed file (`done/packed`, lines
/// `KEY<TAB>RECORD` sorted by key, written whole by the engine's durable writer: temporary
/// file, fsync, rename, directory fsync), then removes the loose files it took. A loose record
/// replaces the packed line of its key (it is newer); only a record's last line is kept (a
/// loose record is its upload's journal with the record appended). Lookups read the loose
/// file first, then the packed one, and the packed file is in place before a loose file goes:
/// at no moment is a record in neither, and a crash at any step loses none (a leftover
/// temporary file is removed by the next compaction; loose files left beside a packed file
/// that has them are taken again).
///
/// A loose file goes only when it is still the one read and no upload of its file runs (that
/// upload's lock, taken alone: whoever replaces a record holds it), so a record written
/// meanwhile stays. One compaction at a time per state directory: an exclusive lock
/// (`done-compaction` in `<state dir>/locks/`); `None` when another process (or thread) holds
/// it: nothing waits for it. Blocking.
pub fn compact(state_dir: &Path, kind: Compaction) -> Option<Compacted> {
    let _guard = InProcess::take(state_dir)?;
    let _lock = crate::engine::lockfile::try_lock_alone(&state_dir.join("locks"), "done-compaction").ok()?;
    let dir = state_dir.join("done");
    remove_stale_temporaries(&dir);
    let mut total = Compacted::default();
    let mut prune = kind == Compaction::Prune;
    loop {
        let loose = match loose_records(&dir) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => {
                tracing::warn!("cannot list the done records in {}: {e}", dir.display());
                return Some(total);
            }
        };
        if loose.is_empty() && !prune {
            break;
        }
        let more = loose.len() > TAKE_MAX;
        match compact_pass(state_dir, &dir, loose.into_iter().take(TAKE_MAX).collect(), prune) {
            Ok(c) => {
                total.packed += c.packed;
                total.dead += c.dead;
                total.left += c.left;
                total.lines = c.lines;
                // A pass that removed nothing (every file busy) would be the next one too.
                if c.left >= TAKE_MAX {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!("cannot compact the done records in {}: {e}", dir.display());
                break;
            }
        }
        prune = false;
        if !more {
            break;
        }
    }
    tracing::debug!(?total, "done records compacted");
    Some(total)
}

/// The state directories this process compacts now (the lock file's locks are the process's:
/// they keep other processes out, this keeps other threads out).
struct InProcess(PathBuf);

static COMPACTING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

impl InProcess {
    fn take(state_dir: &Path) -> Option<InProcess> {
        let mut busy = COMPACTING.lock().unwrap_or_else(|e| e.into_inner());
        if busy.iter().any(|d| d == state_dir) {
            return None;
        }
        busy.push(state_dir.to_path_buf());
        Some(InProcess(state_dir.to_path_buf()))
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        COMPACTING.lock().unwrap_or_else(|e| e.into_inner()).retain(|d| d != &self.0);
    }
}

/// What a pass took from a loose file.
struct Taken {
    path: PathBuf,
    /// The file as it was read: removed only when it is still this one.
    seen: Seen,
    /// The lock that guards its replacement (its upload's); `None`: not a record.
    upload: Option<crate::engine::journal::UploadLock>,
}

/// What tells a file from a newer one put in its place (a record is replaced by a rename: a
/// new file).
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    ino: u64,
}

fn seen(meta: &std::fs::Metadata) -> Seen {
    Seen {
        len: meta.len(),
        modified: meta.modified().ok(),
        #[cfg(unix)]
        ino: std::os::unix::fs::MetadataExt::ino(meta),
    }
}

fn compact_pass(state_dir: &Path, dir: &Path, loose: Vec<PathBuf>, prune: bool) -> std::io::Result<Compacted> {
    let mut c = Compacted::default();
    let (taken, entries) = take_loose(loose, &mut c);
    let mut read = |i: usize, key: &str| read_again(&taken[i], key);
    write_packed(dir, &entries, &mut read, prune, &mut c)?;
    remove_taken(state_dir, dir, taken, &mut c)?;
    Ok(c)
}

/// A loose record: its line and key (`None` when the file holds no record).
fn read_loose(file: &mut std::fs::File) -> Option<(Vec<u8>, DoneRecord, String)> {
    let mut text = Vec::new();
    std::io::Read::read_to_end(file, &mut text).ok()?;
    let line = crate::engine::journal::last_line(&text).to_vec();
    let rec = serde_json::from_slice::<DoneRecord>(&line).ok()?;
    let key = done_key(&rec.provider, &rec.endpoint, &rec.file.path, &rec.destination);
    Some((line, rec, key))
}

/// Reads the loose records' keys: what goes into the packed file (sorted by key; each
/// record read again when the merge comes to it, so a pass holds keys, not records), and the
/// files to remove once it is written.
fn take_loose(loose: Vec<PathBuf>, c: &mut Compacted) -> (Vec<Taken>, Vec<packed::Entry>) {
    let mut taken = Vec::with_capacity(loose.len());
    let mut entries = Vec::with_capacity(loose.len());
    for path in loose {
        // What is read and what is seen of the file come from one open file.
        let Ok(mut file) = std::fs::File::open(&path) else { continue };
        let Ok(meta) = file.metadata() else { continue };
        let Some((_, rec, key)) = read_loose(&mut file) else {
            // Not a record (or unreadable): nothing to keep.
            c.dead += 1;
            taken.push(Taken { path, seen: seen(&meta), upload: None });
            continue;
        };
        let dead = record_is_dead(&rec);
        c.dead += usize::from(dead);
        c.packed += usize::from(!dead);
        // A dead record still removes its key's packed line (an older record of the same file).
        let record = if dead { packed::New::Remove } else { packed::New::Later(taken.len()) };
        entries.push((key, meta.modified().ok(), record));
        let lock = crate::engine::journal::UploadLock::of(&rec.provider, &rec.endpoint, &rec.file.path);
        taken.push(Taken { path, seen: seen(&meta), upload: Some(lock) });
    }
    // Sorted by key; of two files with one key (one made by hand), the newer is kept.
    entries.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    entries.dedup_by(|later, first| later.0 == first.0);
    let entries = entries.into_iter().map(|(key, _, record)| packed::Entry { key, record }).collect();
    (taken, entries)
}

/// The record of a loose file taken, read again as the merge comes to it: its line when the
/// file still holds a record of that key (a newer one put in its place meanwhile is as good:
/// the file then stays, see [`remove_taken`]); `None` leaves the packed file's line as it was.
fn read_again(taken: &Taken, key: &str) -> Option<Vec<u8>> {
    let mut file = std::fs::File::open(&taken.path).ok()?;
    let (line, _, found) = read_loose(&mut file)?;
    (found == key).then_some(line)
}

/// Writes the new packed file: the old one merged with `entries` (their records from `read`;
/// its dead lines dropped when pruning), durably.
fn write_packed(
    dir: &Path,
    entries: &[packed::Entry],
    read: &mut dyn FnMut(usize, &str) -> Option<Vec<u8>>,
    prune: bool,
    c: &mut Compacted,
) -> std::io::Result<()> {
    let target = dir.join(PACKED);
    // Buffers of 64 KiB: a compaction runs on one of the blocking pool's threads, whose
    // allocator arena would keep larger ones after (measured: +28 MiB peak over a run).
    let mut out =
        crate::engine::durable::AtomicFile::with_buffer(&target, crate::engine::durable::FILE_MODE, 64 << 10)?;
    let mut old = match std::fs::File::open(&target) {
        Ok(f) => Some(std::io::BufReader::with_capacity(64 << 10, f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut keep =
        |record: &[u8]| !prune || serde_json::from_slice::<DoneRecord>(record).is_ok_and(|r| !record_is_dead(&r));
    let merged =
        packed::merge(old.as_mut().map(|r| r as &mut dyn std::io::BufRead), entries, read, &mut out, &mut keep)?;
    // Closed before the new file is renamed over it: Windows refuses to replace a file this
    // process still has open (unless the rename has POSIX semantics, which not every file
    // system, nor wine, gives).
    drop(old);
    out.commit()?;
    c.lines = merged.lines;
    if prune {
        c.dead += merged.dropped;
    }
    Ok(())
}

/// The packed file has them: the loose files taken go, unless replaced meanwhile (a new
/// record is a new file) or their upload runs now (whoever replaces a record holds its lock).
fn remove_taken(state_dir: &Path, dir: &Path, taken: Vec<Taken>, c: &mut Compacted) -> std::io::Result<()> {
    let mut removed = false;
    for t in taken {
        let upload_lock = match &t.upload {
            Some(lock) => match crate::engine::journal::try_lock_idle(state_dir, lock) {
                Some(l) => Some(l),
                None => {
                    c.left += 1;
                    continue;
                }
            },
            None => None,
        };
        let same = std::fs::metadata(&t.path).is_ok_and(|m| seen(&m) == t.seen);
        // Put aside for a new journal to take rather than removed (see `engine::spare`).
        if same && crate::engine::spare::put(state_dir, &t.path).is_ok() {
            removed = true;
        } else {
            c.left += 1;
        }
        drop(upload_lock);
    }
    if removed {
        crate::engine::durable::sync_dir(dir)?;
    }
    Ok(())
}

/// Removes the temporary files a compaction that crashed left (`.packed.*.tmp`); called under
/// the compaction lock, when no other compaction writes one.
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&format!(".{PACKED}.")) && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A record whose file is gone: nothing at its path, or a regular file of another size or
/// modification time (a directory sent as a zip is judged by its existence only).
fn record_is_dead(rec: &DoneRecord) -> bool {
    match std::fs::metadata(&rec.file.path) {
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        Ok(m) if m.is_file() => {
            let mtime_ns =
                m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos());
            m.len() != rec.file.size || mtime_ns.is_some_and(|t| t != rec.file.mtime_ns)
        }
        Ok(_) => false,
    }
}

/// Remembers a finished upload.
pub fn record_done(
    state_dir: &Path,
    endpoint: &str,
    identity: &FileIdentity,
    outcome: &UploadOutcome,
    destination: &[(String, String)],
    force_run: Option<&ForceRun>,
) -> Result<()> {
    let done = done_path(state_dir, outcome.provider, endpoint, identity, destination);
    let rec = DoneRecord {
        file: identity.clone(),
        provider: outcome.provider.into(),
        endpoint: endpoint.into(),
        id: outcome.id.clone(),
        status: outcome.status.clone(),
        uploaded_at: chrono::Utc::now().to_rfc3339(),
        destination: destination.to_vec(),
        force_run: force_run.map(|r| r.id.clone()),
        crc64nvme: outcome.crc64nvme.clone(),
    };
    let record = serde_json::to_vec(&rec).expect("serializes");
    // The upload's journal has served its purpose: it becomes the record, or goes.
    crate::engine::journal::retire(state_dir, outcome.provider, endpoint, &identity.path, &done, &record)?;
    if let Some(written) = look_now(state_dir)
        && tidy_going(state_dir, written)
    {
        with_looks(state_dir, |l| l.unlisted = 0);
    }
    Ok(())
}

/// What this process wrote in one state directory since it last looked at it and since it
/// last listed its `done/`.
struct Looks {
    dir: PathBuf,
    since_look: u32,
    looked: Option<Instant>,
    unlisted: u64,
}

/// The [`Looks`] of each state directory this process writes records in (a counter per
/// directory, not a setting: two `Uploader`s writing into one directory share it).
fn with_looks<T>(state_dir: &Path, f: impl FnOnce(&mut Looks) -> T) -> T {
    static LOOKS: Mutex<Vec<Looks>> = Mutex::new(Vec::new());
    let mut all = LOOKS.lock().unwrap_or_else(|e| e.into_inner());
    let i = match all.iter().position(|l| l.dir == state_dir) {
        Some(i) => i,
        None => {
            all.push(Looks { dir: state_dir.to_path_buf(), since_look: 0, looked: None, unlisted: 0 });
            all.len() - 1
        }
    };
    f(&mut all[i])
}

/// Whether the record this process just wrote is the one after which its state directory is
/// looked at ([`tidy`]): every [`LOOK_EVERY`] records, and the first after [`LOOK_AFTER`]
/// without a look (`watch`, whose files come one by one, compacts as it goes, and prunes).
/// Returns the records written in `state_dir` since its `done/` was last listed, this one
/// included, when it is time to look.
fn look_now(state_dir: &Path) -> Option<u64> {
    with_looks(state_dir, |l| {
        l.since_look += 1;
        l.unlisted += 1;
        let now = l.since_look >= LOOK_EVERY || l.looked.is_none_or(|t| t.elapsed() >= LOOK_AFTER);
        if now {
            (l.since_look, l.looked) = (0, Some(Instant::now()));
        }
        now.then_some(l.unlisted)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::source::FileSource;

    const ENDPOINT: &str = "https://teleport.example";

    struct State {
        dir: tempfile::TempDir,
    }

    impl State {
        fn new() -> State {
            State { dir: tempfile::tempdir().unwrap() }
        }
        fn state(&self) -> PathBuf {
            self.dir.path().join("state")
        }
        fn done(&self) -> PathBuf {
            self.state().join("done")
        }
        /// A file of `size` bytes and its identity.
        fn file(&self, name: &str, size: usize) -> FileIdentity {
            let path = self.dir.path().join(name);
            std::fs::write(&path, vec![b'x'; size]).unwrap();
            FileIdentity::of(&FileSource::open(&path).unwrap()).unwrap()
        }
        /// A loose record, as a run leaves it (the journal's lines, then the record).
        fn record(&self, id: &FileIdentity, upload_id: &str) {
            let rec = DoneRecord {
                file: id.clone(),
                provider: "teleport".into(),
                endpoint: ENDPOINT.into(),
                id: upload_id.into(),
                status: "UPLOADED".into(),
                uploaded_at: "2026-12-07T00:00:00Z".into(),
                destination: vec![],
                force_run: None,
                crc64nvme: None,
            };
            let mut text = b"{\"journal\":\"header\"}\n".to_vec();
            text.extend(serde_json::to_vec(&rec).unwrap());
            text.push(b'\n');
            let path = done_path(&self.state(), "teleport", ENDPOINT, id, &[]);
            crate::engine::durable::write_atomic(&path, &text).unwrap();
        }
        fn find(&self, id: &FileIdentity) -> Option<String> {
            find_done(&self.state(), "teleport", ENDPOINT, id, &[]).map(|r| r.id)
        }
        fn listing(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(self.done())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
        fn packed_lines(&self) -> Vec<String> {
            std::fs::read_to_string(self.done().join(PACKED)).unwrap().lines().map(String::from).collect()
        }
        fn compact(&self, kind: Compaction) -> Compacted {
            compact(&self.state(), kind).expect("nobody else compacts this state directory")
        }
    }

    #[test]
    fn loose_records_become_one_sorted_packed_file_that_lookups_search() {
        let s = State::new();
        let ids: Vec<FileIdentity> = (0..300).map(|i| s.file(&format!("f{i}"), 10 + i)).collect();
        for (i, id) in ids.iter().enumerate() {
            s.record(id, &format!("eid{i}"));
        }
        assert!(compaction_due(&s.state()));
        let c = s.compact(Compaction::Routine);
        assert_eq!(c, Compacted { packed: 300, dead: 0, left: 0, lines: 300 });
        assert_eq!(s.listing(), [PACKED]);
        assert!(!compaction_due(&s.state()));
        let lines = s.packed_lines();
        let keys: Vec<&[u8]> = lines.iter().map(|l| packed::key_of(l.as_bytes())).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted, each key once");
        // Only the record's line is kept, not the journal's.
        assert!(lines.iter().all(|l| !l.contains("journal")), "{}", lines[0]);
        // Every record is found in the packed file; another file, or a changed one, is not.
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(s.find(id), Some(format!("eid{i}")));
        }
        let other = s.file("other", 5);
        assert_eq!(s.find(&other), None);
        let mut changed = ids[7].clone();
        changed.size += 1;
        assert_eq!(s.find(&changed), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(s.done().join(PACKED)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_loose_record_is_newer_than_its_packed_line_and_replaces_it() {
        let s = State::new();
        let a = s.file("a", 10);
        let b = s.file("b", 10);
        s.record(&a, "first");
        s.record(&b, "b");
        s.compact(Compaction::Routine);
        // The file is uploaded again (changed): its new record is loose, and wins.
        let a2 = s.file("a", 20);
        s.record(&a2, "second");
        assert_eq!(s.find(&a2).as_deref(), Some("second"));
        assert_eq!(s.find(&a), None, "the old identity no longer matches");
        let c = s.compact(Compaction::Routine);
        assert_eq!((c.packed, c.lines), (1, 2));
        assert_eq!(s.listing(), [PACKED]);
        assert_eq!(s.find(&a2).as_deref(), Some("second"));
        assert_eq!(s.find(&b).as_deref(), Some("b"));
    }

    #[test]
    fn records_of_files_that_are_gone_go_loose_ones_always_packed_ones_when_pruning() {
        let s = State::new();
        let ids: Vec<FileIdentity> = (0..4).map(|i| s.file(&format!("f{i}"), 10)).collect();
        for id in &ids[..2] {
            s.record(id, "old");
        }
        s.compact(Compaction::Routine);
        for id in &ids[2..] {
            s.record(id, "new");
        }
        // f0 (packed) and f2 (loose) go away; a file in done/ that is not a record is junk.
        std::fs::remove_file(&ids[0].path).unwrap();
        std::fs::remove_file(&ids[2].path).unwrap();
        std::fs::write(s.done().join("junk.json"), b"not a record").unwrap();
        let c = s.compact(Compaction::Routine);
        assert_eq!((c.packed, c.dead, c.lines), (1, 2, 3), "f2's record and the junk went; f0's line stays");
        assert_eq!(s.listing(), [PACKED]);
        let c = s.compact(Compaction::Prune);
        assert_eq!((c.dead, c.lines), (1, 2), "pruning drops f0's packed line");
        assert_eq!(s.find(&ids[1]).as_deref(), Some("old"));
        assert_eq!(s.find(&ids[3]).as_deref(), Some("new"));
        assert_eq!(s.find(&ids[0]), None);
    }

    #[test]
    fn prune_runs_once_a_day_and_compacts_everything() {
        let s = State::new();
        let a = s.file("a", 10);
        let b = s.file("b", 10);
        s.record(&a, "a");
        s.record(&b, "b");
        std::fs::remove_file(&a.path).unwrap();
        assert_eq!(prune(&s.state()), 1);
        assert_eq!(s.listing(), [PACKED]);
        assert_eq!(s.packed_lines().len(), 1);
        // Within the day: nothing, even with a dead record.
        s.record(&s.file("c", 10), "c");
        std::fs::remove_file(s.dir.path().join("c")).unwrap();
        assert_eq!(prune(&s.state()), 0);
        assert_eq!(s.listing().len(), 2);
    }

    /// The states a crash leaves at each step of a compaction: lookups find every record, and
    /// the next compaction finishes the work with nothing lost or doubled.
    #[test]
    fn a_crash_at_any_step_loses_no_record() {
        let s = State::new();
        let ids: Vec<FileIdentity> = (0..40).map(|i| s.file(&format!("f{i}"), 10)).collect();
        for (i, id) in ids[..20].iter().enumerate() {
            s.record(id, &format!("eid{i}"));
        }
        s.compact(Compaction::Routine);
        for (i, id) in ids.iter().enumerate().skip(20) {
            s.record(id, &format!("eid{i}"));
        }
        let all_found = |what: &str| {
            for (i, id) in ids.iter().enumerate() {
                assert_eq!(s.find(id), Some(format!("eid{i}")), "{what}: f{i}");
            }
        };
        let loose: Vec<(PathBuf, Vec<u8>)> = loose_records(&s.done())
            .unwrap()
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect();
        assert_eq!(loose.len(), 20);
        let packed_before = std::fs::read(s.done().join(PACKED)).unwrap();

        // 1. Killed while writing the new packed file: its temporary file is there, half
        // written; the old packed file and the loose records are as they were.
        let tmp = crate::engine::durable::temp_path(&s.done().join(PACKED));
        std::fs::write(&tmp, &packed_before[..packed_before.len() / 2]).unwrap();
        all_found("temporary file left");
        // 2. Killed after the rename, before any loose file went: both hold the new records.
        // 3. Killed while removing the loose files: some went, some are left.
        let c = s.compact(Compaction::Routine);
        assert_eq!((c.packed, c.lines), (20, 40));
        assert!(!tmp.exists(), "the next compaction removes what a crashed one left");
        let packed_after = std::fs::read(s.done().join(PACKED)).unwrap();
        for restored in [loose.len(), loose.len() / 2] {
            for (p, bytes) in &loose[..restored] {
                std::fs::write(p, bytes).unwrap();
            }
            all_found("loose files left beside the packed file");
            let c = s.compact(Compaction::Routine);
            assert_eq!((c.packed, c.lines), (restored, 40));
            assert_eq!(s.listing(), [PACKED]);
            assert_eq!(std::fs::read(s.done().join(PACKED)).unwrap(), packed_after, "nothing doubled");
            all_found("after the next compaction");
        }
    }

    #[test]
    fn a_busy_compaction_lock_or_upload_is_not_waited_for() {
        let s = State::new();
        let a = s.file("a", 10);
        let b = s.file("b", 10);
        s.record(&a, "a");
        s.record(&b, "b");
        // Another compaction of this state directory runs (the lock file's byte, held here the
        // way another process would hold it): nothing happens, at once.
        let held = crate::engine::lockfile::try_lock_alone(&s.state().join("locks"), "done-compaction").unwrap();
        let t0 = Instant::now();
        assert_eq!(compact(&s.state(), Compaction::Routine), None);
        assert_eq!(prune(&s.state()), 0);
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(s.listing().len(), 2);
        drop(held);
        // An upload of `a` runs (its lock is held): its loose record stays, beside its line.
        let upload = crate::engine::journal::try_lock_idle(
            &s.state(),
            &crate::engine::journal::UploadLock::of("teleport", ENDPOINT, &a.path),
        )
        .unwrap();
        let c = s.compact(Compaction::Routine);
        assert_eq!((c.packed, c.left, c.lines), (2, 1, 2));
        assert_eq!(s.listing().len(), 2);
        assert_eq!(s.find(&a).as_deref(), Some("a"));
        drop(upload);
        let c = s.compact(Compaction::Routine);
        assert_eq!((c.packed, c.left, c.lines), (1, 0, 2));
        assert_eq!(s.listing(), [PACKED]);
    }

    /// A record replaced while a compaction works (a new upload of the same file renamed over
    /// it after it was read) stays: only the file that was read is removed, and the newer
    /// record is the one found.
    #[test]
    fn a_record_replaced_meanwhile_stays() {
        let s = State::new();
        let a = s.file("a", 10);
        let b = s.file("b", 10);
        s.record(&a, "first");
        s.record(&b, "b");
        let mut c = Compacted::default();
        let (taken, entries) = take_loose(loose_records(&s.done()).unwrap(), &mut c);
        s.record(&a, "second");
        let mut read = |i: usize, key: &str| read_again(&taken[i], key);
        write_packed(&s.done(), &entries, &mut read, false, &mut c).unwrap();
        remove_taken(&s.state(), &s.done(), taken, &mut c).unwrap();
        assert_eq!((c.packed, c.left, c.lines), (2, 1, 2));
        assert_eq!(s.listing().len(), 2, "{:?}", s.listing());
        assert_eq!(s.find(&a).as_deref(), Some("second"));
        assert_eq!(s.find(&b).as_deref(), Some("b"));
        let c = s.compact(Compaction::Routine);
        assert_eq!((c.packed, c.left, c.lines), (1, 0, 2));
        assert_eq!(s.listing(), [PACKED]);
        assert_eq!(s.find(&a).as_deref(), Some("second"));
    }

    #[test]
    fn the_due_rule_weighs_loose_records_against_the_packed_file() {
        let s = State::new();
        assert!(!compaction_due(&s.state()), "no done/ at all");
        let a = s.file("a", 10);
        s.record(&a, "a");
        assert!(compaction_due(&s.state()), "no packed file: any loose record");
        s.compact(Compaction::Routine);
        assert!(!compaction_due(&s.state()), "nothing loose");
        // A packed file of 1 MiB wants 512 loose records as a run goes (512 × 512 B × 4 = 1 MiB).
        let mut big = std::fs::read(s.done().join(PACKED)).unwrap();
        while big.len() < 1 << 20 {
            big.extend_from_slice(format!("zzzz-{:08}\t{{}}\n", big.len()).as_bytes());
        }
        big.truncate(1 << 20);
        std::fs::write(s.done().join(PACKED), &big).unwrap();
        let ids: Vec<FileIdentity> = (0..512).map(|i| s.file(&format!("f{i}"), 10)).collect();
        for id in &ids[..511] {
            s.record(id, "x");
        }
        assert!(!compaction_due(&s.state()));
        assert!(due(&s.state(), LOOSE_COST, END_RATIO), "at the end of a run, 16 records would do");
        s.record(&ids[511], "x");
        assert!(compaction_due(&s.state()));
        for id in &ids {
            std::fs::remove_file(done_path(&s.state(), "teleport", ENDPOINT, id, &[])).unwrap();
        }
        for id in &ids[..15] {
            s.record(id, "x");
        }
        assert!(!due(&s.state(), LOOSE_COST, END_RATIO));
        s.record(&ids[15], "x");
        assert!(due(&s.state(), LOOSE_COST, END_RATIO));
    }
}
