//! Black-box tests of the emulator over HTTP.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use upload_emulator::{Config, Emulator, Faults, Processing};

use crate::common::Api;
use crate::common::{MIB, data};

impl Api {
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn create(&self, name: &str, size: usize) -> Value {
        let (s, v) = self
            .post("/api/v1/captures", json!({"name": name, "bytesize": size, "input_data_format": "bulk-images"}))
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn url(&self, eid: &str, part: u32, size: usize) -> String {
        let (s, v) = self
            .post(&format!("/api/v1/captures/{eid}/create-upload-url/{part}"), json!({"eid": eid, "bytesize": size}))
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["eid"], eid);
        v["upload_url"].as_str().unwrap().to_string()
    }

    /// Uploads every part; returns the ETags.
    async fn upload_all(&self, eid: &str, file: &[u8], chunk: usize) -> Vec<String> {
        let mut etags = vec![];
        for (i, c) in file.chunks(chunk).enumerate() {
            let url = self.url(eid, i as u32 + 1, file.len()).await;
            let resp = self.http.put(&url).body(c.to_vec()).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
            let etag = resp.headers()["etag"].to_str().unwrap().to_string();
            assert_eq!(etag, format!("\"{:x}\"", md5::Md5::digest(c)));
            etags.push(etag);
        }
        etags
    }
}

fn parts_json(etags: &[String]) -> Value {
    Value::Array(etags.iter().enumerate().map(|(i, e)| json!({"number": i + 1, "etag": e})).collect())
}

#[tokio::test]
async fn teleport_full_flow_in_memory() {
    full_flow(None).await;
}

#[tokio::test]
async fn teleport_full_flow_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    full_flow(Some(dir.path().to_path_buf())).await;
    assert!(dir.path().join("parts").exists());
}

