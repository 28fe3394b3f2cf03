//! OpenTelemetry export over OTLP/HTTP, off the request path: a span for each governed call
//! (in the host's trace, with the host's span as parent and the gateway's span id, the one it
//! passes upstream in `_meta.traceparent`), a child span for each pipeline stage and for the
//! upstream call; and each committed audit record as a log record in the same trace.
//!
//! Spans and logs are batched by the SDK on a thread of their own; a request only hands its
//! span over.

use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{LogExporter, Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{SdkLogger, SdkLoggerProvider};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use portcullis_audit::Record;

use crate::audit::call::CallTrail;

/// `[telemetry]`, validated.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// The OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318` (`/v1/traces` and `/v1/logs` are added).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Export a span per governed call.
    pub traces: bool,
    /// Export each committed audit record as a log record.
    pub audit_logs: bool,
    pub service_name: String,
}

/// The OTLP/HTTP encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Protobuf,
    Json,
}

/// The exporters.
pub struct Telemetry {
    settings: TelemetrySettings,
    tracing: Option<(SdkTracerProvider, SdkTracer)>,
    logging: Option<(SdkLoggerProvider, SdkLogger)>,
}

/// What a call's span says.
pub struct CallSpan<'a> {
    pub method: &'a str,
    pub trail: &'a CallTrail,
    pub principal: &'a str,
    pub outcome: &'a str,
    pub reason: Option<&'a str>,
    pub error_code: Option<i32>,
}

impl Telemetry {
    /// Builds the exporters (their HTTP clients are made off the async runtime).
    pub async fn start(settings: TelemetrySettings) -> Result<Arc<Telemetry>, String> {
        let s = settings.clone();
        let built = tokio::task::spawn_blocking(move || build(&s)).await.map_err(|e| format!("telemetry: {e}"))??;
        let (tracing, logging) = built;
        Ok(Arc::new(Telemetry { settings, tracing, logging }))
    }

    /// Whether call spans are exported.
    pub fn traces(&self) -> bool {
        self.tracing.is_some()
    }

