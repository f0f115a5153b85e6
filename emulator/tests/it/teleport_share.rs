//! The Teleport emulator beyond the upload: processing timeline, share ids, metadata, model
//! files with Range requests, list paging and `time_zone`.

use std::time::Duration;

use crate::common::Api;
use reqwest::StatusCode;
use serde_json::{Value, json};
use upload_emulator::{Config, Emulator, Faults, Processing, teleport};

impl Api {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Creates, uploads (one small part) and completes a capture; returns its eid.
    async fn uploaded_capture(&self, name: &str) -> String {
        let (_, v) =
            self.call(reqwest::Method::POST, "/api/v1/captures", Some(json!({"name": name, "bytesize": 100}))).await;
        let eid = v["eid"].as_str().unwrap().to_string();
        let (_, u) = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/captures/{eid}/create-upload-url/1"),
                Some(json!({"eid": eid, "bytesize": 100})),
            )
            .await;
        let resp = self.http.put(u["upload_url"].as_str().unwrap()).body(vec![7u8; 100]).send().await.unwrap();
        let etag = resp.headers()["etag"].to_str().unwrap().to_string();
        let (s, v) = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/captures/{eid}/uploaded"),
                Some(json!({"eid": eid, "parts": [{"number": 1, "etag": etag}]})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        eid
    }

    async fn capture(&self, eid: &str) -> Value {
        let (_, list) = self.get("/api/v1/captures?limit=1000").await;
        list.as_array().unwrap().iter().find(|c| c["eid"] == eid).cloned().unwrap()
    }
}

#[tokio::test]
async fn uploading_before_completion_and_uploaded_null_until_then() {
    let emu = Emulator::start(Config::default()).await.unwrap();
    let c = Api::new(&emu);
    let (_, v) =
        c.call(reqwest::Method::POST, "/api/v1/captures", Some(json!({"name": "a.zip", "bytesize": 100}))).await;
    let eid = v["eid"].as_str().unwrap().to_string();
    let v = c.capture(&eid).await;
    assert_eq!((v["state"].as_str(), v["uploaded"].is_null()), (Some("CREATED"), true), "{v}");
    let (s, _) = c
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/captures/{eid}/create-upload-url/1"),
            Some(json!({"eid": eid, "bytesize": 100})),
        )
        .await;
    assert_eq!(s, 200);
    let v = c.capture(&eid).await;
    assert_eq!((v["state"].as_str(), v["uploaded"].is_null()), (Some("UPLOADING"), true), "{v}");
    let done = c.uploaded_capture("b.zip").await;
    let v = c.capture(&done).await;
    assert!(v["uploaded"].is_string() && v["state"] != "UPLOADING", "{v}");
}

