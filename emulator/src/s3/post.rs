//! S3 POST Object: browser-style `multipart/form-data` uploads authorized by a signed policy
//! (SigV4 POST signature), as handed out by [`Store::presign_post`].
//!
//! `POST /{bucket}` with the form fields first and the file last (field `file`; fields after
//! it are ignored, as S3 does). The body is parsed as a stream with `multer`: the file's bytes
//! go straight to the part sink (memory, or a file under `state_dir`) with MD5 on the fly, so a
//! 1 GiB upload costs no more memory than a few read buffers.
//!
//! Checks, once the `file` field starts (everything before it is known by then):
//! * no `policy`: 403 `AccessDenied` (an anonymous POST; the bucket is private);
//! * a missing `x-amz-algorithm`, `x-amz-credential`, `x-amz-date`, `x-amz-signature` or `key`:
//!   400 `InvalidArgument` "Bucket POST must contain a field named '…'";
//! * the signature, hex HMAC-SHA256 of the base64 policy with the SigV4 signing key of the
//!   credential's day and region: 403 `SignatureDoesNotMatch`; unknown access key: 403
//!   `InvalidAccessKeyId`;
//! * the policy document (base64 JSON `{expiration, conditions}`): 400 `InvalidPolicyDocument`
//!   when unreadable; past `expiration`: 403 `AccessDenied` "Invalid according to Policy:
//!   Policy expired.";
//! * every condition (`{"field": "value"}`, `["eq", "$field", "value"]`, `["starts-with",
//!   "$field", "prefix"]`, `{"bucket": …}` against the URL's bucket): 403 `AccessDenied`
//!   "Invalid according to Policy: Policy Condition failed: …"; a form field no condition
//!   mentions: 403 "Invalid according to Policy: Extra input fields: …" (`policy`,
//!   `x-amz-signature`, `file` and `x-ignore-*` are exempt). Field names compare
//!   case-insensitively; `${filename}` in `key` becomes the file's name first.
//!
//! `["content-length-range", min, max]` is checked once the file has arrived: 400
//! `EntityTooLarge` / `EntityTooSmall`. Success answers `success_action_status` (200, 201 with a
//! `PostResponse` XML body, or the default 204) with `ETag` and `Location`. Errors are answered
//! after the rest of the body was read, so a client still sending sees them. The PUT faults
//! (`fail_put_*`, `reset_ratio`, `bandwidth_bps`) apply to POST uploads too: they count object
//! uploads of either kind.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::BytesMut;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{Received, Receiver, Store, fail_response, internal, read_body, sigv4, xml};
use crate::faults::PutFault;
use crate::server::ConnHandle;
use crate::state::Shared;
use crate::{ACCESS_KEY_ID, BUCKET, ObjectInfo, REGION, S3_MAX_PART_SIZE, SECRET_ACCESS_KEY};

/// S3's largest POST upload (5 GiB, as a single PUT).
pub const MAX_POST_SIZE: u64 = S3_MAX_PART_SIZE;
/// S3's limit on the form fields before the file.
pub const MAX_PRE_DATA: usize = 20 * 1024;

/// What a presigned POST allows.
#[derive(Clone, Debug)]
pub struct PostPolicy {
    /// The object key (an exact `key` condition).
    pub key: String,
    /// Until when the form is accepted (the policy's `expiration`).
    pub expiration: DateTime<Utc>,
    /// A `Content-Type` field and its exact condition, when set.
    pub content_type: Option<String>,
    /// `content-length-range` (inclusive), when set.
    pub content_length_range: Option<(u64, u64)>,
}

/// A presigned POST: where to send the form and the fields to send, in order, before the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresignedPost {
    /// `http://127.0.0.1:PORT/{bucket}`.
    pub url: String,
    /// Form fields in order: `key`, `Content-Type`?, `x-amz-algorithm`, `x-amz-credential`,
    /// `x-amz-date`, `policy`, `x-amz-signature`.
    pub fields: Vec<(String, String)>,
}

