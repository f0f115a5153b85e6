//! A provider's JSON API: bearer auth with renewal on 401, retries for idempotent calls,
//! server error bodies summarized into one line.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::http::{describe_transport, summarize_body};
use crate::engine::retry::{Backoff, Class, Outcome, RetryPolicy, classify_api, retry_after};
use crate::error::{Error, Result};
use crate::redact::{Secret, safe_url, scrub};

/// Where a provider's token comes from, and how it is renewed.
pub struct TokenSource {
    provider: &'static str,
    env_var: &'static str,
    command: Option<String>,
    state: tokio::sync::Mutex<(Option<Secret>, u64)>,
}

impl TokenSource {
    /// `token`: the token found on the command line, in the environment or the config file.
    /// `command`: `--token-command`, run when there is no token and again after a 401.
    pub fn new(provider: &'static str, env_var: &'static str, token: Option<Secret>, command: Option<String>) -> Self {
        TokenSource { provider, env_var, command, state: tokio::sync::Mutex::new((token.filter(|t| !t.is_empty()), 0)) }
    }

    /// The provider's name.
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// The current token and its generation (to be handed back to [`renew`](Self::renew)).
    pub async fn current(&self) -> Result<(Secret, u64)> {
        let mut state = self.state.lock().await;
        if state.0.is_none()
            && let Some(cmd) = &self.command
        {
            state.0 = Some(run_token_command(self.provider, cmd).await?);
            state.1 += 1;
        }
        match &state.0 {
            Some(t) => Ok((t.clone(), state.1)),
            None => Err(Error::Auth {
                provider: self.provider,
                message: "no token given".into(),
                hint: Some(format!(
                    "set {} (or UPLOAD_TOKEN), pass --token, or give --token-command to fetch one",
                    self.env_var
                )),
            }),
        }
    }

    /// Called after a 401 with the generation of the refused token. Returns true when a new
    /// token is available (renewed now, or by a concurrent caller since).
    pub async fn renew(&self, refused_generation: u64) -> Result<bool> {
        let mut state = self.state.lock().await;
        if state.1 != refused_generation && state.0.is_some() {
            return Ok(true);
        }
        let Some(cmd) = &self.command else { return Ok(false) };
        let token = run_token_command(self.provider, cmd).await?;
        state.0 = Some(token);
        state.1 += 1;
        Ok(true)
    }

    /// The generation of the current token: it grows each time the token is renewed.
    pub async fn generation(&self) -> u64 {
        self.state.lock().await.1
    }

    /// The hint printed when a token is refused.
    pub fn renew_hint(&self) -> String {
        if self.command.is_some() {
            "the token from --token-command was refused too: check what the command prints".into()
        } else {
            format!(
                "the token is wrong or expired: set {} to a fresh one, or give --token-command (env UPLOAD_TOKEN_COMMAND) to renew it automatically",
                self.env_var
            )
        }
    }

    /// The token itself for scrubbing echoes out of messages.
    pub async fn known_secret(&self) -> Option<Secret> {
        self.state.lock().await.0.clone()
    }
}

