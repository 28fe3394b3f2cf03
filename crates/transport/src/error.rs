//! What can go wrong talking to an upstream, in terms a caller can act on.

use std::time::Duration;

/// An upstream failure; every variant is the upstream's fault or the network's, never the host's.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// Could not connect, the process is not running, or it went away mid-call.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// No answer within the deadline.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// It answered with something that is not MCP.
    #[error("upstream protocol violation: {0}")]
    Protocol(String),
    /// Its HTTP endpoint answered with an unexpected status.
    #[error("upstream answered HTTP {status}")]
    Status { status: u16, body: String },
    /// Its session expired and could not be re-established.
    #[error("upstream session lost: {0}")]
    SessionLost(String),
}

impl UpstreamError {
    /// The stable machine-readable reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "upstream_unavailable",
            Self::Timeout(_) => "upstream_timeout",
            Self::Protocol(_) => "upstream_protocol_error",
            Self::Status { .. } => "upstream_http_status",
            Self::SessionLost(_) => "upstream_session_lost",
        }
    }
}