/// The SigV4 POST signature of a base64 policy.
pub fn post_signature(secret: &str, date: &str, region: &str, policy_b64: &str) -> String {
    let key = sigv4::signing_key(secret, date, region, "s3");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC accepts any key length");
    mac.update(policy_b64.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The policy's time format, `2026-05-13T12:30:00.000Z`.
pub fn policy_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

impl Store {
    /// Signs a POST policy for `policy.key` on behalf of `provider` (`id`: the provider's id of
    /// the upload, reported in [`ObjectInfo::id`] once the object arrives).
    pub fn presign_post(&self, policy: &PostPolicy, provider: &str, id: &str) -> PresignedPost {
        self.inner.lock().unwrap().owners.insert(policy.key.clone(), (provider.to_string(), id.to_string()));
        let now = Utc::now();
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let date = &amz_date[..8];
        let credential = format!("{ACCESS_KEY_ID}/{date}/{REGION}/s3/aws4_request");
        let mut fields = vec![("key".to_string(), policy.key.clone())];
        let mut conditions = vec![json!({ "bucket": BUCKET }), json!({ "key": policy.key })];
        if let Some(ct) = &policy.content_type {
            fields.push(("Content-Type".into(), ct.clone()));
            conditions.push(json!({ "Content-Type": ct }));
        }
        if let Some((min, max)) = policy.content_length_range {
            conditions.push(json!(["content-length-range", min, max]));
        }
        conditions.push(json!({ "x-amz-algorithm": sigv4::ALGORITHM }));
        conditions.push(json!({ "x-amz-credential": credential }));
        conditions.push(json!({ "x-amz-date": amz_date }));
        let doc = json!({ "expiration": policy_time(policy.expiration), "conditions": conditions });
        let policy_b64 = base64::engine::general_purpose::STANDARD.encode(doc.to_string());
        let signature = post_signature(SECRET_ACCESS_KEY, date, REGION, &policy_b64);
        fields.push(("x-amz-algorithm".into(), sigv4::ALGORITHM.into()));
        fields.push(("x-amz-credential".into(), credential));
        fields.push(("x-amz-date".into(), amz_date));
        fields.push(("policy".into(), policy_b64));
        fields.push(("x-amz-signature".into(), signature));
        PresignedPost { url: format!("{}/{}", self.base_url, BUCKET), fields }
    }

    /// Whether a completed object is stored at `key` (cheap: no checksum is computed).
    pub fn has_object(&self, key: &str) -> bool {
        self.inner.lock().unwrap().objects.contains_key(key)
    }
}

/// The form fields received before the file, in order, names as sent.
struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn must_contain(field: &str) -> Response {
    xml::error(
        400,
        "InvalidArgument",
        &format!(
            "Bucket POST must contain a field named '{field}'.  If it is specified, please check the order of the fields."
        ),
        &[("ArgumentName", field.to_string())],
    )
}

fn policy_denied(reason: &str) -> Response {
    xml::error(403, "AccessDenied", &format!("Invalid according to Policy: {reason}"), &[])
}

fn invalid_policy(reason: &str) -> Response {
    xml::error(400, "InvalidPolicyDocument", &format!("Invalid Policy: {reason}"), &[])
}

fn malformed() -> Response {
    xml::error(
        400,
        "MalformedPOSTRequest",
        "The body of your POST request is not well-formed multipart/form-data.",
        &[],
    )
}

/// The `content-length-range` of an accepted policy, if any.
type LengthRange = Option<(u64, u64)>;

/// Checks the signature, the expiry and every condition of the policy against the form (with
/// `key` already substituted). Returns the content-length range to check after the upload.
fn check_policy(form: &Form, bucket: &str, key: &str, now: DateTime<Utc>) -> Result<LengthRange, Response> {
    let Some(policy_b64) = form.get("policy") else {
        return Err(xml::error(403, "AccessDenied", "Access Denied", &[]));
    };
    for f in ["x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature"] {
        if form.get(f).is_none() {
            return Err(must_contain(f));
        }
    }
    let algorithm = form.get("x-amz-algorithm").unwrap_or_default();
    if algorithm != sigv4::ALGORITHM {
        return Err(xml::error(
            400,
            "InvalidArgument",
            "Only the AWS4-HMAC-SHA256 algorithm is supported for POST.",
            &[("ArgumentName", "x-amz-algorithm".into()), ("ArgumentValue", algorithm.to_string())],
        ));
    }
    let credential = form.get("x-amz-credential").unwrap_or_default();
    let parts: Vec<&str> = credential.split('/').collect();
    if parts.len() != 5 || parts[3] != "s3" || parts[4] != "aws4_request" || parts[2] != REGION {
        return Err(xml::error(
            400,
            "InvalidArgument",
            &format!(
                "Error parsing the X-Amz-Credential parameter; expecting \"<YOUR-AKID>/YYYYMMDD/{REGION}/s3/aws4_request\"."
            ),
            &[("ArgumentName", "x-amz-credential".into()), ("ArgumentValue", credential.to_string())],
        ));
    }
    if parts[0] != ACCESS_KEY_ID {
        return Err(xml::error(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            &[("AWSAccessKeyId", parts[0].to_string())],
        ));
    }
    let expected = post_signature(SECRET_ACCESS_KEY, parts[1], REGION, policy_b64);
    let given = form.get("x-amz-signature").unwrap_or_default().to_ascii_lowercase();
    if !constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        return Err(xml::error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
            &[("AWSAccessKeyId", parts[0].to_string())],
        ));
    }

    let doc = base64::engine::general_purpose::STANDARD
        .decode(policy_b64.trim())
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .ok_or_else(|| invalid_policy("Invalid JSON."))?;
    let expiration =
        doc.get("expiration").and_then(Value::as_str).ok_or_else(|| invalid_policy("Policy missing expiration."))?;
    let expiration = DateTime::parse_from_rfc3339(expiration)
        .map_err(|_| invalid_policy("Invalid 'expiration' value."))?
        .with_timezone(&Utc);
    if now > expiration {
        return Err(policy_denied("Policy expired."));
    }
    let conditions =
        doc.get("conditions").and_then(Value::as_array).ok_or_else(|| invalid_policy("Policy missing conditions."))?;

    let value_of = |field: &str| -> Option<String> {
        if field.eq_ignore_ascii_case("bucket") {
            Some(bucket.to_string())
        } else if field.eq_ignore_ascii_case("key") {
            Some(key.to_string())
        } else {
            form.get(field).map(str::to_string)
        }
    };
    let mut covered: Vec<String> = Vec::new();
    let mut range = None;
    for cond in conditions {
        let failed = || policy_denied(&format!("Policy Condition failed: {cond}"));
        match cond {
            Value::Object(m) if m.len() == 1 => {
                let (field, want) = m.iter().next().expect("one entry");
                let want =
                    want.as_str().ok_or_else(|| invalid_policy("Invalid Simple-Condition: value must be a string."))?;
                covered.push(field.to_ascii_lowercase());
                if value_of(field).as_deref() != Some(want) {
                    return Err(failed());
                }
            }
            Value::Array(a) if a.len() == 3 => {
                let op = a[0].as_str().unwrap_or_default().to_ascii_lowercase();
                if op == "content-length-range" {
                    let (Some(min), Some(max)) = (a[1].as_u64(), a[2].as_u64()) else {
                        return Err(invalid_policy("Invalid content-length-range: bounds must be integers."));
                    };
                    range = Some((min, max));
                    continue;
                }
                let field = a[1].as_str().and_then(|f| f.strip_prefix('$')).ok_or_else(|| {
                    invalid_policy(&format!("Invalid Condition: the field of {cond} must start with '$'."))
                })?;
                let want = a[2].as_str().ok_or_else(|| invalid_policy(&format!("Invalid Condition: {cond}.")))?;
                covered.push(field.to_ascii_lowercase());
                let have = value_of(field).unwrap_or_default();
                let ok = match op.as_str() {
                    "eq" => have == want,
                    "starts-with" => have.starts_with(want),
                    _ => return Err(invalid_policy(&format!("Invalid Condition: unknown operation in {cond}."))),
                };
                if !ok {
                    return Err(failed());
                }
            }
            _ => return Err(invalid_policy(&format!("Invalid Condition: {cond}."))),
        }
    }
    for (name, _) in &form.0 {
        let lower = name.to_ascii_lowercase();
        let exempt = matches!(lower.as_str(), "policy" | "x-amz-signature" | "file") || lower.starts_with("x-ignore-");
        if !exempt && !covered.contains(&lower) {
            return Err(policy_denied(&format!("Extra input fields: {name}")));
        }
    }
    Ok(range)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the rest of a form (the rest of the current field is skipped by `next_field`).
async fn drain(mut mp: multer::Multipart<'static>) {
    while let Ok(Some(mut field)) = mp.next_field().await {
        while let Ok(Some(_)) = field.chunk().await {}
    }
}

/// `POST /{bucket}` (S3 POST Object): the request's envelope, the form fields up to the file,
/// the policy, the PUT faults, the file into the sink, its size against the policy, the answer.
pub(super) async fn post_object(shared: &Arc<Shared>, req: Request) -> Response {
    let conn = req.extensions().get::<ConnHandle>().cloned();
    let (parts, body) = req.into_parts();
    let raw_path = parts.uri.path().to_string();
    let (bucket, boundary, len) = match envelope(&parts) {
        Ok(e) => e,
        Err((resp, drain_body)) => {
            if drain_body {
                let _ = read_body(body, crate::pace::Pace::none(), None).await;
            }
            return resp;
        }
    };
    let mp = multer::Multipart::new(body.into_data_stream(), boundary);
    let (form, mut file, mp) = match fields_before_file(mp).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let file_name = file.file_name().unwrap_or_default().to_string();
    let key = form.get("key").map(|k| k.replace("${filename}", &file_name));
    let checked = match &key {
        None => Err(must_contain("key")),
        Some(k) if k.is_empty() => {
            Err(xml::error(400, "InvalidArgument", "User key must have a length greater than 0.", &[]))
        }
        Some(k) => check_policy(&form, &bucket, k, Utc::now()),
    };
    let range = match checked {
        Ok(r) => r,
        Err(resp) => {
            drop(file);
            drain(mp).await;
            return resp;
        }
    };
    let key = key.expect("checked above");
    let success_status = match form.get("success_action_status") {
        Some("200") => 200,
        Some("201") => 201,
        _ => 204,
    };

    let injected = shared.faults.lock().unwrap().on_s3_error("POST", &raw_path);
    if let Some(e) = injected {
        drop(file);
        drain(mp).await;
        tracing::debug!(path = %raw_path, code = %e.code, "fault: an S3 error");
        return super::s3_error_response(&e);
    }
    let fault = shared.faults.lock().unwrap().on_put();
    let mut pace = shared.pace();
    match fault {
        PutFault::Reset => {
            let mut n = 0u64;
            while let Ok(Some(c)) = file.chunk().await {
                n += c.len() as u64;
                pace.advance(c.len() as u64).await;
                if n >= len / 2 {
                    break;
                }
            }
            shared.record("s3", "POST", &raw_path, 0);
            tracing::debug!(path = %raw_path, "fault: dropping the connection");
            if let Some(conn) = conn {
                conn.abort();
                std::future::pending::<()>().await;
            }
            return xml::error(500, "InternalError", "connection reset", &[]);
        }
        PutFault::Fail(status) => {
            drop(file);
            drain(mp).await;
            return fail_response(status);
        }
        PutFault::None => {}
    }

    let store = &shared.store;
    let received = receive_file(store, file, &mut pace).await;
    drain(mp).await;
    let Received { data, size: n, md5, sha256 } = match received {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if let Some(refusal) = size_refusal(n, range) {
        data.remove();
        return refusal;
    }
    let etag = super::hex_md5_etag(&md5);
    {
        let mut inner = store.inner.lock().unwrap();
        let (provider, id) = inner.owners.get(&key).cloned().unwrap_or_else(|| ("s3".into(), key.clone()));
        let info =
            ObjectInfo { key: key.clone(), size: n, sha256: String::new(), parts: 1, etag: etag.clone(), provider, id };
        Store::insert_object(&mut inner, info, vec![data], sha256);
    }
    tracing::debug!(%key, size = n, "POST object stored");
    stored_answer(store, &key, &etag, success_status)
}

/// The request before its body: `POST /{bucket}` with no sub-resource, our bucket, a
/// `multipart/form-data` boundary, a `Content-Length` within S3's limit. A refusal says
/// whether the body is to be read first (so a client still sending sees the answer).
fn envelope(parts: &axum::http::request::Parts) -> Result<(String, String, u64), (Response, bool)> {
    let path = parts.uri.path().trim_start_matches('/');
    let bucket_raw = path.strip_suffix('/').unwrap_or(path);
    if bucket_raw.is_empty() || bucket_raw.contains('/') || parts.uri.query().is_some_and(|q| !q.is_empty()) {
        let resp = xml::error(
            405,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
            &[("Method", "POST".into())],
        );
        return Err((resp, true));
    }
    let bucket = sigv4::uri_decode(bucket_raw);
    if bucket != BUCKET {
        let resp = xml::error(404, "NoSuchBucket", "The specified bucket does not exist", &[("BucketName", bucket)]);
        return Err((resp, true));
    }
    let boundary = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"))
        .and_then(|v| multer::parse_boundary(v).ok());
    let Some(boundary) = boundary else {
        let resp = xml::error(
            412,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
            &[("Condition", "Bucket POST must be of the enclosure-type multipart/form-data".into())],
        );
        return Err((resp, true));
    };
    let chunked = parts
        .headers
        .get(header::TRANSFER_ENCODING)
        .is_some_and(|v| v.to_str().unwrap_or("").to_ascii_lowercase().contains("chunked"));
    let len = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let len = match (len, chunked) {
        (Some(l), false) => l,
        _ => {
            let resp = xml::error(411, "MissingContentLength", "You must provide the Content-Length HTTP header.", &[]);
            return Err((resp, true));
        }
    };
    if len > MAX_POST_SIZE + MAX_PRE_DATA as u64 + 64 * 1024 {
        let resp = xml::error(
            400,
            "EntityTooLarge",
            "Your proposed upload exceeds the maximum allowed size",
            &[("ProposedSize", len.to_string()), ("MaxSizeAllowed", MAX_POST_SIZE.to_string())],
        );
        return Err((resp, false));
    }
    Ok((bucket, boundary, len))
}

type FileField = multer::Field<'static>;

/// The form's fields up to the `file` field (at most [`MAX_PRE_DATA`] bytes of them), and the
/// file field itself, with the rest of the form.
async fn fields_before_file(
    mut mp: multer::Multipart<'static>,
) -> Result<(Form, FileField, multer::Multipart<'static>), Response> {
    let mut form = Form(Vec::new());
    let mut pre_data = 0usize;
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => {
                return Err(xml::error(
                    400,
                    "InvalidArgument",
                    "POST requires exactly one file upload per request.",
                    &[("ArgumentName", "file".into()), ("ArgumentValue", "0".into())],
                ));
            }
            Err(e) => {
                tracing::debug!("POST form: {e}");
                return Err(malformed());
            }
        };
        let name = field.name().unwrap_or_default().to_string();
        if name.eq_ignore_ascii_case("file") {
            return Ok((form, field, mp));
        }
        let mut field = field;
        let mut value = BytesMut::new();
        loop {
            match field.chunk().await {
                Ok(Some(c)) => {
                    pre_data += c.len();
                    if pre_data > MAX_PRE_DATA {
                        drop(field);
                        drain(mp).await;
                        return Err(xml::error(
                            400,
                            "MaxPostPreDataLengthExceeded",
                            "Your POST request fields preceding the upload file were too large.",
                            &[("MaxPostPreDataLength", MAX_PRE_DATA.to_string())],
                        ));
                    }
                    value.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("POST form field {name}: {e}");
                    return Err(malformed());
                }
            }
        }
        pre_data += name.len();
        form.0.push((name, String::from_utf8_lossy(&value).into_owned()));
    }
}

