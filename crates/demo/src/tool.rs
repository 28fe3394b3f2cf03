//! The demo's tools: their definitions (`tools/list`) and what calling each one does (`tools/call`).
//!
//! Arguments that break a tool's input schema are a protocol error (-32602), as is an unknown
//! tool; a well-formed call that fails (an unknown ticket, `fail`) is a result with `isError`.

use std::borrow::Cow;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::error::{ErrorKind, RpcError};
use crate::jsonrpc::parse_params;
use crate::meta::LogLevel;
use crate::reply::{Reply, ToolResult};
use crate::server::{CACHE_TTL_MS, Context};
use crate::ticket::{self, Ticket};

/// A tool argument mirrored into an `Mcp-Param-*` header on 2026-07-28 HTTP (`x-mcp-header`).
#[derive(Debug)]
pub struct HeaderParam {
    pub tool: &'static str,
    pub argument: &'static str,
    pub header: &'static str,
}

/// Every `x-mcp-header` annotation in the tool definitions below.
pub const HEADER_PARAMS: [HeaderParam; 1] =
    [HeaderParam { tool: "draft_ticket", argument: "priority", header: "mcp-param-priority" }];

/// The `tools/list` result (one page, deterministic order).
pub fn list<'p>() -> Reply<'p> {
    Reply::cacheable(json!({ "tools": *DEFINITIONS }), CACHE_TTL_MS)
}

/// Runs tools; holds the only state they share, the draft counter.
#[derive(Debug)]
pub struct Toolbox {
    next_draft: AtomicU64,
}

impl Default for Toolbox {
    fn default() -> Toolbox {
        Toolbox { next_draft: AtomicU64::new(1) }
    }
}

