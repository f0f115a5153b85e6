//! TruVideo Upload V3: start with a part count, PUT the parts to presigned URLs (asking more
//! when the initial set runs out), complete (202), then poll until COMPLETED or FAILED.
//!
//! Limits: the CLIENT picks the part size: every part ≥ 5 MiB but the last, ≤ 600 MiB, at
//! most 120 parts; the default follows the doc's recommendation by file size (16 MiB under
//! 100 MB, 32 MiB up to 1 GB, 64 MiB above, grown to fit in 120 parts). URLs live about 20
//! minutes. Start and complete are not idempotent: start is repeated only after a 401 (a
//! refused request did nothing), never after an ambiguous failure (there is no way to find the
//! session it may have created); after a 401 or an ambiguous failure of complete, the upload
//! is looked up first and completed again only when it is not already PENDING_COMPLETE or
//! COMPLETED. Asking URLs and reading the upload are idempotent.
//!
//! The resume journal keeps `uploadId` and `mediaId` (in `extra`) until processing ends, so
//! running the same command again after an interruption or a `--wait-timeout` carries on:
//! missing parts are sent, or the status is polled again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::api::{Api, Retry};
use super::{Context, DryRun, Provider, UploadOutcome};
use crate::engine::http::id_path;
use crate::engine::multipart::{self, Created, Lookup, MultipartUpload, Remote};
use crate::engine::plan::{PartLimits, PartPlan};
use crate::engine::poll::{Poller, Step};
use crate::engine::progress::Event;
use crate::engine::source::FileSource;
use crate::engine::uploader::{CompletedPart, PartUrls};
use crate::error::{Error, Result};

/// Production origin.
pub const DEFAULT_ENDPOINT: &str = "https://upload-api.truvideo.com";
/// Release-candidate origin (`--rc`).
pub const RC_ENDPOINT: &str = "https://upload-api-rc.truvideo.com";
/// Token environment variable.
pub const TOKEN_ENV: &str = "TRUVIDEO_TOKEN";
/// What TruVideo tells about itself.
pub static DESCRIPTOR: super::Descriptor = super::Descriptor {
    name: "truvideo",
    title: "TruVideo Upload V3",
    endpoint: DEFAULT_ENDPOINT,
    rc_endpoint: Some(RC_ENDPOINT),
    token_env: TOKEN_ENV,
    sign_in: Some(super::BuiltInSignIn {
        kind: super::SignInKind::SignedLogin,
        endpoint: super::signin::TRUVIDEO_AUTH_ENDPOINT,
        rc_endpoint: Some(super::signin::TRUVIDEO_RC_AUTH_ENDPOINT),
    }),
    config_section: "truvideo",
};

const MIB: u64 = 1024 * 1024;
/// The documented limits: ≥ 5 MB but the last part (S3's 5 MiB), ≤ 600 MB, ≤ 120 parts.
pub const LIMITS: PartLimits = PartLimits { min_part: 5 * MIB, max_part: 600 * MIB, max_parts: 120 };
/// Metadata keys TruVideo keeps for itself.
pub const RESERVED_METADATA: [&str; 2] = ["failureReason", "failureTimestamp"];
/// URLs asked at once from `GET /upload/{uploadId}/parts` when the initial set runs out.
const URL_BATCH: u32 = 10;
/// A cached URL this close to its `expiresAt` is asked again instead of used.
const URL_MARGIN: Duration = Duration::from_secs(60);
/// Longest pause between two status polls.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(30);

/// The documented `media.fileType` values and the MIME type a part is sent with.
const FILE_TYPES: [(&str, &str); 18] = [
    ("MP4", "video/mp4"),
    ("MOV", "video/quicktime"),
    ("AVI", "video/x-msvideo"),
    ("MKV", "video/x-matroska"),
    ("FLV", "video/x-flv"),
    ("WMV", "video/x-ms-wmv"),
    ("3GPP", "video/3gpp"),
    ("WEBM", "video/webm"),
    ("JPG", "image/jpeg"),
    ("JPEG", "image/jpeg"),
    ("PNG", "image/png"),
    ("SVG", "image/svg+xml"),
    ("MP3", "audio/mpeg"),
    ("WAV", "audio/wav"),
    ("AAC", "audio/aac"),
    ("FLAC", "audio/flac"),
    ("PDF", "application/pdf"),
    // `.3gp` is the usual spelling of a 3GPP file's extension.
    ("3GP", "video/3gpp"),
];

/// A documented file type: `(fileType as sent, MIME type)`.
pub fn file_type(name: &str) -> Option<(&'static str, &'static str)> {
    let upper = name.trim().trim_start_matches('.').to_ascii_uppercase();
    FILE_TYPES
        .iter()
        .find(|(t, _)| *t == upper)
        .map(|(t, mime)| if *t == "3GP" { ("3GPP", *mime) } else { (*t, *mime) })
}

fn file_types_list() -> String {
    FILE_TYPES.iter().filter(|(t, _)| *t != "3GP").map(|(t, _)| *t).collect::<Vec<_>>().join(", ")
}

