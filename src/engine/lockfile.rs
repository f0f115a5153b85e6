//! Advisory locks of uploads, many in one file.
//!
//! One lock per upload, each a one-byte range of `<state dir>/locks/uploads.lock` (POSIX
//! record locks, `fcntl(F_SETLK)`; on Windows `LockFileEx`), at an offset derived from the
//! upload's key. A run of
//! thousands of small files takes thousands of locks: one file for all of them makes no inode
//! per upload (a lock file per upload made one each, and ext4's inode allocator is what such a
//! run spent most of its system time in). The holder's pid comes from the kernel
//! (`F_GETLK`), not from the file (Windows does not tell who holds a range). A crashed
//! holder's locks go with its process.
//!
//! Record locks belong to the process, and closing any descriptor of the file drops every one
//! of them (Windows: the locks belong to the handle): the file is opened once per process and
//! state directory and never closed, and every lock of one key within the process is one
//! shared [`RangeLock`] (the registry). No file is made per upload, so none is left behind.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use super::durable;

/// Why a lock was not taken.
#[derive(Debug)]
pub(crate) enum Busy {
    /// Another process holds it (its pid when the system says).
    Pid(Option<u32>),
    /// The lock file cannot be opened or locked.
    Io(std::io::Error),
}

type Key = (PathBuf, u64);

/// One held lock (shared by everybody in this process who asked for its key).
pub(crate) struct RangeLock {
    key: Key,
}

impl std::fmt::Debug for RangeLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeLock").field("file", &self.key.0).field("offset", &self.key.1).finish()
    }
}

struct Registry {
    held: HashMap<Key, Weak<RangeLock>>,
    /// The lock file of each state directory, open for the life of the process.
    files: HashMap<PathBuf, Arc<File>>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: std::sync::OnceLock<Mutex<Registry>> = std::sync::OnceLock::new();
    R.get_or_init(|| Mutex::new(Registry { held: HashMap::new(), files: HashMap::new() }))
}

/// The offset of `name`'s byte: 62 bits of its SHA-256 (a collision of two uploads' keys is
/// as likely as one of their journals' names).
fn offset(name: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(name.as_bytes());
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes")) >> 2
}

/// Takes the lock `name` in `locks_dir` (created 0700), or says who holds it.
pub(crate) fn try_lock(locks_dir: &Path, name: &str) -> Result<Arc<RangeLock>, Busy> {
    take(locks_dir, name, false)
}

/// Takes the lock `name` in `locks_dir` only when nobody holds it, this process included
/// ([`try_lock`] shares a lock this process holds): for work that must exclude every other
/// holder, such as the compaction of done records. Held in this process: busy, with its pid.
pub(crate) fn try_lock_alone(locks_dir: &Path, name: &str) -> Result<Arc<RangeLock>, Busy> {
    take(locks_dir, name, true)
}

fn take(locks_dir: &Path, name: &str, alone: bool) -> Result<Arc<RangeLock>, Busy> {
    let mut reg = registry().lock().expect("lock registry");
    let key = (locks_dir.to_path_buf(), offset(name));
    if let Some(l) = reg.held.get(&key).and_then(Weak::upgrade) {
        return if alone { Err(Busy::Pid(Some(std::process::id()))) } else { Ok(l) };
    }
    durable::create_private_dir_all(locks_dir).map_err(Busy::Io)?;
    let file = match reg.files.get(locks_dir) {
        Some(f) => f.clone(),
        None => {
            let f = Arc::new(open_private(&locks_dir.join(FILE)).map_err(Busy::Io)?);
            reg.files.insert(locks_dir.to_path_buf(), f.clone());
            f
        }
    };
    let lock = imp::lock(&file, &key)?;
    let lock = Arc::new(lock);
    reg.held.insert(key, Arc::downgrade(&lock));
    Ok(lock)
}

