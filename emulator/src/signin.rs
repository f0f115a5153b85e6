//! The vendors' sign-in endpoints, on the API port, handing out short-lived Bearer tokens that
//! every provider API accepts until they expire (see [`crate::auth::check_token`]).
//!
//! * Teleport, client credentials (Varjo's "authentication" page): `POST /oauth2/token` with
//!   `{"grant_type": "client_credentials", "client_id", "client_secret", "scope"?}` as JSON or
//!   form-encoded → 200 `{access_token, expires_in, token_type: "bearer"}`. Errors follow OAuth 2
//!   (RFC 6749 §5.2): 400 `{"error": "invalid_request" | "unsupported_grant_type",
//!   "error_description"}`; 401 `{"error": "invalid_client", "error_description": "Unknown
//!   client_id" | "Invalid client_secret"}`.
//! * TruVideo, signed login (SDK Mobile API, "Generate an API Token"): `POST /api/login` with
//!   the body `{"timestamp": "<ISO 8601>"}` and the headers `x-authentication-api-key`,
//!   `x-multitenant-external-id`, `x-authentication-signature` = hex HMAC-SHA256 of the minified
//!   body keyed with the secret key (the raw body bytes are accepted too) → 200 `{accessToken,
//!   refreshToken}`; the access token is a JWT (HS256, claims `sub` = external id, `iat`, `exp`).
//!   Checked in this order, each a Spring Boot error `{timestamp, status, error, message,
//!   path}`: api key (401 "Invalid API key"), external id (401 "Unknown external id for this API
//!   key"), signature (401 "Invalid signature"), body (400), timestamp (401 "Timestamp expired:
//!   older than 30 minutes", or "Timestamp is in the future" beyond [`CLOCK_SKEW`]).
//!
//! Credentials: [`crate::Config::teleport_client_id`] / `teleport_client_secret`,
//! `truvideo_api_key` / `truvideo_secret_key` / `truvideo_external_id`. Tokens live
//! [`crate::Config::token_lifetime`]; each successful sign-in is in the request log (path
//! `/oauth2/token` or `/api/login`, status 200).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::post;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::fastapi::json_response;
use crate::state::Shared;

/// Oldest login timestamp TruVideo accepts.
pub const MAX_LOGIN_AGE: Duration = Duration::from_secs(30 * 60);
/// How far in the future a login timestamp may be (clocks differ a little).
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Key the emulator signs its TruVideo JWTs with.
const JWT_KEY: &[u8] = b"emulator-jwt-signing-key";

/// Tokens handed out, with their expiry.
#[derive(Default)]
pub struct SignInState {
    issued: Mutex<HashMap<String, Instant>>,
}

impl SignInState {
    /// `Some(true)` for an issued token still valid, `Some(false)` for an expired one, `None`
    /// for a token never issued.
    pub fn valid(&self, token: &str) -> Option<bool> {
        self.issued.lock().unwrap().get(token).map(|exp| Instant::now() < *exp)
    }

    /// Every token handed out (for tests that check no output leaks one).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.issued.lock().unwrap().keys().cloned().collect()
    }

    fn issue(&self, token: &str, lifetime: Duration) {
        let mut issued = self.issued.lock().unwrap();
        let now = Instant::now();
        issued.retain(|_, exp| *exp + Duration::from_secs(3600) > now);
        issued.insert(token.to_string(), now + lifetime);
    }
}

/// The sign-in routes (no fallback: merged with the provider routers).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().route("/oauth2/token", post(oauth2_token)).route("/api/login", post(login)).with_state(shared)
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    let mut resp = json_response(status, &json!({ "error": error, "error_description": description }));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == 401 {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
    }
    resp
}

/// The body of a token request, JSON or form-encoded, as string fields.
fn token_request(headers: &HeaderMap, body: &[u8]) -> Option<HashMap<String, String>> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        return Some(url::form_urlencoded::parse(body).into_owned().collect());
    }
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Object(m) => Some(m.into_iter().filter_map(|(k, v)| Some((k, v.as_str()?.to_string()))).collect()),
        _ => None,
    }
}