async fn full_flow(state_dir: Option<std::path::PathBuf>) {
    let emu = Emulator::start(Config {
        teleport_chunk_size: 5 * MIB as u64,
        state_dir,
        processing: Processing { delay_ms: 1000, fail_reason: None },
        ..Default::default()
    })
    .await
    .unwrap();
    let api = Api::new(&emu);
    let file = data(12 * MIB + 123, 1);
    let name = "my scan (1)+ä.zip";
    let created = api.create(name, file.len()).await;
    let eid = created["eid"].as_str().unwrap().to_string();
    assert_eq!(eid.len(), 12);
    assert!(eid.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    assert_eq!(created["num_parts"], 3);
    assert_eq!(created["chunk_size"], 5 * MIB);

    let url = api.url(&eid, 1, file.len()).await;
    assert!(
        url.starts_with(&format!("{}/uploads/teleport/{eid}/my%20scan%20%281%29%2B%C3%A4.zip?", emu.s3_url())),
        "{url}"
    );
    assert!(url.contains("X-Amz-SignedHeaders=host"));

    let mut etags = api.upload_all(&eid, &file, 5 * MIB).await;
    // Re-send part 2: it replaces the first copy.
    let url = api.url(&eid, 2, file.len()).await;
    let resp = api.http.put(&url).body(file[5 * MIB..10 * MIB].to_vec()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    etags[1] = resp.headers()["etag"].to_str().unwrap().to_string();

    // Unquoted ETags are accepted too.
    let mut sent = etags.clone();
    sent[0] = sent[0].trim_matches('"').to_string();
    let (s, v) =
        api.post(&format!("/api/v1/captures/{eid}/uploaded"), json!({"eid": eid, "parts": parts_json(&sent)})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "UPLOADED");
    assert_eq!(v["eid"], eid.as_str());
    assert_eq!(v["name"], name);
    for field in [
        "sid",
        "error_reason",
        "state_description",
        "error_reason_slug",
        "preview_url",
        "viewer_url",
        "share_url",
        "share_link",
        "gif_url",
        "video_url",
        "share_video_url",
    ] {
        assert!(v[field].is_null(), "{field}: {v}");
    }
    assert_eq!(v["preview_urls"], json!({}));
    assert!(v["is_public"].is_boolean());
    let created_ts = v["created"].as_str().unwrap();
    assert!(chrono::NaiveDateTime::parse_from_str(created_ts, "%Y-%m-%dT%H:%M:%S%.6f").is_ok(), "{created_ts}");
    assert_eq!(created_ts.len(), 26, "{created_ts}");
    assert!(v["uploaded"].is_string());

    let done = std::time::Instant::now();
    // Listing and processing timeline.
    let (s, list) = api.call(reqwest::Method::GET, "/api/v1/captures?limit=10&offset=0", None).await;
    assert_eq!(s, 200);
    assert_eq!(list[0]["eid"], eid.as_str());
    let state = list[0]["state"].as_str().unwrap().to_string();
    assert!(state == "UPLOADED" || state == "PROCESSING", "{state}");

    // Idempotent.
    let (s, v2) =
        api.post(&format!("/api/v1/captures/{eid}/uploaded"), json!({"eid": eid, "parts": parts_json(&etags)})).await;
    assert_eq!(s, 200, "{v2}");
    assert_eq!(v2["eid"], eid.as_str());

    let key = format!("teleport/{eid}/{name}");
    let obj = emu.object(&key).expect("object stored");
    assert_eq!(obj.size, file.len() as u64);
    assert_eq!(obj.sha256, hex::encode(Sha256::digest(&file)));
    assert_eq!(obj.parts, 3);
    assert_eq!(obj.provider, "teleport");
    assert_eq!(obj.id, eid);
    assert!(obj.etag.ends_with("-3\""), "{}", obj.etag);
    assert_eq!(emu.object_bytes(&key).unwrap(), file);
    assert_eq!(emu.objects(), vec![obj.clone()]);

    let counts = emu.part_put_counts();
    let per_part: Vec<u64> = counts.values().copied().collect();
    assert_eq!(per_part, [1, 2, 1]);

    tokio::time::sleep(Duration::from_millis(1000).saturating_sub(done.elapsed())).await;
    let (_, list) = api.call(reqwest::Method::GET, "/api/v1/captures", None).await;
    assert_eq!(list[0]["state"], "READY");

    // Admin API.
    let admin: Value =
        api.http.get(format!("{}/_emulator/uploads", emu.api_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(admin[0]["sha256"], obj.sha256.as_str());
    assert_eq!(admin[0]["key"], key.as_str());
    let log = emu.request_log();
    assert!(log.iter().any(|r| r.server == "s3" && r.method == "PUT" && r.status == 200 && !r.path.contains('?')));
    assert!(log.iter().any(|r| r.server == "api" && r.path == "/api/v1/captures" && r.method == "POST"));
}

#[tokio::test]
async fn rename_list_delete() {
    let emu = Emulator::start(Config::default()).await.unwrap();
    let api = Api::new(&emu);
    let a = api.create("a.zip", 10).await;
    let b = api.create("b.mp4", 20).await;
    let (eid_a, eid_b) = (a["eid"].as_str().unwrap(), b["eid"].as_str().unwrap());
    let (_, list) = api.call(reqwest::Method::GET, "/api/v1/captures", None).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["eid"], eid_b, "newest first");
    assert_eq!(list[0]["state"], "CREATED");
    assert!(list[0]["uploaded"].is_null());
    let (_, list) = api.call(reqwest::Method::GET, "/api/v1/captures?limit=1&offset=1", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["eid"], eid_a);
    let (s, v) =
        api.call(reqwest::Method::PUT, &format!("/api/v1/captures/{eid_a}"), Some(json!({"name": "renamed"}))).await;
    assert_eq!(s, 200);
    assert_eq!(v["name"], "renamed");
    let (s, _) = api.call(reqwest::Method::DELETE, &format!("/api/v1/captures/{eid_a}"), None).await;
    assert_eq!(s, 204);
    let (s, v) = api.call(reqwest::Method::DELETE, &format!("/api/v1/captures/{eid_a}"), None).await;
    assert_eq!(s, 404);
    assert_eq!(v, json!({"detail": "Capture not found"}));
    let (s, v) = api.call(reqwest::Method::GET, "/api/v1/captures?limit=x", None).await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["loc"], json!(["query", "limit"]));
}

#[tokio::test]
async fn validation_errors_look_like_fastapi() {
    let emu = Emulator::start(Config::default()).await.unwrap();
    let api = Api::new(&emu);
    let (s, v) = api.post("/api/v1/captures", json!({"name": "x.zip"})).await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["loc"], json!(["body", "bytesize"]));
    assert_eq!(v["detail"][0]["msg"], "Field required");
    assert_eq!(v["detail"][0]["type"], "missing");

    let (s, v) = api.post("/api/v1/captures", json!({"name": 5, "bytesize": "big"})).await;
    assert_eq!(s, 422);
    let types: Vec<&str> = v["detail"].as_array().unwrap().iter().map(|d| d["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["string_type", "int_parsing"]);

    let (s, v) = api.post("/api/v1/captures", json!({"name": "x", "bytesize": -1})).await;
    assert_eq!(s, 422, "{v}");
    let (s, _) = api.post("/api/v1/captures", json!({"name": "x", "bytesize": 0})).await;
    assert_eq!(s, 422);
    let (s, v) = api.post("/api/v1/captures", json!({"name": "x", "bytesize": 1, "input_data_format": "pdf"})).await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["loc"], json!(["body", "input_data_format"]));
    assert_eq!(v["detail"][0]["type"], "enum");

    // Not JSON.
    let resp = api
        .http
        .post(format!("{}/api/v1/captures", api.base))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["detail"][0]["type"], "json_invalid");

    // Default format, then part numbers out of range / not integers.
    let c = api.create("x.zip", 3 * MIB).await;
    let eid = c["eid"].as_str().unwrap();
    assert_eq!(c["num_parts"], 1);
    for part in ["0", "2"] {
        let (s, v) = api
            .post(&format!("/api/v1/captures/{eid}/create-upload-url/{part}"), json!({"eid": eid, "bytesize": 3 * MIB}))
            .await;
        assert_eq!(s, 422, "{v}");
        assert_eq!(v["detail"][0]["loc"], json!(["path", "part_no"]));
    }
    let (s, v) =
        api.post(&format!("/api/v1/captures/{eid}/create-upload-url/one"), json!({"eid": eid, "bytesize": 1})).await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["type"], "int_parsing");
    let (s, v) = api.post(&format!("/api/v1/captures/{eid}/create-upload-url/1"), json!({"eid": eid})).await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["loc"], json!(["body", "bytesize"]));
    let (s, v) =
        api.post("/api/v1/captures/nosuchcapture/create-upload-url/1", json!({"eid": "x", "bytesize": 1})).await;
    assert_eq!(s, 404);
    assert_eq!(v, json!({"detail": "Capture not found"}));
    let (s, v) =
        api.post(&format!("/api/v1/captures/{eid}/uploaded"), json!({"eid": eid, "parts": [{"number": 1}]})).await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["loc"], json!(["body", "parts", 0, "etag"]));
    let (s, v) = api.call(reqwest::Method::GET, "/api/v1/nothing", None).await;
    assert_eq!((s.as_u16(), v), (404, json!({"detail": "Not Found"})));
}

