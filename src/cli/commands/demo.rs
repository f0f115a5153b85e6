//! `upload --emulate` and `upload demo`: the whole flow against the emulator started
//! in-process on loopback, then a report of the requests made and what arrived.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cli::args::{Cli, ProviderName};
use crate::error::{Error, Result};

/// Runs the upload of `cli` against an in-process emulator.
pub(crate) async fn run_emulated(mut cli: Cli) -> Result<i32> {
    let provider = cli
        .upload
        .provider
        .ok_or_else(|| Error::usage("no provider given", "pass --provider teleport|truvideo|uplift|apertur"))?;
    // On disk (a temporary directory removed when `emu` drops): memory stays flat whatever the
    // file's size.
    let config = upload_emulator::Config { temp_state_dir: true, ..Default::default() };
    let emu = upload_emulator::Emulator::start(config).await.map_err(|e| Error::Network {
        provider: provider.as_str(),
        what: "starting the emulator".into(),
        message: e.to_string(),
    })?;
    let state = tempfile_dir()?;
    let quiet = cli.output.quiet;
    // No file named: the sample `upload demo` would send (removed with the state directory).
    if cli.upload.files.is_empty() && cli.upload.files_from.is_none() {
        let path = write_provider_sample(provider, &state, DEMO_SIZE)?;
        if !quiet {
            eprintln!("emulator: no file given: generated {} ({})", path.display(), crate::size::human(DEMO_SIZE));
        }
        cli.upload.files = vec![path];
    }
    if !quiet {
        eprintln!(
            "emulator: {} API at {} (S3 store at {}), in-process on loopback",
            provider.as_str(),
            emu.api_url(),
            emu.s3_url()
        );
    }
    let up = &mut cli.upload;
    up.emulate = false;
    up.endpoint = Some(emu.api_url());
    up.tokens =
        crate::cli::args::TokenArgs { token: Some(crate::redact::Secret::new(emu.token())), token_command: None };
    up.state_dir = Some(state.clone());
    if provider == ProviderName::Uplift {
        let u = &mut up.uplift;
        u.athlete_id.get_or_insert_with(|| uuid::Uuid::new_v4().to_string());
        u.activity.get_or_insert_with(|| "golf".into());
        u.movement.get_or_insert_with(|| "full_swing".into());
        u.camera_setup.get_or_insert_with(|| "single.down_the_line".into());
        u.orientation.get_or_insert_with(|| "landscape".into());
    }
    let files = cli.upload.files.clone();
    let code = Box::pin(crate::cli::run(cli)).await;
    report(&emu, &files, quiet);
    let _ = std::fs::remove_dir_all(&state);
    code
}

