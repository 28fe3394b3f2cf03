//! A JSON object parsed one level deep: keys in their original order, values
//! kept as raw JSON. Used to read or rewrite one field without touching the rest;
//! [`member`] and [`members`] read fields without building the object at all, and [`string`]
//! reads one as a string.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use indexmap::IndexMap;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A JSON object with raw values.
#[derive(Debug, Clone, Default)]
pub struct RawObject(IndexMap<String, Box<RawValue>>);

impl RawObject {
    /// Parses a raw JSON object; `None` if it is not one.
    pub fn parse(raw: &RawValue) -> Option<Self> {
        serde_json::from_str(raw.get()).ok().map(Self)
    }

    /// Parses from a string slice; `None` if it is not an object.
    pub fn parse_str(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok().map(Self)
    }

    /// The raw value of a key.
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.get(key).map(|b| &**b)
    }

    /// A key's value as a string, if it is one.
    pub fn get_str(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    }

    /// A key's value as a nested object.
    pub fn get_object(&self, key: &str) -> Option<RawObject> {
        self.get(key).and_then(RawObject::parse)
    }

    /// Sets a key to raw JSON, keeping its position if it exists.
    pub fn insert_raw(&mut self, key: &str, value: Box<RawValue>) {
        self.0.insert(key.to_owned(), value);
    }

    /// Sets a key to a serializable value.
    pub fn insert<T: serde::Serialize>(&mut self, key: &str, value: &T) {
        if let Ok(raw) = serde_json::value::to_raw_value(value) {
            self.insert_raw(key, raw);
        }
    }

    /// Sets a key to a string.
    pub fn insert_str(&mut self, key: &str, value: &str) {
        self.insert(key, &value);
    }

    /// Sets a key to a nested object.
    pub fn insert_object(&mut self, key: &str, value: &RawObject) {
        self.insert_raw(key, value.to_raw());
    }

    /// Removes a key, keeping the order of the rest.
    pub fn remove(&mut self, key: &str) -> Option<Box<RawValue>> {
        self.0.shift_remove(key)
    }

    /// Whether the key is present.
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Whether the object has no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates the keys and raw values in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RawValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), &**v))
    }

    /// Serializes back to raw JSON: keys escaped, values copied as they are (valid already, so
    /// the text is not parsed again to check it).
    pub fn to_raw(&self) -> Box<RawValue> {
        // A map of strings to raw values cannot fail to serialize.
        serde_json::value::to_raw_value(&self.0).unwrap_or_else(|_| empty_object())
    }
}

/// `{}` as raw JSON.
pub fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_default()
}

/// The raw value of `key` in a JSON object, borrowed from its text: one scan, no map built, the
/// other members checked and skipped without being kept. The last of duplicate keys, as
/// [`RawObject::parse`] keeps it; `None` if `object` is not an object or has no such key.
pub fn member<'a>(object: &'a RawValue, key: &str) -> Option<&'a RawValue> {
    members(object, [key]).and_then(|[value]| value)
}

