//! The stdio listener: the gateway as a desktop host's local MCP server,
//! newline-delimited JSON-RPC on stdin/stdout (logs go to stderr). A legacy
//! host's process is its session; a modern host's requests each carry `_meta`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use portcullis_wire::envelope::{error_bytes, result_bytes};
use portcullis_wire::{Era, ErrorCode, Message, MessageKind, ProtocolVersion, RawObject, RequestId, RpcError, meta};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::downstream::listen::{Filter, feed_session, run_subscription};
use crate::gateway::{Gateway, Host};
use portcullis_identity::Principal;

use crate::route::Route;
use crate::session::{LISTEN_STREAM, Session};

/// Serves one host on the given reader and writer until the reader ends.
pub async fn serve<R, W>(gateway: Arc<Gateway>, route: Arc<Route>, input: R, output: W) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(256);
    let writer = tokio::spawn(async move {
        let mut output = output;
        while let Some(mut line) = out_rx.recv().await.map(|b| b.to_vec()) {
            line.push(b'\n');
            if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
                break;
            }
        }
    });
    let principal = Arc::new(crate::identity::stdio_principal(gateway.config.auth.as_ref()));
    let conn = Connection {
        gateway,
        route,
        principal,
        out: out_tx,
        session: Mutex::new(None),
        in_flight: Arc::new(Mutex::new(HashMap::new())),
    };
    let mut lines = BufReader::new(input).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        conn.on_line(line.as_bytes()).await;
    }
    if let Some(session) = conn.session() {
        session.closed.cancel();
    }
    for token in conn.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values() {
        token.cancel();
    }
    drop(conn);
    let _ = writer.await;
    Ok(())
}

struct Connection {
    gateway: Arc<Gateway>,
    route: Arc<Route>,
    /// The stdio host's identity (configured, or the OS user).
    principal: Arc<Principal>,
    out: mpsc::Sender<Bytes>,
    session: Mutex<Option<Arc<Session>>>,
    in_flight: Arc<Mutex<HashMap<RequestId, CancellationToken>>>,
}

impl Connection {
    fn session(&self) -> Option<Arc<Session>> {
        self.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    async fn send(&self, bytes: Vec<u8>) {
        let _ = self.out.send(Bytes::from(bytes)).await;
    }

    async fn on_line(&self, line: &[u8]) {
        let message = match Message::parse(line) {
            Ok(m) => m,
            Err(e) => return self.send(error_bytes(e.id(), &e.to_rpc_error())).await,
        };
        match message.kind {
            MessageKind::Response { .. } => {
                if let Some(session) = self.session() {
                    session.answer(message);
                }
            }
            MessageKind::Notification { method, params } => {
                if method == "notifications/cancelled" {
                    let id = params
                        .as_deref()
                        .and_then(RawObject::parse)
                        .and_then(|p| p.get("requestId").and_then(|r| RequestId::from_raw(r).ok()));
                    let token = id.and_then(|id| {
                        self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id)
                    });
                    if let Some(t) = token {
                        t.cancel();
                    }
                    return;
                }
                if let Some(host) = self.legacy_host() {
                    self.gateway.notification(&host, &method, params.as_deref()).await;
                }
            }
            MessageKind::Request { id, method, params } => self.on_request(id, method, params).await,
        }
    }

    fn legacy_host(&self) -> Option<Host> {
        self.session().map(|s| Host {
            route: Arc::clone(&s.route),
            version: s.version,
            principal: Arc::clone(&s.principal),
            credential: None,
            trace: None,
            session: Some(s),
            capabilities: None,
        })
    }

