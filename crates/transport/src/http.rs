//! Streamable HTTP upstreams, both eras: one pooled client per upstream, the
//! legacy session id kept here, SSE responses read incrementally.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use portcullis_wire::envelope::{notification_bytes, request_bytes};
use portcullis_wire::{Era, Message, MessageKind, ProtocolVersion, RequestId, header};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::error::UpstreamError;
use crate::link::{CallOptions, LinkEvent, ParamsFn};
use crate::pending::Related;
use crate::sse;

/// A header value from text the gateway forwards (already encoded for headers).
fn header_value(text: &str) -> Result<HeaderValue, UpstreamError> {
    HeaderValue::from_str(text).map_err(|e| UpstreamError::Protocol(format!("invalid header value: {e}")))
}

/// How to reach a Streamable HTTP upstream.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub name: String,
    pub url: reqwest::Url,
    /// Headers sent on every request (e.g. the gateway's own credential for this upstream).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub connect_timeout: Duration,
    pub max_message_bytes: usize,
}

/// A Streamable HTTP upstream.
pub struct HttpLink {
    cfg: HttpConfig,
    client: reqwest::Client,
    /// The headers every POST carries (content type, accept, configured ones), built once.
    post_headers: HeaderMap,
    session: Mutex<Option<String>>,
    /// The session the GET listener runs for, so a new session starts a new one.
    listener_stop: Mutex<Option<CancellationToken>>,
    events: broadcast::Sender<LinkEvent>,
    next_id: AtomicU64,
    stop: CancellationToken,
}

impl HttpLink {
    /// A link with its own connection pool.
    pub fn new(cfg: HttpConfig) -> Result<Self, UpstreamError> {
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| UpstreamError::Unavailable(format!("http client: {e}")))?;
        let (events, _) = broadcast::channel(256);
        let mut post_headers = HeaderMap::with_capacity(4 + cfg.headers.len());
        post_headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        post_headers.insert(http::header::ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
        for (k, v) in &cfg.headers {
            post_headers.append(k.clone(), v.clone());
        }
        Ok(Self {
            cfg,
            client,
            post_headers,
            session: Mutex::new(None),
            listener_stop: Mutex::new(None),
            events,
            next_id: AtomicU64::new(1),
            stop: CancellationToken::new(),
        })
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Unsolicited messages and session resets.
    pub fn subscribe(&self) -> broadcast::Receiver<LinkEvent> {
        self.events.subscribe()
    }

    fn session(&self) -> Option<String> {
        self.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Forgets the legacy session and stops its listening stream.
    pub fn reset_session(&self) {
        *self.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        if let Some(stop) = self.listener_stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            stop.cancel();
        }
    }

    /// A POST with the link's constant headers (built once), the era's version header and,
    /// for a legacy session, its id.
    fn request(&self, version: Option<ProtocolVersion>, body: Vec<u8>) -> reqwest::Request {
        let mut req = reqwest::Request::new(reqwest::Method::POST, self.cfg.url.clone());
        *req.headers_mut() = self.post_headers.clone();
        if let Some(v) = version {
            let headers = req.headers_mut();
            headers.insert(HeaderName::from_static(header::PROTOCOL_VERSION), HeaderValue::from_static(v.as_str()));
            if v.era() == Era::Legacy
                && let Some(s) = self.session()
                && let Ok(s) = HeaderValue::from_str(&s)
            {
                headers.insert(HeaderName::from_static(header::SESSION_ID), s);
            }
        }
        *req.body_mut() = Some(body.into());
        req
    }

    /// Sends a request and waits for its response.
    pub async fn call(
        &self,
        opts: CallOptions<'_>,
        params: ParamsFn<'_>,
        related: Option<Related>,
    ) -> Result<Message, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = request_bytes(&RequestId::number(id), opts.method, params(id).as_deref());
        let mut req = self.request(opts.version.filter(|_| opts.method != "initialize"), body);
        if let Some(authorization) = opts.authorization {
            req.headers_mut().insert(http::header::AUTHORIZATION, authorization.clone());
        }
        if opts.version.is_some_and(|v| v.era() == Era::Modern) {
            let headers = req.headers_mut();
            headers.insert(HeaderName::from_static(header::METHOD), header_value(opts.method)?);
            if let Some(name) = opts.name {
                headers.insert(HeaderName::from_static(header::NAME), header_value(&header::encode_value(name))?);
            }
            for (suffix, value) in opts.param_headers {
                let name = HeaderName::try_from(format!("{}{suffix}", header::PARAM_PREFIX))
                    .map_err(|e| UpstreamError::Protocol(format!("invalid header name: {e}")))?;
                headers.insert(name, header_value(&header::encode_value(value))?);
            }
        }
        let had_session = self.session().is_some();
        let legacy = opts.version.is_none_or(|v| v.era() == Era::Legacy);
        let mut guard = CancelOnDrop { link: self, id, version: opts.version, armed: legacy };
        let result = tokio::time::timeout(opts.timeout, self.exchange(req, id, opts, related, had_session)).await;
        guard.armed &= result.is_err();
        match result {
            Ok(outcome) => outcome,
            Err(_) => Err(UpstreamError::Timeout(opts.timeout)),
        }
    }

