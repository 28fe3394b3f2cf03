//! Routes ("virtual servers"): which upstreams a path exposes, how their names
//! are prefixed, and which upstream owns a resource URI.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_transport::client::{RequestOptions, UpstreamInfo};
use portcullis_transport::{UpstreamClient, UpstreamError};
use portcullis_wire::RawObject;
use portcullis_wire::param_header::ParamHeader;
use serde_json::value::RawValue;
use tokio::sync::{Notify, broadcast};

use crate::config::{FailurePolicy, Naming, RouteSettings, UpstreamSettings};
use crate::exchange::TokenExchange;

/// The longest tool or prompt name the spec allows.
pub const MAX_NAME: usize = 128;

/// An upstream's client, present only while the upstream is connected (the registry may
/// keep an unapproved server from ever being started, and disconnect a revoked one).
#[derive(Default)]
pub struct Connection {
    current: RwLock<Option<Arc<UpstreamClient>>>,
}

impl Connection {
    /// The client, if connected.
    pub fn current(&self) -> Option<Arc<UpstreamClient>> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Replaces the client; returns the previous one.
    pub fn replace(&self, client: Option<Arc<UpstreamClient>>) -> Option<Arc<UpstreamClient>> {
        std::mem::replace(&mut *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner), client)
    }

    fn connected(&self) -> Result<Arc<UpstreamClient>, UpstreamError> {
        self.current().ok_or_else(|| UpstreamError::Unavailable("not connected".to_owned()))
    }

    /// See [`UpstreamClient::info`].
    pub async fn info(&self, timeout: std::time::Duration) -> Result<Arc<UpstreamInfo>, UpstreamError> {
        self.connected()?.info(timeout).await
    }

    /// See [`UpstreamClient::request`].
    pub async fn request(
        &self,
        method: &str,
        params: Option<&serde_json::value::RawValue>,
        opts: RequestOptions<'_>,
        related: Option<portcullis_transport::Related>,
    ) -> Result<portcullis_wire::Message, UpstreamError> {
        self.connected()?.request(method, params, opts, related).await
    }

    /// See [`UpstreamClient::send`].
    pub async fn send(&self, message: Vec<u8>) -> Result<(), UpstreamError> {
        self.connected()?.send(message).await
    }
}

/// One upstream server as the gateway runs it.
pub struct Upstream {
    pub settings: UpstreamSettings,
    pub client: Connection,
    /// What each tool's admitted (pinned) list entry says, by the upstream's tool name.
    tools: RwLock<HashMap<String, Arc<ToolFacts>>>,
    /// Resource URIs hosts subscribed to on this upstream, with how many hosts did.
    resource_subs: Mutex<HashMap<String, usize>>,
    /// Signalled when the subscribed set changes (a modern upstream's listen stream restarts).
    pub subscriptions_changed: Notify,
    /// The upstream's list pages, kept as long as its caching hints allow.
    pub lists: ListCache,
    /// Per-user credentials by token exchange, when configured (set at connect).
    exchange: RwLock<Option<Arc<TokenExchange>>>,
}

impl Upstream {
    /// An upstream, not connected yet, with nothing learned yet.
    pub fn new(settings: UpstreamSettings) -> Self {
        Self {
            settings,
            client: Connection::default(),
            tools: RwLock::new(HashMap::new()),
            resource_subs: Mutex::new(HashMap::new()),
            subscriptions_changed: Notify::new(),
            lists: ListCache::default(),
            exchange: RwLock::new(None),
        }
    }

