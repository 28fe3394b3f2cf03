//! The one governed path every host request travels. The order of the stages
//! is written down here and nowhere else:
//!
//! ```text
//! listener ─▶ authenticate ─▶ session/era ─▶ route ─▶ registry & pin check ─▶ validate arguments
//!          ─▶ policy ─▶ forward (upstream) ─▶ relay result ─▶ host
//! ```
//!
//! Authentication happens in the listener (it answers 401/403 before a body is
//! read); every later control is a [`Stage`] here. A stage gets the typed
//! request context and returns continue, a typed refusal ([`Denied`], which
//! becomes a JSON-RPC error in `error.rs`), or "unverified": it needs the
//! upstream's current metadata, which the gateway fetches before running the
//! pipeline once more.

use std::sync::Arc;

use portcullis_identity::Principal;
use portcullis_policy::{Action, ApprovalState, Context, Decision, Outcome, Phase, Request, Resource};
use portcullis_registry::pinning::ItemKind;
use serde_json::Value;

use crate::error::{Denied, Detail};
use crate::policy::PolicyControl;
use crate::registry::{Registry, UNVERIFIED};
use crate::route::{Route, Target};
use crate::validation::{SchemaCache, Strictness, ValidationSettings};

/// The methods that reach data, each governed by the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Governed {
    CallTool,
    GetPrompt,
    ReadResource,
    Complete,
}

impl Governed {
    /// The governed method, if `method` is one.
    pub fn of(method: &str) -> Option<Self> {
        match method {
            "tools/call" => Some(Self::CallTool),
            "prompts/get" => Some(Self::GetPrompt),
            "resources/read" => Some(Self::ReadResource),
            "completion/complete" => Some(Self::Complete),
            _ => None,
        }
    }

    /// The policy's action for the method.
    pub fn action(self) -> Action {
        match self {
            Self::CallTool => Action::CallTool,
            Self::GetPrompt => Action::GetPrompt,
            Self::ReadResource => Action::ReadResource,
            Self::Complete => Action::Complete,
        }
    }

    fn item_kind(self) -> Option<ItemKind> {
        match self {
            Self::CallTool => Some(ItemKind::Tool),
            Self::GetPrompt => Some(ItemKind::Prompt),
            Self::ReadResource | Self::Complete => None,
        }
    }
}

/// What the pipeline knows of one request.
pub struct CallContext<'a> {
    pub principal: &'a Principal,
    pub route: &'a Route,
    pub method: Governed,
    /// The name the host used (prefixed tool/prompt name, or resource URI).
    pub name: &'a str,
    /// `params.arguments` of a `tools/call` or `prompts/get`, parsed once.
    pub arguments: Option<&'a Value>,
    /// Where the request goes: set by the route stage (or before the pipeline, for resources).
    pub target: Option<Target>,
    /// Whether a human approved this exact call.
    pub approval: ApprovalState,
    /// Tool calls already let through on the host's session (0 for a modern, sessionless host).
    pub session_calls: u64,
    /// The policy's decision, once made.
    pub decision: Option<Decision>,
    /// When traced: each stage's name, start, end and verdict, in order.
    pub timings: Option<Vec<StageTiming>>,
}

/// How long one stage took, for the call's trace.
#[derive(Debug, Clone)]
pub struct StageTiming {
    pub stage: &'static str,
    pub start: std::time::SystemTime,
    pub end: std::time::SystemTime,
    /// `continue`, `reject` or `unverified`.
    pub verdict: &'static str,
}

/// The outcome of a stage.
pub enum Verdict {
    Continue,
    Reject(Denied),
    /// The stage needs the upstream's current metadata; the refusal applies if it stays unknown.
    Unverified(Denied),
}

/// Why the pipeline stopped.
pub enum Stop {
    Denied(Denied),
    /// Observe the target upstream and run again.
    Unverified,
}

