//! What shells, CI and cron trip over (issue 17): odd paths, huge values, cron semantics,
//! messages, terminal output, colour.

#[cfg(unix)]
use std::ffi::OsString;
#[cfg(unix)]
use std::os::unix::ffi::OsStringExt;
#[cfg(unix)]
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::*;

/// The flags each provider needs against the emulator, and its token variable.
fn provider_flags(provider: &str, emu: &Emulator) -> (Vec<String>, Vec<(String, String)>) {
    let mut a = args(&["--provider", provider, "--endpoint", &emu.api_url()]);
    match provider {
        "uplift" => a.extend(args(UPLIFT_FIELDS)),
        "truvideo" => a.extend(args(&["--poll-interval", "100ms", "--wait-timeout", "60s"])),
        _ => {}
    }
    let var = format!("{}_TOKEN", provider.to_ascii_uppercase());
    (a, vec![(var, emu.token())])
}

/// Runs the binary with `args` then the raw (possibly non-UTF-8) `paths`.
#[cfg(unix)]
async fn run_with_paths(args: Vec<String>, paths: Vec<OsString>, envs: Vec<(String, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = upload_command(&args, &envs);
        cmd.args(paths);
        cmd.output().expect("the binary runs")
    })
    .await
    .unwrap()
}

/// A file whose name holds the byte 0xFF (not UTF-8), with `content`. Unix only: Windows
/// names are UTF-16, and hold no such byte.
#[cfg(unix)]
fn non_utf8_file(dir: &Path, stem: &[u8], ext: &str, content: &[u8]) -> PathBuf {
    let mut name = stem.to_vec();
    name.extend_from_slice(b"\xff.");
    name.extend_from_slice(ext.as_bytes());
    let path = dir.join(OsString::from_vec(name));
    std::fs::write(&path, content).unwrap();
    path
}