    /// Counts one more host subscribed to a URI; true for the first.
    pub fn retain_resource(&self, uri: &str) -> bool {
        let mut subs = self.resource_subs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = subs.entry(uri.to_owned()).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Counts one host fewer subscribed to a URI; true when it was the last.
    pub fn release_resource(&self, uri: &str) -> bool {
        let mut subs = self.resource_subs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match subs.get_mut(uri) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                subs.remove(uri);
                true
            }
            None => false,
        }
    }

    /// Every URI some host is subscribed to, sorted.
    pub fn subscribed_resources(&self) -> Vec<String> {
        let subs = self.resource_subs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut uris: Vec<String> = subs.keys().cloned().collect();
        uris.sort();
        uris
    }

    /// Records what an admitted tool's list entry says (replacing what was known).
    /// A listing repeats the same entries: an unchanged one is not written again (no write lock
    /// on the list path unless something changed).
    pub fn learn_tool(&self, tool: &str, facts: ToolFacts) {
        if self.tool(tool).is_some_and(|known| *known == facts) {
            return;
        }
        let mut map = self.tools.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(tool.to_owned(), Arc::new(facts));
    }

    /// What is known of a tool, if it was listed and admitted since the upstream connected.
    pub fn tool(&self, tool: &str) -> Option<Arc<ToolFacts>> {
        self.tools.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(tool).cloned()
    }

    /// A tool's header annotations, if it has any.
    pub fn tool_headers(&self, tool: &str) -> Option<Vec<ParamHeader>> {
        self.tool(tool).filter(|t| !t.headers.is_empty()).map(|t| t.headers.clone())
    }

    /// The token exchanger of an upstream acting with each user's own credential.
    pub fn exchange(&self) -> Option<Arc<TokenExchange>> {
        self.exchange.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Sets (or clears) the token exchanger.
    pub fn set_exchange(&self, exchange: Option<TokenExchange>) {
        *self.exchange.write().unwrap_or_else(std::sync::PoisonError::into_inner) = exchange.map(Arc::new);
    }

    /// Forgets every tool (the upstream reconnected: its metadata must be seen again).
    pub fn forget_tools(&self) {
        self.tools.write().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}

/// What the gateway keeps of a tool's admitted list entry: what the controls need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolFacts {
    /// `x-mcp-header` annotations of its input schema.
    pub headers: Vec<ParamHeader>,
    /// Its `inputSchema`, as listed.
    pub input_schema: Option<Box<str>>,
    /// Its `outputSchema`, as listed.
    pub output_schema: Option<Box<str>>,
    /// `annotations.readOnlyHint`.
    pub read_only: Option<bool>,
    /// `annotations.destructiveHint`.
    pub destructive: Option<bool>,
}

impl ToolFacts {
    /// The facts of one listed tool (headers are parsed by the caller, which decides on bad ones).
    pub fn of(tool: &RawObject, headers: Vec<ParamHeader>) -> Self {
        let annotations = tool.get_object("annotations");
        let hint = |key: &str| annotations.as_ref().and_then(|a| a.get(key)).and_then(|v| v.get().parse::<bool>().ok());
        Self {
            headers,
            input_schema: tool.get("inputSchema").map(|s| s.get().into()),
            output_schema: tool.get("outputSchema").map(|s| s.get().into()),
            read_only: hint("readOnlyHint"),
            destructive: hint("destructiveHint"),
        }
    }
}

/// One upstream's list pages, per (kind, cursor), kept for the page's `ttlMs` when its
/// `cacheScope` is `public`; dropped at once on the upstream's list-changed notification
/// and when the upstream is reconnected or reset. Pages are raw: the caller still filters
/// (registry) and renames every item on every list.
#[derive(Default)]
pub struct ListCache {
    state: Mutex<ListCacheState>,
}

#[derive(Default)]
struct ListCacheState {
    /// Bumped by every invalidation, so a page fetched before one is not stored after it.
    generation: u64,
    pages: HashMap<(ListKind, Option<String>), (Instant, Box<RawValue>)>,
}

/// The most pages kept per upstream (cursors come from hosts, so the key space is theirs).
const MAX_CACHED_PAGES: usize = 256;

impl ListCache {
    fn state(&self) -> std::sync::MutexGuard<'_, ListCacheState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A page still fresh at `now`.
    pub fn get(&self, kind: ListKind, cursor: Option<&str>, now: Instant) -> Option<Box<RawValue>> {
        let state = self.state();
        let (expires, page) = state.pages.get(&(kind, cursor.map(ToOwned::to_owned)))?;
        (now < *expires).then(|| page.clone())
    }

    /// The current generation; pass it to [`ListCache::store`] with a page fetched after.
    pub fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Keeps a page fetched at `now` if its hints allow and nothing was invalidated since `generation`.
    pub fn store(&self, generation: u64, kind: ListKind, cursor: Option<&str>, page: &RawValue, now: Instant) {
        let Some(ttl) = cacheable_for(page) else { return };
        let mut state = self.state();
        if state.generation != generation {
            return;
        }
        if state.pages.len() >= MAX_CACHED_PAGES {
            state.pages.retain(|_, (expires, _)| now < *expires);
            if state.pages.len() >= MAX_CACHED_PAGES {
                return;
            }
        }
        state.pages.insert((kind, cursor.map(ToOwned::to_owned)), (now + ttl, page.to_owned()));
    }

