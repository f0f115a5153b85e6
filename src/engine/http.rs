//! HTTP plumbing shared by the engine and the providers.

use std::net::IpAddr;
use std::time::Duration;

use crate::error::{Error, Result};

/// How a run reaches the network, and how long it waits for it: the trust roots and the
/// time model of every client and every exchange (one plain value, built once by whoever
/// starts the run and handed down; the engine keeps no process-global setting).
///
/// - `connect_timeout`: the longest wait for a TCP (and TLS) connection;
/// - `idle_timeout`: an exchange (request body, waiting for the answer, answer body) that moves
///   no byte either way for this long is cut and tried again on a new connection (a call not
///   safe to repeat goes to its look-up); a host that sent nothing for
///   [`NetOptions::give_up_after`] while its exchanges kept stalling is given up on;
/// - `speed_limit`: curl's `--speed-limit`/`--speed-time`: an exchange slower than the rate
///   for that long is cut (off by default).
///
/// Slow but moving transfers are never cut by the idle timeout: every byte either way (a
/// piece of a part handed to the connection, a piece of an answer read) restarts it, and time
/// spent waiting on the run's own bandwidth limit does not count.
#[derive(Clone)]
pub struct NetOptions {
    /// CA certificates trusted besides the system's trust store and the built-in roots
    /// (`--ca-bundle`, `SSL_CERT_FILE`; see [`NetOptions::with_ca_bundle`]).
    pub roots: Vec<reqwest::Certificate>,
    /// The file `roots` were read from (`--ca-bundle`), for a run that starts others
    /// (`upload pending --resume`) to hand on.
    pub ca_bundle: Option<std::path::PathBuf>,
    /// Longest wait for a TCP and TLS connection (`--connect-timeout`, default 5 s).
    pub connect_timeout: Duration,
    /// Longest time an exchange may move no byte either way (`--idle-timeout`, default 30 s).
    pub idle_timeout: Duration,
    /// An exchange slower than this for this long is cut (`--speed-limit`, `--speed-time`).
    pub speed_limit: Option<SpeedLimit>,
}

/// curl's low-speed limit: an exchange that moves fewer than `bytes_per_second` on average
/// over `time` is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpeedLimit {
    /// Bytes per second (`--speed-limit`).
    pub bytes_per_second: u64,
    /// Over how long (`--speed-time`).
    pub time: Duration,
}

impl std::fmt::Debug for NetOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetOptions")
            .field("roots", &self.roots.len())
            .field("ca_bundle", &self.ca_bundle)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("speed_limit", &self.speed_limit)
            .finish()
    }
}

/// The connect timeout of [`NetOptions::default`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The idle timeout of [`NetOptions::default`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The `--speed-time` when only `--speed-limit` is given (curl's default).
pub const DEFAULT_SPEED_TIME: Duration = Duration::from_secs(30);
/// How many idle timeouts of silence a host gets before the calls to it give up.
pub const SILENT_TIMEOUTS: u32 = 3;

impl Default for NetOptions {
    /// The documented defaults: the system's roots only, 5 s to connect, 30 s idle, no speed
    /// limit.
    fn default() -> Self {
        NetOptions {
            roots: Vec::new(),
            ca_bundle: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            speed_limit: None,
        }
    }
}

impl NetOptions {
    /// Trusts, besides the system's roots, the CA certificates of `bundle` (`--ca-bundle`) and
    /// of the file `SSL_CERT_FILE` names. A bundle that cannot be read is a usage error; an
    /// unreadable `SSL_CERT_FILE` is a warning.
    pub fn with_ca_bundle(mut self, bundle: Option<&std::path::Path>) -> Result<Self> {
        let mut roots = vec![];
        if let Some(path) = bundle {
            roots.extend(read_ca_bundle(path)?);
        }
        if let Some(path) = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
            match read_ca_bundle(std::path::Path::new(&path)) {
                Ok(certs) => roots.extend(certs),
                Err(e) => tracing::warn!("SSL_CERT_FILE ignored: {e}"),
            }
        }
        self.roots = roots;
        self.ca_bundle = bundle.map(std::path::Path::to_path_buf);
        Ok(self)
    }

    /// How long a host may send nothing, while the exchanges with it keep stalling, before
    /// the calls to it give up: [`SILENT_TIMEOUTS`] idle timeouts (90 s by default).
    pub fn give_up_after(&self) -> Duration {
        self.idle_timeout.saturating_mul(SILENT_TIMEOUTS)
    }
}

