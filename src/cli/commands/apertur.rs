//! `upload apertur ...`: delivery status, long-polling download, session and destination
//! management.
//!
//! `poll` never loses an image: each one is written to a temporary file in the output
//! directory, fsynced, renamed to its name and the directory fsynced, and only then
//! acknowledged. A process killed between the rename and the ack leaves the image in the queue;
//! the next `poll` downloads it again, finds the identical file already there and acks it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::cli::args::{
    AperturCommand, AperturCommandArgs, AperturConnArgs, AperturDestinationsCommand, AperturSessionCommand, OutputArgs,
    ProviderName,
};
use crate::cli::report::exit;
use crate::error::{Error, Result};
use crate::providers::apertur::{self, DeliveryReport, check_expires_at, check_id, check_mime_types, check_password};
use crate::providers::api::{Api, Retry};

/// Runs an `upload apertur` subcommand; returns the exit code.
pub(crate) async fn run(args: AperturCommandArgs, output: &OutputArgs, cancel: CancellationToken) -> Result<i32> {
    let api = api(&args.conn)?.with_executor(crate::cli::settings::run_executor(cancel.clone(), output.quiet));
    let json = output.json;
    match args.command {
        AperturCommand::Status { session } => {
            check_id("the session", &session)?;
            status(&api, &session, json).await
        }
        AperturCommand::Poll { session, output_dir, once, interval, timeout, rate } => {
            check_id("the session", &session)?;
            let rate = crate::cli::settings::rate_limit(rate.limit_rate.as_deref())?;
            let poll = Poll { api, session, dir: output_dir, once, interval, timeout, json, quiet: output.quiet, rate };
            poll.run(&cancel).await
        }
        AperturCommand::Session { command } => session(&api, command, json).await,
        AperturCommand::Destinations { command } => destinations(&api, command, json).await,
    }
}

/// The API client for subcommands: flags, environment and the config file's `[apertur]`
/// section, as for uploads, plus the request signer.
fn api(conn: &AperturConnArgs) -> Result<Api> {
    let args = crate::cli::args::ApiArgs {
        tokens: crate::cli::args::TokenArgs { token: conn.token.clone(), token_command: conn.token_command.clone() },
        endpoint: conn.endpoint.clone(),
        retries: conn.retries,
        ..Default::default()
    };
    let mut api = crate::cli::settings::api_from_args(ProviderName::Apertur, &args)?;
    api.signer = apertur::signer(conn.signing_secret.as_ref());
    Ok(api)
}

fn print_value(v: &Value, json: bool) -> Result<()> {
    let text = if json { v.to_string() } else { serde_json::to_string_pretty(v).unwrap_or_default() };
    write_stdout(&text)
}

fn write_stdout(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::File { path: "<stdout>".into(), source: e }),
        _ => Ok(()),
    }
}

async fn status(api: &Api, session: &str, json: bool) -> Result<i32> {
    let v: Value =
        api.get("delivery status", &format!("/api/v1/upload-sessions/{session}/delivery-status"), &[]).json().await?;
    let report = apertur::parse_delivery_status(&v)?;
    if json {
        return print_value(&v, true).map(|_| exit::OK);
    }
    print_report(session, &report)?;
    Ok(exit::OK)
}

fn print_report(session: &str, report: &DeliveryReport) -> Result<()> {
    let mut head = format!("session {session}: {} images", report.images);
    if let Some(s) = &report.session_status {
        head.push_str(&format!(", status {s}"));
    }
    write_stdout(&head)?;
    for d in &report.deliveries {
        let mut line = format!("  {} → {} ({}): {}", d.image_label, d.destination_name, d.destination_type, d.status);
        if let Some(a) = d.attempts {
            line.push_str(&format!(", {a} attempts"));
        }
        if let Some(e) = &d.last_error {
            line.push_str(&format!(", last error: {e}"));
        }
        write_stdout(&line)?;
    }
    for (line, _) in apertur::destination_lines(report) {
        write_stdout(&format!("destination {line}"))?;
    }
    Ok(())
}

