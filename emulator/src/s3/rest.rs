//! The S3 REST API with SigV4 header authentication, as aws-cli, rclone and the SDKs speak it,
//! on the same store as the presigned URLs (path-style `/{bucket}/{key}`, bucket
//! [`crate::BUCKET`], credentials [`crate::ACCESS_KEY_ID`] / [`crate::SECRET_ACCESS_KEY`]).
//!
//! Requests carrying `Authorization: AWS4-HMAC-SHA256 …` come here ([`is_header_auth`]); the
//! rest keep the presigned path. Operations:
//!
//! * `POST /b/k?uploads` CreateMultipartUpload, `PUT /b/k?partNumber=N&uploadId=U` UploadPart,
//!   `POST /b/k?uploadId=U` CompleteMultipartUpload (XML body), `DELETE /b/k?uploadId=U`
//!   AbortMultipartUpload;
//! * `PUT /b/k` PutObject, `GET`/`HEAD /b/k` GetObject/HeadObject, `DELETE /b/k` DeleteObject;
//! * `HEAD /b` HeadBucket, `PUT /b` CreateBucket (of the one bucket: 200, as us-east-1 answers
//!   its owner), `GET /b?list-type=2` ListObjectsV2 (prefix, delimiter; one page).
//!
//! The body of a PUT is checked against `x-amz-content-sha256` while it streams into the store
//! (MD5 for the ETag computed on the way, no copy): a hex SHA-256 must match (400
//! `XAmzContentSHA256Mismatch`), `UNSIGNED-PAYLOAD` is taken as is, and `aws-chunked` bodies
//! (`STREAMING-…`) are decoded, with each chunk signature checked for the signed variants (403
//! `SignatureDoesNotMatch`). Trailing checksums (`x-amz-checksum-*` trailers) are read and not
//! verified. Faults, latency and bandwidth apply as on the presigned path.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use chrono::Utc;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use super::sigv4::{self, ChunkSigner, HeaderAuth, Payload};
use super::{Target, accept_put, content_md5, no_such_upload, serve_object, sig_error_response, xml};
use crate::server::ConnHandle;
use crate::state::Shared;
use crate::{ACCESS_KEY_ID, BUCKET, REGION, S3_MAX_PART_SIZE, S3_MAX_PARTS, SECRET_ACCESS_KEY};

const XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
/// Largest CompleteMultipartUpload body read.
const MAX_XML_BODY: usize = 4 << 20;

