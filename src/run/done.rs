//! What the state directory remembers of finished uploads (done records, so a rerun skips
//! what was uploaded), and of `--force` runs in progress.

use std::path::{Path, PathBuf};

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

pub(crate) fn done_path(
    state_dir: &Path,
    provider: &str,
    endpoint: &str,
    identity: &FileIdentity,
    destination: &[(String, String)],
) -> PathBuf {
    let mut h = Sha256::new();
    h.update(format!("{provider}\n{endpoint}\n").as_bytes());
    h.update(identity.path.as_os_str().as_encoded_bytes());
    for (flag, value) in destination {
        h.update(format!("\n{flag}={value}").as_bytes());
    }
    let key = hex::encode(h.finalize());
    state_dir.join("done").join(format!("{provider}-{}.json", &key[..24]))
}

/// The record of an earlier upload of this very file (same path, size, mtime, fingerprint)
/// to the same destination.
pub fn find_done(
    state_dir: &Path,
    provider: &str,
    endpoint: &str,
    identity: &FileIdentity,
    destination: &[(String, String)],
) -> Option<DoneRecord> {
    let text = std::fs::read(done_path(state_dir, provider, endpoint, identity, destination)).ok()?;
    let rec: DoneRecord = serde_json::from_slice(crate::engine::journal::last_line(&text)).ok()?;
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
/// the records are bounded by the files that still exist. Returns how many went. Blocking
/// (a stat and a read per record): called off the async workers.
pub fn prune(state_dir: &Path) -> usize {
    let dir = state_dir.join("done");
    let marker = state_dir.join(".done-pruned");
    let recent = std::fs::metadata(&marker)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < PRUNE_EVERY));
    if recent {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(&dir) else { return 0 };
    let mut gone = 0;
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let dead = match std::fs::read(&path) {
            Ok(text) => match serde_json::from_slice::<DoneRecord>(crate::engine::journal::last_line(&text)) {
                Ok(rec) => record_is_dead(&rec),
                Err(_) => true,
            },
            Err(_) => false,
        };
        if dead && std::fs::remove_file(&path).is_ok() {
            gone += 1;
        }
    }
    if gone > 0 {
        let _ = crate::engine::durable::sync_dir(&dir);
    }
    let _ = crate::engine::durable::write_atomic(&marker, chrono::Utc::now().to_rfc3339().as_bytes());
    if gone > 0 {
        tracing::info!(records = gone, "done records of files that are gone were pruned");
    }
    gone
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
    crate::engine::journal::retire(state_dir, outcome.provider, endpoint, &identity.path, &done, &record)
}