/// The doc's recommended part size for a file of `size` bytes (10–20 MB under 100 MB,
/// 20–50 MB up to 1 GB, 50–600 MB above).
pub fn recommended_part_size(size: u64) -> u64 {
    if size < 100_000_000 {
        16 * MIB
    } else if size <= 1_000_000_000 {
        32 * MIB
    } else {
        64 * MIB
    }
}

/// TruVideo settings, as given on the command line (validated by [`Truvideo::new`]).
#[derive(Clone, Debug)]
pub struct TruvideoOptions {
    /// media.title.
    pub title: Option<String>,
    /// media.creator.
    pub creator: Option<String>,
    /// media.duration, milliseconds.
    pub duration_ms: Option<u64>,
    /// media.resolution.
    pub resolution: Option<String>,
    /// media.fileType override.
    pub file_type: Option<String>,
    /// `K=V` tags.
    pub tags: Vec<String>,
    /// insights.isLibrary.
    pub library: bool,
    /// insights.includeInReport = false.
    pub no_report: bool,
    /// `K=V` metadata entries.
    pub metadata: Vec<String>,
    /// metadata as a JSON object.
    pub metadata_json: Option<String>,
    /// `--part-size`.
    pub part_size: Option<u64>,
    /// Poll until processing ends (false with `--no-wait`).
    pub wait: bool,
    /// Deadline of the polling.
    pub wait_timeout: Duration,
    /// First interval between polls.
    pub poll_interval: Duration,
}

impl Default for TruvideoOptions {
    /// The command line's defaults: no media fields, the recommended part size, waiting for
    /// processing (polls from 2 s, for at most 1 h).
    fn default() -> Self {
        TruvideoOptions {
            title: None,
            creator: None,
            duration_ms: None,
            resolution: None,
            file_type: None,
            tags: vec![],
            library: false,
            no_report: false,
            metadata: vec![],
            metadata_json: None,
            part_size: None,
            wait: true,
            wait_timeout: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// The TruVideo provider.
pub struct Truvideo {
    options: TruvideoOptions,
    tags: Map<String, Value>,
    metadata: Map<String, Value>,
    resolution: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StartInput<'a> {
    amount_of_parts: u32,
    media: Media<'a>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    metadata: &'a Map<String, Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Media<'a> {
    file_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    creator: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resolution: Option<&'a str>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    tags: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    insights: Option<Insights>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Insights {
    is_library: bool,
    include_in_report: bool,
}

/// One presigned URL as the API hands it out. `partNumber` and `expiresAt` are read whether
/// they come as numbers or as strings (an RFC 3339 time, or seconds or milliseconds since the
/// epoch): the stripped doc does not show their types.
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
struct PartUrlEntry {
    #[serde(default, deserialize_with = "number_or_text")]
    part_number: Option<u32>,
    presigned_url: String,
    #[serde(default, deserialize_with = "time_or_number")]
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// `3` or `"3"` (or null).
fn number_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<u32>, D::Error> {
    use serde::de::Error as _;
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("partNumber {n} is not a part number"))),
        Some(Value::String(t)) => t
            .trim()
            .parse::<u32>()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("partNumber {t:?} is not a part number"))),
        Some(other) => Err(D::Error::custom(format!("partNumber {other} is not a part number"))),
    }
}

/// An RFC 3339 time, or seconds / milliseconds since the epoch, as a number or a string (or
/// null). An unreadable time is no time (the URL is used until S3 refuses it), not an error.
fn time_or_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<chrono::DateTime<chrono::Utc>>, D::Error> {
    let epoch = |n: f64| {
        // Past the year 5138 in seconds means milliseconds.
        let ms = if n.abs() >= 1e11 { n } else { n * 1000.0 };
        chrono::DateTime::from_timestamp_millis(ms as i64)
    };
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Number(n)) => n.as_f64().and_then(epoch),
        Some(Value::String(t)) => chrono::DateTime::parse_from_rfc3339(t.trim())
            .map(|t| t.with_timezone(&chrono::Utc))
            .ok()
            .or_else(|| t.trim().parse::<f64>().ok().and_then(epoch)),
        _ => None,
    })
}

/// Refuses a presigned URL whose query names another part than the one it is about to carry
/// (S3's UploadPart URLs carry `partNumber=`): a wrong guess of how URLs are numbered (the
/// additional-URLs call is a guess, PROVIDERS.md) fails here, before a byte goes to the wrong
/// part, instead of as `InvalidPart` at completion.
fn check_part_number(url: &str, part: u32) -> Result<()> {
    let parsed = crate::engine::http::checked_url(url, "presignedUrl")?;
    let numbers: Vec<String> =
        parsed.query_pairs().filter(|(k, _)| k == "partNumber").map(|(_, v)| v.into_owned()).collect();
    let problem = match numbers.as_slice() {
        [n] if n.trim().parse::<u32>() == Ok(part) => return Ok(()),
        [n] => format!("is for part {n} (partNumber={n})"),
        [] => "carries no partNumber in its query".to_string(),
        _ => format!("names several parts (partNumber={})", numbers.join(", partNumber=")),
    };
    Err(Error::Protocol {
        provider: "truvideo",
        what: format!("presigned URL for part {part}"),
        message: format!(
            "the URL handed out for part {part} {problem}: not sent (TruVideo's numbering of the URLs differs from this tool's reading of the docs; see PROVIDERS.md)"
        ),
    })
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct StartOutput {
    upload_id: String,
    media_id: Option<Value>,
    #[serde(default)]
    parts: Vec<PartUrlEntry>,
}

#[derive(Deserialize, Debug)]
struct PartsOutput {
    #[serde(default)]
    parts: Vec<PartUrlEntry>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CompletePart<'a> {
    part_number: u32,
    e_tag: &'a str,
}

#[derive(Serialize)]
struct CompleteInput<'a> {
    parts: Vec<CompletePart<'a>>,
}

