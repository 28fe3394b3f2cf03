//! Argument validation: every `tools/call` is checked against the tool's input
//! schema before anything reaches the upstream; an argument-injection corpus is
//! refused with `-32602` naming the offending path, and the upstream (a real
//! Python SDK server that records every request) never sees any of it.

use serde_json::{Value, json};

use crate::harness::{DEMO_UPSTREAM, Gateway, modern, post, recording_upstream};

async fn call(url: &str, name: &str, arguments: Value) -> crate::harness::Raw {
    let body = modern(7, "tools/call", json!({"name": name, "arguments": arguments}));
    let mut headers = vec![("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", name)];
    // draft_ticket's priority is mirrored in a header (x-mcp-header), which must agree with the body.
    let priority = arguments["priority"].as_str().unwrap_or_default().to_owned();
    if !priority.is_empty() {
        headers.push(("mcp-param-priority", priority.as_str()));
    }
    post(url, &headers, &body).await
}

/// `{"a": {"a": … 200 levels … }}`
fn depth_bomb() -> Value {
    let mut v = json!("x");
    for _ in 0..200 {
        v = json!({ "a": v });
    }
    v
}

#[tokio::test]
async fn refuses_arguments_that_fail_the_pinned_schema_naming_the_path() {
    let gw = Gateway::start(&format!("{DEMO_UPSTREAM}\n[[route]]\npath = \"/mcp\"\nupstreams = [\"demo\"]\n"));
    let url = gw.url("/mcp");
    let ok = call(&url, "demo__echo", json!({"text": "hi"})).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.json()["error"].is_null(), "{}", ok.body);

    let cases: Vec<(&str, &str, Value, &str)> = vec![
        ("wrong type", "demo__get_ticket", json!({"id": 1001}), "/id"),
        ("pattern", "demo__get_ticket", json!({"id": "../../etc/passwd"}), "/id"),
        ("missing required", "demo__echo", json!({}), ""),
        ("extra field", "demo__echo", json!({"text": "hi", "admin": true}), ""),
        ("huge value", "demo__search_tickets", json!({"query": "a".repeat(100_000)}), "/query"),
        ("out of range", "demo__search_tickets", json!({"query": "x", "limit": 1_000_000}), "/limit"),
        (
            "enum",
            "demo__draft_ticket",
            json!({"title": "t", "body": "b", "priority": "urgent; DROP TABLE"}),
            "/priority",
        ),
        ("nested object where a string goes", "demo__echo", json!({"text": {"$gt": ""}}), "/text"),
    ];
    for (what, tool, args, path) in cases {
        let r = call(&url, tool, args).await;
        let body = r.json();
        assert_eq!(body["error"]["code"], -32602, "{what}: {}", r.body);
        assert_eq!(body["error"]["data"]["reason"], "invalid_arguments", "{what}: {}", r.body);
        assert_eq!(body["error"]["data"]["stage"], "validate", "{what}: {}", r.body);
        assert_eq!(body["error"]["data"]["path"], path, "{what}: {}", r.body);
        assert!(r.body.len() < 4096, "{what}: the refusal does not echo the value");
    }
    let bomb = call(&url, "demo__echo", json!({"text": depth_bomb()})).await;
    assert_eq!(bomb.json()["error"]["code"], -32602, "{}", bomb.body);
    assert_eq!(bomb.json()["error"]["data"]["reason"], "invalid_arguments", "{}", bomb.body);
    let not_object = call(&url, "demo__echo", json!("text")).await;
    assert_eq!(not_object.json()["error"]["data"]["reason"], "invalid_arguments", "{}", not_object.body);
}

#[tokio::test]
async fn strict_mode_refuses_fields_an_open_schema_does_not_declare_and_nothing_reaches_the_upstream() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("requests.jsonl");
    let (_upstream, port) = recording_upstream(&log);
    let config = |strict: &str| {
        format!(
            "[validation]\nstrict = \"{strict}\"\n\n[[upstream]]\nname = \"py\"\ntransport = \"http\"\nurl = \"http://127.0.0.1:{port}/mcp\"\n\n[[route]]\npath = \"/mcp\"\nupstreams = [\"py\"]\n"
        )
    };
    let smuggled = json!({"text": "hi", "sudo": "rm -rf /"});
    // The SDK's schema for echo(text) leaves extra fields open: only strict mode refuses them.
    let lenient = Gateway::start(&config("never"));
    let r = call(&lenient.url("/mcp"), "py__echo", smuggled.clone()).await;
    assert!(r.json()["error"].is_null(), "lenient: {}", r.body);
    drop(lenient);
    std::fs::write(&log, "").expect("reset log");

    let strict = Gateway::start(&config("always"));
    let url = strict.url("/mcp");
    let r = call(&url, "py__echo", smuggled).await;
    assert_eq!(r.json()["error"]["code"], -32602, "{}", r.body);
    assert_eq!(r.json()["error"]["data"]["reason"], "invalid_arguments", "{}", r.body);
    for args in [json!({"text": 5}), json!({"text": depth_bomb()}), json!({})] {
        let r = call(&url, "py__echo", args.clone()).await;
        assert_eq!(r.json()["error"]["code"], -32602, "{args}: {}", r.body);
    }
    let fine = call(&url, "py__echo", json!({"text": "fine"})).await;
    assert!(fine.json()["error"].is_null(), "{}", fine.body);
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    let calls: Vec<&str> = seen.lines().filter(|l| l.contains("tools/call")).collect();
    assert_eq!(calls.len(), 1, "only the valid call reached the upstream: {calls:?}");
    assert!(calls[0].contains("fine") && !seen.contains("rm -rf"), "{seen}");
}

