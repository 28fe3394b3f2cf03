//! Upstreams that crash, hang, emit garbage or are down: the failing call gets a
//! clear error within its timeout, every other upstream keeps serving, and a
//! crashed stdio upstream is restarted. What the gateway does not inspect
//! passes through byte for byte.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{DEMO_UPSTREAM, Gateway, free_port, legacy_session, post, raw_upstream};

fn faulty() -> Gateway {
    Gateway::start(&format!(
        "{}{DEMO_UPSTREAM}\n[[route]]\npath = \"/mcp\"\nupstreams = [\"raw\", \"demo\"]\n",
        raw_upstream("2s")
    ))
}

struct Session {
    url: String,
    sid: String,
}

impl Session {
    async fn open(gw: &Gateway) -> Self {
        let url = gw.url("/mcp");
        let sid = legacy_session(&url, "2025-11-25").await;
        Self { url, sid }
    }

    async fn call(&self, id: u64, tool: &str, args: serde_json::Value) -> crate::harness::Raw {
        let body = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}});
        post(&self.url, &[("mcp-session-id", &self.sid), ("mcp-protocol-version", "2025-11-25")], &body).await
    }
}

#[tokio::test]
async fn a_crashed_stdio_upstream_fails_its_call_and_is_restarted() {
    let gw = faulty();
    let s = Session::open(&gw).await;
    let started = Instant::now();
    let r = s.call(1, "raw__crash", json!({})).await;
    assert_eq!((r.code(), r.reason().as_str()), (-31001, "upstream_unavailable"), "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(2), "a crash is reported at once, not at the timeout");
    assert_eq!(r.json()["error"]["data"]["server"], "raw");

    // The supervisor restarts it; the gateway re-initializes it transparently.
    let mut answered = None;
    for attempt in 0..40 {
        let r = s.call(10 + attempt, "raw__echo", json!({"text": "back"})).await;
        if r.json()["result"]["content"][0]["text"] == "back" {
            answered = Some(attempt);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered.is_some(), "the restarted upstream serves again\n{}", gw.log());
    assert!(gw.log().contains("restarting"), "the restart is logged");
}

#[tokio::test]
async fn a_hanging_upstream_times_out_while_others_keep_serving() {
    let gw = faulty();
    let s = Session::open(&gw).await;
    let started = Instant::now();
    let (hung, other) = tokio::join!(s.call(1, "raw__hang", json!({})), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = s.call(2, "demo__echo", json!({"text": "still here"})).await;
        (r, Instant::now())
    });
    assert_eq!((hung.code(), hung.reason().as_str()), (-31002, "upstream_timeout"), "{}", hung.body);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(5), "timed out after {waited:?}");
    assert_eq!(other.0.json()["result"]["content"][0]["text"], "still here", "{}", other.0.body);
    assert!(other.1 - started < Duration::from_secs(2), "the other upstream answered before the timeout");
}

#[tokio::test]
async fn garbage_from_an_upstream_yields_an_error_for_that_call() {
    let gw = faulty();
    let s = Session::open(&gw).await;
    let r = s.call(1, "raw__garbage", json!({})).await;
    assert_eq!(r.json()["error"]["data"]["server"], "raw", "{}", r.body);
    assert!(r.code() == -31002 || r.code() == -31003, "{}", r.body);
    let r = s.call(2, "raw__echo", json!({"text": "fine"})).await;
    assert_eq!(r.json()["result"]["content"][0]["text"], "fine", "the upstream keeps serving: {}", r.body);
    assert!(gw.log().contains("not JSON-RPC"), "the garbage is logged");
}

#[tokio::test]
async fn unknown_fields_and_meta_arrive_byte_for_byte() {
    let gw = faulty();
    let s = Session::open(&gw).await;
    let r = s.call(7, "raw__weird", json!({})).await;
    let expected = r#"{"content":[{"type":"text","text":"ok","x-extra":true}],"structuredContent":{"n":1.50,"s":"\u00e9"},"_meta":{"com.example/trace":"t-1"},"x-unknown-field":{"a":[null,true]}}"#;
    assert_eq!(r.body, format!(r#"{{"jsonrpc":"2.0","id":7,"result":{expected}}}"#));

    let list = json!({"jsonrpc":"2.0","id":8,"method":"tools/list"});
    let r = post(&s.url, &[("mcp-session-id", &s.sid), ("mcp-protocol-version", "2025-11-25")], &list).await;
    assert!(
        r.body.contains(r#"{"name":"raw__weird","description":"Returns a result full of unknown fields.","inputSchema":{"type":"object"},"x-vendor":{"keep":[1,2.50,"é"]},"_meta":{"com.example/pin":"abc"}}"#),
        "only the name changes in a listed tool: {}",
        r.body
    );
}

#[tokio::test]
async fn a_down_upstream_fails_closed_or_is_skipped_as_configured() {
    let dead = free_port();
    let config = |policy: &str| {
        format!(
            r#"
[gateway]
probe_timeout = "500ms"

[[upstream]]
name = "dead"
transport = "http"
url = "http://127.0.0.1:{dead}/mcp"
timeout = "2s"
{DEMO_UPSTREAM}
[[route]]
path = "/mcp"
upstreams = ["dead", "demo"]
on_upstream_failure = "{policy}"
"#
        )
    };
    let closed = Gateway::start(&config("fail_closed"));
    let s = Session::open(&closed).await;
    let list = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
    let h = [("mcp-session-id", s.sid.as_str()), ("mcp-protocol-version", "2025-11-25")];
    let r = post(&s.url, &h, &list).await;
    assert_eq!((r.code(), r.reason().as_str()), (-31001, "upstream_unavailable"), "{}", r.body);
    let r = s.call(2, "dead__anything", json!({})).await;
    assert_eq!(r.code(), -31001, "{}", r.body);
    let r = s.call(3, "demo__echo", json!({"text": "ok"})).await;
    assert_eq!(r.json()["result"]["content"][0]["text"], "ok", "{}", r.body);

    let open = Gateway::start(&config("skip"));
    let s = Session::open(&open).await;
    let h = [("mcp-session-id", s.sid.as_str()), ("mcp-protocol-version", "2025-11-25")];
    let r = post(&s.url, &h, &list).await;
    let tools = r.json()["result"]["tools"].as_array().cloned().unwrap_or_default();
    assert!(
        !tools.is_empty() && tools.iter().all(|t| t["name"].as_str().is_some_and(|n| n.starts_with("demo__"))),
        "{}",
        r.body
    );
}
