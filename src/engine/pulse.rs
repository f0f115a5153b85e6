//! The heartbeat of one exchange, and the watch that cuts an exchange that stopped moving.
//!
//! Every attempt the executor runs ([`super::request::Executor::run`]) gets a [`Pulse`]. The
//! attempt sends through it ([`Pulse::send`]: the request body is counted as it is handed to
//! the connection, the answer's head marks the answer) and reads the answer through it
//! ([`Pulse::read_capped`], [`Pulse::received`]); time spent waiting on the run's own side
//! (the bandwidth limit, the disk) is a [`Pulse::hold`]. The executor's watch ([`watch`])
//! looks at the pulse a few times per idle timeout and cuts the attempt when:
//! - no byte moved either way for the idle timeout (`--idle-timeout`): while the body is sent
//!   ("the server stopped taking the request body"), while the answer is awaited ("no answer"),
//!   or while it is read ("the answer stalled"). Before the answer, the wait also allows for
//!   what the connection may still hold of the body (its last 4 MiB at the rate it went out),
//!   and for a long poll's declared hold ([`super::request::Call::patience`]);
//! - fewer bytes than `--speed-limit` per second moved over `--speed-time` (curl's rule).
//!
//! Each host has a [`Host`] record shared by every attempt to it: the last time anything came
//! back from it, and the current streak of silence (from the moment the first exchange that
//! stalled went quiet). A host silent for [`NetOptions::give_up_after`] while its exchanges
//! stall is given up on by the executor.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use super::http::{NetOptions, SpeedLimit};
use super::request::{BodyError, Failure};
use super::retry::{Outcome, TransportKind};

/// Largest frame of a request body handed to the connection at once: the granularity of the
/// progress the idle watch sees.
const FRAME: usize = 64 * 1024;
/// What a connection may still hold of a body once it was all handed over (socket buffers):
/// the answer may come that much later at the rate the body went out.
const IN_FLIGHT_ALLOWANCE: u64 = 4 << 20;

/// Milliseconds on the runtime's monotonic clock since the first call (tokio's clock, so that
/// tests with a paused clock see the same time as the timers).
pub(crate) fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(tokio::time::Instant::now);
    tokio::time::Instant::now().saturating_duration_since(epoch).as_millis() as u64 + 1
}

/// The time model of a run's executor (from [`NetOptions`]).
#[derive(Clone, Debug)]
pub(crate) struct Timing {
    pub(crate) connect: Duration,
    pub(crate) idle: Duration,
    pub(crate) speed: Option<SpeedLimit>,
    pub(crate) give_up_after: Duration,
}

impl From<&NetOptions> for Timing {
    fn from(n: &NetOptions) -> Self {
        Timing {
            connect: n.connect_timeout,
            idle: n.idle_timeout.max(Duration::from_millis(10)),
            speed: n.speed_limit.filter(|s| s.bytes_per_second > 0 && !s.time.is_zero()),
            give_up_after: n.give_up_after(),
        }
    }
}

/// What a run knows of one host: whether it ever answered, when it last sent anything, and
/// its current streak of silence.
#[derive(Debug, Default)]
pub(crate) struct Host {
    pub(crate) answered: AtomicBool,
    /// [`now_ms`] of the last byte received from it (0: never).
    received: AtomicU64,
    streak: Mutex<Streak>,
}

#[derive(Debug, Default)]
struct Streak {
    /// When the silence began ([`now_ms`]).
    start: Option<u64>,
    announced: bool,
}

impl Host {
    /// The record of a call that names no host: counted as answered (no first-contact rule).
    pub(crate) fn anonymous() -> Self {
        Host { answered: true.into(), ..Host::default() }
    }

    /// An exchange with this host stalled after going quiet at `quiet_at`: how long the host
    /// has been silent, and whether this is the first stall of the streak to say so (silent
    /// for at least `idle`).
    pub(crate) fn stalled(&self, quiet_at: u64, idle: Duration) -> (Duration, bool) {
        let heard = self.received.load(Ordering::Relaxed);
        let mut s = self.streak.lock().expect("host streak lock");
        let start = match s.start {
            // Nothing came back since the streak began: it goes on (from its earliest quiet).
            Some(st) if heard <= st => st.min(quiet_at).max(heard),
            _ => {
                s.announced = false;
                quiet_at.max(heard)
            }
        };
        s.start = Some(start);
        let silence = Duration::from_millis(now_ms().saturating_sub(start));
        let announce = !s.announced && silence >= idle;
        if announce {
            s.announced = true;
        }
        (silence, announce)
    }
}

