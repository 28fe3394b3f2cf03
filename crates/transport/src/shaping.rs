//! A request's params reshaped for an upstream's era: the era's `_meta` keys
//! added or stripped and the progress token replaced by the gateway's own.
//!
//! The params are read once, borrowed (no copy of the arguments), and each
//! attempt writes the text before `_meta`, a new `_meta`, and the text after it:
//! everything outside `_meta` is forwarded byte for byte.

use std::borrow::Cow;
use std::fmt;

use portcullis_wire::envelope::json_string;
use portcullis_wire::object::Key;
use portcullis_wire::{Era, RawObject, meta};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::client::{ClientInfo, RequestOptions, UpstreamInfo};
use crate::link::Params;

/// The `_meta` keys that belong to the modern era (stripped for a legacy upstream).
const MODERN_KEYS: [&str; 4] = [meta::PROTOCOL_VERSION, meta::CLIENT_CAPABILITIES, meta::CLIENT_INFO, meta::LOG_LEVEL];

/// One JSON member: key (unescaped) and raw value text.
type Member<'a> = (Cow<'a, str>, Cow<'a, str>);

/// A request's params read once, rebuilt per attempt for the upstream's era.
pub(crate) struct Shaped<'a> {
    original: Option<&'a RawValue>,
    layout: Layout<'a>,
    /// The members of `_meta`, if it is present and an object.
    meta: Option<Vec<Member<'a>>>,
}

enum Layout<'a> {
    /// No params at all.
    Absent,
    /// An object: the text before and after the `_meta` value; without `_meta`, the split is
    /// before the closing brace and `"_meta":` (after a comma if there are members) goes in it.
    Object { head: &'a str, tail: &'a str, insert: Option<bool> },
    /// Not an object, or an object with `_meta` twice: rebuilt through a map, as JSON says.
    Other,
}

