//! Bearer-token check of the provider APIs, with the `unauthorized_api_call_nth` fault. Accepted:
//! the configured tokens ([`crate::Config::tokens`]) and the unexpired tokens handed out by the
//! sign-in endpoints ([`crate::signin`]).

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use crate::faults::ApiFault;
use crate::state::Shared;

/// Why a call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer ...` header.
    Missing,
    /// A token that is not accepted (or the 401 fault).
    Invalid,
}

/// Counts a provider API call and checks its Bearer token: the FastAPI-style error response
/// (401, or 429 for the throttle fault) when it does not pass.
pub fn gate_fastapi(shared: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let fault = shared.faults.lock().unwrap().on_api_call();
    if fault == ApiFault::Throttle {
        let mut resp = crate::fastapi::detail(429, "Too Many Requests");
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Err(resp);
    }
    check_token(shared, headers, fault == ApiFault::Unauthorized).map_err(fastapi_401)
}

/// Checks the Bearer token of a call; `forced` refuses even a good token.
pub fn check_token(shared: &Shared, headers: &HeaderMap, forced: bool) -> Result<(), AuthError> {
    let token = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, rest) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(AuthError::Missing);
    };
    if forced {
        return Err(AuthError::Invalid);
    }
    // A configured token, or one the sign-in endpoints handed out and that has not expired.
    if shared.config.tokens.iter().any(|t| t == token) || shared.signin.valid(token) == Some(true) {
        return Ok(());
    }
    Err(AuthError::Invalid)
}

/// FastAPI's answer: 401 `{"detail": "Not authenticated"}` (no or malformed header) or
/// `{"detail": "Invalid authentication credentials"}`, with `WWW-Authenticate: Bearer`.
pub fn fastapi_401(e: AuthError) -> Response {
    let msg = match e {
        AuthError::Missing => "Not authenticated",
        AuthError::Invalid => "Invalid authentication credentials",
    };
    let mut resp = crate::fastapi::detail(401, msg);
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}
