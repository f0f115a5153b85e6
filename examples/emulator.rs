//! Run the whole Teleport flow against the emulator started in-process, then check what it
//! stored, byte for byte: the pattern for testing your own code against these APIs.
//!
//! ```sh
//! cargo run --example emulator
//! ```

use sha2::{Digest, Sha256};
use upload::Uploader;
use upload::providers::teleport::{Teleport, TeleportOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A 12 MiB capture; the emulator hands out 5 MiB parts here.
    let config = upload_emulator::Config { teleport_chunk_size: 5 << 20, ..Default::default() };
    let emulator = upload_emulator::Emulator::start(config).await?;
    let dir = std::env::temp_dir().join(format!("upload-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("walk.mp4");
    let data: Vec<u8> = (0..12u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&path, &data)?;

    let outcome =
        Uploader::new(Teleport::new(TeleportOptions { name: Some("Walkthrough".into()), format: None, wait: None })?)
            .endpoint(emulator.api_url())
            .token(emulator.token())
            .concurrency(4)
            .upload(&path)
            .await?;
    let stored = emulator.objects().into_iter().find(|o| o.id == outcome.id).expect("the capture is stored");
    let local = hex::encode(Sha256::digest(&data));
    println!(
        "capture {} ({} parts): stored sha256 {} {}",
        outcome.id,
        stored.parts,
        stored.sha256,
        if stored.sha256 == local { "matches" } else { "DIFFERS" }
    );
    std::fs::remove_dir_all(&dir)?;
    anyhow::ensure!(stored.sha256 == local, "the stored object differs");
    Ok(())
}
