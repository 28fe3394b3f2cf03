//! `@modelcontextprotocol/server-everything` as an upstream (stdio, Streamable HTTP,
//! and the deprecated HTTP+SSE transport), aggregated with the demo on one route.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::harness::{Gateway, Proc, everything, everything_http, free_port, host, names, text, wait_for_port};

fn aggregated() -> Gateway {
    Gateway::start(&format!(
        r#"
[[upstream]]
name = "demo"
transport = "stdio"
command = "$PORTCULLIS_EXE"
args = ["demo"]

[[upstream]]
name = "everything"
transport = "stdio"
command = "{}"
args = ["stdio"]

[[route]]
path = "/mcp"
upstreams = ["demo", "everything"]
"#,
        everything().display()
    ))
}

#[test]
fn aggregates_two_upstreams_under_prefixed_names() {
    let gw = aggregated();
    let steps = json!([
        {"op": "list_tools"},
        {"op": "call_tool", "name": "everything__echo", "args": {"message": "hi"}},
        {"op": "call_tool", "name": "demo__echo", "args": {"text": "hi"}},
        {"op": "list_prompts"},
        {"op": "read_resource", "uri": "demo://resource/static/document/architecture.md"},
        {"op": "read_resource", "uri": "demo://readme"},
        {"op": "get_prompt", "name": "everything__args-prompt", "args": {"city": "Lyon"}},
    ]);
    for mode in ["legacy", "2026-07-28"] {
        let out = host(&gw.url("/mcp"), mode, steps.clone(), &[]);
        let r = &out["results"];
        let tools = names(&r[0], "tools");
        assert!(
            tools.contains(&"everything__echo".to_owned()) && tools.contains(&"demo__echo".to_owned()),
            "{tools:?}"
        );
        assert!(tools.iter().all(|t| t.starts_with("demo__") || t.starts_with("everything__")), "{tools:?}");
        assert_eq!(text(&r[1]), "Echo: hi", "{mode}: {}", r[1]);
        assert_eq!(text(&r[2]), "hi", "{mode}: {}", r[2]);
        let prompts = names(&r[3], "prompts");
        assert!(
            prompts.contains(&"demo__triage_ticket".to_owned())
                && prompts.contains(&"everything__simple-prompt".to_owned())
        );
        assert!(
            r[4]["contents"][0]["text"].as_str().is_some_and(|t| !t.is_empty()),
            "{mode}: resource routed to everything: {}",
            r[4]
        );
        assert!(
            r[5]["contents"][0]["text"].as_str().is_some_and(|t| !t.is_empty()),
            "{mode}: resource routed to demo: {}",
            r[5]
        );
        assert!(
            r[6]["messages"][0]["content"]["text"].as_str().is_some_and(|t| t.contains("Lyon")),
            "{mode}: {}",
            r[6]
        );
    }
}

#[test]
fn progress_elicitation_and_sampling_reach_a_legacy_host() {
    let gw = aggregated();
    let steps = json!([
        {"op": "call_tool", "name": "everything__trigger-long-running-operation", "args": {"duration": 0.6, "steps": 3}, "progress": true},
        {"op": "call_tool", "name": "everything__trigger-elicitation-request", "args": {}},
        {"op": "call_tool", "name": "everything__trigger-sampling-request", "args": {"prompt": "What is MCP?"}},
    ]);
    let out = host(
        &gw.url("/mcp"),
        "legacy",
        steps,
        &["--elicit", r#"{"name":"Ada","check":true,"email":"ada@example.com"}"#, "--sample-text", "a protocol"],
    );
    let r = &out["results"];
    let progress = r[0]["progress"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(progress, 3, "one progress notification per step: {}", r[0]);
    assert!(text(&r[0]).contains("Long running operation completed"), "{}", r[0]);
    assert!(r[1].to_string().contains("Ada"), "the host's elicitation answer reached the upstream: {}", r[1]);
    assert_eq!(out["elicitations"].as_array().map(Vec::len), Some(1), "{}", out["elicitations"]);
    assert!(r[2].to_string().contains("a protocol"), "the host's sampling answer reached the upstream: {}", r[2]);
}

/// A legacy upstream asks for input mid-call; a modern host can only be asked through
/// `input_required`: the gateway parks the upstream call until the host's retry answers.
#[test]
fn elicitation_and_sampling_reach_a_modern_host_through_input_required() {
    let gw = aggregated();
    let steps = json!([
        {"op": "call_tool", "name": "everything__trigger-long-running-operation", "args": {"duration": 0.4, "steps": 2}, "progress": true},
        {"op": "call_tool", "name": "everything__trigger-elicitation-request", "args": {}},
        {"op": "call_tool", "name": "everything__trigger-sampling-request", "args": {"prompt": "What is MCP?"}},
    ]);
    let out = host(
        &gw.url("/mcp"),
        "2026-07-28",
        steps,
        &[
            "--elicit",
            r#"{"name":"Grace","check":true,"email":"grace@example.com"}"#,
            "--sample-text",
            "a wire protocol",
        ],
    );
    let r = &out["results"];
    assert_eq!(r[0]["progress"].as_array().map(Vec::len), Some(2), "{}", r[0]);
    assert!(r[1].to_string().contains("Grace"), "the modern host's answer reached the legacy upstream: {}", r[1]);
    assert_eq!(out["elicitations"].as_array().map(Vec::len), Some(1), "{}", out["elicitations"]);
    assert!(r[2].to_string().contains("a wire protocol"), "{}", r[2]);
    assert_eq!(out["samplings"].as_array().map(Vec::len), Some(1), "{}", out["samplings"]);
}

#[test]
fn everything_over_streamable_http_serves_both_eras() {
    let (_everything, url) = everything_http();
    let gw = Gateway::start(&format!(
        r#"
[[upstream]]
name = "everything"
transport = "http"
url = "{url}"

[[route]]
path = "/mcp"
upstreams = ["everything"]
names = "passthrough"
"#
    ));
    let steps = json!([
        {"op": "list_tools"},
        {"op": "call_tool", "name": "echo", "args": {"message": "over http"}},
        {"op": "call_tool", "name": "trigger-long-running-operation", "args": {"duration": 0.4, "steps": 2}, "progress": true},
    ]);
    for mode in ["legacy", "2026-07-28"] {
        let out = host(&gw.url("/mcp"), mode, steps.clone(), &[]);
        let r = &out["results"];
        assert!(names(&r[0], "tools").contains(&"echo".to_owned()), "{mode}");
        assert_eq!(text(&r[1]), "Echo: over http", "{mode}: {}", r[1]);
        assert_eq!(r[2]["progress"].as_array().map(Vec::len), Some(2), "{mode}: {}", r[2]);
    }
}

#[test]
fn everything_over_deprecated_http_sse_is_reachable() {
    let port = free_port();
    let _everything = Proc(
        Command::new(everything())
            .arg("sse")
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start server-everything sse"),
    );
    wait_for_port(port, Duration::from_secs(20));
    let gw = Gateway::start(&format!(
        r#"
[[upstream]]
name = "old"
transport = "sse"
url = "http://127.0.0.1:{port}/sse"
era = "legacy"

[[route]]
path = "/mcp"
upstreams = ["old"]
"#
    ));
    let out = host(
        &gw.url("/mcp"),
        "legacy",
        json!([{"op": "call_tool", "name": "old__echo", "args": {"message": "sse"}}]),
        &[],
    );
    assert_eq!(text(&out["results"][0]), "Echo: sse", "{}", out["results"][0]);
}
