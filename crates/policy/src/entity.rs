//! The Cedar entities and request of one decision, built directly from typed values.
//!
//! The principal is `User`, `Workload`, `Local` or `Anonymous` with the principal's id as entity
//! id, its groups as `Group` parents and attributes `id`, `scopes` and (when set) `tenant`.
//! The resource is a `Tool`, `Prompt` or `ResourceUri` with entity id `"<server>/<name>"`, its
//! server `Server::"<server>"` as parent and the attributes of `ItemFacts` in the schema.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{Entities, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use portcullis_identity::{Principal, PrincipalKind};
use portcullis_registry::model::{DataClass, RiskTier};

use crate::arguments::Arguments;
use crate::calendar::UtcClock;
use crate::request::{Action, Phase, Request, Resource};

/// The entity type of servers.
pub(crate) const SERVER: &str = "Server";
/// The entity types of the items a request can be about.
pub(crate) const ITEM_TYPES: [&str; 3] = ["Tool", "Prompt", "ResourceUri"];

/// The entity type names, parsed once.
struct Names {
    user: EntityTypeName,
    workload: EntityTypeName,
    local: EntityTypeName,
    anonymous: EntityTypeName,
    group: EntityTypeName,
    server: EntityTypeName,
    tool: EntityTypeName,
    prompt: EntityTypeName,
    resource_uri: EntityTypeName,
    actions: [EntityUid; 4],
}

static NAMES: LazyLock<Names> = LazyLock::new(|| {
    // These are fixed identifiers, covered by tests: failing to parse one is a bug, not bad input.
    let name = |text: &str| EntityTypeName::from_str(text).expect("built-in entity type names are valid");
    let action_type = name("Action");
    Names {
        user: name("User"),
        workload: name("Workload"),
        local: name("Local"),
        anonymous: name("Anonymous"),
        group: name("Group"),
        server: name(SERVER),
        tool: name(ITEM_TYPES[0]),
        prompt: name(ITEM_TYPES[1]),
        resource_uri: name(ITEM_TYPES[2]),
        actions: Action::ALL.map(|a| EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(a.as_str()))),
    }
});

/// A request in Cedar's terms, ready for evaluation.
pub(crate) struct Prepared {
    pub(crate) request: cedar_policy::Request,
    pub(crate) entities: Entities,
    /// The resource's entity uid, the key of its item bucket.
    pub(crate) item: EntityUid,
    pub(crate) arguments_truncated: bool,
}

impl Prepared {
    /// Builds the Cedar request and entities for `request`.
    pub(crate) fn new(request: &Request<'_>) -> Result<Self, String> {
        let names = &*NAMES;
        let principal = principal_entity(names, request.principal)?;
        let item = item_uid(names, request.action, &request.resource);
        let resource = resource_entity(names, item.clone(), &request.resource)?;
        let arguments = match request.context.phase {
            Phase::Use => Arguments::convert(request.context.arguments),
            Phase::List => Arguments::empty(),
        };
        let arguments_truncated = arguments.truncated;
        let context = context(request, arguments)?;
        let slot = match request.action {
            Action::CallTool => 0,
            Action::ReadResource => 1,
            Action::GetPrompt => 2,
            Action::Complete => 3,
        };
        let action = names.actions[slot].clone();
        let cedar_request = cedar_policy::Request::new(principal.uid(), action, item.clone(), context, None)
            .map_err(|e| format!("request: {e}"))?;
        let entities = Entities::from_entities([principal, resource], None).map_err(|e| format!("entities: {e}"))?;
        Ok(Self { request: cedar_request, entities, item, arguments_truncated })
    }
}

fn principal_entity(names: &Names, principal: &Principal) -> Result<Entity, String> {
    let type_name = match principal.kind {
        PrincipalKind::User => &names.user,
        PrincipalKind::Workload => &names.workload,
        PrincipalKind::Local => &names.local,
        PrincipalKind::Anonymous => &names.anonymous,
    };
    let uid = EntityUid::from_type_name_and_id(type_name.clone(), EntityId::new(&principal.id));
    let mut attrs = HashMap::with_capacity(3);
    attrs.insert("id".to_owned(), RestrictedExpression::new_string(principal.id.clone()));
    attrs.insert(
        "scopes".to_owned(),
        RestrictedExpression::new_set(principal.scopes.iter().map(|s| RestrictedExpression::new_string(s.clone()))),
    );
    if let Some(tenant) = &principal.tenant {
        attrs.insert("tenant".to_owned(), RestrictedExpression::new_string(tenant.clone()));
    }
    // The schema gives `Anonymous` no groups.
    let parents: HashSet<EntityUid> = match principal.kind {
        PrincipalKind::Anonymous => HashSet::new(),
        _ => principal
            .groups
            .iter()
            .map(|g| EntityUid::from_type_name_and_id(names.group.clone(), EntityId::new(g)))
            .collect(),
    };
    Entity::new(uid, attrs, parents).map_err(|e| format!("principal: {e}"))
}

