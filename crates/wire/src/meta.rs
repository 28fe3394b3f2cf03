//! The reserved `_meta` keys of 2026-07-28 requests, results and notifications.

/// The request's protocol revision (required on every modern request).
pub const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// The client's capabilities for this request (required on every modern request).
pub const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// The client's self-reported implementation info.
pub const CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// The per-request log level (deprecated).
pub const LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
/// The server's implementation info on every modern result.
pub const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// The `subscriptions/listen` request id on each notification of that stream.
pub const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
/// The progress token of a request.
pub const PROGRESS_TOKEN: &str = "progressToken";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
