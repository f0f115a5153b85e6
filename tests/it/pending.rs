//! `upload pending`: uploads killed mid-way are listed, resumed from their journal alone, or
//! discarded (with the Teleport capture deleted).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

fn env(emu: &Emulator) -> Vec<(String, String)> {
    vec![("TELEPORT_TOKEN".into(), emu.token()), ("TRUVIDEO_TOKEN".into(), emu.token())]
}

fn teleport_upload(emu: &Emulator, file: &Path, state: &Path) -> Vec<String> {
    let mut a = vec![file.display().to_string()];
    a.extend(args(&["--provider", "teleport", "--endpoint", &emu.api_url(), "--state-dir"]));
    a.push(state.display().to_string());
    a.extend(args(&["--concurrency", "1", "--limit-rate", "8MiB", "--name", "Site scan", "--json"]));
    a
}

fn truvideo_upload(emu: &Emulator, file: &Path, state: &Path) -> Vec<String> {
    let mut a = vec![file.display().to_string()];
    a.extend(args(&["--provider", "truvideo", "--endpoint", &emu.api_url(), "--state-dir"]));
    a.push(state.display().to_string());
    a.extend(args(&[
        "--concurrency",
        "1",
        "--limit-rate",
        "5MiB",
        "--part-size",
        "5MiB",
        "--title",
        "Walkaround",
        "--tag",
        "brand=Jeep",
        "--poll-interval",
        "100ms",
        "--json",
    ]));
    a
}

