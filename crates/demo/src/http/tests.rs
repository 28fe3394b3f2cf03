use super::*;
use serde_json::{Value, json};

const ACCEPT_BOTH: &str = "application/json, text/event-stream";

struct Demo {
    url: String,
    client: reqwest::Client,
}

impl Demo {
    async fn start() -> Demo {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        tokio::spawn(crate::run_http(listener));
        Demo { url: format!("http://{addr}{ENDPOINT}"), client: reqwest::Client::new() }
    }

    fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .post(&self.url)
            .header("accept", ACCEPT_BOTH)
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    /// POSTs a modern request with the headers that mirror its body.
    fn post_modern(&self, method: &str, name: Option<&str>, mut params: Value) -> reqwest::RequestBuilder {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        });
        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        let request = self.post(&body).header("mcp-protocol-version", "2026-07-28").header("mcp-method", method);
        match name {
            Some(name) => request.header("mcp-name", name),
            None => request,
        }
    }

    async fn initialize(&self) -> String {
        let response = self
            .post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
                "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}))
            .send()
            .await
            .expect("initialize");
        assert_eq!(response.status(), 200);
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .expect("initialize mints a session id")
            .to_owned();
        let body: Value = serde_json::from_slice(&response.bytes().await.expect("body")).expect("json");
        assert_eq!(body["result"]["protocolVersion"], "2025-11-25");
        session
    }
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = serde_json::from_slice(&response.bytes().await.expect("body")).expect("json body");
    (status, body)
}

/// The JSON-RPC messages of an SSE body, in order.
fn sse_messages(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).expect("event data is json"))
        .collect()
}

#[tokio::test]
async fn legacy_session_lives_from_initialize_to_delete() {
    let demo = Demo::start().await;
    let session = demo.initialize().await;
    assert_eq!(session.len(), 32);

    let initialized = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
    let response = demo.post(&initialized).header("mcp-session-id", &session).send().await.expect("post");
    assert_eq!(response.status(), 202);
    assert!(response.bytes().await.expect("body").is_empty());

    let echo = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}});
    let response = demo
        .post(&echo)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .expect("post");
    assert_eq!(response.headers().get("content-type").map(|v| v.as_bytes()), Some(&b"application/json"[..]));
    let (status, body) = json_of(response).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["content"][0]["text"], "hi");

    let (status, body) = json_of(demo.post(&echo).send().await.expect("post")).await;
    assert_eq!(status, 400, "no session header");
    assert_eq!(body["id"], 2);
    let (status, _) = json_of(demo.post(&echo).header("mcp-session-id", "feed").send().await.expect("post")).await;
    assert_eq!(status, 404, "unknown session");

    let ended = demo.client.delete(&demo.url).header("mcp-session-id", &session).send().await.expect("delete");
    assert_eq!(ended.status(), 200);
    let (status, _) = json_of(demo.post(&echo).header("mcp-session-id", &session).send().await.expect("post")).await;
    assert_eq!(status, 404, "ended session");
    let again = demo.client.delete(&demo.url).header("mcp-session-id", &session).send().await.expect("delete");
    assert_eq!(again.status(), 404);
}

#[tokio::test]
async fn legacy_progress_request_is_answered_as_an_event_stream() {
    let demo = Demo::start().await;
    let session = demo.initialize().await;
    let slow = json!({"jsonrpc":"2.0","id":"s","method":"tools/call","params":{
        "_meta":{"progressToken":7},"name":"slow","arguments":{"ms":20,"steps":2}}});
    let response = demo.post(&slow).header("mcp-session-id", &session).send().await.expect("post");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers().get("content-type").map(|v| v.as_bytes()), Some(&b"text/event-stream"[..]));
    let messages = sse_messages(&response.text().await.expect("body"));
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[0]["method"], "notifications/progress");
    assert_eq!(messages[0]["params"]["progressToken"], 7);
    assert_eq!(messages[1]["params"]["progress"], 2);
    assert_eq!(messages[2]["id"], "s");
    assert_eq!(messages[2]["result"]["content"][0]["text"], "Slept 20 ms in 2 steps");
}

#[tokio::test]
async fn legacy_cancellation_answers_the_pending_post_with_request_cancelled() {
    let demo = Demo::start().await;
    let session = demo.initialize().await;
    let slow =
        json!({"jsonrpc":"2.0","id":"long","method":"tools/call","params":{"name":"slow","arguments":{"ms":60000}}});
    let pending = demo.post(&slow).header("mcp-session-id", &session).send();
    let cancel = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let cancelled = json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"long"}});
        demo.post(&cancelled).header("mcp-session-id", &session).send().await.expect("post").status()
    };
    let (response, cancel_status) = tokio::join!(pending, cancel);
    assert_eq!(cancel_status, 202);
    let (status, body) = json_of(response.expect("post")).await;
    assert_eq!(status, 200);
    assert_eq!(body["error"]["code"], -32800);
}

