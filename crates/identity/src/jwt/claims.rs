//! A verified token's claims: the registered ones checked (`iss`, `aud`, `exp`, `nbf`, `iat`),
//! and the rest mapped to a [`Principal`] as the deployment's issuer lays them out.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde_json::{Map, Value};

use super::TokenError;
use crate::principal::{AuthMethod, Principal, PrincipalKind};

/// Where in a token the principal's attributes are, and which tokens are workloads'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    /// The principal id; a token without it is refused. Default `sub`.
    pub subject: ClaimPath,
    /// Groups or roles: an array of strings or a space-separated string; absent means no
    /// groups. Default `groups`.
    pub groups: ClaimPath,
    /// The tenant (a string), e.g. `tid`; absent from a token means no tenant. Default `None`.
    pub tenant: Option<ClaimPath>,
    /// Scope claims, tried in order, the first present wins: a space-separated string (RFC 8693
    /// `scope`) or an array of strings (`scp`). Default `scope`, then `scp`.
    pub scopes: Vec<ClaimPath>,
    /// Which tokens are a [`PrincipalKind::Workload`]'s; every other is a user's.
    /// Default [`WorkloadRule::ClientCredentials`].
    pub workload: WorkloadRule,
}

/// A claim name, or a dotted path into nested objects (`realm_access.roles`).
///
/// The whole name is tried as a top-level claim first, so names that contain dots (the
/// namespaced claims some issuers use, `https://example.com/groups`) work unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimPath(String);

/// Why a claim name is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimPathError {
    /// The name is empty.
    #[error("a claim name is empty")]
    Empty,
}

/// Which tokens are a workload's (a service or agent) rather than a user's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadRule {
    /// No token: every principal is a user.
    Never,
    /// Tokens from the client-credentials grant, where no user is involved: the subject claim
    /// equals the client's id in `client_id` (RFC 9068 §2.2), `azp` or `cid` (Okta); or
    /// `gty` is `client-credentials` (Auth0); or `idtyp` is `app` (Entra ID).
    ClientCredentials,
    /// The claim equals `value`, or is an array or space-separated string containing it
    /// (e.g. `idtyp` = `app` for Entra ID, `gty` = `client-credentials` for Auth0).
    ClaimEquals {
        /// Where the claim is.
        claim: ClaimPath,
        /// The value that marks a workload.
        value: String,
    },
    /// The claim is absent (e.g. a user-only claim such as `email` or `preferred_username`).
    ClaimAbsent(ClaimPath),
    /// Any of these rules.
    AnyOf(Vec<WorkloadRule>),
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            subject: ClaimPath::from("sub"),
            groups: ClaimPath::from("groups"),
            tenant: None,
            scopes: vec![ClaimPath::from("scope"), ClaimPath::from("scp")],
            workload: WorkloadRule::ClientCredentials,
        }
    }
}

impl ClaimMapping {
    /// Every claim path this mapping names, with the setting it came from.
    pub(crate) fn paths(&self) -> Vec<(&'static str, &ClaimPath)> {
        let mut paths = vec![("claims.subject", &self.subject), ("claims.groups", &self.groups)];
        paths.extend(self.tenant.iter().map(|p| ("claims.tenant", p)));
        paths.extend(self.scopes.iter().map(|p| ("claims.scopes", p)));
        self.workload.paths(&mut paths);
        paths
    }

    /// The principal a verified token from `issuer` stands for.
    pub(crate) fn principal(&self, claims: &Map<String, Value>, issuer: &str) -> Result<Principal, TokenError> {
        let id = match self.subject.lookup(claims) {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            Some(_) => return Err(TokenError::InvalidClaim(self.subject.to_string())),
            None => return Err(TokenError::MissingClaim(self.subject.to_string())),
        };
        let groups = strings(&self.groups, claims)?.unwrap_or_default();
        let tenant = match &self.tenant {
            Some(path) => match path.lookup(claims) {
                Some(Value::String(tenant)) if !tenant.is_empty() => Some(tenant.clone()),
                Some(_) => return Err(TokenError::InvalidClaim(path.to_string())),
                None => None,
            },
            None => None,
        };
        let mut scopes = Vec::new();
        for path in &self.scopes {
            if let Some(found) = strings(path, claims)? {
                scopes = found;
                break;
            }
        }
        let kind = if self.workload.matches(claims, &id) { PrincipalKind::Workload } else { PrincipalKind::User };
        Ok(Principal { kind, id, groups, tenant, scopes, method: AuthMethod::Jwt { issuer: issuer.to_owned() } })
    }
}

