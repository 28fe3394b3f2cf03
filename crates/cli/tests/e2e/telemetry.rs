//! OpenTelemetry export: a local OTLP/HTTP collector stand-in receives, for a governed call, a
//! server span in the host's trace (the gateway's span id, the one the audit record and the
//! upstream see) with a child span per pipeline stage and for the upstream call, and the call's
//! audit record as a log record in the same trace.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::post;
use serde_json::{Value, json};

use crate::harness::{DEMO_UPSTREAM, Gateway, modern, workspace};

type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// An OTLP/HTTP (JSON) collector on a free port; returns its base URL and what it received.
async fn collector() -> (String, Received) {
    let received: Received = Arc::new(Mutex::new(Vec::new()));
    async fn accept(State(r): State<Received>, Path(signal): Path<String>, body: Bytes) -> &'static str {
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        r.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((signal, value));
        "{}"
    }
    let app = Router::new().route("/v1/{signal}", post(accept)).with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

fn spans(received: &Received) -> Vec<Value> {
    let r = received.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    r.iter()
        .filter(|(s, _)| s == "traces")
        .flat_map(|(_, v)| v["resourceSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|rs| rs["scopeSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|ss| ss["spans"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn logs(received: &Received) -> Vec<Value> {
    let r = received.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    r.iter()
        .filter(|(s, _)| s == "logs")
        .flat_map(|(_, v)| v["resourceLogs"].as_array().cloned().unwrap_or_default())
        .flat_map(|rl| rl["scopeLogs"].as_array().cloned().unwrap_or_default())
        .flat_map(|sl| sl["logRecords"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn id(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_exported_as_spans_and_audit_records_as_logs_in_the_hosts_trace() {
    let (endpoint, received) = collector().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = format!("sqlite://{}", dir.path().join("registry.db").display());
    let gateway = Gateway::start(&format!(
        "[registry]\nmode = \"enforce\"\nstore = \"{store}\"\nseed = [\"{}\"]\n\n[policy]\nmode = \"enforce\"\n\n[telemetry]\notlp_endpoint = \"{endpoint}\"\nprotocol = \"http/json\"\nservice_name = \"portcullis-e2e\"\n\n{DEMO_UPSTREAM}\n[[route]]\npath = \"/mcp\"\nupstreams = [\"demo\"]\n",
        workspace().join("examples/registry/demo.server.json").display(),
    ));
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut body = modern(1, "tools/call", json!({"name": "demo__echo", "arguments": {"text": "otel"}}));
    body["params"]["_meta"]["traceparent"] = json!(format!("00-{trace}-00f067aa0ba902b7-01"));
    let r = crate::harness::post(
        &gateway.url("/mcp"),
        &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "demo__echo")],
        &body,
    )
    .await;
    assert_eq!(r.json()["result"]["content"][0]["text"], "otel", "{}", r.body);
    let record = crate::harness::first_audit_record(&store, &["--kind", "call"]);
    let span_id = record["request"].as_str().unwrap_or_default().to_owned();
    gateway.terminate(); // flushes the exporters

    let spans = spans(&received);
    let root = spans
        .iter()
        .find(|s| id(&s["spanId"]) == span_id)
        .unwrap_or_else(|| panic!("no span {span_id} among {spans:#?}"));
    assert_eq!(id(&root["traceId"]), trace, "{root:#}");
    assert_eq!(id(&root["parentSpanId"]), "00f067aa0ba902b7", "the host's span is the parent: {root:#}");
    assert_eq!(root["name"], "tools/call demo/echo");
    assert_eq!(root["kind"], 2, "SPAN_KIND_SERVER: {root:#}");
    let attrs: Vec<(String, Value)> = root["attributes"]
        .as_array()
        .map(|a| a.iter().map(|kv| (kv["key"].as_str().unwrap_or_default().to_owned(), kv["value"].clone())).collect())
        .unwrap_or_default();
    assert!(attrs.contains(&("portcullis.outcome".to_owned(), json!({"stringValue": "ok"}))), "{attrs:?}");
    assert!(attrs.contains(&("enduser.id".to_owned(), json!({"stringValue": "anonymous"}))), "{attrs:?}");
    let children: Vec<String> = spans
        .iter()
        .filter(|s| id(&s["parentSpanId"]) == span_id && id(&s["traceId"]) == trace)
        .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    for name in ["pipeline.route", "pipeline.registry", "pipeline.validate", "pipeline.policy", "upstream demo"] {
        assert!(children.contains(&name.to_owned()), "missing child span {name}: {children:?}");
    }

    let logs = logs(&received);
    let call = logs
        .iter()
        .find(|l| id(&l["spanId"]) == span_id)
        .unwrap_or_else(|| panic!("no audit log for the call among {logs:#?}"));
    assert_eq!(id(&call["traceId"]), trace);
    let body: Value =
        serde_json::from_str(call["body"]["stringValue"].as_str().unwrap_or_default()).expect("record json");
    assert_eq!((&body["kind"], &body["item"], &body["outcome"]), (&json!("call"), &json!("echo"), &json!("ok")));
    assert_eq!(body["hash"], record["hash"], "the exported record is the stored one");
}
