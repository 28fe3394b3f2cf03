//! Configuration in two stages: the raw TOML shape (serde, unknown keys
//! rejected) and the validated form the gateway runs on. Every problem is
//! reported at once, each with the file, line and key it concerns.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_registry::scan::Severity;
use serde::Deserialize;
use serde_spanned::Spanned;

use crate::admin::AdminSettings;
use crate::audit::{AuditSettings, Export, StoreFailure};
use crate::metrics::MetricsSettings;
use crate::registry::{Mode, RegistrySettings};
use crate::secret::SecretRef;
use crate::telemetry::{OtlpProtocol, TelemetrySettings};
use crate::validation::{Refusal, Strictness, ValidationSettings};

/// The raw configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Gateway-wide settings.
    #[serde(default)]
    pub gateway: RawGateway,
    /// The host-facing HTTP listener; absent when only `portcullis stdio` is used.
    pub listen: Option<RawListen>,
    /// The upstream MCP servers.
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<RawUpstream>,
    /// The routes hosts connect to, each exposing a set of upstreams as one server.
    #[serde(default, rename = "route")]
    pub routes: Vec<RawRoute>,
    /// The registry of approved servers; absent means the defaults (enforce, `sqlite://portcullis.db`).
    pub registry: Option<RawRegistry>,
    /// The admin HTTP API and the read-only subregistry; absent means not served.
    pub admin: Option<RawAdmin>,
    /// Who hosts are: OAuth bearer tokens, API keys, the stdio identity. Absent: anonymous hosts,
    /// allowed only on a loopback listener.
    pub auth: Option<RawAuth>,
    /// Authorization by policy; absent means the bundled default tier policy, enforced.
    pub policy: Option<RawPolicy>,
    /// Tool-argument validation against the pinned input schema; absent means on.
    pub validation: Option<RawValidation>,
    /// The audit trail. Absent: on, in the registry's store, when the registry is on.
    pub audit: Option<RawAudit>,
    /// Prometheus metrics.
    pub metrics: Option<RawMetrics>,
    /// OpenTelemetry export (OTLP/HTTP) of call spans and audit records.
    pub telemetry: Option<RawTelemetry>,
}

/// `[auth]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// The gateway's public base URL as hosts reach it, e.g. `https://mcp.example.com`. A route's
    /// resource identifier (RFC 8707: the audience its tokens must carry, and the `resource` of its
    /// protected-resource metadata) is this URL followed by the route's path.
    pub public_url: Spanned<String>,
    /// Scopes every token must carry (403 `insufficient_scope` otherwise).
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Scopes advertised in the protected-resource metadata (the required ones are always included).
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// OAuth 2.1: JWT access tokens from one issuer.
    pub oauth: Option<RawOAuth>,
    /// Workload API keys, kept hashed in the store (`portcullis apikey create`).
    pub api_keys: Option<RawApiKeys>,
    /// Who a stdio host is; default the OS user running the gateway.
    pub stdio: Option<RawStdioIdentity>,
}

/// `[auth.oauth]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth {
    /// The authorization server's issuer identifier; `iss` must equal it.
    pub issuer: Spanned<String>,
    /// The JWKS URL; default: discovered from the issuer's metadata (RFC 8414, then OpenID Connect).
    pub jwks_uri: Option<Spanned<String>>,
    /// Signature algorithms accepted (never `none`, never HS*).
    #[serde(default = "default_algorithms")]
    pub algorithms: Spanned<Vec<String>>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat` (at most 5 minutes).
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// The claim naming the subject.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// The claim holding groups or roles (an array, or a space-separated string; dotted paths such as
    /// `realm_access.roles` reach into objects).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// The claim holding the tenant, if the deployment has several.
    pub tenant_claim: Option<String>,
    /// A token whose `client_id` equals its subject (client-credentials grant) is a workload, not a user.
    #[serde(default = "default_true")]
    pub client_credentials_are_workloads: bool,
    /// How long a fetched key set is trusted before it is fetched again.
    #[serde(default = "default_jwks_refresh", with = "humantime_serde")]
    pub jwks_refresh: Duration,
}

/// `[auth.api_keys]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeys {
    /// The store holding the keys' hashes; default the registry's store.
    pub store: Option<Spanned<String>>,
}

/// `[auth.stdio]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStdioIdentity {
    /// The principal a stdio host acts as.
    pub principal: String,
    /// Its groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `[policy]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// `enforce` (refuse what the policy denies), `shadow` (decide and record would-be denials,
    /// refuse nothing) or `off`.
    #[serde(default = "default_mode")]
    pub mode: Spanned<String>,
    /// Cedar policy files, or folders of `*.cedar` files (relative to this file). Empty: the
    /// bundled default tier policy.
    #[serde(default)]
    pub paths: Vec<Spanned<String>>,
    /// Also load the bundled default tier policy beside `paths`.
    #[serde(default)]
    pub include_default: bool,
    /// A candidate set evaluated in shadow beside the enforced one: its would-be decisions are
    /// recorded, never enforced (review a change against real traffic before switching).
    #[serde(default)]
    pub shadow_paths: Vec<Spanned<String>>,
    /// How often the files are checked for changes (an invalid change keeps the running set).
    #[serde(default = "default_policy_reload", with = "humantime_serde")]
    pub reload_interval: Duration,
}

/// `[validation]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawValidation {
    /// `enforce` (refuse arguments that fail the pinned schema) or `off`.
    #[serde(default = "default_mode")]
    pub mode: Spanned<String>,
    /// Refuse fields the schema does not declare: `auto` (for high and critical tiers), `always`, `never`.
    #[serde(default = "default_strict")]
    pub strict: Spanned<String>,
    /// Also check a result's `structuredContent` against the tool's pinned output schema.
    #[serde(default)]
    pub output: bool,
    /// How refused arguments are answered: `error` (JSON-RPC -32602 naming the path) or
    /// `tool_result` (a result with `isError: true`, as SEP-1303 has servers do, so the model
    /// can correct itself).
    #[serde(default = "default_refusal")]
    pub refusal: Spanned<String>,
}

/// `[audit]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// `on` or `off`.
    #[serde(default = "default_on")]
    pub mode: Spanned<String>,
    /// `sqlite://…` or `postgres://…`; defaults to the registry's store.
    pub store: Option<Spanned<String>>,
    /// The first part of this gateway's stream names; give each replica its own (default: the
    /// gateway's name).
    pub instance: Option<Spanned<String>>,
    /// The Ed25519 key that signs checkpoints (`env:`, `file:` or `cmd:`; 64 hex digits or a
    /// PKCS#8 PEM block). Without one, checkpoints are unsigned.
    pub signing_key: Option<Spanned<String>>,
    /// How often each stream's head is checkpointed.
    #[serde(default = "default_checkpoint", with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// When the store cannot take records: `spool` (to a local file, replayed later) or
    /// `fail_closed` (refuse governed calls).
    #[serde(default = "default_store_failure")]
    pub on_store_failure: Spanned<String>,
    /// With `spool`, calls on these risk tiers are refused all the same while the store is down.
    #[serde(default = "default_fail_closed_tiers")]
    pub fail_closed_tiers: Spanned<Vec<String>>,
    /// The spool file (relative to this file).
    #[serde(default = "default_spool")]
    pub spool: PathBuf,
    /// Argument fields whose names contain one of these are recorded as `[redacted]`.
    #[serde(default = "default_redact")]
    pub redact_fields: Vec<String>,
    /// Arguments larger than this (as JSON) are recorded as their size and SHA-256.
    #[serde(default = "default_max_argument_bytes")]
    pub max_argument_bytes: usize,
    /// Also write committed records as JSON lines: `stdout` or a file (relative to this file).
    pub export: Option<String>,
    /// How long each partition's records are kept: `calls`, `access`, `system` (e.g. "400d").
    #[serde(default)]
    pub retention: HashMap<String, Spanned<String>>,
    /// SQLite commits: `normal` (survive a killed gateway) or `full` (also a power cut: an fsync
    /// per commit, shared by the batch).
    #[serde(default = "default_audit_sync")]
    pub synchronous: Spanned<String>,
    /// When a call whose records may wait for the store (with `spool`, tiers outside
    /// `fail_closed_tiers`) is answered: `journal` (once its record is written to a local journal
    /// beside the spool, which a killed gateway's next start replays; the store commit follows)
    /// or `store` (once the store committed it). Other calls, and every call with
    /// `synchronous = "full"`, wait for the store.
    #[serde(default = "default_acknowledge")]
    pub acknowledge: Spanned<String>,
}

