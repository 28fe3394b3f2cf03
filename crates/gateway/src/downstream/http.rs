//! The Streamable HTTP listener. One endpoint per route serves both eras:
//! an `initialize` (or an `Mcp-Session-Id`) selects the legacy, session-based
//! protocol; a request carrying modern `_meta` and headers is served statelessly.
//!
//! Responses are plain JSON unless something must be said before the final
//! response (progress, a request to the host), in which case the response
//! becomes an SSE stream. Legacy streams carry event ids and can be resumed
//! with `Last-Event-ID`; modern streams cannot, and closing one cancels the call.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use futures::{StreamExt, stream};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use portcullis_wire::envelope::{Body as WireBody, error_bytes, parse_body, result_bytes};
use portcullis_wire::{
    Era, ErrorCode, Message, MessageKind, ProtocolVersion, RawObject, RequestId, RpcError, header, meta, object,
};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::audit::trace::TraceContext;
use crate::config::ListenSettings;
use crate::downstream::listen::{Filter, feed_session, run_subscription};
use crate::gateway::{Gateway, Host};
use crate::identity::{AuthFailure, Authenticator, METADATA_PATH, subject_token};
use crate::route::Route;
use crate::secret::Secret;
use crate::session::{LISTEN_STREAM, Session, Sessions, StreamLog};
use portcullis_identity::Principal;

/// Shared state of the HTTP listener.
pub struct HttpState {
    pub gateway: Arc<Gateway>,
    pub sessions: Arc<Sessions>,
    pub settings: ListenSettings,
    /// Authenticates hosts; `None` when `[auth]` is not configured (anonymous, loopback only).
    pub auth: Option<Arc<Authenticator>>,
    anonymous: Arc<Principal>,
}

/// The listener's router: every path is looked up among the routes.
pub fn router(gateway: Arc<Gateway>, settings: ListenSettings, auth: Option<Arc<Authenticator>>) -> Router {
    let sessions = Arc::new(Sessions::new(settings.session_idle_timeout, settings.max_sessions));
    let reaper = Arc::downgrade(&sessions);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            match reaper.upgrade() {
                Some(s) => s.expire_idle(),
                None => return,
            }
        }
    });
    let state = Arc::new(HttpState { gateway, sessions, settings, auth, anonymous: Arc::new(Principal::anonymous()) });
    Router::new().fallback(handle).with_state(state)
}

/// Methods of the legacy era that 2026-07-28 removed; a modern request for one is a 404.
const REMOVED_IN_MODERN: [&str; 5] =
    ["initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"];

const KEEP_ALIVE: Duration = Duration::from_secs(15);

async fn handle(State(st): State<Arc<HttpState>>, req: Request) -> Response {
    if let Some(route_path) = req.uri().path().strip_prefix(METADATA_PATH) {
        return resource_metadata(&st, route_path, req.method());
    }
    let Some(route) = st.gateway.route_for_path(req.uri().path()) else {
        return plain(StatusCode::NOT_FOUND, "no MCP endpoint at this path");
    };
    if let Some(resp) = check_host_and_origin(&st.settings, req.headers()) {
        return resp;
    }
    // Authentication comes before anything else is read: the body of an unauthenticated
    // request is never parsed.
    let principal = match &st.auth {
        None => Arc::clone(&st.anonymous),
        // Boxed, as the rarer paths in `post` are: a request's future is moved whole (into
        // the box the router keeps it in), so it is kept to the size of the common path.
        Some(auth) => match Box::pin(auth.authenticate(req.headers(), route.path())).await {
            Ok(p) => Arc::new(p),
            Err(failure) => return refuse_credentials(auth, route.path(), &failure),
        },
    };
    let credential = match principal.method {
        portcullis_identity::AuthMethod::Jwt { .. } => subject_token(req.headers()).map(Arc::new),
        _ => None,
    };
    let (parts, body) = req.into_parts();
    let trace = header_str(&parts.headers, "traceparent").and_then(TraceContext::parse);
    let caller = Caller { principal, credential, trace };
    match parts.method {
        Method::POST => post(&st, route, &parts.headers, body, caller).await,
        Method::GET => get(&st, &route, &parts.headers, &caller.principal),
        Method::DELETE => delete(&st, &route, &parts.headers, &caller.principal),
        _ => {
            let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "use POST (or GET/DELETE with a legacy session)");
            resp.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("POST, GET, DELETE"));
            resp
        }
    }
}

