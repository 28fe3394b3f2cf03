//! The JSON-RPC 2.0 envelope: parsed just far enough to route a message, with
//! `params`, `result` and `error` kept as raw JSON.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

use crate::error::{ErrorCode, RpcError};

/// A JSON-RPC request id: a string or an integer, kept as its exact JSON text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Box<str>);

impl RequestId {
    /// Validates raw JSON as an id (string or integer).
    pub fn from_raw(raw: &RawValue) -> Result<Self, ParseError> {
        let text = raw.get();
        let ok = match text.as_bytes().first() {
            Some(b'"') => true,
            Some(b'-' | b'0'..=b'9') => text.parse::<i64>().is_ok(),
            _ => false,
        };
        if ok { Ok(Self(text.into())) } else { Err(ParseError::invalid("id must be a string or an integer")) }
    }

    /// An integer id minted by the gateway.
    pub fn number(n: u64) -> Self {
        Self(n.to_string().into())
    }

    /// A string id minted by the gateway.
    pub fn string(s: &str) -> Self {
        Self(json_string(s).into())
    }

    /// The id as JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The id as an integer, if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        self.0.parse().ok()
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a message is, with its raw parts.
#[derive(Debug, Clone)]
pub enum MessageKind {
    Request {
        id: RequestId,
        method: String,
        params: Option<Box<RawValue>>,
    },
    Notification {
        method: String,
        params: Option<Box<RawValue>>,
    },
    Response {
        /// `None` only for an error answering an unparseable request.
        id: Option<RequestId>,
        outcome: Outcome,
    },
}

/// A response's outcome, raw.
#[derive(Debug, Clone)]
pub enum Outcome {
    Result(Box<RawValue>),
    Error(Box<RawValue>),
}

/// One parsed JSON-RPC message.
#[derive(Debug, Clone)]
pub struct Message {
    pub kind: MessageKind,
}

/// Why a message could not be parsed; maps to -32700 or -32600.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("parse error: {0}")]
    Json(String),
    #[error("invalid request: {reason}")]
    Invalid {
        reason: Cow<'static, str>,
        /// The id, when one could be read, so the error can answer it.
        id: Option<RequestId>,
    },
}

impl ParseError {
    fn invalid(reason: &'static str) -> Self {
        Self::Invalid { reason: Cow::Borrowed(reason), id: None }
    }

    fn with_id(self, id: Option<RequestId>) -> Self {
        match self {
            Self::Invalid { reason, .. } => Self::Invalid { reason, id },
            other => other,
        }
    }

    /// The id to answer with (null when unknown).
    pub fn id(&self) -> Option<&RequestId> {
        match self {
            Self::Invalid { id, .. } => id.as_ref(),
            Self::Json(_) => None,
        }
    }

    /// The JSON-RPC error this becomes.
    pub fn to_rpc_error(&self) -> RpcError {
        match self {
            Self::Json(detail) => RpcError::new(ErrorCode::PARSE_ERROR, "parse error")
                .with_reason("malformed_json")
                .with_detail(detail.clone()),
            Self::Invalid { reason, .. } => {
                RpcError::new(ErrorCode::INVALID_REQUEST, format!("invalid request: {reason}"))
                    .with_reason("invalid_request")
            }
        }
    }
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<Option<&'a RawValue>>,
    #[serde(borrow)]
    method: Option<&'a RawValue>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present_raw")]
    result: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present_raw")]
    error: Option<&'a RawValue>,
}

/// Distinguishes an absent field (outer `None`) from an explicit `null`.
fn present<'de, D>(d: D) -> Result<Option<Option<&'de RawValue>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw: &'de RawValue = Deserialize::deserialize(d)?;
    Ok(Some(if raw.get() == "null" { None } else { Some(raw) }))
}

/// Keeps an explicit `null` as the raw text `null` (a response's `"result": null` is valid).
fn present_raw<'de, D>(d: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Deserialize::deserialize(d).map(Some)
}

