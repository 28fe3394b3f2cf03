//! The one picture: latency percentiles per scenario at concurrency 1, direct vs through the
//! gateway (the reference relay in grey beside them), as a hand-written SVG (log-scale horizontal bars: p50 dark, p90 mid, p99 light).

use std::fmt::Write as _;

use crate::report::Report;
use crate::target::{DIRECT, GATEWAY, GATEWAY_STDIO, RELAY};

const WIDTH: f64 = 960.0;
const LEFT: f64 = 250.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 70.0;
const ROW: f64 = 18.0;
const GAP: f64 = 12.0;

/// Renders the SVG for the closed-loop runs at concurrency 1 (without upstream scaling runs).
pub fn latency_svg(report: &Report) -> String {
    let runs: Vec<_> =
        report.runs.iter().filter(|r| r.load == "closed" && r.concurrency == 1 && r.upstreams.is_none()).collect();
    let rows: usize = runs.iter().map(|r| r.results.len()).sum();
    let height = TOP + rows as f64 * ROW + runs.len() as f64 * GAP + 60.0;
    let max_us = runs.iter().flat_map(|r| &r.results).map(|m| m.p99_us).fold(100.0_f64, f64::max);
    let lo = 10.0_f64.log10();
    let hi = max_us.log10().ceil().max(lo + 1.0);
    let x = |us: f64| LEFT + (us.max(10.0).log10() - lo) / (hi - lo) * (WIDTH - LEFT - RIGHT);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="15" font-weight="bold">Latency at concurrency 1: direct vs through Portcullis ({} mode)</text>"#,
        LEFT - 230.0,
        report.mode
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="44" fill="#444">bar = p50 (dark) / p90 / p99 (light), µs, log scale; {} × {}</text>"##,
        LEFT - 230.0,
        report.machine.cpus,
        escape(&report.machine.cpu_model)
    );
    let bottom = height - 40.0;
    // Decade grid lines.
    let mut decade = lo;
    while decade <= hi + 1e-9 {
        let us = 10f64.powf(decade);
        let gx = x(us);
        let _ = writeln!(s, r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{bottom}" stroke="#ddd"/>"##);
        let _ = writeln!(s, r#"<text x="{gx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, bottom + 16.0, label(us));
        decade += 1.0;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">latency (µs)</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        bottom + 34.0
    );

    let mut y = TOP;
    for run in &runs {
        let _ = writeln!(
            s,
            r#"<text x="10" y="{:.1}" font-weight="bold">{}</text>"#,
            y + ROW * 0.75,
            escape(&run.scenario)
        );
        for m in &run.results {
            let (dark, mid, light) = colours(&m.target);
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                y + ROW * 0.75,
                escape(&m.target)
            );
            for (us, colour) in [(m.p99_us, light), (m.p90_us, mid), (m.p50_us, dark)] {
                let w = (x(us) - LEFT).max(1.0);
                let _ = writeln!(
                    s,
                    r#"<rect x="{LEFT}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="{colour}"><title>{} {}: {:.0} µs</title></rect>"#,
                    y + 2.0,
                    ROW - 4.0,
                    escape(&run.scenario),
                    escape(&m.target),
                    us
                );
            }
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#333">{:.0} / {:.0} / {:.0}</text>"##,
                x(m.p99_us) + 4.0,
                y + ROW * 0.72,
                m.p50_us,
                m.p90_us,
                m.p99_us
            );
            y += ROW;
        }
        y += GAP;
    }
    s.push_str("</svg>\n");
    s
}

fn colours(target: &str) -> (&'static str, &'static str, &'static str) {
    match target {
        DIRECT => ("#1f4e8c", "#4f7fc0", "#a9c2e6"),
        GATEWAY => ("#b35900", "#e08a2e", "#f5c89a"),
        GATEWAY_STDIO => ("#2e7d32", "#5fae62", "#b4dcb5"),
        RELAY => ("#555555", "#888888", "#cccccc"),
        _ => ("#5e35b1", "#8c6bd1", "#cbbcf0"),
    }
}

fn label(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.0} s", us / 1_000_000.0)
    } else if us >= 1000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