/// `[telemetry]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// The OTLP/HTTP collector's base URL, e.g. `http://127.0.0.1:4318`.
    pub otlp_endpoint: Spanned<String>,
    /// `http/protobuf` or `http/json`.
    #[serde(default = "default_otlp_protocol")]
    pub protocol: Spanned<String>,
    /// Export a span per governed call, with its stages and upstream call.
    #[serde(default = "default_true")]
    pub traces: bool,
    /// Export each committed audit record as an OpenTelemetry log record.
    #[serde(default = "default_true")]
    pub audit_logs: bool,
    /// `service.name` of what is exported (default: the gateway's name).
    pub service_name: Option<String>,
}

/// `[metrics]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// A listener of its own for `GET /metrics`, e.g. `127.0.0.1:9464` (it is also served on
    /// the admin listener).
    pub address: Option<Spanned<String>>,
    /// Label calls with principal ids (else with principal kinds).
    #[serde(default)]
    pub principal_labels: bool,
    /// With `principal_labels`, at most this many distinct ids get a label (the rest: `other`).
    #[serde(default = "default_max_principals")]
    pub max_principals: usize,
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Where the admin API and the subregistry listen, e.g. `127.0.0.1:9090` (its own address,
    /// apart from the hosts' listener).
    pub address: Spanned<String>,
    /// The admin bearer token, by reference: `env:VAR` or `file:/path` (relative to this file);
    /// never the token itself. Read at start; an empty token refuses to start.
    pub token: Spanned<String>,
}

/// `[registry]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistry {
    /// `enforce` (only approved servers, only pinned metadata), `audit` (connect and serve,
    /// record what would have been refused) or `off` (development).
    #[serde(default = "default_mode")]
    pub mode: Spanned<String>,
    /// The store: `sqlite://path.db` (created if missing; relative to the working directory)
    /// or `postgres://…` (shared by replicas).
    #[serde(default = "default_store")]
    pub store: Spanned<String>,
    /// `server.json` documents (relative to this file) imported and approved at start when
    /// the store does not have them yet.
    #[serde(default)]
    pub seed: Vec<Spanned<String>>,
    /// How often every upstream's lists are observed again (drift without list-changed).
    #[serde(default = "default_rescan", with = "humantime_serde")]
    pub rescan_interval: Duration,
    /// Scan findings at or above this severity block approval without an explicit override.
    #[serde(default = "default_block")]
    pub block_severity: Spanned<String>,
}

/// `[gateway]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// The name the gateway gives itself in `serverInfo` and `clientInfo`.
    #[serde(default = "default_name")]
    pub name: String,
    /// How long a call may take upstream unless the upstream sets its own `timeout`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long the `server/discover` probe waits before assuming a legacy upstream.
    #[serde(default = "default_probe", with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// The largest request body a host may send, in bytes (HTTP 413 beyond).
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    /// The largest message accepted from an upstream, in bytes.
    #[serde(default = "default_message")]
    pub max_message_bytes: usize,
    /// `serve`: threads serving host connections, each with a runtime of its own; `stdio`: the
    /// runtime's worker threads. Absent: one per core.
    pub worker_threads: Option<Spanned<usize>>,
}

impl Default for RawGateway {
    fn default() -> Self {
        Self {
            name: default_name(),
            request_timeout: default_timeout(),
            probe_timeout: default_probe(),
            max_body_bytes: default_body(),
            max_message_bytes: default_message(),
            worker_threads: None,
        }
    }
}

/// `[listen]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    /// Address and port, e.g. `127.0.0.1:8080`.
    pub address: Spanned<String>,
    /// Origins allowed to call (DNS-rebinding protection); a request with another `Origin`
    /// gets 403. `:*` matches any port (or none). Requests without `Origin` (non-browser
    /// hosts) are allowed. Default: the loopback origins.
    #[serde(default = "default_origins")]
    pub allowed_origins: Vec<String>,
    /// Host names the `Host` header may carry; default: the loopback names.
    #[serde(default = "default_hosts")]
    pub allowed_hosts: Vec<String>,
    /// How long an idle legacy session is kept.
    #[serde(default = "default_idle", with = "humantime_serde")]
    pub session_idle_timeout: Duration,
    /// The most legacy sessions kept at once; the oldest idle one is evicted beyond.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
}

/// `[[upstream]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// A short unique name: letters, digits, `-` and `_`.
    pub name: Spanned<String>,
    /// `stdio`, `http` (Streamable HTTP) or `sse` (the deprecated HTTP+SSE transport).
    pub transport: Spanned<String>,
    /// stdio: the program, run without a shell. `$PORTCULLIS_EXE` is this gateway's own binary.
    pub command: Option<Spanned<String>>,
    /// stdio: its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// stdio: environment variables set for it.
    #[serde(default)]
    pub env: HashMap<String, String>,
    /// stdio: variables passed through from the gateway's environment.
    #[serde(default = "default_inherit")]
    pub inherit_env: Vec<String>,
    /// stdio: working directory.
    pub cwd: Option<PathBuf>,
    /// http/sse: the endpoint URL.
    pub url: Option<Spanned<String>>,
    /// `auto` (probe with `server/discover`, fall back to `initialize`), `modern` or `legacy`.
    #[serde(default = "default_era")]
    pub era: Spanned<String>,
    /// Per-call timeout for this upstream.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// The prefix its tool and prompt names get on aggregating routes; default `<name>__`.
    pub prefix: Option<Spanned<String>>,
    /// http/sse: the gateway's own credential for this upstream, sent as `Authorization: Bearer`,
    /// by reference (`env:VAR`, `file:/path`, `cmd:program args`). A host's token is never forwarded.
    pub bearer: Option<Spanned<String>>,
    /// http/sse: more credential headers, name → reference (e.g. `X-Api-Key = "file:/run/secrets/k"`).
    #[serde(default)]
    pub secret_headers: HashMap<String, Spanned<String>>,
    /// http/sse: plain headers sent on every request (not for credentials).
    #[serde(default)]
    pub headers: HashMap<String, Spanned<String>>,
    /// stdio: environment variables whose values are secret references.
    #[serde(default)]
    pub secret_env: HashMap<String, Spanned<String>>,
    /// http: each user's own credential for this upstream, by OAuth token exchange (RFC 8693) of the
    /// host's access token; replaces `bearer` on requests made for a user.
    pub token_exchange: Option<RawTokenExchange>,
}

/// `[upstream.token_exchange]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenExchange {
    /// The authorization server's token endpoint.
    pub token_endpoint: Spanned<String>,
    /// The gateway's client id at that server.
    pub client_id: String,
    /// Its client secret, by reference (`env:`, `file:`, `cmd:`); none for a public client.
    pub client_secret: Option<Spanned<String>>,
    /// The `audience` to ask for (the upstream's identifier at the authorization server).
    pub audience: Option<String>,
    /// The `resource` to ask for (RFC 8707).
    pub resource: Option<String>,
    /// The `scope` to ask for.
    pub scope: Option<String>,
}

