//! Many files in one run: directories and globs expanded, files uploaded concurrently under
//! one part budget, what was already uploaded skipped, one summary.
//!
//! A directory given to Teleport with `--format bulk-images` becomes one capture: a stored zip
//! of its images (sorted names, the images' own timestamps) that is never written to disk
//! ([`VirtualZip`]): its size and every byte range are known from the entry table, and parts
//! are read from the image files as they go. The CRC-32s come from one pass before the upload
//! (kept in the state directory with each image's size and mtime); the entry table is the
//! upload's identity for resuming and skipping. `--zip-to FILE` writes the same bytes to FILE
//! and uploads that file instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::run::{Item, Selection, scan_images};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::cli::args::{Cli, ProviderName};
use crate::cli::settings::UploadSettings;
use crate::cli::ui;
use crate::engine::journal::FileIdentity;
use crate::engine::progress::{Event, Progress};
use crate::engine::source::FileSource;
use crate::engine::tune::{FileGate, Files};
use crate::engine::uploader::UploaderOptions;
use crate::engine::zipsource::{VirtualZip, ZipEntry};
use crate::error::{Error, Result};
use crate::providers::{Provider, UploadOutcome};

/// Writes the archive to `path` (a unique temporary file beside it, synced, renamed: see
/// [`crate::engine::durable::AtomicFile`]) with file mode `mode`, its mtime set to the newest
/// image's, so a rerun writes a file of the same identity. Stops (the file left as it was) at
/// `cancel`.
pub(crate) fn write_zip_file(zip: &VirtualZip, path: &Path, mode: u32, cancel: &CancellationToken) -> Result<()> {
    let werr = |e: std::io::Error| zip.failure().unwrap_or_else(|| Error::File { path: path.into(), source: e });
    let mut file = crate::engine::durable::AtomicFile::create(path, mode).map_err(werr)?;
    if let Err(e) = zip.write_until(&mut file, || cancel.is_cancelled()) {
        if cancel.is_cancelled() {
            return Err(Error::Interrupted { hint: format!("run the same command again to write {}", path.display()) });
        }
        return Err(werr(e));
    }
    let newest = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(zip.newest_mtime() as u64);
    file.file().map_err(werr)?.set_modified(newest).map_err(werr)?;
    file.commit().map_err(werr)
}

/// What the state directory keeps of a directory's zip between runs: the entry table with
/// each image's CRC-32, so a resumed or repeated upload does not read every image twice.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ZipTable {
    version: u32,
    /// The directory (canonical).
    dir: PathBuf,
    /// An upload of this table began and has not completed.
    uploading: bool,
    entries: Vec<SavedEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SavedEntry {
    #[serde(rename = "n")]
    name: String,
    #[serde(rename = "s")]
    size: u64,
    #[serde(rename = "t")]
    mtime_ns: u128,
    #[serde(rename = "c")]
    crc: u32,
}

fn table_path(state_dir: &Path, dir: &Path) -> PathBuf {
    let key = hex::encode(&Sha256::digest(dir.to_string_lossy().as_bytes())[..12]);
    state_dir.join("zips").join(format!("{key}.table.json"))
}

fn load_table(state_dir: &Path, dir: &Path) -> Option<ZipTable> {
    let t: ZipTable = serde_json::from_slice(&std::fs::read(table_path(state_dir, dir)).ok()?).ok()?;
    (t.version == 1 && t.dir == dir).then_some(t)
}

fn save_table(state_dir: &Path, zip: &VirtualZip, uploading: bool) -> Result<()> {
    let t = ZipTable {
        version: 1,
        dir: zip.dir().to_path_buf(),
        uploading,
        entries: zip
            .entries()
            .iter()
            .map(|e| SavedEntry { name: e.name.clone(), size: e.size, mtime_ns: e.mtime_ns, crc: e.crc.unwrap_or(0) })
            .collect(),
    };
    crate::engine::durable::write_atomic(
        &table_path(state_dir, zip.dir()),
        &serde_json::to_vec(&t).expect("table serializes"),
    )
}

