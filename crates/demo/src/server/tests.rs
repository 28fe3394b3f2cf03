use super::*;
use crate::jsonrpc::Message;
use crate::notifier::OUTBOX_CAPACITY;
use serde_json::{Value, json};
use tokio::sync::mpsc;

fn request(message: &Value) -> Request {
    match Message::parse(message.to_string().as_bytes()) {
        Ok(Message::Request(r)) => r,
        other => panic!("not a request: {other:?}"),
    }
}

/// A request whose params carry the modern `_meta`.
fn modern(method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": { "name": "test", "version": "1" },
    });
    json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params })
}

fn legacy(method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params })
}

async fn result(server: &Server, message: Value) -> Result<Value, RpcError> {
    let bytes = server.handle(&Session::new(), &request(&message), None, None).await?;
    let response: Value = serde_json::from_slice(&bytes).expect("response is json");
    assert_eq!(response["id"], message["id"]);
    Ok(response["result"].clone())
}

async fn error(server: &Server, message: Value) -> RpcError {
    result(server, message).await.expect_err("expected an error")
}

fn call(name: &str, arguments: Value) -> Value {
    json!({ "name": name, "arguments": arguments })
}

#[tokio::test]
async fn legacy_initialize_answers_a_known_revision_and_falls_back_to_newest_legacy() {
    let server = Server::new();
    for (asked, answered) in [
        ("2024-11-05", "2024-11-05"),
        ("2025-03-26", "2025-03-26"),
        ("2025-06-18", "2025-06-18"),
        ("2025-11-25", "2025-11-25"),
        ("2099-01-01", "2025-11-25"),
        ("2026-07-28", "2025-11-25"),
    ] {
        let r = result(&server, legacy("initialize", json!({ "protocolVersion": asked, "capabilities": {} })))
            .await
            .expect("initialize succeeds");
        assert_eq!(r["protocolVersion"], answered, "asked {asked}");
        assert_eq!(r["serverInfo"]["name"], "portcullis-demo");
        assert!(r["capabilities"]["tools"].is_object());
        assert!(r.get("resultType").is_none());
    }
}

#[tokio::test]
async fn legacy_initialize_without_version_is_invalid_params_naming_supported_versions() {
    let e = error(&Server::new(), legacy("initialize", json!({}))).await;
    assert_eq!(e.code(), -32602);
    assert_eq!(e.data.expect("data")["supported"][1], "2025-11-25");
}

#[tokio::test]
async fn ping_and_set_level_exist_only_in_the_legacy_era() {
    let server = Server::new();
    assert_eq!(result(&server, legacy("ping", json!({}))).await.expect("ping"), json!({}));
    let set = result(&server, legacy("logging/setLevel", json!({ "level": "info" }))).await;
    assert_eq!(set.expect("setLevel"), json!({}));
    for method in ["ping", "logging/setLevel", "initialize"] {
        let e = error(&server, modern(method, json!({ "level": "info" }))).await;
        assert_eq!((e.code(), e.http_status()), (-32601, 404), "{method}");
    }
}

