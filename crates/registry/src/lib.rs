//! The registry's domain, without I/O: what an approved server entry records,
//! the MCP Registry `server.json` format (import and export), the canonical
//! hash that pins a tool's, prompt's or resource template's metadata, the
//! comparison that finds drift, and the scan for poisoned metadata.

pub mod canonical;
pub mod model;
pub mod pinning;
pub mod scan;
pub mod server_json;
