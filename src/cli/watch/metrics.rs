//! `upload watch --metrics ADDR`: Prometheus metrics of a long-running watcher, served at
//! `/metrics` (the Prometheus text format 0.0.4, written by the `prometheus-client` crate) and
//! `200 ok` at `/healthz`.
//!
//! Every metric is an atomic counter or gauge: the watcher and the uploads' progress update
//! them without a lock, a scrape reads them (the label families take a read lock for the
//! moment of the encoding, never across an upload), so a scrape never waits on an upload and an
//! upload never waits on a scrape.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::engine::progress::{Event, Progress};
use crate::error::{Error, Result};

/// The labels of `upload_files_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabels {
    provider: String,
    status: String,
}

/// The label of the per-provider counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

/// The watcher's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    uploaded: Counter,
    skipped: Counter,
    failed: Counter,
    bytes_sent: Counter,
    part_retries: Counter,
    in_flight: Gauge,
    queue: Gauge,
    last_success: Gauge<f64, AtomicU64>,
    rate_limit: Gauge,
}

impl Metrics {
    /// The metrics of a watcher uploading to `provider`, every series present from the start
    /// (at zero).
    pub(crate) fn new(provider: &str) -> Self {
        let mut registry = Registry::default();
        let files = Family::<FileLabels, Counter>::default();
        registry.register(
            "upload_files",
            "Files (or bulk-images directories) that ended, by how: uploaded, skipped (uploaded before, or not a file the provider takes), failed",
            files.clone(),
        );
        let by_status = |status: &str| {
            files.get_or_create_owned(&FileLabels { provider: provider.to_string(), status: status.to_string() })
        };
        let (uploaded, skipped, failed) = (by_status("uploaded"), by_status("skipped"), by_status("failed"));
        let per_provider = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<ProviderLabel, Counter>::default();
            registry.register(name, help, family.clone());
            family.get_or_create_owned(&ProviderLabel { provider: provider.to_string() })
        };
        let bytes_sent = per_provider(
            &mut registry,
            "upload_bytes_sent",
            "Bytes of parts handed to the network by this watcher (a part sent again counts again)",
        );
        let part_retries = per_provider(
            &mut registry,
            "upload_part_retries",
            "Attempts at a part (or a whole-file request) that failed and were tried again",
        );
        let in_flight = Gauge::default();
        registry.register("upload_files_in_flight", "Files being uploaded now", in_flight.clone());
        let queue = Gauge::default();
        registry.register(
            "upload_queue_files",
            "Files seen and not yet started: waiting to settle, or for a free upload slot",
            queue.clone(),
        );
        let last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "upload_last_success_timestamp_seconds",
            "When the last file was uploaded (Unix time); 0 before the first",
            last_success.clone(),
        );
        let rate_limit = Gauge::default();
        registry.register(
            "upload_rate_limit_bytes_per_second",
            "The bandwidth limit in force (--limit-rate, its timetable's current entry); 0 when there is none",
            rate_limit.clone(),
        );
        Metrics {
            registry,
            uploaded,
            skipped,
            failed,
            bytes_sent,
            part_retries,
            in_flight,
            queue,
            last_success,
            rate_limit,
        }
    }

    /// A file was uploaded now.
    pub(crate) fn uploaded(&self) {
        self.uploaded.inc();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.last_success.set(now.as_secs_f64());
    }

    /// A file was skipped.
    pub(crate) fn skipped(&self) {
        self.skipped.inc();
    }

    /// A file failed.
    pub(crate) fn failed(&self) {
        self.failed.inc();
    }

    /// The files in flight and waiting now, and the bandwidth limit in force (`None`: off).
    pub(crate) fn set_state(&self, in_flight: usize, queued: usize, rate: Option<u64>) {
        self.in_flight.set(in_flight as i64);
        self.queue.set(queued as i64);
        self.rate_limit.set(rate.unwrap_or(0).min(i64::MAX as u64) as i64);
    }

    /// The text of a scrape.
    fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }

    /// `inner`, with its bytes and retries counted here.
    pub(crate) fn progress(self: &Arc<Self>, inner: Arc<dyn Progress>) -> Arc<dyn Progress> {
        Arc::new(Metered { inner, metrics: self.clone() })
    }
}

