//! Apertur beyond the upload: a session's delivery status, its details and their update, the
//! long-polling queue (list, download, acknowledge) and the project's destinations.
//!
//! Plain Rust arguments in, the server's answers out: no flag, no printing (the command line's
//! `upload apertur ...` parses, calls these and prints). Every id that goes into a path is
//! checked first ([`check_id`]); the options are checked before any request.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::PROVIDER;
use super::{DeliveryReport, check_expires_at, check_id, check_mime_types, check_password, parse_delivery_status};
use crate::engine::http::id_path;
use crate::error::{Error, Result};
use crate::providers::api::{Api, Retry};
use crate::redact::Secret;

fn protocol(what: &str, message: &str) -> Error {
    Error::Protocol { provider: super::PROVIDER, what: what.into(), message: message.into() }
}

/// `GET /api/v1/upload-sessions/{uuid}/delivery-status`: the answer as received, and read.
pub async fn delivery_status(api: &Api, session: &str) -> Result<(Value, DeliveryReport)> {
    check_id("the session", session)?;
    let path =
        id_path(PROVIDER, "delivery status", "/api/v1/upload-sessions/{}/delivery-status", &[("session id", session)])?;
    let v: Value = api.get("delivery status", &path, &[]).json().await?;
    let report = parse_delivery_status(&v)?;
    Ok((v, report))
}

/// `GET /api/v1/upload/{uuid}/session`: the session's details (status, expiry, limits).
pub async fn session(api: &Api, session: &str) -> Result<Value> {
    check_id("the session", session)?;
    let path = id_path(PROVIDER, "get session", "/api/v1/upload/{}/session", &[("session id", session)])?;
    api.get("get session", &path, &[]).json().await
}

/// What `PATCH /api/v1/upload-sessions/{uuid}` changes; `None` (or empty) leaves a field.
#[derive(Clone, Debug, Default)]
pub struct SessionUpdate {
    /// New expiry, ISO 8601, in the future.
    pub expires_at: Option<String>,
    /// New image limit (at least 1).
    pub max_images: Option<u32>,
    /// New accepted MIME types (among the four Apertur takes).
    pub allowed_mime_types: Vec<String>,
    /// New largest width or height, pixels (at least 1).
    pub max_image_dimension: Option<u32>,
    /// New largest image size, MB (at least 1).
    pub max_image_size_mb: Option<u32>,
    /// A new password (4 to 128 characters).
    pub password: Option<Secret>,
    /// Remove the password (`password: null`).
    pub remove_password: bool,
}

impl SessionUpdate {
    /// The request body, checked (no request).
    pub fn body(&self) -> Result<Map<String, Value>> {
        let mut body = Map::new();
        if let Some(t) = &self.expires_at {
            body.insert("expires_at".into(), json!(check_expires_at(t)?));
        }
        for (name, v) in [
            ("max_images", self.max_images),
            ("max_image_dimension", self.max_image_dimension),
            ("max_image_size_mb", self.max_image_size_mb),
        ] {
            if let Some(v) = v {
                if v == 0 {
                    return Err(Error::usage(
                        format!("--{} must be at least 1", name.replace('_', "-")),
                        "give a positive number",
                    ));
                }
                body.insert(name.into(), json!(v));
            }
        }
        let allowed = check_mime_types(&self.allowed_mime_types)?;
        if !allowed.is_empty() {
            body.insert("allowed_mime_types".into(), json!(allowed));
        }
        if let Some(p) = &self.password {
            check_password(p.expose())?;
            body.insert("password".into(), json!(p.expose()));
        }
        if self.remove_password {
            body.insert("password".into(), Value::Null);
        }
        if body.is_empty() {
            return Err(Error::usage(
                "nothing to update",
                "give --expires-at, --max-images, --allowed-mime-type, --max-image-dimension, --max-image-size-mb, --password or --remove-password",
            ));
        }
        Ok(body)
    }
}

/// `PATCH /api/v1/upload-sessions/{uuid}`: the session's details as the server answers them.
pub async fn update_session(api: &Api, session: &str, update: &SessionUpdate) -> Result<Value> {
    check_id("the session", session)?;
    let body = update.body()?;
    let path = id_path(PROVIDER, "update session", "/api/v1/upload-sessions/{}", &[("session id", session)])?;
    api.call("update session", Method::PATCH, &path, &[], Some(&body), Retry::Idempotent).json().await
}

