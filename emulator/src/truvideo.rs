//! TruVideo Upload V3 (routes at the root of the API port).
//!
//! * `POST /upload/start` {amountOfParts 1..=120, media{fileType (the documented list, either
//!   case), creator? ≤ 255 chars, title?, duration? ≥ 0, resolution? LOW|NORMAL|HIGH, tags?{},
//!   insights?{isLibrary?, includeInReport?}}, metadata?{} (without the reserved keys
//!   `failureReason`/`failureTimestamp`)} → 201 {uploadId, mediaId, status: INITIALIZED,
//!   sanitizedTitle, parts: [{partNumber, presignedUrl, expiresAt}]} with URLs for the first
//!   [`crate::Config::truvideo_initial_urls`] parts only.
//! * `GET /upload/{uploadId}/parts?count=N` → {uploadId, parts: [...]}: URLs for the next N
//!   part numbers not handed out yet (fewer, or none, when the upload runs out);
//!   `?partNumbers=3,7` hands out URLs for these parts again (an expired one).
//!   [`crate::Config::truvideo_more_urls_from_one`] makes `count=N` hand out parts 1..=N
//!   without `partNumber` (a contract other than the client's reading);
//!   [`crate::Config::truvideo_text_numbers`] sends `partNumber` as a string and `expiresAt` as
//!   epoch milliseconds.
//! * `GET /upload/{uploadId}` → {uploadId, mediaId, s3UploadId, status, bucketName, keyName,
//!   fileUrl, creator, title, sanitizedTitle, parts: [{partNumber, eTag, size}],
//!   failureReason}.
//! * `POST /upload/{uploadId}/complete` {parts: [{partNumber, eTag}]} → 202 {uploadId, mediaId,
//!   status: PENDING_COMPLETE}. The parts must be 1..=amountOfParts, ascending, each with the
//!   ETag its PUT answered (quoted or not), every part but the last ≥ the minimum part size.
//!
//! Statuses: INITIALIZED (no part received), PARTIAL (some), PENDING_COMPLETE (from the
//! completion until [`crate::Processing::delay_ms`] has passed), then COMPLETED, or FAILED with
//! `failureReason` = [`crate::Processing::fail_reason`].
//!
//! Errors are Spring Boot's shape, `{timestamp, status, error, message, path}`: 400 for an
//! invalid payload or an unknown uploadId (the doc's "Invalid uploadId"), 401 for a missing,
//! wrong or (fault) expired token. Objects are stored under `truvideo/{uploadId}/{mediaId}.{ext}`
//! with provider `truvideo` and id = uploadId.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
use chrono::Utc;
use serde_json::{Map, Value, json};

use crate::fastapi::json_response;
use crate::faults::ApiFault;
use crate::s3::CompleteError;
use crate::state::Shared;
use crate::{BUCKET, Processing, auth};

/// The provider name in [`crate::ObjectInfo::provider`].
pub const PROVIDER: &str = "truvideo";
/// The documented `media.fileType` values.
pub const FILE_TYPES: [&str; 17] = [
    "MP4", "MOV", "AVI", "MKV", "FLV", "WMV", "3GPP", "WEBM", "JPG", "JPEG", "PNG", "SVG", "MP3", "WAV", "AAC", "FLAC",
    "PDF",
];
/// Most parts an upload may have.
pub const MAX_PARTS: i64 = 120;
/// Metadata keys TruVideo keeps for itself.
pub const RESERVED_METADATA: [&str; 2] = ["failureReason", "failureTimestamp"];

/// TruVideo's uploads, in creation order.
#[derive(Default)]
pub struct TruvideoState {
    uploads: Mutex<Vec<Upload>>,
}

#[derive(Debug, Clone)]
struct Upload {
    upload_id: String,
    media_id: String,
    s3_upload_id: String,
    key: String,
    amount_of_parts: u32,
    file_type: String,
    creator: Option<String>,
    title: Option<String>,
    media: Value,
    metadata: Value,
    /// Part numbers whose URL was handed out at least once.
    issued: BTreeSet<u32>,
    completed: Option<Completed>,
}

