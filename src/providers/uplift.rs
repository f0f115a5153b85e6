//! Uplift: reserve a capture (`POST /v1/captures`), then upload the file with one presigned S3
//! POST form ([`crate::engine::post`]).
//!
//! Limits and contract:
//! - one request carries the whole file: at most 5 GiB (S3's POST limit), refused locally above;
//! - the form (`upload_fields`) is sent exactly as returned, in order, then the file as `file`;
//! - the form lives 30 minutes (`upload_expires_at`): when it expired before the upload
//!   started, or S3 answers 403 because it expired, the capture is reserved again with the same
//!   session group id, at most [`MAX_RESERVATIONS`] times (each reservation is a new session
//!   on Uplift's side; the abandoned ones stay NEW);
//! - reserving is not idempotent: it is not repeated after an ambiguous failure (5xx, timeout);
//! - there is no resume: an interrupted upload starts over with a new reservation;
//! - `--wait` follows the capture through the documented `GET /v1/captures/{captureId}`
//!   (captureId = the reservation's `session_id`; docs.uplift.ai, "Get capture"): status
//!   `awaiting_upload` and `processing` go on, `completed` ends it (the result's `status`),
//!   `error` is a processing failure with the capture's `error` text, the deadline a timeout.
//!
//! Validated locally before any request: the file name sent (`--file-name`, else the file's
//! name) ends in `.mov` (any case), has no `/` or `\`, at most 255 characters; the athlete and
//! session group ids are UUIDs; `--capture-time` is RFC 3339 (or `mtime`) and not in the
//! future; the required flags are given; `K=V` extras are well formed and do not shadow a key
//! that has its own flag; the file is not empty and not over 5 GiB.

use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::api::Retry;
use super::{Context, DryRun, Provider, UploadOutcome};
use crate::engine::http::id_path;
use crate::engine::poll::{Poller, Step};
use crate::engine::post::{FilePart, FormFields, PostForm, PostResult, S3_POST_MAX, post_form};
use crate::engine::progress::Event;
use crate::engine::source::FileSource;
use crate::error::{Error, Result};

/// Documented origin.
pub const DEFAULT_ENDPOINT: &str = "https://api.uplift.ai";
/// The reservation path below the origin.
pub const RESERVE_PATH: &str = "/v1/captures";
/// Token environment variable.
pub const TOKEN_ENV: &str = "UPLIFT_TOKEN";
/// What Uplift tells about itself.
pub static DESCRIPTOR: super::Descriptor = super::Descriptor {
    name: "uplift",
    title: "Uplift",
    endpoint: DEFAULT_ENDPOINT,
    rc_endpoint: None,
    token_env: TOKEN_ENV,
    sign_in: None,
    config_section: "uplift",
};
/// Most reservations made for one file when forms keep expiring.
pub const MAX_RESERVATIONS: u32 = 3;
/// Longest `file_name` Uplift takes.
pub const MAX_FILE_NAME: usize = 255;
/// The file part's `Content-Type` (a .mov), unless the form fixes another one.
pub const MOV_CONTENT_TYPE: &str = "video/quicktime";

/// `capture_time`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaptureTime {
    /// Omitted: the server uses its own time.
    Server,
    /// The file's modification time.
    Mtime,
    /// A given time.
    At(DateTime<Utc>),
}