#[tokio::test]
async fn auth_errors() {
    let emu = Emulator::start(Config { tokens: vec!["t1".into(), "t2".into()], ..Default::default() }).await.unwrap();
    assert_eq!(emu.token(), "t1");
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/captures", emu.api_url());
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"detail": "Not authenticated"}));
    let r = http.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.json::<Value>().await.unwrap()["detail"].is_string());
    let r = http.get(&url).bearer_auth("t2").send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn unauthorized_fault_counts_calls() {
    let emu = Emulator::start(Config {
        faults: Faults { unauthorized_api_call_nth: vec![2], ..Default::default() },
        ..Default::default()
    })
    .await
    .unwrap();
    let api = Api::new(&emu);
    let (s1, _) = api.call(reqwest::Method::GET, "/api/v1/captures", None).await;
    let (s2, _) = api.call(reqwest::Method::GET, "/api/v1/captures", None).await;
    let (s3, _) = api.call(reqwest::Method::GET, "/api/v1/captures", None).await;
    assert_eq!([s1.as_u16(), s2.as_u16(), s3.as_u16()], [200, 401, 200]);
}

#[tokio::test]
async fn completion_refusals() {
    let emu = Emulator::start(Config { teleport_chunk_size: MIB as u64, ..Default::default() }).await.unwrap();
    let api = Api::new(&emu);
    let file = data(2 * MIB + 10, 2);
    let c = api.create("small.zip", file.len()).await;
    let eid = c["eid"].as_str().unwrap();
    assert_eq!(c["num_parts"], 3);
    let etags = api.upload_all(eid, &file, MIB).await;
    let path = format!("/api/v1/captures/{eid}/uploaded");

    // 1 MiB parts: EntityTooSmall.
    let (s, v) = api.post(&path, json!({"eid": eid, "parts": parts_json(&etags)})).await;
    assert_eq!(s, 422, "{v}");
    let msg = v["detail"][0]["msg"].as_str().unwrap();
    assert!(msg.contains("EntityTooSmall") && msg.contains("part 1"), "{msg}");

    // Wrong ETag.
    let mut bad = etags.clone();
    bad[1] = "\"0123456789abcdef0123456789abcdef\"".into();
    let (s, v) = api.post(&path, json!({"eid": eid, "parts": parts_json(&bad)})).await;
    assert_eq!(s, 422);
    let msg = v["detail"][0]["msg"].as_str().unwrap();
    assert!(msg.contains("part 2") && msg.contains("InvalidPart"), "{msg}");
    assert_eq!(v["detail"][0]["loc"], json!(["body", "parts", 1]));

    // Missing part.
    let (s, v) = api.post(&path, json!({"eid": eid, "parts": parts_json(&etags[..2])})).await;
    assert_eq!(s, 422);
    assert!(v["detail"][0]["msg"].as_str().unwrap().contains("part 3"), "{v}");

    // Out of order.
    let mut rev = parts_json(&etags);
    rev.as_array_mut().unwrap().reverse();
    let (s, v) = api.post(&path, json!({"eid": eid, "parts": rev})).await;
    assert_eq!(s, 422);
    assert!(v["detail"][0]["msg"].as_str().unwrap().contains("InvalidPartOrder"), "{v}");
    assert!(emu.objects().is_empty());
}