/// Before the CRC pass: takes the CRCs the state directory knows of images unchanged since,
/// and refuses an image changed since an interrupted upload of the same images began.
/// Returns whether the interrupted upload (if any) may be resumed: not when images were
/// added or removed (that is another archive, a new upload).
fn reuse_table(state_dir: &Path, zip: &mut VirtualZip, resume: bool) -> Result<bool> {
    let Some(saved) = load_table(state_dir, zip.dir()) else { return Ok(resume) };
    let same_names = saved.entries.len() == zip.entries().len()
        && saved.entries.iter().zip(zip.entries()).all(|(s, e)| s.name == e.name);
    if saved.uploading && same_names && resume {
        for (s, e) in saved.entries.iter().zip(zip.entries()) {
            if s.size != e.size || s.mtime_ns != e.mtime_ns {
                return Err(Error::usage(
                    format!(
                        "{} changed since the interrupted upload of {} began (its size or modification time differ)",
                        e.path.display(),
                        zip.dir().display()
                    ),
                    "restore the image, or pass --no-resume to start a new upload of the images as they are now",
                ));
            }
        }
    }
    let known: HashMap<(&str, u64, u128), u32> =
        saved.entries.iter().map(|s| ((s.name.as_str(), s.size, s.mtime_ns), s.crc)).collect();
    let crcs: Vec<Option<u32>> =
        zip.entries().iter().map(|e| known.get(&(e.name.as_str(), e.size, e.mtime_ns)).copied()).collect();
    let entries = zip.entries().iter().zip(crcs).map(|(e, crc)| ZipEntry { crc, ..e.clone() }).collect();
    *zip = VirtualZip::new(zip.dir(), entries);
    Ok(resume && same_names)
}

/// The CRC-32 pass: every image without a known CRC is read once, several at once, shown as a
/// phase of the file's progress.
async fn crc_pass(zip: &mut VirtualZip, progress: &Arc<dyn Progress>, cancel: &CancellationToken) -> Result<()> {
    let n = zip.entries().len();
    let todo: u64 = zip.entries().iter().filter(|e| e.crc.is_none()).map(|e| e.size).sum();
    let unread = zip.entries().iter().filter(|e| e.crc.is_none()).count();
    // The progress names the directory: the messages do not.
    if unread == 0 {
        progress.event(Event::Phase {
            message: format!("CRC-32 of all {n} images known from the state directory (not read again)"),
        });
        return Ok(());
    }
    progress.event(Event::Phase {
        message: format!("computing the CRC-32 of {unread} of {n} images ({})", crate::size::human(todo)),
    });
    let t0 = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let on_bytes = {
        let progress = progress.clone();
        let done = done.clone();
        move |b: u64| {
            use std::sync::atomic::Ordering;
            let before = done.fetch_add(b, Ordering::Relaxed);
            let after = before + b;
            if todo > 0 && after * 10 / todo > before * 10 / todo && after < todo {
                progress.event(Event::Phase {
                    message: format!(
                        "CRC-32: {}% ({} of {})",
                        after * 100 / todo,
                        crate::size::human(after),
                        crate::size::human(todo)
                    ),
                });
            }
        }
    };
    let parallel = std::thread::available_parallelism().map_or(2, |p| p.get()).clamp(2, 8);
    zip.compute_crcs(parallel, on_bytes, cancel).await?;
    progress.event(Event::Phase {
        message: format!("CRC-32 of {unread} images read in {:.1} s", t0.elapsed().as_secs_f64()),
    });
    Ok(())
}

/// What the state directory remembers of a finished upload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DoneRecord {
    /// The file when it was uploaded.
    pub(crate) file: FileIdentity,
    /// Provider name.
    pub(crate) provider: String,
    /// Endpoint.
    pub(crate) endpoint: String,
    /// The provider's id.
    pub(crate) id: String,
    /// Final status.
    pub(crate) status: String,
    /// When (RFC 3339).
    pub(crate) uploaded_at: String,
    /// The options that decided where the file went (`--name`, `--destination`, ...), as
    /// given; part of the record's key: another destination is another upload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) destination: Vec<(String, String)>,
    /// The `--force` run that uploaded the file, when one did (see [`ForceRun`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) force_run: Option<String>,
}

