//! The state directory after many files: the done records of a run end up in one packed file
//! (`done/packed`, sorted lines `KEY<TAB>RECORD`), a few loose ones at most, its size about
//! that of the records; a rerun finds every record there (nothing sent twice), `--force` sends
//! again, `watch` compacts as it goes, and the record of a file that is gone is pruned.

use std::path::{Path, PathBuf};

use crate::common::*;

fn creates(emu: &Emulator) -> usize {
    emu.request_log().iter().filter(|r| r.method == "POST" && r.path == "/api/v1/captures" && r.status < 300).count()
}

fn puts(emu: &Emulator) -> usize {
    emu.request_log().iter().filter(|r| r.server == "s3" && r.method == "PUT" && r.status < 300).count()
}

/// What `done/` holds: the loose records' paths, and the packed file's lines.
struct Done {
    loose: Vec<PathBuf>,
    lines: Vec<String>,
    /// Bytes of every file in `done/`, and the bytes of their blocks on disk.
    apparent: u64,
    #[cfg_attr(not(unix), allow(dead_code))]
    blocks: u64,
}

fn done_of(state: &Path) -> Done {
    let dir = state.join("done");
    let mut d = Done { loose: vec![], lines: vec![], apparent: 0, blocks: 0 };
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let meta = e.metadata().unwrap();
        d.apparent += meta.len();
        #[cfg(unix)]
        {
            d.blocks += std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
        }
        match e.file_name().to_str().unwrap() {
            "packed" => {
                d.lines = std::fs::read_to_string(e.path()).unwrap().lines().map(String::from).collect();
            }
            name => {
                assert!(!name.starts_with('.'), "a temporary file is left in done/: {name}");
                d.loose.push(e.path());
            }
        }
    }
    d
}

