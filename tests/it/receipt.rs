//! Receipts that can be checked (issue 33): the `crc64nvme` of every result is the
//! CRC-64/NVME of the bytes that arrived, computed here independently of the library; parts
//! whose ETag is not the MD5 sent are sent again; a checksum the vendor signed into its URLs
//! ends the upload at once, naming the vendor.

use std::path::{Path, PathBuf};

use crate::common::*;

/// CRC-64/NVME (reflected, polynomial 0xad93d23594c93659, init and xorout all ones), a plain
/// table implementation: the test's own, not the library's.
fn crc64nvme(bytes: &[u8]) -> u64 {
    const POLY: u64 = 0x9a6c_9329_ac4b_c9b5; // 0xad93d23594c93659 reflected
    let table: Vec<u64> =
        (0..256u64).map(|i| (0..8).fold(i, |c, _| if c & 1 == 1 { (c >> 1) ^ POLY } else { c >> 1 })).collect();
    !bytes.iter().fold(!0u64, |c, &b| table[((c ^ b as u64) & 0xff) as usize] ^ (c >> 8))
}

/// As S3 shows it: base64 of the 8 bytes, big-endian.
fn s3_form(crc: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

#[test]
fn the_tests_own_crc_is_the_catalogue_one() {
    assert_eq!(crc64nvme(b"123456789"), 0xae8b_1486_0a79_9888);
    assert_eq!(s3_form(0xae8b_1486_0a79_9888), "rosUhgp5mIg=");
}

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/result.schema.json")).unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
}

fn json_line(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(out));
    let v: serde_json::Value = serde_json::from_str(stdout(out).trim()).expect("one JSON line");
    assert!(schema().is_valid(&v), "{v} does not match the schema");
    v
}