/// Whether the request is signed in its `Authorization` header.
pub fn is_header_auth(headers: &HeaderMap) -> bool {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with(sigv4::ALGORITHM))
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Serves one header-signed request.
pub async fn handle(shared: &Arc<Shared>, req: Request) -> Response {
    let conn = req.extensions().get::<ConnHandle>().cloned();
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let raw_path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let headers = &parts.headers;
    let authorization = header_str(headers, "authorization").unwrap_or_default();
    let secret = |ak: &str| (ak == ACCESS_KEY_ID).then(|| SECRET_ACCESS_KEY.to_string());
    let auth = sigv4::verify_header_auth(
        method.as_str(),
        &raw_path,
        &raw_query,
        &authorization,
        &|n| header_str(headers, n),
        &secret,
        REGION,
        Utc::now(),
    );
    let auth = match auth {
        Ok(a) => a,
        Err(e) => {
            drain(body).await;
            let provided = authorization.rsplit_once("Signature=").map(|(_, s)| s.trim()).unwrap_or("");
            let q = format!("X-Amz-Signature={provided}");
            return sig_error_response(e, &q);
        }
    };

    let path = raw_path.strip_prefix('/').unwrap_or(&raw_path);
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    let bucket = sigv4::uri_decode(bucket);
    let key = sigv4::uri_decode(key);
    if bucket.is_empty() {
        drain(body).await;
        return list_buckets();
    }
    if bucket != BUCKET {
        drain(body).await;
        return xml::error(404, "NoSuchBucket", "The specified bucket does not exist", &[("BucketName", bucket)]);
    }
    let q = sigv4::parse_query(&raw_query);
    let has = |n: &str| q.iter().any(|(k, _)| k == n);
    let get = |n: &str| q.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());

    if key.is_empty() {
        drain(body).await;
        return match method {
            Method::HEAD | Method::PUT => ok_empty(),
            Method::GET if has("location") => xml_ok(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint xmlns=\"{XMLNS}\"></LocationConstraint>"
            )),
            Method::GET => list_objects(shared, &get("prefix").unwrap_or_default(), get("delimiter").as_deref()),
            _ => method_not_allowed(&method),
        };
    }

    match method {
        Method::POST if has("uploads") => {
            drain(body).await;
            let upload_id = shared.store.create_multipart_upload(&key, "s3", &key);
            xml_ok(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InitiateMultipartUploadResult xmlns=\"{XMLNS}\"><Bucket>{BUCKET}</Bucket><Key>{}</Key><UploadId>{}</UploadId></InitiateMultipartUploadResult>",
                xml::escape(&key),
                xml::escape(&upload_id)
            ))
        }
        Method::POST if has("uploadId") => {
            complete(shared, &key, &get("uploadId").unwrap_or_default(), body, &auth, &parts.uri).await
        }
        Method::DELETE if has("uploadId") => {
            drain(body).await;
            let upload_id = get("uploadId").unwrap_or_default();
            if !upload_of(shared, &upload_id, &key) {
                return no_such_upload(&upload_id);
            }
            shared.store.abort(&upload_id);
            no_content()
        }
        Method::DELETE => {
            drain(body).await;
            shared.store.delete_object(&key);
            no_content()
        }
        Method::GET | Method::HEAD => {
            drain(body).await;
            serve_object(shared, method.as_str(), key)
        }
        Method::PUT => {
            let part = if has("uploadId") || has("partNumber") {
                let upload_id = get("uploadId").unwrap_or_default();
                let number =
                    get("partNumber").and_then(|p| p.parse::<u32>().ok()).filter(|p| (1..=S3_MAX_PARTS).contains(p));
                let Some(number) = number else {
                    drain(body).await;
                    return xml::error(
                        400,
                        "InvalidArgument",
                        "Part number must be an integer between 1 and 10000, inclusive",
                        &[
                            ("ArgumentName", "partNumber".into()),
                            ("ArgumentValue", get("partNumber").unwrap_or_default()),
                        ],
                    );
                };
                if !upload_of(shared, &upload_id, &key) {
                    drain(body).await;
                    return no_such_upload(&upload_id);
                }
                Some((upload_id, number))
            } else {
                None
            };
            let content_type = header_str(headers, "content-type");
            put(
                shared,
                conn,
                &raw_path,
                headers,
                body,
                auth,
                Target { key, content_md5: None, content_type, part, alter: false },
            )
            .await
        }
        _ => {
            drain(body).await;
            method_not_allowed(&method)
        }
    }
}

/// Whether `upload_id` is an upload in progress of `key`.
fn upload_of(shared: &Shared, upload_id: &str, key: &str) -> bool {
    shared.store.inner.lock().unwrap().uploads.get(upload_id).is_some_and(|u| u.key == key)
}

/// UploadPart / PutObject: length checks, then the body through [`checked_body`] into the store.
async fn put(
    shared: &Arc<Shared>,
    conn: Option<ConnHandle>,
    raw_path: &str,
    headers: &HeaderMap,
    body: Body,
    auth: HeaderAuth,
    mut target: Target,
) -> Response {
    let number = |name: &str| header_str(headers, name).and_then(|v| v.trim().parse::<u64>().ok());
    let chunked_transfer =
        header_str(headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let len = if auth.payload.is_chunked() {
        number("x-amz-decoded-content-length")
    } else if chunked_transfer {
        None
    } else {
        number("content-length")
    };
    let Some(len) = len else {
        drain(body).await;
        let msg = if auth.payload.is_chunked() {
            "You must provide the x-amz-decoded-content-length HTTP header."
        } else {
            "You must provide the Content-Length HTTP header."
        };
        return xml::error(411, "MissingContentLength", msg, &[]);
    };
    if len > S3_MAX_PART_SIZE {
        return xml::error(
            400,
            "EntityTooLarge",
            "Your proposed upload exceeds the maximum allowed size",
            &[("ProposedSize", len.to_string()), ("MaxSizeAllowed", S3_MAX_PART_SIZE.to_string())],
        );
    }
    target.content_md5 = match content_md5(headers) {
        Ok(m) => m,
        Err(resp) => {
            drain(body).await;
            return resp;
        }
    };
    let failure = Arc::new(Mutex::new(None));
    let body = checked_body(body, auth.payload, auth.chunks, failure.clone());
    let resp = accept_put(shared, conn, raw_path, body, len, target).await;
    if let Some(f) = failure.lock().unwrap().take()
        && !resp.status().is_success()
    {
        return f.response();
    }
    resp
}

/// Why a body was refused while it streamed.
#[derive(Debug, Clone)]
struct BodyError {
    status: u16,
    code: &'static str,
    message: String,
}

impl BodyError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        BodyError { status, code, message: message.into() }
    }
    fn chunk(message: &str) -> Self {
        BodyError::new(400, "IncompleteBody", format!("The aws-chunked body is malformed: {message}"))
    }
    fn response(&self) -> Response {
        xml::error(self.status, self.code, &self.message, &[])
    }
}

