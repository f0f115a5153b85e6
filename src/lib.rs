//! `upload`: uploads large media files to Varjo Teleport, TruVideo, Uplift and Apertur
//! through the presigned S3 URLs they hand out.
//!
//! The library is [`Uploader`] over the transfer machinery in [`engine`] and one module per
//! vendor in [`providers`]. Depend on it with `default-features = false` to leave out the
//! command line: the `cli` feature (on by default) adds the `upload` binary's private module
//! (argument parsing, terminal output, the configuration file; not public API), and `emulate`
//! adds `upload demo` and `--emulate` (the emulator in-process).

#![warn(missing_docs)]
#![warn(unreachable_pub)]

#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
pub mod engine;
pub mod error;
pub mod providers;
pub mod redact;
pub mod run;
pub mod size;
pub mod uploader;

pub use engine::progress::{Event, Progress};
pub use error::{Error, Result};
pub use providers::{Provider, UploadOutcome};
pub use uploader::Uploader;