/// The options of a run that decide where a file goes, per provider, as `(flag, value)`.
/// Options left out do not count: a file uploaded without `--name` and again with it is two
/// uploads, a rerun of the same command is one.
pub(crate) fn destination(args: &crate::cli::args::UploadArgs, provider: ProviderName) -> Vec<(String, String)> {
    let mut d: Vec<(String, String)> = vec![];
    let mut put = |flag: &str, v: &Option<String>| {
        if let Some(v) = v {
            d.push((flag.into(), v.clone()));
        }
    };
    match provider {
        ProviderName::Teleport => {
            put("--name", &args.teleport.name);
            put("--format", &args.teleport.format);
        }
        ProviderName::Truvideo => {
            put("--title", &args.truvideo.title);
            put("--creator", &args.truvideo.creator);
            put("--file-type", &args.truvideo.file_type);
            if args.truvideo.library {
                put("--library", &Some("true".into()));
            }
        }
        ProviderName::Uplift => {
            put("--athlete-id", &args.uplift.athlete_id);
            put("--session-group-id", &args.uplift.session_group_id);
            put("--file-name", &args.uplift.file_name);
            put("--activity", &args.uplift.activity);
            put("--movement", &args.uplift.movement);
        }
        ProviderName::Apertur => {
            put("--session", &args.apertur.session);
            let mut dests = args.apertur.destinations.clone();
            dests.sort();
            dests.dedup();
            for v in dests {
                d.push(("--destination".into(), v));
            }
        }
    }
    d
}

/// What a skip says matched: `same file (...), provider, endpoint[, --name X]`.
fn matched(rec: &DoneRecord) -> String {
    let mut s = format!("same file (path, size, mtime, content fingerprint), provider {}, endpoint", rec.provider);
    for (flag, value) in &rec.destination {
        s.push_str(&format!(", {flag} {value}"));
    }
    s
}

/// A `--force` run in progress: `<state dir>/force/<key>.json` names it while it runs and is
/// removed when it ends without an interruption. Running the same `--force` command again
/// after a Ctrl-C carries on that run: files it already uploaded are not sent again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ForceRun {
    /// The run's id, written into the done records of the files it uploads.
    pub(crate) id: String,
    /// When it started (RFC 3339).
    pub(crate) started_at: String,
    #[serde(skip)]
    path: PathBuf,
}

impl ForceRun {
    /// The interrupted `--force` run of the same command (same provider, endpoint, files and
    /// destination), or a new one.
    pub(crate) fn begin(state_dir: &Path, key: &str) -> Result<ForceRun> {
        let name = hex::encode(&Sha256::digest(key.as_bytes())[..12]);
        let path = state_dir.join("force").join(format!("{name}.json"));
        if let Ok(text) = std::fs::read(&path)
            && let Ok(mut run) = serde_json::from_slice::<ForceRun>(&text)
        {
            run.path = path;
            return Ok(run);
        }
        let run = ForceRun { id: uuid::Uuid::new_v4().to_string(), started_at: chrono::Utc::now().to_rfc3339(), path };
        crate::engine::durable::write_atomic(&run.path, &serde_json::to_vec(&run).expect("serializes"))?;
        Ok(run)
    }

