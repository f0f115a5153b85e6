//! What people see: progress bars on a terminal, plain log lines elsewhere, results.
//!
//! Bars are drawn by indicatif, but every line is laid out here ([`layout`]) to the width of
//! the terminal at the time of drawing: fields are dropped and names shortened in the middle
//! rather than letting a line wrap (a wrapped line leaves stale copies of the board). The
//! rate and the ETA count only the bytes sent by this run (a resumed upload starts its rate
//! clock at the bytes already on the server). Anything printed while a board is drawn goes
//! above it ([`notice`], [`log_writer`]).
//!
//! One owner of the terminal: while a board is drawn, every line printed (notices, log
//! lines, results) is handed over a channel to one thread that prints it above the board.
//! A caller never waits on the board's lock, so no lock held while printing or logging (the
//! rate limiter's, a bar's drawing) can close a cycle with the board; the lines keep their
//! order, and all of them are out before the board goes.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::progress::{Event, Progress};
use crate::engine::ratelimit::{RateLimit, human_rate};
use crate::providers::{DryRun, UploadOutcome};

/// `UPLOAD_FORCE_TTY=1`: stdin, stdout and stderr count as terminals (tests).
fn forced_tty() -> bool {
    std::env::var("UPLOAD_FORCE_TTY").is_ok_and(|v| v == "1")
}

/// Whether stderr is a terminal (or `UPLOAD_FORCE_TTY=1`).
pub(crate) fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal() || forced_tty()
}

/// Whether stdout is a terminal (or `UPLOAD_FORCE_TTY=1`).
pub(crate) fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal() || forced_tty()
}

/// The width of the terminal on stderr, in columns: asked of the terminal each time (it may
/// be resized), else `COLUMNS`, else 80. The fake terminal of `UPLOAD_FORCE_TTY=1` is
/// `COLUMNS` wide (100 without it).
pub(crate) fn term_width() -> usize {
    let real = std::io::stderr().is_terminal();
    if real
        && let Some((_, w)) = console::Term::stderr().size_checked()
        && w > 0
    {
        return w as usize;
    }
    let columns = std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse::<usize>().ok()).filter(|&w| w > 0);
    columns.unwrap_or(if real { 80 } else { 100 })
}

/// When to colour the output (`--color`, env `UPLOAD_COLOR`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ColorWhen {
    /// Only on a terminal, and not when `NO_COLOR` is set.
    #[default]
    Auto,
    /// Always (even into a file or a pipe).
    Always,
    /// Never.
    Never,
}

static COLOR: OnceLock<bool> = OnceLock::new();

fn auto_color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && stderr_is_terminal()
}

/// Decides once for the process whether stderr gets colour (logs, bars, results, summary);
/// returns the decision. A later call does not change it.
pub(crate) fn init_color(when: ColorWhen) -> bool {
    *COLOR.get_or_init(|| match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => auto_color(),
    })
}

/// Whether stderr gets colour (see [`init_color`]; `auto` when it was not called).
pub(crate) fn color() -> bool {
    *COLOR.get_or_init(auto_color)
}

