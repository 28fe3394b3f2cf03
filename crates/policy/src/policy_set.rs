//! A named, compiled, validated set of policies, each with its role and scope.

use std::collections::HashMap;
use std::str::FromStr;

use cedar_policy::{Policy, PolicyId};
use miette::Diagnostic;

use crate::error::{PolicyError, Problem, ProblemKind, position};
use crate::index::{APPROVAL_REQUIRED, REASON_ANNOTATION, Role, Rule};
use crate::validation;

/// The bundled default policies (risk tiers).
pub const DEFAULT_POLICIES: &str = include_str!("../policies/default.cedar");
/// The name of the bundled default set and its source.
pub const DEFAULT_SET_NAME: &str = "default";

/// The annotation that names a policy.
const ID_ANNOTATION: &str = "id";

/// One policy text and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    /// A file path or label, used in errors and in default policy ids (`<name>#<index>`).
    pub name: String,
    /// Cedar policies.
    pub text: String,
}

impl PolicySource {
    /// A source named `name` with `text`.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Self { name: name.into(), text: text.into() }
    }
}

/// Whether a set's decisions count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Enforcement {
    /// Decisions are enforced (all enforced sets are combined; a forbid anywhere wins).
    Enforce,
    /// Decisions are only reported, in [`Decision::shadow`](crate::Decision::shadow).
    Shadow,
}

/// One named, compiled policy set.
#[derive(Debug, Clone)]
pub struct PolicySet {
    name: String,
    enforcement: Enforcement,
    /// In source order.
    pub(crate) rules: Vec<Rule>,
}

impl PolicySet {
    /// Parses and strictly validates `sources` against the built-in schema; every problem
    /// (syntax, schema, duplicate id) is reported at once, with source name, line and column.
    pub fn compile(name: &str, enforcement: Enforcement, sources: &[PolicySource]) -> Result<Self, PolicyError> {
        let mut problems: Vec<(usize, Problem)> = Vec::new();
        let mut runtime: Vec<Rule> = Vec::new();
        let mut probes = cedar_policy::PolicySet::new();
        // Policy id → the index of its source.
        let mut origin: HashMap<String, usize> = HashMap::new();
        for (s, source) in sources.iter().enumerate() {
            let at = |offset: Option<usize>, policy: Option<&str>, kind, message: String| {
                let (line, column) = offset.map_or((1, 1), |o| position(&source.text, o));
                let policy = policy.map(str::to_owned);
                (s, Problem { source: source.name.clone(), line, column, policy, kind, message })
            };
            let parsed = match cedar_policy::PolicySet::from_str(&source.text) {
                Ok(parsed) => parsed,
                Err(errors) => {
                    for error in errors.iter() {
                        let offset = validation::span(error).map(|(o, _)| o);
                        problems.push(at(offset, None, ProblemKind::Syntax, message(error)));
                    }
                    continue;
                }
            };
            if parsed.templates().next().is_some() {
                let offset = ["?principal", "?resource"].iter().filter_map(|slot| source.text.find(slot)).min();
                let message = "policy templates (with ?principal or ?resource) are not supported".to_owned();
                problems.push(at(offset, None, ProblemKind::Unsupported, message));
            }
            let policies = in_source_order(&parsed);
            // The validator sees a probe of the text (see `validation`); same policies, same positions.
            let probe_text = validation::probe(&source.text);
            let probe = (probe_text != source.text)
                .then(|| cedar_policy::PolicySet::from_str(&probe_text).ok())
                .flatten()
                .map(|p| in_source_order(&p).into_iter().cloned().collect::<Vec<_>>())
                .filter(|p| p.len() == policies.len());
            for (i, policy) in policies.iter().enumerate() {
                let id = policy.annotation(ID_ANNOTATION).map_or_else(|| format!("{}#{i}", source.name), str::to_owned);
                let id_offset = || annotation_offset(&source.text, &id);
                if id.trim().is_empty() {
                    problems.push(at(id_offset(), None, ProblemKind::Unsupported, "@id is empty".to_owned()));
                    continue;
                }
                if let Some(&first) = origin.get(&id) {
                    let message = format!("policy id '{id}' is already used in {}", sources[first].name);
                    problems.push(at(id_offset(), Some(&id), ProblemKind::DuplicateId, message));
                    continue;
                }
                if policy.annotation(REASON_ANNOTATION) == Some(APPROVAL_REQUIRED) && Role::of(policy) == Role::Permit {
                    let message = format!("@reason(\"{APPROVAL_REQUIRED}\") applies to forbid policies only");
                    problems.push(at(id_offset(), Some(&id), ProblemKind::Unsupported, message));
                }
                let policy_id = PolicyId::new(&id);
                let checked = probe.as_ref().and_then(|p| p.get(i)).unwrap_or(policy);
                if let Err(e) = probes.add(checked.new_id(policy_id.clone())) {
                    problems.push(at(None, Some(&id), ProblemKind::DuplicateId, e.to_string()));
                    continue;
                }
                match Rule::new(policy.new_id(policy_id)) {
                    Ok(rule) => runtime.push(rule),
                    Err(e) => problems.push(at(id_offset(), Some(&id), ProblemKind::Unsupported, e)),
                }
                origin.insert(id, s);
            }
        }
        for error in validation::validate(&probes)? {
            let id = error.policy_id().to_string();
            let Some(&s) = origin.get(&id) else { continue };
            let text = &sources[s].text;
            if validation::is_argument_access(&error, text) {
                continue;
            }
            let (line, column) = validation::span(&error).map_or((1, 1), |(o, _)| position(text, o));
            let problem = Problem {
                source: sources[s].name.clone(),
                line,
                column,
                policy: Some(id),
                kind: ProblemKind::Schema,
                message: message(&error),
            };
            problems.push((s, problem));
        }
        if !problems.is_empty() {
            problems
                .sort_by(|(a, p), (b, q)| (a, p.line, p.column, &p.message).cmp(&(b, q.line, q.column, &q.message)));
            // Cedar reports a problem once per request type it applies to (tools, prompts, …): keep one.
            problems.dedup_by(|(a, p), (b, q)| {
                a == b && (p.line, p.column, &p.policy, p.kind) == (q.line, q.column, &q.policy, q.kind)
            });
            let problems = problems.into_iter().map(|(_, p)| p).collect();
            return Err(PolicyError::Invalid { set: name.to_owned(), problems });
        }
        Ok(Self { name: name.to_owned(), enforcement, rules: runtime })
    }

