//! One module per vendor, each implementing [`Provider`].
//!
//! Contract shared by all providers:
//! - part numbers are 1-based and parts may finish in any order;
//! - create/start/reserve and complete are not idempotent: they are never repeated blindly
//!   after an ambiguous failure; asking presigned URLs, GETs, renames and deletes are;
//! - limits differ: Teleport's SERVER picks the part size (`chunk_size`); TruVideo's CLIENT
//!   picks it (≥ 5 MiB but the last, ≤ 600 MiB, ≤ 120 parts); Uplift is one S3 POST form
//!   upload (≤ 5 GB); Apertur takes one image per multipart request.

pub mod apertur;
pub mod apertur_cmd;
pub mod api;
pub mod signin;
pub mod teleport;
pub mod teleport_admin;
pub mod truvideo;
pub mod uplift;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::engine::progress::Progress;
use crate::engine::source::FileSource;
use crate::engine::uploader::UploaderOptions;
use crate::error::{Error, Result};
pub use api::{Api, TokenOrigin, TokenSource};

/// Everything a provider needs from the run.
#[derive(Clone)]
pub struct Context {
    /// The provider's API client (endpoint + token).
    pub api: Api,
    /// Part uploader settings.
    pub uploader: UploaderOptions,
    /// Progress sink.
    pub progress: Arc<dyn Progress>,
    /// Cancelled on Ctrl-C.
    pub cancel: CancellationToken,
    /// Where resume journals and caches live.
    pub state_dir: Option<PathBuf>,
    /// Resume an interrupted upload of the same file (default true).
    pub resume: bool,
}

impl Context {
    /// The resume journal slot for `file`, or `None` when there is no state directory.
    pub fn journal(&self, file: &FileSource) -> Result<Option<crate::engine::journal::Journal>> {
        let Some(dir) = &self.state_dir else { return Ok(None) };
        let endpoint = self.api.base.as_str().trim_end_matches('/');
        crate::engine::journal::Journal::open(dir, self.api.provider, endpoint, file, self.resume).map(Some)
    }
}

/// What a dry run prints: the plan, and the requests it would make.
#[derive(Clone, Debug, Serialize)]
pub struct DryRun {
    /// Provider name.
    pub provider: &'static str,
    /// The file.
    pub file: String,
    /// Its size.
    pub bytes: u64,
    /// Part size, when the client knows it in advance (`None` when the server decides).
    pub part_size: Option<u64>,
    /// Number of parts, when known in advance.
    pub parts: Option<u32>,
    /// Requests in order, e.g. `POST /api/v1/captures`.
    pub requests: Vec<String>,
    /// Provider-specific facts (format, content type, ...).
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// The result of one file's upload, as printed (`--json`: one line).
#[derive(Clone, Debug, Serialize)]
pub struct UploadOutcome {
    /// Provider name.
    pub provider: &'static str,
    /// The file as given.
    pub file: String,
    /// Bytes uploaded.
    pub bytes: u64,
    /// The provider's id of the upload (Teleport eid, TruVideo uploadId, ...).
    pub id: String,
    /// Final status as the provider names it.
    pub status: String,
    /// Number of parts.
    pub parts: u32,
    /// Wall time.
    pub elapsed_s: f64,
    /// Provider fields (`eid`, `uploadId`, `mediaId`, `session_id`, ...).
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// One vendor's upload flow.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Provider name as on the command line.
    fn name(&self) -> &'static str;
    /// Validates everything that can be checked locally and describes what an upload would
    /// do. Makes no request.
    fn dry_run(&self, file: &FileSource) -> Result<DryRun>;
    /// Uploads one file.
    async fn upload(&self, ctx: &Context, file: FileSource) -> Result<UploadOutcome>;

    /// How many files of a run may upload at once. Default 1: parts are the unit of
    /// concurrency; Apertur, whose images go in one request each, uploads several images at once.
    fn concurrent_files(&self) -> usize {
        1
    }

    /// Called once per run, before any upload, with every file of the run. A provider that puts
    /// the files of a run together (Apertur: one session) checks them as a whole here and
    /// answers, per file, why it refuses it (`Some(error)`: reported, skipped, no request made
    /// for it). A file it cannot read is left to [`Provider::upload`] to report. Default:
    /// accepts every file.
    async fn prepare(&self, _ctx: &Context, files: &[PathBuf]) -> Result<Vec<Option<Error>>> {
        Ok(files.iter().map(|_| None).collect())
    }

    /// Called once after every upload of the run ended (Apertur `--wait`: follows deliveries).
    async fn finish(&self, _ctx: &Context) -> Result<()> {
        Ok(())
    }
}
