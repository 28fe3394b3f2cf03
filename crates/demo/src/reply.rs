//! A result on its way out: its body plus what the modern era adds to every result
//! (`resultType`, `_meta` serverInfo, and `ttlMs`/`cacheScope` on cacheable ones).

use std::borrow::Cow;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::meta::SERVER_INFO;
use crate::server::IMPLEMENTATION;

/// A successful result, before era-specific fields are added.
#[derive(Debug)]
pub struct Reply<'a> {
    /// What the method returned.
    pub body: Body<'a>,
    /// Set on results 2026-07-28 calls cacheable.
    pub cache: Option<CacheHint>,
}

/// The method-specific part of a result.
#[derive(Debug)]
pub enum Body<'a> {
    /// A result built as a JSON object.
    Object(Map<String, Value>),
    /// A `tools/call` result with one text block, serialized without building a JSON tree (the `echo` path).
    Tool(ToolResult<'a>),
}

/// A `CallToolResult` with a single text content block.
#[derive(Debug)]
pub struct ToolResult<'a> {
    /// The text block.
    pub text: Cow<'a, str>,
    /// `structuredContent`, for tools with an `outputSchema`.
    pub structured: Option<Value>,
    /// A tool execution error (reported to the model), not a protocol error.
    pub is_error: bool,
}

/// How long any cache (the results hold no per-user data, so scope is public) may reuse a result.
#[derive(Debug, Clone, Copy)]
pub struct CacheHint {
    pub ttl_ms: u64,
}

impl<'a> Reply<'a> {
    /// A plain object result.
    pub fn object(body: Value) -> Reply<'a> {
        let body = match body {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Reply { body: Body::Object(body), cache: None }
    }

    /// A cacheable object result.
    pub fn cacheable(body: Value, ttl_ms: u64) -> Reply<'a> {
        Reply { cache: Some(CacheHint { ttl_ms }), ..Reply::object(body) }
    }

    /// A tool result.
    pub fn tool(result: ToolResult<'a>) -> Reply<'a> {
        Reply { body: Body::Tool(result), cache: None }
    }

    /// The result as sent in the given era.
    pub fn in_era(&self, modern: bool) -> Stamped<'_, 'a> {
        Stamped { reply: self, modern }
    }
}

/// A reply ready to serialize as the `result` member.
pub struct Stamped<'r, 'a> {
    reply: &'r Reply<'a>,
    modern: bool,
}

impl Serialize for Stamped<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match &self.reply.body {
            Body::Object(object) => {
                for (key, value) in object {
                    map.serialize_entry(key, value)?;
                }
            }
            Body::Tool(tool) => {
                map.serialize_entry("content", &TextBlock(&tool.text))?;
                if let Some(structured) = &tool.structured {
                    map.serialize_entry("structuredContent", structured)?;
                }
                if tool.is_error {
                    map.serialize_entry("isError", &true)?;
                }
            }
        }
        if self.modern {
            map.serialize_entry("resultType", "complete")?;
            if let Some(cache) = self.reply.cache {
                map.serialize_entry("ttlMs", &cache.ttl_ms)?;
                map.serialize_entry("cacheScope", "public")?;
            }
            map.serialize_entry("_meta", &ResultMeta)?;
        }
        map.end()
    }
}

/// `[{"type":"text","text":…}]`
struct TextBlock<'t>(&'t str);

impl Serialize for TextBlock<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Text<'t> {
            #[serde(rename = "type")]
            kind: &'static str,
            text: &'t str,
        }
        let mut seq = serializer.serialize_seq(Some(1))?;
        seq.serialize_element(&Text { kind: "text", text: self.0 })?;
        seq.end()
    }
}

/// `{"io.modelcontextprotocol/serverInfo": {...}}`
struct ResultMeta;

impl Serialize for ResultMeta {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(SERVER_INFO, &IMPLEMENTATION)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_value(reply: &Reply<'_>, modern: bool) -> Value {
        serde_json::to_value(reply.in_era(modern)).expect("serializable")
    }

    #[test]
    fn legacy_result_is_the_bare_body() {
        let reply = Reply::cacheable(serde_json::json!({"tools": []}), 1000);
        assert_eq!(to_value(&reply, false), serde_json::json!({"tools": []}));
    }

    #[test]
    fn modern_result_carries_result_type_server_info_and_cache_hints() {
        let v = to_value(&Reply::cacheable(serde_json::json!({"tools": []}), 1000), true);
        assert_eq!(v["resultType"], "complete");
        assert_eq!(v["ttlMs"], 1000);
        assert_eq!(v["cacheScope"], "public");
        assert_eq!(v["_meta"][SERVER_INFO]["name"], "portcullis-demo");
        let v = to_value(&Reply::object(serde_json::json!({})), true);
        assert!(v.get("ttlMs").is_none());
    }

    #[test]
    fn tool_result_serializes_text_block_and_error_flag() {
        let reply = Reply::tool(ToolResult { text: Cow::Borrowed("hi"), structured: None, is_error: true });
        let v = to_value(&reply, false);
        assert_eq!(v, serde_json::json!({"content": [{"type": "text", "text": "hi"}], "isError": true}));
    }
}
