//! Arbitrary bytes through the `Mcp-Name` / `Mcp-Param-*` header value codec.
//!
//! Properties: `decode_value` never panics; for UTF-8 input, `decode_value(encode_value(s)) == s`,
//! the encoded form is a legal header value (visible ASCII, space and tab, not padded), and a
//! value that decodes re-encodes to something that decodes to the same string.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_wire::header::{decode_value, encode_value};

fuzz_target!(|data: &[u8]| {
    let decoded = decode_value(data);

    if let Some(value) = &decoded {
        assert_eq!(decode_value(encode_value(value).as_bytes()).as_deref(), Some(value.as_str()));
    }

    if let Ok(text) = std::str::from_utf8(data) {
        let encoded = encode_value(text);
        assert!(
            encoded.bytes().all(|b| b == b'\t' || (0x20..=0x7e).contains(&b)),
            "encoded value has bytes a header may not carry: {encoded:?}"
        );
        assert!(
            !encoded.starts_with([' ', '\t']) && !encoded.ends_with([' ', '\t']),
            "encoded value is padded: {encoded:?}"
        );
        assert_eq!(decode_value(encoded.as_bytes()).as_deref(), Some(text), "encoded as {encoded:?}");
    }
});
