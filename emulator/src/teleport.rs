//! Varjo Teleport's capture API (`/api/v1`), on the API port.
//!
//! * `POST /api/v1/captures` {name, bytesize, input_data_format?} → {eid, num_parts,
//!   chunk_size}. `chunk_size` is [`crate::Config::teleport_chunk_size`], raised (to whole MiB)
//!   when the file would need more than 10,000 parts. `bytesize` must be > 0: S3 cannot hold a
//!   multipart upload without parts, so 0 answers 422 (`greater_than`).
//! * `POST /api/v1/captures/{eid}/create-upload-url/{part_no}` {eid, bytesize} → {eid,
//!   upload_url, chunk_size}; `part_no` outside 1..=num_parts → 422; unknown eid → 404
//!   `{"detail": "Capture not found"}`; a capture already uploaded → 409. The body's `eid` and
//!   `bytesize` are validated as to type only.
//! * `POST /api/v1/captures/{eid}/uploaded` {eid, parts: [{number, etag}]} → CaptureOutput in
//!   state UPLOADED. Every part 1..=num_parts must be listed, in ascending order, with the ETag
//!   its PUT answered (quoted or not), every part but the last ≥ 5 MiB, and the parts must add
//!   up to `bytesize`; otherwise 422 with a `detail` entry naming the part. Repeating the call
//!   with the same parts after success answers the capture again; other parts → 409.
//! * `GET /api/v1/captures?limit=25&offset=0` → CaptureOutput list, newest first.
//! * `PUT /api/v1/captures/{eid}` {name} → CaptureOutput; `DELETE /api/v1/captures/{eid}` → 204
//!   (aborts an unfinished upload; a completed object stays in the store).
//!
//! States before completion: CREATED, then UPLOADING once a part URL was handed out (the docs
//! never say the state stays CREATED until completion; only `uploaded`, null until then,
//! proves it: a client that took any state but CREATED for "completed" fails against this).
//!
//! Every call needs `Authorization: Bearer <token>` (401 otherwise). Timeline after completion,
//! with `d` = [`crate::Processing::delay_ms`] and `t` the time since completion: UPLOADED while
//! `t < d/4`, PROCESSING while `t < d`, then READY, or ERROR with `error_reason` =
//! `fail_reason`, `error_reason_slug` = its lower-case kebab form and a `state_description`.
//! Timestamps are UTC without a timezone: `2025-10-06T18:55:42.733421`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::{NaiveDateTime, Utc};
use futures::StreamExt;
use rand::Rng;
use serde_json::{Value, json};

use crate::fastapi::{self, Fields, ValidationError};
use crate::s3::CompleteError;
use crate::state::Shared;
use crate::{ObjectInfo, Processing, S3_MAX_PARTS, auth};

/// The `input_data_format` values accepted (the first two are documented, the last is the
/// schema's default).
pub const INPUT_DATA_FORMATS: [&str; 3] = ["bulk-images", "video", "commonformat-ios"];
/// The provider name in [`ObjectInfo::provider`].
pub const PROVIDER: &str = "teleport";

/// Teleport's captures, in creation order (looked up by eid from the newest: the captures a
/// client works on are the latest, and a long session holds tens of thousands).
#[derive(Default)]
pub struct TeleportState {
    captures: Mutex<Vec<Capture>>,
    /// `(limit, offset)` of every list call, oldest first.
    list_queries: Mutex<Vec<(i64, i64)>>,
}

/// `(limit, offset)` of every `GET /api/v1/captures` answered so far, oldest first (tests check
/// how a client pages).
pub fn list_queries(shared: &Shared) -> Vec<(i64, i64)> {
    shared.teleport.list_queries.lock().unwrap().clone()
}

#[derive(Debug, Clone)]
struct Capture {
    eid: String,
    name: String,
    bytesize: u64,
    input_data_format: String,
    num_parts: u32,
    chunk_size: u64,
    created: NaiveDateTime,
    upload_id: String,
    /// A part URL was handed out: the capture is UPLOADING until completed.
    urls_handed: bool,
    uploaded: Option<Uploaded>,
}

#[derive(Debug, Clone)]
struct Uploaded {
    at: NaiveDateTime,
    instant: Instant,
    /// Share id, shown (and usable with `/share/{sid}/...`) once the capture is READY.
    sid: String,
    /// Part numbers and unquoted ETags of the completion.
    parts: Vec<(u32, String)>,
    processing: Processing,
    #[allow(dead_code)]
    object: ObjectInfo,
}