/// DNS-rebinding protection: the Host must be one we serve, and a browser's Origin one we allow.
fn check_host_and_origin(settings: &ListenSettings, headers: &HeaderMap) -> Option<Response> {
    if let Some(host) = headers.get(http::header::HOST).and_then(|h| h.to_str().ok()) {
        let name = strip_port(host);
        if !settings.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            return Some(rpc_status(
                StatusCode::FORBIDDEN,
                None,
                &RpcError::new(ErrorCode::INVALID_REQUEST, "host not allowed").with_reason("host_not_allowed"),
            ));
        }
    }
    if let Some(origin) = headers.get(http::header::ORIGIN) {
        let allowed = origin.to_str().is_ok_and(|o| settings.allowed_origins.iter().any(|a| origin_matches(a, o)));
        if !allowed {
            return Some(rpc_status(
                StatusCode::FORBIDDEN,
                None,
                &RpcError::new(ErrorCode::INVALID_REQUEST, "origin not allowed").with_reason("origin_not_allowed"),
            ));
        }
    }
    None
}

/// Whether an `Origin` matches an allowed pattern; a trailing `:*` matches any port or none.
fn origin_matches(pattern: &str, origin: &str) -> bool {
    match pattern.strip_suffix(":*") {
        Some(base) => {
            let Some(rest) =
                origin.get(..base.len()).filter(|b| b.eq_ignore_ascii_case(base)).map(|_| &origin[base.len()..])
            else {
                return false;
            };
            rest.is_empty()
                || rest.strip_prefix(':').is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        }
        None => pattern.eq_ignore_ascii_case(origin),
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// Who sent a request: the principal, and its access token when it is kept for token exchange.
struct Caller {
    principal: Arc<Principal>,
    credential: Option<Arc<Secret>>,
    /// The request's W3C `traceparent` header, when valid.
    trace: Option<TraceContext>,
}

/// A route's protected-resource metadata (RFC 9728); the bare well-known path answers for a
/// gateway with one route.
fn resource_metadata(st: &HttpState, route_path: &str, method: &Method) -> Response {
    let Some(auth) = &st.auth else { return plain(StatusCode::NOT_FOUND, "this gateway takes no OAuth tokens") };
    if method != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    let route = if route_path.is_empty() {
        match st.gateway.routes.as_slice() {
            [only] => Some(Arc::clone(only)),
            _ => None,
        }
    } else {
        st.gateway.route_for_path(route_path)
    };
    let Some(route) = route else { return plain(StatusCode::NOT_FOUND, "no MCP endpoint at this path") };
    let doc = auth.metadata(route.path(), &st.gateway.config.gateway.name);
    let mut resp = json(StatusCode::OK, doc.to_string().into_bytes());
    resp.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    resp
}

/// 401 (no or bad credentials), 403 (missing scope) or 503 (issuer unreachable), with the
/// `WWW-Authenticate` challenge that points the host at the metadata.
fn refuse_credentials(auth: &Authenticator, route_path: &str, failure: &AuthFailure) -> Response {
    let (status, code) = match failure {
        AuthFailure::Missing | AuthFailure::Invalid { .. } => (StatusCode::UNAUTHORIZED, ErrorCode::UNAUTHENTICATED),
        AuthFailure::InsufficientScope { .. } => (StatusCode::FORBIDDEN, ErrorCode::INSUFFICIENT_SCOPE),
        AuthFailure::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::UNAUTHENTICATED),
    };
    tracing::info!(route = route_path, reason = failure.reason(), "host not authenticated");
    let mut resp = rpc_status(status, None, &RpcError::new(code, failure.message()).with_reason(failure.reason()));
    if status != StatusCode::SERVICE_UNAVAILABLE
        && let Ok(v) = HeaderValue::from_str(&auth.challenge(route_path, failure))
    {
        resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// A live session of this route opened by this principal (another principal's session id is
/// treated as unknown: a session is never a credential).
fn owned_session(st: &HttpState, id: &str, route: &Arc<Route>, principal: &Principal) -> Option<Arc<Session>> {
    st.sessions.get(id).filter(|s| {
        Arc::ptr_eq(&s.route, route) && s.principal.id == principal.id && s.principal.kind == principal.kind
    })
}

async fn post(st: &HttpState, route: Arc<Route>, headers: &HeaderMap, body: Body, caller: Caller) -> Response {
    let Caller { principal, credential, trace } = caller;
    let limit = st.gateway.config.gateway.max_body_bytes;
    let bytes = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return rpc_status(
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                &RpcError::new(ErrorCode::INVALID_REQUEST, format!("request body exceeds {limit} bytes"))
                    .with_reason("body_too_large"),
            );
        }
        Err(_) => return plain(StatusCode::BAD_REQUEST, "unreadable request body"),
    };
    let session = match header_str(headers, header::SESSION_ID) {
        Some(id) => match owned_session(st, id, &route, &principal) {
            Some(s) => Some(s),
            None => {
                return rpc_status(
                    StatusCode::NOT_FOUND,
                    None,
                    &RpcError::new(ErrorCode::INVALID_REQUEST, "session not found; initialize again")
                        .with_reason("session_not_found"),
                );
            }
        },
        None => None,
    };
    let message = match parse_body(&bytes) {
        Err(e) => return rpc_status(StatusCode::BAD_REQUEST, e.id(), &e.to_rpc_error()),
        // Boxed (and `legacy` and `initialize` below): `batch` alone is ~7 KiB of future.
        Ok(WireBody::Batch(items)) => return Box::pin(batch(st, session, items, credential, trace)).await,
        Ok(WireBody::Single(m)) => m,
    };
    if let Some(session) = session {
        if let Some(resp) = check_legacy_version(headers, &session) {
            return resp;
        }
        return Box::pin(legacy(st, session, message, credential, trace)).await;
    }
    let version_header = header_str(headers, header::PROTOCOL_VERSION);
    let modern_header = version_header.and_then(ProtocolVersion::parse).is_some_and(|v| v.era() == Era::Modern);
    if message.method() == Some("initialize") && !modern_header {
        return Box::pin(initialize(st, route, &message, principal, trace)).await;
    }
    let parsed_header = version_header.map(ProtocolVersion::parse);
    // A modern header settles the era; `modern` reads the body's version with the rest of what
    // it checks, in one scan. Without one, the body's version decides.
    let modern_marker = matches!(parsed_header, Some(Some(v)) if v.era() == Era::Modern)
        || message
            .params()
            .and_then(|p| object::member(p, "_meta"))
            .and_then(|m| object::string(object::member(m, meta::PROTOCOL_VERSION)))
            .is_some();
    match parsed_header {
        Some(None) if !modern_marker => unsupported_version(message.id(), version_header.unwrap_or_default()),
        _ if modern_marker => modern(st, route, headers, message, Caller { principal, credential, trace }).await,
        _ => rpc_status(
            StatusCode::BAD_REQUEST,
            message.id(),
            &RpcError::new(
                ErrorCode::INVALID_REQUEST,
                "no session: send initialize first, or a 2026-07-28 request with _meta",
            )
            .with_reason("session_required")
            .with("supported", ProtocolVersion::supported_strings()),
        ),
    }
}

fn unsupported_version(id: Option<&RequestId>, requested: &str) -> Response {
    rpc_status(
        StatusCode::BAD_REQUEST,
        id,
        &RpcError::new(ErrorCode::UNSUPPORTED_PROTOCOL_VERSION, "unsupported protocol version")
            .with("supported", ProtocolVersion::supported_strings())
            .with("requested", requested)
            .with_reason("unsupported_protocol_version"),
    )
}

fn check_legacy_version(headers: &HeaderMap, session: &Session) -> Option<Response> {
    let v = header_str(headers, header::PROTOCOL_VERSION)?;
    match ProtocolVersion::parse(v) {
        Some(p) if p == session.version => None,
        _ => Some(rpc_status(
            StatusCode::BAD_REQUEST,
            None,
            &RpcError::new(
                ErrorCode::INVALID_REQUEST,
                format!("MCP-Protocol-Version must be the negotiated {}", session.version),
            )
            .with_reason("protocol_version_mismatch"),
        )),
    }
}

async fn initialize(
    st: &HttpState,
    route: Arc<Route>,
    message: &Message,
    principal: Arc<Principal>,
    trace: Option<TraceContext>,
) -> Response {
    let MessageKind::Request { id, params, .. } = &message.kind else {
        return rpc_status(
            StatusCode::BAD_REQUEST,
            None,
            &RpcError::new(ErrorCode::INVALID_REQUEST, "initialize must be a request"),
        );
    };
    let p = params.as_deref().and_then(RawObject::parse).unwrap_or_default();
    let Some(requested) = p.get_str("protocolVersion") else {
        return rpc_status(
            StatusCode::BAD_REQUEST,
            Some(id),
            &RpcError::new(ErrorCode::INVALID_PARAMS, "params.protocolVersion must be a string")
                .with_reason("missing_protocol_version"),
        );
    };
    let version = ProtocolVersion::negotiate_legacy(&requested);
    let capabilities = p.get("capabilities").map_or_else(portcullis_wire::object::empty_object, ToOwned::to_owned);
    let session = st.sessions.create(Arc::clone(&route), version, capabilities, principal);
    if let Some(client) = p.get("clientInfo") {
        session.set_client_info(client);
    }
    st.gateway.session_opened(&legacy_host(&session, None, trace), None).await;
    tokio::spawn(feed_session(Arc::clone(&st.gateway), Arc::clone(&session)));
    let result = st.gateway.initialize_result(&route, version).await;
    let mut resp = json(StatusCode::OK, result_bytes(Some(id), &result));
    if let Ok(v) = HeaderValue::from_str(&session.id) {
        resp.headers_mut().insert(header::SESSION_ID, v);
    }
    resp
}

/// A JSON-RPC batch: only sessions that negotiated 2025-03-26 may send one.
async fn batch(
    st: &HttpState,
    session: Option<Arc<Session>>,
    items: Vec<Result<Message, portcullis_wire::ParseError>>,
    credential: Option<Arc<Secret>>,
    trace: Option<TraceContext>,
) -> Response {
    let Some(session) = session.filter(|s| s.version.allows_batches()) else {
        return rpc_status(
            StatusCode::BAD_REQUEST,
            None,
            &RpcError::new(
                ErrorCode::INVALID_REQUEST,
                "JSON-RPC batches are allowed only in protocol revision 2025-03-26",
            )
            .with_reason("batch_not_allowed"),
        );
    };
    let host = legacy_host(&session, credential, trace);
    let (tx, _rx) = mpsc::channel(64);
    let mut responses: Vec<Vec<u8>> = Vec::new();
    for item in items {
        match item {
            Err(e) => responses.push(error_bytes(e.id(), &e.to_rpc_error())),
            Ok(m) => match &m.kind {
                MessageKind::Request { id, method, params } => {
                    responses.push(st.gateway.request(&host, id, method, params.as_deref(), &tx).await.bytes);
                }
                MessageKind::Notification { method, params } => {
                    st.gateway.notification(&host, method, params.as_deref()).await
                }
                MessageKind::Response { .. } => {
                    session.answer(m);
                }
            },
        }
    }
    if responses.is_empty() {
        return empty(StatusCode::ACCEPTED);
    }
    let mut body = b"[".to_vec();
    body.extend(responses.join(&b","[..]));
    body.push(b']');
    json(StatusCode::OK, body)
}

fn legacy_host(session: &Arc<Session>, credential: Option<Arc<Secret>>, trace: Option<TraceContext>) -> Host {
    Host {
        route: Arc::clone(&session.route),
        version: session.version,
        session: Some(Arc::clone(session)),
        capabilities: None,
        principal: Arc::clone(&session.principal),
        credential,
        trace,
    }
}

enum Out {
    Related(Bytes),
    Final(Vec<u8>, Option<String>),
}

async fn legacy(
    st: &HttpState,
    session: Arc<Session>,
    message: Message,
    credential: Option<Arc<Secret>>,
    trace: Option<TraceContext>,
) -> Response {
    let host = legacy_host(&session, credential, trace);
    let (id, method, params) = match message.kind {
        MessageKind::Response { .. } => {
            session.answer(message);
            return empty(StatusCode::ACCEPTED);
        }
        MessageKind::Notification { method, params } => {
            st.gateway.notification(&host, &method, params.as_deref()).await;
            return empty(StatusCode::ACCEPTED);
        }
        MessageKind::Request { id, method, params } => (id, method, params),
    };
    if method == "initialize" {
        return rpc_status(
            StatusCode::BAD_REQUEST,
            Some(&id),
            &RpcError::new(ErrorCode::INVALID_REQUEST, "session already initialized")
                .with_reason("already_initialized"),
        );
    }
    // In the legacy era a dropped connection is not a cancellation: the call runs on,
    // its events kept for resumption, until it ends or the host cancels it.
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(64);
    let cancel = session.start_call(&id);
    let gateway = Arc::clone(&st.gateway);
    let call_session = Arc::clone(&session);
    tokio::spawn(async move {
        let (rel_tx, mut rel_rx) = mpsc::channel::<Bytes>(64);
        let call = gateway.request(&host, &id, &method, params.as_deref(), &rel_tx);
        tokio::pin!(call);
        let final_bytes = loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break None,
                Some(b) = rel_rx.recv() => { let _ = out_tx.send(Out::Related(b)).await; }
                r = &mut call => break Some(r),
            }
        };
        while let Ok(b) = rel_rx.try_recv() {
            let _ = out_tx.send(Out::Related(b)).await;
        }
        if let Some(answer) = final_bytes {
            let _ = out_tx.send(Out::Final(answer.bytes, answer.trace)).await;
        }
        call_session.end_call(&id);
    });
    match out_rx.recv().await {
        None => empty(StatusCode::ACCEPTED),
        Some(Out::Final(bytes, trace)) => with_trace(json(StatusCode::OK, bytes), trace),
        Some(Out::Related(first)) => {
            let (stream_id, log) = session.open_stream();
            log.push(first);
            let pump_log = Arc::clone(&log);
            tokio::spawn(async move {
                while let Some(out) = out_rx.recv().await {
                    match out {
                        Out::Related(b) => {
                            pump_log.push(b);
                        }
                        Out::Final(b, _) => {
                            pump_log.push(Bytes::from(b));
                        }
                    }
                }
                pump_log.finish();
            });
            let priming = session.version >= ProtocolVersion::V2025_11_25;
            sse(log_stream(log, stream_id, 1, priming, None))
        }
    }
}

