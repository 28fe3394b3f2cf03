//! Policy fixtures: requests with the decisions they must get, for `portcullis policy test`.
//!
//! A fixture file is TOML with one `[[case]]` table per request (unknown keys are errors):
//!
//! ```toml
//! [[case]]
//! name = "a user may call a medium-risk tool"   # required, shown in the report
//! action = "tools/call"        # tools/call (default) | resources/read | prompts/get | completion/complete
//! expect = "allow"             # allow | deny | approval_required
//! policies = ["tier-medium-authenticated"]  # optional: ids that must be among the deciding policies
//! reason = "allowed"           # optional: allowed | forbidden | no_permit | approval_required
//!
//! [case.principal]
//! kind = "user"                # user | workload | local | anonymous
//! id = "alice"                 # default: the kind's name
//! groups = ["engineering"]     # default: none
//! tenant = "acme"              # optional
//! scopes = ["tools:call"]      # default: none
//!
//! [case.resource]
//! server = "github"
//! name = "create_issue"        # tool or prompt name, or resource URI
//! risk_tier = "medium"         # optional: low | medium | high | critical (absent: no registry entry)
//! data_class = "internal"      # optional: public | internal | confidential | restricted
//! environment = "production"   # optional
//! read_only = false            # optional tool annotation hints
//! destructive = false
//!
//! [case.context]               # optional, as are all its keys
//! phase = "use"                # use (default) | list
//! approval = "none"            # none (default) | granted
//! route = "default"            # default: "default"
//! session_calls = 0
//! time = "2026-01-05T09:30:00Z"   # RFC 3339 (string or TOML datetime) or unix seconds; default 0
//! arguments = { title = "bug", labels = ["p1"] }
//! ```

use std::fmt;

use portcullis_identity::{AuthMethod, Principal, PrincipalKind};
use portcullis_registry::model::{DataClass, RiskTier};
use serde::Deserialize;

use crate::calendar::parse_rfc3339;
use crate::decision::{Decision, Outcome};
use crate::engine::Engine;
use crate::request::{Action, ApprovalState, Context, Phase, Request, Resource};

/// Why a fixture file could not be run.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The text is not a valid fixture file (the message gives line and column).
    #[error("invalid fixture file: {0}")]
    Parse(String),
    /// A case has a value that cannot be turned into a request.
    #[error("fixture case {index} ('{name}'): {message}")]
    Case { index: usize, name: String, message: String },
    /// The file has no `[[case]]`.
    #[error("fixture file has no [[case]]")]
    Empty,
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseReport {
    pub name: String,
    pub passed: bool,
    /// Why it failed, for a reader.
    pub failure: Option<String>,
    /// What the engine decided.
    pub decision: Decision,
}

/// The results of a fixture file, case by case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureReport {
    pub cases: Vec<CaseReport>,
}

impl FixtureReport {
    /// How many cases passed.
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed).count()
    }

    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }

    /// Whether every case passed.
    pub fn is_success(&self) -> bool {
        self.cases.iter().all(|c| c.passed)
    }
}

impl fmt::Display for FixtureReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for case in &self.cases {
            match &case.failure {
                None => writeln!(f, "ok   {}", case.name)?,
                Some(failure) => writeln!(f, "FAIL {}: {failure}", case.name)?,
            }
        }
        write!(f, "{} passed, {} failed", self.passed(), self.failed())
    }
}

/// Runs every case of the fixture `text` against `engine`.
pub fn run_fixtures(engine: &Engine, text: &str) -> Result<FixtureReport, FixtureError> {
    let file: FixtureFile =
        toml::from_str(text).map_err(|e| FixtureError::Parse(e.to_string().trim_end().to_owned()))?;
    if file.case.is_empty() {
        return Err(FixtureError::Empty);
    }
    let known: Vec<String> = engine.sets().flat_map(|s| s.policy_ids()).collect();
    let mut cases = Vec::with_capacity(file.case.len());
    for (index, case) in file.case.iter().enumerate() {
        let invalid = |message: String| FixtureError::Case { index: index + 1, name: case.name.clone(), message };
        let action = Action::from_method(&case.action).ok_or_else(|| {
            invalid(format!(
                "unknown action '{}' (expected one of {})",
                case.action,
                Action::ALL.map(Action::as_str).join(", ")
            ))
        })?;
        let now_unix = match &case.context.time {
            Time::Unix(unix) => *unix,
            Time::Text(text) => parse_rfc3339(text).map_err(invalid)?,
            Time::Native(datetime) => parse_rfc3339(&datetime.to_string()).map_err(invalid)?,
        };
        let principal = case.principal.to_principal();
        let r = &case.resource;
        let request = Request {
            principal: &principal,
            action,
            resource: Resource {
                server: &r.server,
                name: &r.name,
                risk_tier: r.risk_tier,
                data_class: r.data_class,
                environment: r.environment.as_deref(),
                read_only: r.read_only,
                destructive: r.destructive,
            },
            context: Context {
                phase: case.context.phase.into(),
                arguments: case.context.arguments.as_ref(),
                route: &case.context.route,
                now_unix,
                approval: case.context.approval.into(),
                session_calls: case.context.session_calls,
            },
        };
        let decision = engine.decide(&request);
        let failure = check(case, &decision, &known);
        cases.push(CaseReport { name: case.name.clone(), passed: failure.is_none(), failure, decision });
    }
    Ok(FixtureReport { cases })
}

