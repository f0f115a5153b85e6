//! The CPU cost of the receipt (`crc64nvme`, issue 33): the CRC-64/NVME the part uploader
//! computes over every piece it hands to a connection, measured the way the uploader does it
//! (pieces of 256 KiB just read into a buffer), plus the combination of 10,000 parts' CRCs.
//! `bench/run.sh` runs it (scenario `crc`); by hand:
//! `cargo run --release --example crc64_cost -- [GiB]` (default 4).

use std::time::Instant;

use upload::engine::checksum::{Crc64, combine_all};
use upload::engine::source::PIECE;

fn cpu_seconds() -> f64 {
    #[cfg(unix)]
    {
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage fills the struct it is given.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        t(ru.ru_utime) + t(ru.ru_stime)
    }
    #[cfg(not(unix))]
    {
        0.0
    }
}

fn main() {
    let gib: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(4);
    // 4 pieces of distinct data (1 MiB), reused: as in the uploader, a piece is read into a
    // buffer just before it is hashed and sent, so it is in the cache.
    let pieces: Vec<Vec<u8>> = (0..4u64)
        .map(|p| (0..PIECE as u64).map(|i| (i.wrapping_mul(2654435761) ^ p.wrapping_mul(40503)) as u8).collect())
        .collect();
    let total = gib << 30;
    let mut sink = 0u64;
    let (c0, w0) = (cpu_seconds(), Instant::now());
    let mut done = 0u64;
    let mut part = Crc64::default();
    let mut i = 0;
    while done < total {
        part.update(&pieces[i % pieces.len()]);
        done += PIECE as u64;
        i += 1;
        // A part of 8 MiB ends: its CRC is kept, the next starts.
        if done.is_multiple_of(8 << 20) {
            sink ^= part.value();
            part = Crc64::default();
        }
    }
    let (cpu, wall) = (cpu_seconds() - c0, w0.elapsed().as_secs_f64());
    let t = Instant::now();
    let combined = combine_all((0..10_000u64).map(|n| (n.wrapping_mul(0x9e37_79b9_7f4a_7c15), 8 << 20)));
    let combine_ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "crc64nvme: {gib} GiB in {PIECE}-byte pieces: {:.4} CPU-s/GiB ({:.1} GB/s, wall {:.3} s); combining 10,000 parts: {combine_ms:.2} ms (check {:x})",
        cpu / gib as f64,
        total as f64 / wall / 1e9,
        wall,
        sink ^ combined,
    );
}
