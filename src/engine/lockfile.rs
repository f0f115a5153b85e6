//! Advisory locks of uploads, many in one file.
//!
//! One lock per upload, each a one-byte range of `<state dir>/locks/uploads.lock` (POSIX
//! record locks, `fcntl(F_SETLK)`), at an offset derived from the upload's key. A run of
//! thousands of small files takes thousands of locks: one file for all of them makes no inode
//! per upload (a lock file per upload made one each, and ext4's inode allocator is what such a
//! run spent most of its system time in). The holder's pid comes from the kernel
//! (`F_GETLK`), not from the file. A crashed holder's locks go with its process.
//!
//! Record locks belong to the process, and closing any descriptor of the file drops every one
//! of them: the file is opened once per process and state directory and never closed, and
//! every lock of one key within the process is one shared [`RangeLock`] (the registry).
//! Where record locks are not available (not unix), each key has its own file, locked whole.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use super::durable;

/// Why a lock was not taken.
#[derive(Debug)]
pub enum Busy {
    /// Another process holds it (its pid when the system says).
    Pid(Option<u32>),
    /// The lock file cannot be opened or locked.
    Io(std::io::Error),
}

type Key = (PathBuf, u64);

/// One held lock (shared by everybody in this process who asked for its key).
pub struct RangeLock {
    key: Key,
    #[cfg(not(unix))]
    _file: File,
}

impl std::fmt::Debug for RangeLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeLock").field("file", &self.key.0).field("offset", &self.key.1).finish()
    }
}

struct Registry {
    held: HashMap<Key, Weak<RangeLock>>,
    /// The lock file of each state directory, open for the life of the process.
    #[cfg_attr(not(unix), allow(dead_code))]
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
pub fn try_lock(locks_dir: &Path, name: &str) -> Result<Arc<RangeLock>, Busy> {
    let mut reg = registry().lock().expect("lock registry");
    let key = (locks_dir.to_path_buf(), offset(name));
    if let Some(l) = reg.held.get(&key).and_then(Weak::upgrade) {
        return Ok(l);
    }
    durable::create_private_dir_all(locks_dir).map_err(Busy::Io)?;
    let lock = imp::lock(&mut reg, &key, locks_dir, name)?;
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
        imp::unlock(&reg, &self.key);
    }
}

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

    const FILE: &str = "uploads.lock";

    fn flock(kind: libc::c_int, start: u64) -> libc::flock {
        // SAFETY: `flock` is plain data; all-zero is a valid value of it.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = kind as _;
        fl.l_whence = libc::SEEK_SET as _;
        fl.l_start = start as libc::off_t;
        fl.l_len = 1;
        fl
    }

    fn fcntl(file: &File, cmd: libc::c_int, fl: &mut libc::flock) -> std::io::Result<()> {
        // SAFETY: a valid descriptor and a valid, exclusively borrowed `flock`.
        match unsafe { libc::fcntl(file.as_raw_fd(), cmd, fl as *mut libc::flock) } {
            -1 => Err(std::io::Error::last_os_error()),
            _ => Ok(()),
        }
    }

    pub(super) fn lock(reg: &mut Registry, key: &Key, dir: &Path, _name: &str) -> Result<RangeLock, Busy> {
        let file = match reg.files.get(dir) {
            Some(f) => f.clone(),
            None => {
                let f = Arc::new(open_private(&dir.join(FILE)).map_err(Busy::Io)?);
                reg.files.insert(dir.to_path_buf(), f.clone());
                f
            }
        };
        // The holder may let go between the refusal and the question who it is: ask again.
        for _ in 0..100 {
            match fcntl(&file, libc::F_SETLK, &mut flock(libc::F_WRLCK, key.1)) {
                Ok(()) => return Ok(RangeLock { key: key.clone() }),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
                    let mut who = flock(libc::F_WRLCK, key.1);
                    fcntl(&file, libc::F_GETLK, &mut who).map_err(Busy::Io)?;
                    if who.l_type as libc::c_int != libc::F_UNLCK {
                        return Err(Busy::Pid(u32::try_from(who.l_pid).ok().filter(|&p| p > 0)));
                    }
                }
                Err(e) => return Err(Busy::Io(e)),
            }
        }
        Err(Busy::Pid(None))
    }

    pub(super) fn unlock(reg: &Registry, key: &Key) {
        if let Some(file) = reg.files.get(&key.0) {
            let _ = fcntl(file, libc::F_SETLK, &mut flock(libc::F_UNLCK, key.1));
        }
    }
}

#[cfg(not(unix))]
mod imp {
    use super::*;

    pub(super) fn lock(_reg: &mut Registry, key: &Key, dir: &Path, name: &str) -> Result<RangeLock, Busy> {
        let file = open_private(&dir.join(format!("{name}.lock"))).map_err(Busy::Io)?;
        match file.try_lock() {
            Ok(()) => Ok(RangeLock { key: key.clone(), _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Busy::Pid(None)),
            Err(std::fs::TryLockError::Error(e)) => Err(Busy::Io(e)),
        }
    }

    pub(super) fn unlock(_reg: &Registry, _key: &Key) {}
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

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
        assert_eq!(registry().lock().unwrap().held.get(&key).map(Weak::strong_count), Some(1));
        drop((a3, b));
    }
}