    /// The bundled default set (`policies/default.cedar`), enforced.
    pub fn default_tiers() -> Self {
        let sources = [PolicySource::new("default.cedar", DEFAULT_POLICIES)];
        // The bundled text is fixed and compiled by the tests: a failure here is a bug in this crate.
        Self::compile(DEFAULT_SET_NAME, Enforcement::Enforce, &sources).expect("bundled default policies compile")
    }

    /// The ids of the set's policies, in source order.
    pub fn policy_ids(&self) -> Vec<String> {
        self.rules.iter().map(|r| r.id.clone()).collect()
    }

    /// The set's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the set is enforced or shadow.
    pub fn enforcement(&self) -> Enforcement {
        self.enforcement
    }

    /// The same policies with another enforcement.
    pub fn with_enforcement(mut self, enforcement: Enforcement) -> Self {
        self.enforcement = enforcement;
        self
    }
}

/// A parsed set's static policies in the order they appear in the text (`policy0`, `policy1`, …).
fn in_source_order(parsed: &cedar_policy::PolicySet) -> Vec<&Policy> {
    let mut policies: Vec<&Policy> = parsed.policies().collect();
    policies.sort_by_cached_key(|p| p.id().to_string().strip_prefix("policy").and_then(|n| n.parse::<usize>().ok()));
    policies
}

/// Where the last `@id("<id>")` annotation for `id` is in `text`, if anywhere.
fn annotation_offset(text: &str, id: &str) -> Option<usize> {
    let quoted = format!("\"{id}\"");
    text.match_indices(&quoted).map(|(o, _)| o).filter(|&o| text[..o].trim_end().ends_with('(')).last()
}