#[derive(Debug, Clone)]
struct Completed {
    instant: Instant,
    parts: Vec<(u32, String, u64)>,
    processing: Processing,
}

/// The TruVideo `sanitizedTitle`: every character other than ASCII letters, digits, `.`, `-`
/// and `_` becomes `_`.
pub fn sanitize_title(title: &str) -> String {
    title.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect()
}

/// TruVideo's routes. No fallback: the router is merged with the others on the API port.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/upload/start", post(start))
        .route("/upload/{upload_id}", get(details))
        .route("/upload/{upload_id}/parts", get(more_parts))
        .route("/upload/{upload_id}/complete", post(complete))
        .with_state(shared)
}

/// A Spring Boot error body.
fn error(status: u16, message: &str, path: &str) -> Response {
    let reason = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        _ => "Internal Server Error",
    };
    json_response(
        status,
        &json!({
            "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "status": status,
            "error": reason,
            "message": message,
            "path": path,
        }),
    )
}

type Answer = Result<Response, Response>;

fn answer(a: Answer) -> Response {
    a.unwrap_or_else(|r| r)
}

/// Counts the call and checks its Bearer token: 401 (or 429 for the throttle fault) otherwise.
fn check_auth(shared: &Shared, headers: &HeaderMap, path: &str) -> Result<(), Response> {
    let fault = shared.faults.lock().unwrap().on_api_call();
    if fault == ApiFault::Throttle {
        let mut resp = error(429, "Too Many Requests", path);
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Err(resp);
    }
    auth::check_token(shared, headers, fault == ApiFault::Unauthorized).map_err(|e| {
        let msg = match e {
            auth::AuthError::Missing => "Full authentication is required to access this resource",
            auth::AuthError::Invalid => "Invalid or expired token",
        };
        let mut resp = error(401, msg, path);
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        resp
    })
}

impl Upload {
    fn status(&self, shared: &Shared) -> (&'static str, Option<String>) {
        match &self.completed {
            None => match shared.store.list_parts(&self.s3_upload_id) {
                Some(p) if !p.is_empty() => ("PARTIAL", None),
                _ => ("INITIALIZED", None),
            },
            Some(c) if (c.instant.elapsed().as_millis() as u64) < c.processing.delay_ms => ("PENDING_COMPLETE", None),
            Some(c) => match &c.processing.fail_reason {
                None => ("COMPLETED", None),
                Some(r) => ("FAILED", Some(r.clone())),
            },
        }
    }

    fn details(&self, shared: &Shared) -> Value {
        let (status, failure) = self.status(shared);
        let parts: Vec<Value> = match &self.completed {
            Some(c) => c.parts.iter().map(|(n, e, s)| json!({ "partNumber": n, "eTag": e, "size": s })).collect(),
            None => shared
                .store
                .list_parts(&self.s3_upload_id)
                .unwrap_or_default()
                .iter()
                .map(|p| json!({ "partNumber": p.number, "eTag": p.etag, "size": p.size }))
                .collect(),
        };
        json!({
            "uploadId": self.upload_id,
            "mediaId": self.media_id,
            "s3UploadId": self.s3_upload_id,
            "status": status,
            "bucketName": BUCKET,
            "keyName": self.key,
            "fileUrl": format!("{}/{}/{}", shared.store.base_url(), BUCKET, crate::sigv4::uri_encode(&self.key, true)),
            "creator": self.creator,
            "title": self.title,
            "sanitizedTitle": self.title.as_deref().map(sanitize_title),
            "parts": parts,
            "failureReason": failure,
        })
    }
}

