//! The decision point: compiled policy sets, evaluated against one request at a time.

use std::sync::Arc;

use cedar_policy::{Authorizer, EntityUid};

use crate::arguments::Arguments;
use crate::cache::{Cache, DecisionFacts, DecisionKey};
use crate::context_use::ContextUse;
use crate::decision::{Decision, Outcome, ShadowDecision, reason};
use crate::entity::{self, PartiesCache, Prepared};
use crate::index::{Bucket, Role, ScopeIndex};
use crate::policy_set::{Enforcement, PolicySet};
use crate::request::{Phase, Request};

/// How many decisions an engine keeps (each a few hundred bytes).
const DECISIONS_CAPACITY: usize = 4096;

/// Compiled policy sets, immutable once built; swap a whole engine to reload.
///
/// Shared across threads. It keeps bounded caches of what decisions repeat, behind locks held
/// only for a lookup or an insert: the Cedar entities of principals, items and (principal,
/// item) pairs, and whole decisions, found by everything their policies can observe — so a
/// cached decision is the decision (see `cache` and `context_use`). Reloading swaps the engine,
/// and its caches with it.
#[derive(Debug)]
pub struct Engine {
    enforced: Vec<PolicySet>,
    shadow: Vec<PolicySet>,
    /// The buckets of every set, merged; an error (not reachable) makes every decision deny.
    index: Result<ScopeIndex, String>,
    authorizer: Authorizer,
    parties: PartiesCache,
    /// Shared, so that a hit copies the decision outside the cache's lock.
    decisions: Cache<DecisionKey, Arc<Decision>>,
}

impl Engine {
    /// An engine over `sets`; enforced sets decide together, shadow sets are only reported.
    pub fn new(sets: Vec<PolicySet>) -> Self {
        let (enforced, shadow): (Vec<_>, Vec<_>) =
            sets.into_iter().partition(|s| s.enforcement() == Enforcement::Enforce);
        let index = ScopeIndex::build(enforced.iter().chain(&shadow).map(|s| s.rules.as_slice()));
        Self {
            enforced,
            shadow,
            index,
            authorizer: Authorizer::new(),
            parties: PartiesCache::default(),
            decisions: Cache::new(DECISIONS_CAPACITY),
        }
    }

    /// Decides `request`: any satisfied forbid denies (or asks for approval, when every satisfied
    /// forbid is an approval forbid and a permit is satisfied), else any satisfied permit allows,
    /// else deny.
    pub fn decide(&self, request: &Request<'_>) -> Decision {
        let index = match &self.index {
            Ok(index) => index,
            Err(error) => return fail_closed(error.clone()),
        };
        let item = entity::item_uid(request);
        let buckets = index.buckets(request.resource.server, &item);
        let reads = buckets.iter().flatten().fold(ContextUse::default(), |reads, b| reads.union(b.reads));
        // Arguments are not part of a cached decision's key: only requests whose policies do not
        // read the arguments they have are cached. Nor is a call whose policies read the
        // session's call count, which every call changes.
        let truncated = match entity::arguments_of(request) {
            _ if reads.session_calls && request.context.phase == Phase::Use => None,
            None => Some(false),
            Some(_) if reads.arguments => None,
            Some(arguments) => Some(Arguments::would_truncate(Some(arguments))),
        };
        let memo = truncated.map(|truncated| {
            let facts = DecisionFacts::of(request, reads, truncated);
            (self.decisions.hash(&facts), facts)
        });
        if let Some((hash, facts)) = &memo
            && let Some(found) = self.decisions.get(*hash, |key| key.facts() == *facts)
        {
            return Decision::clone(&found);
        }
        let decision = match self.evaluate(request, index, &item, buckets, reads) {
            Ok(decision) => decision,
            Err(error) => return fail_closed(error),
        };
        if let Some((hash, facts)) = memo {
            self.decisions.insert(hash, DecisionKey::of(&facts), Arc::new(decision.clone()));
        }
        decision
    }

    /// The enforced and shadow sets, in that order.
    pub fn sets(&self) -> impl Iterator<Item = &PolicySet> {
        self.enforced.iter().chain(&self.shadow)
    }