/// `upload demo`: a generated sample through the whole flow of `provider`.
pub(crate) async fn demo(provider: ProviderName, size: u64, output: crate::cli::args::OutputArgs) -> Result<i32> {
    let dir = tempfile_dir()?;
    let path = match generate(provider, &dir, size, &output).await {
        Ok(p) => p,
        Err(e) => {
            // Ctrl-C (or a full disk) while writing: no partial sample is left behind.
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    if !output.quiet {
        eprintln!("demo: generated {} ({})", path.display(), crate::size::human(size));
    }
    let mut args = vec![
        "upload".to_string(),
        path.display().to_string(),
        "--provider".into(),
        provider.as_str().into(),
        "--emulate".into(),
    ];
    if output.json {
        args.push("--json".into());
    }
    if output.quiet {
        args.push("--quiet".into());
    }
    let cli = <Cli as clap::Parser>::try_parse_from(args)
        .map_err(|e| Error::usage(e.to_string(), "this is a bug in `upload demo`"))?;
    let code = run_emulated(cli).await;
    let _ = std::fs::remove_dir_all(&dir);
    code
}

/// The size of the sample of `upload demo` and of `upload --emulate` without a file (the
/// default of `upload demo --size`).
pub(crate) const DEMO_SIZE: u64 = 20 * 1024 * 1024;

/// Writes a sample of `size` bytes that `provider` takes into `dir`: a video for Teleport and
/// TruVideo (`.mp4`), Uplift (`.mov`), an image for Apertur (`.jpg`). Returns its path.
fn write_provider_sample(provider: ProviderName, dir: &Path, size: u64) -> Result<PathBuf> {
    let path = sample_path(provider, dir);
    write_sample(&path, size, &|_| true)?;
    Ok(path)
}

/// Writes `upload demo`'s sample off the async workers, with a progress bar (lines off a
/// terminal) for a large one; Ctrl-C stops it (exit 130: the caller removes the directory).
async fn generate(
    provider: ProviderName,
    dir: &Path,
    size: u64,
    output: &crate::cli::args::OutputArgs,
) -> Result<PathBuf> {
    use crate::engine::progress::{Event, Progress};
    let cancel = tokio_util::sync::CancellationToken::new();
    crate::cli::install_ctrl_c(cancel.clone());
    let path = sample_path(provider, dir);
    let mode = crate::cli::ui::Mode::detect(output.quiet, output.json);
    let progress = std::sync::Arc::new(crate::cli::ui::FileProgress::with_rate_limit(
        mode,
        &crate::engine::ratelimit::RateLimit::off(),
    ));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    progress.event(Event::Started { file: name, total_bytes: size, parts: 1, done_bytes: 0, done_parts: 0 });
    progress.event(Event::Phase { message: "generating the sample".into() });
    let (p, target, stop) = (progress.clone(), path.clone(), cancel.clone());
    let written = tokio::task::spawn_blocking(move || {
        write_sample(&target, size, &|n| {
            p.event(Event::Bytes { part: 1, delta: n as i64 });
            !stop.is_cancelled()
        })
    })
    .await
    .map_err(|e| Error::usage(format!("generating the sample failed: {e}"), "this is a bug in `upload demo`"))?;
    progress.event(Event::Finished);
    drop(progress);
    written?;
    if cancel.is_cancelled() {
        return Err(Error::Interrupted { hint: "nothing was uploaded; the partial sample was removed".into() });
    }
    Ok(path)
}

/// Where the sample `provider` takes goes in `dir`.
fn sample_path(provider: ProviderName, dir: &Path) -> PathBuf {
    let name = match provider {
        ProviderName::Teleport | ProviderName::Truvideo => "sample.mp4",
        ProviderName::Uplift => "sample.mov",
        ProviderName::Apertur => "sample.jpg",
    };
    dir.join(name)
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("upload-emulate-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::File { path: dir.clone(), source: e })?;
    Ok(dir)
}

/// Writes `size` pseudo-random bytes to `path`, telling `wrote` each block's size; stops
/// early when it answers false.
fn write_sample(path: &Path, size: u64, wrote: &dyn Fn(u64) -> bool) -> Result<()> {
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| Error::File { path: path.into(), source: e })?);
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut left = size;
    let mut block = vec![0u8; 1 << 16];
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).map_err(|e| Error::File { path: path.into(), source: e })?;
        left -= n as u64;
        if !wrote(n as u64) {
            break;
        }
    }
    f.flush().map_err(|e| Error::File { path: path.into(), source: e })
}

/// Hex SHA-256 of a file, read in blocks (the file may be larger than memory).
fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// An API path with its ids folded: `/api/v1/captures/{id}/create-upload-url/{n}`.
fn path_shape(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()) {
                "{n}".to_string()
            } else if seg.len() >= 8 && seg.chars().any(|c| c.is_ascii_digit()) {
                "{id}".to_string()
            } else {
                seg.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn report(emu: &upload_emulator::Emulator, files: &[PathBuf], quiet: bool) {
    if quiet {
        return;
    }
    // Request kinds in order of first appearance, with their count and statuses.
    struct Group {
        method: String,
        shape: String,
        count: usize,
        statuses: BTreeMap<u16, usize>,
    }
    let mut groups: Vec<Group> = vec![];
    for r in emu.request_log() {
        let shape = if r.server == "s3" { "S3 store (presigned)".to_string() } else { path_shape(&r.path) };
        let i = match groups.iter().position(|g| g.method == r.method && g.shape == shape) {
            Some(i) => i,
            None => {
                groups.push(Group { method: r.method.clone(), shape, count: 0, statuses: BTreeMap::new() });
                groups.len() - 1
            }
        };
        groups[i].count += 1;
        *groups[i].statuses.entry(r.status).or_default() += 1;
    }
    let mut err = std::io::stderr().lock();
    let total: usize = groups.iter().map(|g| g.count).sum();
    let _ = writeln!(err, "emulator: {total} requests");
    for g in &groups {
        let st = g
            .statuses
            .iter()
            .map(|(s, n)| if *n > 1 { format!("{s} ×{n}") } else { s.to_string() })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(err, "  {:6} {}  ×{}  → {st}", g.method, g.shape, g.count);
    }
    let local: BTreeMap<String, String> = files
        .iter()
        .filter(|p| p.is_file())
        .filter_map(|p| Some((sha256_file(p).ok()?, p.display().to_string())))
        .collect();
    for o in emu.objects() {
        let verdict = match local.get(&o.sha256) {
            Some(f) => format!("byte-exact copy of {f}"),
            None => "stored".to_string(),
        };
        let _ = writeln!(
            err,
            "emulator: stored {} ({}, {} parts, sha256 {}…): {verdict}",
            o.key,
            crate::size::human(o.size),
            o.parts,
            &o.sha256[..16]
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_folded() {
        assert_eq!(
            super::path_shape("/api/v1/captures/hd72kkw82ksa/create-upload-url/3"),
            "/api/v1/captures/{id}/create-upload-url/{n}"
        );
        assert_eq!(super::path_shape("/api/v1/captures"), "/api/v1/captures");
    }
}
