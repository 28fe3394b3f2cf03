use std::str::FromStr;

use portcullis_identity::Principal;
use portcullis_registry::model::{DataClass, RiskTier};
use serde_json::{Value, json};

use crate::{
    Action, ApprovalState, Context, Decision, Enforcement, Engine, Outcome, Phase, PolicySet, PolicySource, Request,
    Resource,
};

fn set(name: &str, enforcement: Enforcement, text: &str) -> PolicySet {
    match PolicySet::compile(name, enforcement, &[PolicySource::new(format!("{name}.cedar"), text)]) {
        Ok(set) => set,
        Err(e) => panic!("{e}"),
    }
}

fn user(id: &str, groups: &[&str]) -> Principal {
    let mut p = Principal::local(id, groups.iter().map(|g| (*g).to_owned()).collect());
    p.kind = portcullis_identity::PrincipalKind::User;
    p
}

fn principal(kind: portcullis_identity::PrincipalKind) -> Principal {
    let mut p = Principal::local("someone", Vec::new());
    p.kind = kind;
    p
}

fn tool(server: &'static str, name: &'static str, tier: Option<RiskTier>) -> Resource<'static> {
    Resource { risk_tier: tier, data_class: Some(DataClass::Internal), ..Resource::unregistered(server, name) }
}

fn context(arguments: Option<&Value>) -> Context<'_> {
    Context {
        phase: Phase::Use,
        arguments,
        route: "default",
        now_unix: 0,
        approval: ApprovalState::None,
        session_calls: 0,
    }
}

fn decide(engine: &Engine, principal: &Principal, resource: Resource<'_>, context: Context<'_>) -> Decision {
    engine.decide(&Request { principal, action: Action::CallTool, resource, context })
}

#[test]
fn engine_can_be_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Engine>();
}

#[test]
fn default_set_follows_the_risk_tiers() {
    use Outcome::{Allow, ApprovalRequired as Ask, Deny};
    use portcullis_identity::PrincipalKind::{Anonymous, Local, User, Workload};
    let engine = Engine::new(vec![PolicySet::default_tiers()]);
    let operator_groups = vec!["critical-operators".to_owned()];
    // (kind, in critical-operators, tier, outcome without approval, outcome with approval)
    let table = [
        (Anonymous, false, Some(RiskTier::Low), Allow, Allow),
        (Anonymous, false, Some(RiskTier::Medium), Deny, Deny),
        (Anonymous, false, Some(RiskTier::High), Deny, Deny),
        (Anonymous, false, Some(RiskTier::Critical), Deny, Deny),
        (Anonymous, false, None, Deny, Deny),
        (Workload, false, Some(RiskTier::Low), Allow, Allow),
        (Workload, false, Some(RiskTier::Medium), Allow, Allow),
        (Workload, true, Some(RiskTier::High), Deny, Deny),
        (Workload, true, Some(RiskTier::Critical), Deny, Deny),
        (Workload, true, None, Deny, Deny),
        (User, false, Some(RiskTier::Low), Allow, Allow),
        (User, false, Some(RiskTier::Medium), Allow, Allow),
        (User, false, Some(RiskTier::High), Ask, Allow),
        (User, false, Some(RiskTier::Critical), Deny, Deny),
        (User, true, Some(RiskTier::Critical), Ask, Allow),
        (User, true, None, Deny, Deny),
        (Local, false, Some(RiskTier::Medium), Allow, Allow),
        (Local, false, Some(RiskTier::High), Ask, Allow),
        (Local, false, Some(RiskTier::Critical), Deny, Deny),
        (Local, true, Some(RiskTier::Critical), Ask, Allow),
        (Local, true, None, Deny, Deny),
    ];
    for (kind, operator, tier, without, with) in table {
        let mut who = principal(kind);
        if operator {
            who.groups = operator_groups.clone();
        }
        for (approval, expected) in [(ApprovalState::None, without), (ApprovalState::Granted, with)] {
            let ctx = Context { approval, ..context(None) };
            let decision = decide(&engine, &who, tool("srv", "t", tier), ctx);
            assert_eq!(decision.outcome, expected, "{kind:?} operator={operator} {tier:?} {approval:?}: {decision:?}");
            assert!(decision.errors.is_empty(), "{decision:?}");
        }
    }
}

