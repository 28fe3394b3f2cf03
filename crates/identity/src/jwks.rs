//! The issuer's signing keys: a JWK Set (RFC 7517) parsed into the keys we will verify with,
//! the choice of key for a token, and a cache that follows the issuer's key rotation.
//!
//! Caching and rotation, per validator:
//! - A fetched set is fresh for `jwks_refresh` (default 5 min), or for the response's
//!   `Cache-Control: max-age` when that is shorter, but never less than
//!   [`MIN_REFETCH_INTERVAL`].
//! - A stale set keeps serving while one background fetch replaces it, so no request waits
//!   on the issuer once keys are known.
//! - A token whose key is not in the set (rotation) triggers one inline refetch. Such
//!   refetches happen at most once per [`MIN_REFETCH_INTERVAL`], so a flood of invented
//!   `kid`s cannot make the gateway hammer the issuer.
//! - After a failed fetch nothing is fetched again for [`MIN_REFETCH_INTERVAL`].
//! - One fetch runs at a time; concurrent validations that need keys wait for it and share its result.
//! - If the issuer cannot be reached, the last good set is used until it is `jwks_hard_expiry`
//!   old (default 24 h); after that tokens fail with [`TokenError::IssuerUnavailable`].

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use serde_json::Value;

use crate::discovery;
use crate::endpoint::Endpoint;
use crate::jwt::TokenError;
use crate::jwt::algorithm::{Algorithm, KeyType};

/// The shortest time between two fetches of a key set triggered by unknown keys or after a failure.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// Keys beyond this many in one set are ignored.
const MAX_KEYS: usize = 100;

/// Accepted RSA modulus sizes, in bits (RFC 7518 §3.3 requires at least 2048; the verifier stops at 4096).
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// A key from the issuer's set that may verify tokens.
#[derive(Debug)]
pub(crate) struct VerificationKey {
    kid: Option<String>,
    key_type: KeyType,
    /// The JWK's `alg`: when present, the only algorithm this key verifies.
    alg: Option<Algorithm>,
    pub(crate) key: DecodingKey,
}

/// The usable keys of one fetched JWK Set.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeySet {
    keys: Vec<Arc<VerificationKey>>,
}

/// The outcome of looking for a token's key.
#[derive(Debug)]
pub(crate) enum Selection {
    /// The key to verify with.
    Found(Arc<VerificationKey>),
    /// Keys with the token's `kid` exist, but none for the token's algorithm.
    Mismatch,
    /// No key fits (yet: the issuer may have rotated).
    Missing,
    /// The token names no `kid` and several keys fit.
    Ambiguous,
}

/// Where the key set is fetched from.
#[derive(Debug, Clone)]
pub(crate) enum KeySource {
    /// A configured `jwks_uri`.
    Fixed(Endpoint),
    /// The `jwks_uri` in the issuer's metadata, found on first use.
    Discovered {
        /// The issuer identifier the metadata must name.
        issuer: String,
        /// The same, as a URL.
        issuer_url: Endpoint,
    },
}

/// A shared, self-refreshing cache of one issuer's key set (cheap to clone).
#[derive(Debug, Clone)]
pub(crate) struct Jwks {
    shared: Arc<Shared>,
}

/// How long key sets are trusted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Freshness {
    /// Time before a set is refetched.
    pub(crate) refresh: Duration,
    /// Age after which a set is not used at all.
    pub(crate) hard_expiry: Duration,
}

#[derive(Debug)]
struct Shared {
    source: KeySource,
    client: reqwest::Client,
    freshness: Freshness,
    state: Mutex<State>,
    /// Held for the duration of a fetch: one fetch at a time.
    fetch_gate: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    snapshot: Option<Arc<Snapshot>>,
    /// No fetch before this instant (after a failure, or after a refetch for an unknown key).
    quiet_until: Option<Instant>,
    /// A background refresh is running.
    refreshing: bool,
    /// The `jwks_uri` found by discovery; forgotten when fetching from it fails.
    discovered: Option<Endpoint>,
}

#[derive(Debug, Clone)]
struct Snapshot {
    keys: KeySet,
    generation: u64,
    fresh_until: Instant,
    usable_until: Instant,
}

/// Why a fetch produced no key set (for logs and [`TokenError::IssuerUnavailable`]).
type FetchFailure = String;