/// What is wrong with `decision` for `case`, if anything.
fn check(case: &Case, decision: &Decision, known: &[String]) -> Option<String> {
    let expected = Outcome::from(case.expect);
    let mut wrong = Vec::new();
    if decision.outcome != expected {
        wrong.push(format!("expected {expected}, got {}", decision.outcome));
    }
    if let Some(reason) = &case.reason
        && reason != decision.reason
    {
        wrong.push(format!("expected reason {reason}, got {}", decision.reason));
    }
    for id in &case.policies {
        if !decision.policies.contains(id) {
            let unknown = if known.contains(id) { "" } else { " (no policy has this id)" };
            wrong.push(format!("expected policy '{id}' among the deciding policies{unknown}"));
        }
    }
    if wrong.is_empty() {
        return None;
    }
    let mut message = format!(
        "{} (decided {} by reason {}, policies [{}]",
        wrong.join("; "),
        decision.outcome,
        decision.reason,
        decision.policies.join(", ")
    );
    if !decision.errors.is_empty() {
        message.push_str(&format!(", errors [{}]", decision.errors.join("; ")));
    }
    message.push(')');
    Some(message)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureFile {
    #[serde(default)]
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default = "default_action")]
    action: String,
    principal: PrincipalSpec,
    resource: ResourceSpec,
    #[serde(default)]
    context: ContextSpec,
    expect: Expect,
    #[serde(default)]
    policies: Vec<String>,
    reason: Option<String>,
}

