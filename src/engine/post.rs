//! Presigned S3 POST form upload: one `multipart/form-data` request carrying the form fields a
//! provider handed out (exactly as received, in order) and then the file.
//!
//! Contract:
//! - the body is the one form-data writer's ([`super::form`]): streamed from the file between a
//!   small head (the fields and the file part's headers) and tail (the closing boundary), with
//!   an exact `Content-Length` computed in advance: memory stays at a few read buffers whatever
//!   the file size;
//! - S3 takes at most [`S3_POST_MAX`] bytes in a POST; larger files are refused before any
//!   request;
//! - the file is the last part: S3 ignores fields that come after it;
//! - progress is reported as for a one-part upload (part 1);
//! - 5xx, 408, 429 and transport failures are retried with the same form (a POST of the same
//!   key replaces the object) while the form is valid; a form that expired, or a 403 whose
//!   message says it expired, is handed back as [`PostResult::Expired`] for the provider to
//!   ask for a new one; any other refusal is an [`Error::Rejected`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::checksum::{self, CrcSlot};
pub(crate) use super::form::FilePart;
use super::progress::{AttemptBytes, Event, Progress};
use super::ratelimit::RateLimit;
use super::request::{Attempt, Call, Executor, Failure, Kind, MAX_ERROR_BODY, Pulse, RetryNotice};
use super::retry::{Outcome, RetryPolicy};
use super::source::FileSource;
use crate::error::{Error, Result};
use crate::redact::safe_url;

/// S3's largest POST upload: 5 GB (5 GiB, as S3's single PUT).
pub(crate) const S3_POST_MAX: u64 = 5 * 1024 * 1024 * 1024;

/// A presigned POST form as a provider hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PostForm {
    /// Where to POST (the bucket's URL).
    pub url: String,
    /// Fields to send before the file, exactly as received and in order.
    pub fields: Vec<(String, String)>,
    /// Until when the form is valid, when the provider says.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Form fields read from a JSON object, in the order of the text (a `serde_json::Map` would
/// sort them). Strings are kept as they are; numbers and booleans become their JSON text;
/// `null` drops the field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FormFields(pub Vec<(String, String)>);

impl<'de> serde::Deserialize<'de> for FormFields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FormFields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of form fields")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<FormFields, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                    let v = match v {
                        serde_json::Value::Null => continue,
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Bool(_) | serde_json::Value::Number(_) => v.to_string(),
                        other => {
                            return Err(serde::de::Error::custom(format!("form field {k} is not a string: {other}")));
                        }
                    };
                    out.push((k, v));
                }
                Ok(FormFields(out))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// What S3 answered to an accepted upload.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    /// `ETag`, verbatim.
    pub etag: Option<String>,
    /// CRC-64/NVME of the file's bytes as sent (the receipt, see [`super::checksum`]).
    pub crc64nvme: u64,
}

/// How a POST ended, when it did not fail outright.
#[derive(Clone, Debug)]
pub(crate) enum PostResult {
    /// The object is stored.
    Stored(Stored),
    /// The form expired (before the upload started, or S3 said so): ask for a new one.
    Expired(String),
}

/// Whether an S3 refusal means "this form expired".
fn says_expired(status: u16, code: Option<&str>, message: &str) -> bool {
    (status == 403 && message.to_ascii_lowercase().contains("expired")) || code == Some("ExpiredToken")
}

/// Uploads `source` with one POST of `form`. See the module documentation for the contract.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn post_form(
    http: &reqwest::Client,
    provider: &'static str,
    source: &FileSource,
    form: &PostForm,
    file: &FilePart,
    retry: &RetryPolicy,
    rate: &RateLimit,
    progress: Arc<dyn Progress>,
    exec: &Executor,
) -> Result<PostResult> {
    let size = source.size();
    check_size(source)?;
    let framing = super::form::form(&form.fields, file, size);
    progress.event(Event::Started {
        file: source.file_name(),
        total_bytes: size,
        parts: 1,
        done_bytes: 0,
        done_parts: 0,
    });
    let host = url::Url::parse(&form.url)
        .ok()
        .and_then(|u| u.host_str().map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0))));
    let on_retry = |n: &RetryNotice| {
        progress.event(Event::Retry { part: 1, attempt: n.attempt, reason: n.reason.clone(), delay: n.delay })
    };
    let call =
        Call { host: host.as_deref(), on_retry: Some(&on_retry), ..Call::new(provider, WHAT, Kind::Form, retry) };
    let post = FormPost { http, provider, source, form, framing: &framing, rate, progress: &progress, exec };
    match exec.run(&call, |attempt| post.attempt(attempt)).await {
        Err(Error::Interrupted { .. }) => Err(interrupted()),
        r => r,
    }
}

/// The call's name in messages.
const WHAT: &str = "POST upload";

/// How an interrupted POST goes on: from the start (it is one request).
fn interrupted() -> Error {
    Error::Interrupted { hint: "run the same command again: the upload starts over (it is one request)".into() }
}

/// A file S3 cannot take in one POST ([`S3_POST_MAX`]) is refused before any request.
fn check_size(source: &FileSource) -> Result<()> {
    let size = source.size();
    if size > S3_POST_MAX {
        return Err(Error::usage(
            format!(
                "{} is {size} bytes ({}): an S3 POST upload takes at most {S3_POST_MAX} bytes (5 GiB)",
                source.path().display(),
                crate::size::human(size),
            ),
            "split or compress the file below 5 GiB",
        ));
    }
    Ok(())
}