/// `text` in the SGR colour `code` when colour is on.
fn paint(text: &str, code: &str) -> String {
    if color() { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
}

/// The board being drawn, if any, and the way to its terminal's owner: lines printed
/// meanwhile go above it, through the owner.
static ACTIVE: Mutex<Option<Active>> = Mutex::new(None);

struct Active {
    /// Which board ([`Board::id`]).
    board: u64,
    multi: indicatif::MultiProgress,
    owner: std::sync::mpsc::Sender<String>,
}

/// Hands `line` to the terminal's owner when a board is drawn (never waiting for the board);
/// `Err(line)` when none is.
fn to_owner(line: String) -> Result<(), String> {
    let Ok(active) = ACTIVE.lock() else { return Err(line) };
    match active.as_ref() {
        Some(a) => a.owner.send(line).map_err(|e| e.0),
        None => Err(line),
    }
}

/// Prints a line on stderr, above the board when one is drawn.
pub(crate) fn notice(line: &str) {
    if let Err(line) = to_owner(line.to_string()) {
        eprintln!("{line}");
    }
}

/// Clears the board from the screen for good (before the process exits).
pub(crate) fn clear_board() {
    if let Some(a) = ACTIVE.lock().ok().and_then(|mut a| a.take()) {
        let _ = a.multi.clear();
    }
}

/// The terminal's owner of a board: prints the lines handed to it above the board, in order,
/// until every sender is gone.
struct Owner {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Owner {
    fn start(multi: &indicatif::MultiProgress) -> (Owner, std::sync::mpsc::Sender<String>) {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let m = multi.clone();
        let thread = std::thread::Builder::new()
            .name("upload-terminal".into())
            .spawn(move || {
                for line in rx {
                    let _ = m.println(line);
                }
            })
            .ok();
        (Owner { thread }, tx)
    }

    /// Waits for the lines already handed over (the sender is gone).
    fn finish(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where log lines (tracing) go: stderr, above the board when one is drawn.
pub(crate) fn log_writer() -> LogWriter {
    LogWriter(Vec::new())
}

/// One log event, written out when dropped (see [`log_writer`]).
pub(crate) struct LogWriter(Vec<u8>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.0).trim_end_matches('\n').to_string();
        if to_owner(text).is_err() {
            let _ = std::io::stderr().lock().write_all(&self.0);
        }
    }
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Bars on stderr.
    Bars,
    /// A log line every few seconds or each 10 %.
    Lines,
    /// Nothing.
    Hidden,
}

impl Mode {
    /// Bars on a terminal (or when `UPLOAD_FORCE_TTY=1`), lines elsewhere, nothing with `--quiet`.
    pub(crate) fn detect(quiet: bool, json: bool) -> Mode {
        match (quiet, stderr_is_terminal(), json) {
            (true, _, _) => Mode::Hidden,
            (false, true, false) => Mode::Bars,
            _ => Mode::Lines,
        }
    }
}

/// `s` cut to `max` characters by taking out its middle (`very-long-na…file.mp4`); never
/// splits a character.
pub(crate) fn truncate_middle(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let tail = (max - 1) / 2;
    let head = max - 1 - tail;
    let mut out: String = s.chars().take(head).collect();
    out.push('…');
    out.extend(s.chars().skip(n - tail));
    out
}

/// A path cut to `max` characters, its directory first: the file name is what tells files
/// apart, so `/home/me/captures/…/lobby.mp4` (the directory's start and end kept around the
/// cut), and only a name too long alone is cut in its middle (`…/very-lo…ame.mp4`).
pub(crate) fn shorten_path(path: &str, max: usize) -> String {
    let n = path.chars().count();
    if n <= max {
        return path.to_string();
    }
    let Some(slash) = path.rfind(['/', std::path::MAIN_SEPARATOR]) else { return truncate_middle(path, max) };
    let (dir, name) = path.split_at(slash + 1);
    let name_n = name.chars().count();
    // `…/name` at the least.
    if name_n + 2 > max {
        let sep = &path[slash..slash + 1];
        return if max >= 4 {
            format!("…{sep}{}", truncate_middle(name, max - 2))
        } else {
            truncate_middle(path, max)
        };
    }
    // The directory with its middle taken out; its end (the separator at least) kept.
    let room = max - name_n;
    let dir_chars: Vec<char> = dir.chars().collect();
    let tail = room / 2;
    let head = room - 1 - tail;
    let mut out: String = dir_chars[..head].iter().collect();
    out.push('…');
    out.extend(&dir_chars[dir_chars.len() - tail..]);
    out.push_str(name);
    out
}

/// `s` cut to `max` characters at its end (`…` marks the cut).
fn truncate_end(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n >= width { s.to_string() } else { format!("{s}{}", " ".repeat(width - n)) }
}

/// What one line of the board shows.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fields {
    /// The file (or `total (N files)`).
    pub(crate) name: String,
    /// What to show instead of a name too long for its column, when it fits (`total`).
    pub(crate) short_name: Option<String>,
    /// Bytes on the server or sent.
    pub(crate) pos: u64,
    /// Bytes in all; `None` before the transfer started (the line shows the name and status).
    pub(crate) total: Option<u64>,
    /// Bytes per second sent by this run, once measured.
    pub(crate) rate: Option<f64>,
    /// Time left at that rate.
    pub(crate) eta: Option<Duration>,
    /// `parts 2/5`, or the phase (`completing`).
    pub(crate) status: String,
    /// The rate limit in force (`limit 10.00 MiB/s`).
    pub(crate) limit: Option<String>,
}

const NAME_COLUMN: usize = 24;

/// Off a terminal, a transfer that ends sooner prints no progress line.
const FIRST_LINE: Duration = Duration::from_secs(2);

/// Which moment of a transfer a progress line is asked for at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Line {
    Start,
    Progress,
    End,
}
const BAR: usize = 30;

/// One line of the board, at most `width - 1` characters wide (the last column is left
/// free: some terminals wrap when it is written). As the width shrinks: the limit goes, then
/// the part count (`parts 2/5`: the bytes say as much), the ETA and the rate; then the bar and
/// the name column shrink (the name's directory first) and a phase is cut ([`Columns::fit`]).
pub(crate) fn layout(f: &Fields, width: usize, colour: bool) -> String {
    let w = width.saturating_sub(1).max(10);
    let Some(total) = f.total else {
        let name_w = NAME_COLUMN.min(w);
        let name = truncate_middle(&f.name, name_w);
        let line = if f.status.is_empty() { name } else { format!("{} {}", pad(&name, name_w), f.status) };
        return truncate_end(&line, w);
    };
    let pos = f.pos.min(total);
    let pieces = Pieces {
        bytes: format!("{}/{}", crate::size::human(pos), crate::size::human(total)),
        rate: f.rate.map(|r| format!("{}/s", crate::size::human(r as u64))),
        eta: f.eta.map(|e| format!("ETA {}", crate::size::human_duration(Duration::from_secs(e.as_secs())))),
    };
    let c = Columns::fit(w, f, &pieces);
    let filled = if total == 0 { c.bar } else { ((pos as u128 * c.bar as u128) / total as u128) as usize };
    let mut bar = "=".repeat(filled);
    if filled < c.bar {
        bar.push('>');
        bar.push_str(&" ".repeat(c.bar - filled - 1));
    }
    let name = match &f.short_name {
        Some(short) if f.name.chars().count() > c.name && short.chars().count() <= c.name => short,
        _ => &f.name,
    };
    let mut plain = format!("{} [", pad(&shorten_path(name, c.name), c.name));
    let bar_at = plain.len();
    plain.push_str(&bar);
    let bar_end = plain.len();
    plain.push_str("] ");
    plain.push_str(&pieces.bytes);
    for (show, s) in [(c.rate, &pieces.rate), (c.eta, &pieces.eta)] {
        if let (true, Some(s)) = (show, s) {
            plain.push(' ');
            plain.push_str(s);
        }
    }
    if c.status > 0 {
        plain.push(' ');
        plain.push_str(&truncate_end(&f.status, c.status));
    }
    if let (true, Some(l)) = (c.limit, &f.limit) {
        plain.push(' ');
        plain.push_str(l);
    }
    if plain.chars().count() > w {
        // Narrower than any layout: cut (no colour, the cut may fall inside the bar).
        return truncate_end(&plain, w);
    }
    if colour {
        format!("{}\x1b[36m{}\x1b[0m{}", &plain[..bar_at], &plain[bar_at..bar_end], &plain[bar_end..])
    } else {
        plain
    }
}

/// The texts of a progress line beside its name, bar and status.
struct Pieces {
    /// `1.00 MiB/4.00 MiB`.
    bytes: String,
    rate: Option<String>,
    eta: Option<String>,
}

