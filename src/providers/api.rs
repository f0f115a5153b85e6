//! A provider's JSON API: bearer auth with renewal on 401, retries for idempotent calls,
//! server error bodies summarized into one line.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::request::{Call, Executor, Failure, Kind, MAX_API_BODY, MAX_ERROR_BODY};
use crate::engine::retry::{Outcome, RetryPolicy};
use crate::error::{Error, Result};
use crate::redact::{Secret, safe_url};

use super::signin::SignIn;

/// S3's refusals of a multipart completion, by their codes (the AWS S3 API reference,
/// CompleteMultipartUpload, "Errors"), which a vendor may pass on inside its own answer.
const S3_COMPLETE_CODES: [&str; 5] =
    ["InvalidPart", "InvalidPartOrder", "EntityTooSmall", "NoSuchUpload", "MalformedXML"];

/// A vendor's refusal that passes S3's on inside its own message text (TruVideo's and
/// Teleport's completion: `The ETag of part 2 does not match: ... (InvalidPart)`, with no code
/// of their own): the S3 code it quotes, as a whole word, becomes the error's `code`, so the
/// engine decides by the code ([`MultipartUpload::refused_parts`], `is_stale`), never by the
/// text. Any other error is handed back as it is.
///
/// [`MultipartUpload::refused_parts`]: crate::engine::multipart::MultipartUpload::refused_parts
pub(crate) fn lift_s3_code(e: Error) -> Error {
    match e {
        Error::Rejected { provider, what, status, code, message } => {
            let quoted = message
                .split(|c: char| !c.is_ascii_alphanumeric())
                .find_map(|word| S3_COMPLETE_CODES.iter().find(|c| **c == word));
            let code = quoted.map(|c| c.to_string()).or(code);
            Error::Rejected { provider, what, status, code, message }
        }
        other => other,
    }
}

/// Where a provider's token comes from, and how it is renewed.
///
/// Precedence: a token given explicitly (`--token`, then the provider's env var, then
/// `UPLOAD_TOKEN`, then the config file) > the built-in sign-in ([`SignIn`]: cached token,
/// else a new sign-in) > `--token-command`. A given token is kept until a 401; then the
/// sign-in, else the command, renews it. A signed-in token is also renewed shortly before it
/// expires. Concurrent callers share one renewal through a generation counter.
pub struct TokenSource {
    provider: &'static str,
    env_var: &'static str,
    given: bool,
    /// The environment variable the given token came from, when it did.
    given_in: Option<&'static str>,
    sign_in: Option<SignIn>,
    command: Option<String>,
    state: tokio::sync::Mutex<TokenState>,
}

/// Where the token in use came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenOrigin {
    /// `--token`, an env var or the config file.
    Given,
    /// The sign-in cache (no request made).
    Cache,
    /// A sign-in made by this run.
    SignIn,
    /// `--token-command`.
    Command,
    /// No token yet.
    None,
}

impl TokenOrigin {
    /// For messages.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenOrigin::Given => "given",
            TokenOrigin::Cache => "sign-in cache",
            TokenOrigin::SignIn => "sign-in",
            TokenOrigin::Command => "--token-command",
            TokenOrigin::None => "none",
        }
    }
}

struct TokenState {
    token: Option<Secret>,
    /// For a signed-in token: when to renew it (expiry minus the margin) and its expiry.
    renew_at: Option<(std::time::SystemTime, std::time::SystemTime)>,
    origin: TokenOrigin,
    generation: u64,
    /// A sign-in refused in this run (message, hint): not asked again, so a batch of files
    /// fails fast instead of sending the wrong credentials once per file.
    refused: Option<(String, Option<String>)>,
}

impl TokenState {
    fn set_signed_in(&mut self, t: super::signin::Token) {
        self.renew_at = Some((t.expires_at - t.margin(), t.expires_at));
        self.origin = if t.from_cache { TokenOrigin::Cache } else { TokenOrigin::SignIn };
        self.token = Some(t.secret);
        self.generation += 1;
    }
    fn set_other(&mut self, t: Secret, origin: TokenOrigin) {
        self.token = Some(t);
        self.renew_at = None;
        self.origin = origin;
        self.generation += 1;
    }
}

impl TokenSource {
    /// `token`: the token found on the command line, in the environment or the config file.
    /// `command`: `--token-command`, run when there is no token and again after a 401.
    pub fn new(provider: &'static str, env_var: &'static str, token: Option<Secret>, command: Option<String>) -> Self {
        Self::with_sign_in(provider, env_var, token, None, command)
    }