impl Toolbox {
    /// Handles `tools/call`.
    pub async fn call<'p>(&self, params: Option<&'p RawValue>, cx: &Context<'_>) -> Result<Reply<'p>, RpcError> {
        #[derive(Deserialize)]
        struct Call<'a> {
            #[serde(borrow)]
            name: Cow<'a, str>,
            #[serde(default, borrow)]
            arguments: Option<&'a RawValue>,
        }
        let call: Call<'p> = parse_params(params)?;
        let args = call.arguments;
        let result = match call.name.as_ref() {
            "echo" => {
                let EchoArgs { text } = arguments("echo", args)?;
                ToolResult { text, structured: None, is_error: false }
            }
            "search_tickets" => search_tickets(arguments("search_tickets", args)?)?,
            "get_ticket" => get_ticket(arguments("get_ticket", args)?)?,
            "draft_ticket" => self.draft_ticket(arguments("draft_ticket", args)?, cx).await?,
            "slow" => slow(arguments("slow", args)?, cx).await?,
            "fail" => fail(arguments("fail", args)?, cx).await,
            other => {
                return Err(
                    RpcError::invalid_params(format!("unknown tool: {other}")).with_data(json!({ "name": other }))
                );
            }
        };
        Ok(Reply::tool(result))
    }

    async fn draft_ticket<'p>(&self, args: DraftArgs, cx: &Context<'_>) -> Result<ToolResult<'p>, RpcError> {
        check_length("title", &args.title, 1, 200)?;
        check_length("body", &args.body, 1, 5000)?;
        let draft_id = format!("D-{:04}", self.next_draft.fetch_add(1, Ordering::Relaxed));
        let draft = json!({
            "draftId": draft_id,
            "status": "draft",
            "title": args.title,
            "priority": args.priority,
        });
        cx.notifier.log(LogLevel::Info, json!({ "event": "draft_created", "draftId": draft_id })).await;
        Ok(ToolResult {
            text: Cow::Owned(format!("Created draft {draft_id}: {}", args.title)),
            structured: Some(draft),
            is_error: false,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoArgs<'a> {
    #[serde(borrow)]
    text: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    query: String,
    #[serde(default = "default_limit")]
    limit: u64,
}

fn default_limit() -> u64 {
    10
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetArgs {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DraftArgs {
    title: String,
    body: String,
    priority: Priority,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum Priority {
    Low,
    Normal,
    High,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlowArgs {
    ms: u64,
    #[serde(default = "default_steps")]
    steps: u32,
}

fn default_steps() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailArgs {
    #[serde(default)]
    message: Option<String>,
}

/// Parses a tool's arguments; absent arguments read as `{}`.
fn arguments<'a, T: Deserialize<'a>>(tool: &str, raw: Option<&'a RawValue>) -> Result<T, RpcError> {
    serde_json::from_str(raw.map_or("{}", RawValue::get))
        .map_err(|e| RpcError::invalid_params(format!("invalid arguments for {tool}: {e}")))
}

fn check_length(field: &str, value: &str, min: usize, max: usize) -> Result<(), RpcError> {
    let len = value.chars().count();
    if (min..=max).contains(&len) {
        Ok(())
    } else {
        Err(RpcError::invalid_params(format!("{field} must be {min} to {max} characters long")))
    }
}

fn search_tickets<'p>(args: SearchArgs) -> Result<ToolResult<'p>, RpcError> {
    check_length("query", args.query.trim(), 1, 200)?;
    if !(1..=50).contains(&args.limit) {
        return Err(RpcError::invalid_params("limit must be between 1 and 50"));
    }
    #[derive(Serialize)]
    struct Summary {
        id: &'static str,
        title: &'static str,
        status: &'static str,
        priority: &'static str,
        customer: &'static str,
    }
    let matches: Vec<&Ticket> = ticket::search(&args.query).collect();
    let tickets: Vec<Summary> = matches
        .iter()
        .take(usize::try_from(args.limit).unwrap_or(usize::MAX))
        .map(|t| Summary { id: t.id, title: t.title, status: t.status, priority: t.priority, customer: t.customer })
        .collect();
    let structured = json!({ "total": matches.len(), "tickets": tickets });
    Ok(structured_result(structured))
}

fn get_ticket<'p>(args: GetArgs) -> Result<ToolResult<'p>, RpcError> {
    let well_formed =
        args.id.len() == 6 && args.id.starts_with("T-") && args.id.bytes().skip(2).all(|b| b.is_ascii_digit());
    if !well_formed {
        return Err(RpcError::invalid_params("id must look like T-1001"));
    }
    Ok(match ticket::find(&args.id) {
        Some(t) => structured_result(json!(t)),
        None => {
            ToolResult { text: Cow::Owned(format!("No ticket with id {}", args.id)), structured: None, is_error: true }
        }
    })
}

/// Sleeps `ms` in `steps` equal steps, reporting progress after each; ends early when cancelled.
async fn slow<'p>(args: SlowArgs, cx: &Context<'_>) -> Result<ToolResult<'p>, RpcError> {
    if args.ms > 60_000 {
        return Err(RpcError::invalid_params("ms must be at most 60000"));
    }
    if !(1..=100).contains(&args.steps) {
        return Err(RpcError::invalid_params("steps must be between 1 and 100"));
    }
    let step = Duration::from_millis(args.ms) / args.steps;
    for i in 1..=args.steps {
        tokio::select! {
            () = cx.cancelled() => {
                return Err(RpcError::new(ErrorKind::Cancelled, "request cancelled"));
            }
            () = tokio::time::sleep(step) => {}
        }
        let message = format!("step {i} of {}", args.steps);
        cx.notifier.progress(u64::from(i), u64::from(args.steps), &message).await;
    }
    Ok(ToolResult {
        text: Cow::Owned(format!("Slept {} ms in {} steps", args.ms, args.steps)),
        structured: None,
        is_error: false,
    })
}

async fn fail<'p>(args: FailArgs, cx: &Context<'_>) -> ToolResult<'p> {
    let message = args.message.unwrap_or_else(|| "this tool always fails".to_owned());
    cx.notifier.log(LogLevel::Error, json!({ "event": "tool_failed", "message": message })).await;
    ToolResult { text: Cow::Owned(format!("Demo failure: {message}")), structured: None, is_error: true }
}

/// Structured content, plus its JSON text for clients that read only text blocks.
fn structured_result<'p>(structured: Value) -> ToolResult<'p> {
    ToolResult { text: Cow::Owned(structured.to_string()), structured: Some(structured), is_error: false }
}

fn ticket_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": { "type": "string" },
            "title": { "type": "string" },
            "status": { "type": "string", "enum": ["open", "in_progress", "closed"] },
            "priority": { "type": "string", "enum": ["low", "normal", "high"] },
            "customer": { "type": "string" },
            "component": { "type": "string" },
            "created": { "type": "string", "format": "date" },
            "body": { "type": "string" },
        },
        "required": ["id", "title", "status", "priority", "customer", "component", "created", "body"],
        "additionalProperties": false,
    })
}