async fn oauth2_token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(req) = token_request(&headers, &body) else {
        return oauth_error(400, "invalid_request", "the body must be a JSON object or a form");
    };
    match req.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        None => return oauth_error(400, "invalid_request", "grant_type is required"),
        Some(_) => return oauth_error(400, "unsupported_grant_type", "only client_credentials is supported"),
    }
    let (Some(id), Some(secret)) = (req.get("client_id"), req.get("client_secret")) else {
        return oauth_error(400, "invalid_request", "client_id and client_secret are required");
    };
    let cfg = &shared.config;
    if *id != cfg.teleport_client_id {
        return oauth_error(401, "invalid_client", "Unknown client_id");
    }
    if !constant_time_eq(secret.as_bytes(), cfg.teleport_client_secret.as_bytes()) {
        return oauth_error(401, "invalid_client", "Invalid client_secret");
    }
    let token = format!("tp-{}", uuid::Uuid::new_v4().simple());
    shared.signin.issue(&token, cfg.token_lifetime);
    let mut resp = json_response(
        200,
        &json!({
            "access_token": token,
            "expires_in": cfg.token_lifetime.as_secs_f64().ceil().max(1.0) as u64,
            "token_type": "bearer",
        }),
    );
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A Spring Boot error body, as TruVideo's services answer.
fn spring_error(status: u16, message: &str) -> Response {
    let error = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        _ => "Internal Server Error",
    };
    json_response(
        status,
        &json!({
            "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "status": status,
            "error": error,
            "message": message,
            "path": "/api/login",
        }),
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn signature_ok(secret_key: &str, signature_hex: &str, body: &[u8]) -> bool {
    let Ok(sig) = hex::decode(signature_hex.trim()) else { return false };
    let minified = serde_json::from_slice::<Value>(body).ok().map(|v| v.to_string().into_bytes());
    [Some(body.to_vec()), minified].into_iter().flatten().any(|candidate| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret_key.as_bytes()).expect("any key length");
        mac.update(&candidate);
        mac.verify_slice(&sig).is_ok()
    })
}

/// Parses an ISO 8601 time; without a zone it is taken as UTC.
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|t| t.and_utc())
}

async fn login(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let cfg = &shared.config;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).unwrap_or("");
    let api_key = header("x-authentication-api-key");
    if api_key.is_empty() {
        return spring_error(401, "Missing x-authentication-api-key header");
    }
    if !constant_time_eq(api_key.as_bytes(), cfg.truvideo_api_key.as_bytes()) {
        return spring_error(401, "Invalid API key");
    }
    let external_id = header("x-multitenant-external-id");
    if external_id != cfg.truvideo_external_id {
        return spring_error(401, "Unknown external id for this API key");
    }
    let signature = header("x-authentication-signature");
    if signature.is_empty() {
        return spring_error(401, "Missing x-authentication-signature header");
    }
    if !signature_ok(&cfg.truvideo_secret_key, signature, &body) {
        return spring_error(401, "Invalid signature");
    }
    let ts = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("timestamp").and_then(|t| t.as_str()).map(String::from));
    let Some(ts) = ts else {
        return spring_error(400, "timestamp is required (ISO 8601)");
    };
    let Some(at) = parse_time(&ts) else {
        return spring_error(400, "timestamp is not an ISO 8601 time");
    };
    let now = Utc::now();
    if now.signed_duration_since(at).to_std().is_ok_and(|age| age > MAX_LOGIN_AGE) {
        return spring_error(401, "Timestamp expired: older than 30 minutes");
    }
    if at.signed_duration_since(now).to_std().is_ok_and(|ahead| ahead > CLOCK_SKEW) {
        return spring_error(401, "Timestamp is in the future");
    }
    let token = jwt(external_id, now, cfg.token_lifetime);
    shared.signin.issue(&token, cfg.token_lifetime);
    json_response(200, &json!({ "accessToken": token, "refreshToken": uuid::Uuid::new_v4().to_string() }))
}

/// An HS256 JWT for the tenant, expiring after `lifetime` (`exp` rounded up to the second).
fn jwt(external_id: &str, now: DateTime<Utc>, lifetime: Duration) -> String {
    let enc = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let iat = now.timestamp();
    let exp = (now.timestamp_millis() as f64 / 1000.0 + lifetime.as_secs_f64()).ceil() as i64;
    let head = enc(&json!({ "alg": "HS256", "typ": "JWT" }));
    let claims = enc(&json!({
        "sub": external_id,
        "tenant": external_id,
        "iat": iat,
        "exp": exp,
        "jti": uuid::Uuid::new_v4().simple().to_string(),
    }));
    let mut mac = Hmac::<Sha256>::new_from_slice(JWT_KEY).expect("any key length");
    mac.update(format!("{head}.{claims}").as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{head}.{claims}.{sig}")
}
