//! The Cedar entities and request of one decision, built directly from typed values.
//!
//! The principal is `User`, `Workload`, `Local` or `Anonymous` with the principal's id as entity
//! id, its groups as `Group` parents and attributes `id`, `scopes` and (when set) `tenant`.
//! The resource is a `Tool`, `Prompt` or `ResourceUri` with entity id `"<server>/<name>"`, its
//! server `Server::"<server>"` as parent and the attributes of `ItemFacts` in the schema.
//!
//! Nothing is checked against the schema here: the values are typed and correct by
//! construction, and policies were validated when compiled. The context holds only the
//! attributes the request's policies read (see `context_use`). The entities of a (principal,
//! item) pair are kept in an engine's [`PartiesCache`], found by the facts they were built from.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use cedar_policy::{Entities, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use portcullis_identity::{Principal, PrincipalKind};
use portcullis_registry::model::{DataClass, RiskTier};

use crate::arguments::Arguments;
use crate::cache::{Cache, ItemFacts, ItemKey, PartiesKey, PrincipalFacts, PrincipalKey, parties_facts, parties_key};
use crate::calendar::UtcClock;
use crate::context_use::ContextUse;
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

/// How many principals' entities an engine keeps (each a few hundred bytes).
const PRINCIPALS_CAPACITY: usize = 1024;
/// How many items' entities an engine keeps (each about a kilobyte).
const ITEMS_CAPACITY: usize = 4096;
/// How many (principal, item) pairs' entities an engine keeps (each shares its principal's
/// entity with the cache above and holds a copy of its item's); a list of 100 tools for 40
/// distinct principals fits.
const PARTIES_CAPACITY: usize = 4096;

/// The Cedar entities an engine has built, by everything they are built from: building an
/// entity and computing the transitive closure of ancestors cost more than evaluating the
/// default set. A new (principal, item) pair costs one extension of the principal's entities
/// with the item's entity, when both were seen before.
#[derive(Debug)]
pub(crate) struct PartiesCache {
    principals: Cache<PrincipalKey, Arc<PrincipalEntities>>,
    items: Cache<ItemKey, Arc<Entity>>,
    parties: Cache<PartiesKey, Arc<Parties>>,
}

/// A principal's entity, alone (with the transitive closure of its ancestors computed).
struct PrincipalEntities {
    entities: Entities,
    uid: EntityUid,
}

impl Default for PartiesCache {
    fn default() -> Self {
        Self {
            principals: Cache::new(PRINCIPALS_CAPACITY),
            items: Cache::new(ITEMS_CAPACITY),
            parties: Cache::new(PARTIES_CAPACITY),
        }
    }
}

impl PartiesCache {
    /// The entities of `request`'s principal and item (whose uid is `item`), built or found.
    fn get(&self, names: &Names, request: &Request<'_>, item: &EntityUid) -> Result<Arc<Parties>, String> {
        let facts = parties_facts(request);
        let hash = self.parties.hash(&facts);
        if let Some(found) = self.parties.get(hash, |key| (key.0.facts(), key.1.facts()) == facts) {
            return Ok(found);
        }
        let principal = self.principal(names, request, &facts.0)?;
        let resource = self.item(names, request, &facts.1, item)?;
        // The resource's only ancestor is its server, and nothing has it for an ancestor: the
        // closure is repaired for it alone.
        let entities = principal
            .entities
            .clone()
            .add_entities([Entity::clone(&resource)], None)
            .map_err(|e| format!("entities: {e}"))?;
        let built = Arc::new(Parties { entities, principal: principal.uid.clone(), item: item.clone() });
        self.parties.insert(hash, parties_key(&facts), Arc::clone(&built));
        Ok(built)
    }

    fn principal(
        &self,
        names: &Names,
        request: &Request<'_>,
        facts: &PrincipalFacts<'_>,
    ) -> Result<Arc<PrincipalEntities>, String> {
        let hash = self.principals.hash(facts);
        if let Some(found) = self.principals.get(hash, |key| key.facts() == *facts) {
            return Ok(found);
        }
        let entity = principal_entity(names, request.principal)?;
        let uid = entity.uid();
        let entities = Entities::from_entities([entity], None).map_err(|e| format!("entities: {e}"))?;
        let built = Arc::new(PrincipalEntities { entities, uid });
        self.principals.insert(hash, PrincipalKey::of(facts), Arc::clone(&built));
        Ok(built)
    }