    /// Evaluates `buckets` (those of `item`, whose policies read `reads`) for `request`.
    fn evaluate(
        &self,
        request: &Request<'_>,
        index: &ScopeIndex,
        item: &EntityUid,
        buckets: [Option<&Bucket>; 3],
        reads: ContextUse,
    ) -> Result<Decision, String> {
        let prepared = Prepared::new(request, item, reads, &self.parties)?;
        let mut tallies: Vec<Tally> = std::iter::repeat_with(Tally::default).take(1 + self.shadow.len()).collect();
        let (enforced, shadows) = (self.enforced.len(), self.shadow.len());
        for bucket in buckets.into_iter().flatten() {
            let response =
                self.authorizer.is_authorized(&prepared.request, &bucket.policies, &prepared.parties.entities);
            // Every policy is evaluated as a permit, so the reasons are every satisfied policy.
            for id in response.diagnostics().reason() {
                match index.origin(id) {
                    Some(origin) => tallies[tally_of(origin.set, enforced, shadows)].add(origin.role, &origin.id),
                    // Not reachable (internal ids are positions); fail closed.
                    None => tallies[0].add(Role::Forbid, id.as_ref()),
                }
            }
            for error in response.diagnostics().errors() {
                let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = error;
                let (slot, id) = match index.origin(e.policy_id()) {
                    Some(origin) => (tally_of(origin.set, enforced, shadows), origin.id.as_str()),
                    None => (0, "?"),
                };
                tallies[slot].errors.push(format!("{id}: {}", e.inner()));
            }
        }
        let mut tallies = tallies.into_iter();
        let tally = tallies.next().unwrap_or_default();
        let shadow = self
            .shadow
            .iter()
            .zip(tallies)
            .map(|(set, own)| {
                let (outcome, reason, policies, errors) = own.verdict();
                ShadowDecision { name: set.name().to_owned(), outcome, policies, reason, errors }
            })
            .collect();
        let (outcome, reason, policies, errors) = tally.verdict();
        Ok(Decision { outcome, policies, reason, errors, shadow, arguments_truncated: prepared.arguments_truncated })
    }
}

/// A denial for a request that could not be evaluated (not reachable with well-formed inputs).
fn fail_closed(error: String) -> Decision {
    Decision {
        outcome: Outcome::Deny,
        policies: Vec::new(),
        reason: reason::NO_PERMIT,
        errors: vec![error],
        shadow: Vec::new(),
        arguments_truncated: false,
    }
}

/// The tally of the set at `set` (in engine order): all enforced sets share the first one, and
/// each of the `shadows` shadow sets has its own.
fn tally_of(set: usize, enforced: usize, shadows: usize) -> usize {
    if set < enforced { 0 } else { (1 + set - enforced).min(shadows) }
}

/// The satisfied policies of one or more sets, by role.
#[derive(Debug, Default)]
struct Tally {
    permits: Vec<String>,
    approvals: Vec<String>,
    forbids: Vec<String>,
    errors: Vec<String>,
}

impl Tally {
    fn add(&mut self, role: Role, id: &str) {
        let ids = match role {
            Role::Permit => &mut self.permits,
            Role::Approval => &mut self.approvals,
            Role::Forbid => &mut self.forbids,
        };
        ids.push(id.to_owned());
    }

    /// Outcome, reason, deciding policies and errors.
    fn verdict(mut self) -> (Outcome, &'static str, Vec<String>, Vec<String>) {
        // Cedar reports errors in no particular order.
        self.errors.sort_unstable();
        if !self.forbids.is_empty() {
            let mut policies = self.forbids;
            policies.append(&mut self.approvals);
            policies.sort_unstable();
            return (Outcome::Deny, reason::FORBIDDEN, policies, self.errors);
        }
        if !self.permits.is_empty() {
            if !self.approvals.is_empty() {
                let mut policies = self.approvals;
                policies.sort_unstable();
                return (Outcome::ApprovalRequired, reason::APPROVAL_REQUIRED, policies, self.errors);
            }
            let mut policies = self.permits;
            policies.sort_unstable();
            return (Outcome::Allow, reason::ALLOWED, policies, self.errors);
        }
        // An approval would not help: nothing permits the request.
        (Outcome::Deny, reason::NO_PERMIT, Vec::new(), self.errors)
    }
}

#[cfg(test)]
mod tests;
