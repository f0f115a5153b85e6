//! Black-box tests of the emulator's Apertur API over HTTP.

use std::time::Duration;

use crate::common::Api;
use reqwest::Method;
use serde_json::{Value, json};
use upload_emulator::apertur::{AperturConfig, DEFAULT_DESTINATIONS, DeliveryShape, signature};
use upload_emulator::{Config, Emulator};

impl Api {
    async fn start(config: Config) -> (Emulator, Api) {
        let emu = Emulator::start(config).await.unwrap();
        let api = Api::new(&emu);
        (emu, api)
    }

    async fn session(&self, body: Value) -> String {
        let (s, v) = self.call(Method::POST, "/api/v1/upload-sessions", Some(body)).await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["id"], v["uuid"]);
        v["id"].as_str().unwrap().to_string()
    }

    /// Posts one image as multipart; returns the status, the body and the Retry-After header.
    async fn image(
        &self,
        session: &str,
        name: &str,
        mime: &str,
        data: &[u8],
        password: Option<&str>,
    ) -> (u16, Value, Option<String>) {
        let boundary = "XyZ";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {mime}\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let mut req = self
            .http
            .post(format!("{}/api/v1/upload/{session}/images", self.base))
            .bearer_auth(&self.token)
            .header("content-type", format!("multipart/form-data; boundary={boundary}"))
            .body(body);
        if let Some(p) = password {
            req = req.header("x-session-password", p);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ra = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        (status, resp.json().await.unwrap(), ra)
    }
}

#[tokio::test]
async fn session_validation() {
    let (emu, api) = Api::start(Config::default()).await;
    for (body, expect) in [
        (json!({"expires_in_hours": 2, "expires_at": "2099-01-01T00:00:00Z"}), "mutually exclusive"),
        (json!({"expires_in_hours": 0}), "1 to 168"),
        (json!({"expires_in_hours": 169}), "1 to 168"),
        (json!({"expires_at": "2001-01-01T00:00:00Z"}), "future"),
        (json!({"expires_at": "soon"}), "ISO 8601"),
        (json!({"allowed_mime_types": ["image/gif"]}), "image/gif"),
        (json!({"allowed_mime_types": []}), "empty"),
        (json!({"password": "abc"}), "4 to 128"),
        (json!({"max_images": 0}), "positive"),
        (json!({"destination_ids": ["nope"]}), "Unknown destination"),
    ] {
        let (s, v) = api.call(Method::POST, "/api/v1/upload-sessions", Some(body.clone())).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["code"], "VALIDATION_ERROR");
        assert!(v["message"].as_str().unwrap().contains(expect), "{body}: {v}");
    }
    let (s, v) = api.call(Method::GET, "/api/v1/upload/sess_NOPE/session", None).await;
    assert_eq!((s.as_u16(), v["code"].as_str()), (404, Some("NOT_FOUND")));
    let resp = reqwest::Client::new().post(format!("{}/api/v1/upload-sessions", emu.api_url())).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    // Defaults: the key's destinations, 24 h.
    let id = api.session(json!({})).await;
    let (_, v) = api.call(Method::GET, &format!("/api/v1/upload/{id}/session"), None).await;
    assert_eq!(v["destinations"].as_array().unwrap().len(), DEFAULT_DESTINATIONS.len());
    assert_eq!(v["effectiveMaxImages"], 100);
}