/// One control on the path.
pub trait Stage: Send + Sync {
    /// The stage's name, as it appears in refusals and traces.
    fn name(&self) -> &'static str;
    /// Checks (and may enrich) the request.
    fn check(&self, call: &mut CallContext<'_>) -> Verdict;
}

/// The controls the stages consult.
pub struct Controls {
    pub registry: Option<Arc<Registry>>,
    pub validation: ValidationSettings,
    /// Compiled tool schemas, shared with the output check.
    pub schemas: Arc<SchemaCache>,
    pub policy: Option<Arc<PolicyControl>>,
}

/// The ordered stages a governed request passes before it is forwarded.
pub struct Pipeline {
    stages: Vec<Box<dyn Stage>>,
    reads_arguments: bool,
}

impl Pipeline {
    /// The stages in their fixed order.
    pub fn standard(controls: &Controls) -> Self {
        let mut stages: Vec<Box<dyn Stage>> = vec![Box::new(RouteStage)];
        if let Some(registry) = &controls.registry {
            stages.push(Box::new(RegistryStage { registry: Arc::clone(registry) }));
        }
        if controls.validation.enabled {
            stages.push(Box::new(ValidateStage {
                settings: controls.validation.clone(),
                registry: controls.registry.clone(),
                schemas: Arc::clone(&controls.schemas),
            }));
        }
        if let Some(policy) = &controls.policy {
            stages.push(Box::new(PolicyStage { policy: Arc::clone(policy), registry: controls.registry.clone() }));
        }
        let reads_arguments = controls.validation.enabled || controls.policy.is_some();
        Self { stages, reads_arguments }
    }

    /// Whether a stage reads the call's arguments (else they are never parsed).
    pub fn reads_arguments(&self) -> bool {
        self.reads_arguments
    }

    /// Runs every stage; the first refusal wins. On the last attempt an unverified
    /// request is refused; before it, the caller is asked to observe and retry.
    pub fn run(&self, call: &mut CallContext<'_>, last_attempt: bool) -> Result<(), Stop> {
        for stage in &self.stages {
            let start = call.timings.is_some().then(std::time::SystemTime::now);
            let verdict = stage.check(call);
            if let (Some(start), Some(timings)) = (start, call.timings.as_mut()) {
                let word = match verdict {
                    Verdict::Continue => "continue",
                    Verdict::Reject(_) => "reject",
                    Verdict::Unverified(_) => "unverified",
                };
                timings.push(StageTiming {
                    stage: stage.name(),
                    start,
                    end: std::time::SystemTime::now(),
                    verdict: word,
                });
            }
            match verdict {
                Verdict::Continue => {}
                Verdict::Reject(denied) => return Err(Stop::Denied(denied)),
                Verdict::Unverified(denied) if last_attempt => return Err(Stop::Denied(denied)),
                Verdict::Unverified(_) => return Err(Stop::Unverified),
            }
        }
        Ok(())
    }
}

/// Resolves the host's name to an upstream and the upstream's own name.
struct RouteStage;

impl Stage for RouteStage {
    fn name(&self) -> &'static str {
        "route"
    }

    fn check(&self, call: &mut CallContext<'_>) -> Verdict {
        if call.target.is_some() {
            return Verdict::Continue;
        }
        let (kind, reason) = match call.method {
            Governed::CallTool => ("tool", "unknown_tool"),
            Governed::GetPrompt | Governed::Complete => ("prompt", "unknown_prompt"),
            Governed::ReadResource => ("resource", "resource_not_found"),
        };
        match call.route.resolve_name(call.name) {
            Some(target) => {
                call.target = Some(target);
                Verdict::Continue
            }
            None => Verdict::Reject(Denied::new(self.name(), reason, format!("unknown {kind}: {}", call.name))),
        }
    }
}

/// Only approved servers, and only their approved (pinned, unchanged) tools and prompts.
struct RegistryStage {
    registry: Arc<Registry>,
}

impl Stage for RegistryStage {
    fn name(&self) -> &'static str {
        "registry"
    }

    fn check(&self, call: &mut CallContext<'_>) -> Verdict {
        let Some(target) = &call.target else { return Verdict::Continue };
        let server = &target.upstream.settings.name;
        let outcome = match call.method.item_kind() {
            Some(kind) => self.registry.check_call(server, kind, &target.name),
            None => self.registry.admission(server),
        };
        match outcome {
            Ok(()) => Verdict::Continue,
            Err(denied) if denied.reason == UNVERIFIED => Verdict::Unverified(denied),
            Err(denied) => Verdict::Reject(denied),
        }
    }
}

/// Tool arguments against the pinned input schema.
struct ValidateStage {
    settings: ValidationSettings,
    registry: Option<Arc<Registry>>,
    schemas: Arc<SchemaCache>,
}

