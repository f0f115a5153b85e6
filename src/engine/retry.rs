//! Retry policy as data, and a pure classifier of attempt outcomes.
//!
//! Retried: connection errors, timeouts, 5xx, 408, 429 (and S3's 400 `RequestTimeout`).
//! A 403 from a presigned URL means "ask for a fresh URL", never "send again to the same
//! URL". Everything else is final. Delays are exponential with full jitter, from an
//! injectable RNG so tests are deterministic; `Retry-After` is honoured when the server sends it.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};

/// How hard to try.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt (`--retries`).
    pub max_retries: u32,
    /// First backoff step.
    pub base_delay: Duration,
    /// Largest backoff step.
    pub max_delay: Duration,
    /// No retry starts after this much time spent on one request (kept under the ~20 min
    /// lifetime of presigned URLs).
    pub deadline: Duration,
    /// How many fresh URLs one part may ask for before giving up.
    pub max_url_refreshes: u32,
    /// Retries of a connection failure to a host that has not answered once in this run: an
    /// unreachable origin is reported within seconds, a flaky one gets `max_retries`.
    pub first_contact_retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 10,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
            deadline: Duration::from_secs(15 * 60),
            max_url_refreshes: 3,
            first_contact_retries: 3,
        }
    }
}

/// What an attempt came to, as far as retrying is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered with this status and (for S3) this error code.
    Status {
        /// HTTP status.
        status: u16,
        /// S3 `<Code>` or API error code, when known.
        code: Option<String>,
    },
    /// The request failed below HTTP: connect, reset, timeout, broken body.
    Transport(TransportKind),
}

/// The tests' shorthand for an [`Outcome::Status`].
#[cfg(test)]
pub(crate) fn st(status: u16, code: Option<&str>) -> Outcome {
    Outcome::Status { status, code: code.map(String::from) }
}

/// What went wrong below HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// The connection could not be made (refused, unreachable, connect timeout): the request
    /// never reached the server.
    Connect,
    /// The host name does not resolve.
    Dns,
    /// The TLS handshake failed (an untrusted or invalid certificate).
    Tls,
    /// The TLS handshake met a server speaking plain http (an `https://` URL of an http
    /// server): nothing was sent.
    PlainHttp,
    /// No answer in time after the request was sent.
    Timeout,
    /// A permanent protocol error: a redirect refused (plain http off loopback, too many hops),
    /// a request that cannot be built (an invalid header value), an answer that is not HTTP
    /// (an invalid header, status line or length). Sending again meets the same: never
    /// retried.
    Protocol,
    /// Reset, broken body, anything else.
    Other,
    /// The store answered, but kept other bytes than were sent: a part's ETag that is not the
    /// MD5 of the part (`--checksum md5`), or S3's `BadDigest` to the part's `Content-MD5`.
    /// Sent again, like a broken transfer.
    Altered,
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Send again after a backoff.
    Retry,
    /// The presigned URL was refused: ask the provider for a new one, then send again.
    RefreshUrl,
    /// Give up.
    Fatal,
}

/// Classifies the outcome of a PUT to a presigned URL.
pub fn classify_part(outcome: &Outcome) -> Class {
    match outcome {
        Outcome::Transport(_) => Class::Retry,
        Outcome::Status { status, code } => match status {
            403 => Class::RefreshUrl,
            400 if code.as_deref() == Some("RequestTimeout") || code.as_deref() == Some("ExpiredToken") => Class::Retry,
            408 | 429 => Class::Retry,
            500..=599 => Class::Retry,
            _ => Class::Fatal,
        },
    }
}

/// Classifies the outcome of an idempotent provider API call (GET, PUT, asking a URL).
pub fn classify_api(outcome: &Outcome) -> Class {
    match outcome {
        Outcome::Transport(_) => Class::Retry,
        Outcome::Status { status, .. } => match status {
            408 | 429 | 500..=599 => Class::Retry,
            _ => Class::Fatal,
        },
    }
}

/// Exponential backoff with full jitter.
pub struct Backoff {
    policy: RetryPolicy,
    rng: StdRng,
    attempt: u32,
}

