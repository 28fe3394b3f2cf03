//! `x-mcp-header` (2026-07-28): tool input properties mirrored into
//! `Mcp-Param-{Name}` HTTP headers, and the rules a tool definition must keep.

use serde_json::Value;

/// One annotated property: the header suffix and the path of `properties` keys to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamHeader {
    pub name: String,
    pub path: Vec<String>,
}

/// Reads the annotations of a tool's input schema; `Err` if the tool definition breaks the
/// rules (such a tool must not be exposed).
pub fn from_schema(schema: &Value) -> Result<Vec<ParamHeader>, String> {
    let mut out = Vec::new();
    walk(schema, &mut Vec::new(), &mut out)?;
    for (i, a) in out.iter().enumerate() {
        if out[..i].iter().any(|b| b.name.eq_ignore_ascii_case(&a.name)) {
            return Err(format!("x-mcp-header '{}' is used twice", a.name));
        }
    }
    Ok(out)
}

fn walk(schema: &Value, path: &mut Vec<String>, out: &mut Vec<ParamHeader>) -> Result<(), String> {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Ok(());
    };
    for (key, sub) in props {
        path.push(key.clone());
        if let Some(h) = sub.get("x-mcp-header") {
            let name = h.as_str().ok_or("x-mcp-header must be a string")?;
            if name.is_empty() || !name.bytes().all(is_tchar) {
                return Err(format!("x-mcp-header '{name}' is not an HTTP token"));
            }
            let primitive = matches!(sub.get("type").and_then(Value::as_str), Some("string" | "integer" | "boolean"));
            if !primitive {
                return Err(format!(
                    "x-mcp-header '{name}' annotates a property that is not a string, integer or boolean"
                ));
            }
            out.push(ParamHeader { name: name.to_owned(), path: path.clone() });
        }
        walk(sub, path, out)?;
        path.pop();
    }
    Ok(())
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The header value for one annotated property of a call's arguments (`None` when absent or null).
pub fn value_at(arguments: &Value, path: &[String]) -> Option<String> {
    let mut v = arguments;
    for key in path {
        v = v.get(key)?;
    }
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => {
            let i = n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))?;
            (i.unsigned_abs() < (1u64 << 53)).then(|| i.to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_nested_annotations() {
        let schema = json!({"type":"object","properties":{
            "region":{"type":"string","x-mcp-header":"Region"},
            "opts":{"type":"object","properties":{"dry":{"type":"boolean","x-mcp-header":"Dry-Run"}}}}});
        let h = from_schema(&schema).expect("valid");
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].path, vec!["opts".to_owned(), "dry".to_owned()]);
        let args = json!({"region":"us-west1","opts":{"dry":true}});
        assert_eq!(value_at(&args, &h[0].path).as_deref(), Some("us-west1"));
        assert_eq!(value_at(&args, &h[1].path).as_deref(), Some("true"));
        assert_eq!(value_at(&json!({}), &h[0].path), None);
    }

    #[test]
    fn rejects_invalid_definitions() {
        for schema in [
            json!({"properties":{"a":{"type":"number","x-mcp-header":"A"}}}),
            json!({"properties":{"a":{"type":"string","x-mcp-header":"bad name"}}}),
            json!({"properties":{"a":{"type":"string","x-mcp-header":""}}}),
            json!({"properties":{"a":{"type":"string","x-mcp-header":"X"},"b":{"type":"string","x-mcp-header":"x"}}}),
        ] {
            assert!(from_schema(&schema).is_err(), "{schema}");
        }
    }
}
