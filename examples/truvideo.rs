//! Upload one video to TruVideo Upload V3 and wait until it is processed.
//!
//! ```sh
//! TRUVIDEO_TOKEN=... cargo run --example truvideo -- walkaround.mp4 [ENDPOINT]
//! ```

use std::time::Duration;

use upload::Uploader;
use upload::providers::truvideo::{Truvideo, TruvideoOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let file = args.next().ok_or_else(|| anyhow::anyhow!("usage: truvideo FILE [ENDPOINT]"))?;
    let options = TruvideoOptions {
        title: Some("BMW Engine diagnostic".into()),
        creator: Some("Jane Doe".into()),
        tags: vec!["brand=Jeep".into()],
        wait: true,
        wait_timeout: Duration::from_secs(30 * 60),
        poll_interval: Duration::from_secs(2),
        ..TruvideoOptions::default()
    };
    let mut uploader = Uploader::new(Truvideo::new(options)?);
    if let Some(endpoint) = args.next() {
        uploader = uploader.endpoint(endpoint);
    }
    let outcome = uploader.upload(&file).await?;
    println!("{}", serde_json::to_string_pretty(&outcome)?);
    Ok(())
}