/// Parses `K=V` items into a map; `json_values` parses V as JSON when it is valid JSON.
fn parse_pairs(items: &[String], flag: &str, json_values: bool) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for item in items {
        let Some((k, v)) = item.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
            return Err(Error::usage(
                format!("{flag} '{item}' is not of the form K=V"),
                format!("write {flag} key=value, e.g. {flag} brand=Jeep"),
            ));
        };
        let value = if json_values {
            serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()))
        } else {
            Value::String(v.to_string())
        };
        map.insert(k.trim().to_string(), value);
    }
    Ok(map)
}

/// The TruVideo `sanitizedTitle`: every character other than ASCII letters, digits, `.`, `-`
/// and `_` becomes `_`.
pub fn sanitize_title(title: &str) -> String {
    title.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect()
}

/// What [`Truvideo::prepare`] works out for one file.
struct Prepared {
    file_type: &'static str,
    mime: &'static str,
    plan: PartPlan,
}

impl Truvideo {
    /// Validates the settings that do not depend on the file: tags, metadata (no reserved
    /// key), creator length, resolution.
    pub fn new(options: TruvideoOptions) -> Result<Self> {
        let tags = parse_pairs(&options.tags, "--tag", false)?;
        let mut metadata = match &options.metadata_json {
            None => Map::new(),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    return Err(Error::usage(
                        "--metadata-json is not a JSON object",
                        "give an object, e.g. --metadata-json '{\"retentionDays\":365}'",
                    ));
                }
                Err(e) => {
                    return Err(Error::usage(
                        format!("--metadata-json is not valid JSON: {e}"),
                        "give an object, e.g. --metadata-json '{\"retentionDays\":365}'",
                    ));
                }
            },
        };
        metadata.extend(parse_pairs(&options.metadata, "--metadata", true)?);
        if let Some(key) = metadata.keys().find(|k| RESERVED_METADATA.contains(&k.as_str())) {
            return Err(Error::usage(
                format!("metadata key '{key}' is reserved by TruVideo"),
                "failureReason and failureTimestamp are kept for TruVideo's own lifecycle tracking: rename the key",
            ));
        }
        if let Some(c) = &options.creator {
            let n = c.chars().count();
            if n > 255 {
                return Err(Error::usage(
                    format!("--creator has {n} characters; TruVideo takes at most 255"),
                    "shorten --creator",
                ));
            }
        }
        let resolution = options.resolution.as_ref().map(|r| r.trim().to_ascii_uppercase());
        if let Some(r) = &resolution
            && !["LOW", "NORMAL", "HIGH"].contains(&r.as_str())
        {
            return Err(Error::usage(format!("unknown --resolution '{r}'"), "use LOW, NORMAL or HIGH"));
        }
        Ok(Truvideo { options, tags, metadata, resolution })
    }

    /// Validates what depends on the file: its type, its size, the part plan.
    fn prepare(&self, file: &FileSource) -> Result<Prepared> {
        let (file_type, mime) = match &self.options.file_type {
            Some(t) => file_type(t).ok_or_else(|| {
                Error::usage(
                    format!("unknown TruVideo file type '{t}'"),
                    format!("--file-type takes one of {}", file_types_list()),
                )
            })?,
            None => {
                let ext = file.path().extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
                file_type(&ext).ok_or_else(|| {
                    Error::usage(
                        format!(
                            "cannot tell the TruVideo file type of {}: the extension '{ext}' is not one TruVideo takes",
                            file.path().display()
                        ),
                        format!("TruVideo takes {}; pass --file-type to say which one the file is", file_types_list()),
                    )
                })?
            }
        };
        if file.size() == 0 {
            return Err(Error::usage(
                format!("{} is empty", file.path().display()),
                "TruVideo needs a non-empty file (S3 multipart uploads hold at least one byte)",
            ));
        }
        let plan = PartPlan::choose(file.size(), recommended_part_size(file.size()), self.options.part_size, LIMITS)?;
        Ok(Prepared { file_type, mime, plan })
    }

    fn start_body<'a>(&'a self, file_type: &'a str, parts: u32) -> StartInput<'a> {
        let insights = (self.options.library || self.options.no_report)
            .then_some(Insights { is_library: self.options.library, include_in_report: !self.options.no_report });
        StartInput {
            amount_of_parts: parts,
            media: Media {
                file_type,
                creator: self.options.creator.as_deref(),
                title: self.options.title.as_deref(),
                duration: self.options.duration_ms,
                resolution: self.resolution.as_deref(),
                tags: &self.tags,
                insights,
            },
            metadata: &self.metadata,
        }
    }
}

