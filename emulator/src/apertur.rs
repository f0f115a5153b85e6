//! Apertur's upload-session API (`/api/v1`), on the API port.
//!
//! From the seed (`seeds/apertur-upload-sessions.txt`) and the official Python SDK
//! (`apertur-sdk` 0.2.0), see `PROVIDERS.md`:
//!
//! * `POST /api/v1/upload-sessions` {destination_ids?, long_polling?, tags?, expires_in_hours?
//!   1..168 XOR expires_at?, max_images?, allowed_mime_types? ⊆ [`MIME_TYPES`],
//!   max_image_dimension?, password? 4..128} → 201 {id, uuid, upload_url, qr_url, destinations
//!   [{id, type, name}], long_polling, expires_at, password_protected, env}. Without
//!   `destination_ids` the key's default destinations ([`DEFAULT_DESTINATIONS`]) are used; an
//!   unknown id answers 400. `max_images` above the plan's limit
//!   ([`AperturConfig::plan_max_images`]) is lowered to it.
//! * `GET /api/v1/upload/{uuid}/session` → {id, status, expiresAt, tags, imagesPerSession,
//!   imagesCount, effectiveMaxImages, effectiveAllowedMimeTypes, effectiveMaxImageDimension,
//!   password_protected, longPolling}; `PATCH /api/v1/upload-sessions/{uuid}` {expires_at,
//!   max_images, allowed_mime_types, max_image_dimension, max_image_size_mb, password (null
//!   removes it)} → the same.
//! * `POST /api/v1/upload/{uuid}/images`: `multipart/form-data`, the image in field `file`
//!   (filename + MIME type), optional text field `source`; header `x-session-password` for a
//!   password-protected session → 201 {id, filename, size_bytes, destinations, long_polling}.
//!   A body without `Content-Length` answers 411. Refusals: 403 `PASSWORD_REQUIRED` /
//!   `INVALID_PASSWORD` (decision: 403, not 401, so that a client does not take a wrong session
//!   password for an expired token), 410 `SESSION_EXPIRED`, 400 `MIME_TYPE_NOT_ALLOWED`, 400
//!   `MAX_IMAGES_REACHED`, 400 `FILE_REQUIRED`, 429 `RATE_LIMIT` with `Retry-After` for the
//!   calls numbered in [`AperturConfig::throttle_uploads_nth`]. The stored object's key is
//!   [`object_key`], provider `apertur`, id the image id. `max_image_dimension` is recorded but
//!   not checked (the emulator does not decode images).
//! * `GET /api/v1/upload-sessions/{uuid}/delivery-status` → the seed's shape {session_id,
//!   images[{image_id, image_index, deliveries[{destination_id, destination_name,
//!   destination_type, status, delivered_at?, attempts, next_retry_at?, last_error?}]}]}, or,
//!   with [`DeliveryShape::Sdk`] or a `pollFrom` query, the SDK's shape {status, files
//!   [{record_id, filename, size_bytes, destinations[{destination_id, type, name, status,
//!   attempts, last_error}]}], lastChanged}, its destination statuses in the SDK's words
//!   (`pending`, `retrying` between failed attempts, `sent`, `failed`). With `pollFrom=<ISO time>` the answer is held
//!   until something changed after that time, at most [`AperturConfig::long_poll_max_ms`].
//! * Long polling (sessions created with `long_polling`): `GET .../poll` → {images[{id,
//!   filename, size_bytes, mime_type, source, created_at}]} (not yet acknowledged);
//!   `GET .../images/{image_id}` → the bytes; `POST .../images/{image_id}/ack` → {status:
//!   "acknowledged", id}. Acks and downloads are counted per image ([`AperturState::ack_counts`]).
//! * Lists (the SDK's): `GET /api/v1/sessions?page&pageSize` and `GET /api/v1/uploads?page&pageSize`
//!   → {data, total, page, pageSize, totalPages} (page from 1, pageSize 1..=100, default 20),
//!   `GET /api/v1/sessions/recent?limit` and `GET /api/v1/uploads/recent?limit` → a list (limit
//!   1..=100, default 10), newest first; rows are the SDK's `SessionRow` and `UploadRow`.
//!   `POST /api/v1/upload/{uuid}/verify-password` {password} → {valid}.
//! * Destinations: `GET/POST /api/v1/projects/{projectId}/destinations`, `PATCH/DELETE
//!   .../destinations/{destId}`, `POST .../destinations/{destId}/test`. Secrets in `config`
//!   are masked in answers.
//!
//! Deliveries are simulated from the upload time `T0` and the step `s`
//! ([`AperturConfig::delivery_step_ms`]): a working destination is `pending` until `T0 + s`,
//! then `delivered`; a destination in [`AperturConfig::failing_destinations`] fails attempt `k`
//! at `T0 + k·s` and is `failed` after `1 + delivery_retries` attempts (`pending` with
//! `next_retry_at` before).
//!
//! Every call needs `Authorization: Bearer <token>` (401 `{message, code}` otherwise). When
//! [`AperturConfig::signing_secret`] is set, every request but the multipart uploads must carry
//! `X-Aptr-Timestamp` (unix seconds, ±300 s) and `X-Aptr-Signature: sha256=<hex
//! HMAC-SHA256(secret, "{ts}.{METHOD}.{path+query}.{sha256hex(body)}")>` (401
//! `INVALID_SIGNATURE` otherwise). Errors are `{"message", "code"}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, patch, post};
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::auth;
use crate::fastapi::json_response;
use crate::state::Shared;

/// The provider name in [`crate::ObjectInfo::provider`].
pub const PROVIDER: &str = "apertur";
/// The image types Apertur accepts.
pub const MIME_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/webp", "image/heic"];
/// The project the default destinations belong to.
pub const DEFAULT_PROJECT: &str = "emulator-project";
/// The API key's default destinations `(id, type, name)` (the seed's examples).
pub const DEFAULT_DESTINATIONS: [(&str, &str, &str); 2] = [
    ("d290f1ee-6c54-4b01-90e6-d701748f0851", "s3", "Production S3"),
    ("7c9e6679-7425-40de-944b-e07fc1f90ae7", "webhook", "My Webhook"),
];
/// Destination types; the OAuth ones cannot be created through the API.
pub const DESTINATION_TYPES: [&str; 9] =
    ["s3", "azure_blob", "google_drive", "dropbox", "onedrive", "box", "ftp", "webdav", "webhook"];
