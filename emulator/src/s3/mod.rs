//! The S3-compatible store: the objects, the multipart uploads, and the HTTP server that
//! receives presigned `PUT`s.
//!
//! Providers use the [`Store`] through Rust calls ([`Store::create_multipart_upload`],
//! [`Store::presign_part`], [`Store::complete`], [`Store::presign_put_object`]...); clients
//! only see the presigned URLs.
//!
//! HTTP (path-style `/{bucket}/{key}`, bucket [`crate::BUCKET`]):
//! * `PUT ?partNumber=N&uploadId=U&X-Amz-…` — UploadPart; 200 with `ETag: "<md5>"`. A part sent
//!   again replaces the earlier one.
//! * `PUT ?X-Amz-…` — PutObject (single PUT).
//! * `GET` / `HEAD ?X-Amz-…` — GetObject / HeadObject of a completed object
//!   ([`Store::presign_get_object`]).
//!
//! Checks, in order: `Content-Length` (411 `MissingContentLength`, chunked bodies refused),
//! the SigV4 query signature (403 `SignatureDoesNotMatch`, 403 `AccessDenied` "Request has
//! expired", 400 `AuthorizationQueryParametersError`), the bucket (404 `NoSuchBucket`), the part
//! number (400 `InvalidArgument`), the upload (404 `NoSuchUpload`), the size (400
//! `EntityTooLarge` above 5 GiB). Then the PUT faults apply.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use http_body_util::BodyExt;
use md5::{Digest as _, Md5};
use sha2::Sha256;
use tokio::io::AsyncWriteExt;

use crate::faults::PutFault;
use crate::pace::Pace;
use crate::server::ConnHandle;
use crate::state::Shared;
use crate::{ACCESS_KEY_ID, BUCKET, ObjectInfo, REGION, S3_MAX_PART_SIZE, S3_MAX_PARTS, SECRET_ACCESS_KEY};

pub mod post;
pub mod rest;
pub mod sigv4;
pub mod xml;

/// Where a part's bytes are.
#[derive(Clone, Debug)]
enum PartData {
    Mem(Bytes),
    File(Arc<PathBuf>),
}

impl PartData {
    fn remove(&self) {
        if let PartData::File(p) = self {
            let _ = std::fs::remove_file(p.as_path());
        }
    }

    /// Feeds the bytes to `f`, in order.
    fn read_all(&self, f: &mut dyn FnMut(&[u8])) -> std::io::Result<()> {
        match self {
            PartData::Mem(b) => {
                f(b);
                Ok(())
            }
            PartData::File(p) => {
                let mut file = std::fs::File::open(p.as_path())?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = file.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    f(&buf[..n]);
                }
            }
        }
    }
}

/// A received part.
#[derive(Clone, Debug)]
struct Part {
    data: PartData,
    size: u64,
    md5: [u8; 16],
    /// `"<hex md5>"`, quotes included.
    etag: String,
}

/// A multipart upload in progress.
#[derive(Debug)]
struct Upload {
    key: String,
    provider: String,
    id: String,
    parts: BTreeMap<u32, Part>,
}

/// A completed object; its SHA-256 is computed on first request.
#[derive(Debug)]
struct StoredObject {
    info: ObjectInfo,
    parts: Vec<PartData>,
    sha256: OnceLock<String>,
    /// When it was stored (`Last-Modified`).
    modified: DateTime<Utc>,
}

impl StoredObject {
    fn info(&self) -> ObjectInfo {
        let sha = self.sha256.get_or_init(|| {
            let mut h = Sha256::new();
            for p in &self.parts {
                if let Err(e) = p.read_all(&mut |b| h.update(b)) {
                    tracing::error!(key = %self.info.key, "cannot read object: {e}");
                    return String::new();
                }
            }
            hex::encode(h.finalize())
        });
        ObjectInfo { sha256: sha.clone(), ..self.info.clone() }
    }
}

#[derive(Default)]
struct Inner {
    uploads: HashMap<String, Upload>,
    objects: BTreeMap<String, Arc<StoredObject>>,
    put_counts: BTreeMap<(String, u32), u64>,
    /// `Content-Type` of the last successful PUT of each part (when it had one).
    part_content_types: BTreeMap<(String, u32), String>,
    /// Exact signing time of each URL handed out, by signature (X-Amz-Date has whole seconds
    /// only; the `expire_urls_after_ms` fault needs better).
    issued: HashMap<String, DateTime<Utc>>,
    /// Provider and provider id of keys presigned for a single PUT.
    owners: HashMap<String, (String, String)>,
}

/// Why a completion was refused. Each variant names the S3 error code it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompleteError {
    /// `NoSuchUpload`: unknown, aborted or already completed upload.
    NoSuchUpload,
    /// `MalformedXML`: no parts listed.
    NoParts,
    /// `InvalidPartOrder`: part numbers not strictly ascending.
    InvalidPartOrder { part: u32 },
    /// `InvalidPart`: a listed part was never uploaded.
    MissingPart { part: u32 },
    /// `InvalidPart`: a listed ETag is not the uploaded part's.
    WrongEtag { part: u32, expected: String, got: String },
    /// `EntityTooSmall`: a part other than the last is under the minimum size.
    EntityTooSmall { part: u32, size: u64, min: u64 },
    /// The parts do not add up to the size the provider was told (not an S3 check).
    SizeMismatch { expected: u64, actual: u64 },
}

