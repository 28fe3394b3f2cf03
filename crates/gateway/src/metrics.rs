//! Prometheus metrics (text format at `/metrics`): governed calls by server, tool, principal
//! and outcome, denials by stage and reason, approvals, errors, latency and result-size
//! histograms by server and tool, timeouts, sensitive results, write actions, cross-tool
//! workflows, and upstream availability.
//!
//! Label cardinality is bounded: servers come from the configuration; a tool is named only once
//! its upstream listed it (else `other`); principals are labelled by kind unless
//! `[metrics] principal_labels` is on, and then only the first `max_principals` distinct ids
//! get a label of their own (the rest are `other`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use indexmap::{Equivalent, IndexMap};
use portcullis_identity::Principal;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `[metrics]`, validated.
#[derive(Debug, Clone, Default)]
pub struct MetricsSettings {
    /// A listener of its own for `/metrics` (it is also served on the admin listener).
    pub address: Option<std::net::SocketAddr>,
    /// Label calls with principal ids (bounded by `max_principals`) rather than principal kinds.
    pub principal_labels: bool,
    pub max_principals: usize,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    server: String,
    tool: String,
    principal: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ItemLabels {
    server: String,
    tool: String,
}

/// A call's labels, borrowed: hashes as [`CallLabels`] does (derived `Hash` of the same strings in
/// the same order), so a known label set is found without building one.
#[derive(Hash)]
struct CallKey<'a> {
    method: &'a str,
    server: &'a str,
    tool: &'a str,
    principal: &'a str,
    outcome: &'a str,
}

impl Equivalent<CallLabels> for CallKey<'_> {
    fn equivalent(&self, key: &CallLabels) -> bool {
        self.method == key.method
            && self.server == key.server
            && self.tool == key.tool
            && self.principal == key.principal
            && self.outcome == key.outcome
    }
}

impl CallKey<'_> {
    fn owned(&self) -> CallLabels {
        CallLabels {
            method: self.method.to_owned(),
            server: self.server.to_owned(),
            tool: self.tool.to_owned(),
            principal: self.principal.to_owned(),
            outcome: self.outcome.to_owned(),
        }
    }
}

/// A server and tool, borrowed: hashes as [`ItemLabels`] does.
#[derive(Hash)]
struct ItemKey<'a> {
    server: &'a str,
    tool: &'a str,
}

impl Equivalent<ItemLabels> for ItemKey<'_> {
    fn equivalent(&self, key: &ItemLabels) -> bool {
        self.server == key.server && self.tool == key.tool
    }
}

/// One server and tool's series, taken from their families once (a handle shares its series).
/// Those only some calls count are taken when the first such call comes, so a family shows a
/// series only once something was counted in it.
struct ItemSeries {
    labels: ItemLabels,
    latency: Histogram,
    result_bytes: OnceLock<Histogram>,
    sensitive: OnceLock<Counter>,
    writes: OnceLock<Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    stage: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    blame: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApprovalLabels {
    state: String,
}

type HistogramFamily = Family<ItemLabels, Histogram, fn() -> Histogram>;

/// What the metrics need of one governed call.
pub struct CallFacts<'a> {
    pub method: &'a str,
    /// The upstream ("" when the request was not routed).
    pub server: &'a str,
    /// The tool, when its upstream listed it.
    pub tool: Option<&'a str>,
    pub principal: &'a Principal,
    pub outcome: &'a str,
    pub latency: Duration,
    pub result_bytes: usize,
    /// Whether the upstream executed the call.
    pub executed: bool,
    pub read_only: Option<bool>,
    /// The registry's data class for the server is confidential or restricted.
    pub sensitive: bool,
    /// The gateway's span for the call, and the span the host named as its cause.
    pub span: &'a str,
    pub parent: &'a str,
    pub denial: Option<(&'a str, &'a str)>,
    pub error: Option<(&'a str, &'a str)>,
    pub timeout: bool,
}

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    settings: MetricsSettings,
    calls: Family<CallLabels, Counter>,
    denials: Family<DenialLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    approvals: Family<ApprovalLabels, Counter>,
    latency: HistogramFamily,
    result_bytes: HistogramFamily,
    timeouts: Family<ServerLabels, Counter>,
    sensitive: Family<ItemLabels, Counter>,
    writes: Family<ItemLabels, Counter>,
    workflows: Counter,
    upstream_up: Family<ServerLabels, Gauge>,
    principals: Mutex<HashSet<String>>,
    /// The series a call has counted before, found again by borrowed labels: a call in the steady
    /// state builds no label set (their number is bounded as the families' is).
    call_series: RwLock<IndexMap<CallLabels, Counter>>,
    item_series: RwLock<IndexMap<ItemLabels, Arc<ItemSeries>>>,
    /// Recent calls' spans (16 hex digits, as a number) and their server and tool's series, to see
    /// a call follow from another tool's result.
    recent: Mutex<HashMap<u64, Arc<ItemSeries>>>,
}