impl Backoff {
    /// A backoff seeded from the OS.
    pub fn new(policy: RetryPolicy) -> Self {
        Self::with_rng(policy, StdRng::from_entropy())
    }
    /// A backoff with a given RNG (deterministic in tests).
    pub fn with_rng(policy: RetryPolicy, rng: StdRng) -> Self {
        Backoff { policy, rng, attempt: 0 }
    }
    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
    /// The delay before the next attempt, or `None` when the retries are spent.
    /// `retry_after` (from the server) wins over the computed delay, capped at `max_delay`.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.attempt >= self.policy.max_retries {
            return None;
        }
        let exp = self.policy.base_delay.saturating_mul(1u32 << self.attempt.min(20));
        let cap = exp.min(self.policy.max_delay);
        self.attempt += 1;
        if let Some(ra) = retry_after {
            return Some(ra.min(self.policy.max_delay.max(Duration::from_secs(60))));
        }
        let millis = cap.as_millis() as u64;
        // Full jitter, but never less than a tenth of the step, so a storm still spreads out.
        let low = millis / 10;
        Some(Duration::from_millis(self.rng.gen_range(low..=millis.max(low))))
    }
}

/// Parses a `Retry-After` header: seconds, or an HTTP date (the wait until then; a date in the
/// past means no wait).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?, chrono::Utc::now())
}

/// The wait a JSON error body asks for in a `retryAfter` field (seconds, a number or a string;
/// Apertur's Rust SDK reads it there), for answers without a `Retry-After` header.
pub fn body_retry_after(body: &[u8]) -> Option<Duration> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let secs = match v.get("retryAfter")? {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// [`retry_after`] of a header value at time `now`.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(24 * 3600)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&chrono::Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO).min(Duration::from_secs(24 * 3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_asked_in_the_body() {
        for (body, want) in [
            (&br#"{"message":"Rate limit exceeded","code":"RATE_LIMIT","retryAfter":3}"#[..], Some(3.0)),
            (br#"{"retryAfter":"1.5"}"#, Some(1.5)),
            (br#"{"retryAfter":-1}"#, None),
            (br#"{"retryAfter":null}"#, None),
            (br#"{"message":"x"}"#, None),
            (b"<Error/>", None),
        ] {
            assert_eq!(body_retry_after(body).map(|d| d.as_secs_f64()), want, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn part_classes_pinned() {
        let table: Vec<(Outcome, Class)> = vec![
            (Outcome::Transport(TransportKind::Other), Class::Retry),
            (st(500, Some("InternalError")), Class::Retry),
            (st(503, Some("SlowDown")), Class::Retry),
            (st(429, None), Class::Retry),
            (st(408, None), Class::Retry),
            (st(400, Some("RequestTimeout")), Class::Retry),
            (st(403, Some("AccessDenied")), Class::RefreshUrl),
            (st(403, Some("SignatureDoesNotMatch")), Class::RefreshUrl),
            (st(404, Some("NoSuchUpload")), Class::Fatal),
            (st(400, Some("EntityTooLarge")), Class::Fatal),
            (st(411, None), Class::Fatal),
        ];
        for (o, c) in table {
            assert_eq!(classify_part(&o), c, "{o:?}");
        }
        assert_eq!(classify_api(&st(403, None)), Class::Fatal);
        assert_eq!(classify_api(&st(502, None)), Class::Retry);
    }

    #[test]
    fn backoff_is_bounded_and_deterministic() {
        let policy = RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..Default::default()
        };
        let run = || {
            let mut b = Backoff::with_rng(policy.clone(), StdRng::seed_from_u64(7));
            std::iter::from_fn(|| b.next_delay(None)).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        assert_eq!(a.len(), 5);
        for (i, d) in a.iter().enumerate() {
            let step = (100u64 << i).min(1000);
            assert!(d.as_millis() as u64 <= step && d.as_millis() as u64 >= step / 10, "{i}: {d:?}");
        }
        let mut b = Backoff::with_rng(policy, StdRng::seed_from_u64(1));
        assert_eq!(b.next_delay(Some(Duration::from_secs(3))), Some(Duration::from_secs(3)));
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
