//! Built-in sign-in: the tool obtains its own bearer token from the vendor's sign-in endpoint,
//! caches it in the state directory and fetches a new one before it expires or after a 401.
//!
//! - Teleport (client credentials): `POST {auth}/oauth2/token` with the JSON body
//!   `{"grant_type": "client_credentials", "client_id", "client_secret"}` →
//!   `{access_token, expires_in, token_type: "bearer"}`. Default `{auth}`:
//!   [`TELEPORT_AUTH_ENDPOINT`].
//! - TruVideo (signed login): `POST {auth}/api/login` with the body `{"timestamp": "<now, ISO
//!   8601>"}` and the headers `x-authentication-api-key`, `x-multitenant-external-id` and
//!   `x-authentication-signature` = hex HMAC-SHA256 of the exact (minified) body bytes keyed
//!   with the secret key → `{accessToken, refreshToken}`. Default `{auth}`:
//!   [`TRUVIDEO_AUTH_ENDPOINT`] ([`TRUVIDEO_RC_AUTH_ENDPOINT`] with `--rc`). The refresh token
//!   is not used: a new login costs the same one request.
//!
//! The lifetime of a token is `expires_in`, else the `exp` claim when the token is a JWT, else
//! [`ASSUMED_LIFETIME`] (a 401 renews it anyway). A token is used until `expiry - margin`,
//! where the margin is a fifth of its lifetime, at most a minute.
//!
//! The cache is one JSON file per (provider, sign-in endpoint, client id / api key + external
//! id) under `<state dir>/tokens/`, mode 0600, rewritten atomically. It holds the access token
//! and its expiry, never the client secret or secret key.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::http::summarize_body;
use crate::engine::request::{Call, Executor, Failure, Kind, MAX_ERROR_BODY};
use crate::engine::retry::RetryPolicy;
use crate::error::{Error, Result};
use crate::redact::{Secret, safe_url, scrub};

/// Teleport's sign-in origin.
pub const TELEPORT_AUTH_ENDPOINT: &str = "https://signin.teleport.varjo.com";
/// TruVideo's SDK Mobile API (production), where `/api/login` lives.
pub const TRUVIDEO_AUTH_ENDPOINT: &str = "https://sdk-mobile-api.truvideo.com";
/// TruVideo's SDK Mobile API (release candidate, `--rc`).
pub const TRUVIDEO_RC_AUTH_ENDPOINT: &str = "https://sdk-mobile-api-rc.truvideo.com";
/// Lifetime assumed for a token whose expiry nobody tells.
pub const ASSUMED_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Longest safety margin before a token's expiry.
pub const MAX_MARGIN: Duration = Duration::from_secs(60);

const CACHE_VERSION: u32 = 2;

/// The credentials of a built-in sign-in.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// Teleport API key: a client id and its secret.
    Teleport {
        /// `client_id`.
        client_id: String,
        /// `client_secret`.
        client_secret: Secret,
    },
    /// TruVideo: api key, secret key (signs the login) and the tenant's external id.
    Truvideo {
        /// `x-authentication-api-key`.
        api_key: Secret,
        /// Key of the HMAC signature.
        secret_key: Secret,
        /// `x-multitenant-external-id`.
        external_id: String,
    },
}

impl Credentials {
    /// Who signs in, for messages and the cache key (no secret): the client id, or the api key
    /// and external id.
    pub fn who(&self) -> String {
        match self {
            Credentials::Teleport { client_id, .. } => format!("client id {client_id}"),
            Credentials::Truvideo { api_key, external_id, .. } => {
                format!("api key {}…, external id {external_id}", api_key.expose().chars().take(6).collect::<String>())
            }
        }
    }

    fn cache_identity(&self) -> String {
        match self {
            Credentials::Teleport { client_id, .. } => client_id.clone(),
            Credentials::Truvideo { api_key, external_id, .. } => format!("{}\n{external_id}", api_key.expose()),
        }
    }

    fn secret(&self) -> &Secret {
        match self {
            Credentials::Teleport { client_secret, .. } => client_secret,
            Credentials::Truvideo { secret_key, .. } => secret_key,
        }
    }

