//! `completion/complete`: ticket ids for the prompt's `ticket_id` and the template's `{id}`.

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::error::RpcError;
use crate::jsonrpc::parse_params;
use crate::prompt::{TICKET_ID, TRIAGE_TICKET};
use crate::reply::Reply;
use crate::resource::TICKET_URI_TEMPLATE;
use crate::ticket;

/// Handles `completion/complete`; an unknown prompt or template is -32602.
pub fn complete<'p>(params: Option<&'p RawValue>) -> Result<Reply<'p>, RpcError> {
    #[derive(Deserialize)]
    struct Complete {
        #[serde(rename = "ref")]
        reference: Reference,
        argument: Argument,
    }
    #[derive(Deserialize)]
    #[serde(tag = "type")]
    enum Reference {
        #[serde(rename = "ref/prompt")]
        Prompt { name: String },
        #[serde(rename = "ref/resource")]
        Resource { uri: String },
    }
    #[derive(Deserialize)]
    struct Argument {
        name: String,
        value: String,
    }
    let Complete { reference, argument } = parse_params(params)?;
    let completes_ids = match &reference {
        Reference::Prompt { name } if name == TRIAGE_TICKET => argument.name == TICKET_ID,
        Reference::Resource { uri } if uri == TICKET_URI_TEMPLATE => argument.name == "id",
        Reference::Prompt { name } => {
            return Err(RpcError::invalid_params(format!("unknown prompt: {name}")));
        }
        Reference::Resource { uri } => {
            return Err(RpcError::invalid_params(format!("unknown resource template: {uri}")));
        }
    };
    let values = if completes_ids { ticket::ids_starting_with(&argument.value) } else { Vec::new() };
    Ok(Reply::object(json!({
        "completion": { "values": values, "total": values.len(), "hasMore": false },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete_json(s: &str) -> Result<serde_json::Value, RpcError> {
        let p = RawValue::from_string(s.to_owned()).expect("json");
        complete(Some(&p)).map(|r| serde_json::to_value(r.in_era(false)).expect("json"))
    }

    #[test]
    fn completes_ticket_ids_for_prompt_argument_and_template_variable() {
        let v = complete_json(
            r#"{"ref":{"type":"ref/prompt","name":"triage_ticket"},"argument":{"name":"ticket_id","value":"T-100"}}"#,
        )
        .expect("completes");
        assert_eq!(v["completion"]["total"], 8);
        let v = complete_json(
            r#"{"ref":{"type":"ref/resource","uri":"demo://tickets/{id}"},"argument":{"name":"id","value":"t-1005"}}"#,
        )
        .expect("completes");
        assert_eq!(v["completion"]["values"], json!(["T-1005"]));
    }

    #[test]
    fn unknown_argument_completes_to_nothing_and_unknown_prompt_is_invalid_params() {
        let v = complete_json(
            r#"{"ref":{"type":"ref/prompt","name":"triage_ticket"},"argument":{"name":"other","value":""}}"#,
        )
        .expect("completes");
        assert_eq!(v["completion"]["values"], json!([]));
        let err = complete_json(r#"{"ref":{"type":"ref/prompt","name":"nope"},"argument":{"name":"x","value":""}}"#)
            .expect_err("unknown prompt");
        assert_eq!(err.code(), -32602);
    }
}