/// The body as the store must see it: `aws-chunked` decoded, its signatures and the declared
/// SHA-256 checked on the way. A check that fails ends the stream with an error (so the store
/// keeps nothing) and leaves its reason in `failure`.
fn checked_body(body: Body, payload: Payload, signer: ChunkSigner, failure: Arc<Mutex<Option<BodyError>>>) -> Body {
    struct State {
        body: Body,
        check: Check,
        pending: VecDeque<Bytes>,
        done: bool,
        failure: Arc<Mutex<Option<BodyError>>>,
    }
    enum Check {
        Plain(Option<(Sha256, String)>),
        Chunked(ChunkDecoder),
    }
    let check = match payload {
        Payload::Sha256(hex) => Check::Plain(Some((Sha256::new(), hex))),
        Payload::Unsigned => Check::Plain(None),
        p => Check::Chunked(ChunkDecoder::new(p.signed_chunks().then_some(signer))),
    };
    let state = State { body, check, pending: VecDeque::new(), done: false, failure };
    let stream = futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(b) = st.pending.pop_front() {
                return Some((Ok(b), st));
            }
            if st.done {
                return None;
            }
            let fail = |st: State, e: BodyError| {
                let msg = e.message.clone();
                *st.failure.lock().unwrap() = Some(e);
                let mut st = st;
                st.done = true;
                Some((Err(std::io::Error::other(msg)), st))
            };
            match st.body.frame().await {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    match &mut st.check {
                        Check::Plain(hash) => {
                            if let Some((h, _)) = hash {
                                h.update(&data);
                            }
                            st.pending.push_back(data);
                        }
                        Check::Chunked(dec) => {
                            if let Err(e) = dec.feed(data, &mut st.pending) {
                                return fail(st, e);
                            }
                        }
                    }
                }
                Some(Err(e)) => return Some((Err(std::io::Error::other(e)), st)),
                None => {
                    st.done = true;
                    let verdict = match &mut st.check {
                        Check::Plain(Some((h, want))) => {
                            let got = hex::encode(std::mem::take(h).finalize());
                            (got != *want).then(|| {
                                BodyError::new(
                                    400,
                                    "XAmzContentSHA256Mismatch",
                                    format!(
                                        "The provided 'x-amz-content-sha256' header does not match what was computed ({want} vs {got})."
                                    ),
                                )
                            })
                        }
                        Check::Plain(None) => None,
                        Check::Chunked(dec) => dec.finish().err(),
                    };
                    if let Some(e) = verdict {
                        return fail(st, e);
                    }
                }
            }
        }
    });
    Body::from_stream(stream)
}

/// Decodes an `aws-chunked` body: `hex-size[;chunk-signature=sig]\r\n<data>\r\n` … a zero-size
/// chunk, then trailer lines up to an empty line. Data is handed on as slices of the received
/// buffers (no copy).
struct ChunkDecoder {
    signer: Option<ChunkSigner>,
    state: DecodeState,
    line: Vec<u8>,
    hasher: Sha256,
}

enum DecodeState {
    Size,
    Data { remaining: u64, signature: Option<String> },
    DataEnd { seen: usize },
    Trailer,
    Done,
}

impl ChunkDecoder {
    fn new(signer: Option<ChunkSigner>) -> Self {
        ChunkDecoder { signer, state: DecodeState::Size, line: Vec::new(), hasher: Sha256::new() }
    }

