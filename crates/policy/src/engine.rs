//! The decision point: compiled policy sets, evaluated against one request at a time.

use cedar_policy::{Authorizer, Entities};

use crate::decision::{Decision, Outcome, ShadowDecision, reason};
use crate::entity::Prepared;
use crate::index::Bucket;
use crate::policy_set::{Enforcement, PolicySet};
use crate::request::Request;

/// Compiled policy sets, immutable once built; swap a whole engine to reload.
#[derive(Debug)]
pub struct Engine {
    enforced: Vec<PolicySet>,
    shadow: Vec<PolicySet>,
    authorizer: Authorizer,
}

impl Engine {
    /// An engine over `sets`; enforced sets decide together, shadow sets are only reported.
    pub fn new(sets: Vec<PolicySet>) -> Self {
        let (enforced, shadow) = sets.into_iter().partition(|s| s.enforcement() == Enforcement::Enforce);
        Self { enforced, shadow, authorizer: Authorizer::new() }
    }

    /// Decides `request`: any satisfied forbid denies (or asks for approval, when every satisfied
    /// forbid is an approval forbid and a permit is satisfied), else any satisfied permit allows,
    /// else deny.
    pub fn decide(&self, request: &Request<'_>) -> Decision {
        let prepared = match Prepared::new(request) {
            Ok(prepared) => prepared,
            Err(error) => {
                // Not reachable with well-formed inputs; fail closed and say why.
                return Decision {
                    outcome: Outcome::Deny,
                    policies: Vec::new(),
                    reason: reason::NO_PERMIT,
                    errors: vec![error],
                    shadow: Vec::new(),
                    arguments_truncated: false,
                };
            }
        };
        let server = request.resource.server;
        let mut tally = Tally::default();
        for set in &self.enforced {
            tally.evaluate(&self.authorizer, set, server, &prepared);
        }
        let shadow = self
            .shadow
            .iter()
            .map(|set| {
                let mut own = Tally::default();
                own.evaluate(&self.authorizer, set, server, &prepared);
                let (outcome, reason, policies) = own.verdict();
                ShadowDecision { name: set.name().to_owned(), outcome, policies, reason, errors: own.errors }
            })
            .collect();
        let (outcome, reason, policies) = tally.verdict();
        Decision {
            outcome,
            policies,
            reason,
            errors: tally.errors,
            shadow,
            arguments_truncated: prepared.arguments_truncated,
        }
    }

    /// The enforced and shadow sets, in that order.
    pub fn sets(&self) -> impl Iterator<Item = &PolicySet> {
        self.enforced.iter().chain(&self.shadow)
    }
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
    fn evaluate(&mut self, authorizer: &Authorizer, set: &PolicySet, server: &str, prepared: &Prepared) {
        for bucket in set.index.buckets(server, &prepared.item) {
            let Bucket { permits, approvals, forbids } = bucket;
            let entities = &prepared.entities;
            self.run(authorizer, permits.as_ref(), prepared, entities, Slot::Permits);
            self.run(authorizer, approvals.as_ref(), prepared, entities, Slot::Approvals);
            self.run(authorizer, forbids.as_ref(), prepared, entities, Slot::Forbids);
        }
    }

    fn run(
        &mut self,
        authorizer: &Authorizer,
        policies: Option<&cedar_policy::PolicySet>,
        prepared: &Prepared,
        entities: &Entities,
        slot: Slot,
    ) {
        let Some(policies) = policies else { return };
        let response = authorizer.is_authorized(&prepared.request, policies, entities);
        // Each Cedar set holds policies of one effect, so its reasons are exactly the satisfied ones.
        let satisfied = response.diagnostics().reason().map(ToString::to_string);
        match slot {
            Slot::Permits => self.permits.extend(satisfied),
            Slot::Approvals => self.approvals.extend(satisfied),
            Slot::Forbids => self.forbids.extend(satisfied),
        }
        for error in response.diagnostics().errors() {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = error;
            self.errors.push(format!("{}: {}", e.policy_id(), e.inner()));
        }
    }

    /// Outcome, reason and deciding policies.
    fn verdict(&mut self) -> (Outcome, &'static str, Vec<String>) {
        if !self.forbids.is_empty() {
            let mut policies = std::mem::take(&mut self.forbids);
            policies.append(&mut self.approvals);
            policies.sort_unstable();
            return (Outcome::Deny, reason::FORBIDDEN, policies);
        }
        if !self.permits.is_empty() {
            if !self.approvals.is_empty() {
                let mut policies = std::mem::take(&mut self.approvals);
                policies.sort_unstable();
                return (Outcome::ApprovalRequired, reason::APPROVAL_REQUIRED, policies);
            }
            let mut policies = std::mem::take(&mut self.permits);
            policies.sort_unstable();
            return (Outcome::Allow, reason::ALLOWED, policies);
        }
        // An approval would not help: nothing permits the request.
        (Outcome::Deny, reason::NO_PERMIT, Vec::new())
    }
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Permits,
    Approvals,
    Forbids,
}

#[cfg(test)]
mod tests;
