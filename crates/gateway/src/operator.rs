//! The operator's actions on the registry (add, approve, revoke), shared by the CLI and
//! the admin API so both apply the same rules: the poisoning scan gates approval, an
//! override is recorded, and entry revisions guard against concurrent changes.

use portcullis_registry::pinning::{self, ItemKind};
use portcullis_registry::scan::{Finding, ScanConfig, Scanner, Severity, max_severity};
use portcullis_registry::server_json::ServerEntry;
use portcullis_store::{EntryRecord, EntryStatus, PinKind, PinRecord, PinState, Store, StoreError};

use crate::registry::now_ms;

/// What an approval did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    pub name: String,
    pub version: String,
    /// The entry's revision afterwards.
    pub revision: i64,
    /// How many tools, prompts and resource templates were pinned.
    pub pinned: usize,
    /// The items whose findings at or above the blocking severity an override approved.
    pub overridden: Vec<BlockedItem>,
}

/// One item whose scan findings block approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedItem {
    /// `tool/name`, `prompt/name` or `resource_template/uri`.
    pub item: String,
    pub findings: Vec<Finding>,
}

/// Why an operator action was refused.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// No such entry (or version).
    #[error("no registry entry {name}{}", version.as_deref().map(|v| format!(" {v}")).unwrap_or_default())]
    NotFound { name: String, version: Option<String> },
    /// The name and version are already registered.
    #[error("{name} {version} is already in the registry")]
    Duplicate { name: String, version: String },
    /// Findings at or above the blocking severity, and no override was given.
    #[error("not approved: {} item(s) have findings at {block:?} or above", items.len())]
    Blocked { block: Severity, items: Vec<BlockedItem> },
    /// Someone else changed the entry or a pin since it was read.
    #[error("{what} changed concurrently (another operator or replica); look again and retry")]
    Conflict { what: String },
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for OperatorError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { what } => OperatorError::Conflict { what },
            other => OperatorError::Store(other),
        }
    }
}

/// Adds a validated document as a pending entry (revision 1).
pub async fn add_entry(store: &Store, entry: &ServerEntry, actor: &str) -> Result<EntryRecord, OperatorError> {
    let record = EntryRecord {
        name: entry.server.name.clone(),
        version: entry.server.version.clone(),
        status: EntryStatus::Pending,
        document: entry.export(),
        revision: 1,
        updated_by: actor.to_owned(),
        updated_at_ms: now_ms(),
    };
    match store.insert_entry(&record).await {
        Ok(()) => Ok(record),
        Err(StoreError::Duplicate { .. }) => {
            Err(OperatorError::Duplicate { name: record.name.clone(), version: record.version.clone() })
        }
        Err(e) => Err(e.into()),
    }
}

/// One version of an entry, or its newest with `version: None` (or `"latest"`).
pub async fn find_entry(store: &Store, name: &str, version: Option<&str>) -> Result<EntryRecord, OperatorError> {
    let version = version.filter(|v| *v != "latest");
    store
        .get_entry(name, version)
        .await?
        .ok_or_else(|| OperatorError::NotFound { name: name.to_owned(), version: version.map(str::to_owned) })
}

/// Approves an entry and its pending (new or quarantined) items.
///
/// With `expected_revision`, the entry must still be at that revision and the approval moves it
/// on, so of two operators approving the same revision exactly one succeeds. Items whose scan
/// findings reach `block` need `override_reason`, which is recorded on their pins.
pub async fn approve_entry(
    store: &Store,
    name: &str,
    version: Option<&str>,
    expected_revision: Option<i64>,
    override_reason: Option<&str>,
    actor: &str,
    block: Severity,
) -> Result<Approved, OperatorError> {
    let e = find_entry(store, name, version).await?;
    if expected_revision.is_some_and(|r| r != e.revision) {
        return Err(OperatorError::Conflict { what: format!("registry entry {} {}", e.name, e.version) });
    }
    let scanner = Scanner::new(&ScanConfig::default());
    let pending: Vec<PinRecord> = store
        .pins(&e.name)
        .await?
        .into_iter()
        .filter(|p| matches!(p.state, PinState::New | PinState::Quarantined))
        .collect();
    let mut blocked = Vec::new();
    for p in &pending {
        if let Some(metadata) = &p.observed_metadata {
            let findings = scanner.scan(metadata);
            if max_severity(&findings).is_some_and(|s| s >= block) {
                blocked.push(BlockedItem { item: pin_key(p), findings });
            }
        }
    }
    if !blocked.is_empty() && override_reason.is_none() {
        return Err(OperatorError::Blocked { block, items: blocked });
    }
    let mut revision = e.revision;
    if e.status != EntryStatus::Approved || expected_revision.is_some() {
        revision = store.set_entry_status(&e.name, &e.version, EntryStatus::Approved, e.revision, actor).await?;
    }
    let mut pinned = 0;
    for p in &pending {
        let Some(hash) = &p.observed_hash else { continue };
        let key = pin_key(p);
        let reason = blocked.iter().any(|b| b.item == key).then_some(override_reason).flatten();
        store.approve_pin(&e.name, p.kind, &p.name, hash, actor, reason, now_ms()).await?;
        pinned += 1;
    }
    Ok(Approved { name: e.name, version: e.version, revision, pinned, overridden: blocked })
}