/// `upload apertur poll`.
struct Poll {
    api: Api,
    session: String,
    dir: PathBuf,
    once: bool,
    interval: Duration,
    timeout: Option<Duration>,
    json: bool,
    quiet: bool,
    /// The bandwidth limit: each image is paid for once received, before the next one.
    rate: crate::engine::ratelimit::RateLimit,
}

impl Poll {
    async fn run(&self, cancel: &CancellationToken) -> Result<i32> {
        let dir = self.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| Error::File { path: dir.clone(), source })?;
        let saved = std::sync::atomic::AtomicU64::new(0);
        // Images keep coming until the deadline: reaching it (or Ctrl-C) ends a poll normally.
        let poller = crate::engine::poll::Poller::new(self.interval, self.interval, self.timeout);
        let stop = || Error::Timeout { what: "poll".into(), seconds: 0 };
        let r = poller
            .until(cancel, stop, stop, || async {
                let list: Value =
                    self.api.get("poll", &format!("/api/v1/upload-sessions/{}/poll", self.session), &[]).json().await?;
                let images = list
                    .get("images")
                    .and_then(Value::as_array)
                    .ok_or_else(|| protocol("poll", "the answer has no `images` list"))?
                    .clone();
                for image in &images {
                    if cancel.is_cancelled() {
                        return Ok(crate::engine::poll::Step::Done(()));
                    }
                    self.take(image, cancel).await?;
                    saved.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                Ok(match (images.is_empty(), self.once) {
                    (true, true) => crate::engine::poll::Step::Done(()),
                    (true, false) => crate::engine::poll::Step::Again,
                    (false, _) => crate::engine::poll::Step::Now,
                })
            })
            .await;
        match r {
            Ok(()) | Err(Error::Timeout { .. }) => {}
            Err(e) => return Err(e),
        }
        let saved = saved.into_inner();
        if !self.quiet {
            eprintln!("upload: apertur: {saved} images saved to {}", self.dir.display());
        }
        if cancel.is_cancelled() {
            return Err(Error::Interrupted {
                hint: "run the same command again: images not yet acknowledged are downloaded again".into(),
            });
        }
        Ok(exit::OK)
    }

    /// Downloads one image, puts it safely on disk, then acknowledges it.
    async fn take(&self, image: &Value, cancel: &CancellationToken) -> Result<()> {
        let id = image.get("id").and_then(Value::as_str).ok_or_else(|| protocol("poll", "an image has no `id`"))?;
        check_id("the image id", id).map_err(|_| protocol("poll", "an image id is not usable"))?;
        let filename = safe_file_name(image.get("filename").and_then(Value::as_str).unwrap_or(""), id);
        let what = format!("download image {id}");
        let answer =
            self.api.get(&what, &format!("/api/v1/upload-sessions/{}/images/{id}", self.session), &[]).send().await?;
        if self.rate.is_limited() {
            tokio::select! {
                _ = self.rate.consume(answer.body.len() as u64) => {}
                // The image is here: it is still saved and acknowledged, then the loop stops.
                _ = cancel.cancelled() => {}
            }
        }
        if let Some(expected) = image.get("size_bytes").and_then(Value::as_u64)
            && expected != answer.body.len() as u64
        {
            return Err(protocol(&what, &format!("got {} bytes, the queue said {expected}", answer.body.len())));
        }
        let dir = self.dir.clone();
        let body = answer.body.clone();
        let id_owned = id.to_string();
        let path = tokio::task::spawn_blocking(move || save(&dir, &filename, &id_owned, &body))
            .await
            .map_err(|e| Error::File { path: self.dir.clone(), source: std::io::Error::other(e) })?
            .map_err(|source| Error::File { path: self.dir.clone(), source })?;
        self.api
            .call::<()>(
                &format!("acknowledge image {id}"),
                Method::POST,
                &format!("/api/v1/upload-sessions/{}/images/{id}/ack", self.session),
                &[],
                None,
                Retry::Idempotent,
            )
            .send()
            .await?;
        let line = json!({
            "provider": "apertur",
            "session_id": self.session,
            "image_id": id,
            "file": path.display().to_string(),
            "bytes": answer.body.len(),
            "sha256": hex::encode(Sha256::digest(&answer.body)),
            "mime_type": image.get("mime_type"),
            "status": "saved",
        });
        if self.json {
            write_stdout(&line.to_string())
        } else {
            write_stdout(&format!("{} ({} bytes, image {id})", path.display(), answer.body.len()))
        }
    }
}

