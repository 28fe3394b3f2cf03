//! Which attributes of `context` a policy can observe, read from Cedar's JSON form of it.
//!
//! A decision gives Cedar only the context attributes its buckets' policies read, and an engine
//! caches decisions by what their policies can observe (see `cache`): the principal, the
//! action, the item, and those attributes. So the analysis must never miss a read, and is
//! conservative: `context.<attr>` and `context has <attr>` read that attribute; any other use
//! of `context` (compared whole, put in a record, an attribute not in the schema) reads all of it.

/// The context attributes some policies read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ContextUse {
    pub(crate) phase: bool,
    pub(crate) route: bool,
    pub(crate) approval: bool,
    pub(crate) session_calls: bool,
    pub(crate) time: bool,
    pub(crate) arguments: bool,
    pub(crate) arguments_truncated: bool,
}

impl ContextUse {
    /// Every attribute.
    pub(crate) const ALL: Self = Self {
        phase: true,
        route: true,
        approval: true,
        session_calls: true,
        time: true,
        arguments: true,
        arguments_truncated: true,
    };

    /// What the policy whose Cedar JSON form (EST) is `est` reads.
    pub(crate) fn of(est: &serde_json::Value) -> Self {
        let mut uses = Self::default();
        uses.walk(est);
        uses
    }

    /// What either reads.
    pub(crate) fn union(self, other: Self) -> Self {
        Self {
            phase: self.phase || other.phase,
            route: self.route || other.route,
            approval: self.approval || other.approval,
            session_calls: self.session_calls || other.session_calls,
            time: self.time || other.time,
            arguments: self.arguments || other.arguments,
            arguments_truncated: self.arguments_truncated || other.arguments_truncated,
        }
    }

    fn walk(&mut self, node: &serde_json::Value) {
        use serde_json::Value;
        match node {
            Value::Object(map) => {
                if map.len() == 1 && map.get("Var").and_then(Value::as_str) == Some("context") {
                    *self = Self::ALL;
                    return;
                }
                for (key, child) in map {
                    match (key.as_str(), attribute_of_context(child)) {
                        (".", Some(attribute)) | ("has", Some(attribute)) => self.read(attribute),
                        _ => self.walk(child),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| self.walk(item)),
            _ => {}
        }
    }

    fn read(&mut self, attribute: &str) {
        match attribute {
            "phase" => self.phase = true,
            "route" => self.route = true,
            "approval" => self.approval = true,
            "sessionCalls" => self.session_calls = true,
            "time" => self.time = true,
            "arguments" => self.arguments = true,
            "argumentsTruncated" => self.arguments_truncated = true,
            _ => *self = Self::ALL,
        }
    }
}

/// The attribute of `{"left": {"Var": "context"}, "attr": a}` (`a`, or the first of a `has` path).
fn attribute_of_context(operands: &serde_json::Value) -> Option<&str> {
    let operands = operands.as_object()?;
    let left = operands.get("left")?.as_object()?;
    if operands.len() != 2 || left.len() != 1 || left.get("Var")?.as_str()? != "context" {
        return None;
    }
    match operands.get("attr")? {
        serde_json::Value::String(attribute) => Some(attribute),
        serde_json::Value::Array(path) => path.first()?.as_str(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn uses(condition: &str) -> ContextUse {
        let text = format!("permit (principal, action, resource) when {{ {condition} }};");
        let policy = cedar_policy::Policy::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        ContextUse::of(&policy.to_json().unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn reads_attributes_by_name_and_by_has() {
        let found = uses(r#"context.approval != "granted" && context has route"#);
        assert_eq!(found, ContextUse { approval: true, route: true, ..ContextUse::default() });
        let found = uses(r#"context["sessionCalls"] > 1 && context.time.hourUtc > 3"#);
        assert_eq!(found, ContextUse { session_calls: true, time: true, ..ContextUse::default() });
        let found = uses("context.arguments has options.mode && context.argumentsTruncated");
        assert_eq!(found, ContextUse { arguments: true, arguments_truncated: true, ..ContextUse::default() });
        assert_eq!(uses(r#"resource.riskTier == "low""#), ContextUse::default());
    }

    #[test]
    fn any_other_use_of_the_context_reads_all_of_it() {
        assert_eq!(uses("context == {}"), ContextUse::ALL);
        assert_eq!(uses(r#"{ c: context }.c.route == "x""#), ContextUse::ALL);
        assert_eq!(uses("context has unheardOf"), ContextUse::ALL);
    }

    #[test]
    fn unless_clauses_count_too() {
        let text = r#"forbid (principal, action, resource) when { true } unless { context.phase == "list" };"#;
        let policy = cedar_policy::Policy::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        let found = ContextUse::of(&policy.to_json().unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(found, ContextUse { phase: true, ..ContextUse::default() });
    }
}
