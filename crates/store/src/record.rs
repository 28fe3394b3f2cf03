//! The plain records the store takes and returns (the domain types live in `registry` and `gateway`).

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// A registry entry's approval status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryStatus {
    Pending,
    Approved,
    Revoked,
}

/// One version of a registry entry: its `server.json` document and governance status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryRecord {
    pub name: String,
    pub version: String,
    pub status: EntryStatus,
    /// The `server.json` document, including our governance `_meta`.
    pub document: serde_json::Value,
    /// Bumped on every change of this row; writes name the revision they expect.
    pub revision: i64,
    pub updated_by: String,
    pub updated_at_ms: i64,
}

/// What kind of upstream item a pin covers; ordered as declared (tools first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinKind {
    Tool,
    Prompt,
    ResourceTemplate,
}

/// Where a pinned item stands relative to its approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinState {
    /// Offered with exactly the approved metadata.
    Approved,
    /// Offered with metadata that differs from the approved one.
    Quarantined,
    /// Offered, never approved.
    New,
    /// Approved once, no longer offered.
    Removed,
}

/// The approved and the last observed metadata of one tool, prompt or resource template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PinRecord {
    pub server: String,
    pub kind: PinKind,
    pub name: String,
    pub state: PinState,
    pub approved_hash: Option<String>,
    pub approved_metadata: Option<serde_json::Value>,
    /// Set while the offered metadata awaits approval (state `New` or `Quarantined`).
    pub observed_hash: Option<String>,
    pub observed_metadata: Option<serde_json::Value>,
    pub approved_by: Option<String>,
    pub approved_at_ms: Option<i64>,
    /// Why findings above the blocking severity were approved anyway.
    pub override_reason: Option<String>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

/// What a drift event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftChange {
    New,
    Changed,
    Removed,
    Returned,
}

/// One drift event: an item appeared, changed, disappeared or came back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftRecord {
    /// Assigned by the store; ignored by [`Store::record_drift`](crate::Store::record_drift).
    pub id: i64,
    pub server: String,
    pub kind: PinKind,
    pub name: String,
    pub change: DriftChange,
    pub old_hash: Option<String>,
    pub new_hash: Option<String>,
    /// A readable diff of the metadata.
    pub diff: String,
    /// The poisoning scan's findings.
    pub findings: serde_json::Value,
    pub at_ms: i64,
}

/// What [`Store::observe`](crate::Store::observe) found when comparing an offered item with its pin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Observation {
    /// The approved metadata, as before.
    Unchanged,
    /// Never approved (first sighting, or still awaiting approval).
    New,
    /// Differs from the approval; the pin is now quarantined.
    Changed { approved_hash: String },
    /// Removed before, now offered again with the approved metadata.
    Returned,
}

/// The text a value is stored as, and back.
macro_rules! stored_as_text {
    ($ty:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The stored (and serialized) name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }

            pub(crate) fn parse(text: &str) -> Result<Self, StoreError> {
                match text {
                    $($text => Ok($ty::$variant),)+
                    other => Err(StoreError::Backend(format!("unknown {} {other:?} in the store", $what))),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_as_text!(EntryStatus, "entry status", { Pending => "pending", Approved => "approved", Revoked => "revoked" });
stored_as_text!(PinKind, "pin kind", { Tool => "tool", Prompt => "prompt", ResourceTemplate => "resource_template" });
stored_as_text!(PinState, "pin state", { Approved => "approved", Quarantined => "quarantined", New => "new", Removed => "removed" });
stored_as_text!(DriftChange, "drift change", { New => "new", Changed => "changed", Removed => "removed", Returned => "returned" });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_match_serde_names() {
        for kind in [PinKind::Tool, PinKind::Prompt, PinKind::ResourceTemplate] {
            assert_eq!(serde_json::to_value(kind).ok(), Some(serde_json::json!(kind.as_str())));
            assert_eq!(PinKind::parse(kind.as_str()).ok(), Some(kind));
        }
        for state in [PinState::Approved, PinState::Quarantined, PinState::New, PinState::Removed] {
            assert_eq!(serde_json::to_value(state).ok(), Some(serde_json::json!(state.as_str())));
            assert_eq!(PinState::parse(state.as_str()).ok(), Some(state));
        }
        for status in [EntryStatus::Pending, EntryStatus::Approved, EntryStatus::Revoked] {
            assert_eq!(serde_json::to_value(status).ok(), Some(serde_json::json!(status.as_str())));
            assert_eq!(EntryStatus::parse(status.as_str()).ok(), Some(status));
        }
        for change in [DriftChange::New, DriftChange::Changed, DriftChange::Removed, DriftChange::Returned] {
            assert_eq!(serde_json::to_value(change).ok(), Some(serde_json::json!(change.as_str())));
            assert_eq!(DriftChange::parse(change.as_str()).ok(), Some(change));
        }
        assert!(PinKind::parse("resource").is_err());
    }
}
