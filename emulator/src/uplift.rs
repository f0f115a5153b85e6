//! Uplift's capture reservation (`POST /v1/captures`), on the API port, and the S3 POST form
//! it hands out.
//!
//! * `POST /v1/captures` {athlete_id, session_group_id, camera_configuration
//!   {camera_setup_selection, camera_orientation, extra keys}, movement_attributes {activity,
//!   movement, extra keys}, file_name, capture_time?} → 200 {session_id, session_group_id,
//!   upload_url, upload_fields, upload_expires_at, status: "NEW"}.
//! * `upload_url` is the S3 store's POST endpoint (`{s3}/uploads`); `upload_fields` are, in
//!   this order, `key` (`uplift/{session_id}/{file_name}`), `Content-Type` (`video/quicktime`),
//!   `x-amz-algorithm`, `x-amz-credential`, `x-amz-date`, `policy`, `x-amz-signature`. The
//!   policy allows exactly that key and content type, 1 byte to 5 GiB, until
//!   `upload_expires_at` ([`UpliftConfig::upload_ttl`], 30 minutes as documented). The object
//!   is reported with provider `uplift` and id = the session id.
//! * `GET /v1/captures/{captureId}` (captureId = the reservation's `session_id`) →
//!   {session_id, athlete_id, activity, movement, status, error, capture_time, fps_detected},
//!   extra movement attributes as more top-level fields (docs.uplift.ai, "Get capture").
//!   `status` is `awaiting_upload` until the object is in the store, then `processing` for
//!   [`crate::Processing::delay_ms`] from when that was first seen, then `completed` (with
//!   `fps_detected`), or `error` with `error` = [`crate::Processing::fail_reason`]. An unknown
//!   id is a 404 `{"error": "NotFound", "message": "Capture not found."}`.
//! * `GET /v1/captures?athlete_id&source&status&activity&movement&limit&offset` → {captures:
//!   [...], total_count, offset, limit} ("List captures"): filters by equality (`source` is
//!   `api` for every capture made here), newest first, `limit` 1..500 (default 100), `offset` ≥ 0;
//!   anything else is a 400.
//! * `GET /_emulator/uplift/captures` (no auth): every reservation, with `status` `UPLOADED`
//!   once its object is in the store.
//!
//! Errors are the documented `{"error": "...", "message": "..."}` (400 `BadRequest`, 401
//! `Unauthorized`, 404 `NotFound`, 429 `TooManyRequests`); a validation error also names the
//! `field` (the docs show no field; an addition). Validation, each a 400: the body is
//! a JSON object; `athlete_id` and `session_group_id` are present UUIDs; `camera_configuration`
//! is an object with string `camera_setup_selection` and `camera_orientation`;
//! `movement_attributes` is an object with string `activity` and `movement`; `file_name` is
//! present and not blank after trimming, contains no `/` or `\`, ends in `.mov`
//! (case-insensitive) and has at most 255 characters; `capture_time`, when present, is an ISO
//! 8601 / RFC 3339 time not in the future; a session group already used by another athlete is
//! refused. A missing or wrong token is a 401 `{"message": "Unauthorized"}`; the API faults
//! (`unauthorized_api_call_nth`, the 429 throttle) apply as to every provider API call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Map, Value, json};

use crate::faults::ApiFault;
use crate::s3::post::{MAX_POST_SIZE, PostPolicy, policy_time};
use crate::state::Shared;
use crate::{BUCKET, auth};

/// The provider name in [`crate::ObjectInfo::provider`].
pub const PROVIDER: &str = "uplift";
/// The `Content-Type` the upload form fixes.
pub const CONTENT_TYPE: &str = "video/quicktime";
/// Longest `file_name`.
pub const MAX_FILE_NAME: usize = 255;

/// Uplift's knobs ([`crate::Config::uplift`]).
#[derive(Clone, Debug)]
pub struct UpliftConfig {
    /// Lifetime of an upload form: `upload_expires_at` and the policy's `expiration` (default
    /// 30 minutes, as documented).
    pub upload_ttl: Duration,
    /// The first N reservations come back already expired (`upload_expires_at` and the
    /// policy's expiration one second in the past): a client must reserve again.
    pub expired_reservations: u32,
    /// The first N reservations announce the usual `upload_expires_at` but carry a policy that
    /// has already expired (a clock-skew stand-in): their POST answers 403 "Invalid according
    /// to Policy: Policy expired.".
    pub expired_policies: u32,
    /// Every form carries a wrong `x-amz-signature`: its POST answers 403
    /// `SignatureDoesNotMatch`.
    pub bad_signature: bool,
}

