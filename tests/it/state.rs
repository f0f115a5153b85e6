//! Durable state against duplicates and orphans (issue 18): completion journaled at once,
//! intent before create, one run per file at a time, stale journals, an unusable state
//! directory, files that change or shrink mid-upload, the token cache keyed on the
//! credentials, private state files.

use std::time::{Duration, Instant};

use serde_json::Value;
use upload_emulator::Processing;

use crate::common::*;

impl TeleportRun {
    fn captures(&self) -> Vec<Value> {
        upload_emulator::teleport::captures_summary(self.emu.shared()).as_array().unwrap().clone()
    }
    fn api_calls(&self, method: &str, path: &str) -> usize {
        self.emu.request_log().iter().filter(|r| r.server == "api" && r.method == method && r.path == path).count()
    }
    fn completions(&self) -> usize {
        self.emu.request_log().iter().filter(|r| r.server == "api" && r.path.ends_with("/uploaded")).count()
    }
    fn s3_puts(&self) -> usize {
        self.emu.request_log().iter().filter(|r| r.server == "s3" && r.method == "PUT").count()
    }
    fn assert_stored_once(&self) {
        let objects = self.emu.objects();
        assert_eq!(objects.len(), 1, "{objects:?}");
        assert_eq!(objects[0].sha256, self.sha, "the stored object differs from the file");
    }
}

fn result(out: &std::process::Output) -> Value {
    let line = stdout(out).lines().last().unwrap_or_default().to_string();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}; stderr {}", stderr(out)))
}