    /// Like [`new`](Self::new), with a built-in sign-in ranked between the given token and
    /// the command.
    pub fn with_sign_in(
        provider: &'static str,
        env_var: &'static str,
        token: Option<Secret>,
        sign_in: Option<SignIn>,
        command: Option<String>,
    ) -> Self {
        let token = token.filter(|t| !t.is_empty());
        let given = token.is_some();
        // Where the given token came from, for the hint when it is refused: the environment
        // variable that holds it, else the command line or the configuration file.
        let given_in = token.as_ref().and_then(|t| {
            [env_var, "UPLOAD_TOKEN"]
                .into_iter()
                .find(|k| std::env::var(k).is_ok_and(|v| v.trim() == t.expose().trim()))
        });
        TokenSource {
            provider,
            env_var,
            given,
            given_in,
            sign_in,
            command,
            state: tokio::sync::Mutex::new(TokenState {
                token,
                renew_at: None,
                origin: if given { TokenOrigin::Given } else { TokenOrigin::None },
                generation: 0,
                refused: None,
            }),
        }
    }

    /// The provider's name.
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// The built-in sign-in, when credentials were given.
    pub fn sign_in(&self) -> Option<&SignIn> {
        self.sign_in.as_ref()
    }

    /// True when a token was given explicitly (it outranks the sign-in).
    pub fn is_given(&self) -> bool {
        self.given
    }

    /// The current token and its generation (to be handed back to [`renew`](Self::renew)).
    /// Obtains one first when there is none, and renews a signed-in token about to expire.
    pub async fn current(&self) -> Result<(Secret, u64)> {
        let mut state = self.state.lock().await;
        let stale = state.renew_at.is_some_and(|(at, _)| std::time::SystemTime::now() >= at);
        if state.token.is_none() || stale {
            if let Some(s) = &self.sign_in {
                let t = match s.cached().filter(|c| Some(&c.secret) != state.token.as_ref()) {
                    Some(c) => Ok(c),
                    None => self.sign_in_once(s, &mut state).await,
                };
                match t {
                    Ok(t) => state.set_signed_in(t),
                    // Renewing early failed, but the token still has a little time left.
                    Err(e) if state.renew_at.is_some_and(|(_, exp)| std::time::SystemTime::now() < exp) => {
                        tracing::warn!(provider = self.provider, "cannot renew the token before it expires: {e}");
                    }
                    Err(e) => return Err(e),
                }
            } else if let Some(cmd) = &self.command {
                let t = run_token_command(self.provider, cmd).await?;
                state.set_other(t, TokenOrigin::Command);
            }
        }
        match &state.token {
            Some(t) => Ok((t.clone(), state.generation)),
            None => Err(Error::Auth {
                provider: self.provider,
                message: "no token given".into(),
                hint: Some(format!(
                    "set {} (or UPLOAD_TOKEN), pass --token{}, or give --token-command to fetch one",
                    self.env_var,
                    self.sign_in_flags().map(|f| format!(", sign in with {f}")).unwrap_or_default()
                )),
            }),
        }
    }

    /// Signs in, unless this run's credentials were already refused.
    async fn sign_in_once(&self, s: &SignIn, state: &mut TokenState) -> Result<super::signin::Token> {
        if let Some((message, hint)) = &state.refused {
            return Err(Error::Auth { provider: self.provider, message: message.clone(), hint: hint.clone() });
        }
        let r = s.sign_in().await;
        if let Err(Error::Auth { message, hint, .. }) = &r {
            state.refused = Some((message.clone(), hint.clone()));
        }
        r
    }

    /// Signs in now, whatever the cache holds (`upload auth check`). `None` when there is no
    /// sign-in, or a given token outranks it.
    pub async fn sign_in_now(&self) -> Result<Option<super::signin::Token>> {
        let Some(s) = self.sign_in.as_ref().filter(|_| !self.given) else { return Ok(None) };
        let mut state = self.state.lock().await;
        let t = self.sign_in_once(s, &mut state).await?;
        state.set_signed_in(t.clone());
        Ok(Some(t))
    }

    /// Where the current token came from, and its expiry when known.
    pub async fn origin(&self) -> (TokenOrigin, Option<std::time::SystemTime>) {
        let state = self.state.lock().await;
        (state.origin, state.renew_at.map(|(_, exp)| exp))
    }

