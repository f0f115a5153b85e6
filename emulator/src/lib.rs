//! A local emulator of the upload APIs the `upload` client talks to, with an S3-compatible
//! object store behind them.
//!
//! [`Emulator::start`] binds two loopback HTTP servers:
//!
//! * the **provider API** ([`Emulator::api_url`]): Varjo Teleport under `/api/v1` (see
//!   [`teleport`]), TruVideo Upload V3 under `/upload` (see [`truvideo`]), Apertur under
//!   `/api/v1` (see [`apertur`]), the vendors' sign-in endpoints `/oauth2/token` and
//!   `/api/login` handing out short-lived tokens (see [`signin`]), plus an unauthenticated
//!   admin API under `/_emulator` (see [`admin`]);
//! * an **S3-compatible store** ([`Emulator::s3_url`]), path-style `/{bucket}/{key}`, bucket
//!   `uploads`, that accepts presigned `PUT`s (SigV4 query authentication, checked exactly as
//!   AWS does; see [`s3`] and [`s3::sigv4`]).
//!
//! Faults ([`Faults`]) can be injected at start or at run time ([`Emulator::set_faults`]):
//! failing or dropped part uploads, latency, bandwidth limits, spurious 401s, failing
//! completions, early URL expiry.
//!
//! Both servers speak https instead when started with a certificate ([`Emulator::start_tls`],
//! `upload-emulator --tls-cert PEM --tls-key PEM`): the benchmark's TLS scenario and the
//! https tests.
//!
//! Objects are kept in memory (the default: fast, for tests with small files), or on disk as
//! part files under [`Config::state_dir`], or under a temporary directory removed when the
//! emulator stops ([`Config::temp_state_dir`]: what `upload --emulate` and the binary use, so
//! that memory does not grow with the files). Bodies are streamed into their file with MD5 (the
//! ETag) computed on the way; a single PUT or POST also gets its SHA-256 on the way, a
//! multipart object's is computed from its part files on first request and cached
//! ([`Emulator::objects`]). Completion keeps the list of part files: nothing is copied.

// Handlers return `Result<_, Response>` so that `?` ends a request with its error response;
// a `Response` is large, but these are error paths, taken once per request at most.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod admin;
pub mod apertur;
pub mod auth;
pub mod cli;
pub mod fastapi;
pub mod faults;
pub mod meter;
pub mod pace;
pub mod s3;
mod server;
pub mod signin;
pub mod state;
pub mod teleport;
pub mod truvideo;
pub mod uplift;

pub use s3::sigv4;
pub use s3::{CompleteError, Store};

/// Access key id the S3 store signs its presigned URLs with.
pub const ACCESS_KEY_ID: &str = "EMULATORKEY";
/// Secret of [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "emulator/secret/KEY0123456789abcdefghij";
/// Region of the S3 store.
pub const REGION: &str = "us-east-1";
/// The bucket every provider stores its uploads in.
pub const BUCKET: &str = "uploads";
/// S3's minimum size of every part but the last.
pub const S3_MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's maximum part size.
pub const S3_MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's maximum part number.
pub const S3_MAX_PARTS: u32 = 10_000;

/// One `upload` command per provider against an emulator at `api_url` accepting `token`, each
/// with the kind of file the provider takes (`FILE.zip`, `FILE.mp4`, `FILE.mov`, `FILE.jpg`)
/// and the flags it requires: the binary prints them as its `try:` lines.
pub fn try_commands(api_url: &str, token: &str) -> Vec<String> {
    let common = format!("--endpoint {api_url} --token {token}");
    vec![
        format!("upload FILE.zip --provider teleport {common}"),
        format!("upload FILE.mp4 --provider truvideo {common}"),
        format!(
            "upload FILE.mov --provider uplift {common} --athlete-id aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee --activity golf --movement full_swing --camera-setup single.down_the_line --orientation landscape"
        ),
        format!("upload FILE.jpg --provider apertur {common}"),
    ]
}

