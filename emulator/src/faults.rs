//! Fault decisions: which request fails and how. Pure state behind one mutex
//! ([`crate::state::Shared::faults`]); the servers ask it at the right moments.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Faults;

/// What to do with an object PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutFault {
    /// Store the part normally.
    None,
    /// Read the whole body, then answer this status (500 `InternalError`, 503 `SlowDown`...).
    Fail(u16),
    /// Read half the body, then drop the connection without answering.
    Reset,
}

/// What to do with a provider API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFault {
    None,
    /// 401 whatever the token.
    Unauthorized,
    /// 429 with `Retry-After`.
    Throttle,
}

/// A stall of the network, decided when a request arrives (see [`crate::Faults::hang`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// Accept the request, never answer; its body is not read.
    Hang,
    /// Carry the call out, send the head and half the body of its answer, then nothing.
    StallBody,
    /// Send the answer's body at this many bytes per second.
    Trickle(u64),
    /// Read the request body at this many bytes per second.
    TrickleRead(u64),
    /// Read the first 64 KiB of the request body, then nothing; never answer.
    StopReading,
}

/// One stall entry: its kind, the call it matches, how many more it stalls (`None`: all).
#[derive(Debug, Clone)]
struct StallRule {
    kind: Stall,
    call: String,
    left: Option<u32>,
}

/// Parses `[COUNT ]METHOD /path` (see [`crate::Faults::hang`]).
fn stall_rule(kind: Stall, entry: &str) -> StallRule {
    let entry = entry.trim();
    let (count, call) = match entry.split_once(' ') {
        Some((c, rest)) if c.eq_ignore_ascii_case("always") => (None, rest),
        Some((c, rest)) if c.chars().all(|ch| ch.is_ascii_digit()) => (Some(c.parse().unwrap_or(1)), rest),
        _ => (Some(1), entry),
    };
    StallRule { kind, call: call.trim().to_string(), left: count }
}

/// An S3 error an `s3_error` entry answers: status and code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    pub status: u16,
    pub code: String,
}