/// `[[route]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// The HTTP path, e.g. `/mcp` or `/mcp/support`.
    pub path: Spanned<String>,
    /// The upstreams this route exposes, by name.
    pub upstreams: Spanned<Vec<String>>,
    /// `prefixed` (names get the upstream's prefix) or `passthrough` (single upstream only).
    #[serde(default = "default_naming")]
    pub names: Spanned<String>,
    /// When an upstream fails: `fail_closed` (the whole request fails) or `skip` (it is left out).
    #[serde(default = "default_failure")]
    pub on_upstream_failure: Spanned<String>,
}

fn default_algorithms() -> Spanned<Vec<String>> {
    Spanned::new(0..0, ["RS256", "ES256", "PS256", "EdDSA"].map(String::from).to_vec())
}
fn default_leeway() -> Duration {
    Duration::from_secs(60)
}
fn default_subject_claim() -> String {
    "sub".to_owned()
}
fn default_groups_claim() -> String {
    "groups".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_jwks_refresh() -> Duration {
    Duration::from_secs(300)
}
fn default_policy_reload() -> Duration {
    Duration::from_secs(2)
}
fn default_otlp_protocol() -> Spanned<String> {
    Spanned::new(0..0, "http/protobuf".to_owned())
}
fn default_acknowledge() -> Spanned<String> {
    Spanned::new(0..0, "journal".to_owned())
}

fn default_audit_sync() -> Spanned<String> {
    Spanned::new(0..0, "normal".to_owned())
}
fn default_max_principals() -> usize {
    500
}
fn default_on() -> Spanned<String> {
    Spanned::new(0..0, "on".to_owned())
}
fn default_checkpoint() -> Duration {
    Duration::from_secs(5)
}
fn default_store_failure() -> Spanned<String> {
    Spanned::new(0..0, "spool".to_owned())
}
fn default_fail_closed_tiers() -> Spanned<Vec<String>> {
    Spanned::new(0..0, vec!["high".to_owned(), "critical".to_owned()])
}
fn default_spool() -> PathBuf {
    PathBuf::from("portcullis-audit.spool")
}
fn default_redact() -> Vec<String> {
    [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "authorization",
        "credential",
        "private_key",
        "cookie",
    ]
    .map(String::from)
    .to_vec()
}
fn default_max_argument_bytes() -> usize {
    16 * 1024
}
fn default_refusal() -> Spanned<String> {
    Spanned::new(0..0, "error".to_owned())
}
fn default_strict() -> Spanned<String> {
    Spanned::new(0..0, "auto".to_owned())
}
fn default_mode() -> Spanned<String> {
    Spanned::new(0..0, "enforce".to_owned())
}
fn default_store() -> Spanned<String> {
    Spanned::new(0..0, "sqlite://portcullis.db".to_owned())
}
fn default_rescan() -> Duration {
    Duration::from_secs(300)
}
fn default_block() -> Spanned<String> {
    Spanned::new(0..0, "high".to_owned())
}
fn default_name() -> String {
    "portcullis".to_owned()
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_probe() -> Duration {
    Duration::from_secs(3)
}
fn default_body() -> usize {
    4 * 1024 * 1024
}
fn default_message() -> usize {
    16 * 1024 * 1024
}
fn default_hosts() -> Vec<String> {
    ["localhost", "127.0.0.1", "[::1]"].map(String::from).to_vec()
}
fn default_origins() -> Vec<String> {
    ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"].map(String::from).to_vec()
}
fn default_idle() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_max_sessions() -> usize {
    10_000
}
fn default_inherit() -> Vec<String> {
    ["PATH", "HOME", "LANG", "TMPDIR"].map(String::from).to_vec()
}
fn default_era() -> Spanned<String> {
    Spanned::new(0..0, "auto".to_owned())
}
fn default_naming() -> Spanned<String> {
    Spanned::new(0..0, "prefixed".to_owned())
}
fn default_failure() -> Spanned<String> {
    Spanned::new(0..0, "fail_closed".to_owned())
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub gateway: GatewaySettings,
    pub listen: Option<ListenSettings>,
    pub upstreams: Vec<UpstreamSettings>,
    pub routes: Vec<RouteSettings>,
    pub registry: Option<RegistrySettings>,
    pub admin: Option<AdminSettings>,
    pub auth: Option<AuthSettings>,
    pub policy: PolicySettings,
    pub validation: ValidationSettings,
    pub audit: Option<AuditSettings>,
    pub metrics: MetricsSettings,
    pub telemetry: Option<TelemetrySettings>,
}

/// Who hosts are (`[auth]`).
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// The public base URL, without a trailing slash.
    pub public_url: String,
    pub required_scopes: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub oauth: Option<OAuthSettings>,
    /// The store holding API key hashes, when API keys are accepted.
    pub api_key_store: Option<String>,
    /// The principal and groups of stdio hosts, when configured.
    pub stdio: Option<(String, Vec<String>)>,
}

impl AuthSettings {
    /// A route's resource identifier (RFC 8707): the audience its tokens carry.
    pub fn resource(&self, route_path: &str) -> String {
        format!("{}{route_path}", self.public_url)
    }
}

/// `[auth.oauth]`, validated.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    pub issuer: String,
    pub jwks_uri: Option<String>,
    pub algorithms: Vec<String>,
    pub leeway: Duration,
    pub subject_claim: String,
    pub groups_claim: String,
    pub tenant_claim: Option<String>,
    pub client_credentials_are_workloads: bool,
    pub jwks_refresh: Duration,
}

/// How the policy is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyMode {
    Enforce,
    /// Decide and record, refuse nothing.
    Shadow,
    Off,
}

/// `[policy]`, validated.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub mode: PolicyMode,
    /// Files and folders of the enforced set; empty means the bundled default.
    pub paths: Vec<PathBuf>,
    pub include_default: bool,
    pub shadow_paths: Vec<PathBuf>,
    pub reload_interval: Duration,
}

/// Where one upstream header's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSource {
    Plain(String),
    /// `Bearer <secret>`.
    Bearer(SecretRef),
    Secret(SecretRef),
}

/// The gateway's own credentials for one upstream (never a host's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamCredentials {
    /// http/sse: headers on every request.
    pub headers: Vec<(String, HeaderSource)>,
    /// stdio: environment variables from secrets.
    pub env: Vec<(String, SecretRef)>,
    /// http: per-user credentials by token exchange.
    pub token_exchange: Option<TokenExchangeSettings>,
}

/// `[upstream.token_exchange]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenExchangeSettings {
    pub token_endpoint: String,
    pub client_id: String,
    pub client_secret: Option<SecretRef>,
    pub audience: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
}

/// Gateway-wide settings.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub name: String,
    pub request_timeout: Duration,
    pub probe_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_message_bytes: usize,
    /// Threads serving host connections (`serve`) or the runtime's workers (`stdio`); `None`: one
    /// per core.
    pub worker_threads: Option<usize>,
}

/// The HTTP listener.
#[derive(Debug, Clone)]
pub struct ListenSettings {
    pub address: SocketAddr,
    pub allowed_origins: Vec<String>,
    pub allowed_hosts: Vec<String>,
    pub session_idle_timeout: Duration,
    pub max_sessions: usize,
}

/// How an upstream is reached.
#[derive(Debug, Clone)]
pub enum UpstreamTransport {
    Stdio {
        command: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        inherit_env: Vec<String>,
        cwd: Option<PathBuf>,
    },
    Http {
        url: String,
    },
    Sse {
        url: String,
    },
}

/// Which era to speak upstream.
pub use portcullis_transport::client::EraPreference;

