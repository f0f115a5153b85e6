//! The emulator as a server: its flags ([`ServerArgs`]) and [`serve`], shared by the
//! `upload-emulator` binary and `upload emulator` (one launch code, one output).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::{Config, Emulator, Faults, Processing};

/// The one-line description of the server (`-h`).
pub const ABOUT: &str =
    "Local emulator of the Teleport, TruVideo, Uplift and Apertur upload APIs with an S3-compatible store";

/// The description of the server (`--help`): paragraphs of one line each, as clap makes them
/// of a doc comment.
pub const LONG_ABOUT: &str = concat!(
    "Local emulator of the Teleport, TruVideo, Uplift and Apertur upload APIs with an S3-compatible store.",
    "\n\n",
    "Prints the API base URL, the S3 base URL, the accepted token(s), the sign-in credentials ",
    "(Teleport `/oauth2/token`, TruVideo `/api/login`) and one `try:` command per provider, then ",
    "serves until Ctrl-C (SIGINT) or SIGTERM. Uploaded objects are written to a temporary directory ",
    "removed at stop (--data-dir DIR keeps them; --memory holds them in memory). Admin API (no auth) ",
    "on the API port: GET /_emulator/uploads, GET|PUT /_emulator/faults, GET /_emulator/requests."
);

/// The server's flags (`upload-emulator --help`, `upload emulator --help`).
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Port of the provider API (0 = any free port).
    #[arg(long, default_value_t = 0, env = "EMULATOR_PORT")]
    port: u16,
    /// Port of the S3 store (0 = any free port).
    #[arg(long = "s3-port", default_value_t = 0, env = "EMULATOR_S3_PORT")]
    s3_port: u16,
    /// Serve both servers over https with this PEM certificate (chain); it must name the IP
    /// address 127.0.0.1 (the URLs are https://127.0.0.1:PORT). Needs --tls-key.
    #[arg(long = "tls-cert", value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long = "tls-key", value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Accepted Bearer token (repeatable; default "emulator-token").
    #[arg(long = "token")]
    tokens: Vec<String>,
    /// chunk_size handed out by Teleport, in bytes.
    #[arg(long = "chunk-size", default_value_t = 8 * 1024 * 1024)]
    chunk_size: u64,
    /// Presigned URL lifetime, in seconds.
    #[arg(long = "url-ttl", default_value_t = 3600)]
    url_ttl: u64,
    /// Keep the uploaded objects (their part files) in this directory, left there at stop.
    /// Default: a temporary directory (under TMPDIR) removed at stop.
    #[arg(long = "data-dir", visible_alias = "state-dir", value_name = "DIR", conflicts_with = "memory")]
    state_dir: Option<PathBuf>,
    /// Hold the uploaded objects in memory instead of on disk (faster; memory grows with them).
    #[arg(long)]
    memory: bool,
    /// Smallest size of every part but the last, in bytes (S3: 5 MiB).
    #[arg(long = "min-part-size", default_value_t = crate::S3_MIN_PART_SIZE)]
    min_part_size: u64,
    /// Latency added before every response, in milliseconds.
    #[arg(long = "latency-ms", default_value_t = 0)]
    latency_ms: u64,
    /// Latency added before every response, as a duration: 30ms, 0.2s (overrides --latency-ms).
    #[arg(long = "latency", value_parser = parse_duration_ms)]
    latency: Option<u64>,
    /// Body read throttle of each PUT/POST connection, bytes per second: 20MiB, 5000000 (0 = unlimited).
    #[arg(long = "bandwidth", default_value = "0", value_parser = parse_rate)]
    bandwidth: u64,
    /// Body read throttle of all PUT/POST connections together, bytes per second: 200MiB (0 = unlimited).
    #[arg(long = "total-bandwidth", default_value = "0", value_parser = parse_rate)]
    total_bandwidth: u64,
    /// Fraction (0..1) of part PUTs answering 500.
    #[arg(long = "fail-put-ratio", default_value_t = 0.0)]
    fail_put_ratio: f64,
    /// 1-based number of a part PUT that answers 500 (repeatable).
    #[arg(long = "fail-put-nth")]
    fail_put_nth: Vec<u64>,
    /// Status of failed PUTs (500, or 503 for SlowDown).
    #[arg(long = "fail-status", default_value_t = 500)]
    fail_status: u16,
    /// Fraction (0..1) of part PUTs whose connection is dropped mid-body.
    #[arg(long = "reset-ratio", default_value_t = 0.0)]
    reset_ratio: f64,
    /// Seed of the fault RNG.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Processing time of a capture (TruVideo: an upload) after completion, in milliseconds.
    #[arg(long = "processing-ms", default_value_t = 0)]
    processing_ms: u64,
    /// Make processing end in ERROR (TruVideo: FAILED) with this reason (e.g. NOT_ENOUGH_FRAMES).
    #[arg(long = "processing-fail")]
    processing_fail: Option<String>,
    /// Refuse presigned URLs as expired this long after signing, in milliseconds.
    #[arg(long = "expire-urls-after-ms")]
    expire_urls_after_ms: Option<u64>,
    /// Answer 401 to the Nth provider API call (1-based; repeatable) even with a good token.
    #[arg(long = "unauthorized-call-nth")]
    unauthorized_call_nth: Vec<u64>,
    /// The first N completion calls answer 500.
    #[arg(long = "complete-fail-times", default_value_t = 0)]
    complete_fail_times: u32,
    /// Carry out the first call matching `METHOD /path` (`*` = any one segment, e.g.
    /// `POST /api/v1/captures/*/uploaded`), then drop its connection without the answer.
    /// Repeatable (an entry given N times loses N answers).
    #[arg(long = "lose-answer", value_name = "CALL")]
    lose_answer: Vec<String>,
    /// Accept requests matching `[COUNT ]METHOD /path` (COUNT: a number, default 1, or
    /// `always`; METHOD may be `*`; `*` = any one segment, a last `**` = any rest) and never
    /// answer them. Repeatable; every server.
    #[arg(long = "hang", value_name = "CALL")]
    hang: Vec<String>,
    /// Carry out matching calls, send the answer's head and half its body, then stall.
    #[arg(long = "stall-body", value_name = "CALL")]
    stall_body: Vec<String>,
    /// Send matching calls' answers at --trickle-bps.
    #[arg(long = "trickle", value_name = "CALL")]
    trickle: Vec<String>,
    /// Read matching requests' bodies at --trickle-bps.
    #[arg(long = "trickle-read", value_name = "CALL")]
    trickle_read: Vec<String>,
    /// Bytes per second of --trickle and --trickle-read.
    #[arg(long = "trickle-bps", default_value_t = 1024)]
    trickle_bps: u64,
    /// Read the first 64 KiB of matching requests' bodies, then stop reading; never answer.
    #[arg(long = "stop-reading", value_name = "CALL")]
    stop_reading: Vec<String>,
    /// Answer `[N:]METHOD /path STATUS [JSON]` (the N-th matching call, default the first) with
    /// STATUS and the JSON body without carrying the call out. Repeatable.
    #[arg(long = "fake-answer", value_name = "ANSWER")]
    fake_answer: Vec<String>,
    /// Like --fake-answer, but the call is carried out and only its answer replaced.
    #[arg(long = "replace-answer", value_name = "ANSWER")]
    replace_answer: Vec<String>,
    /// The store receives the body of matching object PUTs (`[COUNT ]METHOD /path`, as
    /// --hang) with its first byte flipped, ignores Content-MD5, keeps it and answers its ETag.
    #[arg(long = "corrupt-put", value_name = "CALL")]
    corrupt_put: Vec<String>,
    /// Answer `[N:|always ]METHOD /path STATUS CODE` object uploads (PUT, POST) with an S3
    /// error document of CODE (e.g. `always PUT /** 400 XAmzContentChecksumMismatch`).
    #[arg(long = "s3-error", value_name = "ANSWER")]
    s3_error: Vec<String>,
    /// Lifetime of an Uplift upload form (upload_expires_at), in seconds.
    #[arg(long = "uplift-upload-ttl", default_value_t = 1800)]
    uplift_upload_ttl: u64,
    /// Size of a READY capture's hd .ply model file, in bytes.
    #[arg(long = "model-size", default_value_t = 3 * 1024 * 1024 + 12_345)]
    model_size: u64,
    /// Presigned URLs TruVideo's start hands out; the rest are asked from /upload/{id}/parts.
    #[arg(long = "truvideo-initial-urls", default_value_t = 10)]
    truvideo_initial_urls: u32,
    /// Apertur: a destination id whose deliveries fail. Repeatable.
    #[arg(long = "apertur-failing-destination", value_name = "ID")]
    apertur_failing_destinations: Vec<String>,
    /// Apertur: time between delivery steps (attempts), in milliseconds.
    #[arg(long = "apertur-delivery-step-ms", default_value_t = 100)]
    apertur_delivery_step_ms: u64,
    /// Apertur: the plan's most images per session (a session asking more gets this many).
    #[arg(long = "apertur-plan-max-images", value_name = "N", default_value_t = 100)]
    apertur_plan_max_images: u32,
    /// Apertur: the shape of a delivery status asked without `pollFrom`: the seed's
    /// (`{session_id, images[{deliveries}]}`) or the SDK's (`{status, files, lastChanged}`,
    /// always served to a `pollFrom` long poll).
    #[arg(long = "apertur-delivery-shape", value_enum, default_value = "seed")]
    apertur_delivery_shape: crate::apertur::DeliveryShape,
    /// Apertur: require request signatures made with this secret.
    #[arg(long = "apertur-signing-secret", value_name = "SECRET")]
    apertur_signing_secret: Option<String>,
    /// Teleport sign-in client_id (POST /oauth2/token).
    #[arg(long = "client-id", default_value = "emulator-client")]
    client_id: String,
    /// Teleport sign-in client_secret.
    #[arg(long = "client-secret", default_value = "emulator-client-secret")]
    client_secret: String,
    /// TruVideo login api key (POST /api/login).
    #[arg(long = "api-key", default_value = "emulator-api-key")]
    api_key: String,
    /// TruVideo login secret key (HMAC key of the signature).
    #[arg(long = "secret-key", default_value = "emulator-secret-key")]
    secret_key: String,
    /// TruVideo login external id.
    #[arg(long = "external-id", default_value = "emulator-tenant")]
    external_id: String,
    /// Lifetime of the tokens handed out by the sign-in endpoints, in seconds.
    #[arg(long = "token-lifetime", default_value_t = 3600)]
    token_lifetime: u64,
}

