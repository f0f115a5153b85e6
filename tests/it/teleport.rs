//! Teleport uploads end to end through the real binary against the emulator.

use crate::common::*;

fn teleport_args(emu: &Emulator, file: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut a = args(&["--provider", "teleport", "--endpoint", &emu.api_url(), "--json"]);
    a.insert(0, file.display().to_string());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Uploads a file of `size` bytes with the emulator's chunk size `chunk` and checks the
/// stored object byte for byte.
async fn upload_and_compare(size: u64, chunk: u64, expect_parts: u32) {
    let emu = emulator(Config { teleport_chunk_size: chunk, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "scan.zip", size);
    let out = run_upload(teleport_args(&emu, &path, &[]), token_env("TELEPORT_TOKEN", &emu)).await;
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(&out));
    let result: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON object on stdout");
    assert_eq!(result["provider"], "teleport");
    assert_eq!(result["bytes"], size);
    assert_eq!(result["parts"], expect_parts);
    let eid = result["eid"].as_str().unwrap();
    assert_eq!(result["id"], eid);
    assert_eq!(result["status"], "uploaded");
    assert_eq!(result["vendor_status"], "UPLOADED");
    // Times carry their zone (the emulator, like Teleport, sends them without one: UTC).
    for key in ["created", "uploaded"] {
        let t = result[key].as_str().unwrap_or_else(|| panic!("{key} in {result}"));
        assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok() && t.ends_with('Z'), "{key}: {t}");
    }
    let objects = emu.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].size, size);
    assert_eq!(objects[0].parts, expect_parts);
    assert_eq!(objects[0].sha256, sha, "stored object differs from the file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte() {
    upload_and_compare(1, 5 * MIB, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_two_parts() {
    upload_and_compare(10 * MIB, 5 * MIB, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_parts_with_odd_tail() {
    upload_and_compare(10 * MIB + 12_345, 5 * MIB, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusual_server_chunk_size_is_obeyed() {
    // 5 MiB + 17 bytes: a client that assumed whole MiB parts would send misaligned parts.
    upload_and_compare(3 * (5 * MIB + 17) - 5, 5 * MIB + 17, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_with_name_and_human_output() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "walk.mp4", 3 * MIB);
    let mut a = teleport_args(&emu, &path, &["--name", "Walkthrough"]);
    a.retain(|x| x != "--json");
    let out = run_upload(a, token_env("TELEPORT_TOKEN", &emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("state: UPLOADED") && text.contains("name: Walkthrough"), "{text}");
    assert_eq!(emu.objects()[0].sha256, sha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_file_is_refused_without_a_request() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "empty.zip", 0);
    let out = run_upload(teleport_args(&emu, &path, &[]), token_env("TELEPORT_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is empty"), "{}", stderr(&out));
    assert!(emu.request_log().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_names_the_token() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "scan.zip", 1000);
    let out =
        run_upload(teleport_args(&emu, &path, &[]), vec![("TELEPORT_TOKEN".into(), "wrong-token-value".into())]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("authentication failed") && err.contains("TELEPORT_TOKEN"), "{err}");
    assert!(!err.contains("wrong-token-value"), "the token leaked: {err}");
    assert!(emu.objects().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_says_which_variable() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "scan.zip", 1000);
    let out = run_upload(teleport_args(&emu, &path, &[]), vec![]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("hint: set TELEPORT_TOKEN"), "{}", stderr(&out));
    assert!(emu.request_log().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_extension_is_refused_without_a_request() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "scan.tar", 1000);
    let out = run_upload(teleport_args(&emu, &path, &[]), token_env("TELEPORT_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("cannot tell the Teleport format") && err.contains("--format"), "{err}");
    assert!(emu.request_log().is_empty());
    // --format overrides the extension.
    let out =
        run_upload(teleport_args(&emu, &path, &["--format", "bulk-images"]), token_env("TELEPORT_TOKEN", &emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out =
        run_upload(teleport_args(&emu, &path, &["--format", "pointcloud"]), token_env("TELEPORT_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_file_is_a_clear_error() {
    let emu = emulator(Config::default()).await;
    let out = run_upload(
        teleport_args(&emu, std::path::Path::new("/nonexistent/scan.zip"), &[]),
        token_env("TELEPORT_TOKEN", &emu),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("upload: error: cannot read /nonexistent/scan.zip"), "{}", stderr(&out));
    assert!(emu.request_log().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_a_remote_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "scan.zip", 10);
    let out = run_upload(
        args(&[path.to_str().unwrap(), "--provider", "teleport", "--endpoint", "http://example.com"]),
        vec![("TELEPORT_TOKEN".into(), "t".into())],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("plain http"), "{}", stderr(&out));
}

/// `UPLOAD_SENDFILE` chose a zero-copy path for plain-http parts, since removed (one HTTP
/// path for every vendor): the variable is still accepted, whatever its value, and changes
/// nothing. Each part is stored once, byte-exact, and no signature reaches the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_sendfile_is_accepted_and_ignored() {
    let s = TeleportRun::start(Config::default(), 12 * MIB + 7).await;
    for setting in ["1", "0", "nonsense"] {
        let mut env = s.env();
        env.push(("UPLOAD_SENDFILE".into(), setting.into()));
        let out = run_upload(s.args(&["--force", "--no-resume", "-vv"]), env).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let err = stderr(&out);
        let stored: Vec<&str> = err.lines().filter(|l| l.contains("part stored")).collect();
        assert_eq!(stored.len(), 3, "{err}");
        assert_eq!(s.emu.objects().last().unwrap().sha256, s.sha);
        assert!(!err.contains("X-Amz-Signature="), "presigned URL signature leaked");
    }
    assert_eq!(s.emu.objects().len(), 3);
}