/// Hands out URLs for `numbers` (marks them issued).
fn presign(shared: &Shared, up: &mut Upload, numbers: &[u32]) -> Vec<Value> {
    let ttl = shared.config.url_ttl.as_millis().div_ceil(1000).max(1) as i64;
    numbers
        .iter()
        .filter_map(|n| {
            let url = shared.store.presign_part(&up.s3_upload_id, *n)?;
            up.issued.insert(*n);
            let expires = Utc::now() + chrono::Duration::seconds(ttl);
            Some(if shared.config.truvideo_text_numbers {
                json!({ "partNumber": n.to_string(), "presignedUrl": url, "expiresAt": expires.timestamp_millis() })
            } else {
                json!({
                    "partNumber": n,
                    "presignedUrl": url,
                    "expiresAt": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                })
            })
        })
        .collect()
}

fn parse_object(body: &[u8], path: &str) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(error(400, "Invalid request payload: a JSON object is expected", path)),
        Err(e) => Err(error(400, &format!("Invalid request payload: {e}"), path)),
    }
}

fn as_int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9e15).map(|f| f as i64))
}

async fn start(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    answer(start_inner(&shared, &headers, &body))
}

fn start_inner(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Answer {
    const PATH: &str = "/upload/start";
    check_auth(shared, headers, PATH)?;
    let obj = parse_object(body, PATH)?;
    let bad = |msg: String| error(400, &format!("Invalid request payload: {msg}"), PATH);
    let parts = match obj.get("amountOfParts") {
        None | Some(Value::Null) => return Err(bad("amountOfParts is required".into())),
        Some(v) => as_int(v).ok_or_else(|| bad(format!("amountOfParts must be an integer, got {v}")))?,
    };
    if !(1..=MAX_PARTS).contains(&parts) {
        return Err(bad(format!("amountOfParts must be between 1 and {MAX_PARTS}, got {parts}")));
    }
    let media = match obj.get("media") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => return Err(bad("media is required".into())),
        Some(_) => return Err(bad("media must be an object".into())),
    };
    let file_type = match media.get("fileType") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => return Err(bad("media.fileType is required".into())),
        Some(v) => return Err(bad(format!("media.fileType must be a string, got {v}"))),
    };
    let upper = file_type.to_ascii_uppercase();
    if !FILE_TYPES.contains(&upper.as_str()) {
        return Err(bad(format!("unsupported media.fileType '{file_type}': supported are {}", FILE_TYPES.join(", "))));
    }
    let opt_string = |name: &str| -> Result<Option<String>, Response> {
        match media.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(bad(format!("media.{name} must be a string, got {v}"))),
        }
    };
    let creator = opt_string("creator")?;
    if let Some(c) = &creator
        && c.chars().count() > 255
    {
        return Err(bad("media.creator must have at most 255 characters".into()));
    }
    let title = opt_string("title")?;
    if let Some(r) = opt_string("resolution")?
        && !["LOW", "NORMAL", "HIGH"].contains(&r.as_str())
    {
        return Err(bad(format!("media.resolution must be LOW, NORMAL or HIGH, got '{r}'")));
    }
    match media.get("duration") {
        None | Some(Value::Null) => {}
        Some(v) if as_int(v).is_some_and(|d| d >= 0) => {}
        Some(v) => return Err(bad(format!("media.duration must be a non-negative integer (milliseconds), got {v}"))),
    }
    for name in ["tags", "insights"] {
        if let Some(v) = media.get(name)
            && !(v.is_object() || v.is_null())
        {
            return Err(bad(format!("media.{name} must be an object")));
        }
    }
    if let Some(Value::Object(ins)) = media.get("insights") {
        for name in ["isLibrary", "includeInReport"] {
            if let Some(v) = ins.get(name)
                && !(v.is_boolean() || v.is_null())
            {
                return Err(bad(format!("media.insights.{name} must be a boolean, got {v}")));
            }
        }
    }
    let metadata = obj.get("metadata").cloned().unwrap_or(Value::Null);
    match &metadata {
        Value::Null => {}
        Value::Object(m) => {
            if let Some(k) = m.keys().find(|k| RESERVED_METADATA.contains(&k.as_str())) {
                return Err(bad(format!("metadata key '{k}' is reserved")));
            }
        }
        _ => return Err(bad("metadata must be an object".into())),
    }

    let upload_id = uuid::Uuid::new_v4().to_string();
    let media_id = uuid::Uuid::new_v4().to_string();
    let key = format!("truvideo/{upload_id}/{media_id}.{}", upper.to_ascii_lowercase());
    let s3_upload_id = shared.store.create_multipart_upload(&key, PROVIDER, &upload_id);
    let mut up = Upload {
        upload_id: upload_id.clone(),
        media_id: media_id.clone(),
        s3_upload_id,
        key,
        amount_of_parts: parts as u32,
        file_type: upper,
        creator,
        title: title.clone(),
        media: Value::Object(media.clone()),
        metadata,
        issued: BTreeSet::new(),
        completed: None,
    };
    let initial: Vec<u32> = (1..=up.amount_of_parts.min(shared.config.truvideo_initial_urls)).collect();
    let urls = presign(shared, &mut up, &initial);
    shared.truvideo.uploads.lock().unwrap().push(up);
    tracing::debug!(%upload_id, parts, initial = urls.len(), "truvideo: upload started");
    Ok(json_response(
        201,
        &json!({
            "uploadId": upload_id,
            "mediaId": media_id,
            "status": "INITIALIZED",
            "sanitizedTitle": title.as_deref().map(sanitize_title),
            "parts": urls,
        }),
    ))
}

