//! A run of many files through one [`Uploader`]: which files it takes ([`select`]), the
//! per-file step (a directory's bulk-images zip, the lock against a second run of the same
//! file, the done record that makes a rerun skip what was uploaded), and the run itself: every
//! file checked locally first, the provider's `prepare` over them all, files started through
//! the file gate (their count follows their bytes in flight), one end per file handed to the
//! caller as it happens, the provider's `finish` after the last.
//!
//! A directory given to Teleport with `--format bulk-images` becomes one capture: a stored zip
//! of its images (sorted names, the images' own timestamps) that is never written to disk
//! ([`VirtualZip`]): its size and every byte range are known from the entry table, and parts
//! are read from the image files as they go. The CRC-32s come from one pass before the upload
//! (kept in the state directory with each image's size and mtime, [`zip`]); the entry table is
//! the upload's identity for resuming and skipping. `zip_to` writes the same bytes to a file
//! and uploads that file instead.

pub mod done;
pub mod select;
pub mod zip;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::{CancellationToken, DropGuard};

pub use done::{DoneRecord, ForceRun};
pub use select::{
    Expanded, IMAGE_EXTENSIONS, Item, LeftOut, ProblemKind, Selection, Walk, WalkProblem, image_list, scan_images,
};

use crate::engine::journal::FileIdentity;
use crate::engine::progress::{Event, NoProgress, Progress};
use crate::engine::source::FileSource;
use crate::engine::tune::FileGate;
use crate::engine::wait::{Halt, TimeLimit};
use crate::engine::zipsource::VirtualZip;
use crate::error::{Error, Result};
use crate::providers::{DryRun, UploadOutcome};
use crate::uploader::Uploader;

/// What a run does with each file, beyond what the [`Uploader`] holds.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Upload again what a done record says was uploaded.
    pub force: bool,
    /// Carry on an interrupted upload from its journal (false: start over).
    pub resume: bool,
    /// Describe each upload ([`FileResult::Planned`]) instead of making it.
    pub dry_run: bool,
    /// A bulk-images directory's zip is written to this file, then the file uploaded (`None`:
    /// the zip is streamed from the images).
    pub zip_to: Option<PathBuf>,
    /// How long to wait for another run that is uploading the same file (`None`: fail at once
    /// with [`Error::Busy`]).
    pub wait_for_lock: Option<Duration>,
    /// The options that decide where a file goes beyond the endpoint, as `(flag, value)`: part
    /// of a done record's key (another destination is another upload).
    pub destination: Vec<(String, String)>,
    /// Stop starting files after the first failure.
    pub fail_fast: bool,
    /// Which files a bulk-images directory's zip takes.
    pub selection: Option<Selection>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            force: false,
            resume: true,
            dry_run: false,
            zip_to: None,
            wait_for_lock: None,
            destination: vec![],
            fail_fast: false,
            selection: None,
        }
    }
}

/// How one file of a run went, when it went through its step.
#[derive(Debug)]
#[non_exhaustive]
pub enum FileResult {
    /// Uploaded now.
    Uploaded(UploadOutcome),
    /// Uploaded before: the record, and the file's size.
    Skipped(DoneRecord, u64),
    /// A dry run: what the upload would do.
    Planned(DryRun),
}

/// How one file of a run ended; every file of a run ends exactly once.
#[derive(Debug)]
#[non_exhaustive]
// One per file, moved once: boxing the large variant buys nothing (Windows' larger paths
// put it past clippy's threshold).
#[allow(clippy::large_enum_variant)]
pub enum End {
    /// Went through its step: uploaded, skipped as done before, or planned.
    Done(FileResult),
    /// Refused before any request (by the provider's local checks or its `prepare`).
    Refused(Error),
    /// Its upload failed (or was interrupted: [`Error::Interrupted`]).
    Failed(Error),
    /// Not started: the run was interrupted (or stopped by `fail_fast`) first.
    NotStarted,
}

/// One file's end, as the run reports it.
#[derive(Debug)]
pub struct FileEnd<'a> {
    /// The file (or bulk-images directory).
    pub item: &'a Item,
    /// How it ended.
    pub end: End,
    /// How long its step took.
    pub elapsed: Duration,
}

