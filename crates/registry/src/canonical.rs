//! RFC 8785 JSON Canonicalization Scheme (JCS) over `serde_json::Value`, and
//! the `sha256:` hash of the canonical bytes that pins an item's metadata.
//!
//! Object keys are sorted by their UTF-16 code units, nothing is indented,
//! strings carry only the mandatory escapes and numbers are written as
//! ECMAScript's `Number.prototype.toString` writes the IEEE 754 double they
//! denote. Integers beyond ±2^53 are therefore rounded to the nearest double,
//! as every other JCS implementation does: two schemas that differ only in
//! the low digits of such an integer hash alike, the price of interoperable
//! hashes.

use std::cmp::Ordering;

use serde_json::{Number, Value};
use sha2::{Digest, Sha256};

/// The RFC 8785 canonical serialization of `v`.
pub fn canonicalize(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

/// `sha256:` followed by the lowercase hex SHA-256 of `v`'s canonical UTF-8 bytes.
pub fn hash(v: &Value) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(canonicalize(v).as_bytes());
    let mut out = String::with_capacity("sha256:".len() + 2 * digest.len());
    out.push_str("sha256:");
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// The largest integer magnitude below which every integer is an exact double.
const MAX_SAFE_INTEGER: u64 = 1 << 53;

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| utf16_cmp(a.0, b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, value);
            }
            out.push('}');
        }
    }
}

/// Orders strings by UTF-16 code units, as RFC 8785 §3.2.3 requires (this
/// differs from byte order for characters above U+FFFF versus U+E000–U+FFFF).
fn utf16_cmp(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(u) = n.as_u64() {
        if u <= MAX_SAFE_INTEGER {
            out.push_str(&u.to_string());
        } else {
            write_double(out, u as f64);
        }
    } else if let Some(i) = n.as_i64() {
        if i.unsigned_abs() <= MAX_SAFE_INTEGER {
            out.push_str(&i.to_string());
        } else {
            write_double(out, i as f64);
        }
    } else if let Some(f) = n.as_f64() {
        write_double(out, f);
    } else {
        // Only reachable with serde_json's arbitrary_precision, which this workspace does not enable.
        out.push_str(&n.to_string());
    }
}

/// ECMAScript `Number::toString(x)` (ECMA-262 §6.1.6.1.20) for a finite double.
fn write_double(out: &mut String, f: f64) {
    if f == 0.0 {
        // Both +0 and -0.
        out.push('0');
        return;
    }
    if !f.is_finite() {
        // serde_json cannot hold these; JSON.stringify writes null.
        out.push_str("null");
        return;
    }
    if f < 0.0 {
        out.push('-');
    }
    // Rust's `{:e}` yields the fewest digits that round-trip, as ECMAScript requires, but
    // not always the closest such digits on a tie (1424953923781206.25 gives …063, not
    // …062); `{:.p e}` rounds the exact value half-to-even, so prefer it when it round-trips.
    let shortest = format!("{:e}", f.abs());
    let precision = shortest.split_once('e').map_or(0, |(m, _)| m.len().saturating_sub(2));
    let closest = format!("{:.*e}", precision, f.abs());
    let scientific = if closest.parse::<f64>() == Ok(f.abs()) { closest } else { shortest };
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        out.push_str(&scientific);
        return;
    };
    let Ok(exponent) = exponent.parse::<i32>() else {
        out.push_str(&scientific);
        return;
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    // ECMAScript's k (digit count) and n (position of the decimal point).
    let k = digits.len() as i32;
    let n = exponent + 1;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if n >= 1 { '+' } else { '-' });
        out.push_str(&(n - 1).unsigned_abs().to_string());
    }
}