    /// A hash of every part of the credentials, secrets included: a cached token is used only
    /// with the very credentials that obtained it (a wrong secret signs in, and is refused).
    fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"upload token cache\n");
        h.update(self.cache_identity().as_bytes());
        h.update(b"\n");
        h.update(self.secret().expose().as_bytes());
        hex::encode(h.finalize())
    }
}

/// A token obtained by signing in.
#[derive(Clone, Debug)]
pub struct Token {
    /// The bearer token.
    pub secret: Secret,
    /// When it was obtained.
    pub obtained_at: SystemTime,
    /// When it expires.
    pub expires_at: SystemTime,
    /// Whether it came from the cache (no request was made).
    pub from_cache: bool,
}

impl Token {
    /// The safety margin: a fifth of the lifetime, at most [`MAX_MARGIN`].
    pub fn margin(&self) -> Duration {
        let life = self.expires_at.duration_since(self.obtained_at).unwrap_or_default();
        (life / 5).min(MAX_MARGIN)
    }

    /// True while the token may still be used (its expiry minus the margin is ahead).
    pub fn is_fresh(&self) -> bool {
        SystemTime::now() + self.margin() < self.expires_at
    }

    /// Time left before expiry.
    pub fn remaining(&self) -> Duration {
        self.expires_at.duration_since(SystemTime::now()).unwrap_or_default()
    }
}

