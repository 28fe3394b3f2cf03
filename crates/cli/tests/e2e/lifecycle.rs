//! The life of calls, sessions and upstreams: resumable legacy streams, cancellation,
//! one shared stdio process, transparent upstream session recovery, list-changed
//! notifications to both eras, and a clean shutdown that ends the upstream processes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::harness::{
    DEMO_UPSTREAM, Gateway, Proc, everything, free_port, host, legacy_session, modern, post, raw_upstream, text,
    wait_for_port,
};

fn raw_and_demo() -> Gateway {
    Gateway::start(&format!(
        "{}{DEMO_UPSTREAM}\n[[route]]\npath = \"/mcp\"\nupstreams = [\"raw\", \"demo\"]\n",
        raw_upstream("5s")
    ))
}

/// Reads SSE `data:` payloads (and event ids) from a response until `stop` says so or it ends.
async fn read_events(
    resp: reqwest::Response,
    mut stop: impl FnMut(&[(Option<String>, Value)]) -> bool,
) -> Vec<(Option<String>, Value)> {
    let mut events = Vec::new();
    let mut buf = String::new();
    let mut id = None;
    let mut stream = resp.bytes_stream();
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find('\n') {
            let line: String = buf.drain(..=end).collect();
            let line = line.trim_end();
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_owned());
            } else if let Some(data) = line.strip_prefix("data: ")
                && let Ok(v) = serde_json::from_str::<Value>(data)
            {
                events.push((id.take(), v));
                if stop(&events) {
                    return events;
                }
            }
        }
    }
    events
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn sse_post(url: &str, headers: &[(&str, &str)], body: &Value) -> reqwest::RequestBuilder {
    let mut req = client()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req
}

#[tokio::test]
async fn a_legacy_stream_can_be_resumed_with_last_event_id() {
    let gw = raw_and_demo();
    let url = gw.url("/mcp");
    let sid = legacy_session(&url, "2025-11-25").await;
    let h = [("mcp-session-id", sid.as_str()), ("mcp-protocol-version", "2025-11-25")];
    let call = json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"demo__slow","arguments":{"ms":900,"steps":3},"_meta":{"progressToken":"p"}}});
    let resp = sse_post(&url, &h, &call).send().await.expect("post");
    assert_eq!(resp.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("text/event-stream"));
    // Read the first progress event, then drop the connection.
    let first = read_events(resp, |e| !e.is_empty()).await;
    let (last_id, progress) = first.last().cloned().expect("one event");
    assert_eq!(progress["method"], "notifications/progress", "{progress}");
    assert_eq!(progress["params"]["progressToken"], "p", "the host's own token comes back");
    let last_id = last_id.expect("legacy events carry ids");

    // Resume: the rest of the stream, ending with the response, nothing repeated.
    let mut get = client().get(&url).header("accept", "text/event-stream").header("last-event-id", &last_id);
    for (k, v) in h {
        get = get.header(k, v);
    }
    let resp = get.send().await.expect("resume");
    assert_eq!(resp.status(), 200);
    let rest = read_events(resp, |e| e.iter().any(|(_, v)| v.get("id") == Some(&json!(5)))).await;
    let response = rest
        .iter()
        .find(|(_, v)| v.get("id") == Some(&json!(5)))
        .map(|(_, v)| v.clone())
        .expect("response after resume");
    assert!(text(&response["result"]).contains("Slept 900 ms"), "{response}");
    let progress_after: Vec<&Value> =
        rest.iter().filter(|(_, v)| v["method"] == "notifications/progress").map(|(_, v)| v).collect();
    assert_eq!(progress_after.len() + 1, 3, "every progress event once: {rest:?}");
}

#[tokio::test]
async fn cancellation_reaches_the_upstream_in_both_eras() {
    let gw = raw_and_demo();
    let url = gw.url("/mcp");
    // Legacy: notifications/cancelled.
    let sid = legacy_session(&url, "2025-11-25").await;
    let h = [("mcp-session-id", sid.as_str()), ("mcp-protocol-version", "2025-11-25")];
    let call = json!({"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{"name":"raw__hang","arguments":{}}});
    let pending = tokio::spawn(sse_post(&url, &h, &call).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancel =
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"c1","reason":"user"}});
    assert_eq!(post(&url, &h, &cancel).await.status, 202);
    let resp = tokio::time::timeout(Duration::from_secs(3), pending)
        .await
        .expect("cancelled call returns")
        .expect("join")
        .expect("post");
    assert_eq!(resp.status(), 202, "a cancelled request gets no response");
    wait_for_log(&gw, "cancelled", 1).await;

    // Modern: closing the stream is the cancellation.
    let call = modern(2, "tools/call", json!({"name":"raw__hang","arguments":{}}));
    let mh = [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "raw__hang")];
    let r = sse_post(&url, &mh, &call).timeout(Duration::from_millis(400)).send().await;
    assert!(r.is_err(), "the client gave up");
    wait_for_log(&gw, "cancelled", 2).await;
}

