//! What the registry records about an approved server, beyond `server.json`:
//! the governance fields, kept in the document's `_meta` under our own namespace.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The `_meta` key our governance fields live under in a `server.json`.
pub const GOVERNANCE_KEY: &str = "io.portcullis/governance";

/// How much harm a server's tools can do; drives approval and policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RiskTier {
    Low,
    Medium,
    High,
    Critical,
}

/// How sensitive the data a server touches is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataClass {
    Public,
    Internal,
    Confidential,
    Restricted,
}

macro_rules! text_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The name as written in documents.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!("unknown {} '{other}' (expected {})", stringify!($ty), [$($text),+].join(", "))),
                }
            }
        }
    };
}

text_enum!(RiskTier { Low => "low", Medium => "medium", High => "high", Critical => "critical" });
text_enum!(DataClass { Public => "public", Internal => "internal", Confidential => "confidential", Restricted => "restricted" });

/// A credential the server needs, named and referenced, never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CredentialRef {
    /// What the server calls it, e.g. `GITHUB_TOKEN`.
    pub name: String,
    /// Where the gateway finds it: `env:VAR`, `file:/path` or `cmd:program args`.
    pub reference: String,
}

impl CredentialRef {
    /// Checks that the reference names a source and carries no value.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("credential name is empty".to_owned());
        }
        let (scheme, rest) = self.reference.split_once(':').unwrap_or(("", ""));
        if !matches!(scheme, "env" | "file" | "cmd") || rest.trim().is_empty() {
            return Err(format!(
                "credential '{}': reference must be env:VAR, file:/path or cmd:program (never the secret itself)",
                self.name
            ));
        }
        Ok(())
    }
}

/// The governance fields of a registry entry (`_meta["io.portcullis/governance"]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Governance {
    /// The gateway upstream (its `name` in the configuration) this entry governs.
    pub upstream: String,
    /// The team that owns the server.
    pub owner: String,
    /// Why the organization runs it.
    pub purpose: String,
    /// Where it is deployed, e.g. `production`.
    #[serde(default = "default_environment")]
    pub environment: String,
    pub data_classification: DataClass,
    pub risk_tier: RiskTier,
    /// Tools whose tier differs from the server's (e.g. a write tool on a read-mostly server).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tool_risk_tiers: std::collections::BTreeMap<String, RiskTier>,
    /// Credentials it needs, by reference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<CredentialRef>,
    /// OAuth scopes or permissions it holds on backing systems.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Tools, resources and prompts the owner declares it exposes (the pins are the enforcement).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<String>,
    /// What a call needs to be approved (free text for reviewers; the policy enforces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_requirements: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_limitations: Vec<String>,
    /// The date of the last security review, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_security_review: Option<String>,
    /// Pinned metadata hashes carried with the document (`tool/<name>` → `sha256:…`), so an
    /// approval made in one environment can be imported into another.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub pins: std::collections::BTreeMap<String, String>,
}

fn default_environment() -> String {
    "production".to_owned()
}

impl Governance {
    /// The tier of one tool: its own when the entry names one, else the server's.
    pub fn tool_tier(&self, tool: &str) -> RiskTier {
        self.tool_risk_tiers.get(tool).copied().unwrap_or(self.risk_tier)
    }

    /// Every problem with the fields, at once.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let name_ok = !self.upstream.is_empty()
            && self.upstream.len() <= 48
            && self.upstream.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            out.push(format!("governance.upstream '{}': use 1-48 letters, digits, '-' or '_'", self.upstream));
        }
        if self.owner.trim().is_empty() {
            out.push("governance.owner is required".to_owned());
        }
        if self.purpose.trim().is_empty() {
            out.push("governance.purpose is required".to_owned());
        }
        for c in &self.credentials {
            if let Err(e) = c.validate() {
                out.push(format!("governance.credentials: {e}"));
            }
        }
        if let Some(date) = &self.last_security_review {
            let ok = date.len() == 10
                && date.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
            if !ok {
                out.push(format!("governance.lastSecurityReview '{date}': expected YYYY-MM-DD"));
            }
        }
        for (key, hash) in &self.pins {
            let kind_ok = key
                .split_once('/')
                .is_some_and(|(k, n)| matches!(k, "tool" | "prompt" | "resourceTemplate") && !n.is_empty());
            if !kind_ok {
                out.push(format!(
                    "governance.pins '{key}': expected tool/<name>, prompt/<name> or resourceTemplate/<uri template>"
                ));
            }
            if !hash.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                out.push(format!("governance.pins '{key}': expected sha256:<64 hex digits>"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_parse_and_order() {
        assert_eq!("high".parse::<RiskTier>(), Ok(RiskTier::High));
        assert!(RiskTier::Critical > RiskTier::Low);
        assert!("severe".parse::<RiskTier>().is_err());
        assert_eq!(DataClass::Confidential.to_string(), "confidential");
    }

    #[test]
    fn credential_references_never_carry_values() {
        let ok = CredentialRef { name: "T".into(), reference: "env:GITHUB_TOKEN".into() };
        assert!(ok.validate().is_ok());
        for bad in ["ghp_abcdef123456", "env:", "vault:secret/x", ""] {
            let c = CredentialRef { name: "T".into(), reference: bad.into() };
            assert!(c.validate().is_err(), "{bad}");
        }
    }
}