/// What to ask `GET /upload/{uploadId}/parts` for.
enum Ask {
    /// The next `n` part numbers not handed out yet, expected to be `first..first+n`.
    Next { first: u32, n: u32 },
    /// URLs for these parts again (expired, refused, or a resumed upload).
    Parts(Vec<u32>),
}

/// Asks more presigned URLs. The one place that knows the additional-URLs contract
/// (PROVIDERS.md: `?count=N` hands out the next N part numbers, `?partNumbers=3,7` re-issues
/// given ones; entries without `partNumber` map in order to the numbers asked): change it
/// here when the real contract is known.
///
/// A 404 from this guessed path does not mean the upload is gone: only `GET /upload/{id}`
/// decides that (`gone` is set when it refuses the upload).
async fn request_urls(
    api: &Api,
    upload_id: &str,
    ask: &Ask,
    gone: &std::sync::atomic::AtomicBool,
) -> Result<Vec<(u32, PartUrlEntry)>> {
    let (query, expected): (Vec<(&str, String)>, Vec<u32>) = match ask {
        Ask::Next { first, n } => (vec![("count", n.to_string())], (*first..first + n).collect()),
        Ask::Parts(numbers) => {
            (vec![("partNumbers", numbers.iter().map(u32::to_string).collect::<Vec<_>>().join(","))], numbers.clone())
        }
    };
    let what = "request more presigned URLs";
    let path = id_path("truvideo", what, "/upload/{}/parts", &[("uploadId", upload_id)])?;
    let asked = api.get(what, &path, &query).json().await;
    let out: PartsOutput = match asked {
        Err(Error::Rejected { status: 404, message, .. }) => {
            return Err(match get_upload(api, upload_id).await {
                Ok(details) => Error::Protocol {
                    provider: "truvideo",
                    what: "request more presigned URLs".into(),
                    message: format!(
                        "GET /upload/{upload_id}/parts answered 404 ({message}) while GET /upload/{upload_id} shows the upload ({}): the additional-URLs path is this tool's reading of the docs (PROVIDERS.md), so the upload is not taken for gone",
                        Some(status_of(&details)).filter(|s| !s.is_empty()).unwrap_or_else(|| "no status".into())
                    ),
                },
                Err(e @ Error::Rejected { .. }) => {
                    gone.store(true, std::sync::atomic::Ordering::SeqCst);
                    e
                }
                Err(e) => e,
            });
        }
        other => other?,
    };
    Ok(number_entries(out.parts, &expected))
}

/// Pairs each entry with its part number: its own `partNumber`, else the next expected one.
fn number_entries(entries: Vec<PartUrlEntry>, expected: &[u32]) -> Vec<(u32, PartUrlEntry)> {
    let mut unnamed = expected.iter().copied();
    entries.into_iter().filter_map(|e| Some((e.part_number.or_else(|| unnamed.next())?, e))).collect()
}