/// How the emulator behaves. Build with `Config { field: value, ..Default::default() }`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Accepted Bearer tokens (default `["emulator-token"]`).
    pub tokens: Vec<String>,
    /// `chunk_size` Teleport hands out (default 8 MiB).
    pub teleport_chunk_size: u64,
    /// Presigned URL lifetime, `X-Amz-Expires` (default 3600 s; rounded up to whole seconds).
    pub url_ttl: Duration,
    /// `None`: objects in memory (unless [`Config::temp_state_dir`]); `Some(dir)`: part files
    /// written under `dir` as they arrive, left there when the emulator stops.
    pub state_dir: Option<PathBuf>,
    /// Without `state_dir`: part files under a new temporary directory (in the system's
    /// temporary directory, `TMPDIR`), removed when the emulator stops. Default false (memory).
    pub temp_state_dir: bool,
    /// Injected faults (changeable at run time with [`Emulator::set_faults`]).
    pub faults: Faults,
    /// How captures progress after completion.
    pub processing: Processing,
    /// Smallest size of every part but the last at completion (`EntityTooSmall` below it).
    /// Default 5 MiB, as S3; lower it to test with small files.
    pub min_part_size: u64,
    /// Uplift's knobs: upload form lifetime, expired reservations or policies, bad signatures.
    pub uplift: uplift::UpliftConfig,
    /// Size of a READY Teleport capture's hd `.ply` model (other profiles and qualities are
    /// smaller; see [`teleport::model_files`]). Default 3 MiB + 12,345 bytes.
    pub teleport_model_size: u64,
    /// How many presigned URLs TruVideo's `POST /upload/start` hands out (for parts 1..=N);
    /// the client asks the rest from `GET /upload/{uploadId}/parts` (default 10).
    pub truvideo_initial_urls: u32,
    /// A TruVideo whose additional-URLs contract differs from the client's reading of the
    /// docs: `GET /upload/{uploadId}/parts?count=N` hands out URLs for parts 1..=N (whatever was
    /// handed out before) and leaves `partNumber` out of the entries. Default false.
    pub truvideo_more_urls_from_one: bool,
    /// TruVideo URL entries carry `partNumber` as a string (`"3"`) and `expiresAt` as
    /// milliseconds since the epoch (a number). Default false (a number and an RFC 3339 time).
    pub truvideo_text_numbers: bool,
    /// Apertur's knobs (failing destinations, delivery steps, throttling, signing secret...).
    pub apertur: apertur::AperturConfig,
    /// Teleport sign-in `client_id` (default `emulator-client`; see [`signin`]).
    pub teleport_client_id: String,
    /// Teleport sign-in `client_secret` (default `emulator-client-secret`).
    pub teleport_client_secret: String,
    /// TruVideo login `x-authentication-api-key` (default `emulator-api-key`).
    pub truvideo_api_key: String,
    /// TruVideo login secret key, the HMAC key of the signature (default `emulator-secret-key`).
    pub truvideo_secret_key: String,
    /// TruVideo login `x-multitenant-external-id` (default `emulator-tenant`).
    pub truvideo_external_id: String,
    /// Lifetime of the tokens the sign-in endpoints hand out (default 3600 s); they are
    /// refused with 401 once expired.
    pub token_lifetime: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tokens: vec!["emulator-token".into()],
            teleport_chunk_size: 8 * 1024 * 1024,
            url_ttl: Duration::from_secs(3600),
            state_dir: None,
            temp_state_dir: false,
            faults: Faults::default(),
            processing: Processing::default(),
            min_part_size: S3_MIN_PART_SIZE,
            uplift: uplift::UpliftConfig::default(),
            teleport_model_size: 3 * 1024 * 1024 + 12_345,
            truvideo_initial_urls: 10,
            truvideo_more_urls_from_one: false,
            truvideo_text_numbers: false,
            apertur: apertur::AperturConfig::default(),
            teleport_client_id: "emulator-client".into(),
            teleport_client_secret: "emulator-client-secret".into(),
            truvideo_api_key: "emulator-api-key".into(),
            truvideo_secret_key: "emulator-secret-key".into(),
            truvideo_external_id: "emulator-tenant".into(),
            token_lifetime: Duration::from_secs(3600),
        }
    }
}