/// Uplift settings as a user gives them (the command line's flags, the configuration file,
/// or a library caller), before [`Uplift::new`] validates them. Blank values
/// count as missing.
#[derive(Clone, Debug)]
pub struct UpliftOptions {
    /// Athlete UUID.
    pub athlete_id: Option<String>,
    /// Session group UUID (default: the run's new one).
    pub session_group_id: Option<String>,
    /// `movement_attributes.activity`, e.g. golf.
    pub activity: Option<String>,
    /// `movement_attributes.movement`, e.g. full_swing.
    pub movement: Option<String>,
    /// `camera_configuration.camera_setup_selection`, e.g. single.down_the_line.
    pub camera_setup: Option<String>,
    /// `camera_configuration.camera_orientation`: portrait or landscape.
    pub orientation: Option<String>,
    /// Extra `camera_configuration` entries `K=V`.
    pub camera_config: Vec<String>,
    /// Extra `movement_attributes` entries `K=V`.
    pub movement_attr: Vec<String>,
    /// `file_name` sent to Uplift (default: the file's name; must end in .mov).
    pub file_name: Option<String>,
    /// `capture_time`: RFC 3339, or `mtime` (default: the server's time).
    pub capture_time: Option<String>,
    /// `--wait`: follow the capture until it is processed (default false).
    pub wait: bool,
    /// Longest wait for processing (`--wait-timeout`, default 1 h).
    pub wait_timeout: std::time::Duration,
    /// First interval between status reads (`--poll-interval`, default 2 s; grows by half up
    /// to 30 s).
    pub poll_interval: std::time::Duration,
}

impl Default for UpliftOptions {
    /// The command line's defaults: nothing given (the required fields must be set), no wait.
    fn default() -> Self {
        UpliftOptions {
            athlete_id: None,
            session_group_id: None,
            activity: None,
            movement: None,
            camera_setup: None,
            orientation: None,
            camera_config: Vec::new(),
            movement_attr: Vec::new(),
            file_name: None,
            capture_time: None,
            wait: false,
            wait_timeout: std::time::Duration::from_secs(3600),
            poll_interval: std::time::Duration::from_secs(2),
        }
    }
}

/// Validated Uplift settings.
#[derive(Clone, Debug)]
struct Settings {
    /// Athlete UUID (hyphenated, lower case).
    pub athlete_id: String,
    /// Session group UUID (hyphenated, lower case).
    pub session_group_id: String,
    /// True when the session group id was generated (not given).
    pub session_group_generated: bool,
    /// `movement_attributes.activity`.
    pub activity: String,
    /// `movement_attributes.movement`.
    pub movement: String,
    /// `camera_configuration.camera_setup_selection`.
    pub camera_setup: String,
    /// `camera_configuration.camera_orientation`.
    pub orientation: String,
    /// Extra `camera_configuration` keys.
    pub camera_config: Vec<(String, String)>,
    /// Extra `movement_attributes` keys.
    pub movement_attr: Vec<(String, String)>,
    /// `file_name` override.
    pub file_name: Option<String>,
    /// `capture_time`.
    pub capture_time: CaptureTime,
    /// `--wait` was given.
    pub wait: bool,
    /// Longest wait for processing (`--wait-timeout`, default 1 h).
    pub wait_timeout: std::time::Duration,
    /// First interval between status reads (`--poll-interval`, default 2 s; grows by half up
    /// to 30 s).
    pub poll_interval: std::time::Duration,
}

fn parse_uuid(value: &str, flag: &str, hint: &str) -> Result<String> {
    let v = value.trim();
    match uuid::Uuid::try_parse(v) {
        Ok(u) if v.len() == 36 => Ok(u.hyphenated().to_string()),
        _ => Err(Error::usage(format!("{flag} '{v}' is not a UUID"), hint)),
    }
}

fn parse_pairs(items: &[String], flag: &str, reserved: &[(&str, &str)]) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in items {
        let Some((k, v)) = item.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
            return Err(Error::usage(
                format!("{flag} '{item}' is not KEY=VALUE"),
                format!("write it as KEY=VALUE, e.g. {flag} lens=wide"),
            ));
        };
        let k = k.trim();
        if let Some((_, own)) = reserved.iter().find(|(r, _)| *r == k) {
            return Err(Error::usage(format!("{flag} {k}=... sets a key that has its own flag"), format!("use {own}")));
        }
        out.retain(|(old, _)| old != k);
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

