//! Arbitrary bytes through the JSON-RPC envelope parser.
//!
//! Properties, beyond "never panics":
//! - every message that parses serializes (`to_bytes`) to bytes that parse again to the same
//!   kind, method, id, params and outcome text;
//! - the error answer to every rejected body or batch item is itself a valid error response;
//! - a `RawObject` re-serialized with `to_raw` parses back to the same keys and raw values.
//!
//! `param_header::from_schema` only has to not panic on any JSON value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_wire::envelope::{self, Body, Outcome};
use portcullis_wire::{Message, MessageKind, ParseError, RawObject, param_header};

fuzz_target!(|data: &[u8]| {
    match envelope::parse_body(data) {
        Ok(Body::Single(message)) => check_round_trip(&message),
        Ok(Body::Batch(items)) => {
            for item in &items {
                match item {
                    Ok(message) => check_round_trip(message),
                    Err(err) => check_error_answer(err),
                }
            }
        }
        Err(err) => check_error_answer(&err),
    }

    // `parse_body` sends bodies starting with `[` to the batch path; parse them as one message too.
    match Message::parse(data) {
        Ok(message) => check_round_trip(&message),
        Err(err) => check_error_answer(&err),
    }

    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(object) = RawObject::parse_str(text) {
            check_object(&object);
        }
        if let Ok(schema) = serde_json::from_str::<serde_json::Value>(text) {
            let _ = param_header::from_schema(&schema);
        }
    }
});

/// What a message says, as text, for comparing before and after a round trip.
#[derive(Debug, PartialEq, Eq)]
struct Shape<'a> {
    kind: &'static str,
    method: Option<&'a str>,
    id: Option<&'a str>,
    params: Option<&'a str>,
    outcome: Option<&'a str>,
}

fn shape(message: &Message) -> Shape<'_> {
    let (kind, outcome) = match &message.kind {
        MessageKind::Request { .. } => ("request", None),
        MessageKind::Notification { .. } => ("notification", None),
        MessageKind::Response { outcome: Outcome::Result(r), .. } => ("result", Some(r.get())),
        MessageKind::Response { outcome: Outcome::Error(e), .. } => ("error", Some(e.get())),
    };
    Shape {
        kind,
        method: message.method(),
        id: message.id().map(|id| id.as_json()),
        params: message.params().map(|p| p.get()),
        outcome,
    }
}

fn check_round_trip(message: &Message) {
    let bytes = message.to_bytes();
    let again = match Message::parse(&bytes) {
        Ok(again) => again,
        Err(err) => panic!(
            "to_bytes output does not parse: {err}\nmessage: {message:?}\nbytes: {}",
            String::from_utf8_lossy(&bytes)
        ),
    };
    assert_eq!(
        shape(message),
        shape(&again),
        "round trip changed the message; bytes: {}",
        String::from_utf8_lossy(&bytes)
    );
    // And serialization is a fixed point after one trip.
    assert_eq!(bytes, again.to_bytes());
}

fn check_error_answer(err: &ParseError) {
    let bytes = envelope::error_bytes(err.id(), &err.to_rpc_error());
    match Message::parse(&bytes) {
        Ok(Message { kind: MessageKind::Response { id, outcome: Outcome::Error(_) } }) => {
            assert_eq!(id.as_ref(), err.id(), "error answer lost the id");
        }
        other => panic!("error answer is not an error response: {other:?}\nbytes: {}", String::from_utf8_lossy(&bytes)),
    }
}

fn check_object(object: &RawObject) {
    let raw = object.to_raw();
    let again = match RawObject::parse(&raw) {
        Some(again) => again,
        None => panic!("to_raw output is not an object: {}", raw.get()),
    };
    let before: Vec<(&str, &str)> = object.iter().map(|(k, v)| (k, v.get())).collect();
    let after: Vec<(&str, &str)> = again.iter().map(|(k, v)| (k, v.get())).collect();
    assert_eq!(before, after, "RawObject round trip changed the object");
}
