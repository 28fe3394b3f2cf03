//! The peers under test as child processes (the demo upstream, the reference relay and the
//! gateways), and what `/proc`
//! tells about them: resident memory and CPU time.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};

/// How long a peer may take to print its address.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A running peer, killed when dropped.
#[derive(Debug)]
pub struct Peer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Kept alive for the gateway's lifetime (its config file lives here).
    _dir: Option<tempfile::TempDir>,
    /// The bearer credential the load generator presents (an API key or a JWT), when the gateway
    /// authenticates its hosts.
    pub credential: Option<Credential>,
}

/// A bearer credential and what kind it is: never printed (`Debug` shows only the kind).
pub struct Credential {
    /// `api_key` or `jwt`, as the report states it.
    pub kind: &'static str,
    pub secret: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}, <redacted>)", self.kind)
    }
}

impl Peer {
    /// Starts `portcullis demo --http 127.0.0.1:0` (the direct baseline's upstream).
    pub fn demo_http(exe: &Path) -> anyhow::Result<Peer> {
        let mut cmd = Command::new(exe);
        cmd.args(["demo", "--http", "127.0.0.1:0"]);
        let (child, addr) = spawn(cmd, "listening on http://")?;
        Ok(Peer { child, addr, _dir: None, credential: None })
    }

    /// Starts `portcullis serve` with this configuration text (its `[listen]` is overridden to a free port).
    pub fn gateway(exe: &Path, config: &str) -> anyhow::Result<Peer> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("portcullis.toml");
        // `{{DIR}}` is a private folder for this gateway's files (e.g. its registry store),
        // `{{WORKSPACE}}` the repository (e.g. for the demo's registry document).
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let config = config.replace("{{DIR}}", &dir.path().display().to_string());
        let config = config.replace("{{WORKSPACE}}", &workspace.display().to_string());
        std::fs::write(&path, &config).with_context(|| format!("write {}", path.display()))?;
        // A gateway that authenticates with API keys gets one for the load generator's hosts,
        // made as an operator would (`portcullis apikey create`) in the store it reads keys from.
        let credential = if auth_setting(&config, "api_keys").is_some() {
            Some(Credential { kind: "api_key", secret: create_api_key(exe, &path)? })
        } else {
            None
        };
        let mut cmd = Command::new(exe);
        cmd.arg("serve").arg("--config").arg(&path).args(["--listen", "127.0.0.1:0"]);
        let (child, addr) = spawn(cmd, "portcullis listening on http://")?;
        Ok(Peer { child, addr, _dir: Some(dir), credential })
    }

    /// Starts the reference relay (this binary, `--relay-to`) in front of `upstream`.
    pub fn relay(upstream: SocketAddr) -> anyhow::Result<Peer> {
        let mut cmd = Command::new(std::env::current_exe().context("locate portcullis-bench")?);
        cmd.arg("--relay-to").arg(upstream.to_string());
        let (child, addr) = spawn(cmd, "relay listening on http://")?;
        Ok(Peer { child, addr, _dir: None, credential: None })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a workload API key in the key store of the configuration at `config`; the key as printed once.
fn create_api_key(exe: &Path, config: &Path) -> anyhow::Result<String> {
    let out = Command::new(exe)
        .arg("apikey")
        .arg("--config")
        .arg(config)
        .args(["create", "--principal", "bench-host", "--name", "portcullis-bench"])
        .env("PORTCULLIS_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {} apikey create", exe.display()))?;
    if !out.status.success() {
        bail!("apikey create failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let key = String::from_utf8(out.stdout).context("apikey create printed no text")?.trim().to_owned();
    if !key.starts_with("pcl_") {
        // Whatever it printed may be a key after all: not repeated here.
        bail!("apikey create printed no key (expected pcl_…, got {} bytes)", key.len());
    }
    Ok(key)
}

/// `[auth] <key>` of a gateway configuration's text, if it parses and has it.
pub fn auth_setting(config: &str, key: &str) -> Option<toml::Value> {
    let parsed: toml::Table = config.parse().ok()?;
    parsed.get("auth")?.get(key).cloned()
}

/// Spawns a peer with logs quiet and waits for the line announcing its address.
fn spawn(mut cmd: Command, prefix: &'static str) -> anyhow::Result<(Child, SocketAddr)> {
    // Per-request logging would be measured as gateway cost; keep only warnings.
    cmd.env("PORTCULLIS_LOG", "warn").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("start {cmd:?}"))?;
    let Some(stderr) = child.stderr.take() else { bail!("no stderr pipe for {cmd:?}") };
    let (tx, rx) = mpsc::channel();
    // The reader keeps draining stderr after the address so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        let mut seen = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(sender) = tx.as_ref() {
                if let Some(rest) = line.find(prefix).map(|i| &line[i + prefix.len()..]) {
                    let addr = rest.trim().trim_end_matches("/mcp").to_owned();
                    let _ = sender.send(Ok(addr));
                    tx = None;
                } else {
                    seen.push_str(&line);
                    seen.push('\n');
                }
            } else if line.contains("ERROR") {
                eprintln!("peer: {line}");
            }
        }
        if let Some(tx) = tx {
            let _ = tx.send(Err(seen));
        }
    });
    match rx.recv_timeout(START_LIMIT) {
        Ok(Ok(addr)) => {
            let addr = addr.parse().with_context(|| format!("peer printed a bad address: {addr}"))?;
            Ok((child, addr))
        }
        Ok(Err(log)) => {
            let _ = child.kill();
            bail!("{cmd:?} exited before listening:\n{log}")
        }
        Err(_) => {
            let _ = child.kill();
            bail!("{cmd:?} did not print its address within {START_LIMIT:?}")
        }
    }
}

/// The `portcullis` binary: `--portcullis`, else `PORTCULLIS_BIN`, else beside this executable.
pub fn locate_portcullis(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match explicit.or_else(|| std::env::var_os("PORTCULLIS_BIN").map(PathBuf::from)) {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("portcullis"),
    };
    if !path.is_file() {
        bail!("{} not found: build it with `cargo build --release -p portcullis` or pass --portcullis", path.display());
    }
    Ok(path)
}

/// Resident memory now (`VmRSS`), KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// Peak resident memory (`VmHWM`), KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmHWM:")
}

fn status_field(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// CPU time used so far (user + system, all threads, reaped children excluded), in microseconds.
pub fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 1_000_000 / clock_ticks())
}

/// Kernel clock ticks per second (`USER_HZ`); 100 on every Linux we run on.
fn clock_ticks() -> u64 {
    100
}

/// Processes whose parent is `pid` (a gateway's stdio upstreams).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).ok().is_some_and(|stat| {
                let rest = stat.rfind(')').map(|i| &stat[i + 2..]).unwrap_or_default();
                rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid)
            })
        })
        .collect()
}
