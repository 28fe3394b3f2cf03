//! A call's JSON arguments as a Cedar record, built directly from typed values and bounded in
//! depth and size so that no argument can exhaust the stack or the time of a decision.
//!
//! | JSON | Cedar |
//! | --- | --- |
//! | object | record (keys kept as they are; use `["a key"]` for keys that are not identifiers) |
//! | array | set (order and duplicates are lost) |
//! | string | string |
//! | integer in `i64` | `Long` |
//! | float with no fractional part, in `i64` | `Long` (so `1000.0` compares like `1000`) |
//! | other float within ±9.2e14 | `decimal`, rounded to 4 places |
//! | bool | `Bool` |
//! | `null`, and integers or floats outside the ranges above | left out |
//!
//! Whatever is left out for being `null` leaves no trace; whatever is left out for its size or
//! range sets `context.argumentsTruncated`.

use cedar_policy::RestrictedExpression;
use serde_json::Value;

/// Deepest nesting of arguments kept; the arguments object itself is level 1.
pub const MAX_DEPTH: usize = 16;
/// Most values (of any kind, at any depth) kept from one call's arguments.
pub const MAX_VALUES: usize = 4096;
/// Longest string argument kept, in bytes.
pub const MAX_STRING_BYTES: usize = 64 * 1024;

/// The largest magnitude a Cedar `decimal` holds (its range is `i64` over 10^4), rounded down.
const DECIMAL_LIMIT: f64 = 9.2e14;
/// The largest magnitude below which every float with no fractional part converts to `i64` exactly.
const LONG_LIMIT: f64 = 9.2e18;

/// A call's arguments, as Cedar will see them.
pub(crate) struct Arguments {
    /// The record for `context.arguments`.
    pub(crate) record: RestrictedExpression,
    /// Whether anything was left out for its size, depth or range.
    pub(crate) truncated: bool,
}

impl Arguments {
    /// The empty record, as in the list phase.
    pub(crate) fn empty() -> Self {
        Self { record: empty_record(), truncated: false }
    }

    /// Converts `value`, which should be a JSON object; anything else yields an empty, truncated record.
    pub(crate) fn convert(value: Option<&Value>) -> Self {
        match value {
            None | Some(Value::Null) => Self::empty(),
            Some(Value::Object(_)) => {
                let mut converter = Converter { budget: MAX_VALUES, truncated: false, build: Cedar };
                let record = value.and_then(|v| converter.value(v, 1)).unwrap_or_else(empty_record);
                Self { record, truncated: converter.truncated }
            }
            Some(_) => Self { record: empty_record(), truncated: true },
        }
    }

    /// Arguments no policy reads: the empty record, and whether converting them would truncate them.
    pub(crate) fn unread(truncated: bool) -> Self {
        Self { record: empty_record(), truncated }
    }

    /// Whether [`Arguments::convert`] would leave anything of `value` out, without converting it.
    pub(crate) fn would_truncate(value: Option<&Value>) -> bool {
        match value {
            None | Some(Value::Null) => false,
            Some(Value::Object(_)) => {
                let mut converter = Converter { budget: MAX_VALUES, truncated: false, build: Nothing };
                if let Some(value) = value {
                    converter.value(value, 1);
                }
                converter.truncated
            }
            Some(_) => true,
        }
    }
}

fn empty_record() -> RestrictedExpression {
    // An empty record has no duplicate keys, so this cannot fail; the fallback keeps it total.
    RestrictedExpression::new_record(std::iter::empty()).unwrap_or_else(|_| RestrictedExpression::new_set([]))
}

/// What a [`Converter`] makes of the values it keeps.
trait Build {
    type Out;
    fn bool(&self, b: bool) -> Self::Out;
    fn string(&self, s: &str) -> Self::Out;
    fn long(&self, i: i64) -> Self::Out;
    /// A float within `decimal`'s range, rounded to 4 places.
    fn decimal(&self, f: f64) -> Self::Out;
    fn set(&self, members: Vec<Self::Out>) -> Self::Out;
    fn record(&self, fields: Vec<(&str, Self::Out)>) -> Option<Self::Out>;
}

/// Builds Cedar values.
struct Cedar;

impl Build for Cedar {
    type Out = RestrictedExpression;
    fn bool(&self, b: bool) -> Self::Out {
        RestrictedExpression::new_bool(b)
    }
    fn string(&self, s: &str) -> Self::Out {
        RestrictedExpression::new_string(s.to_owned())
    }
    fn long(&self, i: i64) -> Self::Out {
        RestrictedExpression::new_long(i)
    }
    fn decimal(&self, f: f64) -> Self::Out {
        RestrictedExpression::new_decimal(format!("{f:.4}"))
    }
    fn set(&self, members: Vec<Self::Out>) -> Self::Out {
        RestrictedExpression::new_set(members)
    }
    fn record(&self, fields: Vec<(&str, Self::Out)>) -> Option<Self::Out> {
        // A JSON object's keys are unique, so the record cannot have duplicates.
        RestrictedExpression::new_record(fields.into_iter().map(|(k, v)| (k.to_owned(), v))).ok()
    }
}

/// Builds nothing (and allocates nothing: a `Vec<()>` never does), only walks.
struct Nothing;

impl Build for Nothing {
    type Out = ();
    fn bool(&self, _: bool) {}
    fn string(&self, _: &str) {}
    fn long(&self, _: i64) {}
    fn decimal(&self, _: f64) {}
    fn set(&self, _: Vec<()>) {}
    fn record(&self, _: Vec<(&str, ())>) -> Option<()> {
        Some(())
    }
}

