//! The MCP requests the load generator sends, built once per scenario: a body and the headers its
//! era needs, cloned (by reference count) for every send.

use bytes::Bytes;
use serde_json::{Value, json};

/// The revision modern requests carry.
pub const MODERN: &str = "2026-07-28";
/// The revision legacy sessions negotiate.
pub const LEGACY: &str = "2025-11-25";

/// Which protocol era a request is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2026-07-28: stateless, `_meta` and `Mcp-*` headers on every request.
    Modern,
    /// 2025-11-25: inside an `initialize`d session (`Mcp-Session-Id`).
    Legacy,
    /// 2025-11-25 `initialize` itself: opens a session per request (the harness closes them afterwards).
    Handshake,
}

/// One request, ready to send many times.
#[derive(Debug, Clone)]
pub struct Template {
    /// The era (decides the headers and whether a session is needed).
    pub era: Era,
    /// The JSON-RPC method (also the `Mcp-Method` header).
    pub method: &'static str,
    /// `Mcp-Name` for `tools/call`.
    pub name: Option<String>,
    /// The whole JSON-RPC body.
    pub body: Bytes,
}

impl Template {
    /// `tools/call` of `tool` with these arguments; a progress token asks for a streamed (SSE) answer.
    pub fn call(era: Era, tool: &str, arguments: Value, progress: bool) -> Template {
        let mut params = json!({ "name": tool, "arguments": arguments });
        if progress {
            params["_meta"] = json!({ "progressToken": "bench" });
        }
        Template::new(era, "tools/call", Some(tool.to_owned()), params)
    }

    /// A request without a name (`tools/list`, `server/discover`).
    pub fn plain(era: Era, method: &'static str) -> Template {
        Template::new(era, method, None, json!({}))
    }

    /// The legacy `initialize` that opens a session.
    pub fn initialize() -> Template {
        let params = json!({
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": { "name": "portcullis-bench", "version": env!("CARGO_PKG_VERSION") },
        });
        Template::new(Era::Handshake, "initialize", None, params)
    }

    /// `notifications/initialized`, sent once per session after `initialize`.
    pub fn initialized() -> Bytes {
        Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
    }

    fn new(era: Era, method: &'static str, name: Option<String>, mut params: Value) -> Template {
        if era == Era::Modern {
            let meta = params.as_object_mut().map(|p| p.entry("_meta").or_insert_with(|| json!({})));
            if let Some(meta) = meta {
                meta["io.modelcontextprotocol/protocolVersion"] = json!(MODERN);
                meta["io.modelcontextprotocol/clientCapabilities"] = json!({});
            }
        }
        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        Template { era, method, name, body: Bytes::from(body.to_string()) }
    }
}

/// A string argument of about `bytes` bytes (ASCII, so the JSON is the same size).
pub fn text_of(bytes: usize) -> String {
    let pattern = "portcullis benchmark payload ";
    pattern.chars().cycle().take(bytes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_requests_carry_revision_and_capabilities() {
        let t = Template::call(Era::Modern, "echo", json!({ "text": "hi" }), true);
        let v: Value = serde_json::from_slice(&t.body).unwrap_or_default();
        assert_eq!(v["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"], MODERN);
        assert_eq!(v["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"], json!({}));
        assert_eq!(v["params"]["_meta"]["progressToken"], "bench");
        assert_eq!(t.name.as_deref(), Some("echo"));
    }

    #[test]
    fn legacy_requests_have_no_modern_meta() {
        let t = Template::plain(Era::Legacy, "tools/list");
        let v: Value = serde_json::from_slice(&t.body).unwrap_or_default();
        assert_eq!(v["params"], json!({}));
    }

    #[test]
    fn text_has_the_requested_size() {
        assert_eq!(text_of(65_536).len(), 65_536);
    }
}
