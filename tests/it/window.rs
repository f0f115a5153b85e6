//! Upload windows that end cleanly: `--max-duration` and `--until` stop a run at a time. The
//! real binary against the in-process emulator, slowed by `--limit-rate` so the limit falls in
//! the middle of a file: exit 9, one line saying how to go on, `"status": "stopped"` for every
//! unfinished file, journals kept; the rerun finishes byte-exact without sending a stored part
//! again. `watch` stops taking files at the limit and exits 9.

use std::time::{Duration, Instant};

use crate::common::*;

const GO_ON: &str = "upload: stopped at the time limit; run the same command, or `upload pending --resume`, to go on";

/// The `--json` lines, each checked against the committed schema.
fn json_lines(o: &std::process::Output) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/result.schema.json")).unwrap();
    let schema = jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap();
    let lines: Vec<serde_json::Value> =
        stdout(o).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    for l in &lines {
        let errors: Vec<String> = schema.iter_errors(l).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{l} does not match the schema: {errors:?}");
    }
    lines
}

/// Every part of every upload was PUT exactly once.
fn each_part_once(emu: &Emulator) {
    let counts = emu.part_put_counts();
    assert!(!counts.is_empty());
    assert!(counts.values().all(|&n| n == 1), "a part was sent twice: {counts:?}");
}

