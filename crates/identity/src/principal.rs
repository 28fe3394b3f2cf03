//! The authenticated caller, as every control after authentication sees it.

use std::fmt;

use serde::Serialize;

/// What kind of caller a principal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// A person, authenticated by an OAuth access token.
    User,
    /// A service or agent, authenticated by an API key (or a client-credentials token).
    Workload,
    /// The local OS user of a stdio host, or the identity configured for it.
    Local,
    /// Nobody: authentication is switched off for this listener.
    Anonymous,
}

impl PrincipalKind {
    /// The name used in policies and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Workload => "workload",
            Self::Local => "local",
            Self::Anonymous => "anonymous",
        }
    }
}

/// How the principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum AuthMethod {
    /// A JWT access token from `issuer`.
    Jwt { issuer: String },
    /// A stored API key, by its public id.
    ApiKey { key_id: String },
    /// The stdio host's process owner.
    Local,
    /// No authentication.
    None,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub kind: PrincipalKind,
    /// Stable subject id (the token's subject claim, the key's workload name, the OS user name).
    pub id: String,
    /// Groups or roles, from the token's claims or the key's record.
    pub groups: Vec<String>,
    /// The tenant, when the deployment has several.
    pub tenant: Option<String>,
    /// OAuth scopes granted (or the key's scopes).
    pub scopes: Vec<String>,
    pub method: AuthMethod,
}

impl Principal {
    /// The caller when authentication is off.
    pub fn anonymous() -> Self {
        Self {
            kind: PrincipalKind::Anonymous,
            id: "anonymous".to_owned(),
            groups: Vec::new(),
            tenant: None,
            scopes: Vec::new(),
            method: AuthMethod::None,
        }
    }

    /// A local (stdio) caller with the given name and groups.
    pub fn local(id: impl Into<String>, groups: Vec<String>) -> Self {
        Self {
            kind: PrincipalKind::Local,
            id: id.into(),
            groups,
            tenant: None,
            scopes: Vec::new(),
            method: AuthMethod::Local,
        }
    }

    /// Whether the principal holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.id)
    }
}
