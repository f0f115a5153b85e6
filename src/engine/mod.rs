//! Provider-agnostic transfer machinery: part plan, file source, concurrent part uploader,
//! retry policy, progress reporting.

pub mod checksum;
pub mod download;
pub mod durable;
pub mod form;
pub mod http;
pub mod journal;
pub mod lockfile;
pub mod multipart;
pub mod os_path;
pub mod plan;
pub mod platform;
pub mod poll;
pub mod post;
pub mod progress;
pub mod pulse;
pub mod ratelimit;
pub mod request;
pub mod retry;
pub mod source;
pub mod tune;
pub mod uploader;
pub mod wait;
pub mod zipsource;
