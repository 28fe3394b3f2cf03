//! Gateway memory per idle legacy session: a fresh gateway, sessions opened in steps, RSS after each.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinSet;

use crate::connection::{Connection, Endpoint};
use crate::process::{self, Peer};
use crate::report::SessionMemory;
use crate::request::Era;
use crate::target;

/// Hosts opening sessions at once.
const OPENERS: usize = 16;
/// Let the allocator and the runtime settle before reading RSS.
const SETTLE: Duration = Duration::from_millis(300);

/// Opens `counts` (cumulative, ascending) idle sessions on a fresh forward-only gateway.
pub async fn idle_sessions(exe: &Path, demo: &Peer, counts: &[usize]) -> anyhow::Result<Vec<SessionMemory>> {
    let gateway = target::start_gateway(exe, &target::forward_only_config(), demo, None)?;
    let endpoint = Arc::new(Endpoint::new(gateway.addr, "/mcp")?);
    // One session first, so one-time costs (first upstream call, lazy statics) are not counted.
    Connection::open(Arc::clone(&endpoint), Era::Legacy).await.context("first session")?;
    tokio::time::sleep(SETTLE).await;
    let pid = gateway.pid();
    let before = process::rss_kib(pid).context("gateway RSS")?;
    let mut open = 0;
    let mut out = Vec::new();
    let started = Instant::now();
    for &count in counts {
        let mut set = JoinSet::new();
        let todo = count.saturating_sub(open);
        for k in 0..OPENERS {
            let share = todo / OPENERS + usize::from(k < todo % OPENERS);
            let endpoint = Arc::clone(&endpoint);
            set.spawn(async move {
                let mut c = Connection::open(endpoint, Era::Handshake).await?;
                for _ in 0..share {
                    c.open_idle_session().await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = set.join_next().await {
            r.context("opener")?.context("open session")?;
        }
        open = count.max(open);
        let open_ms = started.elapsed().as_secs_f64() * 1000.0;
        tokio::time::sleep(SETTLE).await;
        let after = process::rss_kib(pid).context("gateway RSS")?;
        out.push(SessionMemory {
            sessions: open,
            rss_before_kib: before,
            rss_after_kib: after,
            bytes_per_session: after.saturating_sub(before) as f64 * 1024.0 / open.max(1) as f64,
            open_ms,
        });
    }
    Ok(out)
}
