//! Ctrl-C ends the run within 5 seconds in every phase it can be in: a request in flight that
//! never answers, create, complete, a look-up, the last wave of parts, a download, `watch`,
//! `pending --resume` (a backoff is in the conformance suite). A real SIGINT goes to the real
//! binary while the emulator holds the phase's request unanswered (its `hang` fault), with the
//! default idle timeout (30 s: nothing is cut by the client meanwhile). Journals are kept, the
//! exit code is 130 and the resume line is printed; the rerun finishes byte-exact.

use std::process::{Child, Output};
use std::time::{Duration, Instant};

use crate::common::*;

/// The bound of the README: Ctrl-C ends a run in at most 5 seconds (3 s of grace for the work
/// in flight, then the exit).
const CTRL_C_BOUND: Duration = Duration::from_secs(5);

/// Waits until `ready` (the phase is under way), lets it settle, sends SIGINT, and returns the
/// output and how long the process took to end after the signal.
async fn interrupt_when(mut child: Child, ready: impl Fn() -> bool) -> (Output, Duration) {
    let t0 = Instant::now();
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().unwrap();
            panic!("the run ended ({status}) before its phase: {}", stderr(&out));
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "the phase never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(child.try_wait().unwrap().is_none(), "the run ended before it was interrupted");
    let signalled = Instant::now();
    std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
    )
    .await
    .expect("the run ends after Ctrl-C")
    .unwrap();
    (out, signalled.elapsed())
}

/// Whether the emulator was asked `method path...` (a prefix of the path).
fn asked(emu: &Emulator, method: &str, path: &str) -> usize {
    emu.request_log().iter().filter(|r| r.method == method && r.path.starts_with(path)).count()
}

fn assert_interrupted(phase: &str, out: &Output, took: Duration) {
    let err = stderr(out);
    eprintln!("Ctrl-C during {phase}: ended in {took:?}");
    assert_eq!(out.status.code(), Some(130), "{phase}: {err}");
    assert!(took < CTRL_C_BOUND, "{phase}: Ctrl-C took {took:?}: {err}");
    assert!(err.contains("run the same command again"), "{phase}: no resume line: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn hang(calls: &[&str]) -> Config {
    Config {
        faults: Faults { hang: calls.iter().map(|c| c.to_string()).collect(), ..Faults::default() },
        ..Config::default()
    }
}

/// The rerun without faults finishes byte-exact, every part stored once (`parts` of them).
async fn rerun_completes(s: &TeleportRun, parts: u32) {
    s.emu.set_faults(Faults::default());
    let out = run_upload(s.args(&[]), s.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let objects = s.emu.objects();
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!((objects[0].sha256.as_str(), objects[0].parts), (s.sha.as_str(), parts));
}

/// A part's PUT that never answers while more parts wait for their turn (one at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_part_that_never_answers() {
    let s = TeleportRun::start(hang(&["always PUT /**"]), 3 * 5 * MIB).await;
    let child = spawn_upload(&s.args(&["--concurrency", "1"]), &s.env());
    let (out, took) = interrupt_when(child, || asked(&s.emu, "PUT", "/") >= 1).await;
    assert_interrupted("a part that never answers", &out, took);
    assert_eq!(journals(&s.state_home()).len(), 1, "the journal was not kept");
    rerun_completes(&s, 3).await;
}

/// The last wave: fewer parts than the concurrency, all in flight, none answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_last_wave_of_parts() {
    let s = TeleportRun::start(hang(&["always PUT /**"]), 2 * 5 * MIB).await;
    let child = spawn_upload(&s.args(&["--concurrency", "8"]), &s.env());
    let (out, took) = interrupt_when(child, || asked(&s.emu, "PUT", "/") >= 2).await;
    assert_interrupted("the last wave of parts", &out, took);
    assert_eq!(journals(&s.state_home()).len(), 1);
    rerun_completes(&s, 2).await;
}

/// Create never answers (the intent is journaled before it goes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_create() {
    let s = TeleportRun::start(hang(&["always POST /api/v1/captures"]), 5 * MIB + 1).await;
    let child = spawn_upload(&s.args(&[]), &s.env());
    let (out, took) = interrupt_when(child, || asked(&s.emu, "POST", "/api/v1/captures") >= 1).await;
    assert_interrupted("create", &out, took);
    assert_eq!(journals(&s.state_home()).len(), 1);
    rerun_completes(&s, 2).await;
}