impl Default for UpliftConfig {
    fn default() -> Self {
        UpliftConfig {
            upload_ttl: Duration::from_secs(30 * 60),
            expired_reservations: 0,
            expired_policies: 0,
            bad_signature: false,
        }
    }
}

/// Uplift's reservations, in order.
#[derive(Default)]
pub struct UpliftState {
    captures: Mutex<Vec<Capture>>,
}

/// One reservation, as listed by the admin API.
#[derive(Clone, Debug, Serialize)]
pub struct Capture {
    /// When its object was first seen in the store (the processing timeline starts there).
    #[serde(skip)]
    pub stored_at: Option<std::time::Instant>,
    pub session_id: String,
    pub session_group_id: String,
    pub athlete_id: String,
    pub file_name: String,
    pub capture_time: Option<String>,
    pub camera_configuration: Value,
    pub movement_attributes: Value,
    /// Object key of the upload.
    pub key: String,
    pub upload_expires_at: String,
    /// `NEW`, or `UPLOADED` once the object is in the store.
    pub status: String,
}

/// Uplift's routes (no fallback: merged with the other API routers).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/captures", post(reserve).get(list_captures))
        .route("/v1/captures/{capture_id}", get(get_capture))
        .route("/_emulator/uplift/captures", get(list))
        .with_state(shared)
}

/// Every reservation so far.
pub fn captures(shared: &Shared) -> Vec<Capture> {
    let mut caps = shared.uplift.captures.lock().unwrap().clone();
    for c in &mut caps {
        if shared.store.has_object(&c.key) {
            c.status = "UPLOADED".into();
        }
    }
    caps
}

async fn list(State(shared): State<Arc<Shared>>) -> Response {
    json(200, &json!(captures(&shared)))
}

fn json(status: u16, body: &impl Serialize) -> Response {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    let mut resp = (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), text).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The documented error shape, `{error, message}`.
fn error(status: u16, error: &str, message: impl Into<String>) -> Response {
    json(status, &json!({ "error": error, "message": message.into() }))
}

fn bad_request(field: &str, message: impl Into<String>) -> Response {
    json(400, &json!({ "error": "BadRequest", "message": message.into(), "field": field }))
}

/// Counts the API call (faults) and checks the token.
fn gate(shared: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let fault = shared.faults.lock().unwrap().on_api_call();
    if fault == ApiFault::Throttle {
        let mut r = error(429, "TooManyRequests", "Too Many Requests");
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Err(r);
    }
    auth::check_token(shared, headers, fault == ApiFault::Unauthorized).map_err(|_| {
        let mut r = error(401, "Unauthorized", "Unauthorized");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    })
}

impl Capture {
    /// The capture as "Get capture" shows it, at `now`.
    fn view(&self, processing: &crate::Processing) -> Value {
        let (status, error, fps) = match self.stored_at {
            None => ("awaiting_upload", Value::Null, Value::Null),
            Some(t) if (t.elapsed().as_millis() as u64) < processing.delay_ms => {
                ("processing", Value::Null, Value::Null)
            }
            Some(_) => match &processing.fail_reason {
                None => ("completed", Value::Null, json!(240.0)),
                Some(reason) => ("error", json!(reason), Value::Null),
            },
        };
        let mut v = json!({
            "session_id": self.session_id,
            "athlete_id": self.athlete_id,
            "activity": self.movement_attributes["activity"],
            "movement": self.movement_attributes["movement"],
            "status": status,
            "error": error,
            "capture_time": self.capture_time,
            "fps_detected": fps,
        });
        if let (Value::Object(extra), Value::Object(out)) = (&self.movement_attributes, &mut v) {
            for (k, x) in extra {
                out.entry(k.clone()).or_insert_with(|| x.clone());
            }
        }
        v
    }
}

