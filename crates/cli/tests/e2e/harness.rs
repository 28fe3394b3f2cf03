//! Starting the gateway and peers, and talking to them as a host would.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// The gateway binary under test.
pub fn portcullis() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portcullis"))
}

fn require(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run scripts/test (it installs the test peers into tests/peers)",
        path.display()
    );
    path
}

/// The Python interpreter with the `mcp` package.
pub fn python() -> PathBuf {
    require(workspace().join("tests/peers/.venv/bin/python"))
}

/// `@modelcontextprotocol/server-everything`.
pub fn everything() -> PathBuf {
    require(workspace().join("tests/peers/node_modules/.bin/mcp-server-everything"))
}

/// A fixture script of ours.
pub fn fixture(name: &str) -> PathBuf {
    require(workspace().join("tests/fixtures").join(name))
}

/// Tests about the protocol run without the registry and the policy (which, with no registry
/// entry to give a tool its risk tier, refuses everything); tests of those say what they want.
pub fn without_registry(config: &str) -> String {
    let mut out = config.to_owned();
    if !config.contains("[registry]") {
        out = format!("[registry]\nmode = \"off\"\n\n{out}");
    }
    if !config.contains("[policy]") {
        out = format!("[policy]\nmode = \"off\"\n\n{out}");
    }
    out
}

/// The bundled demo as a stdio upstream named `demo`.
pub const DEMO_UPSTREAM: &str = r#"
[[upstream]]
name = "demo"
transport = "stdio"
command = "$PORTCULLIS_EXE"
args = ["demo"]
"#;

/// Our hand-rolled fault fixture as a stdio upstream named `raw`, with a per-call timeout.
pub fn raw_upstream(timeout: &str) -> String {
    format!(
        "\n[[upstream]]\nname = \"raw\"\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"{}\"]\ntimeout = \"{timeout}\"\n",
        python().display(),
        fixture("raw_server.py").display()
    )
}

