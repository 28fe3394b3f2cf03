//! The standard HTTP headers of MCP and the `=?base64?…?=` value encoding of 2026-07-28.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

pub const PROTOCOL_VERSION: &str = "mcp-protocol-version";
pub const SESSION_ID: &str = "mcp-session-id";
pub const METHOD: &str = "mcp-method";
pub const NAME: &str = "mcp-name";
pub const PARAM_PREFIX: &str = "mcp-param-";
pub const LAST_EVENT_ID: &str = "last-event-id";

const OPEN: &str = "=?base64?";
const CLOSE: &str = "?=";

/// Encodes a value for an `Mcp-Name` / `Mcp-Param-*` header.
pub fn encode_value(value: &str) -> String {
    let visible = value.bytes().all(|b| b == b'\t' || (0x20..=0x7e).contains(&b));
    let padded = value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']);
    let looks_encoded = value.starts_with(OPEN) && value.ends_with(CLOSE);
    let plain = visible && !padded && !looks_encoded;
    if plain { value.to_owned() } else { format!("{OPEN}{}{CLOSE}", STANDARD.encode(value.as_bytes())) }
}

/// Decodes a header value; `None` if it is sentinel-wrapped but not valid base64 UTF-8,
/// or contains characters a plain value may not.
pub fn decode_value(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    if let Some(inner) = text.strip_prefix(OPEN).and_then(|t| t.strip_suffix(CLOSE)) {
        let bytes = STANDARD.decode(inner).ok()?;
        return String::from_utf8(bytes).ok();
    }
    if text.bytes().all(|b| b == b'\t' || (0x20..=0x7e).contains(&b)) { Some(text.to_owned()) } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_spec_examples() {
        assert_eq!(encode_value("us-west1"), "us-west1");
        assert_eq!(encode_value("Hello, 世界"), "=?base64?SGVsbG8sIOS4lueVjA==?=");
        assert_eq!(encode_value(" padded "), "=?base64?IHBhZGRlZCA=?=");
        assert_eq!(encode_value("line1\nline2"), "=?base64?bGluZTEKbGluZTI=?=");
        assert_eq!(encode_value("=?base64?literal?="), "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=");
    }

    #[test]
    fn decodes_what_it_encodes() {
        for v in ["plain", "Hello, 世界", " padded ", "=?base64?literal?="] {
            assert_eq!(decode_value(encode_value(v).as_bytes()).as_deref(), Some(v));
        }
        assert_eq!(decode_value(b"=?base64?***?="), None);
    }
}
