//! Plain-http part PUTs whose body the kernel sends straight from the page cache
//! (`sendfile(2)`), on connections of the engine's own.
//!
//! Through reqwest every byte of a part is copied twice by the client: from the page cache into
//! a read buffer, and from it into the socket. Those copies were half of the client's CPU. Here
//! the request head is written, then the file range is handed to the socket by `sendfile`, and
//! the answer is parsed with `httparse`: the client copies nothing (0.2–0.3 CPU-s/GiB instead of
//! 0.5–0.6, see bench/RESULTS.md).
//!
//! Scope, deliberately narrow (everything else stays on reqwest):
//! - `http://` to a loopback host (plain http goes nowhere else), no proxy in the environment;
//! - a regular file (not a virtual zip), no bandwidth limit (`--limit-rate` paces reads);
//! - Linux; `UPLOAD_SENDFILE=0` turns it off ([`set_enabled`]).
//!
//! One exchange runs on a blocking-pool thread with a blocking socket (a part's `sendfile` may
//! wait for the disk, which must not stall an async worker). The async side bounds it: on the
//! attempt's time limit, or when the attempt is dropped (cancellation, another part's failure),
//! the socket is shut down and the thread's calls return at once.
//!
//! Connections are kept alive in a small pool per host. A pooled connection is checked before
//! use (closed or carrying stray bytes: dropped), and an exchange on a reused connection that
//! fails before any byte of an answer (the server closed it while idle) is made again once on a
//! fresh connection, as hyper does, without counting as a retry. An answer that arrives before
//! the body is all sent (a 403 for an expired URL) is read and returned; that connection is not
//! reused. What this module returns is mapped to the engine's [`Failure`] by [`Error::failure`];
//! retries, backoff and the retry budget stay the executor's.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::request::Failure;
use super::retry::{Outcome, TransportKind};
use super::source::FileSource;