/// The columns of a progress line: the widths of the name, the bar and the status (0: none),
/// and which of the rate, the ETA and the limit show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Columns {
    name: usize,
    bar: usize,
    status: usize,
    rate: bool,
    eta: bool,
    limit: bool,
}

impl Columns {
    /// The columns that fit in `w`. The name column and the bar depend on the width only, so
    /// that the lines of the board stay aligned; what else fits depends on each line. Dropped
    /// in this order while the line is too long: the limit, a part count, the ETA, the rate;
    /// then the bar shrinks to 10, a phase is cut (gone below 6 characters), the bar shrinks
    /// to 3, the name column to 8.
    fn fit(w: usize, f: &Fields, p: &Pieces) -> Columns {
        let name = w.saturating_sub(59).clamp(12, NAME_COLUMN);
        let mut c = Columns {
            name,
            bar: w.saturating_sub(name + 47).clamp(6, BAR),
            status: f.status.chars().count(),
            rate: p.rate.is_some(),
            eta: p.eta.is_some(),
            limit: f.limit.is_some(),
        };
        let excess = |c: &Columns| c.len(f, p).saturating_sub(w);
        if excess(&c) > 0 {
            c.limit = false;
        }
        // A part count says less than the rate and the ETA; a phase (`completing`) says more.
        if excess(&c) > 0 && f.status.starts_with("parts ") {
            c.status = 0;
        }
        if excess(&c) > 0 {
            c.eta = false;
        }
        if excess(&c) > 0 {
            c.rate = false;
        }
        // A long status (a phase: `PROCESSING: Training the 3D model`) takes room from the bar
        // before it is cut.
        c.bar = c.bar.saturating_sub(excess(&c)).max(c.bar.min(10));
        let e = excess(&c);
        if e > 0 {
            c.status = c.status.saturating_sub(e);
            if c.status < 6 {
                c.status = 0;
            }
        }
        c.bar = c.bar.saturating_sub(excess(&c)).max(3);
        c.name = c.name.saturating_sub(excess(&c)).max(8);
        c
    }

    /// The length of the line these columns make, in characters.
    fn len(&self, f: &Fields, p: &Pieces) -> usize {
        let opt =
            |show: bool, s: &Option<String>| if show { s.as_ref().map_or(0, |s| 1 + s.chars().count()) } else { 0 };
        self.name
            + 1
            + self.bar
            + 2
            + 1
            + p.bytes.chars().count()
            + opt(self.rate, &p.rate)
            + opt(self.eta, &p.eta)
            + if self.status > 0 { 1 + self.status } else { 0 }
            + opt(self.limit, &f.limit)
    }
}

/// Bytes per second over the last few seconds, counted from a start: the bytes of a resumed
/// upload already on the server are not this run's and do not count.
#[derive(Debug, Default)]
pub(crate) struct RateClock {
    samples: VecDeque<(Instant, u64)>,
}

impl RateClock {
    const WINDOW: Duration = Duration::from_secs(10);
    const EVERY: Duration = Duration::from_millis(250);
    const FIRST: Duration = Duration::from_secs(1);

    /// Starts the clock at `now` with `sent` bytes sent so far by this run.
    pub(crate) fn start(&mut self, now: Instant, sent: u64) {
        self.samples.clear();
        self.samples.push_back((now, sent));
    }

    /// The rate at `now`, with `sent` bytes sent by this run; `None` in the first second.
    pub(crate) fn rate(&mut self, now: Instant, sent: u64) -> Option<f64> {
        let &(last, _) = self.samples.back()?;
        if now.saturating_duration_since(last) >= Self::EVERY {
            self.samples.push_back((now, sent));
        }
        while self.samples.len() > 2 && now.saturating_duration_since(self.samples[1].0) >= Self::WINDOW {
            self.samples.pop_front();
        }
        let &(t0, b0) = self.samples.front()?;
        let span = now.saturating_duration_since(t0);
        (span >= Self::FIRST).then(|| sent.saturating_sub(b0) as f64 / span.as_secs_f64())
    }
}

/// What a bar knows, shared with its drawing.
#[derive(Default)]
struct BarState {
    name: Mutex<String>,
    short_name: Option<String>,
    status: Mutex<String>,
    total: AtomicU64,
    /// Bytes on the server when the transfer started (a resumed upload's finished parts).
    base: AtomicU64,
    /// Bytes sent by this run.
    sent: AtomicI64,
    started: AtomicBool,
    clock: Mutex<RateClock>,
}

impl BarState {
    fn start_clock(&self) {
        self.clock.lock().expect("clock").start(Instant::now(), self.sent.load(Ordering::Relaxed).max(0) as u64);
    }

    fn fields(&self, rate_limit: &RateLimit) -> Fields {
        let started = self.started.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        let sent = self.sent.load(Ordering::Relaxed).max(0) as u64;
        let pos = (self.base.load(Ordering::Relaxed) + sent).min(total);
        let rate = if started { self.clock.lock().expect("clock").rate(Instant::now(), sent) } else { None };
        let eta = rate.filter(|r| *r >= 1.0).map(|r| Duration::from_secs_f64(((total - pos) as f64 / r).min(1e7)));
        Fields {
            name: self.name.lock().expect("name").clone(),
            short_name: self.short_name.clone(),
            pos,
            total: started.then_some(total),
            rate,
            eta,
            status: self.status.lock().expect("status").clone(),
            limit: rate_limit.is_limited().then(|| format!("limit {}", human_rate(rate_limit.current()))),
        }
    }
}

fn bar_style(state: Arc<BarState>, rate: RateLimit) -> ProgressStyle {
    ProgressStyle::with_template("{line}").expect("template is valid").with_key(
        "line",
        move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&layout(&state.fields(&rate), term_width(), color()));
        },
    )
}