/// The file's bytes, streamed into the store's sink (paced as the PUT faults say).
async fn receive_file(
    store: &Store,
    mut file: FileField,
    pace: &mut crate::pace::Pace<'_>,
) -> Result<Received, Response> {
    let mut rx = Receiver::new(store, None, 1, 0).await.map_err(|msg| internal(&msg))?;
    let mut failure = None;
    loop {
        let data = match file.chunk().await {
            Ok(Some(d)) => d,
            Ok(None) => break,
            Err(e) => {
                failure = Some(format!("form: {e}"));
                break;
            }
        };
        if let Err(e) = rx.write(&data).await {
            failure = Some(e);
            break;
        }
        pace.advance(data.len() as u64).await;
    }
    drop(file);
    rx.finish(failure).await.map_err(|msg| {
        tracing::debug!("POST failed: {msg}");
        malformed()
    })
}

/// The file's size against the policy's `content-length-range` and S3's largest POST.
fn size_refusal(n: u64, range: LengthRange) -> Option<Response> {
    let too_large = |max: u64| {
        xml::error(
            400,
            "EntityTooLarge",
            "Your proposed upload exceeds the maximum allowed size",
            &[("ProposedSize", n.to_string()), ("MaxSizeAllowed", max.to_string())],
        )
    };
    if let Some((min, max)) = range {
        if n > max {
            return Some(too_large(max));
        }
        if n < min {
            return Some(xml::error(
                400,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed size",
                &[("ProposedSize", n.to_string()), ("MinSizeAllowed", min.to_string())],
            ));
        }
    }
    (n > MAX_POST_SIZE).then(|| too_large(MAX_POST_SIZE))
}

