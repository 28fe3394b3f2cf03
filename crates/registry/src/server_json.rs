//! The MCP Registry's `server.json` (schema 2025-12-11): parsed strictly (unknown
//! fields are errors, every problem is reported at once), exported with our
//! governance fields in `_meta["io.portcullis/governance"]`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::{GOVERNANCE_KEY, Governance};

/// The schema URI we write into exported documents.
pub const SCHEMA_URI: &str = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json";

/// A `server.json` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerJson {
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Reverse-DNS name with one slash, e.g. `io.github.acme/tickets`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub description: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<Repository>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<Package>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remotes: Vec<Remote>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub icons: Vec<Icon>,
    #[serde(rename = "_meta", default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Map<String, Value>>,
}

/// Where the source lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Repository {
    pub url: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subfolder: Option<String>,
}

/// A package a local server is installed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Package {
    pub registry_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_base_url: Option<String>,
    pub identifier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_hint: Option<String>,
    pub transport: Transport,
    /// Arguments and variables are kept as written (their shapes are checked loosely).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_arguments: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub package_arguments: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_variables: Vec<Value>,
}

/// How a package's server is spoken to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transport {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Value>,
}

/// A remote (hosted) endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<Map<String, Value>>,
}

/// An icon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Icon {
    pub src: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sizes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme: Option<String>,
}

/// A registry entry: the document and its governance.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerEntry {
    pub server: ServerJson,
    pub governance: Governance,
}

/// Why a document was refused; every problem is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid server.json: {}", problems.join("; "))]
pub struct ImportError {
    pub problems: Vec<String>,
}

impl ServerEntry {
    /// Parses and validates a `server.json` document that carries our governance fields.
    pub fn import(text: &str) -> Result<Self, ImportError> {
        let server: ServerJson = serde_json::from_str(text)
            .map_err(|e| ImportError { problems: vec![format!("line {} column {}: {e}", e.line(), e.column())] })?;
        Self::from_server(server)
    }

    /// Validates a parsed document and lifts out its governance fields (they live only in
    /// `governance` afterwards, and are written back by [`ServerEntry::export`]).
    pub fn from_server(mut server: ServerJson) -> Result<Self, ImportError> {
        let mut problems = server.problems();
        let lifted = server.meta.as_mut().and_then(|m| m.remove(GOVERNANCE_KEY));
        if server.meta.as_ref().is_some_and(Map::is_empty) {
            server.meta = None;
        }
        let governance = match lifted {
            Some(g) => match serde_json::from_value::<Governance>(g) {
                Ok(g) => {
                    problems.extend(g.problems());
                    Some(g)
                }
                Err(e) => {
                    problems.push(format!("_meta[\"{GOVERNANCE_KEY}\"]: {e}"));
                    None
                }
            },
            None => {
                problems.push(format!(
                    "_meta[\"{GOVERNANCE_KEY}\"] is required (owner, purpose, upstream, dataClassification, riskTier)"
                ));
                None
            }
        };
        match governance {
            Some(governance) if problems.is_empty() => Ok(Self { server, governance }),
            _ => Err(ImportError { problems }),
        }
    }

    /// The document with the current governance fields written into `_meta`.
    pub fn export(&self) -> Value {
        let mut server = self.server.clone();
        server.schema.get_or_insert_with(|| SCHEMA_URI.to_owned());
        let meta = server.meta.get_or_insert_with(Map::new);
        meta.insert(GOVERNANCE_KEY.to_owned(), serde_json::to_value(&self.governance).unwrap_or(Value::Null));
        serde_json::to_value(&server).unwrap_or(Value::Null)
    }
}

impl ServerJson {
    /// Every schema problem, at once.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let name_ok = (3..=200).contains(&self.name.len())
            && self.name.split_once('/').is_some_and(|(ns, n)| {
                !ns.is_empty()
                    && !n.is_empty()
                    && ns.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b) && b != b'_')
                    && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            });
        if !name_ok {
            out.push(format!(
                "name '{}': expected reverse-DNS 'namespace/name' (letters, digits, '.', '-'; one '/')",
                self.name
            ));
        }
        if !(1..=100).contains(&self.description.chars().count()) {
            out.push("description: 1 to 100 characters".to_owned());
        }
        if let Some(t) = &self.title
            && !(1..=100).contains(&t.chars().count())
        {
            out.push("title: 1 to 100 characters".to_owned());
        }
        if let Some(why) = version_problem(&self.version) {
            out.push(format!("version '{}': {why}", self.version));
        }
        for (i, p) in self.packages.iter().enumerate() {
            if p.registry_type.is_empty() || p.identifier.is_empty() {
                out.push(format!("packages[{i}]: registryType and identifier are required"));
            }
            if let Some(v) = &p.version
                && let Some(why) = version_problem(v)
            {
                out.push(format!("packages[{i}].version '{v}': {why}"));
            }
            if let Some(h) = &p.file_sha256
                && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            {
                out.push(format!("packages[{i}].fileSha256: expected 64 lowercase hex digits"));
            }
            if p.registry_type == "mcpb" && p.file_sha256.is_none() {
                out.push(format!("packages[{i}]: an mcpb package needs fileSha256"));
            }
            match (p.transport.kind.as_str(), &p.transport.url) {
                ("stdio", None) => {}
                ("stdio", Some(_)) => out.push(format!("packages[{i}].transport: stdio takes no url")),
                ("streamable-http" | "sse", Some(u)) if is_http_url(u) => {}
                ("streamable-http" | "sse", _) => {
                    out.push(format!("packages[{i}].transport.url: an http(s) URL is required"))
                }
                (other, _) => {
                    out.push(format!("packages[{i}].transport.type '{other}': expected stdio, streamable-http or sse"))
                }
            }
        }
        for (i, r) in self.remotes.iter().enumerate() {
            if !matches!(r.kind.as_str(), "streamable-http" | "sse") {
                out.push(format!("remotes[{i}].type '{}': expected streamable-http or sse", r.kind));
            }
            if !is_http_url(&r.url) {
                out.push(format!("remotes[{i}].url: an http(s) URL is required"));
            }
        }
        for (i, icon) in self.icons.iter().enumerate() {
            if !icon.src.starts_with("https://") || icon.src.len() > 255 {
                out.push(format!("icons[{i}].src: an https URL of at most 255 characters"));
            }
        }
        if let Some(r) = &self.repository
            && (!is_http_url(&r.url) || r.source.is_empty())
        {
            out.push("repository: url (http/https) and source are required".to_owned());
        }
        out
    }
}

