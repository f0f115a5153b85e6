//! Upload images into a new Apertur upload session (one session for all of them).
//!
//! ```sh
//! APERTUR_TOKEN=aptr_... cargo run --example apertur -- DESTINATION_UUID photo1.jpg photo2.png
//! ```

use clap::Parser;
use upload::Uploader;
use upload::providers::apertur::{Apertur, AperturOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let destination = args.next().ok_or_else(|| anyhow::anyhow!("usage: apertur DESTINATION_UUID IMAGE..."))?;
    let images: Vec<String> = args.collect();
    anyhow::ensure!(!images.is_empty(), "usage: apertur DESTINATION_UUID IMAGE...");
    // The session options are validated exactly as on the command line.
    let mut argv = vec!["upload".to_string()];
    argv.extend(images.iter().cloned());
    argv.extend(["--provider", "apertur", "--destination", &destination, "--tag", "example"].map(String::from));
    let flags = upload::cli::Cli::try_parse_from(argv)?.upload;
    let options = AperturOptions::from_args(&flags, true)?;
    let uploader = Uploader::new(Apertur::new(options));
    for image in &images {
        let outcome = uploader.upload(image).await?;
        println!("{}", serde_json::to_string(&outcome)?);
    }
    Ok(())
}
