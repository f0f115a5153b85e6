//! Apertur end to end through the real binary against the emulator: one session per run,
//! images byte-exact, local refusals, passwords, delivery following, long-polling download,
//! request signatures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};
use upload_emulator::apertur::{AperturConfig, DEFAULT_DESTINATIONS, DeliveryShape};

use crate::common::*;

const S3_DEST: &str = DEFAULT_DESTINATIONS[0].0;
const WEBHOOK_DEST: &str = DEFAULT_DESTINATIONS[1].0;

fn base_args(emu: &Emulator, files: &[PathBuf], extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    a.extend(args(&["--provider", "apertur", "--endpoint", &emu.api_url(), "--json"]));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn cmd_args(emu: &Emulator, items: &[&str]) -> Vec<String> {
    let mut a = args(&["apertur"]);
    a.extend(items.iter().map(|s| s.to_string()));
    a.extend(args(&["--endpoint", &emu.api_url()]));
    a
}

fn json_lines(out: &std::process::Output) -> Vec<Value> {
    stdout(out).lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

fn sessions(emu: &Emulator) -> Vec<Value> {
    emu.shared().apertur.sessions_summary().as_array().unwrap().clone()
}

fn count(emu: &Emulator, method: &str, pred: impl Fn(&str) -> bool) -> usize {
    emu.request_log().iter().filter(|r| r.method == method && pred(&r.path)).count()
}

fn is_image_post(p: &str) -> bool {
    p.starts_with("/api/v1/upload/") && p.ends_with("/images")
}

/// Uploads `files` into a new session and returns the session id (asserting success).
async fn upload_into_new_session(emu: &Emulator, files: &[PathBuf], extra: &[&str]) -> String {
    let out = run_upload(base_args(emu, files, extra), token_env("APERTUR_TOKEN", emu)).await;
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), files.len());
    lines[0]["session_id"].as_str().unwrap().to_string()
}