/// `[N:|always ]METHOD /path STATUS CODE` → (N, `None` for always; `METHOD /path`; the answer).
fn parse_s3_error(entry: &str) -> Option<(Option<u64>, String, S3Error)> {
    let entry = entry.trim();
    let (nth, rest) = if let Some(rest) = entry.strip_prefix("always ") {
        (None, rest.trim())
    } else {
        match entry.split_once(':') {
            Some((n, rest)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                (Some(n.parse::<u64>().ok()?.max(1)), rest.trim())
            }
            _ => (Some(1), entry),
        }
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    let [method, path, status, code] = words.as_slice() else { return None };
    Some((nth, format!("{method} {path}"), S3Error { status: status.parse().ok()?, code: code.to_string() }))
}

/// The faults in force, their RNG and their counters.
#[derive(Debug)]
pub struct FaultState {
    faults: Faults,
    rng: StdRng,
    puts: u64,
    api_calls: u64,
    completions: u32,
    model_downloads: u32,
    /// Entries of `lose_answer` already spent (one flag per entry).
    lost: Vec<bool>,
    stalls: Vec<StallRule>,
    /// Matching calls seen so far by each entry of `fake_answer`, then of `replace_answer`
    /// (`None` once spent).
    fake_seen: Vec<Option<u64>>,
    replace_seen: Vec<Option<u64>>,
    /// `corrupt_put` entries with what is left of their counts.
    corrupt: Vec<StallRule>,
    /// Matching calls seen so far by each entry of `s3_error` (`None` once spent).
    s3_error_seen: Vec<Option<u64>>,
}

/// An answer a `fake_answer` / `replace_answer` entry makes up: status and JSON body (`None`:
/// empty).
#[derive(Debug, Clone, PartialEq)]
pub struct MadeUp {
    pub status: u16,
    pub body: Option<serde_json::Value>,
}

/// `[N:]METHOD /path STATUS [BODY]` → (N, `METHOD /path`, the answer); `None` when malformed.
fn parse_made_up(entry: &str) -> Option<(u64, String, MadeUp)> {
    let entry = entry.trim();
    let (nth, rest) = match entry.split_once(':') {
        Some((n, rest)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => (n.parse().ok()?, rest.trim()),
        _ => (1, entry),
    };
    let mut words = rest.splitn(4, ' ');
    let method = words.next()?;
    let path = words.next()?;
    let status: u16 = words.next()?.parse().ok()?;
    let body = match words.next().map(str::trim).filter(|b| !b.is_empty()) {
        None => None,
        Some(b) => Some(serde_json::from_str(b).ok()?),
    };
    Some((nth.max(1), format!("{method} {path}"), MadeUp { status, body }))
}

/// The answer of the first unspent entry of `rules` that `method path` is the chosen call of.
fn take_made_up(rules: &[String], seen: &mut [Option<u64>], method: &str, path: &str) -> Option<MadeUp> {
    for (i, rule) in rules.iter().enumerate() {
        let Some((nth, call, answer)) = parse_made_up(rule) else { continue };
        let Some(count) = seen[i].as_mut() else { continue };
        if !matches_call(&call, method, path) {
            continue;
        }
        *count += 1;
        if *count == nth {
            seen[i] = None;
            return Some(answer);
        }
    }
    None
}

impl FaultState {
    pub fn new(faults: Faults) -> Self {
        let trickle = if faults.trickle_bps == 0 { 1024 } else { faults.trickle_bps };
        let stalls = [
            (Stall::Hang, &faults.hang),
            (Stall::StallBody, &faults.stall_body),
            (Stall::Trickle(trickle), &faults.trickle),
            (Stall::TrickleRead(trickle), &faults.trickle_read),
            (Stall::StopReading, &faults.stop_reading),
        ]
        .into_iter()
        .flat_map(|(kind, entries)| entries.iter().map(move |e| stall_rule(kind, e)))
        .collect();
        FaultState {
            stalls,
            lost: vec![false; faults.lose_answer.len()],
            fake_seen: vec![Some(0); faults.fake_answer.len()],
            replace_seen: vec![Some(0); faults.replace_answer.len()],
            corrupt: faults.corrupt_put.iter().map(|e| stall_rule(Stall::Hang, e)).collect(),
            s3_error_seen: vec![Some(0); faults.s3_error.len()],
            rng: StdRng::seed_from_u64(faults.seed),
            faults,
            puts: 0,
            api_calls: 0,
            completions: 0,
            model_downloads: 0,
        }
    }

    /// Replaces the faults: counters restart, the RNG is reseeded.
    pub fn set(&mut self, faults: Faults) {
        *self = FaultState::new(faults);
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Counts an object PUT and decides its fate. Both ratios draw from the RNG on every PUT
    /// (when non-zero), so a seed gives the same sequence whatever the outcomes.
    pub fn on_put(&mut self) -> PutFault {
        self.puts += 1;
        let n = self.puts;
        let fail_draw =
            self.faults.fail_put_ratio > 0.0 && self.rng.gen_bool(self.faults.fail_put_ratio.clamp(0.0, 1.0));
        let reset_draw = self.faults.reset_ratio > 0.0 && self.rng.gen_bool(self.faults.reset_ratio.clamp(0.0, 1.0));
        if self.faults.fail_put_nth.contains(&n) || fail_draw {
            PutFault::Fail(self.fail_status())
        } else if reset_draw {
            PutFault::Reset
        } else {
            PutFault::None
        }
    }

    /// The status of a failed PUT (`fail_status`, 0 meaning 500).
    pub fn fail_status(&self) -> u16 {
        match self.faults.fail_status {
            0 => 500,
            s => s,
        }
    }

    /// Counts a provider API call and decides its fate.
    pub fn on_api_call(&mut self) -> ApiFault {
        self.api_calls += 1;
        let n = self.api_calls;
        if self.faults.throttle_api_call_nth.contains(&n) {
            ApiFault::Throttle
        } else if self.faults.unauthorized_api_call_nth.contains(&n) {
            ApiFault::Unauthorized
        } else {
            ApiFault::None
        }
    }

    /// Counts a completion call; `true` when it must answer 500.
    pub fn on_complete(&mut self) -> bool {
        self.completions += 1;
        self.completions <= self.faults.complete_fail_times
    }

    /// Counts a model download; `Some(n)` when its body must be cut after `n` bytes.
    pub fn on_model_download(&mut self) -> Option<u64> {
        self.model_downloads += 1;
        (self.model_downloads <= self.faults.model_cut_times).then_some(self.faults.model_cut_after)
    }

    /// `true` when the answer to `method path` must be lost (see `Faults::lose_answer`); the
    /// entry that matched is spent.
    pub fn on_answer(&mut self, method: &str, path: &str) -> bool {
        let hit = self
            .faults
            .lose_answer
            .iter()
            .enumerate()
            .find(|(i, rule)| !self.lost[*i] && matches_call(rule, method, path));
        match hit {
            Some((i, _)) => {
                self.lost[i] = true;
                true
            }
            None => false,
        }
    }

    /// The stall of a request to `method path` arriving now, if one matches (an entry with a
    /// count spends one).
    pub fn on_request(&mut self, method: &str, path: &str) -> Option<Stall> {
        let rule = self.stalls.iter_mut().find(|r| r.left != Some(0) && matches_call(&r.call, method, path))?;
        if let Some(n) = &mut rule.left {
            *n -= 1;
        }
        Some(rule.kind)
    }

    /// The made-up answer to `method path` before its handler runs (see `Faults::fake_answer`).
    pub fn on_fake(&mut self, method: &str, path: &str) -> Option<MadeUp> {
        take_made_up(&self.faults.fake_answer, &mut self.fake_seen, method, path)
    }

    /// Whether the body of the object upload `method path` arrives altered (see
    /// `Faults::corrupt_put`; an entry with a count spends one).
    pub fn on_corrupt(&mut self, method: &str, path: &str) -> bool {
        let Some(rule) = self.corrupt.iter_mut().find(|r| r.left != Some(0) && matches_call(&r.call, method, path))
        else {
            return false;
        };
        if let Some(n) = &mut rule.left {
            *n -= 1;
        }
        true
    }

    /// The S3 error answering the object upload `method path`, if an `s3_error` entry picks it.
    pub fn on_s3_error(&mut self, method: &str, path: &str) -> Option<S3Error> {
        for (i, entry) in self.faults.s3_error.iter().enumerate() {
            let Some((nth, call, answer)) = parse_s3_error(entry) else { continue };
            let Some(count) = self.s3_error_seen[i].as_mut() else { continue };
            if !matches_call(&call, method, path) {
                continue;
            }
            *count += 1;
            match nth {
                None => return Some(answer),
                Some(n) if *count == n => {
                    self.s3_error_seen[i] = None;
                    return Some(answer);
                }
                Some(_) => {}
            }
        }
        None
    }

    /// The answer replacing the success of `method path` (see `Faults::replace_answer`).
    pub fn on_replace(&mut self, method: &str, path: &str) -> Option<MadeUp> {
        take_made_up(&self.faults.replace_answer, &mut self.replace_seen, method, path)
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.faults.latency_ms)
    }

    pub fn bandwidth_bps(&self) -> u64 {
        self.faults.bandwidth_bps
    }

    pub fn total_bandwidth_bps(&self) -> u64 {
        self.faults.total_bandwidth_bps
    }

    pub fn expire_urls_after_ms(&self) -> Option<u64> {
        self.faults.expire_urls_after_ms
    }
}

/// `rule` is `METHOD /a/*/c`: the method matches (any case; `*` any method) and the path
/// segment by segment, `*` standing for any one segment and a last `**` for any rest.
fn matches_call(rule: &str, method: &str, path: &str) -> bool {
    let Some((m, pattern)) = rule.trim().split_once(' ') else { return false };
    if m != "*" && !m.eq_ignore_ascii_case(method) {
        return false;
    }
    let want: Vec<&str> = pattern.trim().trim_end_matches('/').split('/').collect();
    let got: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    if want.last() == Some(&"**") {
        let head = &want[..want.len() - 1];
        return got.len() >= head.len() && head.iter().zip(&got).all(|(w, g)| *w == "*" || w == g);
    }
    want.len() == got.len() && want.iter().zip(&got).all(|(w, g)| *w == "*" || w == g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_put_and_status() {
        let mut f = FaultState::new(Faults { fail_put_nth: vec![2, 4], fail_status: 503, ..Default::default() });
        let got: Vec<_> = (0..5).map(|_| f.on_put()).collect();
        assert_eq!(got, [PutFault::None, PutFault::Fail(503), PutFault::None, PutFault::Fail(503), PutFault::None]);
    }

    #[test]
    fn ratios_are_seeded() {
        let faults = Faults { fail_put_ratio: 0.3, reset_ratio: 0.2, seed: 7, ..Default::default() };
        let mut a = FaultState::new(faults.clone());
        let mut b = FaultState::new(faults);
        let xa: Vec<_> = (0..200).map(|_| a.on_put()).collect();
        let xb: Vec<_> = (0..200).map(|_| b.on_put()).collect();
        assert_eq!(xa, xb);
        let fails = xa.iter().filter(|x| **x == PutFault::Fail(500)).count();
        let resets = xa.iter().filter(|x| **x == PutFault::Reset).count();
        assert!((30..90).contains(&fails), "{fails}");
        assert!((10..60).contains(&resets), "{resets}");
    }

    #[test]
    fn api_and_complete_counters() {
        let mut f = FaultState::new(Faults {
            unauthorized_api_call_nth: vec![1, 3],
            complete_fail_times: 2,
            ..Default::default()
        });
        use ApiFault::*;
        assert_eq!((0..4).map(|_| f.on_api_call()).collect::<Vec<_>>(), [Unauthorized, None, Unauthorized, None]);
        assert_eq!((0..3).map(|_| f.on_complete()).collect::<Vec<_>>(), [true, true, false]);
    }

    #[test]
    fn stalls_match_calls_a_number_of_times_or_always() {
        let mut f = FaultState::new(Faults {
            hang: vec!["2 POST /api/v1/captures".into()],
            stall_body: vec!["GET /api/v1/captures".into()],
            trickle: vec!["always PUT /**".into()],
            trickle_read: vec!["POST /uploads".into()],
            trickle_bps: 10,
            stop_reading: vec!["* /upload/*/complete".into()],
            ..Default::default()
        });
        assert_eq!(f.on_request("POST", "/api/v1/captures"), Some(Stall::Hang));
        assert_eq!(f.on_request("POST", "/api/v1/captures"), Some(Stall::Hang));
        assert_eq!(f.on_request("POST", "/api/v1/captures"), None, "spent after 2");
        assert_eq!(f.on_request("GET", "/api/v1/captures"), Some(Stall::StallBody));
        assert_eq!(f.on_request("GET", "/api/v1/captures"), None);
        for _ in 0..5 {
            assert_eq!(f.on_request("PUT", "/bucket/teleport/x/scan.zip"), Some(Stall::Trickle(10)));
        }
        assert_eq!(f.on_request("POST", "/uploads"), Some(Stall::TrickleRead(10)));
        assert_eq!(f.on_request("POST", "/upload/7/complete"), Some(Stall::StopReading));
        assert_eq!(f.on_request("POST", "/upload/7/complete"), None, "spent");
        assert_eq!(f.on_request("GET", "/bucket/x"), None);
    }

    #[test]
    fn s3_errors_and_altered_bodies_match_calls() {
        let mut f = FaultState::new(Faults {
            s3_error: vec!["2:PUT /bucket/** 400 BadDigest".into(), "always POST /bucket 403 HeadersNotSigned".into()],
            corrupt_put: vec!["PUT /bucket/**".into()],
            ..Default::default()
        });
        assert_eq!(f.on_s3_error("PUT", "/bucket/a/b"), None, "the first call passes");
        assert_eq!(f.on_s3_error("PUT", "/bucket/a/b"), Some(S3Error { status: 400, code: "BadDigest".into() }));
        assert_eq!(f.on_s3_error("PUT", "/bucket/a/b"), None, "spent");
        for _ in 0..3 {
            assert_eq!(f.on_s3_error("POST", "/bucket").map(|e| e.status), Some(403));
        }
        assert!(f.on_corrupt("PUT", "/bucket/x"));
        assert!(!f.on_corrupt("PUT", "/bucket/x"), "spent");
    }

    #[test]
    fn made_up_answers_pick_the_nth_matching_call_once() {
        let mut f = FaultState::new(Faults {
            fake_answer: vec![
                "2:POST /api/v1/captures 500 {\"detail\":\"x\"}".into(),
                "POST /api/v1/captures/*/uploaded 200 null".into(),
                "not an entry".into(),
            ],
            replace_answer: vec!["GET /upload/*/parts 404".into()],
            ..Default::default()
        });
        assert_eq!(f.on_fake("POST", "/api/v1/captures"), None, "the first call passes");
        let second = f.on_fake("POST", "/api/v1/captures").unwrap();
        assert_eq!((second.status, second.body), (500, Some(serde_json::json!({"detail": "x"}))));
        assert_eq!(f.on_fake("POST", "/api/v1/captures"), None, "spent");
        let null = f.on_fake("POST", "/api/v1/captures/e1/uploaded").unwrap();
        assert_eq!((null.status, null.body), (200, Some(serde_json::Value::Null)));
        assert_eq!(f.on_replace("GET", "/upload/u1/parts"), Some(MadeUp { status: 404, body: None }));
        assert_eq!(f.on_replace("GET", "/upload/u1/parts"), None);
    }

    #[test]
    fn lost_answers_match_method_and_segments_once_per_entry() {
        let rules = vec![
            "POST /api/v1/captures/*/uploaded".to_string(),
            "post /upload/start".to_string(),
            "post /upload/start".into(),
        ];
        let mut f = FaultState::new(Faults { lose_answer: rules, ..Default::default() });
        assert!(!f.on_answer("GET", "/api/v1/captures/7/uploaded"));
        assert!(!f.on_answer("POST", "/api/v1/captures/7"));
        assert!(!f.on_answer("POST", "/api/v1/captures/7/uploaded/x"));
        assert!(f.on_answer("POST", "/api/v1/captures/7/uploaded"));
        assert!(!f.on_answer("POST", "/api/v1/captures/7/uploaded"), "an entry is spent once");
        assert!(f.on_answer("POST", "/upload/start"));
        assert!(f.on_answer("POST", "/upload/start/"), "a repeated entry loses a second answer");
        assert!(!f.on_answer("POST", "/upload/start"));
    }
}
