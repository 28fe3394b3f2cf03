//! What one `Engine::decide` costs: a call with the default set (without and with arguments),
//! a list-phase decision (one item, and a list of 100 distinct items), a call whose principal
//! and item are new each time (nothing cached can help), and 50-policy custom sets where only 2
//! policies concern the item (scoped, so bucketing applies) or all 50 must be evaluated
//! (unscoped). Repeated requests are served from the engine's caches; `nothing-repeats`,
//! `new-pair-…` and `reads-session-calls` show the costs behind them.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_identity::{Principal, PrincipalKind};
use portcullis_policy::{
    Action, ApprovalState, Context, Enforcement, Engine, Outcome, Phase, PolicySet, PolicySource, Request, Resource,
};
use portcullis_registry::model::{DataClass, RiskTier};
use serde_json::{Value, json};

/// 2026-01-05T09:30:00Z.
const NOW: i64 = 1_767_605_400;

fn user(id: &str) -> Principal {
    let mut principal = Principal::local(id, vec!["staff".to_owned(), "engineering".to_owned()]);
    principal.kind = PrincipalKind::User;
    principal.tenant = Some("acme".to_owned());
    principal.scopes = vec!["tools:call".to_owned(), "tools:list".to_owned()];
    principal
}

fn item<'a>(server: &'a str, name: &'a str) -> Resource<'a> {
    Resource {
        risk_tier: Some(RiskTier::Medium),
        data_class: Some(DataClass::Internal),
        environment: Some("production"),
        read_only: Some(false),
        destructive: Some(false),
        ..Resource::unregistered(server, name)
    }
}

fn context(phase: Phase, arguments: Option<&Value>) -> Context<'_> {
    Context { phase, arguments, route: "default", now_unix: NOW, approval: ApprovalState::None, session_calls: 7 }
}

fn compile(name: &str, text: &str) -> PolicySet {
    match PolicySet::compile(name, Enforcement::Enforce, &[PolicySource::new(format!("{name}.cedar"), text)]) {
        Ok(set) => set,
        Err(e) => panic!("{e}"),
    }
}

/// 50 policies over 25 servers with 2 tools each; exactly 2 concern `srv0/tool0` (a server
/// permit and a tool forbid that is not satisfied). Scoped by resource, or all global.
fn fifty(scoped: bool) -> String {
    let mut text = String::new();
    for i in 0..25 {
        let server = if scoped { format!("resource in Server::\"srv{i}\"") } else { "resource".to_owned() };
        let server_when = if scoped { String::new() } else { format!("when {{ resource.server == \"srv{i}\" }}") };
        text.push_str(&format!("@id(\"server-{i}\") permit (principal, action, {server}) {server_when};\n"));
        let tool = if scoped { format!("resource == Tool::\"srv{i}/tool0\"") } else { "resource".to_owned() };
        let tool_when = if scoped {
            "when { context.arguments has force && context.arguments.force == true }".to_owned()
        } else {
            format!(
                "when {{ resource.server == \"srv{i}\" && resource.name == \"tool0\" && \
                 context.arguments has force && context.arguments.force == true }}"
            )
        };
        text.push_str(&format!("@id(\"tool-{i}\") forbid (principal, action, {tool}) {tool_when};\n"));
    }
    text
}

fn assert_outcome(engine: &Engine, request: &Request<'_>, expected: Outcome) {
    let decision = engine.decide(request);
    assert_eq!(decision.outcome, expected, "{decision:?}");
    assert!(decision.errors.is_empty(), "{decision:?}");
}

fn decide(c: &mut Criterion) {
    let default = Engine::new(vec![PolicySet::default_tiers()]);
    let alice = user("alice");
    let arguments = json!({ "repo": "acme/widgets", "title": "Fix the build", "labels": 3 });

    let call = Request {
        principal: &alice,
        action: Action::CallTool,
        resource: item("github", "create_issue"),
        context: context(Phase::Use, None),
    };
    assert_outcome(&default, &call, Outcome::Allow);
    c.bench_function("call/default/no-arguments", |b| b.iter(|| default.decide(black_box(&call))));

    let with_arguments = Request { context: context(Phase::Use, Some(&arguments)), ..call };
    assert_outcome(&default, &with_arguments, Outcome::Allow);
    c.bench_function("call/default/3-arguments", |b| b.iter(|| default.decide(black_box(&with_arguments))));

    let listing = Request { context: context(Phase::List, None), ..call };
    assert_outcome(&default, &listing, Outcome::Allow);
    c.bench_function("list/default/one-item", |b| b.iter(|| default.decide(black_box(&listing))));

    // One list result: 100 distinct tools of one server, for one principal.
    let names: Vec<String> = (0..100).map(|i| format!("tool_{i}")).collect();
    c.bench_function("list/default/100-items", |b| {
        b.iter(|| {
            names
                .iter()
                .filter(|name| {
                    let request = Request { resource: item("github", name), ..listing };
                    default.decide(black_box(&request)).outcome.is_visible()
                })
                .count()
        })
    });

    // A new principal and item on every call: what a decision costs when nothing repeats.
    let strangers: Vec<(Principal, String)> =
        (0..50_000).map(|i| (user(&format!("user-{i}")), format!("tool_{i}"))).collect();
    let mut next = 0;
    c.bench_function("call/default/nothing-repeats", |b| {
        b.iter(|| {
            let (who, name) = &strangers[next % strangers.len()];
            next += 1;
            let request = Request { principal: who, resource: item("github", name), ..with_arguments };
            default.decide(black_box(&request))
        })
    });

    // A policy that reads the session's call count, which changes on every call: no decision
    // repeats, though the entities of the (principal, tool) pair do.
    let counting = Engine::new(vec![
        PolicySet::default_tiers(),
        compile(
            "limits",
            r#"@id("call-limit") forbid (principal, action, resource) when { context.sessionCalls > 1000000 };"#,
        ),
    ]);
    assert_outcome(&counting, &with_arguments, Outcome::Allow);
    let mut calls = 0;
    c.bench_function("call/reads-session-calls/3-arguments", |b| {
        b.iter(|| {
            calls += 1;
            let context = Context { session_calls: calls, ..with_arguments.context };
            counting.decide(black_box(&Request { context, ..with_arguments }))
        })
    });

    // 200 principals × 100 tools, cycled: each (principal, tool) pair is new to the engine's
    // caches (20,000 pairs), while the principals and the tools are known.
    let people: Vec<Principal> = (0..200).map(|i| user(&format!("person-{i}"))).collect();
    let mut turn = 0;
    c.bench_function("call/default/new-pair-of-known-principal-and-tool", |b| {
        b.iter(|| {
            let (who, name) = (&people[turn % people.len()], &names[(turn / people.len()) % names.len()]);
            turn += 1;
            let request = Request { principal: who, resource: item("github", name), ..with_arguments };
            default.decide(black_box(&request))
        })
    });

    for (label, scoped) in [("scoped", true), ("unscoped", false)] {
        let engine = Engine::new(vec![compile(label, &fifty(scoped))]);
        let request = Request { resource: item("srv0", "tool0"), ..with_arguments };
        assert_outcome(&engine, &request, Outcome::Allow);
        c.bench_function(&format!("call/50-policies-2-apply/{label}"), |b| {
            b.iter(|| engine.decide(black_box(&request)))
        });
    }
}

criterion_group!(benches, decide);
criterion_main!(benches);
