//! What the emulator's tests share: test data and a JSON client of the vendor APIs.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use upload_emulator::Emulator;

pub const MIB: usize = 1024 * 1024;

/// `len` bytes of a pattern that differs per `seed` and does not repeat within a part.
pub fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u64).wrapping_mul(2654435761).wrapping_add(seed as u64) as u8 ^ (i >> 13) as u8).collect()
}

/// A client of one emulator's vendor APIs, with its token. Each test module adds the calls
/// of its API in an `impl Api` of its own.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub fn new(emu: &Emulator) -> Self {
        Api { http: reqwest::Client::new(), base: emu.api_url(), token: emu.token() }
    }

    /// One call with the token; the answer's status and JSON body (`Null` when empty). A
    /// body that is not JSON, or JSON not labelled `application/json`, fails the test.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let text = resp.text().await.unwrap();
        if text.is_empty() {
            return (status, Value::Null);
        }
        assert!(content_type.starts_with("application/json"), "{path}: {content_type}: {text}");
        (status, serde_json::from_str(&text).unwrap())
    }
}
