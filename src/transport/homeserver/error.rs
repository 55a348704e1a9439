//! Errors of the homeserver layer (`protocol-spec/homeserver.md`,
//! "Failure handling").

use thiserror::Error;

/// Why a homeserver operation failed, after the retries the
/// [`RetryPolicy`](super::RetryPolicy) allows. Nothing queued is lost on any
/// of these: the caller keeps its queue and tries again later.
#[derive(Debug, Error)]
pub enum HomeserverError {
    /// The base URL is not an absolute `http`/`https` URL.
    #[error("invalid homeserver URL {0:?}")]
    InvalidUrl(String),
    /// A plain `http://` URL to a host that is not loopback: the access
    /// token and all metadata would cross the network unencrypted.
    #[error(
        "refusing plain-http homeserver URL {0:?}: the access token would travel unencrypted; \
         use https:// (http:// is allowed only for loopback hosts: 127.0.0.0/8, ::1, localhost)"
    )]
    InsecureUrl(String),
    /// The homeserver could not be reached (connection refused, DNS,
    /// timeout, reset) on every attempt.
    #[error("homeserver unreachable after {attempts} attempts: {message}")]
    Network {
        /// How many attempts were made.
        attempts: u32,
        /// The last transport error.
        message: String,
    },
    /// `429`: still rate limited after every attempt.
    #[error("homeserver rate limit: retry after {retry_after_ms} ms")]
    RateLimited {
        /// What the server last asked us to wait, in milliseconds.
        retry_after_ms: u64,
    },
    /// `401` or `M_UNKNOWN_TOKEN`: the access token is no longer valid.
    #[error(
        "the homeserver rejected the access token ({errcode}); log in again with \
         `meshrelay homeserver login URL USER --password-stdin` or `meshrelay homeserver set-token`"
    )]
    LoginRequired {
        /// The Matrix error code (`M_UNKNOWN_TOKEN`, `M_MISSING_TOKEN`, ...).
        errcode: String,
        /// Whether the server marked the logout as soft (same device may
        /// log in again).
        soft_logout: bool,
    },
    /// `413 M_TOO_LARGE`: the event or request is over the server's limit.
    #[error("the homeserver refused the request as too large: {message}")]
    TooLarge {
        /// The server's error message.
        message: String,
    },
    /// `403`: the user may not do this (not joined, not invited, ...).
    #[error("forbidden by the homeserver ({errcode}): {message}")]
    Forbidden {
        /// The Matrix error code.
        errcode: String,
        /// The server's error message.
        message: String,
    },
    /// Any other Matrix error response.
    #[error("homeserver error {status} {errcode}: {message}")]
    Matrix {
        /// HTTP status.
        status: u16,
        /// The Matrix error code, or empty if the body had none.
        errcode: String,
        /// The server's error message.
        message: String,
    },
    /// A `5xx` answer on every attempt.
    #[error("homeserver failing with HTTP {status} after {attempts} attempts")]
    Server {
        /// The last HTTP status.
        status: u16,
        /// How many attempts were made.
        attempts: u32,
    },
    /// A success response whose body is not what the API specifies.
    #[error("unexpected homeserver response: {0}")]
    BadResponse(String),
}

impl HomeserverError {
    /// Whether trying again later may succeed without the user doing
    /// anything (network, rate limit, server errors).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            HomeserverError::Network { .. }
                | HomeserverError::RateLimited { .. }
                | HomeserverError::Server { .. }
        )
    }
}
