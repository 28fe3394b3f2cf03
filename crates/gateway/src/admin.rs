//! The operator-facing HTTP API, on its own address apart from the hosts' listener:
//!
//! - the read-only **subregistry** (`/v0.1/servers…`): approved entries only, in the MCP
//!   Registry API v0.1 shapes, without authentication (it publishes what is already approved);
//! - the **admin API** (`/admin/v1/…`): bearer token from `[admin] token`, JSON bodies, errors
//!   as `{"error": {"code", "message", …}}` with a stable machine-readable `code`; it manages the
//!   registry and reads the audit trail (search, trace, verify);
//! - its description, the OpenAPI 3.1 document `admin/openapi.json`, at `/admin/v1/openapi.json`.
//!
//! Architecture invariant: only this module knows the admin HTTP surface; what an action does
//! (scan gate, override, optimistic concurrency) lives in `operator`, shared with the CLI.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path as UrlPath, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use portcullis_audit::{SigningKey, VerifyingKey};
use portcullis_registry::scan::{Severity, max_severity};
use portcullis_registry::server_json::ServerEntry;
use portcullis_store::{AuditQuery, EntryRecord, EntryStatus, PinState, Store, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::audit::AuditSettings;
use crate::audit::report;
use crate::operator::{self, BlockedItem, OperatorError};
use crate::registry::RegistrySettings;
use crate::secret::{Secret, SecretRef};

/// The `[admin]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub address: SocketAddr,
    /// Where the bearer token is read from at start.
    pub token: SecretRef,
}

/// The admin bearer token; never printed (its `Debug` is redacted), compared in constant time.
pub struct AdminToken(Secret);

/// The admin API's state: its own handles on the registry store and, when the audit trail is
/// on, on the audit store.
pub struct Admin {
    store: Store,
    token: AdminToken,
    block: Severity,
    audit: Option<AuditTrail>,
}

/// The audit trail as the admin API reads it.
struct AuditTrail {
    store: Store,
    /// The public half of the configured signing key; checkpoints are verified against it.
    key: Option<VerifyingKey>,
}

/// The MCP Registry's `_meta` key for registry-managed metadata.
pub const OFFICIAL_META: &str = "io.modelcontextprotocol.registry/official";

/// The OpenAPI 3.1 document describing the subregistry and the admin API.
pub const OPENAPI: &str = include_str!("admin/openapi.json");

/// Every route, as `(method, path)` (the paths are written as in the OpenAPI document).
pub fn routes() -> Vec<(&'static str, &'static str)> {
    table().into_iter().map(|(m, p, _)| (m, p)).collect()
}

/// The router of the subregistry and the admin API.
pub fn router(admin: Arc<Admin>) -> Router {
    table().into_iter().fold(Router::new(), |r, (_, path, handler)| r.route(path, handler)).with_state(admin)
}

fn table() -> Vec<(&'static str, &'static str, MethodRouter<Arc<Admin>>)> {
    vec![
        ("get", "/v0.1/servers", get(servers)),
        ("get", "/v0.1/servers/{serverName}/versions", get(server_versions)),
        ("get", "/v0.1/servers/{serverName}/versions/{version}", get(server_version)),
        ("get", "/admin/v1/openapi.json", get(openapi)),
        ("get", "/admin/v1/entries", get(list_entries)),
        ("post", "/admin/v1/entries", post(add_entry)),
        ("get", "/admin/v1/entries/{name}/versions/{version}", get(show_entry)),
        ("post", "/admin/v1/entries/{name}/versions/{version}/approve", post(approve_entry)),
        ("post", "/admin/v1/entries/{name}/versions/{version}/revoke", post(revoke_entry)),
        ("get", "/admin/v1/entries/{name}/versions/{version}/diff", get(entry_diff)),
        ("get", "/admin/v1/entries/{name}/versions/{version}/drift", get(entry_drift)),
        ("get", "/admin/v1/entries/{name}/versions/{version}/scan", get(entry_scan)),
        ("post", "/admin/v1/import", post(import_entries)),
        ("get", "/admin/v1/audit/records", get(audit_records)),
        ("get", "/admin/v1/audit/trace/{correlation}", get(audit_trace)),
        ("get", "/admin/v1/audit/verify", get(audit_verify)),
    ]
}

