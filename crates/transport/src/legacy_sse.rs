//! The deprecated HTTP+SSE transport (2024-11-05): a GET stream whose first
//! `endpoint` event names the URL to POST messages to; responses come on the stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use portcullis_wire::envelope::request_bytes_of_text;
use portcullis_wire::{Message, RequestId};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::error::UpstreamError;
use crate::http::HttpConfig;
use crate::link::{CallOptions, LinkEvent, Params, ParamsFn};
use crate::pending::{Pending, Related};
use crate::sse;

/// An HTTP+SSE upstream.
pub struct LegacySseLink {
    cfg: HttpConfig,
    client: reqwest::Client,
    endpoint: watch::Sender<Option<reqwest::Url>>,
    pending: Pending,
    events: broadcast::Sender<LinkEvent>,
    stop: CancellationToken,
}

impl LegacySseLink {
    /// Connects (and keeps reconnecting) in the background.
    pub fn start(cfg: HttpConfig) -> Result<Arc<Self>, UpstreamError> {
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| UpstreamError::Unavailable(format!("http client: {e}")))?;
        let (events, _) = broadcast::channel(256);
        let (endpoint, _) = watch::channel(None);
        let link = Arc::new(Self {
            cfg,
            client,
            endpoint,
            pending: Pending::default(),
            events,
            stop: CancellationToken::new(),
        });
        tokio::spawn(Arc::clone(&link).connect_loop());
        Ok(link)
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Unsolicited messages and reconnects.
    pub fn subscribe(&self) -> broadcast::Receiver<LinkEvent> {
        self.events.subscribe()
    }

    /// Nothing to forget: the session is the stream.
    pub fn reset_session(&self) {}

    async fn endpoint(&self, limit: Duration) -> Result<reqwest::Url, UpstreamError> {
        let mut rx = self.endpoint.subscribe();
        let found = tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await;
        match found {
            Ok(Ok(url)) => url.clone().ok_or_else(|| UpstreamError::Unavailable("no endpoint".to_owned())),
            _ => Err(UpstreamError::Unavailable(format!("{}: no SSE endpoint announced", self.cfg.name))),
        }
    }

    /// Posts a request and waits for its response on the stream.
    pub async fn call(
        &self,
        opts: CallOptions<'_>,
        params: ParamsFn<'_>,
        related: Option<Related>,
    ) -> Result<Message, UpstreamError> {
        let started = Instant::now();
        let url = self.endpoint(opts.timeout.min(Duration::from_secs(5))).await?;
        let ticket = self.pending.register(related);
        let body = request_bytes_of_text(
            &RequestId::number(ticket.id),
            opts.method,
            params(ticket.id).as_ref().map(Params::text),
        );
        if let Err(e) = self.post(url, body).await {
            self.pending.forget(ticket.id);
            return Err(e);
        }
        let remaining = opts.timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, ticket.response).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(UpstreamError::Unavailable("stream closed".to_owned())),
            Err(_) => {
                self.pending.forget(ticket.id);
                Err(UpstreamError::Timeout(opts.timeout))
            }
        }
    }

    /// Posts a notification or response.
    pub async fn send(&self, message: Vec<u8>) -> Result<(), UpstreamError> {
        let url = self.endpoint(Duration::from_secs(5)).await?;
        self.post(url, message).await
    }

    async fn post(&self, url: reqwest::Url, body: Vec<u8>) -> Result<(), UpstreamError> {
        let mut req = self.client.post(url).header(http::header::CONTENT_TYPE, "application/json").body(body);
        for (k, v) in &self.cfg.headers {
            req = req.header(k, v);
        }
        let resp =
            req.send().await.map_err(|_| UpstreamError::Unavailable("message endpoint unreachable".to_owned()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(UpstreamError::Status { status: resp.status().as_u16(), body: String::new() })
        }
    }

    /// Stops the stream.
    pub async fn shutdown(&self) {
        self.stop.cancel();
    }

    async fn connect_loop(self: Arc<Self>) {
        let mut delay = Duration::from_millis(200);
        loop {
            let started = Instant::now();
            tokio::select! {
                () = self.stream_once() => {}
                () = self.stop.cancelled() => return,
            }
            let _ = self.endpoint.send(None);
            self.pending.fail_all(&UpstreamError::Unavailable("SSE stream closed".to_owned()));
            let _ = self.events.send(LinkEvent::Reset);
            if started.elapsed() > Duration::from_secs(30) {
                delay = Duration::from_millis(200);
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.stop.cancelled() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    async fn stream_once(&self) {
        let mut get = self.client.get(self.cfg.url.clone()).header(http::header::ACCEPT, "text/event-stream");
        for (k, v) in &self.cfg.headers {
            get = get.header(k, v);
        }
        let resp = match get.send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                tracing::warn!(server = %self.cfg.name, status = %r.status(), "SSE stream refused");
                return;
            }
            Err(_) => {
                tracing::warn!(server = %self.cfg.name, "SSE stream unreachable");
                return;
            }
        };
        let mut parser = sse::Parser::new(self.cfg.max_message_bytes);
        let mut stream = resp.bytes_stream();
        while let Some(Ok(chunk)) = stream.next().await {
            let Ok(events) = parser.push(&chunk) else {
                tracing::warn!(server = %self.cfg.name, "oversized SSE event; reconnecting");
                return;
            };
            for event in events {
                match event.event.as_deref() {
                    Some("endpoint") => match self.cfg.url.join(event.data.trim()) {
                        Ok(url) if url.origin() == self.cfg.url.origin() => {
                            let _ = self.endpoint.send(Some(url));
                        }
                        _ => {
                            tracing::warn!(server = %self.cfg.name, "endpoint event names another origin; refused");
                            return;
                        }
                    },
                    None | Some("message") => match Message::parse(event.data.as_bytes()) {
                        Ok(m) => self.pending.deliver(m, &self.events, &self.cfg.name),
                        Err(e) => {
                            tracing::warn!(server = %self.cfg.name, error = %e, "invalid message on SSE stream")
                        }
                    },
                    Some(_) => {}
                }
            }
        }
    }
}