impl KeySet {
    /// Parses a JWK Set document, keeping only keys that can verify an asymmetric signature.
    ///
    /// Skipped (and logged at debug): keys with `use` other than `sig` or `key_ops` without
    /// `verify`, symmetric (`oct`) keys, keys with a private part, unknown key types or curves,
    /// keys whose `alg` is not an asymmetric algorithm we know, RSA keys under 2048 or over
    /// 4096 bits, and points of the wrong length. The document itself must be an object with
    /// a `keys` array.
    pub(crate) fn from_json(body: &[u8]) -> Result<Self, FetchFailure> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<Value>,
        }
        let document: Document =
            serde_json::from_slice(body).map_err(|e| format!("the key set is not a jwk set: {e}"))?;
        let mut keys = Vec::new();
        for (index, jwk) in document.keys.into_iter().enumerate() {
            if keys.len() == MAX_KEYS {
                tracing::warn!(limit = MAX_KEYS, "issuer key set has too many keys; ignoring the rest");
                break;
            }
            match VerificationKey::from_jwk(jwk) {
                Ok(key) => keys.push(Arc::new(key)),
                Err(why) => tracing::debug!(index, why, "ignoring a key in the issuer's key set"),
            }
        }
        Ok(Self { keys })
    }

    /// The key for a token with header `kid` and `alg`.
    ///
    /// With a `kid`, the first key with that id that fits `alg`; without one, the only key that fits.
    pub(crate) fn select(&self, kid: Option<&str>, alg: Algorithm) -> Selection {
        match kid {
            Some(kid) => {
                let mut named = self.keys.iter().filter(|key| key.kid.as_deref() == Some(kid)).peekable();
                if named.peek().is_none() {
                    return Selection::Missing;
                }
                named.find(|key| key.fits(alg)).map_or(Selection::Mismatch, |key| Selection::Found(key.clone()))
            }
            None => {
                let mut fitting = self.keys.iter().filter(|key| key.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Selection::Found(key.clone()),
                    (None, _) => Selection::Missing,
                    (Some(_), Some(_)) => Selection::Ambiguous,
                }
            }
        }
    }

    /// How many usable keys the set has.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

impl VerificationKey {
    /// Whether this key may verify a signature made with `alg`.
    fn fits(&self, alg: Algorithm) -> bool {
        self.key_type == alg.key_type() && self.alg.is_none_or(|own| own == alg)
    }

    fn from_jwk(jwk: Value) -> Result<Self, &'static str> {
        #[derive(Deserialize)]
        struct Jwk {
            kty: String,
            #[serde(rename = "use")]
            use_: Option<String>,
            key_ops: Option<Vec<String>>,
            alg: Option<String>,
            kid: Option<String>,
            crv: Option<String>,
            n: Option<String>,
            e: Option<String>,
            x: Option<String>,
            y: Option<String>,
            d: Option<Value>,
        }
        let jwk: Jwk = serde_json::from_value(jwk).map_err(|_| "not a json web key")?;
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err("use is not sig");
        }
        if jwk.key_ops.as_ref().is_some_and(|ops| !ops.iter().any(|op| op == "verify")) {
            return Err("key_ops does not include verify");
        }
        if jwk.d.is_some() {
            return Err("the key has a private part; an issuer must publish public keys only");
        }
        let alg = match jwk.alg.as_deref().map(str::parse::<Algorithm>) {
            None => None,
            Some(Ok(alg)) => Some(alg),
            Some(Err(_)) => return Err("alg is not an asymmetric algorithm we accept"),
        };
        let (key_type, key) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("RSA", _) => {
                let n = field(jwk.n.as_deref())?;
                let e = field(jwk.e.as_deref())?;
                let bits = bit_length(&n);
                if !RSA_BITS.contains(&bits) || e.is_empty() || e.len() > 8 {
                    return Err("rsa key size outside 2048..=4096 bits, or a bad exponent");
                }
                (KeyType::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
            }
            ("EC", Some(crv @ ("P-256" | "P-384"))) => {
                let (key_type, size) = if crv == "P-256" { (KeyType::P256, 32) } else { (KeyType::P384, 48) };
                let x = field(jwk.x.as_deref())?;
                let y = field(jwk.y.as_deref())?;
                if x.len() != size || y.len() != size {
                    return Err("ec coordinates have the wrong length");
                }
                // The RustCrypto verifier reads an EC key as an uncompressed SEC1 point.
                let point = [&[0x04][..], &x, &y].concat();
                (key_type, DecodingKey::from_ec_der(&point))
            }
            ("OKP", Some("Ed25519")) => {
                let x = field(jwk.x.as_deref())?;
                if x.len() != 32 {
                    return Err("ed25519 key has the wrong length");
                }
                // The RustCrypto verifier reads an Ed25519 key as its 32 raw bytes.
                (KeyType::Ed25519, DecodingKey::from_ed_der(&x))
            }
            ("oct", _) => return Err("symmetric keys are never used"),
            _ => return Err("unsupported key type or curve"),
        };
        if alg.is_some_and(|alg| alg.key_type() != key_type) {
            return Err("alg does not match the key type");
        }
        Ok(Self { kid: jwk.kid, key_type, alg, key })
    }
}

