//! Built-in sign-in (Teleport client credentials, TruVideo signed login): renewal of
//! short-lived tokens during an upload, the token cache, refusals, precedence, `auth check`,
//! and secrets kept out of the output.

use std::path::Path;
use std::time::Duration;

use crate::common::*;

const CLIENT_ID: &str = "emulator-client";
const CLIENT_SECRET: &str = "emulator-client-secret";

/// Successful Teleport sign-ins in the emulator's request log.
fn sign_ins(emu: &Emulator) -> usize {
    emu.request_log().iter().filter(|r| r.path == "/oauth2/token" && r.status == 200).count()
}

/// `upload FILE --provider teleport` against the emulator, signing in there.
fn upload_args(emu: &Emulator, file: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec![file.display().to_string()];
    a.extend(args(&[
        "--provider",
        "teleport",
        "--endpoint",
        &emu.api_url(),
        "--auth-endpoint",
        &emu.api_url(),
        "--json",
    ]));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Credentials in the environment, and a private state home.
fn creds_env(secret: &str, state_home: &Path) -> Vec<(String, String)> {
    vec![
        ("TELEPORT_CLIENT_ID".into(), CLIENT_ID.into()),
        ("TELEPORT_CLIENT_SECRET".into(), secret.into()),
        ("XDG_STATE_HOME".into(), state_home.display().to_string()),
    ]
}

/// Asserts that no secret (client secret, any token the emulator handed out or accepts)
/// appears in the output.
fn assert_no_secrets(emu: &Emulator, out: &std::process::Output, extra: &[&str]) {
    let text = format!("{}{}", stdout(out), stderr(out));
    let mut secrets: Vec<String> = emu.shared().signin.issued_tokens();
    secrets.push(emu.token());
    secrets.extend(extra.iter().map(|s| s.to_string()));
    for s in secrets {
        assert!(!text.contains(&s), "output contains the secret {s}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_with_two_second_tokens_signs_in_again_and_completes() {
    // 30 MiB in 8 MiB parts, one at a time at 6 MiB/s: ~5 s of transfer with tokens living 2 s.
    let emu = emulator(Config {
        token_lifetime: Duration::from_secs(2),
        faults: Faults { bandwidth_bps: 6 * MIB, ..Faults::default() },
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "scan.zip", 30 * MIB);
    let out =
        run_upload(upload_args(&emu, &path, &["--concurrency", "1", "-vv"]), creds_env(CLIENT_SECRET, dir.path()))
            .await;
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(&out));
    let objects = emu.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!((objects[0].size, objects[0].parts), (30 * MIB, 4));
    assert_eq!(objects[0].sha256, sha, "stored object differs from the file");
    let n = sign_ins(&emu);
    assert!(n > 1, "signed in {n} time(s): the 2-second token should have been renewed");
    // Nothing leaks at -vv: neither the client secret nor any of the tokens.
    assert!(stderr(&out).contains("signed in"), "-vv logs the sign-in: {}", stderr(&out));
    assert_no_secrets(&emu, &out, &[CLIENT_SECRET]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_fails_fast_with_the_auth_exit_code() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "scan.zip", MIB);
    let (b, _) = make_file(dir.path(), "b.zip", MIB);
    let (c, _) = make_file(dir.path(), "c.zip", MIB);
    let started = std::time::Instant::now();
    let extra = ["-vv".to_string(), b.display().to_string(), c.display().to_string()];
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let out = run_upload(upload_args(&emu, &path, &extra), creds_env("not-the-secret-42", dir.path())).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("client_secret refused by the sign-in endpoint"), "{err}");
    assert!(err.contains("hint: check --client-secret"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "a refusal is not retried");
    // One sign-in attempt for the three files, nothing else: no capture was created.
    let log = emu.request_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!((log[0].path.as_str(), log[0].status), ("/oauth2/token", 401));
    assert_no_secrets(&emu, &out, &["not-the-secret-42", CLIENT_SECRET]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_client_id_is_named() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "scan.zip", MIB);
    let mut env = creds_env(CLIENT_SECRET, dir.path());
    env[0].1 = "someone-else".into();
    let out = run_upload(upload_args(&emu, &path, &[]), env).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("client_id someone-else refused"), "{}", stderr(&out));
    assert_no_secrets(&emu, &out, &[CLIENT_SECRET]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_cache_is_reused_across_runs() {
    let emu = emulator(Config { teleport_chunk_size: 5 * MIB, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.zip", "b.zip"] {
        let (path, sha) = make_file(dir.path(), name, 6 * MIB);
        let out = run_upload(upload_args(&emu, &path, &[]), creds_env(CLIENT_SECRET, dir.path())).await;
        assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(&out));
        assert!(emu.objects().iter().any(|o| o.sha256 == sha));
    }
    assert_eq!(sign_ins(&emu), 1, "the second run takes the token from the cache");
    // The cache: one file, owner-only, holding the token but never the client secret.
    let files: Vec<_> =
        std::fs::read_dir(dir.path().join("upload/tokens")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(!text.contains(CLIENT_SECRET), "{text}");
    assert!(text.contains(CLIENT_ID), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_cached_token_is_replaced_by_a_new_sign_in() {
    let emu = emulator(Config { teleport_chunk_size: 5 * MIB, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "a.zip", MIB);
    let out = run_upload(upload_args(&emu, &path, &[]), creds_env(CLIENT_SECRET, dir.path())).await;
    assert!(out.status.success(), "{}", stderr(&out));
    // The next run's first API call answers 401 although its cached token is good (revoked).
    emu.set_faults(Faults { unauthorized_api_call_nth: vec![1], ..Faults::default() });
    let (path, sha) = make_file(dir.path(), "b.zip", 6 * MIB);
    let out = run_upload(upload_args(&emu, &path, &[]), creds_env(CLIENT_SECRET, dir.path())).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(emu.objects().iter().any(|o| o.sha256 == sha));
    assert_eq!(sign_ins(&emu), 2, "the refused cached token was dropped and a new one fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_token_outranks_the_sign_in_which_outranks_the_command() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "a.zip", MIB);
    let counter = dir.path().join("runs");
    let cmd = format!("echo x >> {}; echo {}", counter.display(), emu.token());
    // Env token + credentials + command: the env token is used; no sign-in, no command.
    let mut env = creds_env(CLIENT_SECRET, dir.path());
    env.push(("TELEPORT_TOKEN".into(), emu.token()));
    let out = run_upload(upload_args(&emu, &path, &["--token-command", &cmd]), env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sign_ins(&emu), 0);
    assert!(!counter.exists(), "the token command must not run");
    // Credentials + command: the sign-in is used, the command is not run (another file: one
    // already uploaded would be skipped).
    let (path, _) = make_file(dir.path(), "b.zip", MIB);
    let out =
        run_upload(upload_args(&emu, &path, &["--token-command", &cmd]), creds_env(CLIENT_SECRET, dir.path())).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sign_ins(&emu), 1);
    assert!(!counter.exists(), "the token command must not run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_credentials_are_refused_locally() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "a.zip", MIB);
    let out = run_upload(upload_args(&emu, &path, &["--client-id", CLIENT_ID]), vec![]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--client-secret missing"), "{}", stderr(&out));
    assert!(emu.request_log().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_check_signs_in_and_makes_one_read_only_call() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let base = args(&["auth", "check", "--provider", "teleport", "--endpoint", &emu.api_url()]);
    let mut a = base.clone();
    a.extend(args(&["--auth-endpoint", &emu.api_url(), "-vv"]));
    let out = run_upload(a.clone(), creds_env(CLIENT_SECRET, dir.path())).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("teleport: credentials accepted"), "{text}");
    assert!(text.contains("signed in as client id emulator-client"), "{text}");
    assert!(text.contains("GET /api/v1/captures?limit=1 answered 200"), "{text}");
    let paths: Vec<_> = emu.request_log().into_iter().map(|r| (r.method, r.path, r.status)).collect();
    assert_eq!(
        paths,
        [("POST".into(), "/oauth2/token".into(), 200), ("GET".into(), "/api/v1/captures".into(), 200)],
        "one sign-in, one read-only call"
    );
    assert_no_secrets(&emu, &out, &[CLIENT_SECRET]);

    // JSON output.
    let mut j = a.clone();
    j.push("--json".into());
    let out = run_upload(j, creds_env(CLIENT_SECRET, dir.path())).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["token_source"].as_str(), v["status"].as_u64()),
        (Some(true), Some("sign-in"), Some(200))
    );

    // A wrong secret: exit 3, no API call.
    let before = emu.request_log().len();
    let out = run_upload(a, creds_env("wrong-secret-123", dir.path())).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("client_secret refused"), "{}", stderr(&out));
    assert_eq!(emu.request_log().len(), before + 1);
    assert_no_secrets(&emu, &out, &["wrong-secret-123"]);

    // A given token is checked as is; a bad one is exit 3.
    let mut t = base.clone();
    t.extend(args(&["--token", &emu.token()]));
    let out = run_upload(t, vec![]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("token: given"), "{}", stdout(&out));
    let mut t = base;
    t.extend(args(&["--token", "not-a-token"]));
    let out = run_upload(t, vec![]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_config_file() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[teleport]\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\nendpoint = \"{}\"\n",
            emu.api_url()
        ),
    )
    .unwrap();
    let env = vec![
        ("UPLOAD_CONFIG".to_string(), cfg.display().to_string()),
        ("XDG_STATE_HOME".to_string(), dir.path().display().to_string()),
    ];
    let (path, sha) = make_file(dir.path(), "a.zip", MIB);
    let a = vec![
        path.display().to_string(),
        "--provider".into(),
        "teleport".into(),
        "--auth-endpoint".into(),
        emu.api_url(),
    ];
    let out = run_upload(a, env.clone()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(emu.objects()[0].sha256, sha);
    assert_eq!(sign_ins(&emu), 1);
    // `auth check` reads the same keys (and signs in anew).
    let out =
        run_upload(args(&["auth", "check", "--provider", "teleport", "--auth-endpoint", &emu.api_url()]), env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(sign_ins(&emu), 2);
    assert_no_secrets(&emu, &out, &[CLIENT_SECRET]);
}

const TV_SECRET_KEY: &str = "emulator-secret-key";

fn tv_env(secret_key: &str, state_home: &Path) -> Vec<(String, String)> {
    vec![
        ("TRUVIDEO_API_KEY".into(), "emulator-api-key".into()),
        ("TRUVIDEO_SECRET_KEY".into(), secret_key.into()),
        ("TRUVIDEO_EXTERNAL_ID".into(), "emulator-tenant".into()),
        ("XDG_STATE_HOME".into(), state_home.display().to_string()),
    ]
}

fn tv_logins(emu: &Emulator) -> usize {
    emu.request_log().iter().filter(|r| r.path == "/api/login" && r.status == 200).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truvideo_upload_with_signed_login_and_short_lived_tokens() {
    // 12 MiB in 5 MiB parts at 4 MiB/s, tokens living 2 s: the token is renewed mid-upload.
    let emu = emulator(Config {
        token_lifetime: Duration::from_secs(2),
        faults: Faults { bandwidth_bps: 4 * MIB, ..Faults::default() },
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "walk.mp4", 12 * MIB);
    let a = vec![
        path.display().to_string(),
        "--provider".into(),
        "truvideo".into(),
        "--endpoint".into(),
        emu.api_url(),
        "--auth-endpoint".into(),
        emu.api_url(),
        "--part-size".into(),
        "5MiB".into(),
        "--concurrency".into(),
        "1".into(),
        "--poll-interval".into(),
        "100ms".into(),
        "--json".into(),
        "-vv".into(),
    ];
    let out = run_upload(a, tv_env(TV_SECRET_KEY, dir.path())).await;
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(&out));
    let objects = emu.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].sha256, sha, "stored object differs from the file");
    let n = tv_logins(&emu);
    assert!(n > 1, "logged in {n} time(s): the 2-second token should have been renewed");
    assert_no_secrets(&emu, &out, &[TV_SECRET_KEY]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truvideo_auth_check_and_a_wrong_secret_key() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let a = args(&[
        "auth",
        "check",
        "--provider",
        "truvideo",
        "--endpoint",
        &emu.api_url(),
        "--auth-endpoint",
        &emu.api_url(),
        "-vv",
    ]);
    let out = run_upload(a.clone(), tv_env(TV_SECRET_KEY, dir.path())).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("truvideo: credentials accepted"), "{text}");
    assert!(text.contains("GET /upload/00000000-0000-0000-0000-000000000000 answered 400"), "{text}");
    assert!(text.contains("sub=emulator-tenant"), "the JWT says who: {text}");
    assert_no_secrets(&emu, &out, &[TV_SECRET_KEY]);

    let before = emu.request_log().len();
    let out = run_upload(a, tv_env("not-the-key-77", dir.path())).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("secret_key (the login signature) refused"), "{}", stderr(&out));
    assert_eq!(emu.request_log().len(), before + 1, "only the login was tried");
    assert_no_secrets(&emu, &out, &["not-the-key-77", TV_SECRET_KEY]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_subcommands_sign_in_too() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let a = args(&["teleport", "list", "--endpoint", &emu.api_url(), "--auth-endpoint", &emu.api_url()]);
    let out = run_upload(a.clone(), creds_env(CLIENT_SECRET, dir.path())).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(sign_ins(&emu), 1);
    // A wrong secret with a fresh cache: exit 3 before any API call.
    let other = tempfile::tempdir().unwrap();
    let out = run_upload(a, creds_env("wrong-secret-123", other.path())).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("client_secret refused"), "{}", stderr(&out));
    assert_no_secrets(&emu, &out, &["wrong-secret-123", CLIENT_SECRET]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_is_not_taken_with_a_wrong_client_secret() {
    let emu = emulator(Config { teleport_chunk_size: 5 * MIB, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "a.zip", MIB);
    let out = run_upload(upload_args(&emu, &path, &[]), creds_env(CLIENT_SECRET, dir.path())).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sign_ins(&emu), 1);
    // The cache holds a fresh token for this client id; a wrong secret must not unlock it.
    let (path, _) = make_file(dir.path(), "b.zip", MIB);
    let out = run_upload(upload_args(&emu, &path, &[]), creds_env("wrong-secret-123", dir.path())).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("client_secret refused"), "{}", stderr(&out));
    assert_eq!(emu.objects().len(), 1, "nothing uploaded with the wrong secret");
    // The right secret still takes the cached token.
    let out = run_upload(upload_args(&emu, &path, &[]), creds_env(CLIENT_SECRET, dir.path())).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sign_ins(&emu), 1, "the right secret reuses the cache");
    assert_no_secrets(&emu, &out, &["wrong-secret-123", CLIENT_SECRET]);
}
