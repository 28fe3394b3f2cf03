//! Streamable HTTP upstreams, both eras: one pooled client per upstream, the
//! legacy session id kept here, SSE responses read incrementally.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use portcullis_wire::envelope::{notification_bytes, request_bytes_of_text};
use portcullis_wire::{Era, Message, MessageKind, ProtocolVersion, RequestId, header};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::error::UpstreamError;
use crate::link::{CallOptions, LinkEvent, Params, ParamsFn};
use crate::pending::Related;
use crate::pool::{Pool, PooledBody};
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
    client: Client,
    /// The headers every request carries (`Host` for the pool, configured ones), built once.
    base_headers: HeaderMap,
    /// The headers every POST carries (the base ones, content type, accept), built once.
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
        let mut base_headers = HeaderMap::with_capacity(2 + cfg.headers.len());
        let client = match Client::pooled(&cfg.url, cfg.connect_timeout) {
            Some((client, host)) => {
                base_headers.insert(http::header::HOST, host);
                client
            }
            None => Client::General {
                client: reqwest::Client::builder()
                    .connect_timeout(cfg.connect_timeout)
                    .pool_idle_timeout(Duration::from_secs(90))
                    .tcp_nodelay(true)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| UpstreamError::Unavailable(format!("http client: {e}")))?,
                url: cfg.url.clone(),
            },
        };
        let (events, _) = broadcast::channel(256);
        for (k, v) in &cfg.headers {
            base_headers.append(k.clone(), v.clone());
        }
        let mut post_headers = base_headers.clone();
        post_headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        post_headers.insert(http::header::ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
        Ok(Self {
            cfg,
            client,
            base_headers,
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

    /// A POST's headers: the link's constant ones (built once), the era's version header and,
    /// for a legacy session, its id.
    fn post_headers(&self, version: Option<ProtocolVersion>) -> HeaderMap {
        let mut headers = self.post_headers.clone();
        if let Some(v) = version {
            headers.insert(HeaderName::from_static(header::PROTOCOL_VERSION), HeaderValue::from_static(v.as_str()));
            if v.era() == Era::Legacy
                && let Some(s) = self.session()
                && let Ok(s) = HeaderValue::from_str(&s)
            {
                headers.insert(HeaderName::from_static(header::SESSION_ID), s);
            }
        }
        headers
    }

    /// A GET for an event stream, with the link's constant headers and the given ones.
    fn get_headers(&self, version: Option<ProtocolVersion>, last_event_id: Option<&str>) -> HeaderMap {
        let mut headers = self.base_headers.clone();
        headers.insert(http::header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        if let Some(v) = version {
            headers.insert(HeaderName::from_static(header::PROTOCOL_VERSION), HeaderValue::from_static(v.as_str()));
        }
        if let Some(s) = self.session().and_then(|s| HeaderValue::from_str(&s).ok()) {
            headers.insert(HeaderName::from_static(header::SESSION_ID), s);
        }
        if let Some(last) = last_event_id.and_then(|l| HeaderValue::from_str(l).ok()) {
            headers.insert(HeaderName::from_static(header::LAST_EVENT_ID), last);
        }
        headers
    }

    /// Sends a request and waits for its response.
    pub async fn call(
        &self,
        opts: CallOptions<'_>,
        params: ParamsFn<'_>,
        related: Option<Related>,
    ) -> Result<Message, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = request_bytes_of_text(&RequestId::number(id), opts.method, params(id).as_ref().map(Params::text));
        let mut headers = self.post_headers(opts.version.filter(|_| opts.method != "initialize"));
        if let Some(authorization) = opts.authorization {
            headers.insert(http::header::AUTHORIZATION, authorization.clone());
        }
        if opts.version.is_some_and(|v| v.era() == Era::Modern) {
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
        let result =
            tokio::time::timeout(opts.timeout, self.exchange(headers, body, id, opts, related, had_session)).await;
        guard.armed &= result.is_err();
        match result {
            Ok(outcome) => outcome,
            Err(_) => Err(UpstreamError::Timeout(opts.timeout)),
        }
    }

    async fn exchange(
        &self,
        headers: HeaderMap,
        body: Vec<u8>,
        id: u64,
        opts: CallOptions<'_>,
        related: Option<Related>,
        had_session: bool,
    ) -> Result<Message, UpstreamError> {
        let resp = self.client.send(Method::POST, headers, Bytes::from(body)).await?;
        let status = resp.status;
        if opts.method == "initialize"
            && status.is_success()
            && let Some(s) = resp.headers.get(header::SESSION_ID).and_then(|v| v.to_str().ok())
        {
            *self.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(s.to_owned());
        }
        if status == StatusCode::NOT_FOUND && had_session {
            // The legacy session is gone: the caller re-initializes and retries.
            self.reset_session();
            return Err(UpstreamError::SessionLost("upstream answered 404 for the session".to_owned()));
        }
        let is_sse = content_type_is(&resp.headers, "text/event-stream");
        if status.is_success() && is_sse {
            return self.read_sse(resp, id, opts, related).await;
        }
        let body = read_limited(resp.body, self.cfg.max_message_bytes).await?;
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
        resp: Reply,
        id: u64,
        opts: CallOptions<'_>,
        related: Option<Related>,
    ) -> Result<Message, UpstreamError> {
        let mut parser = sse::Parser::new(self.cfg.max_message_bytes);
        let mut stream = resp.body;
        let mut last_event_id: Option<String> = None;
        let mut retry = Duration::from_millis(500);
        let legacy = opts.version.is_none_or(|v| v.era() == Era::Legacy);
        let mut resumes = 0u32;
        loop {
            match stream.chunk().await {
                Some(Ok(chunk)) => {
                    for event in parser.push(&chunk).map_err(UpstreamError::Protocol)? {
                        if event.id.is_some() {
                            last_event_id.clone_from(&event.id);
                        }
                        if let Some(ms) = event.retry {
                            retry = Duration::from_millis(ms);
                        }
                        if let Some(done) = self.on_event(&event, id, related.as_ref())? {
                            stream.finish();
                            return Ok(done);
                        }
                    }
                }
                Some(Err(e)) if !legacy || last_event_id.is_none() => {
                    return Err(UpstreamError::Unavailable(format!("response stream broke: {e}")));
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
                    let headers = self.get_headers(opts.version, last_event_id.as_deref());
                    let resp = self.client.send(Method::GET, headers, Bytes::new()).await?;
                    if !resp.status.is_success() {
                        return Err(UpstreamError::Status {
                            status: resp.status.as_u16(),
                            body: "cannot resume the response stream".to_owned(),
                        });
                    }
                    parser = sse::Parser::new(self.cfg.max_message_bytes);
                    stream = resp.body;
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
        let resp = self.client.send(Method::POST, self.post_headers(version), Bytes::from(message)).await?;
        // The (usually empty) body is drained, bounded, so the connection can be reused.
        resp.body.finish();
        match resp.status {
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
            if self.session().is_none() {
                return;
            }
            let headers = self.get_headers(Some(version), last_event_id.as_deref());
            let started = Instant::now();
            match self.client.send(Method::GET, headers, Bytes::new()).await {
                Ok(resp) if resp.status == StatusCode::METHOD_NOT_ALLOWED => return,
                Ok(resp) if resp.status == StatusCode::NOT_FOUND => {
                    self.reset_session();
                    let _ = self.events.send(LinkEvent::Reset);
                    return;
                }
                Ok(resp) if resp.status.is_success() => {
                    let mut parser = sse::Parser::new(self.cfg.max_message_bytes);
                    let mut stream = resp.body;
                    while let Some(Ok(chunk)) = stream.chunk().await {
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
                    tracing::debug!(server = %self.cfg.name, status = %resp.status, "listening stream refused");
                    return;
                }
                Err(e) => {
                    tracing::debug!(server = %self.cfg.name, error = %e, "listening stream failed")
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
        if let Some(s) = self.session().and_then(|s| HeaderValue::from_str(&s).ok()) {
            let mut headers = self.base_headers.clone();
            headers.insert(HeaderName::from_static(header::SESSION_ID), s);
            let _ =
                tokio::time::timeout(Duration::from_secs(2), self.client.send(Method::DELETE, headers, Bytes::new()))
                    .await;
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
        let headers = self.link.post_headers(self.version);
        let body = Bytes::from(notification_bytes("notifications/cancelled", Some(&raw)));
        let client = self.link.client.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let send = async {
                    if let Ok(resp) = client.send(Method::POST, headers, body).await {
                        resp.body.finish();
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(5), send).await;
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

async fn read_limited(mut body: ReplyBody, limit: usize) -> Result<Bytes, UpstreamError> {
    // Most bodies arrive in one chunk: keep it as is and copy only when a second one follows.
    let mut first: Option<Bytes> = None;
    let mut out = Vec::new();
    let mut len = 0;
    while let Some(chunk) = body.chunk().await {
        let chunk = chunk.map_err(UpstreamError::Unavailable)?;
        len += chunk.len();
        if len > limit {
            return Err(UpstreamError::Protocol(format!("response exceeds {limit} bytes")));
        }
        match first.take() {
            None if out.is_empty() => first = Some(chunk),
            None => out.extend_from_slice(&chunk),
            Some(f) => {
                out.reserve(f.len() + chunk.len());
                out.extend_from_slice(&f);
                out.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(out)))
}

/// How requests reach the upstream: a cleartext HTTP/1.1 pool of our own for a plain `http://`
/// origin (the hot path), or the general-purpose client for TLS, proxies and URL credentials.
#[derive(Clone)]
enum Client {
    Pooled { pool: Arc<Pool>, uri: Uri },
    General { client: reqwest::Client, url: reqwest::Url },
}

impl Client {
    /// The pooled client and the `Host` header for `url`, when it is a plain `http://` URL
    /// without credentials and no proxy is configured in the environment (the general client
    /// honours `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`).
    fn pooled(url: &reqwest::Url, connect_timeout: Duration) -> Option<(Client, HeaderValue)> {
        let proxied = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
            .iter()
            .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
        if url.scheme() != "http" || proxied || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        let host_header = match url.port() {
            Some(p) => HeaderValue::from_str(&format!("{host}:{p}")).ok()?,
            None => HeaderValue::from_str(host).ok()?,
        };
        let uri = Uri::try_from(&url[url::Position::BeforePath..url::Position::AfterQuery]).ok()?;
        let pool = Pool::new(format!("{host}:{port}"), connect_timeout);
        Some((Client::Pooled { pool, uri }, host_header))
    }

    async fn send(&self, method: Method, headers: HeaderMap, body: Bytes) -> Result<Reply, UpstreamError> {
        match self {
            Client::Pooled { pool, uri } => {
                let (resp, lease) = pool
                    .send(crate::pool::request(method, uri, headers, body))
                    .await
                    .map_err(|e| UpstreamError::Unavailable(e.to_string()))?;
                let (parts, body) = resp.into_parts();
                Ok(Reply {
                    status: parts.status,
                    headers: parts.headers,
                    body: ReplyBody::Pooled(PooledBody::new(body, lease)),
                })
            }
            Client::General { client, url } => {
                let mut req = reqwest::Request::new(method, url.clone());
                *req.headers_mut() = headers;
                if !body.is_empty() {
                    *req.body_mut() = Some(body.into());
                }
                let resp = client.execute(req).await.map_err(|e| UpstreamError::Unavailable(transport_error(&e)))?;
                Ok(Reply {
                    status: resp.status(),
                    headers: resp.headers().clone(),
                    body: ReplyBody::General(Box::pin(resp.bytes_stream())),
                })
            }
        }
    }
}

/// An upstream's answer: status, headers, and the body to read.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: ReplyBody,
}

type GeneralBody = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

enum ReplyBody {
    Pooled(PooledBody),
    General(GeneralBody),
}

impl ReplyBody {
    /// Reads what is left of a body whose message has arrived (an SSE stream's end follows its
    /// response) or that nobody reads (a notification's answer), so its pooled connection is
    /// reused rather than closed: at once when the end is already buffered, else on a task for at
    /// most 2 s. A general client's body is dropped.
    fn finish(self) {
        let ReplyBody::Pooled(mut body) = self else {
            return;
        };
        loop {
            match body.chunk().now_or_never() {
                Some(Some(Ok(_))) => continue,
                Some(_) => return,
                None => break,
            }
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let drain = async { while let Some(Ok(_)) = body.chunk().await {} };
                let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
            });
        }
    }

    /// The next chunk, `None` at the end; errors are said without URLs or credentials.
    async fn chunk(&mut self) -> Option<Result<Bytes, String>> {
        match self {
            ReplyBody::Pooled(b) => b.chunk().await.map(|r| r.map_err(|_| "broken response body".to_owned())),
            ReplyBody::General(s) => s.next().await.map(|r| r.map_err(|e| transport_error(&e))),
        }
    }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers every POST with the JSON-RPC response to its id (1, 2, …), as one
    /// JSON body or as a chunked SSE stream (a progress event, then the response), and counts
    /// the connections it accepted.
    async fn server(sse: bool) -> (reqwest::Url, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = reqwest::Url::parse(&format!("http://{}/mcp", listener.local_addr().expect("addr"))).expect("url");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut next = 0u64;
            loop {
                let (mut s, _) = listener.accept().await.expect("accept");
                count.fetch_add(1, Ordering::SeqCst);
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse::<usize>().expect("length"));
                    if seen.len() < end + 4 + len {
                        continue;
                    }
                    seen.drain(..end + 4 + len);
                    next += 1;
                    let response = format!(r#"{{"jsonrpc":"2.0","id":{next},"result":{{}}}}"#);
                    let reply = if sse {
                        let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#;
                        let chunk = |text: &str| format!("{:x}\r\n{text}\r\n", text.len());
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{}{}0\r\n\r\n",
                            chunk(&format!("data: {progress}\n\n")),
                            chunk(&format!("data: {response}\n\n"))
                        )
                    } else {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{response}",
                            response.len()
                        )
                    };
                    if s.write_all(reply.as_bytes()).await.is_err() {
                        break;
                    }
                }
            }
        });
        (url, accepted)
    }

    fn link(url: reqwest::Url) -> HttpLink {
        HttpLink::new(HttpConfig {
            name: "t".to_owned(),
            url,
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(2),
            max_message_bytes: 1 << 20,
        })
        .expect("link")
    }

    async fn call(link: &HttpLink) -> Message {
        let opts = CallOptions {
            method: "tools/call",
            timeout: Duration::from_secs(5),
            version: Some(ProtocolVersion::LATEST),
            name: Some("echo"),
            param_headers: &[],
            authorization: None,
        };
        link.call(opts, &|_| None, None).await.expect("call")
    }

    #[tokio::test]
    async fn calls_over_plain_http_reuse_one_pooled_connection() {
        for sse in [false, true] {
            let (url, accepted) = server(sse).await;
            let link = link(url);
            assert!(matches!(link.client, Client::Pooled { .. }));
            for _ in 0..4 {
                let m = call(&link).await;
                assert!(matches!(m.kind, MessageKind::Response { .. }), "{m:?}");
                // An SSE stream's end follows its response; give its drain a moment.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 1, "sse: {sse}");
        }
    }

    #[test]
    fn tls_and_credentials_use_the_general_client() {
        for url in ["https://example.test/mcp", "http://user:secret@example.test/mcp"] {
            let link = link(reqwest::Url::parse(url).expect("url"));
            assert!(matches!(link.client, Client::General { .. }), "{url}");
        }
    }

    #[test]
    fn the_pooled_client_sends_origin_form_and_host() {
        let link = link(reqwest::Url::parse("http://127.0.0.1:9/a/mcp?x=1").expect("url"));
        let Client::Pooled { uri, .. } = &link.client else { panic!("not pooled") };
        assert_eq!(uri.to_string(), "/a/mcp?x=1");
        assert_eq!(link.base_headers.get(http::header::HOST).expect("host"), "127.0.0.1:9");
    }
}