impl ServerArgs {
    /// The emulator's configuration these flags describe.
    pub fn into_config(self) -> Config {
        let defaults = Config::default();
        Config {
            tokens: if self.tokens.is_empty() { defaults.tokens } else { self.tokens },
            teleport_chunk_size: self.chunk_size,
            url_ttl: Duration::from_secs(self.url_ttl),
            temp_state_dir: self.state_dir.is_none() && !self.memory,
            state_dir: self.state_dir,
            min_part_size: self.min_part_size,
            teleport_model_size: self.model_size,
            faults: Faults {
                fail_put_nth: self.fail_put_nth,
                fail_put_ratio: self.fail_put_ratio,
                fail_status: self.fail_status,
                reset_ratio: self.reset_ratio,
                seed: self.seed,
                latency_ms: self.latency.unwrap_or(self.latency_ms),
                bandwidth_bps: self.bandwidth,
                total_bandwidth_bps: self.total_bandwidth,
                expire_urls_after_ms: self.expire_urls_after_ms,
                unauthorized_api_call_nth: self.unauthorized_call_nth,
                complete_fail_times: self.complete_fail_times,
                lose_answer: self.lose_answer,
                hang: self.hang,
                stall_body: self.stall_body,
                trickle: self.trickle,
                trickle_read: self.trickle_read,
                trickle_bps: self.trickle_bps,
                stop_reading: self.stop_reading,
                fake_answer: self.fake_answer,
                replace_answer: self.replace_answer,
                corrupt_put: self.corrupt_put,
                s3_error: self.s3_error,
                ..Faults::default()
            },
            processing: Processing { delay_ms: self.processing_ms, fail_reason: self.processing_fail },
            uplift: crate::uplift::UpliftConfig {
                upload_ttl: Duration::from_secs(self.uplift_upload_ttl),
                ..Default::default()
            },
            truvideo_initial_urls: self.truvideo_initial_urls,
            apertur: crate::apertur::AperturConfig {
                failing_destinations: self.apertur_failing_destinations,
                delivery_step_ms: self.apertur_delivery_step_ms,
                signing_secret: self.apertur_signing_secret,
                delivery_status_shape: self.apertur_delivery_shape,
                plan_max_images: self.apertur_plan_max_images,
                ..defaults.apertur
            },
            teleport_client_id: self.client_id,
            teleport_client_secret: self.client_secret,
            truvideo_api_key: self.api_key,
            truvideo_secret_key: self.secret_key,
            truvideo_external_id: self.external_id,
            token_lifetime: Duration::from_secs(self.token_lifetime.max(1)),
            ..defaults
        }
    }
}