/// A base64url key parameter (padding tolerated: some issuers pad).
fn field(value: Option<&str>) -> Result<Vec<u8>, &'static str> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let value = value.ok_or("a key parameter is missing")?;
    LENIENT.decode(value).map_err(|_| "a key parameter is not base64url")
}

/// Bits in a big-endian unsigned integer, ignoring leading zero bytes.
fn bit_length(be: &[u8]) -> usize {
    let Some(first) = be.iter().position(|&b| b != 0) else { return 0 };
    (be.len() - first) * 8 - be[first].leading_zeros() as usize
}

impl Jwks {
    /// A cache that fetches from `source` with `client`.
    pub(crate) fn new(source: KeySource, client: reqwest::Client, freshness: Freshness) -> Self {
        let shared = Shared {
            source,
            client,
            freshness,
            state: Mutex::new(State::default()),
            fetch_gate: tokio::sync::Mutex::new(()),
        };
        Self { shared: Arc::new(shared) }
    }

    /// The generation of the current key set while it is fresh (`None` once it is stale or
    /// before the first fetch): a verification made with a key of this generation still stands.
    pub(crate) fn fresh_generation(&self) -> Option<u64> {
        let state = self.state();
        state.snapshot.as_ref().filter(|s| Instant::now() < s.fresh_until).map(|s| s.generation)
    }

    /// The key to verify a token with header `kid` and `alg`, fetching the set if needed, and
    /// the generation of the set it came from.
    pub(crate) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<(Arc<VerificationKey>, u64), TokenError> {
        let now = Instant::now();
        let current = self.state().snapshot.clone();
        let snapshot = match current {
            Some(snapshot) if now < snapshot.fresh_until => snapshot,
            Some(snapshot) if now < snapshot.usable_until => {
                self.refresh_in_background(snapshot.generation);
                snapshot
            }
            stale => self.refresh(stale.map(|s| s.generation), false).await?,
        };
        match snapshot.keys.select(kid, alg) {
            Selection::Found(key) => return Ok((key, snapshot.generation)),
            Selection::Mismatch => return Err(TokenError::KeyMismatch),
            Selection::Ambiguous => return Err(TokenError::UnknownKey),
            Selection::Missing => {}
        }
        // Perhaps the issuer rotated its keys since we fetched: look once more.
        let snapshot = self.refresh(Some(snapshot.generation), true).await?;
        match snapshot.keys.select(kid, alg) {
            Selection::Found(key) => Ok((key, snapshot.generation)),
            Selection::Mismatch => Err(TokenError::KeyMismatch),
            Selection::Missing | Selection::Ambiguous => Err(TokenError::UnknownKey),
        }
    }

