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
    assert_eq!(lines(&out)[0]["status"], "uploaded");
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
            assert!(status == "uploaded" || status == "ready", "{case}: {status}");
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
    let ok: Vec<&Value> = results.iter().filter(|r| r["status"] == "uploaded").collect();
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
    assert_eq!(lines(&out)[0]["status"], "completed");
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

// ---------------------------------------------------------------- Apertur

fn apertur_config(apertur: upload_emulator::apertur::AperturConfig, faults: Faults) -> Config {
    Config { apertur, faults, ..Config::default() }
}

fn images(dir: &std::path::Path, n: usize) -> Vec<(std::path::PathBuf, String)> {
    (0..n).map(|i| make_file(dir, &format!("img{i}.jpg"), 20_000 + i as u64)).collect()
}

fn apertur_sessions(emu: &Emulator) -> Vec<Value> {
    emu.shared().apertur.sessions_summary().as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apertur_a_long_run_outlives_its_expired_session() {
    // Each session expires once it holds 2 images (a stand-in for its 24 h running out): the
    // third image is answered 410, a new session with the same options is opened (said once),
    // and --wait follows the deliveries of both sessions.
    let cfg = upload_emulator::apertur::AperturConfig { expire_after_images: Some(2), ..Default::default() };
    let t = Tls::start(apertur_config(cfg, Faults::default())).await;
    let files = images(t.dir.path(), 4);
    let paths: Vec<&std::path::Path> = files.iter().map(|(p, _)| p.as_path()).collect();
    let extra = ["--concurrency", "1", "--files", "1", "--tag", "site:7", "--wait", "--poll-interval", "100ms"];
    let out = run_upload(t.upload("apertur", &paths, &extra), t.env()).await;
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let sessions = apertur_sessions(&t.emu);
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert!(
        sessions
            .iter()
            .all(|s| s["tags"] == serde_json::json!(["site:7"]) && s["images"].as_array().unwrap().len() == 2)
    );
    let said = format!(
        "session {} has expired; opened session {} with the same options",
        sessions[0]["id"].as_str().unwrap(),
        sessions[1]["id"].as_str().unwrap()
    );
    assert_eq!(err.matches(&said).count(), 1, "{err}");
    let stored: std::collections::BTreeSet<String> = t.emu.objects().into_iter().map(|o| o.sha256).collect();
    assert_eq!(stored, files.iter().map(|(_, sha)| sha.clone()).collect());
    // Both sessions' deliveries were followed.
    for s in &sessions {
        let path = format!("/api/v1/upload-sessions/{}/delivery-status", s["id"].as_str().unwrap());
        assert!(t.emu.request_log().iter().any(|r| r.path == path), "{path} never read");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apertur_a_lost_image_answer_is_settled_by_the_uploads_list() {
    // (fault, image POSTs sent): stored but the answer lost → found in the list, not sent
    // again; answered 500 without storing → not in the list, sent again. Stored once each way.
    let cases = [
        (Faults { lose_answer: vec!["POST /api/v1/upload/*/images".into()], ..Faults::default() }, 1),
        (
            Faults {
                fake_answer: vec![
                    r#"POST /api/v1/upload/*/images 500 {"message":"Internal error","code":"INTERNAL"}"#.into(),
                ],
                ..Faults::default()
            },
            2,
        ),
    ];
    for (faults, posts) in cases {
        let t = Tls::start(apertur_config(Default::default(), faults)).await;
        let files = images(t.dir.path(), 1);
        let out = run_upload(t.upload("apertur", &[&files[0].0], &[]), t.env()).await;
        assert!(out.status.success(), "{posts}: {}", stderr(&out));
        assert_eq!(calls(&t.emu, "POST", "/images"), posts);
        assert!(calls(&t.emu, "GET", "/api/v1/uploads") >= 1, "the uploads list was not read");
        let objects = t.emu.objects();
        assert_eq!((objects.len(), objects[0].sha256.as_str()), (1, files[0].1.as_str()));
        let r = &lines(&out)[0];
        assert_eq!(r["image_id"].as_str(), Some(objects[0].id.as_str()), "{r}");
        if posts == 1 {
            assert_eq!(r["found_by"], "GET /api/v1/uploads", "{r}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apertur_sdk_words_and_a_wait_asked_in_the_body() {
    // The SDK's delivery words (`sent`, `retrying`) end a --wait as delivered; a 429 whose
    // body says `retryAfter: 2` (no Retry-After header) is waited for before the image goes
    // again.
    let cfg = upload_emulator::apertur::AperturConfig {
        delivery_status_shape: upload_emulator::apertur::DeliveryShape::Sdk,
        throttle_uploads_nth: vec![1],
        retry_after_s: 2,
        retry_after_in_body: true,
        ..Default::default()
    };
    let t = Tls::start(apertur_config(cfg, Faults::default())).await;
    let files = images(t.dir.path(), 1);
    let t0 = std::time::Instant::now();
    let extra = ["--wait", "--poll-interval", "100ms", "--wait-timeout", "60s"];
    let out = run_upload(t.upload("apertur", &[&files[0].0], &extra), t.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(t0.elapsed() >= std::time::Duration::from_millis(1900), "the 2 s asked in the body were not waited");
    assert_eq!(calls(&t.emu, "POST", "/images"), 2);
    assert_eq!(t.emu.objects()[0].sha256, files[0].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apertur_wait_covers_the_vendors_retry_schedule_by_default() {
    let t = Tls::start(Config::default()).await;
    let files = images(t.dir.path(), 1);
    for (extra, seconds) in [(vec!["--wait"], 4800), (vec!["--wait", "--wait-timeout", "10m"], 600)] {
        let mut a = extra.clone();
        a.push("--dry-run");
        let out = run_upload(t.upload("apertur", &[&files[0].0], &a), t.env()).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains(&format!("until every delivery ends (at most {seconds} s)")), "{}", stdout(&out));
    }
}

// ---------------------------------------------------------------- Every provider: ids in paths

/// Ids no server may splice into a request path: empty, several segments, dot segments (bare
/// or with a `;` parameter), a space, %-escapes, a control character, a backslash.
const BAD_IDS: &[&str] = &["", "a/b", "..;", "..", ".", "a b", "%2e%2e", "a%2Fb", "a\u{1}b", "a\\b"];

/// One run per bad id: `call` (a create) is answered with `answer(id)` without being carried
/// out; the run must stop with a protocol error naming `provider` (exit 5) before any other
/// request: the request log holds that call and nothing after it, no byte reaches the store.
async fn ids_are_refused_before_any_request(
    provider: &str,
    call: &str,
    answer: impl Fn(&str) -> Value,
    run: impl Fn(&Emulator, &std::path::Path) -> Vec<String>,
    file: &str,
) {
    let (method, path) = call.split_once(' ').unwrap();
    for bad in BAD_IDS {
        let emu = emulator(Config {
            faults: Faults { fake_answer: vec![format!("{call} 201 {}", answer(bad))], ..Faults::default() },
            ..Config::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let (f, _) = make_file(dir.path(), file, 200_000);
        let out = run_upload(run(&emu, &f), vec![("UPLOAD_TOKEN".into(), emu.token())]).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(5), "{provider} {bad:?}: {err}");
        assert!(
            err.contains(&format!("{provider}: unexpected answer to")) && err.contains("is not one path segment"),
            "{provider} {bad:?}: {err}"
        );
        let log: Vec<(String, String)> = emu.request_log().into_iter().map(|r| (r.method, r.path)).collect();
        assert_eq!(log, [(method.to_string(), path.to_string())], "{provider} {bad:?}: a request followed");
        assert!(emu.objects().is_empty(), "{provider} {bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_refuses_an_id_that_is_not_one_safe_path_segment() {
    let upload = |provider: &'static str, extra: &'static [&'static str]| {
        move |emu: &Emulator, f: &std::path::Path| {
            let mut a = vec![f.display().to_string()];
            a.extend(args(&["--provider", provider, "--endpoint", &emu.api_url(), "--retries", "0"]));
            a.extend(args(extra));
            a
        }
    };
    ids_are_refused_before_any_request(
        "teleport",
        "POST /api/v1/captures",
        |id| serde_json::json!({ "eid": id, "num_parts": 1, "chunk_size": 5 * MIB }),
        upload("teleport", &[]),
        "scan.zip",
    )
    .await;
    ids_are_refused_before_any_request(
        "truvideo",
        "POST /upload/start",
        |id| serde_json::json!({ "uploadId": id, "mediaId": "m1", "parts": [] }),
        upload("truvideo", &[]),
        "clip.mp4",
    )
    .await;
    let mut uplift = UPLIFT_FIELDS.to_vec();
    uplift.push("--wait");
    let uplift: &'static [&'static str] = Vec::leak(uplift);
    ids_are_refused_before_any_request(
        "uplift",
        "POST /v1/captures",
        |id| {
            serde_json::json!({
                "session_id": id, "session_group_id": "g1", "status": "NEW",
                "upload_url": "https://127.0.0.1:9/bucket", "upload_fields": { "key": "k" },
            })
        },
        upload("uplift", uplift),
        "swing.mov",
    )
    .await;
    ids_are_refused_before_any_request(
        "apertur",
        "POST /api/v1/upload-sessions",
        |id| serde_json::json!({ "id": id, "uuid": id, "destinations": [], "long_polling": false }),
        upload("apertur", &[]),
        "photo.jpg",
    )
    .await;
    // An image id the long-polling queue hands out: not downloaded, not acknowledged.
    ids_are_refused_before_any_request(
        "apertur",
        "GET /api/v1/upload-sessions/sess_1/poll",
        |id| serde_json::json!({ "images": [{ "id": id, "filename": "a.jpg", "size_bytes": 3 }] }),
        |emu, f| {
            let out = f.parent().unwrap().join("out").display().to_string();
            args(&["apertur", "poll", "sess_1", "-o", &out, "--once", "--endpoint", &emu.api_url()])
        },
        "unused.jpg",
    )
    .await;
}

// ---------------------------------------------------------------- Every provider: auth check

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_check_makes_one_read_only_call_for_every_provider() {
    // Apertur's requests are signed: the emulator refuses an unsigned one.
    let secret = "sign-me-please";
    let mut config = Config::default();
    config.apertur.signing_secret = Some(secret.into());
    let t = Tls::start(config).await;
    // (provider, the call, its status with a good token)
    let cases = [
        ("teleport", "/api/v1/captures", "?limit=1", 200),
        ("truvideo", "/upload/00000000-0000-0000-0000-000000000000", "", 400),
        ("uplift", "/v1/captures", "?limit=1", 200),
        ("apertur", "/api/v1/sessions/recent", "?limit=1", 200),
    ];
    for (provider, path, query, status) in cases {
        let check = |token: &str| {
            let mut a = args(&["auth", "check", "--provider", provider, "--endpoint", &t.emu.api_url()]);
            a.extend(args(&["--ca-bundle", &t.ca.display().to_string(), "--token", token]));
            if provider == "apertur" {
                a.extend(args(&["--signing-secret", secret]));
            }
            a
        };
        let before = t.emu.request_log().len();
        let out = run_upload(check(&t.emu.token()), vec![]).await;
        assert_eq!(out.status.code(), Some(0), "{provider}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains(&format!("{provider}: credentials accepted")), "{provider}: {text}");
        assert!(text.contains(&format!("check: GET {path}{query} answered {status}")), "{provider}: {text}");
        let log: Vec<_> =
            t.emu.request_log()[before..].iter().map(|r| (r.method.clone(), r.path.clone(), r.status)).collect();
        assert_eq!(log, [("GET".to_string(), path.to_string(), status)], "{provider}: one read-only call");

        // A wrong token: exit 3, one line naming the provider and the refusal, the token not shown.
        let out = run_upload(check("wrong-token-4711"), vec![]).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{provider}: {err}");
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("upload: error: {provider}: authentication failed: auth check: HTTP 401")),
            "{provider}: {err}"
        );
        assert!(
            err.contains("hint: the token given (--token") && err.contains("is wrong or expired"),
            "{provider}: {err}"
        );
        assert!(!err.contains("wrong-token-4711") && !stdout(&out).contains("wrong-token-4711"), "{provider}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_refuses_an_id_in_its_journal_that_is_not_one_safe_path_segment() {
    // The first run stops after part 1 (part 2's PUT fails, no retry) and keeps its journal;
    // the journal's upload id is then damaged. The resume stops with a protocol error naming
    // the provider before any request: no call goes to a path the id would splice.
    for (provider, file, extra) in
        [("teleport", "scan.zip", &[][..]), ("truvideo", "clip.mp4", &["--part-size", "5MiB"][..])]
    {
        let emu = emulator(Config {
            teleport_chunk_size: 5 * MIB,
            truvideo_initial_urls: 1,
            faults: Faults { fail_put_nth: vec![2], ..Faults::default() },
            ..Config::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let (f, _) = make_file(dir.path(), file, 2 * 5 * MIB + 1000);
        let mut a = vec![f.display().to_string()];
        a.extend(args(&["--provider", provider, "--endpoint", &emu.api_url(), "--concurrency", "1", "--retries", "0"]));
        a.extend(args(extra));
        let env = vec![
            ("UPLOAD_TOKEN".to_string(), emu.token()),
            ("XDG_STATE_HOME".to_string(), dir.path().join("state").display().to_string()),
        ];
        let out = run_upload(a.clone(), env.clone()).await;
        assert_eq!(out.status.code(), Some(5), "{provider}: {}", stderr(&out));
        let journal_dir = dir.path().join("state/upload/journals");
        let path = std::fs::read_dir(&journal_dir).unwrap().map(|e| e.unwrap().path()).next().unwrap();
        let id = journals(&dir.path().join("state"))[0]["upload_id"].as_str().unwrap().to_string();
        assert!(!id.is_empty(), "{provider}");
        let text = std::fs::read_to_string(&path).unwrap();
        let damaged = text.replace(&format!("\"upload_id\":\"{id}\""), "\"upload_id\":\"..;\"");
        assert_ne!(text, damaged, "{provider}");
        std::fs::write(&path, damaged).unwrap();

        let before = emu.request_log().len();
        let out = run_upload(a, env).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(5), "{provider}: {err}");
        assert!(
            err.contains(&format!("{provider}: unexpected answer to")) && err.contains("is not one path segment"),
            "{provider}: {err}"
        );
        let after: Vec<_> = emu.request_log()[before..].iter().map(|r| (r.method.clone(), r.path.clone())).collect();
        assert!(after.iter().all(|(_, p)| !p.contains("..;")), "{provider}: {after:?}");
        assert!(after.is_empty(), "{provider}: no request at all: {after:?}");
    }
}