impl<'a> Shaped<'a> {
    /// Reads the params: the span of `_meta` and its members, borrowed.
    pub(crate) fn new(original: Option<&'a RawValue>) -> Self {
        let Some(raw) = original else { return Self { original, layout: Layout::Absent, meta: None } };
        let text = raw.get();
        let Ok(top) = serde_json::from_str::<TopLevel<'a>>(text) else {
            let meta = RawObject::parse(raw).and_then(|p| p.get("_meta").and_then(owned_members));
            return Self { original, layout: Layout::Other, meta };
        };
        let (layout, meta) = match top.meta {
            _ if top.duplicate_meta => (Layout::Other, None),
            Some(m) => match span(text, m.get()) {
                Some((start, end)) => {
                    (Layout::Object { head: &text[..start], tail: &text[end..], insert: None }, members(m.get()))
                }
                None => (Layout::Other, None),
            },
            None => match text.rfind('}') {
                Some(close) => {
                    (Layout::Object { head: &text[..close], tail: &text[close..], insert: Some(top.members > 0) }, None)
                }
                None => (Layout::Other, None),
            },
        };
        let meta = match layout {
            Layout::Other => RawObject::parse(raw).and_then(|p| p.get("_meta").and_then(owned_members)),
            _ => meta,
        };
        Self { original, layout, meta }
    }

    /// The params for one attempt, with gateway id `id`, for the upstream `info` describes.
    pub(crate) fn build(
        &self,
        id: u64,
        info: &UpstreamInfo,
        client: &ClientInfo,
        client_info_json: &RawValue,
        opts: &RequestOptions<'_>,
    ) -> Option<Params<'a>> {
        let modern = info.era() == Era::Modern;
        let has = |key: &str| self.meta.as_ref().is_some_and(|m| m.iter().any(|(k, _)| k == key));
        let has_token = has(meta::PROGRESS_TOKEN);
        if !modern && !has_token && !MODERN_KEYS.iter().any(|k| has(k)) {
            // Fast path: nothing to change (and nothing copied).
            return self.original.map(|raw| Params::Raw(Cow::Borrowed(raw)));
        }
        let mut m: Vec<Member<'_>> = self.meta.clone().unwrap_or_default();
        if has_token {
            // The gateway's own token, unique on this upstream; progress is mapped back per call.
            set(&mut m, meta::PROGRESS_TOKEN, Cow::Owned(id.to_string()));
        }
        if modern {
            set(&mut m, meta::PROTOCOL_VERSION, Cow::Owned(json_string(info.version.as_str())));
            if let Some(level) = opts.log_level
                && !m.iter().any(|(k, _)| k == meta::LOG_LEVEL)
                && info.has_capability("logging")
            {
                set(&mut m, meta::LOG_LEVEL, Cow::Owned(json_string(level)));
            }
            match opts.host_capabilities {
                Some(caps) => set(&mut m, meta::CLIENT_CAPABILITIES, Cow::Borrowed(caps.get())),
                None if !m.iter().any(|(k, _)| k == meta::CLIENT_CAPABILITIES) => {
                    set(&mut m, meta::CLIENT_CAPABILITIES, Cow::Borrowed(client.capabilities.get()));
                }
                None => {}
            }
            if !m.iter().any(|(k, _)| k == meta::CLIENT_INFO) {
                set(&mut m, meta::CLIENT_INFO, Cow::Borrowed(client_info_json.get()));
            }
        } else {
            m.retain(|(k, _)| !MODERN_KEYS.contains(&k.as_ref()));
        }
        let meta_len: usize = m.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>() + 2;
        let out = match &self.layout {
            Layout::Absent => {
                let mut out = String::with_capacity(meta_len + 12);
                out.push_str("{\"_meta\":");
                write_object(&mut out, &m);
                out.push('}');
                out
            }
            Layout::Object { head, tail, insert } => {
                let mut out = String::with_capacity(head.len() + tail.len() + meta_len + 10);
                out.push_str(head);
                match insert {
                    Some(true) => out.push_str(",\"_meta\":"),
                    Some(false) => out.push_str("\"_meta\":"),
                    None => {}
                }
                write_object(&mut out, &m);
                out.push_str(tail);
                out
            }
            Layout::Other => {
                let mut params = self.original.and_then(RawObject::parse).unwrap_or_default();
                let mut text = String::with_capacity(meta_len);
                write_object(&mut text, &m);
                params.insert_raw("_meta", RawValue::from_string(text).ok()?);
                return Some(Params::Raw(Cow::Owned(params.to_raw())));
            }
        };
        // Text before and after `_meta` cut from the params at member boundaries, and members
        // each of which is raw JSON read or a string written here: valid as it stands.
        Some(Params::Spliced(out))
    }
}

/// Sets a member, keeping its position if it exists (as a JSON object read in order does).
fn set<'a>(members: &mut Vec<Member<'a>>, key: &'static str, value: Cow<'a, str>) {
    match members.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => members.push((Cow::Borrowed(key), value)),
    }
}

fn write_object(out: &mut String, members: &[Member<'_>]) {
    out.push('{');
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match k {
            // A key read without escapes needs none (no quote, backslash or control character).
            Cow::Borrowed(k) => {
                out.push('"');
                out.push_str(k);
                out.push('"');
            }
            Cow::Owned(k) => out.push_str(&json_string(k)),
        }
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
}

/// Where `inner` (a slice of `outer`) lies in `outer`.
fn span(outer: &str, inner: &str) -> Option<(usize, usize)> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    let end = start.checked_add(inner.len())?;
    (end <= outer.len() && outer.get(start..end) == Some(inner)).then_some((start, end))
}

/// An object's members, borrowed; a repeated key keeps its first position and last value.
fn members(text: &str) -> Option<Vec<Member<'_>>> {
    let list = portcullis_wire::object::all_members(text)?;
    // Room for the members shaping adds.
    let mut out: Vec<Member<'_>> = Vec::with_capacity(list.len() + 4);
    out.extend(list.into_iter().map(|(k, v)| (k, Cow::Borrowed(v.get()))));
    Some(out)
}

fn owned_members(raw: &RawValue) -> Option<Vec<Member<'static>>> {
    let list = members(raw.get())?;
    Some(list.into_iter().map(|(k, v)| (Cow::Owned(k.into_owned()), Cow::Owned(v.into_owned()))).collect())
}

/// The top level of the params: `_meta`, borrowed, and how many members there are.
struct TopLevel<'a> {
    meta: Option<&'a RawValue>,
    members: usize,
    duplicate_meta: bool,
}

