//! The `upload-emulator` binary: its help, the lines it prints at start, where it keeps the
//! objects (a temporary directory removed at stop by default, `--data-dir`, `--memory`).

use std::path::Path;
use std::process::{Child, Command, Stdio};

use upload_emulator::cli::start_announced;
use upload_emulator::try_commands;

fn emulator(args: &[&str], tmpdir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_upload-emulator"));
    c.args(args).env("TMPDIR", tmpdir).stdout(Stdio::piped()).stderr(Stdio::null());
    c
}

/// Starts the binary and reads its announcement up to the last line (the sign-in `try`).
async fn start(args: &[&str], tmpdir: &Path) -> (Child, Vec<String>) {
    let cmd = emulator(args, tmpdir);
    tokio::task::spawn_blocking(move || start_announced(cmd)).await.unwrap().expect("the binary starts")
}

async fn stop(mut child: Child) {
    let killed = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "{status:?}");
}

/// PUTs `body` at `key` through a URL from the admin API.
async fn put(api: &str, key: &str, body: Vec<u8>) {
    let http = reqwest::Client::new();
    let r = http.post(format!("{api}/_emulator/presign-put?key={key}")).send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    let r = http.put(v["url"].as_str().unwrap()).body(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect()
}

fn file_sizes(dir: &Path) -> Vec<u64> {
    let mut out = vec![];
    for p in entries(dir) {
        if p.is_dir() {
            out.extend(file_sizes(&p));
        } else {
            out.push(p.metadata().unwrap().len());
        }
    }
    out
}

#[test]
fn help_names_the_four_providers() {
    let tmp = tempfile::tempdir().unwrap();
    for flag in ["--help", "-h"] {
        let out = emulator(&[flag], tmp.path()).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.starts_with("Local emulator of the Teleport, TruVideo, Uplift and Apertur upload APIs"),
            "{flag}: {text}"
        );
        assert!(!text.contains("Teleport and TruVideo"), "{flag}: {text}");
    }
    let text = String::from_utf8(emulator(&["--help"], tmp.path()).output().unwrap().stdout).unwrap();
    assert!(text.contains("--data-dir <DIR>") && text.contains("--memory"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_lines_give_one_command_per_provider() {
    let tmp = tempfile::tempdir().unwrap();
    let (child, lines) = start(&["--token", "tok-9"], tmp.path()).await;
    let api = lines[0].strip_prefix("api: ").unwrap().to_string();
    let tries: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("try: ")).collect();
    let want = try_commands(&api, "tok-9");
    assert_eq!(tries, want.iter().map(String::as_str).collect::<Vec<_>>(), "{lines:#?}");
    for (line, provider) in tries.iter().zip(["teleport", "truvideo", "uplift", "apertur"]) {
        assert!(line.contains(&format!("--provider {provider} --endpoint {api} --token tok-9")), "{line}");
    }
    stop(child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_go_to_a_temporary_directory_removed_at_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let (child, lines) = start(&[], tmp.path()).await;
    let api = lines[0].strip_prefix("api: ").unwrap().to_string();
    put(&api, "x/a.bin", vec![7u8; 100_000]).await;
    let dirs = entries(tmp.path());
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert!(dirs[0].file_name().unwrap().to_str().unwrap().starts_with("upload-emulator-"), "{dirs:?}");
    assert_eq!(file_sizes(&dirs[0]), [100_000]);
    stop(child).await;
    assert_eq!(entries(tmp.path()), Vec::<std::path::PathBuf>::new(), "left behind at stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_keeps_the_objects_and_memory_writes_none() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (child, lines) = start(&["--data-dir", data.path().to_str().unwrap()], tmp.path()).await;
    let api = lines[0].strip_prefix("api: ").unwrap().to_string();
    put(&api, "x/a.bin", vec![1u8; 12_345]).await;
    stop(child).await;
    assert_eq!(file_sizes(data.path()), [12_345], "kept after stop");
    assert!(entries(tmp.path()).is_empty());

    let (child, lines) = start(&["--memory"], tmp.path()).await;
    let api = lines[0].strip_prefix("api: ").unwrap().to_string();
    put(&api, "x/b.bin", vec![2u8; 1000]).await;
    assert!(entries(tmp.path()).is_empty(), "--memory writes no file");
    let r = reqwest::get(format!("{api}/_emulator/uploads")).await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v[0]["size"], 1000);
    stop(child).await;
}