impl Stage for ValidateStage {
    fn name(&self) -> &'static str {
        "validate"
    }

    fn check(&self, call: &mut CallContext<'_>) -> Verdict {
        if call.method != Governed::CallTool {
            return Verdict::Continue;
        }
        let Some(target) = &call.target else { return Verdict::Continue };
        let Some(tool) = target.upstream.tool(&target.name) else {
            return Verdict::Unverified(Denied::new(
                self.name(),
                "unknown_tool",
                format!("unknown tool: {} (its server does not list it)", call.name),
            ));
        };
        let compiled = self.schemas.get(tool.input_schema.as_deref().unwrap_or(r#"{"type":"object"}"#));
        let schema = match compiled.as_ref() {
            Ok(schema) => schema,
            Err(why) => {
                tracing::warn!(server = %target.upstream.settings.name, tool = %target.name, why, "tool schema unusable; calls refused");
                return Verdict::Reject(Denied::new(
                    self.name(),
                    "schema_invalid",
                    format!("tool '{}' cannot be called: its input schema is not usable", call.name),
                ));
            }
        };
        let strict = match self.settings.strict {
            Strictness::Always => true,
            Strictness::Never => false,
            Strictness::Auto => self
                .registry
                .as_ref()
                .and_then(|r| r.facts(&target.upstream.settings.name, &target.name))
                .is_some_and(|f| f.risk_tier >= portcullis_registry::model::RiskTier::High),
        };
        let empty = Value::Object(serde_json::Map::new());
        match schema.check(call.arguments.unwrap_or(&empty), strict) {
            Ok(()) => Verdict::Continue,
            Err(violations) => {
                let first = &violations[0];
                let at =
                    if first.path.is_empty() { "arguments".to_owned() } else { format!("arguments{}", first.path) };
                let message = format!("invalid arguments for '{}' at {at}: {}", call.name, first.message);
                Verdict::Reject(Denied {
                    stage: self.name(),
                    reason: "invalid_arguments",
                    message,
                    detail: Detail::Arguments(violations),
                })
            }
        }
    }
}

/// The policy's decision: who may do what, outside the model.
struct PolicyStage {
    policy: Arc<PolicyControl>,
    registry: Option<Arc<Registry>>,
}

impl Stage for PolicyStage {
    fn name(&self) -> &'static str {
        "policy"
    }

    fn check(&self, call: &mut CallContext<'_>) -> Verdict {
        let Some(target) = &call.target else { return Verdict::Continue };
        let server = target.upstream.settings.name.as_str();
        let facts = self.registry.as_ref().and_then(|r| r.facts(server, &target.name));
        let tool = if call.method == Governed::CallTool { target.upstream.tool(&target.name) } else { None };
        let empty = Value::Object(serde_json::Map::new());
        let request = Request {
            principal: call.principal,
            action: call.method.action(),
            resource: Resource {
                server,
                name: &target.name,
                risk_tier: facts.as_ref().map(|f| f.risk_tier),
                data_class: facts.as_ref().map(|f| f.data_class),
                environment: facts.as_ref().map(|f| f.environment.as_str()),
                read_only: tool.as_ref().and_then(|t| t.read_only),
                destructive: tool.as_ref().and_then(|t| t.destructive),
            },
            context: Context {
                phase: Phase::Use,
                arguments: Some(call.arguments.unwrap_or(&empty)),
                route: call.route.path(),
                now_unix: crate::registry::now_ms() / 1000,
                approval: call.approval,
                session_calls: call.session_calls,
            },
        };
        let decision = self.policy.decide(&request);
        let verdict = match decision.outcome {
            Outcome::Allow => Verdict::Continue,
            Outcome::Deny => Verdict::Reject(Denied {
                stage: self.name(),
                reason: decision.reason,
                message: format!("policy denies {} '{}' to {}", call.method.noun(), call.name, call.principal),
                detail: Detail::Policy(decision.policies.clone()),
            }),
            // No approval channel is wired yet: a call that needs a human is refused (fail closed).
            Outcome::ApprovalRequired => Verdict::Reject(Denied {
                stage: "approval",
                reason: "approval_required",
                message: format!("{} '{}' needs a human's approval", call.method.noun(), call.name),
                detail: Detail::Policy(decision.policies.clone()),
            }),
        };
        call.decision = Some(decision);
        verdict
    }
}

impl Governed {
    /// What the method acts on, for messages.
    pub fn noun(self) -> &'static str {
        match self {
            Self::CallTool => "tool",
            Self::GetPrompt => "prompt",
            Self::ReadResource => "resource",
            Self::Complete => "completion",
        }
    }
}
