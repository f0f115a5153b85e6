//! TruVideo Upload V3 end to end through the real binary against the emulator.

use serde_json::Value;
use upload_emulator::Processing;

use crate::common::*;

fn tv_args(emu: &Emulator, file: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut a = args(&[
        "--provider",
        "truvideo",
        "--endpoint",
        &emu.api_url(),
        "--json",
        "--poll-interval",
        "100ms",
        "--wait-timeout",
        "60s",
    ]);
    a.insert(0, file.display().to_string());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn result(out: &std::process::Output) -> Value {
    serde_json::from_str(stdout(out).trim())
        .unwrap_or_else(|e| panic!("one JSON object on stdout ({e}): {}", stdout(out)))
}

/// Requests to the API, as `METHOD path status`, in order.
fn api_calls(emu: &Emulator) -> Vec<String> {
    emu.request_log()
        .into_iter()
        .filter(|r| r.server == "api")
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect()
}

fn uploads(emu: &Emulator) -> Vec<Value> {
    upload_emulator::truvideo::uploads_summary(emu.shared()).as_array().unwrap().clone()
}

/// Checks the one stored object against the file and the JSON result.
fn assert_stored(emu: &Emulator, r: &Value, size: u64, sha: &str, parts: u32) {
    let objects = emu.objects();
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0].provider, "truvideo");
    assert_eq!(objects[0].id, r["uploadId"].as_str().unwrap());
    assert_eq!(objects[0].size, size);
    assert_eq!(objects[0].parts, parts);
    assert_eq!(objects[0].sha256, sha, "stored object differs from the file");
    assert_eq!(r["parts"], parts);
    assert_eq!(r["bytes"], size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_part_with_every_media_field() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "walkaround.mp4", 3 * MIB + 17);
    let extra = [
        "--title",
        "Hello: World!",
        "--creator",
        "Jane Doe",
        "--duration-ms",
        "76661",
        "--resolution",
        "high",
        "--tag",
        "brand=Jeep",
        "--tag",
        "fuelType=diesel",
        "--library",
        "--no-report",
        "--metadata",
        "processingPriority=NORMAL",
        "--metadata",
        "compressionEnabled=true",
        "--metadata-json",
        r#"{"retentionDays":365,"processingPriority":"LOW"}"#,
    ];
    let out = run_upload(tv_args(&emu, &path, &extra), token_env("TRUVIDEO_TOKEN", &emu)).await;
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(&out));
    let r = result(&out);
    assert_eq!(r["provider"], "truvideo");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["vendor_status"], "COMPLETED");
    assert_eq!(r["id"], r["uploadId"]);
    assert_eq!(r["sanitizedTitle"], "Hello__World_");
    let schema = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/result.schema.json")).unwrap();
    let schema = jsonschema::validator_for(&serde_json::from_str(&schema).unwrap()).unwrap();
    assert!(schema.is_valid(&r), "{r} does not match the result schema");
    assert!(r["mediaId"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
    assert!(r["fileUrl"].as_str().is_some_and(|u| u.starts_with(&emu.s3_url())), "{r}");
    assert_stored(&emu, &r, 3 * MIB + 17, &sha, 1);

    let up = &uploads(&emu)[0];
    assert_eq!(up["fileType"], "MP4");
    let media = &up["media"];
    assert_eq!(media["fileType"], "MP4");
    assert_eq!(media["title"], "Hello: World!");
    assert_eq!(media["creator"], "Jane Doe");
    assert_eq!(media["duration"], 76661);
    assert_eq!(media["resolution"], "HIGH");
    assert_eq!(media["tags"], serde_json::json!({"brand": "Jeep", "fuelType": "diesel"}));
    assert_eq!(media["insights"], serde_json::json!({"isLibrary": true, "includeInReport": false}));
    // --metadata entries win over --metadata-json; values that are JSON stay JSON.
    assert_eq!(
        up["metadata"],
        serde_json::json!({"retentionDays": 365, "processingPriority": "NORMAL", "compressionEnabled": true})
    );
    let calls = api_calls(&emu);
    let id = r["uploadId"].as_str().unwrap();
    assert_eq!(calls[0], "POST /upload/start 201");
    assert_eq!(calls[1], format!("POST /upload/{id}/complete 202"));
    assert_eq!(calls.last().unwrap(), &format!("GET /upload/{id} 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_parts_of_the_real_5_mib_minimum() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let size = 3 * 5 * MIB + 4321;
    let (path, sha) = make_file(dir.path(), "clip.mov", size);
    let out = run_upload(tv_args(&emu, &path, &["--part-size", "5MiB"]), token_env("TRUVIDEO_TOKEN", &emu)).await;
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(&out));
    let r = result(&out);
    assert_eq!(r["status"], "completed");
    assert_stored(&emu, &r, size, &sha, 4);
    assert_eq!(uploads(&emu)[0]["amountOfParts"], 4);
    // Every part went with the file's MIME type.
    let types = emu.part_content_types();
    assert_eq!(types.len(), 4, "{types:?}");
    assert!(types.values().all(|t| t == "video/quicktime"), "{types:?}");
    // The 10 initial URLs covered every part: no more were asked.
    assert!(!api_calls(&emu).iter().any(|c| c.contains("/parts")), "{:?}", api_calls(&emu));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_urls_are_asked_when_start_hands_out_few() {
    let emu = emulator(Config { truvideo_initial_urls: 1, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let size = 4 * 5 * MIB + 1000;
    let (path, sha) = make_file(dir.path(), "clip.webm", size);
    let out = run_upload(
        tv_args(&emu, &path, &["--part-size", "5MiB", "--concurrency", "3"]),
        token_env("TRUVIDEO_TOKEN", &emu),
    )
    .await;
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(&out));
    let r = result(&out);
    assert_stored(&emu, &r, size, &sha, 5);
    let id = r["uploadId"].as_str().unwrap();
    let asked = api_calls(&emu).iter().filter(|c| **c == format!("GET /upload/{id}/parts 200")).count();
    // Parts 2..=5 come in one batch (the client asks up to 10 at once).
    assert_eq!(asked, 1, "{:?}", api_calls(&emu));
    assert_eq!(uploads(&emu)[0]["issuedParts"], serde_json::json!([1, 2, 3, 4, 5]));
    assert_eq!(emu.part_put_counts().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_url_is_issued_again_by_part_number() {
    // Every URL is refused as expired 2.5 s after signing; with parts trickling at 4 MiB/s one
    // at a time, the later initial URLs are stale when their turn comes.
    let emu = emulator(Config {
        faults: Faults { expire_urls_after_ms: Some(2500), bandwidth_bps: 4 * MIB, ..Faults::default() },
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let size = 3 * 5 * MIB;
    let (path, sha) = make_file(dir.path(), "clip.mp4", size);
    let out = run_upload(
        tv_args(&emu, &path, &["--part-size", "5MiB", "--concurrency", "1"]),
        token_env("TRUVIDEO_TOKEN", &emu),
    )
    .await;
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(&out));
    let r = result(&out);
    assert_stored(&emu, &r, size, &sha, 3);
    let log = emu.request_log();
    assert!(log.iter().any(|x| x.server == "s3" && x.status == 403), "no URL was refused: {log:?}");
    let id = r["uploadId"].as_str().unwrap();
    assert!(api_calls(&emu).contains(&format!("GET /upload/{id}/parts 200")), "{:?}", api_calls(&emu));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_processing_exits_6_with_the_reason() {
    let emu = emulator(Config {
        processing: Processing { delay_ms: 300, fail_reason: Some("Transcoding failed: unsupported codec".into()) },
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "clip.avi", 2 * MIB);
    let out = run_upload(tv_args(&emu, &path, &[]), token_env("TRUVIDEO_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("upload: error: truvideo: processing of") && err.contains("unsupported codec"), "{err}");
    let line = result(&out);
    assert_eq!((line["status"].as_str(), line["exit_code"].as_i64()), (Some("failed"), Some(6)), "{line}");
    assert!(line["error"].as_str().unwrap().contains("unsupported codec"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_gives_up_at_the_wait_timeout_with_exit_7() {
    let emu =
        emulator(Config { processing: Processing { delay_ms: 600_000, fail_reason: None }, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "clip.mkv", MIB);
    let mut a = tv_args(&emu, &path, &[]);
    let i = a.iter().position(|x| x == "--wait-timeout").unwrap();
    a[i + 1] = "1500ms".into();
    let t0 = std::time::Instant::now();
    let out = run_upload(a, token_env("TRUVIDEO_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("timed out") && err.contains("PENDING_COMPLETE") && err.contains("hint:"), "{err}");
    assert!(t0.elapsed() >= std::time::Duration::from_millis(1500));
    let polls = api_calls(&emu).iter().filter(|c| c.starts_with("GET /upload/") && !c.contains("/parts")).count();
    assert!(polls >= 2, "{:?}", api_calls(&emu));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_wait_stops_after_the_202() {
    let emu =
        emulator(Config { processing: Processing { delay_ms: 600_000, fail_reason: None }, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "photo.jpeg", 100_000);
    let out = run_upload(tv_args(&emu, &path, &["--no-wait"]), token_env("TRUVIDEO_TOKEN", &emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let r = result(&out);
    assert_eq!(r["status"], "pending_complete");
    assert_stored(&emu, &r, 100_000, &sha, 1);
    let calls = api_calls(&emu);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[1].ends_with("/complete 202"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_renewed_by_the_token_command() {
    // Call 1 (start) and call 3 (complete) answer 401 whatever the token.
    let emu = emulator(Config {
        faults: Faults { unauthorized_api_call_nth: vec![1, 3], ..Faults::default() },
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "clip.mp4", 2 * MIB);
    let count = dir.path().join("count");
    let cmd = format!("echo run >> {}; echo {}", count.display(), emu.token());
    let out = run_upload(tv_args(&emu, &path, &["--token-command", &cmd]), vec![]).await;
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(&out));
    let r = result(&out);
    assert_stored(&emu, &r, 2 * MIB, &sha, 1);
    let id = r["uploadId"].as_str().unwrap();
    let calls = api_calls(&emu);
    assert_eq!(
        calls[..6],
        [
            "POST /upload/start 401".to_string(),
            "POST /upload/start 201".to_string(),
            format!("POST /upload/{id}/complete 401"),
            // Looked up before completing again.
            format!("GET /upload/{id} 200"),
            format!("POST /upload/{id}/complete 202"),
            format!("GET /upload/{id} 200"),
        ],
        "{calls:?}"
    );
    // Once at start (no token given), once per 401.
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 3);
    assert!(!stderr(&out).contains(&emu.token()), "the token leaked: {}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_without_token_command_exits_3_with_a_hint() {
    let emu = emulator(Config {
        faults: Faults { unauthorized_api_call_nth: vec![1], ..Faults::default() },
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "clip.mp4", MIB);
    let out = run_upload(tv_args(&emu, &path, &[]), token_env("TRUVIDEO_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("authentication failed") && err.contains("hint:") && err.contains("--token-command"), "{err}");
    assert!(err.contains("TRUVIDEO_TOKEN"), "{err}");
    assert_eq!(api_calls(&emu), ["POST /upload/start 401"]);

    // A 401 on complete: not repeated without a new token.
    emu.set_faults(Faults { unauthorized_api_call_nth: vec![2], ..Faults::default() });
    let out = run_upload(tv_args(&emu, &path, &["--no-resume"]), token_env("TRUVIDEO_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let calls = api_calls(&emu);
    assert!(calls.last().unwrap().ends_with("/complete 401"), "{calls:?}");
    assert!(emu.objects().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_sends_only_the_missing_parts() {
    let emu = emulator(Config {
        // The second part PUT is refused for good (400), ending the first run.
        faults: Faults { fail_put_nth: vec![2], fail_status: 400, ..Faults::default() },
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let size = 2 * 5 * MIB + 99;
    let (path, sha) = make_file(dir.path(), "clip.mp4", size);
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().display().to_string();
    let a = tv_args(&emu, &path, &["--part-size", "5MiB", "--concurrency", "1", "--state-dir", &state_dir]);
    let out = run_upload(a.clone(), token_env("TRUVIDEO_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(emu.objects().is_empty());

    let out = run_upload(a, token_env("TRUVIDEO_TOKEN", &emu)).await;
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(&out));
    let r = result(&out);
    assert_stored(&emu, &r, size, &sha, 3);
    let id = r["uploadId"].as_str().unwrap();
    // Part 1, stored by the first run, is not sent again (a part whose answer was lost on a
    // loaded machine may legitimately be sent twice, so only part 1 is checked).
    let counts = emu.part_put_counts();
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert_eq!(counts.iter().find(|((_, p), _)| *p == 1).map(|(_, n)| *n), Some(1), "{counts:?}: {}", stderr(&out));
    let calls = api_calls(&emu);
    assert_eq!(calls.iter().filter(|c| c.starts_with("POST /upload/start")).count(), 1, "{calls:?}");
    assert!(calls.contains(&format!("GET /upload/{id}/parts 200")), "{calls:?}");
    // The journal is gone once processing ended.
    let journals = state.path().join("journals");
    assert!(std::fs::read_dir(&journals).map(|d| d.count()).unwrap_or(0) == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_type_override_and_content() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "recording.bin", 4096);
    let out = run_upload(tv_args(&emu, &path, &["--file-type", "wav"]), token_env("TRUVIDEO_TOKEN", &emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_stored(&emu, &result(&out), 4096, &sha, 1);
    assert_eq!(uploads(&emu)[0]["media"]["fileType"], "WAV");
    assert_eq!(emu.part_content_types().values().collect::<Vec<_>>(), ["audio/wav"]);
}

/// Runs `extra` on `path` and expects exit 2 with `needle` in stderr and no request at all.
async fn refused(emu: &Emulator, path: &std::path::Path, extra: &[&str], needle: &str) {
    let out = run_upload(tv_args(emu, path, extra), token_env("TRUVIDEO_TOKEN", emu)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
    assert!(err.contains("upload: error:") && err.contains(needle), "{extra:?}: {err}");
    assert!(err.contains("  hint: "), "{extra:?}: {err}");
    assert!(emu.request_log().is_empty(), "{extra:?} made requests: {:?}", emu.request_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_refusals_make_no_request() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // 120 × 600 MiB + 1 byte, sparse.
    let huge = dir.path().join("huge.mp4");
    std::fs::File::create(&huge).unwrap().set_len(120 * 600 * MIB + 1).unwrap();
    refused(&emu, &huge, &[], "too large").await;
    let (mp4, _) = make_file(dir.path(), "clip.mp4", 20 * MIB);
    let (zip, _) = make_file(dir.path(), "scan.zip", 1000);
    refused(&emu, &zip, &[], "cannot tell the TruVideo file type").await;
    refused(&emu, &mp4, &["--file-type", "ZIP"], "unknown TruVideo file type").await;
    refused(&emu, &mp4, &["--metadata", "failureReason=none"], "reserved").await;
    refused(&emu, &mp4, &["--metadata-json", r#"{"failureTimestamp":1}"#], "reserved").await;
    refused(&emu, &mp4, &["--metadata-json", "[1,2]"], "not a JSON object").await;
    refused(&emu, &mp4, &["--tag", "brand"], "K=V").await;
    refused(&emu, &mp4, &["--part-size", "4MiB"], "outside the provider's limits").await;
    refused(&emu, &mp4, &["--part-size", "601MiB"], "outside the provider's limits").await;
    refused(&emu, &huge, &["--part-size", "100MiB"], "too large").await;
    let (big, _) = (dir.path().join("big.mov"), ());
    std::fs::File::create(&big).unwrap().set_len(121 * 5 * MIB).unwrap();
    refused(&emu, &big, &["--part-size", "5MiB"], "makes 121 parts").await;
    let (empty, _) = make_file(dir.path(), "empty.mp4", 0);
    refused(&emu, &empty, &[], "is empty").await;
    refused(&emu, &mp4, &["--creator", &"x".repeat(256)], "at most 255").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_plan() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // 10 GiB, sparse: the recommended 64 MiB grows to fit in 120 parts.
    let path = dir.path().join("long.MOV");
    std::fs::File::create(&path).unwrap().set_len(10 << 30).unwrap();
    let out = run_upload(
        tv_args(&emu, &path, &["--dry-run", "--title", "Product %%#@^&"]),
        token_env("TRUVIDEO_TOKEN", &emu),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let r = result(&out);
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["provider"], "truvideo");
    assert_eq!(r["parts"], 120);
    assert_eq!(r["part_size"], 86 * MIB);
    assert_eq!(r["fileType"], "MOV");
    assert_eq!(r["contentType"], "video/quicktime");
    assert_eq!(r["sanitizedTitle"], "Product_______");
    assert!(r["requests"][0].as_str().unwrap().starts_with("POST /upload/start"));
    // Human output, small file: one 16 MiB-recommended part.
    let (small, _) = make_file(dir.path(), "a.png", 1000);
    let mut a = tv_args(&emu, &small, &["--dry-run"]);
    a.retain(|x| x != "--json");
    let out = run_upload(a, token_env("TRUVIDEO_TOKEN", &emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("parts: 1 × 16.00 MiB") && text.contains("fileType: PNG"), "{text}");
    assert!(text.contains("(no request made)"), "{text}");
    assert!(emu.request_log().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_complete_is_looked_up_before_being_sent_again() {
    let emu =
        emulator(Config { faults: Faults { complete_fail_times: 1, ..Faults::default() }, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "clip.mp4", 3 * MIB);
    let out = run_upload(tv_args(&emu, &path, &[]), token_env("TRUVIDEO_TOKEN", &emu)).await;
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(&out));
    let r = result(&out);
    assert_stored(&emu, &r, 3 * MIB, &sha, 1);
    let id = r["uploadId"].as_str().unwrap();
    let calls = api_calls(&emu);
    assert_eq!(
        calls[1..4],
        [
            format!("POST /upload/{id}/complete 500"),
            format!("GET /upload/{id} 200"),
            format!("POST /upload/{id}/complete 202"),
        ],
        "{calls:?}"
    );
}
