//! The registry control: only servers approved in the registry are connected,
//! and only tool, prompt and resource-template metadata that was pinned at
//! approval is served. A changed or new item is quarantined (hidden and
//! uncallable) until an operator approves it; every drift is recorded with a
//! readable diff and the poisoning scan's findings.
//!
//! The store is the source of truth (several replicas may share it, and the CLI
//! writes it); the gateway keeps a snapshot in memory and reloads it when the
//! store's revision moves, so the hot path never waits on the database.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_registry::model::{DataClass, Governance, RiskTier};
use portcullis_registry::pinning::{self, ItemKind, Observed};
use portcullis_registry::scan::{Finding, Scanner, Severity, max_severity};
use portcullis_registry::server_json::ServerEntry;
use portcullis_store::{
    DriftChange, DriftRecord, EntryRecord, EntryStatus, Observation, PinKind, PinState, Store, StoreError,
};

use crate::error::{Denied, Detail};

/// How the registry is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only approved servers are connected; only pinned metadata is served.
    Enforce,
    /// Everything is connected and served; what would have been refused is recorded.
    Audit,
    /// No registry (development).
    Off,
}

/// The `[registry]` settings.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    pub mode: Mode,
    /// `sqlite://…` or `postgres://…`.
    pub store: String,
    /// `server.json` documents imported (and approved) at start when absent from the store.
    pub seed: Vec<PathBuf>,
    /// How often every upstream's lists are observed again, for drift without list-changed.
    pub rescan_interval: Duration,
    /// Findings at or above this severity block approval without an explicit override.
    pub block_severity: Severity,
}

/// What the registry records of one item, as the controls need it.
#[derive(Debug, Clone)]
pub struct ItemFacts {
    pub risk_tier: RiskTier,
    pub data_class: DataClass,
    pub environment: String,
    /// The registry entry (name and approved version) that governs the server.
    pub entry: String,
    pub entry_version: String,
}

/// What the registry says of one upstream.
#[derive(Debug, Clone)]
struct EntryView {
    name: String,
    version: String,
    status: EntryStatus,
    governance: Governance,
}

#[derive(Debug, Clone)]
struct PinView {
    state: PinState,
    approved_hash: Option<String>,
    observed_hash: Option<String>,
}

/// The registry as of one store revision.
#[derive(Default)]
struct Snapshot {
    revision: i64,
    /// The approved entry (else the newest) governing each upstream, by upstream name.
    entries: HashMap<String, EntryView>,
    /// Pins by registry entry name, then (kind, item name).
    pins: HashMap<String, HashMap<(ItemKind, String), PinView>>,
}

/// The registry control.
pub struct Registry {
    settings: RegistrySettings,
    store: Store,
    scanner: Scanner,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Observations already written since the last reload (so a list does not write twice).
    written: Mutex<HashSet<(String, ItemKind, String, String)>>,
    /// The hash this process last observed for each item, by upstream: a call is allowed only
    /// when it equals the approved pin (so a change is refused even before the store reloads,
    /// and nothing is callable on a stale approval before its current metadata was seen).
    verified: Mutex<HashMap<String, ItemHashes>>,
    /// Name and pin hash of each distinct item text seen (see [`Registry::hashed`]).
    hashes: Mutex<HashMemo>,
    /// Where quarantines are recorded.
    auditor: std::sync::OnceLock<Arc<crate::audit::Auditor>>,
}

/// Name and pin hash by (kind, exact item text).
type HashMemo = HashMap<(ItemKind, Box<str>), (String, String)>;

/// How many distinct item texts the hash memo keeps before starting over.
const HASH_MEMO_LIMIT: usize = 8192;

/// The hash last observed of each item of one upstream.
type ItemHashes = HashMap<(ItemKind, String), String>;

/// The refusal reason of a call whose item was not observed yet by this process; the caller
/// observes the upstream's lists and asks again.
pub const UNVERIFIED: &str = "not_verified";

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn pin_kind(kind: ItemKind) -> PinKind {
    match kind {
        ItemKind::Tool => PinKind::Tool,
        ItemKind::Prompt => PinKind::Prompt,
        ItemKind::ResourceTemplate => PinKind::ResourceTemplate,
    }
}

