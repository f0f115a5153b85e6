//! Whether some process still has a file open for writing: `watch` takes a settled file only
//! when none has. Each system answers its own way:
//! - Linux: `/proc/*/fd` and `fdinfo` (the processes this user may inspect); inotify's
//!   close-write events tell the rest;
//! - Windows: opening the file while sharing read access only fails with a sharing violation
//!   as long as any handle with write access is open (whoever holds it: Windows checks every
//!   process's handles);
//! - macOS: libproc, as `lsof` asks it: every process's open vnodes and their open flags
//!   (FSEvents has no close-write event either).
//!
//! `None` where it cannot be told (no `/proc`, another system): then `--settle` alone decides.
//! A writer on another machine of a network file system is not seen anywhere.

use std::path::Path;

/// Whether a process has `path` open for writing; `None` when it cannot be told.
#[cfg(test)]
pub(super) fn open_for_writing(path: &Path) -> Option<bool> {
    Writers::look().open_for_writing(path)
}

/// One look at what the processes have open for writing, asked about many files: on Linux and
/// macOS the look lists every process's descriptors once (its cost is the system's number of
/// open files, not the number of files asked about); on Windows each file is asked as it
/// comes (an open with a sharing mode, which is cheap).
pub(super) struct Writers {
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    open: Option<std::collections::HashSet<std::path::PathBuf>>,
}

impl Writers {
    /// Looks at the system now.
    pub(super) fn look() -> Writers {
        Writers {
            #[cfg(any(target_os = "linux", target_os = "macos"))]
            open: imp::open_for_writing_now(),
        }
    }

    /// Whether a process had `path` open for writing at the look; `None` when it cannot be told.
    pub(super) fn open_for_writing(&self, path: &Path) -> Option<bool> {
        #[cfg(any(target_os = "linux", target_os = "macos"))]
        {
            let open = self.open.as_ref()?;
            let target = std::fs::canonicalize(path).ok()?;
            Some(open.contains(&target))
        }
        #[cfg(not(any(target_os = "linux", target_os = "macos")))]
        {
            imp::open_for_writing(path)
        }
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::collections::HashSet;
    use std::path::PathBuf;

    /// The files the processes (those this user may inspect) have open for writing.
    pub(super) fn open_for_writing_now() -> Option<HashSet<PathBuf>> {
        let procs = std::fs::read_dir("/proc").ok()?;
        let mut open = HashSet::new();
        for p in procs.flatten() {
            let pid = p.file_name();
            if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
            for fd in fds.flatten() {
                // Files only: not sockets, pipes, anonymous inodes (`socket:[…]`), nor devices.
                let Ok(target) = std::fs::read_link(fd.path()) else { continue };
                if !target.is_absolute() || target.starts_with("/dev") || open.contains(&target) {
                    continue;
                }
                let info = std::fs::read_to_string(p.path().join("fdinfo").join(fd.file_name())).unwrap_or_default();
                let flags = info
                    .lines()
                    .find_map(|l| l.strip_prefix("flags:"))
                    .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
                    .unwrap_or(0);
                // O_ACCMODE: 1 = O_WRONLY, 2 = O_RDWR.
                if flags & 3 != 0 {
                    open.insert(target);
                }
            }
        }
        Some(open)
    }
}

#[cfg(windows)]
mod imp {
    use std::os::windows::fs::OpenOptionsExt;
    use std::path::Path;

    use windows_sys::Win32::Foundation::ERROR_SHARING_VIOLATION;
    use windows_sys::Win32::Storage::FileSystem::{FILE_SHARE_DELETE, FILE_SHARE_READ};

    pub(super) fn open_for_writing(path: &Path) -> Option<bool> {
        // Read access, sharing read (and delete: a rename is not a write) but not write: refused
        // while any handle with write access is open, and while one that shares no reading is.
        match std::fs::OpenOptions::new().read(true).share_mode(FILE_SHARE_READ | FILE_SHARE_DELETE).open(path) {
            Ok(_) => Some(false),
            Err(e) if e.raw_os_error() == Some(ERROR_SHARING_VIOLATION as i32) => Some(true),
            Err(_) => None,
        }
    }
}

#[cfg(target_os = "macos")]
mod imp {
    use std::collections::HashSet;
    use std::ffi::{CStr, c_int, c_void};
    use std::path::PathBuf;