/// Logs on stderr as the server writes them: `RUST_LOG` (default `info`), coloured on a
/// terminal. Call once, before [`serve`], in a process that has no subscriber yet.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Starts the emulator the flags describe, prints its URLs, tokens, sign-in credentials and
/// `try:` lines on stdout, and serves until SIGINT or SIGTERM (Ctrl-C elsewhere). Problems
/// are one line on stderr starting with `program` (`upload-emulator: cannot start: ...`).
/// Returns the process's exit status: 0 after a stop, 1 when it could not start.
pub async fn serve(args: ServerArgs, program: &str) -> u8 {
    let (port, s3_port) = (args.port, args.s3_port);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match crate::tls_config(cert, key) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("{program}: cannot use the TLS certificate: {e}");
                return 1;
            }
        },
        _ => None,
    };
    let config = args.into_config();
    let tokens = config.tokens.clone();
    let sign_in = SignInInfo {
        client_id: config.teleport_client_id.clone(),
        client_secret: config.teleport_client_secret.clone(),
        api_key: config.truvideo_api_key.clone(),
        secret_key: config.truvideo_secret_key.clone(),
        external_id: config.truvideo_external_id.clone(),
        lifetime_s: config.token_lifetime.as_secs(),
    };
    let started = match tls {
        Some(tls) => Emulator::start_tls(config, port, s3_port, tls).await,
        None => Emulator::start_on(config, port, s3_port).await,
    };
    let emu = match started {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{program}: cannot start: {e}");
            return 1;
        }
    };
    // Listen before announcing the URLs: a script may signal right after reading them.
    let stop = stop_signal();
    announce(&emu, &tokens, &sign_in);
    stop.await;
    eprintln!("{program}: stopping");
    emu.shutdown();
    0
}

