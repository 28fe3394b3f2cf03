//! Authorization outside the model: Cedar policies decide every call and filter
//! every list, per principal; the bundled default set gates by the registry's
//! risk tiers; an invalid policy change never replaces the running set; shadow
//! mode records without refusing; `portcullis policy test` runs fixtures.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{DEMO_UPSTREAM, Gateway, free_port, host, names, portcullis, post, workspace};
use crate::issuer::Issuer;

const TEAM_POLICY: &str = r#"
@id("engineering-everything")
permit (principal in Group::"engineering", action, resource);

@id("support-reads-tickets")
permit (principal in Group::"support", action == Action::"tools/call", resource)
when { resource.name == "search_tickets" || resource.name == "get_ticket" };

@id("no-bulk-export")
forbid (principal, action == Action::"tools/call", resource == Tool::"demo/search_tickets")
when { context.arguments has limit && context.arguments.limit > 20 };
"#;

/// A gateway taking the issuer's tokens, with the given `[policy]` and registry sections.
fn config(issuer: &Issuer, port: u16, policy: &str, registry: &str) -> String {
    format!(
        r#"
[listen]
address = "127.0.0.1:{port}"

{registry}

{policy}

[auth]
public_url = "http://127.0.0.1:{port}"

[auth.oauth]
issuer = "{}"

{DEMO_UPSTREAM}
[[route]]
path = "/mcp"
upstreams = ["demo"]
"#,
        issuer.issuer()
    )
}

fn call(name: &str, args: Value) -> Value {
    json!({"op": "call_tool", "name": name, "args": args})
}

#[test]
fn users_in_different_groups_see_different_tools_and_get_different_decisions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy_file = dir.path().join("team.cedar");
    std::fs::write(&policy_file, TEAM_POLICY).expect("write policy");
    let issuer = Issuer::start();
    let port = free_port();
    let policy = format!("[policy]\npaths = [\"{}\"]", policy_file.display());
    let gw = Gateway::launch_at(&config(&issuer, port, &policy, "[registry]\nmode = \"off\""), port);
    let url = gw.url("/mcp");
    let aud = format!("http://127.0.0.1:{port}/mcp");
    let steps = json!([
        {"op": "list_tools"},
        call("demo__echo", json!({"text": "hi"})),
        call("demo__search_tickets", json!({"query": "saml", "limit": 5})),
        call("demo__search_tickets", json!({"query": "saml", "limit": 50})),
    ]);
    for mode in ["legacy", "2026-07-28"] {
        let alice =
            host(&url, mode, steps.clone(), &["--bearer", &issuer.user_token("alice", &["engineering"], &aud, "")]);
        let tools = names(&alice["results"][0], "tools");
        assert_eq!(tools.len(), 6, "{mode}: engineering sees every tool: {tools:?}");
        assert!(alice["results"][1]["error"].is_null(), "{mode}: {alice}");
        assert!(alice["results"][2]["error"].is_null(), "{mode}: {alice}");
        let bulk = &alice["results"][3]["error"];
        assert_eq!(bulk["code"], -31010, "{mode}: {alice}");
        assert_eq!(bulk["data"]["reason"], "forbidden", "{mode}: {alice}");
        assert_eq!(bulk["data"]["policies"], json!(["no-bulk-export"]), "{mode}: {alice}");

        let bob = host(&url, mode, steps.clone(), &["--bearer", &issuer.user_token("bob", &["support"], &aud, "")]);
        let mut tools = names(&bob["results"][0], "tools");
        tools.sort();
        assert_eq!(tools, ["demo__get_ticket", "demo__search_tickets"], "{mode}: support sees only what it may call");
        let echo = &bob["results"][1]["error"];
        assert_eq!(echo["code"], -31010, "{mode}: {bob}");
        assert_eq!(echo["data"]["reason"], "no_permit", "{mode}: {bob}");
        assert_eq!(echo["data"]["stage"], "policy", "{mode}: {bob}");
        assert!(bob["results"][2]["error"].is_null(), "{mode}: {bob}");
        assert_eq!(bob["results"][3]["error"]["data"]["policies"], json!(["no-bulk-export"]), "{mode}: {bob}");
    }
}