/// The object key of a capture's file.
pub fn object_key(eid: &str, name: &str) -> String {
    format!("teleport/{eid}/{name}")
}

/// How a response shows captures: the origin its URLs start with (from the request's `Host`)
/// and whether timestamps carry a timezone (`?time_zone=true`).
#[derive(Debug, Clone)]
struct View {
    origin: String,
    time_zone: bool,
}

impl View {
    fn new(headers: &HeaderMap, time_zone: bool) -> Self {
        View { origin: origin(headers), time_zone }
    }

    fn timestamp(&self, t: &NaiveDateTime) -> String {
        let s = timestamp(t);
        if self.time_zone { format!("{s}+00:00") } else { s }
    }
}

/// `http://{Host}` of a request (the API port), where share and model URLs point.
fn origin(headers: &HeaderMap) -> String {
    let host = headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1");
    format!("http://{host}")
}

fn timestamp(t: &NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

fn new_eid() -> String {
    random_id(12)
}

impl Capture {
    /// `(state, error_reason, state_description, error_reason_slug)` now.
    fn state(&self) -> (&'static str, Option<String>, Option<String>, Option<String>) {
        let Some(up) = &self.uploaded else {
            return (if self.urls_handed { "UPLOADING" } else { "CREATED" }, None, None, None);
        };
        let t = up.instant.elapsed().as_millis() as u64;
        let d = up.processing.delay_ms;
        if t < d / 4 {
            ("UPLOADED", None, None, None)
        } else if t < d {
            ("PROCESSING", None, None, None)
        } else {
            match &up.processing.fail_reason {
                None => ("READY", None, None, None),
                Some(reason) => (
                    "ERROR",
                    Some(reason.clone()),
                    Some(format!("Processing failed: {reason}")),
                    Some(reason.to_ascii_lowercase().replace('_', "-")),
                ),
            }
        }
    }

    /// The share id once READY.
    fn ready_sid(&self) -> Option<&str> {
        match (&self.uploaded, self.state().0) {
            (Some(up), "READY") => Some(&up.sid),
            _ => None,
        }
    }

    /// The CaptureOutput schema, `state` forced when given. A READY capture has its `sid` and
    /// its share, viewer and preview URLs.
    fn output(&self, force_state: Option<&str>, view: &View) -> Value {
        let (state, error_reason, description, slug) = match force_state {
            Some(s) => (s, None, None, None),
            None => self.state(),
        };
        let description = description.or_else(|| (state == "PROCESSING").then(|| "Training the 3D model".to_string()));
        let sid = match (state, &self.uploaded) {
            ("READY", Some(up)) => Some(up.sid.clone()),
            _ => None,
        };
        let o = &view.origin;
        let url = |path: &str| sid.as_ref().map(|sid| format!("{o}{}", path.replace("{sid}", sid)));
        let preview_urls = match &sid {
            Some(sid) => {
                json!({ "sd": format!("{o}/share/{sid}/preview-sd.jpg"), "hd": format!("{o}/share/{sid}/preview-hd.jpg") })
            }
            None => json!({}),
        };
        json!({
            "eid": self.eid,
            "sid": sid,
            "name": self.name,
            "created": view.timestamp(&self.created),
            "uploaded": self.uploaded.as_ref().map(|u| view.timestamp(&u.at)),
            "state": state,
            "error_reason": error_reason,
            "state_description": description,
            "error_reason_slug": slug,
            "preview_urls": preview_urls,
            "preview_url": url("/share/{sid}/preview-sd.jpg"),
            "viewer_url": url("/viewer/{sid}"),
            "share_url": url("/share/{sid}"),
            "share_link": url("/share/{sid}"),
            "gif_url": null,
            "video_url": null,
            "share_video_url": null,
            "is_public": false,
        })
    }
}

/// Teleport's routes, under `/api/v1`, with FastAPI's 404/405 bodies for anything else.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/captures", get(list).post(create))
        .route("/api/v1/captures/{eid}", put(rename).delete(delete_capture))
        .route("/api/v1/captures/{eid}/create-upload-url/{part_no}", post(create_upload_url))
        .route("/api/v1/captures/{eid}/uploaded", post(uploaded))
        .route("/share/{sid}/metadata", get(metadata))
        .fallback(|| async { fastapi::detail(404, "Not Found") })
        .method_not_allowed_fallback(|| async { fastapi::detail(405, "Method Not Allowed") })
        .layer(axum::middleware::map_response(fastapi::ensure_json))
        // Model files are bytes, not JSON: added after the JSON layer.
        .route("/cdn/{sid}/{name}", get(model_download))
        .route("/share/{sid}/files/{name}", get(model_download))
        .with_state(shared)
}