impl CompleteError {
    /// The S3 error code.
    pub fn code(&self) -> &'static str {
        match self {
            CompleteError::NoSuchUpload => "NoSuchUpload",
            CompleteError::NoParts => "MalformedXML",
            CompleteError::InvalidPartOrder { .. } => "InvalidPartOrder",
            CompleteError::MissingPart { .. } | CompleteError::WrongEtag { .. } => "InvalidPart",
            CompleteError::EntityTooSmall { .. } => "EntityTooSmall",
            CompleteError::SizeMismatch { .. } => "InvalidRequest",
        }
    }

    /// The part concerned, if any.
    pub fn part(&self) -> Option<u32> {
        match self {
            CompleteError::InvalidPartOrder { part }
            | CompleteError::MissingPart { part }
            | CompleteError::WrongEtag { part, .. }
            | CompleteError::EntityTooSmall { part, .. } => Some(*part),
            _ => None,
        }
    }
}

impl std::fmt::Display for CompleteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompleteError::NoSuchUpload => write!(
                f,
                "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
            ),
            CompleteError::NoParts => write!(f, "The list of parts is empty."),
            CompleteError::InvalidPartOrder { part } => write!(
                f,
                "The list of parts was not in ascending order. Parts must be ordered by part number (part {part})."
            ),
            CompleteError::MissingPart { part } => {
                write!(f, "Part {part} was not uploaded: one or more of the specified parts could not be found.")
            }
            CompleteError::WrongEtag { part, expected, got } => {
                write!(f, "The ETag of part {part} does not match: expected {expected}, got {got}.")
            }
            CompleteError::EntityTooSmall { part, size, min } => write!(
                f,
                "Your proposed upload is smaller than the minimum allowed object size: part {part} has {size} bytes, every part but the last needs at least {min}."
            ),
            CompleteError::SizeMismatch { expected, actual } => write!(
                f,
                "The uploaded parts add up to {actual} bytes, but the upload was declared with {expected} bytes."
            ),
        }
    }
}

impl std::error::Error for CompleteError {}

/// A part as listed by [`Store::list_parts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub number: u32,
    pub size: u64,
    pub etag: String,
}

/// The object store.
pub struct Store {
    base_url: String,
    state_dir: Option<PathBuf>,
    url_ttl: Duration,
    min_part_size: u64,
    inner: Mutex<Inner>,
}

fn random_id(bytes: usize) -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn hex_md5_etag(md5: &[u8]) -> String {
    format!("\"{}\"", hex::encode(md5))
}

impl Store {
    pub fn new(base_url: String, state_dir: Option<PathBuf>, url_ttl: Duration, min_part_size: u64) -> Self {
        Store { base_url, state_dir, url_ttl, min_part_size, inner: Mutex::new(Inner::default()) }
    }

    /// `http://127.0.0.1:PORT` of the S3 server.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Starts a multipart upload of `key` on behalf of `provider` (`id`: the provider's own id
    /// of the upload, reported in [`ObjectInfo::id`]). Returns the upload id.
    pub fn create_multipart_upload(&self, key: &str, provider: &str, id: &str) -> String {
        let upload_id = random_id(48);
        self.inner.lock().unwrap().uploads.insert(
            upload_id.clone(),
            Upload { key: key.to_string(), provider: provider.to_string(), id: id.to_string(), parts: BTreeMap::new() },
        );
        upload_id
    }

    /// Whether `upload_id` is in progress.
    pub fn upload_exists(&self, upload_id: &str) -> bool {
        self.inner.lock().unwrap().uploads.contains_key(upload_id)
    }

    fn url_ttl_secs(&self) -> u64 {
        let ms = self.url_ttl.as_millis() as u64;
        ms.div_ceil(1000).clamp(1, sigv4::MAX_EXPIRES)
    }