/// The demo's registry document with some tools given their own tiers.
fn demo_document_with_tiers(dir: &std::path::Path, tiers: Value) -> std::path::PathBuf {
    let text = std::fs::read_to_string(workspace().join("examples/registry/demo.server.json")).expect("demo doc");
    let mut doc: Value = serde_json::from_str(&text).expect("json");
    doc["_meta"]["io.portcullis/governance"]["toolRiskTiers"] = tiers;
    let path = dir.join("demo.server.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json")).expect("write");
    path
}

#[tokio::test]
async fn the_default_policy_gates_tools_by_their_registered_risk_tier() {
    let dir = tempfile::tempdir().expect("temp dir");
    let doc = demo_document_with_tiers(
        dir.path(),
        json!({"draft_ticket": "high", "fail": "critical", "get_ticket": "medium"}),
    );
    let registry = format!(
        "[registry]\nstore = \"sqlite://{}\"\nseed = [\"{}\"]",
        dir.path().join("registry.db").display(),
        doc.display()
    );
    let issuer = Issuer::start();
    let port = free_port();
    let gw = Gateway::launch_at(&config(&issuer, port, "", &registry), port);
    let url = gw.url("/mcp");
    let aud = format!("http://127.0.0.1:{port}/mcp");
    let alice = issuer.user_token("alice", &["engineering"], &aud, "");
    let steps = json!([
        {"op": "list_tools"},
        call("demo__echo", json!({"text": "low"})),
        call("demo__get_ticket", json!({"id": "T-1001"})),
        call("demo__draft_ticket", json!({"title": "t", "body": "b", "priority": "low"})),
        call("demo__fail", json!({})),
    ]);
    let out = host(&url, "2026-07-28", steps, &["--bearer", &alice]);
    let tools = names(&out["results"][0], "tools");
    assert!(
        tools.contains(&"demo__draft_ticket".to_owned()),
        "high-tier tools are listed (approval at call time): {tools:?}"
    );
    assert!(!tools.contains(&"demo__fail".to_owned()), "critical needs critical-operators: {tools:?}");
    assert!(out["results"][1]["error"].is_null(), "low: {out}");
    assert!(out["results"][2]["error"].is_null(), "medium, authenticated: {out}");
    let draft = &out["results"][3]["error"];
    assert_eq!(draft["code"], -31012, "high needs approval: {out}");
    assert_eq!(draft["data"]["reason"], "approval_required", "{out}");
    assert_eq!(draft["data"]["policies"], json!(["tier-high-approval"]), "{out}");
    let fail = &out["results"][4]["error"];
    assert_eq!((fail["code"].clone(), fail["data"]["reason"].clone()), (json!(-31010), json!("no_permit")), "{out}");

    // A workload (client-credentials token) never reaches high tiers; medium is fine.
    let mut claims = issuer.claims("ci-bot", &[], &aud, "");
    claims["client_id"] = json!("ci-bot");
    let workload = issuer.sign(&claims);
    let list = post(
        &url,
        &[
            ("authorization", &format!("Bearer {workload}")),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ],
        &crate::harness::modern(1, "tools/list", json!({})),
    )
    .await;
    let listed: Vec<String> = list.json()["result"]["tools"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    assert!(listed.contains(&"demo__get_ticket".to_owned()), "{listed:?}");
    assert!(!listed.contains(&"demo__draft_ticket".to_owned()), "workloads do not see high-tier tools: {listed:?}");
}

#[test]
fn an_invalid_policy_change_keeps_the_running_set_and_a_valid_one_takes_effect() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy_file = dir.path().join("team.cedar");
    std::fs::write(&policy_file, TEAM_POLICY).expect("write policy");
    let issuer = Issuer::start();
    let port = free_port();
    let policy = format!("[policy]\npaths = [\"{}\"]\nreload_interval = \"200ms\"", policy_file.display());
    let gw = Gateway::launch_at(&config(&issuer, port, &policy, "[registry]\nmode = \"off\""), port);
    let url = gw.url("/mcp");
    let token = issuer.user_token("alice", &["engineering"], &format!("http://127.0.0.1:{port}/mcp"), "");
    let echo = || host(&url, "2026-07-28", json!([call("demo__echo", json!({"text": "x"}))]), &["--bearer", &token]);
    assert!(echo()["results"][0]["error"].is_null());

    // A typo'd attribute fails schema validation: the running set stays.
    std::fs::write(&policy_file, TEAM_POLICY.replace("resource.name ==", "resource.nmae ==")).expect("write");
    let start = Instant::now();
    while !gw.log().contains("does not validate") {
        assert!(start.elapsed() < Duration::from_secs(10), "the invalid change is reported:\n{}", gw.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gw.log().contains("nmae"), "the problem is named:\n{}", gw.log());
    assert!(echo()["results"][0]["error"].is_null(), "the running set still allows engineering");

    // A valid change takes effect.
    std::fs::write(
        &policy_file,
        format!("{TEAM_POLICY}\n@id(\"quiet\")\nforbid (principal, action, resource == Tool::\"demo/echo\");\n"),
    )
    .expect("write");
    let start = Instant::now();
    loop {
        let out = echo();
        if out["results"][0]["error"]["data"]["policies"] == json!(["quiet"]) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the valid change takes effect: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn shadow_mode_records_would_be_refusals_without_enforcing_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let candidate = dir.path().join("candidate.cedar");
    std::fs::write(&candidate, "@id(\"candidate-no-echo\")\nforbid (principal, action, resource == Tool::\"demo/echo\");\n@id(\"candidate-rest\")\npermit (principal, action, resource);\n").expect("write");
    let issuer = Issuer::start();
    let port = free_port();
    // The enforced set is the default (unknown tier: refused) in shadow mode; the candidate rides along.
    let policy = format!("[policy]\nmode = \"shadow\"\nshadow_paths = [\"{}\"]", candidate.display());
    let gw = Gateway::launch_at(&config(&issuer, port, &policy, "[registry]\nmode = \"off\""), port);
    let token = issuer.user_token("alice", &["engineering"], &format!("http://127.0.0.1:{port}/mcp"), "");
    let out = host(
        &gw.url("/mcp"),
        "legacy",
        json!([{"op": "list_tools"}, call("demo__echo", json!({"text": "x"}))]),
        &["--bearer", &token],
    );
    assert_eq!(names(&out["results"][0], "tools").len(), 6, "shadow mode hides nothing: {out}");
    assert!(out["results"][1]["error"].is_null(), "shadow mode refuses nothing: {out}");
    let log = gw.log();
    assert!(log.contains("policy would refuse (shadow mode: allowed)"), "{log}");
    assert!(log.contains("shadow policy would refuse") && log.contains("candidate-no-echo"), "{log}");
}

#[test]
fn policy_fixtures_and_check_review_a_policy_like_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("team.cedar"), TEAM_POLICY).expect("write policy");
    let config_path = dir.path().join("portcullis.toml");
    std::fs::write(
        &config_path,
        format!("[registry]\nmode = \"off\"\n\n[policy]\npaths = [\"team.cedar\"]\n{DEMO_UPSTREAM}\n[[route]]\npath = \"/mcp\"\nupstreams = [\"demo\"]\n"),
    )
    .expect("write config");
    let fixtures = dir.path().join("team.fixtures.toml");
    std::fs::write(
        &fixtures,
        r#"
[[case]]
name = "support may search"
expect = "allow"
principal = { kind = "user", id = "bob", groups = ["support"] }
resource = { server = "demo", name = "search_tickets" }
context = { arguments = { query = "saml", limit = 5 } }

[[case]]
name = "nobody exports in bulk"
expect = "deny"
policies = ["no-bulk-export"]
principal = { kind = "user", id = "alice", groups = ["engineering"] }
resource = { server = "demo", name = "search_tickets" }
context = { arguments = { query = "saml", limit = 50 } }
"#,
    )
    .expect("write fixtures");
    let run = |args: &[&str]| Command::new(portcullis()).args(args).output().expect("run portcullis");
    let cfg = config_path.to_str().expect("path");
    let ok = run(&["policy", "test", "--config", cfg, fixtures.to_str().expect("path")]);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{stdout}{}", String::from_utf8_lossy(&ok.stderr));
    assert!(stdout.contains("2 passed, 0 failed"), "{stdout}");

    let wrong = dir.path().join("wrong.fixtures.toml");
    std::fs::write(
        &wrong,
        r#"
[[case]]
name = "support may echo"
expect = "allow"
principal = { kind = "user", id = "bob", groups = ["support"] }
resource = { server = "demo", name = "echo" }
"#,
    )
    .expect("write");
    let failed = run(&["policy", "test", "--config", cfg, wrong.to_str().expect("path")]);
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stdout).contains("FAIL"), "{}", String::from_utf8_lossy(&failed.stdout));

    let checked = run(&["check", "--config", cfg]);
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    std::fs::write(dir.path().join("team.cedar"), TEAM_POLICY.replace("Group::\"support\"", "Team::\"support\""))
        .expect("write");
    let bad = run(&["check", "--config", cfg]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "an invalid policy fails the check");
    assert!(stderr.contains("team.cedar") && stderr.contains("Team"), "{stderr}");
}