/// A URL handed out and not used yet.
struct CachedUrl {
    url: String,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

struct UrlState {
    cache: BTreeMap<u32, CachedUrl>,
    /// The next part number the server has not handed out; `None` when unknown (a resumed
    /// upload): then URLs are asked by part number.
    next_unissued: Option<u32>,
}

/// The initial URLs from start, then `GET /upload/{uploadId}/parts` for more.
struct TruvideoUrls {
    api: Api,
    upload_id: String,
    num_parts: u32,
    /// Parts to send in this run (to batch re-issues of a resumed upload).
    pending: BTreeSet<u32>,
    state: tokio::sync::Mutex<UrlState>,
    /// Set when `GET /upload/{id}` refused the upload: it is gone.
    gone: Arc<std::sync::atomic::AtomicBool>,
}

impl TruvideoUrls {
    fn new(
        api: Api,
        upload_id: String,
        plan: &PartPlan,
        done: &[CompletedPart],
        initial: Option<Vec<PartUrlEntry>>,
        gone: Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        let pending: BTreeSet<u32> = plan.numbers().filter(|n| !done.iter().any(|p| p.number == *n)).collect();
        let mut cache = BTreeMap::new();
        let next_unissued = initial.map(|entries| {
            let expected: Vec<u32> = plan.numbers().collect();
            let mut next = 1;
            for (n, e) in number_entries(entries, &expected) {
                if (1..=plan.num_parts).contains(&n) {
                    next = next.max(n + 1);
                    cache.insert(n, cached(e));
                }
            }
            next
        });
        TruvideoUrls {
            api,
            upload_id,
            num_parts: plan.num_parts,
            pending,
            state: tokio::sync::Mutex::new(UrlState { cache, next_unissued }),
            gone,
        }
    }
}

fn cached(e: PartUrlEntry) -> CachedUrl {
    CachedUrl { url: e.presigned_url, expires_at: e.expires_at }
}

#[async_trait]
impl PartUrls for TruvideoUrls {
    async fn url(&self, part: u32, stale: bool) -> Result<String> {
        let mut state = self.state.lock().await;
        if let Some(c) = state.cache.remove(&part) {
            let fresh = c.expires_at.is_none_or(|t| t > chrono::Utc::now() + URL_MARGIN);
            if !stale && fresh {
                check_part_number(&c.url, part)?;
                return Ok(c.url);
            }
        }
        let ask = match state.next_unissued {
            Some(next) if !stale && part >= next => {
                let n = (part - next + 1).max(URL_BATCH).min(self.num_parts + 1 - next);
                Ask::Next { first: next, n }
            }
            Some(_) => Ask::Parts(vec![part]),
            // A resumed upload: ask this part and the next few pending ones by number.
            None if stale => Ask::Parts(vec![part]),
            None => Ask::Parts(
                std::iter::once(part)
                    .chain(self.pending.range(part + 1..).copied().filter(|n| !state.cache.contains_key(n)))
                    .take(URL_BATCH as usize)
                    .collect(),
            ),
        };
        let got = request_urls(&self.api, &self.upload_id, &ask, &self.gone).await?;
        if let Ask::Next { first, n } = ask {
            let top = got.iter().map(|(n, _)| n + 1).max().unwrap_or(first);
            state.next_unissued = Some(top.max(first + n));
        }
        let mut mine = None;
        for (n, e) in got {
            if n == part {
                mine = Some(e.presigned_url);
            } else if (1..=self.num_parts).contains(&n) {
                state.cache.insert(n, cached(e));
            }
        }
        let url = mine.ok_or_else(|| Error::Protocol {
            provider: "truvideo",
            what: "request more presigned URLs".into(),
            message: format!("the answer has no URL for part {part}"),
        })?;
        check_part_number(&url, part)?;
        Ok(url)
    }
}

/// `GET /upload/{uploadId}`.
async fn get_upload(api: &Api, upload_id: &str) -> Result<Value> {
    let path = id_path("truvideo", "get upload status", "/upload/{}", &[("uploadId", upload_id)])?;
    api.get("get upload status", &path, &[]).json().await
}

fn status_of(v: &Value) -> String {
    v.get("status").and_then(Value::as_str).unwrap_or("").to_string()
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[async_trait]
impl Provider for Truvideo {
    fn descriptor(&self) -> &'static super::Descriptor {
        &DESCRIPTOR
    }

    fn dry_run(&self, file: &FileSource) -> Result<DryRun> {
        let p = self.prepare(file)?;
        let mut fields = Map::new();
        fields.insert("fileType".into(), p.file_type.into());
        fields.insert("contentType".into(), p.mime.into());
        fields.insert("amountOfParts".into(), p.plan.num_parts.into());
        if let Some(t) = &self.options.title {
            fields.insert("title".into(), t.clone().into());
            fields.insert("sanitizedTitle".into(), sanitize_title(t).into());
        }
        if !self.tags.is_empty() {
            fields.insert("tags".into(), Value::Object(self.tags.clone()));
        }
        if !self.metadata.is_empty() {
            fields.insert("metadata".into(), Value::Object(self.metadata.clone()));
        }
        let mut requests = vec![
            format!("POST /upload/start (amountOfParts {}, fileType {})", p.plan.num_parts, p.file_type),
            format!("PUT {} parts to their presigned URLs (Content-Type {})", p.plan.num_parts, p.mime),
            "GET /upload/{uploadId}/parts?count=N when the initial URLs run out".into(),
            "POST /upload/{uploadId}/complete".into(),
        ];
        if self.options.wait {
            requests.push(format!(
                "GET /upload/{{uploadId}} until COMPLETED or FAILED (at most {} s)",
                self.options.wait_timeout.as_secs()
            ));
        }
        Ok(DryRun {
            provider: "truvideo",
            file: file.path().display().to_string(),
            bytes: file.size(),
            part_size: Some(p.plan.part_size),
            parts: Some(p.plan.num_parts),
            requests,
            fields,
        })
    }

    async fn upload(&self, ctx: &Context, file: FileSource) -> Result<UploadOutcome> {
        let started = Instant::now();
        let prepared = self.prepare(&file)?;
        let api = &ctx.api;
        let journal = ctx.journal(&file)?;
        if let Some(j) = &journal {
            j.set_options(serde_json::json!({
                "title": self.options.title, "fileType": prepared.file_type, "metadata": self.metadata, "tags": self.tags,
            }))?;
        }
        let upload = TruvideoUpload {
            api: api.clone(),
            body: serde_json::to_value(self.start_body(prepared.file_type, prepared.plan.num_parts))
                .expect("the start body serializes"),
            plan: prepared.plan,
            mime: prepared.mime,
            initial: std::sync::Mutex::new(None),
            gone: Default::default(),
        };
        let session = ctx.session(journal.as_ref());
        let done = multipart::run(&session, &file, &upload).await?;
        let upload_id = done.created.upload_id.clone();
        let media_id = done.created.extra.get("mediaId").cloned().filter(|v| !v.is_null());
        let plan = done.created.plan;
        let crc = Some(crate::engine::checksum::to_base64(done.crc64nvme));

        if !self.options.wait {
            ctx.progress.event(Event::Finished);
            let details = done.completion;
            let status =
                Some(status_of(&details)).filter(|s| !s.is_empty()).unwrap_or_else(|| "PENDING_COMPLETE".into());
            return Ok(UploadOutcome {
                crc64nvme: crc,
                ..outcome(&file, &upload_id, media_id, &details, status, plan.num_parts, started)
            });
        }

        let details = self.poll(ctx, &upload_id).await;
        // The journal stays (completed) while processing may still end well, so that running
        // the same command again goes on polling; a FAILED upload is uploaded again by a rerun.
        if let (Some(j), Err(Error::ProcessingFailed { .. })) = (&journal, &details) {
            j.finish();
        }
        let details = details?;
        ctx.progress.event(Event::Finished);
        let status = status_of(&details);
        Ok(UploadOutcome {
            crc64nvme: crc,
            ..outcome(&file, &upload_id, media_id, &details, status, plan.num_parts, started)
        })
    }
}

/// One file's TruVideo upload, described for [`multipart::run`]. Start has no look-up: the
/// API offers no way to find the upload a start whose answer was lost created, so a start is
/// never sent again after an ambiguous failure (and an interrupted start may leave an
/// unused upload on the server).
struct TruvideoUpload {
    api: Api,
    body: Value,
    plan: PartPlan,
    mime: &'static str,
    /// The URLs start handed out, for the first parts.
    initial: std::sync::Mutex<Option<Vec<PartUrlEntry>>>,
    /// Set when `GET /upload/{id}` refused the upload while asking URLs: it is gone.
    gone: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl MultipartUpload for TruvideoUpload {
    fn provider(&self) -> &'static str {
        "truvideo"
    }