/// What the run reports once every file ended.
#[derive(Debug, Default)]
pub struct RunStats {
    /// The most files in flight at once.
    pub peak_files: usize,
    /// The most parts in flight at once.
    pub peak_parts: usize,
    /// The provider's `finish` (Apertur's delivery follow-up) failed.
    pub finish: Option<Error>,
}

/// Gives each file of a run the progress sink of its upload.
pub type ProgressFor<'a> = dyn Fn(&Item) -> Arc<dyn Progress> + Send + Sync + 'a;

impl Uploader {
    /// What can be checked of `item` without a request (its type, size and name, for the
    /// provider); a directory to zip is checked when its zip is built.
    pub fn check(&self, item: &Item) -> Result<()> {
        match item {
            Item::File(p) => FileSource::open(p).and_then(|f| self.provider().dry_run(&f)).map(drop),
            Item::ZipDir(_) => Ok(()),
        }
    }

    /// The provider's look at the run's files as a whole before any upload (Apertur refuses
    /// here, without a request, what its session will not take): the files it refuses (their
    /// index in `items`), each with why.
    pub async fn prepare(&self, items: &[Item], cancel: &CancellationToken) -> Result<Vec<(usize, Error)>> {
        let ctx = self.context(Arc::new(NoProgress), cancel.clone())?;
        let paths: Vec<&Path> = items.iter().map(Item::path).collect();
        self.provider().prepare(&ctx, &paths).await
    }

    /// The provider's follow-up once every upload of a run ended (Apertur `wait`: follows the
    /// deliveries of the run's session). What it has to say goes to the uploader's progress
    /// ([`Uploader::progress`]) as [`Event::Notice`](crate::Event::Notice)s.
    pub async fn finish(&self, cancel: &CancellationToken) -> Result<()> {
        let (cancel, halt, _link) = self.linked(cancel);
        let ctx = self.context_halted(self.progress_sink(), cancel, halt.clone())?;
        self.provider().finish(&ctx).await.map_err(|e| halt.judge(e, true))
    }

    /// `cancel`, made to fire at the run's time limit too (when there is one), and how long work
    /// in flight gets once it fired; the guard ends the link.
    fn linked(&self, cancel: &CancellationToken) -> (CancellationToken, Halt, Option<DropGuard>) {
        match self.time_limit_in_force() {
            Some(limit) => {
                let (linked, halt, guard) = limit.link(cancel);
                (linked, halt, Some(guard))
            }
            None => (cancel.clone(), Halt::default(), None),
        }
    }

    /// Whether the run's time limit stops it: reached, and not after the user's own stop.
    fn stopped_by_limit(&self, user: &CancellationToken) -> bool {
        !user.is_cancelled() && self.time_limit_in_force().is_some_and(TimeLimit::reached)
    }

    /// The step of one file: a bulk-images directory as its streamed zip, skipped when a done
    /// record matches it (unless `force`), locked against a second run of the same file,
    /// uploaded, recorded as done. With `dry_run`, only plans it.
    pub async fn upload_item(
        &self,
        item: &Item,
        options: &RunOptions,
        progress_for: &ProgressFor<'_>,
        cancel: CancellationToken,
    ) -> Result<FileResult> {
        self.step(item, options, None, progress_for, cancel).await
    }

    /// The step of one file under the run's time limit: not begun once it is reached; stopped
    /// ([`Error::Stopped`]) when it is reached meanwhile.
    async fn step(
        &self,
        item: &Item,
        options: &RunOptions,
        force_run: Option<&ForceRun>,
        progress_for: &ProgressFor<'_>,
        cancel: CancellationToken,
    ) -> Result<FileResult> {
        if self.stopped_by_limit(&cancel) {
            return Err(Error::Stopped { started: false });
        }
        let (linked, halt, _link) = self.linked(&cancel);
        let res = self.step_in_time(item, options, force_run, progress_for, linked, halt.clone()).await;
        res.map_err(|e| halt.judge(e, true))
    }

