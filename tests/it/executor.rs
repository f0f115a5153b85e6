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

/// A hand-made HTTP/1.1 server on loopback: `answer(method, path)` gives the raw response
/// (status line, headers and body). Records every request line it gets.
struct Stub {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn stub(answer: impl Fn(&str, &str, &str) -> Vec<u8> + Send + Sync + 'static) -> Stub {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (log, answer, base) = (seen.clone(), std::sync::Arc::new(answer), url.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let (log, answer, base) = (log.clone(), answer.clone(), base.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let (m, p) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
                    log.lock().unwrap().push(format!("{m} {p}"));
                    if conn.write_all(&answer(&m, &p, &base)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Stub { url, seen }
}

fn json_response(status: &str, body: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

async fn teleport_against(stub: &Stub) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "scan.zip", 1000);
    run_upload(
        args(&[path.to_str().unwrap(), "--provider", "teleport", "--endpoint", &stub.url, "--retries", "1"]),
        vec![("TELEPORT_TOKEN".into(), "secret-token-123".into())],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_that_climbs_out_of_its_path_is_never_used() {
    // An eid is used in a path only when it is one path segment of safe characters: anything
    // else is refused before any request, naming the server.
    for eid in ["../../../_x", "", "a/b", "..;", "a b", "a\u{1}b", "%2e%2e"] {
        let body = serde_json::json!({ "eid": eid, "num_parts": 1, "chunk_size": 10485760 }).to_string();
        let s = stub(move |m, p, _| match (m, p) {
            ("POST", "/api/v1/captures") => json_response("200 OK", &body),
            _ => json_response("404 Not Found", r#"{"detail":"nope"}"#),
        });
        let out = teleport_against(&s).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(5), "{eid:?}: {err}");
        assert!(
            err.contains("teleport: unexpected answer to create capture") && err.contains("not one path segment"),
            "{eid:?}: {err}"
        );
        let seen = s.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{eid:?}: a request after the create: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_plain_http_off_loopback_is_not_followed() {
    let s = stub(|_, _, _| {
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://upload-test.invalid/api/v1/captures\r\nContent-Length: 0\r\n\r\n"
            .to_vec()
    });
    let out = teleport_against(&s).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("refused a redirect to http://upload-test.invalid"), "{err}");
    assert!(!err.contains("secret-token-123"));
}

/// Permanent protocol errors (a refused redirect, an answer that is not HTTP) are not retried,
/// neither by an idempotent call (a listing, with 10 retries allowed) nor by a create: one
/// request each, exit 5 at once, naming the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_protocol_errors_are_not_retried() {
    let redirect: &'static [u8] =
        b"HTTP/1.1 302 Found\r\nLocation: http://upload-test.invalid/x\r\nContent-Length: 0\r\n\r\n";
    let bad_header: &'static [u8] = b"HTTP/1.1 200 OK\r\nthis is not a header\r\nContent-Length: 2\r\n\r\n{}";
    for (answer, said) in [(redirect, "refused a redirect"), (bad_header, "invalid HTTP header parsed")] {
        let s = stub(move |_, _, _| answer.to_vec());
        let t0 = Instant::now();
        let list = args(&["teleport", "list", "--endpoint", &s.url, "--retries", "10"]);
        let out = run_upload(list, vec![("TELEPORT_TOKEN".into(), "t".into())]).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(5), "{err}");
        assert!(err.contains(said) && err.contains("not retried"), "{err}");
        assert_eq!(s.seen.lock().unwrap().len(), 1, "sent again: {:?}", s.seen.lock().unwrap());
        // A create: not taken for a lost answer (no look-up follows), not sent again.
        let s = stub(move |_, _, _| answer.to_vec());
        let out = teleport_against(&s).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(5), "{err}");
        assert!(err.contains(said), "{err}");
        assert_eq!(s.seen.lock().unwrap().clone(), vec!["POST /api/v1/captures".to_string()]);
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_answer_is_refused_naming_the_limit() {
    let s = stub(|_, _, _| {
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{\"eid\":".to_vec()
    });
    let out = teleport_against(&s).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("larger than 16.00 MiB"), "{err}");
}

/// An S3 that lies: `answer` decides what a PUT of a part gets.
fn lying_s3(put: &'static [u8]) -> Stub {
    stub(move |m, p, base| match (m, p) {
        ("POST", "/api/v1/captures") => json_response("200 OK", r#"{"eid":"e1","num_parts":1,"chunk_size":10485760}"#),
        ("POST", "/api/v1/captures/e1/create-upload-url/1") => json_response(
            "200 OK",
            &format!(r#"{{"eid":"e1","upload_url":"{base}/s3/part1?X-Amz-Signature=abc","chunk_size":10485760}}"#),
        ),
        ("PUT", _) => put.to_vec(),
        _ => json_response("500 Internal Server Error", r#"{"detail":"unexpected"}"#),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_etag_is_not_taken_for_a_stored_part() {
    let s = lying_s3(b"HTTP/1.1 200 OK\r\nETag: \r\nContent-Length: 0\r\n\r\n");
    let out = teleport_against(&s).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("empty ETag"), "{err}");
    assert!(!s.seen.lock().unwrap().iter().any(|r| r.contains("/uploaded")), "never completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_carrying_an_s3_error_is_retried_not_stored() {
    let s = lying_s3(
        b"HTTP/1.1 200 OK\r\nETag: \"abc\"\r\nContent-Length: 78\r\n\r\n<Error><Code>InternalError</Code><Message>We had a problem</Message></Error>\n\n",
    );
    let out = teleport_against(&s).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("HTTP 200 carrying an S3 error: InternalError"), "{err}");
    let puts = s.seen.lock().unwrap().iter().filter(|r| r.starts_with("PUT")).count();
    assert_eq!(puts, 2, "sent once and retried once (--retries 1)");
    assert!(!s.seen.lock().unwrap().iter().any(|r| r.contains("/uploaded")), "never completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_answered_with_an_error_state_exits_6_with_the_reason() {
    let s = stub(|m, p, base| match (m, p) {
        ("POST", "/api/v1/captures") => json_response("200 OK", r#"{"eid":"e1","num_parts":1,"chunk_size":10485760}"#),
        ("POST", "/api/v1/captures/e1/create-upload-url/1") => json_response(
            "200 OK",
            &format!(r#"{{"eid":"e1","upload_url":"{base}/s3/part1?X-Amz-Signature=abc","chunk_size":10485760}}"#),
        ),
        ("PUT", _) => b"HTTP/1.1 200 OK\r\nETag: \"0123\"\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ("POST", "/api/v1/captures/e1/uploaded") => json_response(
            "200 OK",
            r#"{"eid":"e1","name":"scan.zip","state":"ERROR","error_reason":"INPUT_VALIDATION_FAILED"}"#,
        ),
        _ => json_response("404 Not Found", r#"{"detail":"nope"}"#),
    });
    let out = teleport_against(&s).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("processing of e1 failed: ERROR: INPUT_VALIDATION_FAILED"), "{err}");
}
