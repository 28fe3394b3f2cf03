//! OAuth 2.1 bearer tokens: validating a JWT access token against its issuer's keys, as the
//! resource server the MCP authorization spec makes the gateway, and mapping it to a [`Principal`].
//!
//! A token passes when, in this order:
//! 1. it is three base64url parts whose header and payload are JSON objects ([`TokenError::Malformed`]);
//! 2. its header `alg` is in the allow-list — `none` and HMAC can never be
//!    ([`TokenError::UnsupportedAlgorithm`]), its `typ`, if any, is `JWT` or `at+jwt`
//!    (RFC 9068), and it has no `crit` extensions. Header `jku`, `x5u` and `jwk` are ignored:
//!    keys come only from the configured issuer;
//! 3. a key of the issuer's set fits: the one with the header's `kid`, or the only key of the
//!    right type when there is no `kid`, whose type and curve match the algorithm and whose own
//!    `alg`, if it has one, equals it (the `jwks` module has the fetching and rotation rules);
//! 4. the signature verifies with that key;
//! 5. `iss` is exactly the issuer, `aud` is or contains the audience, `exp` is present and not
//!    past, `nbf` / `iat` are not in the future (all within the leeway), and the lifetime is within
//!    `max_lifetime` when one is set;
//! 6. the mapped claims are present and well typed ([`ClaimMapping`]).

pub(crate) mod algorithm;
mod claims;
mod token;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

pub use self::algorithm::{Algorithm, AlgorithmError};
use self::claims::Expectations;
pub use self::claims::{ClaimMapping, ClaimPath, ClaimPathError, WorkloadRule};
use self::token::UnverifiedToken;
use crate::endpoint::{self, Endpoint, EndpointError};
pub use crate::jwks::MIN_REFETCH_INTERVAL;
use crate::jwks::{Freshness, Jwks, KeySource};
use crate::principal::Principal;

/// The largest clock-skew allowance [`JwtSettings::leeway`] may have.
pub const MAX_LEEWAY: Duration = Duration::from_secs(5 * 60);

/// How the gateway validates bearer tokens from one issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// The exact `iss` tokens must carry (and, without `jwks_uri`, the URL metadata is discovered from).
    pub issuer: String,
    /// This gateway's canonical resource URI (RFC 8707); a token's `aud` must be or contain it.
    pub audience: String,
    /// Where the issuer's key set is; `None` discovers it from the issuer's metadata.
    pub jwks_uri: Option<String>,
    /// The algorithms tokens may be signed with. Default [`Algorithm::defaults`]: RS256, ES256, EdDSA.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed for `exp`, `nbf` and `iat`. Default 60 s, at most [`MAX_LEEWAY`].
    pub leeway: Duration,
    /// The longest a token may still be valid (`exp` minus now); `None` (default) sets no limit.
    pub max_lifetime: Option<Duration>,
    /// Where the principal's attributes are in a token.
    pub claims: ClaimMapping,
    /// How long a fetched key set is trusted before it is refetched. Default 5 min; a shorter
    /// `Cache-Control: max-age` from the issuer wins. Either way the set is kept at least
    /// [`MIN_REFETCH_INTERVAL`] (30 s), which is the effective floor for shorter settings.
    pub jwks_refresh: Duration,
    /// How long the last good key set keeps being used while the issuer cannot be reached.
    /// Default 24 h; after that, validation fails with [`TokenError::IssuerUnavailable`].
    pub jwks_hard_expiry: Duration,
    /// Timeout for each metadata or key-set request. Default 5 s.
    pub http_timeout: Duration,
}

/// Validates bearer tokens and maps them to principals (cheap to clone; clones share the key cache).
#[derive(Clone)]
pub struct JwtValidator {
    inner: Arc<Inner>,
}