/// The first record `portcullis audit --store <store> search <filters> --json` finds, searched
/// again until there is one (up to 15 s): a low-tier call is answered once its record is in the
/// gateway's journal, and the store may take it a moment later.
pub fn first_audit_record(store: &str, filters: &[&str]) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let out = std::process::Command::new(portcullis())
            .args(["audit", "--store", store, "search"])
            .args(filters)
            .arg("--json")
            .current_dir(workspace())
            .output()
            .expect("audit search");
        assert!(out.status.success(), "{out:?}");
        if let Some(line) = String::from_utf8_lossy(&out.stdout).lines().next() {
            return serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        }
        assert!(start.elapsed() < Duration::from_secs(15), "no audit record matches {filters:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free loopback port (released before use; fine for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Waits until something accepts connections on a port.
pub fn wait_for_port(port: u16, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on port {port} after {limit:?}");
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// server-everything over Streamable HTTP; returns the process and its endpoint.
pub fn everything_http() -> (Proc, String) {
    let port = free_port();
    let child = Command::new(everything())
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start server-everything");
    let proc = Proc(child);
    wait_for_port(port, Duration::from_secs(20));
    (proc, format!("http://127.0.0.1:{port}/mcp"))
}

/// The Python SDK server that records every request it receives (`header_server.py`) on a free
/// port, writing to `log`; returns the process and its port.
pub fn recording_upstream(log: &Path) -> (Proc, u16) {
    let port = free_port();
    let child = Command::new(python())
        .arg(fixture("header_server.py"))
        .arg(port.to_string())
        .arg(log)
        .spawn()
        .expect("start header_server.py");
    let proc = Proc(child);
    wait_for_port(port, Duration::from_secs(20));
    (proc, port)
}

/// A running gateway.
pub struct Gateway {
    _proc: Proc,
    _dir: tempfile::TempDir,
    pub base: String,
    log: Arc<Mutex<String>>,
}

impl Gateway {
    /// Starts `portcullis serve` with this configuration (a `[listen]` on a free port is added).
    pub fn start(config: &str) -> Self {
        let config = without_registry(config);
        Self::launch(&format!(
            "[listen]\naddress = \"127.0.0.1:0\"\nallowed_origins = [\"http://localhost:*\"]\n\n{config}"
        ))
    }

    /// Starts `portcullis serve` with a complete configuration, on a free port.
    pub fn launch(full: &str) -> Self {
        Self::launch_at(full, 0)
    }

    /// Starts `portcullis serve` with a complete configuration on a given port (0: any free one).
    pub fn launch_at(full: &str, port: u16) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, full).expect("write config");
        let mut child = Command::new(portcullis())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(&path)
            .current_dir(workspace())
            .env("PORTCULLIS_LOG", "info,portcullis_transport=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start portcullis");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("portcullis listening on ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().to_owned());
                }
                let mut log = sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
        });
        let proc = Proc(child);
        let base = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(b) => b,
            Err(_) => panic!("gateway did not start:\n{}", log.lock().map(|l| l.clone()).unwrap_or_default()),
        };
        Self { _proc: proc, _dir: dir, base, log }
    }

    /// Sends SIGTERM and waits (up to 10 s) for the gateway to exit.
    pub fn terminate(&self) {
        let pid = self._proc.0.id();
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let start = Instant::now();
        while std::path::Path::new(&format!("/proc/{pid}/status")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| s.contains("State:\tZ"))
        {
            assert!(start.elapsed() < Duration::from_secs(10), "gateway did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGKILL (no chance to flush anything) and waits for the gateway to be gone.
    pub fn kill(&self) {
        let pid = self._proc.0.id();
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        let start = Instant::now();
        while std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| !s.contains("State:\tZ")) {
            assert!(start.elapsed() < Duration::from_secs(10), "gateway did not die on SIGKILL");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL of a route.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// Runs the Python `mcp` client driver (`tests/fixtures/host_client.py`) against a URL.
pub fn host(url: &str, mode: &str, steps: Value, extra: &[&str]) -> Value {
    host_with(&["--url", url], mode, steps, extra)
}

/// Runs the Python `mcp` client driver with a stdio command.
pub fn host_stdio(cmd: &[String], mode: &str, steps: Value, extra: &[&str]) -> Value {
    let cmd = serde_json::to_string(cmd).expect("json");
    host_with(&["--stdio-cmd", &cmd], mode, steps, extra)
}

fn host_with(target: &[&str], mode: &str, steps: Value, extra: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(fixture("host_client.py"))
        .args(target)
        .args(["--mode", mode, "--steps", &steps.to_string()])
        .args(extra)
        .current_dir(workspace())
        .output()
        .expect("run host_client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "host_client.py failed ({}):\nstdout: {stdout}\nstderr: {stderr}", out.status);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("host_client.py printed no JSON ({e}): {stdout}\n{stderr}"))
}

/// Names of the items a list step returned.
pub fn names(result: &Value, field: &str) -> Vec<String> {
    result[field]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The first text content of a tool or prompt result.
pub fn text(result: &Value) -> String {
    result["content"][0]["text"].as_str().unwrap_or_default().to_owned()
}

/// A raw HTTP exchange with the gateway.
pub struct Raw {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Raw {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The JSON-RPC error code.
    pub fn code(&self) -> i64 {
        self.json()["error"]["code"].as_i64().unwrap_or_else(|| panic!("no error code in {}", self.body))
    }

    /// `error.data.reason`.
    pub fn reason(&self) -> String {
        self.json()["error"]["data"]["reason"].as_str().unwrap_or_default().to_owned()
    }
}

/// Sends one raw HTTP request.
pub async fn raw(method: reqwest::Method, url: &str, headers: &[(&str, &str)], body: impl Into<reqwest::Body>) -> Raw {
    let client = reqwest::Client::new();
    let mut req = client
        .request(method, url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body(body).send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.expect("body");
    Raw { status, headers, body }
}

/// POSTs a JSON body.
pub async fn post(url: &str, headers: &[(&str, &str)], body: &Value) -> Raw {
    raw(reqwest::Method::POST, url, headers, body.to_string()).await
}

/// A modern (2026-07-28) request body with the required `_meta`.
pub fn modern(id: u64, method: &str, mut params: Value) -> Value {
    params["_meta"] = serde_json::json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "0"},
    });
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// Opens a legacy session over raw HTTP; returns its id.
pub async fn legacy_session(url: &str, version: &str) -> String {
    let init = serde_json::json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name":"e2e","version":"0"}}});
    let r = post(url, &[], &init).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sid = r.headers.get("mcp-session-id").and_then(|v| v.to_str().ok()).expect("session id").to_owned();
    let note = serde_json::json!({"jsonrpc":"2.0","method":"notifications/initialized"});
    let r = post(url, &[("mcp-session-id", &sid), ("mcp-protocol-version", version)], &note).await;
    assert_eq!(r.status, 202, "{}", r.body);
    sid
}