/// URL, body bytes and extra headers of a sign-in request.
type SignInRequest = (url::Url, Vec<u8>, Vec<(&'static str, String)>);

/// One provider's built-in sign-in.
pub struct SignIn {
    provider: &'static str,
    endpoint: url::Url,
    credentials: Credentials,
    http: reqwest::Client,
    cache: Option<PathBuf>,
    exec: Executor,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    provider: String,
    auth_endpoint: String,
    who: String,
    /// [`Credentials::digest`] of the credentials that obtained the token.
    credentials: String,
    access_token: String,
    obtained_at_ms: u64,
    expires_at_ms: u64,
}

impl SignIn {
    /// A sign-in against `endpoint` (the sign-in origin), caching under `state_dir` when given.
    pub fn new(
        provider: &'static str,
        endpoint: url::Url,
        credentials: Credentials,
        http: reqwest::Client,
        state_dir: Option<&Path>,
    ) -> Self {
        let cache = state_dir.map(|dir| {
            let key = hex::encode(Sha256::digest(format!(
                "{provider}\n{}\n{}",
                endpoint.as_str().trim_end_matches('/'),
                credentials.cache_identity()
            )));
            dir.join("tokens").join(format!("{provider}-{}.json", &key[..24]))
        });
        SignIn { provider, endpoint, credentials, http, cache, exec: Executor::default() }
    }

    /// The same sign-in with the run's executor (its Ctrl-C ends the waits between attempts).
    pub fn with_executor(mut self, exec: Executor) -> Self {
        self.exec = exec;
        self
    }

    /// The credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The sign-in origin.
    pub fn endpoint(&self) -> &url::Url {
        &self.endpoint
    }

    /// The secret (client secret, secret key), for scrubbing echoes out of messages.
    pub fn secret(&self) -> &Secret {
        self.credentials.secret()
    }

    /// A fresh token from the cache, if there is one.
    pub fn cached(&self) -> Option<Token> {
        let path = self.cache.as_ref()?;
        let bytes = std::fs::read(path).ok()?;
        let file: CacheFile = serde_json::from_slice(&bytes).ok()?;
        if file.version != CACHE_VERSION
            || file.provider != self.provider
            || file.credentials != self.credentials.digest()
        {
            return None;
        }
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let token = Token {
            secret: Secret::new(file.access_token),
            obtained_at: at(file.obtained_at_ms),
            expires_at: at(file.expires_at_ms),
            from_cache: true,
        };
        (token.is_fresh() && !token.secret.is_empty()).then_some(token)
    }

    /// Forgets the cached token when it is `refused` (a 401 answered it).
    pub fn forget(&self, refused: &Secret) {
        if let Some(path) = &self.cache
            && let Some(t) = self.cached()
            && &t.secret == refused
        {
            let _ = std::fs::remove_file(path);
        }
    }

    fn store(&self, token: &Token) {
        let Some(path) = &self.cache else { return };
        let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let file = CacheFile {
            version: CACHE_VERSION,
            provider: self.provider.into(),
            auth_endpoint: self.endpoint.as_str().trim_end_matches('/').into(),
            who: self.credentials.who(),
            credentials: self.credentials.digest(),
            access_token: token.secret.expose().into(),
            obtained_at_ms: ms(token.obtained_at),
            expires_at_ms: ms(token.expires_at),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("the token cache serializes");
        if let Err(e) = crate::engine::durable::write_atomic(path, &bytes) {
            // The token still works for this run; only the next run signs in again.
            tracing::warn!(provider = self.provider, "cannot write the token cache: {e}");
        }
    }

    /// Signs in (one request, repeated on connection errors and 5xx), stores the token in the
    /// cache and returns it. A refusal is [`Error::Auth`] naming the credential at fault.
    pub async fn sign_in(&self) -> Result<Token> {
        let (url, body, headers) = self.request()?;
        let policy = RetryPolicy { max_retries: 3, ..RetryPolicy::default() };
        let what = format!("sign in at {}", safe_url(url.as_str()));
        let host = url.host_str().map(|h| format!("{h}:{}", url.port_or_known_default().unwrap_or(0)));
        let call = Call { host: host.as_deref(), ..Call::new(self.provider, &what, Kind::Fetch, &policy) };
        let (url, body, headers) = (&url, &body, &headers);
        self.exec
            .run(&call, |attempt| async move {
                let pulse = attempt.pulse;
                let mut req = self
                    .http
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(reqwest::header::ACCEPT, "application/json")
                    .body(body.clone());
                for (k, v) in headers {
                    req = req.header(*k, v);
                }
                let t0 = std::time::Instant::now();
                let resp = pulse.send(req).await?;
                let status = resp.status().as_u16();
                tracing::debug!(provider = self.provider, url = %safe_url(url.as_str()), status, elapsed_ms = t0.elapsed().as_millis() as u64, "sign in");
                if status >= 500 || status == 429 || status == 408 {
                    let secret = self.credentials.secret().expose().to_string();
                    return Err(pulse.refusal(resp, MAX_ERROR_BODY, &[&secret]).await);
                }
                let bytes = pulse.read_capped(resp, MAX_ERROR_BODY).await.map_err(|e| e.into_failure(self.provider, "sign in"))?;
                if (200..300).contains(&status) {
                    self.accept(&bytes).map_err(Failure::Fatal)
                } else {
                    Err(Failure::Fatal(self.refused(status, &bytes)))
                }
            })
            .await
    }

    /// URL, body bytes and extra headers of the sign-in request.
    fn request(&self) -> Result<SignInRequest> {
        let join = |path: &str| {
            let mut u = self.endpoint.clone();
            let prefix = u.path().trim_end_matches('/').to_string();
            u.set_path(&format!("{prefix}{path}"));
            u
        };
        match &self.credentials {
            Credentials::Teleport { client_id, client_secret } => {
                let body = serde_json::json!({
                    "grant_type": "client_credentials",
                    "client_id": client_id,
                    "client_secret": client_secret.expose(),
                });
                Ok((join("/oauth2/token"), serde_json::to_vec(&body).expect("json"), vec![]))
            }
            Credentials::Truvideo { api_key, secret_key, external_id } => {
                let body = truvideo_login_body(chrono::Utc::now());
                let signature = truvideo_signature(secret_key.expose(), &body);
                Ok((
                    join("/api/login"),
                    body,
                    vec![
                        ("x-authentication-api-key", api_key.expose().to_string()),
                        ("x-multitenant-external-id", external_id.clone()),
                        ("x-authentication-signature", signature),
                    ],
                ))
            }
        }
    }

    /// Reads a successful answer.
    fn accept(&self, body: &[u8]) -> Result<Token> {
        let protocol = |message: String| Error::Protocol { provider: self.provider, what: "sign in".into(), message };
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| protocol(format!("the answer is not JSON: {e}")))?;
        let (field, expires_in) = match self.credentials {
            Credentials::Teleport { .. } => ("access_token", v.get("expires_in").and_then(|e| e.as_f64())),
            Credentials::Truvideo { .. } => ("accessToken", v.get("expiresIn").and_then(|e| e.as_f64())),
        };
        let token = v
            .get(field)
            .and_then(|t| t.as_str())
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| protocol(format!("the answer has no {field}")))?;
        if let Some(kind) = v.get("token_type").and_then(|t| t.as_str())
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(protocol(format!("token_type is '{kind}', not bearer")));
        }
        let now = SystemTime::now();
        let expires_at = match expires_in.filter(|s| *s > 0.0) {
            Some(s) => now + Duration::from_secs_f64(s.min(1e9)),
            None => jwt_expiry(token).filter(|t| *t > now).unwrap_or(now + ASSUMED_LIFETIME),
        };
        let token = Token { secret: Secret::new(token), obtained_at: now, expires_at, from_cache: false };
        tracing::info!(provider = self.provider, valid_s = token.remaining().as_secs(), "signed in");
        self.store(&token);
        Ok(token)
    }

    fn scrubbed(&self, text: &str) -> String {
        scrub(text, &[self.secret().expose()])
    }

    /// A refusal: which credential is at fault, as far as the answer tells.
    fn refused(&self, status: u16, body: &[u8]) -> Error {
        let (code, msg) = summarize_body(body);
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let text_of = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let all = format!(
            "{} {} {} {} {}",
            code.clone().unwrap_or_default(),
            msg,
            text_of("error"),
            text_of("error_description"),
            text_of("message")
        )
        .to_ascii_lowercase();
        let summary = match (text_of("error"), text_of("error_description")) {
            (e, d) if !e.is_empty() && !d.is_empty() => self.scrubbed(&format!("{e}: {d}")),
            _ => self.scrubbed(&msg),
        };
        let at = safe_url(self.endpoint.as_str());
        let at = at.trim_end_matches('/');
        let (culprit, hint) = match &self.credentials {
            Credentials::Teleport { client_id, .. } => {
                if all.contains("secret") {
                    (
                        "client_secret".to_string(),
                        format!(
                            "check --client-secret (env TELEPORT_CLIENT_SECRET, config client_secret): it must be the secret issued with client id {client_id}"
                        ),
                    )
                } else if all.contains("client_id")
                    || all.contains("unknown client")
                    || all.contains("client not found")
                {
                    (
                        format!("client_id {client_id}"),
                        "check --client-id (env TELEPORT_CLIENT_ID, config client_id): create an API key in Teleport's settings".into(),
                    )
                } else {
                    (
                        format!("client_id {client_id} or its client_secret"),
                        "check --client-id and --client-secret (env TELEPORT_CLIENT_ID, TELEPORT_CLIENT_SECRET)".into(),
                    )
                }
            }
            Credentials::Truvideo { external_id, .. } => {
                if all.contains("timestamp") {
                    (
                        "the login timestamp".to_string(),
                        "the login carries the current time and must be less than 30 minutes old: check this machine's clock".into(),
                    )
                } else if all.contains("signature") {
                    (
                        "secret_key (the login signature)".to_string(),
                        "check --secret-key (env TRUVIDEO_SECRET_KEY, config secret_key): it must be the secret key paired with the api key".into(),
                    )
                } else if all.contains("external") || all.contains("tenant") {
                    (
                        format!("external_id {external_id}"),
                        "check --external-id (env TRUVIDEO_EXTERNAL_ID, config external_id)".into(),
                    )
                } else if all.contains("api key") || all.contains("api-key") || all.contains("apikey") {
                    ("api_key".to_string(), "check --api-key (env TRUVIDEO_API_KEY, config api_key)".into())
                } else {
                    (
                        "api_key, secret_key or external_id".to_string(),
                        "check --api-key, --secret-key and --external-id (env TRUVIDEO_API_KEY, TRUVIDEO_SECRET_KEY, TRUVIDEO_EXTERNAL_ID)".into(),
                    )
                }
            }
        };
        Error::Auth {
            provider: self.provider,
            message: format!("{culprit} refused by the sign-in endpoint {at} (HTTP {status}: {summary})"),
            hint: Some(hint),
        }
    }
}

