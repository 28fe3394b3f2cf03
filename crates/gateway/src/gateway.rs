//! The host-facing MCP server: answers lifecycle methods itself, aggregates
//! list methods across a route's upstreams, and sends named requests down the
//! pipeline to one upstream, relaying what comes back in the host's era.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use portcullis_transport::client::{ClientInfo, RequestOptions, UpstreamInfo};
use portcullis_transport::http::{HttpConfig, HttpLink};
use portcullis_transport::legacy_sse::LegacySseLink;
use portcullis_transport::stdio::{StdioConfig, StdioLink};
use portcullis_transport::{Link, LinkEvent, UpstreamClient, UpstreamError};
use portcullis_wire::envelope::{Outcome, error_bytes, error_raw_bytes, request_bytes, result_bytes};
use portcullis_wire::object::{empty_object, raw};
use portcullis_wire::param_header::{self, ParamHeader};
use portcullis_wire::{Era, ErrorCode, Message, MessageKind, ProtocolVersion, RawObject, RequestId, RpcError, meta};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::audit::call::{CallTrail, recorded_arguments, set_traceparent};
use crate::audit::trace::{TraceContext, span_id};
use crate::audit::{Auditor, now_ms};
use crate::config::PolicyMode;
use crate::config::{Config, HeaderSource, UpstreamCredentials, UpstreamTransport};
use crate::error::Denied;
use crate::error::GatewayError;
use crate::exchange::TokenExchange;
use crate::metrics::{CallFacts, Metrics};
use crate::parked::{Binding, BindingRef, CallFuture, Parked, ParkedCalls, Question, STATE_PREFIX, capability_for};
use crate::pipeline::{CallContext, Controls, Governed, Pipeline, Stop};
use crate::policy::PolicyControl;
use crate::registry::{Mode, Registry};
use crate::route::{Cursor, ListKind, Route, RouteEvent, Target, ToolFacts, Upstream};
use crate::secret::Secret;
use crate::session::Session;
use crate::telemetry::Telemetry;
use crate::validation::{Refusal, SchemaCache};
use portcullis_audit::{Entry, Kind};
use portcullis_identity::Principal;
use portcullis_policy::ApprovalState;
use portcullis_registry::pinning::ItemKind;

/// Who is asking: the route, the host's era, and its session or per-request capabilities.
#[derive(Clone)]
pub struct Host {
    pub route: Arc<Route>,
    pub version: ProtocolVersion,
    /// Legacy hosts over HTTP have one; stdio legacy hosts have one too (the process is the session).
    pub session: Option<Arc<Session>>,
    /// A modern host's `clientCapabilities` for this request.
    pub capabilities: Option<Box<RawValue>>,
    /// Who the host authenticated as.
    pub principal: Arc<Principal>,
    /// The host's access token, kept only to exchange it for a user's upstream credential
    /// (RFC 8693); never forwarded, logged or recorded.
    pub credential: Option<Arc<Secret>>,
    /// The W3C `traceparent` of the HTTP request, when the host sent one.
    pub trace: Option<TraceContext>,
}

impl Host {
    /// Whether the host speaks the modern era.
    pub fn modern(&self) -> bool {
        self.version.era() == Era::Modern
    }

    /// A legacy host's session log level, for modern upstreams.
    fn log_level(&self) -> Option<String> {
        self.session.as_ref().map(|s| s.log_level())
    }
}

/// The response to a host request, and its error code when it is an error
/// (the HTTP listener derives the status of a modern response from it).
pub struct Answer {
    pub bytes: Vec<u8>,
    pub error_code: Option<i32>,
    /// For a governed call the gateway traced: `traceresponse` (W3C Trace Context level 2), the
    /// trace and the gateway's span, so a host can name this call as the cause of its next one.
    pub trace: Option<String>,
}

/// A request on its way to one upstream.
struct Forward<'a> {
    method: &'a str,
    params: Option<&'a RawValue>,
    /// The params' `_meta` (where the host's progress token is), as the caller found it: a
    /// caller that has the params as a map hands it over, so the params (large arguments and
    /// all) are not scanned once more for it.
    meta: Option<&'a RawValue>,
    /// `Mcp-Name` (tool or prompt name, or resource URI).
    name: Option<&'a str>,
    param_headers: &'a [(String, String)],
}

impl<'a> Forward<'a> {
    /// Params passed on as they came, with no name and no `Mcp-Param` headers.
    fn unchanged(method: &'a str, params: Option<&'a RawValue>) -> Self {
        let meta = params.and_then(|p| portcullis_wire::object::member(p, "_meta"));
        Forward { method, params, meta, name: None, param_headers: &[] }
    }
}

/// What a request produced before it is serialized for the host.
enum Reply {
    Result(Box<RawValue>),
    /// An error object from the upstream, passed on (codes translated for the host's era).
    UpstreamError(Box<RawValue>),
}

/// The gateway: routes, upstreams and the pipeline.
pub struct Gateway {
    pub config: Config,
    pub routes: Vec<Arc<Route>>,
    upstreams: Vec<Arc<Upstream>>,
    pipeline: Pipeline,
    parked: ParkedCalls,
    registry: Option<Arc<Registry>>,
    policy: Option<Arc<PolicyControl>>,
    schemas: Arc<SchemaCache>,
    client_info: ClientInfo,
    audit: Option<Arc<Auditor>>,
    metrics: Arc<Metrics>,
    telemetry: Option<Arc<Telemetry>>,
    /// The server version each upstream last reported (index-aligned with `upstreams`).
    versions: std::sync::Mutex<Vec<Option<String>>>,
    /// What each principal was last shown by each list on each route (a digest), bounded.
    shown: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// A digest of what each upstream offered when last observed (index-aligned with `upstreams`).
    observed: std::sync::Mutex<Vec<u64>>,
    /// When each upstream was last observed on a request's behalf; held while observing, so
    /// concurrent requests share one observation (index-aligned with `upstreams`).
    observing: Vec<tokio::sync::Mutex<Option<std::time::Instant>>>,
}

/// The capabilities the gateway declares to upstreams as their client.
const GATEWAY_CLIENT_CAPABILITIES: &str = r#"{"elicitation":{},"sampling":{},"roots":{}}"#;
/// How many `input_required` rounds a legacy host is walked through before giving up.
const MAX_INPUT_ROUNDS: usize = 8;