    async fn exchange(
        &self,
        req: reqwest::Request,
        id: u64,
        opts: CallOptions<'_>,
        related: Option<Related>,
        had_session: bool,
    ) -> Result<Message, UpstreamError> {
        let resp = self.client.execute(req).await.map_err(|e| UpstreamError::Unavailable(transport_error(&e)))?;
        let status = resp.status();
        if opts.method == "initialize"
            && status.is_success()
            && let Some(s) = resp.headers().get(header::SESSION_ID).and_then(|v| v.to_str().ok())
        {
            *self.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(s.to_owned());
        }
        if status == StatusCode::NOT_FOUND && had_session {
            // The legacy session is gone: the caller re-initializes and retries.
            self.reset_session();
            return Err(UpstreamError::SessionLost("upstream answered 404 for the session".to_owned()));
        }
        let is_sse = content_type_is(resp.headers(), "text/event-stream");
        if status.is_success() && is_sse {
            return self.read_sse(resp, id, opts, related).await;
        }
        let body = read_limited(resp, self.cfg.max_message_bytes).await?;
        if status == StatusCode::BAD_REQUEST && had_session && mentions_session(&body) {
            // Some servers (the TypeScript SDK's) answer an unknown session with 400, not 404.
            self.reset_session();
            return Err(UpstreamError::SessionLost("upstream refused the session".to_owned()));
        }
        // A JSON-RPC error body (e.g. a modern 400 with -32022) is the upstream's answer.
        match Message::parse(&body) {
            Ok(m @ Message { kind: MessageKind::Response { .. }, .. }) => {
                let ours = m.id().and_then(RequestId::as_u64) == Some(id) || m.id().is_none();
                if ours
                    && (status.is_success()
                        || matches!(
                            &m.kind,
                            MessageKind::Response { outcome: portcullis_wire::envelope::Outcome::Error(_), .. }
                        ))
                {
                    return Ok(m);
                }
                Err(UpstreamError::Protocol(format!("response for another request (HTTP {status})")))
            }
            _ if !status.is_success() => Err(UpstreamError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            }),
            Ok(_) => Err(UpstreamError::Protocol("expected a JSON-RPC response".to_owned())),
            Err(e) => Err(UpstreamError::Protocol(format!("invalid JSON-RPC body: {e}"))),
        }
    }

    async fn read_sse(
        &self,
        resp: reqwest::Response,
        id: u64,
        opts: CallOptions<'_>,
        related: Option<Related>,
    ) -> Result<Message, UpstreamError> {
        let mut parser = sse::Parser::new(self.cfg.max_message_bytes);
        let mut stream = resp.bytes_stream();
        let mut last_event_id: Option<String> = None;
        let mut retry = Duration::from_millis(500);
        let legacy = opts.version.is_none_or(|v| v.era() == Era::Legacy);
        let mut resumes = 0u32;
        loop {
            match stream.next().await {
                Some(Ok(chunk)) => {
                    for event in parser.push(&chunk).map_err(UpstreamError::Protocol)? {
                        if event.id.is_some() {
                            last_event_id.clone_from(&event.id);
                        }
                        if let Some(ms) = event.retry {
                            retry = Duration::from_millis(ms);
                        }
                        if let Some(done) = self.on_event(&event, id, related.as_ref())? {
                            return Ok(done);
                        }
                    }
                }
                Some(Err(e)) if !legacy || last_event_id.is_none() => {
                    return Err(UpstreamError::Unavailable(format!("response stream broke: {}", transport_error(&e))));
                }
                None if !legacy || last_event_id.is_none() => {
                    return Err(UpstreamError::Protocol("response stream ended without a response".to_owned()));
                }
                // Legacy (2025-11-25) polling: the server closed the connection after an event id;
                // resume the stream with GET and Last-Event-ID after the advised delay.
                _ => {
                    resumes += 1;
                    if resumes > 1000 {
                        return Err(UpstreamError::Protocol("response stream resumed too often".to_owned()));
                    }
                    tokio::time::sleep(retry).await;
                    let mut get =
                        self.client.get(self.cfg.url.clone()).header(http::header::ACCEPT, "text/event-stream");
                    for (k, v) in &self.cfg.headers {
                        get = get.header(k, v);
                    }
                    if let Some(v) = opts.version {
                        get = get.header(header::PROTOCOL_VERSION, v.as_str());
                    }
                    if let Some(s) = self.session() {
                        get = get.header(header::SESSION_ID, s);
                    }
                    if let Some(last) = &last_event_id {
                        get = get.header(header::LAST_EVENT_ID, last);
                    }
                    let resp = get.send().await.map_err(|e| UpstreamError::Unavailable(transport_error(&e)))?;
                    if !resp.status().is_success() {
                        return Err(UpstreamError::Status {
                            status: resp.status().as_u16(),
                            body: "cannot resume the response stream".to_owned(),
                        });
                    }
                    parser = sse::Parser::new(self.cfg.max_message_bytes);
                    stream = resp.bytes_stream();
                }
            }
        }
    }

    /// Handles one SSE event of a call's stream; returns the response when it arrives.
    fn on_event(
        &self,
        event: &sse::Event,
        id: u64,
        related: Option<&Related>,
    ) -> Result<Option<Message>, UpstreamError> {
        if event.data.trim().is_empty() || event.event.as_deref().is_some_and(|e| e != "message") {
            return Ok(None);
        }
        let message = Message::parse(event.data.as_bytes()).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        match &message.kind {
            MessageKind::Response { id: rid, .. } if rid.as_ref().and_then(RequestId::as_u64) == Some(id) => {
                Ok(Some(message))
            }
            MessageKind::Response { .. } => Ok(None),
            _ => {
                match related {
                    Some(r) => {
                        let _ = r.try_send(message);
                    }
                    None => {
                        let _ = self.events.send(LinkEvent::Message(message));
                    }
                }
                Ok(None)
            }
        }
    }

    /// Posts a notification or a response.
    pub async fn send(&self, message: Vec<u8>, version: Option<ProtocolVersion>) -> Result<(), UpstreamError> {
        let had_session = self.session().is_some();
        let resp = self
            .client
            .execute(self.request(version, message))
            .await
            .map_err(|e| UpstreamError::Unavailable(transport_error(&e)))?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND if had_session => {
                self.reset_session();
                Err(UpstreamError::SessionLost("upstream answered 404 for the session".to_owned()))
            }
            s => Err(UpstreamError::Status { status: s.as_u16(), body: String::new() }),
        }
    }

    /// Opens the legacy GET stream for unsolicited messages; returns at once.
    pub fn listen(self: &std::sync::Arc<Self>, version: ProtocolVersion) {
        let stop = self.stop.child_token();
        if let Some(old) =
            self.listener_stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner).replace(stop.clone())
        {
            old.cancel();
        }
        let link = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                () = link.listen_loop(version) => {}
                () = stop.cancelled() => {}
            }
        });
    }

    async fn listen_loop(&self, version: ProtocolVersion) {
        let mut last_event_id: Option<String> = None;
        let mut delay = Duration::from_millis(500);
        loop {
            let mut get = self
                .client
                .get(self.cfg.url.clone())
                .header(http::header::ACCEPT, "text/event-stream")
                .header(header::PROTOCOL_VERSION, version.as_str());
            for (k, v) in &self.cfg.headers {
                get = get.header(k, v);
            }
            match self.session() {
                Some(s) => get = get.header(header::SESSION_ID, s),
                None => return,
            }
            if let Some(last) = &last_event_id {
                get = get.header(header::LAST_EVENT_ID, last);
            }
            let started = Instant::now();
            match get.send().await {
                Ok(resp) if resp.status() == StatusCode::METHOD_NOT_ALLOWED => return,
                Ok(resp) if resp.status() == StatusCode::NOT_FOUND => {
                    self.reset_session();
                    let _ = self.events.send(LinkEvent::Reset);
                    return;
                }
                Ok(resp) if resp.status().is_success() => {
                    let mut parser = sse::Parser::new(self.cfg.max_message_bytes);
                    let mut stream = resp.bytes_stream();
                    while let Some(Ok(chunk)) = stream.next().await {
                        let Ok(events) = parser.push(&chunk) else {
                            break;
                        };
                        for event in events {
                            if event.id.is_some() {
                                last_event_id.clone_from(&event.id);
                            }
                            if let Some(ms) = event.retry {
                                delay = Duration::from_millis(ms);
                            }
                            if event.data.trim().is_empty() {
                                continue;
                            }
                            match Message::parse(event.data.as_bytes()) {
                                Ok(m) => {
                                    let _ = self.events.send(LinkEvent::Message(m));
                                }
                                Err(e) => {
                                    tracing::warn!(server = %self.cfg.name, error = %e, "invalid message on listening stream")
                                }
                            }
                        }
                    }
                }
                Ok(resp) => {
                    tracing::debug!(server = %self.cfg.name, status = %resp.status(), "listening stream refused");
                    return;
                }
                Err(e) => {
                    tracing::debug!(server = %self.cfg.name, error = %transport_error(&e), "listening stream failed")
                }
            }
            if started.elapsed() > Duration::from_secs(10) {
                delay = Duration::from_millis(500);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    /// Ends the legacy session (DELETE) and stops background streams.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        if let Some(s) = self.session() {
            let mut del = self.client.delete(self.cfg.url.clone()).header(header::SESSION_ID, s);
            for (k, v) in &self.cfg.headers {
                del = del.header(k, v);
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), del.send()).await;
        }
    }
}

/// Tells a legacy upstream that an abandoned call is cancelled (a modern one learns it
/// from the closed stream).
struct CancelOnDrop<'a> {
    link: &'a HttpLink,
    id: u64,
    version: Option<ProtocolVersion>,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let params = format!("{{\"requestId\":{},\"reason\":\"cancelled by the gateway\"}}", self.id);
        let Ok(raw) = serde_json::value::RawValue::from_string(params) else {
            return;
        };
        let req = self.link.request(self.version, notification_bytes("notifications/cancelled", Some(&raw)));
        let client = self.link.client.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), client.execute(req)).await;
            });
        }
    }
}

/// Whether an error body blames the session (for servers that answer 400 instead of 404).
fn mentions_session(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&body[..body.len().min(1024)]).to_ascii_lowercase();
    text.contains("session")
}

fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case(expected)))
}

async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<Bytes, UpstreamError> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| UpstreamError::Unavailable(transport_error(&e)))?;
        if out.len() + chunk.len() > limit {
            return Err(UpstreamError::Protocol(format!("response exceeds {limit} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// A transport error without URLs or credentials in it.
fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection refused or unreachable"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "broken response body"
    } else {
        "request failed"
    };
    kind.to_owned()
}