/// Every file a record names, with its upload id, loose or packed.
fn records(d: &Done) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let packed = d.lines.iter().map(|l| l.split_once('\t').expect("KEY<TAB>RECORD").1.to_string());
    let loose = d.loose.iter().map(|p| std::fs::read_to_string(p).unwrap().lines().last().unwrap().to_string());
    for rec in packed.chain(loose) {
        let v: serde_json::Value = serde_json::from_str(&rec).unwrap();
        out.insert(v["file"]["path"].as_str().unwrap().to_string(), v["id"].as_str().unwrap().to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_files_leave_one_packed_file_a_rerun_skips_them_all_and_force_sends_again() {
    const N: usize = 600;
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    std::fs::create_dir(&media).unwrap();
    for i in 0..N {
        make_file(&media, &format!("f{i:04}.mp4"), 100 + i as u64);
    }
    let state = dir.path().join("state");
    let env = vec![("TELEPORT_TOKEN".to_string(), emu.token())];
    let a = args(&[
        media.to_str().unwrap(),
        "--provider",
        "teleport",
        "--format",
        "video",
        "--endpoint",
        &emu.api_url(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let out = run_upload(a.clone(), env.clone()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("{N} uploaded, 0 skipped, 0 failed")), "{}", stderr(&out));
    assert_eq!((creates(&emu), puts(&emu), emu.objects().len()), (N, N, N));

    let d = done_of(&state);
    let first = records(&d);
    assert_eq!(first.len(), N, "one record per file");
    // Packed: sorted by key, each key once.
    let keys: Vec<&str> = d.lines.iter().map(|l| l.split('\t').next().unwrap()).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "the packed file is sorted, each key once");
    // At most a few loose records: not enough to be due at a run's end (their blocks under a
    // sixteenth of the packed file's bytes: here under 5).
    assert!((d.loose.len() as u64) * 65536 < d.apparent, "{} loose", d.loose.len());
    assert!(d.lines.len() >= N - 64, "{} packed", d.lines.len());
    // About the records' size: a packed line is the record's JSON (~0.5 KiB here), where a
    // loose record was the upload's journal with it (~3 KiB, a 4 KiB block each: 2.4 MiB).
    let per_record = d.apparent / N as u64;
    assert!(per_record < 1024, "{per_record} bytes per record");
    #[cfg(unix)]
    assert!(d.blocks < 600 << 10, "{} bytes on disk for {N} records", d.blocks);

    // The rerun skips every file: each lookup hits the packed file (or a loose record).
    let out = run_upload(a.clone(), env.clone()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("0 uploaded, {N} skipped, 0 failed")), "{}", stderr(&out));
    assert_eq!((creates(&emu), puts(&emu)), (N, N), "nothing was sent twice");

    // `--force` sends every file again, and its records replace the old ones (one per file).
    let out = run_upload([a, args(&["--force"])].concat(), env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("{N} uploaded, 0 skipped, 0 failed")), "{}", stderr(&out));
    assert_eq!((creates(&emu), puts(&emu)), (2 * N, 2 * N));
    let again = records(&done_of(&state));
    assert_eq!(again.len(), N);
    assert!(again.iter().all(|(path, id)| first[path] != *id), "every record is of the second upload");
}

/// A rerun finds a record that is only in the packed file, and the daily prune drops the
/// packed record of a file that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packed_record_is_found_and_a_gone_file_s_record_is_pruned_from_it() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let files: Vec<_> = (0..4).map(|i| make_file(dir.path(), &format!("f{i}.zip"), 1000 + i).0).collect();
    let env = vec![("TELEPORT_TOKEN".to_string(), emu.token())];
    let run = |paths: &[&PathBuf]| {
        let mut a: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        a.extend(args(&["--provider", "teleport", "--endpoint", &emu.api_url(), "--state-dir"]));
        a.push(state.display().to_string());
        run_upload(a, env.clone())
    };
    let out = run(&[&files[0], &files[1], &files[2]]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    // The first run of a state directory prunes it, which packs every record.
    let d = done_of(&state);
    assert!(d.loose.is_empty(), "{:?}", d.loose);
    assert_eq!(d.lines.len(), 3);
    let out = run(&[&files[1]]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("skipped: already uploaded"), "{}", stderr(&out));
    assert_eq!(creates(&emu), 3);

    // f0 goes away; a day passes; a run prunes.
    std::fs::remove_file(&files[0]).unwrap();
    let marker = state.join(".done-pruned");
    let aged = std::process::Command::new("touch").args(["-d", "2 days ago"]).arg(&marker).status().unwrap();
    assert!(aged.success());
    let out = run(&[&files[3]]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let d = done_of(&state);
    let kept: Vec<String> =
        records(&d).into_keys().map(|p| Path::new(&p).file_name().unwrap().to_string_lossy().into()).collect();
    assert_eq!(kept, ["f1.zip", "f2.zip", "f3.zip"]);
    assert!(d.loose.is_empty(), "{:?}", d.loose);
}

/// `watch` compacts as it goes (it has no end of run): after its first record, and every 64
/// records, the loose ones go into the packed file when due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_compacts_as_it_goes() {
    const N: usize = 70;
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    for i in 0..N {
        make_file(&inbox, &format!("f{i:03}.mp4"), 100 + i as u64);
    }
    let state = dir.path().join("state");
    let mut a = args(&["watch", inbox.to_str().unwrap(), "--provider", "teleport", "--endpoint", &emu.api_url()]);
    a.extend(args(&["--settle", "200ms", "--once", "--state-dir", state.to_str().unwrap()]));
    let out = run_upload(a, vec![("TELEPORT_TOKEN".to_string(), emu.token())]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(creates(&emu), N);
    let d = done_of(&state);
    assert_eq!(records(&d).len(), N);
    // Packed at the 65th record, but for the records of files still in their step then.
    assert!(d.lines.len() >= N / 2, "{} packed, {} loose", d.lines.len(), d.loose.len());
}

/// Two runs sharing a state directory at once (two cron jobs over two directories): each
/// compacts or skips compacting while the other does, both succeed, no record is lost (a rerun
/// of both skips every file) and nothing is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_sharing_a_state_directory_lose_no_record() {
    const N: usize = 300;
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let run_of = |sub: &str| {
        let media = dir.path().join(sub);
        std::fs::create_dir_all(&media).unwrap();
        for i in 0..N {
            make_file(&media, &format!("{sub}{i:03}.mp4"), 100 + i as u64);
        }
        let mut a = args(&[media.to_str().unwrap(), "--provider", "teleport", "--format", "video"]);
        a.extend(args(&["--endpoint", &emu.api_url(), "--state-dir", state.to_str().unwrap()]));
        a
    };
    let (a, b) = (run_of("a"), run_of("b"));
    let env = vec![("TELEPORT_TOKEN".to_string(), emu.token())];
    let (out_a, out_b) = tokio::join!(run_upload(a.clone(), env.clone()), run_upload(b.clone(), env.clone()));
    for out in [&out_a, &out_b] {
        assert!(out.status.success(), "{}", stderr(out));
        assert!(stderr(out).contains(&format!("{N} uploaded, 0 skipped, 0 failed")), "{}", stderr(out));
    }
    assert_eq!(creates(&emu), 2 * N);
    let d = done_of(&state);
    assert_eq!(records(&d).len(), 2 * N, "{} packed, {} loose", d.lines.len(), d.loose.len());
    let (out_a, out_b) = tokio::join!(run_upload(a, env.clone()), run_upload(b, env));
    for out in [&out_a, &out_b] {
        assert!(out.status.success(), "{}", stderr(out));
        assert!(stderr(out).contains(&format!("0 uploaded, {N} skipped, 0 failed")), "{}", stderr(out));
    }
    assert_eq!((creates(&emu), puts(&emu)), (2 * N, 2 * N), "nothing was sent twice");
}

/// The inode numbers of the files in `dir` (none when it does not exist).
#[cfg(unix)]
fn inodes(dir: &Path) -> std::collections::BTreeSet<u64> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::read_dir(dir) {
        Ok(d) => d.map(|e| e.unwrap().metadata().unwrap().ino()).collect(),
        Err(_) => Default::default(),
    }
}