    /// Called after a 401 with the generation of the refused token. Returns true when a new
    /// token is available (renewed now, or by a concurrent caller since).
    pub async fn renew(&self, refused_generation: u64) -> Result<bool> {
        let mut state = self.state.lock().await;
        if state.generation != refused_generation && state.token.is_some() {
            return Ok(true);
        }
        if let Some(s) = &self.sign_in {
            if let Some(refused) = &state.token {
                s.forget(refused);
            }
            tracing::info!(provider = self.provider, "token refused (401): signing in again");
            let t = self.sign_in_once(s, &mut state).await?;
            state.set_signed_in(t);
            return Ok(true);
        }
        let Some(cmd) = &self.command else { return Ok(false) };
        let token = run_token_command(self.provider, cmd).await?;
        state.set_other(token, TokenOrigin::Command);
        Ok(true)
    }

    /// The generation of the current token: it grows each time the token is renewed.
    pub async fn generation(&self) -> u64 {
        self.state.lock().await.generation
    }

    /// How this provider's built-in sign-in is given on the command line, when it has one
    /// (Uplift and Apertur have none: a token only).
    fn sign_in_flags(&self) -> Option<&'static str> {
        use super::SignInKind;
        Some(match super::descriptor(self.provider)?.sign_in?.kind {
            SignInKind::ClientCredentials => "--client-id and --client-secret",
            SignInKind::SignedLogin => "--api-key, --secret-key and --external-id",
        })
    }

    /// The hint printed when a token is refused.
    pub fn renew_hint(&self) -> String {
        if let Some(s) = &self.sign_in {
            format!(
                "the API refused a token just obtained by signing in ({}): check that these credentials belong to this account and endpoint",
                s.credentials().who()
            )
        } else if self.command.is_some() {
            "the token from --token-command was refused too: check what the command prints".into()
        } else {
            let fresh = match self.given_in {
                Some(var) => format!("the token in {var} is wrong or expired: set {var} to a fresh one"),
                None if self.given => {
                    "the token given (--token, or the configuration file's token) is wrong or expired: give a fresh one"
                        .to_string()
                }
                None => format!("the token is wrong or expired: set {} to a fresh one", self.env_var),
            };
            let sign_in = match self.sign_in_flags() {
                Some(flags) => format!(", sign in with {flags} instead"),
                None => String::new(),
            };
            format!("{fresh}{sign_in}, or give --token-command (env UPLOAD_TOKEN_COMMAND) to renew it automatically")
        }
    }

    /// The token itself for scrubbing echoes out of messages.
    pub async fn known_secret(&self) -> Option<Secret> {
        self.state.lock().await.token.clone()
    }
}

/// Runs `sh -c CMD` (Windows: `cmd /C`, [`crate::engine::platform::shell`]) and takes its trimmed stdout as the token.
async fn run_token_command(provider: &'static str, cmd: &str) -> Result<Secret> {
    let fail = |message: String| Error::Auth {
        provider,
        message,
        hint: Some(
            "check --token-command (env UPLOAD_TOKEN_COMMAND): it must print a token on stdout and exit 0".into(),
        ),
    };
    let child = crate::engine::platform::shell(cmd)
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

pub use crate::engine::request::Retry;

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
    /// A long poll: how long the server may hold the answer before its first byte (the idle
    /// watch waits at least this long for it); `None` for every other call, whose answers
    /// are watched by the run's idle timeout alone.
    pub hold: Option<Duration>,
    /// The run's request executor (retries, shared budget, cancellable waits).
    pub exec: Executor,
    /// Told about each retry of a call made with [`Api::execute`] (besides the run's notifier):
    /// Apertur's image uploads tell the permit pool about throttling answers.
    pub on_retry: Option<crate::engine::request::Notifier>,
}

/// Computes extra headers for a request from what goes on the wire: the method, the path with
/// its query as sent (`/api/v1/x?a=b`), and the exact body bytes (empty without a body).
/// Called anew on each attempt, so a timestamp in the headers stays fresh. Applied to JSON
/// requests ([`Api::call`]), not to streamed bodies.
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

/// An API call described by [`Api::call`], not sent yet: its URL and JSON body, or the
/// error that sending it returns.
pub struct ApiCall<'a> {
    api: &'a Api,
    what: &'a str,
    method: Method,
    url: Result<url::Url>,
    body: Result<Option<Vec<u8>>>,
    retry: Retry,
}