#[tokio::test]
async fn modern_request_is_served_without_a_session() {
    let demo = Demo::start().await;
    let response = demo
        .post_modern("tools/call", Some("echo"), json!({"name":"echo","arguments":{"text":"stateless"}}))
        .send()
        .await
        .expect("post");
    assert!(response.headers().get("mcp-session-id").is_none());
    let (status, body) = json_of(response).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["content"][0]["text"], "stateless");
    assert_eq!(body["result"]["resultType"], "complete");

    let (status, body) =
        json_of(demo.post_modern("server/discover", None, json!({})).send().await.expect("post")).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["supportedVersions"][0], "2026-07-28");
}

#[tokio::test]
async fn modern_header_that_disagrees_with_the_body_is_rejected() {
    let demo = Demo::start().await;
    let (status, body) = json_of(
        demo.post_modern("tools/call", Some("fail"), json!({"name":"echo","arguments":{"text":"x"}}))
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_i64()), (400, Some(-32020)));

    let draft = json!({"name":"draft_ticket","arguments":{"title":"t","body":"b","priority":"high"}});
    let (status, body) =
        json_of(demo.post_modern("tools/call", Some("draft_ticket"), draft.clone()).send().await.expect("post")).await;
    assert_eq!((status, body["error"]["code"].as_i64()), (400, Some(-32020)), "missing Mcp-Param-Priority");
    let response = demo
        .post_modern("tools/call", Some("draft_ticket"), draft)
        .header("mcp-param-priority", "high")
        .send()
        .await
        .expect("post");
    let (status, body) = json_of(response).await;
    assert_eq!((status, body["result"]["structuredContent"]["draftId"].as_str()), (200, Some("D-0001")));
}

#[tokio::test]
async fn modern_errors_use_the_statuses_the_spec_names() {
    let demo = Demo::start().await;
    let (status, body) =
        json_of(demo.post_modern("tools/frobnicate", None, json!({})).send().await.expect("post")).await;
    assert_eq!((status, body["error"]["code"].as_i64()), (404, Some(-32601)));

    let unsupported = demo
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
        .header("mcp-protocol-version", "2030-01-01")
        .send()
        .await
        .expect("post");
    let (status, body) = json_of(unsupported).await;
    assert_eq!((status, body["error"]["code"].as_i64()), (400, Some(-32022)));
    assert_eq!(body["error"]["data"]["requested"], "2030-01-01");
    assert_eq!(body["id"], 1, "errors carry the request's id");

    let no_meta = demo
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .send()
        .await
        .expect("post");
    let (status, body) = json_of(no_meta).await;
    assert_eq!((status, body["error"]["code"].as_i64()), (400, Some(-32602)));

    // A modern body behind a legacy (or no) version header.
    let mut modern_body = json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{
        "io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}});
    let (status, body) = json_of(demo.post(&modern_body).send().await.expect("post")).await;
    assert_eq!((status, body["error"]["code"].as_i64()), (400, Some(-32020)));
    modern_body["method"] = json!("initialize");
    let (status, _) = json_of(demo.post(&modern_body).send().await.expect("post")).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn modern_progress_request_streams_progress_before_the_result() {
    let demo = Demo::start().await;
    let mut params = json!({"name":"slow","arguments":{"ms":10,"steps":2}});
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "progressToken": "p",
    });
    let body = json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":params});
    let response = demo
        .post(&body)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "slow")
        .send()
        .await
        .expect("post");
    assert_eq!(response.headers().get("x-accel-buffering").map(|v| v.as_bytes()), Some(&b"no"[..]));
    let messages = sse_messages(&response.text().await.expect("body"));
    let methods: Vec<&str> = messages.iter().map(|m| m["method"].as_str().unwrap_or("response")).collect();
    assert_eq!(methods, ["notifications/progress", "notifications/progress", "response"]);
    assert_eq!(messages[2]["result"]["resultType"], "complete");
}

#[tokio::test]
async fn transport_level_rejections() {
    let demo = Demo::start().await;
    let (status, body) = json_of(demo.client.post(&demo.url).body("{nope").send().await.expect("post")).await;
    assert_eq!((status, body["error"]["code"].as_i64()), (400, Some(-32700)));

    let batch = json!([{"jsonrpc":"2.0","id":1,"method":"ping"}]);
    let (status, body) = json_of(demo.post(&batch).send().await.expect("post")).await;
    assert_eq!((status, body["error"]["code"].as_i64()), (400, Some(-32600)));

    let ping = json!({"jsonrpc":"2.0","id":1,"method":"ping"});
    let evil = demo.post(&ping).header("origin", "https://evil.example").send().await.expect("post");
    assert_eq!(evil.status(), 403);

    let get = demo.client.get(&demo.url).header("accept", "text/event-stream").send().await.expect("get");
    assert_eq!(get.status(), 405);
}