fn default_action() -> String {
    Action::CallTool.as_str().to_owned()
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Expect {
    Allow,
    Deny,
    ApprovalRequired,
}

impl From<Expect> for Outcome {
    fn from(expect: Expect) -> Self {
        match expect {
            Expect::Allow => Self::Allow,
            Expect::Deny => Self::Deny,
            Expect::ApprovalRequired => Self::ApprovalRequired,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalSpec {
    kind: KindSpec,
    id: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    tenant: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum KindSpec {
    User,
    Workload,
    Local,
    Anonymous,
}

impl PrincipalSpec {
    fn to_principal(&self) -> Principal {
        let kind = match self.kind {
            KindSpec::User => PrincipalKind::User,
            KindSpec::Workload => PrincipalKind::Workload,
            KindSpec::Local => PrincipalKind::Local,
            KindSpec::Anonymous => PrincipalKind::Anonymous,
        };
        let id = self.id.clone().unwrap_or_else(|| kind.as_str().to_owned());
        let method = match kind {
            PrincipalKind::User => AuthMethod::Jwt { issuer: "fixture".to_owned() },
            PrincipalKind::Workload => AuthMethod::ApiKey { key_id: id.clone() },
            PrincipalKind::Local => AuthMethod::Local,
            PrincipalKind::Anonymous => AuthMethod::None,
        };
        Principal {
            kind,
            id,
            groups: self.groups.clone(),
            tenant: self.tenant.clone(),
            scopes: self.scopes.clone(),
            method,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceSpec {
    server: String,
    name: String,
    risk_tier: Option<RiskTier>,
    data_class: Option<DataClass>,
    environment: Option<String>,
    read_only: Option<bool>,
    destructive: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextSpec {
    #[serde(default)]
    phase: PhaseSpec,
    #[serde(default)]
    approval: ApprovalSpec,
    #[serde(default = "default_route")]
    route: String,
    #[serde(default)]
    session_calls: u64,
    #[serde(default)]
    time: Time,
    arguments: Option<serde_json::Value>,
}

impl Default for ContextSpec {
    fn default() -> Self {
        Self {
            phase: PhaseSpec::default(),
            approval: ApprovalSpec::default(),
            route: default_route(),
            session_calls: 0,
            time: Time::default(),
            arguments: None,
        }
    }
}

fn default_route() -> String {
    "default".to_owned()
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PhaseSpec {
    #[default]
    Use,
    List,
}

impl From<PhaseSpec> for Phase {
    fn from(phase: PhaseSpec) -> Self {
        match phase {
            PhaseSpec::Use => Self::Use,
            PhaseSpec::List => Self::List,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ApprovalSpec {
    #[default]
    None,
    Granted,
}

impl From<ApprovalSpec> for ApprovalState {
    fn from(approval: ApprovalSpec) -> Self {
        match approval {
            ApprovalSpec::None => Self::None,
            ApprovalSpec::Granted => Self::Granted,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Time {
    Unix(i64),
    Text(String),
    Native(toml::value::Datetime),
}

impl Default for Time {
    fn default() -> Self {
        Self::Unix(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DEFAULT_FIXTURES, PolicySet};

    fn engine() -> Engine {
        Engine::new(vec![PolicySet::default_tiers()])
    }

    #[test]
    fn default_fixtures_pass() {
        let report = run_fixtures(&engine(), DEFAULT_FIXTURES).unwrap_or_else(|e| panic!("{e}"));
        assert!(report.is_success(), "{report}");
        assert!(report.cases.len() >= 15);
        assert!(report.to_string().ends_with(&format!("{} passed, 0 failed", report.cases.len())));
    }

    #[test]
    fn a_failing_case_says_what_was_expected_and_what_was_decided() {
        let text = r#"
            [[case]]
            name = "anonymous on medium"
            expect = "allow"
            policies = ["tier-medium-authenticated", "no-such-policy"]
            principal = { kind = "anonymous" }
            resource = { server = "gh", name = "issue", risk_tier = "medium" }

            [[case]]
            name = "user on medium"
            expect = "allow"
            principal = { kind = "user", id = "alice" }
            resource = { server = "gh", name = "issue", risk_tier = "medium" }
        "#;
        let report = run_fixtures(&engine(), text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((report.passed(), report.failed()), (1, 1));
        assert_eq!(
            report.cases[0].failure.as_deref(),
            Some(
                "expected allow, got deny; expected policy 'tier-medium-authenticated' among the deciding policies; \
                 expected policy 'no-such-policy' among the deciding policies (no policy has this id) \
                 (decided deny by reason no_permit, policies [])"
            )
        );
        assert_eq!(
            report.to_string(),
            format!(
                "FAIL anonymous on medium: {}\nok   user on medium\n1 passed, 1 failed",
                report.cases[0].failure.as_deref().unwrap_or_default()
            )
        );
    }

    #[test]
    fn times_may_be_unix_rfc3339_strings_or_toml_datetimes() {
        let shadow = crate::PolicySource::new(
            "hours.cedar",
            "@id(\"weekday\") permit (principal, action, resource) when { context.time.weekdayUtc == 1 && context.time.hourUtc == 9 };",
        );
        let set = PolicySet::compile("hours", crate::Enforcement::Enforce, &[shadow]).unwrap_or_else(|e| panic!("{e}"));
        let engine = Engine::new(vec![set]);
        for time in ["1767605400", "\"2026-01-05T09:30:00Z\"", "2026-01-05T10:30:00+01:00", "\"2026-01-05 09:30:00Z\""]
        {
            let text = format!(
                "[[case]]\nname = \"t\"\nexpect = \"allow\"\nprincipal = {{ kind = \"local\" }}\n\
                 resource = {{ server = \"s\", name = \"t\" }}\ncontext = {{ time = {time} }}\n"
            );
            let report = run_fixtures(&engine, &text).unwrap_or_else(|e| panic!("{time}: {e}"));
            assert!(report.is_success(), "{time}: {report}");
        }
    }

    #[test]
    fn malformed_files_are_rejected_with_their_position() {
        let unknown_key = "[[case]]\nname = \"x\"\nexpect = \"allow\"\nprincipal = { kind = \"user\", role = \"admin\" }\nresource = { server = \"s\", name = \"t\" }\n";
        let error = run_fixtures(&engine(), unknown_key).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("line 4") && error.contains("role"), "{error}");

        let bad_action = "[[case]]\nname = \"x\"\naction = \"tools/list\"\nexpect = \"allow\"\nprincipal = { kind = \"user\" }\nresource = { server = \"s\", name = \"t\" }\n";
        let error = run_fixtures(&engine(), bad_action).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.starts_with("fixture case 1 ('x'): unknown action 'tools/list'"), "{error}");

        let bad_time = bad_action.replace("tools/list", "tools/call") + "context = { time = \"yesterday\" }\n";
        let error = run_fixtures(&engine(), &bad_time).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("'yesterday' is not an rfc 3339 timestamp"), "{error}");

        assert!(matches!(run_fixtures(&engine(), "# nothing\n"), Err(FixtureError::Empty)));
    }
}
