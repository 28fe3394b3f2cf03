//! Workload API keys: generating, parsing, hashing and verifying them. Storing them (id, hash,
//! name, principal, groups, scopes, expiry, revocation) is the store's job.
//!
//! A key as shown to its owner, once, reads `pcl_<key id>_<secret>`:
//! - `pcl_`: a fixed prefix, so people and secret scanners recognise a leaked key;
//! - key id: 16 lowercase hex characters (8 random bytes); public, stored in clear, finds the record;
//! - secret: 43 base64url characters, no padding (32 random bytes); only its SHA-256 is stored.
//!
//! Example: `pcl_9f86d081884c7d65_3q2-7wAAAAD...` (43 characters after the second `_`; the
//! secret may itself contain `_` and `-`). A plain SHA-256 suffices because the secret is
//! 256 random bits: there is nothing to guess, so no slow password hash is needed.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The prefix every key starts with.
pub const PREFIX: &str = "pcl_";

const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// A key's public id: 16 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

/// The secret part of a presented key. Its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySecret(String);

/// The SHA-256 of a key's secret, as stored. Compare with [`verify`], which is constant-time.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

/// Why a presented key or a stored value is not a valid API key part. Messages never repeat the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    /// The credential does not start with `pcl_`: not an API key (perhaps a JWT).
    #[error("the credential is not a portcullis api key")]
    NotAnApiKey,
    /// The key id is not 16 lowercase hex characters.
    #[error("the api key's id is malformed")]
    MalformedId,
    /// The secret is not 43 base64url characters.
    #[error("the api key's secret is malformed")]
    MalformedSecret,
    /// A stored hash is not 64 hex characters.
    #[error("the stored api key hash is malformed")]
    MalformedHash,
}

/// A new key: its id, the full key to show its owner once (`pcl_<id>_<secret>`), and the hash to store.
pub fn generate() -> (KeyId, String, KeyHash) {
    let mut rng = rand::rng();
    let mut id = [0u8; ID_BYTES];
    rng.fill_bytes(&mut id);
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill_bytes(&mut secret);
    let id = KeyId(hex(&id));
    let secret = KeySecret(URL_SAFE_NO_PAD.encode(secret));
    let presented = format!("{PREFIX}{}_{}", id.0, secret.0);
    let hash = hash(&secret);
    (id, presented, hash)
}

/// Splits a presented key into its id (to find the record) and its secret (to [`verify`]).
pub fn parse(presented: &str) -> Result<(KeyId, KeySecret), ApiKeyError> {
    let rest = presented.strip_prefix(PREFIX).ok_or(ApiKeyError::NotAnApiKey)?;
    let (id, secret) = rest.split_once('_').ok_or(ApiKeyError::MalformedId)?;
    let id = KeyId::parse(id)?;
    let well_formed = URL_SAFE_NO_PAD.decode(secret).is_ok_and(|bytes| bytes.len() == SECRET_BYTES);
    if !well_formed {
        return Err(ApiKeyError::MalformedSecret);
    }
    Ok((id, KeySecret(secret.to_owned())))
}

/// The hash to store for `secret`.
pub fn hash(secret: &KeySecret) -> KeyHash {
    KeyHash(Sha256::digest(secret.0.as_bytes()).into())
}

/// Whether `secret` is the one `expected` was made from, in constant time.
pub fn verify(secret: &KeySecret, expected: &KeyHash) -> bool {
    hash(secret).0.ct_eq(&expected.0).into()
}

impl KeyId {
    /// Checks a stored or presented id: 16 lowercase hex characters.
    pub fn parse(id: &str) -> Result<Self, ApiKeyError> {
        let well_formed = id.len() == ID_BYTES * 2 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if well_formed { Ok(Self(id.to_owned())) } else { Err(ApiKeyError::MalformedId) }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySecret(<redacted>)")
    }
}

