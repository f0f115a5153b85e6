//! The store's two backends, memory and disk (a given directory, or a temporary one removed
//! when the emulator stops), through the same checks: single PUTs and multipart uploads land
//! byte-exact with the right ETags and SHA-256, on disk as part files and nothing in memory.

use sha2::{Digest, Sha256};
use upload_emulator::{Config, Emulator};

use crate::common::{MIB, data};

fn md5_hex(b: &[u8]) -> String {
    hex::encode(md5::Md5::digest(b))
}

#[derive(Debug, Clone, Copy)]
enum Backend {
    Memory,
    Dir,
    Temp,
}

/// Files under `dir`, recursively, with their sizes.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        if m.is_dir() {
            out.extend(files(&e.path()));
        } else {
            out.push((e.path(), m.len()));
        }
    }
    out
}

async fn round_trip(backend: Backend) {
    let given = tempfile::tempdir().unwrap();
    let config = match backend {
        Backend::Memory => Config::default(),
        Backend::Dir => Config { state_dir: Some(given.path().to_path_buf()), ..Default::default() },
        Backend::Temp => Config { temp_state_dir: true, ..Default::default() },
    };
    let emu = Emulator::start(config).await.unwrap();
    let dir = emu.state_dir().map(std::path::Path::to_path_buf);
    match backend {
        Backend::Memory => assert!(dir.is_none()),
        Backend::Dir => assert_eq!(dir.as_deref(), Some(given.path())),
        Backend::Temp => {
            let d = dir.as_deref().unwrap();
            assert!(d.is_dir() && d.starts_with(std::env::temp_dir()), "{d:?}");
            assert!(d.file_name().unwrap().to_str().unwrap().starts_with("upload-emulator-"), "{d:?}");
        }
    }
    let store = &emu.shared().store;
    let http = reqwest::Client::new();

    // A single PUT.
    let one = data(3 * MIB + 7, 1);
    let r = http.put(store.presign_put_object("a/one.bin", "t", "1")).body(one.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200, "{backend:?}");
    assert_eq!(r.headers()["etag"].to_str().unwrap(), format!("\"{}\"", md5_hex(&one)));

    // A multipart upload, parts sent out of order, part 1 sent twice (the second copy counts).
    let (p1, p2) = (data(5 * MIB, 2), data(MIB + 3, 3));
    let upload = store.create_multipart_upload("a/multi.bin", "t", "2");
    let mut etags = vec![];
    for (n, body) in [(2u32, &p2), (1, &data(5 * MIB, 9)), (1, &p1)] {
        let r = http.put(store.presign_part(&upload, n).unwrap()).body(body.clone()).send().await.unwrap();
        assert_eq!(r.status(), 200, "{backend:?} part {n}");
        etags.push((n, r.headers()["etag"].to_str().unwrap().to_string()));
    }
    let listed = vec![(1, etags[2].1.clone()), (2, etags[0].1.clone())];
    let info = store.complete(&upload, &listed).unwrap();
    let whole: Vec<u8> = [p1.clone(), p2.clone()].concat();
    let md5s: Vec<u8> = [md5::Md5::digest(&p1).to_vec(), md5::Md5::digest(&p2).to_vec()].concat();
    assert_eq!(info.etag, format!("\"{}-2\"", md5_hex(&md5s)));

    // What is stored, and what the GET answers.
    let multi = emu.object("a/multi.bin").unwrap();
    assert_eq!((multi.size, multi.parts), (whole.len() as u64, 2));
    assert_eq!(multi.sha256, hex::encode(Sha256::digest(&whole)), "{backend:?}");
    let r = http.get(store.presign_get_object("a/multi.bin")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), whole, "{backend:?}");
    let r = http.get(store.presign_get_object("a/one.bin")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), one, "{backend:?}");

    if let Some(dir) = &dir {
        // On disk: the single PUT is one file, the object is its two part files (the replaced
        // copy of part 1 is gone): nothing was concatenated, nothing else kept.
        let mut sizes: Vec<u64> = files(dir).iter().map(|(_, n)| *n).collect();
        sizes.sort();
        assert_eq!(sizes, [(MIB + 3) as u64, (3 * MIB + 7) as u64, (5 * MIB) as u64], "{backend:?}");
        // The single PUT's SHA-256 was computed while it arrived: its file is not read again.
        let single = files(&dir.join("objects"));
        assert_eq!(single.len(), 1);
        std::fs::remove_file(&single[0].0).unwrap();
        assert_eq!(emu.object("a/one.bin").unwrap().sha256, hex::encode(Sha256::digest(&one)));
    } else {
        assert_eq!(emu.object("a/one.bin").unwrap().sha256, hex::encode(Sha256::digest(&one)));
    }

    drop(emu);
    match backend {
        Backend::Temp => assert!(!dir.unwrap().exists(), "the temporary directory is removed at stop"),
        Backend::Dir => assert!(given.path().join("parts").is_dir(), "a given directory is kept"),
        Backend::Memory => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_round_trip() {
    round_trip(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_backend_round_trip() {
    round_trip(Backend::Dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_directory_backend_round_trip_and_removal() {
    round_trip(Backend::Temp).await;
}

/// A big object on disk: the bytes go to files as they arrive; the process's resident memory
/// grows by far less than the object (measured against this test process's own RSS: this
/// file's other tests are small and run alongside, hence a generous bound).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_backend_memory_does_not_grow_with_the_object() {
    fn rss_kib() -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
    const SIZE: u64 = 192 * MIB as u64;
    let emu = Emulator::start(Config { temp_state_dir: true, ..Default::default() }).await.unwrap();
    let store = &emu.shared().store;
    let url = store.presign_put_object("big.bin", "t", "1");
    let before = rss_kib();
    // A streamed body of zeros, 1 MiB at a time, never whole in this process either.
    let chunks = futures::stream::iter((0..SIZE / MIB as u64).map(|_| Ok::<_, std::io::Error>(vec![0u8; MIB])));
    let r = reqwest::Client::new()
        .put(url)
        .header("content-length", SIZE)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let grown = rss_kib().saturating_sub(before);
    let o = emu.object("big.bin").unwrap();
    assert_eq!(o.size, SIZE);
    let mut h = Sha256::new();
    for _ in 0..SIZE / MIB as u64 {
        h.update(vec![0u8; MIB]);
    }
    assert_eq!(o.sha256, hex::encode(h.finalize()));
    assert!(grown < SIZE / 1024 / 3, "RSS grew by {} MiB for a {} MiB object", grown / 1024, SIZE / MIB as u64);
}
