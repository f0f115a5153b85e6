//! Concurrency that tunes itself (`--concurrency auto`, the default) and many small files at
//! once (`--files auto`), observed where it counts: by the emulator, which sees how many
//! requests are in flight at once. No timing is asserted.

use std::collections::BTreeMap;

use crate::common::*;

fn teleport_args(emu: &Emulator, path: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec![path.display().to_string()];
    a.extend(args(&["--provider", "teleport", "--format", "video", "--endpoint", &emu.api_url(), "--json"]));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// `dir/media` with `count` clips of `base + i` bytes (`clip007.mp4`), and their SHA-256 by name.
fn media(dir: &std::path::Path, count: u64, base: u64) -> (std::path::PathBuf, BTreeMap<String, String>) {
    let media = dir.join("media");
    std::fs::create_dir(&media).unwrap();
    let shas = (0..count)
        .map(|i| {
            let name = format!("clip{i:03}.mp4");
            let sha = make_file(&media, &name, base + i).1;
            (name, sha)
        })
        .collect();
    (media, shas)
}

/// Small parts with latency on every request: the default (auto) grows past the 8 connections
/// it starts with, never past --max-concurrency, and the object is the file byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_concurrency_grows_under_latency_within_the_maximum() {
    let emu = emulator(Config {
        teleport_chunk_size: 256 * 1024,
        min_part_size: 1,
        faults: Faults { latency_ms: 60, ..Faults::default() },
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "scan.mp4", 24 * MIB);
    emu.reset_in_flight_peaks();
    let out =
        run_upload(teleport_args(&emu, &path, &["--max-concurrency", "12", "-v"]), token_env("TELEPORT_TOKEN", &emu))
            .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let objects = emu.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!((objects[0].size, objects[0].parts), (24 * MIB, 96));
    assert_eq!(objects[0].sha256, sha);
    assert!(emu.part_put_counts().values().all(|&n| n == 1), "every part stored once");
    let peak = emu.in_flight_peak("s3");
    assert!(peak > 8, "the PUTs at once never went past the start (8): {peak}\n{}", stderr(&out));
    assert!(peak <= 12, "more PUTs at once ({peak}) than --max-concurrency 12");
    assert!(stderr(&out).contains("concurrency 8 → 12"), "{}", stderr(&out));
}

/// A number pins it: never more PUTs at once than asked for, however well more would do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_pins_the_concurrency() {
    let emu = emulator(Config {
        teleport_chunk_size: 256 * 1024,
        min_part_size: 1,
        faults: Faults { latency_ms: 40, ..Faults::default() },
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "scan.mp4", 8 * MIB);
    emu.reset_in_flight_peaks();
    let env = vec![("TELEPORT_TOKEN".to_string(), emu.token()), ("UPLOAD_CONCURRENCY".to_string(), "3".to_string())];
    let out = run_upload(teleport_args(&emu, &path, &[]), env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(emu.objects()[0].sha256, sha);
    let peak = emu.in_flight_peak("s3");
    assert!((1..=3).contains(&peak), "UPLOAD_CONCURRENCY=3 pins it: {peak} at once");
}

/// S3 answering 503 SlowDown halves the level (the pool is told through the retry), and the
/// parts still arrive once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_down_answers_back_the_concurrency_off() {
    let emu = emulator(Config {
        teleport_chunk_size: 256 * 1024,
        min_part_size: 1,
        faults: Faults { fail_put_nth: vec![2], fail_status: 503, ..Faults::default() },
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "scan.mp4", 4 * MIB);
    let out = run_upload(teleport_args(&emu, &path, &["-v"]), token_env("TELEPORT_TOKEN", &emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(emu.objects()[0].sha256, sha);
    assert!(emu.part_put_counts().values().all(|&n| n == 1));
    let err = stderr(&out);
    assert!(err.contains("throttled by the server (503 SlowDown / 429)"), "{err}");
}

/// 200 small files: more than the old fixed 4 are in flight at once (the API server sees more
/// than 4 requests at once, and each file makes its API calls one after another), and every
/// file arrives once, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_files_go_many_at_a_time() {
    let emu = emulator(Config { faults: Faults { latency_ms: 50, ..Faults::default() }, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (media, shas) = media(dir.path(), 200, 10_000);
    let state = dir.path().join("state");
    let mut env = token_env("TELEPORT_TOKEN", &emu);
    env.push(("XDG_STATE_HOME".into(), state.display().to_string()));
    emu.reset_in_flight_peaks();
    let out = run_upload(teleport_args(&emu, &media, &[]), env.clone()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 200);
    assert!(lines.iter().all(|l| l["status"] == "uploaded"), "{lines:?}");
    let peak = emu.in_flight_peak("api");
    assert!(peak > 4, "at most {peak} API requests at once: files went no more than 4 at a time");
    let most = upload::uploader::AUTO_FILES_MAX;
    assert!(peak <= most, "{peak} API requests at once: more files than --files auto allows ({most})");
    let objects = emu.objects();
    assert_eq!(objects.len(), 200);
    for o in &objects {
        let name = o.key.rsplit('/').next().unwrap();
        assert_eq!(o.sha256, shas[name], "{name}");
    }
    let counts = emu.part_put_counts();
    assert_eq!(counts.len(), 200);
    assert!(counts.values().all(|&n| n == 1), "a part stored twice");
    let captures = upload_emulator::teleport::captures_summary(emu.shared());
    assert_eq!(captures.as_array().unwrap().len(), 200, "one capture per file, none made twice");
    // The run left nothing half done: a rerun skips every file, sending nothing.
    let before = emu.request_log().len();
    let out = run_upload(teleport_args(&emu, &media, &[]), env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).lines().all(|l| l.contains("\"skipped\"")), "{}", stdout(&out));
    assert_eq!(emu.request_log().len(), before);
}

/// `--files N` still pins the files at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_n_pins_the_files_at_once() {
    let emu = emulator(Config { faults: Faults { latency_ms: 30, ..Faults::default() }, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (media, _) = media(dir.path(), 24, 5_000);
    emu.reset_in_flight_peaks();
    let out = run_upload(teleport_args(&emu, &media, &["--files", "2"]), token_env("TELEPORT_TOKEN", &emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(emu.objects().len(), 24);
    let peak = emu.in_flight_peak("api");
    assert!((1..=2).contains(&peak), "--files 2: {peak} API requests at once");
}

/// Small files sent whole take a pool of their own (outside the tuner): S3 answering 503
/// SlowDown halves it too, and every file still arrives once, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_down_answers_back_the_small_files_off() {
    let faults = Faults { fail_put_nth: vec![5], fail_status: 503, ..Faults::default() };
    let emu = emulator(Config { faults, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (media, shas) = media(dir.path(), 40, 5_000);
    let mut env = token_env("TELEPORT_TOKEN", &emu);
    env.push(("XDG_STATE_HOME".into(), dir.path().join("state").display().to_string()));
    let out = run_upload(teleport_args(&emu, &media, &["-v"]), env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("small files at once 64 → 32: the store throttles"), "{err}");
    let objects = emu.objects();
    assert_eq!(objects.len(), 40);
    for o in &objects {
        assert_eq!(o.sha256, shas[o.key.rsplit('/').next().unwrap()]);
    }
    assert!(emu.part_put_counts().values().all(|&n| n == 1), "a part stored twice");
}

/// 2,000 small files, 128 at once, keep the process's threads bounded: the blocking pool
/// (state files' fsyncs, reads) has at most 16 threads, so a file in flight does not cost a
/// thread with its stack and allocator cache. Sampled from `/proc/PID/status` while the run
/// goes (without the bound this run peaked at 27 to 59 threads); every file still arrives,
/// byte for byte.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_files_keep_the_threads_bounded() {
    let emu = emulator(Config { faults: Faults { latency_ms: 20, ..Faults::default() }, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (media, shas) = media(dir.path(), 2000, 4_000);
    let mut env = token_env("TELEPORT_TOKEN", &emu);
    env.push(("XDG_STATE_HOME".into(), dir.path().join("state").display().to_string()));
    let args = teleport_args(&emu, &media, &["--files", "128"]);
    let (peak, out) = tokio::task::spawn_blocking(move || {
        let child = spawn_upload(&args, &env);
        let status = format!("/proc/{}/status", child.id());
        let sampler = std::thread::spawn(move || {
            let mut peak = 0usize;
            while let Ok(s) = std::fs::read_to_string(&status) {
                if s.lines().any(|l| l.starts_with("State:") && l.contains("zombie")) {
                    break;
                }
                let n = s.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok());
                peak = peak.max(n.unwrap_or(0));
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            peak
        });
        let out = child.wait_with_output().unwrap();
        (sampler.join().unwrap(), out)
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().filter(|l| l.contains("\"uploaded\"")).count(), 2000);
    let objects = emu.objects();
    assert_eq!(objects.len(), 2000);
    for o in &objects {
        assert_eq!(o.sha256, shas[o.key.rsplit('/').next().unwrap()]);
    }
    // The async workers (one a core), 16 blocking threads, and a few of the binary's own
    // (terminal, signals): nothing a file at once.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    assert!(peak > 0, "the threads were never sampled");
    assert!(peak <= cores + 16 + 6, "{peak} threads for {cores} cores: the blocking pool is not bounded");
}