impl AdminToken {
    /// Reads the token from its reference; refuses an unset or empty one.
    pub fn resolve(from: &SecretRef) -> Result<Self, String> {
        from.resolve_now().map(Self).map_err(|e| format!("admin.token: {e}"))
    }
    /// Whether a presented token is this one (constant time in the token's content).
    fn accepts(&self, presented: &str) -> bool {
        self.0.expose().as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(redacted)")
    }
}

impl Admin {
    /// Reads the token (refusing an empty one) and opens the registry store and, when the audit
    /// trail is on, the audit store and the public half of its signing key.
    pub async fn open(
        settings: &AdminSettings,
        registry: &RegistrySettings,
        audit: Option<&AuditSettings>,
    ) -> Result<Arc<Self>, String> {
        let token = AdminToken::resolve(&settings.token)?;
        // The key is read before any store opens, so a bad one leaves nothing to close.
        let key = match audit.and_then(|a| a.signing_key.as_ref()) {
            Some(reference) => {
                let secret = reference.resolve().await.map_err(|e| format!("audit.signing_key: {e}"))?;
                Some(SigningKey::parse(secret.expose()).map_err(|e| format!("audit.signing_key: {e}"))?.verifying_key())
            }
            None => None,
        };
        let store = Store::connect(&registry.store).await.map_err(|e| format!("admin: registry store: {e}"))?;
        let audit = match audit {
            Some(a) => match Store::connect(&a.store).await {
                Ok(audit_store) => Some(AuditTrail { store: audit_store, key }),
                Err(e) => {
                    store.close().await;
                    return Err(format!("admin: audit store: {e}"));
                }
            },
            None => None,
        };
        Ok(Arc::new(Admin { store, token, block: registry.block_severity, audit }))
    }

    /// Closes the stores' connections.
    pub async fn close(&self) {
        self.store.close().await;
        if let Some(audit) = &self.audit {
            audit.store.close().await;
        }
    }

    /// The audit trail, or `audit_off` when the gateway keeps none.
    fn audit(&self) -> Result<&AuditTrail, ApiError> {
        self.audit.as_ref().ok_or(ApiError::AuditOff)
    }
}

// ---- errors ----

/// A failed admin request; mapped to status, `code` and body in `into_response` only.
#[derive(Debug)]
enum ApiError {
    Unauthorized,
    NotFound(String),
    Duplicate(String),
    InvalidDocument(Vec<String>),
    InvalidRequest(String),
    Conflict(String),
    Blocked { block: Severity, items: Vec<BlockedItem> },
    Store(StoreError),
    AuditOff,
    AuditStore(StoreError),
}

