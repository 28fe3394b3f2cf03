//! The Python `mcp` client as a host, in both eras, over HTTP and stdio, through
//! the gateway to the bundled demo upstream (stdio, and Streamable HTTP).

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{
    DEMO_UPSTREAM, Gateway, Proc, free_port, host, host_stdio, names, portcullis, text, wait_for_port, without_registry,
};

fn demo() -> String {
    format!("{DEMO_UPSTREAM}\n[[route]]\npath = \"/mcp\"\nupstreams = [\"demo\"]\n")
}

fn tour() -> Value {
    json!([
        {"op": "list_tools"},
        {"op": "call_tool", "name": "demo__echo", "args": {"text": "hello through the gateway"}},
        {"op": "call_tool", "name": "demo__search_tickets", "args": {"query": "saml"}},
        {"op": "list_resources"},
        {"op": "read_resource", "uri": "demo://readme"},
        {"op": "list_resource_templates"},
        {"op": "read_resource", "uri": "demo://tickets/T-1001"},
        {"op": "list_prompts"},
        {"op": "get_prompt", "name": "demo__triage_ticket", "args": {"ticket_id": "T-1001"}},
        {"op": "complete", "ref": {"type": "ref/prompt", "name": "demo__triage_ticket"}, "argument": {"name": "ticket_id", "value": "T-10"}},
        {"op": "call_tool", "name": "demo__nope", "args": {}},
    ])
}

fn assert_tour(out: &Value) {
    let r = &out["results"];
    let tools = names(&r[0], "tools");
    for expected in ["demo__echo", "demo__search_tickets", "demo__get_ticket", "demo__draft_ticket"] {
        assert!(tools.contains(&expected.to_owned()), "{expected} missing from {tools:?}");
    }
    assert_eq!(text(&r[1]), "hello through the gateway", "{}", r[1]);
    assert!(r[2]["structuredContent"]["total"].as_u64().is_some_and(|n| n >= 1), "{}", r[2]);
    assert!(r[3]["resources"].as_array().is_some_and(|a| !a.is_empty()), "{}", r[3]);
    assert!(r[4]["contents"][0]["text"].as_str().is_some_and(|t| !t.is_empty()), "{}", r[4]);
    assert!(r[5]["resourceTemplates"].as_array().is_some_and(|a| !a.is_empty()), "{}", r[5]);
    assert!(r[6]["contents"][0]["text"].as_str().is_some_and(|t| t.contains("T-1001")), "{}", r[6]);
    assert_eq!(names(&r[7], "prompts"), vec!["demo__triage_ticket".to_owned()]);
    assert!(r[8]["messages"].as_array().is_some_and(|m| !m.is_empty()), "{}", r[8]);
    assert!(r[9]["completion"]["values"].as_array().is_some_and(|v| !v.is_empty()), "{}", r[9]);
    assert_eq!(r[10]["error"]["code"], -32602, "{}", r[10]);
}

#[test]
fn legacy_host_over_http_reaches_the_demo() {
    let gw = Gateway::start(&demo());
    let out = host(&gw.url("/mcp"), "legacy", tour(), &[]);
    assert_eq!(out["protocol_version"], "2025-11-25");
    assert_eq!(out["server_info"]["name"], "portcullis");
    assert_tour(&out);
}

#[test]
fn modern_host_over_http_reaches_the_demo() {
    let gw = Gateway::start(&demo());
    let out = host(&gw.url("/mcp"), "2026-07-28", tour(), &[]);
    assert_eq!(out["protocol_version"], "2026-07-28");
    assert_tour(&out);
}

#[test]
fn auto_host_discovers_the_modern_era() {
    let gw = Gateway::start(&demo());
    let out = host(&gw.url("/mcp"), "auto", json!([{"op": "list_tools"}]), &[]);
    assert_eq!(out["protocol_version"], "2026-07-28");
    assert!(out["capabilities"]["tools"].is_object(), "{}", out["capabilities"]);
}

fn stdio_cmd(gw_config: &std::path::Path) -> Vec<String> {
    vec![portcullis().display().to_string(), "stdio".into(), "--config".into(), gw_config.display().to_string()]
}

#[test]
fn hosts_can_launch_the_gateway_over_stdio_in_both_eras() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("stdio.toml");
    std::fs::write(&config, without_registry(&demo())).expect("write config");
    for mode in ["legacy", "2026-07-28"] {
        let out = host_stdio(&stdio_cmd(&config), mode, tour(), &[]);
        assert_tour(&out);
    }
}

/// The demo over Streamable HTTP speaks 2026-07-28 and requires the `Mcp-Param-Priority`
/// header its `draft_ticket` schema declares: the gateway must send it, for hosts of
/// either era.
#[test]
fn gateway_sends_param_headers_to_modern_http_upstreams() {
    let port = free_port();
    let demo = Proc(
        Command::new(portcullis())
            .args(["demo", "--http", &format!("127.0.0.1:{port}")])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start demo"),
    );
    wait_for_port(port, Duration::from_secs(10));
    let gw = Gateway::start(&format!(
        r#"
[[upstream]]
name = "demo"
transport = "http"
url = "http://127.0.0.1:{port}/mcp"

[[route]]
path = "/mcp"
upstreams = ["demo"]
names = "passthrough"
"#
    ));
    let steps = json!([
        {"op": "list_tools"},
        {"op": "call_tool", "name": "draft_ticket", "args": {"title": "Printer on fire", "body": "Smoke.", "priority": "high"}},
    ]);
    for mode in ["legacy", "2026-07-28"] {
        let out = host(&gw.url("/mcp"), mode, steps.clone(), &[]);
        let r = &out["results"][1];
        assert_eq!(r["structuredContent"]["status"], "draft", "{mode}: {r}");
        assert_eq!(r["structuredContent"]["priority"], "high", "{mode}: {r}");
    }
    drop(demo);
}