impl Gateway {
    /// Opens the registry, builds the routes, and connects every upstream the registry admits.
    pub async fn start(config: Config) -> Result<Arc<Self>, GatewayError> {
        let registry = match &config.registry {
            Some(settings) if settings.mode != Mode::Off => {
                Some(Registry::open(settings.clone()).await.map_err(GatewayError::Internal)?)
            }
            _ => None,
        };
        let client_info = ClientInfo {
            name: config.gateway.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: raw(GATEWAY_CLIENT_CAPABILITIES),
        };
        let upstreams: Vec<Arc<Upstream>> =
            config.upstreams.iter().map(|u| Arc::new(Upstream::new(u.clone()))).collect();
        let upstreams_len = upstreams.len();
        let config_metrics = config.metrics.clone();
        let routes: Vec<Arc<Route>> = config
            .routes
            .iter()
            .map(|r| {
                let members = r.upstreams.iter().filter_map(|i| upstreams.get(*i).cloned()).collect();
                Arc::new(Route::new(r.clone(), members))
            })
            .collect();
        let policy = match config.policy.mode {
            PolicyMode::Off => None,
            _ => Some(
                PolicyControl::load(config.policy.clone())
                    .map_err(|e| GatewayError::Internal(format!("the policy does not load:\n{e}")))?,
            ),
        };
        let telemetry = match &config.telemetry {
            Some(settings) => Some(Telemetry::start(settings.clone()).await.map_err(GatewayError::Internal)?),
            None => None,
        };
        let audit = match &config.audit {
            Some(settings) => {
                Some(Auditor::start(settings.clone(), telemetry.clone()).await.map_err(GatewayError::Internal)?)
            }
            None => None,
        };
        if let (Some(registry), Some(audit)) = (&registry, &audit) {
            registry.set_auditor(Arc::clone(audit));
        }
        let schemas = Arc::new(SchemaCache::default());
        let pipeline = Pipeline::standard(&Controls {
            registry: registry.clone(),
            validation: config.validation.clone(),
            schemas: Arc::clone(&schemas),
            policy: policy.clone(),
        });
        let gateway = Arc::new(Self {
            config,
            routes,
            upstreams,
            pipeline,
            parked: ParkedCalls::default(),
            registry,
            policy,
            schemas,
            client_info,
            versions: std::sync::Mutex::new(vec![None; upstreams_len]),
            observed: std::sync::Mutex::new(vec![0; upstreams_len]),
            shown: std::sync::Mutex::new(std::collections::HashMap::new()),
            observing: (0..upstreams_len).map(|_| tokio::sync::Mutex::new(None)).collect(),
            metrics: Metrics::new(config_metrics),
            telemetry,
            audit,
        });
        if gateway.policy.is_some() {
            gateway
                .system_event(
                    Kind::PolicyChanged,
                    "",
                    "",
                    "loaded",
                    serde_json::json!({"mode": format!("{:?}", gateway.config.policy.mode).to_lowercase()}),
                )
                .await;
        }
        let sweeper = Arc::downgrade(&gateway);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(g) = sweeper.upgrade() else { return };
                let expired = g.parked.expire(std::time::Instant::now());
                if expired > 0 {
                    tracing::debug!(expired, "parked calls expired");
                }
            }
        });
        for index in 0..gateway.upstreams.len() {
            tokio::spawn(listen_upstream(Arc::downgrade(&gateway), index));
        }
        gateway.reconcile().await?;
        if let Some(registry) = &gateway.registry {
            tokio::spawn(follow_registry(Arc::downgrade(&gateway), Arc::clone(registry)));
        }
        if let Some(policy) = &gateway.policy {
            tokio::spawn(follow_policy(Arc::downgrade(policy), gateway.audit.clone()));
        }
        Ok(gateway)
    }

    /// Connects the upstreams the registry admits and disconnects the ones it no longer does.
    async fn reconcile(self: &Arc<Self>) -> Result<(), GatewayError> {
        for (index, upstream) in self.upstreams.iter().enumerate() {
            let admitted = self.registry.as_ref().is_none_or(|r| r.admission(&upstream.settings.name).is_ok());
            let connected = upstream.client.current().is_some();
            if admitted && !connected {
                self.connect(index).await?;
            } else if !admitted && connected {
                if let Some(old) = upstream.client.replace(None) {
                    tracing::warn!(server = %upstream.settings.name, "no longer approved in the registry; disconnected");
                    old.link().shutdown().await;
                }
            } else if !admitted {
                tracing::warn!(server = %upstream.settings.name, "not approved in the registry; not connected");
            }
        }
        Ok(())
    }

    /// Starts an upstream's link and client, with the gateway's own credentials for it
    /// (read now, so a rotated secret is picked up on reconnect). An unreadable credential
    /// leaves the upstream disconnected: it is reported, and the others still start.
    async fn connect(self: &Arc<Self>, index: usize) -> Result<(), GatewayError> {
        let Some(upstream) = self.upstreams.get(index) else { return Ok(()) };
        let u = &upstream.settings;
        if let Some(registry) = &self.registry {
            registry.forget_observations(&u.name);
        }
        upstream.forget_tools();
        let credentials = match resolve_credentials(&u.credentials).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(server = %u.name, error = %e, "cannot read the upstream's credential; not connected");
                return Ok(());
            }
        };
        upstream.set_exchange(credentials.exchange);
        let max_message_bytes = self.config.gateway.max_message_bytes;
        let link = match &u.transport {
            UpstreamTransport::Stdio { command, args, env, inherit_env, cwd } => {
                let mut env = env.clone();
                env.extend(credentials.env);
                Link::Stdio(StdioLink::start(StdioConfig {
                    name: u.name.clone(),
                    command: command.clone(),
                    args: args.clone(),
                    env,
                    inherit_env: inherit_env.clone(),
                    cwd: cwd.clone(),
                    max_message_bytes,
                    shutdown_grace: Duration::from_secs(2),
                    max_backoff: Duration::from_secs(30),
                }))
            }
            UpstreamTransport::Http { url } | UpstreamTransport::Sse { url } => {
                let url = reqwest_url(url).map_err(|e| GatewayError::Internal(format!("{}: {e}", u.name)))?;
                let cfg = HttpConfig {
                    name: u.name.clone(),
                    url,
                    headers: credentials.headers,
                    connect_timeout: Duration::from_secs(5),
                    max_message_bytes,
                };
                let link = match u.transport {
                    UpstreamTransport::Sse { .. } => LegacySseLink::start(cfg).map(Link::LegacySse),
                    _ => HttpLink::new(cfg).map(|l| Link::Http(Arc::new(l))),
                };
                link.map_err(|e| GatewayError::Internal(format!("{}: {e}", u.name)))?
            }
        };
        let client = UpstreamClient::new(link, u.era, self.client_info.clone(), self.config.gateway.probe_timeout);
        tokio::spawn(pump_upstream_events(Arc::downgrade(self), index, client.link().subscribe()));
        upstream.client.replace(Some(Arc::clone(&client)));
        upstream.lists.invalidate(None);
        upstream.subscriptions_changed.notify_one();
        // Warm up: discover the era now, and let the registry see what the upstream offers.
        let gateway = Arc::downgrade(self);
        tokio::spawn(async move {
            match client.info(u_timeout(&gateway, index)).await {
                Ok(info) => {
                    if let Some(g) = gateway.upgrade() {
                        g.metrics.upstream(client.name(), true);
                        g.upstream_ready(index, &info).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(server = %client.name(), error = %e, "upstream not ready yet");
                    if let Some(g) = gateway.upgrade() {
                        g.metrics.upstream(client.name(), false);
                        let body = serde_json::json!({"error": e.to_string(), "reason": e.reason()});
                        g.system_event(Kind::UpstreamUnavailable, client.name(), "", "unavailable", body).await;
                    }
                }
            }
            if let Some(g) = gateway.upgrade()
                && let Err(e) = g.observe_upstream(index).await
            {
                tracing::debug!(server = %client.name(), error = %e, "upstream not observed yet");
            }
        });
        Ok(())
    }

    /// Lists everything an upstream offers (every page) so the registry sees it: drift is
    /// recorded, and items no longer offered are marked removed.
    async fn observe_upstream(&self, index: usize) -> Result<(), UpstreamError> {
        let Some(upstream) = self.upstreams.get(index) else { return Ok(()) };
        let registry = self.registry.as_ref();
        let info = upstream.client.info(upstream.settings.timeout).await?;
        let mut present = Vec::new();
        for (kind, item_kind) in [
            (ListKind::Tools, ItemKind::Tool),
            (ListKind::Prompts, ItemKind::Prompt),
            (ListKind::ResourceTemplates, ItemKind::ResourceTemplate),
        ] {
            if !info.has_capability(kind.capability()) {
                continue;
            }
            let mut cursor: Option<String> = None;
            for _page in 0..100 {
                let params = cursor.as_ref().map(|c| raw(serde_json::json!({ "cursor": c }).to_string()));
                let opts = RequestOptions::own(upstream.settings.timeout);
                let response = upstream.client.request(kind.method(), params.as_deref(), opts, None).await?;
                let MessageKind::Response { outcome: Outcome::Result(result), .. } = response.kind else {
                    return Err(UpstreamError::Protocol(format!("{} failed", kind.method())));
                };
                let Some(page) = RawObject::parse(&result) else {
                    return Err(UpstreamError::Protocol(format!("{} result is not an object", kind.method())));
                };
                let items: Vec<Box<RawValue>> =
                    page.get(kind.field()).and_then(|l| serde_json::from_str(l.get()).ok()).unwrap_or_default();
                for item in items {
                    let Some(obj) = RawObject::parse(&item) else { continue };
                    let Some(name) = obj.get_str(item_kind.key_field()) else { continue };
                    let admitted = match registry {
                        Some(registry) => registry.admit_item(&upstream.settings.name, item_kind, &item).await,
                        None => true,
                    };
                    if admitted && item_kind == ItemKind::Tool {
                        learn_tool(upstream, &name, &obj);
                    }
                    present.push((item_kind, name));
                }
                cursor = page.get_str("nextCursor");
                if cursor.is_none() {
                    break;
                }
            }
        }
        if let Some(registry) = registry {
            registry.observe_removals(&upstream.settings.name, &present).await;
        }
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            present.hash(&mut h);
            h.finish()
        };
        let changed = {
            let mut observed = self.observed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            observed.get_mut(index).is_some_and(|before| std::mem::replace(before, digest) != digest)
        };
        if self.audit.is_some() && changed {
            let count = |k: ItemKind| present.iter().filter(|(kind, _)| *kind == k).count();
            let body = serde_json::json!({
                "tools": count(ItemKind::Tool),
                "prompts": count(ItemKind::Prompt),
                "resource_templates": count(ItemKind::ResourceTemplate),
                "names": present.iter().map(|(_, n)| n.as_str()).take(500).collect::<Vec<_>>(),
            });
            self.system_event(Kind::UpstreamDiscovered, &upstream.settings.name, "", "ok", body).await;
        }
        Ok(())
    }

    /// Records an upstream's handshake, and a version other than the one it reported before.
    async fn upstream_ready(&self, index: usize, info: &UpstreamInfo) {
        let Some(upstream) = self.upstreams.get(index) else { return };
        let server_info =
            info.server_info.as_deref().and_then(|s| serde_json::from_str::<serde_json::Value>(s.get()).ok());
        let version = server_info.as_ref().and_then(|s| s.get("version")).and_then(|v| v.as_str()).map(str::to_owned);
        let previous = {
            let mut versions = self.versions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            versions.get_mut(index).map(|slot| std::mem::replace(slot, version.clone()))
        };
        let name = &upstream.settings.name;
        let body = serde_json::json!({"protocol": info.version.as_str(), "server_info": server_info});
        self.system_event(Kind::UpstreamConnected, name, "", "ok", body).await;
        if let Some(Some(before)) = previous
            && Some(&before) != version.as_ref()
        {
            let body = serde_json::json!({"from": before, "to": version});
            self.system_event(Kind::UpstreamVersionChanged, name, "", "changed", body).await;
        }
    }

    /// The route serving an HTTP path.
    pub fn route_for_path(&self, path: &str) -> Option<Arc<Route>> {
        let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
        self.routes.iter().find(|r| r.path() == path).cloned()
    }

    /// Stops every upstream.
    pub async fn shutdown(&self) {
        let clients: Vec<_> = self.upstreams.iter().filter_map(|u| u.client.replace(None)).collect();
        join_all(clients.iter().map(|c| c.link().shutdown())).await;
        if let Some(audit) = &self.audit {
            audit.close().await;
        }
        if let Some(telemetry) = &self.telemetry {
            telemetry.shutdown().await;
        }
    }

    /// The audit trail, when one is configured.
    pub fn auditor(&self) -> Option<&Arc<Auditor>> {
        self.audit.as_ref()
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Records that a host opened a session (`initialize`) or discovered the server.
    pub async fn session_opened(&self, host: &Host, client: Option<&RawValue>) {
        let Some(audit) = &self.audit else { return };
        let trace = host_trace(host);
        let client = client
            .map(ToOwned::to_owned)
            .or_else(|| host.session.as_ref().and_then(|s| s.client_info.get().cloned()))
            .and_then(|c| serde_json::from_str::<serde_json::Value>(c.get()).ok());
        let body = serde_json::json!({
            "route": host.route.path(),
            "protocol": host.version.as_str(),
            "session": session_tag(host),
            "client": client,
            "principal": principal_facts(&host.principal),
        });
        audit.record(Kind::SessionOpened, host_entry(host, trace, Kind::SessionOpened, &body)).await;
    }

    /// Records a gateway-wide event (upstreams, registry, policy), in a trace of its own.
    pub async fn system_event(&self, kind: Kind, server: &str, item: &str, outcome: &str, body: serde_json::Value) {
        let Some(audit) = &self.audit else { return };
        audit.record(kind, system_entry(kind, server, item, outcome, &body)).await;
    }

    /// The registry control, when one is configured.
    pub fn registry(&self) -> Option<&Arc<Registry>> {
        self.registry.as_ref()
    }

    /// The index of an upstream.
    fn index_of(&self, upstream: &Arc<Upstream>) -> Option<usize> {
        self.upstreams.iter().position(|u| Arc::ptr_eq(u, upstream))
    }

    /// Refuses an upstream the registry does not admit.
    fn admitted(&self, upstream: &Upstream) -> Result<(), GatewayError> {
        match &self.registry {
            Some(r) => r.admission(&upstream.settings.name).map_err(GatewayError::Denied),
            None => Ok(()),
        }
    }

    /// What the gateway answers to a legacy `initialize`.
    pub async fn initialize_result(&self, route: &Route, version: ProtocolVersion) -> Box<RawValue> {
        let (capabilities, instructions) = self.merged_capabilities(route).await;
        let mut result = RawObject::default();
        result.insert_str("protocolVersion", version.as_str());
        result.insert_raw("capabilities", capabilities);
        result.insert_raw("serverInfo", self.server_info());
        if let Some(text) = instructions {
            result.insert_str("instructions", &text);
        }
        result.to_raw()
    }

    fn server_info(&self) -> Box<RawValue> {
        serde_json::value::to_raw_value(&serde_json::json!({
            "name": self.config.gateway.name,
            "title": "Portcullis MCP gateway",
            "version": env!("CARGO_PKG_VERSION"),
        }))
        .unwrap_or_default()
    }

    /// The union of the route's upstreams' capabilities, as the gateway offers them.
    async fn merged_capabilities(&self, route: &Route) -> (Box<RawValue>, Option<String>) {
        let infos = self.member_infos(route).await;
        let mut caps = serde_json::Map::new();
        let mut instructions = Vec::new();
        for (member, info) in infos.iter().enumerate() {
            let Some(info) = info else { continue };
            for (kind, extra) in [
                ("tools", None),
                ("prompts", None),
                ("resources", Some("subscribe")),
                ("completions", None),
                ("logging", None),
            ] {
                if !info.has_capability(kind) {
                    continue;
                }
                let entry = caps.entry(kind).or_insert_with(|| serde_json::json!({}));
                if matches!(kind, "tools" | "prompts" | "resources") {
                    entry["listChanged"] = serde_json::Value::Bool(true);
                }
                if let Some(flag) = extra {
                    let upstream_has = RawObject::parse(&info.capabilities)
                        .and_then(|c| c.get_object(kind))
                        .and_then(|r| r.get(flag).map(|v| v.get() == "true"))
                        .unwrap_or(false);
                    if upstream_has {
                        entry[flag] = serde_json::Value::Bool(true);
                    }
                }
            }
            if let Some(text) = &info.instructions {
                let name = &route.members[member].settings.name;
                instructions.push(if route.members.len() == 1 { text.clone() } else { format!("[{name}] {text}") });
            }
        }
        let raw_caps = serde_json::value::to_raw_value(&caps).unwrap_or_else(|_| empty_object());
        (raw_caps, (!instructions.is_empty()).then(|| instructions.join("\n\n")))
    }

    /// Each member's handshake result, `None` for those that are down.
    async fn member_infos(&self, route: &Route) -> Vec<Option<Arc<UpstreamInfo>>> {
        join_all(route.members.iter().map(|u| async move {
            match u.client.info(u.settings.timeout).await {
                Ok(info) => Some(info),
                Err(e) => {
                    tracing::warn!(server = %u.settings.name, error = %e, "upstream unavailable");
                    None
                }
            }
        }))
        .await
    }

    /// Handles a host request; returns the response to send.
    pub async fn request(
        &self,
        host: &Host,
        id: &RequestId,
        method: &str,
        params: Option<&RawValue>,
        related: &mpsc::Sender<Bytes>,
    ) -> Answer {
        // If the host goes away mid-call (the future is dropped), the guard still records a call
        // that had reached the upstream.
        let mut guard = CallGuard {
            gateway: self,
            host,
            method,
            trail: Governed::of(method).is_some().then(|| CallTrail::start(host_trace(host))),
        };
        let outcome = self.dispatch(host, method, params, related, guard.trail.as_mut()).await;
        let Some(mut trail) = guard.trail.take() else { return self.answer(host, id, method, outcome) };
        let summary = Summary::of(&outcome);
        let mut answer = self.answer(host, id, method, outcome);
        let mut outcome_word = summary.outcome;
        if let Some(audit) = &self.audit {
            // The version the server reports, as of this call (the call may have made the handshake).
            trail.server_version = trail.upstream.take().and_then(|u| {
                let info = u.client.current()?.known_info()?;
                // One borrowed scan of serverInfo, no tree of it built per call.
                portcullis_wire::object::string(portcullis_wire::object::member(
                    info.server_info.as_deref()?,
                    "version",
                ))
            });
            let entry = call_entry(host, method, &trail, &summary, answer.error_code);
            if let Err(e) = audit.record_durably(Kind::Call, entry, trail.tier).await {
                tracing::error!(method, error = %e, "a call's audit record is not durable; its response is withheld");
                outcome_word = if crate::audit::executed(summary.outcome) { "withheld" } else { "refused" };
                let denied = GatewayError::Denied(Denied::new("audit", "audit_unavailable", e.to_string()));
                let rpc = denied.to_rpc(host.modern());
                answer = Answer { bytes: error_bytes(Some(id), &rpc), error_code: Some(rpc.code.0), trace: None };
            }
        }
        if self.audit.is_some() || self.telemetry.is_some() {
            answer.trace = Some(trail.trace.child_header(&trail.span));
        }
        // Metrics and spans say what the host finally got.
        self.metrics.call(&CallFacts {
            method,
            server: &trail.server,
            tool: trail.listed.then_some(trail.item.as_str()),
            principal: &host.principal,
            outcome: outcome_word,
            latency: trail.started.elapsed(),
            result_bytes: summary.bytes,
            executed: crate::audit::executed(summary.outcome),
            read_only: trail.read_only,
            sensitive: trail.data_class.is_some_and(|c| {
                matches!(
                    c,
                    portcullis_registry::model::DataClass::Confidential
                        | portcullis_registry::model::DataClass::Restricted
                )
            }),
            span: &trail.span,
            parent: &trail.trace.parent_id,
            denial: summary.stage.zip(summary.reason),
            error: summary.blame.zip(summary.reason),
            timeout: summary.timeout,
        });
        if let Some(telemetry) = &self.telemetry {
            telemetry.call_span(&crate::telemetry::CallSpan {
                method,
                trail: &trail,
                principal: &host.principal.id,
                outcome: outcome_word,
                reason: summary.reason,
                error_code: answer.error_code,
            });
        }
        answer
    }

    /// The host's response to what a request produced.
    fn answer(&self, host: &Host, id: &RequestId, method: &str, outcome: Result<Reply, GatewayError>) -> Answer {
        match outcome {
            Ok(Reply::Result(r)) => {
                let r = if host.modern() { complete_result(r, method) } else { r };
                Answer { bytes: result_bytes(Some(id), &r), error_code: None, trace: None }
            }
            Ok(Reply::UpstreamError(e)) => {
                let e = translate_error(e, host.modern(), method);
                let code = RawObject::parse(&e).and_then(|o| o.get("code").and_then(|c| c.get().parse().ok()));
                Answer { bytes: error_raw_bytes(Some(id), &e), error_code: code, trace: None }
            }
            Err(GatewayError::Denied(d))
                if d.stage == "validate"
                    && d.reason == "invalid_arguments"
                    && self.config.validation.refusal == Refusal::ToolResult =>
            {
                let mut result = refusal_result(&d);
                if host.modern() {
                    result = complete_result(result, method);
                }
                Answer { bytes: result_bytes(Some(id), &result), error_code: None, trace: None }
            }
            Err(e) => {
                tracing::debug!(method, reason = e.reason(), error = %e, "request failed");
                let rpc = e.to_rpc(host.modern());
                Answer { bytes: error_bytes(Some(id), &rpc), error_code: Some(rpc.code.0), trace: None }
            }
        }
    }

    async fn dispatch(
        &self,
        host: &Host,
        method: &str,
        params: Option<&RawValue>,
        related: &mpsc::Sender<Bytes>,
        mut trail: Option<&mut CallTrail>,
    ) -> Result<Reply, GatewayError> {
        // The host's trace goes on upstream when this gateway records or exports it.
        let propagate = self.audit.is_some() || self.telemetry.is_some();
        match method {
            "ping" => Ok(Reply::Result(empty_object())),
            "server/discover" => Ok(Reply::Result(self.discover_result(&host.route).await)),
            "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" => {
                let kind =
                    ListKind::from_method(method).ok_or_else(|| GatewayError::MethodNotFound(method.to_owned()))?;
                self.list(host, kind, params).await.map(Reply::Result)
            }
            "tools/call" | "prompts/get" => {
                let p = params_object(params)?;
                let name = p
                    .get_str("name")
                    .ok_or_else(|| GatewayError::invalid("missing_name", "params.name must be a string"))?;
                self.note_request(trail.as_deref_mut(), &p, &name, "arguments");
                let arguments = self.arguments_of(&p, "arguments")?;
                let governed = if method == "tools/call" { Governed::CallTool } else { Governed::GetPrompt };
                let mut call = self.call(host, governed, &name, arguments.as_ref(), None);
                let target = self.govern(&mut call, trail.as_deref_mut()).await?;
                if let (Governed::CallTool, Some(session)) = (governed, &host.session) {
                    session.count_call();
                }
                if let Some(binding) = self.parked_binding(host, method, &target.name, &p) {
                    return self.resume(host, binding, &p, related).await;
                }
                let headers = param_headers(&target, &p);
                let mut rewritten = p;
                rewritten.insert_str("name", &target.name);
                if let Some(t) = trail.as_ref().filter(|_| propagate) {
                    set_traceparent(&mut rewritten, &t.traceparent());
                }
                let params = rewritten.to_raw();
                let forward = Forward {
                    method,
                    params: Some(&params),
                    meta: rewritten.get("_meta"),
                    name: Some(target.name.as_str()),
                    param_headers: &headers,
                };
                let reply = timed(trail, self.forward(host, &target, forward, related)).await?;
                if governed == Governed::CallTool {
                    self.check_output(&target, &reply)?;
                }
                Ok(reply)
            }
            "resources/subscribe" | "resources/unsubscribe" => {
                let uri = params_object(params)?
                    .get_str("uri")
                    .ok_or_else(|| GatewayError::invalid("missing_uri", "params.uri must be a string"))?;
                let session = host
                    .session
                    .as_ref()
                    .ok_or_else(|| GatewayError::MethodNotFound(format!("{method} (use subscriptions/listen)")))?;
                if method == "resources/subscribe" {
                    if session.add_subscription(&uri)
                        && let Err(e) = self.subscribe_resource(host, &uri).await
                    {
                        session.remove_subscription(&uri);
                        return Err(e);
                    }
                } else if session.remove_subscription(&uri) {
                    self.unsubscribe_resource(host, &uri).await;
                }
                Ok(Reply::Result(empty_object()))
            }
            "resources/read" => {
                let p = params_object(params)?;
                let uri = p
                    .get_str("uri")
                    .ok_or_else(|| GatewayError::invalid("missing_uri", "params.uri must be a string"))?;
                self.note_request(trail.as_deref_mut(), &p, &uri, "");
                let target = self.resource_target(host, &uri).await?;
                let mut call = self.call(host, Governed::ReadResource, &uri, None, Some(target));
                let target = self.govern(&mut call, trail.as_deref_mut()).await?;
                if let Some(binding) = self.parked_binding(host, method, &uri, &p) {
                    return self.resume(host, binding, &p, related).await;
                }
                let traced = trail.as_ref().filter(|_| propagate).map(|t| {
                    let mut p = p.clone();
                    set_traceparent(&mut p, &t.traceparent());
                    p.to_raw()
                });
                let params = traced.as_deref().or(params);
                let forward = Forward { method, params, meta: p.get("_meta"), name: Some(&uri), param_headers: &[] };
                timed(trail, self.forward(host, &target, forward, related)).await
            }
            "completion/complete" => {
                let p = params_object(params)?;
                let reference = p
                    .get_object("ref")
                    .ok_or_else(|| GatewayError::invalid("missing_ref", "params.ref must be an object"))?;
                let label = reference.get_str("name").or_else(|| reference.get_str("uri")).unwrap_or_default();
                self.note_request(trail.as_deref_mut(), &p, &label, "argument");
                let argument = self.arguments_of(&p, "argument")?;
                let (target, rewritten) = match reference.get_str("type").as_deref() {
                    Some("ref/prompt") => {
                        let name = reference
                            .get_str("name")
                            .ok_or_else(|| GatewayError::invalid("missing_name", "params.ref.name must be a string"))?;
                        let mut call = self.call(host, Governed::Complete, &name, argument.as_ref(), None);
                        let target = self.govern(&mut call, trail.as_deref_mut()).await?;
                        let mut reference = reference;
                        reference.insert_str("name", &target.name);
                        let mut p = p;
                        p.insert_object("ref", &reference);
                        if let Some(t) = trail.as_ref().filter(|_| propagate) {
                            set_traceparent(&mut p, &t.traceparent());
                        }
                        (target, p)
                    }
                    Some("ref/resource") => {
                        let uri = reference
                            .get_str("uri")
                            .ok_or_else(|| GatewayError::invalid("missing_uri", "params.ref.uri must be a string"))?;
                        let target = self.resource_target(host, &uri).await?;
                        let mut call = self.call(host, Governed::Complete, &uri, argument.as_ref(), Some(target));
                        let target = self.govern(&mut call, trail.as_deref_mut()).await?;
                        let mut p = p;
                        if let Some(t) = trail.as_ref().filter(|_| propagate) {
                            set_traceparent(&mut p, &t.traceparent());
                        }
                        (target, p)
                    }
                    _ => {
                        return Err(GatewayError::invalid(
                            "invalid_ref",
                            "params.ref.type must be ref/prompt or ref/resource",
                        ));
                    }
                };
                let params = rewritten.to_raw();
                // The map is at hand: its `_meta` is handed over, not found by scanning the params again.
                let forward = Forward {
                    method,
                    params: Some(&params),
                    meta: rewritten.get("_meta"),
                    name: None,
                    param_headers: &[],
                };
                timed(trail, self.forward(host, &target, forward, related)).await
            }
            "logging/setLevel" => {
                let level = params_object(params)?
                    .get_str("level")
                    .ok_or_else(|| GatewayError::invalid("missing_level", "params.level must be a string"))?;
                if let Some(session) = &host.session {
                    session.set_log_level(level);
                }
                let infos = self.member_infos(&host.route).await;
                let legacy_with_logging = host.route.members.iter().zip(infos).filter_map(|(u, info)| {
                    info.filter(|i| i.era() == Era::Legacy && i.has_capability("logging")).map(|_| u)
                });
                let calls = legacy_with_logging.map(|u| {
                    let target = Target { upstream: Arc::clone(u), name: String::new() };
                    async move { self.forward(host, &target, Forward::unchanged(method, params), related).await }
                });
                for outcome in join_all(calls).await {
                    if let Err(e) = outcome
                        && !host.route.skips_failures()
                    {
                        return Err(e);
                    }
                }
                Ok(Reply::Result(empty_object()))
            }
            _ if host.route.members.len() == 1 => {
                // A single-upstream route passes methods it does not know through unchanged, to an
                // approved server only.
                let target = Target { upstream: Arc::clone(&host.route.members[0]), name: String::new() };
                self.admitted(&target.upstream)?;
                self.forward(host, &target, Forward::unchanged(method, params), related).await
            }
            _ => Err(GatewayError::MethodNotFound(method.to_owned())),
        }
    }

    /// With `[validation] output`, a tool result's `structuredContent` must match the tool's
    /// pinned output schema (the spec requires it of a tool that declares one); a result that
    /// does not is the upstream's fault and never reaches the host.
    fn check_output(&self, target: &Target, reply: &Reply) -> Result<(), GatewayError> {
        let Reply::Result(result) = reply else { return Ok(()) };
        if !self.config.validation.enabled || !self.config.validation.output || is_input_required(result) {
            return Ok(());
        }
        let Some(schema_text) = target.upstream.tool(&target.name).and_then(|t| t.output_schema.clone()) else {
            return Ok(());
        };
        let Some(obj) = RawObject::parse(result) else { return Ok(()) };
        if obj.get("isError").is_some_and(|v| v.get() == "true") {
            return Ok(());
        }
        let invalid = |why: String| GatewayError::Upstream {
            server: target.upstream.settings.name.clone(),
            error: UpstreamError::Protocol(format!("tool '{}' result: {why}", target.name)),
        };
        let structured = obj
            .get("structuredContent")
            .ok_or_else(|| invalid("no structuredContent, though the tool declares an output schema".to_owned()))?;
        let value: serde_json::Value = serde_json::from_str(structured.get())
            .map_err(|_| invalid("structuredContent nests too deeply to be checked".to_owned()))?;
        let compiled = self.schemas.get(&schema_text);
        let schema = compiled.as_ref().as_ref().map_err(|_| invalid("its output schema is not usable".to_owned()))?;
        schema.check(&value, false).map_err(|violations| {
            let v = &violations[0];
            invalid(format!("structuredContent does not match the output schema at '{}': {}", v.path, v.message))
        })
    }

    /// The user's own credential for an upstream configured with token exchange (`None` for
    /// the others, which get the gateway's). A host without an access token to exchange (API
    /// key, stdio, anonymous) cannot use such an upstream.
    async fn user_authorization(
        &self,
        host: &Host,
        upstream: &Upstream,
    ) -> Result<Option<http::HeaderValue>, GatewayError> {
        let Some(exchange) = upstream.exchange() else { return Ok(None) };
        let Some(subject) = &host.credential else {
            return Err(GatewayError::Denied(Denied::new(
                "identity",
                "delegation_unavailable",
                format!(
                    "server '{}' acts with each user's own credential; authenticate with an OAuth access token",
                    upstream.settings.name
                ),
            )));
        };
        exchange.authorization(&host.principal.id, subject).await.map(Some).map_err(|why| {
            tracing::warn!(server = %upstream.settings.name, principal = %host.principal, why, "token exchange failed");
            GatewayError::Denied(Denied::new(
                "identity",
                "delegation_failed",
                format!("no credential for server '{}' could be obtained for this user", upstream.settings.name),
            ))
        })
    }

    /// The pipeline's context for one governed request.
    fn call<'a>(
        &self,
        host: &'a Host,
        method: Governed,
        name: &'a str,
        arguments: Option<&'a serde_json::Value>,
        target: Option<Target>,
    ) -> CallContext<'a> {
        CallContext {
            principal: &host.principal,
            route: &host.route,
            method,
            name,
            arguments,
            target,
            approval: ApprovalState::None,
            session_calls: host.session.as_ref().map_or(0, |s| s.calls()),
            decision: None,
            timings: self.telemetry.as_ref().is_some_and(|t| t.traces()).then(Vec::new),
        }
    }

    /// Runs the pipeline on a governed request. When a stage needs the upstream's current
    /// metadata (nothing seen of the item since the upstream connected), the upstream is
    /// observed and the pipeline runs once more; then what is still unknown is refused.
    async fn govern(&self, call: &mut CallContext<'_>, trail: Option<&mut CallTrail>) -> Result<Target, GatewayError> {
        let outcome = self.run_pipeline(call).await;
        let Some(trail) = trail else { return outcome };
        if let Some(target) = outcome.as_ref().ok().or(call.target.as_ref()) {
            trail.server.clone_from(&target.upstream.settings.name);
            trail.item = crate::audit::call::recorded_name(&target.name);
            let facts = self.registry.as_ref().and_then(|r| r.facts(&trail.server, &trail.item));
            trail.tier = facts.as_ref().map(|f| f.risk_tier);
            trail.data_class = facts.as_ref().map(|f| f.data_class);
            trail.registry_entry = facts.as_ref().map(|f| format!("{}@{}", f.entry, f.entry_version));
            if self.audit.is_some() {
                trail.upstream = Some(Arc::clone(&target.upstream));
            }
            if let Some(facts) = target.upstream.tool(&target.name) {
                trail.listed = true;
                trail.read_only = facts.read_only;
                trail.destructive = facts.destructive;
            }
        }
        // The call is done with it: moved, not copied.
        trail.decision = call.decision.take();
        if let Some(timings) = call.timings.take() {
            trail.stages = timings;
        }
        let target = outcome?;
        if self.audit.as_ref().is_some_and(|a| a.refuses(trail.tier)) {
            return Err(GatewayError::Denied(Denied::new(
                "audit",
                "audit_unavailable",
                "the audit trail cannot record calls right now; calls of this risk tier are refused until it can",
            )));
        }
        Ok(target)
    }

    /// Notes what a governed request names and carries, for its audit record.
    fn note_request(&self, trail: Option<&mut CallTrail>, p: &RawObject, name: &str, arguments_field: &str) {
        let Some(trail) = trail else { return };
        trail.adopt_meta(p, self.audit.is_some());
        let Some(audit) = &self.audit else { return };
        trail.name = crate::audit::call::recorded_name(name);
        if let Some(raw) = p.get(arguments_field).filter(|_| !arguments_field.is_empty()) {
            let settings = audit.settings();
            let mut recorded = recorded_arguments(raw.get(), &settings.redact_fields, settings.max_argument_bytes);
            // A completion's argument is {name, value}: the value is secret when the name is.
            if arguments_field == "argument"
                && let Some(name) = recorded.get("name").and_then(|n| n.as_str())
                && crate::audit::call::is_secret_name(name, &settings.redact_fields)
                && let Some(value) = recorded.get_mut("value")
            {
                *value = serde_json::Value::String("[redacted]".to_owned());
            }
            trail.arguments = Some(recorded);
        }
    }

    /// Whether a principal is shown something other than what it was last shown on this route
    /// (a list it has already seen, unchanged, is not recorded again: the earlier record says it).
    fn newly_shown(&self, host: &Host, kind: ListKind, items: &[Box<RawValue>]) -> bool {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for item in items {
            item.get().hash(&mut h);
        }
        let digest = h.finish();
        let key = format!("{}\n{}\n{}", host.principal.id, host.route.path(), kind.method());
        let mut shown = self.shown.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if shown.len() >= 10_000 && !shown.contains_key(&key) {
            shown.clear();
        }
        shown.insert(key, digest) != Some(digest)
    }

    /// Observes an upstream for a request that needs its current metadata: requests arriving
    /// while an observation runs wait for it, and one that finished under a second ago serves.
    async fn observe_for_request(&self, index: usize) -> Result<(), UpstreamError> {
        let Some(slot) = self.observing.get(index) else { return Ok(()) };
        let mut last = slot.lock().await;
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return Ok(());
        }
        let outcome = self.observe_upstream(index).await;
        *last = Some(std::time::Instant::now());
        outcome
    }

    /// The pipeline, with one observation of the upstream when a stage needs it.
    async fn run_pipeline(&self, call: &mut CallContext<'_>) -> Result<Target, GatewayError> {
        if let Err(stop) = self.pipeline.run(call, false) {
            match stop {
                Stop::Denied(denied) => return Err(GatewayError::Denied(denied)),
                Stop::Unverified => {
                    // Hosts can name items nobody offers at will: an upstream is listed again on
                    // their behalf at most once a second.
                    if let Some(target) = &call.target
                        && let Some(index) = self.index_of(&target.upstream)
                        && let Err(e) = self.observe_for_request(index).await
                    {
                        return Err(upstream_error(&target.upstream, e));
                    }
                    if let Err(stop) = self.pipeline.run(call, true) {
                        return Err(match stop {
                            Stop::Denied(denied) => GatewayError::Denied(denied),
                            Stop::Unverified => GatewayError::Internal("pipeline left the call unverified".to_owned()),
                        });
                    }
                }
            }
        }
        call.target.take().ok_or_else(|| GatewayError::Internal("pipeline left the call unrouted".to_owned()))
    }

    /// A request's arguments object, parsed once for the controls that read it (none read it
    /// when validation and policy are off). Depth beyond the parser's limit is refused.
    fn arguments_of(&self, params: &RawObject, field: &str) -> Result<Option<serde_json::Value>, GatewayError> {
        if !self.pipeline.reads_arguments() {
            return Ok(None);
        }
        let Some(raw) = params.get(field) else { return Ok(None) };
        let value: serde_json::Value = serde_json::from_str(raw.get()).map_err(|_| {
            GatewayError::invalid("invalid_arguments", format!("params.{field} nests too deeply to be checked"))
        })?;
        if !value.is_object() && !value.is_null() {
            return Err(GatewayError::invalid("invalid_arguments", format!("params.{field} must be an object")));
        }
        Ok(Some(value))
    }

    /// Subscribes a host to a resource's updates. The first subscriber on an upstream makes the
    /// gateway subscribe upstream: `resources/subscribe` (legacy) or its listen stream (modern).
    pub async fn subscribe_resource(&self, host: &Host, uri: &str) -> Result<(), GatewayError> {
        let target = self.resource_target(host, uri).await?;
        let upstream = &target.upstream;
        if !upstream.retain_resource(uri) {
            return Ok(());
        }
        let outcome = async {
            let info =
                upstream.client.info(upstream.settings.timeout).await.map_err(|e| upstream_error(upstream, e))?;
            if info.era() == Era::Modern {
                upstream.subscriptions_changed.notify_one();
                return Ok(());
            }
            self.upstream_subscription(upstream, "resources/subscribe", uri).await
        }
        .await;
        if outcome.is_err() {
            upstream.release_resource(uri);
        }
        outcome
    }

    /// Ends a host's subscription; the last one on an upstream ends the gateway's.
    pub async fn unsubscribe_resource(&self, host: &Host, uri: &str) {
        let Some(member) = host.route.resource_owner(uri) else { return };
        let upstream = &host.route.members[member];
        if !upstream.release_resource(uri) {
            return;
        }
        match upstream.client.info(upstream.settings.timeout).await {
            Ok(info) if info.era() == Era::Modern => upstream.subscriptions_changed.notify_one(),
            Ok(_) => {
                if let Err(e) = self.upstream_subscription(upstream, "resources/unsubscribe", uri).await {
                    tracing::debug!(server = %upstream.settings.name, uri, error = %e, "unsubscribe failed");
                }
            }
            Err(_) => {}
        }
    }

    async fn upstream_subscription(&self, upstream: &Upstream, method: &str, uri: &str) -> Result<(), GatewayError> {
        let params = raw(serde_json::json!({ "uri": uri }).to_string());
        let opts = RequestOptions::own(upstream.settings.timeout);
        let response = upstream
            .client
            .request(method, Some(&params), opts, None)
            .await
            .map_err(|e| upstream_error(upstream, e))?;
        match response.kind {
            MessageKind::Response { outcome: Outcome::Result(_), .. } => Ok(()),
            MessageKind::Response { outcome: Outcome::Error(e), .. } => {
                Err(upstream_error(upstream, UpstreamError::Protocol(format!("{method} refused: {}", e.get()))))
            }
            _ => Err(upstream_error(upstream, UpstreamError::Protocol("not a response".to_owned()))),
        }
    }

    /// `server/discover` for a modern host.
    async fn discover_result(&self, route: &Route) -> Box<RawValue> {
        let (capabilities, instructions) = self.merged_capabilities(route).await;
        let mut result = RawObject::default();
        result.insert("supportedVersions", &ProtocolVersion::supported_strings());
        result.insert_raw("capabilities", capabilities);
        if let Some(text) = instructions {
            result.insert_str("instructions", &text);
        }
        let mut m = RawObject::default();
        m.insert_raw(meta::SERVER_INFO, self.server_info());
        result.insert_object("_meta", &m);
        result.insert("ttlMs", &0);
        result.insert_str("cacheScope", "private");
        result.to_raw()
    }

    /// Finds the upstream that owns a resource URI, listing resources if it is not known yet.
    async fn resource_target(&self, host: &Host, uri: &str) -> Result<Target, GatewayError> {
        let route = &host.route;
        if route.resource_owner(uri).is_none() {
            // Learn the route's resources (both lists) and look again.
            for kind in [ListKind::Resources, ListKind::ResourceTemplates] {
                let mut cursor: Option<String> = None;
                for _ in 0..32 {
                    let params = cursor.as_ref().map(|c| raw(serde_json::json!({"cursor": c}).to_string()));
                    let Ok(page) = self.list(host, kind, params.as_deref()).await else {
                        break;
                    };
                    cursor = RawObject::parse(&page).and_then(|p| p.get_str("nextCursor"));
                    if cursor.is_none() || route.resource_owner(uri).is_some() {
                        break;
                    }
                }
            }
        }
        let member = route.resource_owner(uri).ok_or_else(|| GatewayError::ResourceNotFound(uri.to_owned()))?;
        Ok(Target { upstream: Arc::clone(&route.members[member]), name: uri.to_owned() })
    }

    /// Lists across the route's upstreams: one page of each upstream still to list,
    /// merged, with a cursor naming where each upstream left off.
    async fn list(
        &self,
        host: &Host,
        kind: ListKind,
        params: Option<&RawValue>,
    ) -> Result<Box<RawValue>, GatewayError> {
        let route = &host.route;
        let p = params.and_then(RawObject::parse).unwrap_or_default();
        let pending: Vec<(usize, Option<String>)> = match p.get("cursor") {
            Some(c) => {
                let text: String = serde_json::from_str(c.get())
                    .map_err(|_| GatewayError::invalid("invalid_cursor", "params.cursor must be a string"))?;
                Cursor::decode(&text, route.members.len())
                    .ok_or_else(|| GatewayError::invalid("invalid_cursor", "unknown or expired cursor"))?
                    .0
            }
            None => (0..route.members.len()).map(|i| (i, None)).collect(),
        };
        let pages = join_all(pending.iter().map(|(member, cursor)| {
            let upstream = &route.members[*member];
            let mut params = p.clone();
            params.remove("cursor");
            if let Some(c) = cursor {
                params.insert_str("cursor", c);
            }
            async move {
                if self.admitted(upstream).is_err() {
                    // Not approved: invisible, not a failure.
                    return Ok(None);
                }
                let info =
                    upstream.client.info(upstream.settings.timeout).await.map_err(|e| upstream_error(upstream, e))?;
                if !info.has_capability(kind.capability()) {
                    return Ok(None);
                }
                // What a user's own credential lists is that user's: never from or into the shared cache.
                let authorization = self.user_authorization(host, upstream).await?;
                if authorization.is_none()
                    && let Some(page) = upstream.lists.get(kind, cursor.as_deref(), std::time::Instant::now())
                {
                    return Ok(Some(page));
                }
                let generation = upstream.lists.generation();
                let opts = RequestOptions {
                    timeout: upstream.settings.timeout,
                    name: None,
                    host_capabilities: host.capabilities.as_deref(),
                    param_headers: &[],
                    log_level: None,
                    authorization: authorization.as_ref(),
                };
                let params = params.to_raw();
                let response = upstream
                    .client
                    .request(kind.method(), Some(&params), opts, None)
                    .await
                    .map_err(|e| upstream_error(upstream, e))?;
                match response.kind {
                    MessageKind::Response { outcome: Outcome::Result(r), .. } => {
                        if authorization.is_none() {
                            upstream.lists.store(generation, kind, cursor.as_deref(), &r, std::time::Instant::now());
                        }
                        Ok(Some(r))
                    }
                    MessageKind::Response { outcome: Outcome::Error(e), .. } => Err(GatewayError::Upstream {
                        server: upstream.settings.name.clone(),
                        error: UpstreamError::Protocol(format!("{} failed: {}", kind.method(), e.get())),
                    }),
                    _ => Err(upstream_error(upstream, UpstreamError::Protocol("not a response".to_owned()))),
                }
            }
        }))
        .await;

        let mut items: Vec<Box<RawValue>> = Vec::new();
        let mut next = Vec::new();
        let mut ttl: Option<u64> = None;
        for ((member, _), page) in pending.iter().zip(pages) {
            let page = match page {
                Ok(Some(page)) => page,
                Ok(None) => continue,
                Err(e) if route.skips_failures() => {
                    tracing::warn!(route = route.path(), error = %e, "upstream left out of the list");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(page) = RawObject::parse(&page) else {
                return Err(GatewayError::Upstream {
                    server: route.members[*member].settings.name.clone(),
                    error: UpstreamError::Protocol(format!("{} result is not an object", kind.method())),
                });
            };
            if let Some(c) = page.get_str("nextCursor") {
                next.push((*member, Some(c)));
            }
            let upstream_ttl =
                page.get("ttlMs").and_then(|t| t.get().parse::<f64>().ok()).map_or(0, |t| t.max(0.0) as u64);
            ttl = Some(ttl.map_or(upstream_ttl, |t| t.min(upstream_ttl)));
            let list: Vec<Box<RawValue>> =
                page.get(kind.field()).and_then(|l| serde_json::from_str(l.get()).ok()).unwrap_or_default();
            let upstream_name = &route.members[*member].settings.name;
            for item in list {
                if let Some(registry) = &self.registry
                    && let Some(item_kind) = kind.pinned()
                    && !registry.admit_item(upstream_name, item_kind, &item).await
                {
                    continue;
                }
                if let Some(item) = self.expose_item(host, *member, kind, item) {
                    items.push(item);
                }
            }
        }
        if let Some(audit) = &self.audit
            && self.newly_shown(host, kind, &items)
        {
            audit.record(Kind::List, list_entry(host, kind, &items)).await;
        }
        let mut result = RawObject::default();
        result.insert(kind.field(), &items);
        if !next.is_empty() {
            result.insert_str("nextCursor", &Cursor(next).encode());
        }
        if host.modern() {
            result.insert_str("resultType", "complete");
            result.insert("ttlMs", &ttl.unwrap_or(0));
            result.insert_str("cacheScope", "private");
        }
        Ok(result.to_raw())
    }

    /// One list item as the host sees it: prefixed name; hidden if the name cannot be exposed
    /// or the policy would not let this host's principal use it.
    fn expose_item(&self, host: &Host, member: usize, kind: ListKind, item: Box<RawValue>) -> Option<Box<RawValue>> {
        let route = &host.route;
        let upstream = &route.members[member];
        let mut obj = RawObject::parse(&item)?;
        match kind {
            ListKind::Tools | ListKind::Prompts => {
                let name = obj.get_str("name")?;
                let facts = if kind == ListKind::Tools { Some(learn_tool(upstream, &name, &obj)?) } else { None };
                let governed = if kind == ListKind::Tools { Governed::CallTool } else { Governed::GetPrompt };
                if !self.visible(host, upstream, governed, &name, facts.as_deref()) {
                    return None;
                }
                if route.passthrough() {
                    return Some(item);
                }
                let Some(exposed) = route.expose_name(member, &name) else {
                    tracing::warn!(route = route.path(), name, "name too long once prefixed; hidden");
                    return None;
                };
                obj.insert_str("name", &exposed);
                Some(obj.to_raw())
            }
            ListKind::Resources => {
                let uri = obj.get_str("uri");
                route.learn_resource(member, uri.as_deref(), None);
                let visible = uri.is_some_and(|u| self.visible(host, upstream, Governed::ReadResource, &u, None));
                visible.then_some(item)
            }
            ListKind::ResourceTemplates => {
                let template = obj.get_str("uriTemplate");
                route.learn_resource(member, None, template.as_deref());
                let visible = template.is_some_and(|t| self.visible(host, upstream, Governed::ReadResource, &t, None));
                visible.then_some(item)
            }
        }
    }

    /// Whether the host's principal may see an item (the policy's decision at list time).
    fn visible(
        &self,
        host: &Host,
        upstream: &Upstream,
        method: Governed,
        name: &str,
        tool: Option<&ToolFacts>,
    ) -> bool {
        let Some(policy) = &self.policy else { return true };
        let server = upstream.settings.name.as_str();
        let facts = self.registry.as_ref().and_then(|r| r.facts(server, name));
        let empty = serde_json::Value::Object(serde_json::Map::new());
        policy.visible(&portcullis_policy::Request {
            principal: &host.principal,
            action: method.action(),
            resource: portcullis_policy::Resource {
                server,
                name,
                risk_tier: facts.as_ref().map(|f| f.risk_tier),
                data_class: facts.as_ref().map(|f| f.data_class),
                environment: facts.as_ref().map(|f| f.environment.as_str()),
                read_only: tool.and_then(|t| t.read_only),
                destructive: tool.and_then(|t| t.destructive),
            },
            context: portcullis_policy::Context {
                phase: portcullis_policy::Phase::List,
                arguments: Some(&empty),
                route: host.route.path(),
                now_unix: crate::registry::now_ms() / 1000,
                approval: ApprovalState::None,
                session_calls: host.session.as_ref().map_or(0, |s| s.calls()),
            },
        })
    }

    /// Sends a routed request to its upstream, relaying related messages to the host
    /// and walking a legacy host through a modern upstream's `input_required` rounds.
    async fn forward(
        &self,
        host: &Host,
        target: &Target,
        request: Forward<'_>,
        related: &mpsc::Sender<Bytes>,
    ) -> Result<Reply, GatewayError> {
        let Forward { method, params, meta: host_meta, name, param_headers } = request;
        let upstream = &target.upstream;
        let authorization = self.user_authorization(host, upstream).await?;
        let host_token = progress_token(host_meta);
        let binding = BindingRef { route: host.route.path(), method, name };
        // Copied once: each round's call shares it (a large argument is not copied per round).
        let mut params: Option<Arc<Box<RawValue>>> = params.map(|p| Arc::new(p.to_owned()));
        for _round in 0..MAX_INPUT_ROUNDS {
            let (tx, rx) = mpsc::channel::<Message>(64);
            let call = start_call(
                host,
                upstream,
                UpstreamCall {
                    method,
                    params: params.clone(),
                    name,
                    param_headers,
                    authorization: authorization.clone(),
                },
                tx,
            );
            let scope = Scope { host, upstream, host_token: host_token.as_deref(), related, binding };
            let response = match self.drive(&scope, call, rx).await? {
                Driven::Response(r) => r,
                Driven::Parked(reply) => return Ok(reply),
            };
            match response {
                Outcome::Error(e) => return Ok(Reply::UpstreamError(e)),
                Outcome::Result(r) => {
                    if host.modern() || !is_input_required(&r) {
                        return Ok(Reply::Result(r));
                    }
                    let retry =
                        self.ask_legacy_host(host, upstream, params.as_deref().map(|p| &**p), &r, related).await?;
                    params = Some(Arc::new(retry));
                }
            }
        }
        Err(upstream_error(
            upstream,
            UpstreamError::Protocol(format!("still asking for input after {MAX_INPUT_ROUNDS} rounds")),
        ))
    }

    /// Runs an upstream call to its end, relaying related messages to the host. When a
    /// modern host must be asked for input, the call is parked instead and the host gets
    /// an `input_required` result.
    async fn drive(
        &self,
        scope: &Scope<'_>,
        mut call: CallFuture,
        mut rx: mpsc::Receiver<Message>,
    ) -> Result<Driven, GatewayError> {
        let Scope { host, upstream, host_token, related, binding } = *scope;
        loop {
            let mut question = None;
            tokio::select! {
                biased;
                Some(m) = rx.recv() => {
                    if host.modern() && is_input_request(&m) {
                        question = Some(m);
                    } else {
                        self.relay(host, upstream, m, host_token, related).await;
                    }
                }
                r = &mut call => {
                    let response = r.map_err(|e| upstream_error(upstream, e))?;
                    return match response.kind {
                        MessageKind::Response { outcome, .. } => Ok(Driven::Response(outcome)),
                        _ => Err(upstream_error(upstream, UpstreamError::Protocol("not a response".to_owned()))),
                    };
                }
            }
            let Some(first) = question else { continue };
            let mut questions = Vec::new();
            let mut next = Some(first);
            while let Some(m) = next.take() {
                if let MessageKind::Request { id, method, params } = m.kind {
                    let declared = capability_for(&method).is_some_and(|c| host_declares(host, c));
                    if declared {
                        let key = format!("{}-{}", method.replace('/', "-"), questions.len() + 1);
                        questions.push(Question { key, upstream_id: id, method, params });
                    } else {
                        let why = format!("the host did not declare the capability {method} needs");
                        let _ = upstream
                            .client
                            .send(error_bytes(Some(&id), &RpcError::new(ErrorCode::METHOD_NOT_FOUND, why)))
                            .await;
                    }
                }
                // Collect every question the upstream asked at once.
                next = rx.try_recv().ok().filter(is_input_request);
            }
            if questions.is_empty() {
                continue;
            }
            let reply = input_required(&questions);
            let token = self.parked.park(Parked {
                binding: binding.to_binding(),
                upstream: Arc::clone(upstream),
                call,
                related: rx,
                questions,
                deadline: std::time::Instant::now() + upstream.settings.timeout,
            });
            return Ok(Driven::Parked(Reply::Result(with_request_state(reply, &token))));
        }
    }

    /// The binding a modern host's retry claims, when it carries one of the gateway's tokens.
    fn parked_binding(&self, host: &Host, method: &str, name: &str, p: &RawObject) -> Option<Binding> {
        let ours = host.modern() && p.get_str("requestState").is_some_and(|s| s.starts_with(STATE_PREFIX));
        ours.then(|| Binding {
            route: host.route.path().to_owned(),
            method: method.to_owned(),
            name: Some(name.to_owned()),
        })
    }

    /// A modern host's retry of a parked call: the answers go to the upstream's waiting
    /// requests and the call goes on.
    async fn resume(
        &self,
        host: &Host,
        binding: Binding,
        p: &RawObject,
        related: &mpsc::Sender<Bytes>,
    ) -> Result<Reply, GatewayError> {
        let token = p.get_str("requestState").unwrap_or_default();
        let invalid =
            || GatewayError::invalid("invalid_request_state", "requestState is unknown, expired or already used");
        let parked = self.parked.take(&token).ok_or_else(invalid)?;
        if parked.binding != binding {
            // Dropping the parked call cancels it upstream: a state replayed elsewhere ends it.
            return Err(invalid());
        }
        let answers = p.get_object("inputResponses").unwrap_or_default();
        let upstream = Arc::clone(&parked.upstream);
        let mut missing = Vec::new();
        for q in parked.questions {
            match answers.get(&q.key) {
                Some(answer) => {
                    let _ = upstream.client.send(result_bytes(Some(&q.upstream_id), answer)).await;
                }
                None => missing.push(q),
            }
        }
        if !missing.is_empty() {
            // Ask again for what is still unanswered.
            let reply = input_required(&missing);
            let token = self
                .parked
                .park(Parked { questions: missing, ..parked_rest(parked.call, parked.related, binding, upstream) });
            return Ok(Reply::Result(with_request_state(reply, &token)));
        }
        let host_token = progress_token(p.get("_meta"));
        let scope =
            Scope { host, upstream: &upstream, host_token: host_token.as_deref(), related, binding: binding.as_ref() };
        match self.drive(&scope, parked.call, parked.related).await? {
            Driven::Response(Outcome::Result(r)) => Ok(Reply::Result(r)),
            Driven::Response(Outcome::Error(e)) => Ok(Reply::UpstreamError(e)),
            Driven::Parked(reply) => Ok(reply),
        }
    }

    /// Turns an `input_required` result into server-to-client requests on a legacy host's
    /// stream, and builds the retry's params from the answers.
    async fn ask_legacy_host(
        &self,
        host: &Host,
        upstream: &Upstream,
        params: Option<&RawValue>,
        result: &RawValue,
        related: &mpsc::Sender<Bytes>,
    ) -> Result<Box<RawValue>, GatewayError> {
        let result = RawObject::parse(result).unwrap_or_default();
        let requests = result.get_object("inputRequests").unwrap_or_default();
        let mut responses = RawObject::default();
        for (key, request) in requests.iter() {
            let request = RawObject::parse(request).unwrap_or_default();
            let method = request.get_str("method").unwrap_or_default();
            let answer = self
                .ask_host(host, &method, request.get("params"), related, upstream.settings.timeout)
                .await
                .map_err(|e| upstream_error(upstream, UpstreamError::Protocol(format!("input for '{key}': {e}"))))?;
            responses.insert_raw(key, answer);
        }
        let mut retry = params.and_then(RawObject::parse).unwrap_or_default();
        retry.insert_object("inputResponses", &responses);
        match result.get("requestState") {
            Some(state) => retry.insert_raw("requestState", state.to_owned()),
            None => {
                retry.remove("requestState");
            }
        }
        Ok(retry.to_raw())
    }

    /// Sends a request to a legacy host on the current stream and waits for its answer.
    async fn ask_host(
        &self,
        host: &Host,
        method: &str,
        params: Option<&RawValue>,
        related: &mpsc::Sender<Bytes>,
        timeout: Duration,
    ) -> Result<Box<RawValue>, String> {
        let session = host.session.as_ref().ok_or("the host has no session to be asked in")?;
        let capability = match method {
            "elicitation/create" => "elicitation",
            "sampling/createMessage" => "sampling",
            "roots/list" => "roots",
            _ => return Err(format!("cannot ask the host '{method}'")),
        };
        if !session.has_capability(capability) {
            return Err(format!("the host did not declare the {capability} capability"));
        }
        let (id, answer) = session.expect_answer();
        let bytes = request_bytes(&id, method, params);
        related.send(Bytes::from(bytes)).await.map_err(|_| "the host went away")?;
        let message = tokio::time::timeout(timeout, answer)
            .await
            .map_err(|_| "the host did not answer in time")?
            .map_err(|_| "the host went away")?;
        match message.kind {
            MessageKind::Response { outcome: Outcome::Result(r), .. } => Ok(r),
            MessageKind::Response { outcome: Outcome::Error(e), .. } => Err(format!("the host refused: {}", e.get())),
            _ => Err("the host answered with something else".to_owned()),
        }
    }

    /// Relays one related message from the upstream to the host.
    async fn relay(
        &self,
        host: &Host,
        upstream: &Upstream,
        message: Message,
        host_token: Option<&RawValue>,
        related: &mpsc::Sender<Bytes>,
    ) {
        match &message.kind {
            MessageKind::Notification { method, params } if method == "notifications/progress" => {
                // Put the host's own token back.
                let (Some(token), Some(params)) = (host_token, params) else {
                    return;
                };
                let Some(mut p) = RawObject::parse(params) else {
                    return;
                };
                p.insert_raw("progressToken", token.to_owned());
                let bytes = portcullis_wire::envelope::notification_bytes(method, Some(&p.to_raw()));
                let _ = related.send(Bytes::from(bytes)).await;
            }
            MessageKind::Notification { .. } => {
                let _ = related.send(Bytes::from(message.to_bytes())).await;
            }
            MessageKind::Request { id, method, params } => {
                if method == "ping" {
                    let _ = upstream.client.send(result_bytes(Some(id), &empty_object())).await;
                    return;
                }
                let answer = if host.modern() {
                    Err("a modern host is asked for input only through input_required results".to_owned())
                } else {
                    self.ask_host(host, method, params.as_deref(), related, upstream.settings.timeout).await
                };
                let bytes = match answer {
                    Ok(result) => result_bytes(Some(id), &result),
                    Err(why) => {
                        tracing::debug!(server = %upstream.settings.name, method, why, "server request refused");
                        error_bytes(Some(id), &RpcError::new(ErrorCode::METHOD_NOT_FOUND, why))
                    }
                };
                if let Err(e) = upstream.client.send(bytes).await {
                    tracing::debug!(server = %upstream.settings.name, error = %e, "cannot answer server request");
                }
            }
            MessageKind::Response { .. } => {}
        }
    }

    /// Handles a host notification.
    pub async fn notification(&self, host: &Host, method: &str, params: Option<&RawValue>) {
        match method {
            "notifications/cancelled" => {
                let id = params
                    .and_then(RawObject::parse)
                    .and_then(|p| p.get("requestId").and_then(|r| RequestId::from_raw(r).ok()));
                if let (Some(session), Some(id)) = (&host.session, id) {
                    session.cancel_call(&id);
                }
            }
            "notifications/initialized" => {}
            "notifications/roots/list_changed" => {
                for u in &host.route.members {
                    let _ = u.client.send(portcullis_wire::envelope::notification_bytes(method, params)).await;
                }
            }
            _ => tracing::debug!(method, "host notification ignored"),
        }
    }
}

/// Runs an upstream call, noting its start and end on the request's trail.
async fn timed<T>(mut trail: Option<&mut CallTrail>, call: impl std::future::Future<Output = T>) -> T {
    let start = std::time::SystemTime::now();
    if let Some(t) = trail.as_deref_mut() {
        t.forwarded = true;
    }
    let out = call.await;
    if let Some(t) = trail {
        t.upstream_call = Some((start, std::time::SystemTime::now()));
    }
    out
}

/// Records a governed call whose request was dropped (the host cancelled or went away) after
/// it reached the upstream: its effect is unknown, so it is recorded as `cancelled`.
struct CallGuard<'a> {
    gateway: &'a Gateway,
    host: &'a Host,
    method: &'a str,
    trail: Option<CallTrail>,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        let (Some(trail), Some(audit)) = (self.trail.take(), &self.gateway.audit) else { return };
        if !trail.forwarded {
            return;
        }
        let summary = Summary {
            outcome: "cancelled",
            bytes: 0,
            reason: None,
            stage: None,
            message: None,
            policies: Vec::new(),
            blame: None,
            timeout: false,
        };
        audit.record_now(Kind::Call, call_entry(self.host, self.method, &trail, &summary, None));
    }
}