fn item_kind(kind: PinKind) -> ItemKind {
    match kind {
        PinKind::Tool => ItemKind::Tool,
        PinKind::Prompt => ItemKind::Prompt,
        PinKind::ResourceTemplate => ItemKind::ResourceTemplate,
    }
}

impl Registry {
    /// Opens the store, imports the seed documents, and loads the first snapshot.
    pub async fn open(settings: RegistrySettings) -> Result<Arc<Self>, String> {
        let store = Store::connect(&settings.store).await.map_err(|e| format!("registry store: {e}"))?;
        let registry = Arc::new(Self {
            scanner: Scanner::new(&Default::default()),
            settings,
            store,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            written: Mutex::new(HashSet::new()),
            verified: Mutex::new(HashMap::new()),
            hashes: Mutex::new(HashMap::new()),
            auditor: std::sync::OnceLock::new(),
        });
        registry.seed().await?;
        registry.reload().await.map_err(|e| format!("registry store: {e}"))?;
        Ok(registry)
    }

    /// Records quarantines in this audit trail from now on.
    pub fn set_auditor(&self, auditor: Arc<crate::audit::Auditor>) {
        let _ = self.auditor.set(auditor);
    }

    /// The store revision of the snapshot in force.
    pub fn revision(&self) -> i64 {
        self.current().revision
    }

    /// The enforcement mode.
    pub fn mode(&self) -> Mode {
        self.settings.mode
    }

