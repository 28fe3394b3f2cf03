//! The gateway as an MCP client of one upstream: discovers which era the
//! upstream speaks, performs the handshake, shapes each request's `_meta` for
//! that era, and re-establishes the upstream transparently after a restart or
//! a lost session.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use portcullis_wire::envelope::{Outcome, notification_bytes};
use portcullis_wire::{Era, ErrorCode, Message, MessageKind, ProtocolVersion, RawObject, meta};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::UpstreamError;
use crate::link::{CallOptions, Link, LinkEvent, Params, Related};
use crate::shaping::Shaped;

/// Which era to speak to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EraPreference {
    /// Probe with `server/discover`, fall back to `initialize`.
    #[default]
    Auto,
    Modern,
    Legacy,
}

/// What the gateway says of itself to upstreams.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub name: String,
    pub version: String,
    /// The capabilities declared in a legacy `initialize` and on modern requests that carry none.
    pub capabilities: Box<RawValue>,
}

impl ClientInfo {
    /// `{"name":…,"version":…}` as raw JSON.
    pub(crate) fn info_json(&self) -> Box<RawValue> {
        serde_json::value::to_raw_value(&serde_json::json!({"name": self.name, "version": self.version}))
            .unwrap_or_else(|_| portcullis_wire::object::empty_object())
    }
}

/// What the handshake learned of an upstream.
#[derive(Debug, Clone)]
pub struct UpstreamInfo {
    pub version: ProtocolVersion,
    /// The server's capabilities, raw.
    pub capabilities: Box<RawValue>,
    /// `serverInfo` (legacy) or `_meta["io.modelcontextprotocol/serverInfo"]` (modern), raw.
    pub server_info: Option<Box<RawValue>>,
    pub instructions: Option<String>,
}

impl UpstreamInfo {
    /// The era the upstream was found to speak.
    pub fn era(&self) -> Era {
        self.version.era()
    }

    /// Whether the server declared a capability (e.g. `tools`, `resources`).
    pub fn has_capability(&self, name: &str) -> bool {
        RawObject::parse(&self.capabilities).is_some_and(|c| c.contains(name))
    }
}

/// How one request is sent.
#[derive(Clone, Copy)]
pub struct RequestOptions<'a> {
    pub timeout: Duration,
    /// `Mcp-Name` for modern HTTP (tool name, prompt name or resource URI).
    pub name: Option<&'a str>,
    /// The host's capabilities for this request, raw (modern upstreams receive them).
    pub host_capabilities: Option<&'a RawValue>,
    /// `Mcp-Param-*` headers (suffix, value) for a modern HTTP `tools/call`.
    pub param_headers: &'a [(String, String)],
    /// The log level a legacy host set for its session; a modern upstream gets it per request.
    pub log_level: Option<&'a str>,
    /// A user's own `Authorization` for this request (HTTP upstreams), replacing the gateway's.
    pub authorization: Option<&'a http::HeaderValue>,
}

impl RequestOptions<'_> {
    /// A request of the gateway's own (no host behind it): no name, headers or host context.
    pub fn own(timeout: Duration) -> Self {
        Self { timeout, name: None, host_capabilities: None, param_headers: &[], log_level: None, authorization: None }
    }
}

/// An MCP client of one upstream.
pub struct UpstreamClient {
    link: Link,
    preference: EraPreference,
    client: ClientInfo,
    probe_timeout: Duration,
    /// `clientInfo` serialized once, for modern requests.
    client_info_json: Box<RawValue>,
    info: Mutex<Option<Arc<UpstreamInfo>>>,
    handshake: tokio::sync::Mutex<()>,
}

impl UpstreamClient {
    /// A client over a link; it watches the link for resets.
    pub fn new(link: Link, preference: EraPreference, client: ClientInfo, probe_timeout: Duration) -> Arc<Self> {
        let client_info_json = client.info_json();
        let this = Arc::new(Self {
            link,
            preference,
            client,
            client_info_json,
            probe_timeout,
            info: Mutex::new(None),
            handshake: tokio::sync::Mutex::new(()),
        });
        let weak = Arc::downgrade(&this);
        let events = this.link.subscribe();
        tokio::spawn(watch_resets(weak, events));
        this
    }

