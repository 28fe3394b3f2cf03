//! Authentication of hosts: the gateway is an OAuth 2.1 resource server
//! (MCP authorization spec, RFC 9728 protected-resource metadata, RFC 8707
//! audience binding) and also accepts workload API keys. Every request on the
//! HTTP listener is authenticated before its body is read; the result is the
//! [`Principal`] every later control sees. The host's credential itself stops
//! here: nothing of it is forwarded upstream, logged or recorded.
//!
//! A route's resource identifier is `public_url` + the route's path; a token
//! is accepted on a route only if its audience names that route (a token for
//! `/mcp/a` does not open `/mcp/b`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;
use portcullis_identity::api_key;
use portcullis_identity::jwt::{JwtSettings, JwtValidator};
use portcullis_identity::{AuthMethod, Principal, PrincipalKind};
use portcullis_store::{ApiKeyRecord, Store};

use crate::config::AuthSettings;
use crate::registry::now_ms;
use crate::secret::Secret;

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential was presented (401 with the metadata pointer).
    Missing,
    /// The credential is not valid (401 `invalid_token`).
    Invalid { reason: &'static str, message: String },
    /// The credential is valid but lacks required scopes (403 `insufficient_scope`).
    InsufficientScope { missing: Vec<String> },
    /// The issuer or the key store cannot be reached (503; the host may retry).
    Unavailable { reason: &'static str, message: String },
}

impl AuthFailure {
    /// The stable machine-readable reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "credentials_missing",
            Self::Invalid { reason, .. } | Self::Unavailable { reason, .. } => reason,
            Self::InsufficientScope { .. } => "insufficient_scope",
        }
    }

    /// A message safe to show the host.
    pub fn message(&self) -> String {
        match self {
            Self::Missing => "authentication required: send a bearer token".to_owned(),
            Self::Invalid { message, .. } | Self::Unavailable { message, .. } => message.clone(),
            Self::InsufficientScope { missing } => format!("the token lacks the scope(s): {}", missing.join(" ")),
        }
    }
}

/// Authenticates hosts.
pub struct Authenticator {
    settings: AuthSettings,
    jwt: Option<JwtValidator>,
    keys: Option<ApiKeys>,
}

impl Authenticator {
    /// Builds the token validator and opens the key store.
    pub async fn open(settings: &AuthSettings) -> Result<Arc<Self>, String> {
        let jwt = match &settings.oauth {
            Some(o) => {
                let mut s = JwtSettings::new(o.issuer.clone(), settings.public_url.clone());
                s.jwks_uri = o.jwks_uri.clone();
                s.algorithms = o
                    .algorithms
                    .iter()
                    .map(|a| a.parse().map_err(|e| format!("auth.oauth.algorithms: {e}")))
                    .collect::<Result<_, String>>()?;
                s.leeway = o.leeway;
                s.jwks_refresh = o.jwks_refresh;
                s.claims.subject = o.subject_claim.parse().map_err(|e| format!("auth.oauth.subject_claim: {e}"))?;
                s.claims.groups = o.groups_claim.parse().map_err(|e| format!("auth.oauth.groups_claim: {e}"))?;
                s.claims.tenant = match &o.tenant_claim {
                    Some(t) => Some(t.parse().map_err(|e| format!("auth.oauth.tenant_claim: {e}"))?),
                    None => None,
                };
                if !o.client_credentials_are_workloads {
                    s.claims.workload = portcullis_identity::jwt::WorkloadRule::Never;
                }
                Some(JwtValidator::new(s).map_err(|e| format!("auth.oauth: {e}"))?)
            }
            None => None,
        };
        let keys = match &settings.api_key_store {
            Some(url) => Some(ApiKeys {
                store: Store::connect(url).await.map_err(|e| format!("auth.api_keys: store: {e}"))?,
                cache: Mutex::new(HashMap::new()),
            }),
            None => None,
        };
        Ok(Arc::new(Self { settings: settings.clone(), jwt, keys }))
    }