/// A resumable SSE body reading a session stream's log from `from` on.
fn log_stream(
    log: Arc<StreamLog>,
    stream_id: u64,
    from: u64,
    priming: bool,
    listener: Option<(Arc<Session>, u64)>,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    let first = priming.then(|| portcullis_transport::sse::encode_priming(&format!("{stream_id}-0"), 1000));
    let start = stream::iter(first.map(Ok::<Bytes, std::convert::Infallible>));
    let rest = stream::unfold((log, from, listener), move |(log, next, listener)| async move {
        if let Some((session, generation)) = &listener
            && (!session.is_current_listener(*generation) || session.closed.is_cancelled())
        {
            return None;
        }
        let closed = async {
            match &listener {
                Some((session, _)) => session.closed.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let read = tokio::select! {
            r = tokio::time::timeout(KEEP_ALIVE, log.read(next)) => r,
            () = closed => return None,
        };
        match read {
            Err(_) => Some((Ok(Bytes::from_static(b": keep-alive\n\n")), (log, next, listener))),
            Ok(None) => None,
            Ok(Some(events)) => {
                let mut chunk = Vec::new();
                let mut last = next;
                for (seq, bytes) in events {
                    chunk.extend_from_slice(&portcullis_transport::sse::encode(
                        Some(&format!("{stream_id}-{seq}")),
                        &bytes,
                    ));
                    last = seq;
                }
                if let Some((session, _)) = &listener {
                    session.mark_listen_delivered(last);
                }
                Some((Ok(Bytes::from(chunk)), (log, last + 1, listener)))
            }
        }
    });
    start.chain(rest)
}

async fn modern(st: &HttpState, route: Arc<Route>, headers: &HeaderMap, message: Message, caller: Caller) -> Response {
    let Caller { principal, credential, trace } = caller;
    let (id, method, params) = match message.kind {
        MessageKind::Request { id, method, params } => (id, method, params),
        // 2026-07-28 defines no client notifications over HTTP; accept and ignore them.
        MessageKind::Notification { .. } => return empty(StatusCode::ACCEPTED),
        MessageKind::Response { .. } => {
            return rpc_status(
                StatusCode::BAD_REQUEST,
                None,
                &RpcError::new(ErrorCode::INVALID_REQUEST, "a 2026-07-28 client sends no responses")
                    .with_reason("unexpected_response"),
            );
        }
    };
    if REMOVED_IN_MODERN.contains(&method.as_str()) {
        return rpc_status(
            StatusCode::NOT_FOUND,
            Some(&id),
            &RpcError::new(
                ErrorCode::METHOD_NOT_FOUND,
                format!("method not found: {method} does not exist in 2026-07-28"),
            )
            .with_reason("method_not_found"),
        );
    }
    let mismatch = |why: String| {
        rpc_status(
            StatusCode::BAD_REQUEST,
            Some(&id),
            &RpcError::new(ErrorCode::HEADER_MISMATCH, format!("header mismatch: {why}"))
                .with_reason("header_mismatch"),
        )
    };
    let Some(version_header) = header_str(headers, header::PROTOCOL_VERSION) else {
        return mismatch("missing MCP-Protocol-Version header".to_owned());
    };
    let Some(version) = ProtocolVersion::parse(version_header).filter(|v| v.era() == Era::Modern) else {
        return unsupported_version(Some(&id), version_header);
    };
    // One borrowed scan of the params for what the listener checks, and one of `_meta`;
    // nothing is copied.
    let name_field = match method.as_str() {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    let [meta_member, name_member, arguments] = params
        .as_deref()
        .and_then(|p| object::members(p, ["_meta", name_field.unwrap_or("name"), "arguments"]))
        .unwrap_or_default();
    let [body_version, capabilities] = meta_member
        .and_then(|m| object::members(m, [meta::PROTOCOL_VERSION, meta::CLIENT_CAPABILITIES]))
        .unwrap_or_default();
    let Some(body_version) = object::string(body_version) else {
        return invalid_meta(&id, "params._meta[\"io.modelcontextprotocol/protocolVersion\"] is required");
    };
    if body_version != version_header {
        return mismatch(format!("MCP-Protocol-Version '{version_header}' does not match the body's '{body_version}'"));
    }
    let Some(capabilities) = capabilities.map(ToOwned::to_owned) else {
        return invalid_meta(&id, "params._meta[\"io.modelcontextprotocol/clientCapabilities\"] is required");
    };
    match headers.get(header::METHOD).map(|v| header::decode_value(v.as_bytes())) {
        None => return mismatch("missing Mcp-Method header".to_owned()),
        Some(Some(m)) if m == method => {}
        Some(_) => return mismatch("Mcp-Method does not match the body's method".to_owned()),
    }
    let body_name = object::string(name_member);
    if let Some(field) = name_field {
        match headers.get(header::NAME).map(|v| header::decode_value(v.as_bytes())) {
            None => return mismatch("missing Mcp-Name header".to_owned()),
            Some(Some(n)) if Some(&n) == body_name.as_ref() => {}
            Some(_) => return mismatch(format!("Mcp-Name does not match params.{field}")),
        }
    }
    if method == "tools/call"
        && let Err(why) = check_param_headers(headers, &route, body_name.as_deref(), arguments)
    {
        return mismatch(why);
    }
    let known = matches!(
        method.as_str(),
        "server/discover"
            | "tools/list"
            | "tools/call"
            | "prompts/list"
            | "prompts/get"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
            | "subscriptions/listen"
            | "completion/complete"
    );
    if !known && route.members.len() != 1 {
        return rpc_status(
            StatusCode::NOT_FOUND,
            Some(&id),
            &RpcError::new(ErrorCode::METHOD_NOT_FOUND, format!("method not found: {method}"))
                .with_reason("method_not_found"),
        );
    }
    let host = Host {
        route: Arc::clone(&route),
        version,
        session: None,
        capabilities: Some(capabilities),
        principal,
        credential,
        trace,
    };
    if method == "subscriptions/listen" {
        let Some(filter) = Filter::parse(params.as_deref()) else {
            return invalid_meta(&id, "params.notifications must be an object");
        };
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        tokio::spawn(run_subscription(Arc::clone(&st.gateway), host, id, filter, tx));
        return sse(channel_stream(rx));
    }
    let (rel_tx, mut rel_rx) = mpsc::channel::<Bytes>(64);
    let gateway = Arc::clone(&st.gateway);
    let call = async move { gateway.request(&host, &id, &method, params.as_deref(), &rel_tx).await };
    let mut call = Box::pin(call);
    let first = tokio::select! {
        biased;
        Some(b) = rel_rx.recv() => b,
        r = &mut call => return with_trace(json(modern_status(r.error_code), r.bytes), r.trace),
    };
    // Something comes before the response: stream it. Closing the stream cancels the call.
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        if tx.send(first).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                biased;
                () = tx.closed() => return,
                Some(b) = rel_rx.recv() => if tx.send(b).await.is_err() { return },
                r = &mut call => {
                    while let Ok(b) = rel_rx.try_recv() {
                        let _ = tx.send(b).await;
                    }
                    let _ = tx.send(Bytes::from(r.bytes)).await;
                    return;
                }
            }
        }
    });
    sse(channel_stream(rx))
}