/// Builds an HTTP client of a run: a keep-alive pool sized to the concurrency, connecting
/// within `net.connect_timeout`.
///
/// Every client trusts the operating system's trust store (and the built-in public roots),
/// plus `net.roots`. `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` are honoured. The
/// client itself bounds no exchange as a whole: the executor's idle watch does
/// ([`super::request::Executor::run`]), so a slow but moving transfer is never cut.
pub fn client(net: &NetOptions, concurrency: usize) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("upload/", env!("CARGO_PKG_VERSION")))
        .redirect(redirect_policy())
        .pool_max_idle_per_host(concurrency.max(1) * 2)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .connect_timeout(net.connect_timeout.max(Duration::from_millis(1)));
    for cert in &net.roots {
        b = b.add_root_certificate(cert.clone());
    }
    b.build().expect("the TLS backend initialises")
}

/// Reads the PEM certificates of a CA bundle file.
pub fn read_ca_bundle(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>> {
    let bytes = std::fs::read(path).map_err(|e| Error::File { path: path.into(), source: e })?;
    let certs = reqwest::Certificate::from_pem_bundle(&bytes).map_err(|e| {
        Error::usage(
            format!("CA bundle {} is not valid PEM: {e}", path.display()),
            "give a PEM file of CA certificates",
        )
    })?;
    if certs.is_empty() {
        return Err(Error::usage(
            format!("CA bundle {} holds no certificate", path.display()),
            "give a PEM file with -----BEGIN CERTIFICATE----- blocks",
        ));
    }
    Ok(certs)
}

/// The certificate problem behind a transport error, when the TLS handshake refused the
/// server's certificate: `Some("is signed by an unknown authority")`, ... A certificate
/// error is final: sending the request again meets the same certificate.
pub fn certificate_problem(err: &reqwest::Error) -> Option<String> {
    use std::error::Error as _;
    fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        // `io::Error::source` skips the error it wraps: look inside.
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
            && let Some(r) = find(inner as &(dyn std::error::Error + 'static))
        {
            return Some(r);
        }
        e.source().and_then(find)
    }
    err.source().and_then(find).and_then(describe_tls)
}

/// True when the TLS handshake of `err` met a server that is not speaking TLS: its first
/// bytes are not a TLS record (rustls' `InvalidMessage::InvalidContentType`: the answer of an
/// http server to a ClientHello is `HTTP/1.1 400 ...`).
pub fn is_plain_http(err: &reqwest::Error) -> bool {
    use std::error::Error as _;
    fn find(e: &(dyn std::error::Error + 'static)) -> bool {
        if let Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) =
            e.downcast_ref::<rustls::Error>()
        {
            return true;
        }
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
            && find(inner as &(dyn std::error::Error + 'static))
        {
            return true;
        }
        e.source().is_some_and(find)
    }
    err.source().is_some_and(find)
}

/// True when `err` is a refused server certificate (see [`certificate_problem`]).
pub fn is_certificate_error(err: &reqwest::Error) -> bool {
    certificate_problem(err).is_some()
}

fn describe_tls(err: &rustls::Error) -> Option<String> {
    use rustls::CertificateError as C;
    let text = match err {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => {
                "is signed by an unknown authority (not in the system trust store nor --ca-bundle)".into()
            }
            C::Expired | C::ExpiredContext { .. } => "has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "is not valid yet (check the clock)".into(),
            C::NotValidForName | C::NotValidForNameContext { .. } => "is not valid for this host name".into(),
            C::Revoked => "has been revoked".into(),
            C::BadSignature => "has a bad signature".into(),
            C::BadEncoding => "is malformed".into(),
            other => format!("is refused ({other:?})"),
        },
        rustls::Error::InvalidCertRevocationList(e) => format!("cannot be checked for revocation ({e:?})"),
        _ => return None,
    };
    Some(text)
}

/// The line for a refused certificate: `the TLS certificate of host:port is signed by ...`.
pub fn certificate_message(err: &reqwest::Error) -> Option<String> {
    let problem = certificate_problem(err)?;
    let host = err
        .url()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
        })
        .unwrap_or_else(|| "the server".into());
    Some(format!("the TLS certificate of {host} {problem}"))
}

/// Redirects are followed (at most 5) only where the plain-http rule allows: a hop to plain
/// http off loopback is refused like the first request would be. (reqwest drops the
/// `Authorization` header itself when a redirect changes host.)
pub fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let url = attempt.url();
        if url.scheme() != "https" && !(url.scheme() == "http" && is_loopback(url)) {
            let refused = format!(
                "refused a redirect to {}: plain http is only accepted for loopback",
                crate::redact::safe_url(url.as_str())
            );
            attempt.error(refused)
        } else if attempt.previous().len() >= 5 {
            attempt.error("more than 5 redirects")
        } else {
            attempt.follow()
        }
    })
}

