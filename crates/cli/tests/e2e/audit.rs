//! The audit trail end to end: each call leaves exactly the expected record (on SQLite and
//! PostgreSQL) in the trace the host named, passed on to the upstream; `audit verify` finds
//! tampering in the gateway's own database; a gateway killed with SIGKILL under load has
//! recorded every call a host got an answer to; `audit trace` reconstructs an incident; a store
//! outage spools or refuses as configured and loses nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{
    DEMO_UPSTREAM, Gateway, free_port, legacy_session, modern, portcullis, post, python, recording_upstream, workspace,
};
use crate::registry::{Backend, TestStore};

const POLICY: &str = "@id(\"no-search\")\nforbid (principal, action == Action::\"tools/call\", resource == Tool::\"demo/search_tickets\");\n";

/// A key made by `portcullis audit keygen`, and its public half.
fn keygen(dir: &Path) -> (PathBuf, String) {
    let path = dir.join("audit.key");
    let out = Command::new(portcullis()).args(["audit", "keygen", "--out"]).arg(&path).output().expect("keygen");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (path, String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The demo behind an enforcing registry and a policy denying `search_tickets`, audited into
/// `store` with checkpoints signed by `key`.
fn config(dir: &Path, store: &str, key: &Path, audit_extra: &str, extra: &str) -> String {
    let policy = dir.join("team.cedar");
    std::fs::write(&policy, POLICY).expect("policy");
    format!(
        r#"
[registry]
mode = "enforce"
store = "{store}"
seed = ["{seed}"]

[policy]
paths = ["{policy}"]
include_default = true

[audit]
signing_key = "file:{key}"
checkpoint_interval = "100ms"
{audit_extra}

{DEMO_UPSTREAM}
{extra}
[[route]]
path = "/mcp"
upstreams = ["demo"]
"#,
        seed = workspace().join("examples/registry/demo.server.json").display(),
        policy = policy.display(),
        key = key.display(),
    )
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(portcullis()).args(args).current_dir(workspace()).output().expect("run portcullis");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Every record of a kind, oldest first, as `audit search --json` prints them.
fn records(store: &str, kind: &str) -> Vec<Value> {
    let (ok, out) = cli(&["audit", "--store", store, "search", "--kind", kind, "--limit", "100000", "--json"]);
    assert!(ok, "{out}");
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Waits until `records(kind)` has at least `n` records.
fn wait_records(store: &str, kind: &str, n: usize) -> Vec<Value> {
    wait_for(store, kind, |got| got.len() >= n)
}

/// Waits (up to 15 s) until `records(kind)` satisfies `done`; the records. A low-tier call is
/// answered once its record is in the journal, so the store may take it a moment later.
fn wait_for(store: &str, kind: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let got = records(store, kind);
        if done(&got) || start.elapsed() > Duration::from_secs(15) {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn call(url: &str, sid: &str, id: u64, name: &str, args: Value, extra: &[(&str, &str)]) -> Value {
    let mut headers = vec![("mcp-session-id", sid), ("mcp-protocol-version", "2025-11-25")];
    headers.extend_from_slice(extra);
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": args}});
    post(url, &headers, &body).await.json()
}

fn run_sql(backend: Backend, store: &str, sql: &str) {
    let out = match backend {
        Backend::Sqlite => {
            let path = store.trim_start_matches("sqlite://");
            Command::new(python())
                .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()"])
                .args([path, sql])
                .output()
        }
        Backend::Postgres => Command::new("psql").arg(store).args(["-q", "-v", "ON_ERROR_STOP=1", "-c", sql]).output(),
    }
    .expect("run sql");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn records_every_call_exactly_and_finds_tampering_on_sqlite() {
    records_every_call_exactly_and_finds_tampering(Backend::Sqlite).await;
}

#[tokio::test]
async fn records_every_call_exactly_and_finds_tampering_on_postgres() {
    records_every_call_exactly_and_finds_tampering(Backend::Postgres).await;
}

async fn records_every_call_exactly_and_finds_tampering(backend: Backend) {
    let store = TestStore::new(backend);
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, public) = keygen(dir.path());
    let export = dir.path().join("export.jsonl");
    let gateway =
        Gateway::start(&config(dir.path(), &store.url, &key, &format!("export = \"{}\"", export.display()), ""));
    let url = gateway.url("/mcp");
    let sid = legacy_session(&url, "2025-11-25").await;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let echo = call(
        &url,
        &sid,
        2,
        "demo__echo",
        json!({"text": "hi"}),
        &[("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))],
    )
    .await;
    assert_eq!(echo["result"]["content"][0]["text"], "hi", "{echo}\n{}", gateway.log());
    let search = call(&url, &sid, 3, "demo__search_tickets", json!({"query": "login"}), &[]).await;
    assert_eq!(search["error"]["code"], -31010, "{search}");
    let fail = call(&url, &sid, 4, "demo__fail", json!({}), &[]).await;
    assert_eq!(fail["result"]["isError"], true, "{fail}");
    let bad = call(&url, &sid, 5, "demo__echo", json!({"text": 5}), &[]).await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");

    // The records were durable (journaled) before the responses; the store has them a moment later.
    let calls = wait_records(&store.url, "call", 4);
    assert_eq!(calls.len(), 4, "{calls:#?}");
    let sessions = records(&store.url, "session.opened");
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    let session_trace = sessions[0]["correlation"].as_str().unwrap_or_default().to_owned();
    assert_eq!(sessions[0]["body"]["client"], json!({"name": "e2e", "version": "0"}));
    assert_eq!(sessions[0]["body"]["protocol"], "2025-11-25");

    let c = &calls[0];
    assert_eq!(
        (&c["stream"], &c["seq"], &c["kind"], &c["principal"], &c["server"], &c["item"], &c["outcome"]),
        (
            &json!("portcullis/calls"),
            &json!(1),
            &json!("call"),
            &json!("anonymous"),
            &json!("demo"),
            &json!("echo"),
            &json!("ok")
        )
    );
    assert_eq!((&c["correlation"], &c["parent"]), (&json!(trace), &json!("00f067aa0ba902b7")), "the host's trace");
    assert_eq!(c["request"].as_str().map(str::len), Some(16));
    let b = &c["body"];
    assert_eq!(b["method"], "tools/call");
    assert_eq!(b["name"], "demo__echo");
    assert_eq!(b["route"], "/mcp");
    assert_eq!(b["protocol"], "2025-11-25");
    assert_eq!(b["client"], json!({"name": "e2e", "version": "0"}));
    assert_eq!(b["principal"], json!({"kind": "anonymous", "groups": [], "tenant": null, "auth": {"method": "none"}}));
    assert_eq!(b["risk_tier"], "low");
    assert_eq!(b["server_version"], "0.1.0", "as the server reported it");
    assert_eq!(b["registry_entry"], "io.portcullis.examples/demo@0.1.0", "the approved entry");
    assert_eq!(b["annotations"], json!({"read_only": true, "destructive": false}));
    assert_eq!(b["arguments"], json!({"text": "hi"}));
    assert_eq!(b["approval"], json!({"state": "none"}));
    assert_eq!(b["decision"]["outcome"], "allow");
    assert_eq!(b["decision"]["policies"], json!(["tier-low-anyone"]));
    assert_eq!(b["refusal"], Value::Null);
    assert_eq!(b["result"]["class"], "ok");
    assert!(b["result"]["bytes"].as_u64().is_some_and(|n| n > 0), "{b}");
    assert!(b["latency_us"].as_u64().is_some(), "{b}");

    let d = &calls[1];
    assert_eq!(
        (&d["item"], &d["outcome"], &d["correlation"]),
        (&json!("search_tickets"), &json!("denied"), &json!(session_trace))
    );
    assert_eq!(d["body"]["arguments"], json!({"query": "login"}));
    assert_eq!(d["body"]["decision"]["outcome"], "deny");
    assert_eq!(d["body"]["refusal"]["stage"], "policy");
    assert_eq!(d["body"]["refusal"]["policies"], json!(["no-search"]));
    assert_eq!(d["body"]["result"]["error_code"], -31010);

    assert_eq!((&calls[2]["item"], &calls[2]["outcome"]), (&json!("fail"), &json!("tool_error")));
    assert_eq!((&calls[3]["outcome"], &calls[3]["body"]["refusal"]["stage"]), (&json!("invalid"), &json!("validate")));
    assert_eq!(calls[3]["body"]["result"]["error_code"], -32602);

    let connected = wait_records(&store.url, "upstream.connected", 1);
    assert_eq!(connected[0]["server"], "demo");
    assert_eq!(connected[0]["body"]["server_info"]["name"], "portcullis-demo");
    assert_eq!(records(&store.url, "list").len(), 0, "no list was asked for");

    // Intact, and every checkpoint signed by the configured key.
    gateway.terminate();
    let (ok, out) = cli(&["audit", "--store", &store.url, "verify", "--public-key", &public]);
    assert!(ok, "{out}");
    assert!(out.contains("portcullis/calls: intact: 4 records (1..4)"), "{out}");
    assert!(!out.contains("not checked") && !out.contains("not signed yet"), "{out}");
    // The JSON-lines export holds the same records, hash for hash.
    let exported: Vec<Value> = std::fs::read_to_string(&export)
        .expect("export file")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let exported_calls: Vec<&Value> = exported.iter().filter(|r| r["kind"] == "call").collect();
    assert_eq!(
        exported_calls.iter().map(|r| r["hash"].clone()).collect::<Vec<_>>(),
        calls.iter().map(|r| r["hash"].clone()).collect::<Vec<_>>()
    );
    assert_eq!(exported_calls[0]["body"]["arguments"], json!({"text": "hi"}));
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    let (ok, out) = cli(&["audit", "--store", &store.url, "verify", "--public-key", &keygen(&other).1]);
    assert!(!ok && out.contains("is not validly signed"), "another key signed none of them: {out}");

    // Someone with write access to the database edits one record and deletes another.
    run_sql(
        backend,
        &store.url,
        "UPDATE audit_records SET outcome = 'ok' WHERE stream = 'portcullis/calls' AND seq = 2",
    );
    let (ok, out) = cli(&["audit", "--store", &store.url, "verify", "--public-key", &public]);
    assert!(!ok, "{out}");
    assert!(out.contains("portcullis/calls: NOT INTACT") && out.contains("record 2 was modified"), "{out}");
    run_sql(backend, &store.url, "DELETE FROM audit_records WHERE stream = 'portcullis/calls' AND seq = 3");
    let (_, out) = cli(&["audit", "--store", &store.url, "verify", "--public-key", &public]);
    assert!(out.contains("record 3 was deleted"), "{out}");
    assert!(out.contains("portcullis/access: intact"), "other streams are unaffected: {out}");
}

#[tokio::test]
async fn passes_the_trace_on_to_the_upstream_naming_the_gateways_span() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("upstream.jsonl");
    let (_upstream, port) = recording_upstream(&log);
    let store = format!("sqlite://{}", dir.path().join("audit.db").display());
    let gateway = Gateway::start(&format!(
        "[audit]\nstore = \"{store}\"\n\n[[upstream]]\nname = \"rec\"\ntransport = \"http\"\nurl = \"http://127.0.0.1:{port}/mcp\"\n\n[[route]]\npath = \"/mcp\"\nupstreams = [\"rec\"]\nnames = \"passthrough\"\n"
    ));
    let url = gateway.url("/mcp");
    let mut body = modern(7, "tools/call", json!({"name": "echo", "arguments": {"text": "traced"}}));
    body["params"]["_meta"]["traceparent"] = json!("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    let r = post(
        &url,
        &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "echo")],
        &body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let calls = wait_records(&store, "call", 1);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        (&calls[0]["correlation"], &calls[0]["parent"]),
        (&json!("0af7651916cd43dd8448eb211c80319c"), &json!("b7ad6b7169203331"))
    );
    let span = calls[0]["request"].as_str().unwrap_or_default().to_owned();
    // The host learns the gateway's span for the call, to name it as the cause of its next call.
    let traceresponse = r.headers.get("traceresponse").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(traceresponse, format!("00-0af7651916cd43dd8448eb211c80319c-{span}-01"));
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    let call = seen
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|l| serde_json::from_str::<Value>(l["body"].as_str().unwrap_or_default()).ok())
        .find(|b| b["method"] == "tools/call")
        .unwrap_or_else(|| panic!("the upstream saw no call: {seen}"));
    assert_eq!(
        call["params"]["_meta"]["traceparent"],
        json!(format!("00-0af7651916cd43dd8448eb211c80319c-{span}-01")),
        "same trace, the gateway's span as parent: {call}"
    );
}

/// A modern `tools/call` in a given trace; the result's first text, if the call succeeded.
async fn modern_call(url: &str, name: &str, args: Value, traceparent: &str, headers: &[(&str, &str)]) -> Value {
    let mut body = modern(1, "tools/call", json!({"name": name, "arguments": args}));
    body["params"]["_meta"]["traceparent"] = json!(traceparent);
    let mut h = vec![("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", name)];
    h.extend_from_slice(headers);
    post(url, &h, &body).await.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_killed_under_load_has_recorded_every_call_it_answered() {
    let store = TestStore::new(Backend::Sqlite);
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, public) = keygen(dir.path());
    // The restart must find the spool and journal the killed gateway left: one path for both.
    let spool = format!("spool = \"{}\"", dir.path().join("audit.spool").display());
    let cfg = config(dir.path(), &store.url, &key, &spool, "");
    let gateway = Gateway::start(&cfg);
    let url = gateway.url("/mcp");
    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut hosts = Vec::new();
    for h in 0..8u64 {
        let (url, answered, stop) = (url.clone(), Arc::clone(&answered), Arc::clone(&stop));
        hosts.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0u64.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let trace = format!("{:08x}{:024x}", h + 1, i + 1);
                let mut body = modern(i, "tools/call", json!({"name": "demo__echo", "arguments": {"text": trace}}));
                body["params"]["_meta"]["traceparent"] = json!(format!("00-{trace}-00f067aa0ba902b7-01"));
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream")
                    .header("mcp-protocol-version", "2026-07-28")
                    .header("mcp-method", "tools/call")
                    .header("mcp-name", "demo__echo")
                    .body(body.to_string())
                    .send()
                    .await;
                let Ok(resp) = sent else { continue };
                let Ok(text) = resp.text().await else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                if v["result"]["content"][0]["text"] == json!(trace) {
                    answered.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(trace);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    gateway.kill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hosts {
        h.await.expect("host task");
    }
    let answered = answered.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    assert!(answered.len() >= 20, "too little load to prove anything: {} calls answered", answered.len());

    // Every answered call's record was committed, or is in the journal, which the restart replays
    // into the store (skipping what is there already).
    let again = Gateway::start(&cfg);
    let correlations = |records: &[Value]| -> std::collections::HashSet<String> {
        records.iter().filter_map(|r| r["correlation"].as_str().map(str::to_owned)).collect()
    };
    let recorded = correlations(&wait_for(&store.url, "call", |r| {
        let recorded = correlations(r);
        answered.iter().all(|t| recorded.contains(t))
    }));
    let lost: Vec<&String> = answered.iter().filter(|t| !recorded.contains(*t)).collect();
    assert!(lost.is_empty(), "{} of {} answered calls have no record: {lost:?}", lost.len(), answered.len());
    // The replay also holds calls whose answers never reached a host: wait until it is done.
    let start = Instant::now();
    while !std::fs::read_to_string(dir.path().join("audit.spool")).unwrap_or_default().trim().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(15), "the spool was not replayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = records(&store.url, "call");
    assert_eq!(correlations(&calls).len(), calls.len(), "no record is replayed twice");
    let (ok, out) = cli(&["audit", "--store", &store.url, "verify", "--public-key", &public]);
    assert!(ok, "the chain verifies after the crash: {out}");

    // The chain goes on from where it stopped.
    let before = calls.len();
    let r = modern_call(
        &again.url("/mcp"),
        "demo__echo",
        json!({"text": "after"}),
        "00-ffffffff000000000000000000000001-00f067aa0ba902b7-01",
        &[],
    )
    .await;
    assert_eq!(r["result"]["content"][0]["text"], "after", "{r}");
    again.terminate();
    let calls = records(&store.url, "call");
    assert_eq!(calls.len(), before + 1);
    assert_eq!(calls.last().map(|c| c["seq"].clone()), Some(json!(before + 1)));
    let (ok, out) = cli(&["audit", "--store", &store.url, "verify", "--public-key", &public]);
    assert!(ok && !out.contains("not signed yet"), "{out}");
}

#[tokio::test]
async fn audit_trace_reconstructs_a_scripted_incident() {
    let store = TestStore::new(Backend::Sqlite);
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, _) = keygen(dir.path());
    let port = free_port();
    let auth = format!(
        "[listen]\naddress = \"127.0.0.1:{port}\"\n\n[auth]\npublic_url = \"http://127.0.0.1:{port}\"\n\n[auth.api_keys]\nstore = \"{}\"\n",
        store.url
    );
    let gateway = Gateway::launch_at(&format!("{auth}{}", config(dir.path(), &store.url, &key, "", "")), port);
    let url = gateway.url("/mcp");
    let (ok, key_out) =
        cli(&["apikey", "--store", &store.url, "create", "--principal", "agent-7", "--group", "support"]);
    assert!(ok, "{key_out}");
    let api_key = key_out.lines().find(|l| l.starts_with("pcl_")).unwrap_or_default().to_owned();

    // Act 1: an agent's session (the Python SDK) looks around and acts.
    let out = crate::harness::host(
        &url,
        "legacy",
        json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "demo__echo", "args": {"text": "hello"}},
            {"op": "call_tool", "name": "demo__search_tickets", "args": {"query": "refund"}},
            {"op": "call_tool", "name": "demo__draft_ticket", "args": {"title": "Refund", "body": "Customer asked", "priority": "high"}},
        ]),
        &["--bearer", &api_key],
    );
    assert!(out["results"][3]["structuredContent"]["draftId"].is_string(), "{out}");
    let sessions = wait_for(&store.url, "session.opened", |s| s.iter().any(|s| s["principal"] == "agent-7"));
    let session = sessions.iter().find(|s| s["principal"] == "agent-7").unwrap_or_else(|| panic!("{sessions:?}"));
    // The session's three calls are in the store before the trace is read.
    let calls = wait_for(&store.url, "call", |c| c.iter().filter(|c| c["principal"] == "agent-7").count() >= 3);
    assert_eq!(calls.iter().filter(|c| c["principal"] == "agent-7").count(), 3, "{calls:#?}");
    let correlation = session["correlation"].as_str().unwrap_or_default().to_owned();

    let (ok, text) = cli(&["audit", "--store", &store.url, "trace", &correlation, "--json"]);
    assert!(ok, "{text}");
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(report["initiated_by"]["agent-7"]["kind"], "workload", "{report:#}");
    assert_eq!(report["initiated_by"]["agent-7"]["auth"]["method"], "api_key");
    assert_eq!(report["hosts"][0]["protocol"], "2025-11-25");
    assert!(report["hosts"][0]["client"]["name"].is_string(), "{report:#}");
    assert_eq!(report["servers_connected"][0]["server"], "demo");
    let visible: Vec<String> = report["tools_visible"][0]["visible"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    assert!(visible.contains(&"demo__draft_ticket".to_owned()), "{visible:?}");
    assert!(!visible.contains(&"demo__search_tickets".to_owned()), "the policy hides what it denies: {visible:?}");
    assert_eq!(
        report["summary"],
        json!({"requested": 3, "auto_approved": 2, "denied": 1, "approval_required": 0, "failed": 0}),
        "{report:#}"
    );
    let calls = report["calls"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        calls.iter().map(|c| c["item"].clone()).collect::<Vec<_>>(),
        [json!("echo"), json!("search_tickets"), json!("draft_ticket")]
    );
    assert_eq!(calls[1]["refusal"]["policies"], json!(["no-search"]));
    assert_eq!(calls[2]["arguments"], json!({"title": "Refund", "body": "Customer asked", "priority": "high"}));
    assert_eq!(calls[2]["result"]["class"], "ok");
    assert_eq!(
        report["backing_actions"],
        json!([{"n": 3, "server": "demo", "item": "draft_ticket", "outcome": "ok", "destructive": false}])
    );

    // Act 2: a follow-up agent names the trace and the call it acts on.
    let trace = "5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e";
    let auth_header = [("x-api-key", api_key.as_str())];
    let first = modern_call(
        &url,
        "demo__get_ticket",
        json!({"id": "T-1001"}),
        &format!("00-{trace}-1111111111111111-01"),
        &auth_header,
    )
    .await;
    assert!(first.get("result").is_some(), "{first}");
    let traced = wait_for(&store.url, "call", |c| c.iter().any(|c| c["correlation"] == trace));
    let span = traced
        .iter()
        .find(|c| c["correlation"] == trace)
        .and_then(|c| c["request"].as_str())
        .unwrap_or_default()
        .to_owned();
    let second = modern_call(
        &url,
        "demo__draft_ticket",
        json!({"title": "Follow-up", "body": "From T-1001", "priority": "low"}),
        &format!("00-{trace}-{span}-01"),
        &[("x-api-key", api_key.as_str()), ("mcp-param-priority", "low")],
    )
    .await;
    assert!(second["result"]["structuredContent"]["draftId"].is_string(), "{second}");
    wait_for(&store.url, "call", |c| c.iter().filter(|c| c["correlation"] == trace).count() >= 2);
    let (ok, text) = cli(&["audit", "--store", &store.url, "trace", trace]);
    assert!(ok, "{text}");
    for expected in [
        "Who initiated it\n  agent-7",
        "Which servers were connected\n  demo",
        "Calls: 2 requested, 2 auto-approved and executed, 0 denied, 0 needing approval, 0 failed",
        "demo__get_ticket -> demo/get_ticket [ok]",
        "followed from call #1",
        "Which backing-system actions were taken (executed calls not marked read-only)\n  #2 demo/draft_ticket [ok]",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let (ok, text) = cli(&["audit", "--store", &store.url, "trace", "00000000000000000000000000000001"]);
    assert!(!ok && text.contains("no records carry this correlation id"), "{text}");
}

/// Stops or restores connections to a test database (an outage of the store).
fn set_connections(store: &str, allowed: bool) {
    let (server, name) = store.rsplit_once('/').expect("database url");
    let base = std::env::var("PORTCULLIS_TEST_POSTGRES").unwrap_or_else(|_| format!("{server}/postgres"));
    let mut sql = format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {allowed}");
    if !allowed {
        sql.push_str(&format!(
            "; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ));
    }
    let out = Command::new("psql").arg(&base).args(["-q", "-v", "ON_ERROR_STOP=1", "-c", &sql]).output().expect("psql");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_store_outage_spools_or_refuses_as_configured_and_loses_nothing() {
    let store = TestStore::new(Backend::Postgres);
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, public) = keygen(dir.path());
    let spool = dir.path().join("a.spool");
    let spooling = Gateway::start(&config(
        dir.path(),
        &store.url,
        &key,
        &format!(
            "instance = \"a\"\non_store_failure = \"spool\"\nfail_closed_tiers = []\nspool = \"{}\"",
            spool.display()
        ),
        "",
    ));
    let closed = Gateway::start(&config(
        dir.path(),
        &store.url,
        &key,
        "instance = \"b\"\non_store_failure = \"fail_closed\"",
        "",
    ));
    let (a, b) = (spooling.url("/mcp"), closed.url("/mcp"));
    let tp = |n: u32| format!("00-{n:032x}-00f067aa0ba902b7-01");
    assert_eq!(
        modern_call(&a, "demo__echo", json!({"text": "1"}), &tp(1), &[]).await["result"]["content"][0]["text"],
        "1"
    );
    assert_eq!(
        modern_call(&b, "demo__echo", json!({"text": "2"}), &tp(2), &[]).await["result"]["content"][0]["text"],
        "2"
    );

    set_connections(&store.url, false);
    let spooled = modern_call(&a, "demo__echo", json!({"text": "3"}), &tp(3), &[]).await;
    assert_eq!(spooled["result"]["content"][0]["text"], "3", "a low-tier call goes on, its record spooled: {spooled}");
    // Answered once journaled; the writer, failing to commit it, moves it to the spool.
    let start = Instant::now();
    while !std::fs::read_to_string(&spool).unwrap_or_default().contains(&format!("{:032x}", 3)) {
        assert!(start.elapsed() < Duration::from_secs(15), "not spooled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in [4, 5] {
        let refused = modern_call(&b, "demo__echo", json!({"text": "x"}), &tp(n), &[]).await;
        assert_eq!(
            (&refused["error"]["code"], &refused["error"]["data"]["reason"]),
            (&json!(-31020), &json!("audit_unavailable")),
            "fail closed: {refused}"
        );
    }

    set_connections(&store.url, true);
    let start = Instant::now();
    loop {
        let recorded: Vec<Value> = records(&store.url, "call");
        let replayed = recorded.iter().any(|r| r["correlation"] == json!(format!("{:032x}", 3)));
        let emptied = std::fs::read_to_string(&spool).unwrap_or_default().trim().is_empty();
        if replayed && emptied {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the spool was not replayed and emptied: {recorded:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let start = Instant::now();
    loop {
        let r = modern_call(&b, "demo__echo", json!({"text": "6"}), &tp(6), &[]).await;
        if r["result"]["content"][0]["text"] == "6" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the fail-closed gateway never recovered: {r}\n{}",
            closed.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    spooling.terminate();
    closed.terminate();
    let calls = records(&store.url, "call");
    let ids: Vec<&str> = calls.iter().filter_map(|c| c["correlation"].as_str()).collect();
    for n in [1u32, 2, 3, 6] {
        assert!(ids.contains(&format!("{n:032x}").as_str()), "call {n} recorded: {ids:?}");
    }
    let outcome =
        |n: u32| calls.iter().find(|c| c["correlation"] == json!(format!("{n:032x}"))).map(|c| c["outcome"].clone());
    assert_eq!(outcome(4), Some(json!("withheld")), "executed while the store was down: recorded, its answer withheld");
    assert_eq!(outcome(5), Some(json!("refused")), "refused before reaching the upstream");
    let (ok, out) = cli(&["audit", "--store", &store.url, "verify", "--public-key", &public]);
    assert!(ok, "{out}");
}