static DEFINITIONS: LazyLock<Value> = LazyLock::new(|| {
    json!([
        {
            "name": "search_tickets",
            "title": "Search support tickets",
            "description": "Search the support desk's tickets. Every word of the query must appear in the \
                ticket's id, title, body, customer, component, status or priority (case-insensitive). \
                Returns the total number of matches and up to `limit` ticket summaries in id order.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "query": {
                        "type": "string", "minLength": 1, "maxLength": 200,
                        "description": "Words to look for, e.g. \"saml acme\"",
                    },
                    "limit": {
                        "type": "integer", "minimum": 1, "maximum": 50, "default": 10,
                        "description": "Maximum number of tickets to return",
                    },
                },
                "required": ["query"],
                "additionalProperties": false,
            },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "total": { "type": "integer", "minimum": 0 },
                    "tickets": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "id": { "type": "string" },
                                "title": { "type": "string" },
                                "status": { "type": "string" },
                                "priority": { "type": "string" },
                                "customer": { "type": "string" },
                            },
                            "required": ["id", "title", "status", "priority", "customer"],
                            "additionalProperties": false,
                        },
                    },
                },
                "required": ["total", "tickets"],
                "additionalProperties": false,
            },
            "annotations": {
                "title": "Search support tickets",
                "readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false,
            },
        },
        {
            "name": "get_ticket",
            "title": "Get a support ticket",
            "description": "Fetch one support ticket by id, with its full body.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "id": { "type": "string", "pattern": "^T-[0-9]{4}$", "description": "Ticket id, e.g. T-1001" },
                },
                "required": ["id"],
                "additionalProperties": false,
            },
            "outputSchema": ticket_schema(),
            "annotations": {
                "title": "Get a support ticket",
                "readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false,
            },
        },
        {
            "name": "draft_ticket",
            "title": "Draft a new support ticket",
            "description": "Create a draft ticket for a human to review before it is filed. Returns the draft id.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "title": { "type": "string", "minLength": 1, "maxLength": 200, "description": "One-line summary" },
                    "body": { "type": "string", "minLength": 1, "maxLength": 5000, "description": "What happened, steps to reproduce" },
                    "priority": {
                        "type": "string", "enum": ["low", "normal", "high"],
                        "description": "How urgent the ticket is",
                        "x-mcp-header": "Priority",
                    },
                },
                "required": ["title", "body", "priority"],
                "additionalProperties": false,
            },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "draftId": { "type": "string", "pattern": "^D-[0-9]{4,}$" },
                    "status": { "const": "draft" },
                    "title": { "type": "string" },
                    "priority": { "type": "string", "enum": ["low", "normal", "high"] },
                },
                "required": ["draftId", "status", "title", "priority"],
                "additionalProperties": false,
            },
            "annotations": {
                "title": "Draft a new support ticket",
                "readOnlyHint": false, "destructiveHint": false, "idempotentHint": false, "openWorldHint": false,
            },
        },
        {
            "name": "echo",
            "title": "Echo",
            "description": "Return the given text unchanged. Used by tests and benchmarks.",
            "inputSchema": {
                "type": "object",
                "properties": { "text": { "type": "string", "description": "Text to return" } },
                "required": ["text"],
                "additionalProperties": false,
            },
            "annotations": {
                "title": "Echo",
                "readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false,
            },
        },
        {
            "name": "slow",
            "title": "Slow operation",
            "description": "Sleep for `ms` milliseconds in `steps` equal steps, reporting progress after each \
                step when the request carries a progress token. Cancellable. Used by tests.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "ms": { "type": "integer", "minimum": 0, "maximum": 60000, "description": "Total time to sleep" },
                    "steps": {
                        "type": "integer", "minimum": 1, "maximum": 100, "default": 1,
                        "description": "Number of progress steps",
                    },
                },
                "required": ["ms"],
                "additionalProperties": false,
            },
            "annotations": {
                "title": "Slow operation",
                "readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false,
            },
        },
        {
            "name": "fail",
            "title": "Always fail",
            "description": "Always return a tool execution error (isError: true). Used by tests.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "message": { "type": "string", "maxLength": 500, "description": "Text to include in the error" },
                },
                "additionalProperties": false,
            },
            "annotations": {
                "title": "Always fail",
                "readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false,
            },
        },
    ])
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_fully_described_with_closed_input_schema() {
        let tools = DEFINITIONS.as_array().expect("array");
        assert_eq!(tools.len(), 6);
        for tool in tools {
            let name = tool["name"].as_str().expect("name");
            for key in ["title", "description", "inputSchema", "annotations"] {
                assert!(tool.get(key).is_some(), "{name} lacks {key}");
            }
            assert_eq!(tool["inputSchema"]["type"], "object", "{name}");
            assert_eq!(tool["inputSchema"]["additionalProperties"], false, "{name}");
        }
    }

    #[test]
    fn header_params_match_x_mcp_header_annotations() {
        for param in &HEADER_PARAMS {
            let tool = DEFINITIONS
                .as_array()
                .and_then(|tools| tools.iter().find(|t| t["name"] == param.tool))
                .expect("annotated tool exists");
            let annotation =
                tool["inputSchema"]["properties"][param.argument]["x-mcp-header"].as_str().expect("annotated");
            assert_eq!(format!("mcp-param-{}", annotation.to_ascii_lowercase()), param.header);
        }
    }

    #[test]
    fn check_length_counts_characters_not_bytes() {
        assert!(check_length("t", "ü", 1, 1).is_ok());
        assert!(check_length("t", "", 1, 5).is_err());
    }
}