    /// Takes bytes up to a CRLF into `self.line`; `Some(line)` when complete.
    fn take_line(&mut self, data: &mut Bytes) -> Result<Option<String>, BodyError> {
        while !data.is_empty() {
            let b = data[0];
            let _ = data.split_to(1);
            if b == b'\n' && self.line.last() == Some(&b'\r') {
                self.line.pop();
                let line = String::from_utf8(std::mem::take(&mut self.line))
                    .map_err(|_| BodyError::chunk("a chunk header is not text"))?;
                return Ok(Some(line));
            }
            self.line.push(b);
            if self.line.len() > 8192 {
                return Err(BodyError::chunk("a chunk header line is too long"));
            }
        }
        Ok(None)
    }

    fn chunk_done(&mut self, signature: Option<String>) -> Result<(), BodyError> {
        let digest = std::mem::take(&mut self.hasher).finalize();
        if let Some(signer) = &mut self.signer {
            let given = signature.ok_or_else(|| BodyError::chunk("a chunk has no chunk-signature"))?;
            if !signer.verify(&digest, &given) {
                return Err(BodyError::new(
                    403,
                    "SignatureDoesNotMatch",
                    "The request signature we calculated does not match the signature you provided (chunk signature).",
                ));
            }
        }
        Ok(())
    }

    fn feed(&mut self, mut data: Bytes, out: &mut VecDeque<Bytes>) -> Result<(), BodyError> {
        while !data.is_empty() {
            match &mut self.state {
                DecodeState::Size => {
                    let Some(line) = self.take_line(&mut data)? else { return Ok(()) };
                    let (size, ext) = line.split_once(';').unwrap_or((&line, ""));
                    let size = u64::from_str_radix(size.trim(), 16)
                        .map_err(|_| BodyError::chunk(&format!("bad chunk size '{}'", size.trim())))?;
                    let signature =
                        ext.split(';').find_map(|e| e.trim().strip_prefix("chunk-signature=").map(str::to_string));
                    if size == 0 {
                        self.chunk_done(signature)?;
                        self.state = DecodeState::Trailer;
                    } else {
                        self.state = DecodeState::Data { remaining: size, signature };
                    }
                }
                DecodeState::Data { remaining, signature } => {
                    let take = (*remaining).min(data.len() as u64) as usize;
                    let piece = data.split_to(take);
                    if self.signer.is_some() {
                        self.hasher.update(&piece);
                    }
                    out.push_back(piece);
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        let signature = signature.take();
                        self.chunk_done(signature)?;
                        self.state = DecodeState::DataEnd { seen: 0 };
                    }
                }
                DecodeState::DataEnd { seen } => {
                    let want = b"\r\n"[*seen];
                    if data[0] != want {
                        return Err(BodyError::chunk("chunk data is not followed by CRLF"));
                    }
                    let _ = data.split_to(1);
                    *seen += 1;
                    if *seen == 2 {
                        self.state = DecodeState::Size;
                    }
                }
                DecodeState::Trailer => {
                    let Some(line) = self.take_line(&mut data)? else { return Ok(()) };
                    if line.is_empty() {
                        self.state = DecodeState::Done;
                    }
                }
                DecodeState::Done => return Err(BodyError::chunk("bytes after the final chunk")),
            }
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), BodyError> {
        match self.state {
            DecodeState::Done => Ok(()),
            // Some clients end right after the last trailer line's CRLF or the zero chunk.
            DecodeState::Trailer if self.line.is_empty() => Ok(()),
            _ => Err(BodyError::new(
                400,
                "IncompleteBody",
                "You did not provide the number of bytes specified by the Content-Length HTTP header",
            )),
        }
    }
}