impl Drop for RangeLock {
    fn drop(&mut self) {
        let mut reg = registry().lock().expect("lock registry");
        // Somebody in this process may have taken the key again between the last handle going
        // and this drop: then the byte stays locked, for them.
        if reg.held.get(&self.key).and_then(Weak::upgrade).is_some() {
            return;
        }
        reg.held.remove(&self.key);
        if let Some(file) = reg.files.get(&self.key.0) {
            imp::unlock(file, self.key.1);
        }
    }
}

/// The one lock file of a locks directory.
const FILE: &str = "uploads.lock";

fn open_private(path: &Path) -> std::io::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, durable::FILE_MODE);
    opts.open(path)
}

#[cfg(unix)]
mod imp {
    use std::os::fd::AsRawFd;

    use super::*;

    fn flock(kind: libc::c_short, start: u64) -> libc::flock {
        // SAFETY: `flock` is plain data; all-zero is a valid value of it.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = kind;
        fl.l_whence = libc::SEEK_SET as _;
        fl.l_start = start as libc::off_t;
        fl.l_len = 1;
        fl
    }

    // `F_WRLCK` and `F_UNLCK` are `c_int` on Linux and `c_short` on macOS; `l_type` is a `c_short`.
    #[allow(clippy::unnecessary_cast)]
    const WRITE: libc::c_short = libc::F_WRLCK as libc::c_short;
    #[allow(clippy::unnecessary_cast)]
    const UNLOCK: libc::c_short = libc::F_UNLCK as libc::c_short;

    fn fcntl(file: &File, cmd: libc::c_int, fl: &mut libc::flock) -> std::io::Result<()> {
        // SAFETY: a valid descriptor and a valid, exclusively borrowed `flock`.
        match unsafe { libc::fcntl(file.as_raw_fd(), cmd, fl as *mut libc::flock) } {
            -1 => Err(std::io::Error::last_os_error()),
            _ => Ok(()),
        }
    }

    pub(super) fn lock(file: &File, key: &Key) -> Result<RangeLock, Busy> {
        // The holder may let go between the refusal and the question who it is: ask again.
        for _ in 0..100 {
            match fcntl(file, libc::F_SETLK, &mut flock(WRITE, key.1)) {
                Ok(()) => return Ok(RangeLock { key: key.clone() }),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
                    let mut who = flock(WRITE, key.1);
                    fcntl(file, libc::F_GETLK, &mut who).map_err(Busy::Io)?;
                    if who.l_type != UNLOCK {
                        return Err(Busy::Pid(u32::try_from(who.l_pid).ok().filter(|&p| p > 0)));
                    }
                }
                Err(e) => return Err(Busy::Io(e)),
            }
        }
        Err(Busy::Pid(None))
    }

    pub(super) fn unlock(file: &File, offset: u64) {
        let _ = fcntl(file, libc::F_SETLK, &mut flock(UNLOCK, offset));
    }
}

#[cfg(windows)]
mod imp {
    use std::os::windows::io::AsRawHandle;

    use windows_sys::Win32::Foundation::{ERROR_IO_PENDING, ERROR_LOCK_VIOLATION};
    use windows_sys::Win32::Storage::FileSystem::{
        LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY, LockFileEx, UnlockFileEx,
    };
    use windows_sys::Win32::System::IO::OVERLAPPED;

    use super::*;

    fn at(offset: u64) -> OVERLAPPED {
        let mut o = OVERLAPPED::default();
        o.Anonymous.Anonymous.Offset = offset as u32;
        o.Anonymous.Anonymous.OffsetHigh = (offset >> 32) as u32;
        o
    }