const OAUTH_TYPES: [&str; 4] = ["google_drive", "dropbox", "onedrive", "box"];
const SECRET_CONFIG_KEYS: [&str; 6] =
    ["secretKey", "password", "secret", "connectionString", "privateKey", "accessKey"];

/// Which delivery-status shape to serve without `pollFrom`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryShape {
    /// The seed's `{session_id, images[{deliveries}]}`.
    #[default]
    Seed,
    /// The SDK's `{status, files[{destinations}], lastChanged}`.
    Sdk,
}

/// Apertur's knobs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct AperturConfig {
    /// Destination ids whose deliveries fail (every attempt).
    pub failing_destinations: Vec<String>,
    /// Time between delivery steps (first attempt, retries), ms. Default 100.
    pub delivery_step_ms: u64,
    /// Retries after a failed first attempt before a delivery is `failed`. Default 5 (the docs').
    pub delivery_retries: u32,
    /// Shape of delivery-status answers without `pollFrom`.
    pub delivery_status_shape: DeliveryShape,
    /// The plan's image limit per session (default 100).
    pub plan_max_images: u32,
    /// 1-based numbers, in a counter of image uploads, of those answering 429.
    pub throttle_uploads_nth: Vec<u64>,
    /// `Retry-After` of a 429, seconds (default 1).
    pub retry_after_s: u64,
    /// When set, requests other than multipart uploads must be signed with it.
    pub signing_secret: Option<String>,
    /// Longest hold of a `pollFrom` long poll, ms (default 300000, the documented 5 minutes).
    pub long_poll_max_ms: u64,
    /// 1-based numbers, in a counter of ack calls, of those answering 500 (not acknowledged).
    pub fail_ack_nth: Vec<u64>,
    /// A session holding this many images counts as expired: further images answer 410
    /// `SESSION_EXPIRED` (a stand-in for the default 24 h lifetime running out during a long
    /// run). Default none.
    pub expire_after_images: Option<u32>,
    /// A throttled image upload's 429 says how long to wait in a body field `retryAfter`
    /// (seconds) instead of the `Retry-After` header (Apertur's Rust SDK reads the field).
    pub retry_after_in_body: bool,
}

impl Default for AperturConfig {
    fn default() -> Self {
        AperturConfig {
            failing_destinations: Vec::new(),
            delivery_step_ms: 100,
            delivery_retries: 5,
            delivery_status_shape: DeliveryShape::Seed,
            plan_max_images: 100,
            throttle_uploads_nth: Vec::new(),
            retry_after_s: 1,
            signing_secret: None,
            long_poll_max_ms: 300_000,
            fail_ack_nth: Vec::new(),
            expire_after_images: None,
            retry_after_in_body: false,
        }
    }
}

/// Apertur's sessions, destinations and counters.
pub struct AperturState {
    sessions: Mutex<HashMap<String, Session>>,
    destinations: Mutex<Vec<Destination>>,
    uploads: AtomicU64,
    acks_seen: AtomicU64,
    signed_ok: AtomicU64,
    acks: Mutex<BTreeMap<String, u64>>,
    downloads: Mutex<BTreeMap<String, u64>>,
}

impl Default for AperturState {
    fn default() -> Self {
        let now = Utc::now();
        let destinations = DEFAULT_DESTINATIONS
            .iter()
            .map(|(id, kind, name)| Destination {
                project: DEFAULT_PROJECT.into(),
                id: id.to_string(),
                kind: kind.to_string(),
                name: name.to_string(),
                config: Map::new(),
                active: true,
                default: true,
                created: now,
                updated: now,
            })
            .collect();
        AperturState {
            sessions: Mutex::new(HashMap::new()),
            destinations: Mutex::new(destinations),
            uploads: AtomicU64::new(0),
            acks_seen: AtomicU64::new(0),
            signed_ok: AtomicU64::new(0),
            acks: Mutex::new(BTreeMap::new()),
            downloads: Mutex::new(BTreeMap::new()),
        }
    }
}

