//! Provider-agnostic transfer machinery: part plan, file source, concurrent part uploader,
//! retry policy, progress reporting.

pub mod checksum;
pub mod download;
pub(crate) mod durable;
pub(crate) mod form;
pub mod http;
pub mod journal;
pub(crate) mod lockfile;
pub mod multipart;
pub(crate) mod os_path;
pub mod plan;
pub(crate) mod platform;
pub(crate) mod poll;
pub(crate) mod post;
pub mod progress;
pub(crate) mod pulse;
pub mod ratelimit;
pub mod request;
pub mod retry;
pub mod source;
pub(crate) mod spare;
pub(crate) mod tune;
pub mod uploader;
pub(crate) mod wait;
pub mod zipsource;

/// A run's time limit (`--max-duration`, `--until`), for [`crate::Uploader::time_limit`].
pub use wait::{Halt, STOP_GRACE, TimeLimit};