    /// Drops the pages of one kind (`resources` takes its templates along), or all.
    pub fn invalidate(&self, kind: Option<ListKind>) {
        let mut state = self.state();
        state.generation += 1;
        match kind {
            None => state.pages.clear(),
            Some(kind) => state
                .pages
                .retain(|(k, _), _| *k != kind && !(kind == ListKind::Resources && *k == ListKind::ResourceTemplates)),
        }
    }
}

/// How long a list page may be reused: its `ttlMs` when positive and its `cacheScope` is `public`.
fn cacheable_for(page: &RawValue) -> Option<Duration> {
    let page = RawObject::parse(page)?;
    if page.get_str("cacheScope").as_deref() != Some("public") {
        return None;
    }
    let ttl = page.get("ttlMs")?.get().parse::<f64>().ok()?;
    (ttl >= 1.0 && ttl.is_finite()).then(|| Duration::from_millis(ttl.min(86_400_000.0) as u64))
}

/// Where a routed request goes.
#[derive(Clone)]
pub struct Target {
    pub upstream: Arc<Upstream>,
    /// The name as the upstream knows it.
    pub name: String,
}

/// Something a route's hosts may want to hear about.
#[derive(Debug, Clone)]
pub enum RouteEvent {
    /// `notifications/{tools,prompts,resources}/list_changed` from some upstream.
    ListChanged(ListKind),
    /// `notifications/resources/updated` for a URI.
    ResourceUpdated { uri: String, params: Arc<str> },
    /// A log message from an upstream (legacy hosts only).
    Log(Arc<[u8]>),
}

/// The four list methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl ListKind {
    /// From a list method name.
    pub fn from_method(method: &str) -> Option<Self> {
        Some(match method {
            "tools/list" => Self::Tools,
            "prompts/list" => Self::Prompts,
            "resources/list" => Self::Resources,
            "resources/templates/list" => Self::ResourceTemplates,
            _ => return None,
        })
    }

    /// The list method.
    pub fn method(self) -> &'static str {
        match self {
            Self::Tools => "tools/list",
            Self::Prompts => "prompts/list",
            Self::Resources => "resources/list",
            Self::ResourceTemplates => "resources/templates/list",
        }
    }

    /// The result field holding the items.
    pub fn field(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
            Self::ResourceTemplates => "resourceTemplates",
        }
    }

    /// The server capability that gates it.
    pub fn capability(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources | Self::ResourceTemplates => "resources",
        }
    }

    /// The kind of pinned item the list holds (static resources are not pinned).
    pub fn pinned(self) -> Option<portcullis_registry::pinning::ItemKind> {
        use portcullis_registry::pinning::ItemKind;
        match self {
            Self::Tools => Some(ItemKind::Tool),
            Self::Prompts => Some(ItemKind::Prompt),
            Self::ResourceTemplates => Some(ItemKind::ResourceTemplate),
            Self::Resources => None,
        }
    }

    /// The list-changed notification method.
    pub fn notification(self) -> &'static str {
        match self {
            Self::Tools => "notifications/tools/list_changed",
            Self::Prompts => "notifications/prompts/list_changed",
            Self::Resources | Self::ResourceTemplates => "notifications/resources/list_changed",
        }
    }

    /// The list kind a list-changed notification refers to.
    pub fn from_notification(method: &str) -> Option<Self> {
        Some(match method {
            "notifications/tools/list_changed" => Self::Tools,
            "notifications/prompts/list_changed" => Self::Prompts,
            "notifications/resources/list_changed" => Self::Resources,
            _ => return None,
        })
    }
}

/// A route: a path exposing some upstreams as one server.
pub struct Route {
    pub settings: RouteSettings,
    pub members: Vec<Arc<Upstream>>,
    pub events: broadcast::Sender<RouteEvent>,
    resources: RwLock<ResourceIndex>,
}

/// Which upstream owns which resource URI, learned from list results.
#[derive(Default)]
struct ResourceIndex {
    exact: HashMap<String, usize>,
    templates: Vec<(UriTemplate, usize)>,
}

