//! Uplift uploads end to end through the real binary against the emulator.

use std::path::Path;

use upload_emulator::uplift::{UpliftConfig, captures};

use crate::common::*;

const ATHLETE: &str = UPLIFT_ATHLETE;

fn uplift_args(emu: &Emulator, file: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec![file.display().to_string()];
    a.extend(args(&["--provider", "uplift", "--endpoint", &emu.api_url(), "--json"]));
    a.extend(args(UPLIFT_FIELDS));
    // A flag given in `extra` replaces the default one (clap refuses a flag given twice).
    for flag in extra.iter().filter(|f| f.starts_with("--")) {
        if let Some(i) = a.iter().position(|x| x == flag) {
            a.drain(i..i + 2);
        }
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn json_result(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(out));
    serde_json::from_str(stdout(out).trim()).expect("one JSON object on stdout")
}

/// `(reservations, POST uploads)` in the emulator's request log.
fn counts(emu: &Emulator) -> (usize, usize) {
    let log = emu.request_log();
    let reserves = log.iter().filter(|r| r.server == "api" && r.path == "/v1/captures").count();
    let posts = log.iter().filter(|r| r.server == "s3" && r.method == "POST").count();
    (reserves, posts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplift_upload_is_byte_exact() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "swing-001.mov", 3 * MIB + 17);
    let out = run_upload(uplift_args(&emu, &path, &[]), token_env("UPLIFT_TOKEN", &emu)).await;
    let result = json_result(&out);
    assert_eq!(result["provider"], "uplift");
    assert_eq!(result["status"], "uploaded");
    assert_eq!(result["vendor_status"], "UPLOADED");
    assert_eq!(result["reservation_status"], "NEW");
    assert_eq!(result["bytes"], 3 * MIB + 17);
    assert_eq!(result["parts"], 1);
    assert_eq!(result["reservations"], 1);
    let session_id = result["session_id"].as_str().unwrap();
    assert_eq!(result["id"], session_id);
    let group = uuid::Uuid::try_parse(result["session_group_id"].as_str().unwrap()).expect("a UUID");
    assert_eq!(group.get_version_num(), 4, "a generated group id is a random UUID v4");
    assert!(result["upload_expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(result.get("wait").is_none());
    let schema = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/result.schema.json")).unwrap();
    let schema = jsonschema::validator_for(&serde_json::from_str(&schema).unwrap()).unwrap();
    assert!(schema.is_valid(&result), "{result} does not match the schema");

    let objects = emu.objects();
    assert_eq!(objects.len(), 1);
    let o = &objects[0];
    assert_eq!((o.provider.as_str(), o.id.as_str()), ("uplift", session_id));
    assert_eq!(o.key, format!("uplift/{session_id}/swing-001.mov"));
    assert_eq!(o.sha256, sha, "stored object differs from the file");
    assert_eq!(counts(&emu), (1, 1));

    let caps = captures(emu.shared());
    assert_eq!(caps.len(), 1);
    let c = &caps[0];
    assert_eq!(c.athlete_id, ATHLETE);
    assert_eq!(c.session_group_id, group.to_string());
    assert_eq!(c.capture_time, None, "capture_time is omitted by default");
    assert_eq!(c.camera_configuration["camera_setup_selection"], "single.down_the_line");
    assert_eq!(c.camera_configuration["camera_orientation"], "landscape");
    assert_eq!(c.movement_attributes["activity"], "golf");
    assert_eq!(c.movement_attributes["movement"], "full_swing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplift_options_reach_the_reservation() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "clip.bin", 1000);
    let mtime = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
    let group = "11111111-2222-3333-4444-555555555555";
    let mut a = uplift_args(
        &emu,
        &path,
        &[
            "--file-name",
            "Swing 2.MOV",
            "--session-group-id",
            group,
            "--camera-config",
            "fps=240",
            "--movement-attr",
            "handedness=right",
            "--capture-time",
            "mtime",
            "--wait",
        ],
    );
    // The athlete from the environment instead of the flag.
    let i = a.iter().position(|x| x == "--athlete-id").unwrap();
    a.drain(i..i + 2);
    let mut env = token_env("UPLIFT_TOKEN", &emu);
    env.push(("UPLIFT_ATHLETE_ID".into(), ATHLETE.into()));
    let out = run_upload(a, env).await;
    let result = json_result(&out);
    assert_eq!(result["session_group_id"], group);
    assert_eq!(result["file_name"], "Swing 2.MOV");
    // --wait follows the capture (GET /v1/captures/{id}) to `completed`.
    assert_eq!(
        (result["status"].as_str(), result["wait"].as_str()),
        (Some("completed"), Some("completed")),
        "{result}"
    );
    assert!(result["fps_detected"].is_number(), "{result}");
    let c = &captures(emu.shared())[0];
    assert_eq!(c.file_name, "Swing 2.MOV");
    assert_eq!(c.camera_configuration["fps"], "240");
    assert_eq!(c.movement_attributes["handedness"], "right");
    let sent = chrono::DateTime::parse_from_rfc3339(c.capture_time.as_deref().unwrap()).unwrap();
    let want: chrono::DateTime<chrono::Utc> = mtime.into();
    assert!((sent.timestamp_millis() - want.timestamp_millis()).abs() <= 1, "{sent} vs {want}");
    assert_eq!(emu.objects()[0].sha256, sha);
    assert!(emu.objects()[0].key.ends_with("/Swing 2.MOV"));

    // Human output names the session.
    let (path, _) = make_file(dir.path(), "b.mov", 10);
    let mut a = uplift_args(&emu, &path, &["--session-group-id", group]);
    a.retain(|x| x != "--json");
    let out = run_upload(a, token_env("UPLIFT_TOKEN", &emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("uploaded") && text.contains(&format!("session_group_id: {group}")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplift_local_refusals_make_no_request() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (mov, _) = make_file(dir.path(), "swing.mov", 100);
    let (mp4, _) = make_file(dir.path(), "swing.mp4", 100);
    let (empty, _) = make_file(dir.path(), "empty.mov", 0);
    let huge = dir.path().join("huge.mov");
    std::fs::File::create(&huge).unwrap().set_len(5 * 1024 * MIB + 1).unwrap();
    let (future, _) = make_file(dir.path(), "future.mov", 100);
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(86_400);
    std::fs::File::options().write(true).open(&future).unwrap().set_modified(later).unwrap();
    let long = format!("{}.mov", "x".repeat(252));
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();

    let cases: Vec<(&Path, Vec<&str>, &str)> = vec![
        (&mp4, vec![], "does not end in .mov"),
        (&mov, vec!["--file-name", "swing.mp4"], "does not end in .mov"),
        (&mov, vec!["--file-name", "a/b.mov"], "contains / or \\"),
        (&mov, vec!["--file-name", "a\\b.mov"], "contains / or \\"),
        (&mov, vec!["--file-name", &long], "256 characters long"),
        (&mov, vec!["--athlete-id", "not-a-uuid"], "--athlete-id 'not-a-uuid' is not a UUID"),
        (&mov, vec!["--session-group-id", "1234"], "--session-group-id '1234' is not a UUID"),
        (&mov, vec!["--capture-time", &tomorrow], "is in the future"),
        (&mov, vec!["--capture-time", "yesterday"], "not an RFC 3339 time"),
        (&future, vec!["--capture-time", "mtime"], "is in the future"),
        (&mov, vec!["--activity", ""], "Uplift needs --activity"),
        (&mov, vec!["--camera-config", "fps"], "is not KEY=VALUE"),
        (&mov, vec!["--camera-config", "camera_orientation=portrait"], "has its own flag"),
        (&empty, vec![], "is empty"),
        (&huge, vec![], "is 5368709121 bytes (5.00 GiB): Uplift takes one S3 POST upload, at most 5368709120 bytes"),
    ];
    for (i, (file, extra, msg)) in cases.into_iter().enumerate() {
        let out = run_upload(uplift_args(&emu, file, &extra), token_env("UPLIFT_TOKEN", &emu)).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "case {i}: {err}");
        assert!(err.contains("upload: error: ") && err.contains(msg), "case {i}: {err}");
        assert!(err.contains("  hint: "), "case {i}: {err}");
        assert!(emu.request_log().is_empty(), "case {i} made a request");
    }

    // Required flags, all named at once.
    let out = run_upload(
        args(&[mov.to_str().unwrap(), "--provider", "uplift", "--endpoint", &emu.api_url()]),
        token_env("UPLIFT_TOKEN", &emu),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("Uplift needs --athlete-id, --activity, --movement, --camera-setup, --orientation"),
        "{}",
        stderr(&out)
    );
    // No token: exit 3 before any request.
    let out = run_upload(uplift_args(&emu, &mov, &[]), vec![]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("UPLIFT_TOKEN"), "{}", stderr(&out));
    // A dry run validates and prints the plan.
    let out = run_upload(uplift_args(&emu, &mov, &["--dry-run"]), token_env("UPLIFT_TOKEN", &emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!((plan["dry_run"].as_bool(), plan["file_name"].as_str()), (Some(true), Some("swing.mov")));
    assert!(emu.request_log().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplift_expired_reservation_is_reserved_again() {
    // Expired before the upload started: no POST is made with it.
    let emu = emulator(Config {
        uplift: UpliftConfig { expired_reservations: 1, ..Default::default() },
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "swing.mov", 2 * MIB);
    let out = run_upload(uplift_args(&emu, &path, &[]), token_env("UPLIFT_TOKEN", &emu)).await;
    let result = json_result(&out);
    assert_eq!(result["reservations"], 2);
    assert_eq!(counts(&emu), (2, 1));
    let caps = captures(emu.shared());
    assert_eq!(caps.len(), 2);
    assert_eq!(caps[0].session_group_id, caps[1].session_group_id, "the same session group");
    assert_eq!(result["session_id"].as_str(), Some(caps[1].session_id.as_str()));
    assert_eq!(emu.objects()[0].sha256, sha);

    // Valid by the clock, but S3 says the policy expired: 403, then a new reservation.
    let emu =
        emulator(Config { uplift: UpliftConfig { expired_policies: 1, ..Default::default() }, ..Default::default() })
            .await;
    let out = run_upload(uplift_args(&emu, &path, &[]), token_env("UPLIFT_TOKEN", &emu)).await;
    let result = json_result(&out);
    assert_eq!(result["reservations"], 2);
    assert_eq!(counts(&emu), (2, 2));
    let log = emu.request_log();
    let posts: Vec<u16> = log.iter().filter(|r| r.method == "POST" && r.server == "s3").map(|r| r.status).collect();
    assert_eq!(posts, [403, 204]);
    assert_eq!(emu.objects()[0].sha256, sha);
    assert!(stderr(&out).contains("expired"), "the re-reservation is reported: {}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplift_forms_that_keep_expiring_give_up() {
    let emu =
        emulator(Config { uplift: UpliftConfig { expired_policies: 100, ..Default::default() }, ..Default::default() })
            .await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "swing.mov", 1000);
    let out = run_upload(uplift_args(&emu, &path, &[]), token_env("UPLIFT_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("the upload form expired 3 times in a row"), "{}", stderr(&out));
    assert_eq!(counts(&emu), (3, 3));
    assert!(emu.objects().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplift_refused_form_is_a_clear_error() {
    let emu =
        emulator(Config { uplift: UpliftConfig { bad_signature: true, ..Default::default() }, ..Default::default() })
            .await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "swing.mov", 1000);
    let out = run_upload(uplift_args(&emu, &path, &[]), token_env("UPLIFT_TOKEN", &emu)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("upload: error: uplift: POST upload was rejected (HTTP 403): SignatureDoesNotMatch: The request signature we calculated does not match"),
        "{err}"
    );
    // Not an expiry: no new reservation, no retry of the same form.
    assert_eq!(counts(&emu), (1, 1));
    assert!(emu.objects().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplift_server_error_on_the_post_is_retried() {
    let emu = emulator(Config {
        faults: Faults { fail_put_nth: vec![1], fail_status: 503, ..Default::default() },
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "swing.mov", MIB);
    let out = run_upload(uplift_args(&emu, &path, &[]), token_env("UPLIFT_TOKEN", &emu)).await;
    let result = json_result(&out);
    assert_eq!(result["reservations"], 1);
    assert_eq!(counts(&emu), (1, 2));
    assert_eq!(emu.objects()[0].sha256, sha);
}

/// Peak RSS (VmHWM) of a running process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A 1 GiB sparse file goes up in one streamed POST while the client's memory stays flat.
/// Slow in a debug build (the emulator hashes and writes 1 GiB): run it with
/// `cargo test --release --test it uplift_large -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "uploads 1 GiB (about a minute in a debug build); see README, Running the tests"]
async fn uplift_large_file_streams_with_flat_memory() {
    const SIZE: u64 = 1024 * MIB;
    let store = tempfile::tempdir().unwrap();
    let emu = emulator(Config { state_dir: Some(store.path().to_path_buf()), ..Default::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.mov");
    std::fs::File::create(&path).unwrap().set_len(SIZE).unwrap();
    let a = uplift_args(&emu, &path, &["-q"]);
    let token = emu.token();
    let (out, peak_kib, secs) = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("upload"))
            .args(&a)
            .env("UPLIFT_TOKEN", token)
            .env("XDG_STATE_HOME", std::env::temp_dir().join("upload-test-state"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut peak = 0;
        while child.try_wait().unwrap().is_none() {
            if let Some(kib) = vm_hwm_kib(pid) {
                peak = peak.max(kib);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        (child.wait_with_output().unwrap(), peak, started.elapsed().as_secs_f64())
    })
    .await
    .unwrap();
    let result = json_result(&out);
    assert_eq!(result["bytes"], SIZE);
    let mb_s = SIZE as f64 / 1e6 / secs;
    eprintln!("uplift 1 GiB POST: {secs:.1} s, {mb_s:.0} MB/s, client peak RSS {} MiB", peak_kib / 1024);
    assert!(peak_kib > 0, "VmHWM was never read");
    assert!(peak_kib < 100 * 1024, "client peak RSS {} MiB", peak_kib / 1024);
    let o = &emu.objects()[0];
    assert_eq!(o.size, SIZE);
    let zeros = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let block = vec![0u8; MIB as usize];
        for _ in 0..1024 {
            h.update(&block);
        }
        hex::encode(h.finalize())
    };
    assert_eq!(o.sha256, zeros);
}
