//! A directory's bulk-images zip between runs: the CRC-32 pass (shown as a phase of the file's
//! progress), the entry table kept in the state directory with each image's CRC, size and
//! mtime (so a resumed or repeated upload does not read every image twice, and an image
//! touched since an interrupted upload began is refused), and `--zip-to`'s file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::RunOptions;
use crate::engine::progress::{Event, Progress};
use crate::engine::source::FileSource;
use crate::engine::zipsource::{VirtualZip, ZipEntry};
use crate::error::{Error, Result};

/// Writes the archive to `path` (a unique temporary file beside it, synced, renamed: see
/// [`crate::engine::durable::AtomicFile`]) with file mode `mode`, its mtime set to the newest
/// image's, so a rerun writes a file of the same identity. Stops (the file left as it was) at
/// `cancel`.
pub fn write_zip_file(zip: &VirtualZip, path: &Path, mode: u32, cancel: &CancellationToken) -> Result<()> {
    let werr = |e: std::io::Error| zip.failure().unwrap_or_else(|| Error::File { path: path.into(), source: e });
    let mut file = crate::engine::durable::AtomicFile::create(path, mode).map_err(werr)?;
    if let Err(e) = zip.write_until(&mut file, || cancel.is_cancelled()) {
        if cancel.is_cancelled() {
            return Err(Error::Interrupted { hint: format!("run the same command again to write {}", path.display()) });
        }
        return Err(werr(e));
    }
    let newest = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(zip.newest_mtime() as u64);
    file.file().map_err(werr)?.set_modified(newest).map_err(werr)?;
    file.commit().map_err(werr)
}

/// What the state directory keeps of a directory's zip between runs: the entry table with
/// each image's CRC-32, so a resumed or repeated upload does not read every image twice.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ZipTable {
    version: u32,
    /// The directory (canonical).
    dir: PathBuf,
    /// An upload of this table began and has not completed.
    uploading: bool,
    entries: Vec<SavedEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SavedEntry {
    #[serde(rename = "n")]
    name: String,
    #[serde(rename = "s")]
    size: u64,
    #[serde(rename = "t")]
    mtime_ns: u128,
    #[serde(rename = "c")]
    crc: u32,
}

fn table_path(state_dir: &Path, dir: &Path) -> PathBuf {
    let key = hex::encode(&Sha256::digest(dir.to_string_lossy().as_bytes())[..12]);
    state_dir.join("zips").join(format!("{key}.table.json"))
}

fn load_table(state_dir: &Path, dir: &Path) -> Option<ZipTable> {
    let t: ZipTable = serde_json::from_slice(&std::fs::read(table_path(state_dir, dir)).ok()?).ok()?;
    (t.version == 1 && t.dir == dir).then_some(t)
}

pub(crate) fn save_table(state_dir: &Path, zip: &VirtualZip, uploading: bool) -> Result<()> {
    let t = ZipTable {
        version: 1,
        dir: zip.dir().to_path_buf(),
        uploading,
        entries: zip
            .entries()
            .iter()
            .map(|e| SavedEntry { name: e.name.clone(), size: e.size, mtime_ns: e.mtime_ns, crc: e.crc.unwrap_or(0) })
            .collect(),
    };
    crate::engine::durable::write_atomic(
        &table_path(state_dir, zip.dir()),
        &serde_json::to_vec(&t).expect("table serializes"),
    )
}