#[test]
fn a_stdio_host_is_its_configured_identity_and_session_facts_reach_the_policy() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("team.cedar"),
        format!(
            "{TEAM_POLICY}\n@id(\"three-echoes-a-session\")\nforbid (principal, action, resource == Tool::\"demo/echo\")\nwhen {{ context.sessionCalls >= 3 }};\n"
        ),
    )
    .expect("write policy");
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[registry]\nmode = \"off\"\n\n[policy]\npaths = [\"team.cedar\"]\n\n[auth]\npublic_url = \"http://127.0.0.1:1\"\n\n[auth.stdio]\nprincipal = \"carol\"\ngroups = [\"support\"]\n{DEMO_UPSTREAM}\n[[route]]\npath = \"/mcp\"\nupstreams = [\"demo\"]\n"
        ),
    )
    .expect("write config");
    let cmd = vec![
        portcullis().display().to_string(),
        "stdio".to_owned(),
        "--config".to_owned(),
        config.display().to_string(),
    ];
    let support = crate::harness::host_stdio(
        &cmd,
        "legacy",
        json!([{"op": "list_tools"}, call("demo__echo", json!({"text": "x"}))]),
        &[],
    );
    let mut tools = names(&support["results"][0], "tools");
    tools.sort();
    assert_eq!(tools, ["demo__get_ticket", "demo__search_tickets"], "carol is in support: {support}");
    assert_eq!(support["results"][1]["error"]["data"]["reason"], "no_permit", "{support}");

    std::fs::write(&config, std::fs::read_to_string(&config).expect("read").replace("\"support\"", "\"engineering\""))
        .expect("write");
    let echo = call("demo__echo", json!({"text": "x"}));
    let out = crate::harness::host_stdio(&cmd, "legacy", json!([echo, echo, echo, echo]), &[]);
    for i in 0..3 {
        assert!(out["results"][i]["error"].is_null(), "call {i}: {out}");
    }
    assert_eq!(out["results"][3]["error"]["data"]["policies"], json!(["three-echoes-a-session"]), "{out}");
}