/// The last path component of `name`, without leading dots; the image id when nothing usable is left.
fn safe_file_name(name: &str, id: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("").trim().trim_start_matches('.');
    let clean: String = base.chars().map(|c| if c.is_control() { '_' } else { c }).collect();
    if clean.is_empty() { id.to_string() } else { clean }
}

/// Writes `bytes` as `dir/name` atomically and durably: temporary file, fsync, rename, fsync of
/// the directory. When `dir/name` already holds these bytes (an image saved by a run that died
/// before its ack), nothing is written; when it holds other bytes, the image goes to
/// `dir/{id}-{name}`.
fn save(dir: &Path, name: &str, id: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let mut target = dir.join(name);
    for candidate in [dir.join(name), dir.join(format!("{id}-{name}"))] {
        target = candidate;
        match std::fs::read(&target) {
            Ok(existing) if existing == bytes => return Ok(target),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    // The images are the user's output, not state: the usual mode, narrowed by the umask.
    crate::engine::durable::write_atomic_mode(&target, bytes, 0o666)?;
    Ok(target)
}

fn protocol(what: &str, message: &str) -> Error {
    Error::Protocol { provider: "apertur", what: what.into(), message: message.into() }
}

async fn session(api: &Api, command: AperturSessionCommand, json: bool) -> Result<i32> {
    match command {
        AperturSessionCommand::Get { session } => {
            check_id("the session", &session)?;
            let v: Value = api.get("get session", &format!("/api/v1/upload/{session}/session"), &[]).json().await?;
            print_value(&v, json)?;
        }
        AperturSessionCommand::Update {
            session,
            expires_at,
            max_images,
            allowed_mime_types,
            max_image_dimension,
            max_image_size_mb,
            password,
            remove_password,
        } => {
            check_id("the session", &session)?;
            let mut body = serde_json::Map::new();
            if let Some(t) = expires_at {
                body.insert("expires_at".into(), json!(check_expires_at(&t)?));
            }
            for (name, v) in [
                ("max_images", max_images),
                ("max_image_dimension", max_image_dimension),
                ("max_image_size_mb", max_image_size_mb),
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
            let allowed = check_mime_types(&allowed_mime_types)?;
            if !allowed.is_empty() {
                body.insert("allowed_mime_types".into(), json!(allowed));
            }
            if let Some(p) = &password {
                check_password(p.expose())?;
                body.insert("password".into(), json!(p.expose()));
            }
            if remove_password {
                body.insert("password".into(), Value::Null);
            }
            if body.is_empty() {
                return Err(Error::usage(
                    "nothing to update",
                    "give --expires-at, --max-images, --allowed-mime-type, --max-image-dimension, --max-image-size-mb, --password or --remove-password",
                ));
            }
            let v: Value = api
                .call(
                    "update session",
                    Method::PATCH,
                    &format!("/api/v1/upload-sessions/{session}"),
                    &[],
                    Some(&body),
                    Retry::Idempotent,
                )
                .json()
                .await?;
            print_value(&v, json)?;
        }
    }
    Ok(exit::OK)
}

/// `--config JSON` merged with `--config-entry K=V` entries.
fn config_object(config: Option<&str>, entries: &[String]) -> Result<Option<serde_json::Map<String, Value>>> {
    let mut map = match config {
        None => None,
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => Some(m),
            _ => {
                return Err(Error::usage(
                    "--config is not a JSON object",
                    r#"give e.g. --config '{"url": "https://example.com/hook", "format": "multipart"}'"#,
                ));
            }
        },
    };
    for e in entries {
        let (k, v) = e.split_once('=').filter(|(k, _)| !k.trim().is_empty()).ok_or_else(|| {
            Error::usage(format!("--config-entry '{e}' is not K=V"), "give e.g. --config-entry bucket=photos")
        })?;
        let v = serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.to_string()));
        map.get_or_insert_with(Default::default).insert(k.trim().to_string(), v);
    }
    Ok(map)
}

