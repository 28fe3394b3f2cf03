//! Small, bounded, thread-safe caches of what decisions repeat, and the facts they are found by.
//!
//! Entries are found by a hash of a borrowed view of the request's facts (`…Facts`), so a hit
//! allocates nothing; the stored, owned key (`…Key`) is compared in full, so a hash collision
//! is only a miss. When full, a cache drops its oldest entry (first in, first out: no
//! bookkeeping on a hit), so that a stream of new requests frees about what it allocates;
//! emptying it whole instead made each miss twice as slow (thousands of cold frees at once).
//! The lock is held only for a lookup or an insert, never while building a value.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Mutex, PoisonError};

use portcullis_identity::PrincipalKind;
use portcullis_registry::model::{DataClass, RiskTier};

use crate::context_use::ContextUse;
use crate::entity::ItemType;
use crate::request::{Action, ApprovalState, Phase, Request, Resource};

/// At most `capacity` values, each under its full key and the hash of that key's view.
pub(crate) struct Cache<K, V> {
    /// Randomly keyed, so that callers cannot choose colliding facts.
    hasher: RandomState,
    capacity: usize,
    entries: Mutex<Entries<K, V>>,
}

/// The entries, and their hashes in the order they were inserted.
struct Entries<K, V> {
    by_hash: HashMap<u64, (K, V)>,
    order: VecDeque<u64>,
}

impl<K, V: Clone> Cache<K, V> {
    /// An empty cache that holds at most `capacity` entries.
    pub(crate) fn new(capacity: usize) -> Self {
        let entries = Entries { by_hash: HashMap::new(), order: VecDeque::new() };
        Self { hasher: RandomState::new(), capacity, entries: Mutex::new(entries) }
    }

    /// The hash under which the key viewed as `probe` is stored.
    pub(crate) fn hash(&self, probe: &impl Hash) -> u64 {
        self.hasher.hash_one(probe)
    }

    /// The value stored under `hash`, if its key `matches`.
    pub(crate) fn get(&self, hash: u64, matches: impl FnOnce(&K) -> bool) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.by_hash.get(&hash).filter(|(key, _)| matches(key)).map(|(_, value)| value.clone())
    }

    /// Stores `value` under `key` (whose view hashes to `hash`), dropping the oldest entry if full.
    pub(crate) fn insert(&self, hash: u64, key: K, value: V) {
        let mut guard = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entries = &mut *guard;
        // The same key again (built twice at once), or another key with the same hash: replaced.
        let dropped = if let Some(entry) = entries.by_hash.get_mut(&hash) {
            Some(std::mem::replace(entry, (key, value)))
        } else {
            // `order` holds the hash of every entry, once.
            let oldest = (entries.by_hash.len() >= self.capacity.max(1))
                .then(|| entries.order.pop_front())
                .flatten()
                .and_then(|oldest| entries.by_hash.remove(&oldest));
            entries.by_hash.insert(hash, (key, value));
            entries.order.push_back(hash);
            oldest
        };
        drop(guard);
        // Freed outside the lock.
        drop(dropped);
    }

    /// How many entries there are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).by_hash.len()
    }
}

impl<K, V> fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

/// Everything a principal's entity is built from, borrowed from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PrincipalFacts<'a> {
    kind: PrincipalKind,
    id: &'a str,
    groups: &'a [String],
    tenant: Option<&'a str>,
    scopes: &'a [String],
}

impl<'a> PrincipalFacts<'a> {
    pub(crate) fn of(request: &Request<'a>) -> Self {
        let p = request.principal;
        Self { kind: p.kind, id: &p.id, groups: &p.groups, tenant: p.tenant.as_deref(), scopes: &p.scopes }
    }
}

/// [`PrincipalFacts`], owned.
#[derive(Debug)]
pub(crate) struct PrincipalKey {
    kind: PrincipalKind,
    id: String,
    groups: Vec<String>,
    tenant: Option<String>,
    scopes: Vec<String>,
}

impl PrincipalKey {
    pub(crate) fn of(facts: &PrincipalFacts<'_>) -> Self {
        Self {
            kind: facts.kind,
            id: facts.id.to_owned(),
            groups: facts.groups.to_vec(),
            tenant: facts.tenant.map(str::to_owned),
            scopes: facts.scopes.to_vec(),
        }
    }

    pub(crate) fn facts(&self) -> PrincipalFacts<'_> {
        PrincipalFacts {
            kind: self.kind,
            id: &self.id,
            groups: &self.groups,
            tenant: self.tenant.as_deref(),
            scopes: &self.scopes,
        }
    }
}

/// Everything an item's entity is built from, borrowed from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ItemFacts<'a> {
    /// The item's entity type (from the action and, for completions, the name).
    item_type: ItemType,
    resource: Resource<'a>,
}

impl<'a> ItemFacts<'a> {
    pub(crate) fn of(request: &Request<'a>) -> Self {
        Self { item_type: ItemType::of(request.action, &request.resource), resource: request.resource }
    }
}

/// [`ItemFacts`], owned.
#[derive(Debug)]
pub(crate) struct ItemKey {
    item_type: ItemType,
    server: String,
    name: String,
    risk_tier: Option<RiskTier>,
    data_class: Option<DataClass>,
    environment: Option<String>,
    read_only: Option<bool>,
    destructive: Option<bool>,
}