    /// The upstream's link.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        self.link.name()
    }

    /// The handshake's findings, if the handshake is done (never starts one).
    pub fn known_info(&self) -> Option<Arc<UpstreamInfo>> {
        self.current()
    }

    fn current(&self) -> Option<Arc<UpstreamInfo>> {
        self.info.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn forget(&self) {
        *self.info.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// The handshake's findings, performing it first if needed.
    pub async fn info(&self, timeout: Duration) -> Result<Arc<UpstreamInfo>, UpstreamError> {
        if let Some(info) = self.current() {
            return Ok(info);
        }
        let _one = self.handshake.lock().await;
        if let Some(info) = self.current() {
            return Ok(info);
        }
        let info = Arc::new(match self.preference {
            EraPreference::Modern => self.discover(timeout).await?.map_err(|e| e.into_error())?,
            EraPreference::Legacy => self.initialize(timeout).await?,
            EraPreference::Auto => match self.discover(self.probe_timeout.min(timeout)).await {
                Ok(Ok(info)) => info,
                Ok(Err(ProbeError::Modern(e))) => return Err(e),
                Ok(Err(ProbeError::NotModern)) | Err(UpstreamError::Timeout(_) | UpstreamError::Status { .. }) => {
                    self.initialize(timeout).await?
                }
                Err(e) => return Err(e),
            },
        });
        tracing::info!(server = %self.name(), version = %info.version, "upstream ready");
        if let (Link::Http(http), Era::Legacy) = (&self.link, info.era()) {
            http.listen(info.version);
        }
        *self.info.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(&info));
        Ok(info)
    }

    async fn discover(&self, timeout: Duration) -> Result<Result<UpstreamInfo, ProbeError>, UpstreamError> {
        let version = ProtocolVersion::LATEST;
        let mut m = RawObject::default();
        m.insert_str(meta::PROTOCOL_VERSION, version.as_str());
        m.insert_raw(meta::CLIENT_CAPABILITIES, self.client.capabilities.clone());
        m.insert_raw(meta::CLIENT_INFO, self.client_info_json.clone());
        let mut params = RawObject::default();
        params.insert_object("_meta", &m);
        let params = params.to_raw();
        let opts = CallOptions {
            method: "server/discover",
            timeout,
            version: Some(version),
            name: None,
            param_headers: &[],
            authorization: None,
        };
        let response = self.link.call(opts, &|_| Some(Params::Raw(Cow::Borrowed(&params))), None).await?;
        Ok(read_discover(&response))
    }

    async fn initialize(&self, timeout: Duration) -> Result<UpstreamInfo, UpstreamError> {
        self.link.reset_session();
        let params = serde_json::json!({
            "protocolVersion": ProtocolVersion::LATEST_LEGACY.as_str(),
            "capabilities": &*self.client.capabilities,
            "clientInfo": {"name": self.client.name, "version": self.client.version},
        });
        let params = serde_json::value::to_raw_value(&params).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let opts = CallOptions {
            method: "initialize",
            timeout,
            version: Some(ProtocolVersion::LATEST_LEGACY),
            name: None,
            param_headers: &[],
            authorization: None,
        };
        let response = self.link.call(opts, &|_| Some(Params::Raw(Cow::Borrowed(&params))), None).await?;
        let result = match &response.kind {
            MessageKind::Response { outcome: Outcome::Result(r), .. } => r,
            MessageKind::Response { outcome: Outcome::Error(e), .. } => {
                return Err(UpstreamError::Protocol(format!("initialize refused: {}", e.get())));
            }
            _ => {
                return Err(UpstreamError::Protocol("initialize: not a response".to_owned()));
            }
        };
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct InitializeResult {
            protocol_version: String,
            capabilities: Option<Box<RawValue>>,
            server_info: Option<Box<RawValue>>,
            instructions: Option<String>,
        }
        let init: InitializeResult = serde_json::from_str(result.get())
            .map_err(|e| UpstreamError::Protocol(format!("initialize result: {e}")))?;
        let version =
            ProtocolVersion::parse(&init.protocol_version).filter(|v| v.era() == Era::Legacy).ok_or_else(|| {
                UpstreamError::Protocol(format!("upstream chose unsupported version {}", init.protocol_version))
            })?;
        self.link.send(notification_bytes("notifications/initialized", None), Some(version)).await?;
        Ok(UpstreamInfo {
            version,
            capabilities: init.capabilities.unwrap_or_else(portcullis_wire::object::empty_object),
            server_info: init.server_info,
            instructions: init.instructions,
        })
    }

    /// Sends a request shaped for the upstream's era and waits for the response.
    /// A lost session or restarted process is re-established once, transparently.
    pub async fn request(
        &self,
        method: &str,
        params: Option<&RawValue>,
        opts: RequestOptions<'_>,
        related: Option<Related>,
    ) -> Result<Message, UpstreamError> {
        let shaped = Shaped::new(params);
        let mut retried = false;
        loop {
            let info = self.info(opts.timeout).await?;
            let call = CallOptions {
                method,
                timeout: opts.timeout,
                version: Some(info.version),
                name: opts.name,
                param_headers: opts.param_headers,
                authorization: opts.authorization,
            };
            let build = |id: u64| shaped.build(id, &info, &self.client, &self.client_info_json, &opts);
            match self.link.call(call, &build, related.clone()).await {
                Err(UpstreamError::SessionLost(_)) if !retried => {
                    retried = true;
                    self.forget();
                }
                other => return other,
            }
        }
    }

    /// Sends a notification or a response to a server-initiated request.
    pub async fn send(&self, message: Vec<u8>) -> Result<(), UpstreamError> {
        let version = self.current().map(|i| i.version);
        self.link.send(message, version).await
    }
}

