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

    fn teleport(&self, files: &[&std::path::Path], extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        a.extend(args(&["--provider", "teleport", "--endpoint", &self.emu.api_url(), "--json"]));
        a.extend(["--ca-bundle".into(), self.ca.display().to_string()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("TELEPORT_TOKEN".into(), self.emu.token()),
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
