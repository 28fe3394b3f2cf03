//! The `params._meta` of a request: the per-request era markers of 2026-07-28 and the progress token.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::RpcError;

/// `_meta` key carrying the protocol revision of a modern request.
pub const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key carrying the client's capabilities on a modern request.
pub const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key carrying the server's identity on a modern result.
pub const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// `_meta` key tying a notification (and the final result) to its `subscriptions/listen` request.
pub const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// The fields of a request's `_meta` the demo reads; everything else is ignored.
#[derive(Debug, Default, Deserialize)]
pub struct RequestMeta<'a> {
    /// The revision of a modern request; absent on legacy requests.
    #[serde(rename = "io.modelcontextprotocol/protocolVersion", default, borrow)]
    pub protocol_version: Option<&'a str>,
    /// Required on modern requests; the demo needs no client capability, so it is only checked for presence.
    #[serde(rename = "io.modelcontextprotocol/clientCapabilities", default, borrow)]
    pub client_capabilities: Option<&'a RawValue>,
    /// Opts a modern request in to `notifications/message` at or above this level.
    #[serde(rename = "io.modelcontextprotocol/logLevel", default)]
    pub log_level: Option<LogLevel>,
    /// Opts the request in to `notifications/progress`.
    #[serde(rename = "progressToken", default, borrow)]
    pub progress_token: Option<&'a RawValue>,
}

/// A syslog severity, as MCP logging uses them (least severe first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
    Alert,
    Emergency,
}

impl RequestMeta<'_> {
    /// Reads `_meta` out of a request's params (absent params mean an empty `_meta`).
    pub fn parse(params: Option<&RawValue>) -> Result<RequestMeta<'_>, RpcError> {
        #[derive(Deserialize)]
        struct Params<'a> {
            #[serde(rename = "_meta", default, borrow)]
            meta: Option<RequestMeta<'a>>,
        }
        let Some(params) = params else {
            return Ok(RequestMeta::default());
        };
        serde_json::from_str::<Params<'_>>(params.get())
            .map(|p| p.meta.unwrap_or_default())
            .map_err(|e| RpcError::invalid_params(format!("invalid params or _meta: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).expect("valid json")
    }

    #[test]
    fn reads_modern_keys_and_progress_token() {
        let params = raw(r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",
                "io.modelcontextprotocol/clientCapabilities":{},
                "io.modelcontextprotocol/logLevel":"warning","progressToken":"p1","other":1},"name":"echo"}"#);
        let meta = RequestMeta::parse(Some(&params)).expect("valid meta");
        assert_eq!(meta.protocol_version, Some("2026-07-28"));
        assert!(meta.client_capabilities.is_some());
        assert_eq!(meta.log_level, Some(LogLevel::Warning));
        assert_eq!(meta.progress_token.map(RawValue::get), Some(r#""p1""#));
    }

    #[test]
    fn absent_params_or_meta_read_as_empty() {
        assert!(RequestMeta::parse(None).expect("empty").protocol_version.is_none());
        let params = raw(r#"{"name":"echo"}"#);
        assert!(RequestMeta::parse(Some(&params)).expect("empty").progress_token.is_none());
    }

    #[test]
    fn non_object_params_and_bad_log_level_are_invalid_params() {
        let params = raw("[1,2]");
        assert_eq!(RequestMeta::parse(Some(&params)).map(|_| ()).map_err(|e| e.code()), Err(-32602));
        let params = raw(r#"{"_meta":{"io.modelcontextprotocol/logLevel":"loud"}}"#);
        assert_eq!(RequestMeta::parse(Some(&params)).map(|_| ()).map_err(|e| e.code()), Err(-32602));
    }

    #[test]
    fn log_levels_order_by_severity() {
        assert!(LogLevel::Debug < LogLevel::Info);
        assert!(LogLevel::Error < LogLevel::Emergency);
    }
}