/// Bytes handed to one `sendfile` call: progress is told, and an early answer looked for, at
/// this step.
const STEP: usize = 1 << 20;
/// Idle connections kept per host.
const MAX_IDLE: usize = 64;
/// A pooled connection older than this is closed rather than reused (servers close idle ones).
const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest answer head read.
const MAX_HEAD: usize = 64 << 10;
/// How long an answer is waited for after the server stopped taking the body.
const EARLY_ANSWER_WAIT: Duration = Duration::from_secs(2);

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the zero-copy path on or off for the process (`UPLOAD_SENDFILE=0` turns it off).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether a PUT of a plain file to `url` goes this way (see the module's scope).
pub fn applies(url: &url::Url) -> bool {
    cfg!(target_os = "linux")
        && ENABLED.load(Ordering::Relaxed)
        && url.scheme() == "http"
        && super::http::is_loopback(url)
        && !proxy_configured()
}

/// A proxy set in the environment: reqwest honours it, so the request goes through reqwest.
fn proxy_configured() -> bool {
    static PROXY: OnceLock<bool> = OnceLock::new();
    *PROXY.get_or_init(|| {
        ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
            .iter()
            .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
    })
}

/// One PUT: the range `[offset, offset + len)` of `file` to `url`.
pub struct Put {
    /// Where (http, loopback).
    pub url: url::Url,
    /// The open file.
    pub file: Arc<File>,
    /// First byte of the range.
    pub offset: u64,
    /// Bytes in the range (the `Content-Length`).
    pub len: u64,
    /// Extra headers (`Content-Type`, `Content-MD5`).
    pub headers: Vec<(&'static str, String)>,
    /// Largest answer body read (an S3 error document); past it the answer is refused.
    pub body_cap: usize,
}

/// The server's answer.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body (at most the cap).
    pub body: Bytes,
}

/// How an exchange failed.
#[derive(Debug)]
pub enum Error {
    /// No connection (refused, unreachable, or none within the connect timeout).
    Connect(std::io::Error),
    /// The host name did not resolve.
    Dns(std::io::Error),
    /// The connection failed while sending or receiving.
    Io(std::io::Error),
    /// The answer is not HTTP/1.x.
    Malformed(String),
    /// The attempt's time limit passed.
    Timeout,
    /// The answer's body is longer than the cap.
    TooLarge(usize),
    /// The file ended before the range did (it shrank).
    FileEnded,
    /// Reading the file failed.
    File(std::io::Error),
    /// This file cannot be sent with `sendfile` (its file system does not support it): send it
    /// another way. Nothing of the body was sent.
    Unsupported,
}

impl Error {
    /// As an attempt failure for the executor (`what` names the call in messages). A file
    /// error is the file's fault, not the network's: it is final, reported against `source`.
    pub fn failure(self, provider: &'static str, what: &str, source: &FileSource) -> Failure {
        let path = source.path();
        let transport = |kind, message: String| Failure::Outcome {
            outcome: Outcome::Transport(kind),
            message: crate::redact::scrub(&message, &[]),
            retry_after: None,
        };
        match self {
            Error::Connect(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                let t = crate::size::human_duration(super::http::connect_timeout());
                transport(TransportKind::Connect, format!("no connection within {t} (--connect-timeout)"))
            }
            Error::Connect(e) => transport(TransportKind::Connect, format!("could not connect: {e}")),
            Error::Dns(e) => transport(TransportKind::Dns, format!("dns error: {e}")),
            Error::Io(e) => transport(TransportKind::Other, connection_message(&e)),
            Error::Malformed(m) => transport(TransportKind::Other, format!("invalid HTTP answer: {m}")),
            Error::Timeout => transport(TransportKind::Timeout, "timed out".into()),
            Error::TooLarge(cap) => super::request::BodyError::TooLarge(cap).into_failure(provider, what),
            Error::FileEnded => Failure::Fatal(crate::Error::File {
                path: path.to_path_buf(),
                source: source.shrunk(std::io::ErrorKind::UnexpectedEof.into()),
            }),
            Error::File(source) => Failure::Fatal(crate::Error::File { path: path.to_path_buf(), source }),
            Error::Unsupported => Failure::Fatal(crate::Error::Protocol {
                provider,
                what: what.into(),
                message: "sendfile is not supported for this file".into(),
            }),
        }
    }
}

fn connection_message(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "the connection closed before the answer was complete".into(),
        _ => format!("connection error: {e}"),
    }
}

/// Sends `put` and returns the answer, within `timeout`. `on_sent` is told the bytes of the
/// body as they are handed to the socket (negative when an exchange is made again on a fresh
/// connection and its bytes count anew).
pub async fn put(
    pool: Arc<Pool>,
    put: Put,
    timeout: Duration,
    on_sent: Arc<dyn Fn(i64) + Send + Sync>,
) -> std::result::Result<Answer, Error> {
    let live: Arc<Mutex<Live>> = Arc::default();
    let guard = ShutdownOnDrop(live.clone());
    let worker = tokio::task::spawn_blocking(move || exchange_with_reuse(&pool, &put, &live, &*on_sent));
    let result = match tokio::time::timeout(timeout, worker).await {
        Ok(Ok(r)) => r,
        Ok(Err(join)) => Err(Error::Io(std::io::Error::other(format!("the sending thread failed: {join}")))),
        Err(_) => Err(Error::Timeout),
    };
    drop(guard);
    result
}

/// The socket an attempt's thread is using, and whether the attempt was cut off.
#[derive(Default)]
struct Live {
    stream: Option<Arc<TcpStream>>,
    cut: bool,
}

