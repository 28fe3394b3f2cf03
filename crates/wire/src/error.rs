//! JSON-RPC error codes: the spec's, and the gateway's own in the
//! implementation-defined range, each with a machine-readable `data.reason`.

use serde::Serialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// A JSON-RPC error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ErrorCode(pub i32);

impl ErrorCode {
    pub const PARSE_ERROR: Self = Self(-32700);
    pub const INVALID_REQUEST: Self = Self(-32600);
    pub const METHOD_NOT_FOUND: Self = Self(-32601);
    pub const INVALID_PARAMS: Self = Self(-32602);
    pub const INTERNAL_ERROR: Self = Self(-32603);
    /// MCP (legacy revisions): the requested resource does not exist. 2026-07-28 uses -32602.
    pub const RESOURCE_NOT_FOUND: Self = Self(-32002);
    /// MCP 2026-07-28: an `Mcp-*` header is missing or does not agree with the body (HTTP 400).
    pub const HEADER_MISMATCH: Self = Self(-32020);
    /// MCP 2026-07-28: the request needs a client capability it did not declare (HTTP 400).
    pub const MISSING_CLIENT_CAPABILITY: Self = Self(-32021);
    /// MCP 2026-07-28: the protocol version is not supported; `data.supported` and `data.requested` (HTTP 400).
    pub const UNSUPPORTED_PROTOCOL_VERSION: Self = Self(-32022);
    /// MCP 2025-11-25: a URL-mode elicitation is required first.
    pub const URL_ELICITATION_REQUIRED: Self = Self(-32042);

    // The gateway's own codes sit outside -32768..-32000, as the spec asks of application codes.
    /// Gateway: the upstream server could not be reached or went away mid-call.
    pub const UPSTREAM_UNAVAILABLE: Self = Self(-31001);
    /// Gateway: the upstream server did not answer within the configured timeout.
    pub const UPSTREAM_TIMEOUT: Self = Self(-31002);
    /// Gateway: the upstream server answered with something that is not MCP.
    pub const UPSTREAM_PROTOCOL: Self = Self(-31003);
    /// Gateway: the policy refused the request (`data.policies` names the deciding policies).
    pub const DENIED: Self = Self(-31010);
    /// Gateway: the server, tool or prompt is not approved in the registry (quarantined, unapproved, removed).
    pub const NOT_APPROVED: Self = Self(-31011);
    /// Gateway: the call needs a human's approval first.
    pub const APPROVAL_REQUIRED: Self = Self(-31012);
    /// Gateway: the host did not authenticate, or its credentials are not valid (HTTP 401).
    pub const UNAUTHENTICATED: Self = Self(-31013);
    /// Gateway: the host's token lacks a scope this gateway requires (HTTP 403).
    pub const INSUFFICIENT_SCOPE: Self = Self(-31014);
    /// Gateway: the audit trail cannot record the call (its store is down and the call's tier
    /// may not wait in the spool), so the call is refused or its result withheld.
    pub const AUDIT_UNAVAILABLE: Self = Self(-31020);
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, Serialize)]
pub struct RpcError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub data: serde_json::Map<String, serde_json::Value>,
}

impl RpcError {
    /// A new error with a human message.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self { code, message: message.into(), data: serde_json::Map::new() }
    }

    /// Adds a field to `data`.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.data.insert(key.to_owned(), value.into());
        self
    }

    /// Sets `data.reason`, the stable machine-readable cause.
    pub fn with_reason(self, reason: &str) -> Self {
        self.with("reason", reason)
    }

    /// Sets `data.detail`, a human explanation.
    pub fn with_detail(self, detail: impl Into<String>) -> Self {
        self.with("detail", detail.into())
    }

    /// The machine-readable reason, if set.
    pub fn reason(&self) -> Option<&str> {
        self.data.get("reason")?.as_str()
    }

    /// Serializes to raw JSON.
    pub fn to_raw(&self) -> Box<RawValue> {
        serde_json::value::to_raw_value(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_reason() {
        let e = RpcError::new(ErrorCode::UPSTREAM_TIMEOUT, "upstream timed out")
            .with_reason("upstream_timeout")
            .with("server", "demo");
        assert_eq!(
            e.to_raw().get(),
            r#"{"code":-31002,"message":"upstream timed out","data":{"reason":"upstream_timeout","server":"demo"}}"#
        );
        assert_eq!(e.reason(), Some("upstream_timeout"));
    }
}
