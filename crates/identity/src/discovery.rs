//! Finding an issuer's key-set URL in its published metadata: OAuth 2.0 Authorization Server
//! Metadata (RFC 8414) first, then OpenID Connect Discovery, in the order the MCP
//! authorization spec gives.
//!
//! For an issuer without a path (`https://as.example`):
//! 1. `https://as.example/.well-known/oauth-authorization-server`
//! 2. `https://as.example/.well-known/openid-configuration`
//!
//! For an issuer with a path (`https://as.example/tenant1`; a trailing `/` is dropped):
//! 1. `https://as.example/.well-known/oauth-authorization-server/tenant1` (RFC 8414 path insertion)
//! 2. `https://as.example/.well-known/openid-configuration/tenant1`
//! 3. `https://as.example/tenant1/.well-known/openid-configuration` (OIDC path appending)
//!
//! A document counts only if its `issuer` is exactly the configured issuer (RFC 8414 §3.3)
//! and its `jwks_uri` passes the fetch rule; otherwise the next candidate is tried.

use serde::Deserialize;

use crate::endpoint::Endpoint;

/// The metadata URLs to try for `issuer`, in order.
pub(crate) fn metadata_urls(issuer: &Endpoint) -> Vec<Endpoint> {
    let url = issuer.url();
    let path = url.path().trim_end_matches('/');
    let at = |new_path: String| {
        let mut candidate = url.clone();
        candidate.set_path(&new_path);
        candidate.set_query(None);
        Endpoint::from_url(candidate).ok()
    };
    let candidates = if path.is_empty() {
        vec![
            at("/.well-known/oauth-authorization-server".to_owned()),
            at("/.well-known/openid-configuration".to_owned()),
        ]
    } else {
        vec![
            at(format!("/.well-known/oauth-authorization-server{path}")),
            at(format!("/.well-known/openid-configuration{path}")),
            at(format!("{path}/.well-known/openid-configuration")),
        ]
    };
    candidates.into_iter().flatten().collect()
}

/// The `jwks_uri` from the first metadata document that names `issuer` exactly.
///
/// The error lists what each candidate gave, for the operator's log.
pub(crate) async fn jwks_uri(
    client: &reqwest::Client,
    issuer: &str,
    issuer_url: &Endpoint,
) -> Result<Endpoint, String> {
    #[derive(Deserialize)]
    struct Metadata {
        issuer: String,
        jwks_uri: Option<String>,
    }
    let mut failures = Vec::new();
    for candidate in metadata_urls(issuer_url) {
        let outcome = match candidate.get(client).await {
            Err(e) => Err(e.to_string()),
            Ok(document) => match serde_json::from_slice::<Metadata>(&document.body) {
                Err(e) => Err(format!("not authorization server metadata: {e}")),
                Ok(metadata) if metadata.issuer != issuer => {
                    Err(format!("metadata names issuer {:?}, not the configured issuer", metadata.issuer))
                }
                Ok(Metadata { jwks_uri: None, .. }) => Err("metadata has no jwks_uri".to_owned()),
                Ok(Metadata { jwks_uri: Some(jwks_uri), .. }) => {
                    Endpoint::parse(&jwks_uri).map_err(|e| format!("jwks_uri {jwks_uri:?} is not acceptable: {e}"))
                }
            },
        };
        match outcome {
            Ok(jwks_uri) => {
                tracing::debug!(metadata = %candidate, %jwks_uri, "discovered the issuer's key set");
                return Ok(jwks_uri);
            }
            Err(failure) => failures.push(format!("{candidate}: {failure}")),
        }
    }
    Err(format!("discovering the issuer's key set failed: {}", failures.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(issuer: &str) -> Vec<String> {
        let issuer = Endpoint::parse(issuer).expect("a valid issuer");
        metadata_urls(&issuer).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn tries_rfc8414_then_openid_configuration_for_issuers_without_a_path() {
        let expected = [
            "https://as.example/.well-known/oauth-authorization-server",
            "https://as.example/.well-known/openid-configuration",
        ];
        assert_eq!(urls("https://as.example"), expected);
        assert_eq!(urls("https://as.example/"), expected);
    }

    #[test]
    fn inserts_then_appends_the_path_for_issuers_with_one() {
        let expected = [
            "https://as.example:8443/.well-known/oauth-authorization-server/realms/acme",
            "https://as.example:8443/.well-known/openid-configuration/realms/acme",
            "https://as.example:8443/realms/acme/.well-known/openid-configuration",
        ];
        assert_eq!(urls("https://as.example:8443/realms/acme"), expected);
        assert_eq!(urls("https://as.example:8443/realms/acme/"), expected);
    }
}