/// The entity uid of the item a request is about: `<Type>::"<server>/<name>"`.
fn item_uid(names: &Names, action: Action, resource: &Resource<'_>) -> EntityUid {
    let type_name = match action {
        Action::CallTool => &names.tool,
        Action::ReadResource => &names.resource_uri,
        Action::GetPrompt => &names.prompt,
        Action::Complete if has_uri_scheme(resource.name) => &names.resource_uri,
        Action::Complete => &names.prompt,
    };
    let mut id = String::with_capacity(resource.server.len() + 1 + resource.name.len());
    id.push_str(resource.server);
    id.push('/');
    id.push_str(resource.name);
    EntityUid::from_type_name_and_id(type_name.clone(), EntityId::new(id))
}

/// Whether `name` starts like a URI (RFC 3986 scheme then `:`), as a resource template does.
fn has_uri_scheme(name: &str) -> bool {
    let Some((scheme, _)) = name.split_once(':') else { return false };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// The `riskLevel` of a tier: 0..=3, and 4 for unknown so that `>=` tests fail closed.
pub(crate) fn risk_level(tier: Option<RiskTier>) -> i64 {
    match tier {
        Some(RiskTier::Low) => 0,
        Some(RiskTier::Medium) => 1,
        Some(RiskTier::High) => 2,
        Some(RiskTier::Critical) => 3,
        None => 4,
    }
}

/// The `dataLevel` of a class: 0..=3, and 4 for unknown.
pub(crate) fn data_level(class: Option<DataClass>) -> i64 {
    match class {
        Some(DataClass::Public) => 0,
        Some(DataClass::Internal) => 1,
        Some(DataClass::Confidential) => 2,
        Some(DataClass::Restricted) => 3,
        None => 4,
    }
}

const UNKNOWN: &str = "unknown";

fn resource_entity(names: &Names, uid: EntityUid, resource: &Resource<'_>) -> Result<Entity, String> {
    let string = |s: &str| RestrictedExpression::new_string(s.to_owned());
    let attrs: HashMap<String, RestrictedExpression> = [
        ("server", string(resource.server)),
        ("name", string(resource.name)),
        ("riskTier", string(resource.risk_tier.map_or(UNKNOWN, RiskTier::as_str))),
        ("riskLevel", RestrictedExpression::new_long(risk_level(resource.risk_tier))),
        ("dataClass", string(resource.data_class.map_or(UNKNOWN, DataClass::as_str))),
        ("dataLevel", RestrictedExpression::new_long(data_level(resource.data_class))),
        ("environment", string(resource.environment.unwrap_or(UNKNOWN))),
        ("readOnly", RestrictedExpression::new_bool(resource.read_only.unwrap_or(false))),
        ("destructive", RestrictedExpression::new_bool(resource.destructive.unwrap_or(false))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let server = EntityUid::from_type_name_and_id(names.server.clone(), EntityId::new(resource.server));
    Entity::new(uid, attrs, HashSet::from([server])).map_err(|e| format!("resource: {e}"))
}

fn context(request: &Request<'_>, arguments: Arguments) -> Result<cedar_policy::Context, String> {
    let c = &request.context;
    let clock = UtcClock::at(c.now_unix);
    let long = RestrictedExpression::new_long;
    let time = RestrictedExpression::new_record([
        ("unix".to_owned(), long(c.now_unix)),
        ("hourUtc".to_owned(), long(clock.hour)),
        ("minuteUtc".to_owned(), long(clock.minute)),
        ("weekdayUtc".to_owned(), long(clock.weekday)),
    ])
    .map_err(|e| format!("context: {e}"))?;
    cedar_policy::Context::from_pairs([
        ("phase".to_owned(), RestrictedExpression::new_string(c.phase.as_str().to_owned())),
        ("route".to_owned(), RestrictedExpression::new_string(c.route.to_owned())),
        ("approval".to_owned(), RestrictedExpression::new_string(c.approval.as_str().to_owned())),
        ("sessionCalls".to_owned(), long(i64::try_from(c.session_calls).unwrap_or(i64::MAX))),
        ("time".to_owned(), time),
        ("arguments".to_owned(), arguments.record),
        ("argumentsTruncated".to_owned(), RestrictedExpression::new_bool(arguments.truncated)),
    ])
    .map_err(|e| format!("context: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_names_parse() {
        assert_eq!(NAMES.actions[0].to_string(), r#"Action::"tools/call""#);
        assert_eq!(NAMES.resource_uri.to_string(), "ResourceUri");
    }

    #[test]
    fn completion_targets_a_resource_template_only_when_it_looks_like_a_uri() {
        let names = &*NAMES;
        let uid = |name| item_uid(names, Action::Complete, &Resource::unregistered("srv", name)).to_string();
        assert_eq!(uid("file:///{path}"), r#"ResourceUri::"srv/file:///{path}""#);
        assert_eq!(uid("summarize"), r#"Prompt::"srv/summarize""#);
        assert_eq!(uid("1x:y"), r#"Prompt::"srv/1x:y""#);
    }

    #[test]
    fn unknown_tiers_rank_above_critical() {
        assert!(risk_level(None) > risk_level(Some(RiskTier::Critical)));
        assert!(data_level(None) > data_level(Some(DataClass::Restricted)));
    }
}