    /// The store (for the operator interface).
    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn seed(&self) -> Result<(), String> {
        for path in &self.settings.seed {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let entry = ServerEntry::import(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let record = EntryRecord {
                name: entry.server.name.clone(),
                version: entry.server.version.clone(),
                status: EntryStatus::Approved,
                document: entry.export(),
                revision: 1,
                updated_by: format!("seed:{}", path.display()),
                updated_at_ms: now_ms(),
            };
            match self.store.insert_entry(&record).await {
                Ok(()) => {
                    tracing::info!(entry = %record.name, version = %record.version, "registry entry seeded and approved")
                }
                Err(StoreError::Duplicate { .. }) => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Ok(())
    }

    /// Reloads the snapshot if the store changed; returns whether it did.
    pub async fn reload(&self) -> Result<bool, StoreError> {
        let revision = self.store.registry_revision().await?;
        if revision == self.current().revision && revision != 0 {
            return Ok(false);
        }
        let mut entries: HashMap<String, EntryView> = HashMap::new();
        for record in self.store.list_entries().await? {
            let Ok(entry) = ServerEntry::from_server(match serde_json::from_value(record.document.clone()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(entry = %record.name, error = %e, "unreadable registry document; ignored");
                    continue;
                }
            }) else {
                continue;
            };
            let view = EntryView {
                name: record.name.clone(),
                version: record.version.clone(),
                status: record.status,
                governance: entry.governance,
            };
            // An approved version governs; among several, the last listed (newest) wins.
            let replace = match entries.get(&view.governance.upstream) {
                None => true,
                Some(existing) => existing.status != EntryStatus::Approved || view.status == EntryStatus::Approved,
            };
            if replace {
                entries.insert(view.governance.upstream.clone(), view);
            }
        }
        let mut pins = HashMap::new();
        for entry in entries.values() {
            let mut map = HashMap::new();
            for p in self.store.pins(&entry.name).await? {
                map.insert(
                    (item_kind(p.kind), p.name.clone()),
                    PinView { state: p.state, approved_hash: p.approved_hash, observed_hash: p.observed_hash },
                );
            }
            pins.insert(entry.name.clone(), map);
        }
        *self.snapshot.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Arc::new(Snapshot { revision, entries, pins });
        self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        Ok(true)
    }

    fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Whether an upstream may be connected and used: `Ok` or the refusal (which audit mode
    /// only records).
    pub fn admission(&self, upstream: &str) -> Result<(), Denied> {
        if self.settings.mode == Mode::Off {
            return Ok(());
        }
        let snapshot = self.current();
        let refusal = match snapshot.entries.get(upstream) {
            Some(e) if e.status == EntryStatus::Approved => return Ok(()),
            Some(e) => Denied {
                stage: "registry",
                reason: "server_not_approved",
                message: format!(
                    "server '{upstream}' ({} {}) is {:?} in the registry, not approved",
                    e.name, e.version, e.status
                )
                .to_lowercase(),
                detail: Detail::None,
            },
            None => Denied {
                stage: "registry",
                reason: "server_not_registered",
                message: format!("server '{upstream}' has no registry entry"),
                detail: Detail::None,
            },
        };
        self.refuse(refusal)
    }

    /// What the registry records of an upstream's item (tool, prompt or resource), for the
    /// controls: its risk tier (the tool's own when the entry names one), data class, environment.
    pub fn facts(&self, upstream: &str, item: &str) -> Option<ItemFacts> {
        let snapshot = self.current();
        let e = snapshot.entries.get(upstream)?;
        Some(ItemFacts {
            risk_tier: e.governance.tool_tier(item),
            data_class: e.governance.data_classification,
            environment: e.governance.environment.clone(),
            entry: e.name.clone(),
            entry_version: e.version.clone(),
        })
    }

    /// Whether a named tool or prompt of an upstream may be called.
    pub fn check_call(&self, upstream: &str, kind: ItemKind, name: &str) -> Result<(), Denied> {
        if self.settings.mode == Mode::Off {
            return Ok(());
        }
        self.admission(upstream)?;
        let snapshot = self.current();
        let Some(entry) = snapshot.entries.get(upstream) else { return Ok(()) };
        let pin = snapshot.pins.get(&entry.name).and_then(|p| p.get(&(kind, name.to_owned())));
        let seen = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(upstream)
            .and_then(|items| items.get(&(kind, name.to_owned())).cloned());
        // The approved registry document's own pin approves exactly this metadata, even before the
        // approval it causes is back in the snapshot.
        if entry.status == EntryStatus::Approved
            && let Some(hash) = &seen
            && entry.governance.pins.get(&pinning::pin_key(kind, name)) == Some(hash)
        {
            return Ok(());
        }
        let refusal = match pin {
            Some(p) if p.state == PinState::Approved && p.approved_hash.is_some() => match seen {
                Some(hash) if p.approved_hash.as_deref() == Some(hash.as_str()) => return Ok(()),
                Some(_) => Denied {
                    stage: "registry",
                    reason: "quarantined",
                    message: format!(
                        "{kind} '{name}' changed since it was approved and is quarantined until re-approved"
                    ),
                    detail: Detail::None,
                },
                None => Denied {
                    stage: "registry",
                    reason: UNVERIFIED,
                    message: format!(
                        "{kind} '{name}' is not offered by the server (its metadata could not be verified)"
                    ),
                    detail: Detail::None,
                },
            },
            Some(p) if p.state == PinState::Quarantined => Denied {
                stage: "registry",
                reason: "quarantined",
                message: format!("{kind} '{name}' changed since it was approved and is quarantined until re-approved"),
                detail: Detail::None,
            },
            Some(p) if p.state == PinState::Removed => Denied {
                stage: "registry",
                reason: "removed",
                message: format!("{kind} '{name}' is no longer offered by the server"),
                detail: Detail::None,
            },
            // Nothing known of the item yet (no pin, not seen since the upstream connected, as
            // right after start): observe the upstream before deciding.
            None if seen.is_none() => Denied {
                stage: "registry",
                reason: UNVERIFIED,
                message: format!("{kind} '{name}' is not offered by the server (its metadata could not be verified)"),
                detail: Detail::None,
            },
            _ => Denied {
                stage: "registry",
                reason: "not_approved",
                message: format!("{kind} '{name}' has not been approved"),
                detail: Detail::None,
            },
        };
        self.refuse(refusal)
    }

    fn refuse(&self, denied: Denied) -> Result<(), Denied> {
        if self.settings.mode == Mode::Audit {
            tracing::warn!(target: "portcullis::registry", reason = denied.reason, "{} (audit mode: allowed)", denied.message);
            return Ok(());
        }
        Err(denied)
    }

    /// Observes one listed item: served if its metadata is the approved one; otherwise
    /// recorded (with a diff and scan findings) and, in enforce mode, hidden.
    pub async fn admit_item(&self, upstream: &str, kind: ItemKind, item: &serde_json::value::RawValue) -> bool {
        if self.settings.mode == Mode::Off {
            return true;
        }
        let snapshot = self.current();
        let Some(entry) = snapshot.entries.get(upstream) else {
            return self.settings.mode == Mode::Audit;
        };
        let (name, hash) = match self.hashed(kind, item) {
            Some(known) => known,
            None => return false,
        };
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(upstream.to_owned())
            .or_default()
            .insert((kind, name.clone()), hash.clone());
        let pin = snapshot.pins.get(&entry.name).and_then(|p| p.get(&(kind, name)));
        if let Some(p) = pin
            && p.state == PinState::Approved
            && p.approved_hash.as_deref() == Some(hash.as_str())
        {
            return true;
        }
        // Differs from the approval: the full metadata is needed to record it.
        let Some(observed) = serde_json::from_str(item.get()).ok().and_then(|m| Observed::of(kind, m)) else {
            return false;
        };
        let approved_now = self.record(entry, pin, &observed).await;
        approved_now || self.settings.mode == Mode::Audit
    }

    /// Writes an observation that differs from the approval (once per distinct hash) and
    /// returns whether it turned out approved (a pin carried in the registry document).
    async fn record(&self, entry: &EntryView, pin: Option<&PinView>, observed: &Observed) -> bool {
        let key = (entry.name.clone(), observed.kind, observed.name.clone(), observed.hash.clone());
        let first = self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key);
        let already_known = pin.is_some_and(|p| p.observed_hash.as_deref() == Some(observed.hash.as_str()));
        // A pin the (approved) registry document carries approves exactly this metadata, whoever
        // writes the observation: a list racing the start-up observation must not hide it.
        let documented_now = entry.governance.pins.get(&observed.pin_key()).is_some_and(|h| *h == observed.hash);
        if !first || already_known {
            return documented_now && entry.status == EntryStatus::Approved;
        }
        let kind = pin_kind(observed.kind);
        let outcome =
            self.store.observe(&entry.name, kind, &observed.name, &observed.hash, &observed.metadata, now_ms()).await;
        let observation = match outcome {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(entry = %entry.name, error = %e, "cannot record an observation; item withheld");
                return false;
            }
        };
        // A pin carried in the registry document pre-approves exactly this metadata.
        let documented = entry.governance.pins.get(&observed.pin_key()).is_some_and(|h| *h == observed.hash);
        if documented && matches!(observation, Observation::New) {
            let approved = self
                .store
                .approve_pin(&entry.name, kind, &observed.name, &observed.hash, "registry-document", None, now_ms())
                .await;
            if approved.is_ok() {
                tracing::info!(entry = %entry.name, item = %observed.pin_key(), "pinned by the registry document");
                return true;
            }
        }
        let (change, old_hash, old_metadata) = match &observation {
            Observation::Unchanged => return true,
            Observation::Returned => (DriftChange::Returned, None, None),
            Observation::New => (DriftChange::New, None, None),
            Observation::Changed { approved_hash } => {
                let old = self
                    .store
                    .pins(&entry.name)
                    .await
                    .ok()
                    .and_then(|ps| ps.into_iter().find(|p| p.kind == kind && p.name == observed.name))
                    .and_then(|p| p.approved_metadata);
                (DriftChange::Changed, Some(approved_hash.clone()), old)
            }
        };
        let findings = self.scanner.scan(&observed.metadata);
        let diff = pinning::render(&pinning::diff(
            old_metadata.as_ref().unwrap_or(&serde_json::Value::Null),
            &observed.metadata,
        ));
        tracing::warn!(
            target: "portcullis::drift",
            entry = %entry.name,
            item = %observed.pin_key(),
            change = ?change,
            severity = ?max_severity(&findings),
            "metadata differs from the approval; quarantined until approved\n{diff}"
        );
        if let Some(auditor) = self.auditor.get() {
            let kind = portcullis_audit::Kind::DriftQuarantined;
            let body = serde_json::json!({
                "entry": entry.name,
                "kind": observed.kind.as_str(),
                "change": format!("{change:?}").to_lowercase(),
                "approved_hash": old_hash,
                "observed_hash": observed.hash,
                "severity": max_severity(&findings).map(|s| format!("{s:?}").to_lowercase()),
                "findings": findings.len(),
            });
            let entry = portcullis_audit::Entry {
                time_ms: now_ms(),
                kind: kind.as_str().to_owned(),
                correlation: crate::audit::trace::TraceContext::root().trace_id,
                request: crate::audit::trace::span_id(),
                parent: String::new(),
                principal: String::new(),
                server: entry.governance.upstream.clone(),
                item: observed.name.clone(),
                outcome: match change {
                    DriftChange::Changed => "quarantined",
                    DriftChange::New => "unapproved",
                    DriftChange::Removed => "removed",
                    DriftChange::Returned => "returned",
                }
                .to_owned(),
                body: body.to_string(),
            };
            auditor.record(kind, entry).await;
        }
        let drift = DriftRecord {
            id: 0,
            server: entry.name.clone(),
            kind,
            name: observed.name.clone(),
            change,
            old_hash,
            new_hash: Some(observed.hash.clone()),
            diff,
            findings: findings_json(&findings),
            at_ms: now_ms(),
        };
        if let Err(e) = self.store.record_drift(&drift).await {
            tracing::error!(entry = %entry.name, error = %e, "cannot record drift");
        }
        matches!(observation, Observation::Returned)
    }

    /// An item's name and pin hash, memoized by its exact text: a listing repeats the same
    /// bytes, so the parse, canonicalization and SHA-256 are done once per distinct item.
    fn hashed(&self, kind: ItemKind, item: &serde_json::value::RawValue) -> Option<(String, String)> {
        let key = (kind, Box::<str>::from(item.get()));
        if let Some(known) = self.hashes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key) {
            return Some(known.clone());
        }
        let observed = Observed::of(kind, serde_json::from_str(item.get()).ok()?)?;
        let mut memo = self.hashes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if memo.len() >= HASH_MEMO_LIMIT {
            memo.clear();
        }
        memo.insert(key, (observed.name.clone(), observed.hash.clone()));
        Some((observed.name, observed.hash))
    }