/// Waits until the journal of `provider` in `state` has `parts` finished parts, then kills the
/// upload with SIGKILL.
pub(crate) async fn kill_after(state: &Path, provider: &str, parts: usize, child: &mut std::process::Child) {
    let start = Instant::now();
    loop {
        let done = upload::engine::journal::list(state)
            .into_iter()
            .filter_map(|(_, j)| j.ok())
            .find(|j| j.provider == provider)
            .map_or(0, |j| j.parts.len());
        if done >= parts {
            child.kill().unwrap();
            child.wait().unwrap();
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the {provider} upload ended ({status}) before {parts} parts were journaled");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pending(state: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = args(&["pending", "--state-dir"]);
    a.push(state.display().to_string());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(out).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_uploads_of_two_providers_are_listed_then_resumed_from_the_journal_alone() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (scan, scan_sha) = make_file(dir.path(), "scan.zip", 40 * MIB);
    let (walk, walk_sha) = make_file(dir.path(), "walk.mp4", 25 * MIB);
    let mut tp = spawn_upload(&teleport_upload(&emu, &scan, &state), &env(&emu));
    let mut tv = spawn_upload(&truvideo_upload(&emu, &walk, &state), &env(&emu));
    kill_after(&state, "teleport", 2, &mut tp).await;
    kill_after(&state, "truvideo", 2, &mut tv).await;

    // Listed with the journal's part counts, which are what the emulator stored.
    let out = run_upload(pending(&state, &["--json"]), env(&emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let mut listed = lines(&out);
    listed.sort_by_key(|l| l["provider"].as_str().unwrap().to_string());
    assert_eq!(listed.len(), 2, "{listed:?}");
    let stored_before: u64 = emu.part_put_counts().values().sum();
    let mut journaled = 0;
    for (l, provider, file, total) in [(&listed[0], "teleport", &scan, 5), (&listed[1], "truvideo", &walk, 5)] {
        assert_eq!(l["provider"], provider);
        assert_eq!(l["file"], std::fs::canonicalize(file).unwrap().display().to_string());
        assert_eq!(l["parts_total"], total, "{l}");
        let done = l["parts_done"].as_u64().unwrap();
        assert!((2..5).contains(&done), "{l}");
        assert_eq!(l["bytes_done"].as_u64().unwrap(), done * if provider == "teleport" { 8 * MIB } else { 5 * MIB });
        assert_eq!(l["file_matches"], true, "{l}");
        assert_eq!(l["state"], "started");
        assert!(l["upload_id"].as_str().is_some_and(|s| !s.is_empty()), "{l}");
        assert!(l["last_activity"].is_string() && l["started_at"].is_string(), "{l}");
        journaled += done;
    }
    assert_eq!(stored_before, journaled, "the emulator stored other parts than the journals hold");
    assert!(!stdout(&out).contains(&emu.token()), "a token in the output");

    // Resumed with nothing but the tokens in the environment.
    let out = run_upload(pending(&state, &["--resume", "--json"]), env(&emu)).await;
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(&out));
    let results = lines(&out);
    assert_eq!(results.len(), 2, "{}", stdout(&out));
    let teleport = results.iter().find(|r| r["provider"] == "teleport").unwrap();
    assert_eq!(teleport["name"], "Site scan", "the journal kept --name");
    assert_eq!(teleport["id"], listed[0]["upload_id"]);
    let truvideo = results.iter().find(|r| r["provider"] == "truvideo").unwrap();
    assert_eq!(truvideo["status"], "completed", "{truvideo}");
    assert_eq!(truvideo["id"], listed[1]["upload_id"]);
    let mut shas: Vec<String> = emu.objects().into_iter().map(|o| o.sha256).collect();
    shas.sort();
    let mut expect = vec![scan_sha, walk_sha];
    expect.sort();
    assert_eq!(shas, expect, "stored objects differ from the files");
    let counts = emu.part_put_counts();
    assert_eq!(counts.len(), 10, "{counts:?}");
    assert!(counts.values().all(|&n| n == 1), "a part was sent twice: {counts:?}");

    // Nothing pending any more.
    let out = run_upload(pending(&state, &["--json"]), env(&emu)).await;
    assert!(out.status.success() && stdout(&out).trim().is_empty(), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discarding_a_teleport_upload_deletes_its_capture() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (scan, _) = make_file(dir.path(), "scan.zip", 40 * MIB);
    let mut tp = spawn_upload(&teleport_upload(&emu, &scan, &state), &env(&emu));
    kill_after(&state, "teleport", 1, &mut tp).await;
    let out = run_upload(pending(&state, &["--json"]), env(&emu)).await;
    let eid = lines(&out)[0]["upload_id"].as_str().unwrap().to_string();

    // Off a terminal, --yes is required: nothing is deleted without it.
    let out = run_upload(pending(&state, &["--discard", &eid]), env(&emu)).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert!(!emu.request_log().iter().any(|r| r.method == "DELETE"));

    let out = run_upload(pending(&state, &["--discard", &eid, "--yes", "--json"]), env(&emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let line = &lines(&out)[0];
    assert_eq!((line["discarded"].as_bool(), line["upload_id"].as_str()), (Some(true), Some(eid.as_str())));
    let delete = format!("/api/v1/captures/{eid}");
    assert!(
        emu.request_log().iter().any(|r| r.method == "DELETE" && r.path == delete && r.status == 204),
        "{:?}",
        emu.request_log()
    );
    let out = run_upload(pending(&state, &["--json"]), env(&emu)).await;
    assert!(stdout(&out).trim().is_empty(), "{}", stdout(&out));
    // An unknown id is refused.
    let out = run_upload(pending(&state, &["--discard", "nope", "--yes"]), env(&emu)).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// An upload that is still running holds its journal's lock: discarding it is refused with
/// exit 8, and neither the journal nor the capture is touched; once it ended, nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_upload_is_not_discarded() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // 40 MiB at 8 MiB/s: five seconds of upload to be discarded under.
    let (scan, sha) = make_file(dir.path(), "scan.zip", 40 * MIB);
    let mut tp = spawn_upload(&teleport_upload(&emu, &scan, &state), &env(&emu));
    let start = Instant::now();
    let eid = loop {
        let out = run_upload(pending(&state, &["--json"]), env(&emu)).await;
        if let Some(id) = lines(&out).first().and_then(|l| l["upload_id"].as_str().map(String::from)) {
            break id;
        }
        assert!(tp.try_wait().unwrap().is_none(), "the upload ended before it was seen pending");
        assert!(start.elapsed() < Duration::from_secs(120), "no pending upload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = run_upload(pending(&state, &["--discard", &eid, "--yes"]), env(&emu)).await;
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(stderr(&out).contains("another upload of this file is running"), "{}", stderr(&out));
    assert!(!emu.request_log().iter().any(|r| r.method == "DELETE"), "{:?}", emu.request_log());
    let out = tokio::task::spawn_blocking(move || tp.wait_with_output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(emu.objects()[0].sha256, sha, "the upload finished byte-exact");
}

/// A free loopback port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A create that surely made nothing (refused connection, 401, https to a plain-http server,
/// the S3 port given as the API: 405) removes the intent it journaled first: `upload pending`
/// lists nothing. Each keeps its exit code and says what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_that_surely_made_nothing_leave_no_journal() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (file, _) = make_file(dir.path(), "walk.mp4", 3 * MIB);
    let refused = format!("http://127.0.0.1:{}", closed_port());
    let https = emu.api_url().replace("http://", "https://");
    let host = emu.api_url().trim_start_matches("http://").to_string();
    for (provider, endpoint, token, code, says) in [
        ("teleport", refused.as_str(), emu.token(), 5, "cannot reach"),
        ("truvideo", refused.as_str(), emu.token(), 5, "cannot reach"),
        ("teleport", emu.api_url().as_str(), "wrong".to_string(), 3, "HTTP 401"),
        ("truvideo", emu.api_url().as_str(), "wrong".to_string(), 3, "HTTP 401"),
        ("teleport", https.as_str(), emu.token(), 5, "answered in plain http"),
        ("teleport", emu.s3_url().as_str(), emu.token(), 4, "HTTP 405"),
        ("truvideo", emu.s3_url().as_str(), emu.token(), 4, "HTTP 405"),
    ] {
        let mut a = vec![file.display().to_string()];
        a.extend(args(&["--provider", provider, "--endpoint", endpoint, "--token", &token, "--state-dir"]));
        a.push(state.display().to_string());
        let out = run_upload(a, vec![]).await;
        assert_eq!(out.status.code(), Some(code), "{provider} {endpoint}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{provider} {endpoint}: {}", stderr(&out));
        let left = upload::engine::journal::list(&state);
        assert!(left.is_empty(), "{provider} {endpoint} left a journal: {left:?}");
    }
    // https to a plain-http server is not retried, and the hint names http://.
    let mut a = vec![file.display().to_string()];
    a.extend(args(&["--provider", "teleport", "--endpoint", &https, "--token", &emu.token(), "--state-dir"]));
    a.push(state.display().to_string());
    let out = run_upload(a, vec![]).await;
    assert!(stderr(&out).contains(&format!("--endpoint http://{host}")), "{}", stderr(&out));
    assert!(!stderr(&out).contains("retrying"), "{}", stderr(&out));
    let out = run_upload(pending(&state, &[]), vec![]).await;
    assert!(out.status.success() && stdout(&out).is_empty(), "{}{}", stdout(&out), stderr(&out));
}

/// `upload pending`: a header, every line within 100 columns (a long path shortened in its
/// directory, the name kept), one way of saying when; a state directory that is a file is an
/// error, not "no pending uploads"; --all-older-than discards what it can and goes on past an
/// upload that is still running (reported, exit 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pending_table_fits_100_columns_and_discarding_goes_past_a_running_upload() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let deep = dir.path().join("captures/site-2026-12-01/building-b/floor-3/north-wing/corridor");
    std::fs::create_dir_all(&deep).unwrap();
    let (walk, _) = make_file(&deep, "walkaround-of-the-lobby.mp4", 25 * MIB);
    let (scan, _) = make_file(dir.path(), "scan.zip", 40 * MIB);
    let mut tv = spawn_upload(&truvideo_upload(&emu, &walk, &state), &env(&emu));
    kill_after(&state, "truvideo", 1, &mut tv).await;

    let out = run_upload(pending(&state, &[]), env(&emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("ID ") && lines[0].contains("PARTS") && lines[0].ends_with("FILE"), "{text}");
    for l in &lines {
        assert!(l.chars().count() <= 100, "{} columns: {l}", l.chars().count());
    }
    assert!(lines[1].starts_with("truvideo-") && lines[1].ends_with("/walkaround-of-the-lobby.mp4"), "{text}");
    assert!(lines[1].contains("…") && lines[1].contains(" ago "), "{text}");
    assert!(!text.contains("+00:00") && !text.contains("file matches"), "{text}");

    // A state directory that is a file.
    let out = run_upload(args(&["pending", "--state-dir", scan.to_str().unwrap()]), env(&emu)).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not a directory"), "{}", stderr(&out));

    // A running Teleport upload (locked) beside the killed TruVideo one: both are "older than
    // 0s"; the TruVideo journal goes, the running one is reported and left alone.
    let mut tp = spawn_upload(&teleport_upload(&emu, &scan, &state), &env(&emu));
    let start = Instant::now();
    while !upload::engine::journal::list(&state).iter().any(|(_, j)| j.as_ref().is_ok_and(|j| j.provider == "teleport"))
    {
        assert!(tp.try_wait().unwrap().is_none(), "the upload ended before it was seen pending");
        assert!(start.elapsed() < Duration::from_secs(120), "no pending upload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = run_upload(pending(&state, &["--all-older-than", "0s", "--yes"]), env(&emu)).await;
    assert_eq!(out.status.code(), Some(8), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("another upload of this file is running"), "{}", stderr(&out));
    assert!(stdout(&out).contains("discarded truvideo-"), "{}", stdout(&out));
    let left: Vec<String> =
        upload::engine::journal::list(&state).into_iter().filter_map(|(_, j)| j.ok().map(|j| j.provider)).collect();
    assert_eq!(left, vec!["teleport".to_string()], "the running upload's journal is the one left");
    let out = tokio::task::spawn_blocking(move || tp.wait_with_output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `pending --resume` keeps the options that shape the run: a `--force` upload (of a file
/// recorded as uploaded) is carried on, not skipped, and `--limit-rate` still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_keeps_force_and_the_rate_limit() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (scan, sha) = make_file(dir.path(), "scan.zip", 40 * MIB);
    let out = run_upload(teleport_upload(&emu, &scan, &state), env(&emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    // Again with --force (at 8 MiB/s), killed after one part.
    let mut a = teleport_upload(&emu, &scan, &state);
    a.push("--force".into());
    let mut tp = spawn_upload(&a, &env(&emu));
    kill_after(&state, "teleport", 1, &mut tp).await;
    let eid = upload::engine::journal::list(&state)[0].1.as_ref().unwrap().upload_id.clone();

    let out = run_upload(pending(&state, &["--resume", "--json"]), env(&emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let results = lines(&out);
    assert_eq!(results.len(), 1, "{}", stdout(&out));
    let r = &results[0];
    assert_eq!(r["id"], eid.as_str(), "carried on, not skipped as already uploaded: {r}");
    assert_eq!(r["limit_rate_bps"], 8 * MIB, "the journal kept --limit-rate: {r}");
    assert!(upload::engine::journal::list(&state).is_empty(), "the journal is gone");
    let capture = emu.objects().into_iter().find(|o| o.id == eid).expect("the forced capture is stored");
    assert_eq!(capture.sha256, sha);
}
