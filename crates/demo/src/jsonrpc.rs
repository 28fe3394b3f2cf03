//! JSON-RPC 2.0 framing: parsing one incoming message and encoding what goes back.
//!
//! The envelope is parsed once; `id` and `params` stay raw JSON, so an id is
//! echoed byte for byte and each method parses only the params it needs.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::error::{ErrorKind, RpcError};

/// One incoming message.
#[derive(Debug)]
pub enum Message {
    /// A request: expects exactly one response.
    Request(Request),
    /// A notification: no response.
    Notification(Notification),
    /// A response from the client; the demo never sends requests, so these are dropped.
    Response,
}

/// A JSON-RPC request.
#[derive(Debug)]
pub struct Request {
    /// The request id, raw (a string or a number).
    pub id: Box<RawValue>,
    /// The method name.
    pub method: String,
    /// The params object, raw; `None` when absent or `null`.
    pub params: Option<Box<RawValue>>,
}

/// A JSON-RPC notification.
#[derive(Debug)]
pub struct Notification {
    /// The method name.
    pub method: String,
    /// The params object, raw.
    pub params: Option<Box<RawValue>>,
}

/// A message that could not be accepted, with the id to answer under when one was readable.
#[derive(Debug)]
pub struct Rejected {
    /// The id of the offending request, if it had a usable one.
    pub id: Option<Box<RawValue>>,
    /// Why it was rejected.
    pub error: RpcError,
}

impl Message {
    /// Parses one message (no batches).
    pub fn parse(bytes: &[u8]) -> Result<Message, Rejected> {
        let reject = |id: Option<&RawValue>, kind, message: &str| Rejected {
            id: id.map(RawValue::to_owned),
            error: RpcError::new(kind, message),
        };
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[') => {
                return Err(reject(None, ErrorKind::InvalidRequest, "batches are not supported"));
            }
            Some(b'{') => {}
            Some(_) => {
                // Either not JSON at all or a JSON scalar: let the parser tell which.
                if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
                    return Err(reject(None, ErrorKind::Parse, "parse error"));
                }
                return Err(reject(None, ErrorKind::InvalidRequest, "message must be an object"));
            }
            None => return Err(reject(None, ErrorKind::Parse, "empty message")),
        }
        let envelope: Envelope<'_> = serde_json::from_slice(bytes).map_err(|e| {
            let kind = match e.classify() {
                serde_json::error::Category::Data => ErrorKind::InvalidRequest,
                serde_json::error::Category::Io
                | serde_json::error::Category::Syntax
                | serde_json::error::Category::Eof => ErrorKind::Parse,
            };
            let message = match kind {
                ErrorKind::Parse => format!("parse error: {e}"),
                _ => format!("invalid request: {e}"),
            };
            reject(None, kind, &message)
        })?;
        let id = match envelope.id {
            Some(raw) if is_valid_id(raw) => Some(raw),
            Some(_) => {
                return Err(reject(None, ErrorKind::InvalidRequest, "id must be a string or a number"));
            }
            None => None,
        };
        if envelope.jsonrpc != Some("2.0") {
            return Err(reject(id, ErrorKind::InvalidRequest, "jsonrpc must be \"2.0\""));
        }
        let params = envelope.params.map(RawValue::to_owned);
        match (envelope.method, id) {
            (Some(method), Some(id)) => Ok(Message::Request(Request { id: id.to_owned(), method, params })),
            (Some(method), None) => Ok(Message::Notification(Notification { method, params })),
            (None, Some(_)) if envelope.result.is_some() || envelope.error.is_some() => Ok(Message::Response),
            (None, id) => Err(reject(id, ErrorKind::InvalidRequest, "method is required")),
        }
    }
}

impl Message {
    /// The id to answer under: a request's id, `None` for anything else.
    pub fn request_id(&self) -> Option<&RawValue> {
        match self {
            Message::Request(request) => Some(&request.id),
            Message::Notification(_) | Message::Response => None,
        }
    }
}

