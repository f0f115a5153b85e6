//! The request executor seen from the command line: unreachable origins, oversized answers,
//! answers that lie.

use std::time::{Duration, Instant};

use crate::common::*;

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_origin_is_reported_within_seconds_and_each_retry_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "scan.zip", 1000);
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let t0 = Instant::now();
    let out = run_upload(
        args(&[path.to_str().unwrap(), "--provider", "teleport", "--endpoint", &endpoint]),
        vec![("TELEPORT_TOKEN".into(), "t".into())],
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    // Generous for a loaded machine; the old behaviour took 45-70 s.
    assert!(t0.elapsed() < Duration::from_secs(30), "took {:?}", t0.elapsed());
    assert_eq!(err.matches("retrying in").count(), 3, "{err}");
    assert!(err.contains("create capture: retrying in") && err.contains("(1/3)") && err.contains("(3/3)"), "{err}");
    assert!(err.contains(&format!("cannot reach 127.0.0.1:{}", endpoint.rsplit(':').next().unwrap())), "{err}");
    assert!(err.contains("hint: check the endpoint"), "{err}");
    assert!(!err.contains("finished parts"), "a hint about parts does not fit: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_runs_do_not_show_the_retries() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "scan.zip", 1000);
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let out = run_upload(
        args(&[path.to_str().unwrap(), "--provider", "teleport", "--endpoint", &endpoint, "--quiet"]),
        vec![("TELEPORT_TOKEN".into(), "t".into())],
    )
    .await;
    assert_eq!(out.status.code(), Some(5));
    assert!(!stderr(&out).contains("retrying in"), "{}", stderr(&out));
}
