//! The gateway's one error type: every failure says whose fault it was and
//! maps, in exactly one place, to a JSON-RPC code, an HTTP status and a label.

use portcullis_transport::UpstreamError;
use portcullis_wire::{ErrorCode, RpcError};

use crate::validation::Violation;

/// Who is to blame for a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The host sent something wrong.
    Host,
    /// An upstream failed.
    Upstream,
    /// A control refused (policy, registry, limits…).
    Control,
    /// The gateway itself failed.
    Gateway,
}

/// A refusal by a pipeline stage.
#[derive(Debug, Clone)]
pub struct Denied {
    /// The stage that refused, e.g. `route`.
    pub stage: &'static str,
    /// A stable machine-readable reason, e.g. `unknown_tool`.
    pub reason: &'static str,
    /// A human message (no secrets, no internals).
    pub message: String,
    /// What a host (and the record) needs beyond the reason.
    pub detail: Detail,
}

/// The machine-readable particulars of a refusal.
#[derive(Debug, Clone, Default)]
pub enum Detail {
    #[default]
    None,
    /// The ids of the policies that decided.
    Policy(Vec<String>),
    /// Where the arguments fail their schema.
    Arguments(Vec<Violation>),
}

impl Denied {
    /// A refusal with no particulars beyond its reason.
    pub fn new(stage: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self { stage, reason, message: message.into(), detail: Detail::None }
    }
}

/// Every way a host request can fail.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// The request is malformed or names something that does not exist.
    #[error("{message}")]
    InvalidParams { reason: &'static str, message: String },
    /// The method is not served on this route.
    #[error("method not found: {0}")]
    MethodNotFound(String),
    /// The resource does not exist (code depends on the host's era).
    #[error("resource not found: {0}")]
    ResourceNotFound(String),
    /// The legacy session is unknown or expired.
    #[error("session not found")]
    SessionNotFound,
    /// A pipeline stage refused.
    #[error("{}", .0.message)]
    Denied(Denied),
    /// An upstream failed.
    #[error("upstream '{server}' failed: {error}")]
    Upstream { server: String, error: UpstreamError },
    /// The gateway failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// Whose fault it was.
    pub fn blame(&self) -> Blame {
        match self {
            Self::InvalidParams { .. }
            | Self::MethodNotFound(_)
            | Self::ResourceNotFound(_)
            | Self::SessionNotFound => Blame::Host,
            Self::Denied(_) => Blame::Control,
            Self::Upstream { .. } => Blame::Upstream,
            Self::Internal(_) => Blame::Gateway,
        }
    }

    /// The metric label / machine-readable reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidParams { reason, .. } => reason,
            Self::MethodNotFound(_) => "method_not_found",
            Self::ResourceNotFound(_) => "resource_not_found",
            Self::SessionNotFound => "session_not_found",
            Self::Denied(d) => d.reason,
            Self::Upstream { error, .. } => error.reason(),
            Self::Internal(_) => "internal_error",
        }
    }

    /// The JSON-RPC error for a host of the given era.
    pub fn to_rpc(&self, modern_host: bool) -> RpcError {
        let base = match self {
            Self::InvalidParams { message, .. } => RpcError::new(ErrorCode::INVALID_PARAMS, message.clone()),
            Self::MethodNotFound(m) => RpcError::new(ErrorCode::METHOD_NOT_FOUND, format!("method not found: {m}")),
            Self::ResourceNotFound(uri) => {
                let code = if modern_host { ErrorCode::INVALID_PARAMS } else { ErrorCode::RESOURCE_NOT_FOUND };
                RpcError::new(code, "resource not found").with("uri", uri.clone())
            }
            Self::SessionNotFound => RpcError::new(ErrorCode::INVALID_REQUEST, "session not found; initialize again"),
            Self::Denied(d) => {
                let code = match d.stage {
                    "route" | "validate" => ErrorCode::INVALID_PARAMS,
                    "registry" => ErrorCode::NOT_APPROVED,
                    "approval" => ErrorCode::APPROVAL_REQUIRED,
                    "identity" => ErrorCode::UNAUTHENTICATED,
                    "audit" => ErrorCode::AUDIT_UNAVAILABLE,
                    _ => ErrorCode::DENIED,
                };
                let error = RpcError::new(code, d.message.clone()).with("stage", d.stage);
                match &d.detail {
                    Detail::None => error,
                    Detail::Policy(ids) => error.with("policies", ids.clone()),
                    Detail::Arguments(violations) => {
                        error.with("path", violations.first().map(|v| v.path.clone()).unwrap_or_default()).with(
                            "errors",
                            violations
                                .iter()
                                .map(|v| serde_json::json!({"path": v.path, "message": v.message}))
                                .collect::<Vec<_>>(),
                        )
                    }
                }
            }
            Self::Upstream { server, error } => {
                let code = match error {
                    UpstreamError::Timeout(_) => ErrorCode::UPSTREAM_TIMEOUT,
                    UpstreamError::Protocol(_) => ErrorCode::UPSTREAM_PROTOCOL,
                    UpstreamError::Unavailable(_) | UpstreamError::Status { .. } | UpstreamError::SessionLost(_) => {
                        ErrorCode::UPSTREAM_UNAVAILABLE
                    }
                };
                RpcError::new(code, format!("upstream '{server}' failed: {error}")).with("server", server.clone())
            }
            Self::Internal(_) => RpcError::new(ErrorCode::INTERNAL_ERROR, "internal error"),
        };
        base.with_reason(self.reason())
    }

    /// Shorthand for an invalid-params error.
    pub fn invalid(reason: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidParams { reason, message: message.into() }
    }
}
