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
use crate::engine::http::id_path;
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
    /// The eids this provider's uploads created or adopted, until they complete: a look-up after a lost
    /// create never adopts one of them (two files of the same name in one run, two `watch`
    /// sub-directories).
    held: Held,
}

/// Eids held by the uploads of one provider (one run, one `watch`).
type Held = Arc<std::sync::Mutex<std::collections::HashSet<String>>>;

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
    /// A provider with these settings, checked (no request): a capture name, when given, is
    /// not blank.
    pub fn new(options: TeleportOptions) -> Result<Self> {
        if options.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(Error::usage(
                "the capture name is empty",
                "pass --name with a name, or leave it out to use the file's name",
            ));
        }
        Ok(Teleport { options, held: Held::default() })
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
        let what = format!("create upload URL for part {part}");
        let path = id_path("teleport", &what, "/api/v1/captures/{}/create-upload-url/", &[("eid", &self.eid)])?;
        let out: UploadUrlOutput = self
            .api
            .call(
                &what,
                Method::POST,
                &format!("{path}{part}"),
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
        let upload = TeleportUpload {
            api: api.clone(),
            name,
            format,
            bytesize: file.size(),
            held: self.held.clone(),
            journals: ctx.state_dir.clone().map(|dir| OtherJournals {
                dir,
                endpoint: api.base.as_str().trim_end_matches('/').to_string(),
                own: journal.as_ref().map(|j| j.path().to_path_buf()),
            }),
        };
        let session = ctx.session(journal.as_ref());
        let done = multipart::run(&session, &file, &upload).await?;
        let eid = done.created.upload_id.clone();
        // Completed: its `uploaded` is set, so no look-up after a lost create can take it any
        // more. Letting it go keeps the set to the uploads in flight (a `watch` of a million
        // files held a million eids).
        upload.release(&eid);
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
        let mut out = outcome(&file, &capture, &eid, done.created.plan.num_parts, started);
        out.crc64nvme = Some(crate::engine::checksum::to_base64(done.crc64nvme));
        Ok(out)
    }
}

/// One capture's upload, described for [`multipart::run`].
struct TeleportUpload {
    api: Api,
    name: String,
    format: Format,
    bytesize: u64,
    held: Held,
    /// The state directory's other journals (other files, other processes): the eids they hold.
    journals: Option<OtherJournals>,
}

/// Where the other uploads of this endpoint keep their journals.
struct OtherJournals {
    dir: std::path::PathBuf,
    endpoint: String,
    /// This file's own journal (its eid is not "another's").
    own: Option<std::path::PathBuf>,
}

impl OtherJournals {
    /// The eids of the other Teleport journals of this endpoint.
    async fn eids(&self) -> Result<std::collections::HashSet<String>> {
        let (dir, endpoint, own) = (self.dir.clone(), self.endpoint.clone(), self.own.clone());
        crate::engine::durable::off_thread(move || {
            Ok(crate::engine::journal::list(&dir)
                .into_iter()
                .filter(|(path, _)| Some(path) != own.as_ref())
                .filter_map(|(_, j)| j.ok())
                .filter(|j| j.provider == "teleport" && j.endpoint == endpoint && !j.upload_id.is_empty())
                .map(|j| j.upload_id)
                .collect())
        })
        .await
    }
}

/// How far a client's clock and the server's may differ, for times compared across them.
const CLOCK_SLACK: chrono::TimeDelta = chrono::TimeDelta::minutes(2);

/// A capture's `extra` in the journal: the earliest time it can have been created (its
/// look-ups stop below it).
fn extra_created_after(t: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    serde_json::json!({ "created_after": t.to_rfc3339() })
}

fn created_after(created: &Created) -> Option<chrono::DateTime<chrono::Utc>> {
    created.extra.get("created_after").and_then(|v| v.as_str()).and_then(parse_time)
}

impl TeleportUpload {
    /// Marks `eid` as held by this run; false when it already was.
    fn hold(&self, eid: &str) -> bool {
        self.held.lock().expect("held lock").insert(eid.to_string())
    }

    /// Lets `eid` go: its upload completed, or it was never taken.
    fn release(&self, eid: &str) {
        self.held.lock().expect("held lock").remove(eid);
    }