/// CompleteMultipartUpload: the XML list of parts, then [`super::Store::complete`].
async fn complete(
    shared: &Arc<Shared>,
    key: &str,
    upload_id: &str,
    body: Body,
    auth: &HeaderAuth,
    uri: &axum::http::Uri,
) -> Response {
    let bytes = match read_small(body).await {
        Some(b) => b,
        None => return xml::error(400, "MalformedXML", "The XML you provided was not well-formed.", &[]),
    };
    if let Payload::Sha256(want) = &auth.payload {
        let got = hex::encode(Sha256::digest(&bytes));
        if got != *want {
            return BodyError::new(
                400,
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
            .response();
        }
    }
    if !upload_of(shared, upload_id, key) {
        return no_such_upload(upload_id);
    }
    let text = String::from_utf8_lossy(&bytes);
    let Some(parts) = parse_complete(&text) else {
        return xml::error(400, "MalformedXML", "The XML you provided was not well-formed.", &[]);
    };
    let store = &shared.store;
    let result = store.complete(upload_id, &parts);
    match result {
        Ok(info) => {
            let location = format!("{}{}", store.base_url(), uri.path());
            xml_ok(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUploadResult xmlns=\"{XMLNS}\"><Location>{}</Location><Bucket>{BUCKET}</Bucket><Key>{}</Key><ETag>{}</ETag></CompleteMultipartUploadResult>",
                xml::escape(&location),
                xml::escape(key),
                xml::escape(&info.etag)
            ))
        }
        Err(super::CompleteError::NoSuchUpload) => no_such_upload(upload_id),
        Err(e) => {
            let mut extra = vec![];
            if let Some(p) = e.part() {
                extra.push(("PartNumber", p.to_string()));
            }
            xml::error(400, e.code(), &e.to_string(), &extra)
        }
    }
}

/// The `(part number, ETag)` pairs of a `<CompleteMultipartUpload>` body; `None` if malformed.
fn parse_complete(text: &str) -> Option<Vec<(u32, String)>> {
    fn tag<'a>(s: &'a str, name: &str) -> Option<&'a str> {
        let open = format!("<{name}>");
        let start = s.find(&open)? + open.len();
        let end = s[start..].find(&format!("</{name}>"))? + start;
        Some(&s[start..end])
    }
    if !text.contains("<CompleteMultipartUpload") {
        return None;
    }
    let mut parts = vec![];
    let mut rest = text;
    while let Some(i) = rest.find("<Part>") {
        let end = rest[i..].find("</Part>")? + i;
        let block = &rest[i + 6..end];
        let number = tag(block, "PartNumber")?.trim().parse().ok()?;
        let etag = unescape(tag(block, "ETag")?.trim());
        parts.push((number, etag));
        rest = &rest[end + 7..];
    }
    Some(parts)
}

/// Decodes XML entities: the five named ones and numeric references (`&#34;`, `&#x22;`, as Go's
/// encoder writes them).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let c = match entity {
            "quot" => Some('"'),
            "apos" => Some('\''),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            e => e
                .strip_prefix("#x")
                .or_else(|| e.strip_prefix("#X"))
                .map(|h| u32::from_str_radix(h, 16).ok())
                .unwrap_or_else(|| e.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// ListObjectsV2 (and V1, which clients parse the same way for one page) of the bucket.
fn list_objects(shared: &Shared, prefix: &str, delimiter: Option<&str>) -> Response {
    let objects: Vec<(String, u64, String, String)> = shared
        .store
        .inner
        .lock()
        .unwrap()
        .objects
        .values()
        .filter(|o| o.info.key.starts_with(prefix))
        .map(|o| {
            let modified = o.modified.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
            (o.info.key.clone(), o.info.size, o.info.etag.clone(), modified)
        })
        .collect();
    let mut contents = String::new();
    let mut prefixes = std::collections::BTreeSet::new();
    let mut count = 0;
    for (key, size, etag, modified) in &objects {
        let rest = &key[prefix.len()..];
        if let Some(d) = delimiter.filter(|d| !d.is_empty())
            && let Some(i) = rest.find(d)
        {
            prefixes.insert(format!("{prefix}{}", &rest[..i + d.len()]));
            continue;
        }
        count += 1;
        contents.push_str(&format!(
            "<Contents><Key>{}</Key><LastModified>{modified}</LastModified><ETag>{}</ETag><Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>",
            xml::escape(key),
            xml::escape(etag)
        ));
    }
    for p in &prefixes {
        contents.push_str(&format!("<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>", xml::escape(p)));
    }
    xml_ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"{XMLNS}\"><Name>{BUCKET}</Name><Prefix>{}</Prefix><KeyCount>{}</KeyCount><MaxKeys>1000</MaxKeys>{}<IsTruncated>false</IsTruncated>{contents}</ListBucketResult>",
        xml::escape(prefix),
        count + prefixes.len(),
        delimiter.map(|d| format!("<Delimiter>{}</Delimiter>", xml::escape(d))).unwrap_or_default(),
    ))
}