/// One upstream.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub name: String,
    pub transport: UpstreamTransport,
    pub era: EraPreference,
    pub timeout: Duration,
    pub prefix: String,
    pub credentials: UpstreamCredentials,
}

/// How a route names what it aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    Prefixed,
    Passthrough,
}

/// What a route does when one of its upstreams fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    FailClosed,
    Skip,
}

/// One route.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    pub path: String,
    /// Indexes into `Config::upstreams`.
    pub upstreams: Vec<usize>,
    pub naming: Naming,
    pub on_upstream_failure: FailurePolicy,
}

/// A configuration problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

/// Every problem found in a configuration file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.line {
                Some(line) => write!(f, "{}:{line}: {}: {}", self.file.display(), p.key, p.message)?,
                None => write!(f, "{}: {}: {}", self.file.display(), p.key, p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            problems: vec![Problem { line: None, key: "file".to_owned(), message: format!("cannot read: {e}") }],
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let fail = |problems| ConfigError { file: path.to_owned(), problems };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            fail(vec![Problem { line, key: "toml".to_owned(), message: e.message().to_owned() }])
        })?;
        let mut v = Validator { text, problems: Vec::new() };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let config = v.validate(raw, &base);
        if v.problems.is_empty() { Ok(config) } else { Err(fail(v.problems)) }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

struct Validator<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn problem<T>(&mut self, at: &Spanned<T>, key: impl Into<String>, message: impl Into<String>) {
        let span = at.span();
        self.problems.push(Problem {
            line: (span.end > 0).then(|| line_of(self.text, span.start)),
            key: key.into(),
            message: message.into(),
        });
    }

    fn validate(&mut self, raw: RawConfig, base: &Path) -> Config {
        let registry = self.registry(raw.registry, base);
        let admin = raw.admin.map(|a| self.admin(a, base));
        let gateway = GatewaySettings {
            name: raw.gateway.name,
            request_timeout: raw.gateway.request_timeout,
            probe_timeout: raw.gateway.probe_timeout,
            max_body_bytes: raw.gateway.max_body_bytes,
            max_message_bytes: raw.gateway.max_message_bytes,
            worker_threads: raw.gateway.worker_threads.and_then(|w| match *w.get_ref() {
                1..=1024 => Some(*w.get_ref()),
                _ => {
                    self.problem(&w, "gateway.worker_threads", "expected 1 to 1024 threads");
                    None
                }
            }),
        };
        let listen = raw.listen.map(|l| {
            let address = match l.address.get_ref().parse::<SocketAddr>() {
                Ok(a) => a,
                Err(_) => {
                    self.problem(&l.address, "listen.address", "expected an address like 127.0.0.1:8080");
                    SocketAddr::from(([127, 0, 0, 1], 0))
                }
            };
            ListenSettings {
                address,
                allowed_origins: l.allowed_origins,
                allowed_hosts: l.allowed_hosts,
                session_idle_timeout: l.session_idle_timeout,
                max_sessions: l.max_sessions.max(1),
            }
        });
        let mut names = HashMap::new();
        let mut upstreams = Vec::new();
        for (i, u) in raw.upstreams.into_iter().enumerate() {
            let key = format!("upstream[{i}]");
            let name = u.name.get_ref().clone();
            if name.is_empty()
                || name.len() > 48
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                self.problem(&u.name, format!("{key}.name"), "use 1-48 letters, digits, '-' or '_'");
            }
            if names.insert(name.clone(), upstreams.len()).is_some() {
                self.problem(&u.name, format!("{key}.name"), format!("duplicate upstream name '{name}'"));
            }
            let transport = match u.transport.get_ref().as_str() {
                "stdio" => match &u.command {
                    Some(c) => UpstreamTransport::Stdio {
                        command: PathBuf::from(expand_self(c.get_ref())),
                        args: u.args.clone(),
                        env: u.env.clone().into_iter().collect(),
                        inherit_env: u.inherit_env.clone(),
                        cwd: u.cwd.clone(),
                    },
                    None => {
                        self.problem(&u.transport, format!("{key}.command"), "a stdio upstream needs a command");
                        continue;
                    }
                },
                t @ ("http" | "sse") => match &u.url {
                    Some(url)
                        if url
                            .get_ref()
                            .parse::<http::Uri>()
                            .is_ok_and(|x| matches!(x.scheme_str(), Some("http" | "https")) && x.host().is_some()) =>
                    {
                        if t == "http" {
                            UpstreamTransport::Http { url: url.get_ref().clone() }
                        } else {
                            UpstreamTransport::Sse { url: url.get_ref().clone() }
                        }
                    }
                    Some(url) => {
                        self.problem(url, format!("{key}.url"), "expected an http:// or https:// URL");
                        continue;
                    }
                    None => {
                        self.problem(&u.transport, format!("{key}.url"), format!("an {t} upstream needs a url"));
                        continue;
                    }
                },
                other => {
                    self.problem(
                        &u.transport,
                        format!("{key}.transport"),
                        format!("unknown transport '{other}' (expected stdio, http or sse)"),
                    );
                    continue;
                }
            };
            if let Some(c) = &u.command
                && !matches!(transport, UpstreamTransport::Stdio { .. })
            {
                self.problem(c, format!("{key}.command"), "only a stdio upstream has a command");
            }
            if let (Some(url), UpstreamTransport::Stdio { .. }) = (&u.url, &transport) {
                self.problem(url, format!("{key}.url"), "a stdio upstream has no url");
            }
            let era = match u.era.get_ref().as_str() {
                "auto" => EraPreference::Auto,
                "modern" => EraPreference::Modern,
                "legacy" => EraPreference::Legacy,
                other => {
                    self.problem(
                        &u.era,
                        format!("{key}.era"),
                        format!("unknown era '{other}' (expected auto, modern or legacy)"),
                    );
                    EraPreference::Auto
                }
            };
            let prefix = match &u.prefix {
                Some(p) => {
                    let ok = !p.get_ref().is_empty()
                        && p.get_ref().len() <= 64
                        && p.get_ref().bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
                    if !ok {
                        self.problem(
                            p,
                            format!("{key}.prefix"),
                            "use 1-64 letters, digits, '_', '-' or '.' (the tool-name alphabet)",
                        );
                    }
                    p.get_ref().clone()
                }
                None => format!("{name}__"),
            };
            let credentials = self.credentials(&u, &key, &transport, base);
            upstreams.push(UpstreamSettings {
                name,
                transport,
                era,
                timeout: u.timeout.unwrap_or(gateway.request_timeout),
                prefix,
                credentials,
            });
        }
        let mut routes = Vec::new();
        let mut paths = HashSet::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
            let key = format!("route[{i}]");
            let path = r.path.get_ref().clone();
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) || path.starts_with("/.well-known") {
                self.problem(&r.path, format!("{key}.path"), "expected an absolute path such as /mcp");
            }
            if !paths.insert(path.clone()) {
                self.problem(&r.path, format!("{key}.path"), format!("duplicate route path '{path}'"));
            }
            let mut members = Vec::new();
            for name in r.upstreams.get_ref() {
                match names.get(name) {
                    Some(&idx) if !members.contains(&idx) => members.push(idx),
                    Some(_) => {
                        self.problem(&r.upstreams, format!("{key}.upstreams"), format!("'{name}' is listed twice"))
                    }
                    None => {
                        self.problem(&r.upstreams, format!("{key}.upstreams"), format!("no upstream is named '{name}'"))
                    }
                }
            }
            if r.upstreams.get_ref().is_empty() {
                self.problem(&r.upstreams, format!("{key}.upstreams"), "a route needs at least one upstream");
            }
            let naming = match r.names.get_ref().as_str() {
                "prefixed" => Naming::Prefixed,
                "passthrough" if r.upstreams.get_ref().len() == 1 => Naming::Passthrough,
                "passthrough" => {
                    self.problem(&r.names, format!("{key}.names"), "passthrough naming needs exactly one upstream");
                    Naming::Passthrough
                }
                other => {
                    self.problem(
                        &r.names,
                        format!("{key}.names"),
                        format!("unknown naming '{other}' (expected prefixed or passthrough)"),
                    );
                    Naming::Prefixed
                }
            };
            let on_upstream_failure = match r.on_upstream_failure.get_ref().as_str() {
                "fail_closed" => FailurePolicy::FailClosed,
                "skip" => FailurePolicy::Skip,
                other => {
                    self.problem(
                        &r.on_upstream_failure,
                        format!("{key}.on_upstream_failure"),
                        format!("unknown policy '{other}' (expected fail_closed or skip)"),
                    );
                    FailurePolicy::FailClosed
                }
            };
            if naming == Naming::Prefixed {
                // A tool name must resolve to exactly one upstream: no prefix may start another.
                for (a, &ia) in members.iter().enumerate() {
                    for &ib in &members[a + 1..] {
                        if let (Some(pa), Some(pb)) = (upstreams.get(ia), upstreams.get(ib)) {
                            let (pa, pb): (&UpstreamSettings, &UpstreamSettings) = (pa, pb);
                            if pa.prefix.starts_with(&pb.prefix) || pb.prefix.starts_with(&pa.prefix) {
                                self.problem(
                                    &r.upstreams,
                                    format!("{key}.upstreams"),
                                    format!(
                                        "prefixes '{}' and '{}' overlap; set distinct upstream prefixes",
                                        pa.prefix, pb.prefix
                                    ),
                                );
                            }
                        }
                    }
                }
            }
            routes.push(RouteSettings { path, upstreams: members, naming, on_upstream_failure });
        }
        if routes.is_empty() {
            self.problems.push(Problem {
                line: None,
                key: "route".to_owned(),
                message: "at least one [[route]] is needed".to_owned(),
            });
        }
        let auth = raw.auth.map(|a| self.auth(a, registry.as_ref()));
        if let (Some(l), None) = (&listen, &auth)
            && !l.address.ip().is_loopback()
        {
            self.problems.push(Problem {
                line: None,
                key: "listen.address".to_owned(),
                message: format!(
                    "{} is not a loopback address: hosts there must authenticate; configure [auth]",
                    l.address
                ),
            });
        }
        let policy = self.policy(raw.policy, base);
        let validation = self.validation(raw.validation);
        let audit = self.audit(raw.audit, registry.as_ref(), &gateway.name, base);
        let metrics = self.metrics(raw.metrics);
        let telemetry = raw.telemetry.map(|t| self.telemetry(t, &gateway.name));
        Config {
            gateway,
            listen,
            upstreams,
            routes,
            registry,
            admin,
            auth,
            policy,
            validation,
            audit,
            metrics,
            telemetry,
        }
    }
}