fn invalid_upload_id(path: &str) -> Response {
    error(400, "Invalid uploadId", path)
}

async fn details(State(shared): State<Arc<Shared>>, Path(upload_id): Path<String>, headers: HeaderMap) -> Response {
    let path = format!("/upload/{upload_id}");
    answer((|| {
        check_auth(&shared, &headers, &path)?;
        let ups = shared.truvideo.uploads.lock().unwrap();
        let up = ups.iter().find(|u| u.upload_id == upload_id).ok_or_else(|| invalid_upload_id(&path))?;
        Ok(json_response(200, &up.details(&shared)))
    })())
}

async fn more_parts(
    State(shared): State<Arc<Shared>>,
    Path(upload_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let path = format!("/upload/{upload_id}/parts");
    answer(more_parts_inner(&shared, &upload_id, query.as_deref().unwrap_or(""), &headers, &path))
}

fn more_parts_inner(shared: &Shared, upload_id: &str, query: &str, headers: &HeaderMap, path: &str) -> Answer {
    check_auth(shared, headers, path)?;
    let q = crate::sigv4::parse_query(query);
    let get = |n: &str| q.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut ups = shared.truvideo.uploads.lock().unwrap();
    let up = ups.iter_mut().find(|u| u.upload_id == upload_id).ok_or_else(|| invalid_upload_id(path))?;
    if up.completed.is_some() {
        return Err(error(400, "Upload has already been completed: no more URLs are handed out", path));
    }
    let numbers: Vec<u32> = match (get("count"), get("partNumbers")) {
        (_, Some(list)) => {
            let mut out = Vec::new();
            for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match item.parse::<u32>() {
                    Ok(n) if (1..=up.amount_of_parts).contains(&n) => out.push(n),
                    _ => {
                        return Err(error(
                            400,
                            &format!(
                                "Invalid partNumbers: '{item}' is not a part number between 1 and {}",
                                up.amount_of_parts
                            ),
                            path,
                        ));
                    }
                }
            }
            if out.is_empty() {
                return Err(error(400, "Invalid partNumbers: no part number given", path));
            }
            out
        }
        (Some(count), None) => match count.parse::<i64>() {
            Ok(n) if (1..=MAX_PARTS).contains(&n) && shared.config.truvideo_more_urls_from_one => {
                let numbers: Vec<u32> = (1..=up.amount_of_parts).take(n as usize).collect();
                let mut urls = presign(shared, up, &numbers);
                for u in &mut urls {
                    u.as_object_mut().map(|m| m.remove("partNumber"));
                }
                return Ok(json_response(200, &json!({ "uploadId": upload_id, "parts": urls })));
            }
            Ok(n) if (1..=MAX_PARTS).contains(&n) => {
                (1..=up.amount_of_parts).filter(|k| !up.issued.contains(k)).take(n as usize).collect()
            }
            _ => return Err(error(400, &format!("Invalid count '{count}': between 1 and {MAX_PARTS}"), path)),
        },
        (None, None) => return Err(error(400, "Required parameter 'count' is not present", path)),
    };
    let urls = presign(shared, up, &numbers);
    Ok(json_response(200, &json!({ "uploadId": upload_id, "parts": urls })))
}

