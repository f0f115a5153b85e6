//! AWS Signature Version 4 for presigned S3 URLs (query-string authentication).
//!
//! Both directions live here: [`presign_url`] builds a URL the way the AWS SDKs do, and
//! [`verify_presigned`] checks a received request the way S3 does: the canonical request is
//! rebuilt from the *decoded* path and query (each re-encoded with the AWS rules), so a client
//! that sends `/` for `%2F` in the path or `~` for `%7E` still matches, while any change to a
//! signed value (a parameter, the host, the method, the key) does not.
//!
//! Presigned URLs always use `UNSIGNED-PAYLOAD`. Header authentication
//! (`Authorization: AWS4-HMAC-SHA256 ...`, what aws-cli and rclone send) is checked by
//! [`verify_header_auth`]; its payload is a hex SHA-256, `UNSIGNED-PAYLOAD`, or an
//! `aws-chunked` stream whose chunk signatures [`ChunkSigner`] checks.

use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The algorithm name in `X-Amz-Algorithm`.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Payload hash used by presigned URLs.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// Longest lifetime S3 accepts for a presigned URL (7 days).
pub const MAX_EXPIRES: u64 = 604_800;
const AMZ_DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// Percent-encodes `s` the AWS way: every byte but `A-Z a-z 0-9 - _ . ~` becomes `%XX`
/// (upper-case hex); `/` is kept when `keep_slash` (paths) and encoded otherwise (query).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if keep_slash => out.push('/'),
            _ => {
                out.push('%');
                out.push_str(&format!("{b:02X}"));
            }
        }
    }
    out
}

/// Percent-decodes `s`. A `+` stays a `+`, as S3 reads it in SigV4 query strings.
pub fn uri_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Splits a raw query string into decoded `(name, value)` pairs, in order.
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (uri_decode(k), uri_decode(v)),
            None => (uri_decode(p), String::new()),
        })
        .collect()
}

/// The canonical query string: every pair encoded, sorted by name then value, joined by `&`.
pub fn canonical_query(pairs: &[(String, String)]) -> String {
    let mut enc: Vec<(String, String)> =
        pairs.iter().map(|(k, v)| (uri_encode(k, false), uri_encode(v, false))).collect();
    enc.sort();
    enc.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The SigV4 signing key for a day (`YYYYMMDD`), region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// Everything the signature covers, already canonical.
struct Canonical<'a> {
    method: &'a str,
    /// URI-encoded path (`/` kept).
    path: &'a str,
    /// Canonical query string (without `X-Amz-Signature`).
    query: &'a str,
    /// `(lower-case name, trimmed value)` sorted by name.
    headers: &'a [(String, String)],
    amz_date: &'a str,
    scope: &'a str,
    /// The payload hash line: a hex SHA-256, `UNSIGNED-PAYLOAD`, or a `STREAMING-…` marker.
    payload: &'a str,
}

impl Canonical<'_> {
    fn signature(&self, secret: &str, date: &str, region: &str, service: &str) -> String {
        let mut canonical_headers = String::new();
        for (k, v) in self.headers {
            canonical_headers.push_str(k);
            canonical_headers.push(':');
            canonical_headers.push_str(v);
            canonical_headers.push('\n');
        }
        let signed_headers = self.headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
        let creq = format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            self.method, self.path, self.query, canonical_headers, signed_headers, self.payload
        );
        let sts =
            format!("{ALGORITHM}\n{}\n{}\n{}", self.amz_date, self.scope, hex::encode(Sha256::digest(creq.as_bytes())));
        hex::encode(hmac(&signing_key(secret, date, region, service), sts.as_bytes()))
    }
}

/// Splits `scheme://authority/path?query` into its three pieces (authority without userinfo).
fn split_url(url: &str) -> (&str, &str, &str, &str) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let (authority, path_query) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => match rest.find('?') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        },
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    (scheme, authority, path, query)
}

/// The `host` header value a client sends for `scheme://authority`: the default port is dropped.
fn host_header(scheme: &str, authority: &str) -> String {
    let lower = authority.to_ascii_lowercase();
    match (scheme, lower.rsplit_once(':')) {
        ("http", Some((h, "80"))) | ("https", Some((h, "443"))) => h.to_string(),
        _ => lower.clone(),
    }
}