impl ApiCall<'_> {
    /// Sends the call and decodes its JSON answer.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T> {
        let (provider, what) = (self.api.provider, self.what);
        let answer = self.send().await?;
        serde_json::from_slice(&answer.body).map_err(|e| Error::Protocol {
            provider,
            what: what.into(),
            message: format!("cannot read the answer: {e}"),
        })
    }

    /// Sends the call; any 2xx is returned, everything else becomes an [`Error`].
    pub async fn send(self) -> Result<Answer> {
        let (url, body) = (self.url?, self.body?);
        let attach = |req: reqwest::RequestBuilder| match &body {
            Some(b) => req.header(reqwest::header::CONTENT_TYPE, "application/json").body(b.clone()),
            None => req,
        };
        let signed = Some(body.as_deref().unwrap_or_default());
        self.api.execute(self.what, self.method, url, self.retry, signed, &attach).await
    }
}

impl Api {
    /// A client without request signer.
    pub fn new(
        http: reqwest::Client,
        base: url::Url,
        provider: &'static str,
        token: Arc<TokenSource>,
        retry: RetryPolicy,
    ) -> Self {
        Api { http, base, provider, token, retry, signer: None, hold: None, exec: Executor::default(), on_retry: None }
    }

    /// The same client with the run's executor (its cancellation token ends every wait).
    pub fn with_executor(mut self, exec: Executor) -> Self {
        self.exec = exec;
        self
    }

    /// `base` joined with an absolute path such as `/api/v1/captures`.
    pub fn url(&self, path: &str) -> url::Url {
        let mut u = self.base.clone();
        let prefix = u.path().trim_end_matches('/').to_string();
        u.set_path(&format!("{prefix}{path}"));
        u
    }

