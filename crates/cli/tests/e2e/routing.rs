//! Routes and aggregation: pages from several upstreams merged under one cursor,
//! routes exposing different servers, and hosts isolated from each other.

use std::time::Duration;

use serde_json::json;

use crate::harness::{DEMO_UPSTREAM, Gateway, host, legacy_session, names, post, raw_upstream};

fn config(routes: &str) -> String {
    format!("{}{DEMO_UPSTREAM}\n{routes}", raw_upstream("30s"))
}

#[test]
fn pagination_spans_every_page_of_every_upstream() {
    let gw = Gateway::start(&config("[[route]]\npath = \"/mcp\"\nupstreams = [\"raw\", \"demo\"]\n"));
    for mode in ["legacy", "2026-07-28"] {
        let out = host(&gw.url("/mcp"), mode, json!([{"op": "list_prompts"}]), &[]);
        let r = &out["results"][0];
        let mut got = names(r, "prompts");
        got.sort();
        assert_eq!(got, ["demo__triage_ticket", "raw__p1", "raw__p2", "raw__p3", "raw__p4", "raw__p5"], "{mode}: {r}");
        assert_eq!(r["pages"], 3, "{mode}: the first page merges both upstreams, then raw's remaining pages: {r}");
    }
}

#[test]
fn routes_expose_only_their_own_servers() {
    let gw = Gateway::start(&config(
        "[[route]]\npath = \"/mcp/support\"\nupstreams = [\"demo\"]\n\n[[route]]\npath = \"/mcp/devops\"\nupstreams = [\"raw\"]\nnames = \"passthrough\"\n",
    ));
    let steps = json!([{"op": "list_tools"}, {"op": "call_tool", "name": "raw__echo", "args": {"text": "x"}}]);
    let support = host(&gw.url("/mcp/support"), "legacy", steps, &[]);
    let tools = names(&support["results"][0], "tools");
    assert!(!tools.is_empty() && tools.iter().all(|t| t.starts_with("demo__")), "{tools:?}");
    assert_eq!(support["results"][1]["error"]["code"], -32602, "another route's tool is unknown here");

    let devops = host(&gw.url("/mcp/devops"), "2026-07-28", json!([{"op": "list_tools"}]), &[]);
    let tools = names(&devops["results"][0], "tools");
    assert!(tools.contains(&"echo".to_owned()) && tools.contains(&"weird".to_owned()), "passthrough names: {tools:?}");
}

/// Many hosts use the same request ids and progress tokens at once through one shared
/// upstream process: each gets its own answers and its own progress, nothing else.
#[tokio::test]
async fn hosts_sharing_an_upstream_never_see_each_others_ids_or_progress() {
    let gw = Gateway::start(&config("[[route]]\npath = \"/mcp\"\nupstreams = [\"raw\", \"demo\"]\n"));
    let url = gw.url("/mcp");
    let mut tasks = Vec::new();
    for n in 0..8 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let sid = legacy_session(&url, "2025-11-25").await;
            let h = [("mcp-session-id", sid.as_str()), ("mcp-protocol-version", "2025-11-25")];
            let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
                "name":"demo__slow","arguments":{"ms": 300 + 20 * n, "steps": 3},"_meta":{"progressToken":"same"}}});
            let r = post(&url, &h, &call).await;
            let events: Vec<serde_json::Value> = r
                .body
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str(d).ok())
                .collect();
            (n, events)
        }));
    }
    for task in tasks {
        let (n, events) = tokio::time::timeout(Duration::from_secs(20), task).await.expect("in time").expect("join");
        let progress: Vec<_> = events.iter().filter(|e| e["method"] == "notifications/progress").collect();
        assert_eq!(progress.len(), 3, "host {n} got exactly its own progress: {events:?}");
        assert!(progress.iter().all(|p| p["params"]["progressToken"] == "same"), "host {n}: {events:?}");
        let responses: Vec<_> = events.iter().filter(|e| e.get("id").is_some()).collect();
        assert_eq!(responses.len(), 1, "host {n}: {events:?}");
        assert_eq!(responses[0]["id"], 1);
        let text = responses[0]["result"]["content"][0]["text"].as_str().unwrap_or_default();
        assert!(text.contains(&format!("{} ms", 300 + 20 * n)), "host {n} got its own answer: {text}");
    }
}
