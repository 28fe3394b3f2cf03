//! The results: the machine-readable report (JSON), the human-readable table, and the check of
//! the figures against the targets of issue 3.

use std::fmt::Write as _;

use serde::Serialize;

use crate::load::Sample;

/// Everything one benchmark run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `quick` or `full`.
    pub mode: String,
    /// Where it ran.
    pub machine: Machine,
    /// How it ran.
    pub settings: Settings,
    /// One entry per scenario, concurrency (or rate) and upstream count.
    pub runs: Vec<Run>,
    /// The gateway's memory.
    pub memory: Memory,
    /// The targets, met or missed.
    pub targets: Vec<Check>,
    /// The same measures for the reference relay (one hop with no logic), and the gateway above
    /// it: what of the gateway's cost is the machine's, and what is the gateway's own.
    pub reference: Vec<Figure>,
}

/// A measured figure with no limit.
#[derive(Debug, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: Option<f64>,
    pub unit: String,
}

/// Round trips timed for [`Machine::wake`] per placement.
const WAKE_ROUND_TRIPS: u32 = 5_000;

/// The machine the figures come from.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// Logical CPUs available.
    pub cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// `MemTotal`, MiB.
    pub memory_mib: u64,
    /// Kernel release.
    pub kernel: String,
    /// What waking another thread costs here (absent when it could not be measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wake: Option<crate::hop::Wake>,
}

impl Machine {
    /// Reads /proc, and times the wake-ups (a second or less).
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: u64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Machine {
            cpus: std::thread::available_parallelism().map(usize::from).unwrap_or(1),
            cpu_model,
            memory_mib: memory_kib / 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
            wake: crate::hop::measure(WAKE_ROUND_TRIPS)
                .inspect_err(|e| eprintln!("the wake-up cost could not be measured: {e}"))
                .ok(),
        }
    }
}

/// The run's parameters.
#[derive(Debug, Serialize)]
pub struct Settings {
    /// The command line.
    pub command: String,
    /// Measured time per target per round, ms.
    pub slice_ms: u64,
    /// Unrecorded warm-up before each slice, ms.
    pub warmup_ms: u64,
    /// Rounds per scenario; targets alternate order between rounds (A/B interleaving).
    pub rounds: usize,
    /// Load generator threads.
    pub client_threads: usize,
    /// Large-argument size, bytes.
    pub large_bytes: usize,
    /// The targets whose hosts authenticate, and how (`api_key`, `jwt`); the others are anonymous.
    pub authentication: std::collections::BTreeMap<String, &'static str>,
}

/// One scenario at one load level.
#[derive(Debug, Serialize)]
pub struct Run {
    /// Scenario name, e.g. `call_small`.
    pub scenario: String,
    /// What it sends.
    pub description: String,
    /// `closed` (concurrency) or `fixed_rate` (open loop, coordinated-omission corrected).
    pub load: String,
    /// Connections (hosts).
    pub concurrency: usize,
    /// Offered rate, requests/s (fixed-rate runs).
    pub rate_rps: Option<f64>,
    /// Upstreams aggregated behind the route (scaling runs).
    pub upstreams: Option<usize>,
    /// One entry per target.
    pub results: Vec<Measured>,
    /// Each target against its baseline in this run.
    pub comparisons: Vec<Comparison>,
}

/// One target's figures.
#[derive(Debug, Serialize, Clone)]
pub struct Measured {
    /// `direct-http`, `gateway-http`, `gateway-stdio`, …
    pub target: String,
    /// Successful requests recorded.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Successful requests per second.
    pub throughput_rps: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    /// CPU time of every server process involved (gateway and upstream), per request, µs.
    pub server_cpu_us_per_request: Option<f64>,
    /// CPU time of the gateway process alone (for `relay-http`, the relay's), per request, µs.
    pub gateway_cpu_us_per_request: Option<f64>,
}

impl Measured {
    /// Summarises a sample; CPU figures are totals in µs over the measured window.
    pub fn from_sample(target: &str, s: &Sample, server_cpu_us: Option<u64>, gateway_cpu_us: Option<u64>) -> Measured {
        let h = &s.latency;
        let us = |ns: u64| ns as f64 / 1000.0;
        let requests = h.len();
        let secs = s.elapsed.as_secs_f64().max(1e-9);
        let per = |cpu: Option<u64>| cpu.filter(|_| requests > 0).map(|c| c as f64 / requests as f64);
        Measured {
            target: target.to_owned(),
            requests,
            errors: s.errors,
            first_error: s.first_error.clone(),
            throughput_rps: requests as f64 / secs,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
            server_cpu_us_per_request: per(server_cpu_us),
            gateway_cpu_us_per_request: per(gateway_cpu_us),
        }
    }
}