#[cfg(unix)]
fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_are_not_utf8_upload_on_every_provider_and_are_not_sent_twice() {
    for (provider, ext) in [("teleport", "mp4"), ("truvideo", "mp4"), ("uplift", "mov"), ("apertur", "jpg")] {
        let emu = emulator(Config::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let mut content = b"\xff\xd8\xff\xe0 not really a JPEG ".to_vec();
        content.extend((0..200_000u32).map(|i| (i * 7 % 251) as u8));
        let path = non_utf8_file(dir.path(), b"bad", ext, &content);
        let state = dir.path().join("state");
        let (mut a, mut env) = provider_flags(provider, &emu);
        a.push("--json".into());
        env.push(("XDG_STATE_HOME".into(), state.display().to_string()));
        let out = run_with_paths(a.clone(), vec![path.clone().into()], env.clone()).await;
        assert_eq!(out.status.code(), Some(0), "{provider}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{provider}: {}", stderr(&out));
        let line: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert!(line["file"].as_str().unwrap().ends_with(&format!("bad\u{FFFD}.{ext}")), "{provider}: {line}");
        let objects = emu.objects();
        assert_eq!(objects.len(), 1, "{provider}");
        assert_eq!(objects[0].sha256, sha(&content), "{provider}: byte-exact");
        if provider != "truvideo" {
            // The vendor gets the name with U+FFFD for the invalid byte (TruVideo names by its ids).
            assert!(objects[0].key.ends_with(&format!("bad\u{FFFD}.{ext}")), "{provider}: {}", objects[0].key);
        }
        // The done record round-trips the raw name: the rerun skips the file.
        let out = run_with_paths(a, vec![path.into()], env).await;
        assert_eq!(out.status.code(), Some(0), "{provider}: {}", stderr(&out));
        let line: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(line["status"], "skipped", "{provider}: {line}");
        assert_eq!(emu.objects().len(), 1, "{provider}: not uploaded twice");
    }
}

/// Waits for the child at most `limit`; kills it and fails the test when it is still running.
fn wait_bounded(mut child: std::process::Child, limit: Duration) -> Output {
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("the command blocked for {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_is_refused_at_once_dry_run_too() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.mp4");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let (flags, env) = provider_flags("teleport", &emu);
    for extra in [vec!["--dry-run"], vec![]] {
        let mut a = vec![fifo.display().to_string()];
        a.extend(flags.iter().cloned());
        a.extend(args(&extra));
        let child = spawn_upload(&a, &env);
        let out = tokio::task::spawn_blocking(move || wait_bounded(child, Duration::from_secs(60))).await.unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("pipe.mp4 is a FIFO (named pipe), not a regular file"), "{err}");
        assert_eq!(err.lines().filter(|l| l.starts_with("upload: error:")).count(), 1, "{err}");
    }
    assert!(emu.request_log().is_empty(), "no request for a FIFO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_durations_and_sizes_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = make_file(dir.path(), "a.mp4", 1000);
    let f = file.to_str().unwrap();
    for (flag, value, says) in [
        ("--wait-timeout", "99999999999999999999", "too long"),
        ("--wait-timeout", "9999999h", "too long"),
        ("--poll-interval", "99999999999999999999999999999999999999ms", "too long"),
        ("--part-size", "99999999999999999999", "out of range"),
        ("--part-size", "99999999TiB", "out of range"),
    ] {
        let out = run_upload(args(&[f, "--provider", "truvideo", "--dry-run", flag, value]), vec![]).await;
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{flag} {value}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
    let out = run_upload(args(&["apertur", "poll", "s", "-o", "x", "--timeout", "1e30"]), vec![]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// `UPLOAD_CONFIG=/dev/zero` (endless), or a file far too large to be a configuration, is one
/// line naming it (exit 2), not a process reading for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_or_huge_config_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = make_file(dir.path(), "a.mp4", 1000);
    let (huge, _) = make_file(dir.path(), "huge.toml", 3 * MIB);
    for named in ["/dev/zero", huge.to_str().unwrap()] {
        let env = vec![("UPLOAD_CONFIG".to_string(), named.to_string())];
        for a in [args(&[file.to_str().unwrap(), "--provider", "teleport", "--dry-run"]), args(&["config", "show"])] {
            let t0 = std::time::Instant::now();
            let out = tokio::time::timeout(std::time::Duration::from_secs(60), run_upload(a.clone(), env.clone()))
                .await
                .expect("the config file is not read for ever");
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{named} {a:?}: {err}");
            assert!(err.contains(named) && err.contains("larger than 1 MiB"), "{err}");
            assert!(t0.elapsed() < std::time::Duration::from_secs(30));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_named_explicitly_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = make_file(dir.path(), "a.mp4", 1000);
    let missing = dir.path().join("missing.toml");
    let env = vec![("UPLOAD_CONFIG".to_string(), missing.display().to_string())];
    for a in [
        args(&[file.to_str().unwrap(), "--provider", "teleport", "--dry-run"]),
        args(&["config", "show"]),
        args(&["teleport", "list", "--token", "t", "--endpoint", "http://127.0.0.1:9"]),
    ] {
        let out = run_upload(a.clone(), env.clone()).await;
        assert_eq!(out.status.code(), Some(2), "{a:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("missing.toml"), "{}", stderr(&out));
        assert!(stderr(&out).contains("UPLOAD_CONFIG"), "{}", stderr(&out));
    }
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    stdout(out).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/result.schema.json")).unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_found_in_a_directory_that_the_provider_cannot_take_are_skipped() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    std::fs::create_dir(&media).unwrap();
    let (_, sha) = make_file(&media, "a.mp4", 5000);
    make_file(&media, "notes.txt", 10);
    make_file(&media, "empty.mp4", 0);
    let (flags, env) = provider_flags("truvideo", &emu);
    let mut a = vec![media.display().to_string()];
    a.extend(flags.clone());
    a.push("--json".into());
    let out = run_upload(a, env.clone()).await;
    assert_eq!(out.status.code(), Some(0), "a stray file does not fail the run: {}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let v = schema();
    for l in &lines {
        assert!(v.is_valid(l), "{l}");
    }
    let skipped: Vec<&serde_json::Value> = lines.iter().filter(|l| l["status"] == "skipped").collect();
    assert_eq!(skipped.len(), 2, "{lines:?}");
    let reason = |name: &str| {
        skipped.iter().find(|l| l["file"].as_str().unwrap().ends_with(name)).unwrap()["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(reason("notes.txt").contains("extension 'txt'"), "{}", reason("notes.txt"));
    assert!(reason("empty.mp4").contains("is empty"), "{}", reason("empty.mp4"));
    assert!(stderr(&out).contains("1 uploaded, 2 skipped, 0 failed"), "{}", stderr(&out));
    assert_eq!(emu.objects().len(), 1);
    assert_eq!(emu.objects()[0].sha256, sha);

    // The same file named on the command line still fails the run, before any request.
    let before = emu.request_log().len();
    let mut a = vec![media.join("notes.txt").display().to_string()];
    a.extend(flags);
    let out = run_upload(a, env).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("upload: error: cannot tell the TruVideo file type"), "{}", stderr(&out));
    assert_eq!(emu.request_log().len(), before, "no request for a file refused locally");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_done_record_counts_the_destination() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = make_file(dir.path(), "a.zip", 3000);
    let state = dir.path().join("state");
    let (flags, mut env) = provider_flags("teleport", &emu);
    env.push(("XDG_STATE_HOME".into(), state.display().to_string()));
    let run = |extra: &[&str]| {
        let mut a = vec![file.display().to_string()];
        a.extend(flags.clone());
        a.extend(args(&["--json"]));
        a.extend(args(extra));
        run_upload(a, env.clone())
    };
    let status = |out: &Output| {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
        json_lines(out)[0].clone()
    };
    assert_eq!(status(&run(&[]).await)["status"], "uploaded");
    assert_eq!(status(&run(&[]).await)["status"], "skipped");
    // Another capture name is another upload, not "already uploaded".
    let l = status(&run(&["--name", "Second"]).await);
    assert_eq!((l["status"].as_str(), l["name"].as_str()), (Some("uploaded"), Some("Second")), "{l}");
    assert_eq!(emu.objects().len(), 2);
    let l = status(&run(&["--name", "Second"]).await);
    assert_eq!(l["status"], "skipped");
    let reason = l["reason"].as_str().unwrap();
    assert!(reason.contains("--name Second") && reason.contains("same file"), "{reason}");
    assert!(schema().is_valid(&l), "{l}");
    assert_eq!(emu.objects().len(), 2);
    // Human output says it too.
    let mut a = vec![file.display().to_string()];
    a.extend(flags.clone());
    a.extend(args(&["--name", "Second"]));
    let out = run_upload(a, env.clone()).await;
    assert!(stderr(&out).contains("skipped: already uploaded (teleport "), "{}", stderr(&out));
    assert!(stderr(&out).contains("--name Second; --force uploads it again"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_run_carried_on_after_ctrl_c_does_not_resend_what_it_finished() {
    let faults = Faults { bandwidth_bps: 4 * MIB, ..Faults::default() };
    let emu = emulator(Config { faults, teleport_chunk_size: 5 * MIB, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (a_zip, _) = make_file(dir.path(), "a.zip", 100_000);
    let (b_zip, b_sha) = make_file(dir.path(), "b.zip", 30 * MIB);
    let state = dir.path().join("state");
    let (flags, mut env) = provider_flags("teleport", &emu);
    env.push(("XDG_STATE_HOME".into(), state.display().to_string()));
    let mut a = vec![a_zip.display().to_string(), b_zip.display().to_string()];
    a.extend(flags);
    a.extend(args(&["--json", "--files", "1", "--force"]));
    // An earlier run uploaded a.zip: --force sends it again.
    let out =
        run_upload(vec![a[0].clone()].into_iter().chain(a[2..a.len() - 1].iter().cloned()).collect(), env.clone())
            .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let a_count = || emu.objects().iter().filter(|o| o.key.ends_with("/a.zip")).count();
    assert_eq!(a_count(), 1);

    let mut child = spawn_upload(&a, &env);
    let t0 = Instant::now();
    while a_count() < 2 || !std::fs::read_dir(state.join("upload/done")).unwrap().any(|_| true) {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it was interrupted");
        assert!(t0.elapsed() < Duration::from_secs(120), "a.zip not sent again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("run the same command again to resume"), "{}", stderr(&out));

    // The same command carries the run on: a.zip is not sent a third time, b.zip completes.
    emu.set_faults(Faults::default());
    let out = run_upload(a.clone(), env.clone()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    let a_line = lines.iter().find(|l| l["file"].as_str().unwrap().ends_with("a.zip")).unwrap();
    assert_eq!(a_line["status"], "skipped", "{a_line}");
    assert!(a_line["reason"].as_str().unwrap().contains("by this --force run"), "{a_line}");
    assert_eq!(a_count(), 2, "a.zip sent once by the --force run");
    let b: Vec<_> = emu.objects().into_iter().filter(|o| o.key.ends_with("/b.zip")).collect();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].sha256, b_sha);

    // That run ended well: the next --force run is a new one and sends both again.
    let out = run_upload(a, env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(a_count(), 3);
}
