//! Every bad input a host can send gets a typed error and a fitting HTTP status.

use reqwest::Method;
use serde_json::json;

use crate::harness::{Gateway, legacy_session, modern, post, raw};

/// Two demo upstreams on one aggregating route, plus a single-upstream route.
fn gateway() -> Gateway {
    Gateway::start(
        r#"
[gateway]
max_body_bytes = 65536

[[upstream]]
name = "a"
transport = "stdio"
command = "$PORTCULLIS_EXE"
args = ["demo"]

[[upstream]]
name = "b"
transport = "stdio"
command = "$PORTCULLIS_EXE"
args = ["demo"]

[[route]]
path = "/mcp"
upstreams = ["a", "b"]
"#,
    )
}

fn modern_headers<'a>(method: &'a str, name: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![("mcp-protocol-version", "2026-07-28"), ("mcp-method", method)];
    if let Some(n) = name {
        h.push(("mcp-name", n));
    }
    h
}

#[tokio::test]
async fn malformed_and_invalid_messages_get_jsonrpc_errors() {
    let gw = gateway();
    let url = gw.url("/mcp");
    let r = raw(Method::POST, &url, &[], "{\"jsonrpc\":\"2.0\",").await;
    assert_eq!((r.status, r.code(), r.reason().as_str()), (400, -32700, "malformed_json"), "{}", r.body);
    assert!(r.json()["id"].is_null());

    // Not UTF-8, in a member the gateway would not otherwise read: a parse error all the same.
    let body = b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/list\",\"x\":\"\xff\"}".to_vec();
    let r = raw(Method::POST, &url, &[], body).await;
    assert_eq!((r.status, r.code(), r.reason().as_str()), (400, -32700, "malformed_json"), "{}", r.body);
    assert!(r.json()["id"].is_null());

    let r = post(&url, &[], &json!({"jsonrpc":"1.0","id":7,"method":"tools/list"})).await;
    assert_eq!((r.status, r.code()), (400, -32600), "{}", r.body);
    assert_eq!(r.json()["id"], 7, "the error answers the request's id");

    let r = post(&url, &[], &json!({"jsonrpc":"2.0","id":{"x":1},"method":"tools/list"})).await;
    assert_eq!((r.status, r.code()), (400, -32600), "{}", r.body);

    let r = post(&url, &[], &json!([])).await;
    assert_eq!((r.status, r.code()), (400, -32600), "{}", r.body);
}

