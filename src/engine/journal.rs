//! The resume journal: what an interrupted upload needs to carry on without re-sending
//! finished parts, and what a rerun needs to know about an upload the provider already has.
//!
//! One file per (provider, endpoint, file) in `<state dir>/journals/`, append-only JSON lines
//! (format version 2):
//! - line 1, the header: version, provider, endpoint, the upload's state (`intent`: create is
//!   about to be sent; `started`: the provider's upload id is known; `completed`: the provider
//!   accepted the completion), upload id, file identity, part plan, provider facts (`extra`),
//!   the upload's options (`options`: free-form, never a secret) and times. The journal is
//!   written whole with [`write_atomic`](super::durable::write_atomic) with its first header
//!   (the intent) and when options change.
//! - one line per finished part (`{"number":N,"etag":"...","size":S}`), appended and fsynced
//!   before the part counts as journaled. A 10,000-part upload writes O(parts) bytes.
//! - each later change of state (`started`, `completed` with the provider's answer) is a new
//!   header line, appended and fsynced: it replaces the header before it and the parts before
//!   it do not count for it (a `completed` header has none). Appending, not rewriting, makes
//!   no new file per step: thousands of small files at once would otherwise make and free an
//!   inode per step each. The journal is removed once the run has recorded the upload as done.
//!
//! A truncated last line (a crash mid-append) is ignored on load. It never holds a token or a
//! presigned URL. A journal whose file identity no longer matches is refused, and so is one
//! written by an older version (`--no-resume` starts over).
//!
//! Each journal has an advisory lock (a byte of `<state dir>/locks/uploads.lock`, see
//! [`super::lockfile`]), held while the upload runs, so that a second run of the same upload
//! stops before sending anything.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::durable;
use super::lockfile::{self, Busy};
use super::plan::PartPlan;
use super::source::{FileSource, Stamp};
use super::uploader::{CompletedPart, PartDone};
use crate::error::{Error, Result};

/// Format version of the journal.
pub const VERSION: u32 = 2;
const FINGERPRINT_SPAN: u64 = 1 << 20;

/// Who the file is, as far as resuming goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    /// Canonical path (any bytes: see [`super::os_path`]).
    #[serde(with = "super::os_path")]
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: u128,
    /// Inode change time, nanoseconds since the epoch (0 = unknown: a record from an older version).
    #[serde(default)]
    pub ctime_ns: i128,
    /// Inode number (0 = unknown).
    #[serde(default)]
    pub inode: u64,
    /// SHA-256 (hex) of the first and last MiB and the size.
    pub fingerprint: String,
}

impl FileIdentity {
    /// Reads the identity of an open file (once per [`FileSource`]: its clones share it).
    pub fn of(source: &FileSource) -> Result<Self> {
        if let Some(id) = source.identity_cell().get() {
            return Ok(id.clone());
        }
        let id = Self::read(source)?;
        Ok(source.identity_cell().get_or_init(|| id).clone())
    }

    fn read(source: &FileSource) -> Result<Self> {
        if let Some(zip) = source.as_virtual_zip() {
            // A zip that exists only as a table: who it is, is the table (no image is read).
            return Ok(FileIdentity {
                path: zip.dir().to_path_buf(),
                size: zip.size(),
                mtime_ns: zip.newest_mtime(),
                ctime_ns: 0,
                inode: 0,
                fingerprint: zip.fingerprint(),
            });
        }
        let path = super::platform::canonicalize(source.path())
            .map_err(|e| Error::File { path: source.path().into(), source: e })?;
        let size = source.size();
        let mtime_ns =
            source.mtime().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        let mut h = Sha256::new();
        let head = size.min(FINGERPRINT_SPAN);
        let read = |off, len| {
            source.read_exact_at(off, len as usize).map_err(|e| Error::File { path: source.path().into(), source: e })
        };
        h.update(read(0, head)?);
        if size > head {
            let tail = (size - head).min(FINGERPRINT_SPAN);
            h.update(read(size - tail, tail)?);
        }
        h.update(size.to_le_bytes());
        let Stamp { ctime_ns, ino, .. } = source.stamp();
        Ok(FileIdentity { path, size, mtime_ns, ctime_ns, inode: ino, fingerprint: hex::encode(h.finalize()) })
    }

    /// The same file, unchanged: path, size, mtime, fingerprint, and the inode change time and
    /// inode when both sides know them (records of older versions do not).
    pub fn same_file(&self, other: &FileIdentity) -> bool {
        let known = |a: i128, b: i128| a == 0 || b == 0 || a == b;
        self.path == other.path
            && self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.fingerprint == other.fingerprint
            && known(self.ctime_ns, other.ctime_ns)
            && known(self.inode as i128, other.inode as i128)
    }
}

/// Where an upload stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalState {
    /// The create/start request is about to be sent (or was sent and its answer lost).
    Intent,
    /// The provider's upload exists; parts are being sent.
    Started,
    /// The provider accepted the completion.
    Completed,
}