    fn client_plan(&self) -> Option<PartPlan> {
        Some(self.plan)
    }

    async fn create(&self) -> Result<Created> {
        let out: StartOutput = self
            .api
            .call("start upload", Method::POST, "/upload/start", &[], Some(&self.body), Retry::Once)
            .json()
            .await?;
        crate::engine::http::check_path_id("truvideo", "start upload", "uploadId", &out.upload_id)?;
        tracing::info!(upload_id = %out.upload_id, urls = out.parts.len(), parts = self.plan.num_parts, "upload started");
        if out.parts.is_empty() {
            tracing::info!(
                upload_id = %out.upload_id,
                "truvideo: start answered no presigned URLs; every part's URL is asked from GET /upload/{{uploadId}}/parts"
            );
        }
        *self.initial.lock().expect("initial URLs") = Some(out.parts);
        Ok(Created { upload_id: out.upload_id, plan: self.plan, extra: serde_json::json!({ "mediaId": out.media_id }) })
    }

    async fn find_created(&self, _since: chrono::DateTime<chrono::Utc>) -> Result<Lookup<Created>> {
        Ok(Lookup::Unsupported)
    }

    /// Gone only when `GET /upload/{id}` refused it while URLs were asked, or S3 says the
    /// multipart upload no longer exists: a 404 from another path (the guessed
    /// `/upload/{id}/parts`, or complete) is not proof.
    fn is_stale(&self, e: &Error) -> bool {
        self.gone.load(std::sync::atomic::Ordering::SeqCst) || e.code() == Some("NoSuchUpload")
    }

    /// `GET /upload/{uploadId}`: gone (refused), already completing, or open.
    async fn check(&self, created: &Created) -> Result<Remote> {
        match get_upload(&self.api, &created.upload_id).await {
            Ok(details) if matches!(status_of(&details).as_str(), "PENDING_COMPLETE" | "COMPLETED" | "FAILED") => {
                Ok(Remote::Completed(details))
            }
            Ok(_) => Ok(Remote::Open),
            Err(Error::Rejected { status, message, .. }) => Ok(Remote::Gone(format!("HTTP {status}: {message}"))),
            Err(e) => Err(e),
        }
    }

    fn part_urls(&self, created: &Created, done: &[CompletedPart]) -> Arc<dyn PartUrls> {
        let initial = self.initial.lock().expect("initial URLs").take();
        Arc::new(TruvideoUrls::new(
            self.api.clone(),
            created.upload_id.clone(),
            &created.plan,
            done,
            initial,
            self.gone.clone(),
        ))
    }

    fn uploader_options(
        &self,
        base: &crate::engine::uploader::UploaderOptions,
    ) -> crate::engine::uploader::UploaderOptions {
        let mut options = base.clone();
        options.content_type = Some(self.mime.to_string());
        options
    }

