//! The demo's prompt: `triage_ticket`, which asks the model to triage one ticket.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::error::RpcError;
use crate::jsonrpc::parse_params;
use crate::reply::Reply;
use crate::resource::TICKET_URI_PREFIX;
use crate::server::CACHE_TTL_MS;
use crate::ticket;

/// The prompt's name.
pub const TRIAGE_TICKET: &str = "triage_ticket";
/// Its one argument.
pub const TICKET_ID: &str = "ticket_id";

/// The `prompts/list` result.
pub fn list<'p>() -> Reply<'p> {
    Reply::cacheable(
        json!({
            "prompts": [{
                "name": TRIAGE_TICKET,
                "title": "Triage a support ticket",
                "description": "Ask for a priority, an owning component and a next step for one ticket",
                "arguments": [{
                    "name": TICKET_ID,
                    "title": "Ticket id",
                    "description": "Id of the ticket to triage, e.g. T-1001",
                    "required": true,
                }],
            }],
        }),
        CACHE_TTL_MS,
    )
}

/// Handles `prompts/get`; an unknown prompt, a missing argument or an unknown ticket is -32602.
pub fn get<'p>(params: Option<&'p RawValue>) -> Result<Reply<'p>, RpcError> {
    #[derive(Deserialize)]
    struct Get {
        name: String,
        #[serde(default)]
        arguments: HashMap<String, String>,
    }
    let get: Get = parse_params(params)?;
    if get.name != TRIAGE_TICKET {
        return Err(
            RpcError::invalid_params(format!("unknown prompt: {}", get.name)).with_data(json!({ "name": get.name }))
        );
    }
    let id = get
        .arguments
        .get(TICKET_ID)
        .ok_or_else(|| RpcError::invalid_params(format!("missing required argument {TICKET_ID}")))?;
    let t = ticket::find(id).ok_or_else(|| RpcError::invalid_params(format!("unknown ticket: {id}")))?;
    let ticket_json = json!(t).to_string();
    let ask = format!(
        "Triage support ticket {} from {}: \"{}\".\n\
         Suggest a priority (low, normal or high), the component that should own it, \
         and the next step for the support engineer. Keep it to three short lines.",
        t.id, t.customer, t.title
    );
    Ok(Reply::object(json!({
        "description": format!("Triage {}", t.id),
        "messages": [
            { "role": "user", "content": { "type": "text", "text": ask } },
            {
                "role": "user",
                "content": {
                    "type": "resource",
                    "resource": {
                        "uri": format!("{TICKET_URI_PREFIX}{}", t.id),
                        "mimeType": "application/json",
                        "text": ticket_json,
                    },
                },
            },
        ],
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).expect("json")
    }

    #[test]
    fn renders_the_ticket_into_the_prompt() {
        let p = params(r#"{"name":"triage_ticket","arguments":{"ticket_id":"T-1004"}}"#);
        let v = serde_json::to_value(get(Some(&p)).expect("prompt").in_era(false)).expect("json");
        assert!(v["messages"][0]["content"]["text"].as_str().expect("text").contains("Globex"));
        assert_eq!(v["messages"][1]["content"]["resource"]["uri"], "demo://tickets/T-1004");
    }

    #[test]
    fn rejects_unknown_prompt_missing_argument_and_unknown_ticket() {
        for bad in [
            r#"{"name":"nope"}"#,
            r#"{"name":"triage_ticket"}"#,
            r#"{"name":"triage_ticket","arguments":{"ticket_id":"T-9999"}}"#,
        ] {
            let p = params(bad);
            let err = get(Some(&p)).map(|_| ()).expect_err(bad);
            assert_eq!(err.code(), -32602, "{bad}");
        }
    }
}