/// Progress of one file.
pub(crate) struct FileProgress {
    mode: Mode,
    bar: ProgressBar,
    state: Arc<BarState>,
    total_bar: Option<(ProgressBar, Arc<BarState>)>,
    /// The board's count of bytes sent by the run.
    run_sent: Arc<AtomicI64>,
    /// What this file added to the total bar's base (resumed bytes).
    counted_base: AtomicU64,
    parts: AtomicU32,
    parts_done: AtomicU32,
    /// When the last progress line was printed (else when the transfer started) and at how
    /// many bytes; whether one was printed at all.
    last_line: Mutex<(Instant, u64, bool)>,
    rate: RateLimit,
    /// The board of a bar alone on the screen (see [`FileProgress::with_rate_limit`]).
    own_board: Option<Box<Board>>,
}

impl FileProgress {
    /// A progress display in the given mode, alone on the screen, showing the limit in force.
    pub(crate) fn with_rate_limit(mode: Mode, rate: &RateLimit) -> Self {
        Self::alone(Board::new(mode).with_rate_limit(rate))
    }

    /// A bar that keeps its board (lines printed meanwhile go above it) until it is dropped.
    fn alone(board: Board) -> Self {
        let mut p = board.file();
        p.own_board = Some(Box::new(board));
        p
    }

    fn name(&self) -> String {
        self.state.name.lock().expect("name").clone()
    }

    fn sent(&self) -> u64 {
        let s = &self.state;
        s.base.load(Ordering::Relaxed) + s.sent.load(Ordering::Relaxed).max(0) as u64
    }

    /// A progress line off a terminal: none for a transfer that ends within its first
    /// [`FIRST_LINE`] (the result says it all), then one each 10 % or 5 s, and the last one.
    /// `Line::Start` restarts the clock.
    fn line(&self, at: Line) {
        if self.mode != Mode::Lines {
            return;
        }
        let sent = self.sent();
        let total = self.state.total.load(Ordering::Relaxed).max(1);
        let mut last = self.last_line.lock().expect("lock");
        if at == Line::Start {
            *last = (Instant::now(), sent, false);
            return;
        }
        let decile = sent * 10 / total;
        let last_decile = last.1 * 10 / total;
        let printed = last.2;
        let due = if printed {
            at == Line::End || decile > last_decile || last.0.elapsed() >= Duration::from_secs(5)
        } else {
            at != Line::End && last.0.elapsed() >= FIRST_LINE
        };
        if due {
            let pct = sent as f64 * 100.0 / total as f64;
            let limit = if self.rate.is_limited() {
                format!(", limit {}", human_rate(self.rate.current()))
            } else {
                String::new()
            };
            eprintln!(
                "upload: {}: {:.0}% ({} of {}), parts {}/{}{limit}",
                self.name(),
                pct,
                crate::size::human(sent),
                crate::size::human(total),
                self.parts_done.load(Ordering::Relaxed),
                self.parts.load(Ordering::Relaxed)
            );
            *last = (Instant::now(), sent, true);
        }
    }

    fn parts_status(&self) {
        *self.state.status.lock().expect("status") =
            format!("parts {}/{}", self.parts_done.load(Ordering::Relaxed), self.parts.load(Ordering::Relaxed));
    }

    /// A line about this file: above the bars, or on its own.
    fn say(&self, message: &str) {
        let line = match self.name().as_str() {
            "" => format!("upload: {message}"),
            name => format!("upload: {name}: {message}"),
        };
        match self.mode {
            Mode::Bars => self.bar.println(line),
            Mode::Lines => eprintln!("{line}"),
            Mode::Hidden => {}
        }
    }

    fn add_sent(&self, delta: i64) {
        self.state.sent.fetch_add(delta, Ordering::Relaxed);
        self.run_sent.fetch_add(delta, Ordering::Relaxed);
        if let Some((bar, total)) = &self.total_bar {
            total.sent.fetch_add(delta, Ordering::Relaxed);
            bar.tick();
        }
    }
}

