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
}

impl FaultState {
    pub fn new(faults: Faults) -> Self {
        FaultState {
            lost: vec![false; faults.lose_answer.len()],
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

/// `rule` is `METHOD /a/*/c`: the method matches (any case) and the path segment by segment,
/// `*` standing for any one segment.
fn matches_call(rule: &str, method: &str, path: &str) -> bool {
    let Some((m, pattern)) = rule.trim().split_once(' ') else { return false };
    if !m.eq_ignore_ascii_case(method) {
        return false;
    }
    let want: Vec<&str> = pattern.trim().trim_end_matches('/').split('/').collect();
    let got: Vec<&str> = path.trim_end_matches('/').split('/').collect();
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
