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
pub mod api;
pub mod signin;
pub mod teleport;
pub mod truvideo;
pub mod uplift;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::engine::progress::Progress;
use crate::engine::source::FileSource;
use crate::engine::uploader::UploaderOptions;
use crate::error::{Error, Result};
pub use api::{Api, TokenOrigin, TokenSource};

/// Every provider of this crate, in the order the command line lists them. Adding a vendor:
/// its module (a [`Provider`] and its [`Descriptor`]) and one line here.
pub static PROVIDERS: [&Descriptor; 4] =
    [&teleport::DESCRIPTOR, &truvideo::DESCRIPTOR, &uplift::DESCRIPTOR, &apertur::DESCRIPTOR];

/// The descriptor of one of this crate's providers, by [`Descriptor::name`] (any case).
pub fn descriptor(name: &str) -> Option<&'static Descriptor> {
    PROVIDERS.iter().copied().find(|d| d.name.eq_ignore_ascii_case(name))
}

/// How a provider's built-in sign-in obtains a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignInKind {
    /// OAuth2 client credentials: a client id and its secret (Teleport).
    ClientCredentials,
    /// A login signed with a secret key: api key, secret key and external id (TruVideo).
    SignedLogin,
}

/// A provider's built-in sign-in: how it obtains a token, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuiltInSignIn {
    /// How.
    pub kind: SignInKind,
    /// The documented sign-in origin.
    pub endpoint: &'static str,
    /// The sign-in origin of the release-candidate environment, when there is one.
    pub rc_endpoint: Option<&'static str>,
}

/// What a provider tells about itself: its name, documented origins, token variable, sign-in
/// and configuration section. The command line, the configuration file and [`crate::Uploader`]
/// read these; none of them matches on the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// The name on the command line, in results and logs (`teleport`).
    pub name: &'static str,
    /// The vendor's name for people (`Varjo Teleport`).
    pub title: &'static str,
    /// The documented API origin.
    pub endpoint: &'static str,
    /// The documented release-candidate origin (TruVideo `--rc`), when there is one.
    pub rc_endpoint: Option<&'static str>,
    /// The provider's token environment variable (`UPLOAD_TOKEN` is read after it).
    pub token_env: &'static str,
    /// The built-in sign-in; without one, a token or a command that prints one.
    pub sign_in: Option<BuiltInSignIn>,
    /// The provider's section of the configuration file (`[teleport]`).
    pub config_section: &'static str,
}

impl Descriptor {
    /// The documented API origin; with `rc`, the release-candidate one when there is one.
    pub fn endpoint(&self, rc: bool) -> &'static str {
        self.rc_endpoint.filter(|_| rc).unwrap_or(self.endpoint)
    }

    /// The documented sign-in origin; with `rc`, the release-candidate one when there is one.
    pub fn auth_endpoint(&self, rc: bool) -> Option<&'static str> {
        self.sign_in.map(|s| s.rc_endpoint.filter(|_| rc).unwrap_or(s.endpoint))
    }

    /// The token in the environment: the provider's variable, else `UPLOAD_TOKEN` (blank
    /// values are ignored).
    pub fn env_token(&self) -> Option<crate::redact::Secret> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        env(self.token_env).or_else(|| env("UPLOAD_TOKEN")).map(crate::redact::Secret::new)
    }
}

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
    /// What the resume journal keeps of the run's options (`upload pending --resume` replays
    /// them; never a secret); `Null` keeps nothing.
    pub journal_options: serde_json::Value,
}

impl Context {
    /// The engine's multipart session of this context, journaling into `journal`.
    pub fn session<'a>(
        &'a self,
        journal: Option<&'a crate::engine::journal::Journal>,
    ) -> crate::engine::multipart::Session<'a> {
        crate::engine::multipart::Session {
            http: &self.api.http,
            journal,
            uploader: &self.uploader,
            retry: &self.api.retry,
            progress: self.progress.clone(),
            cancel: &self.cancel,
        }
    }

    /// The resume journal slot for `file`, or `None` when there is no state directory.
    pub fn journal(&self, file: &FileSource) -> Result<Option<crate::engine::journal::Journal>> {
        let Some(dir) = &self.state_dir else { return Ok(None) };
        let endpoint = self.api.base.as_str().trim_end_matches('/');
        let journal = crate::engine::journal::Journal::open(dir, self.api.provider, endpoint, file, self.resume)?;
        if !self.journal_options.is_null() {
            journal.set_options(self.journal_options.clone())?;
        }
        Ok(Some(journal))
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
    /// The final status, in one casing across providers: the vendor's word in lower case
    /// (`uploaded`, `ready`, `completed`, ...), as the client's own statuses (`failed`,
    /// `skipped`, `not_started`, `stopped`). See [`status_word`].
    pub status: String,
    /// The final status exactly as the vendor sent it (`UPLOADED`, `READY`, `COMPLETED`,
    /// `completed`, ...).
    pub vendor_status: String,
    /// Number of parts.
    pub parts: u32,
    /// Wall time.
    pub elapsed_s: f64,
    /// CRC-64/NVME of the file's bytes as sent (for a directory zip: of the zip), as S3 shows
    /// it in `x-amz-checksum-crc64nvme`: base64 of the 8 bytes, big-endian. Anyone with access
    /// to the object can compare (see [`crate::engine::checksum`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crc64nvme: Option<String>,
    /// Provider fields (`eid`, `uploadId`, `mediaId`, `session_id`, ...).
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// `status` of a result from the vendor's word: one casing across providers (lower case), so
/// that a script compares one spelling whichever vendor answered; `vendor_status` keeps the
/// word as sent.
pub fn status_word(vendor: &str) -> String {
    vendor.to_ascii_lowercase()
}

/// One vendor's upload flow.
#[async_trait]
pub trait Provider: Send + Sync {
    /// What the provider tells about itself (name, documented origin, token variable, ...).
    fn descriptor(&self) -> &'static Descriptor;
    /// Provider name as on the command line.
    fn name(&self) -> &'static str {
        self.descriptor().name
    }
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
    /// answers with the files it refuses (their index in `files`), each with why (reported,
    /// skipped, no request made for it). A file it cannot read is left to [`Provider::upload`]
    /// to report. Default: accepts every file.
    async fn prepare(&self, _ctx: &Context, _files: &[&Path]) -> Result<Vec<(usize, Error)>> {
        Ok(vec![])
    }

    /// Called once after every upload of the run ended (Apertur `--wait`: follows deliveries).
    async fn finish(&self, _ctx: &Context) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_unique_and_found() {
        for d in PROVIDERS {
            assert_eq!(descriptor(d.name), Some(d));
            assert_eq!(descriptor(&d.name.to_ascii_uppercase()), Some(d));
            assert_eq!(PROVIDERS.iter().filter(|o| o.name == d.name || o.token_env == d.token_env).count(), 1);
            assert!(d.endpoint.starts_with("https://") && d.token_env.ends_with("_TOKEN"), "{d:?}");
        }
        assert_eq!(descriptor("nope"), None);
        let t = descriptor("truvideo").unwrap();
        assert_eq!(t.endpoint(true), "https://upload-api-rc.truvideo.com");
        assert_eq!(t.endpoint(false), "https://upload-api.truvideo.com");
        assert_eq!(t.auth_endpoint(true), Some("https://sdk-mobile-api-rc.truvideo.com"));
        let tp = descriptor("teleport").unwrap();
        assert_eq!(tp.endpoint(true), tp.endpoint, "no RC origin: --rc changes nothing");
        assert_eq!(tp.auth_endpoint(true), Some("https://signin.teleport.varjo.com"));
    }
}
