//! Upload one file to Varjo Teleport.
//!
//! ```sh
//! TELEPORT_TOKEN=... cargo run --example teleport -- scan.zip [ENDPOINT]
//! ```

use upload::Uploader;
use upload::providers::teleport::{Teleport, TeleportOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let file = args.next().ok_or_else(|| anyhow::anyhow!("usage: teleport FILE [ENDPOINT]"))?;
    let mut uploader =
        Uploader::new(Teleport::new(TeleportOptions { name: None, format: None, wait: None })?).concurrency(8);
    if let Some(endpoint) = args.next() {
        uploader = uploader.endpoint(endpoint);
    }
    let outcome = uploader.upload(&file).await?;
    println!("{}", serde_json::to_string_pretty(&outcome)?);
    Ok(())
}
