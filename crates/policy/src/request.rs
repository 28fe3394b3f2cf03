//! What the gateway asks the policy engine: who wants to do what to which item, and in what context.

use portcullis_identity::Principal;
use portcullis_registry::model::{DataClass, RiskTier};

/// The MCP method being decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `tools/call` (Cedar `Action::"tools/call"`, resource type `Tool`).
    CallTool,
    /// `resources/read` (Cedar `Action::"resources/read"`, resource type `ResourceUri`).
    ReadResource,
    /// `prompts/get` (Cedar `Action::"prompts/get"`, resource type `Prompt`).
    GetPrompt,
    /// `completion/complete` (Cedar `Action::"completion/complete"`, resource type `Prompt` or
    /// `ResourceUri`: a name that starts with a URI scheme, like `file:`, is a resource template).
    Complete,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 4] = [Action::CallTool, Action::ReadResource, Action::GetPrompt, Action::Complete];

    /// The MCP method, which is also the Cedar action id.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CallTool => "tools/call",
            Self::ReadResource => "resources/read",
            Self::GetPrompt => "prompts/get",
            Self::Complete => "completion/complete",
        }
    }

    /// The action for an MCP method name, if it is one the policy decides.
    pub fn from_method(method: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == method)
    }
}

/// Why the decision is being made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// A call: the item is about to be used.
    Use,
    /// A list result: the item is shown iff the decision is not [`Outcome::Deny`](crate::Outcome::Deny).
    List,
}

impl Phase {
    /// The value of `context.phase`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Use => "use",
            Self::List => "list",
        }
    }
}

/// The tool, prompt or resource the request is about, with what the registry says of its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Resource<'a> {
    /// The upstream server's gateway name.
    pub server: &'a str,
    /// The tool or prompt name, or the resource URI.
    pub name: &'a str,
    /// `None` when the server has no registry entry.
    pub risk_tier: Option<RiskTier>,
    /// `None` when the server has no registry entry.
    pub data_class: Option<DataClass>,
    /// Where the server is deployed, from its registry entry.
    pub environment: Option<&'a str>,
    /// The tool's `readOnlyHint` annotation, when it has one.
    pub read_only: Option<bool>,
    /// The tool's `destructiveHint` annotation, when it has one.
    pub destructive: Option<bool>,
}

impl<'a> Resource<'a> {
    /// An item of `server` with nothing known about it beyond its name.
    pub fn unregistered(server: &'a str, name: &'a str) -> Self {
        Self { server, name, risk_tier: None, data_class: None, environment: None, read_only: None, destructive: None }
    }
}

/// Whether a human approved this call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApprovalState {
    /// No approval (yet): `context.approval == "none"`.
    None,
    /// A human approved it: `context.approval == "granted"`.
    Granted,
}

impl ApprovalState {
    /// The value of `context.approval`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Granted => "granted",
        }
    }
}

/// The circumstances of the request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Context<'a> {
    pub phase: Phase,
    /// The call's arguments (a JSON object); ignored in the list phase.
    pub arguments: Option<&'a serde_json::Value>,
    /// The gateway route the request came in on.
    pub route: &'a str,
    /// Now, in seconds since the Unix epoch, UTC.
    pub now_unix: i64,
    pub approval: ApprovalState,
    /// Calls made so far in the session.
    pub session_calls: u64,
}

/// One question for the policy engine.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub principal: &'a Principal,
    pub action: Action,
    pub resource: Resource<'a>,
    pub context: Context<'a>,
}