    /// Presigns `method` on `key` with extra query parameters.
    pub fn presign(&self, method: &str, key: &str, query: &[(&str, &str)]) -> String {
        let mut url = format!("{}/{}/{}", self.base_url, BUCKET, sigv4::uri_encode(key, true));
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&sigv4::uri_encode(k, false));
            url.push('=');
            url.push_str(&sigv4::uri_encode(v, false));
        }
        let now = Utc::now();
        let signed =
            sigv4::presign_url(method, &url, ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION, now, self.url_ttl_secs());
        if let Some((_, sig)) = signed.rsplit_once("X-Amz-Signature=") {
            self.inner.lock().unwrap().issued.insert(sig.to_string(), now);
        }
        signed
    }

    /// A presigned UploadPart URL, `None` for an unknown upload.
    pub fn presign_part(&self, upload_id: &str, part: u32) -> Option<String> {
        let key = self.inner.lock().unwrap().uploads.get(upload_id)?.key.clone();
        let n = part.to_string();
        Some(self.presign("PUT", &key, &[("partNumber", n.as_str()), ("uploadId", upload_id)]))
    }

    /// A presigned GetObject URL for `key`.
    pub fn presign_get_object(&self, key: &str) -> String {
        self.presign("GET", key, &[])
    }

    /// A presigned PutObject URL for `key` (single PUT), on behalf of `provider` (`id`: the
    /// provider's id of the upload, reported in [`ObjectInfo::id`]).
    pub fn presign_put_object(&self, key: &str, provider: &str, id: &str) -> String {
        self.inner.lock().unwrap().owners.insert(key.to_string(), (provider.to_string(), id.to_string()));
        self.presign("PUT", key, &[])
    }

    /// The parts received so far, `None` for an unknown upload.
    pub fn list_parts(&self, upload_id: &str) -> Option<Vec<PartInfo>> {
        let inner = self.inner.lock().unwrap();
        let up = inner.uploads.get(upload_id)?;
        Some(up.parts.iter().map(|(n, p)| PartInfo { number: *n, size: p.size, etag: p.etag.clone() }).collect())
    }

    /// Drops an upload and its parts; `false` when unknown.
    pub fn abort(&self, upload_id: &str) -> bool {
        let up = self.inner.lock().unwrap().uploads.remove(upload_id);
        match up {
            Some(up) => {
                up.parts.values().for_each(|p| p.data.remove());
                if let Some(dir) = &self.state_dir {
                    let _ = std::fs::remove_dir(dir.join("parts").join(upload_id));
                }
                true
            }
            None => false,
        }
    }

    /// Completes a multipart upload with `parts` (number, ETag as the client saw it; quoted or
    /// not). The returned info has an empty `sha256` (computed lazily: see [`Store::object`]).
    pub fn complete(&self, upload_id: &str, parts: &[(u32, String)]) -> Result<ObjectInfo, CompleteError> {
        self.complete_checked(upload_id, parts, None)
    }

    /// [`Store::complete`], also refusing ([`CompleteError::SizeMismatch`]) an object whose
    /// size is not `expected_size` (providers that were told the size up front).
    pub fn complete_checked(
        &self,
        upload_id: &str,
        parts: &[(u32, String)],
        expected_size: Option<u64>,
    ) -> Result<ObjectInfo, CompleteError> {
        let mut inner = self.inner.lock().unwrap();
        let up = inner.uploads.get(upload_id).ok_or(CompleteError::NoSuchUpload)?;
        if parts.is_empty() {
            return Err(CompleteError::NoParts);
        }
        let mut prev = 0;
        for (n, _) in parts {
            if *n <= prev {
                return Err(CompleteError::InvalidPartOrder { part: *n });
            }
            prev = *n;
        }
        let mut chosen = Vec::with_capacity(parts.len());
        for (n, etag) in parts {
            let p = up.parts.get(n).ok_or(CompleteError::MissingPart { part: *n })?;
            let given = etag.trim();
            let unquoted = p.etag.trim_matches('"');
            if given != p.etag && given != unquoted {
                return Err(CompleteError::WrongEtag { part: *n, expected: p.etag.clone(), got: etag.clone() });
            }
            chosen.push((*n, p));
        }
        for (i, (n, p)) in chosen.iter().enumerate() {
            if i + 1 < chosen.len() && p.size < self.min_part_size {
                return Err(CompleteError::EntityTooSmall { part: *n, size: p.size, min: self.min_part_size });
            }
        }
        let mut md5s = Md5::new();
        let mut size = 0;
        for (_, p) in &chosen {
            md5s.update(p.md5);
            size += p.size;
        }
        if let Some(expected) = expected_size
            && expected != size
        {
            return Err(CompleteError::SizeMismatch { expected, actual: size });
        }
        let etag = format!("\"{}-{}\"", hex::encode(md5s.finalize()), chosen.len());
        let datas: Vec<PartData> = chosen.iter().map(|(_, p)| p.data.clone()).collect();
        let up = inner.uploads.remove(upload_id).expect("checked above");
        // Parts uploaded but not listed are discarded, as S3 does.
        for (n, p) in &up.parts {
            if !parts.iter().any(|(m, _)| m == n) {
                p.data.remove();
            }
        }
        let info = ObjectInfo {
            key: up.key.clone(),
            size,
            sha256: String::new(),
            parts: datas.len() as u32,
            etag,
            provider: up.provider,
            id: up.id,
        };
        Self::insert_object(&mut inner, info.clone(), datas, None);
        Ok(info)
    }

    /// Stores a completed object; `sha256` when it was computed while receiving (else on first
    /// request).
    fn insert_object(inner: &mut Inner, info: ObjectInfo, parts: Vec<PartData>, sha256: Option<String>) {
        let sha = OnceLock::new();
        if let Some(h) = sha256 {
            let _ = sha.set(h);
        }
        let obj = Arc::new(StoredObject { info, parts, sha256: sha, modified: Utc::now() });
        if let Some(old) = inner.objects.insert(obj.info.key.clone(), obj) {
            old.parts.iter().for_each(PartData::remove);
        }
    }

    /// Stores `bytes` as a completed single-part object at `key` on behalf of `provider` (`id`:
    /// the provider's id of the upload), for providers that receive files themselves (Apertur's
    /// image uploads). Written to a file under the state directory when there is one.
    pub fn put_object(&self, key: &str, bytes: Bytes, provider: &str, id: &str) -> ObjectInfo {
        let md5 = Md5::digest(&bytes);
        let sha = hex::encode(Sha256::digest(&bytes));
        let data = match self.new_part_path(None, 1) {
            Some(path) => {
                let written = std::fs::write(&path, &bytes);
                match written {
                    Ok(()) => PartData::File(Arc::new(path)),
                    Err(e) => {
                        tracing::warn!(key, "cannot write object file, keeping it in memory: {e}");
                        PartData::Mem(bytes.clone())
                    }
                }
            }
            None => PartData::Mem(bytes.clone()),
        };
        let info = ObjectInfo {
            key: key.to_string(),
            size: bytes.len() as u64,
            sha256: String::new(),
            parts: 1,
            etag: hex_md5_etag(&md5),
            provider: provider.to_string(),
            id: id.to_string(),
        };
        Self::insert_object(&mut self.inner.lock().unwrap(), info.clone(), vec![data], Some(sha.clone()));
        ObjectInfo { sha256: sha, ..info }
    }

    /// Deletes a completed object; `false` when unknown.
    pub fn delete_object(&self, key: &str) -> bool {
        let old = self.inner.lock().unwrap().objects.remove(key);
        match old {
            Some(o) => {
                o.parts.iter().for_each(PartData::remove);
                true
            }
            None => false,
        }
    }

    /// The keys of every completed object (cheap: no SHA-256 computed).
    pub fn objects_keys(&self) -> Vec<String> {
        self.inner.lock().unwrap().objects.keys().cloned().collect()
    }

    /// Every completed object (SHA-256 computed now if not yet).
    pub fn objects(&self) -> Vec<ObjectInfo> {
        let objs: Vec<Arc<StoredObject>> = self.inner.lock().unwrap().objects.values().cloned().collect();
        objs.iter().map(|o| o.info()).collect()
    }

    /// The completed object at `key` (SHA-256 computed now if not yet).
    pub fn object(&self, key: &str) -> Option<ObjectInfo> {
        let obj = self.inner.lock().unwrap().objects.get(key).cloned()?;
        Some(obj.info())
    }

    /// A copy of the bytes of the object at `key`.
    pub fn object_bytes(&self, key: &str) -> Option<Vec<u8>> {
        let obj = self.inner.lock().unwrap().objects.get(key).cloned()?;
        let mut out = Vec::with_capacity(obj.info.size as usize);
        for p in &obj.parts {
            p.read_all(&mut |b| out.extend_from_slice(b)).ok()?;
        }
        Some(out)
    }

    /// `(upload id, part)` → successful PUTs.
    pub fn part_put_counts(&self) -> BTreeMap<(String, u32), u64> {
        self.inner.lock().unwrap().put_counts.clone()
    }

    /// `(upload id, part)` → `Content-Type` of its last successful PUT (parts sent without one
    /// are absent).
    pub fn part_content_types(&self) -> BTreeMap<(String, u32), String> {
        self.inner.lock().unwrap().part_content_types.clone()
    }

    fn issued_at(&self, signature: &str) -> Option<DateTime<Utc>> {
        self.inner.lock().unwrap().issued.get(signature).copied()
    }

    fn new_part_path(&self, upload_id: Option<&str>, part: u32) -> Option<PathBuf> {
        let dir = self.state_dir.as_ref()?;
        let name = format!("{part}-{}", uuid::Uuid::new_v4().simple());
        Some(match upload_id {
            Some(u) => dir.join("parts").join(u).join(name),
            None => dir.join("objects").join(name),
        })
    }
}