/// Runs `sh -c CMD` and takes its trimmed stdout as the token.
async fn run_token_command(provider: &'static str, cmd: &str) -> Result<Secret> {
    let fail = |message: String| Error::Auth {
        provider,
        message,
        hint: Some(
            "check --token-command (env UPLOAD_TOKEN_COMMAND): it must print a token on stdout and exit 0".into(),
        ),
    };
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .map_err(|_| fail("--token-command did not finish within 120 s".into()))?
        .map_err(|e| fail(format!("cannot run --token-command: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!("--token-command exited with {}", out.status)));
    }
    let token = Secret::new(String::from_utf8_lossy(&out.stdout).into_owned());
    if token.is_empty() {
        return Err(fail("--token-command printed nothing".into()));
    }
    tracing::info!(provider, "token renewed by --token-command");
    Ok(token)
}

/// Whether a call may be sent again after an ambiguous failure (5xx, timeout, reset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// GET, PUT, DELETE, asking a presigned URL: safe to repeat.
    Idempotent,
    /// Create/start/reserve/complete: repeated only when the request surely never arrived
    /// (connection refused); otherwise the caller looks the state up first. After a 401 the
    /// token is renewed and the request repeated once (a refused request did nothing).
    Once,
    /// Like [`Retry::Once`], but not repeated after a 401 either: the token is renewed (when
    /// `--token-command` allows) and the [`Error::Auth`] returned, for the caller to look the
    /// state up before sending again (TruVideo's complete). [`TokenSource::generation`] tells
    /// whether a new token is there.
    Never,
}

/// A provider's API client.
#[derive(Clone)]
pub struct Api {
    /// The shared HTTP client.
    pub http: reqwest::Client,
    /// Origin (and path prefix) of the API.
    pub base: url::Url,
    /// Provider name, for messages.
    pub provider: &'static str,
    /// The token.
    pub token: Arc<TokenSource>,
    /// Retry policy for idempotent calls.
    pub retry: RetryPolicy,
    /// Adds headers computed from each JSON request (Apertur's optional HMAC signature).
    pub signer: Option<Arc<dyn RequestSigner>>,
    /// Time limit of one request (default [`DEFAULT_TIMEOUT`]; raised for long polls).
    pub timeout: Duration,
}

/// Time limit of one API request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Computes extra headers for a request from what goes on the wire: the method, the path with
/// its query as sent (`/api/v1/x?a=b`), and the exact body bytes (empty without a body).
/// Called anew on each attempt, so a timestamp in the headers stays fresh. Applied to JSON
/// requests ([`Api::send`], [`Api::json`]), not to streamed bodies.
pub trait RequestSigner: Send + Sync {
    /// The headers to add.
    fn headers(&self, method: &Method, path_and_query: &str, body: &[u8]) -> Vec<(String, String)>;
}

/// Adds the body (and its headers) to a request; called once per attempt.
pub type AttachBody<'a> = &'a (dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Send + Sync);

/// A raw successful answer.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: bytes::Bytes,
}

impl Api {
    /// A client without request signer and with the default time limit.
    pub fn new(
        http: reqwest::Client,
        base: url::Url,
        provider: &'static str,
        token: Arc<TokenSource>,
        retry: RetryPolicy,
    ) -> Self {
        Api { http, base, provider, token, retry, signer: None, timeout: DEFAULT_TIMEOUT }
    }

    /// `base` joined with an absolute path such as `/api/v1/captures`.
    pub fn url(&self, path: &str) -> url::Url {
        let mut u = self.base.clone();
        let prefix = u.path().trim_end_matches('/').to_string();
        u.set_path(&format!("{prefix}{path}"));
        u
    }