/// Checks the `Mcp-Param-*` headers a tool's schema asks for against the call's arguments.
/// Headers the gateway does not recognize are ignored, as the spec asks of intermediaries.
fn check_param_headers(
    headers: &HeaderMap,
    route: &Route,
    name: Option<&str>,
    arguments: Option<&RawValue>,
) -> Result<(), String> {
    let Some(target) = name.and_then(|n| route.resolve_name(n)) else {
        return Ok(());
    };
    let Some(spec) = target.upstream.tool_headers(&target.name) else {
        return Ok(());
    };
    let arguments: serde_json::Value =
        arguments.and_then(|a| serde_json::from_str(a.get()).ok()).unwrap_or(serde_json::Value::Null);
    for h in spec {
        let name = format!("{}{}", header::PARAM_PREFIX, h.name.to_ascii_lowercase());
        let expected = portcullis_wire::param_header::value_at(&arguments, &h.path);
        let sent = match headers.get(name.as_str()) {
            Some(v) => Some(
                header::decode_value(v.as_bytes())
                    .ok_or_else(|| format!("Mcp-Param-{} has invalid characters", h.name))?,
            ),
            None => None,
        };
        match (expected, sent) {
            (None, None) => {}
            (Some(_), None) => return Err(format!("missing Mcp-Param-{} header", h.name)),
            (None, Some(_)) => {
                return Err(format!("Mcp-Param-{} is set but the argument is absent", h.name));
            }
            (Some(e), Some(s)) => {
                let same =
                    e == s.trim() || matches!((e.parse::<f64>(), s.trim().parse::<f64>()), (Ok(a), Ok(b)) if a == b);
                if !same {
                    return Err(format!("Mcp-Param-{} does not match the argument", h.name));
                }
            }
        }
    }
    Ok(())
}

