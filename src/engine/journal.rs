//! The resume journal: what an interrupted upload needs to carry on without re-sending
//! finished parts.
//!
//! One JSON file per (provider, endpoint, file) in `<state dir>/journals/`, rewritten
//! atomically (temp file + fsync + rename, mode 0600) each time a part finishes. It holds the
//! provider's upload id, the file's identity (canonical path, size, mtime, a fingerprint of
//! the first and last MiB), the part plan and each finished part's number and ETag; never a
//! token or a presigned URL. A journal whose file identity no longer matches is refused.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::plan::PartPlan;
use super::source::FileSource;
use super::uploader::{CompletedPart, PartDone};
use crate::error::{Error, Result};

const VERSION: u32 = 1;
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
    /// SHA-256 (hex) of the first and last MiB and the size.
    pub fingerprint: String,
}

impl FileIdentity {
    /// Reads the identity of an open file.
    pub fn of(source: &FileSource) -> Result<Self> {
        let path =
            std::fs::canonicalize(source.path()).map_err(|e| Error::File { path: source.path().into(), source: e })?;
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
        Ok(FileIdentity { path, size, mtime_ns, fingerprint: hex::encode(h.finalize()) })
    }
}

/// The journal's content.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JournalData {
    /// Format version.
    pub version: u32,
    /// Provider name.
    pub provider: String,
    /// API origin the upload was started against.
    pub endpoint: String,
    /// The provider's id of the upload (Teleport eid, TruVideo uploadId).
    pub upload_id: String,
    /// Provider-specific facts needed to carry on (mediaId, ...).
    #[serde(default)]
    pub extra: serde_json::Value,
    /// The file.
    pub file: FileIdentity,
    /// How the file is cut.
    pub plan: PartPlan,
    /// Finished parts.
    pub parts: Vec<CompletedPart>,
    /// When the upload started (RFC 3339).
    pub started_at: String,
}

/// An open journal slot for one file.
#[derive(Clone)]
pub struct Journal {
    path: PathBuf,
    identity: FileIdentity,
    data: Arc<Mutex<Option<JournalData>>>,
}

impl Journal {
    /// Opens the slot for `source` under `state_dir`. With `resume`, an existing journal is
    /// loaded (and refused if the file changed); without, it is discarded.
    pub fn open(state_dir: &Path, provider: &str, endpoint: &str, source: &FileSource, resume: bool) -> Result<Self> {
        let identity = FileIdentity::of(source)?;
        let key = hex::encode(Sha256::digest(format!("{provider}\n{endpoint}\n{}", identity.path.display())));
        let path = state_dir.join("journals").join(format!("{provider}-{}.json", &key[..24]));
        let mut data = None;
        if path.exists() {
            if resume {
                let text = std::fs::read(&path).map_err(|e| Error::File { path: path.clone(), source: e })?;
                let loaded: JournalData = serde_json::from_slice(&text).map_err(|e| {
                    Error::usage(
                        format!("the resume journal {} is unreadable: {e}", path.display()),
                        "pass --no-resume to start over",
                    )
                })?;
                if loaded.version != VERSION || loaded.file != identity {
                    return Err(Error::usage(
                        format!(
                            "{} changed since its upload was interrupted; the journal no longer matches it",
                            source.path().display()
                        ),
                        "pass --no-resume to start a new upload of the file as it is now",
                    ));
                }
                data = Some(loaded);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(Journal { path, identity, data: Arc::new(Mutex::new(data)) })
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The interrupted upload to carry on, if any.
    pub fn resume_point(&self) -> Option<JournalData> {
        self.data.lock().expect("journal lock").clone()
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
        let data = JournalData {
            version: VERSION,
            provider: provider.into(),
            endpoint: endpoint.into(),
            upload_id: upload_id.into(),
            extra,
            file: self.identity.clone(),
            plan,
            parts: vec![],
            started_at: chrono::Utc::now().to_rfc3339(),
        };
        write_atomic(&self.path, &data)?;
        *self.data.lock().expect("journal lock") = Some(data);
        Ok(())
    }

    /// Records a finished part.
    pub fn record(&self, part: &CompletedPart) -> Result<()> {
        let mut guard = self.data.lock().expect("journal lock");
        let Some(data) = guard.as_mut() else { return Ok(()) };
        data.parts.retain(|p| p.number != part.number);
        data.parts.push(part.clone());
        write_atomic(&self.path, data)
    }

    /// A callback for the uploader that records each finished part.
    pub fn recorder(&self) -> PartDone {
        let j = self.clone();
        Arc::new(move |p: &CompletedPart| j.record(p))
    }

    /// The upload is complete: the journal goes.
    pub fn finish(&self) {
        let _ = std::fs::remove_file(&self.path);
        *self.data.lock().expect("journal lock") = None;
    }
}

fn write_atomic(path: &Path, data: &JournalData) -> Result<()> {
    super::durable::write_atomic(path, &serde_json::to_vec(data).expect("journal serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_change_detection() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.zip");
        std::fs::write(&file, vec![7u8; 3 << 20]).unwrap();
        let src = FileSource::open(&file).unwrap();
        let plan = PartPlan { file_size: 3 << 20, part_size: 1 << 20, num_parts: 3 };
        let j = Journal::open(dir.path(), "teleport", "http://x", &src, true).unwrap();
        assert!(j.resume_point().is_none());
        j.start("teleport", "http://x", "eid1", serde_json::Value::Null, plan).unwrap();
        j.record(&CompletedPart { number: 2, etag: "\"e2\"".into(), size: 1 << 20 }).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(j.path()).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let again = Journal::open(dir.path(), "teleport", "http://x", &src, true).unwrap();
        let r = again.resume_point().unwrap();
        assert_eq!((r.upload_id.as_str(), r.parts.len(), r.parts[0].etag.as_str()), ("eid1", 1, "\"e2\""));
        // Another endpoint is another journal.
        assert!(Journal::open(dir.path(), "teleport", "http://y", &src, true).unwrap().resume_point().is_none());
        // The file changes: refused.
        std::fs::write(&file, vec![8u8; 3 << 20]).unwrap();
        let src2 = FileSource::open(&file).unwrap();
        let e = Journal::open(dir.path(), "teleport", "http://x", &src2, true).err().unwrap();
        assert!(e.to_string().contains("changed since"), "{e}");
        // --no-resume discards it.
        assert!(Journal::open(dir.path(), "teleport", "http://x", &src2, false).unwrap().resume_point().is_none());
        again.finish();
    }
}
