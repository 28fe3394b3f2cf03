//! Reconstructing an interaction from the audit trail: `portcullis audit trace` and the admin
//! API's `/admin/v1/audit/trace/{correlation}` answer the incident questions from the records of one
//! correlation id, and from the records around it (which servers were connected, what the
//! principal was shown).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use portcullis_audit::{Kind, Record};
use portcullis_store::{AuditQuery, Store, StoreError};

use super::executed;
use serde_json::{Value, json};

/// At most this many records make up one trace report.
const MAX_RECORDS: u32 = 10_000;

/// One interaction, reconstructed.
#[derive(Debug, Clone)]
pub struct TraceReport {
    pub correlation: String,
    /// The interaction's own records, in time order.
    pub records: Vec<Record>,
    /// The last connection record of each server the interaction touched or could see, from
    /// before it ended.
    pub servers: Vec<Record>,
    /// The last list record of the principal before the interaction, when the interaction
    /// has none of its own.
    pub shown_before: Vec<Record>,
}

/// Gathers an interaction's records and their context.
pub async fn trace(store: &Store, correlation: &str) -> Result<TraceReport, StoreError> {
    let records = store
        .search_audit(&AuditQuery {
            correlation: Some(correlation.to_owned()),
            limit: MAX_RECORDS,
            ..Default::default()
        })
        .await?;
    let mut report =
        TraceReport { correlation: correlation.to_owned(), records, servers: Vec::new(), shown_before: Vec::new() };
    let (Some(first), Some(last)) = (report.records.first(), report.records.last()) else { return Ok(report) };
    let (start, end) = (first.entry.time_ms, last.entry.time_ms + 1);
    let connected = store
        .search_audit(&AuditQuery {
            kind: Some(Kind::UpstreamConnected.as_str().to_owned()),
            until_ms: Some(end),
            limit: 1_000,
            newest_first: true,
            ..Default::default()
        })
        .await?;
    let mut seen = BTreeSet::new();
    for r in connected {
        if seen.insert(r.entry.server.clone()) {
            report.servers.push(r);
        }
    }
    report.servers.sort_by(|a, b| a.entry.server.cmp(&b.entry.server));
    if !report.records.iter().any(|r| r.entry.kind == Kind::List.as_str()) {
        let principals: BTreeSet<&str> = report.records.iter().map(|r| r.entry.principal.as_str()).collect();
        for principal in principals.into_iter().filter(|p| !p.is_empty()) {
            let shown = store
                .search_audit(&AuditQuery {
                    kind: Some(Kind::List.as_str().to_owned()),
                    principal: Some(principal.to_owned()),
                    until_ms: Some(start + 1),
                    limit: 50,
                    newest_first: true,
                    ..Default::default()
                })
                .await?;
            // The last tool list this principal was shown.
            report.shown_before.extend(shown.into_iter().find(|r| body(r)["method"] == "tools/list"));
        }
    }
    Ok(report)
}

/// A record's body as JSON.
fn body(r: &Record) -> Value {
    serde_json::from_str(&r.entry.body).unwrap_or(Value::Null)
}

