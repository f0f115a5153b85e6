//! Teleport capture management through the real binary: `--wait`, `upload teleport list|status|
//! rename|delete|metadata|download` against the emulator.

use std::io::Write;
use std::time::Duration;

use sha2::{Digest, Sha256};
use upload_emulator::Processing;
use upload_emulator::teleport as emu_teleport;

use crate::common::*;

/// `upload teleport <sub> <extra...> --endpoint URL`.
/// An upload of `path` to the emulator, then `extra`.
fn wait_args(emu: &Emulator, path: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec![path.display().to_string()];
    a.extend(args(&["--provider", "teleport", "--endpoint", &emu.api_url()]));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn cmd(emu: &Emulator, sub: &str, extra: &[&str]) -> Vec<String> {
    let mut a = args(&["teleport", sub]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a.extend(args(&["--endpoint", &emu.api_url()]));
    a
}

async fn run_ok(emu: &Emulator, a: Vec<String>) -> String {
    let out = run_upload(a.clone(), token_env("TELEPORT_TOKEN", emu)).await;
    assert!(out.status.success(), "{a:?}: exit {:?}: {}", out.status.code(), stderr(&out));
    stdout(&out)
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Creates `n` captures straight through the API (state CREATED); eids newest first.
async fn create_captures(emu: &Emulator, n: usize) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut eids = Vec::new();
    for i in 0..n {
        let v: serde_json::Value = http
            .post(format!("{}/api/v1/captures", emu.api_url()))
            .bearer_auth(emu.token())
            .json(&serde_json::json!({"name": format!("cap-{i:02}.zip"), "bytesize": 1000, "input_data_format": "bulk-images"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        eids.push(v["eid"].as_str().unwrap().to_string());
    }
    eids.reverse();
    eids
}

/// Uploads a small file with `--wait` (the emulator's processing is instant): a READY capture.
/// Returns the outcome.
async fn ready_capture(emu: &Emulator, dir: &std::path::Path) -> serde_json::Value {
    let (path, _) = make_file(dir, "scan.zip", 1000);
    let a = args(&[path.to_str().unwrap(), "--provider", "teleport", "--endpoint", &emu.api_url(), "--wait", "--json"]);
    let v: serde_json::Value = serde_json::from_str(run_ok(emu, a).await.trim()).unwrap();
    assert_eq!(v["state"], "READY", "{v}");
    v
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn model_requests(emu: &Emulator) -> Vec<u16> {
    emu.request_log().iter().filter(|r| r.path.starts_with("/cdn/")).map(|r| r.status).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_follows_processing_past_the_first_page() {
    let emu =
        emulator(Config { processing: Processing { delay_ms: 4000, fail_reason: None }, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, file_sha) = make_file(dir.path(), "walk.mp4", 3 * MIB);
    let a = wait_args(&emu, &path, &["--wait", "--poll-interval", "200ms", "--json"]);
    let upload = tokio::spawn(run_upload(a, token_env("TELEPORT_TOKEN", &emu)));
    // Once the capture exists, 30 newer ones push it to the second page of 25.
    let t0 = std::time::Instant::now();
    while emu_teleport::captures_summary(emu.shared()).as_array().unwrap().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the upload never created its capture");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    create_captures(&emu, 30).await;
    let out = upload.await.unwrap();
    assert!(out.status.success(), "exit {:?}: {}", out.status.code(), stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["status"], "ready", "{v}");
    assert_eq!(v["vendor_status"], "READY");
    assert_eq!(v["state"], "READY");
    let sid = v["sid"].as_str().expect("a READY capture has a sid");
    assert!(v["viewer_url"].as_str().is_some_and(|u| u.ends_with(sid)), "{v}");
    assert!(emu_teleport::list_queries(emu.shared()).contains(&(25, 25)), "the client never looked at page 2");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/result.schema.json")).unwrap();
    let schema = jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap();
    assert!(schema.is_valid(&v), "{v}");
    let err = stderr(&out);
    assert!(err.contains("PROCESSING: Training the 3D model"), "{err}");
    assert_eq!(emu.objects()[0].sha256, file_sha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_reports_failed_processing() {
    let emu = emulator(Config {
        processing: Processing { delay_ms: 300, fail_reason: Some("NOT_ENOUGH_FRAMES".into()) },
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "scan.zip", 1000);
    let a = wait_args(&emu, &path, &["--wait", "--poll-interval", "100ms", "--json"]);
    let out = run_upload(a, token_env("TELEPORT_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("upload: error: teleport: processing of"), "{err}");
    assert!(err.contains("ERROR: NOT_ENOUGH_FRAMES (not-enough-frames)"), "{err}");
    let line: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(line["exit_code"], 6, "{line}");
    assert!(line["error"].as_str().unwrap().contains("NOT_ENOUGH_FRAMES"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_times_out() {
    let emu =
        emulator(Config { processing: Processing { delay_ms: 600_000, fail_reason: None }, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "scan.zip", 1000);
    let a = wait_args(&emu, &path, &["--wait", "--wait-timeout", "1s", "--poll-interval", "200ms"]);
    let out = run_upload(a, token_env("TELEPORT_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("timed out after 1 s") && err.contains("last state"), "{err}");
    assert!(err.contains("hint: raise --wait-timeout"), "{err}");
    // The upload itself is complete.
    assert_eq!(emu.objects().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_table_and_json_lines() {
    let emu = emulator(Config::default()).await;
    let eids = create_captures(&emu, 30).await;

    let all = json_lines(&run_ok(&emu, cmd(&emu, "list", &["--all", "--json"])).await);
    let got: Vec<&str> = all.iter().map(|c| c["eid"].as_str().unwrap()).collect();
    assert_eq!(got, eids, "every capture, newest first");
    assert_eq!(emu_teleport::list_queries(emu.shared()), [(25, 0), (25, 25)], "pages until a short page");
    assert_eq!(all[0]["state"], "CREATED");
    assert_eq!(all[0]["name"], "cap-29.zip");
    assert!(all[0]["created"].as_str().unwrap().ends_with('Z'), "times are given as UTC: {}", all[0]);

    let first = json_lines(&run_ok(&emu, cmd(&emu, "list", &["--json"])).await);
    assert_eq!(first.len(), 25);
    let slice = json_lines(&run_ok(&emu, cmd(&emu, "list", &["--limit", "10", "--offset", "5", "--json"])).await);
    let got: Vec<&str> = slice.iter().map(|c| c["eid"].as_str().unwrap()).collect();
    assert_eq!(got, eids[5..15]);

    let before = emu_teleport::list_queries(emu.shared()).len();
    let tens = json_lines(&run_ok(&emu, cmd(&emu, "list", &["--all", "--limit", "10", "--json"])).await);
    assert_eq!(tens.len(), 30);
    assert_eq!(emu_teleport::list_queries(emu.shared())[before..], [(10, 0), (10, 10), (10, 20), (10, 30)]);

    let table = run_ok(&emu, cmd(&emu, "list", &["--all"])).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 31, "{table}");
    for h in ["EID", "NAME", "STATE", "CREATED", "UPLOADED", "VIEWER_URL"] {
        assert!(lines[0].contains(h), "{table}");
    }
    assert!(
        lines[1].starts_with(&eids[0]) && lines[1].contains("cap-29.zip") && lines[1].contains("CREATED"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_rename() {
    let emu = emulator(Config::default()).await;
    let eids = create_captures(&emu, 27).await;
    let oldest = eids.last().unwrap();
    // The oldest capture is on the second page of the list.
    let v = json_lines(&run_ok(&emu, cmd(&emu, "status", &[oldest, "--json"])).await);
    assert_eq!(v[0]["eid"], oldest.as_str());
    assert_eq!(v[0]["name"], "cap-00.zip");
    assert_eq!(v[0]["state"], "CREATED");
    let text = run_ok(&emu, cmd(&emu, "status", &[oldest])).await;
    assert!(text.contains("state: CREATED") && text.contains("name: cap-00.zip"), "{text}");

    let v = json_lines(&run_ok(&emu, cmd(&emu, "rename", &[oldest, "Lobby, 2nd floor", "--json"])).await);
    assert_eq!(v[0]["name"], "Lobby, 2nd floor");
    assert!(emu.request_log().iter().any(|r| r.method == "PUT" && r.path == format!("/api/v1/captures/{oldest}")));
    let text = run_ok(&emu, cmd(&emu, "status", &[oldest])).await;
    assert!(text.contains("name: Lobby, 2nd floor"), "{text}");

    // Unknown eid: a 404-like rejection (exit 4) after paging the whole list.
    let out = run_upload(cmd(&emu, "status", &["nosuchcapture"]), token_env("TELEPORT_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("no such capture"), "{}", stderr(&out));

    // Checked locally: no request.
    let n = emu.request_log().len();
    let out = run_upload(cmd(&emu, "rename", &[oldest, "  "]), token_env("TELEPORT_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("upload: error: the new capture name is empty"), "{}", stderr(&out));
    let out = run_upload(cmd(&emu, "status", &["../captures"]), token_env("TELEPORT_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not a Teleport capture eid"), "{}", stderr(&out));
    assert_eq!(emu.request_log().len(), n);
}

/// Runs the binary with `input` on its stdin.
async fn run_with_stdin(a: Vec<String>, envs: Vec<(String, String)>, input: &'static str) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("upload"));
        for k in ["TELEPORT_TOKEN", "UPLOAD_TOKEN", "UPLOAD_TOKEN_COMMAND", "UPLOAD_ENDPOINT", "UPLOAD_FORCE_TTY"] {
            c.env_remove(k);
        }
        c.env_remove("UPLOAD_CONFIG").env("XDG_CONFIG_HOME", "/nonexistent/upload-test-config-home");
        c.args(&a).envs(envs).stdin(std::process::Stdio::piped());
        c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn deletes(emu: &Emulator) -> usize {
    emu.request_log().iter().filter(|r| r.method == "DELETE").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_asks_or_needs_yes() {
    let emu = emulator(Config::default()).await;
    let eids = create_captures(&emu, 3).await;

    // Off a terminal, without --yes: refused before any request.
    let n = emu.request_log().len();
    let out = run_upload(cmd(&emu, "delete", &[&eids[0]]), token_env("TELEPORT_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("upload: error: not deleting capture") && err.contains("hint: pass --yes"), "{err}");
    assert_eq!(emu.request_log().len(), n, "{:?}", emu.request_log());

    // On a (pretended) terminal: "n" keeps it, "y" deletes it.
    let mut tty = token_env("TELEPORT_TOKEN", &emu);
    tty.push(("UPLOAD_FORCE_TTY".into(), "1".into()));
    let out = run_with_stdin(cmd(&emu, "delete", &[&eids[0]]), tty.clone(), "n\n").await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("Delete capture {} (cap-02.zip)?", eids[0])), "the name: {}", stderr(&out));
    assert!(stderr(&out).contains("kept"), "{}", stderr(&out));
    assert_eq!(deletes(&emu), 0);
    let out = run_with_stdin(cmd(&emu, "delete", &[&eids[0]]), tty, "y\n").await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("deleted capture {}", eids[0])), "{}", stdout(&out));
    assert_eq!(deletes(&emu), 1);

    // --yes: no question; the DELETE answers 204.
    let v = json_lines(&run_ok(&emu, cmd(&emu, "delete", &[&eids[1], "--yes", "--json"])).await);
    assert_eq!(v[0], serde_json::json!({"eid": eids[1], "deleted": true}));
    assert!(emu.request_log().iter().any(|r| r.method == "DELETE" && r.path.ends_with(&eids[1]) && r.status == 204));
    let left = json_lines(&run_ok(&emu, cmd(&emu, "list", &["--json"])).await);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["eid"], eids[2].as_str());

    // Already gone: deleting is idempotent (exit 0, a note), with --yes (the API's 404) and
    // without (no question asked).
    let out = run_upload(cmd(&emu, "delete", &[&eids[1], "--yes"]), token_env("TELEPORT_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not exist (already deleted?)"), "{}", stderr(&out));
    let v = json_lines(&run_ok(&emu, cmd(&emu, "delete", &[&eids[1], "--yes", "--json"])).await);
    assert_eq!(v[0], serde_json::json!({"eid": eids[1], "deleted": true, "already_gone": true}));
    let mut tty = token_env("TELEPORT_TOKEN", &emu);
    tty.push(("UPLOAD_FORCE_TTY".into(), "1".into()));
    let out = run_with_stdin(cmd(&emu, "delete", &[&eids[1]]), tty, "").await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("Delete capture"), "no question: {}", stderr(&out));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_of_a_ready_capture() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let ready = ready_capture(&emu, dir.path()).await;
    let sid = ready["sid"].as_str().unwrap();

    let v = json_lines(&run_ok(&emu, cmd(&emu, "metadata", &[sid, "--json"])).await);
    let m = &v[0];
    for field in ["eid", "name", "segmented_capture_eid", "profile_name", "lod", "model_urls", "cameras", "models"] {
        assert!(m.get(field).is_some(), "required field {field} missing: {m}");
    }
    assert_eq!(m["eid"], ready["eid"]);
    assert_eq!(m["sid"], sid);
    assert_eq!(m["profile_name"], "ply");
    assert_eq!(m["lod"], false);
    let models = m["models"].as_array().unwrap();
    assert_eq!(models.len(), 1);
    assert!(models[0]["url"].as_str().unwrap().ends_with(&format!("/cdn/{sid}/ply-hd.ply")), "{m}");
    assert_eq!(models[0]["size"], Config::default().teleport_model_size);
    assert_eq!(m["model_urls"][0], models[0]["url"]);

    // Pretty JSON without --json; the other knobs reach the query.
    let text =
        run_ok(&emu, cmd(&emu, "metadata", &[sid, "--profile", "sogs-sh0", "--quality", "sd", "--lod", "--no-cdn"]))
            .await;
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(text.lines().count() > 10, "pretty-printed: {text}");
    assert_eq!(m["profile_name"], "sogs-sh0");
    assert_eq!(m["lod"], true);
    let models = m["models"].as_array().unwrap();
    assert_eq!(models.len(), 3, "{m}");
    assert!(models[0]["url"].as_str().unwrap().contains(&format!("/share/{sid}/files/sogs-sh0-sd-lod0.zip")), "{m}");
    assert_eq!(models[1]["parent"], models[0]["id"]);

    // Unknown sid: 404 explained (exit 4); a bad profile is refused by the parser (exit 2).
    let out = run_upload(cmd(&emu, "metadata", &["nosuchsid"]), token_env("TELEPORT_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("no READY capture is shared as nosuchsid"), "{}", stderr(&out));
    let n = emu.request_log().len();
    let out = run_upload(cmd(&emu, "metadata", &[sid, "--profile", "obj"]), token_env("TELEPORT_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(emu.request_log().len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_404_until_ready() {
    let emu =
        emulator(Config { processing: Processing { delay_ms: 600_000, fail_reason: None }, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "scan.zip", 1000);
    run_ok(&emu, args(&[path.to_str().unwrap(), "--provider", "teleport", "--endpoint", &emu.api_url()])).await;
    let caps = emu_teleport::captures_summary(emu.shared());
    let sid = caps[0]["share_id"].as_str().expect("a share id is assigned at completion").to_string();
    assert!(caps[0]["sid"].is_null(), "the sid is only shown once READY");
    let out = run_upload(cmd(&emu, "metadata", &[&sid]), token_env("TELEPORT_TOKEN", &emu)).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("HTTP 404") && err.contains("Capture is not ready"), "{err}");
    let out = run_upload(
        cmd(&emu, "download", &[&sid, "-o", dir.path().join("m").to_str().unwrap()]),
        token_env("TELEPORT_TOKEN", &emu),
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(!dir.path().join("m").exists(), "nothing is written before the metadata is known");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_is_byte_exact() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let sid = ready_capture(&emu, dir.path()).await["sid"].as_str().unwrap().to_string();
    let out_dir = dir.path().join("models");
    let v = json_lines(
        &run_ok(&emu, cmd(&emu, "download", &[&sid, "--profile", "ply", "-o", out_dir.to_str().unwrap(), "--json"]))
            .await,
    );
    let expected = emu_teleport::model_file(emu.shared(), &sid, "ply-hd.ply").unwrap();
    let got = std::fs::read(out_dir.join("ply-hd.ply")).unwrap();
    assert_eq!(got.len(), expected.len());
    assert_eq!(sha(&got), sha(&expected), "downloaded bytes differ");
    assert_eq!(v[0]["sha256"], sha(&expected));
    assert_eq!(v[0]["bytes"], expected.len());
    assert_eq!(v[0]["resumed_from"], 0);
    assert!(!out_dir.join("ply-hd.ply.part").exists());
    assert_eq!(model_requests(&emu), [200]);

    // Again: already complete, nothing fetched.
    let v = json_lines(&run_ok(&emu, cmd(&emu, "download", &[&sid, "-o", out_dir.to_str().unwrap(), "--json"])).await);
    assert_eq!(v[0]["skipped"], true);
    assert_eq!(model_requests(&emu), [200]);

    // The level-of-detail hierarchy: three files, each exact.
    let text =
        run_ok(&emu, cmd(&emu, "download", &[&sid, "--lod", "--quality", "sd", "-o", out_dir.to_str().unwrap()])).await;
    for i in 0..3 {
        let name = format!("ply-sd-lod{i}.ply");
        let expected = emu_teleport::model_file(emu.shared(), &sid, &name).unwrap();
        assert_eq!(sha(&std::fs::read(out_dir.join(&name)).unwrap()), sha(&expected), "{name}");
        assert!(text.contains(&sha(&expected)), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_continues_a_part_file() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let sid = ready_capture(&emu, dir.path()).await["sid"].as_str().unwrap().to_string();
    let expected = emu_teleport::model_file(emu.shared(), &sid, "ply-hd.ply").unwrap();
    let out_dir = dir.path().join("models");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(out_dir.join("ply-hd.ply.part"), &expected[..1_000_000]).unwrap();
    let text = run_ok(&emu, cmd(&emu, "download", &[&sid, "-o", out_dir.to_str().unwrap()])).await;
    assert!(text.contains("resumed at"), "{text}");
    assert_eq!(sha(&std::fs::read(out_dir.join("ply-hd.ply")).unwrap()), sha(&expected));
    assert_eq!(model_requests(&emu), [206], "only the rest was asked for");
    assert!(!out_dir.join("ply-hd.ply.part").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_cut_mid_body_is_resumed_with_range() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let sid = ready_capture(&emu, dir.path()).await["sid"].as_str().unwrap().to_string();
    emu.set_faults(Faults { model_cut_times: 2, model_cut_after: 1024 * 1024, ..Faults::default() });
    let out_dir = dir.path().join("models");
    let out = run_upload(
        cmd(&emu, "download", &[&sid, "-o", out_dir.to_str().unwrap(), "--json"]),
        token_env("TELEPORT_TOKEN", &emu),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = emu_teleport::model_file(emu.shared(), &sid, "ply-hd.ply").unwrap();
    assert_eq!(sha(&std::fs::read(out_dir.join("ply-hd.ply")).unwrap()), sha(&expected), "resumed bytes differ");
    assert_eq!(model_requests(&emu), [200, 206, 206], "each retry continues where the last one broke off");
    assert!(stderr(&out).contains("the body broke off"), "{}", stderr(&out));

    // Cut every time and too few retries: the .part stays for the next run, which completes it.
    std::fs::remove_file(out_dir.join("ply-hd.ply")).unwrap();
    emu.set_faults(Faults { model_cut_times: 1, model_cut_after: 1024 * 1024, ..Faults::default() });
    let out = run_upload(
        cmd(&emu, "download", &[&sid, "-o", out_dir.to_str().unwrap(), "--retries", "0"]),
        token_env("TELEPORT_TOKEN", &emu),
    )
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let part = std::fs::metadata(out_dir.join("ply-hd.ply.part")).unwrap().len();
    assert!(part > 0 && part < expected.len() as u64, "{part}");
    let text = run_ok(&emu, cmd(&emu, "download", &[&sid, "-o", out_dir.to_str().unwrap()])).await;
    assert!(text.contains("resumed at"), "{text}");
    assert_eq!(sha(&std::fs::read(out_dir.join("ply-hd.ply")).unwrap()), sha(&expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subcommands_resolve_tokens_like_uploads() {
    let emu = emulator(Config::default()).await;
    create_captures(&emu, 2).await;
    let n = emu.request_log().len();
    let out = run_upload(cmd(&emu, "list", &[]), vec![]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("hint: set TELEPORT_TOKEN"), "{}", stderr(&out));
    assert_eq!(emu.request_log().len(), n, "no request without a token");
    let out =
        run_upload(cmd(&emu, "list", &["--json", "--token-command", &format!("echo {}", emu.token())]), vec![]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&stdout(&out)).len(), 2);
    let out = run_upload(cmd(&emu, "list", &["--json"]), vec![("UPLOAD_TOKEN".into(), emu.token())]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_upload(cmd(&emu, "list", &[]), vec![("TELEPORT_TOKEN".into(), "wrong-token-value".into())]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(!stderr(&out).contains("wrong-token-value"));
    // The config file's [teleport] section: token and endpoint.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, format!("[teleport]\ntoken = \"{}\"\nendpoint = \"{}\"\n", emu.token(), emu.api_url()))
        .unwrap();
    let out =
        run_upload(args(&["teleport", "list", "--json"]), vec![("UPLOAD_CONFIG".into(), cfg.display().to_string())])
            .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&stdout(&out)).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_on_a_terminal_and_off() {
    let emu =
        emulator(Config { processing: Processing { delay_ms: 1500, fail_reason: None }, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "scan.zip", 1000);
    let mut tty = token_env("TELEPORT_TOKEN", &emu);
    tty.push(("UPLOAD_FORCE_TTY".into(), "1".into()));
    // --wait on a terminal: the state is drawn on the progress line while processing.
    let a = wait_args(&emu, &path, &["--wait", "--poll-interval", "100ms"]);
    let out = run_upload(a, tty.clone()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("\x1b[") && err.contains("PROCESSING: Training the 3D model"), "{err:?}");
    assert!(stdout(&out).contains("READY"), "{}", stdout(&out));
    let sid = emu_teleport::captures_summary(emu.shared())[0]["share_id"].as_str().unwrap().to_string();

    // The download: a bar on a terminal, plain lines elsewhere, nothing with --quiet.
    let out = run_upload(cmd(&emu, "download", &[&sid, "-o", dir.path().join("a").to_str().unwrap()]), tty).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("\x1b[") && stderr(&out).contains("ply-hd.ply"), "no bar drawn: {:?}", stderr(&out));
    let out = run_upload(
        cmd(&emu, "download", &[&sid, "-o", dir.path().join("b").to_str().unwrap()]),
        token_env("TELEPORT_TOKEN", &emu),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    // Off a terminal, a download over within 2 s prints no progress line.
    assert!(!stderr(&out).contains("\x1b[") && !stderr(&out).contains("ply-hd.ply: "), "{:?}", stderr(&out));
    let out = run_upload(
        cmd(&emu, "download", &[&sid, "-q", "-o", dir.path().join("c").to_str().unwrap()]),
        token_env("TELEPORT_TOKEN", &emu),
    )
    .await;
    assert!(out.status.success() && stderr(&out).is_empty(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_ends_when_the_capture_is_deleted() {
    let emu =
        emulator(Config { processing: Processing { delay_ms: 600_000, fail_reason: None }, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "scan.zip", 1000);
    let a = wait_args(&emu, &path, &["--wait", "--poll-interval", "100ms", "--wait-timeout", "2m"]);
    let upload = tokio::spawn(run_upload(a, token_env("TELEPORT_TOKEN", &emu)));
    let t0 = std::time::Instant::now();
    let eid = loop {
        let caps = emu_teleport::captures_summary(emu.shared());
        if let Some(c) = caps.as_array().unwrap().first()
            && !c["uploaded"].is_null()
        {
            break c["eid"].as_str().unwrap().to_string();
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "never uploaded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let status = reqwest::Client::new()
        .delete(format!("{}/api/v1/captures/{eid}", emu.api_url()))
        .bearer_auth(emu.token())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    let out = upload.await.unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("no longer in the list of captures"), "{}", stderr(&out));
}
