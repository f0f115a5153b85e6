//! What people see: progress bars on a terminal, plain log lines elsewhere, results.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::progress::{Event, Progress};
use crate::engine::ratelimit::{RateLimit, human_rate};
use crate::providers::{DryRun, UploadOutcome};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bars on stderr.
    Bars,
    /// A log line every few seconds or each 10 %.
    Lines,
    /// Nothing.
    Hidden,
}

impl Mode {
    /// Bars on a terminal (or when `UPLOAD_FORCE_TTY=1`), lines elsewhere, nothing with `--quiet`.
    pub fn detect(quiet: bool, json: bool) -> Mode {
        let tty = std::io::stderr().is_terminal() || std::env::var("UPLOAD_FORCE_TTY").is_ok_and(|v| v == "1");
        match (quiet, tty, json) {
            (true, _, _) => Mode::Hidden,
            (false, true, false) => Mode::Bars,
            _ => Mode::Lines,
        }
    }
}

/// Progress of one file.
pub struct FileProgress {
    mode: Mode,
    bar: ProgressBar,
    total_bar: Option<ProgressBar>,
    total: AtomicU64,
    sent: AtomicU64,
    parts: AtomicU32,
    parts_done: AtomicU32,
    name: Mutex<String>,
    last_line: Mutex<(Instant, u64)>,
    rate: RateLimit,
}

impl FileProgress {
    /// A progress display in the given mode, alone on the screen.
    pub fn new(mode: Mode) -> Self {
        Board::new(mode).file()
    }

    /// [`FileProgress::new`], showing the limit in force.
    pub fn with_rate_limit(mode: Mode, rate: &RateLimit) -> Self {
        Board::new(mode).with_rate_limit(rate).file()
    }

    fn line(&self, force: bool) {
        if self.mode != Mode::Lines {
            return;
        }
        let sent = self.sent.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed).max(1);
        let mut last = self.last_line.lock().expect("lock");
        let decile = sent * 10 / total;
        let last_decile = last.1 * 10 / total;
        if force || decile > last_decile || last.0.elapsed() >= Duration::from_secs(5) {
            let pct = sent as f64 * 100.0 / total as f64;
            let limit = if self.rate.is_limited() {
                format!(", limit {}", human_rate(self.rate.current()))
            } else {
                String::new()
            };
            eprintln!(
                "upload: {}: {:.0}% ({} of {}), parts {}/{}{limit}",
                self.name.lock().expect("lock"),
                pct,
                crate::size::human(sent),
                crate::size::human(total),
                self.parts_done.load(Ordering::Relaxed),
                self.parts.load(Ordering::Relaxed)
            );
            *last = (Instant::now(), sent);
        }
    }

    fn prefix(&self) {
        self.bar.set_prefix(format!(
            "parts {}/{}",
            self.parts_done.load(Ordering::Relaxed),
            self.parts.load(Ordering::Relaxed)
        ));
    }
}

impl Progress for FileProgress {
    fn event(&self, event: Event) {
        match event {
            Event::Started { file, total_bytes, parts, done_bytes, done_parts } => {
                self.total.store(total_bytes, Ordering::Relaxed);
                self.sent.store(done_bytes, Ordering::Relaxed);
                self.parts.store(parts, Ordering::Relaxed);
                self.parts_done.store(done_parts, Ordering::Relaxed);
                *self.name.lock().expect("lock") = file.clone();
                self.bar.set_length(total_bytes);
                self.bar.set_position(done_bytes);
                self.bar.set_message(file);
                self.prefix();
                self.line(true);
            }
            Event::Bytes { delta, .. } => {
                for bar in std::iter::once(&self.bar).chain(self.total_bar.as_ref()) {
                    if delta >= 0 {
                        bar.inc(delta as u64);
                    } else {
                        bar.set_position(bar.position().saturating_sub(delta.unsigned_abs()));
                    }
                }
                if delta >= 0 {
                    self.sent.fetch_add(delta as u64, Ordering::Relaxed);
                } else {
                    self.sent.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
                }
                self.line(false);
            }
            Event::PartDone { .. } => {
                self.parts_done.fetch_add(1, Ordering::Relaxed);
                self.prefix();
            }
            Event::Retry { part, attempt, reason, delay } => {
                let what = if part == 0 { "request".to_string() } else { format!("part {part}") };
                let msg = format!(
                    "upload: {what}: attempt {attempt} failed: {reason}; retrying in {:.1} s",
                    delay.as_secs_f64()
                );
                match self.mode {
                    Mode::Bars => self.bar.println(msg),
                    Mode::Lines => eprintln!("{msg}"),
                    Mode::Hidden => {}
                }
            }
            Event::Phase { message } => match self.mode {
                Mode::Bars => self.bar.set_prefix(message),
                Mode::Lines => match self.name.lock().expect("lock").as_str() {
                    "" => eprintln!("upload: {message}"),
                    name => eprintln!("upload: {name}: {message}"),
                },
                Mode::Hidden => {}
            },
            Event::Finished => {
                self.line(true);
                self.bar.finish_and_clear();
            }
        }
    }
}

