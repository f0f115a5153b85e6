//! Resumable downloads of one file of known size over HTTP `Range` requests.
//!
//! Bytes go to `NAME.part` next to the destination; a `.part` left by an interrupted run (or an
//! attempt cut mid-body) is continued with `Range: bytes=N-`. A server that answers 200 to a
//! range gets the file again from the start. The file is renamed into place only once it has
//! exactly the expected size. No credentials are sent: model URLs are public or presigned.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::engine::progress::{Event, Progress};
use crate::engine::ratelimit::RateLimit;
use crate::engine::request::{Call, Executor, Failure, Kind, MAX_ERROR_BODY, Pulse, RetryNotice};
use crate::engine::retry::{Outcome, RetryPolicy, TransportKind};
use crate::error::{Error, Result};
use crate::redact::safe_url;

/// What to fetch and where.
pub struct DownloadRequest<'a> {
    /// Provider name, for messages.
    pub provider: &'static str,
    /// The URL (shown without its query string).
    pub url: &'a str,
    /// Final path.
    pub dest: &'a Path,
    /// Size the file must have.
    pub size: u64,
    /// Retry policy (attempts that brought bytes reset it).
    pub retry: RetryPolicy,
    /// The run's bandwidth limit: the body is read no faster.
    pub rate: RateLimit,
}

/// A finished download.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Downloaded {
    /// Final path.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Bytes already on disk when this run started (a `.part` continued).
    pub resumed_from: u64,
    /// The file was complete already; nothing was fetched.
    pub skipped: bool,
    /// Hex SHA-256 of the file.
    pub sha256: String,
}

/// `dest` + `.part`.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    dest.with_file_name(name)
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::File { path: path.to_path_buf(), source }
}

/// Downloads `req.url` to `req.dest`, resuming a `.part` file, verifying the size, through
/// the run's executor (its time model; its cancellation ends the download, keeping the
/// `.part`).
pub async fn download(
    http: &reqwest::Client,
    req: &DownloadRequest<'_>,
    progress: &dyn Progress,
    exec: &Executor,
) -> Result<Downloaded> {
    let label = req.dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let what = format!("download {label}");
    let protocol = |message: String| Error::Protocol { provider: req.provider, what: what.clone(), message };
    if let Ok(m) = tokio::fs::metadata(req.dest).await
        && m.is_file()
        && m.len() == req.size
    {
        return Ok(Downloaded {
            path: req.dest.to_path_buf(),
            bytes: req.size,
            resumed_from: req.size,
            skipped: true,
            sha256: sha256_file(req.dest).await?,
        });
    }
    let part = part_path(req.dest);
    let (file, offset) = open_part(&part, req.size).await?;
    let resumed_from = offset;
    progress.event(Event::Started {
        file: label.clone(),
        total_bytes: req.size,
        parts: 1,
        done_bytes: offset,
        done_parts: 0,
    });
    let Stretch { file, .. } =
        fetch_all(http, req, Stretch { file, offset, restarts: 0 }, &part, &what, progress, exec).await?;
    commit(file, &part, req, &protocol).await?;
    progress.event(Event::PartDone { part: 1 });
    progress.event(Event::Finished);
    Ok(Downloaded {
        path: req.dest.to_path_buf(),
        bytes: req.size,
        resumed_from,
        skipped: false,
        sha256: sha256_file(req.dest).await?,
    })
}

/// The `.part` file, opened for appending, and how far an earlier run got (nothing when it
/// holds more than the whole).
async fn open_part(part: &Path, size: u64) -> Result<(tokio::fs::File, u64)> {
    let file = tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(part)
        .await
        .map_err(io_err(part))?;
    let mut offset = file.metadata().await.map_err(io_err(part))?.len();
    if offset > size {
        file.set_len(0).await.map_err(io_err(part))?;
        offset = 0;
    }
    Ok((file, offset))
}

