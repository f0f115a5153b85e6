//! Vendor truth (issue 29): where the vendors' docs leave a guess open, the client settles it with
//! the vendor's own answer, or checks it at run time so that a wrong guess fails loudly before
//! bytes go astray. Each test runs the real binary against the emulator (over HTTPS with a CA
//! made by the test where the answers themselves are the point).

use serde_json::Value;

use crate::common::*;

/// The JSON lines of stdout.
fn lines(out: &std::process::Output) -> Vec<Value> {
    stdout(out).lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Requests of the emulator's log matching `method` and a path ending with `suffix`.
fn calls(emu: &Emulator, method: &str, suffix: &str) -> usize {
    emu.request_log().iter().filter(|r| r.method == method && r.path.ends_with(suffix)).count()
}

// ---------------------------------------------------------------- Teleport

/// An HTTPS emulator (5 MiB chunks), a `scan.zip` of `size` bytes, and the upload's arguments.
struct Tls {
    emu: Emulator,
    dir: tempfile::TempDir,
    ca: std::path::PathBuf,
}

impl Tls {
    async fn start(config: Config) -> Tls {
        let dir = tempfile::tempdir().unwrap();
        let (emu, ca) = crate::tls::tls_emulator(dir.path(), config).await;
        Tls { emu, dir, ca }
    }

    /// An upload of `files` to `provider` (`--json`, trusting the test's CA), then `extra`.
    fn upload(&self, provider: &str, files: &[&std::path::Path], extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        a.extend(args(&["--provider", provider, "--endpoint", &self.emu.api_url(), "--json"]));
        a.extend(["--ca-bundle".into(), self.ca.display().to_string()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    fn teleport(&self, files: &[&std::path::Path], extra: &[&str]) -> Vec<String> {
        self.upload("teleport", files, extra)
    }

    /// The token (for every provider) and the runs' shared state home.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("UPLOAD_TOKEN".into(), self.emu.token()),
            ("XDG_STATE_HOME".into(), self.dir.path().join("state").display().to_string()),
        ]
    }
}

fn teleport_config(faults: Faults) -> Config {
    Config { teleport_chunk_size: 5 * MIB, faults, ..Config::default() }
}

/// The emulator's captures (admin view): eid → (state, uploaded, has its object).
fn captures(emu: &Emulator) -> Vec<Value> {
    upload_emulator::teleport::captures_summary(emu.shared()).as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teleport_completion_is_proven_by_uploaded_not_by_the_state() {
    // The completion answers 500 without acting, while the capture is UPLOADING (its part URLs
    // were handed out): a look-up that took "not CREATED" for "completed" would end the run
    // with exit 0 and no object. `uploaded` is null: the completion is sent again.
    let t = Tls::start(teleport_config(Faults { complete_fail_times: 1, ..Faults::default() })).await;
    let (file, sha) = make_file(t.dir.path(), "scan.zip", 6 * MIB);
    let out = run_upload(t.teleport(&[&file], &[]), t.env()).await;
    assert!(out.status.success(), "exit {:?}: {}", out.status.code(), stderr(&out));
    assert_eq!(calls(&t.emu, "POST", "/uploaded"), 2, "sent again after the look-up found uploaded null");
    let objects = t.emu.objects();
    assert_eq!((objects.len(), objects[0].sha256.as_str()), (1, sha.as_str()));
    let caps = captures(&t.emu);
    assert!(caps[0]["uploaded"].is_string(), "{caps:?}");
    assert_eq!(lines(&out)[0]["status"], "UPLOADED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teleport_a_completion_answered_200_without_a_capture_is_looked_up() {
    // (fault, completions sent, exit code): a 200 whose body is not the capture is no success;
    // the look-up decides by `uploaded`.
    let fake = |body: &str| Faults {
        fake_answer: vec![format!("POST /api/v1/captures/*/uploaded 200 {body}")],
        ..Faults::default()
    };
    let cases: Vec<(&str, Faults, usize, i32)> = vec![
        // Answered `null` and did nothing: uploaded is null, sent again, stored.
        ("null, not acted on", fake("null"), 2, 0),
        // Carried out, answered `{"detail": ...}`: uploaded is set, not sent again.
        (
            "detail, acted on",
            Faults {
                replace_answer: vec![r#"POST /api/v1/captures/*/uploaded 200 {"detail":"accepted"}"#.into()],
                ..Faults::default()
            },
            1,
            0,
        ),
        // Every completion answered `{}` without acting: never a success (exit 5), bounded.
        (
            "empty object, never acted on",
            Faults {
                fake_answer: (0..3).map(|_| "POST /api/v1/captures/*/uploaded 200 {}".to_string()).collect(),
                ..Faults::default()
            },
            3,
            5,
        ),
    ];
    for (case, faults, sent, code) in cases {
        let t = Tls::start(teleport_config(faults)).await;
        let (file, sha) = make_file(t.dir.path(), "scan.zip", 6 * MIB);
        let out = run_upload(t.teleport(&[&file], &["--retries", "2"]), t.env()).await;
        assert_eq!(out.status.code(), Some(code), "{case}: {}", stderr(&out));
        assert_eq!(calls(&t.emu, "POST", "/uploaded"), sent, "{case}");
        if code == 0 {
            assert_eq!(t.emu.objects()[0].sha256, sha, "{case}");
            let status = lines(&out)[0]["status"].clone();
            assert!(status == "UPLOADED" || status == "READY", "{case}: {status}");
            assert!(captures(&t.emu)[0]["uploaded"].is_string(), "{case}");
        } else {
            assert!(t.emu.objects().is_empty(), "{case}");
            assert!(stderr(&out).contains("not the capture"), "{case}: {}", stderr(&out));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teleport_a_lost_create_never_adopts_a_capture_this_run_holds() {
    // Two files of the same name, one after the other. The first one's only part fails (twice:
    // `--retries 1`): its capture stays UPLOADING with `uploaded` null, held by this run. The second
    // one's create answers 500 without creating anything: the look-up finds a capture of that
    // name with `uploaded` null, created moments ago, and must not take it.
    let faults = Faults {
        fail_put_nth: vec![1, 2],
        fake_answer: vec![r#"2:POST /api/v1/captures 500 {"detail":"Internal Server Error"}"#.into()],
        ..Faults::default()
    };
    let t = Tls::start(teleport_config(faults)).await;
    for d in ["a", "b"] {
        std::fs::create_dir(t.dir.path().join(d)).unwrap();
    }
    let (a, _) = make_file(&t.dir.path().join("a"), "scan.zip", 1000);
    let (b, sha_b) = make_file(&t.dir.path().join("b"), "scan.zip", 2000);
    let out = run_upload(t.teleport(&[&a, &b], &["--retries", "1", "--files", "1"]), t.env()).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let results = lines(&out);
    let ok: Vec<&Value> = results.iter().filter(|r| r["status"] == "UPLOADED").collect();
    assert_eq!(ok.len(), 1, "{results:?}");
    assert!(ok[0]["file"].as_str().unwrap().ends_with("b/scan.zip"), "{results:?}");
    let caps = captures(&t.emu);
    assert_eq!(caps.len(), 2, "the second create was sent again: {caps:?}");
    let held = caps.iter().find(|c| c["eid"] != ok[0]["eid"]).unwrap();
    assert_eq!((held["state"].as_str(), held["uploaded"].is_null()), (Some("UPLOADING"), true), "{caps:?}");
    let objects = t.emu.objects();
    assert_eq!((objects.len(), objects[0].sha256.as_str()), (1, sha_b.as_str()));
    assert_eq!(objects[0].id, ok[0]["eid"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teleport_a_lost_create_never_adopts_a_capture_another_journal_holds() {
    // Two runs sharing a state directory (two `watch` sub-directories, two cron jobs): the
    // first leaves an unfinished capture `scan.zip` and its journal; the second's create of
    // another `scan.zip` answers 500 without creating anything. The look-up skips the capture
    // the other journal holds and the create is sent again.
    let t = Tls::start(teleport_config(Faults { fail_put_nth: vec![1], ..Faults::default() })).await;
    for d in ["a", "b"] {
        std::fs::create_dir(t.dir.path().join(d)).unwrap();
    }
    let (a, _) = make_file(&t.dir.path().join("a"), "scan.zip", 1000);
    let (b, sha_b) = make_file(&t.dir.path().join("b"), "scan.zip", 2000);
    let out = run_upload(t.teleport(&[&a], &["--retries", "0"]), t.env()).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let first = captures(&t.emu)[0]["eid"].as_str().unwrap().to_string();
    t.emu.set_faults(Faults {
        fake_answer: vec![r#"POST /api/v1/captures 500 {"detail":"Internal Server Error"}"#.into()],
        ..Faults::default()
    });
    let out = run_upload(t.teleport(&[&b], &[]), t.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let eid = lines(&out)[0]["eid"].as_str().unwrap().to_string();
    assert_ne!(eid, first, "adopted the capture of the other journal");
    assert_eq!(captures(&t.emu).len(), 2);
    let objects = t.emu.objects();
    assert_eq!((objects.len(), objects[0].sha256.as_str(), objects[0].id.as_str()), (1, sha_b.as_str(), eid.as_str()));
}

// ---------------------------------------------------------------- TruVideo

fn truvideo_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["--part-size", "5MiB", "--poll-interval", "100ms", "--wait-timeout", "60s"];
    a.extend_from_slice(extra);
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truvideo_a_url_for_another_part_is_refused_before_a_byte_is_sent() {
    // The server numbers its additional URLs otherwise than this tool reads the docs: asked
    // for "the next N", it hands out parts 1..=N without `partNumber`. Part 2's URL says
    // partNumber=1: refused before sending, so part 1's object part is never overwritten.
    let t =
        Tls::start(Config { truvideo_initial_urls: 1, truvideo_more_urls_from_one: true, ..Config::default() }).await;
    let (file, _) = make_file(t.dir.path(), "clip.mp4", 2 * 5 * MIB + 1000);
    let out = run_upload(t.upload("truvideo", &[&file], &truvideo_args(&["--concurrency", "1"])), t.env()).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("truvideo: unexpected answer to presigned URL for part 2")
            && err.contains("is for part 1 (partNumber=1): not sent"),
        "{err}"
    );
    // At most part 1's own PUT reached the store (it may be cut off by the failure), never a
    // second one carrying part 2's bytes.
    let s3_puts = t.emu.request_log().iter().filter(|r| r.server == "s3" && r.method == "PUT").count();
    assert!(s3_puts <= 1, "{:?}", t.emu.request_log());
    assert!(t.emu.part_put_counts().iter().all(|((_, n), c)| *n == 1 && *c == 1), "{:?}", t.emu.part_put_counts());
    assert_eq!(calls(&t.emu, "POST", "/complete"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truvideo_url_entries_with_text_part_numbers_and_epoch_times() {
    let t = Tls::start(Config { truvideo_initial_urls: 1, truvideo_text_numbers: true, ..Config::default() }).await;
    let size = 2 * 5 * MIB + 1000;
    let (file, sha) = make_file(t.dir.path(), "clip.mp4", size);
    let out = run_upload(t.upload("truvideo", &[&file], &truvideo_args(&[])), t.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lines(&out)[0]["status"], "COMPLETED");
    let objects = t.emu.objects();
    assert_eq!((objects[0].size, objects[0].sha256.as_str(), objects[0].parts), (size, sha.as_str(), 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truvideo_a_start_without_urls_is_logged_and_every_url_asked() {
    let t = Tls::start(Config { truvideo_initial_urls: 0, ..Config::default() }).await;
    let size = 5 * MIB + 1000;
    let (file, sha) = make_file(t.dir.path(), "clip.mp4", size);
    let out = run_upload(t.upload("truvideo", &[&file], &truvideo_args(&["-v"])), t.env()).await;
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("start answered no presigned URLs"), "{err}");
    assert_eq!(calls(&t.emu, "GET", "/parts"), 1);
    assert_eq!(t.emu.objects()[0].sha256, sha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truvideo_a_404_from_the_parts_path_is_not_taken_for_a_gone_upload() {
    // A first run stops after part 1 (part 2's PUT fails, no retry). The rerun resumes; the
    // additional-URLs path (a guess) answers 404, but GET /upload/{id} shows the upload: the
    // rerun stops with a protocol error and keeps the journal instead of silently starting a
    // new upload. A third run, with the path answering again, finishes the same upload.
    let t = Tls::start(Config {
        truvideo_initial_urls: 1,
        faults: Faults { fail_put_nth: vec![2], ..Faults::default() },
        ..Config::default()
    })
    .await;
    let size = 2 * 5 * MIB + 1000;
    let (file, sha) = make_file(t.dir.path(), "clip.mp4", size);
    let cmd = t.upload("truvideo", &[&file], &truvideo_args(&["--concurrency", "1", "--retries", "0"]));
    let out = run_upload(cmd.clone(), t.env()).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let id = upload_emulator::truvideo::uploads_summary(t.emu.shared())[0]["uploadId"].as_str().unwrap().to_string();
    t.emu.set_faults(Faults {
        fake_answer: vec![
            r#"GET /upload/*/parts 404 {"status":404,"error":"Not Found","message":"No static resource"}"#.into(),
        ],
        ..Faults::default()
    });
    let out = run_upload(cmd.clone(), t.env()).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("/parts answered 404") && err.contains("is not taken for gone"), "{err}");
    assert_eq!(calls(&t.emu, "POST", "/upload/start"), 1, "a new upload was started");
    t.emu.set_faults(Faults::default());
    let out = run_upload(cmd, t.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lines(&out)[0]["uploadId"], id.as_str());
    assert_eq!(calls(&t.emu, "POST", "/upload/start"), 1);
    assert_eq!(t.emu.objects()[0].sha256, sha);
}

// ---------------------------------------------------------------- Uplift

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplift_wait_follows_the_capture_to_its_end() {
    use upload_emulator::Processing;
    // (processing, --wait-timeout, exit code, what the run says)
    let cases = [
        (Processing { delay_ms: 600, fail_reason: None }, "60s", 0, "completed"),
        (Processing { delay_ms: 300, fail_reason: Some("no golfer in view".into()) }, "60s", 6, "no golfer in view"),
        (Processing { delay_ms: 60_000, fail_reason: None }, "1s", 7, "last status processing"),
    ];
    for (processing, timeout, code, says) in cases {
        let t = Tls::start(Config { processing, ..Config::default() }).await;
        let (file, sha) = make_file(t.dir.path(), "swing.mov", 300_000);
        let mut extra = UPLIFT_FIELDS.to_vec();
        extra.extend(["--wait", "--poll-interval", "100ms", "--wait-timeout", timeout]);
        let out = run_upload(t.upload("uplift", &[&file], &extra), t.env()).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{says}: {err}");
        assert_eq!(t.emu.objects()[0].sha256, sha, "the file is stored whatever processing says");
        let gets = calls(&t.emu, "GET", &uplift_capture_id(&t.emu));
        assert!(gets >= 1, "{says}: the capture was never read");
        if code == 0 {
            let r = &lines(&out)[0];
            assert_eq!((r["status"].as_str(), r["wait"].as_str()), (Some("completed"), Some("completed")), "{r}");
            assert!(gets >= 2, "processing was followed: {gets} reads");
        } else {
            assert!(err.contains(says), "{says}: {err}");
        }
    }
}

/// The one Uplift capture's id (its `session_id`).
fn uplift_capture_id(emu: &Emulator) -> String {
    upload_emulator::uplift::captures(emu.shared())[0].session_id.clone()
}