    /// Forgets what was observed of an upstream (it restarted or reconnected: its metadata
    /// must be seen again before its tools are callable).
    pub fn forget_observations(&self, upstream: &str) {
        self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(upstream);
    }

    /// Records the items an upstream no longer lists (after a complete listing).
    pub async fn observe_removals(&self, upstream: &str, present: &[(ItemKind, String)]) {
        if self.settings.mode == Mode::Off {
            return;
        }
        let snapshot = self.current();
        let Some(entry) = snapshot.entries.get(upstream) else { return };
        // A pin the registry document carries for something the server does not offer is a
        // stale or mistaken approval: say so (it approves nothing).
        for key in entry.governance.pins.keys() {
            let offered = present.iter().any(|(k, n)| pinning::pin_key(*k, n) == *key);
            if !offered {
                tracing::warn!(target: "portcullis::registry", entry = %entry.name, pin = %key, "the registry document pins an item the server does not offer");
            }
        }
        let present: Vec<(PinKind, String)> = present.iter().map(|(k, n)| (pin_kind(*k), n.clone())).collect();
        match self.store.mark_removed(&entry.name, &present, now_ms()).await {
            Ok(removed) => {
                for p in removed {
                    tracing::warn!(target: "portcullis::drift", entry = %entry.name, item = %pinning::pin_key(item_kind(p.kind), &p.name), "no longer offered");
                    let drift = DriftRecord {
                        id: 0,
                        server: entry.name.clone(),
                        kind: p.kind,
                        name: p.name.clone(),
                        change: DriftChange::Removed,
                        old_hash: p.approved_hash.clone(),
                        new_hash: None,
                        diff: String::new(),
                        findings: serde_json::json!([]),
                        at_ms: now_ms(),
                    };
                    let _ = self.store.record_drift(&drift).await;
                }
            }
            Err(e) => tracing::error!(entry = %entry.name, error = %e, "cannot record removals"),
        }
    }

    /// How often lists are observed again.
    pub fn rescan_interval(&self) -> Duration {
        self.settings.rescan_interval
    }

    /// The severity at which findings block approval.
    pub fn block_severity(&self) -> Severity {
        self.settings.block_severity
    }
}

/// Findings as stored with a drift record.
pub fn findings_json(findings: &[Finding]) -> serde_json::Value {
    serde_json::Value::Array(
        findings
            .iter()
            .map(|f| {
                serde_json::json!({"rule": f.rule, "severity": f.severity, "path": f.path, "excerpt": f.excerpt, "message": f.message})
            })
            .collect(),
    )
}
