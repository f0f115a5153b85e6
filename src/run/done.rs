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
    };
    let record = serde_json::to_vec(&rec).expect("serializes");
    // The upload's journal has served its purpose: it becomes the record, or goes.
    crate::engine::journal::retire(state_dir, outcome.provider, endpoint, &identity.path, &done, &record)
}