#[tokio::test]
async fn single_part_and_small_min_part_size() {
    let emu =
        Emulator::start(Config { teleport_chunk_size: MIB as u64, min_part_size: MIB as u64, ..Default::default() })
            .await
            .unwrap();
    let api = Api::new(&emu);
    let file = data(2 * MIB + 10, 3);
    let c = api.create("small.zip", file.len()).await;
    let eid = c["eid"].as_str().unwrap();
    let etags = api.upload_all(eid, &file, MIB).await;
    let (s, v) =
        api.post(&format!("/api/v1/captures/{eid}/uploaded"), json!({"eid": eid, "parts": parts_json(&etags)})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(emu.objects()[0].sha256, hex::encode(Sha256::digest(&file)));
}

#[tokio::test]
async fn size_mismatch_refused() {
    let emu = Emulator::start(Config { teleport_chunk_size: 5 * MIB as u64, ..Default::default() }).await.unwrap();
    let api = Api::new(&emu);
    let c = api.create("x.zip", 1000).await;
    let eid = c["eid"].as_str().unwrap();
    let etags = api.upload_all(eid, &data(999, 1), 5 * MIB).await;
    let (s, v) =
        api.post(&format!("/api/v1/captures/{eid}/uploaded"), json!({"eid": eid, "parts": parts_json(&etags)})).await;
    assert_eq!(s, 422);
    assert!(v["detail"][0]["msg"].as_str().unwrap().contains("999"), "{v}");
}

#[tokio::test]
async fn complete_fail_times_then_works() {
    let emu = Emulator::start(Config {
        faults: Faults { complete_fail_times: 2, ..Default::default() },
        processing: Processing { delay_ms: 0, fail_reason: Some("NOT_ENOUGH_FRAMES".into()) },
        ..Default::default()
    })
    .await
    .unwrap();
    let api = Api::new(&emu);
    let file = data(100, 4);
    let c = api.create("x.mp4", file.len()).await;
    let eid = c["eid"].as_str().unwrap();
    let etags = api.upload_all(eid, &file, MIB).await;
    let path = format!("/api/v1/captures/{eid}/uploaded");
    let body = json!({"eid": eid, "parts": parts_json(&etags)});
    assert_eq!(api.post(&path, body.clone()).await.0, 500);
    assert_eq!(api.post(&path, body.clone()).await.0, 500);
    let (s, v) = api.post(&path, body).await;
    assert_eq!(s, 200, "{v}");
    let (_, list) = api.call(reqwest::Method::GET, "/api/v1/captures", None).await;
    assert_eq!(list[0]["state"], "ERROR");
    assert_eq!(list[0]["error_reason"], "NOT_ENOUGH_FRAMES");
    assert_eq!(list[0]["error_reason_slug"], "not-enough-frames");
    assert!(list[0]["state_description"].is_string());
}

/// A capture of `size` bytes and one presigned URL for part 1.
async fn one_url(emu: &Emulator, size: usize) -> (Api, String, String) {
    let api = Api::new(emu);
    let c = api.create("f.zip", size).await;
    let eid = c["eid"].as_str().unwrap().to_string();
    let url = api.url(&eid, 1, size).await;
    (api, eid, url)
}

#[tokio::test]
async fn presigned_put_signature_and_expiry() {
    let emu = Emulator::start(Config { url_ttl: Duration::from_secs(1), ..Default::default() }).await.unwrap();
    let (api, _, url) = one_url(&emu, 10).await;
    // Tampered signature.
    let sig_at = url.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let mut tampered = url.clone();
    let c = if &url[sig_at..sig_at + 1] == "0" { "1" } else { "0" };
    tampered.replace_range(sig_at..sig_at + 1, c);
    let r = api.http.put(&tampered).body(vec![0u8; 10]).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["content-type"], "application/xml");
    let text = r.text().await.unwrap();
    assert!(text.contains("<Code>SignatureDoesNotMatch</Code>"), "{text}");
    // Tampered part number.
    let r = api.http.put(url.replace("partNumber=1", "partNumber=2")).body(vec![0u8; 10]).send().await.unwrap();
    assert_eq!(r.status(), 403);
    // Good.
    let r = api.http.put(&url).body(vec![0u8; 10]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Expired.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = api.http.put(&url).body(vec![0u8; 10]).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    assert!(text.contains("<Code>AccessDenied</Code>"), "{text}");
    assert!(text.contains("<Message>Request has expired</Message>"), "{text}");
}

#[tokio::test]
async fn expire_urls_fault_and_unknown_upload() {
    let emu = Emulator::start(Config::default()).await.unwrap();
    let (api, eid, url) = one_url(&emu, 10).await;
    emu.set_faults(Faults { expire_urls_after_ms: Some(200), ..Default::default() });
    let r = api.http.put(&url).body(vec![1u8; 10]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = api.http.put(&url).body(vec![1u8; 10]).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("Request has expired"));
    emu.set_faults(Faults::default());
    // Deleting the capture aborts the upload.
    let (s, _) = api.call(reqwest::Method::DELETE, &format!("/api/v1/captures/{eid}"), None).await;
    assert_eq!(s, 204);
    let r = api.http.put(&url).body(vec![1u8; 10]).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("<Code>NoSuchUpload</Code>"));
}