/// How many recent spans are remembered for workflow detection.
const RECENT_SPANS: usize = 4096;

fn latency_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

fn size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(256.0, 4.0, 10))
}

impl Metrics {
    /// Registers every metric.
    pub fn new(settings: MetricsSettings) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("portcullis");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register("calls", "Governed requests by method, server, tool, principal and outcome", calls.clone());
        let denials = Family::<DenialLabels, Counter>::default();
        registry.register("denials", "Refused requests by pipeline stage and reason", denials.clone());
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register("errors", "Failed requests by whose fault and reason", errors.clone());
        let approvals = Family::<ApprovalLabels, Counter>::default();
        registry.register("approvals", "Calls that needed a human's approval, by state", approvals.clone());
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register("call_duration_seconds", "Governed request latency through the gateway", latency.clone());
        let result_bytes: HistogramFamily = Family::new_with_constructor(size_histogram);
        registry.register("result_bytes", "Size of results returned to hosts", result_bytes.clone());
        let timeouts = Family::<ServerLabels, Counter>::default();
        registry.register("upstream_timeouts", "Calls an upstream did not answer in time", timeouts.clone());
        let sensitive = Family::<ItemLabels, Counter>::default();
        registry.register(
            "sensitive_results",
            "Results from servers whose data is confidential or restricted",
            sensitive.clone(),
        );
        let writes = Family::<ItemLabels, Counter>::default();
        registry.register("write_actions", "Executed calls of tools not marked read-only", writes.clone());
        let workflows = Counter::default();
        registry.register(
            "cross_tool_workflows",
            "Calls that follow from another tool's result (the host named that call as parent)",
            workflows.clone(),
        );
        let upstream_up = Family::<ServerLabels, Gauge>::default();
        registry.register("upstream_up", "Whether the gateway reaches an upstream (1) or not (0)", upstream_up.clone());
        Arc::new(Metrics {
            registry,
            settings,
            calls,
            denials,
            errors,
            approvals,
            latency,
            result_bytes,
            timeouts,
            sensitive,
            writes,
            workflows,
            upstream_up,
            principals: Mutex::new(HashSet::new()),
            call_series: RwLock::new(IndexMap::new()),
            item_series: RwLock::new(IndexMap::new()),
            recent: Mutex::new(HashMap::new()),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &MetricsSettings {
        &self.settings
    }

    /// Counts one governed request.
    pub fn call(&self, f: &CallFacts<'_>) {
        let server = if f.server.is_empty() { "unrouted" } else { f.server };
        let tool = f.tool.unwrap_or("other");
        let principal = self.principal_label(f.principal);
        self.call_counter(&CallKey { method: f.method, server, tool, principal, outcome: f.outcome }).inc();
        let item = self.item(&ItemKey { server, tool });
        item.latency.observe(f.latency.as_secs_f64());
        if let Some((stage, reason)) = f.denial {
            self.denials.get_or_create(&DenialLabels { stage: stage.to_owned(), reason: reason.to_owned() }).inc();
        }
        if let Some((blame, reason)) = f.error {
            self.errors.get_or_create(&ErrorLabels { blame: blame.to_owned(), reason: reason.to_owned() }).inc();
        }
        if f.outcome == "approval_required" {
            self.approvals.get_or_create(&ApprovalLabels { state: "required".to_owned() }).inc();
        }
        if f.timeout {
            self.timeouts.get_or_create(&ServerLabels { server: server.to_owned() }).inc();
        }
        if f.executed {
            let labels = &item.labels;
            item.result_bytes
                .get_or_init(|| self.result_bytes.get_or_create(labels).clone())
                .observe(f.result_bytes as f64);
            if f.sensitive {
                item.sensitive.get_or_init(|| self.sensitive.get_or_create(labels).clone()).inc();
            }
            if f.read_only != Some(true) && f.method == "tools/call" {
                item.writes.get_or_init(|| self.writes.get_or_create(labels).clone()).inc();
            }
        }
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        // One series per server and tool for the process's life (`item_series` never lets one
        // go), so the same series is the same tool.
        if let Some(parent) = span_number(f.parent)
            && recent.get(&parent).is_some_and(|before| !Arc::ptr_eq(before, &item))
        {
            self.workflows.inc();
        }
        if f.executed
            && let Some(span) = span_number(f.span)
        {
            if recent.len() >= RECENT_SPANS {
                recent.clear();
            }
            recent.insert(span, item);
        }
    }

    /// The call counter of these labels (created, in its family too, the first time).
    fn call_counter(&self, key: &CallKey<'_>) -> Counter {
        if let Some(counter) = self.call_series.read().unwrap_or_else(PoisonError::into_inner).get(key) {
            return counter.clone();
        }
        let labels = key.owned();
        let counter = self.calls.get_or_create(&labels).clone();
        self.call_series.write().unwrap_or_else(PoisonError::into_inner).insert(labels, counter.clone());
        counter
    }

    /// A server and tool's series (created, in their families too, the first time).
    fn item(&self, key: &ItemKey<'_>) -> Arc<ItemSeries> {
        if let Some(series) = self.item_series.read().unwrap_or_else(PoisonError::into_inner).get(key) {
            return Arc::clone(series);
        }
        let labels = ItemLabels { server: key.server.to_owned(), tool: key.tool.to_owned() };
        let series = Arc::new(ItemSeries {
            latency: self.latency.get_or_create(&labels).clone(),
            result_bytes: OnceLock::new(),
            sensitive: OnceLock::new(),
            writes: OnceLock::new(),
            labels: labels.clone(),
        });
        // Two first calls may race here: the first series stored is the one kept (both share the
        // families' series anyway).
        let mut known = self.item_series.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(known.entry(labels).or_insert(series))
    }

    /// Sets whether an upstream is reachable.
    pub fn upstream(&self, server: &str, up: bool) {
        self.upstream_up.get_or_create(&ServerLabels { server: server.to_owned() }).set(i64::from(up));
    }

    fn principal_label<'a>(&self, p: &'a Principal) -> &'a str {
        if !self.settings.principal_labels {
            return p.kind.as_str();
        }
        let mut known = self.principals.lock().unwrap_or_else(PoisonError::into_inner);
        if known.contains(&p.id) {
            return &p.id;
        }
        if known.len() < self.settings.max_principals {
            known.insert(p.id.clone());
            return &p.id;
        }
        "other"
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }

    /// A router serving `GET /metrics`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new().route("/metrics", get(scrape)).with_state(Arc::clone(self))
    }
}

/// A span id (W3C: 16 lowercase hex digits) as a number, one to one; `None` for anything else
/// (not tracked).
fn span_number(span: &str) -> Option<u64> {
    if span.len() != 16 || !span.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    u64::from_str_radix(span, 16).ok()
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(p: &'a Principal, tool: &'a str, span: &'a str, parent: &'a str) -> CallFacts<'a> {
        CallFacts {
            method: "tools/call",
            server: "demo",
            tool: Some(tool),
            principal: p,
            outcome: "ok",
            latency: Duration::from_millis(3),
            result_bytes: 100,
            executed: true,
            read_only: Some(tool == "read"),
            sensitive: false,
            span,
            parent,
            denial: None,
            error: None,
            timeout: false,
        }
    }

    #[test]
    fn counts_calls_writes_and_workflows_with_bounded_principals() {
        let m = Metrics::new(MetricsSettings { address: None, principal_labels: true, max_principals: 1 });
        let (alice, bob) = (Principal::local("alice", vec![]), Principal::local("bob", vec![]));
        m.call(&facts(&alice, "read", "00000000000000a1", ""));
        m.call(&facts(&bob, "write", "00000000000000b1", "00000000000000a1"));
        m.call(&facts(&bob, "write", "00000000000000b2", "00000000000000b1"));
        let text = m.encode();
        assert!(text.contains(r#"portcullis_calls_total{method="tools/call",server="demo",tool="read",principal="alice",outcome="ok"} 1"#), "{text}");
        assert!(text.contains(r#"principal="other",outcome="ok"} 2"#), "bob is over the limit: {text}");
        assert!(text.contains(r#"portcullis_write_actions_total{server="demo",tool="write"} 2"#), "{text}");
        assert!(
            text.contains("portcullis_cross_tool_workflows_total 1"),
            "write after read, not write after write: {text}"
        );
        assert!(text.contains("portcullis_call_duration_seconds_bucket"), "{text}");
    }

    #[test]
    fn a_known_label_set_counts_on_the_same_series_and_only_span_ids_link_calls() {
        let m = Metrics::new(MetricsSettings { address: None, principal_labels: false, max_principals: 0 });
        let alice = Principal::local("alice", vec![]);
        for span in ["00f067aa0ba902b7", "00f067aa0ba902b8", "00f067aa0ba902b9"] {
            m.call(&facts(&alice, "read", span, ""));
        }
        // Another tool named as the parent's follower: a workflow; then parents that are not span ids.
        m.call(&facts(&alice, "write", "00f067aa0ba902c0", "00f067aa0ba902b9"));
        m.call(&facts(&alice, "write", "00f067aa0ba902c1", "not a span"));
        m.call(&facts(&alice, "write", "00f067aa0ba902c2", "100f067aa0ba902b9"));
        m.call(&facts(&alice, "write", "00f067aa0ba902c3", "00F067AA0BA902B9"));
        m.call(&facts(&alice, "write", "00f067aa0ba902c4", "b9"));
        let text = m.encode();
        assert!(
            text.contains(r#"portcullis_calls_total{method="tools/call",server="demo",tool="read",principal="local",outcome="ok"} 3"#),
            "one series, labelled by kind: {text}"
        );
        assert!(text.contains(r#"portcullis_call_duration_seconds_count{server="demo",tool="read"} 3"#), "{text}");
        assert!(text.contains(r#"portcullis_result_bytes_sum{server="demo",tool="write"} 500.0"#), "{text}");
        assert!(text.contains(r#"portcullis_write_actions_total{server="demo",tool="write"} 5"#), "{text}");
        assert!(text.contains("portcullis_cross_tool_workflows_total 1"), "{text}");
        assert_eq!(text.matches("portcullis_calls_total{").count(), 2, "{text}");
        // Nothing counted, no series: reads wrote nothing, and no result was sensitive.
        assert!(!text.contains(r#"portcullis_write_actions_total{server="demo",tool="read"}"#), "{text}");
        assert!(!text.contains("portcullis_sensitive_results_total{"), "{text}");
    }
}
