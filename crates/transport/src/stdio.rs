//! A supervised stdio child process: one long-lived process per upstream,
//! shared by every host, restarted with backoff when it dies.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use portcullis_wire::envelope::{notification_bytes, request_bytes_of_text};
use portcullis_wire::{Message, RequestId};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{broadcast, mpsc};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

use crate::error::UpstreamError;
use crate::link::{CallOptions, LinkEvent, Params, ParamsFn};
use crate::pending::{Pending, Related};

/// How to launch a stdio upstream.
#[derive(Debug, Clone)]
pub struct StdioConfig {
    /// The upstream's name, for logs.
    pub name: String,
    /// The program, run directly (never through a shell).
    pub command: PathBuf,
    pub args: Vec<String>,
    /// Variables set for the child; nothing else of the gateway's environment is passed
    /// except the variables named in `inherit_env`.
    pub env: Vec<(String, String)>,
    pub inherit_env: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// The largest message accepted from the child, in bytes.
    pub max_message_bytes: usize,
    /// How long to wait after closing stdin, and again after SIGTERM, before escalating.
    pub shutdown_grace: Duration,
    /// The longest pause between restarts.
    pub max_backoff: Duration,
}

/// A running (or restarting) stdio upstream.
pub struct StdioLink {
    cfg: StdioConfig,
    pending: Arc<Pending>,
    events: broadcast::Sender<LinkEvent>,
    writer: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    stop: CancellationToken,
    stopped: tokio::sync::Notify,
    up: tokio::sync::watch::Sender<bool>,
}

impl StdioLink {
    /// Starts the process and its supervisor.
    pub fn start(cfg: StdioConfig) -> Arc<Self> {
        let (events, _) = broadcast::channel(256);
        let (up, _) = tokio::sync::watch::channel(false);
        let link = Arc::new(Self {
            cfg,
            pending: Arc::new(Pending::default()),
            events,
            writer: Mutex::new(None),
            stop: CancellationToken::new(),
            stopped: tokio::sync::Notify::new(),
            up,
        });
        tokio::spawn(Arc::clone(&link).supervise());
        link
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Unsolicited messages and restarts.
    pub fn subscribe(&self) -> broadcast::Receiver<LinkEvent> {
        self.events.subscribe()
    }

    fn writer(&self) -> Option<mpsc::Sender<Vec<u8>>> {
        self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set_writer(&self, w: Option<mpsc::Sender<Vec<u8>>>) {
        *self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = w;
    }

    /// Waits (up to `limit`) until the process is running.
    async fn wait_up(&self, limit: Duration) -> Option<mpsc::Sender<Vec<u8>>> {
        if let Some(w) = self.writer() {
            return Some(w);
        }
        let mut rx = self.up.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|up| *up)).await;
        self.writer()
    }

