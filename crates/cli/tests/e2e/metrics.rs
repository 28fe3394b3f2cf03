//! `/metrics`: scraped over HTTP and read by the reference OpenMetrics parser (the Prometheus
//! Python client's), with the counts a scripted session must leave and labels that stay bounded
//! whatever names hosts send.

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::harness::{DEMO_UPSTREAM, Gateway, fixture, free_port, modern, post, python, workspace};

/// The parsed samples of an exposition; the parser fails on anything malformed.
fn parse(text: &str) -> Vec<Value> {
    let mut child = Command::new(python())
        .arg(fixture("parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run parse_metrics.py");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("parse_metrics.py");
    assert!(
        out.status.success(),
        "the parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// The value of the sample with this name whose labels include all of `labels`.
fn value(samples: &[Value], name: &str, labels: Value) -> Option<f64> {
    let want = labels.as_object().cloned().unwrap_or_default();
    samples
        .iter()
        .find(|s| s["name"] == name && want.iter().all(|(k, v)| &s["labels"][k] == v))
        .and_then(|s| s["value"].as_f64())
}

async fn call(url: &str, name: &str, args: Value, traceparent: Option<&str>, extra: &[(&str, &str)]) -> Value {
    let mut body = modern(1, "tools/call", json!({"name": name, "arguments": args}));
    if let Some(tp) = traceparent {
        body["params"]["_meta"]["traceparent"] = json!(tp);
    }
    let mut headers = vec![("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", name)];
    headers.extend_from_slice(extra);
    post(url, &headers, &body).await.json()
}

#[tokio::test]
async fn metrics_parse_as_openmetrics_and_count_what_happened_with_bounded_labels() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = format!("sqlite://{}", dir.path().join("registry.db").display());
    let policy = dir.path().join("team.cedar");
    std::fs::write(
        &policy,
        "@id(\"no-search\")\nforbid (principal, action, resource == Tool::\"demo/search_tickets\");\n",
    )
    .expect("policy");
    let metrics_port = free_port();
    let gateway = Gateway::start(&format!(
        "[registry]\nmode = \"enforce\"\nstore = \"{store}\"\nseed = [\"{}\"]\n\n[policy]\npaths = [\"{}\"]\ninclude_default = true\n\n[metrics]\naddress = \"127.0.0.1:{metrics_port}\"\n\n{DEMO_UPSTREAM}\n[[route]]\npath = \"/mcp\"\nupstreams = [\"demo\"]\n",
        workspace().join("examples/registry/demo.server.json").display(),
        policy.display(),
    ));
    let url = gateway.url("/mcp");
    assert_eq!(call(&url, "demo__echo", json!({"text": "a"}), None, &[]).await["result"]["content"][0]["text"], "a");
    assert_eq!(call(&url, "demo__search_tickets", json!({"query": "x"}), None, &[]).await["error"]["code"], -31010);
    assert_eq!(call(&url, "demo__fail", json!({}), None, &[]).await["result"]["isError"], true);
    for n in 0..20 {
        let r = call(&url, &format!("demo__made_up_{n}"), json!({}), None, &[]).await;
        assert!(r["error"]["code"].is_i64(), "{r}");
    }
    // A read, then a write that the host says follows from the read's result.
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let read =
        call(&url, "demo__get_ticket", json!({"id": "T-1001"}), Some(&format!("00-{trace}-b7ad6b7169203331-01")), &[])
            .await;
    assert!(read.get("result").is_some(), "{read}");
    let record = crate::harness::first_audit_record(&store, &["--correlation", trace]);
    let span = record["request"].as_str().unwrap_or_default().to_owned();
    let write = call(
        &url,
        "demo__draft_ticket",
        json!({"title": "t", "body": "b", "priority": "low"}),
        Some(&format!("00-{trace}-{span}-01")),
        &[("mcp-param-priority", "low")],
    )
    .await;
    assert!(write["result"]["structuredContent"]["draftId"].is_string(), "{write}");

    let resp = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics")).await.expect("scrape");
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = resp.text().await.expect("body");
    let samples = parse(&text);

    let calls = "portcullis_calls_total";
    let base = json!({"method": "tools/call", "server": "demo", "principal": "anonymous"});
    let with = |extra: Value| {
        let mut l = base.clone();
        l.as_object_mut().expect("object").extend(extra.as_object().cloned().unwrap_or_default());
        l
    };
    assert_eq!(value(&samples, calls, with(json!({"tool": "echo", "outcome": "ok"}))), Some(1.0), "{text}");
    assert_eq!(value(&samples, calls, with(json!({"tool": "search_tickets", "outcome": "denied"}))), Some(1.0));
    assert_eq!(value(&samples, calls, with(json!({"tool": "fail", "outcome": "tool_error"}))), Some(1.0));
    assert_eq!(value(&samples, "portcullis_denials_total", json!({"stage": "policy"})), Some(1.0), "{text}");
    assert_eq!(value(&samples, "portcullis_write_actions_total", json!({"tool": "draft_ticket"})), Some(1.0));
    assert_eq!(value(&samples, "portcullis_write_actions_total", json!({"tool": "echo"})), None, "echo is read-only");
    assert_eq!(value(&samples, "portcullis_cross_tool_workflows_total", json!({})), Some(1.0), "{text}");
    assert_eq!(value(&samples, "portcullis_upstream_up", json!({"server": "demo"})), Some(1.0), "{text}");
    assert!(value(&samples, "portcullis_call_duration_seconds_count", json!({"tool": "echo"})).is_some(), "{text}");
    assert!(value(&samples, "portcullis_result_bytes_count", json!({"tool": "echo"})).is_some(), "{text}");
    // Twenty made-up names share one label value.
    assert!(!text.contains("made_up"), "host-chosen names never become labels: {text}");
    let other: f64 = samples
        .iter()
        .filter(|s| s["name"] == calls && s["labels"]["tool"] == "other")
        .filter_map(|s| s["value"].as_f64())
        .sum();
    assert_eq!(other, 20.0, "{text}");
}