/// One [`post_form`]: what each attempt sends.
struct FormPost<'a> {
    http: &'a reqwest::Client,
    provider: &'static str,
    source: &'a FileSource,
    form: &'a PostForm,
    framing: &'a super::form::Framing,
    rate: &'a RateLimit,
    progress: &'a Arc<dyn Progress>,
    exec: &'a Executor,
}

impl FormPost<'_> {
    /// One POST of the form and the file: an expired form is not sent; the bytes of an
    /// attempt that does not store the file are taken back; a Ctrl-C drops it at once (S3
    /// stores a POST whole or not at all), the run's time limit gives it `STOP_GRACE`.
    async fn attempt(&self, attempt: Attempt) -> std::result::Result<PostResult, Failure> {
        if let Some(at) = self.form.expires_at
            && Utc::now() >= at
        {
            return Ok(PostResult::Expired(format!("the upload form expired at {}", at.to_rfc3339())));
        }
        // Taken back unless stored, also when the attempt is dropped (idle watch, Ctrl-C).
        let sent = AttemptBytes::new(self.progress.clone(), 1);
        let crc = CrcSlot::new();
        let body = self.framing.body(self.source, self.rate.clone(), sent.counter(), crc.clone());
        // No bound on the whole request: the executor's idle watch cuts it when it stops
        // moving, never while it moves.
        let pulse = attempt.pulse;
        let req = self
            .http
            .post(&self.form.url)
            .header(reqwest::header::CONTENT_TYPE, self.framing.content_type())
            .header(reqwest::header::CONTENT_LENGTH, self.framing.content_length)
            .body(body);
        let t0 = Instant::now();
        let result = tokio::select! {
            r = pulse.send(req) => r,
            // At once after a Ctrl-C; after the run's time limit it gets `STOP_GRACE`.
            _ = self.exec.cut(Duration::ZERO) => return Err(Failure::Fatal(interrupted())),
        };
        let resp = match result {
            Ok(resp) => resp,
            Err(f) => {
                if let Failure::Outcome { message, .. } = &f {
                    let (provider, url) = (self.provider, safe_url(&self.form.url));
                    tracing::debug!(provider, %url, "form upload failed: {message}");
                }
                return Err(f);
            }
        };
        if !resp.status().is_success() {
            drop(sent);
            return self.refused(resp, &pulse).await;
        }
        let header = |h| resp.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
        let etag = header(reqwest::header::ETAG);
        let location = header(reqwest::header::LOCATION).map(|l| safe_url(&l)).unwrap_or_default();
        let status = resp.status().as_u16();
        let _ = pulse.read_capped(resp, MAX_ERROR_BODY).await;
        let (provider, elapsed_ms) = (self.provider, t0.elapsed().as_millis() as u64);
        tracing::debug!(provider, status, attempt = attempt.number, location, elapsed_ms, url = %safe_url(&self.form.url), "form upload stored");
        sent.keep();
        self.progress.event(Event::PartDone { part: 1 });
        // The store answered before the body's end was handed out (it cannot have stored the
        // file then, but say what the file's bytes are).
        let crc64nvme = match crc.get() {
            Some(c) => c,
            None => checksum::whole_file(self.source, vec![(None, 0, self.source.size())])
                .await
                .map_err(|e| Failure::Fatal(Error::File { path: self.source.path().to_path_buf(), source: e }))?,
        };
        Ok(PostResult::Stored(Stored { etag, crc64nvme }))
    }

    /// A refusal: an expired form ([`says_expired`]) goes back to the provider for a new one;
    /// a checksum the vendor signed into the form is its fault, never sent again
    /// ([`Error::VendorChecksum`]); anything else is for the executor to classify.
    async fn refused(&self, resp: reqwest::Response, pulse: &Pulse) -> std::result::Result<PostResult, Failure> {
        let status = resp.status().as_u16();
        let failure = pulse.refusal(resp, MAX_ERROR_BODY, &[]).await;
        let Failure::Outcome { outcome: Outcome::Status { code, .. }, message, .. } = &failure else {
            return Err(failure);
        };
        let (provider, url) = (self.provider, safe_url(&self.form.url));
        tracing::debug!(provider, status, %url, "form upload refused: {message}");
        if says_expired(status, code.as_deref(), message) {
            return Ok(PostResult::Expired(message.clone()));
        }
        if let Some(code) = code.as_deref().filter(|c| checksum::SIGNED_CHECKSUM_CODES.contains(c)) {
            return Err(Failure::Fatal(Error::VendorChecksum {
                provider,
                what: WHAT.into(),
                status,
                code: code.into(),
                signed: checksum::signed_checksum(&self.form.url, &self.form.fields),
                message: message.clone(),
            }));
        }
        Err(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_keep_their_order() {
        let f: FormFields =
            serde_json::from_str(r#"{"key":"k","policy":"p","Content-Type":"video/quicktime","n":3,"gone":null}"#)
                .unwrap();
        let names: Vec<&str> = f.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["key", "policy", "Content-Type", "n"]);
        assert_eq!(f.0[3].1, "3");
        assert!(serde_json::from_str::<FormFields>(r#"{"a":{"b":1}}"#).is_err());
    }

    #[test]
    fn expiry_is_recognised() {
        assert!(says_expired(403, Some("AccessDenied"), "AccessDenied: Invalid according to Policy: Policy expired."));
        assert!(says_expired(403, Some("AccessDenied"), "AccessDenied: Request has expired"));
        assert!(says_expired(400, Some("ExpiredToken"), "ExpiredToken: The provided token has expired."));
        assert!(!says_expired(403, Some("SignatureDoesNotMatch"), "SignatureDoesNotMatch: The request signature..."));
        assert!(!says_expired(400, Some("EntityTooLarge"), "EntityTooLarge: ..."));
    }
}
