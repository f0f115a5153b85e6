//! What scripts and people see: the JSON result schema, exit codes, progress, secrets.

use crate::common::*;

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/result.schema.json")).unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).expect("the schema compiles")
}

fn assert_valid(line: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let validator = schema();
    let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{line} does not match the schema: {errors:?}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_match_the_schema_for_success_and_failure() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (good, _) = make_file(dir.path(), "a.zip", 1234);
    let (bad, _) = make_file(dir.path(), "b.txt", 10);
    let out = run_upload(
        args(&[
            good.to_str().unwrap(),
            bad.to_str().unwrap(),
            "--provider",
            "teleport",
            "--endpoint",
            &emu.api_url(),
            "--json",
        ]),
        vec![("TELEPORT_TOKEN".into(), emu.token())],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "the worst outcome decides: {}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one line per file: {lines:?}");
    let ok_line = lines.iter().find(|l| l.contains("a.zip")).unwrap();
    let failed_line = lines.iter().find(|l| l.contains("b.txt")).unwrap();
    let ok = assert_valid(ok_line);
    assert_eq!((ok["status"].as_str(), ok["bytes"].as_u64()), (Some("uploaded"), Some(1234)));
    let failed = assert_valid(failed_line);
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["exit_code"], 2);
    assert!(failed["error"].as_str().unwrap().contains("cannot tell the Teleport format"));
    assert!(stderr(&out).contains("1 uploaded, 0 skipped, 1 failed"), "{}", stderr(&out));
    // The schema really constrains: a line without `id` is refused.
    let mut broken = ok.clone();
    broken.as_object_mut().unwrap().remove("id");
    assert!(!schema().is_valid(&broken));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_at_debug_level() {
    let faults = Faults { fail_put_nth: vec![1], unauthorized_api_call_nth: vec![2], ..Faults::default() };
    let emu = emulator(Config { faults, teleport_chunk_size: 5 * MIB, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "a.zip", 6 * MIB);
    let cmd = format!("echo {}", emu.token());
    let out = run_upload(
        args(&[path.to_str().unwrap(), "--provider", "teleport", "--endpoint", &emu.api_url(), "--json", "-vv"]),
        vec![("UPLOAD_TOKEN_COMMAND".into(), cmd)],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(emu.objects()[0].sha256, sha);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains("DEBUG"), "-vv logs requests: {all}");
    assert!(all.contains("/uploads/"), "URLs are logged (without their query): {all}");
    assert!(!all.contains(&emu.token()), "token leaked");
    assert!(!all.contains("X-Amz-Signature="), "presigned URL signature leaked");
    assert!(!all.contains("X-Amz-Credential"), "presigned URL query leaked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_drawn_on_a_terminal_and_logged_elsewhere() {
    let emu = emulator(Config { teleport_chunk_size: 5 * MIB, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "a.zip", 11 * MIB);
    let base = args(&[path.to_str().unwrap(), "--provider", "teleport", "--endpoint", &emu.api_url()]);
    let env = vec![("TELEPORT_TOKEN".to_string(), emu.token())];
    let mut tty_env = env.clone();
    tty_env.push(("UPLOAD_FORCE_TTY".into(), "1".into()));
    let out = run_upload(base.clone(), tty_env).await;
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(err.contains("\x1b[") && err.contains("a.zip") && err.contains("parts "), "no bar drawn: {err:?}");
    // Off a terminal: plain lines, for an upload that lasts (11 MiB at 3 MiB/s)...
    let slow = [&base[..], &args(&["--limit-rate", "3MiB"])].concat();
    let out = run_upload(slow, env.clone()).await;
    let err = stderr(&out);
    assert!(!err.contains("\x1b[") && err.contains("upload: a.zip: 100%"), "{err:?}");
    assert!(err.matches("upload: a.zip: ").count() <= 12, "{err:?}");
    // ...and none for one over within the first 2 s: the result says it all.
    let (quick, _) = make_file(dir.path(), "b.zip", 100_000);
    let mut a = base.clone();
    a[0] = quick.display().to_string();
    let out = run_upload(a, env.clone()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains('%'), "{:?}", stderr(&out));
    // --quiet: nothing.
    let mut q = base.clone();
    q.push("--quiet".into());
    let out = run_upload(q, env).await;
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_failure_after_retries_exits_5() {
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "a.zip", 10);
    let out = run_upload(
        args(&[
            path.to_str().unwrap(),
            "--provider",
            "teleport",
            "--endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--retries",
            "1",
        ]),
        vec![("TELEPORT_TOKEN".into(), "t".into())],
    )
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("could not connect"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_request_exits_4_with_the_server_message() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "a.zip", 10);
    let out = run_upload(
        args(&[path.to_str().unwrap(), "--provider", "teleport", "--endpoint", &format!("{}/nope", emu.api_url())]),
        vec![("TELEPORT_TOKEN".into(), emu.token())],
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("create capture was rejected (HTTP 404)"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_and_broken_pipe_is_fine() {
    let out = run_upload(args(&["a.zip", "--provider", "nope"]), vec![]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = run_upload(args(&["a.zip"]), vec![]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no provider given") && stderr(&out).contains("hint: pass --provider"),
        "{}",
        stderr(&out)
    );
    // `upload completions bash | head -1`: the closed pipe is not an error.
    let bin = assert_cmd::cargo::cargo_bin("upload");
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -o pipefail; '{}' completions bash | head -c 10 >/dev/null", bin.display()))
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_supplies_provider_endpoint_and_token_with_secrets_redacted() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "a.zip", 1000);
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[defaults]\nprovider = \"teleport\"\n[teleport]\nendpoint = \"{}\"\ntoken = \"{}\"\n[truvideo]\ntoken_command = \"echo sekret-cmd-token\"\n",
            emu.api_url(),
            emu.token()
        ),
    )
    .unwrap();
    let env = vec![("UPLOAD_CONFIG".to_string(), cfg.display().to_string())];
    let out = run_upload(args(&[path.to_str().unwrap(), "--json"]), env.clone()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(emu.objects()[0].sha256, sha);
    let out = run_upload(args(&["config", "show"]), env.clone()).await;
    assert!(out.status.success());
    assert!(stdout(&out).contains("token = \"***\"") && !stdout(&out).contains(&emu.token()), "{}", stdout(&out));
    let shown = stdout(&out);
    assert!(shown.contains("token_command = \"***\"") && !shown.contains("sekret-cmd-token"), "{shown}");
    let out = run_upload(args(&["config", "path"]), env).await;
    assert_eq!(stdout(&out).trim(), cfg.display().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_plan_and_sends_nothing() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "walk.mp4", 1000);
    let out = run_upload(
        args(&[path.to_str().unwrap(), "--provider", "teleport", "--endpoint", &emu.api_url(), "--dry-run"]),
        vec![("UPLOAD_TOKEN".into(), "t".into())],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("format: video") && text.contains("POST /api/v1/captures") && text.contains("no request made"),
        "{text}"
    );
    assert!(emu.request_log().is_empty());
}