/// Refuses an API path with `.` or `..` segments (or their encodings, or backslashes): ids
/// from a server are spliced into paths, and such an id would send the bearer token to
/// another path of the same host.
pub fn check_api_path(path: &str) -> Result<()> {
    let lower = path.to_ascii_lowercase();
    let bad = path.split('/').any(|seg| seg == "." || seg == "..")
        || lower.contains("%2e")
        || lower.contains("%2f")
        || path.contains('\\')
        || path.contains('?')
        || path.contains('#');
    if bad {
        return Err(Error::Protocol {
            provider: "api",
            what: "build a request".into(),
            message: format!(
                "refusing to send a request to the path {path:?}: an id from the server has a shape no API uses"
            ),
        });
    }
    Ok(())
}

/// Refuses an id a server handed back (an eid, an uploadId, a session or image id) unless it
/// is one path segment of safe characters: ASCII letters, digits, `-`, `_`, `.` and `~`, not
/// `.` or `..`, 1 to 200 of them. Checked before the id goes into any request path, so that
/// `""`, `a/b`, `..;`, spaces or control characters never reach a URL: a protocol error naming
/// the server (`server`) and the call that handed the id out (`what`).
pub fn check_path_id(server: &'static str, what: &str, kind: &str, id: &str) -> Result<()> {
    let safe = !id.is_empty()
        && id.len() <= 200
        && id != "."
        && id != ".."
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    if safe {
        return Ok(());
    }
    let shown: String = id.chars().take(80).flat_map(char::escape_debug).collect();
    Err(Error::Protocol {
        provider: server,
        what: what.into(),
        message: format!(
            "the {kind} \"{shown}\" is not one path segment of letters, digits, '-', '_', '.' and '~': refusing to put it in a request path"
        ),
    })
}

/// An API path with ids spliced in: each `{}` of `template` takes the next of `ids` (`(kind,
/// id)`, e.g. `("eid", eid)`), each checked by [`check_path_id`] first, so an id a server handed
/// back (or a journal kept) reaches a request path only as one segment of safe characters.
/// `what`: the call about to be made. The one way a provider splices an id into a path
/// (`.ci/layers` refuses a path `format!` under `src/providers/`).
pub fn id_path(server: &'static str, what: &str, template: &str, ids: &[(&str, &str)]) -> Result<String> {
    debug_assert_eq!(template.matches("{}").count(), ids.len(), "one id per {{}} of {template}");
    let mut pieces = template.split("{}");
    let mut out = String::with_capacity(template.len() + 64);
    out.push_str(pieces.next().unwrap_or_default());
    let mut ids = ids.iter();
    for piece in pieces {
        let (kind, id) = ids.next().copied().unwrap_or(("id", ""));
        check_path_id(server, what, kind, id)?;
        out.push_str(id);
        out.push_str(piece);
    }
    Ok(out)
}

/// True for loopback hosts (127.0.0.0/8, ::1, localhost).
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Parses a URL and refuses plain http anywhere but loopback: tokens and data must not
/// cross a network in clear text.
pub fn checked_url(text: &str, what: &str) -> Result<url::Url> {
    let url = url::Url::parse(text).map_err(|e| {
        Error::usage(
            format!("{what} '{}' is not a valid URL: {e}", crate::redact::safe_url(text)),
            "give an absolute URL such as https://host",
        )
    })?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(Error::usage(
            format!("{what} {} uses plain http to a non-loopback host", crate::redact::safe_url(text)),
            "use https (plain http is only accepted for 127.0.0.1, ::1 and localhost)",
        )),
        other => Err(Error::usage(format!("{what} has unsupported scheme '{other}'"), "use an https:// URL")),
    }
}