/// The journal's content: the header, and the finished parts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JournalData {
    /// Format version.
    pub version: u32,
    /// Provider name.
    pub provider: String,
    /// API origin the upload was started against.
    pub endpoint: String,
    /// Where the upload stands.
    pub state: JournalState,
    /// The provider's id of the upload (Teleport eid, TruVideo uploadId); empty in `intent`.
    #[serde(default)]
    pub upload_id: String,
    /// Provider-specific facts needed to carry on (mediaId, ...).
    #[serde(default)]
    pub extra: serde_json::Value,
    /// The upload's options as given (name, format, metadata; never a secret), free-form, for
    /// `upload pending` and a resume that needs them.
    #[serde(default)]
    pub options: serde_json::Value,
    /// The file.
    pub file: FileIdentity,
    /// How the file is cut (in `intent`, the client's plan, or zero parts when the server decides).
    pub plan: PartPlan,
    /// Finished parts (not part of the header line: one line each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<CompletedPart>,
    /// When the intent was written (RFC 3339): a look-up for an upload a lost create made
    /// searches from here.
    pub intent_at: String,
    /// When the upload started (RFC 3339; the intent time until then).
    pub started_at: String,
    /// The provider's answer to the completion, in `completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<serde_json::Value>,
    /// The CRC-64/NVME of the file as sent (the receipt), in `completed`; absent from the
    /// journals of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc64nvme: Option<u64>,
}

impl JournalData {
    fn header_line(&self) -> Vec<u8> {
        let header = JournalData { parts: vec![], ..self.clone() };
        let mut line = serde_json::to_vec(&header).expect("journal serializes");
        line.push(b'\n');
        line
    }
}

/// Reads a journal file. An old format is refused with a message naming `--no-resume`; a
/// truncated last line is ignored (and `good_len` tells where the good lines end).
fn parse(path: &Path, text: &[u8]) -> Result<(JournalData, u64)> {
    let unreadable = |why: String| {
        Error::usage(
            format!("the resume journal {} is unreadable: {why}", path.display()),
            "pass --no-resume to start over",
        )
    };
    let first_end = text.iter().position(|&b| b == b'\n').unwrap_or(text.len());
    let first: serde_json::Value =
        serde_json::from_slice(&text[..first_end]).map_err(|e| unreadable(format!("{e}")))?;
    let version = first.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
    if version != VERSION as u64 {
        return Err(Error::usage(
            format!(
                "the resume journal {} was written by another version of upload (format {version}, this one reads {VERSION}) and cannot be resumed",
                path.display()
            ),
            "pass --no-resume to start the upload over",
        ));
    }
    let mut data: JournalData = serde_json::from_value(first).map_err(|e| unreadable(format!("{e}")))?;
    data.parts.clear();
    let mut lines = 1;
    let mut good = (first_end + 1).min(text.len()) as u64;
    let mut rest = &text[(first_end + 1).min(text.len())..];
    while !rest.is_empty() {
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            tracing::info!(journal = %path.display(), "ignoring a truncated last line (a crash mid-append)");
            break;
        };
        lines += 1;
        let line = &rest[..end];
        let line = serde_json::from_slice::<CompletedPart>(line)
            .map(Line::Part)
            .or_else(|e| serde_json::from_slice::<JournalData>(line).map(|h| Line::Header(Box::new(h))).map_err(|_| e));
        match line {
            Ok(Line::Header(header)) => {
                // A change of state: the new header replaces the old one, with its own parts.
                data = *header;
                data.parts.clear();
            }
            Ok(Line::Part(part)) => {
                data.parts.retain(|p| p.number != part.number);
                data.parts.push(part);
            }
            Err(e) if rest.len() == end + 1 => {
                tracing::info!(journal = %path.display(), "ignoring an unreadable last line: {e}");
                break;
            }
            Err(e) => return Err(unreadable(format!("line {lines}: {e}"))),
        }
        good += end as u64 + 1;
        rest = &rest[end + 1..];
    }
    Ok((data, good))
}

/// A line after the first: a part, or the header of a change of state.
enum Line {
    Header(Box<JournalData>),
    Part(CompletedPart),
}

/// Something that is not a file where a journal belongs (a directory someone made, a FIFO):
/// it cannot be a journal, and it would block the file's uploads for ever (a journal is
/// written by renaming over its path). It is renamed aside, `NAME.not-a-journal-<time>`, never
/// deleted, with a warning saying where it went.
fn set_aside_non_journal(path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
    if meta.is_file() {
        return Ok(());
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6f");
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".not-a-journal-{stamp}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside).map_err(|e| {
        Error::usage(
            format!("{} is not a journal ({}) and cannot be moved aside: {e}", path.display(), kind_of(&meta)),
            "remove it: the upload of this file needs that path for its journal",
        )
    })?;
    tracing::warn!("{} was not a journal ({}): moved aside to {}", path.display(), kind_of(&meta), aside.display());
    Ok(())
}

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    if meta.is_dir() { "a directory" } else { "not a regular file" }
}

/// Loads one journal file (for listings; [`Journal::open`] to carry an upload on).
pub fn load(path: &Path) -> Result<JournalData> {
    let text = std::fs::read(path).map_err(|e| Error::File { path: path.to_path_buf(), source: e })?;
    parse(path, &text).map(|(d, _)| d)
}

/// Every journal of a state directory, each read (or the reason it cannot be), sorted by path.
pub fn list(state_dir: &Path) -> Vec<(PathBuf, Result<JournalData>)> {
    let Ok(entries) = std::fs::read_dir(state_dir.join("journals")) else { return vec![] };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    paths.into_iter().map(|p| (p.clone(), load(&p))).collect()
}

/// The journal's path and its lock's name.
fn slot(state_dir: &Path, provider: &str, endpoint: &str, canonical: &Path) -> (PathBuf, String) {
    let key = hex::encode(Sha256::digest(format!("{provider}\n{endpoint}\n{}", canonical.display())));
    let name = format!("{provider}-{}", &key[..24]);
    (state_dir.join("journals").join(format!("{name}.json")), name)
}

