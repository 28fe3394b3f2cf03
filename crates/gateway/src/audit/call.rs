//! What the record of a governed call says of its arguments: secret fields redacted, large
//! values summarized.

use std::time::Instant;

use portcullis_registry::model::RiskTier;
use portcullis_wire::object::{members, string, with_member};
use portcullis_wire::{RawObject, meta};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::trace::{TraceContext, span_id};

/// What a governed request's record needs, gathered as the request travels the pipeline.
pub struct CallTrail {
    pub started: Instant,
    pub time_ms: i64,
    pub trace: TraceContext,
    /// The gateway's id for this request (its span), which it passes on as the parent.
    pub span: String,
    /// The name the host used (tool or prompt name, resource URI).
    pub name: String,
    /// The upstream server and its own name for the item, once routed.
    pub server: String,
    pub item: String,
    pub tier: Option<RiskTier>,
    /// The arguments as recorded.
    pub arguments: Option<Value>,
    /// The policy's decision (recorded as `decision_facts` writes it).
    pub decision: Option<portcullis_policy::Decision>,
    /// A modern host's `clientInfo` from `_meta`.
    pub client: Option<Value>,
    /// The registry entry governing the server (name@version), and the version the server
    /// itself reported.
    pub registry_entry: Option<String>,
    pub server_version: Option<String>,
    /// The upstream the call went to, for what the record says of it.
    pub upstream: Option<std::sync::Arc<crate::route::Upstream>>,
    /// The registry's data class for the server.
    pub data_class: Option<portcullis_registry::model::DataClass>,
    /// Whether the upstream listed the tool (so its name may label metrics).
    pub listed: bool,
    /// When traced: the pipeline's stages, and the upstream call's start and end.
    pub stages: Vec<crate::pipeline::StageTiming>,
    pub upstream_call: Option<(std::time::SystemTime, std::time::SystemTime)>,
    /// When the request arrived (for its span).
    pub started_at: std::time::SystemTime,
    /// Whether the request was sent to the upstream.
    pub forwarded: bool,
    /// The tool's `readOnlyHint` and `destructiveHint`, as listed.
    pub read_only: Option<bool>,
    pub destructive: Option<bool>,
}

impl CallTrail {
    /// Starts the trail of a request in a trace (the host's, its session's, or a new one).
    pub fn start(trace: TraceContext) -> CallTrail {
        CallTrail {
            started: Instant::now(),
            time_ms: super::now_ms(),
            trace,
            span: span_id(),
            name: String::new(),
            server: String::new(),
            item: String::new(),
            tier: None,
            arguments: None,
            decision: None,
            client: None,
            registry_entry: None,
            server_version: None,
            upstream: None,
            data_class: None,
            listed: false,
            stages: Vec::new(),
            upstream_call: None,
            started_at: std::time::SystemTime::now(),
            forwarded: false,
            read_only: None,
            destructive: None,
        }
    }

    /// Takes the trace named in the request's `_meta` (it wins over the header), and the
    /// client when it is to be recorded.
    pub fn adopt_meta(&mut self, params: &RawObject, client: bool) {
        // One borrowed scan of `_meta` (no map of it built).
        let Some([traceparent, client_info]) =
            params.get("_meta").and_then(|m| members(m, [meta::TRACEPARENT, meta::CLIENT_INFO]))
        else {
            return;
        };
        if let Some(t) = string(traceparent).as_deref().and_then(TraceContext::parse) {
            self.trace = t;
        }
        if client && let Some(client) = client_info {
            self.client = serde_json::from_str(client.get()).ok();
        }
    }

    /// The `traceparent` to send upstream: this trace, with the gateway's span as parent.
    pub fn traceparent(&self) -> String {
        self.trace.child_header(&self.span)
    }
}

/// Puts a `traceparent` into a request's `_meta` (a `_meta` that is not an object is replaced by
/// one holding it alone).
pub fn set_traceparent(params: &mut RawObject, traceparent: &str) {
    let Ok(value) = serde_json::value::to_raw_value(traceparent) else { return };
    let meta = params
        .get("_meta")
        .and_then(|m| with_member(m.get(), meta::TRACEPARENT, &value))
        .or_else(|| with_member("{}", meta::TRACEPARENT, &value));
    if let Some(meta) = meta {
        params.insert_raw("_meta", meta);
    }
}

/// The arguments (as the host sent them) as recorded: with fields whose names look secret
/// replaced by `"[redacted]"`, or, when larger than `max_bytes`, their size and digest.
pub fn recorded_arguments(text: &str, redact: &[String], max_bytes: usize) -> Value {
    let parsed = (text.len() <= max_bytes).then(|| serde_json::from_str::<Value>(text).ok()).flatten();
    let Some(mut value) = parsed else {
        return serde_json::json!({
            "omitted": if text.len() > max_bytes { "too_large" } else { "unreadable" },
            "bytes": text.len(),
            "sha256": hex::encode(Sha256::digest(text.as_bytes())),
        });
    };
    redact_fields(&mut value, redact);
    value
}

/// A field name or pattern as compared: lowercase letters and digits only (`privateKey`,
/// `private-key` and `PRIVATE_KEY` all read `privatekey`).
pub fn normalized(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
}

/// Whether a field name looks secret by the (normalized) patterns.
pub fn is_secret_name(name: &str, redact: &[String]) -> bool {
    let name = normalized(name);
    redact.iter().any(|r| !r.is_empty() && name.contains(r.as_str()))
}