/// Marks the captures whose object has arrived (their processing starts now).
fn note_stored(shared: &Shared) {
    let mut caps = shared.uplift.captures.lock().unwrap();
    for c in caps.iter_mut().filter(|c| c.stored_at.is_none()) {
        if shared.store.has_object(&c.key) {
            c.stored_at = Some(std::time::Instant::now());
        }
    }
}

async fn get_capture(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    (|| -> Result<Response, Response> {
        gate(&shared, &headers)?;
        note_stored(&shared);
        let caps = shared.uplift.captures.lock().unwrap();
        let c = caps.iter().find(|c| c.session_id == id).ok_or_else(|| error(404, "NotFound", "Capture not found."))?;
        Ok(json(200, &c.view(&shared.config.processing)))
    })()
    .unwrap_or_else(|r| r)
}

async fn list_captures(
    State(shared): State<Arc<Shared>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
) -> Response {
    (|| -> Result<Response, Response> {
        gate(&shared, &headers)?;
        let q = crate::sigv4::parse_query(query.as_deref().unwrap_or(""));
        let get = |k: &str| q.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let int = |k: &str, default: i64, range: std::ops::RangeInclusive<i64>| -> Result<i64, Response> {
            match get(k) {
                None => Ok(default),
                Some(v) => match v.parse::<i64>() {
                    Ok(n) if range.contains(&n) => Ok(n),
                    _ => {
                        Err(bad_request(k, format!("{k} must be an integer from {} to {}", range.start(), range.end())))
                    }
                },
            }
        };
        let limit = int("limit", 100, 1..=500)?;
        let offset = int("offset", 0, 0..=i64::MAX)?;
        if let Some(a) = get("athlete_id")
            && uuid::Uuid::try_parse(&a).is_err()
        {
            return Err(bad_request("athlete_id", "athlete_id must be a UUID"));
        }
        note_stored(&shared);
        let caps = shared.uplift.captures.lock().unwrap();
        let views: Vec<Value> = caps
            .iter()
            .rev()
            .map(|c| c.view(&shared.config.processing))
            .filter(|v| {
                ["athlete_id", "status", "activity", "movement"]
                    .iter()
                    .all(|k| get(k).is_none_or(|want| v[*k].as_str() == Some(want.as_str())))
                    && get("source").is_none_or(|s| s == "api")
            })
            .collect();
        let total = views.len();
        let page: Vec<Value> = views.into_iter().skip(offset as usize).take(limit as usize).collect();
        Ok(json(200, &json!({ "captures": page, "total_count": total, "offset": offset, "limit": limit })))
    })()
    .unwrap_or_else(|r| r)
}

/// The response; `upload_fields` keeps its order.
#[derive(Serialize)]
struct Reservation<'a> {
    session_id: &'a str,
    session_group_id: &'a str,
    upload_url: &'a str,
    upload_fields: Ordered<'a>,
    upload_expires_at: &'a str,
    status: &'static str,
}

struct Ordered<'a>(&'a [(String, String)]);

impl Serialize for Ordered<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

async fn reserve(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    reserve_inner(&shared, &headers, &body).unwrap_or_else(|r| r)
}

fn uuid_field(obj: &Map<String, Value>, field: &str) -> Result<String, Response> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(bad_request(field, format!("{field} is required"))),
        Some(Value::String(s)) => match uuid::Uuid::try_parse(s) {
            Ok(u) if s.len() == 36 => Ok(u.hyphenated().to_string()),
            _ => Err(bad_request(field, format!("{field} must be a UUID"))),
        },
        Some(_) => Err(bad_request(field, format!("{field} must be a UUID string"))),
    }
}

/// An object with required string members; extra members must be scalars.
fn object_field(obj: &Map<String, Value>, field: &str, required: &[&str]) -> Result<Value, Response> {
    let Some(Value::Object(m)) = obj.get(field) else {
        return Err(bad_request(field, format!("{field} is required and must be an object")));
    };
    for r in required {
        match m.get(*r) {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            _ => return Err(bad_request(&format!("{field}.{r}"), format!("{field}.{r} is required"))),
        }
    }
    for (k, v) in m {
        if v.is_object() || v.is_array() {
            return Err(bad_request(
                &format!("{field}.{k}"),
                format!("{field}.{k} must be a string, number or boolean"),
            ));
        }
    }
    Ok(Value::Object(m.clone()))
}

