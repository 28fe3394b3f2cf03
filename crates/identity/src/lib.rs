//! Identity: who is calling the gateway. A host authenticates with an OAuth 2.1
//! bearer token (a JWT checked against its issuer's JWKS) or a workload API key;
//! a stdio host is the local OS user or a configured identity. Each becomes a
//! [`Principal`], the only identity the rest of the gateway sees.

pub mod api_key;
mod discovery;
mod endpoint;
mod jwks;
pub mod jwt;
pub mod principal;
#[cfg(test)]
mod test_issuer;

pub use endpoint::EndpointError;
pub use jwt::{
    Algorithm, AlgorithmError, ClaimMapping, ClaimPath, ClaimPathError, InvalidSettings, JwtSettings, JwtValidator,
    SettingsError, TokenError, WorkloadRule,
};
pub use principal::{AuthMethod, Principal, PrincipalKind};
