//! Shared test helpers: the emulator, test files, running the real binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use sha2::{Digest, Sha256};
#[allow(unused_imports)]
pub use upload_emulator::{Config, Emulator, Faults};

pub const MIB: u64 = 1024 * 1024;

/// Starts the emulator with `config` on ephemeral loopback ports.
pub async fn emulator(config: Config) -> Emulator {
    Emulator::start(config).await.expect("emulator starts")
}

/// A CA made for one test, and the emulator serving https with a certificate for 127.0.0.1 and
/// `localhost` that it signed: the path users take (every vendor is HTTPS), trusted through
/// `--ca-bundle` ([`TlsEmulator::ca_args`]).
pub struct TlsEmulator {
    /// The emulator, its URLs `https://127.0.0.1:PORT`.
    pub emu: Emulator,
    /// The CA's certificate (PEM), as a file.
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsEmulator {
    /// `--ca-bundle <the test CA>`.
    pub fn ca_args(&self) -> Vec<String> {
        vec!["--ca-bundle".into(), self.ca_file.display().to_string()]
    }
}

impl std::ops::Deref for TlsEmulator {
    type Target = Emulator;
    fn deref(&self) -> &Emulator {
        &self.emu
    }
}

/// Starts the emulator over https on ephemeral loopback ports, with a CA of its own.
pub async fn emulator_tls(config: Config) -> TlsEmulator {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "upload conformance CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file, ca_file) =
        (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("ca.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let tls = upload_emulator::tls_config(&cert_file, &key_file).expect("the test certificate loads");
    let emu = Emulator::start_tls(config, 0, 0, tls).await.expect("emulator starts over https");
    TlsEmulator { emu, ca_file, _dir: dir }
}

/// Writes `size` bytes of deterministic pseudo-random data and returns the path and SHA-256.
pub fn make_file(dir: &Path, name: &str, size: u64) -> (PathBuf, String) {
    let path = dir.join(name);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ size;
    let mut data = Vec::with_capacity(size as usize);
    while (data.len() as u64) < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(size as usize);
    std::fs::write(&path, &data).unwrap();
    (path, hex::encode(Sha256::digest(&data)))
}

/// The `upload` binary with a clean environment: credentials and settings from the outer
/// environment removed, a state home of its own, no config file; then `args` and `envs`.
pub fn upload_command(args: &[String], envs: &[(String, String)]) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("upload"));
    for k in [
        "TELEPORT_TOKEN",
        "TRUVIDEO_TOKEN",
        "UPLIFT_TOKEN",
        "APERTUR_TOKEN",
        "UPLOAD_TOKEN",
        "UPLOAD_TOKEN_COMMAND",
        "UPLOAD_PROVIDER",
        "UPLOAD_ENDPOINT",
        "UPLOAD_FORCE_TTY",
        "UPLOAD_AUTH_ENDPOINT",
        "TELEPORT_CLIENT_ID",
        "TELEPORT_CLIENT_SECRET",
        "TRUVIDEO_API_KEY",
        "TRUVIDEO_SECRET_KEY",
        "TRUVIDEO_EXTERNAL_ID",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("XDG_STATE_HOME", fresh_state_home());
    // No config file: the default place, in a directory that does not exist.
    cmd.env_remove("UPLOAD_CONFIG").env("XDG_CONFIG_HOME", "/nonexistent/upload-test-config-home");
    cmd.args(args).envs(envs.iter().cloned());
    cmd
}

/// Runs the `upload` binary with args and extra env, off the async runtime (the emulator
/// keeps serving on it).
pub async fn run_upload(args: Vec<String>, envs: Vec<(String, String)>) -> Output {
    tokio::task::spawn_blocking(move || upload_command(&args, &envs).output().expect("the binary runs")).await.unwrap()
}

/// [`run_upload`] as an unprivileged user (`nobody`, through `setpriv`) when the tests run as
/// root, so file permissions apply to the binary as they do to a user's.
#[cfg(unix)]
pub async fn run_unprivileged(args: Vec<String>, envs: Vec<(String, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let cmd = upload_command(&args, &envs);
        if unsafe { libc::geteuid() } != 0 {
            let mut cmd = cmd;
            return cmd.output().expect("the binary runs");
        }
        let mut wrapped = std::process::Command::new("setpriv");
        wrapped
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        wrapped.env_clear();
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                wrapped.env(k, v);
            }
        }
        for (k, v) in std::env::vars_os() {
            if !cmd.get_envs().any(|(ek, _)| ek == k) {
                wrapped.env(k, v);
            }
        }
        wrapped.output().expect("setpriv runs the binary")
    })
    .await
    .unwrap()
}

/// The emulator's token in the provider's token variable (`TELEPORT_TOKEN`, ...).
pub fn token_env(var: &str, emu: &Emulator) -> Vec<(String, String)> {
    vec![(var.into(), emu.token())]
}

/// Shorthand: `Vec<String>` from string slices.
pub fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Starts the `upload` binary in the background (same environment rules as [`run_upload`]).
pub fn spawn_upload(args: &[String], envs: &[(String, String)]) -> std::process::Child {
    let mut cmd = upload_command(args, envs);
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    cmd.spawn().expect("the binary starts")
}

/// The resume journals under a state home (`$XDG_STATE_HOME/upload/journals`), as JSON
/// (header fields and `parts`), read by the library's own reader.
pub fn journals(state_home: &Path) -> Vec<serde_json::Value> {
    upload::engine::journal::list(&state_home.join("upload"))
        .into_iter()
        .filter_map(|(_, j)| j.ok())
        .map(|j| {
            let mut v = serde_json::to_value(&j).unwrap();
            v["parts"] = serde_json::to_value(&j.parts).unwrap();
            v
        })
        .collect()
}

/// A state home of its own for each run that does not name one: runs do not see each
/// other's journals and done records unless a test says so.
pub fn fresh_state_home() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!("upload-test-state-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)))
}

/// The athlete every Uplift test uploads for.
pub const UPLIFT_ATHLETE: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

/// The capture fields an Uplift upload needs (athlete, movement, camera).
pub const UPLIFT_FIELDS: &[&str] = &[
    "--athlete-id",
    UPLIFT_ATHLETE,
    "--activity",
    "golf",
    "--movement",
    "full_swing",
    "--camera-setup",
    "single.down_the_line",
    "--orientation",
    "landscape",
];

/// One file uploaded to Teleport (5 MiB chunks) against an emulator, with a state home of its
/// own: the setup of the reliability and durable-state tests.
pub struct TeleportRun {
    pub emu: Emulator,
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub sha: String,
}

impl TeleportRun {
    /// The emulator with `config` and a `scan.zip` of `size` bytes.
    pub async fn start(config: Config, size: u64) -> TeleportRun {
        let emu = emulator(Config { teleport_chunk_size: 5 * MIB, ..config }).await;
        let dir = tempfile::tempdir().unwrap();
        let (path, sha) = make_file(dir.path(), "scan.zip", size);
        TeleportRun { emu, dir, path, sha }
    }
    /// The upload's arguments (`--json`), then `extra`.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut a = vec![self.path.display().to_string()];
        a.extend(args(&["--provider", "teleport", "--endpoint", &self.emu.api_url(), "--json"]));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }
    /// The token and the state home.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("TELEPORT_TOKEN".into(), self.emu.token()),
            ("XDG_STATE_HOME".into(), self.state_home().display().to_string()),
        ]
    }
    /// `$XDG_STATE_HOME` of the runs.
    pub fn state_home(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}