#[tokio::test]
async fn timeline_and_share_fields() {
    let emu =
        Emulator::start(Config { processing: Processing { delay_ms: 800, fail_reason: None }, ..Config::default() })
            .await
            .unwrap();
    let c = Api::new(&emu);
    let eid = c.uploaded_capture("a.zip").await;
    let t0 = std::time::Instant::now();
    let v = c.capture(&eid).await;
    assert!(v["state"] == "UPLOADED" || v["state"] == "PROCESSING", "{v}");
    assert!(v["sid"].is_null() && v["viewer_url"].is_null(), "no share before READY: {v}");
    let mut seen_processing = v["state"] == "PROCESSING";
    loop {
        let v = c.capture(&eid).await;
        if v["state"] == "PROCESSING" {
            seen_processing = true;
            assert_eq!(v["state_description"], "Training the 3D model");
        }
        if v["state"] == "READY" {
            let sid = v["sid"].as_str().unwrap();
            assert_eq!(sid.len(), 16);
            assert_eq!(v["viewer_url"], format!("{}/viewer/{sid}", emu.api_url()));
            assert_eq!(v["share_url"], format!("{}/share/{sid}", emu.api_url()));
            assert!(v["preview_urls"]["sd"].is_string());
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "never READY: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen_processing || t0.elapsed() > Duration::from_millis(800));

    // time_zone=true adds the offset; garbage is a 422.
    let (_, list) = c.get("/api/v1/captures?time_zone=true").await;
    assert!(list[0]["created"].as_str().unwrap().ends_with("+00:00"), "{list}");
    let (s, v) = c.get("/api/v1/captures?time_zone=maybe").await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["loc"], json!(["query", "time_zone"]));
}

#[tokio::test]
async fn paging_is_limit_offset_with_default_25() {
    let emu = Emulator::start(Config::default()).await.unwrap();
    let c = Api::new(&emu);
    for i in 0..30 {
        c.call(reqwest::Method::POST, "/api/v1/captures", Some(json!({"name": format!("c{i}"), "bytesize": 1}))).await;
    }
    let (_, first) = c.get("/api/v1/captures").await;
    assert_eq!(first.as_array().unwrap().len(), 25);
    assert_eq!(first[0]["name"], "c29");
    let (_, rest) = c.get("/api/v1/captures?offset=25").await;
    assert_eq!(rest.as_array().unwrap().len(), 5);
    assert_eq!(rest[4]["name"], "c0");
    let (_, none) = c.get("/api/v1/captures?offset=30").await;
    assert_eq!(none, json!([]));
    assert_eq!(teleport::list_queries(emu.shared()), [(25, 0), (25, 25), (25, 30)]);
}

#[tokio::test]
async fn metadata_and_model_files() {
    let emu = Emulator::start(Config { teleport_model_size: 100_000, ..Config::default() }).await.unwrap();
    let c = Api::new(&emu);
    let eid = c.uploaded_capture("a.zip").await;
    let sid = c.capture(&eid).await["sid"].as_str().unwrap().to_string();

    let (s, v) = c.get(&format!("/share/{sid}/metadata?profiles=ply&quality=hd")).await;
    assert_eq!(s, 200, "{v}");
    for f in ["eid", "name", "segmented_capture_eid", "profile_name", "lod", "model_urls", "cameras", "models"] {
        assert!(v.get(f).is_some(), "{f}: {v}");
    }
    assert_eq!(v["eid"], eid.as_str());
    assert_eq!(v["models"][0]["size"], 100_000);
    let url = v["models"][0]["url"].as_str().unwrap().to_string();
    assert_eq!(url, format!("{}/cdn/{sid}/ply-hd.ply", emu.api_url()));
    assert_eq!(v["cameras"][0]["matrix"].as_array().unwrap().len(), 16);

    // Both profiles at once, repeated or comma-separated.
    let (_, v) = c.get(&format!("/share/{sid}/metadata?profiles=ply,sogs-sh0&quality=sd&use_cdn=false")).await;
    let names: Vec<&str> = v["models"].as_array().unwrap().iter().map(|m| m["url"].as_str().unwrap()).collect();
    assert!(names[0].ends_with(&format!("/share/{sid}/files/ply-sd.ply")), "{names:?}");
    assert!(names[1].ends_with("sogs-sh0-sd.zip"), "{names:?}");

    // Validation: quality is required, profiles and quality are enums.
    let (s, v) = c.get(&format!("/share/{sid}/metadata?profiles=obj")).await;
    assert_eq!(s, 422);
    let locs: Vec<&Value> = v["detail"].as_array().unwrap().iter().map(|d| &d["loc"]).collect();
    assert_eq!(locs, [&json!(["query", "profiles"]), &json!(["query", "quality"])]);
    let (s, _) = c.get("/share/unknownsid/metadata?quality=hd").await;
    assert_eq!(s, 404);

    // The file, whole and in ranges, without a token.
    let expected = teleport::model_file(emu.shared(), &sid, "ply-hd.ply").unwrap();
    assert_eq!(expected.len(), 100_000);
    let plain = reqwest::Client::new();
    let r = plain.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.bytes().await.unwrap().as_ref(), expected.as_slice());
    let r = plain.get(&url).header("Range", "bytes=99000-").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 99000-99999/100000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &expected[99_000..]);
    let r = plain.get(&url).header("Range", "bytes=10-19").send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &expected[10..20]);
    let r = plain.get(&url).header("Range", "bytes=100000-").send().await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */100000");
    let r = plain.get(format!("{}/cdn/{sid}/nope.ply", emu.api_url())).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // The cut fault: the body stops short, the next request is whole.
    emu.set_faults(Faults { model_cut_times: 1, model_cut_after: 5000, ..Faults::default() });
    let r = plain.get(&url).send().await.unwrap();
    assert!(r.bytes().await.is_err(), "a cut body is an error, not a short success");
    let r = plain.get(&url).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 100_000);
}

#[tokio::test]
async fn failed_processing_has_no_share() {
    let emu = Emulator::start(Config {
        processing: Processing { delay_ms: 0, fail_reason: Some("CONVERSION_FAILED".into()) },
        ..Config::default()
    })
    .await
    .unwrap();
    let c = Api::new(&emu);
    let eid = c.uploaded_capture("a.zip").await;
    let v = c.capture(&eid).await;
    assert_eq!(v["state"], "ERROR");
    assert_eq!(v["error_reason_slug"], "conversion-failed");
    assert!(v["sid"].is_null());
    let sid = teleport::captures_summary(emu.shared())[0]["share_id"].as_str().unwrap().to_string();
    let (s, v) = c.get(&format!("/share/{sid}/metadata?quality=hd")).await;
    assert_eq!(s, 404, "{v}");
}