    pub(super) fn lock(file: &File, key: &Key) -> Result<RangeLock, Busy> {
        let mut o = at(key.1);
        // SAFETY: a valid handle (synchronous: the call completes before it returns) and a
        // valid, exclusively borrowed OVERLAPPED that outlives the call.
        let ok = unsafe {
            LockFileEx(file.as_raw_handle() as _, LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &mut o)
        };
        if ok != 0 {
            return Ok(RangeLock { key: key.clone() });
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error().map(|c| c as u32) {
            // Another handle (another process) holds the byte; Windows does not say who.
            Some(ERROR_LOCK_VIOLATION | ERROR_IO_PENDING) => Err(Busy::Pid(None)),
            _ => Err(Busy::Io(e)),
        }
    }

    pub(super) fn unlock(file: &File, offset: u64) {
        let mut o = at(offset);
        // SAFETY: as in `lock`.
        unsafe { UnlockFileEx(file.as_raw_handle() as _, 0, 1, 0, &mut o) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const CHILD_ENV: &str = "UPLOAD_LOCK_CHILD_DIR";

    /// Not a test on its own: the child process of
    /// `another_process_holds_it_until_it_dies_and_no_file_is_left_per_upload`, which takes a
    /// lock, says so, and holds it until it is killed (a minute at most).
    #[test]
    fn lock_child() {
        let Some(dir) = std::env::var_os(CHILD_ENV) else { return };
        let dir = PathBuf::from(dir);
        let _held = try_lock(&dir, "teleport-held").unwrap();
        std::fs::write(dir.join("ready"), b"").unwrap();
        std::thread::sleep(Duration::from_secs(60));
    }

    #[test]
    fn another_process_holds_it_until_it_dies_and_no_file_is_left_per_upload() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "engine::lockfile::tests::lock_child", "--test-threads=1", "--nocapture"])
            .env(CHILD_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while !dir.path().join("ready").exists() {
            assert!(t0.elapsed() < Duration::from_secs(120), "the lock child did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        match try_lock(dir.path(), "teleport-held") {
            // The kernel names the holder on unix; Windows does not tell.
            Err(Busy::Pid(pid)) => {
                #[cfg(unix)]
                assert_eq!(pid, Some(child.id()));
                #[cfg(windows)]
                assert_eq!(pid, None);
            }
            other => panic!("the lock of another process was taken: {other:?}"),
        }
        // Other uploads are free meanwhile.
        drop(try_lock(dir.path(), "teleport-other").unwrap());
        // A holder that dies (kill -9, TerminateProcess) lets go.
        child.kill().unwrap();
        child.wait().unwrap();
        let t0 = Instant::now();
        let held = loop {
            match try_lock(dir.path(), "teleport-held") {
                Ok(l) => break l,
                Err(e) => assert!(t0.elapsed() < Duration::from_secs(30), "still held after its holder died: {e:?}"),
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(held);
        let mut files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        files.sort();
        assert_eq!(files, ["ready", FILE]);
    }

    #[test]
    fn one_holder_per_key_within_a_process_and_released_when_the_last_goes() {
        let dir = tempfile::tempdir().unwrap();
        let a = try_lock(dir.path(), "teleport-a").unwrap();
        let a2 = try_lock(dir.path(), "teleport-a").unwrap();
        assert!(Arc::ptr_eq(&a, &a2));
        let b = try_lock(dir.path(), "teleport-b").unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(files, vec![std::ffi::OsString::from("uploads.lock")]);
        let key = (dir.path().to_path_buf(), offset("teleport-a"));
        drop(a);
        assert_eq!(registry().lock().unwrap().held.get(&key).map(Weak::strong_count), Some(1));
        drop(a2);
        assert!(!registry().lock().unwrap().held.contains_key(&key));
        // Taken again after it went: a new holder.
        let a3 = try_lock(dir.path(), "teleport-a").unwrap();
        // Alone: refused while this process holds it, taken once it went.
        assert!(matches!(try_lock_alone(dir.path(), "teleport-a"), Err(Busy::Pid(Some(p))) if p == std::process::id()));
        let c = try_lock_alone(dir.path(), "teleport-c").unwrap();
        assert!(matches!(try_lock_alone(dir.path(), "teleport-c"), Err(Busy::Pid(_))));
        drop(c);
        drop(try_lock_alone(dir.path(), "teleport-c").unwrap());
        assert_eq!(registry().lock().unwrap().held.get(&key).map(Weak::strong_count), Some(1));
        drop((a3, b));
    }
}