impl ClaimPath {
    /// The claim's name or dotted path.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The claim's value; JSON `null` counts as absent.
    pub(crate) fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        let found = match claims.get(&self.0) {
            Some(value) => Some(value),
            None if self.0.contains('.') => {
                let mut segments = self.0.split('.');
                let first = claims.get(segments.next()?)?;
                segments.try_fold(first, |value, segment| value.as_object()?.get(segment))
            }
            None => None,
        };
        found.filter(|value| !value.is_null())
    }
}

impl FromStr for ClaimPath {
    type Err = ClaimPathError;

    fn from_str(path: &str) -> Result<Self, Self::Err> {
        if path.is_empty() { Err(ClaimPathError::Empty) } else { Ok(Self(path.to_owned())) }
    }
}

impl From<&str> for ClaimPath {
    fn from(path: &str) -> Self {
        Self(path.to_owned())
    }
}

impl From<String> for ClaimPath {
    fn from(path: String) -> Self {
        Self(path)
    }
}

impl fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl WorkloadRule {
    /// Whether a token with these claims and mapped subject is a workload's.
    fn matches(&self, claims: &Map<String, Value>, subject: &str) -> bool {
        match self {
            Self::Never => false,
            Self::ClientCredentials => {
                let is = |name: &str, value: &str| claims.get(name).and_then(Value::as_str) == Some(value);
                ["client_id", "azp", "cid"].iter().any(|client| is(client, subject))
                    || is("gty", "client-credentials")
                    || is("idtyp", "app")
            }
            Self::ClaimEquals { claim, value } => match claim.lookup(claims) {
                Some(Value::String(found)) => found == value || found.split_whitespace().any(|v| v == value),
                Some(Value::Array(items)) => items.iter().any(|item| item.as_str() == Some(value)),
                Some(Value::Bool(found)) => found.to_string() == *value,
                Some(Value::Number(found)) => found.to_string() == *value,
                _ => false,
            },
            Self::ClaimAbsent(claim) => claim.lookup(claims).is_none(),
            Self::AnyOf(rules) => rules.iter().any(|rule| rule.matches(claims, subject)),
        }
    }

    fn paths<'a>(&'a self, out: &mut Vec<(&'static str, &'a ClaimPath)>) {
        match self {
            Self::Never | Self::ClientCredentials => {}
            Self::ClaimEquals { claim, .. } | Self::ClaimAbsent(claim) => out.push(("claims.workload", claim)),
            Self::AnyOf(rules) => rules.iter().for_each(|rule| rule.paths(out)),
        }
    }
}

/// What the registered claims must satisfy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expectations<'a> {
    pub(crate) issuer: &'a str,
    pub(crate) audience: &'a str,
    pub(crate) leeway: Duration,
    pub(crate) max_lifetime: Option<Duration>,
    /// Seconds since the Unix epoch.
    pub(crate) now: f64,
}

/// Checks `iss` (exact), `aud` (contains ours), `exp` (required), and `nbf` / `iat` when present;
/// on success, the token's time claims, by which it can be judged again later without its other claims.
pub(crate) fn check_registered(claims: &Map<String, Value>, expect: Expectations<'_>) -> Result<Times, TokenError> {
    match claims.get("iss") {
        Some(Value::String(iss)) if iss == expect.issuer => {}
        Some(Value::String(_)) => return Err(TokenError::WrongIssuer),
        Some(_) => return Err(TokenError::InvalidClaim("iss".to_owned())),
        None => return Err(TokenError::MissingClaim("iss".to_owned())),
    }
    let audience_matches = match claims.get("aud") {
        Some(Value::String(aud)) => aud == expect.audience,
        Some(Value::Array(auds)) if auds.iter().all(Value::is_string) => {
            auds.iter().any(|aud| aud.as_str() == Some(expect.audience))
        }
        Some(_) => return Err(TokenError::InvalidClaim("aud".to_owned())),
        None => return Err(TokenError::MissingClaim("aud".to_owned())),
    };
    if !audience_matches {
        return Err(TokenError::WrongAudience);
    }
    let times = Times {
        exp: numeric_date(claims, "exp")?.ok_or_else(|| TokenError::MissingClaim("exp".to_owned()))?,
        nbf: numeric_date(claims, "nbf")?,
        iat: numeric_date(claims, "iat")?,
        leeway: expect.leeway.as_secs_f64(),
        max_lifetime: expect.max_lifetime.map(|max| max.as_secs_f64()),
    };
    times.check(expect.now)?;
    Ok(times)
}