impl TraceReport {
    fn calls(&self) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(|r| r.entry.kind == Kind::Call.as_str())
    }

    /// The report as one JSON document, section by section.
    pub fn to_json(&self) -> Value {
        let index: BTreeMap<&str, usize> =
            self.calls().enumerate().map(|(i, r)| (r.entry.request.as_str(), i + 1)).collect();
        let principals: BTreeMap<&str, Value> = self
            .records
            .iter()
            .filter(|r| !r.entry.principal.is_empty())
            .map(|r| (r.entry.principal.as_str(), body(r).get("principal").cloned().unwrap_or(Value::Null)))
            .collect();
        let hosts: BTreeSet<String> = self
            .records
            .iter()
            .filter(|r| body(r).get("protocol").is_some_and(|p| !p.is_null()))
            .map(|r| {
                let b = body(r);
                json!({"client": b.get("client"), "protocol": b.get("protocol"), "route": b.get("route"), "session": b.get("session")})
                    .to_string()
            })
            .collect();
        let calls: Vec<Value> = self
            .calls()
            .map(|r| {
                let b = body(r);
                json!({
                    "n": index.get(r.entry.request.as_str()),
                    "time_ms": r.entry.time_ms,
                    "method": b.get("method"),
                    "name": b.get("name"),
                    "server": r.entry.server,
                    "item": r.entry.item,
                    "principal": r.entry.principal,
                    "outcome": r.entry.outcome,
                    "arguments": b.get("arguments"),
                    "decision": b.get("decision"),
                    "refusal": b.get("refusal"),
                    "approval": b.get("approval"),
                    "result": b.get("result"),
                    "annotations": b.get("annotations"),
                    "risk_tier": b.get("risk_tier"),
                    "latency_us": b.get("latency_us"),
                    "request": r.entry.request,
                    "parent": r.entry.parent,
                    "follows": index.get(r.entry.parent.as_str()),
                })
            })
            .collect();
        let visible: Vec<Value> = self
            .records
            .iter()
            .chain(&self.shown_before)
            .filter(|r| r.entry.kind == Kind::List.as_str())
            .map(|r| {
                let b = body(r);
                json!({"time_ms": r.entry.time_ms, "method": b.get("method"), "visible": b.get("visible"), "in_interaction": !self.shown_before.contains(r)})
            })
            .collect();
        let actions: Vec<Value> = self
            .calls()
            .filter(|r| executed(&r.entry.outcome))
            .filter(|r| body(r).pointer("/annotations/read_only") != Some(&Value::Bool(true)))
            .map(|r| json!({"n": index.get(r.entry.request.as_str()), "server": r.entry.server, "item": r.entry.item, "outcome": r.entry.outcome, "destructive": body(r).pointer("/annotations/destructive")}))
            .collect();
        let count = |pred: &dyn Fn(&Record) -> bool| self.calls().filter(|r| pred(r)).count();
        json!({
            "correlation": self.correlation,
            "records": self.records.len(),
            "from_ms": self.records.first().map(|r| r.entry.time_ms),
            "to_ms": self.records.last().map(|r| r.entry.time_ms),
            "initiated_by": principals,
            "hosts": hosts.iter().filter_map(|h| serde_json::from_str::<Value>(h).ok()).collect::<Vec<_>>(),
            "servers_connected": self.servers.iter().map(|r| json!({"server": r.entry.server, "since_ms": r.entry.time_ms, "info": body(r)})).collect::<Vec<_>>(),
            "tools_visible": visible,
            "summary": {
                "requested": count(&|_| true),
                "auto_approved": count(&|r| executed(&r.entry.outcome)),
                "denied": count(&|r| matches!(r.entry.outcome.as_str(), "denied" | "invalid" | "refused")),
                "approval_required": count(&|r| r.entry.outcome == "approval_required"),
                "failed": count(&|r| matches!(r.entry.outcome.as_str(), "failed" | "error")),
            },
            "calls": calls,
            "backing_actions": actions,
            "other_events": self.records.iter().filter(|r| r.entry.kind != Kind::Call.as_str() && r.entry.kind != Kind::List.as_str()).map(|r| json!({"time_ms": r.entry.time_ms, "kind": r.entry.kind, "outcome": r.entry.outcome})).collect::<Vec<_>>(),
        })
    }

    /// The report as text for a person, one section per incident question.
    pub fn render(&self) -> String {
        let j = self.to_json();
        let mut out = String::new();
        let _ = writeln!(out, "Interaction {}", self.correlation);
        if self.records.is_empty() {
            let _ = writeln!(out, "  no records carry this correlation id");
            return out;
        }
        let _ = writeln!(out, "  {} records, {} to {}", self.records.len(), time(&j["from_ms"]), time(&j["to_ms"]));
        let _ = writeln!(out, "\nWho initiated it");
        if let Some(map) = j["initiated_by"].as_object() {
            for (id, facts) in map {
                let _ = writeln!(out, "  {id} ({})", compact(facts));
            }
        }
        let _ = writeln!(out, "\nWhich host");
        for h in j["hosts"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  {}", compact(h));
        }
        let _ = writeln!(out, "\nWhich servers were connected");
        for s in j["servers_connected"].as_array().into_iter().flatten() {
            let _ =
                writeln!(out, "  {} (since {}): {}", str_of(&s["server"]), time(&s["since_ms"]), compact(&s["info"]));
        }
        let _ = writeln!(out, "\nWhich tools were visible");
        for v in j["tools_visible"].as_array().into_iter().flatten() {
            let when =
                if v["in_interaction"] == Value::Bool(true) { "in this interaction" } else { "last shown before it" };
            let _ = writeln!(
                out,
                "  {} at {} ({when}): {}",
                str_of(&v["method"]),
                time(&v["time_ms"]),
                compact(&v["visible"])
            );
        }
        let s = &j["summary"];
        let _ = writeln!(
            out,
            "\nCalls: {} requested, {} auto-approved and executed, {} denied, {} needing approval, {} failed",
            s["requested"], s["auto_approved"], s["denied"], s["approval_required"], s["failed"]
        );
        for c in j["calls"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  #{} {} {} {} -> {}/{} [{}]",
                c["n"],
                time(&c["time_ms"]),
                str_of(&c["method"]),
                str_of(&c["name"]),
                str_of(&c["server"]),
                str_of(&c["item"]),
                str_of(&c["outcome"]),
            );
            let _ = writeln!(out, "      by {} with arguments {}", str_of(&c["principal"]), compact(&c["arguments"]));
            if !c["decision"].is_null() {
                let d = &c["decision"];
                let _ = writeln!(
                    out,
                    "      policy: {} ({}) by {}",
                    str_of(&d["outcome"]),
                    str_of(&d["reason"]),
                    compact(&d["policies"])
                );
            }
            if !c["refusal"].is_null() {
                let r = &c["refusal"];
                let _ = writeln!(
                    out,
                    "      refused at {}: {} ({})",
                    str_of(&r["stage"]),
                    str_of(&r["reason"]),
                    str_of(&r["message"])
                );
            }
            if !c["result"].is_null() {
                let r = &c["result"];
                let _ = writeln!(
                    out,
                    "      result: {} ({} bytes) in {} µs",
                    str_of(&r["class"]),
                    r["bytes"],
                    c["latency_us"]
                );
            }
            if let Some(n) = c["follows"].as_u64() {
                let _ = writeln!(out, "      followed from call #{n}");
            } else if let Some(parent) = c["parent"].as_str().filter(|p| !p.is_empty()) {
                let _ = writeln!(out, "      caused by request {parent} (outside this trail)");
            }
        }
        let _ = writeln!(out, "\nWhich backing-system actions were taken (executed calls not marked read-only)");
        let actions = j["backing_actions"].as_array().cloned().unwrap_or_default();
        if actions.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for a in actions {
            let destructive = if a["destructive"] == Value::Bool(true) { ", destructive" } else { "" };
            let _ = writeln!(
                out,
                "  #{} {}/{} [{}{destructive}]",
                a["n"],
                str_of(&a["server"]),
                str_of(&a["item"]),
                str_of(&a["outcome"])
            );
        }
        out
    }
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => printable(s),
        Value::Null => "-".to_owned(),
        other => printable(&other.to_string()),
    }
}

fn compact(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        other => printable(&other.to_string()),
    }
}

/// Text chosen by hosts or upstreams, safe for a terminal: control characters escaped.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// A record time as RFC 3339 (UTC, milliseconds).
fn time(v: &Value) -> String {
    let Some(ms) = v.as_i64().and_then(|ms| u64::try_from(ms).ok()) else { return "-".to_owned() };
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}
