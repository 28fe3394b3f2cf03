//! Upstream connectors: how the gateway reaches an MCP server.
//!
//! A [`Link`] is a raw message pipe to one upstream (a supervised stdio child
//! process, a Streamable HTTP endpoint, or a legacy HTTP+SSE endpoint). It
//! mints nothing and understands only framing and request/response matching;
//! the MCP client logic (handshake, era discovery) sits in [`client`].
//!
//! Architecture invariant: only this crate opens connections to upstreams.

pub mod client;
pub mod error;
pub mod http;
pub mod legacy_sse;
pub mod link;
pub mod pending;
mod pool;
mod shaping;
pub mod shard;
pub mod sse;
pub mod stdio;

pub use client::{ClientInfo, UpstreamClient, UpstreamInfo};
pub use error::UpstreamError;
pub use link::{Link, LinkEvent, Related};