/// The raw values of several members of a JSON object, as [`member`] finds each, in one scan;
/// `None` if `object` is not an object. The keys must differ from each other (a repeated key
/// fills only its first slot).
pub fn members<'a, const N: usize>(object: &'a RawValue, keys: [&str; N]) -> Option<[Option<&'a RawValue>; N]> {
    debug_assert!(keys.iter().enumerate().all(|(i, k)| !keys[..i].contains(k)), "repeated key in {keys:?}");
    struct Find<'k, const N: usize>([&'k str; N]);
    impl<'de, const N: usize> de::DeserializeSeed<'de> for Find<'_, N> {
        type Value = [Option<&'de RawValue>; N];
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de, const N: usize> Visitor<'de> for Find<'_, N> {
        type Value = [Option<&'de RawValue>; N];
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = [None; N];
            while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                match self.0.iter().position(|key| *key == k) {
                    Some(i) => found[i] = Some(map.next_value::<&'de RawValue>()?),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(found)
        }
    }
    let mut d = serde_json::Deserializer::from_str(object.get());
    let found = de::DeserializeSeed::deserialize(Find(keys), &mut d).ok()?;
    d.end().ok()?;
    Some(found)
}

/// Every member of a JSON object, borrowed from its text, in order: a repeated key keeps its
/// first position and its last value (as [`RawObject::parse`] and [`member`] read it). `None` if
/// `text` is not one JSON object.
pub fn all_members(text: &str) -> Option<Vec<(Cow<'_, str>, &RawValue)>> {
    /// Up to this many members, a repeated key is found by scanning them.
    const SCAN_LIMIT: usize = 16;
    struct All;
    impl<'de> de::DeserializeSeed<'de> for All {
        type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for All {
        type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut list: Self::Value = Vec::with_capacity(map.size_hint().unwrap_or(4));
            // Past a few members, repeats are found through an index (a host's object of
            // thousands of keys must not cost a scan of the list per key).
            let mut index: Option<HashMap<Cow<'de, str>, usize>> = None;
            while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                let value = map.next_value::<&'de RawValue>()?;
                let seen = match &index {
                    Some(index) => index.get(&key).copied(),
                    None => list.iter().position(|(k, _)| *k == key),
                };
                if let Some(i) = seen {
                    list[i].1 = value;
                    continue;
                }
                if let Some(index) = &mut index {
                    index.insert(key.clone(), list.len());
                }
                list.push((key, value));
                if index.is_none() && list.len() > SCAN_LIMIT {
                    index = Some(list.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect());
                }
            }
            Ok(list)
        }
    }
    let mut d = serde_json::Deserializer::from_str(text);
    let list = de::DeserializeSeed::deserialize(All, &mut d).ok()?;
    d.end().ok()?;
    Some(list)
}

/// The JSON object `object` with `key` set to `value`: in its place when present (a repeated key
/// once, in its first place, as [`all_members`] reads it), else last. The other members are copied
/// as they are; one scan and one write, no map of owned keys and values built. The same text as
/// parsing into a [`RawObject`], inserting and [`RawObject::to_raw`]. `None` if `object` is not
/// one JSON object.
pub fn with_member<'a>(object: &'a str, key: &'a str, value: &'a RawValue) -> Option<Box<RawValue>> {
    struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);
    impl serde::Serialize for Members<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap as _;
            let mut map = s.serialize_map(Some(self.0.len()))?;
            for (k, v) in &self.0 {
                map.serialize_entry(k.as_ref(), v)?;
            }
            map.end()
        }
    }
    let mut list = all_members(object)?;
    match list.iter_mut().find(|(k, _)| k == key) {
        Some(member) => member.1 = value,
        None => list.push((Cow::Borrowed(key), value)),
    }
    // Keys are escaped as they are written and values are valid JSON already: the text is trusted,
    // not parsed again. A map of strings to raw values cannot fail to serialize.
    Some(serde_json::value::to_raw_value(&Members(list)).unwrap_or_else(|_| empty_object()))
}

/// A string member's value, unescaped; `None` if it is absent or not a string.
pub fn string(value: Option<&RawValue>) -> Option<String> {
    value.and_then(|v| serde_json::from_str::<String>(v.get()).ok())
}

