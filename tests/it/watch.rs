//! `upload watch`: files taken once complete (closed and settled, or renamed in), each
//! uploaded once, after-upload moves, resume after kill -9, bulk-images captures, SIGTERM,
//! `--once`. The real binary against the in-process emulator.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::common::*;

const LONG: Duration = Duration::from_secs(120);

/// A watcher running in the background; its stdout lines and stderr are collected as they come.
struct Watch {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
    err: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(a: &[String], env: &[(String, String)]) -> Watch {
        let mut child = spawn_upload(a, env);
        let lines = Arc::new(Mutex::new(vec![]));
        let err = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let l2 = lines.clone();
        let r1 = std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(|l| l.ok()) {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                l2.lock().unwrap().push(v);
            }
        });
        let se = child.stderr.take().unwrap();
        let e2 = err.clone();
        let r2 = std::thread::spawn(move || {
            for line in std::io::BufReader::new(se).lines().map_while(|l| l.ok()) {
                let mut e = e2.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        });
        Watch { child, lines, err, readers: vec![r1, r2] }
    }

    fn lines(&self) -> Vec<serde_json::Value> {
        self.lines.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    fn uploaded(&self) -> Vec<serde_json::Value> {
        self.lines().into_iter().filter(|l| l["status"] == "uploaded").collect()
    }

    /// Waits until `pred` holds on the lines (panics after `LONG`, or when the watcher exits).
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&[serde_json::Value]) -> bool) {
        let t0 = Instant::now();
        loop {
            if pred(&self.lines()) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the watcher exited ({status}) before {what}: {}\n{:?}", self.stderr(), self.lines());
            }
            assert!(t0.elapsed() < LONG, "timed out waiting for {what}: {}\n{:?}", self.stderr(), self.lines());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    /// Waits for the exit (at most `LONG`) and returns the exit status and how long it took.
    async fn exit(mut self) -> (std::process::ExitStatus, Duration, String) {
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if t0.elapsed() > LONG {
                let _ = self.child.kill();
                panic!("the watcher did not exit: {}", self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        (status, t0.elapsed(), self.stderr())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn env(emu: &Emulator, state: &Path) -> Vec<(String, String)> {
    vec![("TELEPORT_TOKEN".into(), emu.token()), ("XDG_STATE_HOME".into(), state.display().to_string())]
}

fn watch_args(dir: &Path, emu: &Emulator, extra: &[&str]) -> Vec<String> {
    let mut a =
        args(&["watch", dir.to_str().unwrap(), "--provider", "teleport", "--endpoint", &emu.api_url(), "--json"]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn creates(emu: &Emulator) -> usize {
    emu.request_log().iter().filter(|r| r.method == "POST" && r.path == "/api/v1/captures" && r.status < 300).count()
}

fn name_of(line: &serde_json::Value) -> String {
    Path::new(line["file"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowly_written_file_is_uploaded_once_after_its_writer_closed_it() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let mut w = Watch::start(&watch_args(&inbox, &emu, &["--settle", "300ms"]), &env(&emu, &dir.path().join("s")));
    w.wait_for("the watcher to start", |_| true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // ~3 s of appends every 100 ms, with a pause of 1.5 s (five times --settle) in the middle:
    // the file is still open, so it is not complete.
    let path = inbox.join("slow.mp4");
    let mut all = vec![];
    {
        let mut f = std::fs::File::create(&path).unwrap();
        for i in 0..30u32 {
            let chunk: Vec<u8> = (0..10_000u32).map(|j| (i * 31 + j) as u8).collect();
            f.write_all(&chunk).unwrap();
            f.flush().unwrap();
            all.extend_from_slice(&chunk);
            tokio::time::sleep(Duration::from_millis(if i == 15 { 1500 } else { 100 })).await;
        }
        assert_eq!(emu.objects().len(), 0, "uploaded while its writer still had it open: {}", w.stderr());
        assert!(w.lines().is_empty(), "{:?}", w.lines());
    }
    w.wait_for("the upload", |l| !l.is_empty()).await;
    // Give it time to (wrongly) upload it again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines = w.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["status"], "uploaded", "{lines:?}");
    assert_eq!(lines[0]["bytes"], all.len() as u64);
    let objects = emu.objects();
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0].sha256, sha(&all), "the stored object is not the whole file");
    assert_eq!(creates(&emu), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_renamed_into_the_folder_is_taken_at_once() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    // --settle 10 min: only the rename can make it complete within the test.
    let mut w = Watch::start(&watch_args(&inbox, &emu, &["--settle", "10m"]), &env(&emu, &dir.path().join("s")));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (tmp, want) = make_file(dir.path(), "walk.mp4", 200_000);
    let t0 = Instant::now();
    std::fs::rename(&tmp, inbox.join("walk.mp4")).unwrap();
    w.wait_for("the renamed file's upload", |l| !l.is_empty()).await;
    assert!(t0.elapsed() < Duration::from_secs(60), "took {:?}", t0.elapsed());
    let lines = w.lines();
    assert_eq!(lines[0]["status"], "uploaded", "{lines:?}");
    assert_eq!(name_of(&lines[0]), "walk.mp4");
    let objects = emu.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].sha256, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_files_dropped_while_running_are_each_uploaded_once_and_moved() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let done = dir.path().join("done");
    let mut w = Watch::start(
        &watch_args(
            &inbox,
            &emu,
            &["--settle", "300ms", "--recursive", "--after-upload", &format!("move:{}", done.display())],
        ),
        &env(&emu, &dir.path().join("s")),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut want = std::collections::BTreeMap::new();
    for i in 0..50u64 {
        let rel = match i % 3 {
            0 => PathBuf::from(format!("f{i:02}.mp4")),
            1 => PathBuf::from(format!("day1/f{i:02}.mp4")),
            _ => PathBuf::from(format!("day2/cam/f{i:02}.zip")),
        };
        let parent = inbox.join(&rel).parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&parent).unwrap();
        let (_, h) = make_file(&parent, rel.file_name().unwrap().to_str().unwrap(), 5_000 + i * 101);
        want.insert(rel, h);
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    std::fs::write(inbox.join("day1/notes.txt"), b"not a capture").unwrap();
    w.wait_for("50 uploads", |l| l.iter().filter(|l| l["status"] == "uploaded").count() >= 50).await;
    // Let any second upload (a bug) show up before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines = w.uploaded();
    assert_eq!(lines.len(), 50, "{lines:?}");
    let others: Vec<_> = w.lines().into_iter().filter(|l| l["status"] != "uploaded").collect();
    assert_eq!(others.len(), 1, "the stray file is reported once: {others:?}");
    assert_eq!((name_of(&others[0]).as_str(), others[0]["status"].as_str()), ("notes.txt", Some("skipped")));
    assert!(inbox.join("day1/notes.txt").exists(), "a file not uploaded is not moved");
    assert_eq!(creates(&emu), 50, "each file creates one capture");
    let objects = emu.objects();
    assert_eq!(objects.len(), 50);
    let stored: std::collections::BTreeSet<String> = objects.iter().map(|o| o.sha256.clone()).collect();
    for (rel, h) in &want {
        assert!(stored.contains(h), "{} was not stored byte-exact", rel.display());
        let moved = done.join(rel);
        assert!(moved.is_file(), "{} is not under done/ with its relative path", rel.display());
        assert_eq!(sha(&std::fs::read(&moved).unwrap()), *h);
        assert!(!inbox.join(rel).exists(), "{} still in the inbox", rel.display());
    }
    w.signal("-TERM");
    let (status, _, err) = w.exit().await;
    assert_eq!(status.code(), Some(0), "{err}");
}

/// Waits until some journal records at least `parts` parts.
async fn wait_for_journal_parts(state_home: &Path, parts: usize) -> Vec<u64> {
    let t0 = Instant::now();
    loop {
        for j in journals(state_home) {
            let done: Vec<u64> = j["parts"].as_array().unwrap().iter().map(|p| p["number"].as_u64().unwrap()).collect();
            if done.len() >= parts {
                return done;
            }
        }
        assert!(t0.elapsed() < LONG, "no journal progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_sigkill_then_restarted_finishes_and_misses_nothing() {
    // 6 parts of 5 MiB at 8 MiB/s on one connection: about 4 s.
    let faults = Faults { bandwidth_bps: 8 * MIB, ..Faults::default() };
    let emu = emulator(Config { faults, teleport_chunk_size: 5 * MIB, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let state = dir.path().join("s");
    let (_, big) = make_file(&inbox, "big.mp4", 6 * 5 * MIB);
    let (_, small) = make_file(&inbox, "small.mp4", 70_000);
    let a = watch_args(&inbox, &emu, &["--settle", "300ms", "--concurrency", "1", "--files", "2"]);
    let mut w = Watch::start(&a, &env(&emu, &state));
    w.wait_for("the small file", |l| l.iter().any(|l| name_of(l) == "small.mp4")).await;
    let recorded = wait_for_journal_parts(&state, 2).await;
    w.signal("-KILL");
    let _ = w.exit().await;

    // Two files arrive while the watcher is down.
    let (_, c) = make_file(&inbox, "c.mp4", 123_456);
    let (_, d) = make_file(&inbox, "d.zip", 65_432);
    emu.set_faults(Faults::default());
    let mut w = Watch::start(&a, &env(&emu, &state));
    w.wait_for("the three other files", |l| {
        ["big.mp4", "c.mp4", "d.zip"].iter().all(|n| l.iter().any(|x| x["status"] == "uploaded" && name_of(x) == *n))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lines = w.lines();
    assert!(lines.iter().any(|l| name_of(l) == "small.mp4" && l["status"] == "skipped"), "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l["status"] == "uploaded").count(), 3, "{lines:?}");
    let objects = emu.objects();
    assert_eq!(objects.len(), 4, "{objects:?}");
    let stored: std::collections::BTreeSet<String> = objects.iter().map(|o| o.sha256.clone()).collect();
    for h in [&big, &small, &c, &d] {
        assert!(stored.contains(h));
    }
    assert_eq!(creates(&emu), 4, "the interrupted upload was resumed, not created again");
    let big_id = objects.iter().find(|o| o.sha256 == big).unwrap().id.clone();
    for ((id, part), n) in emu.part_put_counts() {
        if id == big_id && recorded.contains(&(part as u64)) {
            assert_eq!(n, 1, "part {part} was recorded before the kill, yet sent again");
        } else {
            // A part whose answer raced the kill may have landed without being recorded.
            assert!(n <= 2, "part {part} of {id} sent {n} times");
        }
    }
    assert!(journals(&state).is_empty(), "{:?}", journals(&state));
    w.signal("-TERM");
    let (status, _, err) = w.exit().await;
    assert_eq!(status.code(), Some(0), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_images_directory_is_one_capture_and_a_new_one_only_when_it_changes() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let captures = dir.path().join("captures");
    let c1 = captures.join("lobby");
    std::fs::create_dir_all(c1.join("sub")).unwrap();
    let mut w = Watch::start(
        &watch_args(&captures, &emu, &["--settle", "400ms", "--format", "bulk-images", "--recursive"]),
        &env(&emu, &dir.path().join("s")),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    for i in 0..6 {
        make_file(&c1, &format!("img{i}.jpg"), 20_000 + i);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    make_file(&c1.join("sub"), "z.png", 9_999);
    w.wait_for("the capture", |l| !l.is_empty()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.uploaded().len(), 1, "{:?}", w.lines());
    let objects = emu.objects();
    assert_eq!(objects.len(), 1, "one zip for the whole directory: {objects:?}");
    let zip = emu.object_bytes(&objects[0].key).unwrap();
    let names: Vec<String> = {
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
        (0..z.len()).map(|i| z.by_index(i).unwrap().name().unwrap().to_string()).collect()
    };
    assert_eq!(names.len(), 7, "{names:?}");
    assert!(names.contains(&"sub/z.png".to_string()), "{names:?}");

    // A change of permissions is no new content: no new capture.
    {
        let mut p = std::fs::metadata(c1.join("img0.jpg")).unwrap().permissions();
        p.set_readonly(true);
        std::fs::set_permissions(c1.join("img0.jpg"), p).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(emu.objects().len(), 1);
    // A new image: a new capture with it.
    make_file(&c1, "img9.jpg", 33_333);
    w.wait_for("the second capture", |l| l.iter().filter(|l| l["status"] == "uploaded").count() >= 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.uploaded().len(), 2, "{:?}", w.lines());
    assert_eq!(emu.objects().len(), 2);
    assert_eq!(creates(&emu), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_parts_in_flight_finish_and_exits_0_with_a_summary() {
    let faults = Faults { bandwidth_bps: 4 * MIB, ..Faults::default() };
    let emu = emulator(Config { faults, teleport_chunk_size: 5 * MIB, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let state = dir.path().join("s");
    make_file(&inbox, "big.mp4", 8 * 5 * MIB);
    let mut w =
        Watch::start(&watch_args(&inbox, &emu, &["--settle", "300ms", "--concurrency", "2"]), &env(&emu, &state));
    wait_for_journal_parts(&state, 1).await;
    w.wait_for("running", |_| true).await;
    w.signal("-TERM");
    let (status, took, err) = w.exit().await;
    assert_eq!(status.code(), Some(0), "{err}");
    // The drain is 5 s; generous bound for a loaded machine.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(err.contains("0 uploaded, 0 skipped, 0 failed"), "{err}");
    assert!(err.contains("resume when the watcher starts again"), "{err}");
    assert_eq!(journals(&state).len(), 1, "the journal is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_scans_waits_for_settle_and_exits_with_the_worst_code() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let state = dir.path().join("s");
    let (_, a) = make_file(&inbox, "a.mp4", 10_000);
    let (_, b) = make_file(&inbox, "b.zip", 20_000);
    make_file(&inbox, "notes.txt", 10);
    let once = watch_args(&inbox, &emu, &["--settle", "300ms", "--once"]);
    let out = run_upload(once.clone(), env(&emu, &state)).await;
    assert_eq!(out.status.code(), Some(0), "a stray .txt does not fail the run: {}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let txt: Vec<_> = lines.iter().filter(|l| name_of(l) == "notes.txt").collect();
    assert_eq!(txt.len(), 1, "{lines:?}");
    assert_eq!(txt[0]["status"], "skipped");
    assert!(txt[0]["reason"].as_str().unwrap().contains(".txt"), "{lines:?}");
    let stored: std::collections::BTreeSet<String> = emu.objects().iter().map(|o| o.sha256.clone()).collect();
    assert_eq!(stored, [a, b].into_iter().collect());
    // Again: nothing new is uploaded.
    let plain: Vec<&str> = once.iter().map(String::as_str).filter(|a| *a != "--json").collect();
    let out = run_upload(args(&plain), env(&emu, &state)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("0 uploaded, 3 skipped, 0 failed"), "{}", stderr(&out));
    // The files already uploaded are told once, as a count; -v names each.
    let err = stderr(&out);
    assert_eq!(
        err.matches("upload: watch: 2 files already uploaded, not sent again (-v lists them)").count(),
        1,
        "{err}"
    );
    assert!(!err.contains("skipped: already uploaded"), "{err}");
    let out = run_upload(args(&[&plain[..], &["-v"]].concat()), env(&emu, &state)).await;
    assert_eq!(stderr(&out).matches("skipped: already uploaded").count(), 2, "{}", stderr(&out));
    // A failing upload: the worst file's exit code.
    let (_, _) = make_file(&inbox, "c.mp4", 30_000);
    emu.set_faults(Faults { fail_put_nth: (1..=50).collect(), ..Faults::default() });
    let out = run_upload(args(&[&plain[..], &["--retries", "0"]].concat()), env(&emu, &state)).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("0 uploaded, 3 skipped, 1 failed"), "{}", stderr(&out));
    assert_eq!(creates(&emu), 3);
}

/// `watch --once` (a cron job) over a directory with a dangling symlink: the good file is
/// uploaded, the link is reported by path (`failed`, exit code 2), and the run exits 2: the scan
/// is no longer discarded whole. A second run skips the uploaded file and reports the link again.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_reports_a_walk_error_and_uploads_the_rest() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let state = dir.path().join("s");
    let (_, a) = make_file(&inbox, "a.mp4", 10_000);
    std::os::unix::fs::symlink("nowhere.mp4", inbox.join("broken.mp4")).unwrap();
    let once = watch_args(&inbox, &emu, &["--settle", "200ms", "--once"]);
    for round in 0..2 {
        let out = run_upload(once.clone(), env(&emu, &state)).await;
        assert_eq!(out.status.code(), Some(2), "round {round}: {}", stderr(&out));
        let lines: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let broken: Vec<_> = lines.iter().filter(|l| name_of(l) == "broken.mp4").collect();
        assert_eq!(broken.len(), 1, "reported once: {lines:?}");
        assert_eq!((broken[0]["status"].as_str(), broken[0]["exit_code"].as_u64()), (Some("failed"), Some(2)));
        let good = lines.iter().find(|l| name_of(l) == "a.mp4").expect("a line for a.mp4");
        assert_eq!(good["status"], if round == 0 { "uploaded" } else { "skipped" }, "{lines:?}");
    }
    assert_eq!(emu.objects().iter().map(|o| o.sha256.clone()).collect::<Vec<_>>(), vec![a]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_finds_new_files_without_inotify() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let mut w = Watch::start(
        &watch_args(&inbox, &emu, &["--settle", "300ms", "--poll", "200ms"]),
        &env(&emu, &dir.path().join("s")),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, want) = make_file(&inbox, "late.mp4", 80_000);
    w.wait_for("the polled file", |l| !l.is_empty()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.uploaded().len(), 1, "{:?}", w.lines());
    let objects = emu.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].sha256, want);
    assert!(w.stderr().contains("scanning every"), "{}", w.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_config_file_and_a_failed_file_waits_for_its_retry() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[teleport]\ntoken = \"not-the-token\"\n").unwrap();
    let env = vec![
        ("UPLOAD_CONFIG".to_string(), config.display().to_string()),
        ("XDG_STATE_HOME".to_string(), dir.path().join("s").display().to_string()),
    ];
    let mut w = Watch::start(&watch_args(&inbox, &emu, &["--settle", "300ms", "--retry-failed-after", "1h"]), &env);
    tokio::time::sleep(Duration::from_millis(800)).await;
    make_file(&inbox, "a.mp4", 10_000);
    w.wait_for("the refused token", |l| !l.is_empty()).await;
    let first = w.lines();
    assert_eq!((first[0]["status"].as_str(), first[0]["exit_code"].as_u64()), (Some("failed"), Some(3)), "{first:?}");
    // The notice goes to stderr, read apart from stdout's lines: it may come a moment later.
    let t0 = Instant::now();
    while !w.stderr().contains("will be tried again in 1h") {
        assert!(t0.elapsed() < LONG, "{}", w.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    std::fs::write(&config, format!("[teleport]\ntoken = \"{}\"\n", emu.token())).unwrap();
    w.signal("-HUP");
    let t0 = Instant::now();
    while !w.stderr().contains("configuration re-read") {
        assert!(t0.elapsed() < LONG, "{}", w.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, want) = make_file(&inbox, "b.mp4", 20_000);
    w.wait_for("the upload with the new token", |l| l.iter().any(|l| l["status"] == "uploaded")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let up = w.uploaded();
    assert_eq!(up.len(), 1, "a.mp4 waits for its retry time: {:?}", w.lines());
    assert_eq!(name_of(&up[0]), "b.mp4");
    assert_eq!(w.lines().len(), 2, "{:?}", w.lines());
    assert_eq!(emu.objects()[0].sha256, want);
    w.signal("-TERM");
    let (status, _, err) = w.exit().await;
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("1 uploaded, 0 skipped, 1 failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_file_marks_a_capture_complete_without_waiting_for_settle() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let captures = dir.path().join("captures");
    std::fs::create_dir_all(&captures).unwrap();
    let mut w = Watch::start(
        &watch_args(
            &captures,
            &emu,
            &["--settle", "10m", "--format", "bulk-images", "--recursive", "--ready-file", "READY"],
        ),
        &env(&emu, &dir.path().join("s")),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let shot = captures.join("shot1");
    std::fs::create_dir(&shot).unwrap();
    for i in 0..3 {
        make_file(&shot, &format!("p{i}.jpg"), 11_000 + i);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(w.lines().is_empty(), "taken before it settled or was marked: {:?}", w.lines());
    std::fs::write(shot.join("READY"), b"").unwrap();
    w.wait_for("the marked capture", |l| !l.is_empty()).await;
    assert_eq!(w.uploaded().len(), 1, "{:?}", w.lines());
    let objects = emu.objects();
    assert_eq!(objects.len(), 1);
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(emu.object_bytes(&objects[0].key).unwrap())).unwrap();
    assert_eq!(z.len(), 3, "the images, not the marker");
    assert!(z.by_name("READY").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_found_open_at_start_waits_for_its_writer() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let path = inbox.join("early.mp4");
    let mut f = std::fs::File::create(&path).unwrap();
    let first: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    f.write_all(&first).unwrap();
    f.flush().unwrap();
    // Idle for longer than --settle before the watcher starts, still open.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut w = Watch::start(&watch_args(&inbox, &emu, &["--settle", "300ms"]), &env(&emu, &dir.path().join("s")));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(w.lines().is_empty(), "taken while its writer had it open: {:?}", w.lines());
    let rest: Vec<u8> = (0..30_000u32).map(|i| (i % 13) as u8).collect();
    f.write_all(&rest).unwrap();
    drop(f);
    w.wait_for("the upload after the close", |l| !l.is_empty()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.uploaded().len(), 1, "{:?}", w.lines());
    let objects = emu.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].sha256, sha(&[first, rest].concat()));
}

/// macOS (FSEvents) and Windows (ReadDirectoryChangesW) say nothing of closing: there the
/// watcher decides by `--settle` and by asking the system whether a writer still has the file
/// open. `UPLOAD_WATCH_NO_CLOSE_EVENTS=1` makes Linux decide that way: a file created after
/// the start, written with a pause longer than `--settle`, is taken once, after its writer
/// closed it (before, such a file stayed "open" for ever: never uploaded on macOS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_close_events_a_file_written_after_start_is_taken_once_its_writer_closed_it() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let mut env = env(&emu, &dir.path().join("s"));
    env.push(("UPLOAD_WATCH_NO_CLOSE_EVENTS".into(), "1".into()));
    let mut w = Watch::start(&watch_args(&inbox, &emu, &["--settle", "300ms"]), &env);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let path = inbox.join("late.mp4");
    let mut all = vec![];
    {
        let mut f = std::fs::File::create(&path).unwrap();
        for i in 0..12u32 {
            let chunk: Vec<u8> = (0..10_000u32).map(|j| (i * 17 + j) as u8).collect();
            f.write_all(&chunk).unwrap();
            f.flush().unwrap();
            all.extend_from_slice(&chunk);
            // A pause of five times --settle, the file still open.
            tokio::time::sleep(Duration::from_millis(if i == 6 { 1500 } else { 100 })).await;
        }
        assert_eq!(emu.objects().len(), 0, "uploaded while its writer still had it open: {}", w.stderr());
    }
    w.wait_for("the upload", |l| !l.is_empty()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines = w.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["status"], "uploaded", "{lines:?}");
    let objects = emu.objects();
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0].sha256, sha(&all), "the stored object is not the whole file");
}

/// `--after-upload move:` to another file system (another drive on Windows) copies the file,
/// syncs the copy, then removes the original; nothing is left half-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_upload_move_to_another_file_system_copies_then_removes() {
    let dir = tempfile::tempdir().unwrap();
    let Ok(other) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("no /dev/shm here: the cross-device move is not exercised");
        return;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata(dir.path()).unwrap().dev() == std::fs::metadata(other.path()).unwrap().dev() {
            eprintln!("/dev/shm is on the same file system as the temp dir: the cross-device move is not exercised");
            return;
        }
    }
    let emu = emulator(Config::default()).await;
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(inbox.join("sub")).unwrap();
    let (a, a_sha) = make_file(&inbox, "a.mp4", 70_000);
    let (b, b_sha) = make_file(&inbox.join("sub"), "b.mp4", 30_000);
    let done = other.path().join("done");
    let once = watch_args(
        &inbox,
        &emu,
        &["--settle", "200ms", "--once", "--recursive", "--after-upload", &format!("move:{}", done.display())],
    );
    let out = run_upload(once, env(&emu, &dir.path().join("s"))).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("--after-upload failed"), "{}", stderr(&out));
    assert!(!a.exists() && !b.exists(), "the originals are removed");
    assert_eq!(sha(&std::fs::read(done.join("a.mp4")).unwrap()), a_sha);
    assert_eq!(sha(&std::fs::read(done.join("sub/b.mp4")).unwrap()), b_sha);
    let left: Vec<_> = std::fs::read_dir(&done).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 2, "no temporary file is left: {left:?}");
    let stored: std::collections::BTreeSet<String> = emu.objects().iter().map(|o| o.sha256.clone()).collect();
    assert_eq!(stored, [a_sha, b_sha].into_iter().collect());
}

/// A folder of many complete files keeps `--files` busy: the next file starts as soon as one
/// ends, not at the next tick (once a second at the default settle: 40 files one at a time
/// took 40 s, one wave a tick, before). Every file once, byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_complete_files_go_back_to_back_not_one_wave_a_tick() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let mut want = std::collections::BTreeSet::new();
    for i in 0..40 {
        let (path, sha) = make_file(&inbox, &format!("clip-{i:02}.mp4"), 4096 + i);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(an_hour_ago).unwrap();
        want.insert(sha);
    }
    let t0 = Instant::now();
    let mut w = Watch::start(&watch_args(&inbox, &emu, &["--files", "1"]), &env(&emu, &dir.path().join("s")));
    w.wait_for("40 uploads", |l| l.iter().filter(|l| l["status"] == "uploaded").count() >= 40).await;
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(25), "40 files one at a time took {took:?}: {}", w.stderr());
    let got: std::collections::BTreeSet<String> = emu.objects().into_iter().map(|o| o.sha256).collect();
    assert_eq!((emu.objects().len(), got), (40, want), "each file stored once, byte-exact");
    assert_eq!(creates(&emu), 40);
}