/// Faults to inject. All default to "off".
///
/// Counters (`fail_put_nth`, `unauthorized_api_call_nth`, `complete_fail_times`) count from
/// the start of the emulator, and again from zero after each [`Emulator::set_faults`], which
/// also reseeds the random generator.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// 1-based numbers, in a global counter of object PUTs received by the store (those that
    /// pass the length, signature and upload checks), of the PUTs that answer `fail_status`
    /// (after their body has been read).
    pub fail_put_nth: Vec<u64>,
    /// Fraction (0..=1) of PUTs answering `fail_status` (seeded RNG, `seed`).
    pub fail_put_ratio: f64,
    /// Status of a failed PUT: 0 means 500 (`InternalError`); 503 answers `SlowDown`.
    pub fail_status: u16,
    /// Fraction of PUTs whose connection is dropped (reset) after half the body was read,
    /// without a response.
    pub reset_ratio: f64,
    /// Seed of the RNG behind the ratios.
    pub seed: u64,
    /// Added before every response (API and S3).
    pub latency_ms: u64,
    /// Throttle of each S3 PUT/POST body read, bytes per second (0 = unlimited): a cap per
    /// connection.
    pub bandwidth_bps: u64,
    /// Throttle of all S3 PUT/POST body reads together, bytes per second (0 = unlimited): a
    /// link shared by every connection (see [`pace`]).
    pub total_bandwidth_bps: u64,
    /// 1-based numbers, in a counter of provider API calls, of the calls answering 401 even
    /// with a good token.
    pub unauthorized_api_call_nth: Vec<u64>,
    /// 1-based numbers, in the same counter of provider API calls, of the calls answering
    /// 429 with `Retry-After: 1` (checked before the token).
    pub throttle_api_call_nth: Vec<u64>,
    /// The first N completion calls answer 500, then completion works.
    pub complete_fail_times: u32,
    /// Presigned URLs are refused as expired this long after they were signed (on top of
    /// their own `X-Amz-Expires`).
    pub expire_urls_after_ms: Option<u64>,
    /// Teleport model downloads (`GET` of a model file, counted from 1) number 1 to
    /// `model_cut_times` send only `model_cut_after` bytes of their body, then drop the
    /// connection.
    pub model_cut_times: u32,
    /// See `model_cut_times`.
    pub model_cut_after: u64,
    /// Lost answers: each entry, `METHOD /path` where a path segment may be `*` (e.g.
    /// `POST /api/v1/captures/*/uploaded`), names a call whose first matching request is
    /// carried out in full and then answered by dropping the connection: the server acted,
    /// the client never hears. An entry repeated N times loses the first N answers.
    pub lose_answer: Vec<String>,
    /// Stalls, as networks make them (any server, by call): each entry is
    /// `[COUNT ]METHOD /path`, where COUNT is how many matching requests stall (default 1) or
    /// `always`, METHOD may be `*`, a path segment `*` is any one segment and a last segment
    /// `**` any number of them (`always PUT /**`: every object PUT). See [`faults::Stall`].
    /// `hang`: the request is accepted and never answered (its body is not read, its handler
    /// never runs).
    pub hang: Vec<String>,
    /// `stall_body`: the call is carried out, its answer's head is sent with the first half of
    /// its body, and the rest never comes (an empty body is sent chunked and never ended).
    pub stall_body: Vec<String>,
    /// `trickle`: the call is carried out and its answer's body sent at `trickle_bps` bytes per
    /// second.
    pub trickle: Vec<String>,
    /// `trickle_read`: the request body is read at `trickle_bps` bytes per second.
    pub trickle_read: Vec<String>,
    /// Bytes per second of `trickle` and `trickle_read` (0 means 1024).
    pub trickle_bps: u64,
    /// `stop_reading`: the first 64 KiB of the request body are read, then nothing more, and
    /// no answer comes.
    pub stop_reading: Vec<String>,
    /// Answers made up without carrying the call out: each entry, `[N:]METHOD /path STATUS
    /// [BODY]` (path segments may be `*`; `N:` picks the N-th matching call, default the
    /// first), answers that call with STATUS and BODY (JSON, default empty) and never reaches
    /// its handler: e.g. `POST /api/v1/captures/*/uploaded 200 null` (a completion answered 200
    /// that did nothing), `2:POST /api/v1/captures 500 {"detail":"x"}`. Each entry is spent once.
    pub fake_answer: Vec<String>,
    /// Like `fake_answer`, but the call is carried out first and only its answer (a success)
    /// replaced: the server acted, the client hears STATUS and BODY (e.g.
    /// `POST /api/v1/captures/*/uploaded 200 {"detail":"ok"}`).
    pub replace_answer: Vec<String>,
    /// Bytes altered on the way to a store that does not check `Content-MD5`: each entry,
    /// `[COUNT ]METHOD /path` as in `hang`, names object PUTs whose body the store receives with
    /// its first byte flipped; it keeps those bytes, ignores the request's `Content-MD5` and
    /// answers the ETag (MD5) of what it kept, as a store would.
    pub corrupt_put: Vec<String>,
    /// S3 error answers to object uploads (PUT, POST), e.g. of a presigned URL that signs a
    /// checksum: each entry, `[N:]METHOD /path STATUS CODE` (the N-th matching call, default
    /// the first; path segments may be `*`, a last `**` any rest), reads the request's body
    /// and answers STATUS with an S3 error document of CODE (`BadDigest`,
    /// `XAmzContentChecksumMismatch`, `HeadersNotSigned`, ...), storing nothing. `always` for
    /// N answers every matching call so. Each other entry is spent once.
    pub s3_error: Vec<String>,
}