fn not_found() -> Response {
    fastapi::detail(404, "Capture not found")
}

fn check_auth(shared: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    auth::gate_fastapi(shared, headers)
}

/// `Ok(response)` and `Err(response)` both answer; `?` makes the early returns read well.
type Answer = Result<Response, Response>;

fn answer(a: Answer) -> Response {
    a.unwrap_or_else(|r| r)
}

async fn create(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    answer(create_inner(&shared, &headers, &body))
}

fn create_inner(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Answer {
    check_auth(shared, headers)?;
    let obj = fastapi::parse_body(body)?;
    let mut f = Fields::new(&obj);
    let name = f.string("name");
    let bytesize = f.int("bytesize");
    let _ = f.opt_string("created");
    let _ = f.opt_int("num_frames");
    let format = f.enum_or("input_data_format", &INPUT_DATA_FORMATS, "commonformat-ios");
    let _ = f.opt_bool("guided_mode");
    let _ = f.opt_string("ios_app_version");
    let _ = f.opt_object("training_parameters");
    if let Some(b) = bytesize
        && b <= 0
    {
        f.errors.push(
            ValidationError::new(
                "greater_than",
                vec![json!("body"), json!("bytesize")],
                "Input should be greater than 0",
                json!(b),
            )
            .with_ctx(json!({ "gt": 0 })),
        );
    }
    f.finish()?;
    let (name, bytesize, format) =
        (name.unwrap_or_default(), bytesize.unwrap_or_default() as u64, format.unwrap_or_default());

    let mut chunk_size = shared.config.teleport_chunk_size.max(1);
    if bytesize.div_ceil(chunk_size) > S3_MAX_PARTS as u64 {
        const MIB: u64 = 1024 * 1024;
        chunk_size = bytesize.div_ceil(S3_MAX_PARTS as u64).div_ceil(MIB) * MIB;
    }
    let num_parts = bytesize.div_ceil(chunk_size) as u32;
    let eid = new_eid();
    let upload_id = shared.store.create_multipart_upload(&object_key(&eid, &name), PROVIDER, &eid);
    shared.teleport.captures.lock().unwrap().push(Capture {
        eid: eid.clone(),
        name,
        bytesize,
        input_data_format: format,
        num_parts,
        chunk_size,
        created: Utc::now().naive_utc(),
        upload_id,
        urls_handed: false,
        uploaded: None,
    });
    tracing::debug!(%eid, bytesize, num_parts, chunk_size, "teleport: capture created");
    Ok(fastapi::json_response(200, &json!({ "eid": eid, "num_parts": num_parts, "chunk_size": chunk_size })))
}

async fn create_upload_url(
    State(shared): State<Arc<Shared>>,
    Path((eid, part_no)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(create_upload_url_inner(&shared, &eid, &part_no, &headers, &body))
}

fn create_upload_url_inner(shared: &Shared, eid: &str, part_no: &str, headers: &HeaderMap, body: &[u8]) -> Answer {
    check_auth(shared, headers)?;
    let part_no = fastapi::int_param("path", "part_no", part_no)?;
    let obj = fastapi::parse_body(body)?;
    let mut f = Fields::new(&obj);
    let _ = f.string("eid");
    let _ = f.int("bytesize");
    f.finish()?;
    let (upload_id, num_parts, chunk_size, done) = {
        let caps = shared.teleport.captures.lock().unwrap();
        let c = caps.iter().rev().find(|c| c.eid == eid).ok_or_else(not_found)?;
        (c.upload_id.clone(), c.num_parts, c.chunk_size, c.uploaded.is_some())
    };
    if part_no < 1 || part_no > num_parts as i64 {
        return Err(fastapi::value_error(
            vec![json!("path"), json!("part_no")],
            &format!("part_no must be between 1 and {num_parts}"),
            json!(part_no),
        ));
    }
    if done {
        return Err(fastapi::detail(409, "Capture has already been uploaded"));
    }
    let url = shared.store.presign_part(&upload_id, part_no as u32).ok_or_else(not_found)?;
    if let Some(c) = shared.teleport.captures.lock().unwrap().iter_mut().rev().find(|c| c.eid == eid) {
        c.urls_handed = true;
    }
    Ok(fastapi::json_response(200, &json!({ "eid": eid, "upload_url": url, "chunk_size": chunk_size })))
}

async fn uploaded(
    State(shared): State<Arc<Shared>>,
    Path(eid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(uploaded_inner(&shared, &eid, &headers, &body))
}

fn uploaded_inner(shared: &Shared, eid: &str, headers: &HeaderMap, body: &[u8]) -> Answer {
    check_auth(shared, headers)?;
    let obj = fastapi::parse_body(body)?;
    let mut f = Fields::new(&obj);
    let _ = f.string("eid");
    let list = f.list("parts");
    let mut parts: Vec<(u32, String)> = Vec::new();
    for (i, item) in list.iter().flatten().enumerate() {
        let loc = |field: &str| vec![json!("body"), json!("parts"), json!(i), json!(field)];
        let Value::Object(m) = item else {
            f.errors.push(ValidationError::new(
                "model_attributes_type",
                vec![json!("body"), json!("parts"), json!(i)],
                "Input should be a valid dictionary or object to extract fields from",
                item.clone(),
            ));
            continue;
        };
        let number = match m.get("number") {
            None => {
                f.errors.push(ValidationError::new("missing", loc("number"), "Field required", item.clone()));
                None
            }
            Some(v) => f.int_at(loc("number"), v),
        };
        let etag = match m.get("etag") {
            None => {
                f.errors.push(ValidationError::new("missing", loc("etag"), "Field required", item.clone()));
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                f.errors.push(ValidationError::new(
                    "string_type",
                    loc("etag"),
                    "Input should be a valid string",
                    other.clone(),
                ));
                None
            }
        };
        if let (Some(n), Some(e)) = (number, etag) {
            parts.push((n.clamp(0, u32::MAX as i64) as u32, e));
        }
    }
    f.finish()?;

    if shared.faults.lock().unwrap().on_complete() {
        tracing::debug!(%eid, "fault: completion answers 500");
        return Err(fastapi::detail(500, "Internal Server Error"));
    }

    // The lock is held to the end: two concurrent completions of one capture see each other.
    let mut caps = shared.teleport.captures.lock().unwrap();
    let cap = caps.iter_mut().rev().find(|c| c.eid == eid).ok_or_else(not_found)?;
    let unquoted: Vec<(u32, String)> =
        parts.iter().map(|(n, e)| (*n, e.trim().trim_matches('"').to_string())).collect();
    if let Some(up) = &cap.uploaded {
        if up.parts == unquoted {
            return Ok(fastapi::json_response(200, &cap.output(None, &View::new(headers, false))));
        }
        return Err(fastapi::detail(409, "Capture has already been uploaded"));
    }
    let part_loc = |n: u32| {
        let i = parts.iter().position(|(m, _)| *m == n).unwrap_or(0);
        vec![json!("body"), json!("parts"), json!(i)]
    };
    if parts.is_empty() {
        return Err(fastapi::value_error(
            vec![json!("body"), json!("parts")],
            &format!("parts is empty: a capture of {} parts needs parts 1 to {}", cap.num_parts, cap.num_parts),
            json!([]),
        ));
    }
    for (i, (n, _)) in parts.iter().enumerate() {
        if *n < 1 || *n > cap.num_parts {
            return Err(fastapi::value_error(
                vec![json!("body"), json!("parts"), json!(i), json!("number")],
                &format!("part {n} does not exist: part numbers go from 1 to {}", cap.num_parts),
                json!(n),
            ));
        }
    }
    if let Some(missing) = (1..=cap.num_parts).find(|k| !parts.iter().any(|(n, _)| n == k)) {
        return Err(fastapi::value_error(
            vec![json!("body"), json!("parts")],
            &format!(
                "part {missing} is missing: a capture of {} parts needs parts 1 to {}",
                cap.num_parts, cap.num_parts
            ),
            json!(parts.len()),
        ));
    }
    let object = match shared.store.complete_checked(&cap.upload_id, &parts, Some(cap.bytesize)) {
        Ok(o) => o,
        Err(e) => {
            let loc = match e.part() {
                Some(n) => part_loc(n),
                None => vec![json!("body"), json!("parts")],
            };
            let input = match e.part() {
                Some(n) => parts
                    .iter()
                    .find(|(m, _)| *m == n)
                    .map(|(m, t)| json!({ "number": m, "etag": t }))
                    .unwrap_or(Value::Null),
                None => Value::Null,
            };
            let msg = match &e {
                CompleteError::NoSuchUpload => "the upload of this capture no longer exists".into(),
                other => format!("{} ({})", other, other.code()),
            };
            return Err(fastapi::value_error(loc, &msg, input));
        }
    };
    let c = cap;
    c.uploaded = Some(Uploaded {
        at: Utc::now().naive_utc(),
        instant: Instant::now(),
        sid: random_id(16),
        parts: unquoted,
        processing: shared.config.processing.clone(),
        object,
    });
    tracing::debug!(%eid, "teleport: capture uploaded");
    Ok(fastapi::json_response(200, &c.output(Some("UPLOADED"), &View::new(headers, false))))
}

async fn list(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    answer(list_inner(&shared, query.as_deref(), &headers))
}

fn list_inner(shared: &Shared, query: Option<&str>, headers: &HeaderMap) -> Answer {
    check_auth(shared, headers)?;
    let mut q = QueryParams::new(query);
    let limit = q.int("limit", 25);
    let offset = q.int("offset", 0);
    let time_zone = q.bool("time_zone", false);
    q.finish()?;
    shared.teleport.list_queries.lock().unwrap().push((limit, offset));
    let view = View::new(headers, time_zone);
    let caps = shared.teleport.captures.lock().unwrap();
    let out: Vec<Value> = caps
        .iter()
        .rev()
        .skip(offset.max(0) as usize)
        .take(limit.max(0) as usize)
        .map(|c| c.output(None, &view))
        .collect();
    Ok(fastapi::json_response(200, &Value::Array(out)))
}

/// Query parameters read the FastAPI way: the last value of a repeated scalar wins, errors are
/// collected into one 422.
struct QueryParams {
    pairs: Vec<(String, String)>,
    errors: Vec<ValidationError>,
}

impl QueryParams {
    fn new(raw: Option<&str>) -> Self {
        QueryParams { pairs: crate::sigv4::parse_query(raw.unwrap_or("")), errors: Vec::new() }
    }

    fn get(&self, name: &str) -> Option<String> {
        self.pairs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }

    fn loc(name: &str) -> Vec<Value> {
        vec![json!("query"), json!(name)]
    }

    fn int(&mut self, name: &str, default: i64) -> i64 {
        match self.get(name) {
            None => default,
            Some(raw) => raw.parse::<i64>().unwrap_or_else(|_| {
                self.errors.push(ValidationError::new(
                    "int_parsing",
                    Self::loc(name),
                    "Input should be a valid integer, unable to parse string as an integer",
                    json!(raw),
                ));
                default
            }),
        }
    }

    fn bool(&mut self, name: &str, default: bool) -> bool {
        match self.get(name) {
            None => default,
            Some(raw) => match raw.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" | "t" | "y" => true,
                "false" | "0" | "no" | "off" | "f" | "n" => false,
                _ => {
                    self.errors.push(ValidationError::new(
                        "bool_parsing",
                        Self::loc(name),
                        "Input should be a valid boolean, unable to interpret input",
                        json!(raw),
                    ));
                    default
                }
            },
        }
    }

    fn required(&mut self, name: &str) -> Option<String> {
        let v = self.get(name);
        if v.is_none() {
            self.errors.push(ValidationError::new("missing", Self::loc(name), "Field required", Value::Null));
        }
        v
    }

    fn check_enum(&mut self, name: &str, value: &str, allowed: &[&str]) -> bool {
        if allowed.contains(&value) {
            return true;
        }
        let expected = fastapi::enum_expected(allowed);
        self.errors.push(
            ValidationError::new("enum", Self::loc(name), format!("Input should be {expected}"), json!(value))
                .with_ctx(json!({ "expected": expected })),
        );
        false
    }

    fn finish(self) -> Result<(), Response> {
        if self.errors.is_empty() { Ok(()) } else { Err(fastapi::validation(&self.errors)) }
    }
}

async fn rename(
    State(shared): State<Arc<Shared>>,
    Path(eid): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(rename_inner(&shared, &eid, query.as_deref(), &headers, &body))
}

fn rename_inner(shared: &Shared, eid: &str, query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Answer {
    check_auth(shared, headers)?;
    let mut q = QueryParams::new(query);
    let time_zone = q.bool("time_zone", false);
    q.finish()?;
    let obj = fastapi::parse_body(body)?;
    let mut f = Fields::new(&obj);
    let name = f.string("name");
    f.finish()?;
    let mut caps = shared.teleport.captures.lock().unwrap();
    let c = caps.iter_mut().rev().find(|c| c.eid == eid).ok_or_else(not_found)?;
    c.name = name.unwrap_or_default();
    Ok(fastapi::json_response(200, &c.output(None, &View::new(headers, time_zone))))
}

async fn delete_capture(State(shared): State<Arc<Shared>>, Path(eid): Path<String>, headers: HeaderMap) -> Response {
    answer(delete_inner(&shared, &eid, &headers))
}

fn delete_inner(shared: &Shared, eid: &str, headers: &HeaderMap) -> Answer {
    check_auth(shared, headers)?;
    let removed = {
        let mut caps = shared.teleport.captures.lock().unwrap();
        let i = caps.iter().rposition(|c| c.eid == eid).ok_or_else(not_found)?;
        caps.remove(i)
    };
    if removed.uploaded.is_none() {
        shared.store.abort(&removed.upload_id);
    }
    Ok(fastapi::json_response(204, &Value::Null).map(|_| axum::body::Body::empty()))
}

/// Summary of a capture for the admin API.
pub fn captures_summary(shared: &Shared) -> Value {
    let caps = shared.teleport.captures.lock().unwrap();
    Value::Array(
        caps.iter()
            .map(|c| {
                let mut v = c.output(None, &View { origin: String::new(), time_zone: false });
                v["share_id"] = json!(c.uploaded.as_ref().map(|u| u.sid.clone()));
                v["bytesize"] = json!(c.bytesize);
                v["num_parts"] = json!(c.num_parts);
                v["chunk_size"] = json!(c.chunk_size);
                v["input_data_format"] = json!(c.input_data_format);
                v["upload_id"] = json!(c.upload_id);
                v
            })
            .collect(),
    )
}

/// Values of the metadata `profiles` parameter.
pub const PROFILES: [&str; 4] = ["ply", "sogs-sh0", "fragment-chunk1", "fragment-float16"];
/// Values of the metadata `quality` parameter.
pub const QUALITIES: [&str; 2] = ["sd", "hd"];

/// One downloadable model file of a READY capture (a `SegmentModel` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFile {
    /// File name, the last segment of its URL.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Level of detail (with `lod=true`): 0 is the coarsest; each level's parent is the one
    /// before.
    pub level: Option<u32>,
}

/// The files a metadata call lists for one profile. `base` is
/// [`crate::Config::teleport_model_size`], the size of the hd `.ply`; sd files are half as big,
/// `sogs-sh0` archives a third, `fragment-*` files half. With `lod` there are three levels.
pub fn model_files(base: u64, profile: &str, quality: &str, lod: bool) -> Vec<ModelFile> {
    let q = if quality == "hd" { base } else { base / 2 };
    let (size, ext) = match profile {
        "ply" => (q, "ply"),
        "sogs-sh0" => (q / 3, "zip"),
        _ => (q / 2, "bin"),
    };
    let size = size.max(1);
    if !lod {
        return vec![ModelFile { name: format!("{profile}-{quality}.{ext}"), size, level: None }];
    }
    [size / 4, size / 2, size]
        .iter()
        .enumerate()
        .map(|(i, s)| ModelFile {
            name: format!("{profile}-{quality}-lod{i}.{ext}"),
            size: (*s).max(1),
            level: Some(i as u32),
        })
        .collect()
}

/// The deterministic bytes of a model file: the same `sid` and `name` give the same bytes.
pub fn model_bytes(sid: &str, name: &str, size: u64) -> Vec<u8> {
    // FNV-1a of "sid/name" seeds an xorshift64 generator.
    let mut state: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sid.bytes().chain([b'/']).chain(name.bytes()) {
        state ^= b as u64;
        state = state.wrapping_mul(0x0100_0000_01b3);
    }
    state |= 1;
    let mut out = Vec::with_capacity(size as usize + 8);
    while (out.len() as u64) < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(size as usize);
    out
}

/// The model file `name` of the capture shared as `sid`, whatever its state (for tests: the
/// bytes a download must end with). `None` for an unknown sid or file name.
pub fn model_file(shared: &Shared, sid: &str, name: &str) -> Option<Vec<u8>> {
    let known =
        shared.teleport.captures.lock().unwrap().iter().any(|c| c.uploaded.as_ref().is_some_and(|u| u.sid == sid));
    if !known {
        return None;
    }
    find_model(shared.config.teleport_model_size, name).map(|f| model_bytes(sid, name, f.size))
}

fn find_model(base: u64, name: &str) -> Option<ModelFile> {
    PROFILES
        .iter()
        .flat_map(|p| {
            QUALITIES.iter().flat_map(move |q| [false, true].into_iter().flat_map(move |l| model_files(base, p, q, l)))
        })
        .find(|f| f.name == name)
}

/// `(eid, name)` of the READY capture shared as `sid`; 404 otherwise ("a 404 means not ready yet").
fn ready_capture(shared: &Shared, sid: &str) -> Result<(String, String), Response> {
    let caps = shared.teleport.captures.lock().unwrap();
    let c = caps
        .iter()
        .find(|c| c.uploaded.as_ref().is_some_and(|u| u.sid == sid))
        .ok_or_else(|| fastapi::detail(404, "Capture not found"))?;
    if c.ready_sid().is_none() {
        return Err(fastapi::detail(404, "Capture is not ready"));
    }
    Ok((c.eid.clone(), c.name.clone()))
}

async fn metadata(
    State(shared): State<Arc<Shared>>,
    Path(sid): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    answer(metadata_inner(&shared, &sid, query.as_deref(), &headers))
}

/// `GET /share/{sid}/metadata?profiles=ply&quality=hd&lod=false&use_cdn=true` → CaptureMetadata.
/// `profiles` may be repeated or comma-separated (default `ply`); `quality` is required.
fn metadata_inner(shared: &Shared, sid: &str, query: Option<&str>, headers: &HeaderMap) -> Answer {
    check_auth(shared, headers)?;
    let mut q = QueryParams::new(query);
    let mut profiles: Vec<String> = q
        .all("profiles")
        .iter()
        .flat_map(|p| p.split(',').map(|s| s.trim().to_string()))
        .filter(|p| !p.is_empty())
        .collect();
    if profiles.is_empty() {
        profiles.push("ply".into());
    }
    let profiles: Vec<String> = profiles.into_iter().filter(|p| q.check_enum("profiles", p, &PROFILES)).collect();
    let quality = q.required("quality").filter(|v| q.check_enum("quality", v, &QUALITIES));
    let lod = q.bool("lod", false);
    let use_cdn = q.bool("use_cdn", true);
    q.finish()?;
    let quality = quality.unwrap_or_default();
    let (eid, name) = ready_capture(shared, sid)?;
    let o = origin(headers);
    let mut models = Vec::new();
    for p in &profiles {
        for f in model_files(shared.config.teleport_model_size, p, &quality, lod) {
            let url =
                if use_cdn { format!("{o}/cdn/{sid}/{}", f.name) } else { format!("{o}/share/{sid}/files/{}", f.name) };
            let (id, parent, aabb, range) = match f.level {
                None => (Value::Null, Value::Null, Value::Null, Value::Null),
                Some(l) => (
                    json!(format!("lod{l}")),
                    if l == 0 { Value::Null } else { json!(format!("lod{}", l - 1)) },
                    json!({ "min": [-1.0, -1.0, -1.0], "max": [1.0, 1.0, 1.0] }),
                    json!([l as f64 / 3.0, (l + 1) as f64 / 3.0]),
                ),
            };
            models.push(json!({ "url": url, "size": f.size, "id": id, "aabb": aabb, "resolution_range": range, "parent": parent }));
        }
    }
    let model_urls: Vec<Value> = models.iter().map(|m| m["url"].clone()).collect();
    let cameras: Vec<Value> = (0..3)
        .map(|i| {
            let mut m = vec![0.0f64; 16];
            for k in 0..4 {
                m[k * 5] = 1.0;
            }
            m[3] = i as f64 * 0.5;
            json!({ "matrix": m })
        })
        .collect();
    Ok(fastapi::json_response(
        200,
        &json!({
            "eid": eid,
            "sid": sid,
            "name": name,
            "segmented_capture_eid": null,
            "profile_name": profiles[0],
            "lod": lod,
            "hdr_mode": null,
            "nominal_ev": 0,
            "tmo_parameters": null,
            "model_urls": model_urls,
            "cameras": cameras,
            "models": models,
            "video_trajectory": null,
            "reposition_data": null,
        }),
    ))
}

/// A model file (`/cdn/{sid}/{name}` or `/share/{sid}/files/{name}`), without auth as a CDN
/// serves it. `Range: bytes=a-b`, `a-` and `-n` answer 206 with `Content-Range`; a range
/// starting past the end answers 416 `Content-Range: bytes */size`; other forms are ignored
/// (200 with the whole file). The `model_cut_*` faults drop the connection mid-body.
async fn model_download(
    State(shared): State<Arc<Shared>>,
    Path((sid, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    use axum::http::{HeaderValue, StatusCode, header};
    let not_found = || (StatusCode::NOT_FOUND, "Not Found").into_response();
    if ready_capture(&shared, &sid).is_err() {
        return not_found();
    }
    let Some(file) = find_model(shared.config.teleport_model_size, &name) else { return not_found() };
    let size = file.size;
    let etag = {
        use sha2::Digest;
        format!("\"{}\"", hex::encode(&sha2::Sha256::digest(format!("{sid}/{name}/{size}"))[..16]))
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(|v| parse_range(v, size));
    let (status, start, end) = match range {
        Some(Ok((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b),
        Some(Err(())) => {
            let mut r = (StatusCode::RANGE_NOT_SATISFIABLE, "").into_response();
            r.headers_mut().insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{size}")).unwrap());
            return r;
        }
        None => (StatusCode::OK, 0, size),
    };
    let data = model_bytes(&sid, &name, size);
    let body = Bytes::copy_from_slice(&data[start as usize..end as usize]);
    let cut = shared.faults.lock().unwrap().on_model_download();
    let len = body.len() as u64;
    let body = match cut {
        Some(n) if n < len => {
            tracing::debug!(%sid, %name, n, "fault: model download cut");
            let head = body.slice(..n as usize);
            let stream =
                futures::stream::iter([Ok::<Bytes, std::io::Error>(head)]).chain(futures::stream::once(async {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "fault: model download cut"))
                }));
            axum::body::Body::from_stream(stream)
        }
        _ => axum::body::Body::from(body),
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, HeaderValue::from_str(&etag).unwrap());
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)).unwrap());
    }
    r
}

/// A single `bytes=` range as `[start, end)`: `None` when absent or not understood (the whole
/// file is sent), `Err` when unsatisfiable.
pub fn parse_range(header: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || size == 0 {
            return Some(Err(()));
        }
        return Some(Ok((size.saturating_sub(n), size)));
    }
    let start: u64 = a.parse().ok()?;
    let end = if b.is_empty() { size } else { b.parse::<u64>().ok()?.saturating_add(1).min(size) };
    if start >= size {
        return Some(Err(()));
    }
    if end <= start {
        return None;
    }
    Some(Ok((start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some(Ok((0, 100))));
        assert_eq!(parse_range("bytes=500-", 1000), Some(Ok((500, 1000))));
        assert_eq!(parse_range("bytes=-100", 1000), Some(Ok((900, 1000))));
        assert_eq!(parse_range("bytes=900-5000", 1000), Some(Ok((900, 1000))));
        assert_eq!(parse_range("bytes=1000-", 1000), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
        assert_eq!(parse_range("bytes=9-3", 1000), None);
    }

    #[test]
    fn models_are_deterministic_and_sized() {
        let files = model_files(3 * 1024 * 1024, "ply", "hd", true);
        assert_eq!(files.len(), 3);
        assert_eq!(files[2].size, 3 * 1024 * 1024);
        let a = model_bytes("sid1", "ply-hd.ply", 1000);
        assert_eq!(a, model_bytes("sid1", "ply-hd.ply", 1000));
        assert_ne!(a, model_bytes("sid2", "ply-hd.ply", 1000));
        assert_eq!(a.len(), 1000);
        assert_eq!(find_model(3000, "sogs-sh0-sd.zip").map(|f| f.size), Some(500));
        assert!(find_model(3000, "../etc/passwd").is_none());
    }
}
