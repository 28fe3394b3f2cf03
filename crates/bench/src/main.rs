//! `portcullis-bench`: what the gateway costs, measured against a direct connection to the same
//! upstream in the same run. See BENCHMARKS.md at the repository root for how to read the output.

mod connection;
mod hop;
mod issuer;
mod load;
mod memory;
mod pace;
mod plot;
mod process;
mod relay;
mod report;
mod request;
mod suite;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::json;

use crate::process::Peer;
use crate::report::{Machine, Memory, Report, Settings};
use crate::request::{Era, Template};
use crate::suite::{Load, Plan, Scenario};
use crate::target::{DIRECT, GATEWAY, GATEWAY_STDIO, RELAY, Target};

/// Benchmarks Portcullis against a direct connection to the bundled demo upstream, A/B interleaved.
#[derive(Parser, Debug)]
#[command(name = "portcullis-bench", version, about)]
struct Args {
    /// Everyday smoke run: fewer levels and shorter slices (under a minute on two cores).
    #[arg(long)]
    quick: bool,
    /// Where to write bench.json and latency.svg.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// The `portcullis` binary (default: PORTCULLIS_BIN, else beside this executable).
    #[arg(long)]
    portcullis: Option<PathBuf>,
    /// Measured milliseconds per target per round (overrides the mode's).
    #[arg(long)]
    slice_ms: Option<u64>,
    /// Rounds per scenario (overrides the mode's).
    #[arg(long)]
    rounds: Option<usize>,
    /// Idle legacy session counts for the memory measurement, e.g. 1000,10000.
    #[arg(long, value_delimiter = ',')]
    sessions: Option<Vec<usize>>,
    /// Upstream counts for the aggregation curve, e.g. 1,5,20.
    #[arg(long, value_delimiter = ',')]
    upstreams: Option<Vec<usize>>,
    /// Load generator threads (the generator shares the machine with gateway and upstream).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Another gateway configuration to run every HTTP scenario against as well, compared with the
    /// forward-only gateway: NAME=FILE, FILE a TOML template whose `{{DEMO_URL}}` is replaced by the
    /// demo's URL and whose route `/mcp` fronts it (e.g. `controls=bench/controls.toml`).
    #[arg(long, value_parser = parse_variant)]
    variant: Vec<(String, PathBuf)>,
    /// Leave out the all-controls gateways (`crates/bench/controls.toml`: every control that has
    /// landed, the audit trail included; and `crates/bench/controls-noaudit.toml`, the same without
    /// the audit trail), which every run compares with forward-only by default.
    #[arg(long)]
    no_controls: bool,
    /// Run only these parts, e.g. `call_small` (for profiling): scenario names, `fixed_rate`,
    /// `sessions`, `agg`.
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Run as the reference relay in front of this upstream instead (the harness starts it).
    #[arg(long, hide = true)]
    relay_to: Option<std::net::SocketAddr>,
}