    /// The step of one file once begun: the item opened (a directory's zip table made), a dry
    /// run answered, the file locked, skipped when a done record matches, the zip made ready,
    /// the upload, then what is kept of it ([`Records::uploaded`]).
    async fn step_in_time(
        &self,
        item: &Item,
        options: &RunOptions,
        force_run: Option<&ForceRun>,
        progress_for: &ProgressFor<'_>,
        cancel: CancellationToken,
        halt: Halt,
    ) -> Result<FileResult> {
        let provider = self.provider();
        let Opened { file, zip, left_out } = open_item(item, options).await?;
        // Images a zip leaves out: a line each (beside the progress), and in the result.
        let left_out_json = left_out_json(&left_out);
        if options.dry_run {
            return self.plan(&file, options, left_out_json);
        }
        let endpoint = self.endpoint_key()?;
        // A directory's zip is known by its entry table (names, sizes, mtimes).
        let records = match self.state_dir_path() {
            Some(dir) => Some(Records { dir: dir.to_path_buf(), endpoint, id: FileIdentity::of(&file)? }),
            None => None,
        };
        // One run per file at a time: the journal's lock is taken before anything else, so a
        // second run stops here without a request (or, `wait_for_lock`, waits and then finds
        // the file done).
        let _lock = match &records {
            Some(r) => Some(
                crate::engine::journal::lock(
                    &r.dir,
                    provider.name(),
                    &r.endpoint,
                    &r.id.path,
                    options.wait_for_lock,
                    &cancel,
                )
                .await?,
            ),
            None => None,
        };
        if let Some(r) = &records
            && let Some(rec) = done::find_done(&r.dir, provider.name(), &r.endpoint, &r.id, &options.destination)
            && skips(rec.force_run.as_deref(), options.force, force_run.map(|r| r.id.as_str()))
        {
            return Ok(FileResult::Skipped(rec, file.size()));
        }
        let progress = progress_for(item);
        for l in &left_out {
            progress.event(Event::Notice {
                message: format!("skipped {}: {}, left out of the zip", l.path.display(), l.reason),
            });
        }
        let mut ctx = self.context_halted(progress.clone(), cancel.clone(), halt)?;
        ctx.resume = options.resume;
        let (file, zip_done) = match zip {
            None => (file, None),
            Some((dir_given, zip)) => {
                let state_dir = records.as_ref().map(|r| r.dir.as_path());
                let (file, zip) =
                    zip::ready(&dir_given, zip, state_dir, options, &mut ctx.resume, &progress, &cancel).await?;
                (file, Some(zip))
            }
        };
        // `--zip-to`: the zip file is uploaded under its own journal, which the done record of
        // the directory does not retire: it goes with the upload's success.
        let written_zip = (zip_done.is_some() && options.zip_to.is_some()).then(|| file.path().to_path_buf());
        let mut outcome = provider.upload(&ctx, file).await?;
        if let Some(v) = left_out_json {
            outcome.fields.insert("skipped_entries".into(), v);
        }
        if ctx.uploader.rate.is_limited() {
            let rate = ctx.uploader.rate.current();
            outcome.fields.insert("limit_rate".into(), crate::engine::ratelimit::human_rate(rate).into());
            outcome.fields.insert("limit_rate_bps".into(), rate.into());
        }
        if let Some(r) = records {
            r.uploaded(provider.name(), &outcome, written_zip, zip_done, options, force_run).await;
        }
        Ok(FileResult::Uploaded(outcome))
    }

    /// A dry run's answer: skipped when the real run would skip it (a done record matches and
    /// not `force`), else the provider's plan, a directory's zip described in it.
    fn plan(&self, file: &FileSource, options: &RunOptions, left_out: Option<serde_json::Value>) -> Result<FileResult> {
        // What the real run would skip (its done record matches) is shown as skipped.
        if let Some(dir) = self.state_dir_path()
            && !options.force
            && let Ok(endpoint) = self.endpoint_key()
            && let Ok(id) = FileIdentity::of(file)
            && let Some(rec) = done::find_done(dir, self.provider().name(), &endpoint, &id, &options.destination)
        {
            return Ok(FileResult::Skipped(rec, file.size()));
        }
        let mut plan = self.provider().dry_run(file)?;
        if let Some(z) = file.as_virtual_zip() {
            plan.fields.insert("entries".into(), z.entries().len().into());
            plan.fields.insert("image_bytes".into(), z.image_bytes().into());
            plan.fields.insert("zip64".into(), z.is_zip64().into());
            let zip = options.zip_to.as_ref().map_or("streamed".into(), |p| p.display().to_string());
            plan.fields.insert("zip".into(), zip.into());
        }
        if let Some(v) = left_out {
            plan.fields.insert("skipped_entries".into(), v);
        }
        Ok(FileResult::Planned(plan))
    }