fn is_http_url(u: &str) -> bool {
    (u.starts_with("https://") || u.starts_with("http://")) && u.len() > 8 && !u.contains(char::is_whitespace)
}

/// Why a version string is not a specific version, if it is not.
fn version_problem(v: &str) -> Option<&'static str> {
    if v.is_empty() || v.len() > 255 {
        return Some("1 to 255 characters");
    }
    if v == "latest" {
        return Some("must be a specific version, not 'latest'");
    }
    let range = v.starts_with(['^', '~', '>', '<', '=']) || v.contains(".x") || v.contains('*') || v.contains("||");
    range.then_some("must be a specific version, not a range")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
      "$schema": "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json",
      "name": "io.example.support/tickets",
      "title": "Tickets",
      "description": "Search and draft support tickets",
      "version": "1.4.0",
      "repository": {"url": "https://git.example.com/support/tickets-mcp", "source": "gitlab"},
      "packages": [{"registryType": "npm", "identifier": "@example/tickets-mcp", "version": "1.4.0",
                    "transport": {"type": "stdio"},
                    "environmentVariables": [{"name": "TICKETS_TOKEN", "isSecret": true}]}],
      "_meta": {"io.portcullis/governance": {
        "upstream": "tickets", "owner": "support-platform", "purpose": "Agents triage tickets",
        "dataClassification": "confidential", "riskTier": "medium",
        "credentials": [{"name": "TICKETS_TOKEN", "reference": "env:TICKETS_TOKEN"}],
        "tools": ["search_tickets", "draft_ticket"], "lastSecurityReview": "2026-10-01"},
        "com.example/other": {"kept": true}}
    }"#;

    #[test]
    fn imports_and_exports_round_trip() {
        let entry = ServerEntry::import(GOOD).expect("valid");
        assert_eq!(entry.governance.upstream, "tickets");
        let exported = entry.export();
        let again = ServerEntry::import(&exported.to_string()).expect("re-import");
        assert_eq!(again, entry);
        assert_eq!(exported["_meta"]["com.example/other"]["kept"], true, "other vendors' _meta is kept");
    }

    #[test]
    fn rejects_unknown_fields_with_their_position() {
        let bad = GOOD.replacen("\"title\"", "\"titel\"", 1);
        let err = ServerEntry::import(&bad).expect_err("unknown field");
        assert!(err.problems[0].contains("unknown field `titel`") && err.problems[0].contains("line 4"), "{err}");
    }

    #[test]
    fn reports_every_problem_at_once() {
        let bad = GOOD
            .replace("io.example.support/tickets", "no-slash")
            .replace("\"version\": \"1.4.0\",\n      \"repository\"", "\"version\": \"^1.4\",\n      \"repository\"")
            .replace("env:TICKETS_TOKEN", "hunter2")
            .replace("\"riskTier\": \"medium\"", "\"riskTier\": \"medium\", \"secretValue\": \"x\"");
        let err = ServerEntry::import(&bad).expect_err("invalid");
        let all = err.problems.join("\n");
        assert!(all.contains("name 'no-slash'"), "{all}");
        assert!(all.contains("not a range"), "{all}");
        assert!(all.contains("secretValue"), "unknown governance field: {all}");
    }

    #[test]
    fn requires_governance_and_a_valid_credential_reference() {
        let no_gov = r#"{"name":"a.b/c","description":"d","version":"1.0.0"}"#;
        let err = ServerEntry::import(no_gov).expect_err("no governance");
        assert!(err.problems[0].contains("io.portcullis/governance"), "{err}");
        let bad_ref = GOOD.replace("env:TICKETS_TOKEN", "ghp_secretvalue");
        let err = ServerEntry::import(&bad_ref).expect_err("value instead of reference");
        assert!(err.to_string().contains("never the secret itself"), "{err}");
    }

    #[test]
    fn rejects_malformed_json() {
        let err = ServerEntry::import("{\"name\": ").expect_err("malformed");
        assert!(err.problems[0].starts_with("line 1"), "{err}");
    }
}