impl Message {
    /// Parses one message (not a batch).
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        Self::parse_text(utf8(bytes)?)
    }

    /// Parses one message from text already known to be UTF-8 (a batch's item, say).
    fn parse_text(text: &str) -> Result<Self, ParseError> {
        let env: RawEnvelope<'_> = match serde_json::from_str(text) {
            Ok(env) => env,
            Err(e) if e.is_data() => {
                // Valid JSON of the wrong shape (an array, a string, a field of the wrong type).
                let value_ok = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
                return Err(if value_ok {
                    ParseError::invalid("a message must be a JSON-RPC 2.0 object")
                } else {
                    ParseError::Json(e.to_string())
                });
            }
            Err(e) => return Err(ParseError::Json(e.to_string())),
        };
        Self::from_envelope(env)
    }

    fn from_envelope(env: RawEnvelope<'_>) -> Result<Self, ParseError> {
        let id = match env.id {
            Some(Some(raw)) => Some(RequestId::from_raw(raw)?),
            _ => None,
        };
        if env.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
            return Err(ParseError::invalid("jsonrpc must be \"2.0\"").with_id(id));
        }
        let params = match env.params {
            Some(p) if p.get() == "null" => None,
            Some(p) if matches!(p.get().as_bytes().first(), Some(b'{' | b'[')) => Some(p.to_owned()),
            Some(_) => return Err(ParseError::invalid("params must be an object").with_id(id)),
            None => None,
        };
        if let Some(method) = env.method {
            let method: String = serde_json::from_str(method.get())
                .map_err(|_| ParseError::invalid("method must be a string").with_id(id.clone()))?;
            if env.result.is_some() || env.error.is_some() {
                return Err(ParseError::invalid("a request cannot carry result or error").with_id(id));
            }
            let kind = match (env.id, id) {
                (None, _) => MessageKind::Notification { method, params },
                (Some(_), Some(id)) => MessageKind::Request { id, method, params },
                // A present, non-null id always parsed above, so only `null` lands here.
                (Some(_), None) => return Err(ParseError::invalid("id must not be null")),
            };
            return Ok(Self { kind });
        }
        let outcome = match (env.result, env.error) {
            (Some(r), None) => Outcome::Result(r.to_owned()),
            (None, Some(e)) => Outcome::Error(e.to_owned()),
            (Some(_), Some(_)) => {
                return Err(ParseError::invalid("a response cannot carry both result and error").with_id(id));
            }
            (None, None) => {
                return Err(ParseError::invalid("missing method, result or error").with_id(id));
            }
        };
        if env.id.is_none() {
            return Err(ParseError::invalid("a response must carry an id"));
        }
        if id.is_none() && matches!(outcome, Outcome::Result(_)) {
            return Err(ParseError::invalid("a result must answer a non-null id"));
        }
        Ok(Self { kind: MessageKind::Response { id, outcome } })
    }

    /// The method of a request or notification.
    pub fn method(&self) -> Option<&str> {
        match &self.kind {
            MessageKind::Request { method, .. } | MessageKind::Notification { method, .. } => Some(method),
            MessageKind::Response { .. } => None,
        }
    }

    /// The params of a request or notification.
    pub fn params(&self) -> Option<&RawValue> {
        match &self.kind {
            MessageKind::Request { params, .. } | MessageKind::Notification { params, .. } => params.as_deref(),
            MessageKind::Response { .. } => None,
        }
    }

    /// The id of a request or response.
    pub fn id(&self) -> Option<&RequestId> {
        match &self.kind {
            MessageKind::Request { id, .. } => Some(id),
            MessageKind::Response { id, .. } => id.as_ref(),
            MessageKind::Notification { .. } => None,
        }
    }

    /// Serializes the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.kind {
            MessageKind::Request { id, method, params } => request_bytes(id, method, params.as_deref()),
            MessageKind::Notification { method, params } => notification_bytes(method, params.as_deref()),
            MessageKind::Response { id, outcome } => match outcome {
                Outcome::Result(r) => result_bytes(id.as_ref(), r),
                Outcome::Error(e) => error_raw_bytes(id.as_ref(), e),
            },
        }
    }
}

/// Splits a body into messages: one object, or a batch array of them.
/// Returns `Err` only when the body is not JSON at all or an empty batch.
pub fn parse_body(bytes: &[u8]) -> Result<Body, ParseError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let items: Vec<&RawValue> = serde_json::from_str(utf8(bytes)?).map_err(|e| ParseError::Json(e.to_string()))?;
        if items.is_empty() {
            return Err(ParseError::invalid("an empty batch is not a request"));
        }
        Ok(Body::Batch(items.into_iter().map(|raw| Message::parse_text(raw.get())).collect()))
    } else {
        Message::parse(bytes).map(Body::Single)
    }
}

/// A body as text. JSON text is UTF-8 (RFC 8259 §8.1): checked once for the whole body, so the
/// parser reads it as text and does not check each raw value and string it borrows again.
fn utf8(bytes: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(bytes).map_err(|e| ParseError::Json(format!("the body is not UTF-8: {e}")))
}

/// A parsed HTTP or stdio body.
#[derive(Debug)]
pub enum Body {
    Single(Message),
    Batch(Vec<Result<Message, ParseError>>),
}

/// Writes a JSON string literal.
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Serializes a request.
pub fn request_bytes(id: &RequestId, method: &str, params: Option<&RawValue>) -> Vec<u8> {
    request_bytes_of_text(id, method, params.map(RawValue::get))
}