impl Settings {
    /// Validates the Uplift settings (no request). `default_group` is the session group used
    /// when none is given (one per provider, so the files of a run share it).
    fn from_options(args: &UpliftOptions, default_group: uuid::Uuid) -> Result<Self> {
        let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(String::from);
        let missing: Vec<&str> = [
            ("--athlete-id", &args.athlete_id),
            ("--activity", &args.activity),
            ("--movement", &args.movement),
            ("--camera-setup", &args.camera_setup),
            ("--orientation", &args.orientation),
        ]
        .iter()
        .filter(|(_, v)| given(v).is_none())
        .map(|(f, _)| *f)
        .collect();
        if !missing.is_empty() {
            return Err(Error::usage(
                format!("Uplift needs {}", missing.join(", ")),
                "e.g. --athlete-id aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee (or UPLIFT_ATHLETE_ID) --activity golf \
                 --movement full_swing --camera-setup single.down_the_line --orientation landscape",
            ));
        }
        let athlete_id = parse_uuid(
            &given(&args.athlete_id).unwrap_or_default(),
            "--athlete-id",
            "give the athlete's UUID, e.g. aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee (or set UPLIFT_ATHLETE_ID)",
        )?;
        let (session_group_id, session_group_generated) = match given(&args.session_group_id) {
            Some(g) => (
                parse_uuid(&g, "--session-group-id", "give a UUID, or leave the flag out to start a new group")?,
                false,
            ),
            None => (default_group.hyphenated().to_string(), true),
        };
        let camera_config = parse_pairs(
            &args.camera_config,
            "--camera-config",
            &[("camera_setup_selection", "--camera-setup"), ("camera_orientation", "--orientation")],
        )?;
        let movement_attr = parse_pairs(
            &args.movement_attr,
            "--movement-attr",
            &[("activity", "--activity"), ("movement", "--movement")],
        )?;
        let capture_time = match args.capture_time.as_deref().map(str::trim) {
            None | Some("") => CaptureTime::Server,
            Some(m) if m.eq_ignore_ascii_case("mtime") => CaptureTime::Mtime,
            Some(t) => CaptureTime::At(
                DateTime::parse_from_rfc3339(t)
                    .map_err(|e| {
                        Error::usage(
                            format!("--capture-time '{t}' is not an RFC 3339 time: {e}"),
                            "e.g. --capture-time 2026-05-13T12:00:00Z, or --capture-time mtime for the file's modification time",
                        )
                    })?
                    .with_timezone(&Utc),
            ),
        };
        Ok(Settings {
            athlete_id,
            session_group_id,
            session_group_generated,
            activity: given(&args.activity).unwrap_or_default(),
            movement: given(&args.movement).unwrap_or_default(),
            camera_setup: given(&args.camera_setup).unwrap_or_default(),
            orientation: given(&args.orientation).unwrap_or_default(),
            camera_config,
            movement_attr,
            file_name: args.file_name.clone(),
            capture_time,
            wait: args.wait,
            wait_timeout: args.wait_timeout,
            poll_interval: args.poll_interval,
        })
    }
}

/// The Uplift provider.
pub struct Uplift {
    options: Settings,
}