/// One line out of a server's error body: FastAPI `detail`, `{message}`, S3 XML
/// `<Code>`/`<Message>`, or the first line of text. Secrets are scrubbed by the caller.
pub fn summarize_body(body: &[u8]) -> (Option<String>, String) {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return (None, "(empty body)".into());
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        let code =
            v.get("code").and_then(|c| c.as_str().map(String::from).or_else(|| c.as_i64().map(|n| n.to_string())));
        if let Some(detail) = v.get("detail") {
            let msg = match detail {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|it| {
                        let loc = it
                            .get("loc")
                            .and_then(|l| l.as_array())
                            .map(|l| {
                                l.iter()
                                    .map(|p| p.as_str().map(String::from).unwrap_or_else(|| p.to_string()))
                                    .collect::<Vec<_>>()
                                    .join(".")
                            })
                            .unwrap_or_default();
                        let msg = it.get("msg").and_then(|m| m.as_str()).unwrap_or("invalid");
                        if loc.is_empty() { msg.to_string() } else { format!("{loc}: {msg}") }
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            };
            return (code, one_line(&msg));
        }
        for key in ["message", "error", "failureReason", "msg"] {
            if let Some(m) = v.get(key).and_then(|m| m.as_str()) {
                return (code, one_line(m));
            }
        }
        return (code, one_line(text));
    }
    if text.starts_with('<') {
        let tag = |name: &str| {
            let open = format!("<{name}>");
            let start = text.find(&open)? + open.len();
            let end = text[start..].find("</")? + start;
            Some(unescape_xml(&text[start..end]))
        };
        let code = tag("Code");
        let msg = match (&code, tag("Message")) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            (None, Some(m)) => m,
            (None, None) => one_line(text),
        };
        return (code, one_line(&msg));
    }
    (None, one_line(text))
}

