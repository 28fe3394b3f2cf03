//! Workload API keys: who each key speaks for, its scopes, expiry and revocation, and the
//! hash of its secret (never the secret). Key writes do not move the registry revision.

use crate::backend::on_pool;
use crate::error::is_unique_violation;
use crate::{Store, StoreError, json_text, json_value};

/// One API key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// The public key id (the part of the key before its secret).
    pub id: String,
    /// A label for operators.
    pub name: String,
    /// The workload principal the key authenticates as.
    pub principal: String,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    pub tenant: Option<String>,
    /// The hash of the key's secret part.
    pub hash: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

/// An `api_keys` row as decoded.
type KeyRow = (String, String, String, String, String, Option<String>, String, i64, Option<i64>, Option<i64>);

const COLUMNS: &str = "id, name, principal, groups_json, scopes_json, tenant, hash, created_ms, expires_ms, revoked_ms";

impl Store {
    /// Stores a new key; [`StoreError::Duplicate`] if its id is taken.
    pub async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        if key.id.is_empty() || key.principal.is_empty() {
            return Err(StoreError::Invalid("an API key needs an id and a principal".to_owned()));
        }
        let groups = json_text(&serde_json::json!(key.groups))?;
        let scopes = json_text(&serde_json::json!(key.scopes))?;
        let inserted = on_pool!(self, |pool| {
            sqlx::query(&format!("INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"))
                .bind(&key.id)
                .bind(&key.name)
                .bind(&key.principal)
                .bind(&groups)
                .bind(&scopes)
                .bind(&key.tenant)
                .bind(&key.hash)
                .bind(key.created_ms)
                .bind(key.expires_ms)
                .bind(key.revoked_ms)
                .execute(pool)
                .await
                .map(|_| ())
        });
        match inserted {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate { what: format!("api key {}", key.id) }),
            Err(e) => Err(e.into()),
        }
    }

    /// One key by its id.
    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row: Option<KeyRow> = on_pool!(self, |pool| {
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(key_from).transpose()
    }

    /// Every key, oldest first.
    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows: Vec<KeyRow> = on_pool!(self, |pool| {
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_ms, id")).fetch_all(pool).await?
        });
        rows.into_iter().map(key_from).collect()
    }

    /// Revokes a key at `at_ms`; [`StoreError::NotFound`] if there is no such key. Revoking a
    /// revoked key keeps its first revocation time.
    pub async fn revoke_api_key(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        let done = on_pool!(self, |pool| {
            sqlx::query("UPDATE api_keys SET revoked_ms = COALESCE(revoked_ms, $2) WHERE id = $1")
                .bind(id)
                .bind(at_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if done == 0 {
            return Err(StoreError::NotFound { what: format!("api key {id}") });
        }
        Ok(())
    }
}

fn key_from(
    (id, name, principal, groups, scopes, tenant, hash, created_ms, expires_ms, revoked_ms): KeyRow,
) -> Result<ApiKeyRecord, StoreError> {
    let strings = |text: &str, what: &str| -> Result<Vec<String>, StoreError> {
        serde_json::from_value(json_value(text, what)?)
            .map_err(|_| StoreError::Backend(format!("{what} is not a list of strings")))
    };
    Ok(ApiKeyRecord {
        groups: strings(&groups, &format!("api key {id} groups"))?,
        scopes: strings(&scopes, &format!("api key {id} scopes"))?,
        id,
        name,
        principal,
        tenant,
        hash,
        created_ms,
        expires_ms,
        revoked_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> ApiKeyRecord {
        ApiKeyRecord {
            id: id.to_owned(),
            name: "ci".to_owned(),
            principal: "ci-bot".to_owned(),
            groups: vec!["deployers".to_owned()],
            scopes: vec!["mcp".to_owned()],
            tenant: None,
            hash: "ab".repeat(32),
            created_ms: 1,
            expires_ms: Some(10),
            revoked_ms: None,
        }
    }

    async fn stores() -> Vec<Store> {
        let mut out = vec![Store::connect("sqlite::memory:").await.expect("sqlite")];
        if let Ok(url) = std::env::var("PORTCULLIS_TEST_POSTGRES") {
            let store = Store::connect(&url).await.expect("postgres");
            on_pool!(store, |pool| {
                sqlx::query("DELETE FROM api_keys WHERE id LIKE 'storetest%'").execute(pool).await.map(|_| ())
            })
            .expect("clean");
            out.push(store);
        }
        out
    }

    #[tokio::test]
    async fn keys_are_created_read_listed_and_revoked() {
        for store in stores().await {
            store.create_api_key(&key("storetest1")).await.expect("create");
            assert!(matches!(store.create_api_key(&key("storetest1")).await, Err(StoreError::Duplicate { .. })));
            assert_eq!(store.api_key("storetest1").await.expect("read"), Some(key("storetest1")));
            assert!(store.api_keys().await.expect("list").iter().any(|k| k.id == "storetest1"));
            store.revoke_api_key("storetest1", 5).await.expect("revoke");
            store.revoke_api_key("storetest1", 9).await.expect("revoke again");
            assert_eq!(store.api_key("storetest1").await.expect("read").and_then(|k| k.revoked_ms), Some(5));
            assert!(matches!(store.revoke_api_key("storetest-none", 1).await, Err(StoreError::NotFound { .. })));
            assert_eq!(store.api_key("storetest-none").await.expect("read"), None);
        }
    }
}