/// How a governed request ended, for its audit record.
struct Summary {
    /// The record's outcome word.
    outcome: &'static str,
    bytes: usize,
    reason: Option<&'static str>,
    stage: Option<&'static str>,
    message: Option<String>,
    policies: Vec<String>,
    /// Whose fault a failure was (not set for refusals).
    blame: Option<&'static str>,
    timeout: bool,
}

impl Summary {
    fn of(outcome: &Result<Reply, GatewayError>) -> Summary {
        let blank = |outcome| Summary {
            outcome,
            bytes: 0,
            reason: None,
            stage: None,
            message: None,
            policies: vec![],
            blame: None,
            timeout: false,
        };
        match outcome {
            Ok(Reply::Result(r)) => {
                // Cheap check before parsing: most results do not mention it at all.
                let is_error = r.get().contains("\"isError\"")
                    && RawObject::parse(r).and_then(|o| o.get("isError").map(|v| v.get() == "true")).unwrap_or(false);
                let word = if is_error {
                    "tool_error"
                } else if is_input_required(r) {
                    "input_required"
                } else {
                    "ok"
                };
                Summary { bytes: r.get().len(), ..blank(word) }
            }
            Ok(Reply::UpstreamError(e)) => Summary { bytes: e.get().len(), ..blank("upstream_error") },
            Err(e) => {
                let word = match e {
                    GatewayError::Denied(d) => match d.stage {
                        "approval" => "approval_required",
                        "validate" | "route" => "invalid",
                        "audit" => "refused",
                        _ => "denied",
                    },
                    GatewayError::Upstream { .. } => "failed",
                    GatewayError::InvalidParams { .. }
                    | GatewayError::MethodNotFound(_)
                    | GatewayError::ResourceNotFound(_) => "invalid",
                    GatewayError::SessionNotFound | GatewayError::Internal(_) => "error",
                };
                let (stage, policies) = match e {
                    GatewayError::Denied(d) => (
                        Some(d.stage),
                        match &d.detail {
                            crate::error::Detail::Policy(ids) => ids.clone(),
                            _ => Vec::new(),
                        },
                    ),
                    _ => (None, Vec::new()),
                };
                let blame = match (e.blame(), stage) {
                    (_, Some(_)) => None,
                    (crate::error::Blame::Host, None) => Some("host"),
                    (crate::error::Blame::Upstream, None) => Some("upstream"),
                    (crate::error::Blame::Control, None) => Some("control"),
                    (crate::error::Blame::Gateway, None) => Some("gateway"),
                };
                let timeout = matches!(e, GatewayError::Upstream { error: UpstreamError::Timeout(_), .. });
                Summary {
                    reason: Some(e.reason()),
                    stage,
                    message: Some(e.to_string()),
                    policies,
                    blame,
                    timeout,
                    ..blank(word)
                }
            }
        }
    }
}