fn write_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let b = u32::from(c) as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[b >> 4]));
                out.push(char::from(HEX[b & 0x0f]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{canonicalize, hash};

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("test input is valid JSON")
    }

    fn double(bits: u64) -> String {
        canonicalize(&json!(f64::from_bits(bits)))
    }

    #[test]
    fn serializes_the_rfc_8785_number_vectors_from_appendix_b() {
        let vectors: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for &(bits, expected) in vectors {
            assert_eq!(double(bits), expected, "double {bits:016x}");
        }
    }

    #[test]
    fn writes_numbers_as_ecmascript_does() {
        assert_eq!(canonicalize(&json!(1.0)), "1");
        assert_eq!(canonicalize(&json!(-0.0)), "0");
        assert_eq!(canonicalize(&json!(1e21)), "1e+21");
        assert_eq!(canonicalize(&json!(1e20)), "100000000000000000000");
        assert_eq!(canonicalize(&json!(0.000001)), "0.000001");
        assert_eq!(canonicalize(&json!(1e-7)), "1e-7");
        assert_eq!(canonicalize(&json!(4.5)), "4.5");
        assert_eq!(canonicalize(&json!(-12)), "-12");
        assert_eq!(canonicalize(&json!(u64::MAX)), "18446744073709552000");
        assert_eq!(canonicalize(&json!(i64::MIN)), "-9223372036854776000");
        assert_eq!(canonicalize(&parse("9007199254740993")), "9007199254740992");
        assert_eq!(canonicalize(&parse("1E30")), "1e+30");
        assert_eq!(canonicalize(&parse("-1.5e-10")), "-1.5e-10");
    }

    #[test]
    fn canonicalizes_the_rfc_8785_example_object() {
        let input = r#"{
            "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
            "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
            "literals": [null, true, false]
        }"#;
        let expected = concat!(
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"#,
            r#""string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
        assert_eq!(canonicalize(&parse(input)), expected);
    }

    #[test]
    fn sorts_keys_by_utf16_code_units() {
        let input = r#"{
            "\u20ac": "Euro Sign",
            "\r": "Carriage Return",
            "\ufb33": "Hebrew Letter Dalet With Dagesh",
            "1": "One",
            "\ud83d\ude00": "Emoji: Grinning Face",
            "\u0080": "Control",
            "\u00f6": "Latin Small Letter O With Diaeresis"
        }"#;
        let values: Vec<String> = match parse(&canonicalize(&parse(input))) {
            Value::Object(map) => map.values().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
            other => panic!("expected an object, got {other}"),
        };
        assert_eq!(
            values,
            [
                "Carriage Return",
                "One",
                "Control",
                "Latin Small Letter O With Diaeresis",
                "Euro Sign",
                "Emoji: Grinning Face",
                "Hebrew Letter Dalet With Dagesh",
            ]
        );
    }

    #[test]
    fn escapes_only_what_rfc_8785_requires() {
        let s = "\u{0}\u{1f}\u{7f}\u{8}\u{c}\t\n\r\"\\/<>&\u{2028}é😀";
        assert_eq!(canonicalize(&json!(s)), "\"\\u0000\\u001f\u{7f}\\b\\f\\t\\n\\r\\\"\\\\/<>&\u{2028}é😀\"");
    }

    #[test]
    fn hash_ignores_key_order_and_whitespace() {
        let a = parse(r#"{"name":"add","inputSchema":{"type":"object","properties":{"a":{"type":"number"}}}}"#);
        let b = parse(
            "{\n  \"inputSchema\" : { \"properties\" : { \"a\" : { \"type\" : \"number\" } },\n \"type\" : \"object\" },\n  \"name\" : \"add\"\n}",
        );
        assert_eq!(canonicalize(&a), canonicalize(&b));
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(hash(&a), hash(&json!({"name": "add"})));
    }

    #[test]
    fn hash_is_sha256_of_the_canonical_bytes() {
        // sha256("{}")
        assert_eq!(hash(&json!({})), "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
        let h = hash(&json!({"b": [1, 2.5, "x"], "a": null}));
        assert!(h.starts_with("sha256:"));
        assert_eq!(h.len(), "sha256:".len() + 64);
        assert!(h["sha256:".len()..].chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    }
}