    /// `struct proc_fileinfo` (sys/proc_info.h).
    #[repr(C)]
    struct ProcFileInfo {
        fi_openflags: u32,
        fi_status: u32,
        fi_offset: libc::off_t,
        fi_type: i32,
        fi_guardflags: u32,
    }

    /// `struct vnode_fdinfowithpath` (sys/proc_info.h).
    #[repr(C)]
    struct VnodeFdInfoWithPath {
        pfi: ProcFileInfo,
        pvip: libc::vnode_info_path,
    }

    const PROC_PIDFDVNODEPATHINFO: c_int = 2;
    /// The kernel's `FWRITE` open flag.
    const FWRITE: u32 = 0x2;

    /// The files the processes (those this user may inspect) have open for writing.
    pub(super) fn open_for_writing_now() -> Option<HashSet<PathBuf>> {
        let mut open = HashSet::new();
        // SAFETY (every call below): buffers of the sizes given, written by the kernel only up
        // to those sizes; results checked before use.
        let n = unsafe { libc::proc_listallpids(std::ptr::null_mut(), 0) };
        if n <= 0 {
            return None;
        }
        let mut pids = vec![0 as libc::pid_t; n as usize + 64];
        let bytes = (pids.len() * size_of::<libc::pid_t>()) as c_int;
        let n = unsafe { libc::proc_listallpids(pids.as_mut_ptr() as *mut c_void, bytes) };
        if n <= 0 {
            return None;
        }
        pids.truncate(n as usize);
        for pid in pids {
            let size = unsafe { libc::proc_pidinfo(pid, libc::PROC_PIDLISTFDS, 0, std::ptr::null_mut(), 0) };
            if size <= 0 {
                continue; // another user's process, or gone
            }
            let count = size as usize / size_of::<libc::proc_fdinfo>() + 16;
            let mut fds: Vec<libc::proc_fdinfo> = Vec::with_capacity(count);
            let got = unsafe {
                libc::proc_pidinfo(
                    pid,
                    libc::PROC_PIDLISTFDS,
                    0,
                    fds.as_mut_ptr() as *mut c_void,
                    (count * size_of::<libc::proc_fdinfo>()) as c_int,
                )
            };
            if got <= 0 {
                continue;
            }
            unsafe { fds.set_len((got as usize / size_of::<libc::proc_fdinfo>()).min(count)) };
            for fd in fds.iter().filter(|f| f.proc_fdtype == libc::PROX_FDTYPE_VNODE as u32) {
                let mut info = std::mem::MaybeUninit::<VnodeFdInfoWithPath>::zeroed();
                let want = size_of::<VnodeFdInfoWithPath>() as c_int;
                let got = unsafe {
                    libc::proc_pidfdinfo(
                        pid,
                        fd.proc_fd,
                        PROC_PIDFDVNODEPATHINFO,
                        info.as_mut_ptr() as *mut c_void,
                        want,
                    )
                };
                if got != want {
                    continue;
                }
                let info = unsafe { info.assume_init() };
                if info.pfi.fi_openflags & FWRITE == 0 {
                    continue;
                }
                let name = unsafe { CStr::from_ptr(info.pvip.vip_path.as_ptr() as *const _) };
                use std::os::unix::ffi::OsStrExt;
                open.insert(PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes())));
            }
        }
        Some(open)
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
mod imp {
    pub(super) fn open_for_writing(_path: &std::path::Path) -> Option<bool> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A writer of this very process counts (as one of another would): open while it writes,
    /// not once it closed; a reader does not count.
    #[test]
    fn a_writer_is_seen_until_it_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.mp4");
        let mut w = std::fs::File::create(&path).unwrap();
        w.write_all(b"half").unwrap();
        assert_eq!(open_for_writing(&path), Some(true));
        drop(w);
        assert_eq!(open_for_writing(&path), Some(false));
        let r = std::fs::File::open(&path).unwrap();
        assert_eq!(open_for_writing(&path), Some(false), "a reader is not a writer");
        drop(r);
        let append = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        assert_eq!(open_for_writing(&path), Some(true), "appending is writing");
        drop(append);
        assert_eq!(open_for_writing(&path), Some(false));
    }
}