/// Shuts the attempt's socket down when the attempt ends before its thread did (time limit,
/// cancellation): the thread's blocked calls return at once, and it starts no other.
struct ShutdownOnDrop(Arc<Mutex<Live>>);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        if let Ok(mut live) = self.0.lock() {
            live.cut = true;
            if let Some(s) = live.stream.take() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// The exchange, on a pooled connection when one is alive, made again once on a fresh one
/// when the pooled one turns out closed before any byte of an answer.
fn exchange_with_reuse(
    pool: &Pool,
    put: &Put,
    live: &Mutex<Live>,
    on_sent: &(dyn Fn(i64) + Send + Sync),
) -> std::result::Result<Answer, Error> {
    let key = pool_key(&put.url);
    let head = request_head(put).ok_or(Error::Unsupported)?;
    let mut pooled = pool.take(&key);
    loop {
        let reused = pooled.is_some();
        let stream = match pooled.take() {
            Some(s) => s,
            None => Arc::new(connect(&put.url)?),
        };
        {
            let mut live = live.lock().map_err(|_| poisoned())?;
            if live.cut {
                return Err(Error::Timeout);
            }
            live.stream = Some(stream.clone());
        }
        let mut sent = 0u64;
        let result = exchange(&stream, put, &head, &mut |n| {
            // Told under the lock, and not once the attempt was cut off: the attempt takes back
            // what it was told when it ends, and a step told after that would stay counted.
            if let Ok(l) = live.lock()
                && !l.cut
            {
                sent += n as u64;
                on_sent(n as i64);
            }
        });
        // The attempt ended, or was cut off (the socket is shut down then).
        let cut = {
            let mut live = live.lock().map_err(|_| poisoned())?;
            live.stream = None;
            live.cut
        };
        match result {
            Ok((answer, reusable)) => {
                if reusable && !cut {
                    pool.give(key, stream);
                }
                return Ok(answer);
            }
            Err(Failed { error: Error::Io(_), answered: false }) if reused && !cut => {
                if let Ok(l) = live.lock()
                    && !l.cut
                {
                    on_sent(-(sent as i64));
                }
                continue;
            }
            Err(f) => return Err(f.error),
        }
    }
}

fn poisoned() -> Error {
    Error::Io(std::io::Error::other("lock poisoned"))
}

/// An exchange's failure, and whether any byte of an answer had come.
struct Failed {
    error: Error,
    answered: bool,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Failed { error, answered: false }
    }
}

/// Writes the head, sends the body, reads the answer. Returns it and whether the connection
/// may carry another request.
fn exchange(
    stream: &TcpStream,
    put: &Put,
    head: &[u8],
    on_sent: &mut dyn FnMut(usize),
) -> std::result::Result<(Answer, bool), Failed> {
    let mut w = stream;
    w.write_all(head).map_err(Error::Io)?;
    let mut r = Reader { stream, buf: Vec::with_capacity(1024), pos: 0, answered: false };
    let result = send_and_read(&mut r, put, on_sent);
    result.map_err(|error| Failed { error, answered: r.answered })
}