/// How the last line [`serve`] prints on stdout starts (the sign-in `try`): once a reader has
/// it, the server is up and every address has been told.
pub const LAST_ANNOUNCED: &str = "try (sign-in):";

/// Starts `program`, a command that runs [`serve`] (`upload-emulator`, `upload emulator`),
/// with its stdout piped, and reads its announcement: the lines up to the last one
/// ([`LAST_ANNOUNCED`]), or those that came before stdout closed (it could not start).
/// Blocking (from async code, call it on a blocking thread). The child is the caller's to
/// stop; on a read error it is killed.
pub fn start_announced(mut program: std::process::Command) -> std::io::Result<(std::process::Child, Vec<String>)> {
    use std::io::BufRead;
    let mut child = program.stdout(std::process::Stdio::piped()).spawn()?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let read = || {
        let mut lines = vec![];
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            let last = line.starts_with(LAST_ANNOUNCED);
            lines.push(line);
            if last {
                break;
            }
        }
        Ok(lines)
    };
    match read() {
        Ok(lines) => Ok((child, lines)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// The sign-in credentials the emulator accepts (printed: they are test values).
struct SignInInfo {
    client_id: String,
    client_secret: String,
    api_key: String,
    secret_key: String,
    external_id: String,
    lifetime_s: u64,
}

/// Prints the URLs and tokens on stdout. Write errors (a reader that went away) are ignored:
/// the emulator keeps serving.
fn announce(emu: &Emulator, tokens: &[String], s: &SignInInfo) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "api: {}", emu.api_url());
    let _ = writeln!(out, "s3: {}", emu.s3_url());
    for t in tokens {
        let _ = writeln!(out, "token: {t}");
    }
    let _ = writeln!(
        out,
        "teleport sign-in: POST /oauth2/token client_id={} client_secret={}",
        s.client_id, s.client_secret
    );
    let _ = writeln!(
        out,
        "truvideo sign-in: POST /api/login api_key={} secret_key={} external_id={}",
        s.api_key, s.secret_key, s.external_id
    );
    let _ = writeln!(out, "sign-in token lifetime: {} s", s.lifetime_s);
    for command in crate::try_commands(&emu.api_url(), &emu.token()) {
        let _ = writeln!(out, "try: {command}");
    }
    let _ = writeln!(
        out,
        "{LAST_ANNOUNCED} upload FILE.zip --provider teleport --endpoint {0} --auth-endpoint {0} --client-id {1} --client-secret {2}",
        emu.api_url(),
        s.client_id,
        s.client_secret
    );
    let _ = out.flush();
}

