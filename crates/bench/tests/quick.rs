//! Smoke check of the harness (never of the gateway's speed): `--quick` with a tiny budget against
//! the real `portcullis` binary must produce a report with every scenario and sane numbers.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The `portcullis` binary of this build profile, built first if `cargo test` did not build it.
fn portcullis() -> PathBuf {
    let bench = Path::new(env!("CARGO_BIN_EXE_portcullis-bench"));
    let dir = bench.parent().expect("target profile directory");
    let exe = dir.join("portcullis");
    if !exe.is_file() {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "-p", "portcullis"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build -p portcullis");
        assert!(status.success(), "cargo build -p portcullis failed");
    }
    exe
}

/// Runs the harness with these arguments against this build's `portcullis`, writing to `out`.
fn bench(args: &[&str], out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis-bench"))
        .args(args)
        .arg("--portcullis")
        .arg(portcullis())
        .arg("--out")
        .arg(out)
        .output()
        .expect("run portcullis-bench")
}

fn number(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

#[test]
fn quick_mode_reports_every_scenario_with_sane_numbers() {
    let out = tempfile::tempdir().expect("temp dir");
    let run =
        bench(&["--quick", "--slice-ms", "100", "--rounds", "1", "--sessions", "50", "--upstreams", "1,2"], out.path());
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "portcullis-bench failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("targets (issue 3)"), "no table on stdout:\n{stdout}");
    assert!(stdout.contains("reference: one HTTP hop"), "no reference figures on stdout:\n{stdout}");
    assert!(stdout.contains("wake-ups: a round trip between two threads"), "no wake-up cost on stdout:\n{stdout}");

    let text = std::fs::read_to_string(out.path().join("bench.json")).expect("bench.json");
    let report: Value = serde_json::from_str(&text).expect("bench.json is JSON");
    assert_eq!(report["mode"], "quick");
    // The machine's wake-up cost, on one CPU and (on a machine with more) across two.
    let wake = &report["machine"]["wake"];
    assert!(number(&wake["one_cpu"], "round_trip_us") > 0.0, "no wake-up cost: {wake}");
    assert!(number(&wake["one_cpu"], "cpu_us_per_thread").is_finite());
    let cpus = number(&report["machine"], "cpus");
    if cpus > 1.0 {
        assert!(number(&wake["across_cpus"], "round_trip_us") > 0.0, "{wake}");
    }
    // The all-controls gateways authenticate their hosts, and the report says so.
    let authentication = &report["settings"]["authentication"];
    assert_eq!(authentication["gateway-controls"], "api_key");
    assert_eq!(authentication["gateway-controls-noaudit"], "api_key");
    assert!(authentication.get("gateway-http").is_none(), "forward-only takes anonymous hosts");
    assert!(stdout.contains("hosts authenticate with: gateway-controls (api_key)"), "{stdout}");
    let runs = report["runs"].as_array().expect("runs");
    for (scenario, load) in [
        ("call_small", "closed"),
        ("call_small", "fixed_rate"),
        ("call_64k", "closed"),
        ("list", "closed"),
        ("call_legacy", "closed"),
        ("call_sse", "closed"),
        ("initialize", "closed"),
        ("discover", "closed"),
        ("agg_list", "closed"),
        ("agg_call", "closed"),
    ] {
        assert!(runs.iter().any(|r| r["scenario"] == scenario && r["load"] == load), "no {load} run of {scenario}");
    }
    let targets: Vec<&str> = runs
        .iter()
        .flat_map(|r| r["results"].as_array().into_iter().flatten())
        .filter_map(|m| m["target"].as_str())
        .collect();
    for t in [
        "direct-http",
        "relay-http",
        "gateway-http",
        "gateway-controls",
        "gateway-controls-noaudit",
        "gateway-stdio",
        "gateway-agg1",
        "gateway-agg2",
    ] {
        assert!(targets.contains(&t), "target {t} never measured");
    }
    for run in runs {
        for m in run["results"].as_array().expect("results") {
            let what = format!("{} c={} {}", run["scenario"], run["concurrency"], m["target"]);
            assert!(number(m, "requests") > 0.0, "{what}: no requests");
            assert_eq!(number(m, "errors"), 0.0, "{what}: errors: {}", m["first_error"]);
            assert!(number(m, "throughput_rps") > 0.0, "{what}: no throughput");
            let (p50, p90, p99, max) =
                (number(m, "p50_us"), number(m, "p90_us"), number(m, "p99_us"), number(m, "max_us"));
            assert!(0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= max, "{what}: percentiles out of order");
        }
        if run["results"].as_array().is_some_and(|r| r.iter().any(|m| m["target"] == "direct-http")) {
            assert!(
                !run["comparisons"].as_array().expect("comparisons").is_empty(),
                "{}: no comparison",
                run["scenario"]
            );
        }
    }
    // Each gateway's fixed-rate run is at half of its own capacity: the all-controls ones have their own.
    let at_rate = |target: &str| {
        runs.iter().any(|r| {
            r["load"] == "fixed_rate"
                && r["results"].as_array().is_some_and(|m| m.iter().any(|m| m["target"] == target))
        })
    };
    assert!(
        at_rate("gateway-http") && at_rate("gateway-controls") && at_rate("gateway-controls-noaudit"),
        "a fixed-rate run is missing"
    );
    let memory = &report["memory"];
    assert!(number(memory, "gateway_peak_rss_kib") > 0.0);
    assert_eq!(memory["idle_sessions"][0]["sessions"], 50);
    assert!(number(&memory["idle_sessions"][0], "bytes_per_session").is_finite());
    assert_eq!(report["targets"].as_array().map(Vec::len), Some(9));
    // The all-controls gateways run by default, so every target has a figure.
    for t in report["targets"].as_array().expect("targets") {
        assert!(t["status"] == "met" || t["status"] == "missed", "{}: {}", t["name"], t["status"]);
    }
    // The reference relay has a figure for each of its measures.
    let reference = report["reference"].as_array().expect("reference");
    assert_eq!(reference.len(), 5);
    for f in reference {
        assert!(f["value"].as_f64().is_some_and(f64::is_finite), "{}: no figure", f["name"]);
    }
    let svg = std::fs::read_to_string(out.path().join("latency.svg")).expect("latency.svg");
    assert!(svg.starts_with("<svg") && svg.contains("gateway-http"), "not the latency plot");
}

#[test]
fn the_oauth_variant_is_measured_with_tokens_from_the_harness_issuer() {
    let out = tempfile::tempdir().expect("temp dir");
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("controls-jwt.toml");
    let variant = format!("jwt={}", template.display());
    let run = bench(
        &[
            "--quick",
            "--only",
            "call_small",
            "--slice-ms",
            "100",
            "--rounds",
            "1",
            "--no-controls",
            "--variant",
            &variant,
        ],
        out.path(),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    // The harness refuses to measure a gateway that accepts a request without the token.
    assert!(run.status.success(), "portcullis-bench failed:\n{stderr}");
    let text = std::fs::read_to_string(out.path().join("bench.json")).expect("bench.json");
    let report: Value = serde_json::from_str(&text).expect("bench.json is JSON");
    let measured: Vec<&Value> = report["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .flat_map(|r| r["results"].as_array().into_iter().flatten())
        .filter(|m| m["target"] == "gateway-jwt")
        .collect();
    assert!(!measured.is_empty(), "gateway-jwt never measured");
    assert_eq!(report["settings"]["authentication"]["gateway-jwt"], "jwt");
    for m in measured {
        assert!(number(m, "requests") > 0.0, "no requests");
        assert_eq!(number(m, "errors"), 0.0, "errors: {}", m["first_error"]);
    }
}

#[test]
fn a_gateway_whose_api_key_cannot_be_made_stops_the_run_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Hosts must authenticate with API keys, but the key store cannot be opened: `apikey create`
    // fails, and the harness must say so rather than measure a gateway its hosts cannot use.
    let template = dir.path().join("keyless.toml");
    let config = r#"
[registry]
mode = "enforce"
store = "sqlite:///proc/portcullis-bench-nowhere/registry.db"

[auth]
public_url = "http://127.0.0.1"

[auth.api_keys]

[listen]
address = "127.0.0.1:0"

[[upstream]]
name = "demo"
transport = "http"
url = "{{DEMO_URL}}"

[[route]]
path = "/mcp"
upstreams = ["demo"]
names = "passthrough"
"#;
    std::fs::write(&template, config).expect("write the template");
    let variant = format!("keyless={}", template.display());
    let out = dir.path().join("out");
    let run = bench(
        &[
            "--quick",
            "--only",
            "call_small",
            "--slice-ms",
            "50",
            "--rounds",
            "1",
            "--no-controls",
            "--variant",
            &variant,
        ],
        &out,
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "the run went on without a key:\n{stderr}");
    assert!(
        stderr.contains("apikey create failed") && stderr.contains("cannot open the key store"),
        "the reason is given:\n{stderr}"
    );
    assert!(!out.join("bench.json").exists(), "no report of a run that did not happen");
}
