//! The durable-state layer: writing a file so that a crash at any moment leaves either the old
//! or the new version, never a mix, never an empty file.
//!
//! The recipe, written once: a temporary file with a unique name in the target's directory
//! (unique per process *and* per call, so concurrent writers in one process never share one),
//! the bytes, `fsync` of the file, `rename` over the target, `fsync` of the directory (so the
//! rename itself survives a power cut). State files are readable by the owner only (0600) and
//! the directories created for them are 0700.
//!
//! Every state file goes through here: the resume journal's snapshots
//! ([`super::journal`]), the sign-in token cache, the done records, the bulk-images zip
//! ([`AtomicFile`], streamed), downloads ([`rename_durable`] of the `.part` file) and Apertur's
//! poll output.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Mode of state files.
pub(crate) const FILE_MODE: u32 = 0o600;
/// Mode of the directories created for state files.
#[cfg(unix)]
pub(crate) const DIR_MODE: u32 = 0o700;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` so that a crash leaves the old or the new content: unique temp
/// file, fsync, rename, directory fsync; mode 0600, missing parent directories created 0700.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_whole(path, bytes, None)
}

/// [`write_atomic`] of a file of `state_dir` that is written often (a journal): its temporary
/// file is one of the directory's spare files when there is one ([`super::spare`]), so that no
/// file is made for it.
pub(crate) fn write_atomic_reusing(path: &Path, bytes: &[u8], state_dir: &Path) -> Result<()> {
    write_whole(path, bytes, Some(state_dir))
}

fn write_whole(path: &Path, bytes: &[u8], spares_of: Option<&Path>) -> Result<()> {
    let err = |e| Error::File { path: path.to_path_buf(), source: e };
    let mut f = match spares_of {
        Some(state_dir) => AtomicFile::reusing(path, state_dir),
        None => AtomicFile::with_buffer(path, FILE_MODE, 0),
    }
    .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.commit().map_err(err)
}

/// Runs blocking state-file work (a [`write_atomic`], a journal append: each waits for fsync)
/// on the blocking pool and waits for it, so the run's few async workers go on serving the
/// network meanwhile: many files writing their journals at once then share the disk's
/// flushes instead of taking turns with the sockets.
pub(crate) async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| Error::File {
        path: PathBuf::from("<state directory>"),
        source: io::Error::other(format!("state file task failed: {e}")),
    })?
}

/// [`write_atomic`] with another mode for the file (user-facing output such as downloaded
/// images: `0o666`, narrowed by the umask as usual).
#[cfg(feature = "cli")]
pub(crate) fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = AtomicFile::create(path, mode)?;
    f.write_all(bytes)?;
    f.commit()
}

/// Creates `dir` and its missing parents with mode 0700 (existing directories are left as
/// they are).
pub(crate) fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, DIR_MODE);
    b.create(dir)
}

/// Fsyncs a directory, so that renames and creations in it are durable (when this returns,
/// everything done in `dir` before the call is).
///
/// Callers at once share fsyncs (a group commit): one fsync that *starts* after a caller's
/// change covers it, so a caller that finds one running waits for it to end and then for the
/// next, which covers every change made meanwhile. Sixty-four small files finishing together
/// then cost the directory a few fsyncs, not sixty-four.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        group_sync(dir)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(all(test, unix))]
static DIR_FSYNCS: AtomicU64 = AtomicU64::new(0);

/// The fsyncs of one directory: how many were asked for, how many are covered.
#[cfg(unix)]
#[derive(Default)]
struct DirSyncs {
    /// Tickets handed out (each caller takes the next one).
    asked: u64,
    /// Every ticket up to this one is covered by a finished fsync.
    covered: u64,
    /// An fsync is running.
    running: bool,
}

#[cfg(unix)]
fn group_sync(dir: &Path) -> io::Result<()> {
    use std::collections::HashMap;
    use std::sync::{Arc, Condvar, Mutex, OnceLock};
    type Slot = Arc<(Mutex<DirSyncs>, Condvar)>;
    static DIRS: OnceLock<Mutex<HashMap<PathBuf, Slot>>> = OnceLock::new();
    let slot =
        DIRS.get_or_init(Default::default).lock().expect("dir syncs").entry(dir.to_path_buf()).or_default().clone();
    let (state, cond) = &*slot;
    let mut s = state.lock().expect("dir sync");
    s.asked += 1;
    let ticket = s.asked;
    loop {
        if s.covered >= ticket {
            return Ok(());
        }
        if !s.running {
            break;
        }
        s = cond.wait(s).expect("dir sync");
    }
    // This caller syncs, for every ticket handed out so far.
    s.running = true;
    let upto = s.asked;
    drop(s);
    #[cfg(test)]
    DIR_FSYNCS.fetch_add(1, Ordering::Relaxed);
    let result = File::open(dir).and_then(|d| d.sync_all());
    let mut s = state.lock().expect("dir sync");
    s.running = false;
    if result.is_ok() {
        s.covered = s.covered.max(upto);
    }
    cond.notify_all();
    result
}

/// Renames `from` over `to` and fsyncs `to`'s directory. `from` must already be synced.
pub(crate) fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    super::platform::rename(from, to)?;
    sync_dir(parent_of(to))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A unique temporary name next to `target`: `.{name}.{pid}.{n}.{random}.tmp`.
pub(crate) fn temp_path(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "state".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let r: u32 = rand::random();
    parent_of(target).join(format!(".{name}.{}.{n}.{r:08x}.tmp", std::process::id()))
}

/// A new file at `path` (none may be there), mode `mode` on Unix.
fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    opts.open(path)
}

/// A file being written in place of `target`: the bytes go to a unique temporary file, and
/// [`AtomicFile::commit`] makes them the target's (fsync, rename, directory fsync). Dropped
/// without a commit, the temporary file is removed and the target is untouched.
pub(crate) struct AtomicFile {
    tmp: PathBuf,
    target: PathBuf,
    file: Option<io::BufWriter<File>>,
}

impl AtomicFile {
    /// Starts writing a new version of `target` (file mode `mode`; missing parent
    /// directories are created 0700).
    pub(crate) fn create(target: &Path, mode: u32) -> io::Result<Self> {
        Self::with_buffer(target, mode, 1 << 20)
    }

    /// [`AtomicFile::create`] with a write buffer of `capacity` bytes (a small one for work
    /// done on the blocking pool's threads, whose allocator arenas would keep a large one).
    pub(crate) fn with_buffer(target: &Path, mode: u32, capacity: usize) -> io::Result<Self> {
        create_private_dir_all(parent_of(target))?;
        let tmp = temp_path(target);
        let file = create_new(&tmp, mode)?;
        Ok(AtomicFile { tmp, target: target.to_path_buf(), file: Some(io::BufWriter::with_capacity(capacity, file)) })
    }

    /// [`AtomicFile::create`] (mode 0600, unbuffered: for bytes written at once) whose
    /// temporary file is a spare file of `state_dir` when there is one.
    pub(crate) fn reusing(target: &Path, state_dir: &Path) -> io::Result<Self> {
        create_private_dir_all(parent_of(target))?;
        let tmp = temp_path(target);
        let file = match super::spare::take(state_dir, &tmp) {
            Some(file) => file,
            None => create_new(&tmp, FILE_MODE)?,
        };
        Ok(AtomicFile { tmp, target: target.to_path_buf(), file: Some(io::BufWriter::with_capacity(0, file)) })
    }

    /// The open temporary file (to set its times before the commit, say).
    pub(crate) fn file(&mut self) -> io::Result<&File> {
        let w = self.file.as_mut().expect("not committed");
        w.flush()?;
        Ok(w.get_ref())
    }

    /// Flushes, fsyncs, renames over the target and fsyncs the directory.
    pub(crate) fn commit(mut self) -> io::Result<()> {
        let w = self.file.take().expect("not committed");
        let done = w.into_inner().map_err(|e| e.into_error()).and_then(|file| file.sync_all());
        // A failed flush or sync (a full disk) leaves no temporary file behind.
        let done = done.and_then(|()| rename_durable(&self.tmp, &self.target));
        if done.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        done
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("not committed").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("not committed").flush()
    }
}

impl io::Seek for AtomicFile {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.file.as_mut().expect("not committed").seek(pos)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD_ENV: &str = "UPLOAD_DURABLE_CRASH_CHILD";

    /// The two versions the crash child alternates between: large enough that a write takes
    /// several system calls, each line-checkable.
    fn version(v: u8) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..20_000u32 {
            out.extend_from_slice(format!("v{v} line {i:06}\n").as_bytes());
        }
        out
    }

    #[cfg(unix)]
    #[test]
    fn callers_at_once_share_directory_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let before = DIR_FSYNCS.load(Ordering::Relaxed);
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let d = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let target = d.join(format!("f{i}"));
                    let tmp = temp_path(&target);
                    std::fs::write(&tmp, b"x").unwrap();
                    rename_durable(&tmp, &target)
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let syncs = DIR_FSYNCS.load(Ordering::Relaxed) - before;
        assert!((1..=16).contains(&syncs), "{syncs} fsyncs for 16 callers");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 16);
    }

    #[cfg(unix)]
    #[test]
    fn mode_and_parents() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(dir.path().join("a")).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(dir.path().join("a/b")).unwrap().permissions().mode() & 0o777, 0o700);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path().join("a/b")).unwrap().count(), 1);
        // An uncommitted writer leaves the target alone and removes its temp file.
        {
            let mut f = AtomicFile::create(&path, FILE_MODE).unwrap();
            f.write_all(b"three").unwrap();
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path().join("a/b")).unwrap().count(), 1);
        // Unusable places are errors, not panics.
        assert!(write_atomic(Path::new("/dev/null/x/state.json"), b"x").is_err());
    }

    #[test]
    fn concurrent_writers_in_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let versions = [version(1), version(2)];
        std::thread::scope(|s| {
            for t in 0..8 {
                let (path, versions) = (&path, &versions);
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(path, &versions[t % 2]).unwrap();
                    }
                });
            }
        });
        let got = std::fs::read(&path).unwrap();
        assert!(got == versions[0] || got == versions[1]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// Not a test on its own: the child process of `a_kill_leaves_the_old_or_the_new_version`.
    #[test]
    fn crash_child() {
        let Some(path) = std::env::var_os(CHILD_ENV) else { return };
        let path = PathBuf::from(path);
        let versions = [version(1), version(2)];
        std::fs::write(path.with_extension("ready"), b"").unwrap();
        for i in 0.. {
            write_atomic(&path, &versions[i % 2]).unwrap();
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_kill_leaves_the_old_or_the_new_version() {
        use rand::Rng;
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let versions = [version(1), version(2)];
        write_atomic(&path, &versions[0]).unwrap();
        let exe = std::env::current_exe().unwrap();
        let mut rng = rand::thread_rng();
        let mut seen = [false, false];
        for round in 0..40 {
            let ready = path.with_extension("ready");
            let _ = std::fs::remove_file(&ready);
            let mut child = std::process::Command::new(&exe)
                .args(["--exact", "engine::durable::tests::crash_child", "--test-threads=1", "--nocapture"])
                .env(CHILD_ENV, &path)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let t0 = std::time::Instant::now();
            while !ready.exists() {
                assert!(t0.elapsed() < Duration::from_secs(120), "the crash child did not start");
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_micros(rng.gen_range(0..30_000)));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            let got = std::fs::read(&path).unwrap();
            let which = versions.iter().position(|v| *v == got);
            assert!(which.is_some(), "round {round}: the file is neither version ({} bytes)", got.len());
            seen[which.unwrap()] = true;
        }
        // Leftover temp files from the kills are all that may remain besides the file.
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(name == "state.json" || name == "state.ready" || name.ends_with(".tmp"), "{name}");
        }
        assert!(seen[0] || seen[1]);
    }
}
