//! `--connect-timeout` (env `UPLOAD_CONNECT_TIMEOUT`, config `[defaults] connect_timeout`):
//! checked like the other durations, merged flag > env > file > 5 s, and applied to every
//! client of the run. A host that never completes the TCP handshake is made deterministic with
//! a loopback listener whose accept queue is full (backlog 0, one connection queued, never
//! accepted): Linux drops further SYNs, so a connect there hangs until its timeout.

use std::time::Duration;

use crate::common::*;

/// A loopback address where connects hang: the listener and the connection filling its queue
/// must live as long as the test.
struct Blackhole {
    _listener: tokio::net::TcpListener,
    _queued: std::net::TcpStream,
    port: u16,
}

fn blackhole() -> Blackhole {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let port = listener.local_addr().unwrap().port();
    let queued = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(10))
        .expect("the first connection fills the accept queue");
    Blackhole { _listener: listener, _queued: queued, port }
}

fn upload_args(file: &std::path::Path, port: u16, extra: &[&str]) -> Vec<String> {
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut a = args(&[
        file.to_str().unwrap(),
        "--provider",
        "teleport",
        "--endpoint",
        &endpoint,
        "--token",
        "t",
        "--retries",
        "0",
    ]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connect_timeouts_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = make_file(dir.path(), "a.mp4", 1000);
    // Nothing listens on port 1: no value below may get as far as a request.
    for (value, want) in [
        ("0", "more than zero"),
        ("0ms", "more than zero"),
        ("2h", "at most 1h"),
        ("99999999999999999999", "too long"),
        ("5 parsecs", "invalid duration"),
    ] {
        let out = run_upload(upload_args(&file, 1, &["--connect-timeout", value]), vec![]).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "--connect-timeout {value}: {err}");
        assert!(err.contains(want) && err.contains("--connect-timeout"), "--connect-timeout {value}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        let env = vec![("UPLOAD_CONNECT_TIMEOUT".to_string(), value.to_string())];
        let out = run_upload(upload_args(&file, 1, &[]), env).await;
        assert_eq!(out.status.code(), Some(2), "UPLOAD_CONNECT_TIMEOUT={value}: {}", stderr(&out));
    }
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[defaults]\nconnect_timeout = \"0s\"\n").unwrap();
    let env = vec![("UPLOAD_CONFIG".to_string(), config.display().to_string())];
    let out = run_upload(upload_args(&file, 1, &[]), env).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("connect_timeout") && err.contains("more than zero"), "{err}");
    assert!(err.starts_with("upload: error: config file [defaults] connect_timeout: "), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_that_never_completes_ends_at_the_connect_timeout_flag_env_or_file() {
    let hole = blackhole();
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = make_file(dir.path(), "a.mp4", 1000);
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[defaults]\nconnect_timeout = \"700ms\"\n").unwrap();
    let cfg = ("UPLOAD_CONFIG".to_string(), config.display().to_string());
    let env = ("UPLOAD_CONNECT_TIMEOUT".to_string(), "600ms".to_string());
    for (extra, envs, want) in [
        (vec!["--connect-timeout", "300ms"], vec![cfg.clone(), env.clone()], "300ms"),
        (vec![], vec![cfg.clone(), env.clone()], "600ms"),
        (vec![], vec![cfg.clone()], "700ms"),
    ] {
        let out = run_upload(upload_args(&file, hole.port, &extra), envs).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(5), "{err}");
        assert!(err.contains(&format!("no connection within {want} (--connect-timeout)")), "want {want}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_timeout_reaches_sign_in_and_subcommand_clients() {
    let hole = blackhole();
    let endpoint = format!("http://127.0.0.1:{}", hole.port);
    // The built-in sign-in's own client (the token endpoint is the blackhole), and a
    // management subcommand's.
    let sign_in = [
        "auth",
        "check",
        "--provider",
        "teleport",
        "--endpoint",
        &endpoint,
        "--auth-endpoint",
        &endpoint,
        "--client-id",
        "c",
        "--client-secret",
        "s",
        "--connect-timeout",
        "250ms",
    ];
    let list =
        ["teleport", "list", "--endpoint", &endpoint, "--token", "t", "--retries", "0", "--connect-timeout", "350ms"];
    for (argv, want) in [(&sign_in[..], "250ms"), (&list[..], "350ms")] {
        let out = run_upload(args(argv), vec![]).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(5), "{err}");
        assert!(err.contains(&format!("no connection within {want} (--connect-timeout)")), "{err}");
    }
}

/// The value is the client's, not only the message's: with `--connect-timeout 1h` the connect
/// is still pending well after the 5 s default would have ended the run (a lower bound on
/// time: a loaded machine only makes the run slower, never faster).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_connect_timeout_outlasts_the_default() {
    let hole = blackhole();
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = make_file(dir.path(), "a.mp4", 1000);
    let mut child = spawn_upload(&upload_args(&file, hole.port, &["--connect-timeout", "1h"]), &[]);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(still_running, "the run ended before 12 s: {}", stderr(&out));
}

/// `upload pending --resume --connect-timeout D` resumes with D (the resumed run sets its
/// clients up again from a command line of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_resume_keeps_the_connect_timeout() {
    let hole = blackhole();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (file, _) = make_file(dir.path(), "a.zip", 1000);
    // A run that failed to connect made nothing and leaves no journal: the pending upload is
    // one whose create may have gone out (its intent written, the answer never read), as a run
    // killed at that point leaves it.
    let mut a = upload_args(&file, hole.port, &["--connect-timeout", "200ms", "--state-dir"]);
    a.push(state.display().to_string());
    let out = run_upload(a, vec![]).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(upload::engine::journal::list(&state).is_empty(), "a create that never connected left a journal");
    let source = upload::engine::source::FileSource::open(&file).unwrap();
    let endpoint = format!("http://127.0.0.1:{}", hole.port);
    let journal = upload::engine::journal::Journal::open(&state, "teleport", &endpoint, &source, true).unwrap();
    journal.intent(upload::engine::plan::PartPlan { file_size: 1000, part_size: 1000, num_parts: 0 }).unwrap();
    drop(journal);
    let mut a = args(&["pending", "--resume", "--token", "t", "--connect-timeout", "450ms", "--state-dir"]);
    a.push(state.display().to_string());
    let out = run_upload(a, vec![]).await;
    let err = stderr(&out);
    assert!(err.contains("no connection within 450ms (--connect-timeout)"), "{err}");
}
