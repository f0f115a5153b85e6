//! Upload one swing video to Uplift: reserve a capture, then one presigned S3 POST.
//!
//! ```sh
//! UPLIFT_TOKEN=... cargo run --example uplift -- swing-001.mov ATHLETE_UUID [ENDPOINT]
//! ```

use upload::Uploader;
use upload::providers::uplift::{Uplift, UpliftOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(file), Some(athlete)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: uplift FILE.mov ATHLETE_UUID [ENDPOINT]");
    };
    let options = UpliftOptions {
        athlete_id: Some(athlete),
        activity: Some("golf".into()),
        movement: Some("full_swing".into()),
        camera_setup: Some("single.down_the_line".into()),
        orientation: Some("landscape".into()),
        ..UpliftOptions::default()
    };
    // Validated exactly as the command line is; a new session group for this capture.
    let mut uploader = Uploader::new(Uplift::new(options)?);
    if let Some(endpoint) = args.next() {
        uploader = uploader.endpoint(endpoint);
    }
    let outcome = uploader.upload(&file).await?;
    println!("{}", serde_json::to_string_pretty(&outcome)?);
    Ok(())
}