/// A token's time claims (seconds since the Unix epoch) and the allowances they are judged with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Times {
    exp: f64,
    nbf: Option<f64>,
    iat: Option<f64>,
    leeway: f64,
    max_lifetime: Option<f64>,
}

impl Times {
    /// Whether the token is valid at `now` as far as time goes: `exp`, `nbf` and `iat` with the
    /// leeway, and the longest lifetime allowed. The one judgement, for a first check and a later one.
    pub(crate) fn check(&self, now: f64) -> Result<(), TokenError> {
        if now >= self.exp + self.leeway {
            return Err(TokenError::Expired);
        }
        if self.nbf.is_some_and(|nbf| now + self.leeway < nbf) || self.iat.is_some_and(|iat| iat > now + self.leeway) {
            return Err(TokenError::NotYetValid);
        }
        if self.max_lifetime.is_some_and(|max| self.exp - now > max + self.leeway) {
            return Err(TokenError::LifetimeTooLong);
        }
        Ok(())
    }

    /// Test hook: the same token, its `exp` `seconds` earlier.
    #[cfg(test)]
    pub(crate) fn expiring_earlier(self, seconds: f64) -> Times {
        Times { exp: self.exp - seconds, ..self }
    }
}

/// A NumericDate claim (RFC 7519 §2: seconds since the epoch, possibly fractional).
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(Some(seconds)),
            _ => Err(TokenError::InvalidClaim(name.to_owned())),
        },
        Some(_) => Err(TokenError::InvalidClaim(name.to_owned())),
    }
}