/// The reservation answer.
#[derive(Deserialize, Debug)]
struct Reservation {
    session_id: String,
    #[serde(default)]
    session_group_id: Option<String>,
    upload_url: String,
    upload_fields: FormFields,
    #[serde(default)]
    upload_expires_at: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// Checks the name sent as `file_name`.
pub fn check_file_name(name: &str) -> Result<()> {
    let hint_name = "pass --file-name NAME.mov to send another name";
    if name.trim().is_empty() {
        return Err(Error::usage("the file name sent to Uplift is empty", hint_name));
    }
    if name.contains('/') || name.contains('\\') {
        return Err(Error::usage(format!("the file name '{name}' contains / or \\, which Uplift refuses"), hint_name));
    }
    if !name.trim().to_ascii_lowercase().ends_with(".mov") {
        return Err(Error::usage(
            format!("the file name '{name}' does not end in .mov: Uplift takes .mov videos"),
            "convert the video to .mov, or pass --file-name NAME.mov if it is one under another name",
        ));
    }
    let n = name.trim().chars().count();
    if n > MAX_FILE_NAME {
        return Err(Error::usage(
            format!("the file name is {n} characters long: Uplift takes at most {MAX_FILE_NAME}"),
            "pass a shorter --file-name NAME.mov",
        ));
    }
    Ok(())
}

impl Uplift {
    /// A provider with these settings, checked (no request): the required fields given, the
    /// UUIDs and `K=V` entries well formed. One new session group per provider when none is
    /// given, shared by the files it uploads.
    pub fn new(options: UpliftOptions) -> Result<Self> {
        Ok(Uplift { options: Settings::from_options(&options, uuid::Uuid::new_v4())? })
    }

    /// Everything checked locally for `file`: the reservation body.
    fn reservation_body(&self, file: &FileSource) -> Result<Value> {
        let o = &self.options;
        let name = match &o.file_name {
            Some(n) => n.clone(),
            // A name that is not valid UTF-8 goes with U+FFFD for its invalid bytes (README).
            None => file.file_name(),
        };
        check_file_name(&name)?;
        let name = name.trim().to_string();
        if file.size() == 0 {
            return Err(Error::usage(format!("{} is empty", file.path().display()), "Uplift needs a non-empty .mov"));
        }
        if file.size() > S3_POST_MAX {
            return Err(Error::usage(
                format!(
                    "{} is {} bytes ({}): Uplift takes one S3 POST upload, at most {S3_POST_MAX} bytes (5 GiB)",
                    file.path().display(),
                    file.size(),
                    crate::size::human(file.size()),
                ),
                "trim or re-encode the video below 5 GiB",
            ));
        }
        let now = Utc::now();
        let capture_time = match &o.capture_time {
            CaptureTime::Server => None,
            CaptureTime::At(t) => {
                if *t > now {
                    return Err(Error::usage(
                        format!("--capture-time {} is in the future", t.to_rfc3339_opts(SecondsFormat::Secs, true)),
                        "give a past time, or leave --capture-time out to use the server's time",
                    ));
                }
                Some(*t)
            }
            CaptureTime::Mtime => {
                let t: DateTime<Utc> = file.mtime().map(DateTime::from).ok_or_else(|| {
                    Error::usage(
                        format!("the modification time of {} is not available", file.path().display()),
                        "pass --capture-time TIME (RFC 3339), or leave it out to use the server's time",
                    )
                })?;
                if t > now {
                    return Err(Error::usage(
                        format!(
                            "the modification time of {} ({}) is in the future",
                            file.path().display(),
                            t.to_rfc3339_opts(SecondsFormat::Secs, true)
                        ),
                        "fix the file's time, pass --capture-time TIME, or leave it out to use the server's time",
                    ));
                }
                Some(t)
            }
        };
        let mut camera = Map::new();
        for (k, v) in &o.camera_config {
            camera.insert(k.clone(), Value::String(v.clone()));
        }
        camera.insert("camera_setup_selection".into(), o.camera_setup.clone().into());
        camera.insert("camera_orientation".into(), o.orientation.clone().into());
        let mut movement = Map::new();
        for (k, v) in &o.movement_attr {
            movement.insert(k.clone(), Value::String(v.clone()));
        }
        movement.insert("activity".into(), o.activity.clone().into());
        movement.insert("movement".into(), o.movement.clone().into());
        let mut body = json!({
            "athlete_id": o.athlete_id,
            "session_group_id": o.session_group_id,
            "camera_configuration": camera,
            "movement_attributes": movement,
            "file_name": name,
        });
        if let Some(t) = capture_time {
            body["capture_time"] = t.to_rfc3339_opts(SecondsFormat::Millis, true).into();
        }
        Ok(body)
    }

