//! One simulated host's keep-alive HTTP/1.1 connection to an MCP endpoint, with its legacy session
//! when it has one. Each load worker owns one, so there is no pool lock on the measured path.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::process::Credential;
use crate::request::{Era, LEGACY, MODERN, Template};

const SESSION: HeaderName = HeaderName::from_static("mcp-session-id");
const VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const METHOD: HeaderName = HeaderName::from_static("mcp-method");
const NAME: HeaderName = HeaderName::from_static("mcp-name");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const BOTH: HeaderValue = HeaderValue::from_static("application/json, text/event-stream");

/// Where a target serves MCP: address and path.
#[derive(Debug)]
pub struct Endpoint {
    /// The TCP address.
    pub addr: SocketAddr,
    /// The route's path, e.g. `/mcp`.
    pub path: String,
    host: HeaderValue,
    /// `Authorization` sent with every request, and the credential's kind (`api_key`, `jwt`), when
    /// the target authenticates its hosts.
    credential: Option<(&'static str, HeaderValue)>,
}

impl Endpoint {
    /// The endpoint at `http://addr/path`, for anonymous hosts.
    pub fn new(addr: SocketAddr, path: &str) -> anyhow::Result<Endpoint> {
        let host = HeaderValue::from_str(&addr.to_string()).context("host header")?;
        Ok(Endpoint { addr, path: path.to_owned(), host, credential: None })
    }

    /// The same endpoint, every request carrying `Authorization: Bearer <secret>` (a JWT or an API key).
    pub fn with_bearer(mut self, credential: &Credential) -> anyhow::Result<Endpoint> {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", credential.secret)).context("authorization header")?;
        value.set_sensitive(true);
        self.credential = Some((credential.kind, value));
        Ok(self)
    }

    /// How requests authenticate (`api_key`, `jwt`); `None`: they carry no credentials.
    pub fn authentication(&self) -> Option<&'static str> {
        self.credential.as_ref().map(|(kind, _)| *kind)
    }

    /// The same endpoint without credentials.
    pub fn anonymous(&self) -> Endpoint {
        Endpoint { addr: self.addr, path: self.path.clone(), host: self.host.clone(), credential: None }
    }
}

/// What a successful exchange returned that the caller may need.
#[derive(Debug, Default)]
pub struct Reply {
    /// `Mcp-Session-Id`, when the server minted one.
    pub session: Option<HeaderValue>,
}

/// A keep-alive connection, reopened after a failure.
#[derive(Debug)]
pub struct Connection {
    endpoint: Arc<Endpoint>,
    sender: Option<SendRequest<Full<Bytes>>>,
    session: Option<HeaderValue>,
}

impl Connection {
    /// Connects; for legacy requests, also opens a session (`initialize` + `notifications/initialized`).
    pub async fn open(endpoint: Arc<Endpoint>, era: Era) -> anyhow::Result<Connection> {
        let mut c = Connection { endpoint, sender: None, session: None };
        c.connect().await?;
        if era == Era::Legacy {
            let reply = c.send(&Template::initialize()).await?;
            let Some(session) = reply.session else { bail!("initialize returned no Mcp-Session-Id") };
            c.session = Some(session);
            c.notify(Template::initialized()).await?;
        }
        Ok(c)
    }

    async fn connect(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(self.endpoint.addr).await.context("connect")?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(self.sender.insert(sender))
    }

    /// Sends one request and reads the whole answer (JSON or SSE); an answer without a JSON-RPC
    /// result is an error.
    pub async fn send(&mut self, t: &Template) -> anyhow::Result<Reply> {
        let req = self.request(t)?;
        let (status, session, body) = self.exchange(req).await?;
        if status != StatusCode::OK {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
        }
        if memchr::memmem::find(&body, b"\"result\"").is_none() {
            bail!("no result: {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
        }
        Ok(Reply { session })
    }

    /// Sends one request and returns the HTTP status it got, whatever it is.
    pub async fn status(&mut self, t: &Template) -> anyhow::Result<StatusCode> {
        let req = self.request(t)?;
        Ok(self.exchange(req).await?.0)
    }

    fn request(&self, t: &Template) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut req = Request::builder().method(Method::POST).uri(self.endpoint.path.as_str());
        let headers = req.headers_mut().context("request builder")?;
        headers.insert(HOST, self.endpoint.host.clone());
        headers.insert(CONTENT_TYPE, JSON);
        headers.insert(ACCEPT, BOTH);
        match t.era {
            Era::Modern => {
                headers.insert(VERSION, HeaderValue::from_static(MODERN));
                headers.insert(METHOD, HeaderValue::from_static(t.method));
                if let Some(name) = &t.name {
                    headers.insert(NAME, HeaderValue::from_str(name)?);
                }
            }
            Era::Legacy => {
                headers.insert(VERSION, HeaderValue::from_static(LEGACY));
                if let Some(session) = &self.session {
                    headers.insert(SESSION, session.clone());
                }
            }
            Era::Handshake => {}
        }
        Ok(req.body(Full::new(t.body.clone()))?)
    }

    /// Sends a legacy notification in this connection's session (expects 202).
    async fn notify(&mut self, body: Bytes) -> anyhow::Result<()> {
        let mut req = Request::builder().method(Method::POST).uri(self.endpoint.path.as_str());
        let headers = req.headers_mut().context("request builder")?;
        headers.insert(HOST, self.endpoint.host.clone());
        headers.insert(CONTENT_TYPE, JSON);
        headers.insert(ACCEPT, BOTH);
        headers.insert(VERSION, HeaderValue::from_static(LEGACY));
        if let Some(session) = &self.session {
            headers.insert(SESSION, session.clone());
        }
        let (status, _, _) = self.exchange(req.body(Full::new(body))?).await?;
        if status != StatusCode::ACCEPTED {
            bail!("notification answered HTTP {status}");
        }
        Ok(())
    }

    /// Ends a legacy session (`DELETE` with its id); used to clean up after `initialize` load.
    pub async fn end_session(&mut self, session: HeaderValue) -> anyhow::Result<()> {
        let mut req = Request::builder().method(Method::DELETE).uri(self.endpoint.path.as_str());
        let headers = req.headers_mut().context("request builder")?;
        headers.insert(HOST, self.endpoint.host.clone());
        headers.insert(VERSION, HeaderValue::from_static(LEGACY));
        headers.insert(SESSION, session);
        self.exchange(req.body(Full::new(Bytes::new()))?).await?;
        Ok(())
    }

    /// Opens an idle legacy session on this connection (for the memory measurement) and forgets it.
    pub async fn open_idle_session(&mut self) -> anyhow::Result<()> {
        let reply = self.send(&Template::initialize()).await?;
        let Some(session) = reply.session else { bail!("initialize returned no Mcp-Session-Id") };
        self.session = Some(session);
        self.notify(Template::initialized()).await
    }

    async fn exchange(
        &mut self,
        mut req: Request<Full<Bytes>>,
    ) -> anyhow::Result<(StatusCode, Option<HeaderValue>, Bytes)> {
        if let Some((_, credential)) = &self.endpoint.credential {
            req.headers_mut().insert(AUTHORIZATION, credential.clone());
        }
        let sender = match self.sender.as_mut() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        let result = async {
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let session = resp.headers().get(SESSION).cloned();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, session, body))
        }
        .await;
        if result.is_err() {
            // The connection may be half-used: start the next request on a fresh one.
            self.sender = None;
        }
        result
    }
}
