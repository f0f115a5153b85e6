//! HTTPS the way companies run it: a private CA (`--ca-bundle`, `UPLOAD_CA_BUNDLE`,
//! `SSL_CERT_FILE`), a refused certificate (exit 5, one line naming the host), and a CONNECT
//! proxy (`HTTPS_PROXY`, `NO_PROXY`). Everything on loopback.

use std::process::Output;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

use crate::common::*;

/// A CA made for the test and a TLS front (certificate for `localhost`, signed by the CA) that
/// forwards each connection to `backend`.
struct TlsFront {
    port: u16,
    ca_pem: String,
}

async fn tls_front(backend: std::net::SocketAddr) -> TlsFront {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "upload test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut up) = TcpStream::connect(backend).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    TlsFront { port, ca_pem: ca.pem() }
}

/// A CONNECT proxy on loopback that records the targets it was asked for.
async fn connect_proxy() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(vec![]));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut client = BufReader::new(tcp);
                let mut line = String::new();
                if client.read_line(&mut line).await.is_err() {
                    return;
                }
                let mut parts = line.split_whitespace();
                let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else { return };
                let target = target.to_string();
                loop {
                    let mut h = String::new();
                    if client.read_line(&mut h).await.unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                // Loopback only.
                let port = target.rsplit(':').next().unwrap_or("0");
                let Ok(mut up) = TcpStream::connect(format!("127.0.0.1:{port}")).await else { return };
                log.lock().unwrap().push(target);
                let mut client = client.into_inner();
                if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            });
        }
    });
    (port, seen)
}

fn api_addr(emu: &Emulator) -> std::net::SocketAddr {
    let u = url::Url::parse(&emu.api_url()).unwrap();
    format!("127.0.0.1:{}", u.port().unwrap()).parse().unwrap()
}

