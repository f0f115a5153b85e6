//! The sign-in endpoints over HTTP: Teleport's client-credentials grant and TruVideo's signed
//! login, with the tokens they hand out accepted by the API until they expire.

use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use upload_emulator::{Config, Emulator};

async fn start(config: Config) -> (Emulator, reqwest::Client) {
    (Emulator::start(config).await.unwrap(), reqwest::Client::new())
}

async fn token_request(http: &reqwest::Client, emu: &Emulator, body: Value) -> (StatusCode, Value) {
    let r = http.post(format!("{}/oauth2/token", emu.api_url())).json(&body).send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

/// `GET /api/v1/captures` with a bearer token: the status.
async fn api_status(http: &reqwest::Client, emu: &Emulator, token: &str) -> StatusCode {
    http.get(format!("{}/api/v1/captures?limit=1", emu.api_url())).bearer_auth(token).send().await.unwrap().status()
}

fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A TruVideo login with a timestamp `offset` from now, signed with `key`.
async fn login(
    http: &reqwest::Client,
    emu: &Emulator,
    offset: chrono::Duration,
    key: &str,
    api_key: &str,
) -> (StatusCode, Value) {
    let ts = (chrono::Utc::now() + offset).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body = json!({ "timestamp": ts }).to_string();
    let r = http
        .post(format!("{}/api/login", emu.api_url()))
        .header("content-type", "application/json")
        .header("x-authentication-api-key", api_key)
        .header("x-multitenant-external-id", "emulator-tenant")
        .header("x-authentication-signature", sign(key, body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn client_credentials_grant() {
    let (emu, http) = start(Config::default()).await;
    let (s, v) = token_request(
        &http,
        &emu,
        json!({"grant_type": "client_credentials", "client_id": "emulator-client", "client_secret": "emulator-client-secret"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["token_type"].as_str(), v["expires_in"].as_u64()), (Some("bearer"), Some(3600)));
    let token = v["access_token"].as_str().unwrap();
    assert_eq!(api_status(&http, &emu, token).await, 200);

    // Form-encoded works too.
    let r = http
        .post(format!("{}/oauth2/token", emu.api_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=emulator-client&client_secret=emulator-client-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Refusals name the credential, OAuth 2 style.
    let (s, v) = token_request(
        &http,
        &emu,
        json!({"grant_type": "client_credentials", "client_id": "emulator-client", "client_secret": "nope"}),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["error"].as_str(), v["error_description"].as_str()),
        (401, Some("invalid_client"), Some("Invalid client_secret"))
    );
    let (s, v) =
        token_request(&http, &emu, json!({"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"}))
            .await;
    assert_eq!((s.as_u16(), v["error_description"].as_str()), (401, Some("Unknown client_id")));
    let (s, v) = token_request(&http, &emu, json!({"grant_type": "password", "client_id": "x"})).await;
    assert_eq!((s.as_u16(), v["error"].as_str()), (400, Some("unsupported_grant_type")));
    assert_eq!(api_status(&http, &emu, "tp-made-up").await, 401);
}

#[tokio::test]
async fn tokens_expire_after_their_lifetime() {
    let (emu, http) = start(Config { token_lifetime: Duration::from_millis(700), ..Config::default() }).await;
    let (s, v) = token_request(
        &http,
        &emu,
        json!({"grant_type": "client_credentials", "client_id": "emulator-client", "client_secret": "emulator-client-secret"}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["expires_in"], 1, "whole seconds, rounded up");
    let token = v["access_token"].as_str().unwrap().to_string();
    assert_eq!(api_status(&http, &emu, &token).await, 200);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(api_status(&http, &emu, &token).await, 401, "expired");
    // The configured static token is not affected.
    assert_eq!(api_status(&http, &emu, &emu.token()).await, 200);
}

#[tokio::test]
async fn truvideo_login_checks_signature_and_timestamp() {
    let (emu, http) = start(Config::default()).await;
    let key = "emulator-secret-key";
    let (s, v) = login(&http, &emu, chrono::Duration::zero(), key, "emulator-api-key").await;
    assert_eq!(s, 200, "{v}");
    let token = v["accessToken"].as_str().unwrap();
    assert!(v["refreshToken"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(token.split('.').count(), 3, "a JWT");
    assert_eq!(api_status(&http, &emu, token).await, 200, "accepted by the API");

    // 29 minutes old is still fine; 31 minutes is stale.
    let (s, _) = login(&http, &emu, chrono::Duration::minutes(-29), key, "emulator-api-key").await;
    assert_eq!(s, 200);
    let (s, v) = login(&http, &emu, chrono::Duration::minutes(-31), key, "emulator-api-key").await;
    assert_eq!((s.as_u16(), v["message"].as_str()), (401, Some("Timestamp expired: older than 30 minutes")));
    // In the future beyond the clock skew.
    let (s, v) = login(&http, &emu, chrono::Duration::minutes(5), key, "emulator-api-key").await;
    assert_eq!((s.as_u16(), v["message"].as_str()), (401, Some("Timestamp is in the future")));
    // Signed with another key.
    let (s, v) = login(&http, &emu, chrono::Duration::zero(), "wrong-key", "emulator-api-key").await;
    assert_eq!((s.as_u16(), v["message"].as_str()), (401, Some("Invalid signature")));
    assert_eq!(v["path"], "/api/login");
    // Unknown api key.
    let (s, v) = login(&http, &emu, chrono::Duration::zero(), key, "other-key").await;
    assert_eq!((s.as_u16(), v["message"].as_str()), (401, Some("Invalid API key")));

    // A body changed after signing.
    let body = json!({ "timestamp": chrono::Utc::now().to_rfc3339() }).to_string();
    let sig = sign(key, body.as_bytes());
    let r = http
        .post(format!("{}/api/login", emu.api_url()))
        .header("x-authentication-api-key", "emulator-api-key")
        .header("x-multitenant-external-id", "emulator-tenant")
        .header("x-authentication-signature", sig)
        .body(body.replace("20", "21"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "Invalid signature");
    // Only the successful logins count as sign-ins in the log.
    let ok = emu.request_log().iter().filter(|r| r.path == "/api/login" && r.status == 200).count();
    assert_eq!(ok, 2);
}
