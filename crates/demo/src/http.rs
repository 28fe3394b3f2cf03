//! The Streamable HTTP transport at `/mcp`, serving both eras on one endpoint.
//!
//! A POST whose `MCP-Protocol-Version` is 2026-07-28 is served statelessly after its mirrored
//! headers are checked against the body; anything else is legacy and, after `initialize`, needs
//! the `Mcp-Session-Id` that `initialize` minted. A `tools/call` that carries a progress token is
//! answered as an SSE stream (progress first, then the response) when the client accepts one.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::error::{ErrorKind, RpcError};
use crate::header::{self, MCP_SESSION_ID};
use crate::jsonrpc::{Message, Request, encode_error};
use crate::meta::{PROTOCOL_VERSION, RequestMeta};
use crate::notifier::OUTBOX_CAPACITY;
use crate::server::{Server, is_long_running};
use crate::session::{InFlight, Session, Sessions};

/// The MCP endpoint's path.
pub const ENDPOINT: &str = "/mcp";

/// Serves MCP on `listener` until the process ends.
pub async fn serve(listener: TcpListener) -> io::Result<()> {
    // Without TCP_NODELAY a streamed response's small writes wait on the client's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |s| {
        let _ = s.set_nodelay(true);
    });
    axum::serve(listener, router()).await
}

/// The `/mcp` routes over a fresh server and session table.
pub fn router() -> Router {
    let state = Arc::new(Endpoint { server: Server::new(), sessions: Sessions::default() });
    Router::new().route(ENDPOINT, post(post_message).get(get_stream).delete(end_session)).with_state(state)
}

struct Endpoint {
    server: Server,
    sessions: Sessions,
}

async fn post_message(State(endpoint): State<Arc<Endpoint>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = header::check_origin(&headers) {
        return error_response(None, &e);
    }
    let revision = header::protocol_version(&headers);
    // An unknown revision is answered the modern way (-32022, 400), which legacy clients read as 400.
    let modern = match &revision {
        Ok(Some(revision)) => revision.is_modern(),
        Ok(None) => false,
        Err(_) => true,
    };
    let message = match Message::parse(&body) {
        Ok(message) => message,
        Err(rejected) => {
            return error_response(rejected.id.as_deref(), &rejected.error.in_era(modern));
        }
    };
    // Errors carry the request's id, so the body is read before the version header is judged.
    if let Err(e) = revision {
        return error_response(message.request_id(), &e);
    }
    if modern { post_modern(endpoint, &headers, message).await } else { post_legacy(endpoint, &headers, message).await }
}

/// 2026-07-28: no session; each request stands alone.
async fn post_modern(endpoint: Arc<Endpoint>, headers: &HeaderMap, message: Message) -> Response {
    let request = match message {
        // The core protocol has no client notification on HTTP; accept and ignore any.
        Message::Notification(_) => return StatusCode::ACCEPTED.into_response(),
        Message::Response => {
            let e = RpcError::new(ErrorKind::InvalidRequest, "clients do not send responses in 2026-07-28");
            return error_response(None, &e.in_era(true));
        }
        Message::Request(request) => request,
    };
    if let Err(e) = header::check_mirrored(headers, &request) {
        return error_response(Some(&request.id), &e.in_era(true));
    }
    respond(endpoint, Arc::new(Session::new()), request, headers, true).await
}

/// 2024-11-05 … 2025-11-25: `initialize` opens a session every later message names.
async fn post_legacy(endpoint: Arc<Endpoint>, headers: &HeaderMap, message: Message) -> Response {
    if let Message::Request(request) = &message
        && mentions(request, PROTOCOL_VERSION)
        && RequestMeta::parse(request.params.as_deref()).is_ok_and(|m| m.protocol_version.is_some())
    {
        let e = RpcError::new(
            ErrorKind::HeaderMismatch,
            "header mismatch: the body's _meta names a protocol version but MCP-Protocol-Version does not",
        );
        return error_response(Some(&request.id), &e.in_era(true));
    }
    if let Message::Request(request) = &message
        && request.method == "initialize"
    {
        let session = Arc::new(Session::new());
        return match endpoint.server.handle(&session, request, None, None).await {
            Ok(body) => {
                let id = endpoint.sessions.insert(session);
                (StatusCode::OK, [(CONTENT_TYPE, "application/json".to_owned()), (MCP_SESSION_ID, id)], body)
                    .into_response()
            }
            Err(e) => error_response(Some(&request.id), &e),
        };
    }
    let request_id = message.request_id();
    let Some(session_id) = header::session_id(headers) else {
        let e = RpcError::new(ErrorKind::SessionRequired, "missing Mcp-Session-Id header: call initialize first");
        return error_response(request_id, &e);
    };
    let Some(session) = endpoint.sessions.get(session_id) else {
        let e = RpcError::new(ErrorKind::SessionNotFound, "session not found: initialize a new one");
        return error_response(request_id, &e);
    };
    match message {
        Message::Notification(notification) => {
            endpoint.server.notify(&session, &notification);
            StatusCode::ACCEPTED.into_response()
        }
        Message::Response => StatusCode::ACCEPTED.into_response(),
        Message::Request(request) => respond(endpoint, session, request, headers, false).await,
    }
}