/// Headers an upstream credential may not set (the transport owns them).
const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "content-type",
    "accept",
    "connection",
    "transfer-encoding",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

impl Validator<'_> {
    fn credentials(
        &mut self,
        u: &RawUpstream,
        key: &str,
        transport: &UpstreamTransport,
        base: &Path,
    ) -> UpstreamCredentials {
        let mut out = UpstreamCredentials::default();
        let is_stdio = matches!(transport, UpstreamTransport::Stdio { .. });
        let secret = |v: &mut Self, at: &Spanned<String>, field: String| match SecretRef::parse(at.get_ref(), base) {
            Ok(r) => Some(r),
            Err(message) => {
                v.problem(at, field, message);
                None
            }
        };
        if let Some(bearer) = &u.bearer {
            if is_stdio {
                self.problem(bearer, format!("{key}.bearer"), "a stdio upstream takes credentials in secret_env");
            } else if let Some(r) = secret(self, bearer, format!("{key}.bearer")) {
                out.headers.push(("authorization".to_owned(), HeaderSource::Bearer(r)));
            }
        }
        let mut header_names: Vec<(&String, &Spanned<String>, bool)> = u
            .secret_headers
            .iter()
            .map(|(k, v)| (k, v, true))
            .chain(u.headers.iter().map(|(k, v)| (k, v, false)))
            .collect();
        header_names.sort_by(|a, b| a.0.cmp(b.0));
        for (name, value, is_secret) in header_names {
            let field = format!("{key}.{}.{name}", if is_secret { "secret_headers" } else { "headers" });
            let lower = name.to_ascii_lowercase();
            if is_stdio {
                self.problem(value, field, "a stdio upstream has no headers");
                continue;
            }
            if http::HeaderName::from_bytes(lower.as_bytes()).is_err()
                || RESERVED_HEADERS.contains(&lower.as_str())
                || lower.starts_with("mcp-")
            {
                self.problem(value, field, format!("'{name}' is not a header the gateway lets a configuration set"));
                continue;
            }
            if out.headers.iter().any(|(n, _)| *n == lower) {
                self.problem(value, field, format!("header '{name}' is set twice"));
                continue;
            }
            if is_secret {
                if let Some(r) = secret(self, value, field) {
                    out.headers.push((lower, HeaderSource::Secret(r)));
                }
            } else if lower == "authorization" || lower == "proxy-authorization" || lower == "cookie" {
                self.problem(value, field, "credentials go in bearer or secret_headers, by reference");
            } else if http::HeaderValue::from_str(value.get_ref()).is_err() {
                self.problem(value, field, "not a valid header value");
            } else {
                out.headers.push((lower, HeaderSource::Plain(value.get_ref().clone())));
            }
        }
        if let Some(x) = &u.token_exchange {
            let field = format!("{key}.token_exchange");
            let endpoint_ok = x.token_endpoint.get_ref().parse::<http::Uri>().is_ok_and(|e| {
                e.host().is_some()
                    && (e.scheme_str() == Some("https")
                        || (e.scheme_str() == Some("http") && is_loopback_host(e.host())))
            });
            if !matches!(transport, UpstreamTransport::Http { .. }) {
                self.problem(&x.token_endpoint, field, "token exchange is for http upstreams");
            } else if !endpoint_ok {
                self.problem(
                    &x.token_endpoint,
                    format!("{field}.token_endpoint"),
                    "expected an https:// URL (http:// only for loopback)",
                );
            } else {
                let client_secret =
                    x.client_secret.as_ref().and_then(|c| secret(self, c, format!("{field}.client_secret")));
                out.token_exchange = Some(TokenExchangeSettings {
                    token_endpoint: x.token_endpoint.get_ref().clone(),
                    client_id: x.client_id.clone(),
                    client_secret,
                    audience: x.audience.clone(),
                    resource: x.resource.clone(),
                    scope: x.scope.clone(),
                });
            }
        }
        let mut env: Vec<_> = u.secret_env.iter().collect();
        env.sort_by(|a, b| a.0.cmp(b.0));
        for (var, value) in env {
            let field = format!("{key}.secret_env.{var}");
            if !is_stdio {
                self.problem(value, field, "only a stdio upstream has an environment");
            } else if let Some(r) = secret(self, value, field) {
                out.env.push((var.clone(), r));
            }
        }
        out
    }

    fn auth(&mut self, raw: RawAuth, registry: Option<&RegistrySettings>) -> AuthSettings {
        let public_url = raw.public_url.get_ref().trim_end_matches('/').to_owned();
        let url_ok = public_url.parse::<http::Uri>().is_ok_and(|u| {
            u.host().is_some()
                && u.query().is_none()
                && (u.scheme_str() == Some("https") || (u.scheme_str() == Some("http") && is_loopback_host(u.host())))
        });
        if !url_ok {
            self.problem(
                &raw.public_url,
                "auth.public_url",
                "expected an https:// URL without query (http:// only for loopback)",
            );
        }
        let oauth = raw.oauth.map(|o| {
            let issuer = o.issuer.get_ref().clone();
            if !issuer.parse::<http::Uri>().is_ok_and(|u| {
                u.scheme_str() == Some("https") || (u.scheme_str() == Some("http") && is_loopback_host(u.host()))
            }) {
                self.problem(&o.issuer, "auth.oauth.issuer", "expected an https:// URL (http:// only for loopback)");
            }
            for alg in o.algorithms.get_ref() {
                if !matches!(
                    alg.as_str(),
                    "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256" | "ES384" | "EdDSA"
                ) {
                    self.problem(
                        &o.algorithms,
                        "auth.oauth.algorithms",
                        format!("'{alg}' is not accepted (asymmetric RS*, PS*, ES256, ES384 or EdDSA only)"),
                    );
                }
            }
            if o.algorithms.get_ref().is_empty() {
                self.problem(&o.algorithms, "auth.oauth.algorithms", "at least one algorithm is needed");
            }
            if o.leeway > Duration::from_secs(300) {
                self.problem(&o.issuer, "auth.oauth.leeway", "at most 5 minutes of clock skew");
            }
            OAuthSettings {
                issuer,
                jwks_uri: o.jwks_uri.map(|j| j.into_inner()),
                algorithms: o.algorithms.into_inner(),
                leeway: o.leeway,
                subject_claim: o.subject_claim,
                groups_claim: o.groups_claim,
                tenant_claim: o.tenant_claim,
                client_credentials_are_workloads: o.client_credentials_are_workloads,
                jwks_refresh: o.jwks_refresh.max(Duration::from_secs(1)),
            }
        });
        let api_key_store = raw.api_keys.map(|k| match k.store {
            Some(store) => store.into_inner(),
            None => registry.map_or_else(|| default_store().into_inner(), |r| r.store.clone()),
        });
        let mut scopes_supported = raw.scopes_supported;
        for s in &raw.required_scopes {
            if !scopes_supported.contains(s) {
                scopes_supported.push(s.clone());
            }
        }
        AuthSettings {
            public_url,
            required_scopes: raw.required_scopes,
            scopes_supported,
            oauth,
            api_key_store,
            stdio: raw.stdio.map(|s| (s.principal, s.groups)),
        }
    }

    fn policy(&mut self, raw: Option<RawPolicy>, base: &Path) -> PolicySettings {
        let Some(raw) = raw else {
            return PolicySettings {
                mode: PolicyMode::Enforce,
                paths: Vec::new(),
                include_default: true,
                shadow_paths: Vec::new(),
                reload_interval: default_policy_reload(),
            };
        };
        let mode = match raw.mode.get_ref().as_str() {
            "enforce" => PolicyMode::Enforce,
            "shadow" => PolicyMode::Shadow,
            "off" => PolicyMode::Off,
            other => {
                self.problem(
                    &raw.mode,
                    "policy.mode",
                    format!("unknown mode '{other}' (expected enforce, shadow or off)"),
                );
                PolicyMode::Enforce
            }
        };
        let paths_of = |v: &mut Self, list: &[Spanned<String>], key: &str| {
            let mut out = Vec::new();
            for (i, p) in list.iter().enumerate() {
                let full = base.join(p.get_ref());
                if !full.exists() {
                    v.problem(p, format!("policy.{key}[{i}]"), format!("no such file or folder: {}", full.display()));
                }
                out.push(full);
            }
            out
        };
        let paths = paths_of(self, &raw.paths, "paths");
        let shadow_paths = paths_of(self, &raw.shadow_paths, "shadow_paths");
        PolicySettings {
            mode,
            include_default: raw.include_default || paths.is_empty(),
            paths,
            shadow_paths,
            reload_interval: raw.reload_interval.max(Duration::from_millis(200)),
        }
    }

    fn validation(&mut self, raw: Option<RawValidation>) -> ValidationSettings {
        let Some(raw) = raw else { return ValidationSettings::default() };
        let enabled = match raw.mode.get_ref().as_str() {
            "enforce" => true,
            "off" => false,
            other => {
                self.problem(&raw.mode, "validation.mode", format!("unknown mode '{other}' (expected enforce or off)"));
                true
            }
        };
        let strict = match raw.strict.get_ref().as_str() {
            "auto" => Strictness::Auto,
            "always" => Strictness::Always,
            "never" => Strictness::Never,
            other => {
                self.problem(
                    &raw.strict,
                    "validation.strict",
                    format!("unknown strictness '{other}' (expected auto, always or never)"),
                );
                Strictness::Auto
            }
        };
        let refusal = match raw.refusal.get_ref().as_str() {
            "error" => Refusal::Error,
            "tool_result" => Refusal::ToolResult,
            other => {
                self.problem(
                    &raw.refusal,
                    "validation.refusal",
                    format!("unknown refusal '{other}' (expected error or tool_result)"),
                );
                Refusal::Error
            }
        };
        ValidationSettings { enabled, strict, output: raw.output, refusal }
    }
}