#[tokio::test]
async fn uploads_checked_and_stored() {
    let (emu, api) = Api::start(Config {
        apertur: AperturConfig { throttle_uploads_nth: vec![2], retry_after_s: 3, ..AperturConfig::default() },
        ..Config::default()
    })
    .await;
    let id = api.session(json!({"max_images": 2, "allowed_mime_types": ["image/png"], "password": "pass1234"})).await;
    let (s, v, _) = api.image(&id, "a.png", "image/png", b"png-bytes", None).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("PASSWORD_REQUIRED")));
    let (s, v, _) = api.image(&id, "a.png", "image/png", b"png-bytes", Some("wrong")).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("INVALID_PASSWORD")));
    let (s, v, _) = api.image(&id, "a.png", "image/png", b"png-bytes", Some("pass1234")).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["size_bytes"], 9);
    let (s, _, ra) = api.image(&id, "b.png", "image/png", b"more", Some("pass1234")).await;
    assert_eq!((s, ra.as_deref()), (429, Some("3")));
    let (s, v, _) = api.image(&id, "c.jpg", "image/jpeg", b"jpeg", Some("pass1234")).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("MIME_TYPE_NOT_ALLOWED")));
    let (s, _, _) = api.image(&id, "d.png", "image/png", b"d", Some("pass1234")).await;
    assert_eq!(s, 201);
    let (s, v, _) = api.image(&id, "e.png", "image/png", b"e", Some("pass1234")).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("MAX_IMAGES_REACHED")));
    let (s, _, _) = api.image("sess_NOPE", "e.png", "image/png", b"e", None).await;
    assert_eq!(s, 404);
    let objects = emu.objects();
    assert_eq!(objects.len(), 2);
    assert!(objects.iter().all(|o| o.provider == "apertur" && o.key.starts_with(&format!("apertur/{id}/"))));
    let bytes = emu.object_bytes(&objects.iter().find(|o| o.key.ends_with("/a.png")).unwrap().key).unwrap();
    assert_eq!(bytes, b"png-bytes");

    // A chunked body (no Content-Length) is refused.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = emu.api_url().trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "POST /api/v1/upload/{id}/images HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        api.token
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 411"), "{answer}");
}