    /// `POST /upload/{uploadId}/complete` with every part; the answer's JSON when there is
    /// one. A 401 after which the token was renewed counts as ambiguous (the look-up decides);
    /// a 401 without a new token ends the run (exit 3).
    async fn complete(&self, created: &Created, parts: &[CompletedPart]) -> Result<Value> {
        let body = CompleteInput {
            parts: parts.iter().map(|p| CompletePart { part_number: p.number, e_tag: &p.etag }).collect(),
        };
        let path = id_path("truvideo", "complete upload", "/upload/{}/complete", &[("uploadId", &created.upload_id)])?;
        let generation = self.api.token.generation().await;
        match self.api.call("complete upload", Method::POST, &path, &[], Some(&body), Retry::Never).send().await {
            Ok(answer) => {
                Ok(serde_json::from_slice::<Value>(&answer.body).ok().filter(Value::is_object).unwrap_or(Value::Null))
            }
            Err(Error::Auth { message, .. }) if self.api.token.generation().await != generation => {
                Err(Error::Network {
                    provider: "truvideo",
                    what: "complete upload".into(),
                    message: format!("refused before the token was renewed ({message})"),
                })
            }
            // S3's refusal passed on in TruVideo's message (`... (InvalidPart)`): its code.
            Err(e) => Err(super::api::lift_s3_code(e)),
        }
    }

