//! A raw message pipe to one upstream, whatever its transport.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use portcullis_wire::{Message, ProtocolVersion};
use serde_json::value::RawValue;
use tokio::sync::broadcast;

use crate::error::UpstreamError;
use crate::http::HttpLink;
use crate::legacy_sse::LegacySseLink;
use crate::stdio::StdioLink;

pub use crate::pending::Related;

/// Something an upstream did that no call asked for.
#[derive(Debug, Clone)]
pub enum LinkEvent {
    /// A notification or request that names no call in flight.
    Message(Message),
    /// The connection was re-established (process restarted, session lost): handshake again.
    Reset,
}

/// Builds a call's params once its gateway id is known (so a progress token can name it).
pub type ParamsFn<'a> = &'a (dyn Fn(u64) -> Option<Params<'a>> + Send + Sync);

/// A call's params as sent.
pub enum Params<'a> {
    /// Raw JSON, as the caller holds it.
    Raw(Cow<'a, RawValue>),
    /// Text spliced from parts of raw JSON that were read (each valid, joined at member
    /// boundaries): valid by construction, so it is not parsed again to check it. For large
    /// arguments that parse was one more pass over every byte.
    Spliced(String),
}

impl Params<'_> {
    /// The JSON text.
    pub fn text(&self) -> &str {
        match self {
            Params::Raw(raw) => raw.get(),
            Params::Spliced(text) => text,
        }
    }
}

/// How one call is sent.
#[derive(Clone, Copy)]
pub struct CallOptions<'a> {
    pub method: &'a str,
    pub timeout: Duration,
    /// The revision the request is sent as (sets `MCP-Protocol-Version` over HTTP).
    pub version: Option<ProtocolVersion>,
    /// The `Mcp-Name` of a modern HTTP request (tool name, resource URI, prompt name).
    pub name: Option<&'a str>,
    /// `Mcp-Param-*` headers of a modern HTTP `tools/call` (suffix, plain value).
    pub param_headers: &'a [(String, String)],
    /// An `Authorization` value for this request only (a user's own credential for the upstream),
    /// replacing the link's configured one. HTTP links only.
    pub authorization: Option<&'a http::HeaderValue>,
}

/// A pipe to one upstream.
#[derive(Clone)]
pub enum Link {
    Stdio(Arc<StdioLink>),
    Http(Arc<HttpLink>),
    LegacySse(Arc<LegacySseLink>),
}

impl Link {
    /// Sends a request and waits for its response; related messages go to `related`.
    pub async fn call(
        &self,
        opts: CallOptions<'_>,
        params: ParamsFn<'_>,
        related: Option<Related>,
    ) -> Result<Message, UpstreamError> {
        match self {
            Self::Stdio(l) => l.call(opts, params, related).await,
            Self::Http(l) => l.call(opts, params, related).await,
            Self::LegacySse(l) => l.call(opts, params, related).await,
        }
    }

    /// Sends a notification or a response to a server-initiated request.
    pub async fn send(&self, message: Vec<u8>, version: Option<ProtocolVersion>) -> Result<(), UpstreamError> {
        match self {
            Self::Stdio(l) => l.send(message).await,
            Self::Http(l) => l.send(message, version).await,
            Self::LegacySse(l) => l.send(message).await,
        }
    }

    /// Unsolicited messages and resets.
    pub fn subscribe(&self) -> broadcast::Receiver<LinkEvent> {
        match self {
            Self::Stdio(l) => l.subscribe(),
            Self::Http(l) => l.subscribe(),
            Self::LegacySse(l) => l.subscribe(),
        }
    }

    /// Forgets the upstream session (after the upstream said it is gone).
    pub fn reset_session(&self) {
        match self {
            Self::Stdio(_) => {}
            Self::Http(l) => l.reset_session(),
            Self::LegacySse(l) => l.reset_session(),
        }
    }

    /// The upstream's name, for logs and errors.
    pub fn name(&self) -> &str {
        match self {
            Self::Stdio(l) => l.name(),
            Self::Http(l) => l.name(),
            Self::LegacySse(l) => l.name(),
        }
    }

    /// Stops the link (for stdio: close stdin, then SIGTERM, then SIGKILL).
    pub async fn shutdown(&self) {
        match self {
            Self::Stdio(l) => l.shutdown().await,
            Self::Http(l) => l.shutdown().await,
            Self::LegacySse(l) => l.shutdown().await,
        }
    }
}