async fn respond(
    endpoint: Arc<Endpoint>,
    session: Arc<Session>,
    request: Request,
    headers: &HeaderMap,
    modern: bool,
) -> Response {
    // Legacy clients cancel with `notifications/cancelled`; modern ones by closing the response.
    let inflight = (!modern && is_long_running(&request.method)).then(|| session.track(&request.id));
    if wants_stream(&request, headers) {
        return stream(endpoint, session, request, inflight, modern);
    }
    let cancel = inflight.as_ref().map(InFlight::token);
    match endpoint.server.handle(&session, &request, None, cancel).await {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => error_response(Some(&request.id), &e),
    }
}

/// Only `tools/call` sends request-scoped notifications, and only to a client that asked for progress;
/// a subscription is a stream by nature.
fn wants_stream(request: &Request, headers: &HeaderMap) -> bool {
    let asks_progress = || {
        request.method == "tools/call"
            && mentions(request, "progressToken")
            && RequestMeta::parse(request.params.as_deref()).is_ok_and(|m| m.progress_token.is_some())
    };
    header::accepts_event_stream(headers) && (request.method == "subscriptions/listen" || asks_progress())
}

/// Answers as an SSE stream: request-scoped notifications, then the response, then the end.
fn stream(
    endpoint: Arc<Endpoint>,
    session: Arc<Session>,
    request: Request,
    inflight: Option<InFlight>,
    modern: bool,
) -> Response {
    let (outbox, pending) = mpsc::channel::<Vec<u8>>(OUTBOX_CAPACITY);
    let task = tokio::spawn(async move {
        let cancel = inflight.as_ref().map(InFlight::token);
        let reply = match endpoint.server.handle(&session, &request, Some(&outbox), cancel).await {
            Ok(body) => body,
            // Cancelled: end the stream without a response.
            Err(e) if e.kind == ErrorKind::Cancelled => return,
            Err(e) => encode_error(Some(&request.id), &e),
        };
        let _ = outbox.send(reply).await;
    });
    // 2026-07-28 makes closing the stream the cancellation; earlier revisions say a disconnect is not one.
    let cancel_on_close = modern.then(|| AbortOnDrop(task.abort_handle()));
    let events = futures::stream::unfold((pending, cancel_on_close), |(mut pending, guard)| async move {
        let message = pending.recv().await?;
        let mut event = Vec::with_capacity(message.len() + 24);
        event.extend_from_slice(b"event: message\ndata: ");
        event.extend_from_slice(&message);
        event.extend_from_slice(b"\n\n");
        Some((Ok::<_, Infallible>(Bytes::from(event)), (pending, guard)))
    });
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "text/event-stream"), (CACHE_CONTROL, "no-cache"), (X_ACCEL_BUFFERING, "no")],
        Body::from_stream(events),
    )
        .into_response()
}

/// A cheap pre-check, so the hot path parses `_meta` only when the key may be there.
fn mentions(request: &Request, key: &str) -> bool {
    request.params.as_ref().is_some_and(|p| p.get().contains(key))
}

const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Aborts a request's task when its response stream is dropped.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// No server-initiated stream is offered (2026-07-28 removed it; legacy servers may answer 405).
async fn get_stream() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, [(ALLOW, "POST, DELETE")]).into_response()
}

/// Ends a legacy session.
async fn end_session(State(endpoint): State<Arc<Endpoint>>, headers: HeaderMap) -> Response {
    if let Err(e) = header::check_origin(&headers) {
        return error_response(None, &e);
    }
    let Some(session_id) = header::session_id(&headers) else {
        let e = RpcError::new(ErrorKind::SessionRequired, "missing Mcp-Session-Id header");
        return error_response(None, &e);
    };
    if endpoint.sessions.remove(session_id) {
        StatusCode::OK.into_response()
    } else {
        error_response(None, &RpcError::new(ErrorKind::SessionNotFound, "session not found"))
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(CONTENT_TYPE, "application/json")], body).into_response()
}

/// The one place an error becomes an HTTP response.
fn error_response(id: Option<&serde_json::value::RawValue>, error: &RpcError) -> Response {
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, encode_error(id, error))
}

#[cfg(test)]
mod tests;