impl Drop for FileProgress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// All the bars of a run: one per file in flight, and a total bar when several files go.
pub struct Board {
    mode: Mode,
    multi: Option<indicatif::MultiProgress>,
    total: Option<ProgressBar>,
    rate: RateLimit,
}

fn bar_style(rate: &RateLimit) -> ProgressStyle {
    let template = "{msg:24!} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {prefix}";
    if !rate.is_limited() {
        return ProgressStyle::with_template(template).expect("template is valid").progress_chars("=> ");
    }
    let rate = rate.clone();
    ProgressStyle::with_template(&format!("{template} {{limit}}"))
        .expect("template is valid")
        .progress_chars("=> ")
        .with_key("limit", move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "limit {}", human_rate(rate.current()));
        })
}

impl Board {
    /// A board in the given mode.
    pub fn new(mode: Mode) -> Self {
        let multi = (mode == Mode::Bars).then(|| {
            let target = if std::io::stderr().is_terminal() {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::term_like(Box::new(ForcedTerm))
            };
            indicatif::MultiProgress::with_draw_target(target)
        });
        Board { mode, multi, total: None, rate: RateLimit::off() }
    }

    /// Shows the limit in force on every bar (and progress line) of the board.
    pub fn with_rate_limit(mut self, rate: &RateLimit) -> Self {
        self.rate = rate.clone();
        self
    }

    /// Adds a total bar for `files` files of `bytes` bytes (only when there are several).
    pub fn with_total(mut self, files: usize, bytes: u64) -> Self {
        if let (Some(multi), true) = (&self.multi, files > 1) {
            let bar = multi.add(ProgressBar::new(bytes));
            bar.set_style(bar_style(&self.rate));
            bar.set_message(format!("total ({files} files)"));
            self.total = Some(bar);
        }
        self
    }

    /// A bar for one more file.
    pub fn file(&self) -> FileProgress {
        let bar = match &self.multi {
            Some(multi) => {
                let b = match &self.total {
                    Some(total) => multi.insert_before(total, ProgressBar::new(0)),
                    None => multi.add(ProgressBar::new(0)),
                };
                b.set_style(bar_style(&self.rate));
                b.enable_steady_tick(Duration::from_millis(200));
                b
            }
            None => ProgressBar::hidden(),
        };
        FileProgress {
            mode: self.mode,
            bar,
            total_bar: self.total.clone(),
            total: 0.into(),
            sent: 0.into(),
            parts: 0.into(),
            parts_done: 0.into(),
            name: Mutex::new(String::new()),
            last_line: Mutex::new((Instant::now(), 0)),
            rate: self.rate.clone(),
        }
    }

    /// Prints a line above the bars (or plainly).
    pub fn println(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        if let Some(t) = &self.total {
            t.finish_and_clear();
        }
    }
}

/// A terminal stand-in for `UPLOAD_FORCE_TTY=1` (tests check that bars are drawn).
#[derive(Debug)]
struct ForcedTerm;

