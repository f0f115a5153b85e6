//! Uplift's reservation endpoint and the S3 POST Object endpoint, over HTTP.

use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use upload_emulator::uplift::UpliftConfig;
use upload_emulator::{Config, Emulator, Faults};

use crate::common::{MIB, data};

fn body() -> Value {
    json!({
        "athlete_id": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "session_group_id": "11111111-2222-3333-4444-555555555555",
        "file_name": "swing-001.mov",
        "capture_time": "2026-05-13T12:00:00.000Z",
        "camera_configuration": {"camera_setup_selection": "single.down_the_line", "camera_orientation": "landscape"},
        "movement_attributes": {"activity": "golf", "movement": "full_swing"}
    })
}

async fn reserve_raw(emu: &Emulator, body: &Value, token: &str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/captures", emu.api_url()))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let text = resp.text().await.unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    if status == 200 {
        // serde_json's Map sorts its keys: keep the order of the text aside.
        let ordered: Ordered = serde_json::from_str(&text).unwrap();
        v["_fields_in_order"] = json!(ordered.upload_fields.0);
    }
    (status, v)
}

#[derive(serde::Deserialize)]
struct Ordered {
    upload_fields: Pairs,
}

struct Pairs(Vec<(String, String)>);

impl<'de> serde::Deserialize<'de> for Pairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Pairs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Pairs, A::Error> {
                let mut v = vec![];
                while let Some(entry) = m.next_entry::<String, String>()? {
                    v.push(entry);
                }
                Ok(Pairs(v))
            }
        }
        d.deserialize_map(V)
    }
}

async fn reserve(emu: &Emulator) -> Value {
    let (s, v) = reserve_raw(emu, &body(), &emu.token()).await;
    assert_eq!(s, 200, "{v}");
    v
}

/// The form fields of a reservation, in order.
fn fields(r: &Value) -> Vec<(String, String)> {
    serde_json::from_value(r["_fields_in_order"].clone()).unwrap()
}

fn field(f: &[(String, String)], name: &str) -> String {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap()
}

const BOUNDARY: &str = "----emulator-test-boundary-7d1f";

/// A multipart/form-data body: `fields`, then the file (if any), then `after`.
fn form(fields: &[(String, String)], file: Option<(&str, &[u8])>, after: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    let text = |name: &str, value: &str, b: &mut Vec<u8>| {
        b.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    };
    for (k, v) in fields {
        text(k, v, &mut b);
    }
    if let Some((name, bytes)) = file {
        b.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: video/quicktime\r\n\r\n"
            )
            .as_bytes(),
        );
        b.extend_from_slice(bytes);
        b.extend_from_slice(b"\r\n");
    }
    for (k, v) in after {
        text(k, v, &mut b);
    }
    b.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    b
}

async fn post(url: &str, body: Vec<u8>) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(body)
        .send()
        .await
        .unwrap();
    let (s, h) = (resp.status(), resp.headers().clone());
    (s, h, resp.text().await.unwrap())
}

fn with(fields: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    fields.iter().map(|(k, v)| (k.clone(), if k == name { value.to_string() } else { v.clone() })).collect()
}

