//! The HTTP/1.1 accept loop shared by both servers (plain, or over TLS when started with a
//! certificate).
//!
//! Our own loop (rather than `axum::serve`) so that a handler can drop its connection without
//! answering, as a network failure would ([`ConnHandle::abort`]): the connection task then drops
//! the socket with `SO_LINGER` 0, which sends a TCP RST.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use futures::StreamExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::faults::Stall;
use crate::state::Shared;

/// What the `stop_reading` stall reads of a request body before it stops.
const STOP_READING_AFTER: usize = 64 * 1024;

/// `stream` at `bps` bytes per second: its pieces cut to a quarter second of the rate, each
/// followed by its time.
fn paced(
    stream: axum::body::BodyDataStream,
    bps: u64,
) -> impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Send + 'static {
    let bps = bps.max(1);
    let piece = (bps / 4).max(1) as usize;
    stream
        .flat_map(move |r| {
            let pieces: Vec<Result<axum::body::Bytes, axum::Error>> = match r {
                Ok(mut b) => {
                    let mut v = vec![];
                    while b.len() > piece {
                        v.push(Ok(b.split_to(piece)));
                    }
                    v.push(Ok(b));
                    v
                }
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(pieces)
        })
        .then(move |r| async move {
            if let Ok(b) = &r {
                tokio::time::sleep(std::time::Duration::from_secs_f64(b.len() as f64 / bps as f64)).await;
            }
            r
        })
}

/// Lets a handler abort the connection its request came on. Present in every request's
/// extensions.
#[derive(Clone, Default)]
pub struct ConnHandle {
    aborted: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl ConnHandle {
    /// Drops the connection without a response. The caller should then wait forever
    /// (`std::future::pending`): its future is dropped with the connection.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }
}

/// The socket, reset instead of closed on drop when its connection was aborted.
struct AbortableIo {
    inner: TcpStream,
    aborted: Arc<AtomicBool>,
}

impl Drop for AbortableIo {
    fn drop(&mut self) {
        if self.aborted.load(Ordering::SeqCst) {
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for AbortableIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AbortableIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves `router` on `listener` until `cancel` fires; request body bytes are counted in
/// `shared.received` as the handlers read them.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shared: Arc<Shared>,
    server: &'static str,
    tls: Option<tokio_rustls::TlsAcceptor>,
    cancel: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = ConnHandle::default();
        let plain = AbortableIo { inner: stream, aborted: conn.aborted.clone() };
        let router = router.clone();
        let handle = conn.clone();
        let shared = shared.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(handle.clone());
            let shared = shared.clone();
            let req = req.map(|body| {
                axum::body::Body::new(body.map_frame(move |frame| {
                    if let Some(data) = frame.data_ref() {
                        shared.received.add(data.len());
                        if server == "s3" {
                            shared.received_s3.add(data.len());
                        }
                    }
                    frame
                }))
            });
            router.clone().oneshot(req)
        });
        let cancel = cancel.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let io = match tls {
                None => Either::Left(plain),
                Some(acceptor) => match acceptor.accept(plain).await {
                    Ok(stream) => Either::Right(stream),
                    Err(e) => {
                        tracing::debug!("TLS handshake failed: {e}");
                        return;
                    }
                },
            };
            let io = TokioIo::new(io);
            let connection = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(io, svc);
            tokio::select! {
                r = connection => {
                    if let Err(e) = r {
                        tracing::debug!("connection ended: {e}");
                    }
                }
                _ = conn.notify.notified() => tracing::debug!("connection aborted"),
                _ = cancel.cancelled() => {}
            }
        });
    }
}

/// Adds the layers every server has: the request log, the in-flight gauges, the latency
/// fault, the lost answers and the stalls ([`crate::faults::Stall`]).
pub fn with_common_layers(router: Router, shared: Arc<Shared>, server: &'static str) -> Router {
    router.layer(middleware::from_fn_with_state((shared, server), log_and_delay))
}