#[test]
fn default_set_applies_to_prompts_and_resources_too() {
    let engine = Engine::new(vec![PolicySet::default_tiers()]);
    let anonymous = Principal::anonymous();
    for action in [Action::ReadResource, Action::GetPrompt, Action::Complete] {
        for (tier, expected) in [(RiskTier::Low, Outcome::Allow), (RiskTier::Medium, Outcome::Deny)] {
            let resource = tool("docs", "file:///a.md", Some(tier));
            let decision = engine.decide(&Request { principal: &anonymous, action, resource, context: context(None) });
            assert_eq!(decision.outcome, expected, "{action:?} {tier:?}");
        }
    }
}

/// A global forbid, server-scoped and tool-scoped permits and forbids, all interacting.
const SCOPED: &str = r#"
    @id("global-no-anonymous") forbid (principal is Anonymous, action, resource is Tool)
    when { resource.name != "public" };
    @id("global-read-only") permit (principal, action, resource) when { resource.readOnly };
    @id("server-a") permit (principal, action, resource in Server::"a");
    @id("server-a-no-drop") forbid (principal, action, resource is Tool in Server::"a")
    when { resource.destructive };
    @id("tool-b-x") permit (principal, action, resource == Tool::"b/x");
    @id("tool-b-y-alice") permit (principal == User::"alice", action, resource == Tool::"b/y");
    @id("tool-b-y-never-bob") forbid (principal == User::"bob", action, resource == Tool::"b/y");
    @id("tool-a-public") permit (principal, action, resource == Tool::"a/public");
    @id("tool-c-other-action") permit (principal, action == Action::"prompts/get", resource == Tool::"c/z");
"#;

