//! Argument validation: every `tools/call` is checked against the tool's pinned
//! input schema (JSON Schema 2020-12 unless the schema names another draft)
//! before anything reaches the upstream.
//!
//! Schemas are compiled once per distinct schema text and shared. The validator
//! never fetches anything: `jsonschema` is built without its `resolve-http` and
//! `resolve-file` features, so a schema with a remote or file `$ref` fails to
//! compile, and its tool is uncallable (fail closed) rather than a way to make
//! the gateway open connections.
//!
//! Strict mode also rejects fields the schema does not declare: every object
//! level that declares `properties` and says nothing about extra ones gets
//! `unevaluatedProperties: false` (so `allOf` compositions still work). It is
//! on by default for high and critical tiers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

/// When unknown argument fields are rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// For tools of high and critical tiers.
    Auto,
    Always,
    Never,
}

/// The `[validation]` settings.
#[derive(Debug, Clone)]
pub struct ValidationSettings {
    /// Whether arguments are validated at all.
    pub enabled: bool,
    pub strict: Strictness,
    /// Whether a tool result's `structuredContent` is checked against the pinned output schema.
    pub output: bool,
    /// How refused arguments are answered.
    pub refusal: Refusal,
}

/// How a call whose arguments fail validation is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A JSON-RPC `-32602` error naming the offending path (hosts act on it).
    Error,
    /// A tool result with `isError: true` carrying the same message (SEP-1303: the model sees
    /// it and can correct its call); the machine-readable refusal is in its `_meta`.
    ToolResult,
}

impl Default for ValidationSettings {
    fn default() -> Self {
        Self { enabled: true, strict: Strictness::Auto, output: false, refusal: Refusal::Error }
    }
}

/// A compiled tool schema: lenient (as written) and strict (no undeclared fields).
pub struct ToolSchema {
    lenient: jsonschema::Validator,
    strict: jsonschema::Validator,
}

/// One way the arguments fail their schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON Pointer into the arguments, e.g. `/amount` (empty for the whole object).
    pub path: String,
    /// What is wrong, without echoing the value.
    pub message: String,
}

/// At most this many violations are reported.
const MAX_VIOLATIONS: usize = 10;
/// How many distinct schemas are kept compiled before starting over.
const CACHE_LIMIT: usize = 4096;

impl ToolSchema {
    /// Compiles a schema (and its strict twin).
    pub fn compile(schema: &Value) -> Result<Self, String> {
        let lenient = build(schema)?;
        let strict = build(&strictened(schema))?;
        Ok(Self { lenient, strict })
    }

    /// Checks arguments; every violation (up to a bound) when they fail.
    pub fn check(&self, arguments: &Value, strict: bool) -> Result<(), Vec<Violation>> {
        let validator = if strict { &self.strict } else { &self.lenient };
        let violations: Vec<Violation> = validator
            .iter_errors(arguments)
            .take(MAX_VIOLATIONS)
            .map(|e| Violation { path: e.instance_path().as_str().to_owned(), message: e.masked().to_string() })
            .collect();
        if violations.is_empty() { Ok(()) } else { Err(violations) }
    }
}

fn build(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(schema)
        .map_err(|e| format!("schema does not compile: {}", e.masked()))
}

/// The schema with `unevaluatedProperties: false` on every object level that declares
/// `properties` and leaves extra fields open. Branches of `allOf`/`anyOf`/`oneOf`/`if`
/// are left open themselves (the level holding them closes over what they evaluate).
fn strictened(schema: &Value) -> Value {
    fn close(schema: &Value, depth: usize, in_branch: bool) -> Value {
        let Value::Object(map) = schema else { return schema.clone() };
        if depth > 64 {
            return schema.clone();
        }
        let mut out = Map::new();
        for (key, value) in map {
            let walked = match key.as_str() {
                "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas" => match value {
                    Value::Object(props) => {
                        Value::Object(props.iter().map(|(k, v)| (k.clone(), close(v, depth + 1, false))).collect())
                    }
                    other => other.clone(),
                },
                "items" | "additionalProperties" | "contains" | "unevaluatedItems" => close(value, depth + 1, false),
                "prefixItems" => match value {
                    Value::Array(items) => Value::Array(items.iter().map(|v| close(v, depth + 1, false)).collect()),
                    other => other.clone(),
                },
                "allOf" | "anyOf" | "oneOf" => match value {
                    Value::Array(items) => Value::Array(items.iter().map(|v| close(v, depth + 1, true)).collect()),
                    other => other.clone(),
                },
                "if" | "then" | "else" | "not" => close(value, depth + 1, true),
                _ => value.clone(),
            };
            out.insert(key.clone(), walked);
        }
        let declares = map.contains_key("properties") || map.contains_key("allOf") || map.contains_key("anyOf");
        let open = !map.contains_key("additionalProperties") && !map.contains_key("unevaluatedProperties");
        if declares && open && !in_branch {
            out.insert("unevaluatedProperties".to_owned(), Value::Bool(false));
        }
        Value::Object(out)
    }
    close(schema, 0, false)
}