/// How an upload progresses after completion, spread over `delay_ms`: a Teleport capture goes
/// UPLOADED, PROCESSING, then READY (or ERROR when `fail_reason` is set; see [`teleport`]); a
/// TruVideo upload stays PENDING_COMPLETE, then becomes COMPLETED (or FAILED with
/// `failureReason` = `fail_reason`; see [`truvideo`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Processing {
    pub delay_ms: u64,
    /// `None`: processing succeeds; `Some(reason)`: ends in ERROR with this `error_reason`
    /// (e.g. `NOT_ENOUGH_FRAMES`), or FAILED with this `failureReason` for TruVideo.
    pub fail_reason: Option<String>,
}

/// A completed object in the store.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Object key in the bucket; Teleport stores `teleport/{eid}/{name}`, TruVideo
    /// `truvideo/{uploadId}/{mediaId}.{ext}`.
    pub key: String,
    pub size: u64,
    /// Hex, lower-case SHA-256 of the object's bytes.
    pub sha256: String,
    /// Number of parts (1 for a single PUT).
    pub parts: u32,
    /// S3 ETag, quotes included: `"<md5>"` for a single PUT, `"<md5 of md5s>-<parts>"` for a
    /// multipart upload.
    pub etag: String,
    /// `teleport`, ...
    pub provider: String,
    /// The provider's id of the upload (Teleport: the capture eid; TruVideo: the uploadId).
    pub id: String,
}

/// One request received by either server.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestRecord {
    /// `api` or `s3`.
    pub server: String,
    pub method: String,
    /// Path as received, without the query.
    pub path: String,
    /// Status answered; 0 when the connection was dropped without a response.
    pub status: u16,
}