async fn wait_until(what: &str, child: &mut std::process::Child, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the upload ended ({status}) before {what}");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn journal_state(s: &TeleportRun) -> Option<(String, usize)> {
    let j = journals(&s.state_home()).into_iter().next()?;
    Some((j["state"].as_str()?.to_string(), j["parts"].as_array().map_or(0, |p| p.len())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_wait_then_rerun_only_resumes_waiting() {
    // Processing takes far longer than the test: the first run is killed while it waits.
    let processing = Processing { delay_ms: 600_000, fail_reason: None };
    let s = TeleportRun::start(Config { processing, ..Config::default() }, 2 * 5 * MIB + 7).await;
    let mut child = spawn_upload(&s.args(&["--wait"]), &s.env());
    wait_until("the completion is journaled", &mut child, || {
        journal_state(&s).is_some_and(|(state, _)| state == "completed")
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    s.assert_stored_once();
    let (puts, creates) = (s.s3_puts(), s.api_calls("POST", "/api/v1/captures"));
    assert_eq!(creates, 1);

    // With --wait: only the waiting resumes (and times out here).
    let out = run_upload(s.args(&["--wait", "--wait-timeout", "1s"]), s.env()).await;
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!((s.s3_puts(), s.api_calls("POST", "/api/v1/captures"), s.completions()), (puts, 1, 1));

    // Without --wait: reported as done, with the capture's id, nothing sent.
    let out = run_upload(s.args(&[]), s.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let r = result(&out);
    let eid = s.captures()[0]["eid"].as_str().unwrap().to_string();
    assert_eq!(r["id"], eid.as_str(), "{r}");
    assert_eq!((s.s3_puts(), s.api_calls("POST", "/api/v1/captures"), s.completions()), (puts, 1, 1));
    // Recorded as done: the next run skips it, and the journal is gone.
    assert!(journals(&s.state_home()).is_empty());
    let out = run_upload(s.args(&[]), s.env()).await;
    assert_eq!(result(&out)["status"], "skipped", "{}", stdout(&out));
    assert_eq!(s.captures().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_create_leaves_no_orphan() {
    // Every answer comes late: the capture exists well before the create's answer arrives.
    let faults = Faults { latency_ms: 5_000, ..Faults::default() };
    let s = TeleportRun::start(Config { faults, ..Config::default() }, 2 * 5 * MIB + 3).await;
    let mut child = spawn_upload(&s.args(&[]), &s.env());
    wait_until("the capture is created", &mut child, || !s.captures().is_empty()).await;
    assert_eq!(journal_state(&s).map(|j| j.0).as_deref(), Some("intent"), "the intent is journaled before create");
    child.kill().unwrap();
    child.wait().unwrap();

    s.emu.set_faults(Faults::default());
    let out = run_upload(s.args(&[]), s.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.captures().len(), 1, "the interrupted run's capture is adopted, not doubled: {:?}", s.captures());
    // The emulator logs a request once it answered: the killed run's create never was, so
    // the log holds only the rerun's requests, and they include no create.
    assert_eq!(s.api_calls("POST", "/api/v1/captures"), 0, "no second create");
    s.assert_stored_once();
    assert_eq!(result(&out)["id"], s.captures()[0]["eid"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_of_the_same_file_stops_at_the_lock() {
    let faults = Faults { bandwidth_bps: 4 * MIB, ..Faults::default() };
    let s = TeleportRun::start(Config { faults, ..Config::default() }, 4 * 5 * MIB).await;
    let mut first = spawn_upload(&s.args(&["--concurrency", "1"]), &s.env());
    wait_until("the upload starts", &mut first, || journal_state(&s).is_some_and(|(st, _)| st == "started")).await;
    let calls_before = s.emu.request_log().len();

    let out = run_upload(s.args(&[]), s.env()).await;
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("another upload of this file is running (pid {})", first.id())), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("upload: error:")).count(), 1, "{err}");
    assert_eq!(s.api_calls("POST", "/api/v1/captures"), 1, "the second run sent nothing");

    // --wait-for-lock: waits for the first run, then finds the file done.
    let out = run_upload(s.args(&["--wait-for-lock=2m"]), s.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(result(&out)["status"], "skipped", "{}", stdout(&out));
    let first = tokio::task::spawn_blocking(move || first.wait_with_output().unwrap()).await.unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    s.assert_stored_once();
    assert_eq!(s.api_calls("POST", "/api/v1/captures"), 1);
    assert!(s.emu.request_log().len() >= calls_before);
    for ((_, part), n) in s.emu.part_put_counts() {
        assert_eq!(n, 1, "part {part} was sent {n} times");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_deleted_on_the_server_makes_the_rerun_start_over() {
    let faults = Faults { fail_put_nth: vec![2], fail_status: 400, ..Faults::default() };
    let s = TeleportRun::start(Config { faults, ..Config::default() }, 3 * 5 * MIB).await;
    let out = run_upload(s.args(&["--retries", "0", "--concurrency", "1"]), s.env()).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let eid = s.captures()[0]["eid"].as_str().unwrap().to_string();
    let resp = reqwest::Client::new()
        .delete(format!("{}/api/v1/captures/{eid}", s.emu.api_url()))
        .bearer_auth(s.emu.token())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());

    s.emu.set_faults(Faults::default());
    let out = run_upload(s.args(&[]), s.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("no longer exists on the server"), "{}", stderr(&out));
    assert_eq!(s.captures().len(), 1);
    assert_ne!(s.captures()[0]["eid"].as_str().unwrap(), eid);
    s.assert_stored_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_state_dir_is_found_before_anything_is_sent() {
    let s = TeleportRun::start(Config::default(), 1000).await;
    let mut env = s.env();
    env.push(("UPLOAD_STATE_DIR".into(), "/dev/null".into()));
    let out = run_upload(s.args(&[]), env).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().filter(|l| l.starts_with("upload: error:")).count(), 1, "{err}");
    assert!(err.contains("state directory /dev/null"), "{err}");
    assert!(s.emu.request_log().is_empty(), "{:?}", s.emu.request_log());
}

/// No state directory at all (no HOME, no XDG_STATE_HOME; on Windows no LOCALAPPDATA): no
/// upload goes on without its journal, lock and done record, it stops before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_state_directory_is_exit_2_before_anything_is_sent_and_a_dry_run_needs_none() {
    let s = TeleportRun::start(Config::default(), 1000).await;
    let env: Vec<(String, String)> =
        [("TELEPORT_TOKEN", s.emu.token().as_str()), ("XDG_STATE_HOME", ""), ("HOME", ""), ("LOCALAPPDATA", "")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let out = run_upload(s.args(&[]), env.clone()).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("upload: error: no state directory"), "{err}");
    assert!(err.contains("--state-dir"), "{err}");
    assert!(s.emu.request_log().is_empty(), "{:?}", s.emu.request_log());
    let out = run_upload(s.args(&["--dry-run"]), env.clone()).await;
    assert_eq!(out.status.code(), Some(0), "a dry run keeps no state: {}", stderr(&out));
    let state = s.dir.path().join("given-state");
    let out = run_upload(s.args(&["--state-dir", state.to_str().unwrap()]), env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    s.assert_stored_once();
    assert!(state.join("done").is_dir(), "the done record is in the state directory given");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_size_rewrite_with_the_mtime_put_back_is_caught_before_completing() {
    let faults = Faults { bandwidth_bps: 4 * MIB, ..Faults::default() };
    let s = TeleportRun::start(Config { faults, ..Config::default() }, 4 * 5 * MIB).await;
    let mut child = spawn_upload(&s.args(&["--concurrency", "1"]), &s.env());
    wait_until("a part is journaled", &mut child, || journal_state(&s).is_some_and(|(_, n)| n >= 1)).await;
    {
        use std::os::unix::fs::FileExt;
        let mtime = std::fs::metadata(&s.path).unwrap().modified().unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&s.path).unwrap();
        f.write_all_at(&[0u8; 4096], 2 * 5 * MIB + 100).unwrap(); // same size, the middle
        f.set_modified(mtime).unwrap(); // `touch -r`
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("changed while it was being uploaded"), "{}", stderr(&out));
    assert_eq!(s.completions(), 0, "a mixed object is never completed");
    assert!(s.emu.objects().is_empty());
    // And the rerun refuses to resume it.
    let out = run_upload(s.args(&[]), s.env()).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("changed since its upload was interrupted"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_mid_upload_is_a_file_error_at_once() {
    let faults = Faults { bandwidth_bps: 4 * MIB, ..Faults::default() };
    let s = TeleportRun::start(Config { faults, ..Config::default() }, 4 * 5 * MIB).await;
    let mut child = spawn_upload(&s.args(&["--concurrency", "1"]), &s.env());
    wait_until("a part is journaled", &mut child, || journal_state(&s).is_some_and(|(_, n)| n >= 1)).await;
    std::fs::OpenOptions::new().write(true).open(&s.path).unwrap().set_len(5 * MIB + 10).unwrap();
    let t0 = Instant::now();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("shrank"), "{err}");
    assert!(!err.contains("gave up after") && !err.contains("check the connection"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    assert_eq!(s.completions(), 0);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_records_and_state_directories_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let s = TeleportRun::start(Config::default(), 1000).await;
    let out = run_upload(s.args(&[]), s.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let state = s.state_home().join("upload");
    let done: Vec<_> = std::fs::read_dir(state.join("done")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(done.len(), 1);
    assert_eq!(std::fs::metadata(&done[0]).unwrap().permissions().mode() & 0o777, 0o600);
    for dir in [state.clone(), state.join("done"), state.join("journals"), state.join("locks")] {
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700, "{}", dir.display());
    }
}

/// A directory where a file's journal belongs (made by hand, or by a tool gone wrong) does not
/// block that file: with `--no-resume` or without, it is moved aside with a warning naming it
/// and the upload goes, byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_at_the_journal_path_is_moved_aside() {
    // A first run that stops before completing leaves the file's journal: its path.
    let faults = Faults { hang: vec!["always POST /api/v1/captures/*/uploaded".into()], ..Faults::default() };
    let s = TeleportRun::start(Config { faults, ..Config::default() }, 1000).await;
    let out = run_upload(s.args(&["--idle-timeout", "1s"]), s.env()).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let state = s.state_home().join("upload");
    let listed = upload::engine::journal::list(&state);
    assert_eq!(listed.len(), 1);
    let journal = listed[0].0.clone();
    s.emu.set_faults(Faults::default());
    for extra in [&["--no-resume"][..], &[][..]] {
        std::fs::remove_file(&journal).ok();
        std::fs::create_dir_all(journal.join("inside")).unwrap();
        let out = run_upload(s.args(&[&["--force"][..], extra].concat()), s.env()).await;
        let err = stderr(&out);
        assert!(out.status.success(), "{extra:?}: {err}");
        assert!(err.contains("was not a journal (a directory): moved aside to"), "{err}");
        let aside: Vec<_> = std::fs::read_dir(journal.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".not-a-journal-"))
            .collect();
        assert!(!aside.is_empty(), "{aside:?}");
        assert_eq!(s.emu.objects().last().unwrap().sha256, s.sha);
        for a in aside {
            std::fs::remove_dir_all(journal.parent().unwrap().join(a)).unwrap();
        }
    }
}

/// A journaled part whose ETag the store does not have (a journal line gone wrong) no longer
/// fails every rerun: the completion's refusal names the part, the part is dropped from the
/// journal and sent again, and the upload completes byte-exact, for both multipart vendors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journaled_part_with_a_wrong_etag_is_named_and_sent_again() {
    for (provider, complete, token_var, extra) in [
        ("teleport", "always POST /api/v1/captures/*/uploaded", "TELEPORT_TOKEN", &[][..]),
        ("truvideo", "always POST /upload/*/complete", "TRUVIDEO_TOKEN", &["--part-size", "5MiB", "--no-wait"][..]),
    ] {
        let faults = Faults { hang: vec![complete.into()], ..Faults::default() };
        let emu = emulator(Config { teleport_chunk_size: 5 * MIB, faults, ..Config::default() }).await;
        let dir = tempfile::tempdir().unwrap();
        let name = if provider == "teleport" { "scan.zip" } else { "walk.mp4" };
        let (path, sha) = make_file(dir.path(), name, 5 * MIB + 1000);
        let state = dir.path().join("state");
        let mut a = args(&[path.to_str().unwrap(), "--provider", provider, "--endpoint", &emu.api_url()]);
        a.extend(args(&["--state-dir", state.to_str().unwrap(), "--idle-timeout", "1s"]));
        a.extend(args(extra));
        let env = vec![(token_var.to_string(), emu.token())];
        // Both parts stored and journaled, the completion never answered.
        let out = run_upload(a.clone(), env.clone()).await;
        assert_eq!(out.status.code(), Some(5), "{provider}: {}", stderr(&out));
        let listed = upload::engine::journal::list(&state);
        let journal = listed[0].0.clone();
        let text = std::fs::read_to_string(&journal).unwrap();
        let bad = "\"\\\"00000000000000000000000000000000\\\"\"";
        let tampered: Vec<String> = text
            .lines()
            .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
                Ok(mut v) if v["number"] == 2 && v.get("etag").is_some() => {
                    v["etag"] = serde_json::from_str(bad).unwrap();
                    v.to_string()
                }
                _ => l.to_string(),
            })
            .collect();
        assert_ne!(tampered.join("\n"), text.trim_end(), "{provider}: no part 2 in the journal: {text}");
        std::fs::write(&journal, tampered.join("\n") + "\n").unwrap();

        emu.set_faults(Faults::default());
        let out = run_upload(a, env).await;
        let err = stderr(&out);
        assert!(out.status.success(), "{provider}: {err}");
        assert!(err.contains("refused part 2") && err.contains("sending it again"), "{provider}: {err}");
        let objects = emu.objects();
        assert_eq!((objects.len(), objects[0].sha256.as_str()), (1, sha.as_str()), "{provider}");
        let counts: Vec<u64> = emu.part_put_counts().values().copied().collect();
        assert_eq!(counts.iter().sum::<u64>(), 3, "{provider}: part 2 twice, part 1 once: {counts:?}");
    }
}

/// Done records of files that are gone are pruned (once a day per state directory): the state
/// directory holds records of the files that still exist, not of every file ever uploaded;
/// a file still there is still skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_records_of_files_that_are_gone_are_pruned() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let files: Vec<_> = (0..4).map(|i| make_file(dir.path(), &format!("f{i}.zip"), 1000 + i).0).collect();
    let env = vec![("TELEPORT_TOKEN".to_string(), emu.token())];
    let run = |paths: &[&std::path::PathBuf]| {
        let mut a: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        a.extend(args(&["--provider", "teleport", "--endpoint", &emu.api_url(), "--state-dir"]));
        a.push(state.display().to_string());
        run_upload(a, env.clone())
    };
    let out = run(&[&files[0], &files[1], &files[2]]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    // Loose records, and lines of the packed file (`done/packed`).
    let records = || {
        std::fs::read_dir(state.join("done"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| match e.file_name() == "packed" {
                true => std::fs::read_to_string(e.path()).unwrap().lines().count(),
                false => 1,
            })
            .sum::<usize>()
    };
    assert_eq!(records(), 3);
    // Two files go away (moved after upload, as a watched inbox does); a day passes.
    std::fs::remove_file(&files[0]).unwrap();
    std::fs::remove_file(&files[1]).unwrap();
    let marker = state.join(".done-pruned");
    assert!(marker.exists(), "the first run marks its pruning");
    let aged = std::process::Command::new("touch").args(["-d", "2 days ago"]).arg(&marker).status().unwrap();
    assert!(aged.success());
    let out = run(&[&files[3]]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(records(), 2, "the records of f0 and f1 were pruned, f2's and f3's kept");
    // The file still there is still skipped.
    let out = run(&[&files[2]]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("skipped: already uploaded"), "{}", stderr(&out));
}

impl TeleportRun {
    fn capture_ids(&self) -> Vec<String> {
        self.captures().iter().filter_map(|c| c["eid"].as_str().map(String::from)).collect()
    }
}

/// Captures this run made, or started over from, and will never use are deleted on Teleport
/// (they would stay CREATED for ever): `--no-resume` over a journal's capture removes that
/// capture, and a library upload with no state directory that gives up removes its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_the_run_abandons_are_deleted() {
    // A first run stops before completing: its capture is journaled.
    let faults = Faults { hang: vec!["always POST /api/v1/captures/*/uploaded".into()], ..Faults::default() };
    let s = TeleportRun::start(Config { faults, ..Config::default() }, 1000).await;
    let out = run_upload(s.args(&["--idle-timeout", "1s"]), s.env()).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let first = s.capture_ids();
    assert_eq!(first.len(), 1);
    s.emu.set_faults(Faults::default());
    let out = run_upload(s.args(&["--no-resume"]), s.env()).await;
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("removed capture {}", first[0])), "{err}");
    let now = s.capture_ids();
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], first[0], "the abandoned capture is gone, the new one stays");
    s.assert_stored_once();

    // The library, no state directory: every part refused (400) ends the upload for good.
    let faults = Faults { fail_put_ratio: 1.0, fail_status: 400, ..Faults::default() };
    let s = TeleportRun::start(Config { faults, ..Config::default() }, 1000).await;
    let uploader = upload::Uploader::new(upload::providers::teleport::Teleport::new(Default::default()).unwrap())
        .endpoint(s.emu.api_url())
        .token(s.emu.token());
    let r = uploader.upload(&s.path).await;
    assert!(r.is_err(), "{r:?}");
    assert!(s.capture_ids().is_empty(), "the capture it made stays: {:?}", s.captures());
    assert_eq!(s.api_calls("POST", "/api/v1/captures"), 1);
}