/// The answer to a stored upload: `success_action_status` (201 with a `PostResponse` body),
/// `ETag`, `Location`.
fn stored_answer(store: &Store, key: &str, etag: &str, success_status: u16) -> Response {
    let location = format!("{}/{}/{}", store.base_url(), BUCKET, sigv4::uri_encode(key, true));
    let mut resp = if success_status == 201 {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<PostResponse><Location>{}</Location><Bucket>{}</Bucket><Key>{}</Key><ETag>{}</ETag></PostResponse>",
            xml::escape(&location),
            xml::escape(BUCKET),
            xml::escape(key),
            xml::escape(etag)
        );
        let mut r = (axum::http::StatusCode::CREATED, body).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        r
    } else {
        let status = axum::http::StatusCode::from_u16(success_status).unwrap_or(axum::http::StatusCode::NO_CONTENT);
        status.into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&xml::request_id()) {
        h.insert("x-amz-request-id", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed_form(expiration: DateTime<Utc>, key: &str) -> Form {
        let store = Store::new("http://h".into(), None, std::time::Duration::from_secs(60), 1);
        let p = store.presign_post(
            &PostPolicy {
                key: key.into(),
                expiration,
                content_type: Some("video/quicktime".into()),
                content_length_range: Some((1, 100)),
            },
            "uplift",
            "s1",
        );
        assert_eq!(p.url, "http://h/uploads");
        Form(p.fields)
    }

    #[test]
    fn policy_round_trip_and_tampering() {
        let now = Utc::now();
        let later = now + chrono::Duration::minutes(30);
        let form = signed_form(later, "uplift/s1/a.mov");
        assert_eq!(check_policy(&form, BUCKET, "uplift/s1/a.mov", now).ok(), Some(Some((1, 100))));
        // Another key, bucket, content type: a failed condition.
        let denied = |r: Result<LengthRange, Response>| r.unwrap_err().status().as_u16();
        assert_eq!(denied(check_policy(&form, BUCKET, "uplift/s1/b.mov", now)), 403);
        assert_eq!(denied(check_policy(&form, "other", "uplift/s1/a.mov", now)), 403);
        let mut f2 = Form(form.0.clone());
        f2.0[1].1 = "video/mp4".into();
        assert_eq!(denied(check_policy(&f2, BUCKET, "uplift/s1/a.mov", now)), 403);
        // An extra field nobody allowed.
        let mut f3 = Form(form.0.clone());
        f3.0.push(("acl".into(), "public-read".into()));
        assert_eq!(denied(check_policy(&f3, BUCKET, "uplift/s1/a.mov", now)), 403);
        f3.0.pop();
        f3.0.push(("x-ignore-me".into(), "1".into()));
        assert!(check_policy(&f3, BUCKET, "uplift/s1/a.mov", now).is_ok());
        // Expired.
        assert_eq!(denied(check_policy(&form, BUCKET, "uplift/s1/a.mov", later + chrono::Duration::seconds(1))), 403);
        // A policy rewritten (another length range) no longer matches its signature.
        let mut f4 = Form(form.0.clone());
        let i = f4.0.iter().position(|(k, _)| k == "policy").unwrap();
        let doc = base64::engine::general_purpose::STANDARD.decode(&f4.0[i].1).unwrap();
        let doc = String::from_utf8(doc).unwrap().replace("100", "999999");
        f4.0[i].1 = base64::engine::general_purpose::STANDARD.encode(doc);
        assert_eq!(denied(check_policy(&f4, BUCKET, "uplift/s1/a.mov", now)), 403);
        // A missing signature field is a 400.
        let mut f5 = Form(form.0.clone());
        f5.0.retain(|(k, _)| k != "x-amz-date");
        assert_eq!(denied(check_policy(&f5, BUCKET, "uplift/s1/a.mov", now)), 400);
    }

    #[test]
    fn starts_with_and_eq_conditions() {
        let now = Utc::now();
        let doc = json!({
            "expiration": policy_time(now + chrono::Duration::minutes(5)),
            "conditions": [
                {"bucket": BUCKET},
                ["starts-with", "$key", "uplift/"],
                ["eq", "$Content-Type", "video/quicktime"],
                {"x-amz-algorithm": sigv4::ALGORITHM},
                {"x-amz-credential": format!("{ACCESS_KEY_ID}/20260101/{REGION}/s3/aws4_request")},
                {"x-amz-date": "20260101T000000Z"},
            ]
        });
        let b64 = base64::engine::general_purpose::STANDARD.encode(doc.to_string());
        let sig = post_signature(SECRET_ACCESS_KEY, "20260101", REGION, &b64);
        let form = |key: &str, ct: &str| {
            Form(vec![
                ("key".into(), key.into()),
                ("content-type".into(), ct.into()),
                ("X-Amz-Algorithm".into(), sigv4::ALGORITHM.into()),
                ("x-amz-credential".into(), format!("{ACCESS_KEY_ID}/20260101/{REGION}/s3/aws4_request")),
                ("x-amz-date".into(), "20260101T000000Z".into()),
                ("Policy".into(), b64.clone()),
                ("x-amz-signature".into(), sig.clone()),
            ])
        };
        assert!(check_policy(&form("uplift/x.mov", "video/quicktime"), BUCKET, "uplift/x.mov", now).is_ok());
        assert!(check_policy(&form("other/x.mov", "video/quicktime"), BUCKET, "other/x.mov", now).is_err());
        assert!(check_policy(&form("uplift/x.mov", "video/mp4"), BUCKET, "uplift/x.mov", now).is_err());
    }
}