impl From<OperatorError> for ApiError {
    fn from(e: OperatorError) -> Self {
        match e {
            e @ OperatorError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            e @ OperatorError::Duplicate { .. } => ApiError::Duplicate(e.to_string()),
            OperatorError::Blocked { block, items } => ApiError::Blocked { block, items },
            e @ OperatorError::Conflict { .. } => ApiError::Conflict(e.to_string()),
            OperatorError::Store(e) => ApiError::Store(e),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        OperatorError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, extra) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid admin bearer token is required".to_owned(),
                json!({}),
            ),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m, json!({})),
            ApiError::Duplicate(m) => (StatusCode::CONFLICT, "duplicate", m, json!({})),
            ApiError::InvalidDocument(problems) => (
                StatusCode::BAD_REQUEST,
                "invalid_document",
                "invalid server.json".to_owned(),
                json!({"problems": problems}),
            ),
            ApiError::InvalidRequest(m) => (StatusCode::BAD_REQUEST, "invalid_request", m, json!({})),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m, json!({})),
            ApiError::Blocked { block, items } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "blocked_by_scan",
                format!(
                    "not approved: {} item(s) have findings at {} or above; review them, then approve with an \"override\" reason",
                    items.len(),
                    severity(block)
                ),
                json!({"blockSeverity": block, "items": items.iter().map(|b| json!({"item": b.item, "findings": b.findings})).collect::<Vec<_>>()}),
            ),
            ApiError::Store(StoreError::NotFound { what }) => {
                (StatusCode::NOT_FOUND, "not_found", format!("{what} not found"), json!({}))
            }
            ApiError::Store(StoreError::Duplicate { what }) => {
                (StatusCode::CONFLICT, "duplicate", format!("{what} already exists"), json!({}))
            }
            ApiError::Store(StoreError::Conflict { what }) => {
                (StatusCode::CONFLICT, "conflict", format!("{what} was changed concurrently"), json!({}))
            }
            ApiError::Store(StoreError::Invalid(m)) => (StatusCode::BAD_REQUEST, "invalid_request", m, json!({})),
            ApiError::Store(StoreError::Backend(m)) => {
                tracing::error!(target: "portcullis::admin", error = %m, "registry store failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the registry store is unavailable".to_owned(),
                    json!({}),
                )
            }
            ApiError::AuditOff => (
                StatusCode::NOT_FOUND,
                "audit_off",
                "the audit trail is off in this gateway's configuration".to_owned(),
                json!({}),
            ),
            ApiError::AuditStore(e) => {
                tracing::error!(target: "portcullis::admin", error = %e, "audit store failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the audit store is unavailable".to_owned(),
                    json!({}),
                )
            }
        };
        let mut error = json!({"code": code, "message": message});
        if let (Some(e), Value::Object(more)) = (error.as_object_mut(), extra) {
            e.extend(more);
        }
        let mut response = (status, axum::Json(json!({"error": error}))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A failed subregistry request, in the MCP Registry API's shape (`{"error": "…"}`) plus our `code`.
#[derive(Debug)]
enum RegistryError {
    NotFound(&'static str),
    BadRequest(String),
    Store(StoreError),
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        RegistryError::Store(e)
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            RegistryError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m.to_owned()),
            RegistryError::BadRequest(m) => (StatusCode::BAD_REQUEST, "invalid_request", m),
            RegistryError::Store(e) => {
                tracing::error!(target: "portcullis::admin", error = %e, "registry store failed");
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "the registry store is unavailable".to_owned())
            }
        };
        (status, axum::Json(json!({"error": message, "code": code}))).into_response()
    }
}

// ---- authentication ----

/// Proof that the request carried the admin token.
struct Operator;

impl FromRequestParts<Arc<Admin>> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, admin: &Arc<Admin>) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        match presented {
            Some(token) if admin.token.accepts(token) => Ok(Operator),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

// ---- the subregistry ----

/// `GET /v0.1/servers` query parameters (others, like `updated_since`, are ignored).
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    cursor: Option<String>,
    limit: Option<String>,
    search: Option<String>,
    version: Option<String>,
}

/// An approved entry as the subregistry lists it.
struct Listed {
    record: EntryRecord,
    latest: bool,
}

const DEFAULT_LIMIT: usize = 30;
const MAX_LIMIT: usize = 100;

async fn servers(State(admin): State<Arc<Admin>>, Query(q): Query<ListQuery>) -> Result<Response, RegistryError> {
    let limit = match q.limit.as_deref() {
        None | Some("") => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if n >= 1 => n.min(MAX_LIMIT),
            _ => return Err(RegistryError::BadRequest(format!("limit: expected an integer from 1 to {MAX_LIMIT}"))),
        },
    };
    let mut listed = approved(&admin.store).await?;
    if let Some(search) = q.search.as_deref().filter(|s| !s.is_empty()) {
        let search = search.to_lowercase();
        listed.retain(|l| l.record.name.to_lowercase().contains(&search));
    }
    match q.version.as_deref() {
        None | Some("") => {}
        Some("latest") => listed.retain(|l| l.latest),
        Some(v) => listed.retain(|l| l.record.version == v),
    }
    let start = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => 0,
        Some(cursor) => {
            let Some((name, version)) = cursor.split_once('@') else {
                return Err(RegistryError::BadRequest("cursor: not one this registry returned".to_owned()));
            };
            // After the cursor's entry; if it is gone (revoked since), after its name.
            listed
                .iter()
                .position(|l| l.record.name == name && l.record.version == version)
                .map(|i| i + 1)
                .unwrap_or_else(|| listed.iter().position(|l| l.record.name.as_str() > name).unwrap_or(listed.len()))
        }
    };
    let page: Vec<&Listed> = listed.iter().skip(start).take(limit).collect();
    let mut metadata = json!({"count": page.len()});
    if start + page.len() < listed.len()
        && let Some(last) = page.last()
    {
        metadata["nextCursor"] = json!(format!("{}@{}", last.record.name, last.record.version));
    }
    let servers: Vec<Value> = page.into_iter().map(server_response).collect();
    Ok(axum::Json(json!({"servers": servers, "metadata": metadata})).into_response())
}

