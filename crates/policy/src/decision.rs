//! What the policy engine answers.

use std::fmt;

/// The verdict on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Go ahead.
    Allow,
    /// Refuse (and, in the list phase, hide the item).
    Deny,
    /// Ask a human, then decide again with [`ApprovalState::Granted`](crate::ApprovalState::Granted).
    /// In the list phase the item is shown.
    ApprovalRequired,
}

impl Outcome {
    /// The name used in fixtures and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::ApprovalRequired => "approval_required",
        }
    }

    /// Whether an item with this outcome at list time appears in a list result.
    pub fn is_visible(self) -> bool {
        !matches!(self, Self::Deny)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reason codes of [`Decision::reason`].
pub mod reason {
    /// At least one permit was satisfied and no forbid.
    pub const ALLOWED: &str = "allowed";
    /// A forbid without `@reason("approval_required")` was satisfied.
    pub const FORBIDDEN: &str = "forbidden";
    /// No permit was satisfied (default deny).
    pub const NO_PERMIT: &str = "no_permit";
    /// Only `@reason("approval_required")` forbids were satisfied, and a permit was.
    pub const APPROVAL_REQUIRED: &str = "approval_required";
}

/// The engine's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// Ids of the policies that determined the outcome: the satisfied forbids for a deny (or the
    /// approval forbids for approval required), the satisfied permits for an allow; empty for a
    /// default deny. Sorted.
    pub policies: Vec<String>,
    /// One of the [`reason`] codes.
    pub reason: &'static str,
    /// Evaluation errors, as `<policy id>: <message>`; an erring policy counts as not satisfied.
    pub errors: Vec<String>,
    /// What each shadow set would have decided.
    pub shadow: Vec<ShadowDecision>,
    /// Whether some arguments were left out of the evaluation for their size (see `arguments`).
    pub arguments_truncated: bool,
}

/// What a shadow set would have decided; never affects [`Decision::outcome`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowDecision {
    /// The shadow set's name.
    pub name: String,
    pub outcome: Outcome,
    /// As [`Decision::policies`].
    pub policies: Vec<String>,
    /// As [`Decision::reason`].
    pub reason: &'static str,
    /// As [`Decision::errors`].
    pub errors: Vec<String>,
}
