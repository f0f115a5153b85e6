//! `upload auth check --provider P`: obtains a token the way an upload would (given token >
//! built-in sign-in > `--token-command`; a sign-in is made anew, not taken from the cache),
//! makes one cheap read-only call and says who the token is for when anyone tells.
//!
//! The read-only calls:
//! - Teleport: `GET /api/v1/captures?limit=1` (lists at most one capture);
//! - TruVideo: the Upload V3 API has no documented GET without an id, so the check asks
//!   `GET /upload/00000000-0000-0000-0000-000000000000`, the details of an upload that cannot
//!   exist: 400 (the documented "Invalid uploadId") means the token passed authentication, 401
//!   that it did not (a 404 means the endpoint is not TruVideo's Upload API);
//! - Uplift: `GET /v1/captures?limit=1` (docs.uplift.ai, "List captures");
//! - Apertur: `GET /api/v1/sessions/recent?limit=1` (the SDK's `sessions.recent`).
//!
//! The API tells nothing about the caller; when the token is a JWT, its identity claims
//! (`sub`, `client_id`, `email`, ...) are shown (read locally, never the token itself).

use std::io::Write;
use std::time::SystemTime;

use crate::cli::args::{AuthCheckArgs, OutputArgs, ProviderName};
use crate::error::{Error, Result};
use crate::providers::api::Api;
use crate::providers::{TokenOrigin, signin};

/// Claims shown as "who the token is for".
const IDENTITY_CLAIMS: [&str; 9] =
    ["sub", "client_id", "azp", "email", "name", "org", "organization", "tenant", "externalId"];

/// Runs the check; returns the exit code (0) or the error (exit 3 when the token is refused).
pub(crate) async fn check(
    args: &AuthCheckArgs,
    output: &OutputArgs,
    inv: &crate::cli::settings::Invocation,
) -> Result<i32> {
    let (config, net) = (&inv.config, &inv.net);
    let mut args = args.clone();
    config.apply_auth_check(&mut args)?;
    let args = &args;
    let provider = args.provider.ok_or_else(|| {
        Error::usage("no provider given", "pass --provider teleport|truvideo|uplift|apertur (or set UPLOAD_PROVIDER)")
    })?;
    let (path, accepted) = read_only_call(provider);
    let query: Vec<(&str, String)> =
        if provider == ProviderName::Truvideo { vec![] } else { vec![("limit", "1".into())] };
    let crate::cli::settings::Connection { endpoint, token, http, .. } = crate::cli::settings::connect(
        provider,
        config,
        crate::cli::settings::ConnectionArgs {
            endpoint: args.endpoint.clone(),
            tokens: crate::cli::args::TokenArgs {
                token: args.token.clone(),
                token_command: args.token_command.clone(),
            },
            sign_in: &args.sign_in,
            rc: args.rc,
            state_dir: args.state_dir.clone(),
            concurrency: 1,
            net,
        },
    )?;
    token.sign_in_now().await?;
    let mut api = Api::new(
        http,
        endpoint,
        provider.as_str(),
        token.clone(),
        crate::engine::retry::RetryPolicy { max_retries: 2, ..Default::default() },
    )
    .with_executor(crate::engine::request::Executor::with_options(
        tokio_util::sync::CancellationToken::new(),
        None,
        net,
    ));
    if provider == ProviderName::Apertur {
        api.signer = crate::providers::apertur::signer(args.signing_secret.as_ref());
    }
    let what = format!("GET {path}{}", if query.is_empty() { "" } else { "?limit=1" });
    let status = match api.get("auth check", path, &query).send().await {
        Ok(a) => a.status,
        Err(Error::Rejected { status, .. }) if accepted.contains(&status) => status,
        Err(Error::Rejected { status: 403, message, .. }) => {
            return Err(Error::Auth {
                provider: provider.as_str(),
                message: format!("{what}: HTTP 403: {message}"),
                hint: Some("the token is valid but not allowed to read this API: check the account's access".into()),
            });
        }
        Err(e) => return Err(e),
    };
    let (origin, expires) = token.origin().await;
    let secret = token.known_secret().await.unwrap_or_default();
    let by = token.sign_in().filter(|_| matches!(origin, TokenOrigin::SignIn | TokenOrigin::Cache));
    let report = Report {
        provider: provider.as_str(),
        token_source: origin.as_str(),
        signed_in: by.map(|s| (s.credentials().who(), crate::redact::safe_url(s.endpoint().as_str()))),
        valid_s: expires.and_then(|e| e.duration_since(SystemTime::now()).ok()).map(|d| d.as_secs()),
        check: what,
        status,
        token_for: identity(secret.expose()),
    };
    let text = if output.json { format!("{}\n", report.json()) } else { report.text() };
    let res = std::io::stdout().lock().write_all(text.as_bytes());
    match res {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::File { path: "<stdout>".into(), source: e }),
        _ => Ok(crate::cli::report::exit::OK),
    }
}

