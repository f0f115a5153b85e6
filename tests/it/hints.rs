//! What a new user reads when something is wrong (#34): `upload` with no argument, `-h` on one
//! screen, and hints that fit the case: a refused `--token` is not "set TELEPORT_TOKEN",
//! providers without a built-in sign-in are not told to sign in, the S3 port given as the
//! API, `UPLOAD_LIMIT_RATE` named when it is the culprit, a limit below 1 KiB/s refused.

use crate::common::*;

fn upload(emu: &Emulator, file: &std::path::Path, provider: &str, extra: &[&str]) -> Vec<String> {
    let mut a = vec![file.display().to_string()];
    a.extend(args(&["--provider", provider, "--endpoint", &emu.api_url()]));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// The hint after `hint: ` on stderr.
fn hint(out: &std::process::Output) -> String {
    let err = stderr(out);
    err.lines()
        .find_map(|l| l.trim().strip_prefix("hint: "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no hint: {err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_argument_prints_a_short_usage_that_names_the_ways_in() {
    let out = run_upload(vec![], vec![]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    for needle in ["--provider", "upload demo", "--emulate", "upload --help"] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(err.lines().count() <= 15, "{err}");
    assert!(stdout(&out).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_help_fits_one_screen_and_long_help_has_the_rest() {
    let short = run_upload(args(&["-h"]), vec![("COLUMNS".into(), "100".into())]).await;
    assert!(short.status.success(), "{}", stderr(&short));
    let text = stdout(&short);
    let n = text.lines().count();
    assert!(n <= 50, "-h is {n} lines:\n{text}");
    for needle in ["--provider", "--emulate", "upload demo", "--help", "8 "] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    assert!(!text.contains("--athlete-id"), "vendor flags are in --help only: {text}");
    let long = run_upload(args(&["--help"]), vec![("COLUMNS".into(), "100".into())]).await;
    let long = stdout(&long);
    assert!(long.lines().count() > 2 * n, "--help has the rest");
    for needle in ["--athlete-id", "--session <SESSION_ID>", "upload demo", "--emulate", "8 another run"] {
        assert!(long.contains(needle), "{needle}: {long}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_hints_name_where_the_token_came_from_and_only_sign_ins_that_exist() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (zip, _) = make_file(dir.path(), "scan.zip", 1000);
    // A wrong --token: the hint is about --token, not an env var nobody set.
    let out = run_upload(upload(&emu, &zip, "teleport", &["--token", "wrong-token-value"]), vec![]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let h = hint(&out);
    assert!(!h.contains("set TELEPORT_TOKEN") && h.contains("--token"), "{h}");
    assert!(h.contains("--client-id"), "Teleport has a sign-in: {h}");
    assert!(!stderr(&out).contains("wrong-token-value"));
    // A wrong TELEPORT_TOKEN: that variable.
    let out = run_upload(upload(&emu, &zip, "teleport", &[]), vec![("TELEPORT_TOKEN".into(), "wrong".into())]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(hint(&out).contains("set TELEPORT_TOKEN to a fresh one"), "{}", hint(&out));
    // Uplift and Apertur have no built-in sign-in: no hint mentions one.
    let (mov, _) = make_file(dir.path(), "swing.mov", 1000);
    let (jpg, _) = make_file(dir.path(), "photo.jpg", 1000);
    let uplift = [&["--token", "wrong"][..], UPLIFT_FIELDS].concat();
    for a in [
        upload(&emu, &mov, "uplift", UPLIFT_FIELDS),
        upload(&emu, &mov, "uplift", &uplift),
        upload(&emu, &jpg, "apertur", &[]),
        upload(&emu, &jpg, "apertur", &["--token", "wrong"]),
    ] {
        let out = run_upload(a.clone(), vec![]).await;
        assert_eq!(out.status.code(), Some(3), "{a:?}: {}", stderr(&out));
        let h = hint(&out);
        assert!(!h.contains("sign") && !h.contains("credentials"), "{a:?}: {h}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_port_given_as_the_api_says_so() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (zip, _) = make_file(dir.path(), "scan.zip", 1000);
    let mut a = vec![zip.display().to_string()];
    a.extend(args(&["--provider", "teleport", "--endpoint", &emu.s3_url(), "--token", &emu.token()]));
    let out = run_upload(a, vec![]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let h = hint(&out);
    assert!(h.contains("--endpoint") && h.contains("API"), "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_rate_errors_name_their_source_and_a_limit_below_1_kib_is_refused() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (zip, _) = make_file(dir.path(), "scan.zip", 1000);
    let token = token_env("TELEPORT_TOKEN", &emu);
    let env = [token.clone(), vec![("UPLOAD_LIMIT_RATE".into(), "fast".into())]].concat();
    let out = run_upload(upload(&emu, &zip, "teleport", &[]), env).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid UPLOAD_LIMIT_RATE"), "{}", stderr(&out));
    for rate in ["500", "1000B", "00:00,100 12:00,off"] {
        let out = run_upload(upload(&emu, &zip, "teleport", &["--limit-rate", rate]), token.clone()).await;
        assert_eq!(out.status.code(), Some(2), "{rate}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("invalid --limit-rate") && err.contains("1KiB"), "{rate}: {err}");
    }
    assert!(emu.request_log().is_empty(), "{:?}", emu.request_log());
    let out = run_upload(upload(&emu, &zip, "teleport", &["--limit-rate", "1KiB", "--json"]), token).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The result line of one file: `1 part` (singular), and the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_line_says_1_part_and_gives_the_rate() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (zip, _) = make_file(dir.path(), "scan.zip", 3 * MIB);
    let out = run_upload(upload(&emu, &zip, "teleport", &[]), token_env("TELEPORT_TOKEN", &emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let first = stdout(&out).lines().next().unwrap_or_default().to_string();
    assert!(first.contains("(3.00 MiB, 1 part, ") && !first.contains("parts"), "{first}");
    assert!(first.ends_with("/s)") || first.ends_with(" s)"), "{first}");
}

/// A state directory on a full disk (a 256 KiB tmpfs filled up, in a mount namespace of the
/// test's own): one line saying it cannot write there, naming the directory, a hint at
/// `--state-dir`; no request made, no temporary file left.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_directory_fails_before_any_request_and_leaves_no_temp_file() {
    let can = std::process::Command::new("unshare").args(["-r", "-m", "true"]).status().is_ok_and(|s| s.success());
    if !can {
        eprintln!("skipped: no user and mount namespaces here (unshare -r -m)");
        return;
    }
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (zip, _) = make_file(dir.path(), "scan.zip", 3 * MIB);
    let mnt = dir.path().join("full");
    std::fs::create_dir(&mnt).unwrap();
    let script = r#"m=$1; shift
mount -t tmpfs -o size=256k tmpfs "$m" || exit 99
mkdir -p "$m/state"
dd if=/dev/zero of="$m/filler" bs=4k >/dev/null 2>&1
"$@" --state-dir "$m/state"; rc=$?
find "$m/state" -type f -printf 'LEFT %p %s\n'
exit $rc"#;
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-r", "-m", "sh", "-c", script, "sh"]).arg(&mnt).arg(assert_cmd::cargo::cargo_bin("upload"));
    cmd.args(upload(&emu, &zip, "teleport", &[]));
    cmd.env("TELEPORT_TOKEN", emu.token()).env_remove("UPLOAD_CONFIG").env("XDG_CONFIG_HOME", "/nonexistent/x");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let (err, left) = (stderr(&out), stdout(&out));
    assert_ne!(out.status.code(), Some(99), "no tmpfs: {err}");
    assert_eq!(out.status.code(), Some(2), "{err}");
    let state = mnt.join("state");
    assert!(err.contains(&format!("cannot write in the state directory {}", state.display())), "{err}");
    assert!(hint(&out).contains("--state-dir"), "{err}");
    let temps: Vec<&str> = left.lines().filter(|l| l.split(' ').nth(1).is_some_and(|p| p.ends_with(".tmp"))).collect();
    assert!(temps.is_empty(), "temporary files left: {left}");
    assert!(emu.request_log().is_empty(), "{:?}", emu.request_log());
}

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(out).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// `--dry-run` shows what the real run would do: without a token it says the real run would
/// fail (exit 3, the plan still printed); a file already uploaded is a skip; `--format video`
/// on a directory plans its .mp4 files and skips the rest with the reason; every `--json` line
/// validates against `schema/result.schema.json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_tells_what_the_real_run_would_do_in_lines_the_schema_takes() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("walks");
    std::fs::create_dir(&d).unwrap();
    let (lobby, _) = make_file(&d, "lobby.mp4", 1000);
    make_file(&d, "hall.mp4", 1000);
    make_file(&d, "readme.txt", 10);
    let state = dir.path().join("state");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/result.schema.json")).unwrap();
    let schema = jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap();
    let run = |extra: &[&str], env: Vec<(String, String)>| {
        let mut a = vec![d.display().to_string()];
        a.extend(args(&["--provider", "teleport", "--format", "video", "--endpoint", &emu.api_url(), "--state-dir"]));
        a.push(state.display().to_string());
        a.extend(extra.iter().map(|s| s.to_string()));
        run_upload(a, env)
    };
    // No token: the plan, then exit 3 saying why.
    let out = run(&["--dry-run", "--json"], vec![]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("the real run would fail"), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines {
        let errors: Vec<String> = schema.iter_errors(l).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{l}: {errors:?}");
    }
    let by = |name: &str| lines.iter().find(|l| l["file"].as_str().unwrap().ends_with(name)).unwrap().clone();
    assert_eq!(by("lobby.mp4")["dry_run"], true, "{lines:?}");
    assert_eq!(by("readme.txt")["status"], "skipped", "{lines:?}");
    assert!(by("readme.txt")["reason"].as_str().unwrap().contains("--format video"), "{lines:?}");
    assert!(emu.request_log().is_empty());

    // Upload one of them; the dry run then shows it skipped, as the real run would.
    let mut a = vec![lobby.display().to_string()];
    a.extend(args(&["--provider", "teleport", "--format", "video", "--endpoint", &emu.api_url(), "--state-dir"]));
    a.push(state.display().to_string());
    let out = run_upload(a, token_env("TELEPORT_TOKEN", &emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let n = emu.request_log().len();
    let out = run(&["--dry-run", "--json"], token_env("TELEPORT_TOKEN", &emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    for l in &lines {
        let errors: Vec<String> = schema.iter_errors(l).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{l}: {errors:?}");
    }
    let lobby_line = lines.iter().find(|l| l["file"].as_str().unwrap().ends_with("lobby.mp4")).unwrap();
    assert_eq!(lobby_line["status"], "skipped", "{lines:?}");
    assert!(lobby_line["reason"].as_str().unwrap().contains("already uploaded"), "{lines:?}");
    assert_eq!(emu.request_log().len(), n, "a dry run makes no request");

    // The real run: the two videos (one skipped as uploaded), readme.txt skipped, not sent.
    let out = run(&["--json"], token_env("TELEPORT_TOKEN", &emu)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(emu.objects().len(), 2, "lobby.mp4 and hall.mp4, not readme.txt");
}