async fn server_versions(
    State(admin): State<Arc<Admin>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, RegistryError> {
    let listed: Vec<Listed> = approved(&admin.store).await?.into_iter().filter(|l| l.record.name == name).collect();
    if listed.is_empty() {
        return Err(RegistryError::NotFound("server not found"));
    }
    let servers: Vec<Value> = listed.iter().map(server_response).collect();
    Ok(axum::Json(json!({"servers": servers, "metadata": {"count": servers.len()}})).into_response())
}

async fn server_version(
    State(admin): State<Arc<Admin>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
) -> Result<Response, RegistryError> {
    let found = approved(&admin.store)
        .await?
        .into_iter()
        .find(|l| l.record.name == name && if version == "latest" { l.latest } else { l.record.version == version });
    match found {
        Some(l) => Ok(axum::Json(server_response(&l)).into_response()),
        None => Err(RegistryError::NotFound("server not found")),
    }
}

/// The approved entries, sorted by name then version, each marked whether it is its name's
/// latest approved version (the highest semver, else the last by text).
async fn approved(store: &Store) -> Result<Vec<Listed>, StoreError> {
    let records: Vec<EntryRecord> =
        store.list_entries().await?.into_iter().filter(|e| e.status == EntryStatus::Approved).collect();
    let mut listed: Vec<Listed> = records.into_iter().map(|record| Listed { record, latest: false }).collect();
    let mut i = 0;
    while i < listed.len() {
        let name = listed[i].record.name.clone();
        let group: Vec<usize> = (i..listed.len()).take_while(|&j| listed[j].record.name == name).collect();
        let best = group
            .iter()
            .rev()
            .copied()
            .find(|&j| semver::Version::parse(&listed[j].record.version).is_ok())
            .or(group.last().copied());
        for &j in &group {
            listed[j].latest = Some(j) == best;
        }
        i += group.len().max(1);
    }
    Ok(listed)
}

fn server_response(l: &Listed) -> Value {
    let at = rfc3339(l.record.updated_at_ms);
    json!({
        "server": l.record.document,
        "_meta": {OFFICIAL_META: {"status": "active", "publishedAt": at, "updatedAt": at, "isLatest": l.latest}},
    })
}

// ---- the admin API ----

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn list_entries(_: Operator, State(admin): State<Arc<Admin>>) -> Result<Response, ApiError> {
    let entries: Vec<Value> = admin.store.list_entries().await?.iter().map(summary).collect();
    Ok(axum::Json(json!({"entries": entries})).into_response())
}

async fn add_entry(_: Operator, State(admin): State<Arc<Admin>>, body: Bytes) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::InvalidDocument(vec!["the body is not UTF-8 text".to_owned()]))?;
    let entry = ServerEntry::import(text).map_err(|e| ApiError::InvalidDocument(e.problems))?;
    let record = operator::add_entry(&admin.store, &entry, "admin-api").await?;
    tracing::info!(target: "portcullis::admin", entry = %record.name, version = %record.version, "registry entry added (pending)");
    let location = format!("/admin/v1/entries/{}/versions/{}", encode(&record.name), encode(&record.version));
    let mut response = (StatusCode::CREATED, axum::Json(summary(&record))).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