/// A target against a baseline measured in the same run.
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub subject: String,
    pub baseline: String,
    /// subject − baseline, µs.
    pub added_p50_us: f64,
    pub added_p90_us: f64,
    pub added_p99_us: f64,
    /// subject / baseline.
    pub p50_ratio: f64,
    pub throughput_ratio: f64,
}

impl Comparison {
    /// Compares two targets' figures.
    pub fn of(subject: &Measured, baseline: &Measured) -> Comparison {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        Comparison {
            subject: subject.target.clone(),
            baseline: baseline.target.clone(),
            added_p50_us: subject.p50_us - baseline.p50_us,
            added_p90_us: subject.p90_us - baseline.p90_us,
            added_p99_us: subject.p99_us - baseline.p99_us,
            p50_ratio: ratio(subject.p50_us, baseline.p50_us),
            throughput_ratio: ratio(subject.throughput_rps, baseline.throughput_rps),
        }
    }
}

/// The gateway's memory.
#[derive(Debug, Serialize, Default)]
pub struct Memory {
    /// Peak RSS (`VmHWM`) of the benchmarked gateway after the request scenarios, KiB.
    pub gateway_peak_rss_kib: Option<u64>,
    /// Its RSS right after start, KiB.
    pub gateway_start_rss_kib: Option<u64>,
    /// Idle legacy sessions held by a fresh gateway.
    pub idle_sessions: Vec<SessionMemory>,
}

/// RSS growth for a number of idle legacy sessions.
#[derive(Debug, Serialize)]
pub struct SessionMemory {
    /// Sessions open (`initialize` + `notifications/initialized`, then idle).
    pub sessions: usize,
    /// RSS before the first session, KiB.
    pub rss_before_kib: u64,
    /// RSS with all sessions open, KiB.
    pub rss_after_kib: u64,
    /// (after − before) / sessions, bytes.
    pub bytes_per_session: f64,
    /// Time to open them (concurrency 16), ms.
    pub open_ms: f64,
}

/// What the reference relay costs (the targets' measures, taken for it), and what the
/// forward-only gateway adds above it, in the same run.
pub fn reference(report: &Report) -> Vec<Figure> {
    use crate::target::{DIRECT, GATEWAY, RELAY};
    let c1 = report.find("call_small", "closed", Some(1));
    let relay = c1.and_then(|r| r.comparison(RELAY, DIRECT));
    let best = |target: &str| report.best_call_throughput(target);
    let saturation = best(RELAY).zip(best(DIRECT)).map(|(r, d)| if d > 0.0 { r / d } else { 0.0 });
    let above = c1.and_then(|r| r.of(GATEWAY).zip(r.of(RELAY))).map(|(g, r)| g.p50_us - r.p50_us);
    let fixed =
        report.runs.iter().find(|r| r.scenario == "call_small" && r.load == "fixed_rate" && r.of(RELAY).is_some());
    let figure =
        |name: &str, value: Option<f64>, unit: &str| Figure { name: name.to_owned(), value, unit: unit.to_owned() };
    vec![
        figure("c=1 tools/call: relay p50 / direct p50", relay.map(|c| c.p50_ratio), "x"),
        figure("c=1 tools/call: relay added p50", relay.map(|c| c.added_p50_us), "µs"),
        figure("saturation throughput: relay / direct (best of sweep)", saturation, "x"),
        figure(
            "added p99 at the fixed rate: relay",
            fixed.and_then(|r| r.comparison(RELAY, DIRECT)).map(|c| c.added_p99_us),
            "µs",
        ),
        figure("c=1 tools/call: gateway p50 − relay p50", above, "µs"),
    ]
}

/// One target of the issue.
#[derive(Debug, Serialize)]
pub struct Check {
    /// What is compared.
    pub name: String,
    /// Measured value.
    pub value: Option<f64>,
    /// The limit, in the same unit.
    pub limit: f64,
    /// `≤` or `≥`.
    pub relation: String,
    pub unit: String,
    /// `met`, `missed` or `not measured`.
    pub status: String,
}

impl Check {
    /// `value` must be at most `limit`.
    pub fn at_most(name: &str, value: Option<f64>, limit: f64, unit: &str) -> Check {
        Check::new(name, value, limit, "<=", unit, value.map(|v| v <= limit))
    }

