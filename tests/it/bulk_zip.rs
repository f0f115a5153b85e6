//! Bulk-images zips streamed from a directory: never written to disk, byte-exact with
//! `--zip-to`, valid ZIP64 past 4 GiB and 65,535 entries, resumable without a second CRC pass.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use upload::engine::zipsource::VirtualZip;
use upload::run::{Selection, scan_images};

use crate::common::*;

/// The virtual zip as a `Read + Seek` file, for the zip crate.
struct ZipReader {
    zip: Arc<VirtualZip>,
    pos: u64,
}

impl Read for ZipReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.zip.size().saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        self.zip.read_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ZipReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => (self.zip.size() as i64 + d) as u64,
            SeekFrom::Current(d) => (self.pos as i64 + d) as u64,
        };
        Ok(self.pos)
    }
}

fn all() -> Selection {
    Selection::new(true, false, &[], &[]).unwrap()
}

/// The table of `dir` with every CRC computed (what an upload of it sends).
async fn table(dir: &Path) -> Arc<VirtualZip> {
    let (mut zip, _) = scan_images(dir, &all()).unwrap();
    zip.compute_crcs(2, |_| {}, &tokio_util::sync::CancellationToken::new()).await.unwrap();
    Arc::new(zip)
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn unzip(args: &[&str], file: &Path) -> Option<String> {
    let out = std::process::Command::new("unzip").args(args).arg(file).output().ok()?;
    assert!(out.status.success(), "unzip {args:?}: {}{}", stdout(&out), stderr(&out));
    Some(stdout(&out))
}

/// A directory of images of assorted sizes (some across part boundaries), a sub-directory,
/// a non-ASCII name, and files a bulk-images zip leaves out: not images, hidden, and an empty
/// image (`z.jxl`, 0 bytes: reported as skipped). The images the zip takes, with their SHA-256.
fn photo_dir(root: &Path) -> (PathBuf, Vec<(String, String)>) {
    let photos = root.join("photos");
    std::fs::create_dir_all(photos.join("day 2")).unwrap();
    let mut images = vec![];
    for (i, name) in ["a.jpg", "b.jpeg", "c.png", "day 2/d.HEIC", "day 2/été.tif", "e.webp", "z.jxl"].iter().enumerate()
    {
        let size = [3 * MIB + 17, 5 * MIB + 1, 900_001, 7 * MIB - 5, 1, 2 * MIB, 0][i];
        let (_, sha) = make_file(&photos, name, size);
        if size > 0 {
            images.push((name.to_string(), sha));
        }
    }
    make_file(&photos, "notes.txt", 100);
    make_file(&photos, ".hidden.jpg", 100);
    (photos, images)
}

fn teleport_args(emu: &Emulator, dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = args(&[
        dir.to_str().unwrap(),
        "--provider",
        "teleport",
        "--format",
        "bulk-images",
        "--endpoint",
        &emu.api_url(),
        "--json",
    ]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn small_parts() -> Config {
    Config { teleport_chunk_size: MIB, min_part_size: MIB, ..Config::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_zip_is_byte_exact_with_zip_to_and_every_image_matches() {
    let emu = emulator(small_parts()).await;
    let dir = tempfile::tempdir().unwrap();
    let (photos, images) = photo_dir(dir.path());
    let env = vec![("TELEPORT_TOKEN".to_string(), emu.token())];

    let out = run_upload(teleport_args(&emu, &photos, &[]), env.clone()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let line: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert!(line["parts"].as_u64().unwrap() > 10, "several parts: {line}");
    // The empty image is left out, and said so: a line on stderr, an entry in the result.
    let empty = photos.join("z.jxl").display().to_string();
    assert_eq!(line["skipped_entries"], serde_json::json!([{ "path": empty, "reason": "empty (0 bytes)" }]), "{line}");
    assert!(
        stderr(&out).contains(&format!("skipped {empty}: empty (0 bytes), left out of the zip")),
        "{}",
        stderr(&out)
    );
    let objects = emu.objects();
    assert_eq!(objects.len(), 1);
    let streamed = emu.object_bytes(&objects[0].key).unwrap();

    let zip_file = dir.path().join("out/photos.zip");
    let state_home = dir.path().join("state");
    let mut zip_env = env.clone();
    zip_env.push(("XDG_STATE_HOME".into(), state_home.display().to_string()));
    let out =
        run_upload(teleport_args(&emu, &photos, &["--zip-to", zip_file.to_str().unwrap()]), zip_env.clone()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    // A finished --zip-to upload leaves no journal: `upload pending` lists nothing.
    assert!(journals(&state_home).is_empty(), "{:?}", journals(&state_home));
    let out = run_upload(args(&["pending", "--json"]), zip_env).await;
    assert!(out.status.success() && stdout(&out).trim().is_empty(), "{}{}", stdout(&out), stderr(&out));
    let written = std::fs::read(&zip_file).unwrap();
    assert_eq!(sha(&streamed), sha(&written), "the streamed archive differs from --zip-to's");
    let second = emu.objects().into_iter().find(|o| o.key != objects[0].key).expect("a second capture");
    assert_eq!(second.sha256, sha(&written), "--zip-to uploads the file it wrote");

    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(streamed)).expect("the zip crate reads it");
    let names: Vec<String> = (0..zip.len()).map(|i| zip.by_index(i).unwrap().name().unwrap().to_string()).collect();
    assert_eq!(names, images.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), "sorted, images only");
    for (name, want) in &images {
        let mut entry = zip.by_name(name).unwrap();
        assert_eq!(entry.compression(), zip::CompressionMethod::Stored);
        let mtime = std::fs::metadata(photos.join(name)).unwrap().modified().unwrap();
        let when = chrono::DateTime::<chrono::Utc>::from(mtime).naive_utc();
        let stamp = entry.last_modified().unwrap();
        use chrono::{Datelike, Timelike};
        assert_eq!((stamp.year() as i32, stamp.minute() as u32), (when.year(), when.minute()), "{name}: the mtime");
        let mut got = vec![];
        entry.read_to_end(&mut got).unwrap();
        assert_eq!(&sha(&got), want, "{name} differs inside the zip");
    }
    if let Some(test) = unzip(&["-t"], &zip_file) {
        assert!(test.contains("No errors detected"), "{test}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_archive_without_reading_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let (photos, images) = photo_dir(dir.path());
    // Unreadable images: a dry run must not open them.
    #[cfg(unix)]
    for (name, _) in &images {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(photos.join(name), std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let unreadable = std::fs::File::open(photos.join("a.jpg")).is_err(); // false as root
    let a =
        args(&[photos.to_str().unwrap(), "--provider", "teleport", "--format", "bulk-images", "--dry-run", "--json"]);
    let out = run_upload(a, vec![("UPLOAD_TOKEN".into(), "t".into())]).await;
    #[cfg(unix)]
    for (name, _) in &images {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(photos.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let zip = table(&photos).await;
    assert_eq!(plan["bytes"], zip.size(), "{plan}");
    assert_eq!(plan["entries"], images.len(), "{plan}");
    assert_eq!(plan["skipped_entries"][0]["reason"], "empty (0 bytes)", "{plan}");
    assert_eq!(plan["zip"], "streamed");
    assert_eq!(plan["zip64"], false);
    assert_eq!(plan["name"], "photos.zip");
    if !unreadable {
        eprintln!("running as root: the images stayed readable");
    }
}

/// Bytes on disk (allocated blocks) of every file below `dir`.
#[cfg(unix)]
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_a_gib_writes_nothing_to_disk_but_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    // 1 GiB of images, sparse: quick to make, nothing on disk of their own.
    for i in 0..64u64 {
        let f = std::fs::File::create(photos.join(format!("img{i:03}.jpg"))).unwrap();
        f.set_len(16 * MIB + i).unwrap();
    }
    let emu = emulator(Config::default()).await;
    let state_home = dir.path().join("state");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&state_home).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    let env = vec![
        ("TELEPORT_TOKEN".to_string(), emu.token()),
        ("XDG_STATE_HOME".to_string(), state_home.display().to_string()),
        ("TMPDIR".to_string(), tmp.display().to_string()),
    ];
    let watched = |_: ()| disk_usage(&state_home) + disk_usage(&tmp);
    let before = watched(());
    let mut child = spawn_upload(&teleport_args(&emu, &photos, &[]), &env);
    let mut peak = before;
    let started = Instant::now();
    let status = loop {
        peak = peak.max(watched(()));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "the upload takes too long");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{err}");
    let after = watched(());
    // The journal and the entry table of 64 images: a few KiB, against a 1 GiB archive.
    assert!(peak - before < 256 * 1024, "{} bytes written under the state dir and $TMPDIR at the peak", peak - before);
    assert!(after - before < 64 * 1024, "{} bytes left under the state dir and $TMPDIR", after - before);

    let zip = table(&photos).await;
    let objects = emu.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].size, zip.size());
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut pos = 0;
    while pos < zip.size() {
        let n = (zip.size() - pos).min(buf.len() as u64) as usize;
        zip.read_at(&mut buf[..n], pos).unwrap();
        h.update(&buf[..n]);
        pos += n as u64;
    }
    assert_eq!(objects[0].sha256, hex::encode(h.finalize()), "the stored archive is the directory's zip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip64_past_4_gib_lists_right_with_the_zip_crate() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("big");
    std::fs::create_dir(&photos).unwrap();
    let (_, a_sha) = make_file(&photos, "a.jpg", 1000);
    // Sparse: 2.25 GiB, then one entry past 4 GiB (its own size needs ZIP64), then a small
    // image whose offset passes 4 GiB.
    for (name, size) in [("b.jpg", 9 * (1u64 << 28)), ("c.jpg", (1u64 << 32) + 12_345)] {
        std::fs::File::create(photos.join(name)).unwrap().set_len(size).unwrap();
    }
    let (_, d_sha) = make_file(&photos, "d.jpg", 77_777);
    let zip = table(&photos).await;
    assert!(zip.is_zip64());
    assert!(zip.size() > (1u64 << 32) + 9 * (1u64 << 28));
    let mut archive = zip::ZipArchive::new(ZipReader { zip: zip.clone(), pos: 0 }).expect("the zip crate reads it");
    assert_eq!(archive.len(), 4);
    let sizes: Vec<(String, u64)> = (0..4)
        .map(|i| {
            let e = archive.by_index(i).unwrap();
            (e.name().unwrap().to_string(), e.size())
        })
        .collect();
    assert_eq!(
        sizes,
        vec![
            ("a.jpg".to_string(), 1000),
            ("b.jpg".into(), 9 * (1u64 << 28)),
            ("c.jpg".into(), (1u64 << 32) + 12_345),
            ("d.jpg".into(), 77_777)
        ]
    );
    for (name, want) in [("a.jpg", &a_sha), ("d.jpg", &d_sha)] {
        let mut got = vec![];
        archive.by_name(name).unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(&sha(&got), want, "{name}");
    }
    let c = archive.by_name("c.jpg").unwrap();
    assert!(c.data_start().unwrap() > 9 * (1u64 << 28));
    assert_eq!(c.crc32(), zip.entries()[2].crc.unwrap());
    drop(c);
    let d = archive.by_name("d.jpg").unwrap();
    assert!(d.header_start() > 1u64 << 32, "the offset of d.jpg passes 4 GiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seventy_thousand_images_pass_the_65535_entry_limit() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("many");
    for d in 0..70 {
        std::fs::create_dir_all(photos.join(format!("d{d:02}"))).unwrap();
    }
    tokio::task::spawn_blocking({
        let photos = photos.clone();
        move || {
            for i in 0..70_000u32 {
                std::fs::write(photos.join(format!("d{:02}/{i:05}.jpg", i / 1000)), i.to_le_bytes()).unwrap();
            }
        }
    })
    .await
    .unwrap();
    let zip = table(&photos).await;
    assert!(zip.is_zip64());
    let mut bytes = Vec::with_capacity(zip.size() as usize);
    zip.write_to(&mut bytes).unwrap();
    assert_eq!(bytes.len() as u64, zip.size());
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.clone())).expect("the zip crate reads it");
    assert_eq!(archive.len(), 70_000);
    for i in [0u32, 65_534, 65_535, 65_536, 69_999] {
        let name = format!("d{:02}/{i:05}.jpg", i / 1000);
        let mut e = archive.by_index(i as usize).unwrap();
        assert_eq!(e.name().unwrap(), name);
        let mut got = vec![];
        e.read_to_end(&mut got).unwrap();
        assert_eq!(got, i.to_le_bytes(), "{name}");
    }
    let file = dir.path().join("many.zip");
    std::fs::write(&file, &bytes).unwrap();
    if let Some(list) = unzip(&["-l"], &file) {
        assert!(list.trim_end().ends_with("70000 files"), "{}", &list[list.len().saturating_sub(200)..]);
    }
    if let Some(test) = unzip(&["-tq"], &file) {
        assert!(test.contains("No errors detected"), "{test}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_whose_bytes_no_longer_match_its_crc_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("p");
    std::fs::create_dir(&photos).unwrap();
    make_file(&photos, "a.jpg", 3 * MIB);
    make_file(&photos, "b.jpg", 1000);
    let zip = table(&photos).await;
    let mut entries = zip.entries().to_vec();
    // Same size and time, other bytes: only the CRC read again tells.
    entries[0].crc = Some(entries[0].crc.unwrap() ^ 1);
    let lying = VirtualZip::new(zip.dir(), entries);
    let mut buf = vec![0u8; MIB as usize];
    for at in [0, MIB] {
        lying.read_at(&mut buf, at).unwrap();
    }
    let mut rest = vec![0u8; (lying.size() - 2 * MIB) as usize];
    let err = lying.read_at(&mut rest, 2 * MIB).unwrap_err();
    assert!(err.to_string().contains("a.jpg changed"), "{err}");
    let err = lying.check_unchanged().unwrap_err();
    assert!(err.to_string().contains("a.jpg") && err.to_string().contains("CRC-32"), "{err}");
    assert!(zip.check_unchanged().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_upload_resumes_without_a_second_crc_pass_and_refuses_a_touched_image() {
    // ~40 MiB in 8 MiB parts at 8 MiB/s per connection: several seconds.
    let faults = Faults { bandwidth_bps: 8 * MIB, ..Faults::default() };
    let emu = emulator(Config { faults: faults.clone(), ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    for i in 0..10u64 {
        make_file(&photos, &format!("img{i:02}.jpg"), 4 * MIB + i * 1111);
    }
    let state_home = dir.path().join("state");
    let env = vec![
        ("TELEPORT_TOKEN".to_string(), emu.token()),
        ("XDG_STATE_HOME".to_string(), state_home.display().to_string()),
    ];
    let plain = |extra: &[&str]| {
        let mut a = teleport_args(&emu, &photos, extra);
        a.retain(|s| s != "--json");
        a
    };
    let kill_after_parts = async |extra: &[&str], parts: usize| {
        let mut child = spawn_upload(&plain(extra), &env);
        let started = Instant::now();
        loop {
            if journals(&state_home).first().is_some_and(|j| j["parts"].as_array().unwrap().len() >= parts) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                panic!("the upload ended ({status}) before {parts} parts: {err}");
            }
            assert!(started.elapsed() < Duration::from_secs(120), "no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().unwrap();
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        child.wait().unwrap();
        err
    };

    let first = kill_after_parts(&["--concurrency", "2"], 2).await;
    assert!(first.contains("computing the CRC-32 of 10 of 10 images"), "{first}");
    emu.set_faults(Faults::default());
    let out = run_upload(plain(&[]), env.clone()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("CRC-32 of all 10 images known from the state directory (not read again)"), "{err}");
    assert!(!err.contains("computing the CRC-32"), "{err}");
    assert!(err.contains("resuming upload") || err.contains("resuming capture"), "{err}");
    let objects = emu.objects();
    assert_eq!(objects.len(), 1);
    let zip = table(&photos).await;
    let mut want = vec![];
    zip.write_to(&mut want).unwrap();
    assert_eq!(objects[0].sha256, sha(&want), "the resumed archive is byte-exact");
    for ((_, part), n) in emu.part_put_counts() {
        assert!(n <= 2, "part {part} sent {n} times");
    }
    // Uploaded: the same images are skipped, with no CRC pass.
    let out = run_upload(plain(&[]), env.clone()).await;
    assert!(out.status.success() && stderr(&out).contains("already uploaded"), "{}", stderr(&out));

    // Interrupt another upload of them, touch one image: refused, naming it.
    emu.set_faults(faults);
    kill_after_parts(&["--concurrency", "1", "--force"], 1).await;
    let touched = photos.join("img03.jpg");
    let f = std::fs::File::options().write(true).open(&touched).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5)).unwrap();
    drop(f);
    emu.set_faults(Faults::default());
    let out = run_upload(plain(&["--force"]), env.clone()).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("img03.jpg changed since the interrupted upload") && err.contains("--no-resume"), "{err}");
    // --no-resume: a new upload of the images as they are, only the touched one read again.
    let out = run_upload(plain(&["--force", "--no-resume"]), env.clone()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("computing the CRC-32 of 1 of 10 images"), "{}", stderr(&out));
    let zip = table(&photos).await;
    let mut want = vec![];
    zip.write_to(&mut want).unwrap();
    assert!(emu.objects().iter().any(|o| o.sha256 == sha(&want)), "the new archive arrived byte-exact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_image_makes_a_new_upload() {
    let faults = Faults { bandwidth_bps: 8 * MIB, ..Faults::default() };
    let emu = emulator(Config { faults, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    for i in 0..6u64 {
        make_file(&photos, &format!("img{i:02}.jpg"), 4 * MIB + i * 1111);
    }
    let state_home = dir.path().join("state");
    let env = vec![
        ("TELEPORT_TOKEN".to_string(), emu.token()),
        ("XDG_STATE_HOME".to_string(), state_home.display().to_string()),
    ];
    let mut child = spawn_upload(&teleport_args(&emu, &photos, &["--concurrency", "1"]), &env);
    let started = Instant::now();
    while journals(&state_home).first().is_none_or(|j| j["parts"].as_array().unwrap().is_empty()) {
        assert!(child.try_wait().unwrap().is_none(), "the upload ended before its first part");
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    emu.set_faults(Faults::default());
    make_file(&photos, "img99.jpg", 12345);
    let out = run_upload(teleport_args(&emu, &photos, &[]), env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("resuming"), "{}", stderr(&out));
    let zip = table(&photos).await;
    assert_eq!(zip.entries().len(), 7);
    let mut want = vec![];
    zip.write_to(&mut want).unwrap();
    let objects = emu.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].sha256, sha(&want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_empty_images_is_refused_before_any_request() {
    let emu = emulator(small_parts()).await;
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("blank");
    std::fs::create_dir_all(&photos).unwrap();
    for name in ["a.jpg", "b.png"] {
        make_file(&photos, name, 0);
    }
    let out = run_upload(teleport_args(&emu, &photos, &[]), vec![("TELEPORT_TOKEN".into(), emu.token())]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("holds no images to zip: its 2 image files are all empty (0 bytes)"), "{err}");
    assert!(emu.request_log().is_empty(), "{:?}", emu.request_log());
}
