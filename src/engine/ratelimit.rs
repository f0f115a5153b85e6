//! The run's bandwidth limit (`--limit-rate`): one token bucket shared by every part, file and
//! connection of a run, uploads and downloads alike, optionally following a weekly schedule.
//!
//! Contract:
//! - one [`RateLimit`] per run, cloned into everything that produces or consumes body bytes
//!   (the part streams, the POST form body, Apertur's images, downloads); clones share the
//!   bucket, so the total of all of them stays at the limit;
//! - the bucket is fed continuously and holds at most [`RateLimit::chunk`] bytes of credit
//!   (about 50 ms of the rate, between 1 KiB and 256 KiB), so bursts stay small and the rate
//!   measured over any few seconds is the limit, at any concurrency;
//! - bytes are granted in pieces of at most one chunk; a caller reserves its piece and sleeps
//!   until the bucket has paid for it (never holding a lock across the sleep). Reservations are
//!   served in the order they were made;
//! - `off` (and no limit at all) is [`RateLimit::off`]: callers test [`RateLimit::is_limited`]
//!   once and then take no lock and await nothing per piece;
//! - a schedule ([`Schedule`]) is evaluated against the local wall clock ([`Clock`]), at each
//!   entry's time and at least every second (so a clock jump or a DST change is noticed
//!   quickly); a change applies to the transfers in flight at once, without restarting them,
//!   and is logged at info level (`-v`), after the bucket's lock is released: nothing logs
//!   while holding it (a progress bar's drawing asks the rate in force under its own lock).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Datelike, NaiveDateTime, Timelike};
use tokio::time::Instant;

/// Largest piece granted at once (and the most credit the bucket holds).
pub const MAX_CHUNK: u64 = 256 * 1024;
/// Smallest piece granted at once.
pub const MIN_CHUNK: u64 = 1024;
/// Minutes in a week.
const WEEK: u32 = 7 * 24 * 60;

/// A rate in bytes per second, or `None` for no limit.
pub type Rate = Option<u64>;

/// Formats a rate for people: `10.00 MiB/s`, `off`.
pub fn human_rate(rate: Rate) -> String {
    match rate {
        Some(r) => format!("{}/s", crate::size::human(r)),
        None => "off".into(),
    }
}

/// One `[Day-]HH:MM,RATE` entry of a schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// Minute of the week it starts at (Monday 00:00 = 0).
    at: u32,
    rate: Rate,
}

/// `--limit-rate`: one rate, or a weekly timetable as rclone's `--bwlimit` takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Sorted by `at`; one entry at minute 0 for a constant rate.
    entries: Vec<Entry>,
    /// Whether it is a timetable (rather than a single rate).
    timed: bool,
    /// The text it was parsed from.
    text: String,
}

fn parse_rate(text: &str) -> Result<Rate, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    if t.contains(':') {
        return Err(format!("'{t}': separate upload:download rates are not supported; one rate applies to both"));
    }
    let t = t.strip_suffix("/s").unwrap_or(t);
    let bytes = crate::size::parse_size(t)?;
    if bytes == 0 {
        return Err(format!("'{text}' is a rate of 0: use off for no limit"));
    }
    // Below 1 KiB/s a part of a few MiB takes hours: a typo (`500` for `500k`) more likely
    // than a wish.
    if bytes < 1024 {
        return Err(format!("'{}' is below 1KiB/s, the lowest limit taken: give at least 1KiB, or off", text.trim()));
    }
    Ok(Some(bytes))
}

fn parse_weekday(text: &str) -> Option<u32> {
    let t = text.to_ascii_lowercase();
    let days = [
        ["mon", "monday"],
        ["tue", "tuesday"],
        ["wed", "wednesday"],
        ["thu", "thursday"],
        ["fri", "friday"],
        ["sat", "saturday"],
        ["sun", "sunday"],
    ];
    days.iter().position(|d| d.contains(&t.as_str())).map(|i| i as u32)
}

