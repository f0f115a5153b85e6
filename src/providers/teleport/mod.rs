//! Varjo Teleport: create a capture, ask a presigned URL per part, PUT the parts, complete.
//!
//! Limits: the SERVER picks the part size (`chunk_size`) and count (`num_parts`); part i
//! covers `[(i-1)·chunk_size, min(i·chunk_size, bytesize))`. URLs are asked per part, lazily
//! (a few ahead of need), and again when S3 refuses one. Create and complete are not
//! idempotent; asking a URL is.

pub mod admin;
pub mod pager;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::api::{Api, Retry};
use super::{Context, DryRun, Provider, UploadOutcome};
use crate::engine::multipart::{self, Created, Lookup, MultipartUpload};
use crate::engine::plan::PartPlan;
use crate::engine::progress::Event;
use crate::engine::source::FileSource;
use crate::engine::uploader::{CompletedPart, PartUrls};
use crate::error::{Error, Result};

/// Documented origin.
pub const DEFAULT_ENDPOINT: &str = "https://teleport.varjo.com";
/// Token environment variable.
pub const TOKEN_ENV: &str = "TELEPORT_TOKEN";
/// What Teleport tells about itself.
pub static DESCRIPTOR: super::Descriptor = super::Descriptor {
    name: "teleport",
    title: "Varjo Teleport",
    endpoint: DEFAULT_ENDPOINT,
    rc_endpoint: None,
    token_env: TOKEN_ENV,
    sign_in: Some(super::BuiltInSignIn {
        kind: super::SignInKind::ClientCredentials,
        endpoint: super::signin::TELEPORT_AUTH_ENDPOINT,
        rc_endpoint: None,
    }),
    config_section: "teleport",
};

/// `input_data_format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// A .zip of images.
    BulkImages,
    /// An .mp4 video.
    Video,
}

impl Format {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::BulkImages => "bulk-images",
            Format::Video => "video",
        }
    }

    /// Parses `bulk-images` or `video`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "bulk-images" => Ok(Format::BulkImages),
            "video" => Ok(Format::Video),
            other => Err(Error::usage(
                format!("unknown Teleport format '{other}'"),
                "use --format bulk-images (a .zip of images) or --format video (an .mp4)",
            )),
        }
    }

    /// From the file's extension: `.zip` → bulk-images, `.mp4` → video.
    pub fn infer(file: &FileSource) -> Result<Self> {
        let ext = file.path().extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("zip") => Ok(Format::BulkImages),
            Some("mp4") => Ok(Format::Video),
            _ => Err(Error::usage(
                format!(
                    "cannot tell the Teleport format of {}: Teleport takes a .zip of images (bulk-images) or an .mp4 video",
                    file.path().display()
                ),
                "rename the file to .zip or .mp4, or pass --format bulk-images|video",
            )),
        }
    }
}

/// Teleport upload settings.
#[derive(Clone, Debug, Default)]
pub struct TeleportOptions {
    /// Capture name (default: the file name).
    pub name: Option<String>,
    /// Input format (default: from the extension).
    pub format: Option<Format>,
    /// `--wait`: follow processing after the upload until READY, ERROR or the deadline.
    pub wait: Option<admin::WaitOptions>,
}

/// The Teleport provider.
pub struct Teleport {
    options: TeleportOptions,
}

#[derive(Serialize)]
struct NewCaptureInput<'a> {
    name: &'a str,
    bytesize: u64,
    input_data_format: &'static str,
}

/// `NewCaptureOutput`.
#[derive(Deserialize, Debug)]
pub struct NewCaptureOutput {
    /// External id.
    pub eid: String,
    /// Part count the server asks for.
    pub num_parts: u64,
    /// Part size the server asks for.
    pub chunk_size: u64,
}

#[derive(Serialize)]
struct UploadUrlInput<'a> {
    eid: &'a str,
    bytesize: u64,
}

#[derive(Deserialize)]
struct UploadUrlOutput {
    upload_url: String,
}

#[derive(Deserialize)]
struct UploadUrlResponse {
    chunk_size: u64,
}

#[derive(Serialize)]
struct UploadedPart<'a> {
    number: u32,
    etag: &'a str,
}

#[derive(Serialize)]
struct CaptureUploadedInput<'a> {
    eid: &'a str,
    parts: Vec<UploadedPart<'a>>,
}

impl Teleport {
    /// A provider with these settings.
    pub fn new(options: TeleportOptions) -> Self {
        Teleport { options }
    }