#[tokio::test]
async fn put_faults() {
    let emu = Emulator::start(Config {
        faults: Faults { fail_put_nth: vec![1], ..Default::default() },
        ..Default::default()
    })
    .await
    .unwrap();
    let (api, _, url) = one_url(&emu, 1000).await;
    let body = data(1000, 9);
    let r = api.http.put(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert!(r.text().await.unwrap().contains("<Code>InternalError</Code>"));
    let r = api.http.put(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);

    emu.set_faults(Faults { fail_put_ratio: 1.0, fail_status: 503, ..Default::default() });
    let r = api.http.put(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("<Code>SlowDown</Code>"));

    emu.set_faults(Faults { reset_ratio: 1.0, ..Default::default() });
    let r = api.http.put(&url).body(data(3 * MIB, 1)).send().await;
    assert!(r.is_err(), "{r:?}");
    emu.set_faults(Faults::default());
    let r = api.http.put(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let counts = emu.part_put_counts();
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), [2]);
    let statuses: Vec<u16> = emu.request_log().iter().filter(|r| r.server == "s3").map(|r| r.status).collect();
    assert_eq!(statuses, [500, 200, 503, 0, 200]);
}

#[tokio::test]
async fn bandwidth_and_latency() {
    let emu = Emulator::start(Config {
        faults: Faults { bandwidth_bps: 1_000_000, latency_ms: 100, ..Default::default() },
        ..Default::default()
    })
    .await
    .unwrap();
    let (api, _, url) = one_url(&emu, 500_000).await;
    let t = std::time::Instant::now();
    let r = api.http.put(&url).body(data(500_000, 1)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let el = t.elapsed();
    assert!(el >= Duration::from_millis(550), "{el:?}");
}

/// The total cap is shared: two bodies sent at once take as long as both sent one after the
/// other, while each alone is under no cap of its own.
#[tokio::test]
async fn total_bandwidth_is_shared_by_every_connection() {
    let emu = Emulator::start(Config {
        faults: Faults { total_bandwidth_bps: 1_000_000, ..Default::default() },
        ..Default::default()
    })
    .await
    .unwrap();
    let (api, _, url_a) = one_url(&emu, 400_000).await;
    let (_, _, url_b) = one_url(&emu, 400_000).await;
    let t = std::time::Instant::now();
    let (a, b) = tokio::join!(
        api.http.put(&url_a).body(data(400_000, 1)).send(),
        api.http.put(&url_b).body(data(400_000, 2)).send()
    );
    assert_eq!((a.unwrap().status().as_u16(), b.unwrap().status().as_u16()), (200, 200));
    let el = t.elapsed();
    assert!(el >= Duration::from_millis(750), "800 kB at 1 MB/s in {el:?}");
    // The admin API shows the cap.
    let v: Value =
        api.http.get(format!("{}/_emulator/faults", emu.api_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["total_bandwidth_bps"], 1_000_000);
}

/// The in-flight gauges count requests from arrival to answer, per server; the peak restarts
/// on DELETE.
#[tokio::test]
async fn in_flight_gauges_count_requests_at_once() {
    let emu = Emulator::start(Config::default()).await.unwrap();
    let mut urls = vec![];
    for _ in 0..3 {
        urls.push(one_url(&emu, 1000).await.2);
    }
    let http = reqwest::Client::new();
    let admin = format!("{}/_emulator/in-flight", emu.api_url());
    let r = http.delete(&admin).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(emu.in_flight_peak("s3"), 0);
    // A long latency keeps the three PUTs in the server together.
    emu.set_faults(Faults { latency_ms: 1500, ..Default::default() });
    let puts = urls.iter().map(|u| http.put(u).body(data(1000, 3)).send());
    for r in futures::future::join_all(puts).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    emu.set_faults(Faults::default());
    assert_eq!(emu.in_flight_peak("s3"), 3);
    let v: Value = http.get(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["s3"], json!({"now": 0, "peak": 3}));
    // This GET is the one API request in flight.
    assert_eq!(v["api"]["now"], 1);
    http.delete(&admin).send().await.unwrap();
    assert_eq!(emu.in_flight_peak("s3"), 0);
}

/// Sends a raw HTTP/1.1 request; returns the status line and the rest.
async fn raw(addr: &str, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut out)).await.unwrap().unwrap();
    String::from_utf8_lossy(&out[..n]).into_owned()
}