fn parse_hhmm(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 || !h.chars().chain(m.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

fn minute_name(at: u32) -> String {
    format!("{}-{:02}:{:02}", DAY_NAMES[(at / 1440) as usize], at % 1440 / 60, at % 60)
}

impl Schedule {
    /// Parses `20MiB`, `8M`, `off`, or a timetable `"08:00,4MiB 12:00,10MiB 18:00,off"`
    /// (entries separated by spaces or `;`, each `HH:MM,RATE` for every day or
    /// `Day-HH:MM,RATE` with `Mon`..`Sun` or the full day name). The error names the
    /// offending entry.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("the rate is empty: give e.g. 10MiB, off, or \"08:00,4MiB 18:00,off\"".into());
        }
        if !trimmed.contains(',') {
            if trimmed.contains([' ', ';']) {
                return Err(format!("'{trimmed}' is neither a rate nor a timetable: timetable entries are HH:MM,RATE"));
            }
            let rate = parse_rate(trimmed)?;
            return Ok(Schedule { entries: vec![Entry { at: 0, rate }], timed: false, text: trimmed.into() });
        }
        let mut entries: Vec<(Entry, String)> = vec![];
        for token in trimmed.split([' ', ';']).filter(|t| !t.is_empty()) {
            let bad = |why: String| format!("timetable entry '{token}': {why}");
            let Some((when, rate)) = token.split_once(',') else {
                return Err(bad("expected [Day-]HH:MM,RATE, e.g. 08:00,4MiB or Mon-08:00,off".into()));
            };
            let rate = parse_rate(rate).map_err(bad)?;
            let (days, hhmm) = match when.split_once('-') {
                Some((day, hhmm)) => {
                    let d = parse_weekday(day).ok_or_else(|| {
                        bad(format!("'{day}' is not a day of the week (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
                    })?;
                    (d..d + 1, hhmm)
                }
                None => (0..7, when),
            };
            let minute = parse_hhmm(hhmm)
                .ok_or_else(|| bad(format!("'{hhmm}' is not a time of day HH:MM between 00:00 and 23:59")))?;
            for day in days {
                let at = day * 1440 + minute;
                if let Some((_, other)) = entries.iter().find(|(e, _)| e.at == at) {
                    return Err(bad(format!("{} is already set by '{other}'", minute_name(at))));
                }
                entries.push((Entry { at, rate }, token.to_string()));
            }
        }
        let mut entries: Vec<Entry> = entries.into_iter().map(|(e, _)| e).collect();
        entries.sort_by_key(|e| e.at);
        Ok(Schedule { entries, timed: true, text: trimmed.into() })
    }

    /// No limit.
    pub fn off() -> Schedule {
        Schedule { entries: vec![Entry { at: 0, rate: None }], timed: false, text: "off".into() }
    }

    /// One constant rate (bytes per second).
    pub fn constant(bytes_per_second: u64) -> Schedule {
        Schedule {
            entries: vec![Entry { at: 0, rate: Some(bytes_per_second.max(1)) }],
            timed: false,
            text: bytes_per_second.to_string(),
        }
    }

    /// Whether it never limits anything.
    pub fn is_off(&self) -> bool {
        self.entries.iter().all(|e| e.rate.is_none())
    }

    /// Whether it is a timetable.
    pub fn is_timed(&self) -> bool {
        self.timed
    }

    /// The text it was parsed from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The lowest rate it ever sets (`None` when it never limits).
    pub fn min_rate(&self) -> Rate {
        self.entries.iter().filter_map(|e| e.rate).min()
    }

    /// The rate in force at local time `t`, and how long until the next entry starts
    /// (`None` for a single rate).
    pub fn rate_at(&self, t: NaiveDateTime) -> (Rate, Option<Duration>) {
        if !self.timed {
            return (self.entries[0].rate, None);
        }
        let minute = t.weekday().num_days_from_monday() * 1440 + t.hour() * 60 + t.minute();
        // The latest entry at or before now; before the week's first one, last week's last one.
        let current =
            self.entries.iter().rev().find(|e| e.at <= minute).unwrap_or(&self.entries[self.entries.len() - 1]);
        let next = self.entries.iter().find(|e| e.at > minute).map_or(self.entries[0].at + WEEK, |e| e.at);
        let into_minute =
            Duration::from_secs(t.second() as u64) + Duration::from_nanos(t.nanosecond() as u64 % 1_000_000_000);
        let until = Duration::from_secs((next - minute) as u64 * 60).saturating_sub(into_minute);
        (current.rate, Some(until))
    }
}

/// The local wall clock a schedule is read against.
pub trait Clock: Send + Sync {
    /// The local date and time now.
    fn local_now(&self) -> NaiveDateTime;
}

/// The system's local time.
pub struct SystemClock;

impl Clock for SystemClock {
    fn local_now(&self) -> NaiveDateTime {
        chrono::Local::now().naive_local()
    }
}

/// A clock that starts at a given local time and runs with the monotonic clock (tests, and the
/// hidden `UPLOAD_FAKE_LOCAL_TIME` variable of the binary).
pub struct OffsetClock {
    start: NaiveDateTime,
    at: Instant,
}

impl OffsetClock {
    /// A clock reading `start` now.
    pub fn starting_at(start: NaiveDateTime) -> Self {
        OffsetClock { start, at: Instant::now() }
    }
}

impl Clock for OffsetClock {
    fn local_now(&self) -> NaiveDateTime {
        self.start + self.at.elapsed()
    }
}

struct State {
    /// Rate in force.
    rate: Rate,
    /// The instant every byte reserved so far is paid for (the bucket is empty then).
    paid_until: Instant,
    /// When to read the schedule again.
    next_check: Instant,
    /// Whether the schedule was read once.
    evaluated: bool,
}

struct Bucket {
    schedule: Schedule,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

/// The shared bucket of a run; cheap to clone (clones share it). The default is no limit.
#[derive(Clone, Default)]
pub struct RateLimit(Option<Arc<Bucket>>);

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("RateLimit(off)"),
            Some(b) => write!(f, "RateLimit({})", b.schedule.text),
        }
    }
}