fn send_and_read(
    r: &mut Reader<'_>,
    put: &Put,
    on_sent: &mut dyn FnMut(usize),
) -> std::result::Result<(Answer, bool), Error> {
    let stream = r.stream;
    let mut offset = put.offset;
    let end = put.offset + put.len;
    while offset < end {
        if answer_waiting(stream) {
            // An interim answer (100 Continue) is skipped and the body goes on. Any other answer
            // before the body was all sent ends the exchange (the server reads no more of it): a
            // refusal is returned, a success is not believed.
            let (status, version, headers) = r.head()?;
            if is_interim(status) {
                continue;
            }
            return early(finish_answer(r, status, version, headers, put.body_cap)?.0);
        }
        let want = (end - offset).min(STEP as u64) as usize;
        match send_file(stream, &put.file, &mut offset, want) {
            Ok(0) => return Err(Error::FileEnded),
            Ok(n) => on_sent(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if offset == put.offset && is_unsupported(&e) => return Err(Error::Unsupported),
            Err(e) if is_file_error(&e) => return Err(Error::File(e)),
            Err(e) => {
                // The server may have answered and stopped reading (an expired URL's 403).
                let _ = stream.set_read_timeout(Some(EARLY_ANSWER_WAIT));
                return match read_answer_from(r, put.body_cap) {
                    Ok((answer, _)) => early(answer).map_err(|_| Error::Io(e)),
                    Err(_) => Err(Error::Io(e)),
                };
            }
        }
    }
    read_answer_from(r, put.body_cap)
}

/// An answer that came before the body was all sent: a refusal (never a success), on a
/// connection that is not reused.
fn early(answer: Answer) -> std::result::Result<(Answer, bool), Error> {
    if (200..300).contains(&answer.status) {
        return Err(Error::Malformed(format!("answered {} before the body was all sent", answer.status)));
    }
    Ok((answer, false))
}

/// 1xx but not 101 Switching Protocols: the real answer follows.
fn is_interim(status: u16) -> bool {
    (100..200).contains(&status) && status != 101
}

#[cfg(target_os = "linux")]
fn send_file(stream: &TcpStream, file: &File, offset: &mut u64, count: usize) -> std::io::Result<usize> {
    rustix::fs::sendfile(stream, file, Some(offset), count).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn send_file(_stream: &TcpStream, _file: &File, _offset: &mut u64, _count: usize) -> std::io::Result<usize> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// `sendfile` cannot read this file (its file system has no splice support).
fn is_unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP))
        || e.kind() == std::io::ErrorKind::Unsupported
}

/// The file's side failed (a disk error), not the socket's.
fn is_file_error(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EIO | libc::EOVERFLOW | libc::EBADF))
}

/// Bytes of an answer are waiting: the server answered before the body was all sent.
fn answer_waiting(stream: &TcpStream) -> bool {
    peek(stream).is_ok_and(|n| n > 0)
}

/// Bytes waiting to be read (0: the peer closed), without taking them and without blocking
/// (`WouldBlock`: none yet).
#[cfg(target_os = "linux")]
fn peek(stream: &TcpStream) -> std::io::Result<usize> {
    use rustix::net::{RecvFlags, recv};
    let mut b = [0u8; 1];
    Ok(recv(stream, &mut b, RecvFlags::PEEK | RecvFlags::DONTWAIT)?.1)
}

#[cfg(not(target_os = "linux"))]
fn peek(_stream: &TcpStream) -> std::io::Result<usize> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// The request line and headers, or `None` when a header value cannot be sent as is.
fn request_head(put: &Put) -> Option<Vec<u8>> {
    let url = &put.url;
    let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let host = &url[url::Position::BeforeHost..url::Position::AfterPort];
    let mut head = format!(
        "PUT {target} HTTP/1.1\r\nhost: {host}\r\nuser-agent: upload/{}\r\naccept: */*\r\ncontent-length: {}\r\n",
        env!("CARGO_PKG_VERSION"),
        put.len
    );
    for (name, value) in &put.headers {
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return None;
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    Some(head.into_bytes())
}

/// Reads an answer's head (after any interim ones) and body. Returns it and whether the
/// connection may be reused.
fn read_answer_from(r: &mut Reader<'_>, cap: usize) -> std::result::Result<(Answer, bool), Error> {
    loop {
        let (status, version, headers) = r.head()?;
        if !is_interim(status) {
            return finish_answer(r, status, version, headers, cap);
        }
    }
}

/// Reads the body of an answer whose head was read, by its framing.
fn finish_answer(
    r: &mut Reader<'_>,
    status: u16,
    version: u8,
    headers: HeaderMap,
    cap: usize,
) -> std::result::Result<(Answer, bool), Error> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_ascii_lowercase);
    let close = header("connection").is_some_and(|c| c.split(',').any(|t| t.trim() == "close"));
    let chunked = header("transfer-encoding").is_some_and(|t| t.contains("chunked"));
    let length = header("content-length").map(|l| l.trim().parse::<u64>());
    let (body, framed) = if chunked {
        (r.chunked(cap)?, true)
    } else if let Some(length) = length {
        let n = length.map_err(|_| Error::Malformed("Content-Length is not a number".into()))?;
        if n > cap as u64 {
            return Err(Error::TooLarge(cap));
        }
        (r.exact(n as usize)?, true)
    } else if status == 204 || status == 304 {
        (Vec::new(), true)
    } else {
        (r.until_end(cap)?, false)
    };
    let reusable = framed && !close && version == 1 && r.pos == r.buf.len();
    Ok((Answer { status, headers, body: Bytes::from(body) }, reusable))
}