/// As [`request_bytes`], with params as JSON text the caller built from valid parts. It is
/// written as it is, unchecked: the caller guarantees it is one valid JSON value.
pub fn request_bytes_of_text(id: &RequestId, method: &str, params: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + method.len() + params.map_or(0, str::len));
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(id.as_json().as_bytes());
    out.extend_from_slice(b",\"method\":");
    out.extend_from_slice(json_string(method).as_bytes());
    if let Some(p) = params {
        out.extend_from_slice(b",\"params\":");
        out.extend_from_slice(p.as_bytes());
    }
    out.push(b'}');
    out
}

/// Serializes a notification.
pub fn notification_bytes(method: &str, params: Option<&RawValue>) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + method.len() + params.map_or(0, |p| p.get().len()));
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"method\":");
    out.extend_from_slice(json_string(method).as_bytes());
    if let Some(p) = params {
        out.extend_from_slice(b",\"params\":");
        out.extend_from_slice(p.get().as_bytes());
    }
    out.push(b'}');
    out
}

/// Serializes a successful response.
pub fn result_bytes(id: Option<&RequestId>, result: &RawValue) -> Vec<u8> {
    response_bytes(id, b",\"result\":", result)
}

/// Serializes an error response from a raw error object.
pub fn error_raw_bytes(id: Option<&RequestId>, error: &RawValue) -> Vec<u8> {
    response_bytes(id, b",\"error\":", error)
}

fn response_bytes(id: Option<&RequestId>, key: &[u8], value: &RawValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + value.get().len());
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(id.map_or("null", RequestId::as_json).as_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value.get().as_bytes());
    out.push(b'}');
    out
}