impl Validator<'_> {
    fn telemetry(&mut self, raw: RawTelemetry, gateway: &str) -> TelemetrySettings {
        let endpoint = raw.otlp_endpoint.get_ref().clone();
        if !endpoint
            .parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
        {
            self.problem(&raw.otlp_endpoint, "telemetry.otlp_endpoint", "expected an http:// or https:// URL");
        }
        let protocol = match raw.protocol.get_ref().as_str() {
            "http/protobuf" => OtlpProtocol::Protobuf,
            "http/json" => OtlpProtocol::Json,
            other => {
                self.problem(
                    &raw.protocol,
                    "telemetry.protocol",
                    format!("unknown protocol '{other}' (expected http/protobuf or http/json)"),
                );
                OtlpProtocol::Protobuf
            }
        };
        TelemetrySettings {
            endpoint,
            protocol,
            traces: raw.traces,
            audit_logs: raw.audit_logs,
            service_name: raw.service_name.unwrap_or_else(|| gateway.to_owned()),
        }
    }

    fn metrics(&mut self, raw: Option<RawMetrics>) -> MetricsSettings {
        let Some(raw) = raw else {
            return MetricsSettings { max_principals: default_max_principals(), ..Default::default() };
        };
        let address = raw.address.as_ref().and_then(|a| match a.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(a, "metrics.address", "expected an address like 127.0.0.1:9464");
                None
            }
        });
        MetricsSettings { address, principal_labels: raw.principal_labels, max_principals: raw.max_principals }
    }

    fn audit(
        &mut self,
        raw: Option<RawAudit>,
        registry: Option<&RegistrySettings>,
        gateway: &str,
        base: &Path,
    ) -> Option<AuditSettings> {
        let registry_store = registry.filter(|r| r.mode != crate::registry::Mode::Off).map(|r| r.store.clone());
        let raw = match raw {
            Some(raw) => raw,
            None => {
                // The embedded default: audit where the registry keeps its data.
                let store = registry_store?;
                let raw: RawAudit = toml::from_str("").ok()?;
                return self.audit_settings(raw, store, gateway, base);
            }
        };
        match raw.mode.get_ref().as_str() {
            "on" => {}
            "off" => return None,
            other => {
                self.problem(&raw.mode, "audit.mode", format!("unknown mode '{other}' (expected on or off)"));
                return None;
            }
        }
        let store = match (&raw.store, registry_store) {
            (Some(s), _) => {
                let text = s.get_ref().clone();
                if !(text.starts_with("sqlite:")
                    || text.starts_with("postgres://")
                    || text.starts_with("postgresql://"))
                {
                    self.problem(s, "audit.store", "expected sqlite://path.db or postgres://…");
                }
                text
            }
            (None, Some(store)) => store,
            (None, None) => {
                self.problem(&raw.mode, "audit.store", "the registry is off: name the audit store");
                return None;
            }
        };
        self.audit_settings(raw, store, gateway, base)
    }

    fn audit_settings(&mut self, raw: RawAudit, store: String, gateway: &str, base: &Path) -> Option<AuditSettings> {
        let instance = match &raw.instance {
            Some(i) => {
                let text = i.get_ref().clone();
                if text.is_empty() || text.len() > 64 || text.contains('/') {
                    self.problem(i, "audit.instance", "use 1-64 characters, no '/'");
                }
                text
            }
            None => gateway.to_owned(),
        };
        let signing_key = raw.signing_key.as_ref().and_then(|k| match SecretRef::parse(k.get_ref(), base) {
            Ok(r) => Some(r),
            Err(message) => {
                self.problem(k, "audit.signing_key", message);
                None
            }
        });
        let on_store_failure = match raw.on_store_failure.get_ref().as_str() {
            "spool" => StoreFailure::Spool,
            "fail_closed" => StoreFailure::FailClosed,
            other => {
                self.problem(
                    &raw.on_store_failure,
                    "audit.on_store_failure",
                    format!("unknown behaviour '{other}' (expected spool or fail_closed)"),
                );
                StoreFailure::FailClosed
            }
        };
        let mut fail_closed_tiers = Vec::new();
        for t in raw.fail_closed_tiers.get_ref() {
            match t.parse::<portcullis_registry::model::RiskTier>() {
                Ok(tier) => fail_closed_tiers.push(tier),
                Err(e) => self.problem(&raw.fail_closed_tiers, "audit.fail_closed_tiers", e),
            }
        }
        let export = raw.export.as_deref().map(|e| match e {
            "stdout" => Export::Stdout,
            path => Export::File(base.join(path)),
        });
        let mut retention = std::collections::BTreeMap::new();
        for (name, value) in &raw.retention {
            let Some(partition) = portcullis_audit::Partition::parse(name) else {
                self.problem(value, format!("audit.retention.{name}"), "expected calls, access or system");
                continue;
            };
            match humantime::parse_duration(value.get_ref()) {
                Ok(d) if d >= Duration::from_secs(60) => {
                    retention.insert(partition, d);
                }
                _ => self.problem(
                    value,
                    format!("audit.retention.{name}"),
                    "expected a duration of a minute or more, e.g. \"400d\"",
                ),
            }
        }
        let synced = match raw.synchronous.get_ref().as_str() {
            "normal" => false,
            "full" => true,
            other => {
                self.problem(
                    &raw.synchronous,
                    "audit.synchronous",
                    format!("unknown setting '{other}' (expected normal or full)"),
                );
                false
            }
        };
        let acknowledge = match raw.acknowledge.get_ref().as_str() {
            "journal" => crate::audit::Acknowledge::Journal,
            "store" => crate::audit::Acknowledge::Store,
            other => {
                self.problem(
                    &raw.acknowledge,
                    "audit.acknowledge",
                    format!("unknown setting '{other}' (expected journal or store)"),
                );
                crate::audit::Acknowledge::Store
            }
        };
        if raw.checkpoint_interval < Duration::from_millis(10) {
            self.problems.push(Problem {
                line: None,
                key: "audit.checkpoint_interval".to_owned(),
                message: "expected at least 10ms".to_owned(),
            });
        }
        Some(AuditSettings {
            store,
            instance,
            signing_key,
            checkpoint_interval: raw.checkpoint_interval.max(Duration::from_millis(10)),
            on_store_failure,
            fail_closed_tiers,
            spool: base.join(&raw.spool),
            redact_fields: raw.redact_fields.iter().map(|f| crate::audit::call::normalized(f)).collect(),
            max_argument_bytes: raw.max_argument_bytes,
            export,
            retention,
            synced,
            acknowledge,
        })
    }
}

