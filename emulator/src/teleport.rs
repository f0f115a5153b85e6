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
use axum::response::Response;
use axum::routing::{get, post, put};
use chrono::{NaiveDateTime, Utc};
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

/// Teleport's captures, in creation order.
#[derive(Default)]
pub struct TeleportState {
    captures: Mutex<Vec<Capture>>,
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
    uploaded: Option<Uploaded>,
}

#[derive(Debug, Clone)]
struct Uploaded {
    at: NaiveDateTime,
    instant: Instant,
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

fn timestamp(t: &NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

fn new_eid() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..12).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

impl Capture {
    /// `(state, error_reason, state_description, error_reason_slug)` now.
    fn state(&self) -> (&'static str, Option<String>, Option<String>, Option<String>) {
        let Some(up) = &self.uploaded else {
            return ("CREATED", None, None, None);
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

    /// The CaptureOutput schema, `state` forced when given.
    fn output(&self, force_state: Option<&str>) -> Value {
        let (state, error_reason, description, slug) = match force_state {
            Some(s) => (s, None, None, None),
            None => {
                let (s, r, d, g) = self.state();
                (s, r, d, g)
            }
        };
        json!({
            "eid": self.eid,
            "sid": null,
            "name": self.name,
            "created": timestamp(&self.created),
            "uploaded": self.uploaded.as_ref().map(|u| timestamp(&u.at)),
            "state": state,
            "error_reason": error_reason,
            "state_description": description,
            "error_reason_slug": slug,
            "preview_urls": {},
            "preview_url": null,
            "viewer_url": null,
            "share_url": null,
            "share_link": null,
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
        .fallback(|| async { fastapi::detail(404, "Not Found") })
        .method_not_allowed_fallback(|| async { fastapi::detail(405, "Method Not Allowed") })
        .layer(axum::middleware::map_response(fastapi::ensure_json))
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
        let c = caps.iter().find(|c| c.eid == eid).ok_or_else(not_found)?;
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
    let cap = caps.iter_mut().find(|c| c.eid == eid).ok_or_else(not_found)?;
    let unquoted: Vec<(u32, String)> =
        parts.iter().map(|(n, e)| (*n, e.trim().trim_matches('"').to_string())).collect();
    if let Some(up) = &cap.uploaded {
        if up.parts == unquoted {
            return Ok(fastapi::json_response(200, &cap.output(None)));
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
        parts: unquoted,
        processing: shared.config.processing.clone(),
        object,
    });
    tracing::debug!(%eid, "teleport: capture uploaded");
    Ok(fastapi::json_response(200, &c.output(Some("UPLOADED"))))
}

async fn list(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    answer(list_inner(&shared, query.as_deref(), &headers))
}

fn list_inner(shared: &Shared, query: Option<&str>, headers: &HeaderMap) -> Answer {
    check_auth(shared, headers)?;
    let q = crate::sigv4::parse_query(query.unwrap_or(""));
    let get = |n: &str| q.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut errors = Vec::new();
    let mut int = |name: &str, default: i64| match get(name) {
        None => default,
        Some(raw) => match raw.parse::<i64>() {
            Ok(v) => v,
            Err(_) => {
                errors.push(ValidationError::new(
                    "int_parsing",
                    vec![json!("query"), json!(name)],
                    "Input should be a valid integer, unable to parse string as an integer",
                    json!(raw),
                ));
                default
            }
        },
    };
    let limit = int("limit", 25);
    let offset = int("offset", 0);
    if !errors.is_empty() {
        return Err(fastapi::validation(&errors));
    }
    let caps = shared.teleport.captures.lock().unwrap();
    let out: Vec<Value> =
        caps.iter().rev().skip(offset.max(0) as usize).take(limit.max(0) as usize).map(|c| c.output(None)).collect();
    Ok(fastapi::json_response(200, &Value::Array(out)))
}

async fn rename(
    State(shared): State<Arc<Shared>>,
    Path(eid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(rename_inner(&shared, &eid, &headers, &body))
}

fn rename_inner(shared: &Shared, eid: &str, headers: &HeaderMap, body: &[u8]) -> Answer {
    check_auth(shared, headers)?;
    let obj = fastapi::parse_body(body)?;
    let mut f = Fields::new(&obj);
    let name = f.string("name");
    f.finish()?;
    let mut caps = shared.teleport.captures.lock().unwrap();
    let c = caps.iter_mut().find(|c| c.eid == eid).ok_or_else(not_found)?;
    c.name = name.unwrap_or_default();
    Ok(fastapi::json_response(200, &c.output(None)))
}

async fn delete_capture(State(shared): State<Arc<Shared>>, Path(eid): Path<String>, headers: HeaderMap) -> Response {
    answer(delete_inner(&shared, &eid, &headers))
}

fn delete_inner(shared: &Shared, eid: &str, headers: &HeaderMap) -> Answer {
    check_auth(shared, headers)?;
    let removed = {
        let mut caps = shared.teleport.captures.lock().unwrap();
        let i = caps.iter().position(|c| c.eid == eid).ok_or_else(not_found)?;
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
                let mut v = c.output(None);
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