async fn complete(
    State(shared): State<Arc<Shared>>,
    Path(upload_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/upload/{upload_id}/complete");
    answer(complete_inner(&shared, &upload_id, &headers, &body, &path))
}

fn complete_inner(shared: &Shared, upload_id: &str, headers: &HeaderMap, body: &[u8], path: &str) -> Answer {
    check_auth(shared, headers, path)?;
    let obj = parse_object(body, path)?;
    let bad = |msg: String| error(400, &format!("Invalid completion payload: {msg}"), path);
    let list = match obj.get("parts") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => return Err(bad("parts is required".into())),
        Some(_) => return Err(bad("parts must be an array".into())),
    };
    let mut parts: Vec<(u32, String)> = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let number = item.get("partNumber").and_then(as_int);
        let etag = item.get("eTag").and_then(Value::as_str);
        match (number, etag) {
            (Some(n), Some(e)) if n >= 1 && n <= u32::MAX as i64 => parts.push((n as u32, e.to_string())),
            _ => return Err(bad(format!("parts[{i}] needs a positive partNumber and an eTag string"))),
        }
    }
    if shared.faults.lock().unwrap().on_complete() {
        tracing::debug!(%upload_id, "fault: completion answers 500");
        return Err(error(500, "Internal Server Error", path));
    }
    // Under the uploads lock: two concurrent completions cannot both pass.
    let mut ups = shared.truvideo.uploads.lock().unwrap();
    let up = ups.iter_mut().find(|u| u.upload_id == upload_id).ok_or_else(|| invalid_upload_id(path))?;
    if up.completed.is_some() {
        return Err(bad(format!("upload is already {}", up.status(shared).0)));
    }
    if parts.is_empty() {
        return Err(bad("parts is empty".into()));
    }
    for (i, (n, _)) in parts.iter().enumerate() {
        let expected = i as u32 + 1;
        if *n != expected {
            return Err(bad(if *n > expected && *n <= up.amount_of_parts {
                format!("parts are not contiguous: part {expected} is missing")
            } else {
                format!("parts must be listed in ascending order from 1 (found part {n} at position {})", i + 1)
            }));
        }
    }
    if parts.len() as u32 != up.amount_of_parts {
        return Err(bad(format!(
            "{} parts listed but the upload was started with amountOfParts {}",
            parts.len(),
            up.amount_of_parts
        )));
    }
    let sizes: Vec<u64> = {
        let listed = shared.store.list_parts(&up.s3_upload_id).unwrap_or_default();
        parts.iter().map(|(n, _)| listed.iter().find(|p| p.number == *n).map_or(0, |p| p.size)).collect()
    };
    shared.store.complete_checked(&up.s3_upload_id, &parts, None).map_err(|e| match e {
        CompleteError::NoSuchUpload => bad("the upload no longer exists".into()),
        other => bad(format!("{other} ({})", other.code())),
    })?;
    up.completed = Some(Completed {
        instant: Instant::now(),
        parts: parts.iter().zip(sizes).map(|((n, e), s)| (*n, e.clone(), s)).collect(),
        processing: shared.config.processing.clone(),
    });
    tracing::debug!(%upload_id, "truvideo: upload completed");
    Ok(json_response(202, &json!({ "uploadId": upload_id, "mediaId": up.media_id, "status": "PENDING_COMPLETE" })))
}