    /// The principal behind a request's credentials, for a route.
    pub async fn authenticate(&self, headers: &HeaderMap, route_path: &str) -> Result<Principal, AuthFailure> {
        let presented = credential(headers)?;
        let principal = match presented {
            Presented::ApiKey(key) => match &self.keys {
                Some(keys) => keys.authenticate(key).await?,
                None => {
                    return Err(AuthFailure::Invalid {
                        reason: "api_keys_disabled",
                        message: "API keys are not accepted here".to_owned(),
                    });
                }
            },
            Presented::Bearer(token) => match &self.jwt {
                Some(jwt) => jwt.validate_for(token, &self.settings.resource(route_path)).await.map_err(|e| {
                    if e.is_client_fault() {
                        AuthFailure::Invalid { reason: e.reason(), message: e.to_string() }
                    } else {
                        AuthFailure::Unavailable { reason: e.reason(), message: e.to_string() }
                    }
                })?,
                None => {
                    return Err(AuthFailure::Invalid {
                        reason: "token_not_accepted",
                        message: "bearer tokens are not accepted here".to_owned(),
                    });
                }
            },
        };
        let missing: Vec<String> =
            self.settings.required_scopes.iter().filter(|s| !principal.has_scope(s)).cloned().collect();
        if !missing.is_empty() {
            return Err(AuthFailure::InsufficientScope { missing });
        }
        Ok(principal)
    }

    /// The `WWW-Authenticate` header of a refusal (RFC 6750 §3, RFC 9728 §5.1).
    pub fn challenge(&self, route_path: &str, failure: &AuthFailure) -> String {
        let mut parts = vec![format!("resource_metadata=\"{}\"", self.metadata_url(route_path))];
        match failure {
            AuthFailure::Missing | AuthFailure::Unavailable { .. } => {}
            AuthFailure::Invalid { message, .. } => {
                parts.push("error=\"invalid_token\"".to_owned());
                parts.push(format!("error_description=\"{}\"", quoted(message)));
            }
            AuthFailure::InsufficientScope { .. } => {
                parts.push("error=\"insufficient_scope\"".to_owned());
            }
        }
        if !self.settings.required_scopes.is_empty() {
            parts.push(format!("scope=\"{}\"", self.settings.required_scopes.join(" ")));
        }
        format!("Bearer {}", parts.join(", "))
    }

    /// Where a route's protected-resource metadata is published.
    pub fn metadata_url(&self, route_path: &str) -> String {
        format!("{}{}{route_path}", self.settings.public_url, METADATA_PATH)
    }

    /// A route's protected-resource metadata (RFC 9728).
    pub fn metadata(&self, route_path: &str, resource_name: &str) -> serde_json::Value {
        let mut doc = serde_json::json!({
            "resource": self.settings.resource(route_path),
            "bearer_methods_supported": ["header"],
            "resource_name": resource_name,
        });
        if let Some(o) = &self.settings.oauth {
            doc["authorization_servers"] = serde_json::json!([o.issuer]);
        }
        if !self.settings.scopes_supported.is_empty() {
            doc["scopes_supported"] = serde_json::json!(self.settings.scopes_supported);
        }
        doc
    }
}

/// The host's OAuth access token (not an API key), kept for token exchange only.
pub fn subject_token(headers: &HeaderMap) -> Option<Secret> {
    match credential(headers) {
        Ok(Presented::Bearer(token)) => Some(Secret::new(token)),
        _ => None,
    }
}

/// The path prefix of protected-resource metadata (RFC 9728 §3).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The stdio host's principal: the configured identity, else the OS user running the gateway.
pub fn stdio_principal(settings: Option<&AuthSettings>) -> Principal {
    if let Some((id, groups)) = settings.and_then(|s| s.stdio.clone()) {
        return Principal::local(id, groups);
    }
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "local".to_owned());
    Principal::local(user, Vec::new())
}