/// Resolves on SIGINT or SIGTERM (Ctrl-C elsewhere); the handlers are installed on the call.
#[cfg(unix)]
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        match (int, term) {
            (Ok(mut i), Ok(mut t)) => {
                tokio::select! {
                    _ = i.recv() => {}
                    _ = t.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Resolves on Ctrl-C or Ctrl-Break (Windows); the handlers are installed on the call.
#[cfg(windows)]
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::windows::{ctrl_break, ctrl_c};
    let (c, b) = (ctrl_c(), ctrl_break());
    async move {
        match (c, b) {
            (Ok(mut c), Ok(mut b)) => {
                tokio::select! {
                    _ = c.recv() => {}
                    _ = b.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
}

/// `30ms`, `0.2s`, `2s`, `1m`; a plain number is milliseconds.
fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("invalid duration '{s}': use e.g. 30ms or 0.5s"))?;
    let ms = match unit {
        "" | "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        _ => return Err(format!("invalid duration unit in '{s}': use ms, s or m")),
    };
    Ok(ms.round() as u64)
}

/// `20MiB`, `5MB`, `1048576` (per second; a trailing `/s` is allowed).
fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_end_matches("/s");
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("invalid rate '{s}': use e.g. 20MiB or 5000000"))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1048576.0,
        "mb" => 1e6,
        "g" | "gib" => 1073741824.0,
        "gb" => 1e9,
        other => return Err(format!("invalid rate unit '{other}' in '{s}'")),
    };
    Ok((v * mult) as u64)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn the_announcement_is_read_up_to_its_last_line_or_to_the_end() {
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "echo 'api: http://x'; echo 'try (sign-in): upload'; echo later; exec sleep 30"]);
        let t0 = std::time::Instant::now();
        let (mut child, lines) = start_announced(cmd).unwrap();
        assert_eq!(lines, ["api: http://x", "try (sign-in): upload"]);
        assert!(t0.elapsed() < std::time::Duration::from_secs(20), "waited for more than the announcement");
        child.kill().unwrap();
        child.wait().unwrap();

        // A server that could not start: what it printed before its stdout closed.
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "echo 'api: http://x'; exit 1"]);
        let (mut child, lines) = start_announced(cmd).unwrap();
        assert_eq!(lines, ["api: http://x"]);
        assert!(!child.wait().unwrap().success());
    }
}