    /// Follows the capture (`GET /v1/captures/{id}`) until `completed` (its details), `error`
    /// ([`Error::ProcessingFailed`] with its `error` text) or the deadline ([`Error::Timeout`]).
    async fn wait_processed(&self, ctx: &Context, id: &str) -> Result<Value> {
        let o = &self.options;
        let poller = Poller::new(
            o.poll_interval.max(std::time::Duration::from_millis(50)),
            o.poll_interval.max(std::time::Duration::from_secs(30)),
            Some(o.wait_timeout),
        );
        let last = std::sync::Mutex::new(String::from("awaiting_upload"));
        let timeout = || Error::Timeout {
            what: format!(
                "uplift: waiting for capture {id} to be processed (last status {})",
                last.lock().expect("status lock")
            ),
            seconds: o.wait_timeout.as_secs_f64().ceil() as u64,
        };
        let interrupted = || Error::Interrupted {
            hint: format!("the file is uploaded; its capture is {id} (GET /v1/captures/{id} tells its status)"),
        };
        let path = id_path("uplift", "get capture", "/v1/captures/{}", &[("capture id", id)])?;
        poller
            .until(&ctx.cancel, timeout, interrupted, || async {
                let v: Value = ctx.api.get("get capture", &path, &[]).json().await?;
                let status = v.get("status").and_then(Value::as_str).unwrap_or_default().to_string();
                {
                    let mut last = last.lock().expect("status lock");
                    if status != *last {
                        tracing::info!(capture = %id, %status, "uplift: capture status");
                        ctx.progress.event(Event::Phase { message: format!("processing: {status}") });
                        *last = status.clone();
                    }
                }
                match status.as_str() {
                    "completed" => Ok(Step::Done(v)),
                    "error" => Err(Error::ProcessingFailed {
                        provider: "uplift",
                        id: id.to_string(),
                        reason: v
                            .get("error")
                            .and_then(Value::as_str)
                            .filter(|e| !e.trim().is_empty())
                            .unwrap_or("status error, no error text given")
                            .to_string(),
                    }),
                    _ => Ok(Step::Again),
                }
            })
            .await
    }

    async fn reserve(&self, ctx: &Context, body: &Value) -> Result<(Reservation, PostForm)> {
        let r: Reservation =
            ctx.api.call("reserve capture", Method::POST, RESERVE_PATH, &[], Some(body), Retry::Once).json().await?;
        if self.options.wait {
            // The id goes into the status path: refused before the file is sent.
            crate::engine::http::check_path_id("uplift", "reserve capture", "session_id", &r.session_id)?;
        }
        crate::engine::http::checked_url(&r.upload_url, "upload_url")?;
        if r.upload_fields.0.is_empty() {
            return Err(Error::Protocol {
                provider: "uplift",
                what: "reserve capture".into(),
                message: "upload_fields is empty: there is no form to send".into(),
            });
        }
        if let Some(g) = &r.session_group_id
            && !g.eq_ignore_ascii_case(&self.options.session_group_id)
        {
            tracing::warn!(sent = %self.options.session_group_id, answered = %g, "uplift: the reservation names another session group");
        }
        let expires_at = r.upload_expires_at.as_deref().and_then(|t| match DateTime::parse_from_rfc3339(t) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(e) => {
                tracing::warn!("uplift: cannot read upload_expires_at '{t}': {e}");
                None
            }
        });
        match expires_at {
            Some(t) => {
                tracing::info!(session_id = %r.session_id, expires = %t.to_rfc3339(), "uplift: capture reserved")
            }
            None => tracing::info!(session_id = %r.session_id, "uplift: capture reserved"),
        }
        let form = PostForm { url: r.upload_url.clone(), fields: r.upload_fields.0.clone(), expires_at };
        Ok((r, form))
    }
}