/// The HTTP status 2026-07-28 gives a JSON response with this error code.
fn modern_status(code: Option<i32>) -> StatusCode {
    match code.map(ErrorCode) {
        Some(ErrorCode::METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
        Some(
            ErrorCode::HEADER_MISMATCH | ErrorCode::MISSING_CLIENT_CAPABILITY | ErrorCode::UNSUPPORTED_PROTOCOL_VERSION,
        ) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

fn invalid_meta(id: &RequestId, why: &str) -> Response {
    rpc_status(
        StatusCode::BAD_REQUEST,
        Some(id),
        &RpcError::new(ErrorCode::INVALID_PARAMS, why.to_owned()).with_reason("missing_meta"),
    )
}

/// An SSE body from a channel of messages (modern streams: no ids, keep-alives while idle).
fn channel_stream(rx: mpsc::Receiver<Bytes>) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    stream::unfold(rx, |mut rx| async move {
        match tokio::time::timeout(KEEP_ALIVE, rx.recv()).await {
            Err(_) => Some((Ok(Bytes::from_static(b": keep-alive\n\n")), rx)),
            Ok(Some(bytes)) => Some((Ok(portcullis_transport::sse::encode(None, &bytes)), rx)),
            Ok(None) => None,
        }
    })
}

fn get(st: &HttpState, route: &Arc<Route>, headers: &HeaderMap, principal: &Principal) -> Response {
    let Some(session_id) = header_str(headers, header::SESSION_ID) else {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "no standalone stream without a legacy session; use subscriptions/listen",
        );
    };
    let Some(session) = owned_session(st, session_id, route, principal) else {
        return plain(StatusCode::NOT_FOUND, "session not found");
    };
    let accepts_sse =
        header_str(headers, http::header::ACCEPT.as_str()).is_some_and(|a| a.contains("text/event-stream"));
    if !accepts_sse {
        return plain(StatusCode::NOT_ACCEPTABLE, "the stream is text/event-stream");
    }
    if let Some(last) = header_str(headers, header::LAST_EVENT_ID) {
        let parsed = last.split_once('-').and_then(|(s, q)| Some((s.parse::<u64>().ok()?, q.parse::<u64>().ok()?)));
        let Some((stream_id, seq)) = parsed else {
            return plain(StatusCode::BAD_REQUEST, "malformed Last-Event-ID");
        };
        let Some(log) = session.stream(stream_id) else {
            return plain(StatusCode::NOT_FOUND, "that stream can no longer be resumed");
        };
        let listener = (stream_id == LISTEN_STREAM).then(|| (Arc::clone(&session), session.new_listener()));
        return sse(log_stream(log, stream_id, seq + 1, false, listener));
    }
    let Some(log) = session.stream(LISTEN_STREAM) else {
        return plain(StatusCode::NOT_FOUND, "session not found");
    };
    let generation = session.new_listener();
    let from = session.listen_delivered() + 1;
    sse(log_stream(log, LISTEN_STREAM, from, false, Some((Arc::clone(&session), generation))))
}

fn delete(st: &HttpState, route: &Arc<Route>, headers: &HeaderMap, principal: &Principal) -> Response {
    match header_str(headers, header::SESSION_ID) {
        None => plain(StatusCode::METHOD_NOT_ALLOWED, "nothing to delete without a legacy session"),
        Some(id) if owned_session(st, id, route, principal).is_some() && st.sessions.remove(id) => {
            empty(StatusCode::OK)
        }
        Some(_) => plain(StatusCode::NOT_FOUND, "session not found"),
    }
}

/// Adds the `traceresponse` header naming the gateway's span for the call.
fn with_trace(mut resp: Response, trace: Option<String>) -> Response {
    if let Some(v) = trace.and_then(|t| HeaderValue::from_str(&t).ok()) {
        resp.headers_mut().insert("traceresponse", v);
    }
    resp
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn sse(body: impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static) -> Response {
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn rpc_status(status: StatusCode, id: Option<&RequestId>, error: &RpcError) -> Response {
    json(status, error_bytes(id, error))
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp
}

/// Serves the listener until `stop` is cancelled.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, stop: CancellationToken) -> std::io::Result<()> {
    // Without TCP_NODELAY a streamed response's small writes wait on the host's delayed ACK (~40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |s| {
        let _ = s.set_nodelay(true);
    });
    serve_from(listener, app, stop).await
}

/// Serves what a listener accepts until `stop` is cancelled, then waits for the open connections.
pub(crate) async fn serve_from<L>(listener: L, app: Router, stop: CancellationToken) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_patterns_match_ports_only_where_asked() {
        assert!(origin_matches("http://localhost:*", "http://localhost:3000"));
        assert!(origin_matches("http://localhost:*", "http://localhost"));
        assert!(!origin_matches("http://localhost:*", "http://localhost.evil.example"));
        assert!(!origin_matches("http://localhost:*", "http://localhost:80x"));
        assert!(origin_matches("https://app.example", "https://APP.example"));
        assert!(!origin_matches("https://app.example", "https://app.example:444"));
    }

    #[test]
    fn host_ports_are_stripped() {
        assert_eq!(strip_port("localhost:8080"), "localhost");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("example"), "example");
    }
}