    /// Hands a governed call's spans to the exporter.
    pub fn call_span(&self, c: &CallSpan<'_>) {
        let Some((_, tracer)) = &self.tracing else { return };
        let t = c.trail;
        // The host's sampling decision holds: a trace it does not sample is not exported.
        if !t.trace.parent_id.is_empty() && u8::from_str_radix(&t.trace.flags, 16).is_ok_and(|f| f & 1 == 0) {
            return;
        }
        let (Some(trace_id), Some(span_id)) = (hex_trace(&t.trace.trace_id), hex_span(&t.span)) else { return };
        let parent = match hex_span(&t.trace.parent_id) {
            Some(parent) => Context::new().with_remote_span_context(SpanContext::new(
                trace_id,
                parent,
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        let target = if t.server.is_empty() { String::new() } else { format!(" {}/{}", t.server, t.item) };
        let mut attributes = vec![
            KeyValue::new("mcp.method.name", c.method.to_owned()),
            KeyValue::new("portcullis.outcome", c.outcome.to_owned()),
            KeyValue::new("enduser.id", c.principal.to_owned()),
        ];
        if !t.server.is_empty() {
            attributes.push(KeyValue::new("portcullis.server", t.server.clone()));
            attributes.push(KeyValue::new("gen_ai.tool.name", t.item.clone()));
        }
        if let Some(tier) = t.tier {
            attributes.push(KeyValue::new("portcullis.risk_tier", tier.as_str()));
        }
        if let Some(reason) = c.reason {
            attributes.push(KeyValue::new("portcullis.reason", reason.to_owned()));
        }
        if let Some(code) = c.error_code {
            attributes.push(KeyValue::new("rpc.jsonrpc.error_code", i64::from(code)));
        }
        let mut span = tracer
            .span_builder(format!("{}{target}", c.method))
            .with_kind(SpanKind::Server)
            .with_trace_id(trace_id)
            .with_span_id(span_id)
            .with_start_time(t.started_at)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        if c.error_code.is_some() || c.outcome == "tool_error" {
            span.set_status(Status::error(c.outcome.to_owned()));
        }
        let cx = Context::new().with_span(span);
        for stage in &t.stages {
            let mut child = tracer
                .span_builder(format!("pipeline.{}", stage.stage))
                .with_kind(SpanKind::Internal)
                .with_start_time(stage.start)
                .with_attributes(vec![
                    KeyValue::new("portcullis.stage", stage.stage),
                    KeyValue::new("portcullis.verdict", stage.verdict),
                ])
                .start_with_context(tracer, &cx);
            child.end_with_timestamp(stage.end);
        }
        if let Some((start, end)) = t.upstream_call {
            let mut child = tracer
                .span_builder(format!("upstream {}", t.server))
                .with_kind(SpanKind::Client)
                .with_start_time(start)
                .with_attributes(vec![KeyValue::new("portcullis.server", t.server.clone())])
                .start_with_context(tracer, &cx);
            child.end_with_timestamp(end);
        }
        cx.span().end_with_timestamp(SystemTime::now());
    }

    /// Hands committed audit records to the log exporter, each in its call's trace.
    pub fn audit_logs(&self, records: &[Record]) {
        let Some((_, logger)) = &self.logging else { return };
        for r in records {
            let mut log = logger.create_log_record();
            let time = std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(u64::try_from(r.entry.time_ms).unwrap_or_default());
            log.set_timestamp(time);
            log.set_observed_timestamp(SystemTime::now());
            log.set_severity_number(Severity::Info);
            log.set_severity_text("INFO");
            log.set_event_name("portcullis.audit");
            log.set_body(AnyValue::from(crate::audit::record_json(r).to_string()));
            log.add_attributes([
                ("audit.kind", r.entry.kind.clone()),
                ("audit.stream", r.stream.clone()),
                ("audit.outcome", r.entry.outcome.clone()),
                ("audit.hash", r.hash.clone()),
                ("enduser.id", r.entry.principal.clone()),
            ]);
            log.add_attribute("audit.seq", r.seq);
            if let (Some(trace), Some(span)) = (hex_trace(&r.entry.correlation), hex_span(&r.entry.request)) {
                log.set_trace_context(trace, span, Some(TraceFlags::SAMPLED));
            }
            logger.emit(log);
        }
    }

    /// Flushes and stops the exporters.
    pub async fn shutdown(&self) {
        let spans = self.tracing.as_ref().map(|(p, _)| p.clone());
        let logs = self.logging.as_ref().map(|(p, _)| p.clone());
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(p) = spans
                && let Err(e) = p.shutdown()
            {
                tracing::warn!(error = %e, "OTLP span export did not flush");
            }
            if let Some(p) = logs
                && let Err(e) = p.shutdown()
            {
                tracing::warn!(error = %e, "OTLP log export did not flush");
            }
        })
        .await;
    }

    /// The settings in force.
    pub fn settings(&self) -> &TelemetrySettings {
        &self.settings
    }
}

type Built = (Option<(SdkTracerProvider, SdkTracer)>, Option<(SdkLoggerProvider, SdkLogger)>);

fn build(s: &TelemetrySettings) -> Result<Built, String> {
    let protocol = match s.protocol {
        OtlpProtocol::Protobuf => Protocol::HttpBinary,
        OtlpProtocol::Json => Protocol::HttpJson,
    };
    let base = s.endpoint.trim_end_matches('/');
    let resource = Resource::builder().with_service_name(s.service_name.clone()).build();
    let tracing = if s.traces {
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(format!("{base}/v1/traces"))
            .build()
            .map_err(|e| format!("telemetry: span exporter: {e}"))?;
        let provider =
            SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.clone()).build();
        let tracer = provider.tracer("portcullis");
        Some((provider, tracer))
    } else {
        None
    };
    let logging = if s.audit_logs {
        let exporter = LogExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(format!("{base}/v1/logs"))
            .build()
            .map_err(|e| format!("telemetry: log exporter: {e}"))?;
        let provider = SdkLoggerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
        let logger = provider.logger("portcullis.audit");
        Some((provider, logger))
    } else {
        None
    };
    Ok((tracing, logging))
}

fn hex_trace(id: &str) -> Option<TraceId> {
    TraceId::from_hex(id).ok().filter(|t| *t != TraceId::INVALID)
}

fn hex_span(id: &str) -> Option<SpanId> {
    if id.is_empty() {
        return None;
    }
    SpanId::from_hex(id).ok().filter(|s| *s != SpanId::INVALID)
}
