//! `upload demo` and `upload --emulate`: the README's first command, with no account.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_uploads_a_sample_and_reports_a_byte_exact_copy() {
    let out = run_upload(args(&["demo", "--size", "11MiB", "--json"]), vec![]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let line: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        (line["provider"].as_str(), line["status"].as_str(), line["bytes"].as_u64()),
        (Some("teleport"), Some("uploaded"), Some(11 << 20))
    );
    let err = stderr(&out);
    assert!(err.contains("POST   /api/v1/captures  ×1  → 200"), "{err}");
    assert!(err.contains("byte-exact copy of"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulate_uploads_a_given_file_without_token_or_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "walk.mp4", 6 * MIB + 5);
    let out = run_upload(args(&[path.to_str().unwrap(), "--provider", "teleport", "--emulate"]), vec![]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("sha256 {}…): byte-exact copy of {}", &sha[..16], path.display())), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulate_without_a_file_uploads_a_generated_sample_for_every_provider() {
    for (provider, sample) in
        [("teleport", "sample.mp4"), ("truvideo", "sample.mp4"), ("uplift", "sample.mov"), ("apertur", "sample.jpg")]
    {
        let out = run_upload(args(&["--emulate", "--provider", provider, "--json"]), vec![]).await;
        let err = stderr(&out);
        assert!(out.status.success(), "{provider}: {err}");
        let line: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!((line["provider"].as_str(), line["bytes"].as_u64()), (Some(provider), Some(20 << 20)), "{line}");
        assert!(err.contains("no file given: generated ") && err.contains(sample), "{provider}: {err}");
        // The stored object is the sample, byte for byte (the report hashes both).
        let exact = err.lines().any(|l| l.contains("byte-exact copy of") && l.ends_with(sample));
        assert!(exact, "{provider}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_emulate_a_file_is_still_required() {
    let out = run_upload(args(&["--provider", "teleport", "--token", "t"]), vec![]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("required") && err.contains("<FILE>"), "{err}");
}

/// Runs the `upload` binary to its end and returns its output and its peak RSS in KiB: its
/// `VmHWM` (the high-water mark of its own address space since exec), read every 10 ms until
/// it exits. (Not `ru_maxrss` of `wait4`: that counts the test process's own peak too, which
/// the child inherits while it shares the parent's memory between spawn and exec.)
#[cfg(target_os = "linux")]
fn run_with_peak_rss(args: &[String], envs: &[(String, String)]) -> (std::process::Output, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut cmd = upload_command(args, envs);
    cmd.stdout(std::fs::File::create(&out_path).unwrap()).stderr(std::fs::File::create(&err_path).unwrap());
    let mut child = cmd.spawn().expect("the binary starts");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse::<u64>().ok())
        {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let out = std::process::Output {
        status,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
    };
    (out, peak)
}

/// `--emulate` streams what it receives to a temporary directory (removed at the end) instead
/// of memory: the whole process (client and emulator) stays far below the file's size.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulate_stores_on_disk_and_memory_does_not_grow_with_the_file() {
    const SIZE: u64 = 256 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.mp4");
    std::fs::File::create(&path).unwrap().set_len(SIZE).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let a = args(&[path.to_str().unwrap(), "--provider", "teleport", "--emulate", "--json"]);
    let envs = vec![("TMPDIR".to_string(), tmp.path().display().to_string())];
    let (out, peak_kib) = tokio::task::spawn_blocking(move || run_with_peak_rss(&a, &envs)).await.unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let line: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(line["bytes"].as_u64(), Some(SIZE), "{line}");
    assert!(err.contains(&format!("byte-exact copy of {}", path.display())), "{err}");
    eprintln!("upload --emulate of 256 MiB: peak RSS {} MiB", peak_kib / 1024);
    assert!(peak_kib > 0, "VmHWM was never read");
    assert!(peak_kib < 128 * 1024, "peak RSS {} MiB for a {} MiB file", peak_kib / 1024, SIZE / MIB);
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "the emulator's temporary state is left behind: {left:?}");
}

/// The `try:` lines `upload-emulator` prints (one per provider) work as printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulators_try_commands_upload_for_every_provider() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let commands = upload_emulator::try_commands(&emu.api_url(), &emu.token());
    let providers: Vec<&str> =
        commands.iter().filter_map(|c| c.split_whitespace().skip_while(|w| *w != "--provider").nth(1)).collect();
    assert_eq!(providers, ["teleport", "truvideo", "uplift", "apertur"], "{commands:?}");
    for (i, command) in commands.iter().enumerate() {
        let mut words = command.split_whitespace();
        assert_eq!(words.next(), Some("upload"), "{command}");
        let mut sha = String::new();
        let a: Vec<String> = words
            .map(|w| match w.strip_prefix("FILE.") {
                Some(ext) => {
                    let (path, s) = make_file(dir.path(), &format!("sample{i}.{ext}"), 6 * MIB + 1 + i as u64);
                    sha = s;
                    path.display().to_string()
                }
                None => w.to_string(),
            })
            .collect();
        assert!(!sha.is_empty(), "no FILE in {command}");
        let out = run_upload(a, vec![]).await;
        assert!(out.status.success(), "{command}: {}", stderr(&out));
        assert_eq!(emu.objects().iter().filter(|o| o.sha256 == sha).count(), 1, "{command}");
    }
}

/// Ctrl-C while `upload demo --size 8GiB` writes its sample: the generation shows progress,
/// stops within seconds (exit 130) and leaves no partial sample behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_the_demo_sample_is_written_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let env = vec![("TMPDIR".to_string(), tmp.path().display().to_string()), ("UPLOAD_FORCE_TTY".into(), "1".into())];
    let mut child = spawn_upload(&args(&["demo", "--size", "8GiB"]), &env);
    let sample = || -> Option<u64> {
        let dir = std::fs::read_dir(tmp.path())
            .ok()?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("upload-emulate-"))?;
        std::fs::metadata(dir.path().join("sample.mp4")).ok().map(|m| m.len())
    };
    let t0 = std::time::Instant::now();
    while sample().unwrap_or(0) < 16 * MIB {
        assert!(child.try_wait().unwrap().is_none(), "the demo ended before it was interrupted");
        assert!(t0.elapsed() < std::time::Duration::from_secs(120), "no sample written");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Long enough for a frame of the bar.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let t1 = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert!(t1.elapsed() < std::time::Duration::from_secs(10), "took {:?} to stop", t1.elapsed());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("sample.mp4") && err.contains("generating the sample"), "no progress shown: {err:?}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