/// The audit record of a governed request.
fn call_entry(host: &Host, method: &str, trail: &CallTrail, s: &Summary, error_code: Option<i32>) -> Entry {
    // Written straight from the call's state: no JSON tree is built (and nothing deep-copied) to
    // be serialized once.
    let client = trail
        .client
        .as_ref()
        .map(Facts::Value)
        .or_else(|| host.session.as_ref().and_then(|x| x.client_info.get()).map(|c| Facts::Raw(c.as_ref())));
    let body = CallBody {
        method,
        name: &trail.name,
        route: host.route.path(),
        protocol: host.version.as_str(),
        session: session_tag(host),
        client,
        principal: principal_facts(&host.principal),
        server_version: trail.server_version.as_deref(),
        registry_entry: trail.registry_entry.as_deref(),
        risk_tier: trail.tier.map(|t| t.as_str()),
        annotations: Annotations { read_only: trail.read_only, destructive: trail.destructive },
        arguments: trail.arguments.as_ref(),
        approval: Approval { state: if s.outcome == "approval_required" { "required" } else { "none" } },
        decision: trail.decision.as_ref().map(DecisionFacts),
        refusal: s.stage.map(|stage| RefusalFacts {
            stage,
            reason: s.reason,
            message: s.message.as_deref(),
            policies: &s.policies,
        }),
        result: CallResult {
            class: s.outcome,
            bytes: s.bytes,
            error_code,
            error_reason: if s.stage.is_none() { s.reason } else { None },
            error: if s.stage.is_none() { s.message.as_deref() } else { None },
        },
        latency_us: u64::try_from(trail.started.elapsed().as_micros()).unwrap_or(u64::MAX),
    };
    Entry {
        time_ms: trail.time_ms,
        kind: Kind::Call.as_str().to_owned(),
        correlation: trail.trace.trace_id.clone(),
        request: trail.span.clone(),
        parent: trail.trace.parent_id.clone(),
        principal: host.principal.id.clone(),
        server: trail.server.clone(),
        item: trail.item.clone(),
        outcome: s.outcome.to_owned(),
        // Plain structs, strings and JSON values: serializing them cannot fail.
        body: serde_json::to_string(&body).unwrap_or_else(|_| "{}".to_owned()),
    }
}

