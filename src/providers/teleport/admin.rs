//! Varjo Teleport beyond the upload: the capture list, one capture's state (found by paging
//! the list, [`super::pager`]: the API has no GET for one capture), rename, delete, waiting for
//! processing, and the share metadata that lists the model files.
//!
//! States (PROVIDERS.md): `READY` is success, `ERROR` or `FAILED` failure, anything else
//! (CREATED, UPLOADED, PROCESSING, ...) in progress. Timestamps without a timezone are UTC.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::engine::http::id_path;
use crate::engine::poll::{Poller, Step};
use crate::engine::progress::{Event, Progress};
use crate::error::{Error, Result};
use crate::providers::api::{Api, Retry};

/// A capture as listed (`CaptureOutput`). Only `eid` and `state` are required here; every other
/// field is kept as received, so that a new or differently typed field never breaks a listing.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Capture {
    /// External id.
    pub eid: String,
    /// `CREATED`, `UPLOADED`, `PROCESSING`, `READY`, `ERROR`, ...
    pub state: String,
    /// Everything else (`name`, `sid`, `created`, `viewer_url`, ...).
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// A capture's `uploaded` field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uploaded {
    /// Not in the answer at all: nothing can be told from it.
    Absent,
    /// `null`: the upload is not complete.
    Null,
    /// The time the completion was accepted.
    At(String),
}

/// Where a capture stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `READY`.
    Ready,
    /// `ERROR` or `FAILED`.
    Failed,
    /// Anything else.
    InProgress,
}

impl Capture {
    /// A string field, `None` when absent, null or not a string.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(|v| v.as_str())
    }

    /// `uploaded` (CaptureOutput: a time, null until the upload is complete): the one field
    /// that proves a completion arrived.
    pub fn uploaded(&self) -> Uploaded {
        match self.fields.get("uploaded") {
            None => Uploaded::Absent,
            Some(Value::Null) => Uploaded::Null,
            Some(v) => Uploaded::At(v.as_str().map(String::from).unwrap_or_else(|| v.to_string())),
        }
    }

    /// Success, failure or still going.
    pub fn phase(&self) -> Phase {
        phase(&self.state)
    }

    /// `PROCESSING: Training the 3D model`, or the bare state.
    pub fn state_line(&self) -> String {
        match self.str("state_description").filter(|d| !d.trim().is_empty()) {
            Some(d) => format!("{}: {d}", self.state),
            None => self.state.clone(),
        }
    }

    /// `ERROR: NOT_ENOUGH_FRAMES (not-enough-frames): Processing failed: ...`.
    pub fn failure_reason(&self) -> String {
        let mut s = self.state.clone();
        if let Some(r) = self.fields.get("error_reason").filter(|v| !v.is_null()) {
            s.push_str(": ");
            s.push_str(&r.as_str().map(String::from).unwrap_or_else(|| r.to_string()));
        }
        if let Some(slug) = self.str("error_reason_slug") {
            s.push_str(&format!(" ({slug})"));
        }
        if let Some(d) = self.str("state_description") {
            s.push_str(": ");
            s.push_str(d);
        }
        s
    }

    /// The capture as one JSON object, `created` and `uploaded` as RFC 3339 UTC times.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("eid".into(), self.eid.clone().into());
        m.insert("state".into(), self.state.clone().into());
        for (k, v) in &self.fields {
            let v = match (k.as_str(), v.as_str()) {
                ("created" | "uploaded", Some(t)) => Value::String(rfc3339(t)),
                _ => v.clone(),
            };
            m.insert(k.clone(), v);
        }
        Value::Object(m)
    }
}

/// READY is success, ERROR or FAILED failure, anything else in progress.
pub fn phase(state: &str) -> Phase {
    match state.trim().to_ascii_uppercase().as_str() {
        "READY" => Phase::Ready,
        "ERROR" | "FAILED" => Phase::Failed,
        _ => Phase::InProgress,
    }
}

/// Parses a Teleport timestamp: RFC 3339 with an offset, or without a timezone (then UTC).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc())
}