async fn show_entry(
    _: Operator,
    State(admin): State<Arc<Admin>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let e = operator::find_entry(&admin.store, &name, Some(&version)).await?;
    let pins: Vec<Value> = admin
        .store
        .pins(&e.name)
        .await?
        .iter()
        .map(|p| {
            json!({
                "item": operator::pin_key(p),
                "kind": p.kind,
                "name": p.name,
                "state": p.state,
                "approvedHash": p.approved_hash,
                "observedHash": p.observed_hash,
                "approvedBy": p.approved_by,
                "approvedAt": p.approved_at_ms.map(rfc3339),
                "overrideReason": p.override_reason,
            })
        })
        .collect();
    let mut body = summary(&e);
    body["document"] = e.document.clone();
    body["pins"] = Value::Array(pins);
    Ok(axum::Json(body).into_response())
}

/// `POST …/approve` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    /// Approve despite blocking findings; recorded on the pins.
    #[serde(rename = "override")]
    override_reason: Option<String>,
    /// The entry revision the operator looked at; a concurrent change makes this a 409.
    revision: Option<i64>,
    /// Who approves (recorded); default `admin-api`.
    actor: Option<String>,
}

/// `POST …/revoke` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    revision: Option<i64>,
    actor: Option<String>,
}

async fn approve_entry(
    _: Operator,
    State(admin): State<Arc<Admin>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: ApproveBody = optional_body(&body)?;
    if b.override_reason.as_deref().is_some_and(|r| r.trim().is_empty()) {
        return Err(ApiError::InvalidRequest("override: give the reason for approving despite findings".to_owned()));
    }
    let actor = b.actor.unwrap_or_else(|| "admin-api".to_owned());
    let a = operator::approve_entry(
        &admin.store,
        &name,
        Some(&version),
        b.revision,
        b.override_reason.as_deref(),
        &actor,
        admin.block,
    )
    .await?;
    tracing::info!(target: "portcullis::admin", entry = %a.name, version = %a.version, pinned = a.pinned, overridden = a.overridden.len(), actor = %actor, "registry entry approved");
    let overridden: Vec<&str> = a.overridden.iter().map(|b| b.item.as_str()).collect();
    Ok(axum::Json(json!({
        "name": a.name,
        "version": a.version,
        "status": EntryStatus::Approved,
        "revision": a.revision,
        "pinned": a.pinned,
        "overridden": overridden,
    }))
    .into_response())
}

async fn revoke_entry(
    _: Operator,
    State(admin): State<Arc<Admin>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: RevokeBody = optional_body(&body)?;
    let actor = b.actor.unwrap_or_else(|| "admin-api".to_owned());
    let e = operator::revoke_entry(&admin.store, &name, Some(&version), b.revision, &actor).await?;
    tracing::info!(target: "portcullis::admin", entry = %e.name, version = %e.version, actor = %actor, "registry entry revoked");
    Ok(axum::Json(summary(&e)).into_response())
}

async fn entry_diff(
    _: Operator,
    State(admin): State<Arc<Admin>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let e = operator::find_entry(&admin.store, &name, Some(&version)).await?;
    let items: Vec<Value> = admin
        .store
        .pins(&e.name)
        .await?
        .iter()
        .filter(|p| matches!(p.state, PinState::Quarantined | PinState::New))
        .map(|p| json!({"item": operator::pin_key(p), "state": p.state, "diff": operator::pin_diff(p)}))
        .collect();
    Ok(axum::Json(json!({"name": e.name, "items": items})).into_response())
}

async fn entry_scan(
    _: Operator,
    State(admin): State<Arc<Admin>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let e = operator::find_entry(&admin.store, &name, Some(&version)).await?;
    let scanned = operator::scan_entry(&admin.store, &e.name).await?;
    let worst = scanned.iter().filter_map(|(_, f)| max_severity(f)).max();
    let items: Vec<Value> = scanned
        .iter()
        .map(|(item, findings)| json!({"item": item, "maxSeverity": max_severity(findings).map(severity), "findings": findings}))
        .collect();
    let blocks = worst.is_some_and(|w| w >= admin.block);
    Ok(axum::Json(json!({"name": e.name, "blocks": blocks, "items": items})).into_response())
}

