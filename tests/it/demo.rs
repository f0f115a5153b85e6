//! `upload demo` and `upload --emulate`: the README's first command, with no account.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_uploads_a_sample_and_reports_a_byte_exact_copy() {
    let out = run_upload(args(&["demo", "--size", "11MiB", "--json"]), vec![]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let line: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        (line["provider"].as_str(), line["status"].as_str(), line["bytes"].as_u64()),
        (Some("teleport"), Some("UPLOADED"), Some(11 << 20))
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
