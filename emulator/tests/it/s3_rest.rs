//! The S3 REST API with SigV4 header authentication, driven with raw signed requests the way
//! aws-cli and rclone send them.

use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use upload_emulator::{ACCESS_KEY_ID, Config, Emulator, REGION, SECRET_ACCESS_KEY, sigv4};

use crate::common::data;

fn hex_sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

struct S3 {
    http: reqwest::Client,
    base: String,
    host: String,
    secret: String,
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Reply {
    fn tag(&self, name: &str) -> String {
        let open = format!("<{name}>");
        let start =
            self.text.find(&open).map(|i| i + open.len()).unwrap_or_else(|| panic!("no {name} in {}", self.text));
        let end = self.text[start..].find("</").unwrap() + start;
        self.text[start..end].to_string()
    }
}

impl S3 {
    fn new(emu: &Emulator) -> Self {
        let base = emu.s3_url();
        let host = base.trim_start_matches("http://").to_string();
        S3 { http: reqwest::Client::new(), base, host, secret: SECRET_ACCESS_KEY.into() }
    }

    /// Sends `method path?query` signed in its headers; `payload` is the x-amz-content-sha256
    /// line (None: the hex SHA-256 of `body`).
    async fn send(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: Vec<u8>,
        payload: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Reply {
        let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let payload = payload.map(str::to_string).unwrap_or_else(|| hex_sha(&body));
        let mut headers: Vec<(&str, &str)> =
            vec![("host", &self.host), ("x-amz-date", &amz_date), ("x-amz-content-sha256", &payload)];
        headers.extend_from_slice(extra);
        let auth = sigv4::sign_headers(method, path, query, &headers, ACCESS_KEY_ID, &self.secret, REGION);
        self.send_signed(method, path, query, body, &headers, &auth).await
    }

    async fn send_signed(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
        auth: &str,
    ) -> Reply {
        let url =
            if query.is_empty() { format!("{}{path}", self.base) } else { format!("{}{path}?{query}", self.base) };
        let mut req = self.http.request(method.parse().unwrap(), url).header("authorization", auth).body(body);
        for (k, v) in headers {
            if *k != "host" {
                req = req.header(*k, *v);
            }
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        Reply { status, headers, text }
    }

    async fn create(&self, path: &str) -> String {
        let r = self.send("POST", path, "uploads=", vec![], None, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.tag("UploadId")
    }

    async fn part(&self, path: &str, upload_id: &str, n: u32, body: &[u8]) -> Reply {
        let q = format!("partNumber={n}&uploadId={}", sigv4::uri_encode(upload_id, false));
        self.send("PUT", path, &q, body.to_vec(), None, &[]).await
    }

    async fn complete(&self, path: &str, upload_id: &str, etags: &[String]) -> Reply {
        let mut xml = String::from("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
        for (i, e) in etags.iter().enumerate() {
            // Go's encoder writes quotes as &#34;, botocore's as &quot;: both must work.
            let e = if i % 2 == 0 { e.replace('"', "&#34;") } else { e.replace('"', "&quot;") };
            xml.push_str(&format!("<Part><ETag>{e}</ETag><PartNumber>{}</PartNumber></Part>", i + 1));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let q = format!("uploadId={}", sigv4::uri_encode(upload_id, false));
        self.send("POST", path, &q, xml.into_bytes(), None, &[]).await
    }
}

fn small_parts() -> Config {
    Config { min_part_size: 1024, ..Config::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_with_signed_payloads() {
    let emu = Emulator::start(small_parts()).await.unwrap();
    let s3 = S3::new(&emu);
    let file = data(300_000, 1);
    let path = "/uploads/dir/my%20file.bin";
    // The clients' first calls: HeadBucket, HeadObject of a missing key.
    assert_eq!(s3.send("HEAD", "/uploads", "", vec![], None, &[]).await.status, 200);
    assert_eq!(s3.send("HEAD", path, "", vec![], None, &[]).await.status, 404);
    let id = s3.create(path).await;
    let mut etags = vec![];
    for (i, c) in file.chunks(128 * 1024).enumerate() {
        let r = s3.part(path, &id, i as u32 + 1, c).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let etag = r.headers["etag"].to_str().unwrap().to_string();
        assert_eq!(etag, format!("\"{}\"", hex::encode(md5::Md5::digest(c))));
        etags.push(etag);
    }
    let r = s3.complete(path, &id, &etags).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.tag("ETag").ends_with("-3&quot;"), "{}", r.text);
    let obj = emu.object("dir/my file.bin").unwrap();
    assert_eq!((obj.size, obj.sha256.as_str(), obj.parts), (file.len() as u64, hex_sha(&file).as_str(), 3));

    let head = s3.send("HEAD", path, "", vec![], None, &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], file.len().to_string().as_str());
    assert!(head.headers.contains_key("last-modified"));
    let list = s3.send("GET", "/uploads", "list-type=2&prefix=dir%2F", vec![], None, &[]).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.tag("Key"), "dir/my file.bin");
    assert_eq!(list.tag("Size"), file.len().to_string());
    let get = s3.send("GET", path, "", vec![], None, &[]).await;
    assert_eq!(get.status, 200);
    assert_eq!(get.headers["content-length"], file.len().to_string().as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_and_payloads_are_refused() {
    let emu = Emulator::start(small_parts()).await.unwrap();
    let mut s3 = S3::new(&emu);
    let path = "/uploads/k.bin";
    let id = s3.create(path).await;
    let body = data(4096, 2);

    // A payload that is not the one signed: 400, nothing stored.
    let wrong = hex_sha(b"something else");
    let q = format!("partNumber=1&uploadId={id}");
    let r = s3.send("PUT", path, &q, body.clone(), Some(&wrong), &[]).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.tag("Code"), "XAmzContentSHA256Mismatch");
    assert!(emu.shared().store.list_parts(&id).unwrap().is_empty());

    // A signed header changed after signing.
    let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let sha = hex_sha(&body);
    let headers = [("host", s3.host.as_str()), ("x-amz-date", &amz_date), ("x-amz-content-sha256", &sha)];
    let auth = sigv4::sign_headers("PUT", path, &q, &headers, ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION);
    let r = s3.send_signed("PUT", path, &format!("partNumber=2&uploadId={id}"), body.clone(), &headers, &auth).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.tag("Code"), "SignatureDoesNotMatch");

    // A stale request time.
    let old = (chrono::Utc::now() - chrono::Duration::minutes(20)).format("%Y%m%dT%H%M%SZ").to_string();
    let headers = [("host", s3.host.as_str()), ("x-amz-date", &old), ("x-amz-content-sha256", &sha)];
    let auth = sigv4::sign_headers("PUT", path, &q, &headers, ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION);
    let r = s3.send_signed("PUT", path, &q, body.clone(), &headers, &auth).await;
    assert_eq!((r.status.as_u16(), r.tag("Code").as_str()), (403, "RequestTimeTooSkewed"));

    // No x-amz-content-sha256 at all.
    let headers = [("host", s3.host.as_str()), ("x-amz-date", &amz_date)];
    let auth = sigv4::sign_headers("PUT", path, &q, &headers, ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION);
    let r = s3.send_signed("PUT", path, &q, body.clone(), &headers, &auth).await;
    assert_eq!((r.status.as_u16(), r.tag("Code").as_str()), (400, "InvalidRequest"));

    // The wrong secret.
    s3.secret = "not-the-secret".into();
    let r = s3.part(path, &id, 1, &body).await;
    assert_eq!((r.status.as_u16(), r.tag("Code").as_str()), (403, "SignatureDoesNotMatch"));
    s3.secret = SECRET_ACCESS_KEY.into();

    // UNSIGNED-PAYLOAD with a Content-MD5 that does not match: BadDigest.
    let md5 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b"other"))
    };
    let r = s3.send("PUT", path, &q, body.clone(), Some("UNSIGNED-PAYLOAD"), &[("content-md5", &md5)]).await;
    assert_eq!((r.status.as_u16(), r.tag("Code").as_str()), (400, "BadDigest"));
    // ...and with none: stored.
    let r = s3.send("PUT", path, &q, body.clone(), Some("UNSIGNED-PAYLOAD"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Abort: the upload is gone.
    let r = s3.send("DELETE", path, &format!("uploadId={id}"), vec![], None, &[]).await;
    assert_eq!(r.status, 204);
    let r = s3.part(path, &id, 1, &body).await;
    assert_eq!((r.status.as_u16(), r.tag("Code").as_str()), (404, "NoSuchUpload"));
    // Another bucket.
    let r = s3.send("PUT", "/other/k", "", body, None, &[]).await;
    assert_eq!((r.status.as_u16(), r.tag("Code").as_str()), (404, "NoSuchBucket"));
}

/// An aws-chunked body: `size;chunk-signature=…` chunks (signed) or plain sizes with a trailer.
fn chunked(file: &[u8], chunk: usize, signer: Option<&mut sigv4::ChunkSigner>, trailer: &str) -> Vec<u8> {
    let mut out = vec![];
    let mut signer = signer;
    for c in file.chunks(chunk).chain(std::iter::once(&[][..])) {
        out.extend_from_slice(format!("{:x}", c.len()).as_bytes());
        if let Some(s) = signer.as_mut() {
            out.extend_from_slice(format!(";chunk-signature={}", s.next(&Sha256::digest(c))).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(c);
        if !c.is_empty() {
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(trailer.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_chunked_bodies_are_decoded_and_their_signatures_checked() {
    let emu = Emulator::start(small_parts()).await.unwrap();
    let s3 = S3::new(&emu);
    let file = data(200_000, 3);
    let len = file.len().to_string();

    // STREAMING-UNSIGNED-PAYLOAD-TRAILER (what botocore sends over https).
    let body = chunked(&file, 65_536, None, "x-amz-checksum-crc32:AAAAAA==\r\n");
    let extra = [
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", len.as_str()),
        ("x-amz-trailer", "x-amz-checksum-crc32"),
    ];
    let r = s3.send("PUT", "/uploads/t.bin", "", body, Some("STREAMING-UNSIGNED-PAYLOAD-TRAILER"), &extra).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(emu.object("t.bin").unwrap().sha256, hex_sha(&file));

    // STREAMING-AWS4-HMAC-SHA256-PAYLOAD: each chunk signed, chained from the request's signature.
    let payload = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
    let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let headers = [
        ("host", s3.host.as_str()),
        ("x-amz-date", amz_date.as_str()),
        ("x-amz-content-sha256", payload),
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", len.as_str()),
    ];
    let auth = sigv4::sign_headers("PUT", "/uploads/s.bin", "", &headers, ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION);
    let seed = auth.rsplit_once("Signature=").unwrap().1.to_string();
    let mut signer = sigv4::chunk_signer(SECRET_ACCESS_KEY, &amz_date, REGION, &seed);
    let body = chunked(&file, 65_536, Some(&mut signer), "");
    let r = s3.send_signed("PUT", "/uploads/s.bin", "", body.clone(), &headers, &auth).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(emu.object("s.bin").unwrap().sha256, hex_sha(&file));

    // One byte of data changed: the chunk signature no longer holds and nothing is stored.
    let mut tampered = body;
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    let auth2 = sigv4::sign_headers("PUT", "/uploads/u.bin", "", &headers, ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION);
    let seed2 = auth2.rsplit_once("Signature=").unwrap().1.to_string();
    let mut signer2 = sigv4::chunk_signer(SECRET_ACCESS_KEY, &amz_date, REGION, &seed2);
    let mut good = chunked(&file, 65_536, Some(&mut signer2), "");
    good[at] ^= 1;
    let r = s3.send_signed("PUT", "/uploads/u.bin", "", good, &headers, &auth2).await;
    assert_eq!((r.status.as_u16(), r.tag("Code").as_str()), (403, "SignatureDoesNotMatch"));
    assert!(emu.object("u.bin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_presigns_a_put_and_clears_the_store() {
    let emu = Emulator::start(Config::default()).await.unwrap();
    let http = reqwest::Client::new();
    let v: serde_json::Value = http
        .post(format!("{}/_emulator/presign-put?key=bench/curl.bin", emu.api_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = v["url"].as_str().unwrap();
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let file = data(100_000, 4);
    let r = http.put(url).body(file.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(emu.object("bench/curl.bin").unwrap().sha256, hex_sha(&file));
    let r = http.delete(format!("{}/_emulator/uploads", emu.api_url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(emu.objects().is_empty());
    let r = http.post(format!("{}/_emulator/presign-put", emu.api_url())).send().await.unwrap();
    assert_eq!(r.status(), 422);
}
