//! The library's error type and the one documented mapping from errors to exit codes.

use std::path::PathBuf;

/// Exit codes of the `upload` binary. The table is also in the README; keep both in sync.
pub mod exit {
    /// Everything asked for succeeded.
    pub const OK: i32 = 0;
    /// Bad command-line usage or bad input (missing file, unknown extension, invalid value).
    pub const USAGE: i32 = 2;
    /// Authentication failed: no token, a rejected token, a failed sign-in.
    pub const AUTH: i32 = 3;
    /// The provider rejected a request (a 4xx other than authentication).
    pub const REJECTED: i32 = 4;
    /// Network or server failure that persisted after the retries.
    pub const NETWORK: i32 = 5;
    /// The upload arrived but the provider's processing ended in failure.
    pub const PROCESSING_FAILED: i32 = 6;
    /// A deadline passed while waiting (for processing, delivery, ...).
    pub const TIMEOUT: i32 = 7;
    /// Another run is uploading the same file (its journal is locked); nothing was sent.
    pub const BUSY: i32 = 8;
    /// Interrupted by Ctrl-C; the upload can be resumed by running the same command again.
    pub const INTERRUPTED: i32 = 130;
}

/// Everything that can go wrong, with enough context to print one clear line and a hint.
#[derive(Debug, thiserror::Error)]
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
        /// One-line summary of the server's error body.
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
    /// Interrupted by the user; resumable.
    #[error("interrupted")]
    Interrupted {
        /// How to resume.
        hint: String,
    },
}

impl Error {
    /// Shorthand for a usage error with a hint.
    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Usage { message: message.into(), hint: Some(hint.into()) }
    }

    /// The process exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage { .. } | Error::File { .. } => exit::USAGE,
            Error::Auth { .. } => exit::AUTH,
            Error::Rejected { .. } => exit::REJECTED,
            Error::Network { .. }
            | Error::Ambiguous { .. }
            | Error::Unreachable { .. }
            | Error::Certificate { .. }
            | Error::Protocol { .. } => exit::NETWORK,
            Error::ProcessingFailed { .. } => exit::PROCESSING_FAILED,
            Error::Timeout { .. } => exit::TIMEOUT,
            Error::Busy { .. } => exit::BUSY,
            Error::Interrupted { .. } => exit::INTERRUPTED,
        }
    }

    /// A short hint on how to fix the problem, when one is known.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Usage { hint, .. } | Error::Auth { hint, .. } => hint.clone(),
            Error::Interrupted { hint } | Error::Busy { hint, .. } => Some(hint.clone()),
            Error::File { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Some("check the path; relative paths are taken from the current directory".into())
            }
            Error::Network { message, .. } if message.contains("TLS certificate of") => Some(
                "when a TLS-inspecting proxy or a private CA signs it, give that CA's certificate with --ca-bundle FILE (env UPLOAD_CA_BUNDLE or SSL_CERT_FILE)".into(),
            ),
            Error::Network { .. } => {
                Some("check the connection and run the same command again: finished parts are not sent twice".into())
            }
            Error::Ambiguous { .. } => Some(
                "run the same command again: where the provider can look up what the request did it carries on from there; README \"Lost answers\" says what each provider may leave over".into(),
            ),
            Error::Certificate { .. } => Some(
                "if a TLS-inspecting proxy or a private CA signs this host's certificate, give its CA with --ca-bundle FILE (env UPLOAD_CA_BUNDLE or SSL_CERT_FILE)".into(),
            ),
            Error::Unreachable { .. } => Some(
                "check the endpoint (--endpoint), the network and any proxy (HTTPS_PROXY); nothing was uploaded".into(),
            ),
            Error::Rejected { message, .. } if message.contains("MAX_IMAGES_REACHED") => Some(
                "upload the rest into another session (leave --session out for a new one), or create the session with a higher --max-images".into(),
            ),
            Error::Timeout { .. } => Some("raise --wait-timeout, or check the status later".into()),
            _ => None,
        }
    }
}

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
