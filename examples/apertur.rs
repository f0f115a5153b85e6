//! Upload images into a new Apertur upload session (one session for all of them).
//!
//! ```sh
//! APERTUR_TOKEN=aptr_... cargo run --example apertur -- DESTINATION_UUID photo1.jpg photo2.png
//! ```

use upload::Uploader;
use upload::providers::apertur::{Apertur, AperturOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let destination = args.next().ok_or_else(|| anyhow::anyhow!("usage: apertur DESTINATION_UUID IMAGE..."))?;
    let images: Vec<String> = args.collect();
    anyhow::ensure!(!images.is_empty(), "usage: apertur DESTINATION_UUID IMAGE...");
    // The session options, validated exactly as the command line's are.
    let input =
        AperturOptions { destinations: vec![destination], tags: vec!["example".into()], ..AperturOptions::default() };
    let uploader = Uploader::new(Apertur::new(input)?);
    for image in &images {
        let outcome = uploader.upload(image).await?;
        println!("{}", serde_json::to_string(&outcome)?);
    }
    Ok(())
}