/// Serializes an error response.
pub fn error_bytes(id: Option<&RequestId>, error: &RpcError) -> Vec<u8> {
    let raw = error.to_raw();
    error_raw_bytes(id, &raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_reason(input: &str) -> String {
        match Message::parse(input.as_bytes()) {
            Err(ParseError::Invalid { reason, .. }) => reason.into_owned(),
            other => panic!("expected invalid request for {input}, got {other:?}"),
        }
    }

    #[test]
    fn parses_request_keeping_params_raw() {
        let m = Message::parse(
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":{"b":1, "a":2}}}"#,
        )
        .expect("valid");
        assert_eq!(m.method(), Some("tools/call"));
        assert_eq!(m.id().map(RequestId::as_json), Some("7"));
        assert_eq!(m.params().map(RawValue::get), Some(r#"{"name":"x","arguments":{"b":1, "a":2}}"#));
    }

    #[test]
    fn distinguishes_notifications_and_responses() {
        let n = Message::parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).expect("valid");
        assert!(matches!(n.kind, MessageKind::Notification { .. }));
        let r = Message::parse(br#"{"jsonrpc":"2.0","id":"a","result":{"x":[1]}}"#).expect("valid");
        assert!(matches!(r.kind, MessageKind::Response { outcome: Outcome::Result(_), .. }));
        let e = Message::parse(br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#).expect("valid");
        assert!(matches!(e.kind, MessageKind::Response { id: None, outcome: Outcome::Error(_) }));
    }

    #[test]
    fn rejects_malformed_json_as_parse_error() {
        for input in ["{", "", "nul", "{\"jsonrpc\":\"2.0\",}"] {
            assert!(matches!(Message::parse(input.as_bytes()), Err(ParseError::Json(_))), "{input}");
        }
    }

    #[test]
    fn rejects_a_body_that_is_not_utf8_as_parse_error() {
        // In a string the parser would skip (an argument), in one it reads (the method), and in
        // a batch: the whole body is checked, wherever the bad byte is.
        let bodies: [&[u8]; 4] = [
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"arguments\":{\"a\":\"\xff\"}}}",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\xc3\"}",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{},\"x\":\"\xed\xa0\x80\"}",
            b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}]",
        ];
        for body in bodies {
            let error = match parse_body(body) {
                Err(e) => e,
                Ok(b) => panic!("accepted {body:?}: {b:?}"),
            };
            assert!(matches!(&error, ParseError::Json(why) if why.contains("UTF-8")), "{error:?}");
            assert!(matches!(Message::parse(body), Err(ParseError::Json(_))));
        }
        // Multi-byte characters are text like any other.
        let m = Message::parse("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"é\",\"params\":{\"a\":\"ü€𝄞\"}}".as_bytes())
            .expect("UTF-8 text");
        assert_eq!(m.params().map(RawValue::get), Some("{\"a\":\"ü€𝄞\"}"));
    }

    #[test]
    fn rejects_invalid_envelopes_with_reasons() {
        assert_eq!(invalid_reason(r#"{"id":1,"method":"x"}"#), "jsonrpc must be \"2.0\"");
        assert_eq!(invalid_reason(r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#), "jsonrpc must be \"2.0\"");
        assert_eq!(invalid_reason(r#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#), "id must be a string or an integer");
        assert_eq!(invalid_reason(r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#), "id must be a string or an integer");
        assert_eq!(invalid_reason(r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#), "id must not be null");
        assert_eq!(invalid_reason(r#"{"jsonrpc":"2.0","id":1,"method":3}"#), "method must be a string");
        assert_eq!(invalid_reason(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#), "params must be an object");
        assert_eq!(invalid_reason(r#"{"jsonrpc":"2.0","id":1}"#), "missing method, result or error");
        assert_eq!(invalid_reason(r#"[1,2]"#), "a message must be a JSON-RPC 2.0 object");
        assert_eq!(invalid_reason(r#""hello""#), "a message must be a JSON-RPC 2.0 object");
        assert_eq!(
            invalid_reason(r#"{"jsonrpc":"2.0","id":1,"result":1,"error":{}}"#),
            "a response cannot carry both result and error"
        );
    }

    #[test]
    fn accepts_a_null_result() {
        let m = Message::parse(br#"{"jsonrpc":"2.0","id":1,"result":null}"#).expect("a null result is valid");
        assert!(matches!(m.kind, MessageKind::Response { outcome: Outcome::Result(ref r), .. } if r.get() == "null"));
        assert_eq!(m.to_bytes(), br#"{"jsonrpc":"2.0","id":1,"result":null}"#.to_vec());
        let err =
            Message::parse(br#"{"jsonrpc":"2.0","id":1,"method":"x","result":null}"#).expect_err("request with result");
        assert!(matches!(err, ParseError::Invalid { .. }));
    }

    #[test]
    fn invalid_request_keeps_the_id_to_answer() {
        let err = Message::parse(br#"{"jsonrpc":"1.0","id":"q","method":"x"}"#).expect_err("invalid");
        assert_eq!(err.id().map(RequestId::as_json), Some("\"q\""));
    }

    #[test]
    fn round_trips_bytes() {
        let input = r#"{"jsonrpc":"2.0","id":"a\"b","method":"m/x","params":{"k":[1,2,{"z":null}]}}"#;
        let m = Message::parse(input.as_bytes()).expect("valid");
        assert_eq!(String::from_utf8(m.to_bytes()).expect("utf8"), input);
    }

    #[test]
    fn parses_batches() {
        match parse_body(br#" [{"jsonrpc":"2.0","method":"a"}, 5]"#).expect("batch") {
            Body::Batch(items) => {
                assert!(items[0].is_ok());
                assert!(items[1].is_err());
            }
            Body::Single(_) => panic!("expected batch"),
        }
        assert!(parse_body(b"[]").is_err());
    }

    /// Mutates valid and invalid seeds many times (deterministic xorshift): the parser never
    /// panics, and whatever parses re-serializes to something that parses the same way.
    #[test]
    fn survives_mutated_input_and_round_trips_what_parses() {
        let seeds: [&[u8]; 6] = [
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":[1,2,{"b":null}]}}}"#,
            br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":0.5}}"#,
            br#"{"jsonrpc":"2.0","id":"s","result":{"content":[{"type":"text","text":"\u00e9\n"}]}}"#,
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#,
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"a"}]"#,
            br#"{"jsonrpc":"2.0","id":9007199254740993,"method":"m","params":[]}"#,
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"{}[]\":,0123456789.-eE+ \\ntrufalsjorpcmdiex\x00\xff";
        for round in 0..20_000u32 {
            let seed = seeds[(round as usize) % seeds.len()];
            let mut input = seed.to_vec();
            for _ in 0..(next() % 4 + 1) {
                let pos = (next() as usize) % (input.len() + 1);
                match next() % 3 {
                    0 if pos < input.len() => {
                        input.remove(pos);
                    }
                    1 => input.insert(pos, alphabet[(next() as usize) % alphabet.len()]),
                    _ if pos < input.len() => input[pos] = alphabet[(next() as usize) % alphabet.len()],
                    _ => {}
                }
            }
            if let Ok(Body::Single(m)) = parse_body(&input) {
                let again = Message::parse(&m.to_bytes()).expect("re-serialized message parses");
                assert_eq!(again.method(), m.method());
                assert_eq!(again.id(), m.id());
                assert_eq!(again.params().map(RawValue::get), m.params().map(RawValue::get));
            }
        }
    }
}