impl Route {
    /// A route over resolved upstreams.
    pub fn new(settings: RouteSettings, members: Vec<Arc<Upstream>>) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self { settings, members, events, resources: RwLock::new(ResourceIndex::default()) }
    }

    /// The route's path.
    pub fn path(&self) -> &str {
        &self.settings.path
    }

    /// Whether names pass through unchanged.
    pub fn passthrough(&self) -> bool {
        self.settings.naming == Naming::Passthrough
    }

    /// Whether a failing upstream is left out rather than failing the request.
    pub fn skips_failures(&self) -> bool {
        self.settings.on_upstream_failure == FailurePolicy::Skip
    }

    /// The name a host sees for an upstream's tool or prompt; `None` if it would break the name rules.
    pub fn expose_name(&self, member: usize, name: &str) -> Option<String> {
        if self.passthrough() {
            return Some(name.to_owned());
        }
        let exposed = format!("{}{name}", self.members.get(member)?.settings.prefix);
        (exposed.len() <= MAX_NAME).then_some(exposed)
    }

    /// The upstream and upstream-side name for a host's tool or prompt name.
    pub fn resolve_name(&self, name: &str) -> Option<Target> {
        if self.passthrough() {
            return self.members.first().map(|u| Target { upstream: Arc::clone(u), name: name.to_owned() });
        }
        self.members.iter().find_map(|u| {
            name.strip_prefix(u.settings.prefix.as_str())
                .filter(|rest| !rest.is_empty())
                .map(|rest| Target { upstream: Arc::clone(u), name: rest.to_owned() })
        })
    }

    /// Remembers that a member listed a resource URI or template.
    pub fn learn_resource(&self, member: usize, uri: Option<&str>, template: Option<&str>) {
        let mut index = self.resources.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(uri) = uri {
            index.exact.insert(uri.to_owned(), member);
        }
        if let Some(t) = template
            && !index.templates.iter().any(|(x, m)| x.source == t && *m == member)
        {
            index.templates.push((UriTemplate::parse(t), member));
        }
    }

    /// The member that listed this URI (exactly, or by a matching template).
    pub fn resource_owner(&self, uri: &str) -> Option<usize> {
        if self.members.len() == 1 {
            return Some(0);
        }
        let index = self.resources.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        index.exact.get(uri).copied().or_else(|| index.templates.iter().find(|(t, _)| t.matches(uri)).map(|(_, m)| *m))
    }
}

/// An RFC 6570 URI template, matched loosely: literals must match, each
/// expression matches any run of characters (a simple `{x}` none of `/?#`).
#[derive(Debug, Clone)]
pub struct UriTemplate {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    Simple,
    Reserved,
}

impl UriTemplate {
    /// Parses a template.
    pub fn parse(source: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                parts.push(Part::Literal(rest[open..].to_owned()));
                rest = "";
                break;
            };
            let expr = &rest[open + 1..open + close];
            parts.push(if expr.starts_with(['+', '#', '/', '?', '&', ';', '.']) {
                Part::Reserved
            } else {
                Part::Simple
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Self { source: source.to_owned(), parts }
    }

    /// Whether a URI could have been expanded from this template.
    pub fn matches(&self, uri: &str) -> bool {
        matches_from(&self.parts, uri)
    }
}

fn matches_from(parts: &[Part], uri: &str) -> bool {
    match parts.split_first() {
        None => uri.is_empty(),
        Some((Part::Literal(l), rest)) => uri.strip_prefix(l.as_str()).is_some_and(|u| matches_from(rest, u)),
        Some((expr, rest)) => {
            let stop = |c: char| matches!(expr, Part::Simple) && matches!(c, '/' | '?' | '#');
            let limit = uri.find(stop).unwrap_or(uri.len());
            (1..=limit).rev().filter(|i| uri.is_char_boundary(*i)).any(|i| matches_from(rest, &uri[i..]))
        }
    }
}

/// An aggregated list's cursor: for each upstream still to be listed, its own cursor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor(pub Vec<(usize, Option<String>)>);

impl Cursor {
    /// Encodes opaquely for the host.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(&self.0).unwrap_or_default();
        format!("pc1.{}", URL_SAFE_NO_PAD.encode(json))
    }