/// What a `server/discover` probe found out, when it was not a modern server.
enum ProbeError {
    /// A modern server that refused us (e.g. supports no modern version we speak).
    Modern(UpstreamError),
    /// Not a modern server: fall back to `initialize`.
    NotModern,
}

impl ProbeError {
    fn into_error(self) -> UpstreamError {
        match self {
            Self::Modern(e) => e,
            Self::NotModern => UpstreamError::Protocol("upstream does not speak 2026-07-28".to_owned()),
        }
    }
}

fn read_discover(response: &Message) -> Result<UpstreamInfo, ProbeError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct DiscoverResult {
        supported_versions: Vec<String>,
        capabilities: Option<Box<RawValue>>,
        instructions: Option<String>,
        #[serde(rename = "_meta")]
        meta: Option<Box<RawValue>>,
    }
    #[derive(Deserialize)]
    struct ErrorObject {
        code: i32,
        data: Option<ErrorData>,
    }
    #[derive(Deserialize)]
    struct ErrorData {
        supported: Option<Vec<String>>,
    }
    match &response.kind {
        MessageKind::Response { outcome: Outcome::Result(r), .. } => {
            let Ok(d) = serde_json::from_str::<DiscoverResult>(r.get()) else {
                return Err(ProbeError::NotModern);
            };
            let version = d
                .supported_versions
                .iter()
                .filter_map(|v| ProtocolVersion::parse(v))
                .filter(|v| v.era() == Era::Modern)
                .max();
            let Some(version) = version else {
                // A dual-era server that offers only legacy revisions to us.
                return Err(ProbeError::NotModern);
            };
            let server_info = d
                .meta
                .as_deref()
                .and_then(RawObject::parse)
                .and_then(|m| m.get(meta::SERVER_INFO).map(ToOwned::to_owned));
            Ok(UpstreamInfo {
                version,
                capabilities: d.capabilities.unwrap_or_else(portcullis_wire::object::empty_object),
                server_info,
                instructions: d.instructions,
            })
        }
        MessageKind::Response { outcome: Outcome::Error(e), .. } => {
            let Ok(err) = serde_json::from_str::<ErrorObject>(e.get()) else {
                return Err(ProbeError::NotModern);
            };
            let code = ErrorCode(err.code);
            if code == ErrorCode::UNSUPPORTED_PROTOCOL_VERSION {
                let supported = err.data.and_then(|d| d.supported).unwrap_or_default();
                if supported.iter().any(|v| ProtocolVersion::parse(v).is_some_and(|v| v.era() == Era::Legacy)) {
                    return Err(ProbeError::NotModern);
                }
                return Err(ProbeError::Modern(UpstreamError::Protocol(format!(
                    "upstream supports none of our versions (it offers {supported:?})"
                ))));
            }
            if code == ErrorCode::HEADER_MISMATCH || code == ErrorCode::MISSING_CLIENT_CAPABILITY {
                return Err(ProbeError::Modern(UpstreamError::Protocol(format!(
                    "server/discover refused: {}",
                    e.get()
                ))));
            }
            Err(ProbeError::NotModern)
        }
        _ => Err(ProbeError::NotModern),
    }
}

async fn watch_resets(client: Weak<UpstreamClient>, mut events: tokio::sync::broadcast::Receiver<LinkEvent>) {
    loop {
        match events.recv().await {
            Ok(LinkEvent::Reset) => match client.upgrade() {
                Some(c) => c.forget(),
                None => return,
            },
            Ok(LinkEvent::Message(_)) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                if client.strong_count() == 0 {
                    return;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