/// A running emulator. Dropping it (or [`Emulator::shutdown`]) stops both servers.
pub struct Emulator {
    shared: Arc<state::Shared>,
    api_addr: SocketAddr,
    s3_addr: SocketAddr,
    scheme: &'static str,
    cancel: CancellationToken,
    /// The [`Config::temp_state_dir`] directory, removed on drop (after the servers stopped
    /// taking requests: a request still running then cannot make it again).
    temp_dir: Option<tempfile::TempDir>,
}

/// A TLS server configuration from a PEM certificate chain and a PEM private key (PKCS#8,
/// SEC1 or PKCS#1), for [`Emulator::start_tls`].
pub fn tls_config(
    cert_pem: &std::path::Path,
    key_pem: &std::path::Path,
) -> Result<Arc<tokio_rustls::rustls::ServerConfig>, String> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_pem)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert_pem.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", cert_pem.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_pem).map_err(|e| format!("{}: {e}", key_pem.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{}: {e}", cert_pem.display()))?;
    Ok(Arc::new(config))
}

impl Emulator {
    /// Starts both servers on free loopback ports.
    pub async fn start(config: Config) -> std::io::Result<Emulator> {
        Self::start_on(config, 0, 0).await
    }

    /// Starts both servers on `127.0.0.1:api_port` and `127.0.0.1:s3_port` (0 = any free port).
    pub async fn start_on(config: Config, api_port: u16, s3_port: u16) -> std::io::Result<Emulator> {
        Self::start_with(config, api_port, s3_port, None).await
    }