    /// Completed when the upload is PENDING_COMPLETE, COMPLETED or FAILED.
    async fn find_completed(&self, created: &Created) -> Result<Lookup<Value>> {
        let details = get_upload(&self.api, &created.upload_id).await?;
        let status = status_of(&details);
        if matches!(status.as_str(), "PENDING_COMPLETE" | "COMPLETED" | "FAILED") {
            tracing::info!(upload_id = %created.upload_id, %status, "complete upload: the upload is already {status}");
            Ok(Lookup::Found(details))
        } else {
            Ok(Lookup::NotFound)
        }
    }
}

impl Truvideo {
    /// Polls `GET /upload/{uploadId}` with backoff until COMPLETED (the details), FAILED
    /// ([`Error::ProcessingFailed`]) or the deadline ([`Error::Timeout`]).
    async fn poll(&self, ctx: &Context, upload_id: &str) -> Result<Value> {
        let poller = Poller::new(
            self.options.poll_interval.max(Duration::from_millis(50)),
            MAX_POLL_INTERVAL.max(self.options.poll_interval),
            Some(self.options.wait_timeout),
        );
        let last = std::sync::Mutex::new(String::new());
        let timeout = || Error::Timeout {
            what: format!(
                "truvideo: waiting for upload {upload_id} to finish processing (last status {})",
                last.lock().expect("status lock")
            ),
            seconds: self.options.wait_timeout.as_secs(),
        };
        let interrupted = || Error::Interrupted {
            hint: format!(
                "upload {upload_id} is complete and processing on the server; run the same command again to follow it"
            ),
        };
        poller
            .until(&ctx.cancel, timeout, interrupted, || async {
                let details = get_upload(&ctx.api, upload_id).await?;
                let status = status_of(&details);
                {
                    let mut last = last.lock().expect("status lock");
                    if status != *last {
                        ctx.progress.event(Event::Phase { message: format!("processing: {status}") });
                        *last = status.clone();
                    }
                }
                match status.as_str() {
                    "COMPLETED" => Ok(Step::Done(details)),
                    "FAILED" => {
                        let reason = details
                            .get("failureReason")
                            .and_then(Value::as_str)
                            .filter(|r| !r.is_empty())
                            .unwrap_or("no failureReason given")
                            .to_string();
                        Err(Error::ProcessingFailed { provider: "truvideo", id: upload_id.to_string(), reason })
                    }
                    _ => Ok(Step::Again),
                }
            })
            .await
    }
}

fn outcome(
    file: &FileSource,
    upload_id: &str,
    media_id: Option<Value>,
    details: &Value,
    status: String,
    parts: u32,
    started: Instant,
) -> UploadOutcome {
    let mut fields = Map::new();
    fields.insert("uploadId".into(), upload_id.into());
    let media_id = details.get("mediaId").and_then(id_text).or_else(|| media_id.as_ref().and_then(id_text));
    if let Some(m) = media_id {
        fields.insert("mediaId".into(), m.into());
    }
    for key in ["sanitizedTitle", "fileUrl"] {
        if let Some(v) = details.get(key).filter(|v| !v.is_null()) {
            fields.insert(key.into(), v.clone());
        }
    }
    UploadOutcome {
        provider: "truvideo",
        file: file.path().display().to_string(),
        bytes: file.size(),
        id: upload_id.to_string(),
        status: super::status_word(&status),
        vendor_status: status,
        parts,
        elapsed_s: started.elapsed().as_secs_f64(),
        crc64nvme: None,
        fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitized_titles_match_the_doc() {
        for (title, sanitized) in [
            ("Hello: World!", "Hello__World_"),
            ("Product Lunch Video", "Product_Lunch_Video"),
            ("Product %%#@^&", "Product_______"),
            ("a.b-c_d é", "a.b-c_d__"),
        ] {
            assert_eq!(sanitize_title(title), sanitized, "{title:?}");
        }
    }

    #[test]
    fn file_types_from_extensions() {
        assert_eq!(file_type("mp4"), Some(("MP4", "video/mp4")));
        assert_eq!(file_type(".MoV"), Some(("MOV", "video/quicktime")));
        assert_eq!(file_type("3gp"), Some(("3GPP", "video/3gpp")));
        assert_eq!(file_type("jpeg"), Some(("JPEG", "image/jpeg")));
        assert_eq!(file_type("zip"), None);
        assert_eq!(file_type(""), None);
    }

    #[test]
    fn recommended_sizes_follow_the_doc() {
        assert_eq!(recommended_part_size(50_000_000), 16 * MIB);
        assert_eq!(recommended_part_size(500_000_000), 32 * MIB);
        assert_eq!(recommended_part_size(5_000_000_000), 64 * MIB);
        // 10 GB needs bigger parts to fit in 120.
        let p = PartPlan::choose(10_000_000_000, recommended_part_size(10_000_000_000), None, LIMITS).unwrap();
        assert!(p.num_parts <= 120 && p.part_size >= 64 * MIB);
    }

    #[test]
    fn url_entries_read_numbers_and_times_either_way() {
        let read = |v: Value| serde_json::from_value::<PartUrlEntry>(v).map(|e| (e.part_number, e.expires_at));
        let t = chrono::DateTime::parse_from_rfc3339("2026-03-29T10:00:00Z").unwrap().with_timezone(&chrono::Utc);
        for (entry, want) in [
            (
                serde_json::json!({"partNumber": 3, "presignedUrl": "u", "expiresAt": "2026-03-29T10:00:00Z"}),
                (Some(3), Some(t)),
            ),
            (
                serde_json::json!({"partNumber": "3", "presignedUrl": "u", "expiresAt": 1_774_778_400_000u64}),
                (Some(3), Some(t)),
            ),
            (
                serde_json::json!({"partNumber": " 3 ", "presignedUrl": "u", "expiresAt": 1_774_778_400u64}),
                (Some(3), Some(t)),
            ),
            (serde_json::json!({"presignedUrl": "u", "expiresAt": "1774778400"}), (None, Some(t))),
            (serde_json::json!({"partNumber": null, "presignedUrl": "u", "expiresAt": "soon"}), (None, None)),
        ] {
            assert_eq!(read(entry.clone()).unwrap(), want, "{entry}");
        }
        for bad in [
            serde_json::json!({"partNumber": "three", "presignedUrl": "u"}),
            serde_json::json!({"partNumber": -1, "presignedUrl": "u"}),
        ] {
            assert!(read(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_url_for_another_part_is_refused_before_sending() {
        let url = |q: &str| format!("https://s3.example/b/k?uploadId=x&{q}&X-Amz-Signature=s");
        assert!(check_part_number(&url("partNumber=7"), 7).is_ok());
        for (q, says) in [
            ("partNumber=1", "is for part 1"),
            ("x=1", "carries no partNumber"),
            ("partNumber=7&partNumber=8", "several parts"),
        ] {
            let e = check_part_number(&url(q), 7).unwrap_err();
            assert!(
                matches!(e, Error::Protocol { provider: "truvideo", .. }) && e.to_string().contains(says),
                "{q}: {e}"
            );
        }
    }

    #[test]
    fn entries_without_numbers_take_the_expected_ones() {
        let e = |n: Option<u32>, u: &str| PartUrlEntry { part_number: n, presigned_url: u.into(), expires_at: None };
        let got = number_entries(vec![e(None, "a"), e(Some(9), "b"), e(None, "c")], &[4, 5, 6]);
        let got: Vec<(u32, String)> = got.into_iter().map(|(n, e)| (n, e.presigned_url)).collect();
        assert_eq!(got, [(4, "a".to_string()), (9, "b".to_string()), (5, "c".to_string())]);
    }

    #[test]
    fn reserved_metadata_and_bad_pairs_are_refused() {
        let opts = |f: fn(&mut TruvideoOptions)| {
            let mut o = TruvideoOptions::default();
            f(&mut o);
            Truvideo::new(o)
        };
        assert!(opts(|o| o.metadata = vec!["failureReason=x".into()]).is_err());
        assert!(opts(|o| o.metadata_json = Some(r#"{"failureTimestamp": 1}"#.into())).is_err());
        assert!(opts(|o| o.metadata_json = Some("[1]".into())).is_err());
        assert!(opts(|o| o.tags = vec!["novalue".into()]).is_err());
        assert!(opts(|o| o.creator = Some("x".repeat(256))).is_err());
        let t = opts(|o| {
            o.metadata = vec!["retentionDays=365".into(), "note=hello".into()];
            o.metadata_json = Some(r#"{"retentionDays": 1, "priority": "NORMAL"}"#.into());
        })
        .unwrap();
        assert_eq!(t.metadata["retentionDays"], 365);
        assert_eq!(t.metadata["note"], "hello");
        assert_eq!(t.metadata["priority"], "NORMAL");
    }
}