/// Runs the binary with no proxy settings from outside, then `envs`.
async fn run_clean(a: Vec<String>, envs: Vec<(String, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = upload_command(&a, &[]);
        for k in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY"] {
            cmd.env_remove(k);
        }
        cmd.env_remove("no_proxy").env_remove("SSL_CERT_FILE").env_remove("UPLOAD_CA_BUNDLE");
        cmd.envs(envs).output().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_refused_in_one_line_then_trusted_with_ca_bundle() {
    let emu = emulator(Config::default()).await;
    let front = tls_front(api_addr(&emu)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &front.ca_pem).unwrap();
    let endpoint = format!("https://localhost:{}", front.port);
    let token = vec![("TELEPORT_TOKEN".to_string(), emu.token())];
    let (file, sha) = make_file(dir.path(), "a.zip", 3 * MIB);
    let upload = |extra: &[&str]| {
        let mut a = args(&[file.to_str().unwrap(), "--provider", "teleport", "--endpoint", &endpoint, "--json"]);
        a.extend(args(extra));
        a
    };

    // Not retried: a certificate error is final at once, whatever --retries says.
    let out = run_clean(upload(&[]), token.clone()).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(!err.contains("retrying"), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("upload: error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0]
            .contains(&format!("the TLS certificate of localhost:{} is signed by an unknown authority", front.port)),
        "{err}"
    );
    assert!(err.contains("--ca-bundle"), "the hint names the fix: {err}");
    assert!(emu.objects().is_empty());

    let out = run_clean(upload(&["--ca-bundle", ca.to_str().unwrap()]), token.clone()).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(emu.objects().len(), 1);
    assert_eq!(emu.objects()[0].sha256, sha, "byte-exact through the TLS front");

    // The environment variables do the same; management subcommands trust it too.
    let (file2, _) = make_file(dir.path(), "b.zip", 1000);
    let mut a = upload(&[]);
    a[0] = file2.display().to_string();
    let mut env = token.clone();
    env.push(("UPLOAD_CA_BUNDLE".into(), ca.display().to_string()));
    let out = run_clean(a, env).await;
    assert_eq!(out.status.code(), Some(0), "UPLOAD_CA_BUNDLE: {}", stderr(&out));
    let mut env = token.clone();
    env.push(("SSL_CERT_FILE".into(), ca.display().to_string()));
    let out = run_clean(args(&["teleport", "list", "--json", "--endpoint", &endpoint]), env).await;
    assert_eq!(out.status.code(), Some(0), "SSL_CERT_FILE: {}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 2, "both captures listed: {}", stdout(&out));
    let out = run_clean(args(&["teleport", "list", "--endpoint", &endpoint, "--retries", "0"]), token.clone()).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("TLS certificate of localhost"), "{}", stderr(&out));

    // A bundle that is not one is a usage error.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate\n").unwrap();
    let out = run_clean(upload(&["--ca-bundle", bad.to_str().unwrap()]), token).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("holds no certificate"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_and_no_proxy_are_honoured() {
    let emu = emulator(Config::default()).await;
    let front = tls_front(api_addr(&emu)).await;
    let (proxy_port, seen) = connect_proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &front.ca_pem).unwrap();
    let endpoint = format!("https://localhost:{}", front.port);
    let (file, sha) = make_file(dir.path(), "a.zip", 2 * MIB);
    let a = args(&[
        file.to_str().unwrap(),
        "--provider",
        "teleport",
        "--endpoint",
        &endpoint,
        "--ca-bundle",
        ca.to_str().unwrap(),
        "--state-dir",
        dir.path().join("state").to_str().unwrap(),
        "--force",
    ]);
    let mut env = vec![
        ("TELEPORT_TOKEN".to_string(), emu.token()),
        ("HTTPS_PROXY".to_string(), format!("http://127.0.0.1:{proxy_port}")),
    ];
    let out = run_clean(a.clone(), env.clone()).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(emu.objects()[0].sha256, sha);
    let through = seen.lock().unwrap().clone();
    assert!(!through.is_empty() && through.iter().all(|t| t == &format!("localhost:{}", front.port)), "{through:?}");

    env.push(("NO_PROXY".to_string(), "localhost".to_string()));
    let before = seen.lock().unwrap().len();
    let out = run_clean(a, env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(emu.objects().len(), 2);
    assert_eq!(seen.lock().unwrap().len(), before, "NO_PROXY bypasses the proxy");
}

/// A CA and a certificate for 127.0.0.1 signed by it (as PEM files in `dir`), and the
/// emulator serving both its API and its S3 store over https with that certificate.
pub(crate) async fn tls_emulator(dir: &std::path::Path, config: Config) -> (Emulator, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "upload test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let (ca_pem, cert_pem, key_pem) = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert_pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    let tls = upload_emulator::tls_config(&cert_pem, &key_pem).unwrap();
    (Emulator::start_tls(config, 0, 0, tls).await.unwrap(), ca_pem)
}

/// A Teleport upload of `file` to the TLS emulator, trusting `ca`, with its state in `state`
/// (`--json`), then `extra`.
fn tls_upload_args(
    file: &std::path::Path,
    emu: &Emulator,
    ca: &std::path::Path,
    state: &std::path::Path,
    extra: &[&str],
) -> Vec<String> {
    let mut a = vec![file.display().to_string()];
    a.extend(args(&["--provider", "teleport", "--endpoint", &emu.api_url(), "--json"]));
    a.extend(["--ca-bundle".to_string(), ca.display().to_string(), "--state-dir".into(), state.display().to_string()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_go_over_https_to_an_emulator_serving_tls() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { teleport_chunk_size: 5 * MIB, ..Config::default() };
    let (emu, ca) = tls_emulator(dir.path(), config).await;
    assert!(emu.api_url().starts_with("https://127.0.0.1:") && emu.s3_url().starts_with("https://127.0.0.1:"));
    let (file, sha) = make_file(dir.path(), "a.zip", 12 * MIB + 3);
    let a = tls_upload_args(&file, &emu, &ca, &dir.path().join("state"), &["--concurrency", "2"]);
    let out = run_clean(a, vec![("TELEPORT_TOKEN".to_string(), emu.token())]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let objects = emu.objects();
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!((objects[0].sha256.as_str(), objects[0].parts), (sha.as_str(), 3), "byte-exact, 3 parts over https");
    let s3_puts = emu.request_log().iter().filter(|r| r.server == "s3" && r.method == "PUT" && r.status == 200).count();
    assert_eq!(s3_puts, 3, "the parts went to the S3 store (over TLS: its only listener)");

    // Without the CA, the first request is refused in one line naming the host.
    let (file2, _) = make_file(dir.path(), "b.zip", 1000);
    let out = run_clean(
        args(&[file2.to_str().unwrap(), "--provider", "teleport", "--endpoint", &emu.api_url(), "--retries", "0"]),
        vec![("TELEPORT_TOKEN".to_string(), emu.token())],
    )
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("TLS certificate of 127.0.0.1"), "{}", stderr(&out));
}

/// `upload pending --resume --ca-bundle FILE` hands the bundle on to the uploads it resumes
/// (each is a run of its own, whose clients are set up again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_resume_trusts_the_ca_bundle_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, ca) = tls_emulator(dir.path(), Config { teleport_chunk_size: 5 * MIB, ..Config::default() }).await;
    let state = dir.path().join("state");
    let (file, sha) = make_file(dir.path(), "a.zip", 20 * MIB);
    let token = vec![("TELEPORT_TOKEN".to_string(), emu.token())];
    let a = tls_upload_args(&file, &emu, &ca, &state, &["--concurrency", "1", "--limit-rate", "8MiB"]);
    let (ca, state_arg) = (ca.to_str().unwrap(), state.to_str().unwrap());
    let mut child = spawn_upload(&a, &token);
    crate::pending::kill_after(&state, "teleport", 1, &mut child).await;
    let out =
        run_clean(args(&["pending", "--state-dir", state_arg, "--resume", "--ca-bundle", ca, "--json"]), token).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let objects = emu.objects();
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0].sha256, sha);
    assert!(emu.part_put_counts().values().all(|&n| n == 1), "a part was sent twice");
}