#[tokio::test]
async fn content_length_required() {
    let emu = Emulator::start(Config::default()).await.unwrap();
    let (_, _, url) = one_url(&emu, 10).await;
    let addr = emu.s3_url().trim_start_matches("http://").to_string();
    let path = url.trim_start_matches(&emu.s3_url()).to_string();
    let resp = raw(
        &addr,
        &format!("PUT {path} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 411"), "{resp}");
    assert!(resp.contains("MissingContentLength"), "{resp}");
    // A raw request with the right host and length works.
    let resp = raw(&addr, &format!("PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 5\r\n\r\nhello")).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.to_ascii_lowercase().contains("etag: \"5d41402abc4b2a76b9719d911017c592\""), "{resp}");
}

#[tokio::test]
async fn admin_faults_round_trip() {
    let emu = Emulator::start(Config::default()).await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/_emulator/faults", emu.api_url());
    let r = http.put(&url).json(&json!({"fail_put_nth": [3], "latency_ms": 5})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(emu.faults().fail_put_nth, vec![3]);
    let v: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["latency_ms"], 5);
    let v: Value =
        http.get(format!("{}/_emulator/requests", emu.api_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(v[0]["path"], "/_emulator/faults");
    assert_eq!(v[0]["server"], "api");
}

#[tokio::test]
async fn store_single_put_object() {
    let emu = Emulator::start(Config::default()).await.unwrap();
    let store = &emu.shared().store;
    let url = store.presign_put_object("dir/a b.txt", "test", "id1");
    let r = reqwest::Client::new().put(&url).body("hello").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let o = emu.object("dir/a b.txt").unwrap();
    assert_eq!((o.size, o.parts, o.provider.as_str(), o.id.as_str()), (5, 1, "test", "id1"));
    assert_eq!(o.etag, "\"5d41402abc4b2a76b9719d911017c592\"");
}

#[tokio::test]
async fn errors_on_big_bodies_are_answered_not_reset() {
    let emu = Emulator::start(Config::default()).await.unwrap();
    let (api, _, url) = one_url(&emu, 8 * MIB).await;
    emu.set_faults(Faults { expire_urls_after_ms: Some(0), ..Default::default() });
    tokio::time::sleep(Duration::from_millis(5)).await;
    for _ in 0..3 {
        let r = api.http.put(&url).body(data(8 * MIB, 5)).send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert!(r.text().await.unwrap().contains("Request has expired"));
    }
    let r = api.http.put(url.replace("partNumber=1", "partNumber=9")).body(data(8 * MIB, 5)).send().await.unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn presigned_get_returns_the_object() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(Config { state_dir: Some(dir.path().into()), ..Default::default() }).await.unwrap();
    let store = &emu.shared().store;
    let body = data(3 * MIB + 7, 8);
    let r = reqwest::Client::new()
        .put(store.presign_put_object("x/y.bin", "t", "1"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::Client::new().get(store.presign_get_object("x/y.bin")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), body);
    let r = reqwest::Client::new().get(store.presign_get_object("nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // A GET URL does not allow a PUT.
    let r = reqwest::Client::new().put(store.presign_get_object("x/y.bin")).body("z").send().await.unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn binary_prints_urls_and_serves() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_upload-emulator"))
        .args(["--token", "tok-1", "--token", "tok-2", "--chunk-size", "6000000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines: Vec<String> = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout).lines().take(4).map(Result::unwrap).collect()
    })
    .await
    .unwrap();
    let api = lines[0].strip_prefix("api: ").expect("api line").to_string();
    assert!(lines[1].starts_with("s3: http://127.0.0.1:"), "{lines:?}");
    assert_eq!(lines[2..], ["token: tok-1", "token: tok-2"]);
    let r = reqwest::Client::new()
        .post(format!("{api}/api/v1/captures"))
        .bearer_auth("tok-2")
        .json(&json!({"name": "a.zip", "bytesize": 12_000_001}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["chunk_size"].as_u64(), v["num_parts"].as_u64()), (Some(6_000_000), Some(3)));
    let killed = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn throttle_fault_answers_429() {
    let emu = Emulator::start(Config {
        faults: Faults { throttle_api_call_nth: vec![1], ..Default::default() },
        ..Default::default()
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/captures", emu.api_url());
    let r = http.get(&url).bearer_auth(emu.token()).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let r = http.get(&url).bearer_auth(emu.token()).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_completions_both_succeed() {
    let emu = Emulator::start(Config::default()).await.unwrap();
    let api = Api::new(&emu);
    let file = data(1000, 6);
    let c = api.create("x.zip", file.len()).await;
    let eid = c["eid"].as_str().unwrap();
    let etags = api.upload_all(eid, &file, MIB).await;
    let path = format!("/api/v1/captures/{eid}/uploaded");
    let body = json!({"eid": eid, "parts": parts_json(&etags)});
    let (a, b) = tokio::join!(api.post(&path, body.clone()), api.post(&path, body.clone()));
    assert_eq!((a.0.as_u16(), b.0.as_u16()), (200, 200));
    assert_eq!(emu.objects().len(), 1);
}

#[tokio::test]
async fn content_md5_is_checked() {
    use base64::Engine;
    let emu = Emulator::start(Config::default()).await.unwrap();
    let (api, _, url) = one_url(&emu, 5).await;
    let good = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b"hello"));
    let r = api.http.put(&url).header("content-md5", &good).body("hello").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = api.http.put(&url).header("content-md5", &good).body("hellO").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("<Code>BadDigest</Code>"));
    let r = api.http.put(&url).header("content-md5", "nope").body("hello").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("<Code>InvalidDigest</Code>"));
    assert_eq!(emu.part_put_counts().values().copied().collect::<Vec<_>>(), [1]);
}