impl AperturState {
    /// Image id → successful acks.
    pub fn ack_counts(&self) -> BTreeMap<String, u64> {
        self.acks.lock().unwrap().clone()
    }
    /// Image id → downloads.
    pub fn download_counts(&self) -> BTreeMap<String, u64> {
        self.downloads.lock().unwrap().clone()
    }
    /// Requests whose signature was verified.
    pub fn signed_requests(&self) -> u64 {
        self.signed_ok.load(Ordering::SeqCst)
    }
    /// Every session: {id, tags, password_protected, long_polling, max_images, allowed_mime_types,
    /// destination_ids, images[{id, filename, key, mime_type, source}]}.
    pub fn sessions_summary(&self) -> Value {
        let sessions = self.sessions.lock().unwrap();
        let mut out: Vec<&Session> = sessions.values().collect();
        out.sort_by_key(|s| s.created);
        Value::Array(
            out.iter()
                .map(|s| {
                    json!({
                        "id": s.id,
                        "tags": s.tags,
                        "password_protected": s.password.is_some(),
                        "long_polling": s.long_polling,
                        "max_images": s.max_images,
                        "allowed_mime_types": s.allowed_mime_types,
                        "max_image_dimension": s.max_image_dimension,
                        "expires_at": iso(&s.expires_at),
                        "destination_ids": s.destinations.iter().map(|(id, _, _)| id).collect::<Vec<_>>(),
                        "images": s.images.iter().map(|i| json!({
                            "id": i.id, "filename": i.filename, "key": i.key,
                            "mime_type": i.mime_type, "source": i.source, "size_bytes": i.size,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        )
    }
}

#[derive(Clone, Debug)]
struct Destination {
    project: String,
    id: String,
    kind: String,
    name: String,
    config: Map<String, Value>,
    active: bool,
    /// One of the API key's default destinations.
    default: bool,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
}

impl Destination {
    fn output(&self) -> Value {
        let mut config = self.config.clone();
        for (k, v) in config.iter_mut() {
            if SECRET_CONFIG_KEYS.contains(&k.as_str()) && !v.is_null() {
                *v = json!("********");
            }
        }
        json!({
            "id": self.id, "type": self.kind, "name": self.name, "config": config,
            "isActive": self.active, "createdAt": iso(&self.created), "updatedAt": iso(&self.updated),
        })
    }
}

#[derive(Clone, Debug)]
struct Session {
    id: String,
    /// `(id, type, name)` resolved at creation.
    destinations: Vec<(String, String, String)>,
    long_polling: bool,
    tags: Vec<String>,
    expires_at: DateTime<Utc>,
    max_images: u32,
    allowed_mime_types: Vec<String>,
    max_image_dimension: Option<u64>,
    max_image_size_mb: Option<u64>,
    password: Option<String>,
    created: DateTime<Utc>,
    images: Vec<Image>,
}

#[derive(Clone, Debug)]
struct Image {
    id: String,
    filename: String,
    size: u64,
    mime_type: String,
    source: String,
    key: String,
    uploaded: DateTime<Utc>,
    acked: bool,
}

/// A delivery's state at a time.
struct DeliveryState {
    status: &'static str,
    attempts: u32,
    delivered_at: Option<DateTime<Utc>>,
    next_retry_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

fn iso(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn random_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut rng = rand::thread_rng();
    let tail: String = (0..26).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
    format!("{prefix}{tail}")
}

/// The object key of an uploaded image.
pub fn object_key(session: &str, image: &str, filename: &str) -> String {
    format!("apertur/{session}/{image}/{filename}")
}

/// `{"message", "code"}` with a status.
fn error(status: u16, code: &str, message: &str) -> Response {
    json_response(status, &json!({ "message": message, "code": code }))
}

fn bad_request(message: &str) -> Response {
    error(400, "VALIDATION_ERROR", message)
}

fn session_not_found() -> Response {
    error(404, "NOT_FOUND", "Session not found")
}

type Answer = Result<Response, Response>;

fn answer(a: Answer) -> Response {
    a.unwrap_or_else(|r| r)
}

/// Counts the call and checks its token: 401 `{message, code}`, or 429 with `Retry-After` for
/// the generic `throttle_api_call_nth` fault.
fn check_auth(shared: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let fault = shared.faults.lock().unwrap().on_api_call();
    if fault == crate::faults::ApiFault::Throttle {
        let mut resp = error(429, "RATE_LIMIT", "Rate limit exceeded");
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Err(resp);
    }
    auth::check_token(shared, headers, fault == crate::faults::ApiFault::Unauthorized).map_err(|e| {
        let msg = match e {
            auth::AuthError::Missing => "Missing API key",
            auth::AuthError::Invalid => "Invalid API key",
        };
        error(401, "AUTHENTICATION_FAILED", msg)
    })
}

impl Session {
    fn step(&self, cfg: &AperturConfig) -> chrono::Duration {
        chrono::Duration::milliseconds(cfg.delivery_step_ms.max(1) as i64)
    }

    fn delivery(&self, cfg: &AperturConfig, image: &Image, dest: &str, now: DateTime<Utc>) -> DeliveryState {
        let s = self.step(cfg);
        if !cfg.failing_destinations.iter().any(|d| d == dest) {
            let at = image.uploaded + s;
            return if now >= at {
                DeliveryState {
                    status: "delivered",
                    attempts: 1,
                    delivered_at: Some(at),
                    next_retry_at: None,
                    last_error: None,
                }
            } else {
                DeliveryState {
                    status: "pending",
                    attempts: 0,
                    delivered_at: None,
                    next_retry_at: None,
                    last_error: None,
                }
            };
        }
        let max_attempts = cfg.delivery_retries + 1;
        let elapsed = (now - image.uploaded).num_milliseconds().max(0) as u64;
        let attempts = ((elapsed / cfg.delivery_step_ms.max(1)) as u32).min(max_attempts);
        let last_error = (attempts > 0).then(|| "destination answered HTTP 503 Service Unavailable".to_string());
        if attempts >= max_attempts {
            DeliveryState { status: "failed", attempts, delivered_at: None, next_retry_at: None, last_error }
        } else {
            DeliveryState {
                status: "pending",
                attempts,
                delivered_at: None,
                next_retry_at: Some(image.uploaded + s * (attempts as i32 + 1)),
                last_error,
            }
        }
    }

    /// The latest time at or before `now` when something in the session changed.
    fn last_changed(&self, cfg: &AperturConfig, now: DateTime<Utc>) -> DateTime<Utc> {
        let s = self.step(cfg);
        let mut last = self.created;
        for img in &self.images {
            last = last.max(img.uploaded);
            for (dest, _, _) in &self.destinations {
                let steps =
                    if cfg.failing_destinations.iter().any(|d| d == dest) { cfg.delivery_retries + 1 } else { 1 };
                for k in 1..=steps {
                    let t = img.uploaded + s * k as i32;
                    if t <= now && t > last {
                        last = t;
                    }
                }
            }
        }
        last
    }

    fn all_final(&self, cfg: &AperturConfig, now: DateTime<Utc>) -> (bool, bool) {
        let mut all_final = true;
        let mut any_failed = false;
        for img in &self.images {
            for (dest, _, _) in &self.destinations {
                match self.delivery(cfg, img, dest, now).status {
                    "failed" => any_failed = true,
                    "delivered" => {}
                    _ => all_final = false,
                }
            }
        }
        (all_final, any_failed)
    }

    fn effective_mime(&self) -> Vec<String> {
        self.allowed_mime_types.clone()
    }

    fn details(&self, cfg: &AperturConfig, now: DateTime<Utc>) -> Value {
        let status = self.list_status(cfg, now);
        json!({
            "id": self.id,
            "status": status,
            "expiresAt": iso(&self.expires_at),
            "tags": self.tags,
            "imagesPerSession": self.max_images,
            "imagesCount": self.images.len(),
            "effectiveMaxImages": self.max_images,
            "effectiveAllowedMimeTypes": self.effective_mime(),
            "effectiveMaxImageDimension": self.max_image_dimension,
            "maxImageSizeMb": self.max_image_size_mb,
            "password_protected": self.password.is_some(),
            "longPolling": self.long_polling,
            "destinations": self.destinations.iter().map(|(id, t, n)| json!({"id": id, "type": t, "name": n})).collect::<Vec<_>>(),
            "e2eEnabled": false,
        })
    }

    fn seed_status(&self, cfg: &AperturConfig, now: DateTime<Utc>) -> Value {
        let images: Vec<Value> = self
            .images
            .iter()
            .enumerate()
            .map(|(i, img)| {
                let deliveries: Vec<Value> = self
                    .destinations
                    .iter()
                    .map(|(id, kind, name)| {
                        let d = self.delivery(cfg, img, id, now);
                        let mut v = json!({
                            "destination_id": id, "destination_name": name, "destination_type": kind,
                            "status": d.status, "attempts": d.attempts,
                        });
                        if let Some(t) = d.delivered_at {
                            v["delivered_at"] = json!(iso(&t));
                        }
                        if let Some(t) = d.next_retry_at {
                            v["next_retry_at"] = json!(iso(&t));
                        }
                        if let Some(e) = d.last_error {
                            v["last_error"] = json!(e);
                        }
                        v
                    })
                    .collect();
                json!({ "image_id": img.id, "image_index": i, "deliveries": deliveries })
            })
            .collect();
        json!({ "session_id": self.id, "images": images })
    }

    fn sdk_status(&self, cfg: &AperturConfig, now: DateTime<Utc>) -> Value {
        let (all_final, _) = self.all_final(cfg, now);
        let status = if now > self.expires_at {
            "expired"
        } else if self.images.is_empty() {
            "pending"
        } else if all_final {
            "completed"
        } else {
            "active"
        };
        let files: Vec<Value> = self
            .images
            .iter()
            .map(|img| {
                let dests: Vec<Value> = self
                    .destinations
                    .iter()
                    .map(|(id, kind, name)| {
                        let d = self.delivery(cfg, img, id, now);
                        json!({
                            "destination_id": id, "type": kind, "name": name, "status": sdk_status(&d),
                            "attempts": d.attempts, "last_error": d.last_error,
                        })
                    })
                    .collect();
                json!({ "record_id": img.id, "filename": img.filename, "size_bytes": img.size, "destinations": dests })
            })
            .collect();
        json!({ "status": status, "files": files, "lastChanged": iso(&self.last_changed(cfg, now)) })
    }
}

/// A delivery's status in the SDK's words (`pending|sending|sent|failed|retrying`): `sent` once
/// delivered, `retrying` between failed attempts.
fn sdk_status(d: &DeliveryState) -> &'static str {
    match d.status {
        "delivered" => "sent",
        "pending" if d.attempts > 0 => "retrying",
        other => other,
    }
}

impl Session {
    /// The session's status for the lists (the seed's words).
    fn list_status(&self, cfg: &AperturConfig, now: DateTime<Utc>) -> &'static str {
        let (all_final, any_failed) = self.all_final(cfg, now);
        if now > self.expires_at && self.images.is_empty() {
            "expired"
        } else if self.images.is_empty() {
            "pending"
        } else if !all_final {
            "uploading"
        } else if any_failed {
            "failed"
        } else {
            "completed"
        }
    }

    /// A row of `GET /api/v1/sessions` (the SDK's `SessionRow`).
    fn row(&self, cfg: &AperturConfig, now: DateTime<Utc>) -> Value {
        let (mut delivered, mut failed) = (0, 0);
        for img in &self.images {
            let states: Vec<&str> =
                self.destinations.iter().map(|(d, _, _)| self.delivery(cfg, img, d, now).status).collect();
            if !states.is_empty() && states.iter().all(|s| *s == "delivered") {
                delivered += 1;
            }
            if states.contains(&"failed") {
                failed += 1;
            }
        }
        json!({
            "id": self.id, "createdAt": iso(&self.created), "expiresAt": iso(&self.expires_at),
            "status": self.list_status(cfg, now), "projectId": DEFAULT_PROJECT, "projectName": PROJECT_NAME,
            "imagesCount": self.images.len(), "imagesDelivered": delivered, "imagesFailed": failed,
            "destinationsCount": self.destinations.len(), "tags": self.tags,
            "longPollingEnabled": self.long_polling, "label": null, "env": "live",
        })
    }

    /// A row of `GET /api/v1/uploads` (the SDK's `UploadRow`) for one of its images.
    fn upload_row(&self, cfg: &AperturConfig, img: &Image, now: DateTime<Utc>) -> Value {
        let states: Vec<&str> =
            self.destinations.iter().map(|(d, _, _)| self.delivery(cfg, img, d, now).status).collect();
        let delivered = states.iter().filter(|s| **s == "delivered").count();
        let failed = states.iter().filter(|s| **s == "failed").count();
        let status = if states.is_empty() {
            "stored_only"
        } else if delivered == states.len() {
            "delivered"
        } else if failed == states.len() {
            "failed"
        } else if delivered + failed == states.len() {
            "partial"
        } else {
            "pending"
        };
        json!({
            "id": img.id, "filename": img.filename, "sizeBytes": img.size, "mimeType": img.mime_type,
            "source": img.source, "isEncrypted": false, "env": "live", "createdAt": iso(&img.uploaded),
            "sessionId": self.id, "projectId": DEFAULT_PROJECT, "projectName": PROJECT_NAME,
            "destinationsTotal": states.len(), "destinationsDelivered": delivered, "destinationsFailed": failed,
            "status": status,
        })
    }
}

/// The name of [`DEFAULT_PROJECT`].
pub const PROJECT_NAME: &str = "Emulator project";

/// Apertur's routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/upload-sessions", post(create_session))
        .route("/api/v1/upload-sessions/{uuid}", patch(update_session))
        .route("/api/v1/upload/{uuid}/session", get(get_session))
        .route("/api/v1/upload/{uuid}/images", post(upload_image))
        .route("/api/v1/upload/{uuid}/verify-password", post(verify_password))
        .route("/api/v1/sessions", get(list_sessions))
        .route("/api/v1/sessions/recent", get(recent_sessions))
        .route("/api/v1/uploads", get(list_uploads))
        .route("/api/v1/uploads/recent", get(recent_uploads))
        .route("/api/v1/upload-sessions/{uuid}/delivery-status", get(delivery_status))
        .route("/api/v1/upload-sessions/{uuid}/poll", get(poll))
        .route("/api/v1/upload-sessions/{uuid}/images/{image}", get(download))
        .route("/api/v1/upload-sessions/{uuid}/images/{image}/ack", post(ack))
        .route("/api/v1/projects/{project}/destinations", get(list_destinations).post(create_destination))
        .route("/api/v1/projects/{project}/destinations/{dest}", patch(update_destination).delete(delete_destination))
        .route("/api/v1/projects/{project}/destinations/{dest}/test", post(test_destination))
        .route_layer(middleware::from_fn_with_state(shared.clone(), verify_signature))
        .with_state(shared)
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"))
}

/// The expected `X-Aptr-Signature` value.
pub fn signature(secret: &str, timestamp: &str, method: &str, path_and_query: &str, body: &[u8]) -> String {
    let base =
        format!("{timestamp}.{}.{path_and_query}.{}", method.to_ascii_uppercase(), hex::encode(Sha256::digest(body)));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(base.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn verify_signature(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let Some(secret) = shared.config.apertur.signing_secret.clone() else {
        return next.run(req).await;
    };
    if is_multipart(req.headers()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 << 20).await else {
        return bad_request("cannot read the body");
    };
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let ok = match (header("x-aptr-timestamp"), header("x-aptr-signature")) {
        (Some(ts), Some(sig)) => {
            let fresh = ts.parse::<i64>().is_ok_and(|t| (Utc::now().timestamp() - t).abs() <= 300);
            let expected = signature(&secret, &ts, parts.method.as_str(), &path_and_query, &bytes);
            fresh && expected.as_bytes() == sig.trim().as_bytes()
        }
        _ => false,
    };
    if !ok {
        tracing::debug!(path = %path_and_query, "apertur: bad or missing request signature");
        return error(401, "INVALID_SIGNATURE", "Invalid or missing request signature");
    }
    shared.apertur.signed_ok.fetch_add(1, Ordering::SeqCst);
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Response> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad_request("the body must be a JSON object")),
        Err(e) => Err(bad_request(&format!("invalid JSON: {e}"))),
    }
}

fn opt_positive(obj: &Map<String, Value>, field: &str) -> Result<Option<u64>, Response> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(Some(n)),
            _ => Err(bad_request(&format!("{field} must be a positive integer"))),
        },
    }
}

fn opt_string_list(obj: &Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, Response> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(String::from).ok_or_else(|| bad_request(&format!("{field} must be an array of strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad_request(&format!("{field} must be an array of strings"))),
    }
}

fn check_mime_list(list: &[String]) -> Result<(), Response> {
    if list.is_empty() {
        return Err(bad_request("allowed_mime_types must not be empty"));
    }
    if let Some(bad) = list.iter().find(|m| !MIME_TYPES.contains(&m.as_str())) {
        return Err(bad_request(&format!("allowed_mime_types: '{bad}' is not one of {}", MIME_TYPES.join(", "))));
    }
    Ok(())
}

fn check_password(v: &Value) -> Result<Option<String>, Response> {
    match v {
        Value::Null => Ok(None),
        Value::String(p) if (4..=128).contains(&p.chars().count()) => Ok(Some(p.clone())),
        _ => Err(bad_request("password must be a string of 4 to 128 characters")),
    }
}

fn parse_time(field: &str, v: &Value) -> Result<DateTime<Utc>, Response> {
    let s = v.as_str().ok_or_else(|| bad_request(&format!("{field} must be an ISO 8601 string")))?;
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|_| bad_request(&format!("{field} must be an ISO 8601 date-time, e.g. 2026-03-29T10:00:00Z")))?;
    Ok(t.with_timezone(&Utc))
}

async fn create_session(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    answer(create_session_inner(&shared, &headers, &body))
}

fn create_session_inner(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Answer {
    check_auth(shared, headers)?;
    let cfg = &shared.config.apertur;
    let obj = parse_object(body)?;
    let now = Utc::now();
    let dest_ids = opt_string_list(&obj, "destination_ids")?;
    let long_polling = match obj.get("long_polling") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad_request("long_polling must be a boolean")),
    };
    let tags = opt_string_list(&obj, "tags")?.unwrap_or_default();
    let hours = obj.get("expires_in_hours").filter(|v| !v.is_null());
    let at = obj.get("expires_at").filter(|v| !v.is_null());
    let expires_at = match (hours, at) {
        (Some(_), Some(_)) => return Err(bad_request("expires_in_hours and expires_at are mutually exclusive")),
        (Some(h), None) => match h.as_i64() {
            Some(h @ 1..=168) => now + chrono::Duration::hours(h),
            _ => return Err(bad_request("expires_in_hours must be an integer from 1 to 168")),
        },
        (None, Some(a)) => {
            let t = parse_time("expires_at", a)?;
            if t <= now {
                return Err(bad_request("expires_at must be in the future"));
            }
            t
        }
        (None, None) => now + chrono::Duration::hours(24),
    };
    let max_images =
        opt_positive(&obj, "max_images")?.map_or(cfg.plan_max_images, |m| m.min(cfg.plan_max_images as u64) as u32);
    let allowed = match opt_string_list(&obj, "allowed_mime_types")? {
        Some(list) => {
            check_mime_list(&list)?;
            list
        }
        None => MIME_TYPES.iter().map(|s| s.to_string()).collect(),
    };
    let max_dim = opt_positive(&obj, "max_image_dimension")?;
    let password = obj.get("password").map(check_password).transpose()?.flatten();
    let destinations = {
        let all = shared.apertur.destinations.lock().unwrap();
        match dest_ids {
            None => all
                .iter()
                .filter(|d| d.default && d.active)
                .map(|d| (d.id.clone(), d.kind.clone(), d.name.clone()))
                .collect(),
            Some(ids) => {
                let mut out = Vec::new();
                for id in ids {
                    let d = all
                        .iter()
                        .find(|d| d.id == id)
                        .ok_or_else(|| bad_request(&format!("Unknown destination id {id}")))?;
                    if !d.active {
                        return Err(bad_request(&format!("Destination {id} is not active")));
                    }
                    out.push((d.id.clone(), d.kind.clone(), d.name.clone()));
                }
                out
            }
        }
    };
    let id = random_id("sess_");
    let session = Session {
        id: id.clone(),
        destinations,
        long_polling,
        tags,
        expires_at,
        max_images,
        allowed_mime_types: allowed,
        max_image_dimension: max_dim,
        max_image_size_mb: None,
        password,
        created: now,
        images: Vec::new(),
    };
    let out = json!({
        "id": id,
        "uuid": id,
        "upload_url": format!("https://apertur.ca/upload/{id}"),
        "qr_url": format!("https://api.apertur.ca/api/v1/upload-sessions/{id}/qr"),
        "qr_specs": {
            "endpoint": format!("/api/v1/upload-sessions/{id}/qr"),
            "formats": ["png", "svg"],
            "params": {"format": "png|svg", "size": "pixels", "style": "square|rounded", "fg": "hex colour", "bg": "hex colour"},
        },
        "destinations": session.destinations.iter().map(|(i, t, n)| json!({"id": i, "type": t, "name": n})).collect::<Vec<_>>(),
        "long_polling": session.long_polling,
        "expires_at": iso(&session.expires_at),
        "password_protected": session.password.is_some(),
        "env": "live",
    });
    tracing::debug!(%id, "apertur: session created");
    shared.apertur.sessions.lock().unwrap().insert(id, session);
    Ok(json_response(201, &out))
}

async fn get_session(State(shared): State<Arc<Shared>>, Path(uuid): Path<String>, headers: HeaderMap) -> Response {
    answer((|| -> Answer {
        check_auth(&shared, &headers)?;
        let sessions = shared.apertur.sessions.lock().unwrap();
        let s = sessions.get(&uuid).ok_or_else(session_not_found)?;
        Ok(json_response(200, &s.details(&shared.config.apertur, Utc::now())))
    })())
}

async fn update_session(
    State(shared): State<Arc<Shared>>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer((|| -> Answer {
        check_auth(&shared, &headers)?;
        let obj = parse_object(&body)?;
        let cfg = &shared.config.apertur;
        let expires_at =
            obj.get("expires_at").filter(|v| !v.is_null()).map(|v| parse_time("expires_at", v)).transpose()?;
        let max_images = opt_positive(&obj, "max_images")?;
        let allowed = opt_string_list(&obj, "allowed_mime_types")?;
        if let Some(list) = &allowed {
            check_mime_list(list)?;
        }
        let max_dim = opt_positive(&obj, "max_image_dimension")?;
        let max_mb = opt_positive(&obj, "max_image_size_mb")?;
        let password = obj.get("password").map(check_password).transpose()?;
        let mut sessions = shared.apertur.sessions.lock().unwrap();
        let s = sessions.get_mut(&uuid).ok_or_else(session_not_found)?;
        if let Some(t) = expires_at {
            s.expires_at = t;
        }
        if let Some(m) = max_images {
            s.max_images = m.min(cfg.plan_max_images as u64) as u32;
        }
        if let Some(a) = allowed {
            s.allowed_mime_types = a;
        }
        if max_dim.is_some() {
            s.max_image_dimension = max_dim;
        }
        if max_mb.is_some() {
            s.max_image_size_mb = max_mb;
        }
        if let Some(p) = password {
            s.password = p;
        }
        Ok(json_response(200, &s.details(cfg, Utc::now())))
    })())
}

async fn upload_image(
    State(shared): State<Arc<Shared>>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match upload_image_inner(&shared, &uuid, &headers, body).await {
        Ok(r) | Err(r) => r,
    }
}

async fn upload_image_inner(shared: &Shared, uuid: &str, headers: &HeaderMap, body: Body) -> Answer {
    let chunked = headers
        .get(header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if headers.get(header::CONTENT_LENGTH).is_none() || chunked {
        return Err(error(411, "LENGTH_REQUIRED", "Content-Length is required"));
    }
    check_auth(shared, headers)?;
    let cfg = &shared.config.apertur;
    let (password, expired) = {
        let sessions = shared.apertur.sessions.lock().unwrap();
        let s = sessions.get(uuid).ok_or_else(session_not_found)?;
        let used_up = cfg.expire_after_images.is_some_and(|n| s.images.len() as u32 >= n);
        (s.password.clone(), Utc::now() > s.expires_at || used_up)
    };
    if expired {
        return Err(error(410, "SESSION_EXPIRED", "This upload session has expired"));
    }
    if let Some(p) = password {
        match headers.get("x-session-password").and_then(|v| v.to_str().ok()) {
            None => return Err(error(403, "PASSWORD_REQUIRED", "This session requires a password")),
            Some(given) if given != p => return Err(error(403, "INVALID_PASSWORD", "Invalid session password")),
            Some(_) => {}
        }
    }
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| bad_request("the body must be multipart/form-data"))?;
    let mut form = multer::Multipart::new(body.into_data_stream(), boundary);
    let mut file: Option<(String, Option<String>, Bytes)> = None;
    let mut source = String::from("api");
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(bad_request(&format!("malformed multipart body: {e}"))),
        };
        match field.name() {
            Some("file") => {
                let name = field.file_name().unwrap_or("image").to_string();
                let mime = field.content_type().map(|m| m.essence_str().to_string());
                let bytes = field.bytes().await.map_err(|e| bad_request(&format!("malformed multipart body: {e}")))?;
                file = Some((name, mime, bytes));
            }
            Some("source") => {
                source = field.text().await.map_err(|e| bad_request(&format!("malformed multipart body: {e}")))?;
            }
            _ => {
                let _ = field.bytes().await;
            }
        }
    }
    let n = shared.apertur.uploads.fetch_add(1, Ordering::SeqCst) + 1;
    if cfg.throttle_uploads_nth.contains(&n) {
        if cfg.retry_after_in_body {
            let body =
                json!({ "message": "Rate limit exceeded", "code": "RATE_LIMIT", "retryAfter": cfg.retry_after_s });
            return Err(json_response(429, &body));
        }
        let mut resp = error(429, "RATE_LIMIT", "Rate limit exceeded");
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(cfg.retry_after_s));
        return Err(resp);
    }
    let (filename, mime, bytes) =
        file.ok_or_else(|| error(400, "FILE_REQUIRED", "The image must be in the field 'file'"))?;
    let mime = mime.unwrap_or_else(|| "application/octet-stream".into());
    let image_id = random_id("img_");
    let mut sessions = shared.apertur.sessions.lock().unwrap();
    let s = sessions.get_mut(uuid).ok_or_else(session_not_found)?;
    if !s.allowed_mime_types.contains(&mime) {
        return Err(error(
            400,
            "MIME_TYPE_NOT_ALLOWED",
            &format!("{mime} is not accepted by this session (allowed: {})", s.allowed_mime_types.join(", ")),
        ));
    }
    if s.images.len() as u32 >= s.max_images {
        return Err(error(400, "MAX_IMAGES_REACHED", &format!("This session accepts at most {} images", s.max_images)));
    }
    let key = object_key(uuid, &image_id, &filename);
    let size = bytes.len() as u64;
    shared.store.put_object(&key, bytes, PROVIDER, &image_id);
    s.images.push(Image {
        id: image_id.clone(),
        filename: filename.clone(),
        size,
        mime_type: mime,
        source,
        key,
        uploaded: Utc::now(),
        acked: false,
    });
    tracing::debug!(session = %uuid, image = %image_id, size, "apertur: image stored");
    Ok(json_response(
        201,
        &json!({
            "id": image_id, "filename": filename, "size_bytes": size,
            "destinations": s.destinations.len(), "long_polling": s.long_polling,
        }),
    ))
}