/// The S3 server's router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let mut resp = if rest::is_header_auth(req.headers()) {
        rest::handle(&shared, req).await
    } else {
        presigned(&shared, req).await
    };
    resp.headers_mut().entry(header::SERVER).or_insert(HeaderValue::from_static("AmazonS3"));
    resp
}

/// A request authenticated by its presigned query (or, for POST, by its form's policy).
async fn presigned(shared: &Arc<Shared>, req: Request) -> Response {
    match *req.method() {
        Method::PUT => put(shared, req).await,
        Method::GET | Method::HEAD => get(shared, req).await,
        Method::POST => post::post_object(shared, req).await,
        _ => xml::error(
            405,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
            &[("Method", req.method().to_string())],
        ),
    }
}

/// What the URL addressed.
struct Target {
    key: String,
    /// The decoded `Content-MD5` header, checked against the body.
    content_md5: Option<Vec<u8>>,
    /// The `Content-Type` header, recorded for parts.
    content_type: Option<String>,
    /// `(upload id, part number)` for UploadPart.
    part: Option<(String, u32)>,
    /// The body arrives with its first byte flipped (the `corrupt_put` fault).
    alter: bool,
}

async fn put(shared: &Arc<Shared>, req: Request) -> Response {
    let conn = req.extensions().get::<ConnHandle>().cloned();
    let (parts, body) = req.into_parts();
    let raw_path = parts.uri.path().to_string();
    let (target, len) = match check_put(shared, &parts) {
        Ok(t) => t,
        // Read the body before answering, as S3 does: a client still sending would otherwise
        // see a reset connection instead of the error.
        Err((resp, drain)) => {
            if drain {
                let _ = read_body(body, Pace::none(), None).await;
            }
            return resp;
        }
    };
    accept_put(shared, conn, &raw_path, body, len, target).await
}