/// The heartbeat of one attempt: see the module documentation. Cheap to clone.
#[derive(Clone, Default)]
pub struct Pulse(Arc<State>);

#[derive(Default)]
struct State {
    armed: AtomicBool,
    /// [`now_ms`] of the last byte either way (or of arming, or of the end of a hold).
    last: AtomicU64,
    /// Bytes either way.
    bytes: AtomicU64,
    held: AtomicU32,
    /// The answer's head arrived.
    answered: AtomicBool,
    /// The request body: when its first and last frames went, and its bytes.
    body_from: AtomicU64,
    body_done: AtomicU64,
    body_bytes: AtomicU64,
    host: Option<Arc<Host>>,
    connect_timeout: Option<Duration>,
}

impl std::fmt::Debug for Pulse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.0;
        f.debug_struct("Pulse")
            .field("armed", &s.armed.load(Ordering::Relaxed))
            .field("bytes", &s.bytes.load(Ordering::Relaxed))
            .field("answered", &s.answered.load(Ordering::Relaxed))
            .finish()
    }
}

impl Pulse {
    pub(crate) fn new(host: Option<Arc<Host>>, connect_timeout: Option<Duration>) -> Self {
        Pulse(Arc::new(State { host, connect_timeout, ..State::default() }))
    }

    /// The exchange goes on the network now: the idle watch starts. (Before, the attempt
    /// prepares: a token, a fresh URL; those are calls of their own, watched on their own.)
    pub fn arm(&self) {
        self.0.last.store(now_ms(), Ordering::Relaxed);
        self.0.armed.store(true, Ordering::Relaxed);
    }

    /// `n` bytes of the request went to the connection.
    pub fn sent(&self, n: u64) {
        self.0.bytes.fetch_add(n, Ordering::Relaxed);
        self.0.last.store(now_ms(), Ordering::Relaxed);
    }

    /// `n` bytes of the answer arrived (0: its head).
    pub fn received(&self, n: u64) {
        let now = now_ms();
        self.0.bytes.fetch_add(n, Ordering::Relaxed);
        self.0.last.store(now, Ordering::Relaxed);
        if let Some(h) = &self.0.host {
            h.received.store(now, Ordering::Relaxed);
        }
    }

    /// The answer's head arrived.
    pub fn answered(&self) {
        self.0.answered.store(true, Ordering::Relaxed);
        self.received(0);
    }

    /// The attempt waits on its own side (the run's bandwidth limit, the disk) until the
    /// guard is dropped: the idle watch does not count that time.
    pub fn hold(&self) -> Hold {
        self.0.held.fetch_add(1, Ordering::Relaxed);
        Hold(self.clone())
    }

    /// Wraps a request body so that each frame handed to the connection counts as progress
    /// (and a body that makes the connection wait, on the bandwidth limit or the disk, holds).
    pub fn body(&self, body: reqwest::Body) -> reqwest::Body {
        if body.as_bytes().is_some() {
            // In memory: handed over at once.
            return body;
        }
        self.body_of(body, None)
    }

    fn body_of(&self, body: reqwest::Body, length: Option<u64>) -> reqwest::Body {
        if body.as_bytes().is_some() {
            return body;
        }
        reqwest::Body::wrap(PulseBody { inner: body, pulse: self.clone(), rest: None, hold: None, length, sent: 0 })
    }