async fn delivery_status(
    State(shared): State<Arc<Shared>>,
    Path(uuid): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    answer(delivery_status_inner(shared, uuid, query, headers).await)
}

async fn delivery_status_inner(shared: Arc<Shared>, uuid: String, query: Option<String>, headers: HeaderMap) -> Answer {
    check_auth(&shared, &headers)?;
    let cfg = &shared.config.apertur;
    let q = crate::sigv4::parse_query(query.as_deref().unwrap_or(""));
    let poll_from =
        q.iter().rev().find(|(k, _)| k == "pollFrom").map(|(_, v)| parse_time("pollFrom", &json!(v))).transpose()?;
    let exists = shared.apertur.sessions.lock().unwrap().contains_key(&uuid);
    if !exists {
        return Err(session_not_found());
    }
    if let Some(from) = poll_from {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(cfg.long_poll_max_ms);
        loop {
            let changed = {
                let sessions = shared.apertur.sessions.lock().unwrap();
                let s = sessions.get(&uuid).ok_or_else(session_not_found)?;
                s.last_changed(cfg, Utc::now()).timestamp_millis() > from.timestamp_millis()
            };
            if changed || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let sessions = shared.apertur.sessions.lock().unwrap();
    let s = sessions.get(&uuid).ok_or_else(session_not_found)?;
    let now = Utc::now();
    let body = if poll_from.is_some() || cfg.delivery_status_shape == DeliveryShape::Sdk {
        s.sdk_status(cfg, now)
    } else {
        s.seed_status(cfg, now)
    };
    Ok(json_response(200, &body))
}

async fn poll(State(shared): State<Arc<Shared>>, Path(uuid): Path<String>, headers: HeaderMap) -> Response {
    answer((|| -> Answer {
        check_auth(&shared, &headers)?;
        let sessions = shared.apertur.sessions.lock().unwrap();
        let s = sessions.get(&uuid).ok_or_else(session_not_found)?;
        if !s.long_polling {
            return Err(error(400, "LONG_POLLING_DISABLED", "Long polling is not enabled for this session"));
        }
        let images: Vec<Value> = s
            .images
            .iter()
            .filter(|i| !i.acked)
            .map(|i| {
                json!({
                    "id": i.id, "filename": i.filename, "size_bytes": i.size, "mime_type": i.mime_type,
                    "source": i.source, "created_at": iso(&i.uploaded),
                })
            })
            .collect();
        Ok(json_response(200, &json!({ "images": images })))
    })())
}

async fn download(
    State(shared): State<Arc<Shared>>,
    Path((uuid, image)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    answer((|| -> Answer {
        check_auth(&shared, &headers)?;
        let (key, mime) = {
            let sessions = shared.apertur.sessions.lock().unwrap();
            let s = sessions.get(&uuid).ok_or_else(session_not_found)?;
            let i =
                s.images.iter().find(|i| i.id == image).ok_or_else(|| error(404, "NOT_FOUND", "Image not found"))?;
            (i.key.clone(), i.mime_type.clone())
        };
        let bytes = shared.store.object_bytes(&key).ok_or_else(|| error(404, "NOT_FOUND", "Image not found"))?;
        *shared.apertur.downloads.lock().unwrap().entry(image).or_default() += 1;
        let mut resp = Response::new(Body::from(bytes));
        if let Ok(v) = HeaderValue::from_str(&mime) {
            resp.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        Ok(resp)
    })())
}

async fn ack(
    State(shared): State<Arc<Shared>>,
    Path((uuid, image)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    answer((|| -> Answer {
        check_auth(&shared, &headers)?;
        let n = shared.apertur.acks_seen.fetch_add(1, Ordering::SeqCst) + 1;
        let mut sessions = shared.apertur.sessions.lock().unwrap();
        let s = sessions.get_mut(&uuid).ok_or_else(session_not_found)?;
        let i =
            s.images.iter_mut().find(|i| i.id == image).ok_or_else(|| error(404, "NOT_FOUND", "Image not found"))?;
        if shared.config.apertur.fail_ack_nth.contains(&n) {
            return Err(error(500, "INTERNAL_ERROR", "Internal server error"));
        }
        i.acked = true;
        *shared.apertur.acks.lock().unwrap().entry(image.clone()).or_default() += 1;
        Ok(json_response(200, &json!({ "status": "acknowledged", "id": image })))
    })())
}

async fn list_destinations(
    State(shared): State<Arc<Shared>>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer((|| -> Answer {
        check_auth(&shared, &headers)?;
        let all = shared.apertur.destinations.lock().unwrap();
        let out: Vec<Value> = all.iter().filter(|d| d.project == project).map(Destination::output).collect();
        Ok(json_response(200, &Value::Array(out)))
    })())
}

fn dest_not_found() -> Response {
    error(404, "NOT_FOUND", "Destination not found")
}

async fn create_destination(
    State(shared): State<Arc<Shared>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer((|| -> Answer {
        check_auth(&shared, &headers)?;
        let obj = parse_object(&body)?;
        let kind = obj.get("type").and_then(|v| v.as_str()).ok_or_else(|| bad_request("type is required"))?;
        if !DESTINATION_TYPES.contains(&kind) {
            return Err(bad_request(&format!("type must be one of {}", DESTINATION_TYPES.join(", "))));
        }
        if OAUTH_TYPES.contains(&kind) {
            return Err(bad_request(&format!(
                "{kind} destinations are created through the OAuth flow in the dashboard"
            )));
        }
        let name = obj.get("name").and_then(|v| v.as_str()).filter(|n| !n.trim().is_empty());
        let name = name.ok_or_else(|| bad_request("name is required"))?.to_string();
        let config = match obj.get("config") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(bad_request("config must be an object")),
        };
        let now = Utc::now();
        let d = Destination {
            project,
            id: uuid::Uuid::new_v4().to_string(),
            kind: kind.to_string(),
            name,
            config,
            active: true,
            default: false,
            created: now,
            updated: now,
        };
        let out = d.output();
        shared.apertur.destinations.lock().unwrap().push(d);
        Ok(json_response(201, &out))
    })())
}

async fn update_destination(
    State(shared): State<Arc<Shared>>,
    Path((project, dest)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer((|| -> Answer {
        check_auth(&shared, &headers)?;
        let obj = parse_object(&body)?;
        let mut all = shared.apertur.destinations.lock().unwrap();
        let d = all.iter_mut().find(|d| d.project == project && d.id == dest).ok_or_else(dest_not_found)?;
        match obj.get("name") {
            None | Some(Value::Null) => {}
            Some(Value::String(n)) if !n.trim().is_empty() => d.name = n.clone(),
            Some(_) => return Err(bad_request("name must be a non-empty string")),
        }
        match obj.get("config") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => d.config = m.clone(),
            Some(_) => return Err(bad_request("config must be an object")),
        }
        match obj.get("isActive") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => d.active = *b,
            Some(_) => return Err(bad_request("isActive must be a boolean")),
        }
        d.updated = Utc::now();
        Ok(json_response(200, &d.output()))
    })())
}

async fn delete_destination(
    State(shared): State<Arc<Shared>>,
    Path((project, dest)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    answer((|| -> Answer {
        check_auth(&shared, &headers)?;
        let mut all = shared.apertur.destinations.lock().unwrap();
        let i = all.iter().position(|d| d.project == project && d.id == dest).ok_or_else(dest_not_found)?;
        all.remove(i);
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = axum::http::StatusCode::NO_CONTENT;
        Ok(resp)
    })())
}

async fn test_destination(
    State(shared): State<Arc<Shared>>,
    Path((project, dest)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    answer((|| -> Answer {
        check_auth(&shared, &headers)?;
        let all = shared.apertur.destinations.lock().unwrap();
        let d = all.iter().find(|d| d.project == project && d.id == dest).ok_or_else(dest_not_found)?;
        let out = if shared.config.apertur.failing_destinations.contains(&d.id) {
            json!({ "success": false, "status": 503, "error": "destination answered HTTP 503 Service Unavailable" })
        } else {
            json!({ "success": true, "status": 200, "message": format!("Test image delivered to {}", d.name) })
        };
        Ok(json_response(200, &out))
    })())
}

/// `page` (from 1, default 1) and `pageSize` (1..=100, default 20) of a paged list.
fn page_params(query: Option<&str>) -> Result<(usize, usize), Response> {
    let q = crate::sigv4::parse_query(query.unwrap_or(""));
    let get = |k: &str| q.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let num = |k: &str, default: usize, max: usize| -> Result<usize, Response> {
        match get(k) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(bad_request(&format!("{k} must be an integer from 1 to {max}"))),
            },
        }
    };
    Ok((num("page", 1, usize::MAX)?, num("pageSize", 20, 100)?))
}

/// `limit` (1..=100, default 10) of a recent list.
fn limit_param(query: Option<&str>) -> Result<usize, Response> {
    let q = crate::sigv4::parse_query(query.unwrap_or(""));
    match q.iter().rev().find(|(n, _)| n == "limit").map(|(_, v)| v.clone()) {
        None => Ok(10),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => Ok(n),
            _ => Err(bad_request("limit must be an integer from 1 to 100")),
        },
    }
}

/// `{data, total, page, pageSize, totalPages}` of `rows`.
fn paged(rows: Vec<Value>, page: usize, size: usize) -> Value {
    let total = rows.len();
    let data: Vec<Value> = rows.into_iter().skip((page - 1).saturating_mul(size)).take(size).collect();
    json!({ "data": data, "total": total, "page": page, "pageSize": size, "totalPages": total.div_ceil(size) })
}

/// Session rows, newest first.
fn session_rows(shared: &Shared) -> Vec<Value> {
    let sessions = shared.apertur.sessions.lock().unwrap();
    let mut all: Vec<&Session> = sessions.values().collect();
    all.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
    let now = Utc::now();
    all.iter().map(|s| s.row(&shared.config.apertur, now)).collect()
}

/// Upload rows (one per image), newest first.
fn upload_rows(shared: &Shared) -> Vec<Value> {
    let sessions = shared.apertur.sessions.lock().unwrap();
    let mut all: Vec<(&Session, &Image)> =
        sessions.values().flat_map(|s| s.images.iter().map(move |i| (s, i))).collect();
    all.sort_by(|a, b| b.1.uploaded.cmp(&a.1.uploaded).then_with(|| b.1.id.cmp(&a.1.id)));
    let now = Utc::now();
    all.iter().map(|(s, i)| s.upload_row(&shared.config.apertur, i, now)).collect()
}

/// `GET /api/v1/sessions?page&pageSize` → `{data: [SessionRow], total, page, pageSize, totalPages}`.
async fn list_sessions(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    rows_answer(&shared, query.as_deref(), &headers, session_rows, Listing::Paged)
}

/// `GET /api/v1/sessions/recent?limit` → `[SessionRow]`.
async fn recent_sessions(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    rows_answer(&shared, query.as_deref(), &headers, session_rows, Listing::Recent)
}

/// `GET /api/v1/uploads?page&pageSize` → `{data: [UploadRow], total, page, pageSize, totalPages}`.
async fn list_uploads(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    rows_answer(&shared, query.as_deref(), &headers, upload_rows, Listing::Paged)
}

/// `GET /api/v1/uploads/recent?limit` → `[UploadRow]`.
async fn recent_uploads(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    rows_answer(&shared, query.as_deref(), &headers, upload_rows, Listing::Recent)
}

/// How a list is answered: a page of the SDK's paging, or the newest `limit` rows.
enum Listing {
    Paged,
    Recent,
}

/// The rows of a list (newest first), after the token check, as `listing` asks.
fn rows_answer(
    shared: &Shared,
    query: Option<&str>,
    headers: &HeaderMap,
    rows: fn(&Shared) -> Vec<Value>,
    listing: Listing,
) -> Response {
    answer((|| -> Answer {
        check_auth(shared, headers)?;
        let body = match listing {
            Listing::Paged => {
                let (page, size) = page_params(query)?;
                paged(rows(shared), page, size)
            }
            Listing::Recent => Value::Array(rows(shared).into_iter().take(limit_param(query)?).collect()),
        };
        Ok(json_response(200, &body))
    })())
}

/// `POST /api/v1/upload/{uuid}/verify-password` {password} → `{"valid": bool}` (the Python SDK
/// types the answer `Dict[str, bool]`; the Node SDK names the field: `{ valid: boolean }`,
/// apertur-node `src/resources/sessions.ts`).
async fn verify_password(
    State(shared): State<Arc<Shared>>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer((|| -> Answer {
        check_auth(&shared, &headers)?;
        let obj = parse_object(&body)?;
        let given = obj.get("password").and_then(Value::as_str).ok_or_else(|| bad_request("password is required"))?;
        let sessions = shared.apertur.sessions.lock().unwrap();
        let s = sessions.get(&uuid).ok_or_else(session_not_found)?;
        let valid = s.password.as_deref().is_none_or(|p| p == given);
        Ok(json_response(200, &json!({ "valid": valid })))
    })())
}