    /// The run ended without an interruption: the next `--force` run is a new one.
    pub(crate) fn end(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn done_path(
    state_dir: &Path,
    provider: &str,
    endpoint: &str,
    identity: &FileIdentity,
    destination: &[(String, String)],
) -> PathBuf {
    let mut h = Sha256::new();
    h.update(format!("{provider}\n{endpoint}\n").as_bytes());
    h.update(identity.path.as_os_str().as_encoded_bytes());
    for (flag, value) in destination {
        h.update(format!("\n{flag}={value}").as_bytes());
    }
    let key = hex::encode(h.finalize());
    state_dir.join("done").join(format!("{provider}-{}.json", &key[..24]))
}

/// The record of an earlier upload of this very file (same path, size, mtime, fingerprint)
/// to the same destination.
pub(crate) fn find_done(
    state_dir: &Path,
    provider: &str,
    endpoint: &str,
    identity: &FileIdentity,
    destination: &[(String, String)],
) -> Option<DoneRecord> {
    let text = std::fs::read(done_path(state_dir, provider, endpoint, identity, destination)).ok()?;
    let rec: DoneRecord = serde_json::from_slice(crate::engine::journal::last_line(&text)).ok()?;
    (rec.file.same_file(identity) && rec.destination == destination).then_some(rec)
}

/// Remembers a finished upload.
pub(crate) fn record_done(
    state_dir: &Path,
    endpoint: &str,
    identity: &FileIdentity,
    outcome: &UploadOutcome,
    destination: &[(String, String)],
    force_run: Option<&ForceRun>,
) -> Result<()> {
    let done = done_path(state_dir, outcome.provider, endpoint, identity, destination);
    let rec = DoneRecord {
        file: identity.clone(),
        provider: outcome.provider.into(),
        endpoint: endpoint.into(),
        id: outcome.id.clone(),
        status: outcome.status.clone(),
        uploaded_at: chrono::Utc::now().to_rfc3339(),
        destination: destination.to_vec(),
        force_run: force_run.map(|r| r.id.clone()),
    };
    let record = serde_json::to_vec(&rec).expect("serializes");
    // The upload's journal has served its purpose: it becomes the record, or goes.
    crate::engine::journal::retire(state_dir, outcome.provider, endpoint, &identity.path, &done, &record)
}

/// How one item of a run ended (see [`Step::run`]).
#[derive(Debug)]
pub(crate) enum FileResult {
    /// Uploaded now.
    Uploaded(UploadOutcome),
    /// Uploaded before (the record), with the file's size.
    Skipped(DoneRecord, u64),
    /// `--dry-run`: the plan was printed.
    Planned,
}

/// The per-file step of a run, shared by a batch run and `upload watch`: zip a bulk-images
/// directory, skip what was uploaded, upload, record it as done.
pub(crate) struct Step<'a> {
    /// The run's settings.
    pub(crate) settings: &'a UploadSettings,
    /// The provider.
    pub(crate) provider: &'a dyn Provider,
    /// Which files a directory contributes.
    pub(crate) selection: &'a Selection,
    /// Part uploader settings (with the run's shared part budget).
    pub(crate) uploader: UploaderOptions,
    /// The API origin, without a trailing slash (the key of done records).
    pub(crate) endpoint: String,
    /// Where uploads go beyond the endpoint (see [`destination`]).
    pub(crate) destination: Vec<(String, String)>,
    /// The `--force` run this one carries on, if any.
    pub(crate) force_run: Option<&'a ForceRun>,
    /// `--json` (for the dry-run plan).
    pub(crate) json: bool,
    /// `--dry-run`: print the plan only.
    pub(crate) dry_run: bool,
    /// `--force`: upload again what a done record names.
    pub(crate) force: bool,
    /// Carry on an interrupted upload from its journal (false: `--no-resume`).
    pub(crate) resume: bool,
    /// `--zip-to FILE`: a bulk-images directory's zip is written to FILE, then FILE uploaded
    /// (`None`: the zip is streamed from the images).
    pub(crate) zip_to: Option<PathBuf>,
    /// `--wait-for-lock`: how long to wait for another run of the same file.
    pub(crate) wait_for_lock: Option<std::time::Duration>,
}

impl<'a> Step<'a> {
    /// The step of a run whose files share the run's `--concurrency` budget (the settings'
    /// permit pool).
    pub(crate) fn new(
        settings: &'a UploadSettings,
        provider: &'a dyn Provider,
        selection: &'a Selection,
        args: &crate::cli::args::UploadArgs,
        json: bool,
    ) -> Self {
        let uploader = settings.uploader.clone();
        let endpoint = settings.endpoint.as_str().trim_end_matches('/').to_string();
        Step {
            settings,
            provider,
            selection,
            uploader,
            endpoint,
            destination: destination(args, settings.provider),
            force_run: None,
            json,
            dry_run: args.dry_run,
            force: args.force,
            resume: settings.resume,
            zip_to: args.teleport.zip_to.clone(),
            wait_for_lock: args.wait_for_lock,
        }
    }