    /// Uploads every item: each is checked locally first (a refusal is its end, no request
    /// made), the provider sees the rest as a whole (`prepare`), then they start through the
    /// file gate in the order given, sharing the part budget; each file's end is handed to
    /// `on_end` as it happens (an `Err` from it stops the run: the caller can no longer
    /// report). After the last, the provider's `finish` (unless interrupted or a dry run).
    ///
    /// A `force` run is remembered in the state directory while it runs: running the same
    /// files again after an interruption does not send a third time what it already uploaded.
    pub async fn run(
        &self,
        items: Vec<Item>,
        options: &RunOptions,
        progress_for: &ProgressFor<'_>,
        on_end: &mut (dyn FnMut(FileEnd<'_>) -> Result<()> + Send),
    ) -> Result<RunStats> {
        let cancel = self.cancel_token();
        let run_cancel = cancel.child_token();
        let mut stats = RunStats::default();
        let items = self.refuse_early(items, options, &run_cancel, on_end).await?;
        let force_run = match (self.state_dir_path(), options.force && !options.dry_run) {
            (Some(dir), true) => {
                let key = force_run_key(self.provider().name(), &self.endpoint_key()?, &items, &options.destination);
                Some(ForceRun::begin(dir, &key)?)
            }
            _ => None,
        };
        let (failed, peak_files) =
            self.through_gate(items, options, force_run.as_ref(), progress_for, &run_cancel, on_end).await?;
        stats.peak_files = peak_files;
        stats.peak_parts = self.peak_parts();
        // A force run that failed or was interrupted stays open: running it again carries it on.
        if let Some(run) = &force_run
            && !cancel.is_cancelled()
            && !failed
        {
            run.end();
        }
        // The records of files that are gone can never match again: pruned (once a day); the
        // loose records go into the packed file when due.
        if let Some(dir) = self.state_dir_path().filter(|_| !options.dry_run).map(Path::to_path_buf) {
            let _ = tokio::task::spawn_blocking(move || done::tidy(&dir)).await;
        }
        // After the uploads: Apertur's wait follows the deliveries of the run's session.
        if !options.dry_run
            && !run_cancel.is_cancelled()
            && !self.stopped_by_limit(&run_cancel)
            && let Err(err) = self.finish(&run_cancel).await
        {
            stats.finish = Some(err);
        }
        Ok(stats)
    }

    /// The items a run keeps: what the provider refuses locally (type, size, name) is refused
    /// before the first request of the run, then (not in a dry run) what its `prepare` refuses
    /// of them as a whole; each refusal is that item's end.
    async fn refuse_early(
        &self,
        items: Vec<Item>,
        options: &RunOptions,
        run_cancel: &CancellationToken,
        on_end: &mut (dyn FnMut(FileEnd<'_>) -> Result<()> + Send),
    ) -> Result<Vec<Item>> {
        // The list is kept in place (a run of many files holds one list, not three).
        let mut items = items;
        let refused: Vec<(usize, Error)> =
            items.iter().enumerate().filter_map(|(i, item)| self.check(item).err().map(|e| (i, e))).collect();
        refuse(&mut items, refused, on_end)?;
        if options.dry_run || items.is_empty() {
            return Ok(items);
        }
        let refused = self.prepare(&items, run_cancel).await?;
        refuse(&mut items, refused, on_end)?;
        Ok(items)
    }

    /// The files' steps: started while the gate admits them (their count follows their bytes
    /// in flight), in the order given; each ends as it ends and its end goes to `on_end`. A
    /// failure cancels the files not begun when `fail_fast` (an interruption always does).
    /// Returns whether any failed, and the most files that were in flight at once.
    async fn through_gate(
        &self,
        items: Vec<Item>,
        options: &RunOptions,
        force_run: Option<&ForceRun>,
        progress_for: &ProgressFor<'_>,
        run_cancel: &CancellationToken,
        on_end: &mut (dyn FnMut(FileEnd<'_>) -> Result<()> + Send),
    ) -> Result<(bool, usize)> {
        let one = |item: Item, size: u64| {
            let run_cancel = run_cancel.clone();
            async move {
                // Once the run's time limit is reached, the files not begun yet are stopped
                // before they start.
                if self.stopped_by_limit(&run_cancel) {
                    return (item, Some(Err(Error::Stopped { started: false })), Duration::ZERO, size);
                }
                // Once the run is interrupted, the files not begun yet are not started at all.
                if run_cancel.is_cancelled() {
                    return (item, None, Duration::ZERO, size);
                }
                let t0 = Instant::now();
                let res = self.step(&item, options, force_run, progress_for, run_cancel).await;
                (item, Some(res), t0.elapsed(), size)
            }
        };
        let mut gate =
            FileGate::new(if items.len() > 1 { self.files_setting() } else { crate::engine::tune::Files::Fixed(1) });
        let mut queue = items.into_iter().map(|item| {
            let size = match &item {
                Item::File(p) => std::fs::metadata(p).map_or(0, |m| m.len()),
                Item::ZipDir(_) => u64::MAX / 2,
            };
            (item, size)
        });
        let mut waiting = queue.next();
        let mut results = futures::stream::FuturesUnordered::new();
        let mut failed = false;
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
            let end = match res {
                None => End::NotStarted,
                Some(Ok(r)) => End::Done(r),
                Some(Err(e)) => {
                    if options.fail_fast || matches!(e, Error::Interrupted { .. }) {
                        run_cancel.cancel();
                    }
                    failed = true;
                    End::Failed(e)
                }
            };
            on_end(FileEnd { item: &item, end, elapsed })?;
        }
        Ok((failed, gate.peak()))
    }
}

/// The key of a `force` run: the provider, the endpoint, the files in order and the
/// destination's flags (the same command run again finds its interrupted run).
fn force_run_key(provider: &str, endpoint: &str, items: &[Item], destination: &[(String, String)]) -> String {
    let mut key = format!("{provider}\n{endpoint}");
    for item in items {
        key.push('\n');
        key.push_str(&String::from_utf8_lossy(item.path().as_os_str().as_encoded_bytes()));
    }
    for (flag, value) in destination {
        key.push_str(&format!("\n{flag}={value}"));
    }
    key
}

/// Whether a file whose done record matches is skipped: always, except in a `force` run,
/// where only what this very run uploaded already (an interrupted force run carried on) is.
/// `recorded_by`: the force run the record names; `this_run`: the id of the run going on.
fn skips(recorded_by: Option<&str>, force: bool, this_run: Option<&str>) -> bool {
    !force || this_run.is_some_and(|id| recorded_by == Some(id))
}

/// Each refused item's end goes to `on_end`, in the list's order; the refused leave the list.
fn refuse(
    items: &mut Vec<Item>,
    mut refused: Vec<(usize, Error)>,
    on_end: &mut (dyn FnMut(FileEnd<'_>) -> Result<()> + Send),
) -> Result<()> {
    if refused.is_empty() {
        return Ok(());
    }
    refused.sort_by_key(|(i, _)| *i);
    let mut gone = Vec::with_capacity(refused.len());
    for (i, err) in refused {
        if let Some(item) = items.get(i) {
            on_end(FileEnd { item, end: End::Refused(err), elapsed: Duration::ZERO })?;
        }
        gone.push(i);
    }
    let mut i = 0;
    items.retain(|_| {
        i += 1;
        gone.binary_search(&(i - 1)).is_err()
    });
    Ok(())
}

/// An item opened for its step: a file, or a directory's zip from its table (no image read
/// yet) with the path given, and the images the zip leaves out.
struct Opened {
    file: FileSource,
    zip: Option<(PathBuf, VirtualZip)>,
    left_out: Vec<LeftOut>,
}

async fn open_item(item: &Item, options: &RunOptions) -> Result<Opened> {
    match item {
        Item::File(p) => Ok(Opened { file: FileSource::open(p)?, zip: None, left_out: Vec::new() }),
        Item::ZipDir(dir) => {
            let sel = options.selection.as_ref().map_or_else(Selection::everything, Selection::every_depth);
            let d = dir.clone();
            let (zip, left_out) = tokio::task::spawn_blocking(move || scan_images(&d, &sel))
                .await
                .map_err(|e| Error::File { path: dir.clone(), source: std::io::Error::other(e) })??;
            let layout = Arc::new(VirtualZip::new(zip.dir(), zip.entries().to_vec()));
            Ok(Opened { file: FileSource::virtual_zip(dir, layout), zip: Some((dir.clone(), zip)), left_out })
        }
    }
}

/// The images a zip leaves out, as the result's `skipped_entries` (`None`: none).
fn left_out_json(left_out: &[LeftOut]) -> Option<serde_json::Value> {
    (!left_out.is_empty()).then(|| {
        let rows =
            left_out.iter().map(|l| serde_json::json!({ "path": l.path.display().to_string(), "reason": l.reason }));
        serde_json::Value::Array(rows.collect())
    })
}

/// What the state directory keeps of one file's upload: where, under which endpoint, and the
/// file's identity (a directory's zip: its entry table).
struct Records {
    dir: PathBuf,
    endpoint: String,
    id: FileIdentity,
}

impl Records {
    /// After the upload: the journal of a `--zip-to` file retired, the done record written (off
    /// the async workers: the writes wait for fsync, see `durable::off_thread`), a directory's
    /// zip table saved as uploaded. A record that cannot be written is a warning: the upload
    /// itself succeeded.
    async fn uploaded(
        self,
        provider: &str,
        outcome: &UploadOutcome,
        written_zip: Option<PathBuf>,
        zip: Option<Arc<VirtualZip>>,
        options: &RunOptions,
        force_run: Option<&ForceRun>,
    ) {
        if let Some(zip_file) = &written_zip
            && let Ok(canonical) = std::fs::canonicalize(zip_file)
        {
            crate::engine::journal::remove(&self.dir, provider, &self.endpoint, &canonical);
        }
        let dir = self.dir.clone();
        let (outcome, destination, force_run) = (outcome.clone(), options.destination.clone(), force_run.cloned());
        let recorded = crate::engine::durable::off_thread(move || {
            done::record_done(&self.dir, &self.endpoint, &self.id, &outcome, &destination, force_run.as_ref())
        })
        .await;
        if let Err(e) = recorded {
            tracing::warn!("cannot record the finished upload: {e}");
        }
        if let Some(zip) = &zip
            && let Err(e) = zip::save_table(&dir, zip, false)
        {
            tracing::warn!("cannot record the finished upload: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_done_record_skips_unless_forced_and_a_force_run_skips_only_its_own() {
        assert!(skips(None, false, None));
        assert!(skips(Some("run-1"), false, None));
        assert!(!skips(None, true, None), "--force uploads again");
        assert!(!skips(Some("run-1"), true, None));
        assert!(!skips(None, true, Some("run-1")), "uploaded before the force run: sent again");
        assert!(!skips(Some("run-0"), true, Some("run-1")), "another force run's record");
        assert!(skips(Some("run-1"), true, Some("run-1")), "this very run uploaded it: not a third time");
    }

    #[test]
    fn a_force_run_is_keyed_by_provider_endpoint_files_in_order_and_destination() {
        let items = [Item::File("a.mp4".into()), Item::ZipDir("caps/one".into())];
        let dest = [("--name".to_string(), "x".to_string())];
        let key = force_run_key("teleport", "https://api", &items, &dest);
        assert_eq!(key, "teleport\nhttps://api\na.mp4\ncaps/one\n--name=x");
        let swapped = [Item::ZipDir("caps/one".into()), Item::File("a.mp4".into())];
        assert_ne!(force_run_key("teleport", "https://api", &swapped, &dest), key);
        assert_ne!(force_run_key("teleport", "https://api", &items, &[]), key);
        assert_ne!(force_run_key("truvideo", "https://api", &items, &dest), key);
    }

    #[test]
    fn images_left_out_of_a_zip_are_listed_with_their_reason() {
        assert_eq!(left_out_json(&[]), None);
        let left = [LeftOut { path: "caps/one/empty.jpg".into(), reason: "empty (0 bytes)" }];
        assert_eq!(
            left_out_json(&left),
            Some(serde_json::json!([{ "path": "caps/one/empty.jpg", "reason": "empty (0 bytes)" }]))
        );
    }
}