    fn item(
        &self,
        names: &Names,
        request: &Request<'_>,
        facts: &ItemFacts<'_>,
        uid: &EntityUid,
    ) -> Result<Arc<Entity>, String> {
        let hash = self.items.hash(facts);
        if let Some(found) = self.items.get(hash, |key| key.facts() == *facts) {
            return Ok(found);
        }
        let built = Arc::new(resource_entity(names, uid.clone(), &request.resource)?);
        self.items.insert(hash, ItemKey::of(facts), Arc::clone(&built));
        Ok(built)
    }
}

/// The arguments policies see in `request`: none in the list phase, and none for `null` or
/// `{}` (which convert to the empty record, untruncated).
pub(crate) fn arguments_of<'a>(request: &Request<'a>) -> Option<&'a serde_json::Value> {
    let c = &request.context;
    match c.phase {
        Phase::Use => c.arguments.filter(|a| match a {
            serde_json::Value::Null => false,
            serde_json::Value::Object(map) => !map.is_empty(),
            _ => true,
        }),
        Phase::List => None,
    }
}

/// The Cedar entities of one (principal, item) pair: the principal's entity with its groups as
/// parents and the item's with its server as parent. Ancestry is that deep and no deeper.
pub(crate) struct Parties {
    pub(crate) entities: Entities,
    principal: EntityUid,
    item: EntityUid,
}

/// A request in Cedar's terms, ready for evaluation.
pub(crate) struct Prepared {
    pub(crate) request: cedar_policy::Request,
    pub(crate) parties: Arc<Parties>,
    pub(crate) arguments_truncated: bool,
}

