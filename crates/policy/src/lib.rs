//! Authorization decisions outside the model: Cedar policies over principals, MCP items and
//! risk tiers. No I/O: the gateway compiles [`PolicySet`]s, builds an [`Engine`], swaps it
//! whole on reload, and asks it one [`Request`] at a time.
//!
//! # The Cedar model
//!
//! The schema is built in ([`SCHEMA`], `policies/schema.cedarschema`) and has no namespace, so
//! policies say `User::"alice"` and `Group::"critical-operators"`.
//!
//! - **Principals**: `User`, `Workload`, `Local` (each `in [Group]`) and `Anonymous`, with
//!   attributes `id`, `scopes` (`Set<String>`) and an optional `tenant`. A principal's groups
//!   become its `Group` parents.
//! - **Actions**: `Action::"tools/call"`, `"resources/read"`, `"prompts/get"` and
//!   `"completion/complete"` (see [`Action`]).
//! - **Resources**: `Tool`, `Prompt` and `ResourceUri`, each `in [Server]`, with entity id
//!   `"<server>/<name>"` — so `Tool::"github/create_issue"`, `ResourceUri::"files/file:///etc/hosts"` —
//!   and attributes `server`, `name`, `riskTier` and `dataClass` (the registry's words, or
//!   `"unknown"` for a server with no registry entry), `riskLevel` (0 low … 3 critical, **4
//!   unknown**, so `resource.riskLevel >= 2` also catches unregistered servers) and `dataLevel`
//!   (0 public … 3 restricted, 4 unknown), `environment` (`"unknown"` when not recorded), and
//!   `readOnly` / `destructive` (the tool's annotation hints; **false when the tool gives
//!   none**, so test `resource.readOnly` to allow, never `!resource.destructive`).
//! - **Context**: `phase` (`"use"` | `"list"`), `route`, `approval` (`"none"` | `"granted"`),
//!   `sessionCalls`, `time` (`unix`, `hourUtc`, `minuteUtc`, `weekdayUtc` with 1 Monday … 7
//!   Sunday), `arguments` and `argumentsTruncated`.
//!
//! # Arguments
//!
//! Policies may condition on a call's arguments: `context.arguments has amount &&
//! context.arguments.amount > 1000`, `context.arguments.path like "/etc/*"`,
//! `context.arguments.options has mode && context.arguments.options.mode == "force"`. Always
//! guard with `has`: a missing attribute is an evaluation error, and an erring policy is
//! skipped, which for a forbid means it does not deny.
//!
//! Cedar's strict validation closes every record and only opens one (`additionalAttributes`)
//! under an experimental feature that also loosens the rest of validation. So the schema types
//! `arguments` as the empty record, and validation gives exactly that record an opening: it
//! accepts attribute accesses rooted at `context.arguments` (whatever their type) and
//! typechecks everything else strictly, including what follows a `context.arguments has …`
//! guard (see the `validation` module). What this cannot check: the names and types of
//! argument attributes themselves — a misspelt argument simply never matches.
//!
//! Arguments are converted from JSON to Cedar values directly (no JSON round trip), within
//! bounds ([`arguments::MAX_DEPTH`], [`arguments::MAX_VALUES`], [`arguments::MAX_STRING_BYTES`]);
//! whatever is beyond them is left out, and `context.argumentsTruncated` (and
//! [`Decision::arguments_truncated`]) says so — a policy may forbid such calls. Cedar has no
//! floats: a float with no fractional part becomes a `Long` (`1000.0` compares like `1000`),
//! another becomes a `decimal` rounded to 4 places (compare it with `.greaterThan(decimal("…"))`;
//! `>` on a decimal is an evaluation error), and one out of `decimal`'s range is left out.
//! `null` is left out (so `has` is false); arrays become sets. See [`arguments`].
//!
//! In the list phase `arguments` is the empty record. An item is listed iff the decision at
//! list time is not [`Outcome::Deny`]: `ApprovalRequired` items are listed.
//!
//! # Decisions
//!
//! - Policy ids are the `@id("…")` annotation, else `<source name>#<index>` (0-based, in
//!   source order); ids are unique within a set.
//! - Every enforced set is combined as one: a satisfied forbid anywhere denies, else a satisfied
//!   permit anywhere allows, else deny (`no_permit`). Shadow sets are decided alike and reported
//!   in [`Decision::shadow`], never changing the outcome.
//! - A forbid annotated `@reason("approval_required")` is curable: if the only satisfied
//!   forbids are such and a permit is satisfied, the outcome is [`Outcome::ApprovalRequired`];
//!   once a human approves, the gateway decides again with [`ApprovalState::Granted`], which the
//!   forbid's `when` must exclude (`context.approval != "granted"`).
//! - An evaluation error skips the erring policy (Cedar's semantics: default deny) and is
//!   reported in [`Decision::errors`].
//! - Policies are bucketed by their resource scope (item, server or global), the buckets of
//!   all of an engine's sets merged, and a decision evaluates only the buckets of its item —
//!   one authorizer run per bucket (see the `index` module). Nothing is parsed or validated at
//!   decision time, and the context holds only the attributes those buckets' policies read.
//! - An [`Engine`] caches, in bounded memory, the Cedar entities of the principals, items and
//!   (principal, item) pairs it has seen, and whole decisions by everything their policies can
//!   observe (entities, action, the context attributes they read; never the arguments of a
//!   request whose policies read them), so a repeated request — every item of a repeated list,
//!   a call under policies that do not read what changes between calls — is answered without
//!   evaluating anything, with the same decision. `benches/decide.rs` measures both paths.
//!
//! # The default set
//!
//! [`PolicySet::default_tiers`] (`policies/default.cedar`): low → anyone; medium → any
//! authenticated principal; high → `User` or `Local`, with approval; critical → `User` or
//! `Local` in `Group::"critical-operators"`, with approval; unknown tier → nobody (no permit,
//! so it fails closed while leaving other sets free to permit); workloads never reach high or
//! critical (no human to approve). `policies/default.fixtures.toml` exercises it.

pub mod arguments;
mod cache;
mod calendar;
mod context_use;
mod decision;
mod engine;
mod entity;
mod error;
pub mod fixture;
mod index;
mod policy_set;
mod request;
mod validation;

pub use decision::{Decision, Outcome, ShadowDecision, reason};
pub use engine::Engine;
pub use error::{PolicyError, Problem, ProblemKind};
pub use fixture::{CaseReport, FixtureError, FixtureReport, run_fixtures};
pub use policy_set::{DEFAULT_POLICIES, DEFAULT_SET_NAME, Enforcement, PolicySet, PolicySource};
pub use request::{Action, ApprovalState, Context, Phase, Request, Resource};
pub use validation::SCHEMA;

/// The example fixtures for the default set.
pub const DEFAULT_FIXTURES: &str = include_str!("../policies/default.fixtures.toml");