/// Fetches the rest of the object into the `.part` file: one executor call per stretch of
/// progress, so only failures in a row count against the retries.
async fn fetch_all(
    http: &reqwest::Client,
    req: &DownloadRequest<'_>,
    stretch: Stretch,
    part: &Path,
    what: &str,
    progress: &dyn Progress,
    exec: &Executor,
) -> Result<Stretch> {
    let cancel = exec.cancel();
    let protocol = |message: String| Error::Protocol { provider: req.provider, what: what.to_string(), message };
    let interrupted = || Error::Interrupted {
        hint: format!("run the same command again: the download continues from {}", part.display()),
    };
    let host = url::Url::parse(req.url)
        .ok()
        .and_then(|u| u.host_str().map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0))));
    let on_retry = |n: &RetryNotice| {
        progress.event(Event::Retry { part: 1, attempt: n.attempt, reason: n.reason.clone(), delay: n.delay })
    };
    let call = Call {
        host: host.as_deref(),
        on_retry: Some(&on_retry),
        ..Call::new(req.provider, what, Kind::Fetch, &req.retry)
    };
    // An attempt that brought bytes starts a fresh call.
    let state = tokio::sync::Mutex::new(stretch);
    loop {
        if state.lock().await.offset >= req.size {
            break;
        }
        let (state, part, what, interrupted, protocol) = (&state, &part, &what, &interrupted, &protocol);
        exec.run(&call, |attempt| async move {
            let pulse = attempt.pulse;
            let mut st = state.lock().await;
            let st = &mut *st;
            let at_start = st.offset;
            let r = fetch_once(http, req, st, part, what, progress, cancel, interrupted, protocol, &pulse).await;
            if st.offset > req.size {
                let _ = st.file.set_len(0).await;
                return Err(Failure::Fatal(protocol(format!(
                    "the server sent more than the {} bytes the metadata announces",
                    req.size
                ))));
            }
            let r = match r {
                Ok(()) if st.offset == req.size => return Ok(()),
                Ok(()) => Err(Failure::Outcome {
                    outcome: Outcome::Transport(TransportKind::Other),
                    message: format!("the body ended after {} of {} bytes", st.offset, req.size),
                    retry_after: None,
                }),
                r => r,
            };
            match r {
                // Bytes arrived before it broke off: carry on from there at once, with the
                // retries counted afresh.
                Err(Failure::Outcome { message, .. }) if st.offset > at_start && req.retry.max_retries > 0 => {
                    progress.event(Event::Retry { part: 1, attempt: 1, reason: message, delay: Duration::ZERO });
                    Ok(())
                }
                r => r,
            }
        })
        .await
        .map_err(|e| match e {
            Error::Network { provider, what, message } => Error::Network {
                provider,
                what,
                message: format!("{message} (kept {} for a later run)", part.display()),
            },
            e => e,
        })?;
    }
    Ok(state.into_inner())
}

/// The whole object arrived: synced, its size checked, renamed into place durably.
async fn commit(
    mut file: tokio::fs::File,
    part: &Path,
    req: &DownloadRequest<'_>,
    protocol: &dyn Fn(String) -> Error,
) -> Result<()> {
    file.flush().await.map_err(io_err(part))?;
    file.sync_all().await.map_err(io_err(part))?;
    let len = file.metadata().await.map_err(io_err(part))?.len();
    drop(file);
    if len != req.size {
        return Err(protocol(format!("{} has {len} bytes, the metadata says {}", part.display(), req.size)));
    }
    let (part, dest) = (part.to_path_buf(), req.dest.to_path_buf());
    tokio::task::spawn_blocking(move || super::durable::rename_durable(&part, &dest))
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(io_err(req.dest))
}

/// The `.part` file and how far it got.
struct Stretch {
    file: tokio::fs::File,
    offset: u64,
    restarts: u32,
}

/// One GET of the rest of the file, appended to the `.part`.
#[allow(clippy::too_many_arguments)]
async fn fetch_once(
    http: &reqwest::Client,
    req: &DownloadRequest<'_>,
    st: &mut Stretch,
    part: &Path,
    what: &str,
    progress: &dyn Progress,
    cancel: &CancellationToken,
    interrupted: &dyn Fn() -> Error,
    protocol: &dyn Fn(String) -> Error,
    pulse: &Pulse,
) -> std::result::Result<(), Failure> {
    let retry = |message: String| Failure::Outcome {
        outcome: Outcome::Transport(TransportKind::Other),
        message,
        retry_after: None,
    };
    let fatal = Failure::Fatal;
    let offset = st.offset;
    let mut rq = http.get(req.url);
    if offset > 0 {
        rq = rq.header(reqwest::header::RANGE, format!("bytes={offset}-"));
    }
    let resp = tokio::select! {
        _ = cancel.cancelled() => return Err(fatal(interrupted())),
        r = pulse.send(rq) => r?,
    };
    let status = resp.status().as_u16();
    tracing::debug!(url = %safe_url(req.url), status, offset, "{what}");
    let body = |r: std::result::Result<(), String>| r.map_err(retry);
    match status {
        206 => {
            let range = resp.headers().get(reqwest::header::CONTENT_RANGE).and_then(|v| v.to_str().ok());
            match range.and_then(parse_content_range) {
                Some((start, total)) if start == offset && total.is_none_or(|t| t == req.size) => body(
                    stream_body(resp, st, part, req.size, &req.rate, progress, cancel, interrupted, pulse)
                        .await
                        .map_err(fatal)?,
                ),
                Some((_, Some(total))) if total != req.size => {
                    Err(fatal(protocol(format!("the server has {total} bytes, the metadata says {}", req.size))))
                }
                _ => {
                    let msg = format!("unexpected Content-Range {range:?}");
                    restart(st, part, progress, protocol).await.map_err(fatal)?;
                    Err(retry(msg))
                }
            }
        }
        200 => {
            if let Some(len) = resp.content_length()
                && len != req.size
            {
                return Err(fatal(protocol(format!("the server sends {len} bytes, the metadata says {}", req.size))));
            }
            if offset > 0 {
                // The range was ignored: the whole file comes again.
                restart(st, part, progress, protocol).await.map_err(fatal)?;
            }
            body(
                stream_body(resp, st, part, req.size, &req.rate, progress, cancel, interrupted, pulse)
                    .await
                    .map_err(fatal)?,
            )
        }
        416 => {
            let total = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().strip_prefix("bytes */"))
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(t) = total.filter(|t| *t != req.size) {
                return Err(fatal(protocol(format!("the server has {t} bytes, the metadata says {}", req.size))));
            }
            restart(st, part, progress, protocol).await.map_err(fatal)?;
            Err(retry("HTTP 416 for the rest of the .part file".into()))
        }
        _ => {
            let f = pulse.refusal(resp, MAX_ERROR_BODY, &[]).await;
            match f {
                Failure::Outcome { outcome: Outcome::Status { status, code }, message, .. }
                    if !(status >= 500 || status == 408 || status == 429) =>
                {
                    Err(fatal(Error::Rejected {
                        provider: req.provider,
                        what: format!("{what} from {}", safe_url(req.url)),
                        status,
                        code,
                        message,
                    }))
                }
                f => Err(f),
            }
        }
    }
}

