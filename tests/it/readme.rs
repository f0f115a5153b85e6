//! README.md's set-up commands: a newcomer runs exactly two, and they are the ones that work
//! (the install + first upload, which `demo::emulate_without_a_file_*` runs; the test command,
//! which `.ci/run` runs).

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The lines of the README's ```sh blocks.
fn sh_lines(readme: &str) -> Vec<String> {
    let mut out = vec![];
    let mut inside = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            inside = !inside && line.trim() == "```sh";
            continue;
        }
        if inside {
            out.push(line.to_string());
        }
    }
    out
}

#[test]
fn readme_has_one_install_command_and_the_test_command_ci_runs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = sh_lines(&readme);
    let installs: Vec<&String> = lines.iter().filter(|l| l.contains("cargo install")).collect();
    assert_eq!(
        installs,
        ["cargo install --locked --path . && upload --emulate --provider teleport"],
        "one install command, in a code block, that also runs the first upload"
    );
    // The test command: the block after "## Running the tests", equal to what .ci/run runs
    // after its "test command from README.md" comment.
    let section = &readme[readme.find("## Running the tests").expect("a Running the tests section")..];
    let block = sh_lines(section).into_iter().next().expect("a test command block");
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let ci_tail = &ci[ci.find("# The test command from README.md").expect("the marked part of .ci/run")..];
    // The block of commands after the comment, up to the first blank line.
    let ci_cmds: Vec<&str> = ci_tail.lines().skip(1).map(str::trim).take_while(|l| !l.is_empty()).collect();
    assert_eq!(block, ci_cmds.join(" && "));
    assert!(readme.contains("Needs Rust 1.95 or newer"), "the minimum Rust version is stated");
}

#[test]
fn both_crates_declare_rust_1_95() {
    let root_toml = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let emu_toml = std::fs::read_to_string(root().join("emulator/Cargo.toml")).unwrap();
    let ws = &root_toml[root_toml.find("[workspace.package]").unwrap()..];
    let ws = &ws[..ws[1..].find("\n[").map_or(ws.len(), |i| i + 1)];
    assert!(ws.contains("rust-version = \"1.95\""), "{ws}");
    for (name, toml) in [("upload", &root_toml), ("upload-emulator", &emu_toml)] {
        let package = &toml[toml.find("[package]").unwrap()..];
        assert!(package.contains("rust-version.workspace = true"), "{name} takes the workspace's rust-version");
    }
    assert_eq!(env!("CARGO_PKG_RUST_VERSION"), "1.95");
}