/// Removes the journal of the file at `canonical` (its canonical path), once the run recorded
/// the upload as done.
pub fn remove(state_dir: &Path, provider: &str, endpoint: &str, canonical: &Path) {
    let (path, _) = slot(state_dir, provider, endpoint, canonical);
    if std::fs::remove_file(&path).is_ok()
        && let Some(dir) = path.parent()
    {
        let _ = durable::sync_dir(dir);
    }
}

/// Journals up to this size become the done record of their upload (see [`retire`]); a
/// larger one (many parts) is removed and the record written on its own.
const RETIRE_MAX: u64 = 64 << 10;

/// Records the upload of the file at `canonical` as done: `record` (one JSON document on one
/// line) becomes the file `done`, durably, and the upload's journal goes. A small journal
/// *becomes* the record: the record is appended as its last line (fsynced), then the journal is
/// renamed to `done` (and that directory fsynced). That makes no inode and frees none, where a
/// record of its own and a removed journal made one and freed one per upload (what a run of
/// thousands of small files spent its system time on: ext4 scans past recently freed inodes for
/// every new one). Readers of done records take the last line ([`last_line`]). A crash between
/// the append and the rename leaves a journal whose last line is the record, which a resume
/// ignores as an unreadable last line.
pub fn retire(
    state_dir: &Path,
    provider: &str,
    endpoint: &str,
    canonical: &Path,
    done: &Path,
    record: &[u8],
) -> Result<()> {
    let (path, _) = slot(state_dir, provider, endpoint, canonical);
    let err = |path: &Path, e| Error::File { path: path.to_path_buf(), source: e };
    let small = std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() <= RETIRE_MAX);
    if small && let Some(dir) = done.parent() {
        durable::create_private_dir_all(dir).map_err(|e| err(dir, e))?;
        let mut file = open_append(&path)?;
        let mut line = Vec::with_capacity(record.len() + 1);
        line.extend_from_slice(record);
        line.push(b'\n');
        file.write_all(&line).map_err(|e| err(&path, e))?;
        file.sync_data().map_err(|e| err(&path, e))?;
        drop(file);
        match durable::rename_durable(&path, done) {
            Ok(()) => return Ok(()),
            // Another file system (a state directory put together from mounts): the plain way.
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {}
            Err(e) => return Err(err(done, e)),
        }
    }
    durable::write_atomic(done, record)?;
    remove(state_dir, provider, endpoint, canonical);
    Ok(())
}

/// The last line of a file of JSON lines (a done record: see [`retire`]); the whole text when
/// it has one line.
pub fn last_line(text: &[u8]) -> &[u8] {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    text.rsplit(|&b| b == b'\n').next().unwrap_or(text)
}

/// The advisory lock of one journal, held while an upload runs (a byte of
/// `<state dir>/locks/uploads.lock`: see [`super::lockfile`]). Shared within a process: the
/// run takes it before it looks for a done record, and the journal opened for the upload
/// reuses it.
#[derive(Debug)]
pub struct JournalLock(#[allow(dead_code)] Arc<lockfile::RangeLock>);

fn try_lock(state_dir: &Path, name: &str) -> std::result::Result<Arc<JournalLock>, Busy> {
    lockfile::try_lock(&state_dir.join("locks"), name).map(|l| Arc::new(JournalLock(l)))
}

/// The lock of the upload of `canonical` (a canonical path), when no upload of it runs, in
/// this process or another: whoever replaces that upload's done record holds it (see
/// [`retire`]), so a done record read under it stays what was read while it is held.
pub(crate) fn try_lock_idle(state_dir: &Path, lock: &UploadLock) -> Option<Arc<lockfile::RangeLock>> {
    lockfile::try_lock_alone(&state_dir.join("locks"), &lock.0).ok()
}

/// Which lock guards the upload of a file (its name in the state directory's lock file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadLock(String);

impl UploadLock {
    /// The lock of the upload of `canonical` (a canonical path) to `provider` at `endpoint`.
    pub(crate) fn of(provider: &str, endpoint: &str, canonical: &Path) -> Self {
        UploadLock(slot(Path::new(""), provider, endpoint, canonical).1)
    }
}

/// Takes the lock of the journal of `canonical` (a canonical path). Busy: with `wait`, tries
/// again every 200 ms until the bound (then [`Error::Busy`]) or cancellation
/// ([`Error::Interrupted`]); without, [`Error::Busy`] at once.
pub async fn lock(
    state_dir: &Path,
    provider: &str,
    endpoint: &str,
    canonical: &Path,
    wait: Option<Duration>,
    cancel: &CancellationToken,
) -> Result<Arc<JournalLock>> {
    let (_, name) = slot(state_dir, provider, endpoint, canonical);
    let deadline = wait.map(|w| tokio::time::Instant::now() + w);
    loop {
        match try_lock(state_dir, &name) {
            Ok(l) => return Ok(l),
            Err(Busy::Io(e)) => return Err(state_dir_error(state_dir, e)),
            Err(Busy::Pid(pid)) => {
                let now = tokio::time::Instant::now();
                if deadline.is_none_or(|d| now >= d) {
                    return Err(busy(canonical, pid, wait));
                }
                super::wait::sleep(Duration::from_millis(200), cancel)
                    .await
                    .map_err(|_| Error::Interrupted { hint: "nothing was sent; run the same command again".into() })?;
            }
        }
    }
}

fn busy(canonical: &Path, pid: Option<u32>, waited: Option<Duration>) -> Error {
    let who = pid.map_or_else(
        || "another upload of this file is running".to_string(),
        |p| format!("another upload of this file is running (pid {p})"),
    );
    Error::Busy {
        message: match waited {
            None => format!("{}: {who}", canonical.display()),
            Some(w) => format!("{}: {who}, still after waiting {} s", canonical.display(), w.as_secs()),
        },
        hint: "let it finish (--wait-for-lock waits for it, then finds the file done), or stop it".into(),
    }
}

fn state_dir_error(state_dir: &Path, e: std::io::Error) -> Error {
    let full = matches!(e.raw_os_error(), Some(28 | 122)) || e.kind() == std::io::ErrorKind::StorageFull;
    Error::usage(
        format!("cannot write in the state directory {}: {e}", state_dir.display()),
        if full {
            "free some space there, or point --state-dir (or UPLOAD_STATE_DIR) at another directory"
        } else {
            "point --state-dir (or UPLOAD_STATE_DIR) at a writable directory"
        },
    )
}

/// Checks that the state directory can hold journals (before anything is sent): once per
/// directory and process (a probe file is an inode made and freed, which a run of thousands
/// of small files would pay for each file).
pub fn check_state_dir(state_dir: &Path) -> Result<()> {
    static CHECKED: std::sync::OnceLock<Mutex<std::collections::HashSet<PathBuf>>> = std::sync::OnceLock::new();
    let checked = CHECKED.get_or_init(Default::default);
    if checked.lock().expect("checked dirs").contains(state_dir) {
        return Ok(());
    }
    probe_state_dir(state_dir)?;
    checked.lock().expect("checked dirs").insert(state_dir.to_path_buf());
    Ok(())
}

fn probe_state_dir(state_dir: &Path) -> Result<()> {
    let dir = state_dir.join("journals");
    durable::create_private_dir_all(&dir).map_err(|e| state_dir_error(state_dir, e))?;
    // Bytes written and synced, as a journal's are: a full disk (which still makes an empty
    // file) is found here, before any request.
    let probe = durable::temp_path(&dir.join("probe"));
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        use std::io::Write;
        f.write_all(&[0u8; 8192])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| state_dir_error(state_dir, e))
}