/// Why a bearer token was refused. Messages are safe to show the client: they never repeat the
/// token, key material or the issuer's responses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts with a JSON header and payload, or too long.
    #[error("the bearer token is not a well-formed jwt")]
    Malformed,
    /// The header's `alg` is not in the allow-list (always so for `none` and HMAC).
    #[error("the token's signing algorithm {0} is not accepted")]
    UnsupportedAlgorithm(String),
    /// The header's `typ` is neither `JWT` nor `at+jwt`.
    #[error("the token is not an access token (header typ)")]
    UnsupportedType,
    /// The header has `crit` extensions.
    #[error("the token requires header extensions this gateway does not support")]
    CriticalHeader,
    /// No key of the issuer's set fits the token's `kid` (or, without a `kid`, none or several fit).
    #[error("the token's signing key is not one of the issuer's keys")]
    UnknownKey,
    /// The key named by `kid` is of another type, or bound to another algorithm.
    #[error("the token's signing key does not match its algorithm")]
    KeyMismatch,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` or `iat` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `exp` is further away than the configured maximum lifetime.
    #[error("the token's lifetime is longer than this gateway accepts")]
    LifetimeTooLong,
    /// `iss` is not the configured issuer.
    #[error("the token was issued by an issuer this gateway does not trust")]
    WrongIssuer,
    /// `aud` does not contain this gateway's resource URI.
    #[error("the token was not issued for this gateway")]
    WrongAudience,
    /// A required claim is absent (by its name or path).
    #[error("the token lacks the {0} claim")]
    MissingClaim(String),
    /// A claim has the wrong JSON type or an empty value.
    #[error("the token's {0} claim has an unexpected form")]
    InvalidClaim(String),
    /// The issuer's keys cannot be fetched and none usable are cached. The detail is for the
    /// operator's log and is not part of the message.
    #[error("the token issuer's keys cannot be fetched right now")]
    IssuerUnavailable(String),
}

/// One problem with [`JwtSettings`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// The issuer is empty.
    #[error("issuer is empty")]
    EmptyIssuer,
    /// The audience is empty.
    #[error("audience is empty")]
    EmptyAudience,
    /// A URL setting (`issuer` when discovering, or `jwks_uri`) cannot be fetched from.
    #[error("{setting} is not acceptable: {problem}")]
    Url {
        /// The setting's name.
        setting: &'static str,
        /// What is wrong with it.
        problem: EndpointError,
    },
    /// An issuer used for discovery has a query or fragment (RFC 8414 §2 forbids them).
    #[error("issuer must have no query or fragment to discover its metadata")]
    IssuerNotDiscoverable,
    /// No algorithm is allowed.
    #[error("algorithms is empty")]
    NoAlgorithms,
    /// The leeway exceeds [`MAX_LEEWAY`].
    #[error("leeway {0:?} exceeds the maximum of 5 minutes")]
    LeewayTooLarge(Duration),
    /// A claim path is empty.
    #[error("{0} names an empty claim")]
    EmptyClaim(&'static str),
    /// `jwks_refresh` is zero or over `jwks_hard_expiry`.
    #[error("jwks_refresh must be more than zero and at most jwks_hard_expiry")]
    RefreshOutOfRange,
    /// `http_timeout` is zero or over a minute.
    #[error("http_timeout must be more than zero and at most 60 s")]
    TimeoutOutOfRange,
    /// The HTTP client could not be built.
    #[error("cannot build the http client: {0}")]
    HttpClient(String),
}

/// Every problem found in [`JwtSettings`], reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid jwt settings: {}", join(.0))]
pub struct InvalidSettings(pub Vec<SettingsError>);

struct Inner {
    settings: JwtSettings,
    jwks: Jwks,
    /// Tokens whose signature and claims were checked, by the SHA-256 of the audience and the
    /// token (the tokens themselves are not kept): a host sends the same token on every request
    /// until it expires, and a signature check costs tens of microseconds.
    verified: Mutex<HashMap<[u8; 32], Verified>>,
    /// Signatures checked so far (tests tell a cached answer from a checked one).
    #[cfg(test)]
    verifications: std::sync::atomic::AtomicUsize,
}

/// What a verified token was found to be, and for how long that holds.
struct Verified {
    principal: Principal,
    /// Its time claims, judged again at each use as the full check judges them (so a token
    /// expires, and a clock stepped back is seen, as if it were checked in full).
    times: claims::Times,
    /// The key set generation whose key verified it: once that set is stale or replaced (a key
    /// rotated out, say) the token is verified again.
    generation: u64,
}

/// At most this many verified tokens are remembered; past it the cache starts over.
const VERIFIED_LIMIT: usize = 10_000;

impl JwtSettings {
    /// Settings for `issuer` and `audience` with every default.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_uri: None,
            algorithms: Algorithm::defaults(),
            leeway: Duration::from_secs(60),
            max_lifetime: None,
            claims: ClaimMapping::default(),
            jwks_refresh: Duration::from_secs(5 * 60),
            jwks_hard_expiry: Duration::from_secs(24 * 60 * 60),
            http_timeout: Duration::from_secs(5),
        }
    }

    /// Checks the settings, collecting every problem; the key source on success.
    fn check(&self) -> Result<KeySource, Vec<SettingsError>> {
        let mut problems = Vec::new();
        if self.issuer.is_empty() {
            problems.push(SettingsError::EmptyIssuer);
        }
        if self.audience.is_empty() {
            problems.push(SettingsError::EmptyAudience);
        }
        let source = match &self.jwks_uri {
            Some(jwks_uri) => Endpoint::parse(jwks_uri)
                .map(KeySource::Fixed)
                .map_err(|problem| problems.push(SettingsError::Url { setting: "jwks_uri", problem }))
                .ok(),
            // With a configured key set the issuer is only compared, so it need not be a URL.
            None if self.issuer.is_empty() => None,
            None => match Endpoint::parse(&self.issuer) {
                Ok(url) if url.url().query().is_some() => {
                    problems.push(SettingsError::IssuerNotDiscoverable);
                    None
                }
                Ok(issuer_url) => Some(KeySource::Discovered { issuer: self.issuer.clone(), issuer_url }),
                Err(EndpointError::Fragment) => {
                    problems.push(SettingsError::IssuerNotDiscoverable);
                    None
                }
                Err(problem) => {
                    problems.push(SettingsError::Url { setting: "issuer", problem });
                    None
                }
            },
        };
        if self.algorithms.is_empty() {
            problems.push(SettingsError::NoAlgorithms);
        }
        if self.leeway > MAX_LEEWAY {
            problems.push(SettingsError::LeewayTooLarge(self.leeway));
        }
        for (setting, path) in self.claims.paths() {
            if path.as_str().is_empty() {
                problems.push(SettingsError::EmptyClaim(setting));
            }
        }
        if self.jwks_refresh.is_zero() || self.jwks_refresh > self.jwks_hard_expiry {
            problems.push(SettingsError::RefreshOutOfRange);
        }
        if self.http_timeout.is_zero() || self.http_timeout > Duration::from_secs(60) {
            problems.push(SettingsError::TimeoutOutOfRange);
        }
        match source {
            Some(source) if problems.is_empty() => Ok(source),
            _ => Err(problems),
        }
    }
}

impl JwtValidator {
    /// A validator for `settings`; no request is made until the first token arrives.
    pub fn new(settings: JwtSettings) -> Result<Self, InvalidSettings> {
        let source = settings.check().map_err(InvalidSettings)?;
        let client = endpoint::client(settings.http_timeout)
            .map_err(|e| InvalidSettings(vec![SettingsError::HttpClient(e.to_string())]))?;
        let freshness = Freshness { refresh: settings.jwks_refresh, hard_expiry: settings.jwks_hard_expiry };
        let jwks = Jwks::new(source, client, freshness);
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                jwks,
                verified: Mutex::new(HashMap::new()),
                #[cfg(test)]
                verifications: std::sync::atomic::AtomicUsize::new(0),
            }),
        })
    }

    /// The settings this validator was built from.
    pub fn settings(&self) -> &JwtSettings {
        &self.inner.settings
    }

    /// Validates `token` (the bearer token, without the `Bearer ` prefix) for the configured
    /// audience and returns its principal.
    pub async fn validate(&self, token: &str) -> Result<Principal, TokenError> {
        self.validate_for(token, &self.inner.settings.audience).await
    }

    /// Like [`Self::validate`], but `aud` must contain `audience` instead of the configured one
    /// (a per-route resource URI, so a token for one route does not open another).
    ///
    /// A token verified before for the same audience is answered from memory while it has not
    /// expired and the key set that verified it is still the fresh one; anything else (another
    /// route, a refreshed or stale key set, an expired token) is checked in full again.
    pub async fn validate_for(&self, token: &str, audience: &str) -> Result<Principal, TokenError> {
        let digest = verified_key(token, audience);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        if let Some(generation) = self.inner.jwks.fresh_generation()
            && let Some(known) = self.verified().get(&digest)
            && known.generation == generation
            && known.times.check(now).is_ok()
        {
            return Ok(known.principal.clone());
        }
        let verified = self.verify(token, audience).await?;
        let principal = verified.principal.clone();
        let mut cache = self.verified();
        if cache.len() >= VERIFIED_LIMIT {
            // Expired tokens go first; only if that leaves it full does it start over.
            cache.retain(|_, v| v.times.check(now).is_ok());
            if cache.len() >= VERIFIED_LIMIT {
                cache.clear();
            }
        }
        cache.insert(digest, verified);
        Ok(principal)
    }

    fn verified(&self) -> MutexGuard<'_, HashMap<[u8; 32], Verified>> {
        // A map of plain values, consistent after every statement: a panic elsewhere cannot tear it.
        self.inner.verified.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks a token in full: its header, its signature with the issuer's key, its claims.
    async fn verify(&self, token: &str, audience: &str) -> Result<Verified, TokenError> {
        let settings = &self.inner.settings;
        let token = UnverifiedToken::parse(token)?;
        let alg = token.algorithm(&settings.algorithms)?;
        token.check_header()?;
        let kid = token.kid()?;
        let signature = token.signature()?;

        let (key, generation) = self.inner.jwks.key_for(kid, alg).await?;
        #[cfg(test)]
        self.inner.verifications.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Always the RustCrypto provider, whatever process-wide provider jsonwebtoken has.
        let provider = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
        let verifier = (provider.verifier_factory)(&alg.to_jsonwebtoken(), &key.key).map_err(|e| {
            tracing::warn!(error = %e, %alg, "an issuer key cannot verify");
            TokenError::BadSignature
        })?;
        verifier.verify(token.signing_input.as_bytes(), &signature).map_err(|_| TokenError::BadSignature)?;

        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let expect = Expectations {
            issuer: &settings.issuer,
            audience,
            leeway: settings.leeway,
            max_lifetime: settings.max_lifetime,
            now,
        };
        let times = claims::check_registered(&token.claims, expect)?;
        let principal = settings.claims.principal(&token.claims, &settings.issuer)?;
        Ok(Verified { principal, times, generation })
    }

    /// Test hook: every remembered token as if it expired `seconds` earlier.
    #[cfg(test)]
    pub(crate) fn expire_verified(&self, seconds: f64) {
        for known in self.verified().values_mut() {
            known.times = known.times.expiring_earlier(seconds);
        }
    }

    /// How many signatures were checked (not answered from the verified-token cache).
    #[cfg(test)]
    pub(crate) fn verifications(&self) -> usize {
        self.inner.verifications.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The key cache (for tests that age it).
    #[cfg(test)]
    pub(crate) fn jwks(&self) -> &Jwks {
        &self.inner.jwks
    }
}

/// The verified-token cache's key for `token` presented for `audience`.
fn verified_key(token: &str, audience: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update((audience.len() as u64).to_be_bytes());
    hash.update(audience.as_bytes());
    hash.update(token.as_bytes());
    hash.finalize().into()
}

impl fmt::Debug for JwtValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtValidator").field("issuer", &self.inner.settings.issuer).finish_non_exhaustive()
    }
}

impl TokenError {
    /// A stable machine-readable reason, for metrics, audit records and error data.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "token_malformed",
            Self::UnsupportedAlgorithm(_) => "token_unsupported_algorithm",
            Self::UnsupportedType => "token_unsupported_type",
            Self::CriticalHeader => "token_critical_header",
            Self::UnknownKey => "token_unknown_key",
            Self::KeyMismatch => "token_key_mismatch",
            Self::BadSignature => "token_bad_signature",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::LifetimeTooLong => "token_lifetime_too_long",
            Self::WrongIssuer => "token_wrong_issuer",
            Self::WrongAudience => "token_wrong_audience",
            Self::MissingClaim(_) => "token_missing_claim",
            Self::InvalidClaim(_) => "token_invalid_claim",
            Self::IssuerUnavailable(_) => "issuer_unavailable",
        }
    }

    /// Whether the client is to blame (answer 401 `invalid_token`); otherwise the gateway cannot
    /// reach the issuer (answer 503).
    pub fn is_client_fault(&self) -> bool {
        match self {
            Self::IssuerUnavailable(_) => false,
            Self::Malformed
            | Self::UnsupportedAlgorithm(_)
            | Self::UnsupportedType
            | Self::CriticalHeader
            | Self::UnknownKey
            | Self::KeyMismatch
            | Self::BadSignature
            | Self::Expired
            | Self::NotYetValid
            | Self::LifetimeTooLong
            | Self::WrongIssuer
            | Self::WrongAudience
            | Self::MissingClaim(_)
            | Self::InvalidClaim(_) => true,
        }
    }
}

impl InvalidSettings {
    /// The problems found.
    pub fn problems(&self) -> &[SettingsError] {
        &self.0
    }
}

fn join(problems: &[SettingsError]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests;