/// The minified login body TruVideo signs: `{"timestamp":"2026-01-02T03:04:05.678Z"}`.
pub fn truvideo_login_body(now: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    let ts = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    serde_json::to_vec(&serde_json::json!({ "timestamp": ts })).expect("json")
}

/// Hex HMAC-SHA256 of `body` keyed with `secret_key`.
pub fn truvideo_signature(secret_key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret_key.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The claims of a JWT (unverified: only to read `exp` and who the token is for).
pub fn jwt_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    use base64::Engine;
    let mut it = token.split('.');
    let (_, payload, _) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(m) => Some(m),
        _ => None,
    }
}

fn jwt_expiry(token: &str) -> Option<SystemTime> {
    let exp = jwt_claims(token)?.get("exp")?.as_f64()?;
    (exp > 0.0).then(|| UNIX_EPOCH + Duration::from_secs_f64(exp.min(1e11)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truvideo_signature_is_hmac_of_the_minified_body() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z").unwrap().with_timezone(&chrono::Utc);
        let body = truvideo_login_body(now);
        assert_eq!(body, br#"{"timestamp":"2026-01-02T03:04:05.678Z"}"#);
        // RFC 4231 test case 2 checks the HMAC itself.
        assert_eq!(
            truvideo_signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn margin_is_a_fifth_of_the_lifetime_up_to_a_minute() {
        let now = SystemTime::now();
        let t = |life: u64| Token {
            secret: Secret::new("t"),
            obtained_at: now,
            expires_at: now + Duration::from_secs(life),
            from_cache: false,
        };
        assert_eq!(t(3600).margin(), MAX_MARGIN);
        assert_eq!(t(10).margin(), Duration::from_secs(2));
        assert!(t(3600).is_fresh());
        let old =
            Token { obtained_at: now - Duration::from_secs(20), expires_at: now + Duration::from_secs(1), ..t(1) };
        assert!(!old.is_fresh(), "inside the margin: renewed before expiry");
    }

    #[test]
    fn cache_round_trip_without_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let creds = Credentials::Teleport { client_id: "cid".into(), client_secret: Secret::new("very-secret-value") };
        let url = url::Url::parse("http://127.0.0.1:1").unwrap();
        let s = SignIn::new("teleport", url.clone(), creds, reqwest::Client::new(), Some(dir.path()));
        assert!(s.cached().is_none());
        let now = SystemTime::now();
        let tok = Token {
            secret: Secret::new("access-1234"),
            obtained_at: now,
            expires_at: now + Duration::from_secs(3600),
            from_cache: false,
        };
        s.store(&tok);
        let path = s.cache.clone().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("very-secret-value") && text.contains("cid"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(s.cached().unwrap().secret.expose(), "access-1234");
        // Another client id is another cache entry.
        let other = Credentials::Teleport { client_id: "cid2".into(), client_secret: Secret::new("x") };
        assert!(SignIn::new("teleport", url, other, reqwest::Client::new(), Some(dir.path())).cached().is_none());
        // A refused token is forgotten.
        s.forget(&Secret::new("access-1234"));
        assert!(s.cached().is_none());
    }

    #[test]
    fn jwt_exp_is_read() {
        use base64::Engine;
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let tok = format!("{}.{}.sig", enc(r#"{"alg":"HS256"}"#), enc(r#"{"sub":"t1","exp":4102444800}"#));
        assert_eq!(jwt_expiry(&tok), Some(UNIX_EPOCH + Duration::from_secs(4102444800)));
        assert_eq!(jwt_claims(&tok).unwrap()["sub"], "t1");
        assert!(jwt_claims("opaque-token").is_none());
    }
}