#[tokio::test]
async fn oversized_body_is_refused_with_413() {
    let gw = gateway();
    let big = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{{\"pad\":\"{}\"}}}}",
        "x".repeat(70_000)
    );
    let r = raw(Method::POST, &gw.url("/mcp"), &[], big).await;
    assert_eq!((r.status, r.reason().as_str()), (413, "body_too_large"), "{}", r.body);
}

#[tokio::test]
async fn modern_requests_are_validated_before_anything_runs() {
    let gw = gateway();
    let url = gw.url("/mcp");
    let list = modern(1, "tools/list", json!({}));

    // Unsupported version in header and body.
    let mut bad = list.clone();
    bad["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let r = post(&url, &[("mcp-protocol-version", "2099-01-01"), ("mcp-method", "tools/list")], &bad).await;
    assert_eq!((r.status, r.code()), (400, -32022), "{}", r.body);
    let data = &r.json()["error"]["data"];
    assert_eq!(data["requested"], "2099-01-01");
    assert!(data["supported"].as_array().is_some_and(|s| s.contains(&json!("2026-07-28"))), "{data}");

    // Missing MCP-Protocol-Version header.
    let r = post(&url, &[("mcp-method", "tools/list")], &list).await;
    assert_eq!((r.status, r.code()), (400, -32020), "{}", r.body);

    // Mcp-Method disagrees with the body.
    let r = post(&url, &modern_headers("prompts/list", None), &list).await;
    assert_eq!((r.status, r.code(), r.reason().as_str()), (400, -32020, "header_mismatch"), "{}", r.body);

    // Mcp-Name disagrees with params.name.
    let call = modern(2, "tools/call", json!({"name":"a__echo","arguments":{"text":"x"}}));
    let r = post(&url, &modern_headers("tools/call", Some("b__echo")), &call).await;
    assert_eq!((r.status, r.code()), (400, -32020), "{}", r.body);

    // Missing clientCapabilities.
    let mut no_caps = list.clone();
    no_caps["params"]["_meta"].as_object_mut().map(|m| m.remove("io.modelcontextprotocol/clientCapabilities"));
    let r = post(&url, &modern_headers("tools/list", None), &no_caps).await;
    assert_eq!((r.status, r.code()), (400, -32602), "{}", r.body);

    // Unknown method on an aggregating route.
    let r = post(&url, &modern_headers("bogus/method", None), &modern(3, "bogus/method", json!({}))).await;
    assert_eq!((r.status, r.code()), (404, -32601), "{}", r.body);

    let r = post(&url, &modern_headers("tools/list", None), &list).await;
    assert_eq!(r.status, 200, "a valid modern request passes: {}", r.body);
}

#[tokio::test]
async fn unknown_tools_and_bad_params_are_invalid_params() {
    let gw = gateway();
    let url = gw.url("/mcp");
    let call = modern(1, "tools/call", json!({"name":"zz__nothing","arguments":{}}));
    let r = post(&url, &modern_headers("tools/call", Some("zz__nothing")), &call).await;
    assert_eq!((r.status, r.code(), r.reason().as_str()), (200, -32602, "unknown_tool"), "{}", r.body);

    let sid = legacy_session(&url, "2025-06-18").await;
    let h = [("mcp-session-id", sid.as_str()), ("mcp-protocol-version", "2025-06-18")];
    let r = post(&url, &h, &json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"arguments":{}}})).await;
    assert_eq!((r.code(), r.reason().as_str()), (-32602, "missing_name"), "{}", r.body);
    let r = post(&url, &h, &json!({"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"cursor":"forged"}})).await;
    assert_eq!((r.code(), r.reason().as_str()), (-32602, "invalid_cursor"), "{}", r.body);
    let r =
        post(&url, &h, &json!({"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"nope://x"}})).await;
    assert_eq!((r.code(), r.reason().as_str()), (-32002, "resource_not_found"), "{}", r.body);
}

#[tokio::test]
async fn a_forged_request_state_is_refused() {
    let gw = gateway();
    let url = gw.url("/mcp");
    let call = modern(
        1,
        "tools/call",
        json!({"name":"a__echo","arguments":{"text":"x"},"requestState":"portcullis.parked.0123456789abcdef","inputResponses":{}}),
    );
    let r = post(&url, &modern_headers("tools/call", Some("a__echo")), &call).await;
    assert_eq!((r.code(), r.reason().as_str()), (-32602, "invalid_request_state"), "{}", r.body);
}

#[tokio::test]
async fn legacy_sessions_are_enforced() {
    let gw = gateway();
    let url = gw.url("/mcp");
    let list = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});

    let r = post(&url, &[], &list).await;
    assert_eq!((r.status, r.reason().as_str()), (400, "session_required"), "{}", r.body);

    let r = post(&url, &[("mcp-session-id", "not-a-session")], &list).await;
    assert_eq!((r.status, r.reason().as_str()), (404, "session_not_found"), "{}", r.body);

    let sid = legacy_session(&url, "2025-11-25").await;
    assert!(sid.bytes().all(|b| (0x21..=0x7e).contains(&b)), "session id is visible ASCII");
    let r = post(&url, &[("mcp-session-id", &sid), ("mcp-protocol-version", "2025-06-18")], &list).await;
    assert_eq!((r.status, r.reason().as_str()), (400, "protocol_version_mismatch"), "{}", r.body);

    let r = post(&url, &[("mcp-session-id", &sid), ("mcp-protocol-version", "2025-11-25")], &list).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["result"]["tools"].as_array().is_some_and(|t| !t.is_empty()));

    let r = raw(Method::DELETE, &url, &[("mcp-session-id", &sid)], "").await;
    assert_eq!(r.status, 200);
    let r = post(&url, &[("mcp-session-id", &sid)], &list).await;
    assert_eq!(r.status, 404, "a deleted session is gone: {}", r.body);

    let r = raw(Method::GET, &url, &[], "").await;
    assert_eq!(r.status, 405, "no standalone stream without a session");
}

#[tokio::test]
async fn batches_only_in_2025_03_26() {
    let gw = gateway();
    let url = gw.url("/mcp");
    let batch = json!([{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]);
    let sid = legacy_session(&url, "2025-06-18").await;
    let r = post(&url, &[("mcp-session-id", &sid)], &batch).await;
    assert_eq!((r.status, r.reason().as_str()), (400, "batch_not_allowed"), "{}", r.body);

    let sid = legacy_session(&url, "2025-03-26").await;
    let r = post(&url, &[("mcp-session-id", &sid)], &batch).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let answers = r.json();
    assert_eq!(answers.as_array().map(Vec::len), Some(2), "{answers}");
    assert_eq!(answers[0]["id"], 1);
}

#[tokio::test]
async fn dns_rebinding_is_refused() {
    let gw = gateway();
    let url = gw.url("/mcp");
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"0"}}});
    let r = post(&url, &[("origin", "http://evil.example")], &init).await;
    assert_eq!((r.status, r.reason().as_str()), (403, "origin_not_allowed"), "{}", r.body);
    let r = post(&url, &[("host", "evil.example")], &init).await;
    assert_eq!((r.status, r.reason().as_str()), (403, "host_not_allowed"), "{}", r.body);
    let r = post(&url, &[("origin", "http://localhost")], &init).await;
    assert_eq!(r.status, 200, "an allowed origin passes: {}", r.body);
}