/// The piece size (and burst) for `rate`: 50 ms of it, within [`MIN_CHUNK`]..=[`MAX_CHUNK`].
fn chunk_for(rate: u64) -> u64 {
    (rate / 20).clamp(MIN_CHUNK, MAX_CHUNK)
}

fn secs(bytes: u64, rate: u64) -> Duration {
    Duration::from_secs_f64(bytes as f64 / rate as f64)
}

impl RateLimit {
    /// No limit: callers skip the bucket entirely.
    pub fn off() -> Self {
        RateLimit(None)
    }

    /// A bucket following `schedule` on the system's local time (no limit when it is off).
    pub fn new(schedule: Schedule) -> Self {
        Self::with_clock(schedule, Arc::new(SystemClock))
    }

    /// A bucket following `schedule` on `clock`.
    pub fn with_clock(schedule: Schedule, clock: Arc<dyn Clock>) -> Self {
        if schedule.is_off() {
            return RateLimit(None);
        }
        let now = Instant::now();
        RateLimit(Some(Arc::new(Bucket {
            schedule,
            clock,
            state: Mutex::new(State { rate: None, paid_until: now, next_check: now, evaluated: false }),
        })))
    }

    /// Whether a limit is configured (a schedule may still be `off` at the moment).
    pub fn is_limited(&self) -> bool {
        self.0.is_some()
    }

    /// The schedule, when a limit is configured.
    pub fn schedule(&self) -> Option<&Schedule> {
        self.0.as_ref().map(|b| &b.schedule)
    }

    /// The lowest rate the limit ever sets (for generous request timeouts).
    pub fn min_rate(&self) -> Rate {
        self.0.as_ref().and_then(|b| b.schedule.min_rate())
    }