#[tokio::test]
async fn reservation_shape_and_post_round_trip() {
    let emu = Emulator::start(Config::default()).await.unwrap();
    let r = reserve(&emu).await;
    assert_eq!(r["status"], "NEW");
    assert_eq!(r["session_group_id"], "11111111-2222-3333-4444-555555555555");
    let sid = r["session_id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::try_parse(&sid).is_ok(), "{sid}");
    assert_eq!(r["upload_url"], format!("{}/uploads", emu.s3_url()));
    let expires = chrono::DateTime::parse_from_rfc3339(r["upload_expires_at"].as_str().unwrap()).unwrap();
    let ttl = expires.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!((29 * 60..=30 * 60).contains(&ttl), "{ttl}");
    let f = fields(&r);
    let names: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["key", "Content-Type", "x-amz-algorithm", "x-amz-credential", "x-amz-date", "policy", "x-amz-signature"]
    );
    assert_eq!(f[0].1, format!("uplift/{sid}/swing-001.mov"));
    let policy: Value =
        serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(field(&f, "policy")).unwrap())
            .unwrap();
    assert!(policy["expiration"].as_str().unwrap().ends_with('Z'));
    let conds = policy["conditions"].to_string();
    assert!(conds.contains(r#"{"bucket":"uploads"}"#) && conds.contains(r#"["content-length-range",1,5368709120]"#));

    // Fields after the file are ignored, as S3 does.
    let file = data(3 * MIB + 17, 3);
    let (s, h, text) =
        post(r["upload_url"].as_str().unwrap(), form(&f, Some(("swing-001.mov", &file)), &[("ignored", "x")])).await;
    assert_eq!(s, 204, "{text}");
    assert_eq!(h["etag"].to_str().unwrap(), format!("\"{:x}\"", md5::Md5::digest(&file)));
    assert!(h["location"].to_str().unwrap().ends_with(&format!("/uploads/uplift/{sid}/swing-001.mov")));
    let objects = emu.objects();
    assert_eq!(objects.len(), 1);
    let o = &objects[0];
    assert_eq!((o.provider.as_str(), o.id.as_str(), o.size, o.parts), ("uplift", sid.as_str(), file.len() as u64, 1));
    assert_eq!(o.sha256, hex::encode(Sha256::digest(&file)));
    let caps = upload_emulator::uplift::captures(emu.shared());
    assert_eq!(caps[0].status, "UPLOADED");
    assert_eq!(caps[0].movement_attributes["movement"], "full_swing");
}

#[tokio::test]
async fn post_object_on_disk_with_success_action_status() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(Config { state_dir: Some(dir.path().into()), ..Default::default() }).await.unwrap();
    let r = reserve(&emu).await;
    let url = r["upload_url"].as_str().unwrap();
    // 80 MiB: well past the sizes where buffering form parsers give up.
    let file = data(80 * MIB, 9);
    let (s, _, text) = post(url, form(&fields(&r), Some(("swing-001.mov", &file)), &[])).await;
    assert_eq!(s, 204, "{text}");
    assert_eq!(emu.objects()[0].sha256, hex::encode(Sha256::digest(&file)));
    assert!(dir.path().join("objects").exists());

    // success_action_status is a field like any other: the policy must allow it.
    let r = reserve(&emu).await;
    let mut f = fields(&r);
    f.insert(1, ("success_action_status".into(), "201".into()));
    let (s, _, text) = post(r["upload_url"].as_str().unwrap(), form(&f, Some(("a.mov", b"abc")), &[])).await;
    assert_eq!(s, 403, "{text}");
    assert!(text.contains("Invalid according to Policy: Extra input fields: success_action_status"), "{text}");
}