/// `GET /api/v1/upload-sessions/{uuid}/poll`: the images not acknowledged yet (`{id, filename,
/// size_bytes, mime_type, source, created_at}` each).
pub async fn poll_images(api: &Api, session: &str) -> Result<Vec<Value>> {
    check_id("the session", session)?;
    let path = id_path(PROVIDER, "poll", "/api/v1/upload-sessions/{}/poll", &[("session id", session)])?;
    let list: Value = api.get("poll", &path, &[]).json().await?;
    list.get("images")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| protocol("poll", "the answer has no `images` list"))
}

/// `GET /api/v1/upload-sessions/{uuid}/images/{image_id}`: the image's bytes.
pub async fn download_image(api: &Api, session: &str, image: &str) -> Result<bytes::Bytes> {
    check_id("the session", session)?;
    check_image_id(image, "poll")?;
    let what = format!("download image {image}");
    let path = id_path(
        PROVIDER,
        &what,
        "/api/v1/upload-sessions/{}/images/{}",
        &[("session id", session), ("image id", image)],
    )?;
    let answer = api.get(&what, &path, &[]).send().await?;
    Ok(answer.body)
}

/// `POST /api/v1/upload-sessions/{uuid}/images/{image_id}/ack`: the image leaves the queue
/// (idempotent: acknowledging twice changes nothing).
pub async fn ack_image(api: &Api, session: &str, image: &str) -> Result<()> {
    check_id("the session", session)?;
    check_image_id(image, "poll")?;
    let what = format!("acknowledge image {image}");
    let path = id_path(
        PROVIDER,
        &what,
        "/api/v1/upload-sessions/{}/images/{}/ack",
        &[("session id", session), ("image id", image)],
    )?;
    api.call::<()>(&what, Method::POST, &path, &[], None, Retry::Idempotent).send().await?;
    Ok(())
}

/// An image id the server handed out, before it goes into a path.
pub fn check_image_id(id: &str, what: &str) -> Result<()> {
    crate::engine::http::check_path_id(super::PROVIDER, what, "image id", id)
}

/// `/api/v1/projects/{projectId}/destinations`, then `rest` (`{}` in it: `dest`).
fn destinations_path(what: &str, project: &str, rest: &str, dest: Option<&str>) -> Result<String> {
    let template = ["/api/v1/projects/{}/destinations", rest].concat();
    let mut ids = vec![("project id", project)];
    ids.extend(dest.map(|d| ("destination id", d)));
    id_path(PROVIDER, what, &template, &ids)
}

/// `GET /api/v1/projects/{projectId}/destinations`: the list as received.
pub async fn list_destinations(api: &Api, project: &str) -> Result<Vec<Value>> {
    check_id("--project", project)?;
    let path = destinations_path("list destinations", project, "", None)?;
    let v: Value = api.get("list destinations", &path, &[]).json().await?;
    match v {
        Value::Array(list) => Ok(list),
        _ => Err(protocol("list destinations", "the answer is not a list")),
    }
}

/// A new destination: `{type, name, config?}`.
#[derive(Clone, Debug, Default)]
pub struct NewDestination {
    /// `s3`, `webhook`, ...
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its settings (type-specific).
    pub config: Option<Map<String, Value>>,
}

/// `POST /api/v1/projects/{projectId}/destinations` (not idempotent: sent once).
pub async fn create_destination(api: &Api, project: &str, d: &NewDestination) -> Result<Value> {
    check_id("--project", project)?;
    if d.name.trim().is_empty() {
        return Err(Error::usage("--name is empty", "give the destination a name"));
    }
    let mut body = Map::new();
    body.insert("type".into(), json!(d.kind));
    body.insert("name".into(), json!(d.name));
    if let Some(c) = &d.config {
        body.insert("config".into(), Value::Object(c.clone()));
    }
    let path = destinations_path("create destination", project, "", None)?;
    api.call("create destination", Method::POST, &path, &[], Some(&body), Retry::Once).json().await
}

/// What `PATCH .../destinations/{destId}` changes.
#[derive(Clone, Debug, Default)]
pub struct DestinationUpdate {
    /// New name.
    pub name: Option<String>,
    /// New settings.
    pub config: Option<Map<String, Value>>,
    /// Turn it on or off (`isActive`).
    pub active: Option<bool>,
}