    /// Decodes a host's cursor; `None` if it is not one of ours or names no member.
    pub fn decode(text: &str, members: usize) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text.strip_prefix("pc1.")?).ok()?;
        let items: Vec<(usize, Option<String>)> = serde_json::from_slice(&bytes).ok()?;
        (!items.is_empty() && items.iter().all(|(i, _)| *i < members)).then_some(Self(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(text: &str) -> Box<RawValue> {
        portcullis_wire::object::raw(text)
    }

    const PUBLIC: &str = r#"{"tools":[{"name":"a"}],"ttlMs":1000,"cacheScope":"public"}"#;

    #[test]
    fn list_cache_keeps_public_pages_for_their_ttl() {
        let cache = ListCache::default();
        let t0 = Instant::now();
        cache.store(cache.generation(), ListKind::Tools, None, &page(PUBLIC), t0);
        assert_eq!(
            cache.get(ListKind::Tools, None, t0 + Duration::from_millis(999)).map(|p| p.get().to_owned()),
            Some(PUBLIC.to_owned())
        );
        assert!(cache.get(ListKind::Tools, None, t0 + Duration::from_millis(1000)).is_none());
        assert!(cache.get(ListKind::Tools, Some("c1"), t0).is_none(), "keyed by cursor");
        assert!(cache.get(ListKind::Prompts, None, t0).is_none(), "keyed by kind");
    }

    #[test]
    fn list_cache_skips_private_and_untimed_pages() {
        let cache = ListCache::default();
        let t0 = Instant::now();
        for text in [
            r#"{"tools":[],"ttlMs":1000,"cacheScope":"private"}"#,
            r#"{"tools":[],"ttlMs":1000}"#,
            r#"{"tools":[],"cacheScope":"public"}"#,
            r#"{"tools":[],"ttlMs":0,"cacheScope":"public"}"#,
            r#"{"tools":[],"ttlMs":-5,"cacheScope":"public"}"#,
        ] {
            cache.store(cache.generation(), ListKind::Tools, None, &page(text), t0);
            assert!(cache.get(ListKind::Tools, None, t0).is_none(), "{text}");
        }
    }

    #[test]
    fn list_cache_drops_pages_on_list_changed_and_reset() {
        let cache = ListCache::default();
        let t0 = Instant::now();
        for kind in [ListKind::Tools, ListKind::Prompts, ListKind::Resources, ListKind::ResourceTemplates] {
            cache.store(cache.generation(), kind, Some("c"), &page(PUBLIC), t0);
        }
        cache.invalidate(Some(ListKind::Tools));
        assert!(cache.get(ListKind::Tools, Some("c"), t0).is_none());
        assert!(cache.get(ListKind::Prompts, Some("c"), t0).is_some());
        cache.invalidate(Some(ListKind::Resources));
        assert!(cache.get(ListKind::Resources, Some("c"), t0).is_none());
        assert!(cache.get(ListKind::ResourceTemplates, Some("c"), t0).is_none(), "templates change with resources");
        assert!(cache.get(ListKind::Prompts, Some("c"), t0).is_some());
        cache.invalidate(None);
        assert!(cache.get(ListKind::Prompts, Some("c"), t0).is_none());
    }

    #[test]
    fn list_cache_does_not_store_a_page_fetched_before_an_invalidation() {
        let cache = ListCache::default();
        let t0 = Instant::now();
        let before = cache.generation();
        cache.invalidate(Some(ListKind::Tools));
        cache.store(before, ListKind::Tools, None, &page(PUBLIC), t0);
        assert!(cache.get(ListKind::Tools, None, t0).is_none());
    }

    #[test]
    fn matches_uri_templates() {
        let t = UriTemplate::parse("demo://tickets/{id}");
        assert!(t.matches("demo://tickets/T-1001"));
        assert!(!t.matches("demo://tickets/"));
        assert!(!t.matches("demo://tickets/a/b"));
        assert!(!t.matches("other://tickets/1"));
        let r = UriTemplate::parse("file:///{+path}");
        assert!(r.matches("file:///a/b/c.txt"));
        let two = UriTemplate::parse("db://{schema}/{table}");
        assert!(two.matches("db://public/users"));
        assert!(!two.matches("db://public"));
    }

    #[test]
    fn cursors_round_trip_and_reject_forgeries() {
        let c = Cursor(vec![(1, Some("abc".into())), (2, None)]);
        assert_eq!(Cursor::decode(&c.encode(), 3), Some(c.clone()));
        assert_eq!(Cursor::decode(&c.encode(), 2), None);
        assert_eq!(Cursor::decode("garbage", 3), None);
        assert_eq!(Cursor::decode("pc1.!!!", 3), None);
    }
}