    /// `value` must be at least `limit`.
    pub fn at_least(name: &str, value: Option<f64>, limit: f64, unit: &str) -> Check {
        Check::new(name, value, limit, ">=", unit, value.map(|v| v >= limit))
    }

    fn new(name: &str, value: Option<f64>, limit: f64, rel: &str, unit: &str, met: Option<bool>) -> Check {
        let status = match met {
            Some(true) => "met",
            Some(false) => "missed",
            None => "not measured",
        };
        Check {
            name: name.to_owned(),
            value,
            limit,
            relation: rel.to_owned(),
            unit: unit.to_owned(),
            status: status.to_owned(),
        }
    }
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "portcullis-bench ({} mode) on {} × {}, {} MiB",
            self.mode, m.cpus, m.cpu_model, m.memory_mib
        );
        if let Some(w) = &m.wake {
            let across = w.across_cpus.map_or_else(String::new, |a| {
                format!("{:.1} µs across CPUs ({:.1} µs of CPU per thread), ", a.round_trip_us, a.cpu_us_per_thread)
            });
            let _ = writeln!(
                out,
                "wake-ups: a round trip between two threads over a socket takes {across}{:.1} µs on one CPU ({:.1} µs of CPU per thread)",
                w.one_cpu.round_trip_us, w.one_cpu.cpu_us_per_thread
            );
        }
        if !self.settings.authentication.is_empty() {
            let how: Vec<String> =
                self.settings.authentication.iter().map(|(t, kind)| format!("{t} ({kind})")).collect();
            let _ =
                writeln!(out, "hosts authenticate with: {}; the other targets take anonymous hosts", how.join(", "));
        }
        let _ = writeln!(
            out,
            "{:<18} {:>5} {:>6} {:<14} {:>9} {:>8} {:>8} {:>8} {:>9} {:>6} {:>8} {:>8} {:>7} {:>6}",
            "scenario",
            "conc",
            "ups",
            "target",
            "req/s",
            "p50µs",
            "p90µs",
            "p99µs",
            "maxµs",
            "err",
            "+p50µs",
            "+p99µs",
            "×p50",
            "×tput"
        );
        for run in &self.runs {
            let label = match run.rate_rps {
                Some(r) => format!("{}@{:.0}/s", run.scenario, r),
                None => run.scenario.clone(),
            };
            for r in &run.results {
                let cmp = run.comparisons.iter().find(|c| c.subject == r.target);
                let (a50, a99, x50, xt) = match cmp {
                    Some(c) => (
                        format!("{:+.0}", c.added_p50_us),
                        format!("{:+.0}", c.added_p99_us),
                        format!("{:.2}", c.p50_ratio),
                        format!("{:.2}", c.throughput_ratio),
                    ),
                    None => Default::default(),
                };
                let _ = writeln!(
                    out,
                    "{:<18} {:>5} {:>6} {:<14} {:>9.0} {:>8.0} {:>8.0} {:>8.0} {:>9.0} {:>6} {:>8} {:>8} {:>7} {:>6}",
                    label,
                    run.concurrency,
                    run.upstreams.map(|u| u.to_string()).unwrap_or_default(),
                    r.target,
                    r.throughput_rps,
                    r.p50_us,
                    r.p90_us,
                    r.p99_us,
                    r.max_us,
                    r.errors,
                    a50,
                    a99,
                    x50,
                    xt
                );
            }
        }
        let mem = &self.memory;
        let kib = |v: Option<u64>| v.map(|v| format!("{v} KiB")).unwrap_or_else(|| "n/a".to_owned());
        let _ = writeln!(
            out,
            "\ngateway RSS: {} at start, {} peak under load",
            kib(mem.gateway_start_rss_kib),
            kib(mem.gateway_peak_rss_kib)
        );
        for s in &mem.idle_sessions {
            let _ = writeln!(
                out,
                "idle legacy sessions: {} open in {:.0} ms, RSS {} → {} KiB, {:.0} bytes/session",
                s.sessions, s.open_ms, s.rss_before_kib, s.rss_after_kib, s.bytes_per_session
            );
        }
        let _ = writeln!(out, "\ntargets (issue 3):");
        for c in &self.targets {
            let v = c.value.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".to_owned());
            let _ =
                writeln!(out, "  {:<58} {:>10} {} {:<8} {:<4} {}", c.name, v, c.relation, c.limit, c.unit, c.status);
        }
        if !self.reference.is_empty() {
            let _ = writeln!(out, "\nreference: one HTTP hop with no logic (relay-http), and the gateway above it:");
            for f in &self.reference {
                let v = f.value.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".to_owned());
                let _ = writeln!(out, "  {:<58} {:>10} {}", f.name, v, f.unit);
            }
        }
        out
    }

    /// A target's best closed-loop `tools/call` throughput over the sweep (its saturation).
    pub fn best_call_throughput(&self, target: &str) -> Option<f64> {
        self.runs
            .iter()
            .filter(|r| r.scenario == "call_small" && r.load == "closed")
            .filter_map(|r| r.of(target))
            .map(|m| m.throughput_rps)
            .reduce(f64::max)
    }

    /// The run of a scenario at a concurrency (closed loop, no upstream count).
    pub fn find(&self, scenario: &str, load: &str, concurrency: Option<usize>) -> Option<&Run> {
        self.runs
            .iter()
            .find(|r| r.scenario == scenario && r.load == load && concurrency.is_none_or(|c| r.concurrency == c))
    }
}