impl indicatif::TermLike for ForcedTerm {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        if n > 0 { self.write_str(&format!("\x1b[{n}A")) } else { Ok(()) }
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        if n > 0 { self.write_str(&format!("\x1b[{n}B")) } else { Ok(()) }
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        if n > 0 { self.write_str(&format!("\x1b[{n}C")) } else { Ok(()) }
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        if n > 0 { self.write_str(&format!("\x1b[{n}D")) } else { Ok(()) }
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(&format!("{s}\n"))
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        std::io::stderr().write_all(s.as_bytes())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.write_str("\r\x1b[2K")
    }
    fn flush(&self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Prints one result: a JSON line, or a few human lines.
pub fn print_outcome(out: &mut dyn Write, outcome: &UploadOutcome, json: bool) -> std::io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, outcome)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{} → {}: {} ({}, {} parts, {:.1} s)",
            outcome.file,
            outcome.provider,
            outcome.status,
            crate::size::human(outcome.bytes),
            outcome.parts,
            outcome.elapsed_s
        )?;
        writeln!(out, "  id: {}", outcome.id)?;
        for (k, v) in &outcome.fields {
            if v.is_null() {
                continue;
            }
            let v = v.as_str().map(String::from).unwrap_or_else(|| v.to_string());
            writeln!(out, "  {k}: {v}")?;
        }
    }
    out.flush()
}

/// Prints a dry-run plan.
pub fn print_dry_run(out: &mut dyn Write, plan: &DryRun, json: bool) -> std::io::Result<()> {
    if json {
        let mut v = serde_json::to_value(plan).map_err(std::io::Error::other)?;
        v["dry_run"] = true.into();
        serde_json::to_writer(&mut *out, &v)?;
        writeln!(out)?;
    } else {
        writeln!(out, "dry run: {} → {} ({})", plan.file, plan.provider, crate::size::human(plan.bytes))?;
        match (plan.part_size, plan.parts) {
            (Some(size), Some(n)) => writeln!(out, "  parts: {n} × {} (last part smaller)", crate::size::human(size))?,
            _ => writeln!(out, "  parts: chosen by the server")?,
        }
        for (k, v) in &plan.fields {
            let v = v.as_str().map(String::from).unwrap_or_else(|| v.to_string());
            writeln!(out, "  {k}: {v}")?;
        }
        writeln!(out, "  requests:")?;
        for r in &plan.requests {
            writeln!(out, "    {r}")?;
        }
        writeln!(out, "  (no request made)")?;
    }
    out.flush()
}

/// Totals of a run over several files.
#[derive(Default, Debug)]
pub struct Summary {
    uploaded: u32,
    failed: u32,
    skipped: u32,
    bytes: u64,
    worst: i32,
}

impl Summary {
    /// A file was uploaded.
    pub fn uploaded(&mut self, bytes: u64) {
        self.uploaded += 1;
        self.bytes += bytes;
    }
    /// A file was skipped (already uploaded).
    pub fn skipped(&mut self) {
        self.skipped += 1;
    }
    /// A file failed with this exit code.
    pub fn failed(&mut self, code: i32) {
        self.failed += 1;
        self.worst = self.worst.max(code);
    }
    /// The exit code of the run: the worst outcome.
    pub fn exit_code(&self) -> i32 {
        self.worst
    }
    /// One line on stderr.
    pub fn print(&self, elapsed: Duration, quiet: bool) {
        if quiet && self.failed == 0 {
            return;
        }
        eprintln!(
            "upload: {} uploaded, {} skipped, {} failed; {} in {:.1} s",
            self.uploaded,
            self.skipped,
            self.failed,
            crate::size::human(self.bytes),
            elapsed.as_secs_f64()
        );
    }
}

/// The JSON line of a file that failed.
pub fn failure_json(
    provider: &str,
    file: &std::path::Path,
    err: &crate::Error,
    elapsed: Duration,
) -> serde_json::Value {
    let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    serde_json::json!({
        "provider": provider,
        "file": file.display().to_string(),
        "bytes": bytes,
        "id": null,
        "status": "failed",
        "parts": 0,
        "elapsed_s": elapsed.as_secs_f64(),
        "error": err.to_string(),
        "exit_code": err.exit_code(),
    })
}

/// The JSON line of a file skipped because the provider cannot take it (found in a walked
/// directory) or because it was already uploaded: `reason` says why.
pub fn skipped_json(provider: &str, file: &std::path::Path, reason: &str) -> serde_json::Value {
    let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    serde_json::json!({
        "provider": provider,
        "file": file.display().to_string(),
        "bytes": bytes,
        "id": null,
        "status": "skipped",
        "parts": 0,
        "elapsed_s": 0.0,
        "reason": reason,
    })
}

/// Writes one JSON value on one line.
pub fn print_json_line(out: &mut dyn Write, value: &serde_json::Value) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)?;
    out.flush()
}