/// A call record's body, in the order its fields are written.
#[derive(serde::Serialize)]
struct CallBody<'a> {
    method: &'a str,
    name: &'a str,
    route: &'a str,
    protocol: &'a str,
    session: Option<String>,
    client: Option<Facts<'a>>,
    principal: PrincipalFacts<'a>,
    server_version: Option<&'a str>,
    registry_entry: Option<&'a str>,
    risk_tier: Option<&'static str>,
    annotations: Annotations,
    arguments: Option<&'a serde_json::Value>,
    approval: Approval,
    decision: Option<DecisionFacts<'a>>,
    refusal: Option<RefusalFacts<'a>>,
    result: CallResult<'a>,
    latency_us: u64,
}

#[derive(serde::Serialize)]
struct Annotations {
    read_only: Option<bool>,
    destructive: Option<bool>,
}

#[derive(serde::Serialize)]
struct Approval {
    state: &'static str,
}

#[derive(serde::Serialize)]
struct RefusalFacts<'a> {
    stage: &'static str,
    reason: Option<&'static str>,
    message: Option<&'a str>,
    policies: &'a [String],
}

#[derive(serde::Serialize)]
struct CallResult<'a> {
    class: &'static str,
    bytes: usize,
    error_code: Option<i32>,
    error_reason: Option<&'static str>,
    error: Option<&'a str>,
}