    /// The rate in force now (`None`: no limit now).
    pub fn current(&self) -> Rate {
        let Some(b) = &self.0 else { return None };
        let (rate, change) = {
            let mut s = b.state.lock().expect("rate limit lock");
            let change = b.refresh(&mut s, Instant::now());
            (s.rate, change)
        };
        log_change(change);
        rate
    }

    /// Waits until up to `want` bytes may go, and returns how many (at least 1 when `want` is
    /// not 0, at most one chunk of the rate in force).
    pub async fn take(&self, want: u64) -> u64 {
        let Some(b) = &self.0 else { return want };
        if want == 0 {
            return 0;
        }
        let (granted, wait, change) = {
            let mut s = b.state.lock().expect("rate limit lock");
            let now = Instant::now();
            let change = b.refresh(&mut s, now);
            match s.rate {
                None => (want, Duration::ZERO, change),
                Some(rate) => {
                    let chunk = chunk_for(rate);
                    let n = want.min(chunk);
                    // At most one chunk of credit: an idle bucket does not save up a burst.
                    let floor = now.checked_sub(secs(chunk, rate)).unwrap_or(now);
                    s.paid_until = s.paid_until.max(floor) + secs(n, rate);
                    (n, s.paid_until.saturating_duration_since(now), change)
                }
            }
        };
        log_change(change);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        granted
    }

    /// Pays for `n` bytes (already received, or about to be sent in one piece), waiting as
    /// long as the rate requires.
    pub async fn consume(&self, mut n: u64) {
        if self.0.is_none() {
            return;
        }
        while n > 0 {
            n -= self.take(n).await;
        }
    }
}

/// Logs a change of the rate in force (see [`Bucket::refresh`]), with no lock held.
fn log_change(change: Option<String>) {
    if let Some(message) = change {
        tracing::info!("{message}");
    }
}