#[test]
fn bucket_index_decides_as_the_whole_set_would() {
    let engine = Engine::new(vec![set("scoped", Enforcement::Enforce, SCOPED)]);
    let flat = cedar_policy::PolicySet::from_str(SCOPED).unwrap_or_else(|e| panic!("{e}"));
    let authorizer = cedar_policy::Authorizer::new();
    let people = [Principal::anonymous(), user("alice", &[]), user("bob", &[])];
    let items = [("a", "t"), ("a", "public"), ("b", "x"), ("b", "y"), ("b", "z"), ("c", "z"), ("d", "w")];
    let mut checked = 0;
    for who in &people {
        for (server, name) in items {
            for (read_only, destructive) in [(None, None), (Some(true), None), (None, Some(true))] {
                let resource = Resource { read_only, destructive, ..tool(server, name, Some(RiskTier::Low)) };
                let request = Request { principal: who, action: Action::CallTool, resource, context: context(None) };
                let indexed = engine.decide(&request);
                let parties = crate::entity::PartiesCache::default();
                let item = crate::entity::item_uid(&request);
                let everything = crate::context_use::ContextUse::ALL;
                let prepared = crate::entity::Prepared::new(&request, &item, everything, &parties)
                    .unwrap_or_else(|e| panic!("{e}"));
                let whole = authorizer.is_authorized(&prepared.request, &flat, &prepared.parties.entities);
                let expected = match whole.decision() {
                    cedar_policy::Decision::Allow => Outcome::Allow,
                    cedar_policy::Decision::Deny => Outcome::Deny,
                };
                assert_eq!(indexed.outcome, expected, "{who} {server}/{name} {read_only:?} {destructive:?}");
                // The flat set names policies by position; map them to their @id.
                let mut reasons: Vec<String> = whole
                    .diagnostics()
                    .reason()
                    .filter_map(|id| flat.annotation(id, "id").map(str::to_owned))
                    .collect();
                reasons.sort();
                assert_eq!(indexed.policies, reasons, "{who} {server}/{name}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 63);
}

#[test]
fn forbids_in_the_global_bucket_override_tool_permits() {
    let engine = Engine::new(vec![set("scoped", Enforcement::Enforce, SCOPED)]);
    let anonymous = Principal::anonymous();
    let decision = decide(&engine, &anonymous, tool("b", "x", None), context(None));
    assert_eq!((decision.outcome, decision.reason), (Outcome::Deny, "forbidden"));
    assert_eq!(decision.policies, ["global-no-anonymous"]);
    let alice = user("alice", &[]);
    let decision = decide(&engine, &alice, tool("b", "y", None), context(None));
    assert_eq!(
        (decision.outcome, decision.policies.as_slice()),
        (Outcome::Allow, ["tool-b-y-alice".to_owned()].as_slice())
    );
    let decision = decide(&engine, &alice, tool("b", "z", None), context(None));
    assert_eq!((decision.outcome, decision.reason, decision.policies.len()), (Outcome::Deny, "no_permit", 0));
}

#[test]
fn shadow_set_reports_a_denial_without_changing_the_outcome() {
    let shadow = set(
        "strict",
        Enforcement::Shadow,
        r#"@id("no-weekends") forbid (principal, action, resource) when { context.time.weekdayUtc >= 6 };"#,
    );
    let engine = Engine::new(vec![PolicySet::default_tiers(), shadow]);
    let saturday = 1_767_398_400; // 2026-01-03T00:00:00Z
    let ctx = Context { now_unix: saturday, ..context(None) };
    let decision = decide(&engine, &Principal::anonymous(), tool("w", "f", Some(RiskTier::Low)), ctx);
    assert_eq!(decision.outcome, Outcome::Allow);
    assert_eq!(decision.policies, ["tier-low-anyone"]);
    assert_eq!(decision.shadow.len(), 1);
    let would = &decision.shadow[0];
    assert_eq!((would.name.as_str(), would.outcome, would.reason), ("strict", Outcome::Deny, "forbidden"));
    assert_eq!(would.policies, ["no-weekends"]);
}

#[test]
fn enforced_sets_combine_and_a_forbid_anywhere_wins() {
    let extra = set(
        "extra",
        Enforcement::Enforce,
        r#"@id("no-prod-writes") forbid (principal, action, resource) when { resource.environment == "production" && !resource.readOnly };"#,
    );
    let engine = Engine::new(vec![PolicySet::default_tiers(), extra]);
    let alice = user("alice", &[]);
    let prod = Resource { environment: Some("production"), ..tool("gh", "push", Some(RiskTier::Medium)) };
    let decision = decide(&engine, &alice, prod, context(None));
    assert_eq!(
        (decision.outcome, decision.policies.as_slice()),
        (Outcome::Deny, ["no-prod-writes".to_owned()].as_slice())
    );
    let staging = Resource { environment: Some("staging"), ..prod };
    assert_eq!(decide(&engine, &alice, staging, context(None)).outcome, Outcome::Allow);
}

#[test]
fn approval_forbid_asks_then_allows_once_granted() {
    let text = r#"
        @id("refunds") permit (principal is User, action, resource == Tool::"pay/refund");
        @id("big-refunds") @reason("approval_required")
        forbid (principal, action, resource == Tool::"pay/refund")
        when { context.arguments has amount && context.arguments.amount > 100 && context.approval != "granted" };
        @id("no-refunds-to-self") forbid (principal, action, resource == Tool::"pay/refund")
        when { context.arguments has to && context.arguments.to == principal.id };
    "#;
    let engine = Engine::new(vec![set("pay", Enforcement::Enforce, text)]);
    let alice = user("alice", &[]);
    let refund = tool("pay", "refund", Some(RiskTier::High));
    let small = json!({ "amount": 50, "to": "carol" });
    let big = json!({ "amount": 500, "to": "carol" });
    let own = json!({ "amount": 500, "to": "alice" });

    assert_eq!(decide(&engine, &alice, refund, context(Some(&small))).outcome, Outcome::Allow);
    let asked = decide(&engine, &alice, refund, context(Some(&big)));
    assert_eq!((asked.outcome, asked.reason), (Outcome::ApprovalRequired, "approval_required"));
    assert_eq!(asked.policies, ["big-refunds"]);
    let granted = Context { approval: ApprovalState::Granted, ..context(Some(&big)) };
    let approved = decide(&engine, &alice, refund, granted);
    assert_eq!((approved.outcome, approved.policies.as_slice()), (Outcome::Allow, ["refunds".to_owned()].as_slice()));
    // Another forbid makes it a plain denial: no approval can cure it.
    let denied = decide(&engine, &alice, refund, context(Some(&own)));
    assert_eq!((denied.outcome, denied.reason), (Outcome::Deny, "forbidden"));
    assert_eq!(denied.policies, ["big-refunds", "no-refunds-to-self"]);
    // Without any permit, approval would not help either.
    let workload = principal(portcullis_identity::PrincipalKind::Workload);
    let refused = decide(&engine, &workload, refund, context(Some(&big)));
    assert_eq!((refused.outcome, refused.reason), (Outcome::Deny, "no_permit"));
}

/// Permits by argument conditions, each named for what it tests.
const ARGUMENTS: &str = r#"
    @id("number") permit (principal, action, resource == Tool::"s/number")
    when { context.arguments has amount && context.arguments.amount > 1000 };
    @id("like") permit (principal, action, resource == Tool::"s/like")
    when { context.arguments has path && context.arguments.path like "/etc/*" };
    @id("nested") permit (principal, action, resource == Tool::"s/nested")
    when { context.arguments has options.mode && context.arguments.options.mode == "force" };
    @id("set") permit (principal, action, resource == Tool::"s/set")
    when { context.arguments has labels && context.arguments.labels.contains("urgent") };
    @id("decimal") permit (principal, action, resource == Tool::"s/decimal")
    when { context.arguments has price && context.arguments.price.greaterThan(decimal("9.99")) };
    @id("unguarded") permit (principal, action, resource == Tool::"s/unguarded")
    when { context.arguments.amount > 1 };
    @id("truncated") forbid (principal, action, resource) when { context.argumentsTruncated };
    @id("listing") permit (principal, action, resource == Tool::"s/listing") when { context.phase == "list" };
"#;

fn argument_outcome(engine: &Engine, name: &'static str, arguments: Value) -> Decision {
    decide(engine, &user("alice", &[]), tool("s", name, None), context(Some(&arguments)))
}

#[test]
fn policies_condition_on_argument_values() {
    let engine = Engine::new(vec![set("args", Enforcement::Enforce, ARGUMENTS)]);
    let cases = [
        ("number", json!({ "amount": 1500 }), Outcome::Allow),
        ("number", json!({ "amount": 1500.0 }), Outcome::Allow),
        ("number", json!({ "amount": 999 }), Outcome::Deny),
        ("number", json!({ "other": 1500 }), Outcome::Deny),
        ("number", json!({ "amount": null }), Outcome::Deny),
        ("like", json!({ "path": "/etc/passwd" }), Outcome::Allow),
        ("like", json!({ "path": "/home/etc/x" }), Outcome::Deny),
        ("nested", json!({ "options": { "mode": "force", "depth": [1, { "x": true }] } }), Outcome::Allow),
        ("nested", json!({ "options": { "mode": "gentle" } }), Outcome::Deny),
        ("nested", json!({ "options": {} }), Outcome::Deny),
        ("set", json!({ "labels": ["bug", "urgent"] }), Outcome::Allow),
        ("decimal", json!({ "price": 10.5 }), Outcome::Allow),
        ("decimal", json!({ "price": 9.5 }), Outcome::Deny),
    ];
    for (name, arguments, expected) in cases {
        let decision = argument_outcome(&engine, name, arguments.clone());
        assert_eq!(decision.outcome, expected, "{name} {arguments}: {decision:?}");
        assert!(decision.errors.is_empty(), "{name} {arguments}: {decision:?}");
        assert!(!decision.arguments_truncated);
    }
}

#[test]
fn an_unguarded_missing_argument_is_an_error_and_the_policy_is_skipped() {
    let engine = Engine::new(vec![set("args", Enforcement::Enforce, ARGUMENTS)]);
    let decision = argument_outcome(&engine, "unguarded", json!({}));
    assert_eq!((decision.outcome, decision.reason), (Outcome::Deny, "no_permit"));
    assert_eq!(decision.errors.len(), 1, "{decision:?}");
    assert!(decision.errors[0].starts_with("unguarded: "), "{:?}", decision.errors);
    // A decimal where a Long is compared is an error too, not a match.
    let decision = argument_outcome(&engine, "unguarded", json!({ "amount": 2.5 }));
    assert_eq!((decision.outcome, decision.errors.len()), (Outcome::Deny, 1));
}

#[test]
fn oversized_arguments_are_cut_and_flagged_for_policies() {
    let engine = Engine::new(vec![set("args", Enforcement::Enforce, ARGUMENTS)]);
    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!({ "d": deep });
    }
    let huge = json!({ "amount": 2000, "blob": "x".repeat(crate::arguments::MAX_STRING_BYTES + 1) });
    for arguments in [json!({ "amount": 2000, "deep": deep }), huge, json!({ "amount": 2000, "far": 1e300 })] {
        let decision = argument_outcome(&engine, "number", arguments);
        assert!(decision.arguments_truncated);
        assert_eq!(
            (decision.outcome, decision.policies.as_slice()),
            (Outcome::Deny, ["truncated".to_owned()].as_slice())
        );
    }
}

#[test]
fn list_phase_sees_no_arguments() {
    let engine = Engine::new(vec![set("args", Enforcement::Enforce, ARGUMENTS)]);
    let alice = user("alice", &[]);
    let arguments = json!({ "amount": 5000 });
    let listing = Context { phase: Phase::List, ..context(Some(&arguments)) };
    let decision = decide(&engine, &alice, tool("s", "number", None), listing);
    assert!(!decision.outcome.is_visible(), "{decision:?}");
    let decision = decide(&engine, &alice, tool("s", "listing", None), listing);
    assert!(decision.outcome.is_visible());
    assert_eq!(decide(&engine, &alice, tool("s", "listing", None), context(None)).outcome, Outcome::Deny);
}

#[test]
fn principal_and_context_attributes_reach_policies() {
    let text = r#"
        @id("acme-office-hours") permit (principal in Group::"staff", action == Action::"tools/call", resource)
        when {
            principal has tenant && principal.tenant == "acme" && principal.scopes.contains("tools:call") &&
            context.time.hourUtc >= 8 && context.time.hourUtc < 18 && context.time.weekdayUtc <= 5 &&
            context.route == "internal" && context.sessionCalls < 100 && resource.dataLevel <= 2
        };
    "#;
    let engine = Engine::new(vec![set("hours", Enforcement::Enforce, text)]);
    let mut alice = user("alice", &["staff"]);
    alice.tenant = Some("acme".to_owned());
    alice.scopes = vec!["tools:call".to_owned()];
    let monday_morning = 1_767_605_400; // 2026-01-05T09:30:00Z
    let base = Context { route: "internal", now_unix: monday_morning, session_calls: 3, ..context(None) };
    let resource = tool("s", "t", Some(RiskTier::Low));
    assert_eq!(decide(&engine, &alice, resource, base).outcome, Outcome::Allow);
    let evening = Context { now_unix: monday_morning + 10 * 3600, ..base };
    assert_eq!(decide(&engine, &alice, resource, evening).outcome, Outcome::Deny);
    let busy = Context { session_calls: u64::MAX, ..base };
    assert_eq!(decide(&engine, &alice, resource, busy).outcome, Outcome::Deny);
    let restricted = Resource { data_class: Some(DataClass::Restricted), ..resource };
    assert_eq!(decide(&engine, &alice, restricted, base).outcome, Outcome::Deny);
    alice.tenant = None;
    let decision = decide(&engine, &alice, resource, base);
    assert_eq!(decision.outcome, Outcome::Deny);
    assert!(decision.errors.is_empty(), "{decision:?}");
}

/// Policies reading every part of the request, scoped and not, for the equivalence test below.
const MIXED: &str = r#"
    @id("tier-low") permit (principal, action, resource) when { resource.riskLevel == 0 };
    @id("staff-internal") permit (principal in Group::"staff", action, resource in Server::"s")
    when { principal has tenant && principal.tenant == "acme" && context.route == "internal" };
    @id("office-hours") forbid (principal, action, resource in Server::"s")
    when { context.time.hourUtc < 8 && context.phase == "use" };
    @id("call-limit") forbid (principal, action, resource in Server::"u") when { context.sessionCalls > 10 };
    @id("big-amounts") @reason("approval_required") forbid (principal, action, resource == Tool::"s/pay")
    when { context.arguments has amount && context.arguments.amount > 100 && context.approval != "granted" };
    @id("pay") permit (principal is User, action, resource == Tool::"s/pay");
    @id("unguarded") permit (principal, action, resource == Tool::"s/raw") when { context.arguments.n > 1 };
    @id("cut") forbid (principal, action, resource == Tool::"s/raw") when { context.argumentsTruncated };
    @id("whole") forbid (principal, action, resource == Tool::"t/x") when { { c: context }.c.route == "internal" };
    @id("listing") permit (principal, action, resource == Tool::"t/x") when { context["phase"] == "list" };
"#;

/// What evaluating every policy of `text` together decides, with the full context, the way the
/// engine did before it had buckets or caches: one Cedar set per role.
fn decide_whole(text: &str, request: &Request<'_>) -> (Outcome, Vec<String>, Vec<String>, bool) {
    use crate::index::Role;
    let flat = cedar_policy::PolicySet::from_str(text).unwrap_or_else(|e| panic!("{e}"));
    let mut by_role: [Vec<cedar_policy::Policy>; 3] = Default::default();
    for policy in flat.policies() {
        let slot = match Role::of(policy) {
            Role::Permit => 0,
            Role::Approval => 1,
            Role::Forbid => 2,
        };
        by_role[slot].push(policy.clone());
    }
    let item = crate::entity::item_uid(request);
    let everything = crate::context_use::ContextUse::ALL;
    let prepared = crate::entity::Prepared::new(request, &item, everything, &crate::entity::PartiesCache::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let authorizer = cedar_policy::Authorizer::new();
    let name = |id: &cedar_policy::PolicyId| flat.annotation(id, "id").unwrap_or_default().to_owned();
    let mut satisfied: [Vec<String>; 3] = Default::default();
    let mut errors = Vec::new();
    for (slot, policies) in by_role.into_iter().enumerate() {
        let set = cedar_policy::PolicySet::from_policies(policies).unwrap_or_else(|e| panic!("{e}"));
        let response = authorizer.is_authorized(&prepared.request, &set, &prepared.parties.entities);
        satisfied[slot].extend(response.diagnostics().reason().map(name));
        for error in response.diagnostics().errors() {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = error;
            errors.push(format!("{}: {}", name(e.policy_id()), e.inner()));
        }
    }
    errors.sort();
    let [permits, approvals, forbids] = satisfied;
    let (outcome, mut policies) = if !forbids.is_empty() {
        (Outcome::Deny, [forbids, approvals].concat())
    } else if permits.is_empty() {
        (Outcome::Deny, Vec::new())
    } else if !approvals.is_empty() {
        (Outcome::ApprovalRequired, approvals)
    } else {
        (Outcome::Allow, permits)
    };
    policies.sort();
    (outcome, policies, errors, prepared.arguments_truncated)
}

#[test]
fn decisions_match_evaluating_the_whole_set_with_the_whole_context_cached_or_not() {
    let engine = Engine::new(vec![set("mixed", Enforcement::Enforce, MIXED)]);
    let mut alice = user("alice", &["staff"]);
    alice.tenant = Some("acme".to_owned());
    let people = [Principal::anonymous(), alice, principal(portcullis_identity::PrincipalKind::Workload)];
    let items = [("s", "pay"), ("s", "raw"), ("s", "other"), ("t", "x"), ("u", "y")];
    let arguments = [
        None,
        Some(json!({})),
        Some(json!({ "amount": 500 })),
        Some(json!({ "amount": 5, "n": 2 })),
        Some(json!({ "n": "text" })),
        Some(json!({ "n": 5, "far": 1e300 })),
    ];
    let night = 1_767_582_000; // 2026-01-05T03:00:00Z
    let day = 1_767_605_400; // 2026-01-05T09:30:00Z
    let mut checked = 0;
    for who in &people {
        for (server, name) in items {
            for tier in [Some(RiskTier::Low), Some(RiskTier::High)] {
                for arguments in &arguments {
                    for (phase, route, now_unix, approval, session_calls) in [
                        (Phase::Use, "default", day, ApprovalState::None, 0),
                        (Phase::Use, "internal", night, ApprovalState::Granted, 11),
                        (Phase::List, "internal", day, ApprovalState::None, 3),
                        (Phase::List, "default", night, ApprovalState::None, 30),
                        // Each differs from one above in one attribute only.
                        (Phase::Use, "default", night, ApprovalState::None, 0),
                        (Phase::Use, "internal", day, ApprovalState::None, 0),
                        (Phase::List, "internal", day, ApprovalState::Granted, 3),
                        (Phase::List, "internal", day, ApprovalState::None, 30),
                        (Phase::Use, "internal", night, ApprovalState::Granted, 11),
                    ] {
                        let context =
                            Context { phase, arguments: arguments.as_ref(), route, now_unix, approval, session_calls };
                        let request = Request {
                            principal: who,
                            action: Action::CallTool,
                            resource: tool(server, name, tier),
                            context,
                        };
                        let (outcome, policies, errors, truncated) = decide_whole(MIXED, &request);
                        // Twice: the second answer may come from the engine's caches.
                        for _ in 0..2 {
                            let decision = engine.decide(&request);
                            let what = format!("{who} {server}/{name} {tier:?} {arguments:?} {context:?}");
                            assert_eq!(decision.outcome, outcome, "{what}: {decision:?}");
                            assert_eq!(decision.policies, policies, "{what}");
                            assert_eq!(decision.errors, errors, "{what}");
                            assert_eq!(decision.arguments_truncated, truncated, "{what}");
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 3 * 5 * 2 * 6 * 9);
}

#[test]
fn a_cached_decision_is_not_served_when_what_its_policies_read_changes() {
    let text = r#"
        @id("open") permit (principal, action, resource);
        @id("limit") forbid (principal, action, resource == Tool::"s/counted") when { context.sessionCalls > 2 };
        @id("nights") forbid (principal, action, resource == Tool::"s/night") when { context.time.hourUtc < 6 };
        @id("amounts") forbid (principal, action, resource == Tool::"s/pay")
        when { context.arguments has amount && context.arguments.amount > 10 };
    "#;
    let engine = Engine::new(vec![set("reads", Enforcement::Enforce, text)]);
    let alice = user("alice", &[]);
    let calls = |n| Context { session_calls: n, ..context(None) };
    let outcome = |resource, context| decide(&engine, &alice, resource, context).outcome;
    let counted = tool("s", "counted", None);
    assert_eq!(outcome(counted, calls(1)), Outcome::Allow);
    assert_eq!(outcome(counted, calls(1)), Outcome::Allow);
    assert_eq!(outcome(counted, calls(3)), Outcome::Deny);
    let listing = Context { phase: Phase::List, ..calls(1) };
    assert_eq!(outcome(counted, listing), Outcome::Allow);
    assert_eq!(outcome(counted, Context { session_calls: 5, ..listing }), Outcome::Deny);
    let night = tool("s", "night", None);
    for _ in 0..2 {
        assert_eq!(outcome(night, Context { now_unix: 12 * 3600, ..calls(0) }), Outcome::Allow);
        assert_eq!(outcome(night, Context { now_unix: 3600, ..calls(0) }), Outcome::Deny);
    }
    let plain = tool("s", "plain", None);
    assert_eq!(outcome(plain, calls(7)), Outcome::Allow);
    let pay = tool("s", "pay", None);
    let (small, big) = (json!({ "amount": 5 }), json!({ "amount": 50 }));
    assert_eq!(outcome(pay, context(Some(&small))), Outcome::Allow);
    assert_eq!(outcome(pay, context(Some(&big))), Outcome::Deny);
    assert_eq!(outcome(pay, context(Some(&small))), Outcome::Allow);
    // A tool whose policies do not read arguments decides alike whatever they are.
    assert_eq!(outcome(plain, context(Some(&big))), Outcome::Allow);
}

#[test]
fn sets_may_reuse_each_others_policy_ids() {
    let first = set("first", Enforcement::Enforce, r#"@id("x") permit (principal, action, resource);"#);
    let second =
        set("second", Enforcement::Enforce, r#"@id("x") forbid (principal, action, resource == Tool::"s/no");"#);
    let shadow = set("shadow", Enforcement::Shadow, r#"@id("x") forbid (principal, action, resource);"#);
    let engine = Engine::new(vec![first, second, shadow]);
    let alice = user("alice", &[]);
    let yes = decide(&engine, &alice, tool("s", "yes", None), context(None));
    assert_eq!((yes.outcome, yes.policies.as_slice()), (Outcome::Allow, ["x".to_owned()].as_slice()));
    assert_eq!(
        (yes.shadow[0].outcome, yes.shadow[0].policies.as_slice()),
        (Outcome::Deny, ["x".to_owned()].as_slice())
    );
    let no = decide(&engine, &alice, tool("s", "no", None), context(None));
    assert_eq!((no.outcome, no.reason), (Outcome::Deny, "forbidden"));
}

#[test]
fn concurrent_decisions_agree_with_sequential_ones() {
    let engine = Engine::new(vec![PolicySet::default_tiers()]);
    let people: Vec<Principal> = (0..8).map(|i| user(&format!("u{i}"), &["critical-operators"])).collect();
    let tiers = [Some(RiskTier::Low), Some(RiskTier::Medium), Some(RiskTier::High), Some(RiskTier::Critical), None];
    let names: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    let expected = |who: &Principal, i: usize| {
        let fresh = Engine::new(vec![PolicySet::default_tiers()]);
        decide(&fresh, who, tool_named("s", &names[i % names.len()], tiers[i % tiers.len()]), context(None))
    };
    std::thread::scope(|scope| {
        for who in &people {
            let (engine, names, expected) = (&engine, &names, &expected);
            scope.spawn(move || {
                for i in 0..200 {
                    let decision = decide(
                        engine,
                        who,
                        tool_named("s", &names[i % names.len()], tiers[i % tiers.len()]),
                        context(None),
                    );
                    assert_eq!(decision, expected(who, i));
                }
            });
        }
    });
}

fn tool_named<'a>(server: &'a str, name: &'a str, tier: Option<RiskTier>) -> Resource<'a> {
    Resource { risk_tier: tier, data_class: Some(DataClass::Internal), ..Resource::unregistered(server, name) }
}
