//! The demo's resources: a static readme and the `demo://tickets/{id}` template.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::error::{ErrorKind, RpcError};
use crate::jsonrpc::parse_params;
use crate::reply::Reply;
use crate::server::CACHE_TTL_MS;
use crate::ticket;

/// The readme's URI.
pub const README_URI: &str = "demo://readme";
/// The prefix every ticket resource's URI starts with.
pub const TICKET_URI_PREFIX: &str = "demo://tickets/";
/// The ticket resource template.
pub const TICKET_URI_TEMPLATE: &str = "demo://tickets/{id}";

const README: &str = "# Portcullis demo support desk

A small MCP server bundled with Portcullis for its quickstart, tests and benchmarks.
Everything is in memory and deterministic: eight support tickets, `T-1001` to `T-1008`.

## Tools
- `search_tickets`: find tickets by words (read-only)
- `get_ticket`: one ticket by id (read-only)
- `draft_ticket`: prepare a new ticket for review (a write)
- `echo`, `slow`, `fail`: for tests and benchmarks

## Resources
- `demo://readme`: this text
- `demo://tickets/{id}`: one ticket as JSON

## Prompts
- `triage_ticket`: ask the model to triage a ticket
";

/// The `resources/list` result.
pub fn list<'p>() -> Reply<'p> {
    Reply::cacheable(
        json!({
            "resources": [{
                "uri": README_URI,
                "name": "readme",
                "title": "About this demo server",
                "description": "What the demo server offers and how its data is shaped",
                "mimeType": "text/markdown",
                "size": README.len(),
                "annotations": { "audience": ["user", "assistant"], "priority": 0.8 },
            }],
        }),
        CACHE_TTL_MS,
    )
}

/// The `resources/templates/list` result.
pub fn templates<'p>() -> Reply<'p> {
    Reply::cacheable(
        json!({
            "resourceTemplates": [{
                "uriTemplate": TICKET_URI_TEMPLATE,
                "name": "ticket",
                "title": "Support ticket",
                "description": "One support ticket as JSON, e.g. demo://tickets/T-1001",
                "mimeType": "application/json",
            }],
        }),
        CACHE_TTL_MS,
    )
}

/// Handles `resources/read`; an unknown URI is -32002 for legacy requests and -32602 for modern ones.
pub fn read<'p>(params: Option<&'p RawValue>, modern: bool) -> Result<Reply<'p>, RpcError> {
    #[derive(Deserialize)]
    struct Read<'a> {
        #[serde(borrow)]
        uri: Cow<'a, str>,
    }
    let Read { uri } = parse_params(params)?;
    let (mime_type, text) = if uri == README_URI {
        ("text/markdown", Cow::Borrowed(README))
    } else if let Some(t) = uri.strip_prefix(TICKET_URI_PREFIX).and_then(ticket::find) {
        let text = serde_json::to_string_pretty(t)
            .map_err(|e| RpcError::new(ErrorKind::Internal, format!("failed to encode ticket: {e}")))?;
        ("application/json", Cow::Owned(text))
    } else {
        return Err(RpcError::new(ErrorKind::ResourceNotFound, format!("resource not found: {uri}"))
            .with_data(json!({ "uri": uri }))
            .in_era(modern));
    };
    Ok(Reply::cacheable(json!({ "contents": [{ "uri": uri, "mimeType": mime_type, "text": text }] }), CACHE_TTL_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).expect("json")
    }

    fn body(reply: &Reply<'_>) -> serde_json::Value {
        serde_json::to_value(reply.in_era(false)).expect("serializable")
    }

    #[test]
    fn reads_readme_as_markdown() {
        let p = params(r#"{"uri":"demo://readme"}"#);
        let v = body(&read(Some(&p), false).expect("readme exists"));
        assert_eq!(v["contents"][0]["mimeType"], "text/markdown");
        assert!(v["contents"][0]["text"].as_str().expect("text").starts_with("# Portcullis"));
    }

    #[test]
    fn reads_a_ticket_through_the_template() {
        let p = params(r#"{"uri":"demo://tickets/T-1003"}"#);
        let v = body(&read(Some(&p), false).expect("ticket exists"));
        let ticket: serde_json::Value =
            serde_json::from_str(v["contents"][0]["text"].as_str().expect("text")).expect("json");
        assert_eq!(ticket["customer"], "Northwind Traders");
    }

    #[test]
    fn unknown_resource_code_depends_on_era() {
        let p = params(r#"{"uri":"demo://tickets/T-9999"}"#);
        let legacy = read(Some(&p), false).map(|_| ()).expect_err("unknown");
        assert_eq!(legacy.code(), -32002);
        assert_eq!(legacy.data, Some(json!({ "uri": "demo://tickets/T-9999" })));
        let modern = read(Some(&p), true).map(|_| ()).expect_err("unknown");
        assert_eq!(modern.code(), -32602);
    }

    #[test]
    fn missing_uri_is_invalid_params() {
        let err = read(None, false).map(|_| ()).expect_err("no uri");
        assert_eq!(err.code(), -32602);
    }
}