/// An object's key as read: borrowed from the text unless escapes made it a copy.
#[derive(Debug)]
pub struct Key<'a>(pub Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Builds raw JSON from text, falling back to `null` for invalid text.
pub fn raw(text: impl Into<String>) -> Box<RawValue> {
    RawValue::from_string(text.into()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_member_sets_in_place_or_last_and_refuses_what_is_not_one_object() {
        let v = raw("true");
        let set = |text: &str| with_member(text, "b", &v).map(|r| r.get().to_owned());
        assert_eq!(set(r#"{"a":1,"b":2,"c":[3, 4]}"#).as_deref(), Some(r#"{"a":1,"b":true,"c":[3, 4]}"#));
        assert_eq!(set(r#" {"a":{"b":0}} "#).as_deref(), Some(r#"{"a":{"b":0},"b":true}"#));
        for text in ["", "null", "[1]", r#"{"a":1} {}"#, r#"{"a":}"#] {
            assert_eq!(set(text), None, "{text:?}");
        }
    }

    #[test]
    fn all_members_borrow_in_order_and_keep_the_last_of_a_repeated_key_in_its_first_place() {
        let text = r#"{"a":1,"b\u0041":[2, 3],"a":{"x":"y"},"c":null}"#;
        let list = all_members(text).expect("an object");
        let got: Vec<(&str, &str)> = list.iter().map(|(k, v)| (k.as_ref(), v.get())).collect();
        assert_eq!(got, [("a", r#"{"x":"y"}"#), ("bA", "[2, 3]"), ("c", "null")]);
        // A key is the text's own slice unless it had an escape.
        assert!(matches!(list[0].0, Cow::Borrowed(_)));
        assert!(matches!(list[1].0, Cow::Owned(_)));
        // A repeat written with an escape is the same key.
        let escaped = all_members(r#"{"a":1,"\u0061":2}"#).expect("an object");
        assert_eq!(escaped.iter().map(|(k, v)| (k.as_ref(), v.get())).collect::<Vec<_>>(), [("a", "2")]);
        // Past the scan limit the index keeps the same rule.
        let many: Vec<String> = (0..40).map(|i| format!("\"k{}\":{i}", i % 25)).collect();
        let text = format!("{{{}}}", many.join(","));
        let list = all_members(&text).expect("an object");
        assert_eq!(list.len(), 25);
        assert_eq!((list[0].0.as_ref(), list[0].1.get()), ("k0", "25"));
        assert_eq!((list[14].0.as_ref(), list[14].1.get()), ("k14", "39"));
        assert_eq!((list[24].0.as_ref(), list[24].1.get()), ("k24", "24"));
        assert_eq!(all_members(" {} ").map(|l| l.len()), Some(0));
        for bad in ["[1]", "\"a\"", "{\"a\":1} x", "{\"a\":}", "{\"a\":1", ""] {
            assert!(all_members(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn rewrites_one_key_and_keeps_the_rest_byte_for_byte() {
        let input = raw(r#"{"name":"search","x-vendor":{"a": [1, 2.50]},"_meta":{"k":true}}"#);
        let mut obj = RawObject::parse(&input).expect("object");
        obj.insert_str("name", "demo__search");
        assert_eq!(obj.to_raw().get(), r#"{"name":"demo__search","x-vendor":{"a": [1, 2.50]},"_meta":{"k":true}}"#);
    }

    #[test]
    fn a_member_is_found_without_building_the_object_and_agrees_with_the_map() {
        let cases = [
            r#"{"a":1,"_meta":{"progressToken":"t-1","x":[1,{"y":2}]},"z":"w"}"#,
            r#"{"_meta":{"progress\u0054oken":7}}"#,
            r#"{"_meta":{"progressToken":1,"progressToken":2}}"#,
            r#"{"_meta":{}}"#,
            r#"{"_meta":[1]}"#,
            r#"{"_meta":null}"#,
            r#"{"_meta":{"progressToken":null}}"#,
            r#"{"\u005fmeta":{"progressToken":"escaped"}}"#,
            r#"{"x":{"_meta":{"progressToken":3}}}"#,
            r#"[1]"#,
            r#""_meta""#,
        ];
        for text in cases {
            let value = raw(text);
            let by_map = RawObject::parse(&value)
                .and_then(|o| o.get_object("_meta"))
                .and_then(|m| m.get("progressToken").map(|v| v.get().to_owned()));
            let borrowed = member(&value, "_meta").and_then(|m| member(m, "progressToken")).map(|v| v.get().to_owned());
            assert_eq!(borrowed, by_map, "{text}");
        }
        let value =
            raw(r#"{"name":"echo","_meta":{"progressToken":"t-1"},"arguments":{"name":"inner"},"name":"last"}"#);
        let [name, arguments, absent] = members(&value, ["name", "arguments", "absent"]).expect("object");
        assert_eq!(
            (string(name).as_deref(), arguments.map(RawValue::get), absent.map(RawValue::get)),
            (Some("last"), Some(r#"{"name":"inner"}"#), None)
        );
        assert!(members(&raw("[1]"), ["name"]).is_none());
        assert_eq!(string(member(&value, "arguments")), None);
        assert_eq!(
            member(&value, "_meta").and_then(|m| member(m, "progressToken")).map(RawValue::get),
            Some(r#""t-1""#)
        );
        assert_eq!(member(&value, "missing").map(RawValue::get), None);
    }

    #[test]
    fn serializes_escaped_keys_and_the_last_duplicate_as_valid_json() {
        let input = raw(r#"{"a\"b":1,"\u00e9\n":"x\u0001y","a\"b":[2, {"c" : null}],"n":-1.5e3}"#);
        let obj = RawObject::parse(&input).expect("object");
        let out = obj.to_raw();
        // The first key's place, the last value, values byte for byte, keys escaped anew.
        assert_eq!(out.get(), "{\"a\\\"b\":[2, {\"c\" : null}],\"é\\n\":\"x\\u0001y\",\"n\":-1.5e3}");
        let reread: serde_json::Value = serde_json::from_str(out.get()).expect("valid JSON");
        assert_eq!(reread, serde_json::json!({"a\"b": [2, {"c": null}], "é\n": "x\u{1}y", "n": -1500.0}));
        assert_eq!(RawObject::default().to_raw().get(), "{}");
    }

    #[test]
    fn rejects_non_objects() {
        assert!(RawObject::parse(&raw("[1]")).is_none());
        assert!(RawObject::parse(&raw("3")).is_none());
    }
}
