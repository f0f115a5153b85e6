//! `upload apertur ...`: delivery status, long-polling download, session and destination
//! management: flags parsed, the library's calls ([`crate::providers::apertur::admin`]) made,
//! their answers printed.
//!
//! `poll` never loses an image: each one is written to a temporary file in the output
//! directory, fsynced, renamed to its name and the directory fsynced, and only then
//! acknowledged. A process killed between the rename and the ack leaves the image in the queue;
//! the next `poll` downloads it again, finds the identical file already there and acks it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::cli::args::{
    AperturCommand, AperturCommandArgs, AperturConnArgs, AperturDestinationsCommand, AperturSessionCommand, OutputArgs,
    ProviderName,
};
use crate::cli::report::exit;
use crate::error::{Error, Result};
use crate::providers::apertur::{self, DeliveryReport, admin, check_id};
use crate::providers::api::Api;

/// Runs an `upload apertur` subcommand; returns the exit code.
pub(crate) async fn run(
    args: AperturCommandArgs,
    output: &OutputArgs,
    cancel: CancellationToken,
    inv: &crate::cli::settings::Invocation,
) -> Result<i32> {
    let api =
        api(&args.conn, inv)?.with_executor(crate::cli::settings::run_executor(cancel.clone(), output.quiet, &inv.net));
    let json = output.json;
    match args.command {
        AperturCommand::Status { session } => {
            check_id("the session", &session)?;
            status(&api, &session, json).await
        }
        AperturCommand::Poll { session, output_dir, once, interval, timeout, rate } => {
            check_id("the session", &session)?;
            let rate = crate::cli::settings::rate_limit(rate.limit_rate.as_deref(), &inv.config)?;
            let poll = Poll { api, session, dir: output_dir, once, interval, timeout, json, quiet: output.quiet, rate };
            poll.run(&cancel).await
        }
        AperturCommand::Session { command } => session(&api, command, json).await,
        AperturCommand::Destinations { command } => destinations(&api, command, json).await,
    }
}

/// The API client for subcommands: flags, environment and the config file's `[apertur]`
/// section, as for uploads, plus the request signer.
fn api(conn: &AperturConnArgs, inv: &crate::cli::settings::Invocation) -> Result<Api> {
    let args = crate::cli::args::ApiArgs {
        tokens: crate::cli::args::TokenArgs { token: conn.token.clone(), token_command: conn.token_command.clone() },
        endpoint: conn.endpoint.clone(),
        retries: conn.retries,
        ..Default::default()
    };
    let mut api = crate::cli::settings::api_from_args(ProviderName::Apertur, &args, inv)?;
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
    let (v, report) = admin::delivery_status(api, session).await?;
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
                let images = admin::poll_images(&self.api, &self.session).await?;
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
        admin::check_image_id(id, "poll")?;
        let filename = safe_file_name(image.get("filename").and_then(Value::as_str).unwrap_or(""), id);
        let what = format!("download image {id}");
        let body = admin::download_image(&self.api, &self.session, id).await?;
        if self.rate.is_limited() {
            tokio::select! {
                _ = self.rate.consume(body.len() as u64) => {}
                // The image is here: it is still saved and acknowledged, then the loop stops.
                _ = cancel.cancelled() => {}
            }
        }
        if let Some(expected) = image.get("size_bytes").and_then(Value::as_u64)
            && expected != body.len() as u64
        {
            return Err(protocol(&what, &format!("got {} bytes, the queue said {expected}", body.len())));
        }
        let dir = self.dir.clone();
        let bytes = body.clone();
        let id_owned = id.to_string();
        let path = tokio::task::spawn_blocking(move || save(&dir, &filename, &id_owned, &bytes))
            .await
            .map_err(|e| Error::File { path: self.dir.clone(), source: std::io::Error::other(e) })?
            .map_err(|source| Error::File { path: self.dir.clone(), source })?;
        admin::ack_image(&self.api, &self.session, id).await?;
        let line = json!({
            "provider": "apertur",
            "session_id": self.session,
            "image_id": id,
            "file": path.display().to_string(),
            "bytes": body.len(),
            "sha256": hex::encode(Sha256::digest(&body)),
            "mime_type": image.get("mime_type"),
            "status": "saved",
        });
        if self.json {
            write_stdout(&line.to_string())
        } else {
            write_stdout(&format!("{} ({} bytes, image {id})", path.display(), body.len()))
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
    let v = match command {
        AperturSessionCommand::Get { session } => admin::session(api, &session).await?,
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
            let update = admin::SessionUpdate {
                expires_at,
                max_images,
                allowed_mime_types,
                max_image_dimension,
                max_image_size_mb,
                password,
                remove_password,
            };
            admin::update_session(api, &session, &update).await?
        }
    };
    print_value(&v, json)?;
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
    match command {
        AperturDestinationsCommand::List { project } => {
            let list = admin::list_destinations(api, &project).await?;
            if json {
                print_value(&Value::Array(list), true)?;
            } else {
                for d in &list {
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
            let config = config_object(config.as_deref(), &config_entries)?;
            let v = admin::create_destination(api, &project, &admin::NewDestination { kind, name, config }).await?;
            print_value(&v, json)?;
        }
        AperturDestinationsCommand::Update { project, destination, name, config, config_entries, active } => {
            let config = config_object(config.as_deref(), &config_entries)?;
            let update = admin::DestinationUpdate { name, config, active };
            let v = admin::update_destination(api, &project, &destination, &update).await?;
            print_value(&v, json)?;
        }
        AperturDestinationsCommand::Delete { project, destination } => {
            admin::delete_destination(api, &project, &destination).await?;
            print_value(&json!({ "id": destination, "deleted": true }), json)?;
        }
        AperturDestinationsCommand::Test { project, destination } => {
            let (v, failure) = admin::test_destination(api, &project, &destination).await?;
            print_value(&v, json)?;
            if let Some(reason) = failure {
                return Err(Error::ProcessingFailed { provider: "apertur", id: destination, reason });
            }
        }
    }
    Ok(exit::OK)
}