/// Before the CRC pass: takes the CRCs the state directory knows of images unchanged since,
/// and refuses an image changed since an interrupted upload of the same images began.
/// Returns whether the interrupted upload (if any) may be resumed: not when images were
/// added or removed (that is another archive, a new upload).
pub(crate) fn reuse_table(state_dir: &Path, zip: &mut VirtualZip, resume: bool) -> Result<bool> {
    let Some(saved) = load_table(state_dir, zip.dir()) else { return Ok(resume) };
    let same_names = saved.entries.len() == zip.entries().len()
        && saved.entries.iter().zip(zip.entries()).all(|(s, e)| s.name == e.name);
    if saved.uploading && same_names && resume {
        for (s, e) in saved.entries.iter().zip(zip.entries()) {
            if s.size != e.size || s.mtime_ns != e.mtime_ns {
                return Err(Error::usage(
                    format!(
                        "{} changed since the interrupted upload of {} began (its size or modification time differ)",
                        e.path.display(),
                        zip.dir().display()
                    ),
                    "restore the image, or pass --no-resume to start a new upload of the images as they are now",
                ));
            }
        }
    }
    let known: HashMap<(&str, u64, u128), u32> =
        saved.entries.iter().map(|s| ((s.name.as_str(), s.size, s.mtime_ns), s.crc)).collect();
    let crcs: Vec<Option<u32>> =
        zip.entries().iter().map(|e| known.get(&(e.name.as_str(), e.size, e.mtime_ns)).copied()).collect();
    let entries = zip.entries().iter().zip(crcs).map(|(e, crc)| ZipEntry { crc, ..e.clone() }).collect();
    *zip = VirtualZip::new(zip.dir(), entries);
    Ok(resume && same_names)
}

/// A directory's zip made ready to upload: the CRCs the state directory knows taken (and
/// `resume` cleared when its interrupted upload cannot be carried on), the CRC pass over the
/// other images, the table saved as uploading; then streamed from the images, or written to
/// `zip_to` first and that file uploaded.
pub(crate) async fn ready(
    dir_given: &Path,
    mut zip: VirtualZip,
    state_dir: Option<&Path>,
    options: &RunOptions,
    resume: &mut bool,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<(FileSource, Arc<VirtualZip>)> {
    if let Some(dir) = state_dir {
        *resume = reuse_table(dir, &mut zip, *resume)?;
    }
    crc_pass(&mut zip, progress, cancel).await?;
    if let Some(dir) = state_dir {
        save_table(dir, &zip, true)?;
    }
    let zip = Arc::new(zip);
    let file = match &options.zip_to {
        Some(to) => {
            progress.event(Event::Phase { message: format!("writing {}", to.display()) });
            let (z, t, c) = (zip.clone(), to.clone(), cancel.clone());
            tokio::task::spawn_blocking(move || write_zip_file(&z, &t, 0o666, &c))
                .await
                .map_err(|e| Error::File { path: to.clone(), source: std::io::Error::other(e) })??;
            FileSource::open(to)?
        }
        None => FileSource::virtual_zip(dir_given, zip.clone()),
    };
    Ok((file, zip))
}

/// The CRC-32 pass: every image without a known CRC is read once, several at once, shown as a
/// phase of the file's progress.
pub(crate) async fn crc_pass(
    zip: &mut VirtualZip,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<()> {
    let n = zip.entries().len();
    let todo: u64 = zip.entries().iter().filter(|e| e.crc.is_none()).map(|e| e.size).sum();
    let unread = zip.entries().iter().filter(|e| e.crc.is_none()).count();
    // The progress names the directory: the messages do not.
    if unread == 0 {
        progress.event(Event::Phase {
            message: format!("CRC-32 of all {n} images known from the state directory (not read again)"),
        });
        return Ok(());
    }
    progress.event(Event::Phase {
        message: format!("computing the CRC-32 of {unread} of {n} images ({})", crate::size::human(todo)),
    });
    let t0 = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let on_bytes = {
        let progress = progress.clone();
        let done = done.clone();
        move |b: u64| {
            use std::sync::atomic::Ordering;
            let before = done.fetch_add(b, Ordering::Relaxed);
            let after = before + b;
            if todo > 0 && after * 10 / todo > before * 10 / todo && after < todo {
                progress.event(Event::Phase {
                    message: format!(
                        "CRC-32: {}% ({} of {})",
                        after * 100 / todo,
                        crate::size::human(after),
                        crate::size::human(todo)
                    ),
                });
            }
        }
    };
    let parallel = std::thread::available_parallelism().map_or(2, |p| p.get()).clamp(2, 8);
    zip.compute_crcs(parallel, on_bytes, cancel).await?;
    progress.event(Event::Phase {
        message: format!("CRC-32 of {unread} images read in {:.1} s", t0.elapsed().as_secs_f64()),
    });
    Ok(())
}