async fn import_entries(_: Operator, State(admin): State<Arc<Admin>>, body: Bytes) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::InvalidDocument(vec!["the body is not UTF-8 text".to_owned()]))?;
    let docs = operator::documents(text).map_err(|e| ApiError::InvalidDocument(vec![e]))?;
    let (added, refused) = operator::import(&admin.store, docs, "admin-api").await;
    tracing::info!(target: "portcullis::admin", imported = added.len(), refused = refused.len(), "registry import");
    let status = if refused.is_empty() { StatusCode::OK } else { StatusCode::MULTI_STATUS };
    let imported: Vec<Value> = added.iter().map(summary).collect();
    Ok((status, axum::Json(json!({"imported": imported, "refused": refused}))).into_response())
}

/// `GET …/drift` query.
#[derive(Debug, Default, Deserialize)]
struct DriftQuery {
    limit: Option<String>,
}

async fn entry_drift(
    _: Operator,
    State(admin): State<Arc<Admin>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
    Query(q): Query<DriftQuery>,
) -> Result<Response, ApiError> {
    let limit = match q.limit.as_deref() {
        None | Some("") => 50,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::InvalidRequest("limit: expected an integer from 1 to 1000".to_owned()))?,
    };
    let e = operator::find_entry(&admin.store, &name, Some(&version)).await?;
    let drift: Vec<Value> = admin
        .store
        .drift(Some(&e.name), limit)
        .await?
        .into_iter()
        .map(|d| {
            json!({
                "id": d.id,
                "item": portcullis_registry::pinning::pin_key(operator::item_kind(d.kind), &d.name),
                "change": d.change,
                "oldHash": d.old_hash,
                "newHash": d.new_hash,
                "diff": d.diff,
                "findings": d.findings,
                "at": rfc3339(d.at_ms),
            })
        })
        .collect();
    Ok(axum::Json(json!({"name": e.name, "drift": drift})).into_response())
}

// ---- the audit trail ----

/// `GET /admin/v1/audit/records` query; every filter given must match (an empty one is absent).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditRecordsQuery {
    principal: Option<String>,
    server: Option<String>,
    /// The tool, prompt or resource, as the upstream names it.
    tool: Option<String>,
    kind: Option<String>,
    outcome: Option<String>,
    correlation: Option<String>,
    since_ms: Option<String>,
    until_ms: Option<String>,
    limit: Option<String>,
}

const AUDIT_DEFAULT_LIMIT: u32 = 100;
const AUDIT_MAX_LIMIT: u32 = 10_000;

async fn audit_records(
    _: Operator,
    State(admin): State<Arc<Admin>>,
    q: Result<Query<AuditRecordsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let trail = admin.audit()?;
    // A misspelt filter is refused rather than ignored: ignoring it would widen the search.
    let Query(q) = q.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let limit = match q.limit.as_deref() {
        None | Some("") => AUDIT_DEFAULT_LIMIT,
        Some(l) => l.parse::<u32>().ok().filter(|n| (1..=AUDIT_MAX_LIMIT).contains(n)).ok_or_else(|| {
            ApiError::InvalidRequest(format!("limit: expected an integer from 1 to {AUDIT_MAX_LIMIT}"))
        })?,
    };
    let query = AuditQuery {
        principal: present(q.principal),
        server: present(q.server),
        item: present(q.tool),
        kind: present(q.kind),
        outcome: present(q.outcome),
        correlation: present(q.correlation),
        since_ms: epoch_ms("since_ms", q.since_ms)?,
        until_ms: epoch_ms("until_ms", q.until_ms)?,
        limit,
        newest_first: false,
    };
    let records = trail.store.search_audit(&query).await.map_err(ApiError::AuditStore)?;
    let records: Vec<Value> = records.iter().map(crate::audit::record_json).collect();
    Ok(axum::Json(json!({"records": records})).into_response())
}

async fn audit_trace(
    _: Operator,
    State(admin): State<Arc<Admin>>,
    UrlPath(correlation): UrlPath<String>,
) -> Result<Response, ApiError> {
    let trail = admin.audit()?;
    let report = report::trace(&trail.store, &correlation).await.map_err(ApiError::AuditStore)?;
    if report.records.is_empty() {
        return Err(ApiError::NotFound(format!("no audit records carry the correlation id {correlation}")));
    }
    Ok(axum::Json(report.to_json()).into_response())
}