fn list_buckets() -> Response {
    xml_ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListAllMyBucketsResult xmlns=\"{XMLNS}\"><Owner><ID>emulator</ID><DisplayName>emulator</DisplayName></Owner><Buckets><Bucket><Name>{BUCKET}</Name><CreationDate>2024-01-01T00:00:00.000Z</CreationDate></Bucket></Buckets></ListAllMyBucketsResult>"
    ))
}

/// Reads a small body whole; `None` when it is larger than [`MAX_XML_BODY`] or fails. An
/// `aws-chunked` body is not expected here (S3 only accepts it on object uploads).
async fn read_small(body: Body) -> Option<Bytes> {
    let mut body = body;
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.ok()?.into_data() {
            buf.extend_from_slice(&d);
            if buf.len() > MAX_XML_BODY {
                return None;
            }
        }
    }
    Some(buf.freeze())
}

/// Reads and discards a body, so the client sees the answer rather than a reset.
async fn drain(body: Body) {
    let mut body = body;
    while let Some(Ok(_)) = body.frame().await {}
}

fn xml_ok(body: String) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    add_request_id(resp)
}

fn ok_empty() -> Response {
    add_request_id(().into_response())
}

fn no_content() -> Response {
    let mut resp = ().into_response();
    *resp.status_mut() = axum::http::StatusCode::NO_CONTENT;
    add_request_id(resp)
}

fn add_request_id(mut resp: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&xml::request_id()) {
        resp.headers_mut().insert("x-amz-request-id", v);
    }
    resp
}

fn method_not_allowed(method: &Method) -> Response {
    xml::error(
        405,
        "MethodNotAllowed",
        "The specified method is not allowed against this resource.",
        &[("Method", method.to_string())],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &[u8], signer: Option<ChunkSigner>, split: usize) -> Result<Vec<u8>, BodyError> {
        let mut dec = ChunkDecoder::new(signer);
        let mut out = VecDeque::new();
        for piece in body.chunks(split) {
            dec.feed(Bytes::copy_from_slice(piece), &mut out)?;
        }
        dec.finish()?;
        Ok(out.into_iter().flat_map(|b| b.to_vec()).collect())
    }

    #[test]
    fn unsigned_trailer_body_decodes_in_any_split() {
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n";
        for split in [1, 2, 3, 7, 100] {
            assert_eq!(decode(body, None, split).unwrap(), b"hello world", "split {split}");
        }
        assert!(decode(b"5\r\nhello\r\n", None, 4).is_err(), "no final chunk");
        assert!(decode(b"5\r\nhelloXX0\r\n\r\n", None, 4).is_err(), "no CRLF after data");
        assert!(decode(b"zz\r\n", None, 4).is_err(), "bad size");
    }

    #[test]
    fn signed_chunks_are_checked() {
        let seed = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
        let signer = || sigv4::chunk_signer("secret", "20130524T000000Z", "us-east-1", seed);
        let mut s = signer();
        let c1 = s.next(&Sha256::digest(b"abc"));
        let c2 = s.next(&Sha256::digest(b""));
        let body = format!("3;chunk-signature={c1}\r\nabc\r\n0;chunk-signature={c2}\r\n\r\n");
        assert_eq!(decode(body.as_bytes(), Some(signer()), 5).unwrap(), b"abc");
        let tampered = body.replace("abc", "abd");
        let e = decode(tampered.as_bytes(), Some(signer()), 5).unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
    }

    #[test]
    fn complete_body_parsed() {
        let xml = r#"<CompleteMultipartUpload xmlns="x"><Part><ETag>&quot;aa&quot;</ETag><PartNumber>1</PartNumber></Part><Part><PartNumber>2</PartNumber><ETag>"bb"</ETag><ChecksumCRC32>x</ChecksumCRC32></Part></CompleteMultipartUpload>"#;
        assert_eq!(parse_complete(xml).unwrap(), vec![(1, "\"aa\"".to_string()), (2, "\"bb\"".to_string())]);
        assert!(parse_complete("<nope/>").is_none());
        assert_eq!(unescape("&#34;a&#x22;&amp;&bogus;"), "\"a\"&&bogus;");
    }
}