async fn wait_for_log(gw: &Gateway, needle: &str, count: usize) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if gw.log().matches(needle).count() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("'{needle}' not logged {count} time(s):\n{}", gw.log());
}

#[test]
fn one_stdio_process_serves_every_host() {
    let gw = raw_and_demo();
    let steps = json!([{"op": "call_tool", "name": "raw__echo", "args": {"text": "shared"}}]);
    for mode in ["legacy", "2026-07-28", "legacy"] {
        let out = host(&gw.url("/mcp"), mode, steps.clone(), &[]);
        assert_eq!(text(&out["results"][0]), "shared");
    }
    let starts =
        gw.log().lines().filter(|l| l.contains("upstream process started") && l.contains("server=raw")).count();
    assert_eq!(starts, 1, "{}", gw.log());
}

#[test]
fn a_lost_upstream_session_is_reestablished_transparently() {
    let port = free_port();
    let start_everything = || {
        let p = Proc(
            Command::new(everything())
                .arg("streamableHttp")
                .env("PORT", port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start server-everything"),
        );
        wait_for_port(port, Duration::from_secs(20));
        p
    };
    let first = start_everything();
    let gw = Gateway::start(&format!(
        "[[upstream]]\nname = \"e\"\ntransport = \"http\"\nurl = \"http://127.0.0.1:{port}/mcp\"\n\n[[route]]\npath = \"/mcp\"\nupstreams = [\"e\"]\nnames = \"passthrough\"\n"
    ));
    let steps = json!([{"op": "call_tool", "name": "echo", "args": {"message": "one"}}]);
    assert_eq!(text(&host(&gw.url("/mcp"), "legacy", steps, &[])["results"][0]), "Echo: one");
    // The upstream restarts and forgets every session; the gateway's next call gets a 404.
    drop(first);
    let _second = start_everything();
    let steps = json!([{"op": "call_tool", "name": "echo", "args": {"message": "two"}}]);
    let out = host(&gw.url("/mcp"), "legacy", steps, &[]);
    assert_eq!(text(&out["results"][0]), "Echo: two", "{}\n{}", out, gw.log());
}

#[tokio::test]
async fn list_changes_reach_legacy_listeners_and_modern_subscribers() {
    let gw = raw_and_demo();
    let url = gw.url("/mcp");
    let sid = legacy_session(&url, "2025-11-25").await;
    let h = [("mcp-session-id", sid.as_str()), ("mcp-protocol-version", "2025-11-25")];
    let mut get = client().get(&url).header("accept", "text/event-stream");
    for (k, v) in h {
        get = get.header(k, v);
    }
    let listening = get.send().await.expect("GET stream");
    assert_eq!(listening.status(), 200);
    let listen = modern(9, "subscriptions/listen", json!({"notifications": {"toolsListChanged": true}}));
    let mh = [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "subscriptions/listen")];
    let subscribed = sse_post(&url, &mh, &listen).send().await.expect("listen");
    let legacy = tokio::spawn(read_events(listening, |e| {
        e.iter().any(|(_, v)| v["method"] == "notifications/tools/list_changed")
    }));
    let modern_events = tokio::spawn(read_events(subscribed, |e| {
        e.iter().any(|(_, v)| v["method"] == "notifications/tools/list_changed")
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let call = json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"raw__notify","arguments":{}}});
    let r = post(&url, &h, &call).await;
    assert!(r.body.contains("notified"), "{}", r.body);

    let legacy = legacy.await.expect("join");
    assert!(legacy.iter().any(|(_, v)| v["method"] == "notifications/tools/list_changed"), "{legacy:?}");
    let modern_events = modern_events.await.expect("join");
    assert_eq!(modern_events[0].1["method"], "notifications/subscriptions/acknowledged", "{modern_events:?}");
    let changed =
        modern_events.iter().find(|(_, v)| v["method"] == "notifications/tools/list_changed").expect("list changed");
    assert_eq!(changed.1["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 9, "{changed:?}");
}

#[test]
fn shutdown_ends_the_upstream_processes() {
    let gw = raw_and_demo();
    let out =
        host(&gw.url("/mcp"), "legacy", json!([{"op": "call_tool", "name": "raw__echo", "args": {"text": "x"}}]), &[]);
    assert_eq!(text(&out["results"][0]), "x");
    let pid: i32 = gw
        .log()
        .lines()
        .find_map(|l| l.split("raw_server pid=").nth(1))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no upstream pid logged:\n{}", gw.log()));
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    gw.terminate();
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}/status")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| s.contains("State:\tZ"))
    {
        assert!(start.elapsed() < Duration::from_secs(10), "upstream {pid} still running after the gateway stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
}