/// RFC 3339 in UTC (`2025-10-06T18:55:42.733421Z`); the text unchanged when it is not a time.
pub fn rfc3339(s: &str) -> String {
    parse_time(s).map_or_else(|| s.to_string(), |t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// Refuses ids that cannot be a Teleport eid or sid, before any request (they go into paths).
pub fn check_id(kind: &str, id: &str) -> Result<()> {
    if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Ok(());
    }
    Err(Error::usage(
        format!("'{id}' is not a Teleport {kind}"),
        format!("a {kind} is made of letters, digits, '-' and '_'; see `upload teleport list`"),
    ))
}

/// One page of the capture list.
pub async fn list_page(api: &Api, limit: u32, offset: u64) -> Result<Vec<Capture>> {
    super::pager::page(api, limit, offset).await
}

/// Pages of `limit` from `offset` until a short page; `on_page` sees each page as it comes.
pub async fn list_all(
    api: &Api,
    limit: u32,
    offset: u64,
    mut on_page: impl FnMut(&[Capture]) -> Result<()>,
) -> Result<u64> {
    let mut pager = super::pager::Pager::new(api, limit, offset);
    let mut seen = 0u64;
    while let Some(page) = pager.next_page().await? {
        on_page(&page)?;
        seen += page.len() as u64;
    }
    Ok(seen)
}

/// The capture, or a 404-like rejection naming it.
pub async fn status(api: &Api, eid: &str) -> Result<Capture> {
    check_id("capture eid", eid)?;
    super::pager::find(api, eid, None).await?.ok_or_else(|| not_listed(api, eid))
}

fn not_listed(api: &Api, eid: &str) -> Error {
    Error::Rejected {
        provider: api.provider,
        what: format!("looking up capture {eid}"),
        status: 404,
        code: None,
        message: "no such capture in the list of captures of this account".into(),
    }
}

/// `PUT /api/v1/captures/{eid}` {name}.
pub async fn rename(api: &Api, eid: &str, name: &str) -> Result<Capture> {
    check_id("capture eid", eid)?;
    if name.trim().is_empty() {
        return Err(Error::usage(
            "the new capture name is empty",
            "give a name, e.g. `upload teleport rename EID \"Lobby\"`",
        ));
    }
    let path = id_path("teleport", "rename capture", "/api/v1/captures/{}", &[("eid", eid)])?;
    api.call("rename capture", Method::PUT, &path, &[], Some(&serde_json::json!({ "name": name })), Retry::Idempotent)
        .json()
        .await
}

/// `DELETE /api/v1/captures/{eid}` → 204.
pub async fn delete(api: &Api, eid: &str) -> Result<()> {
    check_id("capture eid", eid)?;
    let path = id_path("teleport", "delete capture", "/api/v1/captures/{}", &[("eid", eid)])?;
    api.call("delete capture", Method::DELETE, &path, &[], None::<&()>, Retry::Idempotent).send().await?;
    Ok(())
}

/// How `--wait` polls.
#[derive(Clone, Copy, Debug)]
pub struct WaitOptions {
    /// First interval between polls; grows by half each time, up to 30 s (or this, if larger).
    pub poll_interval: Duration,
    /// Deadline from the start of the wait.
    pub timeout: Duration,
}

/// Follows a capture until READY (returned), ERROR/FAILED ([`Error::ProcessingFailed`]) or the
/// deadline ([`Error::Timeout`]), showing each new state through `progress`.
pub async fn wait_processed(
    api: &Api,
    eid: &str,
    opts: WaitOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Capture> {
    let poller = Poller::new(
        opts.poll_interval.max(Duration::from_millis(50)),
        opts.poll_interval.max(Duration::from_secs(30)),
        Some(opts.timeout),
    );
    // The capture's own `created`, once seen: later searches stop below it.
    let created = std::sync::Mutex::new(None);
    let shown = std::sync::Mutex::new(String::new());
    let last_state = std::sync::Mutex::new("UPLOADED".to_string());
    let misses = std::sync::atomic::AtomicU32::new(0);
    let timeout = || Error::Timeout {
        what: format!(
            "waiting for capture {eid} to be processed (last state {})",
            last_state.lock().expect("state lock")
        ),
        seconds: opts.timeout.as_secs_f64().ceil() as u64,
    };
    let interrupted = || Error::Interrupted {
        hint: format!("the upload is complete; follow it with `upload teleport status {eid}`"),
    };
    poller
        .until(cancel, timeout, interrupted, || async {
            let not_before = *created.lock().expect("created lock");
            let found = super::pager::find(api, eid, not_before).await?;
            let Some(c) = found else {
                if misses.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 >= 3 {
                    return Err(Error::Rejected {
                        provider: api.provider,
                        what: format!("waiting for capture {eid}"),
                        status: 404,
                        code: None,
                        message: "the capture is no longer in the list of captures (deleted?)".into(),
                    });
                }
                return Ok(Step::Again);
            };
            misses.store(0, std::sync::atomic::Ordering::SeqCst);
            *created.lock().expect("created lock") = c.str("created").and_then(parse_time);
            let line = c.state_line();
            {
                let mut shown = shown.lock().expect("shown lock");
                if line != *shown {
                    tracing::info!(%eid, state = %c.state, "capture state");
                    progress.event(Event::Phase { message: line.clone() });
                    *shown = line;
                }
            }
            *last_state.lock().expect("state lock") = c.state.clone();
            match c.phase() {
                Phase::Ready => Ok(Step::Done(c)),
                Phase::Failed => Err(Error::ProcessingFailed {
                    provider: api.provider,
                    id: eid.to_string(),
                    reason: c.failure_reason(),
                }),
                Phase::InProgress => Ok(Step::Again),
            }
        })
        .await
}

/// `GET /share/{sid}/metadata` parameters.
#[derive(Clone, Debug)]
pub struct MetadataQuery {
    /// `ply` or `sogs-sh0` (the API also knows `fragment-chunk1`, `fragment-float16`).
    pub profile: String,
    /// `sd` or `hd`.
    pub quality: String,
    /// The level-of-detail hierarchy.
    pub lod: bool,
    /// Model URLs on the CDN (the API's default) or not.
    pub use_cdn: bool,
}

/// One entry of `models` (`SegmentModel`).
#[derive(Clone, Debug, Deserialize)]
pub struct SegmentModel {
    /// Where the file is.
    pub url: String,
    /// Its size in bytes.
    pub size: u64,
    /// Other fields (`id`, `parent`, `aabb`, `resolution_range`).
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// The metadata as received (`CaptureMetadata`); a 404 means "not READY (yet)".
pub async fn metadata(api: &Api, sid: &str, q: &MetadataQuery) -> Result<Value> {
    check_id("share id (sid)", sid)?;
    let mut query = vec![("profiles", q.profile.clone()), ("quality", q.quality.clone())];
    if q.lod {
        query.push(("lod", "true".into()));
    }
    if !q.use_cdn {
        query.push(("use_cdn", "false".into()));
    }
    let path = id_path("teleport", "get metadata", "/share/{}/metadata", &[("sid", sid)])?;
    let r = api.get("get metadata", &path, &query).json().await;
    match r {
        Err(Error::Rejected { provider, what, status: 404, code, message }) => Err(Error::Rejected {
            provider,
            what,
            status: 404,
            code,
            message: format!(
                "{message}: no READY capture is shared as {sid} (the metadata exists once processing is READY; `upload teleport status EID` shows the state and sid)"
            ),
        }),
        other => other,
    }
}

/// The `models` of a metadata answer.
pub fn models(api: &Api, metadata: &Value) -> Result<Vec<SegmentModel>> {
    let models = metadata.get("models").cloned().unwrap_or(Value::Null);
    serde_json::from_value(models).map_err(|e| Error::Protocol {
        provider: api.provider,
        what: "get metadata".into(),
        message: format!("cannot read `models`: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases() {
        assert_eq!(phase("READY"), Phase::Ready);
        assert_eq!(phase("ERROR"), Phase::Failed);
        assert_eq!(phase("FAILED"), Phase::Failed);
        for s in ["CREATED", "UPLOADED", "PROCESSING", "QUEUED", ""] {
            assert_eq!(phase(s), Phase::InProgress, "{s}");
        }
    }

    #[test]
    fn times_without_timezone_are_utc() {
        for (given, utc) in [
            ("2025-10-06T18:55:42.733421", "2025-10-06T18:55:42.733421Z"),
            ("2025-10-06T18:55:42", "2025-10-06T18:55:42Z"),
            ("2025-10-06T20:55:42.5+02:00", "2025-10-06T18:55:42.500Z"),
            ("2022-04-13T15:42:05.901Z", "2022-04-13T15:42:05.901Z"),
            ("yesterday", "yesterday"),
        ] {
            assert_eq!(rfc3339(given), utc, "{given}");
        }
    }

    #[test]
    fn failure_reason_names_everything() {
        let c: Capture = serde_json::from_value(serde_json::json!({
            "eid": "e1", "state": "ERROR", "error_reason": "NOT_ENOUGH_FRAMES",
            "error_reason_slug": "not-enough-frames", "state_description": "Too few frames"
        }))
        .unwrap();
        assert_eq!(c.failure_reason(), "ERROR: NOT_ENOUGH_FRAMES (not-enough-frames): Too few frames");
        assert_eq!(c.phase(), Phase::Failed);
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("eid", "hd72kkw82ksa").is_ok());
        for bad in ["", "../x", "a b"] {
            assert!(check_id("eid", bad).is_err(), "{bad:?}");
        }
    }
}