/// Buffered reads of one answer.
struct Reader<'a> {
    stream: &'a TcpStream,
    buf: Vec<u8>,
    pos: usize,
    /// Some byte of an answer came.
    answered: bool,
}

impl Reader<'_> {
    /// Reads more; `Ok(0)` at the end of the stream.
    fn fill(&mut self) -> std::result::Result<usize, Error> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut chunk = [0u8; 8192];
        let mut s = self.stream;
        loop {
            match s.read(&mut chunk) {
                Ok(n) => {
                    self.answered |= n > 0;
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }

    fn eof() -> Error {
        Error::Io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
    }

    /// The status, the minor version and the headers of the next head.
    fn head(&mut self) -> std::result::Result<(u16, u8, HeaderMap), Error> {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut slots);
            match resp.parse(&self.buf[self.pos..]) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    let version = resp.version.unwrap_or(0);
                    let mut headers = HeaderMap::new();
                    for h in resp.headers.iter() {
                        if let (Ok(name), Ok(value)) =
                            (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value))
                        {
                            headers.append(name, value);
                        }
                    }
                    self.pos += n;
                    return Ok((status, version, headers));
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() - self.pos > MAX_HEAD {
                        return Err(Error::Malformed(format!("an answer head longer than {MAX_HEAD} bytes")));
                    }
                    if self.fill()? == 0 {
                        return Err(Self::eof());
                    }
                }
                Err(e) => return Err(Error::Malformed(e.to_string())),
            }
        }
    }

    /// Exactly `n` bytes.
    fn exact(&mut self, n: usize) -> std::result::Result<Vec<u8>, Error> {
        while self.buf.len() - self.pos < n {
            if self.fill()? == 0 {
                return Err(Self::eof());
            }
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }

    /// One line, without its CRLF.
    fn line(&mut self) -> std::result::Result<String, Error> {
        loop {
            if let Some(i) = self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[self.pos..self.pos + i]).into_owned();
                self.pos += i + 2;
                return Ok(line);
            }
            if self.buf.len() - self.pos > MAX_HEAD {
                return Err(Error::Malformed("a chunk line is too long".into()));
            }
            if self.fill()? == 0 {
                return Err(Self::eof());
            }
        }
    }

    /// A chunked body, decoded; trailers are skipped.
    fn chunked(&mut self, cap: usize) -> std::result::Result<Vec<u8>, Error> {
        let mut body = Vec::new();
        loop {
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| Error::Malformed("a bad chunk size".into()))?;
            if size == 0 {
                while !self.line()?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > cap {
                return Err(Error::TooLarge(cap));
            }
            body.extend(self.exact(size)?);
            if !self.line()?.is_empty() {
                return Err(Error::Malformed("a chunk is longer than its size".into()));
            }
        }
    }

    /// Everything up to the end of the stream.
    fn until_end(&mut self, cap: usize) -> std::result::Result<Vec<u8>, Error> {
        while self.fill()? > 0 {
            if self.buf.len() - self.pos > cap {
                return Err(Error::TooLarge(cap));
            }
        }
        let out = self.buf[self.pos..].to_vec();
        self.pos = self.buf.len();
        Ok(out)
    }
}

/// `host:port` of a URL.
fn pool_key(url: &url::Url) -> String {
    format!("{}:{}", url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(80))
}

