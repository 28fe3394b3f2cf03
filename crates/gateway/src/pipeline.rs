//! The one governed path every host request travels. The order of the stages
//! is written down here and nowhere else:
//!
//! ```text
//! listener ─▶ session/era ─▶ route ─▶ registry & pin check ─▶ forward (upstream) ─▶ relay result ─▶ host
//! ```
//!
//! A stage gets the typed request context and returns continue or a typed
//! refusal ([`Denied`]), which becomes a JSON-RPC error in `error.rs`. Controls
//! (registry, validation, policy, limits, approval) are stages inserted
//! between `route` and `forward`.

use std::sync::Arc;

use serde_json::value::RawValue;

use portcullis_registry::pinning::ItemKind;

use crate::error::{Denied, GatewayError};
use crate::registry::Registry;
use crate::route::{Route, Target};

/// What the pipeline knows of one request once it has been routed.
pub struct CallContext<'a> {
    pub route: &'a Route,
    pub method: &'a str,
    /// The name the host used (prefixed tool/prompt name, or resource URI).
    pub name: &'a str,
    pub params: Option<&'a RawValue>,
    /// Where the request goes, set by the route stage.
    pub target: Option<Target>,
}

/// The outcome of a stage.
pub enum Verdict {
    Continue,
    Reject(Denied),
}

/// One control on the path.
pub trait Stage: Send + Sync {
    /// The stage's name, as it appears in refusals and traces.
    fn name(&self) -> &'static str;
    /// Checks (and may enrich) the request.
    fn check(&self, call: &mut CallContext<'_>) -> Verdict;
}

/// The ordered stages a named request (`tools/call`, `prompts/get`, …) passes before it is forwarded.
pub struct Pipeline {
    stages: Vec<Arc<dyn Stage>>,
}

impl Pipeline {
    /// The stages in their fixed order.
    pub fn standard(registry: Option<Arc<Registry>>) -> Self {
        let mut stages: Vec<Arc<dyn Stage>> = vec![Arc::new(RouteStage)];
        if let Some(registry) = registry {
            stages.push(Arc::new(RegistryStage { registry }));
        }
        Self { stages }
    }

    /// Runs every stage; the first refusal wins.
    pub fn run(&self, call: &mut CallContext<'_>) -> Result<(), GatewayError> {
        for stage in &self.stages {
            if let Verdict::Reject(denied) = stage.check(call) {
                return Err(match denied.stage {
                    "route" => GatewayError::invalid(denied.reason, denied.message),
                    _ => GatewayError::Denied(denied),
                });
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
        let (kind, reason) = match call.method {
            "tools/call" => ("tool", "unknown_tool"),
            "prompts/get" => ("prompt", "unknown_prompt"),
            _ => return Verdict::Continue,
        };
        match call.route.resolve_name(call.name) {
            Some(target) => {
                call.target = Some(target);
                Verdict::Continue
            }
            None => Verdict::Reject(Denied {
                stage: self.name(),
                reason,
                message: format!("unknown {kind}: {}", call.name),
            }),
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
        let kind = match call.method {
            "tools/call" => ItemKind::Tool,
            "prompts/get" => ItemKind::Prompt,
            _ => return Verdict::Continue,
        };
        match self.registry.check_call(&target.upstream.settings.name, kind, &target.name) {
            Ok(()) => Verdict::Continue,
            Err(denied) => Verdict::Reject(denied),
        }
    }
}