/// JSON a record quotes: a value the gateway holds, or text a host sent (valid JSON, as parsed).
enum Facts<'a> {
    Value(&'a serde_json::Value),
    Raw(&'a RawValue),
}

impl serde::Serialize for Facts<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Facts::Value(v) => v.serialize(serializer),
            Facts::Raw(r) => r.serialize(serializer),
        }
    }
}

/// The audit record of a list: what the host was shown.
fn list_entry(host: &Host, kind: ListKind, items: &[Box<RawValue>]) -> Entry {
    let key = match kind {
        ListKind::Tools | ListKind::Prompts => "name",
        ListKind::Resources => "uri",
        ListKind::ResourceTemplates => "uriTemplate",
    };
    let names: Vec<String> =
        items.iter().filter_map(|i| RawObject::parse(i).and_then(|o| o.get_str(key))).take(1000).collect();
    let trace = host_trace(host);
    let body = serde_json::json!({
        "method": kind.method(),
        "route": host.route.path(),
        "session": session_tag(host),
        "count": items.len(),
        "visible": names,
    });
    host_entry(host, trace, Kind::List, &body)
}

/// A record of something a host did outside a governed call (it opened a session, it listed).
fn host_entry(host: &Host, trace: TraceContext, kind: Kind, body: &serde_json::Value) -> Entry {
    Entry {
        time_ms: now_ms(),
        kind: kind.as_str().to_owned(),
        correlation: trace.trace_id,
        request: span_id(),
        parent: trace.parent_id,
        principal: host.principal.id.clone(),
        server: String::new(),
        item: String::new(),
        outcome: "ok".to_owned(),
        body: body.to_string(),
    }
}

