//! Identity: who is calling the gateway. A host authenticates with an OAuth 2.1
//! bearer token (a JWT checked against its issuer's JWKS) or a workload API key;
//! a stdio host is the local OS user or a configured identity. Each becomes a
//! [`Principal`], the only identity the rest of the gateway sees.

pub mod principal;

pub use principal::{AuthMethod, Principal, PrincipalKind};