async fn destinations(api: &Api, command: AperturDestinationsCommand, json: bool) -> Result<i32> {
    let base = |project: &str| format!("/api/v1/projects/{project}/destinations");
    match command {
        AperturDestinationsCommand::List { project } => {
            check_id("--project", &project)?;
            let v: Value = api.get("list destinations", &base(&project), &[]).json().await?;
            if json {
                print_value(&v, true)?;
            } else {
                let list = v.as_array().ok_or_else(|| protocol("list destinations", "the answer is not a list"))?;
                for d in list {
                    let field = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    let active = d.get("isActive").and_then(Value::as_bool).unwrap_or(true);
                    write_stdout(&format!(
                        "{}  {}  {}{}",
                        field("id"),
                        field("type"),
                        field("name"),
                        if active { "" } else { "  (inactive)" }
                    ))?;
                }
            }
        }
        AperturDestinationsCommand::Create { project, kind, name, config, config_entries } => {
            check_id("--project", &project)?;
            if name.trim().is_empty() {
                return Err(Error::usage("--name is empty", "give the destination a name"));
            }
            let mut body = serde_json::Map::new();
            body.insert("type".into(), json!(kind));
            body.insert("name".into(), json!(name));
            if let Some(c) = config_object(config.as_deref(), &config_entries)? {
                body.insert("config".into(), Value::Object(c));
            }
            let v: Value = api
                .call("create destination", Method::POST, &base(&project), &[], Some(&body), Retry::Once)
                .json()
                .await?;
            print_value(&v, json)?;
        }
        AperturDestinationsCommand::Update { project, destination, name, config, config_entries, active } => {
            check_id("--project", &project)?;
            check_id("the destination", &destination)?;
            let mut body = serde_json::Map::new();
            if let Some(n) = name {
                body.insert("name".into(), json!(n));
            }
            if let Some(c) = config_object(config.as_deref(), &config_entries)? {
                body.insert("config".into(), Value::Object(c));
            }
            if let Some(a) = active {
                body.insert("isActive".into(), json!(a));
            }
            if body.is_empty() {
                return Err(Error::usage("nothing to update", "give --name, --config, --config-entry or --active"));
            }
            let path = format!("{}/{destination}", base(&project));
            let v: Value = api
                .call("update destination", Method::PATCH, &path, &[], Some(&body), Retry::Idempotent)
                .json()
                .await?;
            print_value(&v, json)?;
        }
        AperturDestinationsCommand::Delete { project, destination } => {
            check_id("--project", &project)?;
            check_id("the destination", &destination)?;
            let path = format!("{}/{destination}", base(&project));
            api.call::<()>("delete destination", Method::DELETE, &path, &[], None, Retry::Idempotent).send().await?;
            print_value(&json!({ "id": destination, "deleted": true }), json)?;
        }
        AperturDestinationsCommand::Test { project, destination } => {
            check_id("--project", &project)?;
            check_id("the destination", &destination)?;
            let path = format!("{}/{destination}/test", base(&project));
            let v: Value =
                api.call("test destination", Method::POST, &path, &[], None::<&()>, Retry::Once).json().await?;
            print_value(&v, json)?;
            if v.get("success").and_then(Value::as_bool) == Some(false) {
                let reason = v
                    .get("error")
                    .or_else(|| v.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("the test delivery failed")
                    .to_string();
                return Err(Error::ProcessingFailed { provider: "apertur", id: destination, reason });
            }
        }
    }
    Ok(exit::OK)
}
