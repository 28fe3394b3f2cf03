//! The plan (how long, how many hosts, how many rounds), the scenarios, and running one scenario
//! against its targets A/B interleaved: every round runs each target for one slice, and the order
//! flips between rounds, so drift (the colleague's compiler, thermal state) hits both sides alike.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use http::StatusCode;
use serde_json::json;

use crate::connection::Connection;
use crate::load::{self, Sample, Window};
use crate::report::{Comparison, Measured, Run};
use crate::request::{Era, Template, text_of};
use crate::target::{DIRECT, GATEWAY, GATEWAY_STDIO, RELAY, Target};

/// How much to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `quick` or `full`.
    pub mode: &'static str,
    /// Measured time per target per round.
    pub slice: Duration,
    /// Unrecorded time before each slice.
    pub warmup: Duration,
    /// Rounds per scenario (targets alternate order).
    pub rounds: usize,
    /// Concurrency levels for the `tools/call` sweep.
    pub sweep: Vec<usize>,
    /// Concurrency levels for the other scenarios (latency at 1, throughput at the last).
    pub levels: Vec<usize>,
    /// Idle legacy session counts for the memory measurement (cumulative).
    pub sessions: Vec<usize>,
    /// Upstream counts for the aggregation curve.
    pub upstream_counts: Vec<usize>,
    /// Connections the fixed-rate generator may use.
    pub rate_connections: usize,
    /// The large argument's size.
    pub large_bytes: usize,
}

impl Plan {
    /// `--quick`: under a minute on two cores, for everyday use and CI's smoke check.
    pub fn quick() -> Plan {
        Plan {
            mode: "quick",
            slice: Duration::from_millis(250),
            warmup: Duration::from_millis(50),
            rounds: 2,
            sweep: vec![1, 8, 32],
            levels: vec![1, 32],
            sessions: vec![1000],
            upstream_counts: vec![1, 5],
            rate_connections: 32,
            large_bytes: 64 * 1024,
        }
    }

    /// The release run.
    pub fn full() -> Plan {
        Plan {
            mode: "full",
            slice: Duration::from_millis(1000),
            warmup: Duration::from_millis(200),
            rounds: 3,
            sweep: vec![1, 8, 32, 128, 512],
            levels: vec![1, 32],
            sessions: vec![1000, 10_000],
            upstream_counts: vec![1, 5, 20, 50],
            rate_connections: 64,
            large_bytes: 64 * 1024,
        }
    }
}

/// One kind of traffic and the targets it is measured on.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Short name, e.g. `call_small`.
    pub name: String,
    /// What it sends, for the report.
    pub description: String,
    /// The request.
    pub template: Arc<Template>,
    /// Where it is sent, baseline first.
    pub targets: Vec<Target>,
}

/// How load is offered.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// `n` hosts, back to back.
    Closed(usize),
    /// Open loop at this many requests per second over `connections`.
    Rate { rps: f64, connections: usize },
}

/// The request scenarios: each on the direct baseline, the reference relay, the forward-only
/// gateway (HTTP and stdio upstream) and any variant gateways. `gateways` are the non-stdio
/// gateway targets.
pub fn request_scenarios(
    plan: &Plan,
    direct: &Target,
    relay: &Target,
    gateways: &[Target],
    stdio: &Target,
) -> Vec<Scenario> {
    let mut all = vec![direct.clone(), relay.clone()];
    all.extend(gateways.iter().cloned());
    all.push(stdio.clone());
    let mut http_only = vec![direct.clone(), relay.clone()];
    http_only.extend(gateways.iter().cloned());
    let large = text_of(plan.large_bytes);
    let kib = plan.large_bytes / 1024;
    let scenario = |name: &str, description: String, template: Template, targets: &Vec<Target>| Scenario {
        name: name.to_owned(),
        description,
        template: Arc::new(template),
        targets: targets.clone(),
    };
    vec![
        scenario(
            "call_small",
            "modern tools/call echo, 5-byte text, JSON response".into(),
            Template::call(Era::Modern, "echo", json!({ "text": "hello" }), false),
            &all,
        ),
        scenario(
            "call_64k",
            format!("modern tools/call echo, {kib} KiB text in and out, JSON response"),
            Template::call(Era::Modern, "echo", json!({ "text": large }), false),
            &all,
        ),
        scenario(
            "list",
            "modern tools/list (6 tools, ~3 KiB), JSON response".into(),
            Template::plain(Era::Modern, "tools/list"),
            &all,
        ),
        scenario(
            "call_legacy",
            "legacy (2025-11-25) tools/call echo in an initialized session, JSON response".into(),
            Template::call(Era::Legacy, "echo", json!({ "text": "hello" }), false),
            &all,
        ),
        scenario(
            "call_sse",
            "modern tools/call slow(ms=0, steps=2) with a progress token: SSE, 2 progress events + result".into(),
            Template::call(Era::Modern, "slow", json!({ "ms": 0, "steps": 2 }), true),
            &all,
        ),
        scenario(
            "initialize",
            "legacy initialize (a new session per request; ended after the slice, untimed)".into(),
            Template::initialize(),
            &http_only,
        ),
        scenario(
            "discover",
            "modern server/discover".into(),
            Template::plain(Era::Modern, "server/discover"),
            &http_only,
        ),
    ]
}