    /// Sends `req` (its body through [`Pulse::body`]), arming the watch; the answer's head
    /// marks the answer. A transport failure is described with the run's connect timeout.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
        let (client, request) = req.build_split();
        let mut request = request.map_err(|e| self.transport(&e))?;
        // With a Content-Length the connection stops asking for the body once it has that
        // many bytes: that is where the body ends.
        let length = request
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(body) = request.body_mut().take() {
            *request.body_mut() = Some(self.body_of(body, length));
        }
        self.arm();
        match client.execute(request).await {
            Ok(resp) => {
                self.answered();
                Ok(resp)
            }
            Err(e) => Err(self.transport(&e)),
        }
    }

    /// A transport failure of this exchange, classified by kind (see [`Failure::transport`]),
    /// its message naming the run's connect timeout when a connect ran out of time.
    pub fn transport(&self, err: &reqwest::Error) -> Failure {
        Failure::Outcome {
            outcome: Outcome::Transport(super::http::transport_kind(err)),
            message: super::http::describe_transport_within(err, self.0.connect_timeout),
            retry_after: None,
        }
    }

    /// The next piece of the answer's body, counted as progress.
    pub async fn chunk(&self, resp: &mut reqwest::Response) -> Result<Option<Bytes>, reqwest::Error> {
        let c = resp.chunk().await?;
        if let Some(b) = &c {
            self.received(b.len() as u64);
        }
        Ok(c)
    }

    /// Reads a body, counted as progress, refusing one longer than `cap` bytes (checked
    /// against `Content-Length` first, then while reading, so an endless body cannot grow
    /// memory).
    pub async fn read_capped(&self, mut resp: reqwest::Response, cap: usize) -> Result<Bytes, BodyError> {
        if resp.content_length().is_some_and(|n| n > cap as u64) {
            return Err(BodyError::TooLarge(cap));
        }
        let mut buf = bytes::BytesMut::new();
        loop {
            match self.chunk(&mut resp).await {
                Ok(Some(chunk)) => {
                    if buf.len() + chunk.len() > cap {
                        return Err(BodyError::TooLarge(cap));
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(buf.freeze()),
                Err(e) => return Err(BodyError::Transport(e)),
            }
        }
    }

    /// A non-2xx answer: its body (at most `cap` bytes of it, read through the pulse)
    /// summarized into one line, scrubbed of `secrets`.
    pub async fn refusal(&self, resp: reqwest::Response, cap: usize, secrets: &[&str]) -> Failure {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = self.read_capped(resp, cap).await.unwrap_or_default();
        Failure::answered(status, &headers, &body, secrets)
    }

    fn body_frame(&self, n: usize) {
        let now = now_ms();
        let _ = self.0.body_from.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        self.0.body_bytes.fetch_add(n as u64, Ordering::Relaxed);
        self.sent(n as u64);
    }

    fn body_end(&self) {
        let _ = self.0.body_done.compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// How much longer than the idle timeout the answer may take to begin: the time the body's
    /// last [`IN_FLIGHT_ALLOWANCE`] bytes take at the rate the body went out (they may still
    /// be in the connection's buffers).
    fn drain_allowance(&self) -> Duration {
        let s = &self.0;
        let (from, done, bytes) = (
            s.body_from.load(Ordering::Relaxed),
            s.body_done.load(Ordering::Relaxed),
            s.body_bytes.load(Ordering::Relaxed),
        );
        if from == 0 || done == 0 || bytes == 0 {
            return Duration::ZERO;
        }
        let took = done.saturating_sub(from) as f64;
        Duration::from_millis((took * bytes.min(IN_FLIGHT_ALLOWANCE) as f64 / bytes as f64) as u64)
    }
}

/// See [`Pulse::hold`].
pub struct Hold(Pulse);

impl Drop for Hold {
    fn drop(&mut self) {
        let s = &(self.0).0;
        s.last.store(now_ms(), Ordering::Relaxed);
        s.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request body whose frames count as progress (see [`Pulse::body`]).
struct PulseBody {
    inner: reqwest::Body,
    pulse: Pulse,
    /// The rest of a frame larger than [`FRAME`].
    rest: Option<Bytes>,
    /// Held while the inner body keeps the connection waiting.
    hold: Option<Hold>,
    /// The request's Content-Length, and the bytes handed over so far.
    length: Option<u64>,
    sent: u64,
}

impl PulseBody {
    fn frame(&mut self, mut data: Bytes) -> http_body::Frame<Bytes> {
        if data.len() > FRAME {
            self.rest = Some(data.split_off(FRAME));
        }
        self.pulse.body_frame(data.len());
        self.sent += data.len() as u64;
        if self.length.is_some_and(|n| self.sent >= n) {
            self.pulse.body_end();
        }
        http_body::Frame::data(data)
    }
}

impl http_body::Body for PulseBody {
    type Data = Bytes;
    type Error = reqwest::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(rest) = this.rest.take() {
            return Poll::Ready(Some(Ok(this.frame(rest))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                if this.hold.is_none() {
                    this.hold = Some(this.pulse.hold());
                }
                Poll::Pending
            }
            Poll::Ready(r) => {
                this.hold = None;
                match r {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => Poll::Ready(Some(Ok(this.frame(data)))),
                        Err(frame) => Poll::Ready(Some(Ok(frame))),
                    },
                    None => {
                        this.pulse.body_end();
                        Poll::Ready(None)
                    }
                    Some(Err(e)) => Poll::Ready(Some(Err(e))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let mut hint = self.inner.size_hint();
        if let Some(rest) = &self.rest {
            let n = rest.len() as u64;
            hint.set_lower(hint.lower() + n);
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + n);
            }
        }
        hint
    }
}

/// Why the watch cut an attempt: the failure, and when the exchange went quiet ([`now_ms`];
/// `None` for a speed-limit cut, where bytes still moved).
pub(crate) struct Cut {
    pub(crate) failure: Failure,
    pub(crate) quiet_at: Option<u64>,
}

/// Watches `pulse` until the exchange stalls (see the module documentation); never returns
/// otherwise. `patience`: how long the server may hold the answer before its first byte.
pub(crate) async fn watch(pulse: &Pulse, timing: &Timing, patience: Option<Duration>) -> Cut {
    let s = &pulse.0;
    let tick = (timing.idle / 10).clamp(Duration::from_millis(10), Duration::from_millis(500));
    // (time, bytes) samples over the speed limit's window.
    let mut samples: std::collections::VecDeque<(u64, u64)> = Default::default();
    loop {
        tokio::time::sleep(tick).await;
        if !s.armed.load(Ordering::Relaxed) || s.held.load(Ordering::Relaxed) > 0 {
            samples.clear();
            continue;
        }
        let now = now_ms();
        let last = s.last.load(Ordering::Relaxed);
        let quiet = Duration::from_millis(now.saturating_sub(last));
        let answered = s.answered.load(Ordering::Relaxed);
        let mut limit = timing.idle;
        if !answered {
            limit = limit.max(patience.unwrap_or_default()) + pulse.drain_allowance();
        }
        if quiet >= limit {
            return Cut { failure: stalled(pulse, quiet, timing.idle), quiet_at: Some(last) };
        }
        let Some(speed) = timing.speed else { continue };
        let bytes = s.bytes.load(Ordering::Relaxed);
        samples.push_back((now, bytes));
        let window = speed.time.as_millis() as u64;
        while samples.len() > 1 && samples[1].0 + window <= now {
            samples.pop_front();
        }
        let (t0, b0) = samples[0];
        if t0 + window <= now {
            let rate = (bytes - b0) as f64 * 1000.0 / (now - t0) as f64;
            if rate < speed.bytes_per_second as f64 {
                let message = format!(
                    "slower than --speed-limit {}/s for {} (--speed-time): {}/s",
                    crate::size::human(speed.bytes_per_second),
                    crate::size::human_duration(speed.time),
                    crate::size::human(rate as u64),
                );
                return Cut { failure: timeout(message), quiet_at: None };
            }
        }
    }
}

fn timeout(message: String) -> Failure {
    Failure::Outcome { outcome: Outcome::Transport(TransportKind::Timeout), message, retry_after: None }
}

/// The failure of an exchange that moved nothing for `quiet`, by where it stood.
fn stalled(pulse: &Pulse, quiet: Duration, idle: Duration) -> Failure {
    let s = &pulse.0;
    let q = crate::size::human_duration(quiet);
    let idle = crate::size::human_duration(idle);
    let message = if s.answered.load(Ordering::Relaxed) {
        format!("the answer stalled: nothing received for {q} (--idle-timeout {idle})")
    } else if s.body_from.load(Ordering::Relaxed) != 0 && s.body_done.load(Ordering::Relaxed) == 0 {
        format!("the server stopped taking the request body: nothing sent for {q} (--idle-timeout {idle})")
    } else {
        format!("no answer {q} after the request was sent (--idle-timeout {idle})")
    };
    timeout(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(idle_ms: u64) -> Timing {
        Timing {
            connect: Duration::from_secs(5),
            idle: Duration::from_millis(idle_ms),
            speed: None,
            give_up_after: Duration::from_millis(3 * idle_ms),
        }
    }

    #[tokio::test]
    async fn a_quiet_exchange_is_cut_and_a_moving_one_is_not() {
        let t = timing(200);
        let pulse = Pulse::new(None, None);
        // Not armed: the attempt prepares (asks a token), nothing is watched.
        let idle = tokio::time::timeout(Duration::from_millis(500), watch(&pulse, &t, None)).await;
        assert!(idle.is_err(), "an unarmed pulse was cut");
        pulse.arm();
        pulse.answered();
        // Bytes every 50 ms for 1 s: never cut.
        let feeder = {
            let p = pulse.clone();
            async move {
                for _ in 0..20 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    p.received(1);
                }
            }
        };
        tokio::select! {
            _ = feeder => {}
            _ = watch(&pulse, &t, None) => panic!("a moving exchange was cut"),
        }
        let t0 = std::time::Instant::now();
        let cut = watch(&pulse, &t, None).await;
        assert!(t0.elapsed() >= Duration::from_millis(150), "{:?}", t0.elapsed());
        let Failure::Outcome { message, outcome, .. } = cut.failure else { panic!() };
        assert_eq!(outcome, Outcome::Transport(TransportKind::Timeout));
        assert!(message.starts_with("the answer stalled: nothing received for"), "{message}");
    }

    #[tokio::test]
    async fn a_hold_is_not_idle_and_patience_waits_for_the_answer() {
        let t = timing(100);
        let pulse = Pulse::new(None, None);
        pulse.arm();
        let hold = pulse.hold();
        let r = tokio::time::timeout(Duration::from_millis(400), watch(&pulse, &t, None)).await;
        assert!(r.is_err(), "cut while the run's own side held it");
        drop(hold);
        // A long poll: no answer for 400 ms is fine with 600 ms of patience.
        let r =
            tokio::time::timeout(Duration::from_millis(400), watch(&pulse, &t, Some(Duration::from_millis(600)))).await;
        assert!(r.is_err(), "cut before the declared hold");
        let Failure::Outcome { message, .. } = watch(&pulse, &t, None).await.failure else { panic!() };
        assert!(message.starts_with("no answer"), "{message}");
    }

    #[tokio::test]
    async fn too_slow_for_the_speed_limit() {
        let t = Timing {
            speed: Some(SpeedLimit { bytes_per_second: 1000, time: Duration::from_millis(300) }),
            ..timing(10_000)
        };
        let pulse = Pulse::new(None, None);
        pulse.arm();
        let feeder = {
            let p = pulse.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    p.received(10);
                }
            }
        };
        let cut = tokio::select! {
            c = watch(&pulse, &t, None) => c,
            _ = feeder => unreachable!(),
        };
        assert!(cut.quiet_at.is_none());
        let Failure::Outcome { message, .. } = cut.failure else { panic!() };
        assert!(message.starts_with("slower than --speed-limit 1000 B/s"), "{message}");
    }

    #[tokio::test]
    async fn a_host_streak_counts_from_the_first_quiet_and_ends_with_an_answer() {
        let host = Arc::new(Host::default());
        let idle = Duration::from_millis(50);
        let t0 = now_ms();
        tokio::time::sleep(Duration::from_millis(60)).await;
        let (silence, announce) = host.stalled(t0, idle);
        assert!(silence >= Duration::from_millis(60) && announce, "{silence:?}");
        // A later stall of the same streak: longer, not announced again.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let (later, announce) = host.stalled(now_ms() - 5, idle);
        assert!(later >= silence + Duration::from_millis(30) && !announce, "{later:?}");
        // Something came back: a new streak.
        Pulse::new(Some(host.clone()), None).received(1);
        let (fresh, _) = host.stalled(now_ms(), idle);
        assert!(fresh < Duration::from_millis(30), "{fresh:?}");
    }
}