    fn format_and_name(&self, file: &FileSource) -> Result<(Format, String)> {
        let format = match self.options.format {
            Some(f) => f,
            None => Format::infer(file)?,
        };
        if file.size() == 0 {
            return Err(Error::usage(
                format!("{} is empty", file.path().display()),
                "Teleport needs a non-empty .zip or .mp4 (S3 multipart uploads hold at least one byte)",
            ));
        }
        let name = self.options.name.clone().unwrap_or_else(|| file.file_name());
        if name.trim().is_empty() {
            return Err(Error::usage("the capture name is empty", "pass --name"));
        }
        Ok((format, name))
    }
}

/// Asks `create-upload-url` for each part. Stateless: a stale URL is simply asked again.
struct TeleportUrls {
    api: Api,
    eid: String,
    bytesize: u64,
}

#[async_trait]
impl PartUrls for TeleportUrls {
    async fn url(&self, part: u32, _stale: bool) -> Result<String> {
        let out: UploadUrlOutput = self
            .api
            .call(
                &format!("create upload URL for part {part}"),
                Method::POST,
                &format!("/api/v1/captures/{}/create-upload-url/{part}", self.eid),
                &[],
                Some(&UploadUrlInput { eid: &self.eid, bytesize: self.bytesize }),
                Retry::Idempotent,
            )
            .json()
            .await?;
        crate::engine::http::checked_url(&out.upload_url, "upload_url")?;
        Ok(out.upload_url)
    }
}