    async fn on_request(&self, id: RequestId, method: String, params: Option<Box<serde_json::value::RawValue>>) {
        let p = params.as_deref().and_then(RawObject::parse).unwrap_or_default();
        let m = p.get_object("_meta");
        let modern_version = m.as_ref().and_then(|m| m.get_str(meta::PROTOCOL_VERSION));
        let host = if method == "initialize" {
            return self.initialize(&id, &p).await;
        } else if let Some(requested) = modern_version {
            let Some(version) = ProtocolVersion::parse(&requested).filter(|v| v.era() == Era::Modern) else {
                let err = RpcError::new(ErrorCode::UNSUPPORTED_PROTOCOL_VERSION, "unsupported protocol version")
                    .with("supported", ProtocolVersion::supported_strings())
                    .with("requested", requested)
                    .with_reason("unsupported_protocol_version");
                return self.send(error_bytes(Some(&id), &err)).await;
            };
            let Some(caps) = m.as_ref().and_then(|m| m.get(meta::CLIENT_CAPABILITIES).map(ToOwned::to_owned)) else {
                let err = RpcError::new(
                    ErrorCode::INVALID_PARAMS,
                    "params._meta[\"io.modelcontextprotocol/clientCapabilities\"] is required",
                )
                .with_reason("missing_meta");
                return self.send(error_bytes(Some(&id), &err)).await;
            };
            Host {
                route: Arc::clone(&self.route),
                version,
                session: None,
                capabilities: Some(caps),
                principal: Arc::clone(&self.principal),
                credential: None,
                trace: None,
            }
        } else if let Some(host) = self.legacy_host() {
            host
        } else {
            let err =
                RpcError::new(ErrorCode::INVALID_REQUEST, "send initialize first, or a 2026-07-28 request with _meta")
                    .with_reason("session_required")
                    .with("supported", ProtocolVersion::supported_strings());
            return self.send(error_bytes(Some(&id), &err)).await;
        };
        if method == "subscriptions/listen" && host.modern() {
            let Some(filter) = Filter::parse(params.as_deref()) else {
                let err = RpcError::new(ErrorCode::INVALID_PARAMS, "params.notifications must be an object")
                    .with_reason("missing_notifications");
                return self.send(error_bytes(Some(&id), &err)).await;
            };
            let token = self.track(&id);
            let (tx, mut rx) = mpsc::channel::<Bytes>(64);
            tokio::spawn(run_subscription(Arc::clone(&self.gateway), host, id.clone(), filter, tx));
            let out = self.out.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = token.cancelled() => return,
                        b = rx.recv() => match b {
                            Some(b) => if out.send(b).await.is_err() { return },
                            None => return,
                        },
                    }
                }
            });
            return;
        }
        let token = self.track(&id);
        let gateway = Arc::clone(&self.gateway);
        let out = self.out.clone();
        let in_flight = Arc::clone(&self.in_flight);
        tokio::spawn(async move {
            let (rel_tx, mut rel_rx) = mpsc::channel::<Bytes>(64);
            let call = gateway.request(&host, &id, &method, params.as_deref(), &rel_tx);
            tokio::pin!(call);
            loop {
                tokio::select! {
                    biased;
                    () = token.cancelled() => break,
                    Some(b) = rel_rx.recv() => { let _ = out.send(b).await; }
                    r = &mut call => {
                        while let Ok(b) = rel_rx.try_recv() {
                            let _ = out.send(b).await;
                        }
                        let _ = out.send(Bytes::from(r.bytes)).await;
                        break;
                    }
                }
            }
            in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
        });
    }

    fn track(&self, id: &RequestId) -> CancellationToken {
        let token = CancellationToken::new();
        self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.clone(), token.clone());
        token
    }

    async fn initialize(&self, id: &RequestId, p: &RawObject) {
        if self.session().is_some() {
            let err =
                RpcError::new(ErrorCode::INVALID_REQUEST, "already initialized").with_reason("already_initialized");
            return self.send(error_bytes(Some(id), &err)).await;
        }
        let Some(requested) = p.get_str("protocolVersion") else {
            let err = RpcError::new(ErrorCode::INVALID_PARAMS, "params.protocolVersion must be a string")
                .with_reason("missing_protocol_version");
            return self.send(error_bytes(Some(id), &err)).await;
        };
        let version = ProtocolVersion::negotiate_legacy(&requested);
        let caps = p.get("capabilities").map_or_else(portcullis_wire::object::empty_object, ToOwned::to_owned);
        let session = Session::standalone(Arc::clone(&self.route), version, caps, Arc::clone(&self.principal));
        if let Some(client) = p.get("clientInfo") {
            session.set_client_info(client);
        }
        *self.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(&session));
        if let Some(host) = self.legacy_host() {
            self.gateway.session_opened(&host, None).await;
        }
        tokio::spawn(feed_session(Arc::clone(&self.gateway), Arc::clone(&session)));
        // The listening stream of a stdio session is stdout itself.
        if let Some(log) = session.stream(LISTEN_STREAM) {
            let out = self.out.clone();
            let closed = session.closed.clone();
            tokio::spawn(async move {
                let mut next = 1;
                loop {
                    let events = tokio::select! {
                        e = log.read(next) => e,
                        () = closed.cancelled() => return,
                    };
                    let Some(events) = events else { return };
                    for (seq, bytes) in events {
                        next = seq + 1;
                        if out.send(bytes).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
        let result = self.gateway.initialize_result(&self.route, version).await;
        self.send(result_bytes(Some(id), &result)).await;
    }
}