fn sha_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_images_in_one_session_byte_exact() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // Sizes around the 1 MiB read chunk, and every accepted extension.
    let specs =
        [("a.jpg", 1), ("b.jpeg", 70_001), ("c.png", MIB - 1), ("d.webp", MIB + 3), ("e.HEIC", 2 * MIB + 12_345)];
    let files: Vec<(PathBuf, String)> = specs.iter().map(|(n, s)| make_file(dir.path(), n, *s)).collect();
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    let out = run_upload(
        base_args(
            &emu,
            &paths,
            &["--tag", "order:456", "--tag", "user:123", "--destination", S3_DEST, "--concurrency", "3"],
        ),
        token_env("APERTUR_TOKEN", &emu),
    )
    .await;
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 5, "{}", stdout(&out));
    let session_ids: BTreeSet<&str> = lines.iter().map(|l| l["session_id"].as_str().unwrap()).collect();
    assert_eq!(session_ids.len(), 1, "one session for the run");
    let session = *session_ids.iter().next().unwrap();

    let objects = emu.objects();
    assert_eq!(objects.len(), 5);
    let mime = |n: &str| match n.rsplit('.').next().unwrap().to_ascii_lowercase().as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        _ => "image/heic",
    };
    let summary = sessions(&emu);
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0]["id"], session);
    assert_eq!(summary[0]["tags"], serde_json::json!(["order:456", "user:123"]));
    assert_eq!(summary[0]["destination_ids"], serde_json::json!([S3_DEST]));
    for ((path, sha), (name, size)) in files.iter().zip(specs.iter()) {
        let line = lines.iter().find(|l| l["file"] == path.display().to_string()).expect("a line per file");
        let image_id = line["image_id"].as_str().unwrap();
        assert_eq!(line["id"], image_id);
        assert_eq!(line["provider"], "apertur");
        assert_eq!(line["status"], "uploaded");
        assert_eq!(line["bytes"], *size);
        assert_eq!(line["mime_type"], mime(name));
        let obj = objects.iter().find(|o| o.id == image_id).expect("stored");
        assert_eq!(obj.provider, "apertur");
        assert_eq!(obj.key, format!("apertur/{session}/{image_id}/{name}"));
        assert_eq!(obj.size, *size);
        assert_eq!(&obj.sha256, sha, "{} differs", path.display());
        let img = summary[0]["images"].as_array().unwrap().iter().find(|i| i["id"] == image_id).unwrap();
        assert_eq!(img["mime_type"], mime(name), "the multipart part carries the MIME type");
    }
    assert_eq!(count(&emu, "POST", |p| p == "/api/v1/upload-sessions"), 1);
    assert_eq!(count(&emu, "POST", is_image_post), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_over_max_images_are_refused_locally() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = (0..3).map(|i| make_file(dir.path(), &format!("p{i}.png"), 1000 + i).0).collect();
    let out = run_upload(
        base_args(&emu, &paths, &["--max-images", "2", "--concurrency", "1"]),
        token_env("APERTUR_TOKEN", &emu),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let lines = json_lines(&out);
    let failed: Vec<&Value> = lines.iter().filter(|l| l["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{}", stdout(&out));
    assert_eq!(failed[0]["file"], paths[2].display().to_string());
    assert_eq!(failed[0]["exit_code"], 2);
    assert!(stderr(&out).contains("over the session's limit of 2 images"), "{}", stderr(&out));
    assert!(stderr(&out).contains("hint:"));
    assert_eq!(count(&emu, "POST", is_image_post), 2, "the third file was never sent");
    assert_eq!(emu.objects().len(), 2);
    let session = lines.iter().find(|l| l["status"] == "uploaded").unwrap()["session_id"].as_str().unwrap().to_string();

    // The session is full: another file into it is refused after reading its limits, unsent.
    let before = count(&emu, "POST", is_image_post);
    let extra = make_file(dir.path(), "late.png", 10).0;
    let out = run_upload(base_args(&emu, &[extra], &["--session", &session]), token_env("APERTUR_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("limit"), "{}", stderr(&out));
    assert_eq!(count(&emu, "POST", is_image_post), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_and_bad_options_make_no_request() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let gif = make_file(dir.path(), "anim.gif", 100).0;
    let jpg = make_file(dir.path(), "photo.jpg", 100).0;
    let empty = make_file(dir.path(), "empty.png", 0).0;
    let cases: Vec<(Vec<PathBuf>, Vec<&str>, &str)> = vec![
        (vec![gif.clone()], vec![], "JPEG, PNG, WebP and HEIC"),
        (vec![jpg.clone()], vec!["--allowed-mime-type", "image/png"], "accepts only image/png"),
        (vec![gif.clone(), jpg.clone()], vec!["--allowed-mime-type", "image/webp"], "not image/jpeg"),
        (vec![empty], vec![], "is empty"),
        (vec![jpg.clone()], vec!["--allowed-mime-type", "image/gif"], "image/gif"),
        (vec![jpg.clone()], vec!["--expires-in-hours", "0"], "out of range"),
        (vec![jpg.clone()], vec!["--expires-in-hours", "169"], "out of range"),
        (vec![jpg.clone()], vec!["--expires-at", "tomorrow"], "ISO 8601"),
        (vec![jpg.clone()], vec!["--expires-at", "2001-01-01T00:00:00Z"], "in the past"),
        (vec![jpg.clone()], vec!["--password", "abc"], "4 to 128"),
        (vec![jpg.clone()], vec!["--max-images", "0"], "at least 1"),
        (vec![jpg.clone()], vec!["--max-image-dimension", "0"], "at least 1"),
        (vec![jpg.clone()], vec!["--session", "sess_X", "--destination", S3_DEST], "cannot be used with --session"),
        (vec![jpg.clone()], vec!["--session", "../etc"], "not a valid id"),
    ];
    for (files, extra, expect) in cases {
        let out = run_upload(base_args(&emu, &files, &extra), token_env("APERTUR_TOKEN", &emu)).await;
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("upload: error:") && err.contains(expect), "{extra:?}: {err}");
        assert!(err.contains("hint:"), "{extra:?}: {err}");
    }
    // Both expiries: refused by the argument parser.
    let out = run_upload(
        base_args(&emu, &[jpg], &["--expires-in-hours", "2", "--expires-at", "2099-01-01T00:00:00Z"]),
        token_env("APERTUR_TOKEN", &emu),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(emu.request_log().is_empty(), "{:?}", emu.request_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_protected_session() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (first, first_sha) = make_file(dir.path(), "first.jpg", 5000);
    let session = upload_into_new_session(&emu, &[first], &["--password", "s3cret-pass"]).await;
    assert_eq!(sessions(&emu)[0]["password_protected"], true);
    assert_eq!(emu.objects()[0].sha256, first_sha);

    let (second, second_sha) = make_file(dir.path(), "second.jpg", 7000);
    // No password: the server refuses (403), nothing stored.
    let out = run_upload(
        base_args(&emu, std::slice::from_ref(&second), &["--session", &session]),
        token_env("APERTUR_TOKEN", &emu),
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("requires a password"), "{}", stderr(&out));
    // A wrong one: refused too.
    let out = run_upload(
        base_args(&emu, std::slice::from_ref(&second), &["--session", &session, "--password", "wrong-pass"]),
        token_env("APERTUR_TOKEN", &emu),
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(!stderr(&out).contains("wrong-pass") && !stdout(&out).contains("wrong-pass"));
    assert_eq!(emu.objects().len(), 1);
    // The right one, from the environment.
    let mut env = token_env("APERTUR_TOKEN", &emu);
    env.push(("APERTUR_SESSION_PASSWORD".into(), "s3cret-pass".into()));
    let out = run_upload(base_args(&emu, &[second], &["--session", &session]), env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("s3cret-pass") && !stdout(&out).contains("s3cret-pass"));
    let line = &json_lines(&out)[0];
    assert_eq!(line["session_id"], session.as_str());
    let obj = emu.objects().into_iter().find(|o| o.id == line["image_id"].as_str().unwrap()).unwrap();
    assert_eq!(obj.sha256, second_sha);
}

fn delivery_config(shape: DeliveryShape, failing: &[&str]) -> Config {
    Config {
        apertur: AperturConfig {
            failing_destinations: failing.iter().map(|s| s.to_string()).collect(),
            delivery_step_ms: 30,
            delivery_retries: 2,
            delivery_status_shape: shape,
            ..AperturConfig::default()
        },
        ..Config::default()
    }
}

async fn wait_run(emu: &Emulator, extra: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = (0..3).map(|i| make_file(dir.path(), &format!("w{i}.jpg"), 2000 + i).0).collect();
    let mut a = vec!["--wait", "--poll-interval", "50ms"];
    a.extend_from_slice(extra);
    run_upload(base_args(emu, &paths, &a), token_env("APERTUR_TOKEN", emu)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_with_one_failing_destination_exits_6() {
    for shape in [DeliveryShape::Seed, DeliveryShape::Sdk] {
        let emu = emulator(delivery_config(shape, &[WEBHOOK_DEST])).await;
        let out = wait_run(&emu, &[]).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(6), "{shape:?}: {err}");
        assert_eq!(json_lines(&out).len(), 3, "the uploads themselves succeeded");
        let s3_line = err.lines().find(|l| l.contains(S3_DEST)).expect("a line for the S3 destination");
        assert!(s3_line.contains("3 delivered, 0 failed"), "{s3_line}");
        let hook_line = err.lines().find(|l| l.contains(WEBHOOK_DEST)).expect("a line for the webhook");
        assert!(hook_line.contains("0 delivered, 3 failed") && hook_line.contains("503"), "{hook_line}");
        assert!(err.contains("3 of 6 deliveries failed"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_until_delivered_with_long_poll_and_with_polling() {
    for shape in [DeliveryShape::Seed, DeliveryShape::Sdk] {
        let emu = emulator(delivery_config(shape, &[])).await;
        let out = wait_run(&emu, &[]).await;
        assert!(out.status.success(), "{shape:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().filter(|l| l.contains("3 delivered, 0 failed, 0 pending")).count(), 2, "{err}");
        assert!(count(&emu, "GET", |p| p.ends_with("/delivery-status")) >= 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_timeout_exits_7() {
    let mut config = delivery_config(DeliveryShape::Sdk, &[]);
    config.apertur.delivery_step_ms = 600_000;
    config.apertur.long_poll_max_ms = 300;
    let emu = emulator(config).await;
    let out = wait_run(&emu, &["--wait-timeout", "1s"]).await;
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
}

/// Files in `dir` (not hidden) → SHA-256.
fn dir_shas(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), sha_of(&p)))
        .collect()
}

async fn long_polling_session(emu: &Emulator, dir: &Path, n: u64) -> (String, BTreeMap<String, String>) {
    let files: Vec<(PathBuf, String)> =
        (0..n).map(|i| make_file(dir, &format!("img{i}.jpg"), 3000 + i * 1000)).collect();
    let paths: Vec<PathBuf> = files.iter().map(|f| f.0.clone()).collect();
    let session = upload_into_new_session(emu, &paths, &["--long-polling"]).await;
    let expected =
        files.iter().map(|(p, sha)| (p.file_name().unwrap().to_string_lossy().into_owned(), sha.clone())).collect();
    (session, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_downloads_and_acks_every_image_once() {
    let emu = emulator(Config::default()).await;
    let src = tempfile::tempdir().unwrap();
    let (session, expected) = long_polling_session(&emu, src.path(), 4).await;
    let inbox = tempfile::tempdir().unwrap();
    let out_dir = inbox.path().join("inbox");
    let out_dir_s = out_dir.display().to_string();
    let out = run_upload(
        cmd_args(&emu, &["poll", &session, "-o", &out_dir_s, "--once", "--json"]),
        token_env("APERTUR_TOKEN", &emu),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 4);
    assert!(lines.iter().all(|l| l["status"] == "saved" && l["session_id"] == session.as_str()));
    assert_eq!(dir_shas(&out_dir), expected, "every image on disk, byte-exact, nothing else");
    let acks = emu.shared().apertur.ack_counts();
    assert_eq!(acks.len(), 4);
    assert!(acks.values().all(|n| *n == 1), "{acks:?}");

    // The queue is empty now: a second poll saves and acks nothing.
    let out = run_upload(
        cmd_args(&emu, &["poll", &session, "-o", &out_dir_s, "--once", "--json"]),
        token_env("APERTUR_TOKEN", &emu),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(json_lines(&out).is_empty());
    assert_eq!(emu.shared().apertur.ack_counts(), acks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_poll_loses_nothing() {
    // The second ack fails (after its image was saved) and the poll gives up: the image stays
    // in the queue and the next poll acks it without losing or duplicating anything.
    let emu = emulator(Config {
        apertur: AperturConfig { fail_ack_nth: vec![2], ..AperturConfig::default() },
        ..Config::default()
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    let (session, expected) = long_polling_session(&emu, src.path(), 4).await;
    let inbox = tempfile::tempdir().unwrap();
    let out_dir = inbox.path().join("inbox");
    let out_dir_s = out_dir.display().to_string();
    let poll = |extra: &'static [&'static str]| {
        let mut a = vec!["poll", session.as_str(), "-o", out_dir_s.as_str(), "--once", "--json"];
        a.extend_from_slice(extra);
        cmd_args(&emu, &a)
    };
    let out = run_upload(poll(&["--retries", "0"]), token_env("APERTUR_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(json_lines(&out).len(), 1, "one image fully taken before the failure");
    assert_eq!(emu.shared().apertur.ack_counts().len(), 1);
    assert_eq!(dir_shas(&out_dir).len(), 2, "the unacknowledged image is already safe on disk");

    let out = run_upload(poll(&[]), token_env("APERTUR_TOKEN", &emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&out).len(), 3);
    assert_eq!(dir_shas(&out_dir), expected, "all images, byte-exact, no duplicates, no temporary files");
    let acks = emu.shared().apertur.ack_counts();
    assert_eq!(acks.len(), 4);
    assert!(acks.values().all(|n| *n == 1), "{acks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_are_verified() {
    let emu = emulator(Config {
        apertur: AperturConfig {
            signing_secret: Some("sign-me-0123".into()),
            delivery_step_ms: 20,
            ..AperturConfig::default()
        },
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "s.png", 4321);

    // Without the secret, or with a wrong one: refused, nothing created.
    let out = run_upload(base_args(&emu, std::slice::from_ref(&path), &[]), token_env("APERTUR_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("signing secret"), "{}", stderr(&out));
    let out = run_upload(
        base_args(&emu, std::slice::from_ref(&path), &["--signing-secret", "wrong-secret"]),
        token_env("APERTUR_TOKEN", &emu),
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(!stderr(&out).contains("wrong-secret"));
    assert!(sessions(&emu).is_empty());
    assert_eq!(emu.shared().apertur.signed_requests(), 0);

    // With it (from the environment): session, upload (unsigned multipart), delivery status.
    let mut env = token_env("APERTUR_TOKEN", &emu);
    env.push(("APERTUR_SIGNING_SECRET".into(), "sign-me-0123".into()));
    let out = run_upload(base_args(&emu, &[path], &["--wait", "--poll-interval", "50ms"]), env.clone()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("sign-me-0123") && !stdout(&out).contains("sign-me-0123"));
    assert_eq!(emu.objects()[0].sha256, sha);
    let signed = emu.shared().apertur.signed_requests();
    assert!(signed >= 2, "create session and delivery status were signed and verified ({signed})");

    // Subcommands sign too (a GET with a path parameter).
    let out =
        run_upload(cmd_args(&emu, &["destinations", "list", "--project", "emulator-project", "--json"]), env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(emu.shared().apertur.signed_requests(), signed + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_upload_honours_retry_after_and_401_renews_the_token() {
    let emu = emulator(Config {
        apertur: AperturConfig { throttle_uploads_nth: vec![1], retry_after_s: 1, ..AperturConfig::default() },
        faults: Faults { unauthorized_api_call_nth: vec![1], ..Faults::default() },
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "t.webp", 9999);
    let started = std::time::Instant::now();
    let out =
        run_upload(base_args(&emu, &[path], &["--token-command", &format!("echo {}", emu.token())]), vec![]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(started.elapsed() >= std::time::Duration::from_secs(1), "waited for Retry-After");
    let statuses: Vec<u16> = emu.request_log().iter().filter(|r| is_image_post(&r.path)).map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 201]);
    assert_eq!(emu.request_log()[0].status, 401, "the first call was refused, the token renewed");
    assert_eq!(emu.objects()[0].sha256, sha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_session_and_destination_commands() {
    let emu = emulator(delivery_config(DeliveryShape::Seed, &[WEBHOOK_DEST])).await;
    let dir = tempfile::tempdir().unwrap();
    let img = make_file(dir.path(), "x.jpg", 1234).0;
    let session = upload_into_new_session(&emu, &[img], &[]).await;

    let out = run_upload(cmd_args(&emu, &["status", &session]), token_env("APERTUR_TOKEN", &emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Production S3") && stdout(&out).contains("My Webhook"), "{}", stdout(&out));

    let out = run_upload(cmd_args(&emu, &["status", "sess_UNKNOWN"]), token_env("APERTUR_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("Session not found"));

    let out = run_upload(
        cmd_args(
            &emu,
            &["session", "update", &session, "--max-images", "7", "--allowed-mime-type", "image/png", "--json"],
        ),
        token_env("APERTUR_TOKEN", &emu),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out =
        run_upload(cmd_args(&emu, &["session", "get", &session, "--json"]), token_env("APERTUR_TOKEN", &emu)).await;
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["effectiveMaxImages"], 7);
    assert_eq!(v["effectiveAllowedMimeTypes"], serde_json::json!(["image/png"]));
    let out = run_upload(
        cmd_args(&emu, &["session", "update", &session, "--password", "ab"]),
        token_env("APERTUR_TOKEN", &emu),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    let p = ["--project", "proj-1", "--json"];
    let mut create = vec!["destinations", "create", "--type", "webhook", "--name", "Hook"];
    create.extend_from_slice(&["--config-entry", "url=https://example.com/h", "--config-entry", "secret=hook-secret"]);
    create.extend_from_slice(&p);
    let out = run_upload(cmd_args(&emu, &create), token_env("APERTUR_TOKEN", &emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("hook-secret"), "the server masks secrets");
    let created: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let mut update = vec!["destinations", "update", id.as_str(), "--name", "Renamed", "--active", "false"];
    update.extend_from_slice(&p);
    let out = run_upload(cmd_args(&emu, &update), token_env("APERTUR_TOKEN", &emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let mut list = vec!["destinations", "list"];
    list.extend_from_slice(&p);
    let out = run_upload(cmd_args(&emu, &list), token_env("APERTUR_TOKEN", &emu)).await;
    let listed: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(listed[0]["name"], "Renamed");
    assert_eq!(listed[0]["isActive"], false);
    let mut test = vec!["destinations", "test", id.as_str()];
    test.extend_from_slice(&p);
    assert!(run_upload(cmd_args(&emu, &test), token_env("APERTUR_TOKEN", &emu)).await.status.success());
    let mut delete = vec!["destinations", "delete", id.as_str()];
    delete.extend_from_slice(&p);
    assert!(run_upload(cmd_args(&emu, &delete), token_env("APERTUR_TOKEN", &emu)).await.status.success());
    let out = run_upload(cmd_args(&emu, &delete), token_env("APERTUR_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    // A failing destination's test exits 6.
    let out = run_upload(
        cmd_args(&emu, &["destinations", "test", WEBHOOK_DEST, "--project", "emulator-project"]),
        token_env("APERTUR_TOKEN", &emu),
    )
    .await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let out = run_upload(
        cmd_args(&emu, &["destinations", "create", "--project", "p", "--type", "s3", "--name", "x", "--config", "[1]"]),
        token_env("APERTUR_TOKEN", &emu),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// The server's own limit (the plan's, unknown to the client): once it answers
/// `MAX_IMAGES_REACHED`, the rest of the run's images are not sent, and each says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_stops_once_the_server_says_the_session_is_full() {
    let emu =
        emulator(Config { apertur: AperturConfig { plan_max_images: 3, ..Default::default() }, ..Config::default() })
            .await;
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = (0..12).map(|i| make_file(dir.path(), &format!("p{i:02}.png"), 2000 + i).0).collect();
    let out =
        run_upload(base_args(&emu, &paths, &["--concurrency", "2", "--files", "2"]), token_env("APERTUR_TOKEN", &emu))
            .await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let lines = json_lines(&out);
    let uploaded = lines.iter().filter(|l| l["status"] == "uploaded").count();
    let failed: Vec<&Value> = lines.iter().filter(|l| l["status"] == "failed").collect();
    assert_eq!(uploaded, 3, "{}", stdout(&out));
    assert_eq!(failed.len(), 9, "{}", stdout(&out));
    assert_eq!(emu.objects().len(), 3);
    // At most the images in flight when the first refusal came back reached the server.
    let posts = count(&emu, "POST", is_image_post);
    assert!(
        (4..=5).contains(&posts),
        "{posts} image POSTs: the run kept posting into a full session: {}",
        stdout(&out)
    );
    let unsent =
        failed.iter().filter(|l| l["error"].as_str().unwrap().contains("not sent: the session is full")).count();
    assert!(unsent >= 7, "{}", stdout(&out));
    assert!(stderr(&out).contains("another session"), "the hint says what to do: {}", stderr(&out));
}
