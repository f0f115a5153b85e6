//! The one mapping from the library's errors to the binary's exit codes, and the hints that
//! name command-line flags.

use crate::error::Error;

/// Exit codes of the `upload` binary. The table is also in the README; keep both in sync.
pub(crate) mod exit {
    /// Everything asked for succeeded.
    pub(crate) const OK: i32 = 0;
    /// Bad command-line usage or bad input (missing file, unknown extension, invalid value).
    pub(crate) const USAGE: i32 = 2;
    /// Authentication failed: no token, a rejected token, a failed sign-in.
    pub(crate) const AUTH: i32 = 3;
    /// The provider rejected a request (a 4xx other than authentication).
    pub(crate) const REJECTED: i32 = 4;
    /// Network or server failure that persisted after the retries.
    pub(crate) const NETWORK: i32 = 5;
    /// The upload arrived but the provider's processing ended in failure.
    pub(crate) const PROCESSING_FAILED: i32 = 6;
    /// A deadline passed while waiting (for processing, delivery, ...).
    pub(crate) const TIMEOUT: i32 = 7;
    /// Another run is uploading the same file (its journal is locked); nothing was sent.
    pub(crate) const BUSY: i32 = 8;
    /// Stopped at the time limit (`--max-duration`, `--until`); journals kept: the same
    /// command, or `upload pending --resume`, goes on.
    pub(crate) const STOPPED: i32 = 9;
    /// Interrupted by Ctrl-C; the upload can be resumed by running the same command again.
    pub(crate) const INTERRUPTED: i32 = 130;
}

/// The process exit code for an error (see [`exit`]).
pub(crate) fn exit_code(err: &Error) -> i32 {
    match err {
        Error::Usage { .. } | Error::File { .. } | Error::JournalMismatch { .. } => exit::USAGE,
        Error::Auth { .. } => exit::AUTH,
        Error::Rejected { .. } | Error::VendorChecksum { .. } => exit::REJECTED,
        Error::Network { .. }
        | Error::Ambiguous { .. }
        | Error::Unreachable { .. }
        | Error::Certificate { .. }
        | Error::PlainHttp { .. }
        | Error::Protocol { .. } => exit::NETWORK,
        Error::ProcessingFailed { .. } => exit::PROCESSING_FAILED,
        Error::Timeout { .. } => exit::TIMEOUT,
        Error::Busy { .. } => exit::BUSY,
        Error::Interrupted { .. } => exit::INTERRUPTED,
        Error::Stopped { .. } => exit::STOPPED,
    }
}

/// A short hint on how to fix the problem: the one the error carries, else one of the command
/// line's for its variant (or its server code).
pub(crate) fn hint(err: &Error) -> Option<String> {
    if let Some(h) = err.hint() {
        return Some(h.to_string());
    }
    let h = match err {
        Error::File { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            "check the path; relative paths are taken from the current directory"
        }
        Error::File { source, .. } if matches!(source.raw_os_error(), Some(28 | 122)) => {
            "the disk is full: free some space, or point --state-dir (or UPLOAD_STATE_DIR) at another disk for the journals and records"
        }
        Error::Network { .. } => {
            "check the connection and run the same command again: finished parts are not sent twice"
        }
        Error::Ambiguous { .. } => {
            "run the same command again: where the provider can look up what the request did it carries on from there; README \"Lost answers\" says what each provider may leave over"
        }
        Error::Certificate { .. } => {
            "if a TLS-inspecting proxy or a private CA signs this host's certificate, give its CA with --ca-bundle FILE (env UPLOAD_CA_BUNDLE or SSL_CERT_FILE)"
        }
        Error::PlainHttp { host, .. } => {
            return Some(format!(
                "{host} speaks plain http: give its URL with http:// instead of https:// (e.g. --endpoint http://{host}); plain http is accepted for loopback only"
            ));
        }
        Error::Unreachable { .. } => {
            "check the endpoint (--endpoint), the network and any proxy (HTTPS_PROXY); nothing was uploaded"
        }
        Error::Rejected { .. } if err.code() == Some("MAX_IMAGES_REACHED") => {
            "upload the rest into another session (leave --session out for a new one), or create the session with a higher --max-images"
        }
        Error::Timeout { .. } => "raise --wait-timeout, or check the status later",
        Error::VendorChecksum { provider, .. } => {
            return Some(format!(
                "report it to {provider}: its presigned URLs sign a checksum (x-amz-checksum-* or x-amz-sdk-checksum-algorithm) that the bytes sent cannot match; running again meets the same"
            ));
        }
        // The API's paths on a server that has no such method: most often the S3 store's
        // address (or a web page) given as the API's.
        Error::Rejected { status: 405, .. } => {
            "this server has no such API call: check that --endpoint is the provider's API origin, not its S3 store's or a web page's"
        }
        _ => return None,
    };
    Some(h.to_string())
}