async fn log_and_delay(
    State((shared, server)): State<(Arc<Shared>, &'static str)>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let gauge = if server == "s3" { &shared.in_flight_s3 } else { &shared.in_flight_api };
    let _counted = gauge.enter();
    let conn = req.extensions().get::<ConnHandle>().cloned();
    // A made-up answer: the call is not carried out.
    let fake = shared.faults.lock().unwrap().on_fake(&method, &path);
    if let Some(answer) = fake {
        tracing::debug!(server, %method, %path, status = answer.status, "fault: a made-up answer");
        shared.record(server, &method, &path, answer.status);
        return made_up(answer);
    }
    let stall = shared.faults.lock().unwrap().on_request(&method, &path);
    match stall {
        Some(Stall::Hang) => {
            tracing::debug!(server, %method, %path, "fault: accepted, never answered");
            shared.record(server, &method, &path, 0);
            // The request (and its unread body) stays alive until the client gives up.
            let _kept = req;
            return std::future::pending::<Response>().await;
        }
        Some(Stall::StopReading) => {
            tracing::debug!(server, %method, %path, "fault: the body stops being read");
            shared.record(server, &method, &path, 0);
            let mut body = req.into_body().into_data_stream();
            let mut read = 0;
            while read < STOP_READING_AFTER {
                match body.next().await {
                    Some(Ok(b)) => read += b.len(),
                    _ => break,
                }
            }
            let _kept = body;
            return std::future::pending::<Response>().await;
        }
        _ => {}
    }
    let req = match stall {
        Some(Stall::TrickleRead(bps)) => req.map(|b| axum::body::Body::from_stream(paced(b.into_data_stream(), bps))),
        _ => req,
    };
    let resp = next.run(req).await;
    let resp = match stall {
        Some(Stall::StallBody) => {
            tracing::debug!(server, %method, %path, "fault: the answer's body stalls");
            let (mut head, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
            if bytes.is_empty() {
                // Sent chunked, and never ended.
                head.headers.remove(axum::http::header::CONTENT_LENGTH);
            }
            let half = bytes.slice(..bytes.len() / 2);
            let stream =
                futures::stream::once(async move { Ok::<_, std::io::Error>(half) }).chain(futures::stream::pending());
            Response::from_parts(head, axum::body::Body::from_stream(stream))
        }
        Some(Stall::Trickle(bps)) => resp.map(|b| axum::body::Body::from_stream(paced(b.into_data_stream(), bps))),
        _ => resp,
    };
    let latency = shared.faults.lock().unwrap().latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let status = resp.status().as_u16();
    // A lost answer: the call was carried out (its handler ran), the client never hears.
    if resp.status().is_success()
        && let Some(conn) = conn
        && shared.faults.lock().unwrap().on_answer(&method, &path)
    {
        tracing::debug!(server, %method, %path, status, "fault: the answer is lost");
        shared.record(server, &method, &path, 0);
        conn.abort();
        std::future::pending::<()>().await;
    }
    // The call was carried out; its answer is replaced.
    if resp.status().is_success() {
        let replaced = shared.faults.lock().unwrap().on_replace(&method, &path);
        if let Some(answer) = replaced {
            tracing::debug!(server, %method, %path, status = answer.status, "fault: the answer is replaced");
            shared.record(server, &method, &path, answer.status);
            return made_up(answer);
        }
    }
    tracing::debug!(server, %method, %path, status);
    shared.record(server, &method, &path, status);
    resp
}

fn made_up(answer: crate::faults::MadeUp) -> Response {
    let mut resp = match &answer.body {
        Some(v) => {
            let mut r = Response::new(axum::body::Body::from(v.to_string()));
            r.headers_mut()
                .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
            r
        }
        None => Response::new(axum::body::Body::empty()),
    };
    *resp.status_mut() = axum::http::StatusCode::from_u16(answer.status).unwrap_or(axum::http::StatusCode::OK);
    resp
}