impl Bucket {
    /// Follows the schedule; returns the line to log when the rate in force changed (logged
    /// by the caller once the lock is released).
    fn refresh(&self, s: &mut State, now: Instant) -> Option<String> {
        if s.evaluated && now < s.next_check {
            return None;
        }
        let (rate, until) = self.schedule.rate_at(self.clock.local_now());
        s.next_check = match until {
            // At the next entry, and at least every second (clock jumps, DST).
            Some(until) => now + until.min(Duration::from_secs(1)),
            None => now + Duration::from_secs(86_400 * 365),
        };
        if s.evaluated && rate == s.rate {
            return None;
        }
        let first = !s.evaluated;
        s.evaluated = true;
        s.rate = rate;
        // A new rate starts from an empty bucket.
        s.paid_until = now;
        if self.schedule.timed {
            let next = until.map(|u| {
                let at = self.clock.local_now() + u + Duration::from_millis(500);
                format!(" until {}", at.format("%a %H:%M"))
            });
            Some(format!(
                "rate limit {}: {}{}",
                if first { "in force" } else { "changed" },
                human_rate(rate),
                next.unwrap_or_default()
            ))
        } else if first {
            Some(format!("rate limit: {}", human_rate(rate)))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn parses_rates_and_timetables() {
        assert_eq!(Schedule::parse("20MiB").unwrap().rate_at(at("2026-12-01 10:00:00")).0, Some(20 << 20));
        assert_eq!(Schedule::parse("8M").unwrap().min_rate(), Some(8 << 20));
        assert_eq!(Schedule::parse("5MB/s").unwrap().min_rate(), Some(5_000_000));
        assert!(Schedule::parse("off").unwrap().is_off());
        let s = Schedule::parse("08:00,4MiB 12:00,10MiB 18:00,off").unwrap();
        assert!(s.is_timed() && !s.is_off());
        assert_eq!(s.min_rate(), Some(4 << 20));
        // 2026-12-01 is a Tuesday.
        assert_eq!(s.rate_at(at("2026-12-01 07:59:00")), (None, Some(Duration::from_secs(60))));
        assert_eq!(s.rate_at(at("2026-12-01 08:00:00")).0, Some(4 << 20));
        assert_eq!(s.rate_at(at("2026-12-01 11:59:30")), (Some(4 << 20), Some(Duration::from_secs(30))));
        assert_eq!(s.rate_at(at("2026-12-01 12:00:00")).0, Some(10 << 20));
        assert_eq!(s.rate_at(at("2026-12-01 23:00:00")), (None, Some(Duration::from_secs(9 * 3600))));
        // Before the week's first entry: last week's last one.
        assert_eq!(s.rate_at(at("2026-11-30 00:30:00")).0, None);

        let w = Schedule::parse("Mon-08:00,1M Fri-18:00,off;sat-10:00,2M").unwrap();
        assert_eq!(w.rate_at(at("2026-12-01 10:00:00")).0, Some(1 << 20)); // Tuesday: Monday's
        assert_eq!(w.rate_at(at("2026-12-05 09:00:00")).0, None); // Saturday before 10:00
        assert_eq!(w.rate_at(at("2026-12-06 12:00:00")).0, Some(2 << 20)); // Sunday
        assert_eq!(w.rate_at(at("2026-11-30 07:00:00")).0, Some(2 << 20)); // Monday before 08:00
        // Sunday 23:00 → Monday 08:00 wraps over the week's end.
        assert_eq!(w.rate_at(at("2026-12-06 23:00:00")).1, Some(Duration::from_secs(9 * 3600)));
    }

    #[test]
    fn refuses_bad_entries_by_name() {
        for (text, needle) in [
            ("08:00,4MiB 25:00,off", "'25:00,off'"),
            ("08:00,4MiB 12:00", "'12:00'"),
            ("Mon-08:00,1M Xyz-09:00,2M", "'Xyz'"),
            ("08:00,4Mx", "'08:00,4Mx'"),
            ("08:00,0", "rate of 0"),
            ("500", "below 1KiB/s"),
            ("08:00,1000B 18:00,off", "'08:00,1000B'"),
            ("08:00,1M 08:00,2M", "already set"),
            ("10M:1M", "upload:download"),
            ("fast", "invalid size"),
            ("", "empty"),
            ("08:60,1M", "'08:60'"),
        ] {
            let e = Schedule::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn off_is_no_bucket() {
        assert!(!RateLimit::new(Schedule::off()).is_limited());
        assert!(!RateLimit::off().is_limited());
        assert!(RateLimit::new(Schedule::constant(1000)).is_limited());
    }

    #[tokio::test(start_paused = true)]
    async fn grants_the_rate_in_small_pieces() {
        let rate = 1 << 20;
        let limit = RateLimit::new(Schedule::constant(rate));
        let t0 = Instant::now();
        let mut total = 0;
        while total < 10 << 20 {
            let n = limit.take(1 << 20).await;
            assert!(n <= chunk_for(rate));
            total += n;
        }
        // 10 MiB at 1 MiB/s, less the one chunk of credit.
        let took = t0.elapsed().as_secs_f64();
        assert!((9.9..=10.05).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn shared_by_concurrent_takers() {
        let rate = 4 << 20;
        let limit = RateLimit::new(Schedule::constant(rate));
        let t0 = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let l = limit.clone();
            tasks.spawn(async move { l.consume(1 << 20).await });
        }
        while tasks.join_next().await.is_some() {}
        let took = t0.elapsed().as_secs_f64();
        assert!((7.9..=8.05).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn follows_the_schedule_on_an_injected_clock() {
        // Off until 08:00, then 1 MiB/s: starting at 07:59:58 the first 2 s are free.
        let clock = Arc::new(OffsetClock::starting_at(at("2026-12-01 07:59:58")));
        let limit = RateLimit::with_clock(Schedule::parse("08:00,1MiB 18:00,off").unwrap(), clock);
        assert_eq!(limit.current(), None);
        assert_eq!(limit.take(5 << 20).await, 5 << 20);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(limit.current(), Some(1 << 20));
        let t0 = Instant::now();
        limit.consume(3 << 20).await;
        let took = t0.elapsed().as_secs_f64();
        assert!((2.9..=3.05).contains(&took), "{took}");
    }
}
