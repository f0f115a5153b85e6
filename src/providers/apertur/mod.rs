//! Apertur: one upload session per run, each image posted into it as a streamed multipart
//! body, then (with `--wait`) delivery followed per image and per destination.
//!
//! Endpoints (the seed, plus Apertur's Python SDK 0.2.0; see PROVIDERS.md):
//! `POST /api/v1/upload-sessions` creates the session (not idempotent: never repeated blindly);
//! `GET /api/v1/upload/{uuid}/session` reads an existing session's limits;
//! `POST /api/v1/upload/{uuid}/images` takes one image per request, field `file` (not
//! idempotent: repeated only after a 429, which the server answers without storing anything);
//! `GET /api/v1/upload-sessions/{uuid}/delivery-status` (idempotent) in either of its two
//! documented shapes, long-polled with `pollFrom` when the answer carries `lastChanged`.
//!
//! Local checks, before any request: the options (expiry 1..168 h XOR an ISO 8601 time in the
//! future, password 4..128 characters, MIME types among the four Apertur takes, positive
//! limits), then every file: its type from the extension, the session's accepted types and the
//! image limit. A file refused is reported and skipped; when every file is refused no session
//! is created.

pub mod admin;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::api::{Api, RequestSigner, Retry};
use super::{Context, DryRun, Provider, UploadOutcome};
use crate::engine::checksum::{self, CrcSlot};
use crate::engine::form::FilePart;
use crate::engine::http::id_path;
use crate::engine::poll::{Poller, Step};
use crate::engine::progress::Event;
use crate::engine::source::FileSource;
use crate::error::{Error, Result};
use crate::redact::Secret;

/// Documented origin (the seed's; the SDK uses `https://api.aptr.ca`).
pub const DEFAULT_ENDPOINT: &str = "https://api.apertur.ca";
/// How long `--wait` follows deliveries by default: 80 minutes, above the vendor's retry
/// schedule of a failed delivery (5 s, 30 s, 2 min, 10 min, 1 h: about 73 minutes), so a
/// retrying destination ends as delivered or failed, not as a timeout.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(80 * 60);
/// The image types Apertur accepts.
pub const MIME_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/webp", "image/heic"];
const PROVIDER: &str = "apertur";
/// Token environment variable.
pub const TOKEN_ENV: &str = "APERTUR_TOKEN";
/// What Apertur tells about itself.
pub static DESCRIPTOR: super::Descriptor = super::Descriptor {
    name: PROVIDER,
    title: "Apertur",
    endpoint: DEFAULT_ENDPOINT,
    rc_endpoint: None,
    token_env: TOKEN_ENV,
    sign_in: None,
    config_section: PROVIDER,
};

/// The MIME type of an image file from its extension (jpeg/jpg, png, webp, heic).
pub fn mime_for(path: &std::path::Path) -> Option<&'static str> {
    let ext = path.extension()?.to_string_lossy().to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => Some("image/jpeg"),
        "png" => Some("image/png"),
        "webp" => Some("image/webp"),
        "heic" => Some("image/heic"),
        _ => None,
    }
}

/// Signs JSON requests: `X-Aptr-Timestamp: <unix s>` and `X-Aptr-Signature: sha256=<hex
/// HMAC-SHA256(secret, "{ts}.{METHOD}.{path+query}.{sha256hex(body)}")>` (the SDK's
/// `sign_request`).
pub struct AperturSigner {
    secret: Secret,
}

impl AperturSigner {
    /// A signer with this secret.
    pub fn new(secret: Secret) -> Self {
        AperturSigner { secret }
    }