#[tokio::test]
async fn tool_result_refusals_let_the_model_see_what_to_correct() {
    let gw = Gateway::start(&format!(
        "[validation]\nrefusal = \"tool_result\"\n{DEMO_UPSTREAM}\n[[route]]\npath = \"/mcp\"\nupstreams = [\"demo\"]\n"
    ));
    let r = call(&gw.url("/mcp"), "demo__get_ticket", json!({"id": 1001})).await;
    let result = &r.json()["result"];
    assert_eq!(result["isError"], true, "{}", r.body);
    assert!(result["content"][0]["text"].as_str().is_some_and(|t| t.contains("arguments/id")), "{}", r.body);
    let refusal = &result["_meta"]["io.portcullis/refusal"];
    assert_eq!(
        (refusal["reason"].clone(), refusal["path"].clone()),
        (json!("invalid_arguments"), json!("/id")),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn a_result_that_breaks_the_tools_own_output_schema_never_reaches_the_host() {
    let gw = Gateway::start(&format!(
        "[validation]\noutput = true\n{}\n[[route]]\npath = \"/mcp\"\nupstreams = [\"raw\"]\n",
        crate::harness::raw_upstream("5s")
    ));
    let url = gw.url("/mcp");
    let good = call(&url, "raw__count", json!({})).await;
    assert_eq!(good.json()["result"]["structuredContent"]["count"], 3, "{}", good.body);
    let lie = call(&url, "raw__count", json!({"lie": true})).await;
    let error = &lie.json()["error"];
    assert_eq!(error["code"], -31003, "{}", lie.body);
    assert_eq!(error["data"]["reason"], "upstream_protocol_error", "{}", lie.body);
    assert!(error["message"].as_str().is_some_and(|m| m.contains("/count")), "{}", lie.body);
    assert!(!lie.body.contains("many"), "the bad result is not passed on: {}", lie.body);
}

/// The listener checks `Mcp-Name` and `Mcp-Param-*` against the body as `dispatch` reads it
/// (the last of duplicate keys): a mismatch, a missing header or a header for an absent argument
/// is refused, and a body naming two tools cannot pass one name to the check and another upstream.
#[tokio::test]
async fn headers_that_disagree_with_the_body_are_refused_and_duplicate_names_read_as_governed() {
    let gw = Gateway::start(&format!("{DEMO_UPSTREAM}\n[[route]]\npath = \"/mcp\"\nupstreams = [\"demo\"]\n"));
    let url = gw.url("/mcp");
    let draft = json!({"name": "demo__draft_ticket", "arguments": {"title": "t", "body": "b", "priority": "high"}});
    let base =
        [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "demo__draft_ticket")];
    let with = |extra: &[(&'static str, &'static str)]| base.iter().chain(extra).copied().collect::<Vec<_>>();
    let ok = post(&url, &with(&[("mcp-param-priority", "high")]), &modern(1, "tools/call", draft.clone())).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.json()["error"].is_null(), "{}", ok.body);
    let refusals = [
        ("header disagrees", with(&[("mcp-param-priority", "low")]), draft.clone()),
        ("header missing", with(&[]), draft.clone()),
        (
            "header for an absent argument",
            with(&[("mcp-param-priority", "high")]),
            json!({"name": "demo__draft_ticket", "arguments": {"title": "t", "body": "b"}}),
        ),
    ];
    for (what, headers, params) in refusals {
        let r = post(&url, &headers, &modern(2, "tools/call", params)).await;
        assert_eq!((r.status, r.code(), r.reason().as_str()), (400, -32020, "header_mismatch"), "{what}: {}", r.body);
    }
    // Two names in one body: the last is the one checked, governed and called.
    let echo = modern(3, "tools/call", json!({"name": "demo__echo", "arguments": {"text": "smuggled?"}}));
    let twice = echo.to_string().replacen(
        "\"name\":\"demo__echo\"",
        "\"name\":\"demo__get_ticket\",\"name\":\"demo__echo\"",
        1,
    );
    assert!(twice.contains("demo__get_ticket"), "{twice}");
    let as_first =
        [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "demo__get_ticket")];
    let r = crate::harness::raw(reqwest::Method::POST, &url, &as_first, twice.clone()).await;
    assert_eq!((r.status, r.reason().as_str()), (400, "header_mismatch"), "{}", r.body);
    let as_last = [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "demo__echo")];
    let r = crate::harness::raw(reqwest::Method::POST, &url, &as_last, twice).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("smuggled?"), "the echo tool answered: {}", r.body);
}