/// A name as recorded: a resource URI without its user info, query and fragment (where
/// credentials and signatures travel); other names as they are.
pub fn recorded_name(name: &str) -> String {
    let cut = name.find(['?', '#']).map_or(name, |i| &name[..i]);
    match cut.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            if path.is_empty() && !rest.contains('/') {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{host}/{path}")
            }
        }
        None => cut.to_owned(),
    }
}

fn redact_fields(value: &mut Value, redact: &[String]) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_secret_name(key, redact) {
                    *v = Value::String("[redacted]".to_owned());
                } else {
                    redact_fields(v, redact);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_fields(v, redact)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_traceparent_goes_into_meta_as_the_map_rewrite_put_it() {
        // The rewrite through a map of owned keys and values, as it was done before `with_member`.
        let by_map = |params: &str, traceparent: &str| {
            let Some(mut p) = RawObject::parse_str(params) else { panic!("an object: {params}") };
            let mut m = p.get_object("_meta").unwrap_or_default();
            m.insert_str(meta::TRACEPARENT, traceparent);
            p.insert_object("_meta", &m);
            p.to_raw().get().to_owned()
        };
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for params in [
            r#"{"name":"echo","arguments":{"text":"hi"}}"#,
            r#"{"name":"echo","_meta":{}}"#,
            r#"{"name":"echo","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","progressToken":7}}"#,
            // An existing traceparent is replaced in its place; a repeated key once, in its first.
            r#"{"_meta":{"a":1,"traceparent":"00-old","b":[1, 2],"traceparent":"00-older","a":{"x" : "y"}},"name":"t"}"#,
            // Escaped keys come out as serde_json writes them.
            r#"{"_meta":{"k\u0065y":"\u00fc","quote\"d":null,"tab\t":1}}"#,
            // A _meta that is not an object is replaced.
            r#"{"name":"echo","_meta":null}"#,
            r#"{"name":"echo","_meta":"text"}"#,
        ] {
            let Some(mut p) = RawObject::parse_str(params) else { panic!("an object: {params}") };
            set_traceparent(&mut p, tp);
            assert_eq!(p.to_raw().get(), by_map(params, tp), "{params}");
            let back: Value = serde_json::from_str(p.to_raw().get()).unwrap_or(Value::Null);
            assert_eq!(back["_meta"]["traceparent"], tp, "{params}");
        }
    }

    #[test]
    fn the_trace_and_client_in_meta_are_adopted_the_last_duplicate_winning() {
        let header = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let Some(header) = header else { panic!("a valid traceparent") };
        let adopt = |params: &str, client: bool| {
            let Some(p) = RawObject::parse_str(params) else { panic!("an object: {params}") };
            let mut trail = CallTrail::start(header.clone());
            trail.adopt_meta(&p, client);
            (trail.trace.trace_id, trail.client)
        };
        let meta = r#"{"_meta":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "io.modelcontextprotocol/clientInfo":{"name":"a"},
            "traceparent":"00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}"#;
        assert_eq!(adopt(meta, true), ("1af7651916cd43dd8448eb211c80319c".to_owned(), Some(json!({"name": "a"}))));
        assert_eq!(adopt(meta, false).1, None, "the client only when it is recorded");
        // No _meta, a _meta that is not an object, an unreadable traceparent: the header's trace stays.
        for params in [
            r#"{}"#,
            r#"{"_meta":[1]}"#,
            r#"{"_meta":{"traceparent":"00-zz-b7ad6b7169203331-01"}}"#,
            r#"{"_meta":{"traceparent":7}}"#,
        ] {
            assert_eq!(adopt(params, true), (header.trace_id.clone(), None), "{params}");
        }
    }

    #[test]
    fn redacts_secret_looking_fields_at_any_depth() {
        let redact: Vec<String> = ["password", "api_key", "token", "private_key"].map(normalized).to_vec();
        let args = json!({
            "user": "alice",
            "Password": "hunter2",
            "nested": {"x-api-key": "k", "list": [{"accessToken": "t", "keep": 1}]},
            "privateKey": "pk",
        });
        assert_eq!(
            recorded_arguments(&args.to_string(), &redact, 10_000),
            json!({
                "user": "alice",
                "Password": "[redacted]",
                "nested": {"x-api-key": "[redacted]", "list": [{"accessToken": "[redacted]", "keep": 1}]},
                "privateKey": "[redacted]",
            })
        );
    }

    #[test]
    fn recorded_uris_lose_user_info_query_and_fragment() {
        assert_eq!(recorded_name("https://u:p@files.example/a/b?sig=secret#x"), "https://files.example/a/b");
        assert_eq!(recorded_name("demo://tickets/T-1"), "demo://tickets/T-1");
        assert_eq!(recorded_name("s3://bucket"), "s3://bucket");
        assert_eq!(recorded_name("echo"), "echo");
    }

    #[test]
    fn summarizes_arguments_beyond_the_limit() {
        let args = json!({"blob": "x".repeat(100)});
        let recorded = recorded_arguments(&args.to_string(), &[], 50);
        assert_eq!(recorded["omitted"], "too_large");
        assert_eq!(recorded["bytes"], args.to_string().len());
        assert_eq!(recorded["sha256"].as_str().map(str::len), Some(64));
    }
}