#[tokio::test]
async fn deliveries_long_poll_and_queue() {
    let failing = DEFAULT_DESTINATIONS[1].0;
    let (_emu, api) = Api::start(Config {
        apertur: AperturConfig {
            failing_destinations: vec![failing.into()],
            delivery_step_ms: 50,
            delivery_retries: 1,
            delivery_status_shape: DeliveryShape::Seed,
            ..AperturConfig::default()
        },
        ..Config::default()
    })
    .await;
    let id = api.session(json!({"long_polling": true})).await;
    let (s, img, _) = api.image(&id, "a.webp", "image/webp", b"webp!", None).await;
    assert_eq!(s, 201);
    let image = img["id"].as_str().unwrap();
    let path = format!("/api/v1/upload-sessions/{id}/delivery-status");
    let (_, v) = api.call(Method::GET, &path, None).await;
    assert_eq!(v["session_id"], id.as_str());
    assert_eq!(v["images"][0]["image_id"], image);
    assert_eq!(v["images"][0]["deliveries"][0]["status"], "pending");
    // Long poll: held until the first delivery step.
    let (_, sdk) = api.call(Method::GET, &format!("{path}?pollFrom=2000-01-01T00:00:00Z"), None).await;
    let from = sdk["lastChanged"].as_str().unwrap().to_string();
    // Answered once something changed after `from` (the hold is 5 minutes otherwise).
    let (_, sdk) = api.call(Method::GET, &format!("{path}?pollFrom={from}"), None).await;
    assert_ne!(sdk["lastChanged"].as_str().unwrap(), from);
    assert_eq!(sdk["files"][0]["record_id"], image);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (_, v) = api.call(Method::GET, &path, None).await;
    let deliveries = &v["images"][0]["deliveries"];
    assert_eq!(deliveries[0]["status"], "delivered");
    assert_eq!(deliveries[1]["status"], "failed");
    assert_eq!(deliveries[1]["attempts"], 2);

    let (_, q) = api.call(Method::GET, &format!("/api/v1/upload-sessions/{id}/poll"), None).await;
    assert_eq!(q["images"][0]["id"], image);
    assert_eq!(q["images"][0]["mime_type"], "image/webp");
    let bytes = reqwest::Client::new()
        .get(format!("{}/api/v1/upload-sessions/{id}/images/{image}", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"webp!");
    let (s, _) = api.call(Method::POST, &format!("/api/v1/upload-sessions/{id}/images/{image}/ack"), None).await;
    assert_eq!(s, 200);
    let (_, q) = api.call(Method::GET, &format!("/api/v1/upload-sessions/{id}/poll"), None).await;
    assert_eq!(q["images"], json!([]));
    // A session without long polling has no queue.
    let other = api.session(json!({})).await;
    let (s, _) = api.call(Method::GET, &format!("/api/v1/upload-sessions/{other}/poll"), None).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn destinations_crud_and_signatures() {
    let secret = "s3cr3t-signing";
    let (emu, api) = Api::start(Config {
        apertur: AperturConfig { signing_secret: Some(secret.into()), ..AperturConfig::default() },
        ..Config::default()
    })
    .await;
    // Unsigned: refused.
    let (s, v) = api.call(Method::GET, "/api/v1/projects/p1/destinations", None).await;
    assert_eq!((s.as_u16(), v["code"].as_str()), (401, Some("INVALID_SIGNATURE")));
    let signed = |method: Method, path: &str, body: Option<Value>, key: &str| {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let ts = chrono::Utc::now().timestamp().to_string();
        let sig = signature(key, &ts, method.as_str(), path, body.as_bytes());
        let mut req = api
            .http
            .request(method, format!("{}{}", api.base, path))
            .bearer_auth(&api.token)
            .header("X-Aptr-Timestamp", ts)
            .header("X-Aptr-Signature", sig);
        if !body.is_empty() {
            req = req.header("content-type", "application/json").body(body);
        }
        async move {
            let resp = req.send().await.unwrap();
            let s = resp.status().as_u16();
            let t = resp.text().await.unwrap();
            (s, if t.is_empty() { Value::Null } else { serde_json::from_str::<Value>(&t).unwrap() })
        }
    };
    let base = "/api/v1/projects/p1/destinations";
    let (s, _) = signed(Method::GET, base, None, "wrong").await;
    assert_eq!(s, 401);
    let (s, d) =
        signed(Method::POST, base, Some(json!({"type": "s3", "name": "B", "config": {"secretKey": "k"}})), secret)
            .await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["config"]["secretKey"], "********");
    let (s, _) = signed(Method::POST, base, Some(json!({"type": "dropbox", "name": "D"})), secret).await;
    assert_eq!(s, 400, "OAuth types come from the dashboard");
    let id = d["id"].as_str().unwrap();
    let (s, u) = signed(Method::PATCH, &format!("{base}/{id}"), Some(json!({"isActive": false})), secret).await;
    assert_eq!((s, &u["isActive"]), (200, &json!(false)));
    let (s, t) = signed(Method::POST, &format!("{base}/{id}/test"), None, secret).await;
    assert_eq!((s, &t["success"]), (200, &json!(true)));
    let (s, l) = signed(Method::GET, &format!("{base}?x=1"), None, secret).await;
    assert_eq!((s, l.as_array().unwrap().len()), (200, 1));
    let (s, _) = signed(Method::DELETE, &format!("{base}/{id}"), None, secret).await;
    assert_eq!(s, 204);
    let (s, _) = signed(Method::DELETE, &format!("{base}/{id}"), None, secret).await;
    assert_eq!(s, 404);
    assert_eq!(emu.shared().apertur.signed_requests(), 7);
}

#[tokio::test]
async fn lists_password_check_expiry_and_the_sdks_words() {
    let cfg = AperturConfig {
        delivery_step_ms: 50,
        failing_destinations: vec![DEFAULT_DESTINATIONS[1].0.to_string()],
        delivery_retries: 1,
        expire_after_images: Some(2),
        ..AperturConfig::default()
    };
    let (_emu, api) = Api::start(Config { apertur: cfg, ..Config::default() }).await;
    let a = api.session(json!({"tags": ["t"], "password": "s3cret"})).await;
    let b = api.session(json!({})).await;
    for (i, name) in ["x.jpg", "y.jpg"].iter().enumerate() {
        let (s, v, _) = api.image(&a, name, "image/jpeg", &vec![i as u8; 100 + i], Some("s3cret")).await;
        assert_eq!(s, 201, "{v}");
    }
    // A session holding `expire_after_images` images has expired.
    let (s, v, _) = api.image(&a, "z.jpg", "image/jpeg", b"zz", Some("s3cret")).await;
    assert_eq!((s, v["code"].as_str()), (410, Some("SESSION_EXPIRED")), "{v}");
    // Sessions: paged {data, total, page, pageSize, totalPages} and recent, newest first.
    let (s, v) = api.call(Method::GET, "/api/v1/sessions?page=1&pageSize=1", None).await;
    assert_eq!(s, 200);
    assert_eq!((v["total"].as_u64(), v["pageSize"].as_u64(), v["totalPages"].as_u64()), (Some(2), Some(1), Some(2)));
    assert_eq!(v["data"][0]["id"], b.as_str(), "newest first: {v}");
    let (_, v) = api.call(Method::GET, "/api/v1/sessions/recent?limit=5", None).await;
    let row = v.as_array().unwrap().iter().find(|r| r["id"] == a.as_str()).unwrap().clone();
    assert_eq!((row["imagesCount"].as_u64(), row["tags"].clone()), (Some(2), json!(["t"])), "{row}");
    for k in [
        "createdAt",
        "expiresAt",
        "status",
        "projectId",
        "projectName",
        "destinationsCount",
        "longPollingEnabled",
        "env",
    ] {
        assert!(row.get(k).is_some(), "{k} missing: {row}");
    }
    // Uploads: rows with sessionId, filename, sizeBytes, createdAt, status.
    let (_, v) = api.call(Method::GET, "/api/v1/uploads?page=1&pageSize=100", None).await;
    assert_eq!(v["total"], 2);
    let row = &v["data"][0];
    assert_eq!(
        (row["sessionId"].as_str(), row["filename"].as_str(), row["sizeBytes"].as_u64()),
        (Some(a.as_str()), Some("y.jpg"), Some(101)),
        "{v}"
    );
    let (_, v) = api.call(Method::GET, "/api/v1/uploads/recent?limit=1", None).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    for bad in ["/api/v1/uploads?pageSize=101", "/api/v1/uploads?page=0", "/api/v1/sessions/recent?limit=0"] {
        let (s, v) = api.call(Method::GET, bad, None).await;
        assert_eq!((s.as_u16(), v["code"].as_str()), (400, Some("VALIDATION_ERROR")), "{bad}: {v}");
    }
    // Password check.
    for (given, valid) in [("s3cret", true), ("nope", false)] {
        let (s, v) = api
            .call(Method::POST, &format!("/api/v1/upload/{a}/verify-password"), Some(json!({"password": given})))
            .await;
        assert_eq!((s.as_u16(), v), (200, json!({"valid": valid})));
    }
    // The SDK's delivery words: `retrying` between failed attempts, `sent`, `failed`.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let (_, v) = api
            .call(
                Method::GET,
                &format!("/api/v1/upload-sessions/{a}/delivery-status?pollFrom=2000-01-01T00:00:00Z"),
                None,
            )
            .await;
        for f in v["files"].as_array().unwrap() {
            for d in f["destinations"].as_array().unwrap() {
                seen.insert(d["status"].as_str().unwrap().to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen.contains("sent") && seen.contains("failed") && !seen.contains("delivered"), "{seen:?}");
    let (_, v) = api.call(Method::GET, &format!("/api/v1/upload-sessions/{a}/delivery-status"), None).await;
    assert!(
        v["images"][0]["deliveries"].as_array().unwrap().iter().any(|d| d["status"] == "delivered"),
        "the seed's words by default: {v}"
    );
}