fn is_loopback_host(host: Option<&str>) -> bool {
    matches!(host, Some("localhost" | "127.0.0.1" | "[::1]" | "::1"))
}

impl Validator<'_> {
    fn registry(&mut self, raw: Option<RawRegistry>, base: &Path) -> Option<RegistrySettings> {
        let raw = raw.unwrap_or(RawRegistry {
            mode: default_mode(),
            store: default_store(),
            seed: Vec::new(),
            rescan_interval: default_rescan(),
            block_severity: default_block(),
        });
        let mode = match raw.mode.get_ref().as_str() {
            "enforce" => Mode::Enforce,
            "audit" => Mode::Audit,
            "off" => Mode::Off,
            other => {
                self.problem(
                    &raw.mode,
                    "registry.mode",
                    format!("unknown mode '{other}' (expected enforce, audit or off)"),
                );
                Mode::Enforce
            }
        };
        let store = raw.store.get_ref().clone();
        if !(store.starts_with("sqlite:") || store.starts_with("postgres://") || store.starts_with("postgresql://")) {
            self.problem(&raw.store, "registry.store", "expected sqlite://path.db or postgres://…");
        }
        let block_severity = match raw.block_severity.get_ref().parse::<Severity>() {
            Ok(s) => s,
            Err(_) => {
                self.problem(
                    &raw.block_severity,
                    "registry.block_severity",
                    "expected info, low, medium, high or critical",
                );
                Severity::High
            }
        };
        let mut seed = Vec::new();
        for (i, path) in raw.seed.iter().enumerate() {
            let full = base.join(path.get_ref());
            if !full.is_file() {
                self.problem(path, format!("registry.seed[{i}]"), format!("no such file: {}", full.display()));
            }
            seed.push(full);
        }
        Some(RegistrySettings {
            mode,
            store,
            seed,
            rescan_interval: raw.rescan_interval.max(Duration::from_secs(1)),
            block_severity,
        })
    }
}

impl Validator<'_> {
    fn admin(&mut self, raw: RawAdmin, base: &Path) -> AdminSettings {
        let address = match raw.address.get_ref().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.problem(&raw.address, "admin.address", "expected an address like 127.0.0.1:9090");
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        };
        let token = match SecretRef::parse(raw.token.get_ref(), base) {
            Ok(t) => t,
            Err(message) => {
                self.problem(&raw.token, "admin.token", message);
                SecretRef::Env(String::new())
            }
        };
        AdminSettings { address, token }
    }
}

/// `$PORTCULLIS_EXE` names the running gateway binary (so the bundled demo needs no install).
fn expand_self(command: &str) -> String {
    if command == "$PORTCULLIS_EXE"
        && let Ok(exe) = std::env::current_exe()
    {
        return exe.display().to_string();
    }
    command.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<Problem> {
        match Config::parse(text, Path::new("t.toml")) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems,
        }
    }

    const GOOD: &str = r#"
[listen]
address = "127.0.0.1:0"

[[upstream]]
name = "a"
transport = "stdio"
command = "/bin/true"

[[upstream]]
name = "b"
transport = "http"
url = "http://127.0.0.1:9/mcp"
era = "legacy"