struct Inner {
    data: Option<JournalData>,
    /// The journal a run without resume found and discarded (its upload is abandoned).
    discarded: Option<JournalData>,
    /// The journal open for appending, once it has a header.
    append: Option<File>,
    options: serde_json::Value,
}

/// An open journal slot for one file.
#[derive(Clone)]
pub struct Journal {
    path: PathBuf,
    identity: FileIdentity,
    provider: String,
    endpoint: String,
    inner: Arc<Mutex<Inner>>,
    written: Arc<AtomicU64>,
    _lock: Arc<JournalLock>,
}

impl Journal {
    /// Opens the slot for `source` under `state_dir`, taking its lock ([`Error::Busy`] when
    /// another run holds it). With `resume`, an existing journal is loaded (and refused if the
    /// file changed); without, it is discarded.
    pub fn open(state_dir: &Path, provider: &str, endpoint: &str, source: &FileSource, resume: bool) -> Result<Self> {
        let identity = FileIdentity::of(source)?;
        let (path, lock_name) = slot(state_dir, provider, endpoint, &identity.path);
        let lock = match try_lock(state_dir, &lock_name) {
            Ok(l) => l,
            Err(Busy::Io(e)) => return Err(state_dir_error(state_dir, e)),
            Err(Busy::Pid(pid)) => return Err(busy(&identity.path, pid, None)),
        };
        check_state_dir(state_dir)?;
        set_aside_non_journal(&path)?;
        let mut data = None;
        let mut append = None;
        let mut discarded = None;
        match std::fs::read(&path) {
            Ok(text) if resume => {
                let (loaded, good) = parse(&path, &text)?;
                if !loaded.file.same_file(&identity) {
                    return Err(Error::JournalMismatch {
                        path: source.path().to_path_buf(),
                        message: format!(
                            "{} changed since its upload was interrupted; the journal no longer matches it",
                            source.path().display()
                        ),
                        hint: "pass --no-resume to start a new upload of the file as it is now".into(),
                    });
                }
                let file = open_append(&path)?;
                if good < text.len() as u64 {
                    file.set_len(good).map_err(|e| Error::File { path: path.clone(), source: e })?;
                }
                append = Some(file);
                data = Some(loaded);
            }
            Ok(text) => {
                discarded = parse(&path, &text).ok().map(|(d, _)| d);
                let _ = std::fs::remove_file(&path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::File { path: path.clone(), source: e }),
        }
        let options = data.as_ref().map(|d| d.options.clone()).unwrap_or(serde_json::Value::Null);
        Ok(Journal {
            path,
            identity,
            provider: provider.into(),
            endpoint: endpoint.into(),
            inner: Arc::new(Mutex::new(Inner { data, discarded, append, options })),
            written: Arc::new(AtomicU64::new(0)),
            _lock: lock,
        })
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The API origin the journal is for.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Bytes this handle wrote to the journal (headers and part lines).
    pub fn bytes_written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// The journal this run was opened without resume over (`--no-resume`), taken once: its
    /// upload will never be used (the caller may clean it up where the provider allows).
    pub fn take_discarded(&self) -> Option<JournalData> {
        self.inner.lock().expect("journal lock").discarded.take()
    }

    /// The interrupted upload to carry on, if any (in any state).
    pub fn resume_point(&self) -> Option<JournalData> {
        self.inner.lock().expect("journal lock").data.clone()
    }

    /// Sets the free-form options kept in the header (rewritten at once when there is one).
    /// Objects merge: the keys of `options` are added to those set before (the caller's
    /// command line and the provider's own facts both stay), a key set again is replaced.
    pub fn set_options(&self, options: serde_json::Value) -> Result<()> {
        let mut inner = self.inner.lock().expect("journal lock");
        let options = match (&inner.options, options) {
            (serde_json::Value::Object(before), serde_json::Value::Object(new)) => {
                let mut merged = before.clone();
                merged.extend(new);
                serde_json::Value::Object(merged)
            }
            (_, new) => new,
        };
        inner.options = options.clone();
        if let Some(mut data) = inner.data.clone() {
            data.options = options;
            self.rewrite(&mut inner, data)?;
        }
        Ok(())
    }

    /// Rewrites the whole journal (header and parts) atomically and reopens it for appending.
    fn rewrite(&self, inner: &mut Inner, data: JournalData) -> Result<()> {
        let mut bytes = data.header_line();
        for p in &data.parts {
            bytes.extend(part_line(p));
        }
        // The appending handle is closed before the file is replaced: Windows (and network
        // shares) refuse a rename over a file that is open ("Access is denied").
        inner.append = None;
        durable::write_atomic(&self.path, &bytes)?;
        self.written.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        inner.append = match data.state {
            JournalState::Completed => None,
            _ => Some(open_append(&self.path)?),
        };
        inner.data = Some(data);
        Ok(())
    }

    fn new_data(
        &self,
        inner: &Inner,
        state: JournalState,
        upload_id: &str,
        extra: serde_json::Value,
        plan: PartPlan,
    ) -> JournalData {
        let now = chrono::Utc::now().to_rfc3339();
        let intent_at = inner.data.as_ref().map_or_else(|| now.clone(), |d| d.intent_at.clone());
        JournalData {
            version: VERSION,
            provider: self.provider.clone(),
            endpoint: self.endpoint.clone(),
            state,
            upload_id: upload_id.into(),
            extra,
            options: inner.options.clone(),
            file: self.identity.clone(),
            plan,
            parts: vec![],
            intent_at,
            started_at: now,
            completion: None,
            crc64nvme: None,
        }
    }

    /// Records the intent to create an upload, durably, before the create request is sent
    /// (`plan`: the client's plan, or zero parts when the server decides).
    pub fn intent(&self, plan: PartPlan) -> Result<()> {
        let mut inner = self.inner.lock().expect("journal lock");
        let data = self.new_data(&inner, JournalState::Intent, "", serde_json::Value::Null, plan);
        let data = JournalData { intent_at: data.started_at.clone(), ..data };
        self.rewrite(&mut inner, data)
    }

    /// Records a new upload (before its first part is sent).
    pub fn start(
        &self,
        provider: &str,
        endpoint: &str,
        upload_id: &str,
        extra: serde_json::Value,
        plan: PartPlan,
    ) -> Result<()> {
        debug_assert!(provider == self.provider && endpoint == self.endpoint);
        let mut inner = self.inner.lock().expect("journal lock");
        let data = self.new_data(&inner, JournalState::Started, upload_id, extra, plan);
        self.append_header(&mut inner, data)
    }

    /// A change of state: its header appended (fsynced) to the journal open for appending,
    /// else the journal written whole.
    fn append_header(&self, inner: &mut Inner, data: JournalData) -> Result<()> {
        let Some(file) = inner.append.as_mut() else { return self.rewrite(inner, data) };
        let line = data.header_line();
        let err = |e| Error::File { path: self.path.clone(), source: e };
        file.write_all(&line).map_err(err)?;
        file.sync_data().map_err(err)?;
        self.written.fetch_add(line.len() as u64, Ordering::Relaxed);
        if data.state == JournalState::Completed {
            inner.append = None;
        }
        inner.data = Some(data);
        Ok(())
    }

    /// Records a finished part: one appended line, fsynced before this returns. Blocking:
    /// called off the async worker threads (see [`Journal::recorder`]).
    pub fn record(&self, part: &CompletedPart) -> Result<()> {
        self.record_all(std::slice::from_ref(part))
    }

    /// Records finished parts: a line each, appended in one write and fsynced once before this
    /// returns. Blocking, as [`Journal::record`].
    pub fn record_all(&self, parts: &[CompletedPart]) -> Result<()> {
        let mut inner = self.inner.lock().expect("journal lock");
        let Inner { data, append, .. } = &mut *inner;
        let (Some(data), Some(file)) = (data.as_mut(), append.as_mut()) else { return Ok(()) };
        if parts.is_empty() {
            return Ok(());
        }
        let lines: Vec<u8> = parts.iter().flat_map(part_line).collect();
        let err = |e| Error::File { path: self.path.clone(), source: e };
        file.write_all(&lines).map_err(err)?;
        file.sync_data().map_err(err)?;
        self.written.fetch_add(lines.len() as u64, Ordering::Relaxed);
        for part in parts {
            data.parts.retain(|p| p.number != part.number);
            data.parts.push(part.clone());
        }
        Ok(())
    }

    /// Forgets finished parts (their ETags were refused by the completion): the journal is
    /// rewritten without them, so they are sent again, now and by any later run.
    pub fn forget_parts(&self, numbers: &[u32]) -> Result<()> {
        let mut inner = self.inner.lock().expect("journal lock");
        let Some(mut data) = inner.data.clone() else { return Ok(()) };
        data.parts.retain(|p| !numbers.contains(&p.number));
        self.rewrite(&mut inner, data)
    }

    /// A callback for the uploader that records the finished parts (the uploader calls it on
    /// the blocking pool, with the parts that finished since its previous call).
    pub fn recorder(&self) -> PartDone {
        let j = self.clone();
        Arc::new(move |p: &[CompletedPart]| j.record_all(p))
    }

    /// The provider accepted the completion: the journal is compacted to its header, in state
    /// `completed` with the provider's answer, so a rerun only follows processing or reports
    /// the upload as done.
    /// `crc64nvme` is the file's CRC as sent (the receipt a rerun reports).
    pub fn completed(&self, answer: serde_json::Value, crc64nvme: Option<u64>) -> Result<()> {
        let mut inner = self.inner.lock().expect("journal lock");
        let Some(mut data) = inner.data.clone() else { return Ok(()) };
        data.state = JournalState::Completed;
        data.parts.clear();
        data.completion = Some(answer);
        data.crc64nvme = crc64nvme;
        self.append_header(&mut inner, data)
    }

    /// The journal goes (the upload is done and recorded, or the server proved it stale).
    pub fn finish(&self) {
        let mut inner = self.inner.lock().expect("journal lock");
        inner.append = None;
        inner.data = None;
        if std::fs::remove_file(&self.path).is_ok()
            && let Some(dir) = self.path.parent()
        {
            let _ = durable::sync_dir(dir);
        }
    }
}

fn part_line(p: &CompletedPart) -> Vec<u8> {
    let mut line = serde_json::to_vec(p).expect("part serializes");
    line.push(b'\n');
    line
}

fn open_append(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new().append(true).open(path).map_err(|e| Error::File { path: path.to_path_buf(), source: e })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three parts of 1 MiB.
    const PLAN3: PartPlan = PartPlan { file_size: 3 << 20, part_size: 1 << 20, num_parts: 3 };

    /// The journal slot of `src`, resuming.
    fn open(dir: &Path, src: &FileSource) -> Journal {
        Journal::open(dir, "teleport", "http://x", src, true).unwrap()
    }

    /// [`setup`], and the journal slot of its file, resuming.
    fn opened(size: usize) -> (tempfile::TempDir, PathBuf, FileSource, Journal) {
        let (dir, file, src) = setup(size);
        let j = open(dir.path(), &src);
        (dir, file, src, j)
    }

    fn setup(size: usize) -> (tempfile::TempDir, PathBuf, FileSource) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.zip");
        std::fs::write(&file, vec![7u8; size]).unwrap();
        let src = FileSource::open(&file).unwrap();
        (dir, file, src)
    }

    /// A journal through to `completed`, with `parts` part lines.
    fn completed_journal(dir: &Path, src: &FileSource, parts: u32) -> PathBuf {
        let plan = PartPlan { file_size: 3 << 20, part_size: 1 << 20, num_parts: parts };
        let j = Journal::open(dir, "teleport", "http://x", src, true).unwrap();
        j.intent(plan).unwrap();
        j.start("teleport", "http://x", "eid1", serde_json::Value::Null, plan).unwrap();
        for n in 1..=parts {
            j.record(&CompletedPart { number: n, etag: format!("\"{:032x}\"", n), size: 1 << 20, crc64nvme: None })
                .unwrap();
        }
        j.completed(serde_json::json!({"state": "UPLOADED"}), None).unwrap();
        j.path().to_path_buf()
    }

    #[test]
    #[cfg(unix)]
    fn a_small_journal_becomes_the_done_record_a_large_one_goes() {
        use std::os::unix::fs::MetadataExt;
        let (dir, _file, src) = setup(3 << 20);
        let canonical = FileIdentity::of(&src).unwrap().path;
        let record = br#"{"id":"eid1","status":"UPLOADED"}"#;
        for (parts, same_inode) in [(3, true), (2000, false)] {
            let journal = completed_journal(dir.path(), &src, parts);
            let inode = std::fs::metadata(&journal).unwrap().ino();
            let done = dir.path().join("done").join(format!("r{parts}.json"));
            retire(dir.path(), "teleport", "http://x", &canonical, &done, record).unwrap();
            assert!(!journal.exists(), "{parts} parts: the journal is gone");
            let text = std::fs::read(&done).unwrap();
            assert_eq!(last_line(&text), record, "{parts} parts");
            assert_eq!(std::fs::metadata(&done).unwrap().ino() == inode, same_inode, "{parts} parts");
            assert_eq!(std::fs::metadata(&done).unwrap().mode() & 0o777, 0o600);
            if same_inode {
                // The journal's lines are still there, the record after them.
                assert_eq!(String::from_utf8_lossy(&text).lines().count(), 7);
            } else {
                assert_eq!(text, record);
            }
        }
        // No journal at all (it was discarded): the record is written on its own.
        let done = dir.path().join("done").join("r0.json");
        retire(dir.path(), "teleport", "http://x", &canonical, &done, record).unwrap();
        assert_eq!(std::fs::read(&done).unwrap(), record);
    }

    #[test]
    fn a_journal_cut_between_the_record_and_the_rename_resumes_as_completed() {
        let (dir, _file, src) = setup(3 << 20);
        let journal = completed_journal(dir.path(), &src, 3);
        let mut f = open_append(&journal).unwrap();
        f.write_all(b"{\"file\":{},\"id\":\"eid1\"}\n").unwrap();
        drop(f);
        let j = open(dir.path(), &src);
        let r = j.resume_point().unwrap();
        assert_eq!((r.state, r.upload_id.as_str()), (JournalState::Completed, "eid1"));
    }

    #[test]
    fn last_line_of_one_or_many() {
        assert_eq!(last_line(b"{}"), b"{}");
        assert_eq!(last_line(b"{}\n"), b"{}");
        assert_eq!(last_line(b"{\"a\":1}\n{\"b\":2}\n"), b"{\"b\":2}");
        assert_eq!(last_line(b""), b"");
    }

    #[test]
    fn round_trip_and_change_detection() {
        let (dir, file, src, j) = opened(3 << 20);
        let plan = PLAN3;
        assert!(j.resume_point().is_none());
        j.start("teleport", "http://x", "eid1", serde_json::Value::Null, plan).unwrap();
        j.record(&CompletedPart { number: 2, etag: "\"e2\"".into(), size: 1 << 20, crc64nvme: None }).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(j.path()).unwrap().permissions().mode() & 0o777, 0o600);
            let d = std::fs::metadata(j.path().parent().unwrap()).unwrap();
            assert_eq!(d.permissions().mode() & 0o777, 0o700);
        }
        // The lock is held: another process would be refused; this one shares it.
        drop(j);
        let again = open(dir.path(), &src);
        let r = again.resume_point().unwrap();
        assert_eq!((r.upload_id.as_str(), r.parts.len(), r.parts[0].etag.as_str()), ("eid1", 1, "\"e2\""));
        assert_eq!(r.state, JournalState::Started);
        // Another endpoint is another journal.
        assert!(Journal::open(dir.path(), "teleport", "http://y", &src, true).unwrap().resume_point().is_none());
        // The file changes: refused.
        drop(again);
        std::fs::write(&file, vec![8u8; 3 << 20]).unwrap();
        let src2 = FileSource::open(&file).unwrap();
        let e = Journal::open(dir.path(), "teleport", "http://x", &src2, true).err().unwrap();
        assert!(e.to_string().contains("changed since"), "{e}");
        // --no-resume discards it.
        let j = Journal::open(dir.path(), "teleport", "http://x", &src2, false).unwrap();
        assert!(j.resume_point().is_none());
        j.finish();
    }

    #[cfg(unix)]
    #[test]
    fn same_size_rewrite_with_the_mtime_put_back_is_caught() {
        let (dir, file, src, j) = opened(3 << 20);
        let plan = PLAN3;
        j.start("teleport", "http://x", "eid1", serde_json::Value::Null, plan).unwrap();
        drop(j);
        let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
            f.write_all_at(&[9u8; 10], 3 << 19).unwrap(); // the middle: outside the fingerprint
            f.set_modified(mtime).unwrap();
        }
        assert!(src.check_unchanged().is_err(), "the open source notices the rewrite");
        let src2 = FileSource::open(&file).unwrap();
        assert_eq!(src2.mtime(), src.mtime());
        let e = Journal::open(dir.path(), "teleport", "http://x", &src2, true).err().unwrap();
        assert!(e.to_string().contains("changed since"), "{e}");
    }

    #[test]
    fn a_truncated_last_line_is_ignored_and_cut() {
        let (dir, _file, src, j) = opened(3 << 20);
        let plan = PLAN3;
        j.start("teleport", "http://x", "eid1", serde_json::Value::Null, plan).unwrap();
        j.record(&CompletedPart { number: 1, etag: "\"e1\"".into(), size: 1 << 20, crc64nvme: None }).unwrap();
        let path = j.path().to_path_buf();
        drop(j);
        // A crash mid-append: half a line.
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"number":2,"etag":"\"e"#).unwrap();
        drop(f);
        let j = open(dir.path(), &src);
        assert_eq!(j.resume_point().unwrap().parts.len(), 1);
        j.record(&CompletedPart { number: 3, etag: "\"e3\"".into(), size: 1 << 20, crc64nvme: None }).unwrap();
        let r = load(&path).unwrap();
        assert_eq!(r.parts.iter().map(|p| p.number).collect::<Vec<_>>(), [1, 3]);
        // Listed for `upload pending`.
        let all = list(dir.path());
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1.as_ref().unwrap().upload_id, "eid1");
    }

    #[test]
    fn an_old_format_journal_is_refused_with_a_hint() {
        let (dir, _file, src) = setup(1 << 10);
        let j = open(dir.path(), &src);
        let path = j.path().to_path_buf();
        drop(j);
        std::fs::write(&path, br#"{"version":1,"provider":"teleport","upload_id":"x","parts":[]}"#).unwrap();
        let e = Journal::open(dir.path(), "teleport", "http://x", &src, true).err().unwrap();
        assert!(e.to_string().contains("another version of upload"), "{e}");
        assert!(e.hint().unwrap().contains("--no-resume"));
        assert!(Journal::open(dir.path(), "teleport", "http://x", &src, false).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn changes_of_state_are_appended_headers() {
        use std::os::unix::fs::MetadataExt;
        let (_dir, _file, _src, j) = opened(3 << 20);
        let plan = PLAN3;
        j.set_options(serde_json::json!({"args": ["--force"], "name": "x"})).unwrap();
        j.set_options(serde_json::json!({"name": "scan"})).unwrap();
        j.intent(PartPlan { num_parts: 0, ..plan }).unwrap();
        // Options merge: the command line's and the provider's both stay.
        assert_eq!(load(j.path()).unwrap().options, serde_json::json!({"args": ["--force"], "name": "scan"}));
        assert_eq!(load(j.path()).unwrap().state, JournalState::Intent);
        let inode = std::fs::metadata(j.path()).unwrap().ino();
        j.start("teleport", "http://x", "eid1", serde_json::Value::Null, plan).unwrap();
        let r = load(j.path()).unwrap();
        assert_eq!((r.state, r.upload_id.as_str(), r.plan.num_parts), (JournalState::Started, "eid1", 3));
        for n in 1..=3 {
            j.record(&CompletedPart { number: n, etag: format!("\"e{n}\""), size: 1 << 20, crc64nvme: None }).unwrap();
        }
        assert_eq!(load(j.path()).unwrap().parts.len(), 3);
        j.completed(serde_json::json!({"state": "UPLOADED"}), None).unwrap();
        // One file all along (no new inode per step): intent, started, 3 parts, completed.
        assert_eq!(std::fs::metadata(j.path()).unwrap().ino(), inode);
        let text = std::fs::read_to_string(j.path()).unwrap();
        assert_eq!(text.lines().count(), 6, "{text}");
        let r = load(j.path()).unwrap();
        assert!(r.parts.is_empty(), "a completed header has no parts: {:?}", r.parts);
        assert_eq!(
            (r.state, r.upload_id.as_str(), r.options["name"].as_str()),
            (JournalState::Completed, "eid1", Some("scan"))
        );
        assert_eq!(r.completion.unwrap()["state"], "UPLOADED");
    }

    /// A resumed journal is open for appending when a rerun writes its options: the journal is
    /// rewritten over itself (Windows refuses to replace a file still open: "Access is denied
    /// (os error 5)", what every resume hit there), then appended to again.
    #[test]
    fn a_resumed_journal_is_rewritten_and_appended_to() {
        let (dir, _file, src, j) = opened(3 << 20);
        j.set_options(serde_json::json!({"name": "a"})).unwrap();
        j.intent(PLAN3).unwrap();
        j.start("teleport", "http://x", "eid1", serde_json::Value::Null, PLAN3).unwrap();
        j.record(&CompletedPart { number: 1, etag: "\"e1\"".into(), size: 1 << 20, crc64nvme: None }).unwrap();
        drop(j);
        let j = open(dir.path(), &src);
        j.set_options(serde_json::json!({"name": "b"})).unwrap();
        j.record(&CompletedPart { number: 2, etag: "\"e2\"".into(), size: 1 << 20, crc64nvme: None }).unwrap();
        let r = load(j.path()).unwrap();
        assert_eq!(r.parts.iter().map(|p| p.number).collect::<Vec<_>>(), [1, 2]);
        assert_eq!((r.state, r.options["name"].as_str()), (JournalState::Started, Some("b")));
        j.completed(serde_json::json!({"state": "UPLOADED"}), None).unwrap();
        j.finish();
        assert!(!j.path().exists());
        // No temporary file is left beside it.
        let left: Vec<_> =
            std::fs::read_dir(j.path().parent().unwrap()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_header_cut_by_a_crash_leaves_the_state_before_it() {
        let (dir, _file, src, j) = opened(3 << 20);
        let plan = PLAN3;
        j.intent(PartPlan { num_parts: 0, ..plan }).unwrap();
        let before = std::fs::metadata(j.path()).unwrap().len();
        j.start("teleport", "http://x", "eid1", serde_json::Value::Null, plan).unwrap();
        let path = j.path().to_path_buf();
        let full = std::fs::metadata(&path).unwrap().len();
        drop(j);
        // The started header was cut half-way: the journal is still at its intent.
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len((before + full) / 2).unwrap();
        let r = open(dir.path(), &src).resume_point().unwrap();
        assert_eq!((r.state, r.upload_id.as_str()), (JournalState::Intent, ""));
    }

    #[test]
    fn ten_thousand_parts_write_linearly_many_bytes() {
        let (dir, _file, src) = setup(10_000);
        let plan = PartPlan { file_size: 10_000, part_size: 1, num_parts: 10_000 };
        let j = open(dir.path(), &src);
        j.start("teleport", "http://x", "eid1", serde_json::Value::Null, plan).unwrap();
        let header = j.bytes_written();
        let etag = format!("\"{}\"", "f".repeat(32));
        let mut marks = vec![];
        for n in 1..=10_000u32 {
            j.record(&CompletedPart { number: n, etag: etag.clone(), size: 1, crc64nvme: None }).unwrap();
            if n % 1000 == 0 {
                marks.push(j.bytes_written());
            }
        }
        // Each thousand parts adds about the same number of bytes (the lines grow only with
        // the digits of the part number): linear, not quadratic.
        let deltas: Vec<u64> = marks.windows(2).map(|w| w[1] - w[0]).collect();
        let (lo, hi) = (*deltas.iter().min().unwrap(), *deltas.iter().max().unwrap());
        assert!(hi <= lo + lo / 10, "{deltas:?}");
        let total = j.bytes_written() - header;
        assert!(total < 10_000 * 80, "{total} bytes for 10,000 parts");
        assert_eq!(std::fs::metadata(j.path()).unwrap().len(), j.bytes_written());
        assert_eq!(load(j.path()).unwrap().parts.len(), 10_000);
    }
}
