//! MCP as the gateway sees it: the JSON-RPC envelope, protocol eras, the
//! standard HTTP headers and the error codes. No I/O lives here.
//!
//! Architecture invariant: the gateway parses only the envelope of a message
//! (`jsonrpc`, `id`, `method`, and for the few methods a control inspects, a
//! field or two of `params`). Everything else stays raw JSON so it is
//! forwarded byte-faithfully.

pub mod envelope;
pub mod error;
pub mod header;
pub mod meta;
pub mod object;
pub mod param_header;
pub mod version;

pub use envelope::{Message, MessageKind, ParseError, RequestId};
pub use error::{ErrorCode, RpcError};
pub use object::RawObject;
pub use version::{Era, ProtocolVersion};