/// Presigns `url` for `method` with SigV4 query authentication (service `s3`, payload
/// `UNSIGNED-PAYLOAD`, signed header `host`), valid `expires` seconds from `now`.
///
/// `url` may already carry a query (`partNumber`, `uploadId`...): its parameters are signed
/// too. Its path is percent-decoded and re-encoded the AWS way (every byte but
/// `A-Za-z0-9-_.~/` as `%XX`), so pass keys either raw or already encoded (a literal `%` in a
/// key must be sent as `%25`). The returned URL carries the canonical (sorted, encoded) query
/// followed by `X-Amz-Signature`.
pub fn presign_url(
    method: &str,
    url: &str,
    access_key: &str,
    secret: &str,
    region: &str,
    now: DateTime<Utc>,
    expires: u64,
) -> String {
    let (scheme, authority, path, query) = split_url(url);
    let path = if path.is_empty() { "/" } else { path };
    let enc_path = uri_encode(&uri_decode(path), true);
    let amz_date = now.format(AMZ_DATE_FORMAT).to_string();
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/s3/aws4_request");
    let mut pairs = parse_query(query);
    pairs.push(("X-Amz-Algorithm".into(), ALGORITHM.into()));
    pairs.push(("X-Amz-Credential".into(), format!("{access_key}/{scope}")));
    pairs.push(("X-Amz-Date".into(), amz_date.clone()));
    pairs.push(("X-Amz-Expires".into(), expires.to_string()));
    pairs.push(("X-Amz-SignedHeaders".into(), "host".into()));
    let cq = canonical_query(&pairs);
    let headers = vec![("host".to_string(), host_header(scheme, authority))];
    let sig = Canonical {
        method,
        path: &enc_path,
        query: &cq,
        headers: &headers,
        amz_date: &amz_date,
        scope: &scope,
        payload: UNSIGNED_PAYLOAD,
    }
    .signature(secret, date, region, "s3");
    format!("{scheme}://{authority}{enc_path}?{cq}&X-Amz-Signature={sig}")
}

/// Why a presigned request was refused; each maps to an S3 error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigError {
    /// 400 `AuthorizationQueryParametersError`: a parameter is missing or malformed.
    BadParameters(String),
    /// 403 `InvalidAccessKeyId`.
    UnknownAccessKey(String),
    /// 403 `SignatureDoesNotMatch`.
    SignatureDoesNotMatch { string_to_sign_hint: String },
    /// 403 `AccessDenied` / "Request has expired".
    Expired { expires: u64, expired_at: DateTime<Utc>, now: DateTime<Utc> },
    /// 403 `AccessDenied` / "Request is not valid yet" (X-Amz-Date in the future).
    NotYetValid,
    /// 400 `AuthorizationHeaderMalformed`.
    MalformedAuthorization(String),
    /// 403 `AccessDenied` with this message.
    AccessDenied(String),
    /// 400 `InvalidRequest` with this message.
    InvalidRequest(String),
    /// 400 `InvalidArgument` with this message.
    InvalidArgument(String),
    /// 403 `RequestTimeTooSkewed`: `x-amz-date` more than 15 minutes from the server's clock.
    TimeSkewed { request_time: DateTime<Utc>, now: DateTime<Utc> },
}

/// What a valid presigned request was signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key: String,
    pub signed_at: DateTime<Utc>,
    pub expires: u64,
}

