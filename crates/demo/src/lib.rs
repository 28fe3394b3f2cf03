//! A small, realistic MCP server bundled with Portcullis for its quickstart, end-to-end tests and
//! benchmarks: a fixed in-memory support desk (tools, resources, a prompt, completion) plus
//! `echo`, `slow` and `fail` for tests.
//!
//! It speaks both eras on both transports: legacy (2024-11-05 … 2025-11-25, `initialize` and
//! sessions) and modern (2026-07-28, stateless, revision and capabilities in each request's
//! `_meta`, `server/discover`, `resultType`). See this crate's `README.md` for the details a
//! gateway engineer cares about.
//!
//! Architecture invariant: only `stdio` and `http` know transports, only `http` and `header`
//! know HTTP; `server` dispatches a parsed request and never sees bytes on the wire.
#![forbid(unsafe_code)]

mod completion;
mod error;
mod header;
mod http;
mod jsonrpc;
mod meta;
mod notifier;
mod prompt;
mod reply;
mod resource;
mod revision;
mod server;
mod session;
mod stdio;
mod ticket;
mod tool;

use std::io;

use tokio::net::TcpListener;

/// Serves one MCP client on stdin/stdout (newline-delimited JSON-RPC) until stdin closes.
pub async fn run_stdio() -> io::Result<()> {
    stdio::serve(tokio::io::stdin(), tokio::io::stdout()).await
}

/// Serves MCP Streamable HTTP at `/mcp` on `listener` until the process ends.
pub async fn run_http(listener: TcpListener) -> io::Result<()> {
    http::serve(listener).await
}