/// An event no host caused, in a trace of its own.
fn system_entry(kind: Kind, server: &str, item: &str, outcome: &str, body: &serde_json::Value) -> Entry {
    let trace = TraceContext::root();
    Entry {
        time_ms: now_ms(),
        kind: kind.as_str().to_owned(),
        correlation: trace.trace_id,
        request: span_id(),
        parent: String::new(),
        principal: String::new(),
        server: server.to_owned(),
        item: item.to_owned(),
        outcome: outcome.to_owned(),
        body: body.to_string(),
    }
}

/// The trace a host's request belongs to: the one its HTTP request named, else its legacy
/// session's, else a new one.
fn host_trace(host: &Host) -> TraceContext {
    match (&host.trace, &host.session) {
        (Some(t), _) => t.clone(),
        (None, Some(s)) => TraceContext::of_session(&s.id),
        (None, None) => TraceContext::root(),
    }
}

/// What a record says of a principal beyond its id.
fn principal_facts(p: &Principal) -> PrincipalFacts<'_> {
    PrincipalFacts {
        kind: p.kind.as_str(),
        groups: &p.groups,
        tenant: p.tenant.as_deref(),
        auth: match &p.method {
            portcullis_identity::AuthMethod::Jwt { issuer } => {
                AuthFacts { method: "jwt", issuer: Some(issuer), key_id: None }
            }
            portcullis_identity::AuthMethod::ApiKey { key_id } => {
                AuthFacts { method: "api_key", issuer: None, key_id: Some(key_id) }
            }
            portcullis_identity::AuthMethod::Local => AuthFacts { method: "local", issuer: None, key_id: None },
            portcullis_identity::AuthMethod::None => AuthFacts { method: "none", issuer: None, key_id: None },
        },
    }
}

/// Who a record's principal is, as recorded.
#[derive(serde::Serialize)]
struct PrincipalFacts<'a> {
    kind: &'static str,
    groups: &'a [String],
    tenant: Option<&'a str>,
    auth: AuthFacts<'a>,
}

/// How a principal authenticated: the method, and the issuer or key it names.
#[derive(serde::Serialize)]
struct AuthFacts<'a> {
    method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<&'a str>,
}

/// A legacy session, named in records by a digest of its id (the id itself admits its bearer).
fn session_tag(host: &Host) -> Option<String> {
    use sha2::Digest;
    host.session.as_ref().map(|s| hex::encode(&sha2::Sha256::digest(s.id.as_bytes())[..8]))
}

/// A policy decision as a call record states it, written from the decision itself (nothing copied):
/// `{"outcome", "reason", "policies", "errors", "shadow": [{"set", "outcome", "policies"}]}`.
struct DecisionFacts<'a>(&'a portcullis_policy::Decision);

impl serde::Serialize for DecisionFacts<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        #[derive(serde::Serialize)]
        struct Shadow<'a> {
            set: &'a str,
            outcome: &'static str,
            policies: &'a [String],
        }
        let d = self.0;
        let shadow: Vec<Shadow<'_>> = d
            .shadow
            .iter()
            .map(|s| Shadow { set: &s.name, outcome: recorded_outcome(s.outcome), policies: &s.policies })
            .collect();
        let mut out = serializer.serialize_struct("Decision", 5)?;
        out.serialize_field("outcome", recorded_outcome(d.outcome))?;
        out.serialize_field("reason", d.reason)?;
        out.serialize_field("policies", &d.policies)?;
        out.serialize_field("errors", &d.errors)?;
        out.serialize_field("shadow", &shadow)?;
        out.end()
    }
}

/// A decision's outcome as call records have always written it (its variant's name in lower case,
/// so `approvalrequired`, not the `approval_required` of `Outcome::as_str`).
fn recorded_outcome(outcome: portcullis_policy::Outcome) -> &'static str {
    match outcome {
        portcullis_policy::Outcome::Allow => "allow",
        portcullis_policy::Outcome::Deny => "deny",
        portcullis_policy::Outcome::ApprovalRequired => "approvalrequired",
    }
}

/// What one upstream call is about: who asked, where it goes, where related messages go.
#[derive(Clone, Copy)]
struct Scope<'a> {
    host: &'a Host,
    upstream: &'a Arc<Upstream>,
    /// The host's own progress token, put back on relayed progress.
    host_token: Option<&'a RawValue>,
    related: &'a mpsc::Sender<Bytes>,
    binding: BindingRef<'a>,
}

/// How far a call got: its response, or parked waiting for the host's input.
enum Driven {
    Response(Outcome),
    Parked(Reply),
}

/// One request as it goes to the upstream: what `start_call` sends.
struct UpstreamCall<'a> {
    method: &'a str,
    params: Option<Arc<Box<RawValue>>>,
    name: Option<&'a str>,
    param_headers: &'a [(String, String)],
    /// A user's own credential for the upstream (token exchange), if it takes one.
    authorization: Option<http::HeaderValue>,
}

/// Starts an upstream call as an owned future (it may be parked beyond this request).
fn start_call(
    host: &Host,
    upstream: &Arc<Upstream>,
    call: UpstreamCall<'_>,
    related: mpsc::Sender<Message>,
) -> CallFuture {
    let UpstreamCall { method, params, name, param_headers, authorization } = call;
    let client = upstream.client.current();
    let timeout = upstream.settings.timeout;
    let method = method.to_owned();
    let name = name.map(str::to_owned);
    let param_headers = param_headers.to_vec();
    let host_capabilities = host.capabilities.clone();
    let log_level = host.log_level();
    Box::pin(async move {
        let opts = RequestOptions {
            timeout,
            name: name.as_deref(),
            host_capabilities: host_capabilities.as_deref(),
            param_headers: &param_headers,
            log_level: log_level.as_deref(),
            authorization: authorization.as_ref(),
        };
        let client = client.ok_or_else(|| UpstreamError::Unavailable("not connected".to_owned()))?;
        client.request(&method, params.as_deref().map(|p| &**p), opts, Some(related)).await
    })
}

fn parked_rest(
    call: CallFuture,
    related: mpsc::Receiver<Message>,
    binding: Binding,
    upstream: Arc<Upstream>,
) -> Parked {
    let deadline = std::time::Instant::now() + upstream.settings.timeout;
    Parked { binding, upstream, call, related, questions: Vec::new(), deadline }
}

/// The progress token a request's `_meta` carries.
fn progress_token(host_meta: Option<&RawValue>) -> Option<Box<RawValue>> {
    portcullis_wire::object::member(host_meta?, meta::PROGRESS_TOKEN).map(ToOwned::to_owned)
}

/// Whether a message from the upstream asks the client for input.
fn is_input_request(m: &Message) -> bool {
    matches!(&m.kind, MessageKind::Request { method, .. } if capability_for(method).is_some())
}

/// Whether a modern host declared a capability on this request.
fn host_declares(host: &Host, capability: &str) -> bool {
    host.capabilities.as_deref().and_then(|c| portcullis_wire::object::member(c, capability)).is_some()
}

/// An `input_required` result asking the host the parked questions.
fn input_required(questions: &[Question]) -> RawObject {
    let mut requests = RawObject::default();
    for q in questions {
        let mut r = RawObject::default();
        r.insert_str("method", &q.method);
        if let Some(p) = &q.params {
            r.insert_raw("params", p.clone());
        }
        requests.insert_object(&q.key, &r);
    }
    let mut result = RawObject::default();
    result.insert_str("resultType", "input_required");
    result.insert_object("inputRequests", &requests);
    result
}

fn with_request_state(mut result: RawObject, token: &str) -> Box<RawValue> {
    result.insert_str("requestState", token);
    result.to_raw()
}

/// A tool's `x-mcp-header` annotations (cheap when it has none).
/// A refused call as a tool result with `isError: true` (SEP-1303), the refusal's particulars
/// in `_meta`.
fn refusal_result(denied: &crate::error::Denied) -> Box<RawValue> {
    let rpc = GatewayError::Denied(denied.clone()).to_rpc(true);
    let result = serde_json::json!({
        "content": [{"type": "text", "text": denied.message}],
        "isError": true,
        "_meta": {"io.portcullis/refusal": rpc.data},
    });
    raw(result.to_string())
}

/// Records what the controls need of an admitted tool's list entry; `None` when the tool
/// must be hidden (the spec: an HTTP client must not expose a tool whose header annotations
/// are invalid).
fn learn_tool(upstream: &Upstream, name: &str, tool: &RawObject) -> Option<Arc<ToolFacts>> {
    match tool_param_headers(tool) {
        Ok(headers) => {
            upstream.learn_tool(name, ToolFacts::of(tool, headers));
            upstream.tool(name)
        }
        Err(why) => {
            tracing::warn!(server = %upstream.settings.name, tool = name, why, "invalid x-mcp-header; tool hidden");
            None
        }
    }
}

/// The gateway's own credentials for an upstream, read from their references.
struct Credentials {
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    env: Vec<(String, String)>,
    exchange: Option<TokenExchange>,
}

async fn resolve_credentials(config: &UpstreamCredentials) -> Result<Credentials, String> {
    let mut headers = Vec::with_capacity(config.headers.len());
    for (name, source) in &config.headers {
        let header = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("bad header name {name}"))?;
        let text = match source {
            HeaderSource::Plain(v) => v.clone(),
            HeaderSource::Bearer(r) => format!("Bearer {}", r.resolve().await?.expose()),
            HeaderSource::Secret(r) => r.resolve().await?.expose().to_owned(),
        };
        let mut value = http::HeaderValue::from_str(&text)
            .map_err(|_| format!("the value for header {name} is not a valid header value"))?;
        if !matches!(source, HeaderSource::Plain(_)) {
            value.set_sensitive(true);
        }
        headers.push((header, value));
    }
    let mut env = Vec::with_capacity(config.env.len());
    for (var, r) in &config.env {
        let secret: Secret = r.resolve().await.map_err(|e| format!("{var}: {e}"))?;
        env.push((var.clone(), secret.expose().to_owned()));
    }
    let exchange = match &config.token_exchange {
        Some(x) => {
            let secret = match &x.client_secret {
                Some(r) => Some(r.resolve().await.map_err(|e| format!("token_exchange.client_secret: {e}"))?),
                None => None,
            };
            Some(TokenExchange::new(x.clone(), secret)?)
        }
        None => None,
    };
    Ok(Credentials { headers, env, exchange })
}