enum Presented<'a> {
    Bearer(&'a str),
    ApiKey(&'a str),
}

/// The credential a request carries: `Authorization: Bearer …` (a JWT, or an API key by its
/// prefix) or `X-API-Key`. Two different credentials are refused (ambiguous).
fn credential(headers: &HeaderMap) -> Result<Presented<'_>, AuthFailure> {
    let malformed =
        |message: &str| AuthFailure::Invalid { reason: "credentials_malformed", message: message.to_owned() };
    let bearer = match headers.get(http::header::AUTHORIZATION) {
        Some(v) => {
            let text = v.to_str().map_err(|_| malformed("the authorization header is not text"))?;
            let (scheme, token) = text.split_once(' ').ok_or_else(|| malformed("expected 'Bearer <token>'"))?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(malformed("only the Bearer scheme is accepted"));
            }
            let token = token.trim();
            if token.is_empty() {
                return Err(malformed("the bearer token is empty"));
            }
            Some(token)
        }
        None => None,
    };
    let key = match headers.get("x-api-key") {
        Some(v) => Some(v.to_str().map_err(|_| malformed("the x-api-key header is not text"))?.trim()),
        None => None,
    };
    match (bearer, key) {
        (Some(_), Some(_)) => Err(malformed("send one credential, not both Authorization and X-API-Key")),
        (Some(t), None) if t.starts_with(api_key::PREFIX) => Ok(Presented::ApiKey(t)),
        (Some(t), None) => Ok(Presented::Bearer(t)),
        (None, Some(k)) => Ok(Presented::ApiKey(k)),
        (None, None) => Err(AuthFailure::Missing),
    }
}

/// A value inside a quoted-string of a header.
fn quoted(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).map(|c| if c == '"' || c == '\\' { '\'' } else { c }).collect()
}

/// How long a key's record is trusted before the store is read again (so a revocation takes
/// effect within this time on every replica).
const KEY_CACHE_TTL: Duration = Duration::from_secs(5);
/// How many key records are cached before starting over.
const KEY_CACHE_LIMIT: usize = 10_000;

/// Workload API keys, checked against the store (records cached briefly).
struct ApiKeys {
    store: Store,
    cache: Mutex<HashMap<String, Cached>>,
}

/// A key id's record as last read, and when (`None`: the store has no such key).
type Cached = (Instant, Option<Arc<KnownKey>>);

/// A key's record as read from the store, made ready to check against once per read (not per call).
struct KnownKey {
    /// The stored hash of its secret; `None` when the stored value is malformed (the key never verifies).
    hash: Option<api_key::KeyHash>,
    revoked_ms: Option<i64>,
    expires_ms: Option<i64>,
    /// Who the key authenticates as.
    principal: Principal,
}

impl KnownKey {
    fn of(record: ApiKeyRecord) -> KnownKey {
        KnownKey {
            hash: api_key::KeyHash::from_hex(&record.hash).ok(),
            revoked_ms: record.revoked_ms,
            expires_ms: record.expires_ms,
            principal: Principal {
                kind: PrincipalKind::Workload,
                id: record.principal,
                groups: record.groups,
                tenant: record.tenant,
                scopes: record.scopes,
                method: AuthMethod::ApiKey { key_id: record.id },
            },
        }
    }
}

impl ApiKeys {
    async fn authenticate(&self, presented: &str) -> Result<Principal, AuthFailure> {
        let invalid =
            || AuthFailure::Invalid { reason: "api_key_invalid", message: "the API key is not valid".to_owned() };
        let (id, secret) = api_key::parse(presented).map_err(|_| invalid())?;
        let key = self.record(id.as_str()).await?.ok_or_else(invalid)?;
        if !key.hash.as_ref().is_some_and(|hash| api_key::verify(&secret, hash)) {
            return Err(invalid());
        }
        let now = now_ms();
        if key.revoked_ms.is_some_and(|r| r <= now) {
            return Err(AuthFailure::Invalid {
                reason: "api_key_revoked",
                message: "the API key was revoked".to_owned(),
            });
        }
        if key.expires_ms.is_some_and(|e| e <= now) {
            return Err(AuthFailure::Invalid {
                reason: "api_key_expired",
                message: "the API key has expired".to_owned(),
            });
        }
        Ok(key.principal.clone())
    }

    async fn record(&self, id: &str) -> Result<Option<Arc<KnownKey>>, AuthFailure> {
        let now = Instant::now();
        if let Some((at, key)) = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(id)
            && now.duration_since(*at) < KEY_CACHE_TTL
        {
            return Ok(key.clone());
        }
        let record = self.store.api_key(id).await.map_err(|e| {
            tracing::error!(error = %e, "API key store unreachable");
            AuthFailure::Unavailable {
                reason: "key_store_unavailable",
                message: "cannot check the API key now".to_owned(),
            }
        })?;
        let key = record.map(|r| Arc::new(KnownKey::of(r)));
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= KEY_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(id.to_owned(), (now, key.clone()));
        Ok(key)
    }
}