/// Parses a request's params into `T`; absent params read as `{}`.
pub fn parse_params<'a, T: Deserialize<'a>>(params: Option<&'a RawValue>) -> Result<T, RpcError> {
    serde_json::from_str(params.map_or("{}", RawValue::get))
        .map_err(|e| RpcError::invalid_params(format!("invalid params: {e}")))
}

/// Encodes a success response.
pub fn encode_result<T: Serialize + ?Sized>(id: &RawValue, result: &T) -> Vec<u8> {
    encode(&Success { jsonrpc: "2.0", id, result })
}

/// Encodes an error response; `id` is `null` when the request's id could not be read.
pub fn encode_error(id: Option<&RawValue>, error: &RpcError) -> Vec<u8> {
    encode(&Failure {
        jsonrpc: "2.0",
        id,
        error: ErrorObject { code: error.code(), message: &error.message, data: error.data.as_ref() },
    })
}

/// Encodes a notification.
pub fn encode_notification<T: Serialize + ?Sized>(method: &str, params: &T) -> Vec<u8> {
    encode(&Outgoing { jsonrpc: "2.0", method, params })
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    jsonrpc: Option<&'a str>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
}

/// Keeps an explicit `"id": null` as `Some` so it is rejected rather than read as a notification.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// MCP ids are strings or numbers, never `null`, objects or arrays.
fn is_valid_id(raw: &RawValue) -> bool {
    matches!(raw.get().as_bytes().first(), Some(b'"' | b'-' | b'0'..=b'9'))
}

#[derive(Serialize)]
struct Success<'a, T: ?Sized> {
    jsonrpc: &'static str,
    id: &'a RawValue,
    result: &'a T,
}

#[derive(Serialize)]
struct Failure<'a> {
    jsonrpc: &'static str,
    id: Option<&'a RawValue>,
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: i64,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a serde_json::Value>,
}

#[derive(Serialize)]
struct Outgoing<'a, T: ?Sized> {
    jsonrpc: &'static str,
    method: &'a str,
    params: &'a T,
}

fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    serde_json::to_vec(message).unwrap_or_else(|_| {
        br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"failed to encode response"}}"#.to_vec()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(bytes: &[u8]) -> Rejected {
        match Message::parse(bytes) {
            Err(r) => r,
            Ok(m) => panic!("expected a rejection, got {m:?}"),
        }
    }

    #[test]
    fn parses_request_keeping_id_and_params_raw() {
        let m = Message::parse(br#"{"jsonrpc":"2.0","id":"a-1","method":"ping","params":{"x": 1}}"#)
            .expect("valid request");
        let Message::Request(r) = m else { panic!("expected a request") };
        assert_eq!(r.id.get(), r#""a-1""#);
        assert_eq!(r.method, "ping");
        assert_eq!(r.params.expect("params").get(), r#"{"x": 1}"#);
    }

    #[test]
    fn message_without_id_is_a_notification_and_with_result_a_response() {
        let n = Message::parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert!(matches!(n, Ok(Message::Notification(_))));
        let r = Message::parse(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#);
        assert!(matches!(r, Ok(Message::Response)));
    }

    #[test]
    fn malformed_json_is_a_parse_error() {
        assert_eq!(rejected(b"{\"jsonrpc\":").error.code(), -32700);
        assert_eq!(rejected(b"not json").error.code(), -32700);
        assert_eq!(rejected(b"   ").error.code(), -32700);
    }

    #[test]
    fn invalid_envelopes_are_invalid_requests() {
        for bad in [
            &br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#[..],
            br#"{"id":1,"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            br#"{"jsonrpc":"2.0","id":1}"#,
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            b"42",
        ] {
            assert_eq!(rejected(bad).error.code(), -32600, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn rejection_keeps_a_readable_id() {
        let r = rejected(br#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#);
        assert_eq!(r.id.expect("id kept").get(), "7");
    }

    #[test]
    fn encodes_error_with_null_id_when_unknown() {
        let bytes = encode_error(None, &RpcError::new(ErrorKind::Parse, "parse error"));
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(v["id"], serde_json::Value::Null);
        assert_eq!(v["error"]["code"], -32700);
        assert!(v["error"].get("data").is_none());
    }
}
