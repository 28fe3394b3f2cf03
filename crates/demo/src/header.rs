//! The MCP HTTP headers: `Origin`, `MCP-Protocol-Version`, `Mcp-Session-Id`, and the 2026-07-28
//! headers that mirror the body (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`), which must agree with it.

use std::borrow::Cow;

use axum::http::header::{ACCEPT, ORIGIN};
use axum::http::{HeaderMap, HeaderName};
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::{ErrorKind, RpcError};
use crate::jsonrpc::Request;
use crate::meta::{PROTOCOL_VERSION, RequestMeta};
use crate::revision::Revision;
use crate::tool::HEADER_PARAMS;

/// The revision the client speaks on this request (legacy: the negotiated one).
pub const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// The legacy session id, minted by `initialize`.
pub const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// Mirrors the body's `method` (2026-07-28).
pub const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
/// Mirrors `params.name` or `params.uri` (2026-07-28).
pub const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

/// Rejects requests from web pages not served from this machine (DNS rebinding); no `Origin` is fine.
pub fn check_origin(headers: &HeaderMap) -> Result<(), RpcError> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let host = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, authority)| {
        match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => authority.split(':').next().unwrap_or_default(),
        }
    });
    match host {
        Some("localhost" | "127.0.0.1" | "::1") => Ok(()),
        _ => Err(RpcError::new(ErrorKind::ForbiddenOrigin, "origin not allowed")),
    }
}

/// The `MCP-Protocol-Version` header: `None` when absent, an error when it names no revision we speak.
pub fn protocol_version(headers: &HeaderMap) -> Result<Option<Revision>, RpcError> {
    let Some(value) = headers.get(MCP_PROTOCOL_VERSION) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default();
    match Revision::parse(value) {
        Some(revision) => Ok(Some(revision)),
        None => Err(RpcError::unsupported_version(value).in_era(true)),
    }
}

/// The `Mcp-Session-Id` header, if present and readable.
pub fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers.get(MCP_SESSION_ID).and_then(|v| v.to_str().ok())
}

/// Whether the client takes an SSE response.
pub fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains("text/event-stream"))
}

/// Checks a modern request's mirrored headers against its body (the header revision is already known
/// to be 2026-07-28): missing `_meta` keys are -32602, any disagreement is -32020; both answer 400.
pub fn check_mirrored(headers: &HeaderMap, request: &Request) -> Result<(), RpcError> {
    let params = request.params.as_deref();
    let meta = RequestMeta::parse(params).map_err(|e| RpcError { kind: ErrorKind::InvalidMeta, ..e })?;
    let Some(body_version) = meta.protocol_version else {
        return Err(RpcError::new(ErrorKind::InvalidMeta, format!("missing required _meta key {PROTOCOL_VERSION}"))
            .with_data(serde_json::json!({ "supported": Revision::supported() })));
    };
    if body_version != Revision::MODERN.as_str() {
        return Err(mismatch(&MCP_PROTOCOL_VERSION, Revision::MODERN.as_str(), body_version));
    }
    expect(headers, &MCP_METHOD, Some(&request.method))?;
    #[derive(Deserialize)]
    struct Named<'a> {
        #[serde(default, borrow)]
        name: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        uri: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        arguments: Option<&'a RawValue>,
    }
    let named = match request.method.as_str() {
        "tools/call" | "prompts/get" | "resources/read" => {
            // A body without a usable name is the handler's -32602 to report, not a header mismatch.
            match serde_json::from_str::<Named<'_>>(params.map_or("{}", RawValue::get)) {
                Ok(named) => named,
                Err(_) => return Ok(()),
            }
        }
        _ => return Ok(()),
    };
    let name = if request.method == "resources/read" { &named.uri } else { &named.name };
    expect(headers, &MCP_NAME, name.as_deref())?;
    if request.method == "tools/call" {
        for param in HEADER_PARAMS.iter().filter(|p| named.name.as_deref() == Some(p.tool)) {
            let value = named
                .arguments
                .and_then(|args| serde_json::from_str::<serde_json::Map<String, Value>>(args.get()).ok())
                .and_then(|mut args| args.remove(param.argument))
                .and_then(|v| match v {
                    Value::String(s) => Some(s),
                    Value::Bool(b) => Some(b.to_string()),
                    Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
                    _ => None,
                });
            expect(headers, &HeaderName::from_static(param.header), value.as_deref())?;
        }
    }
    Ok(())
}

/// Decodes a mirrored header value: plain visible ASCII, or `=?base64?…?=` around UTF-8.
pub fn decode_value(value: &str) -> Option<Cow<'_, str>> {
    match value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) {
        Some(encoded) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
            String::from_utf8(bytes).ok().map(Cow::Owned)
        }
        None => Some(Cow::Borrowed(value)),
    }
}

