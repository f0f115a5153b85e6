//! A custom progress handler: print a line per finished part, consuming the event stream.
//!
//! ```sh
//! cargo run --example progress -- walk.mp4
//! ```
//! Runs against the in-process emulator, so no account is needed.

use futures::StreamExt;
use upload::providers::teleport::{Teleport, TeleportOptions};
use upload::{Event, Uploader};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let file = std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: progress FILE.mp4|FILE.zip"))?;
    let emulator = upload_emulator::Emulator::start(upload_emulator::Config::default()).await?;
    let uploader =
        Uploader::new(Teleport::new(TeleportOptions::default())?).endpoint(emulator.api_url()).token(emulator.token());

    let (events, upload) = uploader.upload_with_events(&file);
    let printer = async {
        let mut events = std::pin::pin!(events);
        let (mut sent, mut total) = (0i64, 0u64);
        while let Some(event) = events.next().await {
            match event {
                Event::Started { total_bytes, parts, .. } => {
                    total = total_bytes;
                    println!("starting: {total_bytes} bytes in {parts} parts");
                }
                Event::Bytes { delta, .. } => sent += delta,
                Event::PartDone { part } => println!("part {part} stored ({sent} of {total} bytes sent)"),
                Event::Retry { part, reason, .. } => println!("part {part} retried: {reason}"),
                Event::Phase { message } | Event::Notice { message } => println!("{message}"),
                Event::Finished => println!("finished"),
                _ => {}
            }
        }
    };
    let (outcome, ()) = tokio::join!(upload, printer);
    let outcome = outcome?;
    println!("capture {} is {}", outcome.id, outcome.status);
    Ok(())
}
