//! The JSON-RPC errors the demo returns, mapped to codes and HTTP statuses in this one place.

use serde_json::Value;

/// What went wrong, from the caller's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The message is not JSON.
    Parse,
    /// JSON, but not a valid JSON-RPC message (wrong `jsonrpc`, bad `id`, a batch).
    InvalidRequest,
    /// Unknown method, or a method of the other era.
    MethodNotFound,
    /// Bad params: unknown tool or prompt, arguments that break the schema.
    InvalidParams,
    /// A modern request's `_meta` lacks a required key or is malformed.
    InvalidMeta,
    /// `resources/read` of a URI that does not exist.
    ResourceNotFound,
    /// The requested protocol revision is not one the demo speaks.
    UnsupportedVersion,
    /// A standard `Mcp-*` header is missing or disagrees with the body.
    HeaderMismatch,
    /// A legacy HTTP request after `initialize` came without `Mcp-Session-Id`.
    SessionRequired,
    /// A legacy HTTP request named an unknown or ended session.
    SessionNotFound,
    /// The `Origin` header names a page that is not on this machine.
    ForbiddenOrigin,
    /// The client cancelled the request (answered only where the transport needs an answer).
    Cancelled,
    /// A bug in the demo.
    Internal,
}

/// A JSON-RPC error object plus the era it is answered in.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Human-readable, lowercase, no trailing period.
    pub message: String,
    /// Machine-readable details (`supported`/`requested`, `uri`, …).
    pub data: Option<Value>,
    /// Whether the failing request was a modern (2026-07-28) one; codes and statuses differ by era.
    pub modern: bool,
}

impl RpcError {
    /// An error of `kind` with `message` and no data, answered in the legacy era.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> RpcError {
        RpcError { kind, message: message.into(), data: None, modern: false }
    }

    /// Attaches machine-readable details.
    pub fn with_data(mut self, data: Value) -> RpcError {
        self.data = Some(data);
        self
    }

    /// Marks the error as answering a modern request.
    pub fn in_era(mut self, modern: bool) -> RpcError {
        self.modern = modern;
        self
    }

    /// Shorthand for invalid params.
    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(ErrorKind::InvalidParams, message)
    }

    /// The requested revision is not spoken; `data` lists what is (both fields required by 2026-07-28).
    pub fn unsupported_version(requested: &str) -> RpcError {
        RpcError::new(ErrorKind::UnsupportedVersion, "unsupported protocol version").with_data(serde_json::json!({
            "supported": crate::revision::Revision::supported(),
            "requested": requested,
        }))
    }

    /// The JSON-RPC error code.
    pub fn code(&self) -> i64 {
        match self.kind {
            ErrorKind::Parse => -32700,
            ErrorKind::InvalidRequest => -32600,
            ErrorKind::MethodNotFound => -32601,
            ErrorKind::InvalidParams | ErrorKind::InvalidMeta => -32602,
            // 2026-07-28 moved resource-not-found to invalid params and reserved -32002.
            ErrorKind::ResourceNotFound if self.modern => -32602,
            ErrorKind::ResourceNotFound => -32002,
            ErrorKind::Internal => -32603,
            // Implementation-defined range, as the reference SDKs use it for sessions.
            ErrorKind::SessionRequired | ErrorKind::ForbiddenOrigin => -32000,
            ErrorKind::SessionNotFound => -32001,
            ErrorKind::HeaderMismatch => -32020,
            ErrorKind::UnsupportedVersion => -32022,
            // LSP's RequestCancelled, outside the JSON-RPC reserved range.
            ErrorKind::Cancelled => -32800,
        }
    }

    /// The HTTP status this error is answered with on Streamable HTTP.
    pub fn http_status(&self) -> u16 {
        match self.kind {
            ErrorKind::Parse
            | ErrorKind::InvalidRequest
            | ErrorKind::InvalidMeta
            | ErrorKind::UnsupportedVersion
            | ErrorKind::HeaderMismatch
            | ErrorKind::SessionRequired => 400,
            ErrorKind::ForbiddenOrigin => 403,
            ErrorKind::SessionNotFound => 404,
            // 2026-07-28 answers an unknown method with 404 so a client can tell it from a legacy server.
            ErrorKind::MethodNotFound if self.modern => 404,
            ErrorKind::MethodNotFound
            | ErrorKind::InvalidParams
            | ErrorKind::ResourceNotFound
            | ErrorKind::Cancelled => 200,
            ErrorKind::Internal => 500,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_not_found_code_depends_on_era() {
        let legacy = RpcError::new(ErrorKind::ResourceNotFound, "no such resource");
        assert_eq!(legacy.code(), -32002);
        assert_eq!(legacy.in_era(true).code(), -32602);
    }

    #[test]
    fn unknown_method_is_404_only_for_modern_requests() {
        let err = RpcError::new(ErrorKind::MethodNotFound, "unknown method");
        assert_eq!(err.http_status(), 200);
        assert_eq!(err.in_era(true).http_status(), 404);
    }

    #[test]
    fn unsupported_version_lists_supported_and_requested() {
        let err = RpcError::unsupported_version("1900-01-01");
        assert_eq!(err.code(), -32022);
        assert_eq!(err.http_status(), 400);
        let data = err.data.expect("data present");
        assert_eq!(data["requested"], "1900-01-01");
        assert_eq!(data["supported"][0], "2026-07-28");
    }
}