async fn audit_verify(_: Operator, State(admin): State<Arc<Admin>>) -> Result<Response, ApiError> {
    let trail = admin.audit()?;
    let mut reports = Vec::new();
    for stream in trail.store.audit_streams().await.map_err(ApiError::AuditStore)? {
        reports.push(trail.store.verify_audit(&stream, trail.key.as_slice()).await.map_err(ApiError::AuditStore)?);
    }
    let intact = reports.iter().all(portcullis_audit::Report::ok);
    if !intact {
        tracing::warn!(target: "portcullis::admin", broken = reports.iter().filter(|r| !r.ok()).count(), "audit verify: streams not intact");
    }
    Ok(axum::Json(json!({"intact": intact, "streams": reports})).into_response())
}

/// A query filter, absent when empty.
fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// A query parameter holding milliseconds since the Unix epoch.
fn epoch_ms(name: &str, value: Option<String>) -> Result<Option<i64>, ApiError> {
    match value.as_deref() {
        None | Some("") => Ok(None),
        Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
            ApiError::InvalidRequest(format!("{name}: expected an integer, milliseconds since the Unix epoch"))
        }),
    }
}

/// A JSON body that may be empty (then the defaults).
fn optional_body<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidRequest(format!("body: {e}")))
}

fn summary(e: &EntryRecord) -> Value {
    json!({
        "name": e.name,
        "version": e.version,
        "status": e.status,
        "revision": e.revision,
        "updatedBy": e.updated_by,
        "updatedAt": rfc3339(e.updated_at_ms),
    })
}