/// The faults of an accepted PUT, then its body into the store.
async fn accept_put(
    shared: &Arc<Shared>,
    conn: Option<ConnHandle>,
    raw_path: &str,
    body: Body,
    len: u64,
    target: Target,
) -> Response {
    let injected = shared.faults.lock().unwrap().on_s3_error("PUT", raw_path);
    if let Some(e) = injected {
        let _ = read_body(body, shared.pace(), None).await;
        tracing::debug!(path = %raw_path, code = %e.code, "fault: an S3 error");
        return s3_error_response(&e);
    }
    let fault = shared.faults.lock().unwrap().on_put();
    let pace = shared.pace();
    let mut target = target;
    if shared.faults.lock().unwrap().on_corrupt("PUT", raw_path) {
        tracing::debug!(path = %raw_path, "fault: the body arrives altered");
        target.alter = true;
        target.content_md5 = None;
    }
    match fault {
        PutFault::Reset => {
            let _ = read_body(body, pace, Some(len / 2)).await;
            shared.record("s3", "PUT", raw_path, 0);
            tracing::debug!(path = %raw_path, "fault: dropping the connection");
            if let Some(conn) = conn {
                conn.abort();
                std::future::pending::<()>().await;
            }
            xml::error(500, "InternalError", "connection reset", &[])
        }
        PutFault::Fail(status) => {
            let _ = read_body(body, pace, None).await;
            fail_response(status)
        }
        PutFault::None => receive(shared, body, len, pace, target).await,
    }
}

/// The checks of a PUT before its body is read: the target and the body length, or the error
/// response and whether to drain the body first.
fn check_put(shared: &Shared, parts: &axum::http::request::Parts) -> Result<(Target, u64), (Response, bool)> {
    let headers = &parts.headers;
    let chunked = headers
        .get(header::TRANSFER_ENCODING)
        .is_some_and(|v| v.to_str().unwrap_or("").to_ascii_lowercase().contains("chunked"));
    let len = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let len = match (len, chunked) {
        (Some(l), false) => l,
        _ => {
            let resp = xml::error(411, "MissingContentLength", "You must provide the Content-Length HTTP header.", &[]);
            return Err((resp, true));
        }
    };
    if len > S3_MAX_PART_SIZE {
        let resp = xml::error(
            400,
            "EntityTooLarge",
            "Your proposed upload exceeds the maximum allowed size",
            &[("ProposedSize", len.to_string()), ("MaxSizeAllowed", S3_MAX_PART_SIZE.to_string())],
        );
        return Err((resp, false));
    }
    let raw_path = parts.uri.path();
    let raw_query = parts.uri.query().unwrap_or("");
    check_signature(shared, "PUT", raw_path, raw_query, headers).map_err(|r| (r, true))?;
    let mut target = parse_target(shared, raw_path, raw_query).map_err(|r| (r, true))?;
    target.content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    target.content_md5 = content_md5(headers).map_err(|r| (r, true))?;
    Ok((target, len))
}

/// The decoded `Content-MD5` header; 400 `InvalidDigest` when it is not 16 bytes of base64.
fn content_md5(headers: &axum::http::HeaderMap) -> Result<Option<Vec<u8>>, Response> {
    let Some(v) = headers.get("content-md5") else { return Ok(None) };
    use base64::Engine;
    v.to_str()
        .ok()
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v.trim()).ok())
        .filter(|d| d.len() == 16)
        .map(Some)
        .ok_or_else(|| xml::error(400, "InvalidDigest", "The Content-MD5 you specified was invalid.", &[]))
}

/// GetObject / HeadObject of a completed object, with a presigned URL.
async fn get(shared: &Arc<Shared>, req: Request) -> Response {
    let method = req.method().as_str().to_string();
    let raw_path = req.uri().path();
    let raw_query = req.uri().query().unwrap_or("");
    if let Err(resp) = check_signature(shared, &method, raw_path, raw_query, req.headers()) {
        return resp;
    }
    let target = match parse_target(shared, raw_path, raw_query) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    serve_object(shared, &method, target.key)
}