fn parse_variant(s: &str) -> Result<(String, PathBuf), String> {
    let (name, file) = s.split_once('=').ok_or("expected NAME=FILE")?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("bad variant name {name:?}"));
    }
    Ok((name.to_owned(), PathBuf::from(file)))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(upstream) = args.relay_to {
        return match relay::serve(upstream) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                // The harness passes on a peer's lines that say ERROR.
                eprintln!("ERROR portcullis-bench relay: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let exe = process::locate_portcullis(args.portcullis.clone())?;
    let mut plan = if args.quick { Plan::quick() } else { Plan::full() };
    if let Some(ms) = args.slice_ms {
        plan.slice = Duration::from_millis(ms.max(10));
        plan.warmup = (plan.slice / 5).max(Duration::from_millis(10));
    }
    if let Some(r) = args.rounds {
        plan.rounds = r.max(1);
    }
    if let Some(s) = args.sessions.clone() {
        plan.sessions = s;
    }
    if let Some(u) = args.upstreams.clone() {
        plan.upstream_counts = u;
    }
    let wanted = |part: &str| args.only.as_ref().is_none_or(|o| o.iter().any(|p| p == part));
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let progress = |what: &str| eprintln!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());

    // The peers: one HTTP demo (the direct baseline and the gateways' upstream), the reference
    // relay in front of it, the forward-only gateway (HTTP route and stdio route), and any variant
    // gateways.
    let demo = Peer::demo_http(&exe)?;
    let gateway = target::start_gateway(&exe, &target::forward_only_config(), &demo, None)?;
    // For configurations whose hosts authenticate with OAuth tokens (`{{ISSUER}}`).
    let issuer = issuer::Issuer::start().await?;
    let mut variants = Vec::new();
    if !args.no_controls {
        for (name, config) in
            [(target::CONTROLS, target::CONTROLS_CONFIG), (target::CONTROLS_NO_AUDIT, target::CONTROLS_NO_AUDIT_CONFIG)]
        {
            if !args.variant.iter().any(|(n, _)| n == name) {
                variants.push((name.to_owned(), target::start_gateway(&exe, config, &demo, Some(&issuer))?));
            }
        }
    }
    for (name, file) in &args.variant {
        let template = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
        variants.push((name.clone(), target::start_gateway(&exe, &template, &demo, Some(&issuer))?));
    }
    let relay = Peer::relay(demo.addr)?;
    let direct = target::direct_target(&demo)?;
    let relayed = target::relay_target(&relay, &demo)?;
    let probe = Template::call(Era::Modern, "echo", json!({ "text": "ready?" }), false);
    let mut gateways = vec![target::gateway_target(GATEWAY, &gateway, "/mcp", &[demo.pid()])?];
    for (name, peer) in &variants {
        gateways.push(target::gateway_target(&format!("gateway-{name}"), peer, "/mcp", &[demo.pid()])?);
    }
    for t in [&direct, &relayed].into_iter().chain(&gateways) {
        suite::wait_ready(t, &probe).await?;
        suite::check_refuses_anonymous(t, &probe).await?;
    }
    let stdio_probe = target::gateway_target(GATEWAY_STDIO, &gateway, "/stdio", &[])?;
    suite::wait_ready(&stdio_probe, &probe).await?;
    let stdio = target::gateway_target(GATEWAY_STDIO, &gateway, "/stdio", &process::children(gateway.pid()))?;
    let mut memory = Memory { gateway_start_rss_kib: process::rss_kib(gateway.pid()), ..Memory::default() };
    progress(&format!("peers ready ({} mode, portcullis at {})", plan.mode, exe.display()));

    let mut scenarios = suite::request_scenarios(&plan, &direct, &relayed, &gateways, &stdio);
    scenarios.retain(|s| wanted(&s.name));
    if plan.mode == "quick" {
        // Quick mode stays under a minute: the controls without the audit trail and the reference
        // relay run only what their figures read (the `tools/call` sweep, and the fixed-rate runs
        // after it).
        let bare = format!("gateway-{}", target::CONTROLS_NO_AUDIT);
        for sc in scenarios.iter_mut().filter(|s| s.name != "call_small") {
            sc.targets.retain(|t| t.name != bare && t.name != RELAY);
        }
    }
    let mut runs = Vec::new();
    // Request traffic first (peak RSS is read after it), then handshakes, which open sessions.
    let (handshakes, requests): (Vec<&Scenario>, Vec<&Scenario>) =
        scenarios.iter().partition(|s| s.name == "initialize" || s.name == "discover");
    for sc in &requests {
        let levels = if sc.name == "call_small" { &plan.sweep } else { &plan.levels };
        for &c in levels {
            progress(&format!("{} c={c}", sc.name));
            runs.push(suite::run(&plan, sc, Load::Closed(c), None).await?);
        }
    }
    memory.gateway_peak_rss_kib = process::peak_rss_kib(gateway.pid());

    // Fixed rate at half of the forward-only gateway's best closed-loop throughput (direct, the
    // relay and forward-only); then, for each variant, at half of its own (direct, forward-only and it), so
    // no gateway is measured above its capacity, where latency is only queueing.
    let capacity = |target: &str| {
        runs.iter()
            .filter(|r| r.scenario == "call_small" && r.load == "closed")
            .filter_map(|r| r.of(target))
            .map(|m| m.throughput_rps)
            .fold(0.0_f64, f64::max)
    };
    if let Some(call) = scenarios.iter().find(|s| s.name == "call_small").filter(|_| wanted("fixed_rate")) {
        // The relay rides along at the forward-only gateway's rate: the p99 of a bare hop there.
        let mut at = vec![(capacity(GATEWAY), vec![DIRECT.to_owned(), RELAY.to_owned(), GATEWAY.to_owned()])];
        for (name, _) in &variants {
            let subject = format!("gateway-{name}");
            at.push((capacity(&subject), vec![DIRECT.to_owned(), GATEWAY.to_owned(), subject]));
        }
        for (capacity, names) in at {
            let mut fixed = call.clone();
            fixed.targets.retain(|t| names.contains(&t.name));
            let rps = (capacity * 0.5).max(10.0);
            progress(&format!("call_small fixed rate {rps:.0}/s ({})", names.join(", ")));
            let load = Load::Rate { rps, connections: plan.rate_connections };
            runs.push(suite::run(&plan, &fixed, load, None).await?);
        }
    }
    for sc in &handshakes {
        for &c in &plan.levels {
            progress(&format!("{} c={c}", sc.name));
            runs.push(suite::run(&plan, sc, Load::Closed(c), None).await?);
        }
    }
    let variant_names: Vec<String> = variants.iter().map(|(n, _)| n.clone()).collect();
    drop(variants);
    drop(gateway);
    drop(relay);

    progress(&format!("idle sessions {:?}", plan.sessions));
    if !plan.sessions.is_empty() && wanted("sessions") {
        memory.idle_sessions = memory::idle_sessions(&exe, &demo, &plan.sessions).await?;
    }

    for &n in plan.upstream_counts.iter().filter(|_| wanted("agg")) {
        progress(&format!("{n} aggregated stdio upstreams"));
        runs.extend(aggregate(&exe, &demo, &plan, n).await?);
    }
    drop(demo);

    let mut report = Report {
        mode: plan.mode.to_owned(),
        machine: Machine::detect(),
        settings: Settings {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            slice_ms: u64::try_from(plan.slice.as_millis()).unwrap_or(u64::MAX),
            warmup_ms: u64::try_from(plan.warmup.as_millis()).unwrap_or(u64::MAX),
            rounds: plan.rounds,
            client_threads: args.client_threads,
            large_bytes: plan.large_bytes,
            authentication: gateways
                .iter()
                .filter_map(|t| Some((t.name.clone(), t.endpoint.authentication()?)))
                .collect(),
        },
        runs,
        memory,
        targets: Vec::new(),
        reference: Vec::new(),
    };
    // The controls-on targets compare the all-controls gateway, or else the first variant; the
    // same targets are also checked for the controls without the audit trail, when it ran.
    let controls = variant_names.iter().map(String::as_str).find(|n| *n == target::CONTROLS);
    let controls =
        controls.or_else(|| args.variant.iter().map(|(n, _)| n.as_str()).find(|n| *n != target::CONTROLS_NO_AUDIT));
    let without_audit = variant_names.iter().map(String::as_str).find(|n| *n == target::CONTROLS_NO_AUDIT);
    report.targets = report::check_targets(&report, controls, without_audit);
    report.reference = report::reference(&report);
    let json_path = args.out.join("bench.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    let svg_path = args.out.join("latency.svg");
    std::fs::write(&svg_path, plot::latency_svg(&report))?;
    print!("{}", report.table());
    println!("\nwrote {} and {} in {:.1}s", json_path.display(), svg_path.display(), started.elapsed().as_secs_f64());
    let failed: Vec<_> = report.runs.iter().flat_map(|r| &r.results).filter(|m| m.requests == 0).collect();
    if let Some(m) = failed.first() {
        bail!("{} completed no request: {}", m.target, m.first_error.as_deref().unwrap_or("no error recorded"));
    }
    Ok(())
}

/// `tools/list` and a `tools/call` routed to the last of `n` aggregated stdio upstreams.
async fn aggregate(exe: &std::path::Path, demo: &Peer, plan: &Plan, n: usize) -> anyhow::Result<Vec<report::Run>> {
    let gateway = target::start_gateway(exe, &target::aggregate_config(n), demo, None)?;
    let tool = format!("u{}__echo", n.saturating_sub(1));
    let call = Template::call(Era::Modern, &tool, json!({ "text": "hello" }), false);
    let probe = target::gateway_target("probe", &gateway, "/agg", &[])?;
    suite::wait_ready(&probe, &call).await?;
    let list = Template::plain(Era::Modern, "tools/list");
    suite::wait_ready(&probe, &list).await?;
    let t: Target =
        target::gateway_target(&format!("gateway-agg{n}"), &gateway, "/agg", &process::children(gateway.pid()))?;
    let scenarios = [
        Scenario {
            name: "agg_list".into(),
            description: format!("modern tools/list over {n} aggregated stdio demos ({} tools)", 6 * n),
            template: Arc::new(list),
            targets: vec![t.clone()],
        },
        Scenario {
            name: "agg_call".into(),
            description: format!("modern tools/call {tool}, routed among {n} stdio upstreams"),
            template: Arc::new(call),
            targets: vec![t],
        },
    ];
    let mut runs = Vec::new();
    for sc in &scenarios {
        for &c in &plan.levels {
            runs.push(suite::run(plan, sc, Load::Closed(c), Some(n)).await?);
        }
    }
    Ok(runs)
}
