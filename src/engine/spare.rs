//! A state directory's spare files (`<state dir>/spare/`, on Unix): emptied files kept to be
//! written again, so that a run of many small files neither makes nor frees a file per file.
//!
//! Each upload's journal is a new file, and it lives on as the upload's done record until a
//! compaction folds the record into the packed file (the run's done records) and
//! takes the file away. ext4 without a journal (a common setup for VMs and flash storage)
//! keeps a freed inode out of use for a minute or more after its removal, and scans past
//! every such inode for each new file: measured on this project's machine, a file creation
//! cost 244 µs of CPU after 20,000 removals, 41 µs after none, 7 µs on ext4 with a journal.
//! Over a run of 100,000 files that scan was what made each file cost more than at 10,000.
//!
//! So a compaction moves each loose record it took in here, emptied ([`put`]), instead of
//! removing it, and a new journal's temporary file is a spare renamed into place ([`take`])
//! instead of a new file. At most [`MAX`] spares are kept (empty files: an inode and a name
//! each); beyond that a file is removed as before. Several processes may share the directory:
//! a spare another one took first is skipped. Elsewhere than Unix, files are removed and
//! created as before.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The most spare files a state directory keeps.
pub(crate) const MAX: usize = 32_768;

/// The spare files this process knows of, per state directory (listed once, then kept up to
/// date by its own puts and takes).
static KNOWN: Mutex<Option<HashMap<PathBuf, Vec<OsString>>>> = Mutex::new(None);

fn spare_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("spare")
}

/// Runs `f` on the names of `state_dir`'s spare files (listed at the first use).
fn with_known<T>(state_dir: &Path, f: impl FnOnce(&mut Vec<OsString>) -> T) -> T {
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    let names = known.get_or_insert_with(HashMap::new).entry(state_dir.to_path_buf()).or_insert_with(|| {
        std::fs::read_dir(spare_dir(state_dir))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default()
    });
    f(names)
}

/// Takes `file` (in `state_dir`, no longer needed) out of use: renamed into the spare
/// directory and emptied, or removed when the directory holds [`MAX`] spares (or elsewhere
/// than Unix). Blocking.
pub(crate) fn put(state_dir: &Path, file: &Path) -> io::Result<()> {
    put_at_most(state_dir, file, MAX)
}

fn put_at_most(state_dir: &Path, file: &Path, max: usize) -> io::Result<()> {
    let Some(name) = file.file_name().map(OsString::from).filter(|_| cfg!(unix)) else {
        return std::fs::remove_file(file);
    };
    if with_known(state_dir, |names| names.len()) >= max {
        return std::fs::remove_file(file);
    }
    let dir = spare_dir(state_dir);
    let to = dir.join(&name);
    let moved = match std::fs::rename(file, &to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.exists() => {
            super::durable::create_private_dir_all(&dir)?;
            std::fs::rename(file, &to)
        }
        other => other,
    };
    if moved.is_err() {
        // Another file system under the state directory, say: removed as before.
        return std::fs::remove_file(file);
    }
    // Emptied: a spare holds no data (its blocks go; the inode stays).
    if let Err(e) = std::fs::OpenOptions::new().write(true).truncate(true).open(&to) {
        tracing::debug!("cannot empty the spare file {}: {e}", to.display());
    }
    with_known(state_dir, |names| names.push(name));
    Ok(())
}

/// A spare file of `state_dir`, renamed to `to` (a new temporary name in the same file system)
/// and open for writing, empty; `None` when there is none (the caller then creates the file).
/// Blocking.
pub(crate) fn take(state_dir: &Path, to: &Path) -> Option<File> {
    if !cfg!(unix) {
        return None;
    }
    let dir = spare_dir(state_dir);
    loop {
        let name = with_known(state_dir, Vec::pop)?;
        match std::fs::rename(dir.join(&name), to) {
            Ok(()) => {}
            // Taken by another process sharing the directory: the next one.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => return None,
        }
        let file = std::fs::OpenOptions::new().write(true).truncate(true).open(to).ok();
        match file {
            Some(f) if f.metadata().is_ok_and(|m| m.is_file()) => return Some(f),
            _ => {
                // Not a file of ours after all: out of the way, and created anew.
                let _ = std::fs::remove_file(to);
                return None;
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_file_put_aside_is_emptied_and_taken_back_as_the_same_inode() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        std::fs::create_dir(state.join("done")).unwrap();
        let rec = state.join("done").join("teleport-abc.json");
        std::fs::write(&rec, vec![b'x'; 3000]).unwrap();
        let ino = std::fs::metadata(&rec).unwrap().ino();
        put(state, &rec).unwrap();
        assert!(!rec.exists());
        let spare = state.join("spare").join("teleport-abc.json");
        assert_eq!(std::fs::metadata(&spare).unwrap().len(), 0, "emptied");
        let tmp = state.join("journals-tmp");
        let mut f = take(state, &tmp).expect("a spare");
        f.write_all(b"new").unwrap();
        assert_eq!(std::fs::metadata(&tmp).unwrap().ino(), ino, "the same file, no new inode");
        assert_eq!(std::fs::read(&tmp).unwrap(), b"new");
        assert!(!spare.exists());
        assert!(take(state, &state.join("other")).is_none(), "none left");
    }

    #[test]
    fn beyond_the_most_kept_a_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        for i in 0..3 {
            let f = state.join(format!("f{i}"));
            std::fs::write(&f, b"r").unwrap();
            put_at_most(state, &f, 2).unwrap();
            assert!(!f.exists());
        }
        assert_eq!(std::fs::read_dir(state.join("spare")).unwrap().count(), 2);
    }

    #[test]
    fn a_spare_another_process_took_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        for i in 0..2 {
            let f = state.join(format!("f{i}"));
            std::fs::write(&f, b"r").unwrap();
            put(state, &f).unwrap();
        }
        // The last one put is taken first: another process takes it behind this one's back.
        std::fs::remove_file(state.join("spare").join("f1")).unwrap();
        let got = take(state, &state.join("t")).expect("the other spare");
        drop(got);
        assert!(state.join("t").exists() && !state.join("spare").join("f0").exists());
        assert!(take(state, &state.join("u")).is_none());
    }

    #[test]
    fn the_spares_of_an_earlier_process_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        std::fs::create_dir(state.join("spare")).unwrap();
        std::fs::write(state.join("spare").join("old"), b"").unwrap();
        assert!(take(state, &state.join("t")).is_some());
    }
}
