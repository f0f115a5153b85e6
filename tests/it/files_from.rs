//! `--files-from LIST`: the paths of a run read from a file or standard input (one a line, or
//! NUL-separated with `-0`), as `find`, `fd` and pipelines give them.

use std::collections::BTreeMap;
use std::process::Stdio;

use crate::common::*;

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(out).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// The stored objects' SHA-256s, counted.
fn stored(emu: &Emulator) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for o in emu.objects() {
        *m.entry(o.sha256).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_print0_piped_into_files_from_uploads_every_file_byte_exact() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    std::fs::create_dir_all(media.join("day 2/deep")).unwrap();
    // Names a newline-separated list could not carry: a newline, spaces, a leading dash.
    let mut want = BTreeMap::new();
    for (sub, name, size) in [
        ("", "a.zip", 1_000u64),
        ("", "with space.zip", 70_001),
        ("day 2", "line\nbreak.zip", 12_345),
        ("day 2/deep", "-dash.zip", 3 * MIB + 17),
        ("day 2/deep", "z.zip", 1),
    ] {
        let (_, sha) = make_file(&media.join(sub), name, size);
        *want.entry(sha).or_insert(0usize) += 1;
    }
    let mut find = std::process::Command::new("find")
        .arg(&media)
        .args(["-type", "f", "-print0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("find runs");
    let a = args(&["--files-from", "-", "-0", "--provider", "teleport", "--endpoint", &emu.api_url(), "--json"]);
    let env = token_env("TELEPORT_TOKEN", &emu);
    let mut cmd = upload_command(&a, &env);
    cmd.stdin(find.stdout.take().unwrap());
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("the binary runs")).await.unwrap();
    assert!(find.wait().unwrap().success());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.iter().filter(|l| l["status"] == "uploaded").count(), 5, "{lines:?}");
    assert!(
        lines.iter().any(|l| l["file"].as_str().is_some_and(|f| f.ends_with("line\nbreak.zip"))),
        "the name with a newline arrives whole: {lines:?}"
    );
    assert_eq!(stored(&emu), want, "every file arrived once, byte-exact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_path_is_reported_and_the_rest_uploaded_blank_lines_ignored() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, sha_a) = make_file(dir.path(), "a.zip", 5_000);
    let (b, sha_b) = make_file(dir.path(), "b.zip", 6_000);
    let missing = dir.path().join("gone.zip");
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    // A blank line, a CRLF line end, a missing file and a directory among the files.
    let list = dir.path().join("list.txt");
    std::fs::write(
        &list,
        format!("{}\n\n{}\r\n{}\n{}\n\n", a.display(), missing.display(), b.display(), sub.display()),
    )
    .unwrap();
    let out = run_upload(
        args(&["--files-from", list.to_str().unwrap(), "--provider", "teleport", "--endpoint", &emu.api_url()]),
        token_env("TELEPORT_TOKEN", &emu),
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "a file that cannot be read fails the run (bad input): {err}");
    assert!(err.contains(&format!("{}", missing.display())) && err.contains("No such file"), "{err}");
    assert!(err.contains("is a directory; --files-from lists files"), "{err}");
    assert!(err.contains("2 uploaded, 1 skipped, 1 failed"), "{err}");
    assert_eq!(stored(&emu), BTreeMap::from([(sha_a, 1), (sha_b, 1)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_from_bad_input_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let base = ["--provider", "teleport", "--endpoint", "http://127.0.0.1:9", "--token", "t"];
    for (extra, want) in [
        (vec!["--files-from", empty.to_str().unwrap()], "lists no files"),
        (vec!["--files-from", "/nonexistent/list.txt"], "/nonexistent/list.txt"),
        (vec!["-0"], "--files-from"),
    ] {
        let mut a = args(&extra);
        a.extend(args(&base));
        let out = run_upload(a, vec![]).await;
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{extra:?}: {}", stderr(&out));
    }
    let out = run_upload(
        args(&["watch", "--files-from", empty.to_str().unwrap(), "--provider", "teleport", "--token", "t"]),
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not --files-from"), "{}", stderr(&out));
}