impl<'de> serde::Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut top = TopLevel { meta: None, members: 0, duplicate_meta: false };
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    top.members += 1;
                    if key == "_meta" {
                        top.duplicate_meta |= top.meta.is_some();
                        top.meta = Some(map.next_value::<&'de RawValue>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(top)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use portcullis_wire::object::raw;
    use portcullis_wire::{ProtocolVersion, RawObject};

    use super::*;

    fn client() -> ClientInfo {
        ClientInfo { name: "portcullis".to_owned(), version: "0.1.0".to_owned(), capabilities: raw(r#"{"roots":{}}"#) }
    }

    fn upstream(version: ProtocolVersion, caps: &str) -> UpstreamInfo {
        UpstreamInfo { version, capabilities: raw(caps), server_info: None, instructions: None }
    }

    fn opts<'a>(caps: Option<&'a RawValue>, level: Option<&'a str>) -> RequestOptions<'a> {
        RequestOptions {
            timeout: Duration::from_secs(1),
            name: None,
            host_capabilities: caps,
            param_headers: &[],
            log_level: level,
            authorization: None,
        }
    }

    fn shape(params: Option<&str>, info: &UpstreamInfo, opts: &RequestOptions<'_>) -> Option<String> {
        let params = params.map(raw);
        let client = client();
        let info_json = client.info_json();
        let built = Shaped::new(params.as_deref()).build(7, info, &client, &info_json, opts);
        let text = built.as_ref().map(|p| p.text().to_owned());
        // Spliced text is sent without being parsed again: every case here checks it is JSON.
        if let Some(text) = &text {
            assert!(serde_json::from_str::<serde_json::Value>(text).is_ok(), "not JSON: {text}");
        }
        text
    }

    /// The map-based shaping this module replaced, kept as the reference for compact input.
    fn reference(params: Option<&str>, info: &UpstreamInfo, opts: &RequestOptions<'_>) -> Option<String> {
        let original = params.map(raw);
        let client = client();
        let params = original.as_deref().and_then(RawObject::parse);
        let old_meta = params.as_ref().and_then(|p| p.get_object("_meta"));
        let modern = info.era() == Era::Modern;
        let has_token = old_meta.as_ref().is_some_and(|m| m.contains(meta::PROGRESS_TOKEN));
        if !modern && !has_token && old_meta.as_ref().is_none_or(|m| !MODERN_KEYS.iter().any(|k| m.contains(k))) {
            return original.map(|o| o.get().to_owned());
        }
        let mut params = params.unwrap_or_default();
        let mut m = old_meta.clone().unwrap_or_default();
        if has_token {
            m.insert(meta::PROGRESS_TOKEN, &7u64);
        }
        if modern {
            m.insert_str(meta::PROTOCOL_VERSION, info.version.as_str());
            if let Some(level) = opts.log_level
                && !m.contains(meta::LOG_LEVEL)
                && info.has_capability("logging")
            {
                m.insert_str(meta::LOG_LEVEL, level);
            }
            match opts.host_capabilities {
                Some(caps) => m.insert_raw(meta::CLIENT_CAPABILITIES, caps.to_owned()),
                None if !m.contains(meta::CLIENT_CAPABILITIES) => {
                    m.insert_raw(meta::CLIENT_CAPABILITIES, client.capabilities.clone());
                }
                None => {}
            }
            if !m.contains(meta::CLIENT_INFO) {
                m.insert(meta::CLIENT_INFO, &serde_json::json!({"name": client.name, "version": client.version}));
            }
        } else {
            for key in MODERN_KEYS {
                m.remove(key);
            }
        }
        if m.is_empty() && old_meta.is_none() {
            params.remove("_meta");
        } else {
            params.insert_object("_meta", &m);
        }
        Some(params.to_raw().get().to_owned())
    }

    const CASES: &[Option<&str>] = &[
        None,
        Some("{}"),
        Some(r#"{"name":"echo","arguments":{"text":"hi"}}"#),
        Some(r#"{"name":"echo","_meta":{"progressToken":"t-1","x":[1,2]},"arguments":{}}"#),
        Some(
            r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"host","version":"1"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{}},"io.modelcontextprotocol/logLevel":"debug"},"name":"echo"}"#,
        ),
        Some(r#"{"name":"a","_meta":{"k\"ey":1,"progressToken":3,"k\"ey":2}}"#),
        Some(r#"{"name":"a","_meta":7}"#),
        Some(r#"{"_meta":{"a":1},"name":"x","_meta":{"progressToken":1}}"#),
        Some(r#"{"cursor":"c1","_meta":{}}"#),
        Some("[1,2]"),
    ];

    #[test]
    fn matches_the_map_based_shaping_for_every_era_and_option() {
        let caps = raw(r#"{"elicitation":{}}"#);
        let upstreams = [
            upstream(ProtocolVersion::LATEST, r#"{"tools":{},"logging":{}}"#),
            upstream(ProtocolVersion::LATEST, r#"{"tools":{}}"#),
            upstream(ProtocolVersion::LATEST_LEGACY, r#"{"tools":{},"logging":{}}"#),
        ];
        let options = [opts(None, None), opts(Some(&caps), Some("info")), opts(None, Some("warning"))];
        for params in CASES {
            for info in &upstreams {
                for o in &options {
                    assert_eq!(
                        shape(*params, info, o),
                        reference(*params, info, o),
                        "params {params:?}, version {}",
                        info.version
                    );
                }
            }
        }
    }

    #[test]
    fn modern_request_gets_the_era_keys_and_keeps_the_rest_byte_for_byte() {
        let info = upstream(ProtocolVersion::LATEST, r#"{"tools":{}}"#);
        let params = r#"{ "name": "echo", "arguments": {"text": "a  b", "n": 1.50} }"#;
        assert_eq!(
            shape(Some(params), &info, &opts(None, None)).as_deref(),
            Some(concat!(
                r#"{ "name": "echo", "arguments": {"text": "a  b", "n": 1.50} ,"_meta":{"#,
                r#""io.modelcontextprotocol/protocolVersion":"2026-07-28","#,
                r#""io.modelcontextprotocol/clientCapabilities":{"roots":{}},"#,
                r#""io.modelcontextprotocol/clientInfo":{"name":"portcullis","version":"0.1.0"}}}"#
            ))
        );
        let with_token =
            r#"{"arguments": {"x": 1}, "_meta": {"progressToken": "host-token", "v": "x"}, "name": "echo"}"#;
        let caps = raw(r#"{"sampling":{}}"#);
        assert_eq!(
            shape(Some(with_token), &info, &opts(Some(&caps), None)).as_deref(),
            Some(concat!(
                r#"{"arguments": {"x": 1}, "_meta": {"progressToken":7,"v":"x","#,
                r#""io.modelcontextprotocol/protocolVersion":"2026-07-28","#,
                r#""io.modelcontextprotocol/clientCapabilities":{"sampling":{}},"#,
                r#""io.modelcontextprotocol/clientInfo":{"name":"portcullis","version":"0.1.0"}}, "name": "echo"}"#
            ))
        );
        assert_eq!(
            shape(None, &info, &opts(None, None)).as_deref(),
            Some(concat!(
                r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","#,
                r#""io.modelcontextprotocol/clientCapabilities":{"roots":{}},"#,
                r#""io.modelcontextprotocol/clientInfo":{"name":"portcullis","version":"0.1.0"}}}"#
            ))
        );
    }

    #[test]
    fn legacy_request_loses_the_modern_keys_and_keeps_its_token_mapped() {
        let info = upstream(ProtocolVersion::LATEST_LEGACY, r#"{"tools":{}}"#);
        let untouched = r#"{ "name": "echo", "_meta": {"x": 1} }"#;
        assert_eq!(shape(Some(untouched), &info, &opts(None, Some("debug"))).as_deref(), Some(untouched));
        assert_eq!(shape(None, &info, &opts(None, None)), None);
        let modern_host = r#"{"name":"echo","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","progressToken":"p","io.modelcontextprotocol/clientInfo":{"name":"h"}}}"#;
        assert_eq!(
            shape(Some(modern_host), &info, &opts(None, None)).as_deref(),
            Some(r#"{"name":"echo","_meta":{"progressToken":7}}"#)
        );
    }
}
