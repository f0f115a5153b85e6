//! Snapshots (insta) of what people read: the help text and each provider's dry-run plan.
//! Temporary paths are avoided by running in a temp directory with relative file names.
//! Update with `INSTA_UPDATE=always cargo test --test it snapshots` and review the diff.

use crate::common::*;

/// Runs the binary in `dir` with the given args; no token, no config, no emulator.
async fn run_in(dir: &std::path::Path, a: &[&str]) -> std::process::Output {
    let dir = dir.to_path_buf();
    let a = args(a);
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("upload"));
        cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).env("HOME", &dir);
        cmd.env_remove("UPLOAD_CONFIG")
            .env("XDG_CONFIG_HOME", "/nonexistent/upload-test-config-home")
            .env("COLUMNS", "100")
            // A dry run without a token says the real run would fail (exit 3).
            .env("UPLOAD_TOKEN", "t");
        cmd.current_dir(&dir).args(&a).output().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_text() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["--help"]).await;
    assert!(out.status.success());
    insta::assert_snapshot!("help", stdout(&out));
}

/// `-h`: one screen (the options of a first run, short examples); `--help` has the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_help_text() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["-h"]).await;
    assert!(out.status.success());
    assert!(stdout(&out).lines().count() <= 50, "{}", stdout(&out));
    insta::assert_snapshot!("short_help", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_plans_of_each_provider() {
    let dir = tempfile::tempdir().unwrap();
    make_file(dir.path(), "scan.zip", 50 * MIB);
    make_file(dir.path(), "walkaround.mp4", 300 * MIB);
    make_file(dir.path(), "swing-001.mov", 12 * MIB);
    make_file(dir.path(), "photo.jpg", 200_000);
    let cases: [(&str, &[&str]); 4] = [
        ("teleport", &["scan.zip", "--provider", "teleport", "--dry-run"]),
        (
            "truvideo",
            &[
                "walkaround.mp4",
                "--provider",
                "truvideo",
                "--title",
                "BMW Engine diagnostic",
                "--tag",
                "brand=Jeep",
                "--dry-run",
            ],
        ),
        (
            "uplift",
            &[
                "swing-001.mov",
                "--provider",
                "uplift",
                "--athlete-id",
                "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
                "--session-group-id",
                "11111111-2222-3333-4444-555555555555",
                "--activity",
                "golf",
                "--movement",
                "full_swing",
                "--camera-setup",
                "single.down_the_line",
                "--orientation",
                "landscape",
                "--dry-run",
            ],
        ),
        (
            "apertur",
            &[
                "photo.jpg",
                "--provider",
                "apertur",
                "--destination",
                "d290f1ee-6c54-4b01-90e6-d701748f0851",
                "--dry-run",
            ],
        ),
    ];
    for (name, a) in cases {
        let out = run_in(dir.path(), a).await;
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        insta::assert_snapshot!(format!("dry_run_{name}"), stdout(&out));
    }
}
