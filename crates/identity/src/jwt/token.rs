//! A compact-serialised JWS as it arrives: split, decoded, and its header judged, before
//! any key is looked up or any claim is believed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::TokenError;
use super::algorithm::{Algorithm, AlgorithmError, printable};

/// The longest token we parse; real access tokens are a few kilobytes.
pub(crate) const MAX_TOKEN_BYTES: usize = 32 * 1024;

/// A token split into its parts, header and claims decoded, signature not yet checked.
#[derive(Debug)]
pub(crate) struct UnverifiedToken<'a> {
    header: Map<String, Value>,
    /// The claims: not to be trusted until the signature is verified.
    pub(crate) claims: Map<String, Value>,
    /// `base64url(header) "." base64url(payload)`: the bytes the signature covers.
    pub(crate) signing_input: &'a str,
    /// The signature, still base64url-encoded (may be empty or invalid until [`Self::signature`] says so).
    signature: &'a str,
}

impl<'a> UnverifiedToken<'a> {
    /// Splits `token` into three parts and decodes the header and the claims (JSON objects).
    pub(crate) fn parse(token: &'a str) -> Result<Self, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let signing_input = &token[..header.len() + 1 + payload.len()];
        Ok(Self { header: json_object(header)?, claims: json_object(payload)?, signing_input, signature })
    }

    /// The header's `alg`, if it is one of `allowed`.
    pub(crate) fn algorithm(&self, allowed: &[Algorithm]) -> Result<Algorithm, TokenError> {
        let Some(Value::String(name)) = self.header.get("alg") else {
            return Err(TokenError::Malformed);
        };
        match name.parse::<Algorithm>() {
            Ok(alg) if allowed.contains(&alg) => Ok(alg),
            Ok(alg) => Err(TokenError::UnsupportedAlgorithm(alg.as_str().to_owned())),
            Err(AlgorithmError::None) => Err(TokenError::UnsupportedAlgorithm("none".to_owned())),
            Err(AlgorithmError::Symmetric(name) | AlgorithmError::Unknown(name)) => {
                Err(TokenError::UnsupportedAlgorithm(printable(&name)))
            }
        }
    }

    /// Refuses headers this gateway must not accept: a `typ` other than `JWT` / `at+jwt`
    /// (RFC 9068 §2.1; an ID token or a logout token is not an access token), and any
    /// `crit` extension (RFC 7515 §4.1.11: we understand none).
    pub(crate) fn check_header(&self) -> Result<(), TokenError> {
        match self.header.get("typ") {
            None => {}
            Some(Value::String(typ)) => {
                let typ = typ.to_ascii_lowercase();
                let typ = typ.strip_prefix("application/").unwrap_or(&typ);
                if typ != "jwt" && typ != "at+jwt" {
                    return Err(TokenError::UnsupportedType);
                }
            }
            Some(_) => return Err(TokenError::Malformed),
        }
        if self.header.contains_key("crit") {
            return Err(TokenError::CriticalHeader);
        }
        Ok(())
    }

    /// The header's `kid`, if it has one.
    pub(crate) fn kid(&self) -> Result<Option<&str>, TokenError> {
        match self.header.get("kid") {
            None => Ok(None),
            Some(Value::String(kid)) => Ok(Some(kid)),
            Some(_) => Err(TokenError::Malformed),
        }
    }

    /// The signature bytes.
    pub(crate) fn signature(&self) -> Result<Vec<u8>, TokenError> {
        match URL_SAFE_NO_PAD.decode(self.signature) {
            Ok(bytes) if !bytes.is_empty() => Ok(bytes),
            _ => Err(TokenError::Malformed),
        }
    }
}

fn json_object(part: &str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    fn token(header: &str, claims: &str) -> String {
        format!("{}.{}.c2ln", encode(header), encode(claims))
    }

    #[test]
    fn splits_a_well_formed_token() {
        let raw = token(r#"{"alg":"ES256","kid":"k1","typ":"at+jwt"}"#, r#"{"sub":"alice"}"#);
        let parsed = UnverifiedToken::parse(&raw).expect("parses");
        assert_eq!(parsed.algorithm(&[Algorithm::ES256]), Ok(Algorithm::ES256));
        assert_eq!(parsed.kid(), Ok(Some("k1")));
        assert_eq!(parsed.check_header(), Ok(()));
        assert_eq!(parsed.claims.get("sub"), Some(&Value::String("alice".into())));
        assert_eq!(parsed.signature(), Ok(b"sig".to_vec()));
        assert!(raw.starts_with(parsed.signing_input));
        assert_eq!(parsed.signing_input.matches('.').count(), 1);
    }

    #[test]
    fn refuses_anything_but_three_base64url_json_parts() {
        let header = encode(r#"{"alg":"ES256"}"#);
        let claims = encode(r#"{"sub":"a"}"#);
        for bad in [
            String::new(),
            "abc".to_owned(),
            format!("{header}.{claims}"),
            format!("{header}.{claims}.c2ln.c2ln"),
            format!("{header}!.{claims}.c2ln"),
            format!("{header}.{}.c2ln", encode("not json")),
            format!("{header}.{}.c2ln", encode("[1,2]")),
            format!("{}.{claims}.c2ln", encode(r#""alg""#)),
            format!("{header}=.{claims}.c2ln"),
            "a".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert_eq!(UnverifiedToken::parse(&bad).map(|_| ()), Err(TokenError::Malformed), "{bad:.40}");
        }
        let unsigned = format!("{header}.{claims}.");
        assert_eq!(UnverifiedToken::parse(&unsigned).and_then(|t| t.signature()), Err(TokenError::Malformed));
    }

    #[test]
    fn judges_alg_against_the_allow_list() {
        let allowed = [Algorithm::RS256];
        let alg = |name: &str| {
            let raw = token(&format!(r#"{{"alg":{name}}}"#), "{}");
            UnverifiedToken::parse(&raw).and_then(|t| t.algorithm(&allowed))
        };
        assert_eq!(alg(r#""RS256""#), Ok(Algorithm::RS256));
        assert_eq!(alg(r#""ES256""#), Err(TokenError::UnsupportedAlgorithm("ES256".into())));
        assert_eq!(alg(r#""none""#), Err(TokenError::UnsupportedAlgorithm("none".into())));
        assert_eq!(alg(r#""HS256""#), Err(TokenError::UnsupportedAlgorithm("HS256".into())));
        assert_eq!(alg("null"), Err(TokenError::Malformed));
    }

    #[test]
    fn accepts_only_jwt_and_at_jwt_types_and_no_critical_extensions() {
        let check = |header: &str| UnverifiedToken::parse(&token(header, "{}")).and_then(|t| t.check_header());
        assert_eq!(check(r#"{"alg":"RS256","typ":"JWT"}"#), Ok(()));
        assert_eq!(check(r#"{"alg":"RS256","typ":"AT+JWT"}"#), Ok(()));
        assert_eq!(check(r#"{"alg":"RS256","typ":"application/at+jwt"}"#), Ok(()));
        assert_eq!(check(r#"{"alg":"RS256","typ":"logout+jwt"}"#), Err(TokenError::UnsupportedType));
        assert_eq!(check(r#"{"alg":"RS256","typ":"JOSE"}"#), Err(TokenError::UnsupportedType));
        assert_eq!(check(r#"{"alg":"RS256","crit":["exp"],"exp":1}"#), Err(TokenError::CriticalHeader));
        assert_eq!(check(r#"{"alg":"RS256","typ":7}"#), Err(TokenError::Malformed));
    }
}