/// A schema compiled once, or why it cannot be.
pub type Compiled = Arc<Result<ToolSchema, String>>;

/// Compiled schemas by their exact text, shared by every upstream and tool.
#[derive(Default)]
pub struct SchemaCache {
    compiled: Mutex<HashMap<Box<str>, Compiled>>,
}

impl SchemaCache {
    /// The compiled form of a schema, compiling it the first time its text is seen.
    pub fn get(&self, text: &str) -> Compiled {
        if let Some(known) = self.compiled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(text) {
            return Arc::clone(known);
        }
        let compiled = Arc::new(match serde_json::from_str::<Value>(text) {
            Ok(schema) => ToolSchema::compile(&schema),
            Err(e) => Err(format!("schema is not JSON: {e}")),
        });
        let mut map = self.compiled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= CACHE_LIMIT {
            map.clear();
        }
        map.insert(text.into(), Arc::clone(&compiled));
        compiled
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> ToolSchema {
        let s = json!({
            "type": "object",
            "properties": {
                "amount": {"type": "integer", "maximum": 1000},
                "to": {"type": "string", "maxLength": 64},
                "meta": {"type": "object", "properties": {"note": {"type": "string"}}}
            },
            "required": ["amount", "to"]
        });
        match ToolSchema::compile(&s) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn accepts_valid_arguments() {
        assert_eq!(schema().check(&json!({"amount": 5, "to": "bob"}), true), Ok(()));
    }

    #[test]
    fn names_the_offending_path() {
        let errors = schema().check(&json!({"amount": "five", "to": "bob"}), false).err().unwrap_or_default();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "/amount");
        let missing = schema().check(&json!({"amount": 1}), false).err().unwrap_or_default();
        assert!(missing[0].message.contains("to"), "{missing:?}");
    }

    #[test]
    fn strict_mode_rejects_unknown_fields_at_every_level() {
        let s = schema();
        let extra = json!({"amount": 1, "to": "bob", "admin": true});
        assert_eq!(s.check(&extra, false), Ok(()));
        assert!(s.check(&extra, true).is_err());
        let nested = json!({"amount": 1, "to": "bob", "meta": {"note": "x", "sudo": 1}});
        assert!(s.check(&nested, true).is_err());
    }

    #[test]
    fn strict_mode_keeps_all_of_compositions_working() {
        let s = ToolSchema::compile(&json!({
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}},
                {"type": "object", "properties": {"b": {"type": "string"}}}
            ]
        }))
        .map_err(|e| e.to_string());
        let s = s.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.check(&json!({"a": "x", "b": "y"}), true), Ok(()));
        assert!(s.check(&json!({"a": "x", "c": "y"}), true).is_err());
    }

    #[test]
    fn explicit_additional_properties_are_respected() {
        let s = ToolSchema::compile(&json!({"type": "object", "properties": {}, "additionalProperties": true}));
        let s = s.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.check(&json!({"anything": 1}), true), Ok(()));
    }

    #[test]
    fn remote_and_file_references_do_not_compile() {
        for reference in ["https://example.com/schema.json", "file:///etc/passwd"] {
            let s = json!({"type": "object", "properties": {"x": {"$ref": reference}}});
            assert!(ToolSchema::compile(&s).is_err(), "{reference}");
        }
    }

    #[test]
    fn messages_do_not_echo_values() {
        let secret = "sk-live-0123456789abcdef";
        let errors = schema().check(&json!({"amount": secret, "to": "bob"}), false).err().unwrap_or_default();
        assert!(!errors.is_empty());
        assert!(errors.iter().all(|e| !e.message.contains(secret)), "{errors:?}");
    }

    #[test]
    fn cache_compiles_each_text_once() {
        let cache = SchemaCache::default();
        let a = cache.get(r#"{"type":"object"}"#);
        let b = cache.get(r#"{"type":"object"}"#);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(cache.get("not json").is_err());
    }
}
