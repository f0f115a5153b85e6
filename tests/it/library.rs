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
    let outcome = Uploader::new(Teleport::new(TeleportOptions::default()))
        .endpoint(emu.api_url())
        .token(emu.token())
        .concurrency(2)
        .progress(move |e: Event| sink.lock().unwrap().push(e))
        .upload(&path)
        .await
        .unwrap();
    assert_eq!((outcome.parts, outcome.status.as_str()), (3, "UPLOADED"));
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
    let uploader = Uploader::new(Teleport::new(TeleportOptions::default())).endpoint(emu.api_url()).token(emu.token());
    let (events, fut) = uploader.upload_with_events(&path);
    let (outcome, events) = tokio::join!(fut, events.collect::<Vec<_>>());
    assert_eq!(outcome.unwrap().bytes, 1000);
    assert!(events.iter().any(|e| matches!(e, Event::Finished)));

    let err = Uploader::new(Teleport::new(TeleportOptions::default()))
        .endpoint(emu.api_url())
        .token("bad")
        .upload(&path)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
}

/// Apertur through the library: the image's bytes are reported while they are sent (one
/// `Bytes` event per read, all before `PartDone`), and its name reaches the server escaped by
/// the one form-data rule (`"` → %22, `\` → %5C).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apertur_images_report_bytes_while_they_are_sent() {
    use upload::providers::apertur::{Apertur, AperturInput, AperturOptions};
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let size = 3 * MIB + 5;
    let (path, sha) = make_file(dir.path(), "say \"hi\" \\ x.jpg", size);
    let options = AperturOptions::from_input(&AperturInput::default(), true).unwrap();
    let seen = Arc::new(Mutex::new(vec![]));
    let sink = seen.clone();
    let outcome = Uploader::new(Apertur::new(options))
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
