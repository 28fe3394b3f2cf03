//! The MCP methods of both eras, dispatched for one request against its connection's state.
//!
//! A request is modern when its `params._meta` names its protocol revision; it is then served
//! statelessly. Anything else is legacy and may rely on what `initialize` and
//! `logging/setLevel` left in the session. Both can arrive on the same connection.

use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::error::{ErrorKind, RpcError};
use crate::jsonrpc::{Notification, Request, encode_result, parse_params};
use crate::meta::{CLIENT_CAPABILITIES, LogLevel, PROTOCOL_VERSION, RequestMeta};
use crate::notifier::{Notifier, Outbox};
use crate::reply::Reply;
use crate::revision::Revision;
use crate::session::Session;
use crate::tool::Toolbox;
use crate::{completion, prompt, resource, tool};

/// Who this server is, as `serverInfo` and `_meta` `io.modelcontextprotocol/serverInfo` say.
#[derive(Debug, Serialize)]
pub struct Implementation {
    pub name: &'static str,
    pub title: &'static str,
    pub version: &'static str,
}

/// This server's identity.
pub const IMPLEMENTATION: Implementation = Implementation {
    name: "portcullis-demo",
    title: "Portcullis demo support desk",
    version: env!("CARGO_PKG_VERSION"),
};

/// How long clients and shared caches may reuse lists, discovery and resource reads (5 minutes).
pub const CACHE_TTL_MS: u64 = 300_000;

const INSTRUCTIONS: &str = "A demo support desk with eight fixed tickets. Use search_tickets to find \
     tickets, get_ticket for one ticket, and draft_ticket to prepare a new one. echo, slow and fail \
     exist for tests and benchmarks.";

/// Everything one request's handler can see.
#[derive(Debug)]
pub struct Context<'a> {
    /// The connection or legacy session the request arrived on.
    pub session: &'a Session,
    /// The request's id, raw.
    pub request_id: &'a RawValue,
    /// Sends the notifications the request opted in to.
    pub notifier: Notifier<'a>,
    /// Fires when the client cancels the request (transports that cancel by dropping pass none).
    pub cancel: Option<&'a CancellationToken>,
    /// Whether the request is a modern (2026-07-28) one.
    pub modern: bool,
}

impl Context<'_> {
    /// Resolves once the client cancels the request; never, where the transport cancels by dropping.
    pub async fn cancelled(&self) {
        match self.cancel {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    }
}

/// The demo MCP server; one per process, shared by every connection.
#[derive(Debug, Default)]
pub struct Server {
    tools: Toolbox,
}

impl Server {
    /// A server with no drafts yet.
    pub fn new() -> Server {
        Server::default()
    }

    /// Handles one request and encodes its response; request-scoped notifications go to `outbox`,
    /// and `cancel` (registered by the transport before the request runs) ends a long call early.
    ///
    /// `Err` carries the error to answer with, except `ErrorKind::Cancelled`, which stdio answers
    /// with silence.
    pub async fn handle(
        &self,
        session: &Session,
        request: &Request,
        outbox: Option<&Outbox>,
        cancel: Option<&CancellationToken>,
    ) -> Result<Vec<u8>, RpcError> {
        let params = request.params.as_deref();
        let meta = RequestMeta::parse(params)?;
        let modern = classify(&request.method, &meta)?;
        let log_level = if modern { meta.log_level } else { session.log_level() };
        let cx = Context {
            session,
            request_id: &request.id,
            notifier: Notifier::new(outbox, meta.progress_token, log_level),
            cancel,
            modern,
        };
        let reply = self.dispatch(&request.method, params, &cx).await.map_err(|e| e.in_era(modern))?;
        Ok(encode_result(&request.id, &reply.in_era(modern)))
    }

    /// Handles a notification: `notifications/cancelled` cancels an in-flight request; others need nothing.
    pub fn notify(&self, session: &Session, notification: &Notification) {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Cancelled<'a> {
            #[serde(borrow)]
            request_id: &'a RawValue,
        }
        if notification.method == "notifications/cancelled"
            && let Ok(cancelled) = parse_params::<Cancelled<'_>>(notification.params.as_deref())
        {
            // Unknown or finished ids are ignored, as the spec allows.
            session.cancel(cancelled.request_id);
        }
    }

    async fn dispatch<'p>(
        &self,
        method: &str,
        params: Option<&'p RawValue>,
        cx: &Context<'_>,
    ) -> Result<Reply<'p>, RpcError> {
        match (method, cx.modern) {
            ("initialize", false) => initialize(params),
            ("ping", false) => Ok(Reply::object(json!({}))),
            ("logging/setLevel", false) => set_level(params, cx.session),
            ("server/discover", true) => Ok(discover()),
            ("subscriptions/listen", true) => listen(params, cx).await,
            ("tools/list", _) => first_page(params).map(|()| tool::list()),
            ("tools/call", _) => self.tools.call(params, cx).await,
            ("resources/list", _) => first_page(params).map(|()| resource::list()),
            ("resources/templates/list", _) => first_page(params).map(|()| resource::templates()),
            ("resources/read", _) => resource::read(params, cx.modern),
            ("prompts/list", _) => first_page(params).map(|()| prompt::list()),
            ("prompts/get", _) => prompt::get(params),
            ("completion/complete", _) => completion::complete(params),
            ("initialize", true) => Err(RpcError::new(
                ErrorKind::MethodNotFound,
                "initialize is not a 2026-07-28 method: send the revision in each request's _meta",
            )
            .with_data(json!({ "supported": Revision::supported() }))),
            (other, _) => Err(RpcError::new(ErrorKind::MethodNotFound, format!("method not found: {other}"))),
        }
    }
}