/// Complete never answers (every part was stored and journaled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_complete() {
    let s = TeleportRun::start(hang(&["always POST /api/v1/captures/*/uploaded"]), 5 * MIB + 1).await;
    let child = spawn_upload(&s.args(&[]), &s.env());
    let (out, took) = interrupt_when(child, || s.emu.request_log().iter().any(|r| r.path.ends_with("/uploaded"))).await;
    assert_interrupted("complete", &out, took);
    assert_eq!(journals(&s.state_home()).len(), 1);
    rerun_completes(&s, 2).await;
    assert_eq!(s.emu.part_put_counts().values().max(), Some(&1), "a journaled part was sent again");
}

/// The look-up after create's answer stalled: the look-up never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_look_up() {
    let faults = Faults {
        stall_body: vec!["POST /api/v1/captures".into()],
        hang: vec!["always GET /api/v1/captures".into()],
        ..Faults::default()
    };
    let s = TeleportRun::start(Config { faults, ..Config::default() }, 5 * MIB + 1).await;
    let child = spawn_upload(&s.args(&["--idle-timeout", "1s"]), &s.env());
    let (out, took) = interrupt_when(child, || asked(&s.emu, "GET", "/api/v1/captures") >= 1).await;
    assert_interrupted("a look-up", &out, took);
    assert_eq!(journals(&s.state_home()).len(), 1);
    // The rerun adopts the capture the stalled create made.
    rerun_completes(&s, 2).await;
    assert_eq!(s.emu.request_log().iter().filter(|r| r.method == "POST" && r.path == "/api/v1/captures").count(), 1);
}

/// `upload pending --resume`: the resumed run's part never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_pending_resume() {
    let s = TeleportRun::start(hang(&["always PUT /**"]), 2 * 5 * MIB).await;
    let child = spawn_upload(&s.args(&[]), &s.env());
    let (out, _) = interrupt_when(child, || asked(&s.emu, "PUT", "/") >= 1).await;
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let seen = asked(&s.emu, "PUT", "/");
    let child = spawn_upload(&args(&["pending", "--resume"]), &s.env());
    let (out, took) = interrupt_when(child, || asked(&s.emu, "PUT", "/") > seen).await;
    assert_interrupted("pending --resume", &out, took);
    assert_eq!(journals(&s.state_home()).len(), 1);
    rerun_completes(&s, 2).await;
}

/// `upload teleport download`: the model's GET never answers; the `.part` file is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_download() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "scan.zip", 1000);
    let token = vec![("TELEPORT_TOKEN".to_string(), emu.token())];
    let a = args(&[path.to_str().unwrap(), "--provider", "teleport", "--endpoint", &emu.api_url(), "--wait", "--json"]);
    let out = run_upload(a, token.clone()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let sid = v["sid"].as_str().unwrap().to_string();
    emu.set_faults(Faults { hang: vec!["always GET /cdn/**".into()], ..Faults::default() });
    let models = dir.path().join("models");
    let a = args(&["teleport", "download", &sid, "-o", models.to_str().unwrap(), "--endpoint", &emu.api_url()]);
    let child = spawn_upload(&a, &token);
    let (out, took) = interrupt_when(child, || asked(&emu, "GET", "/cdn/") >= 1).await;
    assert_interrupted("a download", &out, took);
    let kept: Vec<_> = std::fs::read_dir(&models).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert!(kept.iter().any(|n| n.to_string_lossy().ends_with(".part")), "{kept:?}");
}

/// `upload watch`: a part of the file it found never answers. The watcher stops (its exit
/// code after a signal is 0, as documented) and the journal stays for its next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_watch() {
    let emu = emulator(Config { teleport_chunk_size: 5 * MIB, ..hang(&["always PUT /**"]) }).await;
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("in");
    std::fs::create_dir(&watched).unwrap();
    make_file(&watched, "scan.zip", 2 * 5 * MIB);
    let state = dir.path().join("state");
    let a = args(&[
        "watch",
        watched.to_str().unwrap(),
        "--provider",
        "teleport",
        "--endpoint",
        &emu.api_url(),
        "--settle",
        "200ms",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let child = spawn_upload(&a, &[("TELEPORT_TOKEN".to_string(), emu.token())]);
    let (out, took) = interrupt_when(child, || asked(&emu, "PUT", "/") >= 1).await;
    eprintln!("Ctrl-C during watch: ended in {took:?}");
    assert!(took < CTRL_C_BOUND, "Ctrl-C took {took:?}: {}", stderr(&out));
    assert!(matches!(out.status.code(), Some(0 | 130)), "{}", stderr(&out));
    assert_eq!(upload::engine::journal::list(&state).len(), 1, "the journal was not kept");
}