impl ItemKey {
    pub(crate) fn of(facts: &ItemFacts<'_>) -> Self {
        let r = &facts.resource;
        Self {
            item_type: facts.item_type,
            server: r.server.to_owned(),
            name: r.name.to_owned(),
            risk_tier: r.risk_tier,
            data_class: r.data_class,
            environment: r.environment.map(str::to_owned),
            read_only: r.read_only,
            destructive: r.destructive,
        }
    }

    pub(crate) fn facts(&self) -> ItemFacts<'_> {
        ItemFacts {
            item_type: self.item_type,
            resource: Resource {
                server: &self.server,
                name: &self.name,
                risk_tier: self.risk_tier,
                data_class: self.data_class,
                environment: self.environment.as_deref(),
                read_only: self.read_only,
                destructive: self.destructive,
            },
        }
    }
}

/// Everything the entities of a request are built from: its principal's and its item's facts.
pub(crate) type PartiesFacts<'a> = (PrincipalFacts<'a>, ItemFacts<'a>);

/// [`PartiesFacts`], owned.
pub(crate) type PartiesKey = (PrincipalKey, ItemKey);

/// The facts of `request`'s entities.
pub(crate) fn parties_facts<'a>(request: &Request<'a>) -> PartiesFacts<'a> {
    (PrincipalFacts::of(request), ItemFacts::of(request))
}

/// The owned key of `facts`.
pub(crate) fn parties_key(facts: &PartiesFacts<'_>) -> PartiesKey {
    (PrincipalKey::of(&facts.0), ItemKey::of(&facts.1))
}

/// Everything a decision's policies can observe: the entities, the action, the context
/// attributes its buckets read (`None` for the others), and whether arguments were truncated
/// (which the decision reports, and `argumentsTruncated` holds). Arguments themselves are never
/// part of it: a request whose policies read the arguments it has is not cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct DecisionFacts<'a> {
    parties: PartiesFacts<'a>,
    action: Action,
    phase: Option<Phase>,
    route: Option<&'a str>,
    approval: Option<ApprovalState>,
    session_calls: Option<u64>,
    now_unix: Option<i64>,
    arguments_truncated: bool,
}

impl<'a> DecisionFacts<'a> {
    /// The facts of `request`, whose policies read `reads` and whose arguments are truncated or not.
    pub(crate) fn of(request: &Request<'a>, reads: ContextUse, arguments_truncated: bool) -> Self {
        let c = &request.context;
        Self {
            parties: parties_facts(request),
            action: request.action,
            phase: reads.phase.then_some(c.phase),
            route: reads.route.then_some(c.route),
            approval: reads.approval.then_some(c.approval),
            session_calls: reads.session_calls.then_some(c.session_calls),
            now_unix: reads.time.then_some(c.now_unix),
            arguments_truncated,
        }
    }
}

/// [`DecisionFacts`], owned.
#[derive(Debug)]
pub(crate) struct DecisionKey {
    parties: PartiesKey,
    action: Action,
    phase: Option<Phase>,
    route: Option<String>,
    approval: Option<ApprovalState>,
    session_calls: Option<u64>,
    now_unix: Option<i64>,
    arguments_truncated: bool,
}

impl DecisionKey {
    pub(crate) fn of(facts: &DecisionFacts<'_>) -> Self {
        Self {
            parties: parties_key(&facts.parties),
            action: facts.action,
            phase: facts.phase,
            route: facts.route.map(str::to_owned),
            approval: facts.approval,
            session_calls: facts.session_calls,
            now_unix: facts.now_unix,
            arguments_truncated: facts.arguments_truncated,
        }
    }

    pub(crate) fn facts(&self) -> DecisionFacts<'_> {
        DecisionFacts {
            parties: (self.parties.0.facts(), self.parties.1.facts()),
            action: self.action,
            phase: self.phase,
            route: self.route.as_deref(),
            approval: self.approval,
            session_calls: self.session_calls,
            now_unix: self.now_unix,
            arguments_truncated: self.arguments_truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> Cache<String, usize> {
        Cache::new(2)
    }

    fn put(cache: &Cache<String, usize>, key: &str, value: usize) {
        cache.insert(cache.hash(&key), key.to_owned(), value);
    }

    fn get(cache: &Cache<String, usize>, key: &str) -> Option<usize> {
        cache.get(cache.hash(&key), |stored| stored == key)
    }

    #[test]
    fn finds_what_was_stored_under_an_equal_key() {
        let cache = cache();
        put(&cache, "a", 1);
        assert_eq!(get(&cache, "a"), Some(1));
        assert_eq!(get(&cache, "b"), None);
    }

    #[test]
    fn a_colliding_hash_with_another_key_is_a_miss() {
        let cache = cache();
        let hash = cache.hash(&"a");
        cache.insert(hash, "a".to_owned(), 1);
        assert_eq!(cache.get(hash, |stored| stored == "not a"), None);
        // The newer entry replaces the older one under the same hash.
        cache.insert(hash, "not a".to_owned(), 2);
        assert_eq!(cache.get(hash, |stored| stored == "not a"), Some(2));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn drops_the_oldest_entry_when_full() {
        let cache = cache();
        put(&cache, "a", 1);
        put(&cache, "b", 2);
        put(&cache, "b", 3);
        assert_eq!((cache.len(), get(&cache, "b")), (2, Some(3)));
        put(&cache, "c", 4);
        assert_eq!(cache.len(), 2);
        assert_eq!((get(&cache, "a"), get(&cache, "b"), get(&cache, "c")), (None, Some(3), Some(4)));
        put(&cache, "d", 5);
        assert_eq!((get(&cache, "b"), get(&cache, "c"), get(&cache, "d")), (None, Some(4), Some(5)));
    }
}