/// Every upload with its internal fields, for the admin API.
pub fn uploads_summary(shared: &Shared) -> Value {
    let ups = shared.truvideo.uploads.lock().unwrap();
    Value::Array(
        ups.iter()
            .map(|u| {
                let mut v = u.details(shared);
                v["amountOfParts"] = json!(u.amount_of_parts);
                v["fileType"] = json!(u.file_type);
                v["media"] = u.media.clone();
                v["metadata"] = u.metadata.clone();
                v["issuedParts"] = json!(u.issued.iter().collect::<Vec<_>>());
                v
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Emulator, Faults};
    use reqwest::StatusCode;

    #[test]
    fn sanitized_titles_match_the_doc() {
        assert_eq!(sanitize_title("Hello: World!"), "Hello__World_");
        assert_eq!(sanitize_title("Product Lunch Video"), "Product_Lunch_Video");
        assert_eq!(sanitize_title("Product %%#@^&"), "Product_______");
        assert_eq!(sanitize_title("v1.2-final_cut"), "v1.2-final_cut");
    }

    struct Client {
        http: reqwest::Client,
        base: String,
        token: String,
    }

    impl Client {
        fn new(emu: &Emulator) -> Self {
            Client { http: reqwest::Client::new(), base: emu.api_url(), token: emu.token() }
        }

        async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
            let mut req = self.http.request(method, format!("{}{}", self.base, path)).bearer_auth(&self.token);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let text = resp.text().await.unwrap();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        }

        async fn get(&self, path: &str) -> (StatusCode, Value) {
            self.call(reqwest::Method::GET, path, None).await
        }

        async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
            self.call(reqwest::Method::POST, path, Some(body)).await
        }

        async fn put(&self, url: &str, body: Vec<u8>) -> String {
            let resp = self.http.put(url).body(body).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.headers()["etag"].to_str().unwrap().to_string()
        }
    }

    fn url_of(v: &Value, part: u64) -> String {
        let e = v["parts"].as_array().unwrap().iter().find(|e| e["partNumber"] == part).expect("a URL for the part");
        assert!(e["expiresAt"].as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()), "{e}");
        e["presignedUrl"].as_str().unwrap().to_string()
    }

    fn numbers(v: &Value) -> Vec<u64> {
        v["parts"].as_array().unwrap().iter().map(|e| e["partNumber"].as_u64().unwrap()).collect()
    }

    #[tokio::test]
    async fn full_flow_with_more_urls_and_processing() {
        let emu = Emulator::start(Config {
            truvideo_initial_urls: 1,
            processing: Processing { delay_ms: 400, fail_reason: None },
            ..Config::default()
        })
        .await
        .unwrap();
        let c = Client::new(&emu);
        let body = json!({"amountOfParts": 3, "media": {"fileType": "mp4", "title": "Product %%#@^&"}});
        let (s, start) = c.post("/upload/start", body).await;
        assert_eq!(s, 201, "{start}");
        assert_eq!(start["sanitizedTitle"], "Product_______");
        assert_eq!(numbers(&start), [1]);
        let id = start["uploadId"].as_str().unwrap().to_string();
        let (_, d) = c.get(&format!("/upload/{id}")).await;
        assert_eq!(d["status"], "INITIALIZED");

        let data: Vec<u8> = (0..(10 * 1024 * 1024 + 77)).map(|i| (i * 7 % 251) as u8).collect();
        let chunks: Vec<Vec<u8>> = data.chunks(5 * 1024 * 1024).map(<[u8]>::to_vec).collect();
        let e1 = c.put(&url_of(&start, 1), chunks[0].clone()).await;
        let (_, d) = c.get(&format!("/upload/{id}")).await;
        assert_eq!(d["status"], "PARTIAL");
        assert_eq!(d["parts"][0]["partNumber"], 1);

        // count hands out the next numbers not given out yet, no more than there are.
        let (s, more) = c.get(&format!("/upload/{id}/parts?count=1")).await;
        assert_eq!((s, numbers(&more)), (StatusCode::OK, vec![2]));
        let (_, more3) = c.get(&format!("/upload/{id}/parts?count=5")).await;
        assert_eq!(numbers(&more3), [3]);
        let (_, none) = c.get(&format!("/upload/{id}/parts?count=5")).await;
        assert_eq!(numbers(&none), Vec::<u64>::new());
        // partNumbers issues given ones again.
        let (_, again) = c.get(&format!("/upload/{id}/parts?partNumbers=2%2C3")).await;
        assert_eq!(numbers(&again), [2, 3]);
        let e2 = c.put(&url_of(&again, 2), chunks[1].clone()).await;
        let e3 = c.put(&url_of(&more3, 3), chunks[2].clone()).await;

        let complete = format!("/upload/{id}/complete");
        let part = |n: u32, e: &str| json!({"partNumber": n, "eTag": e});
        let (s, v) = c.post(&complete, json!({"parts": [part(1, &e1), part(3, &e3)]})).await;
        assert_eq!(s, 400);
        assert!(v["message"].as_str().unwrap().contains("part 2 is missing"), "{v}");
        let (s, v) = c.post(&complete, json!({"parts": [part(1, &e1), part(2, &e2)]})).await;
        assert_eq!(s, 400);
        assert!(v["message"].as_str().unwrap().contains("amountOfParts 3"), "{v}");
        let (s, v) = c.post(&complete, json!({"parts": [part(1, &e1), part(2, &e3), part(3, &e3)]})).await;
        assert_eq!(s, 400);
        assert!(v["message"].as_str().unwrap().contains("ETag of part 2"), "{v}");
        assert_eq!(v["error"], "Bad Request");
        assert_eq!(v["path"], complete);
        let (s, v) = c.post(&complete, json!({"parts": [part(1, &e1), part(2, &e2), part(3, &e3)]})).await;
        assert_eq!(s, 202, "{v}");
        assert_eq!(v["status"], "PENDING_COMPLETE");

        let (_, d) = c.get(&format!("/upload/{id}")).await;
        assert_eq!(d["status"], "PENDING_COMPLETE");
        assert_eq!(d["mediaId"], start["mediaId"]);
        assert_eq!(d["parts"].as_array().unwrap().len(), 3);
        let (s, _) = c.post(&complete, json!({"parts": [part(1, &e1), part(2, &e2), part(3, &e3)]})).await;
        assert_eq!(s, 400, "a second completion is refused");
        let (s, _) = c.get(&format!("/upload/{id}/parts?count=1")).await;
        assert_eq!(s, 400, "no URLs after completion");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let (_, d) = c.get(&format!("/upload/{id}")).await;
        assert_eq!(d["status"], "COMPLETED");
        assert!(d["failureReason"].is_null());

        let objects = emu.objects();
        assert_eq!(objects.len(), 1);
        assert_eq!((objects[0].provider.as_str(), objects[0].id.as_str()), (PROVIDER, id.as_str()));
        assert_eq!(objects[0].key, d["keyName"].as_str().unwrap());
        assert_eq!(emu.object_bytes(&objects[0].key).unwrap(), data);
    }

    #[tokio::test]
    async fn failed_processing_names_the_reason() {
        let emu = Emulator::start(Config {
            processing: Processing { delay_ms: 0, fail_reason: Some("Corrupted media".into()) },
            ..Config::default()
        })
        .await
        .unwrap();
        let c = Client::new(&emu);
        let (_, start) = c.post("/upload/start", json!({"amountOfParts": 1, "media": {"fileType": "PDF"}})).await;
        let id = start["uploadId"].as_str().unwrap();
        assert!(start["sanitizedTitle"].is_null());
        let e = c.put(&url_of(&start, 1), b"%PDF".to_vec()).await;
        let (s, _) = c.post(&format!("/upload/{id}/complete"), json!({"parts": [{"partNumber": 1, "eTag": e}]})).await;
        assert_eq!(s, 202);
        let (_, d) = c.get(&format!("/upload/{id}")).await;
        assert_eq!((d["status"].as_str(), d["failureReason"].as_str()), (Some("FAILED"), Some("Corrupted media")));
    }

    #[tokio::test]
    async fn invalid_payloads_and_tokens() {
        let emu = Emulator::start(Config::default()).await.unwrap();
        let c = Client::new(&emu);
        let media = json!({"fileType": "MP4"});
        let bad_starts = [
            (json!({"amountOfParts": 0, "media": media}), "between 1 and 120"),
            (json!({"amountOfParts": 121, "media": media}), "between 1 and 120"),
            (json!({"amountOfParts": "3", "media": media}), "integer"),
            (json!({"media": media}), "amountOfParts is required"),
            (json!({"amountOfParts": 1}), "media is required"),
            (json!({"amountOfParts": 1, "media": {"fileType": "ZIP"}}), "unsupported media.fileType"),
            (json!({"amountOfParts": 1, "media": {}}), "fileType is required"),
            (json!({"amountOfParts": 1, "media": {"fileType": "MP4", "resolution": "ULTRA"}}), "resolution"),
            (json!({"amountOfParts": 1, "media": {"fileType": "MP4", "creator": "x".repeat(256)}}), "255"),
            (json!({"amountOfParts": 1, "media": {"fileType": "MP4", "duration": -1}}), "duration"),
            (json!({"amountOfParts": 1, "media": media, "metadata": {"failureReason": "x"}}), "reserved"),
            (json!([1]), "JSON object"),
        ];
        for (body, needle) in bad_starts {
            let (s, v) = c.post("/upload/start", body.clone()).await;
            assert_eq!(s, 400, "{body}");
            assert!(v["message"].as_str().unwrap().contains(needle), "{body}: {v}");
            assert_eq!(v["status"], 400);
        }
        let (s, v) = c.get("/upload/nope").await;
        assert_eq!((s.as_u16(), v["message"].as_str()), (400, Some("Invalid uploadId")));
        let (_, start) = c.post("/upload/start", json!({"amountOfParts": 2, "media": {"fileType": "3gpp"}})).await;
        let id = start["uploadId"].as_str().unwrap();
        for q in ["count=0", "count=x", "partNumbers=3", "partNumbers=", ""] {
            let (s, _) = c.get(&format!("/upload/{id}/parts?{q}")).await;
            assert_eq!(s, 400, "{q}");
        }
        let (s, v) = c.post(&format!("/upload/{id}/complete"), json!({"parts": []})).await;
        assert_eq!(s, 400, "{v}");
        let (s, v) = c.post(&format!("/upload/{id}/complete"), json!({"parts": [{"partNumber": 1}]})).await;
        assert_eq!(s, 400, "{v}");

        // Tokens: wrong, missing, and the 401 fault on a good one.
        let wrong = Client { token: "wrong".into(), ..Client::new(&emu) };
        let (s, v) = wrong.get(&format!("/upload/{id}")).await;
        assert_eq!((s.as_u16(), v["error"].as_str()), (401, Some("Unauthorized")));
        let resp = reqwest::Client::new().get(format!("{}/upload/{id}", emu.api_url())).send().await.unwrap();
        assert_eq!(resp.status(), 401);
        emu.set_faults(Faults { unauthorized_api_call_nth: vec![1], ..Faults::default() });
        assert_eq!(c.get(&format!("/upload/{id}")).await.0, 401);
        assert_eq!(c.get(&format!("/upload/{id}")).await.0, 200);
    }
}
