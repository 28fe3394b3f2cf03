//! End-to-end tests: the real `portcullis` binary between real MCP peers we did
//! not write (server-everything, the Python `mcp` SDK's client and server) and
//! small fixtures of ours for faults. Peers are installed by `scripts/test`
//! into `tests/peers/` (project-local).

#[path = "e2e/harness.rs"]
mod harness;

#[path = "e2e/issuer.rs"]
mod issuer;

#[path = "e2e/admin.rs"]
mod admin;
#[path = "e2e/audit.rs"]
mod audit;
#[path = "e2e/auth.rs"]
mod auth;
#[path = "e2e/config.rs"]
mod config;
#[path = "e2e/conformance.rs"]
mod conformance;
#[path = "e2e/errors.rs"]
mod errors;
#[path = "e2e/everything.rs"]
mod everything;
#[path = "e2e/faults.rs"]
mod faults;
#[path = "e2e/hosts.rs"]
mod hosts;
#[path = "e2e/lifecycle.rs"]
mod lifecycle;
#[path = "e2e/metrics.rs"]
mod metrics;
#[path = "e2e/policy.rs"]
mod policy;
#[path = "e2e/registry.rs"]
mod registry;
#[path = "e2e/routing.rs"]
mod routing;
#[path = "e2e/stdio.rs"]
mod stdio;
#[path = "e2e/telemetry.rs"]
mod telemetry;
#[path = "e2e/validation.rs"]
mod validation;