    /// Replaces the snapshot of generation `seen` (`None`: there is none) by a fetched one, unless
    /// another fetch already did while we waited or fetching is paused. Returns the newest usable
    /// snapshot. `for_unknown_key` fetches pause further fetches for [`MIN_REFETCH_INTERVAL`].
    async fn refresh(&self, seen: Option<u64>, for_unknown_key: bool) -> Result<Arc<Snapshot>, TokenError> {
        let _gate = self.shared.fetch_gate.lock().await;
        {
            let state = self.state();
            let now = Instant::now();
            let usable = state.snapshot.clone().filter(|s| now < s.usable_until);
            if let Some(snapshot) = &usable
                && Some(snapshot.generation) != seen
            {
                return Ok(snapshot.clone());
            }
            if state.quiet_until.is_some_and(|until| now < until) {
                return usable.ok_or_else(|| {
                    TokenError::IssuerUnavailable(
                        "the key set could not be fetched recently; retrying later".to_owned(),
                    )
                });
            }
        }

        let fetched = self.fetch().await;
        let now = Instant::now();
        let mut state = self.state();
        match fetched {
            Ok((keys, max_age)) => {
                let generation = state.snapshot.as_ref().map_or(1, |s| s.generation + 1);
                let freshness = self.shared.freshness;
                let fresh_for = max_age.map_or(freshness.refresh, |age| age.min(freshness.refresh));
                let fresh_for = fresh_for.max(MIN_REFETCH_INTERVAL);
                tracing::debug!(keys = keys.len(), generation, "fetched the issuer's key set");
                let snapshot = Arc::new(Snapshot {
                    keys,
                    generation,
                    fresh_until: now + fresh_for,
                    usable_until: now + freshness.hard_expiry,
                });
                state.snapshot = Some(snapshot.clone());
                state.quiet_until = for_unknown_key.then_some(now + MIN_REFETCH_INTERVAL);
                Ok(snapshot)
            }
            Err(failure) => {
                state.quiet_until = Some(now + MIN_REFETCH_INTERVAL);
                let usable = state.snapshot.clone().filter(|s| now < s.usable_until);
                tracing::warn!(
                    failure,
                    using_last_good_set = usable.is_some(),
                    "cannot fetch the token issuer's key set"
                );
                usable.ok_or(TokenError::IssuerUnavailable(failure))
            }
        }
    }

    /// Starts one background refresh of snapshot `seen`, unless one is running or fetching is paused.
    fn refresh_in_background(&self, seen: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        {
            let mut state = self.state();
            if state.refreshing || state.quiet_until.is_some_and(|until| Instant::now() < until) {
                return;
            }
            state.refreshing = true;
        }
        let this = self.clone();
        runtime.spawn(async move {
            // A failure is logged by `refresh`; the stale set keeps serving until its hard expiry.
            let _ = this.refresh(Some(seen), false).await;
            this.state().refreshing = false;
        });
    }