/// Checks a presigned request.
///
/// * `raw_path` and `raw_query` are as received (still percent-encoded);
/// * `header` looks a request header up by lower-case name (`host` must be answered);
/// * `secret_for` gives the secret of an access key id, `None` when unknown;
/// * `region` is the region the server lives in;
/// * `expire_after_ms`, when set, rejects as expired any URL signed longer ago than this
///   (fault injection), on top of the URL's own `X-Amz-Expires`.
#[allow(clippy::too_many_arguments)]
pub fn verify_presigned(
    method: &str,
    raw_path: &str,
    raw_query: &str,
    header: &dyn Fn(&str) -> Option<String>,
    secret_for: &dyn Fn(&str) -> Option<String>,
    region: &str,
    now: DateTime<Utc>,
    expire_after_ms: Option<u64>,
) -> Result<Verified, SigError> {
    let pairs = parse_query(raw_query);
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let missing = |name: &str| {
        SigError::BadParameters(format!(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters. ({name} is missing)"
        ))
    };
    let algorithm = get("X-Amz-Algorithm").ok_or_else(|| missing("X-Amz-Algorithm"))?;
    if algorithm != ALGORITHM {
        return Err(SigError::BadParameters("X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"".into()));
    }
    let credential = get("X-Amz-Credential").ok_or_else(|| missing("X-Amz-Credential"))?;
    let signature = get("X-Amz-Signature").ok_or_else(|| missing("X-Amz-Signature"))?;
    let amz_date = get("X-Amz-Date").ok_or_else(|| missing("X-Amz-Date"))?;
    let signed_headers = get("X-Amz-SignedHeaders").ok_or_else(|| missing("X-Amz-SignedHeaders"))?;
    let expires_s = get("X-Amz-Expires").ok_or_else(|| missing("X-Amz-Expires"))?;

    let expires: u64 =
        expires_s.parse().map_err(|_| SigError::BadParameters("X-Amz-Expires should be a number".into()))?;
    if expires > MAX_EXPIRES {
        return Err(SigError::BadParameters(
            "X-Amz-Expires must be less than a week (in seconds) that is 604800".into(),
        ));
    }
    let signed_at = NaiveDateTime::parse_from_str(&amz_date, AMZ_DATE_FORMAT)
        .map_err(|_| {
            SigError::BadParameters(format!(
                "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\" ({amz_date})"
            ))
        })?
        .and_utc();
    let parts: Vec<&str> = credential.split('/').collect();
    if parts.len() != 5 || parts[4] != "aws4_request" || parts[3] != "s3" {
        return Err(SigError::BadParameters(format!(
            "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\". ({credential})"
        )));
    }
    let (access_key, date, cred_region) = (parts[0], parts[1], parts[2]);
    if date != &amz_date[..8] {
        return Err(SigError::BadParameters(format!(
            "Error parsing the X-Amz-Credential parameter; incorrect date. This date in the credential must be in the format \"yyyyMMdd\" and match X-Amz-Date ({date})"
        )));
    }
    if cred_region != region {
        return Err(SigError::BadParameters(format!(
            "Error parsing the X-Amz-Credential parameter; the region '{cred_region}' is wrong; expecting '{region}'"
        )));
    }
    let secret = secret_for(access_key).ok_or_else(|| SigError::UnknownAccessKey(access_key.to_string()))?;

    // Canonical headers, in the order of SignedHeaders (which must be sorted and include host).
    let names: Vec<String> = signed_headers.split(';').map(|s| s.to_ascii_lowercase()).collect();
    if !names.iter().any(|n| n == "host") {
        return Err(SigError::BadParameters("X-Amz-SignedHeaders must include the host header".into()));
    }
    let mut headers = Vec::with_capacity(names.len());
    for n in &names {
        let v = header(n).unwrap_or_default();
        let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
        headers.push((n.clone(), v));
    }

    let rest: Vec<(String, String)> = pairs.iter().filter(|(k, _)| k != "X-Amz-Signature").cloned().collect();
    let cq = canonical_query(&rest);
    let path = if raw_path.is_empty() { "/" } else { raw_path };
    let enc_path = uri_encode(&uri_decode(path), true);
    let scope = format!("{date}/{region}/s3/aws4_request");
    let expected = Canonical {
        method,
        path: &enc_path,
        query: &cq,
        headers: &headers,
        amz_date: &amz_date,
        scope: &scope,
        payload: UNSIGNED_PAYLOAD,
    }
    .signature(&secret, date, region, "s3");
    if !constant_time_eq(expected.as_bytes(), signature.to_ascii_lowercase().as_bytes()) {
        return Err(SigError::SignatureDoesNotMatch {
            string_to_sign_hint: format!("{ALGORITHM}\n{amz_date}\n{scope}"),
        });
    }

    // Expiry is checked after the signature, as S3 does (a tampered X-Amz-Expires is a
    // signature mismatch, not an expiry).
    let mut expired_at = signed_at + chrono::Duration::seconds(expires as i64);
    if let Some(ms) = expire_after_ms {
        let fault_at = signed_at + chrono::Duration::milliseconds(ms as i64);
        if fault_at < expired_at {
            expired_at = fault_at;
        }
    }
    if now > expired_at {
        return Err(SigError::Expired { expires, expired_at, now });
    }
    if signed_at > now + chrono::Duration::minutes(15) {
        return Err(SigError::NotYetValid);
    }
    Ok(Verified { access_key: access_key.to_string(), signed_at, expires })
}

/// What `x-amz-content-sha256` declares about the body of a header-signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The hex SHA-256 of the body, which must match what arrives.
    Sha256(String),
    /// `UNSIGNED-PAYLOAD`: the body is not covered.
    Unsigned,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: `aws-chunked` body, chunks unsigned, trailing checksum.
    StreamingUnsignedTrailer,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: `aws-chunked` body, each chunk signed.
    StreamingSigned,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`: signed chunks and a trailer.
    StreamingSignedTrailer,
}

impl Payload {
    /// Parses the header value; `None` for anything S3 would refuse.
    pub fn parse(v: &str) -> Option<Payload> {
        Some(match v {
            UNSIGNED_PAYLOAD => Payload::Unsigned,
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => Payload::StreamingUnsignedTrailer,
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => Payload::StreamingSigned,
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => Payload::StreamingSignedTrailer,
            h if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Payload::Sha256(h.to_ascii_lowercase()),
            _ => return None,
        })
    }

    /// Whether the body is `aws-chunked`.
    pub fn is_chunked(&self) -> bool {
        matches!(self, Payload::StreamingUnsignedTrailer | Payload::StreamingSigned | Payload::StreamingSignedTrailer)
    }

    /// Whether each chunk carries a signature.
    pub fn signed_chunks(&self) -> bool {
        matches!(self, Payload::StreamingSigned | Payload::StreamingSignedTrailer)
    }
}

/// A valid header-signed request.
#[derive(Debug, Clone)]
pub struct HeaderAuth {
    pub access_key: String,
    pub payload: Payload,
    /// Verifies the chunk signatures of a `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` body, seeded
    /// with the request's signature.
    pub chunks: ChunkSigner,
}

/// Chains the signatures of `aws-chunked` chunks: each covers the previous one.
#[derive(Debug, Clone)]
pub struct ChunkSigner {
    key: Vec<u8>,
    amz_date: String,
    scope: String,
    previous: String,
}

/// Hex SHA-256 of the empty string.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

impl ChunkSigner {
    /// The signature of the next chunk, whose SHA-256 is `chunk_sha256`; it becomes the
    /// previous signature of the chunk after.
    pub fn next(&mut self, chunk_sha256: &[u8]) -> String {
        let sts = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{EMPTY_SHA256}\n{}",
            self.amz_date,
            self.scope,
            self.previous,
            hex::encode(chunk_sha256)
        );
        let sig = hex::encode(hmac(&self.key, sts.as_bytes()));
        self.previous = sig.clone();
        sig
    }

    /// Checks `given` against the signature of the next chunk.
    pub fn verify(&mut self, chunk_sha256: &[u8], given: &str) -> bool {
        let expected = self.next(chunk_sha256);
        constant_time_eq(expected.as_bytes(), given.to_ascii_lowercase().as_bytes())
    }
}

/// The pieces of an `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…,
/// Signature=…` header.
fn parse_authorization(value: &str) -> Result<(String, Vec<String>, String), SigError> {
    let malformed = || SigError::MalformedAuthorization(format!("The authorization header is malformed; {value}"));
    let rest = value.strip_prefix(ALGORITHM).ok_or_else(malformed)?.trim();
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for item in rest.split(',') {
        let (k, v) = item.trim().split_once('=').ok_or_else(malformed)?;
        match k.trim() {
            "Credential" => credential = Some(v.trim().to_string()),
            "SignedHeaders" => signed = Some(v.trim().split(';').map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>()),
            "Signature" => signature = Some(v.trim().to_string()),
            _ => return Err(malformed()),
        }
    }
    match (credential, signed, signature) {
        (Some(c), Some(h), Some(s)) => Ok((c, h, s)),
        _ => Err(malformed()),
    }
}

/// Checks a request signed in its `Authorization` header (SigV4, service `s3`).
///
/// The canonical request is rebuilt from `method`, the raw path and query (decoded and
/// re-encoded as in [`verify_presigned`]; every query parameter is signed), the headers named
/// in `SignedHeaders` (`host` required) and `x-amz-content-sha256`, which must be present. The
/// request time is `x-amz-date` and must be within 15 minutes of `now`
/// ([`SigError::TimeSkewed`]). The body itself is checked later by the caller against
/// [`HeaderAuth::payload`].
#[allow(clippy::too_many_arguments)]
pub fn verify_header_auth(
    method: &str,
    raw_path: &str,
    raw_query: &str,
    authorization: &str,
    header: &dyn Fn(&str) -> Option<String>,
    secret_for: &dyn Fn(&str) -> Option<String>,
    region: &str,
    now: DateTime<Utc>,
) -> Result<HeaderAuth, SigError> {
    let (credential, names, signature) = parse_authorization(authorization)?;
    let parts: Vec<&str> = credential.split('/').collect();
    if parts.len() != 5 || parts[4] != "aws4_request" || parts[3] != "s3" {
        return Err(SigError::MalformedAuthorization(format!(
            "The authorization header is malformed; the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\". ({credential})"
        )));
    }
    let (access_key, date, cred_region) = (parts[0], parts[1], parts[2]);
    if cred_region != region {
        return Err(SigError::MalformedAuthorization(format!(
            "The authorization header is malformed; the region '{cred_region}' is wrong; expecting '{region}'"
        )));
    }
    let amz_date = header("x-amz-date").ok_or_else(|| {
        SigError::AccessDenied("AWS authentication requires a valid Date or x-amz-date header".into())
    })?;
    let signed_at = NaiveDateTime::parse_from_str(&amz_date, AMZ_DATE_FORMAT)
        .map_err(|_| SigError::AccessDenied("AWS authentication requires a valid Date or x-amz-date header".into()))?
        .and_utc();
    if date != &amz_date[..8] {
        return Err(SigError::MalformedAuthorization(format!(
            "The authorization header is malformed; Invalid credential date \"{date}\". This date is not the same as X-Amz-Date: \"{}\".",
            &amz_date[..8]
        )));
    }
    let payload_text = header("x-amz-content-sha256").ok_or_else(|| {
        SigError::InvalidRequest("Missing required header for this request: x-amz-content-sha256".into())
    })?;
    let payload = Payload::parse(payload_text.trim()).ok_or_else(|| {
        SigError::InvalidArgument(format!("x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING- value, or a valid sha256 value ({payload_text})"))
    })?;
    let secret = secret_for(access_key).ok_or_else(|| SigError::UnknownAccessKey(access_key.to_string()))?;
    if !names.iter().any(|n| n == "host") {
        return Err(SigError::AccessDenied("SignedHeaders must include the host header".into()));
    }
    let mut headers = Vec::with_capacity(names.len());
    for n in &names {
        let v = header(n).unwrap_or_default();
        headers.push((n.clone(), v.split_whitespace().collect::<Vec<_>>().join(" ")));
    }
    let cq = canonical_query(&parse_query(raw_query));
    let path = if raw_path.is_empty() { "/" } else { raw_path };
    let enc_path = uri_encode(&uri_decode(path), true);
    let scope = format!("{date}/{region}/s3/aws4_request");
    let key = signing_key(&secret, date, region, "s3");
    let expected = Canonical {
        method,
        path: &enc_path,
        query: &cq,
        headers: &headers,
        amz_date: &amz_date,
        scope: &scope,
        payload: payload_text.trim(),
    }
    .signature(&secret, date, region, "s3");
    if !constant_time_eq(expected.as_bytes(), signature.to_ascii_lowercase().as_bytes()) {
        return Err(SigError::SignatureDoesNotMatch {
            string_to_sign_hint: format!("{ALGORITHM}\n{amz_date}\n{scope}"),
        });
    }
    if (signed_at - now).abs() > chrono::Duration::minutes(15) {
        return Err(SigError::TimeSkewed { request_time: signed_at, now });
    }
    let chunks = ChunkSigner { key, amz_date, scope, previous: signature.to_ascii_lowercase() };
    Ok(HeaderAuth { access_key: access_key.to_string(), payload, chunks })
}

/// Signs a request in its headers as the AWS SDKs do (for tests and tools): returns the
/// `Authorization` value. `headers` are `(lower-case name, value)` and must include `host`,
/// `x-amz-date` and `x-amz-content-sha256` (whose value is the payload line); all are signed.
pub fn sign_headers(
    method: &str,
    raw_path: &str,
    raw_query: &str,
    headers: &[(&str, &str)],
    access_key: &str,
    secret: &str,
    region: &str,
) -> String {
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    hs.sort();
    let get = |n: &str| hs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap_or_default();
    let amz_date = get("x-amz-date");
    let payload = get("x-amz-content-sha256");
    let date = &amz_date[..8.min(amz_date.len())];
    let scope = format!("{date}/{region}/s3/aws4_request");
    let cq = canonical_query(&parse_query(raw_query));
    let enc_path = uri_encode(&uri_decode(if raw_path.is_empty() { "/" } else { raw_path }), true);
    let sig = Canonical {
        method,
        path: &enc_path,
        query: &cq,
        headers: &hs,
        amz_date: &amz_date,
        scope: &scope,
        payload: &payload,
    }
    .signature(secret, date, region, "s3");
    let names = hs.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    format!("{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={names}, Signature={sig}")
}

/// A [`ChunkSigner`] for a client that signed its request with `seed_signature` (tests and
/// tools that build `aws-chunked` bodies).
pub fn chunk_signer(secret: &str, amz_date: &str, region: &str, seed_signature: &str) -> ChunkSigner {
    let date = &amz_date[..8];
    ChunkSigner {
        key: signing_key(secret, date, region, "s3"),
        amz_date: amz_date.to_string(),
        scope: format!("{date}/{region}/s3/aws4_request"),
        previous: seed_signature.to_string(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const AK: &str = "AKIAIOSFODNN7EXAMPLE";
    const SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn aws_now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2013, 5, 24, 0, 0, 0).unwrap()
    }

    /// The example of "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)".
    #[test]
    fn aws_documentation_example() {
        let url = presign_url(
            "GET",
            "https://examplebucket.s3.amazonaws.com/test.txt",
            AK,
            SK,
            "us-east-1",
            aws_now(),
            86400,
        );
        assert_eq!(
            url,
            "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    fn verify(url: &str, host: &str, now: DateTime<Utc>) -> Result<Verified, SigError> {
        let (_, _, path, query) = split_url(url);
        let host = host.to_string();
        verify_presigned(
            "PUT",
            path,
            query,
            &|n| (n == "host").then(|| host.clone()),
            &|k| (k == AK).then(|| SK.to_string()),
            "us-east-1",
            now,
            None,
        )
    }

    #[test]
    fn round_trip_with_odd_key_and_query() {
        let url = presign_url(
            "PUT",
            "http://127.0.0.1:9000/uploads/teleport/abc/my file (1)+ä~.zip?partNumber=3&uploadId=u%2Fx",
            AK,
            SK,
            "us-east-1",
            aws_now(),
            3600,
        );
        assert!(url.contains("/my%20file%20%281%29%2B%C3%A4~.zip?"), "{url}");
        assert!(url.contains("uploadId=u%2Fx"), "{url}");
        let ok = verify(&url, "127.0.0.1:9000", aws_now()).unwrap();
        assert_eq!(ok.expires, 3600);
        // `%2F` sent as `/` in the query still decodes to the same value.
        let mangled = url.replace("%2F", "/");
        assert!(verify(&mangled, "127.0.0.1:9000", aws_now()).is_ok());
        // Another host, method or parameter breaks it.
        assert!(matches!(verify(&url, "127.0.0.1:9001", aws_now()), Err(SigError::SignatureDoesNotMatch { .. })));
        let tampered = url.replace("partNumber=3", "partNumber=4");
        assert!(matches!(verify(&tampered, "127.0.0.1:9000", aws_now()), Err(SigError::SignatureDoesNotMatch { .. })));
        let tampered = url.replace("X-Amz-Expires=3600", "X-Amz-Expires=3601");
        assert!(matches!(verify(&tampered, "127.0.0.1:9000", aws_now()), Err(SigError::SignatureDoesNotMatch { .. })));
    }

    #[test]
    fn expiry() {
        let url = presign_url("PUT", "http://h/b/k", AK, SK, "us-east-1", aws_now(), 60);
        assert!(verify(&url, "h", aws_now() + chrono::Duration::seconds(60)).is_ok());
        assert!(matches!(
            verify(&url, "h", aws_now() + chrono::Duration::seconds(61)),
            Err(SigError::Expired { expires: 60, .. })
        ));
    }

    #[test]
    fn host_header_drops_default_ports() {
        assert_eq!(host_header("http", "Example.com:80"), "example.com");
        assert_eq!(host_header("https", "example.com:443"), "example.com");
        assert_eq!(host_header("http", "127.0.0.1:8080"), "127.0.0.1:8080");
    }

    #[test]
    fn missing_parameters() {
        assert!(matches!(verify("http://h/b/k?partNumber=1", "h", aws_now()), Err(SigError::BadParameters(_))));
    }
}