fn reserve_inner(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Response, Response> {
    gate(shared, headers)?;
    let obj = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => m,
        _ => return Err(bad_request("body", "the request body must be a JSON object")),
    };
    let athlete_id = uuid_field(&obj, "athlete_id")?;
    let session_group_id = uuid_field(&obj, "session_group_id")?;
    let camera = object_field(&obj, "camera_configuration", &["camera_setup_selection", "camera_orientation"])?;
    let movement = object_field(&obj, "movement_attributes", &["activity", "movement"])?;
    let file_name = match obj.get("file_name") {
        None | Some(Value::Null) => return Err(bad_request("file_name", "file_name is required")),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(_) => return Err(bad_request("file_name", "file_name must be a string")),
    };
    if file_name.is_empty() {
        return Err(bad_request("file_name", "file_name must not be blank"));
    }
    if file_name.contains('/') || file_name.contains('\\') {
        return Err(bad_request("file_name", "file_name must not contain / or \\"));
    }
    if !file_name.to_ascii_lowercase().ends_with(".mov") {
        return Err(bad_request("file_name", "file_name must use a .mov extension"));
    }
    if file_name.chars().count() > MAX_FILE_NAME {
        return Err(bad_request("file_name", format!("file_name must be at most {MAX_FILE_NAME} characters")));
    }
    let now = Utc::now();
    let capture_time = match obj.get("capture_time") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let t = DateTime::parse_from_rfc3339(s)
                .map_err(|_| bad_request("capture_time", "capture_time must be an ISO 8601 date-time"))?;
            if t.with_timezone(&Utc) > now {
                return Err(bad_request("capture_time", "capture_time must not be in the future"));
            }
            Some(s.clone())
        }
        Some(_) => return Err(bad_request("capture_time", "capture_time must be an ISO 8601 date-time string")),
    };

    let cfg = &shared.config.uplift;
    let mut caps = shared.uplift.captures.lock().unwrap();
    if caps.iter().any(|c| c.session_group_id == session_group_id && c.athlete_id != athlete_id) {
        return Err(bad_request("session_group_id", "session_group_id belongs to another athlete"));
    }
    let n = caps.len() as u32 + 1;
    let session_id = uuid::Uuid::new_v4().to_string();
    let key = format!("uplift/{session_id}/{file_name}");
    let mut expires_at = now + chrono::Duration::from_std(cfg.upload_ttl).unwrap_or(chrono::Duration::minutes(30));
    let mut policy_expiration = expires_at;
    if n <= cfg.expired_reservations {
        expires_at = now - chrono::Duration::seconds(1);
        policy_expiration = expires_at;
    } else if n <= cfg.expired_reservations + cfg.expired_policies {
        policy_expiration = now - chrono::Duration::seconds(1);
    }
    let mut form = shared.store.presign_post(
        &PostPolicy {
            key: key.clone(),
            expiration: policy_expiration,
            content_type: Some(CONTENT_TYPE.into()),
            content_length_range: Some((1, MAX_POST_SIZE)),
        },
        PROVIDER,
        &session_id,
    );
    if cfg.bad_signature
        && let Some((_, sig)) = form.fields.iter_mut().find(|(k, _)| k == "x-amz-signature")
    {
        let flipped = if sig.starts_with('0') { "1" } else { "0" };
        sig.replace_range(0..1, flipped);
    }
    let expires_text = policy_time(expires_at);
    caps.push(Capture {
        stored_at: None,
        session_id: session_id.clone(),
        session_group_id: session_group_id.clone(),
        athlete_id,
        file_name,
        capture_time,
        camera_configuration: camera,
        movement_attributes: movement,
        key,
        upload_expires_at: expires_text.clone(),
        status: "NEW".into(),
    });
    tracing::debug!(%session_id, bucket = BUCKET, "uplift: capture reserved");
    Ok(json(
        200,
        &Reservation {
            session_id: &session_id,
            session_group_id: &session_group_id,
            upload_url: &form.url,
            upload_fields: Ordered(&form.fields),
            upload_expires_at: &expires_text,
            status: "NEW",
        },
    ))
}
