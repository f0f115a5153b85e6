//! Many files in one run: directories, globs, failures that do not stop the others,
//! skipping what was uploaded, bulk-images zips of a directory.

use std::io::Read;

use crate::common::*;

fn file_of(line: &serde_json::Value) -> String {
    std::path::Path::new(line["file"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned()
}

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(out).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_files_two_failures_then_a_rerun_sends_only_those() {
    let faults = Faults { fail_put_nth: vec![5, 17], ..Faults::default() };
    let emu = emulator(Config { faults, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    std::fs::create_dir(&media).unwrap();
    let mut shas = std::collections::BTreeMap::new();
    for i in 0..30 {
        let (_, sha) = make_file(&media, &format!("f{i:02}.zip"), 1000 + i);
        shas.insert(format!("f{i:02}.zip"), sha);
    }
    let state = dir.path().join("state");
    let env =
        vec![("TELEPORT_TOKEN".to_string(), emu.token()), ("XDG_STATE_HOME".to_string(), state.display().to_string())];
    let a = args(&[
        media.to_str().unwrap(),
        "--provider",
        "teleport",
        "--endpoint",
        &emu.api_url(),
        "--json",
        "--retries",
        "0",
    ]);
    let out = run_upload(a.clone(), env.clone()).await;
    assert_eq!(out.status.code(), Some(5), "the worst outcome is the network failure: {}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 30);
    let failed: Vec<String> = lines.iter().filter(|l| l["status"] == "failed").map(file_of).collect();
    assert_eq!(failed.len(), 2, "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l["status"] == "uploaded").count(), 28);
    assert!(stderr(&out).contains("28 uploaded, 0 skipped, 2 failed"), "{}", stderr(&out));
    assert_eq!(emu.objects().len(), 28);

    emu.set_faults(Faults::default());
    let out = run_upload(a, env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = json_lines(&out);
    let uploaded: Vec<String> = lines.iter().filter(|l| l["status"] == "uploaded").map(file_of).collect();
    assert_eq!(uploaded.iter().collect::<std::collections::BTreeSet<_>>(), failed.iter().collect());
    assert_eq!(lines.iter().filter(|l| l["status"] == "skipped").count(), 28);
    assert!(stderr(&out).contains("2 uploaded, 28 skipped, 0 failed"), "{}", stderr(&out));
    let objects = emu.objects();
    assert_eq!(objects.len(), 30);
    for o in objects {
        let name = o.key.rsplit('/').next().unwrap();
        assert_eq!(o.sha256, shas[name], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_images_becomes_one_stored_zip() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(photos.join("sub")).unwrap();
    let (_, _) = make_file(&photos, "a.jpg", 300_000);
    let (_, _) = make_file(&photos.join("sub"), "b.PNG", 70_001);
    let (_, _) = make_file(&photos, "notes.txt", 10);
    let (_, _) = make_file(&photos, ".hidden.jpg", 10);
    let out = run_upload(
        args(&[
            photos.to_str().unwrap(),
            "--provider",
            "teleport",
            "--format",
            "bulk-images",
            "--endpoint",
            &emu.api_url(),
            "--json",
        ]),
        vec![("TELEPORT_TOKEN".into(), emu.token())],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let objects = emu.objects();
    assert_eq!(objects.len(), 1);
    let bytes = emu.object_bytes(&objects[0].key).unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a valid zip arrived");
    let names: Vec<String> = (0..zip.len()).map(|i| zip.by_index(i).unwrap().name().unwrap().to_string()).collect();
    assert_eq!(names, vec!["a.jpg", "sub/b.PNG"], "only the images, hidden ones left out");
    for (name, path) in [("a.jpg", photos.join("a.jpg")), ("sub/b.PNG", photos.join("sub/b.PNG"))] {
        let mut entry = zip.by_name(name).unwrap();
        assert_eq!(entry.compression(), zip::CompressionMethod::Stored);
        let mut got = vec![];
        entry.read_to_end(&mut got).unwrap();
        assert_eq!(got, std::fs::read(path).unwrap(), "{name} differs inside the zip");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_exclude_and_recursive_pick_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    for name in ["x.mp4", "y.mp4", "z.zip", "sub/w.mp4", "sub/yy.mp4"] {
        make_file(&d, name, 10);
    }
    let pick = |extra: &[&str]| {
        let mut a = args(&[d.to_str().unwrap(), "--provider", "teleport", "--dry-run", "--json", "--token", "t"]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let names = |out: &std::process::Output| {
        let mut v: Vec<String> = json_lines(out)
            .iter()
            .map(|l| l["file"].as_str().unwrap().trim_start_matches(d.to_str().unwrap()).to_string())
            .collect();
        v.sort();
        v
    };
    let out = run_upload(pick(&["--include", "*.mp4", "--exclude", "y*"]), vec![]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(names(&out), vec!["/x.mp4"]);
    let out = run_upload(pick(&["--include", "*.mp4", "--exclude", "y*", "--recursive"]), vec![]).await;
    assert_eq!(names(&out), vec!["/sub/w.mp4", "/x.mp4"]);
    let out = run_upload(pick(&["--exclude", "**/*.mp4"]), vec![]).await;
    assert_eq!(names(&out), vec!["/z.zip"]);
    let out = run_upload(pick(&["--include", "*.mov"]), vec![]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no files to upload"), "{}", stderr(&out));
}

/// A walk never stops at one entry. In a tree with a symlink loop, a dangling symlink, an
/// unreadable sub-directory, an unreadable file and a FIFO, the two good files are uploaded,
/// each once and byte-exact. Each entry that cannot be read gets a `failed` line with its
/// reason and `exit_code` 2, the FIFO a `skipped` line (it is not a regular file, like a file
/// the provider does not take), and the run exits 2 at the end, as aws-cli does. The binary
/// runs as an unprivileged user when the tests run as root, so permissions apply.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_never_stops_at_one_entry_and_reports_each_by_path() {
    use std::os::unix::fs::PermissionsExt;
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    std::fs::create_dir_all(media.join("day1")).unwrap();
    std::fs::create_dir_all(media.join("locked")).unwrap();
    let (_, sha_a) = make_file(&media, "a.mp4", 1500);
    let (_, sha_b) = make_file(&media.join("day1"), "b.mp4", 2500);
    make_file(&media.join("locked"), "c.mp4", 100);
    make_file(&media, "secret.mp4", 100);
    std::os::unix::fs::symlink("..", media.join("day1").join("again")).unwrap();
    std::os::unix::fs::symlink("gone.mp4", media.join("dangling.mp4")).unwrap();
    let fifo = std::ffi::CString::new(media.join("pipe.mp4").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    for p in [dir.path(), &media, &media.join("day1")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(media.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::set_permissions(media.join("secret.mp4"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let a = args(&[media.to_str().unwrap(), "-r", "--provider", "teleport", "--endpoint", &emu.api_url(), "--json"]);
    let env = vec![("TELEPORT_TOKEN".into(), emu.token()), ("XDG_STATE_HOME".into(), state.display().to_string())];
    let out = run_unprivileged(a, env).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let lines = json_lines(&out);
    let by_name =
        |n: &str| lines.iter().find(|l| file_of(l) == n).unwrap_or_else(|| panic!("no line for {n}: {lines:?}"));
    for good in ["a.mp4", "b.mp4"] {
        assert_eq!(by_name(good)["status"], "uploaded", "{lines:?}");
    }
    for (bad, why) in [
        ("again", "loop"),
        ("dangling.mp4", "No such file"),
        ("locked", "ermission denied"),
        ("secret.mp4", "ermission denied"),
    ] {
        let l = by_name(bad);
        assert_eq!((l["status"].as_str(), l["exit_code"].as_u64()), (Some("failed"), Some(2)), "{bad}: {l}");
        assert!(l["error"].as_str().unwrap().contains(why), "{bad}: {l}");
    }
    let pipe = by_name("pipe.mp4");
    assert_eq!(pipe["status"], "skipped", "{pipe}");
    assert!(pipe["reason"].as_str().unwrap().contains("FIFO"), "{pipe}");
    assert_eq!(lines.len(), 7, "{lines:?}");
    let mut stored: Vec<String> = emu.objects().into_iter().map(|o| o.sha256).collect();
    stored.sort();
    let mut expected = vec![sha_a, sha_b];
    expected.sort();
    assert_eq!(stored, expected);
    std::fs::set_permissions(media.join("locked"), std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Without `--recursive`, the sub-directories left out are mentioned once, with the flag that
/// walks them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_directories_not_walked_are_mentioned_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    for sub in ["one", "two", "three"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
        make_file(&d.join(sub), "x.mp4", 10);
    }
    make_file(&d, "top.mp4", 10);
    let out =
        run_upload(args(&[d.to_str().unwrap(), "--provider", "teleport", "--dry-run", "--token", "t"]), vec![]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("3 sub-directories not walked; --recursive walks them").count(), 1, "{err}");
}