    /// Sends a JSON request and decodes a JSON answer.
    pub async fn json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        what: &str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
        retry: Retry,
    ) -> Result<T> {
        let answer = self.send(what, method, path, query, body, retry).await?;
        serde_json::from_slice(&answer.body).map_err(|e| Error::Protocol {
            provider: self.provider,
            what: what.into(),
            message: format!("cannot read the answer: {e}"),
        })
    }

    /// Sends a request; any 2xx is returned, everything else becomes an [`Error`].
    pub async fn send<B: Serialize + ?Sized>(
        &self,
        what: &str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
        retry: Retry,
    ) -> Result<Answer> {
        let url = self.url_with_query(path, query);
        let body = body.map(serde_json::to_vec).transpose().map_err(|e| Error::Protocol {
            provider: self.provider,
            what: what.into(),
            message: e.to_string(),
        })?;
        let attach = |req: reqwest::RequestBuilder| match &body {
            Some(b) => req.header(reqwest::header::CONTENT_TYPE, "application/json").body(b.clone()),
            None => req,
        };
        self.execute(what, method, url, retry, Some(body.as_deref().unwrap_or_default()), &attach).await
    }

    /// `base` joined with `path`, plus the query pairs.
    pub fn url_with_query(&self, path: &str, query: &[(&str, String)]) -> url::Url {
        let mut url = self.url(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// Sends a request with bearer auth, renewal on 401 and retries; `attach` adds the body on
    /// each attempt (a streamed body is built anew). `signed_body`: the exact body bytes for
    /// the [`RequestSigner`], `None` to send the request unsigned (multipart uploads). A 429
    /// is retried after its `Retry-After` even for a [`Retry::Once`] call: the server refused
    /// it without acting on it.
    pub async fn execute(
        &self,
        what: &str,
        method: Method,
        url: url::Url,
        retry: Retry,
        signed_body: Option<&[u8]>,
        attach: AttachBody<'_>,
    ) -> Result<Answer> {
        let path_and_query = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let mut backoff = Backoff::new(self.retry.clone());
        let mut renewed = false;
        loop {
            let (token, generation) = self.token.current().await?;
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose())
                .header(reqwest::header::ACCEPT, "application/json")
                .timeout(self.timeout);
            if let (Some(signer), Some(body)) = (&self.signer, signed_body) {
                for (k, v) in signer.headers(&method, &path_and_query, body) {
                    req = req.header(k, v);
                }
            }
            req = attach(req);
            let t0 = std::time::Instant::now();
            let res = req.send().await;
            let (outcome, message, wait) = match res {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let ra = retry_after(resp.headers());
                    let bytes = resp.bytes().await;
                    tracing::debug!(provider = self.provider, method = %method, url = %safe_url(url.as_str()), status, elapsed_ms = t0.elapsed().as_millis() as u64, "{what}");
                    let bytes = match bytes {
                        Ok(b) => b,
                        Err(e) => {
                            let m = describe_transport(&e);
                            if retry == Retry::Idempotent
                                && let Some(d) = backoff.next_delay(None)
                            {
                                tokio::time::sleep(d).await;
                                continue;
                            }
                            return Err(Error::Network { provider: self.provider, what: what.into(), message: m });
                        }
                    };
                    if (200..300).contains(&status) {
                        return Ok(Answer { status, body: bytes });
                    }
                    let secret = token.expose().to_string();
                    let (code, msg) = summarize_body(&bytes);
                    let msg = scrub(&msg, &[&secret]);
                    // A refused request signature is not about the token: no renewal.
                    let bad_signature = code.as_deref().is_some_and(|c| c.to_ascii_uppercase().contains("SIGNATURE"));
                    if status == 401 && bad_signature {
                        return Err(Error::Auth {
                            provider: self.provider,
                            message: format!("{what}: HTTP 401: {msg}"),
                            hint: Some(if self.signer.is_some() {
                                "the request signature was refused: check the signing secret (--signing-secret, env APERTUR_SIGNING_SECRET)".into()
                            } else {
                                "the server wants signed requests: give the signing secret (--signing-secret, env APERTUR_SIGNING_SECRET)".into()
                            }),
                        });
                    }
                    if status == 401 {
                        if !renewed && self.token.renew(generation).await? {
                            renewed = true;
                            if retry != Retry::Never {
                                continue;
                            }
                        }
                        return Err(Error::Auth {
                            provider: self.provider,
                            message: format!("{what}: HTTP 401: {msg}"),
                            hint: Some(self.token.renew_hint()),
                        });
                    }
                    (Outcome::Status { status, code }, msg, ra)
                }
                Err(e) => {
                    let m = describe_transport(&e);
                    tracing::debug!(provider = self.provider, method = %method, url = %safe_url(url.as_str()), "{what}: {m}");
                    // A refused connection never reached the server: safe to repeat any call.
                    if (e.is_connect() || retry == Retry::Idempotent)
                        && let Some(d) = backoff.next_delay(None)
                    {
                        tokio::time::sleep(d).await;
                        continue;
                    }
                    return Err(Error::Network { provider: self.provider, what: what.into(), message: m });
                }
            };
            let Outcome::Status { status, .. } = outcome else { unreachable!("transport errors returned above") };
            if classify_api(&outcome) == Class::Retry
                && (retry == Retry::Idempotent || status == 429)
                && let Some(d) = backoff.next_delay(wait)
            {
                tracing::info!(provider = self.provider, status, "{what}: retrying in {d:?}");
                tokio::time::sleep(d).await;
                continue;
            }
            if status >= 500 || status == 429 || status == 408 {
                return Err(Error::Network {
                    provider: self.provider,
                    what: what.into(),
                    message: format!("HTTP {status}: {message}"),
                });
            }
            return Err(Error::Rejected { provider: self.provider, what: what.into(), status, message });
        }
    }
}