    /// The upload of one item: a bulk-images directory as its streamed zip, skipped when a
    /// done record matches it (unless `--force`), recorded as done once the provider accepted
    /// it. With `--dry-run`, only prints the plan.
    pub(crate) async fn run(&self, item: &Item, board: &ui::Board, cancel: CancellationToken) -> Result<FileResult> {
        let (settings, provider) = (self.settings, self.provider);
        let state_dir = settings.state_dir.clone();
        // A directory for bulk-images: the table of its zip (no image read yet).
        let (file, table) = match item {
            Item::File(p) => (FileSource::open(p)?, None),
            Item::ZipDir(dir) => {
                let sel = self.selection.every_depth();
                let d = dir.clone();
                let zip = tokio::task::spawn_blocking(move || scan_images(&d, &sel))
                    .await
                    .map_err(|e| Error::File { path: dir.clone(), source: std::io::Error::other(e) })??;
                let layout = Arc::new(VirtualZip::new(zip.dir(), zip.entries().to_vec()));
                (FileSource::virtual_zip(dir, layout), Some((dir.clone(), zip)))
            }
        };
        if self.dry_run {
            let mut plan = provider.dry_run(&file)?;
            if let Some(z) = file.as_virtual_zip() {
                plan.fields.insert("entries".into(), z.entries().len().into());
                plan.fields.insert("image_bytes".into(), z.image_bytes().into());
                plan.fields.insert("zip64".into(), z.is_zip64().into());
                let zip = self.zip_to.as_ref().map_or("streamed".into(), |p| p.display().to_string());
                plan.fields.insert("zip".into(), zip.into());
            }
            let mut out = std::io::stdout().lock();
            let _ = ui::print_dry_run(&mut out, &plan, self.json);
            return Ok(FileResult::Planned);
        }
        // A directory's zip is known by its entry table (names, sizes, mtimes).
        let identity = match &state_dir {
            Some(_) => Some(FileIdentity::of(&file)?),
            None => None,
        };
        // One run per file at a time: the journal's lock is taken before anything else, so a
        // second run stops here without a request (or, --wait-for-lock, waits and then finds
        // the file done).
        let _lock = match (&state_dir, &identity) {
            (Some(dir), Some(id)) => Some(
                crate::engine::journal::lock(
                    dir,
                    provider.name(),
                    &self.endpoint,
                    &id.path,
                    self.wait_for_lock,
                    &cancel,
                )
                .await?,
            ),
            _ => None,
        };
        if let (Some(dir), Some(id)) = (&state_dir, &identity)
            && let Some(rec) = find_done(dir, provider.name(), &self.endpoint, id, &self.destination)
            && (!self.force || self.force_run.is_some_and(|r| rec.force_run.as_deref() == Some(r.id.as_str())))
        {
            return Ok(FileResult::Skipped(rec, file.size()));
        }
        let name = item.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let progress: Arc<dyn Progress> = Arc::new(board.file_named(&name));
        let mut ctx = settings.context(progress.clone(), cancel.clone())?;
        // The run's part budget, shared by the files in flight. The rest of the context's
        // uploader stays: its executor carries the run's cancellation (a Ctrl-C must end a
        // part's backoff wait at once) and the shared retry budget.
        ctx.uploader.shared_permits = self.uploader.shared_permits.clone();
        ctx.resume = self.resume;
        let mut zip_done = None;
        let file = match table {
            None => file,
            Some((dir_given, mut zip)) => {
                if let Some(dir) = &state_dir {
                    ctx.resume = reuse_table(dir, &mut zip, ctx.resume)?;
                }
                crc_pass(&mut zip, &progress, &cancel).await?;
                if let Some(dir) = &state_dir {
                    save_table(dir, &zip, true)?;
                }
                let zip = Arc::new(zip);
                zip_done = Some(zip.clone());
                match &self.zip_to {
                    Some(to) => {
                        progress.event(Event::Phase { message: format!("writing {}", to.display()) });
                        let (z, t, c) = (zip.clone(), to.clone(), cancel.clone());
                        tokio::task::spawn_blocking(move || write_zip_file(&z, &t, 0o666, &c))
                            .await
                            .map_err(|e| Error::File { path: to.clone(), source: std::io::Error::other(e) })??;
                        FileSource::open(to)?
                    }
                    None => FileSource::virtual_zip(&dir_given, zip),
                }
            }
        };
        let mut outcome = provider.upload(&ctx, file).await?;
        if ctx.uploader.rate.is_limited() {
            let rate = ctx.uploader.rate.current();
            outcome.fields.insert("limit_rate".into(), crate::engine::ratelimit::human_rate(rate).into());
            outcome.fields.insert("limit_rate_bps".into(), rate.into());
        }
        if let (Some(dir), Some(id)) = (&state_dir, &identity) {
            // Off the async workers: the writes wait for fsync (see `durable::off_thread`).
            let (dir, id, outcome_c) = (dir.clone(), id.clone(), outcome.clone());
            let (endpoint, destination) = (self.endpoint.clone(), self.destination.clone());
            let force_run = self.force_run.cloned();
            let recorded = crate::engine::durable::off_thread(move || {
                record_done(&dir, &endpoint, &id, &outcome_c, &destination, force_run.as_ref())
            })
            .await;
            if let Err(e) = recorded {
                tracing::warn!("cannot record the finished upload: {e}");
            }
        }
        if let (Some(dir), Some(zip)) = (&state_dir, &zip_done)
            && let Err(e) = save_table(dir, zip, false)
        {
            tracing::warn!("cannot record the finished upload: {e}");
        }
        Ok(FileResult::Uploaded(outcome))
    }