/// A mirrored header must be present exactly when the body has the value, and equal it once decoded.
fn expect(headers: &HeaderMap, name: &HeaderName, body: Option<&str>) -> Result<(), RpcError> {
    match (headers.get(name), body) {
        (None, None) => Ok(()),
        (None, Some(_)) => {
            Err(RpcError::new(ErrorKind::HeaderMismatch, format!("header mismatch: missing {name} header")))
        }
        (Some(_), None) => Err(RpcError::new(
            ErrorKind::HeaderMismatch,
            format!("header mismatch: {name} header given but the body has no such value"),
        )),
        (Some(raw), Some(body)) => {
            let decoded = raw.to_str().ok().and_then(decode_value).ok_or_else(|| {
                RpcError::new(ErrorKind::HeaderMismatch, format!("header mismatch: {name} header value is not valid"))
            })?;
            if decoded == body { Ok(()) } else { Err(mismatch(name, &decoded, body)) }
        }
    }
}

fn mismatch(name: &HeaderName, header: &str, body: &str) -> RpcError {
    RpcError::new(
        ErrorKind::HeaderMismatch,
        format!("header mismatch: {name} header value '{header}' does not match body value '{body}'"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::Message;

    fn request(body: &str) -> Request {
        match Message::parse(body.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(HeaderName::from_static(k), v.parse().expect("valid header value"));
        }
        map
    }

    const CALL_ECHO: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{
        "io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}},
        "name":"echo","arguments":{"text":"hi"}}}"#;

    #[test]
    fn accepts_headers_that_mirror_the_body() {
        let h = headers(&[("mcp-method", "tools/call"), ("mcp-name", "echo")]);
        assert!(check_mirrored(&h, &request(CALL_ECHO)).is_ok());
    }

    #[test]
    fn rejects_missing_or_different_method_and_name() {
        for h in [
            headers(&[("mcp-name", "echo")]),
            headers(&[("mcp-method", "tools/list"), ("mcp-name", "echo")]),
            headers(&[("mcp-method", "tools/call")]),
            headers(&[("mcp-method", "tools/call"), ("mcp-name", "fail")]),
        ] {
            let err = check_mirrored(&h, &request(CALL_ECHO)).expect_err("mismatch");
            assert_eq!((err.code(), err.http_status()), (-32020, 400), "{h:?}");
        }
    }

    #[test]
    fn decodes_base64_sentinel_values() {
        assert_eq!(decode_value("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(), Some("Hello, 世界"));
        assert_eq!(decode_value("us-west1").as_deref(), Some("us-west1"));
        assert_eq!(decode_value("=?base64?!!!?="), None);
        let h = headers(&[("mcp-method", "tools/call"), ("mcp-name", "=?base64?ZWNobw==?=")]);
        assert!(check_mirrored(&h, &request(CALL_ECHO)).is_ok());
    }

    #[test]
    fn requires_mcp_param_header_for_annotated_arguments() {
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{
            "io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}},
            "name":"draft_ticket","arguments":{"title":"t","body":"b","priority":"high"}}}"#;
        let base = [("mcp-method", "tools/call"), ("mcp-name", "draft_ticket")];
        assert_eq!(check_mirrored(&headers(&base), &request(body)).map_err(|e| e.code()), Err(-32020));
        let wrong = headers(&[base[0], base[1], ("mcp-param-priority", "low")]);
        assert_eq!(check_mirrored(&wrong, &request(body)).map_err(|e| e.code()), Err(-32020));
        let right = headers(&[base[0], base[1], ("mcp-param-priority", "high")]);
        assert!(check_mirrored(&right, &request(body)).is_ok());
    }

    #[test]
    fn missing_body_version_is_invalid_meta_and_other_version_a_mismatch() {
        let h = headers(&[("mcp-method", "tools/list")]);
        let err =
            check_mirrored(&h, &request(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)).expect_err("no _meta");
        assert_eq!((err.code(), err.http_status()), (-32602, 400));
        let err = check_mirrored(
            &h,
            &request(
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{
                "io.modelcontextprotocol/protocolVersion":"2025-11-25"}}}"#,
            ),
        )
        .expect_err("other version");
        assert_eq!(err.code(), -32020);
    }

    #[test]
    fn allows_only_local_origins() {
        assert!(check_origin(&headers(&[])).is_ok());
        assert!(check_origin(&headers(&[("origin", "http://localhost:5173")])).is_ok());
        assert!(check_origin(&headers(&[("origin", "http://[::1]:8080")])).is_ok());
        assert!(check_origin(&headers(&[("origin", "https://127.0.0.1")])).is_ok());
        for bad in ["https://evil.example", "null", "http://localhost.evil.example"] {
            let err = check_origin(&headers(&[("origin", bad)])).expect_err(bad);
            assert_eq!(err.http_status(), 403);
        }
    }

    #[test]
    fn unknown_protocol_version_header_is_unsupported() {
        let err = protocol_version(&headers(&[("mcp-protocol-version", "2030-01-01")])).expect_err("unknown");
        assert_eq!((err.code(), err.http_status()), (-32022, 400));
        assert_eq!(protocol_version(&headers(&[])).map_err(|e| e.code()), Ok(None));
    }
}