/// Whether a method may wait (a tool call, a subscription) and so runs on its own and can be cancelled.
pub fn is_long_running(method: &str) -> bool {
    matches!(method, "tools/call" | "subscriptions/listen")
}

/// Whether a request is modern; a modern request must name a revision we speak and its capabilities.
pub fn classify(method: &str, meta: &RequestMeta<'_>) -> Result<bool, RpcError> {
    match meta.protocol_version {
        Some(version) => match Revision::parse(version) {
            Some(revision) if revision.is_modern() => match meta.client_capabilities {
                Some(_) => Ok(true),
                None => Err(missing_meta(CLIENT_CAPABILITIES)),
            },
            _ => Err(RpcError::unsupported_version(version).in_era(true)),
        },
        // Methods that exist only in the modern era cannot be legacy requests.
        None if matches!(method, "server/discover" | "subscriptions/listen") => Err(missing_meta(PROTOCOL_VERSION)),
        None => Ok(false),
    }
}

fn missing_meta(key: &str) -> RpcError {
    RpcError::new(ErrorKind::InvalidMeta, format!("missing required _meta key {key}"))
        .with_data(json!({ "supported": Revision::supported() }))
        .in_era(true)
}

/// What both `initialize` and `server/discover` advertise.
fn capabilities() -> serde_json::Value {
    json!({
        "tools": { "listChanged": false },
        "resources": { "subscribe": false, "listChanged": false },
        "prompts": { "listChanged": false },
        "completions": {},
        "logging": {},
    })
}

fn initialize<'p>(params: Option<&'p RawValue>) -> Result<Reply<'p>, RpcError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Initialize {
        protocol_version: String,
    }
    let init: Initialize =
        parse_params(params).map_err(|e| e.with_data(json!({ "supported": Revision::supported() })))?;
    let revision = Revision::negotiate_legacy(&init.protocol_version);
    Ok(Reply::object(json!({
        "protocolVersion": revision.as_str(),
        "capabilities": capabilities(),
        "serverInfo": IMPLEMENTATION,
        "instructions": INSTRUCTIONS,
    })))
}

fn set_level<'p>(params: Option<&'p RawValue>, session: &Session) -> Result<Reply<'p>, RpcError> {
    #[derive(Deserialize)]
    struct SetLevel {
        level: LogLevel,
    }
    let set: SetLevel = parse_params(params)?;
    session.set_log_level(set.level);
    Ok(Reply::object(json!({})))
}

fn discover<'p>() -> Reply<'p> {
    Reply::cacheable(
        json!({
            "supportedVersions": Revision::supported(),
            "capabilities": capabilities(),
            "instructions": INSTRUCTIONS,
        }),
        CACHE_TTL_MS,
    )
}

/// Holds a `subscriptions/listen` open until the client ends it. Nothing here ever changes and no
/// `listChanged`/`subscribe` is advertised, so the acknowledgement honours no notification type.
async fn listen<'p>(params: Option<&'p RawValue>, cx: &Context<'_>) -> Result<Reply<'p>, RpcError> {
    #[derive(Deserialize)]
    struct Listen {
        notifications: serde_json::Map<String, serde_json::Value>,
    }
    // The filter is required, but no notification type in it can be honoured here.
    let Listen { notifications: _requested } = parse_params(params)?;
    cx.notifier.acknowledge_subscription(cx.request_id).await;
    tokio::select! {
        () = cx.cancelled() => {}
        () = cx.session.closed() => {}
    }
    Err(RpcError::new(ErrorKind::Cancelled, "subscription ended by the client"))
}

/// Every list fits one page, so any cursor is one this server never issued.
fn first_page(params: Option<&RawValue>) -> Result<(), RpcError> {
    #[derive(Deserialize)]
    struct Page {
        cursor: Option<String>,
    }
    match parse_params::<Page>(params)?.cursor {
        None => Ok(()),
        Some(cursor) => Err(RpcError::invalid_params(format!("invalid cursor: {cursor:?}"))),
    }
}

#[cfg(test)]
mod tests;