    /// Prints how one item ended (a JSON line with `--json`, else a line or the error on
    /// stderr) and counts it in `summary`.
    pub(crate) fn report(
        &self,
        item: &Item,
        res: &Result<FileResult>,
        elapsed: std::time::Duration,
        board: &ui::Board,
        summary: &mut ui::Summary,
        output: &crate::cli::args::OutputArgs,
    ) -> Result<()> {
        let json = output.json;
        let stdout = std::io::stdout();
        match res {
            Ok(FileResult::Uploaded(outcome)) => {
                summary.uploaded(outcome.bytes);
                if !json && board.mode() == ui::Mode::Bars && board.several() {
                    // On a terminal, one line per file above the board; the detail with -v,
                    // and on stdout when that is not the terminal (a script reads it).
                    board.println(&ui::finished_line(outcome, ui::term_width()));
                    if output.verbose > 0 && ui::stdout_is_terminal() {
                        let mut block = Vec::new();
                        let _ = ui::print_outcome(&mut block, outcome, false);
                        for line in String::from_utf8_lossy(&block).lines().skip(1) {
                            board.println(line);
                        }
                    }
                    if !ui::stdout_is_terminal() {
                        crate::cli::ignore_broken_pipe(ui::print_outcome(&mut stdout.lock(), outcome, json))?;
                    }
                } else {
                    crate::cli::ignore_broken_pipe(ui::print_outcome(&mut stdout.lock(), outcome, json))?;
                }
            }
            Ok(FileResult::Skipped(rec, bytes)) => {
                summary.skipped();
                let by_this_run = rec.force_run.is_some() && self.force;
                let reason = format!(
                    "already uploaded ({} {}, {}{}): {}",
                    rec.provider,
                    rec.id,
                    rec.uploaded_at,
                    if by_this_run { ", by this --force run before it was interrupted" } else { "" },
                    matched(rec)
                );
                let line = serde_json::json!({
                    "provider": rec.provider, "file": item.path().display().to_string(), "bytes": bytes,
                    "id": rec.id, "status": "skipped", "parts": 0, "elapsed_s": elapsed.as_secs_f64(),
                    "uploaded_at": rec.uploaded_at, "reason": reason,
                });
                if json {
                    crate::cli::ignore_broken_pipe(ui::print_json_line(&mut stdout.lock(), &line))?;
                } else if !output.quiet {
                    let again = if by_this_run { "" } else { "; --force uploads it again" };
                    board.println(&format!("upload: {}: skipped: {reason}{again}", item.path().display()));
                }
            }
            Ok(FileResult::Planned) => {}
            Err(err) => {
                let interrupted = matches!(err, Error::Interrupted { .. });
                if interrupted {
                    summary.interrupted(crate::cli::report::exit_code(err), crate::cli::report::hint(err).as_deref());
                } else {
                    summary.failed(crate::cli::report::exit_code(err));
                }
                if json {
                    let line = ui::failure_json(self.provider.name(), item.path(), err, elapsed);
                    crate::cli::ignore_broken_pipe(ui::print_json_line(&mut stdout.lock(), &line))?;
                }
                // An interruption of a run of several files is told once, after the summary.
                if !(interrupted && board.several()) {
                    board.report_error(err);
                }
            }
        }
        Ok(())
    }

    /// Reports a file the run did not start: it was interrupted first.
    pub(crate) fn report_not_started(
        &self,
        item: &Item,
        summary: &mut ui::Summary,
        output: &crate::cli::args::OutputArgs,
    ) -> Result<()> {
        summary.not_started();
        if output.json {
            let line = ui::not_started_json(self.provider.name(), item.path());
            crate::cli::ignore_broken_pipe(ui::print_json_line(&mut std::io::stdout().lock(), &line))?;
        }
        Ok(())
    }