/// Runs a scenario under one load, targets interleaved over the plan's rounds.
pub async fn run(plan: &Plan, sc: &Scenario, load: Load, upstreams: Option<usize>) -> anyhow::Result<Run> {
    let n = sc.targets.len();
    let mut samples: Vec<Sample> = (0..n).map(|_| Sample::empty()).collect();
    let mut server_cpu = vec![Some(0u64); n];
    let mut gateway_cpu = vec![Some(0u64); n];
    let slice = match load {
        Load::Closed(_) => plan.slice,
        // Open loop needs more requests for a stable tail at a modest rate.
        Load::Rate { .. } => plan.slice * 2,
    };
    for round in 0..plan.rounds {
        let order: Vec<usize> = if round % 2 == 0 { (0..n).collect() } else { (0..n).rev().collect() };
        for i in order {
            let target = &sc.targets[i];
            let connections = match load {
                Load::Closed(c) => c,
                Load::Rate { connections, .. } => connections,
            };
            let conns = load::connect(&target.endpoint, sc.template.era, connections)
                .await
                .with_context(|| format!("{}: connect to {}", sc.name, target.name))?;
            let window = Window::after(plan.warmup, slice);
            let probe = {
                let target = target.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(window.start).await;
                    let before = target.cpu_us();
                    tokio::time::sleep_until(window.end).await;
                    let after = target.cpu_us();
                    (before, after)
                })
            };
            let sample = match load {
                Load::Closed(_) => load::closed(conns, Arc::clone(&sc.template), window).await,
                Load::Rate { rps, .. } => load::fixed_rate(conns, Arc::clone(&sc.template), rps, window).await,
            };
            let ((s0, g0), (s1, g1)) = probe.await.context("cpu probe")?;
            let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
            server_cpu[i] = server_cpu[i].zip(delta(s0, s1)).map(|(x, y)| x + y);
            gateway_cpu[i] = gateway_cpu[i].zip(delta(g0, g1)).map(|(x, y)| x + y);
            samples[i].merge(sample);
        }
    }
    let results: Vec<Measured> = sc
        .targets
        .iter()
        .zip(&samples)
        .enumerate()
        .map(|(i, (t, s))| {
            let gw = if t.gateway_pid.is_some() { gateway_cpu[i] } else { None };
            Measured::from_sample(&t.name, s, server_cpu[i], gw)
        })
        .collect();
    let (load_name, concurrency, rate) = match load {
        Load::Closed(c) => ("closed", c, None),
        Load::Rate { rps, connections } => ("fixed_rate", connections, Some(rps)),
    };
    Ok(Run {
        scenario: sc.name.clone(),
        description: sc.description.clone(),
        load: load_name.to_owned(),
        concurrency,
        rate_rps: rate,
        upstreams,
        comparisons: compare(&results),
        results,
    })
}

/// Every target against the direct baseline; variant gateways also against the forward-only one.
/// The reference relay is compared with direct only.
fn compare(results: &[Measured]) -> Vec<Comparison> {
    let find = |name: &str| results.iter().find(|m| m.target == name);
    let mut out = Vec::new();
    for m in results {
        if let Some(direct) = find(DIRECT).filter(|_| m.target != DIRECT) {
            out.push(Comparison::of(m, direct));
        }
        if ![DIRECT, RELAY, GATEWAY, GATEWAY_STDIO].contains(&m.target.as_str())
            && let Some(forward) = find(GATEWAY)
        {
            out.push(Comparison::of(m, forward));
        }
    }
    out
}

/// Sends a request until it succeeds (upstreams behind a fresh gateway take a moment).
pub async fn wait_ready(target: &Target, t: &Template) -> anyhow::Result<()> {
    let mut last = None;
    for _ in 0..100 {
        match Connection::open(Arc::clone(&target.endpoint), t.era).await {
            Ok(mut c) => match c.send(t).await {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("never ready"))).with_context(|| format!("{} not ready", target.name))
}

/// For a target whose hosts authenticate: checks that it refuses the same request without
/// credentials (401), so a gateway measured "with authentication" really checks them.
pub async fn check_refuses_anonymous(target: &Target, t: &Template) -> anyhow::Result<()> {
    if target.endpoint.authentication().is_none() {
        return Ok(());
    }
    let anonymous = Arc::new(target.endpoint.anonymous());
    let status = async { Connection::open(anonymous, t.era).await?.status(t).await }
        .await
        .with_context(|| format!("{}: a request without credentials", target.name))?;
    if status != StatusCode::UNAUTHORIZED {
        bail!("{} answered a request without credentials with HTTP {status}, expected 401", target.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(target: &str, p50: f64, rps: f64) -> Measured {
        Measured {
            target: target.to_owned(),
            requests: 1,
            errors: 0,
            first_error: None,
            throughput_rps: rps,
            p50_us: p50,
            p90_us: p50,
            p99_us: p50,
            max_us: p50,
            mean_us: p50,
            server_cpu_us_per_request: None,
            gateway_cpu_us_per_request: None,
        }
    }

    #[test]
    fn variants_are_compared_with_direct_and_forward_only() {
        let results = [
            measured(DIRECT, 50.0, 1000.0),
            measured(GATEWAY, 100.0, 500.0),
            measured("gateway-controls", 110.0, 450.0),
        ];
        let c = compare(&results);
        assert_eq!(c.len(), 3);
        let v = c.iter().find(|c| c.subject == "gateway-controls" && c.baseline == GATEWAY);
        assert!(v.is_some_and(|v| (v.added_p50_us - 10.0).abs() < 1e-9 && (v.throughput_ratio - 0.9).abs() < 1e-9));
        let g = c.iter().find(|c| c.subject == GATEWAY);
        assert!(g.is_some_and(|g| (g.p50_ratio - 2.0).abs() < 1e-9));
    }
}