/// `PATCH /api/v1/projects/{projectId}/destinations/{destId}`.
pub async fn update_destination(api: &Api, project: &str, dest: &str, u: &DestinationUpdate) -> Result<Value> {
    check_id("--project", project)?;
    check_id("the destination", dest)?;
    let mut body = Map::new();
    if let Some(n) = &u.name {
        body.insert("name".into(), json!(n));
    }
    if let Some(c) = &u.config {
        body.insert("config".into(), Value::Object(c.clone()));
    }
    if let Some(a) = u.active {
        body.insert("isActive".into(), json!(a));
    }
    if body.is_empty() {
        return Err(Error::usage("nothing to update", "give --name, --config, --config-entry or --active"));
    }
    let path = destinations_path("update destination", project, "/{}", Some(dest))?;
    api.call("update destination", Method::PATCH, &path, &[], Some(&body), Retry::Idempotent).json().await
}

/// `DELETE /api/v1/projects/{projectId}/destinations/{destId}`.
pub async fn delete_destination(api: &Api, project: &str, dest: &str) -> Result<()> {
    check_id("--project", project)?;
    check_id("the destination", dest)?;
    let path = destinations_path("delete destination", project, "/{}", Some(dest))?;
    api.call::<()>("delete destination", Method::DELETE, &path, &[], None, Retry::Idempotent).send().await?;
    Ok(())
}

/// `POST .../destinations/{destId}/test`: the answer (`{success, status, error?, message?}`),
/// and, when the test delivery failed, why.
pub async fn test_destination(api: &Api, project: &str, dest: &str) -> Result<(Value, Option<String>)> {
    check_id("--project", project)?;
    check_id("the destination", dest)?;
    let path = destinations_path("test destination", project, "/{}/test", Some(dest))?;
    let v: Value = api.call("test destination", Method::POST, &path, &[], None::<&()>, Retry::Once).json().await?;
    let failure = (v.get("success").and_then(Value::as_bool) == Some(false)).then(|| {
        v.get("error")
            .or_else(|| v.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("the test delivery failed")
            .to_string()
    });
    Ok((v, failure))
}

/// One page of `GET /api/v1/uploads?page&pageSize` (the SDK's `UploadsListPage`): its rows
/// and the number of pages.
pub async fn uploads_page(api: &Api, page: u32, page_size: u32) -> Result<(Vec<Value>, Option<u64>)> {
    let v: Value = api
        .get("list uploads", "/api/v1/uploads", &[("page", page.to_string()), ("pageSize", page_size.to_string())])
        .json()
        .await?;
    let rows = v
        .get("data")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| protocol("list uploads", "the answer has no `data` list"))?;
    Ok((rows, v.get("totalPages").and_then(Value::as_u64)))
}

/// The uploads created at or after `since` (a row whose `createdAt` cannot be read is kept):
/// pages of 100 from the first, until the last page, an empty one, `max_pages`, or, the list
/// being newest first so far, a page ending before `since` (the order is not documented, so it
/// is checked, not assumed).
pub async fn uploads_since(api: &Api, since: DateTime<Utc>, max_pages: u32) -> Result<Vec<Value>> {
    const PAGE_SIZE: u32 = 100;
    let created = |r: &Value| {
        r.get("createdAt")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let mut out = Vec::new();
    let (mut ordered, mut last): (bool, Option<DateTime<Utc>>) = (true, None);
    for page in 1..=max_pages {
        let (rows, pages) = uploads_page(api, page, PAGE_SIZE).await?;
        for r in &rows {
            let t = created(r);
            match (t, last) {
                (Some(t), Some(before)) if t > before => ordered = false,
                (None, _) => ordered = false,
                _ => {}
            }
            last = t.or(last);
            if t.is_none_or(|t| t >= since) {
                out.push(r.clone());
            }
        }
        let past = ordered && last.is_some_and(|t| t < since);
        if rows.is_empty() || past || pages.is_some_and(|n| u64::from(page) >= n) {
            return Ok(out);
        }
    }
    Err(protocol("list uploads", &format!("the uploads list goes on past {max_pages} pages of {PAGE_SIZE}: giving up")))
}
