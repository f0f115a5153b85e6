//! Retries, fresh URLs, token renewal, resume after a crash or Ctrl-C, against the emulator's
//! fault injection. Every successful upload is checked byte for byte.

use std::time::{Duration, Instant};

use crate::common::*;

impl TeleportRun {
    fn assert_stored(&self, parts: u32) {
        let objects = self.emu.objects();
        assert_eq!(objects.len(), 1, "{objects:?}");
        assert_eq!(objects[0].sha256, self.sha, "stored object differs from the file");
        assert_eq!(objects[0].parts, parts);
    }
    fn s3_statuses(&self) -> Vec<u16> {
        self.emu.request_log().iter().filter(|r| r.server == "s3").map(|r| r.status).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_store_still_gives_a_byte_exact_object() {
    let faults = Faults { fail_put_ratio: 0.2, fail_status: 503, reset_ratio: 0.05, seed: 7, ..Faults::default() };
    let s = TeleportRun::start(Config { faults, ..Config::default() }, 8 * 5 * MIB + 99).await;
    let out = run_upload(s.args(&["--retries", "25"]), s.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    s.assert_stored(9);
    assert!(s.s3_statuses().contains(&503), "the fault never fired: {:?}", s.s3_statuses());
    // Each part reached the final object exactly once.
    for ((_, part), n) in s.emu.part_put_counts() {
        assert_eq!(n, 1, "part {part} stored {n} times");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_completion_failure_is_looked_up_then_retried() {
    let faults = Faults { complete_fail_times: 2, ..Faults::default() };
    let s = TeleportRun::start(Config { faults, ..Config::default() }, 6 * MIB).await;
    let out = run_upload(s.args(&[]), s.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    s.assert_stored(2);
    let log = s.emu.request_log();
    let lists = log.iter().filter(|r| r.method == "GET" && r.path == "/api/v1/captures").count();
    assert!(lists >= 2, "the state was not looked up before completing again: {log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_urls_are_replaced() {
    // URLs die 1 s after signing while one slow connection sends 5 MiB parts at 4 MiB/s:
    // URLs asked ahead expire before use.
    let faults = Faults { expire_urls_after_ms: Some(1000), bandwidth_bps: 4 * MIB, ..Faults::default() };
    let s = TeleportRun::start(Config { faults, ..Config::default() }, 3 * 5 * MIB).await;
    let out = run_upload(s.args(&["--concurrency", "1"]), s.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    s.assert_stored(3);
    assert!(s.s3_statuses().contains(&403), "no URL expired, the test proves nothing: {:?}", s.s3_statuses());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_renews_the_token_through_the_command() {
    let faults = Faults { unauthorized_api_call_nth: vec![3], ..Faults::default() };
    let s = TeleportRun::start(Config { faults, ..Config::default() }, 11 * MIB).await;
    let counter = s.dir.path().join("count");
    let cmd = format!("echo x >> {}; echo {}", counter.display(), s.emu.token());
    let mut env = s.env();
    env.retain(|(k, _)| k != "TELEPORT_TOKEN");
    env.push(("UPLOAD_TOKEN_COMMAND".into(), cmd));
    let out = run_upload(s.args(&[]), env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    s.assert_stored(3);
    let runs = std::fs::read_to_string(&counter).unwrap().lines().count();
    assert_eq!(runs, 2, "the token command runs once at start and once after the 401");
    assert!(!stderr(&out).contains(&s.emu.token()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_without_a_command_says_how_to_renew() {
    let faults = Faults { unauthorized_api_call_nth: vec![3], ..Faults::default() };
    let s = TeleportRun::start(Config { faults, ..Config::default() }, 11 * MIB).await;
    let out = run_upload(s.args(&[]), s.env()).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("HTTP 401") && err.contains("--token-command"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_404_stops_at_once() {
    let faults = Faults { fail_put_ratio: 1.0, fail_status: 404, ..Faults::default() };
    let s = TeleportRun::start(Config { faults, ..Config::default() }, 1000).await;
    let out = run_upload(s.args(&[]), s.env()).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("PUT part 1 was rejected (HTTP 404)"), "{}", stderr(&out));
    assert_eq!(s.s3_statuses().len(), 1, "a 404 must not be retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_403_asks_a_few_fresh_urls_then_stops() {
    let faults = Faults { fail_put_ratio: 1.0, fail_status: 403, ..Faults::default() };
    let s = TeleportRun::start(Config { faults, ..Config::default() }, 1000).await;
    let out = run_upload(s.args(&[]), s.env()).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("still refused after 3 fresh URLs"), "{}", stderr(&out));
    assert_eq!(s.s3_statuses().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_resumes_without_resending_parts_and_refuses_a_changed_file() {
    // The 3rd PUT fails and retries are off: the run stops with parts 1-2 (or so) done.
    let faults = Faults { fail_put_nth: vec![3], ..Faults::default() };
    let s = TeleportRun::start(Config { faults, ..Config::default() }, 5 * 5 * MIB).await;
    let out = run_upload(s.args(&["--retries", "0", "--concurrency", "1"]), s.env()).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let j = journals(&s.state_home());
    assert_eq!(j.len(), 1);
    let done = j[0]["parts"].as_array().unwrap().len();
    assert_eq!(done, 2);
    assert!(!serde_json::to_string(&j[0]).unwrap().contains("X-Amz-Signature"), "the journal holds no URL");

    let out = run_upload(s.args(&[]), s.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    s.assert_stored(5);
    for ((_, part), n) in s.emu.part_put_counts() {
        assert_eq!(n, 1, "part {part} was sent {n} times");
    }
    assert!(journals(&s.state_home()).is_empty(), "the journal goes once the upload completes");

    // Interrupt another run, change the file: the journal is refused; --no-resume starts over.
    s.emu.set_faults(Faults { fail_put_nth: vec![3], ..Faults::default() });
    let out = run_upload(s.args(&["--retries", "0", "--concurrency", "1", "--force"]), s.env()).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    make_file(s.dir.path(), "scan.zip", 5 * 5 * MIB + 1);
    let out = run_upload(s.args(&[]), s.env()).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("changed since its upload was interrupted") && stderr(&out).contains("--no-resume"),
        "{}",
        stderr(&out)
    );
    let out = run_upload(s.args(&["--no-resume"]), s.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Waits until the journal records at least `parts` parts.
async fn wait_for_parts(state_home: &std::path::Path, parts: usize, child: &mut std::process::Child) -> Vec<u64> {
    let start = Instant::now();
    loop {
        if let Some(j) = journals(state_home).first() {
            let done: Vec<u64> = j["parts"].as_array().unwrap().iter().map(|p| p["number"].as_u64().unwrap()).collect();
            if done.len() >= parts {
                return done;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the upload ended ({status}) before {parts} parts were recorded");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_sigkill_then_resumed() {
    // 8 parts at 8 MiB/s per connection, 2 connections: about 2.5 s in all.
    let faults = Faults { bandwidth_bps: 8 * MIB, ..Faults::default() };
    let s = TeleportRun::start(Config { faults, ..Config::default() }, 8 * 5 * MIB).await;
    let mut child = spawn_upload(&s.args(&["--concurrency", "2"]), &s.env());
    let done = wait_for_parts(&s.state_home(), 4, &mut child).await;
    child.kill().unwrap();
    child.wait().unwrap();

    s.emu.set_faults(Faults::default());
    let out = run_upload(s.args(&[]), s.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    s.assert_stored(8);
    let counts = s.emu.part_put_counts();
    for ((_, part), n) in &counts {
        if done.contains(&(*part as u64)) {
            assert_eq!(*n, 1, "part {part} was recorded before the kill, yet sent again");
        } else {
            // A part whose response raced the kill may have landed without being recorded.
            assert!(*n <= 2, "part {part} sent {n} times");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_exits_130_and_the_rerun_completes() {
    let faults = Faults { bandwidth_bps: 8 * MIB, ..Faults::default() };
    let s = TeleportRun::start(Config { faults, ..Config::default() }, 8 * 5 * MIB).await;
    let mut child = spawn_upload(&s.args(&["--concurrency", "2"]), &s.env());
    wait_for_parts(&s.state_home(), 2, &mut child).await;
    std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("run the same command again to resume"), "{}", stderr(&out));
    assert_eq!(journals(&s.state_home()).len(), 1);

    s.emu.set_faults(Faults::default());
    let out = run_upload(s.args(&[]), s.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    s.assert_stored(8);
}
