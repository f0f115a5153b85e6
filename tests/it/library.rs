//! The library API: `Uploader::new(provider).upload(path)` and its progress events.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use upload::providers::teleport::{Teleport, TeleportOptions};
use upload::{Event, Uploader};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploader_with_a_closure_progress_handler() {
    let emu = emulator(Config { teleport_chunk_size: 5 * MIB, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "scan.zip", 12 * MIB);
    let seen = Arc::new(Mutex::new(vec![]));
    let sink = seen.clone();
    let outcome = Uploader::new(Teleport::new(TeleportOptions::default()).unwrap())
        .endpoint(emu.api_url())
        .token(emu.token())
        .concurrency(2)
        .progress(move |e: Event| sink.lock().unwrap().push(e))
        .upload(&path)
        .await
        .unwrap();
    assert_eq!((outcome.parts, outcome.status.as_str()), (3, "uploaded"));
    assert_eq!(emu.objects()[0].sha256, sha);
    let events = seen.lock().unwrap();
    let done = events.iter().filter(|e| matches!(e, Event::PartDone { .. })).count();
    let bytes: i64 = events.iter().map(|e| if let Event::Bytes { delta, .. } = e { *delta } else { 0 }).sum();
    assert_eq!(done, 3);
    assert_eq!(bytes, 12 * MIB as i64);
    assert!(matches!(events.first(), Some(Event::Started { parts: 3, .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_as_a_stream_and_errors_as_values() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "walk.mp4", 1000);
    let uploader =
        Uploader::new(Teleport::new(TeleportOptions::default()).unwrap()).endpoint(emu.api_url()).token(emu.token());
    let (events, fut) = uploader.upload_with_events(&path);
    let (outcome, events) = tokio::join!(fut, events.collect::<Vec<_>>());
    assert_eq!(outcome.unwrap().bytes, 1000);
    assert!(events.iter().any(|e| matches!(e, Event::Finished)));

    let err = Uploader::new(Teleport::new(TeleportOptions::default()).unwrap())
        .endpoint(emu.api_url())
        .token("bad")
        .upload(&path)
        .await
        .unwrap_err();
    assert!(matches!(err, upload::Error::Auth { provider: "teleport", .. }), "{err}");
}

/// Apertur through the library: the image's bytes are reported while they are sent (one
/// `Bytes` event per read, all before `PartDone`), and its name reaches the server escaped by
/// the one form-data rule (`"` → %22, `\` → %5C).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apertur_images_report_bytes_while_they_are_sent() {
    use upload::providers::apertur::{Apertur, AperturOptions};
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let size = 3 * MIB + 5;
    let (path, sha) = make_file(dir.path(), "say \"hi\" \\ x.jpg", size);
    let options = AperturOptions::default();
    let seen = Arc::new(Mutex::new(vec![]));
    let sink = seen.clone();
    let outcome = Uploader::new(Apertur::new(options).unwrap())
        .endpoint(emu.api_url())
        .token(emu.token())
        .progress(move |e: Event| sink.lock().unwrap().push(e))
        .upload(&path)
        .await
        .unwrap();
    assert_eq!(outcome.bytes, size);
    let objects = emu.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].sha256, sha);
    assert!(objects[0].key.ends_with("/say %22hi%22 %5C x.jpg"), "{}", objects[0].key);
    let events = seen.lock().unwrap();
    let done_at = events.iter().position(|e| matches!(e, Event::PartDone { .. })).expect("PartDone");
    let before: Vec<i64> = events[..done_at]
        .iter()
        .filter_map(|e| if let Event::Bytes { delta, .. } = e { Some(*delta) } else { None })
        .collect();
    assert!(before.len() >= 4, "one event per 1 MiB read while sending: {before:?}");
    assert_eq!(before.iter().sum::<i64>(), size as i64);
    assert!(
        !events[done_at..].iter().any(|e| matches!(e, Event::Bytes { .. })),
        "no bytes counted after the image is stored"
    );
}

/// Part URLs that are presigned PutObject URLs of the emulator's S3 store, one key per part.
struct PutUrls {
    api: String,
}

#[async_trait::async_trait]
impl upload::engine::uploader::PartUrls for PutUrls {
    async fn url(&self, part: u32, _stale: bool) -> upload::Result<String> {
        let answer: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/_emulator/presign-put?key=parts/{part}", self.api))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Ok(answer["url"].as_str().unwrap().to_string())
    }
}

/// The journal's appends of finished parts are batched: one call of the recorder at a time,
/// however slow its fsync, each part in exactly one call, and all of them recorded before
/// `upload_parts` returns (a blocking-pool thread per part waiting for the journal grew to
/// hundreds of threads when fsyncs were slow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_parts_reach_the_recorder_one_call_at_a_time_each_part_once() {
    use upload::engine::plan::PartPlan;
    use upload::engine::source::FileSource;
    use upload::engine::uploader::{CompletedPart, UploaderOptions};
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "parts.bin", 8 * 64 * 1024);
    let source = FileSource::open(&path).unwrap();
    let plan = PartPlan { file_size: source.size(), part_size: 64 * 1024, num_parts: 8 };
    #[derive(Default)]
    struct Seen {
        in_call: usize,
        most_in_call: usize,
        calls: usize,
        parts: Vec<u32>,
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = seen.clone();
    let recorder = Arc::new(move |parts: &[CompletedPart]| {
        {
            let mut s = sink.lock().unwrap();
            s.in_call += 1;
            s.most_in_call = s.most_in_call.max(s.in_call);
            s.calls += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(150)); // a slow fsync
        let mut s = sink.lock().unwrap();
        s.parts.extend(parts.iter().map(|p| p.number));
        s.in_call -= 1;
        Ok(())
    });
    let options = UploaderOptions { concurrency: 8, ..UploaderOptions::default() };
    let parts = parts_to(&emu, &source, &plan, recorder, &options).await.unwrap();
    assert_eq!(parts.iter().map(|p| p.number).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
    let s = seen.lock().unwrap();
    let mut recorded = s.parts.clone();
    recorded.sort();
    assert_eq!(recorded, (1..=8).collect::<Vec<_>>(), "each part recorded once, before upload_parts returned");
    assert_eq!(s.most_in_call, 1, "one recorder call at a time");
    assert!(s.calls <= 8, "{} calls", s.calls);
}

/// `upload_parts` of `source` to the emulator's store through [`PutUrls`], nothing done before.
async fn parts_to(
    emu: &Emulator,
    source: &upload::engine::source::FileSource,
    plan: &upload::engine::plan::PartPlan,
    recorder: upload::engine::uploader::PartDone,
    options: &upload::engine::uploader::UploaderOptions,
) -> upload::Result<Vec<upload::engine::uploader::CompletedPart>> {
    upload::engine::uploader::upload_parts(
        &upload::engine::http::client(&Default::default(), 8),
        "s3",
        source,
        plan,
        Arc::new(PutUrls { api: emu.api_url() }),
        vec![],
        recorder,
        options,
        Arc::new(upload::engine::progress::NoProgress),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
}

/// A run that fails while the journal's writer is still busy with parts the server stored does
/// not return before their lines are written: a resume must not send them again. (The writer
/// used to be aborted with the run, and a stored part's line with it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_stored_before_a_failure_are_recorded_before_the_error_returns() {
    use upload::engine::plan::PartPlan;
    use upload::engine::source::FileSource;
    use upload::engine::uploader::{CompletedPart, UploaderOptions};
    // The 3rd PUT fails, not retried; parts 1 and 2 (and maybe 4) are stored and reach a slow
    // recorder.
    let faults = Faults { fail_put_nth: vec![3], ..Faults::default() };
    let emu = emulator(Config { faults, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "parts.bin", 4 * 64 * 1024);
    let source = FileSource::open(&path).unwrap();
    let plan = PartPlan { file_size: source.size(), part_size: 64 * 1024, num_parts: 4 };
    let recorded = Arc::new(Mutex::new(Vec::<u32>::new()));
    let sink = recorded.clone();
    let recorder = Arc::new(move |parts: &[CompletedPart]| {
        std::thread::sleep(std::time::Duration::from_millis(400)); // a slow fsync
        sink.lock().unwrap().extend(parts.iter().map(|p| p.number));
        Ok(())
    });
    let retry = upload::engine::retry::RetryPolicy {
        max_retries: 0,
        first_contact_retries: 0,
        ..upload::engine::retry::RetryPolicy::default()
    };
    let options = UploaderOptions { concurrency: 1, retry, ..UploaderOptions::default() };
    let result = parts_to(&emu, &source, &plan, recorder, &options).await;
    assert!(result.is_err(), "the 3rd PUT failed: {result:?}");
    let mut got = recorded.lock().unwrap().clone();
    got.sort();
    // Parts 1 and 2 at least (part 4 may have gone out before the failure was seen: then it
    // was stored too), never the failed 3rd.
    assert!(got.starts_with(&[1, 2]) && !got.contains(&3), "recorded before the error returned: {got:?}");
}

/// The front door follows an Apertur session's deliveries when asked (`wait`): the provider's
/// `finish` runs after the upload, through the library as through the command line. A failing
/// destination ends the upload with `ProcessingFailed`; without one the upload succeeds after
/// the deliveries were seen delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploader_follows_apertur_deliveries_when_asked() {
    use upload::providers::apertur::{Apertur, AperturOptions};
    use upload_emulator::apertur::{AperturConfig, DEFAULT_DESTINATIONS};
    for failing in [true, false] {
        let failing_destinations = if failing { vec![DEFAULT_DESTINATIONS[1].0.to_string()] } else { vec![] };
        let emu = emulator(Config {
            apertur: AperturConfig {
                failing_destinations,
                delivery_step_ms: 30,
                delivery_retries: 1,
                ..AperturConfig::default()
            },
            ..Config::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let (path, sha) = make_file(dir.path(), "a.jpg", 4000);
        let input = AperturOptions {
            destinations: DEFAULT_DESTINATIONS.iter().map(|d| d.0.to_string()).collect(),
            wait: true,
            poll_interval: std::time::Duration::from_millis(50),
            wait_timeout: std::time::Duration::from_secs(60),
            ..AperturOptions::default()
        };
        let notices = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = notices.clone();
        let uploader = Uploader::new(Apertur::new(input).unwrap()).endpoint(emu.api_url()).token(emu.token()).progress(
            move |e: Event| {
                if let Event::Notice { message } = e {
                    sink.lock().unwrap().push(message);
                }
            },
        );
        let result = uploader.upload(&path).await;
        assert_eq!(emu.objects()[0].sha256, sha, "the image arrived either way");
        let status_polls =
            emu.request_log().iter().filter(|r| r.method == "GET" && r.path.ends_with("/delivery-status")).count();
        assert!(status_polls >= 1, "the deliveries were followed");
        // The deliveries' outcome reaches the uploader's progress, a notice per destination
        // (the library prints nothing itself).
        let notices = notices.lock().unwrap().clone();
        let lines: Vec<&String> = notices.iter().filter(|n| n.starts_with("apertur: ")).collect();
        assert_eq!(lines.len(), DEFAULT_DESTINATIONS.len(), "{notices:?}");
        assert_eq!(lines.iter().filter(|l| l.contains(" 1 failed")).count(), usize::from(failing), "{notices:?}");
        match result {
            Err(upload::Error::ProcessingFailed { .. }) if failing => {}
            Ok(outcome) if !failing => assert_eq!(outcome.bytes, 4000),
            other => panic!("failing destination {failing}: {other:?}"),
        }
    }
}

/// A run of many files through one `Uploader` with a state directory: one connection pool, one
/// part budget, every file byte-exact; the same run again skips every file as done (the done
/// records the command line keeps are the library's), and a forced run sends them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_run_uploads_many_files_and_skips_them_when_done() {
    use upload::run::{End, FileResult, Item, RunOptions};
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let files: Vec<(std::path::PathBuf, String)> =
        (0..5).map(|i| make_file(dir.path(), &format!("v{i}.mp4"), 300_000 + i)).collect();
    let uploader = Uploader::new(Teleport::new(TeleportOptions::default()).unwrap())
        .endpoint(emu.api_url())
        .token(emu.token())
        .concurrency(3)
        .state_dir(state.path());
    let items = || files.iter().map(|(p, _)| Item::File(p.clone())).collect::<Vec<_>>();
    let run = |options: RunOptions| {
        let uploader = uploader.clone();
        let items = items();
        async move {
            let mut ends = vec![];
            let none = |_: &Item| -> Arc<dyn upload::Progress> { Arc::new(upload::engine::progress::NoProgress) };
            let stats = uploader
                .run(items, &options, &none, &mut |e| {
                    ends.push(match e.end {
                        End::Done(FileResult::Uploaded(o)) => format!("uploaded {}", o.bytes),
                        End::Done(FileResult::Skipped(r, _)) => format!("skipped {}", r.id),
                        other => format!("{other:?}"),
                    });
                    Ok(())
                })
                .await
                .unwrap();
            (ends, stats)
        }
    };
    let (ends, stats) = run(RunOptions::default()).await;
    assert!(ends.iter().all(|e| e.starts_with("uploaded")), "{ends:?}");
    assert!(stats.peak_parts <= 3 && stats.peak_files >= 1, "{stats:?}");
    for (i, (_, sha)) in files.iter().enumerate() {
        assert!(emu.objects().iter().any(|o| &o.sha256 == sha), "file {i} arrived byte-exact");
    }
    let (again, _) = run(RunOptions::default()).await;
    assert!(again.iter().all(|e| e.starts_with("skipped")), "{again:?}");
    assert_eq!(emu.objects().len(), 5, "nothing sent twice");
    let (forced, _) = run(RunOptions { force: true, ..RunOptions::default() }).await;
    assert!(forced.iter().all(|e| e.starts_with("uploaded")), "{forced:?}");
    assert_eq!(emu.objects().len(), 10);
}