/// The journal files under a state home.
fn journal_files(state_home: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in walkdir::WalkDir::new(state_home.join("upload")).into_iter().filter_map(Result::ok) {
        if e.file_type().is_file() && e.path().components().any(|c| c.as_os_str() == "journals") {
            out.push(e.path().to_path_buf());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_result_carries_the_crc64nvme_of_the_bytes_that_arrived() {
    let run = TeleportRun::start(Config::default(), 12 * MIB + 321).await;
    let out = run_upload(run.args(&["--concurrency", "3"]), run.env()).await;
    let v = json_line(&out);
    assert_eq!(v["parts"], 3, "{v}");
    let object = run.emu.objects().pop().unwrap();
    assert_eq!(object.sha256, run.sha, "byte-exact");
    let arrived = run.emu.object_bytes(&object.key).unwrap();
    assert_eq!(v["crc64nvme"], s3_form(crc64nvme(&arrived)), "{v}");
    assert_eq!(v["crc64nvme"], s3_form(crc64nvme(&std::fs::read(&run.path).unwrap())));

    // The human result says it too.
    let again = TeleportRun::start(Config::default(), 6 * MIB).await;
    let mut a = again.args(&[]);
    a.retain(|x| x != "--json");
    let out = run_upload(a, again.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let want = s3_form(crc64nvme(&std::fs::read(&again.path).unwrap()));
    assert!(stdout(&out).contains(&format!("crc64nvme: {want}")), "{}", stdout(&out));
}

/// A resumed upload knows the whole file's CRC: the parts of the first run from the journal
/// (their CRCs journaled with them), a part journaled without one (as older versions wrote
/// them) read again locally; none of them sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_upload_reports_the_crc_of_the_whole_file() {
    let faults = Faults { fail_put_nth: vec![3], ..Faults::default() };
    let run = TeleportRun::start(Config { faults, ..Config::default() }, 17 * MIB + 5).await;
    let first = run_upload(run.args(&["--concurrency", "1", "--retries", "0"]), run.env()).await;
    assert_eq!(first.status.code(), Some(5), "{}", stderr(&first));
    let journal = journal_files(&run.state_home());
    assert_eq!(journal.len(), 1, "{journal:?}");
    let text = std::fs::read_to_string(&journal[0]).unwrap();
    let part_lines: Vec<&str> = text.lines().filter(|l| l.contains("\"etag\"")).collect();
    assert_eq!(part_lines.len(), 2, "{text}");
    assert!(part_lines.iter().all(|l| l.contains("\"crc64nvme\"")), "journaled with their CRCs: {text}");
    // Part 1's line as an older version wrote it: no CRC.
    let old: String = text
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if v["number"] == 1 {
                v.as_object_mut().unwrap().remove("crc64nvme");
            }
            format!("{v}\n")
        })
        .collect();
    std::fs::write(&journal[0], old).unwrap();

    run.emu.set_faults(Faults::default());
    let out = run_upload(run.args(&[]), run.env()).await;
    let v = json_line(&out);
    assert!(stderr(&out).contains("2 of 4 parts already sent"), "{}", stderr(&out));
    let object = run.emu.objects().pop().unwrap();
    assert_eq!(object.sha256, run.sha, "byte-exact");
    let arrived = run.emu.object_bytes(&object.key).unwrap();
    assert_eq!(v["crc64nvme"], s3_form(crc64nvme(&arrived)), "{v}");
    let counts = run.emu.part_put_counts();
    assert_eq!(counts.values().filter(|&&n| n == 1).count(), 4, "each part stored once: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uplift_post_result_carries_the_crc64nvme() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "swing-001.mov", 3 * MIB + 17);
    let mut a = vec![path.display().to_string()];
    a.extend(args(&["--provider", "uplift", "--endpoint", &emu.api_url(), "--json"]));
    a.extend(args(UPLIFT_FIELDS));
    let out = run_upload(a, token_env("UPLIFT_TOKEN", &emu)).await;
    let v = json_line(&out);
    let object = emu.objects().pop().unwrap();
    assert_eq!(object.sha256, sha);
    assert_eq!(v["crc64nvme"], s3_form(crc64nvme(&emu.object_bytes(&object.key).unwrap())), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_zip_result_carries_the_crc64nvme_of_the_zip() {
    let emu = emulator(Config { teleport_chunk_size: MIB, min_part_size: MIB, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    for (i, size) in [3 * MIB + 17, 900_001, 1, 2 * MIB].into_iter().enumerate() {
        make_file(&photos, &format!("img{i}.jpg"), size);
    }
    let a = args(&[
        photos.to_str().unwrap(),
        "--provider",
        "teleport",
        "--format",
        "bulk-images",
        "--endpoint",
        &emu.api_url(),
        "--json",
    ]);
    let out = run_upload(a, vec![("TELEPORT_TOKEN".into(), emu.token())]).await;
    let v = json_line(&out);
    assert!(v["parts"].as_u64().unwrap() >= 4, "{v}");
    let object = emu.objects().pop().unwrap();
    let zip = emu.object_bytes(&object.key).unwrap();
    assert!(zip.starts_with(b"PK\x03\x04"), "a zip arrived");
    assert_eq!(v["crc64nvme"], s3_form(crc64nvme(&zip)), "{v}");
}

/// `--checksum md5`: a store that ignores Content-MD5 keeps a part with a byte altered and
/// answers the ETag of what it kept; the client sees the ETag is not the MD5 it sent and sends
/// the part again, so what arrives is byte-exact. Without the check the same fault goes
/// unnoticed (the object differs): the fault bites.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_whose_etag_is_not_the_md5_sent_is_sent_again() {
    let faults = Faults { corrupt_put: vec!["PUT /**".into()], ..Faults::default() };
    let run = TeleportRun::start(Config { faults: faults.clone(), ..Config::default() }, 12 * MIB + 99).await;
    let out = run_upload(run.args(&["--checksum", "md5", "--concurrency", "1"]), run.env()).await;
    let v = json_line(&out);
    let object = run.emu.objects().pop().unwrap();
    assert_eq!(object.sha256, run.sha, "the altered part was sent again: byte-exact");
    assert_eq!(v["crc64nvme"], s3_form(crc64nvme(&run.emu.object_bytes(&object.key).unwrap())));
    let counts: Vec<u64> = run.emu.part_put_counts().values().copied().collect();
    assert_eq!(counts, [2, 1, 1], "part 1 twice, the others once");

    let control = TeleportRun::start(Config { faults, ..Config::default() }, 12 * MIB + 99).await;
    let out = run_upload(control.args(&["--concurrency", "1"]), control.env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(control.emu.objects().pop().unwrap().sha256, control.sha, "unchecked, the altered part stays");
}

/// A store that alters every copy: the part is sent again within --retries, then one clear
/// error naming the part and both digests (exit 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_altered_on_every_attempt_ends_with_a_clear_error() {
    let faults = Faults { corrupt_put: vec!["always PUT /**".into()], ..Faults::default() };
    let run = TeleportRun::start(Config { faults, ..Config::default() }, 6 * MIB).await;
    let a = run.args(&["--checksum", "md5", "--concurrency", "1", "--retries", "2"]);
    let out = run_upload(a, run.env()).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("PUT part 1") && err.contains("is not the MD5 of the bytes sent"), "{err}");
    assert!(err.contains("after 3 attempts"), "{err}");
    let counts: Vec<u64> = run.emu.part_put_counts().values().copied().collect();
    assert_eq!(counts, [3], "the first attempt and 2 retries");
    assert!(run.emu.objects().is_empty(), "never completed");
}

/// S3's refusals of a checksum the vendor signed into its URL: one line naming the code and
/// the provider's URL, exit 4, the part never sent again (no retry, no fresh URL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_signed_into_the_vendors_url_stops_the_upload_at_once() {
    for (status, code) in [(400, "XAmzContentChecksumMismatch"), (403, "HeadersNotSigned"), (400, "BadDigest")] {
        let faults = Faults { s3_error: vec![format!("always PUT /** {status} {code}")], ..Faults::default() };
        // One part: its PUTs are the count of its attempts.
        let run = TeleportRun::start(Config { faults, ..Config::default() }, 4 * MIB).await;
        let out = run_upload(run.args(&[]), run.env()).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(4), "{code}: {err}");
        assert!(
            err.contains(&format!("teleport: PUT part 1 was refused by S3 with {code} (HTTP {status})"))
                && err.contains("the presigned URL teleport handed out is at fault"),
            "{code}: {err}"
        );
        assert!(err.contains("report it to teleport"), "{code}: {err}");
        let line: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!((line["status"].as_str(), line["exit_code"].as_i64()), (Some("failed"), Some(4)), "{line}");
        let log = run.emu.request_log();
        let puts = log.iter().filter(|r| r.server == "s3" && r.method == "PUT").count();
        assert_eq!(puts, 1, "{code}: not retried");
        let urls = log.iter().filter(|r| r.path.contains("/create-upload-url/")).count();
        assert_eq!(urls, 1, "{code}: no fresh URL asked for");
    }
}

/// The same for a POST form (Uplift): the form's checksum is the vendor's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_signed_into_the_vendors_form_stops_the_upload_at_once() {
    let faults = Faults { s3_error: vec!["always POST /** 400 BadDigest".into()], ..Faults::default() };
    let emu = emulator(Config { faults, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "swing-001.mov", MIB);
    let mut a = vec![path.display().to_string()];
    a.extend(args(&["--provider", "uplift", "--endpoint", &emu.api_url()]));
    a.extend(args(UPLIFT_FIELDS));
    let out = run_upload(a, token_env("UPLIFT_TOKEN", &emu)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("uplift: POST upload was refused by S3 with BadDigest (HTTP 400)"), "{err}");
    let posts = emu.request_log().iter().filter(|r| r.server == "s3" && r.method == "POST").count();
    assert_eq!(posts, 1, "not retried");
}

/// No slow tail: one part whose body the store reads at 256 KiB/s (64 s for its 16 MiB) no
/// longer sets the file's wall time. Once its siblings are stored it is sent again on another
/// connection with a fresh URL; that copy wins, the trickling one is cancelled, and what
/// arrives is byte-exact, each part stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_part_no_longer_sets_the_files_wall_time() {
    let faults = Faults { trickle_read: vec!["PUT /**".into()], trickle_bps: 256 * 1024, ..Faults::default() };
    let emu = emulator(Config { teleport_chunk_size: 16 * MIB, faults, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "scan.zip", 40 * MIB);
    let a = args(&[
        path.to_str().unwrap(),
        "--provider",
        "teleport",
        "--endpoint",
        &emu.api_url(),
        "--json",
        "--concurrency",
        "3",
    ]);
    let t0 = std::time::Instant::now();
    let out = run_upload(a, vec![("TELEPORT_TOKEN".into(), emu.token())]).await;
    let took = t0.elapsed();
    let v = json_line(&out);
    assert_eq!(v["parts"], 3, "{v}");
    assert!(took < std::time::Duration::from_secs(40), "took {took:?}: the trickle (64 s) set the wall time");
    let err = stderr(&out);
    assert!(
        err.contains("is far behind the others") && err.contains("sending it again on another connection"),
        "{err}"
    );
    let object = emu.objects().pop().unwrap();
    assert_eq!(object.sha256, sha, "byte-exact");
    assert_eq!(v["crc64nvme"], s3_form(crc64nvme(&emu.object_bytes(&object.key).unwrap())));
    let counts: Vec<u64> = emu.part_put_counts().values().copied().collect();
    assert_eq!(counts, [1, 1, 1], "each part stored once");
    // The cancelled copy was never answered (the log holds answered requests only).
    let puts = emu.request_log().iter().filter(|r| r.server == "s3" && r.method == "PUT").count();
    assert_eq!(puts, 3, "three answered PUTs: two parts and the second copy");
}