    /// Fetches and parses the key set, discovering its URL first if needed.
    async fn fetch(&self) -> Result<(KeySet, Option<Duration>), FetchFailure> {
        let client = &self.shared.client;
        let (endpoint, discovered) = match &self.shared.source {
            KeySource::Fixed(endpoint) => (endpoint.clone(), false),
            KeySource::Discovered { issuer, issuer_url } => {
                let known = self.state().discovered.clone();
                let endpoint = match known {
                    Some(endpoint) => endpoint,
                    None => {
                        let endpoint = discovery::jwks_uri(client, issuer, issuer_url).await?;
                        self.state().discovered = Some(endpoint.clone());
                        endpoint
                    }
                };
                (endpoint, true)
            }
        };
        let parsed = match endpoint.get(client).await {
            Ok(document) => KeySet::from_json(&document.body).map(|keys| (keys, document.max_age)),
            Err(e) => Err(format!("fetching the key set from {endpoint}: {e}")),
        };
        if parsed.is_err() && discovered {
            // The metadata may have moved the key set: discover again next time.
            self.state().discovered = None;
        }
        parsed
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a few plain fields, consistent after every statement: a panic elsewhere cannot tear it.
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Test hook: makes the current set stale (and, with `hard`, unusable) and lifts any fetch pause.
    #[cfg(test)]
    pub(crate) fn age(&self, hard: bool) {
        let mut state = self.state();
        let now = Instant::now();
        if let Some(snapshot) = &state.snapshot {
            let mut aged = Snapshot::clone(snapshot);
            aged.fresh_until = now;
            if hard {
                aged.usable_until = now;
            }
            state.snapshot = Some(Arc::new(aged));
        }
        state.quiet_until = None;
    }

    /// Test hook: whether a background refresh is running.
    #[cfg(test)]
    pub(crate) fn refreshing(&self) -> bool {
        self.state().refreshing
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    use super::*;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn rsa_jwk(kid: &str, bits: usize) -> Value {
        let n = vec![0xc5; bits / 8];
        json!({"kty": "RSA", "kid": kid, "n": b64(&n), "e": "AQAB"})
    }

    fn ec_jwk(kid: &str) -> Value {
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&[1; 32]), "y": b64(&[2; 32])})
    }

    fn ed_jwk(kid: &str) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(&[3; 32])})
    }

    fn set(keys: Vec<Value>) -> KeySet {
        KeySet::from_json(json!({ "keys": keys }).to_string().as_bytes()).expect("a jwk set")
    }

    fn kids(set: &KeySet) -> Vec<&str> {
        set.keys.iter().filter_map(|k| k.kid.as_deref()).collect()
    }

    #[test]
    fn keeps_only_public_signature_keys_we_can_use() {
        let mut enc = ec_jwk("enc");
        enc["use"] = json!("enc");
        let mut wrap = ec_jwk("wrap");
        wrap["key_ops"] = json!(["wrapKey"]);
        let mut private = ec_jwk("private");
        private["d"] = json!(b64(&[9; 32]));
        let mut hs = ec_jwk("hs-alg");
        hs["alg"] = json!("HS256");
        let mut crossed = ec_jwk("crossed-alg");
        crossed["alg"] = json!("RS256");
        let mut short = ec_jwk("short");
        short["x"] = json!(b64(&[1; 31]));
        let mut sig = ec_jwk("sig");
        sig["use"] = json!("sig");
        sig["key_ops"] = json!(["verify"]);
        let keys = set(vec![
            enc,
            wrap,
            private,
            hs,
            crossed,
            short,
            json!({"kty": "oct", "kid": "oct", "k": "c2VjcmV0"}),
            json!({"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"}),
            json!({"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": b64(&[3; 32])}),
            rsa_jwk("rsa-1024", 1024),
            rsa_jwk("rsa-8192", 8192),
            json!("not an object"),
            sig,
            rsa_jwk("rsa-2048", 2048),
            ed_jwk("ed"),
        ]);
        assert_eq!(kids(&keys), ["sig", "rsa-2048", "ed"]);
    }

    #[test]
    fn refuses_documents_that_are_not_jwk_sets() {
        assert!(KeySet::from_json(b"[]").is_err());
        assert!(KeySet::from_json(b"{\"keys\": {}}").is_err());
        assert!(KeySet::from_json(b"<html>").is_err());
        assert_eq!(KeySet::from_json(b"{\"keys\": []}").map(|s| s.len()), Ok(0));
    }

    #[test]
    fn selects_by_kid_and_algorithm() {
        let mut pinned = rsa_jwk("pinned", 2048);
        pinned["alg"] = json!("RS256");
        let keys = set(vec![rsa_jwk("rsa", 2048), ec_jwk("ec"), pinned]);
        assert!(matches!(keys.select(Some("rsa"), Algorithm::RS256), Selection::Found(_)));
        assert!(matches!(keys.select(Some("rsa"), Algorithm::PS256), Selection::Found(_)));
        assert!(matches!(keys.select(Some("pinned"), Algorithm::RS256), Selection::Found(_)));
        assert!(matches!(keys.select(Some("pinned"), Algorithm::PS256), Selection::Mismatch));
        assert!(matches!(keys.select(Some("rsa"), Algorithm::ES256), Selection::Mismatch));
        assert!(matches!(keys.select(Some("ec"), Algorithm::ES384), Selection::Mismatch));
        assert!(matches!(keys.select(Some("gone"), Algorithm::ES256), Selection::Missing));
    }

    #[test]
    fn selects_the_only_fitting_key_when_the_token_names_none() {
        let keys = set(vec![rsa_jwk("rsa", 2048), ec_jwk("ec")]);
        let Selection::Found(key) = keys.select(None, Algorithm::ES256) else { panic!("expected the ec key") };
        assert_eq!(key.kid.as_deref(), Some("ec"));
        assert!(matches!(keys.select(None, Algorithm::EdDSA), Selection::Missing));
        let two = set(vec![ec_jwk("a"), ec_jwk("b")]);
        assert!(matches!(two.select(None, Algorithm::ES256), Selection::Ambiguous));
    }

    #[test]
    fn counts_bits_of_big_endian_integers() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[0, 1]), 1);
        assert_eq!(bit_length(&[0x80, 0]), 16);
        assert_eq!(bit_length(&[0, 0x7f, 0]), 15);
    }
}