    /// Reports a file the provider refuses before any request (its type, its size): skipped
    /// with the reason when it was found in a walked directory, a failure when named.
    pub(crate) fn report_refused(
        &self,
        item: &Item,
        err: &Error,
        named: bool,
        board: &ui::Board,
        summary: &mut ui::Summary,
        output: &crate::cli::args::OutputArgs,
    ) -> Result<()> {
        let stdout = std::io::stdout();
        let provider = self.provider;
        if !named && crate::cli::report::exit_code(err) == crate::cli::report::exit::USAGE {
            summary.skipped();
            let reason = err.to_string();
            if output.json {
                let line = ui::skipped_json(provider.name(), item.path(), &reason);
                crate::cli::ignore_broken_pipe(ui::print_json_line(&mut stdout.lock(), &line))?;
            } else if !output.quiet {
                board.println(&format!("upload: {}: skipped: {reason}", item.path().display()));
            }
        } else {
            summary.failed(crate::cli::report::exit_code(err));
            if output.json {
                let line = ui::failure_json(provider.name(), item.path(), err, std::time::Duration::ZERO);
                crate::cli::ignore_broken_pipe(ui::print_json_line(&mut stdout.lock(), &line))?;
            }
            board.report_error(err);
        }
        Ok(())
    }
}

/// `--files` as the engine's setting: one file at a time for a single file; pinned, at least
/// the provider's own files at once (Apertur sends each image in one request); or automatic.
pub(crate) fn files_setting(files: crate::cli::args::AutoCount, provider: &dyn Provider, several: bool) -> Files {
    match files {
        _ if !several => Files::Fixed(1),
        crate::cli::args::AutoCount::Fixed(n) => Files::Fixed((n as usize).max(provider.concurrent_files())),
        crate::cli::args::AutoCount::Auto => Files::Auto,
    }
}

/// Uploads every item of the command line; prints one result per file; returns the exit
/// code of the worst outcome.
pub(crate) async fn run(
    cli: &Cli,
    settings: &UploadSettings,
    provider: &dyn Provider,
    cancel: CancellationToken,
) -> Result<i32> {
    let args = &cli.upload;
    let json = cli.output.json;
    let selection = Selection::new(args.recursive, args.hidden, &args.include, &args.exclude)?;
    let zip_dirs =
        settings.provider == ProviderName::Teleport && args.teleport.format.as_deref() == Some("bulk-images");
    let items = selection.expand(&args.files, zip_dirs)?;
    if let Some(to) = &args.teleport.zip_to {
        let dirs = items.iter().filter(|i| matches!(i, Item::ZipDir(_))).count();
        if dirs != 1 {
            return Err(Error::usage(
                format!("--zip-to {} takes exactly one directory of images, not {dirs}", to.display()),
                "give one directory with --provider teleport --format bulk-images, or leave --zip-to out to stream",
            ));
        }
    }
    if items.is_empty() {
        return Err(Error::usage(
            "no files to upload: the directories hold no matching files",
            "check the paths, --include/--exclude, and --recursive",
        ));
    }
    let total_bytes: u64 =
        items.iter().filter_map(|i| std::fs::metadata(i.path()).ok()).filter(|m| m.is_file()).map(|m| m.len()).sum();
    let board = ui::Board::new(ui::Mode::detect(cli.output.quiet, json))
        .with_rate_limit(&settings.uploader.rate)
        .with_total(items.len(), total_bytes);
    let several = items.len() > 1;
    let files = files_setting(args.files_at_once, provider, several);
    let mut step = Step::new(settings, provider, &selection, args, json);
    let endpoint = step.endpoint.clone();
    let run_cancel = cancel.child_token();
    let started = Instant::now();
    let mut summary = ui::Summary::default();

    // A file the provider cannot take is refused here, before the first request: a file
    // named on the command line fails the run, one found in a walked directory is skipped
    // (a stray .txt must not fail a cron job forever).
    let named: std::collections::HashSet<&Path> = args.files.iter().map(PathBuf::as_path).collect();
    let refused = |item: &Item, err: Error, summary: &mut ui::Summary| -> Result<()> {
        step.report_refused(item, &err, named.contains(item.path()), &board, summary, &cli.output)
    };
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        let checked = match &item {
            Item::File(p) => FileSource::open(p).and_then(|f| provider.dry_run(&f)).map(drop),
            Item::ZipDir(_) => Ok(()),
        };
        match checked {
            Ok(()) => kept.push(item),
            Err(err) => refused(&item, err, &mut summary)?,
        }
    }
    let mut items = kept;