impl Progress for FileProgress {
    fn event(&self, event: Event) {
        match event {
            Event::Started { file, total_bytes, parts, done_bytes, done_parts } => {
                // A transfer started again (the journal's upload was gone): its earlier bytes
                // no longer count on the bars.
                let earlier = self.state.sent.swap(0, Ordering::Relaxed);
                if let Some((_, total)) = &self.total_bar {
                    total.sent.fetch_sub(earlier, Ordering::Relaxed);
                    let before = self.counted_base.swap(done_bytes, Ordering::Relaxed);
                    total.base.fetch_add(done_bytes, Ordering::Relaxed);
                    total.base.fetch_sub(before, Ordering::Relaxed);
                    if !total.started.swap(true, Ordering::Relaxed) {
                        total.start_clock();
                    }
                }
                self.state.total.store(total_bytes, Ordering::Relaxed);
                self.state.base.store(done_bytes, Ordering::Relaxed);
                self.parts.store(parts, Ordering::Relaxed);
                self.parts_done.store(done_parts, Ordering::Relaxed);
                *self.state.name.lock().expect("lock") = file;
                self.state.started.store(true, Ordering::Relaxed);
                self.state.start_clock();
                self.parts_status();
                self.bar.set_length(total_bytes);
                self.bar.set_position(done_bytes);
                self.line(Line::Start);
            }
            Event::Bytes { delta, .. } => {
                self.add_sent(delta);
                self.bar.set_position(self.sent());
                self.line(Line::Progress);
            }
            Event::PartDone { .. } => {
                self.parts_done.fetch_add(1, Ordering::Relaxed);
                self.parts_status();
            }
            Event::Retry { part, attempt, reason, delay } => {
                // Named: in a run of several files, which one.
                let what = if part == 0 { "request".to_string() } else { format!("part {part}") };
                self.say(&format!(
                    "{what}: attempt {attempt} failed: {reason}; retrying in {}",
                    crate::size::human_duration(delay)
                ));
            }
            Event::Phase { message } => match self.mode {
                Mode::Bars => *self.state.status.lock().expect("status") = message,
                _ => self.say(&message),
            },
            Event::Notice { message } => self.say(&message),
            Event::Finished => {
                self.line(Line::End);
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
pub(crate) struct Board {
    mode: Mode,
    multi: Option<indicatif::MultiProgress>,
    /// The terminal's owner while this board is drawn (see the module documentation).
    owner: Mutex<Option<Owner>>,
    /// This board among the boards of the process.
    id: u64,
    total: Option<(ProgressBar, Arc<BarState>)>,
    rate: RateLimit,
    several: bool,
    sent: Arc<AtomicI64>,
}

impl Board {
    /// A board in the given mode.
    pub(crate) fn new(mode: Mode) -> Self {
        static BOARDS: AtomicU64 = AtomicU64::new(0);
        let id = BOARDS.fetch_add(1, Ordering::Relaxed);
        let mut owner = None;
        let multi = (mode == Mode::Bars).then(|| {
            let target = if std::io::stderr().is_terminal() {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::term_like(Box::new(ForcedTerm))
            };
            let multi = indicatif::MultiProgress::with_draw_target(target);
            let (o, tx) = Owner::start(&multi);
            owner = Some(o);
            if let Ok(mut a) = ACTIVE.lock() {
                *a = Some(Active { board: id, multi: multi.clone(), owner: tx });
            }
            multi
        });
        Board {
            mode,
            multi,
            owner: Mutex::new(owner),
            id,
            total: None,
            rate: RateLimit::off(),
            several: false,
            sent: Arc::default(),
        }
    }

    /// Shows the limit in force on every bar (and progress line) of the board.
    pub(crate) fn with_rate_limit(mut self, rate: &RateLimit) -> Self {
        self.rate = rate.clone();
        self
    }

    /// Adds a total bar for `files` files of `bytes` bytes (only when there are several).
    pub(crate) fn with_total(mut self, files: usize, bytes: u64) -> Self {
        self.several = files > 1;
        if let (Some(multi), true) = (&self.multi, files > 1) {
            let state = Arc::new(BarState { short_name: Some("total".into()), ..BarState::default() });
            *state.name.lock().expect("name") = format!("total ({files} files)");
            state.total.store(bytes, Ordering::Relaxed);
            let bar = multi.add(ProgressBar::new(bytes));
            bar.set_style(bar_style(state.clone(), self.rate.clone()));
            self.total = Some((bar, state));
        }
        self
    }

    /// Whether progress is drawn as bars.
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether the run has several files (see [`Board::with_total`]).
    pub(crate) fn several(&self) -> bool {
        self.several
    }

    /// Bytes sent by the run so far (resumed parts not counted).
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed).max(0) as u64
    }

    /// A bar for one more file.
    pub(crate) fn file(&self) -> FileProgress {
        self.file_named("")
    }

    /// A bar for one more file, named before its transfer starts.
    pub(crate) fn file_named(&self, name: &str) -> FileProgress {
        let state = Arc::new(BarState::default());
        *state.name.lock().expect("name") = name.to_string();
        let bar = match &self.multi {
            Some(multi) => {
                let b = match &self.total {
                    Some((total, _)) => multi.insert_before(total, ProgressBar::new(0)),
                    None => multi.add(ProgressBar::new(0)),
                };
                b.set_style(bar_style(state.clone(), self.rate.clone()));
                b.enable_steady_tick(Duration::from_millis(200));
                b
            }
            None => ProgressBar::hidden(),
        };
        FileProgress {
            mode: self.mode,
            bar,
            state,
            total_bar: self.total.clone(),
            run_sent: self.sent.clone(),
            counted_base: 0.into(),
            parts: 0.into(),
            parts_done: 0.into(),
            last_line: Mutex::new((Instant::now(), 0, false)),
            rate: self.rate.clone(),
            own_board: None,
        }
    }

    /// Prints a line above the bars (through the terminal's owner), or plainly.
    pub(crate) fn println(&self, line: &str) {
        if self.multi.is_none() {
            eprintln!("{line}");
        } else if let Err(line) = to_owner(line.to_string()) {
            match &self.multi {
                Some(m) => {
                    let _ = m.println(line);
                }
                None => eprintln!("{line}"),
            }
        }
    }

    /// Prints `upload: error: ...` and the hint, above the bars (or plainly).
    /// One print, so that no bar is drawn between the error and its hint.
    pub(crate) fn report_error(&self, err: &crate::Error) {
        let mut text = format!("upload: {} {err}", paint("error:", "31"));
        if let Some(h) = crate::cli::report::hint(err)
            && !h.is_empty()
        {
            text.push_str(&format!("\n  hint: {h}"));
        }
        self.println(&text);
    }

    /// Takes the bars off the screen, once (before the summary).
    pub(crate) fn finish(&self) {
        if let Some((t, _)) = &self.total {
            t.finish_and_clear();
        }
        if let Some(m) = &self.multi {
            // The lines handed to the owner come out first (its sender goes with ACTIVE), then
            // the board goes.
            if let Ok(mut a) = ACTIVE.lock()
                && a.as_ref().is_some_and(|active| active.board == self.id)
            {
                *a = None;
            }
            if let Some(mut owner) = self.owner.lock().ok().and_then(|mut o| o.take()) {
                owner.finish();
            }
            let _ = m.clear();
        }
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A terminal stand-in for `UPLOAD_FORCE_TTY=1` (tests check that bars are drawn), `COLUMNS`
/// wide.
#[derive(Debug)]
struct ForcedTerm;

impl indicatif::TermLike for ForcedTerm {
    fn width(&self) -> u16 {
        term_width().min(u16::MAX as usize) as u16
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

/// What a provider calls one upload.
fn noun(provider: &str) -> &'static str {
    match provider {
        "teleport" => "capture",
        "uplift" => "session",
        "apertur" => "image",
        _ => "upload",
    }
}

/// The one line of a file finished in a run of several on a terminal:
/// `✓ a.mp4  100.00 MiB  2.1 s  teleport capture 1234 (UPLOADED)  crc64nvme rosUhgp5mIg=`, the
/// path shortened to fit `width`, its directory first: the name tells the files apart; the
/// receipt only where it fits beside the whole path (it is in the `--json` line and in the
/// result of a single file in any case).
pub(crate) fn finished_line(outcome: &UploadOutcome, width: usize) -> String {
    let mut rest = format!(
        "  {}  {:.1} s  {} {} {} ({})",
        crate::size::human(outcome.bytes),
        outcome.elapsed_s,
        outcome.provider,
        noun(outcome.provider),
        outcome.id,
        outcome.status
    );
    if let Some(crc) = &outcome.crc64nvme {
        let with = format!("{rest}  crc64nvme {crc}");
        if 1 + 2 + outcome.file.chars().count() + with.chars().count() <= width {
            rest = with;
        }
    }
    let room = width.saturating_sub(1 + 2 + rest.chars().count()).max(12);
    format!("{} {}{rest}", paint("✓", "32"), shorten_path(&outcome.file, room))
}

/// Prints one result: a JSON line, or a few human lines.
pub(crate) fn print_outcome(out: &mut dyn Write, outcome: &UploadOutcome, json: bool) -> std::io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, outcome)?;
        writeln!(out)?;
    } else {
        // `1 part`, `3 images`; the rate when the time says something.
        let unit = if outcome.provider == "apertur" { "image" } else { "part" };
        let plural = if outcome.parts == 1 { "" } else { "s" };
        let rate = if outcome.elapsed_s >= 0.05 {
            format!(", {}/s", crate::size::human((outcome.bytes as f64 / outcome.elapsed_s) as u64))
        } else {
            String::new()
        };
        writeln!(
            out,
            "{} → {}: {} ({}, {} {unit}{plural}, {:.1} s{rate})",
            outcome.file,
            outcome.provider,
            outcome.status,
            crate::size::human(outcome.bytes),
            outcome.parts,
            outcome.elapsed_s
        )?;
        writeln!(out, "  id: {}", outcome.id)?;
        if let Some(crc) = &outcome.crc64nvme {
            writeln!(out, "  crc64nvme: {crc}")?;
        }
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
pub(crate) fn print_dry_run(out: &mut dyn Write, plan: &DryRun, json: bool) -> std::io::Result<()> {
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
pub(crate) struct Summary {
    uploaded: u32,
    failed: u32,
    skipped: u32,
    interrupted: u32,
    not_started: u32,
    stopped: u32,
    bytes: u64,
    worst: i32,
    interruption: Option<String>,
}

impl Summary {
    /// A file was uploaded.
    pub(crate) fn uploaded(&mut self, bytes: u64) {
        self.uploaded += 1;
        self.bytes += bytes;
    }
    /// A file was skipped (already uploaded).
    pub(crate) fn skipped(&mut self) {
        self.skipped += 1;
    }
    /// A file failed with this exit code.
    pub(crate) fn failed(&mut self, code: i32) {
        self.failed += 1;
        self.worst = self.worst.max(code);
    }
    /// A file's upload was interrupted (Ctrl-C): `hint` says how to carry on (the first one
    /// is kept).
    pub(crate) fn interrupted(&mut self, code: i32, hint: Option<&str>) {
        self.interrupted += 1;
        self.worst = self.worst.max(code);
        if self.interruption.is_none() {
            self.interruption = Some(hint.unwrap_or("").to_string());
        }
    }
    /// A file was not started: the run was interrupted first.
    pub(crate) fn not_started(&mut self) {
        self.not_started += 1;
        self.worst = self.worst.max(crate::cli::report::exit::INTERRUPTED);
        if self.interruption.is_none() {
            self.interruption = Some("run the same command again to resume".into());
        }
    }
    /// A file was stopped (or not started) at the run's time limit.
    pub(crate) fn stopped(&mut self) {
        self.stopped += 1;
        self.worst = self.worst.max(crate::cli::report::exit::STOPPED);
    }
    /// How many files the time limit stopped.
    pub(crate) fn stopped_files(&self) -> u32 {
        self.stopped
    }
    /// How to carry on an interrupted run, if it was.
    pub(crate) fn interruption(&self) -> Option<&str> {
        self.interruption.as_deref()
    }
    /// The exit code of the run: the worst outcome.
    pub(crate) fn exit_code(&self) -> i32 {
        self.worst
    }
    /// The line: `3 uploaded, 0 skipped, 1 failed[, 2 interrupted, 5 not started]; 300.00 MiB
    /// in 6.4 s (46.88 MiB/s)`; `sent` is the bytes sent by this run, the rate's numerator
    /// (named when it differs from the bytes of the files uploaded: resumed, interrupted).
    pub(crate) fn line(&self, elapsed: Duration, sent: u64, colour: bool) -> String {
        let failed = format!("{} failed", self.failed);
        let failed = if colour && self.failed > 0 { format!("\x1b[31m{failed}\x1b[0m") } else { failed };
        let mut line = format!("{} uploaded, {} skipped, {failed}", self.uploaded, self.skipped);
        if self.interrupted > 0 {
            line.push_str(&format!(", {} interrupted", self.interrupted));
        }
        if self.not_started > 0 {
            line.push_str(&format!(", {} not started", self.not_started));
        }
        if self.stopped > 0 {
            line.push_str(&format!(", {} stopped at the time limit", self.stopped));
        }
        let secs = elapsed.as_secs_f64();
        line.push_str(&format!("; {} in {secs:.1} s", crate::size::human(self.bytes)));
        if sent > 0 && secs > 0.0 {
            let rate = format!("{}/s", crate::size::human((sent as f64 / secs) as u64));
            if sent == self.bytes {
                line.push_str(&format!(" ({rate})"));
            } else {
                line.push_str(&format!(" ({} sent, {rate})", crate::size::human(sent)));
            }
        }
        line
    }
    /// The line on stderr (with `--quiet`, only when something failed or was interrupted).
    pub(crate) fn print(&self, elapsed: Duration, sent: u64, quiet: bool) {
        if quiet && self.failed == 0 && self.interrupted == 0 && self.not_started == 0 && self.stopped == 0 {
            return;
        }
        eprintln!("upload: {}", self.line(elapsed, sent, color()));
    }
}

/// The fields of the JSON line of a file that was not uploaded (`status`: failed, skipped,
/// not_started).
fn not_uploaded_json(provider: &str, file: &std::path::Path, status: &str, elapsed: Duration) -> serde_json::Value {
    let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    serde_json::json!({
        "provider": provider,
        "file": file.display().to_string(),
        "bytes": bytes,
        "id": null,
        "status": status,
        "parts": 0,
        "elapsed_s": elapsed.as_secs_f64(),
    })
}

/// The JSON line of a file that failed.
pub(crate) fn failure_json(
    provider: &str,
    file: &std::path::Path,
    err: &crate::Error,
    elapsed: Duration,
) -> serde_json::Value {
    let mut line = not_uploaded_json(provider, file, "failed", elapsed);
    line["error"] = err.to_string().into();
    line["exit_code"] = crate::cli::report::exit_code(err).into();
    line
}

/// The JSON line of a file skipped because the provider cannot take it (found in a walked
/// directory) or because it was already uploaded: `reason` says why.
pub(crate) fn skipped_json(provider: &str, file: &std::path::Path, reason: &str) -> serde_json::Value {
    let mut line = not_uploaded_json(provider, file, "skipped", Duration::ZERO);
    line["reason"] = reason.into();
    line
}

/// The JSON line of a file not started: the run was interrupted before it.
pub(crate) fn not_started_json(provider: &str, file: &std::path::Path) -> serde_json::Value {
    let mut line = not_uploaded_json(provider, file, "not_started", Duration::ZERO);
    line["reason"] = "the run was interrupted before this file was started".into();
    line
}

/// The JSON line of a file the run's time limit stopped (or did not let start): `status`
/// `stopped`, `exit_code` 9, `reason`; its journal is kept, so the same command carries on.
pub(crate) fn stopped_json(
    provider: &str,
    file: &std::path::Path,
    err: &crate::Error,
    elapsed: Duration,
) -> serde_json::Value {
    let mut line = not_uploaded_json(provider, file, "stopped", elapsed);
    let started = matches!(err, crate::Error::Stopped { started: true });
    line["reason"] = if started {
        "the time limit was reached before this file finished; its journal is kept"
    } else {
        "the time limit was reached before this file was started"
    }
    .into();
    line["exit_code"] = crate::cli::report::exit_code(err).into();
    line
}

/// Writes one JSON value on one line.
pub(crate) fn print_json_line(out: &mut dyn Write, value: &serde_json::Value) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn plain(s: &str) -> String {
        console::strip_ansi_codes(s).into_owned()
    }

    fn busy() -> Fields {
        Fields {
            name: "walkaround-of-the-workshop-2026-12-01-éàü-final.mp4".into(),
            pos: 1530 * MIB,
            total: Some(4000 * MIB),
            rate: Some(46.7 * MIB as f64),
            eta: Some(Duration::from_secs(125)),
            status: "parts 120/313".into(),
            limit: Some("limit 50.00 MiB/s".into()),
            short_name: None,
        }
    }

    #[test]
    fn paths_are_shortened_in_the_directory_before_the_name() {
        assert_eq!(shorten_path("/a/b.mp4", 20), "/a/b.mp4");
        let p = "/home/someone/captures/site-2026/lobby.mp4";
        for max in 4..p.len() {
            let s = shorten_path(p, max);
            assert!(s.chars().count() <= max, "{max}: {s}");
            if max >= "…/lobby.mp4".len() - 2 {
                assert!(s.ends_with("/lobby.mp4"), "{max}: {s}");
            }
        }
        assert_eq!(shorten_path(p, 24), "/home/s…e-2026/lobby.mp4");
        assert_eq!(shorten_path(p, 11), "…/lobby.mp4");
        assert_eq!(shorten_path("/d/a-very-long-file-name.mp4", 12), "…/a-ver….mp4");
        assert_eq!(shorten_path("no-directory-at-all.mp4", 10), "no-di….mp4");
    }

    #[test]
    fn names_are_cut_in_the_middle_on_character_boundaries() {
        assert_eq!(truncate_middle("very-long-name-of-a-file.mp4", 21), "very-long-…a-file.mp4");
        assert_eq!(truncate_middle("short.mp4", 21), "short.mp4");
        let cut = truncate_middle("ééééééééééééééééé.mp4", 9);
        assert_eq!(cut, "éééé….mp4");
        assert_eq!(cut.chars().count(), 9);
        assert_eq!(truncate_middle("日本語のとても長いファイル名.mov", 7), "日本語…mov");
    }

    #[test]
    fn lines_fit_every_width_from_40_columns_and_drop_eta_then_rate() {
        for colour in [false, true] {
            for width in 40..=200 {
                let line = layout(&busy(), width, colour);
                let shown = plain(&line);
                assert!(shown.chars().count() < width, "{width}: {shown:?} ({} chars)", shown.chars().count());
                assert!(shown.contains("1.49 GiB/3.91 GiB"), "{width}: the bytes are always shown: {shown:?}");
                assert!(shown.contains('…'), "{width}: the long name is cut in the middle: {shown:?}");
            }
        }
        let wide = layout(&busy(), 160, false);
        for field in ["46.70 MiB/s", "ETA 2m05s", "parts 120/313", "limit 50.00 MiB/s", "[=========="] {
            assert!(wide.contains(field), "{field} in {wide:?}");
        }
        let at80 = layout(&busy(), 80, false);
        assert!(at80.contains("46.70 MiB/s") && at80.contains("ETA"), "80 columns keep the rate and ETA: {at80:?}");
        assert!(!at80.contains("parts"), "the part count goes first: {at80:?}");
        let at50 = layout(&busy(), 50, false);
        assert!(!at50.contains("parts") && at50.contains("1.49 GiB/3.91 GiB"), "50 columns: {at50:?}");
        // A phase is kept over the rate.
        let phase = Fields { status: "completing".into(), ..busy() };
        assert!(layout(&phase, 80, false).contains("completing"), "{}", layout(&phase, 80, false));
        let total = Fields { name: "total (20 files)".into(), short_name: Some("total".into()), ..busy() };
        assert!(layout(&total, 40, false).starts_with("total  "), "{}", layout(&total, 40, false));
        assert!(layout(&total, 100, false).starts_with("total (20 files) "), "{}", layout(&total, 100, false));
        let at40 = layout(&busy(), 40, false);
        assert!(!at40.contains("ETA") && !at40.contains("MiB/s"), "40 columns drop the ETA and the rate: {at40:?}");
        // The bar starts in the same column on every line of a width (lines stay aligned).
        let other = Fields { name: "a.mp4".into(), status: String::new(), limit: None, ..busy() };
        let bar_at = |f: &Fields, width| layout(f, width, false).chars().position(|c| c == '[');
        for width in [60, 80, 100, 140] {
            assert_eq!(bar_at(&busy(), width), bar_at(&other, width), "{width}");
        }
    }

    #[test]
    fn columns_go_in_order_and_a_phase_is_cut_only_once_the_bar_is_down_to_ten() {
        let phase = "PROCESSING: Training the 3D model";
        let f = Fields { status: phase.into(), ..busy() };
        let p = Pieces {
            bytes: "1.49 GiB/3.91 GiB".into(),
            rate: Some("46.70 MiB/s".into()),
            eta: Some("ETA 2m05s".into()),
        };
        let wide = Columns::fit(200, &f, &p);
        assert!(wide.limit && wide.eta && wide.rate && wide.status == phase.len() && wide.bar == BAR, "{wide:?}");
        let mut cut = false;
        for w in (10..200).rev() {
            let c = Columns::fit(w, &f, &p);
            if c.name > 8 {
                assert!(c.len(&f, &p) <= w, "{w}: {c:?}");
            }
            assert!(!c.limit || (c.eta && c.rate), "{w}: the limit goes first: {c:?}");
            assert!(!c.eta || c.rate, "{w}: the ETA goes before the rate: {c:?}");
            if c.status < phase.len() {
                assert!(!c.rate && c.bar <= 10, "{w}: the phase is cut last: {c:?}");
                cut = true;
            }
        }
        assert!(cut, "narrow lines cut the phase");
        assert_eq!(Columns::fit(10, &f, &p).status, 0, "a phase cut below 6 characters goes");
    }

    #[test]
    fn a_line_before_the_transfer_shows_the_name_and_the_status() {
        let f = Fields { name: "a.zip".into(), total: None, status: "CRC-32: 40% (4 of 10 MiB)".into(), ..busy() };
        let line = layout(&f, 80, false);
        assert!(line.starts_with("a.zip ") && line.ends_with("CRC-32: 40% (4 of 10 MiB)"), "{line:?}");
        assert!(!line.contains("0 B/0 B"), "{line:?}");
        assert!(layout(&f, 20, false).chars().count() < 20);
    }

    #[test]
    fn the_rate_clock_counts_only_this_runs_bytes() {
        let t0 = Instant::now();
        let mut clock = RateClock::default();
        // A resumed upload: 782 MiB were on the server; this run starts its clock at 0 sent.
        clock.start(t0, 0);
        assert_eq!(clock.rate(t0 + Duration::from_millis(300), 3 * MIB), None, "too early to tell");
        let mut sent = 3 * MIB;
        let mut rates = vec![];
        for i in 1..=80 {
            sent += 5 * MIB / 4; // 5 MiB/s in steps of 250 ms
            rates.extend(clock.rate(t0 + Duration::from_millis(300 + 250 * i), sent));
        }
        assert!(rates.len() >= 77, "a rate from the first second on: {}", rates.len());
        for r in &rates {
            assert!(*r < 20.0 * MIB as f64, "{} MiB/s", r / MIB as f64);
        }
        let last = rates.last().unwrap() / MIB as f64;
        assert!((4.5..5.5).contains(&last), "{last} MiB/s over the last seconds");
        // A stall shows within the window.
        let later = clock.rate(t0 + Duration::from_secs(40), sent).unwrap();
        assert!(later < 0.5 * MIB as f64, "{later}");
    }

    #[test]
    fn the_summary_gives_the_throughput_of_the_bytes_sent() {
        let mut s = Summary::default();
        for _ in 0..20 {
            s.uploaded(50 * MIB);
        }
        let line = s.line(Duration::from_secs_f64(21.4), 1000 * MIB, false);
        assert_eq!(line, "20 uploaded, 0 skipped, 0 failed; 1000.00 MiB in 21.4 s (46.73 MiB/s)");
        let mut s = Summary::default();
        s.uploaded(100 * MIB);
        s.interrupted(130, Some("run the same command again to resume"));
        s.not_started();
        s.not_started();
        let line = s.line(Duration::from_secs(10), 40 * MIB, false);
        assert_eq!(
            line,
            "1 uploaded, 0 skipped, 0 failed, 1 interrupted, 2 not started; 100.00 MiB in 10.0 s (40.00 MiB sent, 4.00 MiB/s)"
        );
        assert_eq!(s.exit_code(), 130);
        assert_eq!(s.interruption(), Some("run the same command again to resume"));
        let nothing_sent = Summary::default().line(Duration::from_secs(1), 0, false);
        assert_eq!(nothing_sent, "0 uploaded, 0 skipped, 0 failed; 0 B in 1.0 s");
    }
}