/// The limit falls in the middle of the first of two files (6 parts of 5 MiB at 2 MiB/s, one
/// part at a time): the part in flight finishes, no other part or file starts, exit 9; the
/// rerun sends the rest, no part twice, both files byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_duration_stops_mid_file_and_the_rerun_goes_on() {
    let s = TeleportRun::start(Config::default(), 6 * 5 * MIB).await;
    let (second, second_sha) = make_file(s.dir.path(), "second.zip", 5 * MIB + 7);
    let mut a = s.args(&["--concurrency", "1", "--files", "1", "--limit-rate", "2MiB", "--max-duration", "3s"]);
    a.push(second.display().to_string());
    let t0 = Instant::now();
    let out = run_upload(a.clone(), s.env()).await;
    let took = t0.elapsed();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(9), "{err}");
    assert!(err.contains(GO_ON), "{err}");
    assert!(err.contains("2 stopped at the time limit"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // 3 s, the part in flight (2.5 s at most at 2 MiB/s), start-up: far under the 30 s cut.
    assert!(took < Duration::from_secs(60), "took {took:?}: {err}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        assert_eq!((l["status"].as_str(), l["exit_code"].as_i64()), (Some("stopped"), Some(9)), "{l}");
    }
    let first = lines.iter().find(|l| l["file"] == s.path.display().to_string()).unwrap();
    assert!(first["reason"].as_str().unwrap().contains("journal is kept"), "{first}");
    assert!(s.emu.objects().is_empty(), "nothing completed: {:?}", s.emu.objects());
    let kept = journals(&s.state_home());
    assert_eq!(kept.len(), 1, "{kept:?}");
    let done = kept[0]["parts"].as_array().unwrap().len();
    assert!(done < 6, "the limit fell after the whole file: {done} parts");
    let sent_before = s.emu.part_put_counts().len();
    assert_eq!(sent_before, done, "a part in flight at the limit was not journaled");

    // The same command without the limit goes on: the rest, no stored part again.
    let a: Vec<String> = a.into_iter().filter(|x| x != "--max-duration" && x != "3s").collect();
    let a: Vec<String> = a.into_iter().filter(|x| x != "--limit-rate" && x != "2MiB").collect();
    let out = run_upload(a, s.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let mut objects = s.emu.objects();
    objects.sort_by_key(|o| o.size);
    assert_eq!(objects.len(), 2, "{objects:?}");
    assert_eq!((objects[0].sha256.as_str(), objects[0].parts), (second_sha.as_str(), 2));
    assert_eq!((objects[1].sha256.as_str(), objects[1].parts), (s.sha.as_str(), 6));
    each_part_once(&s.emu);
    assert!(journals(&s.state_home()).is_empty());
}

/// A part whose body the server reads at 4 KiB/s (with `--idle-timeout 1h` never cut as idle; 5 MiB would
/// take 20 minutes) is cut 30 s after the limit: not at once as after a Ctrl-C, not never.
/// Exit 9, the journal kept, and the rerun completes byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_in_flight_is_cut_thirty_seconds_after_the_limit() {
    let slow = Faults { trickle_read: vec!["always PUT /**".into()], trickle_bps: 4096, ..Faults::default() };
    let s = TeleportRun::start(Config { faults: slow, ..Config::default() }, 2 * 5 * MIB).await;
    let a = s.args(&["--concurrency", "1", "--idle-timeout", "1h", "--max-duration", "2s"]);
    let t0 = Instant::now();
    let out = run_upload(a.clone(), s.env()).await;
    let took = t0.elapsed();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(9), "{err}");
    assert!(err.contains(GO_ON), "{err}");
    assert!(took >= Duration::from_secs(31), "cut before its 30 s: {took:?}: {err}");
    assert!(took < Duration::from_secs(90), "not cut: {took:?}");
    assert_eq!(json_lines(&out)[0]["status"], "stopped");
    assert_eq!(journals(&s.state_home()).len(), 1);
    s.emu.set_faults(Faults::default());
    let out = run_upload(s.args(&[]), s.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let objects = s.emu.objects();
    assert_eq!((objects.len(), objects[0].sha256.as_str()), (1, s.sha.as_str()));
}

/// `UPLOAD_UNTIL` (the env var of `--until`), the next occurrence of a local time (the clock set
/// by the hidden `UPLOAD_FAKE_LOCAL_TIME`): `watch` uploads what is there, stops at the time
/// mid-file (exit 9, the file `stopped`), and an idle watcher exits 9 at the time too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_stops_at_the_time_limit() {
    let s = TeleportRun::start(Config::default(), 6 * 5 * MIB).await;
    let inbox = s.dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    std::fs::rename(&s.path, inbox.join("scan.zip")).unwrap();
    let watch = |extra: &[&str]| {
        let mut a = args(&["watch", &inbox.display().to_string(), "--provider", "teleport", "--json"]);
        a.extend(args(&["--endpoint", &s.emu.api_url(), "--settle", "200ms"]));
        a.extend(args(extra));
        a
    };
    let mut env = s.env();
    env.push(("UPLOAD_UNTIL".into(), "06:00".into()));
    env.push(("UPLOAD_FAKE_LOCAL_TIME".into(), "2026-12-01T05:59:56".into()));
    let t0 = Instant::now();
    let out = run_upload(watch(&["--concurrency", "1", "--limit-rate", "2MiB"]), env.clone()).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(9), "{err}");
    assert!(err.contains(GO_ON), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}: {err}", t0.elapsed());
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!((lines[0]["status"].as_str(), lines[0]["exit_code"].as_i64()), (Some("stopped"), Some(9)));
    assert_eq!(journals(&s.state_home()).len(), 1);

    // Nothing to do: the watcher waits for files, and exits 9 at the time.
    let empty = s.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut a = args(&["watch", &empty.display().to_string(), "--provider", "teleport", "--json"]);
    a.extend(args(&["--endpoint", &s.emu.api_url()]));
    env.retain(|(k, _)| k != "UPLOAD_UNTIL");
    a.extend(args(&["--max-duration", "2s"]));
    let t0 = Instant::now();
    let out = run_upload(a, env.clone()).await;
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(t0.elapsed() >= Duration::from_secs(2) && t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());

    // The watcher started again without a limit carries the stopped upload on: no part twice.
    let mut w = spawn_upload(&watch(&[]), &s.env());
    let t0 = Instant::now();
    while s.emu.objects().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(120), "the resumed upload never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = w.kill();
    let _ = w.wait();
    assert_eq!(s.emu.objects()[0].sha256, s.sha);
    each_part_once(&s.emu);
}

/// A bad `--until` or config value is one line naming it, exit 2, before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_time_limits_are_refused() {
    let s = TeleportRun::start(Config::default(), MIB).await;
    for (flag, value, says) in [
        ("--until", "25:00", "not a time of day HH:MM"),
        ("--until", "6pm", "not a time of day HH:MM"),
        ("--max-duration", "0s", "must be more than zero"),
        ("--max-duration", "soon", "invalid duration"),
    ] {
        let out = run_upload(s.args(&[flag, value]), s.env()).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(says) && err.contains(flag), "{flag} {value}: {err}");
    }
    let config = s.dir.path().join("config.toml");
    std::fs::write(&config, "[defaults]\nuntil = \"noon\"\n").unwrap();
    let mut env = s.env();
    env.push(("UPLOAD_CONFIG".into(), config.display().to_string()));
    let out = run_upload(s.args(&[]), env).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("config file [defaults] until: 'noon' is not a time of day"), "{err}");
    assert_eq!(err.lines().filter(|l| !l.trim_start().starts_with("hint:")).count(), 1, "{err}");
    assert!(s.emu.request_log().is_empty(), "a request went out");
}