    /// The signature header value for a request at `timestamp`.
    pub fn signature(&self, timestamp: i64, method: &str, path_and_query: &str, body: &[u8]) -> String {
        let base = format!(
            "{timestamp}.{}.{path_and_query}.{}",
            method.to_ascii_uppercase(),
            hex::encode(Sha256::digest(body))
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.expose().as_bytes()).expect("any key length");
        mac.update(base.as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

impl RequestSigner for AperturSigner {
    fn headers(&self, method: &Method, path_and_query: &str, body: &[u8]) -> Vec<(String, String)> {
        let ts = chrono::Utc::now().timestamp();
        vec![
            ("X-Aptr-Timestamp".into(), ts.to_string()),
            ("X-Aptr-Signature".into(), self.signature(ts, method.as_str(), path_and_query, body)),
        ]
    }
}

/// The signer for `--signing-secret`, when one is given.
pub fn signer(secret: Option<&Secret>) -> Option<Arc<dyn RequestSigner>> {
    let secret = secret?.clone();
    if secret.is_empty() {
        return None;
    }
    Some(Arc::new(AperturSigner::new(secret)))
}

/// Checks an id that goes into a URL path (session, destination, project).
pub fn check_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
        return Err(Error::usage(
            format!("{what} '{id}' is not a valid id"),
            "ids are made of letters, digits, '-', '_' and '.', e.g. sess_01HX4ABCDEFGHIJKLMN",
        ));
    }
    Ok(())
}

/// Checks `--allowed-mime-type` values; returns them lower-cased, without duplicates.
pub fn check_mime_types(list: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for m in list {
        let m = m.trim().to_ascii_lowercase();
        if !MIME_TYPES.contains(&m.as_str()) {
            return Err(Error::usage(
                format!("--allowed-mime-type '{m}' is not a type Apertur accepts"),
                format!("use one or more of {}", MIME_TYPES.join(", ")),
            ));
        }
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

/// Checks a session password (4 to 128 characters).
pub fn check_password(p: &str) -> Result<()> {
    let n = p.chars().count();
    if !(4..=128).contains(&n) {
        return Err(Error::usage(
            format!("the session password has {n} characters; Apertur takes 4 to 128"),
            "choose a password of 4 to 128 characters",
        ));
    }
    Ok(())
}

/// Checks an ISO 8601 expiry in the future; returns it as given.
pub fn check_expires_at(t: &str) -> Result<String> {
    let parsed = chrono::DateTime::parse_from_rfc3339(t.trim()).map_err(|_| {
        Error::usage(
            format!("--expires-at '{t}' is not an ISO 8601 date-time"),
            "give a time with its offset, e.g. 2026-03-29T10:00:00Z",
        )
    })?;
    if parsed <= chrono::Utc::now() {
        return Err(Error::usage(format!("--expires-at {t} is in the past"), "give a time in the future"));
    }
    Ok(t.trim().to_string())
}

/// Apertur settings as a user gives them (the command line's flags, the configuration file, or
/// a library caller), before [`Apertur::new`] validates them.
#[derive(Clone, Debug)]
pub struct AperturOptions {
    /// Upload into this existing session instead of creating one.
    pub session: Option<String>,
    /// Destination ids of the new session.
    pub destinations: Vec<String>,
    /// Free-text tags of the new session (`order:456`).
    pub tags: Vec<String>,
    /// Session lifetime in hours (1 to 168).
    pub expires_in_hours: Option<u32>,
    /// Session expiry as an ISO 8601 time.
    pub expires_at: Option<String>,
    /// Maximum number of images in the session.
    pub max_images: Option<u32>,
    /// Accepted MIME types (image/jpeg, image/png, image/webp, image/heic).
    pub allowed_mime_types: Vec<String>,
    /// Maximum width or height in pixels.
    pub max_image_dimension: Option<u32>,
    /// Session password (4 to 128 characters).
    pub password: Option<Secret>,
    /// Enable long polling (pull-based delivery) on the new session.
    pub long_polling: bool,
    /// Images in flight at once (default 8).
    pub concurrency: usize,
    /// Follow deliveries after the uploads.
    pub wait: bool,
    /// Longest wait for deliveries (default [`DEFAULT_WAIT_TIMEOUT`], 80 minutes).
    pub wait_timeout: Duration,
    /// First interval between status polls (default 2 s).
    pub poll_interval: Duration,
}

impl Default for AperturOptions {
    /// The command line's defaults: a new session with the account's defaults, 8 images at
    /// once, no wait (80 minutes when waiting, polls from 2 s).
    fn default() -> Self {
        AperturOptions {
            session: None,
            destinations: Vec::new(),
            tags: Vec::new(),
            expires_in_hours: None,
            expires_at: None,
            max_images: None,
            allowed_mime_types: Vec::new(),
            max_image_dimension: None,
            password: None,
            long_polling: false,
            concurrency: 8,
            wait: false,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// Validated Apertur settings of an upload run.
#[derive(Clone, Debug)]
struct Settings {
    /// An existing session to upload into.
    pub session: Option<String>,
    /// The create-session body (when no `--session`), without the password.
    pub create: serde_json::Map<String, Value>,
    /// Limits known before asking the server: accepted types and image count.
    pub allowed: Vec<String>,
    /// `--max-images`.
    pub max_images: Option<u32>,
    /// `x-session-password`.
    pub password: Option<Secret>,
    /// Images in flight at once.
    pub concurrency: usize,
    /// Follow deliveries after the uploads.
    pub wait: bool,
    /// Longest wait.
    pub wait_timeout: Duration,
    /// First interval between status polls.
    pub poll_interval: Duration,
}

impl Settings {
    /// Validates the settings (no request): an existing session takes none of a new
    /// session's options ([`refuse_new_session_options`]); a new one's body is
    /// [`create_body`]'s; the password is checked.
    fn from_options(a: &AperturOptions) -> Result<Self> {
        if let Some(s) = &a.session {
            check_id("--session", s)?;
            refuse_new_session_options(a)?;
        }
        let (create, allowed) = create_body(a)?;
        let password = a.password.clone();
        if let Some(p) = &password {
            check_password(p.expose())?;
        }
        Ok(Settings {
            session: a.session.clone(),
            create,
            allowed: if allowed.is_empty() { MIME_TYPES.iter().map(|s| s.to_string()).collect() } else { allowed },
            max_images: a.max_images,
            password,
            concurrency: a.concurrency.max(1),
            wait: a.wait,
            wait_timeout: a.wait_timeout,
            poll_interval: a.poll_interval,
        })
    }
}

/// With `--session`, the options that set up a new session are refused, all named at once.
fn refuse_new_session_options(a: &AperturOptions) -> Result<()> {
    let given: Vec<&str> = [
        (!a.destinations.is_empty(), "--destination"),
        (!a.tags.is_empty(), "--tag"),
        (a.expires_in_hours.is_some(), "--expires-in-hours"),
        (a.expires_at.is_some(), "--expires-at"),
        (a.max_images.is_some(), "--max-images"),
        (!a.allowed_mime_types.is_empty(), "--allowed-mime-type"),
        (a.max_image_dimension.is_some(), "--max-image-dimension"),
        (a.long_polling, "--long-polling"),
    ]
    .into_iter()
    .filter_map(|(set, flag)| set.then_some(flag))
    .collect();
    if given.is_empty() {
        return Ok(());
    }
    Err(Error::usage(
        format!("{} set up a new session and cannot be used with --session", given.join(", ")),
        "drop --session to create a new session with these options, or change the existing one with `upload apertur session update`",
    ))
}

/// The create-session body of the options (without the password), each value checked in
/// the order of the flags, and the accepted MIME types given (empty: Apertur's default).
fn create_body(a: &AperturOptions) -> Result<(serde_json::Map<String, Value>, Vec<String>)> {
    let mut create = serde_json::Map::new();
    if !a.destinations.is_empty() {
        for d in &a.destinations {
            check_id("--destination", d)?;
        }
        create.insert("destination_ids".into(), json!(a.destinations));
    }
    if a.long_polling {
        create.insert("long_polling".into(), json!(true));
    }
    if !a.tags.is_empty() {
        if a.tags.iter().any(|t| t.trim().is_empty()) {
            return Err(Error::usage("an empty --tag", "give tags such as --tag order:456"));
        }
        create.insert("tags".into(), json!(a.tags));
    }
    if let Some((key, value)) = expiry(a)? {
        create.insert(key.into(), value);
    }
    if let Some(m) = a.max_images {
        if m == 0 {
            return Err(Error::usage("--max-images must be at least 1", "give a positive number"));
        }
        create.insert("max_images".into(), json!(m));
    }
    let allowed = check_mime_types(&a.allowed_mime_types)?;
    if !allowed.is_empty() {
        create.insert("allowed_mime_types".into(), json!(allowed));
    }
    if let Some(d) = a.max_image_dimension {
        if d == 0 {
            return Err(Error::usage("--max-image-dimension must be at least 1", "give a size in pixels"));
        }
        create.insert("max_image_dimension".into(), json!(d));
    }
    Ok((create, allowed))
}

/// The new session's lifetime: `expires_in_hours` (1 to 168) or `expires_at` (a future ISO
/// 8601 time), not both; `None` for the account's default.
fn expiry(a: &AperturOptions) -> Result<Option<(&'static str, Value)>> {
    match (a.expires_in_hours, &a.expires_at) {
        (Some(_), Some(_)) => {
            Err(Error::usage("--expires-in-hours and --expires-at are mutually exclusive", "give one of them"))
        }
        (Some(h), None) if !(1..=168).contains(&h) => {
            Err(Error::usage(format!("--expires-in-hours {h} is out of range"), "a session lives 1 to 168 hours"))
        }
        (Some(h), None) => Ok(Some(("expires_in_hours", json!(h)))),
        (None, Some(t)) => Ok(Some(("expires_at", json!(check_expires_at(t)?)))),
        (None, None) => Ok(None),
    }
}

/// A session of the run.
#[derive(Clone, Debug)]
struct SessionInfo {
    id: String,
    long_polling: Option<bool>,
}

/// The sessions of a run: the one images go to now, and every one used (for `--wait`).
#[derive(Default)]
struct Sessions {
    /// Where images go now.
    current: Option<SessionInfo>,
    /// The first creation failed: every image fails with this error (not tried again).
    failed: Option<Arc<Error>>,
    /// Every session of the run, in order, with the images stored in it.
    used: Vec<(SessionInfo, Vec<String>)>,
    /// `--session` only (a session the run cannot replace): the server's refusal once it said
    /// the session holds no more images; the run's other images are then not sent.
    full: Option<String>,
}

/// Most sessions one image tries before giving up (each renewal opens one).
const SESSIONS_PER_IMAGE: u32 = 3;
/// How far the client's clock and the server's may differ, for times compared across them.
const CLOCK_SLACK: chrono::TimeDelta = chrono::TimeDelta::minutes(2);
/// Pages of the uploads list read to settle one lost image answer (100 rows each).
const LOOKUP_PAGES: u32 = 20;

/// The Apertur provider: a session per run (created on first need and shared by every file),
/// replaced by a new one with the same options when it expires or fills up.
pub struct Apertur {
    options: Settings,
    sessions: tokio::sync::Mutex<Sessions>,
    /// Image ids this run stored (or found stored after a lost answer): a look-up never takes
    /// one of them for another image.
    claimed: Mutex<std::collections::HashSet<String>>,
}

impl Apertur {
    /// The limits a run's images meet: those of the options for a new session (its image
    /// limit is no limit for the run: a full session is replaced by a new one), the server's
    /// for an existing one: (allowed types, image limit, room left).
    async fn session_limits(&self, ctx: &Context) -> Result<(Vec<String>, Option<u64>, Option<u64>)> {
        Ok(match &self.options.session {
            None => (self.options.allowed.clone(), None, None),
            Some(id) => {
                let path = id_path(PROVIDER, "get session", "/api/v1/upload/{}/session", &[("session id", id)])?;
                let s: Value = ctx.api.get("get session", &path, &[]).json().await?;
                let allowed = s
                    .get("effectiveAllowedMimeTypes")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|m| m.as_str().map(str::to_ascii_lowercase)).collect::<Vec<_>>())
                    .filter(|a| !a.is_empty())
                    .unwrap_or_else(|| MIME_TYPES.iter().map(|s| s.to_string()).collect());
                let max = s.get("effectiveMaxImages").and_then(Value::as_u64);
                let count = s.get("imagesCount").and_then(Value::as_u64).unwrap_or(0);
                (allowed, max, max.map(|m| m.saturating_sub(count)))
            }
        })
    }

    /// A provider with these settings, checked (no request): ids, MIME types, limits and
    /// password well formed, no new-session option beside an existing session.
    pub fn new(options: AperturOptions) -> Result<Self> {
        Ok(Apertur {
            options: Settings::from_options(&options)?,
            sessions: Default::default(),
            claimed: Default::default(),
        })
    }

    /// The session images go to now: `--session`, else one created on the first upload, once,
    /// for every file of the run (concurrent uploads wait for it). A failed first creation is
    /// not tried again by the other files: they fail with the same error.
    async fn session(&self, api: &Api) -> Result<SessionInfo> {
        let mut s = self.sessions.lock().await;
        if let Some(c) = &s.current {
            return Ok(c.clone());
        }
        if let Some(e) = &s.failed {
            return Err(replay(e));
        }
        match self.create_session(api).await {
            Ok(info) => {
                s.current = Some(info.clone());
                s.used.push((info.clone(), Vec::new()));
                Ok(info)
            }
            Err(e) => {
                let e = Arc::new(e);
                s.failed = Some(e.clone());
                Err(replay(&e))
            }
        }
    }

    /// Replaces the session `old`, which `why` (`has expired`, `is full`), by a new one with
    /// the same options, and says so in one line; when another image replaced it already,
    /// that one. Only sessions this run created are replaced (`--session` is the user's).
    async fn renew(&self, ctx: &Context, old: &str, why: &str) -> Result<SessionInfo> {
        let mut s = self.sessions.lock().await;
        if let Some(c) = s.current.as_ref().filter(|c| c.id != old) {
            return Ok(c.clone());
        }
        let info = self.create_session(&ctx.api).await?;
        let line = format!("apertur: session {old} {why}; opened session {} with the same options", info.id);
        tracing::info!("{line}");
        ctx.progress.event(Event::Notice { message: line });
        s.current = Some(info.clone());
        s.used.push((info.clone(), Vec::new()));
        Ok(info)
    }

    /// Images this run stored in session `id` so far.
    async fn stored_in(&self, id: &str) -> usize {
        self.sessions.lock().await.used.iter().find(|(s, _)| s.id == id).map_or(0, |(_, images)| images.len())
    }

    async fn record(&self, session: &str, image: &str) {
        self.claimed.lock().expect("claimed lock").insert(image.to_string());
        let mut s = self.sessions.lock().await;
        if let Some((_, images)) = s.used.iter_mut().find(|(info, _)| info.id == session) {
            images.push(image.to_string());
        }
    }

    async fn create_session(&self, api: &Api) -> Result<SessionInfo> {
        if let Some(id) = &self.options.session {
            return Ok(SessionInfo { id: id.clone(), long_polling: None });
        }
        // The password joins the body only here: `create` is shown by `Debug`.
        let mut body = self.options.create.clone();
        if let Some(p) = &self.options.password {
            body.insert("password".into(), json!(p.expose()));
        }
        let created: Value = api
            .call("create session", Method::POST, "/api/v1/upload-sessions", &[], Some(&body), Retry::Once)
            .json()
            .await?;
        let id = created
            .get("id")
            .or_else(|| created.get("uuid"))
            .and_then(Value::as_str)
            .ok_or_else(|| protocol("create session", "the answer has no session id (`id` or `uuid`)"))?;
        crate::engine::http::check_path_id(PROVIDER, "create session", "session id", id)?;
        tracing::info!(session = id, "apertur: session created");
        Ok(SessionInfo { id: id.to_string(), long_polling: created.get("long_polling").and_then(Value::as_bool) })
    }

    /// The MIME type of a path, or why Apertur cannot take it (`size`: the file's, when known).
    fn path_type(&self, path: &std::path::Path, size: Option<u64>) -> Result<&'static str> {
        let mime = mime_for(path).ok_or_else(|| {
            Error::usage(
                format!(
                    "{}: Apertur takes JPEG, PNG, WebP and HEIC images (.jpg, .jpeg, .png, .webp, .heic)",
                    path.display()
                ),
                "convert the file to one of these formats, or leave it out",
            )
        })?;
        if size == Some(0) {
            return Err(Error::usage(format!("{} is empty", path.display()), "leave the empty file out"));
        }
        Ok(mime)
    }

    /// The file's MIME type, or why Apertur cannot take it.
    fn image_type(&self, file: &FileSource) -> Result<&'static str> {
        self.path_type(file.path(), Some(file.size()))
    }

    /// Refuses, without a request, an image for a `--session` the server said is full.
    async fn not_full(&self, what: &str) -> Result<()> {
        match &self.sessions.lock().await.full {
            Some(refusal) => Err(session_full(what, &format!("not sent: the session is full ({refusal})"))),
            None => Ok(()),
        }
    }

    /// Uploads one image: into the run's session, into a new one (same options) when the
    /// session has expired (410) or is full (`MAX_IMAGES_REACHED`, or as many images as
    /// `--max-images` stored by this run); a lost answer is settled by the uploads list before
    /// the image is sent again. The session it went to, and the answer.
    async fn upload_image(
        &self,
        ctx: &Context,
        file: &FileSource,
        mime: &'static str,
        crc: &CrcSlot,
    ) -> Result<(SessionInfo, Value)> {
        let what = format!("upload {}", file.file_name());
        let renewable = self.options.session.is_none();
        let mut session = self.session(&ctx.api).await?;
        for round in 1..=SESSIONS_PER_IMAGE {
            let last = round == SESSIONS_PER_IMAGE;
            if renewable
                && !last
                && let Some(max) = self.options.max_images
                && self.stored_in(&session.id).await >= max as usize
            {
                session = self.renew(ctx, &session.id, "is full").await?;
            }
            self.not_full(&what).await?;
            let since = chrono::Utc::now() - CLOCK_SLACK;
            // The whole send, look-ups and resends: the run's bound for such operations, plus the
            // image at 64 KiB/s (a moving upload is not cut; a stalled one is, by the idle
            // timeout of each request).
            let deadline = ctx.api.exec.operation_deadline() + Duration::from_secs(file.size() / 65_536);
            let answer = crate::engine::multipart::send_once_then_look_up(
                (PROVIDER, what.as_str()),
                &ctx.api.retry,
                (deadline, ctx.api.exec.idle_timeout()),
                &ctx.cancel,
                |e| matches!(e, Error::Ambiguous { .. }),
                || self.post_image(ctx, file, mime, &session.id, &what, crc),
                || self.find_image(&ctx.api, &session.id, file, since),
            )
            .await;
            match answer {
                Ok(v) => {
                    if let Some(id) = v.get("id").and_then(Value::as_str) {
                        self.record(&session.id, id).await;
                    }
                    return Ok((session, v));
                }
                Err(Error::Rejected { status: 410, .. }) if renewable && !last => {
                    session = self.renew(ctx, &session.id, "has expired").await?;
                }
                Err(Error::Rejected { code: Some(code), .. }) if code == "MAX_IMAGES_REACHED" && renewable && !last => {
                    session = self.renew(ctx, &session.id, "is full").await?;
                }
                Err(Error::Rejected { status: 400, code: Some(code), message, .. })
                    if code == "MAX_IMAGES_REACHED" && !renewable =>
                {
                    self.sessions.lock().await.full.get_or_insert(message.clone());
                    return Err(session_full(&what, &message));
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last round returns")
    }

    /// What a lost image answer did: the uploads list (`GET /api/v1/uploads?page&pageSize`,
    /// newest first when the server says so) is read for a row of this session, this file's
    /// name and size, created since the request went out and not already claimed by this run.
    /// One row: stored (its id is the image's). None: the image may be sent again. Several:
    /// they cannot be told apart, the look-up fails (the image is not sent again).
    async fn find_image(
        &self,
        api: &Api,
        session: &str,
        file: &FileSource,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::engine::multipart::Lookup<Value>> {
        use crate::engine::multipart::Lookup;
        let name = file.file_name();
        let rows = admin::uploads_since(api, since, LOOKUP_PAGES).await?;
        let claimed = self.claimed.lock().expect("claimed lock").clone();
        let found: Vec<&Value> = rows
            .iter()
            .filter(|r| {
                text(r, &["sessionId"]).as_deref() == Some(session)
                    && text(r, &["filename"]).as_deref() == Some(name.as_str())
                    && r.get("sizeBytes").and_then(Value::as_u64) == Some(file.size())
                    && text(r, &["id"]).is_some_and(|id| !claimed.contains(&id))
            })
            .collect();
        match found.as_slice() {
            [] => Ok(Lookup::NotFound),
            [row] => {
                let id = text(row, &["id"]).unwrap_or_default();
                crate::engine::http::check_path_id(PROVIDER, "list uploads", "image id", &id)?;
                if !self.claimed.lock().expect("claimed lock").insert(id.clone()) {
                    return Err(protocol(
                        "list uploads",
                        &format!("image {id} was just taken by another file of this run"),
                    ));
                }
                tracing::info!(image = %id, session, file = %name, "apertur: the image whose answer was lost is stored");
                Ok(Lookup::Found(json!({
                    "id": id,
                    "filename": name,
                    "size_bytes": file.size(),
                    "found_by": "GET /api/v1/uploads",
                })))
            }
            several => Err(protocol(
                "list uploads",
                &format!(
                    "{} uploads of {name} ({} bytes) in session {session} since the lost request: cannot tell which one it made",
                    several.len(),
                    file.size()
                ),
            )),
        }
    }

    /// One `POST /api/v1/upload/{uuid}/images` of the file (not sent again after it may have
    /// arrived: [`Error::Ambiguous`]); its answer.
    async fn post_image(
        &self,
        ctx: &Context,
        file: &FileSource,
        mime: &'static str,
        session: &str,
        what: &str,
        crc: &CrcSlot,
    ) -> Result<Value> {
        let crc = crc.clone();
        let part = FilePart { field: "file".into(), file_name: file.file_name(), content_type: mime.into() };
        let framing = crate::engine::form::form(&[], &part, file.size());
        let length = framing.content_length;
        let content_type = framing.content_type();
        let password = self.options.password.clone();
        let source = file.clone();
        let rate = ctx.uploader.rate.clone();
        // Bytes of the attempt in flight: taken back when an attempt is sent again or fails.
        let sent = Arc::new(AtomicU64::new(0));
        let progress = ctx.progress.clone();
        let attach = {
            let (sent, progress) = (sent.clone(), progress.clone());
            move |req: reqwest::RequestBuilder| {
                let before = sent.swap(0, Ordering::Relaxed);
                if before > 0 {
                    progress.event(Event::Bytes { part: 1, delta: -(before as i64) });
                }
                let (sent, progress) = (sent.clone(), progress.clone());
                // Every attempt that hands out the whole file leaves its CRC (the same bytes).
                let body = framing.body(
                    &source,
                    rate.clone(),
                    move |n| {
                        sent.fetch_add(n, Ordering::Relaxed);
                        progress.event(Event::Bytes { part: 1, delta: n as i64 });
                    },
                    crc.clone(),
                );
                let mut req = req
                    .header(reqwest::header::CONTENT_TYPE, content_type.as_str())
                    .header(reqwest::header::CONTENT_LENGTH, length)
                    .body(body);
                if let Some(p) = &password {
                    req = req.header("x-session-password", p.expose());
                }
                req
            }
        };
        // Each image takes a permit of the run's pool (pinned or tuned, like parts) for its
        // request, and throttling answers tell the pool.
        let pool = ctx.uploader.shared_permits.clone();
        let on_retry = pool.clone().map(|p| {
            Arc::new(move |n: &crate::engine::request::RetryNotice| {
                if n.throttled() {
                    p.throttled();
                }
            }) as crate::engine::request::Notifier
        });
        // No bound on the whole request: the idle watch cuts it when it stops moving.
        let api = Api { on_retry, ..ctx.api.clone() };
        let path = id_path(PROVIDER, what, "/api/v1/upload/{}/images", &[("session id", session)])?;
        let url = api.url(&path);
        let permit = match &pool {
            Some(p) => tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => {
                    return Err(Error::Interrupted { hint: "run the same command again to upload the rest".into() });
                }
                permit = p.acquire_whole(length) => Some(permit),
            },
            None => None,
        };
        // The session may have filled up while this image waited for its permit.
        self.not_full(what).await?;
        let result = api.execute(what, Method::POST, url, Retry::Once, None, &attach).await;
        if let (Ok(_), Some(permit)) = (&result, permit) {
            permit.finished();
        }
        // Settle the count: the whole image once stored, nothing when it failed.
        let counted = sent.swap(0, Ordering::Relaxed) as i64;
        let settled = if result.is_ok() { file.size() as i64 } else { 0 };
        if settled != counted {
            progress.event(Event::Bytes { part: 1, delta: settled - counted });
        }
        let answer = result?;
        serde_json::from_slice(&answer.body).map_err(|e| protocol(what, &format!("cannot read the answer: {e}")))
    }
}

/// The same error again, for every file that needed the session whose creation failed.
fn replay(e: &Error) -> Error {
    match e {
        Error::Usage { message, hint } => Error::Usage { message: message.clone(), hint: hint.clone() },
        Error::Auth { provider, message, hint } => {
            Error::Auth { provider, message: message.clone(), hint: hint.clone() }
        }
        Error::Rejected { provider, what, status, code, message } => Error::Rejected {
            provider,
            what: what.clone(),
            status: *status,
            code: code.clone(),
            message: message.clone(),
        },
        Error::Network { provider, what, message } => {
            Error::Network { provider, what: what.clone(), message: message.clone() }
        }
        Error::Ambiguous { provider, what, message } => {
            Error::Ambiguous { provider, what: what.clone(), message: message.clone() }
        }
        Error::Interrupted { hint } => Error::Interrupted { hint: hint.clone() },
        other => protocol("create session", &other.to_string()),
    }
}

/// The session holds no more images: this one was refused (or not sent).
fn session_full(what: &str, message: &str) -> Error {
    Error::Rejected {
        provider: PROVIDER,
        what: what.into(),
        status: 400,
        code: Some("MAX_IMAGES_REACHED".into()),
        message: message.into(),
    }
}

fn protocol(what: &str, message: &str) -> Error {
    Error::Protocol { provider: PROVIDER, what: what.into(), message: message.into() }
}

#[async_trait]
impl Provider for Apertur {
    fn descriptor(&self) -> &'static super::Descriptor {
        &DESCRIPTOR
    }

    fn dry_run(&self, file: &FileSource) -> Result<DryRun> {
        let mime = self.image_type(file)?;
        if !self.options.allowed.iter().any(|m| m == mime) {
            return Err(not_allowed(file.path(), mime, &self.options.allowed));
        }
        let mut fields = serde_json::Map::new();
        fields.insert("mime_type".into(), mime.into());
        let mut requests = Vec::new();
        match &self.options.session {
            Some(s) => {
                fields.insert("session_id".into(), s.clone().into());
                requests.push(format!("GET /api/v1/upload/{s}/session (limits of the session)"));
            }
            None => requests.push("POST /api/v1/upload-sessions (once for the run)".into()),
        }
        requests.push(format!("POST /api/v1/upload/{{uuid}}/images (multipart/form-data, field file, {mime})"));
        if self.options.wait {
            requests.push(format!(
                "GET /api/v1/upload-sessions/{{uuid}}/delivery-status until every delivery ends (at most {} s)",
                self.options.wait_timeout.as_secs()
            ));
        }
        Ok(DryRun {
            provider: PROVIDER,
            file: file.path().display().to_string(),
            bytes: file.size(),
            part_size: None,
            parts: Some(1),
            requests,
            fields,
        })
    }

    fn concurrent_files(&self) -> usize {
        self.options.concurrency.max(1)
    }

    async fn prepare(&self, ctx: &Context, files: &[&Path]) -> Result<Vec<(usize, Error)>> {
        let mut refused: Vec<(usize, Error)> = files
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let size = std::fs::metadata(p).ok().filter(|m| m.is_file()).map(|m| m.len());
                self.path_type(p, size).err().map(|e| (i, e))
            })
            .collect();
        if refused.len() == files.len() {
            return Ok(refused);
        }
        let (allowed, limit, room) = self.session_limits(ctx).await?;
        let not_an_image: Vec<usize> = refused.iter().map(|(i, _)| *i).collect();
        let mut taken = 0u64;
        for (i, path) in files.iter().enumerate() {
            if not_an_image.binary_search(&i).is_ok() {
                continue;
            }
            let mime = mime_for(path).expect("checked above");
            if !allowed.iter().any(|m| m == mime) {
                refused.push((i, not_allowed(path, mime, &allowed)));
            } else if room.is_some_and(|r| taken >= r) {
                refused.push((
                    i,
                    Error::usage(
                        format!("{}: over the session's limit of {} images", path.display(), limit.unwrap_or_default()),
                        "raise --max-images, or upload the other files into another session",
                    ),
                ));
            } else {
                taken += 1;
            }
        }
        refused.sort_by_key(|(i, _)| *i);
        Ok(refused)
    }

    async fn upload(&self, ctx: &Context, file: FileSource) -> Result<UploadOutcome> {
        let started = Instant::now();
        let mime = self.image_type(&file)?;
        ctx.progress.event(Event::Started {
            file: file.file_name(),
            total_bytes: file.size(),
            parts: 1,
            done_bytes: 0,
            done_parts: 0,
        });
        let crc = CrcSlot::new();
        let (session, answer) = self.upload_image(ctx, &file, mime, &crc).await?;
        file.check_unchanged()?;
        // An image a look-up found stored (its answer was lost) was sent whole by an attempt
        // that may not have said so: its bytes are the file's, read again.
        let crc64nvme = match crc.get() {
            Some(c) => c,
            None => checksum::whole_file(&file, vec![(None, 0, file.size())])
                .await
                .map_err(|source| Error::File { path: file.path().to_path_buf(), source })?,
        };
        ctx.progress.event(Event::PartDone { part: 1 });
        ctx.progress.event(Event::Finished);
        let image_id = answer
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| protocol("upload image", "the answer has no image `id`"))?
            .to_string();
        let mut fields = serde_json::Map::new();
        fields.insert("session_id".into(), session.id.clone().into());
        fields.insert("image_id".into(), image_id.clone().into());
        fields.insert("mime_type".into(), mime.into());
        for key in ["filename", "size_bytes", "destinations", "long_polling", "found_by"] {
            if let Some(v) = answer.get(key) {
                fields.insert(key.into(), v.clone());
            }
        }
        if !fields.contains_key("long_polling")
            && let Some(lp) = session.long_polling
        {
            fields.insert("long_polling".into(), lp.into());
        }
        Ok(UploadOutcome {
            provider: PROVIDER,
            file: file.path().display().to_string(),
            bytes: file.size(),
            id: image_id,
            status: "uploaded".into(),
            vendor_status: "uploaded".into(),
            parts: 1,
            elapsed_s: started.elapsed().as_secs_f64(),
            crc64nvme: Some(checksum::to_base64(crc64nvme)),
            fields,
        })
    }

    async fn finish(&self, ctx: &Context) -> Result<()> {
        if !self.options.wait {
            return Ok(());
        }
        let used: Vec<(String, usize)> = self
            .sessions
            .lock()
            .await
            .used
            .iter()
            .filter(|(_, images)| !images.is_empty())
            .map(|(s, images)| (s.id.clone(), images.len()))
            .collect();
        // Every session the run used, one after the other, within one deadline; a failed
        // delivery is reported once every session was followed.
        let deadline = Instant::now() + self.options.wait_timeout;
        let mut failed = None;
        for (session, expected) in used {
            let follow = Follow {
                api: ctx.api.clone(),
                session,
                expected_images: expected,
                timeout: deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)),
                interval: self.options.poll_interval,
                progress: ctx.progress.clone(),
            };
            match follow.run(&ctx.cancel).await {
                Ok(()) => {}
                Err(e @ Error::ProcessingFailed { .. }) => {
                    failed.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

fn not_allowed(path: &std::path::Path, mime: &str, allowed: &[String]) -> Error {
    Error::usage(
        format!("{}: the session accepts only {}, not {mime}", path.display(), allowed.join(", ")),
        "leave the file out, or allow its type with --allowed-mime-type",
    )
}

/// One delivery of one image to one destination, from either delivery-status shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The image (`image_id` or `record_id`).
    pub image_id: String,
    /// The image's file name or index, for people.
    pub image_label: String,
    /// Destination id.
    pub destination_id: String,
    /// Destination name.
    pub destination_name: String,
    /// Destination type.
    pub destination_type: String,
    /// `delivered`, `pending`, `failed`, ...
    pub status: String,
    /// Attempts so far, when given.
    pub attempts: Option<u64>,
    /// The last error, when given.
    pub last_error: Option<String>,
}

impl Delivery {
    /// `Some(true)` delivered, `Some(false)` failed, `None` still in progress.
    pub fn outcome(&self) -> Option<bool> {
        match self.status.to_ascii_lowercase().as_str() {
            // `sent` is the SDK's word for delivered; `sending` and `retrying` are in progress.
            "delivered" | "sent" | "success" | "succeeded" => Some(true),
            "failed" | "error" => Some(false),
            _ => None,
        }
    }
}

/// A delivery-status answer, normalised.
#[derive(Clone, Debug, Default)]
pub struct DeliveryReport {
    /// Images listed.
    pub images: usize,
    /// Every delivery.
    pub deliveries: Vec<Delivery>,
    /// The session's status (SDK shape only).
    pub session_status: Option<String>,
    /// `lastChanged` (SDK shape only): the `pollFrom` of the next long poll.
    pub last_changed: Option<String>,
}

fn text(v: &Value, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match v.get(*k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// Reads both documented shapes: the seed's `{session_id, images[{image_id, image_index,
/// deliveries[{destination_id, destination_name, destination_type, status, ...}]}]}` and the
/// SDK's `{status, files[{record_id, filename, destinations[{destination_id, type, name,
/// status, attempts, last_error}]}], lastChanged}`.
pub fn parse_delivery_status(v: &Value) -> Result<DeliveryReport> {
    let (list, inner) = if let Some(images) = v.get("images").and_then(Value::as_array) {
        (images, "deliveries")
    } else if let Some(files) = v.get("files").and_then(Value::as_array) {
        (files, "destinations")
    } else {
        return Err(protocol("delivery status", "the answer has neither `images` nor `files`"));
    };
    let mut report = DeliveryReport {
        images: list.len(),
        deliveries: Vec::new(),
        session_status: text(v, &["status"]),
        last_changed: text(v, &["lastChanged", "last_changed"]),
    };
    for (i, img) in list.iter().enumerate() {
        let image_id = text(img, &["image_id", "record_id", "id"]).unwrap_or_else(|| format!("#{i}"));
        let image_label = text(img, &["filename"])
            .or_else(|| text(img, &["image_index"]).map(|n| format!("image {n}")))
            .unwrap_or_else(|| image_id.clone());
        for d in img.get(inner).and_then(Value::as_array).into_iter().flatten() {
            report.deliveries.push(Delivery {
                image_id: image_id.clone(),
                image_label: image_label.clone(),
                destination_id: text(d, &["destination_id", "id"]).unwrap_or_default(),
                destination_name: text(d, &["destination_name", "name"]).unwrap_or_default(),
                destination_type: text(d, &["destination_type", "type"]).unwrap_or_default(),
                status: text(d, &["status"]).unwrap_or_else(|| "unknown".into()),
                attempts: d.get("attempts").and_then(Value::as_u64),
                last_error: text(d, &["last_error", "error"]),
            });
        }
    }
    Ok(report)
}

/// One summary line per destination: `Production S3 (s3, d290f1ee-…): 5 delivered, 0 failed, 0 pending`.
pub fn destination_lines(report: &DeliveryReport) -> Vec<(String, bool)> {
    let mut order: Vec<String> = Vec::new();
    for d in &report.deliveries {
        if !order.contains(&d.destination_id) {
            order.push(d.destination_id.clone());
        }
    }
    order
        .iter()
        .map(|id| {
            let ds: Vec<&Delivery> = report.deliveries.iter().filter(|d| &d.destination_id == id).collect();
            let delivered = ds.iter().filter(|d| d.outcome() == Some(true)).count();
            let failed = ds.iter().filter(|d| d.outcome() == Some(false)).count();
            let pending = ds.len() - delivered - failed;
            let first = ds[0];
            let mut line = format!(
                "{} ({}, {}): {delivered} delivered, {failed} failed, {pending} pending",
                first.destination_name, first.destination_type, id
            );
            if let Some(err) = ds.iter().filter(|d| d.outcome() == Some(false)).find_map(|d| d.last_error.clone()) {
                line.push_str(&format!(" (last error: {err})"));
            }
            (line, failed > 0)
        })
        .collect()
}

/// Follows a session's deliveries until every one has ended.
pub struct Follow {
    /// The API.
    pub api: Api,
    /// Session id.
    pub session: String,
    /// Images the session must list before it can be done.
    pub expected_images: usize,
    /// Longest wait (`--wait-timeout`).
    pub timeout: Duration,
    /// First polling interval (`--poll-interval`), grows ×1.5 up to 30 s.
    pub interval: Duration,
    /// Receives a [`Event::Notice`] per destination once the deliveries ended.
    pub progress: Arc<dyn crate::engine::progress::Progress>,
}

impl Follow {
    /// Long-polls with `pollFrom` when the server gives `lastChanged`, else polls with backoff.
    /// Ends with `Ok` when every delivery succeeded, [`Error::ProcessingFailed`] when one
    /// failed, [`Error::Timeout`] at the deadline.
    pub async fn run(&self, cancel: &tokio_util::sync::CancellationToken) -> Result<()> {
        // A long poll is held up to 5 minutes by the server: the idle watch waits that long
        // (and a little more) for its answer to begin.
        let long_api = Api { hold: Some(Duration::from_secs(400)), ..self.api.clone() };
        let path = id_path(
            PROVIDER,
            "delivery status",
            "/api/v1/upload-sessions/{}/delivery-status",
            &[("session id", &self.session)],
        )?;
        let poll_from: std::sync::Mutex<Option<String>> = Default::default();
        let seen: std::sync::Mutex<std::collections::HashMap<(String, String), String>> = Default::default();
        let timeout_err = || Error::Timeout {
            what: format!("apertur: delivery of session {}", self.session),
            seconds: self.timeout.as_secs(),
        };
        let poller =
            Poller::new(self.interval.max(Duration::from_millis(10)), Duration::from_secs(30), Some(self.timeout));
        poller
            .until(cancel, timeout_err, interrupted, || async {
                let from = poll_from.lock().expect("cursor lock").clone();
                let query: Vec<(&str, String)> = from.iter().map(|p| ("pollFrom", p.clone())).collect();
                let api = if from.is_some() { &long_api } else { &self.api };
                let v: Value =
                    api.get("delivery status", &path, &query).json::<Value>().await?;
                let report = parse_delivery_status(&v)?;
                {
                    let mut seen = seen.lock().expect("seen lock");
                    for d in &report.deliveries {
                        let key = (d.image_id.clone(), d.destination_id.clone());
                        if seen.get(&key) != Some(&d.status) {
                            match d.attempts {
                                Some(n) => tracing::info!(image = %d.image_label, destination = %d.destination_name, status = %d.status, attempts = n, "apertur: delivery"),
                                None => tracing::info!(image = %d.image_label, destination = %d.destination_name, status = %d.status, "apertur: delivery"),
                            }
                            seen.insert(key, d.status.clone());
                        }
                    }
                }
                let done =
                    report.images >= self.expected_images && report.deliveries.iter().all(|d| d.outcome().is_some());
                if !done {
                    return Ok(match report.last_changed {
                        Some(lc) if from.as_deref() != Some(lc.as_str()) => {
                            *poll_from.lock().expect("cursor lock") = Some(lc);
                            Step::Now
                        }
                        _ => Step::Again,
                    });
                }
                let lines = destination_lines(&report);
                for (line, _) in &lines {
                    self.progress.event(Event::Notice { message: format!("apertur: {line}") });
                }
                let failed: Vec<&Delivery> = report.deliveries.iter().filter(|d| d.outcome() == Some(false)).collect();
                if failed.is_empty() {
                    return Ok(Step::Done(()));
                }
                let mut names: Vec<&str> = failed.iter().map(|d| d.destination_name.as_str()).collect();
                names.dedup();
                Err(Error::ProcessingFailed {
                    provider: PROVIDER,
                    id: self.session.clone(),
                    reason: format!(
                        "{} of {} deliveries failed (destinations: {})",
                        failed.len(),
                        report.deliveries.len(),
                        names.join(", ")
                    ),
                })
            })
            .await
    }
}

fn interrupted() -> Error {
    Error::Interrupted { hint: "run `upload apertur status SESSION` to see where the deliveries are".into() }
}
