//! One install gives everything (issue 32): `upload emulator` serves as `upload-emulator`
//! does, `upload --version` names the commit, `upload man` prints the man page.

#[cfg(unix)]
use std::process::{Child, Stdio};

use crate::common::*;

/// Starts `upload emulator ARGS` with `TMPDIR` = `tmpdir` and reads its announcement up to
/// the last line (the sign-in `try`). Unix only, as the test that uses it.
#[cfg(unix)]
async fn start_emulator(extra: &[&str], tmpdir: &std::path::Path) -> (Child, Vec<String>) {
    let mut cmd = upload_command(&args(&[&["emulator"], extra].concat()), &[]);
    cmd.env("TMPDIR", tmpdir).stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || upload_emulator::cli::start_announced(cmd))
        .await
        .unwrap()
        .expect("the binary starts")
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_subcommand_serves_an_upload_made_from_its_try_line_byte_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, lines) = start_emulator(&["--token", "tok-e", "--chunk-size", "5242880"], tmp.path()).await;
    let api = lines[0].strip_prefix("api: ").unwrap_or_else(|| panic!("{lines:#?}")).to_string();
    assert!(api.starts_with("http://127.0.0.1:"), "{lines:#?}");
    assert!(lines[1].starts_with("s3: http://127.0.0.1:"), "{lines:#?}");
    assert_eq!(lines[2], "token: tok-e");
    // The same announcement as `upload-emulator`: one `try:` line per provider, then sign-in.
    let tries: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("try: ")).collect();
    assert_eq!(tries, upload_emulator::try_commands(&api, "tok-e"), "{lines:#?}");
    assert!(lines.last().unwrap().contains(&format!("--auth-endpoint {api} --client-id emulator-client")));

    // The Teleport `try:` line, as printed, with FILE.zip naming a real file (3 parts).
    let dir = tempfile::tempdir().unwrap();
    let (file, sha) = make_file(dir.path(), "scan.zip", 12 * MIB + 3);
    let words: Vec<String> = tries[0]
        .split_whitespace()
        .skip(1)
        .map(|w| if w == "FILE.zip" { file.to_str().unwrap().to_string() } else { w.to_string() })
        .collect();
    let mut upload = words.clone();
    upload.push("--json".into());
    let out = run_upload(upload, vec![]).await;
    assert!(out.status.success(), "{words:?}: {}", stderr(&out));
    let result: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!((result["status"].as_str(), result["parts"].as_u64()), (Some("uploaded"), Some(3)), "{result}");

    let stored: serde_json::Value =
        reqwest::get(format!("{api}/_emulator/uploads")).await.unwrap().json().await.unwrap();
    assert_eq!(stored.as_array().map(Vec::len), Some(1), "{stored}");
    assert_eq!(stored[0]["sha256"].as_str(), Some(sha.as_str()), "not byte-exact: {stored}");
    assert_eq!(stored[0]["size"].as_u64(), Some(12 * MIB + 3));
    // Objects went to a temporary directory under TMPDIR, removed at stop.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);

    let killed = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let mut stderr_pipe = child.stderr.take().unwrap();
    let (status, err) = tokio::task::spawn_blocking(move || {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut stderr_pipe, &mut err).unwrap();
        (child.wait().unwrap(), err)
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}: {err}");
    assert!(err.contains("emulator started") && err.contains("upload emulator: stopping"), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "objects left behind at stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_subcommand_refuses_a_port_in_use_in_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = upload_command(&args(&["emulator", "--port", &port]), &[]);
    cmd.env("TMPDIR", tmp.path());
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("upload emulator: cannot start: ") && err.trim_end().lines().count() == 1, "{err}");
    assert!(stdout(&out).is_empty());
}

/// What `--version` must say: the commit and its date when the tests run from a git checkout
/// of the package (as the build script saw it), else the version alone.
fn expected_version() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |a: &[&str]| {
        let out = std::process::Command::new("git").arg("-C").arg(dir).args(a).output().ok()?;
        let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    };
    let top = git(&["rev-parse", "--show-toplevel"]).and_then(|t| std::fs::canonicalize(t).ok());
    match top {
        Some(top) if top == std::fs::canonicalize(dir).unwrap() => {
            let line = git(&["log", "-1", "--abbrev=10", "--format=%h %cs"]).unwrap();
            format!("upload {} ({line})", env!("CARGO_PKG_VERSION"))
        }
        _ => format!("upload {}", env!("CARGO_PKG_VERSION")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_names_the_commit_and_its_date() {
    let want = expected_version();
    for flag in ["--version", "-V"] {
        let out = run_upload(args(&[flag]), vec![]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), format!("{want}\n"), "{flag}");
    }
    // `upload 0.1.0 (abcdef1234 2026-12-06)`: ten hex digits and an ISO date, when known.
    if let Some(inner) = want.strip_suffix(')').and_then(|w| w.split_once(" (")).map(|(_, i)| i) {
        let (hash, date) = inner.split_once(' ').unwrap();
        assert!(hash.len() >= 10 && hash.chars().all(|c| c.is_ascii_hexdigit()), "{want}");
        assert!(chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok(), "{want}");
    }
}

/// The subcommands `upload --help` lists (its `Commands:` section), `help` aside.
fn subcommands() -> Vec<String> {
    let out = upload_command(&args(&["--help"]), &[]).output().unwrap();
    let help = stdout(&out);
    let section = help.split("Commands:\n").nth(1).unwrap().split("\n\n").next().unwrap();
    let names: Vec<String> = section
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|n| n != "help")
        .collect();
    assert!(names.len() >= 10 && names.iter().any(|n| n == "emulator") && names.iter().any(|n| n == "man"), "{help}");
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn man_prints_a_roff_page_naming_every_subcommand() {
    let out = run_upload(args(&["man"]), vec![]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out);
    let th = page.lines().find(|l| l.starts_with(".TH ")).unwrap_or_else(|| panic!("no .TH: {page}"));
    assert!(th.starts_with(".TH upload 1 ") && th.contains(&expected_version()), "{th}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
        assert!(page.lines().any(|l| l == section), "{section}: {page}");
    }
    for name in subcommands() {
        assert!(page.contains(&format!("upload\\-{}(1)", name.replace('-', "\\-"))), "{name}: {page}");
    }
    // roff, not --help text: every option is a tagged paragraph with its flag in bold.
    assert!(page.contains(".TP\n\\fB\\-p\\fR, \\fB\\-\\-provider\\fR"), "{page}");

    // --out-dir: one page per command, each a roff page of its own.
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("man1");
    let out = run_upload(args(&["man", "--out-dir", target.to_str().unwrap()]), vec![]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    for name in std::iter::once("upload".to_string()).chain(subcommands().iter().map(|n| format!("upload-{n}"))) {
        let text =
            std::fs::read_to_string(target.join(format!("{name}.1"))).unwrap_or_else(|e| panic!("{name}.1: {e}"));
        assert!(text.lines().any(|l| l.starts_with(&format!(".TH {name} 1 "))), "{name}.1: {text}");
    }
    assert!(target.join("upload-teleport-list.1").is_file());
}