/// The idle connections of a run, per `host:port` (the run's [`super::request::Executor`] holds
/// it, so files uploaded one after another reuse them).
#[derive(Debug, Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<Idle>>>,
}

/// A kept connection and since when it is idle.
type Idle = (Arc<TcpStream>, Instant);

impl Pool {
    /// An idle connection to `key` that is still open and quiet, if any.
    fn take(&self, key: &str) -> Option<Arc<TcpStream>> {
        loop {
            let (stream, since) = self.idle.lock().ok()?.get_mut(key)?.pop()?;
            if since.elapsed() < IDLE_TIMEOUT && Arc::strong_count(&stream) == 1 && quiet_and_open(&stream) {
                return Some(stream);
            }
        }
    }

    fn give(&self, key: String, stream: Arc<TcpStream>) {
        if let Ok(mut idle) = self.idle.lock() {
            let idle = idle.entry(key).or_default();
            idle.retain(|(_, since)| since.elapsed() < IDLE_TIMEOUT);
            if idle.len() < MAX_IDLE {
                idle.push((stream, Instant::now()));
            }
        }
    }

    #[cfg(test)]
    fn idle(&self, key: &str) -> usize {
        self.idle.lock().unwrap().get(key).map_or(0, Vec::len)
    }
}

/// Neither closed by the peer nor holding bytes nobody asked for.
fn quiet_and_open(stream: &TcpStream) -> bool {
    peek(stream).is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A new connection to the URL's host, within the connect timeout.
fn connect(url: &url::Url) -> std::result::Result<TcpStream, Error> {
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::from((ip, port))],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::from((ip, port))],
        Some(url::Host::Domain(d)) => (d, port).to_socket_addrs().map_err(Error::Dns)?.collect(),
        None => return Err(Error::Dns(std::io::Error::other("the URL has no host"))),
    };
    let timeout = super::http::connect_timeout();
    let mut last = std::io::Error::other("the host name resolved to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(Error::Connect(last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;

    type Script = Vec<(&'static str, usize)>;

    /// A server that takes one connection per script and answers each request of it with the
    /// next answer (after reading the head and that many bytes of body; "CLOSE" drops the
    /// connection instead), and hands back what it received.
    fn server(scripts: Vec<Script>) -> (url::Url, std::thread::JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = url::Url::parse(&format!("http://{}/bucket/key?X-Amz-Signature=abc", listener.local_addr().unwrap()))
            .unwrap();
        let handle = std::thread::spawn(move || {
            let mut got = vec![];
            for script in scripts {
                let (mut conn, _) = listener.accept().unwrap();
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                for (answer, read_body) in script {
                    let mut head = vec![];
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap() == 0 {
                            break;
                        }
                        head.extend_from_slice(line.as_bytes());
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0u8; read_body];
                    if reader.read_exact(&mut body).is_err() {
                        return got; // the client gave up on the request
                    }
                    head.extend(body);
                    got.push(head);
                    if answer == "CLOSE" {
                        break;
                    }
                    conn.write_all(answer.as_bytes()).unwrap();
                }
            }
            got
        });
        (url, handle)
    }

    fn file_of(bytes: &[u8]) -> Arc<File> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        Arc::new(f)
    }

    fn put_of(url: &url::Url, file: &Arc<File>, offset: u64, len: u64) -> Put {
        Put {
            url: url.clone(),
            file: file.clone(),
            offset,
            len,
            headers: vec![("content-md5", "bWQ1".into())],
            body_cap: 1024,
        }
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nETag: \"e1\"\r\nContent-Length: 0\r\n\r\n";

    #[tokio::test]
    async fn the_range_is_sent_byte_exact_and_the_connection_is_kept() {
        let pool = Arc::<Pool>::default();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let file = file_of(&data);
        let (url, server) = server(vec![vec![(OK, 2_000_000), (OK, 5)]]);
        let sent = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let count = {
            let sent = sent.clone();
            Arc::new(move |n: i64| {
                sent.fetch_add(n, Ordering::Relaxed);
            })
        };
        let a = put(pool.clone(), put_of(&url, &file, 1_000_000, 2_000_000), Duration::from_secs(30), count.clone())
            .await
            .unwrap();
        assert_eq!((a.status, a.headers.get("etag").unwrap().to_str().unwrap()), (200, "\"e1\""));
        let b = put(pool.clone(), put_of(&url, &file, 0, 5), Duration::from_secs(30), count).await.unwrap();
        assert_eq!(b.status, 200);
        assert_eq!(sent.load(Ordering::Relaxed), 2_000_005);
        assert_eq!(pool.idle(&pool_key(&url)), 1);
        // One connection carried both (the server accepts once).
        let got = server.join().unwrap();
        let first = String::from_utf8_lossy(&got[0][..200]).into_owned();
        assert!(first.starts_with("PUT /bucket/key?X-Amz-Signature=abc HTTP/1.1\r\n"), "{first}");
        assert!(first.contains(&format!("host: {}\r\n", &url[url::Position::BeforeHost..url::Position::AfterPort])));
        assert!(first.contains("content-length: 2000000\r\n") && first.contains("content-md5: bWQ1\r\n"), "{first}");
        let body_at = got[0].windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(&got[0][body_at..], &data[1_000_000..3_000_000]);
        assert!(got[1].ends_with(&data[..5]));
    }

    #[tokio::test]
    async fn a_pooled_connection_the_server_closed_is_replaced_without_a_failure() {
        let pool = Arc::<Pool>::default();
        let file = file_of(b"hello world");
        // The server answers the first request, takes the second on the same connection and
        // closes it unanswered (as a server closing an idle connection at that moment), then
        // answers it on a new one.
        let (url, server) = server(vec![vec![(OK, 5), ("CLOSE", 5)], vec![(OK, 5)]]);
        let sent = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let count = {
            let sent = sent.clone();
            Arc::new(move |n: i64| {
                sent.fetch_add(n, Ordering::Relaxed);
            })
        };
        put(pool.clone(), put_of(&url, &file, 0, 5), Duration::from_secs(30), count.clone()).await.unwrap();
        let b = put(pool.clone(), put_of(&url, &file, 6, 5), Duration::from_secs(30), count).await.unwrap();
        assert_eq!(b.status, 200);
        assert_eq!(sent.load(Ordering::Relaxed), 10, "the resent bytes count once");
        let got = server.join().unwrap();
        assert_eq!(got.len(), 3);
        assert!(got[1].ends_with(b"world") && got[2].ends_with(b"world"));
    }

    #[tokio::test]
    async fn chunked_error_bodies_are_decoded_and_close_is_honoured() {
        let pool = Arc::<Pool>::default();
        let file = file_of(b"0123456789");
        let answer = "HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                      5\r\n<Erro\r\n3;x=1\r\nr>X\r\n0\r\n\r\n";
        let (url, _server) = server(vec![vec![(answer, 10)]]);
        let a = put(pool.clone(), put_of(&url, &file, 0, 10), Duration::from_secs(30), Arc::new(|_| {})).await.unwrap();
        assert_eq!((a.status, &a.body[..]), (403, &b"<Error>X"[..]));
        assert_eq!(pool.idle(&pool_key(&url)), 0, "a closed connection is not kept");
    }

    #[tokio::test]
    async fn an_answer_before_the_body_is_read_and_returned() {
        let pool = Arc::<Pool>::default();
        let file = file_of(&vec![7u8; 8 << 20]);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = url::Url::parse(&format!("http://{}/k", listener.local_addr().unwrap())).unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut b = [0u8; 1024];
            let _ = c.read(&mut b);
            let doc = "<Error><Code>AccessDenied</Code></Error>";
            let _ = write!(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\n\r\n{doc}", doc.len());
            std::thread::sleep(Duration::from_millis(300));
        });
        let a = put(pool.clone(), put_of(&url, &file, 0, 8 << 20), Duration::from_secs(30), Arc::new(|_| {}))
            .await
            .unwrap();
        assert_eq!(a.status, 403);
        assert!(String::from_utf8_lossy(&a.body).contains("AccessDenied"));
    }

    #[tokio::test]
    async fn a_file_shorter_than_the_range_is_a_file_end_and_a_silent_server_a_timeout() {
        let pool = Arc::<Pool>::default();
        let file = file_of(b"short");
        // The server waits for the 10 bytes of the Content-Length, which never come.
        let (url, _server) = server(vec![vec![(OK, 10)]]);
        let e =
            put(pool.clone(), put_of(&url, &file, 0, 10), Duration::from_secs(30), Arc::new(|_| {})).await.unwrap_err();
        assert!(matches!(e, Error::FileEnded), "{e:?}");

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = url::Url::parse(&format!("http://{}/k", listener.local_addr().unwrap())).unwrap();
        let _hold = std::thread::spawn(move || {
            let c = listener.accept();
            std::thread::sleep(Duration::from_secs(3));
            drop(c);
        });
        let t0 = Instant::now();
        let e = put(pool.clone(), put_of(&url, &file, 0, 5), Duration::from_millis(300), Arc::new(|_| {}))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Timeout), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    /// A server that reads the request head, writes `first`, then (after a pause) reads
    /// `body` bytes and writes `then`.
    fn interim_server(first: &'static str, body: usize, then: &'static str) -> url::Url {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = url::Url::parse(&format!("http://{}/k", listener.local_addr().unwrap())).unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut reader = std::io::BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                line.clear();
            }
            c.write_all(first.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let mut got = vec![0u8; body];
            if reader.read_exact(&mut got).is_ok() {
                let _ = c.write_all(then.as_bytes());
            }
            std::thread::sleep(Duration::from_millis(300));
        });
        url
    }

    #[tokio::test]
    async fn an_interim_answer_is_skipped_and_the_body_goes_on() {
        let pool = Arc::<Pool>::default();
        let file = file_of(&vec![3u8; 8 << 20]);
        let url = interim_server("HTTP/1.1 100 Continue\r\n\r\n", 8 << 20, OK);
        let a = put(pool.clone(), put_of(&url, &file, 0, 8 << 20), Duration::from_secs(30), Arc::new(|_| {})).await;
        assert_eq!(a.unwrap().status, 200);
        assert_eq!(pool.idle(&pool_key(&url)), 1, "the connection is kept");
    }

    #[tokio::test]
    async fn a_success_before_the_body_was_sent_is_not_believed() {
        let pool = Arc::<Pool>::default();
        let file = file_of(&vec![3u8; 8 << 20]);
        let url = interim_server(OK, 0, "");
        let e = put(pool, put_of(&url, &file, 0, 8 << 20), Duration::from_secs(30), Arc::new(|_| {})).await;
        // Seen between two steps (not believed), or once the server closed (a broken exchange).
        assert!(
            matches!(&e, Err(Error::Malformed(m)) if m.contains("before the body")) || matches!(&e, Err(Error::Io(_))),
            "{e:?}"
        );
    }

    #[test]
    fn header_values_with_line_breaks_are_not_sent_this_way() {
        let url = url::Url::parse("http://127.0.0.1:9/k").unwrap();
        let mut p = put_of(&url, &file_of(b"x"), 0, 1);
        assert!(request_head(&p).is_some());
        p.headers.push(("content-type", "a\r\nx-evil: 1".into()));
        assert!(request_head(&p).is_none());
        assert!(applies(&url) == cfg!(target_os = "linux") || proxy_configured());
        assert!(!applies(&url::Url::parse("https://127.0.0.1/k").unwrap()));
    }
}
