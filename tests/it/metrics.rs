//! `upload watch --metrics ADDR`: Prometheus metrics of a long-running watcher, scraped over
//! real HTTP from the real binary while it uploads to the in-process emulator.

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

const LONG: Duration = Duration::from_secs(120);

/// The samples of a scrape: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_string(), v.parse().unwrap())))
        .collect()
}

/// GET `url` (a bounded wait: a scrape must never hang on an upload): status, content type, body.
async fn get(url: &str) -> (u16, String, String) {
    let client = reqwest::Client::new();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.get(url).send())
        .await
        .expect("the scrape answered within 10 s")
        .unwrap();
    let status = resp.status().as_u16();
    let ctype = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, ctype, resp.text().await.unwrap())
}

struct Watcher {
    child: std::process::Child,
    out: Arc<Mutex<Vec<serde_json::Value>>>,
    err: Arc<Mutex<String>>,
}

impl Watcher {
    fn start(a: &[String], env: &[(String, String)]) -> Watcher {
        let mut child = spawn_upload(a, env);
        let (out, err) = (Arc::new(Mutex::new(vec![])), Arc::new(Mutex::new(String::new())));
        let (o, e) = (out.clone(), err.clone());
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                o.lock().unwrap().push(serde_json::from_str(&line).unwrap_or_else(|x| panic!("{x}: {line}")));
            }
        });
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                let mut e = e.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        });
        Watcher { child, out, err }
    }

    async fn until<T>(&mut self, what: &str, mut f: impl FnMut(&Watcher) -> Option<T>) -> T {
        let t0 = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the watcher exited ({status}) before {what}: {}", self.err.lock().unwrap());
            }
            assert!(t0.elapsed() < LONG, "no {what}: {}", self.err.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn uploaded(&self) -> usize {
        self.out.lock().unwrap().iter().filter(|l| l["status"] == "uploaded").count()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three files uploaded by a watcher on an ephemeral port: while they go (throttled), scrapes
/// answer at once and show them in flight; then `upload_files_total{status="uploaded"}` is 3,
/// `upload_bytes_sent_total` the sum of their sizes, the rate limit the one given; a file the
/// provider does not take counts as skipped; `/healthz` answers `200 ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_counts_what_the_watcher_uploaded() {
    let emu = emulator(Config { teleport_chunk_size: 5 * MIB, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let sizes = [6 * MIB, MIB + 3, 11 * MIB];
    let mut shas = vec![];
    for (i, size) in sizes.iter().enumerate() {
        shas.push(make_file(&inbox, &format!("scan{i}.zip"), *size).1);
    }
    let mut a = args(&["watch", &inbox.display().to_string(), "--provider", "teleport", "--json"]);
    a.extend(args(&["--endpoint", &emu.api_url(), "--settle", "200ms", "--limit-rate", "4MiB"]));
    a.extend(args(&["--metrics", "127.0.0.1:0"]));
    let mut w = Watcher::start(&a, &token_env("TELEPORT_TOKEN", &emu));
    let base = w
        .until("the metrics address", |w| {
            let err = w.err.lock().unwrap();
            let line = err.lines().find(|l| l.starts_with("upload: watch: metrics at http://"))?;
            Some(line.trim_start_matches("upload: watch: metrics at ").trim_end_matches("/metrics").to_string())
        })
        .await;
    assert!(base.starts_with("http://127.0.0.1:") && !base.ends_with(":0"), "{base}");

    let (status, _, body) = get(&format!("{base}/healthz")).await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, _, _) = get(&format!("{base}/nothing")).await;
    assert_eq!(status, 404);

    // At 4 MiB/s the 18 MiB take about 4.5 s: a scrape meanwhile answers at once and sees them.
    let mut seen_in_flight = 0.0f64;
    let t0 = Instant::now();
    while w.uploaded() < sizes.len() {
        let asked = Instant::now();
        let (status, ctype, text) = get(&format!("{base}/metrics")).await;
        assert!(asked.elapsed() < Duration::from_secs(5), "a scrape waited {:?}", asked.elapsed());
        assert_eq!(status, 200);
        assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
        seen_in_flight = seen_in_flight.max(samples(&text)["upload_files_in_flight"]);
        assert!(t0.elapsed() < LONG, "the uploads never ended: {}", w.err.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_in_flight >= 1.0, "no scrape saw a file in flight");

    let text = get(&format!("{base}/metrics")).await.2;
    let s = samples(&text);
    let files = |status: &str| s[&format!("upload_files_total{{provider=\"teleport\",status=\"{status}\"}}")];
    assert_eq!((files("uploaded"), files("skipped"), files("failed")), (3.0, 0.0, 0.0), "{text}");
    assert_eq!(s["upload_bytes_sent_total{provider=\"teleport\"}"], sizes.iter().sum::<u64>() as f64, "{text}");
    assert_eq!(s["upload_part_retries_total{provider=\"teleport\"}"], 0.0, "{text}");
    assert_eq!(s["upload_rate_limit_bytes_per_second"], (4 * MIB) as f64, "{text}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let last = s["upload_last_success_timestamp_seconds"];
    assert!(last > now - 120.0 && last <= now + 1.0, "{last} vs {now}");
    let mut stored: Vec<String> = emu.objects().into_iter().map(|o| o.sha256).collect();
    stored.sort();
    shas.sort();
    assert_eq!(stored, shas, "every file byte-exact");

    // A file Teleport does not take, found in the watched directory: skipped.
    std::fs::write(inbox.join("notes.txt"), "not a capture").unwrap();
    w.until("notes.txt skipped", |w| w.out.lock().unwrap().iter().any(|l| l["status"] == "skipped").then_some(()))
        .await;
    let s = samples(&get(&format!("{base}/metrics")).await.2);
    assert_eq!(s["upload_files_total{provider=\"teleport\",status=\"skipped\"}"], 1.0);
    // Idle again: nothing in flight, nothing waiting (set at the watcher's next turn).
    let t0 = Instant::now();
    loop {
        let s = samples(&get(&format!("{base}/metrics")).await.2);
        if (s["upload_files_in_flight"], s["upload_queue_files"]) == (0.0, 0.0) {
            break;
        }
        assert!(t0.elapsed() < LONG, "never idle: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A bad `--metrics` is refused before anything is watched: exit 2, naming it and the fix; a
/// port already taken says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_metrics_address_is_refused() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    for (addr, says) in
        [("example.com:80", "HOST:PORT such as 127.0.0.1:9184"), (taken.as_str(), "cannot listen there")]
    {
        let mut a = args(&["watch", &dir.path().display().to_string(), "--provider", "teleport"]);
        a.extend(args(&["--endpoint", &emu.api_url(), "--metrics", addr]));
        let out = run_upload(a, token_env("TELEPORT_TOKEN", &emu)).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{addr}: {err}");
        assert!(err.contains(says) && err.contains("--metrics"), "{addr}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(emu.request_log().is_empty());
}