impl Run {
    /// A target's figures in this run.
    pub fn of(&self, target: &str) -> Option<&Measured> {
        self.results.iter().find(|m| m.target == target)
    }

    /// A comparison in this run.
    pub fn comparison(&self, subject: &str, baseline: &str) -> Option<&Comparison> {
        self.comparisons.iter().find(|c| c.subject == subject && c.baseline == baseline)
    }
}

/// Fills in the targets from the runs: c=1 `tools/call` ratio and added p50, saturation
/// throughput ratio, the controls-on comparison (from `variant`, when one ran; and the same for
/// `without_audit`, the controls without the audit trail), added p99 at a fixed half-capacity
/// rate, and memory per idle legacy session.
pub fn check_targets(report: &Report, variant: Option<&str>, without_audit: Option<&str>) -> Vec<Check> {
    use crate::target::{DIRECT, GATEWAY};
    let c1 = report.find("call_small", "closed", Some(1)).and_then(|r| r.comparison(GATEWAY, DIRECT));
    let best = |target: &str| report.best_call_throughput(target);
    let saturation = best(GATEWAY).zip(best(DIRECT)).map(|(g, d)| if d > 0.0 { g / d } else { 0.0 });
    // A variant against forward-only: its worst throughput ratio over the sweep, its added p50 at c=1.
    let against_forward_only = |v: &str| {
        let subject = format!("gateway-{v}");
        let ratio = |r: &Run| r.comparison(&subject, GATEWAY).map(|c| c.throughput_ratio);
        let worst_ratio = report
            .runs
            .iter()
            .filter(|r| r.scenario == "call_small" && r.load == "closed")
            .filter_map(ratio)
            .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.min(v))));
        let p50 = report
            .find("call_small", "closed", Some(1))
            .and_then(|r| r.comparison(&subject, GATEWAY))
            .map(|c| c.added_p50_us);
        (worst_ratio, p50)
    };
    let controls = variant.map(against_forward_only);
    let bare = without_audit.map(against_forward_only);
    let fixed = report.find("call_small", "fixed_rate", None).and_then(|r| r.comparison(GATEWAY, DIRECT));
    // The worst of the measured session counts (fewer sessions carry more of the allocator's fixed cost).
    let session = report.memory.idle_sessions.iter().map(|s| s.bytes_per_session / 1024.0).reduce(f64::max);
    // The two controls targets, for a variant against forward-only.
    let controls_checks = |label: &str, measured: Option<(Option<f64>, Option<f64>)>| {
        [
            Check::at_least(
                &format!("{label} / forward-only throughput (worst level)"),
                measured.and_then(|c| c.0),
                0.85,
                "x",
            ),
            Check::at_most(
                &format!("{label} − forward-only: added p50 at c=1"),
                measured.and_then(|c| c.1),
                20.0,
                "µs",
            ),
        ]
    };
    let mut checks = vec![
        Check::at_most("c=1 tools/call: gateway p50 / direct p50", c1.map(|c| c.p50_ratio), 2.0, "x"),
        Check::at_most("c=1 tools/call: added p50", c1.map(|c| c.added_p50_us), 60.0, "µs"),
        Check::at_least("saturation throughput: gateway / direct (best of sweep)", saturation, 0.40, "x"),
    ];
    checks.extend(controls_checks("all controls on", controls));
    checks.extend(controls_checks("controls, audit off", bare));
    checks.extend([
        Check::at_most("added p99 at a fixed 50%-of-capacity rate", fixed.map(|c| c.added_p99_us), 250.0, "µs"),
        Check::at_most("gateway memory per idle legacy session", session, 16.0, "KiB"),
    ]);
    checks
}