/// Empties the `.part` file to start over; at most twice per download.
async fn restart(
    st: &mut Stretch,
    part: &Path,
    progress: &dyn Progress,
    protocol: &dyn Fn(String) -> Error,
) -> Result<()> {
    st.restarts += 1;
    if st.restarts > 2 {
        return Err(protocol("the server does not answer range requests consistently".into()));
    }
    st.file.set_len(0).await.map_err(io_err(part))?;
    if st.offset > 0 {
        progress.event(Event::Bytes { part: 1, delta: -(st.offset as i64) });
    }
    st.offset = 0;
    Ok(())
}

/// Appends the body at the stretch's offset. `Ok(Err(reason))` when the body broke off (retry).
#[allow(clippy::too_many_arguments)]
async fn stream_body(
    mut resp: reqwest::Response,
    st: &mut Stretch,
    part: &Path,
    size: u64,
    rate: &RateLimit,
    progress: &dyn Progress,
    cancel: &CancellationToken,
    interrupted: &dyn Fn() -> Error,
    pulse: &Pulse,
) -> Result<std::result::Result<(), String>> {
    let Stretch { file, offset, .. } = st;
    file.seek(std::io::SeekFrom::Start(*offset)).await.map_err(io_err(part))?;
    let limited = rate.is_limited();
    loop {
        let chunk = tokio::select! {
            _ = cancel.cancelled() => {
                file.flush().await.map_err(io_err(part))?;
                return Err(interrupted());
            }
            c = pulse.chunk(&mut resp) => c,
        };
        match chunk {
            Ok(Some(bytes)) => {
                // Paying the limit and writing the disk are this side's waits, not the network's.
                let _hold = pulse.hold();
                if limited {
                    // Paying for what arrived before reading more: the socket fills up and
                    // TCP slows the sender down to the limit.
                    tokio::select! {
                        _ = cancel.cancelled() => {
                            file.write_all(&bytes).await.map_err(io_err(part))?;
                            file.flush().await.map_err(io_err(part))?;
                            return Err(interrupted());
                        }
                        _ = rate.consume(bytes.len() as u64) => {}
                    }
                }
                file.write_all(&bytes).await.map_err(io_err(part))?;
                *offset += bytes.len() as u64;
                progress.event(Event::Bytes { part: 1, delta: bytes.len() as i64 });
                if *offset > size {
                    return Ok(Ok(()));
                }
            }
            Ok(None) => {
                file.flush().await.map_err(io_err(part))?;
                return Ok(Ok(()));
            }
            Err(e) => {
                file.flush().await.map_err(io_err(part))?;
                let message = match pulse.transport(&e) {
                    Failure::Outcome { message, .. } => message,
                    _ => "the connection failed".into(),
                };
                return Ok(Err(format!("the body broke off: {message}")));
            }
        }
    }
}

/// `bytes START-END/TOTAL` → (START, TOTAL unless `*`).
pub fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = if total.trim() == "*" { None } else { Some(total.trim().parse().ok()?) };
    Some((start.trim().parse().ok()?, total))
}

async fn sha256_file(path: &Path) -> Result<String> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(&p).map_err(io_err(&p))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io_err(&p))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex::encode(h.finalize()))
    })
    .await
    .map_err(|e| Error::File { path: path.to_path_buf(), source: std::io::Error::other(e) })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 100-199/1000"), Some((100, Some(1000))));
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(part_path(Path::new("/d/model.ply")), Path::new("/d/model.ply.part"));
    }
}