/// Follows the policy files: a valid change is swapped in; an invalid one is reported and the
/// running sets stay.
async fn follow_policy(policy: std::sync::Weak<PolicyControl>, audit: Option<Arc<Auditor>>) {
    loop {
        let Some(interval) = policy.upgrade().map(|p| p.reload_interval()) else { return };
        tokio::time::sleep(interval).await;
        let Some(p) = policy.upgrade() else { return };
        let (outcome, body) = match p.reload_if_changed() {
            Ok(true) => {
                tracing::info!(target: "portcullis::policy", "policy changed; new sets in force");
                ("changed", serde_json::json!({}))
            }
            Ok(false) => continue,
            Err(e) => {
                tracing::error!(
                    target: "portcullis::policy",
                    "the changed policy does not validate; the running sets stay in force:\n{e}"
                );
                ("rejected", serde_json::json!({"error": e.to_string()}))
            }
        };
        if let Some(audit) = &audit {
            audit.record(Kind::PolicyChanged, system_entry(Kind::PolicyChanged, "", "", outcome, &body)).await;
        }
    }
}

fn tool_param_headers(tool: &RawObject) -> Result<Vec<ParamHeader>, String> {
    match tool.get("inputSchema") {
        Some(schema) if schema.get().contains("x-mcp-header") => {
            let schema: serde_json::Value = serde_json::from_str(schema.get()).map_err(|e| e.to_string())?;
            param_header::from_schema(&schema)
        }
        _ => Ok(Vec::new()),
    }
}

/// The `Mcp-Param-*` headers a call to this tool carries.
fn param_headers(target: &Target, params: &RawObject) -> Vec<(String, String)> {
    let Some(spec) = target.upstream.tool_headers(&target.name) else {
        return Vec::new();
    };
    let arguments: serde_json::Value =
        params.get("arguments").and_then(|a| serde_json::from_str(a.get()).ok()).unwrap_or(serde_json::Value::Null);
    spec.into_iter().filter_map(|h| param_header::value_at(&arguments, &h.path).map(|v| (h.name, v))).collect()
}

fn params_object(params: Option<&RawValue>) -> Result<RawObject, GatewayError> {
    params.and_then(RawObject::parse).ok_or_else(|| GatewayError::invalid("missing_params", "params must be an object"))
}

fn upstream_error(upstream: &Upstream, error: UpstreamError) -> GatewayError {
    GatewayError::Upstream { server: upstream.settings.name.clone(), error }
}

fn is_input_required(result: &RawValue) -> bool {
    // Cheap check before parsing: most results do not mention it at all.
    result.get().contains("input_required")
        && RawObject::parse(result).and_then(|r| r.get_str("resultType")).as_deref() == Some("input_required")
}

/// Adds what a modern host requires of every result (from a legacy upstream, or built by the gateway).
fn complete_result(result: Box<RawValue>, method: &str) -> Box<RawValue> {
    let cacheable = method == "resources/read";
    if result.get().contains("\"resultType\"") && (!cacheable || result.get().contains("\"ttlMs\"")) {
        return result;
    }
    let Some(mut obj) = RawObject::parse(&result) else {
        return result;
    };
    if !obj.contains("resultType") {
        obj.insert_str("resultType", "complete");
    }
    if cacheable && !obj.contains("ttlMs") {
        obj.insert("ttlMs", &0);
        obj.insert_str("cacheScope", "private");
    }
    obj.to_raw()
}

/// Translates an upstream error object's code for the host's era.
fn translate_error(error: Box<RawValue>, modern_host: bool, method: &str) -> Box<RawValue> {
    if method != "resources/read" {
        return error;
    }
    let Some(mut obj) = RawObject::parse(&error) else {
        return error;
    };
    let code = obj.get("code").map(|c| c.get().to_owned());
    let not_found_legacy = code.as_deref() == Some("-32002");
    if modern_host && not_found_legacy {
        obj.insert("code", &ErrorCode::INVALID_PARAMS.0);
        return obj.to_raw();
    }
    let modern_not_found =
        code.as_deref() == Some("-32602") && obj.get_object("data").is_some_and(|d| d.contains("uri"));
    if !modern_host && modern_not_found {
        obj.insert("code", &ErrorCode::RESOURCE_NOT_FOUND.0);
        return obj.to_raw();
    }
    error
}

fn reqwest_url(text: &str) -> Result<reqwest::Url, String> {
    reqwest::Url::parse(text).map_err(|e| e.to_string())
}

fn u_timeout(gateway: &std::sync::Weak<Gateway>, index: usize) -> Duration {
    gateway
        .upgrade()
        .and_then(|g| g.upstreams.get(index).map(|u| u.settings.timeout))
        .unwrap_or(Duration::from_secs(30))
}

/// Follows the registry: reloads when the store's revision moves (an approval, a revocation,
/// another replica's observation), reconnects accordingly and tells hosts their lists may
/// have changed; observes every upstream's lists again on the rescan interval.
async fn follow_registry(gateway: std::sync::Weak<Gateway>, registry: Arc<Registry>) {
    let mut last_scan = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(g) = gateway.upgrade() else { return };
        match registry.reload().await {
            Ok(true) => {
                let body = serde_json::json!({"revision": registry.revision()});
                g.system_event(Kind::RegistryChanged, "", "", "changed", body).await;
                if let Err(e) = g.reconcile().await {
                    tracing::error!(error = %e, "cannot apply the registry's change");
                }
                for route in &g.routes {
                    for kind in [ListKind::Tools, ListKind::Prompts, ListKind::Resources] {
                        let _ = route.events.send(RouteEvent::ListChanged(kind));
                    }
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "registry store unreachable; keeping the last snapshot"),
        }
        if last_scan.elapsed() >= registry.rescan_interval() {
            last_scan = std::time::Instant::now();
            for index in 0..g.upstreams.len() {
                if let Err(e) = g.observe_upstream(index).await {
                    tracing::debug!(error = %e, "upstream not observed on rescan");
                }
            }
        }
    }
}

/// Turns an upstream's unsolicited messages into route events.
async fn pump_upstream_events(
    gateway: std::sync::Weak<Gateway>,
    index: usize,
    mut events: tokio::sync::broadcast::Receiver<LinkEvent>,
) {
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(gateway) = gateway.upgrade() else { return };
        match event {
            LinkEvent::Reset => {
                // The upstream restarted: its lists may have changed, and a modern upstream's
                // listen stream must be opened again.
                if let Some(upstream) = gateway.upstreams.get(index) {
                    upstream.lists.invalidate(None);
                    upstream.subscriptions_changed.notify_one();
                    if let Some(registry) = &gateway.registry {
                        registry.forget_observations(&upstream.settings.name);
                    }
                }
                for route in gateway.routes_of(index) {
                    for kind in [ListKind::Tools, ListKind::Prompts, ListKind::Resources] {
                        let _ = route.events.send(RouteEvent::ListChanged(kind));
                    }
                }
            }
            LinkEvent::Message(message) => gateway.on_upstream_message(index, message).await,
        }
    }
}

/// Keeps a `subscriptions/listen` stream open to a modern upstream, on behalf of every host:
/// list changes always, and the resources hosts subscribed to. It is reopened when that set
/// changes, when the upstream ends it, and after a failure (with backoff).
async fn listen_upstream(gateway: std::sync::Weak<Gateway>, index: usize) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let Some(upstream) = gateway.upgrade().and_then(|g| g.upstreams.get(index).cloned()) else { return };
        let info = match upstream.client.info(upstream.settings.timeout).await {
            Ok(info) => info,
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let wants = ["tools", "prompts", "resources"].iter().any(|c| info.has_capability(c));
        if info.era() != Era::Modern || !wants {
            // Legacy upstreams notify on their own stream; wait for a change (e.g. a restart).
            upstream.subscriptions_changed.notified().await;
            continue;
        }
        let params = serde_json::json!({"notifications": {
            "toolsListChanged": true,
            "promptsListChanged": true,
            "resourcesListChanged": true,
            "resourceSubscriptions": upstream.subscribed_resources(),
        }});
        let params = raw(params.to_string());
        let opts = RequestOptions::own(Duration::from_secs(365 * 24 * 3600));
        let (tx, mut rx) = mpsc::channel::<Message>(64);
        let started = std::time::Instant::now();
        {
            let call = upstream.client.request("subscriptions/listen", Some(&params), opts, Some(tx));
            tokio::pin!(call);
            loop {
                tokio::select! {
                    Some(m) = rx.recv() => match gateway.upgrade() {
                        Some(g) => g.on_upstream_message(index, m).await,
                        None => return,
                    },
                    outcome = &mut call => {
                        if let Err(e) = outcome {
                            tracing::debug!(server = %upstream.settings.name, error = %e, "upstream listen stream ended");
                        }
                        break;
                    }
                    () = upstream.subscriptions_changed.notified() => break,
                }
            }
        }
        if started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        } else {
            backoff = Duration::from_millis(500);
        }
    }
}

impl Gateway {
    /// The routes an upstream belongs to.
    fn routes_of(&self, index: usize) -> impl Iterator<Item = &Arc<Route>> {
        let upstream = self.upstreams.get(index);
        self.routes.iter().filter(move |r| upstream.is_some_and(|u| r.members.iter().any(|m| Arc::ptr_eq(m, u))))
    }

    /// Handles a message an upstream sent outside any host call.
    async fn on_upstream_message(&self, index: usize, message: Message) {
        let Some(upstream) = self.upstreams.get(index) else { return };
        match &message.kind {
            MessageKind::Notification { method, params } => {
                let event = if let Some(kind) = ListKind::from_notification(method) {
                    upstream.lists.invalidate(Some(kind));
                    let body = serde_json::json!({"list": kind.method()});
                    self.system_event(Kind::UpstreamListChanged, &upstream.settings.name, "", "changed", body).await;
                    RouteEvent::ListChanged(kind)
                } else if method == "notifications/resources/updated" {
                    // The upstream's own subscription id means nothing to hosts.
                    let mut p = params.as_deref().and_then(RawObject::parse).unwrap_or_default();
                    if let Some(mut m) = p.get_object("_meta") {
                        m.remove(meta::SUBSCRIPTION_ID);
                        if m.is_empty() {
                            p.remove("_meta");
                        } else {
                            p.insert_object("_meta", &m);
                        }
                    }
                    let uri = p.get_str("uri").unwrap_or_default();
                    RouteEvent::ResourceUpdated { uri, params: Arc::from(p.to_raw().get()) }
                } else if method == "notifications/message" {
                    RouteEvent::Log(Arc::from(message.to_bytes()))
                } else {
                    return;
                };
                for route in self.routes_of(index) {
                    let _ = route.events.send(event.clone());
                }
            }
            MessageKind::Request { id, method, .. } => {
                // Not tied to any host call: there is no host to ask.
                let bytes = if method == "ping" {
                    result_bytes(Some(id), &empty_object())
                } else {
                    error_bytes(
                        Some(id),
                        &RpcError::new(
                            ErrorCode::METHOD_NOT_FOUND,
                            "no host call is in flight to route this request to",
                        ),
                    )
                };
                let _ = upstream.client.send(bytes).await;
            }
            MessageKind::Response { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use portcullis_policy::{Decision, Outcome, ShadowDecision};

    use super::DecisionFacts;

    /// The decision as call records wrote it before it was serialized from the decision itself.
    fn as_before(d: &Decision) -> serde_json::Value {
        serde_json::json!({
            "outcome": format!("{:?}", d.outcome).to_lowercase(),
            "reason": d.reason,
            "policies": d.policies,
            "errors": d.errors,
            "shadow": d.shadow.iter().map(|s| serde_json::json!({
                "set": s.name,
                "outcome": format!("{:?}", s.outcome).to_lowercase(),
                "policies": s.policies,
            })).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn a_recorded_decision_reads_as_it_always_has() {
        let shadow = |name: &str, outcome| ShadowDecision {
            name: name.to_owned(),
            outcome,
            policies: vec!["p\"1".to_owned()],
            reason: "allowed",
            errors: vec!["ignored".to_owned()],
        };
        for outcome in [Outcome::Allow, Outcome::Deny, Outcome::ApprovalRequired] {
            let d = Decision {
                outcome,
                policies: vec!["tier-low-anyone".to_owned(), "ü".to_owned()],
                reason: "approval_required",
                errors: vec!["x: division by zero".to_owned()],
                shadow: vec![shadow("next", Outcome::ApprovalRequired), shadow("other", Outcome::Deny)],
                arguments_truncated: false,
            };
            let text = serde_json::to_string(&DecisionFacts(&d)).expect("serializes");
            // The same text, keys in the same order.
            assert_eq!(text, as_before(&d).to_string());
        }
        let empty = Decision {
            outcome: Outcome::Deny,
            policies: Vec::new(),
            reason: "default_deny",
            errors: Vec::new(),
            shadow: Vec::new(),
            arguments_truncated: true,
        };
        assert_eq!(serde_json::to_string(&DecisionFacts(&empty)).expect("serializes"), as_before(&empty).to_string());
    }
}
