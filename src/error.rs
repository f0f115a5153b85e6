//! The library's error type: typed variants (and the server's error code where it gave one), so
//! callers decide by variant and code, never by message text. The command line maps them to
//! exit codes and hints in one place (`src/cli/report.rs`).

use std::path::PathBuf;

/// Everything that can go wrong, with enough context to print one clear line and a hint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid input detected locally, before any request was made.
    #[error("{message}")]
    Usage {
        /// What is wrong.
        message: String,
        /// How to fix it.
        hint: Option<String>,
    },
    /// A local file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No usable credentials, or the provider rejected them.
    #[error("{provider}: authentication failed: {message}")]
    Auth {
        /// The provider.
        provider: &'static str,
        /// What the server or the tool said.
        message: String,
        /// How to fix it.
        hint: Option<String>,
    },
    /// The provider (or S3) answered with a 4xx other than authentication.
    #[error("{provider}: {what} was rejected (HTTP {status}): {message}")]
    Rejected {
        /// The provider.
        provider: &'static str,
        /// The request, e.g. "create capture" or "PUT part 3".
        what: String,
        /// HTTP status.
        status: u16,
        /// The server's error code, when its answer named one (S3's `NoSuchUpload`, Apertur's
        /// `MAX_IMAGES_REACHED`, ...).
        code: Option<String>,
        /// One-line summary of the server's error body.
        message: String,
    },
    /// S3 refused a part (or a form upload) because of a checksum the vendor signed into its
    /// presigned URL or form (`x-amz-checksum-*`, `x-amz-sdk-checksum-algorithm`): S3's
    /// `BadDigest`, `XAmzContentChecksumMismatch` or `HeadersNotSigned`. The vendor's URL is at
    /// fault, not the file or the network: never retried (a fresh URL of the same vendor signs
    /// the same).
    #[error(
        "{provider}: {what} was refused by S3 with {code} (HTTP {status}): the presigned URL {provider} handed out is at fault{}, not the file or the network; not retried",
        if signed.is_empty() { String::new() } else { format!(" (it signs in {signed})") }
    )]
    VendorChecksum {
        /// The provider.
        provider: &'static str,
        /// The request, e.g. "PUT part 3".
        what: String,
        /// HTTP status.
        status: u16,
        /// S3's error code (`BadDigest`, `XAmzContentChecksumMismatch`, `HeadersNotSigned`).
        code: String,
        /// The checksum parameters the URL or form carries (names, and the algorithm named),
        /// e.g. `x-amz-sdk-checksum-algorithm=CRC32`; empty when none could be seen.
        signed: String,
        /// One-line summary of S3's error body.
        message: String,
    },
    /// Network failure or 5xx that persisted after the retries.
    #[error("{provider}: {what} failed: {message}")]
    Network {
        /// The provider.
        provider: &'static str,
        /// The request.
        what: String,
        /// What happened (last error).
        message: String,
    },
    /// A request that is not safe to repeat failed in a way that leaves open whether the
    /// server acted on it (the connection dropped or timed out after sending, or a 5xx): it
    /// was not sent again. A look-up may still settle it (see `engine::multipart`).
    #[error("{provider}: {what} failed: {message}; the server may have acted on it, so it was not sent again")]
    Ambiguous {
        /// The provider.
        provider: &'static str,
        /// The request.
        what: String,
        /// What happened.
        message: String,
    },
    /// Nothing answered at a host this run had not reached yet (connection refused or timed
    /// out on every attempt): a wrong endpoint, or no network.
    #[error("{provider}: {what} failed: cannot reach {host}: {message}")]
    Unreachable {
        /// The provider.
        provider: &'static str,
        /// The request.
        what: String,
        /// The host (and port).
        host: String,
        /// The last error.
        message: String,
    },
    /// The TLS handshake with a host failed: its certificate is not trusted or not valid.
    /// Never retried.
    #[error("{provider}: {what} failed: the certificate of {host} is not accepted: {message}")]
    Certificate {
        /// The provider.
        provider: &'static str,
        /// The request.
        what: String,
        /// The host (and port).
        host: String,
        /// What is wrong with the certificate.
        message: String,
    },
    /// The host answered the TLS handshake in plain text: an `https://` URL of a server that
    /// speaks plain http. Never retried; nothing was sent.
    #[error("{provider}: {what} failed: {host} answered in plain http, not https (TLS)")]
    PlainHttp {
        /// The provider.
        provider: &'static str,
        /// The request.
        what: String,
        /// The host (and port).
        host: String,
    },
    /// The server answered something the client cannot use (bad JSON, a plan that does not cover the file).
    #[error("{provider}: unexpected answer to {what}: {message}")]
    Protocol {
        /// The provider.
        provider: &'static str,
        /// The request.
        what: String,
        /// What was wrong.
        message: String,
    },
    /// The upload arrived but processing ended in failure.
    #[error("{provider}: processing of {id} failed: {reason}")]
    ProcessingFailed {
        /// The provider.
        provider: &'static str,
        /// The provider's id of the upload.
        id: String,
        /// The provider's failure reason.
        reason: String,
    },
    /// A deadline passed.
    #[error("{what}: timed out after {seconds} s")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// The deadline in seconds.
        seconds: u64,
    },
    /// Another run holds the lock of this upload's journal; nothing was sent.
    #[error("{message}")]
    Busy {
        /// Which file, and which process holds it.
        message: String,
        /// What to do.
        hint: String,
    },
    /// The resume journal of a file no longer matches it (the file changed since its upload
    /// was interrupted): not resumed.
    #[error("{message}")]
    JournalMismatch {
        /// The file.
        path: PathBuf,
        /// What changed.
        message: String,
        /// What to do.
        hint: String,
    },
    /// Interrupted by the user; resumable.
    #[error("interrupted")]
    Interrupted {
        /// How to resume.
        hint: String,
    },
    /// The run's time limit ([`TimeLimit`](crate::engine::wait::TimeLimit): `--max-duration`,
    /// `--until`) was reached first: the file's upload stopped cleanly, its journal kept
    /// (or it was not started at all); running the same upload again carries on.
    #[error("stopped at the time limit")]
    Stopped {
        /// Whether the file's upload had begun.
        started: bool,
    },
}

impl Error {
    /// Shorthand for a usage error with a hint.
    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Usage { message: message.into(), hint: Some(hint.into()) }
    }

    /// The hint the error carries, when it carries one (the command line adds its own for
    /// the other variants).
    pub fn hint(&self) -> Option<&str> {
        match self {
            Error::Usage { hint, .. } | Error::Auth { hint, .. } => hint.as_deref(),
            Error::Interrupted { hint } | Error::Busy { hint, .. } | Error::JournalMismatch { hint, .. } => Some(hint),
            Error::Stopped { .. } => Some(STOPPED_HINT),
            _ => None,
        }
    }

    /// The server's error code of a refusal, when it named one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Rejected { code, .. } => code.as_deref(),
            Error::VendorChecksum { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// How to go on after [`Error::Stopped`].
pub const STOPPED_HINT: &str = "run the same command, or `upload pending --resume`, to go on";

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
