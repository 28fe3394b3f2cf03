//! Policies bucketed by the resource in their scope, so that a decision evaluates only the
//! policies that could apply to its resource.
//!
//! `resource == Tool::"srv/t"` or `resource in Tool::"srv/t"` (any item type) → that item's
//! bucket; `resource in Server::"srv"`, `resource is T in Server::"srv"` or
//! `resource == Server::"srv"` → that server's bucket; anything else → the global bucket.
//! Since an item's only ancestor is its server, a policy outside these three buckets cannot be
//! satisfied by the request, so the buckets decide exactly as the whole set would.
//!
//! Each bucket is kept as three Cedar sets — permits, approval forbids and other forbids — so
//! that one evaluation of each yields every satisfied policy of each kind (Cedar reports only
//! the forbids when a forbid is satisfied, and we also need to know whether a permit is).

use std::collections::HashMap;

use cedar_policy::{Effect, EntityUid, Policy, ResourceConstraint};

use crate::entity;

/// The annotation that marks a forbid as curable by a human's approval.
pub(crate) const REASON_ANNOTATION: &str = "reason";
/// The value of [`REASON_ANNOTATION`] for approval forbids.
pub(crate) const APPROVAL_REQUIRED: &str = "approval_required";

/// How a policy takes part in a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Permit,
    /// A forbid annotated `@reason("approval_required")`.
    Approval,
    Forbid,
}

impl Role {
    pub(crate) fn of(policy: &Policy) -> Self {
        match policy.effect() {
            Effect::Permit => Self::Permit,
            Effect::Forbid if policy.annotation(REASON_ANNOTATION) == Some(APPROVAL_REQUIRED) => Self::Approval,
            Effect::Forbid => Self::Forbid,
        }
    }
}

/// The policies of one bucket, by role.
#[derive(Debug, Clone, Default)]
pub(crate) struct Bucket {
    pub(crate) permits: Option<cedar_policy::PolicySet>,
    pub(crate) approvals: Option<cedar_policy::PolicySet>,
    pub(crate) forbids: Option<cedar_policy::PolicySet>,
}

impl Bucket {
    fn build(policies: Vec<Policy>) -> Self {
        let mut by_role: [Vec<Policy>; 3] = Default::default();
        for policy in policies {
            let slot = match Role::of(&policy) {
                Role::Permit => 0,
                Role::Approval => 1,
                Role::Forbid => 2,
            };
            by_role[slot].push(policy);
        }
        let [permits, approvals, forbids] = by_role.map(|policies| {
            // Ids are unique within a set (checked at compile), so this cannot fail.
            (!policies.is_empty()).then(|| cedar_policy::PolicySet::from_policies(policies).ok()).flatten()
        });
        Self { permits, approvals, forbids }
    }
}

/// A policy set's buckets.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScopeIndex {
    pub(crate) global: Bucket,
    pub(crate) servers: HashMap<String, Bucket>,
    pub(crate) items: HashMap<EntityUid, Bucket>,
}

/// Where a policy goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scope {
    Global,
    Server(String),
    Item(EntityUid),
}

fn scope_of(policy: &Policy) -> Scope {
    let target = match policy.resource_constraint() {
        ResourceConstraint::Eq(uid) | ResourceConstraint::In(uid) | ResourceConstraint::IsIn(_, uid) => uid,
        ResourceConstraint::Any | ResourceConstraint::Is(_) => return Scope::Global,
    };
    let type_name = target.type_name().to_string();
    if type_name == entity::SERVER {
        Scope::Server(target.id().unescaped().to_owned())
    } else if entity::ITEM_TYPES.contains(&type_name.as_str()) {
        Scope::Item(target)
    } else {
        Scope::Global
    }
}

impl ScopeIndex {
    /// Buckets `policies`, whose ids must be unique.
    pub(crate) fn build(policies: &[Policy]) -> Self {
        let mut global = Vec::new();
        let mut servers: HashMap<String, Vec<Policy>> = HashMap::new();
        let mut items: HashMap<EntityUid, Vec<Policy>> = HashMap::new();
        for policy in policies {
            match scope_of(policy) {
                Scope::Global => global.push(policy.clone()),
                Scope::Server(name) => servers.entry(name).or_default().push(policy.clone()),
                Scope::Item(uid) => items.entry(uid).or_default().push(policy.clone()),
            }
        }
        Self {
            global: Bucket::build(global),
            servers: servers.into_iter().map(|(k, v)| (k, Bucket::build(v))).collect(),
            items: items.into_iter().map(|(k, v)| (k, Bucket::build(v))).collect(),
        }
    }

    /// The buckets that apply to an item of `server` with entity id `item`.
    pub(crate) fn buckets<'s>(&'s self, server: &str, item: &EntityUid) -> impl Iterator<Item = &'s Bucket> {
        [Some(&self.global), self.servers.get(server), self.items.get(item)].into_iter().flatten()
    }

    /// How many buckets there are besides the global one (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn scoped_len(&self) -> (usize, usize) {
        (self.servers.len(), self.items.len())
    }
}
