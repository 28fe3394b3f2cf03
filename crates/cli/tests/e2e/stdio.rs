//! Bad input on the stdio listener gets the same typed errors as over HTTP, and the
//! listener keeps serving after each one.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{DEMO_UPSTREAM, Proc, portcullis, without_registry};

#[test]
fn malformed_and_misrouted_stdio_input_gets_typed_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("stdio.toml");
    let text = format!("{DEMO_UPSTREAM}\n[[route]]\npath = \"/mcp\"\nupstreams = [\"demo\"]\n");
    std::fs::write(&config, without_registry(&text)).expect("write config");
    let mut child = Command::new(portcullis())
        .args(["stdio", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start portcullis stdio");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let _proc = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let mut ask = |line: &str| -> Value {
        writeln!(stdin, "{line}").expect("write");
        stdin.flush().expect("flush");
        rx.recv_timeout(Duration::from_secs(15)).unwrap_or_else(|_| panic!("no answer to {line}"))
    };
    let meta = |version: &str, caps: bool| {
        let mut m = json!({"io.modelcontextprotocol/protocolVersion": version});
        if caps {
            m["io.modelcontextprotocol/clientCapabilities"] = json!({});
        }
        m
    };

    let r = ask("{\"jsonrpc\":\"2.0\",");
    assert_eq!((r["error"]["code"].clone(), r["id"].clone()), (json!(-32700), Value::Null), "{r}");
    let r = ask(r#"{"jsonrpc":"1.0","id":3,"method":"tools/list"}"#);
    assert_eq!((r["error"]["code"].clone(), r["id"].clone()), (json!(-32600), json!(3)), "{r}");
    let r = ask(r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#);
    assert_eq!(r["error"]["data"]["reason"], "session_required", "a legacy request before initialize: {r}");
    let r =
        ask(&json!({"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"_meta": meta("2099-01-01", true)}})
            .to_string());
    assert_eq!(r["error"]["code"], -32022, "{r}");
    assert!(r["error"]["data"]["supported"].as_array().is_some_and(|s| s.contains(&json!("2026-07-28"))), "{r}");
    let r = ask(&json!({"jsonrpc":"2.0","id":6,"method":"tools/list","params":{"_meta": meta("2026-07-28", false)}})
        .to_string());
    assert_eq!(
        (r["error"]["code"].clone(), r["error"]["data"]["reason"].clone()),
        (json!(-32602), json!("missing_meta")),
        "{r}"
    );
    let r = ask(&json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"demo__nope","arguments":{},"_meta": meta("2026-07-28", true)}}).to_string());
    assert_eq!(r["error"]["code"], -32602, "the upstream's own unknown-tool error passes through: {r}");
    let r = ask(&json!({"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"nobody__x","arguments":{},"_meta": meta("2026-07-28", true)}}).to_string());
    assert_eq!(r["error"]["data"]["reason"], "unknown_tool", "no upstream has that prefix: {r}");
    let r = ask(r#"{"jsonrpc":"2.0","id":8,"method":"initialize","params":{}}"#);
    assert_eq!(r["error"]["data"]["reason"], "missing_protocol_version", "{r}");

    // Still serving: a proper modern request works after all of that.
    let r = ask(&json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"ok"},"_meta": meta("2026-07-28", true)}}).to_string());
    assert_eq!(r["result"]["content"][0]["text"], "ok", "{r}");
}