/// A list-of-strings claim: an array of strings, or one space-separated string. `None` if absent.
fn strings(path: &ClaimPath, claims: &Map<String, Value>) -> Result<Option<Vec<String>>, TokenError> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |item: &str| {
        if !item.is_empty() && !out.iter().any(|seen| seen == item) {
            out.push(item.to_owned());
        }
    };
    match path.lookup(claims) {
        None => return Ok(None),
        Some(Value::String(joined)) => joined.split_whitespace().for_each(&mut push),
        Some(Value::Array(items)) => {
            for item in items {
                let Value::String(item) = item else {
                    return Err(TokenError::InvalidClaim(path.to_string()));
                };
                push(item);
            }
        }
        Some(_) => return Err(TokenError::InvalidClaim(path.to_string())),
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    const NOW: f64 = 1_800_000_000.0;

    fn expect() -> Expectations<'static> {
        Expectations {
            issuer: "https://issuer.example",
            audience: "https://gateway.example/mcp",
            leeway: Duration::from_secs(60),
            max_lifetime: None,
            now: NOW,
        }
    }

    fn registered(extra: Value) -> Map<String, Value> {
        let mut claims = object(json!({
            "iss": "https://issuer.example",
            "aud": "https://gateway.example/mcp",
            "exp": NOW + 3600.0,
        }));
        claims.extend(object(extra));
        claims
    }

    #[test]
    fn accepts_matching_registered_claims() {
        assert!(check_registered(&registered(json!({})), expect()).is_ok());
        let array = registered(json!({"aud": ["other", "https://gateway.example/mcp"]}));
        assert!(check_registered(&array, expect()).is_ok());
        let fractional = registered(json!({"exp": NOW + 0.5, "iat": NOW - 10.25, "nbf": NOW}));
        assert!(check_registered(&fractional, expect()).is_ok());
    }

    #[test]
    fn applies_leeway_to_exp_nbf_and_iat() {
        let check = |extra: Value| check_registered(&registered(extra), expect()).map(|_| ());
        assert_eq!(check(json!({"exp": NOW - 59.0})), Ok(()));
        assert_eq!(check(json!({"exp": NOW - 60.0})), Err(TokenError::Expired));
        assert_eq!(check(json!({"nbf": NOW + 59.0})), Ok(()));
        assert_eq!(check(json!({"nbf": NOW + 61.0})), Err(TokenError::NotYetValid));
        assert_eq!(check(json!({"iat": NOW + 61.0})), Err(TokenError::NotYetValid));
    }

    #[test]
    fn refuses_wrong_missing_or_mistyped_registered_claims() {
        let check = |extra: Value| check_registered(&registered(extra), expect()).map(|_| ());
        assert_eq!(check(json!({"iss": "https://issuer.example/"})), Err(TokenError::WrongIssuer));
        assert_eq!(check(json!({"iss": 5})), Err(TokenError::InvalidClaim("iss".into())));
        assert_eq!(check(json!({"aud": "https://gateway.example"})), Err(TokenError::WrongAudience));
        assert_eq!(check(json!({"aud": []})), Err(TokenError::WrongAudience));
        assert_eq!(check(json!({"aud": [1]})), Err(TokenError::InvalidClaim("aud".into())));
        assert_eq!(check(json!({"exp": "tomorrow"})), Err(TokenError::InvalidClaim("exp".into())));
        assert_eq!(check(json!({"exp": -1})), Err(TokenError::InvalidClaim("exp".into())));
        let mut no_exp = registered(json!({}));
        no_exp.remove("exp");
        assert_eq!(check_registered(&no_exp, expect()).map(|_| ()), Err(TokenError::MissingClaim("exp".into())));
        let mut no_aud = registered(json!({}));
        no_aud.remove("aud");
        assert_eq!(check_registered(&no_aud, expect()).map(|_| ()), Err(TokenError::MissingClaim("aud".into())));
    }

    #[test]
    fn the_times_judge_a_later_instant_as_a_full_check_then_would() {
        let claims = registered(json!({"nbf": NOW - 30.0, "iat": NOW - 40.0, "exp": NOW + 600.0}));
        let capped = Expectations { max_lifetime: Some(Duration::from_secs(300)), ..expect() };
        // Valid at NOW + 400 (the lifetime left is under the cap plus leeway there).
        let at = |now: f64| Expectations { now, ..capped };
        let times = check_registered(&claims, at(NOW + 400.0)).expect("valid then");
        // Every instant, earlier (a clock stepped back) or later: the same answer as a full check.
        let mut t = NOW - 200.0;
        while t < NOW + 800.0 {
            assert_eq!(times.check(t), check_registered(&claims, at(t)).map(|_| ()), "at NOW{:+}", t - NOW);
            t += 0.25;
        }
    }

    #[test]
    fn refuses_lifetimes_beyond_the_configured_maximum() {
        let capped = Expectations { max_lifetime: Some(Duration::from_secs(3600)), ..expect() };
        assert!(check_registered(&registered(json!({})), capped).is_ok());
        let long = registered(json!({"exp": NOW + 86_400.0 * 365.0}));
        assert_eq!(check_registered(&long, capped).map(|_| ()), Err(TokenError::LifetimeTooLong));
    }

    #[test]
    fn maps_claims_with_the_default_mapping() {
        let claims = object(json!({
            "sub": "alice", "groups": ["eng", "ops", "eng"], "scope": "tools:read  tools:call",
        }));
        let principal = ClaimMapping::default().principal(&claims, "https://issuer.example").expect("maps");
        assert_eq!(principal.kind, PrincipalKind::User);
        assert_eq!(principal.id, "alice");
        assert_eq!(principal.groups, ["eng", "ops"]);
        assert_eq!(principal.scopes, ["tools:read", "tools:call"]);
        assert_eq!(principal.tenant, None);
        assert_eq!(principal.method, AuthMethod::Jwt { issuer: "https://issuer.example".into() });
    }

    #[test]
    fn follows_dotted_paths_and_literal_dotted_names() {
        let mapping = ClaimMapping {
            groups: ClaimPath::from("realm_access.roles"),
            tenant: Some(ClaimPath::from("https://example.com/tenant")),
            ..ClaimMapping::default()
        };
        let claims = object(json!({
            "sub": "svc", "realm_access": {"roles": "admin viewer"},
            "https://example.com/tenant": "acme", "scp": ["a", "b"],
        }));
        let principal = mapping.principal(&claims, "iss").expect("maps");
        assert_eq!(principal.groups, ["admin", "viewer"]);
        assert_eq!(principal.tenant.as_deref(), Some("acme"));
        assert_eq!(principal.scopes, ["a", "b"]);
        assert_eq!(ClaimPath::from("realm_access.missing").lookup(&claims), None);
        assert_eq!(ClaimPath::from("sub.deeper").lookup(&claims), None);
    }

    #[test]
    fn marks_workloads_by_rule() {
        let mapping = ClaimMapping {
            workload: WorkloadRule::AnyOf(vec![
                WorkloadRule::ClaimEquals { claim: ClaimPath::from("roles"), value: "robot".into() },
                WorkloadRule::ClaimAbsent(ClaimPath::from("email")),
            ]),
            ..ClaimMapping::default()
        };
        let kind = |claims: Value| mapping.principal(&object(claims), "iss").map(|p| p.kind);
        assert_eq!(kind(json!({"sub": "a", "email": "a@x"})), Ok(PrincipalKind::User));
        assert_eq!(kind(json!({"sub": "a", "email": "a@x", "roles": ["robot"]})), Ok(PrincipalKind::Workload));
        assert_eq!(kind(json!({"sub": "a", "email": "a@x", "roles": "human robot"})), Ok(PrincipalKind::Workload));
        assert_eq!(kind(json!({"sub": "a"})), Ok(PrincipalKind::Workload));
    }

    #[test]
    fn detects_client_credentials_tokens_by_default() {
        let mapping = ClaimMapping::default();
        let kind = |claims: Value| mapping.principal(&object(claims), "iss").map(|p| p.kind);
        assert_eq!(kind(json!({"sub": "alice", "client_id": "mcp-host"})), Ok(PrincipalKind::User));
        assert_eq!(kind(json!({"sub": "alice", "azp": "mcp-host", "gty": "password"})), Ok(PrincipalKind::User));
        assert_eq!(kind(json!({"sub": "ci-bot", "client_id": "ci-bot"})), Ok(PrincipalKind::Workload));
        assert_eq!(kind(json!({"sub": "0oa1", "cid": "0oa1"})), Ok(PrincipalKind::Workload));
        assert_eq!(kind(json!({"sub": "x@clients", "gty": "client-credentials"})), Ok(PrincipalKind::Workload));
        assert_eq!(kind(json!({"sub": "oid", "idtyp": "app"})), Ok(PrincipalKind::Workload));
        let never = ClaimMapping { workload: WorkloadRule::Never, ..ClaimMapping::default() };
        let principal = never.principal(&object(json!({"sub": "ci-bot", "client_id": "ci-bot"})), "iss");
        assert_eq!(principal.map(|p| p.kind), Ok(PrincipalKind::User));
    }

    #[test]
    fn parses_claim_paths_from_config_strings() {
        assert_eq!("realm_access.roles".parse::<ClaimPath>(), Ok(ClaimPath::from("realm_access.roles")));
        assert_eq!("".parse::<ClaimPath>(), Err(ClaimPathError::Empty));
    }

    #[test]
    fn refuses_missing_or_mistyped_mapped_claims() {
        let mapping = ClaimMapping { tenant: Some(ClaimPath::from("tid")), ..ClaimMapping::default() };
        let map = |claims: Value| mapping.principal(&object(claims), "iss").map(|_| ());
        assert_eq!(map(json!({"groups": []})), Err(TokenError::MissingClaim("sub".into())));
        assert_eq!(map(json!({"sub": ""})), Err(TokenError::InvalidClaim("sub".into())));
        assert_eq!(map(json!({"sub": 42})), Err(TokenError::InvalidClaim("sub".into())));
        assert_eq!(map(json!({"sub": "a", "groups": [1]})), Err(TokenError::InvalidClaim("groups".into())));
        assert_eq!(map(json!({"sub": "a", "groups": {"x": 1}})), Err(TokenError::InvalidClaim("groups".into())));
        assert_eq!(map(json!({"sub": "a", "tid": 7})), Err(TokenError::InvalidClaim("tid".into())));
        assert_eq!(map(json!({"sub": "a", "groups": null})), Ok(()));
    }
}