    /// A capture's plan, from the `chunk_size` a URL answer carries.
    async fn plan_of(&self, eid: &str) -> Result<PartPlan> {
        let what = "create upload URL for part 1";
        let path = id_path("teleport", what, "/api/v1/captures/{}/create-upload-url/1", &[("eid", eid)])?;
        let out: UploadUrlResponse = self
            .api
            .call(
                what,
                Method::POST,
                &path,
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
        let sent_at = chrono::Utc::now();
        let created: NewCaptureOutput = self
            .api
            .call("create capture", Method::POST, "/api/v1/captures", &[], Some(&body), Retry::Once)
            .json()
            .await?;
        crate::engine::http::check_path_id("teleport", "create capture", "eid", &created.eid)?;
        self.hold(&created.eid);
        let plan = PartPlan::from_server("teleport", self.bytesize, created.chunk_size, created.num_parts)?;
        Ok(Created { upload_id: created.eid, plan, extra: extra_created_after(sent_at - CLOCK_SLACK) })
    }

    /// The capture a lost create made: named like this upload, `uploaded` null (the upload is
    /// not complete: the state alone does not tell, PROVIDERS.md), not failed, created at or
    /// after `since`, and held by no other upload (of this run, or of another journal of this
    /// state directory). Exactly one such capture is adopted (its plan from asking a URL for
    /// part 1); none means the create did nothing; more than one cannot be told apart, and the
    /// look-up fails (the create is then not sent again).
    async fn find_created(&self, since: chrono::DateTime<chrono::Utc>) -> Result<Lookup<Created>> {
        let not_before = since - CLOCK_SLACK;
        let elsewhere = match &self.journals {
            Some(j) => j.eids().await?,
            None => Default::default(),
        };
        let held = self.held.lock().expect("held lock").clone();
        let found = pager::find_all(&self.api, not_before, |c| {
            c.str("name") == Some(self.name.as_str())
                && c.uploaded() == admin::Uploaded::Null
                && c.phase() != admin::Phase::Failed
                && !held.contains(&c.eid)
                && !elsewhere.contains(&c.eid)
        })
        .await?;
        let found = match found.as_slice() {
            [] => return Ok(Lookup::NotFound),
            [one] => one,
            several => {
                return Err(Error::Protocol {
                    provider: "teleport",
                    what: "look up the capture a lost create made".into(),
                    message: format!(
                        "{} captures named {:?} were created since then and none is held by an upload ({}): cannot tell which one the lost request made",
                        several.len(),
                        self.name,
                        several.iter().map(|c| c.eid.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        };
        let eid = found.eid.clone();
        crate::engine::http::check_path_id("teleport", "list captures", "eid", &eid)?;
        if !self.hold(&eid) {
            return Err(Error::Protocol {
                provider: "teleport",
                what: "look up the capture a lost create made".into(),
                message: format!("capture {eid} was just taken by another upload of this run"),
            });
        }
        let plan = self.plan_of(&eid).await;
        let plan = match plan {
            Ok(p) => p,
            Err(e) => {
                self.release(&eid);
                return Err(e);
            }
        };
        let after = found.str("created").and_then(parse_time).unwrap_or(not_before) - CLOCK_SLACK;
        tracing::info!(%eid, "adopted the capture a lost create request made");
        Ok(Lookup::Found(Created { upload_id: eid, plan, extra: extra_created_after(after) }))
    }

    fn part_urls(&self, created: &Created, _done: &[CompletedPart]) -> Arc<dyn PartUrls> {
        self.hold(&created.upload_id);
        Arc::new(TeleportUrls { api: self.api.clone(), eid: created.upload_id.clone(), bytesize: self.bytesize })
    }

    async fn complete(&self, created: &Created, parts: &[CompletedPart]) -> Result<serde_json::Value> {
        let eid = &created.upload_id;
        let body = CaptureUploadedInput {
            eid,
            parts: parts.iter().map(|p| UploadedPart { number: p.number, etag: &p.etag }).collect(),
        };
        let path = id_path("teleport", "complete upload", "/api/v1/captures/{}/uploaded", &[("eid", eid)])?;
        // S3's refusal passed on in the validation error's text (`... (InvalidPart)`): its code.
        let answer: serde_json::Value = self
            .api
            .call("complete upload", Method::POST, &path, &[], Some(&body), Retry::Once)
            .json()
            .await
            .map_err(super::api::lift_s3_code)?;
        // A 200 is a success only with the capture in it (CaptureOutput): anything else
        // (`null`, `{"detail": ...}`, `{}`) leaves open whether the completion took; the
        // look-up decides by `uploaded`.
        let is_capture = answer.get("eid").and_then(|v| v.as_str()) == Some(eid.as_str())
            && answer.get("state").is_some_and(|v| v.is_string());
        if !is_capture {
            let shown: String = answer.to_string().chars().take(120).collect();
            return Err(Error::Ambiguous {
                provider: "teleport",
                what: "complete upload".into(),
                message: format!("answered 200 with a body that is not the capture ({shown})"),
            });
        }
        Ok(answer)
    }

    /// A capture this run made and will never use is deleted (`DELETE /api/v1/captures/{eid}`,
    /// as `upload teleport delete` does): it would stay CREATED for ever.
    async fn abandon(&self, created: &Created) -> Result<()> {
        admin::delete(&self.api, &created.upload_id).await
    }

    /// The completion arrived when the capture's `uploaded` is set (a time); `null` means it
    /// did not. The state is no proof: nothing documents that it stays CREATED until then.
    async fn find_completed(&self, created: &Created) -> Result<Lookup<serde_json::Value>> {
        let eid = &created.upload_id;
        let Some(found) = pager::find(&self.api, eid, created_after(created)).await? else {
            return Ok(Lookup::NotFound);
        };
        match found.uploaded() {
            admin::Uploaded::At(_) => Ok(Lookup::Found(serde_json::to_value(&found).unwrap_or_default())),
            admin::Uploaded::Null => Ok(Lookup::NotFound),
            admin::Uploaded::Absent => Err(Error::Protocol {
                provider: "teleport",
                what: format!("looking up capture {eid}"),
                message: "the capture list does not show `uploaded`: cannot tell whether the completion arrived".into(),
            }),
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
            // Times with their zone, as `teleport list` gives them: Teleport's come without one
            // (UTC) unless asked `time_zone`.
            let v = match (key, v.as_str()) {
                ("created" | "uploaded", Some(t)) => serde_json::Value::String(admin::rfc3339(t)),
                _ => v.clone(),
            };
            fields.insert(key.into(), v);
        }
    }
    let state = capture.get("state").and_then(|s| s.as_str()).unwrap_or("UPLOADED").to_string();
    UploadOutcome {
        provider: "teleport",
        file: file.path().display().to_string(),
        bytes: file.size(),
        id: eid.to_string(),
        status: super::status_word(&state),
        vendor_status: state,
        parts,
        elapsed_s: started.elapsed().as_secs_f64(),
        crc64nvme: None,
        fields,
    }
}