#[async_trait]
impl Provider for Uplift {
    fn descriptor(&self) -> &'static super::Descriptor {
        &DESCRIPTOR
    }

    fn dry_run(&self, file: &FileSource) -> Result<DryRun> {
        let body = self.reservation_body(file)?;
        let mut fields = Map::new();
        for key in ["file_name", "athlete_id", "session_group_id", "camera_configuration", "movement_attributes"] {
            fields.insert(key.into(), body[key].clone());
        }
        fields.insert("capture_time".into(), body.get("capture_time").cloned().unwrap_or("(server time)".into()));
        if self.options.session_group_generated {
            fields.insert("session_group_id_generated".into(), true.into());
        }
        Ok(DryRun {
            provider: "uplift",
            file: file.path().display().to_string(),
            bytes: file.size(),
            part_size: Some(file.size()),
            parts: Some(1),
            requests: vec![
                format!("POST {RESERVE_PATH} (reserve: the server answers upload_url and upload_fields)"),
                "POST multipart/form-data to upload_url: every upload_fields entry as returned, then the file".into(),
            ],
            fields,
        })
    }

    async fn upload(&self, ctx: &Context, file: FileSource) -> Result<UploadOutcome> {
        let started = Instant::now();
        let body = self.reservation_body(&file)?;
        let file_name = body["file_name"].as_str().unwrap_or_default().to_string();
        let mut last_expiry = String::new();
        for reservation in 1..=MAX_RESERVATIONS {
            let (r, form) = self.reserve(ctx, &body).await?;
            let content_type = form
                .fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .map_or_else(|| MOV_CONTENT_TYPE.to_string(), |(_, v)| v.clone());
            let part = FilePart { field: "file".into(), file_name: file_name.clone(), content_type };
            let result = post_form(
                &ctx.api.http,
                "uplift",
                &file,
                &form,
                &part,
                &ctx.uploader.retry,
                &ctx.uploader.rate,
                ctx.progress.clone(),
                &ctx.uploader.exec,
            )
            .await?;
            match result {
                PostResult::Stored(stored) => {
                    file.check_unchanged()?;
                    let capture = match self.options.wait {
                        true => {
                            ctx.progress.event(Event::Phase { message: "uploaded; waiting for processing".into() });
                            Some(self.wait_processed(ctx, &r.session_id).await?)
                        }
                        false => None,
                    };
                    ctx.progress.event(Event::Finished);
                    let mut fields = Map::new();
                    fields.insert("session_id".into(), r.session_id.clone().into());
                    fields.insert(
                        "session_group_id".into(),
                        r.session_group_id.clone().unwrap_or_else(|| self.options.session_group_id.clone()).into(),
                    );
                    fields.insert("upload_expires_at".into(), r.upload_expires_at.clone().into());
                    fields.insert("reservation_status".into(), r.status.clone().into());
                    fields.insert("file_name".into(), file_name.clone().into());
                    fields.insert("athlete_id".into(), self.options.athlete_id.clone().into());
                    fields.insert("reservations".into(), reservation.into());
                    if let Some(etag) = stored.etag {
                        fields.insert("etag".into(), etag.into());
                    }
                    let mut status = "UPLOADED".to_string();
                    if let Some(c) = &capture {
                        status = c.get("status").and_then(Value::as_str).unwrap_or("completed").to_string();
                        // `wait` (a field of the result since `--wait` was accepted): how the wait ended.
                        fields.insert("wait".into(), status.clone().into());
                        for key in ["fps_detected", "capture_time", "activity", "movement"] {
                            if let Some(v) = c.get(key).filter(|v| !v.is_null()) {
                                fields.entry(key).or_insert_with(|| v.clone());
                            }
                        }
                    }
                    return Ok(UploadOutcome {
                        provider: "uplift",
                        file: file.path().display().to_string(),
                        bytes: file.size(),
                        id: r.session_id,
                        status: super::status_word(&status),
                        vendor_status: status,
                        parts: 1,
                        elapsed_s: started.elapsed().as_secs_f64(),
                        crc64nvme: Some(crate::engine::checksum::to_base64(stored.crc64nvme)),
                        fields,
                    });
                }
                PostResult::Expired(why) => {
                    tracing::info!(session_id = %r.session_id, "uplift: upload form expired: {why}");
                    ctx.progress.event(Event::Phase {
                        message: format!(
                            "the upload form of session {} expired ({why}); reserving again",
                            r.session_id
                        ),
                    });
                    last_expiry = why;
                }
            }
        }
        Err(Error::Rejected {
            provider: "uplift",
            what: "POST upload".into(),
            status: 403,
            code: None,
            message: format!(
                "the upload form expired {MAX_RESERVATIONS} times in a row (last: {last_expiry}); check this computer's clock"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> UpliftOptions {
        UpliftOptions {
            athlete_id: Some("AAAAAAAA-bbbb-cccc-dddd-eeeeeeeeeeee".into()),
            activity: Some("golf".into()),
            movement: Some("full_swing".into()),
            camera_setup: Some("single.down_the_line".into()),
            orientation: Some("landscape".into()),
            ..Default::default()
        }
    }

    #[test]
    fn options_are_validated() {
        let g = uuid::Uuid::new_v4();
        let o = Settings::from_options(&args(), g).unwrap();
        assert_eq!(o.athlete_id, "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee");
        assert_eq!((o.session_group_id.as_str(), o.session_group_generated), (g.to_string().as_str(), true));
        assert_eq!(o.capture_time, CaptureTime::Server);

        let e = Settings::from_options(&UpliftOptions { activity: None, orientation: Some(" ".into()), ..args() }, g)
            .unwrap_err();
        assert_eq!(e.to_string(), "Uplift needs --activity, --orientation");
        let e = Settings::from_options(&UpliftOptions { athlete_id: Some("42".into()), ..args() }, g).unwrap_err();
        assert!(e.to_string().contains("--athlete-id '42' is not a UUID"));
        let simple = UpliftOptions { session_group_id: Some("11111111222233334444555555555555".into()), ..args() };
        assert!(Settings::from_options(&simple, g).is_err(), "only the hyphenated form");
        let e = Settings::from_options(&UpliftOptions { camera_config: vec!["fps".into()], ..args() }, g).unwrap_err();
        assert!(e.to_string().contains("is not KEY=VALUE"));
        let e = Settings::from_options(&UpliftOptions { movement_attr: vec!["movement=putt".into()], ..args() }, g)
            .unwrap_err();
        assert_eq!(e.hint(), Some("use --movement"));
        let o = Settings::from_options(
            &UpliftOptions {
                camera_config: vec!["fps=240".into(), "lens=a=b".into(), "fps=120".into()],
                capture_time: Some("2026-05-13T14:00:00+02:00".into()),
                ..args()
            },
            g,
        )
        .unwrap();
        assert_eq!(o.camera_config, [("lens".to_string(), "a=b".to_string()), ("fps".into(), "120".into())]);
        assert_eq!(o.capture_time, CaptureTime::At("2026-05-13T12:00:00Z".parse().unwrap()));
        let e =
            Settings::from_options(&UpliftOptions { capture_time: Some("yesterday".into()), ..args() }, g).unwrap_err();
        assert!(e.to_string().contains("not an RFC 3339 time"));
    }

    #[test]
    fn file_names() {
        assert!(check_file_name("swing-001.mov").is_ok());
        assert!(check_file_name("SWING.MOV").is_ok());
        assert!(check_file_name(&format!("{}.mov", "é".repeat(251))).is_ok(), "255 characters, more bytes");
        assert!(check_file_name(&format!("{}.mov", "x".repeat(252))).is_err());
        assert!(check_file_name("swing.mp4").is_err());
        assert!(check_file_name("a/b.mov").is_err());
        assert!(check_file_name("a\\b.mov").is_err());
        assert!(check_file_name("  ").is_err());
    }
}