#[tokio::test]
async fn tampered_forms_are_refused_like_s3() {
    let emu = Emulator::start(Config::default()).await.unwrap();
    let r = reserve(&emu).await;
    let url = r["upload_url"].as_str().unwrap().to_string();
    let f = fields(&r);
    let file = b"not really a movie".to_vec();
    let key = field(&f, "key");

    type Case<'a> = (Vec<(String, String)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            with(&f, "key", &key.replace("swing-001", "other")),
            403,
            "Invalid according to Policy: Policy Condition failed",
        ),
        (with(&f, "Content-Type", "text/html"), 403, "Policy Condition failed"),
        (with(&f, "x-amz-signature", &"0".repeat(64)), 403, "SignatureDoesNotMatch"),
        (
            with(&f, "x-amz-credential", &field(&f, "x-amz-credential").replace("EMULATORKEY", "OTHERKEY")),
            403,
            "InvalidAccessKeyId",
        ),
        (f.iter().filter(|(k, _)| k != "x-amz-signature").cloned().collect(), 400, "x-amz-signature"),
        (f.iter().filter(|(k, _)| k != "policy").cloned().collect(), 403, "AccessDenied"),
        (f.iter().filter(|(k, _)| k != "key").cloned().collect(), 400, "must contain a field named &apos;key&apos;"),
    ];
    for (i, (fields, status, text)) in cases.into_iter().enumerate() {
        let (s, _, body) = post(&url, form(&fields, Some(("swing-001.mov", &file)), &[])).await;
        assert_eq!(s.as_u16(), status, "case {i}: {body}");
        assert!(body.contains(text), "case {i}: {body}");
        assert!(body.contains("<Error>"), "case {i}: {body}");
    }

    // A policy rewritten to allow more: its signature no longer matches.
    let i = f.iter().position(|(k, _)| k == "policy").unwrap();
    let doc = base64::engine::general_purpose::STANDARD.decode(&f[i].1).unwrap();
    let doc = String::from_utf8(doc).unwrap().replace(&key, "anything.mov");
    let forged = with(&f, "policy", &base64::engine::general_purpose::STANDARD.encode(doc));
    let forged = with(&forged, "key", "anything.mov");
    let (s, _, body) = post(&url, form(&forged, Some(("swing-001.mov", &file)), &[])).await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("SignatureDoesNotMatch"), "{body}");

    // No file, an empty file (content-length-range starts at 1), not a form at all.
    let (s, _, body) = post(&url, form(&f, None, &[])).await;
    assert_eq!((s.as_u16(), body.contains("exactly one file")), (400, true), "{body}");
    let (s, _, body) = post(&url, form(&f, Some(("swing-001.mov", b"")), &[])).await;
    assert_eq!((s.as_u16(), body.contains("EntityTooSmall")), (400, true), "{body}");
    let resp = reqwest::Client::new().post(&url).body("key=x").send().await.unwrap();
    assert_eq!(resp.status(), 412);
    let other_bucket = url.replace("/uploads", "/elsewhere");
    let (s, _, body) = post(&other_bucket, form(&f, Some(("swing-001.mov", &file)), &[])).await;
    assert_eq!((s.as_u16(), body.contains("NoSuchBucket")), (404, true), "{body}");
    assert!(emu.objects().is_empty());

    // The untouched form still works.
    let (s, _, body) = post(&url, form(&f, Some(("swing-001.mov", &file)), &[])).await;
    assert_eq!(s, 204, "{body}");
}

#[tokio::test]
async fn expiry_knobs() {
    let emu = Emulator::start(Config {
        uplift: UpliftConfig { expired_reservations: 1, expired_policies: 1, ..Default::default() },
        ..Default::default()
    })
    .await
    .unwrap();
    let now = chrono::Utc::now();
    let file = b"movie".to_vec();
    // 1: expired on arrival.
    let r = reserve(&emu).await;
    let at = chrono::DateTime::parse_from_rfc3339(r["upload_expires_at"].as_str().unwrap()).unwrap();
    // Before the answer came (not before the request: a loaded machine can take seconds).
    assert!(at < chrono::Utc::now());
    let (s, _, body) = post(r["upload_url"].as_str().unwrap(), form(&fields(&r), Some(("a.mov", &file)), &[])).await;
    assert_eq!(s, 403);
    assert!(body.contains("<Code>AccessDenied</Code><Message>Invalid according to Policy: Policy expired.</Message>"));
    // 2: announced as valid, but the policy already expired.
    let r = reserve(&emu).await;
    let at = chrono::DateTime::parse_from_rfc3339(r["upload_expires_at"].as_str().unwrap()).unwrap();
    assert!(at > now + chrono::Duration::minutes(29));
    let (s, _, body) = post(r["upload_url"].as_str().unwrap(), form(&fields(&r), Some(("a.mov", &file)), &[])).await;
    assert_eq!(s, 403);
    assert!(body.contains("Policy expired."), "{body}");
    // 3: fine.
    let r = reserve(&emu).await;
    let (s, _, body) = post(r["upload_url"].as_str().unwrap(), form(&fields(&r), Some(("a.mov", &file)), &[])).await;
    assert_eq!(s, 204, "{body}");

    // A short TTL really expires.
    let emu = Emulator::start(Config {
        uplift: UpliftConfig { upload_ttl: Duration::from_millis(300), ..Default::default() },
        ..Default::default()
    })
    .await
    .unwrap();
    let r = reserve(&emu).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (s, _, body) = post(r["upload_url"].as_str().unwrap(), form(&fields(&r), Some(("a.mov", &file)), &[])).await;
    assert_eq!(s, 403, "{body}");
}