/// A file's progress, counted into the metrics on its way to the bars.
struct Metered {
    inner: Arc<dyn Progress>,
    metrics: Arc<Metrics>,
}

impl Progress for Metered {
    fn event(&self, event: Event) {
        match &event {
            Event::Bytes { delta, .. } if *delta > 0 => {
                self.metrics.bytes_sent.inc_by(*delta as u64);
            }
            Event::Retry { part, .. } if *part > 0 => {
                self.metrics.part_retries.inc();
            }
            _ => {}
        }
        self.inner.event(event)
    }
}

/// `--metrics ADDR`: `HOST:PORT` (an IP address, `localhost`, `[::1]:PORT`), or a port alone,
/// which listens on loopback (127.0.0.1).
pub(crate) fn parse_addr(text: &str) -> std::result::Result<SocketAddr, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "'{text}' is not an address to listen on: give HOST:PORT such as 127.0.0.1:9184 (0.0.0.0:9184 for every interface), or a port alone for loopback"
        )
    };
    if let Ok(port) = t.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(addr) = t.parse::<SocketAddr>() {
        return Ok(addr);
    }
    match t.rsplit_once(':') {
        Some(("localhost", port)) => {
            port.parse::<u16>().map(|p| SocketAddr::from(([127, 0, 0, 1], p))).map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

/// Listens on `addr` and serves the metrics until the process ends; returns the address bound
/// (its port when `addr` asked for port 0). A port that cannot be had is a usage error (exit 2).
pub(crate) async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<SocketAddr> {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::usage(
            format!("--metrics {addr}: cannot listen there: {e}"),
            "give a free port (or 127.0.0.1:0 for any), on an address of this machine",
        )
    })?;
    let bound = listener.local_addr().map_err(|e| Error::File { path: "<--metrics socket>".into(), source: e })?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    let body = metrics.encode();
                    ([(header::CONTENT_TYPE, prometheus_client::encoding::prometheus_text::CONTENT_TYPE)], body)
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: /metrics or /healthz\n") });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("--metrics: the server stopped: {e}");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_bare_ports() {
        assert_eq!(parse_addr("9184").unwrap(), "127.0.0.1:9184".parse().unwrap());
        assert_eq!(parse_addr("0.0.0.0:9184").unwrap(), "0.0.0.0:9184".parse().unwrap());
        assert_eq!(parse_addr("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert_eq!(parse_addr("localhost:80").unwrap(), "127.0.0.1:80".parse().unwrap());
        for bad in ["", "host", "example.com:80", "1.2.3.4", "127.0.0.1:99999", ":80"] {
            assert!(parse_addr(bad).unwrap_err().contains("HOST:PORT"), "{bad}");
        }
    }

    #[test]
    fn every_series_is_there_from_the_start_and_counts() {
        let m = Arc::new(Metrics::new("teleport"));
        m.uploaded();
        m.failed();
        m.set_state(2, 5, Some(1 << 20));
        let p = m.progress(Arc::new(crate::engine::progress::NoProgress));
        p.event(Event::Bytes { part: 1, delta: 1000 });
        p.event(Event::Bytes { part: 1, delta: -400 });
        p.event(Event::Retry { part: 1, attempt: 1, reason: String::new(), delay: std::time::Duration::ZERO });
        let text = m.encode();
        for line in [
            "upload_files_total{provider=\"teleport\",status=\"uploaded\"} 1",
            "upload_files_total{provider=\"teleport\",status=\"skipped\"} 0",
            "upload_files_total{provider=\"teleport\",status=\"failed\"} 1",
            "upload_bytes_sent_total{provider=\"teleport\"} 1000",
            "upload_part_retries_total{provider=\"teleport\"} 1",
            "upload_files_in_flight 2",
            "upload_queue_files 5",
            "upload_rate_limit_bytes_per_second 1048576",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
        assert!(text.contains("# TYPE upload_last_success_timestamp_seconds gauge"), "{text}");
    }
}