    /// One API call: `what` it is (for errors and logs), the method, an absolute path below
    /// the base, the query pairs, the JSON body and whether it may be sent again. Nothing is
    /// sent until [`ApiCall::send`] (any 2xx answer) or [`ApiCall::json`] (the answer decoded).
    pub fn call<'a, B: Serialize + ?Sized>(
        &'a self,
        what: &'a str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
        retry: Retry,
    ) -> ApiCall<'a> {
        let protocol = |message| Error::Protocol { provider: self.provider, what: what.into(), message };
        let url = crate::engine::http::check_api_path(path)
            .map_err(|e| match e {
                Error::Protocol { message, .. } => protocol(message),
                e => e,
            })
            .map(|()| self.url_with_query(path, query));
        let body = body.map(serde_json::to_vec).transpose().map_err(|e| protocol(e.to_string()));
        ApiCall { api: self, what, method, url, body, retry }
    }

    /// A GET of `path` with the query pairs: no body, idempotent (sent again after a failure).
    pub fn get<'a>(&'a self, what: &'a str, path: &str, query: &[(&str, String)]) -> ApiCall<'a> {
        self.call::<()>(what, Method::GET, path, query, None, Retry::Idempotent)
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
        let host = url.host_str().map(|h| format!("{h}:{}", url.port_or_known_default().unwrap_or(0)));
        let call = Call {
            host: host.as_deref(),
            on_retry: self.on_retry.as_deref(),
            patience: self.hold,
            ..Call::new(self.provider, what, Kind::Api(retry), &self.retry)
        };
        let renewed = std::sync::atomic::AtomicBool::new(false);
        let (method, url, path_and_query, renewed) = (&method, &url, &path_and_query, &renewed);
        self.exec
            .run(&call, |attempt| async move {
                let pulse = attempt.pulse;
                let (token, generation) = self.token.current().await.map_err(Failure::Fatal)?;
                let mut req = self
                    .http
                    .request(method.clone(), url.clone())
                    .bearer_auth(token.expose())
                    .header(reqwest::header::ACCEPT, "application/json");
                if let (Some(signer), Some(body)) = (&self.signer, signed_body) {
                    for (k, v) in signer.headers(method, path_and_query, body) {
                        req = req.header(k, v);
                    }
                }
                req = attach(req);
                let t0 = std::time::Instant::now();
                let resp = match pulse.send(req).await {
                    Ok(resp) => resp,
                    Err(f) => {
                        if let Failure::Outcome { message, .. } = &f {
                            tracing::debug!(provider = self.provider, method = %method, url = %safe_url(url.as_str()), "{what}: {message}");
                        }
                        return Err(f);
                    }
                };
                let status = resp.status().as_u16();
                tracing::debug!(provider = self.provider, method = %method, url = %safe_url(url.as_str()), status, elapsed_ms = t0.elapsed().as_millis() as u64, "{what}");
                if (200..300).contains(&status) {
                    let body = pulse.read_capped(resp, MAX_API_BODY).await.map_err(|e| e.into_failure(self.provider, what))?;
                    return Ok(Answer { status, body });
                }
                let secret = token.expose().to_string();
                let failure = pulse.refusal(resp, MAX_ERROR_BODY.max(1 << 20), &[&secret]).await;
                let Failure::Outcome { outcome: Outcome::Status { code, .. }, message, .. } = &failure else {
                    return Err(failure);
                };
                if status != 401 {
                    return Err(failure);
                }
                // A refused request signature is not about the token: no renewal.
                let bad_signature = code.as_deref().is_some_and(|c| c.to_ascii_uppercase().contains("SIGNATURE"));
                if bad_signature {
                    return Err(Failure::Fatal(Error::Auth {
                        provider: self.provider,
                        message: format!("{what}: HTTP 401: {message}"),
                        hint: Some(if self.signer.is_some() {
                            "the request signature was refused: check the signing secret (--signing-secret, env APERTUR_SIGNING_SECRET)".into()
                        } else {
                            "the server wants signed requests: give the signing secret (--signing-secret, env APERTUR_SIGNING_SECRET)".into()
                        }),
                    }));
                }
                let auth_error = || Error::Auth {
                    provider: self.provider,
                    message: format!("{what}: HTTP 401: {message}"),
                    hint: Some(self.token.renew_hint()),
                };
                if !renewed.swap(true, std::sync::atomic::Ordering::SeqCst)
                    && self.token.renew(generation).await.map_err(Failure::Fatal)?
                    && retry != Retry::Never
                {
                    return Err(Failure::Again);
                }
                Err(Failure::Fatal(auth_error()))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::request::Failure;
    use crate::engine::retry::Outcome;

    /// What the executor makes of a vendor's refusal of a completion: the body as it came.
    fn refusal(provider: &'static str, status: u16, body: &str) -> Error {
        let Failure::Outcome { outcome: Outcome::Status { code, .. }, message, .. } =
            Failure::answered(status, &Default::default(), body.as_bytes(), &[])
        else {
            unreachable!()
        };
        Error::Rejected { provider, what: "complete upload".into(), status, code, message }
    }

    /// TruVideo (a Spring error body) and Teleport (a FastAPI validation error) pass S3's
    /// refusal of a part's ETag on in their own message text: the code is lifted from it.
    #[test]
    fn s3_s_code_is_lifted_from_a_vendor_s_refusal_of_a_completion() {
        let truvideo = r#"{"timestamp":"2026-12-07T01:00:00.000Z","status":400,"error":"Bad Request","message":"Invalid completion payload: The ETag of part 2 does not match: expected "abc", got "000". (InvalidPart)","path":"/upload/u1/complete"}"#;
        let teleport = r#"{"detail":[{"type":"value_error","loc":["body","parts",1],"msg":"Value error, The ETag of part 2 does not match: expected "abc", got "000". (InvalidPart)","input":{"number":2,"etag":""000""}}]}"#;
        for (provider, status, body) in [("truvideo", 400, truvideo), ("teleport", 422, teleport)] {
            let before = refusal(provider, status, body);
            assert_eq!(before.code(), None, "{provider}: the vendor's body has no code of its own");
            let lifted = lift_s3_code(before);
            assert_eq!(lifted.code(), Some("InvalidPart"), "{provider}: {lifted}");
            assert!(lifted.to_string().contains("part 2"), "{provider}: the message is kept: {lifted}");
        }
        // A neighbour code is not mistaken for it, and a refusal quoting none keeps its own.
        let order = refusal("truvideo", 400, r#"{"message":"not in ascending order (part 3). (InvalidPartOrder)"}"#);
        assert_eq!(lift_s3_code(order).code(), Some("InvalidPartOrder"));
        let own = refusal("truvideo", 400, r#"{"code":"UPLOAD_LOCKED","message":"the upload is locked"}"#);
        assert_eq!(lift_s3_code(own).code(), Some("UPLOAD_LOCKED"));
        let none = refusal("teleport", 422, r#"{"detail":"the capture is not in state CREATED"}"#);
        assert_eq!(lift_s3_code(none).code(), None);
        let other =
            Error::Network { provider: "teleport", what: "complete upload".into(), message: "(InvalidPart)".into() };
        assert!(matches!(lift_s3_code(other), Error::Network { .. }), "only a refusal has a code");
    }
}
