//! Makes the commit the binary is built from, and its date, known to `upload --version`
//! (`UPLOAD_BUILD_GIT_HASH`, `UPLOAD_BUILD_GIT_DATE`), as ripgrep's build script does.
//!
//! Only when the package's own directory is the top of a git work tree: a crate unpacked from
//! a tarball inside someone else's repository must not take that repository's commit. Without
//! git the version is printed alone. A packager who knows the commit can give both variables
//! in the environment of the build. The script runs again only when HEAD moves (a commit, a
//! checkout), not on every edited file.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=UPLOAD_BUILD_GIT_HASH");
    println!("cargo:rerun-if-env-changed=UPLOAD_BUILD_GIT_DATE");
    if let Ok(hash) = std::env::var("UPLOAD_BUILD_GIT_HASH") {
        let date = std::env::var("UPLOAD_BUILD_GIT_DATE").unwrap_or_default();
        println!("cargo:rustc-env=UPLOAD_BUILD_GIT_HASH={hash}");
        println!("cargo:rustc-env=UPLOAD_BUILD_GIT_DATE={date}");
        return;
    }
    let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from) else { return };
    let Some(top) = git(&dir, &["rev-parse", "--show-toplevel"]) else { return };
    let same = |a: &Path, b: &Path| a.canonicalize().ok().is_some_and(|a| b.canonicalize().ok() == Some(a));
    if !same(Path::new(&top), &dir) {
        return;
    }
    // HEAD, the branch it names, and packed-refs: what a commit or a checkout changes. Only
    // files that exist (cargo reruns a script whose watched path is missing every time).
    let mut watched = vec![git(&dir, &["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&dir, &["rev-parse", "--git-path", &branch]));
    }
    watched.push(git(&dir, &["rev-parse", "--git-path", "packed-refs"]));
    for path in watched.into_iter().flatten() {
        let path = dir.join(path);
        if path.is_file() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    if let Some(line) = git(&dir, &["log", "-1", "--abbrev=10", "--format=%h %cs"])
        && let Some((hash, date)) = line.split_once(' ')
    {
        println!("cargo:rustc-env=UPLOAD_BUILD_GIT_HASH={hash}");
        println!("cargo:rustc-env=UPLOAD_BUILD_GIT_DATE={date}");
    }
}

/// The trimmed stdout of a successful `git ARGS` in `dir`, if any.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_string())
}