    /// Sends a request and waits for its response.
    pub async fn call(
        &self,
        opts: CallOptions<'_>,
        params: ParamsFn<'_>,
        related: Option<Related>,
    ) -> Result<Message, UpstreamError> {
        let started = Instant::now();
        let writer = self
            .wait_up(opts.timeout.min(Duration::from_secs(5)))
            .await
            .ok_or_else(|| UpstreamError::Unavailable(format!("{} is not running", self.cfg.name)))?;
        let ticket = self.pending.register(related);
        let mut guard = CancelOnDrop { pending: &self.pending, writer: &writer, id: ticket.id, armed: true };
        let bytes = request_bytes_of_text(
            &RequestId::number(ticket.id),
            opts.method,
            params(ticket.id).as_ref().map(Params::text),
        );
        writer.send(bytes).await.map_err(|_| UpstreamError::Unavailable(format!("{} exited", self.cfg.name)))?;
        let remaining = opts.timeout.saturating_sub(started.elapsed());
        let outcome = match tokio::time::timeout(remaining, ticket.response).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(UpstreamError::Unavailable(format!("{} exited", self.cfg.name))),
            Err(_) => return Err(UpstreamError::Timeout(opts.timeout)),
        };
        guard.armed = false;
        outcome
    }

    /// Writes a notification or response.
    pub async fn send(&self, message: Vec<u8>) -> Result<(), UpstreamError> {
        let writer =
            self.writer().ok_or_else(|| UpstreamError::Unavailable(format!("{} is not running", self.cfg.name)))?;
        writer.send(message).await.map_err(|_| UpstreamError::Unavailable(format!("{} exited", self.cfg.name)))
    }

    /// Stops the process: close stdin, wait, SIGTERM, wait, SIGKILL.
    pub async fn shutdown(&self) {
        let stopped = self.stopped.notified();
        self.stop.cancel();
        let _ = tokio::time::timeout(self.cfg.shutdown_grace * 3, stopped).await;
    }

    async fn supervise(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            match self.spawn() {
                Ok(child) => {
                    let status = self.run(child).await;
                    self.set_writer(None);
                    let _ = self.up.send(false);
                    let why = UpstreamError::Unavailable(format!("{} exited ({status})", self.cfg.name));
                    self.pending.fail_all(&why);
                    if self.stop.is_cancelled() {
                        break;
                    }
                    tracing::warn!(server = %self.cfg.name, %status, "upstream process exited; restarting");
                    let _ = self.events.send(LinkEvent::Reset);
                }
                Err(e) => {
                    tracing::error!(server = %self.cfg.name, command = %self.cfg.command.display(), error = %e, "cannot start upstream process");
                }
            }
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(100);
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.stop.cancelled() => break,
            }
            backoff = (backoff * 2).min(self.cfg.max_backoff);
        }
        self.stopped.notify_waiters();
    }

    fn spawn(&self) -> std::io::Result<Child> {
        let mut cmd = Command::new(&self.cfg.command);
        cmd.args(&self.cfg.args)
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for key in &self.cfg.inherit_env {
            if let Some(value) = std::env::var_os(key) {
                cmd.env(key, value);
            }
        }
        for (k, v) in &self.cfg.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.cfg.cwd {
            cmd.current_dir(dir);
        }
        cmd.spawn()
    }

    /// Runs one process until it exits or the link stops; returns how it ended.
    async fn run(&self, mut child: Child) -> String {
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return "no stdio pipes".to_owned();
        };
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
        self.set_writer(Some(tx));
        let _ = self.up.send(true);
        tracing::info!(server = %self.cfg.name, pid = child.id(), "upstream process started");

        let writer = tokio::spawn(async move {
            let mut stdin = stdin;
            while let Some(mut msg) = rx.recv().await {
                msg.push(b'\n');
                if stdin.write_all(&msg).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
        });
        let name = self.cfg.name.clone();
        let stderr_task = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(target: "upstream.stderr", server = %name, "{line}");
            }
        });

        let mut frames = FramedRead::new(stdout, LinesCodec::new_with_max_length(self.cfg.max_message_bytes));
        let ended = loop {
            tokio::select! {
                frame = frames.next() => match frame {
                    Some(Ok(line)) => self.dispatch(&line),
                    Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                        tracing::warn!(server = %self.cfg.name, limit = self.cfg.max_message_bytes, "upstream message too large; dropped");
                    }
                    Some(Err(LinesCodecError::Io(e))) => break format!("read error: {e}"),
                    None => break "stdout closed".to_owned(),
                },
                () = self.stop.cancelled() => break "stopped".to_owned(),
            }
        };
        self.set_writer(None);
        // Aborting the writer drops stdin, which closes it: the first step of a clean shutdown.
        writer.abort();
        let status = self.reap(&mut child).await;
        stderr_task.abort();
        format!("{ended}, {status}")
    }

    /// Ends the child: stdin is already closed by the caller dropping the writer;
    /// wait, then SIGTERM, wait, then SIGKILL.
    async fn reap(&self, child: &mut Child) -> String {
        let grace = self.cfg.shutdown_grace;
        if let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await {
            return status.to_string();
        }
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            if let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await {
                return format!("{status} after SIGTERM");
            }
        }
        let _ = child.kill().await;
        "killed".to_owned()
    }

    fn dispatch(&self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let message = match Message::parse(line.as_bytes()) {
            Ok(m) => m,
            Err(e) => {
                // A malformed response that still names one of our calls fails that call at once.
                if let Some(id) = e.id().and_then(RequestId::as_u64)
                    && self.pending.complete(id, Err(UpstreamError::Protocol(e.to_string())))
                {
                    return;
                }
                let shown: String = line.chars().take(200).collect();
                tracing::warn!(server = %self.cfg.name, error = %e, line = %shown, "upstream wrote a line that is not JSON-RPC");
                return;
            }
        };
        self.pending.deliver(message, &self.events, &self.cfg.name);
    }
}

/// Sends `notifications/cancelled` if a call is abandoned before its response.
struct CancelOnDrop<'a> {
    pending: &'a Pending,
    writer: &'a mpsc::Sender<Vec<u8>>,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pending.forget(self.id);
            let params = format!("{{\"requestId\":{},\"reason\":\"cancelled by the gateway\"}}", self.id);
            if let Ok(raw) = serde_json::value::RawValue::from_string(params) {
                let _ = self.writer.try_send(notification_bytes("notifications/cancelled", Some(&raw)));
            }
        }
    }
}