impl Prepared {
    /// Builds the Cedar request for `request`, about `item` (see [`item_uid`]), for policies that
    /// read `reads` of the context; the entities come from (or go to) `parties`.
    pub(crate) fn new(
        request: &Request<'_>,
        item: &EntityUid,
        reads: ContextUse,
        parties: &PartiesCache,
    ) -> Result<Self, String> {
        let names = &*NAMES;
        let parties = parties.get(names, request, item)?;
        let arguments = arguments_of(request);
        let arguments = match (arguments, reads.arguments) {
            (None, _) => Arguments::empty(),
            (Some(arguments), true) => Arguments::convert(Some(arguments)),
            // Only whether they would be truncated can be observed.
            (Some(arguments), false) => Arguments::unread(Arguments::would_truncate(Some(arguments))),
        };
        let arguments_truncated = arguments.truncated;
        let context = context(request, reads, arguments)?;
        let slot = match request.action {
            Action::CallTool => 0,
            Action::ReadResource => 1,
            Action::GetPrompt => 2,
            Action::Complete => 3,
        };
        let action = names.actions[slot].clone();
        let cedar_request =
            cedar_policy::Request::new(parties.principal.clone(), action, parties.item.clone(), context, None)
                .map_err(|e| format!("request: {e}"))?;
        Ok(Self { request: cedar_request, parties, arguments_truncated })
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

/// The entity type of the item a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ItemType {
    Tool,
    Prompt,
    ResourceUri,
}

impl ItemType {
    pub(crate) fn of(action: Action, resource: &Resource<'_>) -> Self {
        match action {
            Action::CallTool => Self::Tool,
            Action::ReadResource => Self::ResourceUri,
            Action::GetPrompt => Self::Prompt,
            Action::Complete if has_uri_scheme(resource.name) => Self::ResourceUri,
            Action::Complete => Self::Prompt,
        }
    }
}

/// The entity uid of the item `request` is about: `<Type>::"<server>/<name>"`.
pub(crate) fn item_uid(request: &Request<'_>) -> EntityUid {
    item_uid_of(&NAMES, request.action, &request.resource)
}

fn item_uid_of(names: &Names, action: Action, resource: &Resource<'_>) -> EntityUid {
    let type_name = match ItemType::of(action, resource) {
        ItemType::Tool => &names.tool,
        ItemType::ResourceUri => &names.resource_uri,
        ItemType::Prompt => &names.prompt,
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

/// The context of `request` with the attributes in `reads` (and no others: a policy that does
/// not read an attribute cannot tell it is missing, and each one costs time to build).
fn context(request: &Request<'_>, reads: ContextUse, arguments: Arguments) -> Result<cedar_policy::Context, String> {
    let c = &request.context;
    let long = RestrictedExpression::new_long;
    let mut pairs = Vec::with_capacity(7);
    if reads.phase {
        pairs.push(("phase".to_owned(), RestrictedExpression::new_string(c.phase.as_str().to_owned())));
    }
    if reads.route {
        pairs.push(("route".to_owned(), RestrictedExpression::new_string(c.route.to_owned())));
    }
    if reads.approval {
        pairs.push(("approval".to_owned(), RestrictedExpression::new_string(c.approval.as_str().to_owned())));
    }
    if reads.session_calls {
        pairs.push(("sessionCalls".to_owned(), long(i64::try_from(c.session_calls).unwrap_or(i64::MAX))));
    }
    if reads.time {
        let clock = UtcClock::at(c.now_unix);
        let time = RestrictedExpression::new_record([
            ("unix".to_owned(), long(c.now_unix)),
            ("hourUtc".to_owned(), long(clock.hour)),
            ("minuteUtc".to_owned(), long(clock.minute)),
            ("weekdayUtc".to_owned(), long(clock.weekday)),
        ])
        .map_err(|e| format!("context: {e}"))?;
        pairs.push(("time".to_owned(), time));
    }
    if reads.arguments {
        pairs.push(("arguments".to_owned(), arguments.record));
    }
    if reads.arguments_truncated {
        pairs.push(("argumentsTruncated".to_owned(), RestrictedExpression::new_bool(arguments.truncated)));
    }
    cedar_policy::Context::from_pairs(pairs).map_err(|e| format!("context: {e}"))
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
        let uid = |name| item_uid_of(names, Action::Complete, &Resource::unregistered("srv", name)).to_string();
        assert_eq!(uid("file:///{path}"), r#"ResourceUri::"srv/file:///{path}""#);
        assert_eq!(uid("summarize"), r#"Prompt::"srv/summarize""#);
        assert_eq!(uid("1x:y"), r#"Prompt::"srv/1x:y""#);
    }

    #[test]
    fn cached_entities_are_those_built_at_once() {
        use portcullis_registry::model::RiskTier;

        let mut alice = Principal::local("alice", vec!["staff".to_owned(), "ops".to_owned()]);
        alice.tenant = Some("acme".to_owned());
        let bob = Principal::local("bob", Vec::new());
        let context = crate::request::Context {
            phase: Phase::Use,
            arguments: None,
            route: "default",
            now_unix: 0,
            approval: crate::request::ApprovalState::None,
            session_calls: 0,
        };
        let cache = PartiesCache::default();
        let names = &*NAMES;
        for _ in 0..2 {
            for who in [&alice, &bob] {
                for name in ["a", "b"] {
                    let resource = Resource { risk_tier: Some(RiskTier::High), ..Resource::unregistered("srv", name) };
                    let request = Request { principal: who, action: Action::CallTool, resource, context };
                    let item = item_uid(&request);
                    let cached = cache.get(names, &request, &item).unwrap_or_else(|e| panic!("{e}"));
                    let principal = principal_entity(names, who).unwrap_or_else(|e| panic!("{e}"));
                    let resource = resource_entity(names, item.clone(), &resource).unwrap_or_else(|e| panic!("{e}"));
                    let at_once =
                        Entities::from_entities([principal, resource], None).unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(cached.entities, at_once, "{who} {name}");
                    assert_eq!((&cached.principal, &cached.item), (&principal_uid(who), &item));
                }
            }
        }
    }

    fn principal_uid(who: &Principal) -> EntityUid {
        principal_entity(&NAMES, who).map(|e| e.uid()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn unknown_tiers_rank_above_critical() {
        assert!(risk_level(None) > risk_level(Some(RiskTier::Critical)));
        assert!(data_level(None) > data_level(Some(DataClass::Restricted)));
    }
}