impl KeyHash {
    /// Reads a stored hash: 64 hex characters (either case).
    pub fn from_hex(text: &str) -> Result<Self, ApiKeyError> {
        // `from_str_radix` alone would also take a sign.
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiKeyError::MalformedHash);
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| ApiKeyError::MalformedHash)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| ApiKeyError::MalformedHash)?;
        }
        Ok(Self(bytes))
    }

    /// The hash as 64 lowercase hex characters, as stored.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({})", self.to_hex())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_verify() {
        let (id, presented, stored) = generate();
        assert!(presented.starts_with("pcl_"));
        assert_eq!(presented.len(), PREFIX.len() + 16 + 1 + 43);
        let (parsed_id, secret) = parse(&presented).expect("a generated key parses");
        assert_eq!(parsed_id, id);
        assert!(verify(&secret, &stored));
        assert_eq!(hash(&secret), stored);
    }

    #[test]
    fn generated_keys_differ() {
        let (first_id, first, _) = generate();
        let (second_id, second, _) = generate();
        assert_ne!(first_id, second_id);
        assert_ne!(first, second);
    }

    #[test]
    fn a_different_secret_does_not_verify() {
        let (_, _, stored) = generate();
        let (_, other, _) = generate();
        let (_, other_secret) = parse(&other).expect("parses");
        assert!(!verify(&other_secret, &stored));
    }

    #[test]
    fn refuses_malformed_keys() {
        let secret = URL_SAFE_NO_PAD.encode([7u8; 32]);
        assert!(parse(&format!("pcl_0123456789abcdef_{secret}")).is_ok());
        assert_eq!(parse("eyJhbGciOiJSUzI1NiJ9.e30.c2ln").map(|_| ()), Err(ApiKeyError::NotAnApiKey));
        assert_eq!(parse("pcl_").map(|_| ()), Err(ApiKeyError::MalformedId));
        assert_eq!(parse(&format!("pcl_0123456789ABCDEF_{secret}")).map(|_| ()), Err(ApiKeyError::MalformedId));
        assert_eq!(parse(&format!("pcl_0123_{secret}")).map(|_| ()), Err(ApiKeyError::MalformedId));
        assert_eq!(parse("pcl_0123456789abcdef_short").map(|_| ()), Err(ApiKeyError::MalformedSecret));
        assert_eq!(parse(&format!("pcl_0123456789abcdef_{secret}=")).map(|_| ()), Err(ApiKeyError::MalformedSecret));
        assert_eq!(parse(&format!("pcl_0123456789abcdef_{secret}A")).map(|_| ()), Err(ApiKeyError::MalformedSecret));
    }

    #[test]
    fn secrets_containing_underscores_parse() {
        let secret = URL_SAFE_NO_PAD.encode([0xff; 32]);
        assert!(secret.contains('_'));
        let (id, parsed) = parse(&format!("pcl_00000000000000ff_{secret}")).expect("parses");
        assert_eq!(id.as_str(), "00000000000000ff");
        assert_eq!(parsed.0, secret);
    }

    #[test]
    fn hashes_round_trip_through_hex() {
        let (_, _, stored) = generate();
        let hex = stored.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(KeyHash::from_hex(&hex), Ok(stored.clone()));
        assert_eq!(KeyHash::from_hex(&hex.to_uppercase()), Ok(stored));
        assert_eq!(KeyHash::from_hex("abc"), Err(ApiKeyError::MalformedHash));
        assert_eq!(KeyHash::from_hex(&"g".repeat(64)), Err(ApiKeyError::MalformedHash));
        assert_eq!(KeyHash::from_hex(&"é".repeat(32)), Err(ApiKeyError::MalformedHash));
        assert_eq!(KeyHash::from_hex(&"+f".repeat(32)), Err(ApiKeyError::MalformedHash));
    }

    #[test]
    fn never_prints_the_secret() {
        let (_, presented, _) = generate();
        let (_, secret) = parse(&presented).expect("parses");
        assert_eq!(format!("{secret:?}"), "KeySecret(<redacted>)");
    }
}