#[tokio::test]
async fn post_faults_apply() {
    let emu = Emulator::start(Config {
        faults: Faults { fail_put_nth: vec![1], fail_status: 503, ..Default::default() },
        ..Default::default()
    })
    .await
    .unwrap();
    let r = reserve(&emu).await;
    let f = fields(&r);
    let (s, _, body) = post(r["upload_url"].as_str().unwrap(), form(&f, Some(("a.mov", b"abc")), &[])).await;
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("SlowDown"));
    let (s, _, _) = post(r["upload_url"].as_str().unwrap(), form(&f, Some(("a.mov", b"abc")), &[])).await;
    assert_eq!(s, 204);
}

#[tokio::test]
async fn reservation_validation() {
    let emu = Emulator::start(Config::default()).await.unwrap();
    let token = emu.token();
    let edit = |path: &[&str], v: Value| {
        let mut b = body();
        let mut cur = &mut b;
        for p in &path[..path.len() - 1] {
            cur = &mut cur[*p];
        }
        if v.is_null() {
            cur.as_object_mut().unwrap().remove(path[path.len() - 1]);
        } else {
            cur[path[path.len() - 1]] = v;
        }
        b
    };
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let cases: Vec<(Value, &str)> = vec![
        (edit(&["athlete_id"], Value::Null), "athlete_id is required"),
        (edit(&["athlete_id"], json!("not-a-uuid")), "athlete_id must be a UUID"),
        (edit(&["session_group_id"], json!("1234")), "session_group_id must be a UUID"),
        (edit(&["session_group_id"], Value::Null), "session_group_id is required"),
        (edit(&["camera_configuration"], Value::Null), "camera_configuration is required"),
        (
            edit(&["camera_configuration", "camera_orientation"], Value::Null),
            "camera_configuration.camera_orientation is required",
        ),
        (edit(&["movement_attributes", "activity"], Value::Null), "movement_attributes.activity is required"),
        (edit(&["movement_attributes", "movement"], json!(3)), "movement_attributes.movement is required"),
        (edit(&["file_name"], Value::Null), "file_name is required"),
        (edit(&["file_name"], json!("   ")), "file_name must not be blank"),
        (edit(&["file_name"], json!("a/b.mov")), "must not contain / or \\"),
        (edit(&["file_name"], json!("a\\b.mov")), "must not contain / or \\"),
        (edit(&["file_name"], json!("swing.mp4")), "must use a .mov extension"),
        (edit(&["file_name"], json!(format!("{}.mov", "x".repeat(252)))), "at most 255 characters"),
        (edit(&["capture_time"], json!("yesterday")), "capture_time must be an ISO 8601"),
        (edit(&["capture_time"], json!(future)), "must not be in the future"),
        (json!([1, 2]), "must be a JSON object"),
    ];
    for (i, (b, msg)) in cases.into_iter().enumerate() {
        let (s, v) = reserve_raw(&emu, &b, &token).await;
        assert_eq!(s, 400, "case {i}: {v}");
        assert!(v["message"].as_str().unwrap().contains(msg), "case {i}: {v}");
    }
    // Accepted: 255 characters, upper-case extension, no capture_time, extra keys.
    let mut ok = edit(&["file_name"], json!(format!("{}.MOV", "x".repeat(251))));
    ok.as_object_mut().unwrap().remove("capture_time");
    ok["camera_configuration"]["fps"] = json!(240);
    let (s, v) = reserve_raw(&emu, &ok, &token).await;
    assert_eq!(s, 200, "{v}");
    // The same group for another athlete.
    let other = edit(&["athlete_id"], json!("aaaaaaaa-bbbb-cccc-dddd-ffffffffffff"));
    let (s, v) = reserve_raw(&emu, &other, &token).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("another athlete"));
    // Auth.
    let (s, v) = reserve_raw(&emu, &body(), "wrong").await;
    assert_eq!((s.as_u16(), v["message"].as_str()), (401, Some("Unauthorized")));
}

