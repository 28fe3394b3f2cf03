//! The signature algorithms a token may be signed with.
//!
//! Only asymmetric algorithms exist here: `none` and the HMAC family (`HS256`, `HS384`,
//! `HS512`) cannot be expressed, so no configuration can allow them and a token that names
//! them is refused before any key is looked at.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An asymmetric JWS algorithm (RFC 7518, RFC 8037) a token may be signed with.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// EdDSA on Ed25519.
    EdDSA,
}

/// Why a name is not an algorithm a token may be signed with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlgorithmError {
    /// `none`: an unsigned token.
    #[error("algorithm none (unsigned tokens) is never accepted")]
    None,
    /// An HMAC algorithm: a shared secret, which a resource server must not hold.
    #[error("symmetric algorithm {0} is never accepted (use an asymmetric one such as RS256 or ES256)")]
    Symmetric(String),
    /// Any other name.
    #[error("unknown or unsupported algorithm {0}")]
    Unknown(String),
}

/// The type of key an algorithm verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyType {
    /// `kty: RSA`.
    Rsa,
    /// `kty: EC`, `crv: P-256`.
    P256,
    /// `kty: EC`, `crv: P-384`.
    P384,
    /// `kty: OKP`, `crv: Ed25519`.
    Ed25519,
}

impl Algorithm {
    /// Every algorithm that can be allowed.
    pub const ALL: [Algorithm; 9] = [
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
        Self::ES256,
        Self::ES384,
        Self::EdDSA,
    ];

    /// The default allow-list: RS256 (every mainstream issuer's default), ES256 and EdDSA.
    pub fn defaults() -> Vec<Algorithm> {
        vec![Self::RS256, Self::ES256, Self::EdDSA]
    }

    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
        }
    }

    /// The key type this algorithm verifies with.
    pub(crate) fn key_type(self) -> KeyType {
        match self {
            Self::RS256 | Self::RS384 | Self::RS512 | Self::PS256 | Self::PS384 | Self::PS512 => KeyType::Rsa,
            Self::ES256 => KeyType::P256,
            Self::ES384 => KeyType::P384,
            Self::EdDSA => KeyType::Ed25519,
        }
    }

    /// The same algorithm as `jsonwebtoken` names it.
    pub(crate) fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::RS256 => jsonwebtoken::Algorithm::RS256,
            Self::RS384 => jsonwebtoken::Algorithm::RS384,
            Self::RS512 => jsonwebtoken::Algorithm::RS512,
            Self::PS256 => jsonwebtoken::Algorithm::PS256,
            Self::PS384 => jsonwebtoken::Algorithm::PS384,
            Self::PS512 => jsonwebtoken::Algorithm::PS512,
            Self::ES256 => jsonwebtoken::Algorithm::ES256,
            Self::ES384 => jsonwebtoken::Algorithm::ES384,
            Self::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

impl FromStr for Algorithm {
    type Err = AlgorithmError;

    /// Parses a JWS `alg` name; names are case-sensitive (RFC 7515 §4.1.1).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        if let Some(alg) = Self::ALL.into_iter().find(|alg| alg.as_str() == name) {
            return Ok(alg);
        }
        if name.eq_ignore_ascii_case("none") {
            return Err(AlgorithmError::None);
        }
        if name.get(..2).is_some_and(|prefix| prefix.eq_ignore_ascii_case("HS")) {
            return Err(AlgorithmError::Symmetric(printable(name)));
        }
        Err(AlgorithmError::Unknown(printable(name)))
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Algorithm {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// An algorithm name from a token, safe to repeat in a message: short, and only
/// characters that occur in real algorithm names.
pub(crate) fn printable(name: &str) -> String {
    let plain = name.len() <= 16 && name.chars().all(|c| c.is_ascii_alphanumeric() || "+-_.".contains(c));
    if plain && !name.is_empty() { name.to_owned() } else { "(unrecognised)".to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_asymmetric_algorithm_by_its_name() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>(), Ok(alg));
        }
    }

    #[test]
    fn refuses_none_and_hmac_by_name() {
        assert_eq!("none".parse::<Algorithm>(), Err(AlgorithmError::None));
        assert_eq!("NONE".parse::<Algorithm>(), Err(AlgorithmError::None));
        for name in ["HS256", "HS384", "HS512", "hs256"] {
            assert_eq!(name.parse::<Algorithm>(), Err(AlgorithmError::Symmetric(name.into())));
        }
        assert_eq!("rs256".parse::<Algorithm>(), Err(AlgorithmError::Unknown("rs256".into())));
        assert_eq!("ES512".parse::<Algorithm>(), Err(AlgorithmError::Unknown("ES512".into())));
    }

    #[test]
    fn never_repeats_odd_names_verbatim() {
        let odd = "<script>alert(1)</script>";
        assert_eq!(odd.parse::<Algorithm>(), Err(AlgorithmError::Unknown("(unrecognised)".into())));
        assert_eq!(printable(&"A".repeat(100)), "(unrecognised)");
    }

    #[test]
    fn deserializes_from_config_strings() {
        let algs: Vec<Algorithm> = serde_json::from_str(r#"["RS256","EdDSA"]"#).expect("algorithm names parse");
        assert_eq!(algs, vec![Algorithm::RS256, Algorithm::EdDSA]);
        assert!(serde_json::from_str::<Algorithm>(r#""HS256""#).is_err());
    }
}