[[route]]
path = "/mcp"
upstreams = ["a", "b"]
"#;

    #[test]
    fn accepts_a_valid_config() {
        let c = Config::parse(GOOD, Path::new("t.toml")).expect("valid");
        assert_eq!(c.routes[0].upstreams, vec![0, 1]);
        assert_eq!(c.upstreams[1].prefix, "b__");
        assert_eq!(c.upstreams[1].era, EraPreference::Legacy);
    }

    #[test]
    fn rejects_unknown_keys_with_their_line() {
        let p = problems("[gateway]\nname = \"x\"\nbogus = 1\n[[route]]\npath=\"/mcp\"\nupstreams=[]\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, Some(3));
        assert!(p[0].message.contains("unknown field `bogus`"), "{}", p[0].message);
    }

    #[test]
    fn audit_acknowledgement_defaults_to_the_journal_and_unknown_settings_are_refused() {
        let route = "[[upstream]]\nname=\"a\"\ntransport=\"stdio\"\ncommand=\"x\"\n[[route]]\npath=\"/mcp\"\nupstreams=[\"a\"]\n";
        let acknowledge = |audit: &str| {
            let c = Config::parse(&format!("[audit]\n{audit}\n{route}"), Path::new("t.toml")).expect("valid");
            c.audit.map(|a| a.acknowledge)
        };
        assert_eq!(acknowledge(""), Some(crate::audit::Acknowledge::Journal));
        assert_eq!(acknowledge("acknowledge = \"store\""), Some(crate::audit::Acknowledge::Store));
        let p = problems(&format!("[audit]\nacknowledge = \"eventually\"\n{route}"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].key.as_str(), p[0].line), ("audit.acknowledge", Some(2)));
        assert!(p[0].message.contains("expected journal or store"), "{}", p[0].message);
    }

    #[test]
    fn worker_threads_are_optional_and_bounded() {
        let route = "[[upstream]]\nname=\"a\"\ntransport=\"stdio\"\ncommand=\"x\"\n[[route]]\npath=\"/mcp\"\nupstreams=[\"a\"]\n";
        let c = Config::parse(route, Path::new("t.toml")).expect("valid");
        assert_eq!(c.gateway.worker_threads, None);
        let c = Config::parse(&format!("[gateway]\nworker_threads = 1\n{route}"), Path::new("t.toml")).expect("valid");
        assert_eq!(c.gateway.worker_threads, Some(1));
        let p = problems(&format!("[gateway]\nworker_threads = 0\n{route}"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].key.as_str(), p[0].line), ("gateway.worker_threads", Some(2)));
    }

    #[test]
    fn reports_every_semantic_problem_at_once() {
        let p = problems(
            r#"
[[upstream]]
name = "bad name"
transport = "carrier-pigeon"

[[upstream]]
name = "x"
transport = "http"

[[route]]
path = "mcp"
upstreams = ["nope"]
names = "passthrough"
"#,
        );
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"upstream[0].name"), "{keys:?}");
        assert!(keys.contains(&"upstream[0].transport"), "{keys:?}");
        assert!(keys.contains(&"upstream[1].url"), "{keys:?}");
        assert!(keys.contains(&"route[0].path"), "{keys:?}");
        assert!(keys.contains(&"route[0].upstreams"), "{keys:?}");
        let line_of_bad_name = p.iter().find(|p| p.key == "upstream[0].name").and_then(|p| p.line);
        assert_eq!(line_of_bad_name, Some(3));
    }

    #[test]
    fn rejects_overlapping_prefixes() {
        let p = problems(
            r#"
[[upstream]]
name = "a"
transport = "stdio"
command = "x"
prefix = "a_"
[[upstream]]
name = "b"
transport = "stdio"
command = "x"
prefix = "a_b_"
[[route]]
path = "/mcp"
upstreams = ["a", "b"]
"#,
        );
        assert!(p.iter().any(|p| p.message.contains("overlap")), "{p:?}");
    }

    #[test]
    fn admin_token_is_a_reference_never_a_value() {
        let c = Config::parse(
            &format!("{GOOD}\n[admin]\naddress = \"127.0.0.1:9090\"\ntoken = \"file:admin.token\"\n"),
            Path::new("/etc/p/t.toml"),
        )
        .expect("valid");
        let admin = c.admin.expect("admin");
        assert_eq!(admin.token, SecretRef::File(PathBuf::from("/etc/p/admin.token")));
        let lines = GOOD.lines().count();
        let p = problems(&format!("{GOOD}\n[admin]\naddress = \"nowhere\"\ntoken = \"hunter2\"\n"));
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!((p[0].key.as_str(), p[0].line), ("admin.address", Some(lines + 3)));
        assert_eq!((p[1].key.as_str(), p[1].line), ("admin.token", Some(lines + 4)));
        assert!(!p[1].message.contains("hunter2"), "the value is never echoed: {}", p[1].message);
        let p = problems(&format!("{GOOD}\n[admin]\naddress = \"127.0.0.1:1\"\ntoken = \"env:X\"\nport = 1\n"));
        assert!(p[0].message.contains("unknown field `port`"), "{p:?}");
    }

    #[test]
    fn upstream_credentials_are_references_and_never_echoed() {
        let text = GOOD.replace(
            "era = \"legacy\"",
            "era = \"legacy\"\nbearer = \"file:tok\"\nsecret_headers = { \"X-Api-Key\" = \"env:KEY\" }\nheaders = { \"X-Tenant\" = \"acme\" }",
        );
        let c = Config::parse(&text, Path::new("/etc/p/t.toml")).expect("valid");
        let creds = &c.upstreams[1].credentials;
        assert_eq!(
            creds.headers[0],
            ("authorization".to_owned(), HeaderSource::Bearer(SecretRef::File("/etc/p/tok".into())))
        );
        assert!(creds.headers.contains(&("x-api-key".to_owned(), HeaderSource::Secret(SecretRef::Env("KEY".into())))));
        assert!(creds.headers.contains(&("x-tenant".to_owned(), HeaderSource::Plain("acme".into()))));

        let bad = GOOD.replace(
            "era = \"legacy\"",
            "bearer = \"ghp_supersecret\"\nheaders = { \"Authorization\" = \"Bearer x\", \"Mcp-Session-Id\" = \"1\" }",
        );
        let p = problems(&bad);
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"upstream[1].bearer"), "{p:?}");
        assert!(keys.contains(&"upstream[1].headers.Authorization"), "{p:?}");
        assert!(keys.contains(&"upstream[1].headers.Mcp-Session-Id"), "{p:?}");
        assert!(p.iter().all(|p| !p.message.contains("supersecret")), "{p:?}");
        let stdio_bearer =
            problems(&GOOD.replace("command = \"/bin/true\"", "command = \"/bin/true\"\nbearer = \"env:X\""));
        assert!(stdio_bearer.iter().any(|p| p.key == "upstream[0].bearer"), "{stdio_bearer:?}");
    }

    #[test]
    fn a_non_loopback_listener_needs_auth() {
        let open = GOOD.replace("127.0.0.1:0", "0.0.0.0:8080");
        assert!(problems(&open).iter().any(|p| p.key == "listen.address" && p.message.contains("[auth]")));
        let with_auth = format!("{open}\n[auth]\npublic_url = \"https://mcp.example.com\"\n");
        assert_eq!(problems(&with_auth), Vec::new());
    }

    #[test]
    fn auth_policy_and_validation_sections_are_validated() {
        let text = format!(
            "{GOOD}\n[auth]\npublic_url = \"http://mcp.example.com/\"\n[auth.oauth]\nissuer = \"ftp://x\"\nalgorithms = [\"HS256\", \"none\"]\nleeway = \"10m\"\n\
             [policy]\nmode = \"maybe\"\npaths = [\"nowhere.cedar\"]\n[validation]\nstrict = \"very\"\nrefusal = \"shrug\"\n"
        );
        let p = problems(&text);
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "auth.public_url",
            "auth.oauth.issuer",
            "auth.oauth.algorithms",
            "auth.oauth.leeway",
            "policy.mode",
            "policy.paths[0]",
            "validation.strict",
            "validation.refusal",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        assert_eq!(p.iter().filter(|p| p.key == "auth.oauth.algorithms").count(), 2, "{p:?}");
        let c = Config::parse(GOOD, Path::new("t.toml")).expect("valid");
        assert_eq!(c.policy.mode, PolicyMode::Enforce, "the default policy is enforced");
        assert!(c.policy.include_default && c.validation.enabled && c.auth.is_none());
    }
}