/// GetObject / HeadObject of the completed object at `key`.
fn serve_object(shared: &Shared, method: &str, key: String) -> Response {
    let obj = shared.store.inner.lock().unwrap().objects.get(&key).cloned();
    let Some(obj) = obj else {
        return xml::error(404, "NoSuchKey", "The specified key does not exist.", &[("Key", key)]);
    };
    let body = if method == "HEAD" {
        Body::empty()
    } else {
        use futures::StreamExt;
        let parts = obj.parts.clone();
        let stream = futures::stream::iter(parts)
            .map(|p| match p {
                PartData::Mem(b) => futures::stream::once(async move { Ok::<_, std::io::Error>(b) }).boxed(),
                PartData::File(path) => {
                    futures::stream::once(async move { tokio::fs::File::open(path.as_path()).await })
                        .map(|r| match r {
                            Ok(f) => tokio_util::io::ReaderStream::with_capacity(f, 1 << 20).boxed(),
                            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                        })
                        .flatten()
                        .boxed()
                }
            })
            .flatten();
        Body::from_stream(stream)
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(obj.info.size));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("binary/octet-stream"));
    if let Ok(v) = HeaderValue::from_str(&obj.modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string()) {
        h.insert(header::LAST_MODIFIED, v);
    }
    if let Ok(v) = HeaderValue::from_str(&obj.info.etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// The response of an injected PUT failure.
/// The answer of an `s3_error` fault: S3's error document of its code.
pub(crate) fn s3_error_response(e: &crate::faults::S3Error) -> Response {
    let message = match e.code.as_str() {
        "BadDigest" => "The Content-MD5 or checksum value that you specified did not match what the server received.",
        "XAmzContentChecksumMismatch" => "The provided 'x-amz-checksum' header does not match what was computed.",
        "HeadersNotSigned" => "There were headers present in the request which were not signed",
        _ => "Fault injected by the emulator.",
    };
    xml::error(e.status, &e.code, message, &[])
}

fn fail_response(status: u16) -> Response {
    match status {
        503 => xml::error(503, "SlowDown", "Please reduce your request rate.", &[]),
        500 => xml::error(500, "InternalError", "We encountered an internal error. Please try again.", &[]),
        s => xml::error(s, "InjectedFault", "Fault injected by the emulator.", &[]),
    }
}

/// Checks the presigned signature; the error response when it does not hold.
fn check_signature(
    shared: &Shared,
    method: &str,
    raw_path: &str,
    raw_query: &str,
    headers: &axum::http::HeaderMap,
) -> Result<(), Response> {
    if !raw_query.contains("X-Amz-") {
        return Err(xml::error(403, "AccessDenied", "Access Denied", &[]));
    }
    let host = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let secret = |ak: &str| (ak == ACCESS_KEY_ID).then(|| SECRET_ACCESS_KEY.to_string());
    // X-Amz-Date has whole seconds. For URLs we handed out, lifetimes (X-Amz-Expires and the
    // expire_urls_after_ms fault) count from the exact signing time instead, so that a 1 s URL
    // lives 1 s rather than 0 to 1 s: the clock is moved back by the truncated fraction.
    let q = sigv4::parse_query(raw_query);
    let find = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let amz_date = find("X-Amz-Date").and_then(|v| chrono::NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%SZ").ok());
    let exact = find("X-Amz-Signature").and_then(|s| shared.store.issued_at(s));
    let fraction = match (exact, amz_date) {
        (Some(exact), Some(d)) => (exact - d.and_utc()).max(chrono::Duration::zero()),
        _ => chrono::Duration::zero(),
    };
    let now = Utc::now() - fraction;
    let fault_ms = shared.faults.lock().unwrap().expire_urls_after_ms();
    match sigv4::verify_presigned(method, raw_path, raw_query, &host, &secret, REGION, now, fault_ms) {
        Ok(_) => Ok(()),
        Err(e) => Err(sig_error_response(e, raw_query)),
    }
}

fn sig_error_response(e: sigv4::SigError, raw_query: &str) -> Response {
    use sigv4::SigError;
    match e {
        SigError::BadParameters(msg) => xml::error(400, "AuthorizationQueryParametersError", &msg, &[]),
        SigError::UnknownAccessKey(ak) => xml::error(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            &[("AWSAccessKeyId", ak)],
        ),
        SigError::SignatureDoesNotMatch { string_to_sign_hint } => {
            let provided = sigv4::parse_query(raw_query)
                .into_iter()
                .find(|(k, _)| k == "X-Amz-Signature")
                .map(|(_, v)| v)
                .unwrap_or_default();
            xml::error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
                &[
                    ("AWSAccessKeyId", ACCESS_KEY_ID.to_string()),
                    ("StringToSign", string_to_sign_hint),
                    ("SignatureProvided", provided),
                ],
            )
        }
        SigError::Expired { expires, expired_at, now } => xml::error(
            403,
            "AccessDenied",
            "Request has expired",
            &[
                ("X-Amz-Expires", expires.to_string()),
                ("Expires", expired_at.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                ("ServerTime", now.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            ],
        ),
        SigError::NotYetValid => xml::error(403, "AccessDenied", "Request is not valid yet", &[]),
        SigError::MalformedAuthorization(msg) => xml::error(400, "AuthorizationHeaderMalformed", &msg, &[]),
        SigError::AccessDenied(msg) => xml::error(403, "AccessDenied", &msg, &[]),
        SigError::InvalidRequest(msg) => xml::error(400, "InvalidRequest", &msg, &[]),
        SigError::InvalidArgument(msg) => xml::error(400, "InvalidArgument", &msg, &[]),
        SigError::TimeSkewed { request_time, now } => xml::error(
            403,
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            &[
                ("RequestTime", request_time.format("%Y%m%dT%H%M%SZ").to_string()),
                ("ServerTime", now.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                ("MaxAllowedSkewMilliseconds", "900000".into()),
            ],
        ),
    }
}

/// Bucket, key and, for UploadPart, upload id and part number; the error response otherwise.
fn parse_target(shared: &Shared, raw_path: &str, raw_query: &str) -> Result<Target, Response> {
    let path = raw_path.strip_prefix('/').unwrap_or(raw_path);
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    let bucket = sigv4::uri_decode(bucket);
    let key = sigv4::uri_decode(key);
    if bucket != BUCKET {
        return Err(xml::error(404, "NoSuchBucket", "The specified bucket does not exist", &[("BucketName", bucket)]));
    }
    if key.is_empty() {
        return Err(xml::error(400, "InvalidRequest", "A key is required", &[]));
    }
    let q = sigv4::parse_query(raw_query);
    let get = |n: &str| q.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let Some(upload_id) = get("uploadId") else {
        return Ok(Target { key, content_md5: None, content_type: None, part: None, alter: false });
    };
    let part = get("partNumber").and_then(|p| p.parse::<u32>().ok()).filter(|p| (1..=S3_MAX_PARTS).contains(p));
    let Some(part) = part else {
        return Err(xml::error(
            400,
            "InvalidArgument",
            "Part number must be an integer between 1 and 10000, inclusive",
            &[("ArgumentName", "partNumber".into()), ("ArgumentValue", get("partNumber").unwrap_or_default())],
        ));
    };
    let known = shared.store.inner.lock().unwrap().uploads.get(&upload_id).is_some_and(|u| u.key == key);
    if !known {
        return Err(no_such_upload(&upload_id));
    }
    Ok(Target { key, content_md5: None, content_type: None, part: Some((upload_id, part)), alter: false })
}

fn no_such_upload(upload_id: &str) -> Response {
    xml::error(
        404,
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
        &[("UploadId", upload_id.to_string())],
    )
}

/// Where received bytes go.
enum Sink {
    Mem(BytesMut),
    File(tokio::io::BufWriter<tokio::fs::File>, PathBuf),
}

/// The bytes of one PUT or POST as they arrive: into memory or a new file under the state
/// directory, MD5 (the ETag) and, for a whole object, SHA-256 computed on the way. Nothing is
/// read back and nothing is held in memory on disk.
pub(crate) struct Receiver {
    sink: Sink,
    md5: Md5,
    sha256: Option<Sha256>,
    size: u64,
}

/// What a [`Receiver`] received.
pub(crate) struct Received {
    data: PartData,
    size: u64,
    md5: [u8; 16],
    /// Hex SHA-256, when asked for.
    sha256: Option<String>,
}

impl Receiver {
    /// A receiver for part `part` of `upload` (or, with `None`, a whole object; then the SHA-256
    /// is computed too). `capacity`: the expected size, for the memory backend. An error
    /// when the file cannot be made (the state directory is gone once the emulator stopped:
    /// it is not made again).
    async fn new(store: &Store, upload: Option<&str>, part: u32, capacity: u64) -> Result<Self, String> {
        let sink = match store.new_part_path(upload, part) {
            Some(p) => {
                if upload.is_some()
                    && let Some(dir) = p.parent()
                    && let Err(e) = tokio::fs::create_dir(dir).await
                    && e.kind() != std::io::ErrorKind::AlreadyExists
                {
                    return Err(format!("cannot create {}: {e}", dir.display()));
                }
                match tokio::fs::File::create(&p).await {
                    Ok(f) => Sink::File(tokio::io::BufWriter::with_capacity(1 << 20, f), p),
                    Err(e) => return Err(format!("cannot create {}: {e}", p.display())),
                }
            }
            None => Sink::Mem(BytesMut::with_capacity(capacity.min(S3_MAX_PART_SIZE) as usize)),
        };
        Ok(Receiver { sink, md5: Md5::new(), sha256: upload.is_none().then(Sha256::new), size: 0 })
    }

    /// Takes the next bytes.
    async fn write(&mut self, data: &[u8]) -> Result<(), String> {
        self.md5.update(data);
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
        self.size += data.len() as u64;
        match &mut self.sink {
            Sink::Mem(b) => b.extend_from_slice(data),
            Sink::File(w, p) => w.write_all(data).await.map_err(|e| format!("write {}: {e}", p.display()))?,
        }
        Ok(())
    }

    /// Bytes received so far.
    fn size(&self) -> u64 {
        self.size
    }

    /// Ends the body: flushed and hashed, or (after `failure`, or a failed flush) the bytes
    /// dropped and the reason returned.
    async fn finish(self, failure: Option<String>) -> Result<Received, String> {
        let mut failure = failure;
        let data = match self.sink {
            Sink::Mem(b) => PartData::Mem(b.freeze()),
            Sink::File(mut w, p) => {
                if failure.is_none()
                    && let Err(e) = w.flush().await
                {
                    failure = Some(format!("write {}: {e}", p.display()));
                }
                PartData::File(Arc::new(p))
            }
        };
        if let Some(msg) = failure {
            data.remove();
            return Err(msg);
        }
        Ok(Received {
            data,
            size: self.size,
            md5: self.md5.finalize().into(),
            sha256: self.sha256.map(|h| hex::encode(h.finalize())),
        })
    }
}

/// Reads and discards `body`, paced by `pace`, stopping after `limit` bytes if given. Returns
/// the number of bytes read.
async fn read_body(body: Body, mut pace: Pace<'_>, limit: Option<u64>) -> Result<u64, axum::Error> {
    let mut body = body;
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(data) = frame.into_data() {
            n += data.len() as u64;
            pace.advance(data.len() as u64).await;
            if limit.is_some_and(|l| n >= l) {
                break;
            }
        }
    }
    Ok(n)
}

async fn receive(shared: &Shared, body: Body, len: u64, mut pace: Pace<'_>, target: Target) -> Response {
    let store = &shared.store;
    let part_no = target.part.as_ref().map_or(1, |(_, n)| *n);
    let mut rx = match Receiver::new(store, target.part.as_ref().map(|(u, _)| u.as_str()), part_no, len).await {
        Ok(r) => r,
        Err(msg) => return internal(&msg),
    };
    let mut body = body;
    let mut failure = None;
    let mut alter = target.alter;
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(f) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
            Err(e) => {
                failure = Some(format!("body: {e}"));
                break;
            }
        };
        let data = if alter && !data.is_empty() {
            alter = false;
            let mut v = data.to_vec();
            v[0] ^= 0x01;
            Bytes::from(v)
        } else {
            data
        };
        if let Err(e) = rx.write(&data).await {
            failure = Some(e);
            break;
        }
        pace.advance(data.len() as u64).await;
    }
    if failure.is_none() && rx.size() != len {
        failure = Some(format!("received {} bytes of {len}", rx.size()));
    }
    let received = match rx.finish(failure).await {
        Ok(r) => r,
        Err(msg) => {
            tracing::debug!("PUT failed: {msg}");
            return xml::error(
                400,
                "IncompleteBody",
                "You did not provide the number of bytes specified by the Content-Length HTTP header",
                &[],
            );
        }
    };
    let Received { data, size: n, md5, sha256 } = received;
    if target.content_md5.as_ref().is_some_and(|want| want[..] != md5[..]) {
        data.remove();
        return xml::error(400, "BadDigest", "The Content-MD5 you specified did not match what we received.", &[]);
    }
    let etag = hex_md5_etag(&md5);
    let part = Part { data, size: n, md5, etag: etag.clone() };
    {
        let mut inner = store.inner.lock().unwrap();
        match &target.part {
            Some((upload_id, number)) => {
                let Some(up) = inner.uploads.get_mut(upload_id) else {
                    drop(inner);
                    part.data.remove();
                    return no_such_upload(upload_id);
                };
                if let Some(old) = up.parts.insert(*number, part) {
                    old.data.remove();
                }
                *inner.put_counts.entry((upload_id.clone(), *number)).or_default() += 1;
                match &target.content_type {
                    Some(ct) => inner.part_content_types.insert((upload_id.clone(), *number), ct.clone()),
                    None => inner.part_content_types.remove(&(upload_id.clone(), *number)),
                };
            }
            None => {
                let (provider, id) =
                    inner.owners.get(&target.key).cloned().unwrap_or_else(|| ("s3".into(), target.key.clone()));
                let info = ObjectInfo {
                    key: target.key.clone(),
                    size: n,
                    sha256: String::new(),
                    parts: 1,
                    etag: etag.clone(),
                    provider,
                    id,
                };
                Store::insert_object(&mut inner, info, vec![part.data], sha256);
            }
        }
    }
    let mut resp = ().into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&xml::request_id()) {
        resp.headers_mut().insert("x-amz-request-id", v);
    }
    resp
}

fn internal(msg: &str) -> Response {
    tracing::error!("{msg}");
    xml::error(500, "InternalError", msg, &[])
}