/// The read-only call of each provider, and the statuses besides 2xx that prove the token passed.
fn read_only_call(provider: ProviderName) -> (&'static str, &'static [u16]) {
    match provider {
        ProviderName::Teleport => ("/api/v1/captures", &[]),
        ProviderName::Truvideo => ("/upload/00000000-0000-0000-0000-000000000000", &[400]),
        ProviderName::Uplift => ("/v1/captures", &[]),
        ProviderName::Apertur => ("/api/v1/sessions/recent", &[]),
    }
}

/// Who a JWT says it is for (its identity claims, read locally); nothing for other tokens.
fn identity(token: &str) -> Vec<(String, String)> {
    let claims = signin::jwt_claims(token).unwrap_or_default();
    IDENTITY_CLAIMS
        .iter()
        .filter_map(|k| {
            let v = claims.get(*k)?;
            let s = v.as_str().map(String::from).unwrap_or_else(|| v.to_string());
            Some((k.to_string(), s))
        })
        .collect()
}

/// What the check found, for the terminal or `--json`.
struct Report {
    provider: &'static str,
    token_source: &'static str,
    /// (who, the sign-in endpoint without secrets) when the token came from a sign-in.
    signed_in: Option<(String, String)>,
    valid_s: Option<u64>,
    check: String,
    status: u16,
    token_for: Vec<(String, String)>,
}

impl Report {
    fn json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "provider": self.provider,
            "ok": true,
            "token_source": self.token_source,
            "check": self.check,
            "status": self.status,
        });
        if let Some((who, endpoint)) = &self.signed_in {
            v["signed_in_as"] = who.clone().into();
            v["auth_endpoint"] = endpoint.clone().into();
        }
        if let Some(t) = self.valid_s {
            v["expires_in_s"] = t.into();
        }
        if !self.token_for.is_empty() {
            v["token_for"] =
                self.token_for.iter().map(|(k, s)| (k.clone(), serde_json::Value::from(s.clone()))).collect();
        }
        v
    }

    fn text(&self) -> String {
        let mut text = format!("{}: credentials accepted\n", self.provider);
        match &self.signed_in {
            Some((who, endpoint)) => {
                text.push_str(&format!("  token: signed in as {who} at {}", endpoint.trim_end_matches('/')))
            }
            None => text.push_str(&format!("  token: {}", self.token_source)),
        }
        if let Some(t) = self.valid_s {
            text.push_str(&format!(", valid for {t} s"));
        }
        text.push('\n');
        text.push_str(&format!("  check: {} answered {}\n", self.check, self.status));
        if self.token_for.is_empty() {
            text.push_str("  token for: the API does not say\n");
        } else {
            let list: Vec<String> = self.token_for.iter().map(|(k, v)| format!("{k}={v}")).collect();
            text.push_str(&format!("  token for: {}\n", list.join(", ")));
        }
        text
    }
}