    // The provider sees the whole run first: Apertur refuses here, without a request, the
    // files its session will not take (type, image limit).
    let run_ctx = settings.context(Arc::new(crate::engine::progress::NoProgress), run_cancel.clone())?;
    if !args.dry_run && !items.is_empty() {
        let paths: Vec<PathBuf> = items.iter().map(|i| i.path().to_path_buf()).collect();
        let verdicts = provider.prepare(&run_ctx, &paths).await?;
        let mut kept = Vec::with_capacity(items.len());
        for (item, verdict) in items.into_iter().zip(verdicts) {
            match verdict {
                None => kept.push(item),
                Some(err) => refused(&item, err, &mut summary)?,
            }
        }
        items = kept;
    }

    let destination = &step.destination;
    // `--force` re-sends what earlier runs uploaded, but not what this same run (carried on
    // after a Ctrl-C) already did.
    let force_run = match (&settings.state_dir, args.force && !args.dry_run) {
        (Some(dir), true) => {
            let mut key = format!("{}\n{endpoint}", provider.name());
            for f in &args.files {
                key.push('\n');
                key.push_str(&String::from_utf8_lossy(f.as_os_str().as_encoded_bytes()));
            }
            for (flag, value) in destination {
                key.push_str(&format!("\n{flag}={value}"));
            }
            Some(ForceRun::begin(dir, &key)?)
        }
        _ => None,
    };
    let force_run = force_run.as_ref();
    step.force_run = force_run;
    let step = &step;
    let one = |item: Item, size: u64| {
        let (board, run_cancel) = (&board, run_cancel.clone());
        async move {
            // Once the run is interrupted, the files not begun yet are not started at all.
            if run_cancel.is_cancelled() {
                return (item, None, std::time::Duration::ZERO, size);
            }
            let t0 = Instant::now();
            let res = step.run(&item, board, run_cancel).await;
            (item, Some(res), t0.elapsed(), size)
        }
    };

    // Files start while the gate admits them (their count follows their bytes in flight), in
    // the order given; each result is reported as it ends.
    let mut gate = FileGate::new(files);
    let mut queue = items.into_iter().map(|item| {
        let size = match &item {
            Item::File(p) => std::fs::metadata(p).map_or(0, |m| m.len()),
            Item::ZipDir(_) => u64::MAX / 2,
        };
        (item, size)
    });
    let mut waiting = queue.next();
    let mut results = futures::stream::FuturesUnordered::new();
    loop {
        while let Some((item, size)) = waiting.take() {
            if !gate.admits(size) && gate.files() > 0 {
                waiting = Some((item, size));
                break;
            }
            gate.start(size);
            results.push(one(item, size));
            waiting = queue.next();
        }
        let Some((item, res, elapsed, size)) = results.next().await else { break };
        gate.end(size);
        let Some(res) = res else {
            step.report_not_started(&item, &mut summary, &cli.output)?;
            continue;
        };
        step.report(&item, &res, elapsed, &board, &mut summary, &cli.output)?;
        if let Err(err) = &res
            && (args.fail_fast || matches!(err, Error::Interrupted { .. }))
        {
            run_cancel.cancel();
        }
    }
    drop(results);
    tracing::info!(
        files = gate.peak(),
        parts = settings.uploader.shared_permits.as_ref().map_or(0, |p| p.peak_in_use()),
        "most files and parts in flight at once"
    );
    // A --force run that failed or was interrupted stays open: running it again carries it on.
    if let Some(run) = force_run
        && !cancel.is_cancelled()
        && summary.exit_code() == crate::cli::report::exit::OK
    {
        run.end();
    }
    // After the uploads: Apertur's --wait follows the deliveries of the run's session.
    let mut code = crate::cli::report::exit::OK;
    if !args.dry_run
        && !run_cancel.is_cancelled()
        && let Err(err) = provider.finish(&run_ctx).await
    {
        crate::cli::report_error(&err);
        code = crate::cli::report::exit_code(&err);
    }
    board.finish();
    if several && !args.dry_run {
        summary.print(started.elapsed(), board.sent(), cli.output.quiet);
        if let Some(hint) = summary.interruption() {
            let how = if hint.is_empty() { String::new() } else { format!(": {hint}") };
            eprintln!("upload: interrupted{how}");
        }
    }
    Ok(summary.exit_code().max(code))
}