/// A diagnostic's message with its help, if any.
fn message(error: &dyn Diagnostic) -> String {
    match error.help() {
        Some(help) => format!("{error} ({help})"),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::ScopeIndex;

    fn compile(sources: &[(&str, &str)]) -> Result<PolicySet, Vec<Problem>> {
        let sources: Vec<PolicySource> = sources.iter().map(|(n, t)| PolicySource::new(*n, *t)).collect();
        PolicySet::compile("test", Enforcement::Enforce, &sources).map_err(|e| match e {
            PolicyError::Invalid { problems, .. } => problems,
            PolicyError::Schema(message) => panic!("schema: {message}"),
        })
    }

    fn problems(sources: &[(&str, &str)]) -> Vec<Problem> {
        compile(sources).err().unwrap_or_default()
    }

    #[test]
    fn default_set_compiles_with_its_ids() {
        let set = PolicySet::default_tiers();
        assert_eq!(set.name(), DEFAULT_SET_NAME);
        assert_eq!(set.enforcement(), Enforcement::Enforce);
        assert_eq!(
            set.policy_ids(),
            [
                "tier-low-anyone",
                "tier-medium-authenticated",
                "tier-high-people",
                "tier-critical-operators",
                "tier-high-no-workloads",
                "tier-high-approval"
            ]
        );
    }

    #[test]
    fn reports_typo_attribute_and_wrong_entity_type_at_once_with_positions() {
        let text = "permit (principal, action, resource)\nwhen { resource.riskTeir == \"low\" };\n\n\
                    permit (principal == Usr::\"alice\", action, resource);\n";
        let found = problems(&[("a.cedar", text)]);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!((found[0].line, found[0].column, found[0].kind), (2, 8, ProblemKind::Schema));
        assert!(found[0].message.contains("riskTeir") && found[0].message.contains("did you mean `riskTier`?"));
        assert_eq!(found[0].policy.as_deref(), Some("a.cedar#0"));
        assert_eq!((found[1].line, found[1].column), (4, 22));
        assert!(found[1].message.contains("unrecognized entity type `Usr`"), "{}", found[1].message);
        assert_eq!(found[1].policy.as_deref(), Some("a.cedar#1"));
    }

    #[test]
    fn reports_problems_of_every_source_together() {
        let found = problems(&[
            ("bad-syntax.cedar", "permit (principal, action, resource) when { };\n"),
            ("bad-schema.cedar", "forbid (principal, action == Action::\"tools/cal\", resource);"),
        ]);
        let sources: Vec<&str> = found.iter().map(|p| p.source.as_str()).collect();
        assert!(sources.contains(&"bad-syntax.cedar") && sources.contains(&"bad-schema.cedar"), "{found:#?}");
        assert_eq!(found[0].kind, ProblemKind::Syntax);
        assert_eq!(found.last().map(|p| p.kind), Some(ProblemKind::Schema));
        let error = PolicyError::Invalid { set: "s".to_owned(), problems: found };
        assert!(error.to_string().contains("bad-schema.cedar:1:"), "{error}");
    }

    #[test]
    fn ids_come_from_the_id_annotation_or_the_source_position() {
        let set = compile(&[
            ("a.cedar", "@id(\"named\") permit (principal, action, resource);\nforbid (principal, action, resource);"),
            ("b.cedar", "permit (principal, action, resource);"),
        ]);
        assert_eq!(set.map(|s| s.policy_ids()).unwrap_or_default(), ["named", "a.cedar#1", "b.cedar#0"]);
    }

    #[test]
    fn duplicate_ids_are_rejected_where_they_repeat() {
        let found = problems(&[
            (
                "a.cedar",
                "@id(\"x\") permit (principal, action, resource);\n@id(\"x\") forbid (principal, action, resource);",
            ),
            ("b.cedar", "\n\n@id(\"x\") permit (principal, action, resource);"),
        ]);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found.iter().all(|p| p.kind == ProblemKind::DuplicateId));
        assert_eq!((found[0].source.as_str(), found[0].line, found[0].column), ("a.cedar", 2, 5));
        assert_eq!((found[1].source.as_str(), found[1].line), ("b.cedar", 3));
        assert!(found[1].message.contains("already used in a.cedar"), "{}", found[1].message);
    }

    #[test]
    fn templates_and_approval_permits_are_unsupported() {
        let found = problems(&[
            ("t.cedar", "permit (principal == ?principal, action, resource);"),
            ("p.cedar", "@reason(\"approval_required\") permit (principal, action, resource);"),
        ]);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found.iter().all(|p| p.kind == ProblemKind::Unsupported));
        assert_eq!(found[0].column, 22);
    }

    #[test]
    fn argument_conditions_pass_strict_validation() {
        let text = r#"
            forbid (principal, action, resource)
            when { context.arguments has amount && context.arguments.amount > 1000 };
            forbid (principal, action, resource)
            when { context.arguments has path && context.arguments.path like "/etc/*" };
            forbid (principal, action, resource)
            when { context.arguments has options.mode && context.arguments.options.mode == "force" };
            forbid (principal, action, resource)
            when { context["arguments"] has "odd key" && context.arguments["odd key"].contains(1) };
            forbid (principal, action, resource)
            when { context.arguments has price && context.arguments.price.greaterThan(decimal("9.99")) };
            forbid (principal, action, resource) when { context.argumentsTruncated };
        "#;
        assert!(compile(&[("args.cedar", text)]).is_ok(), "{:#?}", problems(&[("args.cedar", text)]));
    }

    #[test]
    fn everything_after_an_argument_guard_is_still_checked() {
        let text = "forbid (principal, action, resource)\n\
                    when { context.arguments has a && context.arguments.a == 1 && resource.riskLevl > 1 };";
        let found = problems(&[("g.cedar", text)]);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!((found[0].line, found[0].column), (2, 63));
        assert!(found[0].message.contains("riskLevl"));
    }

    #[test]
    fn misspelt_context_attributes_are_not_taken_for_arguments() {
        let found = problems(&[("c.cedar", "permit (principal, action, resource) when { context.argument has b };")]);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].message.contains("did you mean `arguments`?"), "{}", found[0].message);
    }

    #[test]
    fn policies_are_bucketed_by_resource_scope() {
        let text = r#"
            permit (principal, action, resource);
            permit (principal, action, resource is Tool);
            permit (principal, action, resource in Server::"a");
            permit (principal, action, resource is Tool in Server::"b");
            permit (principal, action, resource == Server::"a");
            permit (principal, action, resource == Tool::"a/t");
            forbid (principal, action, resource in Prompt::"a/p");
        "#;
        let set = compile(&[("s.cedar", text)]).unwrap_or_else(|p| panic!("{p:#?}"));
        let index = ScopeIndex::build([set.rules.as_slice()]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(index.scoped_len(), (2, 2));
    }
}
