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
    assert_eq!(truvideo["status"], "COMPLETED", "{truvideo}");
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