/// The five predefined XML entities back to characters (S3 messages quote policy conditions).
fn unescape_xml(s: &str) -> String {
    s.replace("&quot;", "\"").replace("&apos;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

fn one_line(s: &str) -> String {
    let line = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
    if line.chars().count() > 300 { format!("{}…", line.chars().take(300).collect::<String>()) } else { line }
}

/// What kind of transport failure `err` is, from its kind and its `source()` chain: DNS and
/// certificate failures are told apart from plain connection failures (they are not retried).
pub fn transport_kind(err: &reqwest::Error) -> super::retry::TransportKind {
    use super::retry::TransportKind;
    use std::error::Error as _;
    let mut chain = String::new();
    let mut src = err.source();
    while let Some(s) = src {
        chain.push_str(&s.to_string().to_ascii_lowercase());
        chain.push('\n');
        src = s.source();
    }
    if is_plain_http(err) {
        TransportKind::PlainHttp
    } else if is_certificate_error(err) || chain.contains("certificate") || chain.contains("invalid peer") {
        TransportKind::Tls
    } else if err.is_redirect() || err.is_builder() || is_malformed_answer(&chain) {
        TransportKind::Protocol
    } else if chain.contains("dns error")
        || chain.contains("failed to lookup address")
        || chain.contains("name or service not known")
    {
        TransportKind::Dns
    } else if err.is_connect() {
        TransportKind::Connect
    } else if err.is_timeout() {
        TransportKind::Timeout
    } else {
        TransportKind::Other
    }
}

/// Whether the (lower-cased) `source()` chain of a transport error says the answer was not
/// HTTP: hyper's parse errors (`invalid HTTP header parsed`, `invalid HTTP status-code
/// parsed`, `message head is too large`, ...).
fn is_malformed_answer(chain: &str) -> bool {
    chain.lines().any(|l| {
        (l.starts_with("invalid ") && l.ends_with(" parsed"))
            || l.starts_with("message head is too large")
            || l.starts_with("invalid content-length")
    })
}

/// A short, secret-free description of a transport error, walking the `source()` chain.
pub fn describe_transport(err: &reqwest::Error) -> String {
    describe_transport_within(err, None)
}

/// [`describe_transport`] of a client whose connect timeout is `connect_timeout` (named in the
/// message of a connect that ran out of time).
pub fn describe_transport_within(err: &reqwest::Error, connect_timeout: Option<Duration>) -> String {
    use std::error::Error as _;
    if let Some(m) = certificate_message(err) {
        return m;
    }
    let mut parts = vec![];
    if err.is_connect() && err.is_timeout() {
        // Name the setting: the fix is either the endpoint or a longer --connect-timeout.
        parts.push(match connect_timeout {
            Some(t) => format!("no connection within {} (--connect-timeout)", crate::size::human_duration(t)),
            None => "no connection in time (--connect-timeout)".into(),
        });
    } else if err.is_timeout() {
        parts.push("timed out".to_string());
    } else if err.is_connect() {
        parts.push("could not connect".to_string());
    }
    // The layers in between ("client error (Connect)", "tcp connect error") say nothing the
    // innermost cause does not: keep the outermost that is not a wrapper, and the innermost.
    let mut chain = vec![];
    let mut src = err.source();
    while let Some(s) = src {
        chain.push(s.to_string());
        src = s.source();
    }
    let wrapper =
        |t: &str| t.starts_with("client error") || t == "tcp connect error" || t.starts_with("error trying to connect");
    if let Some(last) = chain.last() {
        for t in chain.iter().filter(|t| !wrapper(t)) {
            if !parts.contains(t) && (t == last || parts.len() < 2) {
                parts.push(t.clone());
            }
        }
        if parts.last() != Some(last) && !parts.contains(last) {
            parts.push(last.clone());
        }
    }
    if parts.is_empty() {
        parts.push("request failed".into());
    }
    crate::redact::scrub(&parts.join(": "), &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_for_http() {
        for ok in ["http://127.0.0.1:8080", "http://localhost", "http://[::1]:9", "https://teleport.varjo.com"] {
            assert!(checked_url(ok, "endpoint").is_ok(), "{ok}");
        }
        let e = checked_url("http://example.com", "endpoint").unwrap_err();
        assert!(e.to_string().contains("plain http"));
        assert!(checked_url("ftp://x", "endpoint").is_err());
    }

    #[test]
    fn api_paths_with_dot_segments_are_refused() {
        assert!(check_api_path("/api/v1/captures/5f3c-9a/create-upload-url/3").is_ok());
        for bad in [
            "/api/v1/captures/../../../_x/create-upload-url/1",
            "/api/v1/captures/./x",
            "/api/v1/captures/%2e%2E/x",
            "/api/v1/captures/a%2Fb/x",
            "/api/v1/captures/a\\b",
            "/api/v1/captures/a?x=1",
        ] {
            assert!(check_api_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_from_servers_are_one_safe_segment() {
        for ok in ["hd72kkw82ksa", "sess_01HX4ABC", "5f3c-9a.b~c", "0c2a9f4e-1b7d-4c1e-9f0a-3e2d1c0b9a87"] {
            assert!(check_path_id("teleport", "create capture", "eid", ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "..;", "a b", "a\nb", "a\u{7f}", "a%2Fb", "é", &"x".repeat(201)] {
            let e = check_path_id("teleport", "create capture", "eid", bad).unwrap_err();
            assert!(
                matches!(&e, Error::Protocol { provider: "teleport", .. }) && e.to_string().contains("teleport"),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn id_paths_splice_only_safe_segments() {
        let p = id_path(
            "apertur",
            "ack",
            "/api/v1/upload-sessions/{}/images/{}/ack",
            &[("session id", "s_1"), ("image id", "i.2")],
        );
        assert_eq!(p.unwrap(), "/api/v1/upload-sessions/s_1/images/i.2/ack");
        assert_eq!(
            id_path("uplift", "get capture", "/v1/captures/{}", &[("capture id", "c-9")]).unwrap(),
            "/v1/captures/c-9"
        );
        for bad in ["", "..", "a/b", "..;", "a b", "%2e", "a\u{1}"] {
            let e = id_path("truvideo", "complete upload", "/upload/{}/complete", &[("uploadId", bad)]).unwrap_err();
            assert!(matches!(e, Error::Protocol { provider: "truvideo", .. }), "{bad:?}: {e}");
            assert!(e.to_string().contains("uploadId"), "{e}");
        }
        // The second id is checked too.
        assert!(id_path("apertur", "ack", "/s/{}/i/{}", &[("session id", "ok"), ("image id", "../x")]).is_err());
    }

    #[test]
    fn bodies_summarized() {
        let (_, m) =
            summarize_body(br#"{"detail":[{"loc":["body","bytesize"],"msg":"Field required","type":"missing"}]}"#);
        assert_eq!(m, "body.bytesize: Field required");
        let (c, m) = summarize_body(
            b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
        );
        assert_eq!(c.as_deref(), Some("AccessDenied"));
        assert_eq!(m, "AccessDenied: Request has expired");
        let (_, m) = summarize_body(
            b"<Error><Code>AccessDenied</Code><Message>Invalid according to Policy: Policy Condition failed: [&quot;eq&quot;, &quot;$key&quot;, &quot;a&amp;b&quot;]</Message></Error>",
        );
        assert_eq!(
            m,
            "AccessDenied: Invalid according to Policy: Policy Condition failed: [\"eq\", \"$key\", \"a&b\"]"
        );
        let (c, m) = summarize_body(br#"{"message":"Session not found","code":"NOT_FOUND"}"#);
        assert_eq!((c.as_deref(), m.as_str()), (Some("NOT_FOUND"), "Session not found"));
    }
}