fn severity(s: Severity) -> String {
    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// A path segment, percent-encoded (a server name's `/` becomes `%2F`).
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC, e.g. `2026-11-25T07:40:00.000Z`.
fn rfc3339(ms: i64) -> String {
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_describes_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("the OpenAPI document is JSON");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "OpenAPI 3.1");
        for (method, path) in routes() {
            assert!(doc["paths"][path][method].is_object(), "{method} {path} is not in the OpenAPI document");
        }
        let described = doc["paths"]
            .as_object()
            .map_or(0, |p| p.values().map(|m| m.as_object().map_or(0, |m| m.len())).sum::<usize>());
        assert_eq!(described, routes().len(), "the document describes no route that is not served");
    }

    #[test]
    fn credential_references_resolve_and_refuse_empty_values() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("t"), "s3cret\n").expect("write");
        let r = SecretRef::parse("file:t", dir.path()).expect("file ref");
        let token = AdminToken::resolve(&r).expect("resolves");
        assert!(token.accepts("s3cret") && !token.accepts("s3cre") && !token.accepts("s3cret!"));
        assert_eq!(format!("{token:?}"), "AdminToken(redacted)");
        std::fs::write(dir.path().join("t"), " \n").expect("write");
        assert!(AdminToken::resolve(&r).is_err_and(|e| e.contains("empty")));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_592_400_123), "2026-11-25T07:40:00.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    /// An admin state on a fresh SQLite registry store, with the audit trail in it or off.
    async fn admin(dir: &tempfile::TempDir, audit: bool) -> Admin {
        let url = format!("sqlite://{}/portcullis.db", dir.path().display());
        let store = Store::connect(&url).await.expect("store");
        let audit = if audit { Some(AuditTrail { store: store.clone(), key: None }) } else { None };
        let token = AdminToken(Secret::new("t".to_owned()));
        Admin { store, token, block: Severity::High, audit }
    }

    fn entry(kind: &str, correlation: &str) -> portcullis_audit::Entry {
        portcullis_audit::Entry {
            time_ms: 1_000,
            kind: kind.to_owned(),
            correlation: correlation.to_owned(),
            request: "00f067aa0ba902b7".to_owned(),
            parent: String::new(),
            principal: "anonymous".to_owned(),
            server: "demo".to_owned(),
            item: "echo".to_owned(),
            outcome: "ok".to_owned(),
            body: r#"{"method":"tools/call"}"#.to_owned(),
        }
    }

    fn query(q: &str) -> Result<Query<AuditRecordsQuery>, QueryRejection> {
        let uri: axum::http::Uri = format!("/admin/v1/audit/records?{q}").parse().expect("uri");
        Query::try_from_uri(&uri)
    }

    async fn error_of(r: Result<Response, ApiError>) -> (StatusCode, Value) {
        let response = match r {
            Ok(r) => panic!("expected an error, got {}", r.status()),
            Err(e) => e.into_response(),
        };
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body()).await.expect("body").to_bytes();
        (status, serde_json::from_slice(&body).expect("JSON error"))
    }

    #[tokio::test]
    async fn audit_routes_answer_audit_off_when_the_trail_is_off() {
        let dir = tempfile::tempdir().expect("temp dir");
        let admin = Arc::new(admin(&dir, false).await);
        let answers = [
            error_of(audit_records(Operator, State(Arc::clone(&admin)), query("")).await).await,
            error_of(audit_trace(Operator, State(Arc::clone(&admin)), UrlPath("t".to_owned())).await).await,
            error_of(audit_verify(Operator, State(Arc::clone(&admin))).await).await,
        ];
        for (status, body) in answers {
            assert_eq!((status, &body["error"]["code"]), (StatusCode::NOT_FOUND, &json!("audit_off")), "{body}");
        }
        admin.close().await;
    }

    #[tokio::test]
    async fn audit_records_are_filtered_and_bad_parameters_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let admin = Arc::new(admin(&dir, true).await);
        let batch = vec![("gw/calls".to_owned(), vec![entry("call", "a"), entry("list", "a"), entry("call", "b")])];
        admin.store.append_audit(&batch).await.expect("append");
        let records = |q: &'static str| {
            let admin = Arc::clone(&admin);
            async move {
                let r = audit_records(Operator, State(admin), query(q)).await.expect("records");
                let body = http_body_util::BodyExt::collect(r.into_body()).await.expect("body").to_bytes();
                let body: Value = serde_json::from_slice(&body).expect("JSON");
                body["records"].as_array().cloned().unwrap_or_default()
            }
        };
        let all = records("").await;
        assert_eq!(all.iter().map(|r| r["seq"].clone()).collect::<Vec<_>>(), [json!(1), json!(2), json!(3)]);
        let first = &all[0];
        assert_eq!(
            (&first["stream"], &first["kind"], &first["item"]),
            (&json!("gw/calls"), &json!("call"), &json!("echo"))
        );
        assert_eq!(first["body"], json!({"method": "tools/call"}), "the body is parsed");
        assert!(first["hash"].as_str().is_some_and(|h| !h.is_empty()), "{first}");
        assert_eq!(records("kind=call&correlation=b").await.len(), 1);
        assert_eq!(records("kind=&limit=2").await.len(), 2, "an empty filter is absent");
        assert_eq!(records("since_ms=1001").await.len(), 0);
        for bad in [
            "limit=0",
            "limit=10001",
            "limit=x",
            "since_ms=yesterday",
            "until_ms=1.5",
            "kinds=call",
            "kind=call&kind=list",
        ] {
            let (status, body) = error_of(audit_records(Operator, State(Arc::clone(&admin)), query(bad)).await).await;
            assert_eq!(
                (status, &body["error"]["code"]),
                (StatusCode::BAD_REQUEST, &json!("invalid_request")),
                "{bad}: {body}"
            );
        }
        let (status, body) =
            error_of(audit_trace(Operator, State(Arc::clone(&admin)), UrlPath("c".to_owned())).await).await;
        assert_eq!((status, &body["error"]["code"]), (StatusCode::NOT_FOUND, &json!("not_found")), "{body}");
        admin.close().await;
    }

    #[test]
    fn names_are_encoded_as_one_segment() {
        assert_eq!(encode("io.example/lookup"), "io.example%2Flookup");
        assert_eq!(encode("1.0.0+build"), "1.0.0%2Bbuild");
    }
}