async fn get(emu: &Emulator, path: &str, token: &str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new().get(format!("{}{path}", emu.api_url())).bearer_auth(token).send().await.unwrap();
    let status = resp.status();
    (status, serde_json::from_str(&resp.text().await.unwrap()).unwrap())
}

#[tokio::test]
async fn captures_are_read_back_as_documented() {
    let emu = Emulator::start(Config {
        processing: upload_emulator::Processing { delay_ms: 300, fail_reason: None },
        ..Config::default()
    })
    .await
    .unwrap();
    let token = emu.token();
    let r = reserve(&emu).await;
    let id = r["session_id"].as_str().unwrap().to_string();
    let (s, v) = get(&emu, &format!("/v1/captures/{id}"), &token).await;
    assert_eq!(s, 200);
    for k in ["session_id", "athlete_id", "activity", "movement", "status", "error", "capture_time", "fps_detected"] {
        assert!(v.get(k).is_some(), "{k} missing: {v}");
    }
    assert_eq!(
        (v["status"].as_str(), v["activity"].as_str(), v["movement"].as_str()),
        (Some("awaiting_upload"), Some("golf"), Some("full_swing"))
    );
    let f = fields(&r);
    let (s, _, _) = post(r["upload_url"].as_str().unwrap(), form(&f, Some(("swing-001.mov", b"abc")), &[])).await;
    assert!(s.is_success(), "{s}");
    let (_, v) = get(&emu, &format!("/v1/captures/{id}"), &token).await;
    assert_eq!(v["status"], "processing", "{v}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, v) = get(&emu, &format!("/v1/captures/{id}"), &token).await;
    assert_eq!(
        (v["status"].as_str(), v["error"].is_null(), v["fps_detected"].is_number()),
        (Some("completed"), true, true),
        "{v}"
    );
    // The list: {captures, total_count, offset, limit}, filtered, limit 1..500.
    reserve(&emu).await;
    let (s, v) = get(&emu, "/v1/captures?limit=1", &token).await;
    assert_eq!(s, 200);
    assert_eq!((v["total_count"].as_u64(), v["limit"].as_u64(), v["offset"].as_u64()), (Some(2), Some(1), Some(0)));
    assert_eq!(v["captures"].as_array().unwrap().len(), 1);
    let (_, v) =
        get(&emu, "/v1/captures?status=completed&source=api&athlete_id=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", &token)
            .await;
    assert_eq!((v["total_count"].as_u64(), v["captures"][0]["session_id"].as_str()), (Some(1), Some(id.as_str())));
    // The documented error shape.
    for (path, status, error) in [
        ("/v1/captures/00000000-0000-0000-0000-000000000000", 404, "NotFound"),
        ("/v1/captures?limit=501", 400, "BadRequest"),
        ("/v1/captures?limit=0", 400, "BadRequest"),
    ] {
        let (s, v) = get(&emu, path, &token).await;
        assert_eq!((s.as_u16(), v["error"].as_str()), (status, Some(error)), "{path}: {v}");
        assert!(v["message"].is_string(), "{v}");
    }
    let (_, v) = get(&emu, "/v1/captures/00000000-0000-0000-0000-000000000000", &token).await;
    assert_eq!(v, json!({"error": "NotFound", "message": "Capture not found."}));
    let (s, v) = get(&emu, "/v1/captures?limit=1", "wrong").await;
    assert_eq!((s.as_u16(), v["error"].as_str()), (401, Some("Unauthorized")));
}

#[tokio::test]
async fn a_capture_whose_processing_failed_shows_its_error() {
    let emu = Emulator::start(Config {
        processing: upload_emulator::Processing { delay_ms: 0, fail_reason: Some("no golfer detected".into()) },
        ..Config::default()
    })
    .await
    .unwrap();
    let r = reserve(&emu).await;
    let (s, _, _) = post(r["upload_url"].as_str().unwrap(), form(&fields(&r), Some(("a.mov", b"abc")), &[])).await;
    assert!(s.is_success());
    let (_, v) = get(&emu, &format!("/v1/captures/{}", r["session_id"].as_str().unwrap()), &emu.token()).await;
    assert_eq!((v["status"].as_str(), v["error"].as_str()), (Some("error"), Some("no golfer detected")), "{v}");
}
