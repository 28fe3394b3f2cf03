//! Policies bucketed by the resource in their scope, so that a decision evaluates only the
//! policies that could apply to its resource.
//!
//! `resource == Tool::"srv/t"` or `resource in Tool::"srv/t"` (any item type) → that item's
//! bucket; `resource in Server::"srv"`, `resource is T in Server::"srv"` or
//! `resource == Server::"srv"` → that server's bucket; anything else → the global bucket.
//! Since an item's only ancestor is its server, a policy outside these three buckets cannot be
//! satisfied by the request, so the buckets decide exactly as the whole set would.
//!
//! The engine merges the buckets of all its sets (enforced and shadow) into one Cedar set per
//! bucket, so a decision runs the authorizer at most three times (global, server, item) however
//! many sets there are. Cedar reports only the satisfied forbids when a forbid is satisfied, and
//! we need every satisfied policy of each kind (a permit decides whether an approval forbid asks
//! or denies), so every policy is evaluated in its permit form ([`Rule::test`]: same scope, same
//! conditions, effect permit): the response's reasons are then exactly the satisfied policies.
//! Within a bucket, policies carry internal ids (their position in [`ScopeIndex::rules`]) so
//! that sets may reuse each other's ids; [`Rule`] maps them back to set, role and id.

use std::collections::HashMap;

use cedar_policy::{Effect, EntityUid, Policy, PolicyId, ResourceConstraint};

use crate::context_use::ContextUse;
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

/// Where a policy goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    Global,
    Server(String),
    Item(EntityUid),
}

impl Scope {
    /// The bucket of `policy`, by its resource constraint.
    pub(crate) fn of(policy: &Policy) -> Self {
        let target = match policy.resource_constraint() {
            ResourceConstraint::Eq(uid) | ResourceConstraint::In(uid) | ResourceConstraint::IsIn(_, uid) => uid,
            ResourceConstraint::Any | ResourceConstraint::Is(_) => return Self::Global,
        };
        let type_name = target.type_name().to_string();
        if type_name == entity::SERVER {
            Self::Server(target.id().unescaped().to_owned())
        } else if entity::ITEM_TYPES.contains(&type_name.as_str()) {
            Self::Item(target)
        } else {
            Self::Global
        }
    }
}

/// One compiled policy, ready for an engine's index.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// The policy's id (`@id`, or `<source>#<index>`).
    pub(crate) id: String,
    pub(crate) role: Role,
    pub(crate) scope: Scope,
    /// The policy as a permit with the same scope and conditions: satisfied exactly when the
    /// policy is, and reported by Cedar whatever else is satisfied.
    pub(crate) test: Policy,
    /// The context attributes the policy reads.
    pub(crate) reads: ContextUse,
}

impl Rule {
    /// The rule of `policy`, whose id is final; fails only if Cedar cannot restate the policy.
    pub(crate) fn new(policy: Policy) -> Result<Self, String> {
        let json = policy.to_json().map_err(|e| e.to_string())?;
        let reads = ContextUse::of(&json);
        let test = as_permit(&policy, json)?;
        Ok(Self { id: policy.id().to_string(), role: Role::of(&policy), scope: Scope::of(&policy), test, reads })
    }
}

/// `policy`, whose Cedar JSON form is `json`, as a permit. The JSON form keeps scope, conditions
/// and annotations and drops source positions, which nothing at decision time reports and
/// which make evaluation slower (each evaluated node copies its position).
fn as_permit(policy: &Policy, mut json: serde_json::Value) -> Result<Policy, String> {
    let Some(effect) = json.get_mut("effect") else {
        return Err("cedar's json form of the policy has no effect".to_owned());
    };
    *effect = serde_json::Value::from("permit");
    let restated = Policy::from_json(Some(policy.id().clone()), json).map_err(|e| e.to_string())?;
    if restated.effect() != Effect::Permit {
        return Err("cedar's json form of the policy did not become a permit".to_owned());
    }
    Ok(restated)
}

/// Where a satisfied policy of a merged bucket came from.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// The position of its set among the engine's sets (enforced first, then shadow).
    pub(crate) set: usize,
    pub(crate) role: Role,
    /// The policy's own id.
    pub(crate) id: String,
}

/// The permit forms of a bucket's policies, as one Cedar set.
#[derive(Debug)]
pub(crate) struct Bucket {
    pub(crate) policies: cedar_policy::PolicySet,
    /// The context attributes its policies read.
    pub(crate) reads: ContextUse,
}

impl Bucket {
    /// The bucket of `rules`, each with its internal id.
    fn new(rules: Vec<(usize, &Rule)>) -> Result<Self, String> {
        let reads = rules.iter().fold(ContextUse::default(), |reads, (_, rule)| reads.union(rule.reads));
        let policies = rules.into_iter().map(|(id, rule)| rule.test.new_id(PolicyId::new(id.to_string())));
        // Internal ids are positions, so unique: this cannot fail, but would be reported.
        let policies = cedar_policy::PolicySet::from_policies(policies).map_err(|e| format!("policy index: {e}"))?;
        Ok(Self { policies, reads })
    }
}

/// The buckets of every set of an engine.
#[derive(Debug, Default)]
pub(crate) struct ScopeIndex {
    /// By internal policy id.
    rules: Vec<Origin>,
    global: Option<Bucket>,
    servers: HashMap<String, Bucket>,
    items: HashMap<EntityUid, Bucket>,
}

impl ScopeIndex {
    /// Merges the rules of `sets` (in engine order) by bucket.
    pub(crate) fn build<'r>(sets: impl IntoIterator<Item = &'r [Rule]>) -> Result<Self, String> {
        let mut rules = Vec::new();
        let mut global = Vec::new();
        let mut servers: HashMap<String, Vec<(usize, &Rule)>> = HashMap::new();
        let mut items: HashMap<EntityUid, Vec<(usize, &Rule)>> = HashMap::new();
        for (set, set_rules) in sets.into_iter().enumerate() {
            for rule in set_rules {
                // The rule's internal id is its position in `rules`.
                let numbered = (rules.len(), rule);
                rules.push(Origin { set, role: rule.role, id: rule.id.clone() });
                match &rule.scope {
                    Scope::Global => global.push(numbered),
                    Scope::Server(name) => servers.entry(name.clone()).or_default().push(numbered),
                    Scope::Item(uid) => items.entry(uid.clone()).or_default().push(numbered),
                }
            }
        }
        Ok(Self {
            rules,
            global: if global.is_empty() { None } else { Some(Bucket::new(global)?) },
            servers: servers.into_iter().map(|(k, v)| Ok((k, Bucket::new(v)?))).collect::<Result<_, String>>()?,
            items: items.into_iter().map(|(k, v)| Ok((k, Bucket::new(v)?))).collect::<Result<_, String>>()?,
        })
    }

    /// The buckets that apply to an item of `server` with entity uid `item`.
    pub(crate) fn buckets<'s>(&'s self, server: &str, item: &EntityUid) -> [Option<&'s Bucket>; 3] {
        [self.global.as_ref(), self.servers.get(server), self.items.get(item)]
    }

    /// The origin of the policy with internal id `id`.
    pub(crate) fn origin(&self, id: &PolicyId) -> Option<&Origin> {
        let position: usize = AsRef::<str>::as_ref(id).parse().ok()?;
        self.rules.get(position)
    }

    /// How many buckets there are besides the global one (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn scoped_len(&self) -> (usize, usize) {
        (self.servers.len(), self.items.len())
    }
}