    /// Like [`Emulator::start_on`], both servers over https with `tls` (see [`tls_config`]):
    /// the URLs (and the presigned ones) are then `https://127.0.0.1:PORT`, so the
    /// certificate must name the IP address 127.0.0.1.
    pub async fn start_tls(
        config: Config,
        api_port: u16,
        s3_port: u16,
        tls: Arc<tokio_rustls::rustls::ServerConfig>,
    ) -> std::io::Result<Emulator> {
        Self::start_with(config, api_port, s3_port, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn start_with(
        mut config: Config,
        api_port: u16,
        s3_port: u16,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<Emulator> {
        let api = TcpListener::bind(("127.0.0.1", api_port)).await?;
        let s3l = TcpListener::bind(("127.0.0.1", s3_port)).await?;
        let api_addr = api.local_addr()?;
        let s3_addr = s3l.local_addr()?;
        let mut temp_dir = None;
        if config.state_dir.is_none() && config.temp_state_dir {
            let t = tempfile::Builder::new().prefix("upload-emulator-").tempdir()?;
            config.state_dir = Some(t.path().to_path_buf());
            temp_dir = Some(t);
        }
        if let Some(dir) = &config.state_dir {
            // The store makes only the directories of single uploads below these.
            std::fs::create_dir_all(dir.join("parts"))?;
            std::fs::create_dir_all(dir.join("objects"))?;
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let shared = Arc::new(state::Shared::new(config, format!("{scheme}://{s3_addr}")));
        let cancel = CancellationToken::new();
        let api_router = teleport::router(shared.clone())
            .merge(signin::router(shared.clone()))
            .merge(truvideo::router(shared.clone()))
            .merge(uplift::router(shared.clone()))
            .merge(apertur::router(shared.clone()))
            .merge(admin::router(shared.clone()));
        let api_router = server::with_common_layers(api_router, shared.clone(), "api");
        let s3_router = server::with_common_layers(s3::router(shared.clone()), shared.clone(), "s3");
        tokio::spawn(server::serve(api, api_router, shared.clone(), "api", tls.clone(), cancel.clone()));
        tokio::spawn(server::serve(s3l, s3_router, shared.clone(), "s3", tls, cancel.clone()));
        tracing::info!(%api_addr, %s3_addr, scheme, "emulator started");
        Ok(Emulator { shared, api_addr, s3_addr, scheme, cancel, temp_dir })
    }

    /// Where object bytes are kept: [`Config::state_dir`], or the temporary directory of
    /// [`Config::temp_state_dir`]; `None` in memory.
    pub fn state_dir(&self) -> Option<&std::path::Path> {
        self.shared.config.state_dir.as_deref()
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS) of the provider API (no trailing slash).
    pub fn api_url(&self) -> String {
        format!("{}://{}", self.scheme, self.api_addr)
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS) of the S3 store (no trailing slash).
    pub fn s3_url(&self) -> String {
        format!("{}://{}", self.scheme, self.s3_addr)
    }

    /// The first accepted token.
    pub fn token(&self) -> String {
        self.shared.config.tokens.first().cloned().unwrap_or_default()
    }

    /// The emulator's shared state (store, captures, faults), for in-process extensions.
    pub fn shared(&self) -> &Arc<state::Shared> {
        &self.shared
    }

    /// Every completed object, by key. Computes (and caches) missing SHA-256 sums: this reads
    /// every new object once.
    pub fn objects(&self) -> Vec<ObjectInfo> {
        self.shared.store.objects()
    }

    /// The completed object at `key`.
    pub fn object(&self, key: &str) -> Option<ObjectInfo> {
        self.shared.store.object(key)
    }

    /// The bytes of the completed object at `key` (a copy: for tests with small objects).
    pub fn object_bytes(&self, key: &str) -> Option<Vec<u8>> {
        self.shared.store.object_bytes(key)
    }

    /// Replaces the faults; counters restart from zero and the RNG is reseeded.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.faults.lock().unwrap().set(faults);
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults.lock().unwrap().faults().clone()
    }

    /// `(upload id, part number)` → number of successful (200) PUTs of that part.
    pub fn part_put_counts(&self) -> BTreeMap<(String, u32), u64> {
        self.shared.store.part_put_counts()
    }

    /// `(upload id, part number)` → `Content-Type` of that part's last successful PUT.
    pub fn part_content_types(&self) -> BTreeMap<(String, u32), String> {
        self.shared.store.part_content_types()
    }

    /// Request body bytes received by both servers in consecutive windows of `window` (whole
    /// 100 ms slots), from the first slot that received anything (see [`meter`]).
    pub fn received_per_window(&self, window: Duration) -> Vec<u64> {
        self.shared.received.per_window(window)
    }

    /// Time from the first request body byte received to the last one.
    pub fn received_span(&self) -> Duration {
        self.shared.received.span()
    }

    /// [`Emulator::received_per_window`] of the S3 store only: object data, no API calls.
    pub fn s3_received_per_window(&self, window: Duration) -> Vec<u64> {
        self.shared.received_s3.per_window(window)
    }

    /// [`Emulator::received_span`] of the S3 store only.
    pub fn s3_received_span(&self) -> Duration {
        self.shared.received_s3.span()
    }

    /// Forgets the body bytes received so far (a new measurement starts at the next byte).
    pub fn clear_received(&self) {
        self.shared.received.clear();
        self.shared.received_s3.clear();
    }

    /// The most requests the API server (`"api"`) or the S3 store (`"s3"`) handled at once,
    /// since the start or the last [`Emulator::reset_in_flight_peaks`].
    pub fn in_flight_peak(&self, server: &str) -> usize {
        if server == "s3" { self.shared.in_flight_s3.peak() } else { self.shared.in_flight_api.peak() }
    }

    /// Restarts the in-flight peaks from the requests being handled now.
    pub fn reset_in_flight_peaks(&self) {
        self.shared.in_flight_api.reset_peak();
        self.shared.in_flight_s3.reset_peak();
    }

    /// Every request received by both servers, oldest first.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Stops both servers (open connections are closed).
    pub fn shutdown(self) {
        drop(self)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.temp_dir.take() {
            let path = t.path().to_path_buf();
            // A request still finishing may have just made a file there: a second try.
            if t.close().is_err()
                && let Err(e) = std::fs::remove_dir_all(&path)
            {
                tracing::warn!("cannot remove the emulator's temporary directory {}: {e}", path.display());
            }
        }
    }
}