#[tokio::test]
async fn discover_advertises_versions_capabilities_and_identity() {
    let r = result(&Server::new(), modern("server/discover", json!({}))).await.expect("discover");
    assert_eq!(r["resultType"], "complete");
    assert_eq!(r["supportedVersions"][0], "2026-07-28");
    assert!(r["supportedVersions"].as_array().expect("array").iter().any(|v| v == "2024-11-05"));
    assert_eq!(r["capabilities"]["completions"], json!({}));
    assert_eq!(r["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "portcullis-demo");
    assert_eq!(r["ttlMs"], CACHE_TTL_MS);
    assert_eq!(r["cacheScope"], "public");
}

#[tokio::test]
async fn modern_only_methods_without_meta_are_invalid_params_with_400() {
    for method in ["server/discover", "subscriptions/listen"] {
        let e = error(&Server::new(), legacy(method, json!({}))).await;
        assert_eq!((e.code(), e.http_status()), (-32602, 400), "{method}");
    }
}

#[tokio::test]
async fn unsupported_meta_version_is_rejected_with_supported_list() {
    let mut message = modern("tools/list", json!({}));
    message["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("1900-01-01");
    let e = error(&Server::new(), message).await;
    assert_eq!((e.code(), e.http_status()), (-32022, 400));
    let data = e.data.expect("data");
    assert_eq!(data["requested"], "1900-01-01");
    assert_eq!(data["supported"][0], "2026-07-28");
}

#[tokio::test]
async fn modern_request_without_client_capabilities_is_invalid_params() {
    let mut message = modern("tools/list", json!({}));
    message["params"]["_meta"].as_object_mut().expect("meta").remove("io.modelcontextprotocol/clientCapabilities");
    let e = error(&Server::new(), message).await;
    assert_eq!((e.code(), e.http_status()), (-32602, 400));
}

#[tokio::test]
async fn lists_carry_result_type_and_cache_hints_only_when_modern() {
    let server = Server::new();
    for method in ["tools/list", "resources/list", "resources/templates/list", "prompts/list"] {
        let m = result(&server, modern(method, json!({}))).await.expect("modern list");
        assert_eq!((m["resultType"].as_str(), m["cacheScope"].as_str()), (Some("complete"), Some("public")));
        let l = result(&server, legacy(method, json!({}))).await.expect("legacy list");
        assert!(l.get("resultType").is_none() && l.get("ttlMs").is_none() && l.get("_meta").is_none());
    }
}

#[tokio::test]
async fn tools_are_listed_in_a_fixed_order() {
    let r = result(&Server::new(), legacy("tools/list", json!({}))).await.expect("list");
    let names: Vec<&str> = r["tools"].as_array().expect("tools").iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["search_tickets", "get_ticket", "draft_ticket", "echo", "slow", "fail"]);
}

#[tokio::test]
async fn a_cursor_this_server_never_issued_is_invalid_params() {
    let e = error(&Server::new(), legacy("tools/list", json!({ "cursor": "abc" }))).await;
    assert_eq!(e.code(), -32602);
}

#[tokio::test]
async fn unknown_method_is_method_not_found_in_both_eras() {
    let server = Server::new();
    let e = error(&server, legacy("tools/frobnicate", json!({}))).await;
    assert_eq!((e.code(), e.http_status()), (-32601, 200));
    let e = error(&server, modern("tools/frobnicate", json!({}))).await;
    assert_eq!((e.code(), e.http_status()), (-32601, 404));
}

#[tokio::test]
async fn echo_returns_text_unchanged() {
    let server = Server::new();
    let text = "héllo \"wörld\"\n\t\u{1F600} \\ end";
    let r = result(&server, legacy("tools/call", call("echo", json!({ "text": text })))).await.expect("echo");
    assert_eq!(r, json!({ "content": [{ "type": "text", "text": text }] }));
    let r = result(&server, modern("tools/call", call("echo", json!({ "text": text })))).await.expect("echo");
    assert_eq!(r["content"][0]["text"], text);
    assert_eq!(r["resultType"], "complete");
    assert!(r.get("ttlMs").is_none(), "tool results are not cacheable");
}

#[tokio::test]
async fn unknown_tool_is_invalid_params() {
    let e = error(&Server::new(), legacy("tools/call", call("rm_rf", json!({})))).await;
    assert_eq!(e.code(), -32602);
    assert_eq!(e.data.expect("data")["name"], "rm_rf");
}

#[tokio::test]
async fn arguments_that_break_the_schema_are_invalid_params() {
    let server = Server::new();
    for (tool, args) in [
        ("echo", json!({})),
        ("echo", json!({ "text": 5 })),
        ("echo", json!({ "text": "x", "extra": true })),
        ("search_tickets", json!({ "limit": 5 })),
        ("search_tickets", json!({ "query": "x", "limit": 0 })),
        ("search_tickets", json!({ "query": "x", "limit": 51 })),
        ("search_tickets", json!({ "query": "  " })),
        ("get_ticket", json!({ "id": "1001" })),
        ("draft_ticket", json!({ "title": "t", "body": "b", "priority": "urgent" })),
        ("draft_ticket", json!({ "title": "", "body": "b", "priority": "low" })),
        ("slow", json!({ "ms": 60_001 })),
        ("slow", json!({ "ms": 10, "steps": 0 })),
        ("fail", json!({ "reason": "x" })),
    ] {
        let e = error(&server, legacy("tools/call", call(tool, args.clone()))).await;
        assert_eq!(e.code(), -32602, "{tool} {args}");
    }
}

#[tokio::test]
async fn search_returns_structured_content_and_the_same_json_as_text() {
    let args = json!({ "query": "high open", "limit": 2 });
    let r = result(&Server::new(), legacy("tools/call", call("search_tickets", args))).await.expect("search");
    let structured = &r["structuredContent"];
    assert_eq!(structured["total"], 3);
    assert_eq!(structured["tickets"].as_array().expect("tickets").len(), 2);
    assert_eq!(structured["tickets"][0]["id"], "T-1001");
    let text: Value = serde_json::from_str(r["content"][0]["text"].as_str().expect("text")).expect("json text");
    assert_eq!(&text, structured);
    assert!(r.get("isError").is_none());
}

#[tokio::test]
async fn get_ticket_returns_the_ticket_or_a_tool_error() {
    let server = Server::new();
    let r = result(&server, legacy("tools/call", call("get_ticket", json!({ "id": "T-1002" })))).await;
    assert_eq!(r.expect("ticket")["structuredContent"]["customer"], "Bergmann GmbH");
    let r = result(&server, legacy("tools/call", call("get_ticket", json!({ "id": "T-9999" })))).await;
    let r = r.expect("a tool error is a result");
    assert_eq!(r["isError"], true);
    assert_eq!(r["content"][0]["text"], "No ticket with id T-9999");
}

#[tokio::test]
async fn drafts_get_increasing_ids() {
    let server = Server::new();
    let args = json!({ "title": "Printer on fire", "body": "Again.", "priority": "high" });
    for expected in ["D-0001", "D-0002"] {
        let r = result(&server, legacy("tools/call", call("draft_ticket", args.clone()))).await.expect("draft");
        assert_eq!(r["structuredContent"]["draftId"], expected);
        assert_eq!(r["structuredContent"]["priority"], "high");
    }
}

#[tokio::test]
async fn fail_is_a_tool_execution_error() {
    let r = result(&Server::new(), legacy("tools/call", call("fail", json!({ "message": "boom" })))).await;
    let r = r.expect("a tool error is a result");
    assert_eq!(r["isError"], true);
    assert_eq!(r["content"][0]["text"], "Demo failure: boom");
}

#[tokio::test]
async fn unknown_resource_is_32002_when_legacy_and_32602_when_modern() {
    let server = Server::new();
    let params = json!({ "uri": "demo://nothing" });
    assert_eq!(error(&server, legacy("resources/read", params.clone())).await.code(), -32002);
    assert_eq!(error(&server, modern("resources/read", params)).await.code(), -32602);
}

#[tokio::test]
async fn modern_resource_read_is_cacheable() {
    let r = result(&Server::new(), modern("resources/read", json!({ "uri": "demo://tickets/T-1001" })))
        .await
        .expect("read");
    assert_eq!(r["contents"][0]["mimeType"], "application/json");
    assert_eq!(r["ttlMs"], CACHE_TTL_MS);
}

#[tokio::test]
async fn prompt_and_completion_work_in_both_eras() {
    let server = Server::new();
    let get = json!({ "name": "triage_ticket", "arguments": { "ticket_id": "T-1007" } });
    let r = result(&server, modern("prompts/get", get)).await.expect("prompt");
    assert_eq!(r["messages"][1]["content"]["resource"]["uri"], "demo://tickets/T-1007");
    let complete = json!({
        "ref": { "type": "ref/prompt", "name": "triage_ticket" },
        "argument": { "name": "ticket_id", "value": "T-100" },
    });
    let r = result(&server, legacy("completion/complete", complete)).await.expect("completion");
    assert_eq!(r["completion"]["values"][0], "T-1001");
}

#[tokio::test]
async fn legacy_log_level_lets_tool_log_messages_through() {
    let server = Server::new();
    let session = Session::new();
    let (outbox, mut sent) = mpsc::channel(OUTBOX_CAPACITY);
    let draft = legacy("tools/call", call("draft_ticket", json!({ "title": "t", "body": "b", "priority": "low" })));
    server.handle(&session, &request(&draft), Some(&outbox), None).await.expect("draft");
    assert!(sent.try_recv().is_err(), "no level set, no log message");
    server
        .handle(&session, &request(&legacy("logging/setLevel", json!({ "level": "info" }))), None, None)
        .await
        .expect("setLevel");
    server.handle(&session, &request(&draft), Some(&outbox), None).await.expect("draft");
    let log: Value = serde_json::from_slice(&sent.try_recv().expect("log message")).expect("json");
    assert_eq!(log["method"], "notifications/message");
    assert_eq!(log["params"]["data"]["draftId"], "D-0002");
}

#[tokio::test]
async fn modern_log_messages_follow_the_request_meta_only() {
    let server = Server::new();
    let session = Session::new();
    session.set_log_level(LogLevel::Debug);
    let (outbox, mut sent) = mpsc::channel(OUTBOX_CAPACITY);
    let mut fail = modern("tools/call", call("fail", json!({})));
    server.handle(&session, &request(&fail), Some(&outbox), None).await.expect("fail");
    assert!(sent.try_recv().is_err(), "a modern request without logLevel gets no log messages");
    fail["params"]["_meta"]["io.modelcontextprotocol/logLevel"] = json!("error");
    server.handle(&session, &request(&fail), Some(&outbox), None).await.expect("fail");
    let log: Value = serde_json::from_slice(&sent.try_recv().expect("log message")).expect("json");
    assert_eq!(log["params"]["level"], "error");
}

#[tokio::test]
async fn cancelled_notification_stops_a_slow_call() {
    let server = Server::new();
    let session = std::sync::Arc::new(Session::new());
    let slow = request(&legacy("tools/call", call("slow", json!({ "ms": 60_000 }))));
    let inflight = session.track(&slow.id);
    let cancel = async {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let n = Message::parse(br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#);
        let Ok(Message::Notification(n)) = n else { panic!("notification") };
        server.notify(&session, &n);
    };
    let (outcome, ()) = tokio::join!(server.handle(&session, &slow, None, Some(inflight.token())), cancel);
    assert_eq!(outcome.map(|_| ()).map_err(|e| e.kind), Err(ErrorKind::Cancelled));
}

#[tokio::test]
async fn cancellation_that_overtakes_the_call_still_lands() {
    let server = Server::new();
    let session = std::sync::Arc::new(Session::new());
    let slow = request(&legacy("tools/call", call("slow", json!({ "ms": 60_000 }))));
    let inflight = session.track(&slow.id);
    assert!(session.cancel(&slow.id));
    let outcome = server.handle(&session, &slow, None, Some(inflight.token())).await;
    assert_eq!(outcome.map(|_| ()).map_err(|e| e.kind), Err(ErrorKind::Cancelled));
}