#[async_trait]
impl Provider for Teleport {
    fn descriptor(&self) -> &'static super::Descriptor {
        &DESCRIPTOR
    }

    fn dry_run(&self, file: &FileSource) -> Result<DryRun> {
        let (format, name) = self.format_and_name(file)?;
        let mut fields = serde_json::Map::new();
        fields.insert("format".into(), format.as_str().into());
        fields.insert("name".into(), name.into());
        Ok(DryRun {
            provider: "teleport",
            file: file.path().display().to_string(),
            bytes: file.size(),
            part_size: None,
            parts: None,
            requests: vec![
                "POST /api/v1/captures (the server answers num_parts and chunk_size)".into(),
                "POST /api/v1/captures/{eid}/create-upload-url/{n} for each part".into(),
                "PUT each part to its presigned URL".into(),
                "POST /api/v1/captures/{eid}/uploaded".into(),
            ]
            .into_iter()
            .chain(self.options.wait.map(|_| {
                "GET /api/v1/captures?limit=25&offset=N (paged until the eid is found), until READY or ERROR".into()
            }))
            .collect(),
            fields,
        })
    }

    async fn upload(&self, ctx: &Context, file: FileSource) -> Result<UploadOutcome> {
        let started = Instant::now();
        let (format, name) = self.format_and_name(&file)?;
        let api = &ctx.api;
        let journal = ctx.journal(&file)?;
        if let Some(j) = &journal {
            j.set_options(serde_json::json!({ "name": name, "format": format.as_str() }))?;
        }
        let upload = TeleportUpload { api: api.clone(), name, format, bytesize: file.size() };
        let session = ctx.session(journal.as_ref());
        let done = multipart::run(&session, &file, &upload).await?;
        let eid = done.created.upload_id.clone();
        let capture = match self.options.wait {
            Some(wait) => {
                ctx.progress.event(Event::Phase { message: "uploaded; waiting for processing".into() });
                match admin::wait_processed(api, &eid, wait, &*ctx.progress, &ctx.cancel).await {
                    Ok(c) => c.to_json(),
                    Err(e @ Error::ProcessingFailed { .. }) => {
                        // Processing ended for good: a rerun uploads the file again.
                        if let Some(j) = &journal {
                            j.finish();
                        }
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            None => {
                // An error state in the completion's answer is a failed upload, whatever the
                // status code said.
                let state = done.completion.get("state").and_then(|s| s.as_str()).unwrap_or_default().to_string();
                if matches!(state.as_str(), "ERROR" | "FAILED") {
                    let reason = serde_json::from_value::<admin::Capture>(done.completion.clone())
                        .map(|c| c.failure_reason())
                        .unwrap_or(state);
                    if let Some(j) = &journal {
                        j.finish();
                    }
                    return Err(Error::ProcessingFailed { provider: "teleport", id: eid, reason });
                }
                done.completion
            }
        };
        ctx.progress.event(Event::Finished);
        Ok(outcome(&file, &capture, &eid, done.created.plan.num_parts, started))
    }
}

/// One capture's upload, described for [`multipart::run`].
struct TeleportUpload {
    api: Api,
    name: String,
    format: Format,
    bytesize: u64,
}

impl TeleportUpload {
    /// A capture's plan, from the `chunk_size` a URL answer carries.
    async fn plan_of(&self, eid: &str) -> Result<PartPlan> {
        let out: UploadUrlResponse = self
            .api
            .call(
                "create upload URL for part 1",
                Method::POST,
                &format!("/api/v1/captures/{eid}/create-upload-url/1"),
                &[],
                Some(&UploadUrlInput { eid, bytesize: self.bytesize }),
                Retry::Idempotent,
            )
            .json()
            .await?;
        let num_parts = self.bytesize.div_ceil(out.chunk_size.max(1));
        PartPlan::from_server("teleport", self.bytesize, out.chunk_size, num_parts)
    }
}

#[async_trait]
impl MultipartUpload for TeleportUpload {
    fn provider(&self) -> &'static str {
        "teleport"
    }

    fn noun(&self) -> &'static str {
        "capture"
    }

    fn client_plan(&self) -> Option<PartPlan> {
        None
    }

    async fn create(&self) -> Result<Created> {
        let body =
            NewCaptureInput { name: &self.name, bytesize: self.bytesize, input_data_format: self.format.as_str() };
        let created: NewCaptureOutput = self
            .api
            .call("create capture", Method::POST, "/api/v1/captures", &[], Some(&body), Retry::Once)
            .json()
            .await?;
        let plan = PartPlan::from_server("teleport", self.bytesize, created.chunk_size, created.num_parts)?;
        Ok(Created { upload_id: created.eid, plan, extra: serde_json::Value::Null })
    }

    /// The newest capture of this name, still CREATED, created at or after `since`; its plan
    /// comes from asking a URL for part 1.
    async fn find_created(&self, since: chrono::DateTime<chrono::Utc>) -> Result<Lookup<Created>> {
        let not_before = since - chrono::Duration::minutes(2);
        let found = pager::find_all(&self.api, not_before, |c| {
            c.str("name") == Some(self.name.as_str()) && c.state == "CREATED"
        })
        .await?;
        let Some(found) = found.into_iter().next() else { return Ok(Lookup::NotFound) };
        let eid = found.eid;
        let plan = self.plan_of(&eid).await?;
        tracing::info!(%eid, "adopted the capture a lost create request made");
        Ok(Lookup::Found(Created { upload_id: eid, plan, extra: serde_json::Value::Null }))
    }

    fn part_urls(&self, created: &Created, _done: &[CompletedPart]) -> Arc<dyn PartUrls> {
        Arc::new(TeleportUrls { api: self.api.clone(), eid: created.upload_id.clone(), bytesize: self.bytesize })
    }

    async fn complete(&self, created: &Created, parts: &[CompletedPart]) -> Result<serde_json::Value> {
        let eid = &created.upload_id;
        let body = CaptureUploadedInput {
            eid,
            parts: parts.iter().map(|p| UploadedPart { number: p.number, etag: &p.etag }).collect(),
        };
        let path = format!("/api/v1/captures/{eid}/uploaded");
        self.api.call("complete upload", Method::POST, &path, &[], Some(&body), Retry::Once).json().await
    }

    /// The capture left CREATED: the completion arrived.
    async fn find_completed(&self, created: &Created) -> Result<Lookup<serde_json::Value>> {
        match pager::find(&self.api, &created.upload_id, None).await? {
            Some(found) if found.state != "CREATED" => {
                Ok(Lookup::Found(serde_json::to_value(&found).unwrap_or_default()))
            }
            _ => Ok(Lookup::NotFound),
        }
    }
}

/// Teleport timestamps come without a timezone (`2025-10-06T18:55:42.733421`): they are UTC.
pub fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    admin::parse_time(s)
}

fn outcome(file: &FileSource, capture: &serde_json::Value, eid: &str, parts: u32, started: Instant) -> UploadOutcome {
    let mut fields = serde_json::Map::new();
    fields.insert("eid".into(), eid.into());
    for key in ["name", "sid", "state", "created", "uploaded", "viewer_url", "share_url"] {
        if let Some(v) = capture.get(key) {
            fields.insert(key.into(), v.clone());
        }
    }
    UploadOutcome {
        provider: "teleport",
        file: file.path().display().to_string(),
        bytes: file.size(),
        id: eid.to_string(),
        status: capture.get("state").and_then(|s| s.as_str()).unwrap_or("UPLOADED").to_string(),
        parts,
        elapsed_s: started.elapsed().as_secs_f64(),
        fields,
    }
}