/// A compaction puts the loose records it took aside, emptied (`spare/`), and the next run's
/// journals are those files renamed: a run over files the state directory has spares for
/// makes no new file (ext4 without a journal scans past every recently freed inode for each
/// new file: freeing and making one per upload made a run of 100,000 files slower per file
/// than one of 10,000). The uploads stay byte-exact and every record is found.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_records_become_the_next_runs_journals_no_file_made() {
    const N: usize = 600;
    const M: usize = 100;
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let env = vec![("TELEPORT_TOKEN".to_string(), emu.token())];
    let mut sums = std::collections::BTreeMap::new();
    let run_of = |sub: &str, n: usize, sums: &mut std::collections::BTreeMap<String, String>| {
        let media = dir.path().join(sub);
        std::fs::create_dir_all(&media).unwrap();
        for i in 0..n {
            let (_, sha) = make_file(&media, &format!("{sub}{i:03}.mp4"), 100 + i as u64);
            sums.insert(format!("{sub}{i:03}.mp4"), sha);
        }
        let mut a = args(&[media.to_str().unwrap(), "--provider", "teleport", "--format", "video"]);
        a.extend(args(&["--endpoint", &emu.api_url(), "--state-dir", state.to_str().unwrap()]));
        a
    };
    let first = run_of("a", N, &mut sums);
    let out = run_upload(first, env.clone()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let spares: Vec<_> = std::fs::read_dir(state.join("spare")).unwrap().map(|e| e.unwrap().path()).collect();
    // The run's own later journals took some of them already (its compactions run as it goes).
    assert!(spares.len() >= M, "{} spare files after compacting {N} records", spares.len());
    assert!(spares.iter().all(|p| std::fs::metadata(p).unwrap().len() == 0), "spares are emptied");
    let before: std::collections::BTreeSet<u64> =
        inodes(&state.join("spare")).union(&inodes(&state.join("done"))).copied().collect();
    let packed_ino = inodes(&state.join("done")).len();

    let second = run_of("b", M, &mut sums);
    let out = run_upload(second, env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("{M} uploaded, 0 skipped, 0 failed")), "{}", stderr(&out));
    // Every file of the second run's records (loose, or put aside again) is a file the first
    // run left: no new one was made. (The packed file is rewritten by a compaction: its new
    // inode is the only one allowed.)
    let after: std::collections::BTreeSet<u64> =
        inodes(&state.join("spare")).union(&inodes(&state.join("done"))).copied().collect();
    let new: Vec<_> = after.difference(&before).collect();
    assert!(new.len() <= 1, "{} new files (of {} now, {packed_ino} in done/ before): {new:?}", new.len(), after.len());
    assert_eq!(records(&done_of(&state)).len(), N + M);
    // Byte-exact, each once.
    let objects = emu.objects();
    assert_eq!(objects.len(), N + M);
    for o in objects {
        let name = o.key.rsplit('/').next().unwrap();
        assert_eq!(sums.get(name), Some(&o.sha256), "{}", o.key);
    }
}