struct Converter<B> {
    /// How many more values may be kept.
    budget: usize,
    truncated: bool,
    build: B,
}

impl<B: Build> Converter<B> {
    /// The Cedar form of `value` at nesting `depth`, or `None` when it is left out.
    fn value(&mut self, value: &Value, depth: usize) -> Option<B::Out> {
        if self.budget == 0 || depth > MAX_DEPTH {
            self.truncated = true;
            return None;
        }
        self.budget -= 1;
        match value {
            Value::Null => None,
            Value::Bool(b) => Some(self.build.bool(*b)),
            Value::String(s) if s.len() > MAX_STRING_BYTES => {
                self.truncated = true;
                None
            }
            Value::String(s) => Some(self.build.string(s)),
            Value::Number(n) => {
                let converted = self.number(n);
                self.truncated |= converted.is_none();
                converted
            }
            Value::Array(items) => {
                let mut members = Vec::with_capacity(items.len().min(self.budget));
                for item in items {
                    if let Some(member) = self.value(item, depth + 1) {
                        members.push(member);
                    }
                }
                Some(self.build.set(members))
            }
            Value::Object(map) => {
                let mut fields = Vec::with_capacity(map.len().min(self.budget));
                for (key, item) in map {
                    if let Some(field) = self.value(item, depth + 1) {
                        fields.push((key.as_str(), field));
                    }
                }
                self.build.record(fields)
            }
        }
    }

    fn number(&self, n: &serde_json::Number) -> Option<B::Out> {
        if let Some(i) = n.as_i64() {
            return Some(self.build.long(i));
        }
        if n.is_u64() {
            // Beyond `i64::MAX`: no Cedar number holds it.
            return None;
        }
        let f = n.as_f64()?;
        if f.fract() == 0.0 && f.abs() < LONG_LIMIT {
            // Exact: the value is integral and within range.
            return Some(self.build.long(f as i64));
        }
        if f.is_finite() && f.abs() < DECIMAL_LIMIT {
            return Some(self.build.decimal(f));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(arguments: &Arguments) -> String {
        let context = cedar_policy::Context::from_pairs([("a".to_owned(), arguments.record.clone())]);
        match context {
            Ok(context) => context.get("a").map(|v| v.to_string()).unwrap_or_default(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn converts_each_json_kind() {
        let args = Arguments::convert(Some(&json!({
            "s": "x", "n": 7, "f": 2.5, "whole": 1000.0, "b": true, "nothing": null, "list": [1, 1, 2], "o": {"k": "v"}
        })));
        assert!(!args.truncated);
        let text = render(&args);
        for part in
            [r#""s": "x""#, r#""n": 7"#, r#""whole": 1000"#, r#""b": true"#, r#""k": "v""#, "decimal(\"2.5000\")"]
        {
            assert!(text.contains(part), "{part} in {text}");
        }
        assert!(!text.contains("nothing"), "{text}");
    }

    #[test]
    fn out_of_range_numbers_are_left_out_and_noted() {
        let args = Arguments::convert(Some(&json!({ "big": u64::MAX, "huge": 1e300, "ok": 1 })));
        assert!(args.truncated);
        let text = render(&args);
        assert!(!text.contains("big") && !text.contains("huge") && text.contains("ok"), "{text}");
    }

    #[test]
    fn deep_nesting_is_cut_at_the_bound() {
        let mut deep = json!("bottom");
        for _ in 0..500 {
            deep = json!({ "d": deep });
        }
        let args = Arguments::convert(Some(&deep));
        assert!(args.truncated);
        assert!(!render(&args).contains("bottom"));
    }

    #[test]
    fn too_many_values_are_cut_at_the_budget() {
        let many: Vec<u32> = (0..10 * MAX_VALUES as u32).collect();
        let args = Arguments::convert(Some(&json!({ "many": many })));
        assert!(args.truncated);
        assert!(!render(&args).starts_with("error"));
    }

    #[test]
    fn long_strings_are_left_out() {
        let args = Arguments::convert(Some(&json!({ "long": "x".repeat(MAX_STRING_BYTES + 1) })));
        assert!(args.truncated);
        assert_eq!(render(&args), "{}");
    }

    #[test]
    fn non_object_arguments_become_an_empty_truncated_record() {
        let args = Arguments::convert(Some(&json!([1, 2])));
        assert!(args.truncated);
        assert_eq!(render(&args), "{}");
        assert!(!Arguments::convert(None).truncated);
    }

    #[test]
    fn would_truncate_agrees_with_convert() {
        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!({ "d": deep });
        }
        let many: Vec<u32> = (0..2 * MAX_VALUES as u32).collect();
        let inputs = [
            json!(null),
            json!({}),
            json!([1]),
            json!("text"),
            json!({ "a": 1, "b": "x", "c": [true, null], "d": { "e": 2.5 } }),
            json!({ "big": u64::MAX }),
            json!({ "huge": 1e300, "ok": 1 }),
            json!({ "long": "x".repeat(MAX_STRING_BYTES + 1) }),
            json!({ "many": many }),
            deep,
        ];
        for input in &inputs {
            assert_eq!(Arguments::would_truncate(Some(input)), Arguments::convert(Some(input)).truncated, "{input}");
        }
        assert!(!Arguments::would_truncate(None));
    }
}