/// Revokes an entry: the gateway disconnects the server and refuses its calls. Returns the
/// entry as revoked.
pub async fn revoke_entry(
    store: &Store,
    name: &str,
    version: Option<&str>,
    expected_revision: Option<i64>,
    actor: &str,
) -> Result<EntryRecord, OperatorError> {
    let mut e = find_entry(store, name, version).await?;
    let expected = expected_revision.unwrap_or(e.revision);
    e.revision = store.set_entry_status(&e.name, &e.version, EntryStatus::Revoked, expected, actor).await?;
    e.status = EntryStatus::Revoked;
    e.updated_by = actor.to_owned();
    Ok(e)
}

/// The key naming a pinned item, e.g. `tool/lookup`.
/// The documents in an import: one `server.json`, a JSON array of them, or a registry listing
/// (`{"servers": [{"server": …}]}`).
pub fn documents(text: &str) -> Result<Vec<serde_json::Value>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("line {} column {}: {e}", e.line(), e.column()))?;
    Ok(match value {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(ref o) if o.contains_key("servers") => o["servers"]
            .as_array()
            .map(|a| a.iter().map(|s| s.get("server").cloned().unwrap_or_else(|| s.clone())).collect())
            .unwrap_or_default(),
        other => vec![other],
    })
}

/// Why one document of an import was refused.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Refused {
    pub index: usize,
    pub problems: Vec<String>,
}

/// Imports documents as pending entries; each is added or refused on its own.
pub async fn import(store: &Store, docs: Vec<serde_json::Value>, actor: &str) -> (Vec<EntryRecord>, Vec<Refused>) {
    let mut added = Vec::new();
    let mut refused = Vec::new();
    for (index, doc) in docs.into_iter().enumerate() {
        let parsed = serde_json::from_value::<portcullis_registry::server_json::ServerJson>(doc)
            .map_err(|e| vec![e.to_string()])
            .and_then(|s| ServerEntry::from_server(s).map_err(|e| e.problems));
        match parsed {
            Ok(entry) => match add_entry(store, &entry, actor).await {
                Ok(record) => added.push(record),
                Err(e) => refused.push(Refused { index, problems: vec![e.to_string()] }),
            },
            Err(problems) => refused.push(Refused { index, problems }),
        }
    }
    (added, refused)
}

/// The scan's findings for every pinned or observed item of an entry (observed metadata first).
pub async fn scan_entry(store: &Store, name: &str) -> Result<Vec<(String, Vec<Finding>)>, OperatorError> {
    let scanner = Scanner::new(&ScanConfig::default());
    let mut out = Vec::new();
    for p in store.pins(name).await? {
        if let Some(metadata) = p.observed_metadata.as_ref().or(p.approved_metadata.as_ref()) {
            out.push((pin_key(&p), scanner.scan(metadata)));
        }
    }
    Ok(out)
}

pub fn pin_key(p: &PinRecord) -> String {
    pinning::pin_key(item_kind(p.kind), &p.name)
}

/// A readable diff of what awaits approval in a pin (approved → observed metadata).
pub fn pin_diff(p: &PinRecord) -> String {
    let old = p.approved_metadata.clone().unwrap_or(serde_json::Value::Null);
    let new = p.observed_metadata.clone().unwrap_or(serde_json::Value::Null);
    pinning::render(&pinning::diff(&old, &new))
}

/// The registry's item kind of a stored pin kind.
pub fn item_kind(k: PinKind) -> ItemKind {
    match k {
        PinKind::Tool => ItemKind::Tool,
        PinKind::Prompt => ItemKind::Prompt,
        PinKind::ResourceTemplate => ItemKind::ResourceTemplate,
    }
}
